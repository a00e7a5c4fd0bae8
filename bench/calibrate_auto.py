"""Measure the constants of ``solver="auto"``'s cost model (python/upweight/solver.py) on this
machine, then check the rule: for a few problem shapes, time both solvers end to end and compare
the faster one with the rule's pick.

    python bench/calibrate_auto.py            # prints constants and the check as Markdown

Each constant is seconds per unit of work (see solver.py), the median of 3 timings.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import upweight as uw
from upweight import _core
from upweight import solver as policy
from upweight._validation import as_csr


def _n_features(X) -> int:
    """Columns of features as the core takes them (an array or a CSR tuple)."""
    return X[3] if isinstance(X, tuple) else X.shape[1]


def timed(f, repeat=3):
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def dense_problem(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n, d)), 0)  # nonnegative, half zeros (W2-like)
    y = rng.integers(0, max(k, 2), n).astype(float)
    theta = 0.01 * rng.standard_normal(k * (d + 1))
    return X, y, theta


def sparse_problem(n, d, density, seed=0):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=density, format="csr", random_state=seed, data_rvs=lambda m: rng.integers(1, 4, m).astype(float))
    y = (rng.random(n) < 0.5).astype(float)
    return X, y, 0.01 * rng.standard_normal(d + 1)


def hvp_constants(family, k, theta, X, y, work_per_vector):
    """(c_pass, c_hvp) from Hessian-vector passes with 1 and 32 vectors of a single-output model:
    t(r) = c_pass W + c_hvp 4 W r, W = n z."""
    p = theta.size
    t = {}
    for r in (1, 32):
        V = np.random.default_rng(r).standard_normal((p, r))
        t[r], _ = timed(lambda: _core.Model.glm(family, k, _n_features(X)).hvp(theta, X, y, None, 1e-3, V))
    c_hvp = (t[32] - t[1]) / (4 * work_per_vector * 31)
    c_pass = max(t[1] - c_hvp * 4 * work_per_vector, 0.0) / work_per_vector
    return c_pass, c_hvp


def constants():
    c = {}
    # dense Hessian, row-block schedule (p <= 2048): binary, d = 2000
    n, d = 20000, 2000
    X, y, th = dense_problem(n, d, 1)
    y = (y > 0).astype(float)
    t, _ = timed(lambda: _core.Model.glm("logistic", 1, _n_features(X)).hessian(th, X, y, None, 1e-3))
    c["C_HESS_DENSE"] = t / (n * (d + 1) ** 2)
    c["C_PASS_DENSE"], c["C_HVP_DENSE"] = hvp_constants("logistic", 1, th, X, y, n * (d + 1))
    # dense Hessian, tiled schedule (p > 2048): multinomial k = 10, d = 784 (W2's shape)
    n, d, k = 4000, 784, 10
    X, y, th = dense_problem(n, d, k)
    t, _ = timed(lambda: _core.Model.glm("multinomial", k, _n_features(X)).hessian(th, X, y, None, 1e-3))
    c["C_HESS_DENSE_TILED"] = t / (n * k * (k + 1) / 2 * (d + 1) ** 2)
    # sparse: binary, d = 3000, 2% density
    Xs, ys, ths = sparse_problem(20000, 3000, 0.02)
    csr = as_csr(Xs, "X")
    z = Xs.nnz / Xs.shape[0] + 1
    t, _ = timed(lambda: _core.Model.glm("logistic", 1, _n_features(csr)).hessian(ths, csr, ys, None, 1e-3))
    c["C_HESS_SPARSE"] = t / (Xs.shape[0] * z**2)
    c["C_PASS_SPARSE"], c["C_HVP_SPARSE"] = hvp_constants("logistic", 1, ths, csr, ys, Xs.shape[0] * z)
    # Cholesky and triangular solves: an explicit SPD H, p = 3000, built from 8 gradient rows
    p = 3000
    A = np.random.default_rng(3).standard_normal((p, p)) / np.sqrt(p)
    H = A @ A.T + np.eye(p)
    G = np.random.default_rng(4).standard_normal((8, p))
    t, core = timed(lambda: _core.Influence(_core.Model.gradients(p), np.zeros(p), G, None, None, 0.0, "direct", hessian=H))
    c["C_CHOL"] = t / (p**3 / 3)
    B = np.random.default_rng(5).standard_normal((p, 400))
    t, _ = timed(lambda: core.inverse_hvp(B))
    c["C_SOLVE"] = t / (2 * p**2 * 400)
    # CG iterations at the default rtol (1e-10), Jacobi-preconditioned, 20 queries
    iters = []
    for family, make in [
        ("dense multinomial", lambda: dense_problem(5000, 300, 10)),
        ("dense binary", lambda: dense_problem(20000, 400, 1)),
        ("sparse binary", lambda: sparse_problem(20000, 3000, 0.02)),
    ]:
        X, y, _ = make()
        if family == "dense binary":
            y = (y > 0).astype(float)
        model = uw.LogisticRegression(l2=1e-3).fit(X, y)
        inf = uw.Influence(model, X, y, solver="cg")
        inf.top_k(X[:20], y[:20], k=1)
        iters.append((family, float(inf.solve_info.iterations.mean())))
    c["CG_ITERS"] = int(round(statistics.mean(v for f, v in iters if "binary" in f)))
    c["CG_ITERS_MULTINOMIAL"] = int(round(next(v for f, v in iters if "multinomial" in f)))
    return c, iters


def check(c):
    """Both solvers end to end (construction + one query of r right-hand sides) on a few shapes."""
    for name, v in c.items():
        setattr(policy, name, v)
    rows = []
    shapes = [  # (label, n, d, k, r)
        ("binary, d = 128, q = 500", 100_000, 128, 1, 500),
        ("binary, d = 2000, q = 10", 20_000, 2000, 1, 10),
        ("binary, d = 2000, q = 50", 20_000, 2000, 1, 50),
        ("binary, d = 2000, q = 1000", 20_000, 2000, 1, 1000),
        ("multinomial k = 10, d = 400, q = 5", 10_000, 400, 10, 5),
        ("multinomial k = 10, d = 400, q = 40", 10_000, 400, 10, 40),
        ("multinomial k = 10, d = 400, q = 200", 10_000, 400, 10, 200),
    ]
    for label, n, d, k, r in shapes:
        X, y, _ = dense_problem(n, d, k)
        if k == 1:
            y = (y > 0).astype(float)
        model = uw.LogisticRegression(l2=1e-3).fit(X, y)
        Xq, yq = X[:r], y[:r]
        w = policy.Work(n, k * (d + 1), k)
        t = {}
        for solver in ("direct", "cg"):
            t[solver], _ = timed(lambda: uw.Influence(model, X, y, solver=solver).top_k(Xq, yq, k=5), repeat=1)
        pick = "direct" if policy.prefers_direct(w, r) else "cg"
        best = min(t, key=t.get)
        rows.append((label, n, k * (d + 1), r, t["direct"], t["cg"], policy.direct_seconds(w, r), policy.cg_seconds(w, r), pick, best))
    return rows


def main():
    c, iters = constants()
    print("| constant | value |\n|---|---:|")
    for k, v in c.items():
        print(f"| `{k}` | {v:.3g} |")
    print()
    print("CG iterations (mean over 20 queries, rtol 1e-10): " + ", ".join(f"{f} {v:.0f}" for f, v in iters))
    print()
    print("| shape | n | p | r | direct (s) | cg (s) | model: direct (s) | model: cg (s) | rule picks | faster |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
    for row in check(c):
        label, n, p, r, td, tc, md, mc, pick, best = row
        miss = "" if pick == best else " (miss)"
        print(f"| {label} | {n} | {p} | {r} | {td:.2f} | {tc:.2f} | {md:.2f} | {mc:.2f} | {pick} | {best}{miss} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
