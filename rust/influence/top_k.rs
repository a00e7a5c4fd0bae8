//! Streaming top-k: for each query, the k most helpful and most harmful training points,
//! selected block by block so the r x n score matrix is never held (memory O(block x r + r x k)).
//! The selection is exact under a strict total order (score, then row index), so the result does
//! not depend on the thread count or on how the rows are split between threads.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

use ndarray::{s, Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::scores::{ScoreOut, Scorer};
use super::{Influence, Points};
use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::{gather, with_block, Rows, Table};
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

/// One candidate of a [`Best`] list: `key` = sign x score (smaller is better), ties to the lower
/// row index. Keys are never NaN (`Best::push` refuses them) and compare as numbers (-0 equals
/// +0), exactly as the scan's bound tests do: the order is total and strict.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: f64,
    idx: usize,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.partial_cmp(&other.key).unwrap_or(Ordering::Equal).then(self.idx.cmp(&other.idx))
    }
}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Entry {}

/// Keeps the k best (score, index) pairs; `sign` = 1 keeps the smallest, -1 the largest; ties
/// go to the lower index. A max-heap of the kept candidates with the worst on top: its top is
/// the exact k-th best, so the entry bound the scan tests against is always tight and a
/// candidate costs O(log k) only when it enters.
#[derive(Clone)]
struct Best {
    k: usize,
    sign: f64,
    heap: BinaryHeap<Entry>,
}

impl Best {
    fn new(k: usize, sign: f64) -> Self {
        Self { k, sign, heap: BinaryHeap::with_capacity(k) }
    }
    /// The k-th best score (+-inf until k are kept): a score must be better than this, or equal
    /// to it with a lower row index, to enter.
    fn bound(&self) -> f64 {
        match self.heap.peek() {
            Some(worst) if self.heap.len() == self.k => self.sign * worst.key,
            _ if self.k == 0 => -self.sign * f64::INFINITY,
            _ => self.sign * f64::INFINITY,
        }
    }
    fn push(&mut self, (score, idx): (f64, usize)) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        let entry = Entry { key: self.sign * score, idx };
        if self.heap.len() < self.k {
            self.heap.push(entry);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if entry < *worst {
                *worst = entry; // sifted down when `worst` drops
            }
        }
    }
    /// The kept (score, index) pairs, in no particular order.
    fn entries(&self) -> impl Iterator<Item = (f64, usize)> + '_ {
        self.heap.iter().map(|e| (self.sign * e.key, e.idx))
    }
    /// The best k (fewer if fewer were offered), best first.
    fn sorted(&self) -> Vec<(f64, usize)> {
        self.heap.clone().into_sorted_vec().into_iter().map(|e| (self.sign * e.key, e.idx)).collect()
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
                for (c, (v, i)) in best.sorted().into_iter().enumerate() {
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
            // the selected rows, read (and checked) once however many lists hold them
            let mut union: Vec<usize> = total.iter().flat_map(|(help, harm)| help.entries().chain(harm.entries()).map(|e| e.1)).collect();
            union.sort_unstable();
            union.dedup();
            let rows = gather(points, &union)?;
            total.par_iter_mut().enumerate().try_for_each(|(j, (help, harm))| {
                self.rescore(&rows, &union, vc, j, help)?;
                self.rescore(&rows, &union, vc, j, harm)
            })?;
            Ok(finish(total, k))
        } else {
            select(points.n(), r, k, BLOCK_ROWS, cancel, |range, out| self.score_rows(points, range, vc, None, ScoreOut::F64(out)).map(drop))
        }
    }

    /// Recompute the scores of `best`'s items for query `j` in float64 and restore the order;
    /// `rows` holds the training rows `union` (sorted), which include them.
    fn rescore(&self, rows: &Table, union: &[usize], vc: &Array2<f64>, j: usize, best: &mut Best) -> Result<()> {
        let idx: Vec<usize> = best.sorted().iter().map(|it| it.1).collect();
        if idx.is_empty() {
            return Ok(());
        }
        let at: Vec<usize> = idx.iter().map(|i| union.binary_search(i).expect("the union holds every list's rows")).collect();
        let rows = gather(rows, &at)?;
        let mut out = Array2::zeros((idx.len(), 1));
        with_block(&rows, 0..idx.len(), |b| {
            self.model.scores(self.theta.view(), b, vc.slice(s![.., j..j + 1]), None, -1.0 / self.total_weight, out.view_mut())
        })?;
        if !out.iter().all(|v| v.is_finite()) {
            return Err(overflow("the scores"));
        }
        let mut exact = Best::new(best.k, best.sign);
        for (i, &m) in idx.iter().enumerate() {
            exact.push((out[[i, 0]], m));
        }
        *best = exact;
        Ok(())
    }
}

/// The top-k of an r x n score matrix that `score` writes block by block ((len x r) for the
/// rows `range`, in blocks of `block_rows`), never held whole: a few selections (about one per
/// thread) each select among the blocks they are given, then they are merged (the result does
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
    T: ScanScore,
{
    cancel.begin(n);
    // Selections are kept in a pool and reused over the blocks (a task takes one, or makes one
    // when all are in use, and puts it back), so there are about as many as threads, each seeing
    // ~n / threads rows with bounds that keep tightening (lists restarted per piece of work would
    // admit about k ln(m / k) candidates per piece of m rows again). No lock is held while a
    // block is scored. The selection is exact under a strict total order (score, then row
    // index) and admits ties with the bound, so which selection meets which blocks, in which
    // order, cannot change the result, nor can the thread count.
    let pool: Mutex<Vec<SelectionState<T>>> = Mutex::new(Vec::new());
    let take = || pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
    blocks(n, block_rows).into_par_iter().try_for_each(|range| {
        cancel.check()?;
        // scores as (B x r): a row holds every query's score of one training point and is
        // compared with the queries' bounds at once
        let (mut sel, mut t) = take().unwrap_or_else(|| (Selection::<T>::new(k, r), Array2::<T>::from_elem((block_rows.min(n), r), T::default())));
        let (start, len) = (range.start, range.len());
        score(range.clone(), t.slice_mut(s![..len, ..]))?;
        sel.scan(t.slice(s![..len, ..]), start)?;
        pool.lock().unwrap_or_else(PoisonError::into_inner).push((sel, t));
        cancel.advance(len);
        Ok::<_, Error>(())
    })?;
    let partials = pool.into_inner().unwrap_or_else(PoisonError::into_inner).into_iter().map(|(sel, _)| sel);
    let mut total = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
    for part in partials {
        for (t, p) in total.iter_mut().zip(part.best) {
            p.0.entries().for_each(|it| t.0.push(it));
            p.1.entries().for_each(|it| t.1.push(it));
        }
    }
    Ok(total)
}

/// A selection and its buffer for one block of scores.
type SelectionState<T> = (Selection<T>, Array2<T>);

/// The sorted lists as a [`TopK`] (r x k).
fn finish(total: Vec<(Best, Best)>, k: usize) -> TopK {
    let r = total.len();
    let lists: Vec<[Vec<(f64, usize)>; 2]> = total.iter().map(|(help, harm)| [help.sorted(), harm.sorted()]).collect();
    let take = |side: usize| {
        let idx = Array2::from_shape_fn((r, k), |(j, i)| lists[j][side][i].1);
        let val = Array2::from_shape_fn((r, k), |(j, i)| lists[j][side][i].0);
        (idx, val)
    };
    let (helpful_idx, helpful) = take(0);
    let (harmful_idx, harmful) = take(1);
    TopK { helpful_idx, helpful, harmful_idx, harmful }
}

/// Per query, the (helpful, harmful) lists and their entry bounds, kept side by side so a block
/// row of scores is checked against all queries' bounds in one pass. The vector test uses the
/// bounds in the scores' own precision, rounded outwards (`lo_t`, `hi_t`); a flagged score is
/// then checked against the lists' exact float64 bounds.
struct Selection<T> {
    best: Vec<(Best, Best)>,
    lo_t: Vec<T>,
    hi_t: Vec<T>,
    /// A bit per query of the row being scanned, [`WORD`] to a word.
    flags: Vec<u64>,
}

impl<T: ScanScore> Selection<T> {
    fn new(k: usize, r: usize) -> Self {
        let best = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
        let lo_t = best.iter().map(|b| T::at_least(b.0.bound())).collect();
        let hi_t = best.iter().map(|b| T::at_most(b.1.bound())).collect();
        Self { best, lo_t, hi_t, flags: vec![0; r.div_ceil(WORD)] }
    }

    /// Offer the scores of rows `start..` (a B x r block). Only a score at or past a list's
    /// current k-th value reaches `Best::push` (which breaks a tie by the row index, so blocks
    /// may come in any order): each run of [`LANES`] queries is tested branch-free (vector
    /// compares giving a bit per query, in the scores' precision: 8 float32 lanes per AVX2
    /// compare), and only those bits are visited; a NaN or an infinity is flagged too and then
    /// caught.
    fn scan(&mut self, block: ArrayView2<T>, start: usize) -> Result<()> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return unsafe { self.scan_avx2(block, start) };
        }
        self.scan_rows::<false>(block, start)
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn scan_avx2(&mut self, block: ArrayView2<T>, start: usize) -> Result<()> {
        self.scan_rows::<true>(block, start)
    }

    /// The scan; `AVX2` = true only when called from [`Selection::scan_avx2`].
    #[inline(always)]
    fn scan_rows<const AVX2: bool>(&mut self, block: ArrayView2<T>, start: usize) -> Result<()> {
        let r = self.lo_t.len();
        let whole = r / LANES * LANES;
        let mut finite = true;
        for (i, row) in block.rows().into_iter().enumerate() {
            let row = row.to_slice().expect("contiguous rows");
            // pass 1, branch-free: a bit per query not strictly inside its bounds, 64 to a word
            // (the last, shorter run of lanes: every lane)
            for (w, word) in self.flags.iter_mut().enumerate() {
                let mut bits = 0u64;
                for g in 0..WORD / LANES {
                    let c = w * WORD + g * LANES;
                    let run = if c + LANES <= whole {
                        let (v, lo, hi) = (&row[c..c + LANES], &self.lo_t[c..c + LANES], &self.hi_t[c..c + LANES]);
                        if AVX2 {
                            #[cfg(target_arch = "x86_64")]
                            {
                                // SAFETY: AVX2 = true only under scan_avx2; each slice holds LANES values.
                                unsafe { T::outside_avx2(v, lo, hi) }
                            }
                            #[cfg(not(target_arch = "x86_64"))]
                            unreachable!("AVX2 is x86_64 only")
                        } else {
                            u32::from(outside_mask(v.try_into().expect("LANES"), lo.try_into().expect("LANES"), hi.try_into().expect("LANES")))
                        }
                    } else if c < r {
                        (1u32 << (r - c).min(LANES)) - 1
                    } else {
                        0
                    };
                    bits |= u64::from(run) << (g * LANES);
                }
                *word = bits;
            }
            // pass 2: only the flagged queries
            for w in 0..self.flags.len() {
                let bits = self.flags[w];
                if bits != 0 {
                    finite &= self.visit(row, w * WORD, bits, start + i);
                }
            }
        }
        if !finite {
            return Err(overflow("the scores"));
        }
        Ok(())
    }

    /// Offer row `idx`'s scores of queries `first + l` for each bit l of `bits`; false when one
    /// of them is not finite (NaN passes no compare: it must not vanish silently).
    #[inline(always)]
    fn visit(&mut self, row: &[T], first: usize, mut bits: u64, idx: usize) -> bool {
        let mut finite = true;
        while bits != 0 {
            let j = first + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let v: f64 = row[j].into();
            finite &= v.is_finite();
            let (help, harm) = &mut self.best[j];
            if v <= help.bound() {
                help.push((v, idx));
                self.lo_t[j] = T::at_least(help.bound());
            }
            if v >= harm.bound() {
                harm.push((v, idx));
                self.hi_t[j] = T::at_most(harm.bound());
            }
        }
        finite
    }
}

/// Queries tested together by [`Selection::scan`], and queries per flag word.
const LANES: usize = 8;
const WORD: usize = 64;

/// A score type the selection scans: float64, or float32 with its bounds rounded outwards, so
/// that every score past a float64 bound is flagged by the test in float32.
pub(super) trait ScanScore: Copy + Default + PartialOrd + Into<f64> + Send + Sync {
    /// The smallest value of the type at or above `x`.
    fn at_least(x: f64) -> Self;
    /// The largest value of the type at or below `x`.
    fn at_most(x: f64) -> Self;
    /// [`outside_mask`] of the first [`LANES`] values by AVX2 compares and a move-mask.
    ///
    /// # Safety
    /// The CPU must have AVX2, and each slice at least [`LANES`] values.
    #[cfg(target_arch = "x86_64")]
    unsafe fn outside_avx2(v: &[Self], lo: &[Self], hi: &[Self]) -> u32;
}

impl ScanScore for f64 {
    fn at_least(x: f64) -> Self {
        x
    }
    fn at_most(x: f64) -> Self {
        x
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn outside_avx2(v: &[f64], lo: &[f64], hi: &[f64]) -> u32 {
        use std::arch::x86_64::*;
        debug_assert!(v.len() >= LANES && lo.len() >= LANES && hi.len() >= LANES);
        let inside = |o: usize| {
            let (x, l, h) = (_mm256_loadu_pd(v.as_ptr().add(o)), _mm256_loadu_pd(lo.as_ptr().add(o)), _mm256_loadu_pd(hi.as_ptr().add(o)));
            _mm256_movemask_pd(_mm256_and_pd(_mm256_cmp_pd::<_CMP_GT_OQ>(x, l), _mm256_cmp_pd::<_CMP_LT_OQ>(x, h))) as u32
        };
        !(inside(0) | (inside(4) << 4)) & 0xff
    }
}

impl ScanScore for f32 {
    fn at_least(x: f64) -> Self {
        let f = x as f32; // nearest (an overflow goes to the infinity of its sign)
        if f64::from(f) < x {
            next_up(f)
        } else {
            f
        }
    }
    fn at_most(x: f64) -> Self {
        let f = x as f32;
        if f64::from(f) > x {
            -next_up(-f)
        } else {
            f
        }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn outside_avx2(v: &[f32], lo: &[f32], hi: &[f32]) -> u32 {
        use std::arch::x86_64::*;
        debug_assert!(v.len() >= LANES && lo.len() >= LANES && hi.len() >= LANES);
        let (x, l, h) = (_mm256_loadu_ps(v.as_ptr()), _mm256_loadu_ps(lo.as_ptr()), _mm256_loadu_ps(hi.as_ptr()));
        !(_mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(x, l), _mm256_cmp_ps::<_CMP_LT_OQ>(x, h))) as u32) & 0xff
    }
}

/// The next float32 above `f` (finite or -inf; `f32::next_up` needs Rust 1.86).
fn next_up(f: f32) -> f32 {
    if f == 0.0 {
        f32::from_bits(1) // the smallest subnormal, from either zero
    } else if f > 0.0 {
        f32::from_bits(f.to_bits() + 1)
    } else {
        f32::from_bits(f.to_bits() - 1)
    }
}

/// Bit l set when score `v[l]` is not strictly inside `(lo[l], hi[l])` (a tie with a bound may
/// enter by its lower row index) or is NaN: fixed width and no short-circuit, so it compiles to
/// a few vector compares and a move-mask.
#[inline(always)]
fn outside_mask<T: PartialOrd + Copy>(v: &[T; LANES], lo: &[T; LANES], hi: &[T; LANES]) -> u8 {
    let mut out = [false; LANES];
    for l in 0..LANES {
        out[l] = !((v[l] > lo[l]) & (v[l] < hi[l]));
    }
    out.iter().enumerate().fold(0, |m, (l, &b)| m | (u8::from(b) << l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// The k best of row `j` by (score, index), the reference every selection must equal.
    fn sorted_best(scores: &Array2<f64>, j: usize, k: usize, sign: f64) -> Vec<(f64, usize)> {
        let mut all: Vec<(f64, usize)> = scores.column(j).iter().copied().zip(0..).collect();
        all.sort_by(|a, b| (sign * a.0).partial_cmp(&(sign * b.0)).expect("finite").then(a.1.cmp(&b.1)));
        all.truncate(k);
        all
    }

    /// n x r scores drawn from a few values only, so ties with the k-th are everywhere.
    fn tied_scores(n: usize, r: usize, seed: u64) -> Array2<f64> {
        let mut rng = SplitMix64(seed);
        Array2::from_shape_fn((n, r), |_| (rng.below(9) as f64 - 4.0) * 0.25)
    }

    /// Blocks offered in any order (as a thread meets them after stealing work) give the exact
    /// top-k, ties with the bound going to the lower row index, in float64 and float32.
    #[test]
    fn selection_is_exact_for_blocks_in_any_order() {
        let (n, r, k, rows) = (700, 19, 6, 64); // 19 queries: two full runs of 8 and a tail of 3
        let scores = tied_scores(n, r, 7);
        let mut order: Vec<Range<usize>> = blocks(n, rows);
        for shuffle in [false, true] {
            if shuffle {
                let mut rng = SplitMix64(11);
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.below(i + 1));
                }
            } else {
                order.reverse();
            }
            let mut sel64 = Selection::<f64>::new(k, r);
            let mut sel32 = Selection::<f32>::new(k, r);
            // the portable compares, which CPUs without AVX2 run
            let (mut port64, mut port32) = (Selection::<f64>::new(k, r), Selection::<f32>::new(k, r));
            for range in &order {
                let (block, block32) = (scores.slice(s![range.clone(), ..]), scores.slice(s![range.clone(), ..]).mapv(|v| v as f32));
                sel64.scan(block, range.start).unwrap();
                sel32.scan(block32.view(), range.start).unwrap();
                port64.scan_rows::<false>(block, range.start).unwrap();
                port32.scan_rows::<false>(block32.view(), range.start).unwrap();
            }
            for j in 0..r {
                for (sign, side) in [(1.0, 0), (-1.0, 1)] {
                    let want = sorted_best(&scores, j, k, sign);
                    let pick = |sel: &(Best, Best)| if side == 0 { sel.0.sorted() } else { sel.1.sorted() };
                    let got = [pick(&sel64.best[j]), pick(&sel32.best[j]), pick(&port64.best[j]), pick(&port32.best[j])];
                    for (what, got) in ["f64", "f32", "portable f64", "portable f32"].into_iter().zip(got) {
                        assert_eq!(got, want, "{what}: query {j}, sign {sign}, shuffled {shuffle}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_nan_or_an_infinity_in_the_scores_is_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut scores = tied_scores(300, 11, 3);
            scores[[250, 10]] = bad; // in the tail run, after the lists are full
            let mut sel = Selection::<f64>::new(4, 11);
            let err = sel.scan(scores.view(), 0).unwrap_err();
            assert!(err.to_string().contains("scores"), "{err}");
        }
    }

    /// The float32 bounds are the tightest float32 values on the outside of the float64 ones.
    #[test]
    fn float32_bounds_round_outwards() {
        let mut rng = SplitMix64(5);
        let mut xs = vec![0.0, -0.0, 1.0, -1.0, 1e-45, -1e-45, 1e-300, -1e-300, 3.5e38, -3.5e38, 1e300, f64::INFINITY, f64::NEG_INFINITY];
        xs.extend((0..2000).map(|_| rng.normal() * 10f64.powi(rng.below(80) as i32 - 40)));
        for x in xs {
            let (up, down) = (f32::at_least(x), f32::at_most(x));
            assert!(f64::from(up) >= x && f64::from(down) <= x, "{x}: {down} {up}");
            if x.is_finite() {
                // nothing of the type lies strictly between the bound and x
                assert!(f64::from(-next_up(-up)) < x || up == f32::MIN || f64::from(up) == x, "{x}: {up}");
                assert!(f64::from(next_up(down)) > x || down == f32::MAX || f64::from(down) == x, "{x}: {down}");
            }
        }
    }
}
