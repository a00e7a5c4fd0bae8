"""Resumable streaming runs for ``upweight score`` (top-k and self-influence).

The training rows are processed in segments of ``segment_rows`` (a multiple of the core's
512-row blocks, so every block, hence every score, is the same as in one pass). After each
segment the merged result so far is written atomically to ``OUTPUT.resume.npz`` together with a
fingerprint of the inputs; ``--resume`` continues after the last finished segment if the
fingerprint matches. Segments are always used, so a resumed run gives exactly what an
uninterrupted one gives.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .errors import InputError
from .persist import atomic_path

BLOCK_ROWS = 512  # rust/blocks.rs
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


def merge_top_k(a: dict, b: dict, k: int) -> dict:
    """The k best of two top-k results (later segment ``b``): helpful = smallest scores, harmful =
    largest, ties to the lower index, as one pass would choose."""
    out = {}
    for side, sign in (("helpful", 1.0), ("harmful", -1.0)):
        idx = np.concatenate([a[f"{side}_idx"], b[f"{side}_idx"]], axis=1)
        val = np.concatenate([a[side], b[side]], axis=1)
        order = np.lexsort((idx, sign * val), axis=1)[:, :k]
        out[f"{side}_idx"] = np.take_along_axis(idx, order, axis=1)
        out[side] = np.take_along_axis(val, order, axis=1)
    return out


def run(inf, what: str, output, fp: str, resume: bool, segment_rows: int, G=None, k: int = 10, say=print) -> dict:
    """Top-k (``G`` the query gradients) or self-influence over the training rows, segment by
    segment, checkpointing after each. Returns the arrays to write."""
    if segment_rows < BLOCK_ROWS or segment_rows % BLOCK_ROWS:
        raise InputError(f"segment-rows: must be a positive multiple of {BLOCK_ROWS}, got {segment_rows}")
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
    if what != "self":
        core = inf._core_for(G.shape[0])  # one solve for every segment
        vc = inf._checked(core.solve_queries(G))
    for a in range(start, n, segment_rows):
        b = min(n, a + segment_rows)
        if what == "self":
            part = {"self_influence": inf._self_influence((a, b))}
            arrays = part if arrays is None else {"self_influence": np.concatenate([arrays["self_influence"], part["self_influence"]])}
        else:
            hi, h, xi, x = core.top_k_solved(vc, k, (a, b))
            part = {"helpful_idx": hi.astype(np.intp), "helpful": h, "harmful_idx": xi.astype(np.intp), "harmful": x}
            arrays = part if arrays is None else merge_top_k(arrays, part, k)
        with atomic_path(ckpt, force=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, fingerprint=np.array(fp), next_row=np.array(b), **arrays)
    return arrays
