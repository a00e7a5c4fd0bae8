//! The K-FAC preconditioner (DESIGN-networks.md section 4) through the public solver API: the
//! exact identities (one example, any depth: the inverse of G's damped layer blocks; no hidden
//! layer with a squared head: G itself, so CG converges in one iteration), CG with it against
//! the direct solve, and the same bits for any number of threads.

use ndarray::{s, Array1, Array2};
use upweight::models::mlp::Curvature;
use upweight::solvers::{kfac, preconditioner, CgOptions, NullSpace, Precondition, Preconditioner};
use upweight::{Activation, Cancel, Family, Method, Mlp, Model, Objective, Prepared, SolverOptions, Table};

mod common;
use common::Lcg;

/// Rows (x, y, w) for `net`'s head, with x shifted by `shift` (inputs not centred).
fn data(net: &Mlp, n: usize, shift: f64, seed: u64) -> Table {
    let mut rng = Lcg(seed);
    let d = net.n_features();
    let x = Array2::from_shape_fn((n, d), |(_, j)| rng.normal() + shift * (j + 1) as f64);
    let k = net.n_outputs();
    let y = Array1::from_shape_fn(n, |_| match net.head {
        Family::Multinomial { .. } => ((rng.next() * k as f64) as usize % k) as f64,
        _ => rng.normal(),
    });
    let w = Array1::from_shape_fn(n, |_| 0.5 + rng.next());
    Table::dense(x, y, Some(w)).unwrap()
}

fn theta(net: &Mlp, seed: u64) -> Array1<f64> {
    let mut rng = Lcg(seed);
    Array1::from_shape_fn(net.n_params(), |_| 0.7 * rng.normal())
}

fn gn(sizes: Vec<usize>, head: Family) -> Mlp {
    Mlp::new(sizes, Activation::Tanh, head, Curvature::GaussNewton).unwrap()
}

/// The null space as `Prepared::cg` scales it: by the damped Gauss-Newton diagonal.
fn null_space(net: &Mlp, obj: &Objective<Mlp>, t: &Array1<f64>, damping: f64) -> Option<NullSpace> {
    let diag = obj.hessian_diag(t.view(), &Cancel::new()).unwrap().unwrap();
    net.null_space(obj.l2).map(|b| NullSpace::scaled_by(b, (&diag + damping).view()))
}

/// The preconditioner as a matrix: its products with the unit vectors.
fn as_matrix(pc: &Preconditioner, p: usize) -> Array2<f64> {
    let mut m = Array2::zeros((p, p));
    for j in 0..p {
        let mut e = Array1::zeros(p);
        e[j] = 1.0;
        m.column_mut(j).assign(&pc.apply(e.view()));
    }
    m
}

fn max_abs(a: impl IntoIterator<Item = f64>) -> f64 {
    a.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

fn inverse(a: &Array2<f64>) -> Array2<f64> {
    let direct = upweight::solvers::Direct::new(a.clone(), None).unwrap();
    direct.solve(Array2::eye(a.nrows()).view())
}

/// One example, any depth: kron(S_l, A_l) is layer l's block of G, so with the damping, the
/// penalty (bias columns unpenalised) and the softmax's null-space term, K-FAC is the exact
/// inverse of the operator's layer blocks.
#[test]
fn one_example_gives_the_inverse_of_the_damped_layer_blocks() {
    let cancel = Cancel::new();
    let cases = [
        (vec![3, 4, 3], Family::Multinomial { n_classes: 3 }, 0.0),
        (vec![3, 4, 3], Family::Multinomial { n_classes: 3 }, 0.05),
        (vec![2, 3, 4, 1], Family::Squared, 0.05),
        (vec![4, 3], Family::Multinomial { n_classes: 3 }, 0.05),
    ];
    for (s, (sizes, head, l2)) in cases.into_iter().enumerate() {
        let net = gn(sizes, head);
        let rows = data(&net, 1, 0.3, 10 + s as u64);
        let obj = Objective::new(&net, &rows, l2).unwrap();
        let t = theta(&net, 20 + s as u64);
        let damping = 0.1;
        let null = null_space(&net, &obj, &t, damping);
        let pc = preconditioner(&obj, t.view(), None, damping, null.as_ref(), Precondition::Kronecker, &cancel).unwrap().unwrap();
        assert!(matches!(pc, Preconditioner::Kronecker(_)));
        // the operator G + damping I + N S N^T with the cross-layer blocks dropped
        let g = obj.hessian(t.view(), &cancel).unwrap();
        let p = net.n_params();
        let mut op = Array2::zeros((p, p));
        for j in 0..net.n_layers() {
            let r = net.layer_range(j);
            op.slice_mut(s![r.clone(), r.clone()]).assign(&g.slice(s![r.clone(), r]));
        }
        op.diag_mut().mapv_inplace(|v| v + damping);
        if let Some(n) = &null {
            op += &n.basis.dot(&Array2::from_diag(&n.scales)).dot(&n.basis.t());
        }
        let want = inverse(&op);
        let got = as_matrix(&pc, p);
        let err = max_abs((&got - &want).iter().copied()) / max_abs(want.iter().copied());
        assert!(err < 1e-10, "case {s}: K-FAC differs from the layer-block inverse by {err:e}");
    }
}

/// No hidden layer and a squared head: G = kron(2, A) + 2 l2 M exactly, also with uncentred
/// inputs (the penalty enters exactly, not through its diagonal in the eigenbasis), so
/// preconditioned CG stops after one iteration, at the direct solve's answer.
#[test]
fn squared_head_without_hidden_layer_converges_in_one_iteration() {
    let cancel = Cancel::new();
    let net = gn(vec![5, 1], Family::Squared);
    for (shift, l2) in [(0.0, 0.0), (0.0, 0.02), (1.5, 0.02)] {
        let rows = data(&net, 60, shift, 3);
        let obj = Objective::new(&net, &rows, l2).unwrap();
        let t = theta(&net, 4);
        let damping = 0.01;
        let mut rng = Lcg(5);
        let b = Array2::from_shape_fn((net.n_params(), 3), |_| rng.normal());
        let opts =
            SolverOptions { method: Method::Cg, damping, cg: CgOptions { precondition: Precondition::Kronecker, ..Default::default() }, ..Default::default() };
        let (solver, _, _) = Prepared::at(&obj, t.view(), &opts, None, &cancel).unwrap();
        let mut x = b.clone();
        let info = solver.solve_in_place(&obj, t.view(), x.view_mut(), &opts.cg, true, &cancel).unwrap();
        assert_eq!(info.iterations, vec![1, 1, 1], "shift {shift}, l2 {l2}: {info:?}");
        let mut h = obj.hessian(t.view(), &cancel).unwrap();
        h.diag_mut().mapv_inplace(|v| v + damping);
        let want = inverse(&h).dot(&b);
        let err = max_abs((&x - &want).iter().copied()) / max_abs(want.iter().copied());
        assert!(err < 1e-9, "shift {shift}, l2 {l2}: error {err:e}");
    }
}

/// CG preconditioned by K-FAC, Jacobi, or nothing: the same solution as the direct solve of the
/// damped Gauss-Newton system, on small nets with softmax and squared heads.
#[test]
fn kfac_preconditioned_cg_matches_the_direct_solve() {
    let cancel = Cancel::new();
    for (s, (sizes, head, l2)) in [
        (vec![4, 6, 3], Family::Multinomial { n_classes: 3 }, 0.0),
        (vec![4, 6, 3], Family::Multinomial { n_classes: 3 }, 0.01),
        (vec![3, 5, 4, 1], Family::Squared, 0.01),
    ]
    .into_iter()
    .enumerate()
    {
        let net = gn(sizes, head);
        let rows = data(&net, 80, 0.5, 40 + s as u64);
        let obj = Objective::new(&net, &rows, l2).unwrap();
        let t = theta(&net, 50 + s as u64);
        let damping = 0.02;
        // right-hand sides as influence solves them: per-example gradients (orthogonal to N)
        let b = {
            let mut g = Array2::zeros((4, net.n_params()));
            rows_grads(&net, &rows, &t, &mut g);
            g.t().to_owned()
        };
        let direct = SolverOptions { method: Method::Direct, damping, ..Default::default() };
        let (solver, _, _) = Prepared::at(&obj, t.view(), &direct, None, &cancel).unwrap();
        let mut want = b.clone();
        solver.solve_in_place(&obj, t.view(), want.view_mut(), &direct.cg, true, &cancel).unwrap();
        for choice in [Precondition::Kronecker, Precondition::Jacobi, Precondition::None, Precondition::Auto] {
            let opts =
                SolverOptions { method: Method::Cg, damping, cg: CgOptions { precondition: choice, rtol: 1e-12, ..Default::default() }, ..Default::default() };
            let (solver, _, _) = Prepared::at(&obj, t.view(), &opts, None, &cancel).unwrap();
            let mut x = b.clone();
            let info = solver.solve_in_place(&obj, t.view(), x.view_mut(), &opts.cg, true, &cancel).unwrap();
            assert!(info.converged.iter().all(|&c| c), "{choice:?}: {info:?}");
            let err = max_abs((&x - &want).iter().copied()) / max_abs(want.iter().copied());
            assert!(err < 1e-8, "case {s}, {choice:?}: error {err:e}");
        }
    }
}

fn rows_grads(net: &Mlp, rows: &Table, t: &Array1<f64>, out: &mut Array2<f64>) {
    let n = out.nrows();
    upweight::data::with_block(rows, 0..n, |b| net.grads(t.view(), b, out.view_mut())).unwrap();
}

/// The factors come from fixed row blocks and partial sums: the same bits on 1 and 3 threads.
#[test]
fn kfac_is_the_same_for_any_number_of_threads() {
    let net = gn(vec![6, 7, 4], Family::Multinomial { n_classes: 4 });
    let rows = data(&net, 3000, 0.2, 7);
    let obj = Objective::new(&net, &rows, 0.01).unwrap();
    let t = theta(&net, 8);
    let mut rng = Lcg(9);
    let r = Array1::from_shape_fn(net.n_params(), |_| rng.normal());
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let cancel = Cancel::new();
            let f = kfac::factors(&obj, t.view(), &cancel).unwrap().unwrap();
            let null = null_space(&net, &obj, &t, 0.05);
            let pc = preconditioner(&obj, t.view(), None, 0.05, null.as_ref(), Precondition::Kronecker, &cancel).unwrap().unwrap();
            (f.iter().map(|f| (f.s.clone(), f.a.clone())).collect::<Vec<_>>(), pc.apply(r.view()))
        })
    };
    let (f1, z1) = run(1);
    let (f3, z3) = run(3);
    assert_eq!(f1, f3);
    assert_eq!(z1, z3);
}

/// K-FAC needs layers: asked of a GLM it is refused, naming the argument.
#[test]
fn kfac_on_a_glm_is_refused() {
    let cancel = Cancel::new();
    let glm = upweight::Glm::new(Family::Squared, 3);
    let net = gn(vec![3, 1], Family::Squared);
    let rows = data(&net, 20, 0.0, 1);
    let obj = Objective::new(&glm, &rows, 0.0).unwrap();
    let t = Array1::zeros(glm.n_params());
    let opts =
        SolverOptions { method: Method::Cg, damping: 0.1, cg: CgOptions { precondition: Precondition::Kronecker, ..Default::default() }, ..Default::default() };
    match Prepared::at(&obj, t.view(), &opts, None, &cancel) {
        Err(upweight::Error::Value { arg, .. }) => assert_eq!(arg, "precondition"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("K-FAC accepted for a GLM"),
    }
}

/// Sampled factors (`kfac_samples`): for every head, the output-curvature factor S from m
/// gradients at targets drawn from the model's predictive distribution approaches the exact
/// expectation as m grows (the input factor A is untouched), and the draws do not depend on
/// how the rows are cut into blocks.
#[test]
fn sampled_factors_estimate_the_exact_expectation() {
    use upweight::models::{KroneckerFactors, Preconditioning};
    for head in [Family::Multinomial { n_classes: 3 }, Family::Logistic, Family::Poisson, Family::Squared] {
        let k = head.n_outputs();
        let exact_net = gn(vec![3, 4, k], head);
        let mut rng = Lcg(7);
        let n = 40;
        let x = Array2::from_shape_fn((n, 3), |_| rng.normal());
        let y = Array2::from_shape_fn((n, 1), |_| match head {
            Family::Multinomial { .. } => ((rng.next() * 3.0) as usize % 3) as f64,
            Family::Logistic => (rng.next() < 0.5) as u8 as f64,
            Family::Poisson => (2.0 * rng.next()).floor(),
            Family::Squared => rng.normal(),
        });
        let b = upweight::Batch::with_targets(x.view(), y.view(), None, upweight::Names::TRAIN).unwrap();
        let t = theta(&exact_net, 3) * 0.5;
        let factors = |net: &Mlp, rows: &[(usize, usize)]| -> Vec<KroneckerFactors> {
            let mut out = net.kronecker_factors().unwrap();
            for &(a, z) in rows {
                net.kronecker_factors_sum(t.view(), &b.rows(a, z), &mut out);
            }
            out
        };
        let exact = factors(&exact_net, &[(0, n)]);
        let mut errs = Vec::new();
        for m in [4, 64, 2048] {
            let sampled = factors(&exact_net.with_kfac_samples(m), &[(0, n)]);
            let (mut num, mut den) = (0.0, 0.0);
            for (e, s) in exact.iter().zip(&sampled) {
                assert_eq!(e.a, s.a, "A does not depend on the outputs");
                num += (&e.s - &s.s).iter().map(|v| v * v).sum::<f64>();
                den += e.s.iter().map(|v| v * v).sum::<f64>();
            }
            errs.push((num / den).sqrt());
        }
        assert!(errs[2] < errs[0] && errs[2] < 0.05, "{head:?}: relative error of S {errs:?}");
        // the same draws whether the rows come in one block or three
        let one = factors(&exact_net.with_kfac_samples(5), &[(0, n)]);
        let three = factors(&exact_net.with_kfac_samples(5), &[(0, 9), (9, 30), (30, n)]);
        for (a, c) in one.iter().zip(&three) {
            assert!(max_abs((&a.s - &c.s).iter().cloned()) <= 1e-12 * max_abs(a.s.iter().cloned()), "{head:?}: blocks changed the draws");
        }
    }
}
