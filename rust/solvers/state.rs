//! An approximate solver's prepared curvature as named float64 arrays, and back: what the Python
//! layer saves (`Influence.save_curvature`) and reloads (`curvature_file=`), so the passes over
//! the data that built it (K-FAC's factors, EK-FAC's eigenvalues, Lanczos' products) run once.
//! A header (`method`, `damping`, `l2`, `p`, `total_weight`) is checked against the influence
//! it is loaded into; the Python layer also checks theta.

use std::collections::HashMap;

use ndarray::{Array, Array1, ArrayD, Dimension, IxDyn};

use super::arnoldi::Ritz;
use super::kfac::{Free, Kronecker, Layer};
use super::Method;
use crate::error::{Error, Result};

/// Named arrays (scalars as 1-element arrays).
pub type State = HashMap<String, ArrayD<f64>>;

fn err(msg: String) -> Error {
    Error::Value { arg: "curvature_file", msg }
}

fn scalar(v: f64) -> ArrayD<f64> {
    ArrayD::from_elem(IxDyn(&[1]), v)
}

fn get<D: Dimension>(st: &State, key: &str) -> Result<Array<f64, D>> {
    let a = st.get(key).ok_or_else(|| err(format!("has no array {key:?}: not a curvature file of this kind")))?;
    if !a.iter().all(|v| v.is_finite()) {
        return Err(err(format!("array {key:?} holds NaN or infinity")));
    }
    a.clone().into_dimensionality::<D>().map_err(|_| err(format!("array {key:?} has {} dimensions, not {}", a.ndim(), D::NDIM.unwrap_or(0))))
}

fn get_scalar(st: &State, key: &str) -> Result<f64> {
    let a: Array1<f64> = get(st, key)?;
    a.first().copied().ok_or_else(|| err(format!("array {key:?} is empty")))
}

fn method_code(m: Method) -> f64 {
    match m {
        Method::Arnoldi => 1.0,
        Method::Kfac => 2.0,
        Method::Ekfac => 3.0,
        Method::Direct | Method::Cg => 0.0,
    }
}

/// The header: what the state was built for.
pub fn header(method: Method, damping: f64, l2: f64, p: usize, total_weight: f64) -> State {
    [("method", method_code(method)), ("damping", damping), ("l2", l2), ("p", p as f64), ("total_weight", total_weight)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), scalar(v)))
        .collect()
}

/// `Err` naming `curvature_file` unless `st`'s header matches (bitwise: the same settings).
pub fn check_header(st: &State, method: Method, damping: f64, l2: f64, p: usize, total_weight: f64) -> Result<()> {
    let want = header(method, damping, l2, p, total_weight);
    for key in ["method", "p", "damping", "l2", "total_weight"] {
        let (got, w) = (get_scalar(st, key)?, want[key][0]);
        if got != w {
            return Err(err(format!("was computed with {key} = {got}, this influence has {key} = {w}: recompute it")));
        }
    }
    Ok(())
}

pub fn kronecker_state(k: &Kronecker) -> State {
    let mut st = State::new();
    st.insert("layers".into(), scalar(k.layers.len() as f64));
    for (i, l) in k.layers.iter().enumerate() {
        st.insert(format!("layer{i}.offset"), scalar(l.offset as f64));
        st.insert(format!("layer{i}.qs"), l.qs.clone().into_dyn());
        st.insert(format!("layer{i}.qa"), l.qa.clone().into_dyn());
        st.insert(format!("layer{i}.inv"), l.inv.clone().into_dyn());
        if let Some(f) = &l.free {
            st.insert(format!("layer{i}.qa_u"), f.qa_u.clone().into_dyn());
            st.insert(format!("layer{i}.cinv"), f.cinv.clone().into_dyn());
        }
    }
    if let Some((n, inv)) = &k.null {
        st.insert("null.basis".into(), n.clone().into_dyn());
        st.insert("null.inv".into(), inv.clone().into_dyn());
    }
    st
}

/// The inverse of [`kronecker_state`], its shapes checked against p parameters.
pub fn kronecker_from(st: &State, p: usize) -> Result<Kronecker> {
    let n_layers = get_scalar(st, "layers")? as usize;
    let mut layers = Vec::with_capacity(n_layers);
    for i in 0..n_layers {
        let offset = get_scalar(st, &format!("layer{i}.offset"))? as usize;
        let (qs, qa, inv) = (get(st, &format!("layer{i}.qs"))?, get(st, &format!("layer{i}.qa"))?, get(st, &format!("layer{i}.inv"))?);
        let free = match st.contains_key(&format!("layer{i}.qa_u")) {
            true => Some(Free { qa_u: get(st, &format!("layer{i}.qa_u"))?, cinv: get(st, &format!("layer{i}.cinv"))? }),
            false => None,
        };
        let l = Layer { offset, qs, qa, inv, free };
        let (rows, cols) = (l.qs.nrows(), l.qa.nrows());
        let square = l.qs.is_square() && l.qa.is_square() && l.inv.dim() == (rows, cols);
        let free_ok = l.free.as_ref().is_none_or(|f| f.qa_u.ncols() == cols && f.cinv.dim() == (rows, f.qa_u.nrows(), f.qa_u.nrows()));
        if !square || !free_ok || offset + rows * cols > p {
            return Err(err(format!("layer {i}'s arrays do not fit each other or p = {p}")));
        }
        layers.push(l);
    }
    let null = match st.contains_key("null.basis") {
        true => Some((get(st, "null.basis")?, get(st, "null.inv")?)),
        false => None,
    };
    if null.as_ref().is_some_and(|(n, inv): &(ndarray::Array2<f64>, Array1<f64>)| n.nrows() != p || n.ncols() != inv.len()) {
        return Err(err(format!("the null space's arrays do not fit p = {p}")));
    }
    Ok(Kronecker { layers, null })
}

pub fn ritz_state(r: &Ritz) -> State {
    let mut st = State::new();
    st.insert("ritz.vectors".into(), r.vectors.clone().into_dyn());
    st.insert("ritz.values".into(), r.values.clone().into_dyn());
    st.insert("ritz.residuals".into(), r.residuals.clone().into_dyn());
    st.insert("ritz.steps".into(), scalar(r.steps as f64));
    st.insert("ritz.restarts".into(), scalar(r.restarts as f64));
    st
}

/// The inverse of [`ritz_state`], its shapes checked against p parameters.
pub fn ritz_from(st: &State, p: usize) -> Result<Ritz> {
    let r = Ritz {
        vectors: get(st, "ritz.vectors")?,
        values: get(st, "ritz.values")?,
        residuals: get(st, "ritz.residuals")?,
        steps: get_scalar(st, "ritz.steps")? as usize,
        restarts: get_scalar(st, "ritz.restarts")? as usize,
    };
    let k = r.values.len();
    if r.vectors.dim() != (p, k) || r.residuals.len() != k || k == 0 {
        return Err(err(format!("the eigenpairs' arrays do not fit each other or p = {p}")));
    }
    Ok(r)
}
