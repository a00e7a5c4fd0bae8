"""scikit-learn compatibility (issue 11, item 18): the estimators follow scikit-learn's estimator
API by duck typing (no BaseEstimator), so they pass ``check_estimator`` except for the checks in
EXPECTED_FAILED_CHECKS below, and work in ``cross_val_score``, ``GridSearchCV``, ``clone`` and
pickle."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

import upweight as uw

sklearn = pytest.importorskip("sklearn", minversion="1.6")  # __sklearn_tags__ and expected_failed_checks
_SKLEARN_VERSION = tuple(int(part) for part in sklearn.__version__.split(".")[:2])

from sklearn.base import clone, is_classifier, is_regressor  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes  # noqa: E402
from sklearn.linear_model import PoissonRegressor  # noqa: E402
from sklearn.metrics import accuracy_score, r2_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils import get_tags  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

# --- the checks upweight fails by contract: the one list, by the estimators they apply to ----------

_UNPENALISED = "l2 = 0 (the default) and more parameters than points: the optimum is not unique, so fit raises SingularHessianError"
_CLASS_IDS = ("labels are class ids 0..k-1 with every class present: the check's labels leave class 0 without a point "
              "(e.g. labels {1, 2}), whose intercept then has no finite optimum, so fit raises InputError naming the class")
_SEPARABLE = ("l2 = 0 (the default) on the check's separable classes: no finite optimum, so fit raises SingularHessianError "
              "by design (use l2 > 0)")

#: scikit-learn's estimator checks that upweight's estimators fail because of its documented
#: contract, with the reason; :func:`expected_failed_checks` picks the groups that apply to an
#: estimator. The checks run with xfail_strict, so a check listed here that starts passing fails.
EXPECTED_FAILED_CHECKS: dict[str, dict[str, str]] = {
    "every estimator": {
        "check_estimators_unfitted": "raises upweight's NotFittedError (a ValueError and AttributeError, like scikit-learn's), "
                                     "not sklearn.exceptions.NotFittedError: scikit-learn is not a dependency",
        "check_n_features_in_after_fitting": "checks the feature count, but in upweight's wording ('X: has 1 columns but the "
                                             "model has 4 features'), not scikit-learn's 'X has 1 features, but ... is expecting'",
        "check_complex_data": "complex X is an InputTypeError (a TypeError) naming X, as for every argument (tests/test_bad_input.py)",
        "check_dtype_object": "object-dtype X is refused (InputTypeError naming X), not converted to float",
        "check_estimators_empty_data_messages": "X with 0 columns fits an intercept-only model (d = 0 is supported, as by "
                                                "set_theta(n_features=0)); X with 0 rows is refused",
        "check_supervised_y_2d": "a column-vector y of shape (n, 1) is an InputError naming y, not raveled with a warning",
    },
    "regressors": {
        "check_regressors_no_decision_function": "LinearRegression and PoissonRegression expose decision_function: the linear "
                                                 "predictor eta = X coef + intercept",
    },
    "LogisticRegression": {
        "check_classifiers_classes": "labels are integer class ids 0..k-1, not strings or arbitrary values",
        "check_classifiers_regression_target": "a continuous y is refused ('y: value 0.5 at index 0 is not a class id') without "
                                               "the words 'Unknown label type' or 'continuous' that the check looks for",
        **dict.fromkeys([
            "check_estimators_dtypes", "check_sample_weights_pandas_series", "check_sample_weights_not_an_array",
            "check_classifier_data_not_an_array", "check_sample_weights_shape", "check_sample_weights_not_overwritten",
            "check_fit2d_1feature",
        ], _CLASS_IDS),
    },
    "unpenalised": {
        "check_sample_weight_equivalence_on_dense_data": _UNPENALISED + " (15 points, 30 features; passes with l2 > 0)",
        "check_sample_weight_equivalence_on_sparse_data": _UNPENALISED + " (15 points, 30 features; passes with l2 > 0)",
    },
    "unpenalised regressors": {
        "check_fit2d_1sample": _UNPENALISED + "; the message says 'fewer points than parameters', not '1 sample'",
    },
    "unpenalised LogisticRegression": dict.fromkeys([
        "check_estimators_overwrite_params", "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
        "check_readonly_memmap_input", "check_sample_weights_shape", "check_sample_weights_not_overwritten",
        "check_pipeline_consistency", "check_estimators_pickle", "check_f_contiguous_array_estimator",
        "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_fit2d_1feature",
        "check_dict_unchanged", "check_fit2d_predict1d", "check_positive_only_tag_during_fit",
        "check_non_transformer_estimators_n_iter",
    ], _SEPARABLE),
}


def expected_failed_checks(estimator) -> dict[str, str]:
    """The entries of EXPECTED_FAILED_CHECKS that apply to ``estimator``."""
    logistic = isinstance(estimator, uw.LogisticRegression)
    groups = ["every estimator", "LogisticRegression" if logistic else "regressors"]
    if estimator.l2 == 0:
        groups += ["unpenalised"] + (["unpenalised LogisticRegression"] if logistic else ["unpenalised regressors"])
    return {check: reason for group in groups for check, reason in EXPECTED_FAILED_CHECKS[group].items()}


#: the defaults, and the penalised models that unpenalised fits cannot stand in for
ESTIMATORS = [uw.LinearRegression(), uw.PoissonRegression(), uw.LogisticRegression(),
              uw.LinearRegression(l2=1e-2), uw.PoissonRegression(l2=1e-2), uw.LogisticRegression(l2=1e-2)]

with warnings.catch_warnings():  # scikit-learn warns, when collecting, that they do not inherit BaseEstimator (by design)
    warnings.filterwarnings("ignore", "Estimator .* does not inherit from `sklearn.base.BaseEstimator`", UserWarning)
    _checks = parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failed_checks,
                                      **({"xfail_strict": True} if _SKLEARN_VERSION >= (1, 8) else {}))


@_checks
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning", "ignore::upweight.ConvergenceWarning")
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_the_expected_failures_name_real_checks():
    """Every listed check is one scikit-learn runs (a renamed check would otherwise silently
    stop being expected to fail)."""
    from sklearn.utils.estimator_checks import _check_name, estimator_checks_generator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        names = {_check_name(check) for est in ESTIMATORS for _, check in estimator_checks_generator(est)}
    listed = {check for group in EXPECTED_FAILED_CHECKS.values() for check in group}
    assert listed <= names, sorted(listed - names)


# --- what a user does with them ---------------------------------------------------------------

@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def diabetes():
    return load_diabetes(return_X_y=True)


def test_cross_val_score_equals_clone_fit_score(cancer):
    X, y = cancer
    est = uw.LogisticRegression(l2=1e-2)
    scores = cross_val_score(est, X, y, cv=3)
    manual = []
    for train, test in StratifiedKFold(3).split(X, y):  # what cv=3 means for a classifier
        fitted = clone(est).fit(X[train], y[train])
        manual.append(fitted.score(X[test], y[test]))
        assert manual[-1] == accuracy_score(y[test], fitted.predict(X[test]))
    assert np.all(np.isfinite(scores)) and scores.min() > 0.9
    np.testing.assert_array_equal(scores, manual)
    assert not hasattr(est, "theta_")  # cross_val_score fitted clones, not est


def test_unpenalised_logistic_regression_refuses_separable_folds(cancer):
    """The default l2 = 0 has no finite optimum on separable classes: by design an error
    saying to use l2 > 0, not a silently huge theta."""
    X, y = cancer
    with pytest.raises(uw.SingularHessianError, match="use l2 > 0"):
        cross_val_score(uw.LogisticRegression(), X, y, cv=3, error_score="raise")


def test_grid_search_over_l2(diabetes):
    X, y = diabetes
    grid = [0.0, 1e-3, 1e-2, 1e-1]
    search = GridSearchCV(uw.LinearRegression(), {"l2": grid}, cv=3).fit(X, y)
    for l2, mean in zip(search.cv_results_["param_l2"], search.cv_results_["mean_test_score"], strict=True):
        r2 = [r2_score(y[test], uw.LinearRegression(l2=l2).fit(X[train], y[train]).predict(X[test]))
              for train, test in KFold(3).split(X)]
        np.testing.assert_allclose(mean, np.mean(r2), rtol=1e-12)
    assert search.best_params_["l2"] in grid
    assert search.best_estimator_.l2 == search.best_params_["l2"] and search.best_estimator_.n_features_in_ == X.shape[1]


@pytest.mark.parametrize("est", [
    uw.LinearRegression(l2=0.5, tol=1e-8, max_iter=7, warm_start=True, solver="cg", penalty_renormalized=False),
    uw.PoissonRegression(l2=1e-3, penalty_renormalized=False),
    uw.LogisticRegression(l2=1e-2, n_classes=4, penalty_renormalized=False, solver="direct"),
], ids=lambda est: type(est).__name__)
def test_clone_keeps_every_parameter(est):
    copy = clone(est)
    assert type(copy) is type(est) and copy is not est
    assert copy.get_params() == est.get_params() and repr(copy) == repr(est)
    assert copy.penalty_renormalized is False
    if isinstance(est, uw.LogisticRegression):
        assert copy.get_params()["n_classes"] == copy.n_classes_param == 4


def test_clone_of_a_fitted_model_is_unfitted(cancer):
    X, y = cancer
    y3 = np.where(X[:, 0] > 1.0, 2, y)  # three classes, every one present
    est = uw.LogisticRegression(l2=1e-2, n_classes=3).fit(X, y3)
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    for name in ("theta_", "classes_", "n_features_in_", "n_iter_", "coef_"):
        assert hasattr(est, name) and not hasattr(copy, name)
    with pytest.raises(uw.NotFittedError):
        copy.predict(X)


def _fitted(family):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 5))
    eta = X @ rng.standard_normal(5) * 0.5
    if family == "linear":
        y = eta + rng.standard_normal(120)
        return uw.LinearRegression(l2=1e-3).fit(X, y), X, y
    if family == "poisson":
        y = rng.poisson(np.exp(eta)).astype(float)
        return uw.PoissonRegression(l2=1e-3).fit(X, y), X, y
    y = (rng.uniform(size=120) < 1 / (1 + np.exp(-eta))).astype(int)
    if family == "multinomial":
        y = y + (eta > 0.5)
    return uw.LogisticRegression(l2=1e-2).fit(X, y), X, y


@pytest.mark.parametrize("family", ["linear", "poisson", "logistic", "multinomial"])
def test_pickling_a_fitted_model_round_trips_bit_identically(family):
    est, X, y = _fitted(family)
    loaded = pickle.loads(pickle.dumps(est))
    assert type(loaded) is type(est) and loaded.get_params() == est.get_params()
    for method in ("predict", "decision_function", "predict_proba"):
        if hasattr(est, method):
            np.testing.assert_array_equal(getattr(loaded, method)(X), getattr(est, method)(X))
    assert loaded.score(X, y) == est.score(X, y)
    np.testing.assert_array_equal(uw.Influence(loaded, X, y).params(idx=[0, 1]), uw.Influence(est, X, y).params(idx=[0, 1]))


@pytest.mark.parametrize("family", ["linear", "poisson", "logistic", "multinomial"])
def test_score_is_what_sklearn_scores(family):
    """R^2, D^2 and accuracy as scikit-learn computes them, weighted or not."""
    est, X, y = _fitted(family)
    w = np.random.default_rng(4).uniform(0.2, 3.0, len(y))
    for sw in (None, w):
        if family == "linear":
            expected = r2_score(y, est.predict(X), sample_weight=sw)
        elif family == "poisson":
            sk = PoissonRegressor().fit(X, y)  # then given upweight's parameters
            sk.coef_, sk.intercept_ = est.coef_.copy(), est.intercept_
            expected = sk.score(X, y, sample_weight=sw)
        else:
            expected = accuracy_score(y, est.predict(X), sample_weight=sw)
        np.testing.assert_allclose(est.score(X, y, sample_weight=sw), expected, rtol=1e-12)
    assert 0.0 < est.score(X, y) < 1.0
    with pytest.raises(uw.InputError, match="^sample_weight: must be >= 0"):
        est.score(X, y, sample_weight=-w)
    with pytest.raises(uw.InputError, match="^y: has 119 entries"):
        est.score(X, y[1:])


def test_r2_of_constant_targets_follows_sklearn():
    X = np.arange(8.0).reshape(4, 2)
    est = uw.LinearRegression(l2=1.0).fit(X, np.full(4, 2.0))
    assert est.score(X, np.full(4, 2.0)) == r2_score(np.full(4, 2.0), est.predict(X))
    assert est.score(X, np.full(4, 5.0)) == r2_score(np.full(4, 5.0), est.predict(X)) == 0.0


def test_tags_and_fitted_state():
    lin, pois, log = uw.LinearRegression(), uw.PoissonRegression(), uw.LogisticRegression()
    assert is_regressor(lin) and is_regressor(pois) and is_classifier(log) and not is_classifier(lin)
    assert get_tags(pois).target_tags.positive_only and not get_tags(lin).target_tags.positive_only
    assert all(get_tags(e).input_tags.sparse and get_tags(e).target_tags.required for e in (lin, pois, log))
    assert issubclass(uw.InputError, ValueError) and issubclass(uw.NotFittedError, (ValueError, AttributeError))
    X = np.ones((5, 2))
    X[3, 1] = np.nan
    with pytest.raises(uw.InputError, match=r"^X: contains NaN or infinity \(first at row 3, column 1\)"):
        lin.fit(X, np.zeros(5))
    assert not any(k.endswith("_") for k in vars(lin))  # a failed fit leaves no fitted attribute


def test_upweight_does_not_import_sklearn():
    """scikit-learn is optional: fitting and scoring never import it (only scikit-learn,
    asking for the tags, does)."""
    code = ("import sys, numpy as np, upweight as uw\n"
            "X = np.random.default_rng(0).standard_normal((20, 2))\n"
            "m = uw.LogisticRegression(l2=1e-2).fit(X, (X[:, 0] > 0).astype(int))\n"
            "m.score(X, (X[:, 0] > 0).astype(int)); uw.LinearRegression().fit(X, X[:, 1]).score(X, X[:, 1])\n"
            "assert 'sklearn' not in sys.modules, 'sklearn imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
