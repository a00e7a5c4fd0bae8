"""Reading training/query tables and writing score files for the CLI.

Inputs: ``.npy`` (a feature matrix; for training data it is streamed, never loaded), ``.npz``
(arrays ``X`` and ``y``, or a sparse matrix written by ``scipy.sparse.save_npz``, used as CSR
without densifying; targets then come from ``--*-y``), ``.csv`` (a header row; the target column by name) and ``.parquet``
(the same, if pyarrow is installed). Outputs: ``.npz``, ``.csv`` or ``.parquet``, written
atomically. Pickled data is never loaded.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from .._validation import check_output_fits, training_features
from ..errors import InputError
from .persist import atomic_path


def _pyarrow(arg: str):
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(f"{arg}: reading or writing Parquet needs pyarrow (pip install pyarrow)") from None
    return pq


def _sparse_npz(path: str, arg: str):
    try:
        import scipy.sparse as sp
    except ImportError:
        raise InputError(f"{arg}: {path!r} holds a scipy.sparse matrix; reading it needs scipy (pip install scipy)") from None
    return sp.load_npz(path).tocsr()


def _npz_member(z, name: str, arg: str, path: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of array ``name`` of an open .npz, from its .npy header alone (nothing
    else is inflated). A header that promises more bytes than the zip member holds (a crafted or
    truncated file), a pickled dtype, or an array that cannot fit in memory is an InputError."""
    member = name + ".npy"
    try:
        info = z.zip.getinfo(member)
        with z.zip.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            header_len = f.tell()
    except (KeyError, ValueError, OSError) as exc:
        raise InputError(f"{arg}: cannot read array {name!r} of {path!r} ({exc})") from None
    if dtype.hasobject:
        raise InputError(f"{arg}: array {name!r} of {path!r} holds pickled Python objects (upweight never loads pickle)")
    need = dtype.itemsize * int(np.prod(shape, dtype=object))
    if need > info.file_size - header_len:
        raise InputError(f"{arg}: array {name!r} of {path!r} declares shape {shape} ({need} bytes) but holds only "
                         f"{max(info.file_size - header_len, 0)} bytes: the file is truncated or corrupt")
    check_output_fits(shape, dtype.itemsize, arg, f"array {name!r} of {path!r} is larger than this machine's memory")
    return shape, dtype


def _check_npz_shapes(z, xkey: str, ykey: str | None, arg: str, path: str) -> None:
    """X 2-d and y (if any) 1-d with one entry per row of X, from the headers, before inflating."""
    xshape, _ = _npz_member(z, xkey, arg, path)
    if len(xshape) != 2:
        raise InputError(f"{arg}: array {xkey!r} of {path!r} must be 2-d (n, d), got shape {xshape}")
    if ykey is not None:
        yshape, _ = _npz_member(z, ykey, arg, path)
        if len(yshape) != 1 or yshape[0] != xshape[0]:
            raise InputError(
                f"{arg}: array {ykey!r} of {path!r} has shape {yshape}, expected ({xshape[0]},) (one target per row of {xkey!r})"
            )


def read_table(path, arg: str, target_column: str | None, target_path=None, stream: bool = False, drop: Sequence[str] = ()):
    """(X, y) from ``path``; y is None when neither a target column nor ``target_path`` is given.
    With ``stream``, a ``.npy`` X is returned as its path, to be read block by block. ``drop``:
    columns of a CSV or Parquet table that are not features (identifiers, text)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{arg}: no such file {path!r}")
    ext = Path(path).suffix.lower()
    y = None
    try:
        if ext == ".npy":
            X = path if stream else np.load(path, allow_pickle=False)
            if stream:
                training_features(path, name=arg)  # checks it is a 2-d float .npy file
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                xkey: str | None
                if {"data", "indices", "indptr", "format", "shape"} <= set(z.files):
                    X = _sparse_npz(path, arg)
                    xkey = ""
                else:
                    xkey = "X" if "X" in z else None
                if xkey is None:
                    raise InputError(f"{arg}: {path!r} has no array 'X' (found {sorted(z.files)})")
                ykey = (target_column or "y") if (target_column or "y") in z else None
                if xkey:
                    _check_npz_shapes(z, xkey, ykey, arg, path)
                    X = z[xkey]
                if ykey is not None:
                    y = z[ykey]
        elif ext in (".csv", ".parquet"):
            header = _csv_header(path, arg) if ext == ".csv" else _parquet_header(path, arg)
            for name in drop:
                if name not in header:
                    raise InputError(f"drop: {path!r} has no column {name!r} (columns: {header})")
            key = target_column or ("y" if "y" in header else None)
            if key is not None and key not in header:
                raise InputError(f"{arg}: {path!r} has no column {key!r} (columns: {header})")
            keep = [j for j, name in enumerate(header) if name not in drop]
            data = (_read_csv if ext == ".csv" else _read_parquet)(path, arg, header, keep, key)
            if key is not None:
                j = [header[i] for i in keep].index(key)
                y = data[:, j]
                data = np.delete(data, j, axis=1)
            X = data
        else:
            if drop:
                raise InputError(f"drop: names columns of a .csv or .parquet table; {path!r} is {ext}")
            raise InputError(f"{arg}: unsupported file type {ext!r}; use .npy, .npz, .csv or .parquet")
    except InputError:
        raise
    except (ValueError, OSError) as exc:
        raise InputError(f"{arg}: cannot read {path!r} as {ext} ({exc})") from None
    if target_path is not None:
        option = {"train": "--y", "query": "--query-y"}.get(arg, arg + "-y")
        if str(target_path).endswith(".npy"):
            y = read_vector(target_path, option)
        else:
            # a table of targets: its target column if it names one, else its only column
            tx, ty = read_table(target_path, option, None)
            if ty is None and np.ndim(tx) == 2 and np.shape(tx)[1] != 1:
                raise InputError(f"{option}: {os.fspath(target_path)!r} has {np.shape(tx)[1]} columns; "
                                 "expected one column of targets (or one named 'y')")
            y = np.asarray(ty if ty is not None else tx).ravel()
    return X, y


def _csv_header(path: str, arg: str) -> list[str]:
    """The header row of a CSV file. It may be quoted and may start with a UTF-8 byte-order mark
    (as R and Excel write it); it must name every column."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        header = [h.strip() for h in next(csv.reader(f, skipinitialspace=True), [])]
    if not header or header == [""]:
        raise InputError(f"{arg}: {path!r} is empty (expected a header row, then data rows)")
    return header


def _read_csv(path: str, arg: str, header: list[str], keep: list[int], target: str | None) -> np.ndarray:
    """The columns ``keep`` of a CSV file with a header row, as float64. A value that is not a
    number (text, an empty cell) is named by its column and row, with what to do."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, skipinitialspace=True)
        next(rows)
        first = next(rows, None)
    if first is None:
        raise InputError(f"{arg}: {path!r} has a header but no data rows")
    if len(first) != len(header):
        raise InputError(f"{arg}: {path!r} has {len(header)} header names but {len(first)} columns of data; "
                         "the header must name every column")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            data = np.loadtxt(f, delimiter=",", ndmin=2, skiprows=1, usecols=keep)
    except ValueError:
        _explain_csv(path, arg, header, keep, target)  # raises, naming the cell
        raise
    return data


def _explain_csv(path: str, arg: str, header: list[str], keep: list[int], target: str | None) -> None:
    """Find the first cell of ``keep``'s columns that NumPy could not read, and say why."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.reader(f, skipinitialspace=True)
        next(rows)
        for r, row in enumerate(rows, start=2):  # line numbers as an editor shows them
            if len(row) != len(header):
                raise InputError(f"{arg}: {path!r} line {r} has {len(row)} values but the header names {len(header)} columns; "
                                 "the header must name every column")
            for j in keep:
                cell = row[j].strip()
                try:
                    float(cell)
                except ValueError:
                    if not cell:
                        raise InputError(f"{arg}: {path!r} column {header[j]!r} is empty on line {r}: upweight needs every value; "
                                         "fill in or drop the rows with missing values") from None
                    raise InputError(f"{arg}: {path!r} column {header[j]!r} holds {cell!r} on line {r}, not a number: "
                                     + _not_a_number_hint(header[j], target)) from None


def _not_a_number_hint(column: str, target: str | None) -> str:
    if column == target:
        return "encode the target as numbers (classes as 0, 1, ..., k - 1 for --family logistic)"
    return f"encode it as numbers (one column per category), or leave the column out with --drop {column}"


def _parquet_header(path: str, arg: str) -> list[str]:
    return [str(c).strip() for c in _pyarrow(arg).read_schema(path).names]


def _read_parquet(path: str, arg: str, header: list[str], keep: list[int], target: str | None) -> np.ndarray:
    """The columns ``keep`` of a Parquet file, which must be numeric (or boolean), as float64."""
    table = _pyarrow(arg).read_table(path, columns=[header[j] for j in keep])
    columns = []
    for name in table.column_names:
        col = table.column(name)
        if col.null_count:
            raise InputError(f"{arg}: {path!r} column {name!r} has {col.null_count} missing values: upweight needs every "
                             "value; fill in or drop those rows")
        values = col.to_numpy()
        if values.dtype.kind not in "biuf":
            raise InputError(f"{arg}: {path!r} column {name!r} has type {table.schema.field(name).type}, not a number: "
                             + _not_a_number_hint(name, target))
        columns.append(values.astype(np.float64))
    if not columns or table.num_rows == 0:
        raise InputError(f"{arg}: {path!r} has no data")
    return np.column_stack(columns)


def read_vector(path, arg: str) -> np.ndarray:
    """A 1-d array (targets, weights) from a ``.npy`` file; pickled (object) arrays are refused.
    Any failure is an InputError naming the option ``arg``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"{arg}: no such file {path!r}")
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise InputError(f"{arg}: {path!r} is not a .npy file (bad magic bytes)")
    try:
        v = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            raise InputError(f"{arg}: {path!r} holds pickled Python objects (upweight never loads pickle; save a numeric array)") from None
        raise InputError(f"{arg}: cannot read {path!r} as .npy ({exc})") from None
    except OSError as exc:
        raise InputError(f"{arg}: cannot read {path!r} as .npy ({exc})") from None
    if not isinstance(v, np.ndarray):
        raise InputError(f"{arg}: {path!r} is not a .npy array")
    return v


#: What ``write_scores`` writes, by file extension.
SCORE_FORMATS = (".npz", ".csv", ".parquet")


def check_output(path, inputs, force: bool, formats: tuple[str, ...] | None = None) -> None:
    """Refuse, before any work, an output path that cannot be written or would destroy an input:
    an unsupported extension (``formats``; Parquet also needs pyarrow), a missing folder, an
    existing file without ``force``, or one of ``inputs`` (the same file, also through links or
    another spelling of the path), which is refused even with ``force``."""
    path = os.fspath(path)
    ext = Path(path).suffix.lower()
    if formats is not None and ext not in formats:
        raise InputError(f"output: unsupported file type {ext!r}; use {', '.join(formats[:-1])} or {formats[-1]}")
    if ext == ".parquet":
        _pyarrow("output")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"output: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output: folder {folder!r} is not writable")
    if os.path.exists(path):
        for arg, inp in inputs:
            if inp is not None and os.path.exists(inp) and os.path.samefile(path, inp):
                raise InputError(f"output: {path!r} is the {arg} input; writing it would destroy that input (even with --force)")
        if not force:
            raise InputError(f"output: {path!r} exists; pass --force to overwrite it")


def write_scores(path, arrays: dict[str, np.ndarray], force: bool = False) -> None:
    """Write named arrays to ``path`` (.npz, .csv or .parquet) atomically (temporary file, then
    rename). 2-d arrays in CSV/Parquet are written one row per query."""
    ext = Path(path).suffix.lower()
    if ext not in SCORE_FORMATS:
        raise InputError(f"output: unsupported file type {ext!r}; use .npz, .csv or .parquet")
    if ext == ".parquet":
        _pyarrow("output")
    with atomic_path(path, force, arg="output", how="--force") as tmp:
        if ext == ".npz":
            with open(tmp, "wb") as f:
                np.savez(f, **cast(dict[str, Any], arrays))  # (numpy's stub types **kwds like allow_pickle)
            return
        columns = _long_form(arrays)
        if ext == ".csv":
            names = list(columns)
            rows = np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in names])
            ints = [c for c in names if np.issubdtype(np.asarray(columns[c]).dtype, np.integer)]
            fmt = ["%d" if c in ints else "%.17g" for c in names]
            np.savetxt(tmp, rows, delimiter=",", header=",".join(names), comments="", fmt=fmt)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({k: np.asarray(v) for k, v in columns.items()}), tmp)


def _long_form(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One table: top-k as (query, rank, helpful_index, helpful_score, harmful_index,
    harmful_score); self-influence as (index, self_influence); a full matrix as (query, index,
    score)."""
    if "helpful_idx" in arrays:
        q, k = arrays["helpful_idx"].shape
        return {
            "query": np.repeat(np.arange(q), k),
            "rank": np.tile(np.arange(1, k + 1), q),
            "helpful_index": arrays["helpful_idx"].ravel(),
            "helpful_score": arrays["helpful"].ravel(),
            "harmful_index": arrays["harmful_idx"].ravel(),
            "harmful_score": arrays["harmful"].ravel(),
        }
    if "self_influence" in arrays:
        s = arrays["self_influence"]
        return {"index": np.arange(len(s)), "self_influence": s}
    S = arrays["scores"]
    q, n = S.shape
    return {"query": np.repeat(np.arange(q), n), "index": np.tile(np.arange(n), q), "score": S.ravel()}
