"""Golden outputs: the public API must reproduce what commit df097f3 computed, bit for bit.

tests/golden/cases.py builds deterministic inputs (seeded synthetic data, the bundled data sets)
and calls the public API (estimators, Influence with direct / cg / auto, every storage of X,
every query, validation refits, diagnostics, GradientInfluence, scikit-learn / statsmodels
interop, save/load, the CLI). tests/golden/record.py ran those same calls once on df097f3 and
stored the results in tests/golden/<area>.npz and tests/golden/text/*.txt (CLI stdout). Each
area is one test case here; a failure names every differing key with its max abs / rel
difference. Do NOT re-record the golden files to make this test pass (tests/golden/README.md).

Comparison rules (per key): dtype (but not a string's width) and shape must match exactly;
integer, bool and string results (indices, iteration counts, class labels, solver names, hashes,
stdout) must be equal exactly; float results must be equal (``np.array_equal``, NaN == NaN)
unless a tolerance knob below is raised. A float32 result stays float32. Keys missing from
either side fail too; output-file fields added after df097f3 are not pinned.

Tolerance knobs (all default 0.0 = bit-identical):

* ``RTOL[area]``: per area, a normwise relative tolerance for float results,
  ``max|got - want| <= RTOL[area] * max|want|`` for each key. Raise one only where a change of
  summation order is unavoidable, and never above ``MAX_RTOL = 1e-14`` (enforced).
* ``ATOL_ROUNDING_LEVEL``: an absolute tolerance for the keys in ``ROUNDING_LEVEL_KEYS``
  (gradient norms at the optimum, relative residuals of solves): numbers at rounding level
  (~1e-16) that a reordered sum changes by O(1) relative, so RTOL cannot cover them. At most
  ``MAX_ATOL_ROUNDING_LEVEL = 1e-12`` (enforced).
* ``MASK_ROUNDING_LEVEL_IN_STDOUT``: the CLI prints those rounding-level numbers ("gradient
  norm 3.2e-13", "max relative residual 2.3e-16"); True replaces them by "<r>" in both texts
  before the (otherwise exact) comparison.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"


def _load_cases():
    """tests/golden/cases.py, the calls shared with record.py (imported by path: tests/ is not
    a package)."""
    name = "upweight_golden_cases"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, GOLDEN / "cases.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


cases = _load_cases()

# -- tolerance knobs (see the module docstring); default exact ---------------------------------
MAX_RTOL = 1e-14
RTOL = {
    "inputs": 0.0,  # sha256 strings: always exact
    "fit": 0.0,
    "influence": 0.0,
    "storage": 0.0,
    "auto": 0.0,
    "datasets": 0.0,
    "validation": 0.0,
    "diagnostics": 0.0,
    "gradients": 0.0,
    "interop": 0.0,
    "persist": 0.0,
    "cli": 0.0,
    "cli_parquet": 0.0,
    "reference": 0.0,
}
MAX_ATOL_ROUNDING_LEVEL = 1e-12
ATOL_ROUNDING_LEVEL = 0.0
ROUNDING_LEVEL_KEYS = ("grad_norm", "/solve_info/residuals")
MASK_ROUNDING_LEVEL_IN_STDOUT = False

#: optional packages an area needs (installed by ``pip install '.[test]'``)
NEEDS = {
    "storage": ("scipy",),
    "auto": ("scipy",),
    "inputs": ("scipy",),
    "interop": ("sklearn", "statsmodels"),
    "cli": ("scipy",),
    "cli_parquet": ("pyarrow", "scipy"),
}


def _is_rounding_level(key: str) -> bool:
    return any(pattern in key for pattern in ROUNDING_LEVEL_KEYS)


def load_golden(area: str) -> dict:
    """The stored outputs of one area: arrays from <area>.npz, texts from text/<area>__*.txt."""
    with np.load(GOLDEN / f"{area}.npz", allow_pickle=False) as z:
        out = {key: z[key] for key in z.files}
    for path in sorted((GOLDEN / "text").glob(f"{area}__*.txt")):
        with open(path, newline="") as f:
            out[path.name] = cases.Text(f.read())
    return out


def _mask_stdout(text: str) -> str:
    if not MASK_ROUNDING_LEVEL_IN_STDOUT:
        return text
    return re.sub(r"(gradient norm |max relative residual )[-+0-9.e]+", r"\1<r>", text)


def _first_diff(got: np.ndarray, want: np.ndarray, bad: np.ndarray) -> str:
    if got.ndim == 0:
        return f"got {got.item()!r}, golden {want.item()!r}"
    i = tuple(int(j) for j in np.argwhere(bad)[0])
    return f"{int(bad.sum())} of {bad.size} entries differ; first at {i}: got {got[i]!r}, golden {want[i]!r}"


def compare(key: str, got, want, rtol: float, atol: float = 0.0) -> str | None:
    """None if ``got`` matches the golden ``want``, else a message naming the key and the max
    abs / rel difference."""
    if isinstance(want, cases.Text):
        if not isinstance(got, str):
            return f"{key}: expected text, got {type(got).__name__}"
        a, b = _mask_stdout(str(got)), _mask_stdout(str(want))
        if a == b:
            return None
        la, lb = a.splitlines(), b.splitlines()
        for i, (x, y) in enumerate(zip(la, lb, strict=False)):
            if x != y:
                msg = f"{key}: text differs at line {i + 1}:\n    got:    {x!r}\n    golden: {y!r}"
                if a.startswith("<exit status"):  # the command failed: show its stderr
                    msg += "\n    " + "\n    ".join(la[-12:])
                return msg
        return f"{key}: text differs in length ({len(la)} lines, golden {len(lb)})"
    if isinstance(got, cases.Text):
        return f"{key}: got text, golden holds an array"
    got = cases.to_array(got)
    strings = got.dtype.kind == want.dtype.kind == "U"  # the width of a string dtype is no result
    if got.dtype != want.dtype and not strings:
        return f"{key}: dtype {got.dtype}, golden {want.dtype}"
    if got.shape != want.shape:
        return f"{key}: shape {got.shape}, golden {want.shape}"
    if want.dtype.kind not in "fc":
        if np.array_equal(got, want):
            return None
        bad = got != want
        if strings and got.ndim == 1:
            return f"{key}: not equal: got {got.tolist()}, golden {want.tolist()}"
        msg = f"{key}: not equal ({want.dtype}): {_first_diff(got, want, bad)}"
        if want.dtype.kind in "iub":
            msg += f"; max abs diff {np.abs(got.astype(np.float64) - want.astype(np.float64)).max():.6g}"
        return msg
    if np.array_equal(got, want, equal_nan=True):
        return None
    nan_got, nan_want = np.isnan(got), np.isnan(want)
    if not np.array_equal(nan_got, nan_want):
        return f"{key}: NaN at other places ({int(nan_got.sum())} NaN, golden {int(nan_want.sum())})"
    ok = ~nan_want
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        g, w = got[ok].astype(np.float64), want[ok].astype(np.float64)
        diff = np.abs(g - w)
        max_abs = float(diff.max())
        scale = float(np.abs(w).max())
        rel = diff / np.abs(w)
        max_rel = float(np.nanmax(np.where(diff == 0, 0.0, rel)))
    allowed = rtol * scale + atol
    if (rtol or atol) and max_abs <= allowed:
        return None
    bad = (got != want) & ~(nan_got & nan_want)
    return (f"{key}: max abs diff {max_abs:.3e}, max rel diff {max_rel:.3e} (normwise {max_abs / scale if scale else float('inf'):.3e}), "
            f"allowed abs {allowed:.3e} (rtol={rtol:g}, atol={atol:g}); {_first_diff(got, want, bad)}")


def compare_all(area: str, got: dict, want: dict, keys=None) -> list[str]:
    """Every difference between an area's outputs and its golden outputs (missing and extra
    keys too, unless ``keys`` restricts the comparison)."""
    failures = []
    got = {(cases.text_filename(k) if isinstance(v, cases.Text) else k): v for k, v in got.items()}
    if keys is None:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        failures += [f"{k}: in the golden outputs but no longer computed" for k in missing]
        failures += [f"{k}: computed but not in the golden outputs (a case was added: record only that area, on df097f3)" for k in extra]
        keys = sorted(set(want) & set(got))
    for key in keys:
        atol = ATOL_ROUNDING_LEVEL if _is_rounding_level(key) else 0.0
        msg = compare(key, got[key], want[key], RTOL[area], atol)
        if msg:
            failures.append(msg)
    return failures


def _report(area: str, failures: list[str], n_keys: int) -> str:
    shown = "\n  ".join(failures[:40])
    more = f"\n  ... and {len(failures) - 40} more" if len(failures) > 40 else ""
    return f"golden area {area!r}: {len(failures)} of {n_keys} outputs differ from df097f3:\n  {shown}{more}"


@pytest.mark.parametrize("area", list(cases.AREAS))
def test_golden(area, tmp_path):
    for module in NEEDS.get(area, ()):
        pytest.importorskip(module)
    want = load_golden(area)
    got = cases.cases(area, tmp_path)
    failures = compare_all(area, got, want)
    assert not failures, _report(area, failures, len(want))


def test_model_files_written_by_df097f3_still_load(tmp_path):
    """A model file exactly as df097f3's save_model wrote it (its stored fields) loads with
    today's load_model into the same model, with the same influence."""
    want = load_golden("persist")
    got = {}
    for prefix in sorted({k.rsplit("/file/", 1)[0] for k in want if "/file/" in k}):
        fam = prefix.split("/")[1]
        label = prefix.split("/")[2]
        fields = {name: want[f"{prefix}/file/{name}"] for name in cases.PERSIST_FIELDS}
        loaded = cases.load_saved_fields(fields, tmp_path / f"{fam}_{label}.npz")
        X, y, w, Xt, yt = cases.problem(fam)
        sw = w if label.endswith(",w") else None
        got[f"{prefix}/loaded/type"] = type(loaded).__name__
        got[f"{prefix}/loaded/l2"] = float(loaded.l2)
        for name in cases.LOADED_FIELDS:
            got[f"{prefix}/loaded/{name}"] = getattr(loaded, name)
        if fam in ("logistic", "multinomial"):
            got[f"{prefix}/loaded/classes_"] = loaded.classes_
        got[f"{prefix}/loaded/on_loss"] = cases.uw.Influence(loaded, X, y, sw).on_loss(Xt, yt)
        got[f"{prefix}/loaded/predict"] = loaded.predict(Xt)
    assert len(got) > 40
    failures = compare_all("persist", got, want, keys=sorted(got))
    assert not failures, _report("persist (files from df097f3)", failures, len(got))


def test_golden_files_and_knobs():
    """Every stored file belongs to an area of cases.py, every area has its file, and the
    tolerance knobs stay within their bounds."""
    stored = {p.stem for p in GOLDEN.glob("*.npz")}
    assert stored == set(cases.AREAS), f"stored areas {sorted(stored)} != cases.AREAS {sorted(cases.AREAS)}"
    for path in (GOLDEN / "text").glob("*.txt"):
        assert path.name.split("__")[0] in cases.AREAS, f"{path.name}: no such area"
    assert set(RTOL) == set(cases.AREAS), "one RTOL knob per area"
    for area, rtol in RTOL.items():
        assert 0.0 <= rtol <= MAX_RTOL, f"RTOL[{area!r}] = {rtol:g} exceeds MAX_RTOL = {MAX_RTOL:g}"
    assert 0.0 <= ATOL_ROUNDING_LEVEL <= MAX_ATOL_ROUNDING_LEVEL
