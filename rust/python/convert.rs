//! Core results as Python objects and back: solve info, top-k arrays, and an approximate
//! solver's prepared curvature (named arrays, [`crate::solvers::state`]).

use std::collections::HashMap;

use numpy::ndarray::Array1;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyReadonlyArrayDyn};
use pyo3::prelude::*;

use crate::solvers::state::State;
use crate::solvers::SolveInfo;
use crate::TopK;

pub type Info<'py> = (Bound<'py, PyArray1<usize>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<bool>>);
pub type TopKArrays<'py> = (Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>, Bound<'py, PyArray2<usize>>, Bound<'py, PyArray2<f64>>);
pub type StateArrays<'py> = HashMap<String, Bound<'py, PyArrayDyn<f64>>>;
pub type StateArg<'py> = Option<HashMap<String, PyReadonlyArrayDyn<'py, f64>>>;

pub fn info_py(py: Python<'_>, info: SolveInfo) -> Info<'_> {
    (Array1::from(info.iterations).into_pyarray(py), Array1::from(info.residuals).into_pyarray(py), Array1::from(info.converged).into_pyarray(py))
}

pub fn top_k_py(py: Python<'_>, top: TopK) -> TopKArrays<'_> {
    (top.helpful_idx.into_pyarray(py), top.helpful.into_pyarray(py), top.harmful_idx.into_pyarray(py), top.harmful.into_pyarray(py))
}

pub fn state_py(py: Python<'_>, st: State) -> StateArrays<'_> {
    st.into_iter().map(|(k, v)| (k, v.into_pyarray(py))).collect()
}

/// The caller's arrays, copied (the state is kept by the solver).
pub fn state_in(st: StateArg<'_>) -> Option<State> {
    st.map(|m| m.into_iter().map(|(k, v)| (k, v.as_array().to_owned())).collect())
}
