//! The feature matrix X of a block of rows, dense or sparse (CSR), with the handful of products
//! the GLM kernels are written in. Sparse blocks cost O(nnz) per product, never O(n d): a
//! bag-of-words training set with d = 10^5 is never densified.

use std::ops::Range;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, CowArray, Ix2, ShapeBuilder};

use crate::error::{Error, Result};
use crate::linalg::{gemm, gemm_lower};

/// The rows of `diag(a) [x[:, cf], 1 if icpt]`, row-major, and (with `with_sums`) their column
/// sums: row by row, one pass, no zero fill, each row's sums added while it is in cache. Each
/// value is one product and each sum one addition per row in row order, whatever the vector
/// width: the AVX2 build of the loop (when the CPU has it; the crate is compiled for baseline
/// x86-64) gives the same bits.
fn scaled_rows(x: ArrayView2<f64>, a: ArrayView1<f64>, cf: Range<usize>, icpt: bool, with_sums: bool) -> (Vec<f64>, Vec<f64>) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        /// # Safety
        /// The CPU must have AVX2.
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(x: ArrayView2<f64>, a: ArrayView1<f64>, cf: Range<usize>, icpt: bool, with_sums: bool) -> (Vec<f64>, Vec<f64>) {
            scaled_rows_loop(x, a, cf, icpt, with_sums)
        }
        // SAFETY: the CPU has AVX2, checked just above
        return unsafe { avx2(x, a, cf, icpt, with_sums) };
    }
    scaled_rows_loop(x, a, cf, icpt, with_sums)
}

#[inline(always)]
fn scaled_rows_loop(x: ArrayView2<f64>, a: ArrayView1<f64>, cf: Range<usize>, icpt: bool, with_sums: bool) -> (Vec<f64>, Vec<f64>) {
    let width = cf.len() + usize::from(icpt);
    let mut dz = Vec::with_capacity(x.nrows() * width);
    let mut sums = vec![0.0; if with_sums { width } else { 0 }];
    for (xr, &ai) in x.rows().into_iter().zip(&a) {
        let start = dz.len();
        let xr = xr.slice_move(s![cf.clone()]);
        match xr.as_slice() {
            Some(v) => dz.extend(v.iter().map(|&v| ai * v)),
            None => dz.extend(xr.iter().map(|&v| ai * v)),
        }
        if icpt {
            dz.push(ai);
        }
        sums.iter_mut().zip(&dz[start..]).for_each(|(s, &v)| *s += v);
    }
    (dz, sums)
}

/// Rows of a compressed sparse row matrix. `indptr` holds absolute offsets into `indices` and
/// `data`, so a block of rows is a sub-slice of `indptr` sharing the entry arrays.
#[derive(Clone, Copy, Debug)]
pub struct Csr<'a> {
    pub indptr: &'a [i64],
    pub indices: &'a [i32],
    pub data: &'a [f64],
    pub ncols: usize,
}

impl<'a> Csr<'a> {
    /// Validate a whole CSR matrix (as scipy.sparse.csr_matrix stores it): `indptr` starts at 0,
    /// never decreases and ends at nnz; column indices are in range and, within a row, strictly
    /// increasing (canonical form: sorted, no duplicates); values are finite. Errors name `X`.
    pub fn new(indptr: &'a [i64], indices: &'a [i32], data: &'a [f64], ncols: usize) -> Result<Self> {
        Self::checked(indptr, indices, data, ncols, "X")
    }

    /// [`Csr::new`] with errors naming `arg`.
    pub fn checked(indptr: &'a [i64], indices: &'a [i32], data: &'a [f64], ncols: usize, arg: &'static str) -> Result<Self> {
        let bad = |msg: String| Error::Value { arg, msg: format!("sparse matrix: {msg}") };
        if indptr.is_empty() {
            return Err(bad("indptr is empty".into()));
        }
        if indices.len() != data.len() {
            return Err(bad(format!("{} column indices but {} values", indices.len(), data.len())));
        }
        if indptr[0] != 0 || *indptr.last().expect("non-empty") != data.len() as i64 {
            return Err(bad(format!("indptr must run from 0 to nnz = {}", data.len())));
        }
        // indptr first, whole: a later decrease would otherwise let an early row run past nnz
        if let Some(row) = indptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(bad(format!("indptr decreases at row {row}")));
        }
        for (row, w) in indptr.windows(2).enumerate() {
            let cols = &indices[w[0] as usize..w[1] as usize];
            for (i, &c) in cols.iter().enumerate() {
                if c < 0 || c as usize >= ncols {
                    return Err(bad(format!("column index {c} in row {row} is out of range for {ncols} columns")));
                }
                if i > 0 && c <= cols[i - 1] {
                    return Err(bad(format!("column indices of row {row} are not sorted and unique (call X.sum_duplicates())")));
                }
            }
            if let Some(i) = (w[0] as usize..w[1] as usize).find(|&e| !data[e].is_finite()) {
                return Err(Error::Value { arg, msg: format!("contains NaN or infinity (first at row {row}, column {})", indices[i]) });
            }
        }
        Ok(Self { indptr, indices, data, ncols })
    }

    pub fn nrows(&self) -> usize {
        self.indptr.len() - 1
    }

    pub fn nnz(&self) -> usize {
        (self.indptr[self.nrows()] - self.indptr[0]) as usize
    }

    /// Rows `start..end` (zero-copy).
    pub fn rows(&self, start: usize, end: usize) -> Csr<'a> {
        Csr { indptr: &self.indptr[start..=end], ..*self }
    }

    /// (column indices, values) of row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> (&'a [i32], &'a [f64]) {
        let r = self.indptr[i] as usize..self.indptr[i + 1] as usize;
        (&self.indices[r.clone()], &self.data[r])
    }

    /// The rows as a dense matrix (for small blocks only: tests and gathered rows).
    pub fn to_dense(&self) -> Array2<f64> {
        let mut out = Array2::zeros((self.nrows(), self.ncols));
        for i in 0..self.nrows() {
            let (cols, vals) = self.row(i);
            for (&c, &v) in cols.iter().zip(vals) {
                out[[i, c as usize]] = v;
            }
        }
        out
    }
}

/// A block of X: a dense view or CSR rows.
#[derive(Clone, Copy, Debug)]
pub enum XView<'a> {
    Dense(ArrayView2<'a, f64>),
    Csr(Csr<'a>),
}

impl<'a> From<ArrayView2<'a, f64>> for XView<'a> {
    fn from(a: ArrayView2<'a, f64>) -> Self {
        XView::Dense(a)
    }
}

impl<'a> XView<'a> {
    pub fn nrows(&self) -> usize {
        match self {
            XView::Dense(a) => a.nrows(),
            XView::Csr(c) => c.nrows(),
        }
    }

    pub fn ncols(&self) -> usize {
        match self {
            XView::Dense(a) => a.ncols(),
            XView::Csr(c) => c.ncols,
        }
    }

    /// Rows `start..end` (zero-copy).
    pub fn rows(&self, start: usize, end: usize) -> XView<'a> {
        match self {
            XView::Dense(a) => XView::Dense(a.slice_move(s![start..end, ..])),
            XView::Csr(c) => XView::Csr(c.rows(start, end)),
        }
    }

    /// The block as a dense array: borrowed when dense, densified when sparse.
    pub fn to_dense(&self) -> CowArray<'a, f64, Ix2> {
        match self {
            XView::Dense(a) => CowArray::from(*a),
            XView::Csr(c) => CowArray::from(c.to_dense()),
        }
    }

    /// `out (n x c) = X m` for `m` (d x c).
    pub fn dot_into(&self, m: ArrayView2<f64>, mut out: ArrayViewMut2<f64>) {
        match self {
            XView::Dense(a) => gemm(out, false, *a, m, 1.0),
            XView::Csr(c) => {
                let m = m.as_standard_layout();
                out.fill(0.0);
                for i in 0..c.nrows() {
                    let (cols, vals) = c.row(i);
                    let mut o = out.row_mut(i);
                    for (&j, &v) in cols.iter().zip(vals) {
                        o.scaled_add(v, &m.row(j as usize));
                    }
                }
            }
        }
    }

    /// `X m` (n x c).
    pub fn dot(&self, m: ArrayView2<f64>) -> Array2<f64> {
        let mut out = Array2::zeros((self.nrows(), m.ncols()));
        self.dot_into(m, out.view_mut());
        out
    }

    /// `out (d x c) += X^T t` for `t` (n x c).
    pub fn t_dot_add(&self, t: ArrayView2<f64>, mut out: ArrayViewMut2<f64>) {
        match self {
            XView::Dense(a) => gemm(out, true, a.t(), t, 1.0),
            XView::Csr(c) => {
                for i in 0..c.nrows() {
                    let (cols, vals) = c.row(i);
                    let ti = t.row(i);
                    for (&j, &v) in cols.iter().zip(vals) {
                        out.row_mut(j as usize).scaled_add(v, &ti);
                    }
                }
            }
        }
    }

    /// `out (d x c) += (X o X)^T t`: squared entries, for Hessian diagonals.
    pub fn sq_t_dot_add(&self, t: ArrayView2<f64>, mut out: ArrayViewMut2<f64>) {
        match self {
            XView::Dense(a) => gemm(out, true, a.mapv(|v| v * v).t(), t, 1.0),
            XView::Csr(c) => {
                for i in 0..c.nrows() {
                    let (cols, vals) = c.row(i);
                    let ti = t.row(i);
                    for (&j, &v) in cols.iter().zip(vals) {
                        out.row_mut(j as usize).scaled_add(v * v, &ti);
                    }
                }
            }
        }
    }

    /// Row `i` scaled by `a`, written into `out` (d); zeros where a sparse row has no entry.
    pub fn row_scaled_into(&self, i: usize, a: f64, mut out: ArrayViewMut1<f64>) {
        match self {
            XView::Dense(x) => out.zip_mut_with(&x.row(i), |o, &v| *o = a * v),
            XView::Csr(c) => {
                out.fill(0.0);
                let (cols, vals) = c.row(i);
                for (&j, &v) in cols.iter().zip(vals) {
                    out[j as usize] = a * v;
                }
            }
        }
    }

    /// Adds the block (rows, cols) of Z^T diag(a) Z to `out`, where Z = [X, 1] has d + 1 columns
    /// (the last is the intercept's). With `lower`, `rows == cols` and only the lower triangle of
    /// `out` is written (the rest is not touched).
    pub fn gram_add(&self, a: ArrayView1<f64>, rows: Range<usize>, cols: Range<usize>, lower: bool, mut out: ArrayViewMut2<f64>) {
        let d = self.ncols();
        match self {
            XView::Dense(x) => {
                // dz = diag(a) Z_cols; then X_rows^T dz, plus the column sums of dz as the
                // intercept's row when `rows` holds it. dz takes x's layout: column-major x (the
                // tiled Hessian's chunks) gives a column-major dz, built from contiguous columns,
                // which faer's product is fastest with
                let cf = cols.start..cols.end.min(d);
                // the intercept's row of the tile: the column sums of dz
                let with_sums = rows.contains(&d);
                let (dz, row_sums) = if x.t().is_standard_layout() {
                    // column by column, no zero fill (the tiled Hessian's copies are tens of MB
                    // each); each column's sum is taken while it is in cache, as `sum_axis` would
                    // (ndarray's unrolled fold over the contiguous column: the same bits)
                    let a = a.as_standard_layout();
                    let a = a.as_slice().expect("standard layout");
                    let mut dz = Vec::with_capacity(x.nrows() * cols.len());
                    let mut sums = Vec::with_capacity(if with_sums { cols.len() } else { 0 });
                    for j in 0..cols.len() {
                        let start = dz.len();
                        match cf.start + j {
                            c if c < cf.end => {
                                let col = x.column(c);
                                match col.as_slice() {
                                    Some(v) => dz.extend(v.iter().zip(a).map(|(&v, &ai)| ai * v)),
                                    None => dz.extend(col.iter().zip(a).map(|(&v, &ai)| ai * v)),
                                }
                            }
                            _ => dz.extend_from_slice(a),
                        }
                        if with_sums {
                            sums.push(ArrayView1::from(&dz[start..]).sum());
                        }
                    }
                    let dz = Array2::from_shape_vec((x.nrows(), cols.len()).f(), dz).expect("one column per entry of cols");
                    (dz, with_sums.then(|| Array1::from(sums)))
                } else {
                    let (dz, sums) = scaled_rows(*x, a, cf.clone(), cols.end > d, with_sums);
                    let dz = Array2::from_shape_vec((x.nrows(), cols.len()), dz).expect("cols = features in cf, then the intercept's");
                    (dz, with_sums.then(|| Array1::from(sums)))
                };
                let rf = rows.start..rows.end.min(d);
                if !rf.is_empty() {
                    let xr = x.slice(s![.., rf.clone()]);
                    if lower {
                        // the feature block's lower triangle; its intercept column lies above it
                        gemm_lower(out.slice_mut(s![..rf.len(), ..rf.len()]), true, xr.t(), dz.slice(s![.., ..rf.len()]), 1.0);
                    } else {
                        gemm(out.slice_mut(s![..rf.len(), ..]), true, xr.t(), dz.view(), 1.0);
                    }
                }
                if let Some(sums) = row_sums {
                    let mut last = out.row_mut(d - rows.start);
                    last += &sums;
                }
            }
            XView::Csr(c) => {
                // per row: the outer product of its entries (plus the intercept's 1) restricted
                // to the block; sorted indices bound each row's share of the block by search
                let (r0, c0) = (rows.start, cols.start);
                for i in 0..c.nrows() {
                    let ai = a[i];
                    if ai == 0.0 {
                        continue;
                    }
                    let (idx, vals) = c.row(i);
                    let span = |r: &Range<usize>| {
                        let lo = idx.partition_point(|&j| (j as usize) < r.start);
                        let hi = idx.partition_point(|&j| (j as usize) < r.end);
                        lo..hi
                    };
                    let (sr, sc) = (span(&rows), span(&cols));
                    let icpt_r = rows.contains(&d);
                    let icpt_c = cols.contains(&d);
                    for e in sr.clone() {
                        let (je, ve) = (idx[e] as usize - r0, ai * vals[e]);
                        let mut orow = out.row_mut(je);
                        for f in sc.clone() {
                            let jf = idx[f] as usize;
                            if lower && jf > idx[e] as usize {
                                break;
                            }
                            orow[jf - c0] += ve * vals[f];
                        }
                        if icpt_c {
                            orow[d - c0] += ve;
                        }
                    }
                    if icpt_r {
                        let mut orow = out.row_mut(d - r0);
                        for f in sc {
                            orow[idx[f] as usize - c0] += ai * vals[f];
                        }
                        if icpt_c {
                            orow[d - c0] += ai;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array1};

    fn example() -> (Vec<i64>, Vec<i32>, Vec<f64>) {
        // [[1, 0, 2, 0], [0, 0, 0, 0], [0, -3, 0.5, 4]]
        (vec![0, 2, 2, 5], vec![0, 2, 1, 2, 3], vec![1.0, 2.0, -3.0, 0.5, 4.0])
    }

    #[test]
    fn sparse_products_match_dense() {
        let (p, i, v) = example();
        let c = Csr::new(&p, &i, &v, 4).unwrap();
        let dense = c.to_dense();
        assert_eq!(dense, array![[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, -3.0, 0.5, 4.0]]);
        let (xs, xd) = (XView::Csr(c), XView::Dense(dense.view()));
        let m = array![[1.0, 2.0], [3.0, -1.0], [0.5, 0.0], [2.0, 1.0]];
        assert_eq!(xs.dot(m.view()), xd.dot(m.view()));
        let t = array![[1.0, -2.0], [5.0, 1.0], [0.25, 3.0]];
        let (mut a, mut b) = (Array2::zeros((4, 2)), Array2::zeros((4, 2)));
        xs.t_dot_add(t.view(), a.view_mut());
        xd.t_dot_add(t.view(), b.view_mut());
        assert_eq!(a, b);
        xs.sq_t_dot_add(t.view(), a.view_mut());
        xd.sq_t_dot_add(t.view(), b.view_mut());
        assert_eq!(a, b);
        let w = Array1::from(vec![2.0, 1.0, 0.5]);
        for (rows, cols, lower) in [(0..5, 0..5, true), (2..5, 0..2, false), (0..5, 0..5, false), (3..5, 3..5, true)] {
            let (mut gs, mut gd) = (Array2::zeros((rows.len(), cols.len())), Array2::zeros((rows.len(), cols.len())));
            xs.gram_add(w.view(), rows.clone(), cols.clone(), lower, gs.view_mut());
            xd.gram_add(w.view(), rows.clone(), cols.clone(), lower, gd.view_mut());
            if lower {
                for r in 0..gs.nrows() {
                    for c in r + 1..gs.ncols() {
                        gs[[r, c]] = 0.0;
                        gd[[r, c]] = 0.0;
                    }
                }
            }
            assert_eq!(gs, gd, "block {rows:?} x {cols:?}");
        }
        let sub = xs.rows(2, 3);
        assert_eq!(sub.to_dense(), array![[0.0, -3.0, 0.5, 4.0]]);
    }

    #[test]
    fn malformed_sparse_input_is_an_error() {
        let (p, i, v) = example();
        assert!(Csr::new(&p, &i, &v, 3).is_err()); // column 3 out of range
        let unsorted = vec![2, 0, 1, 2, 3];
        assert!(Csr::new(&p, &unsorted, &v, 4).is_err());
        let mut nan = v.clone();
        nan[3] = f64::NAN;
        let err = Csr::new(&p, &i, &nan, 4).unwrap_err();
        assert!(err.to_string().contains("row 2, column 2"), "{err}");
        assert!(Csr::new(&[0, 3, 2, 5], &i, &v, 4).is_err());
        // found by fuzzing (fuzz/fuzz_targets/csr.rs): a row that runs past nnz before indptr
        // comes back down used to panic on the slice instead of being refused
        let err = Csr::new(&[0, 14, 0], &[], &[], 4).unwrap_err();
        assert!(err.to_string().contains("indptr decreases at row 1"), "{err}");
    }
}
