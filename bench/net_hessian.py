"""Time a network's Gauss-Newton matrix in the core.

    python bench/net_hessian.py [--rounds 3] [--hidden 40] [--out H.npy]

The net is 60-40-5 (p = 2645 > 2048: built by tiles) or, with ``--hidden 20``, 60-20-5 (p = 1325:
summed by row blocks); tanh, softmax head; n = 6000 Gaussian rows, the theta of 3 Adam epochs on
500 of them (seeded); the call is ``net.core_model("gauss-newton").hessian``. Prints
each round's time and the rate on the n k p^2 flops of the lower triangle of M^T M (M the
factor: k rows of p per point). ``--out`` saves the matrix, to compare two builds' bits.

To compare two builds in one session, run this script alternately with each build's package
first on PYTHONPATH (bench/RESULTS.md, "Networks: the tiled Gauss-Newton matrix").
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import upweight as uw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=40, help="hidden units (40: p = 2645; 20: p = 1325)")
    ap.add_argument("--out", help="save the matrix here (.npy)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, k = 6000, 5
    X, y = rng.standard_normal((n, 60)), rng.integers(0, k, n)
    net = uw.MLPClassifier(hidden=(args.hidden,), max_iter=3, newton_iter=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3 epochs do not converge: the theta only needs to be seeded
        net.fit(X[:500], y[:500])
    core, theta, p = net.core_model("gauss-newton"), net.get_theta(), net.n_params
    for r in range(args.rounds):
        t = time.perf_counter()
        H = core.hessian(theta, X, y.astype(np.float64), None, 0.0)
        dt = time.perf_counter() - t
        print(f"round {r}: p = {p}, n = {n}: {dt:.2f} s, {n * k * p * p / dt / 1e9:.1f} GFLOP/s", flush=True)
    if args.out:
        np.save(args.out, H)


if __name__ == "__main__":
    main()
