//! TFPE — Trend Following with Price Extremes (Donchian): seven entry conditions counted per
//! side, an ADX regime gate, ATR-based stop and take-profit, and two optional exits.
//!
//! # Readings (all on the closed candle just fed)
//! - **Channel**: Donchian(`donchian_period`) upper `U`, lower `L`, middle `M = (U+L)/2`, width
//!   `W = U − L`. **Channel position** `pos = (close − L)/W` (0 = bottom, 1 = top). A zero-width
//!   channel (every high and low equal) has no position: every position-based test fails.
//! - **Trend** = close vs the middle of the trend channel: above → up, below → down, equal → none.
//!   The trend channel is the same Donchian channel unless `trend_period` (default 0 = same) sets
//!   another period; see "Trend channel" below.
//! - Momentum: `close / close[momentum_lookback bars ago] − 1`; RSI(`rsi_period`, Wilder); the
//!   distance `|close − EMA(ema_period)| / close`; volume against its `volume_period` SMA (the
//!   current candle included, as the seeds' rolling mean); ADX(`adx_period`); ATR(`atr_period`).
//!
//! # The seven conditions (long; the short side is the exact mirror)
//! Distances into the channel are measured from the side's own extreme: for a long
//! `from_bottom = (close − L)/W` (= `pos`), for a short `from_top = (U − close)/W` (= `1 − pos`).
//! 1. `momentum`: long `momentum ≥ +momentum_min_pct`; short `≤ −momentum_min_pct` (signed: the
//!    seed system's `tfpe_strategy.py` took the absolute value, which cannot mirror; the spec
//!    asks for a mirror).
//! 2. `fibonacci`: the pullback from the opposite extreme is inside the retracement zone —
//!    long `(U − close)/W ∈ [fib_min, fib_max]` (retraced 38.2–78.6 % down from the channel high,
//!    i.e. `pos ∈ [0.214, 0.618]`); short `(close − L)/W ∈ [fib_min, fib_max]` (up from the low).
//!    The seed code measured it on swing highs/lows; the spec names the Donchian range, which is
//!    what is used.
//! 3. `rsi`: long needs an **uptrend** and either *near the channel bottom*
//!    (`from_bottom ≤ near_extreme_zone`, default 0.30) with `RSI ≤ rsi_near_extreme_long` (40),
//!    or a *neutral position* (`|close − M|/W ≤ neutral_zone`, default 0.10, i.e. `pos` in
//!    0.40–0.60) with `RSI ≤ rsi_neutral_long` (45). Short: downtrend, near the top
//!    (`from_top ≤ near_extreme_zone`) with `RSI ≥ rsi_near_extreme_short` (60), or neutral with
//!    `RSI ≥ rsi_neutral_short` (55). The seed documents give no widths; these are the seed
//!    code's `price_position_low/high` (0.3/0.7) and `price_position_neutral_min/max` (0.4/0.6).
//! 4. `ema_distance`: `|close − EMA| / close ≤ ema_distance_max_pct` (direction-free: counts for
//!    both sides, as in the seeds).
//! 5. `volume`: `volume ≥ volume_mult × average` with a positive average (direction-free).
//! 6. `channel_extreme`: long `from_bottom ≤ extreme_zone` (bottom 20 %), short
//!    `from_top ≤ extreme_zone` (top 20 %).
//! 7. `sideways_rsi`: `ADX < adx_min` and long `RSI < rsi_oversold` (30) / short
//!    `RSI > rsi_overbought` (70).
//!
//! Conditions 1–6 are the trend conditions: each holds only when its own test passes **and**
//! `ADX ≥ adx_min`; condition 7 holds only when `ADX < adx_min`. The two regimes exclude each
//! other, so in a sideways market (ADX below the minimum) at most condition 7 counts and a
//! sideways entry needs `signal_threshold = 1`; the recorded value of a gated condition still
//! shows its own test so audits see what the gate removed.
//!
//! All bounds are inclusive (`≤`, `≥`) except the sideways RSI extremes, which the spec states
//! strictly (`< 30`, `> 70`).
//!
//! # Trend channel
//! With one channel, "uptrend" means `pos > 0.5`, so the *near the bottom* branch of condition 3
//! (`pos ≤ 0.30`) can never hold for a long (nor *near the top* for a short): only its neutral
//! branch (0.5 < pos ≤ 0.6) can. The seeds avoided this by taking the trend from a 4h channel
//! while evaluating 15m candles. `trend_period` reproduces that on one series: a Donchian channel
//! of `trend_period` candles gives the trend (on 15m candles, 320 = twenty 4h candles), and both
//! branches become reachable. The default keeps the spec's single channel.
//!
//! # Decision
//! - Flat: a side *signals* when at least `signal_threshold` of its 7 conditions hold. If one
//!   side signals it is opened; if both do, the side with more conditions held wins, and a tie
//!   opens nothing (the evidence is contradictory). An entry is
//!   `Open { side, stop: ATR × stop_atr, take_profit: ATR × take_profit_atr }` as price
//!   distances from the fill (the jobs place both on the exchange); `take_profit_atr = 0` places
//!   no take-profit.
//! - Holding a position: no new entry, no reversal — the seeds only *manage* a held position
//!   (stop, take-profit, optional exits) and look for entries when flat, so an opposite signal is
//!   recorded and ignored. Optional exits, each closing the whole position:
//!   - `time_exit_bars = N` (0 = off): the position has been held for N candles of the
//!     strategy's timeframe. The candle duration is the smallest spacing between the candles fed;
//!     the age is `(close time of the latest candle − opened_at)` in candles, rounded to the
//!     nearest (the entry is stamped a few seconds after its signal candle closed).
//!   - `exit_on_middle_cross`: the close is on the wrong side of the trend channel's middle
//!     (below it for a long, above for a short) after a close on the right side at or after the
//!     signal candle (the last candle that closed before `opened_at`). A position entered from
//!     the wrong side of the middle (a long at the channel bottom) is therefore not closed
//!     before the price has actually crossed over and back; a missed evaluation does not lose
//!     the cross.
//!
//! Every decision records, in order: `channel`, `adx`, `atr`, the seven conditions of each side
//! (`long.momentum` … `short.sideways_rsi`), `long.count` / `short.count`, and when holding a
//! position `exit.time` and `exit.middle_cross`.

use super::{
    parse_params, Action, Condition, Context, Decision, PositionView, StopSpec, Strategy,
    StrategyError, Texts,
};
use crate::domain::{Candle, Side};
use crate::indicators::{Adx, Atr, Bar, Donchian, DonchianOutput, Ema, Roc, Rsi, VolumeMa};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;

/// Parameters (`[strategies.params]` in config); defaults are the spec's.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    /// Donchian channel period (channel position, conditions 2, 3, 6).
    pub donchian_period: usize,
    /// Period of the channel whose middle gives the trend and the middle-cross exit; 0 = the
    /// same channel (`donchian_period`).
    pub trend_period: usize,
    /// Conditions (of 7) that must hold for a side to signal.
    pub signal_threshold: usize,
    /// Momentum compares the close with the close this many candles ago.
    pub momentum_lookback: usize,
    /// Minimum momentum as a fraction (0.02 = 2 %).
    pub momentum_min_pct: f64,
    /// Fibonacci retracement zone, fractions of the channel range.
    pub fib_min: f64,
    pub fib_max: f64,
    pub rsi_period: usize,
    /// Uptrend, near the channel bottom: RSI ≤ this (long).
    pub rsi_near_extreme_long: f64,
    /// Uptrend, neutral position: RSI ≤ this (long).
    pub rsi_neutral_long: f64,
    /// Downtrend, near the channel top: RSI ≥ this (short).
    pub rsi_near_extreme_short: f64,
    /// Downtrend, neutral position: RSI ≥ this (short).
    pub rsi_neutral_short: f64,
    /// Sideways market: RSI < this (long).
    pub rsi_oversold: f64,
    /// Sideways market: RSI > this (short).
    pub rsi_overbought: f64,
    /// "Near the channel bottom/top" for condition 3: within this fraction of the range from the
    /// extreme.
    pub near_extreme_zone: f64,
    /// "Neutral position" for condition 3: within this fraction of the range from the middle.
    pub neutral_zone: f64,
    pub ema_period: usize,
    /// Maximum `|close − EMA| / close`.
    pub ema_distance_max_pct: f64,
    pub volume_period: usize,
    /// Volume must be at least this multiple of its average.
    pub volume_mult: f64,
    /// Condition 6: within this fraction of the range from the side's extreme.
    pub extreme_zone: f64,
    pub adx_period: usize,
    /// Trend conditions 1–6 count only when ADX ≥ this; condition 7 only below it.
    pub adx_min: f64,
    pub atr_period: usize,
    /// Stop distance in ATRs (> 0).
    pub stop_atr: Decimal,
    /// Take-profit distance in ATRs; 0 places no take-profit.
    pub take_profit_atr: Decimal,
    /// Close a position held this many candles; 0 = off.
    pub time_exit_bars: usize,
    /// Close a position when the close crosses the trend channel's middle against it.
    pub exit_on_middle_cross: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            donchian_period: 20,
            trend_period: 0,
            signal_threshold: 4,
            momentum_lookback: 20,
            momentum_min_pct: 0.02,
            fib_min: 0.382,
            fib_max: 0.786,
            rsi_period: 14,
            rsi_near_extreme_long: 40.0,
            rsi_neutral_long: 45.0,
            rsi_near_extreme_short: 60.0,
            rsi_neutral_short: 55.0,
            rsi_oversold: 30.0,
            rsi_overbought: 70.0,
            near_extreme_zone: 0.30,
            neutral_zone: 0.10,
            ema_period: 12,
            ema_distance_max_pct: 0.015,
            volume_period: 20,
            volume_mult: 1.5,
            extreme_zone: 0.20,
            adx_period: 14,
            adx_min: 25.0,
            atr_period: 14,
            stop_atr: Decimal::new(15, 1),
            take_profit_atr: Decimal::new(50, 1),
            time_exit_bars: 0,
            exit_on_middle_cross: false,
        }
    }
}

impl Params {
    /// The trend channel's period (`trend_period`, or the signal channel's when 0).
    pub fn trend_channel_period(&self) -> usize {
        if self.trend_period == 0 {
            self.donchian_period
        } else {
            self.trend_period
        }
    }

    /// Range checks; the error names the offending key under `path`.
    pub fn validate(&self, path: &str) -> Result<(), StrategyError> {
        let bad = |key: &str, message: String| StrategyError::BadParams {
            path: format!("{path}.{key}"),
            message,
        };
        let at_least = |key: &str, v: usize, min: usize| {
            if v < min {
                Err(bad(key, format!("expected an integer ≥ {min}, got {v}")))
            } else {
                Ok(())
            }
        };
        let within = |key: &str, v: f64, lo: f64, hi: f64, what: &str| {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(bad(
                    key,
                    format!("expected {what} in [{lo}, {hi}], got {v}"),
                ))
            }
        };
        at_least("donchian_period", self.donchian_period, 2)?;
        if self.trend_period == 1 {
            return Err(bad(
                "trend_period",
                "expected 0 (same as donchian_period) or an integer ≥ 2, got 1".into(),
            ));
        }
        if !(1..=7).contains(&self.signal_threshold) {
            return Err(bad(
                "signal_threshold",
                format!(
                    "expected 1 to 7 (of the 7 conditions), got {}",
                    self.signal_threshold
                ),
            ));
        }
        at_least("momentum_lookback", self.momentum_lookback, 1)?;
        within(
            "momentum_min_pct",
            self.momentum_min_pct,
            0.0,
            10.0,
            "a fraction",
        )?;
        within("fib_min", self.fib_min, 0.0, 1.0, "a fraction of the range")?;
        within("fib_max", self.fib_max, 0.0, 1.0, "a fraction of the range")?;
        if self.fib_min > self.fib_max {
            return Err(bad(
                "fib_min",
                format!(
                    "need fib_min ≤ fib_max, got {} > {}",
                    self.fib_min, self.fib_max
                ),
            ));
        }
        at_least("rsi_period", self.rsi_period, 2)?;
        for (key, v) in [
            ("rsi_near_extreme_long", self.rsi_near_extreme_long),
            ("rsi_neutral_long", self.rsi_neutral_long),
            ("rsi_near_extreme_short", self.rsi_near_extreme_short),
            ("rsi_neutral_short", self.rsi_neutral_short),
            ("rsi_oversold", self.rsi_oversold),
            ("rsi_overbought", self.rsi_overbought),
        ] {
            within(key, v, 0.0, 100.0, "an RSI level")?;
        }
        if !(self.near_extreme_zone > 0.0 && self.near_extreme_zone < 0.5) {
            return Err(bad(
                "near_extreme_zone",
                format!(
                    "expected a fraction of the range in (0, 0.5), got {}",
                    self.near_extreme_zone
                ),
            ));
        }
        within(
            "neutral_zone",
            self.neutral_zone,
            0.0,
            0.5,
            "a fraction of the range",
        )?;
        at_least("ema_period", self.ema_period, 1)?;
        within(
            "ema_distance_max_pct",
            self.ema_distance_max_pct,
            0.0,
            1.0,
            "a fraction",
        )?;
        at_least("volume_period", self.volume_period, 1)?;
        within("volume_mult", self.volume_mult, 0.0, 1000.0, "a multiple")?;
        if !(self.extreme_zone > 0.0 && self.extreme_zone <= 0.5) {
            return Err(bad(
                "extreme_zone",
                format!(
                    "expected a fraction of the range in (0, 0.5], got {}",
                    self.extreme_zone
                ),
            ));
        }
        at_least("adx_period", self.adx_period, 2)?;
        within("adx_min", self.adx_min, 0.0, 100.0, "an ADX level")?;
        at_least("atr_period", self.atr_period, 1)?;
        if self.stop_atr <= Decimal::ZERO {
            return Err(bad(
                "stop_atr",
                format!(
                    "expected a positive multiple of the ATR, got {}",
                    self.stop_atr
                ),
            ));
        }
        if self.take_profit_atr < Decimal::ZERO {
            return Err(bad(
                "take_profit_atr",
                format!(
                    "expected a multiple of the ATR ≥ 0 (0 = none), got {}",
                    self.take_profit_atr
                ),
            ));
        }
        Ok(())
    }
}

pub fn build(params: &toml::Table, path: &str) -> Result<Box<dyn Strategy>, StrategyError> {
    let p: Params = parse_params(params, path)?;
    p.validate(path)?;
    Ok(Box::new(Tfpe::new(p)))
}

/// Condition names of one side, in the spec's order.
pub const CONDITIONS: [&str; 7] = [
    "momentum",
    "fibonacci",
    "rsi",
    "ema_distance",
    "volume",
    "channel_extreme",
    "sideways_rsi",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trend {
    Up,
    Down,
    None,
}

/// Every indicator value a decision reads, from the latest candle.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Readings {
    close: f64,
    channel: DonchianOutput,
    trend_middle: f64,
    /// Momentum in percent (TA-Lib ROC).
    roc_pct: f64,
    rsi: f64,
    ema: f64,
    volume: f64,
    volume_ma: f64,
    adx: f64,
    atr: f64,
}

impl Readings {
    fn width(&self) -> f64 {
        self.channel.upper - self.channel.lower
    }
    fn position(&self) -> Option<f64> {
        let w = self.width();
        (w > 0.0).then(|| (self.close - self.channel.lower) / w)
    }
    /// Fraction of the range between the close and the side's own extreme (the bottom for a long,
    /// the top for a short); computed from that extreme so the two sides are exact mirrors.
    fn extreme_distance(&self, side: Side) -> Option<f64> {
        let w = self.width();
        (w > 0.0).then(|| match side {
            Side::Long => (self.close - self.channel.lower) / w,
            Side::Short => (self.channel.upper - self.close) / w,
        })
    }
    fn trend(&self) -> Trend {
        if self.close > self.trend_middle {
            Trend::Up
        } else if self.close < self.trend_middle {
            Trend::Down
        } else {
            Trend::None
        }
    }
}

/// The evaluation of both sides on one set of readings.
#[derive(Clone, Debug, PartialEq)]
struct Evaluation {
    /// `long.*` then `short.*`, 7 each, in [`CONDITIONS`] order.
    conditions: Vec<Condition>,
    long: usize,
    short: usize,
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

/// A price-like number with a precision that suits its magnitude.
fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.2}")
    } else if a >= 1.0 {
        format!("{x:.4}")
    } else {
        format!("{x:.8}")
    }
}

fn side_name(side: Side) -> &'static str {
    match side {
        Side::Long => "long",
        Side::Short => "short",
    }
}

/// The 7 conditions of one side. Pure: the unit tests drive it with hand-set readings. Names and
/// values are written only when `t` asks for them; what holds never depends on them.
fn evaluate_side(p: &Params, r: &Readings, side: Side, t: Texts) -> [Condition; 7] {
    let trend_on = r.adx >= p.adx_min;
    let gate = |held: bool, value: String| -> (bool, String) {
        if trend_on {
            (held, value)
        } else {
            (
                false,
                t.make(|| format!("{value}; off: ADX {:.2} < {} (sideways)", r.adx, p.adx_min)),
            )
        }
    };
    let name = |c: &str| t.make(|| format!("{}.{c}", side_name(side)));
    let from_extreme = r.extreme_distance(side);
    let no_range = || {
        t.make(|| {
            format!(
                "channel has no range (upper = lower = {})",
                num(r.channel.upper)
            )
        })
    };

    // 1. Momentum, signed.
    let min = p.momentum_min_pct * 100.0;
    let (held, value) = match side {
        Side::Long => (
            r.roc_pct >= min,
            t.make(|| format!("{:+.2}% (≥ +{:.2}%)", r.roc_pct, min)),
        ),
        Side::Short => (
            r.roc_pct <= -min,
            t.make(|| format!("{:+.2}% (≤ -{:.2}%)", r.roc_pct, min)),
        ),
    };
    let (held, value) = gate(held, value);
    let momentum = Condition::new(name("momentum"), held, value);

    // 2. Fibonacci retracement from the opposite extreme.
    let (held, value) = match r.extreme_distance(side.opposite()) {
        Some(retr) => (
            p.fib_min <= retr && retr <= p.fib_max,
            t.make(|| {
                format!(
                    "retraced {} from the {} ({}–{})",
                    pct(retr),
                    if side == Side::Long { "high" } else { "low" },
                    pct(p.fib_min),
                    pct(p.fib_max)
                )
            }),
        ),
        None => (false, no_range()),
    };
    let (held, value) = gate(held, value);
    let fibonacci = Condition::new(name("fibonacci"), held, value);

    // 3. RSI by trend and channel position.
    let (with_trend, trend_word) = match (side, r.trend()) {
        (Side::Long, Trend::Up) => (true, "uptrend"),
        (Side::Short, Trend::Down) => (true, "downtrend"),
        (_, Trend::Up) => (false, "uptrend"),
        (_, Trend::Down) => (false, "downtrend"),
        (_, Trend::None) => (false, "no trend"),
    };
    let trend_desc = || {
        format!(
            "{trend_word} (close {} vs middle {})",
            num(r.close),
            num(r.trend_middle)
        )
    };
    let (near_max, neutral_max, cmp) = match side {
        Side::Long => (p.rsi_near_extreme_long, p.rsi_neutral_long, "≤"),
        Side::Short => (p.rsi_near_extreme_short, p.rsi_neutral_short, "≥"),
    };
    let passes = |level: f64| match side {
        Side::Long => r.rsi <= level,
        Side::Short => r.rsi >= level,
    };
    let (held, value) = match (from_extreme, r.position()) {
        (Some(d), Some(pos)) => {
            let near = d <= p.near_extreme_zone;
            // |close − middle| / W: exactly symmetric for the two sides.
            let neutral = (r.close - r.channel.middle).abs() / r.width() <= p.neutral_zone;
            let extreme_word = if side == Side::Long { "bottom" } else { "top" };
            let zone = || {
                if near {
                    format!(
                        "near the {extreme_word} ({} ≤ {}) → RSI {cmp} {near_max}",
                        pct(d),
                        pct(p.near_extreme_zone)
                    )
                } else if neutral {
                    format!(
                        "neutral (position {:.3} within 0.5 ± {}) → RSI {cmp} {neutral_max}",
                        pos, p.neutral_zone
                    )
                } else {
                    format!("position {pos:.3}: neither near the {extreme_word} nor neutral")
                }
            };
            let rsi_ok = (near && passes(near_max)) || (neutral && passes(neutral_max));
            let need = match side {
                Side::Long => "long needs an uptrend",
                Side::Short => "short needs a downtrend",
            };
            let value = t.make(|| {
                if with_trend {
                    format!("RSI {:.2}; {}; {}", r.rsi, trend_desc(), zone())
                } else {
                    format!("RSI {:.2}; {}: {need}; {}", r.rsi, trend_desc(), zone())
                }
            });
            (with_trend && rsi_ok, value)
        }
        _ => (
            false,
            t.make(|| format!("RSI {:.2}; {}", r.rsi, no_range())),
        ),
    };
    let (held, value) = gate(held, value);
    let rsi = Condition::new(name("rsi"), held, value);

    // 4. Distance to the EMA (direction-free).
    let dist = (r.close - r.ema).abs() / r.close;
    let (held, value) = gate(
        dist <= p.ema_distance_max_pct,
        t.make(|| {
            format!(
                "{} from EMA{} {} (≤ {})",
                pct(dist),
                p.ema_period,
                num(r.ema),
                pct(p.ema_distance_max_pct)
            )
        }),
    );
    let ema_distance = Condition::new(name("ema_distance"), held, value);

    // 5. Volume against its average (direction-free).
    let (held, value) = if r.volume_ma > 0.0 {
        (
            r.volume >= p.volume_mult * r.volume_ma,
            t.make(|| {
                format!(
                    "{:.2}× the {}-candle average {} (≥ {}×)",
                    r.volume / r.volume_ma,
                    p.volume_period,
                    num(r.volume_ma),
                    p.volume_mult
                )
            }),
        )
    } else {
        (
            false,
            t.make(|| format!("no volume in the last {} candles", p.volume_period)),
        )
    };
    let (held, value) = gate(held, value);
    let volume = Condition::new(name("volume"), held, value);

    // 6. At the side's own channel extreme.
    let (held, value) = match from_extreme {
        Some(d) => (
            d <= p.extreme_zone,
            t.make(|| {
                format!(
                    "{} of the range from the {} (≤ {})",
                    pct(d),
                    if side == Side::Long { "bottom" } else { "top" },
                    pct(p.extreme_zone)
                )
            }),
        ),
        None => (false, no_range()),
    };
    let (held, value) = gate(held, value);
    let channel_extreme = Condition::new(name("channel_extreme"), held, value);

    // 7. Sideways special case: only below the ADX minimum.
    let (extreme_ok, rsi_desc) = match side {
        Side::Long => (r.rsi < p.rsi_oversold, ("<", p.rsi_oversold)),
        Side::Short => (r.rsi > p.rsi_overbought, (">", p.rsi_overbought)),
    };
    let sideways = Condition::new(
        name("sideways_rsi"),
        !trend_on && extreme_ok,
        t.make(|| {
            let (cmp, level) = rsi_desc;
            let rsi_desc = format!("RSI {:.2} ({cmp} {level})", r.rsi);
            if trend_on {
                format!("{rsi_desc}; off: ADX {:.2} ≥ {} (trend)", r.adx, p.adx_min)
            } else {
                format!("{rsi_desc}; ADX {:.2} < {} (sideways)", r.adx, p.adx_min)
            }
        }),
    );

    [
        momentum,
        fibonacci,
        rsi,
        ema_distance,
        volume,
        channel_extreme,
        sideways,
    ]
}

#[cfg(test)]
fn evaluate(p: &Params, r: &Readings) -> Evaluation {
    evaluate_with(p, r, Texts(true))
}

/// [`evaluate`], with the condition texts only when `t` asks for them.
fn evaluate_with(p: &Params, r: &Readings, t: Texts) -> Evaluation {
    let long = evaluate_side(p, r, Side::Long, t);
    let short = evaluate_side(p, r, Side::Short, t);
    let count = |cs: &[Condition; 7]| cs.iter().filter(|c| c.held).count();
    let (nl, ns) = (count(&long), count(&short));
    let mut conditions = Vec::with_capacity(14);
    conditions.extend(long);
    conditions.extend(short);
    Evaluation {
        conditions,
        long: nl,
        short: ns,
    }
}

/// ATR × multiple as a price distance (12 significant digits: far below any tick size, and free
/// of the binary expansion's noise).
fn atr_distance(atr: f64, mult: Decimal) -> Option<Decimal> {
    let atr = Decimal::try_from(atr).ok()?.round_sf(12)?;
    Some(atr * mult)
}

/// The TFPE strategy; holds only indicator state derived from the candles fed.
#[derive(Clone, Debug)]
pub struct Tfpe {
    p: Params,
    channel: Donchian,
    /// Only when `trend_period` differs from `donchian_period`.
    trend_channel: Option<Donchian>,
    roc: Roc,
    rsi: Rsi,
    ema: Ema,
    volume: VolumeMa,
    adx: Adx,
    atr: Atr,
    candles: usize,
    last_open_time: Option<i64>,
    last_close: f64,
    last_volume: f64,
    /// Smallest spacing seen between consecutive candles (the timeframe); 0 until two candles.
    bar_ms: i64,
    /// Open times of the latest candles that closed above / below the trend channel's middle.
    last_above_middle: Option<i64>,
    last_below_middle: Option<i64>,
}

impl Tfpe {
    /// A TFPE instance; `p` must have passed [`Params::validate`] (the indicators assert their
    /// period ranges).
    pub fn new(p: Params) -> Self {
        let trend_channel =
            (p.trend_channel_period() != p.donchian_period).then(|| Donchian::new(p.trend_period));
        Tfpe {
            channel: Donchian::new(p.donchian_period),
            trend_channel,
            roc: Roc::new(p.momentum_lookback),
            rsi: Rsi::new(p.rsi_period),
            ema: Ema::new(p.ema_period),
            volume: VolumeMa::new(p.volume_period),
            adx: Adx::new(p.adx_period),
            atr: Atr::new(p.atr_period),
            p,
            candles: 0,
            last_open_time: None,
            last_close: f64::NAN,
            last_volume: f64::NAN,
            bar_ms: 0,
            last_above_middle: None,
            last_below_middle: None,
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    fn trend_middle(&self) -> Option<f64> {
        match &self.trend_channel {
            Some(t) => t.value().map(|o| o.middle),
            None => self.channel.value().map(|o| o.middle),
        }
    }

    fn readings(&self) -> Option<Readings> {
        Some(Readings {
            close: self.last_close,
            channel: self.channel.value()?,
            trend_middle: self.trend_middle()?,
            roc_pct: self.roc.value()?,
            rsi: self.rsi.value()?,
            ema: self.ema.value()?,
            volume: self.last_volume,
            volume_ma: self.volume.value()?,
            adx: self.adx.value()?.adx,
            atr: self.atr.value()?,
        })
    }

    fn stops(&self) -> Option<(StopSpec, Option<StopSpec>)> {
        let atr = self.atr.value().filter(|a| *a > 0.0)?;
        let stop = StopSpec::Distance(atr_distance(atr, self.p.stop_atr)?);
        let tp = if self.p.take_profit_atr > Decimal::ZERO {
            Some(StopSpec::Distance(atr_distance(
                atr,
                self.p.take_profit_atr,
            )?))
        } else {
            None
        };
        Some((stop, tp))
    }

    /// The optional exits for a held position: their conditions and the reason to close, if any.
    fn exits(&self, pos: &PositionView, t: Texts) -> (Vec<Condition>, Option<String>) {
        let mut reasons = Vec::new();
        let time = if self.p.time_exit_bars == 0 {
            Condition::new("exit.time", false, "off")
        } else {
            match self.last_open_time.filter(|_| self.bar_ms > 0) {
                Some(open) => {
                    let close_time = open + self.bar_ms;
                    let held =
                        (close_time - pos.opened_at + self.bar_ms / 2).div_euclid(self.bar_ms);
                    let fired = held >= self.p.time_exit_bars as i64;
                    let value = t.make(|| {
                        format!(
                            "held {held} candles of {} min (limit {})",
                            self.bar_ms / 60_000,
                            self.p.time_exit_bars
                        )
                    });
                    if fired {
                        reasons.push(t.make(|| format!("time exit: {value}")));
                    }
                    Condition::new("exit.time", fired, value)
                }
                None => Condition::new("exit.time", false, "candle duration not known yet"),
            }
        };
        let cross = if !self.p.exit_on_middle_cross {
            Condition::new("exit.middle_cross", false, "off")
        } else {
            match self.trend_middle() {
                Some(mid) => {
                    let close = self.last_close;
                    // The signal candle closed within one candle before `opened_at`.
                    let since_signal = |t: Option<i64>| {
                        t.is_some_and(|open| open + self.bar_ms > pos.opened_at - self.bar_ms)
                    };
                    let (fired, value) = match pos.side {
                        Side::Long => (
                            close < mid && since_signal(self.last_above_middle),
                            t.make(|| {
                                format!(
                                    "close {} {} middle {}; a close above it since the signal: {}",
                                    num(close),
                                    if close < mid { "<" } else { "≥" },
                                    num(mid),
                                    since_signal(self.last_above_middle)
                                )
                            }),
                        ),
                        Side::Short => (
                            close > mid && since_signal(self.last_below_middle),
                            t.make(|| {
                                format!(
                                    "close {} {} middle {}; a close below it since the signal: {}",
                                    num(close),
                                    if close > mid { ">" } else { "≤" },
                                    num(mid),
                                    since_signal(self.last_below_middle)
                                )
                            }),
                        ),
                    };
                    if fired {
                        reasons.push(t.make(|| format!("Donchian middle crossed: {value}")));
                    }
                    Condition::new("exit.middle_cross", fired, value)
                }
                None => Condition::new("exit.middle_cross", false, "channel not ready"),
            }
        };
        let reason = (!reasons.is_empty()).then(|| reasons.join("; "));
        (vec![time, cross], reason)
    }
}

impl Strategy for Tfpe {
    fn name(&self) -> &'static str {
        "TFPE"
    }

    fn warmup(&self) -> usize {
        let p = &self.p;
        [
            p.donchian_period,
            p.trend_channel_period(),
            p.momentum_lookback + 1,
            p.rsi_period + 1,
            p.ema_period,
            p.volume_period,
            2 * p.adx_period,
            p.atr_period + 1,
        ]
        .into_iter()
        .max()
        .unwrap_or(1)
    }

    fn update(&mut self, candle: &Candle) {
        let bar = Bar::from(candle);
        self.channel.update(bar);
        if let Some(t) = self.trend_channel.as_mut() {
            t.update(bar);
        }
        self.roc.update(bar.close);
        self.rsi.update(bar.close);
        self.ema.update(bar.close);
        let volume = candle.volume.to_f64().unwrap_or(0.0);
        self.volume.update(volume);
        self.adx.update(bar);
        self.atr.update(bar);
        if let Some(prev) = self.last_open_time {
            let d = candle.open_time - prev;
            if d > 0 && (self.bar_ms == 0 || d < self.bar_ms) {
                self.bar_ms = d;
            }
        }
        self.candles += 1;
        self.last_open_time = Some(candle.open_time);
        self.last_close = bar.close;
        self.last_volume = volume;
        if let Some(mid) = self.trend_middle() {
            if bar.close > mid {
                self.last_above_middle = Some(candle.open_time);
            } else if bar.close < mid {
                self.last_below_middle = Some(candle.open_time);
            }
        }
    }

    fn protective_stop(&self, _side: Side) -> Option<StopSpec> {
        self.stops().map(|(stop, _)| stop)
    }

    fn decide(&self, ctx: &Context<'_>) -> Decision {
        self.decide_with(ctx, Texts(true))
    }

    /// Without the texts when it holds; an action is decided again with them, so it carries the
    /// same reason text as `decide`'s.
    fn decide_action(&self, ctx: &Context<'_>) -> Action {
        match self.decide_with(ctx, Texts(false)).action {
            Action::Hold => Action::Hold,
            _ => self.decide(ctx).action,
        }
    }
}

impl Tfpe {
    /// [`Strategy::decide`], writing the conditions' texts only when `t` asks for them.
    fn decide_with(&self, ctx: &Context<'_>, t: Texts) -> Decision {
        let p = &self.p;
        let mut conditions = Vec::with_capacity(21);
        let readings = self.readings();
        let mut eval = None;
        match readings {
            Some(r) => {
                let trend = match r.trend() {
                    Trend::Up => "up",
                    Trend::Down => "down",
                    Trend::None => "none",
                };
                conditions.push(Condition::new(
                    "channel",
                    r.width() > 0.0,
                    t.make(|| {
                        let position = r
                            .position()
                            .map_or("none (zero width)".to_string(), |x| format!("{x:.3}"));
                        format!(
                            "upper {} middle {} lower {}; position {position}; trend {trend} (close {} vs middle {})",
                            num(r.channel.upper),
                            num(r.channel.middle),
                            num(r.channel.lower),
                            num(r.close),
                            num(r.trend_middle)
                        )
                    }),
                ));
                conditions.push(Condition::new(
                    "adx",
                    r.adx >= p.adx_min,
                    t.make(|| {
                        if r.adx >= p.adx_min {
                            format!(
                                "ADX {:.2} ≥ {}: trend conditions 1–6 count",
                                r.adx, p.adx_min
                            )
                        } else {
                            format!(
                                "ADX {:.2} < {}: sideways, only condition 7 counts",
                                r.adx, p.adx_min
                            )
                        }
                    }),
                ));
                conditions.push(Condition::new(
                    "atr",
                    r.atr > 0.0,
                    t.make(|| {
                        format!(
                            "ATR{} {}: stop {}×, take-profit {}×",
                            p.atr_period,
                            num(r.atr),
                            p.stop_atr,
                            p.take_profit_atr
                        )
                    }),
                ));
                let e = evaluate_with(p, &r, t);
                conditions.extend(e.conditions.iter().cloned());
                for (side, n) in [(Side::Long, e.long), (Side::Short, e.short)] {
                    conditions.push(Condition::new(
                        t.make(|| format!("{}.count", side_name(side))),
                        n >= p.signal_threshold,
                        t.make(|| format!("{n}/7 held (≥ {})", p.signal_threshold)),
                    ));
                }
                eval = Some(e);
            }
            None => conditions.push(Condition::new(
                "warmed_up",
                false,
                t.make(|| format!("{}/{} candles", self.candles, self.warmup())),
            )),
        }

        if let Some(pos) = ctx.position {
            let (exit_conditions, reason) = self.exits(pos, t);
            conditions.extend(exit_conditions);
            return match reason {
                Some(reason) => Decision {
                    note: format!("TFPE {}: close ({reason})", side_name(pos.side)),
                    action: Action::Close { reason },
                    conditions,
                },
                None => {
                    let note = t.make(|| {
                        let ignored = eval
                            .as_ref()
                            .and_then(|e| self.signal(e))
                            .filter(|s| *s != pos.side)
                            .map(|s| format!("; {} signal ignored while holding", side_name(s)))
                            .unwrap_or_default();
                        format!("holding {}{ignored}", side_name(pos.side))
                    });
                    Decision::hold(note, conditions)
                }
            };
        }

        let Some(e) = eval else {
            return Decision::hold(
                t.make(|| format!("warming up ({}/{} candles)", self.candles, self.warmup())),
                conditions,
            );
        };
        let Some(side) = self.signal(&e) else {
            let note = t.make(|| {
                if e.long >= p.signal_threshold && e.long == e.short {
                    format!("long and short both {}/7: contradictory, no entry", e.long)
                } else {
                    format!(
                        "no signal (long {}/7, short {}/7, need {})",
                        e.long, e.short, p.signal_threshold
                    )
                }
            });
            return Decision::hold(note, conditions);
        };
        let Some((stop, take_profit)) = self.stops() else {
            return Decision::hold(
                format!(
                    "{} signal but the ATR is zero: no stop distance",
                    side_name(side)
                ),
                conditions,
            );
        };
        let prefix = format!("{}.", side_name(side));
        let held: Vec<&str> = conditions
            .iter()
            .filter(|c| c.held && c.name.starts_with(&prefix) && !c.name.ends_with(".count"))
            .map(|c| &c.name[prefix.len()..])
            .collect();
        let n = if side == Side::Long { e.long } else { e.short };
        Decision {
            note: format!(
                "TFPE {n}/7 ({}) → open {}",
                held.join(", "),
                side_name(side)
            ),
            action: Action::Open {
                side,
                stop: Some(stop),
                take_profit,
            },
            conditions,
        }
    }
}

impl Tfpe {
    /// The side to enter on an evaluation: the side that reaches the threshold, the stronger one
    /// if both do, none on a tie.
    fn signal(&self, e: &Evaluation) -> Option<Side> {
        let t = self.p.signal_threshold;
        match (e.long >= t, e.short >= t) {
            (true, false) => Some(Side::Long),
            (false, true) => Some(Side::Short),
            (true, true) if e.long > e.short => Some(Side::Long),
            (true, true) if e.short > e.long => Some(Side::Short),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::load_csv;
    use crate::domain::{Price, Qty, Timeframe};
    use crate::strategy::PositionView;
    use std::collections::{BTreeMap, BTreeSet};

    /// Candle spacing of the hand-built series (15m).
    const BAR: i64 = 900_000;
    /// The live jobs stamp an entry a few seconds after its signal candle closed.
    const DELAY: i64 = 3_000;

    fn dec(x: f64) -> Decimal {
        Decimal::try_from(x).unwrap()
    }

    fn candle(i: i64, close: f64, volume: f64) -> Candle {
        Candle {
            open_time: i * BAR,
            open: Price::new(dec(close)),
            high: Price::new(dec(close + 0.5)),
            low: Price::new(dec(close - 0.5)),
            close: Price::new(dec(close)),
            volume: dec(volume),
        }
    }

    /// Feeds `closes` (volume 100, the last candle `last_volume`) and decides while flat.
    fn run(p: Params, closes: &[f64], last_volume: f64) -> (Tfpe, Decision) {
        let mut s = Tfpe::new(p);
        for (i, &c) in closes.iter().enumerate() {
            let v = if i + 1 == closes.len() {
                last_volume
            } else {
                100.0
            };
            s.update(&candle(i as i64, c, v));
        }
        let d = s.decide(&Context::flat(0));
        (s, d)
    }

    /// 60 candles rising by 1 from 100, then `k` falling by `step`: a pullback in an uptrend.
    fn pullback(k: usize, step: f64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..60).map(|i| 100.0 + i as f64).collect();
        v.extend((1..=k).map(|q| 159.0 - step * q as f64));
        v
    }

    /// The reference series: a 6-candle pullback closing with a volume spike (3× the rest).
    fn base() -> (Tfpe, Decision) {
        run(Params::default(), &pullback(6, 1.0), 300.0)
    }

    fn cond<'a>(d: &'a Decision, name: &str) -> &'a Condition {
        d.conditions
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no condition {name} in {}", d.conditions_line()))
    }

    fn held(d: &Decision, name: &str) -> bool {
        cond(d, name).held
    }

    fn held_of(d: &Decision, side: &str) -> BTreeSet<&'static str> {
        CONDITIONS
            .iter()
            .copied()
            .filter(|c| held(d, &format!("{side}.{c}")))
            .collect()
    }

    /// Names whose `held` differs between two decisions over the same condition list.
    fn flips(a: &Decision, b: &Decision) -> BTreeSet<String> {
        let names: Vec<&str> = a.conditions.iter().map(|c| c.name.as_str()).collect();
        let names_b: Vec<&str> = b.conditions.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, names_b);
        a.conditions
            .iter()
            .zip(&b.conditions)
            .filter(|(x, y)| x.held != y.held)
            .map(|(x, _)| x.name.clone())
            .collect()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Hand-set readings: a 0–1000 channel, an uptrend (trend middle below everything), close on
    /// its EMA, volume at its average, RSI 50, momentum 0, ADX 30.
    fn readings(close: f64) -> Readings {
        Readings {
            close,
            channel: DonchianOutput {
                upper: 1000.0,
                middle: 500.0,
                lower: 0.0,
            },
            trend_middle: -1.0,
            roc_pct: 0.0,
            rsi: 50.0,
            ema: close,
            volume: 100.0,
            volume_ma: 100.0,
            adx: 30.0,
            atr: 10.0,
        }
    }

    fn eval_map(p: &Params, r: &Readings) -> BTreeMap<String, bool> {
        evaluate(p, r)
            .conditions
            .into_iter()
            .map(|c| (c.name, c.held))
            .collect()
    }

    fn eval_flips(p: &Params, a: &Readings, b: &Readings) -> BTreeSet<String> {
        let (x, y) = (eval_map(p, a), eval_map(p, b));
        x.iter()
            .filter(|(k, v)| y[*k] != **v)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn view(side: Side, opened_at: i64) -> PositionView {
        PositionView {
            side,
            qty: Qty::new(Decimal::ONE),
            entry_price: Price::new(Decimal::ONE_HUNDRED),
            opened_at,
            best_price: None,
            stop_loss: None,
            partial_exits_done: 0,
            pyramids_done: 0,
        }
    }

    #[test]
    fn defaults_are_the_spec_and_the_name_is_registered() {
        let p = Params::default();
        assert_eq!(
            (
                p.donchian_period,
                p.signal_threshold,
                p.momentum_lookback,
                p.rsi_period,
                p.ema_period,
                p.volume_period,
                p.adx_period,
                p.atr_period,
                p.time_exit_bars,
                p.exit_on_middle_cross,
            ),
            (20, 4, 20, 14, 12, 20, 14, 14, 0, false)
        );
        assert_eq!(
            (p.momentum_min_pct, p.fib_min, p.fib_max, p.extreme_zone),
            (0.02, 0.382, 0.786, 0.20)
        );
        assert_eq!(
            (
                p.rsi_near_extreme_long,
                p.rsi_neutral_long,
                p.rsi_near_extreme_short,
                p.rsi_neutral_short,
                p.rsi_oversold,
                p.rsi_overbought
            ),
            (40.0, 45.0, 60.0, 55.0, 30.0, 70.0)
        );
        assert_eq!(
            (p.ema_distance_max_pct, p.volume_mult, p.adx_min),
            (0.015, 1.5, 25.0)
        );
        assert_eq!(
            (p.stop_atr, p.take_profit_atr),
            (Decimal::new(15, 1), Decimal::new(5, 0))
        );
        assert_eq!(p.trend_channel_period(), 20);
        assert!(crate::strategy::names().contains(&"TFPE"));
        let s =
            crate::strategy::build("TFPE", &toml::Table::new(), "strategies.TFPE.params").unwrap();
        assert_eq!(s.name(), "TFPE");
        // ADX(14) is the slowest reading: its first value needs 2·14 candles.
        assert_eq!(s.warmup(), 28);
    }

    #[test]
    fn warmup_is_exact_and_holds_until_then() {
        let closes = pullback(6, 1.0);
        let mut s = Tfpe::new(Params::default());
        for (i, &c) in closes.iter().take(27).enumerate() {
            s.update(&candle(i as i64, c, 100.0));
        }
        assert!(s.readings().is_none());
        let d = s.decide(&Context::flat(0));
        assert_eq!(d.action, Action::Hold);
        assert_eq!(cond(&d, "warmed_up").value, "27/28 candles");
        s.update(&candle(27, closes[27], 100.0));
        assert!(s.readings().is_some());
        assert!(s.decide(&Context::flat(0)).conditions[0].name == "channel");
    }

    #[test]
    fn every_decision_records_every_condition_in_order() {
        let (s, d) = base();
        let mut want = vec!["channel".to_string(), "adx".into(), "atr".into()];
        for side in ["long", "short"] {
            want.extend(CONDITIONS.iter().map(|c| format!("{side}.{c}")));
        }
        want.extend(["long.count".into(), "short.count".into()]);
        let names: Vec<String> = d.conditions.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, want);
        assert!(d.conditions.iter().all(|c| !c.value.is_empty()));
        let pos = view(Side::Long, 0);
        let d = s.decide(&Context::holding(&pos, 0));
        want.extend(["exit.time".into(), "exit.middle_cross".into()]);
        let names: Vec<String> = d.conditions.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, want);
        assert_eq!(cond(&d, "exit.time").value, "off");
        assert_eq!(cond(&d, "exit.middle_cross").value, "off");
    }

    // ---- The conditions one by one, on hand-set readings (bounds and mirror) ----

    #[test]
    fn momentum_is_signed_with_an_inclusive_bound() {
        let p = Params::default();
        let flat = readings(500.0);
        let with = |roc: f64| Readings {
            roc_pct: roc,
            ..flat
        };
        assert_eq!(eval_flips(&p, &flat, &with(2.0)), set(&["long.momentum"]));
        assert_eq!(eval_flips(&p, &flat, &with(1.99)), set(&[]));
        assert_eq!(eval_flips(&p, &flat, &with(-2.0)), set(&["short.momentum"]));
        assert_eq!(eval_flips(&p, &flat, &with(-1.99)), set(&[]));
        let c = &evaluate(&p, &with(2.31)).conditions[0];
        assert_eq!(
            (c.name.as_str(), c.value.as_str()),
            ("long.momentum", "+2.31% (≥ +2.00%)")
        );
    }

    #[test]
    fn fibonacci_zone_is_the_pullback_from_the_opposite_extreme() {
        let p = Params::default();
        // (close, long: retraced from the high 1000, short: retraced from the low 0)
        for (close, long, short) in [
            (618.0, true, true),   // 38.2 % down from the high; 61.8 % up from the low
            (618.1, false, true),  // 38.19 % down
            (214.0, true, false),  // 78.6 % down; 21.4 % up
            (213.9, false, false), // 78.61 % down
            (382.0, true, true),   // 61.8 % / 38.2 %
            (381.9, true, false),  // 38.19 % up
            (786.0, false, true),  // 78.6 % up
            (786.1, false, false), // 78.61 % up
        ] {
            let m = eval_map(&p, &readings(close));
            assert_eq!(
                (m["long.fibonacci"], m["short.fibonacci"]),
                (long, short),
                "close {close}"
            );
        }
        // Only the Fibonacci condition moves between the two sides of its bound.
        assert_eq!(
            eval_flips(&p, &readings(618.0), &readings(618.1)),
            set(&["long.fibonacci"])
        );
        let v = &evaluate(&p, &readings(618.0)).conditions[1].value;
        assert_eq!(v, "retraced 38.20% from the high (38.20%–78.60%)");
    }

    #[test]
    fn rsi_condition_depends_on_trend_and_channel_position() {
        let p = Params::default();
        const UP: f64 = -1.0;
        const DOWN: f64 = 2000.0;
        // (close, trend middle, RSI, long held, short held)
        let rows = [
            (300.0, UP, 40.0, true, false),    // near the bottom (30 %), RSI ≤ 40
            (300.0, UP, 40.01, false, false),  // RSI too high for the bottom
            (250.0, UP, 42.0, false, false),   // near the bottom asks ≤ 40, not the neutral 45
            (300.5, UP, 40.0, false, false),   // 30.05 %: neither near the bottom nor neutral
            (400.0, UP, 45.0, true, false),    // neutral (0.5 − 0.1), RSI ≤ 45
            (600.0, UP, 45.0, true, false),    // neutral (0.5 + 0.1)
            (400.0, UP, 45.01, false, false),  // RSI too high for neutral
            (399.5, UP, 45.0, false, false),   // just outside neutral
            (300.0, DOWN, 40.0, false, false), // a long needs an uptrend
            (700.0, DOWN, 60.0, false, true),  // near the top (30 %), RSI ≥ 60
            (700.0, DOWN, 59.99, false, false),
            (699.5, DOWN, 60.0, false, false),
            (600.0, DOWN, 55.0, false, true), // neutral, RSI ≥ 55
            (400.0, DOWN, 55.0, false, true),
            (600.0, DOWN, 54.99, false, false),
            (700.0, UP, 60.0, false, false), // a short needs a downtrend
            (500.0, 500.0, 20.0, false, false), // no trend: close on the middle
            (500.0, 500.0, 80.0, false, false),
        ];
        for (close, mid, rsi, long, short) in rows {
            let r = Readings {
                trend_middle: mid,
                rsi,
                ..readings(close)
            };
            let m = eval_map(&p, &r);
            assert_eq!(
                (m["long.rsi"], m["short.rsi"]),
                (long, short),
                "close {close} middle {mid} RSI {rsi}"
            );
        }
        let r = Readings {
            trend_middle: DOWN,
            rsi: 35.0,
            ..readings(300.0)
        };
        let v = &evaluate(&p, &r).conditions[2].value;
        assert!(
            v.contains("long needs an uptrend") && v.contains("near the bottom"),
            "{v}"
        );
        // Changing the RSI across its bound flips only the RSI condition.
        let a = Readings {
            rsi: 40.0,
            ..readings(300.0)
        };
        let b = Readings { rsi: 40.5, ..a };
        assert_eq!(eval_flips(&p, &a, &b), set(&["long.rsi"]));
    }

    #[test]
    fn ema_distance_is_relative_to_the_close_for_both_sides() {
        let p = Params::default();
        let at = |ema: f64| Readings {
            ema,
            ..readings(500.0)
        };
        for ema in [507.5, 492.5, 500.0] {
            let m = eval_map(&p, &at(ema));
            assert!(m["long.ema_distance"] && m["short.ema_distance"], "{ema}");
        }
        assert_eq!(
            eval_flips(&p, &at(507.5), &at(507.6)),
            set(&["long.ema_distance", "short.ema_distance"])
        );
    }

    #[test]
    fn volume_spike_is_against_a_positive_average_for_both_sides() {
        let p = Params::default();
        let at = |volume: f64, volume_ma: f64| Readings {
            volume,
            volume_ma,
            ..readings(500.0)
        };
        let m = eval_map(&p, &at(150.0, 100.0));
        assert!(m["long.volume"] && m["short.volume"]);
        assert_eq!(
            eval_flips(&p, &at(150.0, 100.0), &at(149.9, 100.0)),
            set(&["long.volume", "short.volume"])
        );
        let e = evaluate(&p, &at(0.0, 0.0));
        assert!(!e.conditions[4].held && e.conditions[4].value.starts_with("no volume"));
    }

    #[test]
    fn channel_extreme_is_the_sides_own_fifth_of_the_range() {
        let p = Params::default();
        let m = eval_map(&p, &readings(200.0));
        assert!(m["long.channel_extreme"] && !m["short.channel_extreme"]);
        assert_eq!(
            eval_flips(&p, &readings(200.0), &readings(200.5)),
            set(&["long.channel_extreme"])
        );
        let m = eval_map(&p, &readings(800.0));
        assert!(m["short.channel_extreme"] && !m["long.channel_extreme"]);
        assert_eq!(
            eval_flips(&p, &readings(800.0), &readings(799.5)),
            set(&["short.channel_extreme"])
        );
    }

    #[test]
    fn sideways_rsi_applies_only_below_the_adx_minimum_with_strict_bounds() {
        let p = Params::default();
        let at = |adx: f64, rsi: f64| {
            eval_map(
                &p,
                &Readings {
                    adx,
                    rsi,
                    ..readings(500.0)
                },
            )
        };
        assert!(at(24.99, 29.99)["long.sideways_rsi"]);
        assert!(!at(24.99, 30.0)["long.sideways_rsi"]);
        assert!(at(24.99, 70.01)["short.sideways_rsi"]);
        assert!(!at(24.99, 70.0)["short.sideways_rsi"]);
        assert!(!at(25.0, 29.99)["long.sideways_rsi"]);
        assert!(!at(25.0, 70.01)["short.sideways_rsi"]);
        let e = evaluate(
            &p,
            &Readings {
                adx: 25.0,
                rsi: 20.0,
                ..readings(500.0)
            },
        );
        assert!(
            e.conditions[6].value.contains("off: ADX 25.00 ≥ 25"),
            "{}",
            e.conditions[6].value
        );
    }

    #[test]
    fn adx_below_the_minimum_turns_the_trend_conditions_off() {
        // Every long condition 1–6 holds at ADX 25: momentum, 78.6 % retracement, near the
        // bottom with RSI 35 in an uptrend, on the EMA, 2× volume, bottom quarter.
        let p = Params {
            extreme_zone: 0.25,
            ..Params::default()
        };
        let r = Readings {
            roc_pct: 3.0,
            rsi: 35.0,
            volume: 200.0,
            adx: 25.0,
            ..readings(214.0)
        };
        let e = evaluate(&p, &r);
        assert_eq!(e.long, 6, "{:?}", e.conditions);
        assert!(!e.conditions[6].held);
        let gated = evaluate(&p, &Readings { adx: 24.99, ..r });
        assert_eq!(gated.long, 0);
        for c in &gated.conditions[..6] {
            assert!(
                !c.held && c.value.ends_with("off: ADX 24.99 < 25 (sideways)"),
                "{c:?}"
            );
        }
        // In the sideways regime only condition 7 can count.
        let sideways = evaluate(
            &p,
            &Readings {
                adx: 24.99,
                rsi: 25.0,
                ..r
            },
        );
        assert_eq!(sideways.long, 1);
        assert!(sideways.conditions[6].held);
    }

    #[test]
    fn zero_width_channel_has_no_position() {
        let p = Params::default();
        let r = Readings {
            channel: DonchianOutput {
                upper: 100.0,
                middle: 100.0,
                lower: 100.0,
            },
            rsi: 20.0,
            ..readings(100.0)
        };
        let m = eval_map(&p, &r);
        for c in ["fibonacci", "rsi", "channel_extreme"] {
            assert!(!m[&format!("long.{c}")] && !m[&format!("short.{c}")], "{c}");
        }
        assert!(evaluate(&p, &r).conditions[1].value.contains("no range"));
    }

    #[test]
    fn the_two_sides_are_exact_mirrors() {
        // Reflecting every reading through the channel middle (price x → 1000 − x, RSI → 100 −
        // RSI, momentum → −momentum) swaps the long and short results, condition by condition.
        let p = Params::default();
        let mut checked = 0;
        for close in [
            10.0, 100.0, 200.0, 214.0, 250.0, 300.0, 382.0, 400.0, 450.0, 500.0, 550.0, 600.0,
            618.0, 700.0, 786.0, 800.0, 900.0, 990.0,
        ] {
            for mid in [-1.0, close, 2000.0] {
                for rsi in [
                    20.0, 29.5, 30.0, 40.0, 42.0, 45.0, 50.0, 58.0, 60.0, 70.0, 80.0,
                ] {
                    for roc in [-3.0, -2.0, 0.0, 2.0, 3.0] {
                        for adx in [20.0, 30.0] {
                            let r = Readings {
                                trend_middle: mid,
                                rsi,
                                roc_pct: roc,
                                adx,
                                volume: 160.0,
                                ..readings(close)
                            };
                            let m = Readings {
                                close: 1000.0 - close,
                                ema: 1000.0 - close,
                                trend_middle: 1000.0 - mid,
                                rsi: 100.0 - rsi,
                                roc_pct: -roc,
                                ..r
                            };
                            let (a, b) = (evaluate(&p, &r), evaluate(&p, &m));
                            // Without the texts (`decide_action`), the same conditions hold.
                            let bare = evaluate_with(&p, &r, Texts(false));
                            let held = |e: &Evaluation| -> Vec<bool> {
                                e.conditions.iter().map(|c| c.held).collect()
                            };
                            assert_eq!(held(&bare), held(&a), "{r:?}");
                            assert_eq!((bare.long, bare.short), (a.long, a.short));
                            assert!(bare.conditions.iter().all(|c| c.value.is_empty()));
                            for i in 0..7 {
                                assert_eq!(
                                    a.conditions[i].held,
                                    b.conditions[7 + i].held,
                                    "{} at {r:?}",
                                    a.conditions[i].name
                                );
                                assert_eq!(a.conditions[7 + i].held, b.conditions[i].held);
                            }
                            assert_eq!((a.long, a.short), (b.short, b.long));
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 18 * 3 * 11 * 5 * 2);
    }

    #[test]
    fn the_stronger_side_wins_and_a_tie_opens_nothing() {
        let s = Tfpe::new(Params::default());
        let e = |long, short| Evaluation {
            conditions: Vec::new(),
            long,
            short,
        };
        assert_eq!(s.signal(&e(4, 3)), Some(Side::Long));
        assert_eq!(s.signal(&e(2, 4)), Some(Side::Short));
        assert_eq!(s.signal(&e(5, 4)), Some(Side::Long));
        assert_eq!(s.signal(&e(4, 6)), Some(Side::Short));
        assert_eq!(s.signal(&e(4, 4)), None);
        assert_eq!(s.signal(&e(3, 3)), None);
        assert_eq!(s.signal(&e(0, 0)), None);
    }

    // ---- Candle series ----

    #[test]
    fn pullback_in_an_uptrend_opens_long_with_atr_stop_and_target() {
        let (s, d) = base();
        // Every true range of the series is 1.5 (a 1-point move plus the half-point wick).
        assert_eq!(s.readings().unwrap().atr, 1.5);
        assert_eq!(
            d.action,
            Action::Open {
                side: Side::Long,
                stop: Some(StopSpec::Distance(dec(2.25))),
                take_profit: Some(StopSpec::Distance(dec(7.5))),
            },
            "{}",
            d.conditions_line()
        );
        assert_eq!(
            held_of(&d, "long"),
            ["momentum", "fibonacci", "ema_distance", "volume"].into()
        );
        assert_eq!(
            held_of(&d, "short"),
            ["fibonacci", "ema_distance", "volume"].into()
        );
        assert_eq!(cond(&d, "long.count").value, "4/7 held (≥ 4)");
        assert!(held(&d, "long.count") && !held(&d, "short.count"));
        assert!(held(&d, "adx"));
        assert_eq!(
            d.note,
            "TFPE 4/7 (momentum, fibonacci, ema_distance, volume) → open long"
        );
        assert_eq!(
            s.protective_stop(Side::Long),
            Some(StopSpec::Distance(dec(2.25)))
        );
        assert_eq!(
            s.protective_stop(Side::Short),
            Some(StopSpec::Distance(dec(2.25)))
        );
        // Other multiples, and no take-profit at 0.
        let p = Params {
            stop_atr: Decimal::TWO,
            take_profit_atr: Decimal::new(3, 0),
            ..Params::default()
        };
        let (_, d) = run(p, &pullback(6, 1.0), 300.0);
        assert!(matches!(
            d.action,
            Action::Open { stop: Some(StopSpec::Distance(s)), take_profit: Some(StopSpec::Distance(t)), .. }
                if s == dec(3.0) && t == dec(4.5)
        ));
        let p = Params {
            take_profit_atr: Decimal::ZERO,
            ..Params::default()
        };
        let (_, d) = run(p, &pullback(6, 1.0), 300.0);
        assert!(matches!(
            d.action,
            Action::Open {
                stop: Some(_),
                take_profit: None,
                ..
            }
        ));
    }

    #[test]
    fn the_threshold_counts_held_conditions() {
        // Long holds 4, short 3: thresholds up to 3 reach both sides (long is stronger), 4 only
        // the long side, 5 and more neither.
        for t in 1..=7 {
            let p = Params {
                signal_threshold: t,
                ..Params::default()
            };
            let (_, d) = run(p, &pullback(6, 1.0), 300.0);
            if t <= 4 {
                assert!(
                    matches!(
                        d.action,
                        Action::Open {
                            side: Side::Long,
                            ..
                        }
                    ),
                    "threshold {t}: {:?}",
                    d.action
                );
            } else {
                assert_eq!(d.action, Action::Hold, "threshold {t}");
                assert_eq!(d.note, format!("no signal (long 4/7, short 3/7, need {t})"));
            }
            assert_eq!(held(&d, "short.count"), t <= 3);
        }
    }

    #[test]
    fn each_condition_flips_alone_with_its_own_bound() {
        let (s, d) = base();
        let r = s.readings().unwrap();
        let with = |p: Params| run(p, &pullback(6, 1.0), 300.0).1;
        // 1. Momentum (+5.52 %) against a bound just above it.
        let d1 = with(Params {
            momentum_min_pct: r.roc_pct / 100.0 + 1e-9,
            ..Params::default()
        });
        assert_eq!(flips(&d, &d1), set(&["long.momentum", "long.count"]));
        assert_eq!(d1.action, Action::Hold);
        // 2. Fibonacci: long retraced 46.4 % from the high, short 53.6 % from the low.
        let d2 = with(Params {
            fib_min: 0.5,
            ..Params::default()
        });
        assert_eq!(flips(&d, &d2), set(&["long.fibonacci", "long.count"]));
        let d2 = with(Params {
            fib_max: 0.5,
            ..Params::default()
        });
        assert_eq!(flips(&d, &d2), set(&["short.fibonacci"]));
        // 3. RSI: an uptrend in the neutral zone with RSI 64.1 — the long bound decides.
        assert!(r.rsi > 64.0 && r.rsi < 65.0);
        let d3 = with(Params {
            rsi_neutral_long: 65.0,
            ..Params::default()
        });
        assert_eq!(flips(&d, &d3), set(&["long.rsi"]));
        assert_eq!(cond(&d3, "long.count").value, "5/7 held (≥ 4)");
        // 4. EMA distance (0.96 %) — direction-free, both sides flip.
        let d4 = with(Params {
            ema_distance_max_pct: 0.009,
            ..Params::default()
        });
        assert_eq!(
            flips(&d, &d4),
            set(&["long.ema_distance", "short.ema_distance", "long.count"])
        );
        // 5. Volume (2.73× the average).
        let d5 = with(Params {
            volume_mult: 2.8,
            ..Params::default()
        });
        assert_eq!(
            flips(&d, &d5),
            set(&["long.volume", "short.volume", "long.count"])
        );
        // 6. Channel extreme: the close is 46.4 % of the range from the top.
        let d6 = with(Params {
            extreme_zone: 0.47,
            ..Params::default()
        });
        assert_eq!(
            flips(&d, &d6),
            set(&["short.channel_extreme", "short.count"])
        );
        // Now 4 against 4: contradictory, no entry.
        assert_eq!(d6.action, Action::Hold);
        assert_eq!(d6.note, "long and short both 4/7: contradictory, no entry");
    }

    #[test]
    fn volume_alone_flips_with_the_last_candles_volume() {
        let (_, d) = base();
        // Same prices, an ordinary last volume: the average changes, nothing else does.
        let (_, quiet) = run(Params::default(), &pullback(6, 1.0), 100.0);
        assert_eq!(
            flips(&d, &quiet),
            set(&["long.volume", "short.volume", "long.count"])
        );
        assert_eq!(quiet.action, Action::Hold);
    }

    #[test]
    fn equal_counts_on_a_deeper_pullback_open_nothing() {
        let (_, d) = run(Params::default(), &pullback(7, 1.0), 300.0);
        assert_eq!(
            held_of(&d, "long"),
            ["momentum", "fibonacci", "ema_distance", "volume"].into()
        );
        assert_eq!(
            held_of(&d, "short"),
            ["fibonacci", "rsi", "ema_distance", "volume"].into()
        );
        assert!(held(&d, "long.count") && held(&d, "short.count"));
        assert_eq!(d.action, Action::Hold);
        assert!(d.note.contains("contradictory"), "{}", d.note);
    }

    #[test]
    fn adx_below_the_minimum_gates_a_real_series() {
        let (s, d) = base();
        let adx = s.readings().unwrap().adx;
        assert!(adx > 80.0, "{adx}");
        let p = Params {
            adx_min: 90.0,
            ..Params::default()
        };
        let (_, g) = run(p, &pullback(6, 1.0), 300.0);
        assert!(!held(&g, "adx"));
        assert!(held_of(&g, "long").is_empty() && held_of(&g, "short").is_empty());
        // What the gate removed is still visible in the values.
        assert!(cond(&g, "long.momentum")
            .value
            .starts_with("+5.52% (≥ +2.00%); off: ADX"));
        assert_eq!(g.action, Action::Hold);
        assert_eq!(
            flips(&d, &g),
            set(&[
                "adx",
                "long.momentum",
                "long.fibonacci",
                "long.ema_distance",
                "long.volume",
                "short.fibonacci",
                "short.ema_distance",
                "short.volume",
                "long.count"
            ])
        );
    }

    /// 80 candles alternating 100/101 (no trend), then `k` candles moving by `step` each.
    fn chop_then(k: usize, step: f64) -> Vec<f64> {
        let mut v: Vec<f64> = (0..80)
            .map(|i| if i % 2 == 0 { 100.0 } else { 101.0 })
            .collect();
        v.extend((1..=k).map(|q| 100.0 + step * q as f64));
        v
    }

    #[test]
    fn sideways_market_with_an_rsi_extreme() {
        for (step, side, name) in [
            (-2.0, Side::Long, "long.sideways_rsi"),
            (2.0, Side::Short, "short.sideways_rsi"),
        ] {
            let closes = chop_then(6, step);
            let (s, d) = run(Params::default(), &closes, 100.0);
            let r = s.readings().unwrap();
            assert!(r.adx < 25.0, "a sideways market: ADX {}", r.adx);
            assert!(r.rsi < 30.0 || r.rsi > 70.0, "RSI {}", r.rsi);
            assert!(!held(&d, "adx"));
            let all: Vec<&Condition> = d
                .conditions
                .iter()
                .filter(|c| c.name.starts_with("long.") || c.name.starts_with("short."))
                .filter(|c| !c.name.ends_with(".count"))
                .filter(|c| c.held)
                .collect();
            assert_eq!(all.len(), 1, "{}", d.conditions_line());
            assert_eq!(all[0].name, name);
            // One condition cannot reach the default threshold of 4 …
            assert_eq!(d.action, Action::Hold);
            // … and enters when the threshold allows it.
            let p = Params {
                signal_threshold: 1,
                ..Params::default()
            };
            let (s1, d1) = run(p, &closes, 100.0);
            let stop = s1.protective_stop(side);
            assert!(
                matches!(d1.action, Action::Open { side: sd, stop: st, take_profit: Some(_) } if sd == side && st == stop && stop.is_some()),
                "{:?}",
                d1.action
            );
        }
    }

    #[test]
    fn a_longer_trend_channel_reaches_the_near_bottom_branch() {
        // A long uptrend, then a sharp dip to the bottom of the 20-candle channel.
        let mut closes: Vec<f64> = (0..100).map(|i| 100.0 + i as f64).collect();
        closes.extend((1..=7).map(|q| 199.0 - 2.5 * q as f64));
        let (s, same) = run(Params::default(), &closes, 100.0);
        let r = s.readings().unwrap();
        assert!(r.rsi <= 40.0 && r.position().unwrap() <= 0.30, "{r:?}");
        // One channel: the dip is below its middle, i.e. a downtrend; the branch cannot hold.
        assert!(!held(&same, "long.rsi"));
        assert!(cond(&same, "long.rsi")
            .value
            .contains("long needs an uptrend"));
        let p = Params {
            trend_period: 80,
            ..Params::default()
        };
        let (s, long_trend) = run(p, &closes, 100.0);
        assert!(s.trend_channel.is_some());
        assert!(
            held(&long_trend, "long.rsi"),
            "{}",
            long_trend.conditions_line()
        );
        let v = &cond(&long_trend, "long.rsi").value;
        assert!(
            v.contains("uptrend") && v.contains("near the bottom"),
            "{v}"
        );
    }

    #[test]
    fn a_held_position_is_never_reversed() {
        let (s, d) = base();
        assert!(matches!(
            d.action,
            Action::Open {
                side: Side::Long,
                ..
            }
        ));
        let short = view(Side::Short, 0);
        let h = s.decide(&Context::holding(&short, 66 * BAR));
        assert_eq!(h.action, Action::Hold);
        assert_eq!(h.note, "holding short; long signal ignored while holding");
        let long = view(Side::Long, 0);
        let h = s.decide(&Context::holding(&long, 66 * BAR));
        assert_eq!(h.action, Action::Hold);
        assert_eq!(h.note, "holding long");
    }

    #[test]
    fn time_exit_after_n_candles_of_the_timeframe() {
        let p = Params {
            time_exit_bars: 3,
            ..Params::default()
        };
        let closes = pullback(6, 1.0);
        let mut s = Tfpe::new(p);
        for (i, &c) in closes.iter().enumerate() {
            s.update(&candle(i as i64, c, 100.0));
        }
        let n = closes.len() as i64;
        // Entered after the last candle closed (the signal candle).
        let pos = view(Side::Long, n * BAR + DELAY);
        let d = s.decide(&Context::holding(&pos, n * BAR + DELAY));
        assert_eq!(
            cond(&d, "exit.time").value,
            "held 0 candles of 15 min (limit 3)"
        );
        for k in 0..3 {
            let before = s.decide(&Context::holding(&pos, 0));
            assert_eq!(before.action, Action::Hold, "after {k} candles");
            s.update(&candle(n + k, 150.0, 100.0));
        }
        let d = s.decide(&Context::holding(&pos, 0));
        assert!(held(&d, "exit.time"));
        assert!(
            matches!(&d.action, Action::Close { reason } if reason == "time exit: held 3 candles of 15 min (limit 3)"),
            "{:?}",
            d.action
        );
        // An outage (a missing candle) still counts as time held.
        let mut s = Tfpe::new(Params {
            time_exit_bars: 3,
            ..Params::default()
        });
        for (i, &c) in closes.iter().enumerate() {
            s.update(&candle(i as i64, c, 100.0));
        }
        s.update(&candle(n, 150.0, 100.0));
        assert_eq!(s.decide(&Context::holding(&pos, 0)).action, Action::Hold);
        s.update(&candle(n + 2, 150.0, 100.0));
        assert!(matches!(
            s.decide(&Context::holding(&pos, 0)).action,
            Action::Close { .. }
        ));
        assert_eq!(s.bar_ms, BAR);
        // Off by default.
        let (s, _) = base();
        let old = view(Side::Long, 0);
        assert_eq!(s.decide(&Context::holding(&old, 0)).action, Action::Hold);
    }

    /// Decisions, candle by candle, for a position entered after candle `signal` of `closes`.
    fn middle_exits(closes: &[f64], signal: usize, side: Side, on: bool) -> Vec<bool> {
        let mut s = Tfpe::new(Params {
            donchian_period: 3,
            exit_on_middle_cross: on,
            ..Params::default()
        });
        let pos = view(side, (signal as i64 + 1) * BAR + DELAY);
        let mut out = Vec::new();
        for (i, &c) in closes.iter().enumerate() {
            s.update(&candle(i as i64, c, 100.0));
            if i > signal {
                let d = s.decide(&Context::holding(&pos, 0));
                let closed = matches!(&d.action, Action::Close { reason } if reason.starts_with("Donchian middle crossed"));
                assert_eq!(closed, held(&d, "exit.middle_cross"));
                out.push(closed);
            }
        }
        out
    }

    #[test]
    fn middle_cross_exit_against_the_position() {
        // Entered above the middle (13.5 vs 13): still above at 13.6, then 12 < 12.8 → exit.
        let above = [13.0, 12.5, 13.0, 13.5, 13.6, 12.0];
        assert_eq!(middle_exits(&above, 3, Side::Long, true), [false, true]);
        assert_eq!(middle_exits(&above, 3, Side::Long, false), [false, false]);
        // Entered below the middle (a long at the channel bottom): the close above the middle
        // before the signal does not count; it must cross over (12) and back (9).
        let below = [13.0, 12.5, 13.0, 11.0, 10.0, 9.5, 12.0, 9.0];
        assert_eq!(
            middle_exits(&below, 4, Side::Long, true),
            [false, false, true]
        );
        // Shorts: the mirror image.
        let mirror = |xs: &[f64]| xs.iter().map(|x| 30.0 - x).collect::<Vec<_>>();
        assert_eq!(
            middle_exits(&mirror(&above), 3, Side::Short, true),
            [false, true]
        );
        assert_eq!(
            middle_exits(&mirror(&below), 4, Side::Short, true),
            [false, false, true]
        );
        // A long is not closed by the price rising through the middle.
        assert_eq!(
            middle_exits(&mirror(&above), 3, Side::Long, true),
            [false, false]
        );
    }

    fn bad(key: &str, value: toml::Value) -> StrategyError {
        let mut t = toml::Table::new();
        t.insert(key.into(), value);
        match build(&t, "strategies.TFPE.params") {
            Ok(_) => panic!("{key} = {:?} was accepted", t[key]),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_params_name_the_key() {
        use toml::Value::{Float, Integer, String as S};
        let cases = [
            ("donchian", Integer(20)),
            ("donchian_period", Integer(1)),
            ("trend_period", Integer(1)),
            ("signal_threshold", Integer(0)),
            ("signal_threshold", Integer(8)),
            ("momentum_lookback", Integer(0)),
            ("momentum_lookback", Integer(-5)),
            ("momentum_min_pct", Float(f64::NAN)),
            ("fib_min", Float(0.9)),
            ("fib_max", Float(1.5)),
            ("rsi_period", Integer(1)),
            ("rsi_near_extreme_long", Float(-1.0)),
            ("rsi_neutral_short", Float(100.5)),
            ("rsi_oversold", Integer(101)),
            ("rsi_overbought", S("high".into())),
            ("near_extreme_zone", Float(0.5)),
            ("neutral_zone", Float(-0.1)),
            ("ema_period", Integer(0)),
            ("ema_distance_max_pct", Float(2.0)),
            ("volume_period", Integer(0)),
            ("volume_mult", Float(-1.0)),
            ("extreme_zone", Float(0.0)),
            ("extreme_zone", Float(0.6)),
            ("adx_period", Integer(1)),
            ("adx_min", S("x".into())),
            ("adx_min", Float(101.0)),
            ("atr_period", Integer(0)),
            ("stop_atr", Float(0.0)),
            ("take_profit_atr", Float(-1.0)),
            ("time_exit_bars", Float(1.5)),
            ("exit_on_middle_cross", Integer(1)),
        ];
        for (key, value) in cases {
            match bad(key, value.clone()) {
                StrategyError::BadParams { path, message } => {
                    assert_eq!(path, format!("strategies.TFPE.params.{key}"), "{message}");
                    assert!(!message.is_empty());
                }
                e => panic!("{key} = {value:?}: {e}"),
            }
        }
        let e = bad("fib_min", Float(0.9)).to_string();
        assert!(e.contains("fib_min ≤ fib_max"), "{e}");
        // Floats and integers both work for the ATR multiples; the options parse.
        let t: toml::Table = toml::from_str(
            "stop_atr = 2\ntake_profit_atr = 0.0\ntime_exit_bars = 12\n\
             exit_on_middle_cross = true\ntrend_period = 320\nadx_min = 20",
        )
        .unwrap();
        let p: Params = parse_params(&t, "x").unwrap();
        p.validate("x").unwrap();
        assert_eq!(
            (
                p.stop_atr,
                p.take_profit_atr,
                p.time_exit_bars,
                p.trend_period,
                p.adx_min
            ),
            (Decimal::TWO, Decimal::ZERO, 12, 320, 20.0)
        );
        assert!(p.exit_on_middle_cross);
        assert!(build(&t, "x").is_ok());
    }

    // ---- Real candles ----

    fn real_series() -> Vec<(String, Vec<Candle>)> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
        let m15 = load_csv(&path).unwrap();
        assert_eq!(m15.timeframe, Timeframe::M15);
        let h4 = crate::data::resample(&m15.candles, Timeframe::M15, Timeframe::H4, true);
        vec![("15m".into(), m15.candles), ("4h".into(), h4)]
    }

    #[test]
    fn real_candles_give_plausible_consistent_entries() {
        for (tf, candles) in real_series() {
            let mut s = Tfpe::new(Params::default());
            let (mut long, mut short) = (0, 0);
            for c in &candles {
                s.update(c);
                let d = s.decide(&Context::flat(c.open_time));
                let Action::Open {
                    side,
                    stop,
                    take_profit,
                } = d.action
                else {
                    continue;
                };
                let name = side_name(side);
                let n = held_of(&d, name).len();
                let other = held_of(&d, side_name(side.opposite())).len();
                assert!(n >= 4, "{tf} {}: {}", c.open_time, d.conditions_line());
                assert!(other < n || other < 4, "{tf}: {}", d.conditions_line());
                assert_eq!(
                    cond(&d, &format!("{name}.count")).value,
                    format!("{n}/7 held (≥ 4)")
                );
                assert!(held(&d, "adx") && held(&d, &format!("{name}.count")));
                let atr = s.readings().unwrap().atr;
                assert_eq!(
                    stop,
                    Some(StopSpec::Distance(atr_distance(atr, dec(1.5)).unwrap()))
                );
                assert_eq!(
                    take_profit,
                    Some(StopSpec::Distance(atr_distance(atr, dec(5.0)).unwrap()))
                );
                // ATR × 1.5 within a rounding of the 12 significant digits kept.
                let d = match stop {
                    Some(StopSpec::Distance(d)) => d.to_f64().unwrap(),
                    _ => unreachable!(),
                };
                assert!((d - atr * 1.5).abs() <= atr * 1e-11, "{d} vs {atr}");
                match side {
                    Side::Long => long += 1,
                    Side::Short => short += 1,
                }
            }
            let entries = long + short;
            assert!(
                entries > 0,
                "{tf}: no entries over {} candles",
                candles.len()
            );
            assert!(
                entries * 50 < candles.len(),
                "{tf}: {entries} entries over {} candles is not selective",
                candles.len()
            );
            if tf == "15m" {
                assert!(long > 0 && short > 0, "{tf}: long {long} short {short}");
            }
        }
    }

    #[test]
    fn real_candles_with_the_optional_exits() {
        // A simple position loop: enter at the next open, stop / take-profit on the candle's
        // range, and the strategy's own exits. Every position ends within the time limit.
        let (_, candles) = real_series().remove(0);
        let p = Params {
            time_exit_bars: 16,
            exit_on_middle_cross: true,
            ..Params::default()
        };
        let mut s = Tfpe::new(p);
        let mut open: Option<(PositionView, usize, Price, Option<Price>)> = None;
        let mut pending: Option<Action> = None;
        let (mut trades, mut by_time, mut by_cross, mut by_stops) = (0, 0, 0, 0);
        for (i, c) in candles.iter().enumerate() {
            // Orders decided on the previous candle fill at this candle's open.
            match pending.take() {
                Some(Action::Open {
                    side,
                    stop,
                    take_profit,
                }) => {
                    let mut v = view(side, c.open_time + DELAY);
                    v.entry_price = c.open;
                    let sl = stop.unwrap().stop_price(side, c.open);
                    let tp = take_profit.map(|t| t.target_price(side, c.open));
                    open = Some((v, i, sl, tp));
                }
                Some(Action::Close { reason }) => {
                    let (_, at, _, _) = open.take().unwrap();
                    assert!(i - at <= 16, "held {} candles: {reason}", i - at);
                    trades += 1;
                    if reason.contains("time exit") {
                        assert_eq!(i - at, 16);
                        by_time += 1;
                    } else {
                        by_cross += 1;
                    }
                }
                _ => {}
            }
            if let Some((v, _, sl, tp)) = &open {
                let hit_stop = match v.side {
                    Side::Long => c.low <= *sl,
                    Side::Short => c.high >= *sl,
                };
                let hit_tp = tp.is_some_and(|tp| match v.side {
                    Side::Long => c.high >= tp,
                    Side::Short => c.low <= tp,
                });
                if hit_stop || hit_tp {
                    open = None;
                    trades += 1;
                    by_stops += 1;
                }
            }
            s.update(c);
            let d = match &open {
                Some((v, ..)) => s.decide(&Context::holding(v, c.open_time + BAR + DELAY)),
                None => s.decide(&Context::flat(c.open_time + BAR + DELAY)),
            };
            assert!(!matches!(d.action, Action::Reverse { .. }));
            if !matches!(d.action, Action::Hold) {
                pending = Some(d.action);
            }
        }
        // Both optional exits fire on real candles (next to the stops), never past the limit.
        assert!(
            by_time > 0 && by_cross > 0 && trades == by_time + by_cross + by_stops,
            "trades {trades}: time {by_time} cross {by_cross} stops {by_stops}"
        );
    }
}
