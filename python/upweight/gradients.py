"""Influence from your own per-example gradients (deep models, DESIGN.md sections 3-4).

Users of PyTorch or JAX models compute per-example training gradients g_i (often randomly
projected to a few thousand dimensions, as TRAK and LoGra do) and hand them over as an (n, p)
array, a float32 array, or a ``.npy`` file. upweight never imports a deep-learning framework.

The curvature is either the empirical Fisher F = (1/W) sum_i w_i g_i g_i^T, built from the same
gradients (streamed, in Rust), or an explicit Hessian. Damping (solve (F + damping I) v = g) is
both a numerical safeguard and, for networks not trained to convergence, the modelling choice of
Bae et al. (2022): damped Gauss-Newton influence approximates the proximal Bregman response.
Scores keep the library's convention: S[t, m] = -g_t . (F + damping I)^{-1} g_m / W, negative
when upweighting m lowers the loss at t.
"""

from __future__ import annotations

import numpy as np

from . import _auto, _core
from ._validation import as_matrix, as_weights, check_output_fits, renamed, score_itemsize, training_features
from .errors import InputError
from .influence import TopK, _check_solver, _Queries

__all__ = ["GradientInfluence"]


class GradientInfluence(_Queries):
    """Influence of training points from their per-example gradients.

    Parameters
    ----------
    train_grads : (n, p) float64/float32 array, ``.npy`` path or its memmap: row m is the
        gradient of the training loss of point m at the trained parameters.
    hessian : optional (p, p) symmetric matrix to use as curvature instead of the Fisher.
    curvature : "fisher" (the empirical Fisher of ``train_grads``; the default).
    damping, sample_weight, solver, rtol, atol, max_iter, precondition, on_unconverged, progress : as for
        :class:`upweight.Influence`.
    """

    def __init__(self, train_grads, *, hessian=None, curvature: str = "fisher", damping: float = 0.0,
                 sample_weight=None, solver: str = "auto", rtol: float = 1e-10, atol: float = 0.0,
                 max_iter: int = 1000, precondition: bool = True, on_unconverged: str = "raise", progress=None):
        if curvature != "fisher":
            raise InputError(f"curvature: expected 'fisher' (or pass hessian=...), got {curvature!r}")
        self.train_grads, n, p = training_features(train_grads, name="train_grads")
        self.n_params = p
        _check_solver(solver, on_unconverged)
        self.on_unconverged = on_unconverged
        self.solve_info = None
        H = None
        if hessian is not None:
            H = as_matrix(hessian, "hessian")
            if H.shape != (p, p):
                raise InputError(f"hessian: has shape {H.shape}, expected ({p}, {p}) to match train_grads")
        self.curvature = "explicit" if H is not None else "fisher"
        self._w, self._H = as_weights(sample_weight, n), H
        self._args = (float(damping), float(rtol), float(atol), int(max_iter), bool(precondition), progress)
        if H is not None and solver == "auto":
            solver = "direct"  # H is given: factor it once (each CG iteration would cost a p x p matvec)
        self._itemsize = score_itemsize(self.train_grads)
        self._start(solver, _auto.Work(n, p))

    def _make_core(self, method: str):
        with renamed(X="train_grads"):  # the core calls its training rows X
            return _core.InfluenceCore.from_gradients(self.train_grads, self._w, self._H, method, *self._args)

    def _test_grads(self, test_grads):
        G, _ = self._grad_matrix(test_grads, "test_grads")
        return G

    def params(self, idx=None) -> np.ndarray:
        """I(z_m) = -(H + damping I)^{-1} g_m / W for all training points or the rows ``idx``."""
        if idx is None:
            check_output_fits((self.n_samples, self.n_params), 8, "idx", "pass idx= for a subset of training points")
            return self._checked(self._core_for(self.n_samples).params_train())
        rows = self._rows(idx)
        if isinstance(self.train_grads, str):
            from ._validation import read_npy_rows

            G = read_npy_rows(self.train_grads, rows)
        else:
            G = np.ascontiguousarray(self.train_grads[rows], dtype=np.float64)
        return self._checked(self._core_for(len(rows)).params(G, np.zeros(len(rows))))

    def on_loss(self, test_grads, idx=None) -> np.ndarray:
        """Score matrix (q, n) from test-loss gradients (q, p): S[t, m] < 0 means training point
        m helps test point t."""
        return self._scores(self._test_grads(test_grads), idx, "test_grads")

    def top_k(self, test_grads, k: int = 10) -> TopK:
        """Per test gradient, the k most helpful and most harmful training points, streamed."""
        return self.top_k_on(self._test_grads(test_grads), k)

    def __repr__(self) -> str:
        return f"GradientInfluence(n={self.n_samples}, p={self.n_params}, curvature={self.curvature!r}, solver={self.solver!r})"
