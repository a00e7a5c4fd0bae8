//! Size checks before large allocations. An allocation the machine cannot hold must be refused
//! with [`Error::Memory`] naming what it was for, never abort the process: a size whose byte
//! count overflows, one above the memory available (Linux: `MemAvailable` and the cgroup's
//! limit, so an overcommitting kernel does not OOM-kill us later), or one the allocator refuses
//! (an address-space limit such as `ulimit -v`).

use ndarray::{Array, Dimension, ShapeBuilder};

use crate::error::{Error, Result};

/// Below this many bytes an allocation is not worth a look at /proc.
const CHECK_FROM_BYTES: usize = 64 << 20;

/// The bytes of `dims` values of `elem` bytes each, or `Error::Memory` if that overflows.
pub fn bytes_of(what: &str, dims: &[usize], elem: usize) -> Result<usize> {
    dims.iter()
        .try_fold(elem, |acc, &d| acc.checked_mul(d))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| Error::Memory { msg: format!("{what} would need {} values: more than any machine can address", shape_text(dims)) })
}

/// `Err(Memory)` if `bytes` for `what` exceed the memory available now.
pub fn check_bytes(what: &str, bytes: usize) -> Result<()> {
    if bytes < CHECK_FROM_BYTES {
        return Ok(());
    }
    match available_bytes() {
        Some(avail) if bytes > avail => {
            Err(Error::Memory { msg: format!("{what} would need {} but {} of memory are available", human(bytes as f64), human(avail as f64)) })
        }
        _ => Ok(()),
    }
}

/// [`bytes_of`] then [`check_bytes`].
pub fn check(what: &str, dims: &[usize], elem: usize) -> Result<()> {
    check_bytes(what, bytes_of(what, dims, elem)?)
}

/// Values whose all-zero bit pattern is zero, so a zeroed allocation is a valid array.
pub trait Zeroed: Copy {}
impl Zeroed for f64 {}
impl Zeroed for f32 {}

/// `Array::zeros(shape)` that refuses instead of aborting (see the module docs).
pub fn zeros<T: Zeroed, D: Dimension, Sh: ShapeBuilder<Dim = D>>(what: &str, shape: Sh) -> Result<Array<T, D>> {
    let shape = shape.into_shape_with_order();
    let dims = shape.raw_dim().slice().to_vec();
    let bytes = bytes_of(what, &dims, std::mem::size_of::<T>())?;
    check_bytes(what, bytes)?;
    let len = bytes / std::mem::size_of::<T>();
    let data = zeroed_vec::<T>(len).ok_or_else(|| Error::Memory { msg: format!("{what}: the allocator refused {}", human(bytes as f64)) })?;
    Ok(Array::from_shape_vec(shape, data).expect("the length is the shape's product"))
}

fn zeroed_vec<T: Zeroed>(len: usize) -> Option<Vec<T>> {
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(len).ok()?;
    // SAFETY: layout has a non-zero size; T is f64 or f32, for which zero bytes are 0.0; the
    // pointer comes from the global allocator with T's layout and `len` elements, as
    // Vec::from_raw_parts requires.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout) as *mut T;
        if ptr.is_null() {
            return None;
        }
        advise_huge_pages(ptr as *mut u8, layout.size());
        Some(Vec::from_raw_parts(ptr, len, len))
    }
}

/// Arrays from this size on are backed by transparent huge pages where the kernel offers them
/// only on request (THP "madvise", a common default): NumPy asks for them on its own large
/// arrays, and a 400 MB score matrix first touched in 4 KiB pages took 100 000 page faults,
/// ~1.3x the cost of the product writing it (bench/RESULTS.md, issue 14).
#[cfg(target_os = "linux")]
const HUGE_PAGES_FROM_BYTES: usize = 4 << 20;

/// madvise(MADV_HUGEPAGE) on the 2 MiB-aligned part of a fresh allocation, before its first
/// touch (a hint: ignored where unsupported; pages already touched keep their size).
#[cfg(target_os = "linux")]
fn advise_huge_pages(ptr: *mut u8, bytes: usize) {
    const HUGE: usize = 2 << 20;
    if bytes < HUGE_PAGES_FROM_BYTES {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: [start, end) lies inside the allocation just made; advice does not change its contents
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge_pages(_ptr: *mut u8, _bytes: usize) {}

/// The memory this process may still use, if the platform says: the smaller of the kernel's
/// `MemAvailable` and the room left under the cgroup's limit.
pub fn available_bytes() -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut take = |v: usize| best = Some(best.map_or(v, |b| b.min(v)));
    if let Ok(info) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(kb) = info.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|r| r.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        {
            take(kb.saturating_mul(1024));
        }
    }
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<usize>().ok());
    for (limit, usage) in [
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ] {
        if let (Some(l), Some(u)) = (read(limit), read(usage)) {
            take(l.saturating_sub(u));
        }
    }
    best
}

fn shape_text(dims: &[usize]) -> String {
    dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" x ")
}

fn human(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (bytes, 0);
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_refused_not_aborted() {
        let err = zeros::<f64, _, _>("the Hessian", (1usize << 40, 1usize << 40)).unwrap_err();
        assert!(matches!(&err, Error::Memory { msg } if msg.contains("the Hessian")), "{err:?}");
        if let Some(avail) = available_bytes() {
            let n = (avail / 8).saturating_mul(4).max(1 << 30); // 4x what is available
            assert!(matches!(zeros::<f64, _, _>("a block", n), Err(Error::Memory { .. })));
        }
        let ok: ndarray::Array2<f64> = zeros("small", (3, 4).f()).unwrap();
        assert!(ok.iter().all(|&v| v == 0.0) && ok.t().is_standard_layout());
    }
}
