"""Influence for models fitted with scikit-learn or statsmodels.

Their objectives are converted to upweight's exactly (DESIGN.md section 1: the weighted *mean*
loss plus ``l2 ||coef||^2``), so influence agrees with refitting *that* estimator:

=============================================  ==============================================
estimator (sample weights w, W = sum w)         upweight
=============================================  ==============================================
sklearn ``LinearRegression``                    ``LinearRegression(l2=0)``
sklearn ``Ridge(alpha)``: sum w (y - eta)^2     ``LinearRegression(l2=alpha / W)``
+ alpha ||coef||^2
sklearn ``LogisticRegression(C)``:              ``LogisticRegression(l2=1 / (2 C W))``
C sum w l + ||coef||^2 / 2                      (``l2=0`` for no penalty or ``C=inf``)
sklearn ``PoissonRegressor(alpha)``: half mean  ``PoissonRegression(l2=alpha / 2)``
deviance + alpha / 2 ||coef||^2
statsmodels ``OLS``, ``WLS`` (weights),         ``LinearRegression``, ``LogisticRegression``,
``GLM`` (Gaussian / Binomial / Poisson with     ``PoissonRegression`` with ``l2=0``;
canonical links; freq_weights x var_weights)    w = the weights
=============================================  ==============================================

Ridge and LogisticRegression penalise a *sum* of losses, so adding weight to a point does not
renormalise their penalty: their models are built with ``penalty_renormalized=False`` (see
:class:`upweight.models.Model`), so influence omits DESIGN.md's penalty term 2 l2 coef* and exact
refits (:mod:`upweight.validation`) use l2 = alpha / W with the refit's own W. PoissonRegressor
averages its loss, as upweight does.

The estimator's parameters are taken as a warm start and polished by upweight's Newton method
to the exact optimum of that objective (an iterative solver's tolerance would otherwise enter
the influence values); a :class:`NotAtOptimumWarning` says when the polish moved them by more
than 1e-4 relative to their size.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from ._validation import as_weights, training_features
from .errors import InputError, NotAtOptimumWarning
from .models import LinearRegression, LogisticRegression, PoissonRegression

__all__ = ["from_sklearn", "from_statsmodels"]


def _polish(model, theta0: np.ndarray, n_features: int, X, y, w, source: str):
    """Fit ``model`` from ``theta0`` to the exact optimum; warn if that moved it noticeably."""
    model.set_params(warm_start=True)
    model.set_theta(theta0, n_features=n_features)
    model.fit(X, y, sample_weight=w)
    model.set_params(warm_start=False)
    theta = model.get_theta()
    moved = float(np.abs(theta - theta0.reshape(-1)).max() / max(np.abs(theta).max(), 1e-300))
    if moved > 1e-4:
        warnings.warn(
            f"{source}'s parameters were {moved:.1e} (relative) from the exact optimum of its objective; influence "
            "refers to the exact optimum (refit with a tighter tol to make them agree)",
            NotAtOptimumWarning,
            stacklevel=3,
        )
    return model


def _total_weight(w, n: int) -> float:
    return float(n if w is None else np.sum(w))


def _n_rows(X) -> int:
    """Rows of X in any form the estimators take (array, list, sparse, .npy path), without
    converting or reading it."""
    if isinstance(X, (str, os.PathLike)):
        return training_features(X)[1]  # the .npy header only
    return int(np.shape(X)[0]) if hasattr(X, "shape") else len(X)


def _refuse_unmodelled(estimator, name: str) -> None:
    """Settings that change the estimator's math in ways the converted model does not follow."""
    if getattr(estimator, "class_weight", None) is not None:
        raise InputError("estimator: class_weight is not supported; pass the class weights as sample_weight "
                         "(w_i times the weight of y_i's class) to both the estimator and upweight")
    if name == "LogisticRegression" and getattr(estimator, "solver", None) == "liblinear":
        raise InputError("estimator: solver='liblinear' penalises the intercept, which upweight's models never do; "
                         "refit with solver='lbfgs' or 'newton-cholesky'")
    if getattr(estimator, "positive", False):
        raise InputError("estimator: positive=True constrains the coefficients; influence of a constrained fit is not modelled")


def from_sklearn(estimator, X, y, sample_weight=None):
    """(model, y) for a fitted scikit-learn ``LinearRegression``, ``Ridge``,
    ``LogisticRegression`` (binary or multinomial; l2 or no penalty) or ``PoissonRegressor``
    fitted on (X, y, sample_weight): the equivalent upweight model, polished to the exact
    optimum, and y as it takes it (class labels mapped to 0..k-1 in ``estimator.classes_``
    order). ``Influence.from_sklearn`` wraps them in :class:`~upweight.Influence`."""
    name = type(estimator).__name__
    if not type(estimator).__module__.startswith("sklearn."):
        raise InputError(f"estimator: expected a scikit-learn estimator, got {name}")
    if not hasattr(estimator, "coef_"):
        raise InputError(f"estimator: {name} is not fitted")
    if not getattr(estimator, "fit_intercept", True):
        raise InputError("estimator: fit_intercept=False is not supported (upweight's models always have an intercept)")
    _refuse_unmodelled(estimator, name)
    n = _n_rows(X)
    w = as_weights(sample_weight, n)
    W = _total_weight(w, n)
    coef = np.atleast_2d(np.asarray(estimator.coef_, dtype=np.float64))
    intercept = np.atleast_1d(np.asarray(estimator.intercept_, dtype=np.float64))
    # Ridge and LogisticRegression penalise a *sum* of losses: adding weight to a point does not
    # renormalise their penalty (penalty_renormalized=False: influence omits the 2 l2 coef* term
    # and refits rescale l2)
    model: LinearRegression | LogisticRegression | PoissonRegression
    if name == "LinearRegression":
        model, yv = LinearRegression(l2=0.0), y
    elif name == "Ridge":
        alpha = float(np.asarray(estimator.alpha))
        if np.ndim(estimator.alpha) or coef.shape[0] != 1:
            raise InputError("estimator: Ridge with one alpha and a single target is supported")
        model, yv = LinearRegression(l2=alpha / W, penalty_renormalized=False), y
    elif name == "PoissonRegressor":
        model, yv = PoissonRegression(l2=float(estimator.alpha) / 2), y
    elif name == "LogisticRegression":
        penalty = getattr(estimator, "penalty", "l2")
        l1_ratio = getattr(estimator, "l1_ratio", None)
        if penalty in ("l1", "elasticnet") or (l1_ratio not in (None, 0, 0.0) and penalty != "l2"):
            raise InputError(f"estimator: only the l2 penalty (or none) is supported, got penalty={penalty!r}, l1_ratio={l1_ratio!r}")
        C = float(estimator.C)
        l2 = 0.0 if penalty is None or penalty == "none" or math.isinf(C) else 1.0 / (2.0 * C * W)
        classes = np.asarray(estimator.classes_)
        yv = np.searchsorted(classes, np.asarray(y))
        if np.any(yv >= classes.size) or np.any(classes[np.minimum(yv, classes.size - 1)] != np.asarray(y)):
            raise InputError("y: has labels the estimator was not fitted on")
        model = LogisticRegression(l2=l2, n_classes=classes.size if classes.size > 2 else None, penalty_renormalized=False)
    else:
        raise InputError(f"estimator: {name} is not supported (LinearRegression, Ridge, LogisticRegression, PoissonRegressor)")
    rows = np.column_stack([coef, intercept])
    if name == "LogisticRegression" and classes.size > 2 and coef.shape[0] == classes.size:
        rows = rows - rows.mean(axis=0)  # the pinned (identified) multinomial parameters
    yv = np.asarray(yv, dtype=np.float64)
    return _polish(model, rows.reshape(-1), coef.shape[1], X, yv, w, name), yv


def from_statsmodels(results):
    """(model, X, y, sample_weight) equivalent to fitted statsmodels ``OLS``/``WLS``/``GLM``
    results: X without the constant column, the upweight model polished to the exact optimum."""
    m = results.model
    name = type(m).__name__
    exog = np.asarray(m.exog, dtype=np.float64)
    y = np.asarray(m.endog, dtype=np.float64)
    const = [j for j in range(exog.shape[1]) if np.all(exog[:, j] == 1.0)]
    if len(const) != 1:
        raise InputError("results: the model needs exactly one constant column (sm.add_constant): "
                         "upweight's models always have an intercept")
    j0 = const[0]
    X = np.delete(exog, j0, axis=1)
    params = np.asarray(results.params, dtype=np.float64)
    theta0 = np.append(np.delete(params, j0), params[j0])
    model: LinearRegression | LogisticRegression | PoissonRegression
    if name in ("OLS", "WLS"):
        w = None if name == "OLS" else np.asarray(m.weights, dtype=np.float64) * np.ones(len(y))
        model = LinearRegression(l2=0.0)
    elif name == "GLM":
        for term in ("offset", "exposure"):
            if getattr(m, term, None) is not None and np.any(np.asarray(getattr(m, term)) != 0):
                raise InputError(f"results: a GLM with an {term} is not supported (a fixed term in the linear predictor)")
        fam = type(m.family).__name__
        link = type(m.family.link).__name__
        canonical: dict[str, tuple[str, type[LinearRegression | LogisticRegression | PoissonRegression]]] = {
            "Gaussian": ("Identity", LinearRegression), "Binomial": ("Logit", LogisticRegression), "Poisson": ("Log", PoissonRegression)}
        if fam not in canonical or link != canonical[fam][0]:
            raise InputError(f"results: GLM family {fam} with link {link} is not supported "
                             "(Gaussian/identity, Binomial/logit, Poisson/log)")
        w = np.asarray(m.freq_weights, dtype=np.float64) * np.asarray(m.var_weights, dtype=np.float64)
        w = None if np.all(w == 1.0) else w
        model = canonical[fam][1](l2=0.0)
    else:
        raise InputError(f"results: {name} is not supported (OLS, WLS, GLM)")
    if type(results).__name__.startswith("Regularized"):  # RegularizedResults or its wrapper
        raise InputError("results: regularised fits (fit_regularized) are not supported")
    model = _polish(model, theta0, X.shape[1], X, y, w, name)
    return model, X, y, w
