//! [`SplitAllocator`]: a global allocator for the extension that serves the largest blocks from
//! the system allocator and everything else from another one (the Python extension: mimalloc).
//!
//! Why (rust/python/mod.rs sets it): mimalloc serves the kernels' block-sized buffers (hundreds
//! of KiB, allocated and freed at a high rate), which glibc would serve with a fresh mmap (page
//! faults on every block) whenever a process tunes it, as Dask's workers do
//! (MALLOC_TRIM_THRESHOLD_). But for the largest arrays (a score matrix, the private copy of X, a
//! large Hessian) glibc is the better one: it maps them fresh and unmaps them when freed, so a
//! zeroed one needs no fill (the kernel zeroes each page on first touch, on whichever thread
//! writes it first), where mimalloc reuses a freed region and zero-fills it first on one thread:
//! for W1's 400 MB score matrix an extra single-threaded pass before the product
//! (bench/RESULTS.md, issue 14).

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of this many bytes or more are the system allocator's (glibc maps every allocation
/// this large on its own with its default settings).
pub const SYSTEM_FROM_BYTES: usize = 32 << 20;

/// Blocks of [`SYSTEM_FROM_BYTES`] or more from [`System`], smaller ones from `A`.
pub struct SplitAllocator<A>(pub A);

fn system(size: usize) -> bool {
    size >= SYSTEM_FROM_BYTES
}

// SAFETY: every call is forwarded to the allocator chosen by the block's size, which the
// GlobalAlloc contract fixes between alloc and dealloc (`layout` is the allocation's layout);
// realloc moves a block between the two when a resize crosses the threshold.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SplitAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees (non-zero size)
        unsafe {
            match system(layout.size()) {
                true => System.alloc(layout),
                false => self.0.alloc(layout),
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in alloc
        unsafe {
            match system(layout.size()) {
                true => System.alloc_zeroed(layout),
                false => self.0.alloc_zeroed(layout),
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the allocator `layout.size()` selects (see alloc)
        unsafe {
            match system(layout.size()) {
                true => System.dealloc(ptr, layout),
                false => self.0.dealloc(ptr, layout),
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: within one allocator, forwarded as is; across the threshold, a new block from
        // the other one (the new layout is valid: the caller guarantees that new_size rounded up
        // to the alignment does not overflow isize), the contents copied, the old block freed
        // by its own allocator
        unsafe {
            match (system(layout.size()), system(new_size)) {
                (true, true) => System.realloc(ptr, layout, new_size),
                (false, false) => self.0.realloc(ptr, layout, new_size),
                _ => {
                    let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                    if !new.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicIsize, Ordering};

    use super::*;

    /// The system allocator, counting the blocks it holds.
    struct Counting(AtomicIsize);

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.0.fetch_add(1, Ordering::SeqCst);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.0.fetch_sub(1, Ordering::SeqCst);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[test]
    fn large_blocks_are_the_systems_and_resizes_across_the_threshold_keep_their_contents() {
        let a = SplitAllocator(Counting(AtomicIsize::new(0)));
        let held = || a.0 .0.load(Ordering::SeqCst);
        let small = Layout::from_size_align(1 << 20, 8).unwrap();
        let big = Layout::from_size_align(SYSTEM_FROM_BYTES + 4096, 8).unwrap();
        // SAFETY: non-zero layouts; every block is freed with the layout it has
        unsafe {
            let p = a.alloc_zeroed(small);
            assert!(!p.is_null() && *p.add(12345) == 0 && held() == 1);
            *p.add(7) = 42;
            let q = a.realloc(p, small, big.size()); // to the system allocator
            assert!(!q.is_null() && *q.add(7) == 42 && held() == 0);
            *q.add(SYSTEM_FROM_BYTES) = 9;
            let r = a.realloc(q, big, 64); // and back
            assert!(!r.is_null() && *r.add(7) == 42 && held() == 1);
            a.dealloc(r, Layout::from_size_align(64, 8).unwrap());
            let z = a.alloc_zeroed(big);
            assert!(!z.is_null() && *z.add(SYSTEM_FROM_BYTES + 100) == 0 && held() == 0);
            a.dealloc(z, big);
        }
        assert_eq!(held(), 0);
    }
}
