//! Streaming technical indicators over f64 (the only place f64 is used for prices).
//!
//! Every indicator is a small state machine fed one input at a time: `update(input)` returns
//! `Some(output)` once warmed up, `value()` repeats the latest output, `is_ready()` says whether
//! there is one, `reset()` starts over (without reallocating), and `lookback()` is the number of
//! inputs consumed before the first output (TA-Lib's lookback: the first output is at index
//! `lookback()`). Updates are O(1) (amortised for rolling extremes) and allocation-free: windows
//! live in fixed ring buffers allocated once by `new`.
//!
//! Where TA-Lib has the indicator (SMA, EMA, WMA, RSI, ATR, ADX, ±DI, MACD, BBANDS, MAX, MIN,
//! MOM, ROC) the implementation follows TA-Lib's definition, seeding and warm-up with its default
//! settings (compatibility "default", unstable period 0), so first-ready indices agree and values
//! agree to ≤ 1e-9 relative error; `core/tests/talib_golden.rs` checks that against the TA-Lib 0.8
//! C library on real candles. Most repeat TA-Lib's arithmetic in TA-Lib's order and are
//! bit-identical (EMA, SMA, RSI, ADX, ±DI, the MACD line, MAX, MIN, MOM, ROC, the Bollinger
//! middle); the module docs say where and why the others differ by rounding. The indicators
//! TA-Lib lacks (HMA, DEMA/ZLEMA, ZL-HMA, ZL-MACD, Donchian, Ichimoku, volume MA) are defined in
//! their modules and tested against those definitions. Inputs are expected to be finite numbers.
//!
//! Candle-based indicators take a [`Bar`] (high, low, close). The [`Indicator`] trait gives all
//! of them one generic interface, for code that drives indicators by name.

mod adx;
mod atr;
mod bollinger;
mod channel;
mod ema;
mod ichimoku;
mod macd;
mod momentum;
pub mod named;
mod ring;
mod rsi;
mod volume;
mod wma;
mod zerolag;

pub use adx::{Adx, AdxOutput, DiOutput, Dmi};
pub use atr::{true_range, Atr};
pub use bollinger::{Bollinger, BollingerOutput};
pub use channel::{Donchian, DonchianOutput, RollingMax, RollingMin};
pub use ema::{Ema, Sma};
pub use ichimoku::{Ichimoku, IchimokuOutput};
pub use macd::{Macd, MacdOutput, ZlMacd};
pub use momentum::{Momentum, Roc};
pub use rsi::Rsi;
pub use volume::VolumeMa;
pub use wma::{Hma, Wma};
pub use zerolag::{Dema, ZlHma, Zlema};

use crate::domain::Candle;

/// The part of a candle the range-based indicators read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bar {
    pub high: f64,
    pub low: f64,
    pub close: f64,
}

impl Bar {
    pub fn new(high: f64, low: f64, close: f64) -> Self {
        Bar { high, low, close }
    }
}

impl From<&Candle> for Bar {
    fn from(c: &Candle) -> Self {
        Bar {
            high: c.high.to_f64(),
            low: c.low.to_f64(),
            close: c.close.to_f64(),
        }
    }
}

/// The common streaming interface (each type also has the same methods inherently).
pub trait Indicator {
    /// `f64` for single-series indicators, [`Bar`] for range-based ones.
    type Input;
    type Output: Copy;
    fn update(&mut self, input: Self::Input) -> Option<Self::Output>;
    fn value(&self) -> Option<Self::Output>;
    fn is_ready(&self) -> bool;
    fn reset(&mut self);
    /// Inputs consumed before the first output.
    fn lookback(&self) -> usize;
}

macro_rules! impl_indicator {
    ($($ty:ty: $input:ty => $output:ty),* $(,)?) => {$(
        impl Indicator for $ty {
            type Input = $input;
            type Output = $output;
            #[inline]
            fn update(&mut self, input: $input) -> Option<$output> {
                <$ty>::update(self, input)
            }
            fn value(&self) -> Option<$output> {
                <$ty>::value(self)
            }
            fn is_ready(&self) -> bool {
                <$ty>::is_ready(self)
            }
            fn reset(&mut self) {
                <$ty>::reset(self)
            }
            fn lookback(&self) -> usize {
                <$ty>::lookback(self)
            }
        }
    )*};
}

impl_indicator!(
    Sma: f64 => f64,
    Ema: f64 => f64,
    Wma: f64 => f64,
    Hma: f64 => f64,
    Dema: f64 => f64,
    Zlema: f64 => f64,
    ZlHma: f64 => f64,
    Macd: f64 => MacdOutput,
    ZlMacd: f64 => MacdOutput,
    Rsi: f64 => f64,
    Atr: Bar => f64,
    Dmi: Bar => DiOutput,
    Adx: Bar => AdxOutput,
    RollingMax: f64 => f64,
    RollingMin: f64 => f64,
    Donchian: Bar => DonchianOutput,
    Ichimoku: Bar => IchimokuOutput,
    Bollinger: f64 => BollingerOutput,
    Momentum: f64 => f64,
    Roc: f64 => f64,
    VolumeMa: f64 => f64,
);

/// TA-Lib's `TA_IS_ZERO` as built into the C library the golden tests use (ta-lib 0.8.x:
/// `TA_EPSILON` = 1e-14; older releases used 1e-8).
#[inline]
pub(crate) fn ta_is_zero(v: f64) -> bool {
    -TA_EPSILON < v && v < TA_EPSILON
}

/// TA-Lib's `TA_IS_ZERO_OR_NEG`.
#[inline]
pub(crate) fn ta_is_zero_or_neg(v: f64) -> bool {
    v < TA_EPSILON
}

const TA_EPSILON: f64 = 1e-14;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Price;
    use rust_decimal::Decimal;

    /// Drives any indicator through the trait and checks the shared contract: no output before
    /// `lookback()` inputs, an output at every input from then on, `value()` repeating it, and
    /// `reset()` returning to the initial state (same outputs on a replay).
    fn contract<I: Indicator>(mut ind: I, inputs: &[I::Input])
    where
        I::Input: Copy,
        I::Output: PartialEq + std::fmt::Debug,
    {
        let first: Vec<Option<I::Output>> = inputs.iter().map(|&x| ind.update(x)).collect();
        for (i, out) in first.iter().enumerate() {
            assert_eq!(out.is_some(), i >= ind.lookback(), "index {i}");
        }
        assert!(ind.is_ready());
        assert_eq!(ind.value(), *first.last().unwrap());
        ind.reset();
        assert!(!ind.is_ready());
        assert_eq!(ind.value(), None);
        let again: Vec<Option<I::Output>> = inputs.iter().map(|&x| ind.update(x)).collect();
        assert_eq!(first, again);
    }

    #[test]
    fn every_indicator_keeps_the_streaming_contract() {
        let xs: Vec<f64> = (0..400)
            .map(|i| 100.0 + (i as f64 * 0.07).sin() * 9.0 + ((i * 31) % 17) as f64 * 0.2)
            .collect();
        let bars: Vec<Bar> = xs
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let w = 0.4 + (i % 6) as f64 * 0.25;
                Bar::new(c + w, c - w * 1.1, c)
            })
            .collect();
        contract(Sma::new(20), &xs);
        contract(Ema::new(20), &xs);
        contract(Wma::new(20), &xs);
        contract(Hma::new(20), &xs);
        contract(Dema::new(20), &xs);
        contract(Zlema::new(20), &xs);
        contract(ZlHma::new(20), &xs);
        contract(Macd::new(12, 26, 9), &xs);
        contract(ZlMacd::new(12, 26, 9), &xs);
        contract(Rsi::new(14), &xs);
        contract(Atr::new(14), &bars);
        contract(Dmi::new(14), &bars);
        contract(Adx::new(14), &bars);
        contract(RollingMax::new(20), &xs);
        contract(RollingMin::new(20), &xs);
        contract(Donchian::new(20), &bars);
        contract(Ichimoku::standard(), &bars);
        contract(Bollinger::new(20, 2.0, 2.0), &xs);
        contract(Momentum::new(10), &xs);
        contract(Roc::new(10), &xs);
        contract(VolumeMa::new(20), &xs);
    }

    #[test]
    fn bar_from_candle() {
        let c = Candle {
            open_time: 0,
            open: Price::new(Decimal::new(1005, 1)),
            high: Price::new(Decimal::new(1012, 1)),
            low: Price::new(Decimal::new(999, 1)),
            close: Price::new(Decimal::new(1010, 1)),
            volume: Decimal::ONE,
        };
        assert_eq!(Bar::from(&c), Bar::new(101.2, 99.9, 101.0));
    }

    #[test]
    fn epsilon_matches_talib_0_8() {
        assert!(ta_is_zero(0.0) && ta_is_zero(-5e-15) && !ta_is_zero(1e-13));
        assert!(ta_is_zero_or_neg(-1.0) && !ta_is_zero_or_neg(1e-13));
    }
}
