//! Preconditioned conjugate gradients for many right-hand sides at once.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use super::precond::Preconditioner;
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::linalg::PIVOT_RTOL;

/// Options of the conjugate-gradient solver.
#[derive(Clone, Debug)]
pub struct CgOptions {
    /// Stop a right-hand side when ||r|| <= max(rtol ||b||, atol).
    pub rtol: f64,
    pub atol: f64,
    pub max_iter: usize,
    /// Which preconditioner ([`Precondition`]).
    pub precondition: Precondition,
}

impl Default for CgOptions {
    fn default() -> Self {
        Self { rtol: 1e-10, atol: 0.0, max_iter: 1000, precondition: Precondition::Auto }
    }
}

/// The preconditioner CG uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The model's choice: none for networks (measured: Jacobi and K-FAC both slow CG down on
    /// a Fashion-MNIST net at the default damping), else (block) Jacobi where the model has the
    /// Hessian's diagonal, else none.
    Auto,
    /// The inverse of the Hessian's diagonal, or of its diagonal blocks where the model groups
    /// its parameters (multinomial GLMs).
    Jacobi,
    /// Kronecker-factored layer blocks (K-FAC; networks only).
    Kronecker,
}

impl Precondition {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "none" => Ok(Self::None),
            "auto" => Ok(Self::Auto),
            "jacobi" => Ok(Self::Jacobi),
            "kfac" => Ok(Self::Kronecker),
            other => Err(Error::Value { arg: "precondition", msg: format!("expected True, False, 'auto', 'jacobi', 'kfac' or 'none', got {other:?}") }),
        }
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
/// ([`Preconditioner`]: Jacobi, block Jacobi or K-FAC). A must be symmetric positive definite; a direction of
/// non-positive curvature is reported as `Singular`. With `diag`, A's diagonal, so is a flat
/// direction d: d^T A d <= PIVOT_RTOL d^T diag(A) d, a ratio the scaling of the unknowns does not
/// change (the test of the direct solver's pivots, [`crate::linalg::PIVOT_RTOL`]).
pub fn cg<F>(
    apply: F,
    precond: Option<&Preconditioner>,
    diag: Option<&Array1<f64>>,
    b: ArrayView2<f64>,
    opts: &CgOptions,
    cancel: &Cancel,
) -> Result<(Array2<f64>, SolveInfo)>
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
    // M^{-1} on the columns `cols` of `r`, in parallel (each column on its own: the same bits
    // for any thread count); K-FAC's per-column products are worth spreading
    let precond_cols = |r: &Array2<f64>, cols: &[usize]| -> Vec<Array1<f64>> { cols.par_iter().map(|&j| apply_m(r.column(j))).collect() };
    let precond = |r: &Array2<f64>| -> Array2<f64> {
        let all: Vec<usize> = (0..r.ncols()).collect();
        let mut z = r.clone();
        for (mut zc, zj) in z.columns_mut().into_iter().zip(precond_cols(r, &all)) {
            zc.assign(&zj);
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
            if let Some(dg) = diag {
                let own: f64 = dirs.column(j).iter().zip(dg).map(|(d, a)| d * d * a).sum();
                if curv > 0.0 && curv <= PIVOT_RTOL * own {
                    return Err(Error::Singular {
                        msg: format!(
                            "conjugate gradients found a flat direction of the Hessian (its curvature is {:.1e} of its \
                             diagonal's, below {PIVOT_RTOL:e}, whatever the units): the Hessian is singular, as with \
                             collinear or all-zero features and l2 = 0; use l2 > 0, damping > 0, or drop those features",
                            curv / own
                        ),
                    });
                }
            }
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
            still.push(j);
        }
        for (&j, zj) in still.iter().zip(precond_cols(&r, &still)) {
            let rz_new = r.column(j).dot(&zj);
            let beta = rz_new / rz[j];
            rz[j] = rz_new;
            let new_dir = &zj + &(&dirs.column(j) * beta);
            dirs.column_mut(j).assign(&new_dir);
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
    use crate::solvers::direct::Direct;
    use ndarray::array;

    #[test]
    fn cg_matches_the_direct_solve_for_many_right_hand_sides() {
        let a = array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let b = array![[1.0, 0.0, 2.0], [2.0, 0.0, -1.0], [3.0, 0.0, 0.5]];
        let apply = |v: ArrayView2<f64>| Ok(a.dot(&v));
        let inv_diag = Preconditioner::Jacobi(a.diag().mapv(|d| 1.0 / d));
        let (x, info) = cg(apply, Some(&inv_diag), None, b.view(), &CgOptions::default(), &Cancel::new()).unwrap();
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
        let opts = CgOptions { max_iter: 1, precondition: Precondition::None, ..Default::default() };
        let (_, info) = cg(|v: ArrayView2<f64>| Ok(a.dot(&v)), None, None, b.view(), &opts, &Cancel::new()).unwrap();
        assert!(!info.converged[0] && info.residuals[0] > 1e-3);
        let indef = array![[1.0, 0.0], [0.0, -1.0]];
        let b = array![[0.0], [1.0]];
        let res = cg(|v: ArrayView2<f64>| Ok(indef.dot(&v)), None, None, b.view(), &CgOptions::default(), &Cancel::new());
        assert!(matches!(res, Err(Error::Singular { .. })));
    }
}
