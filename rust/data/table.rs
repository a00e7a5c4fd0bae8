//! A training set (or a set of test points) as the core holds it: features in any storage, with
//! targets and weights, validated once when it is built.

use std::path::Path;
use std::sync::Arc;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis, CowArray, Ix2};

use super::batch::Batch;
use super::matrix::Csr;
use super::npy::{NpyDtype, NpyFile};
use super::shared::{Shared, Shared1};
use super::watch::RowPrints;
use super::{Block, Rows};
use crate::error::{Error, Result};

/// How the caller spells the arguments a table was made from: every error about its rows names
/// them (`X_test`, `train_grads`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Names {
    pub x: &'static str,
    pub y: &'static str,
}

impl Names {
    /// A training set passed as `X`, `y`.
    pub const TRAIN: Names = Names { x: "X", y: "y" };
}

impl Default for Names {
    fn default() -> Self {
        Names::TRAIN
    }
}

/// Compressed sparse rows held by the table, validated once by [`Csr::new`].
pub struct CsrArrays {
    indptr: Shared1<i64>,
    indices: Shared1<i32>,
    data: Shared1<f64>,
    ncols: usize,
}

impl CsrArrays {
    /// Validate and keep CSR arrays (as scipy.sparse.csr_matrix stores them); `arg` names them.
    pub fn new(indptr: Shared1<i64>, indices: Shared1<i32>, data: Shared1<f64>, ncols: usize, arg: &'static str) -> Result<Self> {
        let contiguous = |ok: bool| if ok { Ok(()) } else { Err(Error::Value { arg, msg: "sparse arrays must be contiguous".into() }) };
        contiguous(indptr.view().is_standard_layout() && indices.view().is_standard_layout() && data.view().is_standard_layout())?;
        Csr::checked(indptr.as_slice(), indices.as_slice(), data.as_slice(), ncols, arg)?;
        Ok(Self { indptr, indices, data, ncols })
    }

    pub fn view(&self) -> Csr<'_> {
        Csr { indptr: self.indptr.as_slice(), indices: self.indices.as_slice(), data: self.data.as_slice(), ncols: self.ncols }
    }
}

/// Where the features of a table live.
pub enum Features {
    /// float64 in memory.
    F64(Shared<f64>),
    /// float32 in memory: widened block by block for sums, scored in float32.
    F32(Shared<f32>),
    /// Compressed sparse rows: every pass costs O(nnz), never densified.
    Csr(CsrArrays),
    /// A `.npy` file read block by block.
    Npy(NpyFile),
}

impl Features {
    /// Own a float64 array.
    pub fn dense(x: Array2<f64>) -> Self {
        Features::F64(Shared::new(x))
    }
    /// Own a float32 array.
    pub fn dense_f32(x: Array2<f32>) -> Self {
        Features::F32(Shared::new(x))
    }
    /// Own CSR arrays (validated).
    pub fn csr(indptr: Vec<i64>, indices: Vec<i32>, data: Vec<f64>, ncols: usize) -> Result<Self> {
        let a = |v| Shared::new(Array1::from(v));
        Ok(Features::Csr(CsrArrays::new(a(indptr), Shared::new(Array1::from(indices)), Shared::new(Array1::from(data)), ncols, "X")?))
    }
    /// Open a `.npy` file (checked), errors naming `arg`.
    pub fn npy(path: &Path, arg: &'static str) -> Result<Self> {
        Ok(Features::Npy(NpyFile::open(path, arg)?))
    }

    pub fn nrows(&self) -> usize {
        match self {
            Features::F64(a) => a.view().nrows(),
            Features::F32(a) => a.view().nrows(),
            Features::Npy(f) => f.n,
            Features::Csr(c) => c.view().nrows(),
        }
    }
    pub fn ncols(&self) -> usize {
        match self {
            Features::F64(a) => a.view().ncols(),
            Features::F32(a) => a.view().ncols(),
            Features::Npy(f) => f.d,
            Features::Csr(c) => c.ncols,
        }
    }
    /// Whether the rows are stored in float32 (scores are then computed and returned in float32).
    pub fn is_f32(&self) -> bool {
        matches!(self, Features::F32(_)) || matches!(self, Features::Npy(f) if f.dtype == NpyDtype::F32)
    }
}

/// Rows z_i = (x_i, y_i) with weights w_i >= 0 (DESIGN.md section 1), owning their storage.
pub struct Table {
    x: Features,
    /// n x t targets.
    y: Array2<f64>,
    w: Option<Array1<f64>>,
    names: Names,
    /// Fingerprints of in-memory features the caller may still edit: every read is checked.
    watch: Option<Arc<RowPrints>>,
}

impl Table {
    /// A validated table: n > 0 rows, y of length n and finite, weights of length n, finite,
    /// nonnegative with a positive sum; in-memory features are checked for NaN/inf here, file
    /// features as they are read. Errors name the arguments as `names` spells them.
    pub fn new(x: Features, y: Array1<f64>, w: Option<Array1<f64>>, names: Names) -> Result<Self> {
        Self::with_targets(x, y.insert_axis(Axis(1)), w, names)
    }

    /// [`Table::new`] with t targets per row (y: n x t, a multi-output regression's).
    pub fn with_targets(x: Features, y: Array2<f64>, w: Option<Array1<f64>>, names: Names) -> Result<Self> {
        Self::checked(x, y, w, names, None)
    }

    /// [`Table::with_targets`] over float64 or float32 features in memory the caller still
    /// holds, fingerprinted in `prints`: the values are not checked here, but each group of rows
    /// is checked finite when it is first read and compared with its fingerprint on every later
    /// read, and a group that changed is an error naming the features' argument.
    pub fn watched(x: Features, prints: Arc<RowPrints>, y: Array2<f64>, w: Option<Array1<f64>>, names: Names) -> Result<Self> {
        if !matches!(x, Features::F64(_) | Features::F32(_)) || prints.nrows() != x.nrows() {
            return Err(Error::Value { arg: names.x, msg: "fingerprints recorded of other rows".into() });
        }
        Self::checked(x, y, w, names, Some(prints))
    }

    /// The checks of [`Table::with_targets`]; watched features are checked as they are read.
    fn checked(x: Features, y: Array2<f64>, w: Option<Array1<f64>>, names: Names, watch: Option<Arc<RowPrints>>) -> Result<Self> {
        // row-major, so that each row's targets are one slice
        let y = if y.is_standard_layout() { y } else { y.as_standard_layout().into_owned() };
        match (&x, &watch) {
            (Features::F64(a), None) => crate::error::check_finite_rows(names.x, a.view())?,
            (Features::F32(a), None) => crate::error::check_finite_rows(names.x, a.view())?,
            _ => {}
        }
        Batch::check_rows(x.nrows(), y.view(), w.as_ref().map(|w| w.view()), names)?;
        Ok(Self { x, y, w, names, watch })
    }

    /// Rows that were already validated as part of another table.
    pub(crate) fn validated(x: Features, y: Array2<f64>, w: Option<Array1<f64>>, names: Names) -> Self {
        Self { x, y, w, names, watch: None }
    }

    /// A table for a model without targets (per-example gradients): y is not read.
    pub fn without_targets(x: Features, w: Option<Array1<f64>>, names: Names) -> Result<Self> {
        let n = x.nrows();
        Self::new(x, Array1::zeros(n), w, names)
    }

    /// A float64 training set in memory.
    pub fn dense(x: Array2<f64>, y: Array1<f64>, w: Option<Array1<f64>>) -> Result<Self> {
        Self::new(Features::dense(x), y, w, Names::TRAIN)
    }

    pub fn features(&self) -> &Features {
        &self.x
    }

    /// For features read from the caller's memory: rows `start..end` are checked finite and
    /// recorded when first read, and `Err` naming the features if they changed since.
    fn check_unchanged(&self, start: usize, end: usize) -> Result<()> {
        match (&self.watch, &self.x) {
            (None, _) => Ok(()),
            (Some(p), Features::F64(a)) => p.check(self.names.x, a.view(), start..end),
            (Some(p), Features::F32(a)) => p.check(self.names.x, a.view(), start..end),
            (Some(_), _) => unreachable!("Table::watched takes dense features only"),
        }
    }
}

impl Rows for Table {
    fn n(&self) -> usize {
        self.y.nrows()
    }
    fn d(&self) -> usize {
        self.x.ncols()
    }
    fn y(&self) -> ArrayView2<'_, f64> {
        self.y.view()
    }
    fn w(&self) -> Option<ArrayView1<'_, f64>> {
        self.w.as_ref().map(|w| w.view())
    }
    fn names(&self) -> Names {
        self.names
    }
    fn is_f32(&self) -> bool {
        self.x.is_f32()
    }
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>> {
        self.check_unchanged(start, end)?;
        Ok(match &self.x {
            Features::F64(a) => Block::Dense(CowArray::from(a.view().slice_move(s![start..end, ..]))),
            Features::F32(a) => Block::Dense(CowArray::from(a.view().slice(s![start..end, ..]).mapv(f64::from))),
            Features::Npy(f) => Block::Dense(CowArray::from(f.read_rows(start, end)?)),
            Features::Csr(c) => Block::Csr(c.view().rows(start, end)),
        })
    }
    fn x_rows_f32(&self, start: usize, end: usize) -> Option<Result<CowArray<'_, f32, Ix2>>> {
        if let Err(e) = self.check_unchanged(start, end) {
            return self.x.is_f32().then_some(Err(e));
        }
        match &self.x {
            Features::F32(a) => Some(Ok(CowArray::from(a.view().slice_move(s![start..end, ..])))),
            Features::Npy(f) if f.dtype == NpyDtype::F32 => Some(f.read_rows_f32(start, end).map(CowArray::from)),
            _ => None,
        }
    }
}
