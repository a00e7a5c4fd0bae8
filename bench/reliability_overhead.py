"""What issue 11's checks cost (bench/RESULTS.md, "Reliability checks"): in one process, rounds
interleaved, medians.

* the divergence check of an unpenalised fit: the core's Newton with ``report_move`` (one more
  pass over X for the last step's largest move) against without it;
* CG's singularity probe: ``Influence(..., solver="cg")`` at l2 = 0 (one extra CG solve for a
  random right-hand side) against l2 = 1e-12 (no probe; the same conditioning to 12 digits).

Run: python bench/reliability_overhead.py [n] [d] [rounds]
"""

import sys
import time

import numpy as np

import upweight as uw

n, d, rounds = (int(a) for a in (sys.argv[1:] + ["100000", "128", "5"])[:3])
rng = np.random.default_rng(0)
X = rng.standard_normal((n, d))
y = (rng.random(n) < 1 / (1 + np.exp(-(X @ rng.standard_normal(d)) / np.sqrt(d)))).astype(float)
model = uw.LogisticRegression().fit(X, y)
core = model.core_model()
theta0 = np.zeros(model.n_params)


def fit(report_move):
    t = time.perf_counter()
    core.fit(X, y, None, 0.0, 1e-10, 100, theta0, None, "direct", report_move)
    return time.perf_counter() - t


def influence(l2):
    m = uw.LogisticRegression(l2=l2)
    m.set_theta(model.get_theta(), n_features=d)
    t = time.perf_counter()
    uw.Influence(m, X, y, solver="cg")
    return time.perf_counter() - t


times = {k: [] for k in ("fit", "fit+move", "cg influence l2=1e-12", "cg influence l2=0 (probe)")}
for _ in range(rounds):
    times["fit"].append(fit(False))
    times["fit+move"].append(fit(True))
    times["cg influence l2=1e-12"].append(influence(1e-12))
    times["cg influence l2=0 (probe)"].append(influence(0.0))
med = {k: float(np.median(v)) for k, v in times.items()}
print(f"n={n} d={d} rounds={rounds}")
for k, v in med.items():
    print(f"{k:28s} {v:.3f} s")
probe = med["cg influence l2=0 (probe)"] / med["cg influence l2=1e-12"]
print(f"divergence check: x{med['fit+move'] / med['fit']:.3f} of the fit; probe: x{probe:.2f} of building a CG influence")
