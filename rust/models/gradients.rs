//! Bring your own gradients: a "model" whose features *are* the per-example gradients.
//!
//! Users with deep models (PyTorch, JAX) have per-example training gradients g_i (often randomly
//! projected, as TRAK and LoGra do) but no GLM. Row i of the data holds g_i, so every kernel is a
//! product with the data: the curvature is the empirical Fisher
//!   F = (1/W) sum_i w_i g_i g_i^T,
//! and the influence of point m is -F^{-1} g_m / W (or with an explicit Hessian supplied by the
//! caller). There is no penalty and no target; theta is not used.

use std::ops::Range;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis, Zip};

use super::{Float32Grads, Model, Preconditioning, Prediction};
use crate::data::{Batch, XView};
use crate::error::{Error, Result};
use crate::linalg::{gemm, gemm_lower};

#[derive(Clone, Copy, Debug)]
pub struct GradientModel {
    /// Number of parameters p (the width of the gradient rows).
    pub p: usize,
}

impl Model for GradientModel {
    fn n_params(&self) -> usize {
        self.p
    }
    fn n_features(&self) -> usize {
        self.p
    }
    fn n_outputs(&self) -> usize {
        1
    }
    fn penalty_mask(&self) -> Array1<f64> {
        Array1::zeros(self.p)
    }
    fn check_targets(&self, _arg: &'static str, _y: ArrayView2<f64>) -> Result<()> {
        Ok(())
    }
    /// No loss is known: the rows are gradients of a loss the caller evaluated elsewhere.
    fn losses(&self, _theta: ArrayView1<f64>, _data: &Batch, mut out: ArrayViewMut1<f64>) {
        out.fill(0.0);
    }
    fn grads(&self, _theta: ArrayView1<f64>, data: &Batch, mut out: ArrayViewMut2<f64>) {
        out.assign(&data.x.to_dense());
    }
    fn predict(&self, _theta: ArrayView1<f64>, _x: XView, _kind: Prediction) -> Result<Array2<f64>> {
        Err(no_predictions())
    }
    fn prediction_grads(&self, _theta: ArrayView1<f64>, _x: XView, _kind: Prediction) -> Result<Array2<f64>> {
        Err(no_predictions())
    }
    fn output_hessians(&self, _theta: ArrayView1<f64>, _data: &Batch) -> Result<Array2<f64>> {
        Err(no_predictions())
    }
    fn float32(&self) -> Option<&dyn Float32Grads> {
        Some(self)
    }
    fn preconditioning(&self) -> Option<&dyn Preconditioning> {
        Some(self)
    }
    /// (0, sum_i w_i g_i): the gradients are taken as given, at whatever point they were computed.
    fn loss_grad_sum(&self, _theta: ArrayView1<f64>, data: &Batch) -> (f64, Array1<f64>) {
        let w = Array1::from_shape_fn(data.n(), |i| data.weight(i));
        (0.0, data.x.to_dense().t().dot(&w))
    }
    fn hessian_sum(&self, _theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) {
        let x = data.x.to_dense();
        let mut wg = x.to_owned();
        for (i, mut row) in wg.rows_mut().into_iter().enumerate() {
            row *= data.weight(i);
        }
        gemm_lower(out, true, x.t(), wg.view(), 1.0);
    }
    /// G_I^T diag(w) G_J.
    fn hessian_tile_sum(&self, _theta: ArrayView1<f64>, data: &Batch, rows: Range<usize>, cols: Range<usize>, out: ArrayViewMut2<f64>) {
        let x = data.x.to_dense();
        let mut wg = x.slice(s![.., cols.clone()]).to_owned();
        for (i, mut row) in wg.rows_mut().into_iter().enumerate() {
            row *= data.weight(i);
        }
        let g = x.slice(s![.., rows.clone()]);
        if rows == cols {
            gemm_lower(out, true, g.t(), wg.view(), 1.0);
        } else {
            gemm(out, true, g.t(), wg.view(), 1.0);
        }
    }
    fn hvp_sum(&self, _theta: ArrayView1<f64>, data: &Batch, v: ArrayView2<f64>, out: ArrayViewMut2<f64>) {
        let mut gv = data.x.dot(v);
        for (i, mut row) in gv.axis_iter_mut(Axis(0)).enumerate() {
            row *= data.weight(i);
        }
        data.x.t_dot_add(gv.view(), out);
    }
}

fn no_predictions() -> Error {
    Error::Value { arg: "model", msg: "per-example gradients have no predictions (they are the rows of the data)".into() }
}

impl Float32Grads for GradientModel {
    fn grads_f32(&self, _theta: ArrayView1<f64>, x: ArrayView2<f32>, _y: ArrayView1<f64>, mut out: ArrayViewMut2<f32>) {
        out.assign(&x);
    }
}

impl Preconditioning for GradientModel {
    fn hessian_diag_sum(&self, _theta: ArrayView1<f64>, data: &Batch, mut out: ArrayViewMut1<f64>) {
        for (i, row) in data.x.to_dense().rows().into_iter().enumerate() {
            let w = data.weight(i);
            Zip::from(&mut out).and(&row).for_each(|o, &g| *o += w * g * g);
        }
    }
    fn hessian_groups(&self) -> Option<Array2<usize>> {
        None
    }
    fn hessian_blocks_sum(&self, _theta: ArrayView1<f64>, _data: &Batch, _out: ArrayViewMut3<f64>) {}
}
