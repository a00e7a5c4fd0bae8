"""CG preconditioners on the digits network of bench/networks_digits.py (64-16-10 tanh
``MLPClassifier(hidden=(16,), l2=1e-3)``, seed 0, n = 500 seeded training digits scaled to [0, 1]):
iterations and time of one block-CG solve of the damped Gauss-Newton system for the loss gradients
of 10 test points, rtol 1e-10, with no preconditioner, Jacobi and K-FAC, at damping 0.01x, 1x and
100x "auto". Construction (the data pass, plus K-FAC's factors and eigendecompositions) is timed
apart from the solve; the best of ``--repeat`` runs is kept.

    python bench/precond_digits.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import upweight as uw

N_TRAIN, SPLIT_SEED, NET_SEED, HIDDEN, L2, QUERIES = 500, 0, 0, (16,), 1e-3, 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    X, y = uw.load_digits()
    X = X / 16.0
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:N_TRAIN + QUERIES]
    net = uw.MLPClassifier(hidden=HIDDEN, activation="tanh", l2=L2, random_state=NET_SEED).fit(X[tr], y[tr])
    auto = uw.Influence(net, X[tr], y[tr], solver="cg").damping
    print(f"64-16-10 tanh, n = {N_TRAIN}, {QUERIES} queries, rtol 1e-10; damping 'auto' = {auto:.3g}\n")
    print("| damping | preconditioner | iterations (max, mean) | solve (s) | construction (s) |")
    print("|---|---|---:|---:|---:|")
    for factor in (0.01, 1.0, 100.0):
        for pre in ("none", "jacobi", "kfac"):
            best_solve, best_build = np.inf, np.inf
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                inf = uw.Influence(net, X[tr], y[tr], damping=factor * auto, solver="cg", precondition=pre, max_iter=100_000)
                t1 = time.perf_counter()
                inf.inverse_hvp(inf.loss_grads(X[te], y[te]).T)
                t2 = time.perf_counter()
                best_build, best_solve = min(best_build, t1 - t0), min(best_solve, t2 - t1)
            it = np.asarray(inf.solve_info.iterations)
            print(f"| {factor:g} x auto ({factor * auto:.3g}) | {pre} | {it.max()}, {it.mean():.0f} | "
                  f"{best_solve:.3f} | {best_build:.3f} |")


if __name__ == "__main__":
    main()
