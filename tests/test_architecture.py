"""The package's architecture, checked on its source with ``ast`` (no import needed):

* the module import graph (every import, also inside functions; relative and absolute
  ``upweight.`` imports) has no cycle, and every module sits in one layer of
  errors <- solver policy <- models <- networks <- interop <- influence <- validation / diagnostics / io <- cli,
  importing only from layers below its own;
* no module reaches a private name (``_name``) that another module defines: no ``obj._name``
  attribute access unless ``_name`` is defined in the accessing module (``self`` / ``cls`` and
  the extension module ``_core``, as in ``_core.fit``, are fine), no ``getattr(obj, "_name")``
  and the like, no ``from .module import _name``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "upweight"
COMPILED = {"upweight._core"}  # the Rust extension (a .so; _core.pyi is its stub)

#: Each module's layer: a module imports only from lower layers. A new module must be placed here.
LAYERS = {
    # 0: leaves (no upweight imports but the extension)
    "upweight.errors": 0,
    "upweight._constants": 0,
    "upweight.reference": 0,
    # 1: argument checks
    "upweight._validation": 1,
    # 2: which backend computes on an input (plugins named, imported at call time: _backends.py)
    "upweight._backends": 2,
    # 2: the solver policy (shapes only, no models); reading IDX files
    "upweight.solver": 2,
    "upweight.prefilter": 2,
    "upweight.io.idx": 2,
    # 3: models and the Model protocol
    "upweight.models": 3,
    # 4: networks; saving and loading models
    "upweight.networks": 4,
    "upweight.io.persist": 4,
    # 5: models built from other libraries' estimators (GLMs and networks); the io package's
    # namespace (it re-exports idx and persist only), so influence can save and load through it
    "upweight.interop": 5,
    "upweight.io": 5,
    # 6: influence (Influence, GradientInfluence)
    "upweight.influence": 6,
    "upweight.io.tables": 6,
    # 7: what is built on influence
    "upweight.validation": 7,
    "upweight.leave_out": 7,
    "upweight.dask": 7,
    "upweight.diagnostics": 7,
    "upweight.examples": 7,
    "upweight.io.resume": 7,
    # 8: plots (compare), data sets (through upweight.io), the package namespace
    "upweight.plots": 8,
    "upweight.datasets": 8,
    "upweight": 9,
    # 10: the command line, written against the package
    "upweight.cli.demo": 10,
    "upweight.cli.network_demo": 10,
    "upweight.cli": 11,
    "upweight.cli.__main__": 12,
}


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every .py file under ``root`` (a package ``__init__`` is the
    package's own name)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _package_of(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _is_ancestor(package: str, name: str) -> bool:
    return name.startswith(package + ".")


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The upweight modules that module ``name`` imports, at any depth of its code."""
    out: set[str] = set()
    package = _package_of(name, path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        explicit, implicit = [], []  # named by the statement; run on the way (parent packages)
        if isinstance(node, ast.Import):
            explicit = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                full = ".".join(base + ([node.module] if node.module else []))
            else:
                full = node.module or ""
            for alias in node.names:
                sub = f"{full}.{alias.name}"
                explicit.append(sub if sub in known or sub in COMPILED else full)  # a submodule, or a name of full
            implicit.append(full)  # from X import ... runs X's __init__
        else:
            continue
        out.update(t for t in explicit if t in known and t != name)
        for t in implicit + [e.rpartition(".")[0] for e in explicit]:
            while t and t != name and not _is_ancestor(t, name):  # an ancestor package is already running
                if t in known:
                    out.add(t)
                t = t.rpartition(".")[0]
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first = last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            found = visit(u)
            if found:
                return found
    return None


ATTRIBUTE_FUNCTIONS = ("getattr", "hasattr", "setattr", "delattr")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines itself: functions, classes, assigned names and ``self``/``cls``
    attributes (not imported names)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        out.add(t.id)
                    elif isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in ("self", "cls"):
                        out.add(t.attr)  # self._x = ... (but other._x = ... pokes another object's private attribute)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                out.add(node.args[1].value)
    return out


def private_accesses(root: Path = PACKAGE) -> list[str]:
    """Every place a module reaches a private name another module defines."""
    known = modules(root)
    found = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        own = _defined_names(tree)
        rel = path.relative_to(root.parent)
        for node in ast.walk(tree):
            where = f"{rel}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and _private(node.attr):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "_core"):
                    continue
                if node.attr not in own:
                    found.append(f"{where}: .{node.attr}")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_FUNCTIONS:
                if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    attr = node.args[1].value
                    is_self = isinstance(node.args[0], ast.Name) and node.args[0].id in ("self", "cls")
                    if _private(attr) and not is_self and attr not in own:
                        found.append(f"{where}: {node.func.id}(..., {attr!r})")
            elif isinstance(node, ast.ImportFrom):
                package = _package_of(name, path)
                if node.level:
                    base = package.split(".")
                    full = ".".join(base[: len(base) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    full = node.module or ""
                if not full.startswith("upweight"):
                    continue
                for alias in node.names:
                    sub = f"{full}.{alias.name}"
                    if _private(alias.name) and sub not in known and sub not in COMPILED:
                        found.append(f"{where}: from {full} import {alias.name}")
    return found


def test_the_module_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_imports_only_from_lower_layers():
    graph = import_graph()
    unplaced = sorted(set(graph) - set(LAYERS))
    assert not unplaced, f"modules without a layer in LAYERS: {unplaced}"
    upward = [f"{m} (layer {LAYERS[m]}) imports {t} (layer {LAYERS[t]})"
              for m in sorted(graph) for t in sorted(graph[m]) if LAYERS[t] >= LAYERS[m]]
    assert not upward, "\n".join(upward)


def test_models_never_import_influence():
    graph = import_graph()
    seen, todo = set(), ["upweight.models"]
    while todo:  # everything models imports, directly or not
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    assert "upweight.influence" not in seen and "upweight.solver" in seen


def test_backends_are_plugins_above_what_dispatches_to_them():
    """_backends.BACKENDS names modules (imported at call time by models and influence): each
    must exist and sit above the influence layer, and nothing below it may import one directly."""
    from upweight._backends import BACKENDS

    graph = import_graph()
    for module in BACKENDS.values():
        assert module in graph and LAYERS[module] > LAYERS["upweight.influence"]
        below = [m for m in graph if LAYERS[m] <= LAYERS["upweight.influence"] and module in graph[m]]
        assert not below, f"{below} import the plugin {module}"


def test_no_module_reaches_another_modules_private_names():
    found = private_accesses()
    assert not found, "private names of other modules:\n" + "\n".join(found)


@pytest.mark.parametrize("code, expected", [
    ("from . import b\n", {"upweight.b"}),
    ("def f():\n    from .b import g\n", {"upweight.b"}),
    ("import upweight.b\n", {"upweight.b"}),
    ("from upweight.sub import x\n", {"upweight.sub"}),
    ("from .sub.c import x\n", {"upweight.sub", "upweight.sub.c"}),
    ("from . import _core\n", set()),
    ("import upweight as uw\n", {"upweight"}),
    ("from upweight import b, sub\n", {"upweight.b", "upweight.sub"}),
])
def test_the_import_walker_sees_every_kind_of_import(tmp_path, code, expected):
    root = tmp_path / "upweight"
    (root / "sub").mkdir(parents=True)
    for f in ("__init__.py", "b.py", "sub/__init__.py", "sub/c.py"):
        (root / f).write_text("")
    (root / "a.py").write_text(code)
    assert imports("upweight.a", root / "a.py", modules(root)) == expected


def test_the_checks_catch_a_cycle_and_a_private_access(tmp_path):
    root = tmp_path / "upweight"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("def f(m):\n    from .b import g\n    m._poked = 1\n    return m._secret()\n")
    (root / "b.py").write_text("from .a import f\nfrom .a import _hidden\ng = getattr(f, '_x', None)\n")
    assert find_cycle(import_graph(root)) in (["upweight.a", "upweight.b", "upweight.a"], ["upweight.b", "upweight.a", "upweight.b"])
    found = private_accesses(root)
    assert any("a.py:3: ._poked" in f for f in found) and any("a.py:4: ._secret" in f for f in found)
    assert any("import _hidden" in f for f in found) and any("'_x'" in f for f in found)


# ---------------------------------------------------------------------------------------
# The Rust side: thin bindings and the direction of the core's module dependencies.

RUST = PACKAGE.parent.parent / "rust"


def rust_uses(module: str) -> dict[str, set[str]]:
    """For each file under rust/<module>/ (or rust/<module>.rs), the crate modules it uses."""
    root = RUST / module
    files = sorted(root.rglob("*.rs")) if root.is_dir() else [RUST / f"{module}.rs"]
    out = {}
    for f in files:
        text = f.read_text()
        out[str(f.relative_to(RUST))] = {m for m in ("influence", "fit", "models", "objective", "solvers", "data", "python")
                                          if f"crate::{m}" in text or f"crate::{m}::" in text}
    return out


def test_bindings_files_stay_small():
    sizes = {f.name: len(f.read_text().splitlines()) for f in (RUST / "python").glob("*.rs")}
    assert sizes, "rust/python/ has no files"
    assert all(n <= 300 for n in sizes.values()), sizes


@pytest.mark.parametrize("module", ["models", "fit"])
def test_rust_models_and_fit_never_use_influence(module):
    uses = rust_uses(module)
    assert uses, module
    assert not {f: u for f, u in uses.items() if "influence" in u}, uses


def test_the_core_never_uses_the_bindings():
    for module in ("data", "models", "objective", "solvers", "fit", "influence"):
        assert not {f: u for f, u in rust_uses(module).items() if "python" in u}, module


def test_the_cg_chain_exists_once():
    """Preconditioner, operator, CG and the null-space fix are assembled in one place
    (solvers::Prepared), which Newton and Influence both use."""
    calls_cg = re.compile(r"(?<![:\w])cg\(")  # a call of solvers::cg itself (not Prepared::cg)
    callers = [f for f in RUST.rglob("*.rs") if "tests" not in f.parts and calls_cg.search(f.read_text()) and f.name != "cg.rs"]
    assert [f.relative_to(RUST).as_posix() for f in callers] == ["solvers/mod.rs"]
    for user in ("fit/mod.rs", "influence/mod.rs"):
        assert "Prepared" in (RUST / user).read_text(), user
