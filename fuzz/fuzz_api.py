"""Coverage-guided fuzzing of the public API with atheris (issue 5). Not part of the test suite:

    pip install atheris
    python fuzz/fuzz_api.py -max_total_time=300          # bounded run; tests/README.md records runs

Each input is decoded into a problem (family, shapes, values including NaN, inf and 1e300,
weights, l2, solver, dtype, dense or sparse) and run through fit, Influence, scores, top-k,
self-influence, diagnostics and the CLI's table reader. A run fails on anything but finite results
or upweight's own errors: a Rust panic (InternalError), another exception type, or a silent NaN.
Whatever it finds goes into tests/test_fuzz.py as a regular case.
"""

from __future__ import annotations

import sys
import warnings

import atheris

with atheris.instrument_imports():
    import numpy as np

    import upweight as uw

FAMILIES = ["squared", "logistic", "poisson", "multinomial"]
# how far inputs got: printed at exit, for the record in tests/README.md
STAGES = {"inputs": 0, "fitted": 0, "scored": 0, "own_error": 0}
SPECIAL = [0.0, 1.0, -1.0, 1e-300, 1e300, -1e300, 1e150, np.nan, np.inf, -np.inf, 0.5, 2.0]


def values(fdp, count: int) -> np.ndarray:
    out = np.empty(count)
    for i in range(count):
        if fdp.ConsumeBool():
            out[i] = SPECIAL[fdp.ConsumeIntInRange(0, len(SPECIAL) - 1)]
        else:
            out[i] = fdp.ConsumeFloatInRange(-10.0, 10.0)
    return out


def finite(*arrays) -> None:
    for a in arrays:
        if not np.isfinite(np.asarray(a, dtype=float)).all():
            raise AssertionError("non-finite result without an error")


def one_input(data: bytes) -> None:
    STAGES["inputs"] += 1
    if STAGES["inputs"] % 20000 == 0:  # libFuzzer exits without running Python's atexit
        print("stages:", STAGES, file=sys.stderr, flush=True)
    fdp = atheris.FuzzedDataProvider(data)
    family = FAMILIES[fdp.ConsumeIntInRange(0, 3)]
    n, d = fdp.ConsumeIntInRange(1, 12), fdp.ConsumeIntInRange(1, 4)
    X = values(fdp, n * d).reshape(n, d)
    np.seterr(all="ignore")  # NaN labels are part of the input space
    if family == "squared":
        y = values(fdp, n)
    elif family == "poisson":
        y = np.abs(np.round(values(fdp, n)))
    else:
        y = np.round(np.abs(values(fdp, n))) % (2 if family == "logistic" else 3)
    w = np.abs(values(fdp, n)) if fdp.ConsumeBool() else None
    l2 = [0.0, 1e-6, 1e-2, 1.0][fdp.ConsumeIntInRange(0, 3)]
    solver = ["direct", "cg", "auto"][fdp.ConsumeIntInRange(0, 2)]
    layout = fdp.ConsumeIntInRange(0, 2)  # float64, float32, sparse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Xin = X
        if layout == 1:
            Xin = X.astype(np.float32)
        elif layout == 2:
            import scipy.sparse as sp

            Xin = sp.csr_matrix(np.where(np.abs(X) < 1, 0.0, X))
        cls = {"squared": uw.LinearRegression, "poisson": uw.PoissonRegression}.get(family, uw.LogisticRegression)
        try:
            model = cls(l2=l2, solver=solver, max_iter=30).fit(Xin, y, sample_weight=w)
            finite(model.theta_)
            STAGES["fitted"] += 1
            inf = uw.Influence(model, Xin, y, sample_weight=w, solver=solver, on_unconverged="raise", max_iter=200)
            finite(inf.on_loss(Xin[:2], y[:2]), inf.self_influence(), inf.top_k(Xin[:2], y[:2], k=2).harmful)
            if family != "multinomial":
                finite(uw.diagnostics(model, Xin, y, sample_weight=w).leverage)
            STAGES["scored"] += 1
        except uw.UpweightError:
            STAGES["own_error"] += 1


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
