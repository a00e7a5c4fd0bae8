//! Query batching (DESIGN-networks.md section 4): queries solved once, compressed to rank r per
//! layer block ([`FactoredQueries`]), then scored against every training row by the model's
//! factored kernel, as a score matrix or streamed top-k.

use ndarray::ArrayView2;

use super::scores::fill_scores;
use super::top_k::select;
use super::{Influence, Points, TopK};
use crate::blocks::BLOCK_ROWS;
use crate::cancel::Cancel;
use crate::data::with_block;
use crate::error::{Error, Result};
use crate::models::factored::{FactoredQueries, FactoredScores};
use crate::solvers::SolveInfo;

impl Influence {
    /// The model's factored score kernel, or an error naming `query_rank`.
    fn factored_kernel(&self) -> Result<&dyn FactoredScores> {
        self.model.factored_scores().ok_or_else(|| Error::Value {
            arg: "query_rank",
            msg: "query batching compresses a network's layer blocks; this model has none (score without query_rank)".into(),
        })
    }

    /// The queries `grad_f` (q x p) solved as [`Influence::solve_queries`] does, then compressed
    /// to rank `rank` per layer block.
    pub fn solve_queries_factored(&self, grad_f: ArrayView2<f64>, rank: usize, cancel: &Cancel) -> Result<(FactoredQueries, SolveInfo)> {
        let kernel = self.factored_kernel()?;
        let (vc, info) = self.solve_queries(grad_f, cancel)?;
        let mut queries = FactoredQueries::compress(vc.view(), &kernel.query_blocks(), rank)?;
        queries.set_offsets(self.penalty_grad.view());
        Ok((queries, info))
    }

    /// Scores (q x n, float64) of the rows of `points` against factored queries.
    pub fn scores_factored(&self, queries: &FactoredQueries, points: Points, cancel: &Cancel) -> Result<ndarray::Array2<f64>> {
        let kernel = self.check_factored(queries)?;
        let scale = -1.0 / self.total_weight();
        self.with_points(&points, |rows, _| {
            fill_scores(rows.n(), queries.n_queries(), cancel, |range, out| {
                with_block(rows, range, |blk| kernel.factored_scores(self.theta.view(), blk, queries, scale, out)).map(|()| false)
            })
        })
    }

    /// The `k` most helpful and most harmful rows of `points` for factored queries, streamed.
    pub fn top_k_factored(&self, queries: &FactoredQueries, k: usize, points: Points, cancel: &Cancel) -> Result<TopK> {
        let kernel = self.check_factored(queries)?;
        let scale = -1.0 / self.total_weight();
        self.with_points(&points, |rows, index| {
            let mut top = select(rows.n(), queries.n_queries(), k, BLOCK_ROWS, cancel, |range, out| {
                with_block(rows, range, |blk| kernel.factored_scores(self.theta.view(), blk, queries, scale, out))
            })?;
            for i in top.helpful_idx.iter_mut().chain(top.harmful_idx.iter_mut()) {
                *i = index.absolute(*i);
            }
            Ok(top)
        })
    }

    fn check_factored(&self, queries: &FactoredQueries) -> Result<&dyn FactoredScores> {
        let kernel = self.factored_kernel()?;
        let blocks: Vec<_> = queries.blocks.iter().map(|b| b.0).collect();
        if queries.n_params != self.n_params() || blocks != kernel.query_blocks() {
            return Err(Error::Shape { arg: "queries", msg: "were compressed for another model".into() });
        }
        Ok(kernel)
    }
}
