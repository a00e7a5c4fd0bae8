//! Fitting: weighted Newton's method with backtracking line search, stopping on the gradient
//! norm, exact refits with changed weights ([`refit`]), and for networks L-BFGS ([`lbfgs`]) and seeded
//! mini-batch Adam ([`adam`]).

pub mod adam;
pub mod lbfgs;
pub mod refit;

use ndarray::{Array1, Array2, ArrayView1, Axis};

use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::with_block;
use crate::error::{check_finite, check_overflow, Error, Result};
use crate::models::{Model, Prediction};
use crate::objective::{Curvature, Objective, TILED_HESSIAN_MAX_ROW_BLOCK_P};
use crate::solvers::{CgOptions, Method, Precondition, Prepared};

#[derive(Clone, Debug)]
pub struct FitOptions {
    /// Stop when the largest absolute entry of the gradient of L_w is at most this, or when
    /// the Newton decrement reached rounding level (a scale-invariant stop; see [`newton`]).
    pub tol: f64,
    pub max_iter: usize,
    /// How each Newton step H s = -g is solved: `Direct` forms H (O(n p^2) per step); `Cg` is
    /// truncated Newton-CG on Hessian-vector products (O(n p) per CG iteration, H never formed).
    pub method: Method,
    /// Report how far the last step moved the fit ([`FitResult::moved`]; one more pass).
    pub report_move: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { tol: 1e-10, max_iter: 100, method: Method::Direct, report_move: false }
    }
}

#[derive(Clone, Debug)]
pub struct FitResult {
    pub theta: Array1<f64>,
    /// Newton steps taken.
    pub n_iter: usize,
    /// max |grad L_w(theta)| at the returned theta.
    pub grad_norm: f64,
    pub converged: bool,
    pub objective: f64,
    /// The last step taken (theta minus the previous iterate), if any. A finite optimum's
    /// steps shrink quadratically; a fit that diverges (separated classes) keeps taking steps
    /// that move some linear predictor by about 1: what callers check for divergence.
    pub last_step: Option<Array1<f64>>,
    /// With [`FitOptions::report_move`] and a step taken: [`largest_move`] of the last step.
    pub moved: Option<(usize, f64)>,
}

/// How far `step` moves the fit: the largest |change of a linear predictor| (any output) over
/// the rows of positive weight, and its row. At a finite optimum Newton's last step moves no
/// point by more than rounding; when the loss has no finite minimiser (separated classes, a
/// feature nonzero only on points fitted perfectly) every step still moves some point by about 1.
pub fn largest_move<M: Model + ?Sized>(obj: &Objective<M>, step: ArrayView1<f64>, cancel: &Cancel) -> Result<(usize, f64)> {
    let mut best = (0, 0.0_f64);
    for r in blocks(obj.data.n(), BLOCK_ROWS) {
        cancel.check()?;
        let start = r.start;
        let (eta, w) = with_block(obj.data, r, |b| (obj.model.predict(step, b.x, Prediction::Linear), (0..b.n()).map(|i| b.weight(i)).collect::<Vec<_>>()))?;
        for (i, (row, wi)) in eta?.rows().into_iter().zip(w).enumerate() {
            let m = row.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            if wi > 0.0 && m > best.1 {
                best = (start + i, m);
            }
        }
    }
    Ok(best)
}

pub(crate) fn inf_norm(v: &Array1<f64>) -> f64 {
    v.iter().fold(0.0_f64, |m, x| m.max(x.abs()))
}

/// Minimise the objective from `theta0` (warm start) or from zero.
///
/// Each step solves H s = -g with the null-space augmented Cholesky (`solvers::Direct`), so
/// iterates stay in the identifiable subspace; theta0 is first projected onto it.
pub fn newton<M: Model + ?Sized>(obj: &Objective<M>, theta0: Option<ArrayView1<f64>>, opts: &FitOptions, cancel: &Cancel) -> Result<FitResult> {
    if !(opts.tol >= 0.0) {
        return Err(Error::Value { arg: "tol", msg: format!("must be >= 0, got {}", opts.tol) });
    }
    if matches!(opts.method, Method::Arnoldi | Method::Kfac | Method::Ekfac) {
        return Err(Error::Value { arg: "solver", msg: "Newton steps need an exact solve: 'direct' or 'cg'".into() });
    }
    let p = obj.n_params();
    let null = obj.model.null_space(obj.l2);
    let mut theta = match theta0 {
        Some(t) => {
            if t.len() != p {
                return Err(Error::Shape { arg: "theta0", msg: format!("has {} entries, expected {p}", t.len()) });
            }
            check_finite("theta0", t.iter())?;
            let mut t = t.to_owned();
            if let Some(nb) = &null {
                // remove the component along the flat directions
                let coeffs = nb.t().dot(&t);
                t -= &nb.dot(&coeffs);
            }
            t
        }
        None => Array1::zeros(p),
    };
    // One pass per step: the value and gradient at a trial point come with the curvature the
    // next step needs (the Hessian, or for Newton-CG its diagonal), so an accepted full step
    // costs one pass over the data. Not for direct steps in the tiled-Hessian range, where a
    // Hessian costs far more than a pass and the last trial's (never used) would cost more than
    // the passes saved. Every evaluation is bitwise equal to the separate passes.
    let fuse = opts.method == Method::Cg || p <= TILED_HESSIAN_MAX_ROW_BLOCK_P;
    let curvature = match opts.method {
        Method::Direct => Curvature::Hessian,
        Method::Cg | Method::Arnoldi | Method::Kfac | Method::Ekfac => Curvature::Diagonal,
    };
    let first = obj.evaluate(theta.view(), if fuse { curvature } else { Curvature::None }, cancel)?;
    let (mut f, mut g, mut curv) = (first.value, first.grad, Curv::of(first.hessian, first.diag, fuse));
    check_overflow("the objective at the starting point", std::iter::once(&f).chain(g.iter()))?;
    let tol = opts.tol;
    let mut n_iter = 0;
    let mut at_rounding_level = false;
    let mut last_step = None;
    while inf_norm(&g) > tol && n_iter < opts.max_iter {
        cancel.check()?;
        let step = newton_step(obj, theta.view(), &g, null.as_ref(), opts.method, curv.take(), cancel)?;
        let slope = g.dot(&step); // negative: a descent direction
        n_iter += 1;
        // Near the optimum the decrease is below the rounding of f: take the full step.
        // Stop if that no longer shrinks the gradient: it is at the level of rounding error.
        // -slope is the Newton decrement g^T H^-1 g, which rescaling the features leaves
        // unchanged (the gradient norm does not): an optimum found to rounding level is
        // converged whatever the units, although max |g| may stay above an absolute `tol`.
        if -slope <= 1e-14 * (1.0 + f.abs()) {
            let trial = &theta + &step;
            let (ft, gt) = obj.value_grad(trial.view(), cancel)?;
            if inf_norm(&gt) >= inf_norm(&g) {
                at_rounding_level = true;
                break;
            }
            (theta, f, g, last_step) = (trial, ft, gt, Some(step));
            continue;
        }
        let mut t = 1.0;
        loop {
            let trial = &theta + &(&step * t);
            // the full step brings its curvature; a shortened one is rarely the last
            let fused = fuse && t == 1.0;
            let e = obj.evaluate(trial.view(), if fused { curvature } else { Curvature::None }, cancel)?;
            let (ft, gt) = (e.value, e.grad);
            // (a trial point whose gradient overflows is no better than one whose value does)
            if ft.is_finite() && ft <= f + 1e-4 * t * slope && gt.iter().all(|v| v.is_finite()) {
                (theta, f, g, last_step) = (trial, ft, gt, Some(&step * t));
                curv = Curv::of(e.hessian, e.diag, fused);
                break;
            }
            t *= 0.5;
            if t < 1e-12 {
                // no decrease along the Newton direction: stop and report
                return finish(theta, f, g, n_iter, false, last_step).and_then(|r| with_move(obj, r, opts, cancel));
            }
        }
    }
    let converged = inf_norm(&g) <= tol || at_rounding_level;
    if opts.method == Method::Direct && obj.l2 == 0.0 && n_iter == 0 {
        // a start that is already stationary took no step, so H was never factored: without a
        // penalty the optimum may not be unique (more parameters than points, say), and a
        // fit must refuse then as it does when a step factors H
        let h = match curv.take() {
            Curv::Hessian(h) => h,
            _ => obj.hessian(theta.view(), cancel)?,
        };
        Prepared::direct(h, 0.0, null.clone(), cancel)?;
    }
    if opts.method == Method::Cg && obj.l2 == 0.0 {
        // Newton-CG converges on a singular Hessian (to one of many optima), where the direct
        // steps' factorisation refuses: refuse the same way
        let solver = Prepared::cg(obj, theta.view(), obj.hessian_diag(theta.view(), cancel)?, None, 0.0, Precondition::Jacobi, cancel)?;
        solver.check_nonsingular(obj, theta.view(), &CgOptions::default(), cancel)?;
    }
    finish(theta, f, g, n_iter, converged, last_step).and_then(|r| with_move(obj, r, opts, cancel))
}

fn with_move<M: Model + ?Sized>(obj: &Objective<M>, mut res: FitResult, opts: &FitOptions, cancel: &Cancel) -> Result<FitResult> {
    if opts.report_move {
        if let Some(step) = &res.last_step {
            res.moved = Some(largest_move(obj, step.view(), cancel)?);
        }
    }
    Ok(res)
}

/// The result at the last accepted iterate, which is checked for overflow: a fit never returns
/// Ok with a non-finite theta, objective or gradient.
pub(crate) fn finish(theta: Array1<f64>, f: f64, g: Array1<f64>, n_iter: usize, converged: bool, last_step: Option<Array1<f64>>) -> Result<FitResult> {
    check_overflow("the fitted parameters", theta.iter().chain(g.iter()).chain(std::iter::once(&f)))?;
    Ok(FitResult { grad_norm: inf_norm(&g), converged, objective: f, theta, n_iter, last_step, moved: None })
}

/// The curvature at the current iterate from the pass that evaluated it, if it was fused.
enum Curv {
    None,
    Hessian(Array2<f64>),
    Diagonal(Option<Array1<f64>>),
}

impl Curv {
    fn of(hessian: Option<Array2<f64>>, diag: Option<Array1<f64>>, fused: bool) -> Self {
        match (fused, hessian) {
            (false, _) => Curv::None,
            (true, Some(h)) => Curv::Hessian(h),
            (true, None) => Curv::Diagonal(diag),
        }
    }
    fn take(&mut self) -> Self {
        std::mem::replace(self, Curv::None)
    }
}

/// The Newton direction -H^{-1} g, with the curvature at theta if it was already computed. With
/// `Cg`, CG runs to the Eisenstat-Walker forcing tolerance
/// min(0.5, sqrt(||g||)) relative to ||g||: loose far from the optimum, tight near it
/// (superlinear convergence), and any truncated CG iterate from zero is a descent direction.
fn newton_step<M: Model + ?Sized>(
    obj: &Objective<M>,
    theta: ArrayView1<f64>,
    g: &Array1<f64>,
    null: Option<&ndarray::Array2<f64>>,
    method: Method,
    curv: Curv,
    cancel: &Cancel,
) -> Result<Array1<f64>> {
    let mut x = g.clone().insert_axis(Axis(1));
    let solver = match (method, curv) {
        (Method::Direct, Curv::Hessian(h)) => Prepared::direct(h, 0.0, null.cloned(), cancel)?,
        (Method::Direct, _) => Prepared::direct(obj.hessian(theta, cancel)?, 0.0, null.cloned(), cancel)?,
        (Method::Cg, Curv::Diagonal(diag)) => Prepared::cg(obj, theta, diag, None, 0.0, Precondition::Jacobi, cancel)?,
        (_, _) => Prepared::cg(obj, theta, obj.hessian_diag(theta, cancel)?, None, 0.0, Precondition::Jacobi, cancel)?,
    };
    let gnorm = g.dot(g).sqrt();
    let cg = CgOptions { rtol: gnorm.sqrt().min(0.5), atol: 0.0, max_iter: 500, precondition: Precondition::Jacobi };
    solver.solve_in_place(obj, theta, x.view_mut(), &cg, true, cancel)?;
    Ok(-x.remove_axis(Axis(1)))
}
