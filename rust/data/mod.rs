//! Where rows come from. The streaming loops (objective, influence) read features one block of
//! rows at a time through [`Rows`]; a [`Table`] holds a training set whatever its storage
//! (float64 or float32 in memory, CSR, or a `.npy` file far larger than memory, read block by
//! block), and the model kernels see one [`Batch`] (dense or CSR rows in memory) per block.
//! Targets (n x t: t = 1, or one column per output of a multi-output regression) and weights
//! (n floats) are always in memory.

mod batch;
mod fingerprint;
mod matrix;
mod npy;
mod shared;
mod table;
mod views;
mod watch;

use std::ops::Range;

use ndarray::{s, ArrayView1, ArrayView2, CowArray, Ix2};

pub use batch::Batch;
pub use fingerprint::Fingerprinted;
pub use matrix::{Csr, XView};
pub use npy::{NpyDtype, NpyFile, NpyHeader};
pub use shared::{Shared, Shared1};
pub use table::{CsrArrays, Features, Names, Table};
pub use views::{gather, Reweighted, Segment};
pub use watch::RowPrints;

use crate::error::Result;

/// A source of weighted rows read block by block.
pub trait Rows: Sync {
    fn n(&self) -> usize;
    fn d(&self) -> usize;
    /// The targets, one row per row (n x t; t = 1 for every model but multi-output regression).
    fn y(&self) -> ArrayView2<'_, f64>;
    fn w(&self) -> Option<ArrayView1<'_, f64>>;
    /// How the caller named the arguments the rows came from (for errors).
    fn names(&self) -> Names {
        Names::TRAIN
    }
    /// Features of rows `start..end` in float64: borrowed when they are float64 in memory
    /// (dense or sparse). Sources not validated up front check what they read and name the
    /// first bad entry.
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>>;
    /// The same rows in float32 when the source stores float32 (the score kernels then run in
    /// float32), else `None`.
    fn x_rows_f32(&self, _start: usize, _end: usize) -> Option<Result<CowArray<'_, f32, Ix2>>> {
        None
    }
    /// Whether the rows are stored in float32.
    fn is_f32(&self) -> bool {
        self.n() > 0 && self.x_rows_f32(0, 0).is_some()
    }

    /// W, the sum of the weights.
    fn total_weight(&self) -> f64 {
        self.w().map_or(self.n() as f64, |w| w.sum())
    }
}

/// The features of a block of rows as a source hands them out.
pub enum Block<'a> {
    Dense(CowArray<'a, f64, Ix2>),
    Csr(Csr<'a>),
}

impl Block<'_> {
    pub fn view(&self) -> XView<'_> {
        match self {
            Block::Dense(a) => XView::Dense(a.view()),
            Block::Csr(c) => XView::Csr(*c),
        }
    }
}

/// Run `f` on rows `r` of `src` as an in-memory [`Batch`].
pub fn with_block<T>(src: &(impl Rows + ?Sized), r: Range<usize>, f: impl FnOnce(&Batch) -> T) -> Result<T> {
    let x = src.x_rows(r.start, r.end)?;
    let data = Batch { x: x.view(), y: src.y().slice_move(s![r.clone(), ..]), w: src.w().map(|w| w.slice_move(s![r])) };
    Ok(f(&data))
}
