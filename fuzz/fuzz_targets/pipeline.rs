//! The whole core on small problems with extreme values: building a training set, fitting,
//! preparing influence (direct or CG, with damping, an arbitrary theta or an explicit Hessian),
//! parameter influence, self-influence, score matrices, top-k and exact refits, for the four GLM
//! families and for user-supplied gradients, with dense, float32 and sparse X.
//!
//! The properties are the library's promises: no call panics, and a call that returns `Ok`
//! returns only finite numbers (no silent NaN) and well-formed top-k indices.
#![no_main]

use std::sync::Arc;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use ndarray::{Array1, Array2};
use upweight::data::{Features, Names, Rows, Table};
use upweight::fit::refit::{refits, Change};
use upweight::influence::{Influence, InfluenceOptions, Points, TopK};
use upweight::solvers::{Method, Precondition, SolverOptions};
use upweight::{newton, Cancel, Family, FitOptions, Glm, GradientModel, Model, Objective};

/// A biased coin that comes up false once the input is used up (`Unstructured::ratio` would
/// then always say true).
fn chance(u: &mut Unstructured, num: u8, den: u8) -> bool {
    !u.is_empty() && u.ratio(num, den).unwrap_or(false)
}

/// Mostly ordinary numbers, sometimes an extreme one, sometimes any bit pattern (NaN, inf).
fn value(u: &mut Unstructured) -> Result<f64> {
    Ok(match u.int_in_range(0..=19)? {
        0 => f64::from_bits(u.arbitrary()?),
        1 | 2 => *u.choose(&[0.0, -0.0, 1e308, -1e308, 1e300, 1e154, -1e154, 1e38, 1e20, 1e16, 710.0, -745.0, 40.0, 1e-308, 5e-324, -1e-300])?,
        _ => f64::from(u.int_in_range(-3000i16..=3000)?) / 256.0,
    })
}

fn values(u: &mut Unstructured, n: usize) -> Result<Vec<f64>> {
    (0..n).map(|_| value(u)).collect()
}

fn label(u: &mut Unstructured, family: Family) -> Result<f64> {
    if chance(u, 1, 30) {
        return value(u);
    }
    Ok(match family {
        Family::Squared => value(u)?,
        Family::Logistic => f64::from(u.int_in_range(0u8..=1)?),
        Family::Poisson => f64::from(u.int_in_range(0u8..=6)?),
        Family::Multinomial { n_classes } => u.int_in_range(0..=n_classes - 1)? as f64,
    })
}

fn finite<'a>(what: &str, v: impl IntoIterator<Item = &'a f64>) {
    for (i, x) in v.into_iter().enumerate() {
        assert!(x.is_finite(), "{what}: Ok result with a non-finite value {x} at {i}");
    }
}

fn check_top(top: &TopK, n: usize, k: usize, r: usize) {
    let k = k.min(n);
    for (idx, val) in [(&top.helpful_idx, &top.helpful), (&top.harmful_idx, &top.harmful)] {
        assert_eq!(idx.dim(), (r, k));
        assert!(idx.iter().all(|&i| i < n), "top-k index out of range");
        finite("top_k", val.iter());
    }
    for row in top.helpful.rows() {
        assert!(row.windows(2).into_iter().all(|w| w[0] <= w[1]), "helpful not ascending: {row}");
    }
    for row in top.harmful.rows() {
        assert!(row.windows(2).into_iter().all(|w| w[0] >= w[1]), "harmful not descending: {row}");
    }
}

/// Every query on a prepared `Influence` (about its own training set); each either errs or
/// returns finite numbers.
fn queries(u: &mut Unstructured, inf: &Influence, test: Option<&Table>) -> Result<()> {
    let c = Cancel::new();
    let (n, p) = (inf.data().n(), inf.n_params());
    if let Ok((params, _)) = inf.params(Points::Train, &c) {
        assert_eq!(params.dim(), (n, p));
        finite("params", params.iter());
    }
    if let Ok((s, _)) = inf.self_influence(Points::Train, &c) {
        finite("self_influence", s.iter());
    }
    let r = u.int_in_range(1..=3)?;
    let grad_f = Array2::from_shape_vec((r, p), values(u, r * p)?).expect("r x p");
    if let Ok((s, _)) = inf.on(grad_f.view(), Points::Train, &c) {
        let s = s.into_f64();
        assert_eq!(s.dim(), (r, n));
        finite("on", s.iter());
    }
    let k = u.int_in_range(0..=n + 2)?;
    if let Ok((top, _)) = inf.top_k(grad_f.view(), k, Points::Train, &c) {
        check_top(&top, n, k, r);
    }
    if let Some(test) = test {
        if let Ok((s, _)) = inf.on_loss(test, Points::Train, &c) {
            finite("on_loss", s.into_f64().iter());
        }
    }
    Ok(())
}

/// Solver and influence options, drawn in the order the inputs in the corpus were written for.
fn solver(u: &mut Unstructured) -> Result<InfluenceOptions> {
    let method = if u.arbitrary()? { Method::Direct } else { Method::Cg };
    let damping = if chance(u, 1, 3) { value(u)? } else { 0.0 };
    let renormalize = u.arbitrary()?;
    let mut solver = SolverOptions { method, damping, ..Default::default() };
    solver.cg.max_iter = u.int_in_range(1..=200)?;
    solver.cg.precondition = if u.arbitrary()? { Precondition::Auto } else { Precondition::None };
    Ok(InfluenceOptions { solver, renormalize })
}

fn run(u: &mut Unstructured) -> Result<()> {
    let c = Cancel::new();
    let n = u.int_in_range(1..=24)?;
    let d = u.int_in_range(0..=5)?;
    let x: Vec<f64> = values(u, n * d)?;
    let x = Array2::from_shape_vec((n, d), x).expect("n x d");
    let w = if u.arbitrary()? {
        Some(Array1::from_shape_fn(n, |_| if chance(u, 1, 8) { value(u).unwrap_or(0.0) } else { f64::from(u.int_in_range(0u8..=8).unwrap_or(1)) / 4.0 }))
    } else {
        None
    };
    let x32 = x.mapv(|v| v as f32);
    // CSR copy of x (explicit zeros dropped)
    let (mut indptr, mut indices, mut data) = (vec![0i64], vec![], vec![]);
    for row in x.rows() {
        for (j, &v) in row.iter().enumerate() {
            if v != 0.0 {
                indices.push(j as i32);
                data.push(v);
            }
        }
        indptr.push(indices.len() as i64);
    }
    let storage = u.int_in_range(0..=2)?;
    // a table owns its features: each call builds them afresh from copies of the arrays
    let features = || -> Option<Features> {
        Some(match storage {
            0 => Features::dense(x.clone()),
            1 => Features::dense_f32(x32.clone()),
            _ => Features::csr(indptr.clone(), indices.clone(), data.clone(), d).ok()?,
        })
    };

    if chance(u, 1, 4) {
        // user-supplied gradients: the rows of x are the per-example gradients (p = d)
        let (Some(feat), true) = (features(), d > 0) else { return Ok(()) };
        let Ok(train) = Table::without_targets(feat, w.clone(), Names::TRAIN) else { return Ok(()) };
        let model = GradientModel { p: d };
        let theta = Array1::zeros(d);
        let opts = solver(u)?;
        let hessian = if u.arbitrary()? {
            let h = Array2::from_shape_vec((d, d), values(u, d * d)?).expect("d x d");
            Some(if u.arbitrary()? { &h + &h.t() } else { h })
        } else {
            None
        };
        if let Ok(inf) = Influence::new(Arc::new(model), train, theta, 0.0, opts, hessian, &c) {
            assert!(inf.grad_norm().is_finite());
            queries(u, &inf, None)?;
        }
        return Ok(());
    }

    let family = match u.int_in_range(0..=3)? {
        0 => Family::Squared,
        1 => Family::Logistic,
        2 => Family::Poisson,
        _ => Family::Multinomial { n_classes: u.int_in_range(2..=4)? },
    };
    let y = Array1::from_shape_vec(n, (0..n).map(|_| label(u, family)).collect::<Result<Vec<_>>>()?).expect("n");
    let l2 = *u.choose(&[0.0, 1e-3, 0.1, 1.0, 1e-12, 1e12])?;
    let model = Glm::new(family, d);
    let Some(feat) = features() else { return Ok(()) };
    let Ok(train) = Table::new(feat, y.clone(), w.clone(), Names::TRAIN) else { return Ok(()) };
    let Ok(obj) = Objective::new(&model, &train, l2) else { return Ok(()) };
    let method = if u.arbitrary()? { Method::Direct } else { Method::Cg };
    let fit = newton(&obj, None, &FitOptions { tol: 1e-9, max_iter: u.int_in_range(0..=40)?, method, report_move: u.arbitrary()? }, &c);
    let theta = match fit {
        Ok(res) => {
            finite("theta", res.theta.iter());
            assert!(res.objective.is_finite() && res.grad_norm.is_finite(), "fit: {} {}", res.objective, res.grad_norm);
            if let Some((row, moved)) = res.moved {
                assert!(moved.is_finite() && moved >= 0.0 && row < n, "moved: row {row}, {moved}");
            }
            if chance(u, 1, 4) {
                // anywhere, not only at an optimum
                Array1::from_shape_vec(model.n_params(), values(u, model.n_params())?).expect("p")
            } else {
                res.theta
            }
        }
        Err(_) => Array1::from_shape_vec(model.n_params(), values(u, model.n_params())?).expect("p"),
    };
    let test_x = x.slice(ndarray::s![..n.min(3), ..]).to_owned();
    let test_y = y.slice(ndarray::s![..n.min(3)]).to_owned();
    let test = Table::new(Features::dense(test_x), test_y, None, Names { x: "X_test", y: "y_test" }).ok();
    // the influence owns its training table: a second one from the same arrays (already
    // validated once above, so building it again succeeds); `train` stays for the refits
    let opts = solver(u)?;
    let feat = features().expect("built above");
    let inf_train = Table::new(feat, y.clone(), w.clone(), Names::TRAIN).expect("validated above");
    if let Ok(inf) = Influence::new(Arc::new(model), inf_train, theta.clone(), l2, opts, None, &c) {
        assert!(inf.grad_norm().is_finite());
        queries(u, &inf, test.as_ref())?;
    }
    if chance(u, 1, 3) && theta.iter().all(|t| t.is_finite()) {
        let m = u.int_in_range(0..=n)?; // n: out of range
        let change = Change { points: vec![m], weights: vec![value(u)?], l2: if u.arbitrary()? { Some(value(u)?) } else { None } };
        if let Ok(fits) =
            refits(&model, &train, l2, theta.view(), std::slice::from_ref(&change), &FitOptions { tol: 1e-9, max_iter: 20, method, report_move: true }, &c)
        {
            for f in fits {
                let ok = f.theta.iter().all(|t| t.is_finite()) && f.objective.is_finite() && f.grad_norm.is_finite();
                assert!(ok, "refit: {f:?}\nfamily {family:?} l2 {l2} method {method:?} change {change:?}\nx {x}\ny {y}\nw {w:?}\ntheta0 {theta}");
            }
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
