"""Time the exact W2 Hessian alone (multinomial, n = 20000, d = 784, k = 10: p = 7850) in the core.

    python bench/w2_hessian.py [--rounds 2]
    perf record -g python bench/w2_hessian.py --rounds 1      # where its time goes
    python bench/w2_hessian.py --query [--rounds 3]           # the query's solve and scores instead

``--query`` builds ``uw.Influence(model, X, y, solver="direct")`` once on the same data with the
model perf_peers.py fitted (bench/out/perf_w2_synthetic_model.npz: run ``python bench/perf_peers.py
--only W2 --jobs w2_direct --datasets synthetic --rounds 1`` once first), then times, each round,
the 100 queries' ``inverse_hvp`` (the solve with its residual check) and ``on_loss`` (solve and
scores).

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
    ap.add_argument("--query", action="store_true", help="time the direct query (solve, scores) instead")
    args = ap.parse_args()
    from upweight import _core

    c = {"n": 20000, "d": 784, "k": 10, "q": 100}
    X, y, Xt, yt = w2_data(c)
    if args.query:
        query(X, y, Xt, yt, args.rounds)
        return
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


def query(X, y, Xt, yt, rounds: int) -> None:
    import upweight as uw

    model = uw.load_model(str(Path(__file__).resolve().parent / "out" / "perf_w2_synthetic_model.npz"))
    t0 = time.perf_counter()
    inf = uw.Influence(model, X, y, solver="direct")
    print(f"construction {time.perf_counter() - t0:.2f} s", flush=True)
    G = inf.loss_grads(Xt, yt)
    for _ in range(rounds):
        t0 = time.perf_counter()
        inf.inverse_hvp(G.T)
        t1 = time.perf_counter()
        inf.on_loss(Xt, yt)
        t2 = time.perf_counter()
        print(f"inverse_hvp of {G.shape[0]} queries {t1 - t0:.3f} s  on_loss {t2 - t1:.3f} s", flush=True)


if __name__ == "__main__":
    main()
