//! The Python module `upweight._core`: converts arrays and errors, releases the GIL, keeps
//! Ctrl-C working. No numerics live here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use numpy::ndarray::{Array1, Array2, ArrayView1};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::{newton, Cancel, Dataset, Error, Family, FitOptions, Glm, Influence, Model, Objective, Prediction};

pyo3::import_exception!(upweight.errors, InputError);
pyo3::import_exception!(upweight.errors, SingularHessianError);
pyo3::import_exception!(upweight.errors, InternalError);

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
        Error::Singular { .. } => SingularHessianError::new_err(e.to_string()),
        _ => InputError::new_err(e.to_string()),
    }
}

/// Run `f` with the GIL released on a worker thread while this thread polls for Ctrl-C.
/// On a signal the work is cancelled at its next block boundary and the signal's exception
/// (KeyboardInterrupt) is raised. A panic in the core becomes `InternalError`, never a crash.
fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Cancel) -> crate::Result<T> + Send,
{
    let cancel = Cancel::new();
    std::thread::scope(|scope| {
        let (tx, mut rx) = mpsc::channel();
        let c = &cancel;
        scope.spawn(move || {
            let out = catch_unwind(AssertUnwindSafe(|| f(c)));
            let _ = tx.send(out);
        });
        loop {
            let (back, got) = py.detach(move || {
                let got = rx.recv_timeout(Duration::from_millis(50));
                (rx, got)
            });
            rx = back;
            match got {
                Ok(Ok(res)) => return res.map_err(to_py),
                Ok(Err(panic)) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    return Err(InternalError::new_err(format!("upweight internal error (please report): {msg}")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        cancel.cancel();
                        let _ = py.detach(move || rx.recv());
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(InternalError::new_err("upweight internal error: worker thread vanished"))
                }
            }
        }
    })
}

fn glm(family: &str, n_classes: usize, d: usize) -> PyResult<Glm> {
    Ok(Glm::new(Family::from_name(family, n_classes).map_err(to_py)?, d))
}

fn dataset<'a>(
    x: &'a PyReadonlyArray2<'_, f64>,
    y: &'a PyReadonlyArray1<'_, f64>,
    w: Option<&'a PyReadonlyArray1<'_, f64>>,
    names: [&'static str; 2],
) -> PyResult<Dataset<'a>> {
    Dataset::new(x.as_array(), y.as_array(), w.map(|w| w.as_array()), names).map_err(to_py)
}

fn theta_checked<'a>(model: &Glm, theta: &'a PyReadonlyArray1<'_, f64>) -> PyResult<ArrayView1<'a, f64>> {
    let t = theta.as_array();
    model.check_theta(t).map_err(to_py)?;
    Ok(t)
}

fn prediction(kind: &str) -> PyResult<Prediction> {
    match kind {
        "linear" => Ok(Prediction::Linear),
        "mean" => Ok(Prediction::Mean),
        other => Err(InputError::new_err(format!("kind: expected 'linear' or 'mean', got {other:?}"))),
    }
}

/// Fit theta by weighted Newton. Returns (theta, n_iter, grad_norm, converged, objective).
#[pyfunction]
#[pyo3(signature = (family, n_classes, x, y, w, l2, tol, max_iter, theta0=None))]
#[allow(clippy::too_many_arguments)]
fn fit<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    tol: f64,
    max_iter: usize,
    theta0: Option<PyReadonlyArray1<'py, f64>>,
) -> PyResult<(Bound<'py, PyArray1<f64>>, usize, f64, bool, f64)> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let data = dataset(&x, &y, w.as_ref(), ["X", "y"])?;
    let t0 = theta0.as_ref().map(|t| t.as_array());
    let res = run(py, |c| {
        let obj = Objective::new(&model, data, l2)?;
        newton(&obj, t0, &FitOptions { tol, max_iter }, c)
    })?;
    Ok((res.theta.into_pyarray(py), res.n_iter, res.grad_norm, res.converged, res.objective))
}

/// Per-example losses l(z_i; theta).
#[pyfunction]
fn losses<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let t = theta_checked(&model, &theta)?;
    let data = dataset(&x, &y, None, ["X", "y"])?;
    let out = run(py, |_| {
        model.check_targets("y", data.y)?;
        let mut out = Array1::zeros(data.n());
        model.losses(t, &data, out.view_mut());
        Ok(out)
    })?;
    Ok(out.into_pyarray(py))
}

/// Per-example gradients (n x p).
#[pyfunction]
fn per_example_grads<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let t = theta_checked(&model, &theta)?;
    let data = dataset(&x, &y, None, ["X", "y"])?;
    let out = run(py, |_| {
        model.check_targets("y", data.y)?;
        let mut out = Array2::zeros((data.n(), model.n_params()));
        model.grads(t, &data, out.view_mut());
        Ok(out)
    })?;
    Ok(out.into_pyarray(py))
}

/// (L_w(theta), grad L_w(theta)).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn objective<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let t = theta_checked(&model, &theta)?;
    let data = dataset(&x, &y, w.as_ref(), ["X", "y"])?;
    let (v, g) = run(py, |c| Objective::new(&model, data, l2)?.value_grad(t, c))?;
    Ok((v, g.into_pyarray(py)))
}

/// Hessian of L_w (p x p), penalty included.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn hessian<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let t = theta_checked(&model, &theta)?;
    let data = dataset(&x, &y, w.as_ref(), ["X", "y"])?;
    let h = run(py, |c| Objective::new(&model, data, l2)?.hessian(t, c))?;
    Ok(h.into_pyarray(py))
}

/// Hessian-vector products H V for the columns of V (p x r), matrix-free.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn hvp<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    v: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let t = theta_checked(&model, &theta)?;
    let data = dataset(&x, &y, w.as_ref(), ["X", "y"])?;
    let v = v.as_array();
    let out = run(py, |c| Objective::new(&model, data, l2)?.hvp(t, v, c))?;
    Ok(out.into_pyarray(py))
}

/// Predictions (n x k): kind "linear" (eta) or "mean" (inverse link).
#[pyfunction]
fn predict<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
    kind: &str,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let t = theta_checked(&model, &theta)?;
    let kind = prediction(kind)?;
    let x = x.as_array();
    let out = run(py, |_| {
        crate::error::check_finite("X", x.iter())?;
        Ok(match kind {
            Prediction::Linear => model.eta(t, x),
            Prediction::Mean => model.predict_mean(t, x),
        })
    })?;
    Ok(out.into_pyarray(py))
}

/// Gradients in theta of the predictions at the rows of X: ((n k) x p).
#[pyfunction]
fn prediction_grads<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
    kind: &str,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let model = glm(family, n_classes, x.as_array().ncols())?;
    let t = theta_checked(&model, &theta)?;
    let kind = prediction(kind)?;
    let x = x.as_array();
    let out = run(py, |_| {
        crate::error::check_finite("X", x.iter())?;
        Ok(model.prediction_grads(t, x, kind))
    })?;
    Ok(out.into_pyarray(py))
}

/// The factored Hessian of a fitted GLM, answering influence queries about its training set.
#[pyclass(module = "upweight._core", frozen)]
struct InfluenceCore {
    model: Glm,
    inner: Influence,
}

#[pymethods]
impl InfluenceCore {
    #[new]
    #[pyo3(signature = (family, n_classes, theta, x, y, w, l2))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        py: Python<'py>,
        family: &str,
        n_classes: usize,
        theta: PyReadonlyArray1<'py, f64>,
        x: PyReadonlyArray2<'py, f64>,
        y: PyReadonlyArray1<'py, f64>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
    ) -> PyResult<Self> {
        let model = glm(family, n_classes, x.as_array().ncols())?;
        let t = theta_checked(&model, &theta)?;
        let data = dataset(&x, &y, w.as_ref(), ["X", "y"])?;
        let inner = run(py, |c| Influence::new(&Objective::new(&model, data, l2)?, t, c))?;
        Ok(Self { model, inner })
    }

    /// max |grad L_w| at theta.
    #[getter]
    fn grad_norm(&self) -> f64 {
        self.inner.grad_norm()
    }

    /// W, the total training weight.
    #[getter]
    fn total_weight(&self) -> f64 {
        self.inner.total_weight()
    }

    /// I(z) for each row of (X, y): (n x p).
    fn params<'py>(&self, py: Python<'py>, x: PyReadonlyArray2<'py, f64>, y: PyReadonlyArray1<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let pts = dataset(&x, &y, None, ["X", "y"])?;
        let out = run(py, |c| self.inner.params(&self.model, &pts, c))?;
        Ok(out.into_pyarray(py))
    }

    /// Self-influence of each row of (X, y): (n,).
    fn self_influence<'py>(&self, py: Python<'py>, x: PyReadonlyArray2<'py, f64>, y: PyReadonlyArray1<'py, f64>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let pts = dataset(&x, &y, None, ["X", "y"])?;
        let out = run(py, |c| self.inner.self_influence(&self.model, &pts, c))?;
        Ok(out.into_pyarray(py))
    }

    /// S (r x n): influence of each training row on each f_j given grad_f (r x p).
    fn on<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
        y: PyReadonlyArray1<'py, f64>,
        grad_f: PyReadonlyArray2<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let train = dataset(&x, &y, None, ["X", "y"])?;
        let g = grad_f.as_array();
        let out = run(py, |c| self.inner.on(&self.model, &train, g, c))?;
        Ok(out.into_pyarray(py))
    }

    /// Score matrix S (q x n) of training rows on test losses.
    fn on_loss<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f64>,
        y: PyReadonlyArray1<'py, f64>,
        x_test: PyReadonlyArray2<'py, f64>,
        y_test: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let train = dataset(&x, &y, None, ["X", "y"])?;
        let test = dataset(&x_test, &y_test, None, ["X_test", "y_test"])?;
        let out = run(py, |c| self.inner.on_loss(&self.model, &train, &test, c))?;
        Ok(out.into_pyarray(py))
    }

    /// H^{-1} g for the columns of g (p x r).
    fn inverse_hvp<'py>(&self, py: Python<'py>, g: PyReadonlyArray2<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let g = g.as_array();
        let out = run(py, |_| self.inner.inverse_hvp(g))?;
        Ok(out.into_pyarray(py))
    }
}

/// Number of threads the core's parallel loops use.
#[pyfunction]
fn num_threads() -> usize {
    rayon::current_num_threads()
}

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::{fit, hessian, hvp, losses, num_threads, objective, per_example_grads, predict, prediction_grads, InfluenceCore};
}

