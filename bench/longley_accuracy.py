"""NIST Longley (certified values) at column scales from 1e-8 to 1e8, direct and CG: the max
relative error of the fitted parameters (bench/RESULTS.md, "Reliability checks").

Run: python bench/longley_accuracy.py
"""

import warnings

import numpy as np
import statsmodels.api as sm

import upweight as uw

data = sm.datasets.longley.load_pandas()
X, y = data.exog.to_numpy(dtype=float), data.endog.to_numpy(dtype=float)
# https://www.itl.nist.gov/div898/strd/lls/data/Longley.shtml: GNPDEFL, GNP, UNEMP, ARMFORCE, POP, YEAR, intercept
CERTIFIED = np.array([15.0618722713733, -0.358191792925910e-01, -2.02022980381683, -1.03322686717359,
                      -0.511041056535807e-01, 1829.15146461355, -3482258.63459582])
SCALES = {"raw": np.ones(6), "one column x 1e7": np.array([1e7, 1, 1, 1, 1, 1]),
          "one column x 3e7": np.array([3e7, 1, 1, 1, 1, 1]), "1e-8 .. 1e8 mixed": np.array([1e8, 1e-8, 1e4, 1e-4, 1, 1e6]),
          "standardised": 1 / X.std(axis=0)}
for name, s in SCALES.items():
    for solver in ("direct", "cg"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            m = uw.LinearRegression(solver=solver).fit(X * s, y)
        err = np.max(np.abs(np.r_[m.coef_ * s, m.intercept_] - CERTIFIED) / np.abs(CERTIFIED))
        print(f"{name:18s} {solver:6s} max rel error {err:.1e}  converged {m.converged_}  warnings {len(caught)}")
