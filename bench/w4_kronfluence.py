"""W4 against kronfluence (issue 15): EK-FAC influence of the Fashion-MNIST MLP, upweight and
kronfluence side by side, each against the exact damped Gauss-Newton scores.

Model and data: the W4 net (MLP 784-128-10, tanh, softmax cross-entropy, l2 = 1e-4; the parameters
of bench/out/w4_theta_n60000.npy, 100 L-BFGS iterations on Fashion-MNIST train), n = 60000 training
rows, q = 100 seeded test points, float64 throughout, 2 threads for every library.

Damping: 0.01 for upweight's (G + 2 l2 M + damping I), kronfluence's ``damping_factor`` 0.01 +
2 l2 (its curvature is the data part alone, so the penalty's 2 l2 goes into its damping, as in
perf_peers.py's W2; the unpenalised biases make the two differ there only). At the default
damping ("auto", 9.3e-5 here) the exact solve takes thousands of CG iterations per query
(RESULTS.md W4), so the exact reference is computed at 0.01: ``Influence(net, X, y, damping=0.01,
solver="cg", rtol=1e-6)`` for the first ``--exact-queries`` (10) queries, once (job ``exact``,
untimed, saved).

Jobs (each in its own process, interleaved over ``--rounds`` rounds, order reversed every other
round, the other processes' load recorded per run, medians over quiet runs):
  upweight_ekfac        ``Influence(net, X, y, curvature="ekfac", damping=0.01, residuals=False).on_loss(Xq, yq)``
  upweight_ekfac_s1     the same with ``kfac_samples=1`` (one sampled label per row: kronfluence's estimator)
  kronfluence           kronfluence EK-FAC (``use_empirical_fisher=False``: sampled labels), float64
                        factors, eigendecompositions and scores, ``fit_all_factors`` + ``compute_pairwise_scores``
Agreement with the exact scores on the reference queries: Pearson (all entries), Spearman per
query (mean), top-10 overlap of the helpful and harmful ends; kronfluence's scores K converted
to upweight's S = -K / W (its sum-loss convention, sign of a loss decrease).

    python bench/w4_kronfluence.py [--only exact,run] [--rounds 2] [--exact-queries 10]
    python bench/w4_kronfluence.py --report bench/out/w4kf_<stamp>.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from ab_restructure import env_for, load_before, repeat_timed  # this folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DATA = OUT / "w4kf"
DAMPING = 0.01
JOBS = ("upweight_ekfac", "upweight_ekfac_s1", "kronfluence")


def data():
    import upweight as uw

    X, y = uw.load_fashion_mnist("train")
    Xte, yte = uw.load_fashion_mnist("test")
    q = np.sort(np.random.default_rng(0).choice(len(Xte), 100, replace=False))
    net = uw.MLPClassifier(hidden=(128,), l2=1e-4)
    net.set_theta(np.load(OUT / "w4_theta_n60000.npy"), n_features=784)
    return net, X, y.astype(np.float64), Xte[q], yte[q].astype(np.float64)


def job_exact(n_exact: int) -> dict:
    import upweight as uw

    net, X, y, Xq, yq = data()
    t0 = time.perf_counter()
    inf = uw.Influence(net, X, y, damping=DAMPING, solver="cg", rtol=1e-6)
    S = inf.on_loss(Xq[:n_exact], yq[:n_exact])
    DATA.mkdir(parents=True, exist_ok=True)
    np.save(DATA / "exact.npy", S)
    info = inf.solve_info
    return {"seconds": time.perf_counter() - t0, "iterations": info.iterations.tolist(), "max_residual": float(info.residuals.max())}


def job_upweight(samples: int | None):
    import upweight as uw

    net, X, y, Xq, yq = data()
    out = {}

    def once():
        t0 = time.perf_counter()
        inf = uw.Influence(net, X, y, curvature="ekfac", damping=DAMPING, residuals=False, kfac_samples=samples)
        t1 = time.perf_counter()
        out["S"] = inf.on_loss(Xq, yq)
        return {"build": t1 - t0, "query": time.perf_counter() - t1}, {}
    return once, out


def job_kronfluence():
    import logging

    import torch
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from perf_peers import kron_task
    from torch import nn
    from torch.utils.data import TensorDataset

    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net, X, y, Xq, yq = data()
    W1, W2 = net.coefs_
    b1, b2 = net.intercepts_
    model = nn.Sequential(nn.Linear(784, 128), nn.Tanh(), nn.Linear(128, 10)).to(torch.float64)
    with torch.no_grad():
        for lin, w, b in ((model[0], W1, b1), (model[2], W2, b2)):
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            lin.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))
    task = kron_task(False)
    model = prepare_model(model, task)
    f64 = torch.float64
    fargs = FactorArguments(strategy="ekfac", covariance_max_examples=None, lambda_max_examples=None,
                            activation_covariance_dtype=f64, gradient_covariance_dtype=f64, per_sample_gradient_dtype=f64,
                            lambda_dtype=f64, eigendecomposition_dtype=f64)
    sargs = ScoreArguments(damping_factor=DAMPING + 2 * net.l2, per_sample_gradient_dtype=f64, precondition_dtype=f64,
                           score_dtype=f64, query_gradient_svd_dtype=f64)

    def ds(A, b):
        return TensorDataset(torch.from_numpy(A.astype(np.float64)), torch.from_numpy(b.astype(np.int64)))

    tmp = tempfile.mkdtemp(prefix="w4kf_")
    analyzer = Analyzer(analysis_name="w4kf", model=model, task=task, cpu=True, disable_tqdm=True, output_dir=tmp)

    def run(name, tr, qu, qb):
        t0 = time.perf_counter()
        analyzer.fit_all_factors(factors_name=f"f_{name}", dataset=tr, per_device_batch_size=1024, factor_args=fargs,
                                 overwrite_output_dir=True)
        t1 = time.perf_counter()
        analyzer.compute_pairwise_scores(scores_name=f"s_{name}", factors_name=f"f_{name}", query_dataset=qu, train_dataset=tr,
                                         per_device_query_batch_size=qb, per_device_train_batch_size=1024, score_args=sargs,
                                         overwrite_output_dir=True)
        K = analyzer.load_pairwise_scores(scores_name=f"s_{name}")["all_modules"]
        return K, t1 - t0, time.perf_counter() - t1

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run("warm", ds(X[:1024], y[:1024]), ds(Xq[:4], yq[:4]), 4)  # warm-up, untimed

    def once():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            K, tf, ts = run("main", ds(X, y), ds(Xq, yq), len(Xq))
        out["S"] = -K.to(torch.float64).numpy() / X.shape[0]  # upweight's convention
        shutil.rmtree(tmp, ignore_errors=True)
        return {"build": tf, "query": ts}, {"torch": torch.__version__}
    return once, out


def run_job(name: str) -> dict:
    once, out = job_kronfluence() if name == "kronfluence" else job_upweight(1 if name.endswith("_s1") else None)
    best, times, info, during = repeat_timed(once, 1)
    DATA.mkdir(parents=True, exist_ok=True)
    np.save(DATA / f"S_{name}.npy", out["S"])
    return {"best": best, "during": during, "info": info}


def agreement(S: np.ndarray, R: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    S = S[:R.shape[0]]
    idx = np.arange(R.shape[1])

    def top(A, sign):
        return [np.lexsort((idx, sign * a))[:10] for a in A]

    ov = {end: float(np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(top(S, s), top(R, s), strict=True)]))
          for end, s in (("helpful", 1), ("harmful", -1))}
    return {"pearson": float(np.corrcoef(S.ravel(), R.ravel())[0, 1]),
            "spearman": float(np.mean([spearmanr(a, b)[0] for a, b in zip(S, R, strict=True)])), **ov}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="exact,run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--exact-queries", type=int, default=10)
    ap.add_argument("--quiet-cpu", type=float, default=25.0)
    ap.add_argument("--one")
    ap.add_argument("--report")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(job_exact(args.exact_queries) if args.one == "exact" else run_job(args.one)))
        return
    if args.report:
        print(render(json.loads(Path(args.report).read_text())))
        return
    doc: dict = {"runs": [], "damping": DAMPING}
    dest = OUT / f"w4kf_{time.strftime('%Y%m%d_%H%M%S')}.json"

    def spawn(name: str) -> dict:
        rec = {"job": name, "load_before": load_before()}
        lib = "kronfluence" if name == "kronfluence" else "upweight"
        p = subprocess.run([sys.executable, __file__, "--one", name, "--exact-queries", str(args.exact_queries)],
                           capture_output=True, text=True, cwd=str(HERE), env=env_for(lib))
        if p.returncode:
            rec["error"] = p.stderr[-2000:]
        else:
            rec |= json.loads(p.stdout.strip().splitlines()[-1])
        return rec

    if "exact" in args.only:
        doc["exact"] = spawn("exact")
        print(f"exact: {doc['exact']}", file=sys.stderr)
        dest.write_text(json.dumps(doc, indent=1))
    if "run" in args.only:
        for r in range(args.rounds):
            for name in (JOBS if r % 2 == 0 else JOBS[::-1]):
                rec = spawn(name) | {"round": r}
                if "error" not in rec:
                    rec["quiet"] = max(rec["load_before"]["others_cpu_pct"], rec["during"]["others_cpu_pct"]) < args.quiet_cpu
                doc["runs"].append(rec)
                print(f"round {r} {name}: {rec.get('best', rec.get('error'))}", file=sys.stderr)
                dest.write_text(json.dumps(doc, indent=1))
        R = np.load(DATA / "exact.npy")
        doc["agreement"] = {name: agreement(np.load(DATA / f"S_{name}.npy"), R) for name in JOBS}
        doc["agreement"]["upweight_ekfac vs kronfluence"] = agreement(np.load(DATA / "S_upweight_ekfac_s1.npy"),
                                                                      np.load(DATA / "S_kronfluence.npy"))
        dest.write_text(json.dumps(doc, indent=1))
    print(render(doc))


def render(doc: dict) -> str:
    lines = [f"damping {doc['damping']} (kronfluence: + 2 l2)"]
    if "exact" in doc and "error" not in doc["exact"]:
        e = doc["exact"]
        lines.append(f"exact reference: {len(e['iterations'])} queries, CG {min(e['iterations'])}-{max(e['iterations'])} iterations, "
                     f"max residual {e['max_residual']:.1e}, {e['seconds']:.0f} s")
    lines += ["", "| round | job | others' CPU before / during (% core) | build (s) | query (s) | total (s) |",
              "|---|---|---:|---:|---:|---:|"]
    for r in doc["runs"]:
        if "error" in r:
            lines.append(f"| {r['round']} | {r['job']} | error: {r['error'][-200:]!r} |")
            continue
        b = r["best"]
        lines.append(f"| {r['round']} | {r['job']} | {r['load_before']['others_cpu_pct']:.0f} / {r['during']['others_cpu_pct']:.0f} | "
                     f"{b['build']:.1f} | {b['query']:.1f} | {b['total']:.1f} |")
    lines += ["", "| job | quiet runs | median total (s) | Pearson | Spearman | top-10 helpful / harmful |",
              "|---|---:|---:|---:|---:|---:|"]
    for name in JOBS:
        runs = [r for r in doc["runs"] if r["job"] == name and "error" not in r]
        quiet = [r for r in runs if r["quiet"]] or runs
        a = doc.get("agreement", {}).get(name)
        med = statistics.median(r["best"]["total"] for r in quiet) if quiet else float("nan")
        agree = f"{a['pearson']:.4f} | {a['spearman']:.4f} | {a['helpful']:.2f} / {a['harmful']:.2f}" if a else " | | "
        lines.append(f"| {name} | {sum(r['quiet'] for r in runs)}/{len(runs)} | {med:.1f} | {agree} |")
    if "agreement" in doc:
        a = doc["agreement"]["upweight_ekfac vs kronfluence"]
        lines.append(f"\nupweight EK-FAC (1 sampled label) against kronfluence's scores: Pearson {a['pearson']:.4f}, "
                     f"top-10 overlap {a['helpful']:.2f} / {a['harmful']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
