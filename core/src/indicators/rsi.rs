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
//!
//! [`Rsi::batch`] fills an output array like `TA_RSI` (NaN during warm-up) with the same helper
//! functions as the streaming update, so both give the same bits. Both run at the latency of the
//! recurrence (multiply, add, multiply per input); TA-Lib's loop has the same chain.

use super::{check_lengths, dispatch, ta_is_zero, WARM_UP};

/// The gain and loss of one price change, without a branch (`loss += −change` equals TA-Lib's
/// `loss −= change` exactly; adding 0.0 is a no-op).
#[inline(always)]
fn split(change: f64) -> (f64, f64) {
    let up = if change > 0.0 { change } else { 0.0 };
    let down = if change < 0.0 { -change } else { 0.0 };
    (up, down)
}

/// `100·gain/(gain + loss)`, 0 when the total is zero within TA-Lib's epsilon.
#[inline(always)]
fn rsi_of(gain: f64, loss: f64) -> f64 {
    let total = gain + loss;
    if ta_is_zero(total) {
        0.0
    } else {
        100.0 * (gain / total)
    }
}

#[inline(always)]
fn rsi_kernel(period: usize, xs: &[f64], out: &mut [f64]) {
    if xs.len() <= period {
        out.fill(WARM_UP);
        return;
    }
    out[..period].fill(WARM_UP);
    let keep = (period - 1) as f64;
    let inv = 1.0 / period as f64;
    let (mut gain, mut loss) = (0.0, 0.0);
    for w in xs[..=period].windows(2) {
        let (up, down) = split(w[1] - w[0]);
        gain += up;
        loss += down;
    }
    gain *= inv;
    loss *= inv;
    out[period] = rsi_of(gain, loss);
    let mut prev = xs[period];
    for (o, &x) in out[period + 1..].iter_mut().zip(&xs[period + 1..]) {
        let (up, down) = split(x - prev);
        prev = x;
        gain = (gain * keep + up) * inv;
        loss = (loss * keep + down) * inv;
        *o = rsi_of(gain, loss);
    }
}

dispatch!(fn rsi_batch(period: usize, xs: &[f64], out: &mut [f64]) => rsi_kernel, "avx2", ["avx2"]);

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
        if self.count > self.period {
            let (up, down) = split(x - self.prev);
            self.prev = x;
            self.gain = (self.gain * self.keep + up) * self.inv;
            self.loss = (self.loss * self.keep + down) * self.inv;
            self.value = rsi_of(self.gain, self.loss);
            return Some(self.value);
        }
        self.warm_up(x)
    }
    /// The first `period + 1` updates (the steady state is the first branch of `update`).
    #[inline]
    fn warm_up(&mut self, x: f64) -> Option<f64> {
        let (up, down) = split(x - self.prev);
        self.prev = x;
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
        self.value = rsi_of(self.gain, self.loss);
        Some(self.value)
    }
    /// TA-Lib's array form: `out[i]` is the RSI after `xs[..=i]` (NaN before index `period`),
    /// bit-identical to feeding `xs` to [`Rsi::update`] one by one.
    ///
    /// # Panics
    /// If `period` < 2 or the slices differ in length.
    pub fn batch(period: usize, xs: &[f64], out: &mut [f64]) {
        assert!(period >= 2, "RSI period must be ≥ 2 (TA-Lib's range)");
        check_lengths(xs.len(), &[out.len()]);
        rsi_batch(period, xs, out);
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
