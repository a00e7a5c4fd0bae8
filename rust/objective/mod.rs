//! The weighted objective L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 ||coef||^2
//! (DESIGN.md section 1), its gradient and Hessian-vector products ([`hessian`]: the Hessian,
//! its diagonal and blocks), computed over row blocks in parallel with a fixed reduction order;
//! [`Objective::evaluate`] gives value, gradient and a curvature from one pass over the data;
//! [`partial`]: per-chunk partial sums for distributed runs.

mod hessian;
pub mod partial;

pub use hessian::TILED_HESSIAN_MAX_ROW_BLOCK_P;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::blocks::{fold_reduce, map_reduce};
use crate::cancel::Cancel;
use crate::data::{with_block, Rows};
use crate::error::{check_finite, Error, Result};
use crate::models::Model;

/// Partial sums of the gradient (`map_reduce`'s bound for `value_grad`).
pub(crate) const GRAD_PARTIALS: usize = 64;

pub(crate) type LossGrad = (f64, Array1<f64>);

pub(crate) fn add_loss_grad(a: &mut LossGrad, b: LossGrad) {
    a.0 += b.0;
    a.1 += &b.1;
}

/// The curvature [`Objective::evaluate`] computes with the value and the gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curvature {
    None,
    /// The Hessian (p x p).
    Hessian,
    /// The Hessian's diagonal, if the model can give it.
    Diagonal,
}

/// What one pass over the data gave.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub value: f64,
    pub grad: Array1<f64>,
    pub hessian: Option<Array2<f64>>,
    pub diag: Option<Array1<f64>>,
}

pub struct Objective<'a, M: Model + ?Sized> {
    pub model: &'a M,
    pub data: &'a dyn Rows,
    pub l2: f64,
    total_weight: f64,
    mask: Array1<f64>,
}

/// Adds partial Hessian diagonals or diagonal blocks; `None` (the model cannot) wins.
pub(crate) fn add_partial<D: ndarray::Dimension>(a: &mut Option<ndarray::Array<f64, D>>, b: Option<ndarray::Array<f64, D>>) {
    match (a.is_some(), b) {
        (true, Some(b)) => *a.as_mut().expect("checked") += &b,
        _ => *a = None,
    }
}

impl<'a, M: Model + ?Sized> Objective<'a, M> {
    /// Validates that `data` fits the model (feature count, targets) and that `l2 >= 0`.
    pub fn new(model: &'a M, data: &'a dyn Rows, l2: f64) -> Result<Self> {
        if !(l2 >= 0.0) || !l2.is_finite() {
            return Err(Error::Value { arg: "l2", msg: format!("must be a finite number >= 0, got {l2}") });
        }
        if data.d() != model.n_features() {
            return Err(Error::Shape { arg: "X", msg: format!("has {} columns but the model has {} features", data.d(), model.n_features()) });
        }
        // each block of rows holds a few B x k arrays (linear predictors, residuals) per thread
        crate::memory::check("blocks of linear predictors", &[4 * rayon::current_num_threads(), crate::blocks::BLOCK_ROWS, model.n_outputs()], 8)?;
        model.check_targets("y", data.y())?;
        Ok(Self { model, data, l2, total_weight: data.total_weight(), mask: model.penalty_mask() })
    }

    /// The objective on data that were validated for this model before (by [`Objective::new`]),
    /// whose total weight is `total_weight`: no pass over the data.
    pub(crate) fn validated(model: &'a M, data: &'a dyn Rows, l2: f64, total_weight: f64) -> Self {
        Self { model, data, l2, total_weight, mask: model.penalty_mask() }
    }

    /// W, the sum of the weights.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    pub fn n_params(&self) -> usize {
        self.model.n_params()
    }

    fn check_theta(&self, theta: ArrayView1<f64>) -> Result<()> {
        if theta.len() != self.n_params() {
            return Err(Error::Shape { arg: "theta", msg: format!("has {} entries, expected {}", theta.len(), self.n_params()) });
        }
        check_finite("theta", theta.iter())
    }

    /// The gradient of the penalty, 2 l2 coef_masked: the extra term of the influence formula.
    pub fn penalty_grad(&self, theta: ArrayView1<f64>) -> Array1<f64> {
        &self.mask * &theta * (2.0 * self.l2)
    }

    fn penalty(&self, theta: ArrayView1<f64>) -> f64 {
        self.l2 * self.mask.iter().zip(theta).map(|(m, t)| m * t * t).sum::<f64>()
    }

    /// L_w(theta).
    pub fn value(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<f64> {
        Ok(self.value_grad(theta, cancel)?.0)
    }

    /// (L_w(theta), grad L_w(theta)).
    pub fn value_grad(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>)> {
        self.check_theta(theta)?;
        let (loss, grad) = self.sums(theta, cancel)?;
        Ok(self.finish_value_grad(theta, loss, grad))
    }

    /// (sum_i w_i l_i, sum_i w_i grad l_i), reduced over row blocks in a fixed order.
    fn sums(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<LossGrad> {
        Ok(map_reduce(self.data.n(), GRAD_PARTIALS, cancel, |r| with_block(self.data, r, |b| self.model.loss_grad_sum(theta, b)), add_loss_grad)?
            .expect("data has rows"))
    }

    fn finish_value_grad(&self, theta: ArrayView1<f64>, loss: f64, grad: Array1<f64>) -> (f64, Array1<f64>) {
        let w = self.total_weight;
        (loss / w + self.penalty(theta), grad / w + self.penalty_grad(theta))
    }

    /// Value, gradient and the curvature asked for, from one pass over the data (each block of
    /// rows read once), each bitwise equal to what `value_grad`, `hessian` and `hessian_diag`
    /// return.
    pub fn evaluate(&self, theta: ArrayView1<f64>, curvature: Curvature, cancel: &Cancel) -> Result<Evaluation> {
        self.check_theta(theta)?;
        let (loss, grad, hessian, diag) = match curvature {
            Curvature::None => {
                let (loss, grad) = self.sums(theta, cancel)?;
                (loss, grad, None, None)
            }
            Curvature::Hessian => {
                let (loss, grad, h) = self.sums_with_hessian(theta, cancel)?;
                (loss, grad, Some(self.finish_hessian(h)), None)
            }
            Curvature::Diagonal => {
                let (loss, grad, d) = self.sums_with_diag(theta, cancel)?;
                (loss, grad, None, self.finish_diag(d))
            }
        };
        let (value, grad) = self.finish_value_grad(theta, loss, grad);
        Ok(Evaluation { value, grad, hessian, diag })
    }

    /// Hessian-vector products H v for a block of vectors (p x r), without forming H.
    pub fn hvp(&self, theta: ArrayView1<f64>, v: ArrayView2<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        let hv = self.hvp_sums(theta, v, cancel)?;
        Ok(partial::finish_hvp(&self.mask, self.l2, self.total_weight, hv, v))
    }

    /// sum_i w_i (Hess l_i) v, reduced over row blocks in a fixed order.
    fn hvp_sums(&self, theta: ArrayView1<f64>, v: ArrayView2<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let p = self.n_params();
        if v.nrows() != p {
            return Err(Error::Shape { arg: "v", msg: format!("has {} rows, expected {p}", v.nrows()) });
        }
        check_finite("v", v.iter())?;
        let r = v.ncols();
        // one p x r sum per chunk of blocks, which every block adds into
        Ok(fold_reduce(
            self.data.n(),
            64,
            cancel,
            || Array2::zeros((p, r)),
            |acc, rows| with_block(self.data, rows, |b| self.model.hvp_sum(theta, b, v, acc.view_mut())),
            |a, b| *a += &b,
        )?
        .unwrap_or_else(|| Array2::zeros((p, r))))
    }
}
