"""Exceptions and warnings raised by upweight.

Every bad input raises a subclass of :class:`UpweightError` whose message names the argument
(and, where it applies, the first offending index). They also subclass the built-in exception
a NumPy user would expect (``ValueError``, ``TypeError``), so existing ``except`` clauses work.
"""

from __future__ import annotations

import numpy as np


class UpweightError(Exception):
    """Base class of every exception raised by upweight.

    A subclass of the built-in ``Exception``; ``except uw.UpweightError`` catches every error
    upweight raises on purpose (each also subclasses the built-in a NumPy user expects, e.g.
    :class:`InputError` is a ``ValueError``).

    Examples
    --------
    >>> try:
    ...     uw.LogisticRegression(l2=-1.0).fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    ... except uw.UpweightError as exc:
    ...     print(type(exc).__name__, str(exc).split(":")[0])
    InputError l2
    """


class InputError(UpweightError, ValueError):
    """An argument has a bad shape or value (NaN, negative weight, label outside the family...).

    Raised by every function and method that checks its arguments; the message starts with the
    argument's name (``"y: ..."``). A ``ValueError`` (and an :class:`UpweightError`), so
    ``except ValueError`` catches it.

    Examples
    --------
    >>> try:
    ...     uw.compare([1.0, 2.0, 3.0], [1.0, 2.0])
    ... except ValueError as exc:
    ...     print(type(exc).__name__, str(exc).split(":")[0])
    InputError actual
    """


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder that an argument names does not exist (for a data set: how to install it).

    Also a ``FileNotFoundError``, so ``except FileNotFoundError`` (or ``except OSError``) catches it.
    Raised by :func:`~upweight.load_idx`, :func:`~upweight.load_fashion_mnist`,
    :func:`~upweight.load_mnist` and by a missing ``curvature_file``; it is an :class:`InputError`
    too (and so a ``ValueError``).

    Examples
    --------
    >>> try:
    ...     uw.load_idx("no-such-file-idx1-ubyte")
    ... except FileNotFoundError as exc:
    ...     print(type(exc).__name__, isinstance(exc, uw.InputError))
    MissingFileError True
    """


class InputTypeError(UpweightError, TypeError):
    """An argument has an unusable type or dtype (object, string, complex...).

    A ``TypeError`` (and an :class:`UpweightError`); the message names the argument.

    Examples
    --------
    >>> try:
    ...     uw.load_idx(3)
    ... except TypeError as exc:
    ...     print(type(exc).__name__, str(exc).split(":")[0])
    InputTypeError path
    """


class NotFittedError(UpweightError, ValueError, AttributeError):
    """The estimator is used before ``fit``.

    Raised when an unfitted model is predicted with, explained or saved. A ``ValueError`` and an
    ``AttributeError`` (as scikit-learn's ``NotFittedError``), and an :class:`UpweightError`.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> try:
    ...     uw.Influence(uw.LogisticRegression(), X, y)
    ... except ValueError as exc:
    ...     print(type(exc).__name__, str(exc).split(":")[0])
    NotFittedError model
    """


class SingularHessianError(UpweightError, np.linalg.LinAlgError):
    """The Hessian of the objective is singular: the fitted parameters are not unique.

    Typical causes are collinear or constant features, fewer points than parameters, or
    separable classes, all without a penalty. The fix is ``l2 > 0`` or removing features.
    Raised by fits and influence solves; a ``numpy.linalg.LinAlgError`` (and an
    :class:`UpweightError`).

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> Z = np.column_stack([X[:, 0], X[:, 0]])  # the same feature twice, no penalty
    >>> try:
    ...     uw.LinearRegression().fit(Z, X[:, 1])
    ... except np.linalg.LinAlgError as exc:
    ...     print(type(exc).__name__)
    SingularHessianError
    """


class ConvergenceError(UpweightError, RuntimeError):
    """An iterative solve (conjugate gradients) stopped before reaching its tolerance.

    The message gives the worst relative residual; raise ``max_iter``, add ``damping``, or pass
    ``on_unconverged="warn"`` to accept the approximate answer. A ``RuntimeError`` (and an
    :class:`UpweightError`).

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y, solver="cg", max_iter=1)
    >>> try:
    ...     inf.on_loss(X[:1], y[:1])
    ... except RuntimeError as exc:
    ...     print(type(exc).__name__)
    ConvergenceError
    """


class InternalError(UpweightError, RuntimeError):
    """A bug in upweight (the Rust core failed an internal check). Please report it.

    Raised instead of a crash when the core panics; a ``RuntimeError`` (and an
    :class:`UpweightError`).

    Examples
    --------
    >>> issubclass(uw.InternalError, RuntimeError), issubclass(uw.InternalError, uw.UpweightError)
    (True, True)
    """


class ConvergenceWarning(UserWarning, RuntimeWarning):
    """An iterative method stopped short of its tolerance, and its answer is returned anyway.

    Warned by a fit whose Newton's method ran out of ``max_iter`` before the gradient norm
    reached ``tol``; by the exact refits of :func:`~upweight.leave_one_out`,
    :func:`~upweight.leave_k_out` and :func:`~upweight.response_curve` (a refit short of its
    tolerance, or one with no finite optimum); and by a conjugate-gradient solve that missed its
    tolerance under ``on_unconverged="warn"`` (with the default ``"raise"`` that is a
    :class:`ConvergenceError`). A ``UserWarning`` and a ``RuntimeWarning`` (what the
    conjugate-gradient warning was before it had its own class);
    ``warnings.simplefilter("error", uw.ConvergenceWarning)`` turns every one into an exception.

    Examples
    --------
    >>> import warnings
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     model = uw.LogisticRegression(l2=1e-2, max_iter=1).fit(X, y)
    >>> [w.category.__name__ for w in caught], model.converged_
    (['ConvergenceWarning'], False)
    """


class HighLeverageWarning(UserWarning):
    """A training point has leverage 1: its leave-one-out diagnostics are undefined.

    A training point has leverage 1 (it alone determines a direction of the fit, e.g. the only
    row of a one-hot category): its studentized residuals, Cook's distance, DFBETA(S) and exact
    leave-one-out parameters are undefined (NaN); the message names the points.

    Warned by :func:`~upweight.diagnostics`. A ``UserWarning``.

    Examples
    --------
    Point 9 is the only one with the first feature nonzero: it alone fits that coefficient.

    >>> import warnings
    >>> X = np.column_stack([np.r_[np.zeros(9), 1.0], np.arange(10.0)])
    >>> y = 0.5 * np.arange(10.0) + np.sin(np.arange(10.0))
    >>> model = uw.LinearRegression().fit(X, y)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     d = uw.diagnostics(model, X, y)
    >>> [w.category.__name__ for w in caught], bool(np.isnan(d.cooks_distance[9]))
    (['HighLeverageWarning'], True)
    """


class NotAtOptimumWarning(UserWarning):
    """Influence was requested at parameters that do not minimise the objective on the given data.

    Influence functions are exact derivatives only at the optimum; pass the same ``X``, ``y``,
    ``sample_weight`` and ``l2`` that the model was fitted with. Warned when an influence object
    is built (:class:`~upweight.Influence`, :class:`~upweight.dask.DaskInfluence`), and when a
    converted scikit-learn or statsmodels fit had to be polished noticeably. A ``UserWarning``.

    Examples
    --------
    >>> import warnings
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     inf = uw.Influence(model, X[:300], y[:300])  # not the data it was fitted on
    >>> [w.category.__name__ for w in caught]
    ['NotAtOptimumWarning']
    """
