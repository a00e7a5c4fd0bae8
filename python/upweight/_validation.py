"""Argument checks shared by the public API. Each error names the argument."""

from __future__ import annotations

import mmap
import numbers
import os
import sys
from collections.abc import Callable

import numpy as np

from . import _core
from .errors import InputError, InputTypeError, UpweightError


def check_finite(a: np.ndarray, name: str) -> None:
    """InputError naming ``name`` and the first NaN/inf of a small array (its row and column
    for a matrix, as the core says it)."""
    bad = ~np.isfinite(a)
    if bad.any():
        first = int(np.argmax(bad))  # row-major
        where = f"row {first // a.shape[1]}, column {first % a.shape[1]}" if a.ndim == 2 else f"index {first}"
        raise InputError(f"{name}: contains NaN or infinity (first at {where})")


def _numeric(a, name: str) -> np.ndarray:
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists and the like
        raise InputTypeError(f"{name}: cannot be converted to a numeric array ({exc})") from None
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if arr.dtype.kind not in "iuf":
        raise InputTypeError(
            f"{name}: expected a real numeric array, got dtype {arr.dtype}"
        )
    return arr


def is_dask(a) -> bool:
    """Whether ``a`` is a dask array (checked by type name: dask is not imported for this)."""
    return type(a).__module__.startswith("dask.") and type(a).__name__ == "Array"


def is_sparse(a) -> bool:
    """A scipy.sparse matrix or array (without importing scipy when the caller has not)."""
    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(a)


def as_csr(a, name: str, n_features: int | None = None) -> tuple:
    """A scipy.sparse matrix as the core takes it: (data float64, indices int32, indptr int64,
    n_columns), in canonical CSR form (sorted column indices, no duplicates). Never densified."""
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-d sparse matrix, got {a.ndim}-d shape {a.shape}")
    if a.dtype.kind not in "biuf":
        raise InputTypeError(f"{name}: expected a real numeric sparse matrix, got dtype {a.dtype}")
    n, d = a.shape
    if n == 0:
        raise InputError(f"{name}: has no rows")
    if n_features is not None and d != n_features:
        raise InputError(f"{name}: has {d} columns but the model has {n_features} features")
    if d >= 2**31:
        raise InputError(f"{name}: more than 2^31 - 1 columns are not supported")
    csr = a.tocsr()
    if not csr.has_canonical_format:
        csr = csr.copy()
        csr.sum_duplicates()
    return (
        np.ascontiguousarray(csr.data, dtype=np.float64),
        np.ascontiguousarray(csr.indices, dtype=np.int32),
        np.ascontiguousarray(csr.indptr, dtype=np.int64),
        int(d),
    )


def as_points(a, name: str, n_features: int | None = None):
    """Features for the core's per-point kernels: a CSR tuple (see :func:`as_csr`) for sparse
    input, else a float64 array (:func:`as_matrix`)."""
    if is_sparse(a):
        return as_csr(a, name, n_features)
    return as_matrix(a, name, n_features)


def n_rows(points) -> int:
    """Number of rows of what :func:`as_points` returned."""
    return points[2].size - 1 if isinstance(points, tuple) else points.shape[0]


def as_matrix(a, name: str, n_features: int | None = None) -> np.ndarray:
    """A 2-d float64 C-contiguous array (float32 and integer input are converted; sparse input
    is densified: use it only where the result is dense anyway)."""
    if is_sparse(a):
        if n_features is not None and a.ndim == 2 and a.shape[1] != n_features:
            raise InputError(f"{name}: has {a.shape[1]} columns but the model has {n_features} features")
        a = a.toarray()
    arr = _numeric(unmapped(a, name), name)
    if arr.ndim != 2:
        hint = (f". Reshape your data: {name}.reshape(1, -1) if it is a single sample, {name}.reshape(-1, 1) if it has a "
                "single feature") if arr.ndim == 1 else ""
        raise InputError(f"{name}: expected a 2-d array (n_samples, n_features), got {arr.ndim}-d shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise InputError(f"{name}: has no rows")
    if n_features is not None and arr.shape[1] != n_features:
        raise InputError(f"{name}: has {arr.shape[1]} columns but the model has {n_features} features")
    return np.ascontiguousarray(arr, dtype=np.float64)


def as_vector(a, name: str, n: int | None = None) -> np.ndarray:
    """A 1-d float64 C-contiguous array of length n."""
    arr = _numeric(unmapped(a, name), name)
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-d array, got {arr.ndim}-d shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise InputError(f"{name}: has {arr.shape[0]} entries, expected {n} (one per row of X)")
    return np.ascontiguousarray(arr, dtype=np.float64)


def as_targets(a, name: str, n: int) -> np.ndarray:
    """Targets of a regression with one or several outputs: a finite float64 C-contiguous (n,)
    array for one target (a (n, 1) column counts as one), or (n, t) for t >= 2 per row."""
    arr = _numeric(unmapped(a, name), name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim not in (1, 2):
        raise InputError(f"{name}: expected a 1-d array (one target) or a 2-d array (n, t) with one column per output, "
                         f"got {arr.ndim}-d shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{name}: has {arr.shape[0]} rows, expected {n} (one per row of X)")
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise InputError(f"{name}: has no columns (at least one target per row)")
    y = np.ascontiguousarray(arr, dtype=np.float64)
    check_finite(y, name)
    return y


def as_weights(w, n: int) -> np.ndarray | None:
    """Sample weights: None (all ones) or a nonnegative float64 vector with a positive sum."""
    if w is None:
        return None
    if isinstance(w, numbers.Real):
        w = np.full(n, float(w))
    return as_vector(w, "sample_weight", n)


def as_indices(idx, n: int, name: str = "idx") -> np.ndarray:
    """Row indices in 0..n-1, at least one (a boolean mask of length n is accepted too)."""
    arr = np.asarray(idx)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise InputError(f"{name}: a boolean mask must have shape ({n},), got {arr.shape}")
        arr = np.flatnonzero(arr)
    if arr.size == 0:
        raise InputError(f"{name}: selects no training points")
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise InputTypeError(f"{name}: expected a 1-d array of integer row indices, got dtype {arr.dtype} shape {arr.shape}")
    bad = np.flatnonzero((arr < 0) | (arr >= n))
    if bad.size:
        raise InputError(f"{name}: index {arr[bad[0]]} at position {bad[0]} is out of range for {n} training points")
    return arr.astype(np.intp)


def as_nonneg_float(v, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InputTypeError(f"{name}: expected a real number, got {type(v).__name__}")
    v = float(v)
    if not np.isfinite(v) or v < 0:
        raise InputError(f"{name}: must be a finite number >= 0, got {v}")
    return v


#: The largest count the core takes (its counts are 64-bit; larger ones would overflow on the way).
MAX_COUNT = 2**62


def as_positive_int(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise InputError(f"{name}: expected a positive integer, got {v!r}")
    if int(v) > MAX_COUNT:
        raise InputError(f"{name}: {v} is larger than the largest supported count ({MAX_COUNT})")
    return int(v)


def as_progress(progress):
    """A progress callback: None or a callable taking (pass, rows_done, rows_total)."""
    if progress is not None and not callable(progress):
        raise InputTypeError(f"progress: expected a callable progress(pass, rows_done, rows_total) or None, got {type(progress).__name__}")
    return progress


PRECONDITIONERS = ("auto", "jacobi", "kfac", "none")


def as_precondition(precondition) -> str:
    """CG's preconditioner by name: True is "auto", False "none"."""
    if isinstance(precondition, (bool, np.bool_)):
        return "auto" if precondition else "none"
    if not isinstance(precondition, str):
        raise InputTypeError(f"precondition: expected True, False or one of {PRECONDITIONERS}, got {type(precondition).__name__}")
    if precondition not in PRECONDITIONERS:
        raise InputError(f"precondition: expected True, False or one of {PRECONDITIONERS}, got {precondition!r}")
    return precondition


def solver_args(damping, rtol, atol, max_iter, precondition, progress) -> tuple[float, float, float, int, str, Callable | None]:
    """The solver settings of an influence, checked, in the order ``_core.Influence`` takes them."""
    return (as_nonneg_float(damping, "damping"), as_nonneg_float(rtol, "rtol"), as_nonneg_float(atol, "atol"),
            as_positive_int(max_iter, "max_iter"), as_precondition(precondition), as_progress(progress))


def npy_header(path: str, name: str = "X") -> tuple[np.dtype, int, int, int]:
    """(dtype, n, d, offset of the first value) of a 2-d C-ordered float64/float32 ``.npy``
    file, parsed by the core (the one reader of the format): InputError naming ``name`` for
    anything else (1-d, Fortran order, other dtypes, pickled objects, a truncated header)."""
    dtype, n, d, offset = _core.npy_header(path, name)
    return np.dtype(np.float32 if dtype == "f4" else np.float64), n, d, offset


def _mapped_extent(a: np.memmap) -> tuple[str, int] | None:
    """(file, bytes of the file that ``a``'s elements reach) for a view of a ``np.memmap``, or
    None when ``a`` is not memory-mapped (or the mapping cannot be located)."""
    mm = a.base
    while isinstance(mm, np.ndarray):  # a view's base chain ends at the mapping
        mm = mm.base
    filename = getattr(a, "filename", None)
    if not isinstance(mm, mmap.mmap) or not filename:
        return None
    try:
        map_addr = np.frombuffer(mm, dtype=np.uint8).__array_interface__["data"][0]
    except (ValueError, TypeError):  # a closed mapping
        return None
    start = int(a.offset) - int(a.offset) % mmap.ALLOCATIONGRANULARITY  # where numpy's mapping begins
    addr = a.__array_interface__["data"][0]
    last = addr + sum(max(0, (s - 1) * st) for s, st in zip(a.shape, a.strides, strict=True)) + a.itemsize if a.size else addr
    return os.fspath(filename), start + (last - map_addr)


def unmapped(a, name: str):
    """A memory-mapped array (a ``np.memmap`` or any view of one, e.g. a slice of
    ``np.load(path, mmap_mode="r")``) as an in-memory copy, after checking that its file still
    holds every byte it maps: the core then never touches mapped pages, and a file truncated
    underneath is an InputError, never a SIGBUS. Other inputs are returned as they are."""
    if not isinstance(a, np.memmap):
        return a
    extent = _mapped_extent(a)
    if extent is None:
        raise InputError(f"{name}: a memory map whose file upweight cannot locate; pass np.asarray(...) or the .npy path")
    path, need = extent
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InputError(f"{name}: the file behind this memory map cannot be read ({exc})") from None
    if size < need:
        raise InputError(f"{name}: the file behind this memory map, {path!r}, was truncated: its data need "
                         f"{need} bytes, the file has {size}")
    check_output_fits(a.shape, a.itemsize, name, "pass the .npy file's path instead: it is streamed block by block")
    return np.array(a, copy=True, subok=False)


def training_features(X, n_features: int | None = None, name: str = "X"):
    """(X, n, d) with X as the core takes it: a float64 or float32 C-contiguous array, the path
    of a .npy file read block by block (a path, or an ``np.load(..., mmap_mode="r")`` memmap of
    one; the file is then never memory-mapped by upweight), or a CSR tuple for scipy.sparse
    input (:func:`as_csr`)."""
    if is_sparse(X):
        csr = as_csr(X, name, n_features)
        return csr, X.shape[0], X.shape[1]
    if isinstance(X, (str, os.PathLike)):
        path = os.fspath(X)
        if not os.path.isfile(path):
            raise InputError(f"{name}: no such file {path!r}")
        _, n, d, _ = npy_header(path, name)
        if n_features is not None and d != n_features:
            raise InputError(f"{name}: {path!r} holds shape ({n}, {d}), expected (n, {n_features})")
        if n == 0:
            raise InputError(f"{name}: {path!r} has no rows")
        return path, n, d
    if (isinstance(X, np.memmap) and X.filename and str(X.filename).endswith(".npy") and os.path.isfile(X.filename)
            and X.ndim == 2 and X.dtype in (np.float64, np.float32) and X.flags.c_contiguous):
        # a file the core can stream: its header is read with length checks, so a file truncated
        # underneath the memmap is an InputError here, not a SIGBUS when the memmap is touched
        dtype, n, d, offset = npy_header(str(X.filename), name)
        if (n, d) == X.shape and X.dtype == dtype and X.offset == offset:  # the memmap is the whole file
            if n_features is not None and d != n_features:
                raise InputError(f"{name}: has {d} columns but the model has {n_features} features")
            return str(X.filename), n, d
    X = unmapped(X, name)  # any other memmap (a slice, a raw np.memmap) is read into memory
    if isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2:
        if n_features is not None and X.shape[1] != n_features:
            raise InputError(f"{name}: has {X.shape[1]} columns but the model has {n_features} features")
        if X.shape[0] == 0:
            raise InputError(f"{name}: has no rows")
        return np.ascontiguousarray(X), X.shape[0], X.shape[1]
    X = as_matrix(X, name, n_features)
    return X, X.shape[0], X.shape[1]


def _shares(a, source) -> bool:
    """Whether array ``a`` may share memory with the caller's ``source`` (an array, or a sparse
    matrix's arrays)."""
    parts = [getattr(source, k, None) for k in ("data", "indices", "indptr")] if is_sparse(source) else [source]
    return any(isinstance(p, np.ndarray) and np.shares_memory(a, p) for p in parts)


def kept(a, source):
    """What an object that keeps data for later queries stores of ``a`` (made from the caller's
    ``source`` by the functions above): arrays (and CSR arrays) that still share the caller's
    memory are copied, so editing the caller's arrays later cannot mix new data into old
    answers; a ``.npy`` path becomes absolute (a later ``os.chdir`` cannot redirect it)."""
    if isinstance(a, str):
        return os.path.abspath(a)
    if isinstance(a, tuple):  # CSR arrays
        return tuple(np.array(p, copy=True) if isinstance(p, np.ndarray) and _shares(p, source) else p for p in a)
    if isinstance(a, np.ndarray) and _shares(a, source):
        return a.copy()
    return a


def kept_features(a, source, copy: bool, name: str):
    """(features as kept, what the core reads them as) for a training set's features ``a`` made
    from the caller's ``source`` by :func:`training_features`. A dense array that shares the
    caller's memory is, without ``copy``, read from there: ``_core.Watched`` fingerprints its
    rows as the first core reads them, and every core built from it refuses rows changed since
    (no second copy of a training set that may fill half of memory). Anything else is kept as
    :func:`kept` keeps it (sparse arrays are copied: their edits are not watched). ``source``
    may be a ``_core.Watched`` already (an influence built from another's training set): it is
    shared as it is."""
    if isinstance(source, _core.Watched):
        return source.array, source
    if not copy and isinstance(a, np.ndarray) and _shares(a, source):
        return a, _core.Watched(a, name)
    a = kept(a, source)
    return a, a


def file_stamp(path: str) -> tuple[int, int, int]:
    """(size, modification time in ns, inode) of a file: what changes when it is rewritten."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def available_memory() -> int:
    """Bytes of memory available to a new allocation: MemAvailable on Linux, else physical
    memory."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_output_fits(shape: tuple, itemsize: int, arg: str, hint: str) -> None:
    """Refuse up front a result that cannot fit in memory (instead of the OOM killer ending the
    process halfway through), naming the argument and what to do instead."""
    need = itemsize
    for s in shape:
        need *= int(s)
    avail = available_memory()
    if need > avail:
        raise InputError(
            f"{arg}: the result, shape {tuple(int(s) for s in shape)}, would take {need / 2**30:.1f} GiB but "
            f"{avail / 2**30:.1f} GiB of memory is available; {hint}"
        )


def score_itemsize(X) -> int:
    """Bytes per score for training features X as the core takes them: float32 rows are scored
    in float32."""
    if isinstance(X, str):
        try:
            return 4 if npy_header(X)[0] == np.float32 else 8
        except (OSError, UpweightError):
            return 8
    return 4 if isinstance(X, np.ndarray) and X.dtype == np.float32 else 8
