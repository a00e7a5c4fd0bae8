"""Query batching (issue 15): what rank-r query blocks cost in accuracy and save in scoring time,
on the W4 net (MLP 784-128-10, tanh, l2 = 1e-4, the parameters of bench/out/w4_theta_n60000.npy,
trained by bench/prefilter_recall.py or bench/w5_prefilter.py) over Fashion-MNIST train (n =
60000), q = 100 seeded test points, curvature="ekfac" (damping "auto", residuals=False): the
queries are solved once, then the training rows are scored (streamed top-10) against the
uncompressed queries and against rank-r ones.

Per r: the queries' relative error ||V - V_r||_F / ||V||_F (median, max), the scores' Pearson
correlation with the uncompressed ones, top-10 overlap (helpful and harmful), and the top-10
scan time relative to the uncompressed scan, both in this one process, interleaved over
``--rounds`` rounds (best of each kept; single-process timings, indicative).

    python bench/query_batching.py [--ranks 1,2,4,8,16,32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import upweight as uw

OUT = Path(__file__).resolve().parent / "out"


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.intersect1d(x, z).size / x.size for x, z in zip(a, b, strict=True)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2,4,8,16,32")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    X, y = uw.load_fashion_mnist("train")
    Xte, yte = uw.load_fashion_mnist("test")
    q = np.sort(np.random.default_rng(0).choice(len(Xte), 100, replace=False))
    net = uw.MLPClassifier(hidden=(128,), l2=1e-4)
    net.set_theta(np.load(OUT / "w4_theta_n60000.npy"), n_features=784)
    inf = uw.Influence(net, X, y.astype(np.float64), curvature="ekfac", residuals=False)
    G = inf.loss_grads(Xte[q], yte[q].astype(np.float64))
    full = inf.solve_queries(G)
    solved = {r: inf.solve_queries(G, query_rank=r) for r in ranks}
    S = full.scores()
    ref = full.top_k(10)
    times: dict = {"full": []} | {r: [] for r in ranks}
    for _ in range(args.rounds):
        for key in ["full", *ranks]:
            sq = full if key == "full" else solved[key]
            t0 = time.perf_counter()
            sq.top_k(10)
            times[key].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    print(f"n = {X.shape[0]}, p = {inf.n_params}, q = {G.shape[0]}, EK-FAC damping {inf.damping:.3g}; "
          f"uncompressed top-10 scan {best['full']:.2f} s (best of {args.rounds})\n")
    print("| r | query error median / max | Pearson | top-10 overlap helpful / harmful | top-10 scan (s) | / uncompressed |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in ranks:
        sq = solved[r]
        Sr, top = sq.scores(), sq.top_k(10)
        e = sq.query_errors
        pear = np.corrcoef(Sr.ravel(), S.ravel())[0, 1]
        print(f"| {r} | {np.median(e):.3f} / {e.max():.3f} | {pear:.4f} | {overlap(ref.helpful_idx, top.helpful_idx):.2f} / "
              f"{overlap(ref.harmful_idx, top.harmful_idx):.2f} | {best[r]:.2f} | {best[r] / best['full']:.2f} |")


if __name__ == "__main__":
    main()
