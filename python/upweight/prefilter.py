"""The two-stage top-k of DESIGN-networks.md section 6, for huge n: stage 1 scores every training
point cheaply and keeps the c k best of each end per query; stage 2 rescores those candidates
exactly, so answers are exact among candidates. A query's candidates are both ends' (a cheap
scorer can put a truly harmful point at its helpful end: the layers it leaves out can flip a
sign). recall@k = |true top-k ∩ candidates| / k, estimated on sampled queries scored
exhaustively, for each end; c grows until the worse end meets a target.

This module holds the index bookkeeping (plain NumPy on top-k index arrays); the passes over
the data are :meth:`upweight.Influence.top_k_on`'s (stage 1 is the network's last layer,
:class:`upweight.networks.LastLayer`).
"""

from __future__ import annotations

import numpy as np

from ._validation import as_positive_int
from .errors import InputError

__all__ = ["SCORERS", "best_among", "candidate_counts", "check_prefilter", "recall_at", "sampled_queries"]

#: Stage-1 scorers: the last layer's exact damped influence (a forward pass per row).
SCORERS = ("last-layer",)

#: Candidates per end per query the first stage-1 pass keeps, as a multiple of k; a pass that
#: falls short of the target recall is repeated with 8 times as many.
FIRST_MULTIPLE = 16


def check_prefilter(prefilter, target, recall_queries, candidates) -> tuple[float, int, int | None]:
    """The prefilter's settings checked: (target recall, sampled queries, fixed candidates or None)."""
    if prefilter not in SCORERS:
        raise InputError(f"prefilter: expected one of {', '.join(map(repr, SCORERS))} or None, got {prefilter!r}")
    try:
        t = float(target)
    except (TypeError, ValueError):
        raise InputError(f"recall: expected a number in (0, 1], got {target!r}") from None
    if not 0.0 < t <= 1.0:
        raise InputError(f"recall: expected a number in (0, 1], got {target!r}")
    s = 0 if recall_queries == 0 else as_positive_int(recall_queries, "recall_queries")
    c = None if candidates is None else as_positive_int(candidates, "candidates")
    if s == 0 and c is None:
        raise InputError("recall_queries: 0 leaves no recall to grow the candidates by; pass candidates= (per query and end)")
    return t, s, c


def sampled_queries(q: int, s: int, seed: int = 0) -> np.ndarray:
    """``min(s, q)`` distinct query indices, sorted, drawn with a fixed seed (deterministic)."""
    return np.sort(np.random.default_rng(seed).choice(q, size=min(s, q), replace=False))


def recall_at(true_idx: np.ndarray, candidate_idx: np.ndarray) -> float:
    """Mean over queries (rows) of |true top-k ∩ candidates| / k (candidates: a row of
    training indices per query, repeats allowed)."""
    if true_idx.size == 0:
        return 1.0
    hits = [np.intersect1d(t, c).size / t.size for t, c in zip(true_idx, candidate_idx, strict=True)]
    return float(np.mean(hits))


def candidate_counts(k: int, kept: int) -> list[int]:
    """The candidate counts tried, smallest first: k, 2k, 4k, ... below ``kept``, then ``kept``."""
    counts, c = [], k
    while c < kept:
        counts.append(c)
        c *= 2
    return [*counts, kept]


def best_among(scores: np.ndarray, rows: np.ndarray, candidates: list[np.ndarray], k: int):
    """Per query j, the k smallest and k largest of ``scores[j]`` (scores of the training rows
    ``rows``, sorted) among that query's ``candidates[j]`` (training indices), ties to the lower
    index, as one exhaustive pass orders them. Returns (helpful_idx, helpful, harmful_idx,
    harmful), each (len(candidates), k)."""
    q = len(candidates)
    out = [np.empty((q, k), dtype=np.intp), np.empty((q, k)), np.empty((q, k), dtype=np.intp), np.empty((q, k))]
    for j, cand in enumerate(candidates):
        idx = np.unique(cand)
        s = np.asarray(scores[j, np.searchsorted(rows, idx)], dtype=np.float64)
        for end, key in ((0, s), (2, -s)):
            order = np.lexsort((idx, key))[:k]
            out[end][j], out[end + 1][j] = idx[order], s[order]
    return tuple(out)
