//! Dense linear algebra on ndarray views, backed by faer (pure Rust, no system BLAS).
//!
//! Everything here runs single-threaded (`Par::Seq`): parallelism lives one level up, over row
//! blocks, so results do not depend on the number of threads (see `blocks`).

use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use crate::error::{Error, Result};

/// Zero-copy faer view of an ndarray view (any strides).
pub fn faer_ref<'a, T>(a: &'a ArrayView2<'_, T>) -> MatRef<'a, T> {
    let s = a.strides();
    // SAFETY: the pointer, shape and strides come from a live ndarray view borrowed for 'a.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), a.nrows(), a.ncols(), s[0], s[1]) }
}

/// Zero-copy mutable faer view of an ndarray view (any strides).
pub fn faer_mut<'a, T>(a: &'a mut ArrayViewMut2<'_, T>) -> MatMut<'a, T> {
    let (rs, cs) = (a.strides()[0], a.strides()[1]);
    let (r, c) = a.dim();
    // SAFETY: as above, and the ndarray view is borrowed mutably for 'a.
    unsafe { MatMut::from_raw_parts_mut(a.as_mut_ptr(), r, c, rs, cs) }
}

/// `dst = alpha * a @ b` (`accumulate = false`) or `dst += alpha * a @ b`, in float64 or float32.
pub fn gemm<T: faer::traits::ComplexField + Copy>(mut dst: ArrayViewMut2<T>, accumulate: bool, a: ArrayView2<T>, b: ArrayView2<T>, alpha: T) {
    debug_assert_eq!(dst.nrows(), a.nrows());
    debug_assert_eq!(dst.ncols(), b.ncols());
    debug_assert_eq!(a.ncols(), b.nrows());
    if dst.is_empty() {
        return;
    }
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::matmul(faer_mut(&mut dst), beta, faer_ref(&a), faer_ref(&b), alpha, Par::Seq);
}

/// Lower triangle of `dst (+)= alpha * a @ b`, for products known to be symmetric (Z^T D Z):
/// half the flops of `gemm`. The strict upper triangle of `dst` is left untouched.
pub fn gemm_lower(mut dst: ArrayViewMut2<f64>, accumulate: bool, a: ArrayView2<f64>, b: ArrayView2<f64>, alpha: f64) {
    if dst.is_empty() {
        return;
    }
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
    faer::linalg::matmul::triangular::matmul(
        faer_mut(&mut dst),
        BlockStructure::TriangularLower,
        beta,
        faer_ref(&a),
        BlockStructure::Rectangular,
        faer_ref(&b),
        BlockStructure::Rectangular,
        alpha,
        Par::Seq,
    );
}

/// Copy the lower triangle onto the upper one.
pub fn symmetrize_from_lower(a: &mut Array2<f64>) {
    let n = a.nrows();
    for i in 0..n {
        for j in 0..i {
            a[[j, i]] = a[[i, j]];
        }
    }
}

/// Cholesky factor L (H = L L^T) of a symmetric positive definite matrix.
pub struct Cholesky {
    l: faer::Mat<f64>,
}

impl Cholesky {
    /// Factor `h` (only its lower triangle is read). Fails with `Singular` when `h` is not
    /// numerically positive definite, naming the first failing pivot.
    pub fn factor(h: ArrayView2<f64>) -> Result<Self> {
        let n = h.nrows();
        if h.ncols() != n {
            return Err(Error::Shape { arg: "hessian", msg: format!("must be square, got {:?}", h.dim()) });
        }
        let mut l = faer::Mat::<f64>::zeros(n, n);
        l.copy_from_triangular_lower(faer_ref(&h));
        let par = Par::Seq;
        let params = Default::default();
        let mut mem = faer::dyn_stack::MemBuffer::new(
            faer::linalg::cholesky::llt::factor::cholesky_in_place_scratch::<f64>(n, par, params),
        );
        let stack = faer::dyn_stack::MemStack::new(&mut mem);
        let res = faer::linalg::cholesky::llt::factor::cholesky_in_place(
            l.as_mut(),
            Default::default(),
            par,
            stack,
            params,
        );
        match res {
            Ok(_) => {}
            Err(faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index }) => {
                return Err(Error::Singular {
                    msg: format!(
                        "the Hessian is not positive definite (Cholesky pivot {index} of {n} is not positive)"
                    ),
                })
            }
        }
        // Pivots that are positive but tiny relative to the largest make the solve meaningless.
        let diag: Vec<f64> = (0..n).map(|i| l[(i, i)]).collect();
        let max = diag.iter().cloned().fold(0.0_f64, f64::max);
        if let Some(index) = diag.iter().position(|&d| !(d > max * 1e-7) || !d.is_finite()) {
            return Err(Error::Singular {
                msg: format!(
                    "the Hessian is numerically singular (condition number above 1e14 at pivot {index} of {n})"
                ),
            });
        }
        Ok(Self { l })
    }

    pub fn dim(&self) -> usize {
        self.l.nrows()
    }

    /// Solve H X = B in place for a block of right-hand sides (the columns of `b`).
    pub fn solve_in_place(&self, mut b: ArrayViewMut2<f64>) {
        if b.is_empty() {
            return;
        }
        let mut stack_mem = faer::dyn_stack::MemBuffer::new(faer::dyn_stack::StackReq::EMPTY);
        let stack = faer::dyn_stack::MemStack::new(&mut stack_mem);
        faer::linalg::cholesky::llt::solve::solve_in_place(self.l.as_ref(), faer_mut(&mut b), Par::Seq, stack);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gemm_matches_naive_for_strided_views() {
        let a = array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]];
        let b = array![[1.0, 0.5], [0.0, -1.0], [2.0, 1.0]];
        let mut c = Array2::<f64>::zeros((2, 2));
        gemm(c.view_mut(), false, a.view(), b.view(), 1.0);
        assert_eq!(c, a.dot(&b));
        // transposed (column-major) operands and accumulation
        let mut d = Array2::<f64>::ones((3, 3));
        gemm(d.view_mut(), true, b.view(), a.view(), 2.0);
        assert_eq!(d, 1.0 + 2.0 * b.dot(&a));
        let mut e = Array2::<f64>::zeros((3, 3));
        gemm(e.view_mut(), false, a.t(), a.view(), 1.0);
        assert_eq!(e, a.t().dot(&a));
    }

    #[test]
    fn lower_product_and_cholesky_solve() {
        let z = array![[1.0, 2.0], [0.5, -1.0], [3.0, 1.0]];
        let mut h = Array2::<f64>::zeros((2, 2));
        gemm_lower(h.view_mut(), false, z.t(), z.view(), 1.0);
        symmetrize_from_lower(&mut h);
        assert_eq!(h, z.t().dot(&z));
        let chol = Cholesky::factor(h.view()).unwrap();
        let mut rhs = array![[1.0], [2.0]];
        chol.solve_in_place(rhs.view_mut());
        let back = h.dot(&rhs);
        assert!((back[[0, 0]] - 1.0).abs() < 1e-12 && (back[[1, 0]] - 2.0).abs() < 1e-12);
    }

    #[test]
    fn singular_matrix_is_an_error_not_a_panic() {
        let h = array![[1.0, 1.0], [1.0, 1.0]];
        assert!(matches!(Cholesky::factor(h.view()), Err(Error::Singular { .. })));
        let h = array![[1.0, 2.0], [2.0, 1.0]];
        assert!(matches!(Cholesky::factor(h.view()), Err(Error::Singular { .. })));
    }
}
