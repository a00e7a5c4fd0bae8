"""The golden cases: deterministic inputs and the public-API calls whose outputs are pinned.

Shared by ``record.py`` (which wrote the stored outputs, once, at commit df097f3) and
``tests/test_golden.py`` (which recomputes them with the installed package and compares), so the
two cannot drift apart. Each entry of :data:`AREAS` is a function ``area(tmp: Path) -> dict``
mapping descriptive keys ("influence/logistic/l2=0.05,w/cg/on_loss") to results. Only the public
API is used (``import upweight as uw``, ``python -m upweight.cli``), never ``upweight._core``.

Values are turned into arrays by :func:`to_array` (ints -> int64, floats -> float64, bools,
strings -> unicode arrays, None -> the string "<None>"); arrays keep their dtype. A
:class:`Text` value (CLI stdout) is stored as a ``.txt`` file instead of inside an ``.npz``.
Temporary paths never enter a value: they are replaced by ``<TMP>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

import upweight as uw

FAMILIES = ("linear", "logistic", "multinomial", "poisson")
SOLVERS = ("direct", "cg", "auto")
L2 = 0.05
DAMPING = 1e-2


class Text(str):
    """A text output (CLI stdout): stored as ``text/<key>.txt``, compared exactly."""


def to_array(v) -> np.ndarray:
    """The stored form of a value (dtype preserved for arrays)."""
    if isinstance(v, Text):
        raise TypeError("Text values are stored as .txt files")
    if v is None:
        return np.array("<None>")
    if isinstance(v, (bool, np.bool_)):
        return np.array(bool(v))
    if isinstance(v, (int, np.integer)) and not isinstance(v, np.ndarray):
        return np.array(v, dtype=np.int64) if isinstance(v, int) else np.asarray(v)
    if isinstance(v, float):
        return np.array(v, dtype=np.float64)
    if isinstance(v, str):
        return np.array(v)
    if isinstance(v, (list, tuple)) and v and all(isinstance(s, str) for s in v):
        return np.array(list(v))
    return np.asarray(v)


def text_filename(key: str) -> str:
    return key.replace("/", "__").replace("=", "-").replace(",", "_") + ".txt"


# ------------------------------------------------------------------------------------------
# deterministic inputs
# ------------------------------------------------------------------------------------------

def _sigmoid(t):
    return 1.0 / (1.0 + np.exp(-t))


def problem(family: str, n: int = 0, d: int = 4, seed: int = 0, sparsity: float = 0.0):
    """(X, y, w, X_test, y_test) for a family, from a seeded generator. ``sparsity``: fraction
    of feature entries set to exactly zero (for CSR storage). One weight is zero."""
    n = n or {"linear": 60, "logistic": 80, "multinomial": 90, "poisson": 70}[family]
    rng = np.random.default_rng(1000 + 17 * FAMILIES.index(family) + seed)
    q = 5
    X = rng.standard_normal((n + q, d))
    if sparsity:
        X[rng.random(X.shape) < sparsity] = 0.0
    beta = np.linspace(-1.0, 1.0, d)
    if family == "linear":
        y = X @ beta + 0.5 + 0.3 * rng.standard_normal(n + q)
    elif family == "logistic":
        y = (rng.random(n + q) < _sigmoid(1.2 * X @ beta - 0.2)).astype(np.float64)
    elif family == "multinomial":
        B = rng.standard_normal((d, 3))
        eta = X @ B
        P = np.exp(eta - eta.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        y = (rng.random(n + q)[:, None] > np.cumsum(P, axis=1)).sum(axis=1).astype(np.float64)
    else:
        y = rng.poisson(np.exp(0.4 * X @ beta + 0.3)).astype(np.float64)
    w = rng.uniform(0.2, 2.0, n)
    w[3] = 0.0
    return X[:n], y[:n], w, X[n:], y[n:]


def estimator(family: str, l2: float, **kw):
    if family == "linear":
        return uw.LinearRegression(l2=l2, **kw)
    if family == "poisson":
        return uw.PoissonRegression(l2=l2, **kw)
    return uw.LogisticRegression(l2=l2, **kw)


def _p(model) -> int:
    return int(np.asarray(model.theta_).size)


@contextlib.contextmanager
def _warnings():
    """Catch every warning of the block (kept out of the test output); see _categories."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _categories(caught) -> list:
    """The sorted distinct warning classes caught (their messages are not pinned)."""
    return sorted({w.category.__name__ for w in caught}) or ["<none>"]


def _fields(out: dict, prefix: str, obj, names=None) -> None:
    """Every field of a result dataclass (or the named attributes) under ``prefix/``."""
    names = names or [f.name for f in dataclasses.fields(obj)]
    for name in names:
        out[f"{prefix}/{name}"] = getattr(obj, name)


def _model_fields(out: dict, prefix: str, m) -> None:
    for name in ("theta_", "coef_", "intercept_", "n_iter_", "grad_norm_", "converged_", "objective_", "n_features_in_"):
        out[f"{prefix}/{name}"] = getattr(m, name)


def _predictions(out: dict, prefix: str, m, family: str, Xt, yt) -> None:
    out[f"{prefix}/predict"] = m.predict(Xt)
    out[f"{prefix}/decision_function"] = m.decision_function(Xt)
    out[f"{prefix}/loss"] = m.loss(Xt, yt)
    if family in ("logistic", "multinomial"):
        out[f"{prefix}/predict_proba"] = m.predict_proba(Xt)
        out[f"{prefix}/classes_"] = m.classes_


def _settings(family: str):
    """(label, l2, use_weights) of the fits pinned per family; l2 = 0 is valid for all four
    (the classes overlap)."""
    return [("l2=0", 0.0, False), ("l2=0,w", 0.0, True), (f"l2={L2}", L2, False), (f"l2={L2},w", L2, True)]


# ------------------------------------------------------------------------------------------
# areas
# ------------------------------------------------------------------------------------------

#: every (n, d, seed, sparsity) that the areas pass to problem() (for each family)
PROBLEM_CONFIGS = ((0, 4, 0, 0.0), (120, 6, 1, 0.6), (40, 4, 2, 0.0), (50, 4, 3, 0.0), (0, 4, 4, 0.0), (0, 4, 5, 0.0), (30, 4, 6, 0.0))


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def area_inputs(tmp: Path) -> dict:
    """Fingerprints of the generated inputs (NumPy's seeded generators): if this area fails,
    the inputs changed (a NumPy upgrade), not upweight, and every other failure is suspect."""
    out = {}
    for fam in FAMILIES:
        for n, d, seed, sparsity in PROBLEM_CONFIGS:
            X, y, w, Xt, yt = problem(fam, n=n, d=d, seed=seed, sparsity=sparsity)
            out[f"inputs/problem/{fam}/n={n},d={d},seed={seed},sparsity={sparsity}"] = _sha(X, y, w, Xt, yt)
    out["inputs/auto"] = _sha(*_auto_problem())
    out["inputs/gradients"] = _sha(*_gradient_problem())
    _cli_inputs(tmp)
    for path in sorted(tmp.iterdir()):
        if path.suffix == ".npy":
            out[f"inputs/cli/{path.name}"] = _sha(np.load(path))
    return out


def area_fit(tmp: Path) -> dict:
    """Estimators: every family, with and without weights, l2 = 0 and l2 > 0, default and
    explicit Newton solvers, warm starts; parameters, fit statistics and predictions."""
    out = {}
    for fam in FAMILIES:
        X, y, w, Xt, yt = problem(fam)
        for label, l2, weighted in _settings(fam):
            m = estimator(fam, l2).fit(X, y, sample_weight=w if weighted else None)
            _model_fields(out, f"fit/{fam}/{label}", m)
            _predictions(out, f"fit/{fam}/{label}", m, fam, Xt, yt)
        for solver in ("direct", "cg"):
            m = estimator(fam, L2, solver=solver).fit(X, y, sample_weight=w)
            _model_fields(out, f"fit/{fam}/l2={L2},w/solver={solver}", m)
        # warm start: a second fit on other weights starts from the first solution
        m = estimator(fam, L2, warm_start=True).fit(X, y)
        m.fit(X, y, sample_weight=w)
        _model_fields(out, f"fit/{fam}/l2={L2},w/warm_start", m)
        # loose tolerance: stops after fewer Newton steps
        m = estimator(fam, L2, tol=1e-3).fit(X, y, sample_weight=w)
        _model_fields(out, f"fit/{fam}/l2={L2},w/tol=1e-3", m)
    # Newton stopped by max_iter: ConvergenceWarning, the parameters after one step
    for fam in FAMILIES:
        X, y, w, Xt, yt = problem(fam)
        with _warnings() as caught:
            m = estimator(fam, 0.0, max_iter=1).fit(X, y, sample_weight=w)
        _model_fields(out, f"fit/{fam}/l2=0,w/max_iter=1", m)
        out[f"fit/{fam}/l2=0,w/max_iter=1/warnings"] = _categories(caught)
    # multinomial with an explicit class count larger than max(y) + 1: df097f3 fitted it (class 3's
    # intercept ran off towards -inf); refused since issue 11 (tests/test_golden.py CHANGED_BY_DESIGN)
    X, y, w, Xt, yt = problem("multinomial")
    try:
        m = uw.LogisticRegression(l2=L2, n_classes=4).fit(X, y, sample_weight=w)
        _model_fields(out, f"fit/multinomial/l2={L2},w/n_classes=4", m)
        _predictions(out, f"fit/multinomial/l2={L2},w/n_classes=4", m, "multinomial", Xt, yt)
    except uw.errors.InputError as exc:
        out[f"fit/multinomial/l2={L2},w/n_classes=4/refused"] = type(exc).__name__
    return out


def _queries(out: dict, prefix: str, inf, model, family: str, X, y, Xt, yt, with_params: bool = True) -> None:
    """Every query of an Influence object, in a fixed order (the solver under "auto" can change
    with the queries, so the order is part of the case)."""
    p = _p(model)
    n = inf.n_samples
    rng = np.random.default_rng(7)
    g = rng.standard_normal(p)
    G = rng.standard_normal((3, p))
    idx = [0, 5, n - 1]
    out[f"{prefix}/n_samples"] = inf.n_samples
    out[f"{prefix}/n_params"] = inf.n_params
    out[f"{prefix}/total_weight"] = inf.total_weight
    out[f"{prefix}/grad_norm"] = inf.grad_norm
    out[f"{prefix}/solver_initial"] = inf.solver
    out[f"{prefix}/on_loss"] = inf.on_loss(Xt, yt)
    _fields(out, f"{prefix}/on_loss/solve_info", inf.solve_info)
    out[f"{prefix}/on_loss/idx"] = inf.on_loss(Xt, yt, idx=idx)
    out[f"{prefix}/on_prediction/mean"] = inf.on_prediction(Xt[:3])
    out[f"{prefix}/on_prediction/linear"] = inf.on_prediction(Xt[2:], kind="linear")
    out[f"{prefix}/on_prediction/mean/idx"] = inf.on_prediction(Xt[:2], idx=[2, 1])
    out[f"{prefix}/on/vector"] = inf.on(g)
    out[f"{prefix}/on/matrix"] = inf.on(G)
    out[f"{prefix}/on/vector/idx"] = inf.on(g, idx=idx)
    out[f"{prefix}/on_mean_loss"] = inf.on_mean_loss(Xt, yt)
    out[f"{prefix}/on_loss_gap"] = inf.on_loss_gap(Xt[:2], yt[:2], Xt[2:], yt[2:])
    out[f"{prefix}/new_point/single"] = inf.new_point(Xt[0], yt[0])
    out[f"{prefix}/new_point/multi"] = inf.new_point(Xt[:3], yt[:3])
    top = inf.top_k(Xt, yt, k=3)
    _fields(out, f"{prefix}/top_k", top)
    _fields(out, f"{prefix}/top_k_on", inf.top_k_on(G, k=2))
    out[f"{prefix}/inverse_hvp/vector"] = inf.inverse_hvp(g)
    out[f"{prefix}/inverse_hvp/matrix"] = inf.inverse_hvp(G.T)
    _fields(out, f"{prefix}/inverse_hvp/solve_info", inf.solve_info)
    if with_params:
        out[f"{prefix}/params"] = inf.params()
    out[f"{prefix}/params/idx"] = inf.params(idx=idx)
    mask = np.zeros(n, dtype=bool)
    mask[[1, 4]] = True
    out[f"{prefix}/params/mask"] = inf.params(idx=mask)
    out[f"{prefix}/self_influence"] = inf.self_influence()
    _fields(out, f"{prefix}/self_influence/solve_info", inf.solve_info)
    out[f"{prefix}/solver_final"] = inf.solver


def area_influence(tmp: Path) -> dict:
    """Influence on dense float64 data: every family, direct / cg / auto, l2 > 0 with weights
    and l2 = 0 without, damping > 0; every query method and the solve info."""
    out = {}
    for fam in FAMILIES:
        X, y, w, Xt, yt = problem(fam)
        for label, l2, weighted in ((f"l2={L2},w", L2, True), ("l2=0", 0.0, False)):
            sw = w if weighted else None
            model = estimator(fam, l2).fit(X, y, sample_weight=sw)
            for solver in SOLVERS:
                inf = uw.Influence(model, X, y, sw, solver=solver)
                _queries(out, f"influence/{fam}/{label}/{solver}", inf, model, fam, X, y, Xt, yt)
        model = estimator(fam, L2).fit(X, y, sample_weight=w)
        for solver in ("direct", "cg"):
            inf = uw.Influence(model, X, y, w, solver=solver, damping=DAMPING)
            pre = f"influence/{fam}/l2={L2},w/{solver}/damping={DAMPING}"
            out[f"{pre}/on_loss"] = inf.on_loss(Xt, yt)
            out[f"{pre}/params"] = inf.params()
            out[f"{pre}/self_influence"] = inf.self_influence()
            out[f"{pre}/inverse_hvp"] = inf.inverse_hvp(np.arange(1.0, _p(model) + 1))
            _fields(out, f"{pre}/top_k", inf.top_k(Xt, yt, k=2))
        # CG stopped by max_iter, accepted with on_unconverged="warn"
        inf = uw.Influence(model, X, y, w, solver="cg", max_iter=2, on_unconverged="warn")
        pre = f"influence/{fam}/l2={L2},w/cg/max_iter=2,warn"
        with _warnings() as caught:
            out[f"{pre}/on_loss"] = inf.on_loss(Xt, yt)
        _fields(out, f"{pre}/solve_info", inf.solve_info)
        out[f"{pre}/warnings"] = _categories(caught)
        # theta* of the weighted fit, influence asked without the weights: NotAtOptimumWarning
        with _warnings() as caught:
            inf = uw.Influence(model, X, y, solver="direct")
        pre = f"influence/{fam}/not_at_optimum/direct"
        out[f"{pre}/warnings"] = _categories(caught)
        out[f"{pre}/grad_norm"] = inf.grad_norm
        out[f"{pre}/on_loss"] = inf.on_loss(Xt, yt)
        # CG without the preconditioner and with a looser tolerance
        inf = uw.Influence(model, X, y, w, solver="cg", precondition=False, rtol=1e-6)
        pre = f"influence/{fam}/l2={L2},w/cg/precondition=False,rtol=1e-6"
        out[f"{pre}/on_loss"] = inf.on_loss(Xt, yt)
        _fields(out, f"{pre}/solve_info", inf.solve_info)
    return out


def _storages(X, tmp: Path, name: str):
    """(label, features) for every storage of the same matrix X (float64 values); float32 uses
    X rounded to float32. The .npy files are written here, at run time, into ``tmp``."""
    import scipy.sparse as sp

    X32 = X.astype(np.float32)
    f64, f32 = tmp / f"{name}_f64.npy", tmp / f"{name}_f32.npy"
    np.save(f64, X)
    np.save(f32, X32)
    return [
        ("f64", X),
        ("f32", X32),
        ("csr", sp.csr_matrix(X)),
        ("csc", sp.csc_matrix(X)),
        ("fortran", np.asfortranarray(X)),
        ("npy_f64", str(f64)),
        ("npy_f32", str(f32)),
        ("memmap_f64", np.load(f64, mmap_mode="r")),
    ]


def area_storage(tmp: Path) -> dict:
    """The same problem with X stored as float64, float32 (results stay float32), CSR, CSC,
    Fortran order, a .npy path (float64, float32) and a memmap: fit and influence (direct, cg),
    and sparse test points."""
    import scipy.sparse as sp

    out = {}
    for fam in ("linear", "logistic", "multinomial"):
        X, y, w, Xt, yt = problem(fam, n=120, d=6, seed=1, sparsity=0.6)
        for label, Xs in _storages(X, tmp, fam):
            pre = f"storage/{fam}/{label}"
            model = estimator(fam, L2).fit(Xs, y, sample_weight=w)
            _model_fields(out, f"{pre}/fit", model)
            for solver in ("direct", "cg"):
                inf = uw.Influence(model, Xs, y, w, solver=solver)
                q = f"{pre}/{solver}"
                out[f"{q}/on_loss"] = inf.on_loss(Xt, yt)
                out[f"{q}/on_loss/idx"] = inf.on_loss(Xt, yt, idx=[7, 0, 119])
                if label in ("f64", "csr"):
                    out[f"{q}/on_loss/csr_test"] = inf.on_loss(sp.csr_matrix(Xt), yt)
                out[f"{q}/on_prediction/mean"] = inf.on_prediction(Xt[:2])
                out[f"{q}/on_prediction/linear/csr_test"] = inf.on_prediction(sp.csr_matrix(Xt[2:4]), kind="linear")
                if solver == "direct" and label in ("f64", "f32", "csr", "npy_f32"):  # (size of the golden file)
                    out[f"{q}/params"] = inf.params()
                out[f"{q}/params/idx"] = inf.params(idx=[3, 119, 0])
                out[f"{q}/self_influence"] = inf.self_influence()
                _fields(out, f"{q}/top_k", inf.top_k(Xt, yt, k=3))
                out[f"{q}/new_point"] = inf.new_point(Xt[:2], yt[:2])
        # predictions at sparse test points
        model = estimator(fam, L2).fit(X, y, sample_weight=w)
        out[f"storage/{fam}/csr_test/decision_function"] = model.decision_function(sp.csr_matrix(Xt))
        out[f"storage/{fam}/csr_test/predict"] = model.predict(sp.csr_matrix(Xt))
    return out


def _auto_problem():
    """A sparse 400 x 600 logistic problem, as CSR arrays (data, indices, indptr) and y."""
    import scipy.sparse as sp

    rng = np.random.default_rng(42)
    n, d = 400, 600
    X = sp.random(n, d, density=0.012, format="csr", random_state=np.random.RandomState(42))
    X.data = rng.standard_normal(X.data.size)
    beta = rng.standard_normal(d)
    y = (rng.random(n) < _sigmoid(X @ beta)).astype(np.float64)
    return X.data, X.indices.astype(np.int64), X.indptr.astype(np.int64), y


def area_auto(tmp: Path) -> dict:
    """solver="auto" on a sparse problem whose cost model starts with CG and switches to the
    direct solver for a query with many right-hand sides (self-influence); also Newton-CG
    fitting chosen by the estimator's "auto"."""
    import scipy.sparse as sp

    data, indices, indptr, y = _auto_problem()
    X = sp.csr_matrix((data, indices, indptr), shape=(len(y), 600))
    Xt, yt = X[:4] * 0.9, y[:4]
    out = {}
    model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    _model_fields(out, "auto/logistic_sparse/fit", model)
    inf = uw.Influence(model, X, y)
    pre = "auto/logistic_sparse/influence"
    out[f"{pre}/solver_initial"] = inf.solver
    out[f"{pre}/on_loss"] = inf.on_loss(Xt, yt)
    _fields(out, f"{pre}/on_loss/solve_info", inf.solve_info)
    out[f"{pre}/solver_after_on_loss"] = inf.solver
    _fields(out, f"{pre}/top_k", inf.top_k(Xt, yt, k=4))
    out[f"{pre}/self_influence"] = inf.self_influence()
    _fields(out, f"{pre}/self_influence/solve_info", inf.solve_info)
    out[f"{pre}/solver_after_self_influence"] = inf.solver
    out[f"{pre}/on_loss/after_switch"] = inf.on_loss(Xt, yt)
    return out


def _dataset_fields(out: dict, prefix: str, X, y) -> None:
    out[f"{prefix}/shape"] = np.array(X.shape, dtype=np.int64)
    out[f"{prefix}/X_dtype"] = str(X.dtype)
    out[f"{prefix}/y_dtype"] = str(y.dtype)
    out[f"{prefix}/sha256"] = hashlib.sha256(np.ascontiguousarray(X).tobytes() + np.ascontiguousarray(y).tobytes()).hexdigest()
    out[f"{prefix}/X_head"] = X[:3]
    out[f"{prefix}/y_head"] = y[:20]


def area_datasets(tmp: Path) -> dict:
    """The bundled data sets and influence on them: breast cancer (binary logistic) and the
    digits 0-2 (multinomial, k = 3)."""
    out = {}
    X, y, names = uw.load_breast_cancer()
    _dataset_fields(out, "datasets/breast_cancer/load", X, y)
    out["datasets/breast_cancer/load/feature_names"] = list(names)
    perm = np.random.default_rng(0).permutation(len(y))
    te, tr = perm[:100], perm[100:]
    mu, sd = X[tr].mean(axis=0), X[tr].std(axis=0)
    Z = (X - mu) / sd
    model = uw.LogisticRegression(l2=1e-2).fit(Z[tr], y[tr])
    pre = "datasets/breast_cancer/logistic/l2=0.01"
    _model_fields(out, f"{pre}/fit", model)
    out[f"{pre}/predict_proba"] = model.predict_proba(Z[te][:10])
    for solver in ("direct", "cg"):
        inf = uw.Influence(model, Z[tr], y[tr], solver=solver)
        out[f"{pre}/{solver}/on_loss"] = inf.on_loss(Z[te][:4], y[te][:4])
        _fields(out, f"{pre}/{solver}/top_k", inf.top_k(Z[te][:10], y[te][:10], k=5))
        out[f"{pre}/{solver}/self_influence"] = inf.self_influence()
        out[f"{pre}/{solver}/params/idx"] = inf.params(idx=[0, 1, 2, 468])

    Xd, yd = uw.load_digits()
    _dataset_fields(out, "datasets/digits/load", Xd, yd)
    keep = np.flatnonzero(yd < 3)
    Xd, yd = Xd[keep] / 16.0, yd[keep]
    perm = np.random.default_rng(1).permutation(len(yd))
    te, tr = perm[:40], perm[40:]
    model = uw.LogisticRegression(l2=1e-2).fit(Xd[tr], yd[tr])
    pre = "datasets/digits012/multinomial/l2=0.01"
    _model_fields(out, f"{pre}/fit", model)
    out[f"{pre}/predict"] = model.predict(Xd[te])
    for solver in ("direct", "cg"):
        inf = uw.Influence(model, Xd[tr], yd[tr], solver=solver)
        out[f"{pre}/{solver}/on_loss"] = inf.on_loss(Xd[te][:3], yd[te][:3])
        out[f"{pre}/{solver}/on_prediction/mean"] = inf.on_prediction(Xd[te][:2])
        _fields(out, f"{pre}/{solver}/top_k", inf.top_k(Xd[te][:6], yd[te][:6], k=5))
        out[f"{pre}/{solver}/self_influence"] = inf.self_influence()
        _fields(out, f"{pre}/{solver}/self_influence/solve_info", inf.solve_info)
    return out


def area_validation(tmp: Path) -> dict:
    """Exact refits: leave_one_out, leave_k_out, response_curve (theta, TestLoss, mean
    TestLoss, Prediction mean / linear), compare; every family, small n."""
    out = {}
    for fam in FAMILIES:
        X, y, w, Xt, yt = problem(fam, n=40, seed=2)
        model = estimator(fam, L2).fit(X, y, sample_weight=w)
        pre = f"validation/{fam}/l2={L2},w"
        loo = uw.leave_one_out(model, X, y, idx=[0, 3, 7], X_test=Xt, y_test=yt, sample_weight=w)
        _fields(out, f"{pre}/leave_one_out", loo)
        _fields(out, f"{pre}/compare", uw.compare(loo.predicted_loss, loo.actual_loss))
        _fields(out, f"{pre}/leave_one_out/no_test", uw.leave_one_out(model, X, y, idx=np.array([1, 2]), sample_weight=w))
        _fields(out, f"{pre}/leave_k_out", uw.leave_k_out(model, X, y, [1, 2, 5], X_test=Xt, y_test=yt, sample_weight=w))
        eps4, eps6 = np.linspace(-w[4], 1.0, 5), np.linspace(-w[6], 1.0, 5)  # from removing the point
        rc = uw.response_curve(model, X, y, m=4, eps=eps4, sample_weight=w)
        _fields(out, f"{pre}/response_curve/theta", rc)
        rc = uw.response_curve(model, X, y, m=4, eps=eps4, f=uw.TestLoss(Xt, yt), sample_weight=w)
        _fields(out, f"{pre}/response_curve/test_loss", rc)
        rc = uw.response_curve(model, X, y, m=6, eps=eps6, f=uw.TestLoss(Xt, yt, mean=True), sample_weight=w)
        _fields(out, f"{pre}/response_curve/test_loss_mean", rc)
        for kind in ("mean", "linear"):
            rc = uw.response_curve(model, X, y, m=6, eps=eps6, f=uw.Prediction(Xt[:2], kind=kind), sample_weight=w)
            _fields(out, f"{pre}/response_curve/prediction_{kind}", rc)
        # unweighted, l2 = 0, all points
        m0 = estimator(fam, 0.0).fit(X, y)
        loo = uw.leave_one_out(m0, X, y, X_test=Xt, y_test=yt)
        _fields(out, f"validation/{fam}/l2=0/leave_one_out/all", loo)
        _fields(out, f"validation/{fam}/l2=0/compare", uw.compare(loo.predicted_params, loo.actual_params))
    _fields(out, "validation/compare/ties", uw.compare([1.0, 2.0, 2.0, 3.0, 5.0], [0.5, 1.0, 1.5, 1.5, 4.0]))
    return out


def area_diagnostics(tmp: Path) -> dict:
    """uw.diagnostics for the single-output families: leverage, residuals, scale, studentized
    residuals, Cook's distance, DFBETA(S), exact leave-one-out parameters."""
    out = {}
    for fam in ("linear", "logistic", "poisson"):
        X, y, w, Xt, yt = problem(fam, n=50, seed=3)
        for label, l2, weighted in _settings(fam):
            sw = w if weighted else None
            model = estimator(fam, l2).fit(X, y, sample_weight=sw)
            _fields(out, f"diagnostics/{fam}/{label}", uw.diagnostics(model, X, y, sample_weight=sw))
    return out


def _gradient_problem():
    """(G (50, 6), G_test (4, 6), weights, an SPD Hessian, a gradient vector)."""
    rng = np.random.default_rng(11)
    n, p = 50, 6
    G = rng.standard_normal((n, p)) @ np.diag(np.linspace(0.5, 2.0, p))
    Gt = rng.standard_normal((4, p))
    w = rng.uniform(0.3, 1.7, n)
    A = rng.standard_normal((p, p))
    H = A @ A.T / p + 0.5 * np.eye(p)
    return G, Gt, w, H, rng.standard_normal(p)


def area_gradients(tmp: Path) -> dict:
    """GradientInfluence from user gradients: empirical Fisher (no damping, damping, weights),
    explicit Hessian, direct / cg / auto, float32 gradients and a .npy path."""
    G, Gt, w, H, g = _gradient_problem()
    n, p = G.shape
    np.save(tmp / "grads_f32.npy", G.astype(np.float32))
    configs = [
        ("fisher", dict()),
        ("fisher,damping=0.001", dict(damping=1e-3)),
        ("fisher,w", dict(sample_weight=w)),
        ("hessian", dict(hessian=H)),
        ("hessian,damping=0.001,w", dict(hessian=H, damping=1e-3, sample_weight=w)),
    ]
    out = {}
    for label, kw in configs:
        for solver in SOLVERS:
            gi = uw.GradientInfluence(G, solver=solver, **kw)
            pre = f"gradients/{label}/{solver}"
            out[f"{pre}/curvature"] = gi.curvature
            out[f"{pre}/n_samples"] = gi.n_samples
            out[f"{pre}/n_params"] = gi.n_params
            out[f"{pre}/solver_initial"] = gi.solver
            out[f"{pre}/on_loss"] = gi.on_loss(Gt)
            _fields(out, f"{pre}/on_loss/solve_info", gi.solve_info)
            out[f"{pre}/on_loss/idx"] = gi.on_loss(Gt, idx=[2, 0])
            out[f"{pre}/on/vector"] = gi.on(g)
            out[f"{pre}/params"] = gi.params()
            out[f"{pre}/params/idx"] = gi.params(idx=[49, 3])
            out[f"{pre}/self_influence"] = gi.self_influence()
            _fields(out, f"{pre}/top_k", gi.top_k(Gt, k=3))
            _fields(out, f"{pre}/top_k_on", gi.top_k_on(Gt[:2] * 2.0, k=2))
            out[f"{pre}/inverse_hvp"] = gi.inverse_hvp(g)
            out[f"{pre}/solver_final"] = gi.solver
    for label, src in (("f32", G.astype(np.float32)), ("npy_f32", str(tmp / "grads_f32.npy"))):
        gi = uw.GradientInfluence(src, damping=1e-3, solver="direct")
        pre = f"gradients/fisher,damping=0.001/direct/{label}"
        out[f"{pre}/on_loss"] = gi.on_loss(Gt)
        out[f"{pre}/params/idx"] = gi.params(idx=[0, 49])
        out[f"{pre}/self_influence"] = gi.self_influence()
        _fields(out, f"{pre}/top_k", gi.top_k(Gt, k=3))
    return out


def area_interop(tmp: Path) -> dict:
    """Influence.from_sklearn (LinearRegression, Ridge, LogisticRegression binary with string
    labels and multinomial, PoissonRegressor) and Influence.from_statsmodels (OLS, WLS, GLM
    Gaussian / Binomial / Poisson): the converted model and its influence; refits of a
    sum-of-losses (Ridge) model."""
    import warnings

    import sklearn.linear_model as sklm
    import statsmodels.api as sm

    out = {}

    def record(pre, inf, X, y, Xt, yt):
        m = inf.model
        out[f"{pre}/model/type"] = type(m).__name__
        out[f"{pre}/model/l2"] = float(m.l2)
        out[f"{pre}/model/theta_"] = m.theta_
        out[f"{pre}/model/n_iter_"] = m.n_iter_
        out[f"{pre}/on_loss"] = inf.on_loss(Xt, yt)
        out[f"{pre}/self_influence"] = inf.self_influence()
        out[f"{pre}/params/idx"] = inf.params(idx=[0, 1, 9])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X, y, w, Xt, yt = problem("linear", seed=4)
        for name, est in (("LinearRegression", sklm.LinearRegression()), ("Ridge", sklm.Ridge(alpha=2.0))):
            est.fit(X, y, sample_weight=w)
            inf = uw.Influence.from_sklearn(est, X, y, sample_weight=w)
            record(f"interop/sklearn/{name}", inf, X, y, Xt, yt)
        # refits of a sum-of-losses model (l2 = alpha / W with the refit's W)
        loo = uw.leave_one_out(inf.model, X, y, idx=[0, 2], X_test=Xt, y_test=yt, sample_weight=w)
        _fields(out, "interop/sklearn/Ridge/leave_one_out", loo)

        X, y, w, Xt, yt = problem("logistic", seed=4)
        labels = np.array(["no", "yes"])
        est = sklm.LogisticRegression(C=0.5, solver="newton-cholesky", tol=1e-12, max_iter=1000)
        est.fit(X, labels[y.astype(int)], sample_weight=w)
        inf = uw.Influence.from_sklearn(est, X, labels[y.astype(int)], sample_weight=w)
        record("interop/sklearn/LogisticRegression/binary", inf, X, y, Xt, yt)

        X, y, w, Xt, yt = problem("multinomial", seed=4)
        est = sklm.LogisticRegression(C=0.5, solver="lbfgs", tol=1e-12, max_iter=5000).fit(X, 10 * (y + 1))
        inf = uw.Influence.from_sklearn(est, X, 10 * (y + 1))
        record("interop/sklearn/LogisticRegression/multinomial", inf, X, y, Xt, yt)

        X, y, w, Xt, yt = problem("poisson", seed=4)
        est = sklm.PoissonRegressor(alpha=0.1, solver="newton-cholesky", tol=1e-12, max_iter=1000).fit(X, y, sample_weight=w)
        inf = uw.Influence.from_sklearn(est, X, y, sample_weight=w)
        record("interop/sklearn/PoissonRegressor", inf, X, y, Xt, yt)

        X, y, w, Xt, yt = problem("linear", seed=5)
        res = sm.OLS(y, sm.add_constant(X)).fit()
        record("interop/statsmodels/OLS", uw.Influence.from_statsmodels(res), X, y, Xt, yt)
        res = sm.WLS(y, sm.add_constant(X), weights=w).fit()
        record("interop/statsmodels/WLS", uw.Influence.from_statsmodels(res), X, y, Xt, yt)
        res = sm.GLM(y, sm.add_constant(X), family=sm.families.Gaussian()).fit()
        record("interop/statsmodels/GLM_Gaussian", uw.Influence.from_statsmodels(res), X, y, Xt, yt)
        X, y, w, Xt, yt = problem("logistic", seed=5)
        res = sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial(), var_weights=w).fit()
        record("interop/statsmodels/GLM_Binomial", uw.Influence.from_statsmodels(res), X, y, Xt, yt)
        X, y, w, Xt, yt = problem("poisson", seed=5)
        res = sm.GLM(y, sm.add_constant(X), family=sm.families.Poisson(), freq_weights=np.round(w * 3)).fit()
        record("interop/statsmodels/GLM_Poisson", uw.Influence.from_statsmodels(res), X, y, Xt, yt)
    return out


PERSIST_FIELDS = ("format", "estimator", "l2", "theta", "n_features", "n_classes", "n_iter", "grad_norm")
LOADED_FIELDS = ("theta_", "coef_", "intercept_", "n_iter_", "grad_norm_", "converged_", "n_features_in_")


def area_persist(tmp: Path) -> dict:
    """save_model / load_model: the file's fields, the loaded model, and influence computed
    from the loaded model; a file as df097f3 wrote it must still load (see test_golden)."""
    out = {}
    for fam in FAMILIES:
        X, y, w, Xt, yt = problem(fam)
        for label, l2, weighted in ((f"l2={L2},w", L2, True), ("l2=0", 0.0, False)):
            sw = w if weighted else None
            model = estimator(fam, l2).fit(X, y, sample_weight=sw)
            path = tmp / f"{fam}_{l2}.npz"
            uw.save_model(model, path)
            pre = f"persist/{fam}/{label}"
            with np.load(path, allow_pickle=False) as z:  # the fields df097f3 wrote (later additions are not pinned)
                for key in PERSIST_FIELDS:
                    out[f"{pre}/file/{key}"] = _get(z, key)
            loaded = uw.load_model(path)
            out[f"{pre}/loaded/type"] = type(loaded).__name__
            out[f"{pre}/loaded/l2"] = float(loaded.l2)
            for name in LOADED_FIELDS:  # load_model restores no objective_
                out[f"{pre}/loaded/{name}"] = getattr(loaded, name)
            if fam in ("logistic", "multinomial"):
                out[f"{pre}/loaded/classes_"] = loaded.classes_
            inf = uw.Influence(loaded, X, y, sw)
            out[f"{pre}/loaded/on_loss"] = inf.on_loss(Xt, yt)
            out[f"{pre}/loaded/predict"] = loaded.predict(Xt)
    return out


def load_saved_fields(fields: dict, path: Path):
    """Write a model file with exactly the stored fields (as df097f3's save_model wrote them)
    and load it with today's load_model: saved models must stay loadable."""
    with open(path, "wb") as f:
        np.savez(f, **fields)
    return uw.load_model(path)


# ------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------

def run_cli(tmp: Path, *args) -> subprocess.CompletedProcess:
    """``python -m upweight.cli ARGS`` in ``tmp`` (as tests/test_cli.py runs it)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "upweight.cli", *map(str, args)], capture_output=True, text=True, cwd=tmp, env=env)


#: record.py sets this: a failing CLI command is then an error, not a recorded output
RECORDING = False


def _stdout(res, tmp: Path) -> Text:
    """The command's stdout; a failed command gives its exit status and stderr instead (so the
    golden comparison shows it, and the area's other outputs are still compared)."""
    if res.returncode != 0:
        if RECORDING:
            raise RuntimeError(f"CLI failed ({res.returncode}): {res.args}\n{res.stderr}")
        return Text(f"<exit status {res.returncode}: {' '.join(res.args[3:])}>\n{res.stderr}".replace(str(tmp), "<TMP>"))
    return Text(res.stdout.replace(str(tmp), "<TMP>"))


TOPK_FILE = ("helpful_idx", "helpful", "harmful_idx", "harmful")
SELF_FILE = ("self_influence",)
FULL_FILE = ("scores",)


def _get(container, name: str):
    """An array of an output file, or "<missing>" (a field df097f3 wrote is gone)."""
    return container[name] if name in container else "<missing>"


def _file_arrays(out: dict, prefix: str, path: Path, names=()) -> None:
    """The arrays an output file holds: for .npz and .parquet the ``names`` df097f3 wrote
    (fields added later are not pinned; a missing one is "<missing>"), for .csv the header, the
    numbers and the sha256 of the text."""
    if not path.exists():
        for name in names if path.suffix != ".csv" else ("header", "table", "sha256"):
            out[f"{prefix}/{name}"] = "<missing file>"
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            for name in names:
                out[f"{prefix}/{name}"] = _get(z, name)
    elif path.suffix == ".csv":
        text = path.read_text()
        out[f"{prefix}/header"] = text.splitlines()[0]
        out[f"{prefix}/table"] = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
        out[f"{prefix}/sha256"] = hashlib.sha256(text.encode()).hexdigest()
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for name in names:
            out[f"{prefix}/{name}"] = table.column(name).to_numpy() if name in table.column_names else "<missing>"


def _cli_inputs(tmp: Path):
    rng = np.random.default_rng(21)
    n, d = 1100, 5  # more than two 512-row segments
    X = rng.standard_normal((n, d))
    beta = np.linspace(-1.0, 1.0, d)
    y = (rng.random(n) < _sigmoid(X @ beta)).astype(np.float64)
    ylin = X @ beta + 0.4 * rng.standard_normal(n)
    ycount = rng.poisson(np.exp(0.3 * X @ beta)).astype(np.float64)
    y3 = np.minimum((rng.random(n) * 1.2 + _sigmoid(X[:, 0])).astype(int), 2).astype(np.float64)
    w = rng.uniform(0.5, 1.5, n)
    Xq = X[:6] + 0.1
    np.save(tmp / "X.npy", X)
    np.save(tmp / "y.npy", y)
    np.save(tmp / "ylin.npy", ylin)
    np.save(tmp / "ycount.npy", ycount)
    np.save(tmp / "y3.npy", y3)
    np.save(tmp / "w.npy", w)
    np.savez(tmp / "query.npz", X=Xq, y=y[:6])
    np.savez(tmp / "query3.npz", X=Xq, y=y3[:6])
    np.savez(tmp / "querylin.npz", X=Xq, y=ylin[:6])
    header = ",".join([f"f{j}" for j in range(d)] + ["y"])
    np.savetxt(tmp / "train_lin.csv", np.column_stack([X[:300], ylin[:300]]), delimiter=",", header=header, comments="", fmt="%.17g")
    import scipy.sparse as sp

    Xs = X[:400].copy()
    Xs[np.random.default_rng(22).random(Xs.shape) < 0.5] = 0.0
    sp.save_npz(tmp / "Xs.npz", sp.csr_matrix(Xs))
    sp.save_npz(tmp / "Xqs.npz", sp.csr_matrix(Xs[:4]))
    np.save(tmp / "ycount400.npy", ycount[:400])
    np.save(tmp / "yq4.npy", ycount[:4])


LOGISTIC = ("--family", "logistic", "--l2", "1e-3")

#: (name, arguments, output file, the arrays it holds) of every pinned command, run in order
CLI_COMMANDS = (
    ("seed", ("seed",), None, ()),
    ("fit_logistic", ("fit", "X.npy", "--y", "y.npy", *LOGISTIC, "-o", "m.npz"), "m.npz", PERSIST_FIELDS),
    ("score_topk_model", ("score", "X.npy", "--y", "y.npy", "--model", "m.npz", "--query", "query.npz", "-k", "4", "-o", "top.npz"),
     "top.npz", TOPK_FILE),
    ("score_topk_segments", ("score", "X.npy", "--y", "y.npy", "--model", "m.npz", "--query", "query.npz", "-k", "4",
                             "--segment-rows", "512", "-o", "top_seg.csv"), "top_seg.csv", ()),
    ("score_self_weights", ("score", "X.npy", "--y", "y.npy", "--weights", "w.npy", *LOGISTIC, "--what", "self", "-o", "self.csv"),
     "self.csv", ()),
    ("score_self_segments_cg", ("score", "X.npy", "--y", "y.npy", *LOGISTIC, "--what", "self", "--solver", "cg",
                                "--segment-rows", "512", "-o", "self_seg.npz"), "self_seg.npz", SELF_FILE),
    ("score_self_resume_no_checkpoint", ("score", "X.npy", "--y", "y.npy", *LOGISTIC, "--what", "self", "--resume",
                                         "--segment-rows", "1024", "-o", "self_res.npz"), "self_res.npz", SELF_FILE),
    ("score_full_cg", ("score", "X.npy", "--y", "y.npy", *LOGISTIC, "--query", "query.npz", "--what", "full", "--solver", "cg",
                       "-o", "full.npz"), "full.npz", FULL_FILE),
    ("score_full_csv_linear_damping", ("score", "train_lin.csv", "--family", "linear", "--query", "querylin.npz", "--what", "full",
                                       "--damping", "0.01", "-o", "full_lin.csv"), "full_lin.csv", ()),
    ("score_topk_sparse_poisson", ("score", "Xs.npz", "--y", "ycount400.npy", "--family", "poisson", "--l2", "1e-2",
                                   "--query", "Xqs.npz", "--query-y", "yq4.npy", "-k", "3", "-o", "top_sparse.npz"),
     "top_sparse.npz", TOPK_FILE),
    ("fit_multinomial", ("fit", "X.npy", "--y", "y3.npy", "--family", "logistic", "--l2", "1e-2", "-o", "m3.npz"), "m3.npz",
     PERSIST_FIELDS),
    ("score_topk_multinomial", ("score", "X.npy", "--y", "y3.npy", "--model", "m3.npz", "--query", "query3.npz", "-k", "2",
                                "-o", "top3.npz"), "top3.npz", TOPK_FILE),
    ("fit_poisson_weights", ("fit", "X.npy", "--y", "ycount.npy", "--weights", "w.npy", "--family", "poisson", "-o", "mp.npz"),
     "mp.npz", PERSIST_FIELDS),
    ("demo", ("demo", "--plots", ""), None, ()),  # about 1 s; --plots '' skips the figures
)


def area_cli(tmp: Path) -> dict:
    """``upweight seed``, ``demo``, ``fit`` and ``score`` (top-k, self, full; npz and csv
    outputs; model file or --family; weights; cg; damping; sparse .npz; CSV input; multinomial;
    512-row segments; --resume without a checkpoint): stdout text and each output file's arrays."""
    _cli_inputs(tmp)
    out = {}
    for name, args, output, arrays in CLI_COMMANDS:
        quiet = ("-q",) if args[0] in ("fit", "score") else ()
        out[f"cli/{name}/stdout"] = _stdout(run_cli(tmp, *args, *quiet), tmp)
        if output:
            _file_arrays(out, f"cli/{name}/file", tmp / output, arrays)
    return out


def area_cli_parquet(tmp: Path) -> dict:
    """``upweight score`` writing Parquet (needs pyarrow)."""
    _cli_inputs(tmp)
    out = {}
    res = run_cli(tmp, "score", "X.npy", "--y", "ylin.npy", "--family", "linear", "--l2", "1e-3", "--what", "self", "-o", "self.parquet",
                  "-q")
    out["cli_parquet/score_self_linear/stdout"] = _stdout(res, tmp)
    _file_arrays(out, "cli_parquet/score_self_linear/file", tmp / "self.parquet", ("index", "self_influence"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    X, ylin = np.load(tmp / "X.npy")[:300], np.load(tmp / "ylin.npy")[:300]
    pq.write_table(pa.table({**{f"f{j}": X[:, j] for j in range(X.shape[1])}, "target": ylin}), tmp / "train.parquet")
    np.savez(tmp / "query_target.npz", X=X[:6] + 0.1, target=ylin[:6])  # --target-column names the query's too
    res = run_cli(tmp, "score", "train.parquet", "--target-column", "target", "--family", "linear", "--query", "query_target.npz",
                  "--what", "top-k", "-k", "3", "-o", "top.npz", "-q")
    out["cli_parquet/score_topk_parquet_input/stdout"] = _stdout(res, tmp)
    _file_arrays(out, "cli_parquet/score_topk_parquet_input/file", tmp / "top.npz", TOPK_FILE)
    return out


def area_reference(tmp: Path) -> dict:
    """uw.reference, the plain-NumPy implementation: fit, Hessian, influence, scores."""
    ref = uw.reference
    out = {}
    for fam in FAMILIES:
        X, y, w, Xt, yt = problem(fam, n=30, seed=6)
        family = "squared" if fam == "linear" else fam
        theta = ref.fit(X, y, family, w=w, l2=L2)
        theta = theta[0] if isinstance(theta, tuple) else theta
        pre = f"reference/{fam}/l2={L2},w"
        out[f"{pre}/fit"] = theta
        out[f"{pre}/objective"] = ref.objective(theta, X, y, family, w=w, l2=L2)
        out[f"{pre}/gradient"] = ref.gradient(theta, X, y, family, w=w, l2=L2)
        out[f"{pre}/hessian"] = ref.hessian(theta, X, y, family, w=w, l2=L2)
        out[f"{pre}/losses"] = ref.losses(theta, Xt, yt, family)
        out[f"{pre}/per_example_grads"] = ref.per_example_grads(theta, Xt, yt, family)
        out[f"{pre}/influence_params"] = ref.influence_params(theta, X, y, family, w=w, l2=L2)
        out[f"{pre}/influence_on_loss"] = ref.influence_on_loss(theta, X, y, family, Xt, yt, w=w, l2=L2)
        out[f"{pre}/self_influence"] = ref.self_influence(theta, X, y, family, w=w, l2=L2)
        out[f"{pre}/influence_new_point"] = ref.influence_new_point(theta, X, y, family, Xt[0], yt[0], w=w, l2=L2)
    return out


#: area name -> function(tmp) -> {key: value}; each area is one test case in test_golden.py
AREAS = {
    "inputs": area_inputs,
    "fit": area_fit,
    "influence": area_influence,
    "storage": area_storage,
    "auto": area_auto,
    "datasets": area_datasets,
    "validation": area_validation,
    "diagnostics": area_diagnostics,
    "gradients": area_gradients,
    "interop": area_interop,
    "persist": area_persist,
    "cli": area_cli,
    "cli_parquet": area_cli_parquet,
    "reference": area_reference,
}


def cases(area: str, tmp: Path) -> dict:
    """The outputs of one area, keyed; every key starts with ``area + "/"``."""
    out = AREAS[area](Path(tmp))
    bad = [k for k in out if not k.startswith(area + "/")]
    if bad:
        raise AssertionError(f"{area}: keys outside the area: {bad[:3]}")
    for k, v in out.items():
        if isinstance(v, str) and str(tmp) in v:
            raise AssertionError(f"{k}: holds the temporary path {tmp}")
    return out
