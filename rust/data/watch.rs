//! Change detection for features the core reads from the caller's memory without a copy. Every
//! group of about 8 KiB of rows gets a fingerprint (xxh3, 64 bits) the first time it is read,
//! when its values are also checked finite (one sweep gives both: [`super::fingerprint`]); every
//! later read of the group hashes it again (the rows are then in cache for the kernel that reads
//! them) and refuses it if the fingerprint differs. An array edited after an influence was built
//! is then an error naming it, instead of new rows mixed into answers about old ones, without a
//! second copy of a training set that may fill half of memory, and without a pass of its own:
//! the construction's first pass over the rows records them.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use ndarray::ArrayView2;
use rayon::prelude::*;

use super::fingerprint::{hash_and_finite, Fingerprinted};
use crate::error::{Error, Result};

/// Bytes per fingerprinted group of rows (whole rows: a group holds at least one).
const GROUP_BYTES: usize = 8 << 10;

/// A fingerprint slot not yet recorded (a hash of 0 is stored as 1).
const UNRECORDED: u64 = 0;

/// Row-group fingerprints of a C-contiguous n x d matrix, recorded as its groups are first read.
#[derive(Debug)]
pub struct RowPrints {
    n: usize,
    d: usize,
    rows_per_group: usize,
    prints: Vec<AtomicU64>,
}

impl RowPrints {
    /// Nothing recorded yet, for an n x d matrix of `itemsize`-byte values.
    pub fn new(n: usize, d: usize, itemsize: usize) -> Self {
        let rows_per_group = (GROUP_BYTES / (d.max(1) * itemsize.max(1))).max(1);
        let groups = if d == 0 { 0 } else { n.div_ceil(rows_per_group) };
        Self { n, d, rows_per_group, prints: (0..groups).map(|_| AtomicU64::new(UNRECORDED)).collect() }
    }

    /// The number of rows the fingerprints are of.
    pub fn nrows(&self) -> usize {
        self.n
    }

    /// Whether every group has been recorded.
    pub fn complete(&self) -> bool {
        self.prints.iter().all(|p| p.load(Ordering::Relaxed) != UNRECORDED)
    }

    /// Check rows `rows` of `a` (the matrix the fingerprints are of) before they are used: each
    /// group they touch (with the rows of the edge groups outside `rows`) is recorded if it is
    /// read for the first time, after its values are checked finite (`NonFiniteAt` naming
    /// `arg` otherwise), or else must hash as it did when it was recorded.
    pub fn check<T: Fingerprinted>(&self, arg: &'static str, a: ArrayView2<T>, rows: Range<usize>) -> Result<()> {
        if rows.is_empty() || self.d == 0 {
            return Ok(());
        }
        let v = match a.as_slice() {
            Some(v) if a.dim() == (self.n, self.d) => v,
            _ => return Err(Error::Value { arg, msg: "is not the array its fingerprints were recorded of".into() }),
        };
        for g in rows.start / self.rows_per_group..rows.end.div_ceil(self.rows_per_group) {
            let r = g * self.rows_per_group..((g + 1) * self.rows_per_group).min(self.n);
            let values = &v[r.start * self.d..r.end * self.d];
            // one sweep: the hash, and the finiteness a first read must check
            let (h, finite) = hash_and_finite(values);
            let h = h.max(1);
            let recorded = match self.prints[g].load(Ordering::Acquire) {
                UNRECORDED if !finite => return Err(non_finite_at(arg, values, r.start, self.d)),
                // another thread may record it first: then it must have seen the same values
                UNRECORDED => self.prints[g].compare_exchange(UNRECORDED, h, Ordering::AcqRel, Ordering::Acquire).map_or_else(|p| p, |_| h),
                p => p,
            };
            if recorded != h {
                return Err(Error::Value {
                    arg,
                    msg: format!(
                        "the array was changed after this influence was built from it without a copy (rows {}..{} differ); \
                         its answers would mix old and new data: build a new one, or pass copy=True to keep a snapshot",
                        r.start, r.end
                    ),
                });
            }
        }
        Ok(())
    }

    /// [`RowPrints::check`] of every row, in parallel.
    pub fn check_all<T: Fingerprinted + Sync>(&self, arg: &'static str, a: ArrayView2<T>) -> Result<()> {
        let step = self.rows_per_group * 64;
        (0..self.n.div_ceil(step)).into_par_iter().try_for_each(|b| self.check(arg, a, b * step..((b + 1) * step).min(self.n)))
    }
}

/// The error naming the first non-finite value of `values`, rows from `row0` of width `d`.
fn non_finite_at<T: Copy + Into<f64>>(arg: &'static str, values: &[T], row0: usize, d: usize) -> Error {
    let i = values.iter().position(|&x| !x.into().is_finite()).unwrap_or(0);
    Error::NonFiniteAt { arg, row: row0 + i / d, col: i % d }
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};

    use super::*;

    fn matrix(n: usize, d: usize) -> Array2<f64> {
        Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 3) % 11) as f64 - 5.0)
    }

    fn recorded(a: &Array2<f64>) -> RowPrints {
        let p = RowPrints::new(a.nrows(), a.ncols(), 8);
        p.check_all("X", a.view()).unwrap();
        assert!(p.complete());
        p
    }

    #[test]
    fn any_edit_of_any_row_is_detected_in_the_blocks_that_read_it() {
        for (n, d) in [(1, 1), (5, 3), (700, 2), (300, 128), (40, 2000)] {
            let a = matrix(n, d);
            let prints = recorded(&a);
            assert!(prints.check("X", a.view(), 0..n).is_ok());
            for (i, j) in [(0, 0), (n / 2, d / 2), (n - 1, d - 1)] {
                for new in [a[[i, j]] + 1.0, -a[[i, j]], f64::from_bits(a[[i, j]].to_bits() ^ 1), f64::NAN] {
                    let mut b = a.clone();
                    b[[i, j]] = new;
                    let changed =
                        |r: Range<usize>| matches!(prints.check("X", b.view(), r), Err(Error::Value { arg: "X", msg }) if msg.contains("was changed"));
                    assert!(changed(0..n), "n {n} d {d} ({i}, {j}) -> {new}");
                    assert!(changed(i..i + 1), "the row itself");
                    // a block that does not touch row i's group reads it as unchanged
                    let after = ((i / prints.rows_per_group + 1) * prints.rows_per_group).min(n);
                    assert!(prints.check("X", b.view(), after..n).is_ok());
                }
            }
            // swapping two values of a row (the same bytes in another order) is detected too
            if d > 1 {
                let mut b = a.clone();
                (b[[0, 0]], b[[0, 1]]) = (2.0, 1.0);
                let mut c = b.clone();
                (c[[0, 0]], c[[0, 1]]) = (1.0, 2.0);
                assert!(recorded(&b).check("X", c.view(), 0..1).is_err());
            }
        }
    }

    #[test]
    fn groups_are_recorded_as_they_are_first_read_after_a_finiteness_check() {
        let mut a = matrix(3000, 4); // 256 rows per group
        let p = RowPrints::new(3000, 4, 8);
        assert!(p.check("X", a.view(), 0..300).is_ok() && !p.complete());
        a[[1000, 1]] = 7.0; // not yet recorded: read as it is now
        a[[2900, 3]] = f64::INFINITY;
        assert_eq!(p.check_all("X", a.view()), Err(Error::NonFiniteAt { arg: "X", row: 2900, col: 3 }));
        a[[2900, 3]] = 0.0;
        assert!(p.check_all("X", a.view()).is_ok() && p.complete());
        a[[1000, 1]] = 8.0;
        assert!(p.check("X", a.view(), 999..1001).is_err());
        // strided views and other shapes are not the array recorded
        assert!(matches!(p.check("X", a.slice(s![.., ..2]), 0..1), Err(Error::Value { arg: "X", .. })));
        let f = Array2::<f32>::from_elem((3, 2), 1.5);
        let pf = RowPrints::new(3, 2, 4);
        assert!(pf.check_all("X", f.view()).is_ok());
        assert!(pf.check("X", f.mapv(|v| v + 1.0).view(), 0..3).is_err());
    }
}
