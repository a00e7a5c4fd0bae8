//! Weighted training sets as borrowed views: X (n x d), targets y (n), weights w (n).

use ndarray::{ArrayView1, ArrayView2};

use crate::error::{check_finite, Error, Result};
use crate::matrix::XView;

/// A weighted data set. Rows are points z_i = (x_i, y_i) with weight w_i >= 0
/// (DESIGN.md section 1). `w = None` means every weight is 1.
#[derive(Clone, Copy, Debug)]
pub struct Dataset<'a> {
    pub x: XView<'a>,
    pub y: ArrayView1<'a, f64>,
    pub w: Option<ArrayView1<'a, f64>>,
}

impl<'a> Dataset<'a> {
    /// A validated data set: consistent lengths, finite values, weights >= 0 with a positive sum.
    /// `names` are the argument names used in error messages (X, y, sample_weight).
    pub fn new(x: ArrayView2<'a, f64>, y: ArrayView1<'a, f64>, w: Option<ArrayView1<'a, f64>>, names: [&'static str; 2]) -> Result<Self> {
        Self::check_rows(x.nrows(), y, w, names)?;
        check_finite(names[0], x.iter())?;
        Ok(Self { x: XView::Dense(x), y, w })
    }

    /// The checks that do not depend on how X is stored: n > 0 rows, y of length n and finite,
    /// weights of length n, finite, >= 0 with a positive sum.
    pub(crate) fn check_rows(n: usize, y: ArrayView1<'a, f64>, w: Option<ArrayView1<'a, f64>>, names: [&'static str; 2]) -> Result<()> {
        let [xname, yname] = names;
        if n == 0 {
            return Err(Error::Shape { arg: xname, msg: "has no rows".into() });
        }
        if y.len() != n {
            return Err(Error::Shape { arg: yname, msg: format!("has {} entries but {xname} has {n} rows", y.len()) });
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
            if !(w.sum() > 0.0) {
                return Err(Error::Weights { msg: "all weights are zero".into() });
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
    /// Rows `start..end` as a data set of their own.
    pub fn rows(&self, start: usize, end: usize) -> Dataset<'a> {
        use ndarray::s;
        Dataset { x: self.x.rows(start, end), y: self.y.slice_move(s![start..end]), w: self.w.map(|w| w.slice_move(s![start..end])) }
    }
}
