//! Dense linear algebra backends on upweight's real shapes, single-threaded.
//!
//! Compares faer (what `upweight::linalg` uses) with the pure-Rust alternatives that need no
//! system BLAS: ndarray's own `.dot()` / `general_mat_mul` (both matrixmultiply) and nalgebra
//! (whose dynamic `gemm` also calls matrixmultiply; its Cholesky is its own code).
//!
//!   cargo bench --bench linalg -- --warm-up-time 1 --measurement-time 3
//!
//! Kernels:
//! 1. `score`: the `Glm::grads_dot` product (q x d) @ (d x B), q = 500, d = 128, B = 512; the left
//!    operand is a column-major (transposed) view, the right one the transpose of a row-major
//!    (B x d) block, the destination a column block of a row-major q x n matrix (n = 100000).
//!    The column block rotates over the whole matrix, as a real call writes each block once.
//! 2. `hessian`: the `Glm::hessian_sum` block Z^T (D Z) += ..., Z (512 x 129) row-major.
//! 3. `cholesky_p{129,1000}`: factor H (p x p) and solve for 500 right-hand sides stored as the
//!    columns of a column-major p x 500 matrix (the transposed row block `Influence` solves on);
//!    also factor alone and solve alone.
//!
//! Every backend's result is checked against faer's once before timing. Nothing here spawns
//! threads: faer runs with `Par::Seq` and matrixmultiply is built without its threading feature.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode};
use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut};
use ndarray::{s, Array2, ArrayView2};
use upweight::linalg::{gemm, gemm_lower, Cholesky};

/// Deterministic uniform(-1, 1) numbers (xorshift64*), so no `rand` dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }

    fn matrix(&mut self, rows: usize, cols: usize) -> Array2<f64> {
        Array2::from_shape_simple_fn((rows, cols), || self.next())
    }
}

fn assert_close(name: &str, got: ArrayView2<f64>, want: ArrayView2<f64>) {
    assert_eq!(got.dim(), want.dim(), "{name}: shape");
    let scale = want.iter().fold(1.0_f64, |m, v| m.max(v.abs()));
    let err = got.iter().zip(want.iter()).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 1e-9 * scale, "{name}: max abs error {err:e} (scale {scale:e})");
}

/// nalgebra view of the contiguous buffer `data` with explicit (row, column) strides.
fn na_view(data: &[f64], rows: usize, cols: usize, rs: usize, cs: usize) -> DMatrixView<'_, f64, nalgebra::Dyn, nalgebra::Dyn> {
    DMatrixView::from_slice_with_strides(data, rows, cols, rs, cs)
}

fn na_view_mut(data: &mut [f64], rows: usize, cols: usize, rs: usize, cs: usize) -> DMatrixViewMut<'_, f64, nalgebra::Dyn, nalgebra::Dyn> {
    DMatrixViewMut::from_slice_with_strides_mut(data, rows, cols, rs, cs)
}

fn na_from(a: ArrayView2<f64>) -> DMatrix<f64> {
    DMatrix::from_fn(a.nrows(), a.ncols(), |i, j| a[[i, j]])
}

fn to_nd(m: &DMatrix<f64>) -> Array2<f64> {
    Array2::from_shape_fn((m.nrows(), m.ncols()), |(i, j)| m[(i, j)])
}

// ---------------------------------------------------------------------------------------------
// 1. score kernel (Glm::grads_dot)

const Q: usize = 500;
const D: usize = 128;
const B: usize = 512;
const N: usize = 100_000;
const N_BLOCKS: usize = N / B; // full column blocks only

fn bench_score(c: &mut Criterion) {
    let mut rng = Rng(0x5EED_0001);
    // v: (p x q) row-major solved directions; the kernel reads v[..d, ..]^T, a column-major q x d view.
    let v = rng.matrix(D + 1, Q);
    // x: one row-major (B x d) block of the data; the kernel reads x^T.
    let x = rng.matrix(B, D);
    // out: row-major q x n, touched once so no page faults land in the timings.
    let mut out = Array2::<f64>::from_elem((Q, N), 1.0);
    let lhs = v.slice(s![..D, ..]).reversed_axes();
    let rhs = x.t();
    assert_eq!(lhs.strides(), &[1, Q as isize]);
    assert_eq!(rhs.strides(), &[1, D as isize]);
    let v_data = v.as_slice().unwrap();
    let x_data = x.as_slice().unwrap();

    // Correctness of each backend on block 3 against faer.
    let want = {
        let mut w = Array2::<f64>::zeros((Q, B));
        gemm(w.view_mut(), false, lhs, rhs, 1.0);
        w
    };
    let check_block = |out: &Array2<f64>, name: &str| assert_close(name, out.slice(s![.., 3 * B..4 * B]), want.view());
    out.slice_mut(s![.., 3 * B..4 * B]).assign(&lhs.dot(&rhs));
    check_block(&out, "ndarray dot");
    out.fill(1.0);
    ndarray::linalg::general_mat_mul(1.0, &lhs, &rhs, 0.0, &mut out.slice_mut(s![.., 3 * B..4 * B]));
    check_block(&out, "ndarray general_mat_mul");
    out.fill(1.0);
    {
        let data = &mut out.as_slice_mut().unwrap()[3 * B..];
        let mut dst = na_view_mut(data, Q, B, N, 1);
        dst.gemm(1.0, &na_view(v_data, Q, D, 1, Q), &na_view(x_data, D, B, 1, D), 0.0);
    }
    check_block(&out, "nalgebra gemm");

    let mut g = c.benchmark_group("score_q500_d128_B512");
    g.sampling_mode(SamplingMode::Flat).sample_size(30);
    let mut blk = 0usize;
    let mut next = move || {
        blk = (blk + 1) % N_BLOCKS;
        blk * B
    };
    g.bench_function("faer gemm", |bch| {
        bch.iter(|| {
            let c0 = next();
            gemm(out.slice_mut(s![.., c0..c0 + B]), false, black_box(lhs), black_box(rhs), 1.0);
        })
    });
    g.bench_function("ndarray dot + copy", |bch| {
        bch.iter(|| {
            let c0 = next();
            let tmp = black_box(lhs).dot(&black_box(rhs));
            out.slice_mut(s![.., c0..c0 + B]).assign(&tmp);
        })
    });
    g.bench_function("ndarray general_mat_mul", |bch| {
        bch.iter(|| {
            let c0 = next();
            ndarray::linalg::general_mat_mul(1.0, &black_box(lhs), &black_box(rhs), 0.0, &mut out.slice_mut(s![.., c0..c0 + B]));
        })
    });
    g.bench_function("nalgebra gemm", |bch| {
        bch.iter(|| {
            let c0 = next();
            let data = &mut out.as_slice_mut().unwrap()[c0..];
            let mut dst = na_view_mut(data, Q, B, N, 1);
            dst.gemm(1.0, &na_view(black_box(v_data), Q, D, 1, Q), &na_view(black_box(x_data), D, B, 1, D), 0.0);
        })
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Hessian block (Glm::hessian_sum)

const R: usize = D + 1;

fn bench_hessian(c: &mut Criterion) {
    let mut rng = Rng(0x5EED_0002);
    let mut z = rng.matrix(B, R);
    z.column_mut(D).fill(1.0);
    let w: Vec<f64> = (0..B).map(|_| 0.25 * (rng.next() + 1.0)).collect();
    let mut dz = z.clone();
    for (mut row, &wi) in dz.rows_mut().into_iter().zip(&w) {
        row *= wi;
    }
    let z_data = z.as_slice().unwrap();
    let dz_data = dz.as_slice().unwrap();

    let want = z.t().dot(&dz);
    {
        let mut h = Array2::<f64>::zeros((R, R));
        gemm(h.view_mut(), false, z.t(), dz.view(), 1.0);
        assert_close("faer gemm", h.view(), want.view());
        let mut h = Array2::<f64>::zeros((R, R));
        gemm_lower(h.view_mut(), false, z.t(), dz.view(), 1.0);
        upweight::linalg::symmetrize_from_lower(&mut h);
        assert_close("faer gemm_lower", h.view(), want.view());
        let mut h = Array2::<f64>::zeros((R, R));
        ndarray::linalg::general_mat_mul(1.0, &z.t(), &dz, 0.0, &mut h);
        assert_close("ndarray general_mat_mul", h.view(), want.view());
        let mut h = DMatrix::<f64>::zeros(R, R);
        h.gemm(1.0, &na_view(z_data, R, B, 1, R), &na_view(dz_data, B, R, R, 1), 0.0);
        assert_close("nalgebra gemm", to_nd(&h).view(), want.view());
    }

    // Accumulating into the destination, as hessian_sum does (block += Z^T D Z).
    let mut g = c.benchmark_group("hessian_ZtDZ_512x129");
    g.sampling_mode(SamplingMode::Flat).sample_size(30);
    let mut h = Array2::<f64>::zeros((R, R));
    g.bench_function("faer gemm_lower", |bch| bch.iter(|| gemm_lower(h.view_mut(), true, black_box(z.t()), black_box(dz.view()), 1.0)));
    g.bench_function("faer gemm", |bch| bch.iter(|| gemm(h.view_mut(), true, black_box(z.t()), black_box(dz.view()), 1.0)));
    g.bench_function("ndarray dot", |bch| {
        bch.iter(|| {
            let t = black_box(z.t()).dot(&black_box(dz.view()));
            h += &t;
        })
    });
    g.bench_function("ndarray general_mat_mul", |bch| {
        bch.iter(|| ndarray::linalg::general_mat_mul(1.0, &black_box(z.t()), &black_box(dz.view()), 1.0, &mut h))
    });
    let mut hn = DMatrix::<f64>::zeros(R, R);
    g.bench_function("nalgebra gemm", |bch| bch.iter(|| hn.gemm(1.0, &na_view(black_box(z_data), R, B, 1, R), &na_view(black_box(dz_data), B, R, R, 1), 1.0)));
    g.finish();
    black_box((h, hn));
}

// ---------------------------------------------------------------------------------------------
// 3. Cholesky factor + solve

const NRHS: usize = 500;

fn bench_cholesky_p(c: &mut Criterion, p: usize) {
    let mut rng = Rng(0x5EED_0003 + p as u64);
    // Well-conditioned SPD H = A^T A / m + I.
    let a = rng.matrix(2 * p, p);
    let mut h = a.t().dot(&a) / (2 * p) as f64;
    h.diag_mut().map_inplace(|d| *d += 1.0);
    // Right-hand sides: rows of a row-major (500 x p) block, solved on its transposed view
    // (p x 500, column-major), exactly as Influence::params does.
    let g_rows = rng.matrix(NRHS, p);
    let h_na = na_from(h.view());
    let g_na = na_from(g_rows.t()); // p x 500, column-major like the faer operand

    let solve_faer = |chol: &Cholesky, mut g: Array2<f64>| {
        chol.solve_in_place(g.view_mut().reversed_axes());
        g
    };
    {
        let chol = Cholesky::factor(h.view()).unwrap();
        let x = solve_faer(&chol, g_rows.clone());
        assert_close("faer solve", h.dot(&x.t()).view(), g_rows.t());
        let mut xn = g_na.clone();
        nalgebra::Cholesky::new(h_na.clone()).unwrap().solve_mut(&mut xn);
        assert_close("nalgebra solve", to_nd(&xn).view(), x.t());
    }

    let mut g = c.benchmark_group(format!("cholesky_p{p}_rhs{NRHS}"));
    g.sampling_mode(SamplingMode::Flat).sample_size(if p >= 500 { 10 } else { 30 });
    g.bench_function("faer factor+solve", |bch| {
        bch.iter_batched(
            || g_rows.clone(),
            |rhs| {
                let chol = Cholesky::factor(black_box(h.view())).unwrap();
                solve_faer(&chol, rhs)
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("nalgebra factor+solve", |bch| {
        bch.iter_batched(
            || (h_na.clone(), g_na.clone()),
            |(hm, mut rhs)| {
                let chol = nalgebra::Cholesky::new(black_box(hm)).unwrap();
                chol.solve_mut(&mut rhs);
                rhs
            },
            BatchSize::LargeInput,
        )
    });
    // The two parts separately: a fit factors once, influence then solves n / 512 blocks.
    g.bench_function("faer factor", |bch| bch.iter(|| Cholesky::factor(black_box(h.view())).unwrap()));
    g.bench_function("nalgebra factor", |bch| bch.iter_batched(|| h_na.clone(), |hm| nalgebra::Cholesky::new(black_box(hm)).unwrap(), BatchSize::LargeInput));
    let chol = Cholesky::factor(h.view()).unwrap();
    g.bench_function("faer solve", |bch| bch.iter_batched(|| g_rows.clone(), |rhs| solve_faer(&chol, rhs), BatchSize::LargeInput));
    let chol_na = nalgebra::Cholesky::new(h_na.clone()).unwrap();
    g.bench_function("nalgebra solve", |bch| {
        bch.iter_batched(
            || g_na.clone(),
            |mut rhs| {
                chol_na.solve_mut(&mut rhs);
                rhs
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn bench_cholesky(c: &mut Criterion) {
    bench_cholesky_p(c, R);
    bench_cholesky_p(c, 1000);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_score, bench_hessian, bench_cholesky
}
criterion_main!(benches);
