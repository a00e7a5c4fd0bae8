"""Validate the MLP section of python/upweight/reference.py against its definition (DESIGN-networks.md 1-3).

Per-example gradients, Jacobians and the exact Hessian against central finite differences,
the Gauss-Newton matrix's symmetry and semi-definiteness, the GLM reference with no hidden
layer, duplicates = weight 2, order independence, the influence identity and the softmax
flat directions.  Float64 throughout; relu data are drawn away from the kinks.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st


def _load_reference():
    """Load python/upweight/reference.py directly (the package may need a compiled module)."""
    path = Path(__file__).resolve().parents[1] / "python" / "upweight" / "reference.py"
    spec = importlib.util.spec_from_file_location("upweight_reference_mlp", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

N, D = 30, 3
ZERO_W = 4  # index of the zero-weight training point
KINK = 1e-3  # relu data keep every hidden pre-activation at least this far from 0

CONFIGS = [
    (hidden, k, act, head)
    for hidden in ((4,), (3, 2))
    for act in ref.ACTIVATIONS
    for head, ks in (("softmax", (2, 3)), ("squared", (1, 2, 3)))
    for k in ks
]
IDS = [f"{act}-{head}-h{'x'.join(map(str, hidden))}-k{k}" for hidden, k, act, head in CONFIGS]


def random_theta(sizes, rng):
    layers = [(rng.normal(size=(o, i)) / np.sqrt(i), 0.3 * rng.normal(size=o)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    return ref.mlp_flatten(layers)


def targets(head, k, rng, n):
    if head == "softmax":
        y = rng.integers(0, k, size=n)
        y[:k] = np.arange(k)  # every class present
        return y.astype(float)  # class ids given as floats are accepted
    return rng.normal(size=n) if k == 1 else rng.normal(size=(n, k))


def make_case(hidden, k, activation, head, seed=0, n=N):
    """sizes, theta, X, y, w (one zero weight), X_test, y_test; relu: no hidden |z| < KINK."""
    sizes = [D, *hidden, k]
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        theta = random_theta(sizes, rng)
        X = rng.normal(size=(n, D))
        Xt = rng.normal(size=(5, D))
        if activation != "relu":
            break
        zs = ref.mlp_forward(theta, np.vstack([X, Xt]), sizes, activation, return_all=True)[1]
        if min(np.min(np.abs(z)) for z in zs[:-1]) > KINK:
            break
    else:
        raise RuntimeError("no relu data away from the kinks")
    w = rng.uniform(0.5, 2.0, size=n)
    w[ZERO_W] = 0.0
    return sizes, theta, X, targets(head, k, rng, n), w, Xt, targets(head, k, rng, 5)


def central_fd(f, x, h):
    """Columns (f(x + h e_j) - f(x - h e_j)) / 2h, stacked on the last axis."""
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


def step(theta):
    return 1e-5 * max(1.0, np.max(np.abs(theta)))


def assert_close_rel(A, B, rtol):
    """max |A - B| <= rtol * max |B| (finite differences have an absolute error scale)."""
    scale = max(np.max(np.abs(B)), 1e-300)
    assert np.max(np.abs(A - B)) <= rtol * scale, np.max(np.abs(A - B)) / scale


# ---------------------------------------------------------------------------------------
# layout and activations
# ---------------------------------------------------------------------------------------


def test_layout_round_trip_and_mask():
    sizes = [3, 4, 2, 3]
    p = ref.mlp_n_params(sizes)
    assert p == 4 * 4 + 2 * 5 + 3 * 3
    theta = np.arange(p, dtype=float)
    layers = ref.mlp_unflatten(theta, sizes)
    assert [(W.shape, b.shape) for W, b in layers] == [((4, 3), (4,)), ((2, 4), (2,)), ((3, 2), (3,))]
    np.testing.assert_array_equal(layers[0][0][1], [4.0, 5.0, 6.0])  # row 1 of [W_1 | b_1], bias last
    assert layers[0][1][1] == 7.0
    np.testing.assert_array_equal(ref.mlp_flatten(layers), theta)
    M = ref.mlp_penalty_mask(sizes)
    assert M.sum() == 4 * 3 + 2 * 4 + 3 * 2
    np.testing.assert_array_equal(M[[3, 7, 15, 16 + 4, 16 + 10 + 2]], 0.0)


@pytest.mark.parametrize("k", [1, 3])
def test_no_hidden_layer_layout_is_the_glms(k):
    rng = np.random.default_rng(0)
    theta = rng.normal(size=k * (D + 1))
    X = rng.normal(size=(6, D))
    (W, b), = ref.mlp_unflatten(theta, [D, k])
    np.testing.assert_array_equal(np.hstack([W, b[:, None]]), theta.reshape(k, D + 1))
    family = "multinomial" if k > 1 else "squared"
    eta = ref.linear_predictor(theta, X, family).reshape(6, k)
    np.testing.assert_allclose(ref.mlp_forward(theta, X, [D, k], "gelu"), eta, rtol=1e-14, atol=1e-15)


def test_gelu_is_exact():
    # gelu(z) = z Phi(z), Phi from mpmath.ncdf at 40 digits
    Phi = {-10.0: 7.619853024160526065973e-24, -3.0: 0.001349898031630094526652, -1.0: 0.1586552539314570514148,
           1.0: 0.8413447460685429485852, 2.5: 0.9937903346742238648330}
    z = np.array(list(Phi))
    theta = np.array([1.0, 0.0, 1.0, 0.0])  # sizes [1, 1, 1]: h = 1 * gelu(1 * x + 0) + 0
    h = ref.mlp_forward(theta, z[:, None], [1, 1, 1], "gelu")[:, 0]
    exact = z * np.array(list(Phi.values()))
    np.testing.assert_allclose(h[1:], exact[1:], rtol=1e-15, atol=0)
    np.testing.assert_allclose(h[0], exact[0], rtol=2e-14, atol=0)  # rounding of z / sqrt 2, times erfc's condition ~z^2


def test_relu_derivative_at_zero_is_zero():
    theta = np.array([1.0, 0.0, 1.0, 0.0])  # z_1 = x, h = relu(x)
    J = ref.mlp_jacobians(theta, np.zeros((1, 1)), [1, 1, 1], "relu")
    np.testing.assert_array_equal(J[0, 0], [0.0, 0.0, 0.0, 1.0])  # dh/db_1 = relu'(0) = 0
    H = ref.mlp_hessian(theta, np.zeros((1, 1)), np.array([1.0]), [1, 1, 1], "relu", "squared")
    np.testing.assert_array_equal(H, np.diag([0.0, 0.0, 0.0, 2.0]))


def test_predict():
    sizes, theta, X, *_ = make_case((4,), 3, "tanh", "softmax")
    h = ref.mlp_forward(theta, X, sizes, "tanh")
    np.testing.assert_array_equal(ref.mlp_predict(theta, X, sizes, "tanh", "softmax"), h)
    P = ref.mlp_predict(theta, X, sizes, "tanh", "softmax", kind="mean")
    np.testing.assert_allclose(P, np.exp(h) / np.exp(h).sum(axis=1, keepdims=True), rtol=1e-14)
    np.testing.assert_array_equal(ref.mlp_predict(theta, X, sizes, "tanh", "squared", kind="mean"), h)


# ---------------------------------------------------------------------------------------
# first derivatives
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden,k,act,head", CONFIGS, ids=IDS)
def test_gradients_match_finite_differences(hidden, k, act, head):
    sizes, theta, X, y, w, _, _ = make_case(hidden, k, act, head, seed=1)
    G = ref.mlp_per_example_grads(theta, X, y, sizes, act, head)
    assert G.shape == (N, ref.mlp_n_params(sizes))
    fd = central_fd(lambda t: ref.mlp_losses(t, X, y, sizes, act, head), theta, step(theta))
    assert_close_rel(G, fd, 1e-7)
    for l2 in (0.0, 0.3):
        g = ref.mlp_gradient(theta, X, y, sizes, act, head, w, l2)
        np.testing.assert_allclose(g, w @ G / w.sum() + 2 * l2 * ref.mlp_penalty_mask(sizes) * theta, rtol=1e-13, atol=1e-15)
        fd = central_fd(lambda t: ref.mlp_objective(t, X, y, sizes, act, head, w, l2), theta, step(theta))
        assert_close_rel(g, fd, 1e-7)


SQUARED = [(c, i) for c, i in zip(CONFIGS, IDS, strict=True) if c[3] == "squared"]  # J does not depend on the head


@pytest.mark.parametrize("hidden,k,act,head", [c for c, _ in SQUARED], ids=[i for _, i in SQUARED])
def test_jacobians_match_finite_differences(hidden, k, act, head):
    sizes, theta, X, *_ = make_case(hidden, k, act, head, seed=2, n=8)
    J = ref.mlp_jacobians(theta, X, sizes, act)
    assert J.shape == (8, k, ref.mlp_n_params(sizes))
    fd = central_fd(lambda t: ref.mlp_forward(t, X, sizes, act), theta, step(theta))
    assert_close_rel(J, fd, 1e-8)


# ---------------------------------------------------------------------------------------
# curvature
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden,k,act,head", CONFIGS, ids=IDS)
def test_gauss_newton_symmetric_psd(hidden, k, act, head):
    sizes, theta, X, y, w, _, _ = make_case(hidden, k, act, head, seed=3)
    G = ref.mlp_gauss_newton(theta, X, y, sizes, act, head, w, 0.1)
    np.testing.assert_allclose(G, G.T, rtol=0, atol=1e-14 * np.max(np.abs(G)))
    assert np.linalg.eigvalsh(G).min() >= -1e-12 * np.max(np.abs(G))
    # the definition, example by example
    J = ref.mlp_jacobians(theta, X, sizes, act)
    h = ref.mlp_forward(theta, X, sizes, act)
    G_def = 2 * 0.1 * np.diag(ref.mlp_penalty_mask(sizes))
    for i in range(N):
        if head == "softmax":
            p = np.exp(h[i]) / np.exp(h[i]).sum()
            Lam = np.diag(p) - np.outer(p, p)
        else:
            Lam = 2 * np.eye(k)
        G_def = G_def + w[i] / w.sum() * J[i].T @ Lam @ J[i]
    np.testing.assert_allclose(G, G_def, rtol=1e-12, atol=1e-14 * np.max(np.abs(G)))
    rng = np.random.default_rng(0)
    V = rng.normal(size=(G.shape[0], 3))
    np.testing.assert_allclose(ref.mlp_gnvp(theta, X, y, sizes, act, head, V, w, 0.1), G @ V, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ref.mlp_gnvp(theta, X, y, sizes, act, head, V[:, 0], w, 0.1), G @ V[:, 0], rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("hidden,k,act,head", CONFIGS, ids=IDS)
def test_hessian_matches_finite_differences(hidden, k, act, head):
    sizes, theta, X, y, w, _, _ = make_case(hidden, k, act, head, seed=4)
    l2 = 0.1
    H = ref.mlp_hessian(theta, X, y, sizes, act, head, w, l2)
    np.testing.assert_allclose(H, H.T, rtol=0, atol=1e-14 * np.max(np.abs(H)))
    fd = central_fd(lambda t: ref.mlp_gradient(t, X, y, sizes, act, head, w, l2), theta, step(theta))
    assert_close_rel(H, fd, 1e-6)
    G = ref.mlp_gauss_newton(theta, X, y, sizes, act, head, w, l2)
    assert np.max(np.abs(H - G)) > 1e-6 * np.max(np.abs(H))  # the second-order term is there
    V = np.random.default_rng(0).normal(size=(H.shape[0], 2))
    np.testing.assert_allclose(ref.mlp_hvp(theta, X, y, sizes, act, head, V, w, l2), H @ V, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(ref.mlp_hvp(theta, X, y, sizes, act, head, V[:, 1], w, l2), H @ V[:, 1], rtol=1e-13, atol=1e-13)


@settings(max_examples=30, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 4), min_size=1, max_size=2),
    k=st.integers(1, 3),
    act=st.sampled_from(ref.ACTIVATIONS),
    head=st.sampled_from(ref.HEADS),
    n=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    l2=st.sampled_from([0.0, 0.5]),
)
def test_derivatives_hypothesis(hidden, k, act, head, n, seed, l2):
    sizes, theta, X, y, w, _, _ = make_case(tuple(hidden), k, act, head, seed=seed, n=n + 5)
    w[ZERO_W] = 1.0  # (n + 5) >= 6 points, all weighted
    Gi = ref.mlp_per_example_grads(theta, X, y, sizes, act, head)
    fd = central_fd(lambda t: ref.mlp_losses(t, X, y, sizes, act, head), theta, step(theta))
    np.testing.assert_allclose(Gi, fd, rtol=0, atol=1e-7 * max(1.0, np.max(np.abs(fd))))
    H = ref.mlp_hessian(theta, X, y, sizes, act, head, w, l2)
    fd = central_fd(lambda t: ref.mlp_gradient(t, X, y, sizes, act, head, w, l2), theta, step(theta))
    np.testing.assert_allclose(H, fd, rtol=0, atol=1e-6 * max(1.0, np.max(np.abs(fd))))


# ---------------------------------------------------------------------------------------
# no hidden layer: the GLM reference
# ---------------------------------------------------------------------------------------

GLM_CASES = [(head, k, l2) for head, k in (("softmax", 2), ("softmax", 3), ("squared", 1)) for l2 in (0.0, 0.1)]


@pytest.mark.parametrize("head,k,l2", GLM_CASES, ids=[f"{h}-k{k}-l2={l2}" for h, k, l2 in GLM_CASES])
def test_no_hidden_layer_equals_glm_reference(head, k, l2):
    family = "multinomial" if head == "softmax" else "squared"
    sizes, theta, X, y, w, Xt, yt = make_case((), k, "tanh", head, seed=5)
    args = (theta, X, y, sizes, "tanh", head)

    def close(a, b):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

    close(ref.mlp_losses(*args), ref.losses(theta, X, y, family))
    close(ref.mlp_per_example_grads(*args), ref.per_example_grads(theta, X, y, family))
    close(ref.mlp_objective(*args, w, l2), ref.objective(theta, X, y, family, w, l2))
    close(ref.mlp_gradient(*args, w, l2), ref.gradient(theta, X, y, family, w, l2))
    H_glm = ref.hessian(theta, X, y, family, w, l2)
    close(ref.mlp_hessian(*args, w, l2), H_glm)
    close(ref.mlp_gauss_newton(*args, w, l2), H_glm)
    I_glm = ref.influence_params(theta, X, y, family, w, l2)
    for curvature in ("gauss-newton", "hessian"):
        I = ref.mlp_influence_params(*args, w, l2, curvature=curvature)
        np.testing.assert_allclose(I, I_glm, rtol=1e-8, atol=1e-10 * np.max(np.abs(I_glm)))
    S_glm = ref.influence_on_loss(theta, X, y, family, Xt, yt, w, l2)
    S = ref.mlp_influence_on_loss(theta, X, y, sizes, "tanh", head, Xt, yt, w, l2)
    np.testing.assert_allclose(S, S_glm, rtol=1e-8, atol=1e-10 * np.max(np.abs(S_glm)))


@pytest.mark.parametrize("head,k", [("softmax", 3), ("squared", 2)])
def test_no_hidden_layer_gauss_newton_is_the_hessian(head, k):
    sizes, theta, X, y, w, _, _ = make_case((), k, "gelu", head, seed=6)
    G = ref.mlp_gauss_newton(theta, X, y, sizes, "gelu", head, w, 0.2)
    np.testing.assert_allclose(ref.mlp_hessian(theta, X, y, sizes, "gelu", head, w, 0.2), G, rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------------------------------
# weights, duplicates, order
# ---------------------------------------------------------------------------------------

PROPERTY_CASES = [((3, 2), 3, "tanh", "softmax"), ((4,), 2, "gelu", "squared"), ((4,), 1, "relu", "squared")]
PROPERTY_IDS = [f"{act}-{head}-k{k}" for _, k, act, head in PROPERTY_CASES]


def everything(theta, X, y, sizes, act, head, w, l2, Xt, yt):
    """objective, gradient, G, H, influences (both curvatures, damped) and scores for one data set."""
    args = (theta, X, y, sizes, act, head, w, l2)
    return dict(
        objective=ref.mlp_objective(*args),
        gradient=ref.mlp_gradient(*args),
        G=ref.mlp_gauss_newton(*args),
        H=ref.mlp_hessian(*args),
        I_gn=ref.mlp_influence_params(*args, damping=0.01),
        I_h=ref.mlp_influence_params(*args, damping=0.01, curvature="hessian"),
        S=ref.mlp_influence_on_loss(theta, X, y, sizes, act, head, Xt, yt, w, l2, damping=0.01),
    )


@pytest.mark.parametrize("hidden,k,act,head", PROPERTY_CASES, ids=PROPERTY_IDS)
def test_duplicate_is_weight_two(hidden, k, act, head):
    sizes, theta, X, y, w, Xt, yt = make_case(hidden, k, act, head, seed=7)
    m = 2
    w2 = w.copy()
    w2[m] *= 2
    dup = np.r_[np.arange(N), m]  # row m twice, each with its weight
    one = everything(theta, X, y, sizes, act, head, w2, 0.1, Xt, yt)
    two = everything(theta, X[dup], y[dup], sizes, act, head, w[dup], 0.1, Xt, yt)
    for key in ("objective", "gradient", "G", "H"):
        np.testing.assert_allclose(two[key], one[key], rtol=1e-12, atol=1e-14, err_msg=key)
    for key in ("I_gn", "I_h"):  # I(z_m) is per unit weight: both copies have the influence of the weight-2 row
        np.testing.assert_allclose(two[key], one[key][dup], rtol=1e-10, atol=1e-13, err_msg=key)
    np.testing.assert_allclose(two["S"], one["S"][:, dup], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("hidden,k,act,head", PROPERTY_CASES, ids=PROPERTY_IDS)
def test_order_independence(hidden, k, act, head):
    sizes, theta, X, y, w, Xt, yt = make_case(hidden, k, act, head, seed=8)
    perm = np.random.default_rng(0).permutation(N)
    a = everything(theta, X, y, sizes, act, head, w, 0.1, Xt, yt)
    b = everything(theta, X[perm], y[perm], sizes, act, head, w[perm], 0.1, Xt, yt)
    for key in ("objective", "gradient", "G", "H"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-14, err_msg=key)
    for key in ("I_gn", "I_h"):
        np.testing.assert_allclose(b[key], a[key][perm], rtol=1e-10, atol=1e-13, err_msg=key)
    np.testing.assert_allclose(b["S"], a["S"][:, perm], rtol=1e-10, atol=1e-13)


# ---------------------------------------------------------------------------------------
# influence
# ---------------------------------------------------------------------------------------

INFLUENCE_CASES = [
    (hidden, k, act, head, l2, damping, curvature)
    for hidden, k, act, head in (((4,), 3, "tanh", "softmax"), ((3, 2), 2, "gelu", "softmax"), ((3, 2), 2, "tanh", "squared"))
    for l2 in (0.0, 0.1)
    for damping in (0.0, 0.05)
    for curvature in ("gauss-newton", "hessian")
]


@pytest.mark.parametrize("hidden,k,act,head,l2,damping,curvature", INFLUENCE_CASES)
def test_influence_identity(hidden, k, act, head, l2, damping, curvature):
    """K (W I(z_m)) = -(grad l_m + 2 l2 M theta); for softmax at damping 0, on the complement of the flat directions."""
    sizes, theta, X, y, w, Xt, yt = make_case(hidden, k, act, head, seed=9)
    args = (theta, X, y, sizes, act, head, w, l2)
    I = ref.mlp_influence_params(*args, damping=damping, curvature=curvature)
    K = (ref.mlp_gauss_newton if curvature == "gauss-newton" else ref.mlp_hessian)(*args) + damping * np.eye(theta.size)
    B = ref.mlp_per_example_grads(*args[:6]) + 2 * l2 * ref.mlp_penalty_mask(sizes) * theta
    KI = w.sum() * I @ K  # rows (K W I(z_m))^T, K symmetric
    Nf = ref.mlp_flat_directions(sizes, head, l2)
    if damping == 0.0 and head == "softmax":
        np.testing.assert_allclose(B @ Nf, 0.0, atol=1e-13)  # the right-hand sides have no flat component
        np.testing.assert_allclose(I @ Nf, 0.0, atol=1e-12 * np.max(np.abs(I)))
    np.testing.assert_allclose(KI, -B, rtol=1e-8, atol=1e-9 * np.max(np.abs(B)))
    np.testing.assert_allclose(ref.mlp_influence_params(*args, damping=damping, curvature=curvature, idx=[3, ZERO_W]), I[[3, ZERO_W]])
    S = ref.mlp_influence_on_loss(theta, X, y, sizes, act, head, Xt, yt, w, l2, damping=damping, curvature=curvature)
    np.testing.assert_allclose(S, ref.mlp_per_example_grads(theta, Xt, yt, sizes, act, head) @ I.T, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_softmax_flat_directions(l2):
    hidden, k, act = (3, 2), 3, "gelu"
    sizes, theta, X, y, w, _, _ = make_case(hidden, k, act, "softmax", seed=10)
    p = theta.size
    args = (theta, X, y, sizes, act, "softmax", w, l2)
    # by hand: output layer Theta_L = [W_L | b_L] (k, 3) is the last 3k entries; bias shift = its last column
    shift = np.zeros((k, 3))
    shift[:, -1] = 1.0
    bias_shift = np.r_[np.zeros(p - shift.size), shift.reshape(-1)]
    shift[:, -1] = 0.0
    shift[:, 0] = 1.0
    weight_shift = np.r_[np.zeros(p - shift.size), shift.reshape(-1)]  # W_L + 1 e_1^T
    G, H = ref.mlp_gauss_newton(*args), ref.mlp_hessian(*args)
    scale = np.max(np.abs(G))
    np.testing.assert_allclose(G @ bias_shift, 0.0, atol=1e-14 * scale)
    np.testing.assert_allclose(H @ bias_shift, 0.0, atol=1e-14 * scale)
    if l2 > 0:
        assert np.max(np.abs(G @ weight_shift)) > 1e-3  # penalised: not flat
    else:
        np.testing.assert_allclose(G @ weight_shift, 0.0, atol=1e-14 * scale)
        np.testing.assert_allclose(H @ weight_shift, 0.0, atol=1e-14 * scale)
    Nf = ref.mlp_flat_directions(sizes, "softmax", l2)
    assert Nf.shape == (p, 1 if l2 > 0 else 3)
    np.testing.assert_allclose(Nf.T @ Nf, np.eye(Nf.shape[1]), atol=1e-15)
    np.testing.assert_allclose(Nf @ (Nf.T @ bias_shift), bias_shift, atol=1e-15)
    for j in range(Nf.shape[1]):
        np.testing.assert_allclose(ref.mlp_objective(theta + 0.7 * Nf[:, j], *args[1:]), ref.mlp_objective(*args), rtol=1e-13)
    assert ref.mlp_flat_directions(sizes, "squared", l2).shape == (p, 0)


# ---------------------------------------------------------------------------------------
# bad arguments
# ---------------------------------------------------------------------------------------


def test_bad_arguments():
    sizes, theta, X, y, w, _, _ = make_case((4,), 2, "tanh", "softmax")
    with pytest.raises(ValueError, match="sizes"):
        ref.mlp_n_params([3])
    with pytest.raises(ValueError, match="activation"):
        ref.mlp_forward(theta, X, sizes, "sigmoid")
    with pytest.raises(ValueError, match="head"):
        ref.mlp_losses(theta, X, y, sizes, "tanh", "hinge")
    with pytest.raises(ValueError, match="theta"):
        ref.mlp_forward(theta[:-1], X, sizes, "tanh")
    with pytest.raises(ValueError, match="columns"):
        ref.mlp_forward(theta, X[:, :2], sizes, "tanh")
    with pytest.raises(ValueError, match="class ids"):
        ref.mlp_losses(theta, X, y + 0.5, sizes, "tanh", "softmax")
    with pytest.raises(ValueError, match="shape"):
        ref.mlp_losses(theta, X, y, sizes, "tanh", "squared")  # k = 2 needs (n, 2)
    with pytest.raises(ValueError, match="curvature"):
        ref.mlp_influence_params(theta, X, y, sizes, "tanh", "softmax", curvature="fisher")
    with pytest.raises(ValueError, match="kind"):
        ref.mlp_predict(theta, X, sizes, "tanh", "softmax", kind="proba")
