//! Score matrices: the influence of every training point on functions f given their
//! gradients, S[j, m] = grad f_j . I(z_m) = -(g_m . V_j + c_j) / W with V = H^{-1} grad f^T
//! solved once per query and one matrix product per block of training rows.

use std::ops::Range;

use ndarray::{s, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use super::{Influence, Points};
use crate::blocks::BLOCK_ROWS;
use crate::cancel::Cancel;
use crate::data::{with_block, Rows, Table};
use crate::error::{all_finite, check_finite_rows, check_overflow, Error, Result};
use crate::models::{scores_f32, Model, QueryNorm};
use crate::solvers::SolveInfo;

impl Influence {
    /// [V; c] ((p + 1) x r): V = H^{-1} grad_f^T and the penalty offsets c = V^T 2 l2 coef*.
    /// Solved once, these serve every call of [`Influence::top_k_solved`] (e.g. one per segment
    /// of a long run).
    pub fn solve_queries(&self, grad_f: ArrayView2<f64>, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.check_width("grad_f", grad_f.ncols())?;
        check_finite_rows("grad_f", grad_f)?;
        let p = self.n_params();
        let mut vc = Array2::zeros((p + 1, grad_f.nrows()));
        vc.slice_mut(s![..p, ..]).assign(&grad_f.t());
        let info = self.solve_in_place(vc.slice_mut(s![..p, ..]), true, cancel)?;
        check_overflow("H^-1 grad f", vc.iter())?;
        let c = vc.slice(s![..p, ..]).t().dot(&self.penalty_grad);
        vc.row_mut(p).assign(&c);
        Ok((vc, info))
    }

    /// Influence of every row of `points` on functions f_j given their gradients at theta*
    /// (`grad_f`, r x p): S (r x n), S[j, m] = grad f_j . I(z_m). Float32 rows are scored in
    /// float32 ([`Scores::F32`]), with the solve and V in float64.
    /// Training rows gathered by index are scored in float64 and returned in the training
    /// set's precision.
    pub fn on(&self, grad_f: ArrayView2<f64>, points: Points, cancel: &Cancel) -> Result<(Scores, SolveInfo)> {
        let (vc, info) = self.solve_queries(grad_f, cancel)?;
        Ok((self.scores_solved(&vc, points, cancel)?, info))
    }

    /// S (r x n) for the rows of `points` from queries solved once by
    /// [`Influence::solve_queries`] (`vc` = [V; c]): what [`Influence::on`] returns, without
    /// solving again.
    pub fn scores_solved(&self, vc: &Array2<f64>, points: Points, cancel: &Cancel) -> Result<Scores> {
        let scores = self.with_points(&points, |points, _| self.scorer().scores(points, vc, cancel))?;
        Ok(match (scores, &points) {
            (Scores::F64(a), Points::Rows(_)) if self.data.is_f32() => Scores::F32(a.mapv(|v| v as f32)),
            (s, _) => s,
        })
    }

    /// Score matrix S (q x n): S[t, m] = grad l(z_t) . I(z_m), influence of training point m on
    /// the loss at test point t.
    pub fn on_loss(&self, test: &Table, points: Points, cancel: &Cancel) -> Result<(Scores, SolveInfo)> {
        let g = self.loss_grads(test)?;
        self.on(g.view(), points, cancel)
    }

    /// Per-example loss gradients of test points (q x p).
    pub fn loss_grads(&self, test: &Table) -> Result<Array2<f64>> {
        self.check_points(test)?;
        let mut g = Array2::zeros((test.n(), self.n_params()));
        with_block(test, 0..test.n(), |b| self.model.grads(self.theta.view(), b, g.view_mut()))?;
        Ok(g)
    }
}

/// The score kernels at one theta: what scoring needs of an influence (model, theta and the
/// total weight W), also usable on its own on any chunk of rows (a distributed run maps
/// [`Scorer::scores`] or [`Scorer::top_k`] over chunks of the training set).
#[derive(Clone, Copy)]
pub struct Scorer<'a> {
    pub model: &'a dyn Model,
    pub theta: ArrayView1<'a, f64>,
    /// W, the total training weight of the whole training set (scores are -(g . v + c) / W).
    pub total_weight: f64,
}

impl Scorer<'_> {
    /// S (r x n) for the rows of `points` given solved queries `vc` = [V; c] ((p + 1) x r, from
    /// [`Influence::solve_queries`]): float32 when the rows are float32 and the model has a
    /// float32 kernel.
    pub fn scores(&self, points: &dyn Rows, vc: &Array2<f64>, cancel: &Cancel) -> Result<Scores> {
        let (n, r) = (points.n(), vc.ncols());
        self.check(points, vc)?;
        // the queries' part of the overflow bound, once for every block
        Ok(if self.float32_kernel(points) {
            let vc32 = vc.mapv(|v| v as f32);
            let bound = Some(QueryNorm::of(vc32.view()));
            Scores::F32(fill_scores(n, r, cancel, |range, out| self.score_rows(points, range, vc, bound, ScoreOut::F32(out, &vc32)))?)
        } else {
            let bound = Some(QueryNorm::of(vc.view()));
            Scores::F64(fill_scores(n, r, cancel, |range, out| self.score_rows(points, range, vc, bound, ScoreOut::F64(out)))?)
        })
    }

    /// Solved queries for this model ((p + 1) x r) and rows of its width.
    pub(super) fn check(&self, points: &dyn Rows, vc: &Array2<f64>) -> Result<()> {
        let p = self.model.n_params();
        if vc.nrows() != p + 1 {
            return Err(Error::Shape { arg: "vc", msg: format!("has {} rows, expected {}", vc.nrows(), p + 1) });
        }
        if points.d() != self.model.n_features() {
            let msg = format!("has {} columns but the model has {} features", points.d(), self.model.n_features());
            return Err(Error::Shape { arg: points.names().x, msg });
        }
        Ok(())
    }

    /// Scores of the rows `range` of `points` into `out` (B x r), given `vc` = [V; c] and, when
    /// the rows are float32 and the model has a float32 kernel, `vc32`: then in float32.
    /// With `bound` (the queries' norm in the precision scored) returns whether every score is
    /// certainly finite (else the caller checks them); callers that check every score anyway
    /// pass None.
    pub(super) fn score_rows(&self, points: &dyn Rows, range: Range<usize>, vc: &Array2<f64>, bound: Option<QueryNorm>, out: ScoreOut) -> Result<bool> {
        let scale = -1.0 / self.total_weight;
        match out {
            ScoreOut::F64(out) => with_block(points, range, |blk| self.model.scores(self.theta.view(), blk, vc.view(), bound, scale, out)),
            ScoreOut::F32(out, vc32) => {
                let x = points.x_rows_f32(range.start, range.end).expect("checked by float32_kernel")?;
                // (float32 kernels are GLMs': one target per row)
                let y = points.y().slice_move(s![range, 0]);
                let grads = self.model.float32().expect("checked by float32_kernel");
                Ok(scores_f32(grads, self.theta.view(), x.view(), y, vc32.view(), bound, scale as f32, out))
            }
        }
    }

    /// Whether scores over `points` run in float32: float32 rows and a model kernel for them.
    pub(super) fn float32_kernel(&self, points: &dyn Rows) -> bool {
        points.is_f32() && self.model.float32().is_some()
    }
}

/// S (r x n) filled block by block with `block(rows, out (B x r))`, in parallel. S is filled
/// as S^T (n x r, row blocks contiguous), so each block's product writes a column-major
/// (r x B) destination, the layout faer is fastest with; returned as (r x n). A block whose
/// `block` call does not return true (certainly finite) is scanned for overflow.
pub(super) fn fill_scores<T, F>(n: usize, r: usize, cancel: &Cancel, block: F) -> Result<Array2<T>>
where
    T: crate::memory::Zeroed + Send + Sync + Into<f64>,
    F: Fn(Range<usize>, ArrayViewMut2<T>) -> Result<bool> + Sync,
{
    let mut st: Array2<T> = crate::memory::zeros("the score matrix", (n, r))?;
    cancel.begin(n);
    st.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS).into_par_iter().enumerate().try_for_each(|(b, chunk)| {
        cancel.check()?;
        let (start, len) = (b * BLOCK_ROWS, chunk.nrows());
        let mut chunk = chunk;
        let finite = block(start..start + len, chunk.view_mut())?;
        // the block is still in cache
        if !finite && !chunk.as_slice().is_some_and(all_finite) {
            check_overflow("the scores", chunk.iter())?;
        }
        cancel.advance(len);
        Ok::<(), Error>(())
    })?;
    Ok(st.reversed_axes())
}

/// Output of one block of the score kernel, float64 or float32 (with [V; c] in float32).
pub(super) enum ScoreOut<'a, 'b> {
    F64(ArrayViewMut2<'a, f64>),
    F32(ArrayViewMut2<'a, f32>, &'b Array2<f32>),
}

/// A score matrix in the precision its training rows were stored in.
#[derive(Clone, Debug)]
pub enum Scores {
    F64(Array2<f64>),
    F32(Array2<f32>),
}

impl Scores {
    /// The scores in float64 (widened if they were computed in float32).
    pub fn into_f64(self) -> Array2<f64> {
        match self {
            Scores::F64(s) => s,
            Scores::F32(s) => s.mapv(f64::from),
        }
    }
}
