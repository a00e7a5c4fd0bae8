"""Regression diagnostics for weighted linear and generalised linear models: leverage (hat
values), Pearson and studentized residuals, Cook's distance, DFBETA(S) and exact leave-one-out
parameters for least squares, all with sample weights.

    d = uw.diagnostics(model, X, y, sample_weight=w)
    d.leverage, d.cooks_distance, d.dfbeta, d.resid_studentized_external

Conventions follow statsmodels' ``OLSInfluence`` / ``GLMInfluence`` (tests compare with them):
with a_i the Hessian weight of the loss in eta (DESIGN.md section 2) and H the Hessian of L_w,

* hat value h_i = (w_i a_i / W) z_i^T H^{-1} z_i (the weighted IRLS hat matrix when l2 = 0);
* Pearson residual e_i = sqrt(w_i) (y_i - mu_i) / sqrt(V(mu_i)), V = 1, mu (1 - mu), mu;
* scale phi = sum e_i^2 / (n - p) for least squares (n = points of positive weight), 1 otherwise;
* internally studentized r_i = e_i / sqrt(phi (1 - h_i)); externally studentized (least
  squares) with phi_(-i) = ((n - p) phi - e_i^2 / (1 - h_i)) / (n - p - 1);
* Cook's distance D_i = r_i^2 h_i / ((1 - h_i) p);
* DFBETA_i = theta* - theta_(-i) = w_i I(z_i) / (1 - h_i): exact for least squares with
  l2 = 0 (the classic 1/(1 - h) correction of the influence function), the one-step Newton
  approximation otherwise; DFBETAS scales it by sqrt(phi_(-i) [(Z^T W Z)^{-1}]_jj).

Parameters are ordered as ``model.theta_``: [coef_1..coef_d, intercept]. Single-output models
only (not multinomial).

A point of leverage 1 (to rounding: 1 - h_i <= 1e-10; e.g. the only row of a one-hot category)
determines its own fit: removing it leaves a direction unidentified. Its studentized residuals,
Cook's distance, DFBETA(S) and exact leave-one-out parameters are NaN, and a
:class:`~upweight.HighLeverageWarning` names such points; every other point's values are finite.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._validation import as_weights, training_features
from .errors import HighLeverageWarning, InputError
from .influence import Influence
from .models import check_model

__all__ = ["Diagnostics", "diagnostics"]


@dataclass(frozen=True)
class Diagnostics:
    """Regression diagnostics of a fitted single-output model, per training point.

    What :func:`diagnostics` returns (a frozen dataclass): one value (or row) per training point.

    The conventions (statsmodels' ``OLSInfluence`` / ``GLMInfluence``) and formulas are in the
    module docstring of :mod:`upweight.diagnostics`. Parameters are ordered as
    ``model.theta_``: [coef_1..coef_d, intercept], so p = d + 1. A point of leverage 1 has NaN
    studentized residuals, Cook's distance, DFBETA(S) and leave-one-out parameters.

    Parameters
    ----------
    leverage : numpy.ndarray of shape (n,)
        Hat values h_i = (w_i a_i / W) z_i^T H^{-1} z_i (they sum to p for least squares with
        l2 = 0 and unit weights).
    resid : numpy.ndarray of shape (n,)
        Raw residuals y_i - mu_i.
    resid_pearson : numpy.ndarray of shape (n,)
        Pearson residuals e_i = sqrt(w_i) (y_i - mu_i) / sqrt(V(mu_i)).
    scale : float
        The scale phi = sum e_i^2 / (n - p) for least squares (n: points of positive weight), 1 otherwise.
    resid_studentized : numpy.ndarray of shape (n,)
        Internally studentized residuals r_i = e_i / sqrt(phi (1 - h_i)).
    resid_studentized_external : numpy.ndarray of shape (n,) or None
        Externally studentized residuals (with phi_(-i)); least squares only, else None.
    cooks_distance : numpy.ndarray of shape (n,)
        Cook's distance D_i = r_i^2 h_i / ((1 - h_i) p).
    dfbeta : numpy.ndarray of shape (n, p)
        DFBETA, theta* - theta_(-i) = w_i I(z_i) / (1 - h_i): exact for least squares with l2 = 0, the
        one-step Newton approximation otherwise.
    dfbetas : numpy.ndarray of shape (n, p) or None
        DFBETA scaled by sqrt(phi_(-i) [(Z^T W Z)^{-1}]_jj); least squares only, else None.
    loo_params : numpy.ndarray of shape (n, p) or None
        The exact leave-one-out parameters theta_(-i), least squares with l2 = 0 only, else
        None.
    exact : bool
        Whether ``dfbeta`` is exact (least squares, l2 = 0) rather than one Newton step.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> Z, t = X[:, :5], X[:, 5]  # least squares: one feature from five others
    >>> d = uw.diagnostics(uw.LinearRegression().fit(Z, t), Z, t)
    >>> d.leverage.shape, d.dfbeta.shape, d.exact
    ((569,), (569, 6), True)
    >>> round(float(d.leverage.sum()), 4)  # p = 6 parameters
    6.0
    >>> int(np.argmax(d.cooks_distance))
    461
    """

    leverage: np.ndarray  # (n,)
    resid: np.ndarray  # (n,) y - mu
    resid_pearson: np.ndarray  # (n,)
    scale: float
    resid_studentized: np.ndarray  # (n,) internal
    resid_studentized_external: np.ndarray | None  # (n,) least squares only
    cooks_distance: np.ndarray  # (n,)
    dfbeta: np.ndarray  # (n, p) theta* - theta_(-i)
    dfbetas: np.ndarray | None  # (n, p) least squares only
    loo_params: np.ndarray | None  # (n, p) exact theta_(-i), least squares with l2 = 0
    exact: bool  # dfbeta is exact (least squares, l2 = 0) rather than one-step


def diagnostics(model, X, y, sample_weight=None) -> Diagnostics:
    """Regression diagnostics of a fitted single-output model on its training data.

    Leverage, residuals, Cook's distance and DFBETA(S) of a fitted single-output model on
    its training data (same X, y, sample_weight as the fit).

    The conventions follow statsmodels' ``OLSInfluence`` / ``GLMInfluence``, with sample weights;
    the formulas are in the module docstring of :mod:`upweight.diagnostics` (DESIGN.md section
    2 for the Hessian weights a_i). Solves are direct (H is formed and factored once).

    Parameters
    ----------
    model : LinearRegression, LogisticRegression or PoissonRegression
        A fitted single-output model (binary, not multinomial, for LogisticRegression).
    X : array_like of shape (n, d)
        The training features the model was fitted on.
    y : array_like of shape (n,)
        The training targets.
    sample_weight : array_like of shape (n,), optional
        The training weights the model was fitted with (default: all 1).

    Returns
    -------
    Diagnostics
        Leverage, residuals, scale, Cook's distance (n,) and DFBETA(S) (n, p); the least-squares
        only fields are None for other families.

    Raises
    ------
    InputError
        If the model is multinomial, a least-squares fit leaves no residual degrees of freedom
        (points of positive weight <= p + 1), or the data do not match the model (the message
        names the argument).
    NotFittedError
        If ``model`` is not fitted.
    SingularHessianError
        If the Hessian is singular (collinear features without a penalty).

    Warns
    -----
    HighLeverageWarning
        If a point has leverage 1; its studentized residuals, Cook's distance, DFBETA(S) and
        leave-one-out parameters are NaN.

    See Also
    --------
    leave_one_out : Exact refits without each point.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> Z, t = X[:, :5], X[:, 5]
    >>> model = uw.LinearRegression().fit(Z, t)
    >>> d = uw.diagnostics(model, Z, t)
    >>> loo = uw.leave_one_out(model, Z, t, idx=[0, 1, 2])
    >>> bool(np.allclose(d.loo_params[:3], loo.theta))  # exact for least squares
    True

    A logistic regression: one-step DFBETA, no least-squares fields.

    >>> d = uw.diagnostics(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
    >>> d.exact, d.dfbetas is None, d.scale
    (False, True, 1.0)
    """
    core = check_model(model).core_model()
    if core.n_outputs != 1:
        raise InputError("model: diagnostics are defined for single-output models (not multinomial)")
    inf = Influence(model, X, y, sample_weight, solver="direct")
    Xc, n, _ = training_features(X, model.n_features_in_)
    yv = inf.y
    w = as_weights(sample_weight, n)
    wv = np.ones(n) if w is None else w
    h = inf.leverage()
    theta = model.get_theta()
    mu = core.predict(theta, Xc, "mean")[:, 0]
    resid = yv - mu
    # for a canonical link the variance function is d mu / d eta: the intercept's entry of the
    # gradient of the mean (1 squared loss, mu (1 - mu) logistic, mu Poisson)
    variance = core.prediction_grads(theta, Xc, "mean")[:, -1]
    pearson = np.sqrt(wv) * resid / np.sqrt(variance)
    p = inf.n_params
    n_eff = int(np.count_nonzero(wv))
    least_squares = core.family == "squared"
    if least_squares:
        if n_eff <= p + 1:
            raise InputError(f"X: {n_eff} points of positive weight leave no residual degrees of freedom for {p} parameters")
        scale = float(pearson @ pearson / (n_eff - p))
    else:
        scale = 1.0
    one_minus = 1.0 - h
    # leverage 1: the point fits itself exactly; 1 / (1 - h) is undefined there (NaN, documented)
    full = one_minus <= 1e-10
    if full.any():
        idx = np.flatnonzero(full)
        warnings.warn(f"training points {idx[:10].tolist()}{' ...' if idx.size > 10 else ''} have leverage 1 (each alone "
                      "determines a direction of the fit, e.g. the only row of a category): their studentized "
                      "residuals, Cook's distances, DFBETA(S) and leave-one-out parameters are undefined (NaN)",
                      HighLeverageWarning, stacklevel=2)
    one_minus = np.where(full, np.nan, one_minus)
    with np.errstate(divide="ignore", invalid="ignore"):
        studentized = pearson / np.sqrt(scale * one_minus)
        cooks = studentized**2 * h / (one_minus * p)
        dfbeta = wv[:, None] * inf.params() / one_minus[:, None]
        exact = least_squares and float(model.l2) == 0.0
        external = dfbetas = None
        if least_squares:
            scale_i = ((n_eff - p) * scale - np.where(full, 0.0, pearson**2 / one_minus)) / (n_eff - p - 1)
            external = pearson / np.sqrt(scale_i * one_minus)
            # (Z^T W Z)^{-1} = (2 / W) H^{-1} when l2 = 0 (H = (2/W) Z^T W Z + 2 l2 mask)
            cov = 2.0 / inf.total_weight * np.diag(inf.inverse_hvp(np.eye(p)))
            dfbetas = dfbeta / np.sqrt(scale_i[:, None] * cov[None, :])
    loo = theta - dfbeta if exact else None
    return Diagnostics(h, resid, pearson, scale, studentized, external, cooks, dfbeta, dfbetas, loo, exact)
