"""Fuzzing the public API with hypothesis (issue 5): extreme shapes and values through fit,
Influence (direct and cg), scores, top-k, self-influence and the validation helpers. Every call
must either return finite numbers or raise one of upweight's own errors: never a crash, an
InternalError (a Rust panic), another exception type, or a silent NaN.

UPWEIGHT_FUZZ_EXAMPLES raises the number of examples (tests/README.md records the runs)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import upweight as uw

EXAMPLES = int(os.environ.get("UPWEIGHT_FUZZ_EXAMPLES", "60"))
SETTINGS = dict(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
ALLOWED = (uw.UpweightError,)  # InputError, InputTypeError, SingularHessianError, ConvergenceError, NotFittedError

EXTREME = st.sampled_from([0.0, 1.0, -1.0, 1e-300, -1e-300, 1e300, -1e300, 1e150, 1e-8, 3.5, np.nan, np.inf, -np.inf])


@st.composite
def problems(draw):
    n = draw(st.integers(1, 40))
    d = draw(st.integers(1, 5))
    family = draw(st.sampled_from(["squared", "logistic", "poisson", "multinomial"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    X = rng.standard_normal((n, d)) * draw(st.sampled_from([1.0, 1e-200, 1e6, 1e100]))
    for _ in range(draw(st.integers(0, 3))):  # a few extreme entries
        X[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(EXTREME)
    if family == "squared":
        y = rng.standard_normal(n) * draw(st.sampled_from([1.0, 1e200]))
    elif family == "logistic":
        y = rng.integers(0, 2, n).astype(float)
    elif family == "poisson":
        y = rng.poisson(2.0, n).astype(float)
    else:
        y = rng.integers(0, 3, n).astype(float)
    if draw(st.booleans()):
        y[draw(st.integers(0, n - 1))] = draw(EXTREME)
    w = None
    if draw(st.booleans()):
        w = rng.uniform(0, 2, n)
        if draw(st.booleans()):
            w[draw(st.integers(0, n - 1))] = draw(EXTREME)
    l2 = draw(st.sampled_from([0.0, 1e-8, 1e-2, 1.0, 1e8]))
    solver = draw(st.sampled_from(["direct", "cg"]))
    return family, X, y, w, l2, solver


def estimator(family, l2, solver):
    return {"squared": uw.LinearRegression, "logistic": uw.LogisticRegression, "poisson": uw.PoissonRegression,
            "multinomial": uw.LogisticRegression}[family](l2=l2, solver=solver, max_iter=50)


def finite(*arrays):
    for a in arrays:
        a = np.asarray(a, dtype=float)
        assert np.isfinite(a).all(), "a result holds NaN or infinity without an error"


@settings(**SETTINGS)
@given(problems())
def test_public_api_returns_finite_numbers_or_raises_its_own_errors(problem):
    family, X, y, w, l2, solver = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = estimator(family, l2, solver).fit(X, y, sample_weight=w)
        except ALLOWED:
            return
        finite(model.theta_)
        try:
            inf = uw.Influence(model, X, y, sample_weight=w, solver=solver, on_unconverged="raise")
            S = inf.on_loss(X[:3], y[:3])
            finite(S)
            top = inf.top_k(X[:2], y[:2], k=2)
            finite(top.helpful, top.harmful)
            finite(inf.self_influence(), inf.params(idx=[0]), inf.on_prediction(X[:2]))
            if family != "multinomial":
                d = uw.diagnostics(model, X, y, sample_weight=w)
                finite(d.leverage)
        except ALLOWED:
            pass


@settings(**SETTINGS)
@given(
    st.integers(1, 30), st.integers(1, 6), st.sampled_from([1.0, 1e-150, 1e150]), st.sampled_from([0.0, 1e-6, 1.0]),
    st.sampled_from(["direct", "cg"]), st.sampled_from([np.float64, np.float32]), st.integers(0, 2**32 - 1),
)
def test_gradient_influence_fuzz(n, p, scale, damping, solver, dtype, seed):
    rng = np.random.default_rng(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        G = (rng.standard_normal((n, p)) * scale).astype(dtype)  # 1e150 overflows float32 to inf: refused
        try:
            gi = uw.GradientInfluence(G, damping=damping, solver=solver)
            finite(gi.on_loss(G[:2].astype(np.float64)), gi.self_influence())
            finite(gi.top_k(G[:1].astype(np.float64), k=1).harmful)
        except ALLOWED:
            pass


@pytest.mark.parametrize("family", ["logistic", "poisson", "multinomial"])
def test_extreme_linear_predictors_give_finite_losses_or_a_clear_error(family):
    """Overflow-safe losses: |eta| of 1e300 gives finite logistic and softmax losses; Poisson's
    exp(eta) overflows to infinity, which is the true value: it must not become NaN."""
    X = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    y = np.array([0.0, 1.0, 0.0, 1.0, 2.0, 1.0]) if family != "logistic" else np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    model = (uw.PoissonRegression if family == "poisson" else uw.LogisticRegression)(l2=1e-2).fit(X, y)
    Xt = np.array([[1e300], [-1e300]])
    losses = model.loss(Xt, [1.0, 0.0])
    assert not np.isnan(losses).any()
    if family != "poisson":
        finite(losses, model.predict_proba(Xt))
    with pytest.raises(uw.InputError, match="X: contains NaN"):
        model.loss(np.array([[np.nan]]), [1.0])


# --- what fuzzing found (tests/README.md), kept as regular cases ---------------------------

def test_found_infinite_class_label_is_an_input_error():
    with pytest.raises(uw.InputError, match=r"y: contains NaN or infinity \(first at index 0\)"):
        uw.LogisticRegression().fit(np.array([[0.0]]), np.array([np.inf]))


def test_found_overflowing_data_raise_instead_of_returning_nan():
    X = np.array([[1.25730221e-001], [-1.32104863e-001], [6.40422650e-001], [1.0e300]])
    y = np.array([-5.35669373e199, 3.61595055e199, 1.30400005e200, 9.47080963e199])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for solver in ("cg", "direct"):
            try:
                model = uw.LinearRegression(solver=solver, max_iter=50).fit(X, y)
                inf = uw.Influence(model, X, y, solver=solver)
                S = inf.on_loss(X[:3], y[:3])
            except uw.UpweightError as exc:
                assert "overflow" in str(exc) or isinstance(exc, (uw.SingularHessianError, uw.ConvergenceError)), exc
            else:
                finite(S)
