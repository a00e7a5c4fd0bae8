//! The Python module `upweight._core` (feature "python"): converts arrays and errors, releases
//! the GIL, keeps Ctrl-C working, and calls the core's public API. No numerics live here.
//!
//! - [`model`]: `_core.Model`, a model family built once from its spec;
//! - [`network`]: building networks, L-BFGS training, the PBRF;
//! - [`influence`]: `_core.Influence`, the core's `Influence` on data it owns;
//! - [`kernels`]: per-chunk kernels and their combine rules, for distributed runs;
//! - [`data`]: the one conversion of feature arguments; [`errors`]: `From<Error> for PyErr`;
//!   [`run`]: calls with the GIL released, Ctrl-C and progress.

mod convert;
mod data;
mod errors;
mod influence;
mod kernels;
mod model;
mod network;
mod query_batching;
mod run;

use std::path::PathBuf;

use numpy::ndarray::Array2;
use numpy::PyReadonlyArray2;
use pyo3::prelude::*;

use crate::data::{NpyDtype, NpyFile};
use crate::TopK;

/// mimalloc, and the system allocator for the largest arrays (see [`crate::allocator`]).
#[global_allocator]
static ALLOCATOR: crate::allocator::SplitAllocator<mimalloc::MiMalloc> = crate::allocator::SplitAllocator(mimalloc::MiMalloc);

type TopKIn<'py> = (PyReadonlyArray2<'py, i64>, PyReadonlyArray2<'py, f64>, PyReadonlyArray2<'py, i64>, PyReadonlyArray2<'py, f64>);

/// A top-k result as the Python layer holds it (indices as intp).
fn top_k_in(t: &TopKIn<'_>, arg: &'static str) -> PyResult<TopK> {
    let idx = |a: &PyReadonlyArray2<'_, i64>| -> PyResult<Array2<usize>> {
        match a.as_array().iter().position(|&i| i < 0) {
            Some(i) => Err(crate::Error::Value { arg, msg: format!("negative index at flat position {i}") }.into()),
            None => Ok(a.as_array().mapv(|i| i as usize)),
        }
    };
    Ok(TopK { helpful_idx: idx(&t.0)?, helpful: t.1.as_array().to_owned(), harmful_idx: idx(&t.2)?, harmful: t.3.as_array().to_owned() })
}

/// The k best of two top-k results (helpful_idx, helpful, harmful_idx, harmful) over disjoint
/// training rows, as one pass over both would choose (ties to the lower index).
#[pyfunction]
#[allow(clippy::type_complexity)]
fn merge_top_k<'py>(
    py: Python<'py>,
    a: TopKIn<'py>,
    b: TopKIn<'py>,
    k: usize,
) -> PyResult<(Bound<'py, numpy::PyArray2<usize>>, Bound<'py, numpy::PyArray2<f64>>, Bound<'py, numpy::PyArray2<usize>>, Bound<'py, numpy::PyArray2<f64>>)> {
    Ok(convert::top_k_py(py, top_k_in(&a, "a")?.merge(&top_k_in(&b, "b")?, k)?))
}

/// The header of a 2-d float32/float64 `.npy` file as the core reads it: (dtype "f4" or "f8",
/// n, d, offset of the first value); errors name `arg`.
#[pyfunction]
#[pyo3(signature = (path, arg="X"))]
fn npy_header(path: PathBuf, arg: &str) -> PyResult<(&'static str, usize, usize, u64)> {
    let f = NpyFile::open(&path, errors::intern(arg))?;
    Ok((if f.dtype == NpyDtype::F32 { "f4" } else { "f8" }, f.n, f.d, f.offset()))
}

/// Number of threads the core's parallel loops use.
#[pyfunction]
fn num_threads() -> usize {
    rayon::current_num_threads()
}

#[pymodule]
mod _core {
    #[pymodule_export]
    use super::data::PyWatched;
    #[pymodule_export]
    use super::influence::PyInfluence;
    #[pymodule_export]
    use super::kernels::{finish_hvp_sums, finish_sums, null_space, partial_hvp, partial_sums, score_block, self_influence_block, top_k_block, PyFactor};
    #[pymodule_export]
    use super::model::PyModel;
    #[pymodule_export]
    use super::network::{curvature_diag, fit_adam, fit_lbfgs, last_layer, mlp, pbrf, with_curvature, with_kfac_samples};
    #[pymodule_export]
    use super::query_batching::{scores_factored, solve_queries_factored, top_k_factored, PyFactoredQueries};
    #[pymodule_export]
    use super::{merge_top_k, npy_header, num_threads};

    /// The package's version: Cargo.toml's, its one source (maturin gives it to the wheel too).
    #[pymodule_export]
    #[allow(non_upper_case_globals)]
    const __version__: &str = env!("CARGO_PKG_VERSION");

    /// Rows per block of the streaming kernels (rust/blocks.rs): segment boundaries that are
    /// multiples of it give the same bits as one pass.
    #[pymodule_export]
    const BLOCK_ROWS: usize = crate::blocks::BLOCK_ROWS;

    /// Largest p whose Hessian is summed by row blocks; above it, by tiles (rust/objective/hessian.rs).
    #[pymodule_export]
    const TILED_HESSIAN_MAX_ROW_BLOCK_P: usize = crate::objective::TILED_HESSIAN_MAX_ROW_BLOCK_P;
}
