//! Dense linear algebra on ndarray views, backed by faer (pure Rust, no system BLAS).
//!
//! Products run single-threaded (`Par::Seq`): parallelism lives one level up, over row blocks or
//! Hessian tiles, so results do not depend on the number of threads (see `blocks`). Large
//! Cholesky factorisations are parallel the same way: fixed pieces of sequential kernels
//! (`factor_blocked`).
//!
//! Every faer call here is followed by [`clear_upper_ymm`]: faer's x86 GEMM kernels return with
//! the upper halves of the YMM registers dirty, and legacy-SSE code that runs next on the thread
//! (glibc's `tanh`, `exp`, ...) then pays a state-transition penalty on every instruction (tanh
//! measured 3-6x slower).

use faer::linalg::matmul::triangular::BlockStructure;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, ShapeBuilder};
use rayon::prelude::*;

use crate::cancel::Cancel;
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

/// Executes `vzeroupper` where the CPU has AVX (a no-op elsewhere): marks the upper halves of the
/// YMM registers clean after faer's kernels, which do not. All vector registers are
/// call-clobbered, so nothing live is lost.
#[inline]
pub fn clear_upper_ymm() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: guarded by the runtime check above, so the instruction exists on this CPU.
            unsafe { core::arch::x86_64::_mm256_zeroupper() }
        }
    }
}

/// The float types the kernels run in (f64, and f32 for float32 scoring), with the constants
/// error bounds need, as f64.
pub trait Real: Copy + Into<f64> {
    /// Machine epsilon (twice the unit roundoff).
    const EPSILON_F64: f64;
    /// The largest finite value.
    const MAX_F64: f64;
}

impl Real for f64 {
    const EPSILON_F64: f64 = f64::EPSILON;
    const MAX_F64: f64 = f64::MAX;
}

impl Real for f32 {
    const EPSILON_F64: f64 = f32::EPSILON as f64;
    const MAX_F64: f64 = f32::MAX as f64;
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
    clear_upper_ymm();
}

/// Adds the tile `rows` x `cols` of M^T M to `tile` (only its lower triangle when `rows ==
/// cols`): a Gauss-Newton factor's part of the Hessian. A column-major `m` is read fastest.
pub fn add_gram_tile(m: ArrayView2<f64>, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, tile: ArrayViewMut2<f64>) {
    let (mr, mc) = (m.slice(ndarray::s![.., rows.clone()]), m.slice(ndarray::s![.., cols.clone()]));
    if rows == cols {
        gemm_lower(tile, true, mr.t(), mc, 1.0);
    } else {
        gemm(tile, true, mr.t(), mc, 1.0);
    }
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
    clear_upper_ymm();
}

/// A column-major copy of `a`, by 64 x 64 blocks (so the strided side stays in cache).
pub fn to_column_major(a: ArrayView2<f64>) -> Array2<f64> {
    const B: usize = 64;
    let (r, c) = a.dim();
    let mut out = Array2::zeros((r, c).f());
    for i0 in (0..r).step_by(B) {
        for j0 in (0..c).step_by(B) {
            for j in j0..(j0 + B).min(c) {
                for i in i0..(i0 + B).min(r) {
                    out[[i, j]] = a[[i, j]];
                }
            }
        }
    }
    out
}

/// Copy the lower triangle onto the upper one (any layout; 64 x 64 blocks keep the strided side in cache).
pub fn symmetrize_from_lower(a: &mut Array2<f64>) {
    const B: usize = 64;
    let n = a.nrows();
    for ib in (0..n).step_by(B) {
        for jb in (0..=ib).step_by(B) {
            for i in ib..(ib + B).min(n) {
                for j in jb..(jb + B).min(i) {
                    a[[j, i]] = a[[i, j]];
                }
            }
        }
    }
}

/// Matrices at least this large are factored blockwise in parallel (`factor_blocked`).
const PARALLEL_CHOLESKY_MIN_N: usize = 512;

/// Cholesky factor L (H = L L^T) of a symmetric positive definite matrix.
pub struct Cholesky {
    l: Factor,
}

/// The smallest accepted L_ii^2 / H_ii: the relative curvature a direction must keep after the
/// earlier ones are projected out. float64 Cholesky computes it to about p eps, and it bounds
/// the condition number of H equilibrated by its diagonal (NIST's Longley data: 7e-9, accepted).
pub const PIVOT_RTOL: f64 = 1e-12;

/// Where L lives: a copy with zeros above the diagonal, or the lower triangle of the caller's
/// matrix, factored in place (its strict upper triangle is scratch, never read).
enum Factor {
    Copy(faer::Mat<f64>),
    InPlace(Array2<f64>),
}

impl Cholesky {
    /// Factor `h` (only its lower triangle is read) into a new matrix. Fails with `Singular` when
    /// `h` is not numerically positive definite, naming the first failing pivot.
    pub fn factor(h: ArrayView2<f64>) -> Result<Self> {
        Self::factor_interruptible(h, None)
    }

    /// [`Cholesky::factor`] that stops with `Interrupted` at the next panel boundary once
    /// `cancel` is set (from 512 rows up the factorisation goes panel by panel: at p = 7850, 31
    /// panels of about 0.1 s each on two cores, where the whole takes seconds).
    pub fn factor_interruptible(h: ArrayView2<f64>, cancel: Option<&Cancel>) -> Result<Self> {
        let n = check_square(h.dim())?;
        let mut l = faer::Mat::<f64>::zeros(n, n);
        l.copy_from_triangular_lower(faer_ref(&h));
        factor_lower_in_place(l.as_mut(), cancel)?;
        Ok(Self { l: Factor::Copy(l) })
    }

    /// Like [`Cholesky::factor_interruptible`] without a copy: the lower triangle of `h` is
    /// overwritten with L. Its strict upper triangle is not read, but faer uses it as scratch
    /// space: it holds nothing useful afterwards. Fastest when `h` is column-major.
    pub fn factor_in_place(mut h: Array2<f64>, cancel: Option<&Cancel>) -> Result<Self> {
        check_square(h.dim())?;
        factor_lower_in_place(faer_mut(&mut h.view_mut()), cancel)?;
        Ok(Self { l: Factor::InPlace(h) })
    }

    /// L, read through its lower triangle only.
    fn l(&self) -> MatRef<'_, f64> {
        match &self.l {
            Factor::Copy(l) => l.as_ref(),
            Factor::InPlace(h) => {
                let v = h.view();
                let (r, c, rs, cs) = (v.nrows(), v.ncols(), v.strides()[0], v.strides()[1]);
                // SAFETY: the pointer, shape and strides come from `h`, borrowed for the result's lifetime.
                unsafe { MatRef::from_raw_parts(v.as_ptr(), r, c, rs, cs) }
            }
        }
    }

    pub fn dim(&self) -> usize {
        self.l().nrows()
    }

    /// Solve H X = B in place for a block of right-hand sides (the columns of `b`).
    pub fn solve_in_place(&self, mut b: ArrayViewMut2<f64>) {
        if b.is_empty() {
            return;
        }
        let mut stack_mem = faer::dyn_stack::MemBuffer::new(faer::dyn_stack::StackReq::EMPTY);
        let stack = faer::dyn_stack::MemStack::new(&mut stack_mem);
        faer::linalg::cholesky::llt::solve::solve_in_place(self.l(), faer_mut(&mut b), Par::Seq, stack);
        clear_upper_ymm();
    }

    /// L (L^T X) for the columns of `x`: H X up to the factorisation's rounding, without H.
    pub fn reconstruct_mul(&self, x: ArrayView2<f64>) -> Array2<f64> {
        use faer::linalg::matmul::triangular::matmul;
        let (l, x) = (self.l(), faer_ref(&x));
        let mut y = faer::Mat::<f64>::zeros(x.nrows(), x.ncols());
        let mut out = Array2::<f64>::zeros((x.nrows(), x.ncols()).f());
        if out.is_empty() {
            return out;
        }
        let rect = BlockStructure::Rectangular;
        matmul(y.as_mut(), rect, Accum::Replace, l.transpose(), BlockStructure::TriangularUpper, x, rect, 1.0, Par::Seq);
        matmul(faer_mut(&mut out.view_mut()), rect, Accum::Replace, l, BlockStructure::TriangularLower, y.as_ref(), rect, 1.0, Par::Seq);
        clear_upper_ymm();
        out
    }
}

fn check_square((r, c): (usize, usize)) -> Result<usize> {
    if r != c {
        return Err(Error::Shape { arg: "hessian", msg: format!("must be square, got ({r}, {c})") });
    }
    Ok(r)
}

/// Overwrite the lower triangle of `l` with the Cholesky factor of the matrix it holds (the
/// strict upper triangle is not read): faer's sequential algorithm, or from
/// `PARALLEL_CHOLESKY_MIN_N` on the blocked parallel one, [`factor_blocked`].
fn factor_lower_in_place(mut l: MatMut<'_, f64>, cancel: Option<&Cancel>) -> Result<()> {
    let n = l.nrows();
    let h_diag: Vec<f64> = (0..n).map(|i| l[(i, i)]).collect();
    let res = if n >= PARALLEL_CHOLESKY_MIN_N { factor_blocked(l.as_mut(), cancel) } else { factor_seq(l.as_mut()).map_err(Stop::Pivot) };
    match res {
        Err(Stop::Pivot(index)) => {
            return Err(Error::Singular { msg: format!("the Hessian is not positive definite (Cholesky pivot {index} of {n} is not positive)") })
        }
        Err(Stop::Interrupted) => return Err(Error::Interrupted),
        Ok(()) => {}
    }
    // A positive pivot can still be rounding noise. L_ii^2 / H_ii is the part of direction i's
    // curvature that the earlier directions do not explain (1 - R^2 in the H metric), a ratio
    // that rescaling the parameters (the features' units) leaves unchanged: test it, not L_ii
    // against the largest pivot, which a rescaled column moves.
    if let Some(index) = (0..n).position(|i| !(l[(i, i)] * l[(i, i)] > PIVOT_RTOL * h_diag[i]) || !l[(i, i)].is_finite()) {
        return Err(Error::Singular {
            msg: format!(
                "the Hessian is numerically singular: direction {index} of {n} is a combination of the earlier ones \
                 (its unexplained curvature is below {PIVOT_RTOL:e} of its own, whatever the units)"
            ),
        });
    }
    Ok(())
}

/// Why a factorisation stopped early.
enum Stop {
    /// The first non-positive pivot.
    Pivot(usize),
    /// Cancelled between panels.
    Interrupted,
}

/// faer's sequential Cholesky in place; `Err(index)` of the first non-positive pivot.
fn factor_seq(l: MatMut<'_, f64>) -> std::result::Result<(), usize> {
    use faer::linalg::cholesky::llt::factor::{cholesky_in_place, cholesky_in_place_scratch, LltError};
    let params = Default::default();
    let mut mem = faer::dyn_stack::MemBuffer::new(cholesky_in_place_scratch::<f64>(l.nrows(), Par::Seq, params));
    let stack = faer::dyn_stack::MemStack::new(&mut mem);
    let res = cholesky_in_place(l, Default::default(), Par::Seq, stack, params);
    clear_upper_ymm();
    match res {
        Ok(_) => Ok(()),
        Err(LltError::NonPositivePivot { index }) => Err(index),
    }
}

/// Columns per panel of [`factor_blocked`], and the side of its parallel pieces.
const CHOLESKY_PANEL: usize = 256;
const CHOLESKY_TILE: usize = 512;

/// Right-looking blocked Cholesky in place. For each panel of `CHOLESKY_PANEL` columns: factor
/// its diagonal block (faer, sequential), solve the rows below it against that factor (by fixed
/// chunks of rows, in parallel), then subtract the panel's outer product from the trailing lower
/// triangle (by fixed tiles, in parallel). Every piece is a fixed sequence of sequential faer
/// kernels on fixed data, so the factor is the same bits for any number of threads. `cancel` is
/// looked at before each panel.
///
/// (faer's own `Par::rayon` factorisation is also thread-count independent, but needs faer's
/// `rayon` feature, which turns on private-gemm-x86's cache detection: on a machine reporting a
/// large L3 every thread then reserves 2 x L3 of address space for packing.)
fn factor_blocked(mut a: MatMut<'_, f64>, cancel: Option<&Cancel>) -> std::result::Result<(), Stop> {
    use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
    use faer::reborrow::{Reborrow, ReborrowMut};
    let n = a.nrows();
    let mut k = 0;
    while k < n {
        if cancel.is_some_and(Cancel::is_cancelled) {
            return Err(Stop::Interrupted);
        }
        let w = CHOLESKY_PANEL.min(n - k);
        let (_, _, _, rest) = a.rb_mut().split_at_mut(k, k);
        let (left, right) = rest.split_at_col_mut(w);
        let (mut diag, mut panel) = left.split_at_row_mut(w);
        factor_seq(diag.rb_mut()).map_err(|i| Stop::Pivot(k + i))?;
        let diag = diag.rb();
        // panel <- panel L^-T, i.e. L X^T = panel^T, by chunks of rows
        row_chunks(panel.rb_mut(), CHOLESKY_TILE).into_par_iter().for_each(|chunk| {
            solve_lower_triangular_in_place(diag, chunk.transpose_mut(), Par::Seq);
            clear_upper_ymm();
        });
        let panel = panel.rb();
        // trailing lower triangle -= panel panel^T, by tiles
        let (_, trailing) = right.split_at_row_mut(w);
        lower_tiles_mut(trailing, CHOLESKY_TILE).into_par_iter().for_each(|(i, j, tile)| {
            let (pi, pj) = (panel.subrows(i, tile.nrows()), panel.subrows(j, tile.ncols()));
            if i == j {
                faer::linalg::matmul::triangular::matmul(
                    tile,
                    BlockStructure::TriangularLower,
                    Accum::Add,
                    pi,
                    BlockStructure::Rectangular,
                    pj.transpose(),
                    BlockStructure::Rectangular,
                    -1.0,
                    Par::Seq,
                );
            } else {
                faer::linalg::matmul::matmul(tile, Accum::Add, pi, pj.transpose(), -1.0, Par::Seq);
            }
            clear_upper_ymm();
        });
        k += w;
    }
    Ok(())
}

/// `a` cut into consecutive chunks of `size` rows (the last one shorter).
fn row_chunks(a: MatMut<'_, f64>, size: usize) -> Vec<MatMut<'_, f64>> {
    let mut out = Vec::new();
    let mut rest = a;
    while rest.nrows() > 0 {
        let h = size.min(rest.nrows());
        let (chunk, below) = rest.split_at_row_mut(h);
        out.push(chunk);
        rest = below;
    }
    out
}

/// The tiles on and below the diagonal of square `a` on a grid of `size` (the last row and
/// column of tiles shorter), with their first row and column.
fn lower_tiles_mut(a: MatMut<'_, f64>, size: usize) -> Vec<(usize, usize, MatMut<'_, f64>)> {
    let mut out = Vec::new();
    let mut rest = a;
    let mut j = 0;
    while rest.ncols() > 0 {
        let w = size.min(rest.ncols());
        let (col, right) = rest.split_at_col_mut(w);
        rest = right;
        // this column of tiles starts on the diagonal: skip the rows above it
        let (_, mut below) = col.split_at_row_mut(j);
        let mut i = j;
        while below.nrows() > 0 {
            let h = size.min(below.nrows());
            let (tile, next) = below.split_at_row_mut(h);
            out.push((i, j, tile));
            below = next;
            i += h;
        }
        j += w;
    }
    out
}

/// The pencil (A, P) diagonalised by congruence, for A symmetric positive definite (only its
/// lower triangle is read) and P = diag(`p_diag`) >= 0: B (n x n) with B^T A B = I and
/// B^T P B = diag(d), d ascending (the eigenvalues of P v = d A v). Then
/// (A - e P)^{-1} = B (I - e D)^{-1} B^T for every scalar e, which is what lets one
/// factorisation serve solves with A - e P for many e. With P = 0, B = L^{-T} (A = L L^T) and d = 0.
/// Sequential: the same bits for any number of threads.
pub fn congruent_diagonalization(a: ArrayView2<f64>, p_diag: ndarray::ArrayView1<f64>) -> Result<(Array2<f64>, ndarray::Array1<f64>)> {
    use faer::linalg::triangular_solve::{solve_lower_triangular_in_place, solve_upper_triangular_in_place};
    let n = check_square(a.dim())?;
    let chol = Cholesky::factor(a)?;
    let l = chol.l();
    let mut u = faer::Mat::<f64>::identity(n, n);
    let mut d = ndarray::Array1::zeros(n);
    if p_diag.iter().any(|&v| v != 0.0) {
        // E = L^{-1} P^{1/2}, M = E E^T = L^{-1} P L^{-T} = U D U^T
        let mut e = faer::Mat::<f64>::zeros(n, n);
        for (i, &v) in p_diag.iter().enumerate() {
            e[(i, i)] = v.max(0.0).sqrt();
        }
        solve_lower_triangular_in_place(l, e.as_mut(), Par::Seq);
        let mut m = faer::Mat::<f64>::zeros(n, n);
        faer::linalg::matmul::matmul(m.as_mut(), Accum::Replace, e.as_ref(), e.transpose(), 1.0, Par::Seq);
        let mut s = faer::diag::Diag::<f64>::zeros(n);
        let params = Default::default();
        let scratch = faer::linalg::evd::self_adjoint_evd_scratch::<f64>(n, faer::linalg::evd::ComputeEigenvectors::Yes, Par::Seq, params);
        let mut mem = faer::dyn_stack::MemBuffer::new(scratch);
        let stack = faer::dyn_stack::MemStack::new(&mut mem);
        faer::linalg::evd::self_adjoint_evd(m.as_ref(), s.as_mut(), Some(u.as_mut()), Par::Seq, stack, params)
            .map_err(|e| Error::Singular { msg: format!("the eigendecomposition of the penalty in the Hessian's metric did not converge ({e:?})") })?;
        for i in 0..n {
            d[i] = s[i];
        }
    }
    // B = L^{-T} U
    solve_upper_triangular_in_place(l.transpose(), u.as_mut(), Par::Seq);
    clear_upper_ymm();
    let b = Array2::from_shape_fn((n, n), |(i, j)| u[(i, j)]);
    Ok((b, d))
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

    /// A symmetric positive definite n x n matrix, column-major.
    fn spd(n: usize) -> Array2<f64> {
        let mut state = 42u64;
        let g = Array2::from_shape_fn((n, n + 7), |_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64) / ((1u64 << 53) as f64) - 0.5
        });
        let mut h = Array2::<f64>::zeros((n, n).f());
        gemm(h.view_mut(), false, g.view(), g.t(), 1.0);
        h.diag_mut().mapv_inplace(|v| v + 1e-3);
        h
    }

    /// A set cancel flag stops the blocked factorisation (copied or in place) with `Interrupted`;
    /// an unset one changes nothing.
    #[test]
    fn a_cancelled_cholesky_stops_and_an_uncancelled_one_gives_the_same_bits() {
        let h = spd(700);
        let cancel = Cancel::new();
        let l = |c: &Cholesky| Array2::from_shape_fn((700, 700), |(i, j)| if i >= j { c.l()[(i, j)].to_bits() } else { 0 });
        let plain = l(&Cholesky::factor(h.view()).unwrap());
        assert_eq!(l(&Cholesky::factor_interruptible(h.view(), Some(&cancel)).unwrap()), plain);
        assert_eq!(l(&Cholesky::factor_in_place(h.clone(), Some(&cancel)).unwrap()), plain);
        cancel.cancel();
        assert!(matches!(Cholesky::factor_interruptible(h.view(), Some(&cancel)), Err(Error::Interrupted)));
        assert!(matches!(Cholesky::factor_in_place(h.clone(), Some(&cancel)), Err(Error::Interrupted)));
    }

    /// The blocked parallel Cholesky gives the same bits with 1, 2 and 3 threads, copied or in
    /// place, close to faer's sequential factor.
    #[test]
    fn parallel_cholesky_does_not_depend_on_the_thread_count() {
        let h = spd(1500);
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let copy = Cholesky::factor(h.view()).unwrap();
                let in_place = Cholesky::factor_in_place(h.clone(), None).unwrap();
                let l = |c: &Cholesky| Array2::from_shape_fn((1500, 1500), |(i, j)| if i >= j { c.l()[(i, j)] } else { 0.0 });
                (l(&copy), l(&in_place))
            })
        };
        let (a, b) = run(1);
        assert_eq!(a, b);
        for threads in [2, 3] {
            let (c, d) = run(threads);
            assert!(a.iter().zip(&c).all(|(x, y)| x.to_bits() == y.to_bits()), "{threads} threads");
            assert!(a.iter().zip(&d).all(|(x, y)| x.to_bits() == y.to_bits()), "{threads} threads, in place");
        }
        let mut seq = faer::Mat::<f64>::zeros(1500, 1500);
        seq.copy_from_triangular_lower(faer_ref(&h.view()));
        factor_seq(seq.as_mut()).unwrap();
        let err = a.indexed_iter().filter(|((i, j), _)| i >= j).fold(0.0_f64, |m, ((i, j), v)| m.max((v - seq[(i, j)]).abs()));
        assert!(err < 1e-12 * a.iter().fold(0.0_f64, |m, v| m.max(v.abs())), "blocked vs faer: {err}");
        // in place, what the strict upper triangle held does not matter
        let mut poisoned = h.clone();
        (0..1500).for_each(|j| (0..j).for_each(|i| poisoned[[i, j]] = f64::NAN));
        let chol = Cholesky::factor_in_place(poisoned, None).unwrap();
        let l = Array2::from_shape_fn((1500, 1500), |(i, j)| if i >= j { chol.l()[(i, j)] } else { 0.0 });
        assert!(a.iter().zip(&l).all(|(x, y)| x.to_bits() == y.to_bits()), "upper triangle read");
        // and it is a factor: L L^T X = H X
        let x = Array2::from_shape_fn((1500, 3), |(i, j)| (i * 3 + j) as f64 % 7.0 - 3.0);
        let err = (&chol.reconstruct_mul(x.view()) - &h.dot(&x)).iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(err < 1e-9 * h.iter().fold(0.0_f64, |m, v| m.max(v.abs())) * 1500.0, "{err}");
    }

    #[test]
    fn blocked_cholesky_names_the_failing_pivot() {
        let mut h = Array2::<f64>::eye(1000);
        h[[700, 700]] = -1.0;
        let err = Cholesky::factor(h.view()).err().unwrap();
        assert!(matches!(&err, Error::Singular { msg } if msg.contains("pivot 700 of 1000")), "{err:?}");
    }

    #[test]
    fn singular_matrix_is_an_error_not_a_panic() {
        let h = array![[1.0, 1.0], [1.0, 1.0]];
        assert!(matches!(Cholesky::factor(h.view()), Err(Error::Singular { .. })));
        let h = array![[1.0, 2.0], [2.0, 1.0]];
        assert!(matches!(Cholesky::factor(h.view()), Err(Error::Singular { .. })));
    }

    #[test]
    fn congruent_diagonalization_diagonalises_both() {
        let n = 7;
        let mut state = 3_u64;
        let mut rnd = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let g = Array2::from_shape_fn((n, n), |_| rnd());
        let mut a = g.t().dot(&g);
        a.diag_mut().mapv_inplace(|v| v + 0.5);
        let p = ndarray::Array1::from_shape_fn(n, |j| if j == 3 { 0.0 } else { 0.3 * (j as f64 + 1.0) });
        let (b, d) = congruent_diagonalization(a.view(), p.view()).unwrap();
        let eye = b.t().dot(&a).dot(&b);
        let pd = b.t().dot(&Array2::from_diag(&p)).dot(&b);
        for i in 0..n {
            for j in 0..n {
                assert!((eye[[i, j]] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
                assert!((pd[[i, j]] - if i == j { d[i] } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert!(d.windows(2).into_iter().all(|w| w[0] <= w[1]) && d[0].abs() < 1e-12);
        // (A - e P)^{-1} = B (I - e D)^{-1} B^T
        let e = 0.05;
        let m = &a - &Array2::from_diag(&(&p * e));
        let inv = b.dot(&Array2::from_diag(&d.mapv(|x| 1.0 / (1.0 - e * x)))).dot(&b.t());
        let should_be_eye = m.dot(&inv);
        for i in 0..n {
            for j in 0..n {
                assert!((should_be_eye[[i, j]] - if i == j { 1.0 } else { 0.0 }).abs() < 1e-10);
            }
        }
    }
}
