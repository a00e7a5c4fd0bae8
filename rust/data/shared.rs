//! Read-only arrays whose memory is kept alive by an owner: an array of our own, or (from the
//! bindings) the NumPy array the caller passed, so a training set is held without a copy.

use std::any::Any;
use std::sync::Arc;

use ndarray::{Array, ArrayView, Dimension, Ix1, Ix2};

/// A read-only view together with whatever keeps its memory alive.
pub struct Shared<T: 'static, D: Dimension = Ix2> {
    view: ArrayView<'static, T, D>,
    _owner: Arc<dyn Any + Send + Sync>,
}

/// A one-dimensional [`Shared`] array (CSR index and value arrays).
pub type Shared1<T> = Shared<T, Ix1>;

// SAFETY: the view is read-only and its memory lives as long as `_owner`, which is Send + Sync;
// T: Sync makes shared reads from several threads sound.
unsafe impl<T: Sync + 'static, D: Dimension> Send for Shared<T, D> {}
unsafe impl<T: Sync + 'static, D: Dimension> Sync for Shared<T, D> {}

impl<T: Send + Sync + 'static, D: Dimension + 'static> Shared<T, D> {
    /// Own `a` (its heap buffer does not move when the handle does).
    pub fn new(a: Array<T, D>) -> Self {
        let owner = Arc::new(a);
        // SAFETY: the buffer lives in the Arc kept beside the view and is never written again.
        let view = unsafe { std::mem::transmute::<ArrayView<'_, T, D>, ArrayView<'static, T, D>>(owner.view()) };
        Self { view, _owner: owner }
    }

    /// A view of memory kept alive by `owner` (e.g. the Python object that holds it).
    ///
    /// # Safety
    /// The memory behind `view` must stay valid and unmoved for as long as `owner` is alive, and
    /// must not be written through any other path while this handle reads it.
    pub unsafe fn borrowed(view: ArrayView<'_, T, D>, owner: Arc<dyn Any + Send + Sync>) -> Self {
        let view = unsafe { std::mem::transmute::<ArrayView<'_, T, D>, ArrayView<'static, T, D>>(view) };
        Self { view, _owner: owner }
    }

    pub fn view(&self) -> ArrayView<'_, T, D> {
        self.view.view()
    }
}

impl<T: Send + Sync + 'static> Shared1<T> {
    /// The elements as a slice (the arrays this is made from are contiguous).
    pub fn as_slice(&self) -> &[T] {
        self.view.as_slice().expect("Shared1 is built from contiguous arrays")
    }
}
