"""scipy.sparse training data (issue 3): fitting, Hessians, HVPs and every influence query on a
CSR matrix give what the same data give dense, and a bag-of-words-sized problem runs without
ever densifying X."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sp = pytest.importorskip("scipy.sparse")

import upweight as uw  # noqa: E402
from upweight import _core  # noqa: E402
from upweight._validation import as_csr  # noqa: E402

FAMILIES = ["squared", "logistic", "poisson", "multinomial"]


def _n_features(X) -> int:
    """Columns of features as the core takes them (an array or a CSR tuple)."""
    return X[3] if isinstance(X, tuple) else X.shape[1]


def problem(family, n=600, d=40, density=0.15, k=3, seed=0):
    """Sparse nonnegative count-like features with a planted model."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed, data_rvs=lambda m: rng.integers(1, 4, m).astype(float))
    eta = X @ np.linspace(-0.6, 0.6, d) * 0.5
    if family == "squared":
        return uw.LinearRegression(l2=1e-2), X, eta + 0.3 * rng.standard_normal(n)
    if family == "logistic":
        return uw.LogisticRegression(l2=1e-2), X, (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    if family == "poisson":
        return uw.PoissonRegression(l2=1e-2), X, rng.poisson(np.exp(0.3 * eta)).astype(float)
    return uw.LogisticRegression(l2=1e-2), X, rng.integers(0, k, n)


@pytest.mark.parametrize("family", FAMILIES)
def test_sparse_fit_and_influence_equal_dense(family):
    model, X, y = problem(family)
    w = np.random.default_rng(1).uniform(0.2, 2.0, X.shape[0])
    dense = type(model)(l2=model.l2).fit(X.toarray(), y, sample_weight=w)
    sparse = type(model)(l2=model.l2).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(sparse.theta_, dense.theta_, rtol=0, atol=1e-10)
    inf_d = uw.Influence(dense, X.toarray(), y, sample_weight=w)
    inf_s = uw.Influence(dense, X, y, sample_weight=w)
    Xq, yq = X[:20], y[:20]
    S_d = inf_d.on_loss(Xq.toarray(), yq)
    tight = dict(rtol=1e-10, atol=1e-12 * np.abs(S_d).max())
    np.testing.assert_allclose(inf_s.on_loss(Xq, yq), S_d, **tight)
    np.testing.assert_allclose(inf_s.on_prediction(Xq), inf_d.on_prediction(Xq.toarray()), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(inf_s.self_influence(), inf_d.self_influence(), rtol=1e-10, atol=1e-14)
    idx = [5, 0, 77, 5]
    np.testing.assert_allclose(inf_s.params(idx), inf_d.params(idx), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(inf_s.on_loss(Xq, yq, idx=idx), S_d[:, idx], **tight)
    top_s, top_d = inf_s.top_k(Xq, yq, k=4), inf_d.top_k(Xq.toarray(), yq, k=4)
    np.testing.assert_array_equal(top_s.helpful_idx, top_d.helpful_idx)
    np.testing.assert_allclose(top_s.harmful, top_d.harmful, **tight)
    # CG runs its Hessian-vector products on the sparse rows
    cg = uw.Influence(dense, X, y, sample_weight=w, solver="cg", rtol=1e-12)
    np.testing.assert_allclose(cg.on_loss(Xq, yq), S_d, rtol=1e-7, atol=1e-9 * np.abs(S_d).max())
    # predictions take sparse input
    np.testing.assert_allclose(sparse.decision_function(X), dense.decision_function(X.toarray()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sparse.loss(X, y), dense.loss(X.toarray(), y), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("family", FAMILIES)
def test_sparse_kernels_equal_dense(family):
    model, X, y = problem(family, n=300, d=25)
    k = 3 if family == "multinomial" else 1
    theta = np.random.default_rng(2).normal(scale=0.1, size=k * (X.shape[1] + 1))
    w = np.random.default_rng(3).uniform(0, 2, X.shape[0])
    csr, dense, y = as_csr(X, "X"), X.toarray(), np.asarray(y, dtype=float)
    V = np.random.default_rng(4).standard_normal((theta.size, 3))
    for name, args in [("objective", (w, 0.1)), ("hessian", (w, 0.1)), ("hvp", (w, 0.1, V))]:
        core = _core.Model.glm(family, k, X.shape[1])
        a = getattr(core, name)(theta, csr, y, *args)
        b = getattr(core, name)(theta, dense, y, *args)
        for u, v in zip(a if name == "objective" else [a], b if name == "objective" else [b], strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(core.per_example_grads(theta, csr, y), core.per_example_grads(theta, dense, y), rtol=1e-13, atol=1e-15)


def test_any_sparse_format_and_non_canonical_input_is_accepted():
    model, X, y = problem("logistic")
    ref = uw.LogisticRegression(l2=1e-2).fit(X.toarray(), y).theta_
    coo = X.tocoo()
    # duplicated entries that sum to the original values, in scrambled order
    order = np.random.default_rng(0).permutation(coo.nnz)
    dup = sp.coo_matrix(
        (np.r_[coo.data[order] / 2, coo.data[order] / 2], (np.r_[coo.row[order], coo.row[order]], np.r_[coo.col[order], coo.col[order]])),
        shape=X.shape,
    )
    for M in [X.tocsc(), coo, dup, sp.csr_array(X), X.astype(np.float32)]:
        theta = uw.LogisticRegression(l2=1e-2).fit(M, y).theta_
        np.testing.assert_allclose(theta, ref, rtol=0, atol=1e-6 if M.dtype == np.float32 else 1e-10)


def test_bad_sparse_input_names_the_problem():
    model, X, y = problem("logistic")
    bad = X.copy()
    bad.data[3] = np.nan
    r = int(np.searchsorted(bad.indptr, 3, side="right") - 1)
    with pytest.raises(uw.InputError, match=rf"X: contains NaN or infinity \(first at row {r}, column {bad.indices[3]}\)"):
        uw.LogisticRegression(l2=1e-2).fit(bad, y)
    with pytest.raises(uw.InputTypeError, match="X: expected a real numeric sparse matrix"):
        uw.LogisticRegression(l2=1e-2).fit(X.astype(np.complex128), y)
    with pytest.raises(uw.InputError, match="X: has no rows"):
        uw.LogisticRegression(l2=1e-2).fit(sp.csr_matrix((0, 4)), y[:0])
    fitted = uw.LogisticRegression(l2=1e-2).fit(X, y)
    with pytest.raises(uw.InputError, match="X_test: has 39 columns but the model has 40 features"):
        uw.Influence(fitted, X, y).on_loss(X[:, :39], y)
    # indices the core did not get from scipy are checked too (no out-of-bounds read)
    data, indices, indptr, d = as_csr(X, "X")
    theta = fitted.theta_
    for broken, msg in [
        ((data, np.where(indices == indices.max(), d, indices).astype(np.int32), indptr, d), "out of range"),
        ((data, indices, indptr[::-1].copy(), d), "indptr"),
        ((data, indices[::-1].copy(), indptr, d), "not sorted"),
    ]:
        with pytest.raises(uw.InputError, match=msg):
            _core.Model.glm("logistic", 1, _n_features(broken)).hessian(theta, broken, y, None, 0.01)


BAG_OF_WORDS = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import scipy.sparse as sp
    limit = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import upweight as uw
    n, d, per_row = 20_000, 200_000, 30
    rng = np.random.default_rng(0)
    indptr = np.arange(0, n * per_row + 1, per_row)
    indices = np.sort(rng.choice(d, size=(n, per_row), replace=True), axis=1)
    indices = np.where(np.diff(indices, axis=1, prepend=-1) == 0, -1, indices)  # drop repeats below
    X = sp.csr_matrix((np.ones(n * per_row), indices.ravel().clip(0), indptr), shape=(n, d))
    X.data[indices.ravel() < 0] = 0.0
    X.eliminate_zeros()
    beta = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta) * 0.3))).astype(float)
    model = uw.LogisticRegression(l2=1e-3).fit(X, y)          # auto: Newton-CG, H never formed
    inf = uw.Influence(model, X, y, rtol=1e-8)                # auto: cg
    top = inf.top_k(X[:3], y[:3], k=5)
    check = inf.on_loss(X[:3], y[:3], idx=top.helpful_idx[0])
    print(json.dumps({
        "solver": inf.solver, "converged": bool(model.converged_),
        "top_consistent": bool(np.allclose(check[0], top.helpful[0], rtol=1e-10, atol=0)),
        "peak_rss_mib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
    }))
""")


@pytest.mark.slow
def test_bag_of_words_is_never_densified():
    """n = 20000, d = 200000 (p = 200001): dense X would be 30 GiB; the process is limited to
    2 GiB of address space."""
    limit_mib = 2048
    env = {k: v for k, v in os.environ.items() if k.startswith(("PYTHON", "HOME", "LD_", "PATH"))}
    env.update(MALLOC_ARENA_MAX="2", OPENBLAS_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", BAG_OF_WORDS, str(limit_mib)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["solver"] == "cg" and out["converged"] and out["top_consistent"]
    assert out["peak_rss_mib"] < limit_mib
