//! The core on its own: derivatives against finite differences, influence against exact refits
//! (DESIGN.md section 1's checks), the seed example, and thread-count determinism.

use std::sync::Arc;

use ndarray::{array, s, Array1, Array2, Axis, ShapeBuilder};
use upweight::influence::InfluenceOptions;
use upweight::objective::Curvature;
use upweight::{newton, Activation, Batch, Cancel, Family, FitOptions, Glm, Influence, Method, Mlp, Model, Names, Objective, Points, SolverOptions, Table};

/// Small deterministic pseudo-random numbers (no dev-dependency needed).
mod common;
use common::Lcg;

fn problem(family: Family, n: usize, d: usize, seed: u64) -> (Array2<f64>, Array1<f64>, Array1<f64>) {
    let mut rng = Lcg(seed);
    let x = Array2::from_shape_fn((n, d), |_| rng.normal());
    let truth: Vec<f64> = (0..d).map(|j| 0.5 - 0.3 * j as f64).collect();
    let y = Array1::from_shape_fn(n, |i| {
        let eta: f64 = x.row(i).iter().zip(&truth).map(|(a, b)| a * b).sum::<f64>() * 0.5;
        match family {
            Family::Squared => eta + 0.3 * rng.normal(),
            Family::Logistic => (rng.next() < 1.0 / (1.0 + (-eta).exp())) as u8 as f64,
            Family::Poisson => (eta.exp() * 2.0 * rng.next()).floor(),
            Family::Multinomial { n_classes } => ((rng.next() * n_classes as f64) as usize % n_classes) as f64,
        }
    });
    let mut w = Array1::from_shape_fn(n, |_| 0.5 + rng.next());
    w[1] = 0.0; // a zero-weight point: present but absent
    (x, y, w)
}

const FAMILIES: [Family; 4] = [Family::Squared, Family::Logistic, Family::Poisson, Family::Multinomial { n_classes: 3 }];

/// The rows of a batch as a table of their own.
fn table(b: &Batch) -> Table {
    Table::with_targets(upweight::Features::dense(b.x.to_dense().into_owned()), b.y.to_owned(), b.w.map(|w| w.to_owned()), upweight::Names::TRAIN).unwrap()
}

/// The influence of `model` fitted at `theta` on the rows of `b`.
fn influence(model: Glm, b: &Batch, theta: &Array1<f64>, l2: f64, solver: SolverOptions) -> Influence {
    Influence::new(Arc::new(model), table(b), theta.clone(), l2, InfluenceOptions { solver, renormalize: true }, None, &Cancel::new()).unwrap()
}

fn fit(model: &Glm, data: Batch, l2: f64) -> Array1<f64> {
    let obj = Objective::new(model, &data, l2).unwrap();
    let res = newton(&obj, None, &FitOptions { tol: 1e-13, max_iter: 100, ..Default::default() }, &Cancel::new()).unwrap();
    assert!(res.converged, "{:?} did not converge: {}", model.family, res.grad_norm);
    res.theta
}

#[test]
fn gradient_and_hessian_match_finite_differences() {
    for family in FAMILIES {
        let (x, y, w) = problem(family, 40, 3, 1);
        let model = Glm::new(family, 3);
        let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
        let obj = Objective::new(&model, &data, 0.05).unwrap();
        let c = Cancel::new();
        let p = model.n_params();
        let theta = Array1::from_shape_fn(p, |j| 0.1 * (j as f64 - 1.5));
        let (_, g) = obj.value_grad(theta.view(), &c).unwrap();
        let h = obj.hessian(theta.view(), &c).unwrap();
        let eps = 1e-6;
        for j in 0..p {
            let mut up = theta.clone();
            let mut dn = theta.clone();
            up[j] += eps;
            dn[j] -= eps;
            let fd = (obj.value(up.view(), &c).unwrap() - obj.value(dn.view(), &c).unwrap()) / (2.0 * eps);
            assert!((fd - g[j]).abs() < 1e-7, "{family:?} grad {j}: {fd} vs {}", g[j]);
            let gd = (obj.value_grad(up.view(), &c).unwrap().1 - obj.value_grad(dn.view(), &c).unwrap().1) / (2.0 * eps);
            for i in 0..p {
                assert!((gd[i] - h[[i, j]]).abs() < 1e-6, "{family:?} hess ({i},{j})");
            }
        }
        // block HVP equals H V
        let v = Array2::from_shape_fn((p, 3), |(i, j)| ((i * 7 + j * 3) % 5) as f64 - 2.0);
        let hv = obj.hvp(theta.view(), v.view(), &c).unwrap();
        let diff = (&hv - &h.dot(&v)).mapv(f64::abs).fold(0.0_f64, |a, &b| a.max(b));
        assert!(diff < 1e-12, "{family:?} hvp differs by {diff}");
    }
}

/// Central differences of exact refits with w_m +- h equal I(z_m) (DESIGN.md section 1).
#[test]
fn influence_equals_finite_difference_of_refits() {
    for family in FAMILIES {
        for l2 in [0.0, 0.1] {
            if matches!(family, Family::Multinomial { .. }) && l2 == 0.0 {
                continue; // covered with l2 > 0; the l2 = 0 multinomial is tested through Python
            }
            let (x, y, w) = problem(family, 60, 3, 7);
            let model = Glm::new(family, 3);
            let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
            let theta = fit(&model, data, l2);
            let inf = influence(model, &data, &theta, l2, SolverOptions::default());
            let params = inf.params(Points::Train, &Cancel::new()).unwrap().0;
            for m in [0usize, 1, 5] {
                let h = 1e-4;
                let refit = |eps: f64| {
                    let mut w2 = w.clone();
                    w2[m] += eps;
                    fit(&model, Batch::new(x.view(), y.view(), Some(w2.view()), Names::TRAIN).unwrap(), l2)
                };
                // central when w_m > 0; one-sided for a zero weight (weights must stay >= 0)
                let fd = if w[m] > 0.0 { (refit(h) - refit(-h)) / (2.0 * h) } else { (refit(h) - &theta) / h };
                let row = params.row(m);
                let scale = row.iter().fold(1e-3_f64, |a, &b| a.max(b.abs()));
                let err = (&fd - &row).mapv(f64::abs).fold(0.0_f64, |a, &b| a.max(b));
                let tol = if w[m] > 0.0 { 1e-5 } else { 1e-3 };
                assert!(err / scale < tol, "{family:?} l2={l2} m={m}: rel err {}", err / scale);
            }
        }
    }
}

/// The seed's worked example: (0,0), (1,1.5), (2,2), squared loss, y = m x + b.
#[test]
fn seed_example() {
    let x = array![[0.0], [1.0], [2.0]];
    let y = array![0.0, 1.5, 2.0];
    let model = Glm::new(Family::Squared, 1);
    let data = Batch::new(x.view(), y.view(), None, Names::TRAIN).unwrap();
    let theta = fit(&model, data, 0.0);
    assert!((theta[0] - 1.0).abs() < 1e-12 && (theta[1] - 1.0 / 6.0).abs() < 1e-12);
    let inf = influence(model, &data, &theta, 0.0, SolverOptions::default());
    let params = inf.params(Points::Train, &Cancel::new()).unwrap().0;
    // closed form: I(z_m) = -(Z^T Z)^{-1} z_m r_m with r_m = eta_m - y_m (the 2s and W cancel)
    let expected = array![[1.0 / 12.0, -5.0 / 36.0], [0.0, 1.0 / 9.0], [-1.0 / 12.0, 1.0 / 36.0]];
    assert!((&params - &expected).iter().all(|v| v.abs() < 1e-12), "{params}");
    let s = inf.on_loss(&table(&data), Points::Train, &Cancel::new()).unwrap().0.into_f64();
    for m in 0..3 {
        // self-influence on one's own loss is negative
        assert!(s[[m, m]] < 0.0);
    }
    // influence on the fitted slope sums to zero over points (the residuals are orthogonal to Z)
    let total: Array1<f64> = params.sum_axis(Axis(0));
    assert!(total.iter().all(|v| v.abs() < 1e-12));
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let family = Family::Multinomial { n_classes: 4 };
    let (x, y, w) = problem(family, 3000, 5, 3);
    let model = Glm::new(family, 5);
    let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let theta = fit(&model, data, 0.01);
            let inf = influence(model, &data, &theta, 0.01, SolverOptions::default());
            let test = data.rows(0, 50);
            (
                theta.clone(),
                inf.on_loss(&table(&test), Points::Train, &Cancel::new()).unwrap().0.into_f64(),
                inf.self_influence(Points::Train, &Cancel::new()).unwrap().0,
            )
        })
    };
    let a = run(1);
    let b = run(3);
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
}

/// One Newton step on the objective without a point is the exact refit for squared loss
/// (weighted, penalised, the mean renormalised: the eigendecomposition path), for single points
/// and a group; leave-out answers do not depend on the thread count.
#[test]
fn leave_out_step_is_the_refit_for_squared_loss_and_thread_independent() {
    let family = Family::Squared;
    let (x, y, w) = problem(family, 300, 4, 11);
    let model = Glm::new(family, 4);
    let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
    let l2 = 0.05;
    let theta = fit(&model, data, l2);
    let run = |threads: usize| {
        rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
            let inf = influence(model, &data, &theta, l2, SolverOptions::default());
            let c = Cancel::new();
            let groups = vec![vec![0, 5, 9], vec![17]];
            (inf.loo_params(Points::Train, &c).unwrap(), inf.leave_out(&groups, None, &c).unwrap().0)
        })
    };
    let (loo, groups) = run(1);
    let (loo2, groups2) = run(2);
    assert!(same_bits(&loo, &loo2), "loo differs by {}", max_abs(&(&loo - &loo2)));
    assert!(same_bits(&groups, &groups2), "groups differ by {}", max_abs(&(&groups - &groups2)));
    for (removed, got) in [(vec![3], loo.row(3).to_owned()), (vec![17], loo.row(17).to_owned()), (vec![0, 5, 9], groups.row(0).to_owned())] {
        let mut wm = w.clone();
        removed.iter().for_each(|&i| wm[i] = 0.0);
        let refit = fit(&model, Batch::new(x.view(), y.view(), Some(wm.view()), Names::TRAIN).unwrap(), l2);
        let want = &refit - &theta;
        let err = (&got - &want).iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        assert!(err <= 1e-9 * want.iter().fold(0.0_f64, |m, v| m.max(v.abs())), "{removed:?}: {err}");
    }
    // a group of one is the point (to rounding: a gathered row goes through other kernels)
    let scale = loo.row(17).iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    assert!(groups.row(1).iter().zip(loo.row(17)).all(|(a, b)| (a - b).abs() <= 1e-12 * scale));
}

#[test]
fn bad_inputs_are_errors() {
    let x = array![[0.0], [1.0]];
    let y = array![0.0, 2.0];
    let model = Glm::new(Family::Logistic, 1);
    let data = Batch::new(x.view(), y.view(), None, Names::TRAIN).unwrap();
    assert!(Objective::new(&model, &data, 0.0).is_err()); // label 2 for logistic
    assert!(Objective::new(&model, &data, -1.0).is_err());
    let w = array![-1.0, 1.0];
    assert!(Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).is_err());
    let w = array![0.0, 0.0];
    assert!(Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).is_err());
    let xn = array![[f64::NAN], [1.0]];
    assert!(Batch::new(xn.view(), y.view(), None, Names::TRAIN).is_err());
}

/// CG on Hessian-vector products agrees with the direct solve for every family, including the
/// multinomial's null direction; top-k equals sorting the full score matrix.
#[test]
fn cg_matches_direct_and_top_k_matches_sorting() {
    for family in FAMILIES {
        let (x, y, w) = problem(family, 1500, 4, 11);
        let model = Glm::new(family, 4);
        let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
        let theta = fit(&model, data, 0.01);
        let c = Cancel::new();
        let direct = influence(model, &data, &theta, 0.01, SolverOptions::default());
        let mut opts = SolverOptions { method: Method::Cg, ..Default::default() };
        opts.cg.rtol = 1e-12;
        let cgi = influence(model, &data, &theta, 0.01, opts);
        let test = table(&data.rows(0, 40));
        let (s1, i1) = direct.on_loss(&test, Points::Train, &c).unwrap();
        let s1 = s1.into_f64();
        let (s2, i2) = cgi.on_loss(&test, Points::Train, &c).unwrap();
        let s2 = s2.into_f64();
        let scale = s1.iter().fold(0.0_f64, |a, &b| a.max(b.abs()));
        let err = (&s1 - &s2).iter().fold(0.0_f64, |a, &b| a.max(b.abs()));
        assert!(err / scale < 1e-8, "{family:?}: cg vs direct {err}");
        assert!(i1.residuals.iter().all(|&r| r < 1e-10), "{family:?} direct residual");
        assert!(i2.converged.iter().all(|&c| c) && i2.iterations.iter().all(|&n| n > 0 && n < 200));
        // top-k from the stream equals sorting the full matrix
        let g = direct.loss_grads(&test).unwrap();
        let (top, _) = direct.top_k(g.view(), 7, Points::Train, &c).unwrap();
        for t in 0..40 {
            let mut order: Vec<usize> = (0..data.n()).collect();
            order.sort_by(|&a, &b| s1[[t, a]].partial_cmp(&s1[[t, b]]).unwrap().then(a.cmp(&b)));
            assert_eq!(top.helpful_idx.row(t).to_vec(), order[..7].to_vec());
            order.sort_by(|&a, &b| s1[[t, b]].partial_cmp(&s1[[t, a]]).unwrap().then(a.cmp(&b)));
            assert_eq!(top.harmful_idx.row(t).to_vec(), order[..7].to_vec());
            assert_eq!(top.harmful[[t, 0]], s1[[t, order[0]]]);
        }
    }
}

/// Damping: the influence solves (H + delta I); the result differs from undamped and matches a
/// direct solve of the damped matrix.
#[test]
fn damping_is_applied_in_both_solvers() {
    let family = Family::Logistic;
    let (x, y, _) = problem(family, 400, 3, 5);
    let model = Glm::new(family, 3);
    let data = Batch::new(x.view(), y.view(), None, Names::TRAIN).unwrap();
    let theta = fit(&model, data, 0.0);
    let obj = Objective::new(&model, &data, 0.0).unwrap();
    let c = Cancel::new();
    let g = Array2::from_shape_fn((4, 2), |(i, j)| (i + 2 * j) as f64 - 1.5);
    let mut h = obj.hessian(theta.view(), &c).unwrap();
    h.diag_mut().mapv_inplace(|v| v + 0.5);
    let expected = upweight::solvers::Direct::new(h, None).unwrap().solve(g.view());
    for method in [Method::Direct, Method::Cg] {
        let inf = influence(model, &data, &theta, 0.0, SolverOptions { method, damping: 0.5, ..Default::default() });
        let (v, _) = inf.inverse_hvp(g.view(), &c).unwrap();
        assert!((&v - &expected).iter().all(|e| e.abs() < 1e-9), "{method:?}");
    }
}

/// float32 features and .npy files give the same answers as in-memory float64.
#[test]
fn float32_and_npy_sources_match_in_memory() {
    use upweight::Features;
    let family = Family::Poisson;
    let (x, y, w) = problem(family, 1300, 3, 9);
    let x32 = x.mapv(|v| v as f32);
    let x64 = x32.mapv(f64::from);
    let model = Glm::new(family, 3);
    let mem = Batch::new(x64.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
    let dir = std::env::temp_dir().join(format!("upweight-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("x.npy");
    {
        use std::io::Write;
        let mut header = String::from("{'descr': '<f4', 'fortran_order': False, 'shape': (1300, 3), }");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"\x93NUMPY\x01\x00").unwrap();
        f.write_all(&(header.len() as u16).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        for v in x32.iter() {
            f.write_all(&v.to_le_bytes()).unwrap();
        }
    }
    let t32 = || Table::new(Features::dense_f32(x32.clone()), y.clone(), Some(w.clone()), Names::TRAIN).unwrap();
    let tnpy = Table::new(Features::npy(&path, "X").unwrap(), y.clone(), Some(w.clone()), Names::TRAIN).unwrap();
    let c = Cancel::new();
    let mut thetas = vec![];
    let mut scores = vec![];
    let test = table(&mem.rows(0, 10));
    let opts = || InfluenceOptions { solver: SolverOptions::default(), renormalize: true };
    for src in [table(&mem), t32(), tnpy] {
        let obj = Objective::new(&model, &src, 0.01).unwrap();
        let th = newton(&obj, None, &FitOptions::default(), &c).unwrap().theta;
        let inf = Influence::new(Arc::new(model), src, th.clone(), 0.01, opts(), None, &c).unwrap();
        scores.push(inf.on_loss(&test, Points::Train, &c).unwrap().0.into_f64());
        thetas.push(th);
    }
    // fitting and solving are float64 for every source; float32 rows are scored in float32
    assert_eq!(thetas[0], thetas[1]);
    assert_eq!(thetas[0], thetas[2]);
    assert_eq!(scores[1], scores[2]);
    let scale = scores[0].iter().fold(0.0_f64, |a, &b| a.max(b.abs()));
    let err = (&scores[0] - &scores[1]).iter().fold(0.0_f64, |a, &b| a.max(b.abs()));
    assert!(err < 1e-6 * scale, "float32 scores off by {err} (scale {scale})");
    // top-k from float32 scores reports float64 values
    let inf32 = Influence::new(Arc::new(model), t32(), thetas[0].clone(), 0.01, opts(), None, &c).unwrap();
    let inf64 = Influence::new(Arc::new(model), table(&mem), thetas[0].clone(), 0.01, opts(), None, &c).unwrap();
    let g = inf32.loss_grads(&test).unwrap();
    let (top32, _) = inf32.top_k(g.view(), 5, Points::Train, &c).unwrap();
    let (top64, _) = inf64.top_k(g.view(), 5, Points::Train, &c).unwrap();
    assert_eq!(top32.helpful_idx, top64.helpful_idx);
    assert_eq!(top32.harmful_idx, top64.harmful_idx);
    for (a, b) in top32.helpful.iter().chain(top32.harmful.iter()).zip(top64.helpful.iter().chain(top64.harmful.iter())) {
        assert!((a - b).abs() <= 1e-13 * scale, "{a} vs {b}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn max_abs(a: &Array2<f64>) -> f64 {
    a.iter().fold(0.0_f64, |m, v| m.max(v.abs()))
}

fn same_bits(a: &Array2<f64>, b: &Array2<f64>) -> bool {
    a.dim() == b.dim() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Above p = 2048 the Hessian is built by tiles: it equals the row-block sum to rounding, and the
/// same bits come out of 1, 2 and 3 threads, for every model family (GLMs, per-example
/// gradients, networks and a network's last layer).
#[test]
fn tiled_hessian_matches_row_blocks_and_not_the_thread_count() {
    use upweight::GradientModel;
    // multinomial k = 5, d = 500 (p = 2505, one panel per class); k = 2, d = 1100 (each class
    // cut in two panels); per-example gradients with p = 2300 (panels of 512, the last ragged)
    let glms = [(Family::Multinomial { n_classes: 5 }, 500, 4500), (Family::Multinomial { n_classes: 2 }, 1100, 1300)];
    type Case = (Box<dyn Model>, Array2<f64>, Array1<f64>, Array1<f64>);
    let mut cases: Vec<Case> = vec![];
    for (family, d, n) in glms {
        let (x, y, w) = problem(family, n, d, 21);
        cases.push((Box::new(Glm::new(family, d)), x, y, w));
    }
    let (x, _, w) = problem(Family::Squared, 2600, 2300, 22);
    cases.push((Box::new(GradientModel { p: 2300 }), x.mapv(|v| v * 0.1), Array1::zeros(2600), w));
    // a network's Gauss-Newton matrix (p = 100 x 21 + 4 x 101 = 2504, tiles from a shared factor)
    // and the last layer of one with a 6-class head (p = 6 x 401 = 2406, one panel, its class
    // blocks above the diagonal left to the head's finish)
    let (x, y, w) = problem(Family::Multinomial { n_classes: 4 }, 1100, 20, 24);
    let net = Mlp::new(vec![20, 100, 4], Activation::Tanh, Family::Multinomial { n_classes: 4 }, upweight::models::mlp::Curvature::GaussNewton).unwrap();
    cases.push((Box::new(net), x, y, w));
    let (x, y, w) = problem(Family::Multinomial { n_classes: 6 }, 900, 10, 25);
    let net = Mlp::new(vec![10, 400, 6], Activation::Tanh, Family::Multinomial { n_classes: 6 }, upweight::models::mlp::Curvature::GaussNewton).unwrap();
    let t = Array1::from_shape_fn(net.n_params(), |j| 0.05 * ((j % 13) as f64 - 6.0));
    cases.push((Box::new(net.last_layer(t.view()).unwrap()), x, y, w));
    for (model, x, y, w) in &cases {
        let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
        let p = model.n_params();
        assert!(p > upweight::objective::TILED_HESSIAN_MAX_ROW_BLOCK_P);
        let obj = Objective::new(model.as_ref(), &data, 0.01).unwrap();
        let theta = Array1::from_shape_fn(p, |j| 0.02 * ((j % 11) as f64 - 5.0));
        let c = Cancel::new();
        let rows = obj.hessian_row_blocks(theta.view(), &c).unwrap();
        let run = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| obj.hessian(theta.view(), &c).unwrap());
        let tiled = run(1);
        let err = max_abs(&(&tiled - &rows)) / max_abs(&rows);
        assert!(err < 1e-12, "p = {p}: tiled vs row blocks {err:e}");
        assert!(same_bits(&tiled, &tiled.t().to_owned()), "p = {p}: not symmetric");
        for threads in [2, 3] {
            assert!(same_bits(&tiled, &run(threads)), "p = {p}: {threads} threads differ");
        }
    }
}

/// Tiles on any panels (across class boundaries, or cutting classes into pieces), summed and
/// finished, give the lower triangle of `hessian_sum`, and a diagonal tile writes nothing above
/// its diagonal: for multinomial (derived diagonal blocks) and squared-loss models.
#[test]
fn glm_tiles_on_any_panels_match_the_full_block_kernel() {
    for family in [Family::Multinomial { n_classes: 3 }, Family::Squared] {
        let d = 4;
        let (x, y, w) = problem(family, 200, d, 23);
        let model = Glm::new(family, d);
        let k = model.k();
        let p = k * (d + 1);
        let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
        let theta = Array1::from_shape_fn(p, |j| 0.1 * (j as f64 - 7.0));
        let mut full = Array2::zeros((p, p));
        model.hessian_sum(theta.view(), &data, full.view_mut());
        let cuts: [&[usize]; 6] = [&[0, 3, 12, 15], &[0, 15], &[0, 2, 5, 7, 10, 13, 15], &[0, 1, 4, 5, 9, 10, 14, 15], &[0, 2, 5], &[0, 5]];
        for cut in cuts.iter().filter(|c| *c.last().unwrap() == p) {
            let panels: Vec<_> = cut.windows(2).map(|w| w[0]..w[1]).collect();
            let mut h = Array2::<f64>::zeros((p, p));
            for (i, rows) in panels.iter().enumerate() {
                for cols in &panels[..=i] {
                    let mut tile = Array2::<f64>::zeros((rows.len(), cols.len()));
                    model.hessian_tile_sum(theta.view(), &data, rows.clone(), cols.clone(), tile.view_mut());
                    if rows == cols {
                        for ((a, b), v) in tile.indexed_iter() {
                            assert!(a >= b || *v == 0.0, "{family:?}: ({a}, {b}) above the diagonal of tile {rows:?} was written");
                        }
                    }
                    h.slice_mut(s![rows.clone(), cols.clone()]).assign(&tile);
                }
            }
            model.hessian_tiles_finish(h.view_mut());
            for i in 0..p {
                for j in 0..=i {
                    assert!((h[[i, j]] - full[[i, j]]).abs() < 1e-12 * max_abs(&full), "{family:?} panels {cut:?}: ({i}, {j})");
                }
            }
        }
        // the block kernel itself against the definition: H = sum_i w_i A_i (x) z_i z_i^T
        let mut def = Array2::<f64>::zeros((p, p));
        let r = d + 1;
        for i in 0..200 {
            let mut z = x.row(i).to_vec();
            z.push(1.0);
            let eta: Vec<f64> = (0..k).map(|c| (0..r).map(|a| theta[c * r + a] * z[a]).sum()).collect();
            let (mut res, mut a) = (vec![0.0; k], vec![0.0; k * k]);
            family.residual_and_hessian(&eta, y[i], &mut res, Some(&mut a));
            for (c, c2, a1, a2) in itertools_product(k, r) {
                def[[c * r + a1, c2 * r + a2]] += w[i] * a[c * k + c2] * z[a1] * z[a2];
            }
        }
        for i in 0..p {
            for j in 0..=i {
                assert!((def[[i, j]] - full[[i, j]]).abs() < 1e-12 * max_abs(&def), "{family:?} hessian_sum ({i}, {j})");
            }
        }
    }
}

/// (c, c', a, b) over k classes and r parameters per class.
fn itertools_product(k: usize, r: usize) -> impl Iterator<Item = (usize, usize, usize, usize)> {
    (0..k).flat_map(move |c| (0..k).flat_map(move |c2| (0..r).flat_map(move |a| (0..r).map(move |b| (c, c2, a, b)))))
}

/// `evaluate` with the Hessian or its diagonal (one pass over the data) gives the same bits as
/// `value_grad` with `hessian` / `hessian_diag`, for both Hessian schedules.
#[test]
fn fused_passes_equal_the_separate_ones_bitwise() {
    // p = 1000 over 70 row blocks: the Hessian's 33 partial sums (3 blocks each) and the
    // gradient's 64 (2 blocks each) do not nest; p = 2505: tiles
    let cases = [(Family::Multinomial { n_classes: 10 }, 99, 35_840), (Family::Multinomial { n_classes: 5 }, 500, 4500)];
    for (family, d, n) in cases {
        let (x, y, w) = problem(family, n, d, 24);
        let model = Glm::new(family, d);
        let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
        let obj = Objective::new(&model, &data, 0.01).unwrap();
        let theta = Array1::from_shape_fn(model.n_params(), |j| 0.02 * ((j % 7) as f64 - 3.0));
        let c = Cancel::new();
        let (v, g) = obj.value_grad(theta.view(), &c).unwrap();
        let h = obj.hessian(theta.view(), &c).unwrap();
        let e = obj.evaluate(theta.view(), Curvature::Hessian, &c).unwrap();
        let (v2, g2, h2) = (e.value, e.grad, e.hessian.unwrap());
        assert_eq!(v.to_bits(), v2.to_bits(), "{family:?} d={d}");
        assert!(g.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()), "{family:?} d={d}: gradient");
        assert!(same_bits(&h, &h2), "{family:?} d={d}: Hessian");
        let diag = obj.hessian_diag(theta.view(), &c).unwrap().unwrap();
        let e = obj.evaluate(theta.view(), Curvature::Diagonal, &c).unwrap();
        let (v3, g3, d3) = (e.value, e.grad, e.diag);
        assert_eq!(v.to_bits(), v3.to_bits());
        assert!(g.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(diag.iter().zip(&d3.unwrap()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

/// The null-space augmentation through N's nonzeros gives the solution the dense s N N^T gave
/// (bitwise up to p = 4096, where H is kept); above, H is factored in place, row- or
/// column-major, and residuals come from the factor.
#[test]
fn direct_null_space_solve_is_unchanged() {
    use upweight::linalg::Cholesky;
    use upweight::solvers::Direct;
    let family = Family::Multinomial { n_classes: 4 };
    let (x, y, w) = problem(family, 500, 6, 25);
    let model = Glm::new(family, 6);
    let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
    let g = Array2::from_shape_fn((28, 3), |(i, j)| ((i * 5 + j) % 9) as f64 - 4.0);
    for l2 in [0.0, 0.1] {
        let obj = Objective::new(&model, &data, l2).unwrap();
        let theta = Array1::from_shape_fn(28, |j| 0.05 * (j as f64 - 14.0));
        let h = obj.hessian(theta.view(), &Cancel::new()).unwrap();
        let nb = model.null_space(l2).unwrap();
        let mut old = h.clone();
        add_null_term(&mut old, &nb, h.diag());
        let mut expected = g.clone();
        Cholesky::factor(old.view()).unwrap().solve_in_place(expected.view_mut());
        let direct = Direct::new(h, Some(nb.view())).unwrap();
        assert!(same_bits(&direct.solve(g.view()), &expected), "l2 = {l2}");
    }
    // large p: a diagonally dominant H with the multinomial null space of k = 5, d = 819 (p = 4100)
    let model = Glm::new(Family::Multinomial { n_classes: 5 }, 819);
    let p = model.n_params();
    let nb = model.null_space(0.1).unwrap();
    let mut state = 7u64;
    let mut rnd = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64) - 0.5
    };
    let mut h = Array2::from_shape_fn((p, p), |_| rnd());
    h = &h + &h.t();
    h.diag_mut().mapv_inplace(|v| v + p as f64);
    let mut old = h.clone();
    add_null_term(&mut old, &nb, h.diag());
    let g = Array2::from_shape_fn((p, 2), |(i, j)| ((i * 3 + j) % 5) as f64 - 2.0);
    let mut expected = g.clone();
    Cholesky::factor(old.view()).unwrap().solve_in_place(expected.view_mut());
    let mut column_major = Array2::zeros((p, p).f());
    column_major.assign(&h);
    for hh in [h, column_major] {
        let direct = Direct::new(hh, Some(nb.view())).unwrap();
        let x = direct.solve(g.view());
        let err = max_abs(&(&x - &expected)) / max_abs(&expected);
        assert!(err < 1e-13, "in place: {err:e}");
        let info = direct.residuals(g.view(), x.view());
        assert!(info.residuals.iter().all(|&r| r < 1e-13), "{:?}", info.residuals);
    }
}

/// Found by `cargo fuzz` (fuzz/fuzz_targets/pipeline.rs): a weight of 1e308 makes the weighted
/// gradient sum overflow at some trial points. Newton's line search used to accept such a point
/// (its objective was finite) and return Ok with grad_norm = inf; every Ok fit is now finite.
/// Such weights are now refused up front (naming sample_weight: only their ratios matter), and
/// the largest accepted ones still give a finite fit or an error.
#[test]
fn a_fit_whose_gradient_overflows_is_an_error_or_finite() {
    let x = array![[5e-324, 8.8359375], [9.86328125, 9.86328125], [9.86328125, 9.86328125], [9.86328125, -10.72265625]];
    let y = array![0.0, 0.0, 0.0, 0.0];
    let w = array![9.86328125, 0.75, 1e308, 0.0];
    let refused = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN);
    assert!(matches!(&refused, Err(upweight::Error::Weights { msg }) if msg.contains("too large to sum")), "{:?}", refused.err());
    let w = array![9.86328125, 0.75, 1e300, 0.0];
    let model = Glm::new(Family::Logistic, 2);
    let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
    let obj = Objective::new(&model, &data, 0.1).unwrap();
    let theta0 = array![8.26171875, -10.32421875, 3.40625];
    for method in [Method::Cg, Method::Direct] {
        let opts = FitOptions { tol: 1e-9, max_iter: 20, method, ..Default::default() };
        match newton(&obj, Some(theta0.view()), &opts, &Cancel::new()) {
            Ok(res) => assert!(
                res.grad_norm.is_finite() && res.objective.is_finite() && res.theta.iter().all(|t| t.is_finite()),
                "{method:?}: Ok with a non-finite result: {res:?}"
            ),
            // (overflow, or CG breaking down on the saturated curvature: either is reported)
            Err(e) => assert!(matches!(e, upweight::Error::Value { .. } | upweight::Error::Singular { .. }), "{method:?}: {e}"),
        }
    }
}

/// Multinomial CG is preconditioned by the k x k class blocks of each feature: same solution as
/// the direct solve, in fewer iterations than plain Jacobi on a problem whose classes couple.
#[test]
fn block_jacobi_preconditioner_solves_multinomial_systems_in_fewer_iterations() {
    use upweight::solvers::{block_jacobi, cg, jacobi, CgOptions, NullSpace};
    let family = Family::Multinomial { n_classes: 5 };
    let (x, _, w) = problem(family, 400, 6, 11);
    // labels that depend on the features, so the classes' curvatures differ and couple
    let y = Array1::from_shape_fn(400, |i| {
        let s = x[[i, 0]] + 0.5 * x[[i, 1]];
        ((s + 2.5).clamp(0.0, 4.99)) as usize as f64
    });
    let model = Glm::new(family, 6);
    let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
    let theta = fit(&model, data, 1e-3);
    let obj = Objective::new(&model, &data, 1e-3).unwrap();
    let c = Cancel::new();
    let null = model.null_space(1e-3);
    let diag = obj.hessian_diag(theta.view(), &c).unwrap();
    let null = null.map(|basis| NullSpace::scaled_by(basis, diag.as_ref().unwrap().view()));
    let null = null.as_ref();
    let (groups, blocks) = obj.hessian_blocks(theta.view(), &c).unwrap().expect("multinomial has groups");
    // the blocks are the Hessian's own entries
    let h = obj.hessian(theta.view(), &c).unwrap();
    for (g, blk) in groups.rows().into_iter().zip(blocks.outer_iter()) {
        for a in 0..g.len() {
            for b in 0..g.len() {
                assert!((blk[[a, b]] - h[[g[a], g[b]]]).abs() <= 1e-13 * h[[g[a], g[a]]].abs().max(1.0));
            }
        }
    }
    // (not constant over the classes of a feature: such vectors are in the softmax's flat
    // directions, where H is diagonal and any block preconditioner is exact)
    let mut rng = Lcg(5);
    let b = Array2::from_shape_fn((model.n_params(), 3), |_| rng.normal());
    let opts = CgOptions { rtol: 1e-12, ..Default::default() };
    let apply = |v: ndarray::ArrayView2<f64>| {
        let mut hv = obj.hvp(theta.view(), v, &c)?;
        if let Some(null) = null {
            null.add_product(&mut hv, v);
        }
        Ok(hv)
    };
    let (xj, ij) = cg(apply, jacobi(diag, 0.0, null).as_ref(), None, b.view(), &opts, &c).unwrap();
    let (xb, ib) = cg(apply, Some(&block_jacobi(groups, blocks, 0.0, null)), None, b.view(), &opts, &c).unwrap();
    let diff = (&xj - &xb).mapv(f64::abs).fold(0.0_f64, |a, &v| a.max(v)) / xj.mapv(f64::abs).fold(0.0_f64, |a, &v| a.max(v));
    assert!(diff < 1e-8, "solutions differ by {diff:e}");
    let (sj, sb): (usize, usize) = (ij.iterations.iter().sum(), ib.iterations.iter().sum());
    assert!(sb < sj, "block Jacobi {:?} vs Jacobi {:?} iterations", ib.iterations, ij.iterations);
}

/// The per-chunk kernels a distributed run maps over chunks of the training set: partial sums
/// added in chunk order and finished once give the objective, gradient, Hessian and HVPs of the
/// whole set (the same bits for one chunk, rounding-level differences for several); per-chunk
/// top-k merged with `TopK::merge` equals top-k over the whole set.
#[test]
fn per_chunk_kernels_combine_to_the_whole() {
    use upweight::influence::Scorer;
    use upweight::objective::partial::finish_hvp;
    for family in FAMILIES {
        let (x, y, w) = problem(family, 2300, 4, 31);
        let model = Glm::new(family, 4);
        let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
        let (l2, c) = (0.05, Cancel::new());
        let theta = fit(&model, data, l2);
        let obj = Objective::new(&model, &data, l2).unwrap();
        let e = obj.evaluate(theta.view(), Curvature::Hessian, &c).unwrap();
        let (value, grad, h) = (e.value, e.grad, e.hessian.unwrap());
        let mask = model.penalty_mask();
        // one chunk: the same bits
        let whole = obj.partial(theta.view(), true, &c).unwrap();
        let (v1, g1, h1) = whole.finish(&mask, l2, theta.view());
        assert_eq!(v1.to_bits(), value.to_bits(), "{family:?}");
        assert!(g1.iter().zip(&grad).all(|(a, b)| a.to_bits() == b.to_bits()), "{family:?}");
        assert!(same_bits(&h1.unwrap(), &h), "{family:?}");
        // chunks at arbitrary boundaries, added in order
        let bounds = [0, 700, 1024, 1900, 2300];
        let chunk = |i: usize| data.rows(bounds[i], bounds[i + 1]);
        let mut sum = Objective::new(&model, &chunk(0), l2).unwrap().partial(theta.view(), true, &c).unwrap();
        let v = Array2::from_shape_fn((model.n_params(), 2), |(i, j)| ((i + 3 * j) % 5) as f64 - 2.0);
        let mut hv = Objective::new(&model, &chunk(0), l2).unwrap().partial_hvp(theta.view(), v.view(), &c).unwrap();
        for i in 1..4 {
            let rows = chunk(i);
            let o = Objective::new(&model, &rows, l2).unwrap();
            sum.add(&o.partial(theta.view(), true, &c).unwrap());
            hv += &o.partial_hvp(theta.view(), v.view(), &c).unwrap();
        }
        let (v2, g2, h2) = sum.finish(&mask, l2, theta.view());
        assert!((v2 - value).abs() <= 1e-14 * value.abs(), "{family:?}: {v2} vs {value}");
        assert!(max_abs(&(g2 - &grad).insert_axis(Axis(1))) <= 1e-13 * max_abs(&h), "{family:?} gradient");
        assert!(max_abs(&(&h2.unwrap() - &h)) <= 1e-14 * max_abs(&h), "{family:?} Hessian");
        let hv = finish_hvp(&mask, l2, sum.weight, hv, v.view());
        assert!(max_abs(&(&hv - &h.dot(&v))) <= 1e-13 * max_abs(&hv), "{family:?} HVP");
        // top-k per chunk, merged, equals top-k over the whole set
        let inf = influence(model, &data, &theta, l2, SolverOptions::default());
        let test = table(&data.rows(0, 30));
        let g = inf.loss_grads(&test).unwrap();
        let (vc, _) = inf.solve_queries(g.view(), &c).unwrap();
        let (whole_top, _) = inf.top_k(g.view(), 6, Points::Train, &c).unwrap();
        let scorer = Scorer { model: &model, theta: theta.view(), total_weight: inf.total_weight() };
        let mut merged: Option<upweight::TopK> = None;
        for i in 0..4 {
            let mut top = scorer.top_k(&chunk(i), &vc, 6, &c).unwrap();
            top.helpful_idx.mapv_inplace(|j| j + bounds[i]);
            top.harmful_idx.mapv_inplace(|j| j + bounds[i]);
            merged = Some(match merged {
                None => top,
                Some(m) => m.merge(&top, 6).unwrap(),
            });
        }
        assert_eq!(merged.unwrap(), whole_top, "{family:?}");
        // and the score block of a chunk is that chunk's columns of the full score matrix
        let full = inf.on(g.view(), Points::Train, &c).unwrap().0.into_f64();
        let block = scorer.scores(&chunk(2), &vc, &c).unwrap().into_f64();
        assert!(same_bits(&block, &full.slice(ndarray::s![.., 1024..1900]).to_owned()), "{family:?} score block");
    }
}

/// h += N S N^T densely, column by column, with S as the solvers choose it (the reference for
/// the direct solver's sparse update).
fn add_null_term(h: &mut Array2<f64>, nb: &Array2<f64>, diag: ndarray::ArrayView1<f64>) {
    let null = upweight::solvers::NullSpace::scaled_by(nb.clone(), diag);
    for (c, &s) in nb.columns().into_iter().zip(&null.scales) {
        let outer = Array2::from_shape_fn(h.raw_dim(), |(i, j)| s * (c[i] * c[j]));
        *h += &outer;
    }
}

/// Newton reads the data once per step: an accepted full step's value, gradient and curvature
/// come from one pass (with direct steps, the Hessian; with Newton-CG, its diagonal, plus the
/// CG iterations' own passes), so a fit from zero takes n_iter + 1 passes (it took 2 n_iter + 1).
#[test]
fn newton_reads_the_data_once_per_step() {
    for family in FAMILIES {
        let (x, y, w) = problem(family, 3000, 6, 31);
        let model = Glm::new(family, 6);
        let data = Batch::new(x.view(), y.view(), Some(w.view()), Names::TRAIN).unwrap();
        let obj = Objective::new(&model, &data, 1e-3).unwrap();
        let cancel = Cancel::new();
        let res = newton(&obj, None, &FitOptions { tol: 1e-10, max_iter: 100, ..Default::default() }, &cancel).unwrap();
        // (squared loss: one step lands on the optimum)
        assert!(res.converged && (res.n_iter >= 3 || family == Family::Squared), "{family:?}: {} steps", res.n_iter);
        // (every step here is a full one; a backtracking step would add a value-only pass)
        let passes = cancel.progress().pass;
        assert_eq!(passes, res.n_iter + 1, "{family:?}: {passes} passes for {} Newton steps", res.n_iter);
    }
}

/// Lanczos (the Arnoldi solver's eigenpairs) on an explicit symmetric matrix with a 3-dimensional
/// Krylov space: it breaks down, restarts, and its r = p pairs are the matrix's eigenpairs; a
/// smaller rank returns the top ones, and the rank-r projection is U diag(1 / sigma) U^T.
#[test]
fn lanczos_restarts_on_breakdown_and_finds_the_top_eigenpairs() {
    use upweight::solvers::arnoldi::{lanczos, LowRankInverse};
    let p = 9;
    // an orthogonal Q from Gram-Schmidt on seeded columns; eigenvalues 1, 1, 1, 2, 2, 2, 5, 5, 5
    let mut rng = Lcg(11);
    let mut q = Array2::<f64>::zeros((p, p));
    for j in 0..p {
        let mut v = Array1::from_shape_fn(p, |_| rng.normal());
        for i in 0..j {
            let c = q.column(i).dot(&v);
            v.scaled_add(-c, &q.column(i));
        }
        let nv = v.dot(&v).sqrt();
        q.column_mut(j).assign(&(v / nv));
    }
    let eig = Array1::from_iter([1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 5.0, 5.0, 5.0]);
    let a = (&q * &eig).dot(&q.t());
    let apply = |v: ndarray::ArrayView2<f64>| Ok(a.dot(&v));
    let full = lanczos(apply, p, p, p, None, &Cancel::new()).unwrap();
    assert!(full.restarts >= 2, "three distinct eigenvalues: breakdowns after 3 and 6 steps");
    let mut got = full.values.to_vec();
    got.reverse();
    for (g, w) in got.iter().zip(&eig) {
        assert!((g - w).abs() < 1e-12, "{got:?}");
    }
    let b = Array2::from_shape_fn((p, 2), |_| rng.normal());
    let x = full.solve(b.view(), 0.0, LowRankInverse::Projection, p);
    let back = a.dot(&x);
    assert!((&back - &b).iter().all(|d| d.abs() < 1e-12));
    let top = lanczos(apply, p, 2, 6, None, &Cancel::new()).unwrap();
    assert!(top.values.iter().all(|s| (s - 5.0).abs() < 1e-12) && top.residuals.iter().all(|r| r.abs() < 1e-10));
    assert!(lanczos(apply, p, p + 1, p, None, &Cancel::new()).is_err());
}

/// The score kernel skips its scan for overflow only where a bound on its inputs proves every
/// score finite: scores that overflow are still refused (float64 and float32 rows), and scores
/// beyond the bound that cancel to finite values are kept.
#[test]
fn scores_that_overflow_are_refused_and_large_finite_ones_kept() {
    use upweight::influence::Scorer;
    let (mut x, y, _) = problem(Family::Squared, 600, 4, 7);
    x *= 10.0;
    let col0 = x.column(0).to_owned();
    x.column_mut(1).assign(&col0); // two equal columns: v = (h, -h, ...) cancels exactly
    let model = Glm::new(Family::Squared, 4);
    let theta = Array1::zeros(5);
    let c = Cancel::new();
    let scorer = Scorer { model: &model, theta: theta.view(), total_weight: 1.0 };
    for (f32_rows, largest) in [(false, f64::MAX), (true, f32::MAX as f64)] {
        let features = if f32_rows { upweight::Features::dense_f32(x.mapv(|v| v as f32)) } else { upweight::Features::dense(x.clone()) };
        let t = Table::new(features, y.clone(), None, Names::TRAIN).unwrap();
        let err = scorer.scores(&t, &Array2::from_elem((6, 3), largest / 10.0), &c).unwrap_err();
        assert!(err.to_string().contains("overflowed"), "f32 {f32_rows}: {err}");
        // h a power of two with max |g_ij| h <= largest / 2: every term is exact and finite, the
        // two cancel exactly (with or without FMA), yet the bound (>= largest / 2) fails
        let mut g = Array2::zeros((600, 5));
        model.grads(theta.view(), &Batch::new(x.view(), y.view(), None, Names::TRAIN).unwrap(), g.view_mut());
        let g_abs = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let h = 2f64.powi((largest / (2.0 * g_abs)).log2().floor() as i32);
        let g_max = g.rows().into_iter().map(|r| r.dot(&r).sqrt()).fold(0.0, f64::max);
        assert!(g_max * h * 2f64.sqrt() > largest / 4.0, "{g_max} {h}");
        let mut vc = Array2::zeros((6, 3));
        vc.row_mut(0).fill(h);
        vc.row_mut(1).fill(-h);
        let s = scorer.scores(&t, &vc, &c).unwrap().into_f64();
        assert!(s.iter().all(|&v| v == 0.0), "f32 {f32_rows}: {s:?}");
    }
}
