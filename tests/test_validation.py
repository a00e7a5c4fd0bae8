"""Validation against exact refits (issue 4): response curves, leave-one-out, leave-k-out,
compare, and the group functionals (mean test loss, loss gap)."""

from __future__ import annotations

import numpy as np
import pytest

import upweight as uw


@pytest.fixture(scope="module")
def cancer():
    X, y, _ = uw.load_breast_cancer()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    rng = np.random.default_rng(0)
    test = rng.choice(len(y), 60, replace=False)
    train = np.setdiff1d(np.arange(len(y)), test)
    model = uw.LogisticRegression(l2=1e-2).fit(X[train], y[train])
    return model, X[train], y[train], X[test], y[test]


def test_response_curve_is_tangent_to_influence(cancer):
    model, X, y, Xt, yt = cancer
    h = 1e-3
    rc = uw.response_curve(model, X, y, m=7, eps=[-h, 0.0, h])
    np.testing.assert_allclose(rc.theta[1], model.theta_, atol=1e-10)  # eps = 0 refits to theta*
    central = (rc.theta[2] - rc.theta[0]) / (2 * h)
    I = uw.Influence(model, X, y).params([7])[0]
    np.testing.assert_allclose(central, I, rtol=1e-4, atol=1e-6 * np.abs(I).max())
    np.testing.assert_allclose(rc.influence, I)
    np.testing.assert_allclose(rc.theta_tangent, model.theta_ + rc.eps[:, None] * I)
    # along a test loss: the same tangent, and the curve bends away from it at larger eps
    f = uw.TestLoss(Xt[:3], yt[:3])
    rc = uw.response_curve(model, X, y, m=7, eps=np.linspace(-1, 3, 9), f=f)
    assert rc.f.shape == (9, 3) and rc.f_tangent.shape == (9, 3)
    zero = np.flatnonzero(rc.eps == 0)[0]
    np.testing.assert_allclose(rc.f[zero], rc.f_tangent[zero], rtol=1e-9)
    S = uw.Influence(model, X, y).on_loss(Xt[:3], yt[:3], idx=[7])[:, 0]
    np.testing.assert_allclose(rc.influence, S, rtol=1e-10)
    gap = np.abs(rc.f - rc.f_tangent).max(axis=1)
    assert gap[zero] < 1e-9 and gap[-1] > gap[zero + 1] > 0  # second-order error grows with |eps|


def test_leave_one_out_agrees_with_influence_on_real_data(cancer):
    model, X, y, Xt, yt = cancer
    loo = uw.leave_one_out(model, X, y, idx=range(0, 500, 5), X_test=Xt, y_test=yt)
    assert loo.theta.shape == (100, 31) and loo.actual_loss.shape == (100, 60)
    c = uw.compare(loo.predicted_loss, loo.actual_loss)
    assert c.pearson > 0.98 and c.spearman > 0.95 and 0.9 < c.slope < 1.2, c
    c = uw.compare(loo.predicted_params, loo.actual_params)
    assert c.pearson > 0.98, c
    # the one-step Newton estimate (issue 17) is much closer to the refits than the tangent
    step = uw.compare(loo.one_step_loss, loo.actual_loss)
    assert step.pearson > 0.999 and abs(step.slope - 1) < 0.02, step
    err_step = np.abs(loo.one_step_loss - loo.actual_loss).max()
    assert err_step < 0.5 * np.abs(loo.predicted_loss - loo.actual_loss).max()
    assert uw.compare(loo.one_step_params, loo.actual_params).pearson > 0.999
    # one refit checked by hand: fit without the point from scratch
    keep = np.setdiff1d(np.arange(len(y)), [10])
    direct = uw.LogisticRegression(l2=1e-2, tol=1e-12).fit(X[keep], y[keep])
    np.testing.assert_allclose(loo.theta[2], direct.theta_, atol=1e-9)


def test_least_squares_leave_one_out_is_exactly_linear():
    """For ridge regression a weight change moves theta along a curve, but removing one point
    is exact in closed form: theta_(-m) = theta* + (Z^T Z)^-1 z_m r_m / (1 - h_m), r = eta - y."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 3))
    y = X @ [1.0, -2.0, 0.5] + 0.3 * rng.standard_normal(40)
    model = uw.LinearRegression(l2=0.0).fit(X, y)
    loo = uw.leave_one_out(model, X, y)
    assert uw.compare(loo.predicted_params, loo.actual_params).pearson > 0.99  # first order: close, not exact
    Z = np.column_stack([X, np.ones(40)])
    A = np.linalg.inv(Z.T @ Z)
    r = Z @ model.theta_ - y
    h = np.einsum("ij,jk,ik->i", Z, A, Z)
    exact = (Z * (r / (1 - h))[:, None]) @ A.T
    np.testing.assert_allclose(loo.actual_params, exact, rtol=1e-8, atol=1e-12)


def test_leave_k_out_and_group_functionals(cancer):
    model, X, y, Xt, yt = cancer
    group = [3, 30, 300]
    lko = uw.leave_k_out(model, X, y, group, X_test=Xt, y_test=yt)
    loo = uw.leave_one_out(model, X, y, idx=group, X_test=Xt, y_test=yt)
    np.testing.assert_allclose(lko.predicted_params, loo.predicted_params.sum(axis=0))
    c = uw.compare(lko.predicted_loss, lko.actual_loss)
    assert c.pearson > 0.95, c
    inf = uw.Influence(model, X, y)
    S = inf.on_loss(Xt, yt)
    np.testing.assert_allclose(inf.on_mean_loss(Xt, yt), S.mean(axis=0), rtol=1e-10, atol=1e-14)
    a, b = yt == 1, yt == 0
    gap = inf.on_loss_gap(Xt[a], yt[a], Xt[b], yt[b])
    np.testing.assert_allclose(gap, S[a].mean(axis=0) - S[b].mean(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(inf.on_mean_loss(Xt, yt, idx=group), S.mean(axis=0)[group], rtol=1e-10)


def test_weights_and_bad_arguments(cancer):
    model, X, y, Xt, yt = cancer
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    mw = uw.LogisticRegression(l2=1e-2).fit(X, y, sample_weight=w)
    loo = uw.leave_one_out(mw, X, y, idx=[4, 9], sample_weight=w)
    rc = uw.response_curve(mw, X, y, m=4, eps=[-w[4]], sample_weight=w)
    np.testing.assert_allclose(loo.theta[0], rc.theta[0], atol=1e-12)  # removing = eps of -w_m
    np.testing.assert_allclose(loo.predicted_params[0], -w[4] * uw.Influence(mw, X, y, w).params([4])[0])
    with pytest.raises(uw.InputError, match="eps: w_m \\+ eps must be >= 0"):
        uw.response_curve(mw, X, y, m=4, eps=[-3.0], sample_weight=w)
    with pytest.raises(uw.InputError, match="idx: index 9999"):
        uw.leave_one_out(model, X, y, idx=[9999])
    with pytest.raises(uw.InputError, match="group: has repeated"):
        uw.leave_k_out(model, X, y, [1, 1])
    with pytest.raises(uw.InputError, match="actual: has shape \\(2,\\) but predicted has shape \\(3,\\)"):
        uw.compare([1, 2, 3], [1, 2])
    c = uw.compare([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 9.0])
    assert c.spearman == 1.0 and abs(c.slope - 2.3) < 1e-12 and c.n == 4


def test_readme_walkthrough_runs_and_its_claims_hold():
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).parents[1] / "examples" / "walkthrough.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True).stdout
    pairs = [line.split("predicted ")[1].split(", refit ") for line in out.splitlines() if "remove #" in line]
    assert len(pairs) == 6 and all(float(p) * float(a) > 0 for p, a in pairs)  # signs agree
    r = float(out.split("Pearson ")[1].split(",")[0])
    assert r > 0.95
    page = (pathlib.Path(__file__).parents[1] / "docs" / "glms.md").read_text()
    assert out.strip() in page  # the documentation shows this exact output
