//! Query batching in `_core`: queries solved once and compressed to rank r per layer block
//! (`solve_queries_factored`), kept by the core as a `FactoredQueries` object, then scored
//! (`scores_factored`, `top_k_factored`). Functions of a `_core.Influence`.

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;

use super::convert::{info_py, top_k_py, Info, TopKArrays};
use super::influence::PyInfluence;
use crate::models::factored::FactoredQueries;
use crate::Points;

/// Solved queries, each layer block as rank-r factors (read-only).
#[pyclass(name = "FactoredQueries", module = "upweight._core", frozen)]
pub struct PyFactoredQueries {
    inner: FactoredQueries,
}

#[pymethods]
impl PyFactoredQueries {
    /// r, the factors kept per query and block.
    #[getter]
    fn rank(&self) -> usize {
        self.inner.rank
    }
    /// Number of queries.
    #[getter]
    fn n_queries(&self) -> usize {
        self.inner.n_queries()
    }
    /// ||V_t - V_t^(r)||_F / ||V_t||_F per query.
    #[getter]
    fn errors<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner.errors.clone().into_pyarray(py)
    }
}

/// Solve the queries `grad_f` (q x p) and compress each to rank `rank` per layer block.
#[pyfunction]
pub fn solve_queries_factored<'py>(
    py: Python<'py>,
    inf: &PyInfluence,
    grad_f: PyReadonlyArray2<'py, f64>,
    rank: usize,
) -> PyResult<(PyFactoredQueries, Info<'py>)> {
    let g = grad_f.as_array();
    let (inner, info) = inf.run(py, |c| inf.inner.solve_queries_factored(g, rank, c))?;
    Ok((PyFactoredQueries { inner }, info_py(py, info)))
}

/// Scores (q x n, or q x len(rows)) of the training rows against factored queries.
#[pyfunction]
#[pyo3(signature = (inf, queries, rows=None))]
pub fn scores_factored<'py>(py: Python<'py>, inf: &PyInfluence, queries: &PyFactoredQueries, rows: Option<Vec<usize>>) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let points = rows.as_deref().map_or(Points::Train, Points::Rows);
    Ok(inf.run(py, |c| inf.inner.scores_factored(&queries.inner, points, c))?.into_pyarray(py))
}

/// The k most helpful and most harmful training rows (of `segment` = (start, stop), or all)
/// for factored queries, streamed.
#[pyfunction]
#[pyo3(signature = (inf, queries, k, segment=None))]
pub fn top_k_factored<'py>(
    py: Python<'py>,
    inf: &PyInfluence,
    queries: &PyFactoredQueries,
    k: usize,
    segment: Option<(usize, usize)>,
) -> PyResult<TopKArrays<'py>> {
    let points = segment.map_or(Points::Train, |(a, b)| Points::Range(a, b));
    Ok(top_k_py(py, inf.run(py, |c| inf.inner.top_k_factored(&queries.inner, k, points, c))?))
}
