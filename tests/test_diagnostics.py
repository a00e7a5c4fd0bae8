"""Regression diagnostics (issue 4) against statsmodels on real data (the bundled breast-cancer
set), weighted ones against statsmodels' WLS and against exact refits."""

from __future__ import annotations

import numpy as np
import pytest

import upweight as uw

sm = pytest.importorskip("statsmodels.api")


@pytest.fixture(scope="module")
def data():
    X, y, names = uw.load_breast_cancer()
    return X, y, list(names)


def reorder(theta_sm):
    """statsmodels with add_constant: [const, coef...]; upweight: [coef..., intercept]."""
    return np.concatenate([theta_sm[..., 1:], theta_sm[..., :1]], axis=-1)


def regression(data):
    """A real least-squares problem: mean area from mean radius, texture and smoothness."""
    X, _, names = data
    cols = [names.index(c) for c in ("mean_radius", "mean_texture", "mean_smoothness")]
    return X[:, cols], X[:, names.index("mean_area")]


def test_least_squares_diagnostics_equal_statsmodels_ols(data):
    X, y = regression(data)
    model = uw.LinearRegression().fit(X, y)
    d = uw.diagnostics(model, X, y)
    ref = sm.OLS(y, sm.add_constant(X)).fit().get_influence()
    np.testing.assert_allclose(d.leverage, ref.hat_matrix_diag, rtol=1e-9)
    np.testing.assert_allclose(d.resid_studentized, ref.resid_studentized_internal, rtol=1e-8)
    np.testing.assert_allclose(d.resid_studentized_external, ref.resid_studentized_external, rtol=1e-8)
    np.testing.assert_allclose(d.cooks_distance, ref.cooks_distance[0], rtol=1e-8)
    np.testing.assert_allclose(d.dfbeta, reorder(ref.dfbeta), rtol=1e-7, atol=1e-10 * np.abs(ref.dfbeta).max())
    np.testing.assert_allclose(d.dfbetas, reorder(ref.dfbetas), rtol=1e-7, atol=1e-10)
    assert d.exact
    np.testing.assert_allclose(d.loo_params, reorder(ref.params_not_obsi), rtol=1e-8)


def test_weighted_least_squares_equal_whitened_ols_and_refits(data):
    """statsmodels' WLS has no influence diagnostics; WLS is OLS on rows scaled by sqrt(w)."""
    X, y = regression(data)
    w = np.random.default_rng(0).uniform(0.2, 3.0, len(y))
    model = uw.LinearRegression().fit(X, y, sample_weight=w)
    d = uw.diagnostics(model, X, y, sample_weight=w)
    sw = np.sqrt(w)
    ref = sm.OLS(sw * y, sw[:, None] * sm.add_constant(X)).fit().get_influence()
    np.testing.assert_allclose(d.leverage, ref.hat_matrix_diag, rtol=1e-9)
    np.testing.assert_allclose(d.resid_studentized, ref.resid_studentized_internal, rtol=1e-8)
    np.testing.assert_allclose(d.resid_studentized_external, ref.resid_studentized_external, rtol=1e-8)
    np.testing.assert_allclose(d.cooks_distance, ref.cooks_distance[0], rtol=1e-8)
    np.testing.assert_allclose(d.dfbetas, reorder(ref.dfbetas), rtol=1e-7, atol=1e-10)
    # exact leave-one-out in closed form equals real weighted refits
    loo = uw.leave_one_out(model, X, y, idx=[0, 5, 77], sample_weight=w)
    np.testing.assert_allclose(d.loo_params[[0, 5, 77]], loo.theta, rtol=1e-9, atol=1e-9)
    # a weight of zero is the point's absence: its leverage is 0
    w0 = w.copy()
    w0[3] = 0.0
    d0 = uw.diagnostics(uw.LinearRegression().fit(X, y, sample_weight=w0), X, y, sample_weight=w0)
    assert d0.leverage[3] == 0.0 and d0.cooks_distance[3] == 0.0


@pytest.mark.parametrize("family", ["logistic", "poisson"])
def test_glm_leverage_and_cooks_distance_equal_statsmodels(data, family):
    X, y, names = data
    cols = [names.index(c) for c in ("mean_radius", "mean_texture", "mean_smoothness")]
    Xs = (X[:, cols] - X[:, cols].mean(axis=0)) / X[:, cols].std(axis=0)
    if family == "logistic":
        model, fam, target = uw.LogisticRegression(), sm.families.Binomial(), y.astype(float)
    else:
        target = np.round(X[:, names.index("mean_concave_points")] * 100)  # a count
        model, fam = uw.PoissonRegression(), sm.families.Poisson()
    model.fit(Xs, target)
    d = uw.diagnostics(model, Xs, target)
    res = sm.GLM(target, sm.add_constant(Xs), family=fam).fit(tol=1e-12)
    np.testing.assert_allclose(model.theta_, reorder(res.params), rtol=1e-7)
    ref = res.get_influence()
    np.testing.assert_allclose(d.leverage, ref.hat_matrix_diag, rtol=1e-7)
    np.testing.assert_allclose(d.resid_pearson, res.resid_pearson, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(d.resid_studentized, ref.resid_studentized, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(d.cooks_distance, ref.cooks_distance[0], rtol=1e-6, atol=1e-14)
    # the one-step DFBETA is closer to exact refits than plain influence
    idx = np.argsort(d.leverage)[-10:]
    loo = uw.leave_one_out(model, Xs, target, idx=idx)
    one_step = np.abs(model.theta_ - d.dfbeta[idx] - loo.theta).max()
    plain = np.abs(loo.predicted_params - loo.actual_params).max()
    assert not d.exact and one_step < plain


def test_diagnostics_refuse_multinomial(data):
    X, _, _ = data
    y3 = np.arange(len(X)) % 3
    with pytest.raises(uw.InputError, match="single-output"):
        uw.diagnostics(uw.LogisticRegression(l2=1e-2).fit(X[:, :3], y3), X[:, :3], y3)


def test_a_point_of_leverage_one_is_named_and_only_its_values_are_nan():
    """A one-hot category used by a single row gives that row leverage 1: its studentized
    residuals, Cook's distance, DFBETA(S) and leave-one-out parameters are undefined. They are NaN
    (as documented), a HighLeverageWarning names the row, NumPy emits no RuntimeWarning, and every
    other row is finite."""
    import warnings

    rng = np.random.default_rng(4)
    X = np.column_stack([rng.standard_normal(40), np.zeros(40)])
    X[17, 1] = 1.0  # the only row of its category
    y = X[:, 0] + 0.2 * rng.standard_normal(40) + 3.0 * X[:, 1]
    model = uw.LinearRegression().fit(X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = uw.diagnostics(model, X, y)
    kinds = [w.category for w in caught]
    assert uw.HighLeverageWarning in kinds and RuntimeWarning not in kinds, kinds
    assert "[17]" in str(next(w.message for w in caught if w.category is uw.HighLeverageWarning))
    assert d.leverage[17] == pytest.approx(1.0)
    others = np.arange(40) != 17
    for name in ("resid_studentized", "resid_studentized_external", "cooks_distance", "dfbeta", "dfbetas", "loo_params"):
        v = getattr(d, name)
        assert np.all(np.isnan(v[17])), name
        assert np.all(np.isfinite(v[others])), name
