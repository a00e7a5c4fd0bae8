"""Exceptions and warnings raised by upweight.

Every bad input raises a subclass of :class:`UpweightError` whose message names the argument
(and, where it applies, the first offending index). They also subclass the built-in exception
a NumPy user would expect (``ValueError``, ``TypeError``), so existing ``except`` clauses work.
"""

from __future__ import annotations

import numpy as np


class UpweightError(Exception):
    """Base class of every exception raised by upweight."""


class InputError(UpweightError, ValueError):
    """An argument has a bad shape or value (NaN, negative weight, label outside the family...)."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder that an argument names does not exist (for a data set: how to install it).

    Also a ``FileNotFoundError``, so ``except FileNotFoundError`` (or ``except OSError``) catches it.
    """


class InputTypeError(UpweightError, TypeError):
    """An argument has an unusable type or dtype (object, string, complex...)."""


class NotFittedError(UpweightError, ValueError, AttributeError):
    """The estimator is used before ``fit``."""


class SingularHessianError(UpweightError, np.linalg.LinAlgError):
    """The Hessian of the objective is singular: the fitted parameters are not unique.

    Typical causes are collinear or constant features, fewer points than parameters, or
    separable classes, all without a penalty. The fix is ``l2 > 0`` or removing features.
    """


class ConvergenceError(UpweightError, RuntimeError):
    """An iterative solve (conjugate gradients) stopped before reaching its tolerance.

    The message gives the worst relative residual; raise ``max_iter``, add ``damping``, or pass
    ``on_unconverged="warn"`` to accept the approximate answer.
    """


class InternalError(UpweightError, RuntimeError):
    """A bug in upweight (the Rust core failed an internal check). Please report it."""


class ConvergenceWarning(UserWarning):
    """Newton's method stopped before the gradient norm reached ``tol``."""


class HighLeverageWarning(UserWarning):
    """A training point has leverage 1 (it alone determines a direction of the fit, e.g. the only
    row of a one-hot category): its studentized residuals, Cook's distance, DFBETA(S) and exact
    leave-one-out parameters are undefined (NaN); the message names the points."""


class NotAtOptimumWarning(UserWarning):
    """Influence was requested at parameters that do not minimise the objective on the given data.

    Influence functions are exact derivatives only at the optimum; pass the same ``X``, ``y``,
    ``sample_weight`` and ``l2`` that the model was fitted with.
    """
