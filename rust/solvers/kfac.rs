//! The K-FAC preconditioner (DESIGN-networks.md section 4): per block of parameters (an MLP's
//! layer [W | b]), the inverse of kron(S, A) + damping I + 2 l2 M, applied through the
//! eigendecompositions S = Q_S diag(s) Q_S^T and A = Q_A diag(a) Q_A^T (float64); cross-layer
//! blocks are dropped. The penalty M = kron(I, diag(m)) (m: 0 at the bias column) is not
//! diagonal in the eigenbasis; it is exact all the same by Woodbury: with c = 2 l2 and
//! U = kron(I, E_u) the unpenalised columns, K = K0 - c U U^T where
//! K0 = kron(S, A) + (damping + c) I is diagonal in Q_S (x) Q_A, and U^T K0^{-1} U is block
//! diagonal in Q_S's basis (|u| x |u| blocks, scalars for an MLP). The model's null space N
//! (the softmax's free output shifts) gets the operator's own inverse there, 1/(damping + s),
//! and K^{-1} acts on the rest: P = N diag(1/(damping + s)) N^T + (I - N N^T) K^{-1} (I - N N^T),
//! symmetric positive definite, and exactly the operator's inverse when G's layer blocks are
//! Kronecker products (one example; no hidden layer with a squared head).

use faer::Side;
use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, Axis};

use super::NullSpace;
use crate::blocks::map_reduce;
use crate::cancel::Cancel;
use crate::data::with_block;
use crate::error::{Error, Result};
use crate::linalg::{faer_ref, gemm, symmetrize_from_lower, Cholesky};
use crate::models::{KroneckerFactors, Model};
use crate::objective::Objective;

/// Entries of factor partial sums held at once (64 MiB): bounds the number of partial sums.
const PARTIAL_ENTRIES: usize = 1 << 23;

/// A damped eigenvalue product below this fraction of its block's largest is raised to it
/// (only reached with damping = 0 and l2 = 0, where the operator itself is nearly singular).
const EIGEN_FLOOR: f64 = 1e-10;

#[derive(Clone, Debug)]
pub struct Kronecker {
    pub(super) layers: Vec<Layer>,
    /// N (p x r) and 1 / (damping + s_c).
    pub(super) null: Option<(Array2<f64>, Array1<f64>)>,
}

#[derive(Clone, Debug)]
pub(super) struct Layer {
    pub(super) offset: usize,
    pub(super) qs: Array2<f64>,
    pub(super) qa: Array2<f64>,
    /// 1 / (s_j a_k + damping + c) (rows x cols)
    pub(super) inv: Array2<f64>,
    /// The penalty's Woodbury correction, when some columns are unpenalised and l2 > 0.
    pub(super) free: Option<Free>,
}

#[derive(Clone, Debug)]
pub(super) struct Free {
    /// Q_A's rows of the unpenalised columns (|u| x cols).
    pub(super) qa_u: Array2<f64>,
    /// (1/c I - Q_A[u] diag(inv[j]) Q_A[u]^T)^{-1} for every j (rows x |u| x |u|).
    pub(super) cinv: Array3<f64>,
}

/// The weighted means A and S (sums / W, symmetric) of every block, from one pass over the data
/// (deterministic: fixed row blocks and partial sums), or `None` if the model has no Kronecker
/// factors. `Err(Memory)` if the factors would not fit.
pub fn factors<M: Model + ?Sized>(obj: &Objective<M>, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Option<Vec<KroneckerFactors>>> {
    let Some(prec) = obj.model.preconditioning() else { return Ok(None) };
    let Some(layout) = prec.kronecker_factors() else { return Ok(None) };
    let entries = layout.iter().try_fold(0usize, |acc, f| acc.checked_add(f.s.len())?.checked_add(f.a.len()));
    let Some(entries) = entries else {
        return Err(Error::Memory { msg: "the K-FAC factors would need more values than any machine can address".into() });
    };
    let partials = (PARTIAL_ENTRIES / entries.max(1)).clamp(4, 64);
    // partial sums, one per thread in flight, and the eigenvectors
    crate::memory::check("the K-FAC factors", &[entries, rayon::current_num_threads() + 4], 8)?;
    let sums = map_reduce(
        obj.data.n(),
        partials,
        cancel,
        |r| {
            let mut out = layout.clone();
            with_block(obj.data, r, |b| prec.kronecker_factors_sum(theta, b, &mut out))?;
            Ok(out)
        },
        |acc, next| {
            for (x, y) in acc.iter_mut().zip(next) {
                x.s += &y.s;
                x.a += &y.a;
            }
        },
    )?;
    let w = obj.total_weight();
    Ok(Some(
        sums.unwrap_or(layout)
            .into_iter()
            .map(|mut f| {
                symmetrize_from_lower(&mut f.s);
                symmetrize_from_lower(&mut f.a);
                f.s /= w;
                f.a /= w;
                f
            })
            .collect(),
    ))
}

/// Eigenvalues (clamped at 0: the factors are PSD) and eigenvectors of a symmetric matrix.
fn eigh(m: &Array2<f64>) -> Result<(Array1<f64>, Array2<f64>)> {
    let view = m.view();
    let evd = faer_ref(&view)
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Singular { msg: format!("the eigendecomposition of a K-FAC factor failed ({e:?})") })?;
    let n = m.nrows();
    let (u, d) = (evd.U(), evd.S().column_vector());
    Ok((Array1::from_shape_fn(n, |i| d[i].max(0.0)), Array2::from_shape_fn((n, n), |(i, j)| u[(i, j)])))
}

/// EK-FAC's eigenvalue correction: given every block's eigenbases (Q_S, Q_A), the diagonals
/// (rows x cols each) of the exact Gauss-Newton blocks (penalty excluded) in those bases.
pub type Eigenvalues<'a> = dyn Fn(&[(Array2<f64>, Array2<f64>)]) -> Result<Vec<Array2<f64>>> + 'a;

/// EK-FAC's eigenvalue sums (DESIGN-networks.md section 4) in the eigenbases `bases` of the
/// factors, from one pass over the data: (1/W) sum_i w_i sum_c (q_Sj . s_ic)^2 (q_Aa . abar_i)^2
/// per block (deterministic, as [`factors`]).
pub fn ekfac_eigenvalues<M: Model + ?Sized>(
    obj: &Objective<M>,
    theta: ArrayView1<f64>,
    bases: &[(Array2<f64>, Array2<f64>)],
    cancel: &Cancel,
) -> Result<Vec<Array2<f64>>> {
    let Some(prec) = obj.model.preconditioning() else {
        return Err(Error::Value { arg: "curvature", msg: "'ekfac' needs a model with layers (a network)".into() });
    };
    let zeros: Vec<Array2<f64>> = bases.iter().map(|(qs, qa)| Array2::zeros((qs.nrows(), qa.nrows()))).collect();
    let entries: usize = zeros.iter().map(|z| z.len()).sum();
    let partials = (PARTIAL_ENTRIES / entries.max(1)).clamp(4, 64);
    let sums = map_reduce(
        obj.data.n(),
        partials,
        cancel,
        |r| {
            let mut out = zeros.clone();
            with_block(obj.data, r, |b| prec.ekfac_eigenvalues_sum(theta, b, bases, &mut out))?;
            Ok(out)
        },
        |acc, next| acc.iter_mut().zip(next).for_each(|(x, y)| *x += &y),
    )?;
    let w = obj.total_weight();
    Ok(sums.unwrap_or(zeros).into_iter().map(|s| s / w).collect())
}

/// One block's factors, eigendecomposed, with its penalty pattern.
struct Basis {
    offset: usize,
    ls: Array1<f64>,
    qs: Array2<f64>,
    la: Array1<f64>,
    qa: Array2<f64>,
    /// the penalty mask of the block's columns (the same in every row)
    mask: Array1<f64>,
}

impl Kronecker {
    /// The inverse of G + damping I + 2 l2 M (+ N S N^T) approximated blockwise from the factors
    /// of [`factors`], or `None` if the penalty mask is not Kronecker-shaped on some block (the
    /// same mask in every row of it). K-FAC (`eigenvalues` = `None`): kron(S, A) + damping I +
    /// 2 l2 M, the penalty exact by Woodbury. EK-FAC: in the eigenbasis Q_S (x) Q_A, the
    /// diagonal `eigenvalues` gives, plus the penalty's diagonal there, 2 l2 sum_a' m_a' Q_A[a', a]^2,
    /// and damping.
    pub fn new(
        factors: Vec<KroneckerFactors>,
        mask: &Array1<f64>,
        l2: f64,
        damping: f64,
        null: Option<&NullSpace>,
        eigenvalues: Option<&Eigenvalues<'_>>,
    ) -> Result<Option<Self>> {
        let mut bases = Vec::with_capacity(factors.len());
        for f in factors {
            let (rows, cols) = (f.s.nrows(), f.a.nrows());
            let m = mask.slice(s![f.offset..f.offset + rows * cols]).into_shape_with_order((rows, cols)).expect("contiguous");
            if m.rows().into_iter().any(|r| r != m.row(0)) {
                return Ok(None);
            }
            let (ls, qs) = eigh(&f.s)?;
            let (la, qa) = eigh(&f.a)?;
            bases.push(Basis { offset: f.offset, ls, qs, la, qa, mask: m.row(0).to_owned() });
        }
        let corrected = match eigenvalues {
            Some(e) => Some(e(&bases.iter().map(|b| (b.qs.clone(), b.qa.clone())).collect::<Vec<_>>())?),
            None => None,
        };
        let mut layers = Vec::with_capacity(bases.len());
        for (i, b) in bases.into_iter().enumerate() {
            let Basis { offset, ls, qs, la, qa, mask } = b;
            let (rows, cols) = (qs.nrows(), qa.nrows());
            let unpenalised: Vec<usize> = (0..cols).filter(|&a| mask[a] == 0.0).collect();
            let c = if unpenalised.len() < cols { 2.0 * l2 } else { 0.0 };
            let mut lam = match &corrected {
                Some(e) => {
                    let pen = Array1::from_shape_fn(cols, |a| 2.0 * l2 * (0..cols).map(|a2| mask[a2] * qa[[a2, a]] * qa[[a2, a]]).sum::<f64>());
                    Array2::from_shape_fn((rows, cols), |(j, k)| e[i][[j, k]] + pen[k] + damping)
                }
                None => Array2::from_shape_fn((rows, cols), |(j, k)| ls[j] * la[k] + damping + c),
            };
            let top = lam.iter().copied().fold(0.0, f64::max);
            let floor = if top > 0.0 { EIGEN_FLOOR * top } else { 1.0 };
            lam.mapv_inplace(|v| if v > floor { v } else { floor });
            let inv = lam.mapv(|v| 1.0 / v);
            let free = (corrected.is_none() && c > 0.0 && !unpenalised.is_empty()).then(|| {
                let qa_u = qa.select(Axis(0), &unpenalised);
                let nu = unpenalised.len();
                let mut cinv = Array3::zeros((rows, nu, nu));
                for j in 0..rows {
                    let scaled = &qa_u * &inv.row(j).insert_axis(Axis(0));
                    let mut cj = -scaled.dot(&qa_u.t());
                    cj.diag_mut().mapv_inplace(|v| v + 1.0 / c);
                    // not positive definite only with damping = 0 and a bias of no curvature:
                    // leave that block without the correction (K0^{-1} alone is still SPD)
                    if let Ok(chol) = Cholesky::factor(cj.view()) {
                        let mut out = cinv.index_axis_mut(Axis(0), j);
                        out.assign(&Array2::eye(nu));
                        chol.solve_in_place(out);
                    }
                }
                Free { qa_u, cinv }
            });
            layers.push(Layer { offset, qs, qa, inv, free });
        }
        let null = null.map(|n| (n.basis.clone(), n.scales.mapv(|s| 1.0 / (s + damping))));
        Ok(Some(Self { layers, null }))
    }

    pub fn apply(&self, r: ArrayView1<f64>) -> Array1<f64> {
        let mut r = r.to_owned();
        let coef = self.null.as_ref().map(|(n, _)| {
            let c = n.t().dot(&r);
            r -= &n.dot(&c);
            c
        });
        let mut z = r.clone();
        for layer in &self.layers {
            let (rows, cols) = layer.inv.dim();
            let block = s![layer.offset..layer.offset + rows * cols];
            let rm = r.slice(block).into_shape_with_order((rows, cols)).expect("contiguous");
            let x = layer.solve(rm);
            z.slice_mut(block).assign(&x.into_shape_with_order(rows * cols).expect("owned"));
        }
        if let (Some((n, inv)), Some(c)) = (&self.null, coef) {
            let drift = n.t().dot(&z);
            z += &n.dot(&(&c * inv - drift));
        }
        z
    }
}

impl Layer {
    /// K^{-1} R for one block R (rows x cols), R read as [W | b].
    fn solve(&self, rm: ArrayView2<f64>) -> Array2<f64> {
        let (rows, cols) = self.inv.dim();
        let mut tmp = Array2::zeros((rows, cols));
        gemm(tmp.view_mut(), false, self.qs.t(), rm, 1.0);
        let mut y = Array2::zeros((rows, cols));
        gemm(y.view_mut(), false, tmp.view(), self.qa.view(), 1.0);
        y *= &self.inv;
        if let Some(free) = &self.free {
            // t_j = (K0^{-1} r)'s unpenalised columns in Q_S's basis; add K0^{-1} U C^{-1} t
            let t = y.dot(&free.qa_u.t());
            let mut sol = Array2::zeros(t.dim());
            for (j, mut row) in sol.rows_mut().into_iter().enumerate() {
                row.assign(&free.cinv.index_axis(Axis(0), j).dot(&t.row(j)));
            }
            y += &(sol.dot(&free.qa_u) * &self.inv);
        }
        gemm(tmp.view_mut(), false, self.qs.view(), y.view(), 1.0);
        let mut out = Array2::zeros((rows, cols));
        gemm(out.view_mut(), false, tmp.view(), self.qa.t(), 1.0);
        out
    }
}
