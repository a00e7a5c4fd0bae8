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

import functools
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
    """The protocol of a fitted upweight model: what the rest of upweight needs of a model.

    DESIGN.md section 5: a model family is one Rust type implementing the core's model trait plus
    one Python class declaring this protocol. Every estimator here implements it, and so do the
    networks of :mod:`upweight.networks` and the models :mod:`upweight.interop` builds from
    scikit-learn and statsmodels; :class:`~upweight.Influence`, validation, diagnostics,
    persistence and the CLI talk to models only through it.

    The methods (each documented on its own):

    ``get_theta()``
        A flat float64 copy of theta (length ``n_params``); NotFittedError before fitting.
    ``set_theta(theta, *, n_features=None)``
        Set theta from a flat vector; with ``n_features``, first declare the fitted shape (a model
        restored from a file or converted from another library: theta's length then decides the
        number of outputs where the family has several).
    ``check_targets(y, n, *, fitting=False, name="y")``
        ``y`` validated for this family as a float64 vector of length ``n`` (InputError naming
        ``y`` otherwise); ``fitting=True`` when the targets define the fitted shape (classes).
    ``core_model()``
        The model as the Rust core holds it: a ``upweight._core.Model`` built once from the
        family's spec (``_core.Model.glm(family, n_classes, n_features)`` for the GLMs), which
        knows its dimensions (``n_params``, ``n_features``, ``n_outputs``) and computes losses,
        gradients, predictions, fits and refits. Influence is built on it.

    Exact refits (:mod:`upweight.validation`) also honour, when present, the estimator's
    ``solver``, ``max_iter`` and ``grad_norm_``.

    ``isinstance(obj, uw.Model)`` checks that every member exists. An estimator's
    ``n_features_in_`` exists only once it is fitted (or its shape declared by ``set_theta(...,
    n_features=)``), so it is a ``Model`` only from then on.

    Parameters
    ----------
    *args, **kwargs
        Not taken: a protocol is never instantiated (``uw.Model()`` raises TypeError); a class
        implements it by having its members.

    Attributes
    ----------
    l2 : float
        The ridge penalty: the objective is the weighted *mean* loss plus ``l2 * ||coef||^2``
        (DESIGN.md section 1; intercepts are not penalised).
    penalty_renormalized : bool
        The penalty convention. True (the default, DESIGN.md's objective): the penalty sits
        outside a weighted *average*, so adding weight to a point renormalises the average and
        influence carries the term ``2 l2 coef*``. False: the model stands for an estimator that
        penalises a *sum* of losses (scikit-learn's ``Ridge`` and ``LogisticRegression``,
        converted with ``l2 = alpha / W``): influence omits that term and exact refits rescale
        ``l2`` with the refit's own W. Set it with the constructor keyword or ``set_params``.
    n_features_in_ : int
        Number of features d (set by fitting).
    n_params : int
        p, the length of the flat parameter vector theta.

    See Also
    --------
    LinearRegression, LogisticRegression, PoissonRegression : The GLM estimators.
    MLPClassifier, MLPRegressor : The network estimators.
    Influence : Influence functions of a model.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2)
    >>> isinstance(model, uw.Model)  # not fitted: no n_features_in_ yet
    False
    >>> model = model.fit(X, y)
    >>> isinstance(model, uw.Model)
    True
    >>> model.n_features_in_, model.n_params, model.get_theta().shape
    (30, 31, (31,))
    """

    l2: float
    penalty_renormalized: bool

    @property
    def n_features_in_(self) -> int:
        """int: Number of features d (set by fitting, or declared by ``set_theta(..., n_features=)``)."""

    @property
    def n_params(self) -> int:
        """int: p, the length of the flat parameter vector theta (NotFittedError before fitting)."""

    def get_theta(self) -> np.ndarray:
        """A flat float64 copy of the fitted parameters theta.

        Returns
        -------
        numpy.ndarray of shape (n_params,)
            theta, float64, a copy: changing it does not change the model (use :meth:`set_theta`).

        Raises
        ------
        NotFittedError
            Before fitting (or before ``set_theta(..., n_features=)``).

        See Also
        --------
        set_theta : Set theta from a flat vector.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> theta = model.get_theta()
        >>> theta.shape, theta.dtype
        ((31,), dtype('float64'))
        >>> np.allclose(theta, np.append(model.coef_, model.intercept_))  # [coef..., intercept]
        True
        """

    def set_theta(self, theta, *, n_features: int | None = None) -> None:
        """Set the parameters theta from a flat vector.

        With ``n_features``, first declare the fitted shape (a model restored from a file or
        converted from another library: theta's length then decides the number of outputs where
        the family has several).

        Parameters
        ----------
        theta : array_like of shape (n_params,)
            The parameters, in the layout of the model's ``theta_`` flattened.
        n_features : int or None, default None
            The number of features d, for a model that is not fitted yet (or to change its shape).
            None: keep the fitted shape.

        Raises
        ------
        InputError
            If theta's length does not fit the model's shape, or ``n_features`` is not a valid
            count (the message names the argument).
        NotFittedError
            If the model is not fitted and ``n_features`` is None.

        See Also
        --------
        get_theta : The parameters as a flat vector.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> fitted = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> restored = uw.LogisticRegression(l2=1e-2)
        >>> restored.set_theta(fitted.get_theta(), n_features=30)
        >>> np.allclose(restored.predict_proba(X), fitted.predict_proba(X))
        True
        """

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """Targets validated for this model's family.

        Parameters
        ----------
        y : array_like of shape (n,)
            The targets (values, counts or class ids, as the family takes them; (n, t) for a
            regression network with t outputs).
        n : int
            The number of rows ``y`` must have (one per row of X).
        fitting : bool, default False
            True when the targets define the fitted shape (a classifier's classes); False: they
            must fit the fitted shape.
        name : str, default "y"
            The argument's name in error messages.

        Returns
        -------
        numpy.ndarray of shape (n,)
            ``y`` as float64 ((n, t) for t outputs).

        Raises
        ------
        InputError
            If ``y`` has the wrong length or values the family does not take (the message names
            ``name``).
        InputTypeError
            If ``y`` is not real numeric (strings, complex, objects).

        Examples
        --------
        >>> model = uw.LinearRegression()
        >>> model.check_targets([1, 2, 3], 3)
        array([1., 2., 3.])
        >>> model.check_targets([1, 2], 3, name="y_test")
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: y_test: has 2 entries, expected 3 (one per row of X)
        """

    def core_model(self) -> _core.Model:
        """The model as the Rust core holds it.

        A ``upweight._core.Model`` built from the family's spec (``_core.Model.glm(family,
        n_classes, n_features)`` for the GLMs), which knows its dimensions (``n_params``,
        ``n_features``, ``n_outputs``) and computes losses, gradients, predictions, fits and
        refits. Influence is built on it.

        Returns
        -------
        upweight._core.Model
            The core's model of the fitted shape.

        Raises
        ------
        NotFittedError
            Before fitting.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> core = model.core_model()
        >>> core.n_params, core.n_features, core.n_outputs
        (31, 30, 1)
        >>> np.allclose(core.losses(model.get_theta(), X, y.astype(float)), model.loss(X, y))
        True
        """


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


def check_n_features(n_features) -> int:
    """``n_features`` of ``set_theta``: an integer >= 0."""
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or n_features < 0:
        raise InputError(f"n_features: expected an integer >= 0, got {n_features!r}")
    return int(n_features)


def restore_on_error(method):
    """All or nothing: an exception in ``method`` leaves its first argument's (the estimator's)
    attributes as they were, so a failed fit or ``set_theta`` never leaves half-set state (new
    ``classes_`` beside an old ``theta_``; a declared width that no longer matches the parameters)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        state = dict(self.__dict__)
        try:
            return method(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(state)
            raise

    return wrapper


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
    :class:`Model`. Its methods are documented once here for LinearRegression, LogisticRegression
    and PoissonRegression (their docstrings and examples hold for each).

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
        """The estimator's parameters: the constructor arguments by name.

        What ``sklearn.base.clone``, ``GridSearchCV`` and ``repr`` read.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn and ignored: no parameter is itself an estimator.

        Returns
        -------
        dict
            ``l2``, ``tol``, ``max_iter``, ``warm_start``, ``solver``, ``progress`` and
            ``penalty_renormalized`` (and ``n_classes`` for LogisticRegression), as set.

        See Also
        --------
        set_params : Set parameters by name.

        Examples
        --------
        >>> model = uw.PoissonRegression(l2=0.5)
        >>> params = model.get_params()
        >>> params["l2"], params["max_iter"], params["solver"]
        (0.5, 100, 'auto')
        >>> type(model)(**params).get_params() == params  # what sklearn.base.clone does
        True
        """
        return {"l2": self.l2, "tol": self.tol, "max_iter": self.max_iter, "warm_start": self.warm_start,
                "solver": self.solver, "progress": self.progress, "penalty_renormalized": self.penalty_renormalized}

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
            The estimator, so that calls chain (``model.set_params(l2=1.0).fit(X, y)``).

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
        >>> model = uw.LinearRegression()
        >>> model.set_params(l2=0.1, max_iter=50) is model
        True
        >>> model.l2, model.max_iter
        (0.1, 50)
        >>> model.set_params(alpha=1.0)
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: alpha: not a parameter of LinearRegression (one of l2, ...)
        """
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
        """R^2, the coefficient of determination of ``predict(X)`` for ``y``.

        Weighted by ``sample_weight``, as scikit-learn's regressors score: 1 - sum w (y -
        predict)^2 / sum w (y - mean_w y)^2; 1.0 for a perfect fit, lower (even negative)
        otherwise, and 0.0 (1.0 if the fit is perfect) when y is constant. (PoissonRegression
        and LogisticRegression score otherwise: D^2 and accuracy.)

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.
        y : array_like of shape (n,)
            True targets.
        sample_weight : array_like of shape (n,), float or None, default None
            Weights w_i >= 0 (None: all 1).

        Returns
        -------
        float
            R^2.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X``, ``y`` or ``sample_weight`` has a bad shape or value (the message names it).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 3))
        >>> y = X @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=100)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> r2 = model.score(X, y)
        >>> round(r2, 4)
        0.8741
        >>> bool(np.isclose(r2, 1 - np.sum((y - model.predict(X)) ** 2) / np.sum((y - y.mean()) ** 2)))
        True
        """
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
        """str: The loss family the core uses: "squared", "logistic", "poisson" or "multinomial"."""
        return self._family

    @property
    def n_classes(self) -> int:
        """int: Number of linear predictors per example (k); 1 except for multinomial."""
        return 1

    # -- the Model protocol ----------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """int: p = k (d + 1), one row [coef..., intercept] per linear predictor (NotFittedError before fit)."""
        return self.n_classes * (self._n_features() + 1)

    def core_model(self) -> _core.Model:
        """The fitted model as the Rust core holds it (its family and dimensions).

        A new ``upweight._core.Model.glm(family, n_classes, n_features)``: it knows its
        dimensions (``n_params``, ``n_features``, ``n_outputs``) and computes losses, gradients,
        predictions, fits and refits at any theta. Influence is built on it.

        Returns
        -------
        upweight._core.Model
            The core's model of the fitted family and shape.

        Raises
        ------
        NotFittedError
            Before ``fit``.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> core = model.core_model()
        >>> core.family, core.n_params, core.n_features, core.n_outputs
        ('logistic', 31, 30, 1)
        >>> np.allclose(core.losses(model.get_theta(), X, y.astype(float)), model.loss(X, y))
        True
        """
        return self._core_model(self._n_features())

    def _core_model(self, n_features: int) -> _core.Model:
        return _core.Model.glm(self.family, self.n_classes, n_features)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as a float64 vector of length ``n`` (InputError naming ``name`` otherwise).

        The check of LinearRegression and PoissonRegression (LogisticRegression checks class
        ids): shape and numeric type. The family's conditions on the values (finite; counts >= 0
        for PoissonRegression) are checked by the core where the targets are used (``fit``,
        ``loss``, ``score``), with an InputError naming ``y``.

        Parameters
        ----------
        y : array_like of shape (n,)
            The targets.
        n : int
            The number of entries ``y`` must have (one per row of X).
        fitting : bool, default False
            Whether the targets define the fitted shape; a single-output family has none to
            define, so it is ignored here.
        name : str, default "y"
            The argument's name in error messages.

        Returns
        -------
        numpy.ndarray of shape (n,)
            ``y`` as float64.

        Raises
        ------
        InputError
            If ``y`` is not 1-d with ``n`` entries (the message names ``name``).
        InputTypeError
            If ``y`` is not real numeric (strings, complex, objects).

        Examples
        --------
        >>> model = uw.LinearRegression()
        >>> model.check_targets([1, 2, 3], 3)
        array([1., 2., 3.])
        >>> model.check_targets([1, 2], 3, name="y_test")
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: y_test: has 2 entries, expected 3 (one per row of X)
        """
        return as_vector(y, name, n)

    def get_theta(self) -> np.ndarray:
        """A flat float64 copy of ``theta_`` (``theta_.reshape(-1)``); NotFittedError before fit.

        Returns
        -------
        numpy.ndarray of shape (n_params,)
            [coef..., intercept], one such row per class for multinomial regression, flattened;
            a copy (changing it does not change the model: use :meth:`set_theta`).

        Raises
        ------
        NotFittedError
            Before ``fit`` (or ``set_theta(..., n_features=)``).

        See Also
        --------
        set_theta : Set the parameters from a flat vector.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(90, 2))
        >>> y = np.repeat([0, 1, 2], 30)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)  # 3 classes: multinomial
        >>> model.theta_.shape, model.get_theta().shape
        ((3, 3), (9,))
        >>> np.array_equal(model.get_theta(), model.theta_.reshape(-1))
        True
        """
        self._check_fitted()
        return np.array(self.theta_, dtype=np.float64).reshape(-1)

    @restore_on_error
    def set_theta(self, theta, *, n_features: int | None = None) -> None:
        """Set ``theta_`` (and ``coef_``, ``intercept_``) from a flat vector of length ``n_params``.

        With ``n_features``, first declare the fitted shape: d features, and the number of
        outputs that theta's length implies (classes, for LogisticRegression). That is how a
        model whose parameters come from elsewhere (a file, another library) is built without
        fitting.

        Parameters
        ----------
        theta : array_like of shape (n_params,)
            [coef..., intercept], one such row per class for multinomial regression, flattened.
        n_features : int or None, default None
            d, to declare (or change) the fitted shape; None keeps the fitted one.

        Raises
        ------
        InputError
            If theta's length is not ``n_params`` (with ``n_features``: not a positive multiple
            of ``n_features + 1`` that the family takes), or ``n_features`` is not an integer
            >= 0 (the message names the argument).
        NotFittedError
            If the model is not fitted and ``n_features`` is None.

        See Also
        --------
        get_theta : The parameters as a flat vector.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> fitted = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> restored = uw.LogisticRegression(l2=1e-2)
        >>> restored.set_theta(fitted.get_theta(), n_features=30)
        >>> np.allclose(restored.predict_proba(X), fitted.predict_proba(X))
        True

        theta's length decides the number of classes (k rows of d + 1):

        >>> model = uw.LogisticRegression()
        >>> model.set_theta(np.zeros(3 * 31), n_features=30)
        >>> model.n_classes, model.coef_.shape, model.intercept_.shape
        (3, (3, 30), (3,))
        """
        theta = np.array(theta, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(theta)):
            raise InputError("theta: contains NaN or infinity")
        if n_features is not None:
            d = check_n_features(n_features)
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
        """numpy.ndarray: The coefficients, (d,) or (k, d) for multinomial.

        A view of ``theta_``, so assigning to it (whole or by entries) changes the model's
        parameters."""
        theta = self._fitted_theta()
        return theta[:-1] if theta.ndim == 1 else theta[:, :-1]

    @coef_.setter
    def coef_(self, value) -> None:
        self._set_part("coef_", lambda t: t[:-1] if t.ndim == 1 else t[:, :-1], value)

    @property
    def intercept_(self) -> float | np.ndarray:
        """float or numpy.ndarray: The intercept: a float, or (k,) for multinomial (a view of ``theta_``)."""
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
    @restore_on_error
    def fit(self, X, y, sample_weight=None):
        """Fit by weighted Newton's method; returns self.

        Minimises L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 ||coef||^2 (DESIGN.md section 1).
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
        gradient entry at the solution), ``converged_`` and ``objective_``. Converged means
        ``max |grad L_w| <= tol``, or a Newton decrement g^T H^-1 g at rounding level (which, unlike
        the gradient, does not depend on the features' units); otherwise, after ``max_iter``
        steps, a :class:`ConvergenceWarning`. Raises ``InputError`` for targets with no finite
        optimum (a class without positive weight) and ``SingularHessianError`` when the objective
        has no unique finite minimiser (documentation: Reliability). A fit that raises leaves the
        estimator as it was before the call.

        Parameters
        ----------
        X : array_like of shape (n, d), scipy.sparse matrix, str or os.PathLike
            Training features: an array, a sparse matrix, the path of a 2-d ``.npy`` file (or
            its memmap), or a Dask array (above).
        y : array_like of shape (n,)
            Targets: real values (LinearRegression), counts >= 0 (PoissonRegression), or class
            ids 0..k-1 (LogisticRegression).
        sample_weight : array_like of shape (n,), float or None, default None
            Weights w_i >= 0, not all 0 (None: all 1). The objective is a weighted *mean*: a
            weight of 2 counts a row twice, and scaling every weight changes nothing.

        Returns
        -------
        self
            The fitted estimator.

        Raises
        ------
        InputError
            If ``X``, ``y``, ``sample_weight`` or a parameter (``l2``, ``tol``, ``max_iter``,
            ``solver``) has a bad shape or value, or the targets have no finite optimum (a
            class without positive weight; counts all 0): the message names the argument.
        InputTypeError
            If an argument has an unusable type (complex or object dtype; ``l2`` not a number;
            ``progress`` not callable).
        SingularHessianError
            If the objective has no unique finite minimiser (with ``l2 = 0``: collinear
            features, more parameters than points, separable classes). Use ``l2 > 0``.

        Warns
        -----
        ConvergenceWarning
            If Newton's method has not converged after ``max_iter`` steps.

        See Also
        --------
        upweight.dask.fit : The same fit on Dask arrays chunked by rows.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2)
        >>> model.fit(X, y) is model
        True
        >>> model.converged_, model.grad_norm_ <= model.tol
        (True, True)

        A weight of 2 is the same as the row twice:

        >>> w = np.ones(len(y))
        >>> w[:10] = 2
        >>> weighted = uw.LogisticRegression(l2=1e-2).fit(X, y, sample_weight=w)
        >>> twice = uw.LogisticRegression(l2=1e-2).fit(np.vstack([X, X[:10]]), np.r_[y, y[:10]])
        >>> np.allclose(weighted.theta_, twice.theta_)
        True

        ``warm_start`` starts from the current optimum, so refitting the same data takes no step:

        >>> model.set_params(warm_start=True).fit(X, y).n_iter_
        0
        """
        backend = backend_for(X, y, sample_weight)  # a training set on Dask: upweight.dask.fit
        if backend is not None:
            return backend.fit(self, X, y, sample_weight)
        return self._fit(X, y, sample_weight)

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
        """The linear predictor eta = X coef + intercept: (n,) or (n, k) for multinomial.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n,) or (n, k)
            eta per row; one column per class for multinomial regression.

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
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> eta = model.decision_function(X)
        >>> eta.shape
        (569,)
        >>> np.allclose(eta, X @ model.coef_ + model.intercept_)
        True
        >>> np.array_equal(model.predict(X), (eta > 0).astype(int))  # positive log-odds: class 1
        True
        """
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
        """Per-example losses l(z_i; theta) at ``theta_`` (DESIGN.md section 2), shape (n,).

        Unweighted and without the penalty: (x.coef + b - y)^2 for LinearRegression,
        exp(eta) - y eta for PoissonRegression, the cross-entropy -log p(y | x) for
        LogisticRegression.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.
        y : array_like of shape (n,)
            Targets, as ``fit`` takes them.

        Returns
        -------
        numpy.ndarray of shape (n,)
            l(z_i; theta) per row.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X`` or ``y`` has a bad shape, or ``y`` a value the family does not take (the
            message names it).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(50, 2))
        >>> y = X @ np.array([1.0, -1.0]) + rng.normal(size=50)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> losses = model.loss(X, y)
        >>> losses.shape
        (50,)
        >>> np.allclose(losses, (model.predict(X) - y) ** 2)
        True
        >>> bool(np.isclose(losses.mean(), model.objective_))  # l2 = 0: the objective is the mean loss
        True
        """
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

    Parameters
    ----------
    l2 : float, default 0.0
        The ridge penalty: ``l2 * ||coef||^2`` is added to the weighted *mean* loss (DESIGN.md
        section 1; the intercept is not penalised). With ``l2 = 0`` an objective without a unique
        finite optimum raises SingularHessianError when fitting.
    tol : float, default 1e-10
        Newton's method has converged when ``max |grad L_w| <= tol``, or when the Newton decrement
        is at rounding level (see ``fit``).
    max_iter : int, default 100
        The most Newton steps (then a ConvergenceWarning).
    warm_start : bool, default False
        Start ``fit`` from the current ``theta_`` when its shape fits.
    solver : {"auto", "direct", "cg"}, default "auto"
        How each Newton step solves H s = -g: "direct" forms H, "cg" runs truncated conjugate
        gradients on Hessian-vector products (H never formed), "auto" picks the cheaper per
        step by the cost model of :mod:`upweight.solver`.
    progress : callable or None, default None
        ``progress(pass, rows_done, rows_total)``, called during long fits.
    penalty_renormalized : bool, default True
        The penalty convention of :class:`Model`; leave it True unless the model stands for an
        estimator that penalises a sum of losses (what :mod:`upweight.interop` sets for
        scikit-learn's ``Ridge`` and ``LogisticRegression``).

    Attributes
    ----------
    theta_ : numpy.ndarray of shape (d + 1,)
        The fitted parameters [coef..., intercept]; ``coef_`` and ``intercept_`` are views of it.
    coef_ : numpy.ndarray of shape (d,)
        The coefficients.
    intercept_ : float
        The intercept.
    n_features_in_ : int
        Number of features d seen by ``fit``.
    n_iter_ : int
        Newton steps taken.
    grad_norm_ : float
        Max absolute gradient entry at the solution.
    converged_ : bool
        Whether Newton's method converged (see ``fit``).
    objective_ : float
        L_w at ``theta_``, the penalised objective at the solution.

    See Also
    --------
    PoissonRegression, LogisticRegression : The other GLMs.
    MLPRegressor : A network with the same loss (``hidden=()`` is this model).
    Influence : Influence functions of the fitted model.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 3))
    >>> y = X @ np.array([1.0, -2.0, 0.5]) + 3.0 + 0.1 * rng.normal(size=100)
    >>> model = uw.LinearRegression().fit(X, y)
    >>> np.round(model.coef_, 2), round(model.intercept_, 2)
    (array([ 1.  , -2.01,  0.48]), 3.0)
    >>> model.predict(X[:2]).shape
    (2,)

    The penalty shrinks the coefficients (not the intercept):

    >>> ridge = uw.LinearRegression(l2=1.0).fit(X, y)
    >>> bool(np.linalg.norm(ridge.coef_) < np.linalg.norm(model.coef_))
    True
    """

    _family = "squared"

    def predict(self, X) -> np.ndarray:
        """Predicted targets: the linear predictor X coef + intercept.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n,)
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
        >>> X = rng.normal(size=(50, 2))
        >>> y = X @ np.array([1.0, -1.0]) + 2.0 + rng.normal(size=50)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> np.allclose(model.predict(X), X @ model.coef_ + model.intercept_)
        True
        >>> model.predict(X[:, :1])
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: X: has 1 columns but the model has 2 features
        """
        return self.decision_function(X)


class PoissonRegression(_GLM):
    """Poisson regression with log link: loss exp(eta) - y eta for counts y >= 0.

    A scikit-learn regressor (module docstring) with nonnegative targets: ``score`` is D^2, the
    fraction of Poisson deviance explained, as for scikit-learn's ``PoissonRegressor``. It fails
    the same scikit-learn checks as LinearRegression, for the same reasons.

    ``predict`` is the rate exp(eta); ``decision_function`` the log-rate eta. Counts that are all
    0 (with positive weight) have no finite optimum: ``fit`` refuses them (InputError).

    Parameters
    ----------
    l2 : float, default 0.0
        The ridge penalty: ``l2 * ||coef||^2`` is added to the weighted *mean* loss (DESIGN.md
        section 1; the intercept is not penalised). With ``l2 = 0`` an objective without a unique
        finite optimum raises SingularHessianError when fitting.
    tol : float, default 1e-10
        Newton's method has converged when ``max |grad L_w| <= tol``, or when the Newton decrement
        is at rounding level (see ``fit``).
    max_iter : int, default 100
        The most Newton steps (then a ConvergenceWarning).
    warm_start : bool, default False
        Start ``fit`` from the current ``theta_`` when its shape fits.
    solver : {"auto", "direct", "cg"}, default "auto"
        How each Newton step solves H s = -g: "direct" forms H, "cg" runs truncated conjugate
        gradients on Hessian-vector products (H never formed), "auto" picks the cheaper per
        step by the cost model of :mod:`upweight.solver`.
    progress : callable or None, default None
        ``progress(pass, rows_done, rows_total)``, called during long fits.
    penalty_renormalized : bool, default True
        The penalty convention of :class:`Model`; leave it True unless the model stands for an
        estimator that penalises a sum of losses (what :mod:`upweight.interop` sets for
        scikit-learn's ``Ridge`` and ``LogisticRegression``).

    Attributes
    ----------
    theta_ : numpy.ndarray of shape (d + 1,)
        The fitted parameters [coef..., intercept] of the log-rate; ``coef_`` and ``intercept_``
        are views of it.
    coef_ : numpy.ndarray of shape (d,)
        The coefficients.
    intercept_ : float
        The intercept.
    n_features_in_ : int
        Number of features d seen by ``fit``.
    n_iter_ : int
        Newton steps taken.
    grad_norm_ : float
        Max absolute gradient entry at the solution.
    converged_ : bool
        Whether Newton's method converged (see ``fit``).
    objective_ : float
        L_w at ``theta_``, the penalised objective at the solution.

    See Also
    --------
    LinearRegression, LogisticRegression : The other GLMs.
    Influence : Influence functions of the fitted model.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.2 * X[:, 1]))
    >>> model = uw.PoissonRegression().fit(X, y)
    >>> np.round(model.coef_, 2)
    array([ 0.51, -0.22,  0.04])
    >>> np.allclose(model.predict(X), np.exp(model.decision_function(X)))
    True
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
        """Predicted rate exp(eta).

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n,)
            The expected counts exp(X coef + intercept), all > 0.

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
        >>> y = rng.poisson(np.exp(0.5 * X[:, 0]))
        >>> model = uw.PoissonRegression().fit(X, y)
        >>> rate = model.predict(X)
        >>> rate.shape, bool(np.all(rate > 0))
        ((200,), True)
        >>> bool(np.isclose(rate.mean(), y.mean()))  # with an intercept, the fit matches the total count
        True
        """
        return self._mean(X)

    def score(self, X, y, sample_weight=None) -> float:
        """D^2, the fraction of Poisson deviance explained, as scikit-learn's ``PoissonRegressor``
        scores: 1 - D(y, predict(X)) / D(y, mean_w y), D the (weighted) Poisson deviance and the
        null model predicting the weighted mean of y; 1.0 for a perfect fit, lower (even
        negative) otherwise.

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.
        y : array_like of shape (n,)
            True counts (>= 0).
        sample_weight : array_like of shape (n,), float or None, default None
            Weights w_i >= 0 (None: all 1).

        Returns
        -------
        float
            D^2.

        Raises
        ------
        NotFittedError
            Before ``fit``.
        InputError
            If ``X``, ``y`` or ``sample_weight`` has a bad shape or value (a negative count: the
            message names the argument).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(200, 3))
        >>> y = rng.poisson(np.exp(0.5 * X[:, 0] - 0.2 * X[:, 1]))
        >>> model = uw.PoissonRegression().fit(X, y)
        >>> round(model.score(X, y), 4)
        0.2344
        >>> def deviance(mu):  # half the Poisson deviance
        ...     return np.sum(y * np.log(np.where(y > 0, y, 1) / mu) - (y - mu))
        >>> bool(np.isclose(model.score(X, y), 1 - deviance(model.predict(X)) / deviance(y.mean())))
        True
        """
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

    Parameters
    ----------
    l2 : float, default 0.0
        The ridge penalty: ``l2 * ||coef||^2`` is added to the weighted *mean* loss (DESIGN.md
        section 1; the intercept is not penalised). With ``l2 = 0`` an objective without a unique
        finite optimum (separable classes) raises SingularHessianError when fitting.
    n_classes : int or None, default None
        The number of classes k (at least 2); None: ``max(y) + 1`` when fitting. Every class
        needs training points of positive weight. Kept as ``n_classes_param`` (the property
        ``n_classes`` is the fitted number of linear predictors).
    tol : float, default 1e-10
        Newton's method has converged when ``max |grad L_w| <= tol``, or when the Newton decrement
        is at rounding level (see ``fit``).
    max_iter : int, default 100
        The most Newton steps (then a ConvergenceWarning).
    warm_start : bool, default False
        Start ``fit`` from the current ``theta_`` when its shape fits.
    solver : {"auto", "direct", "cg"}, default "auto"
        How each Newton step solves H s = -g: "direct" forms H, "cg" runs truncated conjugate
        gradients on Hessian-vector products (H never formed), "auto" picks the cheaper per
        step by the cost model of :mod:`upweight.solver`.
    progress : callable or None, default None
        ``progress(pass, rows_done, rows_total)``, called during long fits.
    penalty_renormalized : bool, default True
        The penalty convention of :class:`Model`; leave it True unless the model stands for an
        estimator that penalises a sum of losses (what :mod:`upweight.interop` sets for
        scikit-learn's ``Ridge`` and ``LogisticRegression``).

    Attributes
    ----------
    classes_ : numpy.ndarray of shape (k,)
        The class ids, ``arange(k)``.
    theta_ : numpy.ndarray of shape (d + 1,) or (k, d + 1)
        The fitted parameters [coef..., intercept], one row per class for multinomial
        regression; ``coef_`` and ``intercept_`` are views of it.
    coef_ : numpy.ndarray of shape (d,) or (k, d)
        The coefficients.
    intercept_ : float or numpy.ndarray of shape (k,)
        The intercept(s).
    n_features_in_ : int
        Number of features d seen by ``fit``.
    n_iter_ : int
        Newton steps taken.
    grad_norm_ : float
        Max absolute gradient entry at the solution.
    converged_ : bool
        Whether Newton's method converged (see ``fit``).
    objective_ : float
        L_w at ``theta_``, the penalised objective at the solution.

    See Also
    --------
    LinearRegression, PoissonRegression : The other GLMs.
    MLPClassifier : A network with a softmax head (``hidden=()`` is multinomial regression).
    Influence : Influence functions of the fitted model.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> model.classes_, model.theta_.shape, model.family
    (array([0, 1]), (31,), 'logistic')
    >>> round(model.score(X, y), 4)
    0.9807
    >>> uw.Influence(model, X, y).on_loss(X[:2], y[:2]).shape  # (test points, training points)
    (2, 569)

    Three classes or more: multinomial regression, one row of theta per class:

    >>> rng = np.random.default_rng(0)
    >>> X3 = rng.normal(size=(90, 2))
    >>> y3 = np.repeat([0, 1, 2], 30)
    >>> multi = uw.LogisticRegression(l2=1e-2).fit(X3, y3)
    >>> multi.family, multi.n_classes, multi.theta_.shape
    ('multinomial', 3, (3, 3))
    >>> bool(abs(multi.intercept_.sum()) < 1e-10)  # pinned: the intercepts sum to zero
    True
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
        """The estimator's parameters: the constructor arguments by name, ``n_classes`` included.

        What ``sklearn.base.clone``, ``GridSearchCV`` and ``repr`` read.

        Parameters
        ----------
        deep : bool, default True
            Accepted for scikit-learn and ignored: no parameter is itself an estimator.

        Returns
        -------
        dict
            ``l2``, ``tol``, ``max_iter``, ``warm_start``, ``solver``, ``progress``,
            ``penalty_renormalized`` and ``n_classes`` (the constructor's, None by default), as set.

        See Also
        --------
        set_params : Set parameters by name.

        Examples
        --------
        >>> model = uw.LogisticRegression(l2=1e-2, n_classes=3)
        >>> params = model.get_params()
        >>> params["l2"], params["n_classes"]
        (0.01, 3)
        >>> type(model)(**params).get_params() == params  # what sklearn.base.clone does
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
            The estimator, so that calls chain (``model.set_params(l2=1.0).fit(X, y)``).

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
        >>> model = uw.LogisticRegression()
        >>> model.set_params(n_classes=4, l2=0.1) is model
        True
        >>> model.n_classes_param, model.l2
        (4, 0.1)
        """
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
        """Accuracy: the (``sample_weight``-weighted) fraction of ``y`` that ``predict(X)`` gets right.

        As scikit-learn's classifiers score.

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
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X[:400], y[:400])
        >>> accuracy = model.score(X[400:], y[400:])
        >>> bool(accuracy == np.mean(model.predict(X[400:]) == y[400:]))
        True
        """
        _, X, y, w = self._mean_loss(X, y, sample_weight)
        return float(np.average(self._predict_of(X) == y, weights=w))

    @property
    def family(self) -> str:
        """str: "logistic" for two classes, "multinomial" for more (NotFittedError before fit)."""
        return "logistic" if self.n_classes == 1 else "multinomial"

    @property
    def n_classes(self) -> int:
        """int: Number of linear predictors per example: 1 for two classes (binary), else k.

        NotFittedError before fit; the constructor's argument is ``n_classes_param``."""
        k = getattr(self, "classes_", None)
        if k is None:
            raise NotFittedError("LogisticRegression is not fitted yet: call fit(X, y) first")
        return 1 if len(k) == 2 else len(k)

    def check_targets(self, y, n: int, *, fitting: bool = False, name: str = "y") -> np.ndarray:
        """``y`` as float64 class ids 0..k-1 (InputError naming ``name`` otherwise).

        ``fitting``: the labels define ``classes_`` (``n_classes`` if given, else ``max(y) + 1``);
        otherwise they must be below the fitted number of classes.

        Parameters
        ----------
        y : array_like of shape (n,)
            Class ids: integers (or integer-valued floats, or booleans) 0..k-1.
        n : int
            The number of entries ``y`` must have (one per row of X).
        fitting : bool, default False
            True: the labels define ``classes_`` (set here). False: the model must be fitted and
            the labels below its number of classes.
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
        >>> model = uw.LogisticRegression()
        >>> model.check_targets([0, 2, 1, 2], 4, fitting=True)
        array([0., 2., 1., 2.])
        >>> model.classes_
        array([0, 1, 2])
        >>> model.check_targets([0, 1.5, 1, 2], 4)
        Traceback (most recent call last):
        ...
        upweight.errors.InputError: y: value 1.5 at index 1 is not a class id; ...
        """
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
        """Class probabilities, shape (n, k) (k = 2 for binary).

        Parameters
        ----------
        X : array_like or scipy.sparse matrix of shape (n, d)
            Features, with the fitted number of columns d.

        Returns
        -------
        numpy.ndarray of shape (n, k)
            p(class c | x) in column c; each row sums to 1. For binary regression column 1 is
            the logistic sigmoid of ``decision_function(X)``.

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
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> proba = model.predict_proba(X)
        >>> proba.shape, np.allclose(proba.sum(axis=1), 1.0)
        ((569, 2), True)
        >>> np.allclose(proba[:, 1], 1 / (1 + np.exp(-model.decision_function(X))))
        True
        """
        return self._proba_of(as_points(X, "X", self._n_features()))

    def _proba_of(self, points) -> np.ndarray:
        m = self._mean_of(points)
        return np.column_stack([1.0 - m, m]) if self.n_classes == 1 else m

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
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> model.predict(X[:5])
        array([0, 0, 0, 0, 0])
        >>> np.array_equal(model.predict(X), model.predict_proba(X).argmax(axis=1))
        True
        """
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
