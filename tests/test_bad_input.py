"""The bad-input table (issue 5): one row per kind of bad input, run through every public entry
point, and the CLI, that takes the argument it corrupts.

Each (row, entry point) pair is one test case. A case passes when the call raises the package's
own exception (``InputError``, a ``ValueError``; ``InputTypeError``, a ``TypeError``; never
``InternalError``), with a message naming the argument as that entry point calls it and, for
NaN/inf and invalid labels, the first offending index. Rows in ``MUST_WORK`` (Fortran-ordered,
strided, read-only arrays) must instead give the same result as a plain C-contiguous array.

Channels are the kinds of argument: training ``X``/``y``/``w`` (sample weights), test
``X_test``/``y_test``, one new point ``x``, per-example gradients ``G`` (train) and ``G_test``,
query gradients ``g`` and an explicit Hessian ``H``. Files (truncated, mislabelled, pickled,
a memmap whose file was truncated underneath it) are the ``FILE_ROWS``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
from collections.abc import Callable

import numpy as np
import pytest

import upweight as uw
from upweight import cli

N, D = 20, 3
P = D + 1


@dataclasses.dataclass
class Ctx:
    """Valid arguments for every channel, and the fitted objects the entry points need."""

    kind: str  # "logistic" or "multinomial" (k = 3)
    arrays: dict
    model: object
    inf: uw.Influence
    gi: uw.GradientInfluence
    tmp: object

    def estimator(self):
        return uw.LogisticRegression(l2=1e-2, n_classes=3 if self.kind == "multinomial" else None)


def make_ctx(kind: str, tmp) -> Ctx:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, D))
    k = 3 if kind == "multinomial" else 2
    y = (np.arange(N) % k).astype(float)
    p = P * (k if kind == "multinomial" else 1)
    G = rng.standard_normal((N, 4))
    arrays = dict(
        X=X, y=y, w=rng.uniform(0.5, 2.0, N),
        X_test=X[:5] + 0.1, y_test=y[:5].copy(),
        x=X[0] + 0.2, y1=float(y[0]),
        G=G, G_test=G[:3] + 0.1, H=G.T @ G / N + np.eye(4),
        g=rng.standard_normal((2, p)),
    )
    arrays["gT"] = arrays["g"].T.copy()  # inverse_hvp takes right-hand sides as columns (p, r)
    model = uw.LogisticRegression(l2=1e-2, n_classes=3 if kind == "multinomial" else None).fit(X, y, sample_weight=arrays["w"])
    inf = uw.Influence(model, X, y, sample_weight=arrays["w"])
    gi = uw.GradientInfluence(G, hessian=arrays["H"], sample_weight=arrays["w"])
    return Ctx(kind, arrays, model, inf, gi, tmp)


# ---------------------------------------------------------------------------------------------
# entry points: (name, {channel: argument name as the call names it}, call(ctx, arrays))
# ---------------------------------------------------------------------------------------------


def _cli(ctx, a, command):
    """Run the CLI in-process on .npy files holding the arrays; raise its error as InputError."""
    tmp = ctx.tmp
    files = {}
    for key in ("X", "y", "w", "X_test", "y_test"):
        v = a[key]
        path = os.path.join(tmp, f"{key}.npy")
        if isinstance(v, str):  # a FILE_ROWS path
            path = v
        else:
            np.save(path, np.asarray(v), allow_pickle=np.asarray(v).dtype == object)
        files[key] = path
    out = os.path.join(tmp, "out.npz")
    args = [command, files["X"], "--y", files["y"], "--weights", files["w"], "--l2", "0.01", "-o", out, "--force", "-q"]
    if command == "fit":
        args += ["--family", "logistic"]
    else:
        model = os.path.join(tmp, "model.npz")
        uw.save_model(ctx.model, model, force=True)
        args += ["--model", model, "--query", files["X_test"], "--query-y", files["y_test"], "-k", "3"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(args)
    if code != 0:
        assert code == 2, err.getvalue()
        assert "Traceback" not in err.getvalue()
        raise uw.InputError(err.getvalue())
    return np.load(out)["helpful"] if command == "score" else None


# The CLI names files by their option (train, --y, --weights, --query, --query-y) or the data by
# its API name; either is accepted.
CLI_FIT_ARGS = {"X": "(X|train)", "y": "(y|--y)", "w": "(sample_weight|--weights)"}
CLI_SCORE_ARGS = {**CLI_FIT_ARGS, "X_test": "(X_test|query)", "y_test": "(y_test|--query-y)"}
TRAIN = {"X": "X", "y": "y", "w": "sample_weight"}

ENTRY_POINTS: list[tuple[str, dict, Callable]] = [
    # training data
    ("fit", TRAIN, lambda c, a: c.estimator().fit(a["X"], a["y"], sample_weight=a["w"]).theta_),
    ("Influence", TRAIN, lambda c, a: uw.Influence(c.model, a["X"], a["y"], sample_weight=a["w"]).self_influence()),
    ("Influence(cg)", TRAIN, lambda c, a: uw.Influence(c.model, a["X"], a["y"], sample_weight=a["w"], solver="cg").self_influence()),
    ("leave_one_out", TRAIN, lambda c, a: uw.leave_one_out(c.model, a["X"], a["y"], idx=[0], sample_weight=a["w"]).actual_params),
    ("leave_k_out", TRAIN, lambda c, a: uw.leave_k_out(c.model, a["X"], a["y"], [0, 1], sample_weight=a["w"]).actual_params),
    ("response_curve", TRAIN, lambda c, a: uw.response_curve(c.model, a["X"], a["y"], m=0, eps=[0.1], sample_weight=a["w"]).f),
    ("diagnostics", TRAIN, lambda c, a: uw.diagnostics(c.model, a["X"], a["y"], sample_weight=a["w"]).cooks_distance),
    ("cli fit", CLI_FIT_ARGS, lambda c, a: _cli(c, a, "fit")),
    ("cli score", CLI_SCORE_ARGS, lambda c, a: _cli(c, a, "score")),
    # test points
    ("on_loss", {"X_test": "X_test", "y_test": "y_test"}, lambda c, a: c.inf.on_loss(a["X_test"], a["y_test"])),
    ("top_k", {"X_test": "X_test", "y_test": "y_test"}, lambda c, a: c.inf.top_k(a["X_test"], a["y_test"], k=3).harmful),
    ("on_mean_loss", {"X_test": "X_test", "y_test": "y_test"}, lambda c, a: c.inf.on_mean_loss(a["X_test"], a["y_test"])),
    ("on_loss_gap", {"X_test": "X_test", "y_test": "y_test"},
     lambda c, a: c.inf.on_loss_gap(a["X_test"], a["y_test"], c.arrays["X"], c.arrays["y"])),
    ("on_prediction", {"X_test": "X_test"}, lambda c, a: c.inf.on_prediction(a["X_test"])),
    ("leave_one_out(test)", {"X_test": "X_test", "y_test": "y_test"},
     lambda c, a: uw.leave_one_out(c.model, c.arrays["X"], c.arrays["y"], idx=[0], X_test=a["X_test"], y_test=a["y_test"],
                                   sample_weight=c.arrays["w"]).predicted_loss),
    ("predict_proba", {"X_test": "X"}, lambda c, a: c.model.predict_proba(a["X_test"])),
    ("decision_function", {"X_test": "X"}, lambda c, a: c.model.decision_function(a["X_test"])),
    ("loss", {"X_test": "X", "y_test": "y"}, lambda c, a: c.model.loss(a["X_test"], a["y_test"])),
    ("score", TRAIN, lambda c, a: c.model.score(a["X"], a["y"], sample_weight=a["w"])),
    ("new_point", {"x": "x", "y1": "y"}, lambda c, a: c.inf.new_point(a["x"], a["y1"])),
    # gradients and curvature
    ("on", {"g": "grad_f"}, lambda c, a: c.inf.on(a["g"])),
    ("top_k_on", {"g": "grad_f"}, lambda c, a: c.inf.top_k_on(a["g"], k=3).helpful),
    ("inverse_hvp", {"gT": "g"}, lambda c, a: c.inf.inverse_hvp(a["gT"])),
    ("GradientInfluence", {"G": "train_grads", "w": "sample_weight", "H": "hessian"},
     lambda c, a: uw.GradientInfluence(a["G"], hessian=a["H"], sample_weight=a["w"]).self_influence()),
    ("GradientInfluence(fisher)", {"G": "train_grads", "w": "sample_weight"},
     lambda c, a: uw.GradientInfluence(a["G"], damping=1e-3, sample_weight=a["w"]).self_influence()),
    ("GradientInfluence.on_loss", {"G_test": "test_grads"}, lambda c, a: c.gi.on_loss(a["G_test"])),
    ("GradientInfluence.top_k", {"G_test": "test_grads"}, lambda c, a: c.gi.top_k(a["G_test"], k=3).harmful),
]

MATRICES = {"X", "X_test", "G", "G_test", "g", "gT", "H"}
VECTORS = {"y", "y_test", "w"}


def _put(a, flat_index, value):
    a = np.array(a, dtype=float)
    a.reshape(-1)[flat_index] = value
    return a


# ---------------------------------------------------------------------------------------------
# rows: (id, channels it applies to, transform(array, channel), exception, message ({arg}: the name))
# ---------------------------------------------------------------------------------------------

NAN_AT = r"{arg}: contains NaN or infinity \(first at ({rowcol}|index {at})\)"
ROWS = [
    ("3-d", MATRICES | VECTORS, lambda a, ch: np.asarray(a)[None, None], uw.InputError, r"{arg}\b"),
    ("1-d matrix", MATRICES - {"g", "G_test"}, lambda a, ch: np.asarray(a)[0], uw.InputError, r"{arg}\b"),
    ("wrong width", MATRICES, lambda a, ch: np.asarray(a)[:, :-1], uw.InputError,
     r"{arg}: (.* )?(has|holds) (\d+ (columns|entries per row)|shape)|to match {arg}$"),
    ("wrong height", {"gT"}, lambda a, ch: np.asarray(a)[:-1], uw.InputError, r"{arg}: has \d+ rows, expected p"),
    ("wrong width (point)", {"x"}, lambda a, ch: np.asarray(a)[:-1], uw.InputError, r"{arg}: has \d+ columns"),
    ("wrong length", {"y", "y_test", "w"}, lambda a, ch: np.asarray(a)[:-1], uw.InputError, r"{arg}: has \d+ entries"),
    ("empty", MATRICES | VECTORS, lambda a, ch: np.asarray(a)[:0], uw.InputError, r"{arg}: (.* )?(has no rows|has 0 entries|has shape)"),
    ("object dtype", MATRICES | VECTORS | {"x"}, lambda a, ch: np.asarray(a).astype(object), uw.InputTypeError, r"{arg}: .*dtype object"),
    ("str dtype", MATRICES | VECTORS | {"x"}, lambda a, ch: np.asarray(a).astype(str), uw.InputTypeError, r"{arg}: .*dtype <U"),
    ("complex dtype", MATRICES | VECTORS | {"x"}, lambda a, ch: np.asarray(a).astype(complex), uw.InputTypeError,
     r"{arg}: .*dtype (complex|<c16)"),
    ("NaN", MATRICES | VECTORS | {"x"}, lambda a, ch: _put(a, 4 if ch != "x" else 2, np.nan), uw.InputError, NAN_AT),
    ("inf", MATRICES | VECTORS | {"x"}, lambda a, ch: _put(a, 4 if ch != "x" else 2, -np.inf), uw.InputError, NAN_AT),
    ("NaN target (point)", {"y1"}, lambda a, ch: np.nan, uw.InputError, r"{arg}: contains NaN"),
    ("negative weight", {"w"}, lambda a, ch: _put(a, 4, -1.0), uw.InputError, r"{arg}: must be >= 0, got -1(\.0)? at index 4"),
    ("all-zero weights", {"w"}, lambda a, ch: np.zeros_like(a), uw.InputError, r"{arg}: all weights are zero"),
    ("label not 0/1", {"y", "y_test"}, lambda a, ch: _put(a, 4, 0.5), uw.InputError, r"{arg}: (value|class id) 0.5 at index 4"),
    ("label negative", {"y", "y_test"}, lambda a, ch: _put(a, 4, -1.0), uw.InputError, r"{arg}: (value|class id) -1(\.0)? at index 4"),
    ("label (point)", {"y1"}, lambda a, ch: 7.0, uw.InputError, r"{arg}: (value|class id) 7(\.0)? at index 0"),
]
# a multinomial model with k = 3 classes given a 4th class (k mismatch)
K_ROWS = [
    ("k mismatch", {"y", "y_test"}, lambda a, ch: _put(a, 4, 3.0), uw.InputError, r"{arg}: (value|class id) 3(\.0)? at index 4"),
]

MUST_WORK = {
    "fortran": lambda a: np.asfortranarray(a),
    "strided": lambda a: np.repeat(np.asarray(a), 2, axis=0)[::2],
    "read-only": lambda a: _readonly(a),
}


def _readonly(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


# Which (row, entry point) pairs do not apply, and why.
SKIP = {
    ("wrong width", "fit"): "fitting on any width is legal",
    ("wrong width", "cli fit"): "fitting on any width is legal",
    ("wrong width", "GradientInfluence(fisher)"): "any number of parameters is legal without a Hessian",
    ("wrong width", "inverse_hvp"): "fewer columns are fewer right-hand sides",
    ("empty", "inverse_hvp"): "zero right-hand sides give a (p, 0) result, like numpy.linalg.solve",
    ("k mismatch", "cli fit"): "fitting learns the number of classes from the labels",
}
# the CLI reads .npy files: an object array is a pickled file, refused as such
CLI_MESSAGES = {"object dtype": r"{arg}: .*pickle"}


def _cases(rows, kind):
    out = []
    for row_id, channels, transform, exc, message in rows:
        for ep, names, _call in ENTRY_POINTS:
            if kind == "multinomial" and ep.startswith(("GradientInfluence", "diagnostics")):
                continue
            if (row_id, ep) in SKIP:
                continue
            want, pattern = exc, message
            if ep.startswith("cli"):  # exit status 2 and the message; no exception class
                want, pattern = (uw.InputError, uw.InputTypeError), CLI_MESSAGES.get(row_id, message)
            for ch in sorted(channels & names.keys()):
                out.append(pytest.param(kind, row_id, ch, transform, want, pattern, ep, id=f"{row_id}-{ch}-{ep}"))
    return out


CASES = _cases(ROWS, "logistic") + _cases(K_ROWS, "multinomial")


@pytest.fixture(scope="module")
def contexts(tmp_path_factory):
    return {kind: make_ctx(kind, str(tmp_path_factory.mktemp(kind))) for kind in ("logistic", "multinomial")}


def _entry(ep):
    return next(e for e in ENTRY_POINTS if e[0] == ep)


@pytest.mark.parametrize("kind, row_id, ch, transform, exc, message, ep", CASES)
def test_bad_input_raises_a_clear_error(contexts, kind, row_id, ch, transform, exc, message, ep):
    ctx = contexts[kind]
    _, names, call = _entry(ep)
    a = dict(ctx.arrays)
    a[ch] = transform(a[ch], ch)
    with pytest.raises(exc) as info:
        call(ctx, a)
    err = info.value
    assert not isinstance(err, uw.InternalError)
    assert isinstance(err, (ValueError, TypeError)) and isinstance(err, uw.UpweightError)
    at = 2 if ch == "x" else 4
    shape = np.shape(ctx.arrays[ch])
    # a matrix: where it is (a single point x is one row)
    rowcol = f"row {at // shape[1]}, column {at % shape[1]}" if len(shape) == 2 else f"row 0, column {at}" if ch == "x" else "-"
    pattern = message.replace("{arg}", names[ch]).replace("{at}", str(at)).replace("{rowcol}", rowcol)
    assert re.search(pattern, str(err)), f"{ep}: message {str(err)!r} does not match {pattern!r}"


WORK_CASES = [
    pytest.param(layout, ch, ep, id=f"{layout}-{ch}-{ep}")
    for layout in MUST_WORK
    for ep, names, _ in ENTRY_POINTS
    if not ep.startswith("cli")
    for ch in sorted(names.keys() & (MATRICES | VECTORS))
    if not (layout == "strided" and ch == "H")  # a strided square matrix is no longer square
]


@pytest.mark.parametrize("layout, ch, ep", WORK_CASES)
def test_unusual_layouts_give_the_same_result(contexts, layout, ch, ep):
    ctx = contexts["logistic"]
    _, _, call = _entry(ep)
    a = dict(ctx.arrays)
    a[ch] = MUST_WORK[layout](a[ch])
    if layout == "strided":
        assert not a[ch].flags.c_contiguous
    np.testing.assert_array_equal(np.asarray(call(ctx, a)), np.asarray(call(ctx, dict(ctx.arrays))))


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def _truncated(tmp, a):
    path = os.path.join(tmp, "truncated.npy")
    np.save(path, a)
    os.truncate(path, os.path.getsize(path) - 9)
    return path


def _not_npy(tmp, a):
    path = os.path.join(tmp, "csv.npy")
    with open(path, "w") as f:
        f.write("a,b,c\n1,2,3\n")
    return path


def _pickled(tmp, a):
    path = os.path.join(tmp, "pickled.npy")
    np.save(path, np.asarray(a).astype(object), allow_pickle=True)
    return path


FILE_ROWS = [("truncated", _truncated, r"truncated|cannot read|not a readable"),
             ("not a .npy file", _not_npy, r"not a|cannot read"),
             ("pickled", _pickled, r"pickle")]

FILE_ENTRY_POINTS = {  # channel -> entry points taking a path for it
    "X": ["fit", "Influence", "Influence(cg)", "cli fit", "cli score"],
    "G": ["GradientInfluence", "GradientInfluence(fisher)"],
    "y": ["cli fit", "cli score"],
    "w": ["cli fit", "cli score"],
    "X_test": ["cli score"],
    "y_test": ["cli score"],
}

FILE_CASES = [
    pytest.param(row_id, make, message, ch, ep, id=f"{row_id}-{ch}-{ep}")
    for row_id, make, message in FILE_ROWS
    for ch, eps in FILE_ENTRY_POINTS.items()
    for ep in eps
]


@pytest.mark.parametrize("row_id, make, message, ch, ep", FILE_CASES)
def test_bad_files_raise_a_clear_error(contexts, tmp_path, row_id, make, message, ch, ep):
    ctx = contexts["logistic"]
    _, names, call = _entry(ep)
    a = dict(ctx.arrays)
    a[ch] = make(str(tmp_path), a[ch])
    with pytest.raises(uw.InputError) as info:
        call(ctx, a)
    assert not isinstance(info.value, uw.InternalError)
    text = str(info.value)
    assert re.search(names[ch], text) and re.search(message, text), f"{ep}: {text!r}"


@pytest.mark.parametrize("ch, ep", [(ch, ep) for ch, eps in FILE_ENTRY_POINTS.items() if ch in ("X", "G")
                                    for ep in eps if not ep.startswith("cli")])
def test_a_memmap_truncated_underneath_is_refused_not_a_crash(contexts, tmp_path, ch, ep):
    """A memmap (np.load(..., mmap_mode="r")) whose file is then truncated would SIGBUS when
    touched; upweight reads the file by path with length checks, so it raises instead."""
    ctx = contexts["logistic"]
    _, names, call = _entry(ep)
    path = str(tmp_path / "m.npy")
    np.save(path, ctx.arrays[ch])
    a = dict(ctx.arrays)
    a[ch] = np.load(path, mmap_mode="r")
    np.testing.assert_array_equal(call(ctx, a), call(ctx, dict(ctx.arrays)))  # intact: works
    os.truncate(path, os.path.getsize(path) - 64)
    with pytest.raises(uw.InputError, match=rf"{names[ch]}: .*truncated"):
        call(ctx, a)


def test_the_table_is_large(contexts):
    """The counts tests/README.md reports."""
    assert len(CASES) >= 250 and len(WORK_CASES) >= 60 and len(FILE_CASES) >= 20


@pytest.mark.parametrize("w_big", [1e308, 1e305])
def test_weights_too_large_to_sum_blame_sample_weight_not_x(w_big):
    """The objective is the weighted mean loss, so only the weights' ratios matter: weights whose
    sum overflows are refused naming sample_weight (not "X ... overflowed"), with what to do."""
    X = np.random.default_rng(0).standard_normal((20, 2))
    y = (X[:, 0] > 0).astype(float)
    w = np.full(20, w_big)
    with pytest.raises(uw.InputError, match="sample_weight: too large to sum in float64 .* divide them all by one constant"):
        uw.LogisticRegression(l2=0.1).fit(X, y, sample_weight=w)
    a = uw.LogisticRegression(l2=0.1).fit(X, y, sample_weight=w / w_big)  # the advice works
    b = uw.LogisticRegression(l2=0.1).fit(X, y)
    np.testing.assert_allclose(a.get_theta(), b.get_theta(), rtol=1e-12)


def test_missing_files_are_missing_file_errors_naming_the_argument(tmp_path):
    """Every reader says "missing" the same way: MissingFileError (an InputError and a
    FileNotFoundError) naming its argument."""
    with pytest.raises(uw.MissingFileError, match="model: no such file"):
        uw.load_model(tmp_path / "nope.npz")
    with pytest.raises(uw.MissingFileError, match="path"):
        uw.load_idx(tmp_path / "nope-idx3-ubyte")
    pytest.importorskip("dask")
    with pytest.raises(uw.MissingFileError, match="source: .* does not exist"):
        uw.dask.from_npy([tmp_path / "nope.npy"])
    pytest.importorskip("pyarrow")
    with pytest.raises(uw.MissingFileError, match="source: .* does not exist"):
        uw.dask.from_parquet(tmp_path / "nope.parquet", features=["a"])


def test_parquet_columns_are_named_by_the_argument_that_asked_for_them(tmp_path):
    pytest.importorskip("dask")
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"a": [1.0, 2.0], "y": [0.0, 1.0]}), tmp_path / "t.parquet")
    for kwargs, arg in [({"features": ["b"]}, "features"), ({"features": ["a"], "target": "label"}, "target"),
                        ({"features": ["a"], "target": "y", "weight": "w"}, "weight")]:
        with pytest.raises(uw.InputError, match=f"^{arg}: column"):
            uw.dask.from_parquet(tmp_path / "t.parquet", **kwargs)


def test_networks_on_dask_arrays_are_refused_by_name():
    """GLMs fit on Dask; networks do not yet, and must say so rather than load the data on the
    client (MLP.fit) or complain about a solver (uw.dask.fit)."""
    da = pytest.importorskip("dask.array")
    X = np.random.default_rng(0).standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(float)
    Xd, yd = da.from_array(X, chunks=(20, 3)), da.from_array(y, chunks=20)
    with pytest.raises(uw.InputError, match="X: networks are not yet supported on Dask"):
        uw.MLPClassifier(hidden=(2,)).fit(Xd, yd)
    with pytest.raises(uw.InputError, match="model: networks are not yet supported on Dask"):
        uw.dask.fit(uw.MLPClassifier(hidden=(2,)), Xd, yd)
