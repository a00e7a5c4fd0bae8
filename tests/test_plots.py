"""Plots (issue 4; matplotlib is an optional extra): each returns a figure that saves as PNG and
shows what it claims (the tangent's slope, R, the images)."""

from __future__ import annotations

import numpy as np
import pytest

import upweight as uw

pytest.importorskip("matplotlib")
from upweight import plots  # noqa: E402


@pytest.fixture(scope="module")
def fitted():
    X, y, _ = uw.load_breast_cancer()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return uw.LogisticRegression(l2=1e-2).fit(X[:400], y[:400]), X[:400], y[:400], X[400:], y[400:]


def is_png(fig, tmp_path, name):
    path = tmp_path / name
    fig.savefig(path)
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_response_curve_plot_shows_refits_and_tangent(fitted, tmp_path):
    model, X, y, Xt, yt = fitted
    rc = uw.response_curve(model, X, y, m=3, eps=[-1, 0, 1, 2], f=uw.TestLoss(Xt[:2], yt[:2]))
    fig = plots.response_curve(rc, index=1)
    lines = fig.axes[0].get_lines()
    np.testing.assert_allclose(lines[0].get_ydata(), rc.f[:, 1])
    np.testing.assert_allclose(lines[1].get_ydata(), rc.f_tangent[:, 1])
    assert is_png(fig, tmp_path, "rc.png")


def test_loo_scatter_reports_r_and_gallery_shows_images(fitted, tmp_path):
    model, X, y, Xt, yt = fitted
    loo = uw.leave_one_out(model, X, y, idx=range(20), X_test=Xt, y_test=yt)
    fig = plots.loo_scatter(loo.predicted_loss, loo.actual_loss)
    r = uw.compare(loo.predicted_loss, loo.actual_loss).pearson
    assert f"R = {r:.3f}" in fig.axes[0].get_title()
    assert is_png(fig, tmp_path, "loo.png")
    Xd, yd = uw.load_digits()
    assert Xd.shape == (1797, 64) and set(yd) == set(range(10))
    fig = plots.gallery(Xd[0], Xd[1:4], Xd[4:6], helpful_titles=["a", "b", "c"])
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert len(shown) == 6
    np.testing.assert_array_equal(shown[0], Xd[0].reshape(8, 8))
    assert is_png(fig, tmp_path, "gallery.png")
