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

scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` (fitted on sample weights s, S = sum s, or
s = 1, S = n) minimise, for ``solver="lbfgs"`` (the full batch),

    L_sk = (1/S) [sum_i s_i l_i + (alpha / 2) sum_l ||W_l||^2]   (biases not penalised)

with l_i the softmax cross-entropy (k >= 3 classes), the binary cross-entropy of ONE logistic
output unit (2 classes: ``log(1 + e^h) - y h``, y = 1 for ``classes_[1]``), the half squared
error (y - h)^2 / 2 (``loss="squared_error"``) or the half Poisson deviance (``loss="poisson"``,
exp output; e^h - y h up to a constant). It is a sum of losses with a fixed penalty, so the
converted networks have ``penalty_renormalized=False`` and

=============================================  ==============================================
sklearn, fitted (``coefs_[l]`` is W_l^T)        upweight (same ``hidden``, ``activation``)
=============================================  ==============================================
``MLPClassifier``, k >= 3 classes (softmax)     ``MLPClassifier(l2=alpha / (2 S))``: L = L_sk
``MLPClassifier``, 2 classes (one logistic      an ``MLPClassifier`` with one output and the
unit)                                           logistic head, ``l2=alpha / (2 S)``: L = L_sk
``MLPRegressor(loss="squared_error")``,         ``MLPRegressor(l2=alpha / S)``: L = 2 L_sk
one or t targets (y of shape (n, t))            (t targets: L = 2 L_g, see below)
``MLPRegressor(loss="poisson")``                a Poisson-head ``MLPRegressor``,
                                                ``l2=alpha / (2 S)``: L = L_sk + const
=============================================  ==============================================

so both have the same minimisers and the same influence. With t >= 2 targets sklearn's reported
``loss_`` averages the half squared error over the outputs, (1/(2 t S)) sum s_i ||h_i - y_i||^2,
but its gradient (what every solver follows) is that of L_g = (1/S) [sum s_i ||h_i - y_i||^2 / 2
+ (alpha / 2) sum ||W_l||^2], which the t outputs' sum of squares minimises: the conversion
follows the gradient, l2 = alpha / S as for one target. ``solver="sgd"`` / ``"adam"`` penalise
each minibatch j by alpha / (2 S_j): the epoch's mean gradient (expected over shuffled batches of
B_j points) is that of the objective above with alpha scaled by c = n mean_j(1 / B_j) (c = 1 for
one full batch, n / B for batches of B): exact without sample weights; with them S_j is taken as
B_j S / n. A warning says when c != 1, and when ``early_stopping`` held rows out. Networks'
parameters are taken as they are, never polished (a network's influence is exact at any
parameters: :mod:`upweight.networks`); to move them to a minimiser of L first,
``inf.model.set_params(warm_start=True).fit(X, y, w)``.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from ._validation import as_points, as_weights, training_features
from .errors import InputError, NotAtOptimumWarning, NotFittedError
from .models import LinearRegression, LogisticRegression, PoissonRegression, check_class_ids, explained_fraction
from .networks import MLPClassifier, MLPRegressor

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


class _BinaryMLPClassifier(MLPClassifier):
    """scikit-learn's binary network: ONE output h with the logistic head l = log(1 + e^h) - y h
    on labels y in {0, 1}, P(y = 1) = sigmoid(h). ``predict_proba`` gives both columns
    [1 - p, p]; ``predict`` is 1 where p > 0.5 (scikit-learn's rule)."""

    _head = "logistic"

    @property
    def n_outputs(self) -> int:
        return 1

    def _declare_outputs(self, k: int) -> None:
        if k != 1:
            raise InputError(f"theta: gives {k} outputs; a binary network has one")
        self.classes_ = np.arange(2)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as float64 labels 0/1 (InputError naming ``name`` otherwise)."""
        y = check_class_ids(self, y, n, fitting=fitting, name=name)
        if y.size and y.max() > 1:
            i = int(np.argmax(y > 1))
            raise InputError(f"{name}: label {y[i]:g} at index {i} is not 0 or 1 (a binary network)")
        return y

    def _p1(self, X) -> np.ndarray:
        return self.core_model().predict(self.get_theta(), as_points(X, "X", self._n_features()), "mean")[:, 0]

    def predict_proba(self, X) -> np.ndarray:
        """[1 - p, p] with p = sigmoid(h), shape (n, 2)."""
        p = self._p1(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        """1 where p > 0.5, else 0."""
        return (self._p1(X) > 0.5).astype(np.intp)

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (weighted by ``sample_weight``)."""
        _, X, y, w = self._mean_loss(X, y, sample_weight)
        return float(np.average(self.predict(X) == y, weights=w))


class _PoissonMLPRegressor(MLPRegressor):
    """scikit-learn's ``MLPRegressor(loss="poisson")``: one output h with the Poisson head
    l = e^h - y h on counts y >= 0; ``predict`` is the rate e^h."""

    _head = "poisson"

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as a finite float64 vector of length ``n``, >= 0."""
        y = super().check_targets(y, n, fitting=fitting, name=name)
        if y.ndim != 1:
            raise InputError(f"{name}: has {y.shape[1]} columns; the Poisson network head takes one target per row")
        if np.any(y < 0):
            i = int(np.argmax(y < 0))
            raise InputError(f"{name}: value {y[i]:g} at index {i} is negative (Poisson targets are >= 0)")
        return y

    def _declare_outputs(self, k: int) -> None:
        if k != 1:
            raise InputError(f"theta: gives {k} outputs; a Poisson network has one")
        self.n_outputs_ = 1

    def predict(self, X) -> np.ndarray:
        """The rate e^h, shape (n,)."""
        return self.core_model().predict(self.get_theta(), as_points(X, "X", self._n_features()), "mean")[:, 0]

    def score(self, X, y, sample_weight=None) -> float:
        """R^2 of ``predict(X)`` for ``y`` (weighted), as scikit-learn's ``MLPRegressor.score``."""
        X = as_points(X, "X", self._n_features())
        y = self.check_targets(y, X.shape[0])
        w = as_weights(sample_weight, X.shape[0])
        return explained_fraction(float(np.average((y - self.predict(X)) ** 2, weights=w)),
                                  float(np.average((y - np.average(y, weights=w)) ** 2, weights=w)))


def _class_ids(classes: np.ndarray, y) -> np.ndarray:
    """y's labels as their positions 0..k-1 in the (sorted) ``classes``; InputError naming y for a
    label outside them."""
    y = np.asarray(y)
    yv = np.searchsorted(classes, y)
    if np.any(yv >= classes.size) or np.any(classes[np.minimum(yv, classes.size - 1)] != y):
        raise InputError("y: has labels the estimator was not fitted on")
    return yv


def _minibatch_scale(estimator, n: int) -> float:
    """c = n mean_j(1 / B_j) over the minibatches of a stochastic solver's epoch (1 for a full
    batch: ``solver="lbfgs"``, or batches of all n points)."""
    if estimator.solver == "lbfgs":
        return 1.0
    batch = estimator.batch_size
    B = min(200, n) if batch == "auto" else int(np.clip(batch, 1, n))
    sizes = [B] * (n // B) + ([n % B] if n % B else [])
    return float(n * np.mean([1.0 / b for b in sizes]))


def _from_sklearn_mlp(estimator, X, y, w, name: str):
    """(network, y) for a fitted scikit-learn ``MLPClassifier`` / ``MLPRegressor``: the module
    docstring's table, parameters as they are."""
    if getattr(estimator, "coefs_", None) is None:
        raise NotFittedError(f"estimator: {name} is not fitted yet: call fit(X, y) first")
    coefs = [np.asarray(c, dtype=np.float64) for c in estimator.coefs_]
    intercepts = [np.asarray(b, dtype=np.float64) for b in estimator.intercepts_]
    theta = np.concatenate([np.column_stack([c.T, b]).reshape(-1) for c, b in zip(coefs, intercepts, strict=True)])
    hidden, d, k = tuple(c.shape[1] for c in coefs[:-1]), coefs[0].shape[0], coefs[-1].shape[1]
    activation, out = estimator.activation, estimator.out_activation_
    n = _n_rows(X)
    S = _total_weight(w, n)
    c = _minibatch_scale(estimator, n)
    if c != 1.0:
        warnings.warn(
            f"estimator: solver={estimator.solver!r} penalised each minibatch by alpha / (2 * its weight): converted with the "
            f"objective of its mean epoch gradient, alpha scaled by n mean_j(1 / B_j) = {c:.4g} (exact without sample weights; "
            "with them each batch's weight is taken as B_j W / n)",
            UserWarning,
            stacklevel=4,
        )
    if estimator.solver != "lbfgs" and getattr(estimator, "early_stopping", False):
        warnings.warn(
            f"estimator: early_stopping=True trained on a random {1 - estimator.validation_fraction:.0%} of the rows and kept the "
            "parameters of the best validation score: upweight's objective (the same one) sums over the rows of X you pass "
            "(pass only the training part if you have it), and these parameters are not its minimiser",
            NotAtOptimumWarning,
            stacklevel=4,
        )
    alpha = float(estimator.alpha) * c
    model: MLPClassifier | MLPRegressor
    if name == "MLPClassifier":
        classes = np.asarray(estimator.classes_)
        if out != "softmax" and not (out == "logistic" and k == 1):
            raise InputError(f"y: {name} fitted on multilabel targets ({k} independent logistic outputs) is not supported")
        if classes.size < 2:
            raise InputError(f"y: {name} was fitted on one class ({classes[0]!r}); a classifier needs 2 or more")
        yy = np.asarray(y)
        if yy.ndim == 2 and yy.shape[1] == 1:
            yy = yy.reshape(-1)
        if yy.ndim != 1:
            raise InputError(f"y: expected one label per row, got shape {yy.shape}")
        yv = _class_ids(classes, yy).astype(np.float64)
        model = (MLPClassifier if k > 1 else _BinaryMLPClassifier)(hidden, activation, alpha / (2.0 * S), penalty_renormalized=False)
    else:
        loss = getattr(estimator, "loss", "squared_error")
        if k != 1 and loss != "squared_error":
            raise InputError(f"y: {name}(loss={loss!r}) was fitted on {k} targets; only the squared-error head has several outputs")
        if loss == "squared_error" and out == "identity":
            model = MLPRegressor(hidden, activation, alpha / S, penalty_renormalized=False)
        elif loss == "poisson" and out == "exp":
            model = _PoissonMLPRegressor(hidden, activation, alpha / (2.0 * S), penalty_renormalized=False)
        else:
            raise InputError(f"estimator: {name}(loss={loss!r}) with output activation {out!r} is not supported")
        model.set_theta(theta, n_features=d)  # (declares the k outputs that y's columns must match)
        return model, model.check_targets(y, n)
    model.set_theta(theta, n_features=d)
    return model, yv


def from_sklearn(estimator, X, y, sample_weight=None):
    """(model, y) for a fitted scikit-learn ``LinearRegression``, ``Ridge``,
    ``LogisticRegression`` (binary or multinomial; l2 or no penalty), ``PoissonRegressor``,
    ``MLPClassifier`` or ``MLPRegressor`` (one or several targets) fitted on (X, y, sample_weight): the
    equivalent upweight model (GLMs polished to the exact optimum; networks at their parameters)
    and y as it takes it (class labels mapped to 0..k-1 in ``estimator.classes_`` order).
    ``Influence.from_sklearn`` wraps them in :class:`~upweight.Influence`."""
    name = type(estimator).__name__
    if not type(estimator).__module__.startswith("sklearn."):
        raise InputError(f"estimator: expected a scikit-learn estimator, got {name}")
    if name in ("MLPClassifier", "MLPRegressor"):
        return _from_sklearn_mlp(estimator, X, y, as_weights(sample_weight, _n_rows(X)), name)
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
        yv = _class_ids(classes, y)
        model = LogisticRegression(l2=l2, n_classes=classes.size if classes.size > 2 else None, penalty_renormalized=False)
    else:
        raise InputError(f"estimator: {name} is not supported (LinearRegression, Ridge, LogisticRegression, PoissonRegressor, "
                         "MLPClassifier, MLPRegressor)")
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
