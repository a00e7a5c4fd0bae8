//! One pass over a group of rows that gives both what [`super::RowPrints`] records of it: its
//! XXH3-64 hash (bit for bit `xxhash_rust::xxh3::xxh3_64` of its bytes) and whether all its
//! values are finite. The group's first read comes from memory: hashing and testing it in one
//! sweep reads it once instead of twice, and on CPUs with AVX2 (detected at run time: wheels are
//! built for baseline x86-64, where the hash crate is compiled for SSE2 alone) the stripe loop
//! runs 256 bits wide, about twice as fast once the group is in cache.
//!
//! XXH3's long-input loop (inputs above 240 bytes), as in its reference implementation: the
//! input in 64-byte stripes, each folded into 8 64-bit accumulators with 8 bytes of the secret
//! per stripe (`acc[i ^ 1] += v_i; acc[i] += lo32(v_i ^ k_i) * hi32(v_i ^ k_i)`), the
//! accumulators scrambled after every 16 stripes, then the last 64 bytes once more and a merge.
//! Finiteness rides along: a value is NaN or infinite exactly when its exponent bits are all ones.

/// Values whose bits the fingerprint tests for finiteness, word by 64-bit word.
pub trait Fingerprinted: Copy + Into<f64> {
    /// Exponent masks of the values a little-endian 64-bit word holds (one f64, or two f32).
    const EXPONENTS: [u64; 2];
}

impl Fingerprinted for f64 {
    const EXPONENTS: [u64; 2] = [0x7FF0_0000_0000_0000; 2];
}

impl Fingerprinted for f32 {
    const EXPONENTS: [u64; 2] = [0x7F80_0000, 0x7F80_0000 << 32];
}

/// The bytes of a float slice (f32 and f64 have no padding and every bit pattern is a value).
fn bytes<T: Fingerprinted>(values: &[T]) -> &[u8] {
    // SAFETY: a slice of plain floats is also a slice of size_of_val(values) initialised bytes
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

/// XXH3-64 of the bytes of `values` and whether every value is finite.
pub fn hash_and_finite<T: Fingerprinted>(values: &[T]) -> (u64, bool) {
    let bytes = bytes(values);
    if bytes.len() <= MID_SIZE_MAX || cfg!(target_endian = "big") {
        return (xxhash_rust::xxh3::xxh3_64(bytes), crate::error::all_finite(values));
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2
        return unsafe { avx2::long::<T>(bytes) };
    }
    scalar::long::<T>(bytes)
}

const STRIPE: usize = 64;
const STRIPES_PER_BLOCK: usize = (SECRET.len() - STRIPE) / 8;
const BLOCK: usize = STRIPE * STRIPES_PER_BLOCK;
const MID_SIZE_MAX: usize = 240;
const SCRAMBLE_KEY: usize = SECRET.len() - STRIPE;
const LAST_STRIPE_KEY: usize = SECRET.len() - STRIPE - 7;
const MERGE_KEY: usize = 11;
const PRIME32_1: u64 = 0x9E37_79B1;
const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const INITIAL_ACC: [u64; 8] =
    [0xC2B2_AE3D, PRIME64_1, 0xC2B2_AE3D_27D4_EB4F, 0x1656_67B1_9E37_79F9, 0x85EB_CA77_C2B2_AE63, 0x85EB_CA77, 0x27D4_EB2F_1656_67C5, PRIME32_1];

/// XXH3's default secret (kSecret).
const SECRET: [u8; 192] = [
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c, //
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f, //
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21, //
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c, //
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3, //
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8, //
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d, //
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, //
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb, //
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e, //
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce, //
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e, //
];

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// XXH3's long loop over `$bytes`: `$stripe` runs with `$s` bound to the bytes from a stripe's
/// start and `$key` to its secret offset, `$scramble` closes every block of 16 stripes.
macro_rules! long_loop {
    ($bytes:expr, |$s:ident, $key:ident| $stripe:block, $scramble:block) => {{
        let b: &[u8] = $bytes;
        let blocks = (b.len() - 1) / BLOCK;
        for blk in 0..blocks {
            for i in 0..STRIPES_PER_BLOCK {
                let ($s, $key) = (&b[blk * BLOCK + i * STRIPE..], i * 8);
                $stripe
            }
            $scramble
        }
        for i in 0..((b.len() - 1) - BLOCK * blocks) / STRIPE {
            let ($s, $key) = (&b[blocks * BLOCK + i * STRIPE..], i * 8);
            $stripe
        }
        let ($s, $key) = (&b[b.len() - STRIPE..], LAST_STRIPE_KEY);
        $stripe
    }};
}

/// XXH3's merge of the 8 accumulators into the hash of `len` bytes.
fn merge(acc: &[u64; 8], len: usize) -> u64 {
    let mut h = (len as u64).wrapping_mul(PRIME64_1);
    for i in 0..4 {
        let a = acc[2 * i] ^ word(&SECRET, MERGE_KEY + 16 * i);
        let b = acc[2 * i + 1] ^ word(&SECRET, MERGE_KEY + 16 * i + 8);
        let p = a as u128 * b as u128;
        h = h.wrapping_add(p as u64 ^ (p >> 64) as u64);
    }
    h ^= h >> 37;
    h = h.wrapping_mul(0x1656_6791_9E37_79F9);
    h ^ (h >> 32)
}

/// Any CPU: one 64-bit lane at a time.
mod scalar {
    use super::*;

    pub fn long<T: Fingerprinted>(bytes: &[u8]) -> (u64, bool) {
        let mut acc = INITIAL_ACC;
        let [m0, m1] = T::EXPONENTS;
        let mut bad = false;
        long_loop!(
            bytes,
            |s, key| {
                for i in 0..8 {
                    let v = word(s, 8 * i);
                    let dk = v ^ word(&SECRET, key + 8 * i);
                    acc[i ^ 1] = acc[i ^ 1].wrapping_add(v);
                    acc[i] = acc[i].wrapping_add((dk & 0xFFFF_FFFF).wrapping_mul(dk >> 32));
                    bad |= ((v & m0) == m0) | ((v & m1) == m1);
                }
            },
            {
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = ((*a ^ (*a >> 47)) ^ word(&SECRET, SCRAMBLE_KEY + 8 * i)).wrapping_mul(PRIME32_1);
                }
            }
        );
        (merge(&acc, bytes.len()), !bad)
    }
}

/// x86-64 with AVX2: four lanes per instruction, the reference implementation's AVX2 path.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::*;

    /// 32 bytes from the start of a slice (bounds-checked), unaligned.
    macro_rules! load {
        ($b:expr) => {{
            let b: &[u8] = &$b[..32];
            // SAFETY: 32 readable bytes
            unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
        }};
    }

    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn long<T: Fingerprinted>(bytes: &[u8]) -> (u64, bool) {
        // (x86-64 is little-endian: the u64 lanes' bytes are their little-endian encodings)
        let mut acc = [_mm256_loadu_si256(INITIAL_ACC.as_ptr().cast()), _mm256_loadu_si256(INITIAL_ACC[4..].as_ptr().cast())];
        let (m0, m1) = (_mm256_set1_epi64x(T::EXPONENTS[0] as i64), _mm256_set1_epi64x(T::EXPONENTS[1] as i64));
        let mut bad = _mm256_setzero_si256();
        let prime = _mm256_set1_epi64x(PRIME32_1 as i64);
        long_loop!(
            bytes,
            |s, key| {
                for (j, a) in acc.iter_mut().enumerate() {
                    let v = load!(s[32 * j..]);
                    let dk = _mm256_xor_si256(v, load!(SECRET[key + 32 * j..]));
                    // lo32(dk) * hi32(dk), plus v with its 64-bit lanes swapped pairwise (acc[i ^ 1] += v_i)
                    let product = _mm256_mul_epu32(dk, _mm256_srli_epi64::<32>(dk));
                    let swapped = _mm256_shuffle_epi32::<0b01_00_11_10>(v);
                    *a = _mm256_add_epi64(*a, _mm256_add_epi64(product, swapped));
                    let exps = _mm256_or_si256(_mm256_cmpeq_epi64(_mm256_and_si256(v, m0), m0), _mm256_cmpeq_epi64(_mm256_and_si256(v, m1), m1));
                    bad = _mm256_or_si256(bad, exps);
                }
            },
            {
                for (j, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_xor_si256(*a, _mm256_srli_epi64::<47>(*a));
                    let x = _mm256_xor_si256(x, load!(SECRET[SCRAMBLE_KEY + 32 * j..]));
                    // x * PRIME32_1 mod 2^64 from two 32 x 32 -> 64-bit products
                    let lo = _mm256_mul_epu32(x, prime);
                    let hi = _mm256_mul_epu32(_mm256_srli_epi64::<32>(x), prime);
                    *a = _mm256_add_epi64(lo, _mm256_slli_epi64::<32>(hi));
                }
            }
        );
        let mut out = [0u64; 8];
        _mm256_storeu_si256(out.as_mut_ptr().cast(), acc[0]);
        _mm256_storeu_si256(out[4..].as_mut_ptr().cast(), acc[1]);
        (merge(&out, bytes.len()), _mm256_testz_si256(bad, bad) == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect()
    }

    fn paths<T: Fingerprinted>(v: &[T]) -> Vec<(u64, bool)> {
        let bytes = bytes(v);
        let mut out = vec![hash_and_finite(v)];
        if bytes.len() > MID_SIZE_MAX {
            out.push(scalar::long::<T>(bytes));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(unsafe { avx2::long::<T>(bytes) });
            }
        }
        out
    }

    #[test]
    fn every_path_is_xxh3_64_of_the_bytes_at_every_length() {
        // lengths across the short/long switch, block edges (1024 bytes) and the last stripe
        let v = values(3000, 7);
        for n in (0..3000).filter(|n| n % 61 == 0 || (n * 8) % 1024 <= 16 || (25..40).contains(n)) {
            let want = xxhash_rust::xxh3::xxh3_64(bytes(&v[..n]));
            for got in paths(&v[..n]) {
                assert_eq!(got, (want, true), "{n} f64");
            }
            let w: Vec<f32> = v[..n].iter().map(|&x| x as f32).collect();
            let want = xxhash_rust::xxh3::xxh3_64(bytes(&w));
            for got in paths(&w) {
                assert_eq!(got, (want, true), "{n} f32");
            }
        }
    }

    #[test]
    fn a_nan_or_infinity_anywhere_is_seen_by_every_path() {
        for n in [40, 129, 1000, 1031] {
            for at in (0..n).filter(|i| i % 7 == 0 || *i + 3 >= n || *i < 3) {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    let mut v = values(n, 3);
                    v[at] = bad;
                    for got in paths(&v) {
                        assert!(!got.1, "f64 n {n} at {at}");
                    }
                    let mut w: Vec<f32> = values(n, 3).iter().map(|&x| x as f32).collect();
                    w[at] = bad as f32;
                    for got in paths(&w) {
                        assert!(!got.1, "f32 n {n} at {at}");
                    }
                }
            }
        }
        // the largest finite values and subnormals are finite
        let v = [f64::MAX, f64::MIN, f64::MIN_POSITIVE / 4.0, -0.0];
        let v: Vec<f64> = v.iter().cycle().take(100).copied().collect();
        assert!(paths(&v).iter().all(|p| p.1));
        let w = [f32::MAX, f32::MIN, f32::MIN_POSITIVE / 4.0, -0.0];
        let w: Vec<f32> = w.iter().cycle().take(100).copied().collect();
        assert!(paths(&w).iter().all(|p| p.1));
    }
}
