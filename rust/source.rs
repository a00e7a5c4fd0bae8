//! Where a training set's rows come from. The streaming loops (objective, influence) read
//! features one block of rows at a time through [`Rows`], so a training set can be an
//! in-memory float64 or float32 array, or a `.npy` file far larger than memory that is read
//! block by block (never memory-mapped: peak memory stays O(block x d)).
//! Targets and weights (n floats each) are always in memory.

use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ndarray::{s, Array2, ArrayView1, ArrayView2, CowArray, Ix2};

use crate::data::Dataset;
use crate::error::{check_finite, Error, Result};
use crate::matrix::{Csr, XView};

/// A training set read block by block.
pub trait Rows: Sync {
    fn n(&self) -> usize;
    fn d(&self) -> usize;
    fn y(&self) -> ArrayView1<'_, f64>;
    fn w(&self) -> Option<ArrayView1<'_, f64>>;
    /// Features of rows `start..end` in float64: borrowed when they are float64 in memory
    /// (dense or sparse). Sources not validated up front check what they read and name the
    /// first bad entry.
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>>;
    /// The same rows in float32 when the source stores float32 (the score kernels then run in
    /// float32), else `None`.
    fn x_rows_f32(&self, _start: usize, _end: usize) -> Option<Result<CowArray<'_, f32, Ix2>>> {
        None
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

/// Run `f` on rows `r` as an in-memory [`Dataset`].
pub fn with_block<T>(src: &(impl Rows + ?Sized), r: Range<usize>, f: impl FnOnce(&Dataset) -> T) -> Result<T> {
    let x = src.x_rows(r.start, r.end)?;
    let data = Dataset { x: x.view(), y: src.y().slice_move(s![r.clone()]), w: src.w().map(|w| w.slice_move(s![r])) };
    Ok(f(&data))
}

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
    fn y(&self) -> ArrayView1<'_, f64> {
        self.base.y().slice_move(s![self.start..self.end])
    }
    fn w(&self) -> Option<ArrayView1<'_, f64>> {
        self.base.w().map(|w| w.slice_move(s![self.start..self.end]))
    }
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>> {
        self.base.x_rows(self.start + start, self.start + end)
    }
    fn x_rows_f32(&self, start: usize, end: usize) -> Option<Result<CowArray<'_, f32, Ix2>>> {
        self.base.x_rows_f32(self.start + start, self.start + end)
    }
}

/// Rows `idx` of a source, gathered into memory (sparse rows stay sparse).
pub struct Gathered {
    x: GatheredX,
    pub y: ndarray::Array1<f64>,
    pub w: Option<ndarray::Array1<f64>>,
}

enum GatheredX {
    Dense(Array2<f64>),
    Csr { indptr: Vec<i64>, indices: Vec<i32>, data: Vec<f64>, ncols: usize },
}

impl Gathered {
    pub fn as_dataset(&self) -> Dataset<'_> {
        let x = match &self.x {
            GatheredX::Dense(a) => XView::Dense(a.view()),
            GatheredX::Csr { indptr, indices, data, ncols } => XView::Csr(Csr { indptr, indices, data, ncols: *ncols }),
        };
        Dataset { x, y: self.y.view(), w: self.w.as_ref().map(|w| w.view()) }
    }
}

/// Gather rows `idx` (any order, repeats allowed) of `src`.
pub fn gather(src: &(impl Rows + ?Sized), idx: &[usize]) -> Result<Gathered> {
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
        Some(a) => GatheredX::Dense(a),
        None if indptr.len() == idx.len() + 1 && !idx.is_empty() => GatheredX::Csr { indptr, indices, data, ncols: src.d() },
        None => GatheredX::Dense(Array2::zeros((idx.len(), src.d()))),
    };
    let y = idx.iter().map(|&i| src.y()[i]).collect();
    let w = src.w().map(|w| idx.iter().map(|&i| w[i]).collect());
    Ok(Gathered { x, y, w })
}

impl Rows for Dataset<'_> {
    fn n(&self) -> usize {
        self.x.nrows()
    }
    fn d(&self) -> usize {
        self.x.ncols()
    }
    fn y(&self) -> ArrayView1<'_, f64> {
        self.y
    }
    fn w(&self) -> Option<ArrayView1<'_, f64>> {
        self.w
    }
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>> {
        Ok(match self.x.rows(start, end) {
            XView::Dense(a) => Block::Dense(CowArray::from(a)),
            XView::Csr(c) => Block::Csr(c),
        })
    }
}

/// Feature storage other than an in-memory float64 array.
pub enum Features<'a> {
    F64(ArrayView2<'a, f64>),
    /// float32 in memory: each block is widened to float64 when read.
    F32(ArrayView2<'a, f32>),
    /// A `.npy` file read block by block.
    Npy(NpyFile),
    /// Compressed sparse rows (validated by [`Csr::new`]).
    Csr(Csr<'a>),
}

/// A training set whose features may be float32 or on disk.
pub struct Table<'a> {
    pub x: Features<'a>,
    pub y: ArrayView1<'a, f64>,
    pub w: Option<ArrayView1<'a, f64>>,
}

impl<'a> Table<'a> {
    /// Validates lengths, targets' finiteness and weights like [`Dataset::new`]; in-memory
    /// features are checked for NaN/inf here, file features as they are read.
    pub fn new(x: Features<'a>, y: ArrayView1<'a, f64>, w: Option<ArrayView1<'a, f64>>) -> Result<Self> {
        let n = x.nrows();
        match &x {
            Features::F64(a) => check_finite("X", a.iter())?,
            Features::F32(a) => {
                if let Some(index) = a.iter().position(|v| !v.is_finite()) {
                    return Err(Error::NonFinite { arg: "X", index });
                }
            }
            Features::Npy(_) | Features::Csr(_) => {}
        }
        Dataset::check_rows(n, y, w, ["X", "y"])?;
        Ok(Self { x, y, w })
    }
}

impl Features<'_> {
    pub fn nrows(&self) -> usize {
        match self {
            Features::F64(a) => a.nrows(),
            Features::F32(a) => a.nrows(),
            Features::Npy(f) => f.n,
            Features::Csr(c) => c.nrows(),
        }
    }
    pub fn ncols(&self) -> usize {
        match self {
            Features::F64(a) => a.ncols(),
            Features::F32(a) => a.ncols(),
            Features::Npy(f) => f.d,
            Features::Csr(c) => c.ncols,
        }
    }
}

impl Rows for Table<'_> {
    fn n(&self) -> usize {
        self.y.len()
    }
    fn d(&self) -> usize {
        self.x.ncols()
    }
    fn y(&self) -> ArrayView1<'_, f64> {
        self.y
    }
    fn w(&self) -> Option<ArrayView1<'_, f64>> {
        self.w
    }
    fn x_rows(&self, start: usize, end: usize) -> Result<Block<'_>> {
        Ok(match &self.x {
            Features::F64(a) => Block::Dense(CowArray::from(a.slice(s![start..end, ..]))),
            Features::F32(a) => Block::Dense(CowArray::from(a.slice(s![start..end, ..]).mapv(f64::from))),
            Features::Npy(f) => Block::Dense(CowArray::from(f.read_rows(start, end)?)),
            Features::Csr(c) => Block::Csr(c.rows(start, end)),
        })
    }
    fn x_rows_f32(&self, start: usize, end: usize) -> Option<Result<CowArray<'_, f32, Ix2>>> {
        match &self.x {
            Features::F32(a) => Some(Ok(CowArray::from(a.slice(s![start..end, ..])))),
            Features::Npy(f) if f.dtype == NpyDtype::F32 => Some(f.read_rows_f32(start, end).map(CowArray::from)),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    F64,
}

/// A C-ordered 2-d float32/float64 `.npy` file, read by rows with positioned reads (thread-safe).
pub struct NpyFile {
    file: File,
    path: PathBuf,
    pub n: usize,
    pub d: usize,
    pub dtype: NpyDtype,
    offset: u64,
}

/// The header of a `.npy` file: what it holds and where the values start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: NpyDtype,
    pub n: usize,
    pub d: usize,
    /// Byte offset of the first value.
    pub offset: u64,
}

impl NpyHeader {
    /// Parse the header at the start of `r` and check it against the file's length `len` in
    /// bytes: 2-d, little-endian float32/float64, C order, at least one row, not truncated.
    /// Object arrays (which would need pickle) are refused. The error is a message for the user.
    pub fn read(r: &mut impl Read, len: u64) -> std::result::Result<Self, String> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(|_| "not a .npy file (too short)".to_string())?;
        if &magic[..6] != b"\x93NUMPY" {
            return Err("not a .npy file (bad magic bytes)".into());
        }
        let (header_len, prefix) = match magic[6] {
            1 => {
                let mut b = [0u8; 2];
                r.read_exact(&mut b).map_err(|_| "truncated header".to_string())?;
                (u16::from_le_bytes(b) as usize, 10)
            }
            2 | 3 => {
                let mut b = [0u8; 4];
                r.read_exact(&mut b).map_err(|_| "truncated header".to_string())?;
                (u32::from_le_bytes(b) as usize, 12)
            }
            v => return Err(format!("unsupported .npy version {v}")),
        };
        if header_len > 1 << 20 {
            return Err("implausibly large .npy header".into());
        }
        let mut header = vec![0u8; header_len];
        r.read_exact(&mut header).map_err(|_| "truncated header".to_string())?;
        let header = String::from_utf8_lossy(&header);
        let field = |key: &str| -> Option<String> {
            let at = header.find(&format!("'{key}'"))?;
            let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
            let end = if rest.starts_with('(') { rest.find(')')? + 1 } else { rest.find([',', '}'])? };
            Some(rest[..end].trim().to_string())
        };
        let descr = field("descr").ok_or("header has no 'descr'")?;
        let dtype = match descr.trim_matches('\'') {
            "<f8" | "=f8" => NpyDtype::F64,
            "<f4" | "=f4" => NpyDtype::F32,
            "|O" | "O" => return Err("holds Python objects (would need pickle, which upweight never loads)".into()),
            other => return Err(format!("dtype {other} is not supported; save it as float64 or float32")),
        };
        if field("fortran_order").as_deref() != Some("False") {
            return Err("is Fortran-ordered; save it C-ordered (np.ascontiguousarray)".into());
        }
        let shape = field("shape").ok_or("header has no 'shape'")?;
        let dims: Vec<usize> = shape
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| format!("bad shape {shape}"))?;
        let [n, d] = dims[..] else {
            return Err(format!("expected a 2-d array, got shape {shape}"));
        };
        if n == 0 {
            return Err("has no rows".into());
        }
        let offset = (prefix + header_len) as u64;
        let item: u64 = if dtype == NpyDtype::F64 { 8 } else { 4 };
        // a forged shape must not wrap around: n * d * item + offset is computed in u128
        let need = u128::from(offset) + n as u128 * d as u128 * u128::from(item);
        if u128::from(len) < need {
            return Err(format!("is truncated: {n} x {d} values need {need} bytes, the file has {len}"));
        }
        Ok(Self { dtype, n, d, offset })
    }
}

impl NpyFile {
    /// Open and check a `.npy` file ([`NpyHeader::read`]).
    pub fn open(path: &Path, arg: &'static str) -> Result<Self> {
        let bad = |msg: String| Error::Value { arg, msg: format!("{}: {msg}", path.display()) };
        let mut file = File::open(path).map_err(|e| bad(format!("cannot open ({e})")))?;
        let len = file.metadata().map_err(|e| bad(format!("cannot stat ({e})")))?.len();
        let NpyHeader { dtype, n, d, offset } = NpyHeader::read(&mut file, len).map_err(bad)?;
        Ok(Self { file, path: path.to_path_buf(), n, d, dtype, offset })
    }

    /// Byte offset of the first value.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rows `start..end` as float64, checked for NaN/inf.
    pub fn read_rows(&self, start: usize, end: usize) -> Result<Array2<f64>> {
        let bytes = self.read_bytes(start, end)?;
        let values: Vec<f64> = match self.dtype {
            NpyDtype::F64 => bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            NpyDtype::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")) as f64).collect(),
        };
        self.finite(start, values.iter().map(|v| v.is_finite()))?;
        Ok(Array2::from_shape_vec((end - start, self.d), values).expect("length matches the shape"))
    }

    /// Rows `start..end` of a float32 file as float32, checked for NaN/inf.
    pub fn read_rows_f32(&self, start: usize, end: usize) -> Result<Array2<f32>> {
        debug_assert_eq!(self.dtype, NpyDtype::F32);
        let bytes = self.read_bytes(start, end)?;
        let values: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect();
        self.finite(start, values.iter().map(|v| v.is_finite()))?;
        Ok(Array2::from_shape_vec((end - start, self.d), values).expect("length matches the shape"))
    }

    fn read_bytes(&self, start: usize, end: usize) -> Result<Vec<u8>> {
        let item = if self.dtype == NpyDtype::F64 { 8 } else { 4 };
        let mut bytes = vec![0u8; (end - start) * self.d * item];
        let at = self.offset + (start * self.d * item) as u64;
        self.file
            .read_exact_at(&mut bytes, at)
            .map_err(|e| Error::Value { arg: "X", msg: format!("{}: read failed at row {start} ({e})", self.path.display()) })?;
        Ok(bytes)
    }

    fn finite(&self, start: usize, mut ok: impl Iterator<Item = bool>) -> Result<()> {
        match ok.position(|f| !f) {
            Some(i) => Err(Error::NonFinite { arg: "X", index: start * self.d + i }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_npy(path: &Path, descr: &str, shape: (usize, usize), payload: &[u8]) {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}", shape.0, shape.1);
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut f = File::create(path).unwrap();
        f.write_all(b"\x93NUMPY\x01\x00").unwrap();
        f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(payload).unwrap();
    }

    /// n * d * 8 = 2^67 wraps to 0 in 64-bit arithmetic: the old size check accepted this
    /// header for an empty payload (found while writing fuzz/fuzz_targets/npy_header.rs).
    #[test]
    fn a_forged_shape_cannot_wrap_the_size_check() {
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 4), }\n";
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        let err = NpyHeader::read(&mut &bytes[..], bytes.len() as u64).unwrap_err();
        assert!(err.contains("is truncated"), "{err}");
    }

    #[test]
    fn reads_blocks_of_f64_and_f32_files() {
        let dir = std::env::temp_dir().join(format!("upweight-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vals: Vec<f64> = (0..12).map(|v| v as f64 * 0.5).collect();
        let p64 = dir.join("a.npy");
        write_npy(&p64, "<f8", (4, 3), &vals.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
        let f = NpyFile::open(&p64, "X").unwrap();
        assert_eq!((f.n, f.d, f.dtype), (4, 3, NpyDtype::F64));
        assert_eq!(f.read_rows(1, 3).unwrap(), ndarray::arr2(&[[1.5, 2.0, 2.5], [3.0, 3.5, 4.0]]));
        let p32 = dir.join("b.npy");
        write_npy(&p32, "<f4", (4, 3), &vals.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect::<Vec<_>>());
        assert_eq!(NpyFile::open(&p32, "X").unwrap().read_rows(3, 4).unwrap(), ndarray::arr2(&[[4.5, 5.0, 5.5]]));
        // truncated and pickled files are refused with a message naming the problem
        let pt = dir.join("t.npy");
        write_npy(&pt, "<f8", (4, 3), &[0u8; 40]);
        assert!(matches!(NpyFile::open(&pt, "X"), Err(Error::Value { msg, .. }) if msg.contains("truncated")));
        let po = dir.join("o.npy");
        write_npy(&po, "|O", (1, 1), &[0u8; 8]);
        assert!(matches!(NpyFile::open(&po, "X"), Err(Error::Value { msg, .. }) if msg.contains("pickle")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
