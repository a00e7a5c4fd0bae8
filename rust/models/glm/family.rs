//! GLM loss families in terms of the linear predictor eta (DESIGN.md section 2).
//!
//! Each family gives, per example, the loss l(eta, y), its gradient in eta (the "residual")
//! and its Hessian in eta. The model-level trait (`model::Model`) lifts these to theta.

use crate::error::{Error, Result};

/// A loss family. `Multinomial` has `n_classes` linear predictors per example; the others one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Squared error (eta - y)^2: linear and ridge regression.
    Squared,
    /// Binary logistic loss, y in {0, 1}.
    Logistic,
    /// Poisson deviance with log link, y a count >= 0.
    Poisson,
    /// Softmax cross-entropy over `n_classes` classes, y in {0, .., n_classes - 1}.
    Multinomial { n_classes: usize },
}

/// log(1 + e^x) without overflow.
#[inline]
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// 1 / (1 + e^-x) without overflow.
#[inline]
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Family {
    /// Parse a family name as used by the Python API.
    pub fn from_name(name: &str, n_classes: usize) -> Result<Self> {
        match name {
            "squared" => Ok(Family::Squared),
            "logistic" => Ok(Family::Logistic),
            "poisson" => Ok(Family::Poisson),
            "multinomial" if n_classes >= 2 => Ok(Family::Multinomial { n_classes }),
            "multinomial" => Err(Error::Value { arg: "n_classes", msg: format!("must be >= 2, got {n_classes}") }),
            other => Err(Error::Value { arg: "family", msg: format!("unknown family {other:?}; expected squared, logistic, poisson or multinomial") }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Family::Squared => "squared",
            Family::Logistic => "logistic",
            Family::Poisson => "poisson",
            Family::Multinomial { .. } => "multinomial",
        }
    }

    /// Number of linear predictors per example (k).
    pub fn n_outputs(&self) -> usize {
        match self {
            Family::Multinomial { n_classes } => *n_classes,
            _ => 1,
        }
    }

    /// Check every target is in the family's support; name the first that is not.
    pub fn check_targets<'a>(&self, arg: &'static str, y: impl IntoIterator<Item = &'a f64>) -> Result<()> {
        let (ok, expected): (fn(f64, usize) -> bool, &'static str) = match self {
            Family::Squared => (|_, _| true, "a real number"),
            Family::Logistic => (|v, _| v == 0.0 || v == 1.0, "0 or 1 for logistic regression"),
            Family::Poisson => (|v, _| v >= 0.0, "a count >= 0 for Poisson regression"),
            Family::Multinomial { .. } => {
                (|v, k| v >= 0.0 && v.fract() == 0.0 && (v as usize) < k, "an integer class id in 0..n_classes for multinomial regression")
            }
        };
        let k = self.n_outputs();
        match y.into_iter().enumerate().find(|(_, &v)| !ok(v, k)) {
            Some((index, &value)) => Err(Error::Label { arg, index, value, expected }),
            None => Ok(()),
        }
    }

    /// Loss l(eta, y). `eta` has `n_outputs()` entries.
    #[inline]
    pub fn loss(&self, eta: &[f64], y: f64) -> f64 {
        match self {
            Family::Squared => (eta[0] - y).powi(2),
            Family::Logistic => softplus(eta[0]) - y * eta[0],
            Family::Poisson => eta[0].exp() - y * eta[0],
            Family::Multinomial { .. } => log_sum_exp(eta) - eta[y as usize],
        }
    }

    /// Residual dl/deta into `out` (length k) and the eta-Hessian d2l/deta2 into `hess`
    /// (k x k row-major). For k = 1 this is the scalar h_i of DESIGN.md's table.
    #[inline]
    pub fn residual_and_hessian(&self, eta: &[f64], y: f64, out: &mut [f64], hess: Option<&mut [f64]>) {
        match self {
            Family::Squared => {
                out[0] = 2.0 * (eta[0] - y);
                if let Some(h) = hess {
                    h[0] = 2.0;
                }
            }
            Family::Logistic => {
                let s = sigmoid(eta[0]);
                out[0] = s - y;
                if let Some(h) = hess {
                    h[0] = s * (1.0 - s);
                }
            }
            Family::Poisson => {
                let m = eta[0].exp();
                out[0] = m - y;
                if let Some(h) = hess {
                    h[0] = m;
                }
            }
            Family::Multinomial { n_classes: k } => {
                softmax(eta, out);
                if let Some(h) = hess {
                    for a in 0..*k {
                        for b in 0..*k {
                            h[a * k + b] = if a == b { out[a] * (1.0 - out[a]) } else { -out[a] * out[b] };
                        }
                    }
                }
                out[y as usize] -= 1.0;
            }
        }
    }

    /// The loss of a row with targets `y`: one target, or for `Squared` one per predictor
    /// (a multi-output squared head, l = sum_c (eta_c - y_c)^2: the outputs' losses add up).
    #[inline]
    pub fn loss_row(&self, eta: &[f64], y: &[f64]) -> f64 {
        match self {
            Family::Squared => eta.iter().zip(y).map(|(e, t)| (e - t).powi(2)).sum(),
            _ => self.loss(eta, y[0]),
        }
    }

    /// [`Family::residual_and_hessian`] of a row with targets `y` (as [`Family::loss_row`]):
    /// for `Squared` with k predictors, 2 (eta - y) and Lambda = 2 I.
    #[inline]
    pub fn residual_and_hessian_row(&self, eta: &[f64], y: &[f64], out: &mut [f64], hess: Option<&mut [f64]>) {
        match self {
            Family::Squared => {
                let k = eta.len();
                for (c, o) in out.iter_mut().enumerate() {
                    *o = 2.0 * (eta[c] - y[c]);
                }
                if let Some(h) = hess {
                    h.fill(0.0);
                    for c in 0..k {
                        h[c * k + c] = 2.0;
                    }
                }
            }
            _ => self.residual_and_hessian(eta, y[0], out, hess),
        }
    }

    /// Mean response (inverse link): identity (on every predictor of a multi-output squared
    /// head), sigmoid, exp, softmax. Writes k values.
    #[inline]
    pub fn mean(&self, eta: &[f64], out: &mut [f64]) {
        match self {
            Family::Squared => out[..eta.len()].copy_from_slice(eta),
            Family::Logistic => out[0] = sigmoid(eta[0]),
            Family::Poisson => out[0] = eta[0].exp(),
            Family::Multinomial { .. } => softmax(eta, out),
        }
    }

    /// Jacobian of the mean response in eta, k x k row-major: d mean_a / d eta_b.
    #[inline]
    pub fn mean_jacobian(&self, eta: &[f64], out: &mut [f64]) {
        match self {
            Family::Squared => {
                let k = eta.len();
                out[..k * k].fill(0.0);
                for c in 0..k {
                    out[c * k + c] = 1.0;
                }
            }
            Family::Logistic => {
                let s = sigmoid(eta[0]);
                out[0] = s * (1.0 - s)
            }
            Family::Poisson => out[0] = eta[0].exp(),
            Family::Multinomial { n_classes: k } => {
                let mut p = vec![0.0; *k];
                softmax(eta, &mut p);
                for a in 0..*k {
                    for b in 0..*k {
                        out[a * k + b] = if a == b { p[a] * (1.0 - p[a]) } else { -p[a] * p[b] };
                    }
                }
            }
        }
    }
}

#[inline]
fn log_sum_exp(eta: &[f64]) -> f64 {
    let m = eta.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    m + eta.iter().map(|e| (e - m).exp()).sum::<f64>().ln()
}

#[inline]
fn softmax(eta: &[f64], out: &mut [f64]) {
    let m = eta.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut s = 0.0;
    for (o, e) in out.iter_mut().zip(eta) {
        *o = (e - m).exp();
        s += *o;
    }
    for o in out.iter_mut() {
        *o /= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Residual and Hessian agree with central differences of the loss.
    #[test]
    fn derivatives_match_finite_differences() {
        let cases = [
            (Family::Squared, vec![0.3], 1.2),
            (Family::Logistic, vec![-0.7], 1.0),
            (Family::Poisson, vec![0.4], 3.0),
            (Family::Multinomial { n_classes: 3 }, vec![0.2, -0.5, 1.1], 2.0),
        ];
        for (fam, eta, y) in cases {
            let k = fam.n_outputs();
            let mut r = vec![0.0; k];
            let mut h = vec![0.0; k * k];
            fam.residual_and_hessian(&eta, y, &mut r, Some(&mut h));
            let eps = 1e-5;
            for a in 0..k {
                let mut up = eta.clone();
                let mut dn = eta.clone();
                up[a] += eps;
                dn[a] -= eps;
                let fd = (fam.loss(&up, y) - fam.loss(&dn, y)) / (2.0 * eps);
                assert!((fd - r[a]).abs() < 1e-8, "{fam:?} residual");
                let (mut ru, mut rd) = (vec![0.0; k], vec![0.0; k]);
                fam.residual_and_hessian(&up, y, &mut ru, None);
                fam.residual_and_hessian(&dn, y, &mut rd, None);
                for b in 0..k {
                    let fd = (ru[b] - rd[b]) / (2.0 * eps);
                    assert!((fd - h[b * k + a]).abs() < 1e-8, "{fam:?} hessian");
                }
            }
        }
    }

    #[test]
    fn extreme_predictors_stay_finite() {
        assert!(softplus(1000.0).is_finite() && softplus(-1000.0) >= 0.0);
        assert_eq!(sigmoid(-1000.0), 0.0);
        let f = Family::Multinomial { n_classes: 2 };
        assert!(f.loss(&[1000.0, -1000.0], 1.0).is_finite());
    }

    #[test]
    fn labels_outside_the_family_are_named() {
        let err = Family::Logistic.check_targets("y", &[0.0, 1.0, 2.0]).unwrap_err();
        assert!(matches!(err, Error::Label { index: 2, .. }));
        assert!(Family::Multinomial { n_classes: 3 }.check_targets("y", &[0.0, 2.5]).is_err());
        assert!(Family::Poisson.check_targets("y", &[-1.0]).is_err());
    }
}
