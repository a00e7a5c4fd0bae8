"""Issue 14, W1: the pieces of construction and query that bench/RESULTS.md's "W1 again" breaks
down (n = 100000, d = 128, q = 500; bench_core.make_data, the model perf_peers.py fitted and saved
to bench/out/perf_w1_model.npz: run ``python bench/perf_peers.py --only W1 --jobs w1_gemm --rounds 1``
once first).

    python bench/w1_breakdown.py loop build|full|top32|query32  # a loop of one user call, to profile, e.g.:
    perf record -F 1999 --call-graph fp python bench/w1_breakdown.py loop full

``loop`` repeats, as a user would: ``Influence(model, X, y)`` (build), plus ``.on_loss(Xt, yt)``
(full), or float32 X with ``.top_k(Xt, yt, k=10)`` (top32), freeing the previous result each time;
``query32`` builds one ``Influence`` on float32 X and repeats only ``.top_k(Xt, yt, k=10)``.
Call graphs need a frame-pointer build of the extension: ``RUSTFLAGS="-C force-frame-pointers=yes"
CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --features python --lib``.
"""

import argparse
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
    if kind == "query32":
        inf = uw.Influence(model, X, y)
        t = time.perf_counter()
        for _ in range(rounds):
            last["out"] = inf.top_k(Xt, yt, k=10)
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["loop"])
    ap.add_argument("kind", nargs="?", default="full", choices=["build", "full", "top32", "query32"])
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args()
    loop(a.kind, a.rounds)
