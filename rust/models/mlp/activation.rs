//! Hidden-layer activations phi with phi' and phi'' (DESIGN-networks.md section 1: tanh, relu,
//! gelu; also scikit-learn's logistic and identity, so its fitted networks convert exactly).

use crate::error::{Error, Result};
use crate::models::glm::sigmoid;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Tanh,
    /// max(z, 0), with relu'(0) = 0 and relu'' = 0.
    Relu,
    /// z Phi(z), Phi the standard normal CDF (the exact form, not the tanh approximation).
    Gelu,
    /// 1 / (1 + e^-z) (scikit-learn's "logistic").
    Logistic,
    /// z (scikit-learn's "identity": a linear hidden layer).
    Identity,
}

const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Phi(z), the standard normal CDF.
#[inline]
fn normal_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z * std::f64::consts::FRAC_1_SQRT_2)
}

/// The standard normal density.
#[inline]
fn normal_pdf(z: f64) -> f64 {
    FRAC_1_SQRT_2PI * (-0.5 * z * z).exp()
}

impl Activation {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "tanh" => Ok(Self::Tanh),
            "relu" => Ok(Self::Relu),
            "gelu" => Ok(Self::Gelu),
            "logistic" => Ok(Self::Logistic),
            "identity" => Ok(Self::Identity),
            other => Err(Error::Value { arg: "activation", msg: format!("expected 'tanh', 'relu', 'gelu', 'logistic' or 'identity', got {other:?}") }),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Tanh => "tanh",
            Self::Relu => "relu",
            Self::Gelu => "gelu",
            Self::Logistic => "logistic",
            Self::Identity => "identity",
        }
    }

    #[inline]
    pub fn value(&self, z: f64) -> f64 {
        match self {
            Self::Tanh => z.tanh(),
            Self::Relu => z.max(0.0),
            Self::Gelu => z * normal_cdf(z),
            Self::Logistic => sigmoid(z),
            Self::Identity => z,
        }
    }

    /// phi'(z).
    #[inline]
    pub fn d1(&self, z: f64) -> f64 {
        match self {
            Self::Tanh => {
                let t = z.tanh();
                1.0 - t * t
            }
            Self::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::Gelu => normal_cdf(z) + z * normal_pdf(z),
            Self::Logistic => {
                let s = sigmoid(z);
                s * (1.0 - s)
            }
            Self::Identity => 1.0,
        }
    }

    /// phi'(z) given a = phi(z), the forward pass's value: tanh and logistic read it off `a`
    /// (1 - a^2, a (1 - a)) instead of evaluating phi again; bitwise equal to `d1(z)`.
    #[inline]
    pub fn d1_at(&self, z: f64, a: f64) -> f64 {
        match self {
            Self::Tanh => 1.0 - a * a,
            Self::Logistic => a * (1.0 - a),
            _ => self.d1(z),
        }
    }

    /// phi''(z) given a = phi(z), like [`Activation::d1_at`]; bitwise equal to `d2(z)`.
    #[inline]
    pub fn d2_at(&self, z: f64, a: f64) -> f64 {
        match self {
            Self::Tanh => -2.0 * a * (1.0 - a * a),
            Self::Logistic => a * (1.0 - a) * (1.0 - 2.0 * a),
            _ => self.d2(z),
        }
    }

    /// phi''(z).
    #[inline]
    pub fn d2(&self, z: f64) -> f64 {
        match self {
            Self::Tanh => {
                let t = z.tanh();
                -2.0 * t * (1.0 - t * t)
            }
            Self::Relu => 0.0,
            Self::Gelu => normal_pdf(z) * (2.0 - z * z),
            Self::Logistic => {
                let s = sigmoid(z);
                s * (1.0 - s) * (1.0 - 2.0 * s)
            }
            Self::Identity => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_central_differences() {
        for act in [Activation::Tanh, Activation::Relu, Activation::Gelu, Activation::Logistic, Activation::Identity] {
            for &z in &[-3.1, -0.7, -0.01, 0.2, 1.3, 4.0] {
                let h = 1e-6;
                let d1 = (act.value(z + h) - act.value(z - h)) / (2.0 * h);
                let d2 = (act.d1(z + h) - act.d1(z - h)) / (2.0 * h);
                assert!((d1 - act.d1(z)).abs() < 1e-8, "{act:?} d1 at {z}");
                assert!((d2 - act.d2(z)).abs() < 1e-7, "{act:?} d2 at {z}");
            }
        }
    }

    /// The derivatives read off the forward value are the same bits as from z.
    #[test]
    fn derivatives_from_the_value_equal_those_from_z() {
        for act in [Activation::Tanh, Activation::Relu, Activation::Gelu, Activation::Logistic, Activation::Identity] {
            for &z in &[-40.0, -3.1, -0.7, -1e-9, 0.0, 2e-12, 0.2, 1.3, 4.0, 19.5, 800.0] {
                let a = act.value(z);
                assert_eq!(act.d1_at(z, a).to_bits(), act.d1(z).to_bits(), "{act:?} d1 at {z}");
                assert_eq!(act.d2_at(z, a).to_bits(), act.d2(z).to_bits(), "{act:?} d2 at {z}");
            }
        }
    }

    #[test]
    fn gelu_is_z_times_the_normal_cdf() {
        // Phi(1) = 0.841344746068543 (tables)
        assert!((Activation::Gelu.value(1.0) - 0.841_344_746_068_543).abs() < 1e-15);
        assert_eq!(Activation::Gelu.value(0.0), 0.0);
        assert!(Activation::Gelu.value(-40.0).abs() < 1e-300);
    }
}
