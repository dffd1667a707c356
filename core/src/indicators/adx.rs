//! Directional movement (+DI, −DI) and ADX, reproducing TA-Lib's `TA_PLUS_DI`, `TA_MINUS_DI` and
//! `TA_ADX` recurrences with unstable period 0.
//!
//! For each bar after the first: `up = high − prev high`, `down = prev low − low`;
//! `−DM1 = down` if `down > 0 && up < down`, else `+DM1 = up` if `up > 0 && up > down` (a tie
//! gives neither). The first N−1 one-bar DMs and true ranges (bars 1..N−1) are summed; from bar N
//! on each is smoothed Wilder's way, `s = s − s/N + today`. Then
//! `±DI = 100·(±DM_N / TR_N)` (0 when TR_N is zero within TA-Lib's epsilon), first at index N, and
//! `DX = 100·|−DI − +DI| / (−DI + +DI)` (skipped when either denominator is zero). The first ADX
//! is the mean of the DXs of bars N..=2N−1 (at index 2N−1); then
//! `ADX = (prev·(N−1) + DX)/N`, keeping the previous ADX on a bar without a DX.

use super::atr::true_range;
use super::{ta_is_zero, Bar};

/// +DI and −DI of one bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiOutput {
    pub plus_di: f64,
    pub minus_di: f64,
}

/// ADX with the same bar's +DI and −DI.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdxOutput {
    pub adx: f64,
    pub plus_di: f64,
    pub minus_di: f64,
}

/// Directional indicators +DI / −DI (Wilder). First output at index `period`.
#[derive(Clone, Debug)]
pub struct Dmi {
    period: usize,
    /// Bars seen, capped at `period + 1`.
    count: usize,
    prev_high: f64,
    prev_low: f64,
    prev_close: f64,
    plus_dm: f64,
    minus_dm: f64,
    tr: f64,
    value: DiOutput,
    /// DX of the latest bar, when defined.
    dx: Option<f64>,
}

impl Dmi {
    pub fn new(period: usize) -> Self {
        assert!(period >= 2, "DI/ADX period must be ≥ 2 (TA-Lib's range)");
        Dmi {
            period,
            count: 0,
            prev_high: 0.0,
            prev_low: 0.0,
            prev_close: 0.0,
            plus_dm: 0.0,
            minus_dm: 0.0,
            tr: 0.0,
            value: DiOutput {
                plus_di: f64::NAN,
                minus_di: f64::NAN,
            },
            dx: None,
        }
    }
    pub fn period(&self) -> usize {
        self.period
    }
    pub fn lookback(&self) -> usize {
        self.period
    }
    #[inline]
    pub fn update(&mut self, bar: Bar) -> Option<DiOutput> {
        if self.count == 0 {
            self.count = 1;
            self.prev_high = bar.high;
            self.prev_low = bar.low;
            self.prev_close = bar.close;
            return None;
        }
        let up = bar.high - self.prev_high;
        let down = self.prev_low - bar.low;
        self.prev_high = bar.high;
        self.prev_low = bar.low;
        let tr = true_range(bar, self.prev_close);
        self.prev_close = bar.close;
        let n = self.period as f64;
        if self.count < self.period {
            // Bars 1..N−1: plain sums.
            self.count += 1;
            if down > 0.0 && up < down {
                self.minus_dm += down;
            } else if up > 0.0 && up > down {
                self.plus_dm += up;
            }
            self.tr += tr;
            return None;
        }
        self.count = self.period + 1;
        self.minus_dm -= self.minus_dm / n;
        self.plus_dm -= self.plus_dm / n;
        if down > 0.0 && up < down {
            self.minus_dm += down;
        } else if up > 0.0 && up > down {
            self.plus_dm += up;
        }
        self.tr = self.tr - self.tr / n + tr;
        self.dx = None;
        self.value = if ta_is_zero(self.tr) {
            DiOutput {
                plus_di: 0.0,
                minus_di: 0.0,
            }
        } else {
            let minus_di = 100.0 * (self.minus_dm / self.tr);
            let plus_di = 100.0 * (self.plus_dm / self.tr);
            let sum = minus_di + plus_di;
            if !ta_is_zero(sum) {
                self.dx = Some(100.0 * ((minus_di - plus_di).abs() / sum));
            }
            DiOutput { plus_di, minus_di }
        };
        Some(self.value)
    }
    /// DX of the latest bar: `None` during warm-up and on bars where TA-Lib skips it (zero true
    /// range or zero DI sum).
    pub fn dx(&self) -> Option<f64> {
        self.dx
    }
    pub fn value(&self) -> Option<DiOutput> {
        self.is_ready().then_some(self.value)
    }
    pub fn is_ready(&self) -> bool {
        self.count > self.period
    }
    pub fn reset(&mut self) {
        *self = Dmi::new(self.period);
    }
}

/// Average directional index with +DI/−DI. Updates return once the ADX is ready (index
/// `2·period − 1`); the DIs alone are available earlier through [`Adx::di`] (from index
/// `period`, like TA-Lib's PLUS_DI / MINUS_DI).
#[derive(Clone, Debug)]
pub struct Adx {
    dmi: Dmi,
    /// DI bars seen, capped at `period`.
    dx_count: usize,
    sum_dx: f64,
    adx: f64,
}

impl Adx {
    pub fn new(period: usize) -> Self {
        Adx {
            dmi: Dmi::new(period),
            dx_count: 0,
            sum_dx: 0.0,
            adx: f64::NAN,
        }
    }
    pub fn period(&self) -> usize {
        self.dmi.period()
    }
    pub fn lookback(&self) -> usize {
        2 * self.period() - 1
    }
    #[inline]
    pub fn update(&mut self, bar: Bar) -> Option<AdxOutput> {
        let di = self.dmi.update(bar)?;
        let n = self.dmi.period();
        if self.dx_count >= n {
            if let Some(dx) = self.dmi.dx() {
                self.adx = (self.adx * (n - 1) as f64 + dx) / n as f64;
            }
        } else {
            self.dx_count += 1;
            if let Some(dx) = self.dmi.dx() {
                self.sum_dx += dx;
            }
            if self.dx_count < n {
                return None;
            }
            self.adx = self.sum_dx / n as f64;
        }
        Some(AdxOutput {
            adx: self.adx,
            plus_di: di.plus_di,
            minus_di: di.minus_di,
        })
    }
    /// +DI / −DI of the latest bar, from index `period`.
    pub fn di(&self) -> Option<DiOutput> {
        self.dmi.value()
    }
    pub fn value(&self) -> Option<AdxOutput> {
        let di = self.dmi.value()?;
        self.is_ready().then_some(AdxOutput {
            adx: self.adx,
            plus_di: di.plus_di,
            minus_di: di.minus_di,
        })
    }
    pub fn is_ready(&self) -> bool {
        self.dx_count >= self.dmi.period()
    }
    pub fn reset(&mut self) {
        self.dmi.reset();
        self.dx_count = 0;
        self.sum_dx = 0.0;
        self.adx = f64::NAN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straight transcription of the definitions in the module docs over a whole series.
    fn naive(bars: &[Bar], n: usize) -> (Vec<Option<DiOutput>>, Vec<Option<f64>>) {
        let nf = n as f64;
        let (mut pdm, mut mdm, mut tr) = (0.0, 0.0, 0.0);
        let mut di = vec![None; bars.len()];
        let mut adx = vec![None; bars.len()];
        let mut dxs = Vec::new();
        let mut prev_adx = 0.0;
        for i in 1..bars.len() {
            let (b, p) = (bars[i], bars[i - 1]);
            let up = b.high - p.high;
            let down = p.low - b.low;
            let (p1, m1) = if down > 0.0 && up < down {
                (0.0, down)
            } else if up > 0.0 && up > down {
                (up, 0.0)
            } else {
                (0.0, 0.0)
            };
            let tr1 = (b.high - b.low)
                .max((b.high - p.close).abs())
                .max((b.low - p.close).abs());
            if i < n {
                pdm += p1;
                mdm += m1;
                tr += tr1;
                continue;
            }
            pdm = pdm - pdm / nf + p1;
            mdm = mdm - mdm / nf + m1;
            tr = tr - tr / nf + tr1;
            let (pdi, mdi) = (100.0 * (pdm / tr), 100.0 * (mdm / tr));
            di[i] = Some(DiOutput {
                plus_di: pdi,
                minus_di: mdi,
            });
            let dx = 100.0 * ((mdi - pdi).abs() / (mdi + pdi));
            if i < 2 * n - 1 {
                dxs.push(dx);
            } else if i == 2 * n - 1 {
                dxs.push(dx);
                prev_adx = dxs.iter().sum::<f64>() / nf;
                adx[i] = Some(prev_adx);
            } else {
                prev_adx = (prev_adx * (nf - 1.0) + dx) / nf;
                adx[i] = Some(prev_adx);
            }
        }
        (di, adx)
    }

    fn bars() -> Vec<Bar> {
        (0..200)
            .map(|i| {
                let mid = 100.0 + (i as f64 * 0.13).sin() * 8.0 + (i % 9) as f64 * 0.4;
                let half = 0.5 + (i % 4) as f64 * 0.3;
                Bar::new(mid + half, mid - half, mid + half * 0.2)
            })
            .collect()
    }

    #[test]
    fn dmi_and_adx_match_naive_definition() {
        let bars = bars();
        let n = 5;
        let (want_di, want_adx) = naive(&bars, n);
        let mut dmi = Dmi::new(n);
        let mut adx = Adx::new(n);
        for (i, &b) in bars.iter().enumerate() {
            assert_eq!(dmi.update(b), want_di[i], "di {i}");
            let got = adx.update(b);
            assert_eq!(adx.di(), want_di[i], "adx.di {i}");
            match (got, want_adx[i]) {
                (None, None) => assert!(i < 2 * n - 1),
                (Some(o), Some(w)) => {
                    assert!((o.adx - w).abs() < 1e-9, "{i}");
                    assert_eq!(o.plus_di, want_di[i].unwrap().plus_di);
                    assert_eq!(adx.value(), Some(o));
                }
                other => panic!("{i}: {other:?}"),
            }
        }
        adx.reset();
        assert!(adx.value().is_none() && adx.di().is_none());
    }

    #[test]
    fn dm_tie_and_inside_bar_count_nothing() {
        // N = 2. Bar 1 is an outside bar with equal up and down moves (a tie → no DM),
        // bar 2 an inside bar (no DM).
        let mut d = Dmi::new(2);
        d.update(Bar::new(10.0, 8.0, 9.0));
        assert_eq!(d.update(Bar::new(11.0, 7.0, 9.0)), None);
        let out = d.update(Bar::new(10.0, 8.0, 9.0)).unwrap();
        assert_eq!(out.plus_di, 0.0);
        assert_eq!(out.minus_di, 0.0);
        // DI sum zero → no DX.
        assert_eq!(d.dx(), None);
    }

    #[test]
    fn flat_bars_give_zero_di_and_keep_adx() {
        let mut a = Adx::new(2);
        let flat = Bar::new(5.0, 5.0, 5.0);
        let outs: Vec<Option<AdxOutput>> = (0..6).map(|_| a.update(flat)).collect();
        let first = outs[3].unwrap();
        assert_eq!(first.adx, 0.0);
        assert_eq!(first.plus_di, 0.0);
        assert_eq!(outs[5], Some(first));
    }
}
