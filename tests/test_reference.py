"""Validate python/upweight/reference.py against the definitions themselves (DESIGN.md 1-2).

Gradients and Hessians are checked against finite differences, the matrix-free HVP against
the explicit Hessian, and influences against central finite differences of exact refits.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest


def _load_reference():
    """Load python/upweight/reference.py directly (the package may need a compiled module)."""
    path = Path(__file__).resolve().parents[1] / "python" / "upweight" / "reference.py"
    spec = importlib.util.spec_from_file_location("upweight_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load_reference()

N, D, K = 30, 3, 3
ZERO_W = 4  # index of the zero-weight training point


def make_data(family, seed=0, n=N, d=D, k=K):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if family == "squared":
        y = X @ rng.normal(size=d) + 0.5 + rng.normal(size=n)
    elif family == "logistic":
        y = (rng.random(n) < 1 / (1 + np.exp(-(X @ rng.normal(size=d) * 0.7)))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(0.3 * X @ rng.normal(size=d) + 0.2)).astype(float)
    else:
        eta = 0.7 * X @ rng.normal(size=(d, k))
        P = np.exp(eta) / np.exp(eta).sum(axis=1, keepdims=True)
        y = np.array([rng.choice(k, p=p) for p in P])
        y[:k] = np.arange(k)  # every class present
    w = rng.uniform(0.5, 2.0, size=n)
    w[ZERO_W] = 0.0
    Xt = rng.normal(size=(5, d))
    if family == "multinomial":
        yt = rng.integers(0, k, size=5)
    elif family == "logistic":
        yt = rng.integers(0, 2, size=5).astype(float)
    elif family == "poisson":
        yt = rng.poisson(1.5, size=5).astype(float)
    else:
        yt = rng.normal(size=5)
    return X, y, w, Xt, yt


CASES = [(f, l2) for f in ref.FAMILIES for l2 in (0.0, 0.1)]
IDS = [f"{f}-l2={l2}" for f, l2 in CASES]


@pytest.fixture(params=CASES, ids=IDS)
def case(request):
    family, l2 = request.param
    X, y, w, Xt, yt = make_data(family)
    theta = ref.fit(X, y, family, w=w, l2=l2, tol=1e-13)
    return family, l2, X, y, w, Xt, yt, theta


def random_theta(family, rng, d=D, k=K):
    shape = (k, d + 1) if family == "multinomial" else (d + 1,)
    return 0.5 * rng.normal(size=shape)


def central_fd(f, x, h):
    x = np.asarray(x, dtype=float).reshape(-1)
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        cols.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)


# ---------------------------------------------------------------------------------------
# derivatives
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family,l2", CASES, ids=IDS)
def test_gradient_matches_finite_differences(family, l2):
    X, y, w, _, _ = make_data(family, seed=1)
    theta = random_theta(family, np.random.default_rng(2))
    g = ref.gradient(theta, X, y, family, w, l2)
    fd = central_fd(lambda t: ref.objective(t, X, y, family, w, l2), theta, 1e-6)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    # per-example gradients average to the data term of the gradient
    G = ref.per_example_grads(theta, X, y, family)
    fd_i = central_fd(lambda t: ref.losses(t, X, y, family), theta, 1e-6)
    np.testing.assert_allclose(G, fd_i, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("family,l2", CASES, ids=IDS)
def test_hessian_matches_finite_differences_and_hvp(family, l2):
    X, y, w, _, _ = make_data(family, seed=3)
    rng = np.random.default_rng(4)
    theta = random_theta(family, rng)
    H = ref.hessian(theta, X, y, family, w, l2)
    fd = central_fd(lambda t: ref.gradient(t, X, y, family, w, l2), theta, 1e-5)
    np.testing.assert_allclose(H, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(H, H.T, atol=1e-14)
    p = theta.size
    v = rng.normal(size=p)
    np.testing.assert_allclose(ref.hvp(theta, X, y, family, v, w, l2), H @ v, rtol=1e-12, atol=1e-12)
    V = rng.normal(size=(p, 4))
    np.testing.assert_allclose(ref.hvp(theta, X, y, family, V, w, l2), H @ V, rtol=1e-12, atol=1e-12)


def test_theta_accepted_flat_or_natural():
    X, y, w, _, _ = make_data("multinomial", seed=5)
    theta = random_theta("multinomial", np.random.default_rng(6))
    assert ref.linear_predictor(theta, X, "multinomial").shape == (N, K)
    np.testing.assert_array_equal(
        ref.gradient(theta, X, y, "multinomial", w, 0.1),
        ref.gradient(theta.reshape(-1), X, y, "multinomial", w, 0.1),
    )
    P = ref.mean_response(theta, X, "multinomial")
    np.testing.assert_allclose(P.sum(axis=1), 1.0)


def test_losses_numerically_stable():
    X = np.array([[800.0], [-800.0]])
    for family, y in (("logistic", np.array([1.0, 0.0])), ("multinomial", np.array([1, 0]))):
        theta = np.array([1.0, 0.0]) if family == "logistic" else np.array([[-1.0, 0.0], [1.0, 0.0]])
        l = ref.losses(theta, X, y, family)
        assert np.all(np.isfinite(l)) and np.all(l >= 0) and np.all(l < 1e-12)


# ---------------------------------------------------------------------------------------
# fit and influence
# ---------------------------------------------------------------------------------------


def test_fit_gradient_is_tiny(case):
    family, l2, X, y, w, _, _, theta = case
    assert np.max(np.abs(ref.gradient(theta, X, y, family, w, l2))) < 1e-10
    if family == "multinomial":
        # pseudo-inverse Newton from zero keeps the intercepts (l2 == 0: whole rows) sum-zero
        np.testing.assert_allclose(theta[:, -1].sum(), 0.0, atol=1e-10)
        if l2 == 0.0:
            np.testing.assert_allclose(theta.sum(axis=0), 0.0, atol=1e-10)


def test_squared_fit_one_newton_step():
    X, y, w, _, _ = make_data("squared", seed=7)
    theta = ref.fit(X, y, "squared", w=w, l2=0.1, max_iter=1)
    assert np.max(np.abs(ref.gradient(theta, X, y, "squared", w, 0.1))) < 1e-10


def refit(X, y, family, w, l2, m, eps):
    w2 = w.copy()
    w2[m] += eps
    k = K if family == "multinomial" else None
    return ref.fit(X, y, family, w=w2, l2=l2, n_classes=k, tol=1e-13).reshape(-1)


def test_influence_params_matches_refits(case):
    family, l2, X, y, w, _, _, theta = case
    I = ref.influence_params(theta, X, y, family, w, l2)
    assert I.shape == (N, theta.size)
    h = 1e-4
    for m in range(N):
        fd = (refit(X, y, family, w, l2, m, h) - refit(X, y, family, w, l2, m, -h)) / (2 * h)
        np.testing.assert_allclose(I[m], fd, rtol=1e-4, atol=1e-7 * np.max(np.abs(I)))
    np.testing.assert_allclose(ref.influence_params(theta, X, y, family, w, l2, idx=[3, ZERO_W]), I[[3, ZERO_W]])


def test_zero_weight_point_is_a_new_point(case):
    family, l2, X, y, w, _, _, theta = case
    I = ref.influence_params(theta, X, y, family, w, l2)
    I_new = ref.influence_new_point(theta, X, y, family, X[ZERO_W], y[ZERO_W], w, l2)
    np.testing.assert_allclose(I[ZERO_W], I_new, rtol=1e-12, atol=1e-14)
    # dropping the zero-weight point changes neither the fit nor anyone's influence
    keep = np.arange(N) != ZERO_W
    I_drop = ref.influence_new_point(theta, X[keep], y[keep], family, X[ZERO_W], y[ZERO_W], w[keep], l2)
    np.testing.assert_allclose(I_drop, I_new, rtol=1e-10, atol=1e-13)


def test_score_matrix_and_self_influence(case):
    family, l2, X, y, w, Xt, yt, theta = case
    I = ref.influence_params(theta, X, y, family, w, l2)
    Gt = ref.per_example_grads(theta, Xt, yt, family)
    S = ref.influence_on_loss(theta, X, y, family, Xt, yt, w, l2)
    assert S.shape == (len(Xt), N)
    np.testing.assert_allclose(S, Gt @ I.T, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ref.influence_on(theta, X, y, family, Gt[2], w, l2), S[2], rtol=1e-10, atol=1e-13)
    G = ref.per_example_grads(theta, X, y, family)
    np.testing.assert_allclose(ref.self_influence(theta, X, y, family, w, l2), np.sum(G * I, axis=1), rtol=1e-10, atol=1e-13)
    if l2 == 0.0:
        assert np.all(ref.self_influence(theta, X, y, family, w, l2) <= 1e-15)


def softmax_jacobian(theta, x):
    """d p / d theta_flat at one point x: (diag(p) - p p^T) (x) z^T, shape (k, p)."""
    z = np.append(x, 1.0)
    p = ref.mean_response(theta, x[None, :], "multinomial")[0]
    return np.kron(np.diag(p) - np.outer(p, p), z[None, :])


@pytest.mark.parametrize("l2", [0.0, 0.1])
def test_multinomial_influence_on_probabilities(l2):
    family = "multinomial"
    X, y, w, Xt, _ = make_data(family)
    theta = ref.fit(X, y, family, w=w, l2=l2, tol=1e-13)
    I = ref.influence_params(theta, X, y, family, w, l2)
    J = softmax_jacobian(theta, Xt[0])
    # the Jacobian is right
    fd_J = central_fd(lambda t: ref.mean_response(t, Xt[:1], family)[0], theta, 1e-6)
    np.testing.assert_allclose(J, fd_J, rtol=1e-6, atol=1e-9)
    # the null direction (a constant added to all intercepts) does not move probabilities
    null = np.zeros((K, D + 1))
    null[:, -1] = 1.0
    np.testing.assert_allclose(J @ null.reshape(-1), 0.0, atol=1e-15)
    np.testing.assert_allclose(ref.influence_on(theta, X, y, family, J, w, l2), J @ I.T, rtol=1e-10, atol=1e-14)
    h = 1e-4
    for m in (0, 7, ZERO_W, 21):
        def probs(eps):
            t = refit(X, y, family, w, l2, m, eps)
            return ref.mean_response(t, Xt[:1], family)[0]

        fd = (probs(h) - probs(-h)) / (2 * h)
        np.testing.assert_allclose(J @ I[m], fd, rtol=1e-4, atol=1e-8)
        # and does not depend on adding a null-direction component to I
        np.testing.assert_allclose(J @ (I[m] + 3.0 * null.reshape(-1)), fd, rtol=1e-4, atol=1e-8)


def test_duplicate_point_equals_weight_two_and_order_invariance():
    family, l2 = "logistic", 0.1
    X, y, _, Xt, yt = make_data(family, seed=8)
    w = np.ones(N)
    w2 = w.copy()
    w2[0] = 2.0
    Xd, yd = np.vstack([X, X[:1]]), np.append(y, y[0])
    t2 = ref.fit(X, y, family, w=w2, l2=l2, tol=1e-13)
    td = ref.fit(Xd, yd, family, l2=l2, tol=1e-13)
    np.testing.assert_allclose(t2, td, atol=1e-10)
    S2 = ref.influence_on_loss(t2, X, y, family, Xt, yt, w2, l2)
    Sd = ref.influence_on_loss(td, Xd, yd, family, Xt, yt, None, l2)
    np.testing.assert_allclose(S2, Sd[:, :N], rtol=1e-8, atol=1e-12)
    perm = np.random.default_rng(9).permutation(N)
    tp = ref.fit(X[perm], y[perm], family, w=w2[perm], l2=l2, tol=1e-13)
    np.testing.assert_allclose(tp, t2, atol=1e-10)
    Sp = ref.influence_on_loss(tp, X[perm], y[perm], family, Xt, yt, w2[perm], l2)
    np.testing.assert_allclose(Sp, S2[:, perm], rtol=1e-8, atol=1e-12)


def test_seed_example_line_fit():
    X = np.array([[0.0], [1.0], [2.0]])
    y = np.array([0.0, 1.5, 2.0])
    theta = ref.fit(X, y, "squared")
    np.testing.assert_allclose(theta, [1.0, 1.0 / 6.0], atol=1e-12)
    np.testing.assert_allclose(theta, np.polyfit(X[:, 0], y, 1), atol=1e-12)
    # influences of the seed points against central differences of exact refits
    I = ref.influence_params(theta, X, y, "squared")
    h = 1e-5
    for m in range(3):
        fd = (refit(X, y, "squared", np.ones(3), 0.0, m, h) - refit(X, y, "squared", np.ones(3), 0.0, m, -h)) / (2 * h)
        np.testing.assert_allclose(I[m], fd, rtol=1e-6, atol=1e-9)


def test_koh_liang_conversion():
    family = "logistic"
    X, y, _, Xt, yt = make_data(family, seed=10)
    theta = ref.fit(X, y, family, tol=1e-13)
    H = ref.hessian(theta, X, y, family)
    G = ref.per_example_grads(theta, X, y, family)
    I_up = -np.linalg.solve(H, G.T).T  # Koh & Liang, mean-loss Hessian
    np.testing.assert_allclose(N * ref.influence_params(theta, X, y, family), I_up, rtol=1e-10, atol=1e-13)
