//! The last layer of a network as a model of its own (DESIGN-networks.md section 6, the
//! prefilter's stage-1 scorer): the layers below are frozen at given parameters, so each row's
//! input to the last layer, abar = [phi(z_{L-1}); 1], is a fixed feature vector and the model in
//! Theta_L alone is the head's GLM on those features.
//!
//! Its per-example gradients are the Theta_L block of the network's, and its curvature is the
//! Theta_L block of the network's Gauss-Newton matrix (also of its Hessian: h is linear in
//! Theta_L, so the second-order term vanishes there). Its influence is therefore the exact
//! influence restricted to the last layer: the cheap, forward-pass-only scorer of stage 1.

use std::ops::Range;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3};

use super::{Curvature, Mlp};
use crate::data::{Batch, XView};
use crate::error::{Error, Result};
use crate::models::glm::{Family, Glm};
use crate::models::{Model, Preconditioning, Prediction, QueryNorm};

/// A network's last layer, the layers below frozen (see the module docs).
pub struct LastLayer {
    /// The whole network and its parameters: the frozen layers' forward pass reads them.
    net: Mlp,
    theta: Array1<f64>,
    /// The last layer alone on the features abar: the head's GLM (whose kernels use the class
    /// structure: its Hessian costs k (k + 1) / 2 products of the features, not the k n p^2 of a
    /// Gauss-Newton factor), or for a multi-output squared head a network without hidden layers.
    head: Box<dyn Model>,
}

impl Mlp {
    /// Its last layer with the layers below frozen at `theta`. InputError for a network without
    /// hidden layers (its last layer is the whole model).
    pub fn last_layer(&self, theta: ArrayView1<f64>) -> Result<LastLayer> {
        self.check_theta(theta)?;
        let n_layers = self.n_layers();
        if n_layers < 2 {
            return Err(Error::Value { arg: "model", msg: "has no hidden layer: its last layer is the whole model".into() });
        }
        let (h, k) = (self.sizes[n_layers - 1], self.sizes[n_layers]);
        let head: Box<dyn Model> = if self.n_targets() == 1 && k == self.head.n_outputs() {
            Box::new(Glm::new(self.head, h))
        } else {
            Box::new(Mlp::new(vec![h, k], self.activation, self.head, Curvature::GaussNewton)?)
        };
        Ok(LastLayer { net: self.clone(), theta: theta.to_owned(), head })
    }
}

impl LastLayer {
    /// Where the last layer's block sits in the whole network's theta.
    pub fn range(&self) -> Range<usize> {
        self.net.layer_range(self.net.n_layers() - 1)
    }

    /// The rows' inputs to the last layer, phi(z_{L-1}) (B x h_{L-1}), by the frozen layers.
    fn features(&self, x: XView) -> Array2<f64> {
        let mut fw = self.net.forward(self.theta.view(), x);
        fw.a.pop().expect("a network with a hidden layer")
    }

    /// `f` of the block with its features in place of its inputs.
    fn on_features<R>(&self, data: &Batch, f: impl FnOnce(&Batch) -> R) -> R {
        let a = self.features(data.x);
        f(&Batch { x: XView::Dense(a.view()), y: data.y, w: data.w })
    }
}

impl Model for LastLayer {
    fn n_params(&self) -> usize {
        self.head.n_params()
    }
    fn n_features(&self) -> usize {
        self.net.n_features()
    }
    fn n_outputs(&self) -> usize {
        self.head.n_outputs()
    }
    fn penalty_mask(&self) -> Array1<f64> {
        self.head.penalty_mask()
    }
    fn null_space(&self, l2: f64) -> Option<Array2<f64>> {
        self.head.null_space(l2)
    }
    fn check_targets(&self, arg: &'static str, y: ArrayView2<f64>) -> Result<()> {
        self.head.check_targets(arg, y)
    }
    fn losses(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut1<f64>) {
        self.on_features(data, |b| self.head.losses(theta, b, out))
    }
    fn grads(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) {
        self.on_features(data, |b| self.head.grads(theta, b, out))
    }
    fn scores(&self, theta: ArrayView1<f64>, data: &Batch, vc: ArrayView2<f64>, bound: Option<QueryNorm>, scale: f64, out: ArrayViewMut2<f64>) -> bool {
        self.on_features(data, |b| self.head.scores(theta, b, vc, bound, scale, out))
    }
    fn predict(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>> {
        self.head.predict(theta, XView::Dense(self.features(x).view()), kind)
    }
    fn prediction_grads(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>> {
        self.head.prediction_grads(theta, XView::Dense(self.features(x).view()), kind)
    }
    fn output_hessians(&self, theta: ArrayView1<f64>, data: &Batch) -> Result<Array2<f64>> {
        self.on_features(data, |b| self.head.output_hessians(theta, b))
    }
    fn output_family(&self) -> Option<Family> {
        self.head.output_family()
    }
    fn loss_grad_sum(&self, theta: ArrayView1<f64>, data: &Batch) -> (f64, Array1<f64>) {
        self.on_features(data, |b| self.head.loss_grad_sum(theta, b))
    }
    fn hessian_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) {
        self.on_features(data, |b| self.head.hessian_sum(theta, b, out))
    }
    /// One panel up to 4096 parameters: every tile reruns the frozen layers' forward pass.
    fn hessian_panels(&self) -> Vec<Range<usize>> {
        match self.n_params() {
            #[allow(clippy::single_range_in_vec_init)] // one panel: the whole range
            p if p <= 4096 => vec![0..p],
            _ => self.head.hessian_panels(),
        }
    }
    fn hessian_tile_sum(&self, theta: ArrayView1<f64>, data: &Batch, rows: Range<usize>, cols: Range<usize>, out: ArrayViewMut2<f64>) {
        self.on_features(data, |b| self.head.hessian_tile_sum(theta, b, rows, cols, out))
    }
    /// The head's tiles leave parts to its finish (a multinomial head: the class blocks above
    /// the diagonal, by symmetry), on one panel as on its own.
    fn hessian_tiles_finish(&self, h: ArrayViewMut2<f64>) {
        self.head.hessian_tiles_finish(h)
    }
    fn hessian_factor_rows(&self) -> Option<usize> {
        self.head.hessian_factor_rows()
    }
    fn hessian_factor(&self, theta: ArrayView1<f64>, data: &Batch) -> Option<Array2<f64>> {
        self.on_features(data, |b| self.head.hessian_factor(theta, b))
    }
    fn hvp_sum(&self, theta: ArrayView1<f64>, data: &Batch, v: ArrayView2<f64>, out: ArrayViewMut2<f64>) {
        self.on_features(data, |b| self.head.hvp_sum(theta, b, v, out))
    }
    /// The head's diagonal (and class blocks), on the features: damping "auto" and Jacobi.
    fn preconditioning(&self) -> Option<&dyn Preconditioning> {
        self.head.preconditioning().map(|_| self as &dyn Preconditioning)
    }
}

impl Preconditioning for LastLayer {
    fn hessian_diag_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut1<f64>) {
        let head = self.head.preconditioning().expect("offered only when the head has it");
        self.on_features(data, |b| head.hessian_diag_sum(theta, b, out))
    }
    fn hessian_groups(&self) -> Option<Array2<usize>> {
        self.head.preconditioning().and_then(|head| head.hessian_groups())
    }
    fn hessian_blocks_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut3<f64>) {
        let head = self.head.preconditioning().expect("offered only when the head has it");
        self.on_features(data, |b| head.hessian_blocks_sum(theta, b, out))
    }
}
