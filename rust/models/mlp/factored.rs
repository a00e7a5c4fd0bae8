//! Scores of an MLP's rows against queries in factored form (query batching,
//! [`crate::models::factored`]): per layer, the block's inputs abar times every query's R and
//! its backpropagated s times every query's L, two products of the block's rows with q r
//! columns, then a row-wise sum of their product per query.

use ndarray::{s, ArrayView1, ArrayViewMut2, Axis, Zip};

use super::Mlp;
use crate::data::Batch;
use crate::models::factored::{FactoredQueries, FactoredScores, QueryBlock};

/// Queries per product, so that the two B x (q r) intermediates stay near 4 M entries each.
const FACTORED_ENTRIES: usize = 1 << 22;

impl FactoredScores for Mlp {
    fn query_blocks(&self) -> Vec<QueryBlock> {
        (0..self.n_layers()).map(|j| QueryBlock { offset: self.layer_range(j).start, rows: self.sizes[j + 1], cols: self.sizes[j] + 1 }).collect()
    }

    fn factored_scores(&self, theta: ArrayView1<f64>, data: &Batch, queries: &FactoredQueries, scale: f64, mut out: ArrayViewMut2<f64>) {
        let fw = self.forward(theta, data.x);
        let head = self.head(&fw, data.y, false);
        let s = self.backward(theta, &fw, head.res);
        let (n, q, r) = (data.n(), queries.n_queries(), queries.rank);
        out.assign(&queries.c.view().insert_axis(Axis(0)));
        let qc = (FACTORED_ENTRIES / (n * r).max(1)).clamp(1, q.max(1));
        for (j, (block, l, rr)) in queries.blocks.iter().enumerate() {
            let inp = block.cols - 1;
            for t0 in (0..q).step_by(qc) {
                let t1 = (t0 + qc).min(q);
                let cols = s![.., t0 * r..t1 * r];
                // abar . R: A_j R[..in] + the bias row
                let mut pa = self.input_dot(j, data.x, &fw.a, rr.slice(s![..inp, t0 * r..t1 * r]));
                pa += &rr.slice(s![inp, t0 * r..t1 * r]);
                let ps = s[j].dot(&l.slice(cols));
                for t in t0..t1 {
                    let (a, b) = ((t - t0) * r, (t - t0 + 1) * r);
                    let mut col = out.column_mut(t);
                    Zip::from(&mut col).and(pa.slice(s![.., a..b]).rows()).and(ps.slice(s![.., a..b]).rows()).for_each(|o, x, y| *o += x.dot(&y));
                }
            }
        }
        out.mapv_inplace(|o| o * scale);
    }
}
