"""Query batching (issue 15; Grosse et al. 2023; DESIGN-networks.md section 4): each solved
query's layer blocks V_tl (out x in+1) cut to their best rank r (thin SVD), the training rows
scored against the factors without forming the queries.

Checked against NumPy: the scores are those of the truncated queries (the penalty offset too),
the reported errors are ||V - V_r||_F / ||V||_F, r >= min(out, in + 1) in every layer gives the
exact scores, the streamed top-k and any segment of it agree with the score matrix, any storage
gives the in-memory answer; bad arguments are refused by name.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import upweight as uw
from upweight.errors import InputError


@pytest.fixture(scope="module")
def digits_net():
    X, y = load_digits(return_X_y=True)
    X, y = X[:500] / 16.0, y[:500].astype(np.float64)
    net = uw.MLPClassifier(hidden=(9, 6), l2=1e-3, random_state=2).fit(X, y)
    inf = uw.Influence(net, X, y)
    return net, inf, X, y


def truncated(V: np.ndarray, sizes: list[int], r: int) -> tuple[np.ndarray, np.ndarray]:
    """V (p x q) with every layer block of every column cut to rank r, and each column's
    relative Frobenius error."""
    out, start = V.copy(), 0
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        size = b * (a + 1)
        for t in range(V.shape[1]):
            u, s, wt = np.linalg.svd(V[start:start + size, t].reshape(b, a + 1), full_matrices=False)
            out[start:start + size, t] = ((u[:, :r] * s[:r]) @ wt[:r]).ravel()
        start += size
    return out, np.linalg.norm(V - out, axis=0) / np.linalg.norm(V, axis=0)


def scores_of(inf, V: np.ndarray) -> np.ndarray:
    """-(g_m + 2 l2 M theta) . V_t / W for every training row (NumPy, from the core's gradients)."""
    net = inf.model
    g = inf._core_model.per_example_grads(inf._theta, inf.X, inf.y)
    pen, start = np.zeros(inf.n_params), 0
    for a, b in zip(net.sizes()[:-1], net.sizes()[1:], strict=True):
        block = inf._theta[start:start + b * (a + 1)].reshape(b, a + 1).copy()
        block[:, -1] = 0.0
        pen[start:start + block.size] = 2 * inf.l2 * block.ravel()
        start += block.size
    return -(V.T @ (g + pen).T) / inf.total_weight


@pytest.mark.parametrize("r", [1, 3, 5])
def test_scores_are_the_truncated_queries(digits_net, r):
    net, inf, X, y = digits_net
    G = inf.loss_grads(X[40:52], y[40:52])
    V = inf.inverse_hvp(G.T)
    Vr, err = truncated(V, net.sizes(), r)
    got = inf.on(G, query_rank=r)
    want = scores_of(inf, Vr)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(inf.solve_info.query_errors, err, rtol=1e-9, atol=1e-14)
    assert (err > 1e-3).all()  # r below full rank loses something in this net


def test_full_rank_is_exact(digits_net):
    net, inf, X, y = digits_net
    G = inf.loss_grads(X[:15], y[:15])
    exact = inf.on(G)
    r = max(min(b, a + 1) for a, b in zip(net.sizes()[:-1], net.sizes()[1:], strict=True))  # 9 here
    got = inf.on(G, query_rank=r)
    np.testing.assert_allclose(got, exact, rtol=1e-10, atol=1e-13 * np.abs(exact).max())
    assert inf.solve_info.query_errors.max() < 1e-12


def test_top_k_agrees_with_the_matrix(digits_net):
    net, inf, X, y = digits_net
    sq = inf.solve_queries(inf.loss_grads(X[100:108], y[100:108]), query_rank=2)
    assert sq.query_rank == 2 and sq.query_errors.shape == (8,)
    S = sq.scores()
    top = sq.top_k(7)
    idx = np.arange(S.shape[1])
    for j in range(S.shape[0]):
        np.testing.assert_array_equal(top.helpful_idx[j], np.lexsort((idx, S[j]))[:7])
        np.testing.assert_array_equal(top.harmful_idx[j], np.lexsort((idx, -S[j]))[:7])
        np.testing.assert_allclose(top.helpful[j], S[j, top.helpful_idx[j]], rtol=1e-12)
    # a segment's top-k is the matrix's over those rows; idx= scores a subset
    part = sq.top_k(3, rows=(100, 300))
    for j in range(S.shape[0]):
        np.testing.assert_array_equal(part.helpful_idx[j], 100 + np.lexsort((idx[100:300], S[j, 100:300]))[:3])
    np.testing.assert_allclose(sq.scores(idx=[5, 9, 400]), S[:, [5, 9, 400]], rtol=1e-12)
    again = inf.top_k(X[100:108], y[100:108], k=7, query_rank=2)
    for a, b in zip(again.as_tuple(), top.as_tuple(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_any_storage_gives_the_in_memory_answer(digits_net, tmp_path):
    net, inf, X, y = digits_net
    G = inf.loss_grads(X[:6], y[:6])
    want = inf.on(G, query_rank=2)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    mm = uw.Influence(net, str(tmp_path / "X.npy"), y)
    got = mm.on(G, query_rank=2)
    np.testing.assert_allclose(got, uw.Influence(net, X.astype(np.float32).astype(np.float64), y).on(G, query_rank=2), rtol=1e-9)
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


def test_bad_arguments(digits_net):
    net, inf, X, y = digits_net
    G = inf.loss_grads(X[:3], y[:3])
    for bad in (0, -2, 1.5, "2"):
        with pytest.raises(InputError, match="^query_rank:"):
            inf.on(G, query_rank=bad)
    with pytest.raises(InputError, match="^query_rank: not with prefilter"):
        inf.top_k(X[:3], y[:3], prefilter="last-layer", query_rank=2)
    yb = (y > 4).astype(np.float64)
    glm = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, yb), X, yb)
    with pytest.raises(InputError, match="^query_rank: query batching compresses a network"):
        glm.on(glm.loss_grads(X[:3], yb[:3]), query_rank=2)
