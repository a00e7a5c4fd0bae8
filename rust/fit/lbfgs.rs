//! L-BFGS for objectives without a convex curvature (networks): the two-loop recursion
//! (Nocedal & Wright, algorithm 7.4) with the initial scaling gamma = s^T y / y^T y and a
//! backtracking Armijo line search; a pair (s, y) enters the memory only when s^T y > 0, so the
//! implicit inverse Hessian stays positive definite and every direction is a descent direction.
//! Deterministic: each evaluation is the objective's fixed-order reduction.

use std::collections::VecDeque;

use ndarray::{Array1, ArrayView1};

use super::{finish, inf_norm, FitResult};
use crate::cancel::Cancel;
use crate::error::{check_finite, check_overflow, Error, Result};
use crate::models::Model;
use crate::objective::Objective;

#[derive(Clone, Debug)]
pub struct LbfgsOptions {
    /// Stop when max |grad L_w| <= tol.
    pub tol: f64,
    pub max_iter: usize,
    /// Number of (s, y) pairs kept.
    pub memory: usize,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        Self { tol: 1e-6, max_iter: 1000, memory: 10 }
    }
}

/// Minimise the objective from `theta0`. `converged` is false after `max_iter` iterations or
/// when the line search finds no decrease (rounding level), at the best point found.
pub fn lbfgs<M: Model + ?Sized>(obj: &Objective<M>, theta0: ArrayView1<f64>, opts: &LbfgsOptions, cancel: &Cancel) -> Result<FitResult> {
    if !(opts.tol >= 0.0) {
        return Err(Error::Value { arg: "tol", msg: format!("must be >= 0, got {}", opts.tol) });
    }
    if opts.memory == 0 {
        return Err(Error::Value { arg: "memory", msg: "must be >= 1".into() });
    }
    let p = obj.n_params();
    if theta0.len() != p {
        return Err(Error::Shape { arg: "theta0", msg: format!("has {} entries, expected {p}", theta0.len()) });
    }
    check_finite("theta0", theta0.iter())?;
    let mut theta = theta0.to_owned();
    let (mut f, mut g) = obj.value_grad(theta.view(), cancel)?;
    check_overflow("the objective at the starting point", std::iter::once(&f).chain(g.iter()))?;
    let mut pairs: VecDeque<(Array1<f64>, Array1<f64>, f64)> = VecDeque::with_capacity(opts.memory);
    let mut n_iter = 0;
    let mut last_step = None;
    while inf_norm(&g) > opts.tol && n_iter < opts.max_iter {
        cancel.check()?;
        let mut dir = -two_loop(&g, &pairs);
        let mut slope = g.dot(&dir);
        if !(slope < 0.0) {
            // (cannot happen with s^T y > 0, but rounding): restart from steepest descent
            pairs.clear();
            dir = -&g;
            slope = g.dot(&dir);
        }
        // without curvature information, a first step of length 1 in the largest entry
        let mut t = if pairs.is_empty() { 1.0 / inf_norm(&g).max(1.0) } else { 1.0 };
        n_iter += 1;
        let accepted = loop {
            let trial = &theta + &(&dir * t);
            let (ft, gt) = obj.value_grad(trial.view(), cancel)?;
            if ft.is_finite() && ft <= f + 1e-4 * t * slope && gt.iter().all(|v| v.is_finite()) {
                break Some((trial, ft, gt));
            }
            t *= 0.5;
            if t < 1e-20 {
                break None;
            }
        };
        let Some((trial, ft, gt)) = accepted else { break };
        let s = &trial - &theta;
        let y = &gt - &g;
        let sy = s.dot(&y);
        if sy > 1e-12 * s.dot(&s).sqrt() * y.dot(&y).sqrt() {
            if pairs.len() == opts.memory {
                pairs.pop_front();
            }
            pairs.push_back((s.clone(), y, 1.0 / sy));
        }
        let decrease = f - ft;
        (theta, f, g, last_step) = (trial, ft, gt, Some(s));
        if decrease <= 1e-16 * f.abs().max(1e-300) && pairs.is_empty() {
            break; // no progress even along the gradient: rounding level
        }
    }
    let converged = inf_norm(&g) <= opts.tol;
    finish(theta, f, g, n_iter, converged, last_step)
}

/// H_k g by the two-loop recursion over `pairs` (oldest first), H_0 = gamma I.
fn two_loop(g: &Array1<f64>, pairs: &VecDeque<(Array1<f64>, Array1<f64>, f64)>) -> Array1<f64> {
    let mut q = g.clone();
    let mut alpha = vec![0.0; pairs.len()];
    for (i, (s, y, rho)) in pairs.iter().enumerate().rev() {
        alpha[i] = rho * s.dot(&q);
        q.scaled_add(-alpha[i], y);
    }
    if let Some((s, y, _)) = pairs.back() {
        q *= s.dot(y) / y.dot(y);
    }
    for (i, (s, y, rho)) in pairs.iter().enumerate() {
        let beta = rho * y.dot(&q);
        q.scaled_add(alpha[i] - beta, s);
    }
    q
}
