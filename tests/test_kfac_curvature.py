"""curvature="kfac" and "ekfac" (issue 15; DESIGN-networks.md section 4): influence solved with
the inverse of the K-FAC approximation of the damped Gauss-Newton matrix, kron(S, A) per layer
(exact expectation over the outputs, float64 eigendecompositions, the bias-masked penalty exact by
Woodbury), cross-layer blocks dropped; EK-FAC keeps K-FAC's eigenbases and takes the exact
layer blocks' diagonal in them as eigenvalues.

Checked against the spec's exact identities: with no hidden layer and a squared head, K-FAC is G
itself (EK-FAC too, with l2 = 0 or centred inputs); for one training example (any depth), K-FAC
is G's layer blocks (EK-FAC too, with l2 = 0); EK-FAC's eigenvalues are the diagonal of G's
layer blocks in its basis, and it is at least as close to them as K-FAC in the Frobenius norm;
the residuals they report are the true ones against the exact damped G.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import upweight as uw
from upweight.errors import InputError


def gn_matrix(inf) -> np.ndarray:
    """G + 2 l2 M (p x p) of the influence's network at its parameters, from the core."""
    return inf._core_model.hessian(inf._theta, inf.X, inf.y, inf.sample_weight, inf.l2)


def layer_slices(sizes: list[int]) -> list[slice]:
    out, start = [], 0
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        out.append(slice(start, start + b * (a + 1)))
        start += b * (a + 1)
    return out


@pytest.fixture(scope="module")
def regression():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((200, 5)) + 2.0  # not centred: K-FAC is exact here all the same
    Y = X @ rng.standard_normal((5, 2)) + 0.1 * rng.standard_normal((200, 2))
    return X, Y


@pytest.mark.parametrize("curvature,l2,centred",
                         [("kfac", 0.0, False), ("kfac", 0.05, False), ("ekfac", 0.0, False), ("ekfac", 0.05, True)])
def test_no_hidden_layer_squared_head_is_exact(regression, curvature, l2, centred):
    """kron(S, A) with S = 2 I (exact over the outputs) and A the inputs' second moments is G.
    EK-FAC's penalty term is its diagonal in the eigenbasis, exact when that basis diagonalises it:
    with centred inputs the bias column is an eigenvector of A."""
    X, Y = regression
    if centred:
        X = X - X.mean(0)
    net = uw.MLPRegressor(hidden=(), l2=l2, random_state=0).fit(X, Y)
    exact = uw.Influence(net, X, Y, damping=1e-3, solver="direct")
    kfac = uw.Influence(net, X, Y, damping=1e-3, curvature=curvature)
    want = exact.on_loss(X[:6], Y[:6])
    np.testing.assert_allclose(kfac.on_loss(X[:6], Y[:6]), want, rtol=0, atol=1e-10 * np.abs(want).max())
    assert kfac.solve_info.method == curvature and kfac.solve_info.max_residual < 1e-10


@pytest.mark.parametrize("curvature,l2", [("kfac", 0.02), ("ekfac", 0.0)])
def test_one_example_is_the_layer_blocks(curvature, l2):
    """For one training example K-FAC is G's layer blocks exactly (any depth): the solve equals
    the solve with G's cross-layer blocks zeroed (penalty and damping included). EK-FAC too when
    there is no penalty (A = abar abar^T has a degenerate eigenbasis, which need not diagonalise
    the bias mask)."""
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((1, 4)), rng.standard_normal((1, 3))
    net = uw.MLPRegressor(hidden=(5, 3), l2=max(l2, 1e-3), random_state=0, activation="tanh").fit(X, Y)
    net.l2 = l2
    damping = 0.3
    kfac = uw.Influence(net, X, Y, damping=damping, curvature=curvature)
    G = gn_matrix(kfac)
    blocks = np.zeros_like(G)
    for sl in layer_slices([4, 5, 3, 3]):
        blocks[sl, sl] = G[sl, sl]
    g = rng.standard_normal((kfac.n_params, 4))
    want = np.linalg.solve(blocks + damping * np.eye(kfac.n_params), g)
    np.testing.assert_allclose(kfac.inverse_hvp(g), want, rtol=0, atol=1e-10 * np.abs(want).max())


def test_ekfac_eigenvalues_are_the_layer_blocks_diagonal():
    """EK-FAC's operator (rebuilt from its inverse) has as eigenvalues the Rayleigh quotients of
    G's layer blocks (plus damping) on its eigenvectors: the diagonal identity. And it is no
    farther from those blocks than K-FAC (Frobenius norm)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 4))
    Y = np.tanh(X @ rng.standard_normal((4, 2))) + 0.1 * rng.standard_normal((60, 2))
    net = uw.MLPRegressor(hidden=(3,), l2=0.01, random_state=0).fit(X, Y)
    damping = 0.05
    ops = {}
    for curvature in ("kfac", "ekfac"):
        inf = uw.Influence(net, X, Y, damping=damping, curvature=curvature)
        inv = inf.inverse_hvp(np.eye(inf.n_params))
        ops[curvature] = np.linalg.inv((inv + inv.T) / 2)
    G = gn_matrix(inf) + damping * np.eye(inf.n_params)
    blocks = np.zeros_like(G)
    for sl in layer_slices([4, 3, 2]):
        blocks[sl, sl] = G[sl, sl]
    mu, V = np.linalg.eigh(ops["ekfac"])
    np.testing.assert_allclose(np.einsum("ij,ik,kj->j", V, blocks, V), mu, rtol=1e-8)
    dist = {c: np.linalg.norm(op - blocks) for c, op in ops.items()}
    assert dist["ekfac"] <= dist["kfac"] and dist["ekfac"] > 0, dist


@pytest.mark.parametrize("curvature", ["kfac", "ekfac"])
def test_residuals_are_against_the_exact_curvature(curvature):
    X, y = load_digits(return_X_y=True)
    X, y = X[:400] / 16.0, y[:400]
    net = uw.MLPClassifier(hidden=(8,), l2=1e-3, random_state=0).fit(X, y)
    kfac = uw.Influence(net, X, y, curvature=curvature)
    exact = uw.Influence(net, X, y)
    assert kfac.damping == exact.damping > 0  # "auto": 0.1 tr(G) / p of the exact G, for both
    G = kfac.loss_grads(X[:5], y[:5])
    V = kfac.inverse_hvp(G.T).T
    A = gn_matrix(kfac) + kfac.damping * np.eye(kfac.n_params)
    # (the output biases' common shift is solved apart, as for the exact solvers: gradients have none)
    true = np.linalg.norm(V @ A - G, axis=1) / np.linalg.norm(G, axis=1)
    np.testing.assert_allclose(kfac.solve_info.residuals, true, rtol=1e-6)
    assert true.max() > 1e-4  # an approximation (at this small "auto" damping, a rough one)


def test_bad_arguments():
    X, y = load_digits(return_X_y=True)
    X, y = X[:200] / 16.0, y[:200]
    net = uw.MLPClassifier(hidden=(4,), l2=1e-3, random_state=0).fit(X, y)
    with pytest.raises(InputError, match="solver: curvature='kfac' is solved in closed form"):
        uw.Influence(net, X, y, curvature="kfac", solver="cg")
    with pytest.raises(InputError, match="curvature: expected 'gauss-newton', 'hessian', 'kfac' or 'ekfac'"):
        uw.Influence(net, X, y, curvature="ekfac-ish")
    glm = uw.LogisticRegression(l2=1e-2).fit(X, y)
    with pytest.raises(InputError, match=r"curvature: 'ekfac' factors a network's layers.*MLPClassifier\(hidden=\(\)\)"):
        uw.Influence(glm, X, y, curvature="ekfac")
    kfac = uw.Influence(net, X, y, curvature="kfac")
    with pytest.raises(InputError, match="solver: leave-out estimates are exact"):
        kfac.loo_params([0])
    with pytest.raises(InputError, match="solver: expected 'auto', 'direct', 'cg' or 'arnoldi'"):
        uw.Influence(net, X, y, solver="kfac")


@pytest.mark.parametrize("curvature", ["kfac", "ekfac"])
def test_streams_any_storage(tmp_path, curvature):
    """The factors (and EK-FAC's eigenvalues) come from passes over row blocks, so they take X as
    any other influence does: a .npy file read block by block, a float32 array, a sparse matrix;
    the answers are the in-memory float64 ones (float32: to its rounding)."""
    import scipy.sparse as sp

    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600]
    net = uw.MLPClassifier(hidden=(6,), l2=1e-3, random_state=0).fit(X, y)
    want = uw.Influence(net, X, y, curvature=curvature).on_loss(X[:4], y[:4])
    path = tmp_path / "X.npy"
    np.save(path, X)
    for stored, rtol in ((str(path), 1e-12), (sp.csr_matrix(X), 1e-12), (X.astype(np.float32), 1e-4)):
        got = uw.Influence(net, stored, y, curvature=curvature).on_loss(X[:4], y[:4])
        np.testing.assert_allclose(got, want, rtol=0, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize("kw", [{"curvature": "ekfac"}, {"curvature": "kfac"}, {"solver": "arnoldi", "rank": 12}])
def test_curvature_saved_and_reloaded(tmp_path, kw):
    """save_curvature writes the prepared approximation; curvature_file= reloads it instead of
    the passes that built it: bit-for-bit the same answers. A file for other parameters, l2,
    damping, data or another approximation is refused by name."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:500] / 16.0, y[:500]
    net = uw.MLPClassifier(hidden=(5,), l2=1e-3, random_state=0).fit(X, y)
    first = uw.Influence(net, X, y, damping=0.05, **kw)
    want = first.on_loss(X[:6], y[:6])
    path = tmp_path / "curvature.npz"
    first.save_curvature(path)
    with pytest.raises(InputError, match="path: .* exists; pass force=True"):
        first.save_curvature(path)
    kw_again = {k: v for k, v in kw.items() if k != "rank"}  # Arnoldi's rank comes from the file
    again = uw.Influence(net, X, y, damping=0.05, curvature_file=path, **kw_again)
    np.testing.assert_array_equal(again.on_loss(X[:6], y[:6]), want)
    with pytest.raises(InputError, match="curvature_file: was computed with damping = 0.05, this influence has damping = 0.1"):
        uw.Influence(net, X, y, damping=0.1, curvature_file=path, **kw_again)
    with pytest.raises(InputError, match="curvature_file: was computed with total_weight"):
        uw.Influence(net, X[:400], y[:400], damping=0.05, curvature_file=path, **kw_again)
    other = {"curvature": "kfac"} if kw.get("curvature") != "kfac" else {"curvature": "ekfac"}
    with pytest.raises(InputError, match="curvature_file: was computed with method"):
        uw.Influence(net, X, y, damping=0.05, curvature_file=path, **other)
    with pytest.raises(InputError, match="curvature_file: holds an approximate curvature"):
        uw.Influence(net, X, y, damping=0.05, curvature_file=path, solver="direct")
    moved = uw.MLPClassifier(hidden=(5,), l2=1e-3, random_state=1).fit(X, y)
    with pytest.raises(InputError, match="curvature_file: was computed for other parameters"):
        uw.Influence(moved, X, y, damping=0.05, curvature_file=path, **kw_again)
    if "rank" in kw:
        with pytest.raises(InputError, match="rank: the curvature_file holds 12 eigenpairs, got rank=5"):
            uw.Influence(net, X, y, damping=0.05, curvature_file=path, solver="arnoldi", rank=5)
    with pytest.raises(InputError, match="curvature_file: no file"):
        uw.Influence(net, X, y, damping=0.05, curvature_file=tmp_path / "missing.npz", **kw_again)
    exact = uw.Influence(net, X, y, damping=0.05, solver="direct")
    with pytest.raises(InputError, match="save_curvature: solver 'direct' is exact"):
        exact.save_curvature(tmp_path / "exact.npz")


@pytest.mark.parametrize("curvature", ["kfac", "ekfac"])
def test_sampled_factors(tmp_path, curvature):
    """kfac_samples=m: the factors from m gradients per row at targets drawn from the network's
    predictive distribution approach the exact expectation's answers as m grows (a softmax net
    and a two-output squared one); the draws are seeded per row by its values, so answers are
    deterministic and independent of the rows' order; a curvature file remembers m."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600].astype(np.float64)
    Y = np.column_stack([X[:, 20] - X[:, 40], X[:, 30]])
    for net, t in [(uw.MLPClassifier(hidden=(8,), l2=1e-3, random_state=0).fit(X, y), y),
                   (uw.MLPRegressor(hidden=(6,), l2=1e-3, random_state=0, tol=1e-6).fit(X, Y), Y)]:
        exact = uw.Influence(net, X, t, curvature=curvature, residuals=False).on_loss(X[:10], t[:10])
        errs = []
        for m in (1, 16, 512):
            got = uw.Influence(net, X, t, curvature=curvature, residuals=False, kfac_samples=m).on_loss(X[:10], t[:10])
            errs.append(np.linalg.norm(got - exact) / np.linalg.norm(exact))
        assert errs[0] > errs[2] and errs[1] > errs[2] and errs[2] < 0.02, errs
    perm = np.random.default_rng(1).permutation(len(X))
    a = uw.Influence(net, X, t, curvature=curvature, kfac_samples=3)
    b = uw.Influence(net, X[perm], t[perm], curvature=curvature, kfac_samples=3)
    sa, sb = a.on_loss(X[:4], t[:4]), b.on_loss(X[:4], t[:4])
    np.testing.assert_allclose(sb, sa[:, perm], rtol=1e-10, atol=1e-13 * np.abs(sa).max())
    a.save_curvature(tmp_path / "c.npz")
    again = uw.Influence(net, X, t, curvature=curvature, kfac_samples=3, curvature_file=tmp_path / "c.npz")
    assert np.array_equal(again.on_loss(X[:4], t[:4]), sa)
    with pytest.raises(InputError, match="^curvature_file: was computed with kfac_samples = 3, this influence has kfac_samples = None"):
        uw.Influence(net, X, t, curvature=curvature, curvature_file=tmp_path / "c.npz")
    with pytest.raises(InputError, match="^kfac_samples:"):
        uw.Influence(net, X, t, curvature=curvature, kfac_samples=0)
    with pytest.raises(InputError, match="^kfac_samples: samples the K-FAC factors"):
        uw.Influence(net, X, t, kfac_samples=4)
    # the K-FAC preconditioner of CG takes them too, and CG still solves the exact system
    cg = uw.Influence(net, X, t, solver="cg", precondition="kfac", kfac_samples=2, rtol=1e-10)
    np.testing.assert_allclose(cg.on_loss(X[:3], t[:3]), uw.Influence(net, X, t, solver="direct").on_loss(X[:3], t[:3]), rtol=1e-6)
