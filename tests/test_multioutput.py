"""Multi-output regression networks: ``MLPRegressor`` fitted on y of shape (n, t), t >= 2 outputs
with l = ||h - y||^2 (DESIGN-networks.md section 1, squared head with k = t).

Checked: influence = the derivative of refitting with a point's weight changed; with no hidden
layer, t independent ``LinearRegression`` fits, one per target column (the loss separates into
per-output blocks of theta); predictions, scores and the shapes of every query with t outputs;
bad targets refused naming the argument. Kernels against the NumPy reference:
tests/test_networks.py (k = 2 squared outputs among its heads); the Rust kernels: rust/tests/mlp.rs.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import upweight as uw
from upweight import _core


def regression(n=60, d=3, t=2, seed=0):
    """Smooth targets, one column per output, and weights in [0.5, 2]."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    cols = [np.sin(X[:, 0]) + 0.5 * X[:, 1] * X[:, 2], np.cos(X[:, 1]) - 0.3 * X[:, 0], X[:, 2] ** 2][:t]
    Y = np.column_stack(cols) + 0.2 * rng.standard_normal((n, t))
    return X, Y, rng.uniform(0.5, 2.0, n)


def fitted(X, Y, w, hidden=(3,), l2=0.01, **kw):
    return uw.MLPRegressor(hidden=hidden, l2=l2, tol=1e-13, random_state=1, **kw).fit(X, Y, sample_weight=w)


def test_influence_is_the_derivative_of_refitting():
    """Exact Hessian, no damping, at a tight minimum: I(z_m) = d theta / d w_m, against central
    differences of warm-started refits (h = 1e-3: O(h^2) ~1e-6 of max |FD|; asserted 1e-5)."""
    X, Y, w = regression()
    net = fitted(X, Y, w)
    assert net.converged_ and net.n_outputs_ == 2 and net.sizes() == [3, 3, 2]
    inf = uw.Influence(net, X, Y, w, damping=0.0, curvature="hessian")
    h = 1e-3
    for m in (0, 17, len(Y) - 1):
        thetas = []
        for s in (h, -h):
            wp = w.copy()
            wp[m] += s
            refit = copy.deepcopy(net).set_params(warm_start=True)
            thetas.append(refit.fit(X, Y, sample_weight=wp).get_theta())
        fd = (thetas[0] - thetas[1]) / (2 * h)
        np.testing.assert_allclose(inf.params([m])[0], fd, rtol=0, atol=1e-5 * np.abs(fd).max())
    # on the loss at test points: grad l_t . I(z_m), with l_t summing the outputs' squared errors
    Xt, Yt, _ = regression(n=4, seed=9)
    G = inf.loss_grads(Xt, Yt)
    np.testing.assert_allclose(inf.on_loss(Xt, Yt), G @ inf.params().T, rtol=1e-10, atol=1e-12)


def test_no_hidden_layer_is_one_linear_regression_per_target():
    """hidden=(): theta is the t LinearRegression thetas stacked, and every influence is theirs:
    params by blocks, on_loss / self-influence summed over the targets, on_prediction per output."""
    X, Y, w = regression(n=40, d=4, t=3, seed=2)
    l2 = 0.05
    lrs = [uw.LinearRegression(l2=l2).fit(X, Y[:, c], sample_weight=w) for c in range(3)]
    net = uw.MLPRegressor(hidden=(), l2=l2, tol=1e-12).fit(X, Y, sample_weight=w)
    np.testing.assert_allclose(net.get_theta(), np.concatenate([lr.get_theta() for lr in lrs]), rtol=0, atol=1e-9)
    net.set_theta(np.concatenate([lr.get_theta() for lr in lrs]))  # the same point exactly
    inf = uw.Influence(net, X, Y, w, damping=0.0)
    infs = [uw.Influence(lr, X, Y[:, c], w) for c, lr in enumerate(lrs)]
    np.testing.assert_allclose(inf.params(), np.hstack([i.params() for i in infs]), rtol=1e-9, atol=1e-12)
    Xt, Yt, _ = regression(n=5, d=4, t=3, seed=3)
    np.testing.assert_allclose(inf.on_loss(Xt, Yt), sum(i.on_loss(Xt, Yt[:, c]) for c, i in enumerate(infs)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(inf.self_influence(), sum(i.self_influence() for i in infs), rtol=1e-9, atol=1e-12)
    S = inf.on_prediction(Xt)
    assert S.shape == (5, 3, 40)
    for c, i in enumerate(infs):
        np.testing.assert_allclose(S[:, c, :], i.on_prediction(Xt), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(net.predict(Xt), np.column_stack([lr.predict(Xt) for lr in lrs]), rtol=1e-12, atol=1e-12)
    # a new point with its t targets is the sum of the blocks too
    np.testing.assert_allclose(inf.new_point(Xt[0], Yt[0]), np.concatenate([i.new_point(Xt[0], Yt[0, c]) for c, i in enumerate(infs)]),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.filterwarnings("ignore::upweight.ConvergenceWarning")  # (the max_iter=50 fits)
def test_predictions_scores_and_query_shapes():
    X, Y, w = regression(n=50)
    net = fitted(X, Y, w, hidden=(4,))
    assert net.predict(X).shape == (50, 2) and net.loss(X, Y).shape == (50,)
    P = net.predict(X)
    np.testing.assert_allclose(net.loss(X, Y), ((P - Y) ** 2).sum(axis=1), rtol=1e-12)
    r2 = [1 - np.average((Y[:, c] - P[:, c]) ** 2, weights=w) / np.average((Y[:, c] - np.average(Y[:, c], weights=w)) ** 2, weights=w)
          for c in range(2)]
    assert net.score(X, Y, sample_weight=w) == pytest.approx(np.mean(r2), rel=1e-12)
    inf = uw.Influence(net, X, Y, w)  # default: damped Gauss-Newton
    top = inf.top_k(X[:3], Y[:3], k=4)
    S = inf.on_loss(X[:3], Y[:3])
    np.testing.assert_array_equal(top.helpful_idx, np.argsort(S, axis=1)[:, :4])
    assert inf.new_point(X[0], Y[0]).shape == (net.n_params,)
    assert inf.new_point(X[:2], Y[:2]).shape == (2, net.n_params)
    assert inf.on_prediction(X[:3], kind="linear").shape == (3, 2, 50)
    # the PBRF of a multi-output net: its central difference is the default influence
    up, down = inf.pbrf(5, [1e-4, -1e-4])
    I = inf.params([5])[0]
    np.testing.assert_allclose((up - down) / 2e-4, I, rtol=0, atol=1e-6 * np.abs(I).max())
    # one target column is one target: (n, 1) and (n,) fit the same network, predict gives (n,)
    one = uw.MLPRegressor(hidden=(2,), random_state=0, max_iter=50).fit(X, Y[:, :1])
    assert one.n_outputs_ == 1 and one.predict(X).shape == (50,)
    np.testing.assert_array_equal(one.get_theta(), uw.MLPRegressor(hidden=(2,), random_state=0, max_iter=50).fit(X, Y[:, 0]).get_theta())


def test_parameters_trained_elsewhere_declare_the_outputs():
    X, Y, w = regression(n=30, t=3)
    net = uw.MLPRegressor(hidden=(2,))
    theta = np.random.default_rng(0).normal(size=2 * (3 + 1) + 3 * (2 + 1))  # sizes [3, 2, 3]
    net.set_theta(theta, n_features=3)
    assert net.n_outputs_ == 3 and net.sizes() == [3, 2, 3] and net.predict(X).shape == (30, 3)
    assert uw.Influence(net, X, Y, w).params([0]).shape == (1, theta.size)


@pytest.mark.filterwarnings("ignore::upweight.ConvergenceWarning")
def test_bad_targets_are_refused_naming_the_argument():
    X, Y, w = regression(n=30)
    net = fitted(X, Y, w, hidden=(2,), max_iter=20)
    with pytest.raises(uw.InputError, match=r"^y: expected a 1-d array \(one target\) or a 2-d array"):
        uw.MLPRegressor().fit(X, Y[:, :, None])
    with pytest.raises(uw.InputError, match=r"^y: has 29 rows, expected 30"):
        uw.MLPRegressor().fit(X, Y[:29])
    with pytest.raises(uw.InputError, match="^y: contains NaN"):
        uw.MLPRegressor().fit(X, np.where(np.arange(60).reshape(30, 2) == 7, np.nan, Y))
    with pytest.raises(uw.InputError, match=r"^y_test: has 3 columns, but MLPRegressor was fitted on 2 targets"):
        uw.Influence(net, X, Y, w).on_loss(X[:2], np.ones((2, 3)))
    pass_2d = r"^y_test: has 1 column, but MLPRegressor was fitted on 2 targets \(pass y of shape \(n, 2\)\)"
    with pytest.raises(uw.InputError, match=pass_2d):
        uw.Influence(net, X, Y, w).top_k(X[:2], np.ones(2))
    with pytest.raises(uw.InputError, match=r"^y: has 1 column, but MLPRegressor was fitted on 2 targets"):
        uw.Influence(net, X, Y[:, 0], w)
    with pytest.raises(uw.InputError, match=r"^y_test: has 3 rows, expected 2"):
        uw.Influence(net, X, Y, w).on_loss(X[:2], Y[:3])
    # models with one target per row say so
    with pytest.raises(uw.InputError, match="^y: expected a 1-d array"):
        uw.LinearRegression().fit(X, Y)
    with pytest.raises(uw.InputError, match="^y: expected a 1-d array"):
        uw.MLPClassifier(hidden=(2,)).fit(X, np.zeros((30, 2)))
    # the core refuses target columns that do not fit the model, naming y
    with pytest.raises(uw.InputError, match="^y: has 2 columns, but a squared GLM takes one target per row"):
        _core.Model.glm("squared", 1, 3).losses(np.zeros(4), X, Y)
    with pytest.raises(uw.InputError, match="^y: has 2 columns, but the network's squared head has 3 outputs"):
        _core.mlp([3, 2, 3], "tanh", "squared", "gauss-newton").losses(np.zeros(2 * 4 + 3 * 3), X, Y)
    with pytest.raises(uw.InputError, match="^y: has 2 columns, but the network's multinomial head takes one target per row"):
        _core.mlp([3, 2], "tanh", "multinomial", "gauss-newton").losses(np.zeros(8), X, np.zeros((30, 2)))
