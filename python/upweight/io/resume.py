"""Resumable streaming runs for ``upweight score`` (top-k and self-influence).

The training rows are processed in segments of ``segment_rows`` (a multiple of the core's
``BLOCK_ROWS``-row blocks, so every block, hence every score, is the same as in one pass). After each
segment the merged result so far is written atomically to ``OUTPUT.resume.npz`` together with a
fingerprint of the inputs; ``--resume`` continues after the last finished segment if the
fingerprint matches. Segments are always used, so a resumed run gives exactly what an
uninterrupted one gives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np

from .._constants import BLOCK_ROWS
from ..errors import InputError
from ..influence import Influence, LooTopK, TopK
from .persist import atomic_path

DEFAULT_SEGMENT_ROWS = 1 << 20


def checkpoint_path(output) -> str:
    return os.fspath(output) + ".resume.npz"


def fingerprint(settings: dict, files) -> str:
    """What must not change between an interrupted run and its resumption: the settings and
    each input file's size and modification time."""
    stamp = {}
    for f in files:
        if f is not None:
            st = os.stat(f)
            stamp[os.path.abspath(os.fspath(f))] = [st.st_size, st.st_mtime_ns]
    return json.dumps({"settings": settings, "files": stamp}, sort_keys=True, default=str)


TOP_K_KEYS = ("helpful_idx", "helpful", "harmful_idx", "harmful")


def _top_k(arrays: dict) -> TopK:
    return TopK(*(arrays[key] for key in TOP_K_KEYS))


def check_segment_rows(segment_rows: int) -> int:
    """Segments start at multiples of the core's row blocks, so a resumed run scores every block
    as one pass would."""
    if segment_rows < BLOCK_ROWS or segment_rows % BLOCK_ROWS:
        raise InputError(f"segment-rows: must be a positive multiple of {BLOCK_ROWS}, got {segment_rows}")
    return segment_rows


def run(inf: Influence, what: str, output, fp: str, resume: bool, segment_rows: int, G=None, k: int = 10,
        say: Callable[[str], object] = print, queries=None) -> dict:
    """Top-k (``G`` the query gradients), leave-out top-k ("loo-top-k", ``queries`` = (X, y)) or
    self-influence over the training rows, segment by segment, checkpointing after each.
    Returns the arrays to write."""
    check_segment_rows(segment_rows)
    n = inf.n_samples
    ckpt = checkpoint_path(output)
    start, arrays = 0, None
    if resume and os.path.exists(ckpt):
        with np.load(ckpt, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fp:
                raise InputError(f"resume: {ckpt} was written for other inputs or settings; remove it or run without --resume")
            start = int(z["next_row"])
            arrays = {key: z[key] for key in z.files if key not in ("fingerprint", "next_row")}
        say(f"resuming after row {start:,} of {n:,} ({ckpt})")
    elif resume:
        say(f"nothing to resume ({ckpt} not found): starting from the first row")
    solved = None if what != "top-k" else inf.solve_queries(G)  # one solve for every segment
    for a in range(start, n, segment_rows):
        b = min(n, a + segment_rows)
        if what == "loo-top-k":
            assert queries is not None
            loo_top = inf.loo_top_k(queries[0], queries[1], k=k, rows=(a, b))
            if arrays is not None:
                loo_top = LooTopK(*(arrays[key] for key in TOP_K_KEYS)).merge(loo_top, k)
            arrays = dict(zip(TOP_K_KEYS, loo_top.as_tuple(), strict=True))
        elif solved is None:
            part = {"self_influence": inf.self_influence(rows=(a, b))}
            arrays = part if arrays is None else {"self_influence": np.concatenate([arrays["self_influence"], part["self_influence"]])}
        else:
            top = solved.top_k(k, rows=(a, b))
            if arrays is not None:
                top = _top_k(arrays).merge(top, k)
            arrays = dict(zip(TOP_K_KEYS, top.as_tuple(), strict=True))
        with atomic_path(ckpt, force=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, fingerprint=np.array(fp), next_row=np.array(b), **arrays)
    assert arrays is not None  # n >= 1 rows, or a checkpoint's arrays
    return arrays
