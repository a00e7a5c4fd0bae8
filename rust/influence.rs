//! Exact influence (DESIGN.md sections 1 and 4):
//!
//!   I(z_m) = -H^{-1} (grad l(z_m; theta*) + 2 l2 coef*_masked) / W
//!
//! and the influence of every training point on a function f with gradient grad f:
//!   grad f . I(z_m) = -(g_m . V_f + c_f) / W,   V_f = H^{-1} grad f,  c_f = 2 l2 coef_masked . V_f
//! so scoring q functions is q solves then one matrix product per block of training rows.
//! With damping delta, H is replaced by H + delta I throughout.

use std::ops::Range;

use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

use crate::blocks::{blocks, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::Dataset;
use crate::error::{check_finite, check_overflow, overflow, Error, Result};
use crate::model::scores_f32;
use crate::model::Model;
use crate::objective::Objective;
use crate::solvers::{cg, fix_null_component, hessian_operator, jacobi, preconditioner, CgOptions, Direct, Preconditioner, SolveInfo};
use crate::source::{gather, with_block, Rows};

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
    /// Include the penalty term 2 l2 coef* of I(z_m) (DESIGN.md section 1: the penalty sits
    /// outside the weighted mean, so adding weight renormalises it). False for objectives
    /// written as a *sum* of losses plus a fixed penalty (scikit-learn's Ridge and
    /// LogisticRegression), whose penalty does not move with the total weight.
    pub renormalize: bool,
}

impl Default for SolverOptions {
    fn default() -> Self {
        Self { method: Method::Direct, damping: 0.0, cg: CgOptions::default(), renormalize: true }
    }
}

enum Solver {
    Direct(Direct),
    /// The preconditioner (Jacobi or block Jacobi), the null-space basis with its scale, and an
    /// explicit Hessian when the caller supplied one (else Hessian-vector products on the data).
    Cg {
        precond: Option<Preconditioner>,
        null: Option<(Array2<f64>, f64)>,
        explicit: Option<Array2<f64>>,
    },
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

/// Contiguous chunks of row blocks `top_k` selects in independently before merging (a function
/// of n only, so the merge order and the result do not depend on the thread count). Each chunk
/// starts with empty lists, so fewer chunks mean fewer candidates while the lists fill.
const TOP_K_CHUNKS: usize = 16;

/// Keeps the k best (score, index) pairs; `sign` = 1 keeps the smallest, -1 the largest; ties
/// go to the lower index. Candidates are appended to a buffer of up to 2k and compacted to the
/// best k when it fills (amortised O(1) per candidate); `items()` gives the final sorted list.
#[derive(Clone)]
struct Best {
    k: usize,
    sign: f64,
    items: Vec<(f64, usize)>,
    /// The k-th best after the last compaction (+-inf before the first): only better scores
    /// can enter.
    bound: (f64, usize),
}

impl Best {
    fn new(k: usize, sign: f64) -> Self {
        let bound = if k == 0 { (-sign * f64::INFINITY, 0) } else { (sign * f64::INFINITY, usize::MAX) };
        Self { k, sign, items: Vec::with_capacity(2 * k), bound }
    }
    fn better(&self, a: (f64, usize), b: (f64, usize)) -> bool {
        let (x, y) = (self.sign * a.0, self.sign * b.0);
        x < y || (x == y && a.1 < b.1)
    }
    /// A score must be strictly better than this to enter when rows are offered in increasing
    /// index order (a tie then loses to the earlier index).
    fn bound(&self) -> f64 {
        self.bound.0
    }
    fn push(&mut self, item: (f64, usize)) {
        if self.k == 0 || !self.better(item, self.bound) {
            return;
        }
        self.items.push(item);
        if self.items.len() >= 2 * self.k {
            self.compact();
        }
    }
    /// Keep the best k, sorted, and tighten the bound to the k-th.
    /// Keep the best k (partitioned, not sorted: O(k)) and tighten the bound to the k-th.
    fn compact(&mut self) {
        let sign = self.sign;
        let order = |a: &(f64, usize), b: &(f64, usize)| (sign * a.0).total_cmp(&(sign * b.0)).then(a.1.cmp(&b.1));
        if self.items.len() > self.k && self.k > 0 {
            self.items.select_nth_unstable_by(self.k - 1, order);
            self.items.truncate(self.k);
            self.bound = self.items[self.k - 1];
        } else if self.items.len() == self.k && self.k > 0 {
            self.bound = *self.items.iter().max_by(|a, b| order(a, b)).expect("k > 0");
        }
    }
    /// The best k (fewer if fewer were offered), best first.
    fn items(&mut self) -> &[(f64, usize)] {
        self.compact();
        let sign = self.sign;
        self.items.sort_unstable_by(|a, b| (sign * a.0).total_cmp(&(sign * b.0)).then(a.1.cmp(&b.1)));
        &self.items
    }
}

impl TopK {
    /// The k best of two top-k results over disjoint training rows (e.g. two segments of one
    /// run): helpful keeps the smallest scores, harmful the largest, ties to the lower index,
    /// exactly as one pass over both would choose. Both must have the same number of queries.
    pub fn merge(&self, other: &TopK, k: usize) -> Result<TopK> {
        let r = self.helpful.nrows();
        for (arg, m) in [("b", &other.helpful), ("b", &other.harmful), ("a", &self.harmful)] {
            if m.nrows() != r {
                return Err(Error::Shape { arg, msg: format!("has {} queries, expected {r}", m.nrows()) });
            }
        }
        let pick = |ia: &Array2<usize>, va: &Array2<f64>, ib: &Array2<usize>, vb: &Array2<f64>, sign: f64| -> Result<(Array2<usize>, Array2<f64>)> {
            if ia.dim() != va.dim() || ib.dim() != vb.dim() {
                return Err(Error::Shape { arg: "a", msg: "index and score arrays differ in shape".into() });
            }
            let kk = k.min(ia.ncols() + ib.ncols());
            let (mut idx, mut val) = (Array2::zeros((r, kk)), Array2::zeros((r, kk)));
            for j in 0..r {
                let mut best = Best::new(kk, sign);
                ia.row(j).iter().zip(va.row(j)).chain(ib.row(j).iter().zip(vb.row(j))).for_each(|(&i, &v)| best.push((v, i)));
                for (c, &(v, i)) in best.items().iter().enumerate() {
                    idx[[j, c]] = i;
                    val[[j, c]] = v;
                }
            }
            Ok((idx, val))
        };
        let (helpful_idx, helpful) = pick(&self.helpful_idx, &self.helpful, &other.helpful_idx, &other.helpful, 1.0)?;
        let (harmful_idx, harmful) = pick(&self.harmful_idx, &self.harmful, &other.harmful_idx, &other.harmful, -1.0)?;
        Ok(TopK { helpful_idx, helpful, harmful_idx, harmful })
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

    fn build<M: Model + ?Sized>(
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        explicit: Option<Array2<f64>>,
        opts: SolverOptions,
        cancel: &Cancel,
    ) -> Result<Self> {
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
                        check_overflow("the Hessian", h.iter())?;
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
                        if let Some(d) = &d {
                            check_overflow("the Hessian's diagonal", d.iter())?;
                        }
                        (g, d)
                    }
                };
                // the null directions get the scale of the mean curvature
                let scale = diag.as_ref().and_then(|d| d.mean()).map(|m| m + opts.damping).unwrap_or(1.0).abs().max(f64::MIN_POSITIVE);
                let null = null.map(|n| (n, scale));
                let precond = match (opts.cg.precondition, &explicit) {
                    (false, _) => None,
                    (true, Some(_)) => jacobi(diag, opts.damping, null.as_ref().map(|(n, s)| (n, *s))),
                    (true, None) => preconditioner(obj, theta, diag, opts.damping, null.as_ref().map(|(n, s)| (n, *s)), cancel)?,
                };
                (grad, Solver::Cg { precond, null, explicit })
            }
        };
        check_overflow("the gradient", grad.iter())?;
        Ok(Self {
            theta: theta.to_owned(),
            l2: obj.l2,
            penalty_grad: if opts.renormalize { obj.penalty_grad(theta) } else { Array1::zeros(theta.len()) },
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
            Solver::Cg { precond, null, explicit } => {
                let obj = Objective::new(model, train, self.l2)?;
                let null = null.as_ref().map(|(n, s)| (n, *s));
                let apply = hessian_operator(&obj, self.theta.view(), self.opts.damping, null, explicit.as_ref(), cancel);
                let (mut x, info) = cg(apply, precond.as_ref(), b.view(), &self.opts.cg, cancel)?;
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
            return Err(Error::Shape { arg, msg: format!("has {} columns but the model has {} features", points.d(), model.n_features()) });
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
        let out = out.into_inner().expect("no panics while held");
        check_overflow("the influence", out.iter())?;
        Ok((out, info))
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
        let out = out.into_inner().expect("no panics while held");
        check_overflow("the self-influence", out.iter())?;
        Ok((out, info))
    }

    /// [V; c] ((p + 1) x r): V = H^{-1} grad_f^T and the penalty offsets c = V^T 2 l2 coef*.
    fn query_solve<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, grad_f: ArrayView2<f64>, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.check_width("grad_f", grad_f.ncols())?;
        check_finite("grad_f", grad_f.iter())?;
        let p = self.n_params();
        let mut vc = Array2::zeros((p + 1, grad_f.nrows()));
        vc.slice_mut(s![..p, ..]).assign(&grad_f.t());
        let info = self.solve_in_place(model, train, vc.slice_mut(s![..p, ..]), true, cancel)?;
        check_overflow("H^-1 grad f", vc.iter())?;
        let c = vc.slice(s![..p, ..]).t().dot(&self.penalty_grad);
        vc.row_mut(p).assign(&c);
        Ok((vc, info))
    }

    /// Scores of the rows `range` of `points` into `out` (B x r), given `vc` = [V; c] and, when
    /// the rows are float32 and the model has a float32 kernel, `vc32`: then in float32.
    fn score_rows<M: Model + ?Sized>(&self, model: &M, points: &dyn Rows, range: Range<usize>, vc: &Array2<f64>, out: ScoreOut) -> Result<()> {
        let scale = -1.0 / self.total_weight;
        match out {
            ScoreOut::F64(out) => with_block(points, range, |blk| model.scores(self.theta.view(), blk, vc.view(), scale, out)),
            ScoreOut::F32(out, vc32) => {
                let x = points.x_rows_f32(range.start, range.end).expect("checked by float32_kernel")?;
                let y = points.y().slice_move(s![range]);
                let done = scores_f32(model, self.theta.view(), x.view(), y, vc32.view(), scale as f32, out);
                debug_assert!(done, "checked by float32_kernel");
                Ok(())
            }
        }
    }

    /// Whether scores over `points` run in float32: float32 rows and a model kernel for them.
    fn float32_kernel<M: Model + ?Sized>(&self, model: &M, points: &dyn Rows) -> bool {
        points.n() > 0
            && points.x_rows_f32(0, 0).is_some()
            && model.grads_f32(
                self.theta.view(),
                ndarray::Array2::<f32>::zeros((0, points.d())).view(),
                points.y().slice(s![..0]),
                ndarray::Array2::<f32>::zeros((0, self.n_params())).view_mut(),
            )
    }

    /// Influence of every row of `points` on functions f_j given their gradients at theta*
    /// (`grad_f`, r x p): S (r x n), S[j, m] = grad f_j . I(z_m). Float32 rows are scored in
    /// float32 ([`Scores::F32`]), with the solve and V in float64.
    pub fn on<M: Model + ?Sized>(
        &self,
        model: &M,
        train: &dyn Rows,
        points: &dyn Rows,
        grad_f: ArrayView2<f64>,
        cancel: &Cancel,
    ) -> Result<(Scores, SolveInfo)> {
        self.check_points(model, "X", points)?;
        let (vc, info) = self.query_solve(model, train, grad_f, cancel)?;
        let (n, r) = (points.n(), grad_f.nrows());
        let scores = if self.float32_kernel(model, points) {
            let vc32 = vc.mapv(|v| v as f32);
            Scores::F32(self.fill_scores(n, r, cancel, |range, out| self.score_rows(model, points, range, &vc, ScoreOut::F32(out, &vc32)))?)
        } else {
            Scores::F64(self.fill_scores(n, r, cancel, |range, out| self.score_rows(model, points, range, &vc, ScoreOut::F64(out)))?)
        };
        Ok((scores, info))
    }

    /// S (r x n) filled block by block with `block(rows, out (B x r))`, in parallel. S is filled
    /// as S^T (n x r, row blocks contiguous), so each block's product writes a column-major
    /// (r x B) destination, the layout faer is fastest with; returned as (r x n).
    fn fill_scores<T, F>(&self, n: usize, r: usize, cancel: &Cancel, block: F) -> Result<Array2<T>>
    where
        T: Copy + Default + Send + Sync + Into<f64>,
        F: Fn(Range<usize>, ArrayViewMut2<T>) -> Result<()> + Sync,
    {
        let mut st = Array2::from_elem((n, r), T::default());
        cancel.begin(n);
        st.axis_chunks_iter_mut(Axis(0), BLOCK_ROWS).into_par_iter().enumerate().try_for_each(|(b, chunk)| {
            cancel.check()?;
            let (start, len) = (b * BLOCK_ROWS, chunk.nrows());
            let mut chunk = chunk;
            block(start..start + len, chunk.view_mut())?;
            check_overflow("the scores", chunk.iter())?; // the block is still in cache
            cancel.advance(len);
            Ok::<(), Error>(())
        })?;
        Ok(st.reversed_axes())
    }

    /// Score matrix S (q x n): S[t, m] = grad l(z_t) . I(z_m), influence of training point m on
    /// the loss at test point t.
    pub fn on_loss<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, test: &Dataset, cancel: &Cancel) -> Result<(Scores, SolveInfo)> {
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
    /// Float32 rows are scored and selected in float32; the selected scores are then recomputed
    /// in float64, so the values returned are exact (only near-ties at the k-th place can differ
    /// from a float64 selection).
    pub fn top_k<M: Model + ?Sized>(
        &self,
        model: &M,
        train: &dyn Rows,
        points: &dyn Rows,
        grad_f: ArrayView2<f64>,
        k: usize,
        cancel: &Cancel,
    ) -> Result<(TopK, SolveInfo)> {
        self.check_points(model, "X", points)?;
        let (vc, info) = self.query_solve(model, train, grad_f, cancel)?;
        Ok((self.top_k_solved(model, points, &vc, k, cancel)?, info))
    }

    /// [V; c] for query gradients `grad_f` (r x p): the solves a score query starts with, to
    /// reuse across calls of [`Influence::top_k_solved`] (e.g. one per segment of a long run).
    pub fn solve_queries<M: Model + ?Sized>(&self, model: &M, train: &dyn Rows, grad_f: ArrayView2<f64>, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)> {
        self.query_solve(model, train, grad_f, cancel)
    }

    /// [`Influence::top_k`] from solved queries `vc` ((p + 1) x r, from [`Influence::solve_queries`]).
    pub fn top_k_solved<M: Model + ?Sized>(&self, model: &M, points: &dyn Rows, vc: &Array2<f64>, k: usize, cancel: &Cancel) -> Result<TopK> {
        self.check_points(model, "X", points)?;
        if vc.nrows() != self.n_params() + 1 {
            return Err(Error::Shape { arg: "vc", msg: format!("has {} rows, expected {}", vc.nrows(), self.n_params() + 1) });
        }
        let vc = vc.clone();
        let r = vc.ncols();
        let k = k.min(points.n());
        let f32_path = self.float32_kernel(model, points);
        let vc32 = vc.mapv(|v| v as f32);
        let all = blocks(points.n(), BLOCK_ROWS);
        // a fixed number of contiguous chunks (a function of n only): deterministic merge order
        let per_chunk = all.len().div_ceil(TOP_K_CHUNKS).max(1);
        cancel.begin(points.n());
        let partials: Vec<Result<Vec<(Best, Best)>>> = all
            .par_chunks(per_chunk)
            .map(|chunk| {
                let mut sel = Selection::new(k, r);
                // scores as (B x r), the layout of `on`'s blocks: a row holds every query's score
                // of one training point and is compared with the queries' bounds at once
                let (mut t64, mut t32) = (Array2::<f64>::zeros((0, 0)), Array2::<f32>::zeros((0, 0)));
                if f32_path {
                    t32 = Array2::zeros((BLOCK_ROWS, r))
                } else {
                    t64 = Array2::zeros((BLOCK_ROWS, r))
                }
                for range in chunk {
                    cancel.check()?;
                    let (start, len) = (range.start, range.len());
                    if f32_path {
                        self.score_rows(model, points, range.clone(), &vc, ScoreOut::F32(t32.slice_mut(s![..len, ..]), &vc32))?;
                        sel.scan(t32.slice(s![..len, ..]), start)?;
                    } else {
                        self.score_rows(model, points, range.clone(), &vc, ScoreOut::F64(t64.slice_mut(s![..len, ..])))?;
                        sel.scan(t64.slice(s![..len, ..]), start)?;
                    }
                    cancel.advance(len);
                }
                Ok(sel.best)
            })
            .collect();
        let mut total = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
        for part in partials {
            for (t, mut p) in total.iter_mut().zip(part?) {
                p.0.items().iter().for_each(|&it| t.0.push(it));
                p.1.items().iter().for_each(|&it| t.1.push(it));
            }
        }
        if f32_path {
            for (j, (help, harm)) in total.iter_mut().enumerate() {
                for best in [help, harm] {
                    self.rescore(model, points, &vc, j, best)?;
                }
            }
        }
        for (help, harm) in total.iter_mut() {
            help.items(); // sorted, best first
            harm.items();
        }
        let take = |sel: fn(&(Best, Best)) -> &Best| {
            let idx = Array2::from_shape_fn((r, k), |(j, i)| sel(&total[j]).items[i].1);
            let val = Array2::from_shape_fn((r, k), |(j, i)| sel(&total[j]).items[i].0);
            (idx, val)
        };
        let (helpful_idx, helpful) = take(|b| &b.0);
        let (harmful_idx, harmful) = take(|b| &b.1);
        Ok(TopK { helpful_idx, helpful, harmful_idx, harmful })
    }

    /// Recompute the scores of `best`'s items for query `j` in float64 and restore the order.
    fn rescore<M: Model + ?Sized>(&self, model: &M, points: &dyn Rows, vc: &Array2<f64>, j: usize, best: &mut Best) -> Result<()> {
        let idx: Vec<usize> = best.items().iter().map(|it| it.1).collect();
        if idx.is_empty() {
            return Ok(());
        }
        let rows = gather(points, &idx)?;
        let mut out = Array2::zeros((idx.len(), 1));
        model.scores(self.theta.view(), &rows.as_dataset(), vc.slice(s![.., j..j + 1]), -1.0 / self.total_weight, out.view_mut());
        let mut exact = Best::new(best.k, best.sign);
        for (i, &m) in idx.iter().enumerate() {
            exact.push((out[[i, 0]], m));
        }
        *best = exact;
        Ok(())
    }
}

/// Per query, the (helpful, harmful) lists and their entry bounds, kept side by side so a block
/// row of scores is checked against all queries' bounds in one pass.
struct Selection {
    best: Vec<(Best, Best)>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

impl Selection {
    fn new(k: usize, r: usize) -> Self {
        let best = vec![(Best::new(k, 1.0), Best::new(k, -1.0)); r];
        let lo = best.iter().map(|b| b.0.bound()).collect();
        let hi = best.iter().map(|b| b.1.bound()).collect();
        Self { best, lo, hi }
    }

    /// Offer the scores of rows `start..` (a B x r block). Only a score past a list's current
    /// k-th value reaches `Best::push`; the common case is two compares per score. Rows come in
    /// increasing index order, so a tie with the bound never enters (the earlier index wins).
    fn scan<T: Copy + Into<f64>>(&mut self, block: ndarray::ArrayView2<T>, start: usize) -> Result<()> {
        let mut finite = true;
        for (i, row) in block.rows().into_iter().enumerate() {
            let row = row.to_slice().expect("contiguous rows");
            for (j, &s) in row.iter().enumerate() {
                let v: f64 = s.into();
                finite &= v.is_finite(); // NaN passes no compare: it must not vanish silently
                if v < self.lo[j] {
                    self.best[j].0.push((v, start + i));
                    self.lo[j] = self.best[j].0.bound();
                }
                if v > self.hi[j] {
                    self.best[j].1.push((v, start + i));
                    self.hi[j] = self.best[j].1.bound();
                }
            }
        }
        if !finite {
            return Err(overflow("the scores"));
        }
        Ok(())
    }
}

/// Output of one block of the score kernel, float64 or float32 (with [V; c] in float32).
enum ScoreOut<'a, 'b> {
    F64(ArrayViewMut2<'a, f64>),
    F32(ArrayViewMut2<'a, f32>, &'b Array2<f32>),
}

/// A score matrix in the precision its training rows were stored in.
#[derive(Clone, Debug)]
pub enum Scores {
    F64(Array2<f64>),
    F32(Array2<f32>),
}

impl Scores {
    /// The scores in float64 (widened if they were computed in float32).
    pub fn into_f64(self) -> Array2<f64> {
        match self {
            Scores::F64(s) => s,
            Scores::F32(s) => s.mapv(f64::from),
        }
    }
}
