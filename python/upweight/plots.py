"""Plots (matplotlib, an optional extra: ``pip install upweight[plot]``).

* :func:`response_curve`: f along exact refits R_m(eps) with the influence tangent;
* :func:`loo_scatter`: predicted vs actual leave-one-out changes, with Pearson's R;
* :func:`gallery`: a query image beside its most helpful and most harmful training images.

Each draws on ``ax`` (or a new figure) and returns the matplotlib Figure.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .validation import compare

__all__ = ["gallery", "loo_scatter", "pyplot", "ready", "response_curve", "save"]


def pyplot():
    """``matplotlib.pyplot``, or an InputError saying how to install it (``upweight[plot]``).

    Imported on first use, so ``import upweight`` never needs matplotlib.

    Returns
    -------
    module
        ``matplotlib.pyplot``.

    Raises
    ------
    InputError
        If matplotlib is not installed (``pip install 'upweight[plot]'``).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # no display needed
    >>> plt = uw.plots.pyplot()
    >>> plt.__name__
    'matplotlib.pyplot'
    """
    try:
        import matplotlib.pyplot as plt  # falls back to a file-only backend without a display
    except ImportError:
        raise InputError("plots need matplotlib: pip install 'upweight[plot]'") from None
    return plt


def _axes(ax, figsize=(5, 4)):
    plt = pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def response_curve(rc, index: int = 0, ax=None, label: str = "f"):
    """Plot a response curve: exact refits beside the influence tangent.

    Entry ``index`` of f (or of theta) along the exact refits of a
    :func:`upweight.response_curve`, and its influence tangent at eps = 0.

    Parameters
    ----------
    rc : ResponseCurve
        What :func:`upweight.response_curve` returns.
    index : int, default 0
        Which entry of f (a test loss, a prediction) or of theta (without ``f``) to draw.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default a new 5 x 4 inch figure.
    label : str, default "f"
        The y axis label (``label[index]`` when f has several entries).

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (``ax``'s, or the new one).

    Raises
    ------
    InputError
        If matplotlib is not installed.

    See Also
    --------
    upweight.response_curve : Computes the curve.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # no display needed
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> rc = uw.response_curve(model, X, y, m=0, eps=np.linspace(-1, 3, 5), f=uw.TestLoss(X[:1], y[:1]))
    >>> fig = uw.plots.response_curve(rc, label="test loss")
    >>> fig.axes[0].get_xlabel()
    'eps (weight added to training point 0)'
    >>> uw.plots.pyplot().close(fig)
    """
    fig, ax = _axes(ax)
    order = np.argsort(rc.eps)
    eps = rc.eps[order]
    ax.plot(eps, rc.f[order, index], "o-", color="C0", label="exact refits")
    ax.plot(eps, rc.f_tangent[order, index], "--", color="C3", label=f"influence tangent (slope {rc.influence[index]:+.3g})")
    ax.axvline(0.0, color="0.7", lw=0.8)
    ax.set_xlabel(f"eps (weight added to training point {rc.m})")
    ax.set_ylabel(label if rc.f.shape[1] == 1 else f"{label}[{index}]")
    ax.legend(frameon=False)
    return fig


def loo_scatter(predicted, actual, ax=None, what: str = "change of test loss", one_step=None):
    """Scatter plot of predicted against actual leave-one-out changes.

    Predicted vs actual leave-one-out changes (e.g. ``loo.predicted_loss``,
    ``loo.actual_loss``), with the diagonal and Pearson's R; with ``one_step`` (e.g.
    ``loo.one_step_loss``) the one-step Newton estimate beside the influence one.

    The title gives Pearson's R, the slope and the number of pairs of :func:`upweight.compare`
    (NaN entries of ``actual``, refits with no finite optimum, are left out of them).

    Parameters
    ----------
    predicted : array_like
        Predicted changes, e.g. ``loo.predicted_loss`` (m, q).
    actual : array_like
        Actual changes of the same shape, e.g. ``loo.actual_loss``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default a new 5 x 4 inch figure.
    what : str, default "change of test loss"
        What the values are, for the axis labels.
    one_step : array_like, optional
        One-step Newton estimates of the same shape (e.g. ``loo.one_step_loss``), drawn beside.

    Returns
    -------
    matplotlib.figure.Figure
        The figure drawn on (``ax``'s, or the new one).

    Raises
    ------
    InputError
        If the shapes differ or the values are not finite (as :func:`upweight.compare`), or
        matplotlib is not installed.

    See Also
    --------
    upweight.leave_one_out : Computes the predicted and actual changes.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # no display needed
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> loo = uw.leave_one_out(model, X, y, idx=range(20), X_test=X[:5], y_test=y[:5])
    >>> fig = uw.plots.loo_scatter(loo.predicted_loss, loo.actual_loss, one_step=loo.one_step_loss)
    >>> len(fig.axes[0].collections)  # influence and one-step points
    2
    >>> uw.plots.pyplot().close(fig)
    """
    c = compare(predicted, actual)
    fig, ax = _axes(ax)
    p, a = np.ravel(predicted), np.ravel(actual)
    ax.scatter(p, a, s=8, alpha=0.6, color="C0", label=f"influence (R = {c.pearson:.3f})")
    lo, hi = float(min(p.min(), a.min())), float(max(p.max(), a.max()))
    title = f"leave-one-out: R = {c.pearson:.3f}, slope {c.slope:.2f}, n = {c.n}"
    if one_step is not None:
        c1 = compare(one_step, actual)
        s = np.ravel(one_step)
        ax.scatter(s, a, s=8, alpha=0.6, color="C1", marker="x", label=f"one Newton step (R = {c1.pearson:.4f})")
        lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        ax.legend(frameon=False, fontsize=8)
        title = f"leave-one-out, n = {c.n}: influence R = {c.pearson:.3f}, one step R = {c1.pearson:.4f}"
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8)
    ax.locator_params(nbins=5)
    ax.set_xlabel(f"predicted {what}" + (" (influence)" if one_step is None else ""))
    ax.set_ylabel(f"actual {what} (refit)")
    ax.set_title(title, fontsize=9 if one_step is not None else None)
    return fig


def gallery(query, helpful, harmful, shape=(8, 8), query_title: str = "query", helpful_titles=None, harmful_titles=None):
    """Show a query image beside its most helpful and most harmful training images.

    A query image, then rows of its most helpful and most harmful training images (each a
    flat array reshaped to ``shape``).

    The first row shows the query and the helpful images, the second the harmful ones, on a
    white-to-black grey scale; a figure of 2 x (k + 1) axes, k the longer of the two lists.

    Parameters
    ----------
    query : array_like
        The query image, ``prod(shape)`` values.
    helpful : array_like of shape (k, prod(shape))
        The most helpful training images, one per row (a single image may be 1-d).
    harmful : array_like of shape (k, prod(shape))
        The most harmful training images, one per row.
    shape : tuple of int, default (8, 8)
        The shape of an image (``(8, 8)`` for :func:`upweight.load_digits`, ``(28, 28)`` for
        MNIST).
    query_title : str, default "query"
        The query's title.
    helpful_titles, harmful_titles : sequence of str, optional
        One title per image; default "helpful 1", "helpful 2", ... and "harmful 1", ....

    Returns
    -------
    matplotlib.figure.Figure
        The new figure.

    Raises
    ------
    InputError
        If matplotlib is not installed.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # no display needed
    >>> X, y = uw.load_digits()
    >>> keep = (y == 3) | (y == 8)
    >>> X, y = X[keep] / 16, (y[keep] == 8).astype(int)  # 3 against 8
    >>> inf = uw.Influence(uw.LogisticRegression(l2=1e-2).fit(X, y), X, y)
    >>> top = inf.top_k(X[:1], y[:1], k=3)
    >>> fig = uw.plots.gallery(X[0], X[top.helpful_idx[0]], X[top.harmful_idx[0]], query_title="a 3")
    >>> len(fig.axes)
    8
    >>> uw.plots.pyplot().close(fig)
    """
    plt = pyplot()
    helpful, harmful = np.atleast_2d(helpful), np.atleast_2d(harmful)
    k = max(len(helpful), len(harmful))
    fig, axes = plt.subplots(2, k + 1, figsize=(1.4 * (k + 1), 3.2))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].imshow(np.reshape(query, shape), cmap="gray_r")
    axes[0, 0].set_title(query_title, fontsize=8)
    axes[1, 0].axis("off")
    for row, images, titles, name in ((0, helpful, helpful_titles, "helpful"), (1, harmful, harmful_titles, "harmful")):
        for j, img in enumerate(images):
            ax = axes[row, j + 1]
            ax.imshow(np.reshape(img, shape), cmap="gray_r")
            ax.set_title(titles[j] if titles is not None else f"{name} {j + 1}", fontsize=7)
        for j in range(len(images), k):
            axes[row, j + 1].axis("off")
    fig.tight_layout()
    return fig


def ready(folder: str) -> bool:
    """Prepare a folder for figures: True if figures can be drawn.

    For the CLI's figures: create ``folder`` and return True, or, without matplotlib, say
    how to install it and return False (the report is written all the same).

    Parameters
    ----------
    folder : str
        The folder the figures go to; created (with its parents) if absent.

    Returns
    -------
    bool
        True if matplotlib is importable (and ``folder`` exists), False otherwise.

    See Also
    --------
    save : Writes a figure into the folder.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # no display needed
    >>> uw.plots.ready("figures")
    True
    >>> import os
    >>> os.path.isdir("figures")
    True
    """
    import os

    try:
        pyplot()
    except InputError:
        print("\n(figures skipped: pip install 'upweight[plot]' for matplotlib)")
        return False
    os.makedirs(folder, exist_ok=True)
    return True


def save(fig, folder: str, name: str) -> str:
    """Write ``fig`` as ``folder/name`` (110 dpi, tight) and close it; returns the path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to write.
    folder : str
        An existing folder (see :func:`ready`).
    name : str
        The file name; its extension (``.png``, ``.pdf``, ``.svg``...) chooses the format.

    Returns
    -------
    str
        The path written, ``os.path.join(folder, name)``.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist (matplotlib's error; :func:`ready` creates it).

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")  # no display needed
    >>> X, y = uw.load_digits()
    >>> fig = uw.plots.gallery(X[0], X[1:3], X[3:5])
    >>> uw.plots.ready("figures")
    True
    >>> import os
    >>> path = uw.plots.save(fig, "figures", "gallery.png")
    >>> os.path.basename(path), os.path.getsize(path) > 0
    ('gallery.png', True)
    """
    import os

    path = os.path.join(folder, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path
