//! Row sources made from another one without copying its features: a contiguous segment, the
//! same rows with some weights changed, and rows gathered by index into a table of their own.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis, CowArray, Ix2};

use super::batch::Batch;
use super::table::{Features, Names, Table};
use super::{Block, Rows};
use crate::error::{Error, Result};

/// The contiguous rows `start..end` of a source, as a source of their own (zero-copy). A long
/// streaming run can be cut into such segments and resumed between them; when `start` is a
/// multiple of `BLOCK_ROWS` the segment's blocks are the source's own, so every result is
/// bitwise the same as in one pass.
pub struct Segment<'a> {
    base: &'a dyn Rows,
    start: usize,
    end: usize,
}

impl<'a> Segment<'a> {
    pub fn new(base: &'a dyn Rows, start: usize, end: usize) -> Result<Self> {
        if start >= end || end > base.n() {
            return Err(Error::Value { arg: "rows", msg: format!("segment {start}..{end} is empty or beyond the {} training points", base.n()) });
        }
        Ok(Self { base, start, end })
    }
}

impl Rows for Segment<'_> {
    fn n(&self) -> usize {
        self.end - self.start
    }
    fn d(&self) -> usize {
        self.base.d()
    }
    fn y(&self) -> ArrayView2<'_, f64> {
        self.base.y().slice_move(s![self.start..self.end, ..])
    }
    fn w(&self) -> Option<ArrayView1<'_, f64>> {
        self.base.w().map(|w| w.slice_move(s![self.start..self.end]))
    }
    fn names(&self) -> Names {
        self.base.names()
    }
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>> {
        self.base.x_rows(self.start + start, self.start + end)
    }
    fn x_rows_f32(&self, start: usize, end: usize) -> Option<Result<CowArray<'_, f32, Ix2>>> {
        self.base.x_rows_f32(self.start + start, self.start + end)
    }
}

/// A source with some weights replaced (the training set of a refit).
pub struct Reweighted<'a> {
    base: &'a dyn Rows,
    w: Array1<f64>,
}

impl<'a> Reweighted<'a> {
    /// `base` with w[points[j]] = weights[j] (later entries win for repeated points). The new
    /// weights must be finite and >= 0 with a positive total.
    pub fn new(base: &'a dyn Rows, points: &[usize], weights: &[f64]) -> Result<Self> {
        let n = base.n();
        let mut w = base.w().map_or_else(|| Array1::ones(n), |w| w.to_owned());
        for (&m, &v) in points.iter().zip(weights) {
            if m >= n {
                return Err(Error::Value { arg: "idx", msg: format!("index {m} is out of range for {n} training points") });
            }
            w[m] = v;
        }
        Batch::check_rows(n, base.y(), Some(w.view()), base.names())?;
        Ok(Self { base, w })
    }
}

impl Rows for Reweighted<'_> {
    fn n(&self) -> usize {
        self.base.n()
    }
    fn d(&self) -> usize {
        self.base.d()
    }
    fn y(&self) -> ArrayView2<'_, f64> {
        self.base.y()
    }
    fn w(&self) -> Option<ArrayView1<'_, f64>> {
        Some(self.w.view())
    }
    fn names(&self) -> Names {
        self.base.names()
    }
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>> {
        self.base.x_rows(start, end)
    }
    fn x_rows_f32(&self, start: usize, end: usize) -> Option<Result<CowArray<'_, f32, Ix2>>> {
        self.base.x_rows_f32(start, end)
    }
}

/// Rows `idx` (any order, repeats allowed) of `src`, gathered into a table of their own in
/// float64 (sparse rows stay sparse).
pub fn gather(src: &(impl Rows + ?Sized), idx: &[usize]) -> Result<Table> {
    let n = src.n();
    if let Some(pos) = idx.iter().position(|&i| i >= n) {
        return Err(Error::Value { arg: "idx", msg: format!("index {} at position {pos} is out of range for {n} training points", idx[pos]) });
    }
    let mut dense: Option<Array2<f64>> = None;
    let (mut indptr, mut indices, mut data) = (vec![0i64], Vec::new(), Vec::new());
    for (row, &i) in idx.iter().enumerate() {
        match src.x_rows(i, i + 1)? {
            Block::Csr(c) => {
                let (cols, vals) = c.row(0);
                indices.extend_from_slice(cols);
                data.extend_from_slice(vals);
                indptr.push(data.len() as i64);
            }
            Block::Dense(a) => dense.get_or_insert_with(|| Array2::zeros((idx.len(), src.d()))).row_mut(row).assign(&a.row(0)),
        }
    }
    let x = match dense {
        Some(a) => Features::dense(a),
        None if !idx.is_empty() => Features::csr(indptr, indices, data, src.d())?,
        None => Features::dense(Array2::zeros((0, src.d()))),
    };
    let y = src.y().select(Axis(0), idx);
    let w = src.w().map(|w| idx.iter().map(|&i| w[i]).collect());
    // the rows were validated as part of `src` (a subset of valid weights may sum to zero)
    Ok(Table::validated(x, y, w, src.names()))
}
