"""Time the exact W2 Hessian alone (multinomial, n = 20000, d = 784, k = 10: p = 7850) in the core.

    python bench/w2_hessian.py [--rounds 2]
    perf record -g python bench/w2_hessian.py --rounds 1      # where its time goes

Data: bench_scale.w2_data (the synthetic W2 set); theta seeded, 0.01 N(0, 1). Prints each
round's time, the rate on the 555 GFLOP the symmetric class-pair products need (k (k - 1) / 2
lower triangles of Z^T diag(.) Z; the diagonal class blocks are derived), and the minor page faults
the call took.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import w2_data  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from upweight import _core

    c = {"n": 20000, "d": 784, "k": 10, "q": 100}
    X, y, _, _ = w2_data(c)
    n, d, k = c["n"], c["d"], c["k"]
    flops = k * (k - 1) / 2 * n * (d + 1) * (d + 2)  # multiply-adds x 2 over each lower triangle
    model = _core.Model.glm("multinomial", k, d)
    theta = np.random.default_rng(0).standard_normal(k * (d + 1)) * 0.01
    for _ in range(args.rounds):
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        H = model.hessian(theta, X, y, None, 1e-3)
        e = time.perf_counter() - t0
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        print(f"hessian {e:.2f} s  {flops / e / 1e9:.1f} GFLOP/s on {flops / 1e9:.0f} GFLOP  minor faults {faults}", flush=True)
        del H


if __name__ == "__main__":
    main()
