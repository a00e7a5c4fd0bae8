//! The proximal Bregman response function (Bae et al. 2022), weighted and renormalised
//! (DESIGN-networks.md section 3): for training point m and eps,
//!
//!   theta_b(eps) = argmin (1/(W+eps)) [sum_i w_i D_i + eps (l_m + c . theta)]
//!                  + l2 ||M (theta - theta_s)||^2 + (lam/2) ||theta - theta_s||^2,
//!
//! D_i = l(h_i) - l(h_i(theta_s)) - dl/dh(theta_s) . (h_i - h_i(theta_s)) and c = 2 l2 M theta_s
//! (the penalty term of I(z_m); zero when influence is not renormalised). theta_b(0) = theta_s
//! and d theta_b / d eps (0) = I(z_m) with the damped Gauss-Newton curvature, at any theta_s.
//! Solved from theta_s by simplified Newton: every step uses the exact Hessian *at theta_s*,
//!   A = (W G_data + eps Hess l_m) / (W + eps) + 2 l2 M + lam I
//! (Hess D_i = J_i^T Lambda_i J_i there, because dl/dh = dl/dh(theta_s)), formed once
//! (G_data is shared by every point and eps) and factored once per (m, eps). The objective's
//! Hessian moves from A by O(|theta - theta_s|) = O(|eps| / W), so the iteration converges
//! linearly at that small rate, to the exact minimiser (the gradient of the true objective is
//! what is driven to zero), at the cost of one pass over the data per step.

use ndarray::{Array1, Array2, ArrayView1};

use super::{pass, Curvature, Mlp};
use crate::blocks::map_reduce;
use crate::cancel::Cancel;
use crate::data::{gather, with_block, Batch, Rows};
use crate::error::{check_finite, check_overflow, Error, Result};
use crate::fit::{inf_norm, FitResult};
use crate::models::Model;
use crate::objective::Objective;
use crate::solvers::Prepared;

/// The PBRF objective of one training point, ready to minimise.
pub struct Pbrf<'a> {
    net: &'a Mlp,
    data: &'a dyn Rows,
    theta_s: ArrayView1<'a, f64>,
    l2: f64,
    damping: f64,
    /// c = 2 l2 M theta_s, or zero
    penalty_grad: Array1<f64>,
    mask: Array1<f64>,
    total_weight: f64,
    /// the row of point m as a table of its own (weight 1)
    point: crate::data::Table,
    eps: f64,
}

impl<'a> Pbrf<'a> {
    /// The PBRF of training row `m` at `eps`; `renormalize` as for influence (the term c).
    #[allow(clippy::too_many_arguments)]
    pub fn new(net: &'a Mlp, data: &'a dyn Rows, theta_s: ArrayView1<'a, f64>, l2: f64, damping: f64, renormalize: bool, m: usize, eps: f64) -> Result<Self> {
        let obj = Objective::new(net, data, l2)?;
        if theta_s.len() != net.n_params() {
            return Err(Error::Shape { arg: "theta", msg: format!("has {} entries, expected {}", theta_s.len(), net.n_params()) });
        }
        check_finite("theta", theta_s.iter())?;
        if !(damping >= 0.0) || !damping.is_finite() {
            return Err(Error::Value { arg: "damping", msg: format!("must be a finite number >= 0, got {damping}") });
        }
        if m >= data.n() {
            return Err(Error::Value { arg: "m", msg: format!("is {m}, but the training set has {} rows", data.n()) });
        }
        let total_weight = obj.total_weight();
        if !eps.is_finite() || !(total_weight + eps > 0.0) {
            return Err(Error::Value { arg: "eps", msg: format!("must be finite with W + eps > 0 (W = {total_weight}), got {eps}") });
        }
        let penalty_grad = if renormalize { obj.penalty_grad(theta_s) } else { Array1::zeros(net.n_params()) };
        let point = gather(data, &[m])?;
        Ok(Self { net, data, theta_s, l2, damping, penalty_grad, mask: net.penalty_mask(), total_weight, point, eps })
    }

    /// Per block: (sum w_i D_i, sum w_i J_i^T (r_i - r_i^s)).
    fn bregman_block(&self, theta: ArrayView1<f64>, b: &Batch) -> (f64, Array1<f64>) {
        let net = self.net;
        let fw = net.forward(theta, b.x);
        let fs = net.forward(self.theta_s, b.x);
        let head = net.head(&fw, b.y, false);
        let hs = net.head(&fs, b.y, false);
        let (h, h0) = (fw.output(), fs.output());
        let mut value = 0.0;
        for i in 0..b.n() {
            let w = b.weight(i);
            if w != 0.0 {
                let (hi, h0i) = (h.row(i), h0.row(i));
                let lin: f64 = hs.res.row(i).iter().zip(hi.iter().zip(h0i.iter())).map(|(r, (a, c))| r * (a - c)).sum();
                let d = net.head.loss(hi.as_slice().expect("contiguous"), b.y[i]) - net.head.loss(h0i.as_slice().expect("contiguous"), b.y[i]) - lin;
                value += w * d;
            }
        }
        let s = net.backward(theta, &fw, pass::weighted(&(&head.res - &hs.res), b));
        let mut grad = Array1::zeros(net.n_params());
        net.add_grads(b.x, &fw, &s, grad.view_mut());
        (value, grad)
    }

    /// (F, grad F) at theta.
    pub fn value_grad(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>)> {
        let (mut v, mut g) = map_reduce(
            self.data.n(),
            64,
            cancel,
            |r| with_block(self.data, r, |b| self.bregman_block(theta, b)),
            |a, b| {
                a.0 += b.0;
                a.1 += &b.1;
            },
        )?
        .expect("data has rows");
        // eps (l_m + c . theta): the point's own loss and gradient (weight 1: eps is its added weight)
        let (lm, gm) = with_block(&self.point, 0..1, |b| self.net.loss_grad_sum(theta, &Batch { w: None, ..*b }))?;
        let (eps, scale) = (self.eps, 1.0 / (self.total_weight + self.eps));
        v += eps * (lm + self.penalty_grad.dot(&theta));
        g += &((&gm + &self.penalty_grad) * eps);
        let delta = &theta - &self.theta_s;
        let md = &self.mask * &delta;
        let value = scale * v + self.l2 * md.dot(&md) + 0.5 * self.damping * delta.dot(&delta);
        Ok((value, g * scale + &md * (2.0 * self.l2) + &delta * self.damping))
    }

    /// The objective's exact Hessian at theta_s from `g_data` = G_data(theta_s) (the
    /// unpenalised Gauss-Newton matrix, shared by every point and eps).
    fn hessian_at_s(&self, g_data: &Array2<f64>) -> Result<Array2<f64>> {
        let p = self.net.n_params();
        let mut hm = Array2::zeros((p, p));
        with_block(&self.point, 0..1, |b| {
            self.net.with_curvature(Curvature::Hessian).hessian_tile_sum(self.theta_s, &Batch { w: None, ..*b }, 0..p, 0..p, hm.view_mut())
        })?;
        let (w, eps) = (self.total_weight, self.eps);
        let mut a = (g_data * w + &hm * eps) / (w + eps);
        for j in 0..p {
            a[[j, j]] += 2.0 * self.l2 * self.mask[j] + self.damping;
        }
        Ok(a)
    }

    /// theta_b(eps) by simplified Newton from theta_s (module docs) to max |grad F| <= tol (or
    /// rounding level), with a backtracking line search on F.
    pub fn solve(&self, g_data: &Array2<f64>, tol: f64, max_iter: usize, cancel: &Cancel) -> Result<FitResult> {
        let null = if self.damping == 0.0 { self.net.null_space(self.l2) } else { None };
        let solver = Prepared::direct(self.hessian_at_s(g_data)?, 0.0, null)?;
        let obj = Objective::validated(self.net, self.data, self.l2, self.total_weight);
        let mut theta = self.theta_s.to_owned();
        let (mut f, mut g) = self.value_grad(theta.view(), cancel)?;
        let (mut n_iter, mut stalled, mut last_step) = (0, false, None);
        while inf_norm(&g) > tol && n_iter < max_iter {
            cancel.check()?;
            let mut x = g.clone().insert_axis(ndarray::Axis(1));
            solver.solve_in_place(&obj, theta.view(), x.view_mut(), &Default::default(), true, cancel)?;
            let step = -x.remove_axis(ndarray::Axis(1));
            let slope = g.dot(&step);
            n_iter += 1;
            // near the solution the decrease is below the rounding of F: accept a step that
            // shrinks the gradient
            let small = -slope <= 1e-14 * (1.0 + f.abs());
            let mut t = 1.0;
            let accepted = loop {
                let trial = &theta + &(&step * t);
                let (ft, gt) = self.value_grad(trial.view(), cancel)?;
                if ft.is_finite() && (ft <= f + 1e-4 * t * slope || (small && inf_norm(&gt) < inf_norm(&g))) {
                    break Some((trial, ft, gt));
                }
                t *= 0.5;
                if t < 1e-12 || small {
                    break None;
                }
            };
            let Some((trial, ft, gt)) = accepted else {
                stalled = true;
                break;
            };
            last_step = Some(&trial - &theta);
            (theta, f, g) = (trial, ft, gt);
        }
        check_overflow("the PBRF parameters", theta.iter().chain(g.iter()))?;
        let grad_norm = inf_norm(&g);
        let converged = grad_norm <= tol || (stalled && n_iter > 0);
        Ok(FitResult { theta, n_iter, grad_norm, converged, objective: f, last_step, moved: None })
    }
}

/// theta_b(eps) - theta_s for every point of `points` and every eps of `eps`: row
/// j * len(eps) + e of the result (len(points) len(eps) x p), and whether each converged.
#[allow(clippy::too_many_arguments)]
pub fn pbrf_responses(
    net: &Mlp,
    data: &dyn Rows,
    theta_s: ArrayView1<f64>,
    l2: f64,
    damping: f64,
    renormalize: bool,
    points: &[usize],
    eps: &[f64],
    tol: f64,
    max_iter: usize,
    cancel: &Cancel,
) -> Result<(Array2<f64>, Vec<bool>)> {
    let gn = net.with_curvature(Curvature::GaussNewton);
    let g_data = Objective::new(&gn, data, 0.0)?.hessian(theta_s, cancel)?;
    let mut out = Array2::zeros((points.len() * eps.len(), net.n_params()));
    let mut converged = Vec::with_capacity(out.nrows());
    for (j, &m) in points.iter().enumerate() {
        for (e, &ep) in eps.iter().enumerate() {
            let res = Pbrf::new(net, data, theta_s, l2, damping, renormalize, m, ep)?.solve(&g_data, tol, max_iter, cancel)?;
            out.row_mut(j * eps.len() + e).assign(&(&res.theta - &theta_s));
            converged.push(res.converged);
        }
    }
    Ok((out, converged))
}
