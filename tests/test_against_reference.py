"""Property tests: the Rust core (through ``upweight._core`` and the public API) against the
plain NumPy reference ``upweight.reference`` (DESIGN.md sections 1-2), on random problems.

Every problem is described by a small, readable :class:`Case` (family, n, d, k, l2, seed, weight
pattern, dtype) from which the arrays are built with ``numpy.random.default_rng(seed)``; a failing
example therefore shrinks to a short, reproducible description.

Problems are well posed by construction:

* squared loss with ``l2 == 0`` has at least d + 4 points of positive weight (n comfortably > p);
  with ``l2 > 0`` any n >= 1 is allowed (including n < p);
* logistic, Poisson and multinomial use ``l2`` in [1e-3, 1] (a few ``l2 == 0`` cases on large,
  heavily overlapping data are tested separately);
* every class (logistic, multinomial) and at least one positive count (Poisson) has a point of
  positive weight, so the unpenalised intercepts have a finite optimum;
* some weights may be zero, never all.

``X`` may be float32: fits, solves and parameter influences are computed in float64 and must equal
*exactly* the result for ``X.astype(np.float64)``, which is what the reference is given; score
matrices over float32 training rows are computed and returned in float32 and must agree within
the worst-case rounding bound of a float32 dot product (``float32_bound``).

The default run draws 20-100 examples per test (a few seconds); ``UPWEIGHT_TEST_SCALE=25``
multiplies every count for a long soak run.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import upweight as uw
from upweight import _core
from upweight import reference as ref

pytestmark = [
    pytest.mark.filterwarnings("error::upweight.ConvergenceWarning"),
    pytest.mark.filterwarnings("error::upweight.NotAtOptimumWarning"),
]

SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

#: multiply every test's number of examples (e.g. UPWEIGHT_TEST_SCALE=20 for a long soak run)
SCALE = float(os.environ.get("UPWEIGHT_TEST_SCALE", "1"))


def glm(case, X) -> _core.Model:
    """The core's model of ``case``'s family for the features ``X``."""
    return _core.Model.glm(case.family, case.k, X.shape[1])


def examples(n: int) -> int:
    return max(1, int(n * SCALE))

FAMILIES = ("squared", "logistic", "poisson", "multinomial")
WEIGHTS = ("none", "ones", "random", "random_with_zeros")

# tolerances: elementwise kernels (losses, gradients) are a few flops per entry; sums over the
# data (objective, Hessian) differ in summation order; solves lose up to cond(H) * eps.
TIGHT = dict(rtol=1e-12, atol=1e-13)
SUM = dict(rtol=1e-11)
FIT_RTOL = 1e-6
SOLVE_RTOL = 1e-7


# ---------------------------------------------------------------------------------------
# problems
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    family: str
    n: int
    d: int
    k: int  # classes (multinomial), 1 otherwise
    l2: float
    seed: int
    weights: str  # one of WEIGHTS
    f32: bool  # X (and X_test) passed as float32
    explicit_k: bool = False  # multinomial: pass n_classes=k to LogisticRegression

    # -- arrays --------------------------------------------------------------------------
    def anchors(self) -> int:
        """Leading rows (before shuffling) that always keep a positive weight."""
        if self.family == "squared":
            return self.d + 4 if self.l2 == 0.0 else 0
        if self.family == "logistic":
            return 2
        if self.family == "poisson":
            return 1
        return self.k

    def build(self):
        """(X, y, w, X_test, y_test); X and X_test are float32 when ``f32``."""
        rng = np.random.default_rng(self.seed)
        n, d, k = self.n, self.d, self.k
        X = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(scale=0.5, size=d)
        a = self.anchors()
        if self.family == "squared":
            y = X @ rng.normal(size=d) + rng.normal() + rng.normal(size=n)
        elif self.family == "logistic":
            eta = 0.8 * X @ rng.normal(size=d) / np.sqrt(d) + 0.3 * rng.normal()
            y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
            y[:2] = [0.0, 1.0]
        elif self.family == "poisson":
            y = rng.poisson(np.exp(0.3 * X @ rng.normal(size=d) / np.sqrt(d) + 0.2)).astype(float)
            y[0] = max(y[0], 1.0)
        else:
            eta = 0.8 * X @ rng.normal(size=(d, k)) / np.sqrt(d)
            P = np.exp(eta - eta.max(axis=1, keepdims=True))
            P /= P.sum(axis=1, keepdims=True)
            y = (P.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1).clip(0, k - 1).astype(float)
            y[:k] = np.arange(k)
        if self.weights == "none":
            w = None
        elif self.weights == "ones":
            w = np.ones(n)
        else:
            w = rng.uniform(0.25, 3.0, size=n)
            if self.weights == "random_with_zeros":
                zero = rng.random(n) < 0.35
                zero[:a] = False
                if a == 0 and zero.all():
                    zero[0] = False
                w[zero] = 0.0
        perm = rng.permutation(n)
        X, y = X[perm], y[perm]
        if w is not None:
            w = w[perm]
        q = int(rng.integers(1, 5))
        Xt = rng.normal(size=(q, d)) * 1.2
        if self.family == "squared":
            yt = rng.normal(size=q) * 2.0
        elif self.family == "logistic":
            yt = rng.integers(0, 2, size=q).astype(float)
        elif self.family == "poisson":
            yt = rng.poisson(1.5, size=q).astype(float)
        else:
            yt = rng.integers(0, k, size=q).astype(float)
        if self.f32:
            X, Xt = X.astype(np.float32), Xt.astype(np.float32)
        return X, y, w, Xt, yt

    # -- estimators -----------------------------------------------------------------------
    def estimator(self, **kw):
        if self.family == "squared":
            return uw.LinearRegression(l2=self.l2, **kw)
        if self.family == "poisson":
            return uw.PoissonRegression(l2=self.l2, **kw)
        if self.family == "multinomial" and self.explicit_k:
            return uw.LogisticRegression(l2=self.l2, n_classes=self.k, **kw)
        return uw.LogisticRegression(l2=self.l2, **kw)

    @property
    def p(self) -> int:
        return self.k * (self.d + 1)


@st.composite
def cases(draw, families=FAMILIES, max_n=30, max_d=6):
    family = draw(st.sampled_from(families))
    d = draw(st.integers(1, max_d))
    k = draw(st.integers(3, 4)) if family == "multinomial" else 1
    if family == "squared":
        l2 = draw(st.sampled_from([0.0, 1e-3, 0.1, 1.0]) | st.floats(1e-3, 1.0))
    else:
        l2 = draw(st.sampled_from([1e-3, 0.1, 1.0]) | st.floats(1e-3, 1.0))
    min_n = {"squared": d + 4 if l2 == 0.0 else 1, "logistic": 2, "poisson": 1, "multinomial": k}[family]
    n = draw(st.integers(min_n, max(min_n, max_n) + (d + 4 if family == "squared" and l2 == 0.0 else 0)))
    return Case(
        family=family,
        n=n,
        d=d,
        k=k,
        l2=l2,
        seed=draw(st.integers(0, 2**32 - 1)),
        weights=draw(st.sampled_from(WEIGHTS)),
        f32=draw(st.booleans()),
        explicit_k=draw(st.booleans()) if family == "multinomial" else False,
    )


@st.composite
def large_cases(draw):
    """More rows than one block of the core's streaming kernels (512 rows), so that block
    boundaries and the combination of partial sums are exercised; l2 may be 0 for every
    family (n >> p and weak signal: not separable)."""
    family = draw(st.sampled_from(FAMILIES))
    d = draw(st.integers(1, 3))
    k = draw(st.integers(3, 4)) if family == "multinomial" else 1
    return Case(
        family=family,
        n=draw(st.integers(500, 1600)),
        d=d,
        k=k,
        l2=draw(st.sampled_from([0.0, 1e-3, 0.1])),
        seed=draw(st.integers(0, 2**32 - 1)),
        weights=draw(st.sampled_from(WEIGHTS)),
        f32=draw(st.booleans()),
    )


@st.composite
def unpenalised_cases(draw):
    """l2 == 0 for logistic, Poisson and multinomial: many points, weak signal (heavily
    overlapping classes), so the data are not separable and the optimum is unique (up to the
    multinomial's flat directions)."""
    family = draw(st.sampled_from(("logistic", "poisson", "multinomial")))
    d = draw(st.integers(1, 3))
    k = draw(st.integers(3, 4)) if family == "multinomial" else 1
    return Case(
        family=family,
        n=draw(st.integers(60, 120)),
        d=d,
        k=k,
        l2=0.0,
        seed=draw(st.integers(0, 2**32 - 1)),
        weights=draw(st.sampled_from(("none", "random"))),
        f32=draw(st.booleans()),
    )


def f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def random_theta(case: Case, rng) -> np.ndarray:
    return 0.5 * rng.normal(size=case.p)


def fit(case: Case, X, y, w):
    return case.estimator(tol=1e-12).fit(X, y, sample_weight=w)


def scale_atol(a, rel=1e-9):
    """An absolute tolerance relative to the size of the expected array, with a floor at
    rounding level (an influence that is 0 in exact arithmetic, e.g. when a ridge fit
    interpolates a single point, is pure rounding noise in both implementations)."""
    a = np.asarray(a)
    return rel * (np.max(np.abs(a)) if a.size else 0.0) + 1e-14


def float32_bound(theta, X, y, family, w, l2, F):
    """Worst-case error of float32 scores S[t, m] = -(g_m . v_t + c . v_t) / W computed as one
    float32 dot product of length p + 1 (after rounding g_m and v_t to float32): the classic
    bound gamma_(p+1) sum |terms| plus the two roundings, with u = 2^-24."""
    _, th, H, W, c = ref._influence_setup(theta, X, y, family, w, l2)
    F = np.atleast_2d(F)
    V = ref._solve(H, F.T, family)
    G = ref.per_example_grads(th, X, y, family)
    p = V.shape[0]
    terms = (np.abs(G) @ np.abs(V) + np.abs(c @ V)).T / W  # (r, n)
    return (p + 4) * 2.0**-24 * terms


def assert_scores_close(actual, expected, rtol, bound=None):
    """Score matrices: as :func:`assert_close` for float64 training rows; for float32 rows the
    result must be float32 and within ``bound`` (:func:`float32_bound`) of the float64 value."""
    if bound is None:
        return assert_close(actual, expected, rtol)
    assert actual.dtype == np.float32
    bound = bound + scale_atol(expected, rtol) if rtol else bound  # plus the float64 solve's tolerance
    err = np.abs(actual.astype(np.float64) - np.asarray(expected))
    worst = np.unravel_index(np.argmax(err - bound.reshape(err.shape)), err.shape)
    assert np.all(err <= bound.reshape(err.shape) + 1e-300), \
        f"float32 score {worst}: error {err[worst]:.3g} > bound {bound.reshape(err.shape)[worst]:.3g}"


def assert_close(actual, expected, rtol, rel_atol=None):
    expected = np.asarray(expected)
    atol = scale_atol(expected, rtol if rel_atol is None else rel_atol)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def mean_jacobian(theta, X, family):
    """d mean_response / d theta (flattened), from the reference's mean_response: rows t*k + c
    for multinomial (class c at point t), one row per point otherwise."""
    Z = ref.design(X)
    mu = ref.mean_response(theta, X, family)
    if family == "squared":
        return Z.copy()
    if family == "logistic":
        return (mu * (1 - mu))[:, None] * Z
    if family == "poisson":
        return mu[:, None] * Z
    q, k = mu.shape
    J = mu[:, :, None] * np.eye(k)[None] - mu[:, :, None] * mu[:, None, :]  # (q, k, k)
    return np.einsum("tab,tj->tabj", J, Z).reshape(q * k, k * Z.shape[1])


def linear_jacobian(X, family, k):
    Z = ref.design(X)
    if family != "multinomial":
        return Z
    q = Z.shape[0]
    return np.einsum("ab,tj->tabj", np.eye(k), Z).reshape(q * k, k * Z.shape[1])


# ---------------------------------------------------------------------------------------
# the model: losses, gradients, objective, Hessian, HVP at arbitrary theta
# ---------------------------------------------------------------------------------------


@settings(max_examples=examples(100), **SETTINGS)
@given(case=cases())
def test_losses_and_per_example_grads(case):
    X, y, w, Xt, yt = case.build()
    X = f64(X)
    theta = random_theta(case, np.random.default_rng(case.seed + 1))
    for A, b in ((X, y), (f64(Xt), yt)):
        np.testing.assert_allclose(glm(case, A).losses(theta, A, b), ref.losses(theta, A, b, case.family), **TIGHT)
        G = glm(case, A).per_example_grads(theta, A, b)
        assert G.shape == (A.shape[0], case.p)
        np.testing.assert_allclose(G, ref.per_example_grads(theta, A, b, case.family), **TIGHT)
    # predictions: linear predictor and mean response, and their gradients in theta
    eta = glm(case, X).predict(theta, X, "linear")
    np.testing.assert_allclose(eta, ref.linear_predictor(theta, X, case.family).reshape(case.n, case.k), **TIGHT)
    mu = glm(case, X).predict(theta, X, "mean")
    np.testing.assert_allclose(mu, ref.mean_response(theta, X, case.family).reshape(case.n, case.k), **TIGHT)
    np.testing.assert_allclose(
        glm(case, X).prediction_grads(theta, X, "mean"), mean_jacobian(theta, X, case.family), **TIGHT
    )
    np.testing.assert_array_equal(
        glm(case, X).prediction_grads(theta, X, "linear"), linear_jacobian(X, case.family, case.k)
    )


@settings(max_examples=examples(100), **SETTINGS)
@given(case=cases())
def test_objective_value_and_gradient(case):
    X, y, w, _, _ = case.build()
    X = f64(X)
    theta = random_theta(case, np.random.default_rng(case.seed + 2))
    value, grad = glm(case, X).objective(theta, X, y, w, case.l2)
    np.testing.assert_allclose(value, ref.objective(theta, X, y, case.family, w, case.l2), **SUM)
    expected = ref.gradient(theta, X, y, case.family, w, case.l2)
    assert_close(grad, expected, 1e-11)


@settings(max_examples=examples(100), **SETTINGS)
@given(case=cases())
def test_hessian(case):
    X, y, w, _, _ = case.build()
    X = f64(X)
    theta = random_theta(case, np.random.default_rng(case.seed + 3))
    H = glm(case, X).hessian(theta, X, y, w, case.l2)
    assert H.shape == (case.p, case.p)
    np.testing.assert_array_equal(H, H.T)
    assert_close(H, ref.hessian(theta, X, y, case.family, w, case.l2), 1e-11)


@settings(max_examples=examples(100), **SETTINGS)
@given(case=cases(), r=st.integers(1, 5))
def test_hvp_block(case, r):
    X, y, w, _, _ = case.build()
    X = f64(X)
    rng = np.random.default_rng(case.seed + 4)
    theta = random_theta(case, rng)
    V = rng.normal(size=(case.p, r))
    HV = glm(case, X).hvp(theta, X, y, w, case.l2, V)
    assert HV.shape == (case.p, r)
    assert_close(HV, ref.hvp(theta, X, y, case.family, V, w, case.l2), 1e-11)
    # and against the Rust core's own explicit Hessian
    H = glm(case, X).hessian(theta, X, y, w, case.l2)
    assert_close(HV, H @ V, 1e-11)


# ---------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------


def check_fit(case, model, X, y, w):
    theta_ref = ref.fit(f64(X), y, case.family, w=w, l2=case.l2, n_classes=case.k if case.k > 1 else None, tol=1e-12)
    shape = (case.k, case.d + 1) if case.family == "multinomial" else (case.d + 1,)
    assert model.family == case.family
    assert model.theta_.shape == shape
    assert model.converged_
    assert model.grad_norm_ <= 1e-9
    assert model.n_iter_ >= 0
    assert_close(model.theta_, theta_ref, FIT_RTOL)
    # layout: theta_ = [coef..., intercept] (one row per class)
    np.testing.assert_array_equal(model.theta_[..., :-1], model.coef_)
    np.testing.assert_array_equal(model.theta_[..., -1], model.intercept_)
    # the reported objective and gradient norm are those of the returned theta
    # (atol: a fit that interpolates has an objective of ~1e-30, rounding noise in both)
    np.testing.assert_allclose(
        model.objective_, ref.objective(model.theta_, f64(X), y, case.family, w, case.l2), rtol=1e-11, atol=1e-20
    )
    g = ref.gradient(model.theta_, f64(X), y, case.family, w, case.l2)
    assert np.max(np.abs(g)) <= 1e-8
    if case.family == "multinomial":
        # pinned: intercepts (and with l2 == 0 whole rows) sum to zero over classes
        assert abs(model.theta_[:, -1].sum()) <= 1e-10 * max(1.0, np.max(np.abs(model.theta_)))
        if case.l2 == 0.0:
            np.testing.assert_allclose(model.theta_.sum(axis=0), 0.0, atol=1e-10 * max(1.0, np.max(np.abs(model.theta_))))


@settings(max_examples=examples(100), **SETTINGS)
@given(case=cases())
# a ridge fit that interpolates (objective ~5e-30): once failed a relative-only tolerance
@example(case=Case(family="squared", n=2, d=3, k=1, l2=0.001, seed=1, weights="random_with_zeros", f32=False))
def test_fit_matches_reference(case):
    X, y, w, _, _ = case.build()
    model = fit(case, X, y, w)
    check_fit(case, model, X, y, w)
    # predictions and per-example losses of the fitted model
    assert_close(model.decision_function(X), ref.linear_predictor(model.theta_, f64(X), case.family), 1e-12)
    assert_close(model.loss(X, y), ref.losses(model.theta_, f64(X), y, case.family), 1e-12)
    mu = ref.mean_response(model.theta_, f64(X), case.family)
    if case.family == "logistic":
        assert_close(model.predict_proba(X), np.column_stack([1 - mu, mu]), 1e-12)
    elif case.family == "multinomial":
        assert_close(model.predict_proba(X), mu, 1e-12)
    else:
        assert_close(model.predict(X), mu, 1e-12)


@settings(max_examples=examples(25), **SETTINGS)
@given(case=unpenalised_cases())
def test_fit_matches_reference_unpenalised(case):
    X, y, w, _, _ = case.build()
    check_fit(case, fit(case, X, y, w), X, y, w)


def test_fit_tolerance_is_on_the_gradient_norm_like_the_reference():
    """``tol`` bounds max |grad L_w| at the returned theta, as in ``reference.fit`` and as the
    estimators document it ("Warns with ConvergenceWarning if ``tol`` was not reached";
    the warning says "gradient norm ... > tol"): ``converged_`` must mean ``grad_norm_ <= tol``.

    A regression test: the core once stopped at ``tol * max(1, max|grad at theta = 0|)``, a
    relative criterion, so with a large initial gradient (counts ~ e^8 here) it reported
    ``converged_ = True`` at a gradient norm far above ``tol``. It now stops on the absolute
    criterion (rust/fit.rs).
    """
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    y = rng.poisson(np.exp(8 + 0.5 * X[:, 0])).astype(float)
    for tol in (1e-3, 1e-8):
        theta_ref = ref.fit(X, y, "poisson", tol=tol)
        assert np.max(np.abs(ref.gradient(theta_ref, X, y, "poisson"))) <= tol
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = uw.PoissonRegression(tol=tol).fit(X, y)
        warned = any(issubclass(c.category, uw.ConvergenceWarning) for c in caught)
        assert warned == (not model.converged_)
        assert model.converged_ == (model.grad_norm_ <= tol), (
            f"tol={tol:g}: converged_={model.converged_} but grad_norm_={model.grad_norm_:.3g}"
        )


# ---------------------------------------------------------------------------------------
# influence
# ---------------------------------------------------------------------------------------


def fitted(case):
    X, y, w, Xt, yt = case.build()
    model = fit(case, X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    theta = model.theta_.reshape(-1)
    return model, inf, theta, (X, y, w, Xt, yt)


def check_influence(case):
    """params, on_loss, on_prediction, on, self_influence and new_point against the reference,
    both evaluated at the library's fitted theta."""
    model, inf, theta, (X, y, w, Xt, yt) = fitted(case)
    X64, Xt64, fam, l2 = f64(X), f64(Xt), case.family, case.l2
    W = float(np.sum(w)) if w is not None else float(case.n)
    np.testing.assert_allclose(inf.total_weight, W, rtol=1e-14)
    assert inf.n_params == case.p and inf.n_samples == case.n

    # I(z_m) for every training point, and for a subset of rows
    I_ref = ref.influence_params(theta, X64, y, fam, w, l2)
    I = inf.params()
    assert I.shape == (case.n, case.p)
    assert_close(I, I_ref, SOLVE_RTOL)
    idx = np.random.default_rng(case.seed + 5).integers(0, case.n, size=3)
    # (equal up to rounding: the core solves a different number of right-hand sides at once)
    assert_close(inf.params(idx=idx), I[idx], 1e-12)
    assert_close(inf.params(idx=list(idx)), I[idx], 1e-12)

    # score matrix on test losses
    S_ref = ref.influence_on_loss(theta, X64, y, fam, Xt64, yt, w, l2)
    S = inf.on_loss(Xt, yt)
    assert S.shape == (len(yt), case.n)
    f32b = (lambda F: float32_bound(theta, X64, y, fam, w, l2, F)) if case.f32 else (lambda F: None)
    assert_scores_close(S, S_ref, SOLVE_RTOL, f32b(ref.per_example_grads(theta, Xt64, yt, fam)))

    # influence on predictions: gradients built from the reference's mean response
    q = Xt.shape[0]
    for kind, J in (("mean", mean_jacobian(theta, Xt64, fam)), ("linear", linear_jacobian(Xt64, fam, case.k))):
        P_ref = ref.influence_on(theta, X64, y, fam, J, w, l2)  # (q k, n)
        P = inf.on_prediction(Xt, kind=kind)
        if fam == "multinomial":
            assert P.shape == (q, case.k, case.n)
            P_ref = P_ref.reshape(q, case.k, case.n)
        else:
            assert P.shape == (q, case.n)
        assert_scores_close(P, P_ref, SOLVE_RTOL, f32b(J))
        assert_scores_close(P.reshape(q * case.k, case.n), J @ I_ref.T, SOLVE_RTOL, f32b(J))

    # arbitrary functions: one gradient (p,) -> (n,), a block (r, p) -> (r, n)
    rng = np.random.default_rng(case.seed + 6)
    F = rng.normal(size=(3, case.p))
    assert_scores_close(inf.on(F), ref.influence_on(theta, X64, y, fam, F, w, l2), SOLVE_RTOL, f32b(F))
    f1 = inf.on(F[1])
    assert f1.shape == (case.n,)
    assert_scores_close(f1, ref.influence_on(theta, X64, y, fam, F[1], w, l2), SOLVE_RTOL, f32b(F[1]))

    # self-influence
    s_ref = ref.self_influence(theta, X64, y, fam, w, l2)
    s = inf.self_influence()
    assert s.shape == (case.n,)
    assert_close(s, s_ref, SOLVE_RTOL)
    if l2 == 0.0:
        assert np.all(s <= scale_atol(s_ref, 1e-12))

    # new points (a single x, y and a batch)
    for t in range(q):
        N_ref = ref.influence_new_point(theta, X64, y, fam, Xt64[t], yt[t], w, l2)
        assert_close(inf.new_point(Xt[t], yt[t]), N_ref, SOLVE_RTOL)
    Nb = inf.new_point(Xt, yt)
    assert Nb.shape == (q, case.p)
    assert_close(Nb, np.stack([ref.influence_new_point(theta, X64, y, fam, Xt64[t], yt[t], w, l2) for t in range(q)]), SOLVE_RTOL)


@settings(max_examples=examples(100), **SETTINGS)
@given(case=cases())
def test_influence_matches_reference(case):
    check_influence(case)


@settings(max_examples=examples(25), **SETTINGS)
@given(case=unpenalised_cases())
def test_influence_matches_reference_unpenalised(case):
    check_influence(case)


@settings(max_examples=examples(20), **SETTINGS)
@given(case=large_cases())
def test_fit_and_influence_across_row_blocks(case):
    X, y, w, _, _ = case.build()
    check_fit(case, fit(case, X, y, w), X, y, w)
    check_influence(case)


@pytest.mark.parametrize("family", FAMILIES)
def test_many_row_blocks(family):
    """n above 64 blocks of 512 rows: the core then groups blocks into at most 64 partial sums
    (objective, gradient, HVP); everything must still match the reference."""
    case = Case(family=family, n=64 * 512 + 301, d=2, k=3 if family == "multinomial" else 1, l2=0.01,
                seed=11, weights="random_with_zeros", f32=False)
    X, y, w, _, _ = case.build()
    theta = random_theta(case, np.random.default_rng(12))
    value, grad = glm(case, X).objective(theta, X, y, w, case.l2)
    np.testing.assert_allclose(value, ref.objective(theta, X, y, family, w, case.l2), rtol=1e-10)
    assert_close(grad, ref.gradient(theta, X, y, family, w, case.l2), 1e-10)
    assert_close(glm(case, X).hessian(theta, X, y, w, case.l2), ref.hessian(theta, X, y, family, w, case.l2), 1e-10)
    V = np.random.default_rng(13).normal(size=(case.p, 3))
    assert_close(glm(case, X).hvp(theta, X, y, w, case.l2, V), ref.hvp(theta, X, y, family, V, w, case.l2), 1e-10)
    model = fit(case, X, y, w)
    check_fit(case, model, X, y, w)
    inf = uw.Influence(model, X, y, sample_weight=w)
    rows = np.r_[0:3, 511:514, case.n - 3:case.n]
    t = model.theta_.reshape(-1)
    assert_close(inf.params(idx=rows), ref.influence_params(t, X, y, family, w, case.l2, idx=rows), SOLVE_RTOL)
    assert_close(inf.self_influence(), ref.self_influence(t, X, y, family, w, case.l2), SOLVE_RTOL)


# ---------------------------------------------------------------------------------------
# float32 input: fits, solves and parameters equal those of the float64 copy exactly; score
# matrices are float32 (computed in float32) and agree to float32 accuracy
# ---------------------------------------------------------------------------------------


@settings(max_examples=examples(30), **SETTINGS)
@given(case=cases())
def test_float32_input_equals_float64_copy_exactly(case):
    case = dataclasses.replace(case, f32=True)
    X32, y, w, Xt32, yt = case.build()
    assert X32.dtype == np.float32 and Xt32.dtype == np.float32
    X64, Xt64 = X32.astype(np.float64), Xt32.astype(np.float64)
    m32, m64 = fit(case, X32, y, w), fit(case, X64, y, w)
    np.testing.assert_array_equal(m32.theta_, m64.theta_)
    assert m32.n_iter_ == m64.n_iter_
    np.testing.assert_array_equal(m32.decision_function(Xt32), m64.decision_function(Xt64))
    np.testing.assert_array_equal(m32.loss(Xt32, yt), m64.loss(Xt64, yt))
    i32 = uw.Influence(m32, X32, y, sample_weight=w)
    i64 = uw.Influence(m64, X64, y, sample_weight=w)
    np.testing.assert_array_equal(i32.params(), i64.params())
    S64 = i64.on_loss(Xt64, yt)
    th, fam = m64.get_theta(), case.family
    bound = float32_bound(th, X64, y, fam, w, case.l2, ref.per_example_grads(th, Xt64, yt, fam))
    # (the bound is for exact V; the library's V carries its own solve error, at most 1e-9 here)
    slack = bound + 1e-9 * np.abs(S64).max()
    assert_scores_close(i32.on_loss(Xt32, yt), S64, 0, slack)
    for kind, J in (("mean", mean_jacobian(th, Xt64, fam)), ("linear", linear_jacobian(Xt64, fam, case.k))):
        P64 = i64.on_prediction(Xt64, kind=kind)
        b = float32_bound(th, X64, y, fam, w, case.l2, J).reshape(P64.shape) + 1e-9 * np.abs(P64).max()
        assert_scores_close(i32.on_prediction(Xt32, kind=kind), P64, 0, b)
    # rows picked by idx are scored in float64 (then rounded to float32)
    idx = [0, case.n - 1, 0]
    np.testing.assert_allclose(i32.on_loss(Xt32, yt, idx=idx), S64[:, idx], rtol=1e-6, atol=1e-6 * np.abs(S64).max())
    # top-k: selected in float32, values recomputed in float64
    t32 = i32.top_k(Xt32, yt, k=3)
    assert t32.helpful.dtype == np.float64
    rows = np.arange(len(yt))[:, None]
    for a, b in [(t32.helpful, S64[rows, t32.helpful_idx]), (t32.harmful, S64[rows, t32.harmful_idx])]:
        assert_close(a, b, 1e-12)
    np.testing.assert_array_equal(i32.self_influence(), i64.self_influence())
    np.testing.assert_array_equal(i32.new_point(Xt32[0], yt[0]), i64.new_point(Xt64[0], yt[0]))
    # a float32 model and float64 queries (and vice versa) mix freely
    np.testing.assert_array_equal(i32.on_loss(Xt64, yt), i32.on_loss(Xt32, yt))
    np.testing.assert_array_equal(i64.on_loss(Xt32, yt), S64)
