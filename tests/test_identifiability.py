"""Identifiability and units (issue 11, items 2, 7, 8, 11, 14): a fit or an influence answers
only where the objective has one finite minimiser, says so otherwise, and gives the same answer
whatever the storage of X, the solver, or the units of the features.

Classes of problem, each tested over storages / solvers / families:
* targets for which an intercept has no finite optimum (a class absent or only at weight 0, an
  implausible class count, all-zero Poisson counts): InputError before any work or allocation;
* data with no finite optimum although no class is absent (complete and quasi-complete
  separation, a one-hot column used by one row, a Poisson group of zeros): SingularHessianError
  for in-memory, float32, sparse, .npy path and memmap X alike, with direct and CG steps;
* singular Hessians (collinear or all-zero columns, l2 = 0): direct and CG refuse alike, at any
  scale of the columns;
* units: NIST's Longley data (certified values) fit, converge and give the same influence under
  column rescaling by factors up to 1e8; the singularity test does not depend on the units.
"""

import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import upweight as uw
from upweight.errors import ConvergenceWarning, InputError, NotAtOptimumWarning, SingularHessianError

RNG = np.random.default_rng(11)
N = 160
X0 = RNG.standard_normal((N, 3))
Y_BIN = (X0[:, 0] + 0.7 * RNG.standard_normal(N) > 0).astype(float)
Y_MULTI = np.where(X0[:, 1] + 0.8 * RNG.standard_normal(N) > 0.4, 2.0, (X0[:, 0] > 0).astype(float))


def storages(X, tmp_path):
    """X as every storage the estimators accept."""
    path = os.path.join(tmp_path, "X.npy")
    np.save(path, X)
    return {
        "float64": X,
        "float32": X.astype(np.float32),
        "csr": sp.csr_matrix(X),
        "npy_path": path,
        "memmap": np.load(path, mmap_mode="r"),
    }


# -- intercepts with no finite optimum: refused up front ----------------------------------------
@pytest.mark.parametrize("label", [1e7, 1e9, 2.0**62])
def test_a_stray_huge_label_is_refused_before_allocating_classes(label):
    y = np.r_[np.zeros(15), np.ones(14), label]
    X = RNG.standard_normal((30, 2))
    with pytest.raises(InputError, match=r"y: label .* at index 29 would make .* classes for 30 points"):
        uw.LogisticRegression().fit(X, y)


def test_more_classes_than_points_is_refused():
    X = RNG.standard_normal((5, 2))
    with pytest.raises(InputError, match="n_classes: 1000000 classes cannot all be present among 5 points"):
        uw.LogisticRegression(n_classes=10**6).fit(X, np.arange(5.0))


@pytest.mark.parametrize("l2", [0.0, 0.1])
@pytest.mark.parametrize("case", ["labels 0 and 2", "class 1 at weight 0", "n_classes above the labels", "binary all zero"])
def test_a_class_without_positive_weight_is_refused_whatever_l2(case, l2):
    X, y, w, kw = X0, Y_MULTI.copy(), None, {}
    if case == "labels 0 and 2":
        y[y == 1] = 0
    elif case == "class 1 at weight 0":
        w = np.where(y == 1, 0.0, 1.0)
    elif case == "n_classes above the labels":
        kw = {"n_classes": 4}
    else:
        y = np.zeros(N)
    klass = 3 if case == "n_classes above the labels" else 1
    how = "has only points of weight 0" if w is not None else "has no training point"
    message = f"y: class {klass} of .* {how}, so its intercept has no finite optimum"
    if case == "binary all zero":
        message = r"y: only one class \(0\) has points of positive weight; LogisticRegression needs at least 2 classes"
    with pytest.raises(InputError, match=message):
        uw.LogisticRegression(l2=l2, **kw).fit(X, y, sample_weight=w)


def test_all_zero_poisson_counts_are_refused():
    with pytest.raises(InputError, match="y: every count with positive weight is 0"):
        uw.PoissonRegression(l2=1.0).fit(X0, np.zeros(N))
    y = np.r_[np.zeros(N - 1), 3.0]
    w = np.r_[np.ones(N - 1), 0.0]
    with pytest.raises(InputError, match="y: every count with positive weight is 0"):
        uw.PoissonRegression().fit(X0, y, sample_weight=w)
    assert uw.PoissonRegression().fit(X0, y).converged_  # with its weight the count is there


# -- no finite optimum although every class is present ------------------------------------------
def quasi_separated():
    """x0 > 0 => y = 1, x0 < 0 => y = 0, and points with x0 = 0 of both labels."""
    X = X0.copy()
    y = (X[:, 0] > 0).astype(float)
    X[:6, 0] = 0.0
    y[:6] = [0, 1, 0, 1, 1, 0]
    return X, y


def one_hot_for_one_row(y):
    """A column that is 1 for row 7 only: its coefficient fits row 7 perfectly as it goes to +-inf."""
    X = np.column_stack([X0, np.zeros(N)])
    X[7, 3] = 1.0
    return X, y


DIVERGING = {
    "complete separation": lambda: (X0, (X0[:, 0] > 0).astype(float), uw.LogisticRegression),
    "quasi-complete separation": lambda: (*quasi_separated(), uw.LogisticRegression),
    "one-hot column of one row (binary)": lambda: (*one_hot_for_one_row(Y_BIN), uw.LogisticRegression),
    "one-hot column of one row (multinomial)": lambda: (*one_hot_for_one_row(Y_MULTI), uw.LogisticRegression),
    "poisson group of zero counts": lambda: (
        np.column_stack([X0, (np.arange(N) < 10).astype(float)]),
        np.where(np.arange(N) < 10, 0.0, RNG.poisson(np.exp(0.3 * X0[:, 0]))).astype(float),
        uw.PoissonRegression,
    ),
}


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("case", list(DIVERGING))
def test_no_finite_optimum_raises_whatever_the_storage(case, solver, tmp_path):
    X, y, cls = DIVERGING[case]()
    for name, Xs in storages(X, tmp_path).items():
        model = cls(solver=solver)
        with pytest.raises(SingularHessianError, match="no finite minimiser") as err:
            model.fit(Xs, y)
        assert "l2 > 0" in str(err.value), name
        assert getattr(model, "theta_", None) is None, name  # no half-fitted model is left behind
    # with a penalty the optimum is finite and unique: the same data fit
    assert cls(l2=1e-2, solver=solver).fit(X, y).converged_


def test_a_diverging_fit_names_the_point_it_fits_perfectly():
    X, y = one_hot_for_one_row(Y_BIN)
    with pytest.raises(SingularHessianError, match="training point 7's linear predictor"):
        uw.LogisticRegression().fit(X, y)


def test_well_posed_fits_with_extreme_points_are_not_refused():
    """Large linear predictors alone are not divergence: a high-leverage outlier and nearly
    separable classes have a finite optimum (no false alarm)."""
    X = X0.copy()
    X[0, 1] = 300.0
    m = uw.LogisticRegression().fit(X, Y_BIN)
    assert m.converged_ and np.abs(m.decision_function(X)).max() > 5
    y = (X0[:, 0] + 0.05 * RNG.standard_normal(N) > 0).astype(float)  # nearly separable
    if not np.all((X0[:, 0] > 0) == (y > 0)):
        assert uw.LogisticRegression().fit(X0, y).converged_


def test_separable_data_via_the_cli_file_path_raise(tmp_path, capsys):
    from upweight.cli import main

    X = X0
    y = (X[:, 0] > 0).astype(float)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    code = main(["fit", str(tmp_path / "X.npy"), "--y", str(tmp_path / "y.npy"), "--family", "logistic",
                 "-o", str(tmp_path / "m.npz")])
    assert code != 0
    assert "no finite minimiser" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


# -- singular Hessians: direct and CG answer alike ----------------------------------------------
def collinear(scale):
    X = np.column_stack([X0, X0[:, 0] - 2 * X0[:, 1]]) * scale
    return X


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_collinear_features_are_refused_by_every_solver_at_every_scale(solver, scale):
    X = collinear(np.array([1.0, scale, 1.0, 1.0 / scale]))
    for cls, y in [(uw.LinearRegression, X0[:, 0] + RNG.standard_normal(N)), (uw.LogisticRegression, Y_BIN)]:
        with pytest.raises(SingularHessianError):
            cls(solver=solver).fit(X, y)
        # an influence at given parameters (no fit) refuses too, with either solver
        model = cls(l2=1e-3).fit(X, y)
        model.l2 = 0.0
        with pytest.raises(SingularHessianError), warnings.catch_warnings():
            warnings.simplefilter("ignore", NotAtOptimumWarning)
            uw.Influence(model, X, y, solver=solver)


@pytest.mark.parametrize("solver", ["direct", "cg"])
def test_an_all_zero_column_is_refused_without_penalty_and_fine_with_damping(solver):
    X = np.column_stack([X0, np.zeros(N)])
    with pytest.raises(SingularHessianError):
        uw.LogisticRegression(solver=solver).fit(X, Y_BIN)
    model = uw.LogisticRegression(l2=1e-2).fit(X, Y_BIN)
    model.l2 = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotAtOptimumWarning)
        with pytest.raises(SingularHessianError):
            uw.Influence(model, X, Y_BIN, solver=solver)
        inf = uw.Influence(model, X, Y_BIN, solver=solver, damping=1e-3)
    assert np.all(np.isfinite(inf.self_influence()))


# -- units: NIST Longley, certified values ------------------------------------------------------
def longley():
    import statsmodels.api as sm

    data = sm.datasets.longley.load_pandas()
    return data.exog.to_numpy(dtype=float), data.endog.to_numpy(dtype=float)


# NIST StRD, Longley (https://www.itl.nist.gov/div898/strd/lls/data/Longley.shtml): certified
# coefficients of GNPDEFL, GNP, UNEMP, ARMFORCE, POP, YEAR, then the intercept.
LONGLEY_CERTIFIED = np.array([15.0618722713733, -0.358191792925910e-01, -2.02022980381683, -1.03322686717359,
                              -0.511041056535807e-01, 1829.15146461355, -3482258.63459582])
SCALES = {
    "raw": np.ones(6),
    "one column x 1e7": np.array([1e7, 1, 1, 1, 1, 1]),
    "one column x 3e7": np.array([3e7, 1, 1, 1, 1, 1]),
    "1e-8 .. 1e8 mixed": np.array([1e8, 1e-8, 1e4, 1e-4, 1.0, 1e6]),
    "standardised": None,
}


@pytest.mark.parametrize("solver", ["direct", "cg"])
@pytest.mark.parametrize("scale", list(SCALES))
def test_longley_certified_values_at_any_scale_of_the_columns(scale, solver):
    X, y = longley()
    s = 1 / X.std(axis=0) if SCALES[scale] is None else SCALES[scale]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = uw.LinearRegression(solver=solver).fit(X * s, y)
    assert model.converged_
    got = np.r_[model.coef_ * s, model.intercept_]
    # float64 normal equations on data whose equilibrated condition number is 2e9: ~1e-9 measured
    np.testing.assert_allclose(got, LONGLEY_CERTIFIED, rtol=1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotAtOptimumWarning)  # an optimum in any units
        inf = uw.Influence(model, X * s, y, solver=solver)
    params = inf.params()
    assert inf.solve_info.converged.all()
    reference = uw.Influence(uw.LinearRegression().fit(X, y), X, y, solver="direct").params()
    # influence on the coefficients in the original units: the same whatever the scaling
    back = params * np.r_[s, 1.0]
    err = np.abs(back - reference).max(axis=0) / np.abs(reference).max(axis=0)  # normwise, per parameter
    assert err.max() < 1e-6, err


def test_a_line_fits_whatever_the_units_of_x():
    """The issue's example: the same line fitted with x in units 1e7 and 3e7 times larger."""
    x = np.linspace(0, 1, 50)
    y = 2 * x + 1 + 0.01 * RNG.standard_normal(50)
    fits = [uw.LinearRegression().fit((x * c)[:, None], y) for c in (1.0, 1e7, 3e7, 1e-8)]
    for c, m in zip((1.0, 1e7, 3e7, 1e-8), fits, strict=True):
        assert m.converged_
        np.testing.assert_allclose(m.coef_[0] * c, fits[0].coef_[0], rtol=1e-9)
        np.testing.assert_allclose(m.intercept_, fits[0].intercept_, rtol=1e-9)


@pytest.mark.parametrize("family", ["logistic", "poisson", "multinomial"])
def test_influence_does_not_depend_on_the_units_of_a_feature(family):
    cls, y = {"logistic": (uw.LogisticRegression, Y_BIN),
              "multinomial": (uw.LogisticRegression, Y_MULTI),
              "poisson": (uw.PoissonRegression, RNG.poisson(np.exp(0.3 * X0[:, 0])).astype(float))}[family]
    s = np.array([1e8, 1.0, 1e-6])
    base = cls().fit(X0, y)
    scaled = cls().fit(X0 * s, y)
    assert scaled.converged_
    a = uw.Influence(base, X0, y).on_loss(X0[:5], y[:5])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotAtOptimumWarning)
        b = uw.Influence(scaled, X0 * s, y).on_loss(X0[:5] * s, y[:5])
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-9 * np.abs(a).max())


# -- refits with no finite optimum ---------------------------------------------------------------
def test_a_leave_one_out_refit_with_no_finite_optimum_is_nan_and_named():
    """Leaving out the one point that overlaps the classes separates them: that refit has no
    finite optimum, so its row is NaN (with a warning), not the point where Newton stopped; the
    other refits and compare() are unaffected."""
    x = np.r_[np.linspace(-3, -0.2, 10), 1.5, np.linspace(0.2, 3, 10)]
    y = np.r_[np.zeros(10), 0.0, np.ones(10)]  # point 10 (x = 1.5, y = 0) is the only overlap
    X = x[:, None]
    model = uw.LogisticRegression().fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"1 refit\(s\) \(first: #10\) have no finite optimum"):
        loo = uw.leave_one_out(model, X, y, X_test=X[:3], y_test=y[:3])
    assert np.isnan(loo.theta[10]).all() and np.isnan(loo.actual_params[10]).all() and np.isnan(loo.actual_loss[10]).all()
    finite = np.delete(np.arange(21), 10)
    assert np.isfinite(loo.theta[finite]).all()
    for i in (0, 5, 20):  # each finite row is the refit without that point
        m = np.ones(21, bool)
        m[i] = False
        np.testing.assert_allclose(loo.theta[i], uw.LogisticRegression().fit(X[m], y[m]).get_theta(), rtol=1e-8)
    c = uw.compare(loo.predicted_params, loo.actual_params)
    assert c.n == 2 * 20 and np.isfinite(c.pearson)
    with pytest.warns(ConvergenceWarning, match="no finite optimum"):
        k = uw.leave_k_out(model, X, y, [10, 0], X_test=X[:2], y_test=y[:2])
    assert np.isnan(k.theta).all() and np.isnan(k.actual_loss).all()
