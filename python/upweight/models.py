"""Weighted generalised linear models fitted by Newton's method in the Rust core.

All estimators minimise the objective of DESIGN.md section 1,

    L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 * ||coef||^2,

with the intercept unpenalised, and follow scikit-learn's conventions (``fit`` returns self,
fitted attributes end in ``_``, ``sample_weight``). ``theta_`` is laid out as
``[coef..., intercept]`` (one such row per class for multinomial regression).
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _core
from ._validation import as_nonneg_float, as_points, n_rows, as_positive_int, as_vector, as_weights, training_features
from .errors import ConvergenceWarning, InputError, NotFittedError, SingularHessianError

__all__ = ["LinearRegression", "LogisticRegression", "PoissonRegression"]


class _GLM:
    """Shared machinery: fitting, parameters, predictions on the linear predictor."""

    _family: str = ""

    def __init__(self, l2: float = 0.0, *, tol: float = 1e-10, max_iter: int = 100, warm_start: bool = False,
                 solver: str = "auto", progress=None):
        self.l2 = l2
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.progress = progress

    # -- scikit-learn protocol -------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        return {"l2": self.l2, "tol": self.tol, "max_iter": self.max_iter, "warm_start": self.warm_start,
                "solver": self.solver, "progress": self.progress}

    def set_params(self, **params):
        for key, value in params.items():
            if key not in self.get_params():
                raise InputError(f"{key}: not a parameter of {type(self).__name__}")
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
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

    def _targets(self, y, n: int, fitting: bool) -> np.ndarray:
        return as_vector(y, "y", n)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit by weighted Newton's method; returns self.

        ``progress(pass, rows_done, rows_total)``, if set, is called during long fits.
        ``solver``: each Newton step solves H s = -g "direct"ly (forms H) or by truncated
        conjugate gradients on Hessian-vector products ("cg", H never formed); "auto" picks the
        cheaper per step by the cost model of :mod:`upweight._auto`.
        ``X`` may be float64 or float32 (used as float32, widened block by block), a scipy.sparse
        matrix (used in CSR form, never densified), or the path of a ``.npy`` file (or its
        ``np.load(..., mmap_mode="r")`` memmap), streamed block by block.

        Sets ``theta_``, ``coef_``, ``intercept_``, ``n_iter_``, ``grad_norm_`` (max absolute
        gradient entry at the solution), ``converged_`` and ``objective_``. Warns with
        :class:`ConvergenceWarning` if the gradient norm did not reach ``tol`` (an absolute bound
        on max |grad L_w|) within ``max_iter`` steps, or stalled above it at rounding level.
        """
        X_in = X
        X, n, d = training_features(X)
        y = self._targets(y, n, fitting=True)
        w = as_weights(sample_weight, n)
        l2 = as_nonneg_float(self.l2, "l2")
        tol = as_nonneg_float(self.tol, "tol")
        max_iter = as_positive_int(self.max_iter, "max_iter")
        theta0 = None
        prev = getattr(self, "theta_", None) if self.warm_start else None
        if prev is not None and prev.size == self.n_classes * (d + 1):
            theta0 = np.ascontiguousarray(prev.reshape(-1), dtype=np.float64)
        solver = self.solver
        if solver not in ("auto", "direct", "cg"):
            raise InputError(f"solver: expected 'auto', 'direct' or 'cg', got {solver!r}")
        if solver == "auto":  # the cost model of Influence's "auto", for one right-hand side per step
            from . import _auto
            from .influence import _work

            solver = "direct" if _auto.prefers_direct(_work(n, self.n_classes * (d + 1), self.n_classes, X), 1) else "cg"
        theta, n_iter, grad_norm, converged, objective = _core.fit(
            self.family, self.n_classes, X, y, w, l2, tol, max_iter, theta0, self.progress, solver
        )
        self.n_features_in_ = d
        self._set_theta(theta)
        if not isinstance(X, str):  # a file would have to be read again; its fit is not checked
            self._check_separation(X_in, y, w, l2)
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

    def _set_theta(self, theta: np.ndarray) -> None:
        k = self.n_classes
        theta = np.asarray(theta, dtype=np.float64)
        if k == 1:
            self.theta_ = theta
            self.coef_ = theta[:-1]
            self.intercept_ = float(theta[-1])
        else:
            self.theta_ = theta.reshape(k, -1)
            self.coef_ = self.theta_[:, :-1]
            self.intercept_ = self.theta_[:, -1]

    def _check_separation(self, X, y, w, l2) -> None:
        """Classification families only: see LogisticRegression."""

    def _check_fitted(self) -> None:
        if getattr(self, "theta_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")

    def _flat_theta(self) -> np.ndarray:
        self._check_fitted()
        return np.ascontiguousarray(self.theta_.reshape(-1), dtype=np.float64)

    def decision_function(self, X) -> np.ndarray:
        """The linear predictor eta = X coef + intercept: (n,) or (n, k) for multinomial."""
        X = as_points(X, "X", self._n_features())
        eta = _core.predict(self.family, self.n_classes, self._flat_theta(), X, "linear")
        return eta[:, 0] if self.n_classes == 1 else eta

    def _mean(self, X) -> np.ndarray:
        X = as_points(X, "X", self._n_features())
        m = _core.predict(self.family, self.n_classes, self._flat_theta(), X, "mean")
        return m[:, 0] if self.n_classes == 1 else m

    def _n_features(self) -> int:
        self._check_fitted()
        return self.n_features_in_

    def loss(self, X, y) -> np.ndarray:
        """Per-example losses l(z_i; theta_) (DESIGN.md section 2), shape (n,)."""
        X = as_points(X, "X", self._n_features())
        y = self._targets(y, n_rows(X), fitting=False)
        return _core.losses(self.family, self.n_classes, self._flat_theta(), X, y)


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
                 warm_start: bool = False, solver: str = "auto", progress=None):
        super().__init__(l2, tol=tol, max_iter=max_iter, warm_start=warm_start, solver=solver, progress=progress)
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

    def _targets(self, y, n: int, fitting: bool) -> np.ndarray:
        y = as_vector(y, "y", n)
        nonfinite = np.flatnonzero(~np.isfinite(y))
        if nonfinite.size:
            raise InputError(f"y: contains NaN or infinity (first at index {nonfinite[0]})")
        bad = np.flatnonzero((y < 0) | (y != np.floor(y)))
        if bad.size:
            raise InputError(
                f"y: value {y[bad[0]]} at index {bad[0]} is not a class id; LogisticRegression "
                "expects integer labels 0..k-1 (0/1 for binary)"
            )
        if fitting:
            k = self.n_classes_param if self.n_classes_param is not None else int(y.max()) + 1
            k = max(as_positive_int(k, "n_classes"), 2)
            if y.max() >= k:
                i = int(np.argmax(y >= k))
                raise InputError(f"y: class id {y[i]:g} at index {i} is not below n_classes={k}")
            self.classes_ = np.arange(k)
        else:
            self._check_fitted()
            k = len(self.classes_)
            if y.size and y.max() >= k:
                i = int(np.argmax(y >= k))
                raise InputError(f"y: class id {y[i]:g} at index {i} is not below the fitted number of classes ({k})")
        return y

    def _check_separation(self, X, y, w, l2) -> None:
        """Without a penalty, classes that some theta classifies perfectly have no finite
        optimum (scaling theta up always lowers the loss): Newton's gradient then vanishes at a
        huge theta and influence would be meaningless, so refuse."""
        if l2 > 0:
            return
        eta = self.decision_function(X)
        if self.n_classes == 1:
            correct = (2 * y - 1) * eta > 0
        else:
            correct = np.argmax(eta, axis=1) == y
        if w is not None:
            correct = correct | (w == 0)
        if correct.all():
            for attr in ("theta_", "coef_", "intercept_"):
                delattr(self, attr)
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
