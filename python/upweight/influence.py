"""Exact influence of training points (DESIGN.md sections 1, 3 and 4).

For a model fitted on a weighted training set, the influence of point z_m is the derivative of
the fitted parameters with respect to its weight,

    I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W,

and the influence on any differentiable f of theta is grad f(theta*) . I(z_m). Signs: a negative
score on a test loss means upweighting the training point lowers that loss (it *helps*);
removing a point changes theta by about -I(z_m). Koh & Liang's I_up equals W * I when l2 = 0.

:class:`Influence` takes a fitted model (anything implementing :class:`upweight.models.Model`) and
its training set; :class:`GradientInfluence` takes per-example gradients of any model (deep
models: PyTorch, JAX) instead. Both answer the same queries (:class:`_Queries`).
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from . import _core
from ._backends import backend_for
from ._core import Influence as InfluenceCore
from ._validation import (
    as_indices,
    as_matrix,
    as_nonneg_float,
    as_points,
    as_positive_int,
    as_weights,
    check_finite,
    check_output_fits,
    file_stamp,
    kept,
    kept_features,
    n_rows,
    score_itemsize,
    solver_args,
    training_features,
)
from .errors import ConvergenceError, ConvergenceWarning, InputError, NotAtOptimumWarning, SingularHessianError
from .interop import from_sklearn, from_statsmodels
from .io.persist import load_curvature, save_curvature
from .models import Model, check_model
from .networks import LastLayer
from .prefilter import FIRST_MULTIPLE, best_among, candidate_counts, check_prefilter, recall_at, sampled_queries
from .solver import QueryPolicy, Work, approximation_args, check_influence_solver, check_on_unconverged, work

__all__ = ["GradientInfluence", "Influence", "LooTopK", "SolvedQueries", "SolveInfo", "TopK"]

#: Gradient norm (max abs entry of grad L_w) above which ``Influence`` warns that theta is not
#: an optimum of the objective on the data it was given.
OPTIMUM_TOL = 1e-6
# ... or the Newton decrement relative to the objective (scale-invariant; see Influence._at_optimum)
OPTIMUM_DECREMENT_RTOL = 1e-12
#: Queries whose candidates a prefilter rescores together: every candidate row of the group is
#: scored against all of its queries, so a group of g costs about 2 c k (g + 3) row evaluations
#: per query (3: the row's own forward and backward passes, shared by the group's queries).
RESCORE_GROUP = 4
#: damping="auto" is this times the mean of the curvature's diagonal, tr(G) / p (Grosse et al. 2023).
AUTO_DAMPING = 0.1


def check_curvature(curvature: str | None, model) -> str:
    """The curvature influence uses: networks "gauss-newton" (default), "hessian" or the
    approximate "kfac" and "ekfac"; a GLM's Gauss-Newton matrix is its Hessian (canonical links),
    so either exact name gives the Hessian."""
    if curvature is None:
        return getattr(model, "default_curvature", "hessian")
    if curvature in KRONECKER and not hasattr(model, "default_curvature"):
        raise InputError(f"curvature: {curvature!r} factors a network's layers; fit the GLM as a network without hidden layers "
                         "(uw.MLPClassifier(hidden=()) or uw.MLPRegressor(hidden=())) to use it")
    if curvature not in ("gauss-newton", "hessian", *KRONECKER):
        raise InputError(f"curvature: expected 'gauss-newton', 'hessian', 'kfac' or 'ekfac', got {curvature!r}")
    return curvature


#: The approximate, Kronecker-factored curvatures (networks), solved in closed form.
KRONECKER = ("kfac", "ekfac")


@dataclass(frozen=True)
class SolveInfo:
    """What the last solve did, one entry per right-hand side.

    After each query, an influence's ``solve_info`` holds one: the method that answered it and,
    for every right-hand side (a query gradient, or a training point for ``params`` and
    ``self_influence``), the iterations, final relative residual and convergence of its solve.
    It is made by the influence, not by users.

    Parameters
    ----------
    method : str
        The solver that answered: ``"direct"``, ``"cg"``, ``"arnoldi"``, ``"kfac"`` or
        ``"ekfac"``.
    iterations : ndarray of shape (r,)
        Per right-hand side, the CG iterations (0 for direct solves; Lanczos steps for Arnoldi).
    residuals : ndarray of shape (r,)
        Per right-hand side, the final relative residual ||H x - b|| / ||b||.
    converged : ndarray of bool, shape (r,)
        Per right-hand side, whether the solve reached its tolerance.
    preconditioned : bool or None, default None
        Whether CG applied its preconditioner (None for direct solves). With
        ``precondition="auto"`` the first solve measures (on a fixed probe) whether the
        preconditioner or plain CG takes fewer iterations, and the winner is used from then on.
    eigenvalues : ndarray of shape (r,) or None, default None
        ``solver="arnoldi"``: the eigenvalues of the curvature it kept (descending, damping not
        included), r = ``len(eigenvalues)``; None for the exact solvers. ``iterations`` are then
        the Lanczos steps and ``residuals`` the true relative residuals
        ||(H + damping I) x - b|| / ||b|| of its answers: computed for queries (``on_loss``,
        ``on``, ``inverse_hvp``, ...), NaN for the per-training-point solves
        (``self_influence``, ``params``), where each block's would cost a pass over the data.
    eigen_residuals : ndarray of shape (r,) or None, default None
        ``solver="arnoldi"``: ||H u_j - sigma_j u_j|| of each kept eigenpair (Lanczos' own
        error bound); None otherwise.
    query_errors : ndarray of shape (q,) or None, default None
        ``query_rank=r`` (query batching): per query, ||V - V_r||_F / ||V||_F, the relative
        error of its solved gradient V = (H + damping I)^{-1} grad f with every layer block cut
        to rank r; None otherwise.

    See Also
    --------
    Influence : whose queries set ``solve_info``.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> inf = uw.Influence(model, X, y, solver="cg")
    >>> S = inf.on_loss(X[:3], y[:3])
    >>> info = inf.solve_info
    >>> info.method, info.iterations.shape, bool(info.converged.all())
    ('cg', (3,), True)
    >>> bool(info.max_residual < 1e-8), info.rank
    (True, None)
    """

    method: str
    iterations: np.ndarray
    residuals: np.ndarray  # final relative residual ||H x - b|| / ||b||
    converged: np.ndarray
    #: whether CG applied its preconditioner (None for direct solves): with ``precondition="auto"``
    #: the first solve measures (on a fixed probe) whether the preconditioner or plain CG takes
    #: fewer iterations, and the winner is used from then on
    preconditioned: bool | None = None
    #: ``solver="arnoldi"``: the eigenvalues of the curvature it kept (descending, damping not
    #: included), r = ``len(eigenvalues)``; None for the exact solvers. ``iterations`` are then
    #: the Lanczos steps and ``residuals`` the true relative residuals ||(H + damping I) x - b|| / ||b||
    #: of its answers: computed for queries (``on_loss``, ``on``, ``inverse_hvp``, ...), NaN for the
    #: per-training-point solves (``self_influence``, ``params``), where each block's would cost a
    #: pass over the data.
    eigenvalues: np.ndarray | None = None
    #: ``solver="arnoldi"``: ||H u_j - sigma_j u_j|| of each kept eigenpair (Lanczos' own error bound)
    eigen_residuals: np.ndarray | None = None
    #: ``query_rank=r`` (query batching): per query, ||V - V_r||_F / ||V||_F, the relative error of
    #: its solved gradient V = (H + damping I)^{-1} grad f with every layer block cut to rank r
    query_errors: np.ndarray | None = None

    @property
    def rank(self) -> int | None:
        """r, the number of eigenpairs kept by ``solver="arnoldi"`` (int; None for the exact solvers)."""
        return None if self.eigenvalues is None else int(self.eigenvalues.size)

    @property
    def max_residual(self) -> float:
        """The largest of ``residuals`` (float; 0.0 when there were no right-hand sides)."""
        return float(self.residuals.max()) if self.residuals.size else 0.0


@dataclass(frozen=True)
class TopK:
    """Per query, the k most helpful (most negative score) and most harmful (most positive)
    training points.

    The result of :meth:`Influence.top_k`, :meth:`Influence.top_k_on`,
    :meth:`GradientInfluence.top_k` and :meth:`SolvedQueries.top_k`: index arrays and scores,
    each of shape (q, k). Scores follow the library's sign: S[t, m] < 0 means upweighting
    training point m lowers the loss (or f) at query t. A prefiltered top-k
    (``top_k(..., prefilter=)``) also reports the ``recall`` it achieved (estimated on sampled
    queries; None when none were sampled) and the stage-1 ``candidates`` per query and end.

    Parameters
    ----------
    helpful_idx : ndarray of int, shape (q, k)
        Per query, the training indices of the k most negative scores, most negative first.
    helpful : ndarray of shape (q, k)
        Their scores.
    harmful_idx : ndarray of int, shape (q, k)
        Per query, the training indices of the k most positive scores, most positive first.
    harmful : ndarray of shape (q, k)
        Their scores.
    recall : float or None, default None
        A prefiltered top-k's recall@k on its sampled queries (the worse of the two ends); None
        for an exhaustive top-k, or when no queries were sampled.
    candidates : int or None, default None
        A prefiltered top-k's stage-1 candidates per query and end (c k); None otherwise.

    See Also
    --------
    LooTopK : the leave-one-out counterpart, with the opposite sign.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
    >>> top = inf.top_k(X[:2], y[:2], k=3)
    >>> top.helpful_idx.shape, top.harmful.shape
    ((2, 3), (2, 3))
    >>> bool((top.helpful < 0).all() and (top.harmful > 0).all())
    True

    The scores are the entries of the full score matrix:

    >>> S = inf.on_loss(X[:2], y[:2])
    >>> np.allclose(np.take_along_axis(S, top.helpful_idx, axis=1), top.helpful)
    True
    """

    helpful_idx: np.ndarray
    helpful: np.ndarray
    harmful_idx: np.ndarray
    harmful: np.ndarray
    recall: float | None = None
    candidates: int | None = None

    @classmethod
    def _from_core(cls, top) -> TopK:
        hi, h, xi, x = top
        return cls(hi.astype(np.intp), h, xi.astype(np.intp), x)

    def merge(self, other: TopK, k: int) -> TopK:
        """The ``k`` best of this result and ``other``, as one pass over all rows would choose.

        For the same queries, e.g. two segments of the training rows: helpful = smallest
        scores, harmful = largest, ties to the lower index.

        Parameters
        ----------
        other : TopK
            Another top-k for the same queries (same q), e.g. over another segment of the
            training rows (its indices counted from the first training row).
        k : int
            How many points to keep per end.

        Returns
        -------
        TopK
            The merged result, arrays of shape (q, k) (fewer columns if both hold fewer
            points together).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> sq = inf.solve_queries(inf.loss_grads(X[:2], y[:2]))
        >>> first, rest = sq.top_k(3, rows=(0, 512)), sq.top_k(3, rows=(512, 569))
        >>> merged = first.merge(rest, 3)
        >>> one_pass = sq.top_k(3)
        >>> np.array_equal(merged.helpful_idx, one_pass.helpful_idx)
        True
        >>> np.array_equal(merged.harmful, one_pass.harmful)
        True
        """
        return TopK._from_core(_core.merge_top_k(self._to_core(), other._to_core(), _check_k(k)))

    def _to_core(self):
        """As the core takes a top-k result: int64 indices, C-contiguous arrays."""
        hi, h, xi, x = self.as_tuple()
        f64, idx = (lambda a: np.ascontiguousarray(a, dtype=np.float64)), (lambda a: np.ascontiguousarray(a, dtype=np.int64))
        return idx(hi), f64(h), idx(xi), f64(x)

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The four arrays as a tuple, ``(helpful_idx, helpful, harmful_idx, harmful)``.

        Returns
        -------
        tuple of 4 ndarray
            ``helpful_idx``, ``helpful``, ``harmful_idx``, ``harmful``, each of shape (q, k)
            (``recall`` and ``candidates`` are left out).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> helpful_idx, helpful, harmful_idx, harmful = inf.top_k(X[:2], y[:2], k=3).as_tuple()
        >>> helpful_idx.shape, harmful.shape
        ((2, 3), (2, 3))
        """
        return self.helpful_idx, self.helpful, self.harmful_idx, self.harmful


class LooTopK(TopK):
    """:meth:`Influence.loo_top_k`'s result: the training points whose removal most changes each
    test loss.

    Per test point, the ``k`` training points whose removal most raises (``helpful``, largest
    first) and most lowers (``harmful``, most negative first) its loss, with those predicted
    changes, each of shape (q, k). The values are changes on removal, so the sign is the
    opposite of :class:`TopK`'s scores (derivatives in the weight): here helpful values are
    positive.

    Parameters
    ----------
    helpful_idx : ndarray of int, shape (q, k)
        Per test point, the training indices whose removal most raises its loss, largest
        change first.
    helpful : ndarray of shape (q, k)
        Those predicted changes of the test loss, l(z_t; theta_(-m)) - l(z_t; theta*) (positive
        for helpful points).
    harmful_idx : ndarray of int, shape (q, k)
        Per test point, the training indices whose removal most lowers its loss, most negative
        change first.
    harmful : ndarray of shape (q, k)
        Those predicted changes (negative for harmful points).
    recall : float or None, default None
        Always None here (a leave-out top-k is never prefiltered).
    candidates : int or None, default None
        Always None here.

    See Also
    --------
    Influence.loo_top_k : which makes it.
    TopK : the influence (derivative) counterpart.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
    >>> top = inf.loo_top_k(X[:2], y[:2], k=3)
    >>> type(top).__name__, top.helpful.shape
    ('LooTopK', (2, 3))
    >>> bool((top.helpful > 0).all() and (top.harmful < 0).all())
    True
    """

    def merge(self, other: TopK, k: int) -> LooTopK:
        """The ``k`` best of this result and ``other``, as one pass would choose.

        ``other`` is another leave-out top-k for the same test points, e.g. over another
        segment of the training rows: helpful = largest changes, harmful = most negative.

        Parameters
        ----------
        other : LooTopK
            Another leave-out top-k (:meth:`Influence.loo_top_k`) for the same test points.
        k : int
            How many points to keep per end.

        Returns
        -------
        LooTopK
            The merged result, arrays of shape (q, k).

        Raises
        ------
        InputError
            If ``other`` is not a :class:`LooTopK` (a plain :class:`TopK`'s scores have the
            opposite sign), or ``k`` is not a positive integer.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> first = inf.loo_top_k(X[:2], y[:2], k=3, rows=(0, 512))
        >>> rest = inf.loo_top_k(X[:2], y[:2], k=3, rows=(512, 569))
        >>> merged = first.merge(rest, 3)
        >>> one_pass = inf.loo_top_k(X[:2], y[:2], k=3)
        >>> np.array_equal(merged.helpful_idx, one_pass.helpful_idx)
        True
        >>> np.allclose(merged.harmful, one_pass.harmful)
        True
        """
        if not isinstance(other, LooTopK):
            raise InputError("other: is not a leave-out top-k (loo_top_k); its scores have the opposite sign")
        neg = lambda t: TopK(t.helpful_idx, -t.helpful, t.harmful_idx, -t.harmful)  # noqa: E731
        m = TopK.merge(neg(self), neg(other), k)
        return LooTopK(m.helpful_idx, -m.helpful, m.harmful_idx, -m.harmful)


class SolvedQueries:
    """Query gradients solved once, to score the training rows segment by segment without
    solving again.

    :meth:`Influence.solve_queries` (or :meth:`GradientInfluence.solve_queries`) makes it,
    :meth:`top_k` scores a segment and :meth:`scores` gives the score matrix. A long streamed
    run can so be cut into resumable pieces (``upweight score --resume``).

    With ``query_rank=r`` (query batching, networks) each solved query's layer blocks are kept
    as their best rank-r approximations (thin SVD): scoring a row then costs r (out + in + 1)
    per layer and query instead of out (in + 1), and the queries take q r (out + in + 1) numbers
    instead of q p. ``query_errors`` gives each query's relative error ||V - V_r||_F / ||V||_F
    (0 when r >= min(out, in + 1) for every layer: then the scores are the exact ones).

    Parameters
    ----------
    core : upweight._core.Influence
        The influence core that solved the queries (internal: use ``solve_queries`` rather
        than constructing this class).
    vc : ndarray of shape (p, q) or None
        The solved query gradients, uncompressed (None when ``factored`` holds them).
    n_queries : int
        q, the number of queries.
    itemsize : int, default 8
        Bytes per score (4 when the training rows are float32), to refuse a score matrix that
        cannot fit in memory.
    factored : object, optional
        The rank-r layer blocks of the solved queries (query batching), from the core.

    Attributes
    ----------
    n_queries : int
        q, the number of solved queries.

    See Also
    --------
    Influence.solve_queries : which makes it.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
    >>> sq = inf.solve_queries(inf.loss_grads(X[:2], y[:2]))
    >>> sq.n_queries, sq.query_rank
    (2, None)
    >>> np.allclose(sq.scores(), inf.on_loss(X[:2], y[:2]))
    True
    >>> sq.top_k(5, rows=(0, 512)).helpful_idx.shape
    (2, 5)
    """

    def __init__(self, core: InfluenceCore, vc: np.ndarray | None, n_queries: int, itemsize: int = 8, factored=None):
        self._core, self._vc, self._factored = core, vc, factored
        self.n_queries = n_queries
        self._itemsize = 8 if factored is not None else itemsize

    @property
    def query_rank(self) -> int | None:
        """r of query batching (int), or None for uncompressed queries."""
        return None if self._factored is None else self._factored.rank

    @property
    def query_errors(self) -> np.ndarray | None:
        """Per query, ||V - V_r||_F / ||V||_F of query batching, shape (n_queries,) (None for uncompressed queries)."""
        return None if self._factored is None else self._factored.errors

    def scores(self, idx=None) -> np.ndarray:
        """The score matrix of the solved queries, without solving again.

        What ``on`` / ``on_loss`` return for them, in the same precision (float64 for
        compressed queries): S[t, m] < 0 means training point m helps query t.

        Parameters
        ----------
        idx : array_like of int or bool, optional
            Training points to score (indices, or a boolean mask of length n); None (the
            default) scores all of them.

        Returns
        -------
        ndarray of shape (n_queries, n) or (n_queries, len(idx))
            The scores.

        Raises
        ------
        InputError
            If ``idx`` is out of range or selects nothing, or the result cannot fit in memory
            (the message names ``idx``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> sq = inf.solve_queries(inf.loss_grads(X[:2], y[:2]))
        >>> sq.scores().shape, sq.scores([3, 7]).shape
        ((2, 569), (2, 2))
        >>> np.allclose(sq.scores([3, 7]), inf.on_loss(X[:2], y[:2], idx=[3, 7]))
        True
        """
        rows = None if idx is None else [int(i) for i in as_indices(idx, self._core.n_samples)]
        n_out = self._core.n_samples if rows is None else len(rows)
        check_output_fits((self.n_queries, n_out), self._itemsize, "idx",
                          "use top_k (streamed: memory O(q k)) or idx= for a subset of training points")
        if self._factored is not None:
            return _core.scores_factored(self._core, self._factored, rows)
        assert self._vc is not None  # one of the two forms is held
        return self._core.scores_solved(self._vc, rows)

    def top_k(self, k: int = 10, rows: tuple[int, int] | None = None) -> TopK:
        """The ``k`` most helpful and most harmful training points of the rows
        ``rows = (start, stop)`` (default all), streamed.

        Indices are counted from the first training row, so the results of several segments
        combine with :meth:`TopK.merge`. Segments starting at multiples of
        ``upweight._constants.BLOCK_ROWS`` give bitwise the scores of one pass.

        Parameters
        ----------
        k : int, default 10
            How many points per end.
        rows : tuple of (int, int), optional
            The segment ``(start, stop)`` of training rows to score; None (the default) scores
            all of them.

        Returns
        -------
        TopK
            ``helpful_idx`` / ``helpful`` and ``harmful_idx`` / ``harmful``, each
            (n_queries, k).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer, or ``rows`` is not a non-empty segment of the
            training rows.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> sq = inf.solve_queries(inf.loss_grads(X[:2], y[:2]))
        >>> top = sq.top_k(3, rows=(512, 569))
        >>> bool(((top.helpful_idx >= 512) & (top.helpful_idx < 569)).all())
        True
        >>> np.array_equal(sq.top_k(3).helpful_idx, inf.top_k(X[:2], y[:2], k=3).helpful_idx)
        True
        """
        k = _check_k(k)
        segment = None if rows is None else _segment(rows)
        if self._factored is not None:
            return TopK._from_core(_core.top_k_factored(self._core, self._factored, k, segment))
        assert self._vc is not None  # one of the two forms is held
        return TopK._from_core(self._core.top_k_solved(self._vc, k, segment))

    def _only(self, queries: np.ndarray) -> SolvedQueries:
        """These solved queries restricted to the given ones (uncompressed queries only)."""
        return SolvedQueries(self._core, None if self._vc is None else self._vc[:, queries], queries.size, self._itemsize)


def _groups(groups, n: int) -> list[list[int]]:
    """Groups of training indices: a sequence of index arrays (or boolean masks), or a label per
    training point (one group per distinct label, in ``np.unique`` order)."""
    if isinstance(groups, np.ndarray) and groups.ndim == 1 and groups.shape == (n,) and groups.dtype != bool:
        _, inv = np.unique(groups, return_inverse=True)
        return [np.flatnonzero(inv == g).tolist() for g in range(inv.max() + 1)]
    if isinstance(groups, (str, bytes)) or not hasattr(groups, "__iter__"):
        raise InputError(f"groups: expected a sequence of index arrays or one label per training point, got {type(groups).__name__}")
    out = []
    for j, g in enumerate(groups):
        idx = as_indices(np.atleast_1d(np.asarray(g)), n, f"groups[{j}]")
        if np.unique(idx).size != idx.size:
            raise InputError(f"groups[{j}]: has repeated indices")
        out.append([int(i) for i in idx])
    if not out:
        raise InputError("groups: is empty")
    return out


def _kfac_samples(samples, curvature: str, precondition) -> int:
    """The sampled output gradients per row for the K-FAC factors (0: the exact expectation)."""
    if samples is None:
        return 0
    m = as_positive_int(samples, "kfac_samples")
    if curvature not in KRONECKER and precondition != "kfac":
        raise InputError(f"kfac_samples: samples the K-FAC factors, used by curvature='kfac' / 'ekfac' or precondition='kfac'; "
                         f"this influence has curvature={curvature!r}, precondition={precondition!r}")
    return m


def _saved_rank(state: dict | None, solver: str, rank):
    """``rank``, or for Arnoldi from a curvature file, the number of eigenpairs it holds
    (InputError naming ``rank`` if a different one was asked for)."""
    if state is not None and solver == "arnoldi" and "ritz.values" in state:
        saved = state["ritz.values"].size
        if rank is not None and rank != saved:
            raise InputError(f"rank: the curvature_file holds {saved} eigenpairs, got rank={rank!r}")
        return saved
    return rank


def _check_k(k) -> int:
    return as_positive_int(k, "k")


def _segment(rows) -> tuple[int, int]:
    try:
        start, stop = (int(r) for r in rows)
    except (TypeError, ValueError):
        raise InputError(f"rows: expected (start, stop), got {rows!r}") from None
    if start < 0:
        raise InputError(f"rows: segment {start}..{stop} starts before the first training point")
    return start, stop


class _Queries:
    """Queries shared by :class:`Influence` and :class:`GradientInfluence`: everything that only
    needs gradients at theta* and the prepared solver."""

    solver: str
    on_unconverged: str
    solve_info: SolveInfo | None
    n_params: int
    _cores: dict[str, InfluenceCore]
    _policy: QueryPolicy

    _itemsize: int = 8  # bytes per score (4 when the training rows are float32)

    def _start(self, policy: QueryPolicy) -> None:
        """Build the core for the policy's first method."""
        self._policy, self._cores = policy, {}
        self.solver = policy.method
        self._cores[self.solver] = self._make_core(self.solver)
        # building a core reads every training row, which fingerprints the rows of an X read in
        # place (_core.Watched); rows it did not read are fingerprinted now (one pass)
        watched = getattr(self, "_x_core", None)
        if isinstance(watched, _core.Watched) and not watched.complete:
            watched.check()

    _make_core: Callable[[str], InfluenceCore]  # builds a core for "direct" or "cg"

    @property
    def _core(self) -> InfluenceCore:
        return self._cores[self.solver]

    def _watch(self, *inputs) -> None:
        """Record the files among ``inputs`` ((name, value) pairs), to refuse queries once they change."""
        self._files = [(name, v, file_stamp(v)) for name, v in inputs if isinstance(v, str)]

    def _check_files(self) -> None:
        for name, path, stamp in getattr(self, "_files", ()):
            try:
                now = file_stamp(path)
            except OSError:
                now = None
            if now != stamp:
                raise InputError(f"{name}: the file {path!r} changed (or vanished) after this influence was built; "
                                 "its answers would mix old and new data: build a new one")

    def _core_for(self, n_rhs: int) -> InfluenceCore:
        """The core for a query with ``n_rhs`` right-hand sides, by the solver policy (under
        "auto", H is formed once, then kept, when that is cheaper than CG for this query)."""
        self._check_files()
        method = self._policy.method_for(n_rhs)
        if method not in self._cores:
            self._cores[method] = self._make_core(method)
        self.solver = method
        return self._core

    @property
    def n_samples(self) -> int:
        """n, the number of training points (int)."""
        return self._core.n_samples

    @property
    def total_weight(self) -> float:
        """W, the sum of the training weights (float; n when unweighted)."""
        return self._core.total_weight

    def _checked(self, result):
        """Record the solve's info; refuse (or warn about) an unconverged CG solve."""
        out, (iterations, residuals, converged) = result
        ritz = self._core.ritz
        eig = (None, None) if ritz is None else ritz[:2]
        self.solve_info = SolveInfo(self.solver, iterations, residuals, converged, self._core.preconditioned, *eig)
        if not converged.all():
            bad = int(np.argmin(converged))
            msg = (f"conjugate gradients did not converge for {int((~converged).sum())} of {converged.size} "
                   f"right-hand sides (first: #{bad}, relative residual {residuals[bad]:.2e} after "
                   f"{iterations[bad]} iterations); raise max_iter, add damping, or use solver='direct'")
            if self.on_unconverged == "raise":
                raise ConvergenceError(msg)
            warnings.warn(msg, ConvergenceWarning, stacklevel=3)
        return out

    def _grad_matrix(self, grad_f, name: str = "grad_f"):
        g = np.asarray(grad_f)
        single = g.ndim == 1
        G = as_matrix(g[None, :] if single else g, name)
        if G.shape[1] != self.n_params:
            raise InputError(f"{name}: has {G.shape[1]} entries per row, expected p = {self.n_params}")
        check_finite(G, name)
        return G, single

    def _rows(self, idx):
        return None if idx is None else [int(i) for i in as_indices(idx, self.n_samples)]

    def self_influence(self, rows: tuple[int, int] | None = None) -> np.ndarray:
        """grad l(z_m) . I(z_m) for every training point, streamed over the training rows.

        The influence of each training point on its own loss. Always <= 0 without a penalty;
        the most negative values flag points the model fits only by bending towards them
        (outliers, mislabelled points). Each training point is its own right-hand side: with
        ``solver="cg"`` that is one CG solve per point (n passes over the data per iteration in
        total), so prefer ``"direct"`` whenever H fits in memory.

        Parameters
        ----------
        rows : tuple of (int, int), optional
            ``(start, stop)``: only those training rows, e.g. one segment of a resumable run;
            segments starting at multiples of ``upweight._constants.BLOCK_ROWS`` give bitwise
            the values of one pass. None (the default): all rows.

        Returns
        -------
        ndarray of shape (n,), or (stop - start,) with ``rows``
            The self-influences.

        Raises
        ------
        InputError
            If ``rows`` is not a non-empty segment of the training rows.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        See Also
        --------
        Influence.on_loss : whose diagonal on the training set this is.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> inf = uw.Influence(uw.LinearRegression().fit(X, y), X, y)
        >>> si = inf.self_influence()
        >>> si.shape, bool((si <= 0).all())
        ((40,), True)
        >>> np.allclose(si, np.diag(inf.on_loss(X, y)))
        True
        >>> np.allclose(inf.self_influence(rows=(10, 20)), si[10:20])
        True
        """
        segment = None if rows is None else _segment(rows)
        return self._checked(self._core_for(self.n_samples).self_influence(segment))

    def inverse_hvp(self, g) -> np.ndarray:
        """(H + damping I)^{-1} g for a vector (p,) or the columns of a matrix (p, r).

        The solve every influence query is made of, with this object's curvature (a GLM's
        Hessian, a network's ``curvature``, the gradients' Fisher or explicit Hessian), damping
        and solver; ``solve_info`` reports it.

        Parameters
        ----------
        g : array_like of shape (p,) or (p, r)
            A vector, or r vectors as columns, one entry per parameter.

        Returns
        -------
        ndarray of shape (p,) or (p, r)
            The solution(s), shaped like ``g``.

        Raises
        ------
        InputError
            If ``g`` does not have p rows or contains NaN or infinity.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        With l2 = 0, I(z_m) = -H^{-1} grad l(z_m) / W, so the influence on f is
        -grad l(z_m) . H^{-1} grad f / W:

        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> inf = uw.Influence(uw.LinearRegression().fit(X, y), X, y)
        >>> g = np.array([1.0, 0.0, 0.0, 0.0])
        >>> v = inf.inverse_hvp(g)
        >>> v.shape
        (4,)
        >>> np.allclose(inf.on(g), -inf.loss_grads(X, y) @ v / inf.total_weight)
        True
        """
        single = np.ndim(g) == 1
        g = as_matrix(np.asarray(g)[:, None] if single else g, "g")
        if g.shape[0] != self.n_params:
            raise InputError(f"g: has {g.shape[0]} rows, expected p = {self.n_params} (one per parameter)")
        check_finite(g, "g")
        out = self._checked(self._core_for(g.shape[1]).inverse_hvp(g))
        return out[:, 0] if single else out

    def on(self, grad_f, idx=None, *, query_rank: int | None = None) -> np.ndarray:
        """Influence of every training point (or the rows ``idx``) on f, given grad f(theta*).

        The entry for training point m is grad f(theta*) . I(z_m): negative when upweighting m
        lowers f. ``grad_f`` of shape (p,) gives (n,); (r, p) gives (r, n) with row j for f_j.

        Parameters
        ----------
        grad_f : array_like of shape (p,) or (r, p)
            The gradient of f (or of r functions f_j, one per row) at the fitted parameters,
            flattened as the parameters are.
        idx : array_like of int or bool, optional
            Training points to score (indices, or a boolean mask of length n); None (the
            default): all of them.
        query_rank : int, optional
            ``query_rank=r``: query batching (networks), see :class:`SolvedQueries`.

        Returns
        -------
        ndarray of shape (n,), (r, n), (len(idx),) or (r, len(idx))
            The influence scores.

        Raises
        ------
        InputError
            If ``grad_f`` does not have p entries per row or contains NaN or infinity, ``idx``
            is out of range, ``query_rank`` is not a positive integer, or the result cannot
            fit in memory (the message names the argument).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        See Also
        --------
        Influence.params : I(z_m) itself; ``on(g)`` equals ``params() @ g``.

        Examples
        --------
        The influence on the fitted intercept (the last parameter) of a logistic regression:

        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> g = np.zeros(inf.n_params)
        >>> g[-1] = 1.0
        >>> inf.on(g).shape
        (569,)
        >>> np.allclose(inf.on(g), inf.params()[:, -1])
        True
        >>> inf.on(np.eye(inf.n_params)[:2], idx=[0, 1, 2]).shape
        (2, 3)
        """
        G, single = self._grad_matrix(grad_f)
        if query_rank is not None:
            out = self.solve_queries(G, query_rank=query_rank).scores(idx)
        else:
            out = self._scores(G, idx, "grad_f")
        return out[0] if single else out

    def _scores(self, G, idx, arg: str):
        """S (r x n or r x len(idx)) for gradients G (r x p), refused up front if it cannot fit."""
        rows = self._rows(idx)
        n_out = self.n_samples if rows is None else len(rows)
        check_output_fits((G.shape[0], n_out), self._itemsize, arg,
                          "use top_k / top_k_on (streamed: memory O(q k)), fewer queries at a time, "
                          "or idx= for a subset of training points")
        return self._checked(self._core_for(G.shape[0]).on(G, rows))

    def top_k_on(self, grad_f, k: int = 10, *, query_rank: int | None = None) -> TopK:
        """The ``k`` most helpful and most harmful training points for functions f given their
        gradients (r, p) at theta*, streamed over the training rows.

        The (r, n) score matrix is never held: memory is O(r k).

        Parameters
        ----------
        grad_f : array_like of shape (r, p) or (p,)
            The gradients of the functions f_j at the fitted parameters, one per row.
        k : int, default 10
            How many points per end.
        query_rank : int, optional
            ``query_rank=r``: query batching (networks), see :class:`SolvedQueries`.

        Returns
        -------
        TopK
            ``helpful_idx`` / ``helpful`` (most negative scores) and ``harmful_idx`` /
            ``harmful`` (most positive), each (r, k).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer or ``grad_f`` does not have p entries per row
            (the message names the argument).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> G = rng.normal(size=(50, 5))
        >>> inf = uw.GradientInfluence(G, damping=1e-3)
        >>> g = rng.normal(size=(2, 5))
        >>> top = inf.top_k_on(g, k=3)
        >>> top.helpful_idx.shape
        (2, 3)
        >>> np.allclose(top.helpful, np.sort(inf.on(g), axis=1)[:, :3])
        True
        """
        k = _check_k(k)
        G, _ = self._grad_matrix(grad_f)
        if query_rank is not None:
            return self.solve_queries(G, query_rank=query_rank).top_k(k)
        return TopK._from_core(self._checked(self._core_for(G.shape[0]).top_k(G, k)))

    def solve_queries(self, grad_f, *, query_rank: int | None = None) -> SolvedQueries:
        """Solve for the functions f given their gradients (r, p) at theta* once, and return an
        object that scores the training rows without solving again.

        :meth:`SolvedQueries.top_k` scores any segment, :meth:`SolvedQueries.scores` gives the
        matrix; ``solve_info`` reports this solve.

        Parameters
        ----------
        grad_f : array_like of shape (r, p) or (p,)
            The gradients of the functions f_j at the fitted parameters, one per row.
        query_rank : int, optional
            ``query_rank=r`` keeps every solved query's layer blocks at rank r (query
            batching, networks; ``solve_info.query_errors`` reports what that cost). None (the
            default): the solved queries are kept whole.

        Returns
        -------
        SolvedQueries
            The r solved queries.

        Raises
        ------
        InputError
            If ``grad_f`` does not have p entries per row or contains NaN or infinity, or
            ``query_rank`` is not a positive integer.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> sq = inf.solve_queries(inf.loss_grads(X[:3], y[:3]))
        >>> sq.n_queries
        3
        >>> first, rest = sq.top_k(5, rows=(0, 512)), sq.top_k(5, rows=(512, 569))
        >>> np.array_equal(first.merge(rest, 5).helpful_idx, inf.top_k(X[:3], y[:3], k=5).helpful_idx)
        True

        Query batching on a small network: at rank r >= min(out, in + 1) of every layer the
        scores are exact.

        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:100], y[:100])
        >>> inf = uw.Influence(net, X[:100], y[:100])
        >>> G = inf.loss_grads(X[100:103], y[100:103])
        >>> sq = inf.solve_queries(G, query_rank=4)
        >>> sq.query_rank, np.allclose(sq.query_errors, 0.0)
        (4, True)
        >>> np.allclose(sq.scores(), inf.on(G))
        True
        """
        G, _ = self._grad_matrix(grad_f)
        core = self._core_for(G.shape[0])
        if query_rank is None:
            return SolvedQueries(core, self._checked(core.solve_queries(G)), G.shape[0], self._itemsize)
        factored = self._checked(_core.solve_queries_factored(core, G, as_positive_int(query_rank, "query_rank")))
        assert self.solve_info is not None  # set by _checked
        self.solve_info = replace(self.solve_info, query_errors=factored.errors)
        return SolvedQueries(core, None, G.shape[0], self._itemsize, factored=factored)


class Influence(_Queries):
    """Influence of the training points of a fitted model.

    For a model fitted on a weighted training set (weights w_i, W = sum_i w_i), the influence of
    training point z_m is the derivative of the fitted parameters with respect to its weight,
    I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W (DESIGN.md sections 1, 3 and
    4), and the influence on any differentiable f of theta is grad f(theta*) . I(z_m). Scores on
    a test loss follow one sign: S[t, m] < 0 means upweighting training point m lowers the loss
    at test point t (m *helps* t); removing a point changes theta by about -w_m I(z_m).

    Parameter vectors are flattened as ``model.theta_.reshape(-1)``: p = d + 1, or k (d + 1) for
    multinomial. After each query, ``solve_info`` reports iterations and relative residuals.
    With a training set in dask arrays the constructor returns a
    :class:`upweight.dask.DaskInfluence` instead.

    Parameters
    ----------
    model : Model
        A fitted model implementing :class:`upweight.models.Model`: ``LinearRegression``,
        ``LogisticRegression``, ``PoissonRegression``, ``MLPClassifier``, ``MLPRegressor``, or
        a model from :meth:`from_sklearn` / :meth:`from_statsmodels`. Its parameters are taken
        as they are now: refitting or editing it later leaves this object on them.
    X : array_like of shape (n, d), scipy.sparse matrix, str or dask array
        The training features the model was fitted on (same order). X may be float64 or
        float32 (kept as float32: scores are computed in float32, sums and solves in float64),
        a scipy.sparse matrix (used in CSR form, never densified: every pass costs O(nnz)), or
        the path of a ``.npy`` file (or its ``np.load(..., mmap_mode="r")`` memmap): it is then
        read block by block, never held in memory; or dask arrays chunked by rows: the result is
        then a :class:`upweight.dask.DaskInfluence` (answers computed on Dask's scheduler;
        docs: Large data). Test points (``X_test``) may be sparse too; their gradient
        matrix (q x p) is dense.
    y : array_like of shape (n,) or (n, t)
        The training targets the model was fitted on (t outputs for multi-output models).
    sample_weight : array_like of shape (n,), optional
        The training weights w_i the model was fitted with (None: all 1).
    solver : {"auto", "direct", "cg", "arnoldi"}, default "auto"
        "direct" (form H, Cholesky), "cg" (matrix-free conjugate gradients on
        Hessian-vector products, preconditioned as ``precondition`` says), or "auto": per
        query, the cheaper of the two by a cost model measured on n, p, the row density and
        the number of right-hand sides (:mod:`upweight.solver`); once formed, H is kept.
        The attribute ``solver`` tells which one the next query will use. "arnoldi"
        (approximate, never chosen by "auto"; Schioppa et al. 2022): the top ``rank``
        eigenpairs (sigma_j, u_j) of the curvature (a GLM's Hessian, a network's
        ``curvature``) from Lanczos with full reorthogonalisation (``arnoldi_steps``
        products with it, default max(2 rank, rank + 20), at most p; a pass over the data
        each), then every solve uses that rank-r model: ``arnoldi_inverse="projection"``
        (default) U diag(1 / (sigma + damping)) U^T g, the solve within the top eigenspace;
        ``"exact"`` the exact inverse of U diag(sigma) U^T + damping I (adds
        (g - U U^T g) / damping; needs damping > 0 when rank < p). With rank = p it is the
        exact solve. ``solve_info`` then holds the eigenvalues kept, their Lanczos
        residuals and each query's true residual. Deterministic (a seeded start vector).
        Leave-out estimates refuse it.
    damping : float or "auto", optional
        Solve (H + damping I) v = g instead of H v = g. None (the default): 0 for GLMs,
        "auto" for networks, which is 0.1 tr(G) / p, a tenth of the curvature's mean
        eigenvalue (Grosse et al. 2023). The value used is the attribute ``damping``.
    curvature : {"gauss-newton", "hessian", "kfac", "ekfac"}, optional
        Networks: "gauss-newton" (G, the default; damping "auto" = 0.1 tr(G) / p),
        "hessian" (the exact Hessian), "kfac" (approximate: solves with the inverse of G's
        Kronecker-factored layer blocks, kron(S, A) + damping I + 2 l2 M, the penalty exact
        by Woodbury) or "ekfac" (approximate: the same eigenbases Q_S (x) Q_A with the
        eigenvalues replaced by the diagonal of G's exact layer blocks in them, plus the
        penalty's diagonal there; a second pass over the data). For both, ``solver`` must
        stay "auto" and ``solve_info.residuals`` are the true residuals against the exact
        damped G. A GLM's curvature is its Hessian ("gauss-newton" and "hessian" both give
        it; "kfac" and "ekfac" are refused).
    rtol, atol : float, default 1e-10 and 0.0
        Conjugate-gradient stopping rule (relative and absolute residual tolerances).
    max_iter : int, default 1000
        Conjugate-gradient iteration limit.
    precondition : bool or {"auto", "jacobi", "kfac", "none"}, default True
        CG's preconditioner. "jacobi": the inverse of the Hessian's diagonal (for
        multinomial models of each feature's k x k class block); "kfac" (networks only):
        the inverse of each layer's Kronecker-factored Gauss-Newton block, kron(S, A) +
        damping I + 2 l2 M, from the exact output curvature (no sampling, float64),
        cross-layer blocks dropped; "none"; True or "auto" (the default): "none" for
        networks (on a 784-128-10 Fashion-MNIST net at damping "auto" Jacobi and K-FAC both
        take ~3x the iterations of plain CG; on the 64-16-10 digits net K-FAC saves
        10-40%); for GLMs, (block) Jacobi or none, whichever takes fewer iterations,
        measured once by the first solve: CG on a fixed seeded right-hand side with Jacobi,
        then without it (stopped at Jacobi's count); every query then uses the winner
        (``solve_info.preconditioned`` tells which), so answers never depend on which query
        came first. Block Jacobi saves iterations on badly scaled features and costs some on
        well-conditioned data (bench/RESULTS.md); False: "none". Every choice gives the
        same solution; only the iterations differ.
    on_unconverged : {"raise", "warn"}, default "raise"
        What to do when a CG solve misses its tolerance: raise ``ConvergenceError``, or
        warn (:class:`~upweight.ConvergenceWarning`, also a ``RuntimeWarning``) and return the
        approximate answer.
    progress : callable, optional
        ``progress(pass, rows_done, rows_total)``, called from the calling thread at most
        every 50 ms while a long call runs; raising in it cancels the call. Every long call
        is interruptible with Ctrl-C.
    copy : bool, default False
        Whether to keep a private copy of a dense in-memory X. Editing the caller's arrays
        later never mixes new data into answers about the old fit. By default X is read
        where it is (no second copy of a training set that may fill half of memory): its
        rows are fingerprinted as construction reads them (a 64-bit hash of every 8 KiB of
        rows), every later read checks the rows it reads, and a query raises ``InputError``
        once X has changed. With ``copy=True`` the influence keeps a snapshot and the caller
        may edit X freely. y, sample_weight and sparse X are always copied. A ``.npy`` path is never copied: it is made absolute, and
        queries raise ``InputError`` once the file has changed. The model's parameters are
        always taken as they are now.
    rank, arnoldi_steps : int, optional
        The Arnoldi settings above (only with ``solver="arnoldi"``, which requires
        ``rank``).
    arnoldi_inverse : {"projection", "exact"}, default "projection"
        The Arnoldi solve above (only with ``solver="arnoldi"``).
    residuals : bool, default True
        Approximate solves (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``)
        report each query's true relative residual against the exact damped curvature in
        ``solve_info.residuals``: one product with it per block of queries (for q queries,
        about q gradient passes' work). False skips it (NaN there) for speed. Exact solvers
        ignore it.
    curvature_file : str or path-like, optional
        A file written by :meth:`save_curvature` for the same model parameters, data, l2,
        damping and approximation: the prepared curvature (eigenpairs, factors) is loaded
        instead of computed, so the passes that build it run once for many sessions. Its
        header is checked (InputError naming ``curvature_file`` on any difference).
    kfac_samples : int, optional
        The K-FAC / EK-FAC factors (``curvature="kfac"``/``"ekfac"``,
        ``precondition="kfac"``) from m loss gradients per row at targets drawn from the
        network's predictive distribution (kronfluence's and Grosse et al.'s sampled Fisher;
        for large k: m backward passes instead of k), each row's draws seeded by a hash of
        its values (deterministic, independent of order and blocking). None (default): the
        exact expectation over the outputs. The residuals stay against the exact G.

    Attributes
    ----------
    model : Model
        The fitted model.
    X, y, sample_weight : array_like or str
        The training set, as kept (the caller's dense X itself unless ``copy=True``; a
        ``.npy`` path made absolute).
    l2 : float
        The model's penalty.
    damping : float
        The damping used (the value of "auto" once computed).
    curvature : str
        The curvature used ("hessian" for GLMs).
    is_network : bool
        Whether the model is a network.
    kfac_samples : int
        The sampled output gradients per row of the K-FAC factors (0: the exact expectation).
    solver : str
        The method the next query will use ("direct", "cg", "arnoldi", "kfac" or "ekfac").
    on_unconverged : str
        "raise" or "warn".
    solve_info : SolveInfo or None
        What the last query's solve did (None before the first query).

    Raises
    ------
    NotFittedError
        If ``model`` is not fitted.
    InputError
        If ``model`` does not implement :class:`upweight.models.Model`, or an argument has a
        bad shape or value (X's columns, y's labels, a negative weight, an unknown solver,
        ``rank`` without ``solver="arnoldi"``, a ``curvature_file`` for other data...): the
        message names the argument.
    SingularHessianError
        If the curvature is singular (collinear or constant features, or separable classes,
        without a penalty; a network's Gauss-Newton matrix without damping), when a solver is
        prepared: at construction, or when ``solver="auto"`` first forms H.

    Warns
    -----
    NotAtOptimumWarning
        If a GLM's parameters do not minimise the objective on the data given (influence is an
        exact derivative only at the optimum: pass the same X, y, sample_weight and l2 the model
        was fitted with). Networks are never warned about: their influence is exact at any
        parameters (the PBRF's derivative).

    See Also
    --------
    GradientInfluence : the same queries from per-example gradients (deep models).
    upweight.leave_one_out : influence beside exact refits.

    Examples
    --------
    >>> X, y, names = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> inf = uw.Influence(model, X, y)
    >>> inf.n_samples, inf.n_params, inf.solver
    (569, 31, 'direct')
    >>> S = inf.on_loss(X[:5], y[:5])
    >>> S.shape
    (5, 569)

    The training point that most helps the loss at X[0] lowers it when upweighted:

    >>> m = int(S[0].argmin())
    >>> bool(S[0, m] < 0), m == int(inf.top_k(X[:1], y[:1], k=1).helpful_idx[0, 0])
    (True, True)

    Influence is the derivative of a refit in the weight (checked here by a finite difference):

    >>> w = np.ones(len(y))
    >>> w[m] += 1e-5
    >>> refit = uw.LogisticRegression(l2=1e-2).fit(X, y, sample_weight=w)
    >>> np.allclose((refit.theta_ - model.theta_) / 1e-5, inf.params([m])[0], rtol=1e-3, atol=1e-6)
    True
    """

    def __new__(cls, model=None, X=None, y=None, sample_weight=None, **kwargs):
        # a training set on Dask: the same queries, answered there (upweight.dask.DaskInfluence)
        backend = backend_for(X, y, sample_weight) if cls is Influence else None
        if backend is not None:
            return backend.DaskInfluence(model, X, y, sample_weight, **kwargs)
        return super().__new__(cls)

    def __init__(self, model, X, y, sample_weight=None, *, solver: str = "auto", damping: float | str | None = None,
                 curvature: str | None = None, rtol: float = 1e-10, atol: float = 0.0, max_iter: int = 1000,
                 precondition: bool | str = True, on_unconverged: str = "raise", progress=None, copy: bool = False,
                 rank: int | None = None, arnoldi_steps: int | None = None, arnoldi_inverse: str = "projection",
                 residuals: bool = True, curvature_file=None, kfac_samples: int | None = None):
        self.model: Model = check_model(model)
        # networks choose their curvature (default Gauss-Newton); a GLM's G is its Hessian
        self.is_network = hasattr(model, "default_curvature")
        self.curvature = check_curvature(curvature, model)
        # what the influence is of, fixed now: refitting or editing the model later leaves this
        # object (and every core it builds, also lazily under "auto") on these parameters
        # K-FAC approximates the Gauss-Newton matrix, which answers every exact product (residuals)
        exact_curvature = "gauss-newton" if self.curvature in KRONECKER else self.curvature
        self._core_model = model.core_model(exact_curvature) if self.is_network else model.core_model()
        self.kfac_samples = _kfac_samples(kfac_samples, self.curvature, precondition)
        if self.kfac_samples:
            self._core_model = _core.with_kfac_samples(self._core_model, self.kfac_samples)
        self._theta = model.get_theta()
        self._d, self._renormalized = model.n_features_in_, bool(model.penalty_renormalized)
        Xc, n, _ = training_features(X.array if isinstance(X, _core.Watched) else X, self._d)
        # the data, kept or watched: later edits of the caller's arrays (or of a .npy file)
        # cannot mix into answers; _x_core is what every core is built from
        self.X, self._x_core = kept_features(Xc, X, copy, "X")
        self.y = kept(model.check_targets(y, n), y)
        self.sample_weight = kept(as_weights(sample_weight, n), sample_weight)
        self._watch(("X", self.X))
        self.l2 = float(model.l2)
        check_influence_solver(solver)
        if self.curvature in KRONECKER:
            if solver != "auto":
                raise InputError(f"solver: curvature={self.curvature!r} is solved in closed form (the inverse of its Kronecker "
                                 f"factors); leave solver='auto', got {solver!r}")
            solver = self.curvature
        state = None if curvature_file is None else load_curvature(curvature_file, self._theta)
        if state is not None and (saved := int(state.pop("kfac_samples", np.zeros(1))[0])) != self.kfac_samples:
            raise InputError(f"curvature_file: was computed with kfac_samples = {saved or None}, this influence has "
                             f"kfac_samples = {self.kfac_samples or None}: recompute it")
        rank = _saved_rank(state, solver, rank)
        self._approx = approximation_args(solver, rank, arnoldi_steps, arnoldi_inverse, residuals) | {"state": state}
        self.on_unconverged = check_on_unconverged(on_unconverged)
        self.solve_info: SolveInfo | None = None
        self.damping = self._damping(damping, progress)
        self._args = solver_args(self.damping, rtol, atol, max_iter, precondition, progress)
        self._itemsize = score_itemsize(self.X)
        self._start(QueryPolicy(solver, work(n, self._theta.size, self._core_model.n_outputs, self.X)))
        # a network's influence is exact at any parameters (the PBRF's derivative): no warning
        if not self.is_network and not self._at_optimum():
            warnings.warn(
                f"the model's parameters do not minimise the objective on this data (max |gradient| = "
                f"{self._core.grad_norm:.3g}): influence is exact only at the optimum. Pass the same X, y, "
                "sample_weight and l2 the model was fitted with.",
                NotAtOptimumWarning,
                stacklevel=2,
            )

    @classmethod
    def from_sklearn(cls, estimator, X, y, sample_weight=None, **kwargs) -> Influence:
        """Influence for a fitted scikit-learn ``LinearRegression``, ``Ridge``,
        ``LogisticRegression``, ``PoissonRegressor``, ``MLPClassifier`` or ``MLPRegressor``.

        The estimator's objective is converted exactly (:mod:`upweight.interop`; the
        documentation's Conventions page); ``inf.model`` is the equivalent upweight model. A GLM's
        parameters are first polished by Newton's method to the exact optimum of its objective
        (a warning says if that moved them); networks are taken at sklearn's parameters.

        Parameters
        ----------
        estimator : sklearn estimator
            The fitted estimator (with ``fit_intercept=True``).
        X : array_like of shape (n, d)
            The training features it was fitted on.
        y : array_like of shape (n,)
            The training targets it was fitted on (class labels as the estimator saw them).
        sample_weight : array_like of shape (n,), optional
            The sample weights it was fitted with.
        **kwargs
            Go to :class:`Influence` (networks: the default damped Gauss-Newton answers the
            PBRF at sklearn's parameters; ``damping=0.0, curvature="hessian"`` at a minimum is
            the derivative of refitting).

        Returns
        -------
        Influence
            The influence of the estimator's training points.

        Raises
        ------
        InputError
            If ``estimator`` is not a supported, fitted scikit-learn estimator (or has
            ``fit_intercept=False``), or an argument of :class:`Influence` is bad.

        Examples
        --------
        >>> from sklearn.linear_model import LogisticRegression
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> est = LogisticRegression(C=1.0, solver="newton-cholesky", tol=1e-10).fit(X, y)
        >>> inf = uw.Influence.from_sklearn(est, X, y)
        >>> type(inf.model).__name__, np.allclose(inf.model.coef_, est.coef_)
        ('LogisticRegression', True)

        sklearn's C sum_i l_i + ||coef||^2 / 2 becomes l2 = 1 / (2 C W), a sum-type penalty:

        >>> bool(np.isclose(inf.model.l2, 1 / (2 * 1.0 * len(y)))), inf.model.penalty_renormalized
        (True, False)
        >>> inf.on_loss(X[:2], y[:2]).shape
        (2, 569)
        """
        model, yv = from_sklearn(estimator, X, y, sample_weight)
        return cls(model, X, yv, sample_weight, **kwargs)

    @classmethod
    def from_statsmodels(cls, results, **kwargs) -> Influence:
        """Influence for fitted statsmodels ``OLS``, ``WLS`` or ``GLM`` (Gaussian, Binomial,
        Poisson; canonical links) results, on the data they were fitted on.

        The model's design matrix must have exactly one constant column: ``inf.X`` is the
        design without it, and upweight's parameters put the intercept last (statsmodels' order
        with the constant moved to the end). Weights are freq_weights x var_weights (``WLS``:
        its weights); l2 = 0.

        Parameters
        ----------
        results : statsmodels results
            The fitted results (``model.fit()``) of an ``OLS``, ``WLS`` or ``GLM``.
        **kwargs
            Go to :class:`Influence`.

        Returns
        -------
        Influence
            The influence of the training points, with the upweight twin in ``inf.model``.

        Raises
        ------
        InputError
            If the model is not supported (another family or link, an offset or exposure, not
            exactly one constant column): the message names ``results``.

        Examples
        --------
        >>> from statsmodels.regression.linear_model import OLS
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> results = OLS(y, np.column_stack([np.ones(40), X])).fit()
        >>> inf = uw.Influence.from_statsmodels(results)
        >>> inf.X.shape, np.allclose(inf.model.theta_, np.roll(results.params, -1))
        ((40, 3), True)

        For least squares one Newton step is the exact refit, so ``loo_params`` is minus
        statsmodels' DFBETA (its constant column moved last):

        >>> dfbeta = results.get_influence().dfbeta
        >>> np.allclose(inf.loo_params(), -np.roll(dfbeta, -1, axis=1))
        True
        """
        model, X, y, w = from_statsmodels(results)
        return cls(model, X, y, w, **kwargs)

    def save_curvature(self, path, force: bool = False) -> None:
        """Write the approximate curvature this influence prepared to ``path``.

        Arnoldi's eigenpairs, K-FAC's or EK-FAC's eigenbases and inverse eigenvalues are
        written to ``path`` (.npz, atomically), with what they were computed for (parameters,
        l2, damping, p, W); reload them with ``curvature_file=path``.

        Parameters
        ----------
        path : str or path-like
            The .npz file to write.
        force : bool, default False
            Overwrite an existing file.

        Raises
        ------
        InputError
            For the exact solvers, which have nothing to save, or if ``path`` exists and
            ``force`` is False.

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
        >>> inf = uw.Influence(model, X, y, solver="arnoldi", rank=10)
        >>> inf.save_curvature("curvature.npz")
        >>> again = uw.Influence(model, X, y, solver="arnoldi", curvature_file="curvature.npz")
        >>> np.allclose(again.on_loss(X[:2], y[:2]), inf.on_loss(X[:2], y[:2]))
        True
        """
        state = self._core.curvature_state()
        if state is None:
            raise InputError(f"save_curvature: solver {self.solver!r} is exact and prepares no approximate curvature "
                             "(solver='arnoldi', curvature='kfac' or 'ekfac' do)")
        if self.curvature in KRONECKER:
            state["kfac_samples"] = np.array([float(self.kfac_samples)])
        save_curvature(state, self._theta, path, force)

    def _damping(self, damping, progress) -> float:
        """The damping used: as given, or "auto" (the default for networks) = 0.1 tr(G) / p, a
        tenth of G's mean eigenvalue (Grosse et al. 2023); 0 by default for GLMs."""
        if damping is None:
            damping = "auto" if self.is_network else 0.0
        if isinstance(damping, str):
            if damping != "auto":
                raise InputError(f"damping: expected a number >= 0 or 'auto', got {damping!r}")
            diag = _core.curvature_diag(self._core_model, self._theta, self._x_core, self.y, self.sample_weight, self.l2, progress)
            if diag is None:
                raise InputError("damping: 'auto' needs the curvature's diagonal, which this model does not give; pass a number")
            return AUTO_DAMPING * float(np.mean(diag))
        return as_nonneg_float(damping, "damping")

    def pbrf(self, m, eps, *, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
        """theta_b(eps), the proximal Bregman response of training point ``m`` (networks;
        DESIGN-networks.md section 3).

        The minimiser from ``theta`` of::

            (1/(W+eps)) [sum_i w_i D_i + eps (l_m + 2 l2 (M theta) . t)] + l2 ||M (t - theta)||^2
            + (damping/2) ||t - theta||^2

        with D_i the Bregman divergence of the loss on the outputs at theta, to
        ``max |gradient| <= tol`` (simplified Newton with the exact Hessian at theta, factored
        once per point and eps: p x p, small networks). Its derivative at eps = 0 is :meth:`params` with the
        Gauss-Newton curvature and this damping, at any theta (minimiser or not). eps = -w_m
        removes the point (Bae et al. use eps = -1/N with w = 1 and no renormalisation).

        Parameters
        ----------
        m : int or sequence of int
            The training point(s).
        eps : float or sequence of float
            The weight(s) added to the point (negative: removed in part; -w_m: removed).
        tol : float, default 1e-10
            Stop when ``max |gradient|`` of the objective above is at most this.
        max_iter : int, default 100
            Newton iterations per (m, eps) at most.

        Returns
        -------
        ndarray of shape (p,), (len(eps), p), (len(m), p) or (len(m), len(eps), p)
            The parameters theta_b(eps), flattened as ``model.theta_`` (by whether ``m`` and
            ``eps`` are numbers or sequences).

        Raises
        ------
        InputError
            If the model is not a network (for a GLM at its optimum with damping 0 the PBRF
            is the exact refit: use :func:`upweight.response_curve`), ``m`` is out of range,
            or ``eps`` is not finite.
        ConvergenceError
            If a solve does not converge (the message lists the (m, eps) pairs).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:100], y[:100])
        >>> inf = uw.Influence(net, X[:100], y[:100])
        >>> theta = inf.pbrf(3, [-1e-4, 1e-4])
        >>> theta.shape
        (2, 134)

        Its central difference at eps = 0 is the influence of point 3:

        >>> np.allclose((theta[1] - theta[0]) / 2e-4, inf.params([3])[0], rtol=1e-4, atol=1e-8)
        True
        >>> inf.pbrf([3, 4], -1.0).shape
        (2, 134)
        """
        if not self.is_network:
            raise InputError("model: pbrf is defined for networks (for a GLM at its optimum with damping 0 it is the exact refit: "
                             "use upweight.response_curve)")
        eps_list = [float(e) for e in np.atleast_1d(np.asarray(eps, dtype=np.float64)).reshape(-1)]
        if not all(np.isfinite(eps_list)):
            raise InputError("eps: contains NaN or infinity")
        points = [int(i) for i in as_indices(np.atleast_1d(m), self.n_samples, "m")]
        core = _core.with_curvature(self._core_model, "gauss-newton")
        delta, converged = _core.pbrf(core, self._theta, self._x_core, self.y, self.sample_weight, self.l2, self.damping,
                                      self._renormalized, points, eps_list, as_nonneg_float(tol, "tol"),
                                      as_positive_int(max_iter, "max_iter"), self._args[-1])
        if not all(converged):
            bad = sorted({(points[j // len(eps_list)], eps_list[j % len(eps_list)]) for j, c in enumerate(converged) if not c})
            raise ConvergenceError(f"pbrf: max |gradient| <= {tol:g} not reached for (m, eps) = {bad} (raise max_iter or tol)")
        out = (delta + self._theta).reshape(len(points), len(eps_list), -1)
        if np.ndim(eps) == 0:
            out = out[:, 0]
        return out[0] if np.ndim(m) == 0 else out

    def _make_core(self, method: str) -> InfluenceCore:
        # penalty_renormalized=False, sum-of-losses objectives (scikit-learn's Ridge, LogisticRegression): no renormalisation term
        try:
            return InfluenceCore(self._core_model, self._theta, self._x_core, self.y, self.sample_weight, self.l2, method, *self._args,
                                 self._renormalized, **self._approx)
        except SingularHessianError as exc:
            if not self.is_network:
                raise
            why = ("the exact Hessian is indefinite or singular at these parameters (use curvature='gauss-newton', or a damping "
                   "above its most negative eigenvalue)" if self.curvature == "hessian" else
                   "the Gauss-Newton matrix is singular: hidden units that are dead, saturated or duplicates of each other leave "
                   "flat directions along their unpenalised biases and outgoing weights (use damping > 0; the default 'auto' is "
                   "0.1 tr(G) / p)")
            raise SingularHessianError(f"{why}. Core: {exc}") from None

    def _at_optimum(self) -> bool:
        """Whether theta minimises the objective up to rounding: max |gradient| <= OPTIMUM_TOL,
        or else (the gradient's size depends on the features' units: a column in other units
        scales its entry) the Newton decrement g^T H^-1 g, the same in any units, is at most
        OPTIMUM_DECREMENT_RTOL (1 + |L_w|)."""
        core = self._core
        if core.grad_norm <= OPTIMUM_TOL:
            return True
        try:
            decrement = core.newton_decrement()
        except SingularHessianError:
            return False
        return decrement <= OPTIMUM_DECREMENT_RTOL * (1.0 + abs(core.objective))

    # -- basic facts ------------------------------------------------------------------------
    @property
    def n_params(self) -> int:  # type: ignore[override]  # the model's p (an attribute of GradientInfluence)
        """p, the number of parameters (int): the size of ``model.theta_``."""
        return self._theta.size

    @property
    def grad_norm(self) -> float:
        """``max |grad L_w(theta)|`` on the training data (float): ~0 at the optimum."""
        return self._core.grad_norm

    # -- parameters ---------------------------------------------------------------------------
    def params(self, idx=None) -> np.ndarray:
        """I(z_m) for all training points, or the rows ``idx``.

        I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W, the derivative of the
        fitted parameters with respect to the weight w_m (with ``damping``, (H + damping I)
        replaces H). Removing point m changes theta by about -w_m I(z_m). Koh & Liang's I_up
        equals W * I when l2 = 0.

        Parameters
        ----------
        idx : array_like of int or bool, optional
            Training points (indices, or a boolean mask of length n); None (the default): all.

        Returns
        -------
        ndarray of shape (n, p) or (len(idx), p)
            Row m is I(z_m), flattened as ``model.theta_``.

        Raises
        ------
        InputError
            If ``idx`` is out of range or selects nothing, or the result cannot fit in memory
            (the message names ``idx``).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> P = inf.params()
        >>> P.shape, inf.params(idx=[3, 7]).shape
        ((569, 31), (2, 31))

        Chained with the gradient of a test loss it gives the score matrix:

        >>> np.allclose(inf.loss_grads(X[:2], y[:2]) @ P.T, inf.on_loss(X[:2], y[:2]))
        True
        """
        if idx is None:
            check_output_fits((self.n_samples, self.n_params), 8, "idx", "pass idx= for a subset of training points")
            return self._checked(self._core_for(self.n_samples).params())
        rows = [int(i) for i in as_indices(idx, self.n_samples)]
        return self._checked(self._core_for(len(rows)).params(rows))  # gathered in the core

    def new_point(self, x, y) -> np.ndarray:
        """I(z) of a point (or points) not in the training set: the derivative of theta with
        respect to adding it with weight eps at eps = 0.

        ``x`` of shape (d,) with scalar ``y`` (or its t targets, multi-output) gives (p,); ``x``
        of shape (m, d) with ``y`` of shape (m,) (or (m, t)) gives (m, p).

        Parameters
        ----------
        x : array_like of shape (d,) or (m, d)
            The new point's features, or m points' as rows.
        y : float, array_like of shape (t,), (m,) or (m, t)
            Their targets.

        Returns
        -------
        ndarray of shape (p,) or (m, p)
            I(z) of each point.

        Raises
        ------
        InputError
            If ``x`` or ``y`` has a bad shape or value (the message names it).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        Adding a copy of a training point is the same as raising its weight:

        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> I = inf.new_point(X[0], y[0])
        >>> I.shape, np.allclose(I, inf.params([0])[0])
        ((31,), True)
        >>> inf.new_point(X[:3] + 0.1, y[:3]).shape
        (3, 31)
        """
        single = np.ndim(x) == 1
        X = as_matrix(np.atleast_2d(x) if single else x, "x", self._d)
        if single and np.size(y) == 1:  # one point: a scalar target
            y = np.reshape(y, (1,))
        elif single and np.ndim(y) == 1:  # or the vector of its t targets (multi-output)
            y = np.reshape(y, (1, -1))
        yv = self.model.check_targets(y, X.shape[0])
        out = self._checked(self._core_for(X.shape[0]).params_of(X, yv, names=("x", "y")))
        return out[0] if single else out

    # -- functions of theta ------------------------------------------------------------------
    def loss_grads(self, X_test, y_test) -> np.ndarray:
        """Gradients of the loss at each test point, grad l(z_t; theta*).

        Pass them (or combinations of them) to :meth:`on`, :meth:`top_k_on` or
        :meth:`solve_queries`.

        Parameters
        ----------
        X_test : array_like of shape (q, d)
            Test features.
        y_test : array_like of shape (q,) or (q, t)
            Test targets (t outputs for multi-output models).

        Returns
        -------
        ndarray of shape (q, p)
            Row t is grad l(z_t; theta*), flattened as ``model.theta_``.

        Raises
        ------
        InputError
            If the shapes do not match or a target is invalid for the model (the message
            names the argument).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> G = inf.loss_grads(X[:3], y[:3])
        >>> G.shape
        (3, 31)
        >>> np.allclose(inf.on(G), inf.on_loss(X[:3], y[:3]))
        True
        """
        Xt = as_matrix(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, Xt.shape[0], name="y_test")  # (q,), or (q, t) for t outputs
        return self._core.loss_grads(Xt, yt, names=("X_test", "y_test"))

    def on_loss(self, X_test, y_test, idx=None) -> np.ndarray:
        """Score matrix S of shape (q, n): S[t, m] = grad l(z_t) . I(z_m), the influence of
        training point m on the loss at test point t.

        Negative: m helps t (upweighting it lowers the loss at t); removing an unweighted point
        changes the loss at t by about -S[t, m]. With ``idx``, only those training points:
        (q, len(idx)). For large n prefer :meth:`top_k`.

        Parameters
        ----------
        X_test : array_like of shape (q, d) or sparse matrix
            Test features.
        y_test : array_like of shape (q,) or (q, t)
            Test targets.
        idx : array_like of int or bool, optional
            Training points to score (indices, or a boolean mask of length n); None (the
            default): all.

        Returns
        -------
        ndarray of shape (q, n) or (q, len(idx))
            The scores (float32 when the training features are float32).

        Raises
        ------
        InputError
            If the shapes do not match, a target is invalid, ``idx`` is out of range, or the
            (q, n) result cannot fit in memory (the message names the argument).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> S = inf.on_loss(X[:2], y[:2])
        >>> S.shape, inf.on_loss(X[:2], y[:2], idx=[3, 7]).shape
        ((2, 569), (2, 2))

        Upweighting the most helpful training point lowers the test loss:

        >>> bool(S[0].min() < 0), int(S[0].argmin()) == int(inf.top_k(X[:1], y[:1], k=1).helpful_idx[0, 0])
        (True, True)
        """
        return self._scores(self.loss_grads(X_test, y_test), idx, "X_test")

    def on_prediction(self, X_test, kind: str = "mean", idx=None) -> np.ndarray:
        """Influence of every training point on the predictions at ``X_test``.

        ``kind="mean"``: the mean response (regression value, probability of class 1, Poisson
        rate, or every class probability); ``kind="linear"``: the linear predictor(s).
        Shape (q, n), or (q, k, n) for multinomial.

        Parameters
        ----------
        X_test : array_like of shape (q, d) or sparse matrix
            The points whose predictions are differentiated.
        kind : {"mean", "linear"}, default "mean"
            The mean response or the linear predictor(s).
        idx : array_like of int or bool, optional
            Training points to score; None (the default): all.

        Returns
        -------
        ndarray of shape (q, n) or (q, k, n)
            Entry [t, m] (or [t, c, m] for output c of k) is the derivative of the prediction
            at x_t with respect to w_m; (q, len(idx)) or (q, k, len(idx)) with ``idx``.

        Raises
        ------
        InputError
            If ``kind`` is not "mean" or "linear", ``X_test`` has the wrong columns, ``idx`` is
            out of range, or the result cannot fit in memory.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> inf.on_prediction(X[:2]).shape
        (2, 569)

        The linear predictor of a binary logistic regression is x . coef + intercept, whose
        gradient in theta = [coef..., intercept] is [x, 1]:

        >>> eta = inf.on_prediction(X[:1], kind="linear")
        >>> np.allclose(eta[0], inf.on(np.append(X[0], 1.0)))
        True
        """
        if kind not in ("mean", "linear"):
            raise InputError(f"kind: expected 'mean' or 'linear', got {kind!r}")
        Xt = as_points(X_test, "X_test", self._d)
        k = self._core_model.n_outputs
        G = self._core_model.prediction_grads(self._theta, Xt, kind, names=("X_test", "y_test"))
        S = self._scores(G, idx, "X_test")
        return S if k == 1 else S.reshape(n_rows(Xt), k, S.shape[1])

    def on_mean_loss(self, X_test, y_test, idx=None) -> np.ndarray:
        """Influence of every training point (or the rows ``idx``) on the mean loss over the
        test points: (n,).

        One solve, whatever the number of test points. Negative: upweighting the point lowers
        the mean test loss.

        Parameters
        ----------
        X_test : array_like of shape (q, d)
            Test features.
        y_test : array_like of shape (q,) or (q, t)
            Test targets.
        idx : array_like of int or bool, optional
            Training points to score; None (the default): all.

        Returns
        -------
        ndarray of shape (n,) or (len(idx),)
            The influence on the mean test loss.

        Raises
        ------
        InputError
            If the shapes do not match, a target is invalid or ``idx`` is out of range.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> s = inf.on_mean_loss(X[:50], y[:50])
        >>> s.shape, np.allclose(s, inf.on_loss(X[:50], y[:50]).mean(axis=0))
        ((569,), True)
        """
        return self.on(self.loss_grads(X_test, y_test).mean(axis=0), idx)

    def on_loss_gap(self, X_a, y_a, X_b, y_b, idx=None) -> np.ndarray:
        """Influence on the gap between two groups' mean test losses, mean loss(a) - mean
        loss(b) (e.g. a fairness gap): (n,).

        Negative: upweighting the point narrows a gap in which a is worse off (or widens one
        where b is). One solve.

        Parameters
        ----------
        X_a : array_like of shape (q_a, d)
            Group a's test features.
        y_a : array_like of shape (q_a,) or (q_a, t)
            Group a's test targets.
        X_b : array_like of shape (q_b, d)
            Group b's test features.
        y_b : array_like of shape (q_b,) or (q_b, t)
            Group b's test targets.
        idx : array_like of int or bool, optional
            Training points to score; None (the default): all.

        Returns
        -------
        ndarray of shape (n,) or (len(idx),)
            The influence on mean loss(a) - mean loss(b).

        Raises
        ------
        InputError
            If the shapes do not match, a target is invalid or ``idx`` is out of range.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> a, b = y == 0, y == 1
        >>> gap = inf.on_loss_gap(X[a], y[a], X[b], y[b])
        >>> gap.shape
        (569,)
        >>> np.allclose(gap, inf.on_mean_loss(X[a], y[a]) - inf.on_mean_loss(X[b], y[b]))
        True
        """
        g = self.loss_grads(X_a, y_a).mean(axis=0) - self.loss_grads(X_b, y_b).mean(axis=0)
        return self.on(g, idx)

    def top_k(self, X_test, y_test, k: int = 10, *, prefilter: str | None = None, recall: float = 0.95,
              recall_queries: int = 10, candidates: int | None = None, query_rank: int | None = None) -> TopK:
        """For each test point, the ``k`` training points whose upweighting most lowers (helpful)
        and most raises (harmful) its loss.

        Streamed over the training rows: the (q, n) score matrix is never held, so n can be far
        larger than memory. Helpful scores are the most negative entries of :meth:`on_loss`,
        harmful ones the most positive.

        Parameters
        ----------
        X_test : array_like of shape (q, d) or sparse matrix
            Test features.
        y_test : array_like of shape (q,) or (q, t)
            Test targets.
        k : int, default 10
            How many points per end.
        prefilter : {"last-layer"}, optional
            Two-stage top-k for networks with a hidden layer; see :meth:`top_k_on`.
        recall : float, default 0.95
            With ``prefilter``: the recall@k to reach on the sampled queries; see
            :meth:`top_k_on`.
        recall_queries : int, default 10
            With ``prefilter``: how many queries are also scored exhaustively.
        candidates : int, optional
            With ``prefilter``: fixes the stage-1 candidates per query and end (c k).
        query_rank : int, optional
            ``query_rank=r``: query batching (networks), see :class:`SolvedQueries`.

        Returns
        -------
        TopK
            ``helpful_idx`` / ``helpful`` and ``harmful_idx`` / ``harmful``, each (q, k).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer, the shapes do not match, or a prefilter
            setting is bad (the message names the argument).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> top = inf.top_k(X[:2], y[:2], k=3)
        >>> top.helpful_idx.shape
        (2, 3)
        >>> bool((top.helpful < 0).all() and (top.harmful > 0).all())
        True
        >>> S = inf.on_loss(X[:2], y[:2])
        >>> np.allclose(top.helpful, np.sort(S, axis=1)[:, :3])
        True
        """
        return self.top_k_on(self.loss_grads(X_test, y_test), k, prefilter=prefilter, recall=recall,
                             recall_queries=recall_queries, candidates=candidates, query_rank=query_rank)

    def top_k_on(self, grad_f, k: int = 10, *, query_rank: int | None = None, prefilter: str | None = None,
                 recall: float = 0.95, recall_queries: int = 10, candidates: int | None = None) -> TopK:
        """The ``k`` most helpful and most harmful training points for functions f given their
        gradients (r, p) at theta*, streamed over the training rows.

        The (r, n) score matrix is never held. ``prefilter="last-layer"`` (networks with a hidden layer; DESIGN-networks.md section 6)
        answers in two stages, for n so large that exact scoring of every row is the cost.
        Stage 1 scores every training row by the network's last layer alone (the exact damped
        influence of Theta_L with the layers below frozen, :class:`upweight.networks.LastLayer`:
        a forward pass per row) and keeps the best ``c k`` of each end per query; stage 2
        rescores those candidates exactly, so every reported score is exact and the result is
        exact among the candidates (a query's candidates are both ends' 2 c k: the layers stage 1
        leaves out can flip a score's sign). ``recall_queries`` queries (seeded sample) are also
        scored exhaustively; the smallest c k in k, 2k, 4k, ... whose recall@k on them (the
        fraction of the true top-k among the candidates, the worse of the two ends) is at least
        ``recall`` is used (``candidates=`` fixes c k instead). The result's ``recall`` and ``candidates``
        report both; the sampled queries' own answers are the exhaustive ones.

        ``query_rank=r``: query batching (networks), see :class:`SolvedQueries`; not with a
        prefilter (its exact stage scores few rows).

        Parameters
        ----------
        grad_f : array_like of shape (r, p) or (p,)
            The gradients of the functions f_j at the fitted parameters, one per row.
        k : int, default 10
            How many points per end.
        query_rank : int, optional
            The rank r of query batching (networks); not with ``prefilter``.
        prefilter : {"last-layer"}, optional
            Two-stage top-k as above; None (the default): exact scoring of every row.
        recall : float, default 0.95
            With ``prefilter``: the recall@k, in (0, 1], the candidates must reach on the
            sampled queries.
        recall_queries : int, default 10
            With ``prefilter``: how many queries (a seeded sample) are also scored
            exhaustively to measure the recall.
        candidates : int, optional
            With ``prefilter``: c k, the candidates per query and end, fixed instead of grown.

        Returns
        -------
        TopK
            ``helpful_idx`` / ``helpful`` and ``harmful_idx`` / ``harmful``, each (r, k); with
            a prefilter also ``recall`` and ``candidates``.

        Raises
        ------
        InputError
            If ``k`` is not a positive integer, ``grad_f`` does not have p entries per row, a
            prefilter setting is bad, ``prefilter`` is used on a model without a hidden layer,
            or with ``query_rank`` (the message names the argument).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> g = inf.loss_grads(X[:3], y[:3]).mean(axis=0)
        >>> top = inf.top_k_on(g, k=5)
        >>> top.helpful_idx.shape, bool((top.helpful < 0).all())
        ((1, 5), True)

        On a small network, the two-stage prefilter finds the exact top-k here:

        >>> net = uw.MLPClassifier(hidden=(4,), random_state=0).fit(X[:100], y[:100])
        >>> inf = uw.Influence(net, X[:100], y[:100])
        >>> G = inf.loss_grads(X[100:103], y[100:103])
        >>> fast = inf.top_k_on(G, k=3, prefilter="last-layer")
        >>> round(fast.recall, 4), fast.candidates
        (1.0, 48)
        >>> np.array_equal(fast.helpful_idx, inf.top_k_on(G, k=3).helpful_idx)
        True
        """
        if prefilter is None:
            return super().top_k_on(grad_f, k, query_rank=query_rank)
        if query_rank is not None:
            raise InputError("query_rank: not with prefilter (stage 2 rescores a few candidates per query: nothing to compress)")
        return self._prefiltered(grad_f, _check_k(k), *check_prefilter(prefilter, recall, recall_queries, candidates))

    def _prefiltered(self, grad_f, k: int, target: float, n_sampled: int, fixed: int | None) -> TopK:
        G, _ = self._grad_matrix(grad_f)
        stage1, (a, b) = self._last_layer()
        n, q = self.n_samples, G.shape[0]
        k = min(k, n)
        sampled = sampled_queries(q, n_sampled)
        exact = super().top_k_on(G[sampled], k) if sampled.size else None
        kept = min(n, fixed or FIRST_MULTIPLE * k)
        while True:
            first = stage1.top_k_on(G[:, a:b], kept)
            for ck in [fixed] if fixed else candidate_counts(k, kept):
                both = np.hstack([first.helpful_idx[sampled, :ck], first.harmful_idx[sampled, :ck]])
                got = None if exact is None else min(recall_at(exact.helpful_idx, both), recall_at(exact.harmful_idx, both))
                if fixed or got is None or got >= target or ck == n:
                    return self._rescored(G, k, first, ck, exact, sampled, got)
            kept = min(n, 8 * kept)

    def _rescored(self, G, k: int, first: TopK, ck: int, exact: TopK | None, sampled: np.ndarray, got: float | None) -> TopK:
        """Stage 2: each query's ``ck`` stage-1 candidates of each end scored exactly, a few
        queries at a time (RESCORE_GROUP)."""
        solved = self.solve_queries(G)
        out = [np.empty((G.shape[0], k), dtype=dt) for dt in (np.intp, np.float64, np.intp, np.float64)]
        todo = np.setdiff1d(np.arange(G.shape[0]), sampled if exact is not None else [])
        for j0 in range(0, todo.size, RESCORE_GROUP):
            js = todo[j0:j0 + RESCORE_GROUP]
            cands = [np.concatenate([first.helpful_idx[j, :ck], first.harmful_idx[j, :ck]]) for j in js]
            rows = np.unique(np.concatenate(cands))
            scores = solved._only(js).scores(rows)
            for o, part in zip(out, best_among(scores, rows, cands, k), strict=True):
                o[js] = part
        if exact is not None:  # the sampled queries were scored exhaustively: their exact answers
            for o, part in zip(out, exact.as_tuple(), strict=True):
                o[sampled] = part
        return TopK(out[0], out[1], out[2], out[3], recall=got, candidates=ck)

    def _last_layer(self) -> tuple[Influence, tuple[int, int]]:
        """Stage 1's influence: the last layer of this network at the same parameters, data,
        l2 and damping (built once)."""
        if not (self.is_network and len(getattr(self.model, "hidden", ()))):
            raise InputError("prefilter: needs a network with a hidden layer (stage 1 scores by its last layer); "
                             "without one, the exact top_k costs the same")
        if getattr(self, "_stage1", None) is None:
            last = LastLayer(self.model, self._theta, l2=self.l2)
            self._stage1 = (Influence(last, self._x_core, self.y, self.sample_weight, damping=self.damping,
                                      progress=self._args[-1]), last.range)
        return self._stage1

    def leverage(self) -> np.ndarray:
        """Hat values of the training rows, (w_m a_m / W) z_m^T H^{-1} z_m with a_m the Hessian
        weight of the loss in eta (single-output GLMs; :func:`upweight.diagnostics`).

        z_m is the row with a 1 appended for the intercept. For least squares with l2 = 0 they
        are the classic hat values and sum to p.

        Returns
        -------
        ndarray of shape (n,)
            The leverage of each training point.

        Raises
        ------
        InputError
            If the model has more than one output (multinomial; the message names ``model``).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> inf = uw.Influence(model, X, y)
        >>> h = inf.leverage()
        >>> h.shape, round(float(h.sum()), 4)
        ((40,), 4.0)
        """
        return self._core.leverage()

    # -- leaving points out (one Newton step) --------------------------------------------------
    # Influence is the tangent of the response at eps = 0; these answer eps = -w_m itself: one
    # Newton step from theta* on the objective without the point(s), the approximate
    # leave-one-out of statistics (Rad & Maleki 2020; Wilson, Kasy & Mackey 2020's "NS"). Exact
    # for squared loss; the Gauss-Newton version for networks (their outputs linearised at theta*).
    def _leave_out_core(self) -> InfluenceCore:
        """A core for leave-out queries: the direct one when built (its matrix is reused), else
        the policy's choice for n right-hand sides (the curvature is formed once either way)."""
        self._check_files()
        return self._cores.get("direct") or self._core_for(self.n_samples)

    def loo_params(self, idx=None) -> np.ndarray:
        """theta_(-m) - theta*, what leaving training point m out would do to the parameters,
        by one Newton step from theta* on the objective without m.

        Weights are respected: the point's weight w_m goes, and the weighted mean renormalises.
        Exact for squared loss; for networks the Gauss-Newton version (the outputs linearised at
        theta*). Compare ``-w_m * params()``, its first-order (influence) approximation. Cost:
        one factorisation of the curvature (an eigendecomposition when the weights differ and
        l2 > 0), then O(k p^2) per point; with ``solver="cg"`` and p > 4096, no p x p matrix:
        one CG solve of the left-out curvature per point.

        Parameters
        ----------
        idx : array_like of int or bool, optional
            Training points to leave out, one at a time; None (the default): all.

        Returns
        -------
        ndarray of shape (n, p) or (len(idx), p)
            Row m is theta_(-m) - theta*.

        Raises
        ------
        InputError
            If ``idx`` is out of range, the result cannot fit in memory, or the influence uses
            an approximate curvature (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``), which leave-out estimates refuse.
        SingularHessianError
            If leaving a point out leaves an objective with no unique minimiser (leverage 1:
            the other points do not determine every parameter).

        Examples
        --------
        For squared loss one Newton step is the exact refit:

        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> inf = uw.Influence(model, X, y)
        >>> D = inf.loo_params()
        >>> D.shape
        (40, 4)
        >>> refit = uw.LinearRegression().fit(X[1:], y[1:])
        >>> np.allclose(D[0], refit.theta_ - model.theta_)
        True
        """
        rows = self._rows(idx)
        n_out = self.n_samples if rows is None else len(rows)
        check_output_fits((n_out, self.n_params), 8, "idx", "pass idx= for a subset of training points")
        return self._leave_out_core().loo_params(rows)

    def loo_losses(self, idx=None, with_training: bool = False):
        """Each training point's loss at its own leave-one-out parameters, l(z_m; theta_(-m)).

        The held-out losses of approximate leave-one-out cross-validation
        (:func:`upweight.approximate_loo_cv`), by one Newton step each (see :meth:`loo_params`).

        Parameters
        ----------
        idx : array_like of int or bool, optional
            Training points; None (the default): all.
        with_training : bool, default False
            Also return the same points' losses at theta*.

        Returns
        -------
        held_out : ndarray of shape (n,) or (len(idx),)
            l(z_m; theta_(-m)).
        training : ndarray of shape (n,) or (len(idx),)
            l(z_m; theta*), only with ``with_training=True`` (the result is then the pair).

        Raises
        ------
        InputError
            If ``idx`` is out of range, or the influence uses an approximate curvature
            (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``).
        SingularHessianError
            If leaving a point out leaves an objective with no unique minimiser (leverage 1:
            the other points do not determine every parameter).

        Examples
        --------
        For least squares the held-out residual is the classic e_m / (1 - h_m):

        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> inf = uw.Influence(model, X, y)
        >>> held_out, training = inf.loo_losses(with_training=True)
        >>> residuals = y - model.predict(X)
        >>> np.allclose(training, residuals ** 2)
        True
        >>> np.allclose(held_out, (residuals / (1 - inf.leverage())) ** 2)
        True
        """
        both = self._leave_out_core().loo_self_losses(self._rows(idx))
        held_out = np.ascontiguousarray(both[:, 0])
        return (held_out, np.ascontiguousarray(both[:, 1])) if with_training else held_out

    def loo_on_loss(self, X_test, y_test, idx=None) -> np.ndarray:
        """Predicted change of each test loss when each training point is left out,
        l(z_t; theta_(-m)) - l(z_t; theta*).

        One Newton step per training point (see :meth:`loo_params`); the loss is evaluated at
        the stepped parameters, not linearised. Positive: m helps t (without it, t's loss
        rises); about ``-w_m * on_loss(...)`` to first order. For large n use
        :meth:`loo_top_k`.

        Parameters
        ----------
        X_test : array_like of shape (q, d) or sparse matrix
            Test features.
        y_test : array_like of shape (q,) or (q, t)
            Test targets.
        idx : array_like of int or bool, optional
            Training points to leave out, one at a time; None (the default): all.

        Returns
        -------
        ndarray of shape (q, n) or (q, len(idx))
            The predicted changes of the test losses.

        Raises
        ------
        InputError
            If the shapes do not match, a target is invalid, ``idx`` is out of range, the
            result cannot fit in memory, or the influence uses an approximate curvature
            (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``).
        SingularHessianError
            If leaving a point out leaves an objective with no unique minimiser (leverage 1:
            the other points do not determine every parameter).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> inf = uw.Influence(model, X, y)
        >>> X_test, y_test = X[:2] + 0.1, y[:2]
        >>> L = inf.loo_on_loss(X_test, y_test)
        >>> L.shape
        (2, 40)

        Exact for squared loss, against a refit without point 0:

        >>> refit = uw.LinearRegression().fit(X[1:], y[1:])
        >>> loss = lambda m: (y_test - m.predict(X_test)) ** 2
        >>> np.allclose(L[:, 0], loss(refit) - loss(model))
        True
        """
        Xt = as_points(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, n_rows(Xt), name="y_test")
        rows = self._rows(idx)
        check_output_fits((n_rows(Xt), self.n_samples if rows is None else len(rows)), 8, "X_test",
                          "use loo_top_k (streamed), fewer test points at a time, or idx=")
        return self._leave_out_core().loo_on(Xt, yt, "loss", rows, names=("X_test", "y_test"))

    def loo_on_prediction(self, X_test, kind: str = "mean", idx=None) -> np.ndarray:
        """Predicted change of the predictions at ``X_test`` when each training point is left
        out.

        One Newton step per training point (see :meth:`loo_params`), ``kind`` as in
        :meth:`on_prediction`, evaluated at the stepped parameters.

        Parameters
        ----------
        X_test : array_like of shape (q, d) or sparse matrix
            The points whose predictions change.
        kind : {"mean", "linear"}, default "mean"
            The mean response or the linear predictor(s).
        idx : array_like of int or bool, optional
            Training points to leave out, one at a time; None (the default): all.

        Returns
        -------
        ndarray of shape (q, n) or (q, k, n)
            The changes (for k outputs, (q, k, n)); (q, len(idx)) or (q, k, len(idx)) with
            ``idx``.

        Raises
        ------
        InputError
            If ``kind`` is not "mean" or "linear", ``X_test`` has the wrong columns, ``idx`` is
            out of range, the result cannot fit in memory, or the influence uses an approximate
            curvature (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``).
        SingularHessianError
            If leaving a point out leaves an objective with no unique minimiser (leverage 1:
            the other points do not determine every parameter).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> inf = uw.Influence(model, X, y)
        >>> P = inf.loo_on_prediction(X[:2] + 0.1)
        >>> P.shape
        (2, 40)
        >>> refit = uw.LinearRegression().fit(X[1:], y[1:])
        >>> np.allclose(P[:, 0], refit.predict(X[:2] + 0.1) - model.predict(X[:2] + 0.1))
        True
        """
        if kind not in ("mean", "linear"):
            raise InputError(f"kind: expected 'mean' or 'linear', got {kind!r}")
        Xt = as_points(X_test, "X_test", self._d)
        rows = self._rows(idx)
        k = self._core_model.n_outputs
        q = n_rows(Xt)
        check_output_fits((q * k, self.n_samples if rows is None else len(rows)), 8, "X_test",
                          "fewer test points at a time, or idx=")
        S = self._leave_out_core().loo_on(Xt, None, kind, rows, names=("X_test", "y_test"))
        return S if k == 1 else S.reshape(q, k, S.shape[1])

    def loo_top_k(self, X_test, y_test, k: int = 10, rows: tuple[int, int] | None = None) -> LooTopK:
        """For each test point, the ``k`` training points whose removal would most raise its
        loss (``helpful``, largest change first) and most lower it (``harmful``, most negative
        first), by one Newton step each.

        Streamed over the training rows (or the segment ``rows = (start, stop)``): the (q, n)
        matrix is never held. The values are predicted changes of the test loss on removal
        (positive for helpful points: note the sign is the opposite of :meth:`top_k`'s scores,
        which are derivatives in the weight).

        Parameters
        ----------
        X_test : array_like of shape (q, d) or sparse matrix
            Test features.
        y_test : array_like of shape (q,) or (q, t)
            Test targets.
        k : int, default 10
            How many points per end.
        rows : tuple of (int, int), optional
            Only the training rows ``start`` to ``stop`` (indices still counted from the first
            training row; combine segments with :meth:`LooTopK.merge`); None (the default):
            all.

        Returns
        -------
        LooTopK
            ``helpful_idx`` / ``helpful`` and ``harmful_idx`` / ``harmful``, each (q, k).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer, the shapes do not match, ``rows`` is not a
            non-empty segment of the training rows, or the influence uses an approximate
            curvature (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``).
        SingularHessianError
            If leaving a point out leaves an objective with no unique minimiser (leverage 1:
            the other points do not determine every parameter).

        Examples
        --------
        >>> X, y, _ = uw.load_breast_cancer()
        >>> X = (X - X.mean(0)) / X.std(0)
        >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
        >>> top = inf.loo_top_k(X[:2], y[:2], k=3)
        >>> bool((top.helpful > 0).all() and (top.harmful < 0).all())
        True
        >>> L = inf.loo_on_loss(X[:2], y[:2])
        >>> np.allclose(top.helpful, -np.sort(-L, axis=1)[:, :3])
        True
        """
        k = _check_k(k)
        Xt = as_points(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, n_rows(Xt), name="y_test")
        segment = None if rows is None else _segment(rows)
        top = TopK._from_core(self._leave_out_core().loo_top_k(Xt, yt, k, segment, names=("X_test", "y_test")))
        return LooTopK(*top.as_tuple())

    def leave_out_params(self, groups) -> np.ndarray:
        """theta_(-G) - theta* for leaving each group of training points out together, by one
        Newton step with a rank-``|G|`` update (exact for squared loss): (n_groups, p).

        Parameters
        ----------
        groups : sequence of array_like, or array_like of shape (n,)
            A sequence of index arrays (or boolean masks), or one label per training point (an
            array of length n: one group per distinct label, in ``np.unique`` order).

        Returns
        -------
        ndarray of shape (n_groups, p)
            Row j is theta_(-G_j) - theta*.

        Raises
        ------
        InputError
            If a group is empty, out of range or repeats an index (the message names
            ``groups[j]``), or the influence uses an approximate curvature (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``).
        SingularHessianError
            If leaving a group out leaves an objective with no unique minimiser.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> inf = uw.Influence(model, X, y)
        >>> D = inf.leave_out_params([[0, 1, 2], [5, 6]])
        >>> D.shape
        (2, 4)
        >>> refit = uw.LinearRegression().fit(X[3:], y[3:])
        >>> np.allclose(D[0], refit.theta_ - model.theta_)
        True

        One label per training point gives one group per label:

        >>> inf.leave_out_params(np.arange(40) % 4).shape
        (4, 4)
        """
        return self._leave_out_core().leave_out(_groups(groups, self.n_samples))[0]

    def leave_out_on_loss(self, X_test, y_test, groups) -> np.ndarray:
        """Predicted change of each test loss when each group of training points is left out
        together (see :meth:`leave_out_params`): (q, n_groups).

        The loss is evaluated at the stepped parameters; positive: the group helps the test
        point (without it, its loss rises).

        Parameters
        ----------
        X_test : array_like of shape (q, d) or sparse matrix
            Test features.
        y_test : array_like of shape (q,) or (q, t)
            Test targets.
        groups : sequence of array_like, or array_like of shape (n,)
            A sequence of index arrays (or boolean masks), or one label per training point.

        Returns
        -------
        ndarray of shape (q, n_groups)
            l(z_t; theta_(-G_j)) - l(z_t; theta*).

        Raises
        ------
        InputError
            If the shapes do not match, a group is bad (empty, out of range, repeated
            indices), or the influence uses an approximate curvature (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``).
        SingularHessianError
            If leaving a group out leaves an objective with no unique minimiser.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 3))
        >>> y = X @ [1.0, -2.0, 0.5] + rng.normal(size=40)
        >>> model = uw.LinearRegression().fit(X, y)
        >>> inf = uw.Influence(model, X, y)
        >>> X_test, y_test = X[:2] + 0.1, y[:2]
        >>> L = inf.leave_out_on_loss(X_test, y_test, [[0, 1, 2], [5, 6]])
        >>> L.shape
        (2, 2)
        >>> refit = uw.LinearRegression().fit(X[3:], y[3:])
        >>> loss = lambda m: (y_test - m.predict(X_test)) ** 2
        >>> np.allclose(L[:, 0], loss(refit) - loss(model))
        True
        """
        Xt = as_points(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, n_rows(Xt), name="y_test")
        out = self._leave_out_core().leave_out(_groups(groups, self.n_samples), Xt, yt, names=("X_test", "y_test"))[1]
        assert out is not None  # test points were given
        return out

    def __repr__(self) -> str:
        return f"Influence({self.model!r}, n={self.n_samples}, p={self.n_params}, solver={self.solver!r})"


# help(), IDEs and the API reference show __init__'s parameters, not those of __new__ (which only
# sends a training set on Dask to upweight.dask)
_init = inspect.signature(Influence.__init__)
Influence.__signature__ = _init.replace(parameters=list(_init.parameters.values())[1:])  # type: ignore[attr-defined]


class GradientInfluence(_Queries):
    """Influence of training points from their per-example gradients (deep models, DESIGN.md
    sections 3-4).

    Users of PyTorch or JAX models compute per-example training gradients g_i (often randomly
    projected to a few thousand dimensions, as TRAK and LoGra do) and hand them over as an (n, p)
    array, a float32 array, or a ``.npy`` file. upweight never imports a deep-learning framework.

    The curvature is either the empirical Fisher F = (1/W) sum_i w_i g_i g_i^T, built from the
    same gradients (streamed, in Rust), or an explicit Hessian. Damping (solve (F + damping I) v = g)
    is both a numerical safeguard and, for networks not trained to convergence, the modelling
    choice of Bae et al. (2022): damped Gauss-Newton influence approximates the proximal Bregman
    response. Scores keep the library's convention: S[t, m] = -g_t . (F + damping I)^{-1} g_m / W,
    negative when upweighting m lowers the loss at t.

    Parameters
    ----------
    train_grads : array_like of shape (n, p), str or memmap
        A float64 or float32 array, a ``.npy`` path or its memmap: row m is the gradient of the
        training loss of point m at the trained parameters.
    hessian : array_like of shape (p, p), optional
        A symmetric matrix to use as curvature instead of the Fisher.
    curvature : {"fisher"}, default "fisher"
        The empirical Fisher of ``train_grads`` (pass ``hessian=`` for another curvature).
    damping : float, default 0.0
        Solve (F + damping I) v = g instead of F v = g.
    sample_weight : array_like of shape (n,), optional
        The training weights w_i (None: all 1); W = sum_i w_i.
    solver : {"auto", "direct", "cg", "arnoldi"}, default "auto"
        As for :class:`upweight.Influence` ("auto" factors an explicit Hessian directly).
    rtol, atol : float, default 1e-10 and 0.0
        Conjugate-gradient stopping rule, as for :class:`upweight.Influence`.
    max_iter : int, default 1000
        Conjugate-gradient iteration limit.
    precondition : bool or str, default True
        CG's preconditioner, as for :class:`upweight.Influence`.
    on_unconverged : {"raise", "warn"}, default "raise"
        What to do when a CG solve misses its tolerance.
    progress : callable, optional
        ``progress(pass, rows_done, rows_total)``, as for :class:`upweight.Influence`.
    copy : bool, default False
        Keep a private copy of in-memory ``train_grads``. By default a dense array is read
        where it is, and a query raises ``InputError`` once it has changed, as for
        :class:`upweight.Influence`; ``sample_weight`` is always copied, and a ``.npy`` path is
        never (queries raise ``InputError`` once the file has changed).
    rank : int, optional
        ``solver="arnoldi"``: the eigenpairs of the curvature to keep (required with it).
    arnoldi_steps : int, optional
        ``solver="arnoldi"``: the Lanczos steps (default max(2 rank, rank + 20), at most p).
    arnoldi_inverse : {"projection", "exact"}, default "projection"
        ``solver="arnoldi"``: the solve within the top eigenspace, or the exact inverse of the
        rank-r curvature plus damping, as for :class:`upweight.Influence`.
    residuals : bool, default True
        ``solver="arnoldi"``: report each query's true relative residual in ``solve_info``;
        False skips it (NaN there).
    curvature_file : str or path-like, optional
        A file written by :meth:`save_curvature` (``solver="arnoldi"``) for the same
        gradients, weights, explicit Hessian and damping: the eigenpairs are loaded instead of
        computed. The file is checked against a SHA-256 of the gradients, weights and Hessian
        (one read of the gradients) and the core's header; any difference is refused naming
        ``curvature_file``.

    Attributes
    ----------
    train_grads : ndarray or str
        The training gradients, as kept.
    curvature : str
        "fisher", or "explicit" with ``hessian=``.
    n_params : int
        p, the gradients' length.
    solver : str
        The method the next query will use.
    solve_info : SolveInfo or None
        What the last query's solve did (None before the first query).

    Raises
    ------
    InputError
        If an argument has a bad shape or value (``hessian`` not (p, p), ``curvature`` other
        than "fisher", NaN in ``train_grads``, a ``curvature_file`` for other gradients...): the
        message names it.
    SingularHessianError
        If the curvature is singular (fewer gradients than p, or dependent ones, without
        damping).

    See Also
    --------
    Influence : influence of a fitted upweight model's training points.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> G = rng.normal(size=(50, 5))
    >>> inf = uw.GradientInfluence(G, damping=1e-3)
    >>> inf.n_samples, inf.n_params, inf.curvature
    (50, 5, 'fisher')
    >>> G_test = rng.normal(size=(2, 5))
    >>> S = inf.on_loss(G_test)
    >>> S.shape
    (2, 50)

    The scores are S[t, m] = -g_t . (F + damping I)^{-1} g_m / W with F = (1/W) sum_i w_i g_i g_i^T:

    >>> F = G.T @ G / 50
    >>> np.allclose(S, -G_test @ np.linalg.solve(F + 1e-3 * np.eye(5), G.T) / 50)
    True
    """

    def __init__(self, train_grads, *, hessian=None, curvature: str = "fisher", damping: float = 0.0,
                 sample_weight=None, solver: str = "auto", rtol: float = 1e-10, atol: float = 0.0,
                 max_iter: int = 1000, precondition: bool | str = True, on_unconverged: str = "raise", progress=None,
                 copy: bool = False, rank: int | None = None, arnoldi_steps: int | None = None, arnoldi_inverse: str = "projection",
                 residuals: bool = True, curvature_file=None):
        if curvature != "fisher":
            raise InputError(f"curvature: expected 'fisher' (or pass hessian=...), got {curvature!r}")
        G, n, p = training_features(train_grads, name="train_grads")
        self.train_grads, self._x_core = kept_features(G, train_grads, copy, "train_grads")
        self._watch(("train_grads", self.train_grads))
        self.n_params = p
        check_influence_solver(solver)
        self.on_unconverged = check_on_unconverged(on_unconverged)
        self.solve_info = None
        H = None
        if hessian is not None:
            H = as_matrix(hessian, "hessian")
            if H.shape != (p, p):
                raise InputError(f"hessian: has shape {H.shape}, expected ({p}, {p}) to match train_grads")
        self.curvature = "explicit" if H is not None else "fisher"
        self._w, self._H = kept(as_weights(sample_weight, n), sample_weight), H
        state = None if curvature_file is None else load_curvature(curvature_file, self._fingerprint(), "gradients")
        self._approx = approximation_args(solver, _saved_rank(state, solver, rank), arnoldi_steps, arnoldi_inverse,
                                          residuals) | {"state": state}
        self._args = solver_args(damping, rtol, atol, max_iter, precondition, progress)
        self._itemsize = score_itemsize(self.train_grads)
        self._start(QueryPolicy(solver, Work(n, p), explicit_hessian=H is not None))

    def _make_core(self, method: str) -> InfluenceCore:
        p = self.n_params
        return InfluenceCore(_core.Model.gradients(p), np.zeros(p), self._x_core, None, self._w, 0.0, method, *self._args,
                             True, self._H, names=("train_grads", "y"), **self._approx)

    def _fingerprint(self) -> np.ndarray:
        """What a saved curvature is checked against, in the place of a model's parameters: the
        SHA-256 of the gradients (read in row blocks), the weights and the explicit Hessian, as
        32 numbers."""
        digest = hashlib.sha256()
        G = self.train_grads
        if isinstance(self._x_core, _core.Watched):
            self._x_core.check()  # the gradients the saved curvature was computed from
        parts = G if isinstance(G, tuple) else (np.load(G, mmap_mode="r") if isinstance(G, str) else G,)
        for part in (*parts, self._w, self._H):
            if isinstance(part, np.ndarray) and part.ndim == 2:
                for start in range(0, part.shape[0], 4096):
                    digest.update(np.ascontiguousarray(part[start:start + 4096]).tobytes())
            elif part is not None:
                digest.update(np.ascontiguousarray(part).tobytes())
            digest.update(b"|")
        return np.frombuffer(digest.digest(), dtype=np.uint8).astype(np.float64)

    def save_curvature(self, path, force: bool = False) -> None:
        """Write Arnoldi's eigenpairs (``solver="arnoldi"``) to ``path``.

        They are written with what they were computed for (the gradients' fingerprint, damping,
        p, W) to ``path`` (.npz, atomically); reload them with ``curvature_file=path``.

        Parameters
        ----------
        path : str or path-like
            The .npz file to write.
        force : bool, default False
            Overwrite an existing file.

        Raises
        ------
        InputError
            For the exact solvers, which have nothing to save, or if ``path`` exists and
            ``force`` is False.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> G = rng.normal(size=(50, 5))
        >>> inf = uw.GradientInfluence(G, damping=1e-3, solver="arnoldi", rank=3)
        >>> inf.save_curvature("fisher.npz")
        >>> again = uw.GradientInfluence(G, damping=1e-3, solver="arnoldi", curvature_file="fisher.npz")
        >>> g = rng.normal(size=(2, 5))
        >>> np.allclose(again.on_loss(g), inf.on_loss(g))
        True
        """
        state = self._core.curvature_state()
        if state is None:
            raise InputError(f"save_curvature: solver {self.solver!r} is exact and prepares no approximate curvature "
                             "(solver='arnoldi' does)")
        save_curvature(state, self._fingerprint(), path, force)

    def _test_grads(self, test_grads):
        G, _ = self._grad_matrix(test_grads, "test_grads")
        return G

    def params(self, idx=None) -> np.ndarray:
        """I(z_m) = -(H + damping I)^{-1} g_m / W for all training points or the rows ``idx``.

        H is the empirical Fisher of the gradients, or the explicit ``hessian``.

        Parameters
        ----------
        idx : array_like of int or bool, optional
            Training points (indices, or a boolean mask of length n); None (the default): all.

        Returns
        -------
        ndarray of shape (n, p) or (len(idx), p)
            Row m is I(z_m).

        Raises
        ------
        InputError
            If ``idx`` is out of range or selects nothing, or the result cannot fit in memory.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> G = rng.normal(size=(50, 5))
        >>> inf = uw.GradientInfluence(G, damping=1e-3)
        >>> P = inf.params()
        >>> F = G.T @ G / 50
        >>> P.shape, np.allclose(P, -np.linalg.solve(F + 1e-3 * np.eye(5), G.T).T / 50)
        ((50, 5), True)
        """
        if idx is None:
            check_output_fits((self.n_samples, self.n_params), 8, "idx", "pass idx= for a subset of training points")
            return self._checked(self._core_for(self.n_samples).params())
        rows = self._rows(idx)
        return self._checked(self._core_for(len(rows)).params(rows))  # gathered in the core

    def on_loss(self, test_grads, idx=None) -> np.ndarray:
        """Score matrix (q, n) from test-loss gradients (q, p): S[t, m] < 0 means training point
        m helps test point t.

        S[t, m] = -g_t . (H + damping I)^{-1} g_m / W.

        Parameters
        ----------
        test_grads : array_like of shape (q, p)
            Gradients of the test losses at the trained parameters, one per row.
        idx : array_like of int or bool, optional
            Training points to score; None (the default): all.

        Returns
        -------
        ndarray of shape (q, n) or (q, len(idx))
            The scores (float32 when ``train_grads`` is float32).

        Raises
        ------
        InputError
            If ``test_grads`` does not have p columns or contains NaN or infinity, ``idx`` is
            out of range, or the result cannot fit in memory (the message names the argument).
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> G = rng.normal(size=(50, 5))
        >>> inf = uw.GradientInfluence(G, damping=1e-3)
        >>> S = inf.on_loss(rng.normal(size=(2, 5)))
        >>> S.shape
        (2, 50)

        Scoring the training gradients themselves gives self-influence on the diagonal:

        >>> np.allclose(np.diag(inf.on_loss(G)), inf.self_influence())
        True
        """
        return self._scores(self._test_grads(test_grads), idx, "test_grads")

    def top_k(self, test_grads, k: int = 10) -> TopK:
        """Per test gradient, the k most helpful and most harmful training points, streamed.

        The (q, n) score matrix is never held.

        Parameters
        ----------
        test_grads : array_like of shape (q, p)
            Gradients of the test losses at the trained parameters, one per row.
        k : int, default 10
            How many points per end.

        Returns
        -------
        TopK
            ``helpful_idx`` / ``helpful`` (most negative scores) and ``harmful_idx`` /
            ``harmful`` (most positive), each (q, k).

        Raises
        ------
        InputError
            If ``k`` is not a positive integer, or ``test_grads`` does not have p columns.
        ConvergenceError
            If a CG solve does not converge (with ``on_unconverged="raise"``).

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> G = rng.normal(size=(50, 5))
        >>> inf = uw.GradientInfluence(G, damping=1e-3)
        >>> G_test = rng.normal(size=(2, 5))
        >>> top = inf.top_k(G_test, k=3)
        >>> top.helpful_idx.shape, bool((top.helpful < 0).all())
        ((2, 3), True)
        >>> np.allclose(top.harmful, -np.sort(-inf.on_loss(G_test), axis=1)[:, :3])
        True
        """
        return self.top_k_on(self._test_grads(test_grads), k)

    def __repr__(self) -> str:
        return f"GradientInfluence(n={self.n_samples}, p={self.n_params}, curvature={self.curvature!r}, solver={self.solver!r})"
