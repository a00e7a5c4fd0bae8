"""``solver="auto"``: a cost model, measured on the development machine, that picks the direct
solver (form H, Cholesky) or conjugate gradients for a query with r right-hand sides.

    direct(r) = c_hess n (k (k + 1) / 2) z^2 + c_chol p^3 / 3 + c_solve 2 p^2 r
    cg(r)     = iters (c_pass n z + c_hvp 4 n z k r)

with n rows, k linear predictors, z stored entries per row plus the intercept (d + 1 for dense
rows, nnz / n + 1 for sparse ones), p parameters. c_hess has one value per Hessian schedule
(row blocks up to p = 2048, tiles above: rust/objective.rs) and per storage; c_pass is the part
of a Hessian-vector pass that does not grow with the number of vectors (reading X once, the
linear predictors); iters is the typical preconditioned CG count at rtol 1e-10 for single-output
and for multinomial models. The constants are seconds per unit of work;
only their ratios matter, and they were measured by ``python bench/calibrate_auto.py``
(bench/RESULTS.md, section "auto"). Direct is allowed only while H and its factor fit in half of
the machine's memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Measured by `python bench/calibrate_auto.py` (see bench/RESULTS.md, "auto").
C_HESS_DENSE = 1.98e-11  # row-block schedule, p <= 2048
C_HESS_DENSE_TILED = 2.65e-11  # tiled schedule, p > 2048
C_HESS_SPARSE = 2.28e-09
C_CHOL = 3.99e-11
C_SOLVE = 3.92e-11
C_PASS_DENSE = 2.27e-09
C_HVP_DENSE = 1.94e-11
C_PASS_SPARSE = 9.04e-09
C_HVP_SPARSE = 2.26e-10
CG_ITERS = 25  # single-output models
CG_ITERS_MULTINOMIAL = 62
TILED_ABOVE_P = 2048


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
