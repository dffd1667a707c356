//! MACD (TA-Lib) and zero-lag MACD.
//!
//! TA-Lib's MACD is **not** a stand-alone EMA(fast) − EMA(slow): it starts the fast EMA where the
//! slow one starts, i.e. the fast EMA is seeded with the SMA of inputs `slow−fast ..= slow−1`
//! (for 12/26: inputs 14..25), not of the first `fast` inputs. The MACD line exists from index
//! `slow − 1`; the signal line is an EMA(signal) of the MACD line seeded with the SMA of its first
//! `signal` values, and all three outputs appear together at index `slow + signal − 2` (33 for
//! 12/26/9). `hist = macd − signal`. Like TA-Lib, a fast period larger than the slow one is
//! swapped. Every EMA step is TA-Lib 0.8's fused `fma(x − s, k, s)` (see [`Ema`]), so all three
//! outputs are bit-identical to `TA_MACD`.
//!
//! [`Macd::batch`] fills TA-Lib's three output arrays (NaN during warm-up) in one pass: the slow,
//! fast and signal recurrences are independent chains that the CPU overlaps, where TA-Lib makes
//! three passes over the data. Same arithmetic, same bits as the streaming update.
//!
//! The zero-lag MACD (no TA-Lib counterpart) uses [`Zlema`]s for both lines, each started at the
//! first input, and the same SMA-seeded EMA for the signal:
//! `macd = ZLEMA(fast) − ZLEMA(slow)`, `signal = EMA(signal)(macd)`, first output at index
//! `3(slow − 1) + signal − 1` (83 for 12/26/9).

use super::ema::{ema_k, ema_seed, ema_step_batch, Ema};
use super::zerolag::Zlema;
use super::{check_lengths, dispatch, WARM_UP};

/// The three output arrays of [`Macd::batch`], like `TA_MACD`'s.
pub struct MacdArrays<'a> {
    pub macd: &'a mut [f64],
    pub signal: &'a mut [f64],
    pub hist: &'a mut [f64],
}

#[inline(always)]
fn macd_kernel(
    fast: usize,
    slow: usize,
    signal: usize,
    xs: &[f64],
    macd: &mut [f64],
    sig_out: &mut [f64],
    hist: &mut [f64],
) {
    let n = xs.len();
    let lookback = slow - 1 + signal - 1;
    let warm = lookback.min(n);
    macd[..warm].fill(WARM_UP);
    sig_out[..warm].fill(WARM_UP);
    hist[..warm].fill(WARM_UP);
    if n <= lookback {
        return;
    }
    let (kf, ks, kg) = (ema_k(fast), ema_k(slow), ema_k(signal));
    // TA-Lib starts the fast EMA where the slow one starts (index slow − 1).
    let mut slow_e = ema_seed(&xs[..slow]);
    let mut fast_e = ema_seed(&xs[slow - fast..slow]);
    // The signal EMA's seed: the first `signal` MACD-line values summed from 0.0, as the
    // streaming `Ema` accumulates them.
    let mut sum = 0.0;
    sum += fast_e - slow_e;
    for &x in &xs[slow..=lookback] {
        slow_e = ema_step_batch(slow_e, x, ks);
        fast_e = ema_step_batch(fast_e, x, kf);
        sum += fast_e - slow_e;
    }
    let mut line = fast_e - slow_e;
    let mut sig = sum / signal as f64;
    macd[lookback] = line;
    sig_out[lookback] = sig;
    hist[lookback] = line - sig;
    let xs = &xs[lookback + 1..];
    let (macd, sig_out, hist) = (
        &mut macd[lookback + 1..n],
        &mut sig_out[lookback + 1..n],
        &mut hist[lookback + 1..n],
    );
    for i in 0..xs.len() {
        let x = xs[i];
        slow_e = ema_step_batch(slow_e, x, ks);
        fast_e = ema_step_batch(fast_e, x, kf);
        line = fast_e - slow_e;
        sig = ema_step_batch(sig, line, kg);
        macd[i] = line;
        sig_out[i] = sig;
        hist[i] = line - sig;
    }
}

dispatch!(fn macd_batch(
    fast: usize,
    slow: usize,
    signal: usize,
    xs: &[f64],
    macd: &mut [f64],
    sig_out: &mut [f64],
    hist: &mut [f64],
) => macd_kernel, "fma", ["fma"]);

/// One MACD reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MacdOutput {
    pub macd: f64,
    pub signal: f64,
    pub hist: f64,
}

/// MACD with TA-Lib's seeding. Updates return a value once the signal line is ready.
#[derive(Clone, Debug)]
pub struct Macd {
    fast_period: usize,
    slow_period: usize,
    fast: Ema,
    slow: Ema,
    signal: Ema,
    /// Inputs seen, capped at the fast EMA's start.
    seen: usize,
    line: Option<f64>,
    value: Option<MacdOutput>,
}

impl Macd {
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        let (fast, slow) = if slow < fast {
            (slow, fast)
        } else {
            (fast, slow)
        };
        assert!(fast >= 1 && signal >= 1, "MACD periods must be ≥ 1");
        Macd {
            fast_period: fast,
            slow_period: slow,
            fast: Ema::new(fast),
            slow: Ema::new(slow),
            signal: Ema::new(signal),
            seen: 0,
            line: None,
            value: None,
        }
    }
    /// `(fast, slow, signal)` after TA-Lib's swap of fast and slow.
    pub fn periods(&self) -> (usize, usize, usize) {
        (self.fast_period, self.slow_period, self.signal.period())
    }
    pub fn lookback(&self) -> usize {
        self.slow_period - 1 + self.signal.period() - 1
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<MacdOutput> {
        if self.value.is_some() {
            // Steady state: all three EMAs are ready.
            let line = self.fast.step_ready(x) - self.slow.step_ready(x);
            let signal = self.signal.step_ready(line);
            let out = MacdOutput {
                macd: line,
                signal,
                hist: line - signal,
            };
            self.line = Some(line);
            self.value = Some(out);
            return Some(out);
        }
        self.warm_up(x)
    }
    /// The updates before the signal line is ready.
    #[inline]
    fn warm_up(&mut self, x: f64) -> Option<MacdOutput> {
        let slow = self.slow.update(x);
        let skip = self.slow_period - self.fast_period;
        let fast = if self.seen >= skip {
            self.fast.update(x)
        } else {
            self.seen += 1;
            None
        };
        // Both EMAs become ready on the same input (index slow − 1).
        let line = fast? - slow?;
        self.line = Some(line);
        let signal = self.signal.update(line)?;
        let out = MacdOutput {
            macd: line,
            signal,
            hist: line - signal,
        };
        self.value = Some(out);
        Some(out)
    }
    /// TA-Lib's array form: `out.macd[i]`, `out.signal[i]` and `out.hist[i]` are the MACD
    /// after `xs[..=i]` (NaN before index `slow + signal − 2`), bit-identical to feeding `xs`
    /// to [`Macd::update`] one by one. A fast period above the slow one is swapped, as in
    /// [`Macd::new`].
    ///
    /// # Panics
    /// If a period is 0 or the slices differ in length.
    pub fn batch(fast: usize, slow: usize, signal: usize, xs: &[f64], out: MacdArrays<'_>) {
        let (fast, slow) = if slow < fast {
            (slow, fast)
        } else {
            (fast, slow)
        };
        assert!(fast >= 1 && signal >= 1, "MACD periods must be ≥ 1");
        check_lengths(
            xs.len(),
            &[out.macd.len(), out.signal.len(), out.hist.len()],
        );
        macd_batch(fast, slow, signal, xs, out.macd, out.signal, out.hist);
    }
    /// The MACD line alone, available from index `slow − 1` (before the signal line is ready).
    pub fn line(&self) -> Option<f64> {
        self.line
    }
    pub fn value(&self) -> Option<MacdOutput> {
        self.value
    }
    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }
    pub fn reset(&mut self) {
        self.fast.reset();
        self.slow.reset();
        self.signal.reset();
        self.seen = 0;
        self.line = None;
        self.value = None;
    }
}

/// Zero-lag MACD: the MACD of two [`Zlema`]s with an SMA-seeded EMA signal line.
#[derive(Clone, Debug)]
pub struct ZlMacd {
    fast: Zlema,
    slow: Zlema,
    signal: Ema,
    line: Option<f64>,
    value: Option<MacdOutput>,
}

impl ZlMacd {
    pub fn new(fast: usize, slow: usize, signal: usize) -> Self {
        let (fast, slow) = if slow < fast {
            (slow, fast)
        } else {
            (fast, slow)
        };
        assert!(fast >= 1 && signal >= 1, "ZL-MACD periods must be ≥ 1");
        ZlMacd {
            fast: Zlema::new(fast),
            slow: Zlema::new(slow),
            signal: Ema::new(signal),
            line: None,
            value: None,
        }
    }
    pub fn periods(&self) -> (usize, usize, usize) {
        (self.fast.period(), self.slow.period(), self.signal.period())
    }
    pub fn lookback(&self) -> usize {
        self.slow.lookback() + self.signal.period() - 1
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<MacdOutput> {
        // The fast ZLEMA (shorter warm-up) is always ready when the slow one is.
        let fast = self.fast.update(x);
        let slow = self.slow.update(x)?;
        let line = fast.expect("fast ZLEMA warms up first") - slow;
        self.line = Some(line);
        let signal = self.signal.update(line)?;
        let out = MacdOutput {
            macd: line,
            signal,
            hist: line - signal,
        };
        self.value = Some(out);
        Some(out)
    }
    /// The zero-lag MACD line alone, available before the signal line is ready.
    pub fn line(&self) -> Option<f64> {
        self.line
    }
    pub fn value(&self) -> Option<MacdOutput> {
        self.value
    }
    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }
    pub fn reset(&mut self) {
        self.fast.reset();
        self.slow.reset();
        self.signal.reset();
        self.line = None;
        self.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macd_seeds_fast_ema_where_slow_starts() {
        // fast 2, slow 3, signal 2 on xs = 1, 2, 4, 8, 16.
        // slow EMA(3): seed at i2 = (1+2+4)/3 = 7/3; i3 = (8 − 7/3)·0.5 + 7/3 = 31/6.
        // fast EMA(2) starts at input 1 (slow − fast = 1): seed at i2 = (2+4)/2 = 3;
        //   i3 = (8 − 3)·2/3 + 3 = 19/3.
        // line: i2 = 3 − 7/3 = 2/3; i3 = 19/3 − 31/6 = 7/6.
        // signal EMA(2) of the line: seed at i3 = (2/3 + 7/6)/2 = 11/12; hist = 7/6 − 11/12 = 1/4.
        let mut m = Macd::new(2, 3, 2);
        assert_eq!(m.lookback(), 3);
        assert_eq!(m.update(1.0), None);
        assert_eq!(m.update(2.0), None);
        assert_eq!(m.update(4.0), None);
        assert!((m.line().unwrap() - 2.0 / 3.0).abs() < 1e-15);
        let out = m.update(8.0).unwrap();
        assert!((out.macd - 7.0 / 6.0).abs() < 1e-14);
        assert!((out.signal - 11.0 / 12.0).abs() < 1e-14);
        assert!((out.hist - 0.25).abs() < 1e-14);
        assert_eq!(m.value(), Some(out));
        m.reset();
        assert!(!m.is_ready());
        assert_eq!(m.line(), None);
    }

    #[test]
    fn macd_swaps_periods_like_talib() {
        let m = Macd::new(26, 12, 9);
        assert_eq!(m.periods(), (12, 26, 9));
        assert_eq!(m.lookback(), 33);
    }

    #[test]
    fn zlmacd_is_difference_of_zlemas_with_ema_signal() {
        let xs: Vec<f64> = (0..300)
            .map(|i| 1000.0 + (i as f64 * 0.05).sin() * 40.0 + (i % 11) as f64)
            .collect();
        let mut m = ZlMacd::new(12, 26, 9);
        assert_eq!(m.lookback(), 83);
        let (mut zf, mut zs, mut sig) = (Zlema::new(12), Zlema::new(26), Ema::new(9));
        for (i, &x) in xs.iter().enumerate() {
            let got = m.update(x);
            let f = zf.update(x);
            let want = zs.update(x).and_then(|s| {
                let line = f.unwrap() - s;
                sig.update(line).map(|g| (line, g))
            });
            match (got, want) {
                (None, None) => assert!(i < 83),
                (Some(o), Some((line, g))) => {
                    assert!(i >= 83);
                    assert_eq!(o.macd, line);
                    assert_eq!(o.signal, g);
                    assert_eq!(o.hist, line - g);
                }
                other => panic!("{i}: {other:?}"),
            }
        }
        m.reset();
        assert_eq!(m.value(), None);
    }
}
