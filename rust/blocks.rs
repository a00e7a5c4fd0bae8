//! Deterministic parallelism over row blocks.
//!
//! Rows are cut into blocks whose boundaries depend only on n (never on the thread count);
//! partial results are combined in block order. So 1 thread and N threads give the same bits.

use std::ops::Range;

use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::Result;

/// Rows per block for streaming kernels: large enough for efficient matrix products,
/// small enough that a block of per-example gradients stays in cache-friendly sizes.
pub const BLOCK_ROWS: usize = 512;

/// The fixed row blocks of `0..n`.
pub fn blocks(n: usize, block: usize) -> Vec<Range<usize>> {
    (0..n.div_ceil(block)).map(|b| b * block..((b + 1) * block).min(n)).collect()
}

/// Sum of `map(block)` over the blocks of `0..n`, in parallel and deterministic.
///
/// Blocks are grouped into at most `max_partials` contiguous chunks (a function of n and the caller's
/// bound only, never of the thread count); each chunk
/// folds its blocks in order with `add`, then chunk results are folded in order. `cancel` is polled
/// before each block.
pub fn map_reduce<T, M, A>(n: usize, max_partials: usize, cancel: &Cancel, map: M, add: A) -> Result<Option<T>>
where
    T: Send,
    M: Fn(Range<usize>) -> Result<T> + Sync,
    A: Fn(&mut T, T) + Sync,
{
    let all = blocks(n, BLOCK_ROWS);
    let per_chunk = chunk_blocks(all.len(), max_partials);
    cancel.begin(n);
    let partials: Vec<Result<Option<T>>> = all
        .par_chunks(per_chunk)
        .map(|chunk| {
            let mut acc: Option<T> = None;
            for r in chunk {
                cancel.check()?;
                let v = map(r.clone())?;
                cancel.advance(r.len());
                match acc.as_mut() {
                    Some(a) => add(a, v),
                    None => acc = Some(v),
                }
            }
            Ok(acc)
        })
        .collect();
    let mut total: Option<T> = None;
    for p in partials {
        if let Some(v) = p? {
            match total.as_mut() {
                Some(t) => add(t, v),
                None => total = Some(v),
            }
        }
    }
    Ok(total)
}

/// [`map_reduce`] for sums that each block adds into an accumulator in place: every chunk starts
/// from `init()` and `fold`s its blocks into it in order (no value is allocated per block); the
/// chunks' sums are then added in order with `add`. The same chunks as `map_reduce`, so the
/// result does not depend on the thread count either. `None` when n = 0.
pub fn fold_reduce<T, I, F, A>(n: usize, max_partials: usize, cancel: &Cancel, init: I, fold: F, add: A) -> Result<Option<T>>
where
    T: Send,
    I: Fn() -> T + Sync,
    F: Fn(&mut T, Range<usize>) -> Result<()> + Sync,
    A: Fn(&mut T, T) + Sync,
{
    let all = blocks(n, BLOCK_ROWS);
    let per_chunk = chunk_blocks(all.len(), max_partials);
    cancel.begin(n);
    let partials: Vec<Result<T>> = all
        .par_chunks(per_chunk)
        .map(|chunk| {
            let mut acc = init();
            for r in chunk {
                cancel.check()?;
                fold(&mut acc, r.clone())?;
                cancel.advance(r.len());
            }
            Ok(acc)
        })
        .collect();
    let mut total: Option<T> = None;
    for p in partials {
        let v = p?;
        match total.as_mut() {
            Some(t) => add(t, v),
            None => total = Some(v),
        }
    }
    Ok(total)
}

/// Blocks per chunk when `n_blocks` blocks are grouped into at most `max_partials` chunks.
fn chunk_blocks(n_blocks: usize, max_partials: usize) -> usize {
    n_blocks.div_ceil(max_partials.max(1)).max(1)
}

/// Two sums from one pass over the blocks of `0..n` (each block read once): `map` gives a block's
/// pair (a, b), and each component comes out bitwise equal to [`map_reduce`] of that component with
/// its own bound (`max_a`, `max_b`). Work is split like `map_reduce` with `max_b`; the `a` values
/// are folded with [`Fold`], which keeps `max_a`'s grouping across those chunks.
pub fn map_reduce2<A, B, M, FA, FB>(n: usize, max_a: usize, max_b: usize, cancel: &Cancel, map: M, add_a: FA, add_b: FB) -> Result<Option<(A, B)>>
where
    A: Send,
    B: Send,
    M: Fn(Range<usize>) -> Result<(A, B)> + Sync,
    FA: Fn(&mut A, A) + Sync,
    FB: Fn(&mut B, B) + Sync,
{
    let all = blocks(n, BLOCK_ROWS);
    let per_chunk = chunk_blocks(all.len(), max_b);
    cancel.begin(n);
    let partials: Vec<Result<(Fold<A>, Option<B>)>> = all
        .par_chunks(per_chunk)
        .enumerate()
        .map(|(c, chunk)| {
            let mut fold_a = Fold::new(n, max_a);
            let mut acc: Option<B> = None;
            for (i, r) in chunk.iter().enumerate() {
                cancel.check()?;
                let (a, b) = map(r.clone())?;
                cancel.advance(r.len());
                fold_a.push(c * per_chunk + i, a, &add_a);
                match acc.as_mut() {
                    Some(t) => add_b(t, b),
                    None => acc = Some(b),
                }
            }
            Ok((fold_a, acc))
        })
        .collect();
    let mut fold_a = Fold::new(n, max_a);
    let mut total_b: Option<B> = None;
    for p in partials {
        let (fa, b) = p?;
        fold_a.append(fa, &add_a);
        if let Some(b) = b {
            match total_b.as_mut() {
                Some(t) => add_b(t, b),
                None => total_b = Some(b),
            }
        }
    }
    Ok(fold_a.finish(&add_a).zip(total_b))
}

/// [`map_reduce`]'s reduction of per-block values (blocks of [`BLOCK_ROWS`] rows of `0..n`, at
/// most `max_partials` chunks), fed the values of a contiguous run of blocks in order, for callers
/// that read the rows themselves. Runs that follow each other are joined with [`Fold::append`];
/// a fold that covers every block from block 0 gives the same bits as `map_reduce`.
pub struct Fold<T> {
    per_chunk: usize,
    /// Values of the run's first blocks when they continue a chunk begun before the run.
    lead: Vec<T>,
    /// Running sum of each chunk begun in the run, in order.
    sums: Vec<T>,
}

impl<T> Fold<T> {
    pub fn new(n: usize, max_partials: usize) -> Self {
        Self { per_chunk: chunk_blocks(n.div_ceil(BLOCK_ROWS), max_partials), lead: Vec::new(), sums: Vec::new() }
    }

    /// The value of block `block` (its index among the blocks of `0..n`), the next one of the run.
    pub fn push(&mut self, block: usize, v: T, add: &impl Fn(&mut T, T)) {
        if block % self.per_chunk == 0 {
            self.sums.push(v);
        } else if let Some(s) = self.sums.last_mut() {
            add(s, v);
        } else {
            self.lead.push(v);
        }
    }

    /// Join the run that directly follows this one.
    pub fn append(&mut self, next: Fold<T>, add: &impl Fn(&mut T, T)) {
        for v in next.lead {
            match self.sums.last_mut() {
                Some(s) => add(s, v),
                None => self.lead.push(v),
            }
        }
        self.sums.extend(next.sums);
    }

    /// The chunk sums folded in order (`None` if no chunk began in the run).
    pub fn finish(self, add: &impl Fn(&mut T, T)) -> Option<T> {
        let mut it = self.sums.into_iter();
        let mut total = it.next()?;
        it.for_each(|v| add(&mut total, v));
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_rows_once() {
        let b = blocks(1030, 512);
        assert_eq!(b, vec![0..512, 512..1024, 1024..1030]);
        assert!(blocks(0, 512).is_empty());
    }

    #[test]
    fn map_reduce_is_thread_count_independent() {
        let xs: Vec<f64> = (0..100_000).map(|i| ((i as f64) * 0.37).sin() * 1e-3 + 1e5).collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| map_reduce(xs.len(), 32, &Cancel::new(), |r| Ok(xs[r].iter().sum::<f64>()), |a, b| *a += b).unwrap().unwrap())
        };
        let one = run(1);
        assert_eq!(one.to_bits(), run(2).to_bits());
        assert_eq!(one.to_bits(), run(7).to_bits());
    }

    #[test]
    fn map_reduce2_matches_two_map_reduces_bitwise() {
        let xs: Vec<f64> = (0..300_000).map(|i| ((i as f64) * 0.37).sin() * 1e-3 + 1e5).collect();
        let ys: Vec<f64> = xs.iter().map(|x| x.sqrt() * 1e3).collect();
        let sum = |v: &[f64]| v.iter().sum::<f64>();
        for (max_a, max_b) in [(64, 64), (64, 7), (64, 1), (5, 64), (13, 3)] {
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| {
                    map_reduce2(xs.len(), max_a, max_b, &Cancel::new(), |r| Ok((sum(&xs[r.clone()]), sum(&ys[r]))), |a, b| *a += b, |a, b| *a += b)
                        .unwrap()
                        .unwrap()
                })
            };
            let a = map_reduce(xs.len(), max_a, &Cancel::new(), |r| Ok(sum(&xs[r])), |a, b| *a += b).unwrap().unwrap();
            let b = map_reduce(ys.len(), max_b, &Cancel::new(), |r| Ok(sum(&ys[r])), |a, b| *a += b).unwrap().unwrap();
            for threads in [1, 3] {
                let (a2, b2) = run(threads);
                assert_eq!((a.to_bits(), b.to_bits()), (a2.to_bits(), b2.to_bits()), "{max_a} {max_b}");
            }
        }
    }

    /// Folding each block's values into a per-chunk accumulator gives map_reduce's bits (the
    /// first block added to 0 is exact), for any thread count; no rows, no sum.
    #[test]
    fn fold_reduce_matches_map_reduce_bitwise() {
        let xs: Vec<f64> = (0..100_000).map(|i| ((i as f64) * 0.37).sin() * 1e-3 + 1e5).collect();
        let want = map_reduce(xs.len(), 13, &Cancel::new(), |r| Ok(xs[r].iter().sum::<f64>()), |a, b| *a += b).unwrap().unwrap();
        for threads in [1, 2, 7] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let got = pool
                .install(|| {
                    fold_reduce(
                        xs.len(),
                        13,
                        &Cancel::new(),
                        || 0.0,
                        |acc, r| {
                            *acc += xs[r].iter().sum::<f64>();
                            Ok(())
                        },
                        |a, b| *a += b,
                    )
                })
                .unwrap()
                .unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{threads} threads");
        }
        assert!(fold_reduce(0, 13, &Cancel::new(), || 0.0, |_, _| Ok(()), |a, b| *a += b).unwrap().is_none());
        let c = Cancel::new();
        c.cancel();
        let count = |a: &mut usize, r: Range<usize>| {
            *a += r.len();
            Ok(())
        };
        let r = fold_reduce(10_000, 32, &c, || 0usize, count, |a, b| *a += b);
        assert_eq!(r.unwrap_err(), crate::error::Error::Interrupted);
    }

    #[test]
    fn cancelled_work_stops_with_interrupted() {
        let c = Cancel::new();
        c.cancel();
        let r = map_reduce(10_000, 32, &c, |r| Ok(r.len()), |a, b| *a += b);
        assert_eq!(r.unwrap_err(), crate::error::Error::Interrupted);
    }
}
