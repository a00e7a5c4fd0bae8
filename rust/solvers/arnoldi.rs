//! Arnoldi (Schioppa et al. 2022; DESIGN-networks.md section 5): the top r eigenpairs of the
//! solver's operator A (symmetric positive semi-definite: a GLM's Hessian, a network's
//! Gauss-Newton matrix, with the null-space term of [`super::NullSpace`]) by Lanczos with full
//! reorthogonalisation, one product with A (a pass over the data) per step; then solves with
//! the rank-r model of A + damping I instead of A + damping I itself.
//!
//! Lanczos builds an orthonormal basis Q of the Krylov space of a start vector, in which A is
//! the tridiagonal T = Q^T A Q; T's eigenpairs (theta, y) give the Ritz pairs (theta, Q y), whose
//! residual ||A Q y - theta Q y|| is |beta_m y_m| (beta_m the last off-diagonal). Full
//! reorthogonalisation (classical Gram-Schmidt, twice) keeps Q orthonormal to rounding, so no
//! spurious copies of converged eigenvalues appear. A breakdown (beta = 0: Q spans an invariant
//! subspace, which degenerate eigenvalues such as a network's bias shifts make likely) restarts
//! from a seeded random vector orthogonal to Q. With r = p the basis is complete, T is similar
//! to A, and the rank-r solve is the exact solve.

use faer::Side;
use ndarray::{s, Array1, Array2, ArrayView2, Axis, ShapeBuilder};

use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::linalg::{faer_ref, PIVOT_RTOL};

/// How the rank-r model U diag(sigma) U^T of A is inverted (with damping lam).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LowRankInverse {
    /// U diag(1 / (sigma + lam)) U^T: the solve restricted to the top-r eigenspace, what
    /// Schioppa et al. and jax-influence compute; the rest of a right-hand side is dropped.
    Projection,
    /// The exact inverse of U diag(sigma) U^T + lam I: the projection plus (I - U U^T) / lam.
    /// Needs lam > 0 when r < p.
    Exact,
}

impl LowRankInverse {
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "projection" => Ok(Self::Projection),
            "exact" => Ok(Self::Exact),
            other => Err(Error::Value { arg: "arnoldi_inverse", msg: format!("expected 'projection' or 'exact', got {other:?}") }),
        }
    }
}

/// Options of the Arnoldi solver.
#[derive(Clone, Debug)]
pub struct ArnoldiOptions {
    /// r, the eigenpairs kept (1 <= r <= p).
    pub rank: usize,
    /// Lanczos steps (products with A); `None`: [`default_steps`].
    pub steps: Option<usize>,
    pub inverse: LowRankInverse,
}

impl Default for ArnoldiOptions {
    fn default() -> Self {
        Self { rank: 0, steps: None, inverse: LowRankInverse::Projection }
    }
}

/// Lanczos steps for rank r of p: 2r (the spec's minimum), at least r + 20 so that small ranks
/// still converge, at most p.
pub fn default_steps(rank: usize, p: usize) -> usize {
    (2 * rank).max(rank + 20).min(p)
}

/// A relative off-diagonal below this is a breakdown (an invariant subspace).
const BREAKDOWN_RTOL: f64 = 1e-12;

/// The top eigenpairs of A found by [`lanczos`].
#[derive(Clone, Debug)]
pub struct Ritz {
    /// U (p x r), orthonormal columns, in the order of `values`.
    pub vectors: Array2<f64>,
    /// sigma, descending.
    pub values: Array1<f64>,
    /// ||A u_j - sigma_j u_j|| for each pair (|beta_m y_mj|).
    pub residuals: Array1<f64>,
    /// Products with A taken.
    pub steps: usize,
    /// Breakdowns restarted from a new random direction.
    pub restarts: usize,
}

/// Seeded uniform(-1, 1) vectors (a 64-bit LCG, its top bits): the same start and restart
/// directions, hence the same answer, on every run.
struct Seeded(u64);

impl Seeded {
    fn vector(&mut self, p: usize) -> Array1<f64> {
        Array1::from_shape_fn(p, |_| {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
    }
}

fn norm(v: &Array1<f64>) -> f64 {
    v.dot(v).sqrt()
}

/// v <- (I - Q Q^T - N N^T) v, twice (once is not enough when v is nearly in span Q).
fn reorthogonalize(v: &mut Array1<f64>, q: ArrayView2<f64>, null: Option<ArrayView2<f64>>) {
    for _ in 0..2 {
        for b in std::iter::once(q).chain(null) {
            let c = b.t().dot(v);
            *v -= &b.dot(&c);
        }
    }
}

/// The `rank` largest eigenpairs of the symmetric operator `apply` (p x m blocks to p x m
/// products) from `steps` Lanczos steps (clamped to rank..=p - dim N), on the orthogonal
/// complement of `null` (N, orthonormal columns, with A N = 0: the model's free directions,
/// which A maps nowhere, so a Krylov space started outside them stays outside; they are
/// projected out again at every step against rounding).
pub fn lanczos<F>(apply: F, p: usize, rank: usize, steps: usize, null: Option<ArrayView2<f64>>, cancel: &Cancel) -> Result<Ritz>
where
    F: Fn(ArrayView2<f64>) -> Result<Array2<f64>>,
{
    let n_null = null.map_or(0, |n| n.ncols());
    let dim = p - n_null.min(p);
    if rank == 0 || rank > dim {
        let what = match n_null {
            0 => format!("the number of parameters ({p})"),
            _ => format!("the number of identifiable directions ({dim}: {p} parameters less {n_null} free shifts of the model)"),
        };
        return Err(Error::Value { arg: "rank", msg: format!("must be between 1 and {what}, got {rank}") });
    }
    let m = steps.clamp(rank, dim);
    crate::memory::check("the Lanczos basis (p x steps)", &[p, m + rank], 8)?;
    let mut rng = Seeded(0x2545_F491_4F6C_DD1D);
    let mut q = Array2::<f64>::zeros((p, m).f());
    let mut start = rng.vector(p);
    reorthogonalize(&mut start, q.slice(s![.., ..0]), null);
    q.column_mut(0).assign(&(&start / norm(&start)));
    let (mut alpha, mut beta): (Vec<f64>, Vec<f64>) = (Vec::with_capacity(m), Vec::with_capacity(m));
    let (mut scale, mut last_beta, mut restarts, mut k) = (0.0_f64, 0.0, 0, m);
    for j in 0..m {
        cancel.check()?;
        let mut w = apply(q.slice(s![.., j..j + 1]))?.remove_axis(Axis(1));
        if !w.iter().all(|v| v.is_finite()) {
            return Err(Error::Singular { msg: "a Hessian-vector product in Lanczos is not finite".into() });
        }
        let a = q.column(j).dot(&w);
        alpha.push(a);
        w.scaled_add(-a, &q.column(j));
        if j > 0 {
            w.scaled_add(-beta[j - 1], &q.column(j - 1));
        }
        let basis = q.slice(s![.., ..=j]);
        reorthogonalize(&mut w, basis, null);
        let b = norm(&w);
        scale = scale.max(a.abs() + b + if j > 0 { beta[j - 1] } else { 0.0 });
        if j + 1 == m {
            last_beta = b;
            break;
        }
        if b > BREAKDOWN_RTOL * scale {
            beta.push(b);
            q.column_mut(j + 1).assign(&(w / b));
        } else {
            // Q spans an invariant subspace: T is exact there; go on from a new direction
            beta.push(0.0);
            restarts += 1;
            let mut v = rng.vector(p);
            let before = norm(&v);
            reorthogonalize(&mut v, basis, null);
            let nv = norm(&v);
            if !(nv > 1e-8 * before) {
                // (only when j + 1 = dim: Q spans everything)
                k = j + 1;
                break;
            }
            q.column_mut(j + 1).assign(&(v / nv));
        }
    }
    // T (k x k), tridiagonal; its eigenpairs, ascending
    let mut t = Array2::<f64>::zeros((k, k));
    for j in 0..k {
        t[[j, j]] = alpha[j];
        if j + 1 < k {
            t[[j + 1, j]] = beta[j];
            t[[j, j + 1]] = beta[j];
        }
    }
    let tv = t.view();
    let evd = faer_ref(&tv)
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Singular { msg: format!("the eigendecomposition of Lanczos' T did not converge ({e:?})") })?;
    let (y, theta) = (evd.U(), evd.S().column_vector());
    let r = rank.min(k);
    let order: Vec<usize> = (0..r).map(|i| k - 1 - i).collect();
    let ysel = Array2::from_shape_fn((k, r), |(i, c)| y[(i, order[c])]);
    let vectors = q.slice(s![.., ..k]).dot(&ysel);
    let values = order.iter().map(|&i| theta[i]).collect();
    let residuals = order.iter().map(|&i| (last_beta * y[(k - 1, i)]).abs()).collect();
    Ok(Ritz { vectors, values, residuals, steps: alpha.len(), restarts })
}

impl Ritz {
    /// `Err` when the rank-r model plus `damping` cannot be inverted: a kept eigenvalue (plus
    /// damping) that is not positive, or below [`PIVOT_RTOL`] of the largest (rounding noise);
    /// or the exact inverse with damping 0 and r below `dim`, the dimension Lanczos ran in.
    pub fn check_invertible(&self, damping: f64, inverse: LowRankInverse, dim: usize) -> Result<()> {
        let r = self.values.len();
        if inverse == LowRankInverse::Exact && r < dim && !(damping > 0.0) {
            return Err(Error::Value {
                arg: "damping",
                msg: format!(
                    "arnoldi_inverse='exact' with rank {r} < {dim} identifiable directions inverts U diag(sigma) U^T + damping I: it needs damping > 0"
                ),
            });
        }
        let (top, low) = (self.values[0] + damping, self.values[r - 1] + damping);
        if !(low > PIVOT_RTOL * top) {
            return Err(Error::Singular {
                msg: format!(
                    "solver='arnoldi': the curvature's eigenvalue #{r} (plus damping) is {low:.3e}, not positive next to the largest \
                     ({top:.3e}): rank {r} exceeds its numerical rank; use a lower rank or damping > 0"
                ),
            });
        }
        Ok(())
    }

    /// X = the rank-r model's inverse applied to the columns of `b` (p x q). With the exact
    /// inverse the complement term (I - U U^T) b / damping includes b's part along the null
    /// space, which the caller replaces ([`super::NullSpace::fix_component`]); it is skipped when
    /// r = `dim` (nothing else to invert).
    pub fn solve(&self, b: ArrayView2<f64>, damping: f64, inverse: LowRankInverse, dim: usize) -> Array2<f64> {
        let u = &self.vectors;
        let c = u.t().dot(&b);
        let mut scaled = c.clone();
        for (mut row, s) in scaled.rows_mut().into_iter().zip(&self.values) {
            row /= s + damping;
        }
        let mut x = u.dot(&scaled);
        if inverse == LowRankInverse::Exact && u.ncols() < dim {
            // (I - U U^T) b / damping
            x.scaled_add(1.0 / damping, &(&b - &u.dot(&c)));
        }
        x
    }
}
