"""W5 (issue 15): the prefiltered top-10 against the exhaustive one at n >= 1e6 memmapped rows.

Data: Fashion-MNIST train (60000 images, pixels / 255) and 16 pixel shifts of it (every (dx, dy)
in {-2..2}^2 with 0 < dx^2 + dy^2 <= 5, zero fill), n = 1,020,000 rows, written once as a float32
.npy file (3.2 GB) and read memmapped (``Influence(net, "X.npy", y)``: block by block, never held).
Model: the W4 net (MLP 784-128-10, tanh, l2 = 1e-4, 100 L-BFGS iterations on the 60000 originals;
the same parameters as bench/prefilter_recall.py, bench/out/w4_theta_n60000.npy). Curvature:
EK-FAC with damping "auto" (0.1 x mean of G's diagonal over the n rows): the exact damped G solve
costs ~64 s per query at n = 60000 (RESULTS.md W4), so at this n the solve is the approximation
and the prefilter is judged against the exhaustive scan with the same solve. q = 100 test points
(seeded), k = 10.

  prepare    (once, untimed): the data file, damping "auto", the EK-FAC factors saved with
             ``save_curvature`` (so each job loads them: ``curvature_file=``).
  exhaustive ``Influence(net, X, y, curvature="ekfac", damping=D, curvature_file=F).top_k(Xq, yq, k=10)``
  prefilter  the same with ``prefilter="last-layer"`` (default target recall 0.95, 10 sampled
             queries scored exhaustively)
  prefilter_fixed  ``prefilter="last-layer", candidates=C, recall_queries=0``: the two stages
             alone, no recall estimate (C = ``--fixed-candidates``, default 160)

Each job runs in its own process (construction and query timed apart), jobs interleaved over
``--rounds`` rounds (order swapped every round), the other processes' load recorded per run;
medians over quiet runs. The report gives the prefilter's reported recall, its true recall
against the exhaustive top-10 on all 100 queries, the candidates it chose, and whether every
score it reports equals the exhaustive scan's score of that row.

    python bench/w5_prefilter.py [--rounds 2] [--copies 17] [--only prepare,run]
    python bench/w5_prefilter.py --report bench/out/w5_<stamp>.json

Writes bench/out/w5_<stamp>.json (after every run) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ab_restructure import load_before, repeat_timed  # this folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DATA = OUT / "w5"
SHIFTS = [(0, 0)] + sorted(((dx, dy) for dx in range(-2, 3) for dy in range(-2, 3) if 0 < dx * dx + dy * dy <= 5),
                           key=lambda s: (s[0] ** 2 + s[1] ** 2, s))
JOBS = ("exhaustive", "prefilter", "prefilter_fixed")


def shifted(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Images (m x 784) shifted by (dx, dy) pixels, zero fill."""
    a = images.reshape(-1, 28, 28)
    out = np.zeros_like(a)
    ys, yd = (slice(0, 28 - dy), slice(dy, 28)) if dy >= 0 else (slice(-dy, 28), slice(0, 28 + dy))
    xs, xd = (slice(0, 28 - dx), slice(dx, 28)) if dx >= 0 else (slice(-dx, 28), slice(0, 28 + dx))
    out[:, yd, xd] = a[:, ys, xs]
    return out.reshape(-1, 784)


def net_and_queries():
    import upweight as uw

    theta_path = OUT / "w4_theta_n60000.npy"
    net = uw.MLPClassifier(hidden=(128,), l2=1e-4, max_iter=100, newton_iter=0)
    Xtr, ytr = uw.load_fashion_mnist("train")
    if theta_path.exists():
        net.set_theta(np.load(theta_path), n_features=784)
    else:
        net.fit(Xtr, ytr.astype(np.float64))
        np.save(theta_path, net.get_theta())
    Xte, yte = uw.load_fashion_mnist("test")
    q = np.sort(np.random.default_rng(0).choice(len(Xte), 100, replace=False))
    return net, Xtr, ytr, Xte[q], yte[q].astype(np.float64)


def prepare(copies: int) -> dict:
    import upweight as uw

    DATA.mkdir(parents=True, exist_ok=True)
    net, Xtr, ytr, _, _ = net_and_queries()
    n = copies * len(Xtr)
    path = DATA / f"X_{copies}.npy"
    if not path.exists():
        X = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, 784))
        for c, (dx, dy) in enumerate(SHIFTS[:copies]):
            X[c * len(Xtr):(c + 1) * len(Xtr)] = shifted(Xtr.astype(np.float32), dx, dy)
        X.flush()
        del X
        path.with_suffix(".tmp.npy").rename(path)
    y = np.tile(ytr.astype(np.float64), copies)
    np.save(DATA / f"y_{copies}.npy", y)
    t0 = time.perf_counter()
    inf = uw.Influence(net, str(path), y, curvature="ekfac", residuals=False)
    inf.inverse_hvp(np.ones(inf.n_params))  # prepares the factors
    curv = DATA / f"ekfac_{copies}.npz"
    inf.save_curvature(curv, force=True)
    meta = {"n": n, "damping": inf.damping, "prepare_s": time.perf_counter() - t0, "p": inf.n_params}
    (DATA / f"meta_{copies}.json").write_text(json.dumps(meta))
    return meta


def job(name: str, copies: int, fixed: int) -> dict:
    import upweight as uw

    meta = json.loads((DATA / f"meta_{copies}.json").read_text())
    net, _, _, Xq, yq = net_and_queries()
    y = np.load(DATA / f"y_{copies}.npy")
    out: dict = {}

    def once():
        t0 = time.perf_counter()
        inf = uw.Influence(net, str(DATA / f"X_{copies}.npy"), y, curvature="ekfac", damping=meta["damping"],
                           curvature_file=DATA / f"ekfac_{copies}.npz", residuals=False)
        t1 = time.perf_counter()
        if name == "exhaustive":
            top = inf.top_k(Xq, yq, k=10)
        elif name == "prefilter":
            top = inf.top_k(Xq, yq, k=10, prefilter="last-layer")
        else:
            top = inf.top_k(Xq, yq, k=10, prefilter="last-layer", candidates=fixed, recall_queries=0)
        t2 = time.perf_counter()
        out["top"] = top
        return {"construct": t1 - t0, "query": t2 - t1}, {"recall": top.recall, "candidates": top.candidates}

    best, times, info, during = repeat_timed(once, 1)
    top = out["top"]
    np.savez(DATA / f"top_{name}_{copies}.npz", *top.as_tuple())
    return {"best": best, "during": during, "info": info}


def true_recall(copies: int, name: str) -> dict:
    ex = np.load(DATA / f"top_exhaustive_{copies}.npz")
    pf = np.load(DATA / f"top_{name}_{copies}.npz")
    rec = {}
    for end, (i, s) in (("helpful", ("arr_0", "arr_1")), ("harmful", ("arr_2", "arr_3"))):
        rec[end] = float(np.mean([np.intersect1d(a, b).size / a.size for a, b in zip(ex[i], pf[i], strict=True)]))
        # each score the prefilter reports is the exhaustive scan's score of that row, where both have the row
        same = [np.allclose(pf[s][j][np.isin(pf[i][j], ex[i][j])], ex[s][j][np.isin(ex[i][j], pf[i][j])], rtol=1e-6, atol=0)
                for j in range(len(ex[i]))]
        rec[end + "_scores_equal"] = bool(all(same))
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--copies", type=int, default=17)
    ap.add_argument("--only", default="prepare,run")
    ap.add_argument("--quiet-cpu", type=float, default=25.0)
    ap.add_argument("--fixed-candidates", type=int, default=160)
    ap.add_argument("--jobs", default=",".join(JOBS), help="the jobs to run (the recall needs a saved exhaustive run)")
    ap.add_argument("--one")
    ap.add_argument("--report")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(job(args.one, args.copies, args.fixed_candidates)))
        return
    if args.report:
        print(render(json.loads(Path(args.report).read_text())))
        return
    doc: dict = {"runs": [], "copies": args.copies}
    stamp = time.strftime("%Y%m%d_%H%M%S")
    dest = OUT / f"w5_{stamp}.json"
    if "prepare" in args.only:
        doc["prepare"] = prepare(args.copies)
        print(f"prepared: {doc['prepare']}", file=sys.stderr)
    doc["meta"] = json.loads((DATA / f"meta_{args.copies}.json").read_text())
    if "run" in args.only:
        jobs = tuple(args.jobs.split(","))
        for r in range(args.rounds):
            for name in (jobs if r % 2 == 0 else jobs[::-1]):
                rec = {"round": r, "job": name, "load_before": load_before()}
                cmd = [sys.executable, __file__, "--one", name, "--copies", str(args.copies),
                       "--fixed-candidates", str(args.fixed_candidates)]
                p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(HERE))
                if p.returncode:
                    rec["error"] = p.stderr[-2000:]
                else:
                    rec |= json.loads(p.stdout.strip().splitlines()[-1])
                    others = (rec["load_before"]["others_cpu_pct"], rec["during"]["others_cpu_pct"])
                    rec["quiet"] = max(others) < args.quiet_cpu
                doc["runs"].append(rec)
                print(f"round {r} {name}: {rec.get('best', rec.get('error'))}", file=sys.stderr)
                dest.write_text(json.dumps(doc, indent=1))
        doc["true_recall"] = {name: true_recall(args.copies, name) for name in JOBS[1:]}
        dest.write_text(json.dumps(doc, indent=1))
    print(render(doc))


def render(doc: dict) -> str:
    m = doc["meta"]
    lines = [f"n = {m['n']}, p = {m['p']}, EK-FAC damping {m['damping']:.3g}; prepare (damping + factors, once) "
             f"{doc.get('prepare', m).get('prepare_s', float('nan')):.0f} s", "",
             "| round | job | load before (cores) | others' CPU before / during (% core) | construct (s) | query (s) "
             "| recall reported | candidates |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        if "error" in r:
            lines.append(f"| {r['round']} | {r['job']} | error: {r['error'][-200:]!r} |")
            continue
        b, i = r["best"], r["info"]
        lines.append(f"| {r['round']} | {r['job']} | {r['load_before']['loadavg'][0]:.2f} | {r['load_before']['others_cpu_pct']:.0f} / "
                     f"{r['during']['others_cpu_pct']:.0f} | {b['construct']:.1f} | {b['query']:.1f} | "
                     f"{'' if i['recall'] is None else format(i['recall'], '.2f')} | {i['candidates'] or ''} |")
    lines += ["", "| job | quiet runs | median construct (s) | median query (s) | median total (s) |", "|---|---:|---:|---:|---:|"]
    for name in JOBS:
        runs = [r for r in doc["runs"] if r["job"] == name and "error" not in r]
        quiet = [r for r in runs if r["quiet"]] or runs
        if quiet:
            med = {ph: statistics.median(r["best"][ph] for r in quiet) for ph in ("construct", "query", "total")}
            lines.append(f"| {name} | {sum(r['quiet'] for r in runs)}/{len(runs)} | {med['construct']:.1f} | {med['query']:.1f} "
                         f"| {med['total']:.1f} |")
    for name, t in doc.get("true_recall", {}).items():
        same = t["helpful_scores_equal"] and t["harmful_scores_equal"]
        lines.append(f"\nTrue recall@10 of {name} against the exhaustive top-10 (all 100 queries): helpful {t['helpful']:.3f}, "
                     f"harmful {t['harmful']:.3f}; reported scores equal the exhaustive ones: {same}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
