"""The per-chunk kernels of ``upweight._core`` that a distributed backend maps over chunks of a
training set, and their combine rules: partial sums added in chunk order and finished once give
the whole set's objective, gradient, Hessian and Hessian-vector products; a score block is the
chunk's columns of the score matrix; per-chunk top-k merged with ``merge_top_k`` is the top-k
of the whole set."""

import numpy as np
import pytest

import upweight as uw
from upweight import _core

FAMILIES = ("squared", "logistic", "poisson", "multinomial", "network")
BOUNDS = [0, 300, 512, 1111, 1500]  # chunk boundaries, not aligned to the core's row blocks


def problem(family):
    rng = np.random.default_rng(7)
    n, d = BOUNDS[-1], 4
    X = rng.standard_normal((n, d))
    eta = X @ np.array([0.5, -0.3, 0.2, 0.1])
    y = {
        "squared": eta + 0.3 * rng.standard_normal(n),
        "logistic": (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float),
        "poisson": rng.poisson(np.exp(eta)).astype(float),
        "multinomial": rng.integers(0, 3, n).astype(float),
        "network": rng.integers(0, 3, n).astype(float),
    }[family]
    w = rng.uniform(0.5, 1.5, n)
    if family == "network":  # a tanh MLP 4-5-3 (its core's curvature: Gauss-Newton)
        return uw.MLPClassifier(hidden=(5,), l2=0.05, max_iter=300).fit(X, y, w), X, y, w
    model = (uw.LinearRegression if family == "squared" else uw.PoissonRegression if family == "poisson" else uw.LogisticRegression)
    return model(l2=0.05).fit(X, y, w), X, y, w


def chunks(*arrays):
    for a, b in zip(BOUNDS[:-1], BOUNDS[1:], strict=True):
        yield a, [None if x is None else x[a:b] for x in arrays]


@pytest.mark.parametrize("family", FAMILIES)
def test_partial_sums_combine_to_the_objective_and_its_derivatives(family):
    model, X, y, w = problem(family)
    core, theta, l2 = model.core_model(), model.get_theta(), model.l2
    value, grad = core.objective(theta, X, y, w, l2)
    H = core.hessian(theta, X, y, w, l2)
    V = np.random.default_rng(1).standard_normal((theta.size, 3))
    # one chunk: the same bits
    one = _core.partial_sums(core, theta, X, y, w, True)
    v1, g1, h1 = _core.finish_sums(core, theta, l2, *one)
    assert v1 == value and np.array_equal(g1, grad) and np.array_equal(h1, H)
    # several chunks, added in order
    total, hv = None, None
    for _, (Xc, yc, wc) in chunks(X, y, w):
        part = _core.partial_sums(core, theta, Xc, yc, wc, True)
        total = part if total is None else tuple(a + b for a, b in zip(total, part, strict=True))
        p = _core.partial_hvp(core, theta, Xc, yc, wc, V)
        hv = p if hv is None else hv + p
    v2, g2, h2 = _core.finish_sums(core, theta, l2, *total)
    assert v2 == pytest.approx(value, rel=1e-14)
    np.testing.assert_allclose(g2, grad, rtol=0, atol=1e-14 * np.abs(H).max())
    np.testing.assert_allclose(h2, H, rtol=0, atol=1e-14 * np.abs(H).max())
    np.testing.assert_allclose(_core.finish_hvp_sums(core, l2, total[0], hv, V), core.hvp(theta, X, y, w, l2, V), rtol=1e-13)
    # without the Hessian
    value_only = _core.finish_sums(core, theta, l2, *_core.partial_sums(core, theta, X, y, w))
    assert value_only[0] == value and value_only[2] is None


@pytest.mark.parametrize("family", FAMILIES)
def test_score_blocks_and_top_k_blocks_combine_to_the_whole(family):
    model, X, y, w = problem(family)
    core, theta = model.core_model(), model.get_theta()
    inf = uw.Influence(model, X, y, w, solver="direct")
    G = inf.loss_grads(X[:20], y[:20])
    vc, _ = _core.Influence(core, theta, X, y, w, model.l2, damping=inf.damping).solve_queries(G)
    S = inf.on(G)
    W = inf.total_weight
    merged = None
    for a, (Xc, yc) in chunks(X, y):
        block = _core.score_block(core, theta, Xc, yc, vc, W)
        np.testing.assert_array_equal(block, S[:, a : a + Xc.shape[0]])
        top = _core.top_k_block(core, theta, Xc, yc, vc, W, 5, a)
        top = tuple(t.astype(np.int64) if t.dtype.kind == "u" else t for t in top)
        merged = top if merged is None else _core.merge_top_k(merged, top, 5)
        merged = tuple(t.astype(np.int64) if t.dtype.kind == "u" else t for t in merged)
    whole = inf.top_k(X[:20], y[:20], k=5)
    np.testing.assert_array_equal(merged[0], whole.helpful_idx)
    np.testing.assert_array_equal(merged[1], whole.helpful)
    np.testing.assert_array_equal(merged[2], whole.harmful_idx)
    np.testing.assert_array_equal(merged[3], whole.harmful)


def test_kernels_refuse_rows_that_do_not_fit_the_model():
    model, X, y, w = problem("logistic")
    core, theta = model.core_model(), model.get_theta()
    vc = np.zeros((theta.size + 1, 2))
    wide = np.hstack([X, X[:, :1]])
    for call in (
        lambda: _core.partial_sums(core, theta, wide, y, w),
        lambda: _core.partial_hvp(core, theta, wide, y, w, np.zeros((theta.size, 1))),
        lambda: _core.score_block(core, theta, wide, y, vc, 1.0),
        lambda: _core.top_k_block(core, theta, wide, y, vc, 1.0, 3, 0),
    ):
        with pytest.raises(uw.InputError, match="^X: has 5 columns but the model has 4 features"):
            call()
    with pytest.raises(uw.InputError, match="^y: "):
        _core.score_block(core, theta, X, y + 2, vc, 1.0)
    with pytest.raises(uw.InputError, match="^vc: has 3 rows, expected 6"):
        _core.score_block(core, theta, X, y, vc[:3], 1.0)


@pytest.mark.parametrize("family", ("squared", "logistic", "multinomial"))
def test_a_factor_of_the_summed_hessian_gives_self_influence_chunk_by_chunk(family):
    """The direct solver a distributed run shares (``_core.Factor``, from the summed Hessian and
    the model's null space) solves like Influence's, survives pickling (what ships it to the
    workers), and per-chunk ``self_influence_block`` is the whole set's self-influence."""
    import pickle

    model, X, y, w = problem(family)
    core, theta, l2 = model.core_model(), model.get_theta(), model.l2
    l2 = 0.0 if family == "multinomial" else l2  # (null space: every class's shift is flat)
    model.set_params(l2=l2)
    model.fit(X, y, w)
    theta = model.get_theta()
    inf = uw.Influence(model, X, y, w, solver="direct")
    weight, loss, grad, hess = _core.partial_sums(core, theta, X, y, w, True)
    _, _, H = _core.finish_sums(core, theta, l2, weight, loss, grad, hess)
    factor = _core.Factor(H, 0.0, _core.null_space(core, l2))
    assert (_core.null_space(core, l2) is not None) == (family == "multinomial")
    G = inf.loss_grads(X[:7], y[:7]).T.copy()
    np.testing.assert_allclose(factor.solve(G), inf.inverse_hvp(G), rtol=1e-10, atol=1e-12)
    again = pickle.loads(pickle.dumps(factor))
    np.testing.assert_array_equal(again.solve(G), factor.solve(G))
    penalty = _core.finish_sums(core, theta, l2, 1.0, 0.0, np.zeros(theta.size))[1]
    parts = [_core.self_influence_block(core, theta, Xc, yc, factor, penalty, inf.total_weight) for _, (Xc, yc) in chunks(X, y)]
    np.testing.assert_allclose(np.concatenate(parts), inf.self_influence(), rtol=1e-10)
    with pytest.raises(uw.InputError, match="^hessian: is not symmetric"):
        _core.Factor(H + np.triu(np.ones_like(H), 1))
    with pytest.raises(uw.InputError, match="^b: has 2 rows"):
        factor.solve(np.ones((2, 1)))
    with pytest.raises(uw.SingularHessianError):
        _core.Factor(np.zeros((3, 3)))
