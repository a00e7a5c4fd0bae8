//! The `.npy` header parser on arbitrary bytes: never panics; an accepted header describes a
//! 2-d float array with at least one row whose values fit in the bytes that follow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upweight::data::{NpyDtype, NpyHeader};

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    if let Ok(h) = NpyHeader::read(&mut r, data.len() as u64) {
        let item = if h.dtype == NpyDtype::F64 { 8 } else { 4 };
        assert!(h.n > 0);
        assert!(h.offset as usize <= data.len());
        let values = (h.n as u128) * (h.d as u128) * item;
        assert!(h.offset as u128 + values <= data.len() as u128, "accepted a truncated file: {h:?}");
    }
});
