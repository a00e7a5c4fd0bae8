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
from ._validation import as_nonneg_float, as_points, as_positive_int, as_progress, as_targets, as_weights, n_rows, training_features
from .errors import ConvergenceWarning, InputError, NotFittedError, SingularHessianError
from .models import check_class_ids, explained_fraction, set_params

__all__ = ["MLPClassifier", "MLPRegressor", "ACTIVATIONS", "CURVATURES"]

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

    Parameters
    ----------
    hidden : widths of the hidden layers; ``()`` is the GLM (multinomial or squared).
    activation : "tanh", "relu" (relu'(0) = 0), "gelu" (z Phi(z), exact), "logistic" or "identity".
    l2 : the ridge penalty l2 sum ||W_l||^2 (biases not penalised), outside the weighted mean.
    tol : training stops when max |grad L_w| <= tol.
    solver : "lbfgs" (full batch, the default: small and medium n) or "adam" (seeded mini-batch
        Adam, for large n where that is what users do; no Newton polishing).
    max_iter : L-BFGS iterations (then at most ``newton_iter`` Newton steps polish the optimum),
        or Adam epochs.
    batch_size, learning_rate : Adam's batch size and step size.
    curvature : what Newton polishing uses, "hessian" (exact; quadratic convergence at a strict
        local minimum) or "gauss-newton" (always positive semi-definite).
    random_state : seed of the initial parameters (Glorot uniform, biases 0) and of Adam's batches.
    warm_start : start from the current ``theta_`` when its shape fits.
    penalty_renormalized, progress : as for the GLM estimators.
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
        """The constructor arguments by name."""
        return {"hidden": self.hidden, "activation": self.activation, "l2": self.l2, "tol": self.tol, "solver": self.solver,
                "max_iter": self.max_iter, "batch_size": self.batch_size, "learning_rate": self.learning_rate,
                "newton_iter": self.newton_iter, "curvature": self.curvature, "random_state": self.random_state,
                "warm_start": self.warm_start, "progress": self.progress, "penalty_renormalized": self.penalty_renormalized}

    def set_params(self, **params):
        """Set parameters by name (those of ``get_params``); returns self."""
        return set_params(self, params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if k != "penalty_renormalized" or not v)
        return f"{type(self).__name__}({args})"

    def __sklearn_is_fitted__(self) -> bool:
        return getattr(self, "theta_", None) is not None

    # -- the Model protocol ------------------------------------------------------------------
    @property
    def n_outputs(self) -> int:
        """k, the number of outputs h (classes for the classifier)."""
        raise NotImplementedError

    def sizes(self) -> list[int]:
        """The network's layer sizes [d, hidden.., k] (known once fitted or declared by
        ``set_theta(..., n_features=)``)."""
        d = getattr(self, "n_features_in_", None)
        if d is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, y) first")
        return layer_sizes(d, self.hidden, self.n_outputs)

    @property
    def n_params(self) -> int:
        return n_params_of(self.sizes())

    def core_model(self, curvature: str | None = None) -> _core.Model:
        """The fitted network as the Rust core holds it, with ``curvature`` ("gauss-newton", the
        default for influence, or "hessian")."""
        return self._core_model(self.sizes(), curvature or self.default_curvature)

    def _core_model(self, sizes: list[int], curvature: str) -> _core.Model:
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if curvature not in CURVATURES:
            raise InputError(f"curvature: expected one of {', '.join(CURVATURES)}, got {curvature!r}")
        return _core.mlp(sizes, self.activation, self._head, curvature)

    def get_theta(self) -> np.ndarray:
        """A flat float64 copy of ``theta_``; NotFittedError before fit."""
        self._check_fitted()
        return np.array(self.theta_, dtype=np.float64)

    def set_theta(self, theta, *, n_features: int | None = None) -> None:
        """Set ``theta_`` from a flat vector in the layout of the module docstring (parameters
        trained elsewhere: influence is evaluated at them). With ``n_features``, first declare
        the input width; the number of outputs follows from theta's length and ``hidden``."""
        theta = np.array(theta, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(theta)):
            raise InputError("theta: contains NaN or infinity")
        if n_features is not None:
            d = as_positive_int(n_features + 1, "n_features") - 1
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
        """W_l per layer, shape (out, in) (DESIGN-networks.md; scikit-learn's ``coefs_`` are the
        transposes): views of ``theta_``."""
        return [block[:, :-1] for block in self._blocks()]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """b_l per layer, shape (out,): views of ``theta_``."""
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
    def fit(self, X, y, sample_weight=None):
        """Weighted full-batch training; returns self.

        From the seeded initialisation (or ``theta_`` with ``warm_start``), ``solver="adam"`` runs
        ``max_iter`` epochs of seeded mini-batch Adam; the default ``"lbfgs"`` runs L-BFGS to
        max |grad L_w| <= 1e-5, then Newton's method with the exact Hessian
        (``curvature="hessian"``, direct solves up to p = 500, CG above: forming the exact Hessian costs p products) to ``tol``, kept only
        if it converges to a point no worse (else L-BFGS continues to ``tol``). Deterministic: the same
        seed, data and thread count or not give the same bits. Sets ``theta_``, ``n_iter_``
        (L-BFGS iterations + Newton steps), ``grad_norm_``, ``converged_``, ``objective_``;
        a :class:`ConvergenceWarning` if max |grad| > ``tol`` at the end. A fit that raises
        leaves the estimator as it was.
        """
        before = dict(self.__dict__)
        try:
            return self._fit(X, y, sample_weight)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise

    def _fit(self, X, y, sample_weight):
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
        """The network's outputs h (logits for the classifier): (n, k), or (n,) when k = 1."""
        h = self.core_model().predict(self.get_theta(), as_points(X, "X", self._n_features()), "linear")
        return h[:, 0] if h.shape[1] == 1 else h

    def loss(self, X, y) -> np.ndarray:
        """Per-example losses l(h_i, y_i) at ``theta_``, shape (n,)."""
        X = as_points(X, "X", self._n_features())
        return self.core_model().losses(self.get_theta(), X, self.check_targets(y, n_rows(X)))

    def _mean_loss(self, X, y, sample_weight):
        X = as_points(X, "X", self._n_features())
        y = self.check_targets(self._required(y), n_rows(X))
        w = as_weights(sample_weight, n_rows(X))
        loss, _ = self.core_model().objective(self.get_theta(), X, y, w, 0.0)
        return loss, X, y, w


class MLPClassifier(_MLP):
    """A network with a softmax cross-entropy head on integer class labels 0..k-1 (k >= 2;
    ``n_classes`` if given, else ``max(y) + 1``). ``hidden=()`` is multinomial logistic
    regression with the same numbers as ``LogisticRegression`` with k >= 3 classes (and with 2
    classes the softmax form of it: two rows of parameters). Read the module docstring."""

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
        return {**super().get_params(deep), "n_classes": self.n_classes_param}

    def set_params(self, **params):
        if "n_classes" in params:
            self.n_classes_param = params.pop("n_classes")
        return super().set_params(**params)

    @property
    def n_outputs(self) -> int:
        classes = getattr(self, "classes_", None)
        if classes is None:
            raise NotFittedError("MLPClassifier is not fitted yet: call fit(X, y) first")
        return len(classes)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as float64 class ids 0..k-1 (InputError naming ``name`` otherwise)."""
        return check_class_ids(self, y, n, fitting=fitting, name=name)

    def _declare_outputs(self, k: int) -> None:
        if k < 2:
            raise InputError(f"theta: gives {k} output for MLPClassifier, which needs >= 2 classes")
        self.classes_ = np.arange(k)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities softmax(h), shape (n, k)."""
        return self.core_model().predict(self.get_theta(), as_points(X, "X", self._n_features()), "mean")

    def predict(self, X) -> np.ndarray:
        """The most probable class id."""
        return np.argmax(self.predict_proba(X), axis=1)

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy (weighted by ``sample_weight``)."""
        _, X, y, w = self._mean_loss(X, y, sample_weight)
        return float(np.average(np.argmax(self.core_model().predict(self.get_theta(), X, "mean"), axis=1) == y, weights=w))


class MLPRegressor(_MLP):
    """A network with a squared-error head l = ||h - y||^2 (no 1/2, as the GLMs): one real target
    (y of shape (n,), or (n, 1)), or t >= 2 targets per row (y of shape (n, t): t outputs whose
    squared errors add up; scikit-learn's multi-output ``MLPRegressor``). ``hidden=()`` is
    ``LinearRegression`` with the same numbers (one per target column: the outputs' losses,
    gradients and curvature blocks separate). ``predict`` returns (n,) for one target, (n, t)
    for t. Read the module docstring."""

    _head = "squared"

    @property
    def n_outputs(self) -> int:
        """t, the number of targets per row (1 until fitted on a 2-d y)."""
        return getattr(self, "n_outputs_", 1)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as finite float64, (n,) for one target or (n, t) for t >= 2 (a (n, 1) column
        counts as one target). ``fitting``: the columns define ``n_outputs_``; otherwise they
        must match it."""
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
        """The network's outputs h: shape (n,) for one target, (n, t) for t."""
        return self.decision_function(X)

    def score(self, X, y, sample_weight=None) -> float:
        """R^2 of ``predict(X)`` for ``y`` (weighted; with t targets the mean of the t columns'
        R^2, scikit-learn's ``uniform_average``)."""
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
        return self.range[1] - self.range[0]

    def get_theta(self) -> np.ndarray:
        """Theta_L, flat (a copy)."""
        return self.theta_.copy()

    def set_theta(self, theta, *, n_features: int | None = None) -> None:
        """Set Theta_L (the frozen layers stay as they were)."""
        theta = np.array(theta, dtype=np.float64).reshape(-1)
        if n_features is not None and n_features != self.n_features_in_:
            raise InputError(f"n_features: the frozen layers take {self.n_features_in_} features, got {n_features!r}")
        if theta.size != self.n_params or not np.all(np.isfinite(theta)):
            raise InputError(f"theta: expected {self.n_params} finite entries (the last layer), got {theta.size}")
        self.theta_ = theta

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        return self.net.check_targets(y, n, fitting=False, name=name)

    def core_model(self, curvature: str | None = None) -> _core.Model:
        """The core's model; either curvature gives the same block (see the class docs)."""
        return self._core
