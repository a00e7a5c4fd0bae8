"""Networks on the bundled 8x8 digits, in the style of Bae et al. (2022), "If influence functions
are the answer, then what is the question?" (bench/RESULTS.md, "Networks on digits: influence,
PBRF and leave-one-out (issue 12)").

A 64-16-10 tanh MLPClassifier is trained with upweight on n = 500 training digits (seeded split;
the other 1297 are test points). For the 3 test points with the highest loss and a stated set M of
training points (for each test point the K with the largest |influence| under the default damped
Gauss-Newton influence, pooled, plus R more drawn at random with a fixed seed), every pair (t, m),
t in those 3 and m in M, gets the change of test loss l_t when m is removed (eps = -w_m) from:

  (a) influence, -w_m S[t, m], damped Gauss-Newton (damping "auto" = 0.1 tr(G)/p, and 0.1x, 10x it)
  (b) the PBRF: l_t(inf.pbrf(m, -w_m)) - l_t(theta_s), at the default damping
  (c) leave-one-out retraining, warm (from theta_s, w_m = 0) and cold (same seed, from scratch, row m deleted)
  (d) influence with the exact Hessian, at the smallest damping that makes H + lam I positive definite

For networks, influence answers the PBRF (its derivative at eps = 0 is the damped Gauss-Newton
influence, at any theta), not leave-one-out retraining: the LOO numbers are reported, never asserted.

Each removal costs one PBRF solve and two refits (shared by the 3 test points), so the run time is
about |M| x (PBRF + warm + cold), the cold refits the largest part; |M| <= 3 K + R = 45 (K = 10, R = 15
by default; 37 in the recorded run) keeps it near 5-6 minutes on 2 shared cores.

Run: python bench/networks_digits.py            (--top K --random R to change the set; --no-plot)
Writes bench/out/networks_digits.csv (every pair) and bench/networks_digits.png (with matplotlib).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import time
import warnings

import numpy as np
from scipy import stats

import upweight as uw

HERE = os.path.dirname(os.path.abspath(__file__))
N_TRAIN, SPLIT_SEED, NET_SEED, SAMPLE_SEED = 500, 0, 0, 1
HIDDEN, ACTIVATION, L2 = (16,), "tanh", 1e-3
N_TEST_POINTS = 3
OTHER_SEEDS = (1, 2, 3, 4)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def new_net(**kw) -> uw.MLPClassifier:
    return uw.MLPClassifier(hidden=HIDDEN, activation=ACTIVATION, l2=L2, random_state=NET_SEED, **kw)


def finite(a, b):
    """The pairs where both are numbers (the PBRF is NaN where its Newton solve failed)."""
    ok = np.isfinite(a) & np.isfinite(b)
    return a[ok], b[ok]


def corr(a, b) -> tuple[float, float]:
    """Pearson r and Spearman rho (scipy.stats) over the pairs where both are numbers."""
    a, b = finite(a, b)
    return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0])


def fmt_corr(a, b) -> str:
    r, rho = corr(a, b)
    return f"{r:+.3f} / {rho:+.3f}"


def slope(pred, actual) -> float:
    """Least-squares slope of actual on pred through the origin (pairs where both are numbers)."""
    pred, actual = finite(pred, actual)
    return float(pred @ actual / (pred @ pred))


def penalty_mask(sizes) -> np.ndarray:
    """M: 1 on the weights, 0 on the biases (bias last in each row of [W_l | b_l])."""
    parts = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
        block = np.ones((fan_out, fan_in + 1))
        block[:, -1] = 0.0
        parts.append(block.ravel())
    return np.concatenate(parts)


def pbrf_convexity(net, X, y, w, lam):
    """m -> smallest eigenvalue of the Hessian of the PBRF objective at theta_s for eps = -w_m
    (DESIGN-networks.md section 3): (W G_data - w_m hess l_m) / (W - w_m) + 2 l2 M + lam I.
    Negative: removing m makes the objective non-convex at theta_s (its loss Hessian outweighs
    the rest), and `Influence.pbrf` falls back to the Gauss-Newton part of that term to precondition."""
    theta, yf, W = net.get_theta(), y.astype(np.float64), float(w.sum())
    mask = penalty_mask(net.sizes())
    G_data = net.core_model("gauss-newton").hessian(theta, X, yf, w, net.l2) - np.diag(2.0 * net.l2 * mask)
    exact = net.core_model("hessian")

    def smallest(m: int) -> float:
        H_m = exact.hessian(theta, X[m:m + 1], yf[m:m + 1], None, 0.0)
        K = (W * G_data - w[m] * H_m) / (W - w[m]) + np.diag(2.0 * net.l2 * mask + lam)
        return float(np.linalg.eigvalsh(K)[0])

    return smallest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=10, help="training points with the largest |influence| per test point (default 10)")
    ap.add_argument("--random", type=int, default=15, help="training points drawn at random (seed 1) on top (default 15)")
    ap.add_argument("--no-plot", action="store_true", help="do not write bench/networks_digits.png")
    args = ap.parse_args()

    load_start, t_start = loadavg(), time.perf_counter()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")

    # -- data and training ----------------------------------------------------------------
    X, y = uw.load_digits()
    X = X / 16.0
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    tr, te = perm[:N_TRAIN], perm[N_TRAIN:]
    Xtr, ytr, Xte, yte = X[tr], y[tr], X[te], y[te]
    w = np.ones(N_TRAIN)  # unweighted: removing m is eps = -w_m = -1

    net, t_fit = timed(lambda: new_net().fit(Xtr, ytr, sample_weight=w))
    theta = net.get_theta()
    core = net.core_model()

    def test_loss(th, idx):
        return core.losses(th, Xte[idx], yte[idx].astype(np.float64))

    loss_all = test_loss(theta, np.arange(len(te)))
    T = np.argsort(-loss_all)[:N_TEST_POINTS]  # the highest test losses
    loss_T = loss_all[T]

    # -- influence: damped Gauss-Newton at 3 dampings, exact Hessian ------------------------------
    inf, t_inf_build = timed(lambda: uw.Influence(net, Xtr, ytr, w, solver="direct"))  # damping "auto"
    lam0 = inf.damping
    S0, t_query = timed(lambda: inf.on_loss(Xte[T], yte[T]))
    _, t_query_all = timed(lambda: inf.on_loss(Xte, yte))
    S_gn = {1.0: S0}
    for f in (0.1, 10.0):
        S_gn[f] = uw.Influence(net, Xtr, ytr, w, damping=f * lam0, solver="direct").on_loss(Xte[T], yte[T])

    # smallest damping with H + lam I positive definite. The output-bias shift (all output biases
    # + c) is an exact null direction of H (softmax, unpenalised biases); upweight solves in its
    # orthogonal complement (as for the multinomial GLM), so the eigenvalues that matter are H's
    # on that complement.
    H, t_hess = timed(lambda: net.core_model("hessian").hessian(theta, Xtr, ytr.astype(np.float64), w, L2))
    k, p = net.n_outputs, net.n_params
    width = HIDDEN[-1] + 1  # the last layer's rows [W_L | b_L], bias last, row-major, at the end of theta
    shift = np.zeros(p)
    shift[[p - k * width + j * width + width - 1 for j in range(k)]] = 1.0 / np.sqrt(k)
    null_residual = float(np.abs(H @ shift).max())
    ev = np.linalg.eigvalsh(H + shift[:, None] * shift[None, :] * 10.0 * np.abs(H).max())  # lift the null direction out of the way
    ev_min = float(ev[0])
    lam_h = 0.0 if ev_min > 0 else 1.1 * -ev_min
    inf_h, t_inf_h = timed(lambda: uw.Influence(net, Xtr, ytr, w, curvature="hessian", damping=lam_h, solver="direct"))
    S_h = inf_h.on_loss(Xte[T], yte[T])

    # -- the set of training points -----------------------------------------------------------
    top = [np.argsort(-np.abs(S0[i]))[:args.top] for i in range(len(T))]
    M_top = np.unique(np.concatenate(top))
    rest = np.setdiff1d(np.arange(N_TRAIN), M_top)
    M_rand = np.sort(np.random.default_rng(SAMPLE_SEED).choice(rest, size=args.random, replace=False))
    M = np.concatenate([M_top, M_rand])

    # -- removals: PBRF, warm and cold leave-one-out ------------------------------------------
    pbrf, warm, cold = (np.zeros((len(T), len(M))) for _ in range(3))
    t_pbrf, t_warm, t_cold, warm_iters, cold_iters, n_warn = [], [], [], [], [], 0
    t_pbrf_failed: list[float] = []
    pbrf_failed = {}  # m -> the error
    for j, m in enumerate(M):
        t0 = time.perf_counter()
        try:
            th_b = inf.pbrf(int(m), -w[m])
        except (uw.SingularHessianError, uw.ConvergenceError) as exc:
            t_pbrf_failed.append(time.perf_counter() - t0)
            pbrf[:, j] = np.nan
            pbrf_failed[int(m)] = type(exc).__name__
        else:
            t_pbrf.append(time.perf_counter() - t0)
            pbrf[:, j] = test_loss(th_b, T) - loss_T
        wm = w.copy()
        wm[m] = 0.0
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", uw.ConvergenceWarning)
            net_w = copy.deepcopy(net)
            net_w.warm_start = True
            _, dt = timed(lambda: net_w.fit(Xtr, ytr, sample_weight=wm))
            t_warm.append(dt)
            warm_iters.append(net_w.n_iter_)
            keep = np.arange(N_TRAIN) != m
            net_c, dt = timed(lambda: new_net().fit(Xtr[keep], ytr[keep], sample_weight=w[keep]))
            t_cold.append(dt)
            cold_iters.append(net_c.n_iter_)
        n_warn += len(caught)
        warm[:, j] = test_loss(net_w.get_theta(), T) - loss_T
        cold[:, j] = test_loss(net_c.get_theta(), T) - loss_T
        status = f"failed ({t_pbrf_failed[-1]:.1f} s)" if int(m) in pbrf_failed else f"{t_pbrf[-1]:.1f} s"
        print(f"  training point {tr[m]:4d} ({j + 1}/{len(M)}): PBRF {status}, warm {t_warm[-1]:.1f} s, cold {t_cold[-1]:.1f} s",
              flush=True)

    # where removal makes the PBRF objective non-convex at theta_s (not part of the costs below)
    smallest = pbrf_convexity(net, Xtr, ytr, w, lam0)
    convex = {int(m): smallest(int(m)) for m in M}

    # the scale of retraining noise: the same data, other seeds
    seed_change = []
    for s in OTHER_SEEDS:
        other = uw.MLPClassifier(hidden=HIDDEN, activation=ACTIVATION, l2=L2, random_state=s).fit(Xtr, ytr, sample_weight=w)
        seed_change.append(test_loss(other.get_theta(), T) - loss_T)
    seed_change = np.array(seed_change)

    # -- the numbers ----------------------------------------------------------------------------
    wM = w[M][None, :]
    pred = {f: -wM * S[:, M] for f, S in S_gn.items()}
    pred_h = -wM * S_h[:, M]
    flat = {"a": pred[1.0].ravel(), "a01": pred[0.1].ravel(), "a10": pred[10.0].ravel(), "d": pred_h.ravel(),
            "b": pbrf.ravel(), "warm": warm.ravel(), "cold": cold.ravel()}
    total = time.perf_counter() - t_start
    load_end = loadavg()

    os.makedirs(os.path.join(HERE, "out"), exist_ok=True)
    csv = os.path.join(HERE, "out", "networks_digits.csv")
    with open(csv, "w") as fh:
        fh.write("test_index,train_index,in_top,influence_gn,influence_gn_0.1x,influence_gn_10x,influence_hessian,pbrf,loo_warm,loo_cold,"
                 "pbrf_hessian_min_eig\n")
        for i, t in enumerate(T):
            for j, m in enumerate(M):
                fh.write(f"{te[t]},{tr[m]},{int(j < len(M_top))},{pred[1.0][i, j]:.10g},{pred[0.1][i, j]:.10g},{pred[10.0][i, j]:.10g},"
                         f"{pred_h[i, j]:.10g},{pbrf[i, j]:.10g},{warm[i, j]:.10g},{cold[i, j]:.10g},{convex[int(m)]:.6g}\n")

    L = []
    L.append(f"Run {started}; load average (1, 5, 15 min) {load_start} at the start, {load_end} at the end; total {total:.0f} s. "
             f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}, "
             f"upweight {uw.__version__}.")
    L.append("")
    L.append(f"Network: 64-16-10 tanh `MLPClassifier(hidden=(16,), l2={L2:g})`, seed {NET_SEED}, trained on n = {N_TRAIN} digits "
             f"(X / 16; split: `np.random.default_rng({SPLIT_SEED}).permutation(1797)`, first {N_TRAIN} train, other {len(te)} test): "
             f"{net.n_iter_} iterations, max |grad| {net.grad_norm_:.1e}, train accuracy {net.score(Xtr, ytr):.3f}, "
             f"test accuracy {net.score(Xte, yte):.3f}, mean test loss {loss_all.mean():.3f}; p = {p}.")
    L.append("")
    L.append("Test points t (highest test loss; label -> predicted, loss): "
             + ", ".join(f"#{te[t]} ({yte[t]} -> {net.predict(Xte[[t]])[0]}, {loss_all[t]:.2f})" for t in T) + ".")
    L.append(f"Training points M ({len(M)}; indices into the 1797 digits): top {args.top} by |influence| per test point, pooled "
             f"({len(M_top)}): {', '.join(str(tr[m]) for m in M_top)}; random (seed {SAMPLE_SEED}, {len(M_rand)}): "
             f"{', '.join(str(tr[m]) for m in M_rand)}. Pairs: every (t, m), {len(T)} x {len(M)} = {flat['a'].size}.")
    L.append(f"Damping: Gauss-Newton \"auto\" lam0 = 0.1 tr(G)/p = {lam0:.3g} (also 0.1 lam0, 10 lam0); the PBRF uses lam0. Exact "
             f"Hessian: smallest eigenvalue off the output-bias shift {ev_min:.3g} (the shift itself: |H v| = {null_residual:.1e}), "
             f"so the smallest damping with H + lam I positive definite there is lam = {lam_h:g}"
             + (" (upweight solves in the complement of the shift, as for the multinomial GLM)." if lam_h == 0 else "."))
    L.append("")
    L.append("For networks, influence answers the proximal Bregman response function (PBRF), not leave-one-out retraining: "
             "the leave-one-out columns are reported, never asserted.")
    L.append("")
    ok_b = np.isfinite(flat["b"])
    n_pairs, n_b = flat["a"].size, int(ok_b.sum())
    if pbrf_failed:
        L.append(f"PBRF: `inf.pbrf(m, -w_m)` failed for {len(pbrf_failed)} of {len(M)} training points ("
                 + ", ".join(f"{tr[m]}: {err}" for m, err in pbrf_failed.items())
                 + f"). The PBRF columns use the other {n_b} of {n_pairs} pairs; the rest use all {n_pairs}.")
    else:
        L.append(f"PBRF: `inf.pbrf(m, -w_m)` converged (max |gradient| <= 1e-10) for all {len(M)} training points.")
    nonconvex = [m for m in M if convex[int(m)] < 0]
    L.append(f"For {len(nonconvex)} of them removal makes the PBRF objective non-convex at theta_s (smallest eigenvalue of its "
             "Hessian there, (W G_data - w_m hess l_m) / (W - w_m) + 2 l2 M + lam0 I: "
             + (", ".join(f"{tr[m]}: {convex[int(m)]:.2g}" for m in nonconvex) if nonconvex else "none negative")
             + f"; over all {len(M)}: min {min(convex.values()):.2g}, median {np.median(list(convex.values())):.2g}).")
    L.append("")
    L.append("Correlation of predicted and measured changes of test loss when m is removed, Pearson r / Spearman rho "
             f"(PBRF column: the {n_b} pairs with a PBRF; LOO columns: all {n_pairs} pairs; slope: least squares of the column "
             "on the row, through 0):")
    L.append("")
    L.append("| prediction | vs (b) PBRF, lam0 | vs (c) LOO warm | vs (c) LOO cold | slope vs PBRF | slope vs warm | slope vs cold |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    rows = [("(a) influence, damped GN, lam0 (default)", "a"), ("(a) influence, damped GN, 0.1 lam0", "a01"),
            ("(a) influence, damped GN, 10 lam0", "a10"), (f"(d) influence, exact Hessian, lam = {lam_h:g}", "d"),
            ("(b) PBRF, lam0", "b")]
    for name, key in rows:
        vs_b = "1" if key == "b" else fmt_corr(flat[key], flat["b"])
        sb = "1" if key == "b" else f"{slope(flat[key], flat['b']):.2f}"
        L.append(f"| {name} | {vs_b} | {fmt_corr(flat[key], flat['warm'])} | {fmt_corr(flat[key], flat['cold'])} | {sb} | "
                 f"{slope(flat[key], flat['warm']):.2f} | {slope(flat[key], flat['cold']):.2f} |")
    L.append(f"| (c) LOO warm | | 1 | {fmt_corr(flat['warm'], flat['cold'])} | | | {slope(flat['warm'], flat['cold']):.2f} |")
    L.append("")
    L.append(f"(d) exact Hessian vs (a) damped GN: {fmt_corr(flat['d'], flat['a'])} (lam0), {fmt_corr(flat['d'], flat['a01'])} (0.1 lam0), "
             f"{fmt_corr(flat['d'], flat['a10'])} (10 lam0).")
    if pbrf_failed:
        sub = {key: np.where(ok_b, v, np.nan) for key, v in flat.items()}
        L.append(f"On the {n_b} pairs with a PBRF only: (a) vs warm {fmt_corr(sub['a'], sub['warm'])}, (a) vs cold "
                 f"{fmt_corr(sub['a'], sub['cold'])}, (d) vs warm {fmt_corr(sub['d'], sub['warm'])}, (b) vs cold "
                 f"{fmt_corr(sub['b'], sub['cold'])}.")
    rand = np.zeros((len(T), len(M)), dtype=bool)
    rand[:, len(M_top):] = True
    sub = {key: np.where(rand.ravel(), v, np.nan) for key, v in flat.items()}
    L.append(f"On the {int(rand.sum())} pairs with a random training point only (no selection by influence): (a) vs (b) "
             f"{fmt_corr(sub['a'], sub['b'])}, (a) vs warm {fmt_corr(sub['a'], sub['warm'])}, "
             f"(a) vs cold {fmt_corr(sub['a'], sub['cold'])}, "
             f"(d) vs warm {fmt_corr(sub['d'], sub['warm'])}, (b) vs warm {fmt_corr(sub['b'], sub['warm'])}; slopes (b) on (a) "
             f"{slope(sub['a'], sub['b']):.2f}, warm on (a) {slope(sub['a'], sub['warm']):.2f}, "
             f"warm on (d) {slope(sub['d'], sub['warm']):.2f}.")
    L.append("")
    L.append("Per test point, Pearson r / Spearman rho over its training points (with (b): those with a PBRF); the last column is "
             f"|change of its test loss| when only the seed changes (seeds {', '.join(map(str, OTHER_SEEDS))}, all {N_TRAIN} points):")
    L.append("")
    L.append("| test point | (a) vs (b) | (a) vs warm | (a) vs cold | (d) vs warm | (b) vs warm | median abs change: (a), (b), warm, cold "
             "| other seeds' abs change |")
    L.append("|---|---:|---:|---:|---:|---:|---|---:|")
    for i, t in enumerate(T):
        meds = ", ".join(f"{np.nanmedian(np.abs(v[i])):.2g}" for v in (pred[1.0], pbrf, warm, cold))
        L.append(f"| #{te[t]} | {fmt_corr(pred[1.0][i], pbrf[i])} | {fmt_corr(pred[1.0][i], warm[i])} | "
                 f"{fmt_corr(pred[1.0][i], cold[i])} | "
                 f"{fmt_corr(pred_h[i], warm[i])} | {fmt_corr(pbrf[i], warm[i])} | {meds} | "
                 f"{', '.join(f'{abs(c):.2g}' for c in seed_change[:, i])} |")
    L.append("")
    L.append("Costs (seconds, this run):")
    L.append("")
    L.append("| step | time (s) |")
    L.append("|---|---:|")
    L.append(f"| training (L-BFGS + Newton polishing, {net.n_iter_} iterations) | {t_fit:.2f} |")
    L.append(f"| `Influence(net, ...)` damped GN, direct (forms G, computes the auto damping, factors) | {t_inf_build:.2f} |")
    L.append(f"| `on_loss` for the {len(T)} test points (all 500 training points) | {t_query:.3f} |")
    L.append(f"| `on_loss` for all {len(te)} test points | {t_query_all:.3f} |")
    L.append(f"| exact Hessian H formed ({p} x {p}) | {t_hess:.2f} |")
    L.append(f"| `Influence(net, ..., curvature=\"hessian\")`, direct | {t_inf_h:.2f} |")
    L.append(f"| PBRF `inf.pbrf(m, -1)`, per training point ({len(t_pbrf)} converged): median (min-max) | "
             f"{np.median(t_pbrf):.2f} ({min(t_pbrf):.2f}-{max(t_pbrf):.2f}) |")
    if t_pbrf_failed:
        L.append(f"| PBRF, until it failed ({len(t_pbrf_failed)} points): median | {np.median(t_pbrf_failed):.2f} |")
    L.append(f"| LOO warm refit, per training point: median (min-max); iterations median {np.median(warm_iters):.0f} | "
             f"{np.median(t_warm):.2f} ({min(t_warm):.2f}-{max(t_warm):.2f}) |")
    L.append(f"| LOO cold refit, per training point: median (min-max); iterations median {np.median(cold_iters):.0f} | "
             f"{np.median(t_cold):.2f} ({min(t_cold):.2f}-{max(t_cold):.2f}) |")
    L.append(f"| all {len(M)} removals (PBRF + warm + cold) | {sum(t_pbrf) + sum(t_pbrf_failed) + sum(t_warm) + sum(t_cold):.0f} |")
    L.append("")
    L.append(f"Refits that ended with a ConvergenceWarning: {n_warn}. Every pair: {os.path.relpath(csv, os.path.dirname(HERE))}.")
    print("\n".join(L))

    if not args.no_plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("\nmatplotlib not installed: no figure")
            return
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        ring = np.broadcast_to(np.array([convex[int(m)] < 0 for m in M])[None, :], pbrf.shape)
        for ax, key, label in zip(axes, ("b", "warm", "cold"), ("(b) PBRF", "(c) LOO warm", "(c) LOO cold"), strict=True):
            actual = {"b": pbrf, "warm": warm, "cold": cold}[key]
            for i, t in enumerate(T):
                ax.scatter(pred[1.0][i], actual[i], s=12, label=f"test #{te[t]}")
            if ring.any():
                ax.scatter(pred[1.0][ring], actual[ring], s=40, facecolors="none", edgecolors="k", lw=0.7,
                           label="PBRF objective non-convex at theta_s")
            lim = np.nanmax(np.abs(flat["a"])) * 1.1
            ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, label="y = x")
            ax.set_xlim(-lim, lim)
            r, rho = corr(flat["a"], flat[key])
            ax.set_title(f"{label}: r = {r:.2f}, rho = {rho:.2f}", fontsize=10)
            ax.set_xlabel("influence -w_m S[t, m] (damped GN)")
            ax.set_ylabel("change of test loss")
        axes[0].legend(fontsize=7)
        fig.suptitle("64-16-10 tanh MLP on digits (n = 500): removing a training point", fontsize=11)
        fig.tight_layout()
        png = os.path.join(HERE, "networks_digits.png")
        fig.savefig(png, dpi=90)
        print(f"\nFigure: bench/networks_digits.png ({os.path.getsize(png) // 1024} KB)")


if __name__ == "__main__":
    main()
