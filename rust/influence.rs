//! Exact influence (DESIGN.md sections 1 and 4):
//!
//!   I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W
//!
//! and the influence of every training point on a function f with gradient grad f:
//!   grad f . I(z_m) = -(g_m . V_f + c_f) / W,   V_f = H^{-1} grad f,  c_f = 2 l2 coef_masked . V_f
//! so scoring q functions is q solves then one matrix product per block of training rows.
//! With damping delta, H is replaced by H + delta I throughout.

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::Dataset;
use crate::error::{check_finite, Error, Result};
use crate::model::Model;
use crate::objective::Objective;
use crate::solvers::{cg, fix_null_component, hessian_operator, jacobi, CgOptions, Direct, SolveInfo};
use crate::source::{with_block, Rows};

/// How H v = g is solved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Form H, Cholesky: right for p up to a few thousand.
    Direct,
    /// Matrix-free conjugate gradients on Hessian-vector products.
    Cg,
}

#[derive(Clone, Debug)]
pub struct SolverOptions {
    pub method: Method,
    /// Solve (H + damping I) v = g.
    pub damping: f64,
    pub cg: CgOptions,
}

impl Default for SolverOptions {
    fn default() -> Self {
        Self { method: Method::Direct, damping: 0.0, cg: CgOptions::default() }
    }
}

enum Solver {
    Direct(Direct),
    /// Jacobi preconditioner (inverse diagonal), the null-space basis with its scale, and an
    /// explicit Hessian when the caller supplied one (else Hessian-vector products on the data).
    Cg { inv_diag: Option<Array1<f64>>, null: Option<(Array2<f64>, f64)>, explicit: Option<Array2<f64>> },
}

/// The k most helpful (most negative score) and most harmful (most positive) training points
/// for each query, (r x k) each; ties broken by the lower index.
#[derive(Clone, Debug, PartialEq)]
pub struct TopK {
    pub helpful_idx: Array2<usize>,
    pub helpful: Array2<f64>,
    pub harmful_idx: Array2<usize>,
    pub harmful: Array2<f64>,
}

/// Influence at a fitted theta, ready to answer queries about the training set it was built from.
pub struct Influence {
    theta: Array1<f64>,
    l2: f64,
    /// 2 l2 coef*_masked
    penalty_grad: Array1<f64>,
    total_weight: f64,
    grad_norm: f64,
    opts: SolverOptions,
    solver: Solver,
}

/// Keeps the k best (score, index) pairs; `sign` = 1 keeps the smallest, -1 the largest.
#[derive(Clone)]
struct Best {
    k: usize,
    sign: f64,
    items: Vec<(f64, usize)>,
}

impl Best {
    fn new(k: usize, sign: f64) -> Self {
        Self { k, sign, items: Vec::with_capacity(k + 1) }
    }
    fn better(&self, a: (f64, usize), b: (f64, usize)) -> bool {
        let (x, y) = (self.sign * a.0, self.sign * b.0);
        x < y || (x == y && a.1 < b.1)
    }
    fn push(&mut self, item: (f64, usize)) {
        if self.k == 0 || (self.items.len() == self.k && !self.better(item, self.items[self.k - 1])) {
            return;
        }
        let pos = self.items.iter().position(|&o| self.better(item, o)).unwrap_or(self.items.len());
        self.items.insert(pos, item);
        self.items.truncate(self.k);
    }
}

impl Influence {
    /// Prepare the solver for the Hessian of `obj` at `theta` (for `Direct`: form and factor it).
    pub fn new<M: Model + ?Sized>(obj: &Objective<M>, theta: ArrayView1<f64>, opts: SolverOptions, cancel: &Cancel) -> Result<Self> {
        Self::build(obj, theta, None, opts, cancel)
    }

    /// Like [`Influence::new`] with a Hessian supplied by the caller (p x p, symmetric) instead of
    /// the objective's.
    pub fn with_hessian<M: Model + ?Sized>(obj: &Objective<M>, theta: ArrayView1<f64>, h: Array2<f64>, opts: SolverOptions, cancel: &Cancel) -> Result<Self> {
        let p = obj.n_params();
        if h.dim() != (p, p) {
            return Err(Error::Shape { arg: "hessian", msg: format!("has shape {:?}, expected ({p}, {p})", h.dim()) });
        }
        check_finite("hessian", h.iter())?;
        let scale = h.iter().fold(0.0_f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
        if let Some(((i, j), _)) = h.indexed_iter().find(|((i, j), v)| (**v - h[[*j, *i]]).abs() > 1e-10 * scale) {
            return Err(Error::Value { arg: "hessian", msg: format!("is not symmetric (entry ({i}, {j}) differs from ({j}, {i}))") });
        }
        Self::build(obj, theta, Some(h), opts, cancel)
    }

    fn build<M: Model + ?Sized>(obj: &Objective<M>, theta: ArrayView1<f64>, explicit: Option<Array2<f64>>, opts: SolverOptions, cancel: &Cancel) -> Result<Self> {
        if !(opts.damping >= 0.0) || !opts.damping.is_finite() {
            return Err(Error::Value { arg: "damping", msg: format!("must be a finite number >= 0, got {}", opts.damping) });
        }
        let null = obj.model.null_space(obj.l2);
        // the gradient (for grad_norm) comes from the same pass over the data as the curvature
        let (grad, solver) = match opts.method {
            Method::Direct => {
                let (grad, mut h) = match explicit {
                    Some(h) => (obj.value_grad(theta, cancel)?.1, h),
                    None => {
                        let (_, g, h) = obj.value_grad_hessian(theta, cancel)?;
                        (g, h)
                    }
                };
                h.diag_mut().mapv_inplace(|v| v + opts.damping);
                (grad, Solver::Direct(Direct::new(h, null.as_ref().map(|n| n.view()))?))
            }
            Method::Cg => {
                let (grad, diag) = match &explicit {
                    Some(h) => (obj.value_grad(theta, cancel)?.1, Some(h.diag().to_owned())),
                    None => {
                        let (_, g, d) = obj.value_grad_hessian_diag(theta, cancel)?;
                        (g, d)
                    }
                };
                // the null directions get the scale of the mean curvature
                let scale = diag.as_ref().and_then(|d| d.mean()).map(|m| m + opts.damping).unwrap_or(1.0).abs().max(f64::MIN_POSITIVE);
                let null = null.map(|n| (n, scale));
                let inv_diag = if opts.cg.precondition { jacobi(diag, opts.damping, null.as_ref().map(|(n, s)| (n, *s))) } else { None };
                (grad, Solver::Cg { inv_diag, null, explicit })
            }
        };
        Ok(Self {
            theta: theta.to_owned(),
            l2: obj.l2,
            penalty_grad: obj.penalty_grad(theta),
            total_weight: obj.total_weight(),
            grad_norm: grad.iter().fold(0.0_f64, |m, g| m.max(g.abs())),
            opts,
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
    pub fn method(&self) -> Method {
        self.opts.method
    }

    /// Solve (H + damping I) X = B in place for the columns of `b` (p x m). Direct solves report
    /// the residual of the factorisation; CG raises `NotConverged` only through the caller.
    fn solve_in_place<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, mut b: ArrayViewMut2<f64>, parallel: bool, cancel: &Cancel) -> Result<SolveInfo> {
        match &self.solver {
            Solver::Direct(direct) => {
                let rhs = b.to_owned();
                if parallel {
                    direct.solve_in_place(b.view_mut());
                } else {
                    direct.chol_solve_in_place(b.view_mut());
                }
                Ok(direct.residuals(rhs.view(), b.view()))
            }
            Solver::Cg { inv_diag, null, explicit } => {
                let obj = Objective::new(model, train, self.l2)?;
                let null = null.as_ref().map(|(n, s)| (n, *s));
                let apply = hessian_operator(&obj, self.theta.view(), self.opts.damping, null, explicit.as_ref(), cancel);
                let (mut x, info) = cg(apply, inv_diag.as_ref(), b.view(), &self.opts.cg, cancel)?;
                fix_null_component(&mut x, b.view(), null);
                b.assign(&x);
                Ok(info)
            }
        }
    }

    /// H^{-1} g for the columns of `g` (p x r).
    pub fn inverse_hvp<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, g: ArrayView2<f64>, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.check_width("g", g.nrows())?;
        check_finite("g", g.iter())?;
        let mut out = g.to_owned();
        let info = self.solve_in_place(model, train, out.view_mut(), true, cancel)?;
        Ok((out, info))
    }

    fn check_width(&self, arg: &'static str, p: usize) -> Result<()> {
        if p != self.n_params() {
            return Err(Error::Shape { arg, msg: format!("has {p} parameters per row, expected {}", self.n_params()) });
        }
        Ok(())
    }

    fn check_points<M: Model + ?Sized>(&self, model: &M, arg: &'static str, points: &dyn Rows) -> Result<()> {
        if points.d() != model.n_features() {
            return Err(Error::Shape {
                arg,
                msg: format!("has {} columns but the model has {} features", points.d(), model.n_features()),
            });
        }
        self.check_width("model", model.n_params())?;
        model.check_targets(if arg == "X" { "y" } else { "y_test" }, points.y())
    }

    /// Per-example gradients of `points` plus the penalty term, solved, for each block of
    /// rows; `f` receives the block's gradients and solutions (both B x p).
    fn for_each_solved_block<M, F>(&self, model: &M, train: &dyn Rows, points: &dyn Rows, cancel: &Cancel, f: F) -> Result<SolveInfo>
    where
        M: Model + ?Sized,
        F: Fn(usize, &Array2<f64>, &Array2<f64>) + Sync,
    {
        let p = self.n_params();
        cancel.begin(points.n());
        let infos: Vec<Result<SolveInfo>> = blocks(points.n(), BLOCK_ROWS)
            .into_par_iter()
            .map(|r| {
                cancel.check()?;
                let (start, len) = (r.start, r.len());
                let g = with_block(points, r, |b| {
                    let mut g = Array2::zeros((b.n(), p));
                    model.grads(self.theta.view(), b, g.view_mut());
                    g
                })?;
                let mut v = &g + &self.penalty_grad;
                // the rows are the right-hand sides: solve on the transposed view
                let info = self.solve_in_place(model, train, v.view_mut().reversed_axes(), false, cancel)?;
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

    /// I(z) for every row of `points` (training rows or new points): (n_points x p).
    pub fn params<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, points: &dyn Rows, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.check_points(model, "X", points)?;
        let out = std::sync::Mutex::new(Array2::zeros((points.n(), self.n_params())));
        let scale = -1.0 / self.total_weight;
        let info = self.for_each_solved_block(model, train, points, cancel, |start, _, v| {
            let mut o = out.lock().expect("no panics while held");
            o.slice_mut(s![start..start + v.nrows(), ..]).zip_mut_with(v, |o, &x| *o = scale * x);
        })?;
        Ok((out.into_inner().expect("no panics while held"), info))
    }

    /// Self-influence g_m . I(z_m) of every row of `points`: (n_points,).
    pub fn self_influence<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, points: &dyn Rows, cancel: &Cancel) -> Result<(Array1<f64>, SolveInfo)> {
        self.check_points(model, "X", points)?;
        let out = std::sync::Mutex::new(Array1::zeros(points.n()));
        let scale = -1.0 / self.total_weight;
        let info = self.for_each_solved_block(model, train, points, cancel, |start, g, v| {
            let vals: Vec<f64> = g.rows().into_iter().zip(v.rows()).map(|(gi, vi)| scale * gi.dot(&vi)).collect();
            let mut o = out.lock().expect("no panics while held");
            o.slice_mut(s![start..start + vals.len()]).assign(&Array1::from(vals));
        })?;
        Ok((out.into_inner().expect("no panics while held"), info))
    }

    /// V = H^{-1} grad_f^T (p x r) and the penalty offsets c (r).
    fn query_solve<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, grad_f: ArrayView2<f64>, cancel: &Cancel) -> Result<(Array2<f64>, Array1<f64>, SolveInfo)> {
        self.check_width("grad_f", grad_f.ncols())?;
        check_finite("grad_f", grad_f.iter())?;
        let mut v = grad_f.t().to_owned();
        let info = self.solve_in_place(model, train, v.view_mut(), true, cancel)?;
        let c = v.t().dot(&self.penalty_grad);
        Ok((v, c, info))
    }

    /// Scores of the rows of `block` (B rows) into `out` (B x r).
    fn score_block<M: Model + ?Sized>(&self, model: &M, block: &Dataset, v: &Array2<f64>, c: &Array1<f64>, mut out: ArrayViewMut2<f64>) {
        let scale = -1.0 / self.total_weight;
        model.grads_dot(self.theta.view(), block, v.view(), out.view_mut().reversed_axes());
        let cb = c.view().insert_axis(Axis(0));
        Zip::from(&mut out).and_broadcast(&cb).for_each(|x, &cj| *x = scale * (*x + cj));
    }

    /// Influence of every row of `points` on functions f_j given their gradients at theta*
    /// (`grad_f`, r x p): S (r x n), S[j, m] = grad f_j . I(z_m).
    pub fn on<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, points: &dyn Rows, grad_f: ArrayView2<f64>, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.check_points(model, "X", points)?;
        let (v, c, info) = self.query_solve(model, train, grad_f, cancel)?;
        // S is filled as S^T (n x r, row blocks contiguous), so each block's product writes a
        // column-major (r x B) destination, the layout faer is fastest with; returned as (r x n).
        let mut st = Array2::zeros((points.n(), grad_f.nrows()));
        cancel.begin(points.n());
        st.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS).into_par_iter().enumerate().try_for_each(|(b, chunk)| {
            cancel.check()?;
            let (start, len) = (b * BLOCK_ROWS, chunk.nrows());
            with_block(points, start..start + len, |blk| self.score_block(model, blk, &v, &c, chunk))?;
            cancel.advance(len);
            Ok::<(), Error>(())
        })?;
        Ok((st.reversed_axes(), info))
    }

    /// Score matrix S (q x n): S[t, m] = grad l(z_t) . I(z_m), influence of training point m on
    /// the loss at test point t.
    pub fn on_loss<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, test: &Dataset, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        let g = self.loss_grads(model, test)?;
        self.on(model, train, train, g.view(), cancel)
    }

    /// Per-example loss gradients of test points (q x p).
    pub fn loss_grads<M: Model + ?Sized>(&self, model: &M, test: &Dataset) -> Result<Array2<f64>> {
        self.check_points(model, "X_test", test)?;
        let mut g = Array2::zeros((test.n(), self.n_params()));
        model.grads(self.theta.view(), test, g.view_mut());
        Ok(g)
    }

    /// For each f_j (`grad_f`, r x p), the `k` most helpful and most harmful rows of `points`,
    /// streaming over blocks: the r x n matrix is never held (memory O(block x r + r x k)).
    pub fn top_k<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, points: &dyn Rows, grad_f: ArrayView2<f64>, k: usize, cancel: &Cancel) -> Result<(TopK, SolveInfo)> {
        self.check_points(model, "X", points)?;
        let (v, c, info) = self.query_solve(model, train, grad_f, cancel)?;
        let r = grad_f.nrows();
        let k = k.min(points.n());
        let all = blocks(points.n(), BLOCK_ROWS);
        // a fixed number of contiguous chunks (a function of n only): deterministic merge order
        let per_chunk = all.len().div_ceil(64).max(1);
        cancel.begin(points.n());
        let partials: Vec<Result<Vec<(Best, Best)>>> = all
            .par_chunks(per_chunk)
            .map(|chunk| {
                let mut best = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
                let mut tmp = Array2::zeros((BLOCK_ROWS, r));
                for range in chunk {
                    cancel.check()?;
                    let start = range.start;
                    let len = range.len();
                    with_block(points, range.clone(), |blk| self.score_block(model, blk, &v, &c, tmp.slice_mut(s![..len, ..])))?;
                    cancel.advance(len);
                    for (i, row) in tmp.slice(s![..len, ..]).rows().into_iter().enumerate() {
                        for (j, &score) in row.iter().enumerate() {
                            best[j].0.push((score, start + i));
                            best[j].1.push((score, start + i));
                        }
                    }
                }
                Ok(best)
            })
            .collect();
        let mut total = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
        for part in partials {
            for (t, p) in total.iter_mut().zip(part?) {
                p.0.items.into_iter().for_each(|it| t.0.push(it));
                p.1.items.into_iter().for_each(|it| t.1.push(it));
            }
        }
        let take = |sel: fn(&(Best, Best)) -> &Best| {
            let idx = Array2::from_shape_fn((r, k), |(j, i)| sel(&total[j]).items[i].1);
            let val = Array2::from_shape_fn((r, k), |(j, i)| sel(&total[j]).items[i].0);
            (idx, val)
        };
        let (helpful_idx, helpful) = take(|b| &b.0);
        let (harmful_idx, harmful) = take(|b| &b.1);
        Ok((TopK { helpful_idx, helpful, harmful_idx, harmful }, info))
    }
}
