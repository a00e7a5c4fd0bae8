"""In-process split of W1's influence step: Influence() (Hessian + Cholesky), on_loss, and the
bare NumPy product, repeated, in one process. `python bench/profile_on_loss.py`"""

import time

import numpy as np

import upweight as uw

rng = np.random.default_rng(0)
n, d, q = 100_000, 128, 500
X = rng.standard_normal((n, d))
y = (rng.random(n) < 0.5).astype(float)
Xt = rng.standard_normal((q, d))
yt = (rng.random(q) < 0.5).astype(float)
m = uw.LogisticRegression(l2=1e-3).fit(X, y)
Z = np.hstack([X, np.ones((n, 1))])
V = rng.standard_normal((d + 1, q))
for _ in range(3):
    t0 = time.perf_counter()
    inf = uw.Influence(m, X, y)
    t1 = time.perf_counter()
    inf.on_loss(Xt, yt)
    t2 = time.perf_counter()
    Z @ V
    t3 = time.perf_counter()
    print(f"Influence() {t1 - t0:.3f} s   on_loss {t2 - t1:.3f} s   numpy Z @ V {t3 - t2:.3f} s")
