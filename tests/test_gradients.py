"""Bring-your-own-gradients influence (GradientInfluence) against the GLM engine and NumPy."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

import upweight as uw
from upweight import _core


def _n_features(X) -> int:
    """Columns of features as the core takes them (an array or a CSR tuple)."""
    return X[3] if isinstance(X, tuple) else X.shape[1]


@pytest.fixture(scope="module")
def logistic():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 6))
    y = (rng.random(600) < 1 / (1 + np.exp(-X @ np.linspace(-1, 1, 6)))).astype(float)
    w = rng.uniform(0.5, 1.5, 600)
    model = uw.LogisticRegression().fit(X, y, sample_weight=w)
    G = _core.Model.glm("logistic", 1, _n_features(X)).per_example_grads(model.theta_, X, y)
    H = _core.Model.glm("logistic", 1, _n_features(X)).hessian(model.theta_, X, y, w, 0.0)
    return model, X, y, w, G, H


def test_explicit_hessian_reproduces_glm_influence(logistic):
    model, X, y, w, G, H = logistic
    glm = uw.Influence(model, X, y, sample_weight=w)
    gi = uw.GradientInfluence(G, hessian=H, sample_weight=w)
    np.testing.assert_allclose(gi.params(), glm.params(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gi.params(idx=[4, 2]), glm.params(idx=[4, 2]), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gi.on_loss(G[:9]), glm.on_loss(X[:9], y[:9]), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(gi.self_influence(), glm.self_influence(), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(gi.top_k(G[:5], 4).harmful_idx, glm.top_k(X[:5], y[:5], 4).harmful_idx)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_fisher_curvature_matches_numpy(logistic, solver):
    _, _, _, w, G, _ = logistic
    W = w.sum()
    F = (G * w[:, None]).T @ G / W
    damping = 1e-3
    Gt = G[:7] * 1.3
    S = -Gt @ np.linalg.solve(F + damping * np.eye(7), G.T) / W
    gi = uw.GradientInfluence(G, damping=damping, sample_weight=w, solver=solver, rtol=1e-12)
    np.testing.assert_allclose(gi.on_loss(Gt), S, rtol=1e-8, atol=1e-12 * np.abs(S).max())
    assert gi.solve_info.method == solver and gi.solve_info.converged.all()
    np.testing.assert_allclose(gi.inverse_hvp(Gt[0]), np.linalg.solve(F + damping * np.eye(7), Gt[0]), rtol=1e-8)


def test_float32_and_npy_gradients(logistic, tmp_path):
    *_, G, _ = logistic
    G32 = G.astype(np.float32)
    ref = uw.GradientInfluence(G32.astype(np.float64), damping=1e-3)
    np.save(tmp_path / "g.npy", G32)
    S64 = ref.on_loss(G[:3])
    first = None
    for src in (G32, tmp_path / "g.npy", np.load(tmp_path / "g.npy", mmap_mode="r")):
        gi = uw.GradientInfluence(src, damping=1e-3)
        # the Fisher and the solves are float64; the scores float32, within float32 rounding
        S = gi.on_loss(G[:3])
        assert S.dtype == np.float32
        np.testing.assert_allclose(S, S64, rtol=0, atol=1e-6 * np.abs(S64).max())
        if first is None:
            first = S
        np.testing.assert_array_equal(S, first)  # memory, file and memmap agree bitwise
        np.testing.assert_array_equal(gi.params(idx=[0, 599]), ref.params(idx=[0, 599]))
        top, top64 = gi.top_k(G[:3], k=4), ref.top_k(G[:3], k=4)
        np.testing.assert_array_equal(top.helpful_idx, top64.helpful_idx)
        np.testing.assert_allclose(top.helpful, top64.helpful, rtol=1e-12)


def test_an_asymmetric_hessian_is_refused_wherever_it_differs():
    """The symmetry check reads H by 64 x 64 tiles: an asymmetry in any tile (the last, partial
    one too) is found, and the message names its first entry in row-major order."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((40, 150))
    H = G.T @ G + np.eye(150)
    uw.GradientInfluence(G, hessian=H)  # symmetric: accepted
    for i, j in [(149, 3), (3, 149), (70, 65), (64, 63), (149, 148), (0, 1)]:
        asym = H.copy()
        asym[i, j] += 1e-6 * np.abs(H).max()
        a, b = min((i, j), (j, i))
        with pytest.raises(uw.InputError, match=rf"hessian: is not symmetric \(entry \({a}, {b}\) differs from \({b}, {a}\)\)"):
            uw.GradientInfluence(G, hessian=asym)


def test_bad_gradient_inputs(logistic):
    *_, G, H = logistic
    with pytest.raises(uw.SingularHessianError, match="damping"):
        uw.GradientInfluence(G, hessian=-H)
    asym = H.copy()
    asym[0, 1] += 1.0
    with pytest.raises(uw.InputError, match="hessian: is not symmetric"):
        uw.GradientInfluence(G, hessian=asym)
    with pytest.raises(uw.InputError, match="hessian: has shape"):
        uw.GradientInfluence(G, hessian=H[:3, :3])
    bad = G.copy()
    bad[3, 2] = np.inf
    with pytest.raises(uw.InputError, match=r"train_grads: contains NaN or infinity \(first at row 3, column 2\)"):
        uw.GradientInfluence(bad)
    gi = uw.GradientInfluence(G, damping=1e-3)
    with pytest.raises(uw.InputError, match="test_grads: has 5 entries"):
        gi.on_loss(G[:2, :5])
    with pytest.raises(uw.InputError, match="curvature"):
        uw.GradientInfluence(G, curvature="ggn")
    # rank-deficient Fisher (p > n) needs damping, and says so
    with pytest.raises(uw.SingularHessianError):
        uw.GradientInfluence(G[:3])
    assert np.isfinite(uw.GradientInfluence(G[:3], damping=1e-2).self_influence()).all()


def test_torch_example_runs():
    pytest.importorskip("torch")
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "torch_gradients.py"), run_name="__main__")
