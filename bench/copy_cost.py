"""The cost of Influence's private copy of X (issue 11): W1's shape, ``Influence`` + ``on_loss``
with ``copy=True`` or ``copy=False``, best of 3 in this process. Run the two alternately:
``python bench/copy_cost.py 1`` and ``python bench/copy_cost.py 0``."""

import json
import sys
import time

import numpy as np

import upweight as uw


def main() -> None:
    copy = sys.argv[1] == "1"
    rng = np.random.default_rng(0)
    n, d, q = 100000, 128, 500
    X = rng.standard_normal((n, d))
    beta = rng.standard_normal(d) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ beta)))).astype(float)
    Xt = rng.standard_normal((q, d))
    yt = (rng.random(q) < 0.5).astype(float)
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
