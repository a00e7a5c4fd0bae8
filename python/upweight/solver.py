"""The solver policy, in one place: which method solves H v = g (and each Newton step of a fit).

``solver`` is ``"direct"`` (form H, Cholesky), ``"cg"`` (matrix-free conjugate gradients on
Hessian-vector products, H never formed) or ``"auto"``: for a query with r right-hand sides, the
cheaper of the two by a cost model measured on the development machine,

    direct(r) = c_hess n (k (k + 1) / 2) z^2 + c_chol p^3 / 3 + c_solve 2 p^2 r
    cg(r)     = iters (c_pass n z + c_hvp 4 n z k r)

with n rows, k linear predictors, z stored entries per row plus the intercept (d + 1 for dense
rows, nnz / n + 1 for sparse ones), p parameters. c_hess has one value per Hessian schedule
(row blocks up to p = ``TILED_ABOVE_P``, tiles above: rust/objective/hessian.rs) and per storage; c_pass
is the part of a Hessian-vector pass that does not grow with the number of vectors (reading X
once, the linear predictors); iters is the typical preconditioned CG count at rtol 1e-10 for
single-output and for multinomial models. The constants are seconds per unit of work; only
their ratios matter, and they were measured by ``python bench/calibrate_auto.py``
(bench/RESULTS.md, section "auto"). Direct is allowed only while H and its factor fit in half of
the machine's memory.

This module sees only the shape of a problem (:class:`Work`); it knows nothing of models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ._constants import TILED_HESSIAN_MAX_ROW_BLOCK_P
from ._validation import as_positive_int
from .errors import InputError

__all__ = [
    "ON_UNCONVERGED",
    "ARNOLDI_INVERSES",
    "INFLUENCE_SOLVERS",
    "SOLVERS",
    "QueryPolicy",
    "Work",
    "cg_seconds",
    "approximation_args",
    "check_influence_solver",
    "check_on_unconverged",
    "check_solver",
    "direct_fits",
    "direct_seconds",
    "memory_bytes",
    "prefers_direct",
    "resolve",
    "work",
]

#: The values of every ``solver=`` argument (estimators, Influence, GradientInfluence, the CLI).
SOLVERS = ("auto", "direct", "cg")
#: The values of an influence's ``solver=``: also the approximate "arnoldi" (never chosen by "auto").
INFLUENCE_SOLVERS = (*SOLVERS, "arnoldi")
#: The values of ``arnoldi_inverse=``.
ARNOLDI_INVERSES = ("projection", "exact")
#: The values of ``on_unconverged=``.
ON_UNCONVERGED = ("raise", "warn")

# Measured by `python bench/calibrate_auto.py` (see bench/RESULTS.md, "auto").
C_HESS_DENSE = 1.98e-11  # row-block schedule, p <= TILED_ABOVE_P
C_HESS_DENSE_TILED = 2.65e-11  # tiled schedule, p > TILED_ABOVE_P
C_HESS_SPARSE = 2.28e-09
C_CHOL = 3.99e-11
C_SOLVE = 3.92e-11
C_PASS_DENSE = 2.27e-09
C_HVP_DENSE = 1.94e-11
C_PASS_SPARSE = 9.04e-09
C_HVP_SPARSE = 2.26e-10
CG_ITERS = 25  # single-output models
CG_ITERS_MULTINOMIAL = 62
TILED_ABOVE_P = TILED_HESSIAN_MAX_ROW_BLOCK_P  # the core's own threshold


def check_solver(solver: str) -> str:
    """``solver`` if it is one of :data:`SOLVERS`, else an InputError naming it."""
    if solver not in SOLVERS:
        raise InputError(f"solver: expected 'auto', 'direct' or 'cg', got {solver!r}")
    return solver


def check_influence_solver(solver: str) -> str:
    """``solver`` if it is one of :data:`INFLUENCE_SOLVERS`, else an InputError naming it."""
    if solver not in INFLUENCE_SOLVERS:
        raise InputError(f"solver: expected 'auto', 'direct', 'cg' or 'arnoldi', got {solver!r}")
    return solver


def approximation_args(solver: str, rank, steps, arnoldi_inverse, residuals=True) -> dict:
    """The approximate solvers' settings of an influence (Arnoldi's rank, steps and inverse; for
    every approximation whether it computes true residuals), checked, as ``_core.Influence``
    takes them: ``rank`` is required with ``solver="arnoldi"`` and refused with any other solver."""
    if not isinstance(residuals, (bool, np.bool_)):
        raise InputError(f"residuals: expected True or False, got {residuals!r}")
    if solver != "arnoldi":
        for name, v in (("rank", rank), ("arnoldi_steps", steps)):
            if v is not None:
                raise InputError(f"{name}: only used with solver='arnoldi', got solver={solver!r}")
        return {"residuals": bool(residuals)}
    if rank is None:
        raise InputError("rank: solver='arnoldi' needs rank= (the number of top eigenpairs of the curvature it keeps)")
    if arnoldi_inverse not in ARNOLDI_INVERSES:
        raise InputError(f"arnoldi_inverse: expected 'projection' or 'exact', got {arnoldi_inverse!r}")
    rank = as_positive_int(rank, "rank")
    if steps is not None and as_positive_int(steps, "arnoldi_steps") < rank:
        raise InputError(f"arnoldi_steps: {steps} Lanczos steps cannot give rank={rank} eigenpairs "
                         "(at least rank steps; default max(2 rank, rank + 20))")
    return {"rank": rank, "steps": None if steps is None else int(steps), "arnoldi_inverse": arnoldi_inverse, "residuals": bool(residuals)}


def check_on_unconverged(on_unconverged: str) -> str:
    """``on_unconverged`` if it is one of :data:`ON_UNCONVERGED`, else an InputError naming it."""
    if on_unconverged not in ON_UNCONVERGED:
        raise InputError(f"on_unconverged: expected 'raise' or 'warn', got {on_unconverged!r}")
    return on_unconverged


@dataclass(frozen=True)
class Work:
    """The shape of an influence problem, as the cost model sees it."""

    n: int
    p: int
    k: int = 1
    z: float = 0.0  # stored entries per row plus 1 (intercept); 0 = dense, p / k
    sparse: bool = False

    @property
    def row(self) -> float:
        return self.z if self.z > 0 else self.p / self.k


def work(n: int, p: int, k: int, X) -> Work:
    """The cost model's view of a training set of ``n`` rows, ``p`` parameters and ``k``
    linear predictors, with features ``X`` as the core takes them (a CSR tuple is sparse)."""
    if isinstance(X, tuple):  # CSR: (data, indices, indptr, n_columns)
        return Work(n, p, k, z=X[0].size / max(n, 1) + 1, sparse=True)
    return Work(n, p, k)


def memory_bytes() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def direct_fits(w: Work) -> bool:
    """H and its Cholesky factor (2 p^2 float64) fit in half of physical memory."""
    return 16 * w.p**2 <= memory_bytes() // 2


def direct_seconds(w: Work, r: int, built: bool = False) -> float:
    solve = C_SOLVE * 2 * w.p**2 * r
    if built:
        return solve
    c_hess = C_HESS_SPARSE if w.sparse else C_HESS_DENSE_TILED if w.p > TILED_ABOVE_P else C_HESS_DENSE
    return c_hess * w.n * (w.k * (w.k + 1) / 2) * w.row**2 + C_CHOL * w.p**3 / 3 + solve


def cg_seconds(w: Work, r: int) -> float:
    c_pass, c_hvp = (C_PASS_SPARSE, C_HVP_SPARSE) if w.sparse else (C_PASS_DENSE, C_HVP_DENSE)
    iters = CG_ITERS if w.k == 1 else CG_ITERS_MULTINOMIAL
    return iters * (c_pass * w.n * w.row + c_hvp * 4 * w.n * w.row * w.k * r)


def prefers_direct(w: Work, r: int) -> bool:
    """Direct for a query with ``r`` right-hand sides (H not yet formed)?"""
    return direct_fits(w) and direct_seconds(w, r) <= cg_seconds(w, r)


def resolve(solver: str, w: Work, r: int = 1) -> str:
    """The method ``solver`` stands for on a problem of shape ``w`` with ``r`` right-hand sides:
    ``"direct"`` or ``"cg"`` as given, and ``"auto"`` by :func:`prefers_direct`. A fit (one
    right-hand side per Newton step) and a refit resolve ``"auto"`` with ``r = 1``."""
    solver = check_solver(solver)
    if solver != "auto":
        return solver
    return "direct" if prefers_direct(w, r) else "cg"


class QueryPolicy:
    """Which method answers each query of one :class:`~upweight.Influence` (or
    :class:`~upweight.GradientInfluence`) object; ``method`` is the one in use.

    ``"direct"``, ``"cg"``, ``"arnoldi"``, ``"kfac"`` or ``"ekfac"`` (the last two from
    ``curvature=``): always that one. ``"auto"``: direct from the start when the cost
    model prefers it even for one right-hand side, or when H is given explicitly (factoring it
    once beats a p x p matrix-vector product per CG iteration); else CG (one cheap pass), switched
    to direct, once and for good, at the first query with enough right-hand sides that forming
    and factoring H is cheaper (self-influence: n right-hand sides)."""

    def __init__(self, solver: str, shape: Work, *, explicit_hessian: bool = False):
        # "kfac" and "ekfac" come from curvature= (the caller checked the user's solver)
        self.auto = solver == "auto"
        self.shape = shape
        if solver in ("arnoldi", "kfac", "ekfac"):
            self.method = solver
        else:
            self.method = "direct" if self.auto and explicit_hessian else resolve(solver, shape)

    def method_for(self, r: int) -> str:
        """The method for a query with ``r`` right-hand sides (under "auto", from now on)."""
        if self.auto and self.method == "cg" and prefers_direct(self.shape, r):
            self.method = "direct"
        return self.method
