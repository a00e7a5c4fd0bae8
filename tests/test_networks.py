"""Networks (issue 12, DESIGN-networks.md): the Rust MLP kernels against the independent NumPy
reference (upweight.reference, mlp_*), influence against its definitions (the reference's
K^-1 solves; the PBRF's central difference at any theta), no hidden layer = the GLMs, training,
determinism, streaming storage, state and bad input.

The checks of section 8 that are about the core alone (R-operator vs finite differences, G
symmetric PSD, G = H with no hidden layer) also run in Rust (rust/tests/mlp.rs).
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import upweight as uw
from upweight import _core
from upweight import reference as ref

HEADS = {"softmax": "multinomial", "squared": "squared"}


def problem(n, d, k, head, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if head == "softmax":
        y = rng.integers(0, k, size=n).astype(float)
    else:  # squared: one target, or k >= 2 (a multi-output regression: one column per output)
        y = rng.normal(size=n) if k == 1 else rng.normal(size=(n, k))
    w = rng.uniform(0.5, 1.5, size=n)
    w[1] = 0.0  # a zero-weight point
    return X, y, w


def core(sizes, activation, head, curvature="gauss-newton"):
    return _core.mlp(sizes, activation, HEADS[head], curvature)


def fitted_classifier(hidden=(8,), activation="tanh", n=120, l2=1e-2, seed=0):
    X, y = uw.load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(y), size=n, replace=False)
    X, y = X[idx] / 16.0, y[idx]
    keep = y < 4  # four classes: small p, every class present
    X, y = X[keep], y[keep].astype(float)
    net = uw.MLPClassifier(hidden=hidden, activation=activation, l2=l2, random_state=seed).fit(X, y)
    return net, X, y


# -- kernels against the NumPy reference ------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    hidden=st.sampled_from([(4,), (3, 2), (5,)]),
    activation=st.sampled_from(["tanh", "gelu", "relu"]),
    head_k=st.sampled_from([("softmax", 3), ("squared", 1), ("squared", 2)]),
    seed=st.integers(0, 10_000),
    l2=st.sampled_from([0.0, 0.03]),
)
def test_kernels_match_the_reference(hidden, activation, head_k, seed, l2):
    head, k = head_k
    d = 4
    sizes = [d, *hidden, k]
    X, y, w = problem(9, d, k, head, seed)
    theta = np.random.default_rng(seed + 1).normal(scale=0.6, size=ref.mlp_n_params(sizes))
    m = core(sizes, activation, head)
    args = (theta, X, y, sizes, activation, head)
    np.testing.assert_allclose(m.losses(theta, X, y), ref.mlp_losses(*args), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.per_example_grads(theta, X, y), ref.mlp_per_example_grads(*args), rtol=1e-10, atol=1e-13)
    value, grad = m.objective(theta, X, y, w, l2)
    assert value == pytest.approx(ref.mlp_objective(*args, w=w, l2=l2), rel=1e-12)
    np.testing.assert_allclose(grad, ref.mlp_gradient(*args, w=w, l2=l2), rtol=1e-10, atol=1e-13)
    G = ref.mlp_gauss_newton(*args, w=w, l2=l2)
    np.testing.assert_allclose(m.hessian(theta, X, y, w, l2), G, rtol=1e-10, atol=1e-12)
    V = np.random.default_rng(seed + 2).normal(size=(theta.size, 3))
    np.testing.assert_allclose(m.hvp(theta, X, y, w, l2, V), G @ V, rtol=1e-10, atol=1e-11)
    for kind in ("linear", "mean"):
        np.testing.assert_allclose(m.predict(theta, X, kind), ref.mlp_predict(*args[:2], sizes, activation, head, kind).reshape(9, k),
                                   rtol=1e-12, atol=1e-14)
    # gradients of the outputs h (rows t k + c) are the reference's Jacobians
    np.testing.assert_allclose(m.prediction_grads(theta, X, "linear"), ref.mlp_jacobians(theta, X, sizes, activation).reshape(9 * k, -1),
                               rtol=1e-10, atol=1e-13)
    if activation != "relu":  # relu'' is not a function: the exact Hessian is G plus kinks
        H = ref.mlp_hessian(*args, w=w, l2=l2)
        mh = core(sizes, activation, head, "hessian")
        np.testing.assert_allclose(mh.hessian(theta, X, y, w, l2), H, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(mh.hvp(theta, X, y, w, l2, V), H @ V, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("curvature", ["gauss-newton", "hessian"])
@pytest.mark.parametrize("head, k", [("softmax", 3), ("squared", 1), ("squared", 2)])
def test_influence_matches_the_reference_at_any_theta(curvature, head, k):
    """I(z_m) = -K^-1 (grad l_m + 2 l2 M theta) / W and S = grad l_test . I, with K the damped
    curvature, at parameters that are not a minimiser (influence never assumes one); k = 2
    squared outputs: a multi-output regression, y of shape (n, 2)."""
    sizes, activation, l2, damping = [4, 5, k], "tanh", 0.02, 0.05
    X, y, w = problem(25, 4, k, head, 3)
    Xt, yt, _ = problem(4, 4, k, head, 4)
    est = (uw.MLPClassifier if head == "softmax" else uw.MLPRegressor)(hidden=(5,), l2=l2)
    if head == "softmax":
        est.n_classes_param = k
        est.check_targets(y, len(y), fitting=True)
    theta = np.random.default_rng(5).normal(scale=0.5, size=ref.mlp_n_params(sizes))
    est.set_theta(theta, n_features=4)
    if curvature == "hessian":  # indefinite away from a minimum: damp above its lowest eigenvalue
        H = ref.mlp_hessian(theta, X, y, sizes, activation, head, w=w, l2=l2)
        damping += max(0.0, -np.linalg.eigvalsh(H)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no not-at-optimum warning for networks
        inf = uw.Influence(est, X, y, w, damping=damping, curvature=curvature, solver="direct")
    expected = ref.mlp_influence_params(theta, X, y, sizes, activation, head, w=w, l2=l2, damping=damping, curvature=curvature)
    np.testing.assert_allclose(inf.params(), expected, rtol=1e-8, atol=1e-12)
    S = ref.mlp_influence_on_loss(theta, X, y, sizes, activation, head, Xt, yt, w=w, l2=l2, damping=damping, curvature=curvature)
    np.testing.assert_allclose(inf.on_loss(Xt, yt), S, rtol=1e-8, atol=1e-12)
    for precondition in (True, "kfac", "jacobi", False):
        cg = uw.Influence(est, X, y, w, damping=damping, curvature=curvature, solver="cg", precondition=precondition)
        np.testing.assert_allclose(cg.on_loss(Xt, yt), S, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_softmax_flat_directions_without_damping(l2):
    """damping = 0 with a softmax head: G is singular along the output-bias shift (with l2 = 0
    also W_L + 1 v^T); influence is solved in the orthogonal complement (as for the multinomial
    GLM), matching the reference, with direct and CG solves."""
    sizes = [3, 4, 3]
    X, y, w = problem(40, 3, 3, "softmax", 11)
    est = uw.MLPClassifier(hidden=(4,), l2=l2)
    theta = np.random.default_rng(2).normal(scale=0.7, size=ref.mlp_n_params(sizes))
    est.set_theta(theta, n_features=3)
    expected = ref.mlp_influence_params(theta, X, y, sizes, "tanh", "softmax", w=w, l2=l2, idx=[0, 5])
    for solver, precondition in (("direct", True), ("cg", "kfac"), ("cg", "jacobi")):
        inf = uw.Influence(est, X, y, w, damping=0.0, solver=solver, precondition=precondition)
        np.testing.assert_allclose(inf.params(idx=[0, 5]), expected, rtol=1e-7, atol=1e-9 * np.abs(expected).max())


def test_duplicate_hidden_units_need_damping():
    """Two hidden units that are copies of each other leave G singular along their biases
    (unpenalised): without damping the influence refuses, naming the cause."""
    sizes = [3, 2, 3]
    X, y, w = problem(40, 3, 3, "softmax", 12)
    theta = np.random.default_rng(3).normal(size=ref.mlp_n_params(sizes))
    blocks = theta[:8].reshape(2, 4)
    blocks[1] = blocks[0]  # unit 1 = unit 0, incoming weights and bias
    out = theta[8:].reshape(3, 3)
    out[:, 1] = out[:, 0]  # and the same outgoing weights
    est = uw.MLPClassifier(hidden=(2,), l2=0.01)
    est.set_theta(theta, n_features=3)
    with pytest.raises(uw.SingularHessianError, match="duplicates"):
        uw.Influence(est, X, y, w, damping=0.0, solver="direct")
    uw.Influence(est, X, y, w, damping=1e-3, solver="direct").params(idx=[0])


# -- no hidden layer: the GLMs -------------------------------------------------------------------

def test_no_hidden_layer_is_multinomial_regression():
    X, y = uw.load_digits()
    X, y = X[:300] / 16.0, y[:300] % 3
    net = uw.MLPClassifier(hidden=(), l2=1e-2, tol=1e-10).fit(X, y)
    glm = uw.LogisticRegression(l2=1e-2, tol=1e-12).fit(X, y)
    np.testing.assert_allclose(net.get_theta(), glm.get_theta(), atol=1e-7)
    net.set_theta(glm.get_theta())  # the same theta: every influence number is the GLM's
    a = uw.Influence(net, X, y, damping=0.0, solver="direct")
    b = uw.Influence(glm, X, y, solver="direct")
    np.testing.assert_allclose(a.on_loss(X[:5], y[:5]), b.on_loss(X[:5], y[:5]), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(a.self_influence(), b.self_influence(), rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(net.predict_proba(X[:7]), glm.predict_proba(X[:7]), rtol=1e-13)


def test_no_hidden_layer_is_linear_regression():
    X, y, w = problem(60, 3, 1, "squared", 8)
    net = uw.MLPRegressor(hidden=(), l2=0.1, tol=1e-11).fit(X, y, sample_weight=w)
    glm = uw.LinearRegression(l2=0.1).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(net.get_theta(), glm.get_theta(), atol=1e-9)
    net.set_theta(glm.get_theta())
    a = uw.Influence(net, X, y, w, damping=0.0)
    b = uw.Influence(glm, X, y, w)
    np.testing.assert_allclose(a.params(), b.params(), rtol=1e-9, atol=1e-13)


# -- the PBRF -----------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["tanh", "gelu", "relu"])
def test_pbrf_central_difference_is_the_influence(activation):
    """(theta_b(h) - theta_b(-h)) / 2h = I(z_m) + O(h^2), with the damped Gauss-Newton
    curvature, at trained parameters and at parameters that are far from a minimiser."""
    net, X, y = fitted_classifier(activation=activation, n=90)
    for theta in (net.get_theta(), net.get_theta() + np.random.default_rng(1).normal(scale=0.3, size=net.n_params)):
        net.set_theta(theta)
        inf = uw.Influence(net, X, y, damping=0.01)
        for m in (0, 7):
            h = 1e-4
            up, down = inf.pbrf(m, [h, -h])
            fd = (up - down) / (2 * h)
            I = inf.params(idx=[m])[0]
            assert np.abs(fd - I).max() <= 1e-6 * np.abs(I).max()
        assert np.array_equal(inf.pbrf(3, 0.0), theta)  # theta_b(0) = theta_s


def test_pbrf_of_a_glm_is_the_refit():
    """No hidden layer at the optimum with damping 0: theta_b(-w_m) is the exact leave-one-out
    refit (DESIGN-networks.md section 3)."""
    X, y = uw.load_digits()
    X, y = X[:150] / 16.0, y[:150] % 3
    net = uw.MLPClassifier(hidden=(), l2=1e-2, tol=1e-11).fit(X, y)
    inf = uw.Influence(net, X, y, damping=0.0)
    m = 11
    removed = inf.pbrf(m, -1.0)
    w = np.ones(len(y))
    w[m] = 0.0
    refit = uw.MLPClassifier(hidden=(), l2=1e-2, tol=1e-11).fit(X, y, sample_weight=w)
    np.testing.assert_allclose(removed, refit.get_theta(), atol=1e-8)


def test_pbrf_shapes():
    net, X, y = fitted_classifier(n=60)
    inf = uw.Influence(net, X, y)
    p = net.n_params
    both = inf.pbrf([2, 5], [-1.0, 0.5])
    assert both.shape == (2, 2, p)
    assert inf.pbrf(2, [-1.0, 0.5]).shape == (2, p) and inf.pbrf([2, 5], -1.0).shape == (2, p) and inf.pbrf(5, 0.5).shape == (p,)
    np.testing.assert_array_equal(inf.pbrf(5, 0.5), both[1, 1])


def test_pbrf_bad_input():
    net, X, y = fitted_classifier(n=60)
    inf = uw.Influence(net, X, y)
    with pytest.raises(uw.InputError, match="^m:"):
        inf.pbrf(len(y), 0.1)
    with pytest.raises(uw.InputError, match="^eps:"):
        inf.pbrf(0, float("nan"))
    with pytest.raises(uw.InputError, match="^eps:"):
        inf.pbrf(0, -1e9)  # W + eps <= 0
    glm = uw.LogisticRegression(l2=1.0).fit(X, (y > 1).astype(float))
    with pytest.raises(uw.InputError, match="^model:"):
        uw.Influence(glm, X, (y > 1).astype(float)).pbrf(0, 0.1)


# -- training ---------------------------------------------------------------------------------

def test_training_reaches_a_tight_optimum_and_is_seeded():
    net, X, y = fitted_classifier(n=150)
    assert net.converged_ and net.grad_norm_ <= net.tol
    _, g = net.core_model().objective(net.get_theta(), X, y, None, net.l2)
    assert np.abs(g).max() <= net.tol
    again = uw.MLPClassifier(hidden=(8,), l2=1e-2, random_state=0).fit(X, y)
    assert np.array_equal(again.get_theta(), net.get_theta())
    other = uw.MLPClassifier(hidden=(8,), l2=1e-2, random_state=1).fit(X, y)
    assert not np.array_equal(other.get_theta(), net.get_theta())


def test_adam_is_seeded_and_lowers_the_objective():
    X, y = uw.load_digits()
    X, y = X[:600] / 16.0, y[:600].astype(float)
    kw = dict(hidden=(16,), solver="adam", max_iter=15, batch_size=64, learning_rate=3e-3, l2=1e-4)
    a = uw.MLPClassifier(random_state=4, **kw).fit(X, y)
    b = uw.MLPClassifier(random_state=4, **kw).fit(X, y)
    c = uw.MLPClassifier(random_state=5, **kw).fit(X, y)
    assert np.array_equal(a.get_theta(), b.get_theta()) and not np.array_equal(a.get_theta(), c.get_theta())
    start = uw.MLPClassifier(random_state=4, **{**kw, "max_iter": 1}).fit(X, y)
    assert a.objective_ < 0.5 * start.objective_ and a.score(X, y) > 0.9
    assert a.n_iter_ == 15 * int(np.ceil(600 / 64))  # steps
    value, g = a.core_model().objective(a.get_theta(), X, y, None, a.l2)
    assert a.objective_ == pytest.approx(value) and a.grad_norm_ == pytest.approx(np.abs(g).max())
    for bad in (dict(batch_size=0), dict(learning_rate=-1.0), dict(solver="sgd")):
        with pytest.raises(uw.InputError, match=f"^{next(iter(bad))}:"):
            uw.MLPClassifier(**{**kw, **bad}).fit(X, y)


def test_results_do_not_depend_on_the_thread_count():
    code = (
        "import numpy as np, upweight as uw\n"
        "X, y = uw.load_digits(); X, y = X[:700] / 16, y[:700]\n"
        "net = uw.MLPClassifier(hidden=(6,), l2=1e-2, max_iter=300).fit(X, y)\n"
        "adam = uw.MLPClassifier(hidden=(6,), solver='adam', max_iter=2).fit(X, y)\n"
        "inf = uw.Influence(net, X, y, solver='cg')\n"
        "out = [net.get_theta(), adam.get_theta(), inf.on_loss(X[:3], y[:3]).ravel(), inf.params(idx=[0, 5]).ravel()]\n"
        "np.save(__import__('sys').argv[1], np.concatenate(out))\n"
    )
    out = {}
    for threads in ("1", "2"):
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"uw_threads_{os.getpid()}_{threads}.npy")
        env = {**os.environ, "RAYON_NUM_THREADS": threads}
        with warnings.catch_warnings():
            subprocess.run([sys.executable, "-W", "ignore", "-c", code, path], check=True, env=env)
        out[threads] = np.load(path)
        os.remove(path)
    assert np.array_equal(out["1"], out["2"])


def test_a_duplicated_point_is_one_point_of_weight_two_and_order_does_not_matter():
    net, X, y = fitted_classifier(n=80)
    w = np.ones(len(y))
    w[2] = 2.0
    a = uw.Influence(net, X, y, w, damping=0.01).on_loss(X[:3], y[:3])
    Xd, yd = np.vstack([X, X[2:3]]), np.append(y, y[2])
    b = uw.Influence(net, Xd, yd, damping=0.01).on_loss(X[:3], y[:3])
    tol = 1e-9 * np.abs(a).max()  # rounding of the sums, amplified by the solve
    np.testing.assert_allclose(b[:, :len(y)], a, rtol=1e-9, atol=tol)
    perm = np.random.default_rng(0).permutation(len(y))
    c = uw.Influence(net, X[perm], y[perm], w[perm], damping=0.01).on_loss(X[:3], y[:3])
    np.testing.assert_allclose(c, a[:, perm], rtol=1e-9, atol=tol)


def test_parameters_trained_elsewhere():
    """An estimator built from given parameters (set_theta with n_features) answers at them."""
    net, X, y = fitted_classifier(n=60)
    other = uw.MLPClassifier(hidden=(8,))
    other.set_theta(net.get_theta(), n_features=X.shape[1])
    assert other.n_outputs == net.n_outputs
    np.testing.assert_array_equal(other.predict_proba(X), net.predict_proba(X))
    blocks = other.coefs_
    assert [b.shape for b in blocks] == [(8, 64), (net.n_outputs, 8)]
    h = np.tanh(X @ blocks[0].T + other.intercepts_[0]) @ blocks[1].T + other.intercepts_[1]
    np.testing.assert_allclose(other.decision_function(X), h, rtol=1e-12)


# -- queries, streaming storage, state --------------------------------------------------------

def test_top_k_self_influence_and_storage(tmp_path):
    net, X, y = fitted_classifier(n=160)
    inf = uw.Influence(net, X, y, damping=0.01)
    S = inf.on_loss(X[:4], y[:4])
    top = inf.top_k(X[:4], y[:4], k=5)
    np.testing.assert_array_equal(top.helpful_idx, np.argsort(S, axis=1, kind="stable")[:, :5])
    # on_prediction: gradients of the outputs (the reference's Jacobians) against I(z_m); new_point
    J = ref.mlp_jacobians(net.get_theta(), X[:2], net.sizes(), "tanh")  # (2, k, p)
    V = inf.params()
    np.testing.assert_allclose(inf.on_prediction(X[:2], kind="linear"), J @ V.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(inf.new_point(X[3], y[3]), V[3], rtol=1e-9, atol=1e-14)
    si = inf.self_influence()
    G = net.core_model().per_example_grads(net.get_theta(), X, y)
    np.testing.assert_allclose(si, np.einsum("ij,ij->i", G, V), rtol=1e-8, atol=1e-14)
    path = tmp_path / "X.npy"
    np.save(path, X)
    for Xs in (str(path), sp.csr_matrix(X), np.load(path, mmap_mode="r")):
        other = uw.Influence(net, Xs, y, damping=0.01)
        assert other.damping == pytest.approx(inf.damping, rel=1e-12)
        np.testing.assert_allclose(other.on_loss(X[:4], y[:4]), S, rtol=1e-8, atol=1e-9 * np.abs(S).max())
    f32 = uw.Influence(net, X.astype(np.float32), y, damping=0.01)
    np.testing.assert_allclose(f32.on_loss(X[:4], y[:4]), S, rtol=1e-4, atol=1e-7)


def test_damping_auto_is_a_tenth_of_the_mean_eigenvalue():
    net, X, y = fitted_classifier(n=80)
    inf = uw.Influence(net, X, y)
    G = net.core_model("gauss-newton").hessian(net.get_theta(), X, y, None, net.l2)
    assert inf.damping == pytest.approx(0.1 * np.trace(G) / G.shape[0], rel=1e-10)
    assert inf.curvature == "gauss-newton"
    assert uw.Influence(net, X, y, damping=0.5).damping == 0.5


def test_refitting_the_network_does_not_change_an_influence():
    net, X, y = fitted_classifier(n=80)
    inf = uw.Influence(net, X, y, damping=0.01)
    before = inf.on_loss(X[:2], y[:2])
    net.set_params(l2=0.5).fit(X, y)
    np.testing.assert_array_equal(inf.on_loss(X[:2], y[:2]), before)


def test_bad_input_names_the_argument():
    X, y, _ = problem(20, 3, 3, "softmax", 0)
    with pytest.raises(uw.InputError, match="^hidden:"):
        uw.MLPClassifier(hidden=(0,)).fit(X, y)
    with pytest.raises(uw.InputError, match="^activation:"):
        uw.MLPClassifier(activation="sigmoid").fit(X, y)
    with pytest.raises(uw.InputError, match="^curvature:"):
        uw.MLPClassifier(curvature="fisher").fit(X, y)
    with pytest.raises(uw.InputError, match="^y:"):
        uw.MLPClassifier().fit(X, y + 0.5)
    with pytest.raises(uw.InputError, match="^y: expected a 1-d array"):  # (n, t) is a multi-output regression
        uw.MLPRegressor().fit(X, y[:, None, None])
    with pytest.raises(uw.NotFittedError):
        uw.MLPClassifier().predict(X)
    net = uw.MLPClassifier(hidden=(4,), max_iter=50).fit(X, y) if False else None
    assert net is None
    net, Xd, yd = fitted_classifier(n=60)
    with pytest.raises(uw.InputError, match="^theta:"):
        net.set_theta(np.zeros(3))
    with pytest.raises(uw.InputError, match="^damping:"):
        uw.Influence(net, Xd, yd, damping="big")
    with pytest.raises(uw.InputError, match="^curvature:"):
        uw.Influence(net, Xd, yd, curvature="fisher")
    with pytest.raises(uw.InputError, match="^X"):
        uw.Influence(net, Xd[:, :10], yd)
    with pytest.raises(uw.InputError, match="^precondition:"):
        uw.Influence(net, Xd, yd, solver="cg", precondition="fisher")
    with pytest.raises(uw.InputTypeError, match="^precondition:"):
        uw.Influence(net, Xd, yd, solver="cg", precondition=2)
    Xr = np.random.default_rng(0).normal(size=(30, 3))
    glm = uw.LinearRegression().fit(Xr, Xr.sum(axis=1))
    with pytest.raises(uw.InputError, match="^precondition: 'kfac' needs a model with layers"):
        uw.Influence(glm, Xr, Xr.sum(axis=1), solver="cg", precondition="kfac")


def test_an_interrupted_training_leaves_the_estimator_as_it_was():
    net, X, y = fitted_classifier(n=60)
    before = net.get_theta()

    def stop(*_):
        raise KeyboardInterrupt

    net.set_params(progress=stop, max_iter=10_000, random_state=3)
    with pytest.raises(KeyboardInterrupt):
        net.fit(np.repeat(X, 400, axis=0), np.repeat(y, 400))  # long enough for a progress call (50 ms)
    assert np.array_equal(net.get_theta(), before)
