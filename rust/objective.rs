//! The weighted objective L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 ||coef||^2
//! (DESIGN.md section 1), its gradient, Hessian and Hessian-vector products, computed over row
//! blocks in parallel with a fixed reduction order.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use crate::blocks::map_reduce;
use crate::cancel::Cancel;
use crate::source::{with_block, Rows};
use crate::error::{check_finite, Error, Result};
use crate::linalg::symmetrize_from_lower;
use crate::model::Model;

/// Partial Hessians held at once stay under this many bytes (it fixes the chunking from p alone,
/// so the result still does not depend on the thread count).
const HESSIAN_PARTIALS_BYTES: usize = 256 << 20;

pub struct Objective<'a, M: Model + ?Sized> {
    pub model: &'a M,
    pub data: &'a dyn Rows,
    pub l2: f64,
    total_weight: f64,
    mask: Array1<f64>,
}

impl<'a, M: Model + ?Sized> Objective<'a, M> {
    /// Validates that `data` fits the model (feature count, targets) and that `l2 >= 0`.
    pub fn new(model: &'a M, data: &'a dyn Rows, l2: f64) -> Result<Self> {
        if !(l2 >= 0.0) || !l2.is_finite() {
            return Err(Error::Value { arg: "l2", msg: format!("must be a finite number >= 0, got {l2}") });
        }
        if data.d() != model.n_features() {
            return Err(Error::Shape {
                arg: "X",
                msg: format!("has {} columns but the model has {} features", data.d(), model.n_features()),
            });
        }
        model.check_targets("y", data.y())?;
        Ok(Self { model, data, l2, total_weight: data.total_weight(), mask: model.penalty_mask() })
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
            return Err(Error::Shape {
                arg: "theta",
                msg: format!("has {} entries, expected {}", theta.len(), self.n_params()),
            });
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
        let (loss, grad) = map_reduce(
            self.data.n(),
            64,
            cancel,
            |r| with_block(self.data, r, |b| self.model.loss_grad_sum(theta, b)),
            |a, b| {
                a.0 += b.0;
                a.1 += &b.1;
            },
        )?
        .expect("data has rows");
        let w = self.total_weight;
        Ok((loss / w + self.penalty(theta), grad / w + self.penalty_grad(theta)))
    }

    /// Hessian of L_w at theta (p x p, symmetric), penalty included.
    pub fn hessian(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let p = self.n_params();
        let max_partials = (HESSIAN_PARTIALS_BYTES / (8 * p * p).max(1)).clamp(1, 64);
        let mut h = map_reduce(
            self.data.n(),
            max_partials,
            cancel,
            |r| {
                let mut h = Array2::zeros((p, p));
                with_block(self.data, r, |b| self.model.hessian_sum(theta, b, h.view_mut()))?;
                Ok(h)
            },
            |a, b| *a += &b,
        )?
        .expect("data has rows");
        symmetrize_from_lower(&mut h);
        h /= self.total_weight;
        for (j, m) in self.mask.iter().enumerate() {
            h[[j, j]] += 2.0 * self.l2 * m;
        }
        Ok(h)
    }

    /// Diagonal of the Hessian at theta, penalty included, or `None` if the model cannot give it.
    pub fn hessian_diag(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Option<Array1<f64>>> {
        self.check_theta(theta)?;
        let p = self.n_params();
        let diag = map_reduce(
            self.data.n(),
            64,
            cancel,
            |r| {
                let mut out = Array1::zeros(p);
                let ok = with_block(self.data, r, |b| self.model.hessian_diag_sum(theta, b, out.view_mut()))?;
                Ok(ok.then_some(out))
            },
            |a, b| match (a.is_some(), b) {
                (true, Some(b)) => *a.as_mut().expect("checked") += &b,
                _ => *a = None,
            },
        )?
        .flatten();
        Ok(diag.map(|d| d / self.total_weight + &(&self.mask * (2.0 * self.l2))))
    }

    /// Hessian-vector products H v for a block of vectors (p x r), without forming H.
    pub fn hvp(&self, theta: ArrayView1<f64>, v: ArrayView2<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let p = self.n_params();
        if v.nrows() != p {
            return Err(Error::Shape { arg: "v", msg: format!("has {} rows, expected {p}", v.nrows()) });
        }
        check_finite("v", v.iter())?;
        let r = v.ncols();
        let mut hv = map_reduce(
            self.data.n(),
            64,
            cancel,
            |rows| {
                let mut out = Array2::zeros((p, r));
                with_block(self.data, rows, |b| self.model.hvp_sum(theta, b, v, out.view_mut()))?;
                Ok(out)
            },
            |a, b| *a += &b,
        )?
        .unwrap_or_else(|| Array2::zeros((p, r)));
        hv /= self.total_weight;
        for (j, m) in self.mask.iter().enumerate() {
            let mut row = hv.row_mut(j);
            row.scaled_add(2.0 * self.l2 * m, &v.row(j));
        }
        Ok(hv)
    }
}
