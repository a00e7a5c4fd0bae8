//! Per-chunk kernels for distributed runs (a Dask backend maps them over chunks of the training
//! set): unnormalised partial sums over the rows of one chunk, and their combine rule.
//!
//! Combine rule: add the partials of consecutive chunks in chunk order ([`Partial::add`]), then
//! [`Partial::finish`] once (divide by W, add the penalty). With the whole training set as one
//! chunk this gives the bits of [`Objective::value_grad`] and [`Objective::hessian`]; with
//! several chunks the summation order changes (rounding-level differences, ~1e-15 relative).

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use super::Objective;
use crate::cancel::Cancel;
use crate::error::Result;
use crate::linalg::symmetrize_from_lower;
use crate::models::Model;

/// sum_i w_i, sum_i w_i l_i, sum_i w_i grad l_i and (if asked) sum_i w_i Hess l_i over a chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    pub weight: f64,
    pub loss: f64,
    pub grad: Array1<f64>,
    /// Symmetric (p x p).
    pub hessian: Option<Array2<f64>>,
}

impl Partial {
    /// The partial of this chunk followed by `next` (the next chunk in order).
    pub fn add(&mut self, next: &Partial) {
        self.weight += next.weight;
        self.loss += next.loss;
        self.grad += &next.grad;
        match (&mut self.hessian, &next.hessian) {
            (Some(h), Some(n)) => *h += n,
            _ => self.hessian = None,
        }
    }

    /// (L_w, grad L_w, Hessian) of the whole training set from the sum of every chunk's partial:
    /// divided by W, with the penalty of `model` and `l2` at `theta`.
    /// `mask` is the model's [`Model::penalty_mask`].
    pub fn finish(&self, mask: &Array1<f64>, l2: f64, theta: ArrayView1<f64>) -> (f64, Array1<f64>, Option<Array2<f64>>) {
        let w = self.weight;
        let value = self.loss / w + l2 * mask.iter().zip(theta).map(|(m, t)| m * t * t).sum::<f64>();
        let grad = &self.grad / w + &(mask * &theta * (2.0 * l2));
        let hessian = self.hessian.as_ref().map(|h| {
            let mut h = h / w;
            for (j, m) in mask.iter().enumerate() {
                h[[j, j]] += 2.0 * l2 * m;
            }
            h
        });
        (value, grad, hessian)
    }
}

/// The Hessian-vector products of the whole training set from the sum of every chunk's
/// [`Objective::partial_hvp`]: divided by W, with the penalty's part (`mask` the model's
/// [`Model::penalty_mask`]).
pub fn finish_hvp(mask: &Array1<f64>, l2: f64, total_weight: f64, mut hv: Array2<f64>, v: ArrayView2<f64>) -> Array2<f64> {
    hv /= total_weight;
    for (j, m) in mask.iter().enumerate() {
        hv.row_mut(j).scaled_add(2.0 * l2 * m, &v.row(j));
    }
    hv
}

impl<M: Model + ?Sized> Objective<'_, M> {
    /// The partial sums over this objective's rows (one chunk of a training set).
    pub fn partial(&self, theta: ArrayView1<f64>, with_hessian: bool, cancel: &Cancel) -> Result<Partial> {
        self.check_theta(theta)?;
        let (loss, grad, hessian) = if with_hessian {
            let (loss, grad, mut h) = self.sums_with_hessian(theta, cancel)?;
            symmetrize_from_lower(&mut h);
            (loss, grad, Some(h))
        } else {
            let (loss, grad) = self.sums(theta, cancel)?;
            (loss, grad, None)
        };
        Ok(Partial { weight: self.total_weight(), loss, grad, hessian })
    }

    /// sum_i w_i (Hess l_i) v over this objective's rows, for vectors `v` (p x r).
    pub fn partial_hvp(&self, theta: ArrayView1<f64>, v: ArrayView2<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.hvp_sums(theta, v, cancel)
    }
}
