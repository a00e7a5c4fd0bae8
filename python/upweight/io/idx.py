"""Reading IDX files, the format of MNIST, Fashion-MNIST, KMNIST and EMNIST.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then ``ndim`` big-endian
uint32 dimensions, then the data in C order, big-endian. Type codes: 0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64. Files are read plain or gzip-compressed
(recognised by their first two bytes, 1f 8b, not by their name).

Everything is checked against the header before the data are read: a file that is not IDX,
holds fewer or more bytes than its dimensions declare, or declares an array larger than memory
is an :class:`~upweight.errors.InputError` naming ``path``, never a crash or a silent partial array.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import zlib

import numpy as np

from .._validation import check_output_fits
from ..errors import InputError, InputTypeError, MissingFileError

#: IDX type code -> NumPy dtype (as stored: big-endian for multi-byte types).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"
#: Deflate inflates one compressed byte to at most 1032 bytes (258-byte matches coded in 2 bits):
#: a gzip file of s bytes whose header declares more than 1032 s bytes of data is truncated.
_MAX_INFLATE = 1032
_CHUNK = 1 << 20


def _codes() -> str:
    return ", ".join(f"0x{c:02X} {np.dtype(d).newbyteorder('=').name}" for c, d in IDX_DTYPES.items())


def _read_exact(f, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream)."""
    out = b""
    while len(out) < n:
        part = f.read(n - len(out))
        if not part:
            break
        out += part
    return out


def _header(f, path: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """(stored dtype, shape, header length in bytes) from the start of stream ``f``."""
    magic = _read_exact(f, 4)
    if not magic:
        raise InputError(f"path: {path!r} is empty (an IDX file starts with a 4-byte magic number)")
    if magic[:2] != b"\x00\x00"[: len(magic)]:  # judged on the bytes there are, even if fewer than 2
        raise InputError(f"path: {path!r} is not an IDX file: it starts with bytes {magic[:2].hex(' ')}, "
                         "expected 00 00 (then the type code and the number of dimensions)")
    if len(magic) < 4:
        raise InputError(f"path: {path!r} is truncated: it ends inside the 4-byte magic number ({len(magic)} bytes)")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        raise InputError(f"path: {path!r} has unknown IDX type code 0x{code:02X} (expected one of {_codes()})")
    if ndim == 0:
        raise InputError(f"path: {path!r} declares 0 dimensions; an IDX array has at least one")
    raw = _read_exact(f, 4 * ndim)
    if len(raw) < 4 * ndim:
        raise InputError(f"path: {path!r} is truncated: its header declares {ndim} dimensions "
                         f"({4 * ndim} bytes) but only {len(raw)} bytes follow the magic number")
    shape = struct.unpack(f">{ndim}I", raw)
    return IDX_DTYPES[code], shape, 4 + 4 * ndim


def _shape_text(shape: tuple[int, ...]) -> str:
    return str(shape) if len(shape) <= 8 else f"({', '.join(map(str, shape[:4]))}, ..., {shape[-1]}) ({len(shape)} dimensions)"


def _data_bytes(dtype: np.dtype, shape: tuple[int, ...], path: str) -> int:
    """Bytes of data the header declares; an InputError if no array that large can exist."""
    count = 1
    for s in shape:
        count *= s  # Python integers: no overflow
    need = count * dtype.itemsize
    if need > np.iinfo(np.intp).max:
        raise InputError(f"path: {path!r} declares shape {_shape_text(shape)} of {dtype.newbyteorder('=').name}, "
                         f"about 2^{need.bit_length() - 1} bytes: more than any array can hold (a corrupt or forged header)")
    return need


def load_idx(path, *, mmap: bool = False) -> np.ndarray:
    """The array stored in IDX file ``path`` (plain or gzip-compressed), in native byte order.

    Parameters
    ----------
    path : str or os.PathLike
        An IDX file such as MNIST's ``train-images-idx3-ubyte`` or ``train-labels-idx1-ubyte.gz``.
        Compression is detected from the first two bytes (gzip: 1f 8b), not from the name.
    mmap : bool, default False
        Map an uncompressed file read-only instead of reading it (a ``np.memmap`` of the stored
        shape; nothing is loaded until used). For uint8/int8 data the result is exactly the
        array ``mmap=False`` returns; multi-byte types (int16, int32, float32, float64) keep the
        file's big-endian dtype (``'>i4'``, ``'>f4'``...): values are right, but convert with
        ``np.asarray(a, dtype=a.dtype.newbyteorder('='))`` before passing them on if you need
        native order. An array with no elements cannot be mapped: it is returned as an empty,
        read-only ``ndarray``. A gzip-compressed file cannot be mapped (InputError).

    Returns
    -------
    numpy.ndarray
        The stored shape and type (uint8, int8, int16, int32, float32 or float64), native byte
        order, writable (``mmap=False``).

    Raises
    ------
    InputError
        naming ``path``: a missing file (:class:`~upweight.errors.MissingFileError`, also a
        ``FileNotFoundError``), a directory, bad magic bytes, an unknown type code, 0 dimensions,
        a truncated header or data (fewer bytes than the dimensions declare), trailing bytes,
        dimensions whose product no array can hold or that need more memory than is available
        (checked from the header, before anything is allocated), a corrupt gzip stream, or
        ``mmap=True`` on a gzip file.
    InputTypeError
        If ``path`` is not a path or ``mmap`` is not a bool.

    See Also
    --------
    load_mnist, load_fashion_mnist : Images and labels of an MNIST-layout folder.

    Examples
    --------
    A 2 x 3 uint8 array written as IDX (magic 00 00 08 02, the dimensions, the bytes), then
    gzip-compressed:

    >>> import gzip
    >>> data = bytes([0, 0, 0x08, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6])
    >>> with open("tiny-idx2-ubyte", "wb") as f:
    ...     _ = f.write(data)
    >>> uw.load_idx("tiny-idx2-ubyte")
    array([[1, 2, 3],
           [4, 5, 6]], dtype=uint8)
    >>> with gzip.open("tiny-idx2-ubyte.gz", "wb") as f:
    ...     _ = f.write(data)
    >>> uw.load_idx("tiny-idx2-ubyte.gz").shape
    (2, 3)
    >>> int(uw.load_idx("tiny-idx2-ubyte", mmap=True)[1, 2])
    6
    >>> with open("short-idx2-ubyte", "wb") as f:
    ...     _ = f.write(data[:-1])
    >>> uw.load_idx("short-idx2-ubyte")
    Traceback (most recent call last):
        ...
    upweight.errors.InputError: path: 'short-idx2-ubyte' is truncated: ...
    """
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise InputTypeError(f"path: expected a file path (str or os.PathLike), got {type(path).__name__}")
    if not isinstance(mmap, (bool, np.bool_)):
        raise InputTypeError(f"mmap: expected True or False, got {type(mmap).__name__}")
    path = os.fsdecode(os.fspath(path))
    if not os.path.exists(path):
        raise MissingFileError(f"path: no such file {path!r}")
    if os.path.isdir(path):
        raise InputError(f"path: {path!r} is a directory, not an IDX file")
    try:
        with open(path, "rb") as f:
            compressed = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if compressed:
                if mmap:
                    raise InputError(f"path: {path!r} is gzip-compressed and cannot be memory-mapped; "
                                     "pass mmap=False, or decompress it (gunzip) and map the plain file")
                return _read_gzip(f, path)
            return _read_plain(f, path, bool(mmap))
    except OSError as exc:
        raise InputError(f"path: cannot read {path!r} ({exc})") from None


def _read_plain(f, path: str, mmap: bool) -> np.ndarray:
    dtype, shape, offset = _header(f, path)
    need = _data_bytes(dtype, shape, path)
    have = os.fstat(f.fileno()).st_size - offset
    if have < need:
        raise InputError(f"path: {path!r} is truncated: its header declares shape {_shape_text(shape)} of "
                         f"{dtype.newbyteorder('=').name} ({need} bytes of data) but only {have} bytes follow the header")
    if have > need:
        raise InputError(f"path: {path!r} has {have - need} trailing bytes after the {need} bytes of data its header "
                         f"declares (shape {_shape_text(shape)}): not an IDX file, or a header for a different array")
    if mmap:
        if need == 0:
            empty = np.empty(shape, dtype=dtype)
            empty.flags.writeable = False
            return empty
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    check_output_fits(shape, dtype.itemsize, "path", f"{path!r} is uncompressed, so load_idx({path!r}, mmap=True) maps it instead")
    out = np.empty(shape, dtype=dtype.newbyteorder("="))
    buf = out.reshape(-1).view(np.uint8).data  # a writable memoryview of out's bytes
    done = 0
    while done < need:
        k = f.readinto(buf[done:done + _CHUNK])
        if not k:  # the file shrank while being read
            raise InputError(f"path: {path!r} is truncated: it ended after {done} of {need} bytes of data")
        done += k
    return _to_native(out)


def _read_gzip(raw, path: str) -> np.ndarray:
    size = os.fstat(raw.fileno()).st_size
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as f:
            dtype, shape, _ = _header(f, path)
            need = _data_bytes(dtype, shape, path)
            check_output_fits(shape, dtype.itemsize, "path", f"decompress {path!r} and load it with mmap=True")
            if need > _MAX_INFLATE * size:
                raise InputError(f"path: {path!r} is truncated: its header declares shape {_shape_text(shape)} of "
                                 f"{dtype.newbyteorder('=').name} ({need} bytes of data) but a gzip file of {size} bytes "
                                 f"inflates to at most {_MAX_INFLATE * size} bytes")
            out = np.empty(shape, dtype=dtype.newbyteorder("="))
            buf = out.reshape(-1).view(np.uint8).data  # a writable memoryview of out's bytes
            done = 0
            while done < need:
                k = f.readinto(buf[done:done + _CHUNK])
                if not k:
                    raise InputError(f"path: {path!r} is truncated: its header declares shape {_shape_text(shape)} of "
                                     f"{dtype.newbyteorder('=').name} ({need} bytes of data) but it inflates to only "
                                     f"{done} bytes after the header")
                done += k
            if f.read(1):  # one byte past the data is enough: the rest is never inflated
                raise InputError(f"path: {path!r} has trailing bytes after the {need} bytes of data its header declares "
                                 f"(shape {_shape_text(shape)}): not an IDX file, or a header for a different array")
    except EOFError:
        raise InputError(f"path: {path!r} is a truncated gzip file (the compressed stream ends before its end marker)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"path: {path!r} is a corrupt gzip file ({exc})") from None
    return _to_native(out)


def _to_native(out: np.ndarray) -> np.ndarray:
    """``out`` holds big-endian bytes under a native dtype: swap them in place where they differ."""
    if out.dtype.itemsize > 1 and sys.byteorder == "little":
        out.byteswap(inplace=True)
    return out
