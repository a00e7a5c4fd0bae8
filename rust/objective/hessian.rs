//! The Hessian of the objective (penalty included), its diagonal and diagonal blocks.
//!
//! Two schedules, chosen from p alone: up to [`TILED_HESSIAN_MAX_ROW_BLOCK_P`] parameters, row
//! blocks in parallel, each adding its own p x p partial sum; above, the parameters are cut into
//! panels ([`Model::hessian_panels`]) and, for each chunk of rows in order, every tile (panel I x
//! panel J, I >= J) is added in parallel into its own part of H. Both give the same bits for any
//! number of threads. A model whose Hessian has no cheaper form than p Hessian-vector products
//! (a network's exact Hessian) has it formed from those products, a pass over the rows per
//! [`PRODUCT_COLUMNS`] unit vectors.

use std::ops::Range;

use ndarray::{s, Array1, Array2, Array3, ArrayView1, ArrayViewMut2, Axis, ShapeBuilder};
use rayon::prelude::*;

use super::{add_loss_grad, add_partial, LossGrad, Objective, GRAD_PARTIALS};
use crate::blocks::{blocks, map_reduce, map_reduce2, Fold, BLOCK_ROWS};
use crate::cancel::Cancel;
use crate::data::{with_block, Batch, XView};
use crate::error::Result;
use crate::linalg::{add_gram_tile, symmetrize_from_lower, to_column_major};
use crate::models::Model;

/// Partial Hessians held at once stay under this many bytes (it fixes the chunking from p alone,
/// so the result still does not depend on the thread count).
const HESSIAN_PARTIALS_BYTES: usize = 256 << 20;
/// Largest p whose Hessian is summed by row blocks; above it the Hessian is built by tiles.
pub const TILED_HESSIAN_MAX_ROW_BLOCK_P: usize = 2048;
/// Unit vectors per pass over the data when the Hessian is formed from products.
const PRODUCT_COLUMNS: usize = 128;
/// Rows per chunk of the tiled Hessian, at most, and the bound on a chunk's features in bytes.
const TILE_CHUNK_ROWS: usize = 4096;
const TILE_CHUNK_BYTES: usize = 64 << 20;
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

impl<M: Model + ?Sized> Objective<'_, M> {
    /// Hessian of L_w at theta (p x p, symmetric), penalty included. Row blocks for p up to
    /// [`TILED_HESSIAN_MAX_ROW_BLOCK_P`], tiles above (then H is column-major).
    pub fn hessian(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        self.check_hessian_size()?;
        if self.model.hessian_by_products() {
            self.check_theta(theta)?;
            Ok(self.finish_hessian(self.hessian_from_products(theta, cancel)?))
        } else if self.n_params() > TILED_HESSIAN_MAX_ROW_BLOCK_P {
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

    /// (sum_i w_i l_i, sum_i w_i grad l_i, lower triangle of sum_i w_i Hess l_i) from one pass.
    pub(super) fn sums_with_hessian(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>, Array2<f64>)> {
        self.check_hessian_size()?;
        let ((loss, grad), h) = if self.model.hessian_by_products() {
            (self.sums(theta, cancel)?, self.hessian_from_products(theta, cancel)?)
        } else if self.n_params() > TILED_HESSIAN_MAX_ROW_BLOCK_P {
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
                        let lg = self.model.loss_grad_hessian_sum(theta, b, h.view_mut());
                        (lg, h)
                    })
                },
                add_loss_grad,
                |a, b| *a += &b,
            )?
            .expect("data has rows")
        };
        Ok((loss, grad, h))
    }

    /// sum_i w_i Hess l_i (p x p, column-major) from Hessian-vector products with the unit
    /// vectors, [`PRODUCT_COLUMNS`] per pass over the data: p products in all, and a Ctrl-C is
    /// seen after the current row block of the current pass.
    fn hessian_from_products(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<Array2<f64>> {
        let p = self.n_params();
        let mut h = crate::memory::zeros("the Hessian", (p, p).f())?;
        for c0 in (0..p).step_by(PRODUCT_COLUMNS) {
            let c1 = (c0 + PRODUCT_COLUMNS).min(p);
            let mut e = Array2::zeros((p, c1 - c0));
            for c in c0..c1 {
                e[[c, c - c0]] = 1.0;
            }
            h.slice_mut(s![.., c0..c1]).assign(&self.hvp_sums(theta, e.view(), cancel)?);
        }
        Ok(h)
    }

    /// `Err(Memory)` unless two p x p matrices fit in memory (H, and its partial sums or the
    /// direct solver's factor).
    fn check_hessian_size(&self) -> Result<()> {
        let p = self.n_params();
        crate::memory::check("the Hessian (p x p, twice)", &[2, p, p], 8)
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
        let mut h = crate::memory::zeros("the Hessian", (p, p).f())?;
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
                // after a cancel the remaining tiles are skipped (the result is discarded)
                let add_tiles = || match self.model.hessian_factor_rows() {
                    // M^T M: each sub-block's factor once, then every tile from two of its panels
                    Some(step) => {
                        for a in (0..tile_chunk.n()).step_by(step.max(1)) {
                            let sub = tile_chunk.rows(a, (a + step).min(tile_chunk.n()));
                            let Some(m) = self.model.hessian_factor(theta, &sub).filter(|_| !cancel.is_cancelled()) else { return };
                            // the tiles' products read a column-major factor faster (1.5x at p = 2645, same bits)
                            let m = if m.t().is_standard_layout() { m } else { to_column_major(m.view()) };
                            tiles.par_iter_mut().for_each(|(ri, cj, tile)| {
                                if !cancel.is_cancelled() {
                                    add_gram_tile(m.view(), ri.clone(), cj.clone(), tile.view_mut());
                                }
                            })
                        }
                    }
                    None => tiles.par_iter_mut().for_each(|(ri, cj, tile)| {
                        if !cancel.is_cancelled() {
                            self.model.hessian_tile_sum(theta, tile_chunk, ri.clone(), cj.clone(), tile.view_mut());
                        }
                    }),
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
        self.model.hessian_tiles_finish(h.view_mut());
        Ok((fold.and_then(|f| f.finish(&add_loss_grad)), h))
    }

    /// Symmetrise the lower-triangle sums, divide by W, add the penalty's diagonal.
    pub(super) fn finish_hessian(&self, mut h: Array2<f64>) -> Array2<f64> {
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

    /// (sum_i w_i l_i, sum_i w_i grad l_i, the Hessian's diagonal or `None`) from one pass.
    pub(super) fn sums_with_diag(&self, theta: ArrayView1<f64>, cancel: &Cancel) -> Result<(f64, Array1<f64>, Option<Array1<f64>>)> {
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
        Ok((loss, grad, diag))
    }

    pub(super) fn finish_diag(&self, diag: Option<Array1<f64>>) -> Option<Array1<f64>> {
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
}
