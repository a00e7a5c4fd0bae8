//! Cooperative cancellation: long loops poll a [`Cancel`] flag between row blocks.
//! The Python bindings set it on Ctrl-C; Rust callers may set it from any thread.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    pub fn new() -> Self {
        Self(AtomicBool::new(false))
    }
    /// Ask every loop that polls this flag to stop at its next block boundary.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// `Err(Interrupted)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
}

/// A flag that is never set, for callers that do not need cancellation.
pub static NEVER: Cancel = Cancel(AtomicBool::new(false));
