"""A/B speed check of the restructuring: OLD build (commit df097f3, /work/venv-golden) vs NEW build
(the global python3's upweight, built from this tree), on fixed seeded problems, through the public
API both builds share. The numerical kernels are meant to be unchanged, so every NEW/OLD ratio
should sit inside the run-to-run spread.

Jobs (each one timed operation, or a short sequence of them timed phase by phase):

  floor_w1   NumPy (n x 65) @ (65 x 200), n = 200000, fresh output: the cost floor of w1_on_loss
             (same NumPy in both interpreters, so it is also an A/B control with no upweight code)
  w1_on_loss logistic n = 200000, d = 64, q = 200, l2 = 1e-3: Influence(solver="direct") build, on_loss
  w1_top_k   same data: Influence(solver="direct") build, top_k(k=10)
  w2_direct  multinomial k = 10, d = 200 (p = 2010), n = 20000: fit(solver="direct"), Influence direct build
  w2_cg      same data: Influence(solver="cg", rtol=1e-6) build, on_loss for q = 20
  w3_npy     logistic n = 400000, d = 32, X a float32 .npy path (streamed): fit, Influence build, top_k(k=10, q=50)
  sparse     CSR logistic n = 100000, d = 20000, density 0.001: fit(solver="cg"), Influence(solver="cg",
             rtol=1e-6) build, on_loss q = 50
  self_inf   logistic n = 50000, d = 100: Influence(solver="direct") build, self_influence()
  grad_inf   GradientInfluence(G, solver="direct"), G 20000 x 1000: build, on_loss for q = 100

Measurement rules (those of bench_core.py / bench_scale.py, plus interleaving):

  * every (job, build) measurement runs in its own fresh process (this script re-invoked with
    `--one JOB` under that build's interpreter); data are generated inside it from fixed seeds and
    are not timed; the timed operation is repeated `--repeat` (3) times and the best is kept (per
    phase, and for the job's total, the best per-repeat sum of its phases);
  * the W3 .npy file is written once per round (by a separate process, untimed) before the round's
    runs, and both builds read that same file;
  * rounds are interleaved: for round r = 1..R, for each job, OLD and NEW run back to back, OLD first
    in odd rounds and NEW first in even rounds;
  * load from other processes is recorded for every run: /proc/loadavg and the CPU used by other
    processes during a 1 s window just before the run (system-wide busy time from /proc/stat minus
    this process's own, so processes that exit within the window count too; the per-process
    sample names the top consumers), the sum of `ps -eo pcpu` of other processes (ps's %CPU is the
    average over each process's lifetime, so it is recorded but not used for the verdict), and,
    measured by the measuring process itself around its timed repeats, the CPU used by everything
    else while it ran (system busy time minus its own getrusage) and the hypervisor's steal time.
    A run is "quiet" when other processes used < --quiet-cpu (20) % of one core both before and
    during it;
  * per job, phase and build: the median over quiet runs (all runs if fewer than 2 are quiet; the
    table says so), the min-max spread over rounds as % of that median, the ratio NEW/OLD of the
    medians, the per-round paired ratios NEW/OLD (the two runs of a round are adjacent in time), and
    the OLD-vs-OLD noise floor: max/min of OLD's times over the rounds used;
  * once per job (round 1) both builds save their results and np.array_equal compares them.

    python bench/ab_restructure.py [--rounds 5] [--repeat 3] [--jobs a,b,...] [--quiet-cpu 20]
                                   [--old /work/venv-golden/bin/python] [--new python3]
    python bench/ab_restructure.py --report bench/out/ab_restructure_<stamp>.json   # re-render

Writes bench/out/ab_restructure_<stamp>.json (rewritten after every run, so a partial run is kept)
and prints a Markdown table. The full run (R = 5) takes about half an hour on the 2-core machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_core import make_data  # the W1 logistic data (this folder is on sys.path when run as a script)

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
L2 = 1e-3
HZ = os.sysconf("SC_CLK_TCK")

SIZES = {
    "w1": {"n": 200_000, "d": 64, "q": 200},
    "w2": {"n": 20_000, "d": 200, "k": 10, "q": 20, "rtol": 1e-6},
    "w3": {"n": 400_000, "d": 32, "q": 50},
    "sparse": {"n": 100_000, "d": 20_000, "density": 1e-3, "q": 50, "rtol": 1e-6},
    "self": {"n": 50_000, "d": 100},
    "grad": {"n": 20_000, "p": 1000, "q": 100},
}

# job -> (description, phases in order)
JOBS = {
    "floor_w1": ("floor: NumPy (200000 x 65) @ (65 x 200), fresh output", ["gemm"]),
    "w1_on_loss": ("W1 logistic n=200000 d=64 q=200: Influence(direct) + on_loss", ["build", "on_loss"]),
    "w1_top_k": ("W1 logistic n=200000 d=64 q=200: Influence(direct) + top_k(10)", ["build", "top_k"]),
    "w2_direct": ("W2 multinomial k=10 d=200 (p=2010) n=20000: fit(direct) + Influence(direct)", ["fit", "build"]),
    "w2_cg": ("W2 multinomial p=2010 n=20000: Influence(cg, rtol 1e-6) + on_loss q=20", ["build", "on_loss"]),
    "w3_npy": ("W3 logistic n=400000 d=32, float32 .npy path: fit + Influence + top_k(10) q=50",
               ["fit", "build", "top_k"]),
    "sparse": ("CSR logistic n=100000 d=20000 dens 0.001: fit(cg) + Influence(cg, rtol 1e-6) + on_loss q=50",
               ["fit", "build", "on_loss"]),
    "self_inf": ("logistic n=50000 d=100: Influence(direct) + self_influence()", ["build", "self_influence"]),
    "grad_inf": ("GradientInfluence(direct) p=1000 n=20000: build + on_loss q=100", ["build", "on_loss"]),
}


# ---------------------------------------------------------------------------------------------
# CPU accounting
# ---------------------------------------------------------------------------------------------


def proc_stat() -> tuple[int, int]:
    """(busy, steal) jiffies summed over all CPUs. busy = user + nice + system + irq + softirq
    (guest time is already inside user; idle, iowait and steal are not busy)."""
    f = open("/proc/stat").readline().split()
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[1:9])
    return user + nice + system + irq + softirq, steal


def self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def ancestors(pid: int) -> set[int]:
    out = set()
    while pid > 1:
        out.add(pid)
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("PPid:"):
                    pid = int(line.split()[1])
                    break
            else:
                break
        except OSError:
            break
    return out


def per_pid_ticks() -> dict[int, tuple[str, int]]:
    out = {}
    for e in os.scandir("/proc"):
        if not e.name.isdigit():
            continue
        try:
            s = open(f"/proc/{e.name}/stat").read()
        except OSError:
            continue
        name = s[s.index("(") + 1:s.rindex(")")]
        f = s[s.rindex(")") + 2:].split()
        out[int(e.name)] = (name, int(f[11]) + int(f[12]))  # utime + stime
    return out


def ps_pcpu_others(exclude: set[int]) -> float:
    """Sum of ps's %CPU (lifetime average per process) over processes not in exclude."""
    try:
        res = subprocess.run(["ps", "-eo", "pid,pcpu"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return float("nan")
    tot = 0.0
    for line in res.stdout.splitlines()[1:]:
        pid, pcpu = line.split()
        if int(pid) not in exclude:  # ps itself has just started: ~0
            tot += float(pcpu)
    return tot


#: OpenBLAS tunables some machines set, which select a slower kernel for NumPy (issue 14): removed
#: from the environment of every baseline's measuring process, never from upweight's.
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def env_for(lib: str) -> dict:
    """The environment of a measuring process for `lib`: upweight's as it is, every other
    library's (NumPy, SciPy, torch) without BLAS_VARS."""
    env = dict(os.environ)
    if lib != "upweight":
        for v in BLAS_VARS:
            env.pop(v, None)
    return env


def repeat_timed(once, repeat: int) -> tuple[dict, dict, dict, dict]:
    """Call ``once()`` (-> (phase seconds, info); a "total" phase, if given, replaces the sum of
    the others) ``repeat`` times: (best per phase and "total", every time per phase and "total",
    the last info, the other processes' CPU and the load during the calls)."""
    times: dict[str, list[float]] = {}
    totals, info = [], {}
    b0, st0 = proc_stat()
    c0 = self_cpu_s()
    t0 = time.perf_counter()
    for _ in range(repeat):
        gc.collect()
        ph, info = once()
        total = ph.pop("total", None)
        for k, v in ph.items():
            times.setdefault(k, []).append(v)
        totals.append(sum(ph.values()) if total is None else total)
    wall = time.perf_counter() - t0
    b1, st1 = proc_stat()
    own = self_cpu_s() - c0
    during = {"others_cpu_pct": max(0.0, ((b1 - b0) / HZ - own) / wall * 100), "steal_pct": (st1 - st0) / HZ / wall * 100,
              "own_cpu_cores": own / wall, "wall_s": wall, "loadavg_after": [float(x) for x in open("/proc/loadavg").read().split()[:3]]}
    best = {k: min(v) for k, v in times.items()} | {"total": min(totals)}
    return best, times | {"total": totals}, info, during


def load_before(window: float = 1.0) -> dict:
    """Other processes' CPU over `window` seconds, % of one core."""
    excl = ancestors(os.getpid())
    loadavg = open("/proc/loadavg").read().split()
    p0 = per_pid_ticks()
    b0, st0 = proc_stat()
    c0 = self_cpu_s()
    t0 = time.perf_counter()
    time.sleep(window)
    b1, st1 = proc_stat()
    c1 = self_cpu_s()
    t1 = time.perf_counter()
    p1 = per_pid_ticks()
    wall = t1 - t0
    others = max(0.0, ((b1 - b0) / HZ - (c1 - c0)) / wall * 100)
    top = []
    for pid, (name, ticks) in p1.items():
        if pid in excl:
            continue
        d = ticks - p0.get(pid, (name, 0))[1] if pid in p0 else ticks  # a new process: all of its time
        if d > 0:
            top.append((d / HZ / wall * 100, f"{name}[{pid}]"))
    top.sort(reverse=True)
    ps_sum = ps_pcpu_others(excl)  # after the window: ps itself is then not running inside it
    return {"loadavg": [float(x) for x in loadavg[:3]], "others_cpu_pct": others,
            "steal_pct": (st1 - st0) / HZ / wall * 100,
            "top": [f"{name} {pct:.0f}%" for pct, name in top[:3]], "ps_pcpu_others": ps_sum}


# ---------------------------------------------------------------------------------------------
# data (inside the measuring process, untimed)
# ---------------------------------------------------------------------------------------------


def multinomial_data(n: int, d: int, k: int, q: int, seed: int = 0):
    """As bench_scale.w2_data: nonnegative features, ~80% zeros, k classes from a softmax model."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((n + q, d)) - 0.85, 0.0) * 2.0
    B = rng.standard_normal((d, k)) * 2.0 / np.sqrt(d * np.mean(X**2))
    y = (X @ B + rng.gumbel(size=(n + q, k))).argmax(1).astype(np.float64)
    return np.ascontiguousarray(X[:n]), y[:n], np.ascontiguousarray(X[n:]), y[n:]


def sparse_data(n: int, d: int, density: float, q: int, seed: int = 0):
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    A = sp.random(n + q, d, density=density, format="csr", random_state=rng, data_rvs=rng.standard_normal)
    beta = rng.standard_normal(d) * 2.0
    z = A @ beta
    y = (rng.random(n + q) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return A[:n].tocsr(), y[:n], A[n:].tocsr(), y[n:]


def write_w3(tmp: str, seed: int = 0) -> None:
    c = SIZES["w3"]
    X, y, Xt, yt = make_data(c["n"], c["d"], c["q"], seed)
    np.save(f"{tmp}/w3_X.npy", X.astype(np.float32))
    np.save(f"{tmp}/w3_y.npy", y)
    np.save(f"{tmp}/w3_Xt.npy", Xt)
    np.save(f"{tmp}/w3_yt.npy", yt)
    os.sync()


# ---------------------------------------------------------------------------------------------
# jobs: each returns a function that runs one repeat -> (phase times, result arrays)
# ---------------------------------------------------------------------------------------------


def now() -> float:
    return time.perf_counter()


def job_floor_w1(tmp):
    c = SIZES["w1"]
    X, _, _, _ = make_data(c["n"], c["d"], c["q"])
    Z = np.hstack([X, np.ones((c["n"], 1))])
    del X
    V = np.random.default_rng(1).standard_normal((c["d"] + 1, c["q"]))

    def once():
        t0 = now()
        P = Z @ V
        t1 = now()
        return {"gemm": t1 - t0}, {"P": P}
    return once


def _w1(tmp, top):
    import upweight as uw

    c = SIZES["w1"]
    X, y, Xt, yt = make_data(c["n"], c["d"], c["q"])
    model = uw.LogisticRegression(l2=L2, solver="direct").fit(X, y)

    def once():
        t0 = now()
        inf = uw.Influence(model, X, y, solver="direct")
        t1 = now()
        if top:
            tk = inf.top_k(Xt, yt, k=10)
            t2 = now()
            return {"build": t1 - t0, "top_k": t2 - t1}, {
                "helpful_idx": tk.helpful_idx, "harmful_idx": tk.harmful_idx,
                "helpful": tk.helpful, "harmful": tk.harmful}
        S = inf.on_loss(Xt, yt)
        t2 = now()
        return {"build": t1 - t0, "on_loss": t2 - t1}, {"S": S}
    return once


def job_w1_on_loss(tmp):
    return _w1(tmp, False)


def job_w1_top_k(tmp):
    return _w1(tmp, True)


def job_w2_direct(tmp):
    import upweight as uw

    c = SIZES["w2"]
    X, y, _, _ = multinomial_data(c["n"], c["d"], c["k"], c["q"])

    def once():
        t0 = now()
        model = uw.LogisticRegression(l2=L2, n_classes=c["k"], solver="direct").fit(X, y)
        t1 = now()
        inf = uw.Influence(model, X, y, solver="direct")
        t2 = now()
        return {"fit": t1 - t0, "build": t2 - t1}, {
            "theta": np.concatenate([np.ravel(model.coef_), np.ravel(model.intercept_)]),
            "params_0_20": inf.params(idx=np.arange(20))}
    return once


def job_w2_cg(tmp):
    import upweight as uw

    c = SIZES["w2"]
    X, y, Xt, yt = multinomial_data(c["n"], c["d"], c["k"], c["q"])
    model = uw.LogisticRegression(l2=L2, n_classes=c["k"], solver="cg").fit(X, y)

    def once():
        t0 = now()
        inf = uw.Influence(model, X, y, solver="cg", rtol=c["rtol"])
        t1 = now()
        S = inf.on_loss(Xt, yt)
        t2 = now()
        return {"build": t1 - t0, "on_loss": t2 - t1}, {"S": S}
    return once


def job_w3_npy(tmp):
    import upweight as uw

    path = f"{tmp}/w3_X.npy"
    y, Xt, yt = (np.load(f"{tmp}/w3_{s}.npy") for s in ("y", "Xt", "yt"))

    def once():
        t0 = now()
        model = uw.LogisticRegression(l2=L2).fit(path, y)
        t1 = now()
        inf = uw.Influence(model, path, y, solver="direct")
        t2 = now()
        tk = inf.top_k(Xt, yt, k=10)
        t3 = now()
        return {"fit": t1 - t0, "build": t2 - t1, "top_k": t3 - t2}, {
            "theta": np.concatenate([np.ravel(model.coef_), np.ravel(model.intercept_)]),
            "helpful_idx": tk.helpful_idx, "harmful_idx": tk.harmful_idx,
            "helpful": tk.helpful, "harmful": tk.harmful}
    return once


def job_sparse(tmp):
    import upweight as uw

    c = SIZES["sparse"]
    X, y, Xt, yt = sparse_data(c["n"], c["d"], c["density"], c["q"])

    def once():
        t0 = now()
        model = uw.LogisticRegression(l2=L2, solver="cg").fit(X, y)
        t1 = now()
        inf = uw.Influence(model, X, y, solver="cg", rtol=c["rtol"])
        t2 = now()
        S = inf.on_loss(Xt, yt)
        t3 = now()
        return {"fit": t1 - t0, "build": t2 - t1, "on_loss": t3 - t2}, {
            "theta": np.concatenate([np.ravel(model.coef_), np.ravel(model.intercept_)]), "S": S}
    return once


def job_self_inf(tmp):
    import upweight as uw

    c = SIZES["self"]
    X, y, _, _ = make_data(c["n"], c["d"], 1)
    model = uw.LogisticRegression(l2=L2, solver="direct").fit(X, y)

    def once():
        t0 = now()
        inf = uw.Influence(model, X, y, solver="direct")
        t1 = now()
        s = inf.self_influence()
        t2 = now()
        return {"build": t1 - t0, "self_influence": t2 - t1}, {"self": s}
    return once


def job_grad_inf(tmp):
    import upweight as uw

    c = SIZES["grad"]
    rng = np.random.default_rng(0)
    G = rng.standard_normal((c["n"], c["p"]))
    Gt = rng.standard_normal((c["q"], c["p"]))

    def once():
        t0 = now()
        gi = uw.GradientInfluence(G, solver="direct")
        t1 = now()
        S = gi.on_loss(Gt)
        t2 = now()
        return {"build": t1 - t0, "on_loss": t2 - t1}, {"S": S}
    return once


def run_one(job: str, tmp: str, repeat: int, save: str | None) -> dict:
    setup = globals()[f"job_{job}"]
    once = setup(tmp)
    gc.collect()
    phases = JOBS[job][1]
    times = {p: [] for p in phases}
    totals = []
    b0, st0 = proc_stat()
    c0 = self_cpu_s()
    t0 = now()
    res = None
    for _ in range(repeat):
        res = None  # drop the previous result before the next repeat (fresh allocation each time)
        gc.collect()
        ph, res = once()
        for p in phases:
            times[p].append(ph[p])
        totals.append(sum(ph[p] for p in phases))
    wall = now() - t0
    b1, st1 = proc_stat()
    c1 = self_cpu_s()
    own = c1 - c0
    during = {"others_cpu_pct": max(0.0, ((b1 - b0) / HZ - own) / wall * 100),
              "steal_pct": (st1 - st0) / HZ / wall * 100, "own_cpu_cores": own / wall, "wall_s": wall}
    if save:
        np.savez(save, **{k: np.asarray(v) for k, v in res.items()})
    info = {}
    if job != "floor_w1":
        import upweight as uw

        info = {"upweight": uw.__file__, "threads": uw.num_threads()}
    return {"job": job, "best": {p: min(v) for p, v in times.items()} | {"total": min(totals)},
            "times": times | {"total": totals}, "during": during, **info}


# ---------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------


def build_info(py: str) -> dict:
    code = ("import hashlib, json, os, numpy, upweight, upweight._core as c; "
            "print(json.dumps({'upweight': upweight.__file__, 'version': upweight.__version__, "
            "'core_sha256': hashlib.sha256(open(c.__file__, 'rb').read()).hexdigest()[:16], "
            "'core_mtime': os.path.getmtime(c.__file__), 'numpy': numpy.__version__, "
            "'threads': upweight.num_threads(), 'python_version': __import__('sys').version.split()[0]}))")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["core_mtime"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d["core_mtime"])) + " UTC"
    return d


def compare(a: Path, b: Path) -> dict:
    A, B = np.load(a), np.load(b)
    out = {}
    for k in A.files:
        x, y = A[k], B[k]
        eq = bool(np.array_equal(x, y))
        d = {"equal": eq, "shape": list(x.shape)}
        if not eq and x.shape == y.shape and x.size:
            den = float(np.max(np.abs(x))) or 1.0
            d["max_rel_diff"] = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))) / den)
            d["n_diff"] = int(np.sum(x != y))
        out[k] = d
    return out


def summarize(doc: dict) -> dict:
    summ = {}
    for job in doc["jobs"]:
        runs = [r for r in doc["runs"] if r["job"] == job and "best" in r]
        if not runs:
            continue
        phases = ["total"] + (JOBS[job][1] if len(JOBS[job][1]) > 1 else [])
        js = {}
        for ph in phases:
            row = {}
            for b in ("old", "new"):
                rb = [r for r in runs if r["build"] == b]
                quiet = [r for r in rb if r["quiet"]]
                use, fallback = (quiet, False) if len(quiet) >= 2 else (rb, True)
                v = [r["best"][ph] for r in use]
                if not v:
                    continue
                med = statistics.median(v)
                row[b] = {"median": med, "min": min(v), "max": max(v), "spread_pct": (max(v) - min(v)) / med * 100,
                          "maxmin": max(v) / min(v), "n_used": len(v), "n_quiet": len(quiet), "n_all": len(rb),
                          "fallback_all": fallback, "rounds_used": [r["round"] for r in use],
                          "all_runs": {r["round"]: r["best"][ph] for r in rb}}
            if "old" in row and "new" in row:
                row["ratio"] = row["new"]["median"] / row["old"]["median"]
                # paired: both runs of a round (adjacent in time), rounds where both were quiet
                pairs = []
                for rd in sorted({r["round"] for r in runs}):
                    o = [r for r in runs if r["round"] == rd and r["build"] == "old"]
                    n = [r for r in runs if r["round"] == rd and r["build"] == "new"]
                    if o and n:
                        pairs.append((rd, n[0]["best"][ph] / o[0]["best"][ph], o[0]["quiet"] and n[0]["quiet"]))
                qp = [p for p in pairs if p[2]]
                use = qp if len(qp) >= 2 else pairs
                row["paired"] = {"rounds": [p[0] for p in use], "ratios": [p[1] for p in use],
                                 "median": statistics.median([p[1] for p in use]) if use else None,
                                 "fallback_all": len(qp) < 2}
                noise = row["old"]["maxmin"]
                row["noise_old_maxmin"] = noise
                r = row["ratio"]
                if r > noise * 1.10:
                    verdict = f"SLOWER beyond noise (+{(r / noise - 1) * 100:.0f}% over the OLD spread)"
                elif r > noise:
                    verdict = "slower, marginally beyond noise"
                elif r < 1 / noise:
                    verdict = "faster beyond noise"
                else:
                    verdict = "within noise"
                row["verdict"] = verdict
            js[ph] = row
        summ[job] = js
    return summ


def merge(docs: list[dict]) -> dict:
    """Pool the runs of several invocations (same jobs, same quiet threshold); rounds numbered on."""
    doc = dict(docs[0])
    doc["runs"] = list(doc["runs"])
    doc["equal"] = dict(doc["equal"])
    for d in docs[1:]:
        off = doc["rounds_done"]
        doc["runs"] += [dict(r, round=r["round"] + off) for r in d["runs"]]
        doc["equal"].update({f"{k} (invocation at {d['started']})": v for k, v in d["equal"].items()})
        doc["rounds_done"] += d["rounds_done"]
        doc["rounds"] += d["rounds"]
        doc["command"] += "`, then `" + d["command"]
    return doc


def render(doc: dict) -> str:
    summ = summarize(doc)
    L = [f"### A/B: OLD ({doc['builds']['old']['label']}) vs NEW ({doc['builds']['new']['label']})", "",
         f"Command: `{doc['command']}`; {doc['rounds_done']} of {doc['rounds']} rounds, best of {doc['repeat']} repeats "
         f"per process; quiet = other processes < {doc['quiet_cpu_pct']:g}% of one core before and during the run.",
         "",
         "| job | phase | OLD median (s) | OLD spread | NEW median (s) | NEW spread | NEW/OLD | paired NEW/OLD per round (min-max) "
         "| OLD max/min (noise) | quiet OLD/NEW | verdict |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for job, js in summ.items():
        first = True
        for ph, row in js.items():
            if "old" not in row or "new" not in row:
                continue
            o, n, p = row["old"], row["new"], row["paired"]
            fb = " (all runs)" if (o["fallback_all"] or n["fallback_all"]) else ""
            pr = p["ratios"]
            L.append(
                f"| {job if first else ''} | {ph} | {o['median']:.3f} | {o['spread_pct']:.1f}% | {n['median']:.3f} | "
                f"{n['spread_pct']:.1f}% | **{row['ratio']:.3f}** | {p['median']:.3f} ({min(pr):.3f}-{max(pr):.3f})"
                f"{' (all)' if p['fallback_all'] else ''} | {row['noise_old_maxmin']:.3f} | "
                f"{o['n_quiet']}/{o['n_all']}, {n['n_quiet']}/{n['n_all']}{fb} | {row['verdict']} |")
            first = False
    L += ["", "Spread = (max - min) / median over the runs used (quiet runs; all runs where fewer than 2 were quiet). "
          "OLD max/min is the OLD-vs-OLD run-to-run noise floor; the verdict compares NEW/OLD with it "
          "(\"SLOWER beyond noise\" when NEW/OLD > 1.10 x OLD max/min).", ""]
    if "w1_on_loss" in summ and "floor_w1" in summ:
        fl = summ["floor_w1"]["total"]
        ol = summ["w1_on_loss"].get("on_loss", {})
        if "old" in ol and "old" in fl:
            L.append(f"W1 floor (NumPy GEMM): OLD-interpreter median {fl['old']['median']:.3f} s, NEW-interpreter "
                     f"{fl['new']['median']:.3f} s; on_loss / floor: OLD {ol['old']['median'] / fl['old']['median']:.2f}, "
                     f"NEW {ol['new']['median'] / fl['new']['median']:.2f}.")
            L.append("")
    L.append("Same results (round 1, np.array_equal NEW vs OLD):")
    for job, cmp in doc.get("equal", {}).items():
        if "error" in cmp:
            L.append(f"- {job}: check failed: {cmp['error']}")
            continue
        parts = []
        for k, d in cmp.items():
            s = f"{k} {'equal' if d['equal'] else 'DIFFERENT'}"
            if not d["equal"] and "max_rel_diff" in d:
                s += f" (max rel diff {d['max_rel_diff']:.1e}, {d['n_diff']} entries)"
            parts.append(s)
        L.append(f"- {job}: " + ", ".join(parts))
    L += ["", "Load per run (others' CPU % of one core before / during; steal %; 1-min loadavg; quiet):", ""]
    L.append("| round | job | build | order | others before | others during | steal during | loadavg | ps %CPU sum | quiet "
             "| top others before |")
    L.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in doc["runs"]:
        if "error" in r:
            L.append(f"| {r['round']} | {r['job']} | {r['build']} | {r['order']} | | | | | | | ERROR {r['error'][:80]} |")
            continue
        lb, du = r["load_before"], r["during"]
        L.append(f"| {r['round']} | {r['job']} | {r['build']} | {r['order']} | {lb['others_cpu_pct']:.0f} | "
                 f"{du['others_cpu_pct']:.0f} | {du['steal_pct']:.0f} | {lb['loadavg'][0]:.2f} | {lb['ps_pcpu_others']:.0f} | "
                 f"{'yes' if r['quiet'] else 'NO'} | {', '.join(lb['top'])} |")
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--jobs", default=",".join(JOBS), help="comma-separated subset of: " + ",".join(JOBS))
    ap.add_argument("--quiet-cpu", type=float, default=20.0, help="others' CPU %% of one core below which a run is quiet")
    ap.add_argument("--old", default="/work/venv-golden/bin/python")
    ap.add_argument("--new", default=shutil.which("python3") or "python3")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--timeout", type=float, default=900.0, help="per measuring process, seconds")
    ap.add_argument("--report", nargs="+", help="re-render the table of JSON file(s) written by this script "
                    "(several files: their runs are pooled, rounds numbered on)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--save", help=argparse.SUPPRESS)
    ap.add_argument("--write-w3", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.write_w3:
        write_w3(args.write_w3)
        return
    if args.one:
        print(json.dumps(run_one(args.one, args.dir, args.repeat, args.save)))
        return
    if args.report:
        print(render(merge([json.loads(Path(f).read_text()) for f in args.report])))
        return

    jobs = [j for j in args.jobs.split(",") if j]
    for j in jobs:
        if j not in JOBS:
            ap.error(f"unknown job {j!r}")
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    out = OUT / f"ab_restructure_{stamp}.json"
    builds = {"old": {"python": args.old, "label": "df097f3, venv-golden"},
              "new": {"python": args.new, "label": "this tree, global python3"}}
    for b in builds.values():
        b.update(build_info(b["python"]))
    doc = {"command": "python bench/ab_restructure.py " + " ".join(sys.argv[1:]), "started": stamp,
           "rounds": args.rounds, "repeat": args.repeat, "quiet_cpu_pct": args.quiet_cpu, "jobs": jobs,
           "sizes": SIZES, "builds": builds, "cpus": os.cpu_count(), "runs": [], "equal": {}, "rounds_done": 0}
    print(json.dumps(builds, indent=1), file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="ab_restructure_", dir=args.tmp)
    script = str(Path(__file__).resolve())
    t_start = time.perf_counter()
    try:
        for rd in range(1, args.rounds + 1):
            if "w3_npy" in jobs:
                subprocess.run([sys.executable, script, "--write-w3", tmp], check=True)
            order = ["old", "new"] if rd % 2 == 1 else ["new", "old"]
            for job in jobs:
                for pos, b in enumerate(order, 1):
                    save = f"{tmp}/eq_{job}_{b}.npz" if rd == 1 else None
                    lb = load_before()
                    cmd = [builds[b]["python"], script, "--one", job, "--dir", tmp, "--repeat", str(args.repeat)]
                    if save:
                        cmd += ["--save", save]
                    rec = {"round": rd, "job": job, "build": b, "order": pos, "load_before": lb}
                    t0 = time.perf_counter()
                    try:
                        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd="/")
                        if r.returncode != 0:
                            raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}")
                        rec.update(json.loads(r.stdout.strip().splitlines()[-1]))
                        rec["quiet"] = (lb["others_cpu_pct"] < args.quiet_cpu
                                        and rec["during"]["others_cpu_pct"] < args.quiet_cpu)
                    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                        rec["error"] = str(exc)
                    rec["process_wall_s"] = time.perf_counter() - t0
                    doc["runs"].append(rec)
                    if "error" in rec:
                        msg = f"ERROR {rec['error']}"
                    else:
                        msg = (f"total {rec['best']['total']:.3f} s  others before {lb['others_cpu_pct']:.0f}% "
                               f"during {rec['during']['others_cpu_pct']:.0f}% steal {rec['during']['steal_pct']:.0f}%"
                               f"{'' if rec['quiet'] else '  NOT QUIET'}")
                    print(f"[{time.perf_counter() - t_start:6.0f} s] round {rd} {job:10s} {b}: {msg}", file=sys.stderr, flush=True)
                    out.write_text(json.dumps(doc, indent=1))
                if rd == 1:
                    a, c = Path(f"{tmp}/eq_{job}_old.npz"), Path(f"{tmp}/eq_{job}_new.npz")
                    try:
                        doc["equal"][job] = compare(a, c)
                    except (OSError, ValueError, KeyError) as exc:
                        doc["equal"][job] = {"error": str(exc)}
                    for f in (a, c):
                        f.unlink(missing_ok=True)
            doc["rounds_done"] = rd
            doc["summary"] = summarize(doc)
            out.write_text(json.dumps(doc, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["wall_s"] = time.perf_counter() - t_start
    doc["summary"] = summarize(doc)
    doc["markdown"] = render(doc)
    out.write_text(json.dumps(doc, indent=1))
    print(doc["markdown"])
    print(f"\nwritten {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
