"""Weighted generalised linear models fitted by Newton's method in the Rust core.

All estimators minimise the objective of DESIGN.md section 1,

    L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 * ||coef||^2,

with the intercept unpenalised. ``theta_`` is laid out as ``[coef..., intercept]`` (one such row
per class for multinomial regression).

scikit-learn's estimator API
----------------------------
The estimators follow scikit-learn's estimator API by duck typing, without inheriting from
``sklearn.base.BaseEstimator`` (scikit-learn is an optional extra of upweight, not a
dependency, and upweight never imports it): ``fit`` returns self; ``get_params`` /
``set_params`` cover every constructor argument, so ``sklearn.base.clone``, ``GridSearchCV``
and ``cross_val_score`` work; fitted attributes end in ``_`` and exist only after ``fit``;
``score`` is R^2 (LinearRegression), D^2, the fraction of Poisson deviance explained
(PoissonRegression, as scikit-learn's ``PoissonRegressor``), or accuracy (LogisticRegression);
``__sklearn_tags__`` describes each estimator to scikit-learn >= 1.6 (it imports scikit-learn,
and only scikit-learn calls it), ``_estimator_type`` to older versions; fitted models pickle.

They pass scikit-learn's ``check_estimator`` except for checks that conflict with upweight's
contract. ``EXPECTED_FAILED_CHECKS`` in ``tests/test_sklearn_compat.py`` is the list, with a
reason for each (pass ``expected_failed_checks(estimator)`` from there to ``check_estimator``):

- every estimator: errors are upweight's own (``NotFittedError`` is not scikit-learn's class;
  complex and object-dtype X are an ``InputTypeError``; a column-vector y is an ``InputError``,
  not raveled; a wrong number of features is refused in upweight's words), and X with 0 columns
  fits an intercept-only model;
- LinearRegression, PoissonRegression: they have ``decision_function`` (the linear predictor);
- LogisticRegression: labels are integer class ids 0..k-1 (no strings), and a continuous y is
  refused without the words the check looks for;
- with ``l2 = 0`` (the default) only: an objective without a unique finite optimum (more
  parameters than points; separable classes for LogisticRegression, which the checks' data
  mostly are) raises ``SingularHessianError`` by design. With ``l2 > 0`` those checks pass.
"""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable

import numpy as np

from . import _core
from ._backends import backend_for
from ._validation import as_nonneg_float, as_points, as_positive_int, as_progress, as_vector, as_weights, n_rows, training_features
from .errors import ConvergenceWarning, InputError, NotFittedError, SingularHessianError
from .solver import resolve, work

__all__ = ["LinearRegression", "LogisticRegression", "Model", "PoissonRegression", "check_model"]


@runtime_checkable
class Model(Protocol):
    """What the rest of upweight needs of a model (DESIGN.md section 5: a model family is one
    Rust type implementing the core's model trait plus one Python class declaring this protocol).
    Every estimator here implements it, and so do the models :mod:`upweight.interop` builds from
    scikit-learn and statsmodels; :class:`~upweight.Influence`, validation, diagnostics,
    persistence and the CLI talk to models only through it.

    Attributes and methods:

    ``l2``
        The ridge penalty: the objective is the weighted *mean* loss plus ``l2 * ||coef||^2``
        (DESIGN.md section 1; intercepts are not penalised).
    ``penalty_renormalized``
        The penalty convention. True (the default, DESIGN.md's objective): the penalty sits
        outside a weighted *average*, so adding weight to a point renormalises the average and
        influence carries the term ``2 l2 coef*``. False: the model stands for an estimator that
        penalises a *sum* of losses (scikit-learn's ``Ridge`` and ``LogisticRegression``,
        converted with ``l2 = alpha / W``): influence omits that term and exact refits rescale
        ``l2`` with the refit's own W. Set it with the constructor keyword or ``set_params``.
    ``n_features_in_``
        Number of features d (set by fitting).
    ``n_params``
        p, the length of the flat parameter vector theta.
    ``get_theta()``
        A flat float64 copy of theta (length ``n_params``); NotFittedError before fitting.
    ``set_theta(theta, *, n_features=None)``
        Set theta from a flat vector; with ``n_features``, first declare the fitted shape (a model
        restored from a file or converted from another library: theta's length then decides the
        number of outputs where the family has several).
    ``check_targets(y, n, *, fitting=False)``
        ``y`` validated for this family as a float64 vector of length ``n`` (InputError naming
        ``y`` otherwise); ``fitting=True`` when the targets define the fitted shape (classes).
    ``core_model()``
        The model as the Rust core holds it: a ``upweight._core.Model`` built once from the
        family's spec (``_core.Model.glm(family, n_classes, n_features)`` for the GLMs), which
        knows its dimensions (``n_params``, ``n_features``, ``n_outputs``) and computes losses,
        gradients, predictions, fits and refits. Influence is built on it.

    Exact refits (:mod:`upweight.validation`) also honour, when present, the estimator's
    ``solver``, ``max_iter`` and ``grad_norm_``.
    """

    l2: float
    penalty_renormalized: bool

    @property
    def n_features_in_(self) -> int: ...

    @property
    def n_params(self) -> int: ...

    def get_theta(self) -> np.ndarray: ...

    def set_theta(self, theta, *, n_features: int | None = None) -> None: ...

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray: ...

    def core_model(self) -> _core.Model: ...


#: The names :class:`Model` declares (for error messages).
# A converged fit whose last Newton step still moved a linear predictor by more than this
# diverges (see check_not_diverging): such steps are about 1 when there is no finite
# optimum, and shrink quadratically (far below this even at a loose tol) when there is one.
DIVERGING_STEP = 0.5

def check_not_diverging(row: int, moved: float, what: str = "the fit") -> None:
    """Raise SingularHessianError if a converged fit (l2 = 0) has no finite optimum: its last
    Newton step still moved training point ``row``'s linear predictor by ``moved``.

    At a finite optimum Newton's steps shrink quadratically, so the last step moves no linear
    predictor by more than a rounding-level amount. Without one (classes separated completely or
    quasi-completely; a feature nonzero only for points the model can fit perfectly, e.g. a
    one-hot column used by one row; a Poisson group whose counts are all 0) the gradient vanishes
    only as theta runs off to infinity, and every step still moves some fitted point's linear
    predictor by about 1 (its log-odds or log-rate). The test is in units of the linear predictor,
    so the features' units do not matter.
    """
    if moved > DIVERGING_STEP:
        raise SingularHessianError(
            f"{what} diverges: Newton's last step still moved training point {row}'s linear predictor by "
            f"{moved:.2g} (a finite optimum's steps shrink quadratically), so the unpenalised loss has no "
            "finite minimiser: the classes are (quasi-)separated, or a feature is nonzero only on points the "
            "model fits perfectly (e.g. a one-hot column used by one row). Use l2 > 0, or drop that feature"
        )


MODEL_MEMBERS = ("l2", "penalty_renormalized", "n_features_in_", "n_params", "get_theta", "set_theta", "check_targets", "core_model")


def check_model(model, arg: str = "model") -> Model:
    """``model`` if it implements :class:`Model` and is fitted. Otherwise an InputError naming
    ``arg`` (and the members it lacks), or, for a model that is not fitted yet, NotFittedError
    naming ``arg``."""
    if not isinstance(model, Model):
        get_theta = getattr(model, "get_theta", None)
        if callable(get_theta):  # a model whose fitted attributes do not exist yet
            try:
                get_theta()
            except NotFittedError as exc:
                raise NotFittedError(f"{arg}: {exc}") from None
        missing = ", ".join(name for name in MODEL_MEMBERS if not hasattr(model, name))
        raise InputError(
            f"{arg}: expected a fitted upweight model (an estimator of upweight.models, or Influence.from_sklearn / "
            f"from_statsmodels for other libraries' models), got {type(model).__name__} (it lacks {missing} of upweight.models.Model)"
        )
    try:
        model.get_theta()
    except NotFittedError as exc:
        raise NotFittedError(f"{arg}: {exc}") from None
    return model


def set_params(estimator, params: dict):
    """scikit-learn's ``set_params`` for upweight's estimators: each key must be one of
    ``estimator.get_params()`` (InputError naming it otherwise); returns the estimator."""
    valid = estimator.get_params()
    for key, value in params.items():
        if key not in valid:
            raise InputError(f"{key}: not a parameter of {type(estimator).__name__} (one of {', '.join(valid)})")
        setattr(estimator, key, value)
    return estimator


def explained_fraction(loss: float, null: float) -> float:
    """1 - loss / null, the fraction of the null model's loss explained (R^2, D^2), with
    scikit-learn's convention for a null loss of 0 (constant targets): 1.0 for a perfect fit,
    else 0.0."""
    if null == 0.0:
        return 1.0 if loss == 0.0 else 0.0
    return float(1.0 - loss / null)


class _GLM:
    """Shared machinery: fitting, parameters, predictions on the linear predictor; implements
    :class:`Model`.

    ``penalty_renormalized`` (keyword): the penalty convention of :class:`Model`; leave it True
    unless the model stands for an estimator that penalises a sum of losses (what
    :mod:`upweight.interop` sets for scikit-learn's ``Ridge`` and ``LogisticRegression``).
    """

    _family: str = ""
    _positive_targets = False  # scikit-learn's positive_only target tag
    theta_: np.ndarray  # the one source of truth: coef_ and intercept_ are read from and written into it
    n_features_in_: int

    def __init__(self, l2: float = 0.0, *, tol: float = 1e-10, max_iter: int = 100, warm_start: bool = False,
                 solver: str = "auto", progress=None, penalty_renormalized: bool = True):
        self.l2 = l2
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.progress = progress
        self.penalty_renormalized = penalty_renormalized

    # -- scikit-learn protocol (duck-typed: see the module docstring) ----------------------
    #: what scikit-learn < 1.6 reads to tell regressors from classifiers (>= 1.6 reads the tags)
    _estimator_type = "regressor"

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments by name (``deep`` is accepted for scikit-learn and ignored:
        no parameter is itself an estimator)."""
        return {"l2": self.l2, "tol": self.tol, "max_iter": self.max_iter, "warm_start": self.warm_start,
                "solver": self.solver, "progress": self.progress, "penalty_renormalized": self.penalty_renormalized}

    def set_params(self, **params):
        """Set parameters by name (those of ``get_params``); returns self."""
        return set_params(self, params)

    def __repr__(self) -> str:
        params = self.get_params()
        if params["penalty_renormalized"]:  # the default convention is not shown
            del params["penalty_renormalized"]
        args = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{type(self).__name__}({args})"

    def __sklearn_tags__(self):
        """scikit-learn's description of the estimator (scikit-learn >= 1.6 asks for it; it is
        imported here, not by upweight): a regressor (classifier for LogisticRegression) that
        requires y, takes scipy.sparse X, and refuses NaN."""
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True, positive_only=self._positive_targets),
                    regressor_tags=RegressorTags(), input_tags=InputTags(sparse=True))

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "theta_", None) is not None

    def score(self, X, y, sample_weight=None) -> float:
        """R^2, the coefficient of determination of ``predict(X)`` for ``y`` (weighted by
        ``sample_weight``), as scikit-learn's regressors score: 1 - sum w (y - predict)^2 /
        sum w (y - mean_w y)^2; 1.0 for a perfect fit, lower (even negative) otherwise, and
        0.0 (1.0 if the fit is perfect) when y is constant."""
        loss, _, y, w = self._mean_loss(X, y, sample_weight)
        y_mean = np.average(y, weights=w)
        null = np.average((y - y_mean) ** 2, weights=w)
        return explained_fraction(loss, null)

    def _mean_loss(self, X, y, sample_weight) -> tuple[float, object, np.ndarray, np.ndarray | None]:
        """(weighted mean loss on (X, y), X, y, weights), each argument checked as ``fit`` checks
        it (InputError naming it)."""
        X = as_points(X, "X", self._n_features())
        y = self.check_targets(self._required(y), n_rows(X))
        w = as_weights(sample_weight, n_rows(X))
        loss, _ = self.core_model().objective(self.get_theta(), X, y, w, 0.0)  # checks y and w for the family
        return loss, X, y, w

    # -- family hooks ----------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The loss family the core uses: squared, logistic, poisson or multinomial."""
        return self._family

    @property
    def n_classes(self) -> int:
        """Number of linear predictors per example (k); 1 except for multinomial."""
        return 1

    # -- the Model protocol ----------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """p = k (d + 1): one row [coef..., intercept] per linear predictor."""
        return self.n_classes * (self._n_features() + 1)

    def core_model(self) -> _core.Model:
        """The fitted model as the Rust core holds it (its family and dimensions)."""
        return self._core_model(self._n_features())

    def _core_model(self, n_features: int) -> _core.Model:
        return _core.Model.glm(self.family, self.n_classes, n_features)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as a float64 vector of length ``n`` (InputError naming ``name`` otherwise)."""
        return as_vector(y, name, n)

    def get_theta(self) -> np.ndarray:
        """A flat float64 copy of ``theta_`` (``theta_.reshape(-1)``); NotFittedError before fit."""
        self._check_fitted()
        return np.array(self.theta_, dtype=np.float64).reshape(-1)

    def set_theta(self, theta, *, n_features: int | None = None) -> None:
        """Set ``theta_`` (and ``coef_``, ``intercept_``) from a flat vector of length
        ``n_params``. With ``n_features``, first declare the fitted shape: d features, and the
        number of outputs that theta's length implies (classes, for LogisticRegression)."""
        theta = np.array(theta, dtype=np.float64).reshape(-1)
        if n_features is not None:
            if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 0:
                raise InputError(f"n_features: expected an integer >= 0, got {n_features!r}")
            d = int(n_features)
            if theta.size == 0 or theta.size % (d + 1):
                raise InputError(f"theta: has {theta.size} entries, not a positive multiple of n_features + 1 = {d + 1}")
            self._declare_outputs(theta.size // (d + 1))
            self.n_features_in_ = d
        if getattr(self, "n_features_in_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first, or pass n_features")
        k = self.n_classes
        p = k * (self.n_features_in_ + 1)
        if theta.size != p:
            raise InputError(f"theta: has {theta.size} entries, expected p = {p}")
        self.theta_ = theta if k == 1 else theta.reshape(k, -1)

    # -- coef_ and intercept_: parts of theta_, read from it and written into it -------------------
    def _fitted_theta(self) -> np.ndarray:
        theta = self.__dict__.get("theta_")
        if theta is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")
        return theta

    @property
    def coef_(self) -> np.ndarray:
        """The coefficients, (d,) or (k, d) for multinomial: a view of ``theta_``, so assigning to
        it (whole or by entries) changes the model's parameters."""
        theta = self._fitted_theta()
        return theta[:-1] if theta.ndim == 1 else theta[:, :-1]

    @coef_.setter
    def coef_(self, value) -> None:
        self._set_part("coef_", lambda t: t[:-1] if t.ndim == 1 else t[:, :-1], value)

    @property
    def intercept_(self) -> float | np.ndarray:
        """The intercept: a float, or (k,) for multinomial (a view of ``theta_``)."""
        theta = self._fitted_theta()
        return float(theta[-1]) if theta.ndim == 1 else theta[:, -1]

    @intercept_.setter
    def intercept_(self, value) -> None:
        one = self._fitted_theta().ndim == 1
        self._set_part("intercept_", lambda t: t[-1:] if one else t[:, -1], np.reshape(value, -1) if one else value)

    def _set_part(self, name: str, select, value) -> None:
        """Write ``value`` into the part ``select(theta_)`` of the parameters."""
        theta = self._fitted_theta()
        if not theta.flags.writeable:
            theta = self.theta_ = theta.copy()
        part = select(theta)
        value = np.asarray(value, dtype=np.float64)
        if value.shape != part.shape:
            raise InputError(f"{name}: has shape {value.shape}, expected {part.shape}")
        if not np.all(np.isfinite(value)):
            raise InputError(f"{name}: contains NaN or infinity")
        part[...] = value

    def _declare_outputs(self, k: int) -> None:
        if k != 1:
            raise InputError(f"theta: {type(self).__name__} has one output, got parameters for {k}")

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit by weighted Newton's method; returns self.

        ``progress(pass, rows_done, rows_total)``, if set, is called during long fits.
        ``solver``: each Newton step solves H s = -g "direct"ly (forms H) or by truncated
        conjugate gradients on Hessian-vector products ("cg", H never formed); "auto" picks the
        cheaper per step by the cost model of :mod:`upweight.solver`.
        ``X`` may be float64 or float32 (used as float32, widened block by block), a scipy.sparse
        matrix (used in CSR form, never densified), or the path of a ``.npy`` file (or its
        ``np.load(..., mmap_mode="r")`` memmap), streamed block by block. Dask arrays chunked by
        rows (X, y and sample_weight with the same row chunks) are fitted on Dask's scheduler by
        :func:`upweight.dask.fit` (one pass over the chunks per Newton step).

        Sets ``theta_``, ``coef_``, ``intercept_``, ``n_iter_``, ``grad_norm_`` (max absolute
        gradient entry at the solution), ``converged_`` and ``objective_``. Converged means max
        |grad L_w| <= ``tol``, or a Newton decrement g^T H^-1 g at rounding level (which, unlike
        the gradient, does not depend on the features' units); otherwise, after ``max_iter``
        steps, a :class:`ConvergenceWarning`. Raises ``InputError`` for targets with no finite
        optimum (a class without positive weight) and ``SingularHessianError`` when the objective
        has no unique finite minimiser (README, Reliability). A fit that raises leaves the
        estimator as it was before the call.
        """
        backend = backend_for(X, y, sample_weight)  # a training set on Dask: upweight.dask.fit
        if backend is not None:
            return backend.fit(self, X, y, sample_weight)
        before = dict(self.__dict__)
        try:
            return self._fit(X, y, sample_weight)
        except BaseException:
            # all or nothing: no new classes_ beside an old theta_, no half-set attributes
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, X, y, sample_weight):
        X, n, d = training_features(X)
        y = self.check_targets(self._required(y), n, fitting=True)
        w = as_weights(sample_weight, n)
        if w is None or (np.all(w >= 0) and np.any(w > 0)):  # (bad weights: the core names sample_weight)
            self._check_intercepts_finite(y, w)
        l2 = as_nonneg_float(self.l2, "l2")
        tol = as_nonneg_float(self.tol, "tol")
        max_iter = as_positive_int(self.max_iter, "max_iter")
        as_progress(self.progress)
        theta0 = None
        prev = getattr(self, "theta_", None) if self.warm_start else None
        if prev is not None and prev.size == self.n_classes * (d + 1):
            theta0 = np.ascontiguousarray(prev.reshape(-1), dtype=np.float64)
        # "auto": the cost model of Influence's "auto", for one right-hand side per step
        solver = resolve(self.solver, work(n, self.n_classes * (d + 1), self.n_classes, X))
        may_diverge = l2 == 0 and self.family != "squared"
        theta, n_iter, grad_norm, converged, objective, moved = self._core_model(d).fit(
            X, y, w, l2, tol, max_iter, theta0, self.progress, solver, may_diverge
        )
        self.n_features_in_ = d
        self.set_theta(theta)
        if may_diverge:  # the same checks whatever the storage of X (a .npy file is read once more)
            self._check_separation(X, y, w)
            if converged and moved is not None:
                check_not_diverging(*moved)
        self.n_iter_ = n_iter
        self.grad_norm_ = grad_norm
        self.converged_ = converged
        self.objective_ = objective
        if not converged:
            warnings.warn(
                f"{type(self).__name__}: Newton's method stopped after {n_iter} iterations with "
                f"gradient norm {grad_norm:.3g} > tol={tol:g}; influence values assume an exact "
                "optimum. Increase max_iter, use l2 > 0 if the data are nearly separable, or raise "
                "tol if the gradient stalled at rounding level (large-valued targets or features).",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _required(self, y):
        """``y`` unless it is None (InputError naming ``y``: a supervised model needs targets)."""
        if y is None:
            raise InputError(f"y: {type(self).__name__} requires y to be passed, but the target y is None")
        return y

    def _check_separation(self, X, y, w) -> None:
        """Classification families only: see LogisticRegression."""

    def _check_intercepts_finite(self, y: np.ndarray, w: np.ndarray | None) -> None:
        """Refuse weighted targets for which an intercept has no finite optimum, whatever l2
        (intercepts are not penalised): see PoissonRegression and LogisticRegression."""

    def _check_fitted(self) -> None:
        if getattr(self, "theta_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")

    def decision_function(self, X) -> np.ndarray:
        """The linear predictor eta = X coef + intercept: (n,) or (n, k) for multinomial."""
        X = as_points(X, "X", self._n_features())
        eta = self.core_model().predict(self.get_theta(), X, "linear")
        return eta[:, 0] if self.n_classes == 1 else eta

    def _mean(self, X) -> np.ndarray:
        return self._mean_of(as_points(X, "X", self._n_features()))

    def _mean_of(self, points) -> np.ndarray:
        """The mean response at points already checked by :func:`as_points`."""
        m = self.core_model().predict(self.get_theta(), points, "mean")
        return m[:, 0] if self.n_classes == 1 else m

    def _n_features(self) -> int:
        self._check_fitted()
        return self.n_features_in_

    def loss(self, X, y) -> np.ndarray:
        """Per-example losses l(z_i; theta_) (DESIGN.md section 2), shape (n,)."""
        X = as_points(X, "X", self._n_features())
        y = self.check_targets(y, n_rows(X))
        return self.core_model().losses(self.get_theta(), X, y)


class LinearRegression(_GLM):
    """Least squares with an optional ridge penalty: loss (x.coef + b - y)^2.

    ``l2`` multiplies ``||coef||^2`` added to the *mean* weighted squared error.

    A scikit-learn regressor (module docstring): ``score`` is R^2. Of scikit-learn's estimator
    checks it fails, by contract, those on upweight's own errors, 0-column X and
    ``decision_function``, and with ``l2 = 0`` those fitting more parameters than points
    (``SingularHessianError``); ``tests/test_sklearn_compat.py`` lists them with reasons.
    """

    _family = "squared"

    def predict(self, X) -> np.ndarray:
        return self.decision_function(X)


class PoissonRegression(_GLM):
    """Poisson regression with log link: loss exp(eta) - y eta for counts y >= 0.

    A scikit-learn regressor (module docstring) with nonnegative targets: ``score`` is D^2, the
    fraction of Poisson deviance explained, as for scikit-learn's ``PoissonRegressor``. It fails
    the same scikit-learn checks as LinearRegression, for the same reasons.
    """

    _family = "poisson"
    _positive_targets = True

    def _check_intercepts_finite(self, y, w) -> None:
        """All-zero counts (with positive weight) drive the intercept to -inf: refuse."""
        total = float(np.dot(y, w)) if w is not None else float(y.sum())
        if not total > 0:
            raise InputError(
                "y: every count with positive weight is 0, so the rate's intercept has no finite optimum "
                "(it goes to -inf): PoissonRegression needs some positive count"
            )

    def predict(self, X) -> np.ndarray:
        """Predicted rate exp(eta)."""
        return self._mean(X)

    def score(self, X, y, sample_weight=None) -> float:
        """D^2, the fraction of Poisson deviance explained, as scikit-learn's ``PoissonRegressor``
        scores: 1 - D(y, predict(X)) / D(y, mean_w y), D the (weighted) Poisson deviance and the
        null model predicting the weighted mean of y; 1.0 for a perfect fit, lower (even
        negative) otherwise."""
        loss, _, y, w = self._mean_loss(X, y, sample_weight)  # mean of exp(eta) - y eta
        # the half deviance is the loss plus y log y - y, which is zero at the optimum mu = y
        constant = np.average(y * np.log(np.where(y > 0, y, 1.0)) - y, weights=w)
        mu = np.average(y, weights=w)
        null = mu - mu * np.log(mu) if mu > 0 else 0.0
        return explained_fraction(loss + constant, null + constant)


class LogisticRegression(_GLM):
    """Logistic regression on integer class labels 0..k-1.

    Two classes give binary logistic regression (``theta_`` of shape (d+1,)); more give
    multinomial (softmax) regression with ``theta_`` of shape (k, d+1). The number of classes is
    ``n_classes`` if given, else ``max(y) + 1``.

    Multinomial parameters are identified by pinning: adding one constant to every class's
    intercept (and, when ``l2 == 0``, one vector to every class's row) changes no prediction, so
    the solution returned is the one orthogonal to those directions: intercepts (and, with
    ``l2 == 0``, coefficients) sum to zero over classes.

    A scikit-learn classifier (module docstring): ``classes_`` is ``arange(k)``, ``score`` is
    accuracy. Of scikit-learn's estimator checks it fails, by contract, those on upweight's own
    errors and 0-column X, those that pass string or continuous labels (class ids only), and
    with ``l2 = 0`` (the default) most of those that fit, because the checks' classes are
    separable and an unpenalised fit then refuses (``SingularHessianError``: use ``l2 > 0``);
    ``tests/test_sklearn_compat.py`` lists them with reasons.
    """

    def __init__(self, l2: float = 0.0, *, n_classes: int | None = None, tol: float = 1e-10, max_iter: int = 100,
                 warm_start: bool = False, solver: str = "auto", progress=None, penalty_renormalized: bool = True):
        super().__init__(l2, tol=tol, max_iter=max_iter, warm_start=warm_start, solver=solver, progress=progress,
                         penalty_renormalized=penalty_renormalized)
        self.n_classes_param = n_classes

    # The constructor's ``n_classes`` is kept as ``n_classes_param``: the property ``n_classes``
    # is the fitted number of linear predictors (1 for binary). Its storage is private, so that
    # scikit-learn sees no public attribute set by __init__ besides the parameters.
    @property
    def n_classes_param(self) -> int | None:
        """The constructor argument ``n_classes`` (None: ``max(y) + 1`` when fitting)."""
        return self._n_classes

    @n_classes_param.setter
    def n_classes_param(self, value: int | None) -> None:
        self._n_classes = value

    def get_params(self, deep: bool = True) -> dict:
        return {**super().get_params(deep), "n_classes": self.n_classes_param}

    def set_params(self, **params):
        if "n_classes" in params:
            self.n_classes_param = params.pop("n_classes")
        return super().set_params(**params)

    _estimator_type = "classifier"

    def __sklearn_tags__(self):
        """scikit-learn's description: a classifier (binary and multiclass) that requires y,
        takes scipy.sparse X, and refuses NaN."""
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True), classifier_tags=ClassifierTags(),
                    input_tags=InputTags(sparse=True))

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy: the (``sample_weight``-weighted) fraction of ``y`` that ``predict(X)``
        gets right, as scikit-learn's classifiers score."""
        _, X, y, w = self._mean_loss(X, y, sample_weight)
        return float(np.average(self._predict_of(X) == y, weights=w))

    @property
    def family(self) -> str:
        return "logistic" if self.n_classes == 1 else "multinomial"

    @property
    def n_classes(self) -> int:
        k = getattr(self, "classes_", None)
        if k is None:
            raise NotFittedError("LogisticRegression is not fitted yet: call fit(X, y) first")
        return 1 if len(k) == 2 else len(k)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as float64 class ids 0..k-1 (InputError naming ``name`` otherwise). ``fitting``:
        the labels define ``classes_`` (``n_classes`` if given, else ``max(y) + 1``)."""
        return check_class_ids(self, y, n, fitting=fitting, name=name)

    def _declare_outputs(self, k: int) -> None:
        self.classes_ = np.arange(2 if k == 1 else k)

    def _check_intercepts_finite(self, y, w) -> None:
        """A class with no positive weight drives its (unpenalised) intercept to -inf, and
        the fit to no finite optimum: refuse, naming the class."""
        k = len(self.classes_)
        weight = np.bincount(y.astype(np.intp), weights=w, minlength=k)
        empty = np.flatnonzero(~(weight > 0))
        if empty.size == k - 1:
            raise InputError(
                f"y: only one class ({int(np.argmax(weight))}) has points of positive weight; LogisticRegression needs "
                "at least 2 classes (the intercept of a class without points has no finite optimum)"
            )
        if empty.size:
            c = int(empty[0])
            how = "has no training point" if not np.any(y == c) else "has only points of weight 0"
            raise InputError(
                f"y: class {c} of 0..{k - 1} {how}, so its intercept has no finite optimum (it goes to -inf) "
                "whatever l2: relabel the classes present as 0..k-1 (np.unique(y, return_inverse=True)) "
                "or drop n_classes"
            )

    def _check_separation(self, X, y, w) -> None:
        """Without a penalty, classes that some theta classifies perfectly have no finite
        optimum (scaling theta up always lowers the loss): Newton's gradient then vanishes at a
        huge theta and influence would be meaningless, so refuse."""
        eta = self.core_model().predict(self.get_theta(), X, "linear")
        if self.n_classes == 1:
            eta = eta[:, 0]
            correct = (2 * y - 1) * eta > 0
        else:
            correct = np.argmax(eta, axis=1) == y
        if w is not None:
            correct = correct | (w == 0)
        if correct.all():
            raise SingularHessianError(
                "the classes are perfectly separable, so the unpenalised loss has no finite minimiser "
                "(and no Hessian to invert there): use l2 > 0"
            )

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, shape (n, k) (k = 2 for binary)."""
        return self._proba_of(as_points(X, "X", self._n_features()))

    def _proba_of(self, points) -> np.ndarray:
        m = self._mean_of(points)
        return np.column_stack([1.0 - m, m]) if self.n_classes == 1 else m

    def predict(self, X) -> np.ndarray:
        """The most probable class id."""
        return self._predict_of(as_points(X, "X", self._n_features()))

    def _predict_of(self, points) -> np.ndarray:
        return np.argmax(self._proba_of(points), axis=1)


def check_class_ids(model, y, n: int, *, fitting: bool, name: str) -> np.ndarray:
    """``y`` as float64 class ids 0..k-1 for a classifier ``model`` (with ``n_classes_param``,
    ``classes_``): InputError naming ``name`` otherwise. ``fitting``: the labels define
    ``model.classes_`` (``n_classes`` if given, else ``max(y) + 1``)."""
    who = type(model).__name__
    y = as_vector(y, name, n)
    nonfinite = np.flatnonzero(~np.isfinite(y))
    if nonfinite.size:
        raise InputError(f"{name}: contains NaN or infinity (first at index {nonfinite[0]})")
    bad = np.flatnonzero((y < 0) | (y != np.floor(y)))
    if bad.size:
        raise InputError(f"{name}: value {y[bad[0]]} at index {bad[0]} is not a class id; {who} expects integer labels 0..k-1 "
                         "(0/1 for binary)")
    if fitting:
        if model.n_classes_param is None and y.max() >= max(n, 2):
            # k = max(y) + 1 classes cannot all be present: refuse before any k-sized allocation
            i = int(np.argmax(y))
            raise InputError(
                f"{name}: label {y[i]:g} at index {i} would make {y[i] + 1:g} classes for {n} points; {who} "
                "expects class ids 0..k-1, each present (relabel with np.unique(y, return_inverse=True))"
            )
        k = model.n_classes_param if model.n_classes_param is not None else int(y.max()) + 1
        k = max(as_positive_int(k, "n_classes"), 2)
        if k > max(n, 2):
            raise InputError(f"n_classes: {k} classes cannot all be present among {n} points")
        if y.max() >= k:
            i = int(np.argmax(y >= k))
            raise InputError(f"{name}: class id {y[i]:g} at index {i} is not below n_classes={k}")
        model.classes_ = np.arange(k)
    else:
        model._check_fitted()
        k = len(model.classes_)
        if y.size and y.max() >= k:
            i = int(np.argmax(y >= k))
            raise InputError(f"{name}: class id {y[i]:g} at index {i} is not below the fitted number of classes ({k})")
    return y
