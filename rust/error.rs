//! The core's error type. The bindings turn each variant into a Python exception
//! (`upweight.errors`), so every message names the argument it is about.

use std::fmt;

/// Everything the core can refuse or fail at. No function of the core panics on user input.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// An array has the wrong shape, or two arrays disagree.
    Shape { arg: &'static str, msg: String },
    /// NaN or infinity in an input.
    NonFinite { arg: &'static str, index: usize },
    /// The same in a matrix: the first NaN or infinity by row and column (row-major order).
    NonFiniteAt { arg: &'static str, row: usize, col: usize },
    /// Sample weights that are negative or all zero.
    Weights { msg: String },
    /// A target outside the family's support (logistic not 0/1, class id out of range, ...).
    Label { arg: &'static str, index: usize, value: f64, expected: &'static str },
    /// Any other invalid argument value.
    Value { arg: &'static str, msg: String },
    /// The (augmented) Hessian is not positive definite: the optimum is not unique.
    Singular { msg: String },
    /// An allocation larger than the memory available (or than any address space).
    Memory { msg: String },
    /// A long call was cancelled (Ctrl-C in Python).
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { arg, msg } => write!(f, "{arg}: {msg}"),
            Error::NonFinite { arg, index } => {
                write!(f, "{arg}: contains NaN or infinity (first at index {index})")
            }
            Error::NonFiniteAt { arg, row, col } => {
                write!(f, "{arg}: contains NaN or infinity (first at row {row}, column {col})")
            }
            Error::Weights { msg } => write!(f, "sample_weight: {msg}"),
            Error::Label { arg, index, value, expected } => {
                write!(f, "{arg}: value {value} at index {index} is not a valid target; expected {expected}")
            }
            Error::Value { arg, msg } => write!(f, "{arg}: {msg}"),
            Error::Singular { msg } => write!(f, "{msg}"),
            Error::Memory { msg } => write!(f, "{msg}"),
            Error::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for Error {}

/// Index of the first non-finite entry, if any.
pub(crate) fn first_non_finite<'a>(values: impl IntoIterator<Item = &'a f64>) -> Option<usize> {
    values.into_iter().position(|v| !v.is_finite())
}

/// Whether every value is finite: branch-free over runs of 64 (the compares vectorise), the
/// fast path of the checks below on large arrays.
pub(crate) fn all_finite<T: Copy + Into<f64>>(values: &[T]) -> bool {
    values.chunks(64).all(|c| c.iter().fold(true, |a, &v| a & v.into().is_finite()))
}

/// [`check_finite`] on a 2-d array: its rows in parallel by the vectorised test, and the
/// position (in row-major order) found only when something is not finite.
pub(crate) fn check_finite_rows<T: Copy + Into<f64> + Sync>(arg: &'static str, a: ndarray::ArrayView2<T>) -> Result<()> {
    use rayon::prelude::*;
    let ok = match a.as_slice() {
        Some(v) => v.par_chunks(1 << 16).all(all_finite),
        None => a.axis_iter(ndarray::Axis(0)).into_par_iter().all(|row| row.iter().all(|&v| v.into().is_finite())),
    };
    match ok {
        true => Ok(()),
        false => {
            let index = a.iter().position(|&v| !v.into().is_finite()).expect("a value is not finite");
            Err(Error::NonFiniteAt { arg, row: index / a.ncols(), col: index % a.ncols() })
        }
    }
}

/// `Err(NonFinite)` naming `arg` if any value is NaN or infinite.
pub(crate) fn check_finite<'a>(arg: &'static str, values: impl IntoIterator<Item = &'a f64>) -> Result<()> {
    match first_non_finite(values) {
        Some(index) => Err(Error::NonFinite { arg, index }),
        None => Ok(()),
    }
}

/// The error for results that overflowed float64 although every input was finite when it was
/// validated (arrays the core reads from the caller's memory are checked unchanged as they are
/// read: [`crate::data::RowPrints`]).
pub(crate) fn overflow(what: &str) -> Error {
    Error::Value {
        arg: "X",
        msg: format!(
            "{what} overflowed float64 (not finite although every input was when it was given): the features or \
             targets are too large in magnitude; rescale them (e.g. standardise X) and refit"
        ),
    }
}

/// `Err(overflow(what))` if any value is NaN or infinite.
pub(crate) fn check_overflow<'a, T: 'a + Copy + Into<f64>>(what: &str, values: impl IntoIterator<Item = &'a T>) -> Result<()> {
    if values.into_iter().any(|&v| !v.into().is_finite()) {
        return Err(overflow(what));
    }
    Ok(())
}
