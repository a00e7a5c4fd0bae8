//! Solving H v = g (DESIGN.md section 3), one prepared solver for Newton's steps and for
//! influence. [`Method::Direct`]: form H, Cholesky, many right-hand sides at once.
//! [`Method::Cg`]: matrix-free conjugate gradients on Hessian-vector products, many right-hand
//! sides per data pass, preconditioned. Directions in the model's null space (the multinomial's
//! free intercepts, [`NullSpace`]) are handled by solving with H + N S N^T instead of H: on
//! gradients, which are orthogonal to N, this gives the minimum-norm (pseudo-inverse) solution,
//! i.e. the solve happens in the identifiable subspace. Two approximations: [`Method::Arnoldi`],
//! the top r eigenpairs of that operator by Lanczos and solves with its rank-r model;
//! [`Method::Kfac`], solves with the inverse of its Kronecker-factored layer blocks ([`kfac`]).

pub mod arnoldi;
mod cg;
mod direct;
pub mod kfac;
mod precond;
pub mod state;

use std::sync::OnceLock;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

pub use arnoldi::{ArnoldiOptions, LowRankInverse, Ritz};
pub use cg::{cg, CgOptions, Precondition, SolveInfo};
pub use direct::{Direct, DIRECT_KEEP_H_MAX_P};
pub use precond::{block_jacobi, jacobi, preconditioner, Preconditioner};

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::models::Model;
use crate::objective::{Curvature, Objective};

/// How H v = g is solved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Form H, Cholesky: right for p up to a few thousand.
    Direct,
    /// Matrix-free conjugate gradients on Hessian-vector products.
    Cg,
    /// The rank-r model of the curvature from Lanczos (Arnoldi, [`arnoldi`]): approximate.
    Arnoldi,
    /// The inverse of the K-FAC approximation of the curvature (networks): approximate.
    Kfac,
    /// The same with EK-FAC's eigenvalue correction.
    Ekfac,
}

#[derive(Clone, Debug)]
pub struct SolverOptions {
    pub method: Method,
    /// Solve (H + damping I) v = g.
    pub damping: f64,
    pub cg: CgOptions,
    pub arnoldi: ArnoldiOptions,
    /// Approximate solves (Arnoldi, K-FAC, EK-FAC) report each query's true residual, at the
    /// cost of one product with H per block of queries; false: NaN, not computed.
    pub residuals: bool,
    /// An approximate solver's curvature prepared earlier ([`Prepared::state`]): used instead of
    /// the passes that build it, after its header is checked against this problem.
    pub state: Option<std::sync::Arc<state::State>>,
}

impl Default for SolverOptions {
    fn default() -> Self {
        Self { method: Method::Direct, damping: 0.0, cg: CgOptions::default(), arnoldi: ArnoldiOptions::default(), residuals: true, state: None }
    }
}

impl SolverOptions {
    /// Refuse a negative or non-finite damping and CG tolerances (named as the caller spells them).
    pub fn check(&self) -> Result<()> {
        for (arg, v) in [("damping", self.damping), ("rtol", self.cg.rtol), ("atol", self.cg.atol)] {
            if !(v >= 0.0) || !v.is_finite() {
                return Err(Error::Value { arg, msg: format!("must be a finite number >= 0, got {v}") });
            }
        }
        if self.state.is_some() && matches!(self.method, Method::Direct | Method::Cg) {
            return Err(Error::Value { arg: "curvature_file", msg: "holds an approximate curvature: the exact solvers have nothing to load".into() });
        }
        if self.method == Method::Arnoldi && self.arnoldi.rank == 0 && self.state.is_none() {
            return Err(Error::Value { arg: "rank", msg: "solver='arnoldi' needs rank >= 1 (the eigenpairs kept)".into() });
        }
        Ok(())
    }
}

/// The directions N (p x r, orthonormal columns) along which the objective is flat, with the
/// curvature s_c the solvers give each: they solve with H + N S N^T, S = diag(s).
#[derive(Clone, Debug)]
pub struct NullSpace {
    pub basis: Array2<f64>,
    pub scales: Array1<f64>,
}

impl NullSpace {
    /// Each direction n_c gets the curvature H has on its support, s_c = sum_i n_ic^2 H_ii (a
    /// weighted mean of `diag`, H's diagonal): rescaling the parameters (the features' units)
    /// then rescales H + N S N^T as it rescales H, and the augmented matrix is as well
    /// conditioned as H is on the identifiable directions. A direction with no curvature on its
    /// support gets the mean of the diagonal (or 1).
    pub fn scaled_by(basis: Array2<f64>, diag: ArrayView1<f64>) -> Self {
        let fallback = diag.mean().filter(|m| *m > 0.0 && m.is_finite()).unwrap_or(1.0);
        let scales = basis
            .columns()
            .into_iter()
            .map(|c| c.iter().zip(diag).map(|(v, d)| v * v * d).sum::<f64>())
            .map(|s| if s > 0.0 && s.is_finite() { s } else { fallback })
            .collect();
        Self { basis, scales }
    }

    /// hv += N S N^T v.
    pub fn add_product(&self, hv: &mut Array2<f64>, v: ArrayView2<f64>) {
        let mut c = self.basis.t().dot(&v);
        c.axis_iter_mut(Axis(0)).zip(&self.scales).for_each(|(mut row, s)| row *= *s);
        *hv += &self.basis.dot(&c);
    }

    /// The diagonal of N S N^T.
    pub fn diag(&self) -> Array1<f64> {
        self.basis.mapv(|v| v * v).dot(&self.scales)
    }

    /// Restore the exact null-space component of a solution x of (H + N S N^T) x = b: on N the
    /// operator is S, so that component is N S^{-1} N^T b. Preconditioned or truncated CG does not
    /// keep it exact (the Jacobi preconditioner mixes N into the search directions).
    pub fn fix_component(&self, x: &mut Array2<f64>, b: ArrayView2<f64>) {
        let nb = &self.basis;
        let drift = nb.dot(&nb.t().dot(x));
        *x -= &drift;
        let mut c = nb.t().dot(&b);
        c.axis_iter_mut(Axis(0)).zip(&self.scales).for_each(|(mut row, s)| row /= *s);
        *x += &nb.dot(&c);
    }
}

/// C v for a change C of a solver's operator ([`Prepared::solve_corrected_in_place`]).
pub type Correction<'a> = dyn Fn(ArrayView2<f64>) -> Array2<f64> + Sync + 'a;

/// A solver prepared at one theta: the factored Hessian, or CG's preconditioner and null space.
pub struct Prepared {
    kind: Kind,
    damping: f64,
    /// Whether approximate solves compute their true residuals ([`Prepared::approximate_info`]).
    residuals: bool,
}

// one per prepared solver, never in a collection: the variants' size difference costs nothing
#[allow(clippy::large_enum_variant)]
enum Kind {
    Direct(Direct),
    /// The preconditioner (Jacobi or block Jacobi), the null space with its scale, and an
    /// explicit Hessian when the caller supplied one (else Hessian-vector products on the data).
    Cg {
        precond: Option<Preconditioner>,
        null: Option<NullSpace>,
        explicit: Option<Array2<f64>>,
        /// the operator's diagonal (damping and null-space term included), when known: CG's
        /// scale-invariant test for flat directions
        diag: Option<Array1<f64>>,
        /// With `Precondition::Auto` and a preconditioner to choose: whether to use it, measured
        /// by the first solve ([`Prepared::choose`]).
        use_precond: Option<OnceLock<bool>>,
    },
    /// The top Ritz pairs of H (or of `explicit`) outside the null space, the null space (its
    /// components solved as [`Prepared::cg`] does), and how the rank-r model is inverted.
    Arnoldi {
        ritz: Ritz,
        inverse: LowRankInverse,
        null: Option<NullSpace>,
        explicit: Option<Array2<f64>>,
    },
    /// K-FAC's or EK-FAC's inverse (the null space inside it) and the null space for the true residuals.
    Kfac {
        kron: Box<kfac::Kronecker>,
        null: Option<NullSpace>,
        ekfac: bool,
    },
}

/// (H + damping I + N S N^T) v, H from `explicit` when given, else Hessian-vector products of
/// `obj` at `theta`.
fn operator_product<M: Model + ?Sized>(
    obj: &Objective<M>,
    theta: ArrayView1<f64>,
    explicit: Option<&Array2<f64>>,
    null: Option<&NullSpace>,
    damping: f64,
    v: ArrayView2<f64>,
    cancel: &Cancel,
) -> Result<Array2<f64>> {
    let mut hv = match explicit {
        Some(h) => h.dot(&v),
        None => obj.hvp(theta, v, cancel)?,
    };
    hv.scaled_add(damping, &v);
    if let Some(null) = null {
        null.add_product(&mut hv, v);
    }
    Ok(hv)
}

/// The relative residual the singularity probe of [`Prepared::check_nonsingular`] must reach.
const PROBE_RTOL: f64 = 1e-8;

impl Prepared {
    /// Factor H + damping I (`h` the Hessian, penalty included), augmented along the null-space
    /// `basis` (see [`Direct::new`]).
    /// The factorisation stops with `Interrupted` once `cancel` is set.
    pub fn direct(mut h: Array2<f64>, damping: f64, basis: Option<Array2<f64>>, cancel: &Cancel) -> Result<Self> {
        h.diag_mut().mapv_inplace(|v| v + damping);
        Ok(Self { kind: Kind::Direct(Direct::interruptible(h, basis.as_ref().map(|b| b.view()), Some(cancel))?), damping, residuals: true })
    }

    /// Conjugate gradients on the Hessian of `obj` at `theta` (or `explicit`), given its
    /// diagonal (`None` if the model cannot give it): the null directions get the scale of the
    /// curvature on their support ([`NullSpace::scaled_by`]; without the diagonal, the mean's)
    /// mean curvature; the preconditioner is `precondition` (see [`preconditioner`]; only
    /// Jacobi for an explicit Hessian, K-FAC refused there), or none.
    pub fn cg<M: Model + ?Sized>(
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        diag: Option<Array1<f64>>,
        explicit: Option<Array2<f64>>,
        damping: f64,
        precondition: Precondition,
        cancel: &Cancel,
    ) -> Result<Self> {
        let scale = mean_curvature(diag.as_ref(), damping);
        let null = null_space(obj, diag.as_ref(), damping);
        let op_diag = diag.as_ref().map(|d| {
            let mut a = d + damping;
            if let Some(n) = &null {
                a += &n.diag();
            }
            // a direction with no curvature at all (an all-zero column) is measured against the
            // mean curvature: flat, not exempt
            a.mapv_inplace(|v| if v > 0.0 { v } else { scale });
            a
        });
        let precond = match (precondition, &explicit) {
            (Precondition::None, _) => None,
            (Precondition::Kronecker, Some(_)) => {
                return Err(Error::Value { arg: "precondition", msg: "'kfac' is built from the model's layers, not from a given hessian; use 'jacobi'".into() })
            }
            (_, Some(_)) => jacobi(diag, damping, null.as_ref()),
            (choice, None) => preconditioner(obj, theta, diag, damping, null.as_ref(), choice, cancel)?,
        };
        let use_precond = (precondition == Precondition::Auto && precond.is_some()).then(OnceLock::new);
        Ok(Self { kind: Kind::Cg { precond, null, explicit, diag: op_diag, use_precond }, damping, residuals: true })
    }

    /// Arnoldi on the Hessian of `obj` at `theta` (or `explicit`): Lanczos for its top
    /// `opts.rank` Ritz pairs on the complement of the model's null space (whose components
    /// are solved as [`Prepared::cg`] solves them, scaled from `diag`), checked invertible with
    /// `damping` ([`Ritz::check_invertible`]).
    pub fn arnoldi<M: Model + ?Sized>(
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        diag: Option<Array1<f64>>,
        explicit: Option<Array2<f64>>,
        damping: f64,
        opts: &ArnoldiOptions,
        cancel: &Cancel,
    ) -> Result<Self> {
        let p = obj.n_params();
        let null = null_space(obj, diag.as_ref(), damping);
        let steps = opts.steps.unwrap_or_else(|| arnoldi::default_steps(opts.rank, p));
        let apply = |v: ArrayView2<f64>| operator_product(obj, theta, explicit.as_ref(), None, 0.0, v, cancel);
        let ritz = arnoldi::lanczos(apply, p, opts.rank, steps, null.as_ref().map(|n| n.basis.view()), cancel)?;
        Self::with_ritz(ritz, opts.inverse, null, explicit, damping)
    }

    /// The Arnoldi solver of `ritz` (from Lanczos or a saved state), checked invertible with
    /// `damping` in the dimension Lanczos ran in (p less the null space's).
    fn with_ritz(ritz: Ritz, inverse: LowRankInverse, null: Option<NullSpace>, explicit: Option<Array2<f64>>, damping: f64) -> Result<Self> {
        let dim = ritz.vectors.nrows() - null.as_ref().map_or(0, |n| n.basis.ncols());
        ritz.check_invertible(damping, inverse, dim)?;
        Ok(Self { kind: Kind::Arnoldi { ritz, inverse, null, explicit }, damping, residuals: true })
    }

    /// Solves with the K-FAC (or, with `ekfac`, EK-FAC) approximation of the Hessian of `obj` at
    /// `theta` plus `damping` ([`kfac::Kronecker`], the model's null space scaled from `diag` as
    /// for [`Prepared::cg`]): one pass over the data for the factors, one more for EK-FAC's
    /// eigenvalues. `Err` naming `curvature` for a model without layers.
    pub fn kfac<M: Model + ?Sized>(
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        diag: Option<Array1<f64>>,
        damping: f64,
        ekfac: bool,
        cancel: &Cancel,
    ) -> Result<Self> {
        let null = null_space(obj, diag.as_ref(), damping);
        let correct = |bases: &[(Array2<f64>, Array2<f64>)]| kfac::ekfac_eigenvalues(obj, theta, bases, cancel);
        let eigenvalues: Option<&kfac::Eigenvalues<'_>> = if ekfac { Some(&correct) } else { None };
        let kron = match kfac::factors(obj, theta, cancel)? {
            Some(f) => kfac::Kronecker::new(f, &obj.model.penalty_mask(), obj.l2, damping, null.as_ref(), eigenvalues)?,
            None => None,
        };
        let Some(kron) = kron else {
            return Err(Error::Value {
                arg: "curvature",
                msg: "'kfac' and 'ekfac' need a model with layers: a network (a GLM is MLPClassifier(hidden=()) or MLPRegressor(hidden=()))".into(),
            });
        };
        Ok(Self { kind: Kind::Kfac { kron: Box::new(kron), null, ekfac }, damping, residuals: true })
    }

    /// An approximate solver rebuilt from its [`Prepared::state`] (already checked against the
    /// problem's header), the null space recomputed from `diag` as it was built.
    fn from_state<M: Model + ?Sized>(
        obj: &Objective<M>,
        diag: Option<Array1<f64>>,
        explicit: Option<Array2<f64>>,
        opts: &SolverOptions,
        st: &state::State,
    ) -> Result<Self> {
        let (p, damping) = (obj.n_params(), opts.damping);
        let null = null_space(obj, diag.as_ref(), damping);
        match opts.method {
            Method::Arnoldi => Self::with_ritz(state::ritz_from(st, p)?, opts.arnoldi.inverse, null, explicit, damping),
            m => Ok(Self { kind: Kind::Kfac { kron: Box::new(state::kronecker_from(st, p)?), null, ekfac: m == Method::Ekfac }, damping, residuals: true }),
        }
    }

    /// The prepared curvature of an approximate solver as named arrays with the header it must
    /// match when reloaded ([`state`]); `None` for the exact solvers.
    pub fn state(&self, l2: f64, p: usize, total_weight: f64) -> Option<state::State> {
        let (mut st, method) = match &self.kind {
            Kind::Arnoldi { ritz, .. } => (state::ritz_state(ritz), Method::Arnoldi),
            Kind::Kfac { kron, ekfac, .. } => (state::kronecker_state(kron), if *ekfac { Method::Ekfac } else { Method::Kfac }),
            Kind::Direct(_) | Kind::Cg { .. } => return None,
        };
        st.extend(state::header(method, self.damping, l2, p, total_weight));
        Some(st)
    }

    /// The Ritz pairs an Arnoldi solver keeps (`None` for the other methods).
    pub fn ritz(&self) -> Option<&Ritz> {
        match &self.kind {
            Kind::Arnoldi { ritz, .. } => Some(ritz),
            _ => None,
        }
    }

    /// Prepare `opts.method` at `theta` from one pass over the data, which also gives the
    /// gradient of the objective there (returned: it tells whether theta is an optimum). With
    /// `explicit`, that Hessian (p x p, symmetric) replaces the objective's.
    pub fn at<M: Model + ?Sized>(
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        opts: &SolverOptions,
        explicit: Option<Array2<f64>>,
        cancel: &Cancel,
    ) -> Result<(Self, f64, Array1<f64>)> {
        opts.check()?;
        let (mut prepared, value, grad) = match opts.method {
            Method::Direct => {
                let ((value, grad), h) = match explicit {
                    Some(h) => (obj.value_grad(theta, cancel)?, h),
                    None => {
                        let e = obj.evaluate(theta, Curvature::Hessian, cancel)?;
                        let h = e.hessian.expect("asked for the Hessian");
                        crate::error::check_overflow("the Hessian", h.iter())?;
                        ((e.value, e.grad), h)
                    }
                };
                (Self::direct(h, opts.damping, obj.model.null_space(obj.l2), cancel)?, value, grad)
            }
            Method::Cg | Method::Arnoldi | Method::Kfac | Method::Ekfac => {
                let ((value, grad), diag) = match &explicit {
                    Some(h) => (obj.value_grad(theta, cancel)?, Some(h.diag().to_owned())),
                    None => {
                        let e = obj.evaluate(theta, Curvature::Diagonal, cancel)?;
                        if let Some(d) = &e.diag {
                            crate::error::check_overflow("the Hessian's diagonal", d.iter())?;
                        }
                        ((e.value, e.grad), e.diag)
                    }
                };
                let prepared = match opts.method {
                    Method::Cg => Self::cg(obj, theta, diag, explicit, opts.damping, opts.cg.precondition, cancel)?,
                    m if opts.state.is_some() => {
                        let st = opts.state.as_deref().expect("matched");
                        state::check_header(st, m, opts.damping, obj.l2, obj.n_params(), obj.total_weight())?;
                        Self::from_state(obj, diag, explicit, opts, st)?
                    }
                    Method::Kfac | Method::Ekfac if explicit.is_some() => {
                        return Err(Error::Value {
                            arg: "curvature",
                            msg: "'kfac' and 'ekfac' are built from the model's layers, not from a given hessian".into(),
                        })
                    }
                    Method::Kfac | Method::Ekfac => Self::kfac(obj, theta, diag, opts.damping, opts.method == Method::Ekfac, cancel)?,
                    _ => Self::arnoldi(obj, theta, diag, explicit, opts.damping, &opts.arnoldi, cancel)?,
                };
                (prepared, value, grad)
            }
        };
        prepared.residuals = opts.residuals;
        Ok((prepared, value, grad))
    }

    /// `Precondition::Auto`'s measurement, made once (by the first solve) so that every answer
    /// is a function of the problem alone, never of which query came first: CG on a fixed
    /// seeded right-hand side ([`Prepared::probe_rhs`]) with the preconditioner, then without
    /// it, stopped once it has taken as many iterations; the preconditioner is kept unless plain
    /// CG converged in fewer, to an answer whose residual also passes in the metric scaled by the
    /// diagonal. Both to the solve's rtol, at least [`PROBE_RTOL`].
    fn choose<F>(apply: &F, p: usize, precond: Option<&Preconditioner>, diag: Option<&Array1<f64>>, opts: &CgOptions, cancel: &Cancel) -> Result<bool>
    where
        F: Fn(ArrayView2<f64>) -> Result<Array2<f64>>,
    {
        let b = Self::probe_rhs(p, diag);
        let opts = CgOptions { rtol: opts.rtol.max(PROBE_RTOL), atol: 0.0, ..opts.clone() };
        let (_, with) = cg(apply, precond, diag, b.view(), &opts, cancel)?;
        let capped = CgOptions { max_iter: with.iterations[0], ..opts };
        let (x, plain) = cg(apply, None, diag, b.view(), &capped, cancel)?;
        if !(plain.converged[0] && plain.iterations[0] < with.iterations[0]) {
            return Ok(true);
        }
        // Plain CG's residual test weighs directions by their curvature: with badly scaled
        // parameters it can pass while the weakly curved ones are unsolved. Accept plain CG only
        // if its answer also passes the test in the scaled metric, ||D^-1/2 r|| <= rtol ||D^-1/2 b||.
        let Some(d) = diag else { return Ok(true) };
        let r = &b - &apply(x.view())?;
        let scaled = |v: ArrayView2<f64>| v.column(0).iter().zip(d).map(|(x, d)| x * x / d).sum::<f64>().sqrt();
        Ok(!(scaled(r.view()) <= opts.rtol * scaled(b.view())))
    }

    /// A seeded pseudo-random right-hand side (p x 1) with a part along every direction, scaled
    /// by sqrt(`diag`) (if known) so the features' units do not matter.
    fn probe_rhs(p: usize, diag: Option<&Array1<f64>>) -> Array2<f64> {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut b = Array2::<f64>::zeros((p, 1));
        for (j, v) in b.iter_mut().enumerate() {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            *v = u * diag.map_or(1.0, |d| d[j].abs().sqrt());
        }
        b
    }

    /// Whether CG applies its preconditioner: `None` for a direct solver, else `Some(false)`
    /// when there is none or `Precondition::Auto` measured that plain CG is faster (`Some(true)`
    /// before that measurement).
    pub fn preconditioned(&self) -> Option<bool> {
        match &self.kind {
            Kind::Direct(_) | Kind::Arnoldi { .. } | Kind::Kfac { .. } => None,
            Kind::Cg { precond, use_precond, .. } => Some(precond.is_some() && use_precond.as_ref().and_then(|c| c.get().copied()).unwrap_or(true)),
        }
    }

    /// `Err(Singular)` if CG's operator is singular. On a right-hand side in its range (every
    /// gradient of a GLM's loss is in the range of its Hessian) CG converges even when H is
    /// singular, to one of many solutions, where a factorisation would refuse; so solve once for
    /// a seeded pseudo-random right-hand side with a part along every direction (scaled by
    /// sqrt(diag H), so the units do not matter): a flat direction stops CG (see [`cg`]) or keeps
    /// it from converging. A no-op for direct solvers, whose factorisation checks H itself.
    pub fn check_nonsingular<M: Model + ?Sized>(&self, obj: &Objective<M>, theta: ArrayView1<f64>, cg_opts: &CgOptions, cancel: &Cancel) -> Result<()> {
        let Kind::Cg { diag, .. } = &self.kind else { return Ok(()) };
        let mut b = Self::probe_rhs(obj.n_params(), diag.as_ref());
        let probe = CgOptions { rtol: cg_opts.rtol.max(PROBE_RTOL), atol: 0.0, ..cg_opts.clone() };
        let info = self.solve_in_place(obj, theta, b.view_mut(), &probe, true, cancel)?;
        if !info.converged[0] {
            return Err(Error::Singular {
                msg: format!(
                    "the Hessian is singular or too ill-conditioned for conjugate gradients: a test solve stopped at relative \
                     residual {:.1e} after {} iterations (with collinear or all-zero features and l2 = 0 it has flat \
                     directions); use l2 > 0, damping > 0, drop those features, or solver='direct'",
                    info.residuals[0], info.iterations[0]
                ),
            });
        }
        Ok(())
    }

    /// The matrix this solver applies, H + damping I + N S N^T (p x p, symmetric): a direct
    /// solver's kept matrix, else formed from `obj` at `theta` (or from the explicit Hessian) with
    /// the same damping and null-space term. For what needs the operator itself, not solves
    /// with it (leave-out estimates diagonalise it once).
    pub fn operator<M: Model + ?Sized>(&self, obj: &Objective<M>, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        if let Kind::Direct(direct) = &self.kind {
            if let Some(h) = direct.matrix() {
                return Ok(h.clone());
            }
        }
        let mut h = match &self.kind {
            Kind::Cg { explicit: Some(h), .. } | Kind::Arnoldi { explicit: Some(h), .. } => h.clone(),
            _ => obj.hessian(theta, cancel)?,
        };
        h.diag_mut().mapv_inplace(|v| v + self.damping);
        let null = match &self.kind {
            Kind::Cg { null, .. } | Kind::Arnoldi { null, .. } | Kind::Kfac { null, .. } => null.clone(),
            Kind::Direct(_) => obj.model.null_space(obj.l2).map(|basis| NullSpace::scaled_by(basis, h.diag())),
        };
        if let Some(null) = null {
            let scaled = &null.basis * &null.scales;
            h += &scaled.dot(&null.basis.t());
        }
        Ok(h)
    }

    /// Solve (A - C) X = B in place by conjugate gradients, A the operator this (CG) solver
    /// applies and `correction(v)` = C v a symmetric change of it (leave-out estimates: the
    /// curvature a removed point takes with it), preconditioned as A is. `Err` for a direct solver.
    pub fn solve_corrected_in_place<M: Model + ?Sized>(
        &self,
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        b: ArrayViewMut2<f64>,
        cg_opts: &CgOptions,
        correction: &Correction<'_>,
        cancel: &Cancel,
    ) -> Result<SolveInfo> {
        self.cg_in_place(obj, theta, b, cg_opts, Some(correction), cancel)
    }

    /// CG on (H + damping I + null-space term - C) X = B in place, C from `correction` (if any);
    /// `Err` for a direct solver.
    fn cg_in_place<M: Model + ?Sized>(
        &self,
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        mut b: ArrayViewMut2<f64>,
        cg_opts: &CgOptions,
        correction: Option<&Correction<'_>>,
        cancel: &Cancel,
    ) -> Result<SolveInfo> {
        let Kind::Cg { precond, null, explicit, diag, use_precond } = &self.kind else {
            return Err(Error::Value { arg: "solver", msg: "a corrected solve needs the conjugate-gradient solver".into() });
        };
        let operator = |v: ArrayView2<f64>| operator_product(obj, theta, explicit.as_ref(), null.as_ref(), self.damping, v, cancel);
        let apply = |v: ArrayView2<f64>| -> Result<Array2<f64>> {
            let mut hv = operator(v)?;
            if let Some(correction) = correction {
                hv -= &correction(v);
            }
            Ok(hv)
        };
        let use_pc = match use_precond {
            None => true,
            Some(choice) => match choice.get() {
                Some(&v) => v,
                None => {
                    let v = Self::choose(&operator, b.nrows(), precond.as_ref(), diag.as_ref(), cg_opts, cancel)?;
                    *choice.get_or_init(|| v)
                }
            },
        };
        let (mut x, info) = cg(apply, precond.as_ref().filter(|_| use_pc), diag.as_ref(), b.view(), cg_opts, cancel)?;
        if let Some(null) = null {
            null.fix_component(&mut x, b.view());
        }
        b.assign(&x);
        Ok(info)
    }

    pub fn method(&self) -> Method {
        match self.kind {
            Kind::Direct(_) => Method::Direct,
            Kind::Cg { .. } => Method::Cg,
            Kind::Arnoldi { .. } => Method::Arnoldi,
            Kind::Kfac { ekfac: false, .. } => Method::Kfac,
            Kind::Kfac { ekfac: true, .. } => Method::Ekfac,
        }
    }

    /// Solve (H + damping I) X = B in place for the columns of `b` (p x m); `obj` and `theta` must
    /// be the ones the solver was prepared with (CG applies H through them). Direct solves
    /// report the residual of the factorisation; `parallel` = false keeps a direct solve on the
    /// calling thread (for callers that already parallelise). CG stops by `cg`. Arnoldi solves
    /// with the rank-r model and reports the true residual of each column (with `parallel`: a
    /// product with H for the block; else NaN, not computed).
    pub fn solve_in_place<M: Model + ?Sized>(
        &self,
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        mut b: ArrayViewMut2<f64>,
        cg_opts: &CgOptions,
        parallel: bool,
        cancel: &Cancel,
    ) -> Result<SolveInfo> {
        match &self.kind {
            Kind::Direct(direct) => {
                let rhs = b.to_owned();
                if parallel {
                    direct.solve_in_place(b.view_mut());
                } else {
                    direct.chol_solve_in_place(b.view_mut());
                }
                Ok(direct.residuals(rhs.view(), b.view()))
            }
            Kind::Cg { .. } => self.cg_in_place(obj, theta, b, cg_opts, None, cancel),
            Kind::Arnoldi { ritz, inverse, null, explicit } => {
                let rhs = b.to_owned();
                let dim = rhs.nrows() - null.as_ref().map_or(0, |n| n.basis.ncols());
                let mut x = ritz.solve(rhs.view(), self.damping, *inverse, dim);
                if let Some(null) = null {
                    null.fix_component(&mut x, rhs.view());
                }
                let info = self.approximate_info(obj, theta, explicit.as_ref(), null.as_ref(), x.view(), rhs.view(), ritz.steps, parallel, cancel)?;
                b.assign(&x);
                Ok(info)
            }
            Kind::Kfac { kron, null, .. } => {
                let rhs = b.to_owned();
                let mut x = Array2::zeros(rhs.raw_dim());
                // columns are independent: in parallel for a block of queries (the same bits)
                let solve = |(mut xc, bc): (ndarray::ArrayViewMut1<f64>, ndarray::ArrayView1<f64>)| xc.assign(&kron.apply(bc));
                if parallel {
                    x.axis_iter_mut(Axis(1)).into_par_iter().zip(rhs.axis_iter(Axis(1))).for_each(solve);
                } else {
                    x.axis_iter_mut(Axis(1)).zip(rhs.axis_iter(Axis(1))).for_each(solve);
                }
                let info = self.approximate_info(obj, theta, None, null.as_ref(), x.view(), rhs.view(), 0, parallel, cancel)?;
                b.assign(&x);
                Ok(info)
            }
        }
    }
}

impl Prepared {
    /// What an approximate solve (Arnoldi, K-FAC) reports for its answers `x` to `rhs`: `steps`
    /// per column, converged (the approximation is the answer asked for), and the true relative
    /// residuals ||(H + damping I + N S N^T) x - b|| / ||b||. For a block of queries (`parallel`)
    /// they take one product for all columns; per block of training rows (not parallel: n
    /// right-hand sides in all) a product per block would cost a pass over the data each, so
    /// they are NaN, not computed; also when the solver was prepared without `residuals`.
    #[allow(clippy::too_many_arguments)]
    fn approximate_info<M: Model + ?Sized>(
        &self,
        obj: &Objective<M>,
        theta: ArrayView1<f64>,
        explicit: Option<&Array2<f64>>,
        null: Option<&NullSpace>,
        x: ArrayView2<f64>,
        rhs: ArrayView2<f64>,
        steps: usize,
        parallel: bool,
        cancel: &Cancel,
    ) -> Result<SolveInfo> {
        let m = rhs.ncols();
        let residuals = if parallel && self.residuals {
            let r = operator_product(obj, theta, explicit, null, self.damping, x, cancel)? - rhs;
            let rel = |j: usize| {
                let nb = rhs.column(j).dot(&rhs.column(j)).sqrt();
                if nb > 0.0 {
                    r.column(j).dot(&r.column(j)).sqrt() / nb
                } else {
                    0.0
                }
            };
            (0..m).map(rel).collect()
        } else {
            vec![f64::NAN; m]
        };
        Ok(SolveInfo { iterations: vec![steps; m], residuals, converged: vec![true; m] })
    }
}

/// The mean of the operator's diagonal (damping included), 1 without it: the scale of the
/// null directions when the diagonal is unknown.
fn mean_curvature(diag: Option<&Array1<f64>>, damping: f64) -> f64 {
    diag.and_then(|d| d.mean()).map(|m| m + damping).unwrap_or(1.0).abs().max(f64::MIN_POSITIVE)
}

/// The model's null space, each direction scaled by the curvature on its support ([`NullSpace::scaled_by`]).
fn null_space<M: Model + ?Sized>(obj: &Objective<M>, diag: Option<&Array1<f64>>, damping: f64) -> Option<NullSpace> {
    obj.model.null_space(obj.l2).map(|basis| match diag {
        Some(d) => NullSpace::scaled_by(basis, (d + damping).view()),
        None => {
            let scales = Array1::from_elem(basis.ncols(), mean_curvature(None, damping));
            NullSpace { basis, scales }
        }
    })
}
