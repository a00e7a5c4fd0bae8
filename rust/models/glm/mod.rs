//! Generalised linear models: theta = one row [coef_1..coef_d, intercept] per output, stored
//! row-major (p = k (d + 1)); eta = X coef^T + intercept (DESIGN.md section 2).
//!
//! Every kernel is a matrix product on the block: the gradient of one example is its residual
//! times its row z = [x, 1], so scores and Hessians never loop over examples outside BLAS-like
//! code.

mod family;

pub use family::{sigmoid, softplus, Family};

use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut1, ArrayViewMut2, ArrayViewMut3, Axis, ShapeBuilder, Zip};
use rayon::prelude::*;

use super::{check_one_target, scores_from_grads, Float32Grads, Model, Preconditioning, Prediction, QueryNorm};
use crate::data::{Batch, XView};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug)]
pub struct Glm {
    pub family: Family,
    /// Number of input features d.
    pub d: usize,
}

/// What [`Glm::row_sums`] gives of a block of rows.
struct RowSums {
    loss: f64,
    /// w_i dl/deta (n x k).
    wres: Array2<f64>,
    /// d2l/deta2 (n x k x k), when asked for.
    hess: Option<Array3<f64>>,
}

impl Glm {
    pub fn new(family: Family, d: usize) -> Self {
        Self { family, d }
    }
    /// k, the number of linear predictors.
    pub fn k(&self) -> usize {
        self.family.n_outputs()
    }
    /// Parameters per output row, d + 1.
    fn row(&self) -> usize {
        self.d + 1
    }

    /// Check that `theta` has p entries and `x` has d columns.
    pub fn check_theta(&self, theta: ArrayView1<f64>) -> Result<()> {
        if theta.len() != self.n_params() {
            return Err(Error::Shape {
                arg: "theta",
                msg: format!("has {} entries, expected {} (k={} x (d+1)={})", theta.len(), self.n_params(), self.k(), self.row()),
            });
        }
        crate::error::check_finite("theta", theta.iter())
    }

    /// Linear predictors of the rows of `x`: (n x k).
    pub fn eta(&self, theta: ArrayView1<f64>, x: XView) -> Array2<f64> {
        let (k, r, d) = (self.k(), self.row(), self.d);
        let t = theta.into_shape_with_order((k, r)).expect("theta length checked by caller");
        let mut eta = x.dot(t.slice(s![.., ..d]).t());
        eta += &t.column(d);
        eta
    }

    /// Mean responses (n x k): identity, sigmoid, exp or softmax of eta.
    pub fn predict_mean(&self, theta: ArrayView1<f64>, x: XView) -> Array2<f64> {
        let mut eta = self.eta(theta, x);
        let k = self.k();
        let mut m = vec![0.0; k];
        for mut row in eta.rows_mut() {
            self.family.mean(row.as_slice().expect("owned rows are contiguous"), &mut m);
            row.assign(&ArrayView1::from(&m));
        }
        eta
    }

    /// Residuals dl/deta (n x k) and, if asked, eta-Hessians (n x k x k) of the rows of `data`.
    fn residuals(&self, theta: ArrayView1<f64>, data: &Batch, with_hessian: bool) -> (Array2<f64>, Option<Array3<f64>>) {
        self.residuals_at(self.eta(theta, data.x).view(), data, with_hessian)
    }

    /// [`Glm::residuals`] given the rows' linear predictors `eta` (n x k).
    fn residuals_at(&self, eta: ArrayView2<f64>, data: &Batch, with_hessian: bool) -> (Array2<f64>, Option<Array3<f64>>) {
        let k = self.k();
        let mut res = Array2::zeros((data.n(), k));
        let mut hess = with_hessian.then(|| Array3::zeros((data.n(), k, k)));
        for i in 0..data.n() {
            let e = eta.row(i);
            let e = e.as_slice().expect("owned rows are contiguous");
            let mut r = res.row_mut(i);
            let r = r.as_slice_mut().expect("owned rows are contiguous");
            match hess.as_mut() {
                Some(h) => {
                    let mut hi = h.index_axis_mut(Axis(0), i);
                    self.family.residual_and_hessian(e, data.y[[i, 0]], r, Some(hi.as_slice_mut().expect("contiguous")));
                }
                None => self.family.residual_and_hessian(e, data.y[[i, 0]], r, None),
            }
        }
        (res, hess)
    }

    /// The weighted loss sum, the weighted residuals w_i dl/deta (n x k) and, if asked, the
    /// eta-Hessians (n x k x k) of the rows of `data`, from one evaluation of their linear
    /// predictors.
    fn row_sums(&self, theta: ArrayView1<f64>, data: &Batch, with_hessian: bool) -> RowSums {
        let eta = self.eta(theta, data.x);
        let (mut wres, hess) = self.residuals_at(eta.view(), data, with_hessian);
        let mut loss = 0.0;
        for (i, (e, mut row)) in eta.rows().into_iter().zip(wres.rows_mut()).enumerate() {
            let w = data.weight(i);
            if w != 0.0 {
                loss += w * self.family.loss(e.as_slice().expect("owned rows are contiguous"), data.y[[i, 0]]);
            }
            row *= w;
        }
        RowSums { loss, wres, hess }
    }

    /// sum_i w_i grad l_i from the weighted residuals: coef of class c X^T (w res_c), its
    /// intercept sum(w res_c).
    fn grad_of(&self, data: &Batch, wres: ArrayView2<f64>) -> Array1<f64> {
        let (k, r, d) = (self.k(), self.row(), self.d);
        let mut gx = Array2::zeros((d, k));
        data.x.t_dot_add(wres, gx.view_mut());
        let mut g = Array1::zeros(self.n_params());
        for c in 0..k {
            g.slice_mut(s![c * r..c * r + d]).assign(&gx.column(c));
            g[c * r + d] = wres.column(c).sum();
        }
        g
    }

    /// Adds sum_i w_i Hess l_i to the lower triangle of `out` given the rows' eta-Hessians
    /// `hess` (n x k x k); see [`Model::hessian_sum`] below.
    fn add_hessian_of(&self, data: &Batch, hess: &Array3<f64>, mut out: ArrayViewMut2<f64>) {
        let (k, r) = (self.k(), self.row());
        let weights = |c: usize, c2: usize| Array1::from_shape_fn(data.n(), |i| data.weight(i) * hess[[i, c, c2]]);
        let derived = self.derived_diagonal();
        // the product of a class pair (only with k > 1)
        let mut t = (k > 1).then(|| Array2::zeros((r, r)));
        for c in 0..k {
            if !derived {
                data.x.gram_add(weights(c, c).view(), 0..r, 0..r, true, out.slice_mut(s![c * r..(c + 1) * r, c * r..(c + 1) * r]));
            }
            for c2 in 0..c {
                let t = t.as_mut().expect("allocated for k > 1");
                t.fill(0.0);
                data.x.gram_add(weights(c, c2).view(), 0..r, 0..r, true, t.view_mut());
                // block (c, c2) lies below H's diagonal: all of it is kept
                let mut block = out.slice_mut(s![c * r..(c + 1) * r, c2 * r..(c2 + 1) * r]);
                Zip::indexed(&mut block).for_each(|(i, j), o| *o += t[[i.max(j), i.min(j)]]);
                if derived {
                    for cc in [c, c2] {
                        let mut diag = out.slice_mut(s![cc * r..(cc + 1) * r, cc * r..(cc + 1) * r]);
                        Zip::indexed(&mut diag).and(&*t).for_each(|(i, j), o, &v| {
                            if i >= j {
                                *o -= v
                            }
                        });
                    }
                }
            }
        }
    }

    /// Gradients of predictions at the rows of `x`: ((n k) x p), row t*k + c is the gradient in
    /// theta of prediction c at point t (the linear predictor or the mean response).
    fn prediction_grads_of(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Array2<f64> {
        let (k, r, d) = (self.k(), self.row(), self.d);
        let eta = self.eta(theta, x);
        let mut out = Array2::zeros((x.nrows() * k, self.n_params()));
        let mut jac = vec![0.0; k * k];
        for t in 0..x.nrows() {
            match kind {
                Prediction::Linear => jac.iter_mut().enumerate().for_each(|(i, j)| *j = if i % (k + 1) == 0 { 1.0 } else { 0.0 }),
                Prediction::Mean => self.family.mean_jacobian(eta.row(t).as_slice().expect("contiguous"), &mut jac),
            }
            // d mean_c / d theta_(c', a) = J[c, c'] z_a
            for c in 0..k {
                let mut row = out.row_mut(t * k + c);
                for c2 in 0..k {
                    let jv = jac[c * k + c2];
                    let mut seg = row.slice_mut(s![c2 * r..(c2 + 1) * r]);
                    x.row_scaled_into(t, jv, seg.slice_mut(s![..d]));
                    seg[d] = jv;
                }
            }
        }
        out
    }
}

impl Model for Glm {
    fn n_params(&self) -> usize {
        self.k() * self.row()
    }

    fn n_features(&self) -> usize {
        self.d
    }

    fn n_outputs(&self) -> usize {
        self.k()
    }

    fn predict(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        Ok(match kind {
            Prediction::Linear => self.eta(theta, x),
            Prediction::Mean => self.predict_mean(theta, x),
        })
    }

    fn prediction_grads(&self, theta: ArrayView1<f64>, x: XView, kind: Prediction) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        Ok(self.prediction_grads_of(theta, x, kind))
    }

    /// Row t k + c of J is z_t = [x_t, 1] in class c's block of theta, so (J B) row t k + c is
    /// x_t B_c + b_c with B_c, b_c the rows of B for class c's coefficients and intercept: k
    /// products of the rows with (d x m) blocks, not one with the k-times-wider, mostly zero J.
    fn linear_jacobian_times(&self, theta: ArrayView1<f64>, x: XView, b: ArrayView2<f64>) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let (k, r, d, n) = (self.k(), self.row(), self.d, x.nrows());
        let mut out = Array2::zeros((n * k, b.ncols()));
        let mut part = Array2::zeros((n, b.ncols()));
        for c in 0..k {
            x.dot_into(b.slice(s![c * r..c * r + d, ..]), part.view_mut());
            part += &b.row(c * r + d);
            out.slice_mut(s![c..;k, ..]).assign(&part);
        }
        Ok(out)
    }

    /// The k x k eta-Hessians: the Hessian weight a_i of DESIGN.md section 2 when k = 1.
    fn output_hessians(&self, theta: ArrayView1<f64>, data: &Batch) -> Result<Array2<f64>> {
        let k = self.k();
        let (_, h) = self.residuals(theta, data, true);
        Ok(h.expect("requested").into_shape_with_order((data.n(), k * k)).expect("contiguous"))
    }

    fn output_family(&self) -> Option<Family> {
        Some(self.family)
    }

    fn float32(&self) -> Option<&dyn Float32Grads> {
        Some(self)
    }

    fn preconditioning(&self) -> Option<&dyn Preconditioning> {
        Some(self)
    }

    fn penalty_mask(&self) -> Array1<f64> {
        Array1::from_shape_fn(self.n_params(), |j| if j % self.row() == self.d { 0.0 } else { 1.0 })
    }

    /// Softmax is unchanged when the same vector is added to every class's row: with l2 > 0 only
    /// the intercept part of that vector is free (the penalty pins the coefficients), with
    /// l2 = 0 all of it. The basis vectors are 1/sqrt(k) on one coordinate in every class.
    fn null_space(&self, l2: f64) -> Option<Array2<f64>> {
        let Family::Multinomial { n_classes: k } = self.family else { return None };
        let r = self.row();
        let free: Vec<usize> = if l2 > 0.0 { vec![self.d] } else { (0..r).collect() };
        let mut basis = Array2::zeros((self.n_params(), free.len()));
        for (j, &a) in free.iter().enumerate() {
            for c in 0..k {
                basis[[c * r + a, j]] = 1.0 / (k as f64).sqrt();
            }
        }
        Some(basis)
    }

    fn check_targets(&self, arg: &'static str, y: ArrayView2<f64>) -> Result<()> {
        let y = check_one_target(arg, y, &format!("a {} GLM", self.family.name()))?;
        self.family.check_targets(arg, y.iter())
    }

    fn losses(&self, theta: ArrayView1<f64>, data: &Batch, mut out: ArrayViewMut1<f64>) {
        let eta = self.eta(theta, data.x);
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.family.loss(eta.row(i).as_slice().expect("contiguous"), data.y[[i, 0]]);
        }
    }

    fn grads(&self, theta: ArrayView1<f64>, data: &Batch, mut out: ArrayViewMut2<f64>) {
        let (k, r, d) = (self.k(), self.row(), self.d);
        let (res, _) = self.residuals(theta, data, false);
        for i in 0..data.n() {
            let mut g = out.row_mut(i);
            for c in 0..k {
                let rc = res[[i, c]];
                let mut seg = g.slice_mut(s![c * r..(c + 1) * r]);
                data.x.row_scaled_into(i, rc, seg.slice_mut(s![..d]));
                seg[d] = rc;
            }
        }
    }

    /// Dense rows: one product of the block's gradients (formed in place, B x p) with [v; c].
    /// Sparse rows: per class, the sparse product X v_c, then the residuals, so a block costs
    /// O(nnz q) and the gradients are never formed.
    fn scores(&self, theta: ArrayView1<f64>, data: &Batch, vc: ArrayView2<f64>, bound: Option<QueryNorm>, scale: f64, mut out: ArrayViewMut2<f64>) -> bool {
        if let XView::Dense(_) = data.x {
            return scores_from_grads(self, theta, data, vc, bound, scale, out);
        }
        let (k, r, d) = (self.k(), self.row(), self.d);
        let (res, _) = self.residuals(theta, data, false);
        let p = self.n_params();
        let mut tmp = Array2::zeros((data.n(), vc.ncols()));
        out.assign(&vc.row(p).insert_axis(Axis(0)));
        for c in 0..k {
            let vcls = vc.slice(s![c * r..(c + 1) * r, ..]);
            data.x.dot_into(vcls.slice(s![..d, ..]), tmp.view_mut());
            let vint = vcls.row(d).insert_axis(Axis(0));
            let rc = res.column(c).insert_axis(Axis(1));
            Zip::from(&mut out).and(&tmp).and_broadcast(&vint).and_broadcast(&rc).for_each(|o, &tv, &b, &ri| *o += (tv + b) * ri);
        }
        out.mapv_inplace(|o| o * scale);
        false
    }

    fn loss_grad_sum(&self, theta: ArrayView1<f64>, data: &Batch) -> (f64, Array1<f64>) {
        let rows = self.row_sums(theta, data, false);
        (rows.loss, self.grad_of(data, rows.wres.view()))
    }

    fn loss_grad_hessian_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) -> (f64, Array1<f64>) {
        let rows = self.row_sums(theta, data, true);
        self.add_hessian_of(data, rows.hess.as_ref().expect("requested"), out);
        (rows.loss, self.grad_of(data, rows.wres.view()))
    }

    /// Block (c, c') of the Hessian is Z^T diag(w A_cc') Z with A the eta-Hessians. Each block
    /// is symmetric, so only its lower triangle is multiplied out; with classes that sum to zero
    /// ([`Glm::derived_diagonal`]) the diagonal blocks are minus the sums of the others: k (k - 1) / 2
    /// half products instead of k (k - 1) / 2 full and k half ones (2.2x fewer flops at k = 10).
    fn hessian_sum(&self, theta: ArrayView1<f64>, data: &Batch, out: ArrayViewMut2<f64>) {
        let (_, hess) = self.residuals(theta, data, true);
        self.add_hessian_of(data, &hess.expect("requested"), out);
    }

    /// For each vector v_j: directional eta E = Z V_j^T (n x k), then per row w_i A_i E_i, then back
    /// through Z^T. All vectors go through the same two products.
    fn hvp_sum(&self, theta: ArrayView1<f64>, data: &Batch, v: ArrayView2<f64>, mut out: ArrayViewMut2<f64>) {
        let (k, r, d) = (self.k(), self.row(), self.d);
        let (n, nv) = (data.n(), v.ncols());
        let (_, hess) = self.residuals(theta, data, true);
        let hess = hess.expect("requested");
        // m[a, j*k + c] = v[c*r + a, j]
        let mut m = Array2::zeros((r, nv * k));
        for j in 0..nv {
            for c in 0..k {
                m.column_mut(j * k + c).assign(&v.slice(s![c * r..(c + 1) * r, j]));
            }
        }
        let mut e = data.x.dot(m.slice(s![..d, ..]));
        e += &m.row(d);
        // t[i, j*k + c] = w_i sum_c' A_i[c, c'] e[i, j*k + c']
        let mut t = Array2::zeros((n, nv * k));
        for i in 0..n {
            let w = data.weight(i);
            for j in 0..nv {
                for c in 0..k {
                    let mut acc = 0.0;
                    for c2 in 0..k {
                        acc += hess[[i, c, c2]] * e[[i, j * k + c2]];
                    }
                    t[[i, j * k + c]] = w * acc;
                }
            }
        }
        let mut back = Array2::zeros((r, nv * k));
        data.x.t_dot_add(t.view(), back.slice_mut(s![..d, ..]));
        back.row_mut(d).assign(&t.sum_axis(Axis(0)));
        for j in 0..nv {
            for c in 0..k {
                let mut dst = out.slice_mut(s![c * r..(c + 1) * r, j]);
                dst += &back.column(j * k + c);
            }
        }
    }

    /// Each class's d + 1 parameters, cut into near-equal pieces of at most 1024; when d + 1 is
    /// below 512, whole classes grouped by up to 512 / (d + 1) per panel.
    fn hessian_panels(&self) -> Vec<std::ops::Range<usize>> {
        let (k, r) = (self.k(), self.row());
        if r < 512 {
            let per = 512 / r;
            return (0..k.div_ceil(per)).map(|g| g * per * r..((g + 1) * per).min(k) * r).collect();
        }
        let pieces = r.div_ceil(1024);
        (0..k).flat_map(|c| (0..pieces).map(move |j| c * r + j * r / pieces..c * r + (j + 1) * r / pieces)).collect()
    }

    /// Like `hessian_sum`, restricted to a tile: the piece (rows a of class c, columns b of class
    /// c') is Z_a^T diag(w A_cc') Z_b, i.e. X_a^T (w A_cc' Z_b) plus, when a holds the intercept,
    /// the row of column sums of w A_cc' Z_b. Panels are cut at class boundaries. What
    /// [`Model::hessian_tiles_finish`] derives is skipped: in a class block below the diagonal
    /// (c > c') the pieces above its own diagonal and the upper triangle of a == b;
    /// with [`Glm::derived_diagonal`], the diagonal class blocks.
    fn hessian_tile_sum(&self, theta: ArrayView1<f64>, data: &Batch, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, mut out: ArrayViewMut2<f64>) {
        let (k, r) = (self.k(), self.row());
        let diagonal = rows == cols;
        let derived = self.derived_diagonal();
        // the (piece of rows, piece of columns, lower triangle only) to add
        let mut pairs = Vec::new();
        for (c, a) in class_pieces(rows.clone(), r) {
            for (c2, b) in class_pieces(cols.clone(), r) {
                let (i0, j0) = (c * r + a.start - rows.start, c2 * r + b.start - cols.start);
                let lower = if c == c2 {
                    if derived || (diagonal && i0 < j0) {
                        continue;
                    }
                    diagonal && i0 == j0
                } else {
                    // in a class block below H's diagonal (symmetric itself): only the entries on
                    // and below the block's diagonal are needed
                    if c < c2 || a.end <= b.start {
                        continue;
                    }
                    a == b
                };
                pairs.push((c, a.clone(), c2, b, i0, j0, lower));
            }
        }
        if pairs.is_empty() {
            return;
        }
        // w_i A_i[c, c'] for those pairs only (no n x k x k array)
        let eta = self.eta(theta, data.x);
        let mut wa = Array2::zeros((data.n(), pairs.len()));
        let (mut res, mut hess) = (vec![0.0; k], vec![0.0; k * k]);
        for i in 0..data.n() {
            let e = eta.row(i);
            self.family.residual_and_hessian(e.as_slice().expect("contiguous"), data.y[[i, 0]], &mut res, Some(&mut hess));
            let w = data.weight(i);
            for (q, (c, _, c2, ..)) in pairs.iter().enumerate() {
                wa[[i, q]] = w * hess[c * k + c2];
            }
        }
        for (q, (_, a, _, b, i0, j0, lower)) in pairs.into_iter().enumerate() {
            let piece = out.slice_mut(s![i0..i0 + a.len(), j0..j0 + b.len()]);
            data.x.gram_add(wa.column(q), a, b, lower, piece);
        }
    }

    /// Fills what `hessian_tile_sum` skipped: each class block below the diagonal from its lower
    /// triangle (it is symmetric), then, with [`Glm::derived_diagonal`], the lower triangle of
    /// each diagonal class block as minus the sum of the class's other blocks.
    fn hessian_tiles_finish(&self, mut h: ArrayViewMut2<f64>) {
        let (k, r) = (self.k(), self.row());
        if k == 1 {
            return;
        }
        for c in 0..k {
            for c2 in 0..c {
                mirror_lower(h.slice_mut(s![c * r..(c + 1) * r, c2 * r..(c2 + 1) * r]));
            }
        }
        if !self.derived_diagonal() {
            return;
        }
        let hv = h.view();
        let diags: Vec<Array2<f64>> = (0..k)
            .into_par_iter()
            .map(|c| {
                let mut d = Array2::<f64>::zeros((r, r).f());
                for c2 in (0..k).filter(|&c2| c2 != c) {
                    // block (c, c2) of the symmetric H, read below the diagonal
                    let (hi, lo) = (c.max(c2), c.min(c2));
                    let block = hv.slice(s![hi * r..(hi + 1) * r, lo * r..(lo + 1) * r]);
                    for j in 0..r {
                        let (mut dc, bc) = (d.slice_mut(s![j.., j]), block.slice(s![j.., j]));
                        Zip::from(&mut dc).and(&bc).for_each(|o, &v| *o -= v);
                    }
                }
                d
            })
            .collect();
        for (c, d) in diags.into_iter().enumerate() {
            let mut block = h.slice_mut(s![c * r..(c + 1) * r, c * r..(c + 1) * r]);
            for j in 0..r {
                block.slice_mut(s![j.., j]).assign(&d.slice(s![j.., j]));
            }
        }
    }
}

impl Glm {
    /// Whether each row's eta-Hessian has rows summing to zero (softmax over all k classes, whose
    /// probabilities sum to one): then H_cc = -sum_{c' != c} H_cc' and the diagonal class blocks
    /// need no products of their own.
    fn derived_diagonal(&self) -> bool {
        matches!(self.family, Family::Multinomial { .. })
    }
}

/// Copies the lower triangle of the square `a` onto its upper triangle, by 32 x 32 tiles.
fn mirror_lower(mut a: ArrayViewMut2<f64>) {
    const T: usize = 32;
    let n = a.nrows();
    for jb in (0..n).step_by(T) {
        for ib in (jb..n).step_by(T) {
            for j in jb..(jb + T).min(n) {
                for i in ib.max(j + 1)..(ib + T).min(n) {
                    a[[j, i]] = a[[i, j]];
                }
            }
        }
    }
}

impl Float32Grads for Glm {
    /// eta in float64 from the float32 rows (a dot product per row and class: 1/q of the score
    /// product's work), residuals in float64, gradients rounded to float32.
    fn grads_f32(&self, theta: ArrayView1<f64>, x: ArrayView2<f32>, y: ArrayView1<f64>, mut out: ArrayViewMut2<f32>) {
        let (k, r, d) = (self.k(), self.row(), self.d);
        let mut eta = vec![0.0; k];
        let mut res = vec![0.0; k];
        for (i, xi) in x.rows().into_iter().enumerate() {
            for (c, e) in eta.iter_mut().enumerate() {
                let t = theta.slice(s![c * r..(c + 1) * r]);
                let dot = match (xi.as_slice(), t.as_slice()) {
                    (Some(xs), Some(ts)) => dot_f32_f64(xs, ts),
                    _ => xi.iter().zip(t.iter()).map(|(&xv, &tv)| xv as f64 * tv).sum::<f64>(),
                };
                *e = t[d] + dot;
            }
            self.family.residual_and_hessian(&eta, y[i], &mut res, None);
            let mut g = out.row_mut(i);
            for c in 0..k {
                let rc = res[c] as f32;
                let mut seg = g.slice_mut(s![c * r..(c + 1) * r]);
                seg.slice_mut(s![..d]).zip_mut_with(&xi, |o, &xv| *o = rc * xv);
                seg[d] = rc;
            }
        }
    }
}

/// x . t (the first x.len() entries of t) in float64, in eight partial sums: a fixed order, so
/// the same bits on every machine, that the compiler can vectorise (one running sum is a chain of
/// dependent additions, about 4 cycles each).
fn dot_f32_f64(x: &[f32], t: &[f64]) -> f64 {
    let (xc, tc) = (x.chunks_exact(8), t[..x.len()].chunks_exact(8));
    let tail: f64 = xc.remainder().iter().zip(tc.remainder()).map(|(&a, &b)| a as f64 * b).sum();
    let mut acc = [0.0f64; 8];
    for (xs, ts) in xc.zip(tc) {
        for l in 0..8 {
            acc[l] += xs[l] as f64 * ts[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

impl Preconditioning for Glm {
    /// Entry (c, a) is sum_i w_i A_i[c, c] z_ia^2.
    fn hessian_diag_sum(&self, theta: ArrayView1<f64>, data: &Batch, mut out: ArrayViewMut1<f64>) {
        let (k, r, d) = (self.k(), self.row(), self.d);
        let (_, hess) = self.residuals(theta, data, true);
        let hess = hess.expect("requested");
        let wa = Array2::from_shape_fn((data.n(), k), |(i, c)| data.weight(i) * hess[[i, c, c]]);
        let mut dx = Array2::zeros((d, k));
        data.x.sq_t_dot_add(wa.view(), dx.view_mut());
        for c in 0..k {
            let mut seg = out.slice_mut(s![c * r..(c + 1) * r]);
            seg.slice_mut(s![..d]).zip_mut_with(&dx.column(c), |o, v| *o += v);
            seg[d] += wa.column(c).sum();
        }
    }

    /// Multinomial only: group j holds the k classes' parameters of feature j (c r + j), the
    /// intercepts forming the last group.
    fn hessian_groups(&self) -> Option<Array2<usize>> {
        let Family::Multinomial { n_classes: k } = self.family else { return None };
        let r = self.row();
        Some(Array2::from_shape_fn((r, k), |(j, c)| c * r + j))
    }

    /// Block j is sum_i x_ij^2 w_i A_i (A_i the k x k Hessian of the loss in eta_i; x_i,d = 1):
    /// one product of the squared features with the n x k^2 matrix of w_i A_i.
    fn hessian_blocks_sum(&self, theta: ArrayView1<f64>, data: &Batch, mut out: ArrayViewMut3<f64>) {
        let (k, d) = (self.k(), self.d);
        let (_, hess) = self.residuals(theta, data, true);
        let mut wa = hess.expect("requested").into_shape_with_order((data.n(), k * k)).expect("contiguous");
        for (i, mut row) in wa.rows_mut().into_iter().enumerate() {
            row *= data.weight(i);
        }
        let mut blocks = Array2::zeros((d, k * k));
        data.x.sq_t_dot_add(wa.view(), blocks.view_mut());
        for j in 0..d {
            out.index_axis_mut(Axis(0), j).zip_mut_with(&blocks.row(j).into_shape_with_order((k, k)).expect("k x k"), |o, v| *o += v);
        }
        out.index_axis_mut(Axis(0), d).zip_mut_with(&wa.sum_axis(Axis(0)).into_shape_with_order((k, k)).expect("k x k"), |o, v| *o += v);
    }
}

/// The parameters `range` split at class boundaries (classes of `r` parameters): (class, range
/// within the class).
fn class_pieces(range: std::ops::Range<usize>, r: usize) -> Vec<(usize, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut start = range.start;
    while start < range.end {
        let c = start / r;
        let end = range.end.min((c + 1) * r);
        out.push((c, start - c * r..end - c * r));
        start = end;
    }
    out
}
