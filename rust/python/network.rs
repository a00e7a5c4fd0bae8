//! Networks in `_core`: building an MLP model, L-BFGS training, the curvature's diagonal (for the
//! default damping) and the proximal Bregman response. Functions of a `_core.Model`.

use std::sync::Arc;

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::prelude::*;

use super::data::{XArg, YArg};
use super::errors::InputError;
use super::model::PyModel;
use super::run::run_with;
use crate::fit::adam::{adam, AdamOptions};
use crate::fit::lbfgs::{lbfgs, LbfgsOptions};
use crate::models::mlp::pbrf::pbrf_responses;
use crate::models::mlp::Curvature;
use crate::{Activation, Family, Mlp, Model, Objective};

impl PyModel {
    /// A network as a model.
    pub fn of_network(net: Mlp) -> Self {
        let desc = format!("an MLP {:?} ({}, {} head, {})", net.sizes(), net.activation.name(), net.head.name(), net.curvature.name());
        Self { inner: Arc::new(net.clone()), family: None, mlp: Some(net), desc }
    }

    /// The network, or an InputError naming `model`.
    pub fn network(&self) -> PyResult<&Mlp> {
        self.mlp.as_ref().ok_or_else(|| InputError::new_err(format!("model: {} is not a network", self.desc)))
    }
}

/// (theta, n_iter, grad_norm, converged, objective).
type Minimised<'py> = (Bound<'py, PyArray1<f64>>, usize, f64, bool, f64);

/// A multilayer perceptron: `sizes` = [n_features, hidden.., n_outputs], `activation` "tanh",
/// "relu", "gelu", "logistic" or "identity", `head` a GLM family on the outputs ("multinomial" =
/// softmax cross-entropy, "squared", "logistic", "poisson"), `curvature` "gauss-newton" or
/// "hessian" (what the objective's Hessian, its products and solves use).
#[pyfunction]
pub fn mlp(sizes: Vec<usize>, activation: &str, head: &str, curvature: &str) -> PyResult<PyModel> {
    let k = sizes.last().copied().unwrap_or(0);
    let net = Mlp::new(sizes, Activation::from_name(activation)?, Family::from_name(head, k)?, Curvature::from_name(curvature)?)?;
    Ok(PyModel::of_network(net))
}

/// The same network with another curvature ("gauss-newton" or "hessian").
#[pyfunction]
pub fn with_curvature(model: &PyModel, curvature: &str) -> PyResult<PyModel> {
    Ok(PyModel::of_network(model.network()?.with_curvature(Curvature::from_name(curvature)?)))
}

/// The same network with its K-FAC / EK-FAC factors from `samples` output gradients per row at
/// targets drawn from its predictive distribution (seeded per row; 0: the exact expectation).
#[pyfunction]
pub fn with_kfac_samples(model: &PyModel, samples: usize) -> PyResult<PyModel> {
    Ok(PyModel::of_network(model.network()?.with_kfac_samples(samples)))
}

/// The network's last layer as a model in its parameters alone, the layers below frozen at
/// `theta` (the whole network's): the prefilter's stage-1 scorer. Its theta is `theta[range]`.
/// Returns (model, (start, stop)).
#[pyfunction]
pub fn last_layer(model: &PyModel, theta: PyReadonlyArray1<'_, f64>) -> PyResult<(PyModel, (usize, usize))> {
    let last = model.network()?.last_layer(model.theta(&theta)?)?;
    let (range, sizes) = (last.range(), model.network()?.sizes().to_vec());
    let desc = format!("the last layer of an MLP {sizes:?}, the layers below frozen");
    Ok((PyModel { inner: Arc::new(last), family: None, mlp: None, desc }, (range.start, range.end)))
}

/// The diagonal of the objective's curvature (p), penalty included, or None when the model has
/// none. Its mean is the default damping's scale (0.1 tr(G) / p).
#[pyfunction]
#[pyo3(signature = (model, theta, x, y, w, l2, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn curvature_diag<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: YArg<'py>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Option<Bound<'py, PyArray1<f64>>>> {
    let (t, rows) = (model.theta(&theta)?, model.rows(&x, Some(&y), w.as_ref(), &None)?);
    let d = run_with(py, progress.as_ref(), |c| Objective::new(&*model.inner, &rows, l2)?.hessian_diag(t, c))?;
    Ok(d.map(|d| d.into_pyarray(py)))
}

/// Minimise the objective by L-BFGS from `theta0` to max |gradient| <= tol. Returns (theta,
/// n_iter, grad_norm, converged, objective).
#[pyfunction]
#[pyo3(signature = (model, x, y, w, l2, theta0, tol, max_iter, memory=10, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn fit_lbfgs<'py>(
    py: Python<'py>,
    model: &PyModel,
    x: XArg<'py>,
    y: YArg<'py>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    theta0: PyReadonlyArray1<'py, f64>,
    tol: f64,
    max_iter: usize,
    memory: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<Minimised<'py>> {
    let rows = model.rows(&x, Some(&y), w.as_ref(), &None)?;
    let t0 = theta0.as_array();
    let opts = LbfgsOptions { tol, max_iter, memory };
    let res = run_with(py, progress.as_ref(), |c| lbfgs(&Objective::new(&*model.inner, &rows, l2)?, t0, &opts, c))?;
    Ok((res.theta.into_pyarray(py), res.n_iter, res.grad_norm, res.converged, res.objective))
}

/// Seeded mini-batch Adam from `theta0` for `epochs` passes in batches of `batch_size`. Returns
/// (theta, steps, grad_norm, converged, objective) with the full objective's gradient at the end.
#[pyfunction]
#[pyo3(signature = (model, x, y, w, l2, theta0, epochs, batch_size, learning_rate, seed, tol, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn fit_adam<'py>(
    py: Python<'py>,
    model: &PyModel,
    x: XArg<'py>,
    y: YArg<'py>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    theta0: PyReadonlyArray1<'py, f64>,
    epochs: usize,
    batch_size: usize,
    learning_rate: f64,
    seed: u64,
    tol: f64,
    progress: Option<Py<PyAny>>,
) -> PyResult<Minimised<'py>> {
    let rows = model.rows(&x, Some(&y), w.as_ref(), &None)?;
    let t0 = theta0.as_array();
    let opts = AdamOptions { epochs, batch_size, learning_rate, seed, ..Default::default() };
    let res = run_with(py, progress.as_ref(), |c| adam(&*model.inner, &rows, l2, t0, &opts, tol, c))?;
    Ok((res.theta.into_pyarray(py), res.n_iter, res.grad_norm, res.converged, res.objective))
}

/// The proximal Bregman responses of training rows `points` (networks): theta_b(eps) - theta for
/// each point and eps (row j len(eps) + e; (len(points) len(eps)) x p), solved from `theta` to
/// max |gradient| <= tol, and whether each converged.
#[pyfunction]
#[pyo3(signature = (model, theta, x, y, w, l2, damping, renormalize, points, eps, tol=1e-10, max_iter=100, progress=None))]
#[allow(clippy::too_many_arguments)]
pub fn pbrf<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: YArg<'py>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    l2: f64,
    damping: f64,
    renormalize: bool,
    points: Vec<usize>,
    eps: Vec<f64>,
    tol: f64,
    max_iter: usize,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Bound<'py, PyArray2<f64>>, Vec<bool>)> {
    let net = model.network()?;
    let (t, rows) = (model.theta(&theta)?, model.rows(&x, Some(&y), w.as_ref(), &None)?);
    crate::memory::check("the PBRF's Hessians (3 of p x p)", &[3, net.n_params(), net.n_params()], 8)?;
    let (d, conv) = run_with(py, progress.as_ref(), |c| pbrf_responses(net, &rows, t, l2, damping, renormalize, &points, &eps, tol, max_iter, c))?;
    Ok((d.into_pyarray(py), conv))
}
