//! Bring your own gradients: a "model" whose features *are* the per-example gradients.
//!
//! Users with deep models (PyTorch, JAX) have per-example training gradients g_i (often randomly
//! projected, as TRAK and LoGra do) but no GLM. Row i of the data holds g_i, so every kernel is a
//! product with the data: the curvature is the empirical Fisher
//!   F = (1/W) sum_i w_i g_i g_i^T,
//! and the influence of point m is -F^{-1} g_m / W (or with an explicit Hessian supplied by the
//! caller). There is no penalty and no target; theta is not used.

use std::ops::Range;

use ndarray::{s, Array1, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

use crate::data::Dataset;
use crate::error::Result;
use crate::linalg::{gemm, gemm_lower};
use crate::model::Model;

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
    fn penalty_mask(&self) -> Array1<f64> {
        Array1::zeros(self.p)
    }
    fn check_targets(&self, _arg: &'static str, _y: ArrayView1<f64>) -> Result<()> {
        Ok(())
    }
    /// No loss is known: the rows are gradients of a loss the caller evaluated elsewhere.
    fn losses(&self, _theta: ArrayView1<f64>, _data: &Dataset, mut out: ArrayViewMut1<f64>) {
        out.fill(0.0);
    }
    fn grads(&self, _theta: ArrayView1<f64>, data: &Dataset, mut out: ArrayViewMut2<f64>) {
        out.assign(&data.x.to_dense());
    }
    fn grads_f32(&self, _theta: ArrayView1<f64>, x: ndarray::ArrayView2<f32>, _y: ArrayView1<f64>, mut out: ArrayViewMut2<f32>) -> bool {
        out.assign(&x);
        true
    }
    /// (0, sum_i w_i g_i): the gradients are taken as given, at whatever point they were computed.
    fn loss_grad_sum(&self, _theta: ArrayView1<f64>, data: &Dataset) -> (f64, Array1<f64>) {
        let w = Array1::from_shape_fn(data.n(), |i| data.weight(i));
        (0.0, data.x.to_dense().t().dot(&w))
    }
    fn hessian_sum(&self, _theta: ArrayView1<f64>, data: &Dataset, out: ArrayViewMut2<f64>) {
        let x = data.x.to_dense();
        let mut wg = x.to_owned();
        for (i, mut row) in wg.rows_mut().into_iter().enumerate() {
            row *= data.weight(i);
        }
        gemm_lower(out, true, x.t(), wg.view(), 1.0);
    }
    /// G_I^T diag(w) G_J.
    fn hessian_tile_sum(&self, _theta: ArrayView1<f64>, data: &Dataset, rows: Range<usize>, cols: Range<usize>, out: ArrayViewMut2<f64>) {
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
    fn hessian_diag_sum(&self, _theta: ArrayView1<f64>, data: &Dataset, mut out: ArrayViewMut1<f64>) -> bool {
        for (i, row) in data.x.to_dense().rows().into_iter().enumerate() {
            let w = data.weight(i);
            Zip::from(&mut out).and(&row).for_each(|o, &g| *o += w * g * g);
        }
        true
    }
    fn hvp_sum(&self, _theta: ArrayView1<f64>, data: &Dataset, v: ArrayView2<f64>, out: ArrayViewMut2<f64>) {
        let mut gv = data.x.dot(v);
        for (i, mut row) in gv.axis_iter_mut(Axis(0)).enumerate() {
            row *= data.weight(i);
        }
        data.x.t_dot_add(gv.view(), out);
    }
}
