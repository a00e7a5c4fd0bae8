"""Multilayer perceptrons in the Rust core (DESIGN-networks.md): weighted training to a tight
optimum, and the model protocol that :class:`~upweight.Influence` needs.

A network with sizes [d, h_1 .. h_{L-1}, k] maps x through z_l = W_l a_{l-1} + b_l,
a_l = phi(z_l) (tanh, relu or gelu) to the outputs h = z_L, and minimises

    L_w(theta) = (1/W) sum_i w_i l(h_i, y_i) + l2 sum_l ||W_l||^2

(biases not penalised) with softmax cross-entropy (:class:`MLPClassifier`) or squared error
(:class:`MLPRegressor`; with y of shape (n, t), t >= 2, a multi-output regression with t outputs
and l = ||h - y||^2). ``theta_`` holds per layer [W_l | b_l] (out x in+1, bias last),
row-major, input to output: with ``hidden=()`` it is exactly the multinomial / squared GLM's
``theta_``, and every number (fit, influence) is the GLM's.

Influence on a network is evaluated at the parameters given, which need not minimise the
objective: with the damped Gauss-Newton curvature (the default) it is the derivative of the
proximal Bregman response function (Bae et al. 2022; :meth:`Influence.pbrf`), exactly, at any
theta. It does not approximate leave-one-out retraining of a network, and nothing here claims so.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _core
from ._validation import (
    as_nonneg_float,
    as_points,
    as_positive_int,
    as_progress,
    as_targets,
    as_weights,
    is_dask,
    n_rows,
    training_features,
)
from .errors import ConvergenceWarning, InputError, NotFittedError, SingularHessianError
from .models import check_class_ids, check_n_features, explained_fraction, restore_on_error, set_params

__all__ = ["MLPClassifier", "MLPRegressor", "LastLayer", "ACTIVATIONS", "CURVATURES"]

ACTIVATIONS = ("tanh", "relu", "gelu", "logistic", "identity")
CURVATURES = ("gauss-newton", "hessian")
#: Largest p whose Newton polishing step forms the Hessian (above it: conjugate gradients).
NEWTON_DIRECT_MAX_P = 500
#: L-BFGS hands over to Newton at this max |gradient| (or at ``tol`` if looser).
NEWTON_HANDOVER = 1e-5


def layer_sizes(n_features: int, hidden, n_outputs: int) -> list[int]:
    """[d, hidden.., k], with ``hidden`` checked (a tuple of positive ints; InputError naming it)."""
    if isinstance(hidden, (int, np.integer)) and not isinstance(hidden, bool):
        hidden = (hidden,)
    try:
        widths = [as_positive_int(h, "hidden") for h in hidden]
    except TypeError:
        raise InputError(f"hidden: expected a tuple of layer widths, got {hidden!r}") from None
    return [int(n_features), *widths, int(n_outputs)]


def n_params_of(sizes: list[int]) -> int:
    return sum((sizes[j] + 1) * sizes[j + 1] for j in range(len(sizes) - 1))


def glorot_init(sizes: list[int], rng: np.random.Generator) -> np.ndarray:
    """Seeded initial theta: W_l uniform on +-sqrt(6 / (in + out)) (Glorot and Bengio), biases 0."""
    parts = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        block = np.zeros((fan_out, fan_in + 1))
        block[:, :fan_in] = rng.uniform(-bound, bound, size=(fan_out, fan_in))
        parts.append(block.reshape(-1))
    return np.concatenate(parts)


class _MLP:
    """Shared machinery of the network estimators; implements :class:`upweight.models.Model`.

    The constructor's parameters are documented on :class:`MLPClassifier` and
    :class:`MLPRegressor`; the methods here once for both (their docstrings and examples hold for
    each).
    """

    _head = ""
    _estimator_type = "regressor"
    default_curvature = "gauss-newton"
    theta_: np.ndarray
    n_features_in_: int

    def __init__(self, hidden=(64,), activation: str = "tanh", l2: float = 1e-4, *, tol: float = 1e-8, solver: str = "lbfgs",
                 max_iter: int = 5000, batch_size: int = 256, learning_rate: float = 1e-3, newton_iter: int = 50,
                 curvature: str = "hessian", random_state=0, warm_start: bool = False, progress=None, penalty_renormalized: bool = True):
        self.hidden = hidden
        self.activation = activation
        self.l2 = l2
        self.tol = tol
        self.solver = solver
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.newton_iter = newton_iter
        self.curvature = curvature
        self.random_state = random_state
        self.warm_start = warm_start
        self.progress = progress
        self.penalty_renormalized = penalty_renormalized

    # -- scikit-learn protocol ---------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict:
        """The estimator's parameters: the constructor arguments by name.

        What ``sklearn.base.clone``, ``GridSearchCV`` and ``repr`` read.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn and ignored: no parameter is itself an estimator.

        Returns
        -------
        dict
            ``hidden``, ``activation``, ``l2``, ``tol``, ``solver``, ``max_iter``, ``batch_size``,
            ``learning_rate``, ``newton_iter``, ``curvature``, ``random_state``, ``warm_start``,
            ``progress`` and ``penalty_renormalized`` (and ``n_classes`` for MLPClassifier), as set.

        See Also
        --------
        set_params : Set parameters by name.

        Examples
        --------
        >>> net = uw.MLPRegressor(hidden=(8, 8), activation="relu")
        >>> params = net.get_params()
        >>> params["hidden"], params["activation"], params["solver"]
        ((8, 8), 'relu', 'lbfgs')
        >>> type(net)(**params).get_params() == params  # what sklearn.base.clone does
        True
        """
        return {"hidden": self.hidden, "activation": self.activation, "l2": self.l2, "tol": self.tol, "solver": self.solver,
                "max_iter": self.max_iter, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "newton_iter": self.newton_iter, "curvature": self.curvature, "random_state": self.random_state,
                "warm_start": self.warm_start, "progress": self.progress, "penalty_renormalized": self.penalty_renormalized}

    def set_params(self, **params):
        """Set parameters by name (those of ``get_params``); returns self.

        What ``GridSearchCV`` calls. The values are checked when the estimator is next fitted.

        Parameters
        ----------
        **params
            New values by name, each key one of ``get_params()``'s.

        Returns
        -------
        self
            The estimator, so that calls chain (``net.set_params(l2=1e-2).fit(X, y)``).

        Raises
        ------
        InputError
            If a name is not a parameter of the estimator (the message names it and lists the
            valid ones).

        See Also
        --------
        get_params : The parameters by name.

        Examples
        --------
        >>> net = uw.MLPRegressor()
        >>> net.set_params(hidden=(4,), l2=1e-2) is net
        True
        >>> net.hidden, net.l2
        ((4,), 0.01)
        >>> net.set_params(alpha=1.0)
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: alpha: not a parameter of MLPRegressor (one of hidden, ...)
        """
        return set_params(self, params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "penalty_renormalized" or not v)
        return f"{type(self).__name__}({args})"

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "theta_", None) is not None

    # -- the Model protocol ------------------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        """int: k, the number of outputs h (classes for the classifier)."""
        raise NotImplementedError

    def sizes(self) -> list[int]:
        """The network's layer sizes [d, hidden.., k].

        Known once fitted or declared by ``set_theta(..., n_features=)``.

        Returns
        -------
        list of int
            d inputs, the hidden widths, k outputs.

        Raises
        ------
        NotFittedError
            Before ``fit`` (or ``set_theta(..., n_features=)``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> net.sizes()
        [30, 4, 2]
        >>> net.n_params == (30 + 1) * 4 + (4 + 1) * 2
        True
        """
        d = getattr(self, "n_features_in_", None)
        if d is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")
        return layer_sizes(d, self.hidden, self.n_outputs)

    @property
    def n_params(self) -> int:
        """int: p, the length of theta: sum over layers of out x (in + 1) (NotFittedError before fit)."""
        return n_params_of(self.sizes())

    def core_model(self, curvature: str | None = None) -> _core.Model:
        """The fitted network as the Rust core holds it, with ``curvature``.

        It knows its dimensions (``n_params``, ``n_features``, ``n_outputs``) and computes
        losses, gradients, predictions and curvature products at any theta; Influence is built
        on it.

        Parameters
        ----------
        curvature : {"gauss-newton", "hessian"} or None, default None
            The curvature the core model's Hessian products use: "gauss-newton" (the default for
            influence, ``default_curvature``) or "hessian" (exact). None: ``default_curvature``.

        Returns
        -------
        upweight._core.Model
            The core's model of the fitted sizes, activation and head.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``curvature`` or the estimator's ``activation`` is not one of the names above
            (the message names it).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> core = net.core_model()
        >>> core.n_params, core.n_features, core.n_outputs
        (134, 30, 2)
        >>> np.allclose(core.losses(net.get_theta(), X, y.astype(float)), net.loss(X, y))
        True
        """
        return self._core_model(self.sizes(), curvature or self.default_curvature)

    def _core_model(self, sizes: list[int], curvature: str) -> _core.Model:
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if curvature not in CURVATURES:
            raise InputError(f"curvature: expected one of {', '.join(CURVATURES)}, got {curvature!r}")
        return _core.mlp(sizes, self.activation, self._head, curvature)

    def get_theta(self) -> np.ndarray:
        """A flat float64 copy of ``theta_``; NotFittedError before fit.

        Returns
        -------
        numpy.ndarray of shape (n_params,)
            Per layer [W_l | b_l] (out x in+1, bias last), row-major, input to output; a copy
            (changing it does not change the network: use :meth:`set_theta`).

        Raises
        ------
        NotFittedError
            Before ``fit`` (or ``set_theta(..., n_features=)``).

        See Also
        --------
        set_theta : Set the parameters from a flat vector.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> theta = net.get_theta()
        >>> theta.shape
        (134,)
        >>> (W1, W2), (b1, b2) = net.coefs_, net.intercepts_
        >>> np.array_equal(theta, np.concatenate([np.c_[W1, b1].ravel(), np.c_[W2, b2].ravel()]))
        True
        """
        self._check_fitted()
        return np.array(self.theta_, dtype=np.float64)

    @restore_on_error
    def set_theta(self, theta, *, n_features: int | None = None) -> None:
        """Set ``theta_`` from a flat vector in the layout of the module docstring.

        For parameters trained elsewhere: influence is evaluated at them. With ``n_features``,
        first declare the input width; the number of outputs follows from theta's length and
        ``hidden``.

        Parameters
        ----------
        theta : array_like of shape (n_params,)
            Per layer [W_l | b_l] (out x in+1, bias last), row-major, input to output; finite.
        n_features : int or None, default None
            d, to declare (or change) the input width; None keeps the fitted one.

        Raises
        ------
        InputError
            If theta holds NaN or infinity, or its length fits no network of these sizes, or
            ``n_features`` is not an integer >= 0 (the message names the argument).
        NotFittedError
            If the network is not fitted and ``n_features`` is None.

        See Also
        --------
        get_theta : The parameters as a flat vector.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> restored = uw.MLPClassifier(hidden=(4,))
        >>> restored.set_theta(net.get_theta(), n_features=30)
        >>> restored.sizes(), restored.classes_
        ([30, 4, 2], array([0, 1]))
        >>> np.allclose(restored.predict_proba(X), net.predict_proba(X))
        True
        """
        theta = np.array(theta, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(theta)):
            raise InputError("theta: contains NaN or infinity")
        if n_features is not None:
            d = check_n_features(n_features)
            inner = layer_sizes(d, self.hidden, 1)[:-1]
            before = n_params_of(inner) if len(inner) > 1 else 0
            per_output = inner[-1] + 1
            if theta.size <= before or (theta.size - before) % per_output:
                raise InputError(f"theta: has {theta.size} entries, which no number of outputs gives for n_features={d} "
                                 f"and hidden={self.hidden!r}")
            self._declare_outputs((theta.size - before) // per_output)
            self.n_features_in_ = d
        if getattr(self, "n_features_in_", None) is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first, or pass n_features")
        sizes = layer_sizes(self.n_features_in_, self.hidden, self.n_outputs)  # self.sizes() needs theta_
        p = n_params_of(sizes)
        if theta.size != p:
            raise InputError(f"theta: has {theta.size} entries, expected p = {p} for sizes {sizes}")
        self.theta_ = theta

    def _declare_outputs(self, k: int) -> None:
        raise NotImplementedError

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        raise NotImplementedError

    # -- layers: views of theta_ ----------------------------------------------------------------
    def _blocks(self) -> list[np.ndarray]:
        sizes, theta, out, start = self.sizes(), self._fitted_theta(), [], 0
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=False):
            size = fan_out * (fan_in + 1)
            out.append(theta[start:start + size].reshape(fan_out, fan_in + 1))
            start += size
        return out

    @property
    def coefs_(self) -> list[np.ndarray]:
        """list of numpy.ndarray: W_l per layer, shape (out, in): views of ``theta_``.

        DESIGN-networks.md; scikit-learn's ``coefs_`` are the transposes."""
        return [block[:, :-1] for block in self._blocks()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """list of numpy.ndarray: b_l per layer, shape (out,): views of ``theta_``."""
        return [block[:, -1] for block in self._blocks()]

    def _fitted_theta(self) -> np.ndarray:
        theta = self.__dict__.get("theta_")
        if theta is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")
        return theta

    def _check_fitted(self) -> None:
        self._fitted_theta()

    def _n_features(self) -> int:
        self._check_fitted()
        return self.n_features_in_

    # -- fitting -------------------------------------------------------------------------------
    @restore_on_error
    def fit(self, X, y, sample_weight=None):
        """Weighted full-batch training; returns self.

        Minimises L_w(theta) = (1/W) sum_i w_i l(h_i, y_i) + l2 sum_l ||W_l||^2 (biases not
        penalised; module docstring). From the seeded initialisation (or ``theta_`` with
        ``warm_start``), ``solver="adam"`` runs ``max_iter`` epochs of seeded mini-batch Adam; the
        default ``"lbfgs"`` runs L-BFGS to ``max |grad L_w| <= 1e-5``, then Newton's method with
        the exact Hessian (``curvature="hessian"``, direct solves up to p = 500, CG above: forming
        the exact Hessian costs p products) to ``tol``, kept only if it converges to a point no
        worse (else L-BFGS continues to ``tol``). Deterministic: the same seed and data give the
        same bits, whatever the thread count. Sets ``theta_``, ``n_iter_`` (L-BFGS iterations +
        Newton steps), ``grad_norm_``, ``converged_``, ``objective_``; a
        :class:`ConvergenceWarning` if ``max |grad| > tol`` at the end (L-BFGS only: Adam reports
        ``grad_norm_`` but is not meant to reach ``tol``). A fit that raises leaves the estimator
        as it was.

        Parameters
        ----------
        X : array_like of shape (n, d), scipy.sparse matrix, str or os.PathLike
            Training features: an array (float64 or float32), a sparse matrix, or the path of a
            2-d ``.npy`` file (or its memmap).
        y : array_like of shape (n,) or (n, t)
            Targets: class ids 0..k-1 (MLPClassifier), or real values, (n, t) for t outputs
            (MLPRegressor).
        sample_weight : array_like of shape (n,), float or None, default None
            Weights w_i >= 0, not all 0 (None: all 1). The objective is a weighted *mean*: a
            weight of 2 counts a row twice.

        Returns
        -------
        self
            The fitted estimator.

        Raises
        ------
        InputError
            If ``X``, ``y``, ``sample_weight`` or a parameter (``hidden``, ``activation``,
            ``l2``, ``tol``, ``solver``, ``max_iter``, ``newton_iter``, ``curvature``,
            ``batch_size``, ``learning_rate``) has a bad shape or value (the message names it).
        InputTypeError
            If an argument has an unusable type (complex or object dtype; ``l2`` not a number;
            ``progress`` not callable).

        Warns
        -----
        ConvergenceWarning
            If L-BFGS (and Newton) stop with ``max |grad L_w| > tol`` after ``max_iter``
            iterations. Influence is still exact at the parameters reached.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0)
        >>> net.fit(X[:300], y[:300]) is net
        True
        >>> net.converged_, net.grad_norm_ <= net.tol
        (True, True)

        The same seed and data give the same bits:

        >>> again = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> np.array_equal(again.theta_, net.theta_)
        True
        """
        return self._fit(X, y, sample_weight)

    def _fit(self, X, y, sample_weight):
        if any(is_dask(a) for a in (X, y, sample_weight)):
            raise InputError("X: networks are not yet supported on Dask (GLMs are); fit on one machine from NumPy arrays "
                             "or a .npy path")
        X, n, d = training_features(X)
        y = self.check_targets(self._required(y), n, fitting=True)
        w = as_weights(sample_weight, n)
        l2 = as_nonneg_float(self.l2, "l2")
        tol = as_nonneg_float(self.tol, "tol")
        max_iter = as_positive_int(self.max_iter, "max_iter")
        newton_iter = as_positive_int(self.newton_iter + 1, "newton_iter") - 1
        as_progress(self.progress)
        sizes = layer_sizes(d, self.hidden, self.n_outputs)
        core = self._core_model(sizes, self.curvature)
        if self.solver not in ("lbfgs", "adam"):
            raise InputError(f"solver: expected 'lbfgs' or 'adam', got {self.solver!r}")
        rng = np.random.default_rng(self.random_state)
        prev = getattr(self, "theta_", None) if self.warm_start else None
        theta0 = prev if prev is not None and prev.size == n_params_of(sizes) else glorot_init(sizes, rng)
        theta0 = np.ascontiguousarray(theta0, dtype=np.float64)
        if self.solver == "adam":
            lr = as_nonneg_float(self.learning_rate, "learning_rate")
            theta, n_iter, grad_norm, converged, objective = _core.fit_adam(
                core, X, y, w, l2, theta0, max_iter, as_positive_int(self.batch_size, "batch_size"), lr, int(rng.integers(2**63)), tol,
                self.progress)
        else:
            theta, n_iter, grad_norm, converged, objective = self._lbfgs_then_newton(core, X, y, w, l2, theta0, tol, max_iter, newton_iter)
        self.n_features_in_ = d
        self.theta_ = theta
        self.n_iter_, self.grad_norm_, self.converged_, self.objective_ = n_iter, grad_norm, converged, objective
        if not converged and self.solver == "lbfgs":  # (Adam reports grad_norm_; it is not meant to reach tol)
            warnings.warn(
                f"{type(self).__name__}: training stopped after {n_iter} iterations with max |gradient| {grad_norm:.3g} > "
                f"tol={tol:g}. Influence is still exact at these parameters (it answers the proximal Bregman response), "
                "but increase max_iter for parameters nearer a minimum.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return self

    def _lbfgs_then_newton(self, core, X, y, w, l2, theta0, tol, max_iter, newton_iter):
        """L-BFGS to max |grad| <= max(tol, NEWTON_HANDOVER), then Newton (``curvature``; direct
        solves up to NEWTON_DIRECT_MAX_P parameters, CG above) to ``tol``: quadratic convergence
        near a strict local minimum, where L-BFGS crawls. If Newton fails (an indefinite Hessian
        there) or ends worse, L-BFGS continues to ``tol`` with the iterations left."""
        first = tol if newton_iter == 0 else max(tol, NEWTON_HANDOVER)
        theta, n_iter, grad_norm, converged, objective = _core.fit_lbfgs(core, X, y, w, l2, theta0, first, max_iter,
                                                                         progress=self.progress)
        if grad_norm <= tol or newton_iter == 0:
            return theta, n_iter, grad_norm, grad_norm <= tol, objective
        if converged:  # near a minimum: polish by Newton
            method = "direct" if theta.size <= NEWTON_DIRECT_MAX_P else "cg"
            try:
                t2, it2, g2, c2, o2, _ = core.fit(X, y, w, l2, tol, newton_iter, theta, self.progress, method)
            except SingularHessianError:
                pass  # not yet in a strict local minimum's neighbourhood
            else:
                n_iter += it2
                if c2 and o2 <= objective + 1e-12 * (1.0 + abs(objective)):
                    return t2, n_iter, g2, True, o2
        if n_iter >= max_iter:
            return theta, n_iter, grad_norm, False, objective
        theta, it3, grad_norm, converged, objective = _core.fit_lbfgs(core, X, y, w, l2, theta, tol, max_iter - n_iter,
                                                                      progress=self.progress)
        return theta, n_iter + it3, grad_norm, converged, objective

    def _required(self, y):
        if y is None:
            raise InputError(f"y: {type(self).__name__} requires y to be passed, but the target y is None")
        return y

    # -- predictions ---------------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """The network's outputs h (logits for the classifier): (n, k), or (n,) when k = 1.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n, k) or (n,)
            h = z_L per row (no softmax); (n,) for a regressor with one target.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X`` is not 2-d with ``n_features_in_`` columns (the message names it).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> h = net.decision_function(X)
        >>> h.shape
        (569, 2)
        >>> (W1, W2), (b1, b2) = net.coefs_, net.intercepts_
        >>> np.allclose(h, np.tanh(X @ W1.T + b1) @ W2.T + b2)  # z_l = W_l a_(l-1) + b_l
        True
        >>> np.allclose(np.exp(h) / np.exp(h).sum(axis=1, keepdims=True), net.predict_proba(X))
        True
        """
        h = self.core_model().predict(self.get_theta(), as_points(X, "X", self._n_features()), "linear")
        return h[:, 0] if h.shape[1] == 1 else h

    def loss(self, X, y) -> np.ndarray:
        """Per-example losses l(h_i, y_i) at ``theta_``, shape (n,).

        Unweighted and without the penalty: the softmax cross-entropy -log p(y | x) for
        MLPClassifier, ||h - y||^2 for MLPRegressor (summed over the t outputs).

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.
        y : array_like of shape (n,) or (n, t)
            Targets, as ``fit`` takes them.

        Returns
        -------
        numpy.ndarray of shape (n,)
            l(h_i, y_i) per row.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X`` or ``y`` has a bad shape, or ``y`` a value the head does not take (the
            message names it).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> losses = net.loss(X, y)
        >>> losses.shape
        (569,)
        >>> np.allclose(losses, -np.log(net.predict_proba(X)[np.arange(len(y)), y]))
        True
        >>> penalty = net.l2 * sum(np.sum(W ** 2) for W in net.coefs_)
        >>> bool(np.isclose(net.loss(X[:300], y[:300]).mean() + penalty, net.objective_))
        True
        """
        X = as_points(X, "X", self._n_features())
        return self.core_model().losses(self.get_theta(), X, self.check_targets(y, n_rows(X)))

    def _mean_loss(self, X, y, sample_weight):
        X = as_points(X, "X", self._n_features())
        y = self.check_targets(self._required(y), n_rows(X))
        w = as_weights(sample_weight, n_rows(X))
        loss, _ = self.core_model().objective(self.get_theta(), X, y, w, 0.0)
        return loss, X, y, w


class MLPClassifier(_MLP):
    """A network with a softmax cross-entropy head on integer class labels 0..k-1.

    k >= 2 classes: ``n_classes`` if given, else ``max(y) + 1``. ``hidden=()`` is multinomial
    logistic regression with the same numbers as ``LogisticRegression`` with k >= 3 classes (and
    with 2 classes the softmax form of it: two rows of parameters). Read the module docstring.

    Parameters
    ----------
    hidden : tuple of int, default (64,)
        Widths of the hidden layers; ``()`` is the GLM (multinomial or squared). An int is one
        hidden layer.
    activation : {"tanh", "relu", "gelu", "logistic", "identity"}, default "tanh"
        phi: "tanh", "relu" (relu'(0) = 0), "gelu" (z Phi(z), exact), "logistic" or "identity".
    l2 : float, default 1e-4
        The ridge penalty l2 sum ||W_l||^2 (biases not penalised), outside the weighted mean.
    n_classes : int or None, default None
        The number of classes k (at least 2); None: ``max(y) + 1`` when fitting. Kept as
        ``n_classes_param``.
    tol : float, default 1e-8
        Training stops when ``max |grad L_w| <= tol``.
    solver : {"lbfgs", "adam"}, default "lbfgs"
        "lbfgs" (full batch, the default: small and medium n) or "adam" (seeded mini-batch Adam,
        for large n where that is what users do; no Newton polishing).
    max_iter : int, default 5000
        L-BFGS iterations (then at most ``newton_iter`` Newton steps polish the optimum), or
        Adam epochs.
    batch_size : int, default 256
        Adam's batch size.
    learning_rate : float, default 1e-3
        Adam's step size.
    newton_iter : int, default 50
        The most Newton steps that polish L-BFGS's optimum (0: none, L-BFGS runs to ``tol``).
    curvature : {"hessian", "gauss-newton"}, default "hessian"
        What Newton polishing uses, "hessian" (exact; quadratic convergence at a strict local
        minimum) or "gauss-newton" (always positive semi-definite). (Influence uses
        ``default_curvature``, "gauss-newton", unless told otherwise.)
    random_state : int, numpy.random.Generator or None, default 0
        Seed of the initial parameters (Glorot uniform, biases 0) and of Adam's batches
        (anything ``numpy.random.default_rng`` takes; None: a fresh seed at every fit).
    warm_start : bool, default False
        Start from the current ``theta_`` when its shape fits.
    progress : callable or None, default None
        As for the GLM estimators: ``progress(pass, rows_done, rows_total)``, called during long
        fits.
    penalty_renormalized : bool, default True
        As for the GLM estimators: the penalty convention of :class:`~upweight.Model`.

    Attributes
    ----------
    classes_ : numpy.ndarray of shape (k,)
        The class ids, ``arange(k)``.
    theta_ : numpy.ndarray of shape (p,)
        The parameters: per layer [W_l | b_l] (out x in+1, bias last), row-major, input to
        output (the module docstring). ``coefs_`` and ``intercepts_`` are views of it.
    coefs_ : list of numpy.ndarray
        W_l per layer, shape (out, in) (scikit-learn's ``coefs_`` are the transposes).
    intercepts_ : list of numpy.ndarray
        b_l per layer, shape (out,).
    n_features_in_ : int
        Number of features d seen by ``fit``.
    n_iter_ : int
        L-BFGS iterations + Newton steps (Adam: epochs).
    grad_norm_ : float
        ``max |grad L_w|`` at ``theta_``.
    converged_ : bool
        Whether ``max |grad L_w| <= tol``.
    objective_ : float
        L_w at ``theta_``, the penalised objective.
    default_curvature : str
        "gauss-newton": the curvature :class:`~upweight.Influence` uses unless told otherwise.

    See Also
    --------
    MLPRegressor : The squared-error network.
    LogisticRegression : The GLM (``hidden=()``).
    upweight.networks.LastLayer : The last layer of a fitted network as a model of its own.
    Influence : Influence functions of the fitted network (at its parameters: module docstring).

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
    >>> net.sizes(), net.n_params, net.converged_
    ([30, 4, 2], 134, True)
    >>> bool(net.score(X[300:], y[300:]) > 0.9)
    True
    >>> inf = uw.Influence(net, X[:300], y[:300])
    >>> inf.on_loss(X[300:302], y[300:302]).shape  # (test points, training points)
    (2, 300)

    ``hidden=()`` with 3 classes or more is ``LogisticRegression``:

    >>> rng = np.random.default_rng(0)
    >>> X3 = rng.normal(size=(90, 2))
    >>> y3 = np.repeat([0, 1, 2], 30)
    >>> glm = uw.MLPClassifier(hidden=(), l2=1e-2).fit(X3, y3)
    >>> np.allclose(glm.predict_proba(X3), uw.LogisticRegression(l2=1e-2).fit(X3, y3).predict_proba(X3))
    True
    """

    _head = "multinomial"
    _estimator_type = "classifier"

    def __init__(self, hidden=(64,), activation: str = "tanh", l2: float = 1e-4, *, n_classes: int | None = None, tol: float = 1e-8,
                 solver: str = "lbfgs", max_iter: int = 5000, batch_size: int = 256, learning_rate: float = 1e-3, newton_iter: int = 50,
                 curvature: str = "hessian", random_state=0, warm_start: bool = False, progress=None, penalty_renormalized: bool = True):
        super().__init__(hidden, activation, l2, tol=tol, solver=solver, max_iter=max_iter, batch_size=batch_size,
                         learning_rate=learning_rate, newton_iter=newton_iter, curvature=curvature, random_state=random_state,
                         warm_start=warm_start, progress=progress, penalty_renormalized=penalty_renormalized)
        self.n_classes_param = n_classes

    def get_params(self, deep: bool = True) -> dict:
        """The estimator's parameters: the constructor arguments by name, ``n_classes`` included.

        What ``sklearn.base.clone``, ``GridSearchCV`` and ``repr`` read.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn and ignored: no parameter is itself an estimator.

        Returns
        -------
        dict
            Those of :class:`MLPRegressor` and ``n_classes`` (the constructor's, None by
            default), as set.

        See Also
        --------
        set_params : Set parameters by name.

        Examples
        --------
        >>> net = uw.MLPClassifier(hidden=(4,), n_classes=3)
        >>> params = net.get_params()
        >>> params["hidden"], params["n_classes"]
        ((4,), 3)
        >>> type(net)(**params).get_params() == params  # what sklearn.base.clone does
        True
        """
        return {**super().get_params(deep), "n_classes": self.n_classes_param}

    def set_params(self, **params):
        """Set parameters by name (those of ``get_params``, ``n_classes`` included); returns self.

        What ``GridSearchCV`` calls. The values are checked when the estimator is next fitted.

        Parameters
        ----------
        **params
            New values by name, each key one of ``get_params()``'s.

        Returns
        -------
        self
            The estimator, so that calls chain (``net.set_params(l2=1e-2).fit(X, y)``).

        Raises
        ------
        InputError
            If a name is not a parameter of the estimator (the message names it and lists the
            valid ones).

        See Also
        --------
        get_params : The parameters by name.

        Examples
        --------
        >>> net = uw.MLPClassifier()
        >>> net.set_params(n_classes=4, hidden=(8,)) is net
        True
        >>> net.n_classes_param, net.hidden
        (4, (8,))
        """
        if "n_classes" in params:
            self.n_classes_param = params.pop("n_classes")
        return super().set_params(**params)

    @property
    def n_outputs(self) -> int:
        """int: k, the number of classes (outputs h); NotFittedError before fit."""
        classes = getattr(self, "classes_", None)
        if classes is None:
            raise NotFittedError("MLPClassifier is not fitted yet: call fit(X, y) first")
        return len(classes)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as float64 class ids 0..k-1 (InputError naming ``name`` otherwise).

        ``fitting``: the labels define ``classes_`` (``n_classes`` if given, else
        ``max(y) + 1``); otherwise they must be below the fitted number of classes.

        Parameters
        ----------
        y : array_like of shape (n,)
            Class ids: integers (or integer-valued floats, or booleans) 0..k-1.
        n : int
            The number of entries ``y`` must have (one per row of X).
        fitting : bool, default False
            True: the labels define ``classes_`` (set here). False: the network must be fitted
            and the labels below its number of classes.
        name : str, default "y"
            The argument's name in error messages.

        Returns
        -------
        numpy.ndarray of shape (n,)
            ``y`` as float64.

        Raises
        ------
        InputError
            If ``y`` is not 1-d with ``n`` entries, or holds NaN, a negative or non-integer
            value, or a class id out of range (the message names ``name`` and the index).
        InputTypeError
            If ``y`` is not real numeric (strings, complex, objects).
        NotFittedError
            With ``fitting=False``, before ``fit``.

        Examples
        --------
        >>> net = uw.MLPClassifier()
        >>> net.check_targets([0, 1, 2, 1], 4, fitting=True)
        array([0., 1., 2., 1.])
        >>> net.classes_
        array([0, 1, 2])
        >>> net.check_targets([0, -1, 1, 2], 4, name="y_test")
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: y_test: value -1.0 at index 1 is not a class id; ...
        """
        return check_class_ids(self, y, n, fitting=fitting, name=name)

    def _declare_outputs(self, k: int) -> None:
        if k < 2:
            raise InputError(f"theta: gives {k} output for MLPClassifier, which needs >= 2 classes")
        self.classes_ = np.arange(k)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities softmax(h), shape (n, k).

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n, k)
            p(class c | x) in column c; each row sums to 1 (k = 2 columns for binary labels).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X`` is not 2-d with ``n_features_in_`` columns (the message names it).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> proba = net.predict_proba(X)
        >>> proba.shape, np.allclose(proba.sum(axis=1), 1.0)
        ((569, 2), True)
        """
        return self.core_model().predict(self.get_theta(), as_points(X, "X", self._n_features()), "mean")

    def predict(self, X) -> np.ndarray:
        """The most probable class id.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n,)
            Integer class ids, ``argmax`` of ``predict_proba(X)`` per row.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X`` is not 2-d with ``n_features_in_`` columns (the message names it).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> net.predict(X[:5])
        array([0, 0, 0, 0, 0])
        >>> np.array_equal(net.predict(X), net.predict_proba(X).argmax(axis=1))
        True
        """
        return np.argmax(self.predict_proba(X), axis=1)

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (weighted by ``sample_weight``).

        The (weighted) fraction of ``y`` that ``predict(X)`` gets right, as scikit-learn's
        classifiers score.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.
        y : array_like of shape (n,)
            True class ids 0..k-1.
        sample_weight : array_like of shape (n,), float or None, default None
            Weights w_i >= 0 (None: all 1).

        Returns
        -------
        float
            The accuracy, in [0, 1].

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X``, ``y`` or ``sample_weight`` has a bad shape or value (a label that is not a
            fitted class id: the message names the argument).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> accuracy = net.score(X[300:], y[300:])
        >>> bool(accuracy == np.mean(net.predict(X[300:]) == y[300:]))
        True
        """
        _, X, y, w = self._mean_loss(X, y, sample_weight)
        return float(np.average(np.argmax(self.core_model().predict(self.get_theta(), X, "mean"), axis=1) == y, weights=w))


class MLPRegressor(_MLP):
    """A network with a squared-error head l = ||h - y||^2 (no 1/2, as the GLMs).

    One real target (y of shape (n,), or (n, 1)), or t >= 2 targets per row (y of shape (n, t):
    t outputs whose squared errors add up; scikit-learn's multi-output ``MLPRegressor``).
    ``hidden=()`` is ``LinearRegression`` with the same numbers (one per target column: the
    outputs' losses, gradients and curvature blocks separate). ``predict`` returns (n,) for one
    target, (n, t) for t. Read the module docstring.

    Parameters
    ----------
    hidden : tuple of int, default (64,)
        Widths of the hidden layers; ``()`` is the GLM (multinomial or squared). An int is one
        hidden layer.
    activation : {"tanh", "relu", "gelu", "logistic", "identity"}, default "tanh"
        phi: "tanh", "relu" (relu'(0) = 0), "gelu" (z Phi(z), exact), "logistic" or "identity".
    l2 : float, default 1e-4
        The ridge penalty l2 sum ||W_l||^2 (biases not penalised), outside the weighted mean.
    tol : float, default 1e-8
        Training stops when ``max |grad L_w| <= tol``.
    solver : {"lbfgs", "adam"}, default "lbfgs"
        "lbfgs" (full batch, the default: small and medium n) or "adam" (seeded mini-batch Adam,
        for large n where that is what users do; no Newton polishing).
    max_iter : int, default 5000
        L-BFGS iterations (then at most ``newton_iter`` Newton steps polish the optimum), or
        Adam epochs.
    batch_size : int, default 256
        Adam's batch size.
    learning_rate : float, default 1e-3
        Adam's step size.
    newton_iter : int, default 50
        The most Newton steps that polish L-BFGS's optimum (0: none, L-BFGS runs to ``tol``).
    curvature : {"hessian", "gauss-newton"}, default "hessian"
        What Newton polishing uses, "hessian" (exact; quadratic convergence at a strict local
        minimum) or "gauss-newton" (always positive semi-definite). (Influence uses
        ``default_curvature``, "gauss-newton", unless told otherwise.)
    random_state : int, numpy.random.Generator or None, default 0
        Seed of the initial parameters (Glorot uniform, biases 0) and of Adam's batches
        (anything ``numpy.random.default_rng`` takes; None: a fresh seed at every fit).
    warm_start : bool, default False
        Start from the current ``theta_`` when its shape fits.
    progress : callable or None, default None
        As for the GLM estimators: ``progress(pass, rows_done, rows_total)``, called during long
        fits.
    penalty_renormalized : bool, default True
        As for the GLM estimators: the penalty convention of :class:`~upweight.Model`.

    Attributes
    ----------
    n_outputs_ : int
        t, the number of targets per row seen by ``fit`` (1 for y of shape (n,)).
    theta_ : numpy.ndarray of shape (p,)
        The parameters: per layer [W_l | b_l] (out x in+1, bias last), row-major, input to
        output (the module docstring). ``coefs_`` and ``intercepts_`` are views of it.
    coefs_ : list of numpy.ndarray
        W_l per layer, shape (out, in) (scikit-learn's ``coefs_`` are the transposes).
    intercepts_ : list of numpy.ndarray
        b_l per layer, shape (out,).
    n_features_in_ : int
        Number of features d seen by ``fit``.
    n_iter_ : int
        L-BFGS iterations + Newton steps (Adam: epochs).
    grad_norm_ : float
        ``max |grad L_w|`` at ``theta_``.
    converged_ : bool
        Whether ``max |grad L_w| <= tol``.
    objective_ : float
        L_w at ``theta_``, the penalised objective.
    default_curvature : str
        "gauss-newton": the curvature :class:`~upweight.Influence` uses unless told otherwise.

    See Also
    --------
    MLPClassifier : The softmax cross-entropy network.
    LinearRegression : The GLM (``hidden=()``).
    upweight.networks.LastLayer : The last layer of a fitted network as a model of its own.
    Influence : Influence functions of the fitted network (at its parameters: module docstring).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=200)
    >>> net = uw.MLPRegressor(hidden=(4,), random_state=0).fit(X, y)
    >>> net.sizes(), net.converged_, net.predict(X).shape
    ([3, 4, 1], True, (200,))
    >>> bool(net.score(X, y) > 0.95)
    True

    Two targets per row: two outputs.

    >>> Y = np.column_stack([y, X[:, 1] ** 2])
    >>> net2 = uw.MLPRegressor(hidden=(4,), random_state=0).fit(X, Y)
    >>> net2.n_outputs, net2.predict(X).shape
    (2, (200, 2))

    ``hidden=()`` is ``LinearRegression``:

    >>> glm = uw.MLPRegressor(hidden=(), l2=1e-2).fit(X, y)
    >>> np.allclose(glm.get_theta(), uw.LinearRegression(l2=1e-2).fit(X, y).get_theta())
    True
    """

    _head = "squared"

    @property
    def n_outputs(self) -> int:
        """int: t, the number of targets per row (1 until fitted on a 2-d y)."""
        return getattr(self, "n_outputs_", 1)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as finite float64, (n,) for one target or (n, t) for t >= 2.

        A (n, 1) column counts as one target. ``fitting``: the columns define ``n_outputs_``;
        otherwise they must match it.

        Parameters
        ----------
        y : array_like of shape (n,) or (n, t)
            Real targets, finite.
        n : int
            The number of rows ``y`` must have (one per row of X).
        fitting : bool, default False
            True: the columns define ``n_outputs_`` (set here). False: their number must be
            ``n_outputs``.
        name : str, default "y"
            The argument's name in error messages.

        Returns
        -------
        numpy.ndarray of shape (n,) or (n, t)
            ``y`` as float64.

        Raises
        ------
        InputError
            If ``y`` has the wrong number of rows or columns, or holds NaN or infinity (the
            message names ``name``).
        InputTypeError
            If ``y`` is not real numeric (strings, complex, objects).

        Examples
        --------
        >>> net = uw.MLPRegressor()
        >>> net.check_targets([[1.0], [2.0]], 2).shape  # a column is one target
        (2,)
        >>> net.check_targets(np.ones((2, 3)), 2, fitting=True).shape
        (2, 3)
        >>> net.n_outputs
        3
        >>> net.check_targets([1.0, np.nan], 2, fitting=True)
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: y: contains NaN or infinity (first at index 1)
        """
        y = as_targets(y, name, n)
        t = 1 if y.ndim == 1 else y.shape[1]
        if not fitting and t != self.n_outputs:
            k = self.n_outputs
            raise InputError(f"{name}: has {t} column{'s' if t > 1 else ''}, but {type(self).__name__} was fitted on {k} "
                             f"target{'s' if k > 1 else ''}" + (f" (pass y of shape (n, {k}))" if k > 1 else ""))
        if fitting:
            self.n_outputs_ = t
        return y

    def _declare_outputs(self, k: int) -> None:
        self.n_outputs_ = k

    def predict(self, X) -> np.ndarray:
        """The network's outputs h: shape (n,) for one target, (n, t) for t.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n,) or (n, t)
            The predictions (the same as ``decision_function(X)``).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X`` is not 2-d with ``n_features_in_`` columns (the message names it).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 3))
        >>> y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=200)
        >>> net = uw.MLPRegressor(hidden=(4,), random_state=0).fit(X, y)
        >>> net.predict(X[:5]).shape
        (5,)
        >>> bool(np.mean((net.predict(X) - y) ** 2) < 0.02)  # about the noise variance, 0.01
        True
        """
        return self.decision_function(X)

    def score(self, X, y, sample_weight=None) -> float:
        """R^2 of ``predict(X)`` for ``y`` (weighted; with t targets the mean of the t columns' R^2).

        As scikit-learn's regressors score (``uniform_average`` over the columns): 1 - sum w
        (y - predict)^2 / sum w (y - mean_w y)^2 per column; 1.0 for a perfect fit, lower (even
        negative) otherwise.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.
        y : array_like of shape (n,) or (n, t)
            True targets, with the fitted number of columns.
        sample_weight : array_like of shape (n,), float or None, default None
            Weights w_i >= 0 (None: all 1).

        Returns
        -------
        float
            R^2 (the mean over the t columns).

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X``, ``y`` or ``sample_weight`` has a bad shape or value (the message names it).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 3))
        >>> Y = np.column_stack([np.sin(X[:, 0]), X[:, 1] ** 2]) + 0.1 * rng.normal(size=(200, 2))
        >>> net = uw.MLPRegressor(hidden=(4,), random_state=0).fit(X, Y)
        >>> r2 = [1 - np.sum((Y[:, c] - net.predict(X)[:, c]) ** 2) / np.sum((Y[:, c] - Y[:, c].mean()) ** 2) for c in (0, 1)]
        >>> bool(np.isclose(net.score(X, Y), np.mean(r2)))
        True
        """
        loss, X, y, w = self._mean_loss(X, y, sample_weight)
        if y.ndim == 1:
            return explained_fraction(loss, np.average((y - np.average(y, weights=w)) ** 2, weights=w))
        sq = (self.core_model().predict(self.get_theta(), X, "linear") - y) ** 2
        return float(np.mean([explained_fraction(float(np.average(sq[:, c], weights=w)),
                                                 float(np.average((y[:, c] - np.average(y[:, c], weights=w)) ** 2, weights=w)))
                              for c in range(y.shape[1])]))


class LastLayer:
    """A fitted network's last layer as a model of its own: the layers below are frozen at
    ``theta`` (default: the network's current parameters, copied now), so each row's input to the
    last layer is a fixed feature vector and the model in Theta_L = [W_L | b_L] alone is the
    head's GLM on those features. Implements :class:`upweight.models.Model`.

    Its per-example gradients are the Theta_L block of the network's and its curvature is the
    Theta_L block of the network's Gauss-Newton matrix (and of its Hessian: the outputs are linear
    in Theta_L), so its influence is the network's, restricted to the last layer, at the cost of
    a forward pass. It is the stage-1 scorer of ``Influence.top_k(..., prefilter="last-layer")``
    (DESIGN-networks.md section 6). ``range`` is the slice of the network's theta it holds.

    Parameters
    ----------
    net : MLPClassifier or MLPRegressor
        A fitted network with at least one hidden layer.
    theta : array_like of shape (net.n_params,) or None, default None
        The full network's parameters to freeze the layers below at (and to take Theta_L from);
        None: ``net.get_theta()``, copied now.
    l2 : float or None, default None
        The penalty of Theta_L's weights; None: the network's ``l2``.

    Attributes
    ----------
    net : MLPClassifier or MLPRegressor
        The network (kept by reference; the layers below were frozen at construction).
    range : tuple of int
        (start, stop): Theta_L is ``theta[start:stop]`` of the network's flat theta.
    theta_ : numpy.ndarray of shape (n_params,)
        Theta_L = [W_L | b_L], flat, in the network's layout.
    l2 : float
        The ridge penalty of W_L.
    penalty_renormalized : bool
        The network's penalty convention (:class:`~upweight.Model`).
    n_features_in_ : int
        The network's number of features d (the input of the frozen layers).
    default_curvature : str
        "gauss-newton" (for :class:`~upweight.Influence`; either curvature gives the same block).

    Raises
    ------
    InputError
        If ``net`` is not a network, or has no hidden layer (its last layer is the whole model).
    NotFittedError
        If ``net`` is not fitted.

    See Also
    --------
    Influence.top_k : Its ``prefilter="last-layer"`` scores candidates with this model.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
    >>> last = uw.networks.LastLayer(net)
    >>> last.range, last.n_params  # W_2 (2 x 4) and b_2 of sizes [30, 4, 2]
    ((124, 134), 10)
    >>> isinstance(last, uw.Model)
    True

    Its per-example gradients are the Theta_L block of the network's:

    >>> t = y[:5].astype(float)
    >>> g = net.core_model().per_example_grads(net.get_theta(), X[:5], t)
    >>> g_last = last.core_model().per_example_grads(last.get_theta(), X[:5], t)
    >>> np.allclose(g[:, slice(*last.range)], g_last)
    True
    """

    default_curvature = "gauss-newton"

    def __init__(self, net, theta=None, *, l2: float | None = None):
        if not isinstance(net, _MLP):
            raise InputError(f"net: expected a fitted MLPClassifier or MLPRegressor, got {type(net).__name__}")
        full = net.get_theta() if theta is None else np.array(theta, dtype=np.float64).reshape(-1)
        if not net.hidden:
            raise InputError("net: has no hidden layer: its last layer is the whole model (use it directly)")
        self.net = net
        self._core, self.range = _core.last_layer(net.core_model("gauss-newton"), full)
        self.theta_ = full[self.range[0]:self.range[1]].copy()
        self.l2 = float(net.l2 if l2 is None else l2)
        self.penalty_renormalized = bool(net.penalty_renormalized)
        self.n_features_in_ = int(net.n_features_in_)

    def __repr__(self) -> str:
        return f"LastLayer({self.net!r})"

    @property
    def n_params(self) -> int:
        """int: The size of Theta_L, out x (in + 1) of the last layer."""
        return self.range[1] - self.range[0]

    def get_theta(self) -> np.ndarray:
        """Theta_L, flat (a copy).

        Returns
        -------
        numpy.ndarray of shape (n_params,)
            [W_L | b_L] (out x in+1, bias last), row-major: the network's theta in ``range``.

        See Also
        --------
        set_theta : Set Theta_L.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> last = uw.networks.LastLayer(net)
        >>> np.array_equal(last.get_theta(), net.get_theta()[124:134])
        True
        >>> W2, b2 = net.coefs_[-1], net.intercepts_[-1]
        >>> np.array_equal(last.get_theta(), np.c_[W2, b2].ravel())
        True
        """
        return self.theta_.copy()

    def set_theta(self, theta, *, n_features: int | None = None) -> None:
        """Set Theta_L (the frozen layers stay as they were).

        The network itself is not changed.

        Parameters
        ----------
        theta : array_like of shape (n_params,)
            [W_L | b_L], flat, finite.
        n_features : int or None, default None
            Accepted for :class:`~upweight.Model`: it must be the network's number of features
            (or None).

        Raises
        ------
        InputError
            If ``theta`` does not have ``n_params`` finite entries, or ``n_features`` is not the
            frozen layers' input width (the message names the argument).

        See Also
        --------
        get_theta : Theta_L as a flat vector.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> last = uw.networks.LastLayer(net)
        >>> last.set_theta(np.zeros(10))
        >>> bool(np.all(last.get_theta() == 0))
        True
        >>> bool(np.all(net.get_theta()[124:134] == 0))  # the network keeps its own
        False
        >>> last.set_theta(np.zeros(3))
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: theta: expected 10 finite entries (the last layer), got 3
        """
        theta = np.array(theta, dtype=np.float64).reshape(-1)
        if n_features is not None and n_features != self.n_features_in_:
            raise InputError(f"n_features: the frozen layers take {self.n_features_in_} features, got {n_features!r}")
        if theta.size != self.n_params or not np.all(np.isfinite(theta)):
            raise InputError(f"theta: expected {self.n_params} finite entries (the last layer), got {theta.size}")
        self.theta_ = theta

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """The network's targets check: ``net.check_targets(y, n, fitting=False, name=name)``.

        Parameters
        ----------
        y : array_like of shape (n,) or (n, t)
            Targets, as the network takes them.
        n : int
            The number of rows ``y`` must have (one per row of X).
        fitting : bool, default False
            Ignored: the network's fitted shape (classes, outputs) stands.
        name : str, default "y"
            The argument's name in error messages.

        Returns
        -------
        numpy.ndarray of shape (n,) or (n, t)
            ``y`` as float64.

        Raises
        ------
        InputError
            If ``y`` does not fit the network's head (the message names ``name``).
        InputTypeError
            If ``y`` is not real numeric.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> last = uw.networks.LastLayer(net)
        >>> last.check_targets(y[:3], 3)
        array([0., 0., 0.])
        >>> last.check_targets([0, 2, 1], 3)
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: y: class id 2 at index 1 is not below the fitted number of classes (2)
        """
        return self.net.check_targets(y, n, fitting=False, name=name)

    def core_model(self, curvature: str | None = None) -> _core.Model:
        """The core's model; either curvature gives the same block (see the class docs).

        The outputs are linear in Theta_L, so the Gauss-Newton matrix and the Hessian of Theta_L
        coincide.

        Parameters
        ----------
        curvature : {"gauss-newton", "hessian"} or None, default None
            Accepted for the network protocol and ignored.

        Returns
        -------
        upweight._core.Model
            The head's GLM on the frozen layers' features: ``n_params`` Theta_L entries,
            ``n_features`` the network's inputs.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:300], y[:300])
        >>> last = uw.networks.LastLayer(net)
        >>> core = last.core_model()
        >>> core.n_params, core.n_features, core.n_outputs
        (10, 30, 2)
        >>> np.allclose(core.losses(last.get_theta(), X, y.astype(float)), net.loss(X, y))
        True
        """
        return self._core
