//! A block of weighted rows in memory, borrowed: what the model kernels read.

use ndarray::{ArrayView1, ArrayView2, Axis, CowArray, Ix2};

use super::matrix::XView;
use super::table::Names;
use super::{Block, Rows};
use crate::error::{check_finite, Error, Result};

/// Weighted rows z_i = (x_i, y_i), w_i >= 0 (DESIGN.md section 1) in memory: X (n x d, dense or
/// CSR), y (n x t: one column, or t targets per row for a multi-output regression), w (n;
/// `None` means every weight is 1). [`super::with_block`] hands the kernels one
/// per block of a [`Rows`] source.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub x: XView<'a>,
    pub y: ArrayView2<'a, f64>,
    pub w: Option<ArrayView1<'a, f64>>,
}

impl<'a> Batch<'a> {
    /// A validated data set: consistent lengths, finite values, weights >= 0 with a positive sum.
    /// `names` are the argument names used in error messages (X, y, sample_weight).
    pub fn new(x: ArrayView2<'a, f64>, y: ArrayView1<'a, f64>, w: Option<ArrayView1<'a, f64>>, names: Names) -> Result<Self> {
        Self::with_targets(x, y.insert_axis(Axis(1)), w, names)
    }

    /// [`Batch::new`] with t targets per row (y: n x t).
    pub fn with_targets(x: ArrayView2<'a, f64>, y: ArrayView2<'a, f64>, w: Option<ArrayView1<'a, f64>>, names: Names) -> Result<Self> {
        Self::check_rows(x.nrows(), y, w, names)?;
        check_finite(names.x, x.iter())?;
        Ok(Self { x: XView::Dense(x), y, w })
    }

    /// The checks that do not depend on how X is stored: n > 0 rows, y with n rows (at least one
    /// column) and finite, weights of length n, finite, >= 0 with a positive sum.
    pub(crate) fn check_rows(n: usize, y: ArrayView2<'_, f64>, w: Option<ArrayView1<'_, f64>>, names: Names) -> Result<()> {
        let Names { x: xname, y: yname } = names;
        if n == 0 {
            return Err(Error::Shape { arg: xname, msg: "has no rows".into() });
        }
        if y.nrows() != n {
            let what = if y.ncols() == 1 { "entries" } else { "rows" };
            return Err(Error::Shape { arg: yname, msg: format!("has {} {what} but {xname} has {n} rows", y.nrows()) });
        }
        if y.ncols() == 0 {
            return Err(Error::Shape { arg: yname, msg: "has no columns (at least one target per row)".into() });
        }
        check_finite(yname, y.iter())?;
        if let Some(w) = w {
            if w.len() != n {
                return Err(Error::Weights { msg: format!("has {} entries but {xname} has {n} rows", w.len()) });
            }
            if let Some(i) = w.iter().position(|v| !v.is_finite()) {
                return Err(Error::Weights { msg: format!("contains NaN or infinity (first at index {i})") });
            }
            if let Some(i) = w.iter().position(|&v| v < 0.0) {
                return Err(Error::Weights { msg: format!("must be >= 0, got {} at index {i}", w[i]) });
            }
            let total = w.sum();
            if !(total > 0.0) {
                return Err(Error::Weights { msg: "all weights are zero".into() });
            }
            if !total.is_finite() || w.iter().any(|&v| !(v * 1e8).is_finite()) {
                // the objective is the weighted *mean* loss: only the weights' ratios matter
                return Err(Error::Weights {
                    msg: format!(
                        "too large to sum in float64 (largest {:e}): divide them all by one constant, which changes no \
                         answer (the objective is the weighted mean loss)",
                        w.iter().cloned().fold(0.0_f64, f64::max)
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn n(&self) -> usize {
        self.x.nrows()
    }
    pub fn d(&self) -> usize {
        self.x.ncols()
    }
    #[inline]
    pub fn weight(&self, i: usize) -> f64 {
        self.w.map_or(1.0, |w| w[i])
    }
    /// W = sum of weights.
    pub fn total_weight(&self) -> f64 {
        self.w.map_or(self.n() as f64, |w| w.sum())
    }
    /// Rows `start..end` as a batch of their own.
    pub fn rows(&self, start: usize, end: usize) -> Batch<'a> {
        use ndarray::s;
        Batch { x: self.x.rows(start, end), y: self.y.slice_move(s![start..end, ..]), w: self.w.map(|w| w.slice_move(s![start..end])) }
    }
}

impl Rows for Batch<'_> {
    fn n(&self) -> usize {
        self.x.nrows()
    }
    fn d(&self) -> usize {
        self.x.ncols()
    }
    fn y(&self) -> ArrayView2<'_, f64> {
        self.y
    }
    fn w(&self) -> Option<ArrayView1<'_, f64>> {
        self.w
    }
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>> {
        Ok(match self.x.rows(start, end) {
            XView::Dense(a) => Block::Dense(CowArray::<f64, Ix2>::from(a)),
            XView::Csr(c) => Block::Csr(c),
        })
    }
}
