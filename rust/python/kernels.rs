//! Per-chunk kernels for distributed runs (the Dask backend maps them over chunks of the
//! training set): partial sums of the objective and its derivatives, a block of scores, the
//! top-k of a block, and the combine rules (partials added in chunk order, then finished once;
//! top-k results merged with `merge_top_k`), and the factored Hessian the
//! workers share ([`PyFactor`]) for per-row solves (self-influence).

use numpy::ndarray::{Array2, ArrayViewMut2};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;

use super::convert::{top_k_py, TopKArrays};
use super::data::{XArg, YArg};
use super::model::PyModel;
use super::run::run;
use crate::error::{check_finite, check_overflow};
use crate::influence::{check_hessian, self_influence_of, Scorer};
use crate::objective::partial::{finish_hvp, Partial};
use crate::solvers::{Direct, SolveInfo};
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

/// The direct solver of a distributed run: H + damping I, with H the Hessian summed from the
/// chunks (`partial_sums`, `finish_sums`), Cholesky-factored once and augmented along the
/// model's null space (`null`, from `null_space`) as `Influence` does. Pickles as its matrix:
/// unpickling factors again, so a factor scattered to the workers is factored once per worker.
#[pyclass(name = "Factor", module = "upweight._core", frozen)]
pub struct PyFactor {
    direct: Direct,
    hessian: Array2<f64>,
    damping: f64,
    null: Option<Array2<f64>>,
}

#[pymethods]
impl PyFactor {
    #[new]
    #[pyo3(signature = (hessian, damping=0.0, null=None))]
    fn new(py: Python<'_>, hessian: PyReadonlyArray2<'_, f64>, damping: f64, null: Option<PyReadonlyArray2<'_, f64>>) -> PyResult<Self> {
        let hessian = hessian.as_array().to_owned();
        let p = hessian.nrows();
        check_hessian(&hessian, p)?;
        if !(damping >= 0.0 && damping.is_finite()) {
            return Err(crate::Error::Value { arg: "damping", msg: format!("must be finite and >= 0, got {damping}") }.into());
        }
        let null = null.map(|n| n.as_array().to_owned());
        if let Some(n) = &null {
            if n.nrows() != p {
                return Err(crate::Error::Shape { arg: "null", msg: format!("has {} rows, expected {p}", n.nrows()) }.into());
            }
        }
        let mut damped = hessian.clone();
        damped.diag_mut().mapv_inplace(|v| v + damping);
        let direct = run(py, |cancel| Direct::interruptible(damped, null.as_ref().map(|n| n.view()), Some(cancel)))?;
        Ok(Self { direct, hessian, damping, null })
    }

    /// p, the matrix's dimension.
    #[getter]
    fn n_params(&self) -> usize {
        self.direct.dim()
    }

    /// (H + damping I)^{-1} B for the columns of `b` (p x r).
    fn solve<'py>(&self, py: Python<'py>, b: PyReadonlyArray2<'py, f64>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let b = b.as_array();
        if b.nrows() != self.direct.dim() {
            return Err(crate::Error::Shape { arg: "b", msg: format!("has {} rows, expected p = {}", b.nrows(), self.direct.dim()) }.into());
        }
        check_finite("b", b.iter())?;
        let out = run(py, |_| {
            let out = self.direct.solve(b);
            check_overflow("the solution", out.iter())?;
            Ok(out)
        })?;
        Ok(out.into_pyarray(py))
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = slf.py();
        let me = slf.get();
        let args = (me.hessian.clone().into_pyarray(py), me.damping, me.null.clone().map(|n| n.into_pyarray(py)));
        Ok((slf.get_type().into_any(), args.into_pyobject(py)?.into_any()))
    }
}

/// The model's null-space basis at penalty `l2` (p x k, orthonormal columns: directions the
/// objective is flat along, e.g. a multinomial's shift of every class), or None.
#[pyfunction]
pub fn null_space<'py>(py: Python<'py>, model: &PyModel, l2: f64) -> Option<Bound<'py, PyArray2<f64>>> {
    model.inner.null_space(l2).map(|n| n.into_pyarray(py))
}

/// Self-influence g_m . I(z_m) (B,) of the rows (x, y) of one chunk, given the factored
/// Hessian of the whole training set, the penalty term `penalty_grad` (2 l2 coef*_masked, or
/// zeros without renormalisation) and W the total training weight.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn self_influence_block<'py>(
    py: Python<'py>,
    model: &PyModel,
    theta: PyReadonlyArray1<'py, f64>,
    x: XArg<'py>,
    y: YArg<'py>,
    factor: &PyFactor,
    penalty_grad: PyReadonlyArray1<'py, f64>,
    total_weight: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let (t, rows, pen) = (model.theta(&theta)?, model.rows(&x, Some(&y), None, &None)?, penalty_grad.as_array());
    let p = model.inner.n_params();
    if factor.direct.dim() != p || pen.len() != p {
        let msg = format!("factor has dimension {} and penalty_grad {} entries, expected p = {p}", factor.direct.dim(), pen.len());
        return Err(crate::Error::Shape { arg: "factor", msg }.into());
    }
    let scorer = Scorer { model: &*model.inner, theta: t, total_weight };
    let solve = |v: ArrayViewMut2<f64>| {
        factor.direct.chol_solve_in_place(v);
        Ok(SolveInfo::default())
    };
    Ok(run(py, |c| self_influence_of(scorer, pen, &rows, solve, c))?.0.into_pyarray(py))
}
