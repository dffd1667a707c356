//! Bollinger bands as `TA_BBANDS(N, up, down, SMA)` defines them: the middle band is the SMA
//! (TA-Lib's arithmetic, bit-identical), σ is the **population** standard deviation of the same
//! window, `upper = middle + up·σ`, `lower = middle − down·σ`; σ is 0 when the variance is below
//! TA-Lib's epsilon. First output at index N−1.
//!
//! The variance is *not* TA-Lib's historical `Σx²/N − middle²` from a running sum of squares:
//! with prices near 1e5 that cancels ~10 significant digits and its running sum drifts, and the
//! TA-Lib 0.8 C library no longer does it either (its bands match an exact two-pass variance to
//! ~1e-15). Here the sums are taken around an anchor near the window's mean,
//! `var = Σ(x−K)²/N − (Σ(x−K)/N)²`, updated in O(1) per input and recomputed exactly from the
//! window every N inputs (amortised O(1)), which keeps both the cancellation and the drift at
//! the level of a few ULPs.

use super::ring::Ring;
use super::ta_is_zero_or_neg;

/// One Bollinger reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BollingerOutput {
    pub upper: f64,
    pub middle: f64,
    pub lower: f64,
}

#[derive(Clone, Debug)]
pub struct Bollinger {
    period: usize,
    k_up: f64,
    k_down: f64,
    ring: Ring,
    count: usize,
    /// Running sum without the window's oldest value (TA-Lib's SMA total).
    sum: f64,
    /// Anchor K and the window's Σ(x−K), Σ(x−K)².
    anchor: f64,
    dev_sum: f64,
    dev_sq: f64,
    /// Inputs since the sums were last recomputed from the window.
    since_anchor: usize,
    stddev: f64,
    value: BollingerOutput,
}

impl Bollinger {
    /// `period` ≥ 2 (TA-Lib's range); `k_up` / `k_down` are the deviation multipliers.
    pub fn new(period: usize, k_up: f64, k_down: f64) -> Self {
        assert!(period >= 2, "Bollinger period must be ≥ 2 (TA-Lib's range)");
        Bollinger {
            period,
            k_up,
            k_down,
            ring: Ring::new(period),
            count: 0,
            sum: 0.0,
            anchor: 0.0,
            dev_sum: 0.0,
            dev_sq: 0.0,
            since_anchor: 0,
            stddev: f64::NAN,
            value: BollingerOutput {
                upper: f64::NAN,
                middle: f64::NAN,
                lower: f64::NAN,
            },
        }
    }
    pub fn period(&self) -> usize {
        self.period
    }
    pub fn lookback(&self) -> usize {
        self.period - 1
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<BollingerOutput> {
        if self.count == 0 {
            self.anchor = x;
        }
        self.sum += x;
        let leaving = self.ring.push(x);
        let d = x - self.anchor;
        self.dev_sum += d;
        self.dev_sq += d * d;
        if self.count + 1 < self.period {
            self.count += 1;
            return None;
        }
        let n = self.period as f64;
        if self.count == self.period {
            // The window was full before this input: `leaving` drops out of it.
            let d_old = leaving - self.anchor;
            self.dev_sum -= d_old;
            self.dev_sq -= d_old * d_old;
        }
        self.count = self.period;
        let middle = self.sum / n;
        self.sum -= self.ring.oldest();
        self.since_anchor += 1;
        if self.since_anchor >= self.period {
            self.reanchor(middle);
        }
        let mean_dev = self.dev_sum / n;
        let var = self.dev_sq / n - mean_dev * mean_dev;
        self.stddev = if ta_is_zero_or_neg(var) {
            0.0
        } else {
            var.sqrt()
        };
        self.value = BollingerOutput {
            upper: middle + self.stddev * self.k_up,
            middle,
            lower: middle - self.stddev * self.k_down,
        };
        Some(self.value)
    }
    /// Recomputes the deviation sums exactly from the window, around its current mean.
    #[cold]
    fn reanchor(&mut self, mean: f64) {
        self.anchor = mean;
        let (mut s, mut s2) = (0.0, 0.0);
        for &v in self.ring.values() {
            let d = v - mean;
            s += d;
            s2 += d * d;
        }
        self.dev_sum = s;
        self.dev_sq = s2;
        self.since_anchor = 0;
    }
    /// Population standard deviation of the latest window.
    pub fn stddev(&self) -> Option<f64> {
        self.is_ready().then_some(self.stddev)
    }
    pub fn value(&self) -> Option<BollingerOutput> {
        self.is_ready().then_some(self.value)
    }
    pub fn is_ready(&self) -> bool {
        self.count >= self.period
    }
    pub fn reset(&mut self) {
        self.ring.reset();
        self.count = 0;
        self.sum = 0.0;
        self.anchor = 0.0;
        self.dev_sum = 0.0;
        self.dev_sq = 0.0;
        self.since_anchor = 0;
        self.stddev = f64::NAN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_by_hand_use_population_stddev() {
        // Window 2, 4, 4, 4, 5, 5, 7, 9: mean 5, population variance 4 → σ = 2.
        let mut b = Bollinger::new(8, 2.0, 1.0);
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        for &x in &xs[..7] {
            assert_eq!(b.update(x), None);
        }
        let o = b.update(xs[7]).unwrap();
        assert_eq!(o.middle, 5.0);
        assert_eq!(b.stddev(), Some(2.0));
        assert_eq!(o.upper, 9.0);
        assert_eq!(o.lower, 3.0);
        // Slide: 4, 4, 4, 5, 5, 7, 9, 10 → mean 6, Σx² = 328, var = 41 − 36 = 5.
        let o = b.update(10.0).unwrap();
        assert_eq!(o.middle, 6.0);
        assert!((b.stddev().unwrap() - 5f64.sqrt()).abs() < 1e-12);
        b.reset();
        assert_eq!(b.value(), None);
    }

    /// Population σ of every window of a long, high-priced series against a two-pass loop.
    #[test]
    fn stddev_matches_two_pass_on_long_series() {
        let xs: Vec<f64> = (0..20_000)
            .map(|i| 100_000.0 + (i as f64 * 0.01).sin() * 3_000.0 + ((i * 7) % 13) as f64 * 0.1)
            .collect();
        let n = 20;
        let mut b = Bollinger::new(n, 2.0, 2.0);
        for (i, &x) in xs.iter().enumerate() {
            let got = b.update(x);
            if i + 1 < n {
                assert!(got.is_none());
                continue;
            }
            let w = &xs[i + 1 - n..=i];
            let mean = w.iter().sum::<f64>() / n as f64;
            let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            let sd = b.stddev().unwrap();
            assert!(
                (sd - var.sqrt()).abs() <= 1e-9 * var.sqrt().max(1e-3),
                "{i}: {sd} vs {}",
                var.sqrt()
            );
        }
    }

    #[test]
    fn flat_window_has_zero_width() {
        let mut b = Bollinger::new(3, 2.0, 2.0);
        b.update(7.0);
        b.update(7.0);
        let o = b.update(7.0).unwrap();
        assert_eq!((o.upper, o.middle, o.lower), (7.0, 7.0, 7.0));
    }
}
