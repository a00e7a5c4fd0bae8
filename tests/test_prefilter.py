"""The prefiltered top-k (issue 15; DESIGN-networks.md section 6): stage 1 scores every training
row by the network's last layer alone (:class:`upweight.networks.LastLayer`, the exact damped
influence of Theta_L with the layers below frozen), stage 2 rescores each query's c k
candidates of each end exactly; c grows until recall@k on sampled queries meets the target.

Checked: the last layer's gradients and curvature are the blocks of the network's; its influence
is the NumPy formula; with c k = n the prefilter is the exhaustive answer (recall 1); for any c k
every answer is the exact best among that query's stage-1 candidates (computed here in NumPy);
the reported recall is the true one on the sampled queries, whose answers are exhaustive; c k is
the smallest candidate count meeting the target; any storage gives the in-memory answer.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import upweight as uw
from upweight.errors import InputError
from upweight.networks import LastLayer


@pytest.fixture(scope="module")
def digits_net():
    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600].astype(np.float64)
    net = uw.MLPClassifier(hidden=(12,), l2=1e-3, random_state=1).fit(X, y)
    inf = uw.Influence(net, X, y)
    return net, inf, X, y


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(x, z).size / x.size for x, z in zip(a, b, strict=True)]))


@pytest.mark.parametrize("curvature", ["gauss-newton", "hessian"])
def test_last_layer_is_the_networks_block(digits_net, curvature):
    net, inf, X, y = digits_net
    last = LastLayer(net)
    a, b = last.range
    assert (a, b) == (net.n_params - 10 * 13, net.n_params)
    np.testing.assert_array_equal(last.get_theta(), net.get_theta()[a:b])
    full = net.core_model(curvature)
    g_net = full.per_example_grads(net.get_theta(), X, y)
    g_last = last.core_model().per_example_grads(last.get_theta(), X, y)
    np.testing.assert_array_equal(g_last, g_net[:, a:b])
    # the last layer's block of G and of H coincide (h is linear in Theta_L)
    H_net = full.hessian(net.get_theta(), X, y, None, net.l2)
    H_last = last.core_model().hessian(last.get_theta(), X, y, None, net.l2)
    np.testing.assert_allclose(H_last, H_net[a:b, a:b], rtol=1e-12, atol=1e-15)


def test_a_wide_last_layer_has_its_whole_curvature():
    """Above p = 2048 the core builds the Hessian by tiles, and a multinomial head leaves the
    class blocks above its diagonal to a finishing step by symmetry: the last layer must pass
    that step on (it did not, and a 10-class head on 220 hidden units, p = 2210, was refused as
    not positive definite). H equals its Hessian-vector products with the identity, and the
    direct solve is the NumPy one."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:400] / 16.0, y[:400].astype(np.float64)
    net = uw.MLPClassifier(hidden=(220,), l2=1e-3, max_iter=5, newton_iter=0, random_state=0)
    with pytest.warns(uw.ConvergenceWarning):
        net.fit(X, y)
    last = LastLayer(net)
    core, theta, p = last.core_model(), last.get_theta(), last.n_params
    assert p == 221 * 10 > 2048
    H = core.hessian(theta, X, y, None, net.l2)
    HV = core.hvp(theta, X, y, None, net.l2, np.eye(p))
    np.testing.assert_allclose(H, HV, rtol=0, atol=1e-12 * np.abs(H).max())
    g = np.random.default_rng(0).standard_normal((p, 3)).reshape(10, 221, 3)
    g[:, -1] -= g[:, -1].mean(0)  # off the softmax's flat direction (every class's bias alike)
    g = g.reshape(p, 3)
    got = uw.Influence(last, X, y, damping=1e-4, solver="direct").inverse_hvp(g)
    np.testing.assert_allclose(got, np.linalg.solve(HV + 1e-4 * np.eye(p), g), rtol=1e-8, atol=1e-10 * np.abs(got).max())


def test_last_layer_influence_is_the_formula(digits_net):
    net, inf, X, y = digits_net
    last = LastLayer(net)
    a, b = last.range
    stage1 = uw.Influence(last, X, y, damping=inf.damping)
    Gq = inf.loss_grads(X[:7], y[:7])[:, a:b]
    H = last.core_model().hessian(last.get_theta(), X, y, None, net.l2)
    coef = last.get_theta().reshape(10, -1).copy()
    coef[:, -1] = 0.0  # the bias is not penalised
    g = last.core_model().per_example_grads(last.get_theta(), X, y) + 2 * net.l2 * coef.ravel()
    expected = -np.linalg.solve(H + inf.damping * np.eye(b - a), Gq.T).T @ g.T / X.shape[0]
    np.testing.assert_allclose(stage1.on(Gq), expected, rtol=1e-9, atol=1e-14 * np.abs(expected).max())


def test_last_layer_takes_the_default_damping_from_its_own_curvature(digits_net):
    """damping "auto" (0.1 tr / p) needs the curvature's diagonal: the last layer gives its own,
    the diagonal of the network's Theta_L block (it refused "auto" before)."""
    net, inf, X, y = digits_net
    last = LastLayer(net)
    H_last = last.core_model().hessian(last.get_theta(), X, y, None, net.l2)
    assert uw.Influence(last, X, y).damping == pytest.approx(0.1 * np.mean(np.diag(H_last)), rel=1e-12)


def test_all_rows_as_candidates_is_exhaustive(digits_net):
    net, inf, X, y = digits_net
    exact = inf.top_k(X[:9], y[:9], k=6)
    pre = inf.top_k(X[:9], y[:9], k=6, prefilter="last-layer", candidates=X.shape[0])
    assert pre.recall == 1.0 and pre.candidates == X.shape[0]
    for got, want in zip(pre.as_tuple(), exact.as_tuple(), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("ck", [6, 25, 100])
def test_answers_are_the_exact_best_among_the_candidates(digits_net, ck):
    net, inf, X, y = digits_net
    k, Xq, yq = 6, X[20:32], y[20:32]
    pre = inf.top_k(Xq, yq, k=k, prefilter="last-layer", candidates=ck, recall_queries=0)
    assert pre.recall is None and pre.candidates == ck
    # stage 1 by hand: the last layer's scores, its top ck of each end
    last = LastLayer(net)
    a, b = last.range
    S1 = uw.Influence(last, X, y, damping=inf.damping).on(inf.loss_grads(Xq, yq)[:, a:b])
    S = inf.on_loss(Xq, yq)  # the exact scores of every row
    for j in range(len(Xq)):
        cand = np.union1d(np.lexsort((np.arange(len(X)), S1[j]))[:ck], np.lexsort((np.arange(len(X)), -S1[j]))[:ck])
        helpful = cand[np.lexsort((cand, S[j, cand]))[:k]]
        harmful = cand[np.lexsort((cand, -S[j, cand]))[:k]]
        np.testing.assert_array_equal(pre.helpful_idx[j], helpful)
        np.testing.assert_array_equal(pre.harmful_idx[j], harmful)
        np.testing.assert_allclose(pre.helpful[j], S[j, helpful], rtol=1e-12)
        np.testing.assert_allclose(pre.harmful[j], S[j, harmful], rtol=1e-12)


def test_recall_is_measured_and_met(digits_net):
    net, inf, X, y = digits_net
    k, Xq, yq = 5, X[100:130], y[100:130]
    exact = inf.top_k(Xq, yq, k=k)
    pre = inf.top_k(Xq, yq, k=k, prefilter="last-layer", recall=0.9, recall_queries=8)
    sampled = np.sort(np.random.default_rng(0).choice(len(Xq), size=8, replace=False))
    for got, want in zip(pre.as_tuple(), exact.as_tuple(), strict=True):  # the sampled queries: exhaustive
        np.testing.assert_array_equal(got[sampled], want[sampled])
    # the reported recall is that of the stage-1 candidates on the sampled queries, and it meets the target
    last = LastLayer(net)
    a, b = last.range
    first = uw.Influence(last, X, y, damping=inf.damping).top_k_on(inf.loss_grads(Xq, yq)[:, a:b], pre.candidates)

    def recall_at(ck: int) -> float:  # a query's candidates: both ends of stage 1
        both = np.hstack([first.helpful_idx[sampled, :ck], first.harmful_idx[sampled, :ck]])
        return min(overlap(exact.helpful_idx[sampled], both), overlap(exact.harmful_idx[sampled], both))

    assert pre.recall == pytest.approx(recall_at(pre.candidates), abs=1e-12)
    assert pre.recall >= 0.9
    if pre.candidates > k:  # and the next smaller count tried (half) falls short
        assert recall_at(pre.candidates // 2) < 0.9
    # the answers outside the sample are exact where found: every reported score is the true one
    S = inf.on_loss(Xq, yq)
    rows = np.arange(len(Xq))[:, None]
    np.testing.assert_allclose(pre.helpful, S[rows, pre.helpful_idx], rtol=1e-12)
    np.testing.assert_allclose(pre.harmful, S[rows, pre.harmful_idx], rtol=1e-12)
    # a higher target never gives fewer candidates, and the answers are deterministic
    again = inf.top_k(Xq, yq, k=k, prefilter="last-layer", recall=0.9, recall_queries=8)
    for got, want in zip(again.as_tuple(), pre.as_tuple(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert inf.top_k(Xq, yq, k=k, prefilter="last-layer", recall=1.0, recall_queries=8).candidates >= pre.candidates


def test_any_storage_gives_the_in_memory_answer(digits_net, tmp_path):
    net, inf, X, y = digits_net
    want = inf.top_k(X[:5], y[:5], k=4, prefilter="last-layer", candidates=40)
    path = tmp_path / "X.npy"
    np.save(path, X)
    got = uw.Influence(net, str(path), y).top_k(X[:5], y[:5], k=4, prefilter="last-layer", candidates=40)
    for a, b in zip(got.as_tuple(), want.as_tuple(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    assert got.recall == want.recall


def test_the_model_edited_later_does_not_leak_in(digits_net):
    net, inf, X, y = digits_net
    fresh = uw.Influence(net, X, y)
    want = fresh.top_k(X[:4], y[:4], k=3, prefilter="last-layer", candidates=30)
    saved = net.get_theta()
    try:
        net.set_theta(saved * 1.5)  # the influence keeps the parameters it was built at
        got = fresh.top_k(X[:4], y[:4], k=3, prefilter="last-layer", candidates=30)
    finally:
        net.set_theta(saved)
    for a, b in zip(got.as_tuple(), want.as_tuple(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments(digits_net):
    net, inf, X, y = digits_net
    for kwargs, arg in [({"prefilter": "random"}, "prefilter"), ({"prefilter": "last-layer", "recall": 0.0}, "recall"),
                        ({"prefilter": "last-layer", "recall": 1.5}, "recall"), ({"prefilter": "last-layer", "recall": "x"}, "recall"),
                        ({"prefilter": "last-layer", "recall_queries": -1}, "recall_queries"),
                        ({"prefilter": "last-layer", "recall_queries": 0}, "recall_queries"),
                        ({"prefilter": "last-layer", "candidates": 0}, "candidates")]:
        with pytest.raises(InputError, match=f"^{arg}:"):
            inf.top_k(X[:3], y[:3], k=4, **kwargs)
    glm = uw.LogisticRegression(l2=1e-2).fit(X, (y > 4).astype(float))
    with pytest.raises(InputError, match="^prefilter: needs a network"):
        uw.Influence(glm, X, (y > 4).astype(float)).top_k(X[:3], (y[:3] > 4).astype(float), prefilter="last-layer")
    flat = uw.MLPClassifier(hidden=(), l2=1e-3).fit(X, y)
    with pytest.raises(InputError, match="^prefilter: needs a network"):
        uw.Influence(flat, X, y).top_k(X[:3], y[:3], prefilter="last-layer")
    with pytest.raises(InputError, match="^net: has no hidden layer"):
        LastLayer(flat)
    with pytest.raises(InputError, match="^net:"):
        LastLayer(glm)
