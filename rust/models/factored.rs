//! Query batching (Grosse et al. 2023; DESIGN-networks.md section 4): each solved query's layer
//! blocks V_tl (out x in+1) replaced by their best rank-r approximation, kept as factors
//! V_tl ~ L_tl R_tl^T (L = U_r diag(sigma_r), R = V_r of the thin SVD). A training row's
//! gradient block is kron(s_l, abar_l), so its score against the query becomes
//! sum_l sum_i (s_l . L_tl[:, i]) (abar_l . R_tl[:, i]): r (out + in + 1) multiply-adds per layer
//! instead of out (in + 1), and the queries take q r (out + in + 1) numbers instead of q p.
//! Exact when r >= min(out, in + 1); the relative error ||V_t - V_t^(r)||_F / ||V_t||_F of
//! each query (over all its blocks) is reported.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};

use crate::data::Batch;
use crate::error::{Error, Result};
use crate::linalg::faer_ref;

/// A block of parameters read as a row-major `rows x cols` matrix at `offset` in theta (a layer's
/// [W | b]: rows = out, cols = in + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueryBlock {
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
}

/// Solved queries in factored form: per block, L (rows x q r) and R (cols x q r), query t's
/// factors in the columns t r .. (t + 1) r (zero columns when the block's rank is below r).
#[derive(Clone, Debug)]
pub struct FactoredQueries {
    pub rank: usize,
    pub blocks: Vec<(QueryBlock, Array2<f64>, Array2<f64>)>,
    /// The penalty offsets c_t = V_t . 2 l2 coef* (see [`FactoredQueries::set_offsets`]).
    pub c: Array1<f64>,
    /// ||V_t - V_t^(r)||_F / ||V_t||_F per query (0 for a zero query).
    pub errors: Array1<f64>,
    /// p, the length of an uncompressed query.
    pub n_params: usize,
}

impl FactoredQueries {
    /// The rank-`rank` factors of the solved queries `vc` = [V; c] ((p + 1) x q) on `blocks`,
    /// which must tile 0..p in order.
    pub fn compress(vc: ArrayView2<f64>, blocks: &[QueryBlock], rank: usize) -> Result<Self> {
        let p = vc.nrows() - 1;
        if rank == 0 {
            return Err(Error::Value { arg: "query_rank", msg: "must be >= 1".into() });
        }
        let mut end = 0;
        for b in blocks {
            if b.offset != end {
                return Err(Error::Value { arg: "query_rank", msg: format!("the model's blocks do not tile its {p} parameters") });
            }
            end = b.offset + b.rows * b.cols;
        }
        if end != p {
            return Err(Error::Value { arg: "query_rank", msg: format!("the model's blocks cover {end} of its {p} parameters") });
        }
        let q = vc.ncols();
        let mut lost = Array1::<f64>::zeros(q);
        let mut out = Vec::with_capacity(blocks.len());
        for &b in blocks {
            let (mut l, mut r) = (Array2::zeros((b.rows, q * rank)), Array2::zeros((b.cols, q * rank)));
            for t in 0..q {
                let v = vc.slice(s![b.offset..b.offset + b.rows * b.cols, t]).to_owned().into_shape_with_order((b.rows, b.cols)).expect("owned");
                let svd = faer_ref(&v.view()).thin_svd().map_err(|e| Error::Singular { msg: format!("the SVD of a query's layer block failed ({e:?})") })?;
                let (u, sig, w) = (svd.U(), svd.S().column_vector(), svd.V());
                for i in 0..sig.nrows() {
                    if i < rank {
                        for a in 0..b.rows {
                            l[[a, t * rank + i]] = u[(a, i)] * sig[i];
                        }
                        for a in 0..b.cols {
                            r[[a, t * rank + i]] = w[(a, i)];
                        }
                    } else {
                        lost[t] += sig[i] * sig[i];
                    }
                }
            }
            out.push((b, l, r));
        }
        let errors = Array1::from_shape_fn(q, |t| {
            let total = vc.slice(s![..p, t]).iter().map(|v| v * v).sum::<f64>();
            if total > 0.0 {
                (lost[t] / total).sqrt()
            } else {
                0.0
            }
        });
        Ok(Self { rank, blocks: out, c: vc.row(p).to_owned(), errors, n_params: p })
    }

    /// Sets the offsets to those of the compressed queries, c_t = V_t^(r) . `penalty_grad` (p),
    /// so the scores are exactly those of V^(r).
    pub fn set_offsets(&mut self, penalty_grad: ArrayView1<f64>) {
        let (q, r) = (self.n_queries(), self.rank);
        let mut c = Array1::zeros(q);
        for (b, l, rr) in &self.blocks {
            let pg = penalty_grad.slice(s![b.offset..b.offset + b.rows * b.cols]).to_owned().into_shape_with_order((b.rows, b.cols)).expect("owned");
            // (L^T PG R)[i, i] per factor column
            let pr = pg.dot(rr);
            for t in 0..q {
                for i in t * r..(t + 1) * r {
                    c[t] += l.column(i).dot(&pr.column(i));
                }
            }
        }
        self.c = c;
    }

    pub fn n_queries(&self) -> usize {
        self.c.len()
    }
}

/// Optional capability of a model whose parameters are Kronecker-structured blocks (a network's
/// layers): scores against [`FactoredQueries`] without forming the queries.
pub trait FactoredScores: Sync {
    /// The blocks queries are compressed on (tiling 0..p in order).
    fn query_blocks(&self) -> Vec<QueryBlock>;
    /// `out (B x q) = scale (sum_blocks sum_i (s . L[:, t r + i]) (abar . R[:, t r + i]) + c_t)`
    /// for the rows of `data`.
    fn factored_scores(&self, theta: ArrayView1<f64>, data: &Batch, queries: &FactoredQueries, scale: f64, out: ArrayViewMut2<f64>);
}
