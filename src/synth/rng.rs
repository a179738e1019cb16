//! The generator's own PRNG: SplitMix64, hand-written so that output never changes when a
//! dependency changes its algorithm. Every stream is derived from (seed, stream tag, index),
//! which makes members independent of each other and lets generation stream.

/// Golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function (a strong 64-bit mixer).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A small deterministic random stream.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// Stream `tag` number `index` of data set `seed`.
    pub fn derive(seed: u64, tag: u64, index: u64) -> Self {
        let s = mix(mix(seed ^ GAMMA).wrapping_add(tag.wrapping_mul(GAMMA)) ^ index);
        Rng {
            state: mix(s.wrapping_add(index.wrapping_mul(0xD6E8_FEB8_6659_FD93))),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// Uniform in `0..n` (n > 0); the tiny modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// Money with cents, in `lo..hi` dollars.
    pub fn money(&mut self, lo: u64, hi: u64) -> f64 {
        let cents = lo * 100 + self.below((hi - lo) * 100);
        cents as f64 / 100.0
    }
}

/// Stream tags, so that adding a new stream never shifts an existing one.
pub mod tag {
    pub const HOUSEHOLD: u64 = 1;
    pub const MEMBER: u64 = 2;
    pub const CLINICAL: u64 = 3;
    pub const TRAITS: u64 = 4;
    pub const POOL: u64 = 5;
    pub const COLLIDE: u64 = 6;
}

/// A deterministic choice of about `per_mille`/1000 of the keys, made from the key alone and
/// not from the random stream: data chosen this way can change without shifting everything
/// generated after it.
pub fn share(key: &str, per_mille: u64) -> bool {
    let h = key
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| mix(h ^ u64::from(b)));
    h % 1000 < per_mille
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(1, 2, 3).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::derive(1, 2, 3).next_u64(),
            Rng::derive(1, 2, 4).next_u64()
        );
        assert_ne!(
            Rng::derive(1, 2, 3).next_u64(),
            Rng::derive(2, 2, 3).next_u64()
        );
        // Pinned value: changing the algorithm changes every data set; do it on purpose only.
        assert_eq!(mix(0), 0);
        assert_eq!(mix(1), 0x5692_161D_100B_05E5);
    }
}
