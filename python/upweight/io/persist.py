"""Saving and loading fitted models, and writing output files atomically."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .. import models
from ..errors import InputError, MissingFileError

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


#: The estimators a model file may name.
ESTIMATORS = {cls.__name__: cls for cls in (models.LinearRegression, models.LogisticRegression, models.PoissonRegression)}


def save_model(model: models.Model, path, force: bool = False) -> None:
    """Save a fitted estimator's specification and parameters to ``path`` (.npz), atomically."""
    model = models.check_model(model)
    if type(model).__name__ not in ESTIMATORS:
        raise InputError(f"model: {type(model).__name__} cannot be saved (one of {', '.join(ESTIMATORS)})")
    theta = model.get_theta()
    # the penalty convention is stored only when it is not the default (models converted from
    # scikit-learn's Ridge / LogisticRegression), so native models' files keep their fields
    extra = {} if model.penalty_renormalized else {"penalty_renormalized": False}
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, format=FORMAT, estimator=type(model).__name__, l2=float(model.l2),
                     theta=theta, n_features=model.n_features_in_, n_classes=model.core_model().n_outputs,
                     n_iter=getattr(model, "n_iter_", 0), grad_norm=getattr(model, "grad_norm_", 0.0), **extra)


def load_model(path) -> models.Model:
    """Load an estimator saved by :func:`save_model`, ready for ``Influence``."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["format"]) != FORMAT:
                raise InputError(f"model: {path!r} is not an upweight model file")
            cls = ESTIMATORS[str(z["estimator"])]
            # absent: the default convention (and every file written before it was stored)
            renormalized = bool(z["penalty_renormalized"]) if "penalty_renormalized" in z.files else True
            model = cls(l2=float(z["l2"]), penalty_renormalized=renormalized)
            model.set_theta(np.array(z["theta"], dtype=np.float64), n_features=int(z["n_features"]))
            model.n_iter_, model.grad_norm_, model.converged_ = int(z["n_iter"]), float(z["grad_norm"]), True
            return model
    except (OSError, KeyError, ValueError, AttributeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"model: cannot read {str(path)!r} as an upweight model ({exc})") from None


CURVATURE_FORMAT = "upweight-curvature-1"


def save_curvature(state: dict, theta: np.ndarray, path, force: bool = False) -> None:
    """Write an approximate solver's prepared curvature (the core's named arrays, with its header)
    and the parameters it was computed at to ``path`` (.npz), atomically."""
    with atomic_path(path, force) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, format=CURVATURE_FORMAT, theta=theta, **state)


def load_curvature(path, theta: np.ndarray, what: str = "parameters") -> dict:
    """The named arrays of a file written by :func:`save_curvature`, for the core (which checks
    the header against the influence); refuses another file kind or other parameters (``theta``:
    a model's, or the fingerprint of per-example gradients, ``what`` says which)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise MissingFileError(f"curvature_file: no file {str(path)!r}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"curvature_file: {str(path)!r} is not a curvature file ({exc})") from None
    if str(arrays.pop("format", "")) != CURVATURE_FORMAT:
        raise InputError(f"curvature_file: {str(path)!r} is not a curvature file written by save_curvature")
    saved = arrays.pop("theta", None)
    if saved is None or saved.shape != theta.shape or not np.array_equal(saved, theta):
        raise InputError(f"curvature_file: was computed for other {what} than these: recompute it")
    return {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
