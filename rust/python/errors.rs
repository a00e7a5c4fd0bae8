//! The core's errors as Python exceptions (`upweight.errors`): one conversion, so `?` maps every
//! error in one place. The core's messages already name the argument as the caller spells it.

use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError};
use pyo3::PyErr;

use crate::Error;

pyo3::import_exception!(upweight.errors, InputError);
pyo3::import_exception!(upweight.errors, SingularHessianError);
pyo3::import_exception!(upweight.errors, InternalError);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        match e {
            Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
            Error::Singular { .. } => SingularHessianError::new_err(e.to_string()),
            Error::Memory { .. } => PyMemoryError::new_err(e.to_string()),
            _ => InputError::new_err(e.to_string()),
        }
    }
}

/// A caller's argument name as the `&'static str` the core's errors hold: each distinct name is
/// allocated once for the life of the process (the package uses a handful).
pub fn intern(name: &str) -> &'static str {
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
