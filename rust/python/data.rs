//! The one conversion of feature arguments: float64 or float32 arrays, a `.npy` path, CSR
//! arrays, or a [`PyWatched`] array become a core [`Features`] that keeps the NumPy arrays alive
//! without copying them.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;

use numpy::ndarray::{Array2, ArrayView1, ArrayView2, Axis};
use numpy::{Element, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

use super::errors::intern;
use super::run::run;
use crate::data::{CsrArrays, Features, Names, RowPrints, Shared, Shared1, Table};

/// A dense float64 or float32 array the caller keeps (C-contiguous), fingerprinted by row groups
/// (`RowPrints`) as the first core built from it reads them: every core built from it reads the
/// caller's memory without a copy and refuses rows that changed since, naming `name`.
#[pyclass(frozen, name = "Watched", module = "upweight._core")]
pub struct PyWatched {
    x: Py<PyAny>,
    prints: Arc<RowPrints>,
    name: &'static str,
}

#[pymethods]
impl PyWatched {
    #[new]
    #[pyo3(signature = (x, name="X"))]
    fn new(x: XArg<'_>, name: &str) -> PyResult<Self> {
        let name = intern(name);
        let (x, prints) = match x {
            XArg::F64(a) if a.is_c_contiguous() => (a.as_any().clone().unbind(), RowPrints::new(a.shape()[0], a.shape()[1], 8)),
            XArg::F32(a) if a.is_c_contiguous() => (a.as_any().clone().unbind(), RowPrints::new(a.shape()[0], a.shape()[1], 4)),
            _ => return Err(crate::Error::Value { arg: name, msg: "only a C-contiguous float64 or float32 array is watched".into() }.into()),
        };
        Ok(Self { x, prints: Arc::new(prints), name })
    }

    /// The array watched (the caller's).
    #[getter]
    fn array(&self, py: Python<'_>) -> Py<PyAny> {
        self.x.clone_ref(py)
    }

    /// Whether every row group has been fingerprinted (a core built from it read them all).
    #[getter]
    fn complete(&self) -> bool {
        self.prints.complete()
    }

    /// Fingerprint the groups not read yet and check the others unchanged (one pass): raises
    /// `InputError` naming the array if a value is not finite or a row changed.
    fn check(&self, py: Python<'_>) -> PyResult<()> {
        match self.x.bind(py).extract::<XArg<'_>>()? {
            XArg::F64(a) => {
                let v = a.as_array();
                run(py, |_| self.prints.check_all(self.name, v))
            }
            XArg::F32(a) => {
                let v = a.as_array();
                run(py, |_| self.prints.check_all(self.name, v))
            }
            _ => unreachable!("a Watched holds a dense array"),
        }
    }
}

/// Features as the Python layer passes them: float64 or float32 arrays, a `.npy` path, or a
/// CSR matrix as (data, indices, indptr, n_columns).
#[derive(FromPyObject)]
pub enum XArg<'py> {
    F64(PyReadonlyArray2<'py, f64>),
    F32(PyReadonlyArray2<'py, f32>),
    Path(PathBuf),
    Csr(PyReadonlyArray1<'py, f64>, PyReadonlyArray1<'py, i32>, PyReadonlyArray1<'py, i64>, usize),
    Watched(Bound<'py, PyWatched>),
}

/// Targets as the Python layer passes them: one per row (n,), or t per row (n, t) for a
/// multi-output model.
#[derive(FromPyObject)]
pub enum YArg<'py> {
    One(PyReadonlyArray1<'py, f64>),
    Many(PyReadonlyArray2<'py, f64>),
}

impl YArg<'_> {
    /// The targets as (n x t), t = 1 for a vector.
    pub fn view(&self) -> ArrayView2<'_, f64> {
        match self {
            YArg::One(a) => a.as_array().insert_axis(Axis(1)),
            YArg::Many(a) => a.as_array(),
        }
    }
}

/// Argument names as the caller spells them, `(x, y)`, for every error about these rows.
pub type NamesArg = Option<(String, String)>;

pub fn names(arg: &NamesArg) -> Names {
    arg.as_ref().map_or(Names::TRAIN, |(x, y)| Names { x: intern(x), y: intern(y) })
}

fn owner(a: &Bound<'_, PyAny>) -> Arc<dyn Any + Send + Sync> {
    Arc::new(a.clone().unbind())
}

fn shared1<T: Element + Send + Sync + 'static>(a: &PyReadonlyArray1<'_, T>) -> Shared1<T> {
    // SAFETY: the NumPy array is kept alive by the owner for as long as the handle lives, and
    // a NumPy array's buffer never moves while it is referenced
    unsafe { Shared::borrowed(a.as_array(), owner(a.as_any())) }
}

impl XArg<'_> {
    /// The features, borrowed from the caller's arrays; errors name `arg`.
    pub fn features(&self, arg: &'static str) -> PyResult<Features> {
        // SAFETY (both dense arms): as in `shared1`
        Ok(match self {
            XArg::F64(a) => Features::F64(unsafe { Shared::borrowed(a.as_array(), owner(a.as_any())) }),
            XArg::F32(a) => Features::F32(unsafe { Shared::borrowed(a.as_array(), owner(a.as_any())) }),
            XArg::Path(p) => Features::npy(p, arg)?,
            XArg::Csr(data, indices, indptr, ncols) => Features::Csr(CsrArrays::new(shared1(indptr), shared1(indices), shared1(data), *ncols, arg)?),
            XArg::Watched(w) => w.get().x.bind(w.py()).extract::<XArg<'_>>()?.features(arg)?,
        })
    }
}

/// A table of rows (x, y, w), validated, errors naming the arguments as `names` says. Without
/// `y` the rows have no targets (per-example gradients, or points only predicted at).
pub fn table(x: &XArg<'_>, y: Option<ArrayView2<f64>>, w: Option<ArrayView1<f64>>, names: Names) -> PyResult<Table> {
    let features = x.features(names.x)?;
    let w = w.map(|w| w.to_owned());
    // without targets (y is then not read): one column of zeros
    let y = y.map_or_else(|| Array2::zeros((features.nrows(), 1)), |y| y.as_standard_layout().into_owned());
    Ok(match x {
        XArg::Watched(watched) => Table::watched(features, watched.get().prints.clone(), y, w, names)?,
        _ => Table::with_targets(features, y, w, names)?,
    })
}
