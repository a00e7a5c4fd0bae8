//! Running core calls from Python: the GIL released, Ctrl-C and progress callbacks served from
//! the calling thread, panics turned into `InternalError`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;

use super::errors::InternalError;
use crate::Cancel;

/// Run `f` with the GIL released on a worker thread while this thread polls for Ctrl-C.
/// On a signal the work is cancelled at its next block boundary and the signal's exception
/// (KeyboardInterrupt) is raised. A panic in the core becomes `InternalError`, never a crash.
pub fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Cancel) -> crate::Result<T> + Send,
{
    run_with(py, None, f)
}

/// [`run`], calling `progress(pass, rows_done, rows_total)` from this thread whenever the
/// work has advanced (at most every 50 ms). An exception in the callback cancels the work.
pub fn run_with<T, F>(py: Python<'_>, progress: Option<&Py<PyAny>>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&Cancel) -> crate::Result<T> + Send,
{
    let cancel = Cancel::new();
    let mut last = None;
    std::thread::scope(|scope| {
        let (tx, mut rx) = mpsc::channel();
        let c = &cancel;
        scope.spawn(move || {
            let out = catch_unwind(AssertUnwindSafe(|| f(c)));
            let _ = tx.send(out);
        });
        loop {
            let (back, got) = py.detach(move || {
                let got = rx.recv_timeout(Duration::from_millis(50));
                (rx, got)
            });
            rx = back;
            match got {
                Ok(Ok(res)) => return res.map_err(PyErr::from),
                Ok(Err(panic)) => {
                    let msg = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                    return Err(InternalError::new_err(format!("upweight internal error (please report): {msg}")));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let mut outcome = py.check_signals();
                    if let (Ok(()), Some(cb)) = (&outcome, progress) {
                        let now = cancel.progress();
                        if last != Some(now) && now.pass > 0 {
                            last = Some(now);
                            outcome = cb.call1(py, (now.pass, now.done, now.total)).map(|_| ());
                        }
                    }
                    if let Err(e) = outcome {
                        cancel.cancel();
                        let _ = py.detach(move || rx.recv());
                        return Err(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(InternalError::new_err("upweight internal error: worker thread vanished")),
            }
        }
    })
}
