//! One block of rows through the network: the forward pass, backpropagation of output
//! derivatives to every layer (s_l = dl/dz_l), and the R-operator pass that gives Hessian- and
//! Gauss-Newton-vector products (DESIGN-networks.md sections 1-2).
//!
//! Layers are 0-based here: layer j maps its input A_j (A_0 = X) to Z_j = A_j W_j^T + 1 b_j^T,
//! and A_{j+1} = phi(Z_j); the output is h = Z_{L-1}. Rows are examples throughout, so every
//! step is a matrix product on the block.

use ndarray::{s, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, Axis, Zip};

use super::{targets, Mlp};
use crate::data::{Batch, XView};
use crate::linalg::gemm;
use crate::models::glm::Family;
use rayon::prelude::*;

/// The forward pass of a block: pre-activations of every layer and inputs of the hidden ones.
pub(super) struct Forward {
    /// Z_j (B x out_j) for every layer; the last is the output h.
    pub z: Vec<Array2<f64>>,
    /// A_j = phi(Z_{j-1}) (B x in_j) for j >= 1, at index j - 1.
    pub a: Vec<Array2<f64>>,
}

impl Forward {
    pub fn output(&self) -> &Array2<f64> {
        self.z.last().expect("at least one layer")
    }
}

/// Output derivatives of a block: residuals dl/dh (B x k) and, when asked, Lambda = d2l/dh2
/// (B x k x k).
pub(super) struct Head {
    pub res: Array2<f64>,
    pub lambda: Option<Array3<f64>>,
}

impl Mlp {
    /// `A_j m` (B x c) for `m` (in_j x c).
    pub(super) fn input_dot(&self, j: usize, x: XView, fw_a: &[Array2<f64>], m: ArrayView2<f64>) -> Array2<f64> {
        if j == 0 {
            x.dot(m)
        } else {
            fw_a[j - 1].dot(&m)
        }
    }

    /// `out (in_j x c) += A_j^T t` for `t` (B x c).
    fn input_t_dot_add(&self, j: usize, x: XView, fw: &Forward, t: ArrayView2<f64>, out: ArrayViewMut2<f64>) {
        if j == 0 {
            x.t_dot_add(t, out)
        } else {
            gemm(out, true, fw.a[j - 1].t(), t, 1.0)
        }
    }

    pub(super) fn forward(&self, theta: ArrayView1<f64>, x: XView) -> Forward {
        let n_layers = self.n_layers();
        let mut z = Vec::with_capacity(n_layers);
        let mut a: Vec<Array2<f64>> = Vec::with_capacity(n_layers - 1);
        for j in 0..n_layers {
            let t = self.layer(theta, j);
            let inp = self.sizes[j];
            let mut zj = self.input_dot(j, x, &a, t.slice(s![.., ..inp]).t());
            zj += &t.column(inp);
            if j + 1 < n_layers {
                a.push(zj.mapv(|v| self.activation.value(v)));
            }
            z.push(zj);
        }
        Forward { z, a }
    }

    /// dl/dh and optionally d2l/dh2 of every row (unweighted).
    pub(super) fn head(&self, fw: &Forward, y: ArrayView2<f64>, with_lambda: bool) -> Head {
        let h = fw.output();
        let (n, k) = h.dim();
        let mut res = Array2::zeros((n, k));
        let mut lambda = with_lambda.then(|| Array3::zeros((n, k, k)));
        for i in 0..n {
            let hi = h.row(i);
            let hi = hi.as_slice().expect("owned rows are contiguous");
            let mut r = res.row_mut(i);
            let r = r.as_slice_mut().expect("owned rows are contiguous");
            match lambda.as_mut() {
                Some(l) => {
                    let mut li = l.index_axis_mut(Axis(0), i);
                    self.head.residual_and_hessian_row(hi, &targets(&y, i), r, Some(li.as_slice_mut().expect("contiguous")));
                }
                None => self.head.residual_and_hessian_row(hi, &targets(&y, i), r, None),
            }
        }
        Head { res, lambda }
    }

    /// Backpropagation: from `s_out` = dl/dh (B x k, any per-row scaling) to s_j = dl/dz_j of
    /// every layer: s_{j-1} = (s_j W_j) o phi'(Z_{j-1}).
    pub(super) fn backward(&self, theta: ArrayView1<f64>, fw: &Forward, s_out: Array2<f64>) -> Vec<Array2<f64>> {
        let n_layers = self.n_layers();
        let mut s = vec![Array2::zeros((0, 0)); n_layers];
        s[n_layers - 1] = s_out;
        for j in (1..n_layers).rev() {
            let t = self.layer(theta, j);
            let mut prev = s[j].dot(&t.slice(s![.., ..self.sizes[j]]));
            Zip::from(&mut prev).and(&fw.z[j - 1]).and(&fw.a[j - 1]).for_each(|p, &z, &a| *p *= self.activation.d1_at(z, a));
            s[j - 1] = prev;
        }
        s
    }

    /// Adds the gradient blocks sum_rows s_j abar_j^T, laid out as theta, to `out` (p).
    pub(super) fn add_grads(&self, x: XView, fw: &Forward, s: &[Array2<f64>], mut out: ArrayViewMut1<f64>) {
        for (j, sj) in s.iter().enumerate() {
            let (inp, o) = (self.sizes[j], self.sizes[j + 1]);
            let mut tmp = Array2::zeros((inp, o));
            self.input_t_dot_add(j, x, fw, sj.view(), tmp.view_mut());
            let mut block = self.layer_mut(out.view_mut(), j);
            block.slice_mut(s![.., ..inp]).zip_mut_with(&tmp.t(), |b, &v| *b += v);
            block.column_mut(inp).zip_mut_with(&sj.sum_axis(Axis(0)), |b, &v| *b += v);
        }
    }

    /// Writes the per-row outer products kron(s_j, abar_j), laid out as theta, into the rows of
    /// `out` (B x p): per-example gradients when `s` came from the unweighted residuals.
    pub(super) fn write_example_grads(&self, x: XView, fw: &Forward, s: &[Array2<f64>], mut out: ArrayViewMut2<f64>) {
        for i in 0..out.nrows() {
            let mut row = out.row_mut(i);
            for (j, sj) in s.iter().enumerate() {
                let inp = self.sizes[j];
                let mut block = self.layer_mut(row.view_mut(), j);
                for (o, mut seg) in block.rows_mut().into_iter().enumerate() {
                    let so = sj[[i, o]];
                    if j == 0 {
                        x.row_scaled_into(i, so, seg.slice_mut(s![..inp]));
                    } else {
                        seg.slice_mut(s![..inp]).zip_mut_with(&fw.a[j - 1].row(i), |g, &a| *g = so * a);
                    }
                    seg[inp] = so;
                }
            }
        }
    }

    /// Columns of B_i with B_i B_i^T = Lambda_i, scaled by sqrt(w_i): (B x k x k), [i, :, c] the
    /// c-th column. Softmax: B = diag(sqrt p) - p sqrt(p)^T; other heads (diagonal Lambda: one
    /// output, or a multi-output squared head's 2 I): sqrt(Lambda).
    pub(super) fn lambda_factors(&self, fw: &Forward, data: &Batch) -> Array3<f64> {
        let h = fw.output();
        let (n, k) = h.dim();
        let mut b = Array3::zeros((n, k, k));
        let mut p = vec![0.0; k];
        let mut lam = vec![0.0; k * k];
        let mut res = vec![0.0; k];
        for i in 0..n {
            let sw = data.weight(i).sqrt();
            let hi = h.row(i);
            let hi = hi.as_slice().expect("contiguous");
            if !matches!(self.head, Family::Multinomial { .. }) {
                self.head.residual_and_hessian_row(hi, &targets(&data.y, i), &mut res, Some(&mut lam));
                for c in 0..k {
                    b[[i, c, c]] = sw * lam[c * k + c].max(0.0).sqrt();
                }
            } else {
                self.head.mean(hi, &mut p);
                for c in 0..k {
                    let sp = p[c].sqrt();
                    for r in 0..k {
                        b[[i, r, c]] = sw * (if r == c { sp } else { 0.0 } - p[r] * sp);
                    }
                }
            }
        }
        b
    }

    /// The rows J_i^T B_i[:, c] sqrt(w_i) (row c * B + i) of the Gauss-Newton factor of a block:
    /// G's data part is M^T M.
    pub(super) fn gauss_newton_factor(&self, theta: ArrayView1<f64>, data: &Batch, fw: &Forward) -> Array2<f64> {
        let b = self.lambda_factors(fw, data);
        let (n, k) = (data.n(), self.n_outputs_k());
        let mut m = Array2::zeros((n * k, self.n_params_p()));
        // one backward pass per output, each writing its own rows: in parallel
        m.axis_chunks_iter_mut(Axis(0), n.max(1)).into_par_iter().enumerate().for_each(|(c, rows)| {
            let s = self.backward(theta, fw, b.index_axis(Axis(2), c).to_owned());
            self.write_example_grads(data.x, fw, &s, rows);
        });
        m
    }

    /// The diagonal of sum_i w_i J_i^T Lambda_i J_i over a block, added to `out`: per layer,
    /// sum_c (s_j^(c) o s_j^(c))^T (abar_j o abar_j) with s^(c) the backpropagated columns of B.
    pub(super) fn add_gauss_newton_diag(&self, theta: ArrayView1<f64>, data: &Batch, fw: &Forward, mut out: ArrayViewMut1<f64>) {
        let b = self.lambda_factors(fw, data);
        for c in 0..self.n_outputs_k() {
            let s = self.backward(theta, fw, b.index_axis(Axis(2), c).to_owned());
            for (j, sj) in s.iter().enumerate() {
                let inp = self.sizes[j];
                let sq = sj.mapv(|v| v * v);
                let mut tmp = Array2::zeros((inp, self.sizes[j + 1]));
                if j == 0 {
                    data.x.sq_t_dot_add(sq.view(), tmp.view_mut());
                } else {
                    gemm(tmp.view_mut(), true, fw.a[j - 1].mapv(|v| v * v).t(), sq.view(), 1.0);
                }
                let mut block = self.layer_mut(out.view_mut(), j);
                block.slice_mut(s![.., ..inp]).zip_mut_with(&tmp.t(), |o, &v| *o += v);
                block.column_mut(inp).zip_mut_with(&sq.sum_axis(Axis(0)), |o, &v| *o += v);
            }
        }
    }

    /// `out (B x q) += sum_j sum_o s_j[:, o] (A_j V_tj[o, ..in]^T + V_tj[o, in])`: every query's
    /// layer blocks contracted with the block's layer factors, without forming gradients.
    pub(super) fn add_contracted_scores(&self, x: XView, fw: &Forward, s: &[Array2<f64>], v: ArrayView2<f64>, mut out: ArrayViewMut2<f64>) {
        let q = v.ncols();
        let n = out.nrows();
        for (j, sj) in s.iter().enumerate() {
            let (inp, o) = (self.sizes[j], self.sizes[j + 1]);
            let off = self.offsets[j];
            // queries per product, so that the B x (o qc) intermediate stays near 4 M entries
            let qc = (CONTRACT_ENTRIES / (n * o).max(1)).clamp(1, q.max(1));
            for t0 in (0..q).step_by(qc) {
                let t1 = (t0 + qc).min(q);
                // m[a, (t - t0) o + u] = v[off + u (in + 1) + a, t]
                let mut m = Array2::zeros((inp + 1, (t1 - t0) * o));
                for t in t0..t1 {
                    let vt = v.slice(s![off..off + o * (inp + 1), t]).to_owned();
                    let vt = vt.into_shape_with_order((o, inp + 1)).expect("an owned vector");
                    m.slice_mut(s![.., (t - t0) * o..(t - t0 + 1) * o]).assign(&vt.t());
                }
                let mut pm = self.input_dot(j, x, &fw.a, m.slice(s![..inp, ..]));
                pm += &m.row(inp);
                for t in t0..t1 {
                    let pt = pm.slice(s![.., (t - t0) * o..(t - t0 + 1) * o]);
                    let mut col = out.column_mut(t);
                    Zip::from(&mut col).and(pt.rows()).and(sj.rows()).for_each(|c, p, s| *c += p.dot(&s));
                }
            }
        }
    }
}

/// Entries of the per-product intermediate of [`Mlp::add_contracted_scores`].
const CONTRACT_ENTRIES: usize = 1 << 22;

/// The (B x p) weighted residual rows as an owned array: `w_i res_i`.
pub(super) fn weighted(res: &Array2<f64>, data: &Batch) -> Array2<f64> {
    let mut r = res.clone();
    for (i, mut row) in r.rows_mut().into_iter().enumerate() {
        row *= data.weight(i);
    }
    r
}

/// `w_i Lambda_i` for every row.
pub(super) fn weighted_lambda(lambda: &Array3<f64>, data: &Batch) -> Array3<f64> {
    let mut l = lambda.clone();
    for (i, mut m) in l.outer_iter_mut().enumerate() {
        m *= data.weight(i);
    }
    l
}
