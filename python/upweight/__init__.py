"""upweight: exact, fast influence functions for weighted generalised linear models.

    import upweight as uw
    model = uw.LogisticRegression(l2=1e-3).fit(X, y)
    inf = uw.Influence(model, X, y)
    S = inf.on_loss(X_test, y_test)     # (q, n); S[t, m] < 0: training point m helps test point t

See DESIGN.md (in the repository) for every definition, sign and formula.
"""

from . import _core, datasets, plots, reference  # plots imports matplotlib only when drawing
from ._core import __version__
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
from .influence import GradientInfluence, Influence, LooTopK, SolvedQueries, SolveInfo, TopK
from .io import load_idx, load_model, save_model
from .leave_out import LooCV, approximate_loo_cv
from .models import LinearRegression, LogisticRegression, Model, PoissonRegression
from .networks import MLPClassifier, MLPRegressor
from .validation import Prediction, TestLoss, compare, leave_k_out, leave_one_out, response_curve


def num_threads() -> int:
    """The number of threads the core's parallel loops use.

    The core runs its heavy loops (Hessians, solves, scoring) on a rayon thread pool with one
    thread per core unless ``RAYON_NUM_THREADS`` is set before upweight is first imported.
    Results are bitwise the same for every thread count.

    Returns
    -------
    int
        The size of the thread pool, at least 1.

    Examples
    --------
    >>> uw.num_threads() >= 1
    True
    """
    return _core.num_threads()


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
    "SolvedQueries",
    "LooTopK",
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
    "__version__",
    "plots",
    "reference",
    "response_curve",
    "save_model",
]
