//! The model-level interface shared by every model the influence engine can differentiate.
//!
//! A model supplies *block kernels*: per-example losses and gradients, and weighted sums of
//! losses, gradients, Hessians and Hessian-vector products over one block of rows, all
//! single-threaded. `objective::Objective` runs them over row blocks in parallel, adds the
//! 1/W normalisation and the l2 penalty, and keeps the reduction order fixed.
//! GLMs (`glm::Glm`) implement it with matrix-product fast paths; a non-linear model (an MLP
//! with Gauss-Newton curvature) implements the same methods.

use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2};

use crate::data::Dataset;
use crate::error::Result;
use crate::linalg;

pub trait Model: Sync {
    /// Number of parameters p.
    fn n_params(&self) -> usize;
    /// Number of input features d each row of X must have.
    fn n_features(&self) -> usize;
    /// 1 for parameters the l2 penalty applies to, 0 for intercepts.
    fn penalty_mask(&self) -> Array1<f64>;
    /// Orthonormal basis (p x r) of directions along which the objective is flat by construction
    /// for this `l2` (for example the multinomial's free intercepts), or `None`. Solvers work in
    /// the orthogonal complement, the identifiable subspace.
    fn null_space(&self, _l2: f64) -> Option<Array2<f64>> {
        None
    }
    /// Validate targets; `arg` names the argument in the error.
    fn check_targets(&self, arg: &'static str, y: ArrayView1<f64>) -> Result<()>;

    /// Per-example losses l(z_i; theta) of every row of `data` into `out`.
    fn losses(&self, theta: ArrayView1<f64>, data: &Dataset, out: ArrayViewMut1<f64>);
    /// Per-example gradients (unweighted) of every row of `data` into the rows of `out` (n x p).
    fn grads(&self, theta: ArrayView1<f64>, data: &Dataset, out: ArrayViewMut2<f64>);
    /// `out (q x n) = v^T G^T` where the rows of G are the per-example gradients of `data` and
    /// `v` is p x q: the score kernel. The default forms G; GLMs never do.
    fn grads_dot(&self, theta: ArrayView1<f64>, data: &Dataset, v: ArrayView2<f64>, out: ArrayViewMut2<f64>) {
        let mut g = Array2::zeros((data.n(), self.n_params()));
        self.grads(theta, data, g.view_mut());
        linalg::gemm(out, false, v.t(), g.t(), 1.0);
    }
    /// Weighted sums over `data`: (sum_i w_i l_i, sum_i w_i grad l_i).
    fn loss_grad_sum(&self, theta: ArrayView1<f64>, data: &Dataset) -> (f64, Array1<f64>);
    /// Adds sum_i w_i Hess l_i to the lower triangle of `out` (p x p); the rest is not read.
    fn hessian_sum(&self, theta: ArrayView1<f64>, data: &Dataset, out: ArrayViewMut2<f64>);
    /// The parameter panels of the tiled Hessian (used for large p, see `Objective::hessian`):
    /// consecutive ranges covering `0..p` in order. One task computes the tile of every pair of
    /// panels (I, J), I >= J, so a panel should be a few hundred parameters or more. Default:
    /// chunks of 512.
    fn hessian_panels(&self) -> Vec<Range<usize>> {
        let p = self.n_params();
        (0..p.div_ceil(512)).map(|b| b * 512..((b + 1) * 512).min(p)).collect()
    }
    /// Adds the tile `rows` x `cols` of sum_i w_i Hess l_i over `data` to `out` (|rows| x |cols|),
    /// where `rows` and `cols` are panels of [`Model::hessian_panels`] with `rows.start >= cols.start`.
    /// On a diagonal tile (`rows == cols`) only the lower triangle of `out` is written; the rest is not read.
    fn hessian_tile_sum(&self, theta: ArrayView1<f64>, data: &Dataset, rows: Range<usize>, cols: Range<usize>, out: ArrayViewMut2<f64>);
    /// Adds the diagonal of sum_i w_i Hess l_i to `out` (p); returns false if the model cannot
    /// (then solvers go without a Jacobi preconditioner).
    fn hessian_diag_sum(&self, _theta: ArrayView1<f64>, _data: &Dataset, _out: ArrayViewMut1<f64>) -> bool {
        false
    }
    /// Adds sum_i w_i (Hess l_i) v to `out` for a block of vectors `v` (p x r).
    fn hvp_sum(&self, theta: ArrayView1<f64>, data: &Dataset, v: ArrayView2<f64>, out: ArrayViewMut2<f64>);
}
