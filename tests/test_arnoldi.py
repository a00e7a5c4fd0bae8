"""solver="arnoldi" (issue 15; DESIGN-networks.md section 5): Lanczos with full
reorthogonalisation for the top r eigenpairs of the curvature, then solves with that rank-r model.

Checked against the definition: with r = p it is the direct solve (to 1e-10); its eigenvalues are
numpy's eigenvalues of the exact Hessian; its projection and exact inverses are the formulas
U diag(1 / (sigma + lam)) U^T g and (U diag(sigma) U^T + lam I)^-1 g built from numpy's
eigenvectors; the residuals it reports are the true ones; a breakdown (degenerate eigenvalues)
restarts and still spans everything.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_digits

import upweight as uw
from upweight import _core
from upweight.errors import InputError, SingularHessianError


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    return model, X, y.astype(float)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    return model, X, y.astype(float)


def exact_hessian(inf) -> np.ndarray:
    """H (penalty included) of the influence's objective, from the core's own dense builder."""
    return inf._core_model.hessian(inf._theta, inf.X, inf.y, inf.sample_weight, inf.l2)


def top_eigen(H: np.ndarray, r: int):
    s, U = np.linalg.eigh(H)
    return s[::-1][:r], U[:, ::-1][:, :r]


def test_full_rank_is_the_direct_solve(cancer, digits):
    """r = p: the Krylov basis is complete and the rank-r model is H itself (DESIGN-networks.md's
    check, 1e-10). For the multinomial model Lanczos runs outside its free shift of all classes'
    intercepts (H is zero there; answers along it are solved as the direct solver solves them),
    so full rank is p - 1, and asking for p says so."""
    for (model, X, y), free in ((cancer, 0), (digits, 1)):
        direct = uw.Influence(model, X, y, solver="direct")
        r = direct.n_params - free
        want = direct.on_loss(X[:7], y[:7])
        for inverse in ("projection", "exact"):
            arn = uw.Influence(model, X, y, solver="arnoldi", rank=r, arnoldi_inverse=inverse)
            got = arn.on_loss(X[:7], y[:7])
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-10 * np.abs(want).max())
            info = arn.solve_info
            assert info.method == "arnoldi" and info.rank == r
            assert info.iterations[0] == r  # r Lanczos steps
            assert info.max_residual < 1e-10
        if free:
            with pytest.raises(InputError, match=f"rank: must be between 1 and the number of identifiable directions \\({r}: "):
                uw.Influence(model, X, y, solver="arnoldi", rank=r + 1)


def test_eigenvalues_are_the_hessians(cancer):
    model, X, y = cancer
    arn = uw.Influence(model, X, y, solver="arnoldi", rank=5)
    arn.on_loss(X[:2], y[:2])
    want, _ = top_eigen(exact_hessian(arn), 5)
    got = arn.solve_info.eigenvalues
    np.testing.assert_allclose(got, want, rtol=1e-8)
    assert np.all(np.diff(got) <= 0), "descending"
    # Lanczos' own error bounds are reported, and small for converged extreme eigenpairs
    assert arn.solve_info.eigen_residuals.shape == (5,)
    assert np.all(arn.solve_info.eigen_residuals < 1e-6 * got[0])


@pytest.mark.parametrize("inverse,damping", [("projection", 0.0), ("projection", 0.05), ("exact", 0.05)])
def test_rank_r_inverse_is_the_formula(digits, inverse, damping):
    """The rank-r solve against the same formula on numpy's top-r eigenvectors of H (enough
    Lanczos steps for the top 20 to converge)."""
    model, X, y = digits
    r = 20
    arn = uw.Influence(model, X, y, solver="arnoldi", rank=r, arnoldi_steps=200, arnoldi_inverse=inverse, damping=damping)
    G = arn.loss_grads(X[:5], y[:5])
    got = arn.inverse_hvp(G.T).T
    s, U = top_eigen(exact_hessian(arn), r)
    np.testing.assert_allclose(arn.solve_info.eigenvalues, s, rtol=1e-9)
    c = G @ U  # (q, r)
    want = (c / (s + damping)) @ U.T
    if inverse == "exact":
        want += (G - c @ U.T) / damping
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-8 * np.abs(want).max())


def test_reported_residuals_are_the_true_ones(cancer):
    model, X, y = cancer
    damping = 0.02
    arn = uw.Influence(model, X, y, solver="arnoldi", rank=6, damping=damping, arnoldi_inverse="exact")
    G = arn.loss_grads(X[:4], y[:4])
    V = arn.inverse_hvp(G.T).T
    A = exact_hessian(arn) + damping * np.eye(arn.n_params)
    true = np.linalg.norm(V @ A - G, axis=1) / np.linalg.norm(G, axis=1)
    np.testing.assert_allclose(arn.solve_info.residuals, true, rtol=1e-6)
    assert 1e-6 < true.max() < 1  # an approximation, not the exact solve
    # per-training-point solves do not compute them (a pass over the data per block): NaN, documented
    arn.self_influence()
    assert np.isnan(arn.solve_info.residuals).all()
    # and residuals=False skips them for speed, with the same answers
    fast = uw.Influence(model, X, y, solver="arnoldi", rank=6, damping=damping, arnoldi_inverse="exact", residuals=False)
    np.testing.assert_array_equal(fast.inverse_hvp(G.T).T, V)
    assert np.isnan(fast.solve_info.residuals).all()
    with pytest.raises(InputError, match="residuals: expected True or False"):
        uw.Influence(model, X, y, solver="arnoldi", rank=6, residuals="no")


def test_more_rank_is_closer_to_exact(digits):
    """What a user picks r by: the scores' agreement with the exact ones grows with r."""
    model, X, y = digits
    exact = uw.Influence(model, X, y, solver="direct", damping=0.01).on_loss(X[:10], y[:10])
    corr = []
    for r in (5, 40, 200):
        S = uw.Influence(model, X, y, solver="arnoldi", rank=r, damping=0.01, arnoldi_inverse="exact").on_loss(X[:10], y[:10])
        corr.append(np.corrcoef(S.ravel(), exact.ravel())[0, 1])
    assert corr[0] < corr[1] < corr[2] and corr[2] > 0.98, corr


def test_breakdown_restarts_and_spans_everything():
    """A curvature with three distinct eigenvalues has a 3-dimensional Krylov space: Lanczos
    breaks down after 3 steps and must restart from new directions (degenerate eigenvalues are
    normal: a network's bias shifts) to reach the full rank."""
    rng = np.random.default_rng(0)
    p = 12
    Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    H = (Q * np.repeat([1.0, 2.0, 5.0], 4)) @ Q.T
    grads = rng.standard_normal((30, p))
    direct = uw.GradientInfluence(grads, hessian=H, solver="direct")
    arn = uw.GradientInfluence(grads, hessian=H, solver="arnoldi", rank=p)
    test = rng.standard_normal((3, p))
    np.testing.assert_allclose(arn.on_loss(test), direct.on_loss(test), rtol=0, atol=1e-12)
    values, _, steps, restarts = arn._core.ritz
    assert restarts >= 2 and steps == p
    np.testing.assert_allclose(np.sort(values), np.repeat([1.0, 2.0, 5.0], 4), rtol=1e-12)


def test_network_gauss_newton():
    """Any model: an MLP's damped Gauss-Newton matrix, r = p against the direct solve."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:300] / 16.0, y[:300]
    net = uw.MLPClassifier(hidden=(4,), l2=1e-3, random_state=0).fit(X, y)
    direct = uw.Influence(net, X, y, solver="direct")
    null = _core.null_space(direct._core_model, direct.l2)  # the output biases' common shift
    r = direct.n_params - (0 if null is None else null.shape[1])
    arn = uw.Influence(net, X, y, solver="arnoldi", rank=r)
    assert arn.damping == direct.damping > 0  # the default "auto" damping, the same
    want = direct.on_loss(X[:3], y[:3])
    np.testing.assert_allclose(arn.on_loss(X[:3], y[:3]), want, rtol=0, atol=1e-9 * np.abs(want).max())
    # and a small rank answers with the top eigenpairs of G
    small = uw.Influence(net, X, y, solver="arnoldi", rank=8)
    small.on_loss(X[:3], y[:3])
    G = exact_hessian(small)
    s, _ = top_eigen(G, 8)
    np.testing.assert_allclose(small.solve_info.eigenvalues, s, rtol=1e-6)


def test_deterministic(digits):
    model, X, y = digits
    a = uw.Influence(model, X, y, solver="arnoldi", rank=15).on_loss(X[:4], y[:4])
    b = uw.Influence(model, X, y, solver="arnoldi", rank=15).on_loss(X[:4], y[:4])
    assert np.array_equal(a, b)


def test_bad_arguments(cancer):
    model, X, y = cancer
    p = X.shape[1] + 1
    with pytest.raises(InputError, match="rank: solver='arnoldi' needs rank="):
        uw.Influence(model, X, y, solver="arnoldi")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="rank"):
            uw.Influence(model, X, y, solver="arnoldi", rank=bad)
    with pytest.raises(InputError, match=f"rank: must be between 1 and the number of parameters \\({p}\\)"):
        uw.Influence(model, X, y, solver="arnoldi", rank=p + 1)
    with pytest.raises(InputError, match="rank: only used with solver='arnoldi'"):
        uw.Influence(model, X, y, solver="cg", rank=3)
    with pytest.raises(InputError, match="arnoldi_inverse"):
        uw.Influence(model, X, y, solver="arnoldi", rank=3, arnoldi_inverse="pinv")
    with pytest.raises(InputError, match="arnoldi_steps"):
        uw.Influence(model, X, y, solver="arnoldi", rank=3, arnoldi_steps=0)
    with pytest.raises(InputError, match="arnoldi_steps: 2 Lanczos steps cannot give rank=3 eigenpairs"):
        uw.Influence(model, X, y, solver="arnoldi", rank=3, arnoldi_steps=2)
    with pytest.raises(InputError, match="damping: arnoldi_inverse='exact' with rank 3 < 31"):
        uw.Influence(model, X, y, solver="arnoldi", rank=3, arnoldi_inverse="exact")
    with pytest.raises(InputError, match="solver: expected 'auto', 'direct', 'cg' or 'arnoldi'"):
        uw.Influence(model, X, y, solver="lanczos")
    arn = uw.Influence(model, X, y, solver="arnoldi", rank=3)
    with pytest.raises(InputError, match="solver: leave-out estimates are exact"):
        arn.loo_params([0])


def test_singular_curvature_is_refused():
    """l2 = 0 with a duplicated feature: H has a zero eigenvalue, and rank = p would divide by it."""
    X, y = load_breast_cancer(return_X_y=True)
    X = (X[:, :4] - X[:, :4].mean(0)) / X[:, :4].std(0)
    X = np.hstack([X, X[:, :1]])
    model = uw.LogisticRegression(l2=1e-3).fit(X, y)
    model.l2 = 0.0
    with pytest.raises(SingularHessianError, match="exceeds its numerical rank"):
        uw.Influence(model, X, y, solver="arnoldi", rank=X.shape[1] + 1)


def test_gradient_influence_curvature_saved_and_reloaded(tmp_path):
    """GradientInfluence's Arnoldi eigenpairs are saved and reloaded: bit-for-bit the same
    answers without the Lanczos passes, from an array or a .npy of the same gradients; other
    gradients, weights or damping are refused by name."""
    rng = np.random.default_rng(5)
    grads = rng.standard_normal((200, 15)) @ np.diag(np.linspace(0.2, 3.0, 15))
    test = rng.standard_normal((4, 15))
    inf = uw.GradientInfluence(grads, damping=0.1, solver="arnoldi", rank=6)
    want = inf.on_loss(test)
    path = tmp_path / "fisher.npz"
    inf.save_curvature(path)
    again = uw.GradientInfluence(grads.copy(), damping=0.1, solver="arnoldi", curvature_file=path)
    assert np.array_equal(again.on_loss(test), want)
    assert again.solve_info.rank == 6
    np.save(tmp_path / "g.npy", grads)
    from_file = uw.GradientInfluence(str(tmp_path / "g.npy"), damping=0.1, solver="arnoldi", curvature_file=path)
    assert np.array_equal(from_file.on_loss(test), want)
    edited = grads.copy()
    edited[7, 3] += 1e-9
    with pytest.raises(InputError, match="^curvature_file: was computed for other gradients"):
        uw.GradientInfluence(edited, damping=0.1, solver="arnoldi", curvature_file=path)
    with pytest.raises(InputError, match="^curvature_file: was computed for other gradients"):
        uw.GradientInfluence(grads, sample_weight=np.full(200, 2.0), damping=0.1, solver="arnoldi", curvature_file=path)
    with pytest.raises(InputError, match="^curvature_file: was computed with damping"):
        uw.GradientInfluence(grads, damping=0.2, solver="arnoldi", curvature_file=path)
    with pytest.raises(InputError, match="^rank: the curvature_file holds 6"):
        uw.GradientInfluence(grads, damping=0.1, solver="arnoldi", rank=5, curvature_file=path)
    with pytest.raises(InputError, match="^save_curvature: solver 'direct' is exact"):
        uw.GradientInfluence(grads, damping=0.1, solver="direct").save_curvature(tmp_path / "x.npz")
