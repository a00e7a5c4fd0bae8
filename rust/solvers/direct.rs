//! The direct solver: Cholesky of the (damped, null-space augmented) Hessian, many right-hand
//! sides at once, columns in parallel.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::linalg::Cholesky;

use super::cg::SolveInfo;
use super::NullSpace;

/// Right-hand sides per parallel task in `Direct::solve`.
const RHS_CHUNK: usize = 128;
/// Above this p, `Direct` factors H in place and does not keep it (see `Direct::residuals`).
pub const DIRECT_KEEP_H_MAX_P: usize = 4096;

/// Direct solver: Cholesky of the (null-space augmented) Hessian. Up to
/// [`DIRECT_KEEP_H_MAX_P`] parameters it keeps a copy of that matrix to report true residuals;
/// above, the factor overwrites the matrix (no copy of a p x p matrix is made).
pub struct Direct {
    chol: Cholesky,
    h: Option<Array2<f64>>,
}

impl Direct {
    /// Factor `h` (p x p, symmetric), adding N S N^T for the orthonormal null basis `null`
    /// with S from `h`'s diagonal ([`NullSpace::scaled_by`]), so the augmented matrix keeps H's
    /// scale direction by direction, whatever the features' units. The update goes
    /// through the nonzeros of N (the multinomial's basis vectors have k each). For p above
    /// [`DIRECT_KEEP_H_MAX_P`] only the lower triangle is updated and read, and `h` becomes the factor.
    pub fn new(mut h: Array2<f64>, null: Option<ArrayView2<f64>>) -> Result<Self> {
        let p = h.nrows();
        if h.ncols() != p {
            return Err(Error::Shape { arg: "hessian", msg: format!("must be square, got {:?}", h.dim()) });
        }
        let keep = p <= DIRECT_KEEP_H_MAX_P;
        if !keep && !h.t().is_standard_layout() {
            h = column_major_lower(h);
        }
        if let Some(nb) = null {
            let null = NullSpace::scaled_by(nb.to_owned(), h.diag());
            add_low_rank(&mut h, &null, keep);
        }
        let (factored, h) = if keep { (Cholesky::factor(h.view()), Some(h)) } else { (Cholesky::factor_in_place(h), None) };
        let chol = factored.map_err(|e| match e {
            Error::Singular { msg } => Error::Singular {
                msg: format!(
                    "{msg}. The objective has no unique minimiser (collinear or constant features, \
                     fewer points than parameters, or separable classes without a penalty): \
                     use l2 > 0 or damping > 0, or remove the redundant features"
                ),
            },
            other => other,
        })?;
        debug_assert_eq!(chol.dim(), p);
        Ok(Self { chol, h })
    }

    pub fn dim(&self) -> usize {
        self.chol.dim()
    }

    /// The factored (augmented, damped) matrix, if it was kept (p up to [`DIRECT_KEEP_H_MAX_P`]).
    pub fn matrix(&self) -> Option<&Array2<f64>> {
        self.h.as_ref()
    }

    /// Solve in place for every column of `rhs` (p x r), columns in parallel.
    pub fn solve_in_place(&self, mut rhs: ArrayViewMut2<f64>) {
        rhs.axis_chunks_iter_mut(Axis(1), RHS_CHUNK).into_par_iter().for_each(|chunk| self.chol.solve_in_place(chunk));
    }

    /// Solve in place on the calling thread (for callers that already parallelise).
    pub fn chol_solve_in_place(&self, rhs: ArrayViewMut2<f64>) {
        self.chol.solve_in_place(rhs);
    }

    /// Relative residuals ||H x_j - b_j|| / ||b_j|| of solutions `x` (p x m) of right-hand sides
    /// `b`, with H the factored (augmented, damped) matrix. When H was not kept (p above
    /// [`DIRECT_KEEP_H_MAX_P`]) H x is computed as L (L^T x) from the factor: that measures the
    /// triangular solves, not the rounding of the factorisation itself (backward-stable, about
    /// machine precision times the growth of L).
    pub fn residuals(&self, b: ArrayView2<f64>, x: ArrayView2<f64>) -> SolveInfo {
        let hx = match &self.h {
            Some(h) => {
                let mut hx = Array2::zeros(b.raw_dim());
                crate::linalg::gemm(hx.view_mut(), false, h.view(), x, 1.0);
                hx
            }
            None => self.chol.reconstruct_mul(x),
        };
        let residuals: Vec<f64> = hx
            .columns()
            .into_iter()
            .zip(b.columns())
            .map(|(hc, bc)| {
                let bn = bc.dot(&bc).sqrt();
                let rn = hc.iter().zip(bc).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
                if bn > 0.0 {
                    rn / bn
                } else {
                    0.0
                }
            })
            .collect();
        let m = residuals.len();
        SolveInfo { iterations: vec![0; m], converged: residuals.iter().map(|r| r.is_finite()).collect(), residuals }
    }

    /// H^{-1} g for the columns of `g` (p x r).
    pub fn solve(&self, g: ArrayView2<f64>) -> Array2<f64> {
        let mut out = g.to_owned();
        self.solve_in_place(out.view_mut());
        out
    }
}

/// `h` as a column-major matrix with the same lower triangle, without a second p x p matrix
/// when `h` is row-major (copy the lower triangle up, then view the transpose).
fn column_major_lower(mut h: Array2<f64>) -> Array2<f64> {
    if h.is_standard_layout() {
        crate::linalg::symmetrize_from_lower(&mut h);
        h.reversed_axes()
    } else {
        let mut f = Array2::zeros(h.raw_dim().f());
        f.assign(&h);
        f
    }
}

/// h += N S N^T through the nonzeros of each column of N (for columns with disjoint
/// supports, bitwise what the dense product gives): the whole matrix, or only its lower triangle.
fn add_low_rank(h: &mut Array2<f64>, null: &NullSpace, full: bool) {
    for (col, &scale) in null.basis.columns().into_iter().zip(&null.scales) {
        let nz: Vec<(usize, f64)> = col.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, v)| (i, *v)).collect();
        for &(i, vi) in &nz {
            for &(j, vj) in &nz {
                if full || j <= i {
                    h[[i, j]] += scale * (vi * vj);
                }
            }
        }
    }
}
