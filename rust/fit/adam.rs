//! Seeded mini-batch Adam (Kingma & Ba 2015) for large training sets, where full-batch
//! training is not what users do. Each epoch visits the rows in a seeded random order, in
//! batches; a batch's gradient is that of the batch's own weighted mean loss plus the penalty.
//! Deterministic for a seed: the order comes from SplitMix64, and each batch's gradient is the
//! objective's fixed-order reduction (independent of the thread count).

use ndarray::{Array1, ArrayView1};

use super::{finish, FitResult};
use crate::cancel::Cancel;
use crate::data::{gather, Rows};
use crate::error::{check_finite, Error, Result};
use crate::models::Model;
use crate::objective::Objective;
use crate::rng::SplitMix64;

#[derive(Clone, Debug)]
pub struct AdamOptions {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub epsilon: f64,
    pub seed: u64,
}

impl Default for AdamOptions {
    fn default() -> Self {
        Self { epochs: 10, batch_size: 256, learning_rate: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-8, seed: 0 }
    }
}

/// A seeded permutation of 0..n (Fisher-Yates).
fn permutation(n: usize, rng: &mut SplitMix64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

/// Run Adam from `theta0` on `model` over `data` with penalty `l2`. The result's gradient,
/// objective and `converged` (max |grad| <= `tol`) are those of the full objective at the end.
pub fn adam<M: Model + ?Sized>(
    model: &M,
    data: &dyn Rows,
    l2: f64,
    theta0: ArrayView1<f64>,
    opts: &AdamOptions,
    tol: f64,
    cancel: &Cancel,
) -> Result<FitResult> {
    if opts.batch_size == 0 {
        return Err(Error::Value { arg: "batch_size", msg: "must be >= 1".into() });
    }
    for (arg, v, ok) in [
        ("learning_rate", opts.learning_rate, opts.learning_rate > 0.0),
        ("beta1", opts.beta1, (0.0..1.0).contains(&opts.beta1)),
        ("beta2", opts.beta2, (0.0..1.0).contains(&opts.beta2)),
        ("epsilon", opts.epsilon, opts.epsilon > 0.0),
    ] {
        if !ok || !v.is_finite() {
            return Err(Error::Value { arg, msg: format!("out of range: {v}") });
        }
    }
    let full = Objective::new(model, data, l2)?;
    let p = full.n_params();
    if theta0.len() != p {
        return Err(Error::Shape { arg: "theta0", msg: format!("has {} entries, expected {p}", theta0.len()) });
    }
    check_finite("theta0", theta0.iter())?;
    let n = data.n();
    let mut rng = SplitMix64(opts.seed);
    let (mut theta, mut m, mut v) = (theta0.to_owned(), Array1::<f64>::zeros(p), Array1::<f64>::zeros(p));
    let mut step = 0i32;
    let mut last_step = None;
    for _ in 0..opts.epochs {
        let order = permutation(n, &mut rng);
        for batch in order.chunks(opts.batch_size) {
            cancel.check()?;
            let rows = gather(data, batch)?;
            if !(rows.total_weight() > 0.0) {
                continue; // a batch of weight-0 rows carries no loss
            }
            let (_, g) = Objective::validated(model, &rows, l2, rows.total_weight()).value_grad(theta.view(), cancel)?;
            step += 1;
            m = &m * opts.beta1 + &g * (1.0 - opts.beta1);
            v = &v * opts.beta2 + &g.mapv(|x| x * x) * (1.0 - opts.beta2);
            let (c1, c2) = (1.0 - opts.beta1.powi(step), 1.0 - opts.beta2.powi(step));
            let delta = ndarray::Zip::from(&m).and(&v).map_collect(|&mi, &vi| -opts.learning_rate * (mi / c1) / ((vi / c2).sqrt() + opts.epsilon));
            theta += &delta;
            last_step = Some(delta);
        }
    }
    let (f, g) = full.value_grad(theta.view(), cancel)?;
    let converged = super::inf_norm(&g) <= tol;
    finish(theta, f, g, step as usize, converged, last_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutations_are_seeded_and_complete() {
        let a = permutation(1000, &mut SplitMix64(7));
        let b = permutation(1000, &mut SplitMix64(7));
        let c = permutation(1000, &mut SplitMix64(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..1000).collect::<Vec<_>>());
    }
}
