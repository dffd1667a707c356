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
//!
//! TA-Lib divides (it does not multiply by 1/N) and fuses nothing here, and so does this module:
//! the outputs are bit-identical to TA-Lib's. That is seven divisions per bar, and the divider
//! is what limits the speed of both: a division's result is exactly rounded, and replacing one
//! by a multiplication by the reciprocal would change bits. The pairs that share a bar (−DM/N
//! and +DM/N, −DM/TR and +DM/TR) go through one two-lane SSE2 division each — the same bits as
//! two scalar ones, and less divider time where the divider works on two lanes at once (on the
//! project's AMD Zen 3 machine it takes as long per lane either way). The one-bar DMs are selected without branches
//! (their signs are unpredictable); adding a zero DM equals TA-Lib's not adding it, because the
//! sums are never −0.
//!
//! [`Adx::batch`] fills TA-Lib's ADX array (NaN during warm-up), and optionally the +DI / −DI
//! arrays, from high, low and close arrays with the same step functions as the streaming update.

use super::atr::true_range;
use super::{check_lengths, ta_is_zero, Bar, WARM_UP};

/// `[a0/b0, a1/b1]`, one instruction on x86-64 (IEEE division is exact per lane either way).
#[inline(always)]
fn div2(a: [f64; 2], b: [f64; 2]) -> [f64; 2] {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_cvtsd_f64, _mm_div_pd, _mm_set_pd, _mm_unpackhi_pd};
        // SAFETY: SSE2 is part of the x86-64 baseline, so every x86-64 CPU has it.
        unsafe {
            let q = _mm_div_pd(_mm_set_pd(a[1], a[0]), _mm_set_pd(b[1], b[0]));
            [_mm_cvtsd_f64(q), _mm_cvtsd_f64(_mm_unpackhi_pd(q, q))]
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        [a[0] / b[0], a[1] / b[1]]
    }
}

/// One bar's `(−DM1, +DM1, TR1)` against the previous bar.
#[inline(always)]
fn one_bar(high: f64, low: f64, prev_high: f64, prev_low: f64, prev_close: f64) -> [f64; 3] {
    let up = high - prev_high;
    let down = prev_low - low;
    // The two conditions exclude each other (up < down vs up > down), so TA-Lib's `else if`
    // is two independent selects.
    let minus = if down > 0.0 && up < down { down } else { 0.0 };
    let plus = if up > 0.0 && up > down { up } else { 0.0 };
    [
        minus,
        plus,
        true_range(Bar::new(high, low, 0.0), prev_close),
    ]
}

/// Wilder sums of −DM, +DM and TR.
#[derive(Clone, Copy, Debug)]
struct Sums {
    minus: f64,
    plus: f64,
    tr: f64,
}

impl Sums {
    const ZERO: Sums = Sums {
        minus: 0.0,
        plus: 0.0,
        tr: 0.0,
    };

    /// Warm-up: plain sums.
    #[inline(always)]
    fn add(&mut self, [minus, plus, tr]: [f64; 3]) {
        self.minus += minus;
        self.plus += plus;
        self.tr += tr;
    }

    /// Smooths the sums with one more bar and returns `(+DI, −DI, DX)`, DX NaN where TA-Lib
    /// skips it.
    #[inline(always)]
    fn smooth(&mut self, [minus, plus, tr]: [f64; 3], n: f64) -> (f64, f64, f64) {
        let [qm, qp] = div2([self.minus, self.plus], [n, n]);
        self.minus = self.minus - qm + minus;
        self.plus = self.plus - qp + plus;
        self.tr = self.tr - self.tr / n + tr;
        if ta_is_zero(self.tr) {
            return (0.0, 0.0, f64::NAN);
        }
        let [m, p] = div2([self.minus, self.plus], [self.tr, self.tr]);
        let (minus_di, plus_di) = (100.0 * m, 100.0 * p);
        let sum = minus_di + plus_di;
        let dx = if ta_is_zero(sum) {
            f64::NAN
        } else {
            100.0 * ((minus_di - plus_di).abs() / sum)
        };
        (plus_di, minus_di, dx)
    }
}

/// One ADX step, `(prev·(N−1) + DX)/N` (TA-Lib's order, a true division).
#[inline(always)]
fn adx_step(prev: f64, dx: f64, keep: f64, n: f64) -> f64 {
    (prev * keep + dx) / n
}

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
    n: f64,
    /// Bars seen, capped at `period + 1`.
    count: usize,
    prev_high: f64,
    prev_low: f64,
    prev_close: f64,
    sums: Sums,
    value: DiOutput,
    /// DX of the latest bar; NaN when undefined.
    dx: f64,
}

impl Dmi {
    pub fn new(period: usize) -> Self {
        assert!(period >= 2, "DI/ADX period must be ≥ 2 (TA-Lib's range)");
        Dmi {
            period,
            n: period as f64,
            count: 0,
            prev_high: 0.0,
            prev_low: 0.0,
            prev_close: 0.0,
            sums: Sums::ZERO,
            value: DiOutput {
                plus_di: f64::NAN,
                minus_di: f64::NAN,
            },
            dx: f64::NAN,
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
        if self.count > self.period {
            let one = self.advance(bar);
            self.smooth(one);
            return Some(self.value);
        }
        self.warm_up(bar)
    }
    /// The first `period + 1` updates (the steady state is the first branch of `update`).
    #[inline]
    fn warm_up(&mut self, bar: Bar) -> Option<DiOutput> {
        if self.count == 0 {
            self.count = 1;
            self.prev_high = bar.high;
            self.prev_low = bar.low;
            self.prev_close = bar.close;
            return None;
        }
        let one = self.advance(bar);
        if self.count < self.period {
            // Bars 1..N−1: plain sums.
            self.count += 1;
            self.sums.add(one);
            return None;
        }
        self.count = self.period + 1;
        self.smooth(one);
        Some(self.value)
    }
    /// The bar's one-bar DMs and true range; remembers the bar.
    #[inline(always)]
    fn advance(&mut self, bar: Bar) -> [f64; 3] {
        let one = one_bar(
            bar.high,
            bar.low,
            self.prev_high,
            self.prev_low,
            self.prev_close,
        );
        self.prev_high = bar.high;
        self.prev_low = bar.low;
        self.prev_close = bar.close;
        one
    }
    #[inline(always)]
    fn smooth(&mut self, one: [f64; 3]) {
        let (plus_di, minus_di, dx) = self.sums.smooth(one, self.n);
        self.value = DiOutput { plus_di, minus_di };
        self.dx = dx;
    }
    /// DX of the latest bar: `None` during warm-up and on bars where TA-Lib skips it (zero true
    /// range or zero DI sum).
    pub fn dx(&self) -> Option<f64> {
        (!self.dx.is_nan()).then_some(self.dx)
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
    /// N − 1 as f64.
    keep: f64,
    /// DI bars seen, capped at `period`.
    dx_count: usize,
    sum_dx: f64,
    adx: f64,
}

impl Adx {
    pub fn new(period: usize) -> Self {
        Adx {
            dmi: Dmi::new(period),
            keep: period.saturating_sub(1) as f64,
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
        if self.dx_count >= self.dmi.period {
            let dx = self.dmi.dx;
            if !dx.is_nan() {
                self.adx = adx_step(self.adx, dx, self.keep, self.dmi.n);
            }
        } else if !self.warm_up() {
            return None;
        }
        Some(AdxOutput {
            adx: self.adx,
            plus_di: di.plus_di,
            minus_di: di.minus_di,
        })
    }
    /// The DI bars before the first ADX: sums their DXs; true once the ADX is ready.
    #[inline]
    fn warm_up(&mut self) -> bool {
        self.dx_count += 1;
        if let Some(dx) = self.dmi.dx() {
            self.sum_dx += dx;
        }
        if self.dx_count < self.dmi.period {
            return false;
        }
        self.adx = self.sum_dx / self.dmi.n;
        true
    }
    /// TA-Lib's array form of `TA_ADX`: `adx[i]` is the ADX after bars `..=i` given as separate
    /// high, low and close arrays (NaN before index `2·period − 1`), bit-identical to feeding
    /// the bars to [`Adx::update`] one by one.
    ///
    /// # Panics
    /// If `period` < 2 or the slices differ in length.
    pub fn batch(period: usize, high: &[f64], low: &[f64], close: &[f64], adx: &mut [f64]) {
        assert!(period >= 2, "DI/ADX period must be ≥ 2 (TA-Lib's range)");
        check_lengths(close.len(), &[high.len(), low.len(), adx.len()]);
        adx_batch(period, high, low, close, adx, &mut [], &mut []);
    }
    /// [`Adx::batch`] that also fills +DI and −DI (NaN before index `period`, like
    /// `TA_PLUS_DI` / `TA_MINUS_DI` and [`Adx::di`]).
    ///
    /// # Panics
    /// If `period` < 2 or the slices differ in length.
    pub fn batch_with_di(
        period: usize,
        high: &[f64],
        low: &[f64],
        close: &[f64],
        adx: &mut [f64],
        plus_di: &mut [f64],
        minus_di: &mut [f64],
    ) {
        assert!(period >= 2, "DI/ADX period must be ≥ 2 (TA-Lib's range)");
        check_lengths(
            close.len(),
            &[
                high.len(),
                low.len(),
                adx.len(),
                plus_di.len(),
                minus_di.len(),
            ],
        );
        adx_batch(period, high, low, close, adx, plus_di, minus_di);
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

/// The batch ADX: `plus_out` / `minus_out` are either empty (not wanted) or full length.
#[inline(always)]
fn adx_kernel(
    period: usize,
    high: &[f64],
    low: &[f64],
    close: &[f64],
    adx_out: &mut [f64],
    plus_out: &mut [f64],
    minus_out: &mut [f64],
) {
    if plus_out.is_empty() {
        adx_run::<false>(period, high, low, close, adx_out, plus_out, minus_out);
    } else {
        adx_run::<true>(period, high, low, close, adx_out, plus_out, minus_out);
    }
}

/// The batch ADX over the arrays (no target-specific variant: the divider sets the pace).
#[inline]
fn adx_batch(
    period: usize,
    high: &[f64],
    low: &[f64],
    close: &[f64],
    adx_out: &mut [f64],
    plus_out: &mut [f64],
    minus_out: &mut [f64],
) {
    adx_kernel(period, high, low, close, adx_out, plus_out, minus_out);
}

/// The bars `from..to` of the input arrays, with their predecessors, as equal-length slices
/// (so loops over them have no bounds checks).
struct Window<'a> {
    high: &'a [f64],
    low: &'a [f64],
    prev_high: &'a [f64],
    prev_low: &'a [f64],
    prev_close: &'a [f64],
}

impl<'a> Window<'a> {
    #[inline(always)]
    fn new(high: &'a [f64], low: &'a [f64], close: &'a [f64], from: usize, to: usize) -> Self {
        Window {
            high: &high[from..to],
            low: &low[from..to],
            prev_high: &high[from - 1..to - 1],
            prev_low: &low[from - 1..to - 1],
            prev_close: &close[from - 1..to - 1],
        }
    }
    #[inline(always)]
    fn len(&self) -> usize {
        self.high.len()
    }
    #[inline(always)]
    fn one_bar(&self, j: usize) -> [f64; 3] {
        one_bar(
            self.high[j],
            self.low[j],
            self.prev_high[j],
            self.prev_low[j],
            self.prev_close[j],
        )
    }
}

#[inline(always)]
fn adx_run<const DI: bool>(
    period: usize,
    high: &[f64],
    low: &[f64],
    close: &[f64],
    adx_out: &mut [f64],
    plus_out: &mut [f64],
    minus_out: &mut [f64],
) {
    let len = close.len();
    let lookback = 2 * period - 1;
    adx_out[..lookback.min(len)].fill(WARM_UP);
    if DI {
        plus_out[..period.min(len)].fill(WARM_UP);
        minus_out[..period.min(len)].fill(WARM_UP);
    }
    if len <= period {
        return;
    }
    let n = period as f64;
    let keep = (period - 1) as f64;
    let mut sums = Sums::ZERO;
    let w = Window::new(high, low, close, 1, period);
    for j in 0..w.len() {
        sums.add(w.one_bar(j));
    }
    // Bars N..=2N−1: DIs, and the DXs whose mean is the first ADX.
    let end = (lookback + 1).min(len);
    let w = Window::new(high, low, close, period, end);
    let mut sum_dx = 0.0;
    for j in 0..w.len() {
        let (plus_di, minus_di, dx) = sums.smooth(w.one_bar(j), n);
        if DI {
            plus_out[period + j] = plus_di;
            minus_out[period + j] = minus_di;
        }
        if !dx.is_nan() {
            sum_dx += dx;
        }
    }
    if len <= lookback {
        return;
    }
    let mut adx = sum_dx / n;
    adx_out[lookback] = adx;
    let from = lookback + 1;
    let w = Window::new(high, low, close, from, len);
    let out = &mut adx_out[from..len];
    let (plus_out, minus_out) = if DI {
        (&mut plus_out[from..len], &mut minus_out[from..len])
    } else {
        (&mut plus_out[..0], &mut minus_out[..0])
    };
    for j in 0..out.len() {
        let (plus_di, minus_di, dx) = sums.smooth(w.one_bar(j), n);
        if DI {
            plus_out[j] = plus_di;
            minus_out[j] = minus_di;
        }
        if !dx.is_nan() {
            adx = adx_step(adx, dx, keep, n);
        }
        out[j] = adx;
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
