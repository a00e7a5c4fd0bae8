//! The model contract: what a model family gives the objective, the solvers and the influence
//! engine. A family is one type implementing [`Model`] (GLMs: [`glm::Glm`]; per-example
//! gradients supplied by the user: [`gradients::GradientModel`]; the MLP of DESIGN-networks.md
//! lands here as `models/mlp/`), and nothing else in the core knows which family it is.
//!
//! A model supplies *block kernels*: per-example losses, gradients and predictions, and weighted
//! sums of losses, gradients, Hessians and Hessian-vector products over one block of rows, all
//! single-threaded. `objective::Objective` runs them over row blocks in parallel, adds the 1/W
//! normalisation and the l2 penalty, and keeps the reduction order fixed. What a family may lack
//! is optional: `Option` (capabilities: float32 gradients, preconditioner blocks) or `Result`
//! (predictions for a model that has none).

pub mod factored;
pub mod glm;
pub mod gradients;
pub mod mlp;

use std::ops::Range;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3};

use crate::data::{Batch, XView};
use crate::error::Result;
use crate::linalg;

/// Which prediction [`Model::predict`] and [`Model::prediction_grads`] give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The linear predictor (logits): one per output.
    Linear,
    /// The mean response: identity, sigmoid probability, Poisson rate, or class probabilities.
    Mean,
}

pub trait Model: Send + Sync {
    /// Number of parameters p.
    fn n_params(&self) -> usize;
    /// Number of input features d each row of X must have.
    fn n_features(&self) -> usize;
    /// Number of predictions per point k (classes for a multinomial model, else 1).
    fn n_outputs(&self) -> usize;
    /// 1 for parameters the l2 penalty applies to, 0 for intercepts.
    fn penalty_mask(&self) -> Array1<f64>;
    /// Orthonormal basis (p x r) of directions along which the objective is flat by construction
    /// for this `l2` (for example the multinomial's free intercepts), or `None`. Solvers work in
    /// the orthogonal complement, the identifiable subspace.
    fn null_space(&self, _l2: f64) -> Option<Array2<f64>> {
        None
    }
    /// Validate targets (n x t: as many columns as the model takes targets per row, see
    /// [`check_one_target`]); `arg` names the argument in the error.
    fn check_targets(&self, arg: &'static str, y: ArrayView2<f64>) -> Result<()>;

    /// Per-example losses l(z_i; theta) of every row of `data` into `out`.
    fn losses(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut1<f64>);
    /// Per-example gradients (unweighted) of every row of `data` into the rows of `out` (n x p).
    fn grads(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>);
    /// The score kernel: `out (B x q) = scale (G v + 1 c^T)` where the rows of G are the
    /// per-example gradients of the block `data` and `vc = [v; c]` is (p + 1) x q. `out` may
    /// have any layout. With `bound` (the queries' norm, computed once per call) returns true
    /// when every entry is certainly finite (a bound on the inputs proved it,
    /// [`products_finite`]); false (always, without `bound`) leaves the check to the caller.
    fn scores(&self, theta: ArrayView1<f64>, data: &Batch, vc: ArrayView2<f64>, bound: Option<QueryNorm>, scale: f64, out: ArrayViewMut2<f64>) -> bool {
        scores_from_grads(self, theta, data, vc, bound, scale, out)
    }
    /// Predictions at the rows of `x`: (n x k).
    fn predict(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>>;
    /// Gradients in theta of the predictions at the rows of `x`: ((n k) x p), row t k + c for
    /// prediction c at point t.
    fn prediction_grads(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>>;
    /// J B for the Jacobian J ((n k) x p) of the linear predictors at the rows of `x` (as
    /// [`Model::prediction_grads`] with [`Prediction::Linear`]) and a matrix `b` (p x m): what
    /// leave-out estimates need per row. Default: J, then one product; a family whose J is
    /// sparse (a GLM's: each row of it is z in one class's block) overrides it.
    fn linear_jacobian_times(&self, theta: ArrayView1<f64>, x: XView, b: ArrayView2<f64>) -> Result<Array2<f64>> {
        let j = self.prediction_grads(theta, x, Prediction::Linear)?;
        let mut out = Array2::zeros((j.nrows(), b.ncols()));
        linalg::gemm(out.view_mut(), false, j.view(), b, 1.0);
        Ok(out)
    }
    /// The Hessians of each row's loss in its k linear predictors, flattened (n x k^2): the
    /// middle factor of the Gauss-Newton form H_i = J_i^T A_i J_i (for a GLM, the weight a_i of
    /// DESIGN.md section 2). Leverage is built from it.
    fn output_hessians(&self, theta: ArrayView1<f64>, data: &Batch) -> Result<Array2<f64>>;

    /// The outer function of the Gauss-Newton form l_i = f(h_i(theta); y_i): the family that
    /// maps a row's k outputs h (a GLM's linear predictors, a network's last layer) to its loss,
    /// its derivatives in h and its mean response; `None` for a model without one (per-example
    /// gradients). Leave-out estimates evaluate it at stepped outputs.
    fn output_family(&self) -> Option<glm::Family> {
        None
    }

    /// Weighted sums over `data`: (sum_i w_i l_i, sum_i w_i grad l_i).
    fn loss_grad_sum(&self, theta: ArrayView1<f64>, data: &Batch) -> (f64, Array1<f64>);
    /// Adds sum_i w_i Hess l_i to the lower triangle of `out` (p x p); the rest is not read.
    fn hessian_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>);
    /// [`Model::loss_grad_sum`] and [`Model::hessian_sum`] (added to `out`) from one pass over
    /// the rows, with the same bits as the two calls (a model that can share the rows' work
    /// between them overrides this).
    fn loss_grad_hessian_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) -> (f64, Array1<f64>) {
        self.hessian_sum(theta, data, out);
        self.loss_grad_sum(theta, data)
    }
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
    /// A model may leave parts of the lower triangle of H to [`Model::hessian_tiles_finish`]
    /// (parts it can derive from others, e.g. by symmetry).
    fn hessian_tile_sum(&self, theta: ArrayView1<f64>, data: &Batch, rows: Range<usize>, cols: Range<usize>, out: ArrayViewMut2<f64>);
    /// Rows per sub-block of [`Model::hessian_factor`], for a model whose curvature is a
    /// Gauss-Newton sum with a factor, sum_i w_i Hess l_i = M^T M (a few rows of M per point):
    /// the tiled Hessian then forms each sub-block's M once and every tile multiplies two of its
    /// column panels, where [`Model::hessian_tile_sum`] would form M again for each tile.
    /// Default: no factor.
    fn hessian_factor_rows(&self) -> Option<usize> {
        None
    }
    /// The factor M of `data` (at most [`Model::hessian_factor_rows`] rows): sum_i w_i Hess l_i
    /// over them is M^T M. `None` without a factor.
    fn hessian_factor(&self, _theta: ArrayView1<f64>, _data: &Batch) -> Option<Array2<f64>> {
        None
    }
    /// Called once on H (p x p) after every tile of [`Model::hessian_tile_sum`] was summed over all
    /// rows: fills the parts of the lower triangle the tiles left out. Default: nothing left out.
    fn hessian_tiles_finish(&self, _h: ArrayViewMut2<f64>) {}
    /// Adds sum_i w_i (Hess l_i) v to `out` for a block of vectors `v` (p x r).
    fn hvp_sum(&self, theta: ArrayView1<f64>, data: &Batch, v: ArrayView2<f64>, out: ArrayViewMut2<f64>);
    /// Whether `Objective::hessian` should form H column by column from Hessian-vector
    /// products (p products, each row block cancellable) instead of `hessian_sum` / tiles: for
    /// curvatures with no factored form cheaper than p products (a network's exact Hessian).
    fn hessian_by_products(&self) -> bool {
        false
    }

    /// Gradients of float32 rows in float32, for the float32 score path, if the family has them.
    fn float32(&self) -> Option<&dyn Float32Grads> {
        None
    }
    /// The Hessian's diagonal (and diagonal blocks) for CG preconditioners, if the family has
    /// them (else CG runs unpreconditioned).
    fn preconditioning(&self) -> Option<&dyn Preconditioning> {
        None
    }
    /// Scores against queries compressed per block (query batching), if the family's
    /// parameters are Kronecker-structured blocks (networks).
    fn factored_scores(&self) -> Option<&dyn factored::FactoredScores> {
        None
    }
}

/// The targets of a model that takes one per row: y must have one column. Its values.
pub fn check_one_target<'a>(arg: &'static str, y: ArrayView2<'a, f64>, what: &str) -> Result<ArrayView1<'a, f64>> {
    if y.ncols() != 1 {
        return Err(crate::error::Error::Shape {
            arg,
            msg: format!("has {} columns, but {what} takes one target per row (multi-output targets need a squared-error network head)", y.ncols()),
        });
    }
    Ok(y.index_axis_move(ndarray::Axis(1), 0))
}

/// Optional capability: per-example gradients of float32 rows.
pub trait Float32Grads: Sync {
    /// Per-example gradients of float32 rows `x` (targets `y`) in float32 into `out` (n x p);
    /// intermediate quantities (linear predictors, residuals) are computed in float64.
    fn grads_f32(&self, theta: ArrayView1<f64>, x: ArrayView2<f32>, y: ArrayView1<f64>, out: ArrayViewMut2<f32>);
}

/// Optional capability: the pieces of the Hessian that preconditioners are made of.
pub trait Preconditioning: Sync {
    /// Adds the diagonal of sum_i w_i Hess l_i over `data` to `out` (p).
    fn hessian_diag_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut1<f64>);
    /// Groups of parameters (m x b indices) whose b x b diagonal blocks of the Hessian make a
    /// block-Jacobi preconditioner, or `None` (then Jacobi). Multinomial GLMs: the k classes'
    /// coefficients of each feature, the blocks where the classes couple.
    fn hessian_groups(&self) -> Option<Array2<usize>>;
    /// Adds the diagonal blocks (m x b x b) of sum_i w_i Hess l_i over
    /// [`Preconditioning::hessian_groups`] to `out` (called only when there are groups).
    fn hessian_blocks_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut3<f64>);
    /// The layout of a Kronecker-factored (K-FAC) approximation of the Gauss-Newton curvature,
    /// or `None`: zeroed factors, one per block of parameters (see [`KroneckerFactors`]).
    fn kronecker_factors(&self) -> Option<Vec<KroneckerFactors>> {
        None
    }
    /// Adds, over `data`, each block's sums A += sum_i w_i a_i a_i^T and
    /// S += sum_i w_i sum_c s_ic s_ic^T to the lower triangles of `out` (the rest is not read).
    fn kronecker_factors_sum(&self, _theta: ArrayView1<f64>, _data: &Batch, _out: &mut [KroneckerFactors]) {}
    /// Adds, over `data`, each block's EK-FAC eigenvalue sums sum_i w_i sum_c (q_Sj . s_ic)^2
    /// (q_Aa . a_i)^2 for the eigenvectors (Q_S, Q_A) of `bases` (one pair per block of
    /// [`Preconditioning::kronecker_factors`]) to `out` (rows x cols each).
    fn ekfac_eigenvalues_sum(&self, _theta: ArrayView1<f64>, _data: &Batch, _bases: &[(Array2<f64>, Array2<f64>)], _out: &mut [Array2<f64>]) {}
}

/// One block of a Kronecker-factored curvature (DESIGN-networks.md section 4): the parameters
/// `offset..offset + rows cols`, read as a row-major `rows x cols` matrix ([W | b] of a layer),
/// have curvature ~ kron(S, A) with S (rows x rows, backpropagated output curvature) and A
/// (cols x cols, second moments of the layer's input with its 1).
#[derive(Clone, Debug)]
pub struct KroneckerFactors {
    pub offset: usize,
    pub s: Array2<f64>,
    pub a: Array2<f64>,
}

/// [`Model::scores`] as one matrix product: the block's gradients are written into [G, 1]
/// (B x (p + 1)) and multiplied by [v; c] and `scale`, so the output is written once. Returns
/// whether every entry is certainly finite ([`products_finite`], with `bound`).
pub fn scores_from_grads<M: Model + ?Sized>(
    model: &M,
    theta: ArrayView1<f64>,
    data: &Batch,
    vc: ArrayView2<f64>,
    bound: Option<QueryNorm>,
    scale: f64,
    out: ArrayViewMut2<f64>,
) -> bool {
    let p = model.n_params();
    let mut g = Array2::zeros((data.n(), p + 1));
    model.grads(theta, data, g.slice_mut(s![.., ..p]));
    g.column_mut(p).fill(1.0);
    linalg::gemm(out, false, g.view(), vc, scale);
    bound.is_some_and(|b| products_finite(g.view(), b, scale))
}

/// max_j ||[v_j; c_j]||^2 over the columns of solved queries (infinite if a value is not
/// finite): what the score kernels' overflow bound ([`products_finite`]) needs of the queries,
/// computed once per call rather than once per block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueryNorm(f64);

impl QueryNorm {
    pub fn of<T: linalg::Real>(vc: ArrayView2<T>) -> Self {
        let mut cols = vec![0.0f64; vc.ncols()];
        for row in vc.rows() {
            cols.iter_mut().zip(row).for_each(|(c, &v)| *c += v.into() * v.into());
        }
        Self(cols.iter().fold(0.0f64, |m, &c| if c.is_finite() { m.max(c) } else { f64::INFINITY }))
    }
}

/// Whether every entry of `scale (a b)` is certainly finite, from the inputs alone (a pass over
/// `a`, ~1/q of the product's work, and `b`'s largest column norm, [`QueryNorm::of`] it, taken
/// once per call), so the caller can skip scanning the product. By Cauchy-Schwarz each entry, and every partial sum of its dot product, is at most
/// max(1, |scale|) max_i ||a_i|| max_j ||b_j|| in size, up to a rounding factor (1 + k u) /
/// (1 - k u) <= 3 for k u <= 1/2; below a quarter of the type's largest value nothing can
/// overflow, and finite inputs then give no NaN. False (scan) whenever a norm is not finite.
pub fn products_finite<T: linalg::Real>(a: ArrayView2<T>, b: QueryNorm, scale: f64) -> bool {
    let k = a.ncols() as f64;
    if k * T::EPSILON_F64 > 0.5 {
        return false;
    }
    let a = a.as_standard_layout(); // (the kernels' gradient blocks already are: no copy)
    let mut a_max = 0.0f64;
    for row in a.as_slice().expect("standard layout").chunks(a.ncols().max(1)) {
        let s = sum_of_squares(row);
        if !s.is_finite() {
            return false;
        }
        a_max = a_max.max(s);
    }
    let bound = scale.abs().max(1.0) * a_max.sqrt() * b.0.sqrt();
    bound.is_finite() && bound < T::MAX_F64 / 4.0
}

/// The sum of squares of `v` in f64, in 8 independent partial sums (so that it vectorises).
fn sum_of_squares<T: linalg::Real>(v: &[T]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = v.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&x| x.into() * x.into()).sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            let x: f64 = x.into();
            *a += x * x;
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// The float32 score kernel, `out = scale (G v + 1 c^T)` with G from [`Float32Grads`] and `vc` =
/// [v; c] in float32: one float32 product (twice the SIMD lanes of float64). Returns whether
/// every entry is certainly finite ([`products_finite`]).
#[allow(clippy::too_many_arguments)]
pub fn scores_f32(
    grads: &dyn Float32Grads,
    theta: ArrayView1<f64>,
    x: ArrayView2<f32>,
    y: ArrayView1<f64>,
    vc: ArrayView2<f32>,
    bound: Option<QueryNorm>,
    scale: f32,
    out: ArrayViewMut2<f32>,
) -> bool {
    let p = vc.nrows() - 1;
    let mut g = Array2::zeros((x.nrows(), p + 1));
    grads.grads_f32(theta, x, y, g.slice_mut(s![.., ..p]));
    g.column_mut(p).fill(1.0);
    linalg::gemm(out, false, g.view(), vc, scale);
    bound.is_some_and(|b| products_finite(g.view(), b, scale.into()))
}
