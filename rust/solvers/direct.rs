//! The direct solver: Cholesky of the (damped, null-space augmented) Hessian, many right-hand
//! sides at once, columns in parallel.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::linalg::Cholesky;

use super::cg::SolveInfo;
use super::NullSpace;

/// Right-hand sides per parallel task of the residuals' L (L^T x) (at most): a block of m columns
/// is cut into ceil(m / RESIDUAL_CHUNK) near-equal chunks, fixed by m alone, because the
/// product's bits depend on the chunk. (The solve itself is cut into one chunk per thread: its
/// bits do not depend on the chunk, see [`chunk_ranges`].) Each chunk reads all of L, which at
/// large p is what these products wait for: at p = 7850, m = 500, 64-column chunks took 1.3 s,
/// 32-column ones 1.8 s, on 2 threads.
const RESIDUAL_CHUNK: usize = 64;
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
    pub fn new(h: Array2<f64>, null: Option<ArrayView2<f64>>) -> Result<Self> {
        Self::interruptible(h, null, None)
    }

    /// [`Direct::new`] whose factorisation stops with `Interrupted` at its next panel boundary
    /// once `cancel` is set ([`Cholesky::factor_interruptible`]).
    pub fn interruptible(mut h: Array2<f64>, null: Option<ArrayView2<f64>>, cancel: Option<&Cancel>) -> Result<Self> {
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
        let (factored, h) = if keep { (Cholesky::factor_interruptible(h.view(), cancel), Some(h)) } else { (Cholesky::factor_in_place(h, cancel), None) };
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
    pub fn solve_in_place(&self, rhs: ArrayViewMut2<f64>) {
        // one chunk per thread (of two columns at least): every chunk reads all of L
        let pieces = rayon::current_num_threads().min(rhs.ncols() / 2).max(1);
        column_chunks(rhs, pieces).into_par_iter().for_each(|chunk| self.chol.solve_in_place(chunk));
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
            None => {
                // L (L^T x) by chunks of at most RESIDUAL_CHUNK columns, in parallel
                let mut hx = Array2::zeros(b.raw_dim().f());
                let pieces = x.ncols().div_ceil(RESIDUAL_CHUNK).max(1);
                let xs: Vec<_> = chunk_ranges(x.ncols(), pieces).into_iter().map(|r| x.slice(ndarray::s![.., r])).collect();
                column_chunks(hx.view_mut(), pieces).into_par_iter().zip(xs).for_each(|(mut out, xc)| out.assign(&self.chol.reconstruct_mul(xc)));
                hx
            }
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

/// The column ranges of a block of m right-hand sides cut into `pieces` near-equal chunks. For
/// the solve, `pieces` <= m / 2 keeps every chunk at two columns or more: faer solves a single
/// column by another path, with other rounding, while from two columns on a column's bits do not
/// depend on the other columns of its chunk (tested below), so any such cut, whatever the thread
/// count, gives the bits of one solve of all m columns.
fn chunk_ranges(m: usize, pieces: usize) -> Vec<std::ops::Range<usize>> {
    let pieces = pieces.clamp(1, m.max(1));
    (0..pieces).map(|i| i * m / pieces..(i + 1) * m / pieces).collect()
}

/// `a` cut into the column chunks of [`chunk_ranges`].
fn column_chunks(a: ArrayViewMut2<'_, f64>, pieces: usize) -> Vec<ArrayViewMut2<'_, f64>> {
    let mut rest = a;
    let mut out = Vec::new();
    for r in chunk_ranges(rest.ncols(), pieces) {
        let (head, tail) = rest.split_at(Axis(1), r.len());
        out.push(head);
        rest = tail;
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{s, Array2};

    fn spd(p: usize) -> Array2<f64> {
        let a = Array2::from_shape_fn((p, p), |(i, j)| (((i * 31 + j * 17) % 23) as f64 - 11.0) * 0.01);
        let mut h = a.dot(&a.t());
        h.diag_mut().mapv_inplace(|v| v + 0.01 * p as f64);
        h
    }

    #[test]
    fn chunks_cover_the_columns_with_no_single_column_piece() {
        for m in 0..200 {
            for threads in 1..9 {
                // as the solve cuts them
                let r = chunk_ranges(m, threads.min(m / 2).max(1));
                assert_eq!(r.first().map(|r| r.start), Some(0));
                assert_eq!(r.last().map(|r| r.end), Some(m));
                assert!(r.windows(2).all(|w| w[0].end == w[1].start));
                assert!(r.len() <= threads && r.iter().all(|c| c.len() >= 2 || m <= 1), "m = {m}: {r:?}");
            }
        }
    }

    /// What the chunking relies on: from two columns on, a column's solution has the same bits
    /// whatever other columns are solved with it. The residuals, by chunks too (from L (L^T x)
    /// above the kept-H limit), stay at rounding level.
    #[test]
    fn a_columns_bits_do_not_depend_on_its_chunk() {
        for p in [40, 300, DIRECT_KEEP_H_MAX_P + 4] {
            let h = spd(p);
            let b = Array2::from_shape_fn((p, 70), |(i, j)| ((i * 7 + j * 13) % 19) as f64 * 0.1 - 0.9);
            let direct = Direct::new(h, None).unwrap();
            let all = direct.solve(b.view());
            let mut parts = b.clone();
            direct.chol_solve_in_place(parts.slice_mut(s![.., ..2]));
            direct.chol_solve_in_place(parts.slice_mut(s![.., 2..]));
            assert!(all.iter().zip(&parts).all(|(a, b)| a.to_bits() == b.to_bits()), "p = {p}");
            // so the solve's one chunk per thread gives the same bits on any number of threads
            for threads in [1, 3, 5] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                let got = pool.install(|| direct.solve(b.view()));
                assert!(got.iter().zip(&all).all(|(a, b)| a.to_bits() == b.to_bits()), "p = {p}, {threads} threads");
            }
            let info = direct.residuals(b.view(), all.view());
            assert!(info.residuals.iter().all(|&r| r < 1e-10), "p = {p}: {:?}", info.residuals);
        }
    }
}
