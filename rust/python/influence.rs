//! `_core.Influence`: the core's [`Influence`], built once on a model, theta and training set it
//! owns (the caller's arrays, kept alive without a copy), then queried.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use super::convert::{info_py, state_in, state_py, top_k_py, Info, StateArg, StateArrays, TopKArrays};
use super::data::{names, table, NamesArg, XArg, YArg};
use super::model::{method, PyModel};
use super::run::run_with;
use crate::influence::InfluenceOptions;
use crate::solvers::{ArnoldiOptions, CgOptions, LowRankInverse, Precondition};
use crate::{Cancel, Influence, LeaveOutTarget, Points, Rows, Scores, SolverOptions};

/// Training rows `segment` = (start, end) or all of them.
fn segment(segment: Option<(usize, usize)>) -> Points<'static> {
    segment.map_or(Points::Train, |(a, b)| Points::Range(a, b))
}

/// Influence of a fitted model's training points: the core's `Influence`, which holds the
/// training set and the prepared solver.
#[pyclass(name = "Influence", module = "upweight._core", frozen)]
pub struct PyInfluence {
    pub(super) inner: Influence,
    progress: Option<Py<PyAny>>,
}

impl PyInfluence {
    pub(super) fn run<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Cancel) -> crate::Result<T> + Send) -> PyResult<T> {
        run_with(py, self.progress.as_ref(), f)
    }
}

#[pymethods]
impl PyInfluence {
    /// Prepare the solver at `theta` for `model` on the training rows (x, y, w) with penalty
    /// `l2`. `y = None` for a model without targets (per-example gradients); `hessian`, when
    /// given, replaces the objective's Hessian; `names` are the caller's names for x and y.
    /// "arnoldi": the top `rank` eigenpairs (`steps` Lanczos steps), `arnoldi_inverse`; `residuals`: see SolverOptions.
    #[new]
    #[pyo3(signature = (model, theta, x, y, w, l2, method="direct", damping=0.0, rtol=1e-10, atol=0.0, max_iter=1000, precondition="auto", progress=None, renormalize=true, hessian=None, names=None, rank=0, steps=None, arnoldi_inverse="projection", residuals=true, state=None))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        py: Python<'py>,
        model: &PyModel,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: Option<YArg<'py>>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
        method: &str,
        damping: f64,
        rtol: f64,
        atol: f64,
        max_iter: usize,
        precondition: &str,
        progress: Option<Py<PyAny>>,
        renormalize: bool,
        hessian: Option<PyReadonlyArray2<'py, f64>>,
        names: NamesArg,
        rank: usize,
        steps: Option<usize>,
        arnoldi_inverse: &str,
        residuals: bool,
        state: StateArg<'py>,
    ) -> PyResult<Self> {
        let theta = model.theta(&theta)?.to_owned();
        let solver = SolverOptions {
            method: self::method(method)?,
            damping,
            cg: CgOptions { rtol, atol, max_iter, precondition: Precondition::from_name(precondition)? },
            arnoldi: ArnoldiOptions { rank, steps, inverse: LowRankInverse::from_name(arnoldi_inverse)? },
            residuals,
            state: state_in(state).map(std::sync::Arc::new),
        };
        solver.check()?;
        let data = table(&x, y.as_ref().map(|y| y.view()), w.as_ref().map(|w| w.as_array()), self::names(&names))?;
        let hessian = hessian.map(|h| h.as_array().to_owned());
        let opts = InfluenceOptions { solver, renormalize };
        let m = model.inner.clone();
        let inner = run_with(py, progress.as_ref(), |c| Influence::new(m, data, theta, l2, opts, hessian, c))?;
        Ok(Self { inner, progress })
    }

    /// max |grad L_w| at theta.
    #[getter]
    fn grad_norm(&self) -> f64 {
        self.inner.grad_norm()
    }
    /// L_w(theta).
    #[getter]
    fn objective(&self) -> f64 {
        self.inner.objective_value()
    }
    /// g^T (H + damping I)^{-1} g at theta (one solve): scale-invariant optimality.
    fn newton_decrement(&self, py: Python<'_>) -> PyResult<f64> {
        self.run(py, |c| self.inner.newton_decrement(c))
    }
    /// W, the total training weight.
    #[getter]
    fn total_weight(&self) -> f64 {
        self.inner.total_weight()
    }
    /// Whether CG applies its preconditioner (None for other solvers; "auto" measures it once).
    #[getter]
    fn preconditioned(&self) -> Option<bool> {
        self.inner.preconditioned()
    }
    /// Arnoldi's (eigenvalues descending, ||H u - sigma u|| of each, steps, restarts), else None.
    #[getter]
    #[allow(clippy::type_complexity)]
    fn ritz<'py>(&self, py: Python<'py>) -> Option<(Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>, usize, usize)> {
        self.inner.ritz().map(|r| (r.values.clone().into_pyarray(py), r.residuals.clone().into_pyarray(py), r.steps, r.restarts))
    }
    /// The approximate solver's prepared curvature as named arrays (None for exact solvers).
    fn curvature_state<'py>(&self, py: Python<'py>) -> Option<StateArrays<'py>> {
        self.inner.curvature_state().map(|st| state_py(py, st))
    }
    /// Number of training points.
    #[getter]
    fn n_samples(&self) -> usize {
        self.inner.data().n()
    }

    /// I(z) of the training points (n x p), or of the training rows `rows` (len(rows) x p).
    #[pyo3(signature = (rows=None))]
    fn params<'py>(&self, py: Python<'py>, rows: Option<Vec<usize>>) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let points = rows.as_deref().map_or(Points::Train, Points::Rows);
        let (out, info) = self.run(py, |c| self.inner.params(points, c))?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }

    /// I(z) of points not in the training set, rows of (x, y): (m x p).
    #[pyo3(signature = (x, y, names=None))]
    fn params_of<'py>(&self, py: Python<'py>, x: XArg<'py>, y: YArg<'py>, names: NamesArg) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let pts = table(&x, Some(y.view()), None, self::names(&names))?;
        let (out, info) = self.run(py, |c| self.inner.params(Points::Other(&pts), c))?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }

    /// Self-influence of every training point (n,), or of the rows `segment` = (start, end).
    #[pyo3(signature = (segment=None))]
    fn self_influence<'py>(&self, py: Python<'py>, segment: Option<(usize, usize)>) -> PyResult<(Bound<'py, PyArray1<f64>>, Info<'py>)> {
        let (out, info) = self.run(py, |c| self.inner.self_influence(self::segment(segment), c))?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }

    /// Per-example loss gradients of test points (q x p).
    #[pyo3(signature = (x_test, y_test, names=None))]
    fn loss_grads<'py>(&self, py: Python<'py>, x_test: XArg<'py>, y_test: YArg<'py>, names: NamesArg) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let names = names.or_else(|| Some(("X_test".into(), "y_test".into())));
        let test = table(&x_test, Some(y_test.view()), None, self::names(&names))?;
        Ok(self.run(py, |_| self.inner.loss_grads(&test))?.into_pyarray(py))
    }

    /// S (r x n): influence of each training point on each f_j given grad_f (r x p); with
    /// `rows`, only those training points (r x len(rows)). float32 when the training features
    /// are float32 (computed in float32), else float64.
    #[pyo3(signature = (grad_f, rows=None))]
    fn on<'py>(&self, py: Python<'py>, grad_f: PyReadonlyArray2<'py, f64>, rows: Option<Vec<usize>>) -> PyResult<(Bound<'py, PyAny>, Info<'py>)> {
        let g = grad_f.as_array();
        let points = rows.as_deref().map_or(Points::Train, Points::Rows);
        let (out, info) = self.run(py, |c| self.inner.on(g, points, c))?;
        let out = match out {
            Scores::F64(a) => a.into_pyarray(py).into_any(),
            Scores::F32(a) => a.into_pyarray(py).into_any(),
        };
        Ok((out, info_py(py, info)))
    }

    /// The k most helpful and most harmful training points per f_j, streamed:
    /// (helpful_idx, helpful, harmful_idx, harmful), each (r x k).
    fn top_k<'py>(&self, py: Python<'py>, grad_f: PyReadonlyArray2<'py, f64>, k: usize) -> PyResult<(TopKArrays<'py>, Info<'py>)> {
        let g = grad_f.as_array();
        let (top, info) = self.run(py, |c| self.inner.top_k(g, k, Points::Train, c))?;
        Ok((top_k_py(py, top), info_py(py, info)))
    }

    /// [V; c] ((p + 1) x r) for query gradients (r x p), to score segments without solving again.
    fn solve_queries<'py>(&self, py: Python<'py>, grad_f: PyReadonlyArray2<'py, f64>) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let g = grad_f.as_array();
        let (vc, info) = self.run(py, |c| self.inner.solve_queries(g, c))?;
        Ok((vc.into_pyarray(py), info_py(py, info)))
    }

    /// `top_k` from solved queries `vc` over the training rows `segment` = (start, end) (or all);
    /// indices are training indices.
    #[pyo3(signature = (vc, k, segment=None))]
    fn top_k_solved<'py>(&self, py: Python<'py>, vc: PyReadonlyArray2<'py, f64>, k: usize, segment: Option<(usize, usize)>) -> PyResult<TopKArrays<'py>> {
        let vc = vc.as_array().to_owned();
        let top = self.run(py, |c| self.inner.top_k_solved(&vc, k, self::segment(segment), c))?;
        Ok(top_k_py(py, top))
    }

    /// `on` from solved queries `vc` (from `solve_queries`), for the training points `rows`
    /// (or all), without solving again.
    #[pyo3(signature = (vc, rows=None))]
    fn scores_solved<'py>(&self, py: Python<'py>, vc: PyReadonlyArray2<'py, f64>, rows: Option<Vec<usize>>) -> PyResult<Bound<'py, PyAny>> {
        let vc = vc.as_array().to_owned();
        let points = rows.as_deref().map_or(Points::Train, Points::Rows);
        Ok(match self.run(py, |c| self.inner.scores_solved(&vc, points, c))? {
            Scores::F64(a) => a.into_pyarray(py).into_any(),
            Scores::F32(a) => a.into_pyarray(py).into_any(),
        })
    }

    /// Hat values of the training rows (models with one output).
    fn leverage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        Ok(self.run(py, |c| self.inner.leverage(c))?.into_pyarray(py))
    }

    /// theta_(-m) - theta* by one Newton step, for every training point or the rows `rows`.
    #[pyo3(signature = (rows=None))]
    fn loo_params<'py>(&self, py: Python<'py>, rows: Option<Vec<usize>>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let points = rows.as_deref().map_or(Points::Train, Points::Rows);
        Ok(self.run(py, |c| self.inner.loo_params(points, c))?.into_pyarray(py))
    }

    /// Each training point's loss at its own leave-one-out parameters and at theta* (n x 2), or of `rows`.
    #[pyo3(signature = (rows=None))]
    fn loo_self_losses<'py>(&self, py: Python<'py>, rows: Option<Vec<usize>>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let points = rows.as_deref().map_or(Points::Train, Points::Rows);
        Ok(self.run(py, |c| self.inner.loo_self_losses(points, c))?.into_pyarray(py))
    }

    /// Change of each test point's loss ("loss", q x n) or outputs ("linear" / "mean", (q k) x n)
    /// when each training point (or the rows `rows`) is left out. `y_test` only for "loss".
    #[pyo3(signature = (x_test, y_test, target, rows=None, names=None))]
    fn loo_on<'py>(
        &self,
        py: Python<'py>,
        x_test: XArg<'py>,
        y_test: Option<YArg<'py>>,
        target: &str,
        rows: Option<Vec<usize>>,
        names: NamesArg,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let target = match target {
            "loss" => LeaveOutTarget::Loss,
            "linear" => LeaveOutTarget::Linear,
            "mean" => LeaveOutTarget::Mean,
            other => return Err(crate::Error::Value { arg: "kind", msg: format!("expected 'mean' or 'linear', got {other:?}") }.into()),
        };
        let names = names.or_else(|| Some(("X_test".into(), "y_test".into())));
        let test = table(&x_test, y_test.as_ref().map(|y| y.view()), None, self::names(&names))?;
        let points = rows.as_deref().map_or(Points::Train, Points::Rows);
        Ok(self.run(py, |c| self.inner.loo_on(&test, target, points, c))?.into_pyarray(py))
    }

    /// Per test point, the k training points whose removal most raises (helpful) and most
    /// lowers (harmful) its loss, streamed over the training rows (or `segment`).
    #[pyo3(signature = (x_test, y_test, k, segment=None, names=None))]
    fn loo_top_k<'py>(
        &self,
        py: Python<'py>,
        x_test: XArg<'py>,
        y_test: YArg<'py>,
        k: usize,
        segment: Option<(usize, usize)>,
        names: NamesArg,
    ) -> PyResult<TopKArrays<'py>> {
        let names = names.or_else(|| Some(("X_test".into(), "y_test".into())));
        let test = table(&x_test, Some(y_test.view()), None, self::names(&names))?;
        let top = self.run(py, |c| self.inner.loo_top_k(&test, k, self::segment(segment), c))?;
        Ok(top_k_py(py, top))
    }

    /// Leave each group of training rows out together: (n_groups x p) parameter changes and,
    /// with test points, the change of each test loss (q x n_groups).
    #[pyo3(signature = (groups, x_test=None, y_test=None, names=None))]
    #[allow(clippy::type_complexity)]
    fn leave_out<'py>(
        &self,
        py: Python<'py>,
        groups: Vec<Vec<usize>>,
        x_test: Option<XArg<'py>>,
        y_test: Option<YArg<'py>>,
        names: NamesArg,
    ) -> PyResult<(Bound<'py, PyArray2<f64>>, Option<Bound<'py, PyArray2<f64>>>)> {
        let names = names.or_else(|| Some(("X_test".into(), "y_test".into())));
        let test = match (&x_test, &y_test) {
            (Some(x), Some(y)) => Some(table(x, Some(y.view()), None, self::names(&names))?),
            _ => None,
        };
        let (params, losses) = self.run(py, |c| self.inner.leave_out(&groups, test.as_ref(), c))?;
        Ok((params.into_pyarray(py), losses.map(|l| l.into_pyarray(py))))
    }

    /// H^{-1} g for the columns of g (p x r).
    fn inverse_hvp<'py>(&self, py: Python<'py>, g: PyReadonlyArray2<'py, f64>) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let g = g.as_array();
        let (out, info) = self.run(py, |c| self.inner.inverse_hvp(g, c))?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }
}
