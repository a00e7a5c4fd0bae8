//! The proximal Bregman response function (Bae et al. 2022), weighted and renormalised
//! (DESIGN-networks.md section 3): for training point m and eps,
//!
//!   theta_b(eps) = argmin (1/(W+eps)) [sum_i w_i D_i + eps (l_m + c . theta)]
//!                  + l2 ||M (theta - theta_s)||^2 + (lam/2) ||theta - theta_s||^2,
//!
//! D_i = l(h_i) - l(h_i(theta_s)) - dl/dh(theta_s) . (h_i - h_i(theta_s)) and c = 2 l2 M theta_s
//! (the penalty term of I(z_m); zero when influence is not renormalised). theta_b(0) = theta_s
//! and d theta_b / d eps (0) = I(z_m) with the damped Gauss-Newton curvature, at any theta_s.
//! Solved from theta_s by Newton's method with exact Hessian-vector products (the R-operator
//! with the Bregman residuals dl/dh - dl/dh(theta_s) as its second-order term) in conjugate
//! gradients, preconditioned by the exact Hessian *at theta_s*,
//!   A = (W G_data + eps Hess l_m) / (W + eps) + 2 l2 M + lam I
//! (Hess D_i = J_i^T Lambda_i J_i there, because dl/dh = dl/dh(theta_s)), formed once (G_data
//! is shared by every point and eps) and factored once per (m, eps). The Hessian moves from A
//! by O(|theta - theta_s|) = O(|eps| / W), so a few CG iterations per step suffice and the
//! steps converge quadratically to the exact minimiser.

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

/// Conjugate-gradient iterations per Newton step (each one exact product; preconditioned by the
/// Hessian at theta_s, a few suffice).
const PBRF_CG_MAX_ITER: usize = 50;

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
                let yi = super::targets(&b.y, i);
                let d = net.head.loss_row(hi.as_slice().expect("contiguous"), &yi) - net.head.loss_row(h0i.as_slice().expect("contiguous"), &yi) - lin;
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

    /// The objective's Hessian at theta_s from `g_data` = G_data(theta_s) (the unpenalised
    /// Gauss-Newton matrix, shared by every point and eps), with the point's exact Hessian
    /// (`curvature` = Hessian) or its Gauss-Newton part.
    fn hessian_at_s(&self, g_data: &Array2<f64>, curvature: Curvature) -> Result<Array2<f64>> {
        let p = self.net.n_params();
        let mut hm = Array2::zeros((p, p));
        with_block(&self.point, 0..1, |b| {
            self.net.with_curvature(curvature).hessian_tile_sum(self.theta_s, &Batch { w: None, ..*b }, 0..p, 0..p, hm.view_mut())
        })?;
        crate::linalg::symmetrize_from_lower(&mut hm);
        let (w, eps) = (self.total_weight, self.eps);
        // one pass, in place: this p x p combination runs once per point and eps
        let mut a = g_data.clone();
        a.zip_mut_with(&hm, |x, &h| *x = (*x * w + h * eps) / (w + eps));
        for j in 0..p {
            a[[j, j]] += 2.0 * self.l2 * self.mask[j] + self.damping;
        }
        Ok(a)
    }

    /// (Hess F) v at theta, exactly: the R-operator with the Bregman residuals
    /// dl/dh - dl/dh(theta_s) as the second-order term, plus eps Hess l_m v and the penalties.
    fn hvp(&self, theta: ArrayView1<f64>, v: &Array1<f64>, cancel: &Cancel) -> Result<Array1<f64>> {
        let net = self.net;
        let p = net.n_params();
        let v2 = v.view().insert_axis(ndarray::Axis(1));
        let mut hv = map_reduce(
            self.data.n(),
            64,
            cancel,
            |r| {
                with_block(self.data, r, |b| {
                    let fw = net.forward(theta, b.x);
                    let head = net.head(&fw, b.y, true);
                    let hs = net.head(&net.forward(self.theta_s, b.x), b.y, false);
                    let u = pass::weighted(&(&head.res - &hs.res), b);
                    let mut out = Array2::zeros((p, 1));
                    net.curvature_sum_with(theta, b, &fw, head.lambda.as_ref().expect("requested"), Some(u), v2, out.view_mut());
                    out
                })
            },
            |a, b| *a += &b,
        )?
        .expect("data has rows");
        with_block(&self.point, 0..1, |b| {
            let mut hm = Array2::zeros((p, 1));
            net.with_curvature(Curvature::Hessian).hvp_sum(theta, &Batch { w: None, ..*b }, v2, hm.view_mut());
            hv.scaled_add(self.eps, &hm);
        })?;
        let hv = hv.remove_axis(ndarray::Axis(1)) / (self.total_weight + self.eps);
        Ok(hv + &(&self.mask * v * (2.0 * self.l2)) + &(v * self.damping))
    }

    /// The Newton direction (Hess F)^{-1} g by conjugate gradients on exact products,
    /// preconditioned by the factored Hessian at theta_s (`precondition`: r -> A^{-1} r), to
    /// the relative residual min(0.1, sqrt(|g|)); on negative curvature (F not convex here),
    /// the preconditioned gradient A^{-1} g, a descent direction all the same.
    fn newton_direction(
        &self,
        theta: ArrayView1<f64>,
        g: &Array1<f64>,
        precondition: impl Fn(&Array1<f64>) -> Result<Array1<f64>>,
        cancel: &Cancel,
    ) -> Result<Array1<f64>> {
        let gnorm = g.dot(g).sqrt();
        let rtol = gnorm.sqrt().min(0.1);
        let mut x = Array1::zeros(g.len());
        let mut r = g.clone();
        let mut z = precondition(&r)?;
        let fallback = z.clone();
        let mut d = z.clone();
        let mut rz = r.dot(&z);
        for _ in 0..PBRF_CG_MAX_ITER {
            let hd = self.hvp(theta, &d, cancel)?;
            let curvature = d.dot(&hd);
            if !(curvature > 0.0) {
                return Ok(if x.iter().all(|v| *v == 0.0) { fallback } else { x });
            }
            let alpha = rz / curvature;
            x.scaled_add(alpha, &d);
            r.scaled_add(-alpha, &hd);
            if r.dot(&r).sqrt() <= rtol * gnorm {
                break;
            }
            z = precondition(&r)?;
            let rz_next = r.dot(&z);
            d = &z + &(&d * (rz_next / rz));
            rz = rz_next;
        }
        Ok(x)
    }

    /// theta_b(eps) by Newton from theta_s (module docs) to max |grad F| <= tol (or rounding
    /// level), with a backtracking line search on F.
    pub fn solve(&self, g_data: &Array2<f64>, tol: f64, max_iter: usize, cancel: &Cancel) -> Result<FitResult> {
        let null = if self.damping == 0.0 { self.net.null_space(self.l2) } else { None };
        // the exact Hessian at theta_s; where eps Hess l_m makes it indefinite (removing a point
        // whose loss is not convex there), the Gauss-Newton part of the point's term: any
        // positive definite matrix gives descent steps to the same minimiser, only more of them
        // (Ctrl-C is checked between the p x p steps, each well under a second at p ~ 3000)
        cancel.check()?;
        let hessian = self.hessian_at_s(g_data, Curvature::Hessian)?;
        cancel.check()?;
        let solver = match Prepared::direct(hessian, 0.0, null.clone(), cancel) {
            Err(Error::Singular { .. }) => {
                cancel.check()?;
                Prepared::direct(self.hessian_at_s(g_data, Curvature::GaussNewton)?, 0.0, null, cancel)?
            }
            other => other?,
        };
        cancel.check()?;
        let obj = Objective::validated(self.net, self.data, self.l2, self.total_weight);
        let mut theta = self.theta_s.to_owned();
        let (mut f, mut g) = self.value_grad(theta.view(), cancel)?;
        let (mut n_iter, mut stalled, mut last_step) = (0, false, None);
        while inf_norm(&g) > tol && n_iter < max_iter {
            cancel.check()?;
            let precondition = |r: &Array1<f64>| -> Result<Array1<f64>> {
                let mut x = r.clone().insert_axis(ndarray::Axis(1));
                solver.solve_in_place(&obj, theta.view(), x.view_mut(), &Default::default(), true, cancel)?;
                Ok(x.remove_axis(ndarray::Axis(1)))
            };
            let step = -self.newton_direction(theta.view(), &g, precondition, cancel)?;
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
