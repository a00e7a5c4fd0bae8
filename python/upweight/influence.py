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
    n_rows,
    score_itemsize,
    solver_args,
    training_features,
)
from .errors import ConvergenceError, InputError, NotAtOptimumWarning, SingularHessianError
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
    """What the last solve did, one entry per right-hand side."""

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
        """r, the eigenpairs kept by ``solver="arnoldi"`` (None for the exact solvers)."""
        return None if self.eigenvalues is None else int(self.eigenvalues.size)

    @property
    def max_residual(self) -> float:
        return float(self.residuals.max()) if self.residuals.size else 0.0


@dataclass(frozen=True)
class TopK:
    """Per query, the k most helpful (most negative score) and most harmful (most positive)
    training points: index arrays and scores, each of shape (q, k). A prefiltered top-k
    (``top_k(..., prefilter=)``) also reports the ``recall`` it achieved (estimated on sampled
    queries; None when none were sampled) and the stage-1 ``candidates`` per query and end."""

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
        """The ``k`` best of this result and ``other`` (for the same queries, e.g. two segments of
        the training rows): helpful = smallest scores, harmful = largest, ties to the lower index,
        as one pass over all rows would choose."""
        return TopK._from_core(_core.merge_top_k(self._to_core(), other._to_core(), _check_k(k)))

    def _to_core(self):
        """As the core takes a top-k result: int64 indices, C-contiguous arrays."""
        hi, h, xi, x = self.as_tuple()
        f64, idx = (lambda a: np.ascontiguousarray(a, dtype=np.float64)), (lambda a: np.ascontiguousarray(a, dtype=np.int64))
        return idx(hi), f64(h), idx(xi), f64(x)

    def as_tuple(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(helpful_idx, helpful, harmful_idx, harmful)``."""
        return self.helpful_idx, self.helpful, self.harmful_idx, self.harmful


class LooTopK(TopK):
    """:meth:`Influence.loo_top_k`'s result: per test point, the ``k`` training points whose
    removal most raises (``helpful``, largest first) and most lowers (``harmful``, most negative
    first) its loss, with those predicted changes, each of shape (q, k)."""

    def merge(self, other: TopK, k: int) -> LooTopK:
        """The ``k`` best of this result and ``other`` (another leave-out top-k for the same test
        points, e.g. over another segment of the training rows), as one pass would choose."""
        if not isinstance(other, LooTopK):
            raise InputError("other: is not a leave-out top-k (loo_top_k); its scores have the opposite sign")
        neg = lambda t: TopK(t.helpful_idx, -t.helpful, t.harmful_idx, -t.harmful)  # noqa: E731
        m = TopK.merge(neg(self), neg(other), k)
        return LooTopK(m.helpful_idx, -m.helpful, m.harmful_idx, -m.harmful)


class SolvedQueries:
    """Query gradients solved once, to score the training rows segment by segment without
    solving again: :meth:`_Queries.solve_queries` makes it, :meth:`top_k` scores a segment. A
    long streamed run can so be cut into resumable pieces (``upweight score --resume``).

    With ``query_rank=r`` (query batching, networks) each solved query's layer blocks are kept
    as their best rank-r approximations (thin SVD): scoring a row then costs r (out + in + 1)
    per layer and query instead of out (in + 1), and the queries take q r (out + in + 1) numbers
    instead of q p. ``query_errors`` gives each query's relative error ||V - V_r||_F / ||V||_F
    (0 when r >= min(out, in + 1) for every layer: then the scores are the exact ones)."""

    def __init__(self, core: InfluenceCore, vc: np.ndarray | None, n_queries: int, itemsize: int = 8, factored=None):
        self._core, self._vc, self._factored = core, vc, factored
        self.n_queries = n_queries
        self._itemsize = 8 if factored is not None else itemsize

    @property
    def query_rank(self) -> int | None:
        """r of query batching, or None for uncompressed queries."""
        return None if self._factored is None else self._factored.rank

    @property
    def query_errors(self) -> np.ndarray | None:
        """Per query, ||V - V_r||_F / ||V||_F of query batching (None for uncompressed queries)."""
        return None if self._factored is None else self._factored.errors

    def scores(self, idx=None) -> np.ndarray:
        """The score matrix (n_queries, n) of the solved queries (or (n_queries, len(idx)) for
        the training points ``idx``): what ``on`` / ``on_loss`` return for them, without
        solving again, in the same precision (float64 for compressed queries)."""
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
        ``rows = (start, stop)`` (default all), indices counted from the first training row.
        Segments starting at multiples of ``upweight._constants.BLOCK_ROWS`` give bitwise the
        scores of one pass."""
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
        return self._core.n_samples

    @property
    def total_weight(self) -> float:
        """W, the sum of the training weights."""
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
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
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
        """grad l(z_m) . I(z_m) for every training point, shape (n,), streamed over the training
        rows. Always <= 0 without a penalty; the most negative values flag points the model fits
        only by bending towards them (outliers, mislabelled points). Each training point is its
        own right-hand side: with ``solver="cg"`` that is one CG solve per point (n passes over
        the data per iteration in total), so prefer ``"direct"`` whenever H fits in memory.

        ``rows = (start, stop)``: only those training rows, (stop - start,), e.g. one segment of a
        resumable run; segments starting at multiples of ``upweight._constants.BLOCK_ROWS`` give
        bitwise the values of one pass."""
        segment = None if rows is None else _segment(rows)
        return self._checked(self._core_for(self.n_samples).self_influence(segment))

    def inverse_hvp(self, g) -> np.ndarray:
        """(H + damping I)^{-1} g for a vector (p,) or the columns of a matrix (p, r)."""
        single = np.ndim(g) == 1
        g = as_matrix(np.asarray(g)[:, None] if single else g, "g")
        if g.shape[0] != self.n_params:
            raise InputError(f"g: has {g.shape[0]} rows, expected p = {self.n_params} (one per parameter)")
        check_finite(g, "g")
        out = self._checked(self._core_for(g.shape[1]).inverse_hvp(g))
        return out[:, 0] if single else out

    def on(self, grad_f, idx=None, *, query_rank: int | None = None) -> np.ndarray:
        """Influence of every training point (or the rows ``idx``) on f, given grad f(theta*).

        ``grad_f`` of shape (p,) gives (n,); (r, p) gives (r, n) with row j for f_j.
        ``query_rank=r``: query batching (networks), see :class:`SolvedQueries`.
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
        gradients (r, p) at theta*, streamed over the training rows. ``query_rank=r``: query
        batching (networks), see :class:`SolvedQueries`."""
        k = _check_k(k)
        G, _ = self._grad_matrix(grad_f)
        if query_rank is not None:
            return self.solve_queries(G, query_rank=query_rank).top_k(k)
        return TopK._from_core(self._checked(self._core_for(G.shape[0]).top_k(G, k)))

    def solve_queries(self, grad_f, *, query_rank: int | None = None) -> SolvedQueries:
        """Solve for the functions f given their gradients (r, p) at theta* once, and return an
        object that scores the training rows without solving again (:meth:`SolvedQueries.top_k`
        for any segment, :meth:`SolvedQueries.scores` for the matrix); ``solve_info`` reports this
        solve. ``query_rank=r`` keeps every solved query's layer blocks at rank r (query
        batching, networks; ``solve_info.query_errors`` reports what that cost)."""
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

    Parameters
    ----------
    model : a fitted model implementing :class:`upweight.models.Model`: ``LinearRegression``,
        ``LogisticRegression``, ``PoissonRegression``, or a model from :meth:`from_sklearn` /
        :meth:`from_statsmodels``
    X, y, sample_weight : the training set the model was fitted on (same weights and order).
        X may be float64 or float32 (kept as float32: scores are computed in float32, sums and
        solves in float64), a scipy.sparse matrix (used in CSR form, never densified: every pass
        costs O(nnz)), or the path of a ``.npy`` file (or its ``np.load(..., mmap_mode="r")``
        memmap): it is then read block by block, never held in memory; or dask arrays chunked
        by rows: the result is then a :class:`upweight.dask.DaskInfluence` (answers computed on
        Dask's scheduler; README "On a cluster"). Test points
        (``X_test``) may be sparse too; their gradient matrix (q x p) is dense.
    solver : "direct" (form H, Cholesky), "cg" (matrix-free conjugate gradients on
        Hessian-vector products, preconditioned as ``precondition`` says), or "auto": per query, the cheaper of
        the two by a cost model measured on n, p, the row density and the number of right-hand
        sides (:mod:`upweight.solver`); once formed, H is kept. ``solver`` tells which one the
        next query will use. "arnoldi" (approximate, never chosen by "auto"; Schioppa et al.
        2022): the top ``rank`` eigenpairs (sigma_j, u_j) of the curvature (a GLM's Hessian, a
        network's ``curvature``) from Lanczos with full reorthogonalisation (``arnoldi_steps``
        products with it, default max(2 rank, rank + 20), at most p; a pass over the data each),
        then every solve uses that rank-r model: ``arnoldi_inverse="projection"`` (default)
        U diag(1 / (sigma + damping)) U^T g, the solve within the top eigenspace;
        ``"exact"`` the exact inverse of U diag(sigma) U^T + damping I (adds (g - U U^T g) /
        damping; needs damping > 0 when rank < p). With rank = p it is the exact solve.
        ``solve_info`` then holds the eigenvalues kept, their Lanczos residuals and each query's
        true residual. Deterministic (a seeded start vector). Leave-out estimates refuse it.
    rank, arnoldi_steps, arnoldi_inverse : the Arnoldi settings above (only with
        ``solver="arnoldi"``, which requires ``rank``).
    curvature_file : a file written by :meth:`save_curvature` for the same model parameters, data,
        l2, damping and approximation: the prepared curvature (eigenpairs, factors) is loaded
        instead of computed, so the passes that build it run once for many sessions. Its header
        is checked (InputError naming ``curvature_file`` on any difference).
    residuals : approximate solves (``solver="arnoldi"``, ``curvature="kfac"`` / ``"ekfac"``) report
        each query's true relative residual against the exact damped curvature in
        ``solve_info.residuals``: one product with it per block of queries (for q queries, about q
        gradient passes' work). False skips it (NaN there) for speed. Exact solvers ignore it.
    damping : solve (H + damping I) v = g instead of H v = g.
    curvature : networks: "gauss-newton" (G, the default; damping "auto" = 0.1 tr(G) / p),
        "hessian" (the exact Hessian), "kfac" (approximate: solves with the inverse of G's
        Kronecker-factored layer blocks, kron(S, A) + damping I + 2 l2 M, the penalty exact by
        Woodbury) or "ekfac" (approximate: the same eigenbases Q_S (x) Q_A with the eigenvalues
        replaced by the diagonal of G's exact layer blocks in them, plus the penalty's diagonal
        there; a second pass over the data). For both, ``solver`` must stay "auto" and
        ``solve_info.residuals`` are the true residuals against the exact damped G.
    kfac_samples : the K-FAC / EK-FAC factors (``curvature="kfac"``/``"ekfac"``,
        ``precondition="kfac"``) from m loss gradients per row at targets drawn from the
        network's predictive distribution (kronfluence's and Grosse et al.'s sampled Fisher; for
        large k: m backward passes instead of k), each row's draws seeded by a hash of its
        values (deterministic, independent of order and blocking). None (default): the exact
        expectation over the outputs. The residuals stay against the exact G.
        A GLM's curvature is its Hessian ("gauss-newton" and "hessian" both give it).
    rtol, atol, max_iter : conjugate-gradient stopping rule.
    precondition : CG's preconditioner. "jacobi": the inverse of the Hessian's diagonal (for
        multinomial models of each feature's k x k class block); "kfac" (networks only): the
        inverse of each layer's Kronecker-factored Gauss-Newton block, kron(S, A) + damping I +
        2 l2 M, from the exact output curvature (no sampling, float64), cross-layer blocks
        dropped; "none"; True or "auto" (the default): "none" for networks (on a 784-128-10
        Fashion-MNIST net at damping "auto" Jacobi and K-FAC both take ~3x the iterations of
        plain CG; on the 64-16-10 digits net K-FAC saves 10-40%); for GLMs, (block) Jacobi or none,
        whichever takes fewer iterations, measured once by the first solve: CG on a fixed seeded
        right-hand side with Jacobi, then without it (stopped at Jacobi's count); every query then
        uses the winner (``solve_info.preconditioned`` tells which), so answers never depend on
        which query came first. Block Jacobi saves iterations on badly scaled features and costs
        some on well-conditioned data (bench/RESULTS.md); False:
        "none". Every choice gives the same solution; only the iterations differ.
    on_unconverged : "raise" (default) or "warn" when a CG solve misses its tolerance.
    progress : optional callable ``progress(pass, rows_done, rows_total)``, called from the
        calling thread at most every 50 ms while a long call runs; raising in it cancels the call.
        Every long call is interruptible with Ctrl-C.
    copy : keep private copies of in-memory X, y and sample_weight (the default), so that editing
        the caller's arrays later cannot mix new data into answers about the old fit; with
        ``copy=False`` they are shared (do not modify them while the influence is in use). A
        ``.npy`` path is never copied: it is made absolute, and queries raise ``InputError`` once
        the file has changed. The model's parameters are always taken as they are now.

    Parameter vectors are flattened as ``model.theta_.reshape(-1)``: p = d + 1, or k (d + 1) for
    multinomial. After each query, ``solve_info`` reports iterations and relative residuals.
    """

    def __new__(cls, model=None, X=None, y=None, sample_weight=None, **kwargs):
        # a training set on Dask: the same queries, answered there (upweight.dask.DaskInfluence)
        backend = backend_for(X, y, sample_weight) if cls is Influence else None
        if backend is not None:
            return backend.DaskInfluence(model, X, y, sample_weight, **kwargs)
        return super().__new__(cls)

    def __init__(self, model, X, y, sample_weight=None, *, solver: str = "auto", damping: float | str | None = None,
                 curvature: str | None = None, rtol: float = 1e-10, atol: float = 0.0, max_iter: int = 1000,
                 precondition: bool | str = True, on_unconverged: str = "raise", progress=None, copy: bool = True,
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
        Xc, n, _ = training_features(X, self._d)
        # the data, kept: later edits of the caller's arrays (or of a .npy file) cannot mix in
        self.X = kept(Xc, X, copy)
        self.y = kept(model.check_targets(y, n), y, copy)
        self.sample_weight = kept(as_weights(sample_weight, n), sample_weight, copy)
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
        ``LogisticRegression``, ``PoissonRegressor``, ``MLPClassifier`` or ``MLPRegressor``,
        with its objective converted exactly (:mod:`upweight.interop`); ``inf.model`` is the
        equivalent upweight model. Keyword arguments go to :class:`Influence` (networks: the
        default damped Gauss-Newton answers the PBRF at sklearn's parameters; ``damping=0.0,
        curvature="hessian"`` at a minimum is the derivative of refitting)."""
        model, yv = from_sklearn(estimator, X, y, sample_weight)
        return cls(model, X, yv, sample_weight, **kwargs)

    @classmethod
    def from_statsmodels(cls, results, **kwargs) -> Influence:
        """Influence for fitted statsmodels ``OLS``, ``WLS`` or ``GLM`` (Gaussian, Binomial,
        Poisson; canonical links) results, on the data they were fitted on (X without the
        constant column: ``inf.X``)."""
        model, X, y, w = from_statsmodels(results)
        return cls(model, X, y, w, **kwargs)

    def save_curvature(self, path, force: bool = False) -> None:
        """Write the approximate curvature this influence prepared (Arnoldi's eigenpairs, K-FAC's or
        EK-FAC's eigenbases and inverse eigenvalues) to ``path`` (.npz, atomically), with what it
        was computed for (parameters, l2, damping, p, W); reload it with ``curvature_file=path``.
        InputError for the exact solvers, which have nothing to save."""
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
            diag = _core.curvature_diag(self._core_model, self._theta, self.X, self.y, self.sample_weight, self.l2, progress)
            if diag is None:
                raise InputError("damping: 'auto' needs the curvature's diagonal, which this model does not give; pass a number")
            return AUTO_DAMPING * float(np.mean(diag))
        return as_nonneg_float(damping, "damping")

    def pbrf(self, m, eps, *, tol: float = 1e-10, max_iter: int = 100) -> np.ndarray:
        """theta_b(eps), the proximal Bregman response of training point ``m`` (networks;
        DESIGN-networks.md section 3): the minimiser from ``theta`` of

            (1/(W+eps)) [sum_i w_i D_i + eps (l_m + 2 l2 (M theta) . t)] + l2 ||M (t - theta)||^2
            + (damping/2) ||t - theta||^2

        with D_i the Bregman divergence of the loss on the outputs at theta, to max |gradient|
        <= ``tol`` (simplified Newton with the exact Hessian at theta, factored once per point
        and eps: p x p, small networks). Its derivative at eps = 0 is :meth:`params` with the
        Gauss-Newton curvature and this damping, at any theta (minimiser or not). ``m`` and
        ``eps`` are each a number or a sequence: the result is (p,), (len(eps), p),
        (len(m), p) or (len(m), len(eps), p). eps = -w_m removes the point (Bae et al. use
        eps = -1/N with w = 1 and no renormalisation). ConvergenceError if a solve does not
        converge."""
        if not self.is_network:
            raise InputError("model: pbrf is defined for networks (for a GLM at its optimum with damping 0 it is the exact refit: "
                             "use upweight.response_curve)")
        eps_list = [float(e) for e in np.atleast_1d(np.asarray(eps, dtype=np.float64)).reshape(-1)]
        if not all(np.isfinite(eps_list)):
            raise InputError("eps: contains NaN or infinity")
        points = [int(i) for i in as_indices(np.atleast_1d(m), self.n_samples, "m")]
        core = _core.with_curvature(self._core_model, "gauss-newton")
        delta, converged = _core.pbrf(core, self._theta, self.X, self.y, self.sample_weight, self.l2, self.damping, self._renormalized,
                                      points, eps_list, as_nonneg_float(tol, "tol"), as_positive_int(max_iter, "max_iter"), self._args[-1])
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
            return InfluenceCore(self._core_model, self._theta, self.X, self.y, self.sample_weight, self.l2, method, *self._args,
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
        return self._theta.size

    @property
    def grad_norm(self) -> float:
        """max |grad L_w(theta)| on the training data: ~0 at the optimum."""
        return self._core.grad_norm

    # -- parameters ---------------------------------------------------------------------------
    def params(self, idx=None) -> np.ndarray:
        """I(z_m) for all training points, or the rows ``idx``: shape (n or len(idx), p)."""
        if idx is None:
            check_output_fits((self.n_samples, self.n_params), 8, "idx", "pass idx= for a subset of training points")
            return self._checked(self._core_for(self.n_samples).params())
        rows = [int(i) for i in as_indices(idx, self.n_samples)]
        return self._checked(self._core_for(len(rows)).params(rows))  # gathered in the core

    def new_point(self, x, y) -> np.ndarray:
        """I(z) of a point (or points) not in the training set: the derivative of theta with
        respect to adding it with weight eps at eps = 0.

        ``x`` of shape (d,) with scalar ``y`` (or its t targets, multi-output) gives (p,); ``x`` of
        shape (m, d) with ``y`` of shape (m,) (or (m, t)) gives (m, p).
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
        """Gradients of the loss at each test point, grad l(z_t; theta*): (q, p). Pass them (or
        combinations of them) to :meth:`on`, :meth:`top_k_on` or :meth:`solve_queries`."""
        Xt = as_matrix(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, Xt.shape[0], name="y_test")  # (q,), or (q, t) for t outputs
        return self._core.loss_grads(Xt, yt, names=("X_test", "y_test"))

    def on_loss(self, X_test, y_test, idx=None) -> np.ndarray:
        """Score matrix S of shape (q, n): S[t, m] = grad l(z_t) . I(z_m), the influence of
        training point m on the loss at test point t. Negative: m helps t. With ``idx``, only
        those training points: (q, len(idx)). For large n prefer :meth:`top_k`."""
        return self._scores(self.loss_grads(X_test, y_test), idx, "X_test")

    def on_prediction(self, X_test, kind: str = "mean", idx=None) -> np.ndarray:
        """Influence of every training point on the predictions at ``X_test``.

        ``kind="mean"``: the mean response (regression value, probability of class 1, Poisson
        rate, or every class probability); ``kind="linear"``: the linear predictor(s).
        Shape (q, n), or (q, k, n) for multinomial.
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
        test points: (n,). One solve, whatever the number of test points."""
        return self.on(self.loss_grads(X_test, y_test).mean(axis=0), idx)

    def on_loss_gap(self, X_a, y_a, X_b, y_b, idx=None) -> np.ndarray:
        """Influence on the gap between two groups' mean test losses, mean loss(a) - mean
        loss(b) (e.g. a fairness gap): (n,). Negative: upweighting the point narrows a gap in
        which a is worse off (or widens one where b is)."""
        g = self.loss_grads(X_a, y_a).mean(axis=0) - self.loss_grads(X_b, y_b).mean(axis=0)
        return self.on(g, idx)

    def top_k(self, X_test, y_test, k: int = 10, *, prefilter: str | None = None, recall: float = 0.95,
              recall_queries: int = 10, candidates: int | None = None, query_rank: int | None = None) -> TopK:
        """For each test point, the ``k`` training points whose upweighting most lowers (helpful)
        and most raises (harmful) its loss, streamed over the training rows: the (q, n) score
        matrix is never held, so n can be far larger than memory. ``prefilter``, ``query_rank``:
        see :meth:`top_k_on`."""
        return self.top_k_on(self.loss_grads(X_test, y_test), k, prefilter=prefilter, recall=recall,
                             recall_queries=recall_queries, candidates=candidates, query_rank=query_rank)

    def top_k_on(self, grad_f, k: int = 10, *, query_rank: int | None = None, prefilter: str | None = None,
                 recall: float = 0.95, recall_queries: int = 10, candidates: int | None = None) -> TopK:
        """The ``k`` most helpful and most harmful training points for functions f given their
        gradients (r, p) at theta*, streamed over the training rows.

        ``prefilter="last-layer"`` (networks with a hidden layer; DESIGN-networks.md section 6)
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
        prefilter (its exact stage scores few rows)."""
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
            self._stage1 = (Influence(last, self.X, self.y, self.sample_weight, damping=self.damping, copy=False,
                                      progress=self._args[-1]), last.range)
        return self._stage1

    def leverage(self) -> np.ndarray:
        """Hat values of the training rows, (w_m a_m / W) z_m^T H^{-1} z_m with a_m the Hessian
        weight of the loss in eta (single-output GLMs; :func:`upweight.diagnostics`)."""
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
        by one Newton step from theta* on the objective without m (weights respected: the point's
        weight w_m goes, and the weighted mean renormalises): (n, p), or (len(idx), p).

        Compare ``-w_m * params()``, its first-order (influence) approximation. Cost: one
        factorisation of the curvature (an eigendecomposition when the weights differ and
        l2 > 0), then O(k p^2) per point; with ``solver="cg"`` and p > 4096, no p x p matrix:
        one CG solve of the left-out curvature per point."""
        rows = self._rows(idx)
        n_out = self.n_samples if rows is None else len(rows)
        check_output_fits((n_out, self.n_params), 8, "idx", "pass idx= for a subset of training points")
        return self._leave_out_core().loo_params(rows)

    def loo_losses(self, idx=None, with_training: bool = False):
        """Each training point's loss at its own leave-one-out parameters, l(z_m; theta_(-m)):
        the held-out losses of approximate leave-one-out cross-validation
        (:func:`upweight.approximate_loo_cv`), (n,) or (len(idx),). With ``with_training``, also
        the same points' losses at theta*: a pair of such arrays."""
        both = self._leave_out_core().loo_self_losses(self._rows(idx))
        held_out = np.ascontiguousarray(both[:, 0])
        return (held_out, np.ascontiguousarray(both[:, 1])) if with_training else held_out

    def loo_on_loss(self, X_test, y_test, idx=None) -> np.ndarray:
        """Predicted change of each test loss when each training point is left out,
        l(z_t; theta_(-m)) - l(z_t; theta*): (q, n), or (q, len(idx)). The loss is evaluated at the
        stepped parameters, not linearised. Positive: m helps t (without it, t's loss rises);
        about ``-w_m * on_loss(...)`` to first order. For large n use :meth:`loo_top_k`."""
        Xt = as_points(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, n_rows(Xt), name="y_test")
        rows = self._rows(idx)
        check_output_fits((n_rows(Xt), self.n_samples if rows is None else len(rows)), 8, "X_test",
                          "use loo_top_k (streamed), fewer test points at a time, or idx=")
        return self._leave_out_core().loo_on(Xt, yt, "loss", rows, names=("X_test", "y_test"))

    def loo_on_prediction(self, X_test, kind: str = "mean", idx=None) -> np.ndarray:
        """Predicted change of the predictions at ``X_test`` when each training point is left out
        (``kind`` as in :meth:`on_prediction`, evaluated at the stepped parameters): (q, n), or
        (q, k, n) for k outputs."""
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
        first), by one Newton step each, streamed over the training rows (or the segment
        ``rows = (start, stop)``): the (q, n) matrix is never held. The values are predicted
        changes of the test loss on removal (positive for helpful points: note the sign is the
        opposite of :meth:`top_k`'s scores, which are derivatives in the weight)."""
        k = _check_k(k)
        Xt = as_points(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, n_rows(Xt), name="y_test")
        segment = None if rows is None else _segment(rows)
        top = TopK._from_core(self._leave_out_core().loo_top_k(Xt, yt, k, segment, names=("X_test", "y_test")))
        return LooTopK(*top.as_tuple())

    def leave_out_params(self, groups) -> np.ndarray:
        """theta_(-G) - theta* for leaving each group of training points out together, by one
        Newton step with a rank-|G| update (exact for squared loss): (n_groups, p).

        ``groups``: a sequence of index arrays (or boolean masks), or one label per training point
        (an array of length n: one group per distinct label, in ``np.unique`` order)."""
        return self._leave_out_core().leave_out(_groups(groups, self.n_samples))[0]

    def leave_out_on_loss(self, X_test, y_test, groups) -> np.ndarray:
        """Predicted change of each test loss when each group of training points is left out
        together (see :meth:`leave_out_params`): (q, n_groups)."""
        Xt = as_points(X_test, "X_test", self._d)
        yt = self.model.check_targets(y_test, n_rows(Xt), name="y_test")
        out = self._leave_out_core().leave_out(_groups(groups, self.n_samples), Xt, yt, names=("X_test", "y_test"))[1]
        assert out is not None  # test points were given
        return out

    def __repr__(self) -> str:
        return f"Influence({self.model!r}, n={self.n_samples}, p={self.n_params}, solver={self.solver!r})"


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
    train_grads : (n, p) float64/float32 array, ``.npy`` path or its memmap: row m is the
        gradient of the training loss of point m at the trained parameters.
    hessian : optional (p, p) symmetric matrix to use as curvature instead of the Fisher.
    curvature : "fisher" (the empirical Fisher of ``train_grads``; the default).
    damping, sample_weight, solver, rtol, atol, max_iter, precondition, on_unconverged, progress, rank,
    arnoldi_steps, arnoldi_inverse, residuals : as for
        :class:`upweight.Influence`.
    curvature_file : a file written by :meth:`save_curvature` (``solver="arnoldi"``) for the same
        gradients, weights, explicit Hessian and damping: the eigenpairs are loaded instead of
        computed. The file is checked against a SHA-256 of the gradients, weights and Hessian
        (one read of the gradients) and the core's header; any difference is refused naming
        ``curvature_file``.
    """

    def __init__(self, train_grads, *, hessian=None, curvature: str = "fisher", damping: float = 0.0,
                 sample_weight=None, solver: str = "auto", rtol: float = 1e-10, atol: float = 0.0,
                 max_iter: int = 1000, precondition: bool | str = True, on_unconverged: str = "raise", progress=None,
                 copy: bool = True, rank: int | None = None, arnoldi_steps: int | None = None, arnoldi_inverse: str = "projection",
                 residuals: bool = True, curvature_file=None):
        if curvature != "fisher":
            raise InputError(f"curvature: expected 'fisher' (or pass hessian=...), got {curvature!r}")
        G, n, p = training_features(train_grads, name="train_grads")
        self.train_grads = kept(G, train_grads, copy)
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
        self._w, self._H = kept(as_weights(sample_weight, n), sample_weight, copy), H
        state = None if curvature_file is None else load_curvature(curvature_file, self._fingerprint(), "gradients")
        self._approx = approximation_args(solver, _saved_rank(state, solver, rank), arnoldi_steps, arnoldi_inverse,
                                          residuals) | {"state": state}
        self._args = solver_args(damping, rtol, atol, max_iter, precondition, progress)
        self._itemsize = score_itemsize(self.train_grads)
        self._start(QueryPolicy(solver, Work(n, p), explicit_hessian=H is not None))

    def _make_core(self, method: str) -> InfluenceCore:
        p = self.n_params
        return InfluenceCore(_core.Model.gradients(p), np.zeros(p), self.train_grads, None, self._w, 0.0, method, *self._args,
                             True, self._H, names=("train_grads", "y"), **self._approx)

    def _fingerprint(self) -> np.ndarray:
        """What a saved curvature is checked against, in the place of a model's parameters: the
        SHA-256 of the gradients (read in row blocks), the weights and the explicit Hessian, as
        32 numbers."""
        digest = hashlib.sha256()
        G = self.train_grads
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
        """Write Arnoldi's eigenpairs (``solver="arnoldi"``) with what they were computed for
        (the gradients' fingerprint, damping, p, W) to ``path`` (.npz, atomically); reload them
        with ``curvature_file=path``. InputError for the exact solvers."""
        state = self._core.curvature_state()
        if state is None:
            raise InputError(f"save_curvature: solver {self.solver!r} is exact and prepares no approximate curvature "
                             "(solver='arnoldi' does)")
        save_curvature(state, self._fingerprint(), path, force)

    def _test_grads(self, test_grads):
        G, _ = self._grad_matrix(test_grads, "test_grads")
        return G

    def params(self, idx=None) -> np.ndarray:
        """I(z_m) = -(H + damping I)^{-1} g_m / W for all training points or the rows ``idx``."""
        if idx is None:
            check_output_fits((self.n_samples, self.n_params), 8, "idx", "pass idx= for a subset of training points")
            return self._checked(self._core_for(self.n_samples).params())
        rows = self._rows(idx)
        return self._checked(self._core_for(len(rows)).params(rows))  # gathered in the core

    def on_loss(self, test_grads, idx=None) -> np.ndarray:
        """Score matrix (q, n) from test-loss gradients (q, p): S[t, m] < 0 means training point
        m helps test point t."""
        return self._scores(self._test_grads(test_grads), idx, "test_grads")

    def top_k(self, test_grads, k: int = 10) -> TopK:
        """Per test gradient, the k most helpful and most harmful training points, streamed."""
        return self.top_k_on(self._test_grads(test_grads), k)

    def __repr__(self) -> str:
        return f"GradientInfluence(n={self.n_samples}, p={self.n_params}, curvature={self.curvature!r}, solver={self.solver!r})"
