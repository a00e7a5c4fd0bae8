"""Type stubs for the compiled core (rust/bindings.rs). Arrays are float64; theta is flattened."""

import os
from collections.abc import Callable
from typing import TypeAlias, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLOCK_ROWS",
    "TILED_HESSIAN_MAX_ROW_BLOCK_P",
    "InfluenceCore",
    "fit",
    "hessian",
    "hvp",
    "losses",
    "merge_top_k",
    "npy_header",
    "num_threads",
    "objective",
    "per_example_grads",
    "predict",
    "prediction_grads",
    "refit",
]

_F64: TypeAlias = npt.NDArray[np.float64]
_F32: TypeAlias = npt.NDArray[np.float32]
# a CSR matrix: (data, indices int32, indptr int64, n_columns), see _validation.as_csr
_Csr: TypeAlias = tuple[_F64, npt.NDArray[np.int32], npt.NDArray[np.int64], int]
_X: TypeAlias = _F64 | _F32 | str | os.PathLike[str] | _Csr

def fit(
    family: str,
    n_classes: int,
    x: _X,
    y: _F64,
    w: _F64 | None,
    l2: float,
    tol: float,
    max_iter: int,
    theta0: _F64 | None = None,
    progress: Callable[[int, int, int], object] | None = None,
    method: str = "direct",
) -> tuple[_F64, int, float, bool, float]: ...
def refit(
    family: str,
    n_classes: int,
    theta0: _F64,
    x: _X,
    y: _F64,
    w: _F64 | None,
    l2: float,
    tol: float,
    max_iter: int,
    points: list[list[int]],
    weights: list[list[float]],
    method: str = "direct",
    progress: Callable[[int, int, int], object] | None = None,
    l2s: list[float] | None = None,
) -> tuple[_F64, npt.NDArray[np.uintp], _F64, npt.NDArray[np.bool_]]: ...
def losses(family: str, n_classes: int, theta: _F64, x: _X, y: _F64) -> _F64: ...
def per_example_grads(family: str, n_classes: int, theta: _F64, x: _X, y: _F64) -> _F64: ...
def objective(family: str, n_classes: int, theta: _F64, x: _X, y: _F64, w: _F64 | None, l2: float) -> tuple[float, _F64]: ...
def hessian(family: str, n_classes: int, theta: _F64, x: _X, y: _F64, w: _F64 | None, l2: float) -> _F64: ...
def hvp(family: str, n_classes: int, theta: _F64, x: _X, y: _F64, w: _F64 | None, l2: float, v: _F64) -> _F64: ...
def predict(family: str, n_classes: int, theta: _F64, x: _X, kind: str) -> _F64: ...
def prediction_grads(family: str, n_classes: int, theta: _F64, x: _X, kind: str) -> _F64: ...
def num_threads() -> int: ...

_Info: TypeAlias = tuple[npt.NDArray[np.uintp], _F64, npt.NDArray[np.bool_]]

BLOCK_ROWS: int
TILED_HESSIAN_MAX_ROW_BLOCK_P: int

_TopK: TypeAlias = tuple[npt.NDArray[np.uintp], _F64, npt.NDArray[np.uintp], _F64]

def merge_top_k(a: _TopK, b: _TopK, k: int) -> _TopK: ...
def npy_header(path: str | os.PathLike[str], arg: str = "X") -> tuple[str, int, int, int]: ...

@final
class InfluenceCore:
    def __new__(
        cls,
        family: str,
        n_classes: int,
        theta: _F64,
        x: _X,
        y: _F64,
        w: _F64 | None,
        l2: float,
        method: str = "direct",
        damping: float = 0.0,
        rtol: float = 1e-10,
        atol: float = 0.0,
        max_iter: int = 1000,
        precondition: bool = True,
        progress: Callable[[int, int, int], object] | None = None,
        renormalize: bool = True,
    ) -> InfluenceCore: ...
    @staticmethod
    def from_gradients(
        x: _X,
        w: _F64 | None,
        hessian: _F64 | None = None,
        method: str = "direct",
        damping: float = 0.0,
        rtol: float = 1e-10,
        atol: float = 0.0,
        max_iter: int = 1000,
        precondition: bool = True,
        progress: Callable[[int, int, int], object] | None = None,
    ) -> InfluenceCore: ...
    @property
    def grad_norm(self) -> float: ...
    @property
    def total_weight(self) -> float: ...
    @property
    def n_samples(self) -> int: ...
    def params_train(self) -> tuple[_F64, _Info]: ...
    def params(self, x: _F64, y: _F64) -> tuple[_F64, _Info]: ...
    def self_influence(self, segment: tuple[int, int] | None = None) -> tuple[_F64, _Info]: ...
    def loss_grads(self, x_test: _F64, y_test: _F64) -> _F64: ...
    def on(self, grad_f: _F64, rows: list[int] | None = None) -> tuple[_F64, _Info]: ...
    def top_k(
        self, grad_f: _F64, k: int
    ) -> tuple[tuple[npt.NDArray[np.uintp], _F64, npt.NDArray[np.uintp], _F64], _Info]: ...
    def solve_queries(self, grad_f: _F64) -> tuple[_F64, _Info]: ...
    def top_k_solved(
        self, vc: _F64, k: int, segment: tuple[int, int] | None = None
    ) -> tuple[npt.NDArray[np.uintp], _F64, npt.NDArray[np.uintp], _F64]: ...
    def leverage(self) -> _F64: ...
    def inverse_hvp(self, g: _F64) -> tuple[_F64, _Info]: ...
