//! Ichimoku Kinko Hyo (no TA-Lib counterpart).
//!
//! With `hh(n)`/`ll(n)` the highest high / lowest low of the last n bars including the current
//! one, at bar t:
//! - tenkan-sen `= (hh(9) + ll(9))/2`, kijun-sen `= (hh(26) + ll(26))/2`;
//! - senkou span A computed at t `= (tenkan + kijun)/2`, senkou span B computed at t
//!   `= (hh(52) + ll(52))/2`. Both are *plotted* `displacement` (26) bars ahead, so the cloud
//!   drawn at bar t is the pair computed at bar t − 26. [`IchimokuOutput`] gives both: `senkou_a`
//!   / `senkou_b` are the cloud at the current bar (computed 26 bars ago; what "price above the
//!   cloud" compares against) and `senkou_a_raw` / `senkou_b_raw` are the values computed now (the
//!   cloud 26 bars in the future; what "cloud green" usually looks at);
//! - chikou span = the current close, plotted 26 bars back. Its usual reading compares it with
//!   the price at the bar where it is plotted, so the output carries `chikou` (this close) and
//!   `chikou_ref_close` (the close of 26 bars ago); [`IchimokuOutput::chikou_above_price`] is that
//!   comparison.
//!
//! The shift is a full `displacement` bars (t − 26); charting packages that shift by 25 (counting
//! the current bar as the first) can be matched with `displacement = 25`. The first output is at
//! index `max(tenkan, kijun, senkou_b) − 1 + displacement` (77 for 9/26/52/26), when the
//! displaced span B first exists; [`Ichimoku::tenkan`] and [`Ichimoku::kijun`] are available
//! earlier.

use super::ring::{Ring, WindowExtreme};
use super::Bar;

/// One Ichimoku reading (see the module docs for the displacement convention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IchimokuOutput {
    pub tenkan: f64,
    pub kijun: f64,
    /// Span A plotted at this bar (computed `displacement` bars ago).
    pub senkou_a: f64,
    /// Span B plotted at this bar (computed `displacement` bars ago).
    pub senkou_b: f64,
    /// Span A computed at this bar (plotted `displacement` bars ahead).
    pub senkou_a_raw: f64,
    /// Span B computed at this bar (plotted `displacement` bars ahead).
    pub senkou_b_raw: f64,
    /// This bar's close (the chikou span, plotted `displacement` bars back).
    pub chikou: f64,
    /// The close `displacement` bars ago: the price the chikou span is drawn against.
    pub chikou_ref_close: f64,
}

impl IchimokuOutput {
    /// Upper edge of the cloud at this bar.
    pub fn cloud_top(&self) -> f64 {
        self.senkou_a.max(self.senkou_b)
    }
    /// Lower edge of the cloud at this bar.
    pub fn cloud_bottom(&self) -> f64 {
        self.senkou_a.min(self.senkou_b)
    }
    /// Chikou span above the price it is plotted against (`close > close[t − displacement]`).
    pub fn chikou_above_price(&self) -> bool {
        self.chikou > self.chikou_ref_close
    }
}

#[derive(Clone, Debug)]
struct Midpoint {
    period: usize,
    hi: WindowExtreme<true>,
    lo: WindowExtreme<false>,
}

impl Midpoint {
    fn new(period: usize) -> Self {
        assert!(period >= 1, "Ichimoku periods must be ≥ 1");
        Midpoint {
            period,
            hi: WindowExtreme::new(period),
            lo: WindowExtreme::new(period),
        }
    }
    /// Midpoint of the (possibly partial) window; the caller decides readiness.
    #[inline]
    fn push(&mut self, bar: Bar) -> f64 {
        (self.hi.push(bar.high) + self.lo.push(bar.low)) / 2.0
    }
    fn reset(&mut self) {
        self.hi.reset();
        self.lo.reset();
    }
}

/// Streaming Ichimoku. Parameters: tenkan, kijun, senkou B periods and the displacement.
#[derive(Clone, Debug)]
pub struct Ichimoku {
    tenkan: Midpoint,
    kijun: Midpoint,
    span_b: Midpoint,
    displacement: usize,
    raw_a: Ring,
    raw_b: Ring,
    closes: Ring,
    /// Bars seen, capped at `lookback + 1`.
    count: usize,
    tenkan_v: f64,
    kijun_v: f64,
    value: Option<IchimokuOutput>,
}

impl Ichimoku {
    pub fn new(tenkan: usize, kijun: usize, senkou_b: usize, displacement: usize) -> Self {
        assert!(displacement >= 1, "Ichimoku displacement must be ≥ 1");
        Ichimoku {
            tenkan: Midpoint::new(tenkan),
            kijun: Midpoint::new(kijun),
            span_b: Midpoint::new(senkou_b),
            displacement,
            raw_a: Ring::new(displacement),
            raw_b: Ring::new(displacement),
            closes: Ring::new(displacement),
            count: 0,
            tenkan_v: f64::NAN,
            kijun_v: f64::NAN,
            value: None,
        }
    }
    /// The classic 9 / 26 / 52 with a 26-bar displacement.
    pub fn standard() -> Self {
        Ichimoku::new(9, 26, 52, 26)
    }
    pub fn lookback(&self) -> usize {
        self.tenkan
            .period
            .max(self.kijun.period)
            .max(self.span_b.period)
            - 1
            + self.displacement
    }
    #[inline]
    pub fn update(&mut self, bar: Bar) -> Option<IchimokuOutput> {
        let tenkan = self.tenkan.push(bar);
        let kijun = self.kijun.push(bar);
        let span_b = self.span_b.push(bar);
        let span_a = (tenkan + kijun) / 2.0;
        // Values computed `displacement` bars ago (garbage until the counts below say ready).
        let shifted_a = self.raw_a.push(span_a);
        let shifted_b = self.raw_b.push(span_b);
        let old_close = self.closes.push(bar.close);
        self.tenkan_v = tenkan;
        self.kijun_v = kijun;
        let lookback = self.lookback();
        if self.count < lookback {
            self.count += 1;
            return None;
        }
        self.count = lookback + 1;
        let out = IchimokuOutput {
            tenkan,
            kijun,
            senkou_a: shifted_a,
            senkou_b: shifted_b,
            senkou_a_raw: span_a,
            senkou_b_raw: span_b,
            chikou: bar.close,
            chikou_ref_close: old_close,
        };
        self.value = Some(out);
        Some(out)
    }
    /// Tenkan-sen, from index `tenkan − 1`.
    pub fn tenkan(&self) -> Option<f64> {
        (self.count >= self.tenkan.period).then_some(self.tenkan_v)
    }
    /// Kijun-sen, from index `kijun − 1`.
    pub fn kijun(&self) -> Option<f64> {
        (self.count >= self.kijun.period).then_some(self.kijun_v)
    }
    pub fn value(&self) -> Option<IchimokuOutput> {
        self.value
    }
    pub fn is_ready(&self) -> bool {
        self.value.is_some()
    }
    pub fn reset(&mut self) {
        self.tenkan.reset();
        self.kijun.reset();
        self.span_b.reset();
        self.raw_a.reset();
        self.raw_b.reset();
        self.closes.reset();
        self.count = 0;
        self.tenkan_v = f64::NAN;
        self.kijun_v = f64::NAN;
        self.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(n: usize) -> Vec<Bar> {
        (0..n)
            .map(|i| {
                let mid = 200.0 + (i as f64 * 0.11).sin() * 15.0 + ((i * 13) % 7) as f64;
                let half = 1.0 + (i % 5) as f64 * 0.5;
                Bar::new(mid + half, mid - half, mid + 0.3)
            })
            .collect()
    }

    fn mid(bars: &[Bar], t: usize, n: usize) -> f64 {
        let w = &bars[t + 1 - n..=t];
        let hh = w.iter().map(|b| b.high).fold(f64::NEG_INFINITY, f64::max);
        let ll = w.iter().map(|b| b.low).fold(f64::INFINITY, f64::min);
        (hh + ll) / 2.0
    }

    #[test]
    fn matches_naive_definition_with_displacement() {
        let bars = bars(300);
        let (tk, kj, sb, d) = (9, 26, 52, 26);
        let mut ich = Ichimoku::new(tk, kj, sb, d);
        assert_eq!(ich.lookback(), 77);
        for (t, &b) in bars.iter().enumerate() {
            let got = ich.update(b);
            assert_eq!(ich.tenkan().is_some(), t + 1 >= tk, "{t}");
            assert_eq!(ich.kijun().is_some(), t + 1 >= kj, "{t}");
            if t < 77 {
                assert_eq!(got, None, "{t}");
                continue;
            }
            let o = got.expect("ready");
            let span_a = |t: usize| (mid(&bars, t, tk) + mid(&bars, t, kj)) / 2.0;
            assert_eq!(o.tenkan, mid(&bars, t, tk));
            assert_eq!(o.kijun, mid(&bars, t, kj));
            assert_eq!(o.senkou_a_raw, span_a(t));
            assert_eq!(o.senkou_b_raw, mid(&bars, t, sb));
            assert_eq!(o.senkou_a, span_a(t - d));
            assert_eq!(o.senkou_b, mid(&bars, t - d, sb));
            assert_eq!(o.chikou, bars[t].close);
            assert_eq!(o.chikou_ref_close, bars[t - d].close);
            assert_eq!(o.chikou_above_price(), bars[t].close > bars[t - d].close);
            assert!(o.cloud_top() >= o.cloud_bottom());
        }
        ich.reset();
        assert!(!ich.is_ready() && ich.tenkan().is_none());
    }

    #[test]
    fn small_parameters_by_hand() {
        // tenkan 1, kijun 2, span B 2, displacement 1 → first output at index 2.
        // Bars (h, l, c): (10, 8, 9), (12, 9, 11), (11, 7, 8).
        // t1: tenkan = 10.5, kijun = (12 + 8)/2 = 10, A = 10.25, B = 10.
        // t2: tenkan = 9, kijun = (12 + 7)/2 = 9.5, A = 9.25, B = 9.5;
        //     shifted A/B = t1's 10.25 / 10; chikou 8 vs close of t1 = 11.
        let mut ich = Ichimoku::new(1, 2, 2, 1);
        assert_eq!(ich.update(Bar::new(10.0, 8.0, 9.0)), None);
        assert_eq!(ich.update(Bar::new(12.0, 9.0, 11.0)), None);
        let o = ich.update(Bar::new(11.0, 7.0, 8.0)).unwrap();
        assert_eq!(
            o,
            IchimokuOutput {
                tenkan: 9.0,
                kijun: 9.5,
                senkou_a: 10.25,
                senkou_b: 10.0,
                senkou_a_raw: 9.25,
                senkou_b_raw: 9.5,
                chikou: 8.0,
                chikou_ref_close: 11.0,
            }
        );
        assert!(!o.chikou_above_price());
        assert_eq!((o.cloud_top(), o.cloud_bottom()), (10.25, 10.0));
    }
}
