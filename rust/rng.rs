//! SplitMix64 (Steele, Lea & Flood 2014): the small, well-mixed, seedable generator behind every
//! seeded draw in the core (Adam's batch order, sampled K-FAC targets).

pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in 0..n (Lemire's multiply-shift; the bias is below 2^-40 for the n used here).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform(); // (0, 1]
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
    /// Poisson(mu): inversion by sequential search up to mu = 100, above it the normal
    /// approximation N(mu, mu) rounded (where only the variance mu matters).
    pub fn poisson(&mut self, mu: f64) -> f64 {
        if mu > 100.0 {
            return (mu + mu.sqrt() * self.normal()).round().max(0.0);
        }
        let (u, mut p, mut k) = (self.uniform(), (-mu).exp(), 0.0);
        let mut cdf = p;
        while u > cdf && p > 0.0 {
            k += 1.0;
            p *= mu / k;
            cdf += p;
        }
        k
    }
}
