"""What leave-out estimates cost next to influence scores, on two shapes:

  W1   logistic, n = 100000, d = 128 (p = 129), q = 500 test points
  WM   multinomial, n = 20000, d = 64, k = 10 (p = 650), q = 100 test points

    python bench/loo_cost.py [--rounds 3]

Each measurement runs in its own process (jobs interleaved over the rounds); a process fits
nothing (theta is fitted once and saved), builds the Influence, then times its query twice: the
first call (for leave-out: including the one factorisation of the curvature it keeps), then
three more, of which the best is reported as "warm" (the output's pages already mapped).
Others' CPU use during each run is recorded from /proc/stat; the table reports medians
over quiet runs (others below 10% of a core). The floor is one NumPy GEMM of the score matrix's
shape, (n x p) @ (p x q) into a fresh output, run with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SHAPES = {"W1": dict(n=100_000, d=128, k=2, q=500), "WM": dict(n=20_000, d=64, k=10, q=100)}
CALLS = 4  # per process: the first call, then the best of the other three ("warm": output pages reused)
JOBS = ["floor", "on_loss", "loo_on_loss", "top_k", "loo_top_k", "self_influence", "loo_losses", "loo_params_1000"]
HZ = os.sysconf("SC_CLK_TCK")


def data(shape: str):
    s = SHAPES[shape]
    rng = np.random.default_rng(0)
    n, d, k, q = s["n"], s["d"], s["k"], s["q"]
    X = rng.standard_normal((n + q, d))
    if k == 2:
        y = (rng.random(n + q) < 1 / (1 + np.exp(-X @ (rng.standard_normal(d) / np.sqrt(d))))).astype(float)
    else:
        eta = X @ (rng.standard_normal((d, k)) / np.sqrt(d))
        p = np.exp(eta - eta.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        y = (p.cumsum(axis=1) < rng.random((n + q, 1))).sum(axis=1).astype(float)
    return X[:n], y[:n], X[n:], y[n:]


def model(shape: str):
    import upweight as uw

    X, y, _, _ = data(shape)
    path = OUT / f"loo_cost_{shape}_theta.npy"
    m = uw.LogisticRegression(l2=1e-3)
    if path.exists():
        m.set_theta(np.load(path), n_features=X.shape[1])
    else:
        m.fit(X, y)
        np.save(path, m.theta_)
    return m


def busy_ticks() -> int:
    f = open("/proc/stat").readline().split()[1:]
    return sum(int(v) for i, v in enumerate(f) if i not in (3, 4))  # all but idle and iowait


def job(shape: str, name: str) -> dict:
    X, y, Xq, yq = data(shape)
    t_b, r0 = busy_ticks(), resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    times = []
    if name == "floor":
        p = SHAPES[shape]["d"] + 1 if SHAPES[shape]["k"] == 2 else (SHAPES[shape]["d"] + 1) * SHAPES[shape]["k"]
        Z = np.random.default_rng(1).standard_normal((SHAPES[shape]["n"], p))
        V = np.random.default_rng(2).standard_normal((p, SHAPES[shape]["q"]))
        build = 0.0
        for _ in range(CALLS):
            a = time.perf_counter()
            S = Z @ V
            times.append(time.perf_counter() - a)
            del S
    else:
        import upweight as uw

        m = model(shape)
        a = time.perf_counter()
        inf = uw.Influence(m, X, y, solver="direct")
        build = time.perf_counter() - a
        call = {
            "on_loss": lambda: inf.on_loss(Xq, yq),
            "loo_on_loss": lambda: inf.loo_on_loss(Xq, yq),
            "top_k": lambda: inf.top_k(Xq, yq, k=10),
            "loo_top_k": lambda: inf.loo_top_k(Xq, yq, k=10),
            "loo_params_1000": lambda: inf.loo_params(np.arange(1000)),
            "self_influence": lambda: inf.self_influence(),
            "loo_losses": lambda: inf.loo_losses(),
        }[name]
        for _ in range(CALLS):
            a = time.perf_counter()
            out = call()
            times.append(time.perf_counter() - a)
            del out
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    own = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    others = max(0.0, ((busy_ticks() - t_b) / HZ - own) / wall)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"shape": shape, "job": name, "build": build, "first": times[0], "warm": min(times[1:]),
            "others_cores": others, "peak_rss_mib": rss}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--job", nargs=2, metavar=("SHAPE", "JOB"))
    args = ap.parse_args()
    if args.job:
        print(json.dumps(job(*args.job)))
        return
    OUT.mkdir(exist_ok=True)
    for shape in SHAPES:
        model(shape)  # fit once
    runs = []
    for r in range(args.rounds):
        for shape in SHAPES:
            for name in JOBS:
                env = dict(os.environ)
                if name == "floor":
                    env.pop("OPENBLAS_CORETYPE", None)
                    env.pop("OPENBLAS_L2_SIZE", None)
                out = subprocess.run([sys.executable, __file__, "--job", shape, name], capture_output=True, text=True, env=env, check=True)
                rec = json.loads(out.stdout)
                rec["round"] = r
                runs.append(rec)
                print(f"# round {r} {shape} {name}: first {rec['first']:.3f} s, warm {rec['warm']:.3f} s, "
                      f"others {rec['others_cores']:.2f} cores", file=sys.stderr)
    path = OUT / f"loo_cost_{time.strftime('%Y%m%d_%H%M%S')}.json"
    path.write_text(json.dumps(runs, indent=1))
    print("| shape | query | first call (s) | warm call (s) | / floor (warm) | / on_loss (warm) | build (s) | quiet runs "
          "| peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        med = {}
        for name in JOBS:
            rs = [x for x in runs if x["shape"] == shape and x["job"] == name]
            quiet = [x for x in rs if x["others_cores"] < 0.1] or rs
            med[name] = {k: float(np.median([x[k] for x in quiet])) for k in ("first", "warm", "build", "peak_rss_mib")}
            med[name]["quiet"] = f"{len([x for x in rs if x['others_cores'] < 0.1])}/{len(rs)}"
        for name in JOBS:
            m = med[name]
            print(f"| {shape} | {name} | {m['first']:.3f} | {m['warm']:.3f} | {m['warm'] / med['floor']['warm']:.1f} | "
                  f"{m['warm'] / med['on_loss']['warm']:.2f} | {m['build']:.2f} | {m['quiet']} | {m['peak_rss_mib']:.0f} |")
    print(f"\n(json: {path})", file=sys.stderr)


if __name__ == "__main__":
    main()
