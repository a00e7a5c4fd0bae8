"""Properties that follow from the definition of influence (DESIGN.md section 1), checked
against real refits with the library's own estimators (no reference implementation involved).

    R_m(eps) = argmin of L_w with w_m replaced by w_m + eps,    I(z_m) = dR_m/d eps at eps = 0.

* I(z_m) equals central finite differences (R_m(h) - R_m(-h)) / 2h of exact refits (a
  one-sided second-order difference for a zero-weight point), for every family, with and
  without a penalty (multinomial without a penalty on heavily overlapping classes, n >> p);
* influence on predictions (class probabilities, rates, linear predictors) equals finite
  differences of the refits' predictions;
* a duplicated point is one point of weight 2; the order of the rows does not matter;
* a zero-weight point is a new point (whether it is kept at weight zero or removed);
* influence on a test loss predicts refits to first order in eps; removing a point (eps = -1)
  moves theta by about -I(z_m) when n is large; self-influence is negative without a penalty;
* ``on`` with the test-loss gradient is ``on_loss``; ``on_prediction`` is ``on`` with the
  gradient of the prediction ([x, 1] for the linear predictor).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import upweight as uw
from upweight import _core

pytestmark = [
    pytest.mark.filterwarnings("error::upweight.ConvergenceWarning"),
    pytest.mark.filterwarnings("error::upweight.NotAtOptimumWarning"),
]

#: multiply the number of hypothesis examples (e.g. UPWEIGHT_TEST_SCALE=20 for a long soak run)
SCALE = float(os.environ.get("UPWEIGHT_TEST_SCALE", "1"))

#: tolerance of the refits: Newton converges quadratically, so this is reached with room to spare
REFIT_TOL = 1e-13
ZERO = 5  # index of the zero-weight training point in `Spec.data(zero_weight=True)`


def _n_features(X) -> int:
    """Columns of features as the core takes them (an array or a CSR tuple)."""
    return X[3] if isinstance(X, tuple) else X.shape[1]


@dataclasses.dataclass(frozen=True)
class Spec:
    family: str
    l2: float
    n: int = 30
    d: int = 3
    k: int = 1
    signal: float = 0.7  # scale of the true coefficients: small = heavily overlapping classes
    seed: int = 0

    @property
    def p(self):
        return self.k * (self.d + 1)

    def estimator(self):
        if self.family == "squared":
            return uw.LinearRegression(l2=self.l2, tol=REFIT_TOL)
        if self.family == "poisson":
            return uw.PoissonRegression(l2=self.l2, tol=REFIT_TOL)
        if self.family == "multinomial":
            return uw.LogisticRegression(l2=self.l2, n_classes=self.k, tol=REFIT_TOL)
        return uw.LogisticRegression(l2=self.l2, tol=REFIT_TOL)

    def fit(self, X, y, w=None):
        model = self.estimator().fit(X, y, sample_weight=w)
        assert model.converged_ and model.family == self.family
        return model

    def labels(self, rng, X):
        n, d, k = X.shape[0], self.d, self.k
        if self.family == "squared":
            return X @ rng.normal(size=d) * self.signal + 0.5 + rng.normal(size=n)
        if self.family == "logistic":
            eta = self.signal * X @ rng.normal(size=d) + 0.2
            return (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
        if self.family == "poisson":
            return rng.poisson(np.exp(0.4 * self.signal * X @ rng.normal(size=d) + 0.3)).astype(float)
        eta = self.signal * X @ rng.normal(size=(d, k))
        P = np.exp(eta) / np.exp(eta).sum(axis=1, keepdims=True)
        return (P.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, k - 1).astype(float)

    def data(self, weighted=True, zero_weight=False, n_test=4):
        """(X, y, w, X_test, y_test); w is None unless ``weighted``; w[ZERO] = 0 if ``zero_weight``."""
        rng = np.random.default_rng(self.seed)
        X = rng.normal(size=(self.n, self.d))
        y = self.labels(rng, X)
        if self.family == "logistic":
            y[:2] = [0, 1]
        elif self.family == "multinomial":
            y[: self.k] = np.arange(self.k)
        elif self.family == "poisson":
            y[0] = max(y[0], 1.0)  # not all counts zero: the intercept has a finite optimum
        Xt = rng.normal(size=(n_test, self.d))
        yt = self.labels(rng, Xt)
        w = rng.uniform(0.5, 2.0, size=self.n) if weighted else None
        if zero_weight:
            w = np.ones(self.n) if w is None else w
            w[ZERO] = 0.0
        return X, y, w, Xt, yt


# families with and without a penalty; l2 = 0 only where the optimum is unique (for
# logistic / multinomial: many points, weak signal, so the classes overlap heavily)
SPECS = [
    Spec("squared", 0.0),
    Spec("squared", 0.1),
    Spec("logistic", 0.05),
    Spec("logistic", 0.0, n=120, signal=0.3),
    Spec("poisson", 0.05),
    Spec("poisson", 0.0, n=60),
    Spec("multinomial", 0.05, k=3),
    Spec("multinomial", 0.0, n=150, k=3, signal=0.3),
    Spec("multinomial", 0.0, n=200, d=2, k=4, signal=0.2, seed=1),
]
IDS = [f"{s.family}-l2={s.l2}-k={s.k}" for s in SPECS]
UNPENALISED = [s for s in SPECS if s.l2 == 0.0]
ONE_PER_FAMILY = [SPECS[i] for i in (1, 2, 4, 6)]
ONE_IDS = [s.family for s in ONE_PER_FAMILY]


def with_weight(w, n, m, eps):
    w2 = np.ones(n) if w is None else np.array(w, dtype=float)
    w2[m] += eps
    return w2


def flat(model):
    return model.theta_.reshape(-1)


def assert_close(actual, expected, rtol, rel_atol=None):
    expected = np.asarray(expected)
    atol = (rtol if rel_atol is None else rel_atol) * np.max(np.abs(expected)) + 1e-14
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------
# I(z_m) is the derivative of refits
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_params_equal_central_differences_of_refits(spec):
    X, y, w, _, _ = spec.data(zero_weight=True)
    model = spec.fit(X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    I = inf.params()
    h = 1e-4

    def R(m, eps):
        return flat(spec.fit(X, y, with_weight(w, spec.n, m, eps)))

    for m in (0, 7, spec.n - 1):
        fd = (R(m, h) - R(m, -h)) / (2 * h)
        assert_close(I[m], fd, 1e-7, 1e-8)
    # the zero-weight point: only eps >= 0 is allowed; second-order one-sided difference
    theta = flat(model)
    fd = (-3 * theta + 4 * R(ZERO, h) - R(ZERO, 2 * h)) / (2 * h)
    assert_close(I[ZERO], fd, 1e-7, 1e-8)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_on_prediction_equals_differences_of_refit_predictions(spec):
    X, y, w, Xt, _ = spec.data()
    model = spec.fit(X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    P_mean = inf.on_prediction(Xt, kind="mean")
    P_lin = inf.on_prediction(Xt, kind="linear")
    q = Xt.shape[0]
    assert P_mean.shape == P_lin.shape == ((q, spec.k, spec.n) if spec.k > 1 else (q, spec.n))

    def mean(m):
        if spec.family == "multinomial":
            return m.predict_proba(Xt)  # (q, k)
        if spec.family == "logistic":
            return m.predict_proba(Xt)[:, 1]
        return m.predict(Xt)

    h = 1e-4
    for m in (1, 11, spec.n - 2):
        up = spec.fit(X, y, with_weight(w, spec.n, m, h))
        dn = spec.fit(X, y, with_weight(w, spec.n, m, -h))
        assert_close(P_mean[..., m], (mean(up) - mean(dn)) / (2 * h), 1e-7, 1e-8)
        # linear predictors (for multinomial these depend on the pinning of the free intercepts,
        # which the refits share with the influence)
        assert_close(P_lin[..., m], (up.decision_function(Xt) - dn.decision_function(Xt)) / (2 * h), 1e-7, 1e-8)
    if spec.family == "multinomial":
        # probabilities sum to one, so their influences sum to zero over classes
        np.testing.assert_allclose(P_mean.sum(axis=1), 0.0, atol=1e-12 * np.max(np.abs(P_mean)))


# ---------------------------------------------------------------------------------------
# duplicates, order, zero weights
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_duplicated_point_equals_weight_two(spec):
    """Adding eps to the weight of ONE copy of a duplicated point is adding eps to the weight of
    the single point of doubled weight: same theta, same influence rows."""
    X, y, w, Xt, yt = spec.data()
    m = 3
    w2 = w.copy()
    w2[m] *= 2.0
    Xd, yd, wd = np.vstack([X, X[m : m + 1]]), np.append(y, y[m]), np.append(w, w[m])
    model2, modeld = spec.fit(X, y, w2), spec.fit(Xd, yd, wd)
    assert_close(modeld.theta_, model2.theta_, 1e-10)
    inf2 = uw.Influence(model2, X, y, sample_weight=w2)
    infd = uw.Influence(modeld, Xd, yd, sample_weight=wd)
    np.testing.assert_allclose(infd.total_weight, inf2.total_weight, rtol=1e-14)
    I2, Id = inf2.params(), infd.params()
    assert_close(Id[: spec.n], I2, 1e-8)
    assert_close(Id[spec.n], I2[m], 1e-8)  # the second copy
    assert_close(Id[spec.n], Id[m], 1e-12)  # the two copies
    S2, Sd = inf2.on_loss(Xt, yt), infd.on_loss(Xt, yt)
    assert_close(Sd, np.column_stack([S2, S2[:, m]]), 1e-8)
    assert_close(infd.self_influence(), np.append(inf2.self_influence(), inf2.self_influence()[m]), 1e-8)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_row_order_does_not_matter(spec):
    X, y, w, Xt, yt = spec.data(zero_weight=True)
    perm = np.random.default_rng(99).permutation(spec.n)
    model, model_p = spec.fit(X, y, w), spec.fit(X[perm], y[perm], w[perm])
    assert_close(model_p.theta_, model.theta_, 1e-10)
    inf = uw.Influence(model, X, y, sample_weight=w)
    inf_p = uw.Influence(model_p, X[perm], y[perm], sample_weight=w[perm])
    assert_close(inf_p.params(), inf.params()[perm], 1e-8)
    assert_close(inf_p.on_loss(Xt, yt), inf.on_loss(Xt, yt)[:, perm], 1e-8)
    assert_close(inf_p.on_prediction(Xt), inf.on_prediction(Xt)[..., perm], 1e-8)
    assert_close(inf_p.self_influence(), inf.self_influence()[perm], 1e-8)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_zero_weight_point_is_a_new_point(spec):
    X, y, w, Xt, yt = spec.data(zero_weight=True)
    model = spec.fit(X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    I = inf.params()
    # kept in the set with weight zero
    assert_close(inf.new_point(X[ZERO], y[ZERO]), I[ZERO], 1e-12)
    # removed from the set: same fit, same influence of every remaining point
    keep = np.arange(spec.n) != ZERO
    model_r = spec.fit(X[keep], y[keep], w[keep])
    assert_close(model_r.theta_, model.theta_, 1e-10)
    inf_r = uw.Influence(model_r, X[keep], y[keep], sample_weight=w[keep])
    assert_close(inf_r.new_point(X[ZERO], y[ZERO]), I[ZERO], 1e-8)
    assert_close(inf_r.new_point(X[[ZERO, 0]], y[[ZERO, 0]]), I[[ZERO, 0]], 1e-8)
    assert_close(inf_r.params(), I[keep], 1e-8)
    # scores of the new point on test losses
    Gt = _core.Model.glm(spec.family, spec.k, _n_features(Xt)).per_example_grads(flat(model), Xt, yt)
    assert_close(inf.on_loss(Xt, yt)[:, ZERO], Gt @ inf_r.new_point(X[ZERO], y[ZERO]), 1e-8)


# ---------------------------------------------------------------------------------------
# what the numbers predict: small reweightings, leave-one-out, self-influence
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_test_loss_change_is_first_order_in_eps(spec):
    X, y, w, Xt, yt = spec.data()
    model = spec.fit(X, y, w)
    S = uw.Influence(model, X, y, sample_weight=w).on_loss(Xt, yt)
    base = model.loss(Xt, yt)
    for m in (2, 17):
        def err(eps):
            refit = spec.fit(X, y, with_weight(w, spec.n, m, eps))
            return np.max(np.abs(refit.loss(Xt, yt) - base - eps * S[:, m]))

        scale = np.max(np.abs(S[:, m]))
        for eps in (1e-3, -1e-3):
            e1, e2 = err(eps), err(eps / 10)
            assert e1 <= 1e-2 * abs(eps) * scale + 1e-13  # first order holds
            assert e2 <= e1 / 20 + 1e-13  # and the remainder is second order


LOO_SPECS = [
    Spec("squared", 0.0, n=3000),
    Spec("logistic", 0.0, n=3000, signal=0.5),
    Spec("poisson", 0.0, n=3000),
    Spec("multinomial", 0.0, n=3000, k=3, signal=0.5),
    Spec("multinomial", 1e-3, n=3000, k=3, signal=0.5),
]


@pytest.mark.parametrize("spec", LOO_SPECS, ids=[f"{s.family}-l2={s.l2}" for s in LOO_SPECS])
def test_leave_one_out_moves_theta_by_minus_influence(spec):
    X, y, _, Xt, yt = spec.data(weighted=False)
    model = spec.fit(X, y)
    inf = uw.Influence(model, X, y)
    I = inf.params()
    S = inf.on_loss(Xt, yt)
    norms = np.linalg.norm(I, axis=1)
    for m in (0, int(np.argmax(norms)), int(np.argsort(norms)[len(norms) // 2])):
        keep = np.arange(spec.n) != m
        loo = spec.fit(X[keep], y[keep])
        delta = flat(loo) - flat(model)
        assert np.linalg.norm(delta + I[m]) <= 0.02 * np.linalg.norm(I[m])
        # leaving the point out is setting its weight to zero (eps = -1)
        w0 = with_weight(None, spec.n, m, -1.0)
        assert_close(flat(spec.fit(X, y, w0)), flat(loo), 1e-9)
        # and the test losses change by about -S[:, m]
        dl = loo.loss(Xt, yt) - model.loss(Xt, yt)
        assert np.max(np.abs(dl + S[:, m])) <= 0.02 * np.max(np.abs(S[:, m])) + 1e-12


@pytest.mark.parametrize("spec", UNPENALISED, ids=[f"{s.family}-k={s.k}" for s in UNPENALISED])
def test_self_influence_is_negative_without_penalty(spec):
    X, y, w, _, _ = spec.data()
    model = spec.fit(X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    s = inf.self_influence()
    assert s.shape == (spec.n,)
    assert np.all(s < 0)
    # it is grad l(z_m) . I(z_m)
    G = _core.Model.glm(spec.family, spec.k, _n_features(X)).per_example_grads(flat(model), X, y)
    assert_close(s, np.sum(G * inf.params(), axis=1), 1e-10)


# ---------------------------------------------------------------------------------------
# `on`, `on_loss` and `on_prediction` agree
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_on_with_test_loss_gradient_is_on_loss(spec):
    X, y, w, Xt, yt = spec.data(zero_weight=True)
    model = spec.fit(X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    G = _core.Model.glm(spec.family, spec.k, _n_features(Xt)).per_example_grads(flat(model), Xt, yt)
    S = inf.on_loss(Xt, yt)
    assert S.shape == (len(yt), spec.n)
    assert_close(inf.on(G), S, 1e-12)
    for t in range(len(yt)):
        on_t = inf.on(G[t])
        assert on_t.shape == (spec.n,)
        assert_close(on_t, S[t], 1e-12)
    assert_close(S, G @ inf.params().T, 1e-10)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_on_prediction_is_on_with_prediction_gradient(spec):
    X, y, w, Xt, _ = spec.data()
    model = spec.fit(X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    Z = np.column_stack([Xt, np.ones(len(Xt))])
    lin = inf.on_prediction(Xt, kind="linear")
    mean = inf.on_prediction(Xt, kind="mean")
    if spec.k == 1:
        # grad of eta = x . coef + b is z = [x, 1]
        assert_close(lin, inf.on(Z), 1e-12)
        eta = model.decision_function(Xt)
        dmu = {"squared": np.ones_like(eta), "logistic": None, "poisson": np.exp(eta)}[spec.family]
        if dmu is None:
            s = 1 / (1 + np.exp(-eta))
            dmu = s * (1 - s)
        assert_close(mean, inf.on(dmu[:, None] * Z), 1e-12)
        assert_close(mean, dmu[:, None] * lin, 1e-12)
    else:
        k, r = spec.k, spec.d + 1
        I = inf.params()
        P = model.predict_proba(Xt)
        for t in range(len(Xt)):
            for c in range(k):
                g = np.zeros(k * r)
                g[c * r : (c + 1) * r] = Z[t]
                assert_close(lin[t, c], inf.on(g), 1e-12)
                assert_close(lin[t, c], I @ g, 1e-10)
            # d p / d eta = diag(p) - p p^T
            J = np.diag(P[t]) - np.outer(P[t], P[t])
            assert_close(mean[t], J @ lin[t], 1e-10)


# ---------------------------------------------------------------------------------------
# the same derivative check on random problems
# ---------------------------------------------------------------------------------------

@st.composite
def random_specs(draw):
    family = draw(st.sampled_from(("squared", "logistic", "poisson", "multinomial")))
    d = draw(st.integers(1, 4))
    k = draw(st.integers(3, 4)) if family == "multinomial" else 1
    l2 = draw(st.sampled_from([1e-3, 0.1, 1.0]) if family != "squared" else st.sampled_from([0.0, 1e-3, 0.1, 1.0]))
    n = draw(st.integers(max(d + 4, 2 * k), 40))
    return Spec(family, l2, n=n, d=d, k=k, signal=draw(st.sampled_from([0.3, 0.7, 1.5])), seed=draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=max(1, int(40 * SCALE)), deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=random_specs(), m_frac=st.floats(0.0, 0.999), weighted=st.booleans())
def test_params_equal_central_differences_random(spec, m_frac, weighted):
    X, y, w, _, _ = spec.data(weighted=weighted)
    m = int(m_frac * spec.n)
    model = spec.fit(X, y, w)
    I = uw.Influence(model, X, y, sample_weight=w).params(idx=[m])[0]
    h = 1e-4
    up = flat(spec.fit(X, y, with_weight(w, spec.n, m, h)))
    dn = flat(spec.fit(X, y, with_weight(w, spec.n, m, -h)))
    assert_close(I, (up - dn) / (2 * h), 1e-6, 1e-7)
