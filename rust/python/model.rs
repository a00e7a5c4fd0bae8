//! `_core.Model`: a model family built once from its spec, and what can be asked of a model
//! without an influence: losses, gradients, predictions, the objective and its derivatives,
//! fitting and exact refits.

use std::sync::Arc;

use numpy::ndarray::{Array1, Array2, ArrayView1};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use super::data::{names, table, NamesArg, XArg, YArg};
use super::errors::InputError;
use super::run::{run, run_with};
use crate::data::{with_block, Rows, Table};
use crate::error::{check_finite, Error};
use crate::fit::refit::{refits, thetas, Change};
use crate::{newton, Family, FitOptions, Glm, GradientModel, Method, Mlp, Model, Objective, Prediction};

/// A model family with its dimensions, built once: GLM families or per-example gradients.
#[pyclass(name = "Model", module = "upweight._core", frozen)]
pub struct PyModel {
    pub inner: Arc<dyn Model>,
    /// The GLM family, when the model is one.
    pub family: Option<Family>,
    /// The network, when the model is one.
    pub mlp: Option<Mlp>,
    pub desc: String,
}

pub fn method(name: &str) -> PyResult<Method> {
    match name {
        "direct" => Ok(Method::Direct),
        "cg" => Ok(Method::Cg),
        "arnoldi" => Ok(Method::Arnoldi),
        "kfac" => Ok(Method::Kfac), // (fitting refuses the approximations)
        "ekfac" => Ok(Method::Ekfac),
        other => Err(InputError::new_err(format!("solver: expected 'direct', 'cg', 'arnoldi', 'kfac' or 'ekfac', got {other:?}"))),
    }
}

fn prediction(kind: &str) -> PyResult<Prediction> {
    match kind {
        "linear" => Ok(Prediction::Linear),
        "mean" => Ok(Prediction::Mean),
        other => Err(InputError::new_err(format!("kind: expected 'linear' or 'mean', got {other:?}"))),
    }
}

/// (theta, n_iter, grad_norm, converged, objective).
type Fitted<'py> = (Bound<'py, PyArray1<f64>>, usize, f64, bool, f64, Option<(usize, f64)>);
type Refits<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<usize>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<bool>>, Bound<'py, PyArray1<f64>>);

impl PyModel {
    /// theta with p finite entries.
    pub fn theta<'a>(&self, theta: &'a PyReadonlyArray1<'_, f64>) -> PyResult<ArrayView1<'a, f64>> {
        let t = theta.as_array();
        let p = self.inner.n_params();
        if t.len() != p {
            return Err(Error::Shape { arg: "theta", msg: format!("has {} entries, expected {p} for {}", t.len(), self.desc) }.into());
        }
        check_finite("theta", t.iter())?;
        Ok(t)
    }

    /// Rows (x, y, w) for this model: the right width; targets (when given) in its support.
    pub fn rows(&self, x: &XArg<'_>, y: Option<&YArg<'_>>, w: Option<&PyReadonlyArray1<'_, f64>>, arg_names: &NamesArg) -> PyResult<Table> {
        let names = names(arg_names);
        let t = table(x, y.map(|y| y.view()), w.map(|w| w.as_array()), names)?;
        if t.d() != self.inner.n_features() {
            return Err(Error::Shape { arg: names.x, msg: format!("has {} columns but the model has {} features", t.d(), self.inner.n_features()) }.into());
        }
        if y.is_some() {
            self.inner.check_targets(names.y, t.y())?;
        }
        Ok(t)
    }

    /// `f` on all rows of `t` in one block, with the GIL released.
    fn on_rows<T: Send>(&self, py: Python<'_>, t: &Table, f: impl FnOnce(&crate::Batch) -> crate::Result<T> + Send) -> PyResult<T> {
        run(py, |_| with_block(t, 0..t.n(), f)?)
    }
}

#[pymethods]
impl PyModel {
    /// A GLM: family "squared", "logistic", "poisson" or "multinomial" (with n_classes >= 2).
    #[staticmethod]
    fn glm(family: &str, n_classes: usize, n_features: usize) -> PyResult<Self> {
        let f = Family::from_name(family, n_classes)?;
        crate::memory::bytes_of("the parameters (n_classes x (n_features + 1))", &[n_classes, n_features.saturating_add(1)], 8)?;
        Ok(Self { inner: Arc::new(Glm::new(f, n_features)), family: Some(f), mlp: None, desc: format!("a {family} GLM with {n_features} features") })
    }

    /// Per-example gradients of width `n_params` as the rows of the data (empirical Fisher).
    #[staticmethod]
    fn gradients(n_params: usize) -> Self {
        Self { inner: Arc::new(GradientModel { p: n_params }), family: None, mlp: None, desc: format!("gradients of {n_params} parameters") }
    }

    /// The GLM family's name ("squared", "logistic", "poisson", "multinomial"), or None.
    #[getter]
    fn family(&self) -> Option<&'static str> {
        self.family.map(|f| f.name())
    }
    #[getter]
    fn n_params(&self) -> usize {
        self.inner.n_params()
    }
    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }
    #[getter]
    fn n_outputs(&self) -> usize {
        self.inner.n_outputs()
    }
    fn __repr__(&self) -> String {
        format!("<upweight._core.Model: {}>", self.desc)
    }

    /// Per-example losses l(z_i; theta).
    #[pyo3(signature = (theta, x, y, names=None))]
    fn losses<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: YArg<'py>,
        names: NamesArg,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let (t, rows) = (self.theta(&theta)?, self.rows(&x, Some(&y), None, &names)?);
        let out = self.on_rows(py, &rows, |b| {
            let mut out = Array1::zeros(b.n());
            self.inner.losses(t, b, out.view_mut());
            Ok(out)
        })?;
        Ok(out.into_pyarray(py))
    }

    /// Per-example gradients (n x p).
    #[pyo3(signature = (theta, x, y, names=None))]
    fn per_example_grads<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: YArg<'py>,
        names: NamesArg,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (t, rows) = (self.theta(&theta)?, self.rows(&x, Some(&y), None, &names)?);
        let out = self.on_rows(py, &rows, |b| {
            let mut out = Array2::zeros((b.n(), self.inner.n_params()));
            self.inner.grads(t, b, out.view_mut());
            Ok(out)
        })?;
        Ok(out.into_pyarray(py))
    }

    /// Predictions (n x k): kind "linear" (eta) or "mean" (inverse link).
    #[pyo3(signature = (theta, x, kind, names=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        kind: &str,
        names: NamesArg,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (t, kind, rows) = (self.theta(&theta)?, prediction(kind)?, self.rows(&x, None, None, &names)?);
        Ok(self.on_rows(py, &rows, |b| self.inner.predict(t, b.x, kind))?.into_pyarray(py))
    }

    /// Gradients in theta of the predictions at the rows of X: ((n k) x p).
    #[pyo3(signature = (theta, x, kind, names=None))]
    fn prediction_grads<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        kind: &str,
        names: NamesArg,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (t, kind, rows) = (self.theta(&theta)?, prediction(kind)?, self.rows(&x, None, None, &names)?);
        Ok(self.on_rows(py, &rows, |b| self.inner.prediction_grads(t, b.x, kind))?.into_pyarray(py))
    }

    /// (L_w(theta), grad L_w(theta)).
    fn objective<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: YArg<'py>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
    ) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
        let (t, rows) = (self.theta(&theta)?, self.rows(&x, Some(&y), w.as_ref(), &None)?);
        let (v, g) = run(py, |c| Objective::new(&*self.inner, &rows, l2)?.value_grad(t, c))?;
        Ok((v, g.into_pyarray(py)))
    }

    /// Hessian of L_w (p x p), penalty included.
    fn hessian<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: YArg<'py>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (t, rows) = (self.theta(&theta)?, self.rows(&x, Some(&y), w.as_ref(), &None)?);
        Ok(run(py, |c| Objective::new(&*self.inner, &rows, l2)?.hessian(t, c))?.into_pyarray(py))
    }

    /// Hessian-vector products H V for the columns of V (p x r), matrix-free.
    #[allow(clippy::too_many_arguments)]
    fn hvp<'py>(
        &self,
        py: Python<'py>,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: YArg<'py>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
        v: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let (t, rows, v) = (self.theta(&theta)?, self.rows(&x, Some(&y), w.as_ref(), &None)?, v.as_array());
        Ok(run(py, |c| Objective::new(&*self.inner, &rows, l2)?.hvp(t, v, c))?.into_pyarray(py))
    }

    /// Fit theta by weighted Newton. Returns (theta, n_iter, grad_norm, converged, objective,
    /// moved): with `report_move`, (row, amount) of the largest move of a linear predictor by the
    /// last step (None without a step).
    #[pyo3(signature = (x, y, w, l2, tol, max_iter, theta0=None, progress=None, method="direct", report_move=false))]
    #[allow(clippy::too_many_arguments)]
    fn fit<'py>(
        &self,
        py: Python<'py>,
        x: XArg<'py>,
        y: YArg<'py>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
        tol: f64,
        max_iter: usize,
        theta0: Option<PyReadonlyArray1<'py, f64>>,
        progress: Option<Py<PyAny>>,
        method: &str,
        report_move: bool,
    ) -> PyResult<Fitted<'py>> {
        let (method, rows) = (self::method(method)?, self.rows(&x, Some(&y), w.as_ref(), &None)?);
        let t0 = theta0.as_ref().map(|t| t.as_array());
        let res =
            run_with(py, progress.as_ref(), |c| newton(&Objective::new(&*self.inner, &rows, l2)?, t0, &FitOptions { tol, max_iter, method, report_move }, c))?;
        Ok((res.theta.into_pyarray(py), res.n_iter, res.grad_norm, res.converged, res.objective, res.moved))
    }

    /// Exact refits, in parallel, each from `theta0` with the weights of `points[j]` set to
    /// `weights[j]` (and l2 to `l2s[j]` when given). Returns (thetas (m x p), n_iter, grad_norm,
    /// converged, moved), one entry per refit; `moved`: with `report_move`, how far each refit's
    /// last step moved a linear predictor (0 without a step or without `report_move`).
    #[pyo3(signature = (theta0, x, y, w, l2, tol, max_iter, points, weights, method="direct", progress=None, l2s=None, report_move=false))]
    #[allow(clippy::too_many_arguments)]
    fn refit<'py>(
        &self,
        py: Python<'py>,
        theta0: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: YArg<'py>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
        tol: f64,
        max_iter: usize,
        points: Vec<Vec<usize>>,
        weights: Vec<Vec<f64>>,
        method: &str,
        progress: Option<Py<PyAny>>,
        l2s: Option<Vec<f64>>,
        report_move: bool,
    ) -> PyResult<Refits<'py>> {
        let (t, rows) = (self.theta(&theta0)?, self.rows(&x, Some(&y), w.as_ref(), &None)?);
        if points.len() != weights.len() {
            return Err(InputError::new_err(format!("weights: {} weight lists for {} point lists", weights.len(), points.len())));
        }
        let method = self::method(method)?;
        if l2s.as_ref().is_some_and(|l| l.len() != points.len()) {
            return Err(InputError::new_err("l2s: needs one l2 per refit"));
        }
        let l2s = l2s.map(|l| l.into_iter().map(Some).collect()).unwrap_or_else(|| vec![None; points.len()]);
        let changes: Vec<Change> = points.into_iter().zip(weights).zip(l2s).map(|((points, weights), l2)| Change { points, weights, l2 }).collect();
        let fits = run_with(py, progress.as_ref(), |c| refits(&*self.inner, &rows, l2, t, &changes, &FitOptions { tol, max_iter, method, report_move }, c))?;
        Ok((
            thetas(&fits).into_pyarray(py),
            Array1::from_iter(fits.iter().map(|f| f.n_iter)).into_pyarray(py),
            Array1::from_iter(fits.iter().map(|f| f.grad_norm)).into_pyarray(py),
            Array1::from_iter(fits.iter().map(|f| f.converged)).into_pyarray(py),
            Array1::from_iter(fits.iter().map(|f| f.moved.map_or(0.0, |m| m.1))).into_pyarray(py),
        ))
    }
}
