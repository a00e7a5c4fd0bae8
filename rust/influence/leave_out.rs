//! Leave-out estimates: one Newton step from theta* on the objective with a training point (or a
//! group of points) removed, the approximate leave-one-out of statistics (Rad & Maleki 2020;
//! the "NS" estimator of Wilson, Kasy & Mackey 2020). Influence is the tangent of the response
//! at eps = 0; this is its value at eps = -w, to second order instead of first.
//!
//! Removing the rows G (eps_i = w_i / W, eps_G = sum eps_i) from L_w gives an objective whose
//! gradient and Hessian at theta* are, up to the positive factor W / (W - w_G),
//!     -sum_G eps_i (g_i + pi)   and   M_G = A - eps_G P - sum_G eps_i J_i^T Lambda_i J_i,
//! with A the matrix influence solves with (H + damping I), pi = 2 l2 coef*_masked and
//! P = 2 l2 mask (both zero for sum-of-losses objectives, whose penalty does not renormalise),
//! J_i (k x p) the Jacobian of row i's k outputs and Lambda_i (k x k) the Hessian of its loss in
//! them (g_i = J_i^T rho_i). The step is Delta_G = M_G^{-1} sum_G eps_i (g_i + pi): exact for
//! squared loss (the objective is quadratic), and for networks the Gauss-Newton version.
//!
//! The penalty makes the update full rank, but P is one matrix for every point up to the scalar
//! eps_G: with A and P diagonalised together once (B^T A B = I, B^T P B = D,
//! [`crate::linalg::congruent_diagonalization`]), (A - e P)^{-1} = B (I - e D)^{-1} B^T for every
//! e, and what is left is Woodbury of rank k |G|. In B's coordinates (J^ = J B, v^ = B^T v):
//!     Delta_G = B u,  u = Dm (v^ + J^^T C z),  (I - K C) z = J^ Dm v^,
//!     Dm = (I - eps_G D)^{-1},  K = J^ Dm J^^T,  C = diag(eps_i Lambda_i),
//!     v^ = sum_G eps_i (J^_i^T rho_i + B^T pi).
//! A test point's outputs move by J_t Delta = (J_t B) u: one matrix product per block of training
//! rows, after which its loss (or mean response) is evaluated at the moved outputs, not
//! linearised. When every positive weight is equal (the common case) the basis is simply
//! (A - eps P) = L L^T, B = L^{-T}, D = 0: one Cholesky instead of an eigendecomposition.

use std::sync::OnceLock;

use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

use super::{Index, Influence, Points, TopK};
use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::{gather, with_block, Batch, Rows, Table};
use crate::error::{check_overflow, Error, Result};
use crate::linalg::{congruent_diagonalization, gemm};
use crate::models::glm::Family;
use crate::models::Prediction;
use crate::solvers::{Method, DIRECT_KEEP_H_MAX_P};

/// One group's parameter change and, with test points, the change of each test loss.
type GroupResult = (Array1<f64>, Option<Array1<f64>>);

/// What a leave-out estimate reports about each test point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaveOutTarget {
    /// l(z_t; theta_(-m)) - l(z_t; theta*): one value per test point.
    Loss,
    /// The change of the k linear predictors (outputs).
    Linear,
    /// The change of the k mean responses.
    Mean,
}

/// B, D of the congruent diagonalisation of (A - eps0 P, P), and B^T pi.
pub(super) struct Removal {
    /// `None`: no basis (p too large for p x p matrices under the CG solver): every removal is
    /// one CG solve of the left-out curvature, and "B-coordinates" are plain coordinates
    basis: Option<Array2<f64>>,
    d: Array1<f64>,
    /// the basis diagonalises A - eps0 P: a removal of total eps uses (I - (eps - eps0) D)^{-1}
    eps0: f64,
    penalty: Array1<f64>,
}

/// The two bases an influence may build (each at most once): for single points when every
/// positive weight is equal (a Cholesky), and the general one (an eigendecomposition).
#[derive(Default)]
pub(super) struct RemovalCache {
    uniform: OnceLock<Removal>,
    general: OnceLock<Removal>,
}

/// Rows per block of single-point removals: the block's Jacobian (B k x p) near 4M values, a
/// function of p and k only (results do not depend on the thread count).
fn removal_block_rows(k: usize, p: usize) -> usize {
    ((4 << 20) / (k * p).max(1)).clamp(1, BLOCK_ROWS)
}

/// Per row of a block: the Jacobian in B's coordinates and the outer derivatives.
struct Removed {
    /// J^ ((b k) x p), row i k + c for output c of row i
    jhat: Array2<f64>,
    /// dl/dh (b x k)
    rho: Array2<f64>,
    /// d2l/dh2 (b x k x k)
    lambda: ndarray::Array3<f64>,
    /// eps_i = w_i / W
    eps: Vec<f64>,
    /// the outputs h (b x k) and targets, for held-out losses
    h: Array2<f64>,
    y: Array2<f64>,
}

impl Influence {
    fn family(&self) -> Result<Family> {
        self.model.output_family().ok_or_else(|| Error::Value {
            arg: "model",
            msg: "leave-out estimates need a model with a loss in its outputs (a GLM or a network), not per-example gradients".into(),
        })
    }

    /// The removal basis: for single points with equal positive weights (`general` = false) the
    /// Cholesky one, else the eigendecomposition; built once.
    fn removal(&self, general: bool, cancel: &Cancel) -> Result<&Removal> {
        if matches!(self.method(), Method::Arnoldi | Method::Kfac | Method::Ekfac) {
            return Err(Error::Value {
                arg: "solver",
                msg: "leave-out estimates are exact one-step Newton refits: build the influence with solver='direct' or 'cg', not an \
                      approximate curvature (solver='arnoldi', curvature='kfac' or 'ekfac')"
                    .into(),
            });
        }
        let w0 = self.data.w().and_then(|w| {
            let mut pos = w.iter().copied().filter(|&v| v > 0.0);
            let first = pos.next()?;
            pos.all(|v| v == first).then_some(first)
        });
        let uniform = match self.data.w() {
            None => Some(1.0),
            Some(_) => w0,
        };
        let p_diag: Array1<f64> = if self.renormalize { self.model.penalty_mask() * (2.0 * self.l2) } else { Array1::zeros(self.n_params()) };
        let no_penalty = p_diag.iter().all(|&v| v == 0.0);
        let (lock, eps0) = match (general || uniform.is_none()) && !no_penalty {
            false => (&self.removal.uniform, if no_penalty { 0.0 } else { uniform.expect("uniform") / self.total_weight }),
            true => (&self.removal.general, 0.0),
        };
        if let Some(r) = lock.get() {
            return Ok(r);
        }
        let p = self.n_params();
        if self.method() == Method::Cg && p > DIRECT_KEEP_H_MAX_P {
            let _ = lock.set(Removal { basis: None, d: Array1::zeros(p), eps0: 0.0, penalty: self.penalty_grad.clone() });
            return Ok(lock.get().expect("just set"));
        }
        crate::memory::check("the leave-out basis (three p x p matrices)", &[3, p, p], 8)?;
        let mut a = self.solver.operator(&self.objective(), self.theta.view(), cancel)?;
        let (basis, d) = if eps0 > 0.0 || no_penalty {
            a.diag_mut().zip_mut_with(&p_diag, |v, pd| *v -= eps0 * pd);
            congruent_diagonalization(a.view(), Array1::zeros(p).view())?
        } else {
            congruent_diagonalization(a.view(), p_diag.view())?
        };
        check_overflow("the leave-out basis", basis.iter())?;
        let penalty = basis.t().dot(&self.penalty_grad);
        let d = if eps0 > 0.0 || no_penalty { Array1::zeros(p) } else { d };
        let _ = lock.set(Removal { basis: Some(basis), d, eps0, penalty });
        Ok(lock.get().expect("just set"))
    }

    /// J B for the Jacobian J of the linear predictors at the rows of `x` (J without a basis).
    fn jacobian_in(&self, rem: &Removal, x: crate::data::XView) -> Result<Array2<f64>> {
        match &rem.basis {
            Some(b) => self.model.linear_jacobian_times(self.theta.view(), x, b.view()),
            None => self.model.prediction_grads(self.theta.view(), x, Prediction::Linear),
        }
    }

    /// Delta (or u = B^T-coordinates of it) as a p-vector for the rows `u` stands for.
    fn to_params(rem: &Removal, u: Array1<f64>) -> Array1<f64> {
        match &rem.basis {
            Some(b) => b.dot(&u),
            None => u,
        }
    }

    /// J^, rho, Lambda and eps of the rows of `b`.
    fn removal_rows(&self, rem: &Removal, family: Family, b: &Batch) -> Result<Removed> {
        let k = self.model.n_outputs();
        let theta = self.theta.view();
        let jhat = self.jacobian_in(rem, b.x)?;
        let h = self.model.predict(theta, b.x, Prediction::Linear)?;
        let (n, y) = (b.n(), b.y.to_owned());
        let mut rho = Array2::zeros((n, k));
        let mut lambda = ndarray::Array3::zeros((n, k, k));
        for i in 0..n {
            let mut r = rho.row_mut(i);
            let mut l = lambda.index_axis_mut(Axis(0), i);
            family.residual_and_hessian_row(
                h.row(i).as_slice().expect("contiguous"),
                y.row(i).as_slice().expect("contiguous"),
                r.as_slice_mut().expect("contiguous"),
                Some(l.as_slice_mut().expect("contiguous")),
            );
        }
        let eps = (0..n).map(|i| b.weight(i) / self.total_weight).collect();
        Ok(Removed { jhat, rho, lambda, eps, h, y })
    }

    /// u (B-coordinates of Delta) for removing the rows `members` of `rows` together.
    fn removal_step(&self, rem: &Removal, rows: &Removed, members: std::ops::Range<usize>, cancel: &Cancel) -> Result<Array1<f64>> {
        let (p, k) = (self.n_params(), self.model.n_outputs());
        let eps: &[f64] = &rows.eps[members.clone()];
        let eps_g: f64 = eps.iter().sum();
        if eps_g == 0.0 {
            return Ok(Array1::zeros(p));
        }
        if eps_g >= 1.0 - 1e-12 {
            return Err(Error::Value { arg: "groups", msg: "leaving out every training point (all the weight) leaves nothing to fit".into() });
        }
        if rem.basis.is_none() {
            return self.removal_step_iterative(rows, members, eps_g, cancel);
        }
        let mut dm = Array1::zeros(p);
        for (o, &dj) in dm.iter_mut().zip(&rem.d) {
            let t = 1.0 - (eps_g - rem.eps0) * dj;
            if !(t > 1e-12) {
                return Err(singular(&members));
            }
            *o = 1.0 / t;
        }
        let jh = rows.jhat.slice(s![members.start * k..members.end * k, ..]);
        // v^ = sum eps_i (J^_i^T rho_i + B^T pi)
        let mut v = &rem.penalty * eps_g;
        for (a, i) in members.clone().enumerate() {
            for c in 0..k {
                v.scaled_add(eps[a] * rows.rho[[i, c]], &jh.row(a * k + c));
            }
        }
        let y = &dm * &v;
        let r = jh.nrows();
        // a big group: solve (Dm^{-1} - J^^T C J^) u = v^ directly (p x p) rather than Woodbury (r x r)
        if r > p {
            return self.removal_step_dense(rows, members, &dm, &v, jh);
        }
        let jd = &jh * &dm; // J^ Dm
        let kmat = jd.dot(&jh.t()); // r x r
        let mut b = jh.dot(&y);
        // T = I - K C, C = diag(eps_i Lambda_i) block diagonal
        let mut t = Array2::<f64>::eye(r);
        for (a, i) in members.clone().enumerate() {
            let cl = rows.lambda.index_axis(Axis(0), i);
            for row in 0..r {
                for c1 in 0..k {
                    let mut acc = 0.0;
                    for c2 in 0..k {
                        acc += kmat[[row, a * k + c2]] * cl[[c2, c1]];
                    }
                    t[[row, a * k + c1]] -= eps[a] * acc;
                }
            }
        }
        solve_small(&mut t, &mut b).ok_or_else(|| singular(&members))?;
        // c = C z; u = Dm (v^ + J^^T c)
        let mut cz = Array1::zeros(r);
        for (a, i) in members.clone().enumerate() {
            let cl = rows.lambda.index_axis(Axis(0), i);
            for c1 in 0..k {
                cz[a * k + c1] = eps[a] * (0..k).map(|c2| cl[[c1, c2]] * b[a * k + c2]).sum::<f64>();
            }
        }
        let u = (&v + &jh.t().dot(&cz)) * &dm;
        Ok(u)
    }

    /// Delta for removing `members` by one CG solve of the left-out curvature
    /// (A - eps_G P - J^T C J) Delta = sum eps_i (g_i + pi), matrix-free.
    fn removal_step_iterative(&self, rows: &Removed, members: std::ops::Range<usize>, eps_g: f64, cancel: &Cancel) -> Result<Array1<f64>> {
        let (p, k) = (self.n_params(), self.model.n_outputs());
        let jh = rows.jhat.slice(s![members.start * k..members.end * k, ..]);
        let mut v = &self.penalty_grad * eps_g;
        let mut c = Array2::<f64>::zeros((jh.nrows(), jh.nrows()));
        for (a, i) in members.clone().enumerate() {
            for c1 in 0..k {
                v.scaled_add(rows.eps[i] * rows.rho[[i, c1]], &jh.row(a * k + c1));
                for c2 in 0..k {
                    c[[a * k + c1, a * k + c2]] = rows.eps[i] * rows.lambda[[i, c1, c2]];
                }
            }
        }
        let p_diag: Array1<f64> = if self.renormalize { self.model.penalty_mask() * (2.0 * self.l2 * eps_g) } else { Array1::zeros(p) };
        let correction = |x: ArrayView2<f64>| -> Array2<f64> {
            let mut out = jh.t().dot(&c.dot(&jh.dot(&x)));
            out += &(&x * &p_diag.view().insert_axis(Axis(1)));
            out
        };
        let mut b = v.insert_axis(Axis(1));
        let info = self.solver.solve_corrected_in_place(&self.objective(), self.theta.view(), b.view_mut(), &self.opts.cg, &correction, cancel)?;
        if !info.converged[0] {
            return Err(Error::Singular {
                msg: format!(
                    "conjugate gradients on the objective without the point(s) stopped at relative residual {:.1e} after {} \
                     iterations: it may have no unique minimiser; raise max_iter or add damping",
                    info.residuals[0], info.iterations[0]
                ),
            });
        }
        Ok(b.index_axis_move(Axis(1), 0))
    }

    fn removal_step_dense(
        &self,
        rows: &Removed,
        members: std::ops::Range<usize>,
        dm: &Array1<f64>,
        v: &Array1<f64>,
        jh: ArrayView2<f64>,
    ) -> Result<Array1<f64>> {
        let k = self.model.n_outputs();
        let mut cj = jh.to_owned(); // C J^
        for (a, i) in members.clone().enumerate() {
            let cl = rows.lambda.index_axis(Axis(0), i).mapv(|x| x * rows.eps[i]);
            let block = cl.dot(&jh.slice(s![a * k..(a + 1) * k, ..]));
            cj.slice_mut(s![a * k..(a + 1) * k, ..]).assign(&block);
        }
        let mut m = -jh.t().dot(&cj);
        m.diag_mut().zip_mut_with(dm, |x, d| *x += 1.0 / d);
        let chol = crate::linalg::Cholesky::factor(m.view()).map_err(|_| singular(&members))?;
        let mut u = v.clone().insert_axis(Axis(1));
        chol.solve_in_place(u.view_mut());
        Ok(u.index_axis_move(Axis(1), 0))
    }

    /// Run `f` on each block of the training rows `points` selects, with the block's first index
    /// (among those rows), its removal rows and u ((b x p), one row per point).
    fn for_each_removal_block<F>(&self, points: &Points, cancel: &Cancel, f: F) -> Result<()>
    where
        F: Fn(&Index, usize, &Removed, &Array2<f64>) -> Result<()> + Sync,
    {
        if let Points::Other(_) = points {
            return Err(Error::Value { arg: "points", msg: "leave-out estimates are for training points".into() });
        }
        let family = self.family()?;
        let rem = self.removal(false, cancel)?;
        let (p, k) = (self.n_params(), self.model.n_outputs());
        self.with_points(points, |rows, index| {
            cancel.begin(rows.n());
            blocks(rows.n(), removal_block_rows(k, p)).into_par_iter().try_for_each(|r| {
                cancel.check()?;
                let (start, len) = (r.start, r.len());
                let rr = with_block(rows, r, |b| self.removal_rows(rem, family, b))??;
                let mut u = Array2::zeros((len, p));
                for i in 0..len {
                    u.row_mut(i).assign(&self.removal_step(rem, &rr, i..i + 1, cancel).map_err(|e| at_point(e, index.absolute(start + i)))?);
                }
                f(&index, start, &rr, &u)?;
                cancel.advance(len);
                Ok(())
            })
        })
    }

    /// theta_(-m) - theta* by one Newton step, for every row of `points` (training rows): (n x p).
    pub fn loo_params(&self, points: Points, cancel: &Cancel) -> Result<Array2<f64>> {
        let n = self.count(&points);
        let out = std::sync::Mutex::new(crate::memory::zeros("the leave-out parameters", (n, self.n_params()))?);
        let basis = &self.removal(false, cancel)?.basis;
        self.for_each_removal_block(&points, cancel, |_, start, _, u| {
            let mut delta = u.clone();
            if let Some(basis) = basis {
                gemm(delta.view_mut(), false, u.view(), basis.t(), 1.0);
            }
            out.lock().expect("no panics while held").slice_mut(s![start..start + u.nrows(), ..]).assign(&delta);
            Ok(())
        })?;
        let out = out.into_inner().expect("no panics while held");
        check_overflow("the leave-out parameters", out.iter())?;
        Ok(out)
    }

    /// Each row's own loss at its leave-one-out parameters, l(z_m; theta_(-m)) (the held-out
    /// losses of approximate leave-one-out cross-validation), and at theta*: (n x 2).
    pub fn loo_self_losses(&self, points: Points, cancel: &Cancel) -> Result<Array2<f64>> {
        let n = self.count(&points);
        let k = self.model.n_outputs();
        let family = self.family()?;
        let out = std::sync::Mutex::new(Array2::zeros((n, 2)));
        self.for_each_removal_block(&points, cancel, |_, start, rr, u| {
            let mut vals = Array2::zeros((u.nrows(), 2));
            for i in 0..u.nrows() {
                let dh = rr.jhat.slice(s![i * k..(i + 1) * k, ..]).dot(&u.row(i));
                let (h0, y) = (rr.h.row(i), rr.y.row(i));
                let y = y.as_slice().expect("contiguous");
                let h = &h0 + &dh;
                vals[[i, 0]] = family.loss_row(h.as_slice().expect("contiguous"), y);
                vals[[i, 1]] = family.loss_row(h0.as_slice().expect("contiguous"), y);
            }
            out.lock().expect("no panics while held").slice_mut(s![start..start + u.nrows(), ..]).assign(&vals);
            Ok(())
        })?;
        let out = out.into_inner().expect("no panics while held");
        check_overflow("the held-out losses", out.iter())?;
        Ok(out)
    }

    /// The test side of a leave-out query: (J_t B) ((q k) x p), the outputs h_t (q x k) and targets.
    fn loo_queries(&self, test: &Table, target: LeaveOutTarget, cancel: &Cancel) -> Result<(Array2<f64>, Array2<f64>, Array2<f64>)> {
        let rem = self.removal(false, cancel)?;
        self.loo_queries_with(test, target, rem)
    }

    /// How each test point's loss (or outputs) would change if each row of `points` were left
    /// out (one Newton step): (q x n) for [`LeaveOutTarget::Loss`], ((q k) x n) otherwise, row
    /// t k + c for output c of test point t.
    pub fn loo_on(&self, test: &Table, target: LeaveOutTarget, points: Points, cancel: &Cancel) -> Result<Array2<f64>> {
        let family = self.family()?;
        let (qhat, h, y) = self.loo_queries(test, target, cancel)?;
        let k = self.model.n_outputs();
        let rows_out = if target == LeaveOutTarget::Loss { test.n() } else { test.n() * k };
        let n = self.count(&points);
        let out = std::sync::Mutex::new(crate::memory::zeros("the leave-out scores", (rows_out, n))?);
        self.for_each_removal_block(&points, cancel, |_, start, _, u| {
            let block = moved(family, target, &qhat, &h, &y, u.view());
            out.lock().expect("no panics while held").slice_mut(s![.., start..start + u.nrows()]).assign(&block);
            Ok(())
        })?;
        let out = out.into_inner().expect("no panics while held");
        check_overflow("the leave-out scores", out.iter())?;
        Ok(out)
    }

    /// For each test point, the `k` training rows whose removal would most raise its loss
    /// ("helpful", largest change first) and most lower it ("harmful", most negative first),
    /// streamed over the rows of `points` (all, or a segment): the q x n matrix is never held.
    pub fn loo_top_k(&self, test: &Table, k: usize, points: Points, cancel: &Cancel) -> Result<TopK> {
        if let Points::Rows(_) | Points::Other(_) = points {
            return Err(Error::Value { arg: "points", msg: "leave-out top-k streams over all training rows or a segment".into() });
        }
        let family = self.family()?;
        let (qhat, h, y) = self.loo_queries(test, LeaveOutTarget::Loss, cancel)?;
        let offset = match points {
            Points::Range(a, _) => a,
            _ => 0,
        };
        let rem = self.removal(false, cancel)?;
        let p = self.n_params();
        let kk = self.model.n_outputs();
        let seg = match points {
            Points::Range(a, b) => Some(crate::data::Segment::new(&self.data, a, b)?),
            _ => None,
        };
        let rows: &dyn Rows = match &seg {
            Some(s) => s,
            None => &self.data,
        };
        let mut top = super::top_k::select(rows.n(), test.n(), k, removal_block_rows(kk, p), cancel, |r, mut out| {
            let len = r.len();
            let rr = with_block(rows, r.clone(), |b| self.removal_rows(rem, family, b))??;
            let mut u = Array2::zeros((len, p));
            for i in 0..len {
                u.row_mut(i).assign(&self.removal_step(rem, &rr, i..i + 1, cancel).map_err(|e| at_point(e, offset + r.start + i))?);
            }
            // selection keeps the most negative as "helpful": feed minus the loss change
            let block = moved(family, LeaveOutTarget::Loss, &qhat, &h, &y, u.view());
            out.assign(&block.t().mapv(|v| -v));
            Ok(())
        })?;
        for v in top.helpful.iter_mut().chain(top.harmful.iter_mut()) {
            *v = -*v;
        }
        for i in top.helpful_idx.iter_mut().chain(top.harmful_idx.iter_mut()) {
            *i += offset;
        }
        Ok(top)
    }

    /// Leave each group of training rows out together (one Newton step with a rank k |G| update):
    /// theta_(-G) - theta* (n_groups x p) and, with `test`, the change of each test loss
    /// (q x n_groups).
    pub fn leave_out(&self, groups: &[Vec<usize>], test: Option<&Table>, cancel: &Cancel) -> Result<(Array2<f64>, Option<Array2<f64>>)> {
        let family = self.family()?;
        let n = self.data.n();
        for (g, idx) in groups.iter().enumerate() {
            if let Some(&bad) = idx.iter().find(|&&i| i >= n) {
                return Err(Error::Value { arg: "groups", msg: format!("group {g} holds index {bad}, out of range for {n} training points") });
            }
            let mut sorted = idx.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                return Err(Error::Value { arg: "groups", msg: format!("group {g} holds an index twice") });
            }
        }
        let rem = self.removal(true, cancel)?;
        let queries = test.map(|t| self.loo_queries_with(t, LeaveOutTarget::Loss, rem)).transpose()?;
        let p = self.n_params();
        cancel.begin(groups.len());
        let parts: Vec<Result<GroupResult>> = groups
            .par_iter()
            .enumerate()
            .map(|(g, idx)| {
                cancel.check()?;
                let u = if idx.is_empty() {
                    Array1::zeros(p)
                } else {
                    let rows = gather(&self.data, idx)?;
                    let rr = with_block(&rows, 0..idx.len(), |b| self.removal_rows(rem, family, b))??;
                    self.removal_step(rem, &rr, 0..idx.len(), cancel).map_err(|e| match e {
                        Error::Singular { msg } => Error::Singular { msg: format!("group {g}: {msg}") },
                        e => e,
                    })?
                };
                let delta = Self::to_params(rem, u.clone());
                let losses =
                    queries.as_ref().map(|(qhat, h, y)| moved(family, LeaveOutTarget::Loss, qhat, h, y, u.view().insert_axis(Axis(0))).column(0).to_owned());
                cancel.advance(1);
                Ok((delta, losses))
            })
            .collect();
        let mut params = Array2::zeros((groups.len(), p));
        let mut losses = test.map(|t| Array2::zeros((t.n(), groups.len())));
        for (g, part) in parts.into_iter().enumerate() {
            let (d, l) = part?;
            params.row_mut(g).assign(&d);
            if let (Some(out), Some(l)) = (losses.as_mut(), l) {
                out.column_mut(g).assign(&l);
            }
        }
        check_overflow("the leave-out parameters", params.iter())?;
        Ok((params, losses))
    }

    /// [`Influence::loo_queries`] in the basis `rem`.
    fn loo_queries_with(&self, test: &Table, target: LeaveOutTarget, rem: &Removal) -> Result<(Array2<f64>, Array2<f64>, Array2<f64>)> {
        if target == LeaveOutTarget::Loss {
            self.check_points(test)?;
        } else if test.d() != self.model.n_features() {
            let msg = format!("has {} columns but the model has {} features", test.d(), self.model.n_features());
            return Err(Error::Shape { arg: test.names().x, msg });
        }
        let theta = self.theta.view();
        with_block(test, 0..test.n(), |b| -> Result<_> {
            let q = self.jacobian_in(rem, b.x)?;
            Ok((q, self.model.predict(theta, b.x, Prediction::Linear)?, b.y.to_owned()))
        })?
    }

    /// Number of rows `points` selects.
    fn count(&self, points: &Points) -> usize {
        match *points {
            Points::Train => self.data.n(),
            Points::Range(a, b) => b.saturating_sub(a),
            Points::Rows(idx) => idx.len(),
            Points::Other(t) => t.n(),
        }
    }
}

/// The change of each test point's target quantity when the parameters move by B u for each
/// row of `u` (b x p): (q x b) for the loss, ((q k) x b) for outputs.
fn moved(family: Family, target: LeaveOutTarget, qhat: &Array2<f64>, h: &Array2<f64>, y: &Array2<f64>, u: ArrayView2<f64>) -> Array2<f64> {
    let (q, k) = h.dim();
    let mut dh = Array2::zeros((qhat.nrows(), u.nrows()));
    gemm(dh.view_mut(), false, qhat.view(), u.t(), 1.0);
    match target {
        LeaveOutTarget::Linear => dh,
        LeaveOutTarget::Loss if k == 1 => {
            // one output: each test point's changes are one contiguous row of dh
            let mut out = Array2::zeros((q, u.nrows()));
            for (t, (mut o, d)) in out.rows_mut().into_iter().zip(dh.rows()).enumerate() {
                let (ht, yt) = (h[[t, 0]], y.row(t));
                let yt = yt.as_slice().expect("contiguous");
                let base = family.loss_row(&[ht], yt);
                o.iter_mut().zip(d).for_each(|(o, &d)| *o = family.loss_row(&[ht + d], yt) - base);
            }
            out
        }
        LeaveOutTarget::Loss => {
            let mut out = Array2::zeros((q, u.nrows()));
            let mut moved = vec![0.0; k];
            for t in 0..q {
                let (ht, yt) = (h.row(t), y.row(t));
                let (ht, yt) = (ht.as_slice().expect("contiguous"), yt.as_slice().expect("contiguous"));
                let base = family.loss_row(ht, yt);
                for m in 0..u.nrows() {
                    for c in 0..k {
                        moved[c] = ht[c] + dh[[t * k + c, m]];
                    }
                    out[[t, m]] = family.loss_row(&moved, yt) - base;
                }
            }
            out
        }
        LeaveOutTarget::Mean => {
            let mut out = Array2::zeros(dh.raw_dim());
            let (mut moved, mut mean, mut base) = (vec![0.0; k], vec![0.0; k], vec![0.0; k]);
            for t in 0..q {
                let ht = h.row(t);
                let ht = ht.as_slice().expect("contiguous");
                family.mean(ht, &mut base);
                for m in 0..u.nrows() {
                    for c in 0..k {
                        moved[c] = ht[c] + dh[[t * k + c, m]];
                    }
                    family.mean(&moved, &mut mean);
                    for c in 0..k {
                        out[[t * k + c, m]] = mean[c] - base[c];
                    }
                }
            }
            out
        }
    }
}

/// Solve T z = b in place (b becomes z) by Gaussian elimination with partial pivoting; `None`
/// when a pivot is below 1e-12 (T = I - K C has eigenvalues in (0, 1] when the objective
/// without the rows still has a unique minimiser, so the threshold is scale-free).
fn solve_small(t: &mut Array2<f64>, b: &mut Array1<f64>) -> Option<()> {
    let r = b.len();
    for col in 0..r {
        let piv = (col..r).max_by(|&i, &j| t[[i, col]].abs().total_cmp(&t[[j, col]].abs()))?;
        if !(t[[piv, col]].abs() > 1e-12) {
            return None;
        }
        if piv != col {
            for c in 0..r {
                t.swap([piv, c], [col, c]);
            }
            b.swap(piv, col);
        }
        let d = t[[col, col]];
        for i in col + 1..r {
            let f = t[[i, col]] / d;
            if f != 0.0 {
                for c in col..r {
                    t[[i, c]] -= f * t[[col, c]];
                }
                b[i] -= f * b[col];
            }
        }
    }
    for col in (0..r).rev() {
        let s: f64 = (col + 1..r).map(|c| t[[col, c]] * b[c]).sum();
        b[col] = (b[col] - s) / t[[col, col]];
    }
    b.iter().all(|v| v.is_finite()).then_some(())
}

fn singular(members: &std::ops::Range<usize>) -> Error {
    let what = if members.len() == 1 { "the point".to_string() } else { format!("these {} points", members.len()) };
    Error::Singular {
        msg: format!(
            "leaving out {what} leaves an objective with no unique minimiser (the other points do not determine every \
             parameter: leverage 1); use l2 > 0 or damping > 0"
        ),
    }
}

fn at_point(e: Error, m: usize) -> Error {
    match e {
        Error::Singular { msg } => Error::Singular { msg: format!("training point {m}: {msg}") },
        e => e,
    }
}
