"""Small real data sets shipped inside the package (sources and licences in data/README.md)."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np


def load_breast_cancer():
    """Breast Cancer Wisconsin (Diagnostic), CC BY 4.0: 569 x 30 features, y = 1 for benign.

    Returns ``(X, y, feature_names)`` with X float64 (569, 30) and y int64 (569,).
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
    """
    ref = resources.files("upweight") / "data" / "digits.csv.gz"
    with ref.open("rb") as raw, gzip.open(raw, "rt") as f:
        f.readline()
        table = np.loadtxt(f, delimiter=",")
    return table[:, :-1].copy(), table[:, -1].astype(np.int64)
