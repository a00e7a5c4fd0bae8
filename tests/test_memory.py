"""Memory (issue 11, items 2 and 3): no allocation may abort the process. Sizes are checked
before allocating (MemoryError naming what it was for, or InputError for a file that cannot
hold what its header claims), and blocks are sized from p so that a wide model streams in
bounded memory. Each case runs where it would have died: in a subprocess under an address-space
limit when the point is that it completes."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.sparse as sp

import upweight as uw
from upweight import _core
from upweight.errors import InputError

RNG = np.random.default_rng(3)


def bag_of_words(n=120, d=200_000, seed=0):
    """The sparse shape the documentation quotes: d = 200000 columns, a few nonzeros per row."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=2e-4, format="csr", random_state=np.random.RandomState(seed))
    X.data = rng.random(X.data.size)
    y = (rng.random(n) < 0.5).astype(float)
    return X, y


def test_a_hessian_larger_than_memory_is_a_memory_error_before_any_work():
    X, y = bag_of_words()
    with pytest.raises(MemoryError, match=r"the Hessian \(p x p, twice\) would need .* of memory are available"):
        uw.LogisticRegression(l2=1e-2, solver="direct").fit(X, y)
    model = uw.LogisticRegression(l2=1e-2, solver="cg").fit(X, y)
    with pytest.raises(MemoryError, match="the Hessian"):
        uw.Influence(model, X, y, solver="direct")


def test_a_score_matrix_larger_than_memory_is_refused_and_top_k_streams():
    X = RNG.standard_normal((100_000, 1))
    y = X[:, 0] + RNG.standard_normal(100_000)
    inf = uw.Influence(uw.LinearRegression().fit(X, y), X, y)
    Xt = RNG.standard_normal((2_000_000, 1))  # 2e6 x 1e5 scores: 1.5 TB
    with pytest.raises(InputError, match=r"X_test: the result, shape \(2000000, 100000\), would take .* GiB"):
        inf.on_loss(Xt, Xt[:, 0])
    # the streaming answer to the same question works: top-k never holds the matrix
    assert inf.top_k(Xt[:1000], Xt[:1000, 0], k=3).helpful_idx.shape == (1000, 3)


@pytest.mark.parametrize("k, d", [(10**7, 3), (2**62, 2**62)])
def test_the_core_refuses_impossible_class_counts(k, d):
    """Below the estimators' label checks: the core itself never allocates k-sized blocks it
    cannot hold, nor a parameter count that overflows."""
    with pytest.raises(MemoryError):
        model = _core.Model.glm("multinomial", k, d)
        X = np.zeros((4, 3))
        model.fit(X, np.zeros(4), None, 0.0, 1e-10, 10)


def forged_npy(path, shape=(4_000_000_000, 1000)):
    """A .npy header claiming a huge float64 array over no data at all."""
    header = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (118 - len(header)) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode())


def test_a_forged_npy_header_is_an_input_error_in_the_api_and_the_cli(tmp_path):
    path = tmp_path / "forged.npy"
    forged_npy(path)
    np.save(tmp_path / "y.npy", np.zeros(4))
    with pytest.raises(InputError, match="X: .*forged.npy"):
        uw.LinearRegression().fit(str(path), np.zeros(4))
    run = subprocess.run([sys.executable, "-m", "upweight.cli", "fit", str(path), "--y", str(tmp_path / "y.npy"),
                          "-o", str(tmp_path / "m.npz")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 or run.returncode == 1, (run.returncode, run.stderr)  # an error, not a signal
    assert "forged.npy" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "m.npz").exists()


CAPPED = """
import resource, sys
import numpy as np, scipy.sparse as sp
cap = 2 << 30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
import upweight as uw
sys.path.insert(0, {tests!r})
from test_memory import bag_of_words
X, y = bag_of_words()
model = uw.LogisticRegression(l2=1e-2, solver="cg").fit(X, y)
inf = uw.Influence(model, X, y, solver="cg")
s = inf.self_influence()
np.save({out!r}, s)
"""


def test_cg_self_influence_on_the_readme_bag_of_words_shape_fits_in_2_gib(tmp_path):
    """d = 200000 sparse with CG: blocks of per-example solves are sized from p (a 512 x p
    block per thread was 819 MB each, several per thread), so 2 GiB of address space suffice."""
    out = tmp_path / "s.npy"
    code = textwrap.dedent(CAPPED).format(tests=os.path.dirname(__file__), out=str(out))
    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    capped = np.load(out)
    # the same numbers as the unlimited process, and the definition: self-influence = g . I(z)
    X, y = bag_of_words()
    model = uw.LogisticRegression(l2=1e-2, solver="cg").fit(X, y)
    inf = uw.Influence(model, X, y, solver="cg")
    np.testing.assert_array_equal(capped, inf.self_influence())
    idx = np.array([0, 5, 77])
    grads = model.core_model().per_example_grads(model.get_theta(), X[idx].toarray(), y[idx])
    direct = np.einsum("ij,ij->i", grads, inf.params(idx=idx))
    np.testing.assert_allclose(capped[idx], direct, rtol=1e-6)
