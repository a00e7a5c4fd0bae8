"""upweight on Dask: fit, influence and streamed scores over a training set chunked by rows.

Install with ``pip install 'upweight[dask]'``. The training set is a ``dask.array`` X chunked by
rows (float64, float32, or scipy.sparse chunks) with y and sample_weight as dask arrays of the
same row chunks (:func:`from_npy` and :func:`from_parquet` open shards without loading them on
the client). Every pass over the data is a Dask graph run by Dask's scheduler (the current
``distributed.Client``, the one passed as ``client=``, or Dask's default scheduler); each chunk's
work is one call of the core's per-chunk kernels (rust/python/kernels.rs), with the GIL released.

What is computed where:

- on the workers, per chunk: partial sums of the objective, its gradient and Hessian
  (``partial_sums``), blocks of scores, top-k of a block, self-influence of the chunk's rows;
- combined by a fixed binary tree over the chunks in order (so a result does not depend on
  which worker ran what, nor on their number): partial sums added, top-k lists merged;
- on the client: the Newton step and the factorisation of H (p x p), the query solve
  V = H^{-1} grad f^T, the few rows of ``idx=`` queries.

Only p-sized and p x p objects travel to the client, plus one (p + 1) x q matrix of solved
queries to the workers; the factor of H goes to each worker once (scattered) for self-influence.

``model.fit(Xd, yd, sample_weight=wd)`` and ``uw.Influence(model, Xd, yd, sample_weight=wd)``
dispatch here when their inputs are dask arrays.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from . import _core
from ._validation import as_csr, as_indices, as_matrix, as_nonneg_float, as_positive_int, check_finite, file_stamp, is_dask, is_sparse
from .errors import (
    ConvergenceError,
    ConvergenceWarning,
    InputError,
    InputTypeError,
    MissingFileError,
    NotAtOptimumWarning,
    SingularHessianError,
)
from .influence import OPTIMUM_DECREMENT_RTOL, OPTIMUM_TOL, SolveInfo, TopK
from .models import restore_on_error
from .solver import check_on_unconverged

#: Up to this many parameters ``solver="auto"`` forms H (p x p on the client, factored there);
#: above, conjugate gradients on Hessian-vector products (one pass over the chunks per iteration).
DIRECT_MAX_P = 4096

__all__ = ["DaskInfluence", "fit", "from_npy", "from_parquet", "save_npy_stack"]


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - the extra is installed in the test environment
        raise ImportError("upweight.dask needs dask: pip install 'upweight[dask]'") from exc
    return dask, da


# -- inputs ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Chunks:
    """The training set as per-chunk delayed pieces: X, y, w (None: unit weights) and each
    chunk's first row."""

    x: list
    y: list
    w: list | None
    starts: list[int]
    n: int
    d: int
    dtype: np.dtype


def _row_chunked(a, name: str, ndim: tuple[int, ...]):
    if not is_dask(a):
        raise InputTypeError(f"{name}: expected a dask array chunked by rows (like X), got {type(a).__name__}")
    if a.ndim not in ndim:
        raise InputError(f"{name}: expected a {' or '.join(f'{k}-d' for k in ndim)} dask array, got {a.ndim}-d shape {a.shape}")
    if any(np.isnan(c) for c in a.chunks[0]):
        raise InputError(f"{name}: its row chunks have unknown sizes; call {name}.compute_chunk_sizes() first")
    if a.ndim == 2 and len(a.chunks[1]) != 1:
        raise InputError(f"{name}: is chunked along columns ({len(a.chunks[1])} column chunks); upweight needs whole rows "
                         f"per chunk: {name}.rechunk({{1: -1}})")
    return a


def _training_chunks(X, y, sample_weight, n_features: int | None = None) -> _Chunks:
    """Check the dask training set (X by rows, y and w with X's row chunks) and split it."""
    _row_chunked(X, "X", (2,))
    n, d = (int(s) for s in X.shape)
    if n == 0:
        raise InputError("X: has no rows")
    if n_features is not None and d != n_features:
        raise InputError(f"X: has {d} columns but the model has {n_features} features")
    if X.dtype.kind not in "biuf":
        raise InputTypeError(f"X: expected a real numeric dask array, got dtype {X.dtype}")
    if y is None:
        raise InputError("y: the model requires y, got None")
    _row_chunked(y, "y", (1, 2))
    if y.chunks[0] != X.chunks[0]:
        raise InputError(f"y: its row chunks {_show(y.chunks[0])} differ from X's {_show(X.chunks[0])}: "
                         "rechunk y (or X) so that the chunks hold the same rows")
    w_parts = None
    if sample_weight is not None:
        _row_chunked(sample_weight, "sample_weight", (1,))
        if sample_weight.chunks[0] != X.chunks[0]:
            raise InputError(f"sample_weight: its row chunks {_show(sample_weight.chunks[0])} differ from X's "
                             f"{_show(X.chunks[0])}")
    starts = [int(s) for s in np.concatenate([[0], np.cumsum(X.chunks[0])[:-1]])]

    def parts(a) -> list:
        source = _NPY_SOURCES.get(a.name)  # from_npy, untransformed: each task reads its own rows
        if source is not None:
            return [_Part(source, s, s + int(c)) for s, c in zip(starts, a.chunks[0], strict=True)]
        return list(a.to_delayed().ravel())

    if sample_weight is not None:
        w_parts = parts(sample_weight)
    dtype = np.dtype(np.float32 if X.dtype == np.float32 else np.float64)
    return _Chunks(parts(X), parts(y), w_parts, starts, n, d, dtype)


def _show(chunks) -> str:
    c = tuple(int(v) for v in chunks)
    return str(c) if len(c) <= 6 else f"({c[0]}, {c[1]}, ..., {c[-1]}) ({len(c)} chunks)"


# -- the worker side: one chunk --------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _core_model(spec: tuple) -> _core.Model:
    """The core model of ``spec`` = (family, n_classes, n_features), built once per worker process."""
    return _core.Model.glm(*spec)


def _x(x, start: int):
    """A chunk of X as the core takes it: dense float64/float32, or CSR arrays."""
    if is_sparse(x):
        return as_csr(x, f"X (rows {start}..)")
    a = np.asarray(x)
    if a.dtype not in (np.float64, np.float32):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _vec(v):
    return None if v is None else np.ascontiguousarray(v, dtype=np.float64)


def _in_rows(start: int, f: Callable, *args):
    """``f(*args)`` on the chunk whose first training row is ``start``, with the row indices in
    an input error counted from the first training row (as on one machine)."""
    try:
        return f(*args)
    except InputError as exc:
        msg = re.sub(r"\b(index|row) (\d+)", lambda m: f"{m[1]} {start + int(m[2])}", str(exc))
        raise type(exc)(msg) from None


@dataclass(frozen=True)
class _Part:
    """Rows a..b of a :func:`from_npy` source, read (memory-mapped) inside the task that uses them:
    no task of their own, so never moved between workers (a separate read task's 128 MB result
    was, when the scheduler ran its consumer elsewhere)."""

    source: _NpyRows
    a: int
    b: int

    def read(self) -> np.ndarray:
        return self.source[self.a:self.b]


def _on_chunk(f: Callable, *args):
    """``f(*args)`` with the chunk's :class:`_Part` arguments read."""
    return f(*(a.read() if isinstance(a, _Part) else a for a in args))


def _partial_chunk(spec, theta, x, y, w, hessian: bool, start: int):
    p = theta.size
    if np.shape(x)[0] == 0:
        return (0.0, 0.0, np.zeros(p), np.zeros((p, p)) if hessian else None)
    return _in_rows(start, _core.partial_sums, _core_model(spec), theta, _x(x, start), _vec(y), _vec(w), hessian)


def _add_partials(a, b):
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], None if a[3] is None else a[3] + b[3])


def _hvp_chunk(spec, theta, x, y, w, v, start: int):
    if np.shape(x)[0] == 0:
        return np.zeros_like(v)
    return _in_rows(start, _core.partial_hvp, _core_model(spec), theta, _x(x, start), _vec(y), _vec(w), v)


def _diag_chunk(spec, theta, x, y, w, start: int):
    """sum_i w_i diag(Hess l_i) over one chunk (unnormalised; zeros without positive weight)."""
    if np.shape(x)[0] == 0 or (w is not None and not np.sum(w) > 0):
        return np.zeros(theta.size)
    weight = float(np.shape(x)[0] if w is None else np.sum(w))
    return weight * _in_rows(start, _core.curvature_diag, _core_model(spec), theta, _x(x, start), _vec(y), _vec(w), 0.0)


def _scores_chunk(spec, theta, x, y, vc, total_weight: float, start: int):
    if np.shape(x)[0] == 0:
        return np.zeros((vc.shape[1], 0), dtype=np.float32 if np.asarray(x).dtype == np.float32 else np.float64)
    return _in_rows(start, _core.score_block, _core_model(spec), theta, _x(x, start), _vec(y), vc, total_weight)


def _top_k_chunk(spec, theta, x, y, vc, total_weight: float, k: int, start: int) -> TopK:
    q = vc.shape[1]
    if np.shape(x)[0] == 0:
        none = np.zeros((q, 0), np.intp)
        return TopK(none, np.zeros((q, 0)), none, np.zeros((q, 0)))
    hi, h, xi, xs = _in_rows(start, _core.top_k_block, _core_model(spec), theta, _x(x, start), _vec(y), vc, total_weight, k, start)
    return TopK(hi.astype(np.intp), h, xi.astype(np.intp), xs)


def _register_sizeof() -> None:
    """Let Dask's memory accounting see the arrays inside a TopK (it counts 56 bytes otherwise)."""
    from dask.sizeof import sizeof

    sizeof.register(TopK)(lambda t: sum(a.nbytes for a in t.as_tuple()))


_register_sizeof()


def _self_influence_chunk(spec, theta, x, y, factor, penalty_grad, total_weight: float, start: int):
    if np.shape(x)[0] == 0:
        return np.zeros(0)
    return _in_rows(start, _core.self_influence_block, _core_model(spec), theta, _x(x, start), _vec(y), factor, penalty_grad,
                    total_weight)


def _params_chunk(spec, theta, x, y, factor, penalty_grad, total_weight: float, start: int):
    if np.shape(x)[0] == 0:
        return np.zeros((0, theta.size))
    g = _in_rows(start, _core_model(spec).per_example_grads, theta, _x(x, start), _vec(y))
    return -factor.solve((g + penalty_grad).T).T / total_weight


def _check_classes_chunk(y, w, start: int):
    """(max label, first bad (index, value) or None, weight per label seen) of one chunk of
    class ids."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.size == 0:
        return (-1.0, None, np.zeros(0))
    bad = np.flatnonzero(~np.isfinite(y) | (y < 0) | (y != np.floor(y)))
    if bad.size:
        return (float("nan"), (start + int(bad[0]), float(y[bad[0]])), np.zeros(0))
    return (float(y.max()), None, np.bincount(y.astype(np.intp), weights=None if w is None else np.asarray(w, np.float64)))


def _separated_chunk(spec, theta, x, y, w, start: int) -> bool:
    """Whether every row of positive weight is classified correctly (see LogisticRegression)."""
    if np.shape(x)[0] == 0:
        return True
    eta = _core_model(spec).predict(theta, _x(x, start), "linear")
    y = np.asarray(y, np.float64).reshape(-1)
    correct = (2 * y - 1) * eta[:, 0] > 0 if eta.shape[1] == 1 else np.argmax(eta, axis=1) == y
    if w is not None:
        correct |= np.asarray(w) == 0
    return bool(correct.all())


# -- combining over chunks ------------------------------------------------------------------------

def _tree(parts: list, combine: Callable):
    """Combine delayed ``parts`` by a fixed binary tree in chunk order: ((0 1) (2 3)) ..., the
    same whatever worker computes what."""
    dask, _ = _dask()
    level = list(parts)
    while len(level) > 1:
        nxt = [dask.delayed(combine, pure=True)(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class _Runner:
    """Runs the graphs of one dataset on the client's scheduler, shipping large objects once."""

    def __init__(self, data: _Chunks, spec: tuple | None, client=None):
        # spec: the model's (family, n_classes, n_features) for the kernels; None before it is known
        self.data, self.spec, self.client = data, spec, client if client is not None else _current_client()

    def compute(self, *graphs):
        dask, _ = _dask()
        if self.client is not None:
            return tuple(self.client.compute(list(graphs), sync=True))
        return dask.compute(*graphs)

    def share(self, obj):
        """``obj`` as an argument of every chunk's task: scattered to every worker once under
        distributed, else the object itself (a delayed constant)."""
        dask, _ = _dask()
        if self.client is not None:
            return self.client.scatter(obj, broadcast=True, hash=False)
        return dask.delayed(obj, pure=False, traverse=False)

    def map(self, f: Callable, *args, weights: bool = False, targets: bool = True) -> list:
        """Delayed ``f(spec, args[0], x, y[, w], *args[1:], start)`` for every chunk; arrays
        among ``args`` enter the graph once."""
        dask, _ = _dask()
        d = self.data
        args = tuple(dask.delayed(a, pure=True, traverse=False) if isinstance(a, np.ndarray) else a for a in args)
        out = []
        for j, (x, start) in enumerate(zip(d.x, d.starts, strict=True)):
            chunk = [x]
            if targets:
                chunk.append(d.y[j])
            if weights:
                chunk.append(None if d.w is None else d.w[j])
            out.append(dask.delayed(_on_chunk, pure=True)(f, self.spec, *args[:1], *chunk, *args[1:], start))
        return out

    def sums(self, theta: np.ndarray, hessian: bool):
        """(sum w, sum w l, sum w grad l, sum w Hess l or None) over the whole training set."""
        parts = self.map(_partial_chunk, theta, hessian, weights=True)
        return self.compute(_tree(parts, _add_partials))[0]

    def hvp(self, theta: np.ndarray, v: np.ndarray) -> np.ndarray:
        """sum_i w_i (Hess l_i) V (p x r), unnormalised: one pass."""
        parts = self.map(_hvp_chunk, theta, np.ascontiguousarray(v), weights=True)
        return self.compute(_tree(parts, np.add))[0]

    def diag(self, theta: np.ndarray) -> np.ndarray:
        """sum_i w_i diag(Hess l_i) (p,), unnormalised: one pass."""
        return self.compute(_tree(self.map(_diag_chunk, theta, weights=True), np.add))[0]


@dataclass
class _Operator:
    """H + damping I of the whole training set as Hessian-vector products over the chunks (one
    pass per product), with its diagonal for Jacobi preconditioning, restricted to the
    identifiable subspace (the right-hand sides' parts along the model's null space dropped)."""

    runner: _Runner
    theta: np.ndarray
    l2: float
    total_weight: float
    damping: float
    null: np.ndarray | None

    def __post_init__(self):
        core = _core_model(self.runner.spec)
        mask_l2 = _core.finish_hvp_sums(core, self.l2, 1.0, np.zeros((self.theta.size, 1)), np.ones((self.theta.size, 1)))[:, 0]
        self.diagonal = self.runner.diag(self.theta) / self.total_weight + mask_l2 + self.damping
        self.diagonal[~(self.diagonal > 0)] = max(float(np.mean(np.abs(self.diagonal))), 1e-300)
        self.passes = 0

    def project(self, b: np.ndarray) -> np.ndarray:
        return b if self.null is None else b - self.null @ (self.null.T @ b)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        self.passes += 1
        core = _core_model(self.runner.spec)
        hv = _core.finish_hvp_sums(core, self.l2, self.total_weight, self.runner.hvp(self.theta, v), v) + self.damping * v
        return self.project(hv)

    def solve(self, b: np.ndarray, rtol: float, atol: float = 0.0, max_iter: int = 1000):
        """Jacobi-preconditioned conjugate gradients for the columns of ``b`` (p x r), all
        columns in each pass: (x, iterations, relative residuals, converged)."""
        b = self.project(np.asarray(b, dtype=np.float64))
        p, r = b.shape
        x, res = np.zeros((p, r)), b.copy()
        # (the preconditioned residual is projected too: the iterates stay in the identifiable subspace)
        z = self.project(res / self.diagonal[:, None])
        d = z.copy()
        rz = np.einsum("ij,ij->j", res, z)
        bnorm = np.linalg.norm(b, axis=0)
        target = np.maximum(rtol * bnorm, atol)
        active = np.linalg.norm(res, axis=0) > target
        iterations = np.zeros(r, dtype=np.intp)
        for _ in range(max_iter):
            idx = np.flatnonzero(active)
            if idx.size == 0:
                break
            ad = self(d[:, idx])
            dad = np.einsum("ij,ij->j", d[:, idx], ad)
            if np.any(~(dad > 0)):
                raise SingularHessianError("conjugate gradients met a direction of zero or negative curvature: H is singular at "
                                           "these parameters (use l2 > 0 or damping > 0)")
            alpha = rz[idx] / dad
            x[:, idx] += alpha * d[:, idx]
            res[:, idx] -= alpha * ad
            z_new = self.project(res[:, idx] / self.diagonal[:, None])
            rz_new = np.einsum("ij,ij->j", res[:, idx], z_new)
            d[:, idx] = z_new + (rz_new / rz[idx]) * d[:, idx]
            rz[idx] = rz_new
            iterations[idx] += 1
            active[idx] = np.linalg.norm(res[:, idx], axis=0) > target[idx]
        rel = np.where(bnorm > 0, np.linalg.norm(res, axis=0) / np.where(bnorm > 0, bnorm, 1.0), 0.0)
        return x, iterations, rel, ~active


def _current_client():
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def _refuse_networks(model) -> None:
    if hasattr(model, "default_curvature"):
        raise InputError("model: networks are not yet supported on Dask (GLMs are: LinearRegression, LogisticRegression, "
                         "PoissonRegression); compute on one machine, or pass per-example gradients to GradientInfluence")


def _spec(model) -> tuple:
    _refuse_networks(model)
    family = getattr(model, "family", None)
    if family not in ("squared", "logistic", "multinomial", "poisson"):
        raise InputError(f"model: {type(model).__name__} is not an upweight GLM; on Dask, upweight fits and explains "
                         "LinearRegression, LogisticRegression and PoissonRegression")
    return (family, model.n_classes, model.n_features_in_)


# -- fitting ----------------------------------------------------------------------------------

@restore_on_error
def fit(model, X, y, sample_weight=None, *, client=None):
    """Fit an upweight GLM on dask arrays by Newton's method.

    Fit an upweight GLM (``model``'s parameters: l2, tol, max_iter, warm_start) on dask
    arrays by Newton's method: each step is one pass over the chunks returning the value,
    gradient and Hessian as partial sums (only p x p travels), combined by a fixed tree, then
    solved on the client (Cholesky, augmented along the multinomial's null space as on one
    machine). What ``model.fit(Xd, yd, sample_weight=wd)`` calls; returns the model, with the
    attributes ``fit`` sets. The stopping rule is the core's: ``max |gradient| <= tol``, or a
    Newton decrement at rounding level.

    The result equals fitting the same data in memory (the same iterations, parameters to
    rounding). If the fit fails, ``model`` is left as it was. Networks are not supported on Dask.

    Parameters
    ----------
    model : LinearRegression, LogisticRegression or PoissonRegression
        The estimator to fit; its ``l2``, ``tol``, ``max_iter``, ``solver`` ("auto", "direct" or
        "cg": "auto" is direct up to ``DIRECT_MAX_P`` parameters) and ``warm_start`` apply.
    X : dask.array.Array of shape (n, d)
        The training features, chunked by rows only (float64, float32 or scipy.sparse chunks).
    y : dask.array.Array of shape (n,)
        The training targets, with X's row chunks.
    sample_weight : dask.array.Array of shape (n,), optional
        The training weights, with X's row chunks (default: all 1).
    client : distributed.Client, optional
        The Dask client to run on; default the current ``distributed`` client, else Dask's
        default scheduler.

    Returns
    -------
    LinearRegression, LogisticRegression or PoissonRegression
        ``model``, fitted: ``theta_``, ``n_features_in_``, ``n_iter_``, ``grad_norm_``,
        ``converged_``, ``objective_`` (and ``classes_`` for a classifier) set.

    Raises
    ------
    InputError
        If the arrays are not chunked by whole rows, y's or sample_weight's row chunks differ
        from X's, a label is not a class id, the weights sum to zero, or a parameter of ``model``
        is bad (the message names the argument).
    InputTypeError
        If X, y or sample_weight is not a dask array, or X is not real numeric.
    SingularHessianError
        If the objective has no finite minimiser (separable classes without a penalty); use
        ``l2 > 0``.

    Warns
    -----
    ConvergenceWarning
        If Newton's method stops after ``max_iter`` iterations above ``tol``.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
    >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
    ...     model = uw.dask.fit(uw.LogisticRegression(l2=1e-2), Xd, yd)
    >>> model.converged_, model.theta_.shape
    (True, (31,))
    >>> bool(np.allclose(model.get_theta(), uw.LogisticRegression(l2=1e-2).fit(X, y).get_theta()))
    True
    """
    _refuse_networks(model)  # by name, before its settings are read as a GLM's
    return _fit(model, X, y, sample_weight, client)


def _fit(model, X, y, sample_weight, client):
    data = _training_chunks(X, y, sample_weight)
    l2 = as_nonneg_float(model.l2, "l2")
    tol = as_nonneg_float(model.tol, "tol")
    max_iter = as_positive_int(model.max_iter, "max_iter")
    solver = getattr(model, "solver", "auto")
    if solver not in ("auto", "direct", "cg"):
        raise InputError(f"solver: expected 'auto', 'direct' or 'cg', got {solver!r}")
    if hasattr(model, "n_classes_param"):  # class ids: check them and set classes_ in one pass
        _declare_classes(model, _Runner(data, None, client))
    model.n_features_in_ = data.d
    spec = (model.family, model.n_classes, data.d)
    runner = _Runner(data, spec, client)
    p = model.n_classes * (data.d + 1)
    null = _core.null_space(_core_model(spec), l2)
    theta = np.zeros(p)
    if model.warm_start and getattr(model, "theta_", None) is not None and model.theta_.size == p:
        theta = np.array(model.theta_, dtype=np.float64).reshape(-1)
        if null is not None:
            theta -= null @ (null.T @ theta)

    # "direct": value, gradient and Hessian from one pass, the step by Cholesky on the client;
    # "cg" (and "auto" above DIRECT_MAX_P): truncated Newton-CG, H never formed (each CG
    # iteration one pass of Hessian-vector products)
    direct = solver == "direct" or (solver == "auto" and p <= DIRECT_MAX_P)

    def evaluate(t):
        w, loss, g, h = runner.sums(t, direct)
        if not w > 0:
            raise InputError("sample_weight: the weights sum to zero (no training point counts)")
        f, g, h = _core.finish_sums(_core_model(spec), t, l2, w, loss, g, h)
        return f, g, (h if direct else (t, w))

    def newton_step(g, h):
        if direct:
            return -_core.Factor(h, 0.0, null).solve(g[:, None])[:, 0]
        at, weight = h
        op = _Operator(runner, at, l2, weight, 0.0, null)
        x, *_ = op.solve(g[:, None], rtol=min(0.5, float(np.sqrt(np.linalg.norm(g)))), max_iter=500)
        return -x[:, 0]

    f, g, h = evaluate(theta)
    n_iter, converged = 0, False
    while True:
        if np.max(np.abs(g)) <= tol:
            converged = True
            break
        if n_iter >= max_iter:
            break
        step = newton_step(g, h)
        slope = float(g @ step)
        n_iter += 1
        if -slope <= 1e-14 * (1.0 + abs(f)):  # rounding level: take the full step if it still helps
            ft, gt, ht = evaluate(theta + step)
            if np.max(np.abs(gt)) >= np.max(np.abs(g)):
                converged = True
                break
            theta, f, g, h = theta + step, ft, gt, ht
            continue
        t = 1.0
        while True:
            trial = theta + t * step
            ft, gt, ht = evaluate(trial)
            if np.isfinite(ft) and ft <= f + 1e-4 * t * slope and np.all(np.isfinite(gt)):
                theta, f, g, h = trial, ft, gt, ht
                break
            t *= 0.5
            if t < 1e-20:
                raise SingularHessianError("the line search found no decrease along the Newton direction: the objective has no "
                                           "finite minimiser (separable classes without a penalty?); use l2 > 0")
    model.set_theta(theta)
    if l2 == 0 and model.family != "squared":
        separated = runner.compute(_tree(runner.map(_separated_chunk, theta, weights=True), lambda a, b: a and b))[0]
        if separated:
            raise SingularHessianError("the classes are perfectly separable, so the unpenalised loss has no finite minimiser "
                                       "(and no Hessian to invert there): use l2 > 0")
    model.n_iter_, model.grad_norm_, model.converged_, model.objective_ = n_iter, float(np.max(np.abs(g))), converged, float(f)
    if not converged:
        warnings.warn(f"{type(model).__name__}: Newton's method stopped after {n_iter} iterations with gradient norm "
                      f"{model.grad_norm_:.3g} > tol={tol:g}", ConvergenceWarning, stacklevel=3)
    return model


def _declare_classes(model, runner: _Runner) -> None:
    """Check the class ids of a dask y (one pass) and set ``classes_`` as fitting on one machine does."""
    d = runner.data
    dask, _ = _dask()
    parts = [dask.delayed(_on_chunk, pure=True)(_check_classes_chunk, yc, None if d.w is None else d.w[j], s)
             for j, (yc, s) in enumerate(zip(d.y, d.starts, strict=True))]
    summaries = runner.compute(*parts)
    for _, bad, _ in summaries:
        if bad is not None:
            raise InputError(f"y: value {bad[1]} at index {bad[0]} is not a class id; {type(model).__name__} expects integer "
                             "labels 0..k-1 (0/1 for binary)")
    top = max(s[0] for s in summaries)
    k = model.n_classes_param if model.n_classes_param is not None else int(top) + 1
    k = max(as_positive_int(k, "n_classes"), 2)
    if top >= k:
        raise InputError(f"y: class id {top:g} is not below n_classes={k}")
    weight = np.zeros(k)
    for _, _, counts in summaries:
        weight[: counts.size] += counts
    model.classes_ = np.arange(k)
    empty = np.flatnonzero(~(weight > 0))
    if empty.size == k - 1:
        raise InputError(f"y: only one class ({int(np.argmax(weight))}) has points of positive weight; LogisticRegression needs "
                         "at least 2 classes")
    if empty.size:
        raise InputError(f"y: class {int(empty[0])} of 0..{k - 1} has no training point of positive weight, so its intercept has "
                         "no finite optimum: relabel the classes present as 0..k-1")


# -- influence ------------------------------------------------------------------------------------

class DaskInfluence:
    """Influence of the training points of an upweight GLM fitted on a dask training set.

    What ``uw.Influence(model, Xd, yd, sample_weight=wd)`` returns for dask inputs.

    ``solver="direct"``: H is summed over the chunks once (one pass) and factored on the client;
    ``"cg"``: every query is solved by Jacobi-preconditioned conjugate gradients on the client,
    each iteration one pass of Hessian-vector products over the chunks (all right-hand sides
    together; H never formed: for p too large for a p x p matrix); ``"auto"``: direct up to
    ``DIRECT_MAX_P`` parameters. ``damping``, ``rtol``, ``atol``, ``max_iter`` and
    ``on_unconverged`` as for :class:`upweight.Influence`. Queries solve V = H^{-1} grad f^T
    on the client and ship [V; c] ((p + 1) x q) to the workers: :meth:`top_k` merges per-chunk
    lists by a fixed tree, :meth:`on_loss` / :meth:`on_prediction` / :meth:`on` return the full
    score matrix as a lazy dask array (q, n) chunked like X's rows (write it with ``to_zarr`` or
    ``to_npy_stack``, never held whole), :meth:`self_influence` a lazy (n,) dask array; with
    ``idx=``, the rows are gathered to the client and the answer is a NumPy array.

    The model's parameters and the dask graph of the data are taken as they are now (a dask
    array is immutable; files behind it must not change while in use).

    Answers equal those of :class:`upweight.Influence` on the same data in memory (to rounding),
    and do not depend on the number of workers: per-chunk results are combined by a fixed tree
    in chunk order. Only GLMs (``LinearRegression``, ``LogisticRegression``,
    ``PoissonRegression``) are supported.

    Parameters
    ----------
    model : LinearRegression, LogisticRegression or PoissonRegression
        A fitted GLM (fitted on the dask arrays or in memory), at the optimum of this data.
    X : dask.array.Array of shape (n, d)
        The training features, chunked by rows only (float64, float32 or scipy.sparse chunks).
    y : dask.array.Array of shape (n,)
        The training targets, with X's row chunks.
    sample_weight : dask.array.Array of shape (n,), optional
        The training weights, with X's row chunks (default: all 1).
    solver : {"auto", "direct", "cg"}, default "auto"
        How H is solved, as above.
    damping : float, optional
        Solve (H + damping I) v = g instead of H v = g (default 0).
    rtol : float, default 1e-10
        Conjugate gradients' relative tolerance (``solver="cg"``).
    atol : float, default 0.0
        Conjugate gradients' absolute tolerance.
    max_iter : int, default 1000
        Conjugate gradients' most iterations (each one pass over the chunks).
    on_unconverged : {"raise", "warn"}, default "raise"
        When a CG solve misses its tolerance: a :class:`~upweight.ConvergenceError`, or a
        :class:`~upweight.ConvergenceWarning` (also a ``RuntimeWarning``) and the approximate answer.
    client : distributed.Client, optional
        The Dask client to run on; default the current ``distributed`` client, else Dask's
        default scheduler.
    **unsupported
        Other keywords of :class:`upweight.Influence`: ``copy``, ``progress`` and
        ``precondition`` (always Jacobi here) are accepted and ignored, as is any keyword set to
        None; any other raises InputError naming it.

    Attributes
    ----------
    model : Model
        The model explained.
    X, y, sample_weight : dask.array.Array
        The training set, as given.
    solver : str
        ``"direct"`` or ``"cg"``, what ``"auto"`` resolved to.
    l2 : float
        The model's penalty.
    damping : float
        The damping added to H.
    objective : float
        The objective L_w(theta*) on this data.
    solve_info : SolveInfo or None
        What the last solve did (None before the first).

    Raises
    ------
    InputError
        If the data are not chunked by whole rows or do not match the model, the weights sum to
        zero, the model is a network or not an upweight GLM, or an argument is bad or not
        supported on Dask (the message names the argument).
    InputTypeError
        If X, y or sample_weight is not a dask array, or X is not real numeric.

    Warns
    -----
    NotAtOptimumWarning
        If the model's parameters do not minimise the objective on this data.

    See Also
    --------
    upweight.Influence : The same queries in memory (and what dispatches here for dask inputs).
    fit : Fits a model on dask arrays.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
    >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
    ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
    ...     inf = uw.Influence(model, Xd, yd)
    ...     S = inf.on_loss(X[:2], y[:2]).compute()
    >>> type(inf).__name__, inf.n_samples, inf.n_params, inf.solver
    ('DaskInfluence', 569, 31, 'direct')
    >>> S.shape
    (2, 569)
    >>> local = uw.Influence(model, X, y)  # the same data in memory
    >>> bool(np.allclose(S, local.on_loss(X[:2], y[:2])))
    True
    """

    def __init__(self, model, X, y, sample_weight=None, *, solver: str = "auto", damping: float | None = None, rtol: float = 1e-10,
                 atol: float = 0.0, max_iter: int = 1000, on_unconverged: str = "raise", client=None, **unsupported):
        extra = sorted(k for k, v in unsupported.items() if v is not None and k not in ("copy", "progress", "precondition"))
        if extra:
            raise InputError(f"{extra[0]}: not supported on Dask")
        if solver not in ("auto", "direct", "cg"):
            raise InputError(f"solver: expected 'auto', 'direct' or 'cg', got {solver!r}")
        self.model = model
        self._spec = _spec(model)
        self._theta = model.get_theta()
        p = self._theta.size
        # "direct" (H summed from the chunks, factored on the client) or "cg" (Hessian-vector
        # products over the chunks, one pass per CG iteration); "auto": direct up to DIRECT_MAX_P
        # (documented in the class docstring's Attributes)
        self.solver = "direct" if solver == "direct" or (solver == "auto" and p <= DIRECT_MAX_P) else "cg"
        self.l2 = float(model.l2)
        self.damping = as_nonneg_float(0.0 if damping is None else damping, "damping")
        self._cg_args = (as_nonneg_float(rtol, "rtol"), as_nonneg_float(atol, "atol"), as_positive_int(max_iter, "max_iter"))
        self.on_unconverged = check_on_unconverged(on_unconverged)
        self.solve_info: SolveInfo | None = None
        self._data = _training_chunks(X, y, sample_weight, model.n_features_in_)
        self.X, self.y, self.sample_weight = X, y, sample_weight
        self._runner = _Runner(self._data, self._spec, client)
        core = _core_model(self._spec)
        direct = self.solver == "direct"
        weight, loss, grad, hess = self._runner.sums(self._theta, direct)
        if not weight > 0:
            raise InputError("sample_weight: the weights sum to zero (no training point counts)")
        self._total_weight = float(weight)
        self.objective, self._grad, hess = _core.finish_sums(core, self._theta, self.l2, weight, loss, grad, hess)
        # 2 l2 coef*_masked: the penalty's gradient alone (no data: weight 1, sums 0)
        renormalized = bool(getattr(model, "penalty_renormalized", True))
        self._penalty = (_core.finish_sums(core, self._theta, self.l2, 1.0, 0.0, np.zeros(p))[1] if renormalized else np.zeros(p))
        null = _core.null_space(core, self.l2)
        self._factor = _core.Factor(hess, self.damping, null) if hess is not None else None
        self._operator = None if direct else _Operator(self._runner, self._theta, self.l2, self._total_weight, self.damping, null)
        self._shared_factor = None
        if not self._at_optimum():
            warnings.warn(f"the model's parameters do not minimise the objective on this data (max |gradient| = {self.grad_norm:.3g}): "
                          "influence is exact only at the optimum. Pass the same X, y, sample_weight and l2 the model was fitted with.",
                          NotAtOptimumWarning, stacklevel=3)

    def _solve(self, B: np.ndarray) -> np.ndarray:
        """(H + damping I)^{-1} B (p x r); ``solve_info`` reports it."""
        r = B.shape[1]
        if self._factor is not None:
            self.solve_info = SolveInfo("direct", np.zeros(r, np.intp), np.zeros(r), np.ones(r, bool))
            return self._factor.solve(np.ascontiguousarray(B))
        assert self._operator is not None
        x, iterations, residuals, converged = self._operator.solve(B, *self._cg_args)
        self.solve_info = SolveInfo("cg", iterations, residuals, converged, preconditioned=True)  # always Jacobi here
        if not converged.all():
            bad = int(np.argmin(converged))
            msg = (f"conjugate gradients did not converge for {int((~converged).sum())} of {r} right-hand sides (first: #{bad}, "
                   f"relative residual {residuals[bad]:.2e} after {iterations[bad]} iterations); raise max_iter or add damping")
            if self.on_unconverged == "raise":
                raise ConvergenceError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return x

    def _direct_only(self, what: str):
        if self._factor is None:
            raise InputError(f"solver: {what} needs one solve per training point, which on Dask is done with the factor of H: "
                             f"use solver='direct' (p = {self.n_params}: H is p x p on the client and on each worker)")
        return self._factor

    # -- facts --------------------------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        """The number of training points n (rows of X).

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> with dask.config.set(scheduler="synchronous"):
        ...     inf = uw.Influence(model, da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200))
        >>> inf.n_samples
        569
        """
        return self._data.n

    @property
    def n_params(self) -> int:
        """The number of parameters p: d + 1, or k (d + 1) for multinomial.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> with dask.config.set(scheduler="synchronous"):
        ...     inf = uw.Influence(model, da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200))
        >>> inf.n_params  # 30 coefficients and the intercept
        31
        """
        return self._theta.size

    @property
    def total_weight(self) -> float:
        """W, the sum of the training weights.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> with dask.config.set(scheduler="synchronous"):
        ...     inf = uw.Influence(model, da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200))
        >>> inf.total_weight  # unit weights: n
        569.0
        """
        return self._total_weight

    @property
    def grad_norm(self) -> float:
        """``max |grad L_w(theta)|`` on the training data: ~0 at the optimum.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> with dask.config.set(scheduler="synchronous"):
        ...     inf = uw.Influence(model, da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200))
        >>> inf.grad_norm < 1e-8
        True
        """
        return float(np.max(np.abs(self._grad)))

    def _at_optimum(self) -> bool:
        if self.grad_norm <= OPTIMUM_TOL:
            return True
        try:
            decrement = float(self._grad @ self._solve(self._grad[:, None])[:, 0])
        except (SingularHessianError, ConvergenceError):
            return False
        return decrement <= OPTIMUM_DECREMENT_RTOL * (1.0 + abs(self.objective))

    def __repr__(self) -> str:
        return f"DaskInfluence({type(self.model).__name__}, n={self.n_samples}, p={self.n_params}, chunks={len(self._data.x)})"

    # -- solving queries ------------------------------------------------------------------------
    def inverse_hvp(self, g) -> np.ndarray:
        """(H + damping I)^{-1} g for a vector (p,) or the columns of a matrix (p, r).

        Solved on the client (the factor of H, or CG with one pass over the chunks per
        iteration); ``solve_info`` reports it.

        Parameters
        ----------
        g : array_like of shape (p,) or (p, r)
            Right-hand side(s), finite.

        Returns
        -------
        numpy.ndarray of shape (p,) or (p, r)
            The solution(s), shaped like ``g``.

        Raises
        ------
        InputError
            If ``g`` does not have p rows or is not finite.
        ConvergenceError
            If CG misses its tolerance and ``on_unconverged="raise"``.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        >>> v = inf.inverse_hvp(np.ones(inf.n_params))
        >>> v.shape
        (31,)
        >>> local = uw.Influence(model, X, y)  # the same data in memory
        >>> bool(np.allclose(v, local.inverse_hvp(np.ones(31))))
        True
        """
        single = np.ndim(g) == 1
        G = as_matrix(np.asarray(g)[:, None] if single else g, "g")
        if G.shape[0] != self.n_params:
            raise InputError(f"g: has {G.shape[0]} rows, expected p = {self.n_params} (one per parameter)")
        check_finite(G, "g")
        out = self._solve(G)
        return out[:, 0] if single else out

    def _solved(self, grad_f, name: str = "grad_f") -> np.ndarray:
        """[V; c] ((p + 1) x r) for query gradients (r x p)."""
        G = as_matrix(np.atleast_2d(grad_f), name)
        if G.shape[1] != self.n_params:
            raise InputError(f"{name}: has {G.shape[1]} entries per row, expected p = {self.n_params}")
        check_finite(G, name)
        V = self._solve(np.ascontiguousarray(G.T))
        return np.vstack([V, (self._penalty @ V)[None, :]])

    def loss_grads(self, X_test, y_test) -> np.ndarray:
        """Gradients of the loss at test points.

        grad l(z_t; theta*) of test points (in memory): (q, p).

        Computed on the client: the test points are not on Dask.

        Parameters
        ----------
        X_test : array_like of shape (q, d)
            Test features (dense or scipy.sparse).
        y_test : array_like of shape (q,)
            Test targets.

        Returns
        -------
        numpy.ndarray of shape (q, p)
            One gradient per test point.

        Raises
        ------
        InputError
            If the test points do not match the model (the message names ``X_test`` or
            ``y_test``).

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        >>> inf.loss_grads(X[:3], y[:3]).shape
        (3, 31)
        """
        Xt = as_matrix(X_test, "X_test", self.model.n_features_in_)
        yt = self.model.check_targets(y_test, Xt.shape[0], name="y_test")
        return _core_model(self._spec).per_example_grads(self._theta, Xt, yt, names=("X_test", "y_test"))

    def _gather(self, idx):
        """The training rows ``idx`` (x, y) brought to the client, in float64 (scored as
        ``Influence`` scores gathered rows)."""
        rows = as_indices(idx, self.n_samples)
        order = np.argsort(rows, kind="stable")
        X, y = self.X[rows[order]], self.y[rows[order]]
        x, yv = self._runner.compute(X, y)
        if is_sparse(x):
            x = x.toarray()
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        return np.ascontiguousarray(np.asarray(x, np.float64)[inv]), np.ascontiguousarray(np.asarray(yv, np.float64)[inv])

    # -- answers ------------------------------------------------------------------------------------
    def on(self, grad_f, idx=None):
        """Influence of every training point on functions f, given their gradients at theta*.

        Influence of every training point (or the rows ``idx``) on f given grad f(theta*):
        (r, n) lazy dask array (NumPy (r, len(idx)) with ``idx``); (p,) gives (n,).

        S[j, m] = grad f_j . I(z_m), with the sign of :meth:`upweight.Influence.on`: negative
        means upweighting training point m lowers f_j. The queries are solved once on the client;
        the scores are computed on the workers when the result is computed.

        Parameters
        ----------
        grad_f : array_like of shape (r, p) or (p,)
            Gradients of r functions f at theta*.
        idx : array_like of int, optional
            Training rows to score (gathered to the client); default all n, lazily.

        Returns
        -------
        dask.array.Array or numpy.ndarray
            A lazy (r, n) dask array chunked like X's rows; with ``idx``, NumPy (r, len(idx)). A
            1-d ``grad_f`` drops the first axis.

        Raises
        ------
        InputError
            If ``grad_f`` does not have p entries per row or is not finite, or an index is out of
            range.
        ConvergenceError
            If CG misses its tolerance and ``on_unconverged="raise"``.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        ...     s = inf.on(np.ones(inf.n_params)).compute()
        >>> s.shape
        (569,)
        >>> local = uw.Influence(model, X, y)  # the same data in memory
        >>> bool(np.allclose(s, local.on(np.ones(31))))
        True
        """
        single = np.ndim(grad_f) == 1
        out = self._scores(self._solved(grad_f), idx)
        return out[0] if single else out

    def on_loss(self, X_test, y_test, idx=None):
        """Influence of every training point on the loss at each test point.

        S (q, n): S[t, m] = grad l(z_t) . I(z_m), a lazy dask array chunked like X's rows
        (float32 for float32 X); with ``idx``, NumPy (q, len(idx)).

        S[t, m] < 0: upweighting training point m lowers the loss at test point t (m helps t).
        Write the full matrix with ``to_zarr`` or :func:`save_npy_stack` rather than computing
        it whole on the client.

        Parameters
        ----------
        X_test : array_like of shape (q, d)
            Test features (in memory).
        y_test : array_like of shape (q,)
            Test targets.
        idx : array_like of int, optional
            Training rows to score (gathered to the client); default all n, lazily.

        Returns
        -------
        dask.array.Array or numpy.ndarray
            A lazy (q, n) dask array chunked like X's rows; with ``idx``, NumPy (q, len(idx)).

        Raises
        ------
        InputError
            If the test points do not match the model, or an index is out of range.
        ConvergenceError
            If CG misses its tolerance and ``on_unconverged="raise"``.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        ...     S = inf.on_loss(X[:2], y[:2])  # lazy
        ...     first = S[:, :5].compute()
        ...     gathered = inf.on_loss(X[:2], y[:2], idx=[0, 1, 2])  # NumPy
        >>> S.shape, S.chunks[1]
        ((2, 569), (200, 200, 169))
        >>> gathered.shape
        (2, 3)
        >>> local = uw.Influence(model, X, y)  # the same data in memory
        >>> bool(np.allclose(first, local.on_loss(X[:2], y[:2], idx=range(5))))
        True
        """
        return self._scores(self._solved(self.loss_grads(X_test, y_test), "X_test"), idx)

    def on_prediction(self, X_test, kind: str = "mean", idx=None):
        """Influence on the predictions at ``X_test`` (single-output GLMs; multinomial: (q, k, n)).

        S[t, m] = grad f_t . I(z_m) for f_t the prediction at test point t, as
        :meth:`upweight.Influence.on_prediction`.

        Parameters
        ----------
        X_test : array_like of shape (q, d)
            Test features (in memory).
        kind : {"mean", "linear"}, default "mean"
            The mean response (value, probability, rate) or the linear predictor.
        idx : array_like of int, optional
            Training rows to score (gathered to the client); default all n, lazily.

        Returns
        -------
        dask.array.Array or numpy.ndarray
            A lazy (q, n) dask array ((q, k, n) for a multinomial model); with ``idx``, NumPy
            (q, len(idx)) or (q, k, len(idx)).

        Raises
        ------
        InputError
            If ``kind`` is not "mean" or "linear", ``X_test`` does not match the model, or an
            index is out of range.
        ConvergenceError
            If CG misses its tolerance and ``on_unconverged="raise"``.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        ...     P = inf.on_prediction(X[:2]).compute()
        >>> P.shape
        (2, 569)
        >>> local = uw.Influence(model, X, y)  # the same data in memory
        >>> bool(np.allclose(P, local.on_prediction(X[:2])))
        True
        """
        if kind not in ("mean", "linear"):
            raise InputError(f"kind: expected 'mean' or 'linear', got {kind!r}")
        Xt = as_matrix(X_test, "X_test", self.model.n_features_in_)
        G = _core_model(self._spec).prediction_grads(self._theta, Xt, kind, names=("X_test", "y_test"))
        S = self._scores(self._solved(G, "X_test"), idx)
        k = self._spec[1]
        return S if k == 1 else S.reshape(Xt.shape[0], k, S.shape[1])

    def _scores(self, vc: np.ndarray, idx):
        core = _core_model(self._spec)
        if idx is not None:
            x, y = self._gather(idx)
            return _core.score_block(core, self._theta, x, y, vc, self._total_weight)
        dask, da = _dask()
        vc_d = dask.delayed(vc, pure=True, traverse=False)
        parts = self._runner.map(_scores_chunk, self._theta, vc_d, self._total_weight)
        dtype = self._data.dtype
        q = vc.shape[1]
        blocks = [da.from_delayed(p, shape=(q, int(c)), dtype=dtype) for p, c in zip(parts, self.X.chunks[0], strict=True)]
        return da.concatenate(blocks, axis=1)

    def top_k(self, X_test, y_test, k: int = 10) -> TopK:
        """The k most helpful and most harmful training points for each test point.

        For each test point the ``k`` most helpful and most harmful training points: per-chunk
        lists merged by a fixed tree (equal to one pass over the whole set).

        Helpful: the most negative scores S[t, m] (upweighting m lowers t's loss); harmful: the
        most positive. Only the k-lists travel to the client, never the score matrix.

        Parameters
        ----------
        X_test : array_like of shape (q, d)
            Test features (in memory).
        y_test : array_like of shape (q,)
            Test targets.
        k : int, default 10
            How many points per end.

        Returns
        -------
        TopK
            ``helpful_idx`` / ``helpful`` and ``harmful_idx`` / ``harmful``, each (q, k).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer or the test points do not match the model.
        ConvergenceError
            If CG misses its tolerance and ``on_unconverged="raise"``.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        ...     top = inf.top_k(X[:2], y[:2], k=3)
        >>> top.helpful_idx.shape
        (2, 3)
        >>> local = uw.Influence(model, X, y)  # the same data in memory
        >>> bool(np.array_equal(top.helpful_idx, local.top_k(X[:2], y[:2], k=3).helpful_idx))
        True
        """
        return self.top_k_on(self.loss_grads(X_test, y_test), k)

    def top_k_on(self, grad_f, k: int = 10) -> TopK:
        """Top-k for functions f given their gradients (r, p) at theta*.

        As :meth:`top_k`, for any functions f (a prediction, a sum of losses...) instead of the
        test losses.

        Parameters
        ----------
        grad_f : array_like of shape (r, p)
            Gradients of r functions f at theta* (a (p,) vector is one function).
        k : int, default 10
            How many points per end.

        Returns
        -------
        TopK
            ``helpful_idx`` / ``helpful`` and ``harmful_idx`` / ``harmful``, each (r, k).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer, or ``grad_f`` does not have p entries per row or
            is not finite.
        ConvergenceError
            If CG misses its tolerance and ``on_unconverged="raise"``.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        ...     top = inf.top_k_on(inf.loss_grads(X[:2], y[:2]).sum(0), k=4)  # the sum of 2 losses
        >>> top.harmful_idx.shape
        (1, 4)
        """
        k = as_positive_int(k, "k")
        dask, _ = _dask()
        vc = self._solved(grad_f)
        vc_d = dask.delayed(vc, pure=True, traverse=False)
        parts = self._runner.map(_top_k_chunk, self._theta, vc_d, self._total_weight, k)
        merged = self._runner.compute(_tree(parts, functools.partial(TopK.merge, k=k)))[0]
        return merged

    def _factor_on_workers(self):
        if self._shared_factor is None:
            self._shared_factor = self._runner.share(self._direct_only("self_influence / params() of every point"))
        return self._shared_factor

    def self_influence(self):
        """Self-influence of every training point.

        grad l(z_m) . I(z_m) for every training point: a lazy (n,) dask array chunked like
        X's rows (the factor of H goes to each worker once).

        Needs ``solver="direct"`` (one solve per training point, with the factor of H).

        Returns
        -------
        dask.array.Array of shape (n,)
            Lazy, float64, chunked like X's rows.

        Raises
        ------
        InputError
            If the solver is ``"cg"`` (the message names ``solver``).

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        ...     s = inf.self_influence().compute()
        >>> s.shape
        (569,)
        >>> local = uw.Influence(model, X, y)  # the same data in memory
        >>> bool(np.allclose(s, local.self_influence()))
        True
        """
        _, da = _dask()
        parts = self._runner.map(_self_influence_chunk, self._theta, self._factor_on_workers(), self._penalty, self._total_weight)
        return da.concatenate([da.from_delayed(p, shape=(int(c),), dtype=np.float64) for p, c in zip(parts, self.X.chunks[0],
                                                                                                    strict=True)])

    def params(self, idx=None):
        """Influence of training points on the parameters, I(z_m).

        I(z_m) of the training rows ``idx`` (NumPy (len(idx), p)); without ``idx``, a lazy
        (n, p) dask array.

        I(z_m) = d theta / d w_m, the change of the parameters per unit of weight added to
        training point m (DESIGN.md section 1). Without ``idx`` it needs ``solver="direct"``.

        Parameters
        ----------
        idx : array_like of int, optional
            Training rows (gathered to the client); default all n, lazily.

        Returns
        -------
        numpy.ndarray or dask.array.Array
            NumPy (len(idx), p) with ``idx``; else a lazy (n, p) dask array chunked like X's
            rows.

        Raises
        ------
        InputError
            If an index is out of range, or ``idx`` is None and the solver is ``"cg"``.
        ConvergenceError
            If CG misses its tolerance and ``on_unconverged="raise"``.

        Examples
        --------
        >>> import dask
        >>> import dask.array as da
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
        >>> with dask.config.set(scheduler="synchronous"):  # no cluster needed
        ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
        ...     inf = uw.Influence(model, Xd, yd)
        ...     I = inf.params([0, 5])  # gathered: NumPy
        >>> I.shape
        (2, 31)
        >>> local = uw.Influence(model, X, y)  # the same data in memory
        >>> bool(np.allclose(I, local.params([0, 5])))
        True
        """
        if idx is not None:
            x, y = self._gather(idx)
            g = _core_model(self._spec).per_example_grads(self._theta, x, y)
            return -self._solve(np.ascontiguousarray((g + self._penalty).T)).T / self._total_weight
        _, da = _dask()
        parts = self._runner.map(_params_chunk, self._theta, self._factor_on_workers(), self._penalty, self._total_weight)
        return da.concatenate([da.from_delayed(p, shape=(int(c), self.n_params), dtype=np.float64)
                               for p, c in zip(parts, self.X.chunks[0], strict=True)])


# -- opening data without loading it --------------------------------------------------------------

def _npy_paths(source) -> list[str]:
    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        paths = sorted(os.path.join(source, f) for f in os.listdir(source) if f.endswith(".npy"))
        if not paths:
            raise InputError(f"source: no .npy files in the directory {os.fspath(source)!r}")
        return paths
    if isinstance(source, (str, os.PathLike)):
        return [os.fspath(source)]
    return [os.fspath(p) for p in source]


def _npy_shape(path: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the file's header (memory-mapped: no data is read)."""
    try:
        a = np.load(path, mmap_mode="r")
    except ValueError as exc:
        raise InputError(f"source: {path!r} is not a readable .npy array ({exc})") from None
    if a.ndim > 1 and not a.flags.c_contiguous:
        raise InputError(f"source: {path!r} is stored in Fortran order; save it C-ordered (np.ascontiguousarray)")
    return tuple(a.shape), a.dtype


#: from_npy's sources by the name of the dask array made of them: upweight's own passes over such an
#: array (the same name: no operation applied since) read each chunk inside the task that uses it.
#: Weak: an entry lives as long as a dask graph holds its source, so a long session does not grow.
_NPY_SOURCES: weakref.WeakValueDictionary[str, _NpyRows] = weakref.WeakValueDictionary()


class _NpyRows:
    """The rows of ``.npy`` shards, concatenated, as an array-like for ``dask.array.from_array``:
    one task per chunk (no per-chunk alias tasks), pickled as its paths (each worker maps the files
    itself, once per process), and a chunk (rows within one shard) is a memory-mapped view, not a
    copy: the kernel that consumes it reads the pages in parallel as it goes. A shard rewritten
    after ``from_npy`` opened it is refused (its answers would mix old and new data)."""

    def __init__(self, paths: list[str], rows: list[int], trailing: tuple[int, ...], dtype: np.dtype):
        self.paths, self.rows, self.trailing, self.dtype = paths, rows, trailing, np.dtype(dtype)
        self.stamps = [file_stamp(p) for p in paths]
        self.starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        self.shape = (int(self.starts[-1]), *trailing)
        self.ndim = len(self.shape)
        self._maps: dict[int, np.ndarray] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_maps"}

    def __setstate__(self, state):
        self.__dict__.update(state, _maps={})

    def __dask_tokenize__(self):
        return ("upweight-npy-rows", tuple(self.paths), tuple(self.rows), tuple(self.stamps))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        rows, rest = key[0], key[1:]
        a, b, _ = rows.indices(self.shape[0])
        j = min(int(np.searchsorted(self.starts, a, side="right") - 1), len(self.paths) - 1)
        s = int(self.starts[j])
        if b > self.starts[j + 1]:
            raise IndexError(f"rows {a}..{b} span two shards")  # (from_npy cuts chunks at shard boundaries)
        if file_stamp(self.paths[j]) != self.stamps[j]:
            raise InputError(f"source: the file {self.paths[j]!r} changed after from_npy opened it; its answers would mix old "
                             "and new data: open it again")
        if j not in self._maps:
            self._maps[j] = np.load(self.paths[j], mmap_mode="r")
        out = self._maps[j][a - s:b - s]
        return out[(slice(None),) + tuple(rest)] if rest else out


def from_npy(source, chunk_rows: int | None = None):
    """Open ``.npy`` shards as one dask array, without loading them.

    A dask array over ``.npy`` shards (a directory of them in name order, a path, or a list
    of paths), concatenated by rows, read lazily on the workers (memory-mapped): nothing is
    loaded on the client. Each shard is one chunk, or chunks of ``chunk_rows`` rows. Shards
    must agree on dtype and (for 2-d) columns; 1-d shards (targets, weights) give a 1-d array.

    Only the files' headers are read here. Passes of :func:`fit` and :class:`DaskInfluence` over
    the untransformed array read each chunk inside the task that uses it; a shard rewritten after
    it was opened is refused (InputError naming ``source``) rather than mixed in. The paths are
    made absolute: they must be readable by the workers.

    Parameters
    ----------
    source : str, os.PathLike or sequence of them
        A directory (its ``.npy`` files, in name order), one ``.npy`` file, or a list of them,
        each C-ordered.
    chunk_rows : int, optional
        Rows per chunk (a shard's last chunk may be shorter; chunks never span shards); default
        one chunk per shard.

    Returns
    -------
    dask.array.Array
        The shards' rows, concatenated: (total rows,) or (total rows, columns), of the shards'
        dtype, chunked by rows.

    Raises
    ------
    InputError
        Naming ``source``: a file that does not exist or is not a readable ``.npy`` array, a
        directory without ``.npy`` files, a Fortran-ordered array, shards that disagree on dtype
        or trailing shape, or no rows at all; naming ``chunk_rows`` if it is not a positive
        integer.

    See Also
    --------
    from_parquet : The same for Parquet files.
    save_npy_stack : Writes a result as ``.npy`` files.

    Examples
    --------
    Two shards of features and one file of targets, chunked alike:

    >>> import os
    >>> import dask
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> os.mkdir("shards")
    >>> np.save("shards/X-0.npy", X[:300])
    >>> np.save("shards/X-1.npy", X[300:])
    >>> np.save("y.npy", y)
    >>> Xd = uw.dask.from_npy("shards")
    >>> yd = uw.dask.from_npy("y.npy", chunk_rows=300)
    >>> Xd.shape, Xd.chunks[0], yd.chunks[0]
    ((569, 30), (300, 269), (300, 269))
    >>> with dask.config.set(scheduler="synchronous"):
    ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
    >>> bool(np.allclose(model.get_theta(), uw.LogisticRegression(l2=1e-2).fit(X, y).get_theta()))
    True
    """
    _, da = _dask()
    paths = [os.path.abspath(p) for p in _npy_paths(source)]
    if chunk_rows is not None:
        chunk_rows = as_positive_int(chunk_rows, "chunk_rows")
    rows: list[int] = []
    chunks: list[int] = []
    first = None
    for path in paths:
        if not os.path.isfile(path):
            raise MissingFileError(f"source: {path!r} does not exist")
        shape, dtype = _npy_shape(path)
        if first is None:
            first = (shape[1:], dtype)
        elif (shape[1:], dtype) != first:
            raise InputError(f"source: {path!r} has trailing shape {shape[1:]} and dtype {dtype}, but the first shard "
                             f"{paths[0]!r} has {first[0]} and {first[1]}")
        n = shape[0]
        rows.append(n)
        step = chunk_rows or max(n, 1)
        chunks.extend(min(step, n - a) for a in range(0, n, step))
    assert first is not None
    if not chunks:
        raise InputError(f"source: the shards have no rows ({paths[0]!r}, ...)")
    from dask.base import tokenize

    source_rows = _NpyRows(paths, rows, first[0], first[1])
    name = f"upweight-npy-{tokenize(source_rows)}"
    _NPY_SOURCES[name] = source_rows
    return da.from_array(source_rows, chunks=(tuple(chunks), *((t,) for t in first[0])), name=name,
                         asarray=True, fancy=False, meta=np.empty((0,) * source_rows.ndim, dtype=first[1]))


def _parquet_part(path: str, group: int, columns: Sequence[str]) -> np.ndarray:
    import pyarrow.parquet as pq

    table = pq.ParquetFile(path).read_row_group(group, columns=list(columns))
    cols = [np.asarray(table.column(c).to_numpy(zero_copy_only=False), dtype=np.float64) for c in columns]
    return np.column_stack(cols) if cols else np.zeros((table.num_rows, 0))


def from_parquet(source, features: Sequence[str], target: str | None = None, weight: str | None = None):
    """Open a Parquet dataset as (X, y, sample_weight) dask arrays, without loading it.

    (X, y, sample_weight) dask arrays over a Parquet dataset (a file, a directory of
    ``.parquet`` files in name order, or a list of paths): one chunk per row group, row counts
    read from the files' metadata, columns read on the workers (float64). ``target`` and
    ``weight`` (column names) give y and sample_weight, else None.

    Only the files' metadata are read here. Needs ``pyarrow``. The paths are made absolute:
    they must be readable by the workers.

    Parameters
    ----------
    source : str, os.PathLike or sequence of them
        A Parquet file, a directory (its ``.parquet`` files, in name order), or a list of files.
    features : sequence of str
        The columns of X, in order (numeric; read as float64).
    target : str, optional
        The column of y.
    weight : str, optional
        The column of sample_weight.

    Returns
    -------
    X : dask.array.Array of shape (n, len(features))
        The features, float64, one chunk per row group.
    y : dask.array.Array of shape (n,) or None
        The target column, with X's chunks (None without ``target``).
    sample_weight : dask.array.Array of shape (n,) or None
        The weight column, with X's chunks (None without ``weight``).

    Raises
    ------
    InputError
        If there are no ``.parquet`` files (naming ``source``), ``features`` is empty, or a
        column is not in a file (naming ``features``, ``target`` or ``weight``).
    MissingFileError
        If a file does not exist (naming ``source``).
    ImportError
        If pyarrow is not installed.

    See Also
    --------
    from_npy : The same for ``.npy`` shards.

    Examples
    --------
    >>> import dask
    >>> import pyarrow as pa
    >>> import pyarrow.parquet as pq
    >>> X, y, names = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> table = pa.table({**{f"x{j}": X[:, j] for j in range(30)}, "label": y})
    >>> pq.write_table(table, "cancer.parquet", row_group_size=200)
    >>> Xd, yd, wd = uw.dask.from_parquet("cancer.parquet", [f"x{j}" for j in range(30)], target="label")
    >>> Xd.shape, Xd.chunks[0], wd is None
    ((569, 30), (200, 200, 169), True)
    >>> with dask.config.set(scheduler="synchronous"):
    ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
    >>> bool(np.allclose(model.get_theta(), uw.LogisticRegression(l2=1e-2).fit(X, y).get_theta()))
    True
    """
    dask, da = _dask()
    import pyarrow.parquet as pq

    if isinstance(source, (str, os.PathLike)) and os.path.isdir(source):
        paths = sorted(os.path.join(source, f) for f in os.listdir(source) if f.endswith(".parquet"))
    elif isinstance(source, (str, os.PathLike)):
        paths = [os.fspath(source)]
    else:
        paths = [os.fspath(p) for p in source]
    if not paths:
        raise InputError(f"source: no .parquet files in {os.fspath(source)!r}")
    features = list(features)
    if not features:
        raise InputError("features: name at least one column")
    out: dict[str, list] = {"X": [], "y": [], "w": []}
    for path in paths:
        if not os.path.isfile(path):
            raise MissingFileError(f"source: {path!r} does not exist")
        meta = pq.ParquetFile(path)
        names = set(meta.schema_arrow.names)
        columns = [("features", c) for c in features] + [(arg, c) for arg, c in (("target", target), ("weight", weight)) if c is not None]
        for arg, col in columns:
            if col not in names:
                raise InputError(f"{arg}: column {col!r} is not in {path!r} (columns: {sorted(names)})")
        for g in range(meta.num_row_groups):
            n = meta.metadata.row_group(g).num_rows
            apath = os.path.abspath(path)
            out["X"].append(da.from_delayed(dask.delayed(_parquet_part, pure=True)(apath, g, features), (n, len(features)), np.float64))
            for key, name in (("y", target), ("w", weight)):
                if name is not None:
                    part = dask.delayed(_parquet_part, pure=True)(apath, g, [name])
                    out[key].append(da.from_delayed(part, (n, 1), np.float64)[:, 0])
    X = da.concatenate(out["X"], axis=0)
    y = da.concatenate(out["y"]) if target is not None else None
    w = da.concatenate(out["w"]) if weight is not None else None
    return X, y, w


# -- writing results ------------------------------------------------------------------------------

def _save_block(path: str, block) -> str:
    np.save(path, np.asarray(block))
    return path


def save_npy_stack(array, path, axis: int | None = None, *, client=None) -> None:
    """Write a lazy result as a directory of ``.npy`` files, all or nothing.

    Write a lazy result (a score matrix (q, n) or a vector (n,)) as ``dask.array.to_npy_stack``
    does (a directory of one ``.npy`` file per chunk along ``axis`` (default: the last) and an
    ``info`` file; read back with ``dask.array.from_npy_stack(path)``), all or nothing: the
    workers write into a temporary sibling directory, renamed to ``path`` once every chunk is
    written; if a chunk fails or the client is interrupted (Ctrl-C), the outstanding tasks are
    cancelled and the temporary directory removed, so ``path`` either holds the whole result or
    does not exist. ``path`` must be on storage the workers write to, and must not exist yet.

    Parameters
    ----------
    array : dask.array.Array
        The lazy result, e.g. ``inf.on_loss(X_test, y_test)`` (q, n) or ``inf.self_influence()``
        (n,).
    path : str or os.PathLike
        The directory to create.
    axis : int, optional
        The axis whose chunks become files (the array is rechunked to whole extents along the
        others); default the last, the training points.
    client : distributed.Client, optional
        The Dask client to run on; default the current ``distributed`` client, else Dask's
        default scheduler.

    Raises
    ------
    InputError
        If ``path`` already exists.

    See Also
    --------
    DaskInfluence.on_loss : A lazy score matrix to write.

    Examples
    --------
    >>> import os
    >>> import dask
    >>> import dask.array as da
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> Xd, yd = da.from_array(X, chunks=(200, 30)), da.from_array(y, chunks=200)
    >>> with dask.config.set(scheduler="synchronous"):
    ...     model = uw.LogisticRegression(l2=1e-2).fit(Xd, yd)
    ...     S = uw.Influence(model, Xd, yd).on_loss(X[:2], y[:2])
    ...     uw.dask.save_npy_stack(S, "scores")
    >>> sorted(os.listdir("scores"))
    ['0.npy', '1.npy', '2.npy', 'info']
    >>> back = da.from_npy_stack("scores").compute()
    >>> back.shape, bool(np.allclose(back, uw.Influence(model, X, y).on_loss(X[:2], y[:2])))
    ((2, 569), True)
    """
    import pickle

    dask, _ = _dask()
    path = os.fspath(path)
    if os.path.exists(path):
        raise InputError(f"path: {path!r} already exists; choose a new directory (results are never written over)")
    axis = array.ndim - 1 if axis is None else int(axis)
    chunks = tuple(c if i == axis else (sum(c),) for i, c in enumerate(array.chunks))
    blocks = list(array.rechunk(chunks).to_delayed().ravel())
    tmp = f"{path}.partial-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)
    client = client if client is not None else _current_client()
    futures = None
    try:
        with open(os.path.join(tmp, "info"), "wb") as f:
            pickle.dump({"chunks": chunks, "dtype": array.dtype, "axis": axis}, f)
        writes = [dask.delayed(_save_block, pure=False)(os.path.join(tmp, f"{i}.npy"), b) for i, b in enumerate(blocks)]
        if client is not None:
            futures = client.compute(writes)
            client.gather(futures)
        else:
            dask.compute(*writes)
        os.replace(tmp, path)
    except BaseException:
        if futures is not None:  # stop the writes still running before removing what they wrote
            client.cancel(futures)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(f.status == "pending" for f in futures):
                time.sleep(0.05)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
