"""Checking influence against the real thing: exact refits (DESIGN.md section 1).

The response R_m(eps) is the fitted theta with eps added to w_m; influence is its slope at
eps = 0. These functions compute responses by refitting (in Rust, in parallel, each refit
warm-started at theta*) so that predicted and actual changes can be compared:

    rc = uw.response_curve(model, X, y, m=17, eps=np.linspace(-1, 1, 9), f=uw.TestLoss(Xt, yt))
    loo = uw.leave_one_out(model, X, y, idx=range(100), X_test=Xt, y_test=yt)
    uw.compare(loo.predicted_loss, loo.actual_loss)   # Pearson, Spearman, slope

A model refits exactly as it was fitted: same family, l2, tol and solver, on the same data.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._validation import as_indices, as_points, as_vector, as_weights, check_finite, n_rows, training_features
from .errors import ConvergenceWarning, InputError, SingularHessianError
from .influence import Influence
from .models import DIVERGING_STEP, Model, check_model
from .solver import resolve, work

__all__ = [
    "Comparison", "LeaveKOut", "LeaveOneOut", "Prediction", "ResponseCurve", "TestLoss",
    "compare", "leave_k_out", "leave_one_out", "response_curve",
]

#: Refits stop when max |gradient| is at most this, or 10x the gradient norm the fitted model
#: itself reached if that is larger (large-valued targets stall above 1e-12 at rounding level):
#: tight enough that refit differences (often ~1e-4 of theta) are not blurred by optimisation error.
REFIT_TOL = 1e-12


class TestLoss:
    """The losses at test points, as a function of the parameters.

    f(theta) = the loss at each test point (q values); ``mean=True``: their mean (1 value).

    A function of the parameters for :func:`response_curve` to follow along its refits (and to
    differentiate for the influence tangent). Nothing is computed or checked until it is used:
    the test points are checked against the model then (an InputError naming ``X_test`` or
    ``y_test``).

    Parameters
    ----------
    X_test : array_like of shape (q, d)
        Test features (dense or scipy.sparse).
    y_test : array_like of shape (q,)
        Test targets (class ids for a classifier).
    mean : bool, default False
        One value, the mean loss over the q test points, instead of q values.

    Attributes
    ----------
    X_test, y_test, mean
        The arguments, as given.

    See Also
    --------
    Prediction : The predictions at test points instead of their losses.
    response_curve : Follows f along exact refits.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> rc = uw.response_curve(model, X, y, m=0, eps=[-1.0, 0.0, 1.0], f=uw.TestLoss(X[:4], y[:4]))
    >>> rc.f.shape  # 3 refits x 4 test losses
    (3, 4)
    >>> rc = uw.response_curve(model, X, y, m=0, eps=[-1.0, 0.0, 1.0], f=uw.TestLoss(X[:4], y[:4], mean=True))
    >>> rc.f.shape
    (3, 1)
    """

    __test__ = False  # not a pytest class

    def __init__(self, X_test, y_test, mean: bool = False):
        self.X_test, self.y_test, self.mean = X_test, y_test, mean

    def _values(self, model: Model, theta):
        Xt = as_points(self.X_test, "X_test", model.n_features_in_)
        yt = model.check_targets(self.y_test, n_rows(Xt), name="y_test")
        v = model.core_model().losses(theta, Xt, yt, names=("X_test", "y_test"))
        return np.array([v.mean()]) if self.mean else v

    def _grads(self, inf: Influence):
        G = inf.loss_grads(self.X_test, self.y_test)
        return G.mean(axis=0, keepdims=True) if self.mean else G


class Prediction:
    """The predictions at test points, as a function of the parameters.

    f(theta) = the predictions at ``X_test``: ``kind="mean"`` (the mean response: value,
    probability, rate, or every class probability) or ``"linear"``; (q,) or (q k,) values.

    A function of the parameters for :func:`response_curve` to follow along its refits (and to
    differentiate for the influence tangent). For a multinomial model the q k values are the
    class probabilities (or linear predictors) of each test point in turn.

    Parameters
    ----------
    X_test : array_like of shape (q, d)
        Test features (dense or scipy.sparse), checked against the model when used (an
        InputError naming ``X_test``).
    kind : {"mean", "linear"}, default "mean"
        The mean response (value, probability, rate) or the linear predictor eta.

    Attributes
    ----------
    X_test, kind
        The arguments, as given.

    Raises
    ------
    InputError
        If ``kind`` is not ``"mean"`` or ``"linear"``.

    See Also
    --------
    TestLoss : The losses at test points instead of their predictions.
    response_curve : Follows f along exact refits.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> rc = uw.response_curve(model, X, y, m=0, eps=[-1.0, 0.0, 1.0], f=uw.Prediction(X[:4]))
    >>> rc.f.shape  # 3 refits x 4 probabilities
    (3, 4)
    >>> bool(np.allclose(rc.f[1], model.predict_proba(X[:4])[:, 1]))  # eps = 0: the fit itself
    True
    """

    def __init__(self, X_test, kind: str = "mean"):
        if kind not in ("mean", "linear"):
            raise InputError(f"kind: expected 'mean' or 'linear', got {kind!r}")
        self.X_test, self.kind = X_test, kind

    def _values(self, model: Model, theta):
        Xt = as_points(self.X_test, "X_test", model.n_features_in_)
        return model.core_model().predict(theta, Xt, self.kind, names=("X_test", "y_test")).reshape(-1)

    def _grads(self, inf: Influence):
        m = inf.model
        Xt = as_points(self.X_test, "X_test", m.n_features_in_)
        return m.core_model().prediction_grads(m.get_theta(), Xt, self.kind, names=("X_test", "y_test"))


def _values(f, model, theta):
    """f at theta (theta itself when f is None); NaN for a refit with no finite optimum."""
    if f is None:
        return theta.copy()
    if not np.isfinite(theta).all():
        return np.full(np.shape(f._values(model, np.zeros_like(theta))), np.nan)
    return f._values(model, theta)


@dataclass(frozen=True)
class ResponseCurve:
    """theta (and f) refitted with w_m + eps, beside the influence tangent theta* + eps I(z_m)."""

    m: int
    eps: np.ndarray  # (e,)
    theta: np.ndarray  # (e, p) exact refits
    theta_tangent: np.ndarray  # (e, p) theta* + eps I(z_m)
    f: np.ndarray  # (e, r) f along the refits (theta itself when f is None)
    f_tangent: np.ndarray  # (e, r) f(theta*) + eps grad f . I(z_m)
    influence: np.ndarray  # (r,) the tangent's slope, grad f . I(z_m)


@dataclass(frozen=True)
class LeaveOneOut:
    """Refits without each point of ``idx`` against influence's prediction -w_m I(z_m)."""

    idx: np.ndarray  # (m,)
    theta: np.ndarray  # (m, p) refits
    actual_params: np.ndarray  # (m, p) theta_(-m) - theta*
    predicted_params: np.ndarray  # (m, p) -w_m I(z_m)
    actual_loss: np.ndarray | None  # (m, q) change of each test loss
    predicted_loss: np.ndarray | None  # (m, q) -w_m S[t, m]
    one_step_params: np.ndarray | None = None  # (m, p) one Newton step (Influence.loo_params)
    one_step_loss: np.ndarray | None = None  # (m, q) the test losses at those parameters (loo_on_loss)


@dataclass(frozen=True)
class LeaveKOut:
    """One refit without a whole group against the sum of its members' predictions."""

    idx: np.ndarray
    theta: np.ndarray  # (p,)
    actual_params: np.ndarray
    predicted_params: np.ndarray  # -sum_m w_m I(z_m)
    actual_loss: np.ndarray | None  # (q,)
    predicted_loss: np.ndarray | None
    one_step_params: np.ndarray | None = None  # (p,) one Newton step (Influence.leave_out_params)
    one_step_loss: np.ndarray | None = None  # (q,) (Influence.leave_out_on_loss)


@dataclass(frozen=True)
class Comparison:
    """How well predicted changes match actual ones: Pearson and Spearman correlation and the
    least-squares slope of actual on predicted (1 when influence is exact to first order)."""

    pearson: float
    spearman: float
    slope: float
    n: int


def _setup(model, X, y, sample_weight):
    model = check_model(model)
    theta = model.get_theta()
    Xc, n, _ = training_features(X, model.n_features_in_)
    yv = model.check_targets(y, n)
    w = as_weights(sample_weight, n)
    return theta, Xc, yv, w, n


def _refit(model: Model, Xc, y, w, theta, points, weights, progress=None):
    core = model.core_model()
    # "auto" as the estimator's own fit would choose
    solver = resolve(getattr(model, "solver", "auto"), work(len(y), theta.size, core.n_outputs, Xc))
    l2s = None
    if not model.penalty_renormalized and model.l2 > 0:  # sum-of-losses objective: l2 = alpha / W moves with W
        wv = np.ones(len(y)) if w is None else w
        W = float(wv.sum())
        l2s = [float(model.l2) * W / (W - float(np.sum(wv[list(p)])) + float(np.sum(v))) for p, v in zip(points, weights, strict=True)]
    tol = max(REFIT_TOL, 10 * float(getattr(model, "grad_norm_", 0.0)))
    may_diverge = float(model.l2) == 0 and core.family not in (None, "squared")
    thetas, n_iter, grad_norm, converged, moved = core.refit(
        theta, Xc, y, w, float(model.l2), tol, max(int(getattr(model, "max_iter", 100)), 100),
        [list(map(int, p)) for p in points], [list(map(float, v)) for v in weights], solver, progress, l2s, may_diverge,
    )
    diverged = converged & (moved > DIVERGING_STEP)
    if diverged.any():
        # no finite refit: its difference from theta* is infinite, not the number Newton stopped at
        thetas[diverged] = np.nan
        which = np.flatnonzero(diverged)
        warnings.warn(
            f"{which.size} refit(s) (first: #{which[0]}) have no finite optimum: with those weights the unpenalised "
            "classes are (quasi-)separated, or a feature is nonzero only on points fitted perfectly, and the "
            "refit diverges (its last Newton step still moved a linear predictor by "
            f"{moved[which[0]]:.2g}); their rows are NaN (compare() leaves them out). Use l2 > 0",
            ConvergenceWarning, stacklevel=3,
        )
        converged = converged | diverged
    if not converged.all():
        bad = int(np.argmin(converged))
        warnings.warn(f"refit #{bad} stopped at gradient norm {grad_norm[bad]:.2g} > {tol:.2g} after {n_iter[bad]} "
                      "Newton steps; its difference from theta* carries that error", ConvergenceWarning, stacklevel=3)
    return thetas


def response_curve(model, X, y, m: int, eps, f=None, sample_weight=None, progress=None) -> ResponseCurve:
    """Exact refits along a change of one training point's weight, with the influence tangent.

    The response of theta (or of ``f``: :class:`TestLoss`, :class:`Prediction`) to adding
    ``eps`` to the weight of training point ``m``, by exact refits, and the influence tangent.

    ``eps`` may be any grid with w_m + eps >= 0 (eps = -w_m removes the point). The response
    R_m(eps) is the refitted theta (DESIGN.md section 1); its slope at eps = 0 is the influence
    I(z_m) (for f: grad f . I(z_m)), and the tangent theta* + eps I(z_m) is what influence
    predicts. Refits run in parallel in the core, each warm-started at theta*.

    Parameters
    ----------
    model : Model
        A fitted upweight model (``LinearRegression``, ``LogisticRegression``,
        ``PoissonRegression``, ...); each refit uses its family, l2, tol and solver.
    X : array_like of shape (n, d)
        The training features the model was fitted on (dense, scipy.sparse or a ``.npy`` path).
    y : array_like of shape (n,)
        The training targets.
    m : int
        The training point whose weight changes (0 <= m < n).
    eps : float or array_like of shape (e,)
        The weight changes to refit at: finite, with w_m + eps >= 0.
    f : TestLoss or Prediction, optional
        A function of theta to follow; default None follows theta itself.
    sample_weight : array_like of shape (n,), optional
        The training weights the model was fitted with (default: all 1).
    progress : callable, optional
        ``progress(pass, done, total)``, called from the calling thread at most every 50 ms
        while the refits run; raising in it cancels them.

    Returns
    -------
    ResponseCurve
        A frozen dataclass (``upweight.validation.ResponseCurve``) with ``m``; ``eps`` (e,);
        ``theta`` (e, p), the exact refits; ``theta_tangent`` (e, p), theta* + eps I(z_m);
        ``f`` (e, r), f along the refits (theta itself, r = p, when ``f`` is None);
        ``f_tangent`` (e, r), f(theta*) + eps grad f . I(z_m); ``influence`` (r,), the
        tangent's slope. A refit with no finite optimum is NaN (with a ConvergenceWarning).

    Raises
    ------
    InputError
        If ``m`` is out of range, ``eps`` is empty, not finite or makes a weight negative, or
        the data do not match the model (the message names the argument).
    NotFittedError
        If ``model`` is not fitted.

    Warns
    -----
    ConvergenceWarning
        If a refit stops short of its tolerance or has no finite optimum.

    See Also
    --------
    upweight.plots.response_curve : Draws the curve and its tangent.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> rc = uw.response_curve(model, X, y, m=0, eps=np.linspace(-1, 1, 5), f=uw.TestLoss(X[:3], y[:3], mean=True))
    >>> rc.f.shape, rc.influence.shape
    ((5, 1), (1,))
    >>> bool(np.allclose(rc.f, rc.f_tangent, rtol=1e-3))  # near eps = 0 the tangent is the curve
    True
    """
    theta, Xc, yv, w, n = _setup(model, X, y, sample_weight)
    m = int(as_indices(m, n, "m")[0])
    eps = np.atleast_1d(as_vector(np.atleast_1d(eps), "eps"))
    if eps.size == 0:
        raise InputError("eps: is empty; give the weight changes to refit at")
    check_finite(eps, "eps")
    wm = 1.0 if w is None else float(w[m])
    if np.any(wm + eps < 0):
        raise InputError(f"eps: w_m + eps must be >= 0 (w_m = {wm:g}), got eps = {eps.min():g}")
    thetas = _refit(model, Xc, yv, w, theta, [[m]] * eps.size, [[wm + e] for e in eps], progress)
    inf = Influence(model, X, y, sample_weight)
    I = inf.params([m])[0]
    if f is None:
        slope, f0 = I, theta
    else:
        slope, f0 = inf.on(f._grads(inf), idx=[m])[:, 0], _values(f, model, theta)
    fv = np.stack([_values(f, model, t) for t in thetas])
    return ResponseCurve(m, eps, thetas, theta + eps[:, None] * I, fv, f0 + eps[:, None] * slope, slope)


def leave_one_out(model, X, y, idx=None, X_test=None, y_test=None, sample_weight=None, progress=None) -> LeaveOneOut:
    """Exact leave-one-out refits, against influence's first-order and one-step predictions.

    Refit without each training point of ``idx`` (default: all), in parallel, and compare
    the change of theta (and of each test loss, given ``X_test, y_test``) with influence's
    first-order prediction -w_m I(z_m) (and -w_m S[t, m]) and with the one-step Newton estimate
    (``one_step_params``, ``one_step_loss``: :meth:`Influence.loo_params`).

    A refit with no finite optimum (with ``l2 = 0``, leaving a point out can separate the classes)
    has NaN rows in ``theta``, ``actual_params`` and ``actual_loss``, with a ConvergenceWarning;
    :func:`compare` leaves them out.

    Parameters
    ----------
    model : Model
        A fitted upweight model (``LinearRegression``, ``LogisticRegression``,
        ``PoissonRegression``, ...); each refit uses its family, l2, tol and solver.
    X : array_like of shape (n, d)
        The training features the model was fitted on (dense, scipy.sparse or a ``.npy`` path).
    y : array_like of shape (n,)
        The training targets.
    idx : array_like of int, optional
        The training points to leave out, one refit each (any iterable of indices; default: all
        n).
    X_test : array_like of shape (q, d), optional
        Test features: also compare the change of each test loss.
    y_test : array_like of shape (q,), optional
        Test targets (with ``X_test``).
    sample_weight : array_like of shape (n,), optional
        The training weights the model was fitted with (default: all 1).
    progress : callable, optional
        ``progress(pass, done, total)``, called from the calling thread at most every 50 ms
        while the refits run; raising in it cancels them.

    Returns
    -------
    LeaveOneOut
        A frozen dataclass (``upweight.validation.LeaveOneOut``), for the m = len(idx) points:
        ``idx`` (m,); ``theta`` (m, p), the refits; ``actual_params`` (m, p), theta_(-m) -
        theta*; ``predicted_params`` (m, p), -w_m I(z_m); ``actual_loss`` and
        ``predicted_loss`` (m, q), the change of each test loss and -w_m S[t, m] (None without
        ``X_test``); ``one_step_params`` (m, p) and ``one_step_loss`` (m, q) (None without
        ``X_test``), the one-step Newton estimates (NaN where leaving the point out leaves no
        unique minimiser).

    Raises
    ------
    InputError
        If an index of ``idx`` is out of range, or the data or test points do not match the
        model (the message names the argument).
    NotFittedError
        If ``model`` is not fitted.

    Warns
    -----
    ConvergenceWarning
        If a refit stops short of its tolerance or has no finite optimum.

    See Also
    --------
    compare : Correlation and slope of predicted against actual changes.
    leave_k_out : One refit without a whole group.
    upweight.plots.loo_scatter : Predicted against actual changes, drawn.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> loo = uw.leave_one_out(model, X, y, idx=range(20), X_test=X[:5], y_test=y[:5])
    >>> loo.theta.shape, loo.actual_loss.shape
    ((20, 31), (20, 5))
    >>> uw.compare(loo.predicted_loss, loo.actual_loss).pearson > 0.99
    True
    """
    theta, Xc, yv, w, n = _setup(model, X, y, sample_weight)
    idx = np.arange(n) if idx is None else as_indices(np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx), n)
    thetas = _refit(model, Xc, yv, w, theta, [[int(i)] for i in idx], [[0.0]] * len(idx), progress)
    inf = Influence(model, X, y, sample_weight)
    wm = np.ones(len(idx)) if w is None else w[idx]
    pred = -wm[:, None] * inf.params(idx)
    actual_loss = predicted_loss = None
    if X_test is not None:
        f = TestLoss(X_test, y_test)
        l0 = f._values(model, theta)
        actual_loss = np.stack([_values(f, model, t) for t in thetas]) - l0
        predicted_loss = -wm[:, None] * inf.on_loss(X_test, y_test, idx=idx).T
    step, step_loss = _one_step(inf, idx, X_test, y_test)
    return LeaveOneOut(idx, thetas, thetas - theta, pred, actual_loss, predicted_loss, step, step_loss)


def _one_step(inf, idx, X_test, y_test):
    """One-step estimates for each point of ``idx``; NaN rows for a point whose removal leaves
    no unique minimiser (its refit has none either: see :func:`leave_one_out`)."""
    try:
        return inf.loo_params(idx), (None if X_test is None else inf.loo_on_loss(X_test, y_test, idx=idx).T)
    except SingularHessianError:
        q = 0 if X_test is None else n_rows(as_points(X_test, "X_test"))
        params, losses = np.full((len(idx), inf.n_params), np.nan), np.full((len(idx), q), np.nan)
        for j, m in enumerate(idx):
            try:
                params[j] = inf.loo_params([m])[0]
                if X_test is not None:
                    losses[j] = inf.loo_on_loss(X_test, y_test, idx=[m])[:, 0]
            except SingularHessianError:
                pass
        return params, (None if X_test is None else losses)


def leave_k_out(model, X, y, group, X_test=None, y_test=None, sample_weight=None) -> LeaveKOut:
    """An exact refit without a group of training points, against influence's prediction.

    Refit without every point of ``group`` at once; influence predicts the sum of the
    members' effects, -sum_m w_m I(z_m) (first order: interactions inside the group are what
    the difference shows).

    The one-step Newton estimate of the same removal (:meth:`Influence.leave_out_params`) is
    returned beside it.

    Parameters
    ----------
    model : Model
        A fitted upweight model (``LinearRegression``, ``LogisticRegression``,
        ``PoissonRegression``, ...); each refit uses its family, l2, tol and solver.
    X : array_like of shape (n, d)
        The training features the model was fitted on (dense, scipy.sparse or a ``.npy`` path).
    y : array_like of shape (n,)
        The training targets.
    group : array_like of int
        The training points to leave out together (distinct indices; not every point of
        positive weight).
    X_test : array_like of shape (q, d), optional
        Test features: also compare the change of each test loss.
    y_test : array_like of shape (q,), optional
        Test targets (with ``X_test``).
    sample_weight : array_like of shape (n,), optional
        The training weights the model was fitted with (default: all 1).

    Returns
    -------
    LeaveKOut
        A frozen dataclass (``upweight.validation.LeaveKOut``): ``idx`` (k,), the group;
        ``theta`` (p,), the refit; ``actual_params`` (p,), its difference from theta*;
        ``predicted_params`` (p,), -sum_m w_m I(z_m); ``actual_loss`` and ``predicted_loss``
        (q,), the change of each test loss and its prediction (None without ``X_test``);
        ``one_step_params`` (p,) and ``one_step_loss`` (q,) (None without ``X_test``), the
        one-step Newton estimates (NaN if the group's removal leaves no unique minimiser).

    Raises
    ------
    InputError
        If ``group`` has repeated or out-of-range indices or holds every point of positive
        weight, or the data or test points do not match the model (the message names the
        argument).
    NotFittedError
        If ``model`` is not fitted.

    Warns
    -----
    ConvergenceWarning
        If the refit stops short of its tolerance or has no finite optimum.

    See Also
    --------
    leave_one_out : One refit per point.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> lko = uw.leave_k_out(model, X, y, group=[0, 1, 2, 3, 4], X_test=X[:3], y_test=y[:3])
    >>> lko.actual_params.shape, lko.actual_loss.shape
    ((31,), (3,))
    >>> bool(np.allclose(lko.predicted_loss, lko.actual_loss, rtol=0.1, atol=1e-6))
    True
    """
    theta, Xc, yv, w, n = _setup(model, X, y, sample_weight)
    idx = as_indices(np.asarray(list(group) if not isinstance(group, np.ndarray) else group), n, "group")
    if np.unique(idx).size != idx.size:
        raise InputError("group: has repeated indices")
    wv = np.ones(n) if w is None else w
    if np.any(wv > 0) and np.all(np.delete(wv, idx) == 0):  # (all-zero weights are sample_weight's error)
        raise InputError("group: removes every training point of positive weight; nothing would be left to fit")
    t = _refit(model, Xc, yv, w, theta, [idx.tolist()], [[0.0] * len(idx)])[0]
    inf = Influence(model, X, y, sample_weight)
    wm = np.ones(len(idx)) if w is None else w[idx]
    pred = -(wm[:, None] * inf.params(idx)).sum(axis=0)
    actual_loss = predicted_loss = None
    if X_test is not None:
        f = TestLoss(X_test, y_test)
        actual_loss = _values(f, model, t) - f._values(model, theta)
        predicted_loss = -(inf.on_loss(X_test, y_test, idx=idx) * wm).sum(axis=1)
    try:
        step = inf.leave_out_params([idx])[0]
        step_loss = None if X_test is None else inf.leave_out_on_loss(X_test, y_test, [idx])[:, 0]
    except SingularHessianError:  # no unique minimiser without the group: NaN, as its refit
        step = np.full(theta.size, np.nan)
        step_loss = None if actual_loss is None else np.full(np.shape(actual_loss), np.nan)
    return LeaveKOut(idx, t, t - theta, pred, actual_loss, predicted_loss, step, step_loss)


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(a.size)
    ranks[order] = np.arange(a.size, dtype=float)
    vals, inv = np.unique(a, return_inverse=True)
    sums = np.bincount(inv, weights=ranks)
    counts = np.bincount(inv)
    return (sums / counts)[inv]


def compare(predicted, actual) -> Comparison:
    """How well predicted changes match actual ones: correlations and slope.

    Pearson and Spearman correlation, and the slope of ``actual`` regressed on ``predicted``
    (with intercept), over all entries (flattened; both must have the same shape). NaN entries
    of ``actual`` (refits with no finite optimum, see :func:`leave_one_out`) are left out; ``n``
    counts the pairs used.

    Parameters
    ----------
    predicted : array_like
        Predicted changes (e.g. ``loo.predicted_loss``); finite.
    actual : array_like
        Actual changes of the same shape (e.g. ``loo.actual_loss``); NaN entries are left out.

    Returns
    -------
    Comparison
        A frozen dataclass (``upweight.validation.Comparison``) with ``pearson``, ``spearman``
        (ties get average ranks), ``slope`` (1 when influence is exact to first order) and
        ``n``, the number of pairs used. A correlation or slope is NaN when one side is constant.

    Raises
    ------
    InputError
        If the shapes differ, ``predicted`` has a NaN or either has an infinity, or fewer than
        2 pairs are left.

    Examples
    --------
    >>> c = uw.compare([1.0, 2.0, 3.0, 4.0], [2.1, 3.9, 6.0, 8.1])
    >>> round(c.pearson, 4), c.spearman, round(c.slope, 2), c.n
    (0.9993, 1.0, 2.01, 4)
    >>> uw.compare([1.0, 2.0, 3.0], [1.0, np.nan, 3.5]).n  # a refit with no finite optimum: left out
    2
    """
    P, A = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if P.shape != A.shape:  # (5, 10) against (10, 5) would pair unrelated entries
        raise InputError(f"actual: has shape {A.shape} but predicted has shape {P.shape}")
    p, a = P.ravel(), A.ravel()
    if not np.isfinite(p).all() or np.isinf(a).any():
        raise InputError("predicted, actual: contain infinity (or NaN in predicted)")
    kept = ~np.isnan(a)
    p, a = p[kept], a[kept]
    if p.size < 2:
        raise InputError("predicted, actual: need at least 2 finite entries")
    pc, ac = p - p.mean(), a - a.mean()
    denom = np.sqrt((pc @ pc) * (ac @ ac))
    pearson = float(pc @ ac / denom) if denom > 0 else float("nan")
    rp, ra = _ranks(p), _ranks(a)
    rp, ra = rp - rp.mean(), ra - ra.mean()
    rd = np.sqrt((rp @ rp) * (ra @ ra))
    spearman = float(rp @ ra / rd) if rd > 0 else float("nan")
    slope = float(pc @ ac / (pc @ pc)) if pc @ pc > 0 else float("nan")
    return Comparison(pearson, spearman, slope, int(p.size))
