//! Solving H v = g (DESIGN.md section 3). `Direct`: form H, Cholesky, many right-hand sides at
//! once. Directions in the model's null space (the multinomial's free intercepts) are handled
//! by factoring H + s N N^T instead of H: on gradients, which are orthogonal to N, this gives the
//! minimum-norm (pseudo-inverse) solution, i.e. the solve happens in the identifiable subspace.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::linalg::Cholesky;

/// Right-hand sides per parallel task in `Direct::solve`.
const RHS_CHUNK: usize = 128;

/// Direct solver: Cholesky of the (null-space augmented) Hessian.
pub struct Direct {
    chol: Cholesky,
}

impl Direct {
    /// Factor `h` (p x p, symmetric), adding s N N^T for the orthonormal null basis `null`
    /// with s the mean diagonal of `h`, so the augmented matrix keeps H's scale.
    pub fn new(mut h: Array2<f64>, null: Option<ArrayView2<f64>>) -> Result<Self> {
        let p = h.nrows();
        if let Some(nb) = null {
            let scale = h.diag().mean().unwrap_or(1.0).abs().max(f64::MIN_POSITIVE);
            h.scaled_add(scale, &nb.dot(&nb.t()));
        }
        let chol = Cholesky::factor(h.view()).map_err(|e| match e {
            Error::Singular { msg } => Error::Singular {
                msg: format!(
                    "{msg}. The objective has no unique minimiser (collinear or constant features, \
                     fewer points than parameters, or separable classes without a penalty): \
                     use l2 > 0, or remove the redundant features"
                ),
            },
            other => other,
        })?;
        debug_assert_eq!(chol.dim(), p);
        Ok(Self { chol })
    }

    pub fn dim(&self) -> usize {
        self.chol.dim()
    }

    /// Solve in place for every column of `rhs` (p x r), columns in parallel.
    pub fn solve_in_place(&self, mut rhs: ArrayViewMut2<f64>) {
        rhs.axis_chunks_iter_mut(Axis(1), RHS_CHUNK)
            .into_par_iter()
            .for_each(|chunk| self.chol.solve_in_place(chunk));
    }

    /// Solve in place on the calling thread (for callers that already parallelise).
    pub fn chol_solve_in_place(&self, rhs: ArrayViewMut2<f64>) {
        self.chol.solve_in_place(rhs);
    }

    /// H^{-1} g for the columns of `g` (p x r).
    pub fn solve(&self, g: ArrayView2<f64>) -> Array2<f64> {
        let mut out = g.to_owned();
        self.solve_in_place(out.view_mut());
        out
    }
}
