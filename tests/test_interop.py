"""scikit-learn and statsmodels interop (issue 4): penalties converted exactly, so that
influence equals the finite difference of refitting *that* estimator with a perturbed weight."""

from __future__ import annotations

import numpy as np
import pytest

import upweight as uw

sklm = pytest.importorskip("sklearn.linear_model")
sm = pytest.importorskip("statsmodels.api")


@pytest.fixture(scope="module")
def cancer():
    X, y, names = uw.load_breast_cancer()
    X = (X[:, :6] - X[:, :6].mean(axis=0)) / X[:, :6].std(axis=0)
    w = np.random.default_rng(0).uniform(0.5, 2.0, len(y))
    return X, y, w


def sk_theta(est):
    coef, b = np.atleast_2d(est.coef_), np.atleast_1d(est.intercept_)
    return np.column_stack([coef, b]).reshape(-1)


def finite_difference(make, X, y, w, m, h):
    """Central difference of the refitted sklearn parameters in w_m."""
    out = []
    for s in (h, -h):
        wp = w.copy()
        wp[m] += s
        out.append(sk_theta(make().fit(X, y, sample_weight=wp)))
    return (out[0] - out[1]) / (2 * h)


@pytest.mark.parametrize(
    "make, target, rtol",
    [
        (lambda: sklm.Ridge(alpha=3.0), "regression", 1e-6),
        (lambda: sklm.LinearRegression(), "regression", 1e-6),
        # Newton solvers reach the optimum to rounding (lbfgs stops ~1e-6 short, which the
        # finite difference would amplify)
        (lambda: sklm.LogisticRegression(C=0.05, solver="newton-cholesky", tol=1e-14, max_iter=1000), "binary", 1e-6),
        (lambda: sklm.PoissonRegressor(alpha=0.1, solver="newton-cholesky", tol=1e-14, max_iter=1000), "count", 1e-6),
    ],
    ids=["ridge", "linear", "logistic", "poisson"],
)
def test_influence_equals_refitting_the_sklearn_estimator(cancer, make, target, rtol):
    X, y, w = cancer
    if target == "regression":
        yy = X[:, 0] * 2 - X[:, 3] + np.random.default_rng(1).standard_normal(len(y))
        Xf = X[:, 1:]
    elif target == "binary":
        yy, Xf = np.where(y == 1, "benign", "malignant"), X  # string labels
    else:
        yy, Xf = np.random.default_rng(2).poisson(np.exp(0.3 * X[:, 0])), X
    est = make().fit(Xf, yy, sample_weight=w)
    inf = uw.Influence.from_sklearn(est, Xf, yy, sample_weight=w)
    np.testing.assert_allclose(inf.model.theta_.reshape(-1), sk_theta(est), rtol=1e-5, atol=1e-7)
    for m in (0, 100):
        fd = finite_difference(make, Xf, yy, w, m, h=1e-3)
        I = inf.params([m])[0]
        np.testing.assert_allclose(I, fd, rtol=rtol, atol=rtol * np.abs(fd).max())


def test_unpenalised_sklearn_logistic_regression(cancer):
    X, y, w = cancer
    Xf = X[:, :2]  # two features: not separable, so the unpenalised optimum exists
    make = lambda: sklm.LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-14, max_iter=1000)  # noqa: E731
    est = make().fit(Xf, y, sample_weight=w)
    inf = uw.Influence.from_sklearn(est, Xf, y, sample_weight=w)
    assert inf.model.l2 == 0.0
    fd = finite_difference(make, Xf, y, w, 5, h=1e-3)
    np.testing.assert_allclose(inf.params([5])[0], fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_multinomial_sklearn_influence_on_probabilities(cancer):
    X, y, w = cancer
    y3 = np.digitize(X[:, 2], [-0.5, 0.5])  # three classes from a real feature
    Xf = X[:, [0, 1, 4, 5]]
    make = lambda: sklm.LogisticRegression(C=0.5, solver="newton-cg", tol=1e-14, max_iter=1000)  # noqa: E731
    est = make().fit(Xf, y3, sample_weight=w)
    inf = uw.Influence.from_sklearn(est, Xf, y3, sample_weight=w)
    np.testing.assert_allclose(inf.model.predict_proba(Xf), est.predict_proba(Xf), atol=1e-6)
    m, h, Xt = 42, 1e-2, Xf[:5]
    probs = []
    for s in (h, -h):
        wp = w.copy()
        wp[m] += s
        probs.append(make().fit(Xf, y3, sample_weight=wp).predict_proba(Xt))
    fd = (probs[0] - probs[1]) / (2 * h)
    P = inf.on_prediction(Xt, idx=[m])[:, :, 0]
    np.testing.assert_allclose(P, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_statsmodels_ols_wls_and_glm(cancer):
    X, y, w = cancer
    yy = X[:, 0] * 2 - X[:, 3] + np.random.default_rng(1).standard_normal(len(y))
    Xc = sm.add_constant(X[:, 1:])
    for res, weights in [(sm.OLS(yy, Xc).fit(), None), (sm.WLS(yy, Xc, weights=w).fit(), w)]:
        inf = uw.Influence.from_statsmodels(res)
        np.testing.assert_allclose(inf.model.theta_[-1], res.params[0], rtol=1e-9)
        np.testing.assert_allclose(inf.model.theta_[:-1], res.params[1:], rtol=1e-9)
        # removing a point: exact leave-one-out vs statsmodels' refit
        keep = np.arange(len(yy)) != 7
        refit = (sm.OLS(yy[keep], Xc[keep]) if weights is None else sm.WLS(yy[keep], Xc[keep], weights=w[keep])).fit()
        loo = uw.leave_one_out(inf.model, inf.X, inf.y, idx=[7], sample_weight=weights)
        np.testing.assert_allclose(loo.theta[0][:-1], refit.params[1:], rtol=1e-8)
    # logistic GLM with frequency weights: the influence is the derivative in the weight
    fw = np.random.default_rng(3).integers(1, 4, len(y)).astype(float)
    Xg = sm.add_constant(X[:, :3])
    res = sm.GLM(y, Xg, family=sm.families.Binomial(), freq_weights=fw).fit(tol=1e-12)
    inf = uw.Influence.from_statsmodels(res)
    h, m = 1e-3, 11
    fd = []
    for s in (h, -h):
        f2 = fw.copy()
        f2[m] += s
        p = sm.GLM(y, Xg, family=sm.families.Binomial(), freq_weights=f2).fit(tol=1e-12).params
        fd.append(np.append(p[1:], p[0]))
    np.testing.assert_allclose(inf.params([m])[0], (fd[0] - fd[1]) / (2 * h), rtol=1e-5, atol=1e-8)


def test_unsupported_estimators_are_refused(cancer):
    X, y, w = cancer
    with pytest.raises(uw.InputError, match="fit_intercept=False"):
        uw.Influence.from_sklearn(sklm.Ridge(fit_intercept=False).fit(X, y), X, y)
    with pytest.raises(uw.InputError, match="only the l2 penalty"):
        est = sklm.LogisticRegression(l1_ratio=1.0, solver="saga", C=1.0, max_iter=50).fit(X, y)
        uw.Influence.from_sklearn(est, X, y)
    with pytest.raises(uw.InputError, match="not supported"):
        uw.Influence.from_sklearn(sklm.Lasso().fit(X, y), X, y)
    with pytest.raises(uw.InputError, match="constant column"):
        uw.Influence.from_statsmodels(sm.OLS(y, X).fit())
    with pytest.raises(uw.InputError, match="not supported"):
        uw.Influence.from_statsmodels(sm.GLM(y, sm.add_constant(X), family=sm.families.Binomial(sm.families.links.Probit())).fit())
