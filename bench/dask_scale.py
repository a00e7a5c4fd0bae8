"""upweight's Dask backend (python/upweight/dask.py) against the single-process streaming path, on W3's
shape: logistic regression, n = 10_000_000 rows, d = 64 (p = 65), q = 100 test queries, top-10,
l2 = 1e-3, X a float64 .npy (4.77 GiB) written by ``bench_scale.w3_write`` to a temporary directory
under /tmp (deleted at the end). The model is fitted once, in the parent, from the path; its theta is
saved and every job rebuilds the model with ``set_theta(theta, n_features=64)``.

Jobs, each in its own process, interleaved over ``--rounds`` rounds (single, dask1, dask2, then reversed):

  single  ``uw.Influence(model, X_path, y).top_k(Xq, yq, k=10)``: the streaming path, 2 rayon threads.
  dask1   ``LocalCluster(n_workers=1, threads_per_worker=1, processes=True)`` (its rayon pool: 2 threads);
          X and y = ``uw.dask.from_npy(path, chunk_rows=250_000)`` (read by the workers).
  dask2   the same with 2 workers, RAYON_NUM_THREADS=1 set in the job process before the cluster starts
          (the workers inherit it; their thread count is read with ``client.run`` and recorded).

Timed: construction (``Influence``: one pass summing the Hessian) and query (``top_k``: one pass); the
cluster's start-up is timed apart. Load as in bench/w4_networks.py; for the dask jobs "own CPU" includes
the live descendants (the workers), read with psutil. Then, untimed, the dask jobs repeat the call (warm),
measure bytes per pass, profile one pass of each kind (``get_task_stream``) and (dask2) the per-task
overhead of trivial tree graphs.

    python bench/dask_scale.py [--rounds 3] [--n 10000000] [--quick]    # writes bench/out/dask_scale.json
    python bench/dask_scale.py --report [bench/out/dask_scale.json]      # prints the Markdown section
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import math
import operator
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ab_restructure import HZ, load_before, proc_stat  # noqa: E402  (this folder, put on sys.path above)
from bench_scale import w3_write  # noqa: E402

OUT = HERE / "out"
JOBS = ("single", "dask1", "dask2")
WORKERS = {"dask1": 1, "dask2": 2}
L2, D, Q, K, CHUNK_ROWS = 1e-3, 64, 100, 10, 250_000
now = time.perf_counter


def own_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live descendants (psutil)."""
    me = psutil.Process()
    t = me.cpu_times()
    s = t.user + t.system + t.children_user + t.children_system
    for ch in me.children(recursive=True):
        try:
            c = ch.cpu_times()
            s += c.user + c.system
        except psutil.Error:
            pass
    return s


# -- one job (its own process) ----------------------------------------------------------------------
def task_profile(client, fn) -> dict:
    """``fn()`` under the task stream: wall, span of the tasks, seconds per task prefix, X chunks read per worker."""
    import distributed
    from distributed.utils import key_split

    with distributed.get_task_stream(client=client) as ts:
        t0 = now()
        fn()
        wall = now() - t0
    per, reads, ends = {}, {}, []
    for rec in ts.data:
        name = key_split(rec["key"])
        name = "read_chunk" if name == "upweight-npy" else name  # a chunk of X or y: a memmap slice
        for ss in rec["startstops"]:
            c, t = per.get(f"{name}:{ss['action']}", (0, 0.0))
            per[f"{name}:{ss['action']}"] = (c + 1, t + ss["stop"] - ss["start"])
            ends += [ss["start"], ss["stop"]]
        if name == "read_chunk":  # (from_npy arrays given to upweight are read inside the kernels' tasks: none)
            reads[rec["worker"]] = reads.get(rec["worker"], 0) + 1
    return {"wall_s": wall, "span_s": max(ends) - min(ends) if ends else 0.0, "tasks": len(ts.data),
            "per_prefix": {k: {"count": c, "seconds": s} for k, (c, s) in sorted(per.items())}, "chunks_read_per_worker": reads}


def scheduler_overhead(client, leaves: int) -> dict:
    """A trivial graph: ``leaves`` add(i, 0) tasks merged by a binary tree (2 leaves - 1 tasks): seconds to build it on the
    client (dask.delayed, as the passes do) and to compute it, medians of 3."""
    import dask

    from upweight.dask import _tree

    build, run = [], []
    for _ in range(3):
        t0 = now()
        g = _tree([dask.delayed(operator.add, pure=True)(i, 0) for i in range(leaves)], operator.add)
        t1 = now()
        client.compute(g, sync=True)
        build.append(t1 - t0)
        run.append(now() - t1)
    return {"tasks": 2 * leaves - 1, "build_s": statistics.median(build), "compute_s": statistics.median(run), "build": build, "run": run}


def pass_bytes(inf, cfg, theta, Xq, yq, y) -> dict:
    """What one pass ships: the pickled graph (client -> scheduler -> workers) and the arrays in it,
    and dask.sizeof of one chunk's result (multiplied by the number of chunks in the report)."""
    import cloudpickle
    import dask
    from dask.sizeof import sizeof

    from upweight import dask as ud

    runner, vc, w = inf._runner, inf._solved(inf.loss_grads(Xq, yq)), inf.total_weight
    build = ud._tree(runner.map(ud._partial_chunk, theta, True, weights=True), ud._add_partials)
    query = ud._tree(runner.map(ud._top_k_chunk, theta, dask.delayed(vc, pure=True, traverse=False), w, K),
                     functools.partial(ud._merge_top_k, k=K))
    x0, y0 = np.array(np.load(cfg["paths"]["X"], mmap_mode="r")[:CHUNK_ROWS]), np.ascontiguousarray(y[:CHUNK_ROWS])
    part = ud._partial_chunk(runner.spec, theta, x0, y0, None, True, 0)
    tk = ud._top_k_chunk(runner.spec, theta, x0, y0, vc, w, K, 0)
    out = {"chunks": len(runner.data.x), "chunk_rows": CHUNK_ROWS, "x_chunk_bytes": int(x0.nbytes),
           "theta_pickled": len(cloudpickle.dumps(theta)), "vc_shape": list(vc.shape), "vc_pickled": len(cloudpickle.dumps(vc)),
           "y_graph_pickled": len(cloudpickle.dumps(dict(inf.y.__dask_graph__()))),
           "partial_sizeof": int(sizeof(part)), "topk_sizeof": int(sizeof(tk.as_tuple())), "topk_sizeof_dataclass": int(sizeof(tk))}
    for name, g in (("build", build), ("query", query)):
        graph = dict(g.__dask_graph__())
        out[f"{name}_tasks"] = len(graph)
        out[f"{name}_graph_pickled"] = len(cloudpickle.dumps(graph))
    return out


def influence_top_k(uw, model, X, y, Xq, yq):
    """The compared call: construction (one pass) then top_k (one pass), each timed."""
    t0 = now()
    inf = uw.Influence(model, X, y)
    t1 = now()
    tk = inf.top_k(Xq, yq, k=K)
    t2 = now()
    return inf, tk, {"construction": t1 - t0, "query": t2 - t1, "total": t2 - t0}


def run_job(job: str, tmp: Path, tag: str) -> dict:
    cfg = json.loads((tmp / "cfg.json").read_text())
    if job == "dask2":
        os.environ["RAYON_NUM_THREADS"] = "1"  # before upweight and the cluster: the workers inherit it
    import upweight as uw

    p = cfg["paths"]
    y, Xq, yq, theta = np.load(p["y"]), np.load(p["Xq"]), np.load(p["yq"]), np.load(tmp / "theta.npy")
    model = uw.LogisticRegression(l2=L2)
    model.set_theta(theta, n_features=D)  # declares classes_ = arange(2), as io.load_model does
    rec: dict = {"job": job, "client_threads": uw.num_threads()}
    cluster = client = None
    if job == "single":
        Xa, ya = p["X"], y
    else:
        import distributed

        t0 = now()
        cluster = distributed.LocalCluster(n_workers=WORKERS[job], threads_per_worker=1, processes=True, host="127.0.0.1",
                                           dashboard_address="127.0.0.1:0")
        client = distributed.Client(cluster)
        rec["startup_s"] = now() - t0
        rec["worker_threads"] = list(client.run(lambda: __import__("upweight")._core.num_threads()).values())
        rec["worker_env"] = list(client.run(lambda: os.environ.get("RAYON_NUM_THREADS")).values())
        Xa = uw.dask.from_npy(p["X"], chunk_rows=CHUNK_ROWS)
        ya = uw.dask.from_npy(p["y"], chunk_rows=CHUNK_ROWS)  # read by the workers, like X

        def transferred():
            return sum(client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total).values())

        moved0 = transferred()
    gc.collect()
    b0, st0 = proc_stat()
    c0, t0 = own_cpu_s(), now()
    inf, tk, rec["times"] = influence_top_k(uw, model, Xa, ya, Xq, yq)
    b1, st1 = proc_stat()
    own, wall = own_cpu_s() - c0, now() - t0
    rec["during"] = {"others_cpu_pct": max(0.0, ((b1 - b0) / HZ - own) / wall * 100), "steal_pct": (st1 - st0) / HZ / wall * 100,
                     "own_cpu_cores": own / wall, "wall_s": wall}
    np.savez(tmp / f"topk_{job}_{tag}.npz", **dict(zip(("helpful_idx", "helpful", "harmful_idx", "harmful"), tk.as_tuple(), strict=True)))
    if client is not None:
        rec["worker_transfer_bytes"] = transferred() - moved0
        inf, _, rec["warm_times"] = influence_top_k(uw, model, Xa, ya, Xq, yq)
        rec["bytes"] = pass_bytes(inf, cfg, theta, Xq, yq, y)
        rec["profile"] = {"build": task_profile(client, lambda: inf._runner.sums(theta, True)),
                          "query": task_profile(client, lambda: inf.top_k_on(inf.loss_grads(Xq, yq), K))}
        if job == "dask2":
            rec["overhead"] = [scheduler_overhead(client, m) for m in (500, 5000)]
        rec["child_pids"] = [ch.pid for ch in psutil.Process().children(recursive=True)]
        client.close()
        cluster.close()
    return rec


# -- the parent -------------------------------------------------------------------------------------
def versions() -> dict:
    import dask
    import distributed

    import upweight as uw

    cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
    return {"python": platform.python_version(), "numpy": np.__version__, "dask": dask.__version__, "distributed": distributed.__version__,
            "upweight": uw.__version__, "upweight_threads": uw.num_threads(), "cpu": cpu[0] if cpu else platform.processor(),
            "cores": os.cpu_count(), "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30}


def wait_gone(pids: list[int]) -> float:
    t0 = now()
    try:
        psutil.wait_procs([psutil.Process(q) for q in pids if psutil.pid_exists(q)], timeout=60)
    except psutil.Error:  # gone between the two calls
        pass
    return now() - t0


def compare(tmp: Path, rounds: int) -> dict:
    """Each dask job's top-10 against the single-process one of the same round."""
    out = {}
    for job in ("dask1", "dask2"):
        eq, diff, scale = [], 0.0, 0.0
        for rd in range(1, rounds + 1):
            a, b = tmp / f"topk_single_r{rd}.npz", tmp / f"topk_{job}_r{rd}.npz"
            if not (a.exists() and b.exists()):
                continue
            s, d = np.load(a), np.load(b)
            eq.append(bool(np.array_equal(s["helpful_idx"], d["helpful_idx"]) and np.array_equal(s["harmful_idx"], d["harmful_idx"])))
            for f in ("helpful", "harmful"):
                diff = max(diff, float(np.max(np.abs(s[f] - d[f]))))
                scale = max(scale, float(np.max(np.abs(s[f]))))
        out[job] = {"rounds_compared": len(eq), "indices_equal": bool(eq) and all(eq), "max_abs_score_diff": diff, "max_abs_score": scale}
    return out


def summarize(doc: dict) -> dict:
    summ = {}
    for job in JOBS:
        runs = [r for r in doc["runs"] if r["job"] == job and "times" in r]
        quiet = [r for r in runs if r["quiet"]]
        summ[job] = {"n_all": len(runs), "n_quiet": len(quiet)} | {f"{w}_{ph}": statistics.median([r["times"][ph] for r in rs])
                                                                   if rs else float("nan") for w, rs in (("quiet", quiet), ("all", runs))
                                                                   for ph in ("construction", "query", "total")}
        if job != "single":
            summ[job]["startup_s"] = [r["startup_s"] for r in runs]
            summ[job]["warm_total"] = statistics.median([r["warm_times"]["total"] for r in runs]) if runs else float("nan")
    return summ


def run_parent(args) -> None:
    n = 400_000 if args.quick else args.n
    rounds = 1 if args.quick else args.rounds
    OUT.mkdir(exist_ok=True)
    out = OUT / ("dask_scale_quick.json" if args.quick else "dask_scale.json")
    doc = {"command": "python bench/dask_scale.py " + " ".join(sys.argv[1:]), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "config": {"n": n, "d": D, "q": Q, "k": K, "l2": L2, "chunk_rows": CHUNK_ROWS, "rounds": rounds},
           "quiet_cpu_pct": args.quiet_cpu, "versions": versions(), "runs": []}
    tmp = Path(tempfile.mkdtemp(prefix="dask_scale_", dir="/tmp"))
    t_start = now()
    try:
        import upweight as uw

        t0 = now()
        paths = w3_write({"n": n, "d": D, "q": Q, "chunk": 100_000}, tmp, seed=0)
        doc["write_s"], t0 = now() - t0, now()
        model = uw.LogisticRegression(l2=L2).fit(paths["X"], np.load(paths["y"]))
        doc["fit"] = {"seconds": now() - t0, "n_iter": model.n_iter_, "grad_norm": model.grad_norm_}
        np.save(tmp / "theta.npy", model.get_theta())
        (tmp / "cfg.json").write_text(json.dumps({"paths": paths}))
        print(f"data {doc['write_s']:.0f} s, fit {doc['fit']['seconds']:.1f} s", file=sys.stderr, flush=True)
        for rd in range(1, rounds + 1):
            for pos, job in enumerate(JOBS if rd % 2 else JOBS[::-1], 1):
                rec = {"job": job, "round": rd, "order": pos, "load_before": load_before()}
                cmd = [sys.executable, str(Path(__file__).resolve()), "--one", job, "--tmp", str(tmp), "--tag", f"r{rd}"]
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=str(HERE))
                    if r.returncode != 0:
                        raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}")
                    rec.update(json.loads(r.stdout.strip().splitlines()[-1]))
                    rec["quiet"] = max(rec["load_before"]["others_cpu_pct"], rec["during"]["others_cpu_pct"]) < args.quiet_cpu
                except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                    rec["error"] = str(exc)
                doc["runs"].append(rec)
                rec["wait_exit_s"] = wait_gone(rec.get("child_pids", []))  # the cluster's processes, before the next load reading
                msg = rec.get("error") or (f"construction {rec['times']['construction']:.2f} s, query {rec['times']['query']:.2f} s, "
                                           f"others {rec['load_before']['others_cpu_pct']:.0f}% / {rec['during']['others_cpu_pct']:.0f}%")
                print(f"[{now() - t_start:6.0f} s] r{rd} {job}: {msg}", file=sys.stderr, flush=True)
                out.write_text(json.dumps(doc, indent=1))
        doc["correctness"] = compare(tmp, rounds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    doc["wall_s"] = now() - t_start
    doc["summary"] = summarize(doc)
    out.write_text(json.dumps(doc, indent=1))
    print(render(doc))
    print(f"\nwritten {out}", file=sys.stderr)


# -- the report -------------------------------------------------------------------------------------
def fs(x: float) -> str:
    return "-" if x != x else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def kib(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB" if b >= 2**20 else f"{b / 1024:.1f} KiB"


def render(doc: dict) -> str:
    c, v, s = doc["config"], doc["versions"], doc.get("summary") or summarize(doc)
    runs = [r for r in doc["runs"] if "times" in r]
    L = [f"Command: `{doc['command']}` ({doc.get('wall_s', 0) / 60:.1f} min); report: `python bench/dask_scale.py --report`. "
         f"Machine: {v['cores']} cores, {v['cpu']}, {v['mem_gib']:.0f} GiB RAM; Python {v['python']}, NumPy {v['numpy']}, dask "
         f"{v['dask']}, distributed {v['distributed']}, upweight {v['upweight']}. Data: n = {c['n']}, d = {c['d']} (p = {c['d'] + 1}), "
         f"q = {c['q']}, X float64 .npy ({c['n'] * c['d'] * 8 / 2**30:.2f} GiB, written in {doc.get('write_s', 0):.0f} s by "
         f"`bench_scale.w3_write`; it fits in RAM, so the reads come from the page cache), fitted once from the path in "
         f"{doc['fit']['seconds']:.1f} s ({doc['fit']['n_iter']} Newton steps). One timed call per process; {c['rounds']} interleaved "
         f"rounds; quiet = others < {doc['quiet_cpu_pct']:g}% of one core before and during; dask chunks of {c['chunk_rows']} rows.", "",
         "| job | construction (s) quiet / all | query (s) quiet / all | total (s) quiet / all | / single, quiet / all | quiet runs | "
         "warm repeat, total (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    base = s.get("single", {})
    for job in (j for j in JOBS if s.get(j, {}).get("n_all")):
        m = s[job]
        ratio = "1" if job == "single" else " / ".join(fs(m[f"{w}_total"] / base[f"{w}_total"]) for w in ("quiet", "all"))
        L.append(f"| {job} | " + " | ".join(f"{fs(m['quiet_' + ph])} / {fs(m['all_' + ph])}" for ph in ("construction", "query", "total"))
                 + f" | {ratio} | {m['n_quiet']}/{m['n_all']} | {fs(m.get('warm_total', float('nan')))} |")
    thr = {j: sorted({t for r in runs if r["job"] == j for t in r["worker_threads"]}) for j in ("dask1", "dask2")}
    start = "; ".join(f"{j} " + ", ".join(f"{x:.1f}" for x in s[j]["startup_s"]) + " s" for j in thr if s.get(j, {}).get("n_all"))
    L += ["", f"single: streaming from the path, {v['upweight_threads']} rayon threads. dask1: LocalCluster, 1 worker process x 1 "
          f"thread, rayon threads in the worker (read inside it) {thr['dask1']}. dask2: 2 worker processes x 1 thread, "
          f"RAYON_NUM_THREADS=1, rayon threads per worker {thr['dask2']}. Cluster start-up (not in the times above), per run: {start}. "
          "Warm repeat (dask jobs, all-run median): the same construction + query again in the same process, not in the "
          "comparison (the first call also pays the workers' first use: imports, first deserialisation).", ""]
    for job, r in doc.get("correctness", {}).items():
        L.append(f"- {job} vs single (same round, {r['rounds_compared']} rounds): top-10 indices (helpful and harmful, all {c['q']} "
                 f"queries) {'identical' if r['indices_equal'] else 'DIFFERENT'}; max |score difference| {r['max_abs_score_diff']:.1e} "
                 f"(max |score| {r['max_abs_score']:.1e}).")
    dj = [r for r in runs if r["job"] == "dask2"]
    return "\n".join(L + (dask_sections(doc, s, dj) if dj else []) + load_table(doc))


def dask_sections(doc: dict, s: dict, dj: list) -> list[str]:
    c, b, prof = doc["config"], dj[0]["bytes"], dj[0]["profile"]
    nch, p, reads = b["chunks"], c["d"] + 1, list(prof["build"]["chunks_read_per_worker"].values())
    rows = [("tasks: in the graph / run (task stream)", f"{b['build_tasks']} / {prof['build']['tasks']}",
             f"{b['query_tasks']} / {prof['query']['tasks']}"),
            ("to the workers: the pickled graph (client -> scheduler -> workers)", kib(b["build_graph_pickled"]),
             kib(b["query_graph_pickled"])),
            ("&nbsp;&nbsp;of which y's graph (`from_npy`: paths and row ranges)", kib(b["y_graph_pickled"]), kib(b["y_graph_pickled"])),
            (f"&nbsp;&nbsp;of which theta (p) / [V; c] ({b['vc_shape'][0]} x {b['vc_shape'][1]})", kib(b["theta_pickled"]),
             f"{kib(b['theta_pickled'])} + {kib(b['vc_pickled'])}"),
            ("back: one chunk's result (`dask.sizeof`): (w, loss, g, H) / TopK arrays", kib(b["partial_sizeof"]), kib(b["topk_sizeof"])),
            (f"back: x {nch} chunks (each leaf result moves at most once, into its merge or to the client)", kib(b["partial_sizeof"] * nch),
             kib(b["topk_sizeof"] * nch)),
            (f"X read from local storage (memmap), per worker ({'/'.join(map(str, reads))} chunks, profiled pass)",
             ", ".join(kib(b["x_chunk_bytes"] * m) for m in reads), "same") if reads else
            ("X read from local storage (memmap) inside each chunk's kernel task, by the worker that runs it",
             f"{kib(b['x_chunk_bytes'])} per chunk", "same")]
    L = ["", f"Bytes per pass (dask2, {nch} chunks of {b['chunk_rows']} rows; pickled sizes measured in the job process):", "",
         "| | construction pass | top-k pass |", "|---|---:|---:|"] + [f"| {a} | {x} | {y} |" for a, x, y in rows]
    L += ["", "Measured worker-to-worker transfer during the timed construction + query, per dask2 run: " + ", ".join(
          kib(r["worker_transfer_bytes"]) for r in dj) + f". (`dask.sizeof` of the TopK dataclass itself: {b['topk_sizeof_dataclass']} B.)",
          "", "Profiled passes (dask2, round 1, untimed, `distributed.get_task_stream`), seconds summed over the tasks of each prefix, "
          "top 4 (`read_chunk`: a chunk of X or y as a memmap view, read by the kernel that uses it):", "",
          "| pass | wall (s) | tasks' span (s) | prefix: action | tasks | seconds |", "|---|---:|---:|---|---:|---:|"]
    for name in ("build", "query"):
        pr = prof[name]
        for i, (k, e) in enumerate(sorted(pr["per_prefix"].items(), key=lambda kv: -kv[1]["seconds"])[:4]):
            lead = f"| {name} | {fs(pr['wall_s'])} | {fs(pr['span_s'])}" if i == 0 else "| | |"
            L.append(f"{lead} | {k} | {e['count']} | {fs(e['seconds'])} |")
    ov = [statistics.median(r["overhead"][i][k] for r in dj) for i in (0, 1) for k in ("build_s", "compute_s")]
    nt = [dj[0]["overhead"][i]["tasks"] for i in (0, 1)]
    sl_b, sl_c = (ov[2] - ov[0]) / (nt[1] - nt[0]), (ov[3] - ov[1]) / (nt[1] - nt[0])
    per_task = sl_b + sl_c
    L += ["", "Per-task overhead, measured (dask2's cluster, trivial graphs: add(i, 0) leaves merged by a binary tree, medians over "
          f"runs of the median of 3): {nt[0]} tasks {ov[0]:.2f} s to build (dask.delayed on the client) + {ov[1]:.2f} s to compute; "
          f"{nt[1]} tasks {ov[2]:.2f} + {ov[3]:.2f} s; slopes {sl_b * 1e6:.0f} us (build) + {sl_c * 1e6:.0f} us (scheduler, workers, "
          "the merges' transfers) per task."]
    t2 = s["dask2"]
    w = "quiet" if t2["n_quiet"] else "all"
    cb, cq = (t2[f"{w}_{ph}"] * 2 / nch for ph in ("construction", "query"))
    W, CH = 100, int(1e10 / b["chunk_rows"])
    tb, tq = (prof[k]["tasks"] / nch for k in ("build", "query"))
    comp_b, comp_q, sched_b, sched_q = CH * cb / (W * 2), CH * cq / (W * 2), CH * tb * per_task, CH * tq * per_task
    depth = math.ceil(math.log2(CH))
    L += ["", f"On paper (a projection, not measured): n = 1e10 rows on {W} workers x 2 cores, chunks of {b['chunk_rows']} rows "
          f"({CH} chunks). Measured inputs: dask2 {w}-median time per chunk per core {cb:.3f} s (construction), {cq:.3f} s (top-k) "
          f"(pass time x 2 cores / {nch} chunks: reading, kernels and scheduling together); {tb:.1f} / {tq:.1f} tasks run per "
          f"chunk; {per_task * 1e6:.0f} us per task; bytes per chunk as above. Assumptions: compute scales with rows / cores; each "
          f"worker reads its {1e10 * c['d'] * 8 / W / 1e9:.0f} GB of X per pass from local storage as fast as this page cache (more "
          "than its RAM: it needs a disk at >= 1 GB/s); y is read from storage like X (`from_npy`), not shipped from the client "
          f"(`da.from_array` would put {1e10 * 8 / 1e9:.0f} GB in every graph); the scheduler handles tasks one at a time at the rate "
          "measured here with 2 workers (with 100 it is likely slower).", "", "| per pass | construction | top-k |", "|---|---:|---:|",
          f"| compute: {CH} chunks x time per chunk-core / {W * 2} cores | {comp_b:.0f} s | {comp_q:.0f} s |",
          f"| scheduler: {CH} chunks x tasks per chunk x {per_task * 1e6:.0f} us | {sched_b:.0f} s | {sched_q:.0f} s |",
          f"| tree: depth ceil(log2 {CH}) = {depth}; results moved (each at most once) | {kib(CH * b['partial_sizeof'])} | "
          f"{kib(CH * b['topk_sizeof'])} |",
          f"| to the workers: theta (+ [V; c]) once per worker, plus task specs | {kib(W * b['theta_pickled'])} | "
          f"{kib(W * (b['theta_pickled'] + b['vc_pickled']))} |",
          f"| pass time: max(compute, scheduler) + {depth} merge levels | ~{max(comp_b, sched_b):.0f} s | ~{max(comp_q, sched_q):.0f} s |",
          "", f"Where it stops scaling (projection): the per-task time per pass is fixed by the task count ({CH} x {tb:.0f}), compute "
          f"shrinks with cores; they meet at about {CH * cb / sched_b:.0f} cores (construction) with these chunks; beyond that, larger "
          f"chunks. The tree is not the limit at p = {p} ({p * p * 8} B per merge, {depth} levels). At p = 4096 (the direct solver's "
          "limit) each partial is 134 MB; a chunk's Hessian still costs rows x p^2 flops per p^2 x 8 bytes sent, but the client's "
          "factorisation (p^3 / 3 ~ 2e10 flops) and worker memory (several partials held at once) become the limits."]
    return L


def load_table(doc: dict) -> list[str]:
    L = ["", "Load per run (1-min load average before; others' CPU % of one core before / during, with the VM's steal; own CPU: the "
         "job process and its live descendants, i.e. the scheduler and workers, from psutil at both ends of the timed window):", "",
         "| round | job | load avg | others before | others during (steal) | own CPU (cores) | quiet | total (s) | top others before |",
         "|---:|---|---:|---:|---:|---:|---|---:|---|"]
    for r in doc["runs"]:
        lb, du = r["load_before"], r.get("during")
        L.append(f"| {r['round']} | {r['job']} | {lb['loadavg'][0]:.2f} | " + (f"| | | | ERROR {r['error'][:80]} | |" if du is None else
                 f"{lb['others_cpu_pct']:.0f} | {du['others_cpu_pct']:.0f} ({du['steal_pct']:.0f}) | {du['own_cpu_cores']:.2f} | "
                 f"{'yes' if r['quiet'] else 'no'} | {fs(r['times']['total'])} | {', '.join(lb['top'])} |"))
    return L


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="n = 400000, 1 round: a smoke run (writes bench/out/dask_scale_quick.json)")
    ap.add_argument("--quiet-cpu", type=float, default=25.0)
    ap.add_argument("--report", nargs="?", const=str(OUT / "dask_scale.json"), help="print the Markdown of a JSON written by this script")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--tag", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_job(args.one, Path(args.tmp), args.tag)))
    elif args.report:
        print(render(json.loads(Path(args.report).read_text())))
    else:
        run_parent(args)


if __name__ == "__main__":
    main()
