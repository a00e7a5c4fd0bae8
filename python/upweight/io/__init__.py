"""Files: reading tables, saving models and writing outputs atomically, resumable streamed runs.

* :mod:`.idx`: :func:`load_idx`, arrays in the IDX format of MNIST and Fashion-MNIST (plain or gzip);
* :mod:`.tables`: training/query tables (.npy, .npz, .csv, .parquet) in, score files out;
* :mod:`.persist`: :func:`save_model` / :func:`load_model` and :func:`atomic_path`;
* :mod:`.resume`: checkpointed top-k and self-influence runs for ``upweight score --resume``.
"""

from __future__ import annotations

from .idx import load_idx
from .persist import atomic_path, load_model, save_model

__all__ = ["atomic_path", "load_idx", "load_model", "save_model"]
