//! Change detection for features the core reads from the caller's memory without a copy. A
//! fingerprint (xxh3, 64 bits) of every group of about 8 KiB of rows is recorded once, in the
//! pass that checks them for NaN and infinity; every later read of a block of rows hashes the
//! groups it touches again (the rows are in cache: about 3 ms per 100 MB on two cores) and
//! refuses them if any differs. An array edited after an influence was built is then an error
//! naming it, instead of new rows mixed into answers about old ones, without keeping a second
//! copy of a training set that may fill half of memory.

use std::ops::Range;

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::error::{all_finite, Error, Result};

/// Bytes per fingerprinted group of rows (whole rows: a group holds at least one).
const GROUP_BYTES: usize = 8 << 10;

/// Row-group fingerprints of a C-contiguous matrix, taken when its rows were validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPrints {
    n: usize,
    d: usize,
    rows_per_group: usize,
    prints: Vec<u64>,
}

/// The bytes of a float slice (f32 and f64 have no padding and every bit pattern is a value).
fn bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: a slice of plain floats is also a slice of size_of_val(v) initialised bytes
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

impl RowPrints {
    /// Check every value of `a` is finite (errors name `arg` and the first bad entry) and record
    /// its fingerprints, in one parallel pass.
    pub fn record<T: Copy + Into<f64> + Sync>(arg: &'static str, a: ArrayView2<T>) -> Result<Self> {
        let (n, d) = a.dim();
        let v = a.as_slice().ok_or_else(|| Error::Value { arg, msg: "must be C-contiguous to be read without a copy".into() })?;
        let rows_per_group = (GROUP_BYTES / (d.max(1) * std::mem::size_of::<T>())).max(1);
        let prints: Option<Vec<u64>> = v.par_chunks((rows_per_group * d).max(1)).map(|g| all_finite(g).then(|| xxhash_rust::xxh3::xxh3_64(bytes(g)))).collect();
        match prints {
            Some(prints) => Ok(Self { n, d, rows_per_group, prints: if d == 0 { Vec::new() } else { prints } }),
            // name the first bad entry (or, if it is gone, say the array changed while it was read)
            None => Err(crate::error::check_finite_rows(arg, a).err().unwrap_or_else(|| Error::Value { arg, msg: "changed while it was read".into() })),
        }
    }

    /// The number of rows the fingerprints are of.
    pub fn nrows(&self) -> usize {
        self.n
    }

    /// Whether rows `rows` of `a` (the matrix the fingerprints were recorded of) are unchanged:
    /// every group they touch hashes as it did (rows of the edge groups outside `rows` included).
    pub fn unchanged<T: Copy>(&self, a: ArrayView2<T>, rows: Range<usize>) -> bool {
        if rows.is_empty() || self.d == 0 {
            return true;
        }
        let Some(v) = a.as_slice() else { return false };
        if a.dim() != (self.n, self.d) {
            return false;
        }
        let (g0, g1) = (rows.start / self.rows_per_group, rows.end.div_ceil(self.rows_per_group));
        (g0..g1).all(|g| {
            let r = g * self.rows_per_group..((g + 1) * self.rows_per_group).min(self.n);
            xxhash_rust::xxh3::xxh3_64(bytes(&v[r.start * self.d..r.end * self.d])) == self.prints[g]
        })
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};

    use super::*;

    fn matrix(n: usize, d: usize) -> Array2<f64> {
        Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0)
    }

    #[test]
    fn any_edit_of_any_row_is_detected_in_the_blocks_that_read_it() {
        for (n, d) in [(1, 1), (5, 3), (700, 2), (300, 128), (40, 2000)] {
            let a = matrix(n, d);
            let prints = RowPrints::record("X", a.view()).unwrap();
            assert!(prints.unchanged(a.view(), 0..n));
            for (i, j) in [(0, 0), (n / 2, d / 2), (n - 1, d - 1)] {
                for new in [a[[i, j]] + 1.0, -a[[i, j]], f64::from_bits(a[[i, j]].to_bits() ^ 1), f64::NAN] {
                    let mut b = a.clone();
                    b[[i, j]] = new;
                    assert!(!prints.unchanged(b.view(), 0..n), "n {n} d {d} ({i}, {j}) -> {new}");
                    assert!(!prints.unchanged(b.view(), i..i + 1), "the row itself");
                    // a block that does not touch row i's group reads it as unchanged
                    let group = i / prints.rows_per_group;
                    let after = ((group + 1) * prints.rows_per_group).min(n);
                    assert!(prints.unchanged(b.view(), after..n));
                }
            }
            // swapping two values of a row (same multiset of bytes) is detected too
            if d > 1 {
                let mut b = a.clone();
                b[[0, 0]] = 2.0;
                b[[0, 1]] = 1.0;
                let mut c = b.clone();
                c[[0, 0]] = 1.0;
                c[[0, 1]] = 2.0;
                let pb = RowPrints::record("X", b.view()).unwrap();
                assert!(!pb.unchanged(c.view(), 0..1));
            }
        }
    }

    #[test]
    fn recording_refuses_non_finite_values_and_strided_arrays() {
        let mut a = matrix(50, 4);
        a[[17, 2]] = f64::INFINITY;
        assert_eq!(RowPrints::record("X", a.view()), Err(Error::NonFiniteAt { arg: "X", row: 17, col: 2 }));
        let b = matrix(10, 4);
        assert!(matches!(RowPrints::record("X", b.slice(s![.., ..2])), Err(Error::Value { arg: "X", .. })));
        let f = Array2::<f32>::from_elem((3, 2), 1.5);
        let pf = RowPrints::record("X", f.view()).unwrap();
        assert!(pf.unchanged(f.view(), 0..3));
        assert!(!pf.unchanged(matrix(3, 2).mapv(|v| v as f32).view(), 0..3));
    }
}
