"""Approximate leave-one-out cross-validation (ALO) from one fit.

Each training point's held-out loss l(z_m; theta_(-m)) is evaluated at the one-Newton-step
leave-one-out parameters of :meth:`upweight.Influence.loo_params` (Rad & Maleki 2020), so the
leave-one-out CV loss costs one fit and one factorisation instead of n refits: a user tuning l2
sweeps it at the cost of one fit per value. Exact for squared loss (the step is the refit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .influence import Influence

__all__ = ["LooCV", "approximate_loo_cv"]


@dataclass(frozen=True)
class LooCV:
    """The approximate leave-one-out CV loss and its parts.

    ``estimate`` is the weighted mean of the held-out losses, sum_m w_m l(z_m; theta_(-m)) / W
    (points of weight 0 count nothing, as they count nothing in the fit); ``losses`` (n,) are the
    held-out losses; ``training_losses`` (n,) the same points' losses at theta*, so
    ``estimate - training_loss`` is the optimism of the training loss.

    Returned by :func:`approximate_loo_cv`; a frozen dataclass.

    Parameters
    ----------
    estimate : float
        The approximate leave-one-out CV loss, sum_m w_m l(z_m; theta_(-m)) / W.
    losses : numpy.ndarray of shape (n,)
        Each training point's held-out loss l(z_m; theta_(-m)), at the one-step leave-one-out
        parameters.
    training_losses : numpy.ndarray of shape (n,)
        The same points' losses at theta*.
    training_loss : float
        Their weighted mean, sum_m w_m l(z_m; theta*) / W.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> cv = uw.approximate_loo_cv(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
    >>> cv.losses.shape, cv.training_losses.shape
    ((569,), (569,))
    >>> round(cv.estimate, 4), round(cv.training_loss, 4)
    (0.0944, 0.0859)
    >>> cv.estimate > cv.training_loss  # the training loss is optimistic
    True
    """

    estimate: float
    losses: np.ndarray
    training_losses: np.ndarray
    training_loss: float


def approximate_loo_cv(model, X, y, sample_weight=None, **influence_kwargs) -> LooCV:
    """Approximate leave-one-out cross-validation loss (ALO) of a fitted model, from one fit.

    The approximate leave-one-out cross-validation loss of a fitted ``model`` (an upweight
    model, or a scikit-learn estimator :meth:`Influence.from_sklearn` converts) on its training
    set ``X, y, sample_weight``, from one Newton step per point (see :class:`LooCV`). Keyword
    arguments go to :class:`Influence` (``solver``, ``damping``, ...).

    Each held-out loss is evaluated at the one-Newton-step leave-one-out parameters of
    :meth:`upweight.Influence.loo_params` (Rad & Maleki 2020): one fit and one factorisation
    instead of n refits, exact for squared loss.

    Parameters
    ----------
    model : Model or scikit-learn estimator
        A fitted upweight model, or a fitted scikit-learn estimator that
        :meth:`Influence.from_sklearn` converts (``Ridge``, ``LogisticRegression``, ...).
    X : array_like of shape (n, d)
        The training features the model was fitted on.
    y : array_like of shape (n,)
        The training targets.
    sample_weight : array_like of shape (n,), optional
        The training weights the model was fitted with (default: all 1); points of weight 0
        count nothing in the estimate.
    **influence_kwargs
        Keyword arguments of :class:`Influence` (``solver``, ``damping``, ...).

    Returns
    -------
    LooCV
        ``estimate`` (the weighted mean held-out loss), ``losses`` (n,), ``training_losses``
        (n,) and ``training_loss``.

    Raises
    ------
    InputError
        If the data do not match the model, or an argument of :class:`Influence` is bad (the
        message names the argument).
    NotFittedError
        If ``model`` is not fitted.
    SingularHessianError
        If the Hessian (or that of a leave-one-out objective) is singular; use ``l2 > 0``.

    See Also
    --------
    leave_one_out : The exact leave-one-out refits, to check the estimate.

    Examples
    --------
    Choose l2 by ALO, one fit per value:

    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> cv = {l2: uw.approximate_loo_cv(uw.LogisticRegression(l2=l2).fit(X, y), X, y).estimate
    ...       for l2 in (1e-4, 1e-3, 1e-2, 1e-1)}
    >>> min(cv, key=cv.get)
    0.001
    """
    if hasattr(model, "get_theta"):
        inf = Influence(model, X, y, sample_weight, **influence_kwargs)
    else:
        inf = Influence.from_sklearn(model, X, y, sample_weight, **influence_kwargs)
    losses, base = inf.loo_losses(with_training=True)
    w = np.ones(losses.size) if inf.sample_weight is None else np.asarray(inf.sample_weight, dtype=np.float64)
    W = float(w.sum())
    return LooCV(float(w @ losses / W), losses, base, float(w @ base / W))
