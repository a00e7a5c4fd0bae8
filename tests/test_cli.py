"""The command line: fit, score (top-k, self-influence, full matrix), file formats, atomic and
safe outputs, progress, interrupts, help."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import upweight as uw


def cli(*args, check=True):
    res = subprocess.run([sys.executable, "-m", "upweight.cli", *map(str, args)], capture_output=True, text=True)
    if check:
        assert res.returncode == 0, res.stderr
    return res


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 6))
    y = (rng.random(3000) < 1 / (1 + np.exp(-X @ np.linspace(-1, 1, 6)))).astype(float)
    np.save(d / "X.npy", X)
    np.save(d / "y.npy", y)
    np.savez(d / "query.npz", X=X[:7] + 0.1, y=y[:7])
    header = ",".join([f"f{j}" for j in range(6)] + ["y"])
    np.savetxt(d / "train.csv", np.column_stack([X, y]), delimiter=",", header=header, comments="", fmt="%.17g")
    model = uw.LogisticRegression(l2=1e-3).fit(X, y)
    return d, X, y, model


def test_fit_then_score_top_k_matches_the_api(data):
    d, X, y, model = data
    cli("fit", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--l2", "1e-3", "-o", d / "m.npz", "--force")
    loaded = uw.load_model(d / "m.npz")
    np.testing.assert_array_equal(loaded.theta_, model.theta_)
    cli("score", d / "X.npy", "--y", d / "y.npy", "--model", d / "m.npz", "--query", d / "query.npz", "-k", "4",
        "-o", d / "top.npz", "--force")
    top = uw.Influence(model, X, y).top_k(X[:7] + 0.1, y[:7], k=4)
    with np.load(d / "top.npz") as z:
        np.testing.assert_array_equal(z["helpful_idx"], top.helpful_idx)
        np.testing.assert_array_equal(z["harmful"], top.harmful)
    cli("score", d / "train.csv", "--family", "logistic", "--l2", "1e-3", "--query", d / "query.npz", "-k", "4",
        "-o", d / "top.csv", "--force")
    table = np.loadtxt(d / "top.csv", delimiter=",", skiprows=1)
    assert open(d / "top.csv").readline().strip() == "query,rank,helpful_index,helpful_score,harmful_index,harmful_score"
    np.testing.assert_array_equal(table[:, 2].reshape(7, 4), top.helpful_idx)
    np.testing.assert_allclose(table[:, 5].reshape(7, 4), top.harmful, rtol=1e-12)


def test_score_with_arnoldi_matches_the_api(data):
    """--solver arnoldi --rank R: the API's rank-R answer; a rank above p is refused by name."""
    d, X, y, model = data
    cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--l2", "1e-3", "--query", d / "query.npz", "-k", "4",
        "--solver", "arnoldi", "--rank", "3", "--damping", "0.01", "--arnoldi-inverse", "exact", "-o", d / "arn.npz", "--force")
    top = uw.Influence(model, X, y, solver="arnoldi", rank=3, damping=0.01, arnoldi_inverse="exact").top_k(X[:7] + 0.1, y[:7], k=4)
    with np.load(d / "arn.npz") as z:
        np.testing.assert_array_equal(z["helpful_idx"], top.helpful_idx)
        np.testing.assert_allclose(z["harmful"], top.harmful, rtol=1e-9)
    res = cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--query", d / "query.npz", "--solver", "arnoldi",
              "--rank", "8", "-o", d / "bad.npz", check=False)
    assert res.returncode == 2 and "rank: must be between 1 and the number of parameters (7)" in res.stderr
    res = cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--query", d / "query.npz", "--rank", "3",
              "-o", d / "bad.npz", check=False)
    assert res.returncode == 2 and "rank: only used with solver='arnoldi'" in res.stderr


def test_score_loo_top_k_matches_the_api_across_segments(data):
    d, X, y, model = data
    cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--l2", "1e-3", "--query", d / "query.npz",
        "--what", "loo-top-k", "-k", "4", "--segment-rows", "1024", "-o", d / "loo.npz", "--force")
    top = uw.Influence(model, X, y).loo_top_k(X[:7] + 0.1, y[:7], k=4)
    with np.load(d / "loo.npz") as z:
        np.testing.assert_array_equal(z["helpful_idx"], top.helpful_idx)
        np.testing.assert_array_equal(z["harmful_idx"], top.harmful_idx)
        np.testing.assert_allclose(z["helpful"], top.helpful, rtol=1e-9)
    assert (top.helpful[:, 0] > 0).all() and (top.harmful[:, 0] < 0).all()


def test_sparse_npz_training_and_query_files(tmp_path):
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(1)
    X = sp.random(800, 50, density=0.1, format="csr", random_state=1)
    y = (rng.random(800) < 0.4).astype(float)
    sp.save_npz(tmp_path / "X.npz", X)
    sp.save_npz(tmp_path / "Xq.npz", X[:5])
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "yq.npy", y[:5])
    cli("score", tmp_path / "X.npz", "--y", tmp_path / "y.npy", "--family", "logistic", "--l2", "1e-2", "--query", tmp_path / "Xq.npz",
        "--query-y", tmp_path / "yq.npy", "-k", "3", "-o", tmp_path / "top.npz")
    model = uw.LogisticRegression(l2=1e-2).fit(X.toarray(), y)
    top = uw.Influence(model, X.toarray(), y).top_k(X[:5].toarray(), y[:5], k=3)
    with np.load(tmp_path / "top.npz") as z:
        np.testing.assert_array_equal(z["helpful_idx"], top.helpful_idx)
        np.testing.assert_allclose(z["harmful"], top.harmful, rtol=1e-9)


def test_score_self_influence_and_full_matrix(data):
    d, X, y, model = data
    inf = uw.Influence(model, X, y)
    cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--l2", "1e-3", "--what", "self", "-o", d / "self.csv", "--force")
    s = np.loadtxt(d / "self.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(s[:, 0], np.arange(3000))
    np.testing.assert_allclose(s[:, 1], inf.self_influence(), rtol=1e-12)
    cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--l2", "1e-3", "--query", d / "query.npz",
        "--what", "full", "--solver", "cg", "-o", d / "full.npz", "--force")
    with np.load(d / "full.npz") as z:
        np.testing.assert_allclose(z["scores"], inf.on_loss(X[:7] + 0.1, y[:7]), rtol=1e-7, atol=1e-12)


def test_parquet_in_and_out(data):
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    d, X, y, model = data
    pq.write_table(pa.table({**{f"f{j}": X[:, j] for j in range(6)}, "label": y}), d / "train.parquet")
    cli("score", d / "train.parquet", "--target-column", "label", "--family", "logistic", "--l2", "1e-3",
        "--what", "self", "-o", d / "self.parquet", "--force")
    out = pq.read_table(d / "self.parquet")
    np.testing.assert_allclose(out.column("self_influence").to_numpy(), uw.Influence(model, X, y).self_influence(), rtol=1e-12)


def test_existing_outputs_are_kept_without_force(data):
    d, *_ = data
    out = d / "keep.npz"
    out.write_bytes(b"precious")
    res = cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--what", "self", "--l2", "1e-3", "-o", out, check=False)
    assert res.returncode == 2 and "exists" in res.stderr and "--force" in res.stderr
    assert out.read_bytes() == b"precious"


def test_bad_files_give_clear_errors(data):
    d, *_ = data
    (d / "fake.npy").write_text("a,b\n1,2\n")
    res = cli("fit", d / "fake.npy", "--y", d / "y.npy", "--family", "linear", "-o", d / "x.npz", check=False)
    assert res.returncode == 2 and "train" in res.stderr and "Traceback" not in res.stderr
    res = cli("fit", d / "X.txt", "--family", "linear", "-o", d / "x.npz", check=False)
    assert res.returncode == 2 and "no such file" in res.stderr
    res = cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--l2", "1", "-o", d / "x.npz", check=False)
    assert res.returncode == 2 and "--query" in res.stderr
    res = cli("score", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "--what", "self", "-o", d / "x.txt", check=False)
    assert res.returncode == 2 and "unsupported file type" in res.stderr
    assert not (d / "x.txt").exists()


@pytest.mark.parametrize("command", ["fit", "score", "demo", "seed"])
def test_help_is_complete(command):
    out = cli(command, "--help").stdout
    if command in ("fit", "score"):
        for option in ("--y", "--target-column", "--weights", "--family", "--l2", "--output", "--force", "--quiet"):
            assert option in out
    if command == "score":
        for option in ("--model", "--query", "--query-y", "--what", "--k", "--solver", "--damping"):
            assert option in out


def test_progress_callback_and_cancelling_from_it():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1_000_000, 30))
    y = X @ np.linspace(-1, 1, 30) + rng.standard_normal(1_000_000)
    calls = []
    model = uw.LinearRegression(l2=1e-3, progress=lambda *a: calls.append(a)).fit(X, y)
    inf = uw.Influence(model, X, y, progress=lambda *a: calls.append(a))
    inf.self_influence()
    inf.top_k(X[:50], y[:50], k=3)
    assert calls and all(0 <= done <= total == 1_000_000 for _, done, total in calls)

    def stop(*_):
        raise RuntimeError("stop requested")

    with pytest.raises(RuntimeError, match="stop requested"):
        uw.Influence(model, X, y, progress=stop).self_influence()


INTERRUPTED = """
import numpy as np, upweight.cli as c, signal, sys
# a shell's background job inherits SIGINT ignored; Ctrl-C in a terminal is what is tested
signal.signal(signal.SIGINT, signal.default_int_handler)
rng = np.random.default_rng(0)
np.save(sys.argv[1] + "/X.npy", rng.standard_normal((2_000_000, 40)))
np.save(sys.argv[1] + "/y.npy", rng.standard_normal(2_000_000))
print("ready", flush=True)
sys.exit(c.main(["score", sys.argv[1] + "/X.npy", "--y", sys.argv[1] + "/y.npy", "--family", "linear",
                 "--l2", "1", "--what", "self", "--solver", "cg", "-o", sys.argv[1] + "/out.npz"]))
"""


@pytest.mark.slow
def test_interrupted_score_leaves_no_output(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "pass" in err  # the progress bar was drawn
    # no output and no partial file; at most the resume checkpoint of finished segments
    assert set(os.listdir(tmp_path)) <= {"X.npy", "y.npy", "out.npz.resume.npz"}


@pytest.mark.parametrize("what", ["top-k", "self"])
def test_killed_streaming_run_resumes_to_the_same_result(tmp_path, what):
    """Kill a run midway (SIGKILL: no cleanup at all), resume it, and get exactly what an
    uninterrupted run writes."""
    rng = np.random.default_rng(7)
    n, d = 150_000, 12
    X = rng.standard_normal((n, d))
    y = X @ np.linspace(-1, 1, d) + rng.standard_normal(n)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "q.npz", X=X[:800], y=y[:800])
    common = ["score", tmp_path / "X.npy", "--y", tmp_path / "y.npy", "--family", "linear", "--l2", "1e-3",
              "--what", what, "--segment-rows", "512", "-q"] + (["--query", tmp_path / "q.npz", "-k", "5"] if what == "top-k" else [])
    cli(*common, "-o", tmp_path / "ref.npz")
    out, ckpt = tmp_path / "out.npz", tmp_path / "out.npz.resume.npz"
    proc = subprocess.Popen([sys.executable, "-m", "upweight.cli", *map(str, common), "-o", str(out)])
    try:
        deadline = time.monotonic() + 60
        while not ckpt.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert not out.exists() and ckpt.exists(), "the run finished before it could be killed midway"
    with np.load(ckpt) as z:
        done = int(z["next_row"])
    assert 0 < done < n
    res = cli(*common, "-o", out, "--resume")
    assert f"resuming after row {done:,}" in res.stderr
    assert not ckpt.exists()
    with np.load(out) as a, np.load(tmp_path / "ref.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])
    # a checkpoint from other inputs is refused, not silently mixed in
    np.savez(tmp_path / "x.npz.resume.npz", fingerprint=np.array("{}"), next_row=np.array(512))
    bad = cli(*common, "-o", tmp_path / "x.npz", "--resume", check=False)
    assert bad.returncode == 2 and "written for other inputs" in bad.stderr


def test_an_output_that_is_an_input_is_refused_even_with_force(data, tmp_path):
    d, *_ = data
    train = tmp_path / "train.csv"
    train.write_bytes((d / "train.csv").read_bytes())
    before = train.read_bytes()
    link = tmp_path / "link.csv"
    link.symlink_to(train)
    for out in (train, link, tmp_path / "." / "train.csv"):
        res = cli("score", train, "--family", "logistic", "--what", "self", "-o", out, "--force", check=False)
        assert res.returncode == 2 and "is the train input" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert train.read_bytes() == before
    model = tmp_path / "m.npz"
    cli("fit", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "-o", model)
    saved = model.read_bytes()
    res = cli("score", d / "X.npy", "--y", d / "y.npy", "--model", model, "--what", "self", "-o", model, "--force", check=False)
    assert res.returncode == 2 and "is the --model input" in res.stderr
    res = cli("fit", d / "X.npy", "--y", d / "y.npy", "--family", "logistic", "-o", d / "y.npy", "--force", check=False)
    assert res.returncode == 2 and "is the --y input" in res.stderr
    assert model.read_bytes() == saved


def test_outputs_and_options_are_checked_before_any_work(data, tmp_path):
    """A bad output path, format or option is refused at once, with no traceback and no
    checkpoint left behind (the training file here would take long to fit: it is never read)."""
    d, *_ = data
    never_read = tmp_path / "huge.npy"
    never_read.write_bytes(b"not even a .npy file")
    cases = [
        (["-o", tmp_path / "nodir" / "out.npz"], "folder"),
        (["-o", tmp_path / "out.txt"], "unsupported file type '.txt'"),
        (["-o", tmp_path / "out.npz", "-k", "0", "--query", d / "query.npz"], "k: expected a positive integer, got 0"),
        (["-o", tmp_path / "out.npz", "-k", "-3", "--query", d / "query.npz"], "k: expected a positive integer, got -3"),
        (["-o", tmp_path / "out.npz", "--segment-rows", "100", "--what", "self"], "segment-rows"),
    ]
    for extra, message in cases:
        res = cli("score", never_read, "--family", "logistic", *extra, check=False)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, (extra, res.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.npy"]
    res = cli("fit", never_read, "--family", "logistic", "-o", tmp_path / "nodir" / "m.npz", check=False)
    assert res.returncode == 2 and "folder" in res.stderr and "Traceback" not in res.stderr
