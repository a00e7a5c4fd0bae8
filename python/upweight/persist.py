"""Saving and loading fitted models, and writing output files atomically."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import InputError

FORMAT = "upweight-model-1"


@contextmanager
def atomic_path(path, force: bool = False):
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on one
    file system), on failure or interrupt delete it, so no partial file ever looks complete.
    Refuses to overwrite an existing ``path`` unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"output: {str(path)!r} exists; pass --force (force=True) to overwrite it")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial" + "".join(path.suffixes), dir=path.parent or ".")
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_model(model, path, force: bool = False) -> None:
    """Save a fitted estimator's specification and parameters to ``path`` (.npz), atomically."""
    theta = model._flat_theta()
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, format=FORMAT, estimator=type(model).__name__, l2=float(model.l2),
                     theta=theta, n_features=model.n_features_in_, n_classes=model.n_classes,
                     n_iter=model.n_iter_, grad_norm=model.grad_norm_)


def load_model(path):
    """Load an estimator saved by :func:`save_model`, ready for ``Influence``."""
    from . import models

    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise InputError(f"model: {path!r} is not an upweight model file")
            cls = getattr(models, str(z["estimator"]))
            model = cls(l2=float(z["l2"]))
            n_classes = int(z["n_classes"])
            if cls is models.LogisticRegression:
                model.classes_ = np.arange(2 if n_classes == 1 else n_classes)
            model.n_features_in_ = int(z["n_features"])
            model._set_theta(np.array(z["theta"], dtype=np.float64))
            model.n_iter_, model.grad_norm_, model.converged_ = int(z["n_iter"]), float(z["grad_norm"]), True
            return model
    except (OSError, KeyError, ValueError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"model: cannot read {str(path)!r} as an upweight model ({exc})") from None
