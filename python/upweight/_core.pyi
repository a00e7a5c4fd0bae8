"""Type stubs for the compiled core (rust/python/). Arrays are float64; theta is flattened."""

import os
from collections.abc import Callable
from typing import TypeAlias, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "BLOCK_ROWS",
    "TILED_HESSIAN_MAX_ROW_BLOCK_P",
    "Factor",
    "FactoredQueries",
    "Influence",
    "Model",
    "Watched",
    "curvature_diag",
    "finish_hvp_sums",
    "finish_sums",
    "fit_adam",
    "fit_lbfgs",
    "last_layer",
    "merge_top_k",
    "mlp",
    "npy_header",
    "null_space",
    "num_threads",
    "partial_hvp",
    "partial_sums",
    "pbrf",
    "score_block",
    "scores_factored",
    "self_influence_block",
    "solve_queries_factored",
    "top_k_block",
    "top_k_factored",
    "with_curvature",
    "with_kfac_samples",
    "__version__",
]

_F64: TypeAlias = npt.NDArray[np.float64]
_F32: TypeAlias = npt.NDArray[np.float32]
# a CSR matrix: (data, indices int32, indptr int64, n_columns), see _validation.as_csr
_Csr: TypeAlias = tuple[_F64, npt.NDArray[np.int32], npt.NDArray[np.int64], int]
_X: TypeAlias = _F64 | _F32 | str | os.PathLike[str] | _Csr | Watched
_Names: TypeAlias = tuple[str, str] | None
_Info: TypeAlias = tuple[npt.NDArray[np.uintp], _F64, npt.NDArray[np.bool_]]
_TopK: TypeAlias = tuple[npt.NDArray[np.uintp], _F64, npt.NDArray[np.uintp], _F64]
_TopKIn: TypeAlias = tuple[npt.NDArray[np.int64], _F64, npt.NDArray[np.int64], _F64]
_Progress: TypeAlias = Callable[[int, int, int], object] | None

BLOCK_ROWS: int
TILED_HESSIAN_MAX_ROW_BLOCK_P: int
__version__: str

def merge_top_k(a: _TopKIn, b: _TopKIn, k: int) -> _TopK: ...
def npy_header(path: str | os.PathLike[str], arg: str = "X") -> tuple[str, int, int, int]: ...
def num_threads() -> int: ...
def partial_sums(
    model: Model, theta: _F64, x: _X, y: _F64, w: _F64 | None, hessian: bool = False
) -> tuple[float, float, _F64, _F64 | None]: ...
def finish_sums(
    model: Model, theta: _F64, l2: float, weight: float, loss: float, grad: _F64, hessian: _F64 | None = None
) -> tuple[float, _F64, _F64 | None]: ...
def partial_hvp(model: Model, theta: _F64, x: _X, y: _F64, w: _F64 | None, v: _F64) -> _F64: ...
def finish_hvp_sums(model: Model, l2: float, total_weight: float, hv: _F64, v: _F64) -> _F64: ...
def score_block(model: Model, theta: _F64, x: _X, y: _F64, vc: _F64, total_weight: float) -> _F64 | _F32: ...
def top_k_block(model: Model, theta: _F64, x: _X, y: _F64, vc: _F64, total_weight: float, k: int, offset: int) -> _TopK: ...
def null_space(model: Model, l2: float) -> _F64 | None: ...
def self_influence_block(model: Model, theta: _F64, x: _X, y: _F64, factor: Factor, penalty_grad: _F64, total_weight: float) -> _F64: ...

@final
class Factor:
    def __new__(cls, hessian: _F64, damping: float = 0.0, null: _F64 | None = None) -> Factor: ...
    @property
    def n_params(self) -> int: ...
    def solve(self, b: _F64) -> _F64: ...

@final
class Model:
    @staticmethod
    def glm(family: str, n_classes: int, n_features: int) -> Model: ...
    @staticmethod
    def gradients(n_params: int) -> Model: ...
    @property
    def family(self) -> str | None: ...
    @property
    def n_params(self) -> int: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_outputs(self) -> int: ...
    def losses(self, theta: _F64, x: _X, y: _F64, names: _Names = None) -> _F64: ...
    def per_example_grads(self, theta: _F64, x: _X, y: _F64, names: _Names = None) -> _F64: ...
    def predict(self, theta: _F64, x: _X, kind: str, names: _Names = None) -> _F64: ...
    def prediction_grads(self, theta: _F64, x: _X, kind: str, names: _Names = None) -> _F64: ...
    def objective(self, theta: _F64, x: _X, y: _F64, w: _F64 | None, l2: float) -> tuple[float, _F64]: ...
    def hessian(self, theta: _F64, x: _X, y: _F64, w: _F64 | None, l2: float) -> _F64: ...
    def hvp(self, theta: _F64, x: _X, y: _F64, w: _F64 | None, l2: float, v: _F64) -> _F64: ...
    def fit(
        self,
        x: _X,
        y: _F64,
        w: _F64 | None,
        l2: float,
        tol: float,
        max_iter: int,
        theta0: _F64 | None = None,
        progress: _Progress = None,
        method: str = "direct",
        report_move: bool = False,
    ) -> tuple[_F64, int, float, bool, float, tuple[int, float] | None]: ...
    def refit(
        self,
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
        progress: _Progress = None,
        l2s: list[float] | None = None,
        report_move: bool = False,
    ) -> tuple[_F64, npt.NDArray[np.uintp], _F64, npt.NDArray[np.bool_], _F64]: ...

@final
class Watched:
    def __new__(cls, x: _F64 | _F32, name: str = "X") -> Watched: ...
    @property
    def array(self) -> _F64 | _F32: ...
    @property
    def complete(self) -> bool: ...
    def check(self) -> None: ...

@final
class Influence:
    def __new__(
        cls,
        model: Model,
        theta: _F64,
        x: _X,
        y: _F64 | None,
        w: _F64 | None,
        l2: float,
        method: str = "direct",
        damping: float = 0.0,
        rtol: float = 1e-10,
        atol: float = 0.0,
        max_iter: int = 1000,
        precondition: str = "auto",
        progress: _Progress = None,
        renormalize: bool = True,
        hessian: _F64 | None = None,
        names: _Names = None,
        rank: int = 0,
        steps: int | None = None,
        arnoldi_inverse: str = "projection",
        residuals: bool = True,
        state: dict[str, npt.NDArray[np.float64]] | None = None,
    ) -> Influence: ...
    @property
    def grad_norm(self) -> float: ...
    @property
    def objective(self) -> float: ...
    def newton_decrement(self) -> float: ...
    @property
    def total_weight(self) -> float: ...
    @property
    def n_samples(self) -> int: ...
    @property
    def preconditioned(self) -> bool | None: ...
    @property
    def ritz(self) -> tuple[_F64, _F64, int, int] | None: ...
    def curvature_state(self) -> dict[str, npt.NDArray[np.float64]] | None: ...
    def params(self, rows: list[int] | None = None) -> tuple[_F64, _Info]: ...
    def params_of(self, x: _X, y: _F64, names: _Names = None) -> tuple[_F64, _Info]: ...
    def self_influence(self, segment: tuple[int, int] | None = None) -> tuple[_F64, _Info]: ...
    def loss_grads(self, x_test: _X, y_test: _F64, names: _Names = None) -> _F64: ...
    def on(self, grad_f: _F64, rows: list[int] | None = None) -> tuple[_F64 | _F32, _Info]: ...
    def top_k(self, grad_f: _F64, k: int) -> tuple[_TopK, _Info]: ...
    def solve_queries(self, grad_f: _F64) -> tuple[_F64, _Info]: ...
    def top_k_solved(self, vc: _F64, k: int, segment: tuple[int, int] | None = None) -> _TopK: ...
    def scores_solved(self, vc: _F64, rows: list[int] | None = None) -> _F64 | _F32: ...
    def leverage(self) -> _F64: ...
    def loo_params(self, rows: list[int] | None = None) -> _F64: ...
    def loo_self_losses(self, rows: list[int] | None = None) -> _F64: ...  # (n, 2): held out, at theta*
    def loo_on(self, x_test: _X, y_test: _F64 | None, target: str, rows: list[int] | None = None, names: _Names = None) -> _F64: ...
    def loo_top_k(self, x_test: _X, y_test: _F64, k: int, segment: tuple[int, int] | None = None, names: _Names = None) -> _TopK: ...
    def leave_out(
        self, groups: list[list[int]], x_test: _X | None = None, y_test: _F64 | None = None, names: _Names = None
    ) -> tuple[_F64, _F64 | None]: ...
    def inverse_hvp(self, g: _F64) -> tuple[_F64, _Info]: ...

# networks (rust/python/network.rs)
def mlp(sizes: list[int], activation: str, head: str, curvature: str) -> Model: ...
def with_curvature(model: Model, curvature: str) -> Model: ...
def with_kfac_samples(model: Model, samples: int) -> Model: ...
def last_layer(model: Model, theta: _F64) -> tuple[Model, tuple[int, int]]: ...

@final
class FactoredQueries:
    @property
    def rank(self) -> int: ...
    @property
    def n_queries(self) -> int: ...
    @property
    def errors(self) -> _F64: ...

def solve_queries_factored(inf: Influence, grad_f: _F64, rank: int) -> tuple[FactoredQueries, _Info]: ...
def scores_factored(inf: Influence, queries: FactoredQueries, rows: list[int] | None = None) -> _F64: ...
def top_k_factored(inf: Influence, queries: FactoredQueries, k: int, segment: tuple[int, int] | None = None) -> _TopK: ...
def curvature_diag(model: Model, theta: _F64, x: _X, y: _F64, w: _F64 | None, l2: float, progress: _Progress = None) -> _F64 | None: ...
def fit_lbfgs(
    model: Model,
    x: _X,
    y: _F64,
    w: _F64 | None,
    l2: float,
    theta0: _F64,
    tol: float,
    max_iter: int,
    memory: int = 10,
    progress: _Progress = None,
) -> tuple[_F64, int, float, bool, float]: ...
def fit_adam(
    model: Model,
    x: _X,
    y: _F64,
    w: _F64 | None,
    l2: float,
    theta0: _F64,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    tol: float,
    progress: _Progress = None,
) -> tuple[_F64, int, float, bool, float]: ...
def pbrf(
    model: Model,
    theta: _F64,
    x: _X,
    y: _F64,
    w: _F64 | None,
    l2: float,
    damping: float,
    renormalize: bool,
    points: list[int],
    eps: list[float],
    tol: float = 1e-10,
    max_iter: int = 100,
    progress: _Progress = None,
) -> tuple[_F64, list[bool]]: ...
