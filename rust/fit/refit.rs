//! Exact refits with changed weights: the response R_m(eps) of DESIGN.md section 1, computed
//! rather than linearised. It is the ground truth influence is checked against (response curves,
//! leave-one-out, leave-k-out). Refits run in parallel, each warm-started at the fitted theta.

use ndarray::{Array2, ArrayView1};
use rayon::prelude::*;

use super::{newton, FitOptions, FitResult};
use crate::cancel::Cancel;
use crate::data::{Reweighted, Rows};
use crate::error::{Error, Result};
use crate::models::Model;
use crate::objective::Objective;

/// One refit: set the weights of `points` to `weights` (absolute values, not increments),
/// optionally with its own l2 (for objectives whose penalty is fixed relative to the summed
/// loss, the mean-normalised l2 moves with the total weight).
#[derive(Clone, Debug)]
pub struct Change {
    pub points: Vec<usize>,
    pub weights: Vec<f64>,
    pub l2: Option<f64>,
}

/// Refit the model once per change, in parallel, each from `theta0` (the fitted theta: a warm
/// start, so a small change costs a few Newton steps). Results come back in the order of
/// `changes`; `cancel` counts finished refits as its progress.
pub fn refits<M: Model + ?Sized>(
    model: &M,
    data: &dyn Rows,
    l2: f64,
    theta0: ArrayView1<f64>,
    changes: &[Change],
    opts: &FitOptions,
    cancel: &Cancel,
) -> Result<Vec<FitResult>> {
    for c in changes {
        if c.points.len() != c.weights.len() {
            return Err(Error::Shape { arg: "weights", msg: format!("{} weights for {} points", c.weights.len(), c.points.len()) });
        }
    }
    cancel.begin(changes.len());
    changes
        .par_iter()
        .map(|c| {
            cancel.check()?;
            let data = Reweighted::new(data, &c.points, &c.weights)?;
            let obj = Objective::new(model, &data, c.l2.unwrap_or(l2))?;
            let fit = newton(&obj, Some(theta0), opts, &cancel.child())?;
            cancel.advance(1);
            Ok(fit)
        })
        .collect()
}

/// The thetas of `fits` as rows of a matrix.
pub fn thetas(fits: &[FitResult]) -> Array2<f64> {
    let p = fits.first().map_or(0, |f| f.theta.len());
    let mut out = Array2::zeros((fits.len(), p));
    for (mut row, f) in out.rows_mut().into_iter().zip(fits) {
        row.assign(&f.theta);
    }
    out
}
