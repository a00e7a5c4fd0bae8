"""Leave-out estimates (one Newton step on the objective without the point or group): against
the NumPy reference (explicit gradient and Hessian of the left-out objective), against exact
refits (equal for squared loss, where one step is the refit), and approximate LOO CV against
exact LOO CV."""

import numpy as np
import pytest
import scipy.sparse as sp

import upweight as uw
from upweight import reference as ref
from upweight.errors import InputError, SingularHessianError
from upweight.validation import leave_k_out, leave_one_out

FAMILIES = {
    "squared": uw.LinearRegression,
    "logistic": uw.LogisticRegression,
    "poisson": uw.PoissonRegression,
}


def make(family, n=60, d=4, seed=0, k=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.array([1.0, 10.0, 0.1, 3.0])[:d]  # mixed units
    eta = X @ (rng.normal(size=d) / np.array([1.0, 10.0, 0.1, 3.0])[:d]) * 0.7
    if family == "squared":
        y = eta + rng.normal(size=n)
    elif family == "logistic":
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    elif family == "poisson":
        y = rng.poisson(np.exp(0.3 * eta)).astype(float)
    else:
        y = rng.integers(0, k, size=n).astype(float)
    return X, y


def fitted(family, l2=1e-2, w=None, **data):
    X, y = make(family, **data)
    model = uw.LogisticRegression(l2=l2, n_classes=3) if family == "multinomial" else FAMILIES[family](l2=l2)
    model.fit(X, y, sample_weight=w)
    return model, X, y


def weights(n, seed=1):
    return np.random.default_rng(seed).uniform(0.2, 3.0, size=n)


@pytest.mark.parametrize("family", ["squared", "logistic", "poisson", "multinomial"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("l2", [0.0, 1e-2])
def test_one_step_matches_the_reference(family, weighted, l2):
    n = 50
    w = weights(n) if weighted else None
    model, X, y = fitted(family, l2=l2, w=w, n=n)
    inf = uw.Influence(model, X, y, w)
    got = inf.loo_params()
    want = ref.loo_one_step(model.get_theta(), X, y, family, w, l2)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-8 * scale
    # a subset gives the same rows
    idx = [3, 0, 17]
    np.testing.assert_allclose(inf.loo_params(idx), got[idx], rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_squared_loss_one_step_is_the_exact_refit(weighted, l2):
    n = 40
    w = weights(n) if weighted else None
    model, X, y = fitted("squared", l2=l2, w=w, n=n)
    inf = uw.Influence(model, X, y, w)
    got = inf.loo_params()
    # closed form: the weighted ridge normal equations without m (mean renormalised)
    Z = np.hstack([X, np.ones((n, 1))])
    wv = np.ones(n) if w is None else w
    mask = np.r_[np.ones(X.shape[1]), 0.0]
    for m in range(n):
        wm = wv.copy()
        wm[m] = 0.0
        Wm = wm.sum()
        A = 2 * (Z.T * wm) @ Z / Wm + 2 * l2 * np.diag(mask)
        theta_m = np.linalg.solve(A, 2 * (Z.T * wm) @ y / Wm)
        np.testing.assert_allclose(got[m], theta_m - model.get_theta(), rtol=1e-8, atol=1e-10)
    # and the package's own refits
    loo = leave_one_out(model, X, y, idx=[0, 5, 9], sample_weight=w)
    np.testing.assert_allclose(got[[0, 5, 9]], loo.actual_params, rtol=1e-7, atol=1e-10)


def test_sum_of_losses_objective_matches_sklearn_refits():
    from sklearn.linear_model import Ridge

    X, y = make("squared", n=30)
    est = Ridge(alpha=2.0).fit(X, y)
    inf = uw.Influence.from_sklearn(est, X, y)
    got = inf.loo_params()
    for m in (0, 7, 29):
        keep = np.arange(30) != m
        r = Ridge(alpha=2.0).fit(X[keep], y[keep])
        np.testing.assert_allclose(got[m], np.r_[r.coef_, r.intercept_] - np.r_[est.coef_, est.intercept_], rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("family", ["logistic", "poisson", "multinomial"])
def test_one_step_is_closer_to_the_refit_than_influence(family):
    n = 80
    model, X, y = fitted(family, l2=1e-2, n=n)
    Xt, yt = make(family, n=7, seed=5)
    idx = list(range(0, n, 4))
    loo = leave_one_out(model, X, y, idx=idx, X_test=Xt, y_test=yt)
    inf = uw.Influence(model, X, y)
    one_step = inf.loo_on_loss(Xt, yt, idx=idx).T
    err_step = np.abs(one_step - loo.actual_loss).max()
    err_inf = np.abs(loo.predicted_loss - loo.actual_loss).max()
    assert err_step < 0.3 * err_inf, (err_step, err_inf)
    assert uw.compare(one_step, loo.actual_loss).pearson > 0.999


@pytest.mark.parametrize("family", ["squared", "logistic", "multinomial"])
def test_on_loss_and_prediction_evaluate_at_the_stepped_parameters(family):
    model, X, y = fitted(family, n=40)
    Xt, yt = make(family, n=5, seed=9)
    inf = uw.Influence(model, X, y)
    delta = inf.loo_params()
    theta = model.get_theta()
    base = ref.losses(theta, Xt, yt, family)
    want = np.stack([ref.losses(theta + dm, Xt, yt, family) - base for dm in delta], axis=1)
    np.testing.assert_allclose(inf.loo_on_loss(Xt, yt), want, rtol=1e-9, atol=1e-12)
    mean0 = ref.mean_response(theta, Xt, family)
    pred = np.stack([ref.mean_response(theta + dm, Xt, family) - mean0 for dm in delta], axis=-1)
    np.testing.assert_allclose(inf.loo_on_prediction(Xt), pred, rtol=1e-9, atol=1e-12)
    eta0 = ref.linear_predictor(theta, Xt, family)
    lin = np.stack([ref.linear_predictor(theta + dm, Xt, family) - eta0 for dm in delta], axis=-1)
    np.testing.assert_allclose(inf.loo_on_prediction(Xt, kind="linear"), lin, rtol=1e-9, atol=1e-12)


def test_loo_top_k_selects_from_the_full_matrix():
    model, X, y = fitted("logistic", n=1300)  # more than two row blocks
    Xt, yt = make("logistic", n=6, seed=3)
    inf = uw.Influence(model, X, y)
    S = inf.loo_on_loss(Xt, yt)
    top = inf.loo_top_k(Xt, yt, k=5)
    for t in range(6):
        np.testing.assert_array_equal(top.helpful_idx[t], np.argsort(-S[t], kind="stable")[:5])
        np.testing.assert_array_equal(top.harmful_idx[t], np.argsort(S[t], kind="stable")[:5])
        np.testing.assert_allclose(top.helpful[t], S[t, top.helpful_idx[t]], rtol=1e-12)
    assert (top.helpful[:, 0] > 0).all()  # removing a helpful point raises the loss
    # two segments merged = one pass
    a, b = inf.loo_top_k(Xt, yt, k=5, rows=(0, 512)), inf.loo_top_k(Xt, yt, k=5, rows=(512, 1300))
    merged = a.merge(b, 5)
    np.testing.assert_array_equal(merged.helpful_idx, top.helpful_idx)
    np.testing.assert_array_equal(merged.harmful_idx, top.harmful_idx)


@pytest.mark.parametrize("weighted", [False, True])
def test_groups_exact_for_squared_loss_and_singletons_match(weighted):
    n = 45
    w = weights(n) if weighted else None
    model, X, y = fitted("squared", l2=0.1, w=w, n=n)
    Xt, yt = make("squared", n=4, seed=2)
    inf = uw.Influence(model, X, y, w)
    groups = [[0, 3, 7, 8], [10], list(range(20, 40))]
    got = inf.leave_out_params(groups)
    for g, idx in enumerate(groups):
        lk = leave_k_out(model, X, y, idx, X_test=Xt, y_test=yt, sample_weight=w)
        np.testing.assert_allclose(got[g], lk.actual_params, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(inf.leave_out_on_loss(Xt, yt, [idx])[:, 0], lk.actual_loss, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(got[1], inf.loo_params([10])[0], rtol=1e-9, atol=1e-13)
    # labels: one group per distinct label
    labels = np.where(np.arange(n) < 20, "a", "b")
    by_label = inf.leave_out_params(labels)
    np.testing.assert_allclose(by_label, inf.leave_out_params([list(range(20)), list(range(20, n))]), rtol=1e-12)


@pytest.mark.parametrize("family", ["logistic", "multinomial"])
def test_groups_match_the_reference(family):
    model, X, y = fitted(family, n=50)
    inf = uw.Influence(model, X, y)
    groups = [[1, 2, 3], list(range(10, 30))]
    want = ref.loo_one_step(model.get_theta(), X, y, family, None, 1e-2, groups)
    np.testing.assert_allclose(inf.leave_out_params(groups), want, rtol=1e-8, atol=1e-10 * np.abs(want).max())


def test_approximate_loo_cv_is_exact_loo_cv_for_squared_loss_and_close_for_logistic():
    model, X, y = fitted("squared", l2=0.1, n=40)
    alo = uw.approximate_loo_cv(model, X, y)
    exact = []
    for m in range(40):
        keep = np.arange(40) != m
        r = uw.LinearRegression(l2=0.1).fit(X[keep], y[keep])
        exact.append((r.predict(X[m:m + 1])[0] - y[m]) ** 2)
    np.testing.assert_allclose(alo.losses, exact, rtol=1e-7)
    assert alo.estimate == pytest.approx(np.mean(exact), rel=1e-8)
    assert alo.estimate > alo.training_loss

    model, X, y = fitted("logistic", l2=1e-2, n=120)
    alo = uw.approximate_loo_cv(model, X, y)
    exact = []
    for m in range(120):
        keep = np.arange(120) != m
        r = uw.LogisticRegression(l2=1e-2).fit(X[keep], y[keep])
        exact.append(r.loss(X[m:m + 1], y[m:m + 1])[0])
    assert alo.estimate == pytest.approx(np.mean(exact), rel=1e-3)
    assert np.abs(alo.losses - exact).max() < 1e-2


@pytest.mark.parametrize("family", ["logistic", "multinomial"])
def test_storage_and_solver_do_not_change_the_answer(tmp_path, family):
    model, X, y = fitted(family, n=70)
    Xt, yt = make(family, n=3, seed=4)
    base = uw.Influence(model, X, y, solver="direct")
    want, want_loss = base.loo_params(), base.loo_on_loss(Xt, yt)
    path = tmp_path / "X.npy"
    np.save(path, X)
    for Xs, kw in [(X, {"solver": "cg"}), (sp.csr_matrix(X), {}), (str(path), {})]:
        inf = uw.Influence(model, Xs, y, **kw)
        np.testing.assert_allclose(inf.loo_params(), want, rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(inf.loo_on_loss(Xt, yt), want_loss, rtol=1e-8, atol=1e-12)
    inf32 = uw.Influence(model, X.astype(np.float32), y)
    np.testing.assert_allclose(inf32.loo_params(), want, rtol=1e-4, atol=1e-6)


def test_units_of_the_features_do_not_matter():
    model, X, y = fitted("logistic", n=60)
    Xt, yt = make("logistic", n=3, seed=4)
    a = uw.Influence(model, X, y).loo_on_loss(Xt, yt)
    s = np.array([1e3, 1e-2, 1.0, 50.0])
    m2 = uw.LogisticRegression(l2=0.0).fit(X * s, y)
    m1 = uw.LogisticRegression(l2=0.0).fit(X, y)
    a = uw.Influence(m1, X, y).loo_on_loss(Xt, yt)
    b = uw.Influence(m2, X * s, y).loo_on_loss(Xt * s, yt)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-12)


def test_a_point_that_alone_determines_a_parameter_is_refused():
    X, y = make("squared", n=20)
    X = np.hstack([X, np.zeros((20, 1))])
    X[4, -1] = 1.0  # only point 4 sees this feature: without it the refit is not unique
    model = uw.LinearRegression().fit(X, y)
    inf = uw.Influence(model, X, y)
    with pytest.raises(SingularHessianError, match="training point 4"):
        inf.loo_params()
    assert np.isfinite(inf.loo_params([0, 1])).all()


def test_bad_groups_are_named():
    model, X, y = fitted("logistic", n=30)
    inf = uw.Influence(model, X, y)
    with pytest.raises(InputError, match=r"groups\[1\]"):
        inf.leave_out_params([[0], [40]])
    with pytest.raises(InputError, match=r"groups\[0\]: has repeated"):
        inf.leave_out_params([[1, 1]])
    with pytest.raises(InputError, match="groups"):
        inf.leave_out_params([])
    with pytest.raises(InputError, match="kind"):
        inf.loo_on_prediction(X[:2], kind="logit")


def test_hidden_free_network_equals_the_multinomial_glm():
    X, y = make("multinomial", n=60)
    glm = uw.LogisticRegression(l2=1e-2, n_classes=3).fit(X, y)
    net = uw.MLPClassifier(hidden=(), l2=1e-2, random_state=0).fit(X, y)
    Xt, yt = make("multinomial", n=4, seed=8)
    a = uw.Influence(glm, X, y).loo_on_loss(Xt, yt)
    b = uw.Influence(net, X, y, damping=0.0).loo_on_loss(Xt, yt)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("head, k", [("squared", 2), ("softmax", 3)])
def test_network_one_step_is_the_gauss_newton_step(head, k):
    """For a network the step uses the Gauss-Newton curvature of the objective without the point,
    (W'/W) G_(-m) + damping I (the damping as in influence), and the removed point's gradient
    with its penalty term: checked against the NumPy reference at arbitrary (non-optimal)
    parameters, weighted, with a multi-output squared head and a softmax head (damped: the
    softmax head's flat directions then need no special care)."""
    sizes, act, l2, damping = [3, 4, k], "tanh", 0.02, 0.05
    rng = np.random.default_rng(3)
    n = 30
    X = rng.normal(size=(n, 3))
    y = rng.integers(0, k, size=n).astype(float) if head == "softmax" else rng.normal(size=(n, k))
    w = rng.uniform(0.5, 1.5, size=n)
    est = uw.MLPClassifier(hidden=(4,), l2=l2) if head == "softmax" else uw.MLPRegressor(hidden=(4,), l2=l2)
    if head == "softmax":
        est.n_classes_param = k
        est.check_targets(y, n, fitting=True)
    theta = rng.normal(scale=0.5, size=ref.mlp_n_params(sizes))
    est.set_theta(theta, n_features=3)
    inf = uw.Influence(est, X, y, w, damping=damping, solver="direct")
    W = w.sum()
    pen = 2 * l2 * ref.mlp_penalty_mask(sizes) * theta
    G_all = ref.mlp_per_example_grads(theta, X, y, sizes, act, head)
    got = inf.loo_params([0, 7, 29])
    for row, m in enumerate([0, 7, 29]):
        wm = w.copy()
        wm[m] = 0.0
        eps = w[m] / W
        Gm = (1 - eps) * ref.mlp_gauss_newton(theta, X, y, sizes, act, head, w=wm, l2=l2) + damping * np.eye(theta.size)
        want = np.linalg.solve(Gm, eps * (G_all[m] + pen))
        np.testing.assert_allclose(got[row], want, rtol=1e-8, atol=1e-12 * np.abs(want).max())


def test_without_a_basis_each_removal_is_one_cg_solve():
    """Above 4096 parameters under solver="cg" no p x p matrix is formed: each removal is one CG
    solve of the left-out curvature. Same answers as the basis of the direct solver."""
    rng = np.random.default_rng(0)
    n, d = 40, 4100
    X = rng.normal(size=(n, d)) / np.sqrt(d)
    y = (rng.random(n) < 0.5).astype(float)
    model = uw.LogisticRegression(l2=0.05).fit(X, y)
    Xt, yt = X[:3] + 0.01, y[:3]
    direct = uw.Influence(model, X, y, solver="direct")
    cg = uw.Influence(model, X, y, solver="cg")
    idx = [0, 5, 39]
    want = direct.loo_params(idx)
    np.testing.assert_allclose(cg.loo_params(idx), want, rtol=1e-6, atol=1e-9 * np.abs(want).max())
    np.testing.assert_allclose(cg.loo_on_loss(Xt, yt, idx=idx), direct.loo_on_loss(Xt, yt, idx=idx), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(cg.leave_out_params([[1, 2, 3]]), direct.leave_out_params([[1, 2, 3]]), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(cg.loo_losses(idx), direct.loo_losses(idx), rtol=1e-8)
