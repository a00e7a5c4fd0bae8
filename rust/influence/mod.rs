//! Exact influence (DESIGN.md sections 1 and 4):
//!
//!   I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W
//!
//! and the influence of every training point on a function f with gradient grad f:
//!   grad f . I(z_m) = -(g_m . V_f + c_f) / W,   V_f = H^{-1} grad f,  c_f = 2 l2 coef_masked . V_f
//! so scoring q functions is q solves then one matrix product per block of training rows
//! ([`scores`]), or a streaming selection of the best k ([`top_k`]).
//! With damping delta, H is replaced by H + delta I throughout.
//!
//! An [`Influence`] owns what it was built from (model, theta, training table, prepared
//! solver), so a query cannot mix it with other data.

mod leave_out;
mod leverage;
mod query_batching;
mod scores;
mod top_k;

use std::sync::Arc;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

pub use leave_out::LeaveOutTarget;
pub use scores::{Scorer, Scores};
pub use top_k::TopK;

use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::{gather, with_block, Rows, Segment, Table};
use crate::error::{check_finite, check_finite_rows, check_overflow, Error, Result};
use crate::models::Model;
use crate::objective::Objective;
use crate::solvers::{Method, Prepared, SolveInfo, SolverOptions};

/// How an influence is set up beyond its solver.
#[derive(Clone, Debug)]
pub struct InfluenceOptions {
    pub solver: SolverOptions,
    /// Include the penalty term 2 l2 coef* of I(z_m) (DESIGN.md section 1: the penalty sits
    /// outside the weighted mean, so adding weight renormalises it). False for objectives
    /// written as a *sum* of losses plus a fixed penalty (scikit-learn's Ridge and
    /// LogisticRegression), whose penalty does not move with the total weight.
    pub renormalize: bool,
}

impl Default for InfluenceOptions {
    fn default() -> Self {
        Self { solver: SolverOptions::default(), renormalize: true }
    }
}

/// Which rows a query scores.
#[derive(Clone, Copy)]
pub enum Points<'a> {
    /// Every training row.
    Train,
    /// The training rows `start..end` (one segment of a long run); indices returned by top-k are
    /// those of the whole training set.
    Range(usize, usize),
    /// Training rows by index, gathered (in float64); top-k indices are training indices.
    Rows(&'a [usize]),
    /// Points that are not in the training set (new points), checked against the model.
    Other(&'a Table),
}

/// How indices among the rows of a query map back to training indices.
enum Index<'a> {
    Offset(usize),
    Of(&'a [usize]),
}

impl Index<'_> {
    fn absolute(&self, i: usize) -> usize {
        match self {
            Index::Offset(a) => a + i,
            Index::Of(idx) => idx[i],
        }
    }
}

/// Influence at a fitted theta, ready to answer queries about the training set it was built from.
pub struct Influence {
    model: Arc<dyn Model>,
    data: Table,
    theta: Array1<f64>,
    l2: f64,
    /// 2 l2 coef*_masked (zero without renormalisation)
    penalty_grad: Array1<f64>,
    total_weight: f64,
    /// L_w(theta) and its gradient (influence is exact only where the gradient vanishes)
    objective: f64,
    grad: Array1<f64>,
    opts: SolverOptions,
    solver: Prepared,
    /// whether the penalty renormalises with the total weight ([`InfluenceOptions::renormalize`])
    renormalize: bool,
    /// the bases leave-out estimates are computed in, built on first use
    removal: leave_out::RemovalCache,
}

impl Influence {
    /// Prepare the solver for the Hessian of the objective of `model` on `data` with penalty `l2`
    /// at `theta` (for `Direct`: form and factor it); with `hessian`, that matrix (p x p,
    /// symmetric) replaces the objective's.
    pub fn new(
        model: Arc<dyn Model>,
        data: Table,
        theta: Array1<f64>,
        l2: f64,
        opts: InfluenceOptions,
        hessian: Option<Array2<f64>>,
        cancel: &Cancel,
    ) -> Result<Self> {
        let p = model.n_params();
        if theta.len() != p {
            return Err(Error::Shape { arg: "theta", msg: format!("has {} entries, expected {p}", theta.len()) });
        }
        check_finite("theta", theta.iter())?;
        if let Some(h) = &hessian {
            check_hessian(h, p)?;
        }
        let obj = Objective::new(&*model, &data, l2)?;
        let (solver, objective, grad) = Prepared::at(&obj, theta.view(), &opts.solver, hessian, cancel)?;
        if l2 == 0.0 && opts.solver.damping == 0.0 {
            // what the direct solver's factorisation would refuse, CG must refuse too
            solver.check_nonsingular(&obj, theta.view(), &opts.solver.cg, cancel)?;
        }
        check_overflow("the gradient", grad.iter())?;
        let penalty_grad = if opts.renormalize { obj.penalty_grad(theta.view()) } else { Array1::zeros(p) };
        let total_weight = obj.total_weight();
        drop(obj);
        let renormalize = opts.renormalize;
        Ok(Self { penalty_grad, total_weight, objective, grad, opts: opts.solver, solver, model, data, theta, l2, renormalize, removal: Default::default() })
    }

    pub fn theta(&self) -> ndarray::ArrayView1<'_, f64> {
        self.theta.view()
    }
    pub fn n_params(&self) -> usize {
        self.theta.len()
    }
    pub fn model(&self) -> &dyn Model {
        &*self.model
    }
    /// The training set.
    pub fn data(&self) -> &Table {
        &self.data
    }
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }
    /// max |grad L_w| at theta: influence is exact only at an optimum, where this is ~0.
    pub fn grad_norm(&self) -> f64 {
        self.grad.iter().fold(0.0_f64, |m, g| m.max(g.abs()))
    }

    /// L_w(theta), the objective at theta.
    pub fn objective_value(&self) -> f64 {
        self.objective
    }

    /// The Newton decrement g^T (H + damping I)^{-1} g at theta: twice the decrease a Newton
    /// step would still make. Unlike the gradient's norm it does not change when features are
    /// rescaled, so it tells whether theta is an optimum up to rounding whatever their units.
    pub fn newton_decrement(&self, cancel: &Cancel) -> Result<f64> {
        let mut v = self.grad.clone().insert_axis(ndarray::Axis(1));
        self.solve_in_place(v.view_mut(), true, cancel)?;
        Ok(self.grad.dot(&v.column(0)))
    }
    pub fn method(&self) -> Method {
        self.solver.method()
    }
    /// See [`Prepared::preconditioned`].
    pub fn preconditioned(&self) -> Option<bool> {
        self.solver.preconditioned()
    }
    /// The approximate solver's prepared curvature with its header ([`Prepared::state`]).
    pub fn curvature_state(&self) -> Option<crate::solvers::state::State> {
        self.solver.state(self.l2, self.n_params(), self.total_weight)
    }
    /// Arnoldi's Ritz pairs ([`Prepared::ritz`]).
    pub fn ritz(&self) -> Option<&crate::solvers::Ritz> {
        self.solver.ritz()
    }

    /// The score kernels at this influence's theta.
    pub fn scorer(&self) -> Scorer<'_> {
        Scorer { model: &*self.model, theta: self.theta.view(), total_weight: self.total_weight }
    }

    /// The objective the solver was prepared on (its data were validated then).
    fn objective(&self) -> Objective<'_, dyn Model> {
        Objective::validated(&*self.model, &self.data, self.l2, self.total_weight)
    }

    /// Solve (H + damping I) X = B in place for the columns of `b` (p x m).
    fn solve_in_place(&self, b: ArrayViewMut2<f64>, parallel: bool, cancel: &Cancel) -> Result<SolveInfo> {
        self.solver.solve_in_place(&self.objective(), self.theta.view(), b, &self.opts.cg, parallel, cancel)
    }

    /// H^{-1} g for the columns of `g` (p x r).
    pub fn inverse_hvp(&self, g: ArrayView2<f64>, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.check_width("g", g.nrows())?;
        check_finite("g", g.iter())?;
        let mut out = g.to_owned();
        let info = self.solve_in_place(out.view_mut(), true, cancel)?;
        Ok((out, info))
    }

    fn check_width(&self, arg: &'static str, p: usize) -> Result<()> {
        if p != self.n_params() {
            return Err(Error::Shape { arg, msg: format!("has {p} parameters per row, expected {}", self.n_params()) });
        }
        Ok(())
    }

    /// Points that are not the training set must fit the model (features, targets).
    fn check_points(&self, points: &dyn Rows) -> Result<()> {
        let names = points.names();
        if points.d() != self.model.n_features() {
            return Err(Error::Shape { arg: names.x, msg: format!("has {} columns but the model has {} features", points.d(), self.model.n_features()) });
        }
        self.model.check_targets(names.y, points.y())
    }

    /// Run `f` on the rows `points` selects, with the map from their indices to training indices.
    fn with_points<T>(&self, points: &Points, f: impl FnOnce(&dyn Rows, Index) -> Result<T>) -> Result<T> {
        match *points {
            Points::Train => f(&self.data, Index::Offset(0)),
            Points::Range(a, b) => f(&Segment::new(&self.data, a, b)?, Index::Offset(a)),
            Points::Rows(idx) => f(&gather(&self.data, idx)?, Index::Of(idx)),
            Points::Other(t) => {
                self.check_points(t)?;
                f(t, Index::Offset(0))
            }
        }
    }

    /// Per-example gradients of `points` plus the penalty term, solved, for each block of
    /// rows; `f` receives the block's first row, gradients and solutions (both B x p).
    fn for_each_solved_block<F>(&self, points: &dyn Rows, cancel: &Cancel, f: F) -> Result<SolveInfo>
    where
        F: Fn(usize, &Array2<f64>, &Array2<f64>) + Sync,
    {
        let solve = |v: ArrayViewMut2<f64>| self.solve_in_place(v, false, cancel);
        for_each_solved_block(self.scorer(), self.penalty_grad.view(), points, solve, cancel, f)
    }

    /// I(z) for every row of `points`: (n_points x p).
    pub fn params(&self, points: Points, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.with_points(&points, |points, _| {
            let out = std::sync::Mutex::new(crate::memory::zeros("the influence matrix", (points.n(), self.n_params()))?);
            let scale = -1.0 / self.total_weight;
            let info = self.for_each_solved_block(points, cancel, |start, _, v| {
                let mut o = out.lock().expect("no panics while held");
                o.slice_mut(s![start..start + v.nrows(), ..]).zip_mut_with(v, |o, &x| *o = scale * x);
            })?;
            let out = out.into_inner().expect("no panics while held");
            check_overflow("the influence", out.iter())?;
            Ok((out, info))
        })
    }

    /// Self-influence g_m . I(z_m) of every row of `points`: (n_points,).
    pub fn self_influence(&self, points: Points, cancel: &Cancel) -> Result<(Array1<f64>, SolveInfo)> {
        self.with_points(&points, |points, _| {
            let solve = |v: ArrayViewMut2<f64>| self.solve_in_place(v, false, cancel);
            self_influence_of(self.scorer(), self.penalty_grad.view(), points, solve, cancel)
        })
    }
}

/// Self-influence -(g_m . H^{-1} (g_m + p)) / W of every row of `points`, with `solve` solving
/// (H + damping I) X = B in place for the columns of B (p x B) and `penalty_grad` p the
/// renormalisation term 2 l2 coef*_masked (or zeros). What [`Influence::self_influence`]
/// computes, also for a solver held elsewhere (a distributed run's factor: [`Direct`]).
pub fn self_influence_of<S>(scorer: Scorer, penalty_grad: ArrayView1<f64>, points: &dyn Rows, solve: S, cancel: &Cancel) -> Result<(Array1<f64>, SolveInfo)>
where
    S: Fn(ArrayViewMut2<f64>) -> Result<SolveInfo> + Sync,
{
    let out = std::sync::Mutex::new(Array1::zeros(points.n()));
    let scale = -1.0 / scorer.total_weight;
    let info = for_each_solved_block(scorer, penalty_grad, points, solve, cancel, |start, g, v| {
        let vals: Vec<f64> = g.rows().into_iter().zip(v.rows()).map(|(gi, vi)| scale * gi.dot(&vi)).collect();
        let mut o = out.lock().expect("no panics while held");
        o.slice_mut(s![start..start + vals.len()]).assign(&Array1::from(vals));
    })?;
    let out = out.into_inner().expect("no panics while held");
    check_overflow("the self-influence", out.iter())?;
    Ok((out, info))
}

/// Per-example gradients of `points` (at the scorer's theta) plus `penalty_grad`, solved by
/// `solve` (in place, on the p x B transposed block), for each block of rows in parallel; `f`
/// receives the block's first row, gradients and solutions (both B x p).
fn for_each_solved_block<F, S>(scorer: Scorer, penalty_grad: ArrayView1<f64>, points: &dyn Rows, solve: S, cancel: &Cancel, f: F) -> Result<SolveInfo>
where
    F: Fn(usize, &Array2<f64>, &Array2<f64>) + Sync,
    S: Fn(ArrayViewMut2<f64>) -> Result<SolveInfo> + Sync,
{
    let p = scorer.model.n_params();
    let rows = solved_block_rows(p);
    // per thread: the gradients, the right-hand sides and CG's five work arrays
    crate::memory::check("blocks of per-example gradients and their solves", &[7 * rayon::current_num_threads(), rows, p], 8)?;
    cancel.begin(points.n());
    let infos: Vec<Result<SolveInfo>> = blocks(points.n(), rows)
        .into_par_iter()
        .map(|r| {
            cancel.check()?;
            let (start, len) = (r.start, r.len());
            let g = with_block(points, r, |b| {
                let mut g = Array2::zeros((b.n(), p));
                scorer.model.grads(scorer.theta, b, g.view_mut());
                g
            })?;
            let mut v = &g + &penalty_grad;
            // the rows are the right-hand sides: solve on the transposed view
            let info = solve(v.view_mut().reversed_axes())?;
            f(start, &g, &v);
            cancel.advance(len);
            Ok(info)
        })
        .collect();
    let mut all = SolveInfo::default();
    for i in infos {
        all.append(i?);
    }
    Ok(all)
}

/// Rows per block of per-example solves: [`BLOCK_ROWS`], fewer when p is large, so that a
/// block (B x p, several per thread) stays near `SOLVED_BLOCK_BYTES` (a function of p only:
/// results do not depend on the machine or the thread count).
fn solved_block_rows(p: usize) -> usize {
    (SOLVED_BLOCK_BYTES / (8 * p).max(1)).clamp(1, BLOCK_ROWS)
}

/// Bytes of one B x p block of per-example solves (B = 512 up to p = 8192).
const SOLVED_BLOCK_BYTES: usize = 32 << 20;

/// A Hessian supplied by the caller (or summed by a distributed run) must be p x p, finite and symmetric.
pub fn check_hessian(h: &Array2<f64>, p: usize) -> Result<()> {
    if h.dim() != (p, p) {
        return Err(Error::Shape { arg: "hessian", msg: format!("has shape {:?}, expected ({p}, {p})", h.dim()) });
    }
    check_finite_rows("hessian", h.view())?;
    let scale = h.iter().fold(0.0_f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    let differs = |i: usize, j: usize| (h[[i, j]] - h[[j, i]]).abs() > 1e-10 * scale;
    // by 64 x 64 tiles on and above the diagonal, in parallel, so that the transposed side is
    // read from cache (entry by entry it was a cache miss each: at p = 8000 the tiles took
    // GradientInfluence(hessian=H) from 5.7-5.9 s to 5.05 s, bench/RESULTS.md)
    const T: usize = 64;
    let tiles = p.div_ceil(T);
    let asymmetric =
        (0..tiles).into_par_iter().any(|ti| (ti..tiles).any(|tj| (ti * T..p.min((ti + 1) * T)).any(|i| (tj * T..p.min((tj + 1) * T)).any(|j| differs(i, j)))));
    if asymmetric {
        // the first differing entry in row-major order, for the message
        let (i, j) = (0..p).flat_map(|i| (0..p).map(move |j| (i, j))).find(|&(i, j)| differs(i, j)).expect("one differs");
        return Err(Error::Value { arg: "hessian", msg: format!("is not symmetric (entry ({i}, {j}) differs from ({j}, {i}))") });
    }
    Ok(())
}
