"""Issue 14, W1: the pieces of construction and query that bench/RESULTS.md's "W1 again" breaks
down (n = 100000, d = 128, q = 500; bench_core.make_data, the model perf_peers.py fitted and saved
to bench/out/perf_w1_model.npz: run ``python bench/perf_peers.py --only W1 --jobs w1_gemm --rounds 1``
once first).

    python bench/w1_breakdown.py loop build|full|top32|query32|query64  # a loop of one user call, to profile, e.g.:
    perf record -F 1999 --call-graph fp python bench/w1_breakdown.py loop full

``loop`` repeats, as a user would: ``Influence(model, X, y)`` (build), plus ``.on_loss(Xt, yt)``
(full), or float32 X with ``.top_k(Xt, yt, k=10)`` (top32), freeing the previous result each time;
``query32`` builds one ``Influence`` on float32 X and repeats only ``.top_k(Xt, yt, k=10)``;
``query64`` one on float64 X, repeating only ``.on_loss(Xt, yt)`` (the full matrix).

    python bench/w1_breakdown.py hessian [--rounds 5]  # per core: upweight's Hessian against NumPy's

``hessian`` compares, on one thread each, the float64 Hessian at the fitted theta (residual
weights h = p (1 - p) included): upweight's ``core_model().hessian(theta, X, y, None, l2)`` (the
pass construction makes: fingerprints of X, the weights, the lower triangle by row blocks),
NumPy's syrk form ``Zs.T @ Zs`` with ``Zs = Z * sqrt(h)[:, None]`` and its plain form
``Z.T @ (Z * h[:, None])``. Each measurement is its own process (RAYON_NUM_THREADS=1 /
OPENBLAS_NUM_THREADS=1, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so NumPy runs its best
kernel), best of 5 calls, the three interleaved over ``--rounds`` rounds; medians printed.
Call graphs need a frame-pointer build of the extension: ``RUSTFLAGS="-C force-frame-pointers=yes"
CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --features python --lib``.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_core import make_data  # noqa: E402

import upweight as uw  # noqa: E402

MODEL = Path(__file__).parent / "out" / "perf_w1_model.npz"


def loop(kind: str, rounds: int) -> None:
    X, y, Xt, yt = make_data(100000, 128, 500, seed=0)
    if kind in ("top32", "query32"):
        X = X.astype(np.float32)
    model = uw.load_model(str(MODEL))
    last: dict = {}
    if kind in ("query32", "query64"):
        inf = uw.Influence(model, X, y)
        t = time.perf_counter()
        for _ in range(rounds):
            last.clear()  # (the previous full matrix is freed first, as in the user loops)
            last["out"] = inf.top_k(Xt, yt, k=10) if kind == "query32" else inf.on_loss(Xt, yt)
        print(f"{kind}: {(time.perf_counter() - t) / rounds:.4f} s per call ({rounds} calls)")
        return
    t = time.perf_counter()
    for _ in range(rounds):
        last.clear()
        inf = uw.Influence(model, X, y)
        last["inf"] = inf
        if kind == "full":
            last["out"] = inf.on_loss(Xt, yt)
        elif kind == "top32":
            last["out"] = inf.top_k(Xt, yt, k=10)
        del inf
    print(f"{kind}: {(time.perf_counter() - t) / rounds:.4f} s per call ({rounds} calls)")


HESSIANS = ("upweight", "numpy_syrk", "numpy_gemm")


def hessian_once(kind: str) -> tuple[float, float]:
    """Best of 5 calls of one Hessian build, in this process (one thread: see the caller): the
    whole build and, for NumPy, its product alone (Z, h and the scaled copy made before it)."""
    X, y, _, _ = make_data(100000, 128, 500, seed=0)
    model = uw.load_model(str(MODEL))
    theta = model.get_theta()
    l2 = float(model.l2)
    core = model.core_model()
    best, best_product = float("inf"), float("inf")
    for _ in range(6):  # the first is a warm-up
        t = time.perf_counter()
        if kind == "upweight":
            core.hessian(theta, X, y, None, l2)
            t1 = t
        else:
            Z = np.hstack([X, np.ones((X.shape[0], 1))])
            pr = 1.0 / (1.0 + np.exp(-(Z @ theta)))
            h = pr * (1.0 - pr)
            a, b = (Z * np.sqrt(h)[:, None],) * 2 if kind == "numpy_syrk" else (Z, Z * h[:, None])
            t1 = time.perf_counter()
            a.T @ b  # (the same buffer on both sides: NumPy calls syrk)
        t2 = time.perf_counter()
        best, best_product = min(best, t2 - t), min(best_product, t2 - t1)
    return best, best_product


def hessians(rounds: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    env |= {"RAYON_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in HESSIANS}
    for r in range(rounds):
        order = HESSIANS if r % 2 == 0 else HESSIANS[::-1]
        for kind in order:
            out = subprocess.run([sys.executable, __file__, "hessian-once", kind], env=env, check=True,
                                 capture_output=True, text=True).stdout
            whole, product = map(float, out.split()[-2:])
            times[kind].append((whole, product))
        print(f"round {r + 1}: " + ", ".join(f"{k} {times[k][-1][0]:.4f} s" for k in HESSIANS), flush=True)
    med = {k: statistics.median(w for w, _ in v) for k, v in times.items()}
    prod = {k: statistics.median(p for _, p in v) for k, v in times.items() if k != "upweight"}
    print("medians (one thread), whole build: " + ", ".join(f"{k} {med[k]:.4f} s" for k in HESSIANS)
          + "; NumPy's product alone: " + ", ".join(f"{k} {prod[k]:.4f} s" for k in prod)
          + f"; upweight / numpy_syrk whole {med['upweight'] / med['numpy_syrk']:.2f}, / its product alone "
          f"{med['upweight'] / prod['numpy_syrk']:.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["loop", "hessian", "hessian-once"])
    ap.add_argument("kind", nargs="?", default="full", choices=["build", "full", "top32", "query32", "query64", *HESSIANS])
    ap.add_argument("--rounds", type=int, default=None, help="loop: calls (15); hessian: rounds (5)")
    a = ap.parse_args()
    if a.what == "loop":
        loop(a.kind, a.rounds or 15)
    elif a.what == "hessian":
        hessians(a.rounds or 5)
    else:
        whole, product = hessian_once(a.kind)
        print(f"{whole:.6f} {product:.6f}")
