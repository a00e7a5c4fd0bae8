"""The cost of Influence's private copy of X (issue 11): W1's shape, ``Influence`` + ``on_loss``
with ``copy=True`` or ``copy=False``, best of 3 in this process. Run the two alternately:
``python bench/copy_cost.py 1`` and ``python bench/copy_cost.py 0``."""

import json
import sys
import time

from bench_core import make_data  # (this folder is on sys.path when run as a script)

import upweight as uw


def main() -> None:
    copy = sys.argv[1] == "1"
    X, y, Xt, yt = make_data(100000, 128, 500)  # W1's shape and data
    model = uw.LogisticRegression(l2=1e-3).fit(X, y)
    best: dict[str, float] = {}
    for _ in range(3):
        t0 = time.perf_counter()
        inf = uw.Influence(model, X, y, solver="direct", copy=copy)
        t1 = time.perf_counter()
        S = inf.on_loss(Xt, yt)
        t2 = time.perf_counter()
        for k, v in (("construct", t1 - t0), ("on_loss", t2 - t1), ("total", t2 - t0)):
            best[k] = min(best.get(k, 1e9), v)
        del inf, S
    print(json.dumps({"copy": copy, **best}))


if __name__ == "__main__":
    main()
