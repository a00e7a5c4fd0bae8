//! Streaming top-k: for each query, the k most helpful and most harmful training points,
//! selected block by block so the r x n score matrix is never held (memory O(block x r + r x k)),
//! in a fixed chunking so the result does not depend on the thread count.

use std::ops::Range;

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::scores::{ScoreOut, Scorer};
use super::{Influence, Points};
use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::{gather, with_block, Rows};
use crate::error::{overflow, Error, Result};
use crate::solvers::SolveInfo;

/// The k most helpful (most negative score) and most harmful (most positive) training points
/// for each query, (r x k) each; ties broken by the lower index.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    pub helpful_idx: Array2<usize>,
    pub helpful: Array2<f64>,
    pub harmful_idx: Array2<usize>,
    pub harmful: Array2<f64>,
}

/// Contiguous chunks of row blocks `top_k` selects in independently before merging (a function
/// of n only, so the merge order and the result do not depend on the thread count). Each chunk
/// starts with empty lists, so fewer chunks mean fewer candidates while the lists fill.
const TOP_K_CHUNKS: usize = 16;

/// Keeps the k best (score, index) pairs; `sign` = 1 keeps the smallest, -1 the largest; ties
/// go to the lower index. Candidates are appended to a buffer of up to 2k and compacted to the
/// best k when it fills (amortised O(1) per candidate); `items()` gives the final sorted list.
#[derive(Clone)]
struct Best {
    k: usize,
    sign: f64,
    items: Vec<(f64, usize)>,
    /// The k-th best after the last compaction (+-inf before the first): only better scores
    /// can enter.
    bound: (f64, usize),
}

impl Best {
    fn new(k: usize, sign: f64) -> Self {
        let bound = if k == 0 { (-sign * f64::INFINITY, 0) } else { (sign * f64::INFINITY, usize::MAX) };
        Self { k, sign, items: Vec::with_capacity(2 * k), bound }
    }
    fn better(&self, a: (f64, usize), b: (f64, usize)) -> bool {
        let (x, y) = (self.sign * a.0, self.sign * b.0);
        x < y || (x == y && a.1 < b.1)
    }
    /// A score must be strictly better than this to enter when rows are offered in increasing
    /// index order (a tie then loses to the earlier index).
    fn bound(&self) -> f64 {
        self.bound.0
    }
    fn push(&mut self, item: (f64, usize)) {
        if self.k == 0 || !self.better(item, self.bound) {
            return;
        }
        self.items.push(item);
        if self.items.len() >= 2 * self.k {
            self.compact();
        }
    }
    /// Keep the best k, sorted, and tighten the bound to the k-th.
    /// Keep the best k (partitioned, not sorted: O(k)) and tighten the bound to the k-th.
    fn compact(&mut self) {
        let sign = self.sign;
        let order = |a: &(f64, usize), b: &(f64, usize)| (sign * a.0).total_cmp(&(sign * b.0)).then(a.1.cmp(&b.1));
        if self.items.len() > self.k && self.k > 0 {
            self.items.select_nth_unstable_by(self.k - 1, order);
            self.items.truncate(self.k);
            self.bound = self.items[self.k - 1];
        } else if self.items.len() == self.k && self.k > 0 {
            self.bound = *self.items.iter().max_by(|a, b| order(a, b)).expect("k > 0");
        }
    }
    /// The best k (fewer if fewer were offered), best first.
    fn items(&mut self) -> &[(f64, usize)] {
        self.compact();
        let sign = self.sign;
        self.items.sort_unstable_by(|a, b| (sign * a.0).total_cmp(&(sign * b.0)).then(a.1.cmp(&b.1)));
        &self.items
    }
}

impl TopK {
    /// The k best of two top-k results over disjoint training rows (e.g. two segments of one
    /// run): helpful keeps the smallest scores, harmful the largest, ties to the lower index,
    /// exactly as one pass over both would choose. Both must have the same number of queries.
    pub fn merge(&self, other: &TopK, k: usize) -> Result<TopK> {
        let r = self.helpful.nrows();
        for (arg, m) in [("b", &other.helpful), ("b", &other.harmful), ("a", &self.harmful)] {
            if m.nrows() != r {
                return Err(Error::Shape { arg, msg: format!("has {} queries, expected {r}", m.nrows()) });
            }
        }
        let pick = |ia: &Array2<usize>, va: &Array2<f64>, ib: &Array2<usize>, vb: &Array2<f64>, sign: f64| -> Result<(Array2<usize>, Array2<f64>)> {
            if ia.dim() != va.dim() || ib.dim() != vb.dim() {
                return Err(Error::Shape { arg: "a", msg: "index and score arrays differ in shape".into() });
            }
            let kk = k.min(ia.ncols() + ib.ncols());
            let (mut idx, mut val) = (Array2::zeros((r, kk)), Array2::zeros((r, kk)));
            for j in 0..r {
                let mut best = Best::new(kk, sign);
                ia.row(j).iter().zip(va.row(j)).chain(ib.row(j).iter().zip(vb.row(j))).for_each(|(&i, &v)| best.push((v, i)));
                for (c, &(v, i)) in best.items().iter().enumerate() {
                    idx[[j, c]] = i;
                    val[[j, c]] = v;
                }
            }
            Ok((idx, val))
        };
        let (helpful_idx, helpful) = pick(&self.helpful_idx, &self.helpful, &other.helpful_idx, &other.helpful, 1.0)?;
        let (harmful_idx, harmful) = pick(&self.harmful_idx, &self.harmful, &other.harmful_idx, &other.harmful, -1.0)?;
        Ok(TopK { helpful_idx, helpful, harmful_idx, harmful })
    }
}

impl Influence {
    /// For each f_j (`grad_f`, r x p), the `k` most helpful and most harmful rows of `points`,
    /// streaming over blocks: the r x n matrix is never held (memory O(block x r + r x k)).
    /// Float32 rows are scored and selected in float32; the selected scores are then recomputed
    /// in float64, so the values returned are exact (only near-ties at the k-th place can differ
    /// from a float64 selection).
    pub fn top_k(&self, grad_f: ArrayView2<f64>, k: usize, points: Points, cancel: &Cancel) -> Result<(TopK, SolveInfo)> {
        let (vc, info) = self.solve_queries(grad_f, cancel)?;
        Ok((self.top_k_solved(&vc, k, points, cancel)?, info))
    }

    /// [`Influence::top_k`] from solved queries `vc` ((p + 1) x r, from [`Influence::solve_queries`]).
    pub fn top_k_solved(&self, vc: &Array2<f64>, k: usize, points: Points, cancel: &Cancel) -> Result<TopK> {
        self.with_points(&points, |points, index| {
            let mut top = self.scorer().top_k(points, vc, k, cancel)?;
            for i in top.helpful_idx.iter_mut().chain(top.harmful_idx.iter_mut()) {
                *i = index.absolute(*i);
            }
            Ok(top)
        })
    }
}

impl Scorer<'_> {
    /// The `k` most helpful and most harmful rows of `points` for solved queries `vc`, indices
    /// relative to `points` (see [`Influence::top_k`]).
    /// The selection scan refuses NaN and infinity itself: the scores need no overflow bound.
    pub fn top_k(&self, points: &dyn Rows, vc: &Array2<f64>, k: usize, cancel: &Cancel) -> Result<TopK> {
        self.check(points, vc)?;
        let r = vc.ncols();
        let k = k.min(points.n());
        if self.float32_kernel(points) {
            let vc32 = vc.mapv(|v| v as f32);
            let mut total = select_best::<f32>(points.n(), r, k, BLOCK_ROWS, cancel, |range, out| {
                self.score_rows(points, range, vc, None, ScoreOut::F32(out, &vc32)).map(drop)
            })?;
            for (j, (help, harm)) in total.iter_mut().enumerate() {
                for best in [help, harm] {
                    self.rescore(points, vc, j, best)?;
                }
            }
            Ok(finish(total, k))
        } else {
            select(points.n(), r, k, BLOCK_ROWS, cancel, |range, out| self.score_rows(points, range, vc, None, ScoreOut::F64(out)).map(drop))
        }
    }

    /// Recompute the scores of `best`'s items for query `j` in float64 and restore the order.
    fn rescore(&self, points: &dyn Rows, vc: &Array2<f64>, j: usize, best: &mut Best) -> Result<()> {
        let idx: Vec<usize> = best.items().iter().map(|it| it.1).collect();
        if idx.is_empty() {
            return Ok(());
        }
        let rows = gather(points, &idx)?;
        let mut out = Array2::zeros((idx.len(), 1));
        with_block(&rows, 0..idx.len(), |b| {
            self.model.scores(self.theta.view(), b, vc.slice(s![.., j..j + 1]), None, -1.0 / self.total_weight, out.view_mut())
        })?;
        let mut exact = Best::new(best.k, best.sign);
        for (i, &m) in idx.iter().enumerate() {
            exact.push((out[[i, 0]], m));
        }
        *best = exact;
        Ok(())
    }
}

/// The top-k of an r x n score matrix that `score` writes block by block ((len x r) for the
/// rows `range`, in blocks of `block_rows`), never held whole: each of [`TOP_K_CHUNKS`] fixed
/// chunks of blocks selects on its own, then the chunks are merged in order (the result does
/// not depend on the thread count). Indices are row indices `0..n`.
pub(super) fn select<F>(n: usize, r: usize, k: usize, block_rows: usize, cancel: &Cancel, score: F) -> Result<TopK>
where
    F: Fn(Range<usize>, ArrayViewMut2<f64>) -> Result<()> + Sync,
{
    let k = k.min(n);
    Ok(finish(select_best::<f64>(n, r, k, block_rows, cancel, score)?, k))
}

/// [`select`] in the precision of the scores, before the lists are sorted.
fn select_best<T>(
    n: usize,
    r: usize,
    k: usize,
    block_rows: usize,
    cancel: &Cancel,
    score: impl Fn(Range<usize>, ArrayViewMut2<T>) -> Result<()> + Sync,
) -> Result<Vec<(Best, Best)>>
where
    T: Copy + Default + Into<f64> + Send + Sync,
{
    let all = blocks(n, block_rows);
    // a fixed number of contiguous chunks (a function of n only): deterministic merge order
    let per_chunk = all.len().div_ceil(TOP_K_CHUNKS).max(1);
    cancel.begin(n);
    let partials: Vec<Result<Vec<(Best, Best)>>> = all
        .par_chunks(per_chunk)
        .map(|chunk| {
            let mut sel = Selection::new(k, r);
            // scores as (B x r): a row holds every query's score of one training point and is
            // compared with the queries' bounds at once
            let mut t = Array2::<T>::from_elem((block_rows.min(n), r), T::default());
            for range in chunk {
                cancel.check()?;
                let (start, len) = (range.start, range.len());
                score(range.clone(), t.slice_mut(s![..len, ..]))?;
                sel.scan(t.slice(s![..len, ..]), start)?;
                cancel.advance(len);
            }
            Ok(sel.best)
        })
        .collect();
    let mut total = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
    for part in partials {
        for (t, mut p) in total.iter_mut().zip(part?) {
            p.0.items().iter().for_each(|&it| t.0.push(it));
            p.1.items().iter().for_each(|&it| t.1.push(it));
        }
    }
    Ok(total)
}

/// The sorted lists as a [`TopK`] (r x k).
fn finish(mut total: Vec<(Best, Best)>, k: usize) -> TopK {
    for (help, harm) in total.iter_mut() {
        help.items(); // sorted, best first
        harm.items();
    }
    let r = total.len();
    let take = |sel: fn(&(Best, Best)) -> &Best| {
        let idx = Array2::from_shape_fn((r, k), |(j, i)| sel(&total[j]).items[i].1);
        let val = Array2::from_shape_fn((r, k), |(j, i)| sel(&total[j]).items[i].0);
        (idx, val)
    };
    let (helpful_idx, helpful) = take(|b| &b.0);
    let (harmful_idx, harmful) = take(|b| &b.1);
    TopK { helpful_idx, helpful, harmful_idx, harmful }
}

/// Per query, the (helpful, harmful) lists and their entry bounds, kept side by side so a block
/// row of scores is checked against all queries' bounds in one pass.
struct Selection {
    best: Vec<(Best, Best)>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl Selection {
    fn new(k: usize, r: usize) -> Self {
        let best = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
        let lo = best.iter().map(|b| b.0.bound()).collect();
        let hi = best.iter().map(|b| b.1.bound()).collect();
        Self { best, lo, hi }
    }

    /// Offer the scores of rows `start..` (a B x r block). Only a score past a list's current
    /// k-th value reaches `Best::push`: each run of [`LANES`] queries is tested branch-free
    /// (vector compares giving a bit per query outside its bounds), and only those bits are
    /// visited; a NaN or an infinity is flagged too and then caught. Rows come in increasing index order, so a tie with the
    /// bound never enters (the earlier index wins).
    fn scan<T: Copy + Into<f64>>(&mut self, block: ndarray::ArrayView2<T>, start: usize) -> Result<()> {
        let mut finite = true;
        for (i, row) in block.rows().into_iter().enumerate() {
            let row = row.to_slice().expect("contiguous rows");
            for (c, v) in row.chunks(LANES).enumerate() {
                let lanes = c * LANES..c * LANES + v.len();
                let mut outside = match (v.try_into(), self.lo[lanes.clone()].try_into(), self.hi[lanes.clone()].try_into()) {
                    (Ok(v), Ok(lo), Ok(hi)) => outside_mask(v, lo, hi),
                    _ => (1u32 << v.len()) - 1, // the last, shorter run: every lane
                };
                while outside != 0 {
                    let l = outside.trailing_zeros() as usize;
                    outside &= outside - 1;
                    let (j, v): (usize, f64) = (c * LANES + l, v[l].into());
                    finite &= v.is_finite(); // NaN passes no compare: it must not vanish silently
                    if v < self.lo[j] {
                        self.best[j].0.push((v, start + i));
                        self.lo[j] = self.best[j].0.bound();
                    }
                    if v > self.hi[j] {
                        self.best[j].1.push((v, start + i));
                        self.hi[j] = self.best[j].1.bound();
                    }
                }
            }
        }
        if !finite {
            return Err(overflow("the scores"));
        }
        Ok(())
    }
}

/// Queries tested together by [`Selection::scan`].
const LANES: usize = 8;

/// Bit l set when score `v[l]` lies outside `[lo[l], hi[l]]` or is NaN: fixed width and no
/// short-circuit, so it compiles to a few vector compares and a move-mask.
#[inline(always)]
fn outside_mask<T: Copy + Into<f64>>(v: &[T; LANES], lo: &[f64; LANES], hi: &[f64; LANES]) -> u32 {
    let mut out = [false; LANES];
    for l in 0..LANES {
        let x: f64 = v[l].into();
        out[l] = !((x >= lo[l]) & (x <= hi[l]));
    }
    out.iter().enumerate().fold(0, |m, (l, &b)| m | (u32::from(b) << l))
}
