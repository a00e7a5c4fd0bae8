"""Which stage-1 scorer for the prefilter (issue 15; DESIGN-networks.md section 6): recall@10 of each
scorer's top c k candidates against the exhaustive top-10, per candidate count c k, on

  digits   MLP 64-32-10 (tanh, l2 = 1e-3) on the first 1500 digits, q = 100 of the other 297 + 1500
           (seeded), exact damped Gauss-Newton influence (damping "auto"), the exhaustive scores
           from ``Influence.on_loss``;
  fmnist   the W4 net, MLP 784-128-10 (tanh, l2 = 1e-4, 100 L-BFGS iterations) on Fashion-MNIST
           train (``--n`` rows, default 60000), q = 100 test points (seeded), with curvature="ekfac"
           (the exact damped G solve costs ~64 s per query here, RESULTS.md W4): the exhaustive
           scores are EK-FAC's, and every scorer is judged against them.

Scorers:
  last-layer   upweight's stage 1 (``LastLayer``: the exact damped influence of the last layer,
               the layers below frozen).
  proj-white D a whitened Gaussian projection (the spec's): rows P E^{-1/2} (g_m + 2 l2 M theta)
               against P E^{-1/2} g_t, P with N(0, 1/D) entries (seeded), E the curvature the
               influence solves with (digits: G + damping I exactly; fmnist: EK-FAC + damping, in
               its eigenbasis from ``save_curvature``), so the sketch is unbiased for the exact
               scores and only its variance costs recall.
  proj D       the unwhitened projection: P (g_m + 2 l2 M theta) against P E^{-1} g_t.

recall@k = |true top-k ∩ candidates| / k per query, the mean over queries, with a query's
candidates the scorer's top c k of both ends (as the prefilter keeps them), for the helpful (most
negative) and harmful (most positive) true ends; the table shows the worse end (what the
prefilter's target is checked on) and both.

    python bench/prefilter_recall.py [--only digits,fmnist] [--n 60000] [--dims 64,256,1024]

Prints a Markdown table; writes bench/out/prefilter_recall.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import upweight as uw
from upweight.networks import LastLayer

OUT = Path(__file__).resolve().parent / "out"
K = 10
COUNTS = [10, 20, 40, 80, 160, 320, 640, 1280, 2560]


def top_ends(S: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the m smallest and m largest entries' columns (ties to the lower index)."""
    idx = np.arange(S.shape[1])
    lo = np.array([np.lexsort((idx, s))[:m] for s in S])
    hi = np.array([np.lexsort((idx, -s))[:m] for s in S])
    return lo, hi


def recall_curve(exact: np.ndarray, approx: np.ndarray) -> dict[int, tuple[float, float]]:
    """c k -> (helpful recall, harmful recall)."""
    t_lo, t_hi = top_ends(exact, K)
    counts = [c for c in COUNTS if c <= exact.shape[1]]
    a_lo, a_hi = top_ends(approx, counts[-1])

    def rec(t, c):  # a query's candidates are both ends' c k
        return float(np.mean([np.intersect1d(x, np.union1d(lo[:c], hi[:c])).size / K for x, lo, hi in zip(t, a_lo, a_hi, strict=True)]))

    return {c: (rec(t_lo, c), rec(t_hi, c)) for c in counts}


def penalty_term(net, theta: np.ndarray) -> np.ndarray:
    """2 l2 M theta (the bias columns unpenalised), the term every training gradient carries."""
    out, start = np.zeros_like(theta), 0
    for a, b in zip(net.sizes()[:-1], net.sizes()[1:], strict=True):
        block = theta[start:start + b * (a + 1)].reshape(b, a + 1).copy()
        block[:, -1] = 0.0
        out[start:start + block.size] = 2 * net.l2 * block.ravel()
        start += block.size
    return out


class ExactWhitening:
    """E^{-1/2} and E^{-1} for E = G + damping I, formed (small p)."""

    def __init__(self, inf):
        G = inf._core_model.hessian(inf._theta, inf.X, inf.y, inf.sample_weight, inf.l2)
        vals, vecs = np.linalg.eigh(G + inf.damping * np.eye(G.shape[0]))
        self.half = (vecs / np.sqrt(vals)) @ vecs.T
        self.inv = (vecs / vals) @ vecs.T

    def white(self, g: np.ndarray) -> np.ndarray:
        return g @ self.half

    def solve(self, g: np.ndarray) -> np.ndarray:
        return g @ self.inv


class EkfacWhitening:
    """E^{-1/2} for E = EK-FAC + damping, per layer in its eigenbasis (saved curvature): the
    rotated coordinates Q_S^T G_l Q_A scaled by sqrt(1 / (Lam + damping)); the output basis
    is not rotated back (a Gaussian projection does not see the rotation). Training gradients are
    rank one per layer, s a^T with s the bias column, so only s and a are rotated."""

    def __init__(self, inf, sizes: list[int]):
        with tempfile.TemporaryDirectory() as tmp:
            inf.save_curvature(Path(tmp) / "c.npz")
            st = dict(np.load(Path(tmp) / "c.npz"))
        self.layers = []
        start = 0
        for j, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.layers.append((slice(start, start + b * (a + 1)), b, a + 1, st[f"layer{j}.qs"], st[f"layer{j}.qa"], st[f"layer{j}.inv"]))
            start += b * (a + 1)

    def white(self, g: np.ndarray, rank_one: bool = False) -> np.ndarray:
        out = np.empty_like(g)
        for sl, rows, cols, qs, qa, inv in self.layers:
            blk = g[:, sl].reshape(-1, rows, cols)
            if rank_one:  # s a^T with a's last entry 1: s is the bias column, a = s^T G / s^T s
                s = blk[:, :, -1]
                ss = np.einsum("ij,ij->i", s, s)
                a = np.einsum("ij,ijk->ik", s, blk) / np.where(ss > 0, ss, 1.0)[:, None]
                rot = (s @ qs)[:, :, None] * (a @ qa)[:, None, :]
            else:
                rot = qs.T @ blk @ qa
            out[:, sl] = (rot * np.sqrt(inv)).reshape(g.shape[0], -1)
        return out


def digits_case():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X, y = X / 16.0, y.astype(np.float64)
    Xtr, ytr = X[:1500], y[:1500]
    net = uw.MLPClassifier(hidden=(32,), l2=1e-3, random_state=0).fit(Xtr, ytr)
    q = np.sort(np.random.default_rng(1).choice(len(X), 100, replace=False))
    return "digits", net, Xtr, ytr, X[q], y[q], "gauss-newton"


def fmnist_case(n: int):
    Xtr, ytr = uw.load_fashion_mnist("train")
    Xte, yte = uw.load_fashion_mnist("test")
    Xtr, ytr = Xtr[:n], ytr[:n].astype(np.float64)
    theta_path = OUT / f"w4_theta_n{n}.npy"
    net = uw.MLPClassifier(hidden=(128,), l2=1e-4, max_iter=100, newton_iter=0)
    if theta_path.exists():
        net.set_theta(np.load(theta_path), n_features=784)
    else:
        net.fit(Xtr, ytr)
        OUT.mkdir(exist_ok=True)
        np.save(theta_path, net.get_theta())
    q = np.sort(np.random.default_rng(0).choice(len(Xte), 100, replace=False))
    return "fmnist", net, Xtr, ytr, Xte[q], yte[q].astype(np.float64), "ekfac"


def measure(case, dims: list[int]) -> dict:
    name, net, X, y, Xq, yq, curvature = case
    t0 = time.perf_counter()
    inf = uw.Influence(net, X, y, curvature=curvature)
    G = inf.loss_grads(Xq, yq)
    exact = inf.on(G)
    print(f"{name}: exhaustive scores {exact.shape} in {time.perf_counter() - t0:.1f} s (damping {inf.damping:.3g})", file=sys.stderr)
    W = inf.total_weight
    out = {"n": X.shape[0], "p": inf.n_params, "q": G.shape[0], "curvature": curvature, "damping": inf.damping, "curves": {}}
    last = LastLayer(net, inf._theta, l2=inf.l2)
    a, b = last.range
    S1 = uw.Influence(last, X, y, damping=inf.damping).on(G[:, a:b])
    out["curves"]["last-layer"] = recall_curve(exact, S1)
    out["last_layer_params"] = b - a
    white = ExactWhitening(inf) if curvature == "gauss-newton" else EkfacWhitening(inf, net.sizes())
    c = penalty_term(net, inf._theta)
    rng = np.random.default_rng(0)
    core, theta = net.core_model(), inf._theta
    for D in dims:
        P = rng.standard_normal((inf.n_params, D)) / np.sqrt(D)
        if isinstance(white, ExactWhitening):
            qw, qs = white.white(G) @ P, white.solve(G) @ P
            cw, cs = white.white(c[None, :]) @ P, c[None, :] @ P
        else:
            qw, qs, cw, cs = white.white(G) @ P, None, white.white(c[None, :]) @ P, None
        rows_w, rows = [], []
        for s0 in range(0, X.shape[0], 1000):
            g = core.per_example_grads(theta, X[s0:s0 + 1000], y[s0:s0 + 1000])
            rows_w.append((white.white(g, rank_one=True) if isinstance(white, EkfacWhitening) else white.white(g)) @ P + cw)
            if qs is not None:
                rows.append(g @ P + cs)
        out["curves"][f"proj-white {D}"] = recall_curve(exact, -qw @ np.vstack(rows_w).T / W)
        if qs is not None:
            out["curves"][f"proj {D}"] = recall_curve(exact, -qs @ np.vstack(rows).T / W)
        print(f"{name}: D = {D} done at {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if isinstance(white, EkfacWhitening):  # the whitening itself is exact: D = p reproduces EK-FAC's scores
        g = core.per_example_grads(theta, X[:50], y[:50])
        direct = -white.white(G) @ (white.white(g, rank_one=True) + white.white(c[None, :])).T / W
        out["whitening_check"] = float(np.abs(direct - exact[:, :50]).max() / np.abs(exact[:, :50]).max())
    return out


def table(results: dict) -> str:
    lines = []
    for name, r in results.items():
        lines.append(f"\n**{name}** (n = {r['n']}, p = {r['p']}, last layer {r['last_layer_params']} parameters, q = {r['q']}, "
                     f"curvature {r['curvature']}, damping {r['damping']:.3g})\n")
        counts = sorted({int(c) for cur in r["curves"].values() for c in cur})
        lines.append("| scorer | " + " | ".join(f"c k = {c}" for c in counts) + " |")
        lines.append("|---|" + "---:|" * len(counts))
        for scorer, cur in r["curves"].items():
            cells = [f"{min(cur[c]):.2f} ({cur[c][0]:.2f}/{cur[c][1]:.2f})" if c in cur else "" for c in counts]
            lines.append(f"| {scorer} | " + " | ".join(cells) + " |")
        if "whitening_check" in r:
            lines.append("\nWhitening check (D = p, no projection, against EK-FAC's scores): "
                         f"max rel. difference {r['whitening_check']:.1e}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="digits,fmnist")
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--dims", default="64,256,1024")
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]
    results = {}
    for which in args.only.split(","):
        case = digits_case() if which == "digits" else fmnist_case(args.n)
        results[which] = measure(case, dims)
        OUT.mkdir(exist_ok=True)
        (OUT / "prefilter_recall.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
