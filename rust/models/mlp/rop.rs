//! Curvature products of one block of rows for a block of directions V (p x r) at once, by the
//! R-operator (DESIGN-networks.md section 2).
//!
//! The r directions run side by side: every per-layer quantity of the pass is one row-major
//! B x (r w) array whose columns c w .. (c + 1) w belong to direction c. A product with a matrix
//! shared by the directions is then one wide GEMM: with the layer input A_j (B x in) on the left,
//! against the directions' weight blocks stacked as columns (in x r out); with a layer's weights
//! W_j on the right, on the same memory read as (B r) x w (row i r + c is row i of direction c).
//! phi'(Z) (and phi'') is evaluated once per block, not once per direction.

use ndarray::{s, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2, Axis, Zip};

use super::pass::Forward;
use super::Mlp;
use crate::data::XView;
use crate::linalg::gemm;

/// Entries of the per-chunk intermediates (the stacked directions and the B x (r w) arrays): the
/// directions are processed in chunks of columns that keep them near this size (32 MiB).
const PRODUCT_ENTRIES: usize = 1 << 22;

/// phi'(Z_j), and phi''(Z_j) for the exact Hessian, of every hidden layer of a block (index j for
/// the activation A_{j+1} = phi(Z_j)).
pub(super) struct Slopes {
    d1: Vec<Array2<f64>>,
    d2: Option<Vec<Array2<f64>>>,
}

/// Multiplies every direction's block of the row-major `a` (B x (r w)) by `d` (B x w), entrywise.
fn scale_blocks(a: &mut Array2<f64>, d: &Array2<f64>) {
    let w = d.ncols();
    for (mut row, drow) in a.rows_mut().into_iter().zip(d.rows()) {
        let drow = drow.as_slice().expect("owned rows are contiguous");
        for block in row.as_slice_mut().expect("owned rows are contiguous").chunks_exact_mut(w) {
            block.iter_mut().zip(drow).for_each(|(v, &s)| *v *= s);
        }
    }
}

/// The row-major B x (r w) array `a` read as (B r) x w.
fn stacked(a: &Array2<f64>, w: usize) -> ArrayView2<'_, f64> {
    a.view().into_shape_with_order((a.len() / w.max(1), w)).expect("an owned row-major array")
}

fn stacked_mut(a: &mut Array2<f64>, w: usize) -> ArrayViewMut2<'_, f64> {
    let rows = a.len() / w.max(1);
    a.view_mut().into_shape_with_order((rows, w)).expect("an owned row-major array")
}

impl Mlp {
    pub(super) fn slopes(&self, fw: &Forward, second_order: bool) -> Slopes {
        let act = self.activation;
        let map = |f: fn(&super::Activation, f64, f64) -> f64| -> Vec<Array2<f64>> {
            fw.a.iter().zip(&fw.z).map(|(a, z)| Zip::from(z).and(a).map_collect(|&z, &a| f(&act, z, a))).collect()
        };
        Slopes { d1: map(super::Activation::d1_at), d2: second_order.then(|| map(super::Activation::d2_at)) }
    }

    /// Directions per chunk of [`Mlp::add_curvature_products`] for a block of `b` rows.
    fn directions_per_chunk(&self, b: usize, r: usize) -> usize {
        // per direction: its stacked weights (p) and about three B x w arrays per layer
        let widths: usize = self.sizes[1..].iter().sum();
        let per = self.n_params_p() + 3 * b * widths;
        (PRODUCT_ENTRIES / per.max(1)).clamp(1, r.max(1))
    }

    /// Layer j's blocks of the directions `v` (p x r) stacked as columns: (in + 1) x (r out),
    /// m[a, c out + u] = V_c's Theta_j[u, a] (the last row the biases).
    fn stack_layer(&self, v: ArrayView2<f64>, j: usize) -> Array2<f64> {
        let (inp, o, off, r) = (self.sizes[j], self.sizes[j + 1], self.offsets[j], v.ncols());
        let mut m = Array2::zeros((inp + 1, r * o));
        // row by row of m, reading v a row (r values) at a time
        for (a, mut row) in m.rows_mut().into_iter().enumerate() {
            for u in 0..o {
                let src = v.row(off + u * (inp + 1) + a);
                for (c, &x) in src.iter().enumerate() {
                    row[c * o + u] = x;
                }
            }
        }
        m
    }

    /// `A_j m` (B x c) for `m` (in_j x c), row-major.
    fn input_product(&self, j: usize, x: XView, fw: &Forward, m: ArrayView2<f64>) -> Array2<f64> {
        let mut out = Array2::zeros((x.nrows(), m.ncols()));
        if j == 0 {
            x.dot_into(m, out.view_mut());
        } else {
            gemm(out.view_mut(), false, fw.a[j - 1].view(), m, 1.0);
        }
        out
    }

    /// Adds sum_i w_i K_i V to `out` (p x r) for the directions `v` (p x r) over one block:
    /// K = J^T Lambda J (Gauss-Newton), or, with `s` = the weighted s_j of the loss (and `slopes`
    /// holding phi''), the exact Hessian (Pearlmutter's R-operator):
    ///   R{Z_j} = A_j V_Wj^T + 1 V_bj^T + R{A_j} W_j^T,  R{A_j} = phi'(Z_{j-1}) o R{Z_{j-1}},
    ///   R{s_{j-1}} = (R{s_j} W_j + s_j V_Wj) o phi' + (s_j W_j) o phi'' o R{Z_{j-1}},
    ///   R{grad Theta_j} = R{s_j} abar_j^T + s_j R{abar_j}^T.
    /// `wl` is w_i Lambda_i (B x k x k).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_curvature_products(
        &self,
        theta: ArrayView1<f64>,
        x: XView,
        fw: &Forward,
        slopes: &Slopes,
        wl: &Array3<f64>,
        s: Option<&[Array2<f64>]>,
        v: ArrayView2<f64>,
        mut out: ArrayViewMut2<f64>,
    ) {
        let (b, r) = (x.nrows(), v.ncols());
        let rc = self.directions_per_chunk(b, r);
        for c0 in (0..r).step_by(rc) {
            let c1 = (c0 + rc).min(r);
            self.add_chunk(theta, x, fw, slopes, wl, s, v.slice(s![.., c0..c1]), out.slice_mut(s![.., c0..c1]));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_chunk(
        &self,
        theta: ArrayView1<f64>,
        x: XView,
        fw: &Forward,
        slopes: &Slopes,
        wl: &Array3<f64>,
        s: Option<&[Array2<f64>]>,
        v: ArrayView2<f64>,
        mut out: ArrayViewMut2<f64>,
    ) {
        let n_layers = self.n_layers();
        let (b, r) = (x.nrows(), v.ncols());
        let weights = |j: usize| self.layer(theta, j).slice_move(s![.., ..self.sizes[j]]);
        let m: Vec<Array2<f64>> = (0..n_layers).map(|j| self.stack_layer(v, j)).collect();

        // forward: R{Z_j} for every layer and R{A_j} (index j - 1), directions side by side
        let mut rz: Vec<Array2<f64>> = Vec::with_capacity(n_layers);
        let mut ra: Vec<Array2<f64>> = Vec::with_capacity(n_layers - 1);
        for j in 0..n_layers {
            let (inp, o) = (self.sizes[j], self.sizes[j + 1]);
            let mut z = self.input_product(j, x, fw, m[j].slice(s![..inp, ..]));
            z += &m[j].row(inp);
            if j > 0 {
                let mut a = rz[j - 1].clone();
                scale_blocks(&mut a, &slopes.d1[j - 1]);
                gemm(stacked_mut(&mut z, o), true, stacked(&a, inp), weights(j).t(), 1.0);
                ra.push(a);
            }
            rz.push(z);
        }

        // R{s_L} = w Lambda R{h}, per row and direction
        let k = self.sizes[n_layers];
        let rh = &rz[n_layers - 1];
        let mut rs = Array2::zeros((b, r * k));
        for i in 0..b {
            for c in 0..r {
                for a in 0..k {
                    rs[[i, c * k + a]] = (0..k).map(|a2| wl[[i, a, a2]] * rh[[i, c * k + a2]]).sum();
                }
            }
        }

        // backward
        for j in (0..n_layers).rev() {
            let (inp, o, off) = (self.sizes[j], self.sizes[j + 1], self.offsets[j]);
            // R{grad Theta_j} of every direction: R{s_j} abar_j^T (+ s_j R{A_j}^T for the Hessian)
            let mut g = Array2::zeros((inp, r * o));
            if j == 0 {
                x.t_dot_add(rs.view(), g.view_mut());
            } else {
                gemm(g.view_mut(), true, fw.a[j - 1].t(), rs.view(), 1.0);
                if let Some(s) = s {
                    for c in 0..r {
                        gemm(g.slice_mut(s![.., c * o..(c + 1) * o]), true, ra[j - 1].slice(s![.., c * inp..(c + 1) * inp]).t(), s[j].view(), 1.0);
                    }
                }
            }
            let bias = rs.sum_axis(Axis(0));
            // out[Theta_j[u, a], c] += g[a, c o + u] (a = in: the bias), a row (r values) at a time
            for u in 0..o {
                let row0 = off + u * (inp + 1);
                for a in 0..=inp {
                    let src = if a < inp { g.row(a) } else { bias.view() };
                    for (c, d) in out.row_mut(row0 + a).iter_mut().enumerate() {
                        *d += src[c * o + u];
                    }
                }
            }
            if j == 0 {
                break;
            }
            let w = weights(j);
            let mut prev = Array2::zeros((b, r * inp));
            gemm(stacked_mut(&mut prev, inp), false, stacked(&rs, o), w, 1.0);
            match s {
                None => scale_blocks(&mut prev, &slopes.d1[j - 1]),
                Some(s) => {
                    for c in 0..r {
                        let vw = m[j].slice(s![..inp, c * o..(c + 1) * o]);
                        gemm(prev.slice_mut(s![.., c * inp..(c + 1) * inp]), true, s[j].view(), vw.t(), 1.0);
                    }
                    let mut sw = Array2::zeros((b, inp));
                    gemm(sw.view_mut(), false, s[j].view(), w, 1.0);
                    let d2 = &slopes.d2.as_ref().expect("slopes of the exact Hessian hold phi''")[j - 1];
                    let rows = prev.rows_mut().into_iter().zip(rz[j - 1].rows()).zip(slopes.d1[j - 1].rows()).zip(d2.rows()).zip(sw.rows());
                    for ((((mut p, rzp), d1), d2), sw) in rows {
                        let (d1, d2, sw) = (d1.as_slice().expect("contiguous"), d2.as_slice().expect("contiguous"), sw.as_slice().expect("contiguous"));
                        let rzp = rzp.to_slice().expect("contiguous");
                        let p = p.as_slice_mut().expect("contiguous");
                        for (pb, rb) in p.chunks_exact_mut(inp).zip(rzp.chunks_exact(inp)) {
                            for a in 0..inp {
                                pb[a] = pb[a] * d1[a] + sw[a] * d2[a] * rb[a];
                            }
                        }
                    }
                }
            }
            rs = prev;
        }
    }
}
