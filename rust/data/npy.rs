//! `.npy` files read by rows with positioned reads: a training set far larger than memory is
//! streamed block by block (never memory-mapped, so peak memory stays O(block x d)).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    F64,
}

/// A C-ordered 2-d float32/float64 `.npy` file, read by rows with positioned reads (thread-safe).
pub struct NpyFile {
    file: File,
    /// The argument the file was passed as, for errors found while reading.
    arg: &'static str,
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
        Ok(Self { file, arg, path: path.to_path_buf(), n, d, dtype, offset })
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
        read_exact_at(&self.file, &mut bytes, at)
            .map_err(|e| Error::Value { arg: self.arg, msg: format!("{}: read failed at row {start} ({e})", self.path.display()) })?;
        Ok(bytes)
    }

    fn finite(&self, start: usize, mut ok: impl Iterator<Item = bool>) -> Result<()> {
        match ok.position(|f| !f) {
            Some(i) => Err(Error::NonFiniteAt { arg: self.arg, row: start + i / self.d, col: i % self.d }),
            None => Ok(()),
        }
    }
}

/// Fill `buf` from `offset` without moving a shared cursor, so that threads read one file at once.
#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

/// Windows' positioned read (`ReadFile` with an offset) may return short counts: loop to the end.
#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(Error::new(ErrorKind::UnexpectedEof, "failed to fill whole buffer")),
            Ok(read) => {
                buf = &mut buf[read..];
                offset += read as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(not(any(unix, windows)))]
compile_error!("upweight streams .npy files with positioned reads, which it implements for Unix and Windows");

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
