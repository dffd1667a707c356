//! Bollinger bands as `TA_BBANDS(N, up, down, SMA)` computes them: the middle band is TA-Lib's
//! SMA and the deviation is the **population** standard deviation of the window, taken the way
//! TA-Lib's `stddev_using_precalc_ma` does: `var = Σx²/N − middle²` from a running sum of
//! squares (0 when that is below TA-Lib's epsilon), `upper = middle + up·σ`,
//! `lower = middle − down·σ`. First output at index N−1.

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
    /// Running sums of x and x² without the window's oldest value (TA-Lib's carried totals).
    sum: f64,
    sum_sq: f64,
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
            sum_sq: 0.0,
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
        self.sum += x;
        self.sum_sq += x * x;
        self.ring.push(x);
        if self.count + 1 < self.period {
            self.count += 1;
            return None;
        }
        self.count = self.period;
        let n = self.period as f64;
        let oldest = self.ring.oldest();
        let middle = self.sum / n;
        self.sum -= oldest;
        let mut var = self.sum_sq / n;
        self.sum_sq -= oldest * oldest;
        var -= middle * middle;
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
        self.sum_sq = 0.0;
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

    #[test]
    fn flat_window_has_zero_width() {
        let mut b = Bollinger::new(3, 2.0, 2.0);
        b.update(7.0);
        b.update(7.0);
        let o = b.update(7.0).unwrap();
        assert_eq!((o.upper, o.middle, o.lower), (7.0, 7.0, 7.0));
    }
}
