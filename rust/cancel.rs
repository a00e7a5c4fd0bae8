//! The control channel of a long call: cooperative cancellation and progress.
//!
//! Streaming loops poll [`Cancel::check`] between row blocks and report the rows they finished
//! with [`Cancel::advance`]; the Python bindings set the flag on Ctrl-C and read the progress
//! from the calling thread to drive a callback or a progress bar.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

#[derive(Debug, Default)]
pub struct Cancel {
    /// Shared with children (see [`Cancel::child`]).
    cancelled: Arc<AtomicBool>,
    /// Passes over the data started so far.
    passes: AtomicUsize,
    done: AtomicUsize,
    total: AtomicUsize,
}

/// A snapshot of progress: the current pass (1-based) and rows finished out of its total.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub pass: usize,
    pub done: usize,
    pub total: usize,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }
    /// A channel for one of many sub-tasks (e.g. one refit among many): cancelling the parent
    /// cancels it, and its own progress is not what the parent reports.
    pub fn child(&self) -> Self {
        Self { cancelled: Arc::clone(&self.cancelled), ..Self::default() }
    }
    /// Ask every loop that polls this flag to stop at its next block boundary.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
    /// `Err(Interrupted)` once cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }
    /// A pass over `total` rows starts.
    pub fn begin(&self, total: usize) {
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total, Ordering::Relaxed);
    }
    /// `rows` more rows of the current pass are finished.
    pub fn advance(&self, rows: usize) {
        self.done.fetch_add(rows, Ordering::Relaxed);
    }
    pub fn progress(&self) -> Progress {
        Progress { pass: self.passes.load(Ordering::Relaxed), done: self.done.load(Ordering::Relaxed), total: self.total.load(Ordering::Relaxed) }
    }
}
