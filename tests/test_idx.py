"""IDX files (upweight.io.idx.load_idx) and the MNIST-format data set loaders (upweight.datasets).

The files are written here by a small writer of our own (not upweight's code): every type code,
1 to 3 dimensions, plain and gzip. Round trips, memory maps, and every way a file can be wrong
(each an InputError whose message starts with ``path:``, found from the header before anything
large is allocated); the loaders on folders of small synthetic files; and, when Debian's
``dataset-fashion-mnist`` is installed, the real Fashion-MNIST.
"""

import gzip
import os
import pathlib
import tempfile
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import upweight as uw
import upweight._validation
import upweight.datasets
from upweight.io import load_idx

#: IDX type code -> the big-endian dtype the format stores.
CODES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
REAL_DIR = "/usr/share/datasets/fashion-mnist"  # where `apt-get install dataset-fashion-mnist` puts it (dpkg -L)


def idx_bytes(a, code, dims=None) -> bytes:
    """An IDX file holding ``a`` as type ``code`` (``dims`` overrides the declared dimensions)."""
    a = np.asarray(a)
    dims = a.shape if dims is None else dims
    head = bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    return head + a.astype(CODES[code]).tobytes()


def write(path, data: bytes, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def native(code):
    return np.dtype(CODES[code]).newbyteorder("=")


@settings(max_examples=150, deadline=None)
@given(data=st.data(), code=st.sampled_from(sorted(CODES)), gz=st.booleans())
def test_every_type_and_shape_round_trips(data, code, gz):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6))
    a = data.draw(hnp.arrays(native(code), shape))
    with tempfile.TemporaryDirectory() as d:
        p = write(pathlib.Path(d) / "a.idx", idx_bytes(a, code), gz)
        out = load_idx(p)
        assert type(out) is np.ndarray and out.shape == a.shape and out.dtype == native(code)
        assert out.dtype.isnative and out.flags.writeable and out.flags.c_contiguous
        assert out.tobytes() == a.tobytes()  # bit for bit (NaN payloads, -0.0 included)
        if not gz:
            m = load_idx(str(p), mmap=True)
            assert m.shape == a.shape
            if m.size:
                assert isinstance(m, np.memmap)
            assert not m.flags.writeable
            assert m.dtype == (np.dtype(CODES[code]) if m.size else m.dtype)
            np.testing.assert_array_equal(np.asarray(m, dtype=native(code)), a)
            del m


def test_known_bytes_decode_to_known_values(tmp_path):
    # int16 -2, 258 and float32 1.5, written out by hand in big-endian order
    p = write(tmp_path / "i2", bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0xFF, 0xFE, 0x01, 0x02]))
    np.testing.assert_array_equal(load_idx(p), np.array([-2, 258], dtype=np.int16))
    p = write(tmp_path / "f4", bytes([0, 0, 0x0D, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0x3F, 0xC0, 0, 0]))
    out = load_idx(p)
    assert out.shape == (1, 1) and out.dtype == np.float32 and out[0, 0] == 1.5


def test_gzip_is_detected_by_its_bytes_not_its_name(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    plain_named_gz = write(tmp_path / "x-idx3-ubyte.gz", idx_bytes(a, 0x08))
    gzip_named_plain = write(tmp_path / "x-idx3-ubyte", idx_bytes(a, 0x08), gz=True)
    np.testing.assert_array_equal(load_idx(plain_named_gz), a)
    np.testing.assert_array_equal(load_idx(gzip_named_plain), a)
    assert isinstance(load_idx(plain_named_gz, mmap=True), np.memmap)


def test_mmap_of_bytes_is_the_array_and_read_only(tmp_path):
    a = (np.arange(60) % 256).astype(np.uint8).reshape(5, 12)
    m = load_idx(write(tmp_path / "u", idx_bytes(a, 0x08)), mmap=True)
    assert isinstance(m, np.memmap) and m.dtype == np.uint8 and not m.flags.writeable
    np.testing.assert_array_equal(m, a)
    with pytest.raises(ValueError):
        m[0, 0] = 1
    s = load_idx(write(tmp_path / "s", idx_bytes(a.astype(np.int8) - 3, 0x09)), mmap=True)
    assert s.dtype == np.int8
    np.testing.assert_array_equal(s, a.astype(np.int8) - 3)


def test_mmap_of_wider_types_keeps_the_big_endian_dtype(tmp_path):
    a = np.array([[1.5, -2.0], [np.inf, 3.25]])
    m = load_idx(write(tmp_path / "f8", idx_bytes(a, 0x0E)), mmap=True)
    assert isinstance(m, np.memmap) and m.dtype == np.dtype(">f8")  # documented
    np.testing.assert_array_equal(m, a)


def test_mmap_of_a_gzip_file_is_refused(tmp_path):
    p = write(tmp_path / "g", idx_bytes(np.zeros(3), 0x08), gz=True)
    with pytest.raises(uw.InputError, match=r"^path: .*gzip-compressed and cannot be memory-mapped"):
        load_idx(p, mmap=True)


def test_a_missing_file_is_a_file_not_found_input_error(tmp_path):
    with pytest.raises(uw.MissingFileError, match=r"^path: no such file .*nope") as info:
        load_idx(tmp_path / "nope")
    assert isinstance(info.value, uw.InputError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(uw.InputError, match=r"^path: .*is a directory"):
        load_idx(tmp_path)


def test_bad_arguments_are_type_errors(tmp_path):
    with pytest.raises(uw.InputTypeError, match="^path: expected a file path"):
        load_idx(3)
    p = write(tmp_path / "ok", idx_bytes(np.zeros(2), 0x08))
    with pytest.raises(uw.InputTypeError, match="^mmap: expected True or False"):
        load_idx(p, mmap="yes")


BAD_HEADERS = [
    (b"", "is empty"),
    (b"\x00", "is truncated: it ends inside the 4-byte magic number"),
    (b"\x00\x00\x08", "is truncated: it ends inside the 4-byte magic number"),
    (b"\x01", r"is not an IDX file: it starts with bytes 01"),
    (b"\x00\x01\x08\x01\x00\x00\x00\x01\x05", r"is not an IDX file: it starts with bytes 00 01"),
    (b"PK\x03\x04", r"is not an IDX file: it starts with bytes 50 4b"),
    (b"\x00\x00\x0a\x01\x00\x00\x00\x01\x05", r"has unknown IDX type code 0x0A \(expected one of 0x08 uint8, 0x09 int8, "
                                              r"0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64\)"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "has unknown IDX type code 0x07"),
    (b"\x00\x00\xff\x01\x00\x00\x00\x01\x05", "has unknown IDX type code 0xFF"),
    (b"\x00\x00\x08\x00", "declares 0 dimensions; an IDX array has at least one"),
    (b"\x00\x00\x08\x00\x05\x05", "declares 0 dimensions; an IDX array has at least one"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00", r"is truncated: its header declares 3 dimensions \(12 bytes\) but only 6 bytes"),
]


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("data, message", BAD_HEADERS)
def test_bad_headers_are_named(tmp_path, data, message, gz):
    p = write(tmp_path / "bad", data, gz)
    with pytest.raises(uw.InputError, match=f"^path: '.*bad' {message}"):
        load_idx(p)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("code", sorted(CODES))
def test_truncated_data_is_refused(tmp_path, code, gz):
    a = np.arange(12).reshape(3, 4)
    full = idx_bytes(a, code)
    p = write(tmp_path / "t", full[:-1], gz)  # one byte short
    need = 12 * np.dtype(CODES[code]).itemsize
    with pytest.raises(uw.InputError, match=rf"^path: .*is truncated: its header declares shape \(3, 4\) .*\({need} bytes of data\)"):
        load_idx(p)
    p = write(tmp_path / "t0", idx_bytes(a[:0], code, dims=(3, 4)), gz)  # a header and no data
    with pytest.raises(uw.InputError, match="^path: .*is truncated"):
        load_idx(p)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 1000])
def test_trailing_bytes_are_refused(tmp_path, extra, gz):
    p = write(tmp_path / "x", idx_bytes(np.arange(6).reshape(2, 3), 0x0C) + extra, gz)
    with pytest.raises(uw.InputError, match=r"^path: .*trailing bytes after the 24 bytes of data its header declares \(shape \(2, 3\)\)"):
        load_idx(p)
    if not gz:
        with pytest.raises(uw.InputError, match=f"^path: .*has {len(extra)} trailing bytes"):
            load_idx(p, mmap=True)


def test_gzip_stops_at_the_first_byte_too_many(tmp_path):
    # 1 MB of incompressible trailing bytes, then a gzip stream cut short: reading to the end would
    # report a truncated stream; stopping at the first extra byte reports trailing bytes
    rng = np.random.default_rng(0)
    body = idx_bytes(np.arange(10), 0x08) + rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
    p = tmp_path / "long.gz"
    p.write_bytes(gzip.compress(body)[:-2000])
    with pytest.raises(uw.InputError, match="^path: .*has trailing bytes after the 10 bytes"):
        load_idx(p)


def test_a_corrupt_or_cut_gzip_stream_is_an_input_error(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(2000) % 7, 0x08))
    with pytest.raises(uw.InputError, match="^path: .*truncated gzip file"):
        load_idx(write(tmp_path / "cut", good[: len(good) // 2]))
    with pytest.raises(uw.InputError, match="^path: .*corrupt gzip file"):
        load_idx(write(tmp_path / "bad", good[:10] + b"\xff" * 40 + good[50:]))


@pytest.mark.parametrize("gz", [False, True])
def test_dims_no_array_can_hold_are_refused(tmp_path, gz):
    big = 2**32 - 1
    for dims in ([big] * 255, [big, big, big]):  # (2^32-1)^255 and (2^32-1)^3 elements: beyond any intp
        p = write(tmp_path / "o", bytes([0, 0, 0x0E, len(dims)]) + big.to_bytes(4, "big") * len(dims) + b"\x00" * 8, gz)
        message = r"^path: .*declares shape \(4294967295, .* of float64, about 2\^\d+ bytes: more than any array can hold"
        with pytest.raises(uw.InputError, match=message):
            load_idx(p)


def test_a_forged_huge_header_allocates_nothing(tmp_path):
    # (2^16)^3 float64 = 2 PiB: more than this machine's memory, refused from the header alone
    dims = (2**16, 2**16, 2**16)
    forged = bytes([0, 0, 0x0E, 3]) + b"".join(d.to_bytes(4, "big") for d in dims) + b"\x00" * 64
    with pytest.raises(uw.InputError, match=r"^path: the result, shape \(65536, 65536, 65536\), would take .* GiB"):
        load_idx(write(tmp_path / "huge.gz", forged, gz=True))
    with pytest.raises(uw.InputError, match=r"^path: .*is truncated: .*\(2251799813685248 bytes of data\) but only 64 bytes"):
        load_idx(write(tmp_path / "huge", forged))
    # 500 MB declared, fits in memory, but a tiny gzip file cannot inflate to it
    small = bytes([0, 0, 0x08, 2]) + (25000).to_bytes(4, "big") + (20000).to_bytes(4, "big") + b"\x00" * 100
    tracemalloc.start()
    try:
        for gz in (True, False):
            with pytest.raises(uw.InputError, match=r"^path: .*is truncated: .*\(500000000 bytes of data\)"):
                load_idx(write(tmp_path / f"small{gz}", small, gz))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6


@pytest.mark.parametrize("gz", [False, True])
def test_an_array_larger_than_available_memory_is_refused_before_allocating(tmp_path, monkeypatch, gz):
    a = np.arange(1000, dtype=np.float64)
    p = write(tmp_path / "m", idx_bytes(a, 0x0E), gz)
    monkeypatch.setattr(upweight._validation, "available_memory", lambda: 4000)
    hint = "decompress .* and load it with mmap=True" if gz else r"so load_idx\(.*, mmap=True\) maps it instead"
    with pytest.raises(uw.InputError, match=rf"^path: the result, shape \(1000,\), would take .* GiB .* available; .*{hint}"):
        load_idx(p)
    if not gz:  # a map needs no memory
        np.testing.assert_array_equal(load_idx(p, mmap=True), a)


def test_the_empty_array_maps_to_an_empty_read_only_array(tmp_path):
    p = write(tmp_path / "e", idx_bytes(np.zeros((0, 28, 28), np.uint8), 0x08))
    for mm in (False, True):
        out = load_idx(p, mmap=mm)
        assert out.shape == (0, 28, 28) and out.dtype == np.uint8
    assert not load_idx(p, mmap=True).flags.writeable


# ---- the MNIST-format loaders, on small synthetic folders ----

def mnist_folder(root, n_train=12, n_test=5, gz=(True, False, False, True), rows=28, cols=28, seed=0):
    """A folder in MNIST's layout; ``gz`` says which of the four files are compressed."""
    rng = np.random.default_rng(seed)
    root.mkdir(exist_ok=True)
    parts = {}
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    for i, (kind, n) in enumerate([("train", n_train), ("test", n_test)]):
        images = rng.integers(0, 256, (n, rows, cols), dtype=np.uint8)
        labels = rng.permutation(np.arange(n, dtype=np.uint8) % 10)  # every class present once n >= 10
        for j, (arr, name) in enumerate([(images, names[2 * i]), (labels, names[2 * i + 1])]):
            compress = gz[2 * i + j]
            write(root / (name + (".gz" if compress else "")), idx_bytes(arr, 0x08), compress)
        parts[kind] = (images, labels)
    return root, parts


@pytest.mark.parametrize("loader", ["load_fashion_mnist", "load_mnist"])
@pytest.mark.parametrize("kind", ["train", "test"])
def test_the_loaders_read_a_folder_of_idx_files(tmp_path, loader, kind):
    folder, parts = mnist_folder(tmp_path / "d")
    images, labels = parts[kind]
    n = len(labels)
    load = getattr(uw.datasets, loader)
    X, y = load(kind, path=folder)
    assert X.shape == (n, 784) and X.dtype == np.float64 and y.shape == (n,) and y.dtype == np.int64
    np.testing.assert_array_equal(X, images.reshape(n, 784) / 255.0)
    np.testing.assert_array_equal(y, labels)
    assert 0 <= X.min() and X.max() <= 1
    X, _ = load(kind, path=str(folder), flatten=False, scale=False)
    assert X.shape == (n, 28, 28) and X.dtype == np.uint8 and X.flags.writeable
    np.testing.assert_array_equal(X, images)
    X, _ = load(kind, path=folder, flatten=False)
    assert X.shape == (n, 28, 28) and X.dtype == np.float64
    X, _ = load(kind, path=folder, scale=False)
    assert X.shape == (n, 784) and X.dtype == np.uint8


def test_the_loaders_are_exported():
    assert uw.load_fashion_mnist is uw.datasets.load_fashion_mnist and uw.load_mnist is uw.datasets.load_mnist
    assert uw.load_idx is load_idx and uw.io.load_idx is load_idx


def test_a_fitted_model_on_synthetic_mnist_files(tmp_path):
    folder, _ = mnist_folder(tmp_path / "d", n_train=40, n_test=3, rows=4, cols=4)
    X, y = uw.load_mnist(path=folder)
    assert X.shape == (40, 16)  # rows * cols for images that are not 28 x 28
    model = uw.LogisticRegression(l2=1.0).fit(X, y)
    assert np.isfinite(uw.Influence(model, X, y).self_influence()).all()


def test_fashion_mnist_says_how_to_install_it_when_absent(tmp_path, monkeypatch):
    monkeypatch.setattr(upweight.datasets, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
    with pytest.raises(uw.MissingFileError) as info:
        uw.datasets.load_fashion_mnist()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, uw.InputError)
    assert message.startswith("path: no folder ") and "Fashion-MNIST is not installed" in message
    assert "`apt-get install dataset-fashion-mnist`" in message and "MIT" in message and "path=" in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert name + "[.gz]" in message
    (tmp_path / "absent").mkdir()  # the folder, but not the files
    with pytest.raises(uw.MissingFileError, match="^path: no file train-images-idx3-ubyte or train-images-idx3-ubyte.gz in .*apt-get"):
        uw.datasets.load_fashion_mnist()


def test_loader_errors_name_their_argument(tmp_path):
    folder, _ = mnist_folder(tmp_path / "d")
    with pytest.raises(uw.InputError, match="^kind: expected 'train' or 'test', got 'valid'"):
        uw.load_mnist("valid", path=folder)
    with pytest.raises(uw.InputTypeError, match="^scale: expected True or False"):
        uw.load_mnist(path=folder, scale=255)
    with pytest.raises(TypeError):
        uw.load_mnist("train")  # path is required: no default copy of MNIST anywhere
    with pytest.raises(uw.MissingFileError, match="^path: no folder .*nowhere"):
        uw.load_mnist(path=tmp_path / "nowhere")
    with pytest.raises(uw.InputError, match="^path: .* is a file; pass the folder"):
        uw.load_mnist(path=folder / "t10k-labels-idx1-ubyte.gz")
    os.remove(folder / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(uw.MissingFileError, match="^path: no file t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz in "):
        uw.load_mnist("test", path=folder)
    uw.load_mnist("train", path=folder)  # the other part is still complete


def test_images_and_labels_must_match(tmp_path):
    folder, parts = mnist_folder(tmp_path / "d", gz=(False,) * 4)
    images, labels = parts["train"]
    write(folder / "train-labels-idx1-ubyte", idx_bytes(labels[:-1], 0x08))
    with pytest.raises(uw.InputError, match="^path: .*train-images-idx3-ubyte' holds 12 images but .*-labels-idx1-ubyte' holds 11 labels"):
        uw.load_mnist(path=folder)
    bad = labels.copy()
    bad[[3, 7]] = [10, 255]
    write(folder / "train-labels-idx1-ubyte", idx_bytes(bad, 0x08))
    with pytest.raises(uw.InputError, match=r"^path: .*has label 10 at index 3 \(2 labels outside 0..9\)"):
        uw.load_mnist(path=folder)
    write(folder / "train-labels-idx1-ubyte", idx_bytes(labels.astype(np.int32) - 1, 0x0C))
    with pytest.raises(uw.InputError, match="^path: .*has label -1 at index"):
        uw.load_mnist(path=folder)
    write(folder / "train-labels-idx1-ubyte", idx_bytes(labels, 0x08))
    write(folder / "train-images-idx3-ubyte", idx_bytes(images.reshape(12, 784), 0x08))
    with pytest.raises(uw.InputError, match=r"^path: .*holds uint8 of shape \(12, 784\); expected uint8 images of shape \(n, rows, cols\)"):
        uw.load_mnist(path=folder)
    write(folder / "train-images-idx3-ubyte", idx_bytes(images, 0x0D))
    with pytest.raises(uw.InputError, match="^path: .*holds float32 of shape"):
        uw.load_mnist(path=folder)
    write(folder / "train-images-idx3-ubyte", b"\x00\x00\x08\x03")
    with pytest.raises(uw.InputError, match="^path: .*train-images-idx3-ubyte' is truncated"):
        uw.load_mnist(path=folder)


# ---- the real thing, when installed ----

def test_the_real_fashion_mnist():
    if not os.path.isdir(REAL_DIR):
        pytest.skip(f"{REAL_DIR} is absent: apt-get install dataset-fashion-mnist (Debian's package, MIT licence)")
    assert uw.datasets.FASHION_MNIST_DIR == REAL_DIR
    X, y = uw.datasets.load_fashion_mnist("test")
    assert X.shape == (10000, 784) and X.dtype == np.float64 and y.shape == (10000,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [1000] * 10)  # Fashion-MNIST is balanced
    X, y = uw.datasets.load_fashion_mnist("train", flatten=False, scale=False)
    assert X.shape == (60000, 28, 28) and X.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y, minlength=10), [6000] * 10)
    assert uw.load_idx(os.path.join(REAL_DIR, "train-labels-idx1-ubyte.gz")).dtype == np.uint8
    X, y = uw.datasets.load_fashion_mnist("train")
    assert X.shape == (60000, 784) and 0 <= y.min() and y.max() == 9
