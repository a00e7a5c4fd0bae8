"""Scale features (issue 3): CG solves, damping, solve reports, streaming top-k, column subsets,
float32 and .npy training data, and a training file larger than the process's memory limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import upweight as uw


def _n_features(X) -> int:
    """Columns of features as the core takes them (an array or a CSR tuple)."""
    return X[3] if isinstance(X, tuple) else X.shape[1]


def problem(family, n=800, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    eta = X @ np.linspace(-0.8, 0.8, d)
    if family == "squared":
        return uw.LinearRegression(l2=1e-2), X, eta + 0.3 * rng.standard_normal(n)
    if family == "logistic":
        return uw.LogisticRegression(l2=1e-2), X, (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    if family == "poisson":
        return uw.PoissonRegression(l2=1e-2), X, rng.poisson(np.exp(0.3 * eta)).astype(float)
    return uw.LogisticRegression(l2=1e-2), X, rng.integers(0, k, n)


FAMILIES = ["squared", "logistic", "poisson", "multinomial"]


@pytest.mark.parametrize("family", FAMILIES)
def test_cg_agrees_with_direct(family):
    model, X, y = problem(family)
    model.fit(X, y)
    direct = uw.Influence(model, X, y, solver="direct")
    cg = uw.Influence(model, X, y, solver="cg", rtol=1e-12)
    S_d = direct.on_loss(X[:25], y[:25])
    assert direct.solve_info.method == "direct" and direct.solve_info.max_residual < 1e-10
    S_c = cg.on_loss(X[:25], y[:25])
    info = cg.solve_info
    assert info.method == "cg" and info.converged.all() and info.max_residual <= 1e-12
    assert info.iterations.shape == (25,) and (info.iterations > 0).all()
    np.testing.assert_allclose(S_c, S_d, rtol=1e-7, atol=1e-9 * np.abs(S_d).max())
    np.testing.assert_allclose(cg.self_influence(), direct.self_influence(), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(cg.params(idx=[0, 5]), direct.params(idx=[0, 5]), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(cg.on_prediction(X[:3]), direct.on_prediction(X[:3]), rtol=1e-7, atol=1e-12)


def test_auto_follows_the_cost_model_per_query():
    model, X, y = problem("logistic")
    assert uw.Influence(model.fit(X, y), X, y).solver == "direct"  # p = 6: H costs nothing
    # multinomial, k = 10, d = 250: p = 2510
    rng = np.random.default_rng(1)
    Xb = rng.standard_normal((1500, 250))
    yb = rng.integers(0, 10, 1500)
    big = uw.LogisticRegression(l2=1e-1).fit(Xb, yb)
    inf = uw.Influence(big, Xb, yb)
    # a query with 2 right-hand sides: CG is cheaper than forming and factoring H (bench/RESULTS.md, "auto")
    assert inf.solver == "cg" and inf.n_params == 2510
    top = inf.top_k(Xb[:2], yb[:2], k=3)
    assert top.helpful_idx.shape == (2, 3) and inf.solve_info.converged.all() and inf.solve_info.method == "cg"
    # self-influence has n = 1500 right-hand sides: H is formed once, then kept
    s = inf.self_influence()
    assert inf.solve_info.method == "direct" and inf.solver == "direct"
    np.testing.assert_allclose(s, uw.Influence(big, Xb, yb, solver="direct").self_influence(), rtol=1e-10)
    top2 = inf.top_k(Xb[:2], yb[:2], k=3)
    assert inf.solve_info.method == "direct"
    np.testing.assert_array_equal(top2.helpful_idx, top.helpful_idx)


def test_damping_changes_the_answer_consistently():
    model, X, y = problem("logistic")
    model.fit(X, y)
    g = np.random.default_rng(2).standard_normal((model.theta_.size, 3))
    plain = uw.Influence(model, X, y).inverse_hvp(g)
    for solver in ("direct", "cg"):
        damped = uw.Influence(model, X, y, solver=solver, damping=0.3, rtol=1e-12).inverse_hvp(g)
        H = uw._core.Model.glm("logistic", 1, _n_features(X)).hessian(model.theta_, X, y, None, model.l2)
        np.testing.assert_allclose(damped, np.linalg.solve(H + 0.3 * np.eye(len(H)), g), rtol=1e-8)
        assert np.abs(damped - plain).max() > 1e-3


def test_unconverged_cg_raises_or_warns_never_silent():
    model, X, y = problem("poisson")
    model.fit(X, y)
    inf = uw.Influence(model, X, y, solver="cg", max_iter=2, precondition=False)
    with pytest.raises(uw.ConvergenceError, match="did not converge.*relative residual"):
        inf.on_loss(X[:4], y[:4])
    assert not inf.solve_info.converged.all()
    warn = uw.Influence(model, X, y, solver="cg", max_iter=2, on_unconverged="warn")
    with pytest.warns(uw.ConvergenceWarning, match="did not converge") as caught:
        S = warn.on_loss(X[:4], y[:4])
    assert S.shape == (4, 800)
    # the library's own class (filterable with the fit's), still caught as the RuntimeWarning it was
    assert all(w.category is uw.ConvergenceWarning for w in caught)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        warn.on_loss(X[:4], y[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("error", uw.ConvergenceWarning)
        with pytest.raises(uw.ConvergenceWarning, match="did not converge"):
            warn.on_loss(X[:4], y[:4])


@pytest.mark.parametrize("scaled", [False, True])
def test_auto_preconditioner_is_never_slower_than_either_choice(scaled):
    """Digits (multinomial, p = 650): on the raw pixels plain CG needs fewer iterations than block
    Jacobi; with the columns rescaled over three decades Jacobi needs ~4x fewer. "auto" measures
    once, on a fixed probe, and must match the better of the two, with the same scores; every
    later query keeps the choice."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    if scaled:
        X = X * 10 ** np.random.default_rng(0).uniform(-1.5, 1.5, X.shape[1])
    X, y, Xt, yt = X[:1500], y[:1500], X[1500:1540], y[1500:1540]
    model = uw.LogisticRegression(l2=1e-3).fit(X, y)
    iters, scores, flags = {}, {}, {}
    for pc in ["none", "jacobi", "auto"]:
        inf = uw.Influence(model, X, y, solver="cg", precondition=pc, rtol=1e-7)
        scores[pc] = inf.on_loss(Xt, yt)
        iters[pc], flags[pc] = inf.solve_info.iterations.mean(), inf.solve_info.preconditioned
        if pc == "auto":  # a later query keeps the measured choice, and the same query the same bits
            inf.on_loss(Xt[:3], yt[:3])
            assert inf.solve_info.preconditioned == flags["auto"]
            np.testing.assert_array_equal(inf.on_loss(Xt, yt), scores[pc])
    winner = "jacobi" if scaled else "none"
    assert iters[winner] < 0.9 * iters["jacobi" if winner == "none" else "none"]  # the regimes differ
    assert flags == {"none": False, "jacobi": True, "auto": winner == "jacobi"}
    assert iters["auto"] <= iters[winner] + 1
    scale = np.abs(scores["jacobi"]).max()
    for pc in ["none", "auto"]:
        np.testing.assert_allclose(scores[pc], scores["jacobi"], atol=1e-5 * scale)


@pytest.mark.parametrize("family", FAMILIES)
def test_top_k_equals_sorting_the_score_matrix(family):
    model, X, y = problem(family, n=1700)
    model.fit(X, y)
    inf = uw.Influence(model, X, y)
    S = inf.on_loss(X[:12], y[:12])
    top = inf.top_k(X[:12], y[:12], k=6)
    for t in range(12):
        order = np.lexsort((np.arange(S.shape[1]), S[t]))  # by score, ties by index
        np.testing.assert_array_equal(top.helpful_idx[t], order[:6])
        np.testing.assert_array_equal(top.helpful[t], S[t, order[:6]])
        order = np.lexsort((np.arange(S.shape[1]), -S[t]))
        np.testing.assert_array_equal(top.harmful_idx[t], order[:6])
    assert (top.helpful <= 0).any() and (np.diff(top.helpful, axis=1) >= 0).all()
    big = inf.top_k(X[:2], y[:2], k=5000)  # k > n is clipped to n
    assert big.helpful_idx.shape == (2, 1700)


TIED_TOP_K = """
import sys, numpy as np, upweight as uw
rng = np.random.default_rng(3)
base = rng.standard_normal((700, 6))
yb = (rng.random(700) < 1 / (1 + np.exp(-base[:, 0]))).astype(float)
# every row four times, the copies 700 rows apart: tied scores in blocks that different
# threads select in, in any order
X, y = np.vstack([base] * 4), np.tile(yb, 4)
model = uw.LogisticRegression(l2=1e-2).fit(X, y)
out = {}
for name, Xs in [("f64", X), ("f32", X.astype(np.float32))]:
    inf = uw.Influence(model, Xs, y)
    top = inf.top_k(X[:15], y[:15], k=7)
    out[name] = np.stack([top.helpful_idx, top.harmful_idx])
    out[name + "_S"] = np.asarray(inf.on_loss(X[:15], y[:15]))
np.savez(sys.argv[1], threads=uw.num_threads(), **out)
"""


def test_top_k_with_tied_scores_is_exact_for_every_thread_count(tmp_path):
    """Duplicated training rows give tied scores: the top-k keeps the lowest row indices among
    them, whichever thread meets which copy first, in float64 and in float32."""
    runs = {}
    for threads in ("1", "2", "3"):
        env = {**os.environ, "RAYON_NUM_THREADS": threads}
        path = tmp_path / f"t{threads}.npz"
        subprocess.run([sys.executable, "-c", TIED_TOP_K, str(path)], env=env, check=True)
        runs[threads] = np.load(path)
        assert int(runs[threads]["threads"]) == int(threads)
    for name in ["f64", "f32"]:
        S = runs["1"][name + "_S"]
        for t in range(15):
            for side, s in [(0, S[t]), (1, -S[t])]:
                order = np.lexsort((np.arange(S.shape[1]), s))[:7]  # by score, ties by index
                assert len(np.unique(s[order])) < 7  # ties inside the top 7 (copies of a row)
                for threads, run in runs.items():
                    if name == "f64":
                        np.testing.assert_array_equal(run[name][side, t], order, err_msg=threads)
                    else:  # selected in float32, reordered by the float64 rescores
                        np.testing.assert_array_equal(np.sort(run[name][side, t]), np.sort(order), err_msg=threads)


def test_column_subsets_equal_the_full_matrix_columns():
    model, X, y = problem("multinomial")
    model.fit(X, y)
    inf = uw.Influence(model, X, y)
    idx = [799, 3, 3, 0]
    np.testing.assert_array_equal(inf.on_loss(X[:5], y[:5], idx=idx), inf.on_loss(X[:5], y[:5])[:, idx])
    np.testing.assert_array_equal(inf.on_prediction(X[:2], idx=idx), inf.on_prediction(X[:2])[:, :, idx])
    with pytest.raises(uw.InputError, match="idx"):
        inf.on_loss(X[:5], y[:5], idx=[800])


def test_float32_training_data_is_kept_float32_and_matches_float64():
    model, X, y = problem("logistic")
    X32 = X.astype(np.float32)
    m32 = uw.LogisticRegression(l2=1e-2).fit(X32, y)
    m64 = uw.LogisticRegression(l2=1e-2).fit(X32.astype(np.float64), y)
    np.testing.assert_array_equal(m32.theta_, m64.theta_)
    inf32 = uw.Influence(m32, X32, y)
    assert inf32.X.dtype == np.float32  # not copied to float64
    inf64 = uw.Influence(m64, X32.astype(np.float64), y)
    np.testing.assert_array_equal(inf32.self_influence(), inf64.self_influence())
    t32, t64 = inf32.top_k(X[:3], y[:3], 4), inf64.top_k(X[:3], y[:3], 4)
    np.testing.assert_array_equal(t32.harmful_idx, t64.harmful_idx)
    np.testing.assert_allclose(t32.harmful, t64.harmful, rtol=1e-12)  # selected in float32, values in float64
    S32, S64 = inf32.on_loss(X[:3], y[:3]), inf64.on_loss(X[:3], y[:3])
    assert S32.dtype == np.float32 and S64.dtype == np.float64
    np.testing.assert_allclose(S32, S64, rtol=0, atol=1e-6 * np.abs(S64).max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_npy_files_and_their_memmaps_stream_and_match_memory(tmp_path, dtype):
    model, X, y = problem("poisson", n=1300)
    Xd = X.astype(dtype)
    path = tmp_path / "train.npy"
    np.save(path, Xd)
    ref = uw.PoissonRegression(l2=1e-2).fit(Xd.astype(np.float64), y)
    for source in (str(path), path, np.load(path, mmap_mode="r")):
        m = uw.PoissonRegression(l2=1e-2).fit(source, y)
        np.testing.assert_array_equal(m.theta_, ref.theta_)
        inf = uw.Influence(m, source, y)
        assert isinstance(inf.X, str)  # read block by block from the file
        ref_inf = uw.Influence(ref, Xd, y)  # in memory, same dtype: the same kernels
        np.testing.assert_array_equal(inf.on_loss(X[:4], y[:4]), ref_inf.on_loss(X[:4], y[:4]))
        np.testing.assert_array_equal(inf.params(idx=[1, 1200]), ref_inf.params(idx=[1, 1200]))


def test_bad_npy_files_are_refused(tmp_path):
    model, X, y = problem("squared", n=50)
    model.fit(X, y)
    np.save(tmp_path / "obj.npy", np.array([[object()]] * 50, dtype=object), allow_pickle=True)
    with pytest.raises(uw.InputError):
        uw.Influence(model, tmp_path / "obj.npy", y)
    full = tmp_path / "full.npy"
    np.save(full, X)
    data = full.read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(uw.InputError, match="truncated"):
        uw.Influence(model, tmp_path / "cut.npy", y)
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(uw.InputError, match="not a"):
        uw.LinearRegression().fit(tmp_path / "text.npy", y)
    bad = X.copy()
    bad[30, 2] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(uw.InputError, match="X: contains NaN"):
        uw.LinearRegression().fit(tmp_path / "nan.npy", y)


MEMORY_LIMITED = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    limit = int(sys.argv[2]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import upweight as uw
    path = sys.argv[1]
    n = int(sys.argv[3])
    rng = np.random.default_rng(0)
    y = np.load(path.replace(".npy", "_y.npy"))
    model = uw.LinearRegression(l2=1e-3).fit(path, y)
    inf = uw.Influence(model, path, y)
    Xq = rng.standard_normal((8, 64)); yq = Xq @ np.linspace(-1, 1, 64)
    top = inf.top_k(Xq, yq, k=5)
    check = inf.on_loss(Xq, yq, idx=top.harmful_idx[0])
    print(json.dumps({
        "theta_err": float(np.abs(model.theta_[:-1] - np.linspace(-1, 1, 64)).max()),
        # (scores of a float32 file are float32; top-k values are recomputed in float64)
        "top_consistent": bool(np.allclose(check[0], top.harmful[0], rtol=1e-6, atol=0)),
        # VmHWM: this process image's peak RSS (ru_maxrss would include the parent's, pre-exec)
        "peak_rss_mib": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024,
    }))
""")


@pytest.mark.slow
def test_training_file_several_times_larger_than_the_memory_limit(tmp_path):
    """A 2.4 GiB float32 file, streamed by a process limited to 1 GiB of address space."""
    n, d = 10_000_000, 64
    path = tmp_path / "big.npy"
    rng = np.random.default_rng(0)
    beta = np.linspace(-1, 1, d)
    y = np.empty(n)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, 500_000):
        block = rng.standard_normal((min(500_000, n - start), d)).astype(np.float32)
        mm[start : start + len(block)] = block
        y[start : start + len(block)] = block.astype(np.float64) @ beta + 0.1 * rng.standard_normal(len(block))
    mm.flush()
    del mm
    np.save(str(path).replace(".npy", "_y.npy"), y)
    limit_mib = 1024
    assert path.stat().st_size > 2.2 * (limit_mib << 20)
    env = {"MALLOC_ARENA_MAX": "2", "OPENBLAS_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-c", MEMORY_LIMITED, str(path), str(limit_mib), str(n)],
                         capture_output=True, text=True,
                         env={**env, **{k: v for k, v in __import__("os").environ.items() if k.startswith(("PYTHON", "HOME", "LD_"))}})
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["theta_err"] < 1e-3
    assert out["top_consistent"]
    assert out["peak_rss_mib"] < limit_mib


@pytest.mark.parametrize("family", FAMILIES)
def test_newton_cg_fit_reaches_the_direct_optimum(family):
    model, X, y = problem(family, n=900)
    direct = type(model)(l2=1e-2, solver="direct").fit(X, y)
    cg = type(model)(l2=1e-2, solver="cg").fit(X, y)
    assert cg.converged_ and cg.grad_norm_ <= 1e-10
    # |theta error| <= |grad| / lambda_min(H), and lambda_min >= 2 l2 = 0.02 along coefficients
    np.testing.assert_allclose(cg.theta_, direct.theta_, rtol=0, atol=1e-8)
    if family == "multinomial":
        assert abs(cg.intercept_.sum()) < 1e-12  # the pinned null direction stays exact
