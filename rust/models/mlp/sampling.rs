//! Sampled output curvature for the K-FAC factors (DESIGN-networks.md section 4, "sampling is
//! an option"): instead of the k columns of B (Lambda_i = B_i B_i^T, the exact expectation),
//! m gradients of the loss at targets drawn from the model's own predictive distribution,
//! y ~ p(y | h_i), each scaled by sqrt(w_i / m). Their mean outer product is an unbiased estimate
//! of w_i Lambda_i because every head's loss is a negative log-likelihood in h: softmax and
//! logistic (categorical, Bernoulli), Poisson (log link), and the squared error (h - y)^2, the
//! Gaussian's with variance 1/2. Deterministic: each row's draws are seeded by a hash of the
//! row's values (its features and targets), so they do not depend on blocks, threads or order.

use ndarray::{Array1, Array3};

use super::pass::Forward;
use super::{targets, Mlp};
use crate::data::Batch;
use crate::models::glm::Family;
use crate::rng::SplitMix64;

/// FNV-1a over 64-bit words: the seed of a row's stream.
fn hash_words(words: impl Iterator<Item = u64>) -> u64 {
    words.fold(0xCBF2_9CE4_8422_2325, |h, w| (h ^ w).wrapping_mul(0x0000_0100_0000_01B3))
}

impl Family {
    /// A target drawn from the predictive distribution at the linear predictors `eta` into `y`
    /// (k values for a squared head, else one).
    fn sample_target(&self, eta: &[f64], rng: &mut SplitMix64, y: &mut [f64]) {
        match self {
            Family::Squared => y.iter_mut().zip(eta).for_each(|(o, &e)| *o = e + std::f64::consts::FRAC_1_SQRT_2 * rng.normal()),
            Family::Logistic => y[0] = f64::from(rng.uniform() < 1.0 / (1.0 + (-eta[0]).exp())),
            Family::Poisson => y[0] = rng.poisson(eta[0].exp()),
            Family::Multinomial { n_classes } => {
                let mut p = vec![0.0; *n_classes];
                self.mean(eta, &mut p);
                let u = rng.uniform();
                let mut cdf = 0.0;
                y[0] = (*n_classes - 1) as f64;
                for (c, pc) in p.iter().enumerate() {
                    cdf += pc;
                    if u < cdf {
                        y[0] = c as f64;
                        break;
                    }
                }
            }
        }
    }
}

impl Mlp {
    /// Per row, `samples` loss gradients in h at drawn targets, scaled by sqrt(w_i / samples):
    /// (B x k x samples), a sampled stand-in for [`Mlp::lambda_factors`]' B.
    pub(super) fn sampled_lambda_factors(&self, fw: &Forward, data: &Batch, samples: usize) -> Array3<f64> {
        let h = fw.output();
        let (n, k) = h.dim();
        let d = data.x.ncols();
        let mut out = Array3::zeros((n, k, samples));
        let mut row = Array1::zeros(d);
        let mut y = vec![0.0; self.n_targets()];
        let mut res = vec![0.0; k];
        for i in 0..n {
            data.x.row_scaled_into(i, 1.0, row.view_mut());
            let t = targets(&data.y, i);
            let mut rng = SplitMix64(hash_words(row.iter().chain(t.iter()).map(|v| v.to_bits())));
            let scale = (data.weight(i) / samples as f64).sqrt();
            let hi = h.row(i);
            let hi = hi.as_slice().expect("contiguous");
            for j in 0..samples {
                self.head.sample_target(hi, &mut rng, &mut y);
                self.head.residual_and_hessian_row(hi, &y, &mut res, None);
                for c in 0..k {
                    out[[i, c, j]] = scale * res[c];
                }
            }
        }
        out
    }

    /// The output factors the K-FAC sums use: B (exact) or its sampled stand-in.
    pub(super) fn kfac_output_factors(&self, fw: &Forward, data: &Batch) -> Array3<f64> {
        match self.kfac_samples {
            0 => self.lambda_factors(fw, data),
            m => self.sampled_lambda_factors(fw, data, m),
        }
    }
}
