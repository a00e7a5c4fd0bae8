"""Type stubs for the compiled core (rust/bindings.rs). Arrays are float64; theta is flattened."""

from typing import final

import numpy as np
import numpy.typing as npt
from typing_extensions import TypeAlias

__all__ = [
    "InfluenceCore",
    "fit",
    "hessian",
    "hvp",
    "losses",
    "num_threads",
    "objective",
    "per_example_grads",
    "predict",
    "prediction_grads",
]

_F64: TypeAlias = npt.NDArray[np.float64]

def fit(
    family: str,
    n_classes: int,
    x: _F64,
    y: _F64,
    w: _F64 | None,
    l2: float,
    tol: float,
    max_iter: int,
    theta0: _F64 | None = None,
) -> tuple[_F64, int, float, bool, float]: ...
def losses(family: str, n_classes: int, theta: _F64, x: _F64, y: _F64) -> _F64: ...
def per_example_grads(family: str, n_classes: int, theta: _F64, x: _F64, y: _F64) -> _F64: ...
def objective(family: str, n_classes: int, theta: _F64, x: _F64, y: _F64, w: _F64 | None, l2: float) -> tuple[float, _F64]: ...
def hessian(family: str, n_classes: int, theta: _F64, x: _F64, y: _F64, w: _F64 | None, l2: float) -> _F64: ...
def hvp(family: str, n_classes: int, theta: _F64, x: _F64, y: _F64, w: _F64 | None, l2: float, v: _F64) -> _F64: ...
def predict(family: str, n_classes: int, theta: _F64, x: _F64, kind: str) -> _F64: ...
def prediction_grads(family: str, n_classes: int, theta: _F64, x: _F64, kind: str) -> _F64: ...
def num_threads() -> int: ...

@final
class InfluenceCore:
    def __new__(
        cls, family: str, n_classes: int, theta: _F64, x: _F64, y: _F64, w: _F64 | None, l2: float
    ) -> InfluenceCore: ...
    @property
    def grad_norm(self) -> float: ...
    @property
    def total_weight(self) -> float: ...
    def params(self, x: _F64, y: _F64) -> _F64: ...
    def self_influence(self, x: _F64, y: _F64) -> _F64: ...
    def on(self, x: _F64, y: _F64, grad_f: _F64) -> _F64: ...
    def on_loss(self, x: _F64, y: _F64, x_test: _F64, y_test: _F64) -> _F64: ...
    def inverse_hvp(self, g: _F64) -> _F64: ...
