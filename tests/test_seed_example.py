"""The seed's worked example: three points (0, 0), (1, 1.5), (2, 2), squared loss, y = m x + b.

Everything is derived by hand in exact rational arithmetic (``fractions.Fraction``):

    Z = [[0, 1], [1, 1], [2, 1]],  Z^T Z = [[5, 3], [3, 3]],  (Z^T Z)^{-1} = [[3, -3], [-3, 5]] / 6
    theta = (Z^T Z)^{-1} Z^T y = (1, 1/6)                         (the line y = x + 1/6)
    r_m = eta_m - y_m = (1/6, -1/3, 1/6)
    L(theta) = (1/3) sum_i (eta_i - y_i)^2,  H = (2/3) Z^T Z,  grad l(z_m) = 2 r_m z_m,  W = 3
    I(z_m) = -H^{-1} grad l(z_m) / W = -(Z^T Z)^{-1} z_m r_m
           = (1/12, -5/36), (0, 1/9), (-1/12, 1/36)
    S[t, m] = grad l(z_t) . I(z_m) = 2 r_t z_t . I(z_m)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from fractions import Fraction as F

import numpy as np
import pytest

import upweight as uw
from upweight.examples import seed_example

X = np.array([[0.0], [1.0], [2.0]])
Y = np.array([0.0, 1.5, 2.0])
POINTS = [(F(0), F(0)), (F(1), F(3, 2)), (F(2), F(2))]


def exact():
    """(theta, I, S) of the seed example as Fractions, from the normal equations."""
    Z = [(x, F(1)) for x, _ in POINTS]
    ys = [y for _, y in POINTS]
    a = sum(z[0] * z[0] for z in Z)
    b = sum(z[0] * z[1] for z in Z)
    c = sum(z[1] * z[1] for z in Z)
    det = a * c - b * b
    inv = [[c / det, -b / det], [-b / det, a / det]]  # (Z^T Z)^{-1}

    def mul(M, v):
        return [M[0][0] * v[0] + M[0][1] * v[1], M[1][0] * v[0] + M[1][1] * v[1]]

    zty = [sum(z[j] * y for z, y in zip(Z, ys, strict=True)) for j in range(2)]
    theta = mul(inv, zty)
    r = [theta[0] * z[0] + theta[1] * z[1] - y for z, y in zip(Z, ys, strict=True)]
    I = [[-v * r[m] for v in mul(inv, Z[m])] for m in range(3)]
    S = [[2 * r[t] * (Z[t][0] * I[m][0] + Z[t][1] * I[m][1]) for m in range(3)] for t in range(3)]
    return theta, I, S


THETA, I_EXACT, S_EXACT = exact()


def as_float(rows):
    return np.array([[float(v) for v in row] for row in rows]) if isinstance(rows[0], list) else np.array([float(v) for v in rows])


def test_hand_derivation():
    """The exact computation reproduces the hand-derived numbers of the seed."""
    assert THETA == [F(1), F(1, 6)]
    assert I_EXACT == [[F(1, 12), F(-5, 36)], [F(0), F(1, 9)], [F(-1, 12), F(1, 36)]]
    assert S_EXACT == [
        [F(-5, 108), F(1, 27), F(1, 108)],
        [F(1, 27), F(-2, 27), F(1, 27)],
        [F(1, 108), F(1, 27), F(-5, 108)],
    ]
    # symmetric (all points are training points and l2 = 0) and every point helps itself
    assert all(S_EXACT[t][m] == S_EXACT[m][t] for t in range(3) for m in range(3))
    assert all(S_EXACT[t][t] < 0 for t in range(3))


def test_fitted_line():
    model = uw.LinearRegression().fit(X, Y)
    np.testing.assert_allclose(model.coef_, [1.0], atol=1e-14)
    np.testing.assert_allclose(model.intercept_, 1.0 / 6.0, atol=1e-14)
    np.testing.assert_allclose(model.theta_, as_float(THETA), atol=1e-14)
    assert model.converged_ and model.n_iter_ <= 2
    np.testing.assert_allclose(model.predict(X), [1 / 6, 7 / 6, 13 / 6], atol=1e-14)


def test_influence_tables():
    model = uw.LinearRegression().fit(X, Y)
    inf = uw.Influence(model, X, Y)
    np.testing.assert_allclose(inf.params(), as_float(I_EXACT), atol=1e-14)
    np.testing.assert_allclose(inf.on_loss(X, Y), as_float(S_EXACT), atol=1e-14)
    np.testing.assert_allclose(inf.self_influence(), np.diag(as_float(S_EXACT)), atol=1e-14)
    np.testing.assert_allclose(inf.params(idx=[1]), as_float(I_EXACT)[[1]], atol=1e-14)
    # explicit unit weights are the same as no weights
    inf1 = uw.Influence(uw.LinearRegression().fit(X, Y, sample_weight=np.ones(3)), X, Y, sample_weight=np.ones(3))
    np.testing.assert_allclose(inf1.params(), as_float(I_EXACT), atol=1e-14)
    # a new point on the fitted line has zero residual, hence zero influence
    np.testing.assert_allclose(inf.new_point(np.array([3.0]), 3 + 1 / 6), [0.0, 0.0], atol=1e-14)


def test_seed_example_function():
    ex = seed_example()
    np.testing.assert_array_equal(ex.X, X)
    np.testing.assert_array_equal(ex.y, Y)
    np.testing.assert_allclose(ex.slope, 1.0, atol=1e-14)
    np.testing.assert_allclose(ex.intercept, 1.0 / 6.0, atol=1e-14)
    np.testing.assert_allclose(ex.params, as_float(I_EXACT), atol=1e-14)
    np.testing.assert_allclose(ex.scores, as_float(S_EXACT), atol=1e-14)
    report = ex.report()
    assert "y = 1.000000 x + 0.166667" in report
    check_printed_numbers(report)


def check_printed_numbers(text):
    """Every entry of I and S appears in the text, to the six printed decimals."""
    printed = [float(v) for v in re.findall(r"[-+]?\d+\.\d{6}\b", text)]
    for value in as_float(I_EXACT).ravel().tolist() + as_float(S_EXACT).ravel().tolist():
        assert any(abs(p - value) <= 5.1e-7 for p in printed), f"{value:+.6f} not printed in:\n{text}"


def run_cli(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_cli_seed_module():
    out = run_cli(sys.executable, "-m", "upweight.cli", "seed")
    assert out.returncode == 0, out.stderr
    assert "y = 1.000000 x + 0.166667" in out.stdout
    check_printed_numbers(out.stdout)
    # the table rows: S for each point t, in order
    for t in range(3):
        row = " ".join(f"{float(v):+.6f}" for v in S_EXACT[t])
        assert re.search(r"\s+".join(re.escape(v) for v in row.split()), out.stdout), f"row {row!r} missing"


@pytest.mark.skipif(shutil.which("upweight") is None, reason="the `upweight` console script is not on PATH")
def test_cli_seed_console_script():
    out = run_cli(shutil.which("upweight"), "seed")
    assert out.returncode == 0, out.stderr
    assert "y = 1.000000 x + 0.166667" in out.stdout


@pytest.mark.filterwarnings("error::upweight.ConvergenceWarning")
def test_influence_equals_finite_differences_of_refits():
    I = uw.Influence(uw.LinearRegression().fit(X, Y), X, Y).params()
    h = 1e-5
    for m in range(3):
        def refit(eps):
            w = np.ones(3)
            w[m] += eps
            return uw.LinearRegression(tol=1e-14).fit(X, Y, sample_weight=w).theta_

        fd = (refit(h) - refit(-h)) / (2 * h)
        np.testing.assert_allclose(fd, as_float(I_EXACT)[m], rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(I[m], fd, rtol=1e-8, atol=1e-10)
    # removing the middle point: the line through (0, 0) and (2, 2) is y = x, so theta moves by
    # (0, -1/6); the influence (0, 1/9) predicts -I = (0, -1/9) (first order only)
    loo = uw.LinearRegression().fit(X[[0, 2]], Y[[0, 2]]).theta_
    np.testing.assert_allclose(loo, [1.0, 0.0], atol=1e-13)
    assert np.sign(loo[1] - 1 / 6) == np.sign(-I[1, 1])
