//! True range and Wilder's average true range, as `TA_TRANGE` / `TA_ATR` compute them.
//!
//! The true range exists from the second bar on (it needs the previous close). The first ATR is
//! the SMA of the first N true ranges (bars 1..=N, summed left to right), so it appears at index
//! N; later values are Wilder's `(prev·(N−1) + tr)/N`, evaluated the way TA-Lib 0.8's C code
//! does it: `fma(prev, keep, tr·(1 − keep))` with `keep = (N−1)/N` (the wheel's `TA_ATR` calls
//! `fma()` in its plain build and uses the instruction in its FMA build). That is bit-identical
//! to TA-Lib on any data, and its dependency chain is a single fused multiply-add per bar.
//!
//! [`Atr::batch`] fills an output array like `TA_ATR` (NaN during warm-up) from high, low and
//! close arrays, with the same arithmetic as the streaming update.

use super::{check_lengths, dispatch, fused, Bar, HwFma, WARM_UP};

/// `max(high − low, |high − prev close|, |low − prev close|)`, in TA-Lib's evaluation order.
#[inline]
pub fn true_range(bar: Bar, prev_close: f64) -> f64 {
    let mut greatest = bar.high - bar.low;
    let up = (prev_close - bar.high).abs();
    if up > greatest {
        greatest = up;
    }
    let down = (prev_close - bar.low).abs();
    if down > greatest {
        greatest = down;
    }
    greatest
}

/// Average true range (Wilder). First output at index `period`.
#[derive(Clone, Debug)]
pub struct Atr {
    period: usize,
    /// (N − 1)/N and 1 − (N − 1)/N.
    keep: f64,
    inv: f64,
    hw: HwFma,
    /// Bars seen, capped at `period + 1`.
    count: usize,
    prev_close: f64,
    sum: f64,
    value: f64,
}

impl Atr {
    pub fn new(period: usize) -> Self {
        assert!(period >= 1, "ATR period must be ≥ 1");
        let (keep, inv) = atr_weights(period);
        Atr {
            period,
            keep,
            inv,
            hw: HwFma::detect(),
            count: 0,
            prev_close: 0.0,
            sum: 0.0,
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
    pub fn update(&mut self, bar: Bar) -> Option<f64> {
        let tr = true_range(bar, self.prev_close);
        self.prev_close = bar.close;
        if self.count > self.period {
            self.value = atr_step(self.value, tr, self.keep, self.inv, self.hw);
            return Some(self.value);
        }
        self.warm_up(tr)
    }
    /// The first `period + 1` updates (the steady state is the first branch of `update`).
    #[inline]
    fn warm_up(&mut self, tr: f64) -> Option<f64> {
        self.count += 1;
        if self.count == 1 {
            return None;
        }
        self.sum += tr;
        if self.count <= self.period {
            return None;
        }
        self.value = self.sum / self.period as f64;
        Some(self.value)
    }
    /// TA-Lib's array form: `out[i]` is the ATR after bars `..=i` given as separate high, low
    /// and close arrays (NaN before index `period`), bit-identical to feeding the bars to
    /// [`Atr::update`] one by one.
    ///
    /// # Panics
    /// If `period` is 0 or the slices differ in length.
    pub fn batch(period: usize, high: &[f64], low: &[f64], close: &[f64], out: &mut [f64]) {
        assert!(period >= 1, "ATR period must be ≥ 1");
        check_lengths(close.len(), &[high.len(), low.len(), out.len()]);
        atr_batch(period, high, low, close, out);
    }
    pub fn value(&self) -> Option<f64> {
        self.is_ready().then_some(self.value)
    }
    pub fn is_ready(&self) -> bool {
        self.count > self.period
    }
    pub fn reset(&mut self) {
        *self = Atr::new(self.period);
    }
}

/// `keep = (N−1)/N` and `1 − keep`, as TA-Lib derives them.
#[inline]
fn atr_weights(period: usize) -> (f64, f64) {
    let keep = (period - 1) as f64 / period as f64;
    (keep, 1.0 - keep)
}

/// One Wilder step, TA-Lib's `fma(prev, keep, tr·inv)`, for the streaming update.
#[inline(always)]
fn atr_step(prev: f64, tr: f64, keep: f64, inv: f64, hw: HwFma) -> f64 {
    fused(prev, keep, tr * inv, hw)
}

/// The same step for the batch kernel (compiled with FMA where the CPU has it): the same bits.
#[inline(always)]
fn atr_step_batch(prev: f64, tr: f64, keep: f64, inv: f64) -> f64 {
    prev.mul_add(keep, tr * inv)
}

#[inline(always)]
fn atr_kernel(period: usize, high: &[f64], low: &[f64], close: &[f64], out: &mut [f64]) {
    let n = close.len();
    if n <= period {
        out.fill(WARM_UP);
        return;
    }
    out[..period].fill(WARM_UP);
    let (keep, inv) = atr_weights(period);
    let mut sum = 0.0;
    for i in 1..=period {
        sum += true_range(Bar::new(high[i], low[i], close[i]), close[i - 1]);
    }
    let mut atr = sum / period as f64;
    out[period] = atr;
    // Equal-length slices, so the loop has no bounds checks.
    let s = period + 1;
    let (high, low, prev_close, out) = (
        &high[s..n],
        &low[s..n],
        &close[s - 1..n - 1],
        &mut out[s..n],
    );
    for i in 0..out.len() {
        let tr = true_range(Bar::new(high[i], low[i], 0.0), prev_close[i]);
        atr = atr_step_batch(atr, tr, keep, inv);
        out[i] = atr;
    }
}

dispatch!(fn atr_batch(period: usize, high: &[f64], low: &[f64], close: &[f64], out: &mut [f64]) => atr_kernel, "fma", ["fma"]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn true_range_uses_previous_close() {
        // Gap up: previous close 8, bar 10..12 → 12 − 8 = 4.
        assert_eq!(true_range(Bar::new(12.0, 10.0, 11.0), 8.0), 4.0);
        // Gap down: previous close 15 → 15 − 10 = 5.
        assert_eq!(true_range(Bar::new(12.0, 10.0, 11.0), 15.0), 5.0);
        // Inside: high − low.
        assert_eq!(true_range(Bar::new(12.0, 10.0, 11.0), 11.0), 2.0);
    }

    #[test]
    fn atr_by_hand() {
        // N = 2. Bars (h, l, c): (10,8,9), (11,9,10), (13,10,12), (12,11,11.5), (14,11,13)
        // TR from bar 1: 2, 3, 1, 3.
        // i2: (2 + 3)/2 = 2.5; i3: (2.5·1 + 1)/2 = 1.75; i4: (1.75 + 3)/2 = 2.375.
        let bars = [
            Bar::new(10.0, 8.0, 9.0),
            Bar::new(11.0, 9.0, 10.0),
            Bar::new(13.0, 10.0, 12.0),
            Bar::new(12.0, 11.0, 11.5),
            Bar::new(14.0, 11.0, 13.0),
        ];
        let mut a = Atr::new(2);
        let out: Vec<Option<f64>> = bars.iter().map(|&b| a.update(b)).collect();
        assert_eq!(out, vec![None, None, Some(2.5), Some(1.75), Some(2.375)]);
        assert_eq!(a.value(), Some(2.375));
        a.reset();
        assert!(!a.is_ready());
    }

    #[test]
    fn atr_period_one_is_the_true_range() {
        let mut a = Atr::new(1);
        assert_eq!(a.update(Bar::new(10.0, 8.0, 9.0)), None);
        assert_eq!(a.update(Bar::new(11.0, 9.5, 10.0)), Some(2.0));
        assert_eq!(a.update(Bar::new(10.5, 10.0, 10.2)), Some(0.5));
    }
}
