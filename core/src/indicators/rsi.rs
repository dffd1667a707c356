//! Relative strength index, Wilder's smoothing, as TA-Lib's `TA_RSI` computes it (classic mode,
//! unstable period 0): the first average gain/loss is the mean of the first N changes (inputs
//! 1..=N against their predecessors), later ones are `(prev·(N−1) + today)/N`, and
//! `RSI = 100·gain/(gain + loss)` (0 when gain + loss is zero within TA-Lib's epsilon). First
//! output at index N.
//!
//! The division by N is a multiplication by the precomputed 1/N, which is what the TA-Lib 0.8 C
//! library the golden fixtures come from does: its outputs are bit-identical to this form (checked
//! for N = 2..39), not to a true division. It also keeps the division out of the recurrence's
//! dependency chain. Gains and losses are selected without a branch (a price change's sign is
//! unpredictable); the arithmetic is unchanged by that.

use super::ta_is_zero;

#[derive(Clone, Debug)]
pub struct Rsi {
    period: usize,
    /// N − 1 and 1/N as f64.
    keep: f64,
    inv: f64,
    /// Inputs seen, capped at `period + 1`.
    count: usize,
    prev: f64,
    gain: f64,
    loss: f64,
    value: f64,
}

impl Rsi {
    pub fn new(period: usize) -> Self {
        assert!(period >= 2, "RSI period must be ≥ 2 (TA-Lib's range)");
        Rsi {
            period,
            keep: (period - 1) as f64,
            inv: 1.0 / period as f64,
            count: 0,
            prev: 0.0,
            gain: 0.0,
            loss: 0.0,
            value: f64::NAN,
        }
    }
    pub fn period(&self) -> usize {
        self.period
    }
    pub fn lookback(&self) -> usize {
        self.period
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let change = x - self.prev;
        self.prev = x;
        // `loss += −change` equals TA-Lib's `loss −= change` exactly; adding 0.0 is a no-op.
        let up = if change > 0.0 { change } else { 0.0 };
        let down = if change < 0.0 { -change } else { 0.0 };
        if self.count > self.period {
            self.gain = (self.gain * self.keep + up) * self.inv;
            self.loss = (self.loss * self.keep + down) * self.inv;
        } else {
            self.count += 1;
            if self.count == 1 {
                return None;
            }
            self.gain += up;
            self.loss += down;
            if self.count <= self.period {
                return None;
            }
            self.gain *= self.inv;
            self.loss *= self.inv;
        }
        let total = self.gain + self.loss;
        self.value = if ta_is_zero(total) {
            0.0
        } else {
            100.0 * (self.gain / total)
        };
        Some(self.value)
    }
    pub fn value(&self) -> Option<f64> {
        self.is_ready().then_some(self.value)
    }
    pub fn is_ready(&self) -> bool {
        self.count > self.period
    }
    pub fn reset(&mut self) {
        *self = Rsi::new(self.period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsi_by_hand() {
        // N = 2. xs = 10, 11, 10.5, 12, 12.
        // changes: +1, −0.5, +1.5, 0.
        // i2: gain = 1/2, loss = 0.5/2 = 0.25 → 100·0.5/0.75 = 66.66…
        // i3: gain = (0.5·1 + 1.5)/2 = 1, loss = 0.25/2 = 0.125 → 100·1/1.125
        // i4: gain = 1/2, loss = 0.0625 → 100·0.5/0.5625
        let mut r = Rsi::new(2);
        assert_eq!(r.update(10.0), None);
        assert_eq!(r.update(11.0), None);
        assert!(!r.is_ready());
        assert_eq!(r.update(10.5), Some(100.0 * (0.5 / 0.75)));
        assert_eq!(r.update(12.0), Some(100.0 * (1.0 / 1.125)));
        assert_eq!(r.update(12.0), Some(100.0 * (0.5 / 0.5625)));
        assert!(r.is_ready());
        r.reset();
        assert_eq!(r.value(), None);
    }

    #[test]
    fn flat_series_gives_zero_like_talib() {
        let mut r = Rsi::new(3);
        let out: Vec<Option<f64>> = (0..6).map(|_| r.update(5.0)).collect();
        assert_eq!(out[3], Some(0.0));
        assert_eq!(out[5], Some(0.0));
    }
}
