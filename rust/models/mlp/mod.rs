//! Multilayer perceptrons (DESIGN-networks.md): sizes [d, h_1 .. h_{L-1}, k], hidden activation
//! phi (tanh, relu, gelu), and a GLM family as the output head on h = z_L (softmax
//! cross-entropy = `Multinomial`, squared error = `Squared`; logistic and Poisson heads work
//! the same way). A squared head may have any number k of outputs, each with its own target
//! (y: n x k, l = ||h - y||^2, Lambda = 2 I); the other heads take one target per row. theta holds per layer Theta_l = [W_l | b_l] (out x in+1, bias last),
//! row-major, input to output: with no hidden layer it *is* the GLM's theta, and every kernel
//! gives the GLM's numbers.
//!
//! The objective's curvature is chosen per model: the Gauss-Newton matrix
//! G = (1/W) sum_i w_i J_i^T Lambda_i J_i (PSD; the default for influence on networks) or the
//! exact Hessian. Products with either run by the R-operator over row blocks ([`pass`]); the
//! explicit matrices (direct solves, small p) are G = M^T M from the rows J_i^T B_i sqrt(w_i)
//! (Lambda_i = B_i B_i^T), and H by products with unit vectors.

mod activation;
mod factored;
mod kfac;
mod last_layer;
mod pass;
pub mod pbrf;
mod rop;
mod sampling;

use std::borrow::Cow;
use std::ops::Range;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis};

pub use activation::Activation;
pub use last_layer::LastLayer;

use super::{KroneckerFactors, Model, Preconditioning, Prediction, QueryNorm};
use crate::data::{Batch, XView};
use crate::error::{Error, Result};
use crate::linalg::{add_gram_tile, to_column_major};
use crate::models::glm::Family;

/// Which curvature the objective of an [`Mlp`] uses (its `hessian_*` and `hvp_sum`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curvature {
    /// G = (1/W) sum_i w_i J_i^T Lambda_i J_i + 2 l2 M: positive semi-definite at any theta.
    GaussNewton,
    /// The exact Hessian: G plus (1/W) sum_i w_i sum_c (dl_i/dh_c) Hess(h_ic); indefinite in general.
    Hessian,
}

impl Curvature {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "gauss-newton" => Ok(Self::GaussNewton),
            "hessian" => Ok(Self::Hessian),
            other => Err(Error::Value { arg: "curvature", msg: format!("expected 'gauss-newton' or 'hessian', got {other:?}") }),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::GaussNewton => "gauss-newton",
            Self::Hessian => "hessian",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Mlp {
    /// [d, h_1 .. h_{L-1}, k].
    sizes: Vec<usize>,
    pub activation: Activation,
    /// The output head: a GLM family on h (k = its number of outputs).
    pub head: Family,
    pub curvature: Curvature,
    /// Output gradients sampled per row for the K-FAC / EK-FAC factors; 0: the exact
    /// expectation over the outputs (the default).
    pub kfac_samples: usize,
    /// Offset of each layer's block in theta; the last entry is p.
    offsets: Vec<usize>,
}

/// Rows of the Gauss-Newton factor M held at once: blocks of rows are cut so that M stays near
/// this many entries (32 MiB).
const FACTOR_ENTRIES: usize = 1 << 22;

/// Unit vectors per batch of products when the exact Hessian is formed column by column.
const HESSIAN_COLUMNS: usize = 32;

impl Mlp {
    /// `sizes` = [d, hidden.., k] with k the head's number of outputs and every hidden width >= 1.
    pub fn new(sizes: Vec<usize>, activation: Activation, head: Family, curvature: Curvature) -> Result<Self> {
        if sizes.len() < 2 {
            return Err(Error::Value { arg: "sizes", msg: format!("needs at least [n_features, n_outputs], got {sizes:?}") });
        }
        let k = *sizes.last().expect("checked");
        // a squared head has one output per target column (multi-output regression)
        let multi_output = head == Family::Squared && k >= 1;
        if k != head.n_outputs() && !multi_output {
            return Err(Error::Value { arg: "sizes", msg: format!("ends in {k} outputs but the {} head has {}", head.name(), head.n_outputs()) });
        }
        if let Some(j) = sizes[1..sizes.len() - 1].iter().position(|&h| h == 0) {
            return Err(Error::Value { arg: "hidden", msg: format!("layer {} has width 0 (every hidden layer needs >= 1 unit)", j + 1) });
        }
        let mut offsets = vec![0usize];
        for j in 0..sizes.len() - 1 {
            let block = sizes[j].checked_add(1).and_then(|i| i.checked_mul(sizes[j + 1]));
            let next = block.and_then(|b| b.checked_add(offsets[j]));
            let Some(next) = next else {
                return Err(Error::Value { arg: "sizes", msg: format!("{sizes:?}: the number of parameters overflows") });
            };
            offsets.push(next);
        }
        crate::memory::bytes_of("the parameters", &[offsets[sizes.len() - 1]], 8)?;
        Ok(Self { sizes, activation, head, curvature, kfac_samples: 0, offsets })
    }

    /// The same network with another curvature.
    pub fn with_curvature(&self, curvature: Curvature) -> Self {
        Self { curvature, ..self.clone() }
    }

    /// The same network with its K-FAC factors from `samples` sampled output gradients per row
    /// (0: the exact expectation).
    pub fn with_kfac_samples(&self, samples: usize) -> Self {
        Self { kfac_samples: samples, ..self.clone() }
    }

    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
    /// Number of layers L (weight matrices).
    pub fn n_layers(&self) -> usize {
        self.sizes.len() - 1
    }
    fn n_params_p(&self) -> usize {
        self.offsets[self.n_layers()]
    }
    fn n_outputs_k(&self) -> usize {
        self.sizes[self.n_layers()]
    }
    /// Targets per row t: one per output for a squared head, else one.
    pub fn n_targets(&self) -> usize {
        match self.head {
            Family::Squared => self.n_outputs_k(),
            _ => 1,
        }
    }
    /// Range of layer j's block in theta.
    pub fn layer_range(&self, j: usize) -> Range<usize> {
        self.offsets[j]..self.offsets[j + 1]
    }
    /// Layer j's [W_j | b_j] (out x in+1) as a view of `theta`.
    fn layer<'a>(&self, theta: ArrayView1<'a, f64>, j: usize) -> ArrayView2<'a, f64> {
        theta.slice_move(s![self.layer_range(j)]).into_shape_with_order((self.sizes[j + 1], self.sizes[j] + 1)).expect("contiguous layer block")
    }
    fn layer_mut<'a>(&self, theta: ArrayViewMut1<'a, f64>, j: usize) -> ArrayViewMut2<'a, f64> {
        theta.slice_move(s![self.layer_range(j)]).into_shape_with_order((self.sizes[j + 1], self.sizes[j] + 1)).expect("contiguous layer block")
    }

    /// Rows per sub-block for the Gauss-Newton factor (k rows of width p each).
    fn factor_rows(&self) -> usize {
        (FACTOR_ENTRIES / (self.n_outputs_k() * self.n_params_p()).max(1)).max(1)
    }

    /// sum_i w_i K_i V for the columns of `v` (p x r) over one block: K = G or H.
    fn curvature_sum(&self, theta: ArrayView1<f64>, data: &Batch, v: ArrayView2<f64>, out: ArrayViewMut2<f64>) {
        let fw = self.forward(theta, data.x);
        let head = self.head(&fw, data.y, true);
        let second_order = match self.curvature {
            Curvature::GaussNewton => None,
            Curvature::Hessian => Some(pass::weighted(&head.res, data)),
        };
        self.curvature_sum_with(theta, data, &fw, head.lambda.as_ref().expect("requested"), second_order, v, out)
    }

    /// sum_i w_i J_i^T Lambda_i J_i V over one block, plus, with `second_order` = rows w_i u_i
    /// (B x k), the term sum_i w_i sum_c u_ic Hess(h_ic) V: u = dl/dh gives the Hessian of the
    /// loss, u = dl/dh - dl/dh(theta_s) that of the Bregman divergence (PBRF).
    #[allow(clippy::too_many_arguments)]
    fn curvature_sum_with(
        &self,
        theta: ArrayView1<f64>,
        data: &Batch,
        fw: &pass::Forward,
        lambda: &ndarray::Array3<f64>,
        second_order: Option<Array2<f64>>,
        v: ArrayView2<f64>,
        out: ArrayViewMut2<f64>,
    ) {
        let wl = pass::weighted_lambda(lambda, data);
        let s = second_order.map(|u| self.backward(theta, fw, u));
        let slopes = self.slopes(fw, s.is_some());
        self.add_curvature_products(theta, data.x, fw, &slopes, &wl, s.as_deref(), v, out);
    }

    /// The columns `cols` of sum_i w_i H_i over one block (p x |cols|), by products with unit vectors.
    fn hessian_columns(&self, theta: ArrayView1<f64>, data: &Batch, cols: Range<usize>) -> Array2<f64> {
        let p = self.n_params_p();
        let mut out = Array2::zeros((p, cols.len()));
        for c0 in cols.clone().step_by(HESSIAN_COLUMNS) {
            let c1 = (c0 + HESSIAN_COLUMNS).min(cols.end);
            let mut e = Array2::zeros((p, c1 - c0));
            for c in c0..c1 {
                e[[c, c - c0]] = 1.0;
            }
            self.curvature_sum(theta, data, e.view(), out.slice_mut(s![.., c0 - cols.start..c1 - cols.start]));
        }
        out
    }

    /// Adds the tile (rows, cols) of G's data part over one block, M_rows^T M_cols, sub-block by
    /// sub-block of rows (lower triangle only on a diagonal tile).
    fn add_gauss_newton_tile(&self, theta: ArrayView1<f64>, data: &Batch, rows: Range<usize>, cols: Range<usize>, mut out: ArrayViewMut2<f64>) {
        let step = self.factor_rows();
        for a in (0..data.n()).step_by(step) {
            let sub = data.rows(a, (a + step).min(data.n()));
            let fw = self.forward(theta, sub.x);
            let m = self.gauss_newton_factor(theta, &sub, &fw);
            // the products read a column-major factor faster (1.3-1.5x, same bits)
            add_gram_tile(to_column_major(m.view()).view(), rows.clone(), cols.clone(), out.view_mut());
        }
    }

    /// `out (n x p)`: the rows of kron(s_j, abar_j) for output derivatives `s_out` (n x k).
    fn backprop_rows(&self, theta: ArrayView1<f64>, x: XView, fw: &pass::Forward, s_out: Array2<f64>, out: ArrayViewMut2<f64>) {
        let s = self.backward(theta, fw, s_out);
        self.write_example_grads(x, fw, &s, out);
    }
}

impl Model for Mlp {
    fn n_params(&self) -> usize {
        self.n_params_p()
    }
    fn n_features(&self) -> usize {
        self.sizes[0]
    }
    fn n_outputs(&self) -> usize {
        self.n_outputs_k()
    }

    fn penalty_mask(&self) -> Array1<f64> {
        let mut m = Array1::ones(self.n_params_p());
        for j in 0..self.n_layers() {
            self.layer_mut(m.view_mut(), j).column_mut(self.sizes[j]).fill(0.0);
        }
        m
    }

    /// A softmax head is unchanged by adding one vector to every class's row of the last layer:
    /// the output biases always (they are not penalised), with l2 = 0 the whole row [W_L | b_L]
    /// (as for the multinomial GLM, whose layout this is with no hidden layer).
    fn null_space(&self, l2: f64) -> Option<Array2<f64>> {
        let Family::Multinomial { n_classes: k } = self.head else { return None };
        let last = self.n_layers() - 1;
        let (off, r) = (self.offsets[last], self.sizes[last] + 1);
        let free: Vec<usize> = if l2 > 0.0 { vec![r - 1] } else { (0..r).collect() };
        let mut basis = Array2::zeros((self.n_params_p(), free.len()));
        for (j, &a) in free.iter().enumerate() {
            for c in 0..k {
                basis[[off + c * r + a, j]] = 1.0 / (k as f64).sqrt();
            }
        }
        Some(basis)
    }

    fn check_targets(&self, arg: &'static str, y: ArrayView2<f64>) -> Result<()> {
        let t = self.n_targets();
        if y.ncols() != t {
            let msg = match self.head {
                Family::Squared => format!("has {} columns, but the network's squared head has {t} outputs (one target column each)", y.ncols()),
                _ => format!("has {} columns, but the network's {} head takes one target per row", y.ncols(), self.head.name()),
            };
            return Err(Error::Shape { arg, msg });
        }
        self.head.check_targets(arg, y.iter())
    }

    fn losses(&self, theta: ArrayView1<f64>, data: &Batch, mut out: ArrayViewMut1<f64>) {
        let fw = self.forward(theta, data.x);
        let h = fw.output();
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.head.loss_row(h.row(i).as_slice().expect("contiguous"), &targets(&data.y, i));
        }
    }

    fn grads(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) {
        let fw = self.forward(theta, data.x);
        let head = self.head(&fw, data.y, false);
        self.backprop_rows(theta, data.x, &fw, head.res, out);
    }

    /// v_t . g_m = sum_j s_mj^T V_tj abar_mj (DESIGN-networks.md section 1): the block's layer
    /// factors contracted with the queries' layer blocks; the B x p gradients are never formed.
    fn scores(&self, theta: ArrayView1<f64>, data: &Batch, vc: ArrayView2<f64>, _bound: Option<QueryNorm>, scale: f64, mut out: ArrayViewMut2<f64>) -> bool {
        let p = self.n_params_p();
        let fw = self.forward(theta, data.x);
        let head = self.head(&fw, data.y, false);
        let s = self.backward(theta, &fw, head.res);
        out.assign(&vc.row(p).insert_axis(Axis(0)));
        self.add_contracted_scores(data.x, &fw, &s, vc.slice(s![..p, ..]), out.view_mut());
        out.mapv_inplace(|o| o * scale);
        false
    }

    fn predict(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let mut h = self.forward(theta, x).z.pop().expect("at least one layer");
        if kind == Prediction::Mean {
            let mut m = vec![0.0; self.n_outputs_k()];
            for mut row in h.rows_mut() {
                self.head.mean(row.as_slice().expect("owned rows are contiguous"), &mut m);
                row.assign(&ArrayView1::from(&m));
            }
        }
        Ok(h)
    }

    fn prediction_grads(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let (n, k, p) = (x.nrows(), self.n_outputs_k(), self.n_params_p());
        let fw = self.forward(theta, x);
        let h = fw.output();
        // jac[t, c, c'] = d prediction_c / d h_c' at point t
        let mut jac = ndarray::Array3::zeros((n, k, k));
        for t in 0..n {
            let mut jt = jac.index_axis_mut(Axis(0), t);
            match kind {
                Prediction::Linear => jt.diag_mut().fill(1.0),
                Prediction::Mean => self.head.mean_jacobian(h.row(t).as_slice().expect("contiguous"), jt.as_slice_mut().expect("contiguous")),
            }
        }
        let mut out = Array2::zeros((n * k, p));
        let mut rows = Array2::zeros((n, p));
        for c in 0..k {
            self.backprop_rows(theta, x, &fw, jac.index_axis(Axis(1), c).to_owned(), rows.view_mut());
            for t in 0..n {
                out.row_mut(t * k + c).assign(&rows.row(t));
            }
        }
        Ok(out)
    }

    fn output_hessians(&self, theta: ArrayView1<f64>, data: &Batch) -> Result<Array2<f64>> {
        let k = self.n_outputs_k();
        let fw = self.forward(theta, data.x);
        let lambda = self.head(&fw, data.y, true).lambda.expect("requested");
        Ok(lambda.into_shape_with_order((data.n(), k * k)).expect("contiguous"))
    }

    fn output_family(&self) -> Option<Family> {
        Some(self.head)
    }

    fn loss_grad_sum(&self, theta: ArrayView1<f64>, data: &Batch) -> (f64, Array1<f64>) {
        let fw = self.forward(theta, data.x);
        let head = self.head(&fw, data.y, false);
        let h = fw.output();
        let mut loss = 0.0;
        for i in 0..data.n() {
            let w = data.weight(i);
            if w != 0.0 {
                loss += w * self.head.loss_row(h.row(i).as_slice().expect("contiguous"), &targets(&data.y, i));
            }
        }
        let s = self.backward(theta, &fw, pass::weighted(&head.res, data));
        let mut g = Array1::zeros(self.n_params_p());
        self.add_grads(data.x, &fw, &s, g.view_mut());
        (loss, g)
    }

    fn hessian_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) {
        let p = self.n_params_p();
        self.hessian_tile_sum(theta, data, 0..p, 0..p, out)
    }

    fn hessian_tile_sum(&self, theta: ArrayView1<f64>, data: &Batch, rows: Range<usize>, cols: Range<usize>, mut out: ArrayViewMut2<f64>) {
        match self.curvature {
            Curvature::GaussNewton => self.add_gauss_newton_tile(theta, data, rows, cols, out),
            Curvature::Hessian => out += &self.hessian_columns(theta, data, cols).slice(s![rows, ..]),
        }
    }

    /// G's factor, in the sub-blocks `add_gauss_newton_tile` uses (so the tiles have its bits).
    fn hessian_factor_rows(&self) -> Option<usize> {
        (self.curvature == Curvature::GaussNewton).then(|| self.factor_rows())
    }

    fn hessian_factor(&self, theta: ArrayView1<f64>, data: &Batch) -> Option<Array2<f64>> {
        (self.curvature == Curvature::GaussNewton).then(|| self.gauss_newton_factor(theta, data, &self.forward(theta, data.x)))
    }

    fn hvp_sum(&self, theta: ArrayView1<f64>, data: &Batch, v: ArrayView2<f64>, out: ArrayViewMut2<f64>) {
        self.curvature_sum(theta, data, v, out)
    }

    /// The exact Hessian is formed from p products (`hessian_columns` would repeat the
    /// products of a column panel for every tile in it); G from its factor.
    fn hessian_by_products(&self) -> bool {
        self.curvature == Curvature::Hessian
    }

    /// Jacobi preconditioning from the Gauss-Newton diagonal (also for the exact Hessian,
    /// which differs from G by the residual term only).
    fn preconditioning(&self) -> Option<&dyn Preconditioning> {
        Some(self)
    }

    fn factored_scores(&self) -> Option<&dyn crate::models::factored::FactoredScores> {
        Some(self)
    }
}

/// The targets of row `i` (y: n x t) as a slice, borrowed when the row is contiguous.
pub(super) fn targets<'a>(y: &'a ArrayView2<'_, f64>, i: usize) -> Cow<'a, [f64]> {
    let row = y.row(i);
    match row.to_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(row.to_vec()),
    }
}

impl Mlp {
    fn check_theta(&self, theta: ArrayView1<f64>) -> Result<()> {
        if theta.len() != self.n_params_p() {
            return Err(Error::Shape {
                arg: "theta",
                msg: format!("has {} entries, expected {} for an MLP of sizes {:?}", theta.len(), self.n_params_p(), self.sizes),
            });
        }
        crate::error::check_finite("theta", theta.iter())
    }
}

impl Preconditioning for Mlp {
    fn hessian_diag_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut1<f64>) {
        let fw = self.forward(theta, data.x);
        self.add_gauss_newton_diag(theta, data, &fw, out);
    }
    fn hessian_groups(&self) -> Option<Array2<usize>> {
        None
    }
    fn hessian_blocks_sum(&self, _theta: ArrayView1<f64>, _data: &Batch, _out: ArrayViewMut3<f64>) {}
    fn kronecker_factors(&self) -> Option<Vec<KroneckerFactors>> {
        Some(self.kronecker_layout())
    }
    fn kronecker_factors_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: &mut [KroneckerFactors]) {
        self.add_kronecker_factors(theta, data, out)
    }
    fn ekfac_eigenvalues_sum(&self, theta: ArrayView1<f64>, data: &Batch, bases: &[(Array2<f64>, Array2<f64>)], out: &mut [Array2<f64>]) {
        self.add_ekfac_eigenvalues(theta, data, bases, out)
    }
}
