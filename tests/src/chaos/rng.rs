//! The campaign's only source of chance: a seeded SplitMix64 generator, and the derivation of each
//! scenario's seed from the campaign seed and the scenario's index (so any scenario can be rerun
//! alone from the two numbers a failure prints).

/// A small seeded generator (SplitMix64): the same seed gives the same draws on every machine.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }

    /// An index drawn by weight.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// The seed of scenario `index` of the campaign seeded `campaign`.
pub fn scenario_seed(campaign: u64, index: usize) -> u64 {
    let mut r = Rng::new(campaign ^ (index as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    r.next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_repeat_for_a_seed_and_differ_between_seeds() {
        let draw = |s| {
            let mut r = Rng::new(s);
            (0..8).map(|_| r.below(1000)).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        assert_ne!(draw(42), draw(43));
        assert_ne!(scenario_seed(1, 0), scenario_seed(1, 1));
        assert_eq!(scenario_seed(9, 5), scenario_seed(9, 5));
    }

    #[test]
    fn ranges_and_weights_stay_in_bounds() {
        let mut r = Rng::new(7);
        let mut seen = [0u32; 3];
        for _ in 0..3000 {
            let x = r.range(1, 3);
            assert!((1..=3).contains(&x));
            seen[r.weighted(&[1, 0, 3])] += 1;
        }
        assert_eq!(seen[1], 0, "a zero weight is never drawn");
        assert!(seen[2] > seen[0] * 2, "{seen:?}");
    }
}
