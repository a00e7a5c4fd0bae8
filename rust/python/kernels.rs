//! Per-chunk kernels for distributed runs (the Dask backend maps them over chunks of the
//! training set): partial sums of the objective and its derivatives, a block of scores, the
//! top-k of a block, and the combine rules (partials added in chunk order, then finished once;
//! top-k results merged with `merge_top_k`).

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use super::data::{XArg, YArg};
use super::influence::{top_k_py, TopKArrays};
use super::model::PyModel;
use super::run::run;
use crate::influence::Scorer;
use crate::objective::partial::{finish_hvp, Partial};
use crate::{Objective, Scores};

type PartialPy<'py> = (f64, f64, Bound<'py, PyArray1<f64>>, Option<Bound<'py, PyArray2<f64>>>);
type Finished<'py> = (f64, Bound<'py, PyArray1<f64>>, Option<Bound<'py, PyArray2<f64>>>);

/// (sum w_i, sum w_i l_i, sum w_i grad l_i, sum w_i Hess l_i or None) over the rows (x, y, w)
/// of one chunk, unnormalised.
#[pyfunction]
#[pyo3(signature = (model, theta, x, y, w, hessian=false))]
pub fn partial_sums<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: YArg<'py>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    hessian: bool,
) -> PyResult<PartialPy<'py>> {
    let (t, rows) = (model.theta(&theta)?, model.rows(&x, Some(&y), w.as_ref(), &None)?);
    let p = run(py, |c| Objective::new(&*model.inner, &rows, 0.0)?.partial(t, hessian, c))?;
    Ok((p.weight, p.loss, p.grad.into_pyarray(py), p.hessian.map(|h| h.into_pyarray(py))))
}

/// (L_w, grad L_w, Hessian or None) from the partial sums of every chunk added in chunk order.
#[pyfunction]
#[pyo3(signature = (model, theta, l2, weight, loss, grad, hessian=None))]
#[allow(clippy::too_many_arguments)]
pub fn finish_sums<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    l2: f64,
    weight: f64,
    loss: f64,
    grad: PyReadonlyArray1<'py, f64>,
    hessian: Option<PyReadonlyArray2<'py, f64>>,
) -> PyResult<Finished<'py>> {
    let t = model.theta(&theta)?;
    let partial = Partial { weight, loss, grad: grad.as_array().to_owned(), hessian: hessian.map(|h| h.as_array().to_owned()) };
    let (value, g, h) = partial.finish(&model.inner.penalty_mask(), l2, t);
    Ok((value, g.into_pyarray(py), h.map(|h| h.into_pyarray(py))))
}

/// sum_i w_i (Hess l_i) V over the rows of one chunk, unnormalised (p x r).
#[pyfunction]
pub fn partial_hvp<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: YArg<'py>,
    w: Option<PyReadonlyArray1<'py, f64>>,
    v: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let (t, v, rows) = (model.theta(&theta)?, v.as_array(), model.rows(&x, Some(&y), w.as_ref(), &None)?);
    Ok(run(py, |c| Objective::new(&*model.inner, &rows, 0.0)?.partial_hvp(t, v, c))?.into_pyarray(py))
}

/// H V of the whole training set from the chunks' `partial_hvp` added in chunk order.
#[pyfunction]
pub fn finish_hvp_sums<'py>(
    py: Python<'py>,
    model: &PyModel,
    l2: f64,
    total_weight: f64,
    hv: PyReadonlyArray2<'py, f64>,
    v: PyReadonlyArray2<'py, f64>,
) -> Bound<'py, PyArray2<f64>> {
    finish_hvp(&model.inner.penalty_mask(), l2, total_weight, hv.as_array().to_owned(), v.as_array()).into_pyarray(py)
}

/// Scores (r x B) of the rows (x, y) of one chunk for solved queries `vc` ((p + 1) x r, from
/// `Influence.solve_queries`), W the total training weight: float32 for float32 rows.
#[pyfunction]
pub fn score_block<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: YArg<'py>,
    vc: PyReadonlyArray2<'py, f64>,
    total_weight: f64,
) -> PyResult<Bound<'py, PyAny>> {
    let (t, vc, rows) = (model.theta(&theta)?, vc.as_array().to_owned(), model.rows(&x, Some(&y), None, &None)?);
    let scorer = Scorer { model: &*model.inner, theta: t, total_weight };
    Ok(match run(py, |c| scorer.scores(&rows, &vc, c))? {
        Scores::F64(a) => a.into_pyarray(py).into_any(),
        Scores::F32(a) => a.into_pyarray(py).into_any(),
    })
}

/// The k most helpful and most harmful rows of one chunk whose first row is training row
/// `offset`: (helpful_idx, helpful, harmful_idx, harmful) with training indices, to be merged
/// over chunks with `merge_top_k`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn top_k_block<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: YArg<'py>,
    vc: PyReadonlyArray2<'py, f64>,
    total_weight: f64,
    k: usize,
    offset: usize,
) -> PyResult<TopKArrays<'py>> {
    let (t, vc, rows) = (model.theta(&theta)?, vc.as_array().to_owned(), model.rows(&x, Some(&y), None, &None)?);
    let scorer = Scorer { model: &*model.inner, theta: t, total_weight };
    let mut top = run(py, |c| scorer.top_k(&rows, &vc, k, c))?;
    top.helpful_idx.mapv_inplace(|i| i + offset);
    top.harmful_idx.mapv_inplace(|i| i + offset);
    Ok(top_k_py(py, top))
}
