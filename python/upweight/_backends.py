"""Where inputs from another array library are computed. A dask array (a training set chunked
by rows) makes ``fit`` and ``Influence`` run on Dask's scheduler (:mod:`upweight.dask`).

The backend is a plugin: it is built on models and influence (it fits them and answers their
queries), so they cannot import it; they ask :func:`backend_for` at call time, which imports it
by name on first use (it needs the optional extra ``upweight[dask]``). ``BACKENDS`` is the one
list of such plugins (tests/test_architecture.py checks that each is a module layered above
the influence layer).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ._validation import is_dask

#: plugin name -> module, imported when an input needs it
BACKENDS = {"dask": "upweight.dask"}


def backend_for(*arrays) -> ModuleType | None:
    """The backend module that computes on ``arrays`` (None: NumPy / SciPy / files, in process)."""
    if any(is_dask(a) for a in arrays):
        try:
            return importlib.import_module(BACKENDS["dask"])
        except ImportError as exc:
            raise ImportError(f"dask arrays need upweight's dask extra: pip install 'upweight[dask]' ({exc})") from exc
    return None
