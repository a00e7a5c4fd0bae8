"""The documentation is part of the product: every public function, class and method has a
NumPy-format docstring with its parameters, what it returns and an example, every example runs
and prints what it says, every public name is in the API reference, and every code block of
the narrative pages (docs/*.md, and README.md's) runs.

Docstring examples are doctests with ``np`` (NumPy) and ``uw`` (upweight) imported, NumPy's own
convention; the pages' ```python blocks run in order in one namespace per page, their ```bash
blocks with bash -e in the same working directory (```console blocks, install commands, are shown
only). .ci/run also builds the pages with Sphinx, warnings as errors (docs/conf.py)."""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import upweight as uw

numpydoc_validate = pytest.importorskip("numpydoc.validate")

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
PUBLIC_MODULES = ["upweight", "upweight.networks", "upweight.dask", "upweight.plots", "upweight.reference"]
# numpydoc's codes (docs/conf.py checks the same in the Sphinx build): a docstring; every parameter
# documented, none that does not exist, each with a type; a Returns section; an Examples section
CHECKS = {"GL08", "PR01", "PR02", "PR10", "RT01", "EX01"}


def _own(cls) -> list[str]:
    """The public methods and properties of an upweight class, its upweight bases' included."""
    names = []
    for klass in cls.__mro__:
        if not klass.__module__.startswith("upweight"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") or name in names:
                continue
            if inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod)):
                names.append(name)
    return names


def public_objects() -> tuple[dict[str, object], dict[str, str]]:
    """Every public function, class, method and property, by its documented path (each object
    once: a name re-exported by ``upweight`` is documented there), and where it is defined (the
    path numpydoc imports: ``upweight.diagnostics`` is also a module)."""
    seen: set[int] = set()
    out: dict[str, object] = {}
    where: dict[str, str] = {}
    for modname in PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj) or id(obj) in seen:
                continue  # constants (ACTIVATIONS, ...) are documented in their module's docstring
            seen.add(id(obj))
            out[f"{modname}.{name}"] = obj
            where[f"{modname}.{name}"] = home = f"{obj.__module__}.{obj.__qualname__}"
            if inspect.isclass(obj) and not issubclass(obj, BaseException):
                for member in _own(obj):
                    out[f"{modname}.{name}.{member}"] = inspect.getattr_static(obj, member)
                    where[f"{modname}.{name}.{member}"] = f"{home}.{member}"
    return out, where


OBJECTS, DEFINED_AT = public_objects()


@pytest.mark.parametrize("path", sorted(OBJECTS))
def test_every_public_object_has_a_complete_numpy_docstring(path):
    obj = OBJECTS[path]
    checks = CHECKS
    if isinstance(obj, property) or (inspect.isclass(obj) and issubclass(obj, (BaseException,))):
        checks = {"GL08"}  # attributes and exceptions: a docstring saying what they are
    errors = [f"{code}: {msg}" for code, msg in numpydoc_validate.validate(DEFINED_AT[path])["errors"] if code in checks]
    assert not errors, f"{path}:\n  " + "\n  ".join(errors)


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests: dict[str, doctest.DocTest] = {}
    for modname in {obj.__module__ for obj in OBJECTS.values() if hasattr(obj, "__module__")} | set(PUBLIC_MODULES):
        for test in finder.find(importlib.import_module(modname), modname):
            if test.examples:
                tests.setdefault(test.name, test)
    return tests


DOCTESTS = _doctests()


@pytest.mark.parametrize("name", sorted(DOCTESTS))
def test_docstring_examples_run_and_print_what_they_say(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    test = DOCTESTS[name]
    test.globs = {"np": np, "uw": uw}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    with np.printoptions(precision=4, suppress=True, legacy="1.25"):
        result = runner.run(test, out=report.append)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed:\n" + "".join(report)


def test_every_public_name_is_in_the_api_reference():
    """Each public function and class has an autodoc entry (its members come with :members:)."""
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        module = "upweight"
        for m in re.finditer(r"(currentmodule|auto(?:class|function|exception))::\s+([\w.]+)", page.read_text()):
            if m.group(1) == "currentmodule":
                module = m.group(2)
            else:
                documented.add(f"{module}.{m.group(2)}")
    top_level = [path for path, obj in OBJECTS.items() if not isinstance(obj, property) and path.count(".") == _depth(path)]
    assert not [p for p in top_level if p not in documented], f"not in docs/api/*.md: {[p for p in top_level if p not in documented]}"


def _depth(path: str) -> int:
    """Dots in a module-level name: the module's own plus one."""
    return next(m for m in sorted(PUBLIC_MODULES, key=len, reverse=True) if path.startswith(m + ".")).count(".") + 1


# -- the narrative pages ---------------------------------------------------------------------------

PAGES = sorted(p for p in DOCS.glob("*.md") if p.name != "README.md") + [DOCS.parent / "README.md"]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def test_the_pages_exist_and_are_in_the_table_of_contents():
    index = (DOCS / "index.md").read_text()
    for page in PAGES:
        if page.parent == DOCS and page.name != "index.md":
            assert page.stem in index, f"{page.name} is not in docs/index.md's toctree"


@pytest.mark.parametrize("page", PAGES, ids=[p.stem if p.parent == DOCS else "README" for p in PAGES])
def test_every_code_block_of_the_page_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for n, m in enumerate(FENCE.finditer(page.read_text())):
        lang, code = m.group(1), m.group(2)
        where = f"{page.name}, block {n} ({lang})"
        if lang == "python":
            exec(compile(code, where, "exec"), namespace)
        elif lang == "bash":
            res = subprocess.run(["bash", "-e", "-c", code], capture_output=True, text=True, env=env, timeout=600)
            assert res.returncode == 0, f"{where} failed:\n{code}\n{res.stdout}\n{res.stderr}"
