//! Regression diagnostics statisticians already use, for scalar-output GLMs with sample
//! weights: the leverage (hat values) here; Cook's distance, studentized residuals and DFBETA
//! follow from it and the residuals (python/upweight/diagnostics.py).
//!
//! With H the Hessian of L_w (penalty included) and a_i the Hessian weight of the loss in the
//! linear predictor (2 for squared loss, mu (1 - mu) for logistic, mu for Poisson), the hat
//! value of row i is
//!     h_i = (w_i a_i / W) z_i^T H^{-1} z_i,    z_i = [x_i, 1],
//! the diagonal of W^{1/2} Z (Z^T W Z + penalty)^{-1} Z^T W^{1/2} with W = diag(w a): the
//! usual (weighted, IRLS) hat matrix when l2 = 0.

use ndarray::{s, Array1};
use rayon::prelude::*;

use super::Influence;
use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::{with_block, Rows};
use crate::error::{Error, Result};
use crate::models::Prediction;

impl Influence {
    /// Hat values h_i of every training row, streamed over row blocks (models with one output
    /// whose loss has a Hessian in its linear predictor).
    pub fn leverage(&self, cancel: &Cancel) -> Result<Array1<f64>> {
        leverage(self, cancel)
    }
}

fn leverage(inf: &Influence, cancel: &Cancel) -> Result<Array1<f64>> {
    let model = inf.model();
    if model.n_outputs() != 1 {
        let msg = format!("diagnostics are defined for single-output models (this one has {} outputs)", model.n_outputs());
        return Err(Error::Value { arg: "model", msg });
    }
    let train = inf.data();
    let theta = inf.theta();
    let scale = 1.0 / inf.total_weight();
    cancel.begin(train.n());
    let parts: Vec<Result<Vec<f64>>> = blocks(train.n(), BLOCK_ROWS)
        .into_par_iter()
        .map(|r| {
            cancel.check()?;
            let len = r.len();
            let (z, a, w) = with_block(train, r, |b| -> Result<_> {
                let z = model.prediction_grads(theta, b.x, Prediction::Linear)?; // rows z_i (B x p)
                let a = model.output_hessians(theta, b)?;
                let w: Vec<f64> = (0..b.n()).map(|i| b.weight(i)).collect();
                Ok((z, a, w))
            })??;
            let (v, _) = inf.inverse_hvp(z.t(), cancel)?;
            let out = (0..len).map(|i| scale * w[i] * a[[i, 0]] * z.row(i).dot(&v.slice(s![.., i]))).collect();
            cancel.advance(len);
            Ok(out)
        })
        .collect();
    let mut h = Vec::with_capacity(train.n());
    for p in parts {
        h.extend(p?);
    }
    let h = Array1::from(h);
    crate::error::check_overflow("the leverage", h.iter())?;
    Ok(h)
}
