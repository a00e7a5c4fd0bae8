"""Issue 14: scoring and solving at the machine's limit, measured side by side against the peers
(NumPy / SciPy floors and baselines, pyinfluence 0.5.0, kronfluence's EK-FAC), with the agreement of
every peer's scores with upweight's exact ones.

W1  binary logistic regression, n = 100000, d = 128, q = 500, l2 = 1e-3 (bench_scale.w1_data, i.e.
    bench_core.make_data). The model is fitted once (``uw.LogisticRegression(l2=1e-3).fit``, untimed,
    in a setup process) and saved to bench/out/perf_w1_model.npz and perf_w1_theta.npy; every job
    loads it.
      w1_gemm          the floor, NumPy only, five numbers from one process: ``Z @ V`` with Z = [X, 1]
                       (n x 129) and V (129 x 500), a fresh output each time, in float64 (gemm64, THE
                       floor of the table) and float32 (gemm32); the Hessian build ``Z.T @ (Z * h[:, None])``
                       with h = p (1 - p) at the fitted theta, float64 (hess64) and float32 (hess32); and
                       NumPy's cheapest float64 Hessian (hess64_syrk): ``Zs.T @ Zs`` with Zs = Z * sqrt(h)[:, None]
                       (the scaling timed), which NumPy hands to BLAS syrk (one triangle: half the flops).
      w1_full          upweight's full matrix: ``uw.Influence(model, X, y)`` (construction) + ``.on_loss(Xt, yt)``
                       (query).
      w1_top10_f64     ``uw.Influence(model, X, y).top_k(Xt, yt, k=10)``.
      w1_top10_f32     the same with X = X.astype(np.float32) (conversion untimed); its row is also
                       divided by the float32 floor gemm32 + hess32.
      w1_pyinfluence   pyinfluence 0.5.0: ``InfluenceFunctions(mode='loss', damping=0.0).fit(skm, X, y)``
                       (construction) then ``.explain(Xt, yt)`` (query), skm = bench_scale.sklearn_twin (a
                       scikit-learn LogisticRegression carrying upweight's optimum), as bench_scale.m_w1_pyinfluence.
      w1_kronfluence   kronfluence's EK-FAC as its users run it (see "kronfluence" below): factors
                       (``fit_all_factors``) and scores (``compute_pairwise_scores`` + ``load_pairwise_scores``)
                       timed separately and in total.
      w1_kronfluence_f32  (opt-in, ``--jobs``) the same at kronfluence's default precision: a float32
                       model and FactorArguments / ScoreArguments dtypes left at their defaults.
W2  multinomial logistic regression, n = 20000, d = 784, k = 10 (p = 7850), q = 100, l2 = 1e-3, on two
    data sets: "synthetic" = bench_scale.w2_data (nonnegative, ~80% zeros, harder conditioning) and
    "fmnist" = the first 20000 Fashion-MNIST training images (the IDX files in
    /usr/share/datasets/fashion-mnist, pixels / 255 as float64) with 100 queries, a seeded sample
    (default_rng(0)) of the 10000 test images. Fitted once per data set (upweight fits the multinomial
    model when y has more than 2 classes), saved to bench/out/perf_w2_<dataset>_model.npz / _theta.npy.
      w2_direct        ``uw.Influence(model, X, y, solver="direct")`` + ``.on_loss(Xt, yt)``.
      w2_cg_auto / w2_cg_none / w2_cg_jacobi
                       ``uw.Influence(model, X, y, solver="cg", rtol=1e-6, precondition=True / "none" / "jacobi")``
                       + ``.on_loss``; CG iterations (``solve_info.iterations``, mean / max) reported. For a
                       GLM True ("auto") measures once, on a seeded probe right-hand side, whether block
                       Jacobi (the inverse of each feature's k x k class block) or plain CG takes fewer
                       iterations, and uses the winner (``solve_info.preconditioned``, recorded).
      w2_ekfac / w2_kfac  upweight's approximate curvatures on the same model as a network without
                       hidden layers (``uw.MLPClassifier(hidden=(), l2=l2)`` carrying the fitted theta,
                       ``set_theta``): ``uw.Influence(net, X, y, curvature="ekfac" / "kfac", damping=0.0)``
                       + ``.on_loss``: the factors, their eigendecompositions (and EK-FAC's second pass for
                       the corrected eigenvalues), then the queries, whose true residuals against the exact
                       H take one more pass (``solve_info.residuals``, max reported).
      w2_ekfac_fast    the same with ``residuals=False``: no residual check (a product with H for the
                       100 queries, about 100 gradient passes' work), as kronfluence runs.
      w2_numpy_direct  NumPy / LAPACK: H from the 55 class-pair products ``Z.T @ (Z * w_ab[:, None])``
                       (w_ab = p_a (1[a = b] - p_b) / n) + 2 l2 on the coefficients (hessian), then
                       ``scipy.linalg.cho_factor`` (factor), then the query: per-example test gradients,
                       ``cho_solve`` and the scores -(g_m . v_t + pen . v_t) / n for all m
                       (bench_scale.multinomial_grads / multinomial_scores).
                       The null space: the full-k softmax is unchanged by adding one constant to every
                       class's intercept, so H is singular along N = (every intercept) / sqrt(k) (with
                       l2 > 0 that is the only null direction). upweight (and bench_scale.m_w2_parts) factor
                       H + s N N^T with s = mean(diag H); every gradient (test and train) and the penalty
                       gradient have no component along N (the residuals p - e_y sum to zero over the
                       classes; intercepts are not penalised), and H maps the complement of N into itself,
                       so (H + s N N^T)^{-1} g = H^+ g, the minimum-norm solve in the identifiable
                       subspace, for any s > 0. This baseline does the same; the agreement check verifies it.
      w2_scipy_cg      ``scipy.sparse.linalg.cg`` per query on bench_scale.MultinomialHVP (NumPy, matrix
                       free, two products with X per iteration, no preconditioner), rtol 1e-6, timed on the
                       first ``--scipy-queries`` (3) queries and EXTRAPOLATED to q (setup + q x the mean per
                       query + the scores of the solved queries x q / solved); the table says so.
      w2_kronfluence   kronfluence EK-FAC on nn.Linear(784, 10) with summed cross-entropy, same conventions
                       as W1's. (w2_kronfluence_f32 opt-in, as for W1.)

kronfluence (version recorded; 1.0.1 when this was written). As its documentation and examples run it:
a ``Task`` whose ``compute_train_loss(batch, model, sample)`` is the SUMMED loss of the batch
(BCE-with-logits on nn.Linear(128, 1), cross-entropy on nn.Linear(784, 10)), with labels drawn from
the model's own predictive distribution when ``sample=True`` (``FactorArguments.use_empirical_fisher``
left False: the "true" Fisher); ``compute_measurement`` = the summed loss of the query batch; the
linear layer wrapped in nn.Sequential (kronfluence's ``prepare_model`` recurses forever on a bare
nn.Linear root) holding the fitted theta; ``prepare_model(model, task)``; ``Analyzer(name, model, task,
cpu=True, disable_tqdm=True, output_dir=<tmp>)``; ``fit_all_factors(factors_name, dataset,
per_device_batch_size=4096, factor_args=FactorArguments(strategy="ekfac", ...))``;
``compute_pairwise_scores(scores_name, factors_name, query_dataset, train_dataset,
per_device_query_batch_size=q, per_device_train_batch_size=4096, score_args=ScoreArguments(...))``;
``load_pairwise_scores(scores_name)["all_modules"]`` (q x n). Datasets are TensorDatasets of the same
arrays; 4096 is kronfluence's own first batch-size attempt; all q queries in one query batch (one
pass over the training set). ``torch.set_num_threads(2)``, ``torch.manual_seed(0)`` (for the label
sampling). float64: kronfluence allows it (its own tests run it so): model .double() and every
dtype field (activation / gradient covariance, per-sample gradient, lambda, precondition, score,
query SVD) float64; ``covariance_max_examples`` / ``lambda_max_examples`` = None (all rows; the
default cap of 100000 is n for W1 anyway). The float32 variant (_f32 jobs) keeps kronfluence's defaults.

Damping / convention. upweight's H is the Hessian of the MEAN loss plus the penalty:
H = (1/n) sum_i h_i z_i z_i^T + 2 l2 M (M = 1 on coefficients, 0 on intercepts; for multinomial
h_i = diag(p_i) - p_i p_i^T, kron'ed with z_i z_i^T). kronfluence's covariances A = (1/N) sum a a^T,
S = (1/N) sum e e^T and its EK-FAC eigenvalues Lambda = (1/N) sum (Q^T g_i)^2 are all means over the
examples (it divides by the count), and for these GLMs the true Fisher of a summed-loss gradient is
exactly the mean-loss Hessian h_i z_i z_i^T (canonical link), so kronfluence's curvature approximates
the first term of H on the mean scale; it has no model of the penalty, and its damping is an isotropic
lambda I added to Lambda. The damping that makes its matrix approximate H as closely as it can is
therefore ``damping_factor = 2 l2`` (= 2e-3; NOT 2 l2 n), which differs from H only in also damping
the intercept(s) by 2 l2 (and in EK-FAC's own approximation and the label sampling). Its pairwise
score is K[t, m] = g_t^T (F + 2 l2 I)^{-1} g_m with per-example loss gradients (positive = helpful, no
1/n), so

    upweight   S[t, m] = -(g_t^T H^{-1} g_m + c_t) / n,   c_t = g_t^T H^{-1} (2 l2 M theta)
    kronfluence fixed conversion:  S ~ -(K + c_t) / n      (c_t: the renormalisation term upweight adds,
                                                           computed exactly by upweight's process)
    kronfluence raw conversion:    S ~ -K / n
    kronfluence fitted:            S ~ a K - c_t / n, a by least squares; "scale" reports -a n (1 = the
                                   fixed convention is right)
    pyinfluence: P = g_t^T H^{-1} g_m / n (its damping=0: the exact H); S = -P - c_t / n exactly
                 (fixed), S ~ -P (raw, drops the per-query offset), fitted as above ("scale" = -a).
The NumPy / SciPy baselines compute S in upweight's own convention. Agreement columns: Pearson r
over the saved entries, max |S_peer - S| / max |S|, and the top-10 overlap (mean over queries of
|the peer's 10 most helpful training points, from its FULL row, ∩ upweight's| / 10; a per-query
offset or a positive scale changes no ranking). Each peer's process saves (untimed, round 1 only)
every ``--stride``-th (20th) column of its score matrix, its top-10, and upweight's reference process
the offsets c_t, to a temporary directory; the check runs untimed in the parent after each round.
The reference is w1_full (W1) and w2_direct (W2). Checked once at --quick size: with the exact H in
place of kronfluence's, the fixed conversion reproduces S to 1e-14, and kronfluence's K agrees with an
EK-FAC computed in NumPy from the exact expected Fisher (no label sampling) to r > 0.99; what is left
between kronfluence and upweight (r ~ 0.85 on W2 there) is EK-FAC's own approximation of H.

Measurement rules (bench/RESULTS.md; as bench/w4_networks.py): every measurement runs in its own
process (data generated or read and the model loaded there, untimed); the timed call runs
``--repeat`` times (W1; default 2) or ``--repeat-w2`` times (W2; default 1, its jobs take 10-200 s)
after one untimed warm-up on a small slice (thread pools, first-call costs), best kept per phase and
for the total; the jobs of a workload are interleaved over ``--rounds`` (3) rounds, their order
reversed every other round; the load from other processes (/proc/loadavg, others' CPU in the second
before and during the run) is recorded per run; a run is quiet when others used < ``--quiet-cpu`` (15)
% of one core before and during it. Tables show the median over quiet runs and the median over all
runs. Every NumPy / SciPy / pyinfluence / torch (kronfluence) process runs with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE removed from its environment (whether they were set is recorded); upweight's processes
run with the environment as it is. Every process records threadpoolctl.threadpool_info()'s OpenBLAS
"architecture" (the kernel that ran) after its job.

    python bench/perf_peers.py [--quick] [--only W1|W2] [--jobs w1_full,w2_direct,...] [--datasets synthetic,fmnist]
                               [--rounds 3] [--repeat 2] [--repeat-w2 1] [--scipy-queries 3] [--quiet-cpu 15] [--refit]
    python bench/perf_peers.py --report bench/out/perf_peers_<stamp>.json     # re-render the tables
    python bench/perf_peers.py --profile w1_full [--dataset fmnist]           # perf record -g one job, top symbols

``--quick``: W1 n = 5000, q = 50; W2 n = 2000, q = 20, d = 196 (synthetic) / Fashion-MNIST 2 x 2
average-pooled to 14 x 14; 1 round, repeat 1: a smoke run. Writes bench/out/perf_peers_<stamp>.json
(rewritten after every run) and prints Markdown tables; ``--profile`` writes bench/out/profile_<job>.txt.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from ab_restructure import BLAS_VARS, env_for, load_before, now, repeat_timed  # this folder is on sys.path when run as a script
from bench_scale import (
    MultinomialHVP,
    multinomial_grads,
    multinomial_hessian,
    multinomial_scores,
    peak_mib,
    process_peak_mib,
    reset_peak,
    sklearn_twin,
    w1_data,
    w2_data,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FMNIST = Path("/usr/share/datasets/fashion-mnist")

FULL = {
    "W1": {"n": 100_000, "d": 128, "q": 500, "l2": 1e-3, "stride": 20, "k_top": 10, "batch": 4096},
    "W2": {"n": 20_000, "d": 784, "k": 10, "q": 100, "l2": 1e-3, "rtol": 1e-6, "stride": 20, "k_top": 10, "batch": 4096,
           "pool": False},
}
QUICK = {
    "W1": {"n": 5_000, "d": 128, "q": 50, "l2": 1e-3, "stride": 20, "k_top": 10, "batch": 4096},
    "W2": {"n": 2_000, "d": 196, "k": 10, "q": 20, "l2": 1e-3, "rtol": 1e-6, "stride": 20, "k_top": 10, "batch": 4096,
           "pool": True},
}

# job -> (workload, library whose environment it runs in, what it is)
JOBS = {
    "w1_gemm": ("W1", "numpy", "floor: NumPy Z @ V and Hessian build Z.T @ (Z * h), float64 and float32"),
    "w1_full": ("W1", "upweight", "upweight full S: `Influence(model, X, y)` + `.on_loss(Xt, yt)`"),
    "w1_top10_f64": ("W1", "upweight", "upweight top-10, float64: `Influence(...).top_k(Xt, yt, k=10)`"),
    "w1_top10_f32": ("W1", "upweight", "upweight top-10, X float32"),
    "w1_pyinfluence": ("W1", "pyinfluence", "pyinfluence `InfluenceFunctions(mode='loss', damping=0)` fit + explain"),
    "w1_kronfluence": ("W1", "kronfluence", "kronfluence EK-FAC, float64: factors + pairwise scores"),
    "w1_kronfluence_f32": ("W1", "kronfluence", "kronfluence EK-FAC, its default float32"),
    "w2_direct": ("W2", "upweight", "upweight `solver='direct'`: `Influence(...)` + `.on_loss`"),
    "w2_cg_auto": ("W2", "upweight", "upweight `solver='cg'`, rtol 1e-6, `precondition=True` (auto)"),
    "w2_cg_none": ("W2", "upweight", "upweight `solver='cg'`, rtol 1e-6, `precondition='none'`"),
    "w2_cg_jacobi": ("W2", "upweight", "upweight `solver='cg'`, rtol 1e-6, `precondition='jacobi'`"),
    "w2_numpy_direct": ("W2", "numpy", "NumPy H (55 products) + SciPy cho_factor / cho_solve + NumPy scores"),
    "w2_scipy_cg": ("W2", "scipy", "SciPy `sparse.linalg.cg` per query, NumPy matrix-free HVP"),
    "w2_kronfluence": ("W2", "kronfluence", "kronfluence EK-FAC, float64: factors + pairwise scores"),
    "w2_kronfluence_f32": ("W2", "kronfluence", "kronfluence EK-FAC, its default float32"),
    "w2_ekfac": ("W2", "upweight", "upweight EK-FAC, approximate: `Influence(net, X, y, curvature='ekfac', damping=0)` + `.on_loss`"),
    "w2_ekfac_fast": ("W2", "upweight", "upweight EK-FAC without the residual check: `curvature='ekfac', residuals=False`"),
    "w2_kfac": ("W2", "upweight", "upweight K-FAC, approximate: `curvature='kfac'`"),
}
OPT_IN = ("w1_kronfluence_f32", "w2_kronfluence_f32")
DEFAULT_JOBS = [j for j in JOBS if j not in OPT_IN]
#: the agreement reference of each workload (upweight's exact scores)
REFERENCE = {"W1": "w1_full", "W2": "w2_direct"}
#: how each job's saved scores convert to upweight's S: "S" (already S), "py" (pyinfluence's P), "kf" (kronfluence's K)
CONVENTION = {"w1_pyinfluence": "py", "w1_kronfluence": "kf", "w1_kronfluence_f32": "kf", "w2_kronfluence": "kf",
              "w2_kronfluence_f32": "kf"}


# ---------------------------------------------------------------------------------------------
# data and the fitted models (inside the measuring process, untimed)
# ---------------------------------------------------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip): magic 0, 0, type 0x08 (uint8), ndim; big-endian int32 dims; the data."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fmnist_data(c):
    """The first n training images and a seeded sample of q test images, pixels / 255 (float64);
    with c["pool"] (--quick) 2 x 2 average-pooled to 14 x 14."""
    n, q = c["n"], c["q"]
    X = read_idx(FMNIST / "train-images-idx3-ubyte.gz")[:n].astype(np.float64) / 255.0
    y = read_idx(FMNIST / "train-labels-idx1-ubyte.gz")[:n].astype(np.float64)
    Xt_all = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")
    yt_all = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz")
    pick = np.sort(np.random.default_rng(0).choice(Xt_all.shape[0], q, replace=False))
    Xt, yt = Xt_all[pick].astype(np.float64) / 255.0, yt_all[pick].astype(np.float64)
    if c["pool"]:
        X = X.reshape(n, 14, 2, 14, 2).mean(axis=(2, 4))
        Xt = Xt.reshape(q, 14, 2, 14, 2).mean(axis=(2, 4))
    return np.ascontiguousarray(X.reshape(n, -1)), y, np.ascontiguousarray(Xt.reshape(q, -1)), yt


def load_data(c):
    if c["workload"] == "W1":
        return w1_data(c)
    if c["dataset"] == "fmnist":
        return fmnist_data(c)
    return w2_data(c)


def model_stem(c) -> Path:
    tag = "w1" if c["workload"] == "W1" else f"w2_{c['dataset']}"
    return OUT / f"perf_{tag}{'_quick' if c['quick'] else ''}"


def load_model(c):
    import upweight as uw

    return uw.load_model(str(model_stem(c)) + "_model.npz")


def load_theta(c) -> np.ndarray:
    """The fitted parameters, (d + 1,) or (k, d + 1), intercept last (no upweight import)."""
    return np.load(str(model_stem(c)) + "_theta.npy")


def penalty_grad(theta: np.ndarray, l2: float) -> np.ndarray:
    """2 l2 M theta, flattened as upweight flattens theta (intercepts unpenalised)."""
    t = np.array(theta, dtype=np.float64, ndmin=2)
    pen = 2.0 * l2 * t
    pen[:, -1] = 0.0
    return pen.reshape(-1)


def top_helpful(A: np.ndarray, largest: bool, k: int) -> np.ndarray:
    """Per row, the indices of the k most helpful entries (largest or smallest first)."""
    B = -A if largest else A
    part = np.argpartition(B, k - 1, axis=1)[:, :k]
    order = np.argsort(np.take_along_axis(B, part, 1), axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


def save_scores(c, A: np.ndarray, largest: bool, **extra) -> None:
    """The agreement files (untimed): every stride-th column of A, its top-10 helpful indices."""
    if not c.get("save"):
        return
    idx = top_helpful(A, largest, c["k_top"])
    np.savez(c["save"], sub=np.ascontiguousarray(A[:, ::c["stride"]]), helpful_idx=idx,
             helpful=np.take_along_axis(A, idx, 1), **extra)


# ---------------------------------------------------------------------------------------------
# jobs: job(c) -> (once, finish); once() -> (phase times, info); finish() -> info (untimed)
# ---------------------------------------------------------------------------------------------


def job_setup(c):
    """Fit the workload's model once and save it (upweight's .npz and theta as .npy)."""
    import upweight as uw

    X, y, Xt, yt = load_data(c)

    def once():
        t0 = now()
        model = uw.LogisticRegression(l2=c["l2"]).fit(X, y)
        t1 = now()
        OUT.mkdir(exist_ok=True)
        uw.save_model(model, str(model_stem(c)) + "_model.npz", force=True)
        np.save(str(model_stem(c)) + "_theta.npy", np.asarray(model.theta_, dtype=np.float64))
        return {"fit": t1 - t0}, {"n_iter": int(model.n_iter_), "grad_norm": float(model.grad_norm_), "p": int(model.theta_.size),
                                  "n_classes": int(model.n_classes), "train_accuracy": float(model.score(X, y)),
                                  "test_accuracy": float(model.score(Xt, yt)), "d": int(X.shape[1]),
                                  "zero_fraction": float(np.mean(X == 0))}
    return once, None


def job_w1_gemm(c):
    X, _, _, _ = load_data(c)
    theta = load_theta(c)
    n, d, q = X.shape[0], X.shape[1], c["q"]
    Z = np.hstack([X, np.ones((n, 1))])
    del X
    V = np.random.default_rng(1).standard_normal((d + 1, q))
    pr = 1.0 / (1.0 + np.exp(-(Z @ theta)))
    h = pr * (1.0 - pr)
    Z32, V32, h32 = Z.astype(np.float32), V.astype(np.float32), h.astype(np.float32)
    for a, b, w in ((Z, V, h), (Z32, V32, h32)):  # warm-up (untimed)
        a[:512] @ b
        a[:512].T @ (a[:512] * w[:512, None])
        zs = a[:512] * np.sqrt(w[:512])[:, None]
        zs.T @ zs

    def once():
        ph = {}
        for name, a, b, w in (("64", Z, V, h), ("32", Z32, V32, h32)):
            t0 = now()
            P = a @ b
            ph["gemm" + name] = now() - t0
            del P
            t0 = now()
            H = a.T @ (a * w[:, None])
            ph["hess" + name] = now() - t0
            del H
            if name == "64":
                t0 = now()
                zs = a * np.sqrt(w)[:, None]
                H = zs.T @ zs
                ph["hess64_syrk"] = now() - t0
                del H, zs
        return ph | {"total": ph["gemm64"]}, {"shape_Z": [n, d + 1], "q": q}
    return once, None


def _w1_upweight(c, top: bool, f32: bool = False):
    import upweight as uw

    X, y, Xt, yt = load_data(c)
    model = load_model(c)
    if f32:
        X = X.astype(np.float32)  # the data as it would be stored; the float64 copy is dropped
    k = c["k_top"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warm-up (untimed) on a slice, not at its optimum: NotAtOptimumWarning
        w = uw.Influence(model, X[:2048], y[:2048])
        if top:
            w.top_k(Xt[:8], yt[:8], k=k)
        else:
            w.on_loss(Xt[:8], yt[:8])
    last = {}

    def once():
        last.clear()
        t0 = now()
        inf = uw.Influence(model, X, y)
        t1 = now()
        last["res"] = inf.top_k(Xt, yt, k=k) if top else inf.on_loss(Xt, yt)
        t2 = now()
        last["inf"] = inf
        return {"build": t1 - t0, "query": t2 - t1}, {"threads": uw.num_threads(), "solver": inf.solver,
                                                      "grad_norm": float(inf.grad_norm), "X_dtype": str(X.dtype)}

    def finish():
        if not c.get("save"):
            return {}
        inf, res = last["inf"], last["res"]
        if top:
            np.savez(c["save"], helpful_idx=res.helpful_idx, helpful=res.helpful)
            return {}
        off = inf.loss_grads(Xt, yt) @ inf.inverse_hvp(penalty_grad(model.get_theta(), c["l2"]))
        save_scores(c, res, False, offsets=off)
        return {}
    return once, finish


def job_w1_full(c):
    return _w1_upweight(c, False)


def job_w1_top10_f64(c):
    return _w1_upweight(c, True)


def job_w1_top10_f32(c):
    return _w1_upweight(c, True, True)


def job_w1_pyinfluence(c):
    import pyinfluence

    X, y, Xt, yt = load_data(c)
    theta = load_theta(c)
    skm = sklearn_twin(theta, c["n"], c["l2"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyinfluence.InfluenceFunctions(mode="loss", damping=0.0).fit(skm, X[:2048], y[:2048]).explain(Xt[:4], yt[:4])  # warm-up
    last = {}

    def once():
        last.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = now()
            # damping=0: the exact Hessian of the shared objective (its default adds 1e-5 I)
            att = pyinfluence.InfluenceFunctions(mode="loss", damping=0.0).fit(skm, X, y)
            t1 = now()
            last["P"] = att.explain(Xt, yt)
            t2 = now()
        return {"build": t1 - t0, "query": t2 - t1}, {"version": pyinfluence.__version__,
                                                      "warnings": sorted({str(w.message)[:160] for w in caught})}

    def finish():
        save_scores(c, np.asarray(last["P"]), True)
        return {}
    return once, finish


def kron_task(binary: bool):
    """The kronfluence Task: the summed loss of a batch; with ``sample`` (fitting the factors with
    use_empirical_fisher=False) the labels are drawn from the model's own distribution (the true Fisher)."""
    import torch
    import torch.nn.functional as F
    from kronfluence.task import Task

    class GLMTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if binary:
                logits = logits.squeeze(-1)
                if sample:
                    with torch.no_grad():
                        y = torch.bernoulli(torch.sigmoid(logits.detach()))
                return F.binary_cross_entropy_with_logits(logits, y, reduction="sum")
            if sample:
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits.detach(), dim=-1), num_samples=1).flatten()
            return F.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            logits = model(x)
            if binary:
                return F.binary_cross_entropy_with_logits(logits.squeeze(-1), y, reduction="sum")
            return F.cross_entropy(logits, y, reduction="sum")

    return GLMTask()


def _kronfluence(c, f32: bool):
    import logging

    import kronfluence
    import torch
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from torch import nn
    from torch.utils.data import TensorDataset

    logging.disable(logging.WARNING)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    X, y, Xt, yt = load_data(c)
    theta = load_theta(c)
    binary = c["workload"] == "W1"
    T = theta.reshape(1 if binary else -1, X.shape[1] + 1)
    dt = torch.float32 if f32 else torch.float64
    npdt = np.float32 if f32 else np.float64
    lin = nn.Linear(X.shape[1], T.shape[0])
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(T[:, :-1]))
        lin.bias.copy_(torch.from_numpy(T[:, -1]))
    model = nn.Sequential(lin).to(dt)  # a bare nn.Linear root makes prepare_model recurse forever
    task = kron_task(binary)
    model = prepare_model(model, task)

    def ds(A, b):
        return TensorDataset(torch.from_numpy(A.astype(npdt)), torch.from_numpy(b.astype(npdt) if binary else b.astype(np.int64)))

    train, query = ds(X, y), ds(Xt, yt)
    warm_train, warm_query = ds(X[:1024], y[:1024]), ds(Xt[:4], yt[:4])
    damping = 2.0 * c["l2"]
    if f32:
        fargs = FactorArguments(strategy="ekfac", covariance_max_examples=None, lambda_max_examples=None)
        sargs = ScoreArguments(damping_factor=damping)
    else:
        f64 = torch.float64
        fargs = FactorArguments(strategy="ekfac", covariance_max_examples=None, lambda_max_examples=None,
                                activation_covariance_dtype=f64, gradient_covariance_dtype=f64, per_sample_gradient_dtype=f64,
                                lambda_dtype=f64, eigendecomposition_dtype=f64)
        sargs = ScoreArguments(damping_factor=damping, per_sample_gradient_dtype=f64, precondition_dtype=f64, score_dtype=f64,
                               query_gradient_svd_dtype=f64)
    tmp = tempfile.mkdtemp(prefix="perf_peers_kf_")
    analyzer = Analyzer(analysis_name="perf_peers", model=model, task=task, cpu=True, disable_tqdm=True, output_dir=tmp)
    b, q = c["batch"], c["q"]

    def run(name, tr, qu, qb):
        t0 = now()
        analyzer.fit_all_factors(factors_name=f"ekfac_{name}", dataset=tr, per_device_batch_size=b, factor_args=fargs,
                                 overwrite_output_dir=True)
        t1 = now()
        analyzer.compute_pairwise_scores(scores_name=f"scores_{name}", factors_name=f"ekfac_{name}", query_dataset=qu, train_dataset=tr,
                                         per_device_query_batch_size=qb, per_device_train_batch_size=b, score_args=sargs,
                                         overwrite_output_dir=True)
        t2 = now()
        K = analyzer.load_pairwise_scores(scores_name=f"scores_{name}")["all_modules"]
        t3 = now()
        return K, t1 - t0, t2 - t1, t3 - t2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run("warm", warm_train, warm_query, 4)  # warm-up (untimed): a small analysis of its own
    last = {}

    def once():
        last.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.cuda.amp deprecation warnings from kronfluence
            K, tf, ts, tl = run("main", train, query, q)
        last["K"] = K
        return {"build": tf, "query": ts + tl}, {
            "version": getattr(kronfluence, "__version__", "?"), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "dtype": str(dt), "score_dtype": str(K.dtype), "damping_factor": damping, "strategy": "ekfac",
            "use_empirical_fisher": fargs.use_empirical_fisher, "batch": b, "query_batch": q, "load_s": tl, "shape": list(K.shape)}

    def finish():
        save_scores(c, last["K"].to(torch.float64).numpy(), True)
        shutil.rmtree(tmp, ignore_errors=True)
        return {}
    return once, finish


def job_w1_kronfluence(c):
    return _kronfluence(c, False)


def job_w1_kronfluence_f32(c):
    return _kronfluence(c, True)


def job_w2_kronfluence(c):
    return _kronfluence(c, False)


def job_w2_kronfluence_f32(c):
    return _kronfluence(c, True)


def _w2_upweight(c, solver: str, precondition=True):
    import upweight as uw

    X, y, Xt, yt = load_data(c)
    model = load_model(c)
    kw = {"rtol": c["rtol"], "precondition": precondition} if solver == "cg" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # warm-up (untimed) on a slice: not at its optimum, CG may stop early
        uw.Influence(model, X[:512], y[:512], solver="cg", rtol=1e-2, max_iter=5, on_unconverged="warn").on_loss(Xt[:2], yt[:2])
    last = {}

    def once():
        last.clear()
        t0 = now()
        inf = uw.Influence(model, X, y, solver=solver, **kw)
        t1 = now()
        S = inf.on_loss(Xt, yt)
        t2 = now()
        last.update(inf=inf, S=S)
        info = {"threads": uw.num_threads(), "solver": inf.solver, "max_residual": float(inf.solve_info.max_residual)}
        if solver == "cg":
            it = inf.solve_info.iterations
            info |= {"iter_mean": float(np.mean(it)), "iter_max": int(np.max(it)), "iter_min": int(np.min(it)),
                     "precondition": precondition, "preconditioned": inf.solve_info.preconditioned}
        return {"build": t1 - t0, "query": t2 - t1}, info

    def finish():
        if c.get("save"):
            inf = last["inf"]
            off = inf.loss_grads(Xt, yt) @ inf.inverse_hvp(penalty_grad(model.get_theta(), c["l2"]))
            save_scores(c, last["S"], False, offsets=off)
        return {}
    return once, finish


def _w2_kronecker(c, curvature: str, residuals: bool = True):
    import upweight as uw

    X, y, Xt, yt = load_data(c)
    net = uw.MLPClassifier(hidden=(), l2=c["l2"])
    net.set_theta(load_model(c).get_theta(), n_features=X.shape[1])
    uw.Influence(net, X[:512], y[:512], curvature=curvature, damping=0.0).on_loss(Xt[:2], yt[:2])  # warm-up (untimed)
    last = {}

    def once():
        last.clear()
        t0 = now()
        inf = uw.Influence(net, X, y, curvature=curvature, damping=0.0, residuals=residuals)
        t1 = now()
        S = inf.on_loss(Xt, yt)
        t2 = now()
        last["S"] = S
        return {"build": t1 - t0, "query": t2 - t1}, {"threads": uw.num_threads(), "solver": inf.solver,
                                                      "max_residual": float(inf.solve_info.max_residual)}

    def finish():
        save_scores(c, last["S"], False)
        return {}
    return once, finish


def job_w2_ekfac(c):
    return _w2_kronecker(c, "ekfac")


def job_w2_ekfac_fast(c):
    return _w2_kronecker(c, "ekfac", residuals=False)


def job_w2_kfac(c):
    return _w2_kronecker(c, "kfac")


def job_w2_direct(c):
    return _w2_upweight(c, "direct")


def job_w2_cg_auto(c):
    return _w2_upweight(c, "cg", True)


def job_w2_cg_none(c):
    return _w2_upweight(c, "cg", "none")


def job_w2_cg_jacobi(c):
    return _w2_upweight(c, "cg", "jacobi")


def job_w2_numpy_direct(c):
    import scipy.linalg

    X, y, Xt, yt = load_data(c)
    theta = load_theta(c).reshape(-1)
    d = X.shape[1]
    r = d + 1
    k = theta.size // r
    p = theta.size
    multinomial_hessian(theta, X[:256], c["l2"])  # warm-up (untimed)
    scipy.linalg.cho_factor(np.eye(64) * 2.0 + 0.1, lower=True)
    last = {}

    def once():
        last.clear()
        t0 = now()
        H = multinomial_hessian(theta, X, c["l2"])
        t1 = now()
        # the null direction (every class's intercept), scaled as upweight does: H + mean(diag H) N N^T
        N = np.zeros(p)
        N[d::r] = 1.0 / np.sqrt(k)
        H += np.mean(np.diag(H)) * np.outer(N, N)
        F = scipy.linalg.cho_factor(H, lower=True, overwrite_a=True, check_finite=False)
        t2 = now()
        G = multinomial_grads(theta, Xt, yt)
        V = scipy.linalg.cho_solve(F, G.T, check_finite=False)
        S = multinomial_scores(theta, X, y, V, c["l2"])
        t3 = now()
        last["S"] = S
        return {"hessian": t1 - t0, "factor": t2 - t1, "query": t3 - t2}, {"scipy": scipy.__version__}

    def finish():
        save_scores(c, last["S"], False)
        return {}
    return once, finish


def job_w2_scipy_cg(c):
    import scipy
    import scipy.sparse.linalg as sla

    X, y, Xt, yt = load_data(c)
    theta = load_theta(c).reshape(-1)
    p, q = theta.size, c["q"]
    s = max(1, min(c["scipy_queries"], q))
    MultinomialHVP(theta, X[:256], c["l2"])(np.ones(p))  # warm-up (untimed)
    last = {}

    def once():
        last.clear()
        t0 = now()
        hvp = MultinomialHVP(theta, X, c["l2"])
        A = sla.LinearOperator((p, p), matvec=hvp, dtype=np.float64)
        G = multinomial_grads(theta, Xt[:s], yt[:s])
        t1 = now()
        iters, V = [], []
        for j in range(s):
            count = [0]

            def cb(_xk, count=count):
                count[0] += 1

            x, info = sla.cg(A, G[j], rtol=c["rtol"], maxiter=20 * p, callback=cb)
            if info != 0:
                raise RuntimeError(f"scipy cg did not converge on query {j} (info {info})")
            iters.append(count[0])
            V.append(x)
        t2 = now()
        V = np.stack(V, 1)
        S = multinomial_scores(theta, X, y, V, c["l2"])
        t3 = now()
        last["S"] = S
        res = [float(np.linalg.norm(hvp(V[:, j]) - G[j]) / np.linalg.norm(G[j])) for j in range(s)]
        setup, solve, score = t1 - t0, t2 - t1, t3 - t2
        total = setup + solve / s * q + score * q / s
        return {"build": setup, "solve_measured": solve, "score_measured": score, "total": total}, {
            "scipy": scipy.__version__, "queries_timed": s, "queries": q, "extrapolated": s < q, "per_query_s": solve / s,
            "query": total - setup, "iter_mean": float(np.mean(iters)), "iter_max": int(max(iters)), "max_residual": max(res)}

    def finish():
        save_scores(c, last["S"], False)
        return {}
    return once, finish


# ---------------------------------------------------------------------------------------------
# one measurement (the child process)
# ---------------------------------------------------------------------------------------------


def blas_info() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: v for k, v in i.items() if k in ("internal_api", "prefix", "version", "architecture", "num_threads", "threading_layer")}
            for i in threadpool_info()]


def run_one(job: str, c: dict) -> dict:
    fn = globals()["job_" + ("setup" if job.startswith("setup") else job)]
    once, finish = fn(c)
    if c.get("ready_file"):  # --profile: say so, then wait for perf to attach before the timed calls
        Path(c["ready_file"]).write_text(str(os.getpid()))
        t_wait = now()
        while not Path(c["go_file"]).exists() and now() - t_wait < 120:
            time.sleep(0.02)
    gc.collect()
    reset_ok = reset_peak()
    best, times, info, during = repeat_timed(once, c["repeat"])
    peak_call = peak_mib() if reset_ok else None
    if finish is not None:
        info = info | finish()
    return {"job": job, "best": best, "times": times, "during": during, "info": info, "peak_call_mib": peak_call,
            "peak_process_mib": process_peak_mib(),
            "blas": blas_info(), "blas_env": {v: os.environ.get(v) for v in BLAS_VARS}}


# ---------------------------------------------------------------------------------------------
# orchestration
# ---------------------------------------------------------------------------------------------


def versions() -> dict:
    code = ("import json, platform, numpy, scipy, torch, upweight\n"
            "def v(m):\n"
            "    try:\n"
            "        return __import__(m).__version__\n"
            "    except Exception as e:\n"
            "        return 'missing: ' + type(e).__name__\n"
            "print(json.dumps({'python': platform.python_version(), 'numpy': numpy.__version__, 'scipy': scipy.__version__, "
            "'torch': torch.__version__, 'kronfluence': v('kronfluence'), 'pyinfluence': v('pyinfluence'), "
            "'sklearn': v('sklearn'), 'upweight': upweight.__version__, 'upweight_file': upweight.__file__, "
            "'upweight_threads': upweight.num_threads()}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env_for("numpy"))
    d = json.loads(r.stdout.strip().splitlines()[-1])
    cpu = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
    d.update({"cpu": cpu[0] if cpu else platform.processor(), "cores": os.cpu_count(), "executable": sys.executable,
              "blas_env_set": {v: os.environ.get(v) for v in BLAS_VARS}})
    return d


def job_config(args, workload: str, dataset: str | None, job: str, repeat: int | None = None, save: str | None = None) -> dict:
    c = dict((QUICK if args.quick else FULL)[workload])
    c.update(workload=workload, dataset=dataset, quick=args.quick, scipy_queries=args.scipy_queries,
             repeat=repeat if repeat is not None else (args.repeat if workload == "W1" else args.repeat_w2))
    if save:
        c["save"] = save
    return c


def child_cmd(job: str, c: dict) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--one", job, "--cfg", json.dumps(c)]


def run_process(job: str, c: dict, args, rec: dict) -> dict:
    lib = "upweight" if job.startswith("setup") else JOBS[job][1]
    rec.update(workload=c["workload"], dataset=c["dataset"], lib=lib, repeat=c["repeat"])
    rec["load_before"] = load_before()
    t0 = now()
    try:
        r = subprocess.run(child_cmd(job, c), capture_output=True, text=True, timeout=args.timeout, env=env_for(lib), cwd=str(HERE))
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"rc {r.returncode}")
        rec.update(json.loads(r.stdout.strip().splitlines()[-1]))
        rec["quiet"] = rec["load_before"]["others_cpu_pct"] < args.quiet_cpu and rec["during"]["others_cpu_pct"] < args.quiet_cpu
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, IndexError) as exc:
        rec["error"] = str(exc)[-2000:]
    rec["process_wall_s"] = now() - t0
    return rec


def log(t_start: float, rec: dict) -> None:
    if "error" in rec:
        msg = f"ERROR {rec['error'][-300:]}"
    else:
        ph = ", ".join(f"{k} {v:.3f}" for k, v in rec["best"].items() if k != "total")
        msg = (f"best {rec['best']['total']:.3f} s ({ph})  others before {rec['load_before']['others_cpu_pct']:.0f}% "
               f"during {rec['during']['others_cpu_pct']:.0f}%  load {rec['load_before']['loadavg'][0]:.2f}"
               f"{'' if rec['quiet'] else '  NOT QUIET'}")
    ds = f"/{rec['dataset']}" if rec.get("dataset") else ""
    print(f"[{now() - t_start:6.0f} s] {rec.get('round', '-')} {rec['job'] + ds:26s}: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# agreement (untimed, in the parent, from the files the processes saved in round 1)
# ---------------------------------------------------------------------------------------------


def _metrics(A: np.ndarray, S: np.ndarray) -> dict:
    a, s = A.reshape(-1), S.reshape(-1)
    r = float(np.corrcoef(a, s)[0, 1]) if np.std(a) > 0 and np.std(s) > 0 else float("nan")
    return {"pearson": r, "max_rel": float(np.max(np.abs(A - S)) / np.max(np.abs(S)))}


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b, strict=True)]))


def agreement(files: dict[str, Path], ref_job: str, n: int) -> dict:
    """Per job, its scores converted to upweight's S (see the module docstring) against the reference's."""
    if ref_job not in files or not files[ref_job].exists():
        return {}
    ref = np.load(files[ref_job])
    S, off, top = ref["sub"], ref["offsets"], ref["helpful_idx"]
    out = {}
    for job, f in files.items():
        if job == ref_job or not f.exists():
            continue
        z = np.load(f)
        if "sub" not in z:  # a top-k job: its k most helpful against the reference's
            q = z["helpful_idx"].shape[0]
            out[job] = {"rows": [{"conversion": "S (top-k)", "top10": _overlap(z["helpful_idx"], top[:q]),
                                  "max_rel": float(np.max(np.abs(z["helpful"] - ref["helpful"][:q])) / np.max(np.abs(S[:q])))}]}
            continue
        A = z["sub"]
        q = A.shape[0]  # SciPy's cg: only the solved queries
        Sq, oq = S[:q], off[:q, None] / n
        conv = CONVENTION.get(job, "S")
        rows = []
        if conv == "S":
            rows.append({"conversion": "S (same convention)"} | _metrics(A, Sq))
        else:
            # fixed: S = -P - c/n (pyinfluence, P has the 1/n) or S = -(K + c)/n (kronfluence, no 1/n)
            unit = -1.0 if conv == "py" else -1.0 / n
            rows.append({"conversion": "fixed: " + ("-P - c_t/n" if conv == "py" else "-(K + c_t)/n"), "scale": 1.0}
                        | _metrics(unit * A - oq, Sq))
            rows.append({"conversion": "raw: " + ("-P" if conv == "py" else "-K/n")} | _metrics(unit * A, Sq))
            a = float(np.sum(A * (Sq + oq)) / np.sum(A * A))  # least squares: S + c/n ~ a A
            rows.append({"conversion": "fitted: a " + ("P" if conv == "py" else "K") + " - c_t/n", "scale": a / unit}
                        | _metrics(a * A - oq, Sq))
        top10 = _overlap(z["helpful_idx"], top[:q])
        for r in rows:
            r["top10"] = top10
        out[job] = {"rows": rows, "queries": int(q), "columns": int(A.shape[1])}
    return out


# ---------------------------------------------------------------------------------------------
# summaries and tables
# ---------------------------------------------------------------------------------------------


def group_key(workload: str, dataset: str | None) -> str:
    return workload if not dataset else f"{workload}/{dataset}"


def summarize(doc: dict) -> dict:
    """Per workload (and data set), per job, per phase: the median of the per-run best over quiet runs and over all runs."""
    summ: dict[str, dict] = {}
    for r in doc["runs"]:
        if "best" not in r or r["job"].startswith("setup"):
            continue
        g = summ.setdefault(group_key(r["workload"], r["dataset"]), {})
        g.setdefault(r["job"], []).append(r)
    out = {}
    for g, jobs in summ.items():
        out[g] = {}
        for job, runs in jobs.items():
            quiet = [r for r in runs if r["quiet"]]
            row = {"n_quiet": len(quiet), "n_all": len(runs), "phases": {}}
            for ph in runs[0]["best"]:
                row["phases"][ph] = {"quiet": statistics.median([r["best"][ph] for r in quiet]) if quiet else None,
                                     "all": statistics.median([r["best"][ph] for r in runs])}
            info = runs[-1]["info"]
            for key in ("iter_mean", "iter_max", "queries_timed", "queries", "extrapolated", "dtype", "max_residual"):
                if key in info:
                    row[key] = info[key]
            if "query" in info and "query" not in row["phases"]:  # SciPy's extrapolated query time
                row["phases"]["query"] = {"quiet": None, "all": statistics.median([r["info"]["query"] for r in runs])}
                if quiet:
                    row["phases"]["query"]["quiet"] = statistics.median([r["info"]["query"] for r in quiet])
            out[g][job] = row
    return out


def fmt_s(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _med(row: dict, ph: str = "total") -> tuple[float | None, bool]:
    """The quiet median if there is one, else the all-run median (flagged False)."""
    p = row["phases"].get(ph)
    if p is None:
        return None, False
    return (p["quiet"], True) if p["quiet"] is not None else (p["all"], False)


def _ratio(a, b) -> str:
    (x, qa), (y, qb) = a, b
    if x is None or y is None or y == 0:
        return ""
    return f"{x / y:.2f}" + ("" if qa and qb else "*")


def _agree_cells(ag: dict | None, reference: bool = False) -> str:
    if reference:
        return "| (reference) | | "
    if not ag:
        return "| | | "
    r = ag["rows"][0]
    pr = f"{r['pearson']:.6f}" if "pearson" in r else ""
    return f"| {pr} | {r['max_rel']:.1e} | {r['top10']:.2f} "


def render_group(doc: dict, g: str, summ: dict) -> list[str]:
    workload = g.split("/")[0]
    c = job_config_from_doc(doc, workload)
    ag = doc.get("agreement", {}).get(g, {})
    L = []
    if workload == "W1":
        L += [f"### W1: binary logistic, n = {c['n']}, d = {c['d']}, q = {c['q']}, l2 = {c['l2']:g}", ""]
    else:
        ds = g.split("/")[1]
        what = ("Fashion-MNIST (first n training images, q seeded test images" + (", 2 x 2 pooled" if c["pool"] else "") + ")"
                if ds == "fmnist" else "synthetic (bench_scale.w2_data)")
        L += [f"### W2 / {ds}: multinomial, {what}, n = {c['n']}, d = {c['d']}, k = {c['k']} (p = {c['k'] * (c['d'] + 1)}), "
              f"q = {c['q']}, l2 = {c['l2']:g}, rtol {c['rtol']:g}", ""]
    for r in doc["runs"]:
        if r["job"].startswith("setup") and group_key(r["workload"], r["dataset"]) == g and "info" in r:
            i = r["info"]
            L += [f"Model (setup process): `LogisticRegression(l2={c['l2']:g}).fit` in {fmt_s(r['best']['fit'])} s, {i['n_iter']} "
                  f"Newton steps, max |gradient| {i['grad_norm']:.1e}, p = {i['p']}, accuracy train {i['train_accuracy']:.4f} / test "
                  f"{i['test_accuracy']:.4f}; X {i['zero_fraction']:.0%} zeros.", ""]
    rows = summ.get(g, {})
    if not rows:
        return L + ["(no successful runs)", ""]
    if workload == "W1":
        gm = rows.get("w1_gemm")
        floor = _med(gm, "gemm64") if gm else (None, False)
        f64 = _sum_med(gm, "gemm64", "hess64") if gm else (None, False)
        f32 = _sum_med(gm, "gemm32", "hess32") if gm else (None, False)
        L += ["| job | what | quiet median (s) | all-run median (s) | quiet runs / runs | / floor (f64 GEMM) | / (GEMM + Hessian) "
              "| construction (s) | query (s) | Pearson r | max rel err | top-10 overlap |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        if gm:
            for ph, name in (("gemm64", "floor: NumPy `Z @ V`, float64 (fresh output)"), ("gemm32", "NumPy `Z @ V`, float32"),
                             ("hess64", "NumPy Hessian `Z.T @ (Z * h)`, float64"), ("hess32", "NumPy Hessian, float32"),
                             ("hess64_syrk", "NumPy Hessian by syrk, `Zs.T @ Zs` with `Zs = Z * sqrt(h)`, float64")):
                if ph not in gm["phases"]:
                    continue
                p = gm["phases"][ph]
                L.append(f"| w1_gemm | {name} | {fmt_s(p['quiet'])} | {fmt_s(p['all'])} | {gm['n_quiet']}/{gm['n_all']} | "
                         f"{_ratio(_med(gm, ph), floor)} | | | | | | |")
        for job in JOBS:
            if JOBS[job][0] != "W1" or job == "w1_gemm" or job not in rows:
                continue
            row = rows[job]
            p = row["phases"]["total"]
            base = f32 if job == "w1_top10_f32" or job == "w1_kronfluence_f32" else f64
            L.append(f"| {job} | {JOBS[job][2]} | {fmt_s(p['quiet'])} | {fmt_s(p['all'])} | {row['n_quiet']}/{row['n_all']} | "
                     f"{_ratio(_med(row), floor)} | {_ratio(_med(row), base)}{' (f32)' if base is f32 else ''} | "
                     f"{fmt_s(_med(row, 'build')[0])} | {fmt_s(_med(row, 'query')[0])} "
                     f"{_agree_cells(ag.get(job), job == REFERENCE['W1'])}|")
        L += ["", "Ratios use quiet medians (* = all-run medians: a side had no quiet run). / (GEMM + Hessian): f64 rows against the "
              "float64 GEMM + float64 Hessian build, (f32) rows against the float32 ones. Construction / query: quiet (else all-run) "
              "medians of `Influence(...)` / the query call; pyinfluence: `fit` / `explain`; kronfluence: `fit_all_factors` / "
              "`compute_pairwise_scores` + `load_pairwise_scores`. Agreement: the fixed-convention conversion (table below).", ""]
    else:
        base = _med(rows["w2_numpy_direct"]) if "w2_numpy_direct" in rows else (None, False)
        L += ["| job | what | quiet median (s) | all-run median (s) | quiet runs / runs | / NumPy direct | construction (s) | query (s) "
              "| CG iterations mean / max | Pearson r | max rel err | top-10 overlap |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for job in JOBS:
            if JOBS[job][0] != "W2" or job not in rows:
                continue
            row = rows[job]
            p = row["phases"]["total"]
            what = JOBS[job][2]
            if job == "w2_scipy_cg":
                what += (f" (**extrapolated** from {row.get('queries_timed')} of {row.get('queries')} queries)" if row.get("extrapolated")
                         else " (all queries)")
            if job == "w2_numpy_direct":
                build = _sum_med(row, "hessian", "factor")[0]
            else:
                build = _med(row, "build")[0]
            its = f"{row['iter_mean']:.1f} / {row['iter_max']}" if "iter_mean" in row else ""
            L.append(f"| {job} | {what} | {fmt_s(p['quiet'])} | {fmt_s(p['all'])} | {row['n_quiet']}/{row['n_all']} | "
                     f"{_ratio(_med(row), base)} | {fmt_s(build)} | {fmt_s(_med(row, 'query')[0])} | {its} "
                     f"{_agree_cells(ag.get(job), job == REFERENCE['W2'])}|")
        nd = rows.get("w2_numpy_direct")
        if nd:
            L += ["", f"NumPy direct's parts (quiet, else all-run medians): Hessian {fmt_s(_med(nd, 'hessian')[0])} s, Cholesky "
                  f"{fmt_s(_med(nd, 'factor')[0])} s, gradients + cho_solve + scores {fmt_s(_med(nd, 'query')[0])} s."]
        L += ["", "Ratios use quiet medians (* = all-run medians). Agreement against w2_direct; SciPy's on its solved queries only.", ""]
    if ag:
        L += ["Agreement with upweight's exact scores (every stride-th training column, all queries; top-10 from full rows):", "",
              "| job | conversion | scale | Pearson r | max rel err | top-10 overlap |", "|---|---|---:|---:|---:|---:|"]
        for job, a in ag.items():
            for r in a["rows"]:
                sc = f"{r['scale']:.4f}" if "scale" in r else ""
                pr = f"{r['pearson']:.8f}" if "pearson" in r else ""
                L.append(f"| {job} | {r['conversion']} | {sc} | {pr} | {r['max_rel']:.2e} | {r['top10']:.3f} |")
        L.append("")
    return L


def _sum_med(row: dict, a: str, b: str) -> tuple[float | None, bool]:
    (x, qx), (y, qy) = _med(row, a), _med(row, b)
    if x is None or y is None:
        return None, False
    return x + y, qx and qy


def job_config_from_doc(doc: dict, workload: str) -> dict:
    return doc["config"][workload]


def render(doc: dict) -> str:
    v = doc.get("versions", {})
    L = [f"Command: `{doc['command']}` ({doc.get('wall_s', 0) / 60:.1f} min). Machine: {v.get('cores')} cores, {v.get('cpu')}; "
         f"Python {v.get('python')}, NumPy {v.get('numpy')}, SciPy {v.get('scipy')}, torch {v.get('torch')}, kronfluence "
         f"{v.get('kronfluence')}, pyinfluence {v.get('pyinfluence')}, upweight {v.get('upweight')} ({v.get('upweight_threads')} "
         f"threads). OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment: {v.get('blas_env_set')} (removed for every "
         "non-upweight process).", ""]
    archs = sorted({f"{b.get('prefix')} {b.get('version')} {b.get('architecture')}" for r in doc["runs"] for b in r.get("blas", [])
                    if b.get("internal_api") == "openblas"})
    if archs:
        L += ["OpenBLAS kernels seen (threadpoolctl): " + "; ".join(archs) + ".", ""]
    L += [f"Medians of the best of the repeats per process (W1 {doc['repeat']}, W2 {doc['repeat_w2']}), {doc['rounds']} interleaved "
          f"round(s), order reversed every other round; quiet = others < {doc['quiet_cpu_pct']:g}% of one core before and during.", ""]
    summ = summarize(doc)
    groups = list(dict.fromkeys(group_key(r["workload"], r["dataset"]) for r in doc["runs"]))
    for g in groups:
        L += render_group(doc, g, summ)
    errs = [r for r in doc["runs"] if "error" in r]
    if errs:
        L += ["Errors:", ""]
        L += [f"- round {r.get('round', '-')} {r['job']} {r.get('dataset') or ''}: {r['error'][-300:]}" for r in errs] + [""]
    L += ["Load per run (1-min load average before; others' CPU % of one core before / during; quiet):", "",
          "| round | job | data | load avg | others before | others during | quiet | best total (s) | OpenBLAS | top others before |",
          "|---:|---|---|---:|---:|---:|---|---:|---|---|"]
    for r in doc["runs"]:
        if "error" in r:
            continue
        lb, du = r["load_before"], r["during"]
        arch = ",".join(b.get("architecture") or "" for b in r.get("blas", []) if b.get("internal_api") == "openblas")
        L.append(f"| {r.get('round', '-')} | {r['job']} | {r.get('dataset') or ''} | {lb['loadavg'][0]:.2f} | {lb['others_cpu_pct']:.0f} | "
                 f"{du['others_cpu_pct']:.0f} | {'yes' if r['quiet'] else 'no'} | {fmt_s(r['best']['total'])} | {arch} | "
                 f"{', '.join(lb['top'])} |")
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------


def profile(args, job: str, dataset: str | None) -> None:
    """The job in its own process as usual; once its data, model and warm-up are ready it waits,
    ``perf record -g -p PID`` attaches, and the timed calls (``--repeat`` of them) run under it."""
    if shutil.which("perf") is None:
        sys.exit("perf is not installed (apt-get install linux-perf)")
    workload, lib, _ = JOBS[job]
    ds = dataset if workload == "W2" else None
    setup_if_needed(args, workload, ds, None)
    tmp = Path(tempfile.mkdtemp(prefix="perf_peers_prof_"))
    c = job_config(args, workload, ds, job) | {"ready_file": str(tmp / "ready"), "go_file": str(tmp / "go")}
    try:
        data = tmp / "perf.data"
        child = subprocess.Popen(child_cmd(job, c), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(lib),
                                 cwd=str(HERE))
        t0 = now()
        while not (tmp / "ready").exists():
            if child.poll() is not None or now() - t0 > args.timeout:
                sys.exit(f"{job} ended before it was ready: {child.stderr.read()[-2000:] if child.stderr else ''}")
            time.sleep(0.05)
        cmd = ["perf", "record", "-g", "-F", "999", "-o", str(data), "-p", str(child.pid)]
        print(" ".join(cmd), file=sys.stderr, flush=True)
        rec = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # let perf attach
        (tmp / "go").write_text("")
        out_s, err_s = child.communicate(timeout=args.timeout)
        try:
            rec.wait(timeout=30)  # perf record -p ends when the process does
        except subprocess.TimeoutExpired:
            rec.send_signal(2)
            rec.wait(timeout=30)
        if child.returncode != 0:
            sys.exit(f"{job} failed: {err_s.strip()[-2000:]}")
        res = json.loads(out_s.strip().splitlines()[-1])
        rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "symbol", "--stdio", "-g", "none",
                              "--percent-limit", "0.5"], capture_output=True, text=True)
        if rep.returncode != 0:
            sys.exit(f"perf report failed: {rep.stderr.strip()[-2000:]}")
        text = (f"# {' '.join(cmd[:5])} -p <pid of `perf_peers.py --one {job}`> ({job}{'/' + ds if ds else ''}, "
                f"{'quick' if args.quick else 'full'} size): the {c['repeat']} timed call(s) only\n"
                f"# best: {json.dumps(res['best'])}\n\n" + rep.stdout)
        OUT.mkdir(exist_ok=True)
        out = OUT / f"profile_{job}{'_' + ds if ds else ''}.txt"
        out.write_text(text)
        lines = [ln.rstrip(" -") for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        print(f"best: {json.dumps(res['best'])}")
        print("\n".join(lines[:40]))
        print(f"\nwritten {out}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def setup_if_needed(args, workload: str, dataset: str | None, record) -> None:
    c = job_config(args, workload, dataset, "setup", repeat=1)
    stem = model_stem(c)
    if not args.refit and Path(str(stem) + "_model.npz").exists() and Path(str(stem) + "_theta.npy").exists():
        return
    rec = run_process("setup", c, args, {"job": "setup"})
    if record:
        record(rec)
    if "error" in rec:
        sys.exit(f"setup of {workload} {dataset or ''} failed: {rec['error']}")


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 round, repeat 1: a smoke run")
    ap.add_argument("--only", choices=["W1", "W2"], help="one workload")
    ap.add_argument("--jobs", default=",".join(DEFAULT_JOBS), help="jobs (default all but the opt-in " + ", ".join(OPT_IN) + ")")
    ap.add_argument("--datasets", default="synthetic,fmnist", help="W2's data sets: synthetic,fmnist")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; --quick 1)")
    ap.add_argument("--repeat", type=int, default=None, help="W1: timed calls per process, best kept (default 2; --quick 1)")
    ap.add_argument("--repeat-w2", type=int, default=1, help="W2: timed calls per process (default 1)")
    ap.add_argument("--scipy-queries", type=int, default=3, help="W2 SciPy cg: queries timed (extrapolated to q)")
    ap.add_argument("--quiet-cpu", type=float, default=15.0, help="quiet: others < this %% of one core before and during")
    ap.add_argument("--timeout", type=float, default=3600.0)
    ap.add_argument("--refit", action="store_true", help="refit the saved models (bench/out/perf_w*_model.npz)")
    ap.add_argument("--report", help="re-render the tables of a JSON file written by this script")
    ap.add_argument("--profile", help="run this one job under perf record -g; top symbols to bench/out/profile_<job>.txt")
    ap.add_argument("--dataset", default="synthetic", help="with --profile: the W2 data set")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, json.loads(args.cfg))))
        return
    if args.report:
        print(render(json.loads(Path(args.report).read_text())))
        return
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    args.repeat = args.repeat if args.repeat is not None else (1 if args.quick else 2)
    if args.profile:
        if args.profile not in JOBS:
            ap.error(f"unknown job {args.profile!r}")
        profile(args, args.profile, args.dataset)
        return

    jobs = [j for j in args.jobs.split(",") if j]
    for j in jobs:
        if j not in JOBS:
            ap.error(f"unknown job {j!r} (one of {', '.join(JOBS)})")
    datasets = [d for d in args.datasets.split(",") if d]
    for d in datasets:
        if d not in ("synthetic", "fmnist"):
            ap.error(f"unknown data set {d!r}")
    workloads = [w for w in ("W1", "W2") if (args.only in (None, w)) and any(JOBS[j][0] == w for j in jobs)]
    OUT.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    out = OUT / f"perf_peers_{'quick_' if args.quick else ''}{stamp}.json"
    doc = {"command": "python bench/perf_peers.py " + " ".join(sys.argv[1:]), "started": stamp,
           "config": {w: (QUICK if args.quick else FULL)[w] | {"scipy_queries": args.scipy_queries} for w in ("W1", "W2")},
           "rounds": args.rounds, "repeat": args.repeat, "repeat_w2": args.repeat_w2, "quiet_cpu_pct": args.quiet_cpu,
           "versions": versions(), "runs": [], "agreement": {}}
    print(json.dumps(doc["versions"], indent=1), file=sys.stderr)
    t_start = now()
    tmp = Path(tempfile.mkdtemp(prefix="perf_peers_"))

    def record(rec):
        doc["runs"].append(rec)
        log(t_start, rec)
        out.write_text(json.dumps(doc, indent=1))

    try:
        for w in workloads:
            groups = [None] if w == "W1" else datasets
            for ds in groups:
                setup_if_needed(args, w, ds, record)
            wjobs = [j for j in jobs if JOBS[j][0] == w]
            files = {ds: {j: tmp / f"{j}_{ds or 'w1'}.npz" for j in wjobs + [REFERENCE[w]]} for ds in groups}
            for rd in range(1, args.rounds + 1):
                for ds in groups:
                    order = wjobs if rd % 2 == 1 else wjobs[::-1]
                    for pos, job in enumerate(order, 1):
                        f = files[ds][job]
                        save = str(f) if job != "w1_gemm" and not f.exists() else None
                        c = job_config(args, w, ds, job, save=save)
                        record(run_process(job, c, args, {"job": job, "round": rd, "order": pos}))
                    n = (QUICK if args.quick else FULL)[w]["n"]
                    doc["agreement"][group_key(w, ds)] = agreement(files[ds], REFERENCE[w], n)
                    out.write_text(json.dumps(doc, indent=1))
        doc["wall_s"] = now() - t_start
        doc["summary"] = summarize(doc)
        doc["markdown"] = render(doc)
        out.write_text(json.dumps(doc, indent=1))
        print(doc["markdown"])
        print(f"\nwritten {out}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
