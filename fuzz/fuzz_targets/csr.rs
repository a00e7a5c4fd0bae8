//! Sparse X: `Csr::new` on a (mostly well-formed, sometimes corrupted) CSR triple never panics
//! and accepts only canonical, finite matrices; every product the GLM kernels use then agrees
//! with the same product on the dense matrix (within rounding of the sum of |terms|).
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ndarray::{Array1, Array2};
use upweight::data::{Csr, XView};

/// A biased coin that comes up false once the input is used up (`Unstructured::ratio` would
/// then always say true).
fn chance(u: &mut Unstructured, num: u8, den: u8) -> bool {
    !u.is_empty() && u.ratio(num, den).unwrap_or(false)
}

fn small(u: &mut Unstructured) -> Result<f64> {
    Ok(f64::from(u.int_in_range(-400i16..=400)?) / 16.0)
}

struct Triple {
    indptr: Vec<i64>,
    indices: Vec<i32>,
    data: Vec<f64>,
    ncols: usize,
}

fn triple(u: &mut Unstructured) -> Result<Triple> {
    let nrows = u.int_in_range(0..=9)?;
    let ncols = u.int_in_range(0..=9)?;
    let mut t = Triple { indptr: vec![0], indices: vec![], data: vec![], ncols };
    for _ in 0..nrows {
        for j in 0..ncols {
            if chance(u, 1, 3) {
                t.indices.push(j as i32);
                t.data.push(small(u)?);
            }
        }
        t.indptr.push(t.indices.len() as i64);
    }
    // corruptions: each must be refused (or, if harmless, accepted and still correct)
    for _ in 0..4 {
        if !chance(u, 1, 3) {
            break;
        }
        match u.int_in_range(0..=6)? {
            0 if !t.indptr.is_empty() => {
                let i = u.choose_index(t.indptr.len())?;
                t.indptr[i] = u.arbitrary()?;
            }
            1 if !t.indices.is_empty() => {
                let i = u.choose_index(t.indices.len())?;
                t.indices[i] = u.arbitrary()?;
            }
            2 if !t.data.is_empty() => {
                let i = u.choose_index(t.data.len())?;
                t.data[i] = f64::from_bits(u.arbitrary()?);
            }
            3 => {
                t.indptr.pop();
            }
            4 => {
                t.indices.pop();
            }
            5 => t.ncols = u.int_in_range(0..=12)?,
            _ => t.data.push(small(u)?),
        }
    }
    Ok(t)
}

fn close(a: &Array2<f64>, b: &Array2<f64>, scale: &Array2<f64>, what: &str) {
    assert_eq!(a.dim(), b.dim(), "{what}: shapes");
    for ((x, y), s) in a.iter().zip(b).zip(scale) {
        // equal (also when both overflowed to the same infinity) or within rounding
        assert!(x == y || (x - y).abs() <= 1e-13 * s + 1e-300 || !s.is_finite(), "{what}: {x} vs {y} (scale {s})");
    }
}

/// Reference products with plain loops over the dense matrix; `abs` gives |terms| sums.
fn naive(x: &Array2<f64>, m: &Array2<f64>) -> (Array2<f64>, Array2<f64>) {
    let (n, k, c) = (x.nrows(), x.ncols(), m.ncols());
    let (mut out, mut abs) = (Array2::zeros((n, c)), Array2::zeros((n, c)));
    for i in 0..n {
        for j in 0..c {
            for l in 0..k {
                out[[i, j]] += x[[i, l]] * m[[l, j]];
                abs[[i, j]] += (x[[i, l]] * m[[l, j]]).abs();
            }
        }
    }
    (out, abs)
}

fn run(u: &mut Unstructured) -> Result<()> {
    let t = triple(u)?;
    let Ok(csr) = Csr::new(&t.indptr, &t.indices, &t.data, t.ncols) else { return Ok(()) };
    // accepted: canonical and finite
    assert_eq!(csr.nrows() + 1, t.indptr.len());
    assert!(t.data.iter().all(|v| v.is_finite()));
    let (n, d) = (csr.nrows(), t.ncols);
    let dense = csr.to_dense();
    let (xs, xd) = (XView::Csr(csr), XView::Dense(dense.view()));
    let c = u.int_in_range(1..=3)?;
    let m = Array2::from_shape_fn((d, c), |_| small(u).unwrap_or(1.0));
    let (want, abs) = naive(&dense, &m);
    close(&xs.dot(m.view()), &want, &abs, "X m (sparse)");
    close(&xd.dot(m.view()), &want, &abs, "X m (dense)");
    let tt = Array2::from_shape_fn((n, c), |_| small(u).unwrap_or(1.0));
    let (want, abs) = naive(&dense.t().to_owned(), &tt);
    let (want2, abs2) = naive(&dense.t().mapv(|v| v * v), &tt);
    for (xv, name) in [(&xs, "sparse"), (&xd, "dense")] {
        let mut got = Array2::zeros((d, c));
        xv.t_dot_add(tt.view(), got.view_mut());
        close(&got, &want, &abs, &format!("X^T t ({name})"));
        let mut got = Array2::zeros((d, c));
        xv.sq_t_dot_add(tt.view(), got.view_mut());
        close(&got, &want2, &abs2, &format!("(X o X)^T t ({name})"));
        for i in 0..n {
            let mut row = Array1::zeros(d);
            xv.row_scaled_into(i, 2.0, row.view_mut());
            assert_eq!(row, dense.row(i).mapv(|v| 2.0 * v), "row {i} ({name})");
        }
    }
    // Z^T diag(a) Z blocks, Z = [X, 1]
    let a = Array1::from_shape_fn(n, |_| small(u).unwrap_or(1.0).abs());
    let mut z = Array2::ones((n, d + 1));
    z.slice_mut(ndarray::s![.., ..d]).assign(&dense);
    let za = Array2::from_shape_fn((n, d + 1), |(i, j)| a[i] * z[[i, j]]);
    let (gram, gabs) = naive(&z.t().to_owned(), &za);
    let r0 = u.int_in_range(0..=d)?;
    let r1 = u.int_in_range(r0 + 1..=d + 1)?;
    let lower = u.arbitrary()?;
    let (c0, c1) = if lower {
        (r0, r1)
    } else {
        let c0 = u.int_in_range(0..=d)?;
        (c0, u.int_in_range(c0 + 1..=d + 1)?)
    };
    for (xv, name) in [(&xs, "sparse"), (&xd, "dense")] {
        let mut got = Array2::zeros((r1 - r0, c1 - c0));
        xv.gram_add(a.view(), r0..r1, c0..c1, lower, got.view_mut());
        let mut want = gram.slice(ndarray::s![r0..r1, c0..c1]).to_owned();
        let scale = gabs.slice(ndarray::s![r0..r1, c0..c1]).to_owned();
        if lower {
            for i in 0..want.nrows() {
                for j in i + 1..want.ncols() {
                    want[[i, j]] = 0.0;
                    got[[i, j]] = 0.0;
                }
            }
        }
        close(&got, &want, &scale, &format!("gram block {r0}..{r1} x {c0}..{c1}, lower={lower} ({name})"));
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
