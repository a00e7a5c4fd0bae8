"""W4 (issue 12): an MLP 784-128-10 (tanh, softmax cross-entropy, l2 = 1e-4) on Fashion-MNIST train
(n = 60000), q = 100 test queries (a seeded sample of the test set), float64 throughout.

  1. training: ``uw.MLPClassifier(hidden=(128,), l2=1e-4, max_iter=B, newton_iter=0).fit`` (L-BFGS
     only, a fixed iteration budget B; the max |gradient| reached is reported). Once, in its own
     process; its parameters are saved (bench/out/w4_theta_n<n>.npy) and used by every other job.
  2. exact damped Gauss-Newton influence: ``uw.Influence(net, X, y, curvature="gauss-newton",
     damping=D, solver="cg", rtol=1e-6)`` (default preconditioner), then ``on_loss`` (the score
     matrix) in one process and ``top_k(k=10)`` in another: construction and query time, CG
     iterations (``solve_info``), peak RSS (VmHWM of the measuring process, and the peak while the
     timed calls ran). Each query is one block-CG solve whose every iteration is a Gauss-Newton
     product with all still-active right-hand sides over the n rows, 1.2-1.7 s per right-hand side
     per iteration at n = 60000 on the 2-core machine, and at damping="auto" it takes thousands of
     iterations: all q = 100 queries would take days. So these jobs solve ``--cg-queries`` (1) of the q
     queries at ``--damping`` (0.01, about 100 x "auto" here) and the report extrapolates to q = 100.
     The opt-in part ``precond`` counts CG iterations with no preconditioner, Jacobi and K-FAC
     (``--precond``) at damping "auto" and 100 x "auto" on the first 6000 rows (two queries; about
     20 minutes).
  3. kernels, upweight against torch.func on the same net, same data, float64, 2 threads each:
       gn1 / gn10  the damped-free Gauss-Newton product (1/n) J^T Lambda J V + 2 l2 M V over all n rows
                   for V (p x r), r = 1 and 10: ``net.core_model("gauss-newton").hvp(theta, X, y, None,
                   l2, V)`` against torch.func: one ``vjp`` of the logits, then ``vmap`` over the columns
                   of (``jvp``, Lambda, the vjp) -- the jvp + vjp Gauss-Newton product.
       peg         per-example gradients of ``--peg-rows`` rows in blocks of 512 (each block's 512 x p
                   matrix formed, then dropped): ``core_model().per_example_grads`` against
                   ``vmap(grad(loss))``.
       score       influence scores of ``--score-rows`` training rows against q solved queries V (p x q):
                   upweight's score kernel ``_core.score_block`` (never forms gradients) against
                   torch.func's per-example gradients (blocks of 512) times V, scaled by -1/n.
       floor       one GEMM of the first layer's shape, X (n x 784) @ W^T (784 x 128), fresh output:
                   NumPy (OpenBLAS) and torch (MKL). Every kernel above is a number of such GEMMs at
                   least (RESULTS.md gives the count), so ``/ floor`` reads as GEMM-equivalents.
     Before any timing, a ``check`` process compares the two libraries: per-example gradients,
     scores, Gauss-Newton products (r = 1, 10), and the CG solution of the influence (residual
     measured with torch's product) -- relative errors are reported.

Measurement rules (bench/RESULTS.md): every measurement runs in its own process (data loaded,
parameters read and inputs made there, untimed; the timed call repeated ``--repeat`` times, best
kept); the kernel jobs are interleaved over ``--rounds`` rounds, upweight and torch back to back in
each round with their order swapped every round; the load from other processes (/proc/loadavg,
others' CPU in the second before and during the run) is recorded per run; a run is quiet when others
used < ``--quiet-cpu`` % of one core before and during it; medians are over quiet runs (all runs if
fewer than 2 were quiet, flagged). For the NumPy and torch processes OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE are removed from the environment (they slow NumPy's OpenBLAS where the machine sets
them; the run records whether they were set). upweight runs with the environment as it is.

    python bench/w4_networks.py [--quick] [--rounds 3] [--repeat 2] [--train-iter 100] [--cg-queries 1] [--damping 0.01]
                                [--only train,check,cg,kernels[,precond]] [--jobs floor,gn1,gn10,peg,score]
    python bench/w4_networks.py --report bench/out/w4_<stamp>.json     # re-render the tables
    python bench/w4_networks.py --loop gn10_uw --seconds 20             # one kernel in a loop (for perf)

Writes bench/out/w4_<stamp>.json (rewritten after every run) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from ab_restructure import BLAS_VARS, env_for, load_before, now, repeat_timed  # this folder is on sys.path when run as a script
from bench_scale import peak_mib, process_peak_mib, reset_peak

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"

FULL = {"n": 60_000, "q": 100, "hidden": 128, "l2": 1e-4, "train_iter": 100, "rtol": 1e-6, "k_top": 10, "damping": 1e-2,
        "cg_queries": 1, "peg_rows": 2048, "score_rows": 4096, "check_rows": 5000, "precond_rows": 6000, "block": 512}
QUICK = {"n": 6_000, "q": 10, "hidden": 128, "l2": 1e-4, "train_iter": 30, "rtol": 1e-6, "k_top": 10, "damping": 1e-2,
         "cg_queries": 2, "peg_rows": 512, "score_rows": 1024, "check_rows": 1000, "precond_rows": 1000, "block": 512}

# kernel comparisons: group -> (what, [(job, library)])
GROUPS = {
    "floor": ("one GEMM X (n x 784) @ W^T (784 x 128), fresh output", [("floor_np", "numpy"), ("floor_torch", "torch")]),
    "gn1": ("Gauss-Newton product, r = 1, all n rows", [("gn1_uw", "upweight"), ("gn1_torch", "torch")]),
    "gn10": ("Gauss-Newton product, r = 10, all n rows", [("gn10_uw", "upweight"), ("gn10_torch", "torch")]),
    "peg": ("per-example gradients, blocks of 512 rows", [("peg_uw", "upweight"), ("peg_torch", "torch")]),
    "score": ("scores against q solved queries", [("score_uw", "upweight"), ("score_torch", "torch")]),
}
#: rows of the untimed warm-up call every kernel process makes first (thread pools, torch.func's first trace)
WARM = 256


# ---------------------------------------------------------------------------------------------
# data and the two implementations of the network (inside the measuring process, untimed)
# ---------------------------------------------------------------------------------------------


def load_data(c):
    import upweight as uw

    X, y = uw.load_fashion_mnist("train")
    Xt, yt = uw.load_fashion_mnist("test")
    X, y = np.ascontiguousarray(X[:c["n"]]), y[:c["n"]].astype(np.float64)
    pick = np.sort(np.random.default_rng(0).choice(Xt.shape[0], c["q"], replace=False))
    return X, y, np.ascontiguousarray(Xt[pick]), yt[pick].astype(np.float64)


def theta_path(c) -> Path:
    return OUT / f"w4_theta_n{c['n']}.npy"


def load_net(c):
    """The trained MLPClassifier (parameters from the train job)."""
    import upweight as uw

    net = uw.MLPClassifier(hidden=(c["hidden"],), l2=c["l2"])
    net.set_theta(np.load(theta_path(c)), n_features=784)
    return net


def penalty_mask(c) -> np.ndarray:
    """1 on weights, 0 on biases, in upweight's layout (per layer [W | b] row-major)."""
    d, h, k = 784, c["hidden"], 10
    m = np.ones(h * (d + 1) + k * (h + 1))
    m[np.arange(h) * (d + 1) + d] = 0.0
    m[h * (d + 1) + np.arange(k) * (h + 1) + h] = 0.0
    return m


class TorchNet:
    """The same network for torch.func, as a function of the flat parameter vector in upweight's
    layout: F.linear, tanh, F.linear (what nn.Sequential(Linear, Tanh, Linear) runs)."""

    def __init__(self, c, theta: np.ndarray):
        import torch

        torch.set_num_threads(2)
        self.torch = torch
        self.d, self.h, self.k, self.l2 = 784, c["hidden"], 10, c["l2"]
        self.theta = torch.from_numpy(np.ascontiguousarray(theta))
        self.mask = torch.from_numpy(penalty_mask(c))

    def logits(self, t, x):
        F = self.torch.nn.functional
        d, h, k = self.d, self.h, self.k
        w0 = t[:h * (d + 1)].reshape(h, d + 1)
        w1 = t[h * (d + 1):].reshape(k, h + 1)
        return F.linear(self.torch.tanh(F.linear(x, w0[:, :d], w0[:, d])), w1[:, :h], w1[:, h])

    def loss1(self, t, x, y):
        return self.torch.nn.functional.cross_entropy(self.logits(t, x[None]), y[None])

    def per_example_grads(self, x, y):
        from torch.func import grad, vmap

        return vmap(grad(self.loss1), in_dims=(None, 0, 0))(self.theta, x, y)

    def gn_product(self, x, V):
        """(1/n) J^T Lambda J V + 2 l2 M V for the columns of V (p x r): one vjp of the logits (its
        residuals kept), then vmap over the columns of jvp -> Lambda -> vjp."""
        from torch.func import jvp, vjp, vmap

        def f(t):
            return self.logits(t, x)

        h, vjp_fn = vjp(f, self.theta)
        prob = self.torch.softmax(h, dim=1)
        n = x.shape[0]

        def one(v):
            jv = jvp(f, (self.theta,), (v,))[1]
            u = prob * jv - prob * (prob * jv).sum(dim=1, keepdim=True)  # softmax cross-entropy's Lambda
            return vjp_fn(u)[0] / n + 2.0 * self.l2 * self.mask * v

        return vmap(one, in_dims=1, out_dims=1)(V)


# ---------------------------------------------------------------------------------------------
# jobs: setup(c) -> once() -> (phase times, info)
# ---------------------------------------------------------------------------------------------


def job_train(c, args):
    import upweight as uw

    X, y, Xq, yq = load_data(c)

    def once():
        net = uw.MLPClassifier(hidden=(c["hidden"],), l2=c["l2"], max_iter=c["train_iter"], newton_iter=0)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            t0 = now()
            net.fit(X, y)
            t1 = now()
        OUT.mkdir(exist_ok=True)
        np.save(theta_path(c), net.theta_)
        Xt, yt = uw.load_fashion_mnist("test")
        return {"fit": t1 - t0}, {"n_iter": net.n_iter_, "grad_norm": net.grad_norm_, "converged": bool(net.converged_),
                                  "objective": net.objective_, "train_accuracy": net.score(X, y), "test_accuracy": net.score(Xt, yt),
                                  "warnings": [str(x.message)[:200] for x in w], "p": net.n_params}
    return once


def auto_damping(net, X, y, c) -> float:
    """What damping="auto" would be: 0.1 x the mean of the Gauss-Newton diagonal (upweight.influence.AUTO_DAMPING)."""
    from upweight import _core
    from upweight.influence import AUTO_DAMPING

    diag = _core.curvature_diag(net.core_model("gauss-newton"), net.get_theta(), X, y, None, c["l2"], None)
    return AUTO_DAMPING * float(np.mean(diag))


def _influence(c, args, top: bool):
    import upweight as uw

    X, y, Xq, yq = load_data(c)
    Xq, yq = Xq[:c["cg_queries"]], yq[:c["cg_queries"]]
    net = load_net(c)
    auto = auto_damping(net, X, y, c)

    def once():
        t0 = now()
        inf = uw.Influence(net, X, y, curvature="gauss-newton", damping=c["damping"], solver="cg", rtol=c["rtol"], max_iter=100_000)
        t1 = now()
        if top:
            tk = inf.top_k(Xq, yq, k=c["k_top"])
            res = {"helpful_idx": tk.helpful_idx, "harmful_idx": tk.harmful_idx, "helpful": tk.helpful, "harmful": tk.harmful}
        else:
            res = {"S": inf.on_loss(Xq, yq)}
        t2 = now()
        si = inf.solve_info
        info = {"damping": inf.damping, "auto_damping": auto, "iterations": [int(i) for i in si.iterations],
                "max_residual": si.max_residual,
                "converged": bool(si.converged.all()), "grad_norm": inf.grad_norm, "queries": int(Xq.shape[0])}
        if args.save:
            np.savez(args.save, **res)
        return {"build": t1 - t0, "top_k" if top else "on_loss": t2 - t1}, info
    return once


def job_cg_on_loss(c, args):
    return _influence(c, args, False)


def job_cg_top_k(c, args):
    return _influence(c, args, True)


def job_check(c, args):
    """upweight vs torch on the same net and data: relative errors (max |a - b| / max |b|)."""
    import torch

    import upweight as uw
    from upweight import _core

    X, y, Xq, yq = load_data(c)
    net = load_net(c)
    theta = net.get_theta()
    tn = TorchNet(c, theta)
    m = c["check_rows"]
    Xm, ym = X[:m], y[:m]
    cm, cg = net.core_model(), net.core_model("gauss-newton")
    rng = np.random.default_rng(1)

    def rel(a, b):
        return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))

    def once():
        out = {}
        rows = 64
        G = tn.per_example_grads(torch.from_numpy(X[:rows]), torch.from_numpy(y[:rows]).long()).numpy()
        out["per_example_grads (64 rows)"] = rel(cm.per_example_grads(theta, X[:rows], y[:rows]), G)
        V = rng.standard_normal((theta.size, c["q"]))
        vc = np.vstack([V, np.zeros((1, c["q"]))])
        rows = 256
        S_uw = _core.score_block(cm, theta, X[:rows], y[:rows], vc, float(c["n"]))
        G = tn.per_example_grads(torch.from_numpy(X[:rows]), torch.from_numpy(y[:rows]).long()).numpy()
        out[f"scores (256 rows, q = {c['q']})"] = rel(S_uw, -(G @ V).T / c["n"])
        for r in (1, 10):
            V = rng.standard_normal((theta.size, r))
            out[f"Gauss-Newton product r = {r} ({m} rows)"] = rel(
                cg.hvp(theta, Xm, ym, None, c["l2"], V), tn.gn_product(torch.from_numpy(Xm), torch.from_numpy(V)).numpy())
        # the influence's CG solution, checked with torch's product: ||(G + damping I) v - g|| / ||g||
        inf = uw.Influence(net, Xm, ym, curvature="gauss-newton", damping=c["damping"], solver="cg", rtol=c["rtol"], max_iter=100_000)
        g = inf.loss_grads(Xq[:3], yq[:3]).T
        v = inf.inverse_hvp(g)
        Gv = tn.gn_product(torch.from_numpy(Xm), torch.from_numpy(v)).numpy() + inf.damping * v
        out[f"CG solve (3 queries, {m} rows): relative residual by torch's product"] = float(
            np.max(np.linalg.norm(Gv - g, axis=0) / np.linalg.norm(g, axis=0)))
        S = inf.on_loss(Xq[:3], yq[:3])
        Gv = np.vstack([(tn.per_example_grads(torch.from_numpy(Xm[a:a + 500]), torch.from_numpy(ym[a:a + 500]).long()) @
                         torch.from_numpy(v)).numpy() for a in range(0, m, 500)])
        offset = v.T @ (2.0 * c["l2"] * penalty_mask(c) * theta)  # the renormalisation term (penalty_renormalized=True)
        out[f"on_loss (3 queries, {m} rows) vs -((torch grads) v + 2 l2 v.(M theta)) / n"] = rel(S, -(Gv.T + offset[:, None]) / m)
        return {"check": 0.0}, {"rel_err": out, "torch": torch.__version__}
    return once


def job_precond(c, args):
    """CG iterations with no preconditioner, Jacobi (the Gauss-Newton diagonal) and K-FAC (the
    inverse of each layer's damped kron(S, A)), on the first ``precond_rows`` rows, two queries,
    damping "auto" and 100 x "auto". ``prepare_seconds`` is the construction (the value, gradient
    and diagonal pass, plus K-FAC's factor pass and eigendecompositions);
    ``seconds`` the solve itself."""
    import upweight as uw

    X, y, Xq, yq = load_data(c)
    m = c["precond_rows"]
    Xm, ym = np.ascontiguousarray(X[:m]), y[:m]
    net = load_net(c)
    auto = auto_damping(net, Xm, ym, c)
    kinds = [k for k in args.precond.split(",") if k]

    def once():
        out, ph = [], {}
        for factor in (1.0, 100.0):
            for pre in kinds:
                t0 = now()
                inf = uw.Influence(net, Xm, ym, curvature="gauss-newton", damping=factor * auto, solver="cg", rtol=c["rtol"],
                                   max_iter=100_000, precondition=pre)
                prep = now() - t0
                g = inf.loss_grads(Xq[:2], yq[:2]).T
                t0 = now()
                inf.inverse_hvp(g)
                dt = now() - t0
                si = inf.solve_info
                ph[f"x{factor:g} {pre}"] = dt
                out.append({"damping_factor": factor, "damping": factor * auto, "precondition": pre, "seconds": dt,
                            "prepare_seconds": prep, "iterations": [int(i) for i in si.iterations],
                            "max_residual": si.max_residual})
                print(json.dumps(out[-1]), file=sys.stderr, flush=True)
        return ph, {"rows": m, "auto_damping": auto, "solves": out}
    return once


def _kernel_data(c):
    X, y, _, _ = load_data(c)
    return X, y, np.load(theta_path(c))


def job_floor_np(c, args):
    X, _, theta = _kernel_data(c)
    d, h = 784, c["hidden"]
    W = np.ascontiguousarray(theta[:h * (d + 1)].reshape(h, d + 1)[:, :d])
    X[:WARM] @ W.T  # warm-up (untimed)

    def once():
        t0 = now()
        Z = X @ W.T
        return {"kernel": now() - t0}, {"shape": list(Z.shape)}
    return once


def job_floor_torch(c, args):
    import torch

    torch.set_num_threads(2)
    X, _, theta = _kernel_data(c)
    d, h = 784, c["hidden"]
    Xt = torch.from_numpy(X)
    W = torch.from_numpy(np.ascontiguousarray(theta[:h * (d + 1)].reshape(h, d + 1)[:, :d]))
    Xt[:WARM] @ W.T  # warm-up (untimed)

    def once():
        t0 = now()
        Z = Xt @ W.T
        return {"kernel": now() - t0}, {"shape": list(Z.shape)}
    return once


def _gn(c, r: int, lib: str):
    X, y, theta = _kernel_data(c)
    V = np.random.default_rng(2).standard_normal((theta.size, r))
    if lib == "upweight":
        import upweight as uw

        net = uw.MLPClassifier(hidden=(c["hidden"],), l2=c["l2"])
        net.set_theta(theta, n_features=784)
        cg = net.core_model("gauss-newton")
        cg.hvp(theta, X[:WARM], y[:WARM], None, c["l2"], V)  # warm-up (untimed)

        def once():
            t0 = now()
            out = cg.hvp(theta, X, y, None, c["l2"], V)
            return {"kernel": now() - t0}, {"checksum": float(out.sum())}
        return once
    import torch

    tn = TorchNet(c, theta)
    Xt, Vt = torch.from_numpy(X), torch.from_numpy(V)
    tn.gn_product(Xt[:WARM], Vt)  # warm-up (untimed)

    def once():
        t0 = now()
        out = tn.gn_product(Xt, Vt)
        return {"kernel": now() - t0}, {"checksum": float(out.sum())}
    return once


def job_gn1_uw(c, args):
    return _gn(c, 1, "upweight")


def job_gn1_torch(c, args):
    return _gn(c, 1, "torch")


def job_gn10_uw(c, args):
    return _gn(c, 10, "upweight")


def job_gn10_torch(c, args):
    return _gn(c, 10, "torch")


def _peg(c, lib: str):
    X, y, theta = _kernel_data(c)
    rows, b = c["peg_rows"], c["block"]
    if lib == "upweight":
        import upweight as uw

        net = uw.MLPClassifier(hidden=(c["hidden"],), l2=c["l2"])
        net.set_theta(theta, n_features=784)
        cm = net.core_model()

        def grads(a):
            return cm.per_example_grads(theta, X[a:a + b], y[a:a + b])
    else:
        import torch

        tn = TorchNet(c, theta)
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()

        def grads(a):
            return tn.per_example_grads(Xt[a:a + b], yt[a:a + b])

    grads(0)  # warm-up (untimed)

    def once():
        s = 0.0
        t0 = now()
        for a in range(0, rows, b):
            G = grads(a)
            s += float(G[0, 0])
            del G
        return {"kernel": now() - t0}, {"rows": rows}
    return once


def job_peg_uw(c, args):
    return _peg(c, "upweight")


def job_peg_torch(c, args):
    return _peg(c, "torch")


def _score(c, lib: str):
    X, y, theta = _kernel_data(c)
    rows, b, q, n = c["score_rows"], c["block"], c["q"], float(c["n"])
    V = np.random.default_rng(3).standard_normal((theta.size, q))
    Xs, ys = X[:rows], y[:rows]
    if lib == "upweight":
        import upweight as uw
        from upweight import _core

        net = uw.MLPClassifier(hidden=(c["hidden"],), l2=c["l2"])
        net.set_theta(theta, n_features=784)
        cm = net.core_model()
        vc = np.vstack([V, np.zeros((1, q))])
        _core.score_block(cm, theta, Xs[:WARM], ys[:WARM], vc, n)  # warm-up (untimed)

        def once():
            t0 = now()
            S = _core.score_block(cm, theta, Xs, ys, vc, n)
            return {"kernel": now() - t0}, {"shape": list(S.shape)}
        return once
    import torch

    tn = TorchNet(c, theta)
    Xt, yt, Vt = torch.from_numpy(Xs), torch.from_numpy(ys).long(), torch.from_numpy(V)
    (tn.per_example_grads(Xt[:WARM], yt[:WARM]) @ Vt).sum()  # warm-up (untimed)

    def once():
        t0 = now()
        S = torch.empty((q, rows), dtype=torch.float64)
        for a in range(0, rows, b):
            G = tn.per_example_grads(Xt[a:a + b], yt[a:a + b])
            S[:, a:a + b] = (G @ Vt).T * (-1.0 / n)
            del G
        return {"kernel": now() - t0}, {"shape": list(S.shape)}
    return once


def job_score_uw(c, args):
    return _score(c, "upweight")


def job_score_torch(c, args):
    return _score(c, "torch")


def run_one(job: str, c: dict, args) -> dict:
    once = globals()[f"job_{job}"](c, args)
    gc.collect()
    rss_before = peak_mib()
    reset_ok = reset_peak()
    best, times, info, during = repeat_timed(once, args.repeat)
    return {"job": job, "best": best, "times": times, "during": during, "info": info,
            "peak_call_mib": peak_mib() if reset_ok else None, "peak_before_mib": rss_before,
            "peak_process_mib": process_peak_mib(), "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------


def versions() -> dict:
    code = ("import json, platform, numpy, torch, upweight; print(json.dumps({'python': platform.python_version(), "
            "'numpy': numpy.__version__, 'torch': torch.__version__, 'upweight': upweight.__version__, "
            "'upweight_file': upweight.__file__, 'upweight_threads': upweight.num_threads(), 'torch_threads': (torch.set_num_threads(2), "
            "torch.get_num_threads())[1], 'torch_blas': [l.strip(' -') for l in torch.__config__.show().splitlines() if 'Math Kernel' in l "
            "or 'BLAS_INFO' in l][:1]}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_for("torch"))
    d = json.loads(r.stdout.strip().splitlines()[-1])
    cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
    d.update({"cpu": cpu[0] if cpu else platform.processor(), "cores": os.cpu_count(),
              "blas_env_set": {v: os.environ.get(v) for v in BLAS_VARS}})
    return d


def run_process(job: str, lib: str, args, rec: dict, save: str | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", job, "--repeat", str(rec.pop("repeat", args.repeat)),
           "--cg-queries", str(args.cg_queries), "--train-iter", str(args.train_iter), "--damping", repr(args.damping)] + (
           ["--quick"] if args.quick else [])
    if save:
        cmd += ["--save", save]
    rec["load_before"] = load_before()
    t0 = now()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env_for(lib), cwd=str(HERE))
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}")
        rec.update(json.loads(r.stdout.strip().splitlines()[-1]))
        rec["quiet"] = rec["load_before"]["others_cpu_pct"] < args.quiet_cpu and rec["during"]["others_cpu_pct"] < args.quiet_cpu
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        rec["error"] = str(exc)
    rec["process_wall_s"] = now() - t0
    return rec


def log(t_start: float, rec: dict) -> None:
    if "error" in rec:
        msg = f"ERROR {rec['error']}"
    else:
        msg = (f"best {rec['best']['total']:.3f} s  others before {rec['load_before']['others_cpu_pct']:.0f}% "
               f"during {rec['during']['others_cpu_pct']:.0f}%  load {rec['load_before']['loadavg'][0]:.2f}"
               f"{'' if rec['quiet'] else '  NOT QUIET'}")
    print(f"[{now() - t_start:6.0f} s] {rec.get('round', '-')} {rec['job']:12s}: {msg}", file=sys.stderr, flush=True)


def top_k_consistent(s_path: Path, t_path: Path, k: int) -> dict:
    """Whether top_k's helpful / harmful index sets are the k smallest / largest of each row of on_loss's S."""
    S, T = np.load(s_path)["S"], np.load(t_path)
    same_h = same_x = 0
    for t in range(S.shape[0]):
        same_h += set(np.argsort(S[t], kind="stable")[:k]) == set(T["helpful_idx"][t])
        same_x += set(np.argsort(-S[t], kind="stable")[:k]) == set(T["harmful_idx"][t])
    err = max(float(np.max(np.abs(np.take_along_axis(S, T["helpful_idx"], 1) - T["helpful"]))),
              float(np.max(np.abs(np.take_along_axis(S, T["harmful_idx"], 1) - T["harmful"])))) / float(np.max(np.abs(S)))
    return {"queries": int(S.shape[0]), "helpful_sets_equal": int(same_h), "harmful_sets_equal": int(same_x), "score_rel_err": err}


def summarize(doc: dict) -> dict:
    summ = {}
    for g, (_, members) in GROUPS.items():
        row = {}
        for job, lib in members:
            runs = [r for r in doc["runs"] if r["job"] == job and "best" in r]
            quiet = [r for r in runs if r["quiet"]]
            use, fallback = (quiet, False) if len(quiet) >= 2 else (runs, True)
            if not use:
                continue
            v = [r["best"]["total"] for r in use]
            row[lib] = {"job": job, "median": statistics.median(v), "min": min(v), "max": max(v), "n_used": len(v),
                        "n_quiet": len(quiet), "n_all": len(runs), "fallback_all": fallback,
                        "peak_call_mib": statistics.median([r["peak_call_mib"] or 0 for r in use]),
                        "loadavg": [r["load_before"]["loadavg"][0] for r in runs]}
        libs = [lib for _, lib in members]
        if all(lib in row for lib in libs):
            a, b = libs
            row["ratio"] = row[a]["median"] / row[b]["median"]
            pairs = []
            for rd in sorted({r["round"] for r in doc["runs"] if r["job"] == members[0][0]}):
                ra = [r for r in doc["runs"] if r["job"] == members[0][0] and r["round"] == rd and "best" in r]
                rb = [r for r in doc["runs"] if r["job"] == members[1][0] and r["round"] == rd and "best" in r]
                if ra and rb:
                    pairs.append(ra[0]["best"]["total"] / rb[0]["best"]["total"])
            row["paired"] = pairs
        summ[g] = row
    return summ


def fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def render(doc: dict) -> str:
    c, L = doc["config"], []
    v = doc.get("versions", {})
    L.append(f"Command: `{doc['command']}` ({doc.get('wall_s', 0) / 60:.1f} min). Machine: {v.get('cores')} cores, {v.get('cpu')}; "
             f"Python {v.get('python')}, NumPy {v.get('numpy')}, torch {v.get('torch')} ({', '.join(v.get('torch_blas', []))}), "
             f"upweight {v.get('upweight')} ({v.get('upweight_threads')} threads); OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the "
             f"environment: {v.get('blas_env_set')} (removed for the NumPy and torch processes).")
    L.append("")
    tr = [r for r in doc["runs"] if r["job"] == "train" and "best" in r]
    if tr:
        r = tr[-1]
        i = r["info"]
        L += ["Training (one process): " + f"`MLPClassifier(hidden=({c['hidden']},), l2={c['l2']:g}, max_iter={c['train_iter']}, "
              f"newton_iter=0).fit` on n = {c['n']}: {fmt_s(r['best']['fit'])} s, {i['n_iter']} L-BFGS iterations, max |gradient| "
              f"{i['grad_norm']:.2e} (converged: {i['converged']}), objective {i['objective']:.4f}, accuracy train "
              f"{i['train_accuracy']:.4f} / test {i['test_accuracy']:.4f}, p = {i['p']}; peak RSS {r['peak_process_mib']:.0f} MiB; "
              f"load average {r['load_before']['loadavg'][0]:.2f} before, others' CPU {r['during']['others_cpu_pct']:.0f}% of a core "
              "during.", ""]
    ch = [r for r in doc["runs"] if r["job"] == "check" and "info" in r]
    if ch:
        L.append("Agreement, upweight vs torch.func (max |difference| / max |torch|), checked before timing:")
        L += [f"- {k}: {e:.1e}" for k, e in ch[-1]["info"]["rel_err"].items()]
        L.append("")
    cg = [r for r in doc["runs"] if r["job"] in ("cg_on_loss", "cg_top_k")]
    if cg:
        L += ["| influence (one process each) | construction (s) | query (s) | total (s) | queries | CG iterations min / mean / max "
              "| max residual | damping | s / (iteration x query) | peak RSS, call (MiB) | peak RSS, process (MiB) | load avg "
              "| others' CPU during |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in cg:
            if "error" in r:
                L.append(f"| {r['job']} | ERROR {r['error'][:100]} |")
                continue
            i, q = r["info"], "top_k" if r["job"] == "cg_top_k" else "on_loss"
            it = i["iterations"]
            per_it = r["best"][q] / sum(it)
            L.append(f"| `{q}` | {fmt_s(r['best']['build'])} | {fmt_s(r['best'][q])} | {fmt_s(r['best']['total'])} | {i['queries']} | "
                     f"{min(it)} / {statistics.mean(it):.1f} / {max(it)} | {i['max_residual']:.1e} | {i['damping']:.3g} | {per_it:.2f} | "
                     f"{r['peak_call_mib'] or 0:.0f} | {r['peak_process_mib']:.0f} | {r['load_before']['loadavg'][0]:.2f} | "
                     f"{r['during']['others_cpu_pct']:.0f}% |")
        ok = [r for r in cg if r["job"] == "cg_on_loss" and "best" in r]
        sm = summarize(doc)
        sc, g1, g10 = (sm.get(g, {}).get("upweight") for g in ("score", "gn1", "gn10"))
        if ok:
            r = ok[0]
            i = r["info"]
            it = max(i["iterations"])
            per_it = r["best"]["on_loss"] / sum(i["iterations"])  # includes the 1 / q_cg share of the scoring pass
            L.append("")
            L.append(f"Damping {i['damping']:.3g} (\"auto\" would be {i['auto_damping']:.3g}, 0.1 x the mean of G's diagonal). "
                     f"Cost per CG iteration and right-hand side: {per_it:.2f} s (one Gauss-Newton product over the n rows).")
            if sc and g1 and g10:
                # block CG: an iteration with r active right-hand sides costs about t_fwd + r t_col
                # (gn1 = t_fwd + t_col, gn10 = t_fwd + 10 t_col)
                t_col = (g10["median"] - g1["median"]) / 9
                t_fwd = g1["median"] - t_col
                score_q = sc["median"] * c["n"] / c["score_rows"]
                est = r["best"]["build"] + it * (t_fwd + c["q"] * t_col) + score_q
                L.append(f"Estimate for all q = {c['q']} queries at this damping: construction + {it} iterations x (the shared "
                         f"forward pass {t_fwd:.2f} s + q x {t_col:.2f} s per right-hand side, from the gn1 / gn10 medians) + the "
                         f"scoring pass for q = {c['q']} ({score_q:.0f} s, the score kernel's median scaled to n) = "
                         f"{est / 3600:.1f} h, if every query took as many iterations as this one.")
        if "top_k_consistent" in doc:
            t = doc["top_k_consistent"]
            L.append("")
            L.append(f"top_k vs on_loss: helpful sets equal for {t['helpful_sets_equal']} of {t['queries']} queries, harmful for "
                     f"{t['harmful_sets_equal']}; top-k scores vs S: {t['score_rel_err']:.1e} (relative to max |S|).")
        L.append("")
    pc = [r for r in doc["runs"] if r["job"] == "precond" and "info" in r]
    if pc:
        i = pc[-1]["info"]
        L += [f"CG preconditioners (none, Jacobi: the inverse of G's diagonal + damping, K-FAC: the inverse of each layer's "
              f"kron(S, A) + damping + 2 l2 M), first {i['rows']} training rows, 2 queries, rtol {c['rtol']:g}; \"auto\" damping "
              f"on these rows = {i['auto_damping']:.3g}:", "",
              "| damping | preconditioner | iterations | max residual | solve (s) | s / iteration | setup (s) |",
              "|---|---|---:|---:|---:|---:|---:|"]
        names = {True: "Jacobi", False: "none", "jacobi": "Jacobi", "kfac": "K-FAC", "none": "none", "auto": "auto"}
        for s_ in i["solves"]:
            L.append(f"| {s_['damping_factor']:g} x auto ({s_['damping']:.3g}) | {names[s_['precondition']]} | "
                     f"{', '.join(map(str, s_['iterations']))} | {s_['max_residual']:.1e} | {fmt_s(s_['seconds'])} | "
                     f"{s_['seconds'] / max(max(s_['iterations']), 1):.3f} | "
                     f"{fmt_s(s_['prepare_seconds']) if 'prepare_seconds' in s_ else '-'} |")
        L.append("")
    summ = summarize(doc)
    if any(summ.values()):
        fl = summ.get("floor", {}).get("numpy", {}).get("median")
        L += [f"Kernels: median over quiet runs of the best of {doc['repeat']} per process, {doc['rounds_done']} interleaved rounds; "
              f"quiet = others < {doc['quiet_cpu_pct']:g}% of one core before and during.", "",
              "| kernel | library | median (s) | min-max (s) | throughput | / floor | upweight / torch | paired per round | "
              "quiet runs | peak RSS, call (MiB) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for g, row in summ.items():
            what = GROUPS[g][0]
            for j, (_, lib) in enumerate(GROUPS[g][1]):
                if lib not in row:
                    continue
                s = row[lib]
                thr = ""
                if g in ("peg", "score"):
                    rows = c["peg_rows"] if g == "peg" else c["score_rows"]
                    thr = f"{rows / s['median']:.0f} rows/s"
                elif g in ("gn1", "gn10"):
                    thr = f"{(1 if g == 'gn1' else 10) / s['median']:.2f} products/s"
                scale = c["n"] / (c["score_rows"] if g == "score" else c["peg_rows"] if g == "peg" else c["n"])
                fl_r = f"{s['median'] / fl * scale:.1f}" if fl else ""
                ratio = f"**{row['ratio']:.2f}**" if j == 0 and "ratio" in row else ""
                paired = ", ".join(f"{p:.2f}" for p in row.get("paired", [])) if j == 0 else ""
                L.append(f"| {what if j == 0 else ''} | {lib} | {fmt_s(s['median'])} | {fmt_s(s['min'])}-{fmt_s(s['max'])} | {thr} | "
                         f"{fl_r} | {ratio} | {paired} | {s['n_quiet']}/{s['n_all']}{' (all used)' if s['fallback_all'] else ''} | "
                         f"{s['peak_call_mib']:.0f} |")
        L += ["", "/ floor: time / the NumPy floor GEMM's median, per n rows (peg and score scaled up from their row counts).", ""]
    L.append("Load per run (1-min load average before; others' CPU % of one core before / during; quiet):")
    L.append("")
    L.append("| round | job | load avg | others before | others during | quiet | best (s) | top others before |")
    L.append("|---:|---|---:|---:|---:|---|---:|---|")
    for r in doc["runs"]:
        if "error" in r:
            L.append(f"| {r.get('round', '-')} | {r['job']} | | | | | ERROR {r['error'][:80]} | |")
            continue
        lb, du = r["load_before"], r["during"]
        L.append(f"| {r.get('round', '-')} | {r['job']} | {lb['loadavg'][0]:.2f} | {lb['others_cpu_pct']:.0f} | "
                 f"{du['others_cpu_pct']:.0f} | "
                 f"{'yes' if r['quiet'] else 'no'} | {fmt_s(r['best']['total'])} | {', '.join(lb['top'])} |")
    return "\n".join(L)


def loop(job: str, c: dict, args) -> None:
    """Run one kernel job's timed call repeatedly for ``--seconds`` (for a profiler to attach)."""
    once = globals()[f"job_{job}"](c, args)
    print(f"pid {os.getpid()} ready", file=sys.stderr, flush=True)
    t_end, k = now() + args.seconds, 0
    while now() < t_end:
        ph, _ = once()
        k += 1
        print(f"{job} #{k}: {sum(ph.values()):.3f} s", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="n = 6000, q = 10, small row counts: a smoke run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=2, help="timed calls per kernel process (best kept)")
    ap.add_argument("--train-iter", type=int, default=None, help="L-BFGS iterations of the training budget")
    ap.add_argument("--cg-queries", type=int, default=None, help="queries of the influence jobs (default 1; --quick 2)")
    ap.add_argument("--damping", type=float, default=None, help="damping of the influence jobs (default 0.01)")
    ap.add_argument("--only", default="train,check,cg,kernels", help="parts: train,check,cg,kernels,precond (precond: opt-in)")
    ap.add_argument("--jobs", default=",".join(GROUPS), help="kernel groups: " + ",".join(GROUPS))
    ap.add_argument("--precond", default="none,jacobi,kfac", help="preconditioners of the precond part (none,jacobi,kfac,auto)")
    ap.add_argument("--quiet-cpu", type=float, default=20.0)
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--report", help="re-render the tables of a JSON file written by this script")
    ap.add_argument("--loop", help="run one kernel job in a loop (profiling)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    args = ap.parse_args()
    c = dict(QUICK if args.quick else FULL)
    if args.train_iter is not None:
        c["train_iter"] = args.train_iter
    if args.cg_queries is not None:
        c["cg_queries"] = min(args.cg_queries, c["q"])
    if args.damping is not None:
        c["damping"] = args.damping
    args.train_iter, args.cg_queries, args.damping = c["train_iter"], c["cg_queries"], c["damping"]

    if args.one:
        print(json.dumps(run_one(args.one, c, args)))
        return
    if args.loop:
        loop(args.loop, c, args)
        return
    if args.report:
        print(render(json.loads(Path(args.report).read_text())))
        return

    only = set(args.only.split(","))
    groups = [g for g in args.jobs.split(",") if g]
    for g in groups:
        if g not in GROUPS:
            ap.error(f"unknown kernel group {g!r}")
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    out = OUT / f"w4_{'quick_' if args.quick else ''}{stamp}.json"
    doc = {"command": "python bench/w4_networks.py " + " ".join(sys.argv[1:]), "started": stamp,
           "config": c,
           "rounds": args.rounds, "repeat": args.repeat, "quiet_cpu_pct": args.quiet_cpu, "versions": versions(), "runs": [],
           "rounds_done": 0}
    print(json.dumps(doc["versions"], indent=1), file=sys.stderr)
    t_start = now()

    def record(rec):
        doc["runs"].append(rec)
        log(t_start, rec)
        out.write_text(json.dumps(doc, indent=1))

    if "train" in only or not theta_path(c).exists():
        record(run_process("train", "upweight", args, {"job": "train", "repeat": 1}))
    if "check" in only:
        record(run_process("check", "torch", args, {"job": "check", "repeat": 1}))
    if "cg" in only:
        s_path, t_path = OUT / f"w4_S_{stamp}.npz", OUT / f"w4_topk_{stamp}.npz"
        record(run_process("cg_on_loss", "upweight", args, {"job": "cg_on_loss", "repeat": 1}, save=str(s_path)))
        record(run_process("cg_top_k", "upweight", args, {"job": "cg_top_k", "repeat": 1}, save=str(t_path)))
        try:
            doc["top_k_consistent"] = top_k_consistent(s_path, t_path, c["k_top"])
        except (OSError, KeyError, ValueError) as exc:
            doc["top_k_consistent_error"] = str(exc)
        for f in (s_path, t_path):
            f.unlink(missing_ok=True)
    if "precond" in only:
        record(run_process("precond", "upweight", args, {"job": "precond", "repeat": 1}))
    if "kernels" in only:
        for rd in range(1, args.rounds + 1):
            for g in groups:
                members = GROUPS[g][1] if rd % 2 == 1 else GROUPS[g][1][::-1]
                for pos, (job, lib) in enumerate(members, 1):
                    record(run_process(job, lib, args, {"job": job, "round": rd, "order": pos}))
            doc["rounds_done"] = rd
    doc["wall_s"] = now() - t_start
    doc["summary"] = summarize(doc)
    doc["markdown"] = render(doc)
    out.write_text(json.dumps(doc, indent=1))
    print(doc["markdown"])
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
