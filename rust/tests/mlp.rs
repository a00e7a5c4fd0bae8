//! The MLP family through the model contract only: derivatives against central differences
//! (DESIGN-networks.md section 8), Gauss-Newton symmetric PSD, the explicit matrices against
//! their products, contracted scores against per-example gradients, sparse against dense rows,
//! and, with no hidden layer, the GLM's numbers exactly. Every check also runs on a squared head
//! with two outputs (multi-output regression: y has one column per output).

use ndarray::{Array1, Array2};
use upweight::models::mlp::Curvature;
use upweight::{Activation, Batch, Cancel, Family, Glm, Mlp, Model, Names, Objective, Prediction};

mod common;
use common::Lcg;

struct Problem {
    x: Array2<f64>,
    /// n x t targets
    y: Array2<f64>,
    w: Array1<f64>,
}

impl Problem {
    fn new(head: Family, n: usize, d: usize, seed: u64) -> Self {
        Self::with_targets(head, 1, n, d, seed)
    }
    /// Rows for `net`: as many target columns as it takes.
    fn of(net: &Mlp, n: usize, d: usize, seed: u64) -> Self {
        Self::with_targets(net.head, net.n_targets(), n, d, seed)
    }
    fn with_targets(head: Family, t: usize, n: usize, d: usize, seed: u64) -> Self {
        let mut rng = Lcg(seed);
        let x = Array2::from_shape_fn((n, d), |_| rng.normal());
        let k = head.n_outputs();
        let y = Array2::from_shape_fn((n, t), |_| match head {
            Family::Squared => rng.normal(),
            Family::Logistic => (rng.next() < 0.5) as u8 as f64,
            Family::Poisson => (3.0 * rng.next()).floor(),
            Family::Multinomial { .. } => ((rng.next() * k as f64) as usize % k) as f64,
        });
        let mut w = Array1::from_shape_fn(n, |_| 0.5 + rng.next());
        w[1] = 0.0;
        Self { x, y, w }
    }
    fn batch(&self) -> Batch<'_> {
        Batch::with_targets(self.x.view(), self.y.view(), Some(self.w.view()), Names::TRAIN).unwrap()
    }
}

fn theta(model: &Mlp, seed: u64, scale: f64) -> Array1<f64> {
    let mut rng = Lcg(seed);
    Array1::from_shape_fn(model.n_params(), |_| scale * rng.normal())
}

fn max_abs(a: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn close(a: &Array2<f64>, b: &Array2<f64>, rtol: f64, what: &str) {
    assert_eq!(a.dim(), b.dim(), "{what}: shapes");
    let scale = max_abs(b.iter().cloned()).max(1e-300);
    let err = max_abs(a.iter().zip(b).map(|(x, y)| x - y));
    assert!(err <= rtol * scale, "{what}: max error {err:e} against scale {scale:e}");
}

fn nets() -> Vec<Mlp> {
    let mut out = Vec::new();
    for (act, hidden) in [(Activation::Tanh, vec![4]), (Activation::Gelu, vec![3, 2]), (Activation::Relu, vec![5])] {
        // (Squared, 2): a multi-output regression, one target column per output
        for (head, k) in [(Family::Multinomial { n_classes: 3 }, 3), (Family::Squared, 1), (Family::Logistic, 1), (Family::Squared, 2)] {
            let mut sizes = vec![3];
            sizes.extend(&hidden);
            sizes.push(k);
            out.push(Mlp::new(sizes, act, head, Curvature::Hessian).unwrap());
        }
    }
    out
}

/// Per-example gradients against central differences of the losses; their weighted sum is
/// the objective's gradient (l2 = 0).
#[test]
fn gradients_match_central_differences() {
    for (s, net) in nets().into_iter().enumerate() {
        let pr = Problem::of(&net, 7, 3, 10 + s as u64);
        let b = pr.batch();
        let t = theta(&net, 20 + s as u64, 0.7);
        let p = net.n_params();
        let mut g = Array2::zeros((b.n(), p));
        net.grads(t.view(), &b, g.view_mut());
        let mut fd = Array2::zeros((b.n(), p));
        let h = 1e-6;
        for j in 0..p {
            let (mut tp, mut tm) = (t.clone(), t.clone());
            tp[j] += h;
            tm[j] -= h;
            let (mut lp, mut lm) = (Array1::zeros(b.n()), Array1::zeros(b.n()));
            net.losses(tp.view(), &b, lp.view_mut());
            net.losses(tm.view(), &b, lm.view_mut());
            fd.column_mut(j).assign(&((&lp - &lm) / (2.0 * h)));
        }
        close(&g, &fd, 1e-6, &format!("grads of {net:?}"));
        let (_, sum) = net.loss_grad_sum(t.view(), &b);
        let wg = pr.w.dot(&g);
        close(&sum.insert_axis(ndarray::Axis(0)), &wg.insert_axis(ndarray::Axis(0)), 1e-12, "weighted sum of gradients");
    }
}

/// R-operator Hessian-vector products against central differences of the gradient; the
/// explicit Hessian against the products; the Gauss-Newton matrix symmetric PSD and equal to
/// its products; the Jacobi diagonal equal to G's.
#[test]
fn curvature_matches_definitions() {
    let cancel = Cancel::new();
    for (s, net) in nets().into_iter().enumerate() {
        if net.activation == Activation::Relu {
            continue; // relu'' is a distribution: the Hessian of a relu net is G plus kinks
        }
        let pr = Problem::of(&net, 9, 3, 30 + s as u64);
        let b = pr.batch();
        let t = theta(&net, 40 + s as u64, 0.7);
        let p = net.n_params();
        let l2 = 0.05;
        let obj = Objective::new(&net, &b, l2).unwrap();
        let h = obj.hessian(t.view(), &cancel).unwrap();
        let mut fd = Array2::zeros((p, p));
        let e = 1e-5;
        for j in 0..p {
            let (mut tp, mut tm) = (t.clone(), t.clone());
            tp[j] += e;
            tm[j] -= e;
            let gp = obj.value_grad(tp.view(), &cancel).unwrap().1;
            let gm = obj.value_grad(tm.view(), &cancel).unwrap().1;
            fd.column_mut(j).assign(&((&gp - &gm) / (2.0 * e)));
        }
        close(&h, &fd, 1e-6, &format!("Hessian of {net:?}"));
        let v = Array2::from_shape_fn((p, 3), |(i, j)| ((i * 7 + j * 3) % 5) as f64 - 2.0);
        close(&obj.hvp(t.view(), v.view(), &cancel).unwrap(), &h.dot(&v), 1e-12, "Hv");

        let gn = net.with_curvature(Curvature::GaussNewton);
        let obj = Objective::new(&gn, &b, l2).unwrap();
        let g = obj.hessian(t.view(), &cancel).unwrap();
        close(&g, &g.t().to_owned(), 1e-14, "G symmetric");
        close(&obj.hvp(t.view(), v.view(), &cancel).unwrap(), &g.dot(&v), 1e-12, "Gv");
        let diag = obj.hessian_diag(t.view(), &cancel).unwrap().expect("the MLP has a diagonal");
        close(&diag.insert_axis(ndarray::Axis(0)), &g.diag().to_owned().insert_axis(ndarray::Axis(0)), 1e-12, "diag G");
        // PSD: v^T G v >= 0 for many directions (and G + tiny I has a Cholesky factor)
        for seed in 0..20 {
            let mut rng = Lcg(seed);
            let u = Array1::from_shape_fn(p, |_| rng.normal());
            assert!(u.dot(&g.dot(&u)) >= -1e-12 * u.dot(&u) * g.diag().sum(), "G is not PSD");
        }
    }
}

/// With no hidden layer the network is the GLM: same losses, gradients, Hessian (G = H),
/// products, predictions, prediction gradients and flat directions.
#[test]
fn no_hidden_layer_is_the_glm() {
    let cancel = Cancel::new();
    for head in [Family::Multinomial { n_classes: 4 }, Family::Squared, Family::Logistic, Family::Poisson] {
        let d = 5;
        let pr = Problem::new(head, 23, d, 7);
        let b = pr.batch();
        let glm = Glm::new(head, d);
        for curvature in [Curvature::GaussNewton, Curvature::Hessian] {
            let net = Mlp::new(vec![d, head.n_outputs()], Activation::Tanh, head, curvature).unwrap();
            assert_eq!(net.n_params(), glm.n_params());
            let t = theta(&net, 3, 0.4);
            let p = net.n_params();
            let (mut a, mut c) = (Array1::zeros(b.n()), Array1::zeros(b.n()));
            net.losses(t.view(), &b, a.view_mut());
            glm.losses(t.view(), &b, c.view_mut());
            close(&a.insert_axis(ndarray::Axis(0)), &c.insert_axis(ndarray::Axis(0)), 1e-14, "losses");
            let (mut a, mut c) = (Array2::zeros((b.n(), p)), Array2::zeros((b.n(), p)));
            net.grads(t.view(), &b, a.view_mut());
            glm.grads(t.view(), &b, c.view_mut());
            close(&a, &c, 1e-14, "grads");
            for l2 in [0.0, 0.1] {
                let (on, og) = (Objective::new(&net, &b, l2).unwrap(), Objective::new(&glm, &b, l2).unwrap());
                close(&on.hessian(t.view(), &cancel).unwrap(), &og.hessian(t.view(), &cancel).unwrap(), 1e-13, "Hessian");
                let v = Array2::from_shape_fn((p, 2), |(i, j)| (i as f64 - j as f64).sin());
                close(&on.hvp(t.view(), v.view(), &cancel).unwrap(), &og.hvp(t.view(), v.view(), &cancel).unwrap(), 1e-13, "Hv");
                assert_eq!(net.null_space(l2), glm.null_space(l2));
            }
            assert_eq!(net.penalty_mask(), glm.penalty_mask());
            for kind in [Prediction::Linear, Prediction::Mean] {
                close(&net.predict(t.view(), b.x, kind).unwrap(), &glm.predict(t.view(), b.x, kind).unwrap(), 1e-14, "predict");
                close(&net.prediction_grads(t.view(), b.x, kind).unwrap(), &glm.prediction_grads(t.view(), b.x, kind).unwrap(), 1e-14, "prediction grads");
            }
            close(&net.output_hessians(t.view(), &b).unwrap(), &glm.output_hessians(t.view(), &b).unwrap(), 1e-14, "output Hessians");
        }
    }
}

/// The contracted score kernel equals scale (G v + 1 c^T) with G the per-example gradients.
#[test]
fn contracted_scores_equal_gradient_products() {
    for (s, net) in nets().into_iter().enumerate() {
        let pr = Problem::of(&net, 11, 3, 50 + s as u64);
        let b = pr.batch();
        let t = theta(&net, 60 + s as u64, 0.8);
        let p = net.n_params();
        let q = 4;
        let vc = Array2::from_shape_fn((p + 1, q), |(i, j)| ((i * 13 + j * 5) % 7) as f64 / 7.0 - 0.4);
        let mut g = Array2::zeros((b.n(), p));
        net.grads(t.view(), &b, g.view_mut());
        let expected = (g.dot(&vc.slice(ndarray::s![..p, ..])) + vc.row(p)) * -0.3;
        let mut out = Array2::zeros((b.n(), q));
        net.scores(t.view(), &b, vc.view(), None, -0.3, out.view_mut());
        close(&out, &expected, 1e-13, "scores");
    }
}

/// Prediction gradients against central differences of the predictions.
#[test]
fn prediction_gradients_match_central_differences() {
    for (s, net) in nets().into_iter().enumerate() {
        let pr = Problem::of(&net, 5, 3, 70 + s as u64);
        let t = theta(&net, 80 + s as u64, 0.6);
        let k = net.n_outputs();
        for kind in [Prediction::Linear, Prediction::Mean] {
            let jac = net.prediction_grads(t.view(), pr.x.view().into(), kind).unwrap();
            let mut fd = Array2::zeros(jac.dim());
            let e = 1e-6;
            for j in 0..net.n_params() {
                let (mut tp, mut tm) = (t.clone(), t.clone());
                tp[j] += e;
                tm[j] -= e;
                let d = (net.predict(tp.view(), pr.x.view().into(), kind).unwrap() - net.predict(tm.view(), pr.x.view().into(), kind).unwrap()) / (2.0 * e);
                for (i, v) in d.iter().enumerate() {
                    fd[[(i / k) * k + i % k, j]] = *v;
                }
            }
            close(&jac, &fd, 1e-6, "prediction gradients");
        }
    }
}

/// Products with many directions at once (the kernel runs them side by side, in chunks of
/// columns on a wide net) equal the products one direction at a time, for both curvatures, over
/// more than one block of rows, and the same bits with 1 and 3 threads.
#[test]
fn products_with_many_directions_equal_one_at_a_time() {
    let cancel = Cancel::new();
    // a wide hidden layer: 2 directions per chunk of the kernel, so 5 take three chunks
    let (d, r) = (20, 5);
    let pr = Problem::new(Family::Multinomial { n_classes: 3 }, 530, d, 5);
    let b = pr.batch();
    for (act, curvature) in [(Activation::Tanh, Curvature::GaussNewton), (Activation::Gelu, Curvature::Hessian), (Activation::Logistic, Curvature::Hessian)] {
        let net = Mlp::new(vec![d, 1300, 3], act, Family::Multinomial { n_classes: 3 }, curvature).unwrap();
        let t = theta(&net, 8, 0.2);
        let mut rng = Lcg(9);
        let v = Array2::from_shape_fn((net.n_params(), r), |_| rng.normal());
        let obj = Objective::new(&net, &b, 1e-3).unwrap();
        let all = obj.hvp(t.view(), v.view(), &cancel).unwrap();
        let mut one = Array2::zeros(all.dim());
        for c in 0..r {
            let vc = v.slice(ndarray::s![.., c..c + 1]);
            one.slice_mut(ndarray::s![.., c..c + 1]).assign(&obj.hvp(t.view(), vc, &cancel).unwrap());
        }
        close(&all, &one, 1e-13, &format!("{act:?} {curvature:?}"));
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let again = pool.install(|| obj.hvp(t.view(), v.view(), &cancel).unwrap());
            assert!(all.iter().zip(&again).all(|(a, b)| a.to_bits() == b.to_bits()), "{act:?} {curvature:?}: {threads} threads");
        }
    }
}

fn table(pr: &Problem) -> upweight::Table {
    upweight::Table::with_targets(upweight::Features::dense(pr.x.clone()), pr.y.clone(), Some(pr.w.clone()), Names::TRAIN).unwrap()
}

/// The PBRF's central difference at eps = 0 is the influence with the damped Gauss-Newton
/// curvature, at parameters that are not a minimiser (DESIGN-networks.md section 3).
#[test]
fn pbrf_derivative_is_the_gauss_newton_influence() {
    use std::sync::Arc;
    use upweight::influence::InfluenceOptions;
    use upweight::models::mlp::pbrf::pbrf_responses;
    use upweight::{Influence, Points, SolverOptions};
    let cancel = Cancel::new();
    for (s, net) in nets().into_iter().enumerate().filter(|(_, n)| n.activation != Activation::Relu) {
        let gn = net.with_curvature(Curvature::GaussNewton);
        let pr = Problem::of(&net, 12, 3, 90 + s as u64);
        let t = theta(&net, 100 + s as u64, 0.5);
        let (l2, damping, m) = (0.03, 0.2, 4);
        let data = table(&pr);
        let h = 1e-4;
        let (d, conv) = pbrf_responses(&gn, &data, t.view(), l2, damping, true, &[m], &[h, -h], 1e-12, 50, &cancel).unwrap();
        assert!(conv.iter().all(|&c| c));
        let fd = (&d.row(0) - &d.row(1)) / (2.0 * h);
        let solver = SolverOptions { damping, ..Default::default() };
        let inf = Influence::new(Arc::new(gn.clone()), table(&pr), t.clone(), l2, InfluenceOptions { solver, renormalize: true }, None, &cancel).unwrap();
        let (i_m, _) = inf.params(Points::Rows(&[m]), &cancel).unwrap();
        close(&fd.insert_axis(ndarray::Axis(0)), &i_m, 1e-6, &format!("PBRF derivative of {net:?}"));
    }
}

/// A GLM (no hidden layer) at its optimum with lam = 0: the PBRF at eps = -w_m is the exact
/// leave-one-out refit.
#[test]
fn pbrf_of_a_glm_is_the_refit() {
    use upweight::models::mlp::pbrf::pbrf_responses;
    use upweight::{newton, FitOptions};
    let cancel = Cancel::new();
    for head in [Family::Multinomial { n_classes: 3 }, Family::Logistic, Family::Squared] {
        let d = 3;
        let pr = Problem::new(head, 30, d, 5);
        let net = Mlp::new(vec![d, head.n_outputs()], Activation::Tanh, head, Curvature::GaussNewton).unwrap();
        let l2 = 0.01;
        let b = pr.batch();
        let fit = |w: &Array1<f64>| {
            let b = Batch::with_targets(pr.x.view(), pr.y.view(), Some(w.view()), Names::TRAIN).unwrap();
            newton(&Objective::new(&net, &b, l2).unwrap(), None, &FitOptions { tol: 1e-13, ..Default::default() }, &cancel).unwrap().theta
        };
        let _ = b;
        let t = fit(&pr.w);
        let m = 6;
        let mut w = pr.w.clone();
        w[m] = 0.0;
        let refit = fit(&w);
        let (delta, conv) = pbrf_responses(&net, &table(&pr), t.view(), l2, 0.0, true, &[m], &[-pr.w[m]], 1e-13, 100, &cancel).unwrap();
        assert!(conv[0]);
        let got = &delta.row(0) + &t;
        close(&got.insert_axis(ndarray::Axis(0)), &refit.insert_axis(ndarray::Axis(0)), 1e-9, &format!("PBRF(-w_m) of {head:?}"));
    }
}

/// A squared head with t outputs and no hidden layer is t independent squared GLMs, one per
/// target column: theta's rows are theirs, the losses add up, the gradient's and the Hessian's
/// blocks are theirs (the Hessian is block diagonal), so is every influence.
#[test]
fn multi_output_without_hidden_layer_is_one_squared_glm_per_target() {
    use std::sync::Arc;
    use upweight::influence::InfluenceOptions;
    use upweight::{Influence, Points};
    let cancel = Cancel::new();
    let (d, t, l2) = (4, 3, 0.05);
    let pr = Problem::with_targets(Family::Squared, t, 17, d, 11);
    let b = pr.batch();
    let net = Mlp::new(vec![d, t], Activation::Tanh, Family::Squared, Curvature::Hessian).unwrap();
    let glm = Glm::new(Family::Squared, d);
    let theta = theta(&net, 12, 0.5);
    let r = d + 1;
    let (p, n) = (net.n_params(), b.n());
    assert_eq!(p, t * r);
    let on = Objective::new(&net, &b, l2).unwrap();
    let h = on.hessian(theta.view(), &cancel).unwrap();
    let (mut losses, mut grads) = (Array1::zeros(n), Array2::zeros((n, p)));
    net.losses(theta.view(), &b, losses.view_mut());
    net.grads(theta.view(), &b, grads.view_mut());
    let inf = |model: Arc<dyn Model>, y: Array2<f64>, th: Array1<f64>| {
        let table = upweight::Table::with_targets(upweight::Features::dense(pr.x.clone()), y, Some(pr.w.clone()), Names::TRAIN).unwrap();
        let inf = Influence::new(model, table, th, l2, InfluenceOptions::default(), None, &cancel).unwrap();
        inf.params(Points::Train, &cancel).unwrap().0
    };
    let i_net = inf(Arc::new(net.clone()), pr.y.clone(), theta.clone());
    let mut loss_sum = Array1::zeros(n);
    for c in 0..t {
        let yc = pr.y.column(c).to_owned();
        let bc = Batch::new(pr.x.view(), yc.view(), Some(pr.w.view()), Names::TRAIN).unwrap();
        let tc = theta.slice(ndarray::s![c * r..(c + 1) * r]).to_owned();
        let mut lc = Array1::zeros(n);
        glm.losses(tc.view(), &bc, lc.view_mut());
        loss_sum += &lc;
        let mut gc = Array2::zeros((n, r));
        glm.grads(tc.view(), &bc, gc.view_mut());
        close(&grads.slice(ndarray::s![.., c * r..(c + 1) * r]).to_owned(), &gc, 1e-14, "gradient block");
        let hc = Objective::new(&glm, &bc, l2).unwrap().hessian(tc.view(), &cancel).unwrap();
        for c2 in 0..t {
            let block = h.slice(ndarray::s![c * r..(c + 1) * r, c2 * r..(c2 + 1) * r]).to_owned();
            let expected = if c == c2 { hc.clone() } else { Array2::zeros((r, r)) };
            close(&block, &expected, 1e-13, "Hessian block");
        }
        let i_c = inf(Arc::new(glm), yc.insert_axis(ndarray::Axis(1)), tc);
        close(&i_net.slice(ndarray::s![.., c * r..(c + 1) * r]).to_owned(), &i_c, 1e-11, "influence block");
    }
    close(&losses.insert_axis(ndarray::Axis(0)), &loss_sum.insert_axis(ndarray::Axis(0)), 1e-14, "losses add up");
}

/// Targets of the wrong width are refused naming the argument: a multi-output head needs one
/// column per output, every other model one column.
#[test]
fn target_columns_must_match_the_outputs() {
    let pr = Problem::with_targets(Family::Squared, 2, 6, 3, 1);
    let b = pr.batch();
    let two = Mlp::new(vec![3, 4, 2], Activation::Tanh, Family::Squared, Curvature::GaussNewton).unwrap();
    assert!(Objective::new(&two, &b, 0.0).is_ok());
    let three = Mlp::new(vec![3, 4, 3], Activation::Tanh, Family::Squared, Curvature::GaussNewton).unwrap();
    let glm = Glm::new(Family::Squared, 3);
    let soft = Mlp::new(vec![3, 2], Activation::Tanh, Family::Multinomial { n_classes: 2 }, Curvature::GaussNewton).unwrap();
    for (model, what) in [(&three as &dyn Model, "3 outputs"), (&glm, "one target"), (&soft, "one target")] {
        match Objective::new(model, &b, 0.0).map(|_| ()) {
            Err(upweight::Error::Shape { arg: "y", msg }) => assert!(msg.contains("has 2 columns") && msg.contains(what), "{msg}"),
            other => panic!("expected a shape error naming y, got {other:?}"),
        }
    }
    // the other heads keep exactly as many outputs as their family has
    assert!(Mlp::new(vec![3, 2], Activation::Tanh, Family::Logistic, Curvature::GaussNewton).is_err());
}

/// The last layer with the layers below frozen (the prefilter's stage 1) is the network's
/// Theta_L block: per-example gradients, losses, the exact Hessian's block (= G's: the outputs
/// are linear in Theta_L), products and contracted scores.
#[test]
fn last_layer_is_the_networks_block() {
    let cancel = Cancel::new();
    for (s, net) in nets().into_iter().enumerate() {
        let pr = Problem::of(&net, 11, 3, 70 + s as u64);
        let b = pr.batch();
        let t = theta(&net, 80 + s as u64, 0.7);
        let last = net.last_layer(t.view()).unwrap();
        let r = last.range();
        assert_eq!(r.end, net.n_params());
        let tl = t.slice(ndarray::s![r.clone()]);
        let mut g_net = Array2::zeros((11, net.n_params()));
        net.grads(t.view(), &b, g_net.view_mut());
        let mut g_last = Array2::zeros((11, last.n_params()));
        last.grads(tl, &b, g_last.view_mut());
        close(&g_last, &g_net.slice(ndarray::s![.., r.clone()]).to_owned(), 1e-14, "grads");
        let (mut l_net, mut l_last) = (Array1::zeros(11), Array1::zeros(11));
        net.losses(t.view(), &b, l_net.view_mut());
        last.losses(tl, &b, l_last.view_mut());
        close(&l_last.insert_axis(ndarray::Axis(0)), &l_net.insert_axis(ndarray::Axis(0)), 1e-14, "losses");
        let h_net = Objective::new(&net, &b, 0.03).unwrap().hessian(t.view(), &cancel).unwrap();
        let obj = Objective::new(&last, &b, 0.03).unwrap();
        let h_last = obj.hessian(tl, &cancel).unwrap();
        close(&h_last, &h_net.slice(ndarray::s![r.clone(), r.clone()]).to_owned(), 1e-12, "Hessian block");
        let v = Array2::from_shape_fn((last.n_params() + 1, 2), |(i, j)| ((i * 5 + j) % 7) as f64 - 3.0);
        close(&obj.hvp(tl, v.slice(ndarray::s![..-1, ..]), &cancel).unwrap(), &h_last.dot(&v.slice(ndarray::s![..-1, ..])), 1e-12, "Hv");
        let mut sc = Array2::zeros((11, 2));
        last.scores(tl, &b, v.view(), None, 0.5, sc.view_mut());
        let want = (g_last.dot(&v.slice(ndarray::s![..-1, ..])) + v.row(last.n_params())) * 0.5;
        close(&sc, &want, 1e-12, "scores");
    }
    let flat = Mlp::new(vec![3, 2], Activation::Tanh, Family::Squared, Curvature::GaussNewton).unwrap();
    assert!(flat.last_layer(Array1::zeros(8).view()).is_err(), "no hidden layer: refused");
}

/// Query batching: at full rank per layer the factored kernel gives the contracted scores; at
/// rank 1 those of the queries cut to rank 1 (each block u sigma v^T from the SVD), with their
/// relative error reported.
#[test]
fn factored_scores_are_the_truncated_queries() {
    use upweight::models::factored::FactoredQueries;
    for (s, net) in nets().into_iter().enumerate() {
        let pr = Problem::of(&net, 13, 3, 90 + s as u64);
        let b = pr.batch();
        let t = theta(&net, 95 + s as u64, 0.7);
        let p = net.n_params();
        let vc = Array2::from_shape_fn((p + 1, 3), |(i, j)| (((i * 11 + j * 5) % 9) as f64 - 4.0) / 3.0);
        let kernel = net.factored_scores().expect("networks have it");
        let blocks = kernel.query_blocks();
        let mut want = Array2::zeros((13, 3));
        net.scores(t.view(), &b, vc.view(), None, 0.5, want.view_mut());
        let full = blocks.iter().map(|q| q.rows.min(q.cols)).max().unwrap();
        let fq = FactoredQueries::compress(vc.view(), &blocks, full).unwrap();
        let mut got = Array2::zeros((13, 3));
        kernel.factored_scores(t.view(), &b, &fq, 0.5, got.view_mut());
        close(&got, &want, 1e-12, "full rank");
        assert!(fq.errors.iter().all(|&e| e < 1e-12));
        // rank 1: the queries' blocks replaced by their rank-1 parts, scored by the contracted kernel
        let one = FactoredQueries::compress(vc.view(), &blocks, 1).unwrap();
        let mut cut = vc.clone();
        for (blk, l, r) in &one.blocks {
            for j in 0..3 {
                let v1 = l.column(j).insert_axis(ndarray::Axis(1)).dot(&r.column(j).insert_axis(ndarray::Axis(0)));
                cut.slice_mut(ndarray::s![blk.offset..blk.offset + blk.rows * blk.cols, j]).assign(&Array1::from_iter(v1.iter().cloned()));
            }
        }
        let lost = (&vc - &cut).slice(ndarray::s![..p, ..]).mapv(|v| v * v).sum_axis(ndarray::Axis(0));
        let total = vc.slice(ndarray::s![..p, ..]).mapv(|v| v * v).sum_axis(ndarray::Axis(0));
        for j in 0..3 {
            assert!(((lost[j] / total[j]).sqrt() - one.errors[j]).abs() < 1e-10, "reported error");
        }
        let (mut got, mut want) = (Array2::zeros((13, 3)), Array2::zeros((13, 3)));
        net.scores(t.view(), &b, cut.view(), None, 0.5, want.view_mut());
        kernel.factored_scores(t.view(), &b, &one, 0.5, got.view_mut());
        close(&got, &want, 1e-12, "rank 1");
    }
}
