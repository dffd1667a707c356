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
//! C library on real candles. Most repeat TA-Lib's arithmetic in TA-Lib's order — including its
//! fused multiply-adds (TA-Lib 0.8 calls `fma()` in EMA and ATR) — and are bit-identical (EMA,
//! SMA, RSI, ATR, ADX, ±DI, MACD with its signal and histogram, MAX, MIN, MOM, ROC, the Bollinger
//! middle); the module docs say where and why the others differ by rounding.
//!
//! EMA, RSI, ATR, ADX (with ±DI) and MACD also have a batch form, TA-Lib's array API:
//! `Ema::batch(period, &input, &mut output)` and the like fill an output slice (NaN during
//! warm-up) with the same arithmetic as the streaming update, so the two give the same bits
//! (tested). Where FMA is involved the batch form is compiled for the CPU's FMA unit when it has
//! one (checked once per call), which is what makes it faster than the streaming loop. The indicators
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
pub use macd::{Macd, MacdArrays, MacdOutput, ZlMacd};
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

/// The value an output slot of a batch function holds during warm-up (TA-Lib's arrays hold no
/// value there; NumPy's wrapper shows NaN).
pub const WARM_UP: f64 = f64::NAN;

/// Defines `fn $name(args)` that runs `$kernel(args)` (an `#[inline(always)]` function) compiled
/// with `$features` when the CPU has them, and as plain code otherwise. Both produce the same
/// values: the kernels' arithmetic is IEEE-exact per operation (`f64::mul_add` is a fused
/// multiply-add whether it compiles to the instruction or to libm's `fma`), so the features
/// only change the speed — the instruction instead of a call, and wider vectors. Batch
/// functions check once per call; the streaming updates cannot (they are inlined into callers
/// compiled for the baseline x86-64), which is why the batch form is the faster one.
macro_rules! dispatch {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $kernel:ident, $features:literal, [$($feat:tt),+]) => {
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = $features)]
                fn with_features($($arg: $ty),*) {
                    $kernel($($arg),*)
                }
                if $(std::arch::is_x86_feature_detected!($feat))&&+ {
                    // SAFETY: the CPU has every feature `with_features` is compiled for (checked
                    // just above).
                    return unsafe { with_features($($arg),*) };
                }
            }
            $kernel($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// Whether the CPU has an FMA unit, found once when an indicator is made (so an update reads a
/// field instead of std's feature cache).
#[derive(Clone, Copy, Debug)]
// Read only on x86-64, where FMA is optional; aarch64 always has it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct HwFma(bool);

impl HwFma {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        return HwFma(std::arch::is_x86_feature_detected!("fma"));
        #[cfg(not(target_arch = "x86_64"))]
        HwFma(false)
    }
}

/// `a·b + c` rounded once (IEEE fused multiply-add), for the streaming updates.
///
/// `f64::mul_add` gives these bits everywhere, but unless the crate is compiled for a CPU with
/// FMA it is a call to libm's `fma`, and a call inside an update makes the compiler spill the
/// indicator's other state around it. On x86-64 CPUs that have FMA (checked at run time; the
/// answer is cached by std) this issues the instruction inline instead. Batch kernels use
/// `mul_add` directly, inside functions compiled with FMA enabled (see [`dispatch`]). `hw` must
/// come from [`HwFma::detect`].
#[inline(always)]
pub(crate) fn fused(a: f64, b: f64, c: f64, hw: HwFma) -> f64 {
    #[cfg(all(target_arch = "x86_64", not(target_feature = "fma")))]
    {
        if hw.0 {
            let mut x = a;
            // SAFETY: `hw` says the CPU has FMA (`HwFma::detect`); the instruction reads and
            // writes only the three named registers.
            unsafe {
                std::arch::asm!(
                    "vfmadd213sd {x}, {b}, {c}",
                    x = inout(xmm_reg) x,
                    b = in(xmm_reg) b,
                    c = in(xmm_reg) c,
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            return x;
        }
        fma_call(a, b, c)
    }
    // Elsewhere (aarch64, the Lambda target, has FMA in its baseline) `mul_add` is the
    // instruction itself, inline.
    #[cfg(not(all(target_arch = "x86_64", not(target_feature = "fma"))))]
    {
        let _ = hw;
        a.mul_add(b, c)
    }
}

/// libm's `fma` (or the instruction, where the crate is compiled with FMA), kept out of line
/// and cold so that the register allocator spills around the call only on this path, not on
/// the inline-instruction one.
#[cfg(all(target_arch = "x86_64", not(target_feature = "fma")))]
#[cold]
#[inline(never)]
fn fma_call(a: f64, b: f64, c: f64) -> f64 {
    a.mul_add(b, c)
}

/// Checks a batch function's slices: every input and output the same length.
#[inline]
#[track_caller]
pub(crate) fn check_lengths(len: usize, others: &[usize]) {
    for &l in others {
        assert_eq!(
            l, len,
            "batch indicator: every input and output slice must have the same length"
        );
    }
}

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

    /// Deterministic pseudo-random numbers in [0, 1) (xorshift64*), for data with many
    /// significant bits — where rounding differences show, unlike prices with one decimal.
    fn uniform(seed: u64) -> impl FnMut() -> f64 {
        let mut x = seed | 1;
        move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A random walk with gaps, flat stretches and wide bars (ties, zero moves, gaps up/down).
    fn random_bars(n: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let mut u = uniform(seed);
        let (mut h, mut l, mut c) = (Vec::new(), Vec::new(), Vec::new());
        let mut price = 1000.0 * (1.0 + u());
        for i in 0..n {
            if i % 97 < 5 {
                // A flat stretch: identical bars.
                h.push(price);
                l.push(price);
                c.push(price);
                continue;
            }
            price *= 1.0 + (u() - 0.5) * 0.04;
            let up = u() * price * 0.02;
            let down = u() * price * 0.02;
            h.push(price + up);
            l.push(price - down);
            c.push(price - down + (up + down) * u());
        }
        (h, l, c)
    }

    fn same_bits(what: &str, batch: &[f64], stream: &[Option<f64>]) {
        assert_eq!(batch.len(), stream.len(), "{what}: length");
        for (i, (b, s)) in batch.iter().zip(stream).enumerate() {
            match s {
                None => assert!(b.is_nan(), "{what} [{i}]: batch {b} during warm-up"),
                Some(s) => assert_eq!(b.to_bits(), s.to_bits(), "{what} [{i}]: {b} vs {s}"),
            }
        }
    }

    /// The batch functions equal the streaming updates bit for bit: on random data, for several
    /// periods, and for every length around the warm-up (shorter, equal, one more).
    #[test]
    fn batch_functions_equal_streaming_updates() {
        let (high, low, close) = random_bars(3000, 7);
        let bars: Vec<Bar> = (0..close.len())
            .map(|i| Bar::new(high[i], low[i], close[i]))
            .collect();
        for period in [2usize, 3, 14, 20, 50] {
            let lens: Vec<usize> = (0..=2 * period + 1).chain([close.len()]).collect();
            for &len in &lens {
                let (h, l, c, b) = (&high[..len], &low[..len], &close[..len], &bars[..len]);
                let mut out = vec![0.0; len];
                let what = |name: &str| format!("{name}({period}) len {len}");

                Ema::batch(period, c, &mut out);
                let mut e = Ema::new(period);
                let want: Vec<_> = c.iter().map(|&x| e.update(x)).collect();
                same_bits(&what("ema"), &out, &want);

                Rsi::batch(period, c, &mut out);
                let mut r = Rsi::new(period);
                let want: Vec<_> = c.iter().map(|&x| r.update(x)).collect();
                same_bits(&what("rsi"), &out, &want);

                Atr::batch(period, h, l, c, &mut out);
                let mut a = Atr::new(period);
                let want: Vec<_> = b.iter().map(|&x| a.update(x)).collect();
                same_bits(&what("atr"), &out, &want);

                let (mut plus, mut minus) = (vec![0.0; len], vec![0.0; len]);
                Adx::batch_with_di(period, h, l, c, &mut out, &mut plus, &mut minus);
                let mut a = Adx::new(period);
                let (mut want, mut want_plus, mut want_minus) = (vec![], vec![], vec![]);
                for &x in b {
                    want.push(a.update(x).map(|o| o.adx));
                    want_plus.push(a.di().map(|d| d.plus_di));
                    want_minus.push(a.di().map(|d| d.minus_di));
                }
                same_bits(&what("adx"), &out, &want);
                same_bits(&what("plus_di"), &plus, &want_plus);
                same_bits(&what("minus_di"), &minus, &want_minus);
                let mut adx_only = vec![0.0; len];
                Adx::batch(period, h, l, c, &mut adx_only);
                same_bits(&what("adx only"), &adx_only, &want);

                let fast = (period / 2).max(1);
                for signal in [1, 9] {
                    let (mut m, mut g, mut hist) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
                    let arrays = MacdArrays {
                        macd: &mut m,
                        signal: &mut g,
                        hist: &mut hist,
                    };
                    Macd::batch(period, fast, signal, c, arrays);
                    let mut d = Macd::new(fast, period, signal);
                    let outs: Vec<_> = c.iter().map(|&x| d.update(x)).collect();
                    let field = |f: fn(&MacdOutput) -> f64| -> Vec<Option<f64>> {
                        outs.iter().map(|o| o.as_ref().map(f)).collect()
                    };
                    let name = format!("macd({fast},{period},{signal}) len {len}");
                    same_bits(&name, &m, &field(|o| o.macd));
                    same_bits(&format!("{name} signal"), &g, &field(|o| o.signal));
                    same_bits(&format!("{name} hist"), &hist, &field(|o| o.hist));
                }
            }
        }
    }

    /// TA-Lib 0.8 fuses the EMA step (`fma(x − prev, k, prev)`): on noise around zero the fused
    /// and unfused forms differ often (on prices far less), and the EMA here is the fused one.
    #[test]
    fn ema_step_is_fused_like_talib() {
        let mut u = uniform(11);
        let close: Vec<f64> = (0..2000).map(|_| (u() - 0.5) * 2000.0).collect();
        let mut e = Ema::new(20);
        let k = 2.0 / 21.0;
        let (mut prev, mut differ) = (f64::NAN, 0);
        for (i, &x) in close.iter().enumerate() {
            let got = e.update(x);
            if i >= 20 {
                let got = got.unwrap();
                assert_eq!(got.to_bits(), (x - prev).mul_add(k, prev).to_bits(), "{i}");
                if got != (x - prev) * k + prev {
                    differ += 1;
                }
            }
            prev = got.unwrap_or(prev);
        }
        assert!(differ > 100, "fused and unfused differ only {differ} times");
    }

    #[test]
    fn fused_is_a_correctly_rounded_fma() {
        let mut u = uniform(3);
        let hw = HwFma::detect();
        for _ in 0..100_000 {
            let (a, b, c) = ((u() - 0.5) * 1e6, u() * 2.0, (u() - 0.5) * 1e3);
            assert_eq!(fused(a, b, c, hw).to_bits(), a.mul_add(b, c).to_bits());
            assert_eq!(
                fused(a, b, c, HwFma(false)).to_bits(),
                a.mul_add(b, c).to_bits()
            );
        }
        // The single rounding shows: (1 + 2^−30)² − 1 needs the exact product.
        let x = 1.0 + 2f64.powi(-30);
        assert_eq!(fused(x, x, -1.0, hw), 2f64.powi(-29) + 2f64.powi(-60));
    }

    #[test]
    #[should_panic(expected = "same length")]
    fn batch_rejects_mismatched_slices() {
        Ema::batch(3, &[1.0, 2.0, 3.0], &mut [0.0; 2]);
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
