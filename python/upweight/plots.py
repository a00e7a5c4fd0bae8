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
    """``matplotlib.pyplot``, or an InputError saying how to install it (``upweight[plot]``)."""
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
    """Entry ``index`` of f (or of theta) along the exact refits of a
    :func:`upweight.response_curve`, and its influence tangent at eps = 0."""
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
    """Predicted vs actual leave-one-out changes (e.g. ``loo.predicted_loss``,
    ``loo.actual_loss``), with the diagonal and Pearson's R; with ``one_step`` (e.g.
    ``loo.one_step_loss``) the one-step Newton estimate beside the influence one."""
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
    """A query image, then rows of its most helpful and most harmful training images (each a
    flat array reshaped to ``shape``)."""
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
    """For the CLI's figures: create ``folder`` and return True, or, without matplotlib, say
    how to install it and return False (the report is written all the same)."""
    import os

    try:
        pyplot()
    except InputError:
        print("\n(figures skipped: pip install 'upweight[plot]' for matplotlib)")
        return False
    os.makedirs(folder, exist_ok=True)
    return True


def save(fig, folder: str, name: str) -> str:
    """Write ``fig`` as ``folder/name`` (110 dpi, tight) and close it; returns the path."""
    import os

    path = os.path.join(folder, name)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return path
