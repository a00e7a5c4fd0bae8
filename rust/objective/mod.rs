//! The weighted objective L_w(theta) = (1/W) sum_i w_i l(z_i; theta) + l2 ||coef||^2
//! (DESIGN.md section 1), its gradient, Hessian and Hessian-vector products, computed over row
//! blocks in parallel with a fixed reduction order.
//!
//! The Hessian has two schedules, chosen from p alone: up to [`TILED_HESSIAN_MAX_ROW_BLOCK_P`]
//! parameters, row blocks in parallel, each adding its own p x p partial sum; above, the
//! parameters are cut into panels ([`Model::hessian_panels`]) and, for each chunk of rows in
//! order, every tile (panel I x panel J, I >= J) is added in parallel into its own part of H.
//! Both give the same bits for any number of threads.

pub mod partial;

use std::ops::Range;

use ndarray::{Array1, Array2, Array3, ArrayView1, ArrayView2, ArrayViewMut2, Axis, ShapeBuilder};
use rayon::prelude::*;

use crate::blocks::{blocks, map_reduce, map_reduce2, Fold, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::{with_block, Batch, Rows, XView};
use crate::error::{check_finite, Error, Result};
use crate::linalg::{symmetrize_from_lower, to_column_major};
use crate::models::Model;

/// Partial Hessians held at once stay under this many bytes (it fixes the chunking from p alone,
/// so the result still does not depend on the thread count).
const HESSIAN_PARTIALS_BYTES: usize = 256 << 20;
/// Largest p whose Hessian is summed by row blocks; above it the Hessian is built by tiles.
pub const TILED_HESSIAN_MAX_ROW_BLOCK_P: usize = 2048;
/// Rows per chunk of the tiled Hessian, at most, and the bound on a chunk's features in bytes.
const TILE_CHUNK_ROWS: usize = 4096;
const TILE_CHUNK_BYTES: usize = 64 << 20;
/// Partial sums of the gradient (`map_reduce`'s bound for `value_grad`).
const GRAD_PARTIALS: usize = 64;

type LossGrad = (f64, Array1<f64>);

fn add_loss_grad(a: &mut LossGrad, b: LossGrad) {
    a.0 += b.0;
    a.1 += &b.1;
}

/// Rows per chunk of the tiled Hessian: a multiple of `BLOCK_ROWS` (so the gradient's row blocks
/// nest in it), at most 4096, and features under ~64 MB unless that is below one block.
fn tile_chunk_rows(d: usize) -> usize {
    let fit = TILE_CHUNK_BYTES / (8 * d.max(1));
    (fit / BLOCK_ROWS * BLOCK_ROWS).clamp(BLOCK_ROWS, TILE_CHUNK_ROWS)
}

/// Disjoint mutable views of the tiles (rows panel I, cols panel J), I >= J, of `h` (p x p), in
/// column-panel order.
fn lower_tiles<'a>(h: ArrayViewMut2<'a, f64>, panels: &[Range<usize>]) -> Vec<(Range<usize>, Range<usize>, ArrayViewMut2<'a, f64>)> {
    let mut tiles = Vec::with_capacity(panels.len() * (panels.len() + 1) / 2);
    let mut rest = h;
    for (j, cols) in panels.iter().enumerate() {
        let (mut col, right) = rest.split_at(Axis(1), cols.len());
        rest = right;
        for (i, rows) in panels.iter().enumerate() {
            let (tile, below) = col.split_at(Axis(0), rows.len());
            col = below;
            if i >= j {
                tiles.push((rows.clone(), cols.clone(), tile));
            }
        }
    }
    tiles
}

/// True if `panels` are consecutive non-empty ranges covering `0..p`.
fn panels_cover(panels: &[Range<usize>], p: usize) -> bool {
    let mut next = 0;
    for r in panels {
        if r.start != next || r.end <= r.start {
            return false;
        }
        next = r.end;
    }
    next == p
}

pub struct Objective<'a, M: Model + ?Sized> {
    pub model: &'a M,
    pub data: &'a dyn Rows,
    pub l2: f64,
    total_weight: f64,
    mask: Array1<f64>,
}

/// Adds partial Hessian diagonals or diagonal blocks; `None` (the model cannot) wins.
fn add_partial<D: ndarray::Dimension>(a: &mut Option<ndarray::Array<f64, D>>, b: Option<ndarray::Array<f64, D>>) {
    match (a.is_some(), b) {
        (true, Some(b)) => *a.as_mut().expect("checked") += &b,
        _ => *a = None,
    }
}

impl<'a, M: Model + ?Sized> Objective<'a, M> {
    /// Validates that `data` fits the model (feature count, targets) and that `l2 >= 0`.
    pub fn new(model: &'a M, data: &'a dyn Rows, l2: f64) -> Result<Self> {
        if !(l2 >= 0.0) || !l2.is_finite() {
            return Err(Error::Value { arg: "l2", msg: format!("must be a finite number >= 0, got {l2}") });
        }
        if data.d() != model.n_features() {
            return Err(Error::Shape { arg: "X", msg: format!("has {} columns but the model has {} features", data.d(), model.n_features()) });
        }
        model.check_targets("y", data.y())?;
        Ok(Self { model, data, l2, total_weight: data.total_weight(), mask: model.penalty_mask() })
    }

    /// The objective on data that were validated for this model before (by [`Objective::new`]),
    /// whose total weight is `total_weight`: no pass over the data.
    pub(crate) fn validated(model: &'a M, data: &'a dyn Rows, l2: f64, total_weight: f64) -> Self {
        Self { model, data, l2, total_weight, mask: model.penalty_mask() }
    }

    /// W, the sum of the weights.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    pub fn n_params(&self) -> usize {
        self.model.n_params()
    }

    fn check_theta(&self, theta: ArrayView1<f64>) -> Result<()> {
        if theta.len() != self.n_params() {
            return Err(Error::Shape { arg: "theta", msg: format!("has {} entries, expected {}", theta.len(), self.n_params()) });
        }
        check_finite("theta", theta.iter())
    }

    /// The gradient of the penalty, 2 l2 coef_masked: the extra term of the influence formula.
    pub fn penalty_grad(&self, theta: ArrayView1<f64>) -> Array1<f64> {
        &self.mask * &theta * (2.0 * self.l2)
    }

    fn penalty(&self, theta: ArrayView1<f64>) -> f64 {
        self.l2 * self.mask.iter().zip(theta).map(|(m, t)| m * t * t).sum::<f64>()
    }

    /// L_w(theta).
    pub fn value(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<f64> {
        Ok(self.value_grad(theta, cancel)?.0)
    }

    /// (L_w(theta), grad L_w(theta)).
    pub fn value_grad(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>)> {
        self.check_theta(theta)?;
        let (loss, grad) = self.sums(theta, cancel)?;
        Ok(self.finish_value_grad(theta, loss, grad))
    }

    /// (sum_i w_i l_i, sum_i w_i grad l_i), reduced over row blocks in a fixed order.
    fn sums(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<LossGrad> {
        Ok(map_reduce(self.data.n(), GRAD_PARTIALS, cancel, |r| with_block(self.data, r, |b| self.model.loss_grad_sum(theta, b)), add_loss_grad)?
            .expect("data has rows"))
    }

    fn finish_value_grad(&self, theta: ArrayView1<f64>, loss: f64, grad: Array1<f64>) -> (f64, Array1<f64>) {
        let w = self.total_weight;
        (loss / w + self.penalty(theta), grad / w + self.penalty_grad(theta))
    }

    /// Hessian of L_w at theta (p x p, symmetric), penalty included. Row blocks for p up to
    /// [`TILED_HESSIAN_MAX_ROW_BLOCK_P`], tiles above (then H is column-major).
    pub fn hessian(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        if self.n_params() > TILED_HESSIAN_MAX_ROW_BLOCK_P {
            self.hessian_tiled(theta, cancel)
        } else {
            self.hessian_row_blocks(theta, cancel)
        }
    }

    /// [`Objective::hessian`] summed by row blocks, whatever p (what `hessian` does for small p).
    pub fn hessian_row_blocks(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let h = map_reduce(self.data.n(), self.hessian_partials(), cancel, |r| self.block_hessian(theta, r), |a, b| *a += &b)?.expect("data has rows");
        Ok(self.finish_hessian(h))
    }

    /// [`Objective::hessian`] built by tiles, whatever p (what `hessian` does for large p).
    pub fn hessian_tiled(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let (_, h) = self.tiled_sums(theta, false, cancel)?;
        Ok(self.finish_hessian(h))
    }

    /// (L_w, grad L_w, Hessian) at theta from one pass over the data (each block of rows read
    /// once), each bitwise equal to what `value_grad` and `hessian` return.
    pub fn value_grad_hessian(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>, Array2<f64>)> {
        self.check_theta(theta)?;
        let (loss, grad, h) = self.sums_with_hessian(theta, cancel)?;
        let (value, grad) = self.finish_value_grad(theta, loss, grad);
        Ok((value, grad, self.finish_hessian(h)))
    }

    /// (sum_i w_i l_i, sum_i w_i grad l_i, lower triangle of sum_i w_i Hess l_i) from one pass.
    fn sums_with_hessian(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>, Array2<f64>)> {
        let ((loss, grad), h) = if self.n_params() > TILED_HESSIAN_MAX_ROW_BLOCK_P {
            let (lg, h) = self.tiled_sums(theta, true, cancel)?;
            (lg.expect("asked for the gradient"), h)
        } else {
            map_reduce2(
                self.data.n(),
                GRAD_PARTIALS,
                self.hessian_partials(),
                cancel,
                |r| {
                    let p = self.n_params();
                    with_block(self.data, r, |b| {
                        let mut h = Array2::zeros((p, p));
                        self.model.hessian_sum(theta, b, h.view_mut());
                        (self.model.loss_grad_sum(theta, b), h)
                    })
                },
                add_loss_grad,
                |a, b| *a += &b,
            )?
            .expect("data has rows")
        };
        Ok((loss, grad, h))
    }

    /// Partial Hessians of the row-block schedule (a function of p only).
    fn hessian_partials(&self) -> usize {
        let p = self.n_params();
        (HESSIAN_PARTIALS_BYTES / (8 * p * p).max(1)).clamp(1, 64)
    }

    /// Lower triangle of sum_i w_i Hess l_i over rows `r`.
    fn block_hessian(&self, theta: ArrayView1<f64>, r: Range<usize>) -> Result<Array2<f64>> {
        let p = self.n_params();
        let mut h = Array2::zeros((p, p));
        with_block(self.data, r, |b| self.model.hessian_sum(theta, b, h.view_mut()))?;
        Ok(h)
    }

    /// The lower triangle of sum_i w_i Hess l_i (column-major), tile by tile, and with
    /// `with_grad` the (loss, gradient) sums reduced exactly as `value_grad` reduces them.
    ///
    /// Rows are read in chunks of [`tile_chunk_rows`] (boundaries fixed by n and d); for each
    /// chunk, in order, every tile adds the chunk's rows into its own part of H, all tiles in
    /// parallel. Each tile sums the chunks in row order, so any thread count gives the same bits.
    fn tiled_sums(&self, theta: ArrayView1<f64>, with_grad: bool, cancel: &Cancel) -> Result<(Option<LossGrad>, Array2<f64>)> {
        let (n, p) = (self.data.n(), self.n_params());
        let mut panels = self.model.hessian_panels();
        debug_assert!(panels_cover(&panels, p), "hessian_panels must cover 0..p in order");
        if !panels_cover(&panels, p) {
            panels = std::iter::once(0..p).collect();
        }
        let mut h = Array2::zeros((p, p).f());
        let mut tiles = lower_tiles(h.view_mut(), &panels);
        let mut fold = with_grad.then(|| Fold::new(n, GRAD_PARTIALS));
        cancel.begin(n);
        for rows in blocks(n, tile_chunk_rows(self.data.d())) {
            cancel.check()?;
            let grads = with_block(self.data, rows.clone(), |chunk| {
                // the tiles read a dense chunk column-major (one copy, shared by all of them:
                // their products are faster with it); the gradient reads the chunk as
                // `value_grad` does, so its bits do not change
                let xf = match chunk.x {
                    XView::Dense(x) if !x.t().is_standard_layout() => Some(to_column_major(x)),
                    _ => None,
                };
                let x = match (&xf, chunk.x) {
                    (Some(x), _) => XView::Dense(x.view()),
                    (None, XView::Dense(x)) => XView::Dense(x.reborrow()), // (ndarray views are invariant)
                    (None, XView::Csr(c)) => XView::Csr(c),
                };
                let tile_chunk = &Batch { x, y: chunk.y.reborrow(), w: chunk.w.map(|w| w.reborrow()) };
                let add_tiles = || {
                    tiles.par_iter_mut().for_each(|(ri, cj, tile)| {
                        // after a cancel the remaining tiles are skipped (the result is discarded)
                        if !cancel.is_cancelled() {
                            self.model.hessian_tile_sum(theta, tile_chunk, ri.clone(), cj.clone(), tile.view_mut());
                        }
                    })
                };
                let block_grads = || {
                    with_grad.then(|| {
                        blocks(chunk.n(), BLOCK_ROWS).into_par_iter().map(|r| self.model.loss_grad_sum(theta, &chunk.rows(r.start, r.end))).collect::<Vec<_>>()
                    })
                };
                rayon::join(add_tiles, block_grads).1
            })?;
            cancel.check()?;
            if let (Some(fold), Some(grads)) = (fold.as_mut(), grads) {
                for (i, g) in grads.into_iter().enumerate() {
                    fold.push(rows.start / BLOCK_ROWS + i, g, &add_loss_grad);
                }
            }
            cancel.advance(rows.len());
        }
        drop(tiles);
        Ok((fold.and_then(|f| f.finish(&add_loss_grad)), h))
    }

    /// Symmetrise the lower-triangle sums, divide by W, add the penalty's diagonal.
    fn finish_hessian(&self, mut h: Array2<f64>) -> Array2<f64> {
        symmetrize_from_lower(&mut h);
        h /= self.total_weight;
        for (j, m) in self.mask.iter().enumerate() {
            h[[j, j]] += 2.0 * self.l2 * m;
        }
        h
    }

    /// Diagonal of the Hessian at theta, penalty included, or `None` if the model cannot give it.
    pub fn hessian_diag(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Option<Array1<f64>>> {
        self.check_theta(theta)?;
        let p = self.n_params();
        let Some(prec) = self.model.preconditioning() else { return Ok(None) };
        let diag = map_reduce(
            self.data.n(),
            GRAD_PARTIALS,
            cancel,
            |r| {
                let mut out = Array1::zeros(p);
                with_block(self.data, r, |b| prec.hessian_diag_sum(theta, b, out.view_mut()))?;
                Ok(out)
            },
            |a, b| *a += &b,
        )?;
        Ok(self.finish_diag(diag))
    }

    /// (L_w, grad L_w, Hessian diagonal) from one pass over the data, each bitwise equal to what
    /// `value_grad` and `hessian_diag` return.
    pub fn value_grad_hessian_diag(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>, Option<Array1<f64>>)> {
        self.check_theta(theta)?;
        let p = self.n_params();
        let prec = self.model.preconditioning();
        let ((loss, grad), diag) = map_reduce2(
            self.data.n(),
            GRAD_PARTIALS,
            GRAD_PARTIALS,
            cancel,
            |r| {
                with_block(self.data, r, |b| {
                    let diag = prec.map(|prec| {
                        let mut out = Array1::zeros(p);
                        prec.hessian_diag_sum(theta, b, out.view_mut());
                        out
                    });
                    (self.model.loss_grad_sum(theta, b), diag)
                })
            },
            add_loss_grad,
            add_partial,
        )?
        .expect("data has rows");
        let (value, grad) = self.finish_value_grad(theta, loss, grad);
        Ok((value, grad, self.finish_diag(diag)))
    }

    fn finish_diag(&self, diag: Option<Array1<f64>>) -> Option<Array1<f64>> {
        diag.map(|d| d / self.total_weight + &(&self.mask * (2.0 * self.l2)))
    }

    /// The Hessian's diagonal blocks over the model's parameter groups (m x b indices and
    /// m x b x b blocks, penalty included), or `None` if the model has no groups.
    pub fn hessian_blocks(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Option<(Array2<usize>, Array3<f64>)>> {
        self.check_theta(theta)?;
        let Some(prec) = self.model.preconditioning() else { return Ok(None) };
        let Some(groups) = prec.hessian_groups() else { return Ok(None) };
        let (m, b) = groups.dim();
        let blocks = map_reduce(
            self.data.n(),
            GRAD_PARTIALS,
            cancel,
            |r| {
                let mut out = Array3::zeros((m, b, b));
                with_block(self.data, r, |blk| prec.hessian_blocks_sum(theta, blk, out.view_mut()))?;
                Ok(out)
            },
            |a, b| *a += &b,
        )?;
        Ok(blocks.map(|mut blocks| {
            blocks /= self.total_weight;
            for (g, mut blk) in groups.rows().into_iter().zip(blocks.outer_iter_mut()) {
                for (a, &j) in g.iter().enumerate() {
                    blk[[a, a]] += 2.0 * self.l2 * self.mask[j];
                }
            }
            (groups, blocks)
        }))
    }

    /// Hessian-vector products H v for a block of vectors (p x r), without forming H.
    pub fn hvp(&self, theta: ArrayView1<f64>, v: ArrayView2<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        let hv = self.hvp_sums(theta, v, cancel)?;
        Ok(partial::finish_hvp(&self.mask, self.l2, self.total_weight, hv, v))
    }

    /// sum_i w_i (Hess l_i) v, reduced over row blocks in a fixed order.
    fn hvp_sums(&self, theta: ArrayView1<f64>, v: ArrayView2<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_theta(theta)?;
        let p = self.n_params();
        if v.nrows() != p {
            return Err(Error::Shape { arg: "v", msg: format!("has {} rows, expected {p}", v.nrows()) });
        }
        check_finite("v", v.iter())?;
        let r = v.ncols();
        Ok(map_reduce(
            self.data.n(),
            64,
            cancel,
            |rows| {
                let mut out = Array2::zeros((p, r));
                with_block(self.data, rows, |b| self.model.hvp_sum(theta, b, v, out.view_mut()))?;
                Ok(out)
            },
            |a, b| *a += &b,
        )?
        .unwrap_or_else(|| Array2::zeros((p, r))))
    }
}
