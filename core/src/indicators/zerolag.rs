//! Zero-lag averages (none of them exists in TA-Lib).
//!
//! The zero-lag trick removes an average's lag by adding back the difference between the average
//! and the average of the average: `2·A(x) − A(A(x))`.
//! - [`Dema`] = 2·EMA(x) − EMA(EMA(x)), all with the same period.
//! - [`Zlema`] = EMA(2·EMA(x) − EMA(EMA(x))) = EMA(DEMA(x)), the definition SPEC.md gives for the
//!   ZLMACD_ICHIMOKU strategy ("ZLEMA = EMA(2·EMA(x) − EMA(EMA(x)))"), every EMA with the same
//!   period and TA-Lib seeding (each EMA starts with the SMA of its first N inputs, which are the
//!   first N outputs of the stage before it).
//! - [`ZlHma`] = 2·HMA(x) − HMA(HMA(x)), the Hull average given the same zero-lag correction
//!   (the project's definition; there is no single standard "zero-lag HMA").
//!
//! Warm-up: each stage starts when the previous stage produces its first value, so the first
//! outputs are at index 2(N−1) for DEMA, 3(N−1) for ZLEMA and 2·L for ZL-HMA, where L is the
//! HMA's own lookback.

use super::ema::Ema;
use super::wma::Hma;

/// Double EMA: `2·EMA(x) − EMA(EMA(x))`. First output at index `2(N − 1)`.
#[derive(Clone, Debug)]
pub struct Dema {
    period: usize,
    ema: Ema,
    ema_of_ema: Ema,
    value: Option<f64>,
}

impl Dema {
    pub fn new(period: usize) -> Self {
        Dema {
            period,
            ema: Ema::new(period),
            ema_of_ema: Ema::new(period),
            value: None,
        }
    }
    pub fn period(&self) -> usize {
        self.period
    }
    pub fn lookback(&self) -> usize {
        2 * (self.period - 1)
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let e1 = self.ema.update(x)?;
        let e2 = self.ema_of_ema.update(e1)?;
        self.value = Some(2.0 * e1 - e2);
        self.value
    }
    pub fn value(&self) -> Option<f64> {
        self.value
    }
    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }
    pub fn reset(&mut self) {
        self.ema.reset();
        self.ema_of_ema.reset();
        self.value = None;
    }
}

/// Zero-lag EMA as SPEC.md defines it: `EMA(2·EMA(x) − EMA(EMA(x)))`. First output at index
/// `3(N − 1)`.
#[derive(Clone, Debug)]
pub struct Zlema {
    dema: Dema,
    outer: Ema,
}

impl Zlema {
    pub fn new(period: usize) -> Self {
        Zlema {
            dema: Dema::new(period),
            outer: Ema::new(period),
        }
    }
    pub fn period(&self) -> usize {
        self.dema.period()
    }
    pub fn lookback(&self) -> usize {
        3 * (self.period() - 1)
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let d = self.dema.update(x)?;
        self.outer.update(d)
    }
    pub fn value(&self) -> Option<f64> {
        self.outer.value()
    }
    pub fn is_ready(&self) -> bool {
        self.outer.is_ready()
    }
    pub fn reset(&mut self) {
        self.dema.reset();
        self.outer.reset();
    }
}

/// Zero-lag Hull average: `2·HMA(x) − HMA(HMA(x))`. First output at index `2·L` where `L` is
/// [`Hma::lookback`] for the same period.
#[derive(Clone, Debug)]
pub struct ZlHma {
    hma: Hma,
    hma_of_hma: Hma,
    value: Option<f64>,
}

impl ZlHma {
    pub fn new(period: usize) -> Self {
        ZlHma {
            hma: Hma::new(period),
            hma_of_hma: Hma::new(period),
            value: None,
        }
    }
    pub fn period(&self) -> usize {
        self.hma.period()
    }
    pub fn lookback(&self) -> usize {
        2 * self.hma.lookback()
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        let h1 = self.hma.update(x)?;
        let h2 = self.hma_of_hma.update(h1)?;
        self.value = Some(2.0 * h1 - h2);
        self.value
    }
    pub fn value(&self) -> Option<f64> {
        self.value
    }
    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }
    pub fn reset(&mut self) {
        self.hma.reset();
        self.hma_of_hma.reset();
        self.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TA-Lib-seeded EMA over a whole slice, written as a plain loop: NaN until index N−1.
    fn naive_ema(xs: &[f64], n: usize) -> Vec<f64> {
        let k = 2.0 / (n as f64 + 1.0);
        let mut out = vec![f64::NAN; xs.len()];
        if xs.len() < n {
            return out;
        }
        let mut prev = xs[..n].iter().sum::<f64>() / n as f64;
        out[n - 1] = prev;
        for i in n..xs.len() {
            prev = (xs[i] - prev) * k + prev;
            out[i] = prev;
        }
        out
    }

    /// Applies `f` to the defined tail of `xs` and realigns the result.
    fn stage(xs: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
        let start = xs.iter().position(|v| !v.is_nan()).unwrap_or(xs.len());
        let mut out = vec![f64::NAN; start];
        out.extend(f(&xs[start..]));
        out
    }

    fn series() -> Vec<f64> {
        (0..300)
            .map(|i| 50.0 + (i as f64 * 0.21).sin() * 10.0 + (i % 7) as f64 * 0.3)
            .collect()
    }

    fn check(got: &[Option<f64>], want: &[f64], lookback: usize) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if i < lookback {
                assert!(g.is_none() && w.is_nan(), "index {i}: {g:?} vs {w}");
            } else {
                let g = g.expect("ready after lookback");
                assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn dema_by_hand() {
        // N = 2, k = 2/3. xs = 1, 4, 7.
        // EMA: i1 = 2.5, i2 = (7 − 2.5)·2/3 + 2.5 = 5.5. EMA(EMA) at i2 = (2.5 + 5.5)/2 = 4.
        // DEMA(i2) = 2·5.5 − 4 = 7.
        let mut d = Dema::new(2);
        assert_eq!(d.update(1.0), None);
        assert_eq!(d.update(4.0), None);
        assert_eq!(d.update(7.0), Some(7.0));
        assert_eq!(d.lookback(), 2);
    }

    #[test]
    fn zlema_by_hand_on_a_line() {
        // On a straight line the EMA lags by a constant once seeded with an SMA, the DEMA
        // removes that lag exactly, and the outer EMA of a line lags again by the same constant.
        // N = 3, xs = 0, 1, 2, …: EMA(i) = i − 1, EMA(EMA)(i) = i − 2, DEMA(i) = i,
        // ZLEMA(i) = i − 1 from index 3(N−1) = 6.
        let mut z = Zlema::new(3);
        for i in 0..20 {
            let got = z.update(i as f64);
            if i < 6 {
                assert_eq!(got, None, "{i}");
            } else {
                assert!(
                    (got.unwrap() - (i as f64 - 1.0)).abs() < 1e-12,
                    "{i}: {got:?}"
                );
            }
        }
        z.reset();
        assert!(!z.is_ready());
    }

    #[test]
    fn zlema_matches_naive_composition() {
        let xs = series();
        for n in [2usize, 12, 26] {
            let e1 = naive_ema(&xs, n);
            let e2 = stage(&e1, |s| naive_ema(s, n));
            let dema: Vec<f64> = e1.iter().zip(&e2).map(|(a, b)| 2.0 * a - b).collect();
            let want = stage(&dema, |s| naive_ema(s, n));
            let mut z = Zlema::new(n);
            let got: Vec<Option<f64>> = xs.iter().map(|&x| z.update(x)).collect();
            check(&got, &want, z.lookback());
            let mut d = Dema::new(n);
            let got: Vec<Option<f64>> = xs.iter().map(|&x| d.update(x)).collect();
            check(&got, &dema, d.lookback());
        }
    }

    #[test]
    fn zlhma_matches_composition_of_hmas() {
        let xs = series();
        let n = 9;
        let mut outer = Hma::new(n);
        let mut inner = Hma::new(n);
        let mut z = ZlHma::new(n);
        for (i, &x) in xs.iter().enumerate() {
            let got = z.update(x);
            let want = inner
                .update(x)
                .and_then(|h1| outer.update(h1).map(|h2| 2.0 * h1 - h2));
            assert_eq!(got, want, "{i}");
            assert_eq!(got.is_some(), i >= z.lookback(), "{i}");
        }
        assert!(z.value().is_some());
        z.reset();
        assert_eq!(z.value(), None);
    }

    #[test]
    fn zlhma_by_hand_on_a_line() {
        // The HMA is linear and lags a straight line by a constant c, so HMA(HMA(x)) = x − 2c
        // and 2·HMA(x) − HMA(HMA(x)) = x exactly.
        let mut h = Hma::new(4);
        let mut z = ZlHma::new(4);
        let mut offsets = Vec::new();
        for i in 0..40 {
            let x = 3.0 * i as f64;
            if let Some(v) = h.update(x) {
                offsets.push(x - v);
            }
            if let Some(v) = z.update(x) {
                assert!((v - x).abs() < 1e-9, "{i}: {v} vs {x}");
            }
        }
        // The HMA's lag on a line is a constant.
        assert!(offsets.windows(2).all(|w| (w[0] - w[1]).abs() < 1e-9));
        assert!(z.is_ready());
    }
}
