"""Weighted generalised linear models fitted by Newton's method in the Rust core.

All estimators minimise the objective of DESIGN.md section 1,

    L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 * ||coef||^2,

with the intercept unpenalised, and follow scikit-learn's conventions (``fit`` returns self,
fitted attributes end in ``_``, ``sample_weight``). ``theta_`` is laid out as
``[coef..., intercept]`` (one such row per class for multinomial regression).
"""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable

import numpy as np

from . import _core
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


class _GLM:
    """Shared machinery: fitting, parameters, predictions on the linear predictor; implements
    :class:`Model`.

    ``penalty_renormalized`` (keyword): the penalty convention of :class:`Model`; leave it True
    unless the model stands for an estimator that penalises a sum of losses (what
    :mod:`upweight.interop` sets for scikit-learn's ``Ridge`` and ``LogisticRegression``).
    """

    _family: str = ""
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

    # -- scikit-learn protocol -------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        return {"l2": self.l2, "tol": self.tol, "max_iter": self.max_iter, "warm_start": self.warm_start,
                "solver": self.solver, "progress": self.progress}

    def set_params(self, **params):
        """Set parameters by name (those of ``get_params``, and ``penalty_renormalized``)."""
        for key, value in params.items():
            if key not in self.get_params() and key != "penalty_renormalized":
                raise InputError(f"{key}: not a parameter of {type(self).__name__}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        params = self.get_params()
        if not self.penalty_renormalized:
            params["penalty_renormalized"] = False
        args = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"{type(self).__name__}({args})"

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
        ``np.load(..., mmap_mode="r")`` memmap), streamed block by block.

        Sets ``theta_``, ``coef_``, ``intercept_``, ``n_iter_``, ``grad_norm_`` (max absolute
        gradient entry at the solution), ``converged_`` and ``objective_``. Warns with
        :class:`ConvergenceWarning` if the gradient norm did not reach ``tol`` (an absolute bound
        on max |grad L_w|) within ``max_iter`` steps, or stalled above it at rounding level.
        """
        X, n, d = training_features(X)
        y = self.check_targets(y, n, fitting=True)
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
        if may_diverge:
            try:  # the same checks whatever the storage of X (a .npy file is read once more)
                self._check_separation(X, y, w)
                if converged and moved is not None:
                    check_not_diverging(*moved)
            except SingularHessianError:
                del self.theta_
                raise
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
        X = as_points(X, "X", self._n_features())
        m = self.core_model().predict(self.get_theta(), X, "mean")
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
    """

    _family = "squared"

    def predict(self, X) -> np.ndarray:
        return self.decision_function(X)


class PoissonRegression(_GLM):
    """Poisson regression with log link: loss exp(eta) - y eta for counts y >= 0."""

    _family = "poisson"

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


class LogisticRegression(_GLM):
    """Logistic regression on integer class labels 0..k-1.

    Two classes give binary logistic regression (``theta_`` of shape (d+1,)); more give
    multinomial (softmax) regression with ``theta_`` of shape (k, d+1). The number of classes is
    ``n_classes`` if given, else ``max(y) + 1``.

    Multinomial parameters are identified by pinning: adding one constant to every class's
    intercept (and, when ``l2 == 0``, one vector to every class's row) changes no prediction, so
    the solution returned is the one orthogonal to those directions: intercepts (and, with
    ``l2 == 0``, coefficients) sum to zero over classes.
    """

    def __init__(self, l2: float = 0.0, *, n_classes: int | None = None, tol: float = 1e-10, max_iter: int = 100,
                 warm_start: bool = False, solver: str = "auto", progress=None, penalty_renormalized: bool = True):
        super().__init__(l2, tol=tol, max_iter=max_iter, warm_start=warm_start, solver=solver, progress=progress,
                         penalty_renormalized=penalty_renormalized)
        self.n_classes_param = n_classes

    def get_params(self, deep: bool = True) -> dict:
        return {**super().get_params(deep), "n_classes": self.n_classes_param}

    def set_params(self, **params):
        if "n_classes" in params:
            self.n_classes_param = params.pop("n_classes")
        return super().set_params(**params)

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
        y = as_vector(y, name, n)
        nonfinite = np.flatnonzero(~np.isfinite(y))
        if nonfinite.size:
            raise InputError(f"{name}: contains NaN or infinity (first at index {nonfinite[0]})")
        bad = np.flatnonzero((y < 0) | (y != np.floor(y)))
        if bad.size:
            raise InputError(
                f"{name}: value {y[bad[0]]} at index {bad[0]} is not a class id; LogisticRegression "
                "expects integer labels 0..k-1 (0/1 for binary)"
            )
        if fitting:
            if self.n_classes_param is None and y.max() >= max(n, 2):
                # k = max(y) + 1 classes cannot all be present: refuse before any k-sized allocation
                i = int(np.argmax(y))
                raise InputError(
                    f"{name}: label {y[i]:g} at index {i} would make {y[i] + 1:g} classes for {n} points; LogisticRegression "
                    "expects class ids 0..k-1, each present (relabel with np.unique(y, return_inverse=True))"
                )
            k = self.n_classes_param if self.n_classes_param is not None else int(y.max()) + 1
            k = max(as_positive_int(k, "n_classes"), 2)
            if k > max(n, 2):
                raise InputError(f"n_classes: {k} classes cannot all be present among {n} points")
            if y.max() >= k:
                i = int(np.argmax(y >= k))
                raise InputError(f"{name}: class id {y[i]:g} at index {i} is not below n_classes={k}")
            self.classes_ = np.arange(k)
        else:
            self._check_fitted()
            k = len(self.classes_)
            if y.size and y.max() >= k:
                i = int(np.argmax(y >= k))
                raise InputError(f"{name}: class id {y[i]:g} at index {i} is not below the fitted number of classes ({k})")
        return y

    def _declare_outputs(self, k: int) -> None:
        self.classes_ = np.arange(2 if k == 1 else k)

    def _check_intercepts_finite(self, y, w) -> None:
        """A class with no positive weight drives its (unpenalised) intercept to -inf, and
        the fit to no finite optimum: refuse, naming the class."""
        k = len(self.classes_)
        weight = np.bincount(y.astype(np.intp), weights=w, minlength=k)
        empty = np.flatnonzero(~(weight > 0))
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
        m = self._mean(X)
        return np.column_stack([1.0 - m, m]) if self.n_classes == 1 else m

    def predict(self, X) -> np.ndarray:
        """The most probable class id."""
        return np.argmax(self.predict_proba(X), axis=1)
