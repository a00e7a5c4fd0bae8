"""Scale benchmark (issue 3): three workloads, each against its cost floor and an outside baseline.

W1  binary logistic, n = 100000, d = 128, q = 500, l2 = 1e-3 (data of bench_core.make_data), model
    fitted once per process before timing:
      full score matrix (Influence construction + on_loss, float64), top-10 in float64 and with X
      kept as float32, the floor (NumPy (n x 129) @ (129 x 500) plus a Hessian build
      Z^T (Z * h) in the same process), upweight.reference, and pyinfluence 0.5.0's
      InfluenceFunctions on a scikit-learn LogisticRegression carrying the same optimum.
W2  multinomial, n = 20000, d = 784 (nonnegative, ~80% zeros), k = 10 (p = 7850), q = 100,
    l2 = 1e-3, relative residual 1e-6: upweight solver="cg", solver="direct", and SciPy's
    sparse.linalg.cg on a NumPy matrix-free Hessian-vector product, one test gradient at a time
    (timed on the first 5 queries and extrapolated when all q would exceed --scipy-budget seconds).
    The fit is timed too, with the default solver and with solver="direct" (H formed at p = 7850).
W3  streaming top-10, n = 10 million, d = 64, q = 100: X is a float64 .npy on disk (~5 GB, written
    in chunks to a temporary directory under /tmp and deleted at the end); fit from the path, then
    Influence(model, path, y).top_k, against one streamed NumPy product of the same shape.

Each measurement runs in its own process (fresh memory, so peak RSS is its own), all of a
workload's measurements in one invocation so their ratios hold on this noisy shared machine. Peak
RSS is VmHWM from /proc/self/status: "call" is the peak while the timed calls ran (VmHWM reset
through /proc/self/clear_refs just before them, so it includes what the process already held),
"process" the peak over the whole process (data generation and fit included).

Results go to bench/out/scale_<W>.json; the section between the W-scale markers of
bench/RESULTS.md is rendered from those files (so `--only W2` replaces W2's part and keeps the
others). `--quick` shrinks every size for a smoke run and does not touch RESULTS.md unless
`--write` is given.

    python bench/bench_scale.py [--only W1|W2|W3] [--quick [--write]] [--repeat 3] [--scipy-budget 300]
                                [--skip-direct-fit] [--w3-family logistic|linear] [--tmp /tmp] [--render]

The full run takes about 13 minutes on the 2-core machine (6 of them W2's fit with solver="direct";
--skip-direct-fit drops it); --quick about 20 seconds; --render only rewrites RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
sys.path.insert(0, str(HERE))

FULL = {
    "W1": {"n": 100_000, "d": 128, "q": 500, "l2": 1e-3, "stride": 20},
    "W2": {"n": 20_000, "d": 784, "k": 10, "q": 100, "l2": 1e-3, "rtol": 1e-6},
    "W3": {"n": 10_000_000, "d": 64, "q": 100, "l2": 1e-3, "chunk": 100_000},
}
QUICK = {
    "W1": {"n": 20_000, "d": 128, "q": 100, "l2": 1e-3, "stride": 20},
    "W2": {"n": 2_000, "d": 196, "k": 10, "q": 20, "l2": 1e-3, "rtol": 1e-6},
    "W3": {"n": 400_000, "d": 64, "q": 20, "l2": 1e-3, "chunk": 100_000},
}

# ---------------------------------------------------------------------------------------------
# memory and timing helpers (run inside the measuring process)
# ---------------------------------------------------------------------------------------------


def _n_features(X) -> int:
    """Columns of features as the core takes them (an array or a CSR tuple)."""
    return X[3] if isinstance(X, tuple) else X.shape[1]


def _status(field: str) -> float:
    return int(Path("/proc/self/status").read_text().split(field + ":")[1].split()[0]) / 1024


def peak_mib() -> float:
    """VmHWM of this process, MiB (ru_maxrss would carry the parent's over exec)."""
    return _status("VmHWM")


_PROCESS_PEAK = [0.0]


def process_peak_mib() -> float:
    """Peak RSS over the whole process: VmHWM now or before any reset_peak."""
    return max(_PROCESS_PEAK[0], peak_mib())


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), remembering the process peak so far.
    False if not permitted."""
    _PROCESS_PEAK[0] = process_peak_mib()
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Phase:
    """Times a block and records the peak RSS while it ran."""

    def __enter__(self):
        self.reset_ok = reset_peak()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.peak = peak_mib()
        return False


def machine() -> str:
    import upweight as uw

    return (f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, upweight {uw.__version__} ({uw.num_threads()} threads)")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------


def w1_data(c):
    from bench_core import make_data

    return make_data(c["n"], c["d"], c["q"])


def w2_data(c, seed: int = 0):
    """MNIST-like: nonnegative features, ~80% zeros, k classes drawn from a softmax model."""
    n, d, k, q = c["n"], c["d"], c["k"], c["q"]
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n + q, d)) - 0.85, 0.0) * 2.0
    B = rng.standard_normal((d, k)) * 2.0 / np.sqrt(d * np.mean(X**2))
    logits = X @ B + rng.gumbel(size=(n + q, k))
    y = logits.argmax(1).astype(np.float64)
    return X[:n], y[:n], np.ascontiguousarray(X[n:]), y[n:]


def w3_write(c, tmp: Path, seed: int = 0) -> dict:
    """Write X (n x d float64 .npy, chunk by chunk), y, and the queries; returns the paths."""
    n, d, q, chunk = c["n"], c["d"], c["q"], c["chunk"]
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(d) / np.sqrt(d)
    b0 = 0.3
    paths = {k: str(tmp / f"w3_{k}.npy") for k in ("X", "y", "Xq", "yq")}
    X = np.lib.format.open_memmap(paths["X"], mode="w+", dtype=np.float64, shape=(n, d))
    y = np.empty(n)
    for i, s in enumerate(range(0, n, chunk)):
        r = np.random.default_rng([seed, i + 1])
        xb = r.standard_normal((min(chunk, n - s), d))
        X[s:s + len(xb)] = xb
        y[s:s + len(xb)] = r.random(len(xb)) < 1.0 / (1.0 + np.exp(-(xb @ beta + b0)))
    X.flush()
    del X
    np.save(paths["y"], y)
    Xq = rng.standard_normal((q, d))
    np.save(paths["Xq"], Xq)
    np.save(paths["yq"], (rng.random(q) < 1.0 / (1.0 + np.exp(-(Xq @ beta + b0)))).astype(np.float64))
    return paths


# ---------------------------------------------------------------------------------------------
# measurements: each runs in its own process and returns a JSON-able dict
# ---------------------------------------------------------------------------------------------


def _penalty_grad(theta, l2):
    pen = 2.0 * l2 * np.asarray(theta, dtype=np.float64).copy()
    pen[-1] = 0.0
    return pen


def _fit_w1(c, X, y):
    import upweight as uw

    return uw.LogisticRegression(l2=c["l2"]).fit(X, y)


def m_w1_floor(c):
    X, _, _, _ = w1_data(c)
    n, d, q = c["n"], c["d"], c["q"]
    Z = np.hstack([X, np.ones((n, 1))])
    del X
    rng = np.random.default_rng(1)
    V = rng.standard_normal((d + 1, q))
    h = rng.random(n) * 0.25
    prod, hess, peaks = [], [], []
    for _ in range(c["repeat"]):
        with Phase() as a:
            P = Z @ V
        del P
        with Phase() as b:
            H = Z.T @ (Z * h[:, None])
        del H
        prod.append(a.seconds)
        hess.append(b.seconds)
        peaks.append(max(a.peak, b.peak))
    return {"product_s": min(prod), "hessian_s": min(hess), "best_s": min(prod) + min(hess),
            "times_product_s": prod, "times_hessian_s": hess, "call_peak_mib": max(peaks)}


def m_w1_full(c):
    import upweight as uw

    X, y, Xt, yt = w1_data(c)
    model = _fit_w1(c, X, y)
    times, inits, peaks, S = [], [], [], None
    for _ in range(c["repeat"]):
        del S
        with Phase() as ph:
            t0 = time.perf_counter()
            inf = uw.Influence(model, X, y)
            inits.append(time.perf_counter() - t0)
            S = inf.on_loss(Xt, yt)
        times.append(ph.seconds)
        peaks.append(ph.peak)
    proc = process_peak_mib()  # before the checks below, which copy S
    # for the comparisons (untimed): a column subset of S and the penalty offsets g_t H^{-1} pen
    np.save(c["tmp"] + "/w1_full.npy", S[:, ::c["stride"]])
    part = np.argpartition(S, 10, axis=1)[:, :10]  # the 10 most helpful per query, from the full matrix
    np.save(c["tmp"] + "/w1_full_top10.npy", np.sort(part, axis=1))
    c_t = inf.loss_grads(Xt, yt) @ inf.inverse_hvp(_penalty_grad(model.theta_, c["l2"]))
    np.save(c["tmp"] + "/w1_offsets.npy", c_t)
    return {"best_s": min(times), "times_s": times, "init_s": inits[int(np.argmin(times))],
            "query_s": min(times) - inits[int(np.argmin(times))], "call_peak_mib": max(peaks),
            "n_iter": model.n_iter_, "threads": uw.num_threads(), "process_peak_mib": proc}


def _m_w1_top10(c, f32: bool):
    import upweight as uw

    X, y, Xt, yt = w1_data(c)
    model = _fit_w1(c, X, y)
    if f32:
        X = X.astype(np.float32)  # the data as it would be stored; the float64 copy is dropped
    times, inits, peaks = [], [], []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(c["repeat"]):
            with Phase() as ph:
                t0 = time.perf_counter()
                inf = uw.Influence(model, X, y)
                inits.append(time.perf_counter() - t0)
                tk = inf.top_k(Xt, yt, k=10)
            times.append(ph.seconds)
            peaks.append(ph.peak)
    tag = "f32" if f32 else "f64"
    np.savez(c["tmp"] + f"/w1_top10_{tag}.npz", helpful_idx=tk.helpful_idx, helpful=tk.helpful,
             harmful_idx=tk.harmful_idx, harmful=tk.harmful)
    return {"best_s": min(times), "times_s": times, "init_s": inits[int(np.argmin(times))],
            "query_s": min(times) - inits[int(np.argmin(times))], "call_peak_mib": max(peaks),
            "grad_norm": inf.grad_norm, "warnings": sorted({str(w.message)[:160] for w in caught})}


def m_w1_top10_f64(c):
    return _m_w1_top10(c, False)


def m_w1_top10_f32(c):
    return _m_w1_top10(c, True)


def m_w1_reference(c):
    from upweight import reference as ref

    X, y, Xt, yt = w1_data(c)
    theta = _fit_w1(c, X, y).theta_
    times, peaks, S = [], [], None
    for _ in range(c["repeat"]):
        del S
        with Phase() as ph:
            S = ref.influence_on_loss(theta, X, y, "logistic", Xt, yt, l2=c["l2"])
        times.append(ph.seconds)
        peaks.append(ph.peak)
    np.save(c["tmp"] + "/w1_reference.npy", S[:, ::c["stride"]])
    return {"best_s": min(times), "times_s": times, "call_peak_mib": max(peaks)}


def sklearn_twin(theta, n, l2):
    """A fitted scikit-learn LogisticRegression with upweight's optimum: sklearn minimises
    C sum_i l_i + ||coef||^2 / 2, i.e. upweight's objective times C n with l2 = 1 / (2 C n)."""
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=1.0 / (2.0 * l2 * n))
    m.coef_ = np.asarray(theta[:-1], dtype=np.float64)[None, :]
    m.intercept_ = np.array([float(theta[-1])])
    m.classes_ = np.array([0, 1])
    m.n_features_in_ = len(theta) - 1
    m.n_iter_ = np.array([0], dtype=np.int32)
    return m


def m_w1_pyinfluence(c):
    import pyinfluence

    X, y, Xt, yt = w1_data(c)
    model = _fit_w1(c, X, y)
    skm = sklearn_twin(model.theta_, c["n"], c["l2"])
    assert np.allclose(skm.predict_proba(Xt)[:, 1], 1 / (1 + np.exp(-(Xt @ model.coef_ + model.intercept_))))
    times, inits, peaks, P = [], [], [], None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(c["repeat"]):
            del P
            with Phase() as ph:
                t0 = time.perf_counter()
                # damping=0: the exact Hessian of the shared objective (its default adds 1e-5 I)
                att = pyinfluence.InfluenceFunctions(mode="loss", damping=0.0).fit(skm, X, y)
                inits.append(time.perf_counter() - t0)
                P = att.explain(Xt, yt)
            times.append(ph.seconds)
            peaks.append(ph.peak)
    np.save(c["tmp"] + "/w1_pyinfluence.npy", P[:, ::c["stride"]])
    return {"best_s": min(times), "times_s": times, "init_s": inits[int(np.argmin(times))],
            "query_s": min(times) - inits[int(np.argmin(times))], "call_peak_mib": max(peaks),
            "version": pyinfluence.__version__, "shape": list(P.shape),
            "warnings": sorted({str(w.message)[:160] for w in caught})}


def m_w2_fit(c):
    import upweight as uw

    X, y, _, _ = w2_data(c)
    model = uw.LogisticRegression(l2=c["l2"])
    with Phase() as ph:
        model.fit(X, y)
    uw.save_model(model, c["tmp"] + "/w2_model.npz", force=True)
    return {"best_s": ph.seconds, "call_peak_mib": ph.peak, "n_iter": model.n_iter_, "grad_norm": model.grad_norm_,
            "p": int(model.theta_.size), "solver": _resolved_fit_solver(model, X.shape[0])}


def _resolved_fit_solver(model, n: int) -> str:
    solver = getattr(model, "solver", "direct")
    if solver == "auto":
        from upweight.solver import Work, resolve

        solver = resolve(solver, Work(n, model.theta_.size, model.n_classes))
    return solver


def m_w2_fit_direct(c):
    """The fit with the Newton step solved directly: H (p x p) formed and factored every step."""
    import upweight as uw

    X, y, _, _ = w2_data(c)
    ref = uw.load_model(c["tmp"] + "/w2_model.npz").get_theta()
    try:
        model = uw.LogisticRegression(l2=c["l2"], solver="direct")
    except TypeError as exc:  # a version without the solver option always fits this way
        return {"skipped": str(exc)}
    with Phase() as ph:
        model.fit(X, y)
    theta = model.get_theta()
    return {"best_s": ph.seconds, "call_peak_mib": ph.peak, "n_iter": model.n_iter_, "grad_norm": model.grad_norm_,
            "max_theta_diff": float(np.max(np.abs(theta - ref)) / np.max(np.abs(ref)))}


def _m_w2_influence(c, solver):
    import upweight as uw

    X, y, Xt, yt = w2_data(c)
    model = uw.load_model(c["tmp"] + "/w2_model.npz")
    kw = {"rtol": c["rtol"]} if solver == "cg" else {}
    with Phase() as ph:
        t0 = time.perf_counter()
        inf = uw.Influence(model, X, y, solver=solver, **kw)
        init = time.perf_counter() - t0
        S = inf.on_loss(Xt, yt)
    np.save(c["tmp"] + f"/w2_{solver}.npy", S)
    it = inf.solve_info.iterations
    return {"best_s": ph.seconds, "init_s": init, "query_s": ph.seconds - init, "call_peak_mib": ph.peak,
            "iter_min": int(it.min()), "iter_mean": float(it.mean()), "iter_max": int(it.max()),
            "max_residual": inf.solve_info.max_residual}


def m_w2_cg(c):
    return _m_w2_influence(c, "cg")


def m_w2_direct(c):
    return _m_w2_influence(c, "direct")


def _softmax(L):
    L = L - L.max(1, keepdims=True)
    E = np.exp(L)
    return E / E.sum(1, keepdims=True)


class MultinomialHVP:
    """Matrix-free H v for upweight's multinomial objective at theta (NumPy, two products with X
    per call): H = (1/n) sum_i (diag(p_i) - p_i p_i^T) (x) z_i z_i^T + 2 l2 diag(mask), z = [x, 1],
    parameters flattened row-major as (k, d + 1)."""

    def __init__(self, theta, X, l2):
        self.X = X
        self.n, self.d = X.shape
        T = np.asarray(theta).reshape(-1, self.d + 1)
        self.k = T.shape[0]
        self.P = _softmax(X @ T[:, :-1].T + T[:, -1])
        self.l2 = l2
        mask = np.ones((self.k, self.d + 1))
        mask[:, -1] = 0.0
        self.mask = mask.reshape(-1)

    def __call__(self, v):
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        d = self.d
        V = v.reshape(self.k, d + 1)
        E = self.X @ V[:, :d].T + V[:, d]  # (n, k): directional linear predictors
        PE = self.P * E
        T = PE - self.P * PE.sum(1, keepdims=True)  # per row (diag(p) - p p^T) e
        out = np.empty((self.k, d + 1))
        out[:, :d] = (self.X.T @ T).T
        out[:, d] = T.sum(0)
        return out.reshape(-1) / self.n + 2.0 * self.l2 * self.mask * v


def batched_hvp(h: MultinomialHVP, V):
    """H V for the columns of V (p, r) at once: the same two products with X, r times wider."""
    k, d, n = h.k, h.d, h.n
    r = V.shape[1]
    Vr = V.reshape(k, d + 1, r)
    E = (h.X @ Vr[:, :d, :].transpose(1, 0, 2).reshape(d, k * r)).reshape(n, k, r) + Vr[:, d, :][None]
    PE = h.P[:, :, None] * E
    T = PE - h.P[:, :, None] * PE.sum(1, keepdims=True)
    out = np.empty((k, d + 1, r))
    out[:, :d, :] = (h.X.T @ T.reshape(n, k * r)).reshape(d, k, r).transpose(1, 0, 2)
    out[:, d, :] = T.sum(0)
    return out.reshape(-1, r) / n + 2.0 * h.l2 * h.mask[:, None] * V


def multinomial_grads(theta, X, y):
    """Per-example loss gradients (m, k (d + 1)): (p - e_y) (x) [x, 1]."""
    m, d = X.shape
    T = np.asarray(theta).reshape(-1, d + 1)
    R = _softmax(X @ T[:, :-1].T + T[:, -1])
    R[np.arange(m), y.astype(np.intp)] -= 1.0
    Z = np.hstack([X, np.ones((m, 1))])
    return (R[:, :, None] * Z[:, None, :]).reshape(m, -1)


def multinomial_scores(theta, X, y, V, l2):
    """S (m, n) = -(g_i . v_j + pen . v_j) / n for the columns v_j of V (p, m)."""
    n, d = X.shape
    T = np.asarray(theta).reshape(-1, d + 1)
    k = T.shape[0]
    R = _softmax(X @ T[:, :-1].T + T[:, -1])
    R[np.arange(n), y.astype(np.intp)] -= 1.0
    Vr = V.reshape(k, d + 1, -1)
    E = (X @ Vr[:, :d, :].transpose(1, 0, 2).reshape(d, -1)).reshape(n, k, -1) + Vr[:, d, :][None]
    raw = np.einsum("nk,nkm->mn", R, E)
    pen = 2.0 * l2 * T.copy()
    pen[:, -1] = 0.0
    return -(raw + (pen.reshape(-1) @ V)[:, None]) / n


def hvp_check() -> float:
    """Relative difference of MultinomialHVP and upweight's _core.hvp on a small problem."""
    from upweight import _core

    rng = np.random.default_rng(5)
    n, d, k, l2 = 300, 12, 4, 1e-3
    X = np.maximum(rng.standard_normal((n, d)) - 0.5, 0)
    y = rng.integers(0, k, n).astype(np.float64)
    theta = rng.standard_normal(k * (d + 1)) * 0.3
    V = rng.standard_normal((k * (d + 1), 3))
    ref = _core.Model.glm("multinomial", k, _n_features(X)).hvp(theta, X, y, None, l2, V)
    h = MultinomialHVP(theta, X, l2)
    mine = np.stack([h(V[:, j]) for j in range(V.shape[1])], 1)
    return float(np.max(np.abs(mine - ref)) / np.max(np.abs(ref)))


def multinomial_hessian(theta, X, l2, P=None):
    """H (p x p) of the mean multinomial loss plus l2 ||coef||^2, NumPy: the k (k + 1) / 2
    class-pair products Z.T @ (Z * w_ab), w_ab = p_a (1[a = b] - p_b) / n, Z = [X, 1]; ``P`` the
    class probabilities at theta if already known."""
    n, d = X.shape
    r = d + 1
    T = theta.reshape(-1, r)
    k = T.shape[0]
    p = k * r
    Z = np.hstack([X, np.ones((n, 1))])
    if P is None:
        P = _softmax(X @ T[:, :d].T + T[:, d])
    H = np.empty((p, p))
    for a in range(k):
        for b in range(a + 1):
            w = P[:, a] * (float(a == b) - P[:, b]) / n
            blk = Z.T @ (Z * w[:, None])
            H[a * r:(a + 1) * r, b * r:(b + 1) * r] = blk
            if a != b:
                H[b * r:(b + 1) * r, a * r:(a + 1) * r] = blk.T
    idx = np.flatnonzero(np.arange(p) % r != d)
    H[idx, idx] += 2.0 * l2
    return H


def m_w2_parts(c):
    """Where W2's time goes, each part timed once, wall and CPU seconds (CPU / wall ~ threads
    busy): upweight's Hessian (`_core.hessian`) vs the same p x p matrix from k (k + 1) / 2
    NumPy products Z^T (Z * w); SciPy's Cholesky of it (upweight's is inside `Influence`);
    one Hessian-vector product on q vectors, upweight's (`_core.hvp`) vs NumPy's batched. upweight's
    Cholesky is timed through GradientInfluence(..., hessian=H, solver="direct"), the same Direct
    solver on an explicit matrix (plus its symmetry check)."""
    import resource

    import scipy.linalg

    import upweight as uw
    from upweight import _core

    X, y, _, _ = w2_data(c)
    theta = uw.load_model(c["tmp"] + "/w2_model.npz").get_theta()
    n, d = X.shape
    k, l2, r = c["k"], c["l2"], d + 1
    p = k * r
    out = {}

    def cpu():
        u = resource.getrusage(resource.RUSAGE_SELF)
        return u.ru_utime + u.ru_stime

    def timed(name, fn):
        c0, t0 = cpu(), time.perf_counter()
        res = fn()
        out[name + "_s"], out[name + "_cpu_s"] = time.perf_counter() - t0, cpu() - c0
        return res

    H = timed("uw_hessian", lambda: _core.Model.glm("multinomial", k, _n_features(X)).hessian(theta, X, y, None, l2))

    Hn = timed("np_hessian", lambda: multinomial_hessian(theta, X, l2))
    out["hessian_agree"] = _rel(Hn, H)
    del Hn
    # the null direction (every class's intercept) scaled as upweight does, then Cholesky
    N = np.zeros(p)
    N[d::r] = 1.0 / np.sqrt(k)
    H += np.mean(np.diag(H)) * np.outer(N, N)
    # upweight's direct path on an explicit matrix: symmetry check, copy, faer Cholesky
    G = np.random.default_rng(3).standard_normal((4, p)) * 1e-3
    timed("uw_cholesky", lambda: uw.GradientInfluence(G, hessian=H, solver="direct"))
    timed("scipy_cholesky", lambda: scipy.linalg.cho_factor(H, lower=True, overwrite_a=True, check_finite=False))
    H = None  # free it before the next measurements
    V = np.random.default_rng(2).standard_normal((p, c["q"]))
    a = timed("uw_hvp", lambda: _core.Model.glm("multinomial", k, _n_features(X)).hvp(theta, X, y, None, l2, V))
    b = timed("np_hvp", lambda: batched_hvp(MultinomialHVP(theta, X, l2), V))
    out["hvp_agree"] = _rel(b, a)
    return out


def m_w2_scipy(c):
    import scipy
    import scipy.sparse.linalg as sla

    import upweight as uw

    check = hvp_check()
    X, y, Xt, yt = w2_data(c)
    theta = uw.load_model(c["tmp"] + "/w2_model.npz").get_theta()
    p, q = theta.size, c["q"]
    iters, qtimes, V = [], [], []
    with Phase() as setup:
        hvp = MultinomialHVP(theta, X, c["l2"])
        A = sla.LinearOperator((p, p), matvec=hvp, dtype=np.float64)
        G = multinomial_grads(theta, Xt, yt)
    with Phase() as solve:
        for j in range(q):
            count = [0]

            def cb(_xk, count=count):
                count[0] += 1

            t0 = time.perf_counter()
            x, info = sla.cg(A, G[j], rtol=c["rtol"], maxiter=20 * p, callback=cb)
            qtimes.append(time.perf_counter() - t0)
            iters.append(count[0])
            V.append(x)
            if info != 0:
                raise RuntimeError(f"scipy cg did not converge on query {j} (info {info})")
            if j + 1 >= 5 and sum(qtimes) / (j + 1) * q > c["scipy_budget"]:
                break
    done = len(V)
    V = np.stack(V, 1)
    with Phase() as score:
        S = multinomial_scores(theta, X, y, V, c["l2"])
    residuals = [float(np.linalg.norm(hvp(V[:, j]) - G[j]) / np.linalg.norm(G[j])) for j in range(done)]
    np.save(c["tmp"] + "/w2_scipy.npy", S)
    per_query = solve.seconds / done
    total = setup.seconds + per_query * q + score.seconds * q / done
    return {"best_s": total, "measured_s": setup.seconds + solve.seconds + score.seconds, "queries_timed": done,
            "extrapolated": done < q, "setup_s": setup.seconds, "per_query_s": per_query,
            "query_min_s": min(qtimes), "query_max_s": max(qtimes), "score_s": score.seconds,
            "iter_mean": float(np.mean(iters)), "iter_max": int(max(iters)), "max_residual": max(residuals),
            "call_peak_mib": max(setup.peak, solve.peak, score.peak), "hvp_check": check,
            "scipy": scipy.__version__}


def m_w3_floor(c):
    """One streamed product Z @ V over the file, keeping nothing. Variant "mmap" (the floor):
    chunks sliced from np.load(mmap_mode="r"), product into one reused output buffer; "mmap_fresh":
    the same with a fresh output array per chunk; "pread": chunks read with os.preadv into one
    reused buffer (the way upweight reads)."""
    path, n, d, q, chunk = c["paths"]["X"], c["n"], c["d"], c["q"], c["chunk"]
    variant = c.get("variant", "mmap")
    V = np.random.default_rng(1).standard_normal((d + 1, q))
    W, b = np.ascontiguousarray(V[:d]), V[d]
    buf = np.empty((chunk, q))
    xb = np.empty((chunk, d))
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        (np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0)(f)
        offset = f.tell()
    times, peaks = [], []
    for _ in range(c["repeat"]):
        with Phase() as ph:
            if variant == "pread":
                fd = os.open(path, os.O_RDONLY)
                try:
                    for s in range(0, n, chunk):
                        m = min(chunk, n - s)
                        view = memoryview(xb[:m]).cast("B")
                        got = os.preadv(fd, [view], offset + s * d * 8)
                        assert got == len(view)
                        np.matmul(xb[:m], W, out=buf[:m])
                        np.add(buf[:m], b, out=buf[:m])
                finally:
                    os.close(fd)
            else:
                for s in range(0, n, chunk):
                    mm = np.load(path, mmap_mode="r")  # a fresh map per chunk: mapped pages do not pile up in RSS
                    part = mm[s:s + chunk]
                    if variant == "mmap_fresh":
                        out = part @ W + b
                        del out
                    else:
                        m = len(part)
                        np.matmul(part, W, out=buf[:m])
                        np.add(buf[:m], b, out=buf[:m])
                    del mm, part
        times.append(ph.seconds)
        peaks.append(ph.peak)
    return {"best_s": min(times), "times_s": times, "call_peak_mib": max(peaks), "variant": variant}


def m_w3_fit(c):
    import upweight as uw

    y = np.load(c["paths"]["y"])
    est = uw.LogisticRegression if c["family"] == "logistic" else uw.LinearRegression
    with Phase() as ph:
        model = est(l2=c["l2"]).fit(c["paths"]["X"], y)
    uw.save_model(model, c["tmp"] + "/w3_model.npz", force=True)
    return {"best_s": ph.seconds, "call_peak_mib": ph.peak, "n_iter": model.n_iter_, "grad_norm": model.grad_norm_}


def m_w3_topk(c):
    import upweight as uw

    y = np.load(c["paths"]["y"])
    Xq, yq = np.load(c["paths"]["Xq"]), np.load(c["paths"]["yq"])
    model = uw.load_model(c["tmp"] + "/w3_model.npz")
    with Phase() as ph:
        t0 = time.perf_counter()
        inf = uw.Influence(model, c["paths"]["X"], y)
        init = time.perf_counter() - t0
        tk = inf.top_k(Xq, yq, k=10)
    # spot check (untimed): the reported scores of query 0 are the scores of those rows
    idx = tk.helpful_idx[0]
    again = inf.on_loss(Xq[:1], yq[:1], idx=idx)[0]
    return {"best_s": ph.seconds, "init_s": init, "query_s": ph.seconds - init, "call_peak_mib": ph.peak,
            "spot_check": float(np.max(np.abs(again - tk.helpful[0])) / np.max(np.abs(tk.helpful[0])))}


MEASURE = {name[2:]: fn for name, fn in globals().items() if name.startswith("m_") and callable(fn)}


def run_one(kind: str, cfg: dict) -> None:
    res = MEASURE[kind](cfg)
    res["kind"] = kind
    res.setdefault("process_peak_mib", process_peak_mib())
    print(json.dumps(res))


# ---------------------------------------------------------------------------------------------
# the parent: runs the measurements, compares outputs, writes JSON and RESULTS.md
# ---------------------------------------------------------------------------------------------


def child(kind: str, cfg: dict) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, "--cfg", json.dumps(cfg)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    res = json.loads(out.strip().splitlines()[-1])
    show = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.items() if k not in ("warnings",)}
    print(f"  [{time.perf_counter() - t0:6.1f} s] {show}", file=sys.stderr, flush=True)
    return res


def _rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def run_w1(c: dict, tmp: Path) -> dict:
    rows = {}
    floors = [child("w1_floor", c)]
    for kind in ["w1_full", "w1_top10_f64", "w1_top10_f32", "w1_reference", "w1_pyinfluence"]:
        rows[kind] = child(kind, c)
    floors.append(child("w1_floor", c))
    rows["w1_floor"] = min(floors, key=lambda r: r["best_s"])
    rows["w1_floor"]["both_runs_s"] = [r["best_s"] for r in floors]
    S = np.load(tmp / "w1_full.npy")
    cmp = {"reference_vs_upweight": _rel(S, np.load(tmp / "w1_reference.npy"))}
    # pyinfluence: P = g_t H^{-1} g_m / n; upweight: S = -g_t H^{-1} (g_m + pen) / n
    P = np.load(tmp / "w1_pyinfluence.npy")
    off = np.load(tmp / "w1_offsets.npy")
    cmp["pyinfluence_scale"] = float(np.sum(P * S) / np.sum(S * S))  # least-squares factor
    cmp["pyinfluence_raw_rel"] = _rel(-S, P)
    cmp["pyinfluence_rel"] = _rel(-(S + off[:, None] / c["n"]), P)
    cmp["offset_rel"] = float(np.max(np.abs(off / c["n"])) / np.max(np.abs(P)))
    a, b = np.load(tmp / "w1_top10_f64.npz"), np.load(tmp / "w1_top10_f32.npz")
    for side in ("helpful", "harmful"):
        ia, ib = np.sort(a[side + "_idx"], 1), np.sort(b[side + "_idx"], 1)
        cmp[f"f32_{side}_same_sets"] = float(np.mean(np.all(ia == ib, 1)))
        cmp[f"f32_{side}_shared"] = float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(ia, ib, strict=True)]))
        cmp[f"f32_{side}_rel"] = float(np.max(np.abs(b[side] - a[side]) / np.abs(a[side])))
    cmp["f32_vs_full_matrix_rel"] = float(max(np.max(np.abs(b[s] - a[s])) for s in ("helpful", "harmful")) / np.max(np.abs(S)))
    cmp["topk_vs_full_matrix"] = float(np.mean(np.all(np.sort(a["helpful_idx"], 1) == np.load(tmp / "w1_full_top10.npy"), 1)))
    return {"rows": rows, "cmp": cmp}


def run_w2(c: dict, tmp: Path) -> dict:
    rows = {}
    for kind in ["w2_fit"] + ([] if c.get("skip_direct_fit") else ["w2_fit_direct"]) + ["w2_cg", "w2_direct", "w2_scipy", "w2_parts"]:
        rows[kind] = child(kind, c)
    Sd = np.load(tmp / "w2_direct.npy")
    Ss = np.load(tmp / "w2_scipy.npy")
    cmp = {"cg_vs_direct": _rel(np.load(tmp / "w2_cg.npy"), Sd), "scipy_vs_direct": _rel(Ss, Sd[: Ss.shape[0]])}
    return {"rows": rows, "cmp": cmp}


def run_w3(c: dict, tmp: Path) -> dict:
    t0 = time.perf_counter()
    c["paths"] = w3_write(c, tmp)
    write_s = time.perf_counter() - t0
    size = os.path.getsize(c["paths"]["X"])
    print(f"  [{write_s:6.1f} s] wrote {size / 2**30:.2f} GiB to {c['paths']['X']}", file=sys.stderr, flush=True)
    rows = {}
    floors = [child("w3_floor", c)]
    rows["w3_fit"] = child("w3_fit", c)
    rows["w3_topk"] = child("w3_topk", c)
    floors.append(child("w3_floor", c))
    rows["w3_floor"] = min(floors, key=lambda r: r["best_s"])
    rows["w3_floor"]["both_runs_s"] = [r["best_s"] for r in floors]
    rows["w3_floor_fresh"] = child("w3_floor", {**c, "variant": "mmap_fresh"})
    rows["w3_floor_pread"] = child("w3_floor", {**c, "variant": "pread"})
    return {"rows": rows, "cmp": {"write_s": write_s, "file_gib": size / 2**30}}


# ---------------------------------------------------------------------------------------------
# RESULTS.md
# ---------------------------------------------------------------------------------------------

BEGIN, END = "<!-- W-scale begin -->", "<!-- W-scale end -->"

# Why the numbers are what they are: written after reading the runs and the library's code
# (rust/objective.rs, glm.rs, influence.rs, solvers.rs, linalg.rs); the figures in them are taken
# from the run being rendered.


def notes_w1(r: dict) -> str:
    R = r["rows"]
    fl, full, b64, f32, py = R["w1_floor"], R["w1_full"], R["w1_top10_f64"], R["w1_top10_f32"], R["w1_pyinfluence"]
    floor, prod = fl["best_s"], fl["product_s"]
    return f"""Reading W1. The floor is the NumPy work any exact method does: one (n x 129)(129 x 500) product (which
includes first-touching the 400 MB output) and one Hessian build. (a)'s construction (gradient and
Hessian from one pass over X, Cholesky: {full['init_s']:.3f} s) is \
{'cheaper' if full['init_s'] < fl['hessian_s'] else 'no cheaper'} than NumPy's Hessian product
({fl['hessian_s']:.3f} s); its query is {full['query_s'] / prod:.2f}x NumPy's product alone. The score kernel is one product per
512-row block: the block's gradients, scaled, with a column of ones, [r X, r, 1], times [V; c]
(`model::scores_from_grads`), so S is written once. The floor moved between {min(fl['both_runs_s']):.3f} and
{max(fl['both_runs_s']):.3f} s within this run.

pyinfluence 0.5.0 is not a slow baseline: `InfluenceFunctions` is one OpenBLAS chain
(q x p)(p x p)(p x n) plus an n x p gradient matrix and a p x p inverse, {py['best_s'] / floor:.2f}x the floor (it
measured 0.51 to 0.64 s across runs on this machine). Being 2x faster than it means running at
{py['best_s'] / 2 / floor:.2f}x the floor: below the cost of writing the 400 MB result with any BLAS. upweight uses
less memory: no n x p gradient matrix; the q x n output is its only large allocation.

Top-10 never allocates the output: {b64['call_peak_mib']:.0f} MiB at peak (the data) against {full['call_peak_mib']:.0f}. Its \
query ({b64['query_s']:.3f} s)
is the score product plus a selection that compares each block row of scores with every
query's current k-th best and touches only the few that pass (candidates are buffered and
partitioned, O(1) each). With float32 rows (c) the product runs in float32 ({f32['query_s']:.3f} s for the query)
and the selected scores are recomputed in float64. The 5x target ({py['best_s'] / 5:.3f} s) is below the
float64 product alone ({prod:.3f} s) and about at the float32 product's cost; what remains above it is
the construction (a pass over X, {f32['init_s']:.3f} s) and the selection. float32 accuracy is not the
obstacle: see the identical top-10 sets above."""


def notes_w2(r: dict) -> str:
    c, R = r["cfg"], r["rows"]
    cg, di, sc, fit = R["w2_cg"], R["w2_direct"], R["w2_scipy"], R["w2_fit"]
    pa = R.get("w2_parts", {})
    fd = R.get("w2_fit_direct", {})
    per_it = cg["query_s"] / cg["iter_max"]
    txt = f"""Reading W2. SciPy's per-query CG needs {sc['iter_mean']:.0f} iterations on average (no preconditioner), each two
products with the {c['n'] * c['d'] * 8 / 2**20:.0f} MiB X only k = {c['k']} columns wide (memory-bound). upweight's CG solves all q
right-hand sides together (two products k q = {c['k'] * c['q']} columns wide per iteration, {per_it:.2f} s) and its block-Jacobi
preconditioner (the inverse of each feature's k x k class block of H) cuts the iterations to {cg['iter_mean']:.0f} on average
(with Jacobi, the diagonal alone, it needed 78 in the run before block Jacobi): {sc['best_s'] / cg['best_s']:.1f}x in all. Its \
Hessian-vector product is
about as fast as NumPy's batched one (parts table), so only fewer iterations would make CG faster: what is
left is the coupling between features, which no block-diagonal preconditioner sees."""
    if pa:
        txt += f"""

The direct solve is construction: {di['init_s']:.0f} s of its {di['best_s']:.0f} s. `_core.hessian` is tiled (rust/objective.rs):
the {c['k'] * (c['k'] + 1) // 2} class-pair tiles of H run in parallel over 4096-row chunks, each tile summing the chunks
in row order (deterministic for any thread count); each 4096-row chunk is copied column-major once
and every tile's weighted copy diag(a) Z is built column-major from it, the layout faer's product
is fastest with (before that change the Hessian took 31 s and the direct solve 37 s, 16.8x SciPy).
It ran {pa['uw_hessian_s']:.0f} s on {pa['uw_hessian_cpu_s'] / pa['uw_hessian_s']:.1f} cores
(CPU / wall) against NumPy's {pa['np_hessian_s']:.0f} s for the same {c['k'] * (c['k'] + 1) // 2} products: both cores are busy, and
per core faer's kernel on these 785 x 4096 x 785 products is {pa['uw_hessian_cpu_s'] / pa['np_hessian_cpu_s']:.1f}x OpenBLAS's time.
The blocked parallel Cholesky (deterministic across thread counts) took
{pa['uw_cholesky_s']:.1f} s against SciPy's {pa['scipy_cholesky_s']:.1f} s. With NumPy's Hessian and SciPy's Cholesky the direct
solve would take about {pa['np_hessian_s'] + pa['scipy_cholesky_s'] + di['query_s']:.0f} s, \
{sc['best_s'] / (pa['np_hessian_s'] + pa['scipy_cholesky_s'] + di['query_s']):.0f}x SciPy: what is left is per-core
kernel speed (faer against OpenBLAS), not parallelism or passes over the data. Memory: the direct
path now peaks at {di['call_peak_mib']:.0f} MiB (H is factored in place above p = 4096, and s N N^T is added
through N's nonzeros); it was 1195 MiB."""
    if "best_s" in fd:
        txt += f"""

The fit: with the default `solver='auto'` (Newton-CG here, by the measured cost model) it takes {fit['best_s']:.0f} s; with
`solver='direct'` {fd['best_s']:.0f} s ({fd['n_iter']} steps, each forming and factoring H as above; it took 368 s before the
tiled Hessian and the parallel Cholesky)."""
    return txt


def notes_w3(r: dict) -> str:
    R, c = r["rows"], r["cfg"]
    fl, tk, fit = R["w3_floor"], R["w3_topk"], R["w3_fit"]
    floor = fl["best_s"]
    return f"""Reading W3. Of upweight's {tk['best_s']:.1f} s, the top-k pass is {tk['query_s']:.1f} s \
({tk['query_s'] / floor:.2f} floors) and
`Influence(model, path, y)` {tk['init_s']:.1f} s ({tk['init_s'] / floor:.2f} floors): one pass over the file that sums the gradient
(for the optimality check) and the Hessian together. The fit reads the file once at its start and
once per Newton step (value, gradient and Hessian from one pass): {fit['n_iter']} steps, {fit['best_s'] / floor:.1f} floors,
{fit['best_s'] / tk['init_s']:.1f} times that one-pass construction. Peak RSS holds y twice (the caller's {c['n'] * 8 / 1e6:.0f} MB and the
copy `Influence` keeps, so that editing y afterwards cannot change its answers) plus blocks and queries; the
file never enters RSS (page cache only). Against the other two NumPy variants the ratio is
{tk['best_s'] / R['w3_floor_fresh']['best_s']:.2f}x (a fresh output array per chunk) and \
{tk['best_s'] / R['w3_floor_pread']['best_s']:.2f}x (`os.preadv` reads)."""


NOTES = {"W1": notes_w1, "W2": notes_w2, "W3": notes_w3}


def _f(x, nd=3):
    return "" if x is None else f"{x:.{nd}f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def render_w1(r: dict) -> list[str]:
    c, R, cmp = r["cfg"], r["rows"], r["cmp"]
    fl = R["w1_floor"]
    floor, prod = fl["best_s"], fl["product_s"]
    L = [
        f"### W1: binary logistic, n = {c['n']}, d = {c['d']}, q = {c['q']}, l2 = {c['l2']:g}",
        "",
        f"Command: `{r['command']}` ({r['machine']}; best of {c['repeat']} per process; model fitted "
        "once per process before timing, fit excluded).",
        "",
        "| what | time (s) | / floor | / product alone | construction (s) | query (s) | peak RSS, call (MiB) | peak RSS, process (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name, x):
        L.append(f"| {name} | {x['best_s']:.3f} | {x['best_s'] / floor:.2f} | {x['best_s'] / prod:.2f} | "
                 f"{_f(x.get('init_s'))} | {_f(x.get('query_s'))} | {x['call_peak_mib']:.0f} | {x['process_peak_mib']:.0f} |")

    L.append(f"| floor: NumPy `Z @ V` ({c['n']} x {c['d'] + 1} @ {c['d'] + 1} x {c['q']}) + Hessian `Z.T @ (Z * h)` | "
             f"{floor:.3f} | 1.00 | {floor / prod:.2f} | | | {fl['call_peak_mib']:.0f} | {fl['process_peak_mib']:.0f} |")
    L.append(f"| &nbsp;&nbsp;product alone | {prod:.3f} | {prod / floor:.2f} | 1.00 | | | | |")
    L.append(f"| &nbsp;&nbsp;Hessian alone | {fl['hessian_s']:.3f} | {fl['hessian_s'] / floor:.2f} | "
             f"{fl['hessian_s'] / prod:.2f} | | | | |")
    row("(a) upweight full S, float64: `Influence(...).on_loss`", R["w1_full"])
    row("(b) upweight top-10, float64: `Influence(...).top_k(k=10)`", R["w1_top10_f64"])
    row("(c) upweight top-10, X float32", R["w1_top10_f32"])
    row("(e) `upweight.reference.influence_on_loss`", R["w1_reference"])
    py = R["w1_pyinfluence"]
    row(f"(f) pyinfluence {py['version']} `InfluenceFunctions(mode='loss', damping=0)` fit + explain", py)
    full, f32 = R["w1_full"], R["w1_top10_f32"]
    L += [
        "",
        f"Floor measured before and after the others: {', '.join(f'{t:.3f}' for t in fl['both_runs_s'])} s "
        "(the faster is used). Construction = `Influence(...)` (gradient check, Hessian, Cholesky) or "
        "pyinfluence's `fit` (Hessian, inverse, n x p gradient matrix); query = `on_loss` / `top_k` / `explain`.",
        "",
        f"Agreement: reference vs upweight, max |difference| / max |S| = {cmp['reference_vs_upweight']:.1e} "
        f"(every {c['stride']}th column). "
        f"pyinfluence's scores are P[t, m] = g_t H^-1 g_m / n (positive = helpful, \"removal calibrated\"), "
        f"upweight's S[t, m] = -g_t H^-1 (g_m + 2 l2 coef*) / n: the factor is **-1** (least-squares fit "
        f"of P on S: {cmp['pyinfluence_scale']:.4f}), plus a per-query offset -g_t H^-1 2 l2 coef* / n that "
        f"pyinfluence omits (it drops the renormalisation term; at most {cmp['offset_rel']:.1e} of max |P| here). "
        f"max |P - (-S)| / max |P| = {cmp['pyinfluence_raw_rel']:.1e}; with the offset added back, "
        f"max |P - (-S - offset)| / max |P| = {cmp['pyinfluence_rel']:.1e}.",
        "",
        f"float32 vs float64 top-10 (q = {c['q']} queries): identical index sets for "
        f"{cmp['f32_helpful_same_sets']:.1%} (helpful) and {cmp['f32_harmful_same_sets']:.1%} (harmful) of the "
        f"queries (mean share of common indices {cmp['f32_helpful_shared']:.1%} / {cmp['f32_harmful_shared']:.1%}); "
        f"max relative error of the k-th best scores {max(cmp['f32_helpful_rel'], cmp['f32_harmful_rel']):.1e} "
        f"(helpful {cmp['f32_helpful_rel']:.1e}, harmful {cmp['f32_harmful_rel']:.1e}; "
        f"{cmp['f32_vs_full_matrix_rel']:.1e} relative to max |S|). The float64 top-10 helpful sets equal the 10 "
        f"smallest entries of each row of the full matrix (a) for {cmp['topk_vs_full_matrix']:.1%} of the queries.",
    ]
    for w in f32.get("warnings", []) + py.get("warnings", []):
        L.append(f"Warning seen: `{w}`")
    rf = full["best_s"] / floor
    sp = py["best_s"] / full["best_s"]
    sp32 = py["best_s"] / f32["best_s"]
    mem = full["call_peak_mib"] < py["call_peak_mib"]
    L += [
        "",
        "Targets:",
        "",
        f"- full matrix within 1.25x of the floor: {verdict(rf <= 1.25)}, {rf:.2f}x"
        + ("" if rf <= 1.25 else f" ({rf / 1.25:.2f}x over the target; {full['best_s'] - 1.25 * floor:.3f} s too slow)") + ".",
        f"- full matrix at least 2x faster than pyinfluence: {verdict(sp >= 2)}, {sp:.2f}x; with lower peak "
        f"memory: {verdict(mem)}, {full['call_peak_mib']:.0f} vs {py['call_peak_mib']:.0f} MiB during the call "
        f"({full['process_peak_mib']:.0f} vs {py['process_peak_mib']:.0f} MiB over the process).",
        f"- top-10 in float32 at least 5x faster than pyinfluence's full matrix: {verdict(sp32 >= 5)}, {sp32:.2f}x.",
    ]
    return L


def render_w2(r: dict) -> list[str]:
    c, R, cmp = r["cfg"], r["rows"], r["cmp"]
    p = c["k"] * (c["d"] + 1)
    sc = R["w2_scipy"]
    base = sc["best_s"]
    L = [
        f"### W2: multinomial, n = {c['n']}, d = {c['d']} (~80% zeros), k = {c['k']} (p = {p}), q = {c['q']}, "
        f"l2 = {c['l2']:g}, relative residual {c['rtol']:g}",
        "",
        f"Command: `{r['command']}` ({r['machine']}; one run per process).",
        "",
        "| what | time (s) | SciPy / this | construction (s) | query (s) | iterations (min / mean / max) "
        "| peak RSS, call (MiB) | peak RSS, process (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    fit = R["w2_fit"]
    L.append(f"| fit: `LogisticRegression(l2).fit` (default `solver='auto'`, here {fit['solver']!r}: "
             f"Newton steps by {'truncated CG on Hessian-vector products' if fit['solver'] == 'cg' else 'Cholesky of H'}) | "
             f"{fit['best_s']:.1f} | | | | {fit['n_iter']} Newton steps | {fit['call_peak_mib']:.0f} | {fit['process_peak_mib']:.0f} |")
    fd = R.get("w2_fit_direct", {})
    if "best_s" in fd:
        L.append(f"| fit: `LogisticRegression(l2, solver='direct').fit` (forms and factors the {p} x {p} H every step) | "
                 f"{fd['best_s']:.1f} | | | | {fd['n_iter']} Newton steps | {fd['call_peak_mib']:.0f} | {fd['process_peak_mib']:.0f} |")
    for kind, name in [("w2_cg", "(a) upweight `solver='cg'`, rtol 1e-6: `Influence(...).on_loss`"),
                       ("w2_direct", "(b) upweight `solver='direct'`: `Influence(...).on_loss`")]:
        x = R[kind]
        its = f"{x['iter_min']} / {x['iter_mean']:.1f} / {x['iter_max']}" if kind == "w2_cg" else "direct"
        L.append(f"| {name} | {x['best_s']:.1f} | {base / x['best_s']:.1f} | {x['init_s']:.1f} | {x['query_s']:.1f} | "
                 f"{its} | {x['call_peak_mib']:.0f} | {x['process_peak_mib']:.0f} |")
    ext = (f"extrapolated from {sc['queries_timed']} of {c['q']} queries" if sc["extrapolated"] else f"all {c['q']} queries")
    L.append(f"| (c) SciPy {sc['scipy']} `cg` per query, NumPy matrix-free HVP ({ext}) | {base:.1f} | 1.0 | "
             f"{sc['setup_s']:.2f} | {sc['per_query_s']:.2f} per query | - / {sc['iter_mean']:.1f} / {sc['iter_max']} | "
             f"{sc['call_peak_mib']:.0f} | {sc['process_peak_mib']:.0f} |")
    best = min(R["w2_cg"]["best_s"], R["w2_direct"]["best_s"])
    L += [
        "",
        f"SciPy: per query {sc['query_min_s']:.2f}-{sc['query_max_s']:.2f} s, scores for the solved queries "
        f"{sc['score_s']:.2f} s (scaled by q in the total); measured {sc['measured_s']:.1f} s in all. Its HVP agrees with "
        f"`upweight._core.hvp` to {sc['hvp_check']:.1e} (relative, small random case); final relative residuals "
        f"<= {sc['max_residual']:.1e}. Agreement of the score matrices (max |difference| / max |S|): cg vs direct "
        f"{cmp['cg_vs_direct']:.1e}, SciPy vs direct {cmp['scipy_vs_direct']:.1e} (on the solved queries); "
        f"direct solve's relative residual {R['w2_direct']['max_residual']:.1e}, cg's {R['w2_cg']['max_residual']:.1e}.",
    ]
    pa = R.get("w2_parts")
    if pa:
        L += [
            "",
            "Where the time goes (one more process, each part timed once; CPU / wall shows how many of the 2 cores were busy):",
            "",
            "| part | upweight wall (s) | upweight CPU (s) | NumPy / SciPy wall (s) | NumPy / SciPy CPU (s) |",
            "|---|---:|---:|---:|---:|",
            f"| Hessian {p} x {p}: `_core.hessian` vs {c['k'] * (c['k'] + 1) // 2} NumPy products `Z.T @ (Z * w)` "
            f"(agree to {pa['hessian_agree']:.0e}) | {pa['uw_hessian_s']:.1f} | {pa['uw_hessian_cpu_s']:.1f} | "
            f"{pa['np_hessian_s']:.1f} | {pa['np_hessian_cpu_s']:.1f} |",
            f"| Cholesky of H + s N N^T: `GradientInfluence(G, hessian=H, solver='direct')` (upweight's direct solver "
            f"on that matrix) vs SciPy `cho_factor` | {pa['uw_cholesky_s']:.1f} | {pa['uw_cholesky_cpu_s']:.1f} | "
            f"{pa['scipy_cholesky_s']:.1f} | {pa['scipy_cholesky_cpu_s']:.1f} |",
            f"| one Hessian-vector product on {c['q']} vectors: `_core.hvp` vs NumPy batched (two products with X, "
            f"{c['k'] * c['q']} columns wide; agree to {pa['hvp_agree']:.0e}) | {pa['uw_hvp_s']:.2f} | {pa['uw_hvp_cpu_s']:.2f} | "
            f"{pa['np_hvp_s']:.2f} | {pa['np_hvp_cpu_s']:.2f} |",
        ]
    if "best_s" in fd:
        L.append("")
        L.append(f"The direct-step fit reached max |grad| {fd['grad_norm']:.1e} and theta within {fd['max_theta_diff']:.1e} "
                 f"(max |difference| / max |theta|) of the default fit (max |grad| {fit['grad_norm']:.1e}).")
    L += [
        "",
        "Targets:",
        "",
        f"- exact solve at least 20x faster than SciPy's per-query cg: {verdict(base / best >= 20)}, "
        f"cg {base / R['w2_cg']['best_s']:.1f}x, direct {base / R['w2_direct']['best_s']:.1f}x"
        + ("" if base / best >= 20 else f" (best is {20 / (base / best):.1f}x short of 20x)") + ".",
    ]
    return L


def render_w3(r: dict) -> list[str]:
    c, R, cmp = r["cfg"], r["rows"], r["cmp"]
    fl, tk, fit = R["w3_floor"], R["w3_topk"], R["w3_fit"]
    floor = fl["best_s"]
    L = [
        f"### W3: streaming top-10, n = {c['n']}, d = {c['d']}, q = {c['q']}, {c['family']} regression, "
        f"l2 = {c['l2']:g}, X a {cmp['file_gib']:.2f} GiB float64 .npy",
        "",
        f"Command: `{r['command']}` ({r['machine']}; one run per process; data written in "
        f"{cmp['write_s']:.0f} s to a temporary directory under /tmp and deleted afterwards).",
        "",
        "| what | time (s) | / floor | construction (s) | query (s) | peak RSS, call (MiB) | peak RSS, process (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| floor: one streamed NumPy product, chunks of {c['chunk']} rows sliced from `np.load(mmap_mode='r')` @ "
        f"({c['d'] + 1} x {c['q']}) into one reused output buffer | {floor:.2f} | 1.00 | | | {fl['call_peak_mib']:.0f} "
        f"| {fl['process_peak_mib']:.0f} |",
    ]
    for key, name in [("w3_floor_fresh", "the same, a fresh output array per chunk (`chunk @ V`)"),
                      ("w3_floor_pread", "the same product, chunks read with `os.preadv` into one reused buffer")]:
        if key in R:
            x = R[key]
            L.append(f"| &nbsp;&nbsp;{name} | {x['best_s']:.2f} | {x['best_s'] / floor:.2f} | | | "
                     f"{x['call_peak_mib']:.0f} | {x['process_peak_mib']:.0f} |")
    L += [
        f"| fit from the path: `{'LogisticRegression' if c['family'] == 'logistic' else 'LinearRegression'}"
        f"(l2).fit(path, y)` ({fit['n_iter']} Newton steps) | {fit['best_s']:.1f} | {fit['best_s'] / floor:.2f} | | | "
        f"{fit['call_peak_mib']:.0f} | {fit['process_peak_mib']:.0f} |",
        f"| upweight `Influence(model, path, y).top_k(Xq, yq, k=10)` | {tk['best_s']:.1f} | {tk['best_s'] / floor:.2f} | "
        f"{tk['init_s']:.1f} | {tk['query_s']:.1f} | {tk['call_peak_mib']:.0f} | {tk['process_peak_mib']:.0f} |",
        "",
        f"Floor measured before and after: {', '.join(f'{t:.1f}' for t in fl['both_runs_s'])} s (the faster is used). "
        f"The file was written just before and the machine has {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB "
        "of RAM, so the reads come mostly from the page cache, for the floor and upweight alike (page cache is not "
        f"counted in RSS). Spot check: the top-10 scores of query 0 equal `on_loss(..., idx=...)` to {tk['spot_check']:.0e}.",
        "",
        "Targets:",
        "",
    ]
    peak = max(tk["process_peak_mib"], fit["process_peak_mib"])
    ratio = tk["best_s"] / floor
    L += [
        f"- peak RSS under 1 GB: {verdict(peak * 2**20 < 1e9)}, {peak:.0f} MiB (largest process peak of the fit and the top-k processes).",
        f"- time within 2x of one streamed product of the same shape: {verdict(ratio <= 2)}, {ratio:.2f}x"
        + ("" if ratio <= 2 else f" ({ratio / 2:.2f}x over the target)") + ".",
    ]
    return L


def kept_sections(text: str) -> dict[str, str]:
    """The rendered section of each workload ("### W1: ..." up to the next one) between the
    W-scale markers of RESULTS.md's text, notes included."""
    if BEGIN not in text:
        return {}
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    out = {}
    for piece in block.split("\n### ")[1:]:
        w = piece[:2]
        if w in ("W1", "W2", "W3"):
            out[w] = ("### " + piece).rstrip("\n")
    return out


def write_results(write: bool) -> None:
    parts = [BEGIN, "## Scale: issue 3's workloads (W1 full matrix and top-k, W2 multinomial p = 7850, W3 streaming 10M rows)", "",
             "Written by `python bench/bench_scale.py` from bench/out/scale_*.json; each workload's command is "
             "given with it (`--only W1|W2|W3` reruns one). Each measurement runs in its own process; peak RSS "
             "\"call\" is the high-water mark while the timed calls ran (reset just before them, so it includes "
             "what the process already held: the data), \"process\" over the whole process.", ""]
    path = HERE / "RESULTS.md"
    text = path.read_text()
    kept = kept_sections(text)
    for w, fn in [("W1", render_w1), ("W2", render_w2), ("W3", render_w3)]:
        f = OUT / f"scale_{w}.json"
        if not f.exists():
            # measured on another machine or session: RESULTS.md keeps what it has
            if w in kept:
                parts += [kept[w], ""]
            continue
        r = json.loads(f.read_text())
        parts += fn(r)
        if w in NOTES:
            parts += ["", NOTES[w](r).strip()]
        parts.append("")
    parts.append(END)
    block = "\n".join(parts) + "\n"
    print(block)
    if not write:
        return
    if BEGIN in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["W1", "W2", "W3"], action="append",
                    help="run only this workload (repeatable); the others' last results stay in RESULTS.md")
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run (RESULTS.md untouched unless --write)")
    ap.add_argument("--write", action="store_true", help="with --quick: write RESULTS.md anyway")
    ap.add_argument("--repeat", type=int, default=3, help="W1 repeats per process (best is kept)")
    ap.add_argument("--scipy-budget", type=float, default=300.0,
                    help="W2: time SciPy on every query if that is projected under this many seconds, else extrapolate")
    ap.add_argument("--skip-direct-fit", action="store_true",
                    help="W2: do not time the fit with solver='direct' (about 6-7 minutes at p = 7850)")
    ap.add_argument("--w3-family", choices=["logistic", "linear"], default="logistic")
    ap.add_argument("--tmp", default="/tmp", help="where the temporary directory (W3's ~5 GB file) goes")
    ap.add_argument("--render", action="store_true", help="only re-render RESULTS.md from bench/out/scale_*.json")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one, json.loads(args.cfg))
        return
    if args.render:
        write_results(True)
        return
    OUT.mkdir(exist_ok=True)
    sizes = QUICK if args.quick else FULL
    command = "python bench/bench_scale.py " + " ".join(sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="upweight_scale_", dir=args.tmp))
    try:
        for w, fn in [("W1", run_w1), ("W2", run_w2), ("W3", run_w3)]:
            if args.only and w not in args.only:
                continue
            print(f"{w}:", file=sys.stderr, flush=True)
            cfg = {**sizes[w], "repeat": args.repeat if w == "W1" else 1, "tmp": str(tmp), "quick": args.quick,
                   "scipy_budget": args.scipy_budget, "family": args.w3_family,
                   "skip_direct_fit": args.skip_direct_fit}
            t0 = time.perf_counter()
            res = fn(dict(cfg), tmp)
            res.update(cfg=cfg, command=command.strip(), machine=machine(), wall_s=time.perf_counter() - t0)
            name = f"scale_{w}{'_quick' if args.quick and not args.write else ''}.json"
            (OUT / name).write_text(json.dumps(res, indent=1))
            print(f"{w} done in {res['wall_s']:.0f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.quick and not args.write:
        # render the quick results without touching RESULTS.md
        for w in ("W1", "W2", "W3"):
            q = OUT / f"scale_{w}_quick.json"
            if q.exists() and (not args.only or w in args.only):
                r = json.loads(q.read_text())
                print("\n".join({"W1": render_w1, "W2": render_w2, "W3": render_w3}[w](r)) + "\n\n" + NOTES[w](r) + "\n")
        return
    write_results(True)


if __name__ == "__main__":
    main()
