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
    let per_chunk = all.len().div_ceil(max_partials.max(1)).max(1);
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
            pool.install(|| {
                map_reduce(xs.len(), 32, &Cancel::new(), |r| Ok(xs[r].iter().sum::<f64>()), |a, b| *a += b)
                    .unwrap()
                    .unwrap()
            })
        };
        let one = run(1);
        assert_eq!(one.to_bits(), run(2).to_bits());
        assert_eq!(one.to_bits(), run(7).to_bits());
    }

    #[test]
    fn cancelled_work_stops_with_interrupted() {
        let c = Cancel::new();
        c.cancel();
        let r = map_reduce(10_000, 32, &c, |r| Ok(r.len()), |a, b| *a += b);
        assert_eq!(r.unwrap_err(), crate::error::Error::Interrupted);
    }
}
