//! Preconditioners for CG on the Hessian: Jacobi (its diagonal), block Jacobi (its diagonal
//! blocks over the model's parameter groups) and, for networks, K-FAC ([`super::kfac`]), with
//! damping and the null-space term included.

use ndarray::{Array1, Array2, Array3, ArrayView1};

use super::kfac::{self, Kronecker};
use super::{NullSpace, Precondition};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::linalg::Cholesky;
use crate::models::Model;
use crate::objective::Objective;

/// M^{-1} for preconditioned CG.
#[derive(Clone, Debug)]
pub enum Preconditioner {
    /// The inverse of the operator's diagonal.
    Jacobi(Array1<f64>),
    /// The inverses (m x b x b) of the operator's diagonal blocks over groups of parameters
    /// (m x b indices, disjoint); parameters in no group are left as they are.
    Blocks { groups: Array2<usize>, inv: Array3<f64> },
    /// Kronecker-factored layer blocks (K-FAC).
    Kronecker(Box<Kronecker>),
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
            Preconditioner::Kronecker(k) => k.apply(r),
        }
    }
}

/// Jacobi preconditioner for the operator H + damping I + s N N^T: the inverse of its diagonal, given the
/// Hessian's diagonal (`None` if the model cannot provide it).
pub fn jacobi(diag: Option<Array1<f64>>, damping: f64, null: Option<&NullSpace>) -> Option<Preconditioner> {
    let mut d = diag? + damping;
    if let Some(null) = null {
        d += &null.diag();
    }
    Some(Preconditioner::Jacobi(d.mapv(|v| if v > 0.0 { 1.0 / v } else { 1.0 })))
}

/// Block-Jacobi preconditioner for the same operator: the inverses of its diagonal blocks
/// over `groups`, given the Hessian's blocks (from `Objective::hessian_blocks`): damping on
/// their diagonals and the blocks' part of s N N^T added, then each inverted by Cholesky. A
/// block that is not positive definite falls back to the inverse of its diagonal.
pub fn block_jacobi(groups: Array2<usize>, mut blocks: Array3<f64>, damping: f64, null: Option<&NullSpace>) -> Preconditioner {
    let b = groups.ncols();
    for (g, mut blk) in groups.rows().into_iter().zip(blocks.outer_iter_mut()) {
        for a in 0..b {
            blk[[a, a]] += damping;
        }
        if let Some(NullSpace { basis, scales }) = null {
            for (col, &scale) in basis.columns().into_iter().zip(scales) {
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

/// The preconditioner `choice` for CG on the Hessian of `obj` at theta (damping, null space
/// and penalty included). Jacobi: block Jacobi when the model groups its parameters
/// (multinomial: each feature's k classes), else Jacobi from `diag`. Auto: none for models with
/// Kronecker factors (networks: on the 784-128-10 Fashion-MNIST net at damping "auto" both
/// Jacobi and K-FAC roughly triple CG's iterations, so neither is a safe default), else Jacobi.
/// `Err` naming `precondition` when K-FAC is asked of a model without layers (or of one whose
/// penalty is not Kronecker-shaped).
#[allow(clippy::too_many_arguments)]
pub fn preconditioner<M: Model + ?Sized>(
    obj: &Objective<M>,
    theta: ArrayView1<f64>,
    diag: Option<Array1<f64>>,
    damping: f64,
    null: Option<&NullSpace>,
    choice: Precondition,
    cancel: &Cancel,
) -> Result<Option<Preconditioner>> {
    let layered = obj.model.preconditioning().is_some_and(|p| p.kronecker_factors().is_some());
    match choice {
        Precondition::None => return Ok(None),
        Precondition::Auto if layered => return Ok(None),
        Precondition::Kronecker => {
            let kron = match kfac::factors(obj, theta, cancel)? {
                Some(f) => Kronecker::new(f, &obj.model.penalty_mask(), obj.l2, damping, null, None)?,
                None => None,
            };
            let Some(kron) = kron else {
                return Err(Error::Value { arg: "precondition", msg: "'kfac' needs a model with layers (a network); use 'jacobi' or 'auto'".into() });
            };
            return Ok(Some(Preconditioner::Kronecker(Box::new(kron))));
        }
        Precondition::Auto | Precondition::Jacobi => {}
    }
    if let Some((groups, blocks)) = obj.hessian_blocks(theta, cancel)? {
        if blocks.iter().all(|v| v.is_finite()) {
            return Ok(Some(block_jacobi(groups, blocks, damping, null)));
        }
    }
    Ok(jacobi(diag, damping, null))
}
