//! Solving H v = g (DESIGN.md section 3). `Direct`: form H, Cholesky, many right-hand sides at
//! once. `cg`: matrix-free conjugate gradients on Hessian-vector products, many right-hand sides
//! per data pass. Directions in the model's null space (the multinomial's free intercepts) are handled
//! by factoring H + s N N^T instead of H: on gradients, which are orthogonal to N, this gives the
//! minimum-norm (pseudo-inverse) solution, i.e. the solve happens in the identifiable subspace.

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::linalg::Cholesky;
use crate::model::Model;
use crate::objective::Objective;

/// Right-hand sides per parallel task in `Direct::solve`.
const RHS_CHUNK: usize = 128;

/// Above this p, `Direct` factors H in place and does not keep it (see `Direct::residuals`).
pub const DIRECT_KEEP_H_MAX_P: usize = 4096;

/// Direct solver: Cholesky of the (null-space augmented) Hessian. Up to
/// [`DIRECT_KEEP_H_MAX_P`] parameters it keeps a copy of that matrix to report true residuals;
/// above, the factor overwrites the matrix (no copy of a p x p matrix is made).
pub struct Direct {
    chol: Cholesky,
    h: Option<Array2<f64>>,
}

impl Direct {
    /// Factor `h` (p x p, symmetric), adding s N N^T for the orthonormal null basis `null`
    /// with s the mean diagonal of `h`, so the augmented matrix keeps H's scale. The update goes
    /// through the nonzeros of N (the multinomial's basis vectors have k each). For p above
    /// [`DIRECT_KEEP_H_MAX_P`] only the lower triangle is updated and read, and `h` becomes the factor.
    pub fn new(mut h: Array2<f64>, null: Option<ArrayView2<f64>>) -> Result<Self> {
        let p = h.nrows();
        if h.ncols() != p {
            return Err(Error::Shape { arg: "hessian", msg: format!("must be square, got {:?}", h.dim()) });
        }
        let keep = p <= DIRECT_KEEP_H_MAX_P;
        if !keep && !h.t().is_standard_layout() {
            h = column_major_lower(h);
        }
        if let Some(nb) = null {
            let scale = h.diag().mean().unwrap_or(1.0).abs().max(f64::MIN_POSITIVE);
            add_low_rank(&mut h, scale, nb, keep);
        }
        let (factored, h) = if keep { (Cholesky::factor(h.view()), Some(h)) } else { (Cholesky::factor_in_place(h), None) };
        let chol = factored.map_err(|e| match e {
            Error::Singular { msg } => Error::Singular {
                msg: format!(
                    "{msg}. The objective has no unique minimiser (collinear or constant features, \
                     fewer points than parameters, or separable classes without a penalty): \
                     use l2 > 0 or damping > 0, or remove the redundant features"
                ),
            },
            other => other,
        })?;
        debug_assert_eq!(chol.dim(), p);
        Ok(Self { chol, h })
    }

    pub fn dim(&self) -> usize {
        self.chol.dim()
    }

    /// Solve in place for every column of `rhs` (p x r), columns in parallel.
    pub fn solve_in_place(&self, mut rhs: ArrayViewMut2<f64>) {
        rhs.axis_chunks_iter_mut(Axis(1), RHS_CHUNK).into_par_iter().for_each(|chunk| self.chol.solve_in_place(chunk));
    }

    /// Solve in place on the calling thread (for callers that already parallelise).
    pub fn chol_solve_in_place(&self, rhs: ArrayViewMut2<f64>) {
        self.chol.solve_in_place(rhs);
    }

    /// Relative residuals ||H x_j - b_j|| / ||b_j|| of solutions `x` (p x m) of right-hand sides
    /// `b`, with H the factored (augmented, damped) matrix. When H was not kept (p above
    /// [`DIRECT_KEEP_H_MAX_P`]) H x is computed as L (L^T x) from the factor: that measures the
    /// triangular solves, not the rounding of the factorisation itself (backward-stable, about
    /// machine precision times the growth of L).
    pub fn residuals(&self, b: ArrayView2<f64>, x: ArrayView2<f64>) -> SolveInfo {
        let hx = match &self.h {
            Some(h) => {
                let mut hx = Array2::zeros(b.raw_dim());
                crate::linalg::gemm(hx.view_mut(), false, h.view(), x, 1.0);
                hx
            }
            None => self.chol.reconstruct_mul(x),
        };
        let residuals: Vec<f64> = hx
            .columns()
            .into_iter()
            .zip(b.columns())
            .map(|(hc, bc)| {
                let bn = bc.dot(&bc).sqrt();
                let rn = hc.iter().zip(bc).map(|(a, b)| (a - b) * (a - b)).sum::<f64>().sqrt();
                if bn > 0.0 {
                    rn / bn
                } else {
                    0.0
                }
            })
            .collect();
        let m = residuals.len();
        SolveInfo { iterations: vec![0; m], converged: residuals.iter().map(|r| r.is_finite()).collect(), residuals }
    }

    /// H^{-1} g for the columns of `g` (p x r).
    pub fn solve(&self, g: ArrayView2<f64>) -> Array2<f64> {
        let mut out = g.to_owned();
        self.solve_in_place(out.view_mut());
        out
    }
}

/// `h` as a column-major matrix with the same lower triangle, without a second p x p matrix
/// when `h` is row-major (copy the lower triangle up, then view the transpose).
fn column_major_lower(mut h: Array2<f64>) -> Array2<f64> {
    if h.is_standard_layout() {
        crate::linalg::symmetrize_from_lower(&mut h);
        h.reversed_axes()
    } else {
        let mut f = Array2::zeros(h.raw_dim().f());
        f.assign(&h);
        f
    }
}

/// h += scale N N^T through the nonzeros of each column of N (for columns with disjoint
/// supports, bitwise what the dense product gave): the whole matrix, or only its lower triangle.
fn add_low_rank(h: &mut Array2<f64>, scale: f64, nb: ArrayView2<f64>, full: bool) {
    for col in nb.columns() {
        let nz: Vec<(usize, f64)> = col.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(i, v)| (i, *v)).collect();
        for &(i, vi) in &nz {
            for &(j, vj) in &nz {
                if full || j <= i {
                    h[[i, j]] += scale * (vi * vj);
                }
            }
        }
    }
}

/// Options of the conjugate-gradient solver.
#[derive(Clone, Debug)]
pub struct CgOptions {
    /// Stop a right-hand side when ||r|| <= max(rtol ||b||, atol).
    pub rtol: f64,
    pub atol: f64,
    pub max_iter: usize,
    /// Jacobi (diagonal) preconditioning, when the model provides the Hessian diagonal.
    pub precondition: bool,
}

impl Default for CgOptions {
    fn default() -> Self {
        Self { rtol: 1e-10, atol: 0.0, max_iter: 1000, precondition: true }
    }
}

/// What a solve did, per right-hand side.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SolveInfo {
    pub iterations: Vec<usize>,
    /// Final relative residual ||A x - b|| / ||b|| (0 for b = 0).
    pub residuals: Vec<f64>,
    pub converged: Vec<bool>,
}

impl SolveInfo {
    pub fn append(&mut self, other: SolveInfo) {
        self.iterations.extend(other.iterations);
        self.residuals.extend(other.residuals);
        self.converged.extend(other.converged);
    }
}

/// Preconditioned conjugate gradients for many right-hand sides at once: the columns are
/// independent CG runs, but every iteration applies A to all still-active search directions in
/// one call, so one pass over the data serves the whole block. `precond` is M^{-1}
/// ([`Preconditioner`]: Jacobi or block Jacobi). A must be symmetric positive definite; a direction of
/// non-positive curvature is reported as `Singular`.
pub fn cg<F>(apply: F, precond: Option<&Preconditioner>, b: ArrayView2<f64>, opts: &CgOptions, cancel: &Cancel) -> Result<(Array2<f64>, SolveInfo)>
where
    F: Fn(ArrayView2<f64>) -> Result<Array2<f64>>,
{
    let (p, m) = b.dim();
    let apply_m = |r: ArrayView1<f64>| -> Array1<f64> {
        match precond {
            Some(pc) => pc.apply(r),
            None => r.to_owned(),
        }
    };
    let precond = |r: &Array2<f64>| -> Array2<f64> {
        let mut z = r.clone();
        for (mut zc, rc) in z.columns_mut().into_iter().zip(r.columns()) {
            zc.assign(&apply_m(rc));
        }
        z
    };
    let col_norms = |a: &Array2<f64>| -> Vec<f64> { a.columns().into_iter().map(|c| c.dot(&c).sqrt()).collect() };
    let bnorm = col_norms(&b.to_owned());
    let mut x = Array2::zeros((p, m));
    let mut r = b.to_owned();
    let z = precond(&r);
    let mut dirs = z.clone();
    let mut rz: Vec<f64> = (0..m).map(|j| r.column(j).dot(&z.column(j))).collect();
    let mut info = SolveInfo { iterations: vec![0; m], residuals: vec![0.0; m], converged: vec![false; m] };
    let target: Vec<f64> = bnorm.iter().map(|bn| (opts.rtol * bn).max(opts.atol)).collect();
    let mut active: Vec<usize> = Vec::with_capacity(m);
    for j in 0..m {
        if bnorm[j] <= target[j] || bnorm[j] == 0.0 {
            info.converged[j] = true;
        } else {
            active.push(j);
        }
    }
    for _ in 0..opts.max_iter {
        if active.is_empty() {
            break;
        }
        cancel.check()?;
        let pa = dirs.select(Axis(1), &active);
        let ap = apply(pa.view())?;
        let mut still = Vec::with_capacity(active.len());
        for (col, &j) in active.iter().enumerate() {
            let apj = ap.column(col);
            let curv = dirs.column(j).dot(&apj);
            if !(curv > 0.0) {
                return Err(Error::Singular {
                    msg: format!(
                        "conjugate gradients broke down on right-hand side {j} (curvature {curv:.3e} <= 0): the \
                         Hessian is not positive definite; use damping > 0 or l2 > 0"
                    ),
                });
            }
            let alpha = rz[j] / curv;
            let dj = dirs.column(j).to_owned();
            x.column_mut(j).scaled_add(alpha, &dj);
            r.column_mut(j).scaled_add(-alpha, &apj);
            info.iterations[j] += 1;
            let rn = r.column(j).dot(&r.column(j)).sqrt();
            if rn <= target[j] {
                info.converged[j] = true;
                continue;
            }
            let zj = apply_m(r.column(j));
            let rz_new = r.column(j).dot(&zj);
            let beta = rz_new / rz[j];
            rz[j] = rz_new;
            let new_dir = &zj + &(&dj * beta);
            dirs.column_mut(j).assign(&new_dir);
            still.push(j);
        }
        active = still;
    }
    for j in 0..m {
        info.residuals[j] = if bnorm[j] > 0.0 { r.column(j).dot(&r.column(j)).sqrt() / bnorm[j] } else { 0.0 };
    }
    Ok((x, info))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cg_matches_the_direct_solve_for_many_right_hand_sides() {
        let a = array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let b = array![[1.0, 0.0, 2.0], [2.0, 0.0, -1.0], [3.0, 0.0, 0.5]];
        let apply = |v: ArrayView2<f64>| Ok(a.dot(&v));
        let inv_diag = Preconditioner::Jacobi(a.diag().mapv(|d| 1.0 / d));
        let (x, info) = cg(apply, Some(&inv_diag), b.view(), &CgOptions::default(), &Cancel::new()).unwrap();
        let direct = Direct::new(a.clone(), None).unwrap().solve(b.view());
        assert!((&x - &direct).iter().all(|v| v.abs() < 1e-9));
        assert_eq!(info.iterations[1], 0); // zero right-hand side
        assert!(info.converged.iter().all(|&c| c));
        assert!(info.iterations[0] <= 3 && info.residuals[0] < 1e-10);
    }

    #[test]
    fn cg_reports_non_convergence_and_indefiniteness() {
        let a = array![[4.0, 1.0], [1.0, 3.0]];
        let b = array![[1.0], [2.0]];
        let opts = CgOptions { max_iter: 1, precondition: false, ..Default::default() };
        let (_, info) = cg(|v: ArrayView2<f64>| Ok(a.dot(&v)), None, b.view(), &opts, &Cancel::new()).unwrap();
        assert!(!info.converged[0] && info.residuals[0] > 1e-3);
        let indef = array![[1.0, 0.0], [0.0, -1.0]];
        let b = array![[0.0], [1.0]];
        let res = cg(|v: ArrayView2<f64>| Ok(indef.dot(&v)), None, b.view(), &CgOptions::default(), &Cancel::new());
        assert!(matches!(res, Err(Error::Singular { .. })));
    }
}

/// The matrix-free operator v -> (H + damping I + s N N^T) v, with H the Hessian of `obj` at
/// `theta` applied through Hessian-vector products (or `explicit` when given), N the null-space
/// basis with scale s.
pub fn hessian_operator<'a, M: Model + ?Sized>(
    obj: &'a Objective<'a, M>,
    theta: ArrayView1<'a, f64>,
    damping: f64,
    null: Option<(&'a Array2<f64>, f64)>,
    explicit: Option<&'a Array2<f64>>,
    cancel: &'a Cancel,
) -> impl Fn(ArrayView2<f64>) -> Result<Array2<f64>> + 'a {
    move |v: ArrayView2<f64>| {
        let mut hv = match explicit {
            Some(h) => h.dot(&v),
            None => obj.hvp(theta, v, cancel)?,
        };
        hv.scaled_add(damping, &v);
        if let Some((nb, scale)) = null {
            hv += &(nb.dot(&nb.t().dot(&v)) * scale);
        }
        Ok(hv)
    }
}

/// M^{-1} for preconditioned CG.
#[derive(Clone, Debug)]
pub enum Preconditioner {
    /// The inverse of the operator's diagonal.
    Jacobi(Array1<f64>),
    /// The inverses (m x b x b) of the operator's diagonal blocks over groups of parameters
    /// (m x b indices, disjoint); parameters in no group are left as they are.
    Blocks { groups: Array2<usize>, inv: Array3<f64> },
}

impl Preconditioner {
    pub fn apply(&self, r: ArrayView1<f64>) -> Array1<f64> {
        match self {
            Preconditioner::Jacobi(d) => &r * d,
            Preconditioner::Blocks { groups, inv } => {
                let mut z = r.to_owned();
                for (g, blk) in groups.rows().into_iter().zip(inv.outer_iter()) {
                    let rg = Array1::from_shape_fn(g.len(), |a| r[g[a]]);
                    for (a, &j) in g.iter().enumerate() {
                        z[j] = blk.row(a).dot(&rg);
                    }
                }
                z
            }
        }
    }
}

/// Jacobi preconditioner for [`hessian_operator`]: the inverse of its diagonal, given the
/// Hessian's diagonal (`None` if the model cannot provide it).
pub fn jacobi(diag: Option<Array1<f64>>, damping: f64, null: Option<(&Array2<f64>, f64)>) -> Option<Preconditioner> {
    let mut d = diag? + damping;
    if let Some((nb, scale)) = null {
        d += &(nb.mapv(|v| v * v).sum_axis(Axis(1)) * scale);
    }
    Some(Preconditioner::Jacobi(d.mapv(|v| if v > 0.0 { 1.0 / v } else { 1.0 })))
}

/// Block-Jacobi preconditioner for [`hessian_operator`]: the inverses of its diagonal blocks
/// over `groups`, given the Hessian's blocks (from `Objective::hessian_blocks`): damping on
/// their diagonals and the blocks' part of s N N^T added, then each inverted by Cholesky. A
/// block that is not positive definite falls back to the inverse of its diagonal.
pub fn block_jacobi(groups: Array2<usize>, mut blocks: Array3<f64>, damping: f64, null: Option<(&Array2<f64>, f64)>) -> Preconditioner {
    let b = groups.ncols();
    for (g, mut blk) in groups.rows().into_iter().zip(blocks.outer_iter_mut()) {
        for a in 0..b {
            blk[[a, a]] += damping;
        }
        if let Some((nb, scale)) = null {
            for col in nb.columns() {
                let v = Array1::from_shape_fn(b, |a| col[g[a]]);
                if v.iter().any(|&x| x != 0.0) {
                    for a in 0..b {
                        for c in 0..b {
                            blk[[a, c]] += scale * v[a] * v[c];
                        }
                    }
                }
            }
        }
    }
    let mut inv = Array3::zeros(blocks.dim());
    for (blk, mut out) in blocks.outer_iter().zip(inv.outer_iter_mut()) {
        match Cholesky::factor(blk) {
            Ok(chol) => {
                out.assign(&Array2::eye(b));
                chol.solve_in_place(out.view_mut());
            }
            Err(_) => {
                for a in 0..b {
                    out[[a, a]] = if blk[[a, a]] > 0.0 { 1.0 / blk[[a, a]] } else { 1.0 };
                }
            }
        }
    }
    Preconditioner::Blocks { groups, inv }
}

/// The preconditioner CG uses on the Hessian of `obj` at theta: block Jacobi when the model
/// groups its parameters (multinomial: each feature's k classes), else Jacobi from `diag`.
pub fn preconditioner<M: Model + ?Sized>(
    obj: &Objective<M>,
    theta: ArrayView1<f64>,
    diag: Option<Array1<f64>>,
    damping: f64,
    null: Option<(&Array2<f64>, f64)>,
    cancel: &Cancel,
) -> Result<Option<Preconditioner>> {
    if let Some((groups, blocks)) = obj.hessian_blocks(theta, cancel)? {
        if blocks.iter().all(|v| v.is_finite()) {
            return Ok(Some(block_jacobi(groups, blocks, damping, null)));
        }
    }
    Ok(jacobi(diag, damping, null))
}

/// Restore the exact null-space component of a solution of (H + s N N^T) x = b: on N the
/// operator is s I, so that component is N N^T b / s. Preconditioned or truncated CG does not
/// keep it exact (the Jacobi preconditioner mixes N into the search directions).
pub fn fix_null_component(x: &mut Array2<f64>, b: ArrayView2<f64>, null: Option<(&Array2<f64>, f64)>) {
    if let Some((nb, scale)) = null {
        let drift = nb.dot(&nb.t().dot(x));
        *x -= &drift;
        x.scaled_add(1.0 / scale, &nb.dot(&nb.t().dot(&b)));
    }
}
