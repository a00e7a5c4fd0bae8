"""Core benchmark (issue 2): fit + on_loss for binary logistic regression, n=100000, d=128,
q=500, l2=1e-3, against upweight.reference (plain NumPy) and the cost floor, a bare NumPy
product of the same (n x 129) @ (129 x 500) shape.

Each measurement runs in its own process (fresh memory, so peak RSS is its own); all of them run
in one invocation so the ratios hold on a noisy shared machine. Writes the table into
bench/RESULTS.md between the W1-core markers.

    python bench/bench_core.py [--n 100000] [--d 128] [--q 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_data(n: int, d: int, q: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    beta = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ beta)))).astype(np.float64)
    Xt = rng.standard_normal((q, d))
    yt = (rng.random(q) < 1.0 / (1.0 + np.exp(-(Xt @ beta)))).astype(np.float64)
    return X, y, Xt, yt


def measure(kind: str, n: int, d: int, q: int, l2: float, repeat: int) -> dict:
    X, y, Xt, yt = make_data(n, d, q)
    times, extra = [], {}
    for _ in range(repeat):
        if kind == "upweight":
            import upweight as uw

            t0 = time.perf_counter()
            model = uw.LogisticRegression(l2=l2).fit(X, y)
            t1 = time.perf_counter()
            S = uw.Influence(model, X, y).on_loss(Xt, yt)
            t2 = time.perf_counter()
            extra = {"fit_s": t1 - t0, "influence_s": t2 - t1, "n_iter": model.n_iter_,
                     "threads": uw.num_threads()}
            np.save(os.environ["UW_BENCH_OUT"] + "_upweight.npy", S[:, :2000])
        elif kind == "reference":
            from upweight import reference as ref

            t0 = time.perf_counter()
            theta = ref.fit(X, y, "logistic", l2=l2)
            t1 = time.perf_counter()
            S = ref.influence_on_loss(theta, X, y, "logistic", Xt, yt, l2=l2)
            t2 = time.perf_counter()
            extra = {"fit_s": t1 - t0, "influence_s": t2 - t1}
            np.save(os.environ["UW_BENCH_OUT"] + "_reference.npy", S[:, :2000])
        elif kind == "numpy_matmul":
            Z = np.hstack([X, np.ones((n, 1))])
            V = np.random.default_rng(1).standard_normal((d + 1, q))
            t0 = time.perf_counter()
            Z @ V
            t2 = time.perf_counter()
        else:
            raise ValueError(kind)
        times.append(t2 - t0)
    # VmHWM: this process's peak RSS (ru_maxrss would carry the parent's over exec)
    peak = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    return {"kind": kind, "best_s": min(times), "times_s": times, "peak_rss_mib": peak, **extra}


def write_results(rows: list[dict], args, agree: float, cmd: str) -> None:
    floor = next(r for r in rows if r["kind"] == "numpy_matmul")["best_s"]
    lines = [
        "<!-- W1-core begin -->",
        "## Core: fit + on_loss, binary logistic (issue 2)",
        "",
        f"n = {args.n}, d = {args.d}, q = {args.q}, l2 = {args.l2:g}, float64; best of {args.repeat}, "
        "each measurement in its own process, all in one run.",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}.",
        "",
        f"Command: `{cmd}`",
        "",
        "| what | time (s) | ratio to the floor | fit (s) | influence (s) | peak RSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "numpy_matmul": f"floor: NumPy (n x {args.d + 1}) @ ({args.d + 1} x {args.q})",
        "upweight": "upweight: fit + Influence + on_loss",
        "reference": "upweight.reference (NumPy): fit + influence_on_loss",
    }
    for r in rows:
        fit = f"{r['fit_s']:.3f}" if "fit_s" in r else ""
        infl = f"{r['influence_s']:.3f}" if "influence_s" in r else ""
        lines.append(f"| {names[r['kind']]} | {r['best_s']:.3f} | {r['best_s'] / floor:.2f} | {fit} | {infl} | {r['peak_rss_mib']:.0f} |")
    up = next(r for r in rows if r["kind"] == "upweight")
    lines += [
        "",
        f"upweight: {up.get('n_iter')} Newton iterations, {up.get('threads')} threads. "
        f"Agreement with the reference on the first 2000 columns of S: max |difference| = {agree:.1e} "
        "(relative to max |S|).",
        "<!-- W1-core end -->",
    ]
    block = "\n".join(lines) + "\n"
    path = HERE / "RESULTS.md"
    text = path.read_text() if path.exists() else "# upweight benchmark results\n\n"
    if "<!-- W1-core begin -->" in text:
        head, rest = text.split("<!-- W1-core begin -->", 1)
        tail = rest.split("<!-- W1-core end -->", 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
    print(block)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--q", type=int, default=500)
    ap.add_argument("--l2", type=float, default=1e-3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.n, args.d, args.q, args.l2, args.repeat)))
        return
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    env = {**os.environ, "UW_BENCH_OUT": str(out / "w1")}
    rows = []
    for kind in ["numpy_matmul", "upweight", "reference", "numpy_matmul"]:
        cmd = [sys.executable, __file__, "--one", kind, "--n", str(args.n), "--d", str(args.d),
               "--q", str(args.q), "--l2", str(args.l2), "--repeat", str(args.repeat)]
        res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(res, file=sys.stderr)
        rows.append(res)
    # the floor is measured before and after the others; keep the faster
    floors = [r for r in rows if r["kind"] == "numpy_matmul"]
    best = min(floors, key=lambda r: r["best_s"])
    rows = [best] + [r for r in rows if r["kind"] != "numpy_matmul"]
    a = np.load(out / "w1_upweight.npy")
    b = np.load(out / "w1_reference.npy")
    agree = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    cmd = "python bench/bench_core.py " + " ".join(sys.argv[1:])
    write_results(rows, args, agree, cmd.strip())


if __name__ == "__main__":
    main()
