//! The Python module `upweight._core`: converts arrays and errors, releases the GIL, keeps
//! Ctrl-C working. No numerics live here.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use numpy::ndarray::{Array1, Array2, ArrayView1};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::influence::{Method, Scores, SolverOptions};
use crate::matrix::Csr;
use crate::refit::{refits, thetas, Change};
use crate::solvers::{CgOptions, SolveInfo};
use crate::source::{with_block, Rows, Segment};
use crate::{newton, Cancel, Dataset, Error, Family, Features, FitOptions, Glm, GradientModel, Influence, Model, NpyFile, Objective, Prediction, Table};

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
    run_with(py, None, f)
}

/// [`run`], calling `progress(pass, rows_done, rows_total)` from this thread whenever the
/// work has advanced (at most every 50 ms). An exception in the callback cancels the work.
fn run_with<T, F>(py: Python<'_>, progress: Option<&Py<PyAny>>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Cancel) -> crate::Result<T> + Send,
{
    let cancel = Cancel::new();
    let mut last = None;
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
                    let msg = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                    return Err(InternalError::new_err(format!("upweight internal error (please report): {msg}")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let mut outcome = py.check_signals();
                    if let (Ok(()), Some(cb)) = (&outcome, progress) {
                        let now = cancel.progress();
                        if last != Some(now) && now.pass > 0 {
                            last = Some(now);
                            outcome = cb.call1(py, (now.pass, now.done, now.total)).map(|_| ());
                        }
                    }
                    if let Err(e) = outcome {
                        cancel.cancel();
                        let _ = py.detach(move || rx.recv());
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(InternalError::new_err("upweight internal error: worker thread vanished")),
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

/// The model, checked theta and training set shared by the per-call kernels.
fn glm_call<'a>(
    family: &str,
    n_classes: usize,
    theta: &'a PyReadonlyArray1<'_, f64>,
    x: &'a XArg<'_>,
    y: &'a PyReadonlyArray1<'_, f64>,
    w: Option<&'a PyReadonlyArray1<'_, f64>>,
) -> PyResult<(Glm, ArrayView1<'a, f64>, Table<'a>)> {
    let model = glm(family, n_classes, x.ncols()?)?;
    let t = theta_checked(&model, theta)?;
    let table = Table::new(x.features()?, y.as_array(), w.map(|w| w.as_array())).map_err(to_py)?;
    Ok((model, t, table))
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

/// Features as the Python layer passes them: float64 or float32 arrays, a `.npy` path, or a
/// CSR matrix as (data, indices, indptr, n_columns).
#[derive(FromPyObject)]
enum XArg<'py> {
    F64(PyReadonlyArray2<'py, f64>),
    F32(PyReadonlyArray2<'py, f32>),
    Path(PathBuf),
    Csr(CsrArg<'py>),
}

#[derive(FromPyObject)]
struct CsrArg<'py>(PyReadonlyArray1<'py, f64>, PyReadonlyArray1<'py, i32>, PyReadonlyArray1<'py, i64>, usize);

/// A CSR matrix from its arrays, validated (every call: the arrays are the caller's).
fn csr<'a>(
    data: &'a PyReadonlyArray1<'_, f64>,
    indices: &'a PyReadonlyArray1<'_, i32>,
    indptr: &'a PyReadonlyArray1<'_, i64>,
    ncols: usize,
) -> PyResult<Csr<'a>> {
    let data = data.as_slice().map_err(|_| InputError::new_err("X: sparse arrays must be contiguous"))?;
    let indices = indices.as_slice().map_err(|_| InputError::new_err("X: sparse arrays must be contiguous"))?;
    let indptr = indptr.as_slice().map_err(|_| InputError::new_err("X: sparse arrays must be contiguous"))?;
    Csr::new(indptr, indices, data, ncols).map_err(to_py)
}

fn solver_options(method: &str, damping: f64, rtol: f64, atol: f64, max_iter: usize, precondition: bool) -> PyResult<SolverOptions> {
    let method = match method {
        "direct" => Method::Direct,
        "cg" => Method::Cg,
        other => return Err(InputError::new_err(format!("solver: expected 'direct' or 'cg', got {other:?}"))),
    };
    for (name, v) in [("rtol", rtol), ("atol", atol)] {
        if !(v >= 0.0) || !v.is_finite() {
            return Err(InputError::new_err(format!("{name}: must be a finite number >= 0, got {v}")));
        }
    }
    Ok(SolverOptions { method, damping, cg: CgOptions { rtol, atol, max_iter, precondition }, renormalize: true })
}

impl XArg<'_> {
    fn store(&self, py: Python<'_>) -> XStore {
        match self {
            XArg::F64(a) => XStore::F64(a.as_unbound().clone_ref(py)),
            XArg::F32(a) => XStore::F32(a.as_unbound().clone_ref(py)),
            XArg::Path(p) => XStore::Npy(p.clone()),
            XArg::Csr(CsrArg(data, indices, indptr, ncols)) => {
                XStore::Csr(data.as_unbound().clone_ref(py), indices.as_unbound().clone_ref(py), indptr.as_unbound().clone_ref(py), *ncols)
            }
        }
    }

    fn ncols(&self) -> PyResult<usize> {
        Ok(match self {
            XArg::F64(a) => a.as_array().ncols(),
            XArg::F32(a) => a.as_array().ncols(),
            XArg::Path(p) => NpyFile::open(p, "X").map_err(to_py)?.d,
            XArg::Csr(c) => c.3,
        })
    }
    fn features(&self) -> PyResult<Features<'_>> {
        Ok(match self {
            XArg::F64(a) => Features::F64(a.as_array()),
            XArg::F32(a) => Features::F32(a.as_array()),
            XArg::Path(p) => Features::Npy(NpyFile::open(p, "X").map_err(to_py)?),
            XArg::Csr(CsrArg(data, indices, indptr, ncols)) => Features::Csr(csr(data, indices, indptr, *ncols)?),
        })
    }
}

/// Fit theta by weighted Newton. Returns (theta, n_iter, grad_norm, converged, objective).
#[pyfunction]
#[pyo3(signature = (family, n_classes, x, y, w, l2, tol, max_iter, theta0=None, progress=None, method="direct"))]
#[allow(clippy::too_many_arguments)]
fn fit<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    x: XArg<'py>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    tol: f64,
    max_iter: usize,
    theta0: Option<PyReadonlyArray1<'py, f64>>,
    progress: Option<Py<PyAny>>,
    method: &str,
) -> PyResult<(Bound<'py, PyArray1<f64>>, usize, f64, bool, f64)> {
    let model = glm(family, n_classes, x.ncols()?)?;
    let method = solver_options(method, 0.0, 0.0, 0.0, 0, false)?.method;
    let table = Table::new(x.features()?, y.as_array(), w.as_ref().map(|w| w.as_array())).map_err(to_py)?;
    let t0 = theta0.as_ref().map(|t| t.as_array());
    let res = run_with(py, progress.as_ref(), |c| {
        let obj = Objective::new(&model, &table, l2)?;
        newton(&obj, t0, &FitOptions { tol, max_iter, method }, c)
    })?;
    Ok((res.theta.into_pyarray(py), res.n_iter, res.grad_norm, res.converged, res.objective))
}

/// Exact refits, in parallel, each from `theta0` with the weights of `points[j]` set to
/// `weights[j]`. Returns (thetas (m x p), n_iter, grad_norm, converged), one entry per refit.
#[pyfunction]
#[pyo3(signature = (family, n_classes, theta0, x, y, w, l2, tol, max_iter, points, weights, method="direct", progress=None, l2s=None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn refit<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta0: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    tol: f64,
    max_iter: usize,
    points: Vec<Vec<usize>>,
    weights: Vec<Vec<f64>>,
    method: &str,
    progress: Option<Py<PyAny>>,
    l2s: Option<Vec<f64>>,
) -> PyResult<(Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<usize>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<bool>>)> {
    let (model, t, table) = glm_call(family, n_classes, &theta0, &x, &y, w.as_ref())?;
    if points.len() != weights.len() {
        return Err(InputError::new_err(format!("weights: {} weight lists for {} point lists", weights.len(), points.len())));
    }
    let method = solver_options(method, 0.0, 0.0, 0.0, 0, false)?.method;
    if l2s.as_ref().is_some_and(|l| l.len() != points.len()) {
        return Err(InputError::new_err("l2s: needs one l2 per refit"));
    }
    let changes: Vec<Change> =
        points.into_iter().zip(weights).enumerate().map(|(j, (points, weights))| Change { points, weights, l2: l2s.as_ref().map(|l| l[j]) }).collect();
    let fits = run_with(py, progress.as_ref(), |c| refits(&model, &table, l2, t, &changes, &FitOptions { tol, max_iter, method }, c))?;
    Ok((
        thetas(&fits).into_pyarray(py),
        Array1::from_iter(fits.iter().map(|f| f.n_iter)).into_pyarray(py),
        Array1::from_iter(fits.iter().map(|f| f.grad_norm)).into_pyarray(py),
        Array1::from_iter(fits.iter().map(|f| f.converged)).into_pyarray(py),
    ))
}

/// Per-example losses l(z_i; theta).
#[pyfunction]
fn losses<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (model, t, table) = glm_call(family, n_classes, &theta, &x, &y, None)?;
    let out = run(py, |_| {
        model.check_targets("y", table.y())?;
        let mut out = Array1::zeros(table.n());
        with_block(&table, 0..table.n(), |data| model.losses(t, data, out.view_mut()))?;
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
    x: XArg<'py>,
    y: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (model, t, table) = glm_call(family, n_classes, &theta, &x, &y, None)?;
    let out = run(py, |_| {
        model.check_targets("y", table.y())?;
        let mut out = Array2::zeros((table.n(), model.n_params()));
        with_block(&table, 0..table.n(), |data| model.grads(t, data, out.view_mut()))?;
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
    x: XArg<'py>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let (model, t, table) = glm_call(family, n_classes, &theta, &x, &y, w.as_ref())?;
    let (v, g) = run(py, |c| Objective::new(&model, &table, l2)?.value_grad(t, c))?;
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
    x: XArg<'py>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (model, t, table) = glm_call(family, n_classes, &theta, &x, &y, w.as_ref())?;
    let h = run(py, |c| Objective::new(&model, &table, l2)?.hessian(t, c))?;
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
    x: XArg<'py>,
    y: PyReadonlyArray1<'py, f64>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    v: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (model, t, table) = glm_call(family, n_classes, &theta, &x, &y, w.as_ref())?;
    let v = v.as_array();
    let out = run(py, |c| Objective::new(&model, &table, l2)?.hvp(t, v, c))?;
    Ok(out.into_pyarray(py))
}

/// Predictions (n x k): kind "linear" (eta) or "mean" (inverse link).
#[pyfunction]
fn predict<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    kind: &str,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    at_points(py, family, n_classes, &theta, &x, kind, |model, t, x, kind| match kind {
        Prediction::Linear => model.eta(t, x),
        Prediction::Mean => model.predict_mean(t, x),
    })
}

/// Gradients in theta of the predictions at the rows of X: ((n k) x p).
#[pyfunction]
fn prediction_grads<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    kind: &str,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    at_points(py, family, n_classes, &theta, &x, kind, |model, t, x, kind| model.prediction_grads(t, x, kind))
}

/// Checks shared by the prediction kernels, then `f` on all rows with the GIL released.
#[allow(clippy::too_many_arguments)]
fn at_points<'py>(
    py: Python<'py>,
    family: &str,
    n_classes: usize,
    theta: &PyReadonlyArray1<'py, f64>,
    x: &XArg<'py>,
    kind: &str,
    f: impl FnOnce(&Glm, ArrayView1<f64>, crate::matrix::XView, Prediction) -> Array2<f64> + Send,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let model = glm(family, n_classes, x.ncols()?)?;
    let t = theta_checked(&model, theta)?;
    let kind = prediction(kind)?;
    let features = x.features()?;
    let n = features.nrows();
    let (y, w) = (Array1::zeros(n), None);
    let out = run(py, |_| {
        let table = Table::new(features, y.view(), w)?;
        with_block(&table, 0..n, |data| f(&model, t, data.x, kind))
    })?;
    Ok(out.into_pyarray(py))
}

/// Owned handle on the training features, so queries need not pass them again.
enum XStore {
    F64(Py<PyArray2<f64>>),
    F32(Py<PyArray2<f32>>),
    Npy(PathBuf),
    Csr(Py<PyArray1<f64>>, Py<PyArray1<i32>>, Py<PyArray1<i64>>, usize),
}

type Info<'py> = (Bound<'py, PyArray1<usize>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<bool>>);

fn info_py(py: Python<'_>, info: SolveInfo) -> Info<'_> {
    (Array1::from(info.iterations).into_pyarray(py), Array1::from(info.residuals).into_pyarray(py), Array1::from(info.converged).into_pyarray(py))
}

/// Influence of a fitted GLM's training points: holds the training set and the prepared solver.
#[pyclass(module = "upweight._core", frozen)]
struct InfluenceCore {
    model: Box<dyn Model + Send + Sync>,
    /// The GLM behind `model`, when it is one (for GLM-only queries such as leverage).
    glm: Option<Glm>,
    inner: Influence,
    x: XStore,
    y: Array1<f64>,
    w: Option<Array1<f64>>,
    progress: Option<Py<PyAny>>,
}

impl InfluenceCore {
    fn run<T: Send>(&self, py: Python<'_>, f: impl FnOnce(&Cancel) -> crate::Result<T> + Send) -> PyResult<T> {
        run_with(py, self.progress.as_ref(), f)
    }

    /// Run `f` on the training set as a row source (borrowing the stored arrays).
    fn with_train<T>(&self, py: Python<'_>, f: impl FnOnce(&Table) -> PyResult<T>) -> PyResult<T> {
        let (y, w) = (self.y.view(), self.w.as_ref().map(|w| w.view()));
        match &self.x {
            XStore::F64(a) => {
                let ro = a.bind(py).readonly();
                f(&Table { x: Features::F64(ro.as_array()), y, w })
            }
            XStore::F32(a) => {
                let ro = a.bind(py).readonly();
                f(&Table { x: Features::F32(ro.as_array()), y, w })
            }
            XStore::Npy(p) => f(&Table { x: Features::Npy(NpyFile::open(p, "X").map_err(to_py)?), y, w }),
            XStore::Csr(data, indices, indptr, ncols) => {
                let (data, indices, indptr) = (data.bind(py).readonly(), indices.bind(py).readonly(), indptr.bind(py).readonly());
                f(&Table { x: Features::Csr(csr(&data, &indices, &indptr, *ncols)?), y, w })
            }
        }
    }
}

#[pymethods]
impl InfluenceCore {
    #[new]
    #[pyo3(signature = (family, n_classes, theta, x, y, w, l2, method="direct", damping=0.0, rtol=1e-10, atol=0.0, max_iter=1000, precondition=true, progress=None, renormalize=true))]
    #[allow(clippy::too_many_arguments)]
    fn new<'py>(
        py: Python<'py>,
        family: &str,
        n_classes: usize,
        theta: PyReadonlyArray1<'py, f64>,
        x: XArg<'py>,
        y: PyReadonlyArray1<'py, f64>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        l2: f64,
        method: &str,
        damping: f64,
        rtol: f64,
        atol: f64,
        max_iter: usize,
        precondition: bool,
        progress: Option<Py<PyAny>>,
        renormalize: bool,
    ) -> PyResult<Self> {
        let model = glm(family, n_classes, x.ncols()?)?;
        let t = theta_checked(&model, &theta)?;
        let opts = SolverOptions { renormalize, ..solver_options(method, damping, rtol, atol, max_iter, precondition)? };
        let table = Table::new(x.features()?, y.as_array(), w.as_ref().map(|w| w.as_array())).map_err(to_py)?;
        let inner = run_with(py, progress.as_ref(), |c| Influence::new(&Objective::new(&model, &table, l2)?, t, opts, c))?;
        Ok(Self {
            model: Box::new(model),
            glm: Some(model),
            inner,
            x: x.store(py),
            y: y.as_array().to_owned(),
            w: w.map(|w| w.as_array().to_owned()),
            progress,
        })
    }

    /// Influence from per-example training gradients (rows of `x`, n x p): curvature is the
    /// empirical Fisher (1/W) G^T diag(w) G, or `hessian` when given.
    #[staticmethod]
    #[pyo3(signature = (x, w, hessian=None, method="direct", damping=0.0, rtol=1e-10, atol=0.0, max_iter=1000, precondition=true, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_gradients<'py>(
        py: Python<'py>,
        x: XArg<'py>,
        w: Option<PyReadonlyArray1<'py, f64>>,
        hessian: Option<PyReadonlyArray2<'py, f64>>,
        method: &str,
        damping: f64,
        rtol: f64,
        atol: f64,
        max_iter: usize,
        precondition: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Self> {
        let model = GradientModel { p: x.ncols()? };
        let opts = solver_options(method, damping, rtol, atol, max_iter, precondition)?;
        let features = x.features()?;
        let n = features.nrows();
        let y = Array1::<f64>::zeros(n);
        let table = Table::new(features, y.view(), w.as_ref().map(|w| w.as_array())).map_err(to_py)?;
        let theta = Array1::<f64>::zeros(model.p);
        let h = hessian.map(|h| h.as_array().to_owned());
        let inner = run_with(py, progress.as_ref(), |c| {
            let obj = Objective::new(&model, &table, 0.0)?;
            match h {
                Some(h) => Influence::with_hessian(&obj, theta.view(), h, opts, c),
                None => Influence::new(&obj, theta.view(), opts, c),
            }
        })?;
        Ok(Self { model: Box::new(model), glm: None, inner, x: x.store(py), y, w: w.map(|w| w.as_array().to_owned()), progress })
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

    /// Number of training points.
    #[getter]
    fn n_samples(&self) -> usize {
        self.y.len()
    }

    /// I(z) of every training point (n x p).
    fn params_train<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let (out, info) = self.with_train(py, |t| self.run(py, |c| self.inner.params(&*self.model, t, t, c)))?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }

    /// I(z) of each row of (X, y), points given in memory (new points or gathered rows): (m x p).
    fn params<'py>(&self, py: Python<'py>, x: PyReadonlyArray2<'py, f64>, y: PyReadonlyArray1<'py, f64>) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let pts = dataset(&x, &y, None, ["X", "y"])?;
        let (out, info) = self.with_train(py, |t| self.run(py, |c| self.inner.params(&*self.model, t, &pts, c)))?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }

    /// Self-influence of every training point (n,), or of the rows `segment` = (start, end).
    #[pyo3(signature = (segment=None))]
    fn self_influence<'py>(&self, py: Python<'py>, segment: Option<(usize, usize)>) -> PyResult<(Bound<'py, PyArray1<f64>>, Info<'py>)> {
        let (out, info) = self.with_train(py, |t| {
            self.run(py, |c| match segment {
                None => self.inner.self_influence(&*self.model, t, t, c),
                Some((a, b)) => self.inner.self_influence(&*self.model, t, &Segment::new(t, a, b)?, c),
            })
        })?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }

    /// Per-example loss gradients of test points (q x p).
    fn loss_grads<'py>(&self, py: Python<'py>, x_test: PyReadonlyArray2<'py, f64>, y_test: PyReadonlyArray1<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let test = dataset(&x_test, &y_test, None, ["X_test", "y_test"])?;
        let g = run(py, |_| self.inner.loss_grads(&*self.model, &test))?;
        Ok(g.into_pyarray(py))
    }

    /// S (r x n): influence of each training point on each f_j given grad_f (r x p); with
    /// `rows`, only those training points (r x len(rows)). float32 when the training features
    /// are float32 (computed in float32), else float64.
    #[pyo3(signature = (grad_f, rows=None))]
    fn on<'py>(&self, py: Python<'py>, grad_f: PyReadonlyArray2<'py, f64>, rows: Option<Vec<usize>>) -> PyResult<(Bound<'py, PyAny>, Info<'py>)> {
        let g = grad_f.as_array();
        let (out, info) = self.with_train(py, |t| {
            let float32 = t.x_rows_f32(0, 0).is_some();
            self.run(py, |c| {
                let (s, info) = match &rows {
                    None => self.inner.on(&*self.model, t, t, g, c)?,
                    Some(idx) => {
                        let sub = crate::source::gather(t, idx)?;
                        self.inner.on(&*self.model, t, &sub.as_dataset(), g, c)?
                    }
                };
                // gathered rows are scored in float64: return them in the training set's precision
                let s = match (s, float32) {
                    (Scores::F64(a), true) => Scores::F32(a.mapv(|v| v as f32)),
                    (s, _) => s,
                };
                Ok((s, info))
            })
        })?;
        let out = match out {
            Scores::F64(a) => a.into_pyarray(py).into_any(),
            Scores::F32(a) => a.into_pyarray(py).into_any(),
        };
        Ok((out, info_py(py, info)))
    }

    /// The k most helpful and most harmful training points per f_j, streamed:
    /// (helpful_idx, helpful, harmful_idx, harmful), each (r x k).
    #[allow(clippy::type_complexity)]
    fn top_k<'py>(
        &self,
        py: Python<'py>,
        grad_f: PyReadonlyArray2<'py, f64>,
        k: usize,
    ) -> PyResult<((Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>), Info<'py>)> {
        let g = grad_f.as_array();
        let (top, info) = self.with_train(py, |t| self.run(py, |c| self.inner.top_k(&*self.model, t, t, g, k, c)))?;
        Ok((
            (top.helpful_idx.into_pyarray(py), top.helpful.into_pyarray(py), top.harmful_idx.into_pyarray(py), top.harmful.into_pyarray(py)),
            info_py(py, info),
        ))
    }

    /// [V; c] ((p + 1) x r) for query gradients (r x p), to score training segments with
    /// `top_k_solved` without solving again.
    fn solve_queries<'py>(&self, py: Python<'py>, grad_f: PyReadonlyArray2<'py, f64>) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let g = grad_f.as_array();
        let (vc, info) = self.with_train(py, |t| self.run(py, |c| self.inner.solve_queries(&*self.model, t, g, c)))?;
        Ok((vc.into_pyarray(py), info_py(py, info)))
    }

    /// `top_k` from solved queries `vc` over the training rows `segment` = (start, end) (or all).
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (vc, k, segment=None))]
    fn top_k_solved<'py>(
        &self,
        py: Python<'py>,
        vc: PyReadonlyArray2<'py, f64>,
        k: usize,
        segment: Option<(usize, usize)>,
    ) -> PyResult<(Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>)> {
        let vc = vc.as_array().to_owned();
        let mut top = self.with_train(py, |t| {
            self.run(py, |c| match segment {
                None => self.inner.top_k_solved(&*self.model, t, &vc, k, c),
                Some((a, b)) => self.inner.top_k_solved(&*self.model, &Segment::new(t, a, b)?, &vc, k, c),
            })
        })?;
        if let Some((a, _)) = segment {
            top.helpful_idx.mapv_inplace(|i| i + a);
            top.harmful_idx.mapv_inplace(|i| i + a);
        }
        Ok((top.helpful_idx.into_pyarray(py), top.helpful.into_pyarray(py), top.harmful_idx.into_pyarray(py), top.harmful.into_pyarray(py)))
    }

    /// Hat values of the training rows (GLMs with one output).
    fn leverage<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let glm = self.glm.ok_or_else(|| InputError::new_err("model: leverage needs a GLM, not per-example gradients"))?;
        let h = self.with_train(py, |t| self.run(py, |c| crate::diagnostics::leverage(&glm, &self.inner, t, c)))?;
        Ok(h.into_pyarray(py))
    }

    /// H^{-1} g for the columns of g (p x r).
    fn inverse_hvp<'py>(&self, py: Python<'py>, g: PyReadonlyArray2<'py, f64>) -> PyResult<(Bound<'py, PyArray2<f64>>, Info<'py>)> {
        let g = g.as_array();
        let (out, info) = self.with_train(py, |t| self.run(py, |c| self.inner.inverse_hvp(&*self.model, t, g, c)))?;
        Ok((out.into_pyarray(py), info_py(py, info)))
    }
}

/// Number of threads the core's parallel loops use.
#[pyfunction]
fn num_threads() -> usize {
    rayon::current_num_threads()
}


type TopKArrays<'py> = (Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>);
type TopKIn<'py> = (PyReadonlyArray2<'py, usize>, PyReadonlyArray2<'py, f64>, PyReadonlyArray2<'py, usize>, PyReadonlyArray2<'py, f64>);

fn top_k_in(t: &TopKIn<'_>) -> crate::influence::TopK {
    crate::influence::TopK { helpful_idx: t.0.as_array().to_owned(), helpful: t.1.as_array().to_owned(), harmful_idx: t.2.as_array().to_owned(), harmful: t.3.as_array().to_owned() }
}

/// The k best of two top-k results (helpful_idx, helpful, harmful_idx, harmful) over disjoint
/// training rows, as one pass over both would choose (ties to the lower index).
#[pyfunction]
fn merge_top_k<'py>(py: Python<'py>, a: TopKIn<'py>, b: TopKIn<'py>, k: usize) -> PyResult<TopKArrays<'py>> {
    let top = top_k_in(&a).merge(&top_k_in(&b), k).map_err(to_py)?;
    Ok((top.helpful_idx.into_pyarray(py), top.helpful.into_pyarray(py), top.harmful_idx.into_pyarray(py), top.harmful.into_pyarray(py)))
}

/// A caller's argument name as the `&'static str` the core's errors hold: each distinct name is
/// allocated once for the life of the process (the package uses a handful).
fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    match names.iter().find(|n| **n == name) {
        Some(n) => n,
        None => {
            let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
            names.push(n);
            n
        }
    }
}

/// The header of a 2-d float32/float64 `.npy` file as the core reads it: (dtype "f4" or "f8",
/// n, d, offset of the first value); errors name `arg`.
#[pyfunction]
#[pyo3(signature = (path, arg="X"))]
fn npy_header(path: PathBuf, arg: &str) -> PyResult<(&'static str, usize, usize, u64)> {
    let f = NpyFile::open(&path, intern(arg)).map_err(to_py)?;
    Ok((if f.dtype == crate::source::NpyDtype::F32 { "f4" } else { "f8" }, f.n, f.d, f.offset()))
}

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::{fit, hessian, hvp, losses, merge_top_k, npy_header, num_threads, objective, per_example_grads, predict, prediction_grads, refit, InfluenceCore};

    /// Rows per block of the streaming kernels (rust/blocks.rs): segment boundaries that are
    /// multiples of it give the same bits as one pass.
    #[pymodule_export]
    const BLOCK_ROWS: usize = crate::blocks::BLOCK_ROWS;

    /// Largest p whose Hessian is summed by row blocks; above it, by tiles (rust/objective.rs).
    #[pymodule_export]
    const TILED_HESSIAN_MAX_ROW_BLOCK_P: usize = crate::objective::TILED_HESSIAN_MAX_ROW_BLOCK_P;
}
