"""scikit-learn's MLPClassifier / MLPRegressor through ``from_sklearn`` (upweight.interop).

sklearn (lbfgs, sample weights s, S = sum s) minimises L_sk = (1/S) [sum s_i l_i + alpha/2 sum ||W||^2];
the converted network's objective is L_sk (softmax, one logistic unit), 2 L_sk (squared error:
sklearn's l has a 1/2, ours not) or L_sk + const (Poisson), with penalty_renormalized=False.
Multi-output regression (y of shape (n, 2)): sklearn's gradient is that of L_sk with the
outputs' half squared errors summed, its reported loss averages them (upweight.interop).
Checked here: (a) the layout (every activation sklearn has; predictions to 1e-12), (b) the
objective (value = sklearn's ``loss_``, gradient = the multiple of sklearn's own gradient at
any theta, ~0 at sklearn's converged fit), (c) influence = the derivative of refitting sklearn
with point m's weight changed, (d) bad input.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

import upweight as uw
from upweight.interop import from_sklearn
from upweight.networks import glorot_init

nn = pytest.importorskip("sklearn.neural_network")
datasets = pytest.importorskip("sklearn.datasets")
ConvergenceWarningSk = pytest.importorskip("sklearn.exceptions").ConvergenceWarning

TOL = 1e-14
IRIS_NAMES = np.array(["setosa", "versicolor", "virginica"])


def data(kind: str):
    """(X, y, w): iris (3 classes, string labels), iris versicolor / other (2 classes), or smooth
    synthetic regression (one target, or two: "multioutput") / count targets; weights in [0.5, 2]."""
    X, y = datasets.load_iris(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    rng = np.random.default_rng(0)
    if kind == "multiclass":
        yy = IRIS_NAMES[y]
    elif kind == "binary":  # the middle class against the rest: a curved boundary, every hidden unit used
        yy = np.where(y == 1, "versicolor", "other")
    else:
        X = rng.standard_normal((100, 3))
        eta = np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2]
        if kind == "regression":
            yy = eta + 0.3 * rng.standard_normal(100)
        elif kind == "multioutput":
            yy = np.column_stack([eta, np.cos(X[:, 1]) - 0.5 * X[:, 0]]) + 0.3 * rng.standard_normal((100, 2))
        else:
            yy = rng.poisson(np.exp(0.5 * eta)).astype(float)
    return X, yy, rng.uniform(0.5, 2.0, len(yy))


def sk_estimator(kind: str, **kw):
    kw = {"solver": "lbfgs", "random_state": 0, **kw}
    if kind in ("multiclass", "binary"):
        return nn.MLPClassifier(**kw)
    return nn.MLPRegressor(loss="poisson" if kind == "poisson" else "squared_error", **kw)


def fit_quietly(est, X, y, w):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarningSk)
        return est.fit(X, y, sample_weight=w)


def convergent(kind: str, activation: str = "tanh", alpha: float = 1.0):
    """sklearn's lbfgs run until it stops on its own (scipy's ftol: max |grad| ~1e-5)."""
    X, y, w = data(kind)
    est = fit_quietly(sk_estimator(kind, hidden_layer_sizes=(3,), activation=activation, alpha=alpha, tol=1e-15, max_iter=20000), X, y, w)
    return est, X, y, w


def pinned(theta: np.ndarray, model) -> np.ndarray:
    """theta with the softmax head's output biases centred: the objective is flat along a common
    shift of them (unpenalised), and influence has no component along it."""
    sizes, theta = model.sizes(), theta.copy()
    k, r = sizes[-1], sizes[-2] + 1
    if k > 1 and isinstance(model, uw.MLPClassifier):
        b = theta[theta.size - k * r + r - 1::r]
        theta[theta.size - k * r + r - 1::r] = b - b.mean()
    return theta


def polish(model, X, y, w, max_iter=30):
    """Our own training from the model's theta (warm start) to max |grad| <= TOL: L-BFGS, then Newton."""
    model.set_params(warm_start=True, tol=TOL, max_iter=max_iter)
    model.fit(X, y, sample_weight=w)
    assert model.converged_ and model.grad_norm_ <= TOL
    return model


# -- (a) layout -----------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression", "poisson", "multioutput"])
def test_converted_network_predicts_as_sklearn(kind, activation):
    X, y, w = data(kind)
    est = fit_quietly(sk_estimator(kind, hidden_layer_sizes=(3, 2), activation=activation, alpha=0.1, max_iter=40), X, y, w)
    model, yv = from_sklearn(est, X, y, w)
    assert model.hidden == (3, 2) and model.activation == activation and model.penalty_renormalized is False
    for ours, theirs in zip(model.coefs_, est.coefs_, strict=True):  # W_l = coefs_[l]^T, bit for bit
        np.testing.assert_array_equal(ours, theirs.T)
    for ours, theirs in zip(model.intercepts_, est.intercepts_, strict=True):
        np.testing.assert_array_equal(ours, theirs)
    if kind in ("multiclass", "binary"):
        assert isinstance(model, uw.MLPClassifier)
        np.testing.assert_array_equal(est.classes_[yv.astype(int)], y)
        np.testing.assert_allclose(model.predict_proba(X), est.predict_proba(X), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(est.classes_[model.predict(X)], est.predict(X))
        assert model.predict_proba(X).shape == (len(y), len(est.classes_))
        assert model.core_model().n_outputs == (1 if kind == "binary" else 3)
    else:
        assert isinstance(model, uw.MLPRegressor)
        np.testing.assert_allclose(model.predict(X), est.predict(X), rtol=1e-12, atol=1e-12)
    assert model.score(X, yv, w) == pytest.approx(est.score(X, y, sample_weight=w), rel=1e-12, abs=1e-12)


# -- (b) the objective ------------------------------------------------------------------------

def sk_gradient(est, theta_sk, X, y, w):
    """sklearn's own loss and gradient (its private ``_loss_grad_lbfgs``, in its packing: every
    coefs_ raveled, then every intercepts_) at ``theta_sk``."""
    est = copy.deepcopy(est)
    Y = est._label_binarizer.transform(y).astype(float) if hasattr(est, "_label_binarizer") else np.reshape(y, (len(y), -1))
    units = [est.coefs_[0].shape[0]] + [c.shape[1] for c in est.coefs_]
    acts = [X] + [None] * (len(units) - 1)
    try:
        return est._loss_grad_lbfgs(theta_sk, X, Y, w, acts, [None] * (len(units) - 1),
                                    [np.empty((a, b)) for a, b in zip(units[:-1], units[1:], strict=False)],
                                    [np.empty(b) for b in units[1:]])
    except (AttributeError, TypeError) as exc:  # a private API: skip rather than fail if it changes
        pytest.skip(f"sklearn's _loss_grad_lbfgs is not usable here ({exc})")


def sk_packing(model) -> np.ndarray:
    """Positions in our theta of sklearn's packed parameters."""
    sizes, index, offset = model.sizes(), [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        index.append(np.arange(fan_out * (fan_in + 1)).reshape(fan_out, fan_in + 1) + offset)
        offset += fan_out * (fan_in + 1)
    parts = [block[:, :-1].T.reshape(-1) for block in index] + [block[:, -1] for block in index]
    return np.concatenate(parts)


# (our objective) / (sklearn's), up to a constant for Poisson
FACTOR = {"multiclass": 1.0, "binary": 1.0, "regression": 2.0, "poisson": 1.0, "multioutput": 2.0}


def as_sklearns(kind: str, value: float, y, w, model) -> float:
    """Our objective's value in sklearn's terms: / FACTOR, plus the (1/S) sum s (y log y - y)
    that sklearn's half Poisson deviance keeps and our e^h - y h drops; with t outputs sklearn's
    value averages the data term over them (its gradient sums it)."""
    if kind == "multioutput":
        penalty = model.l2 * sum(float(np.sum(W**2)) for W in model.coefs_)
        return (value - penalty) / (2 * np.shape(y)[1]) + penalty / 2
    if kind == "poisson":
        y = np.asarray(y, dtype=float)
        value += np.average(y * np.log(np.where(y > 0, y, 1.0)) - y, weights=w)
    return value / FACTOR[kind]


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression", "poisson", "multioutput"])
def test_our_gradient_is_the_multiple_of_sklearns(kind, activation):
    """At a random theta (sklearn's init after 5 steps), ours = FACTOR x sklearn's, entry by entry."""
    X, y, w = data(kind)
    est = fit_quietly(sk_estimator(kind, hidden_layer_sizes=(3, 2), activation=activation, alpha=0.3, max_iter=5), X, y, w)
    model, yv = from_sklearn(est, X, y, w)
    theta, where = model.get_theta(), sk_packing(model)
    value, grad = model.core_model().objective(theta, X, yv, w, model.l2)
    value_sk, grad_sk = sk_gradient(est, theta[where], X, y, w)
    np.testing.assert_allclose(grad[where], FACTOR[kind] * grad_sk, rtol=1e-10, atol=1e-13)
    assert as_sklearns(kind, value, y, w, model) == pytest.approx(value_sk, rel=1e-12)


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh"])
@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression", "poisson", "multioutput"])
def test_sklearns_converged_fit_is_a_stationary_point_of_ours(kind, activation):
    """sklearn's lbfgs (gtol 1e-15; it stops on scipy's ftol = 2.2e-9) ends where our gradient
    is below 1e-3 of its size at a Glorot start (measured <= ~1e-4). relu is left out: its kinks
    stop sklearn's line search early, far from a stationary point."""
    est, X, y, w = convergent(kind, activation)
    model, yv = from_sklearn(est, X, y, w)
    core = model.core_model()
    value, grad = core.objective(model.get_theta(), X, yv, w, model.l2)
    _, grad0 = core.objective(glorot_init(model.sizes(), np.random.default_rng(1)), X, yv, w, model.l2)
    if kind != "multioutput":
        # (with 2 outputs sklearn's lbfgs stops after ~30-50 iterations at ~1.5e-3-7.5e-3 of the start's
        # max |grad|: its reported loss averages the outputs while its gradient sums them, and the line
        # search fails on the mismatch; the gradient it follows is ours / 2, checked above)
        assert np.abs(grad).max() <= 1e-3 * np.abs(grad0).max()
    assert as_sklearns(kind, value, y, w, model) == pytest.approx(est.loss_, rel=1e-12)  # sklearn's objective at its optimum


# -- (c) influence = the derivative of sklearn's refit ------------------------------------------

@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression", "poisson", "multioutput"])
def test_influence_is_the_derivative_of_refitting_sklearn(kind):
    """For m in a few rows: refit sklearn (warm start) with s_m +- h, convert (l2 = alpha / (2 S')
    with the refit's own S'), polish each with our training to max |grad| <= 1e-14 (sklearn's
    lbfgs stops ~1e-5 short: too coarse for a difference quotient), and compare the central
    difference with Influence(damping=0, curvature="hessian"), exact at a minimum.

    Tolerances (relative to max |FD|): at the polished minimum 1e-5, for the difference
    quotient's O(h^2) error (h = 1e-3: measured <= 7.5e-7, Poisson, falling 100x per decade of h)
    plus the refits' rounding (max |grad| <= 1e-14 over curvature >= 1e-3, divided by h: ~1e-8);
    at sklearn's own parameters (Influence.from_sklearn, unpolished) 1e-2: sklearn stops at max
    |grad| ~1e-5, and over curvature ~1e-3 that moves theta and I by ~1e-3 (measured <= 3.2e-3).
    Two outputs: sklearn's lbfgs stops far from a minimum, so only the polished comparison (our
    training from its refits, up to 2000 iterations) is made."""
    est, X, y, w = convergent(kind)
    # with 2 outputs sklearn's lbfgs stops short of a minimum (test above), where the exact Hessian is
    # indefinite: only the polished comparison applies
    stops_short = kind == "multioutput"
    inf_sk = None if stops_short else uw.Influence.from_sklearn(est, X, y, sample_weight=w, damping=0.0, curvature="hessian")
    model, yv = from_sklearn(est, X, y, w) if inf_sk is None else (inf_sk.model, inf_sk.y)
    iters = 2000 if stops_short else 30
    best = polish(copy.deepcopy(model), X, yv, w, iters)
    if inf_sk is not None:
        assert inf_sk.curvature == "hessian" and inf_sk.damping == 0.0
        # the same minimum: sklearn's theta is within its tolerance of ours
        assert np.abs(pinned(best.get_theta(), best) - pinned(model.get_theta(), best)).max() <= 1e-2
    inf = uw.Influence(best, X, yv, w, damping=0.0, curvature="hessian")
    h = 1e-3
    for m in (0, len(yv) // 2 + 3, len(yv) - 1):
        out = []
        for s in (h, -h):
            wp = w.copy()
            wp[m] += s
            refit = fit_quietly(copy.deepcopy(est).set_params(warm_start=True), X, y, wp)
            converted, _ = from_sklearn(refit, X, y, wp)
            assert converted.l2 == pytest.approx(model.l2 * w.sum() / wp.sum(), rel=1e-14)  # alpha fixed, S moves
            out.append(pinned(polish(converted, X, yv, wp, iters).get_theta(), best))
        fd = (out[0] - out[1]) / (2 * h)
        scale = np.abs(fd).max()
        np.testing.assert_allclose(inf.params([m])[0], fd, rtol=0, atol=1e-5 * scale)
        if inf_sk is not None:
            np.testing.assert_allclose(inf_sk.params([m])[0], fd, rtol=0, atol=1e-2 * scale)


def test_the_penalty_convention_matters():
    """The renormalised convention (penalty outside a weighted mean) gives another derivative,
    apart by 16% of max |I| here (asserted > 5%, thousands of times the refit test's 1e-5), so
    the refit test tells the conventions apart."""
    est, X, y, w = convergent("regression")
    model, yv = from_sklearn(est, X, y, w)
    best = polish(model, X, yv, w)
    other = copy.deepcopy(best).set_params(penalty_renormalized=True)
    I = uw.Influence(best, X, yv, w, damping=0.0, curvature="hessian").params([0])[0]
    I_other = uw.Influence(other, X, yv, w, damping=0.0, curvature="hessian").params([0])[0]
    assert np.abs(I - I_other).max() > 0.05 * np.abs(I).max()


@pytest.mark.parametrize("kind", ["multiclass", "binary", "regression", "poisson", "multioutput"])
def test_default_influence_is_the_pbrf_derivative_at_sklearns_parameters(kind):
    """An adam fit stopped after 50 epochs (no minimiser): the default influence (damped
    Gauss-Newton) is the derivative of the proximal Bregman response there, for every head
    (central difference, h = 1e-4: measured <= 2e-9 of max |I|; asserted 1e-6)."""
    X, y, w = data(kind)
    est = fit_quietly(sk_estimator(kind, solver="adam", hidden_layer_sizes=(4,), alpha=0.1, max_iter=50), X, y, w)
    inf = uw.Influence.from_sklearn(est, X, y, sample_weight=w)
    assert inf.curvature == "gauss-newton" and inf.damping > 0
    h = 1e-4
    for m in (0, 7):
        up, down = inf.pbrf(m, [h, -h])
        I = inf.params([m])[0]
        np.testing.assert_allclose((up - down) / (2 * h), I, rtol=0, atol=1e-6 * np.abs(I).max())
    k = {"multiclass": 3, "multioutput": 2}.get(kind)
    assert inf.on_prediction(X[:3]).shape == ((3, k, len(y)) if k else (3, len(y)))


# -- objective mapping details ------------------------------------------------------------------

def test_l2_is_alpha_over_the_total_weight():
    X, y, w = data("multiclass")
    est = fit_quietly(sk_estimator("multiclass", hidden_layer_sizes=(2,), alpha=0.7, max_iter=5), X, y, w)
    assert from_sklearn(est, X, y, w)[0].l2 == pytest.approx(0.7 / (2 * w.sum()), rel=1e-15)
    assert from_sklearn(est, X, y)[0].l2 == pytest.approx(0.7 / (2 * len(y)), rel=1e-15)
    Xr, yr, wr = data("regression")
    est = fit_quietly(sk_estimator("regression", hidden_layer_sizes=(2,), alpha=0.7, max_iter=5), Xr, yr, wr)
    assert from_sklearn(est, Xr, yr, wr)[0].l2 == pytest.approx(0.7 / wr.sum(), rel=1e-15)


def test_minibatch_solvers_scale_the_penalty_and_say_so():
    """adam / sgd penalise each batch by alpha / (2 S_batch): batches of 32 of 100 rows (32, 32,
    32, 4) give c = 100 mean(1/32, 1/32, 1/32, 1/4) over the full-batch objective."""
    X, y, w = data("regression")
    est = fit_quietly(sk_estimator("regression", solver="adam", batch_size=32, hidden_layer_sizes=(2,), alpha=0.5, max_iter=3), X, y, None)
    with pytest.warns(UserWarning, match="minibatch"):
        model, _ = from_sklearn(est, X, y)
    c = 100 * np.mean([1 / 32, 1 / 32, 1 / 32, 1 / 4])
    assert model.l2 == pytest.approx(0.5 * c / 100, rel=1e-14)
    full = fit_quietly(sk_estimator("regression", solver="adam", hidden_layer_sizes=(2,), alpha=0.5, max_iter=3), X, y, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # batch_size="auto" = min(200, n) = n: one batch, no warning
        assert from_sklearn(full, X, y)[0].l2 == pytest.approx(0.5 / 100, rel=1e-14)


def test_early_stopping_warns_that_the_parameters_are_not_the_minimiser():
    X, y, w = data("multiclass")
    est = fit_quietly(sk_estimator("multiclass", solver="adam", early_stopping=True, hidden_layer_sizes=(2,), max_iter=5), X, y, w)
    with pytest.warns(uw.NotAtOptimumWarning, match="early_stopping"):
        inf = uw.Influence.from_sklearn(est, X, y, sample_weight=w)
    assert inf.model.l2 == pytest.approx(est.alpha / (2 * w.sum()))  # the same objective, over the rows passed
    # lbfgs ignores early_stopping: no warning
    est = fit_quietly(sk_estimator("multiclass", early_stopping=True, hidden_layer_sizes=(2,), max_iter=5), X, y, w)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from_sklearn(est, X, y, w)


# -- (d) bad input ----------------------------------------------------------------------------

def test_bad_input_is_refused_naming_it():
    X, y, w = data("regression")
    Xc, yc, wc = data("multiclass")
    with pytest.raises(uw.NotFittedError, match="^estimator: MLPClassifier is not fitted"):
        uw.Influence.from_sklearn(nn.MLPClassifier(), Xc, yc)
    with pytest.raises(uw.NotFittedError, match="^estimator: MLPRegressor is not fitted"):
        from_sklearn(nn.MLPRegressor(), X, y)
    Y2 = np.column_stack([y, -y])
    two = fit_quietly(sk_estimator("regression", hidden_layer_sizes=(2,), max_iter=5), X, Y2, None)
    with pytest.raises(uw.InputError, match=r"^y: has 1 column, but MLPRegressor was fitted on 2 targets \(pass y of shape \(n, 2\)\)"):
        uw.Influence.from_sklearn(two, X, y)
    one = fit_quietly(sk_estimator("regression", hidden_layer_sizes=(2,), max_iter=5), X, y, None)
    with pytest.raises(uw.InputError, match="^y: has 2 columns"):
        from_sklearn(one, X, Y2)
    multilabel = np.column_stack([yc == "setosa", yc == "virginica"]).astype(int)
    ml = fit_quietly(sk_estimator("multiclass", hidden_layer_sizes=(2,), max_iter=5), Xc, multilabel, None)
    with pytest.raises(uw.InputError, match="^y: MLPClassifier fitted on multilabel"):
        from_sklearn(ml, Xc, multilabel)
    single = fit_quietly(sk_estimator("multiclass", hidden_layer_sizes=(2,), max_iter=5), Xc, np.full(len(yc), "setosa"), None)
    with pytest.raises(uw.InputError, match="^y: MLPClassifier was fitted on one class"):
        from_sklearn(single, Xc, np.full(len(yc), "setosa"))
    clf = fit_quietly(sk_estimator("multiclass", hidden_layer_sizes=(2,), max_iter=5), Xc, yc, wc)
    with pytest.raises(uw.InputError, match="^y: has labels the estimator was not fitted on"):
        from_sklearn(clf, Xc, np.where(yc == "setosa", "rose", yc))
    pois = fit_quietly(sk_estimator("poisson", hidden_layer_sizes=(2,), max_iter=5), *data("poisson"))
    with pytest.raises(uw.InputError, match="^y: value -1 at index 0 is negative"):
        from_sklearn(pois, X, np.r_[-1.0, y[1:] ** 2])
    with pytest.raises(uw.InputError, match="^X: "):
        uw.Influence.from_sklearn(clf, Xc[:, :3], yc)
