"""State: an ``Influence`` answers about the model as it was when the influence was built, and an
estimator's parameters have one source of truth (``theta_``; ``coef_`` and ``intercept_`` are
parts of it)."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp

import upweight as uw


def sparse_problem():
    """A sparse logistic problem on which ``solver="auto"`` starts with CG and forms H later."""
    rng = np.random.default_rng(42)
    X = sp.random(400, 600, density=0.012, format="csr", random_state=np.random.RandomState(42))
    X.data = rng.standard_normal(X.data.size)
    y = (rng.random(400) < 1 / (1 + np.exp(-(X @ rng.standard_normal(600))))).astype(float)
    return X, y


def test_refitting_the_model_does_not_change_an_existing_influence():
    X, y = sparse_problem()
    model = uw.LogisticRegression(l2=0.05).fit(X, y)
    frozen = copy.deepcopy(model)
    inf = uw.Influence(model, X, y)
    assert inf.solver == "cg"  # the direct core is built later, at the first many-right-hand-side query
    # the estimator is refitted on other data and its parameters edited
    model.set_params(l2=0.5).fit(X[:200], y[:200])
    model.coef_ = model.coef_ * 3
    s = inf.self_influence()
    assert inf.solve_info.method == "direct"  # built after the refit
    expected = uw.Influence(frozen, X, y, solver="direct")
    np.testing.assert_allclose(s, expected.self_influence(), rtol=1e-10)
    np.testing.assert_allclose(inf.on_prediction(X[:3]), expected.on_prediction(X[:3]), rtol=1e-10)
    np.testing.assert_allclose(inf.new_point(X[0].toarray()[0], 1.0), expected.new_point(X[0].toarray()[0], 1.0), rtol=1e-10)
    assert inf.l2 == 0.05 and inf.n_params == 601


@pytest.mark.parametrize("k", [2, 3])
def test_coef_and_intercept_are_parts_of_theta(k):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = rng.integers(0, k, 60)
    model = uw.LogisticRegression(l2=0.1).fit(X, y)
    theta = model.theta_.copy()
    # reading
    if k == 2:
        np.testing.assert_array_equal(model.coef_, theta[:-1])
        assert model.intercept_ == theta[-1] and isinstance(model.intercept_, float)
    else:
        np.testing.assert_array_equal(model.coef_, theta[:, :-1])
        np.testing.assert_array_equal(model.intercept_, theta[:, -1])
    # assigning the whole coefficient array, an entry of it, or the intercept changes theta_ and
    # everything computed from it
    model.coef_ = model.coef_ * 2
    model.coef_[..., 0] = 7.0
    model.intercept_ = np.asarray(model.intercept_) - 1.0 if k > 2 else model.intercept_ - 1.0
    expected = theta.copy()
    expected[..., :-1] *= 2
    expected[..., 0] = 7.0
    expected[..., -1] -= 1.0
    np.testing.assert_array_equal(model.theta_, expected)
    np.testing.assert_array_equal(model.get_theta(), expected.reshape(-1))
    fresh = uw.LogisticRegression(l2=0.1)
    fresh.set_theta(expected.reshape(-1), n_features=3)
    np.testing.assert_array_equal(model.predict_proba(X), fresh.predict_proba(X))
    with pytest.raises(uw.InputError, match="^coef_: has shape"):
        model.coef_ = np.zeros(5)
    with pytest.raises(uw.InputError, match="^intercept_: contains NaN"):
        model.intercept_ = np.full(np.shape(model.intercept_), np.nan)


def test_unfitted_models_have_no_parameters():
    model = uw.LinearRegression()
    assert not hasattr(model, "coef_") and not hasattr(model, "intercept_")
    with pytest.raises(uw.NotFittedError):
        model.coef_ = np.zeros(2)


def test_compare_pairs_entries_of_the_same_shape_only():
    a = np.arange(50.0).reshape(5, 10)
    assert uw.compare(a, a * 2).slope == pytest.approx(2.0)
    with pytest.raises(uw.InputError, match=r"^actual: has shape \(10, 5\) but predicted has shape \(5, 10\)"):
        uw.compare(a, a.T)


def test_bad_counts_numbers_and_callbacks_are_named_input_errors():
    """Counts too large for the core, non-numeric settings and a progress that cannot be called are
    refused up front, naming the argument (they used to be OverflowError, ValueError, or a failure
    in the middle of a fit)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 2)), rng.integers(0, 2, 40)
    for bad, name in ((-1, "max_iter"), (10**20, "max_iter")):
        with pytest.raises(uw.InputError, match=f"^{name}: "):
            uw.LogisticRegression(max_iter=bad).fit(X, y)
    with pytest.raises(uw.InputTypeError, match="^progress: expected a callable"):
        uw.LogisticRegression(progress=5).fit(X, y)
    model = uw.LogisticRegression(l2=0.1).fit(X, y)
    for kwargs, name in (({"damping": "abc"}, "damping"), ({"rtol": "x"}, "rtol"), ({"atol": -1.0}, "atol"),
                         ({"max_iter": 10**20}, "max_iter"), ({"progress": 5}, "progress")):
        with pytest.raises(uw.UpweightError, match=f"^{name}: "):
            uw.Influence(model, X, y, **kwargs)
        with pytest.raises(uw.UpweightError, match=f"^{name}: "):
            uw.GradientInfluence(rng.standard_normal((40, 3)), **kwargs)
    inf = uw.Influence(model, X, y)
    for k in (0, 2**70, 2.5):
        with pytest.raises(uw.InputError, match="^k: "):
            inf.top_k(X[:2], y[:2], k=k)


def test_empty_selections_and_impossible_groups_name_their_argument():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((30, 2)), rng.standard_normal(30)
    model = uw.LinearRegression(l2=0.1).fit(X, y)
    inf = uw.Influence(model, X, y)
    for call in (lambda: inf.params(idx=[]), lambda: inf.on_loss(X[:2], y[:2], idx=[]),
                 lambda: inf.params(idx=np.zeros(30, bool)), lambda: uw.leave_one_out(model, X, y, idx=[])):
        with pytest.raises(uw.InputError, match="^idx: selects no training points"):
            call()
    with pytest.raises(uw.InputError, match="^group: selects no training points"):
        uw.leave_k_out(model, X, y, group=[])
    with pytest.raises(uw.InputError, match="^group: removes every training point"):
        uw.leave_k_out(model, X, y, group=np.arange(30))
    w = np.ones(30)
    w[5:] = 0
    with pytest.raises(uw.InputError, match="^group: removes every training point"):
        uw.leave_k_out(uw.LinearRegression(l2=0.1).fit(X, y, w), X, y, group=np.arange(5), sample_weight=w)
    with pytest.raises(uw.InputError, match="^eps: is empty"):
        uw.response_curve(model, X, y, 3, eps=[])
    with pytest.raises(uw.InputError, match="^eps: contains NaN"):
        uw.response_curve(model, X, y, 3, eps=[0.1, np.nan])


def test_estimator_settings_upweight_does_not_model_are_refused():
    sklm = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 3))
    y = (X[:, 0] + rng.standard_normal(80) > 0).astype(int)
    for est, what in ((sklm.LogisticRegression(class_weight="balanced"), "class_weight"),
                      (sklm.LogisticRegression(class_weight={0: 1.0, 1: 2.0}), "class_weight"),
                      (sklm.LogisticRegression(solver="liblinear"), "liblinear"),
                      (sklm.LinearRegression(positive=True), "positive=True"),
                      (sklm.Ridge(positive=True), "positive=True")):
        est.fit(X, y)
        with pytest.raises(uw.InputError, match=f"^estimator: .*{what}"):
            uw.Influence.from_sklearn(est, X, y)
    # a plain list X is taken like an array
    est = sklm.LogisticRegression().fit(X, y)
    inf = uw.Influence.from_sklearn(est, X.tolist(), y)
    np.testing.assert_allclose(inf.self_influence(), uw.Influence.from_sklearn(est, X, y).self_influence())
    sm = pytest.importorskip("statsmodels.api")
    Xc = sm.add_constant(X)
    for kw in ({"offset": rng.standard_normal(80)}, {"exposure": rng.uniform(1, 2, 80)}):
        res = sm.GLM(rng.poisson(1.0, 80), Xc, family=sm.families.Poisson(), **kw).fit()
        with pytest.raises(uw.InputError, match="^results: a GLM with an (offset|exposure)"):
            uw.Influence.from_statsmodels(res)


MEMMAP_SCRIPT = r"""
import os, sys, numpy as np, upweight as uw
path, kind = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
X = rng.standard_normal((400, 3))
y = (X[:, 0] > 0).astype(float)
np.save(path, X)
if kind == "slice":
    M = np.load(path, mmap_mode="r")[50:]
else:  # a raw np.memmap over the data part of the file
    M = np.memmap(path, dtype=np.float64, mode="r", offset=128, shape=(350, 3))
ys = y[50:] if kind == "slice" else y[:350]
model = uw.LogisticRegression(l2=0.1).fit(M, ys)
inf = uw.Influence(model, M, ys)
before = inf.self_influence()
os.truncate(path, os.path.getsize(path) // 2)
# the influence holds its own copy: the truncation cannot reach it
assert np.array_equal(inf.self_influence(), before)
for call in (lambda: uw.Influence(model, M, ys), lambda: model.predict(M), lambda: inf.on_loss(M, ys)):
    try:
        call()
    except uw.InputError as exc:
        assert "truncated" in str(exc), exc
    else:
        raise AssertionError("no error")
print("ok")
"""


@pytest.mark.parametrize("kind", ["slice", "raw"])
def test_memory_maps_whose_file_is_truncated_never_crash(tmp_path, kind):
    """A slice of np.load(..., mmap_mode="r") or a raw np.memmap is read into memory once its
    file is checked to hold every byte it maps; truncating the file later cannot reach upweight,
    and a memory map over a truncated file is an InputError, not a SIGBUS (in a subprocess, so a
    crash would fail this test instead of killing the run)."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", MEMMAP_SCRIPT, str(tmp_path / "m.npy"), kind], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.returncode, res.stdout, res.stderr)


def test_editing_the_training_data_after_building_an_influence_changes_nothing_or_raises(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 4))
    y = (X[:, 0] + 0.5 * rng.standard_normal(300) > 0).astype(float)
    w = rng.uniform(0.5, 1.5, 300)
    model = uw.LogisticRegression(l2=0.05).fit(X, y, w)
    expected = uw.Influence(model, X.copy(), y.copy(), w.copy(), solver="direct")
    for solver in ("direct", "cg", "auto"):
        # copy=True: a snapshot; the caller may edit every array in place
        Xe, ye, we = X.copy(), y.copy(), w.copy()
        inf = uw.Influence(model, Xe, ye, we, solver=solver, copy=True)
        Xe *= 10
        ye[:] = 1 - ye
        we[:] = 1.0
        np.testing.assert_allclose(inf.self_influence(), expected.self_influence(), rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(inf.on_loss(X[:3], y[:3]), expected.on_loss(X[:3], y[:3]), rtol=1e-7, atol=1e-12)
        # the default reads X where it is (no copy): y and w are copies, an edit of X is refused
        Xe, ye, we = X.copy(), y.copy(), w.copy()
        inf = uw.Influence(model, Xe, ye, we, solver=solver)
        assert np.shares_memory(inf.X, Xe)
        ye[:] = 1 - ye
        we[:] = 1.0
        np.testing.assert_allclose(inf.self_influence(), expected.self_influence(), rtol=1e-7, atol=1e-12)
        Xe[299, 3] += 1e-12  # one value of the last row, by a few ulps
        for query in (inf.self_influence, lambda: inf.on_loss(X[:3], y[:3]), lambda: inf.on_loss(X[:300], y[:300]),
                      lambda: inf.top_k(X[:2], y[:2], k=3), lambda: inf.params([299])):
            with pytest.raises(uw.InputError, match="^X: the array was changed after this influence was built"):
                query()
        # an answer that reads no changed row is about the old data alone (with CG, every solve reads them all)
        if solver == "direct":
            np.testing.assert_allclose(inf.params([5]), expected.params([5]), rtol=1e-7, atol=1e-12)
        Xe[299, 3] = X[299, 3]  # the same values again: the answers are about them
        np.testing.assert_allclose(inf.on_loss(X[:3], y[:3]), expected.on_loss(X[:3], y[:3]), rtol=1e-7, atol=1e-12)
    # float32 X, and a sparse matrix's data (always copied) edited in place
    X32 = X.astype(np.float32)
    m32 = uw.LogisticRegression(l2=0.05).fit(X32, y)
    inf = uw.Influence(m32, X32, y)
    first = inf.self_influence()
    X32[0, 0] = np.float32(np.nan)
    with pytest.raises(uw.InputError, match="^X: the array was changed"):
        inf.self_influence()
    X32[0, 0] = np.float32(X[0, 0])
    np.testing.assert_array_equal(inf.self_influence(), first)
    S = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    ms = uw.LogisticRegression(l2=0.05).fit(S, y)
    ref = uw.Influence(ms, S.copy(), y).self_influence()
    inf = uw.Influence(ms, S, y)
    S.data *= 3
    np.testing.assert_array_equal(inf.self_influence(), ref)
    # a core built lazily after the edit (solver="auto" forms H on a large query) refuses too
    Xe = X.copy()
    inf = uw.Influence(model, Xe, y, w, solver="auto")
    inf.on_loss(X[:1], y[:1])
    Xe[0] *= 2
    with pytest.raises(uw.InputError, match="^X: the array was changed"):
        inf.on_loss(X, y)
    # a .npy file: rewritten -> every later query refuses; a relative path survives os.chdir
    monkeypatch.chdir(tmp_path)
    np.save("train.npy", X)
    inf = uw.Influence(model, "train.npy", y, w)
    first = inf.self_influence()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    np.save("train.npy", X * 10)  # a different file with the same relative name
    np.testing.assert_array_equal(inf.self_influence(), first)
    np.save(tmp_path / "train.npy", X * 10)  # the file itself rewritten
    with pytest.raises(uw.InputError, match="^X: the file .* changed"):
        inf.self_influence()
    with pytest.raises(uw.InputError, match="^X: the file .* changed"):
        inf.top_k(X[:2], y[:2], k=3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_large_training_matrix_is_read_in_place_or_kept_as_a_private_copy(dtype):
    """By default a training matrix of megabytes is read where it is (no second copy), with the
    same answers as a private copy; copy=True keeps a copy equal to the original in value,
    dtype and layout, whose answers ignore later edits of the caller's array; the default's
    queries refuse them."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((8000, 40)).astype(dtype)
    y = (X[:, 0] + rng.standard_normal(len(X)) > 0).astype(float)
    model = uw.LogisticRegression(l2=0.01).fit(X, y)
    original = X.copy()
    inf = uw.Influence(model, X, y, copy=True)
    shared = uw.Influence(model, X, y)
    expected = inf.on_loss(original[:5], y[:5])
    assert not np.shares_memory(inf.X, X) and inf.X.dtype == dtype and inf.X.flags.c_contiguous
    assert shared.X is X
    np.testing.assert_array_equal(shared.on_loss(original[:5], y[:5]), expected)
    X[:] = 0.0  # the caller reuses their buffer
    np.testing.assert_array_equal(inf.X, original)
    np.testing.assert_array_equal(inf.on_loss(original[:5], y[:5]), expected)
    with pytest.raises(uw.InputError, match="^X: the array was changed"):
        shared.on_loss(original[:5], y[:5])


def _adapters():
    """(name, build) pairs: each build returns (model, X, y, w) fitted one way or another."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((120, 3))
    eta = X @ np.array([0.8, -0.5, 0.3])
    yb = (rng.random(120) < 1 / (1 + np.exp(-eta))).astype(float)
    y3 = rng.integers(0, 3, 120).astype(float)
    yr = eta + 0.3 * rng.standard_normal(120)
    yc = rng.poisson(np.exp(0.3 * eta)).astype(float)
    w = rng.uniform(0.5, 1.5, 120)
    out = [
        ("LinearRegression", lambda: (uw.LinearRegression(l2=0.1).fit(X, yr, w), X, yr, w)),
        ("LogisticRegression", lambda: (uw.LogisticRegression(l2=0.1).fit(X, yb, w), X, yb, w)),
        ("multinomial", lambda: (uw.LogisticRegression(l2=0.1).fit(X, y3, w), X, y3, w)),
        ("PoissonRegression", lambda: (uw.PoissonRegression(l2=0.1).fit(X, yc, w), X, yc, w)),
    ]
    try:
        import sklearn.linear_model as sk
    except ImportError:
        return out
    def from_sk(est, y):
        return lambda: (uw.Influence.from_sklearn(est.fit(X, y, sample_weight=w), X, y, w).model, X, y, w)
    out += [
        ("sklearn Ridge", from_sk(sk.Ridge(alpha=2.0), yr)),
        ("sklearn LogisticRegression", from_sk(sk.LogisticRegression(C=0.5), yb)),
        ("sklearn LogisticRegression multinomial", from_sk(sk.LogisticRegression(C=0.5), y3)),
        ("sklearn PoissonRegressor", from_sk(sk.PoissonRegressor(alpha=0.1), yc)),
    ]
    return out


@pytest.mark.parametrize("name, build", _adapters(), ids=[a[0] for a in _adapters()])
def test_a_saved_and_loaded_model_gives_bit_identical_influence(tmp_path, name, build):
    """Every field that changes the math (the penalty convention of scikit-learn's sum-of-losses
    estimators included) survives save_model / load_model."""
    model, X, y, w = build()
    uw.save_model(model, tmp_path / "m.npz")
    loaded = uw.load_model(tmp_path / "m.npz")
    assert loaded.penalty_renormalized == model.penalty_renormalized and loaded.l2 == model.l2
    a, b = uw.Influence(model, X, y, w, solver="direct"), uw.Influence(loaded, X, y, w, solver="direct")
    np.testing.assert_array_equal(b.params(), a.params())
    np.testing.assert_array_equal(b.on_loss(X[:4], y[:4]), a.on_loss(X[:4], y[:4]))


@pytest.mark.parametrize("bad", ["negative weight", "separable", "class without weight"])
def test_a_fit_that_raises_leaves_the_estimator_as_it_was(bad):
    """All or nothing: a failed refit keeps the previous fit whole (no new classes_ beside the
    old theta_), and a failed first fit leaves no fitted attribute behind."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((60, 3))
    y = rng.integers(0, 2, 60).astype(float)
    X3, y3 = X, np.r_[y[:-3], 2.0, 2.0, 2.0]  # a three-class fit before the failing call
    kwargs = {}
    if bad == "negative weight":
        kwargs["sample_weight"] = np.r_[-1.0, np.ones(59)]
        Xb, yb, err = X, y, uw.InputError
    elif bad == "separable":
        Xb, yb, err = X, (X[:, 0] > 0).astype(float), uw.SingularHessianError
    else:
        Xb, yb, err = X, np.where(y == 1, 2.0, 0.0), uw.InputError
    model = uw.LogisticRegression().fit(X3, y3)
    before = (model.get_theta().copy(), model.classes_.copy(), model.predict_proba(X[:5]))
    with pytest.raises(err):
        model.fit(Xb, yb, **kwargs)
    np.testing.assert_array_equal(model.get_theta(), before[0])
    np.testing.assert_array_equal(model.classes_, before[1])
    np.testing.assert_array_equal(model.predict_proba(X[:5]), before[2])
    fresh = uw.LogisticRegression()
    with pytest.raises(err):
        fresh.fit(Xb, yb, **kwargs)
    for name in ("theta_", "classes_", "n_features_in_", "n_iter_"):
        assert getattr(fresh, name, None) is None, name


@pytest.mark.parametrize("build", [lambda: uw.LogisticRegression(l2=1e-2), lambda: uw.MLPClassifier(hidden=(3,), l2=1e-2, random_state=0)],
                         ids=["glm", "network"])
def test_a_set_theta_that_raises_leaves_the_estimator_as_it_was(build):
    """set_theta declares the width and the outputs before it checks the length: a refusal must
    not leave a model whose width no longer matches its parameters; NaN is refused, never stored."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 5))
    y = (X[:, 0] + rng.standard_normal(80) > 0).astype(float)
    model = build().fit(X, y)
    theta, proba = model.get_theta().copy(), model.predict_proba(X[:4])
    bad = [dict(theta=np.zeros(22), n_features=10), dict(theta=np.r_[theta[:-1], np.nan]),
           dict(theta=theta, n_features=-1), dict(theta=theta, n_features=1.5)]
    for kwargs in bad:
        with pytest.raises(uw.InputError, match="theta|n_features"):
            model.set_theta(**kwargs)
        assert model.n_features_in_ == 5
        np.testing.assert_array_equal(model.get_theta(), theta)
        np.testing.assert_array_equal(model.predict_proba(X[:4]), proba)


def test_nan_written_into_a_shared_array_is_named_as_such():
    """By default the caller's X is read where it is: NaN written into it later is refused as a
    change of X (not reported as an overflow of the computation), and the same array kept
    with copy=True is unaffected."""
    rng = np.random.default_rng(8)
    X = rng.standard_normal((50, 3))
    y = (X[:, 0] > 0.3 * rng.standard_normal(50)).astype(float)
    inf = uw.Influence(uw.LogisticRegression(l2=0.1).fit(X, y), X, y)
    kept = uw.Influence(uw.LogisticRegression(l2=0.1).fit(X[5:], y[5:]), X[5:], y[5:], copy=True)
    X[4, 1] = np.nan
    with pytest.raises(uw.InputError, match="^X: the array was changed after this influence was built from it without a copy"):
        inf.self_influence()
    X[6, 0] = np.nan
    assert np.isfinite(kept.self_influence()).all()


def test_gradient_influence_reads_train_grads_in_place_and_refuses_them_once_changed(tmp_path):
    """GradientInfluence keeps the caller's train_grads as Influence keeps X: read in place by
    default (the same answers as a copy), refused once edited (also when saving a curvature
    computed from them), snapshotted with copy=True."""
    rng = np.random.default_rng(9)
    G = rng.standard_normal((200, 6))
    Gt = rng.standard_normal((3, 6))
    snapshot = uw.GradientInfluence(G, damping=0.1, copy=True)
    shared = uw.GradientInfluence(G, damping=0.1)
    lanczos = uw.GradientInfluence(G, damping=0.1, solver="arnoldi", rank=3)
    expected = snapshot.on_loss(Gt)
    np.testing.assert_array_equal(shared.on_loss(Gt), expected)
    G[150, 2] = -G[150, 2]
    with pytest.raises(uw.InputError, match="^train_grads: the array was changed after this influence was built"):
        shared.on_loss(Gt)
    with pytest.raises(uw.InputError, match="^train_grads: the array was changed after this influence was built"):
        lanczos.save_curvature(tmp_path / "c.npz")
    np.testing.assert_array_equal(snapshot.on_loss(Gt), expected)
