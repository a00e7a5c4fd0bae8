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
    ``estimate - training_loss`` is the optimism of the training loss."""

    estimate: float
    losses: np.ndarray
    training_losses: np.ndarray
    training_loss: float


def approximate_loo_cv(model, X, y, sample_weight=None, **influence_kwargs) -> LooCV:
    """The approximate leave-one-out cross-validation loss of a fitted ``model`` (an upweight
    model, or a scikit-learn estimator :meth:`Influence.from_sklearn` converts) on its training
    set ``X, y, sample_weight``, from one Newton step per point (see :class:`LooCV`). Keyword
    arguments go to :class:`Influence` (``solver``, ``damping``, ...).

    Example: choose l2 by ALO, one fit per value::

        for l2 in (1e-4, 1e-3, 1e-2):
            m = uw.LogisticRegression(l2=l2).fit(X, y)
            print(l2, uw.approximate_loo_cv(m, X, y).estimate)
    """
    if hasattr(model, "get_theta"):
        inf = Influence(model, X, y, sample_weight, **influence_kwargs)
    else:
        inf = Influence.from_sklearn(model, X, y, sample_weight, **influence_kwargs)
    losses, base = inf.loo_losses(with_training=True)
    w = np.ones(losses.size) if inf.sample_weight is None else np.asarray(inf.sample_weight, dtype=np.float64)
    W = float(w.sum())
    return LooCV(float(w @ losses / W), losses, base, float(w @ base / W))
