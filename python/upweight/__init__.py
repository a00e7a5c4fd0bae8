"""upweight: exact, fast influence functions for weighted generalised linear models.

    import upweight as uw
    model = uw.LogisticRegression(l2=1e-3).fit(X, y)
    inf = uw.Influence(model, X, y)
    S = inf.on_loss(X_test, y_test)     # (q, n); S[t, m] < 0: training point m helps test point t

See DESIGN.md (in the repository) for every definition, sign and formula.
"""

from . import datasets, plots, reference  # plots imports matplotlib only when drawing
from ._core import num_threads
from .datasets import load_breast_cancer, load_digits, load_fashion_mnist, load_mnist
from .diagnostics import Diagnostics, diagnostics
from .errors import (
    ConvergenceError,
    ConvergenceWarning,
    HighLeverageWarning,
    InputError,
    InputTypeError,
    InternalError,
    MissingFileError,
    NotAtOptimumWarning,
    NotFittedError,
    SingularHessianError,
    UpweightError,
)
from .influence import GradientInfluence, Influence, SolveInfo, TopK
from .io import load_idx, load_model, save_model
from .leave_out import LooCV, approximate_loo_cv
from .models import LinearRegression, LogisticRegression, Model, PoissonRegression
from .networks import MLPClassifier, MLPRegressor
from .validation import Prediction, TestLoss, compare, leave_k_out, leave_one_out, response_curve

__version__ = "0.1.0"


def __getattr__(name: str):
    # upweight.dask is imported on first use (it needs the optional dask extra)
    if name == "dask":
        import importlib

        return importlib.import_module(".dask", __name__)
    raise AttributeError(f"module 'upweight' has no attribute {name!r}")

__all__ = [
    "ConvergenceError",
    "ConvergenceWarning",
    "Diagnostics",
    "GradientInfluence",
    "Influence",
    "InputError",
    "InputTypeError",
    "InternalError",
    "LinearRegression",
    "LooCV",
    "LogisticRegression",
    "MLPClassifier",
    "MLPRegressor",
    "MissingFileError",
    "Model",
    "HighLeverageWarning",
    "NotAtOptimumWarning",
    "NotFittedError",
    "PoissonRegression",
    "Prediction",
    "SolveInfo",
    "TestLoss",
    "TopK",
    "SingularHessianError",
    "UpweightError",
    "approximate_loo_cv",
    "compare",
    "datasets",
    "diagnostics",
    "leave_k_out",
    "leave_one_out",
    "load_breast_cancer",
    "load_digits",
    "load_fashion_mnist",
    "load_idx",
    "load_mnist",
    "load_model",
    "num_threads",
    "plots",
    "reference",
    "response_curve",
    "save_model",
]
