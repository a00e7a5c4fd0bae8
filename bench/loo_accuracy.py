"""How well influence (first order) and the one-step Newton leave-out estimate predict the actual
leave-one-out change of test losses, against exact refits, on real data for every GLM family;
and approximate LOO CV against exact LOO CV.

    python bench/loo_accuracy.py            # markdown table on stdout, json in bench/out/

For each data set: fit, take the 3 test points with the largest loss, and for each the 20
training points with the largest |influence| on it (Koh & Liang's experiment); refit without
each of those points (Newton from theta* to gradient norm 1e-10) and compare, over the (test
point, training point) pairs, the predicted change of the test loss with the actual one: Pearson
correlation and the largest error relative to the largest actual change.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import upweight as uw
from upweight.validation import compare, leave_one_out


def standardize(X_train, X_test):
    mu, sd = X_train.mean(axis=0), X_train.std(axis=0)
    sd[sd == 0] = 1.0
    return (X_train - mu) / sd, (X_test - mu) / sd


def split(X, y, seed=0, test=0.25):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    nt = int(round(test * len(y)))
    te, tr = perm[:nt], perm[nt:]
    Xtr, Xte = standardize(X[tr], X[te])
    return Xtr, y[tr], Xte, y[te]


def datasets():
    from sklearn import datasets as skd

    X, y = skd.load_diabetes(return_X_y=True)
    yield "diabetes (squared)", uw.LinearRegression(l2=1e-3), *split(X, (y - y.mean()) / y.std())
    X, y = skd.load_breast_cancer(return_X_y=True)
    yield "breast cancer (logistic)", uw.LogisticRegression(l2=1e-3), *split(X, y.astype(float))
    X, y = skd.load_iris(return_X_y=True)
    yield "iris (multinomial)", uw.LogisticRegression(l2=1e-2), *split(X, y.astype(float))
    X, y = skd.load_wine(return_X_y=True)
    yield "wine (multinomial)", uw.LogisticRegression(l2=1e-2), *split(X, y.astype(float))
    import statsmodels.api as sm

    d = sm.datasets.randhie.load_pandas().data
    y = d["mdvis"].to_numpy(float)
    X = d.drop(columns=["mdvis"]).to_numpy(float)
    sub = np.random.default_rng(1).permutation(len(y))[:4000]
    yield "randhie doctor visits (poisson)", uw.PoissonRegression(l2=1e-3), *split(X[sub], y[sub])
    X, y = uw.load_fashion_mnist("train")
    keep = np.flatnonzero((y == 5) | (y == 7))[:4000]  # sandals vs sneakers
    Xs, ys = X[keep].astype(np.float64), (y[keep] == 7).astype(float)
    name = "Fashion-MNIST sandals vs sneakers (logistic, d = 784)"
    yield name, uw.LogisticRegression(l2=1e-3), Xs[:3000], ys[:3000], Xs[3000:], ys[3000:]


def main():
    out = []
    for name, model, Xtr, ytr, Xte, yte in datasets():
        t0 = time.perf_counter()
        model.fit(Xtr, ytr)
        inf = uw.Influence(model, Xtr, ytr)
        worst = np.argsort(-model.loss(Xte, yte))[:3]
        S = inf.on_loss(Xte[worst], yte[worst])
        idx = np.unique(np.argsort(-np.abs(S), axis=1)[:, :20])
        loo = leave_one_out(model, Xtr, ytr, idx=idx, X_test=Xte[worst], y_test=yte[worst])
        one_step = inf.loo_on_loss(Xte[worst], yte[worst], idx=idx).T
        actual = loo.actual_loss
        big = np.abs(actual).max()
        res = {"data": name, "n": len(ytr), "p": int(inf.n_params), "points": len(idx)}
        for label, pred in (("influence", loo.predicted_loss), ("one_step", one_step)):
            c = compare(pred, actual)
            res[label] = {"pearson": c.pearson, "max_rel_error": float(np.abs(pred - actual).max() / big)}
        if len(ytr) <= 600:  # exact LOO CV by n refits
            alo = uw.approximate_loo_cv(model, Xtr, ytr)
            full = leave_one_out(model, Xtr, ytr)
            exact = np.array([model.core_model().losses(t, Xtr[m:m + 1], ytr[m:m + 1])[0] for m, t in enumerate(full.theta)])
            res["alo"] = {"estimate": alo.estimate, "exact": float(exact.mean()), "training": alo.training_loss,
                          "max_abs_point_error": float(np.abs(alo.losses - exact).max())}
        res["seconds"] = time.perf_counter() - t0
        out.append(res)
        print(f"# {name}: done in {res['seconds']:.1f} s", file=sys.stderr)
    print("| data | n | p | pairs | influence: Pearson | influence: max rel. error | one step: Pearson | one step: max rel. error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        i, o = r["influence"], r["one_step"]
        print(f"| {r['data']} | {r['n']} | {r['p']} | {3 * r['points']} | {i['pearson']:.4f} | {i['max_rel_error']:.2%} | "
              f"{o['pearson']:.6f} | {o['max_rel_error']:.2%} |")
    print()
    print("| data | ALO CV loss | exact LOO CV loss (n refits) | training loss | max per-point error |")
    print("|---|---|---|---|---|")
    for r in out:
        if "alo" in r:
            a = r["alo"]
            print(f"| {r['data']} | {a['estimate']:.6f} | {a['exact']:.6f} | {a['training']:.6f} | {a['max_abs_point_error']:.1e} |")
    os.makedirs(os.path.join(os.path.dirname(__file__), "out"), exist_ok=True)
    path = os.path.join(os.path.dirname(__file__), "out", "loo_accuracy.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"\n(json: {path})", file=sys.stderr)


if __name__ == "__main__":
    main()
