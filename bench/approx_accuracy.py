"""Accuracy (and cost) of the approximate solvers against the exact damped solve (issue 15).

    python bench/approx_accuracy.py [--only digits_glm,digits_mlp,w2_fmnist] [--ranks 10,50,100]

For each workload and each damping (0.1 x the mean eigenvalue of the curvature, tr(G) / p, and
0.1 x its largest), the score matrix S (q x n) of ``on_loss`` from ``solver="arnoldi"`` (both
inverses) and, for networks, ``curvature="kfac"`` and ``"ekfac"``, against the exact one
(``solver="direct"``, same damping): per query, the Pearson and Spearman correlations over the n
training points and the overlap of the 10 most helpful and the 10 most harmful points (mean over
queries). Times are of one process, built and queried once each (indicative: the exact solve forms
and factors G, Arnoldi takes ``steps`` passes over the data, K-FAC one and EK-FAC two).

Workloads: digits_glm (multinomial, 1500 train / 100 test digits, p = 650), digits_net (the same
model as a network without hidden layers, MLPClassifier(hidden=()), for K-FAC and EK-FAC), digits_mlp (64-32-10
tanh MLP, Gauss-Newton, p = 2410), w2_fmnist (multinomial on the first 20000 Fashion-MNIST
images, 100 test images, p = 7850; Debian's dataset-fashion-mnist). Writes
bench/out/approx_accuracy.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))

OUT = Path(__file__).resolve().parent / "out"


def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    return X[:1500], y[:1500].astype(float), X[1500:1600], y[1500:1600].astype(float)


def workload(name: str):
    import upweight as uw

    if name == "digits_glm":
        X, y, Xt, yt = digits()
        return uw.LogisticRegression(l2=1e-3).fit(X, y), X, y, Xt, yt
    if name == "digits_net":
        X, y, Xt, yt = digits()
        return uw.MLPClassifier(hidden=(), l2=1e-3).fit(X, y), X, y, Xt, yt
    if name == "digits_mlp":
        X, y, Xt, yt = digits()
        return uw.MLPClassifier(hidden=(32,), l2=1e-3, random_state=0).fit(X, y), X, y, Xt, yt
    if name == "w2_fmnist":
        from perf_peers import fmnist_data

        X, y, Xt, yt = fmnist_data({"n": 20000, "q": 100, "pool": False})
        return uw.LogisticRegression(l2=1e-3, solver="cg").fit(X, y), X, y, Xt, yt
    raise SystemExit(f"unknown workload {name!r}")


def agreement(S: np.ndarray, E: np.ndarray, k: int = 10) -> dict:
    pear, spear, over = [], [], []
    for s, e in zip(S, E, strict=True):
        pear.append(np.corrcoef(s, e)[0, 1])
        spear.append(spearmanr(s, e).statistic)
        top = lambda v: (set(np.argsort(v)[:k]), set(np.argsort(v)[-k:]))  # noqa: E731
        (sh, sm), (eh, em) = top(s), top(e)
        over.append((len(sh & eh) + len(sm & em)) / (2 * k))
    return {"pearson": float(np.mean(pear)), "spearman": float(np.mean(spear)), "top10_overlap": float(np.mean(over)),
            "pearson_min": float(np.min(pear))}


def run(name: str, ranks: list[int]) -> list[dict]:
    import upweight as uw
    from upweight import _core

    model, X, y, Xt, yt = workload(name)
    probe = uw.Influence(model, X, y, solver="arnoldi", rank=1, damping=0.0)
    probe.on_loss(Xt[:1], yt[:1])
    top_eig = float(probe.solve_info.eigenvalues[0])
    # tr(G) / p from the curvature's diagonal, as damping="auto" takes it (no p x p matrix)
    diag = _core.curvature_diag(probe._core_model, probe._theta, probe.X, probe.y, probe.sample_weight, probe.l2)
    mean_eig = float(np.mean(diag))
    null = _core.null_space(probe._core_model, probe.l2)
    dim = probe.n_params - (0 if null is None else null.shape[1])
    rows = []
    for label, damping in (("0.1 x mean", 0.1 * mean_eig), ("0.1 x max", 0.1 * top_eig)):
        t0 = time.perf_counter()
        exact_inf = uw.Influence(model, X, y, solver="direct", damping=damping)
        E = exact_inf.on_loss(Xt, yt)
        t_exact = time.perf_counter() - t0
        configs = [{"solver": "arnoldi", "rank": r, "arnoldi_inverse": inverse}
                   for r in ranks if r <= dim for inverse in ("projection", "exact")]
        if hasattr(model, "default_curvature"):  # networks: K-FAC and EK-FAC too
            configs += [{"curvature": "kfac"}, {"curvature": "ekfac"}]
        for kw in configs:
            t0 = time.perf_counter()
            inf = uw.Influence(model, X, y, damping=damping, **kw)
            S = inf.on_loss(Xt, yt)
            t = time.perf_counter() - t0
            info = inf.solve_info
            method = kw["curvature"] if "curvature" in kw else f"arnoldi r = {kw['rank']}, {kw['arnoldi_inverse']}"
            row = {"workload": name, "p": probe.n_params, "n": len(X), "q": len(Xt), "damping": label, "damping_value": damping,
                   "method": method, "steps": int(info.iterations[0]), "seconds": t, "exact_seconds": t_exact,
                   "max_query_residual": float(info.max_residual), **agreement(S, E)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="digits_glm,digits_net,digits_mlp,w2_fmnist")
    ap.add_argument("--ranks", default="10,50,100")
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    rows = [row for name in args.only.split(",") for row in run(name, ranks)]
    OUT.mkdir(exist_ok=True)
    (OUT / "approx_accuracy.json").write_text(json.dumps(rows, indent=1))
    print("\n| workload (p) | damping | method | steps | Pearson (min) | Spearman | top-10 overlap | max query residual "
          "| time (s) / exact (s) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} ({r['p']}) | {r['damping']} = {r['damping_value']:.3g} | {r['method']} | {r['steps']} | "
              f"{r['pearson']:.4f} ({r['pearson_min']:.3f}) | {r['spearman']:.4f} | {r['top10_overlap']:.2f} | "
              f"{r['max_query_residual']:.2e} | "
              f"{r['seconds']:.2f} / {r['exact_seconds']:.2f} |")


if __name__ == "__main__":
    main()
