//! Simple and exponential moving averages with TA-Lib's arithmetic, operation for operation, so
//! their outputs are bit-identical to `TA_SMA` / `TA_EMA`:
//! - SMA: a running total that gains the new value, is divided by N, then loses the oldest value
//!   of the window (TA-Lib's order; a different order drifts by a few ULPs).
//! - EMA: the first value (at index N−1) is the SMA of the first N inputs, summed left to right;
//!   after that `ema = fma(x − ema, k, ema)` with k = 2/(N+1): one rounding for the product and
//!   the sum. TA-Lib 0.8's C source calls `fma()` there (both the plain and the FMA builds of
//!   `TA_EMA` in the PyPI wheel do; see the disassembly notes in `bench/talib_same_run.py`), so
//!   this is its operation order. On price data with few significant digits the fused and the
//!   unfused form almost never differ; on arbitrary data they differ in about half the values,
//!   and only the fused one equals TA-Lib.
//!
//! [`Ema::batch`] fills an output array like `TA_EMA` (NaN during warm-up) with the same
//! arithmetic as the streaming update, so both give the same bits.

use super::ring::Ring;
use super::{check_lengths, dispatch, fused, HwFma, WARM_UP};

/// One EMA step, TA-Lib's `fma(x − prev, k, prev)`, for streaming updates (shared by every
/// EMA-based indicator).
#[inline(always)]
pub(crate) fn ema_step(prev: f64, x: f64, k: f64, hw: HwFma) -> f64 {
    fused(x - prev, k, prev, hw)
}

/// The same step for batch kernels (compiled with FMA where the CPU has it): the same bits.
#[inline(always)]
pub(crate) fn ema_step_batch(prev: f64, x: f64, k: f64) -> f64 {
    (x - prev).mul_add(k, prev)
}

/// TA-Lib's smoothing constant 2/(N+1).
#[inline]
pub(crate) fn ema_k(period: usize) -> f64 {
    2.0 / (period as f64 + 1.0)
}

/// SMA seed of an EMA: the first `xs.len()` inputs summed left to right from 0.0, divided by
/// their count (what the streaming warm-up accumulates).
#[inline(always)]
pub(crate) fn ema_seed(xs: &[f64]) -> f64 {
    let mut sum = 0.0;
    for &x in xs {
        sum += x;
    }
    sum / xs.len() as f64
}

#[inline(always)]
fn ema_kernel(period: usize, xs: &[f64], out: &mut [f64]) {
    let lookback = period - 1;
    if xs.len() <= lookback {
        out.fill(WARM_UP);
        return;
    }
    out[..lookback].fill(WARM_UP);
    let k = ema_k(period);
    let mut e = ema_seed(&xs[..period]);
    out[lookback] = e;
    for (o, &x) in out[period..].iter_mut().zip(&xs[period..]) {
        e = ema_step_batch(e, x, k);
        *o = e;
    }
}

dispatch!(fn ema_batch(period: usize, xs: &[f64], out: &mut [f64]) => ema_kernel, "fma", ["fma"]);

/// Exponential moving average, TA-Lib convention. First output at index `period − 1`.
#[derive(Clone, Debug)]
pub struct Ema {
    period: usize,
    k: f64,
    hw: HwFma,
    count: usize,
    sum: f64,
    value: f64,
}

impl Ema {
    pub fn new(period: usize) -> Self {
        assert!(period >= 1, "EMA period must be ≥ 1");
        Ema {
            period,
            k: ema_k(period),
            hw: HwFma::detect(),
            count: 0,
            sum: 0.0,
            value: f64::NAN,
        }
    }
    pub fn period(&self) -> usize {
        self.period
    }
    /// Inputs consumed before the first output (TA-Lib's lookback): the first output is the
    /// `lookback() + 1`-th update.
    pub fn lookback(&self) -> usize {
        self.period - 1
    }
    /// Feed the next input; returns the value once ready.
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        if self.count >= self.period {
            self.value = ema_step(self.value, x, self.k, self.hw);
            return Some(self.value);
        }
        self.warm_up(x)
    }
    /// One update of a ready EMA (callers that know it is warm skip the check).
    #[inline(always)]
    pub(crate) fn step_ready(&mut self, x: f64) -> f64 {
        debug_assert!(self.is_ready());
        self.value = ema_step(self.value, x, self.k, self.hw);
        self.value
    }
    /// The first `period` updates (the steady state is the first branch of `update`).
    #[inline]
    fn warm_up(&mut self, x: f64) -> Option<f64> {
        self.count += 1;
        self.sum += x;
        if self.count == self.period {
            self.value = self.sum / self.period as f64;
            Some(self.value)
        } else {
            None
        }
    }
    /// TA-Lib's array form: `out[i]` is the EMA after `xs[..=i]` (NaN before index
    /// `period − 1`), bit-identical to feeding `xs` to [`Ema::update`] one by one.
    ///
    /// # Panics
    /// If `period` is 0 or the slices differ in length.
    pub fn batch(period: usize, xs: &[f64], out: &mut [f64]) {
        assert!(period >= 1, "EMA period must be ≥ 1");
        check_lengths(xs.len(), &[out.len()]);
        ema_batch(period, xs, out);
    }
    pub fn value(&self) -> Option<f64> {
        self.is_ready().then_some(self.value)
    }
    pub fn is_ready(&self) -> bool {
        self.count >= self.period
    }
    pub fn reset(&mut self) {
        *self = Ema::new(self.period);
    }
}

/// Simple moving average over a ring buffer, TA-Lib order of operations. First output at index
/// `period − 1`.
#[derive(Clone, Debug)]
pub struct Sma {
    period: usize,
    ring: Ring,
    count: usize,
    /// Sum of the window's values except the oldest (what TA-Lib carries between outputs).
    sum: f64,
    value: f64,
}

impl Sma {
    pub fn new(period: usize) -> Self {
        assert!(period >= 1, "SMA period must be ≥ 1");
        Sma {
            period,
            ring: Ring::new(period),
            count: 0,
            sum: 0.0,
            value: f64::NAN,
        }
    }
    pub fn period(&self) -> usize {
        self.period
    }
    pub fn lookback(&self) -> usize {
        self.period - 1
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        self.sum += x;
        self.ring.push(x);
        if self.count + 1 < self.period {
            self.count += 1;
            return None;
        }
        self.count = self.period;
        self.value = self.sum / self.period as f64;
        // After the push the ring's oldest slot holds the window's first value, which leaves
        // the window at the next update.
        self.sum -= self.ring.oldest();
        Some(self.value)
    }
    pub fn value(&self) -> Option<f64> {
        self.is_ready().then_some(self.value)
    }
    pub fn is_ready(&self) -> bool {
        self.count >= self.period
    }
    pub fn reset(&mut self) {
        self.ring.reset();
        self.count = 0;
        self.sum = 0.0;
        self.value = f64::NAN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ema_seeds_with_sma_then_recurses() {
        let xs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut e = Ema::new(3);
        let out: Vec<Option<f64>> = xs.iter().map(|&x| e.update(x)).collect();
        assert_eq!(out[0], None);
        assert_eq!(out[1], None);
        // (1+2+3)/3
        assert_eq!(out[2], Some(2.0));
        // k = 0.5: (4-2)*0.5+2 = 3, (5-3)*0.5+3 = 4, (6-4)*.5+4 = 5
        assert_eq!(out[3], Some(3.0));
        assert_eq!(out[4], Some(4.0));
        assert_eq!(out[5], Some(5.0));
        assert_eq!(e.value(), Some(5.0));
        e.reset();
        assert!(!e.is_ready());
        assert_eq!(e.value(), None);
        assert_eq!(e.update(7.0), None);
    }

    #[test]
    fn ema_period_one_is_the_input() {
        let mut e = Ema::new(1);
        assert_eq!(e.update(4.0), Some(4.0));
        assert_eq!(e.update(-2.5), Some(-2.5));
    }

    #[test]
    fn sma_window() {
        let mut s = Sma::new(2);
        assert_eq!(s.update(1.0), None);
        assert!(!s.is_ready());
        assert_eq!(s.update(3.0), Some(2.0));
        assert_eq!(s.update(5.0), Some(4.0));
        assert_eq!(s.value(), Some(4.0));
        s.reset();
        assert_eq!(s.update(10.0), None);
        assert_eq!(s.update(20.0), Some(15.0));
    }

    #[test]
    fn sma_period_one_is_the_input() {
        let mut s = Sma::new(1);
        for x in [3.0, 1e5 + 0.1, -7.25] {
            assert_eq!(s.update(x), Some(x));
        }
    }

    #[test]
    fn sma_matches_naive_mean() {
        let xs: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64 * 0.5).collect();
        let mut s = Sma::new(20);
        for (i, &x) in xs.iter().enumerate() {
            let got = s.update(x);
            if i < 19 {
                assert_eq!(got, None);
            } else {
                let want = xs[i - 19..=i].iter().sum::<f64>() / 20.0;
                assert!((got.unwrap() - want).abs() < 1e-12, "{i}");
            }
        }
    }
}
