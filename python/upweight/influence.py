"""Exact influence of training points (DESIGN.md sections 1 and 4).

For a model fitted on a weighted training set, the influence of point z_m is the derivative of
the fitted parameters with respect to its weight,

    I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W,

and the influence on any differentiable f of theta is grad f(theta*) . I(z_m). Signs: a negative
score on a test loss means upweighting the training point lowers that loss (it *helps*);
removing a point changes theta by about -I(z_m). Koh & Liang's I_up equals W * I when l2 = 0.
"""

from __future__ import annotations

import warnings

import numpy as np

from . import _core
from ._validation import as_indices, as_matrix, as_vector, as_weights
from .errors import InputError, NotAtOptimumWarning

__all__ = ["Influence"]

#: Gradient norm (max abs entry of grad L_w) above which ``Influence`` warns that theta is not
#: an optimum of the objective on the data it was given.
OPTIMUM_TOL = 1e-6


class Influence:
    """Influence of the training points of a fitted model.

    Parameters
    ----------
    model : fitted ``LinearRegression``, ``LogisticRegression`` or ``PoissonRegression``
    X, y, sample_weight : the training set the model was fitted on (same weights and order).

    The Hessian is formed and factored once here; every query reuses it. Parameter vectors are
    flattened as ``model.theta_.reshape(-1)``: p = d + 1, or k (d + 1) for multinomial.
    """

    def __init__(self, model, X, y, sample_weight=None):
        if not hasattr(model, "_flat_theta"):
            raise InputError(f"model: expected a fitted upweight estimator, got {type(model).__name__}")
        theta = model._flat_theta()
        self.model = model
        self.X = as_matrix(X, "X", model.n_features_in_)
        n = self.X.shape[0]
        self.y = model._targets(y, n, fitting=False)
        self.sample_weight = as_weights(sample_weight, n)
        self.l2 = float(model.l2)
        self._core = _core.InfluenceCore(model.family, model.n_classes, theta, self.X, self.y, self.sample_weight, self.l2)
        if self._core.grad_norm > OPTIMUM_TOL:
            warnings.warn(
                f"the model's parameters do not minimise the objective on this data (max |gradient| = "
                f"{self._core.grad_norm:.3g}): influence is exact only at the optimum. Pass the same X, y, "
                "sample_weight and l2 the model was fitted with.",
                NotAtOptimumWarning,
                stacklevel=2,
            )

    # -- basic facts ------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_params(self) -> int:
        return self.model.n_classes * (self.X.shape[1] + 1)

    @property
    def total_weight(self) -> float:
        """W, the sum of the training weights."""
        return self._core.total_weight

    @property
    def grad_norm(self) -> float:
        """max |grad L_w(theta)| on the training data: ~0 at the optimum."""
        return self._core.grad_norm

    # -- parameters ---------------------------------------------------------------------------
    def params(self, idx=None) -> np.ndarray:
        """I(z_m) for all training points, or the rows ``idx``: shape (n or len(idx), p)."""
        if idx is None:
            return self._core.params(self.X, self.y)
        rows = as_indices(idx, self.n_samples)
        return self._core.params(np.ascontiguousarray(self.X[rows]), np.ascontiguousarray(self.y[rows]))

    def new_point(self, x, y) -> np.ndarray:
        """I(z) of a point (or points) not in the training set: the derivative of theta with
        respect to adding it with weight eps at eps = 0.

        ``x`` of shape (d,) with scalar ``y`` gives (p,); ``x`` of shape (m, d) gives (m, p).
        """
        single = np.ndim(x) == 1
        X = as_matrix(np.atleast_2d(x) if single else x, "x", self.X.shape[1])
        yv = as_vector(np.atleast_1d(y), "y", X.shape[0])
        yv = self.model._targets(yv, X.shape[0], fitting=False)
        out = self._core.params(X, yv)
        return out[0] if single else out

    def self_influence(self) -> np.ndarray:
        """grad l(z_m) . I(z_m) for every training point, shape (n,). Always <= 0 for l2 = 0;
        the most negative values flag points the model fits only by bending towards them
        (outliers, mislabelled points)."""
        return self._core.self_influence(self.X, self.y)

    def inverse_hvp(self, g) -> np.ndarray:
        """H^{-1} g for a vector (p,) or the columns of a matrix (p, r)."""
        g = np.asarray(g, dtype=np.float64)
        if g.ndim == 1:
            return self._core.inverse_hvp(np.ascontiguousarray(g[:, None]))[:, 0]
        return self._core.inverse_hvp(np.ascontiguousarray(as_matrix(g, "g")))

    # -- functions of theta ------------------------------------------------------------------
    def on(self, grad_f) -> np.ndarray:
        """Influence of every training point on f, given grad f(theta*).

        ``grad_f`` of shape (p,) gives (n,); (r, p) gives (r, n) with row j for f_j.
        """
        g = np.asarray(grad_f)
        single = g.ndim == 1
        G = as_matrix(g[None, :] if single else g, "grad_f")
        if G.shape[1] != self.n_params:
            raise InputError(f"grad_f: has {G.shape[1]} entries per row, expected p = {self.n_params}")
        out = self._core.on(self.X, self.y, G)
        return out[0] if single else out

    def on_loss(self, X_test, y_test) -> np.ndarray:
        """Score matrix S of shape (q, n): S[t, m] = grad l(z_t) . I(z_m), the influence of
        training point m on the loss at test point t. Negative: m helps t."""
        Xt = as_matrix(X_test, "X_test", self.X.shape[1])
        yt = as_vector(y_test, "y_test", Xt.shape[0])
        try:
            yt = self.model._targets(yt, Xt.shape[0], fitting=False)
        except InputError as exc:
            raise InputError(str(exc).replace("y:", "y_test:", 1)) from None
        return self._core.on_loss(self.X, self.y, Xt, yt)

    def on_prediction(self, X_test, kind: str = "mean") -> np.ndarray:
        """Influence of every training point on the predictions at ``X_test``.

        ``kind="mean"``: the mean response (regression value, probability of class 1, Poisson
        rate, or every class probability); ``kind="linear"``: the linear predictor(s).
        Shape (q, n), or (q, k, n) for multinomial.
        """
        if kind not in ("mean", "linear"):
            raise InputError(f"kind: expected 'mean' or 'linear', got {kind!r}")
        Xt = as_matrix(X_test, "X_test", self.X.shape[1])
        k = self.model.n_classes
        G = _core.prediction_grads(self.model.family, k, self.model._flat_theta(), Xt, kind)
        S = self._core.on(self.X, self.y, G)
        return S if k == 1 else S.reshape(Xt.shape[0], k, self.n_samples)

    def __repr__(self) -> str:
        return f"Influence({self.model!r}, n={self.n_samples}, p={self.n_params})"
