"""Real data sets: two small ones shipped inside the package (sources and licences in
data/README.md), and readers for MNIST-format image sets installed on the machine.

* :func:`load_breast_cancer`, :func:`load_digits`: bundled, UCI, CC BY 4.0.
* :func:`load_fashion_mnist`: Fashion-MNIST (Zalando Research, MIT licence; H. Xiao, K. Rasul and
  R. Vollgraf, "Fashion-MNIST: a Novel Image Dataset for Benchmarking Machine Learning
  Algorithms", arXiv:1708.07747, 2017), 70000 greyscale 28 x 28 images of 10 kinds of clothing.
  Not bundled: on Debian, ``apt-get install dataset-fashion-mnist`` installs its four IDX files
  in :data:`FASHION_MNIST_DIR`; elsewhere pass ``path=`` a folder holding them.
* :func:`load_mnist`: the same for a copy of MNIST (or any set in its layout) that you have.

Nothing here downloads anything.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources

import numpy as np

from ._validation import check_output_fits
from .errors import InputError, InputTypeError, MissingFileError
from .io.idx import load_idx

#: Where Debian's package ``dataset-fashion-mnist`` installs the Fashion-MNIST IDX files (gzip).
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Fashion-MNIST's label names, by label 0..9.
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

#: The (images, labels) file names of each part, as MNIST publishes them; each may also end in ``.gz``.
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_FILE_LIST = ", ".join(f"{name}[.gz]" for pair in MNIST_FILES.values() for name in pair)
_INSTALL = ("install it with `apt-get install dataset-fashion-mnist` (Debian's package; the data are MIT-licensed, "
            f"Zalando Research), or pass path= a folder holding the four IDX files {_FILE_LIST}")


def load_breast_cancer():
    """Breast Cancer Wisconsin (Diagnostic), CC BY 4.0: 569 x 30 features, y = 1 for benign.

    Returns ``(X, y, feature_names)`` with X float64 (569, 30) and y int64 (569,).

    Bundled with the package (UCI; source and licence in ``data/README.md``): nothing is
    downloaded. The features have very different scales; standardise them before fitting.

    Returns
    -------
    X : numpy.ndarray of shape (569, 30)
        The features, float64.
    y : numpy.ndarray of shape (569,)
        The labels, int64: 1 benign, 0 malignant.
    feature_names : list of str
        The 30 column names.

    See Also
    --------
    load_digits : The other bundled data set.

    Examples
    --------
    >>> X, y, names = uw.load_breast_cancer()
    >>> X.shape, y.shape, len(names)
    ((569, 30), (569,), 30)
    >>> int(y.sum())  # benign
    357
    >>> X = (X - X.mean(0)) / X.std(0)
    >>> model = uw.LogisticRegression(l2=1e-2).fit(X, y)
    """
    ref = resources.files("upweight") / "data" / "breast_cancer.csv.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt") as f:
        header = f.readline().strip().split(",")
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].copy(), table[:, -1].astype(np.int64), header[:-1]


def load_digits():
    """Handwritten digits (UCI, CC BY 4.0): 1797 images of 8 x 8 pixels with values 0..16.

    Returns ``(X, y)`` with X float64 (1797, 64) (reshape a row to (8, 8) to see it) and y
    int64 (1797,) the digit.

    Bundled with the package (source and licence in ``data/README.md``): nothing is downloaded.

    Returns
    -------
    X : numpy.ndarray of shape (1797, 64)
        The pixels, float64 values 0..16, row by row.
    y : numpy.ndarray of shape (1797,)
        The digits 0..9, int64.

    See Also
    --------
    load_breast_cancer : The other bundled data set.
    upweight.plots.gallery : Shows images with their most helpful and harmful training images.

    Examples
    --------
    >>> X, y = uw.load_digits()
    >>> X.shape, y.shape
    ((1797, 64), (1797,))
    >>> X[0].reshape(8, 8).shape, int(X.max()), int(y[0])
    ((8, 8), 16, 0)
    """
    ref = resources.files("upweight") / "data" / "digits.csv.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt") as f:
        f.readline()
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].copy(), table[:, -1].astype(np.int64)


def load_fashion_mnist(kind: str = "train", *, path=None, flatten: bool = True, scale: bool = True):
    """Load Fashion-MNIST from its IDX files on this machine (nothing is downloaded).

    Fashion-MNIST (Zalando Research, MIT licence): 60000 training or 10000 test images of
    28 x 28 greyscale pixels, each one of 10 kinds of clothing (:data:`FASHION_MNIST_CLASSES`).

    Parameters
    ----------
    kind : {"train", "test"}, default "train"
        Which part: ``train-*`` (60000 images) or ``t10k-*`` (10000 images).
    path : str or os.PathLike, optional
        A folder holding the IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ending in ``.gz``).
        Default :data:`FASHION_MNIST_DIR`, where ``apt-get install dataset-fashion-mnist``
        (Debian) puts them. Nothing is ever downloaded.
    flatten : bool, default True
        One row of 784 pixels per image (row-major), else the images as (n, 28, 28).
    scale : bool, default True
        Pixels as float64 in [0, 1] (value / 255), else the stored uint8 values 0..255.

    Returns
    -------
    X : numpy.ndarray
        Of shape (n, 784) (``flatten``) or (n, 28, 28), float64 (``scale``) or uint8.
    y : numpy.ndarray of shape (n,)
        The labels 0..9, int64 (names in :data:`FASHION_MNIST_CLASSES`).

    Raises
    ------
    MissingFileError
        (an InputError and a FileNotFoundError) naming ``path`` when the files are absent; the
        message says how to install them.
    InputError
        naming ``path`` when a file is not a valid IDX file, or images and labels do not match
        (different counts, labels outside 0..9); naming ``kind`` for a part other than "train"
        or "test".
    InputTypeError
        If ``path`` is not a path, or ``flatten`` or ``scale`` is not a bool.

    See Also
    --------
    load_mnist : The same for MNIST or any set in its layout.
    load_idx : One IDX file.

    Examples
    --------
    A folder in Fashion-MNIST's layout (here 3 images of 4 x 4 pixels, written by the example;
    the real files hold 28 x 28 images):

    >>> import os
    >>> os.mkdir("fashion")
    >>> images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4)
    >>> labels = np.array([0, 7, 9], dtype=np.uint8)
    >>> with open("fashion/train-images-idx3-ubyte", "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 3]) + np.array(images.shape, ">u4").tobytes() + images.tobytes())
    >>> with open("fashion/train-labels-idx1-ubyte", "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1]) + np.array(labels.shape, ">u4").tobytes() + labels.tobytes())
    >>> X, y = uw.load_fashion_mnist(path="fashion")
    >>> X.shape, X.dtype, round(float(X.max()), 4), y
    ((3, 16), dtype('float64'), 0.1843, array([0, 7, 9]))
    >>> [uw.datasets.FASHION_MNIST_CLASSES[i] for i in y]
    ['T-shirt/top', 'Sneaker', 'Ankle boot']

    Where the files are absent, a :class:`~upweight.MissingFileError` (a ``FileNotFoundError``)
    says what to install:

    >>> try:
    ...     uw.load_fashion_mnist(path="no-such-folder")
    ... except FileNotFoundError as exc:
    ...     print(type(exc).__name__, str(exc).split(";")[0])
    MissingFileError path: no folder 'no-such-folder'
    """
    folder = FASHION_MNIST_DIR if path is None else path
    if path is None:
        hint = "Fashion-MNIST is not installed in this default folder; " + _INSTALL
    else:
        hint = f"expected the four IDX files {_FILE_LIST}"
    return _load_idx_pair(kind, folder, flatten, scale, hint)


def load_mnist(kind: str = "train", *, path, flatten: bool = True, scale: bool = True):
    """Load MNIST (or a set in its layout) from a folder of IDX files.

    MNIST (or any image set in its layout: KMNIST, EMNIST...) from your own copy in folder
    ``path``, with MNIST's file names (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ending in ``.gz``).
    upweight neither ships nor downloads MNIST.

    ``kind``, ``flatten`` and ``scale`` and the result are as for :func:`load_fashion_mnist`:
    X (n, rows * cols) (784 for MNIST) or (n, rows, cols), float64 pixels / 255 or uint8; y
    int64 labels 0..9. Errors are InputErrors naming ``path`` (a MissingFileError when a file
    is absent).

    Parameters
    ----------
    kind : {"train", "test"}, default "train"
        Which part: ``train-*`` or ``t10k-*`` files.
    path : str or os.PathLike
        The folder holding the IDX files (required, keyword-only).
    flatten : bool, default True
        One row of rows * cols pixels per image (row-major), else the images as (n, rows, cols).
    scale : bool, default True
        Pixels as float64 in [0, 1] (value / 255), else the stored uint8 values 0..255.

    Returns
    -------
    X : numpy.ndarray
        Of shape (n, rows * cols) (``flatten``) or (n, rows, cols), float64 (``scale``) or
        uint8.
    y : numpy.ndarray of shape (n,)
        The labels 0..9, int64.

    Raises
    ------
    MissingFileError
        (an InputError and a FileNotFoundError) naming ``path`` when the folder or a file of the
        part is absent.
    InputError
        Naming ``path`` when a file is not a valid IDX file, or images and labels do not match
        (different counts, labels outside 0..9); naming ``kind`` for a part other than "train"
        or "test".
    InputTypeError
        If ``path`` is not a path, or ``flatten`` or ``scale`` is not a bool.

    See Also
    --------
    load_fashion_mnist : The same for Fashion-MNIST, with a default folder.
    load_idx : One IDX file.

    Examples
    --------
    A folder in MNIST's layout (2 test images of 3 x 3 pixels and their labels, written here;
    gzip-compressed files are read the same way):

    >>> import gzip, os
    >>> os.mkdir("mnist")
    >>> images = np.array([np.eye(3), 1 - np.eye(3)], dtype=np.uint8) * 255
    >>> labels = np.array([1, 7], dtype=np.uint8)
    >>> with gzip.open("mnist/t10k-images-idx3-ubyte.gz", "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 3]) + np.array(images.shape, ">u4").tobytes() + images.tobytes())
    >>> with open("mnist/t10k-labels-idx1-ubyte", "wb") as f:
    ...     _ = f.write(bytes([0, 0, 0x08, 1]) + np.array(labels.shape, ">u4").tobytes() + labels.tobytes())
    >>> X, y = uw.load_mnist("test", path="mnist", flatten=False, scale=False)
    >>> X.shape, X.dtype, y
    ((2, 3, 3), dtype('uint8'), array([1, 7]))
    >>> uw.load_mnist("train", path="mnist")
    Traceback (most recent call last):
        ...
    upweight.errors.MissingFileError: path: no file train-images-idx3-ubyte or train-images-idx3-ubyte.gz in 'mnist'; ...
    """
    return _load_idx_pair(kind, path, flatten, scale, f"expected the four IDX files {_FILE_LIST}")


def _load_idx_pair(kind, folder, flatten, scale, hint: str):
    if not isinstance(kind, str) or kind not in MNIST_FILES:
        raise InputError(f"kind: expected 'train' or 'test', got {kind!r}")
    for name, flag in (("flatten", flatten), ("scale", scale)):
        if not isinstance(flag, (bool, np.bool_)):
            raise InputTypeError(f"{name}: expected True or False, got {type(flag).__name__}")
    if not isinstance(folder, (str, os.PathLike)):
        raise InputTypeError(f"path: expected a folder (str or os.PathLike), got {type(folder).__name__}")
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise InputError(f"path: {folder!r} is a file; pass the folder that holds the IDX files ({hint})")
        raise MissingFileError(f"path: no folder {folder!r}; {hint}")
    images_name, labels_name = MNIST_FILES[kind]
    images_path = _find(folder, images_name, hint)
    labels_path = _find(folder, labels_name, hint)
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise InputError(f"path: {images_path!r} holds {images.dtype} of shape {images.shape}; "
                         "expected uint8 images of shape (n, rows, cols)")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise InputError(f"path: {labels_path!r} holds {labels.dtype} of shape {labels.shape}; expected integer labels of shape (n,)")
    if len(labels) != len(images):
        raise InputError(f"path: {images_path!r} holds {len(images)} images but {labels_path!r} holds {len(labels)} labels")
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise InputError(f"path: {labels_path!r} has label {int(labels[bad[0]])} at index {int(bad[0])} "
                         f"({bad.size} labels outside 0..9); expected digits/classes 0..9")
    y = labels.astype(np.int64)
    X = images.reshape(len(images), -1) if flatten else images
    if not scale:
        return X, y
    check_output_fits(X.shape, 8, "path", "pass scale=False for the uint8 pixels (8 times smaller)")
    out = X.astype(np.float64)
    out /= 255.0
    return out, y


def _find(folder: str, name: str, hint: str) -> str:
    """``folder/name``, else ``folder/name.gz``, else a MissingFileError naming ``path``."""
    for candidate in (name, name + ".gz"):
        full = os.path.join(folder, candidate)
        if os.path.isfile(full):
            return full
    raise MissingFileError(f"path: no file {name} or {name}.gz in {folder!r}; {hint}")
