//! Weighted and Hull moving averages.
//!
//! WMA(N) weighs the newest input N, the one before N−1, …, the oldest 1, and divides by
//! N(N+1)/2. It follows TA-Lib's published `TA_WMA` operation for operation: a running weighted
//! sum and a running plain sum, so each update is O(1) (the weighted sum drops one plain sum per
//! step). The TA-Lib 0.8 C build rounds differently somewhere in that loop; the golden test
//! observes ≤ 4e-13 relative error against it.
//!
//! HMA(N) = WMA(2·WMA(x, ⌊N/2⌋) − WMA(x, N), ⌊√N⌋) (Alan Hull). TA-Lib has no HMA.

use super::ring::Ring;

/// Weighted moving average, TA-Lib arithmetic. First output at index `period − 1`.
#[derive(Clone, Debug)]
pub struct Wma {
    period: usize,
    divider: f64,
    ring: Ring,
    count: usize,
    /// Σ x over the window (TA-Lib's `periodSub`).
    plain: f64,
    /// Σ weight·x carried between updates (TA-Lib's `periodSum`).
    weighted: f64,
    value: f64,
}

impl Wma {
    pub fn new(period: usize) -> Self {
        assert!(period >= 1, "WMA period must be ≥ 1");
        Wma {
            period,
            divider: (period * (period + 1) / 2) as f64,
            ring: Ring::new(period),
            count: 0,
            plain: 0.0,
            weighted: 0.0,
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
        if self.period == 1 {
            // TA-Lib copies the input; the running sums below would accumulate rounding.
            self.count = 1;
            self.value = x;
            return Some(x);
        }
        // The ring's replaced value is the input `period` steps ago (0.0 during warm-up, which
        // is exactly TA-Lib's initial `trailingValue`).
        let leaving = self.ring.push(x);
        if self.count + 1 < self.period {
            self.count += 1;
            self.plain += x;
            self.weighted += x * self.count as f64;
            return None;
        }
        self.count = self.period;
        self.plain += x;
        self.plain -= leaving;
        self.weighted += x * self.period as f64;
        self.value = self.weighted / self.divider;
        self.weighted -= self.plain;
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
        self.plain = 0.0;
        self.weighted = 0.0;
        self.value = f64::NAN;
    }
}

/// Hull moving average: `WMA(2·WMA(x, ⌊N/2⌋) − WMA(x, N), ⌊√N⌋)`. First output at index
/// `(N − 1) + (⌊√N⌋ − 1)`.
#[derive(Clone, Debug)]
pub struct Hma {
    period: usize,
    half: Wma,
    full: Wma,
    smooth: Wma,
}

impl Hma {
    pub fn new(period: usize) -> Self {
        assert!(period >= 2, "HMA period must be ≥ 2");
        Hma {
            period,
            half: Wma::new(period / 2),
            full: Wma::new(period),
            smooth: Wma::new(isqrt(period)),
        }
    }
    pub fn period(&self) -> usize {
        self.period
    }
    pub fn lookback(&self) -> usize {
        self.full.lookback() + self.smooth.lookback()
    }
    #[inline]
    pub fn update(&mut self, x: f64) -> Option<f64> {
        // The half-period WMA is ready first; the difference exists once the full one is.
        let half = self.half.update(x);
        let full = self.full.update(x)?;
        let half = half.expect("the half-period WMA warms up before the full one");
        self.smooth.update(2.0 * half - full)
    }
    pub fn value(&self) -> Option<f64> {
        self.smooth.value()
    }
    pub fn is_ready(&self) -> bool {
        self.smooth.is_ready()
    }
    pub fn reset(&mut self) {
        self.half.reset();
        self.full.reset();
        self.smooth.reset();
    }
}

/// ⌊√n⌋ without trusting `f64::sqrt` rounding at perfect squares.
fn isqrt(n: usize) -> usize {
    let mut r = (n as f64).sqrt() as usize;
    while r * r > n {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= n {
        r += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_wma(w: &[f64]) -> f64 {
        let n = w.len();
        let num: f64 = w.iter().enumerate().map(|(i, x)| x * (i + 1) as f64).sum();
        num / (n * (n + 1) / 2) as f64
    }

    fn series(n: usize) -> Vec<f64> {
        (0..n)
            .map(|i| 100.0 + ((i * 7919) % 113) as f64 * 0.25 - (i % 5) as f64)
            .collect()
    }

    #[test]
    fn wma_by_hand() {
        // WMA(3) of 1,2,3 = (1·1 + 2·2 + 3·3)/6 = 14/6; of 2,3,10 = (2 + 6 + 30)/6 = 38/6.
        let mut w = Wma::new(3);
        assert_eq!(w.update(1.0), None);
        assert_eq!(w.update(2.0), None);
        assert_eq!(w.update(3.0), Some(14.0 / 6.0));
        assert_eq!(w.update(10.0), Some(38.0 / 6.0));
        w.reset();
        assert!(!w.is_ready());
        assert_eq!(w.update(1.0), None);
    }

    #[test]
    fn wma_matches_naive_loop() {
        let xs = series(300);
        for period in [1usize, 2, 5, 20] {
            let mut w = Wma::new(period);
            for (i, &x) in xs.iter().enumerate() {
                let got = w.update(x);
                if i + 1 < period {
                    assert_eq!(got, None);
                } else {
                    let want = naive_wma(&xs[i + 1 - period..=i]);
                    assert!(
                        (got.unwrap() - want).abs() <= 1e-10 * want.abs(),
                        "{period} {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn isqrt_floors() {
        for (n, r) in [
            (1, 1),
            (2, 1),
            (3, 1),
            (4, 2),
            (8, 2),
            (9, 3),
            (16, 4),
            (20, 4),
            (55, 7),
        ] {
            assert_eq!(isqrt(n), r, "{n}");
        }
    }

    #[test]
    fn hma_by_hand() {
        // HMA(4): half WMA(2), full WMA(4), smoothing WMA(2).
        // xs = 1, 2, 4, 8, 16.
        // i=3: WMA2(4,8) = (4 + 16)/3 = 20/3; WMA4(1,2,4,8) = (1+4+12+32)/10 = 4.9;
        //      raw = 40/3 − 4.9.
        // i=4: WMA2(8,16) = 40/3; WMA4(2,4,8,16) = (2+8+24+64)/10 = 9.8; raw = 80/3 − 9.8.
        // HMA at i=4 = (raw3 + 2·raw4)/3.
        let mut h = Hma::new(4);
        assert_eq!(h.lookback(), 4);
        let out: Vec<Option<f64>> = [1.0, 2.0, 4.0, 8.0, 16.0]
            .iter()
            .map(|&x| h.update(x))
            .collect();
        assert!(out[..4].iter().all(Option::is_none));
        let raw3 = 40.0 / 3.0 - 4.9;
        let raw4 = 80.0 / 3.0 - 9.8;
        let want = (raw3 + 2.0 * raw4) / 3.0;
        assert!((out[4].unwrap() - want).abs() < 1e-12);
        assert!(h.is_ready());
        h.reset();
        assert!(!h.is_ready());
    }

    #[test]
    fn hma_matches_naive_definition() {
        let xs = series(400);
        for period in [2usize, 9, 16, 20] {
            let (h2, s) = (period / 2, isqrt(period));
            let mut h = Hma::new(period);
            let mut raw = Vec::new();
            for (i, &x) in xs.iter().enumerate() {
                let got = h.update(x);
                if i + 1 >= period {
                    let half = naive_wma(&xs[i + 1 - h2..=i]);
                    let full = naive_wma(&xs[i + 1 - period..=i]);
                    raw.push(2.0 * half - full);
                }
                if raw.len() < s {
                    assert_eq!(got, None, "{period} {i}");
                    assert!(i < h.lookback());
                } else {
                    assert!(i >= h.lookback());
                    let want = naive_wma(&raw[raw.len() - s..]);
                    assert!(
                        (got.unwrap() - want).abs() <= 1e-10 * want.abs(),
                        "{period} {i}"
                    );
                }
            }
        }
    }
}
