//! Exact influence (DESIGN.md sections 1 and 4):
//!
//!   I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W
//!
//! and the influence of every training point on a function f with gradient grad f:
//!   grad f . I(z_m) = -(g_m . V_f + c_f) / W,   V_f = H^{-1} grad f,  c_f = 2 l2 coef_masked . V_f
//! so scoring q functions is q solves then one matrix product per block of training rows.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};
use rayon::prelude::*;

use crate::blocks::BLOCK_ROWS;
use crate::cancel::Cancel;
use crate::data::Dataset;
use crate::error::{check_finite, Error, Result};
use crate::model::Model;
use crate::objective::Objective;
use crate::solvers::Direct;

/// The factored Hessian at a fitted theta, ready to answer influence queries about the
/// training set it was built from.
pub struct Influence {
    theta: Array1<f64>,
    /// 2 l2 coef*_masked
    penalty_grad: Array1<f64>,
    total_weight: f64,
    grad_norm: f64,
    solver: Direct,
}

impl Influence {
    /// Form and factor the Hessian of `obj` at `theta`.
    pub fn new<M: Model + ?Sized>(obj: &Objective<M>, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Self> {
        let (_, grad) = obj.value_grad(theta, cancel)?;
        let h = obj.hessian(theta, cancel)?;
        let null = obj.model.null_space(obj.l2);
        let solver = Direct::new(h, null.as_ref().map(|n| n.view()))?;
        Ok(Self {
            theta: theta.to_owned(),
            penalty_grad: obj.penalty_grad(theta),
            total_weight: obj.total_weight(),
            grad_norm: grad.iter().fold(0.0_f64, |m, g| m.max(g.abs())),
            solver,
        })
    }

    pub fn theta(&self) -> ArrayView1<'_, f64> {
        self.theta.view()
    }
    pub fn n_params(&self) -> usize {
        self.theta.len()
    }
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }
    /// max |grad L_w| at theta: influence is exact only at an optimum, where this is ~0.
    pub fn grad_norm(&self) -> f64 {
        self.grad_norm
    }

    /// H^{-1} g for the columns of `g` (p x r).
    pub fn inverse_hvp(&self, g: ArrayView2<f64>) -> Result<Array2<f64>> {
        self.check_width("g", g.nrows())?;
        check_finite("g", g.iter())?;
        Ok(self.solver.solve(g))
    }

    fn check_width(&self, arg: &'static str, p: usize) -> Result<()> {
        if p != self.n_params() {
            return Err(Error::Shape { arg, msg: format!("has {p} parameters per row, expected {}", self.n_params()) });
        }
        Ok(())
    }

    fn check_points<M: Model + ?Sized>(&self, model: &M, arg: &'static str, points: &Dataset) -> Result<()> {
        if points.d() != model.n_features() {
            return Err(Error::Shape {
                arg,
                msg: format!("has {} columns but the model has {} features", points.d(), model.n_features()),
            });
        }
        self.check_width("model", model.n_params())?;
        model.check_targets(if arg == "X" { "y" } else { "y_test" }, points.y)
    }

    /// Run `f` on each block of output rows together with the matching rows of `points`;
    /// blocks run in parallel.
    fn for_each_grad_block<F>(&self, points: &Dataset, cancel: &Cancel, out: &mut Array2<f64>, f: F) -> Result<()>
    where
        F: Fn(&mut ndarray::ArrayViewMut2<f64>, &Dataset) + Sync,
    {
        out.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS).into_par_iter().enumerate().try_for_each(|(b, mut chunk)| {
            cancel.check()?;
            let start = b * BLOCK_ROWS;
            let block = points.rows(start, start + chunk.nrows());
            f(&mut chunk, &block);
            Ok(())
        })
    }

    /// I(z) for every row of `points` (training rows or new points): (n_points x p).
    pub fn params<M: Model + ?Sized>(&self, model: &M, points: &Dataset, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_points(model, "X", points)?;
        let p = self.n_params();
        let mut out = Array2::zeros((points.n(), p));
        let scale = -1.0 / self.total_weight;
        self.for_each_grad_block(points, cancel, &mut out, |chunk, block| {
            model.grads(self.theta.view(), block, chunk.view_mut());
            *chunk += &self.penalty_grad;
            // rows of the block are right-hand sides: solve on the transposed view
            self.solver.chol_solve_in_place(chunk.view_mut().reversed_axes());
            *chunk *= scale;
        })?;
        Ok(out)
    }

    /// Self-influence g_m . I(z_m) of every row of `points`: (n_points,).
    pub fn self_influence<M: Model + ?Sized>(&self, model: &M, points: &Dataset, cancel: &Cancel) -> Result<Array1<f64>> {
        self.check_points(model, "X", points)?;
        let p = self.n_params();
        let scale = -1.0 / self.total_weight;
        let mut out = Array1::zeros(points.n());
        out.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS).into_par_iter().enumerate().try_for_each(|(b, mut chunk)| {
            cancel.check()?;
            let start = b * BLOCK_ROWS;
            let block = points.rows(start, start + chunk.len());
            let mut g = Array2::zeros((block.n(), p));
            model.grads(self.theta.view(), &block, g.view_mut());
            let mut v = &g + &self.penalty_grad;
            self.solver.chol_solve_in_place(v.view_mut().reversed_axes());
            for (o, (gi, vi)) in chunk.iter_mut().zip(g.rows().into_iter().zip(v.rows())) {
                *o = scale * gi.dot(&vi);
            }
            Ok::<(), Error>(())
        })?;
        Ok(out)
    }

    /// Influence of every training point on functions f_j given their gradients at theta*
    /// (`grad_f`, r x p): S (r x n), S[j, m] = grad f_j . I(z_m).
    pub fn on<M: Model + ?Sized>(&self, model: &M, train: &Dataset, grad_f: ArrayView2<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_points(model, "X", train)?;
        self.check_width("grad_f", grad_f.ncols())?;
        check_finite("grad_f", grad_f.iter())?;
        let v = self.solver.solve(grad_f.t());
        let c = v.t().dot(&self.penalty_grad);
        let scale = -1.0 / self.total_weight;
        // S is filled as S^T (n x r, row blocks contiguous), so each block's product writes a
        // column-major (r x B) destination, the layout faer is fastest with; returned as (r x n).
        let mut st = Array2::zeros((train.n(), grad_f.nrows()));
        let cb = c.view().insert_axis(Axis(0));
        st.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS).into_par_iter().enumerate().try_for_each(|(b, mut chunk)| {
            cancel.check()?;
            let start = b * BLOCK_ROWS;
            let block = train.rows(start, start + chunk.nrows());
            model.grads_dot(self.theta.view(), &block, v.view(), chunk.view_mut().reversed_axes());
            Zip::from(&mut chunk).and_broadcast(&cb).for_each(|x, &cj| *x = scale * (*x + cj));
            Ok::<(), Error>(())
        })?;
        Ok(st.reversed_axes())
    }

    /// Score matrix S (q x n): S[t, m] = grad l(z_t) . I(z_m), influence of training point m on
    /// the loss at test point t.
    pub fn on_loss<M: Model + ?Sized>(&self, model: &M, train: &Dataset, test: &Dataset, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_points(model, "X_test", test)?;
        let mut g = Array2::zeros((test.n(), self.n_params()));
        model.grads(self.theta.view(), test, g.view_mut());
        self.on(model, train, g.view(), cancel)
    }
}
