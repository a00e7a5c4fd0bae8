//! The K-FAC factors of an MLP (DESIGN-networks.md section 4): per layer j, with abar = [a; 1]
//! the layer's input and its 1 and s_c the backpropagated columns of B (Lambda = B B^T, the
//! exact expectation over the outputs, no sampling), A_j = sum_i w_i abar_i abar_i^T and
//! S_j = sum_i w_i sum_c s_ic s_ic^T. Layer j's block of theta is [W_j | b_j] row-major
//! (out x in+1), so its per-example gradient is kron(s, abar) and its Gauss-Newton block is
//! approximated by kron(S_j, A_j) (the sums divided by W). EK-FAC keeps the eigenbases
//! Q_S (x) Q_A and replaces the eigenvalues s_j a_k by the exact block's diagonal in that basis,
//! the mean of the squared per-example gradients there (a second pass).

use ndarray::{s, Array1, Array2, ArrayView1, Axis};

use super::Mlp;
use crate::data::{Batch, XView};
use crate::linalg::{gemm, gemm_lower};
use crate::models::KroneckerFactors;

impl Mlp {
    /// Zeroed factors, one per layer, at the layer's offset in theta.
    pub(super) fn kronecker_layout(&self) -> Vec<KroneckerFactors> {
        (0..self.n_layers())
            .map(|j| {
                let (inp, out) = (self.sizes[j], self.sizes[j + 1]);
                KroneckerFactors { offset: self.layer_range(j).start, s: Array2::zeros((out, out)), a: Array2::zeros((inp + 1, inp + 1)) }
            })
            .collect()
    }

    /// Adds the block's A_j and S_j sums to the lower triangles of `out` (one per layer).
    pub(super) fn add_kronecker_factors(&self, theta: ArrayView1<f64>, data: &Batch, out: &mut [KroneckerFactors]) {
        let fw = self.forward(theta, data.x);
        let w = Array1::from_shape_fn(data.n(), |i| data.weight(i));
        for (j, f) in out.iter_mut().enumerate() {
            let cols = 0..self.sizes[j] + 1;
            match j {
                0 => data.x.gram_add(w.view(), cols.clone(), cols, true, f.a.view_mut()),
                _ => XView::Dense(fw.a[j - 1].view()).gram_add(w.view(), cols.clone(), cols, true, f.a.view_mut()),
            }
        }
        // the columns of B carry sqrt(w_i), so each backpropagated s_c does too
        let b = self.kfac_output_factors(&fw, data);
        for c in 0..b.dim().2 {
            let s = self.backward(theta, &fw, b.index_axis(Axis(2), c).to_owned());
            for (sj, f) in s.iter().zip(out.iter_mut()) {
                gemm_lower(f.s.view_mut(), true, sj.t(), sj.view(), 1.0);
            }
        }
    }

    /// Adds each layer's EK-FAC eigenvalue sums over `data` to `out` (out x in+1 each):
    /// sum_i w_i sum_c (q_Sj . s_ic)^2 (q_Aa . abar_i)^2 for the eigenvectors (Q_S, Q_A) of
    /// `bases`: the squares of kron(s_ic, abar_i), each example's gradient block, in that basis.
    pub(super) fn add_ekfac_eigenvalues(&self, theta: ArrayView1<f64>, data: &Batch, bases: &[(Array2<f64>, Array2<f64>)], out: &mut [Array2<f64>]) {
        let fw = self.forward(theta, data.x);
        // (Q_A^T abar_i)^2 per example and layer: abar = [a, 1]
        let pa2: Vec<Array2<f64>> = bases
            .iter()
            .enumerate()
            .map(|(j, (_, qa))| {
                let inp = self.sizes[j];
                let mut pa = match j {
                    0 => data.x.dot(qa.slice(s![..inp, ..])),
                    _ => fw.a[j - 1].dot(&qa.slice(s![..inp, ..])),
                };
                pa += &qa.row(inp);
                pa.mapv_inplace(|v| v * v);
                pa
            })
            .collect();
        // the columns of B carry sqrt(w_i), so (Q_S^T s_ic)^2 carries w_i
        let b = self.kfac_output_factors(&fw, data);
        for c in 0..b.dim().2 {
            let s = self.backward(theta, &fw, b.index_axis(Axis(2), c).to_owned());
            for (((sj, (qs, _)), pa2j), o) in s.iter().zip(bases).zip(&pa2).zip(out.iter_mut()) {
                let mut ps = sj.dot(qs);
                ps.mapv_inplace(|v| v * v);
                gemm(o.view_mut(), true, ps.t(), pa2j.view(), 1.0);
            }
        }
    }
}
