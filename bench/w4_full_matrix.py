"""W4's full exact influence (issue 12): all q = 100 test queries of bench/w4_networks.py against
all n = 60000 Fashion-MNIST training rows, damped Gauss-Newton curvature, CG to rtol 1e-6, then
the full q x n score matrix and the top-10 per query, from one solve.

The solve is hours on a 2-core machine (every CG iteration is one Gauss-Newton product per
active query over the 60000 rows), so it runs in chunks of ``--chunk`` queries, each saved to
``bench/out/w4_full/`` as soon as it is solved (written to a temporary file, then renamed): an
interrupted run loses at most the chunk in progress and the next run continues where it stopped.
Per chunk it records the solve time, the CG iterations of each query, the residuals, and the load
from other processes (busy jiffies of the machine minus this process's CPU time, in cores).
Once every chunk is solved, ``SolvedQueries.scores()`` (the 100 x 60000 matrix) and
``SolvedQueries.top_k(k=10)`` are timed on the solved queries, and the top-k is checked against
the matrix.

Needs the parameters trained by ``python bench/w4_networks.py --only train`` (the same net and
queries as W4); setup: ``bash bench/setup.sh``.

    python bench/w4_full_matrix.py [--chunk 20] [--damping 0.01] [--precondition auto] [--quick]
    python bench/w4_full_matrix.py --report          # the table from what is saved
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
from ab_restructure import HZ, proc_stat  # this folder is on sys.path when run as a script
from w4_networks import FULL, OUT, QUICK, load_data, load_net, theta_path

HERE = OUT / "w4_full"


def busy_cores(t0: float, busy0: int, cpu0: float) -> float:
    """Mean cores used by other processes since (t0, busy0, cpu0)."""
    busy, _ = proc_stat()
    r = resource.getrusage(resource.RUSAGE_SELF)
    mine = r.ru_utime + r.ru_stime - cpu0
    return max(0.0, ((busy - busy0) / HZ - mine) / max(time.perf_counter() - t0, 1e-9))


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def save_atomic(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunk", type=int, default=20, help="queries per solve (each saved when done)")
    ap.add_argument("--damping", type=float, default=FULL["damping"])
    ap.add_argument("--precondition", default="auto")
    ap.add_argument("--report", action="store_true", help="only print the table of what is saved")
    ap.add_argument("--quick", action="store_true", help="W4's --quick sizes (n = 6000, q = 10): a smoke run")
    args = ap.parse_args()
    c = dict(QUICK if args.quick else FULL)
    HERE.mkdir(parents=True, exist_ok=True)
    tag = f"n{c['n']}_d{args.damping:g}_{args.precondition}_c{args.chunk}"
    chunks = [(a, min(a + args.chunk, c["q"])) for a in range(0, c["q"], args.chunk)]
    paths = [HERE / f"{tag}_q{a}-{b}.npz" for a, b in chunks]
    if args.report:
        return report(paths, chunks, tag)
    if not theta_path(c).exists():
        raise SystemExit(f"no trained parameters at {theta_path(c)}: run `python bench/w4_networks.py --only train` first")

    import upweight as uw
    from upweight.influence import SolvedQueries

    X, y, Xq, yq = load_data(c)
    net = load_net(c)
    t0 = time.perf_counter()
    inf = uw.Influence(net, X, y, curvature="gauss-newton", damping=args.damping, solver="cg", rtol=c["rtol"],
                       max_iter=100_000, precondition=args.precondition)
    build = time.perf_counter() - t0
    G = inf.loss_grads(Xq, yq)
    print(f"built in {build:.1f} s; damping {inf.damping:g}; {len(chunks)} chunks of {args.chunk} queries", flush=True)
    for (a, b), path in zip(chunks, paths, strict=True):
        if path.exists():
            print(f"queries {a}..{b}: saved earlier", flush=True)
            continue
        t0, busy0, cpu0 = time.perf_counter(), proc_stat()[0], cpu_s()
        sq = inf.solve_queries(G[a:b])
        secs = time.perf_counter() - t0
        si = inf.solve_info
        save_atomic(path, vc=sq._vc, iterations=np.asarray(si.iterations), residuals=np.asarray(si.residuals),
                    converged=np.asarray(si.converged), seconds=secs, others=busy_cores(t0, busy0, cpu0),
                    loadavg=float(open("/proc/loadavg").read().split()[0]))
        print(f"queries {a}..{b}: {secs:.0f} s, iterations {min(si.iterations)}-{max(si.iterations)}", flush=True)
    vc = np.hstack([np.load(p)["vc"] for p in paths])
    sq = SolvedQueries(inf._core_for(c["q"]), vc, c["q"])
    t0 = time.perf_counter()
    S = sq.scores()
    t_scores = time.perf_counter() - t0
    t0 = time.perf_counter()
    tk = sq.top_k(k=c["k_top"])
    t_top = time.perf_counter() - t0
    order, k = np.argsort(S, axis=1, kind="stable"), c["k_top"]
    small, large = np.sort(order[:, :k], axis=1), np.sort(order[:, -k:], axis=1)
    hp, hm = np.sort(tk.helpful_idx, axis=1), np.sort(tk.harmful_idx, axis=1)
    same = bool((np.array_equal(hp, small) and np.array_equal(hm, large)) or (np.array_equal(hp, large) and np.array_equal(hm, small)))
    tail = {"build_s": build, "scores_s": t_scores, "top_k_s": t_top, "S_shape": list(S.shape),
            "top_k_matches_matrix": same, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (HERE / f"{tag}_tail.json").write_text(json.dumps(tail, indent=1))
    report(paths, chunks, tag)


def report(paths, chunks, tag) -> None:
    rows, total = [], 0.0
    print("| queries | solve (s) | CG iterations (min-max) | max residual | others' load (cores) |")
    print("|---|---:|---:|---:|---:|")
    for (a, b), p in zip(chunks, paths, strict=True):
        if not p.exists():
            print(f"| {a}..{b} | not solved yet | | | |")
            continue
        z = np.load(p)
        total += float(z["seconds"])
        rows.append(z)
        print(f"| {a}..{b} | {float(z['seconds']):.0f} | {int(z['iterations'].min())}-{int(z['iterations'].max())} | "
              f"{float(z['residuals'].max()):.1e} | {float(z['others']):.2f} |")
    print(f"\nsolved {sum(len(z['iterations']) for z in rows)} queries in {total:.0f} s ({total / 3600:.2f} h)")
    tail = HERE / f"{tag}_tail.json"
    if tail.exists():
        print(json.dumps(json.loads(tail.read_text()), indent=1))


if __name__ == "__main__":
    main()
