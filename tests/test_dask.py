"""upweight on Dask (upweight.dask): fitting and influence over a training set chunked by rows,
on a real ``distributed.LocalCluster`` (2 worker processes, loopback only), equal to the
in-memory results for every GLM family, dense float64 / float32 / sparse chunks, with chunk
sizes that do not divide n, an empty chunk and a chunk of one row; bitwise the same on every
run and after a worker is killed mid-run; bad inputs named."""

import os
import signal
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

import upweight as uw

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

N, D = 1203, 5
# row chunks: not dividing n, one empty chunk, one chunk of a single row
CHUNKS = (400, 0, 1, 302, 500)
FAMILIES = ("squared", "logistic", "poisson", "multinomial")


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address="127.0.0.1:0") as cluster, distributed.Client(cluster) as c:
        yield c


def problem(family, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, D)) * np.array([1.0, 10.0, 0.1, 1.0, 3.0])  # mixed units
    eta = X @ np.array([0.4, -0.03, 2.0, 0.2, -0.1])
    y = {
        "squared": eta + 0.5 * rng.standard_normal(N),
        "logistic": (rng.uniform(size=N) < 1 / (1 + np.exp(-eta))).astype(float),
        "poisson": rng.poisson(np.exp(0.5 * eta)).astype(float),
        "multinomial": rng.integers(0, 3, N).astype(float),
    }[family]
    w = rng.uniform(0.2, 2.0, N)
    return X, y, w


def model_for(family, l2=1e-3):
    return {"squared": uw.LinearRegression, "poisson": uw.PoissonRegression}.get(family, uw.LogisticRegression)(l2=l2)


def on_dask(X, y, w, chunks=CHUNKS):
    d = X.shape[1]
    Xd = da.from_array(X, chunks=(chunks, (d,)))
    if sp.issparse(X):
        Xd = da.from_array(X.toarray().astype(X.dtype), chunks=(chunks, (d,))).map_blocks(sp.csr_matrix, dtype=X.dtype)
    return Xd, da.from_array(y, chunks=(chunks,)), None if w is None else da.from_array(w, chunks=(chunks,))


def close(a, b, rtol=1e-9):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    assert np.max(np.abs(a - b)) <= rtol * max(np.max(np.abs(b)), 1e-300)


def same_top_k(a, b):
    for name in ("helpful_idx", "harmful_idx"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    close(a.helpful, b.helpful)
    close(a.harmful, b.harmful)


@pytest.mark.parametrize("family", FAMILIES)
def test_fit_on_dask_equals_fit_in_memory(client, family):
    X, y, w = problem(family)
    local = model_for(family).fit(X, y, w)
    on = model_for(family).fit(*on_dask(X, y, w))
    assert on.converged_ and on.n_iter_ == local.n_iter_
    close(on.get_theta(), local.get_theta(), 1e-10)
    assert on.objective_ == pytest.approx(local.objective_, rel=1e-12)
    if family in ("logistic", "multinomial"):
        assert np.array_equal(on.classes_, local.classes_)
    # unweighted too
    close(model_for(family).fit(*on_dask(X, y, None)).get_theta(), model_for(family).fit(X, y).get_theta(), 1e-10)


@pytest.mark.parametrize("family", FAMILIES)
def test_influence_on_dask_equals_influence_in_memory(client, family):
    X, y, w = problem(family)
    model = model_for(family).fit(X, y, w)
    local = uw.Influence(model, X, y, w)
    inf = uw.Influence(model, *on_dask(X, y, w))
    assert isinstance(inf, uw.dask.DaskInfluence)
    assert inf.n_samples == N and inf.total_weight == pytest.approx(local.total_weight, rel=1e-14)
    Xt, yt = X[:9] * 1.1, y[:9]
    S = inf.on_loss(Xt, yt)
    assert isinstance(S, da.Array) and S.shape == (9, N) and S.chunks[1] == tuple(c for c in CHUNKS if c)  # (empty ones dropped)
    close(S.compute(), local.on_loss(Xt, yt))
    same_top_k(inf.top_k(Xt, yt, k=7), local.top_k(Xt, yt, k=7))
    close(inf.self_influence().compute(), local.self_influence())
    idx = [1202, 0, 400, 401, 5, 5]  # the one-row chunk's row, both ends, a repeat
    close(inf.on_loss(Xt, yt, idx=idx), local.on_loss(Xt, yt, idx=idx))
    close(inf.params(idx=idx), local.params(idx=idx))
    close(inf.params().compute(), local.params())
    close(inf.on_prediction(Xt).compute(), local.on_prediction(Xt))
    g = local.loss_grads(Xt, yt).sum(axis=0)
    close(inf.on(g).compute(), local.on(g))
    close(inf.inverse_hvp(g), local.inverse_hvp(g))


@pytest.mark.parametrize("family", ("logistic", "multinomial"))
def test_conjugate_gradients_on_dask(client, family):
    """solver="cg": Newton-CG fitting and query solves from Hessian-vector products over the
    chunks (H never formed) give the direct answers."""
    X, y, w = problem(family)
    data = on_dask(X, y, w)
    local = model_for(family).fit(X, y, w)
    cg_model = model_for(family).set_params(solver="cg").fit(*data)
    assert cg_model.converged_
    close(cg_model.get_theta(), local.get_theta(), 1e-8)
    inf = uw.Influence(local, *data, solver="cg")
    assert inf.solver == "cg"
    ref = uw.Influence(local, X, y, w)
    Xt, yt = X[:8], y[:8]
    close(inf.on_loss(Xt, yt).compute(), ref.on_loss(Xt, yt), 1e-7)
    assert inf.solve_info.method == "cg" and inf.solve_info.converged.all() and inf.solve_info.residuals.max() <= 1e-10
    same_top_k(inf.top_k(Xt, yt, 4), ref.top_k(Xt, yt, 4))
    close(inf.params(idx=[3, 700]), ref.params(idx=[3, 700]), 1e-7)
    with pytest.raises(uw.InputError, match="solver: self_influence .* use solver='direct'"):
        inf.self_influence()
    with pytest.raises(uw.ConvergenceError, match="did not converge"):
        uw.Influence(local, *data, solver="cg", max_iter=2).on_loss(Xt, yt)
    # or, asked to warn, the class an unconverged in-memory solve or fit warns, and the approximate answer
    with pytest.warns(uw.ConvergenceWarning, match="did not converge"):
        S = uw.Influence(local, *data, solver="cg", max_iter=2, on_unconverged="warn").on_loss(Xt, yt).compute()
    assert S.shape == (8, X.shape[0]) and np.isfinite(S).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_and_sparse_chunks(client, family):
    X, y, w = problem(family)
    Xt, yt = X[:6], y[:6]
    X32 = X.astype(np.float32)
    model = model_for(family).fit(X32, y, w)
    close(model_for(family).fit(*on_dask(X32, y, w)).get_theta(), model.get_theta(), 1e-10)
    local32 = uw.Influence(model, X32, y, w)
    inf32 = uw.Influence(model, *on_dask(X32, y, w))
    S, S_local = inf32.on_loss(Xt, yt), local32.on_loss(Xt, yt)
    assert S.dtype == S_local.dtype  # float32 where the family has a float32 score kernel
    close(S.compute(), S_local, 1e-5)
    same_top_k(inf32.top_k(Xt, yt, 5), local32.top_k(Xt, yt, 5))
    close(inf32.self_influence().compute(), local32.self_influence())
    Xs = sp.csr_matrix(np.where(np.abs(X) > 0.8, X, 0.0))
    ms = model_for(family).fit(Xs, y, w)
    local = uw.Influence(ms, Xs, y, w)
    Xd, yd, wd = on_dask(Xs, y, w)
    close(model_for(family).fit(Xd, yd, wd).get_theta(), ms.get_theta(), 1e-10)
    inf = uw.Influence(ms, Xd, yd, wd)
    close(inf.on_loss(Xt, yt).compute(), local.on_loss(Xt, yt))
    same_top_k(inf.top_k(Xt, yt, 5), local.top_k(Xt, yt, 5))
    close(inf.self_influence().compute(), local.self_influence())
    close(inf.on_loss(Xt, yt, idx=[3, 1202]), local.on_loss(Xt, yt, idx=[3, 1202]))
    close(inf.params(idx=[400, 3]), local.params(idx=[400, 3]))


def test_results_are_bitwise_the_same_on_every_run(client):
    X, y, w = problem("multinomial")
    data = on_dask(X, y, w)
    a = model_for("multinomial").fit(*data)
    b = model_for("multinomial").fit(*data)
    assert np.array_equal(a.theta_, b.theta_)
    Xt, yt = X[:5], y[:5]
    r1, r2 = uw.Influence(a, *data).on_loss(Xt, yt).compute(), uw.Influence(a, *data).on_loss(Xt, yt).compute()
    assert np.array_equal(r1, r2)


def test_npy_shards_and_parquet_open_lazily(client, tmp_path):
    X, y, w = problem("poisson")
    cuts = [0, 500, 501, N]
    for j, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
        np.save(tmp_path / f"X-{j}.npy", X[a:b])
        (tmp_path / "y").mkdir(exist_ok=True)
        np.save(tmp_path / "y" / f"y-{j}.npy", y[a:b])
    Xd = uw.dask.from_npy(tmp_path, chunk_rows=300)
    yd = uw.dask.from_npy(tmp_path / "y", chunk_rows=300)
    assert Xd.shape == (N, D) and Xd.chunks[0] == (300, 200, 1, 300, 300, 102)
    model = model_for("poisson").fit(Xd, yd)
    local = model_for("poisson").fit(X, y)
    close(model.get_theta(), local.get_theta(), 1e-10)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    table = pa.table({**{f"x{j}": X[:, j] for j in range(D)}, "target": y, "weight": w})
    pq.write_table(table, tmp_path / "train.parquet", row_group_size=250)
    Xp, yp, wp = uw.dask.from_parquet(tmp_path / "train.parquet", [f"x{j}" for j in range(D)], target="target", weight="weight")
    assert Xp.chunks[0] == (250, 250, 250, 250, 203)
    weighted = model_for("poisson").fit(X, y, w)
    inf = uw.Influence(weighted, Xp, yp, wp)
    close(inf.top_k(X[:4], y[:4], 3).harmful, uw.Influence(weighted, X, y, w).top_k(X[:4], y[:4], 3).harmful)
    with pytest.raises(uw.InputError, match="nope"):
        uw.dask.from_parquet(tmp_path / "train.parquet", ["nope"])
    # a shard rewritten after it was opened is refused, not mixed in
    np.save(tmp_path / "X-1.npy", X[500:501] + 1.0)
    for use in (lambda: Xd.sum().compute(), lambda: model_for("poisson").fit(Xd, yd)):  # dask's reads and upweight's own
        with pytest.raises(uw.InputError, match=r"X-1.npy' changed after from_npy opened it"):
            use()


def test_bad_inputs_are_named(client):
    X, y, w = problem("logistic")
    Xd, yd, wd = on_dask(X, y, w)
    model = model_for("logistic").fit(X, y, w)
    with pytest.raises(uw.InputError, match=r"X: is chunked along columns.*rechunk"):
        uw.Influence(model, da.from_array(X, chunks=(400, 2)), yd)
    with pytest.raises(uw.InputError, match="y: its row chunks"):
        model_for("logistic").fit(Xd, da.from_array(y, chunks=300))
    with pytest.raises(uw.InputTypeError, match="y: expected a dask array"):
        model_for("logistic").fit(Xd, y)
    with pytest.raises(uw.InputError, match="sample_weight: its row chunks"):
        uw.Influence(model, Xd, yd, da.from_array(w, chunks=100))
    with pytest.raises(uw.InputError, match="X: has 4 columns"):
        uw.Influence(model, Xd[:, :4], yd)
    bad = y.copy()
    bad[700] = 0.5
    with pytest.raises(uw.InputError, match=r"y: value 0.5 at index 700 is not a class id"):
        model_for("logistic").fit(Xd, da.from_array(bad, chunks=(CHUNKS,)))
    negative = problem("poisson")[1].copy()
    negative[950] = -1.0
    with pytest.raises(uw.InputError, match=r"y: .* at index 950\b"):
        model_for("poisson").fit(Xd, da.from_array(negative, chunks=(CHUNKS,)))
    # a failed fit leaves the model as it was
    before = model.get_theta()
    with pytest.raises(uw.InputError):
        model.fit(Xd, da.from_array(bad, chunks=(CHUNKS,)))
    assert np.array_equal(model.get_theta(), before)


def test_interrupted_write_leaves_nothing(client, tmp_path):
    X, y, w = problem("logistic")
    model = model_for("logistic").fit(X, y, w)
    Xd, yd, wd = on_dask(X, y, w)
    inf = uw.Influence(model, Xd, yd, wd)
    out = tmp_path / "scores"
    uw.dask.save_npy_stack(inf.on_loss(X[:3], y[:3]), out)
    close(da.from_npy_stack(out).compute(), uw.Influence(model, X, y, w).on_loss(X[:3], y[:3]))
    # a shard that vanishes before the write: the chunk reading it fails, the target does not
    # appear and no partial files stay
    shards = tmp_path / "shards"
    shards.mkdir()
    for j, (a, b) in enumerate([(0, 600), (600, 1000), (1000, N)]):
        np.save(shards / f"X-{j}.npy", X[a:b])
    Xs = uw.dask.from_npy(shards)
    inf = uw.Influence(model, Xs, yd.rechunk((Xs.chunks[0],)), wd.rechunk((Xs.chunks[0],)))
    S = inf.on_loss(X[:3], y[:3])
    (shards / "X-2.npy").unlink()
    with pytest.raises(FileNotFoundError):
        uw.dask.save_npy_stack(S, tmp_path / "broken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores", "shards"]
    with pytest.raises(uw.InputError, match="already exists"):
        uw.dask.save_npy_stack(S, out)


def _slow_chunk(i, rows, d, family):
    """One chunk of a dataset read from slow storage (deterministic in i)."""
    time.sleep(0.05)
    rng = np.random.default_rng(100 + i)
    x = rng.standard_normal((rows, d))
    return x if family is None else (x[:, 0] + 0.3 * x[:, 1] + rng.standard_normal(rows) > 0).astype(float)


def slow_dataset(n_chunks: int, rows: int):
    """(X, y) dask arrays of ``n_chunks`` chunks read from slow storage (``_slow_chunk``, shipped
    to the workers by value: they cannot import this test module)."""
    import cloudpickle
    import dask

    cloudpickle.register_pickle_by_value(__import__(__name__))
    part = lambda i, what, shape: da.from_delayed(dask.delayed(_slow_chunk, pure=True)(i, rows, D, what), shape, np.float64)  # noqa: E731
    return (da.concatenate([part(i, None, (rows, D)) for i in range(n_chunks)]),
            da.concatenate([part(i, "y", (rows,)) for i in range(n_chunks)]))


def test_ctrl_c_during_a_write_leaves_nothing(client, tmp_path):
    """Ctrl-C on the client while the workers write a score matrix: KeyboardInterrupt, the writes
    are cancelled, and neither the target nor a partial directory remains."""
    import _thread

    import dask

    X, y = slow_dataset(40, 100)
    model = uw.LogisticRegression(l2=1e-3).fit(*dask.compute(X, y))
    S = uw.Influence(model, X, y).on_loss(np.ones((3, D)), np.array([0.0, 1.0, 1.0]))
    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        uw.dask.save_npy_stack(S, tmp_path / "scores", axis=1)
        time.sleep(30)  # (not reached when the write is interrupted)
    time.sleep(1.0)  # anything still running would have written by now
    assert list(tmp_path.iterdir()) == []


def test_a_worker_killed_mid_run_is_retried_and_the_result_is_equal(client):
    import dask

    X, y = slow_dataset(60, 200)
    Xm, ym = dask.compute(X, y)
    model = uw.LogisticRegression(l2=1e-3).fit(Xm, ym)
    inf = uw.Influence(model, X, y)
    Xt, yt = np.ones((4, D)), np.array([0.0, 1.0, 1.0, 0.0])
    expected = inf.top_k(Xt, yt, 5)
    same_top_k(expected, uw.Influence(model, Xm, ym).top_k(Xt, yt, 5))

    scheduler = client.cluster.scheduler
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    result, killed = {}, {}

    def run():
        result["top"] = inf.top_k(Xt, yt, 5)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and thread.is_alive():
        done = sum(ts.state == "memory" for ts in scheduler.tasks.values())
        if done >= 10:
            killed["done_before"] = done
            os.kill(pids[victim], signal.SIGKILL)
            break
        time.sleep(0.01)
    assert killed, "the run ended before a worker could be killed"
    thread.join(120)
    assert not thread.is_alive()
    assert victim not in scheduler.workers  # the killed worker is gone (its nanny starts a new one)
    got = result["top"]
    for name in ("helpful_idx", "helpful", "harmful_idx", "harmful"):
        assert np.array_equal(getattr(got, name), getattr(expected, name)), name
    client.wait_for_workers(2, timeout=60)


def test_the_readme_example_runs():
    """examples/on_a_cluster.py (the documentation's runnable example), as a user runs it."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "on_a_cluster.py"
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "most helpful training rows" in r.stdout and "score matrix written: ['0.npy', '1.npy', '10.npy']" in r.stdout
