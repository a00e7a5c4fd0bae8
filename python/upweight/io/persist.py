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
def atomic_path(path, force: bool = False, *, arg: str = "path", how: str = "force=True"):
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (atomic on one
    file system), on failure or interrupt delete it, so no partial file ever looks complete.
    Refuses to overwrite an existing ``path`` unless ``force`` (the error names ``arg`` and says
    to pass ``how``: the CLI's are ``output`` and ``--force``)."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{arg}: {str(path)!r} exists; pass {how} to overwrite it")
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
    """Save a fitted estimator's specification and parameters to ``path`` (.npz), atomically.

    The file holds the estimator's class, l2 (and its penalty convention when not the default),
    the parameters theta, the number of features and classes and the fit's iteration count and
    gradient norm, as a NumPy ``.npz`` archive without pickles. It is written to a temporary file
    beside ``path`` and renamed onto it once complete, so ``path`` never holds a partial file.

    Parameters
    ----------
    model : LinearRegression, LogisticRegression or PoissonRegression
        A fitted estimator (also one converted from scikit-learn or statsmodels).
    path : str or os.PathLike
        The file to write (conventionally ending in ``.npz``); its folder must exist.
    force : bool, default False
        Overwrite ``path`` if it exists.

    Raises
    ------
    InputError
        If ``path`` exists and ``force`` is False, or ``model`` is of a kind that cannot be saved
        (networks).
    NotFittedError
        If ``model`` is not fitted.

    See Also
    --------
    load_model : Reads the file back.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> model = uw.LogisticRegression(l2=1e-2).fit((X - X.mean(0)) / X.std(0), y)
    >>> uw.save_model(model, "model.npz")
    >>> uw.save_model(model, "model.npz")
    Traceback (most recent call last):
        ...
    upweight.errors.InputError: path: 'model.npz' exists; pass force=True to overwrite it
    >>> uw.save_model(model, "model.npz", force=True)
    """
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
    """Load an estimator saved by :func:`save_model`, ready for ``Influence``.

    The estimator is rebuilt with the saved l2 and parameters and marked converged; predictions
    and influence equal the saved model's.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by :func:`save_model`.

    Returns
    -------
    LinearRegression, LogisticRegression or PoissonRegression
        The fitted estimator, of the class that was saved.

    Raises
    ------
    MissingFileError
        If ``path`` does not exist (an ``InputError`` and a ``FileNotFoundError``).
    InputError
        If ``path`` cannot be read, or is not an upweight model file (the message names
        ``model``, the CLI's option).

    See Also
    --------
    save_model : Writes the file.

    Examples
    --------
    >>> X, y, _ = uw.load_breast_cancer()
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    >>> uw.save_model(model, "model.npz")
    >>> loaded = uw.load_model("model.npz")
    >>> type(loaded).__name__, loaded.l2
    ('LogisticRegression', 0.01)
    >>> bool(np.array_equal(loaded.get_theta(), model.get_theta()))
    True
    """
    if not os.path.isfile(path):
        raise MissingFileError(f"model: no such file {os.fspath(path)!r}")
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
