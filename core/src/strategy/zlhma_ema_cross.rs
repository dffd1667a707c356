//! ZLHMA_EMA_CROSS: EMA 50/200 golden / death crosses confirmed by the zero-lag Hull average's
//! direction and ADX (SPEC.md, "ZLHMA_EMA_CROSS"). This module owns the entry rule, the
//! trailing stop, the partial take-profit schedule and the exit on the opposite cross.
//!
//! **Indicators:** EMA(50) and EMA(200) of closes (TA-Lib seeding, [`Ema`]); the zero-lag HMA of
//! closes ([`ZlHma`]: `2·HMA(x) − HMA(HMA(x))`), period `zlhma_period` — the seeds give none, so
//! the default is 21 (the public original implementation used 14; one config line); ADX(14).
//!
//! **Entry** (flat only), all three on the same closed candle; short is the mirror:
//! 1. golden cross: `diff[t−1] ≤ 0 < diff[t]` with `diff = EMA50 − EMA200`;
//! 2. ZL-HMA rising over the last bar: `zlhma[t] > zlhma[t−1]` (falling for a short);
//! 3. ADX(14) > 25.
//!
//! Every entry carries the initial exchange stop `stop_loss_pct`, default 1.5 % of the fill
//! ([`StopSpec::Percent`]). The spec and the seeds name no stop for this strategy; 1.5 % is the
//! seeds' initial stop for the other 1h strategy run at the same 10× leverage (ZLMACD_ICHIMOKU,
//! "초기 손절: 1.5% (백테스트 개선)": chosen in their backtests), and it keeps the first
//! take-profit level (+5 %) at 3.3 × the risk.
//!
//! **Holding.** Profit is measured on the candle close against the average entry price. By
//! priority, one action per candle:
//! 1. the opposite cross: confirmed like an entry (ZL-HMA direction and ADX) it **reverses**,
//!    since that candle is the only one the cross is on; unconfirmed it closes when
//!    `exit_on_opposite_cross` (default true: a long held through a death cross has lost the
//!    trend it was opened for; the original implementation closed on it too);
//! 2. the trailing stop's exit: active once the best price since entry
//!    ([`PositionView::best_price`], highest high / lowest low) has been
//!    `trailing_activation_pct` (5 %) in profit, its level is best × (1 − `trailing_distance_pct`)
//!    (2 %) for a long, best × 1.02 for a short; a close beyond it closes the position (a stop
//!    placed there now would trigger at once);
//! 3. partial take-profit: at +5 % / +10 % / +15 % close 25 % / 35 % / 40 % of the original size,
//!    sent as fractions of the current quantity (0.25, 7/15, 1), the same schedule rules as
//!    ZLMACD_ICHIMOKU (see [`super::zlmacd_ichimoku`] for the conversion); each step fires once,
//!    in order;
//! 4. trailing-stop move: the trail level is sent as [`Action::MoveStop`] whenever it tightens the
//!    exchange stop (never loosens it). It comes last because it is recomputed from the best price
//!    at every candle, so deferring it one candle loses nothing.
//!
//! **On the exchange** ([`Strategy::exchange_exits`]): the take-profit steps rest as a reduce-only
//! TAKE_PROFIT_MARKET ladder and the trail as a TRAILING_STOP_MARKET (activation +5 %,
//! callbackRate 2), so they fire inside a candle even when no job runs; the at-close rules above
//! are the fallback (see [`super::zlmacd_ichimoku`]).
//!
//! **Not here:** the timeframe (1h, config), leverage, Kelly sizing and every account-level limit
//! (daily loss, consecutive losses, drawdown) are the risk layer's job.

use super::zlmacd_ichimoku::{
    bad, check_fraction, check_steps, current_qty_fractions, ladder, pct, stop_move_value,
    trailing_value,
};
use super::{
    parse_params, Action, Condition, Context, Decision, ExitPlan, PositionView, StopSpec, Strategy,
    StrategyError, Texts, Trailing,
};
use crate::domain::{Candle, Price, Side};
use crate::indicators::{Adx, Bar, Ema, ZlHma};
use rust_decimal::Decimal;
use serde::Deserialize;

/// Parameters (`[strategies.params]` in config); every field has the spec's default.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Params {
    pub ema_fast: usize,
    pub ema_slow: usize,
    pub zlhma_period: usize,
    pub adx_period: usize,
    /// ADX must be strictly above this.
    pub adx_threshold: f64,
    /// Initial exchange stop, a fraction of the fill price; 0 sends none.
    pub stop_loss_pct: Decimal,
    /// Best-price profit that activates the trailing stop.
    pub trailing_activation_pct: Decimal,
    /// Distance of the trailing stop from the best price; 0 disables the trailing stop.
    pub trailing_distance_pct: Decimal,
    /// Profit levels of the partial take-profit steps (increasing).
    pub take_profit_levels: Vec<Decimal>,
    /// Share of the original size each step closes (sum ≤ 1).
    pub take_profit_fractions: Vec<Decimal>,
    /// Close on an opposite cross that is not confirmed (a confirmed one always reverses).
    pub exit_on_opposite_cross: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            ema_fast: 50,
            ema_slow: 200,
            zlhma_period: 21,
            adx_period: 14,
            adx_threshold: 25.0,
            stop_loss_pct: Decimal::new(15, 3),
            trailing_activation_pct: Decimal::new(5, 2),
            trailing_distance_pct: Decimal::new(2, 2),
            take_profit_levels: vec![Decimal::new(5, 2), Decimal::new(10, 2), Decimal::new(15, 2)],
            take_profit_fractions: vec![
                Decimal::new(25, 2),
                Decimal::new(35, 2),
                Decimal::new(40, 2),
            ],
            exit_on_opposite_cross: true,
        }
    }
}

pub fn build(params: &toml::Table, path: &str) -> Result<Box<dyn Strategy>, StrategyError> {
    let p: Params = parse_params(params, path)?;
    validate(&p, path)?;
    Ok(Box::new(ZlhmaEmaCross::new(p)))
}

/// Every constraint on [`Params`], with the offending key's path.
pub fn validate(p: &Params, path: &str) -> Result<(), StrategyError> {
    if p.ema_fast == 0 || p.ema_fast >= p.ema_slow {
        return Err(bad(
            path,
            "ema_fast",
            format!(
                "need 0 < ema_fast < ema_slow, got {}/{}",
                p.ema_fast, p.ema_slow
            ),
        ));
    }
    if p.zlhma_period < 2 {
        return Err(bad(
            path,
            "zlhma_period",
            format!("must be ≥ 2, got {}", p.zlhma_period),
        ));
    }
    if p.adx_period < 2 {
        return Err(bad(
            path,
            "adx_period",
            format!("must be ≥ 2, got {}", p.adx_period),
        ));
    }
    if !(0.0..=100.0).contains(&p.adx_threshold) {
        return Err(bad(
            path,
            "adx_threshold",
            format!("ADX lies in [0, 100], got {}", p.adx_threshold),
        ));
    }
    check_fraction(path, "stop_loss_pct", p.stop_loss_pct)?;
    check_fraction(path, "trailing_distance_pct", p.trailing_distance_pct)?;
    if p.trailing_activation_pct < Decimal::ZERO {
        return Err(bad(
            path,
            "trailing_activation_pct",
            format!("must be ≥ 0, got {}", p.trailing_activation_pct),
        ));
    }
    check_steps(
        path,
        ("take_profit_levels", &p.take_profit_levels),
        ("take_profit_fractions", &p.take_profit_fractions),
    )?;
    let total: Decimal = p.take_profit_fractions.iter().sum();
    if total > Decimal::ONE {
        return Err(bad(
            path,
            "take_profit_fractions",
            format!("the steps close more than the whole position (sum {total} > 1)"),
        ));
    }
    Ok(())
}

/// Indicator readings after the latest candle: what a decision is computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Snapshot {
    candle: Candle,
    ema_fast: f64,
    ema_slow: f64,
    /// `ema_fast − ema_slow` one candle earlier.
    prev_diff: f64,
    zlhma: f64,
    prev_zlhma: f64,
    adx: f64,
}

#[derive(Clone, Debug)]
pub struct ZlhmaEmaCross {
    p: Params,
    /// `take_profit_fractions` converted to fractions of the current quantity.
    tp_current: Vec<Decimal>,
    fast: Ema,
    slow: Ema,
    zlhma: ZlHma,
    adx: Adx,
    emas: Option<(f64, f64)>,
    prev_diff: Option<f64>,
    last_zlhma: Option<f64>,
    prev_zlhma: Option<f64>,
    last_adx: Option<f64>,
    last: Option<Candle>,
    candles: usize,
}

impl ZlhmaEmaCross {
    /// Build from already validated parameters (see [`validate`]).
    pub fn new(p: Params) -> Self {
        ZlhmaEmaCross {
            tp_current: current_qty_fractions(&p.take_profit_fractions),
            fast: Ema::new(p.ema_fast),
            slow: Ema::new(p.ema_slow),
            zlhma: ZlHma::new(p.zlhma_period),
            adx: Adx::new(p.adx_period),
            p,
            emas: None,
            prev_diff: None,
            last_zlhma: None,
            prev_zlhma: None,
            last_adx: None,
            last: None,
            candles: 0,
        }
    }

    fn stop(&self) -> Option<StopSpec> {
        (self.p.stop_loss_pct > Decimal::ZERO).then_some(StopSpec::Percent(self.p.stop_loss_pct))
    }

    fn snapshot(&self) -> Option<Snapshot> {
        let (ema_fast, ema_slow) = self.emas?;
        Some(Snapshot {
            candle: self.last?,
            ema_fast,
            ema_slow,
            prev_diff: self.prev_diff?,
            zlhma: self.last_zlhma?,
            prev_zlhma: self.prev_zlhma?,
            adx: self.last_adx?,
        })
    }

    /// The entry conditions on this candle, for both sides, with their values.
    fn signals(&self, s: &Snapshot, t: Texts) -> Signals {
        let diff = s.ema_fast - s.ema_slow;
        let ema_v = t.make(|| {
            format!(
                "ema{}={:.2} ema{}={:.2} diff={:.4} prev_diff={:.4}",
                self.p.ema_fast, s.ema_fast, self.p.ema_slow, s.ema_slow, diff, s.prev_diff
            )
        });
        let zl_v = t.make(|| {
            format!(
                "zlhma{}={:.2} prev={:.2}",
                self.p.zlhma_period, s.zlhma, s.prev_zlhma
            )
        });
        let golden = s.prev_diff <= 0.0 && diff > 0.0;
        let death = s.prev_diff >= 0.0 && diff < 0.0;
        let rising = s.zlhma > s.prev_zlhma;
        let falling = s.zlhma < s.prev_zlhma;
        let trend = s.adx > self.p.adx_threshold;
        Signals {
            golden,
            death,
            rising,
            falling,
            trend,
            conditions: vec![
                Condition::new("ema_golden_cross", golden, ema_v.clone()),
                Condition::new("ema_death_cross", death, ema_v),
                Condition::new("zlhma_rising", rising, zl_v.clone()),
                Condition::new("zlhma_falling", falling, zl_v),
                Condition::new(
                    "adx_trend",
                    trend,
                    t.make(|| format!("adx={:.2} > {}", s.adx, self.p.adx_threshold)),
                ),
            ],
        }
    }

    #[cfg(test)]
    fn evaluate(&self, s: &Snapshot, ctx: &Context<'_>) -> Decision {
        self.evaluate_with(s, ctx, Texts(true))
    }

    fn evaluate_with(&self, s: &Snapshot, ctx: &Context<'_>, t: Texts) -> Decision {
        let sig = self.signals(s, t);
        match ctx.position {
            None => self.entry(sig),
            Some(pos) => self.manage(s, sig, pos, t),
        }
    }

    fn entry(&self, sig: Signals) -> Decision {
        let side = sig.confirmed();
        let Signals { conditions, .. } = sig;
        match side {
            Some(side) => Decision {
                action: Action::Open {
                    side,
                    stop: self.stop(),
                    take_profit: None,
                },
                conditions,
                note: format!(
                    "EMA{}/{} cross confirmed by ZL-HMA and ADX → open {side}",
                    self.p.ema_fast, self.p.ema_slow
                ),
            },
            None => Decision::hold("no confirmed EMA cross", conditions),
        }
    }

    fn manage(&self, s: &Snapshot, sig: Signals, pos: &PositionView, t: Texts) -> Decision {
        let side = pos.side;
        let long = side == Side::Long;
        let entry = pos.entry_price.get();
        let c = s.candle;
        let close = c.close.get();
        let mut conditions = sig.conditions.clone();
        if entry <= Decimal::ZERO {
            conditions.push(Condition::new("entry_price", false, entry.to_string()));
            return Decision::hold(
                "position without an entry price: nothing to measure against",
                conditions,
            );
        }
        let pnl = side.sign() * (close - entry) / entry;
        // Best price since entry; the jobs keep it from closed candles, the latest candle is
        // included again in case it was not yet.
        let best = match (side, pos.best_price) {
            (Side::Long, b) => b.map_or(entry, |b| b.get()).max(entry).max(c.high.get()),
            (Side::Short, b) => b.map_or(entry, |b| b.get()).min(entry).min(c.low.get()),
        };
        let best_profit = side.sign() * (best - entry) / entry;
        let dist = self.p.trailing_distance_pct;
        let trail_on = dist > Decimal::ZERO && best_profit >= self.p.trailing_activation_pct;
        let level = if long {
            best * (Decimal::ONE - dist)
        } else {
            best * (Decimal::ONE + dist)
        };
        let trail_hit = trail_on && if long { close <= level } else { close >= level };
        let opposite_cross = if long { sig.death } else { sig.golden };
        let reverse = sig.confirmed() == Some(side.opposite());
        let tp_next = usize::from(pos.partial_exits_done);
        let tp = self
            .p
            .take_profit_levels
            .get(tp_next)
            .filter(|lvl| pnl >= **lvl)
            .map(|_| (self.tp_current[tp_next], tp_next as u8 + 1));
        let tightens = match pos.stop_loss {
            None => true,
            Some(old) if long => level > old.get(),
            Some(old) => level < old.get(),
        };
        let move_stop = trail_on && !trail_hit && tightens;
        conditions.extend([
            Condition::new(
                "opposite_cross",
                opposite_cross,
                t.make(|| {
                    format!(
                        "{} (confirmed: {reverse})",
                        if long { "death cross" } else { "golden cross" }
                    )
                }),
            ),
            Condition::new(
                "trailing_stop",
                trail_hit,
                t.make(|| trailing_value(trail_on, best, best_profit, level, close)),
            ),
            Condition::new(
                "take_profit_step",
                tp.is_some(),
                t.make(|| match self.p.take_profit_levels.get(tp_next) {
                    Some(l) => format!(
                        "step {}/{} at {}: pnl={}",
                        tp_next + 1,
                        self.p.take_profit_levels.len(),
                        pct(*l),
                        pct(pnl)
                    ),
                    None => format!("all {} steps done", self.p.take_profit_levels.len()),
                }),
            ),
            Condition::new(
                "trailing_stop_move",
                move_stop,
                t.make(|| stop_move_value(level, pos.stop_loss)),
            ),
        ]);

        if reverse {
            let to = side.opposite();
            return Decision {
                action: Action::Reverse {
                    side: to,
                    stop: self.stop(),
                    take_profit: None,
                },
                conditions,
                note: format!("confirmed opposite cross → reverse to {to}"),
            };
        }
        let close_reason = if opposite_cross && self.p.exit_on_opposite_cross {
            Some("opposite EMA cross")
        } else if trail_hit {
            Some("trailing stop")
        } else {
            None
        };
        if let Some(reason) = close_reason {
            return Decision {
                action: Action::Close {
                    reason: reason.to_string(),
                },
                conditions,
                note: format!("exit {side}: {reason} (pnl {})", pct(pnl)),
            };
        }
        if let Some((fraction, stage)) = tp {
            let reason = format!(
                "take-profit step {stage} at {} (pnl {})",
                pct(self.p.take_profit_levels[usize::from(stage) - 1]),
                pct(pnl)
            );
            return Decision {
                action: Action::PartialClose {
                    fraction,
                    stage,
                    reason: reason.clone(),
                },
                conditions,
                note: reason,
            };
        }
        if move_stop {
            let reason = format!(
                "trailing stop: best {} − {}",
                best.normalize(),
                pct(dist).trim_start_matches('+')
            );
            return Decision {
                action: Action::MoveStop {
                    price: Price::new(level),
                    reason: reason.clone(),
                },
                conditions,
                note: reason,
            };
        }
        Decision::hold(
            t.make(|| format!("holding {side} (pnl {})", pct(pnl))),
            conditions,
        )
    }
}

/// The entry conditions of one candle.
struct Signals {
    golden: bool,
    death: bool,
    rising: bool,
    falling: bool,
    trend: bool,
    conditions: Vec<Condition>,
}

impl Signals {
    /// The side whose cross is confirmed on this candle, if any.
    fn confirmed(&self) -> Option<Side> {
        if self.golden && self.rising && self.trend {
            Some(Side::Long)
        } else if self.death && self.falling && self.trend {
            Some(Side::Short)
        } else {
            None
        }
    }
}

impl Strategy for ZlhmaEmaCross {
    fn name(&self) -> &'static str {
        "ZLHMA_EMA_CROSS"
    }

    fn warmup(&self) -> usize {
        // Crosses and the ZL-HMA direction need the previous reading too.
        (self.slow.lookback() + 2)
            .max(self.fast.lookback() + 2)
            .max(self.zlhma.lookback() + 2)
            .max(self.adx.lookback() + 1)
    }

    fn update(&mut self, candle: &Candle) {
        let bar = Bar::from(candle);
        let f = self.fast.update(bar.close);
        let s = self.slow.update(bar.close);
        self.prev_diff = self.emas.map(|(f, s)| f - s);
        self.emas = f.zip(s);
        if let Some(z) = self.zlhma.update(bar.close) {
            self.prev_zlhma = self.last_zlhma;
            self.last_zlhma = Some(z);
        }
        self.last_adx = self.adx.update(bar).map(|o| o.adx);
        self.last = Some(*candle);
        self.candles += 1;
    }

    fn protective_stop(&self, _side: Side) -> Option<StopSpec> {
        self.stop()
    }

    /// The partial take-profit steps as a TAKE_PROFIT_MARKET ladder and the trailing stop as a
    /// TRAILING_STOP_MARKET (activation +5 %, callbackRate 2) when Binance can express it.
    fn exchange_exits(&self) -> ExitPlan {
        let d = self.p.trailing_distance_pct;
        ExitPlan {
            take_profits: ladder(&self.p.take_profit_levels, &self.tp_current),
            trailing: (d > Decimal::ZERO)
                .then(|| Trailing::expressible(self.p.trailing_activation_pct, d))
                .flatten(),
        }
    }

    fn decide(&self, ctx: &Context<'_>) -> Decision {
        self.decide_with(ctx, Texts(true))
    }

    /// Without the texts: only the conditions' values and the notes are skipped, the actions'
    /// reasons are written either way, so this is `decide`'s action (checked for every candle
    /// and context in `core/tests/decide_action.rs`). Trailing-stop moves make actions common
    /// here, so deciding them again with the texts would cost most of what skipping saves.
    fn decide_action(&self, ctx: &Context<'_>) -> Action {
        self.decide_with(ctx, Texts(false)).action
    }
}

impl ZlhmaEmaCross {
    /// [`Strategy::decide`], writing the texts only when `t` asks for them.
    fn decide_with(&self, ctx: &Context<'_>, t: Texts) -> Decision {
        match self.snapshot() {
            Some(s) => self.evaluate_with(&s, ctx, t),
            None => Decision::hold(
                format!("warming up ({}/{} candles)", self.candles, self.warmup()),
                vec![Condition::new(
                    "warmed_up",
                    false,
                    format!("{}/{}", self.candles, self.warmup()),
                )],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Qty;
    use rust_decimal_macros::dec;

    const HOUR_MS: i64 = 3_600_000;
    const NOW: i64 = 1_000 * HOUR_MS;

    fn strat() -> ZlhmaEmaCross {
        ZlhmaEmaCross::new(Params::default())
    }

    fn candle(high: Decimal, low: Decimal, close: Decimal) -> Candle {
        Candle {
            open_time: NOW - HOUR_MS,
            open: Price::new(close),
            high: Price::new(high),
            low: Price::new(low),
            close: Price::new(close),
            volume: Decimal::ONE,
        }
    }

    /// No cross (fast below slow, as before), ZL-HMA flat, ADX 20.
    fn neutral() -> Snapshot {
        Snapshot {
            candle: candle(dec!(101), dec!(99), dec!(100)),
            ema_fast: 99.0,
            ema_slow: 100.0,
            prev_diff: -1.0,
            zlhma: 100.0,
            prev_zlhma: 100.0,
            adx: 20.0,
        }
    }

    fn golden(s: &mut Snapshot) {
        s.prev_diff = -0.5;
        s.ema_fast = 100.2;
        s.ema_slow = 100.0;
    }
    fn death(s: &mut Snapshot) {
        s.prev_diff = 0.5;
        s.ema_fast = 99.8;
        s.ema_slow = 100.0;
    }
    fn rising(s: &mut Snapshot) {
        s.prev_zlhma = 99.0;
    }
    fn falling(s: &mut Snapshot) {
        s.prev_zlhma = 101.0;
    }
    fn trend(s: &mut Snapshot) {
        s.adx = 30.0;
    }

    fn held(d: &Decision, name: &str) -> bool {
        d.conditions
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("condition {name} missing in {d:?}"))
            .held
    }

    fn flat(s: &ZlhmaEmaCross, snap: &Snapshot) -> Decision {
        s.evaluate(snap, &Context::flat(NOW))
    }

    #[test]
    fn entry_needs_cross_direction_and_adx() {
        let s = strat();
        let d = flat(&s, &neutral());
        assert_eq!(d.action, Action::Hold);
        assert_eq!(d.conditions.len(), 5);
        // Long: each of the three missing blocks the entry.
        type Set = fn(&mut Snapshot);
        let long: [Set; 3] = [golden, rising, trend];
        let short: [Set; 3] = [death, falling, trend];
        for (side, conds) in [(Side::Long, long), (Side::Short, short)] {
            for skip in 0..3 {
                let mut snap = neutral();
                if side == Side::Short {
                    snap.ema_fast = 101.0; // fast above slow before a death cross
                    snap.prev_diff = 1.0;
                }
                for (i, f) in conds.iter().enumerate() {
                    if i != skip {
                        f(&mut snap);
                    }
                }
                assert_eq!(
                    flat(&s, &snap).action,
                    Action::Hold,
                    "{side} without {skip}"
                );
            }
            let mut snap = neutral();
            for f in conds {
                f(&mut snap);
            }
            let d = flat(&s, &snap);
            assert_eq!(
                d.action,
                Action::Open {
                    side,
                    stop: Some(StopSpec::Percent(dec!(0.015))),
                    take_profit: None
                },
                "{}",
                d.conditions_line()
            );
        }
    }

    #[test]
    fn thresholds_are_strict_and_directions_must_agree() {
        let s = strat();
        let mut snap = neutral();
        golden(&mut snap);
        rising(&mut snap);
        snap.adx = 25.0;
        assert_eq!(flat(&s, &snap).action, Action::Hold);
        snap.adx = 25.01;
        assert!(matches!(
            flat(&s, &snap).action,
            Action::Open {
                side: Side::Long,
                ..
            }
        ));
        // A flat ZL-HMA confirms nothing; a falling one does not confirm a golden cross.
        snap.prev_zlhma = snap.zlhma;
        assert_eq!(flat(&s, &snap).action, Action::Hold);
        falling(&mut snap);
        let d = flat(&s, &snap);
        assert_eq!(d.action, Action::Hold);
        assert!(held(&d, "ema_golden_cross") && held(&d, "zlhma_falling"));
        // Touching zero from below is not a cross yet; the cross is the first candle above.
        let mut snap = neutral();
        rising(&mut snap);
        trend(&mut snap);
        snap.ema_fast = 100.0;
        snap.prev_diff = -0.1;
        assert!(!held(&flat(&s, &snap), "ema_golden_cross"));
        snap.prev_diff = 0.0;
        snap.ema_fast = 100.1;
        assert!(held(&flat(&s, &snap), "ema_golden_cross"));
        // Already above: no new cross.
        snap.prev_diff = 0.05;
        assert_eq!(flat(&s, &snap).action, Action::Hold);
    }

    fn view(side: Side, entry: Decimal) -> PositionView {
        PositionView {
            side,
            qty: Qty::new(Decimal::ONE),
            entry_price: Price::new(entry),
            opened_at: NOW - 10 * HOUR_MS,
            best_price: None,
            stop_loss: Some(StopSpec::Percent(dec!(0.015)).stop_price(side, Price::new(entry))),
            partial_exits_done: 0,
            pyramids_done: 0,
        }
    }

    /// A held position's candle at `close`, trend intact (fast above slow for a long).
    fn at(side: Side, close: Decimal) -> Snapshot {
        let mut s = neutral();
        s.candle = candle(close, close, close);
        if side == Side::Long {
            s.ema_fast = 101.0;
            s.prev_diff = 1.0;
        }
        s
    }

    fn hold_ctx(p: &PositionView) -> Context<'_> {
        Context::holding(p, NOW)
    }

    #[test]
    fn opposite_cross_reverses_when_confirmed_and_closes_otherwise() {
        let s = strat();
        let p = view(Side::Long, dec!(100));
        let mut snap = at(Side::Long, dec!(100));
        assert_eq!(s.evaluate(&snap, &hold_ctx(&p)).action, Action::Hold);
        death(&mut snap);
        let d = s.evaluate(&snap, &hold_ctx(&p));
        assert_eq!(
            d.action,
            Action::Close {
                reason: "opposite EMA cross".into()
            }
        );
        assert!(held(&d, "opposite_cross"));
        falling(&mut snap);
        trend(&mut snap);
        assert_eq!(
            s.evaluate(&snap, &hold_ctx(&p)).action,
            Action::Reverse {
                side: Side::Short,
                stop: Some(StopSpec::Percent(dec!(0.015))),
                take_profit: None
            }
        );
        // Without the exit rule an unconfirmed cross is held through.
        let keep = ZlhmaEmaCross::new(Params {
            exit_on_opposite_cross: false,
            ..Params::default()
        });
        let mut snap = at(Side::Long, dec!(100));
        death(&mut snap);
        assert_eq!(keep.evaluate(&snap, &hold_ctx(&p)).action, Action::Hold);
        // Short mirror.
        let p = view(Side::Short, dec!(100));
        let mut snap = at(Side::Short, dec!(100));
        golden(&mut snap);
        assert!(matches!(
            s.evaluate(&snap, &hold_ctx(&p)).action,
            Action::Close { .. }
        ));
        rising(&mut snap);
        trend(&mut snap);
        assert!(matches!(
            s.evaluate(&snap, &hold_ctx(&p)).action,
            Action::Reverse {
                side: Side::Long,
                ..
            }
        ));
    }

    #[test]
    fn trailing_stop_activates_at_five_percent_trails_two_and_only_tightens() {
        let s = ZlhmaEmaCross::new(Params {
            take_profit_levels: vec![],
            take_profit_fractions: vec![],
            ..Params::default()
        });
        let mut p = view(Side::Long, dec!(100));
        // Best +4.9 %: not active.
        p.best_price = Some(Price::new(dec!(104.9)));
        let d = s.evaluate(&at(Side::Long, dec!(103)), &hold_ctx(&p));
        assert_eq!(d.action, Action::Hold);
        assert!(!held(&d, "trailing_stop_move"));
        // Best +5 %: stop to 105 × 0.98 = 102.9.
        p.best_price = Some(Price::new(dec!(105)));
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(104)), &hold_ctx(&p)).action,
            Action::MoveStop {
                price: Price::new(dec!(102.9)),
                reason: "trailing stop: best 105 − 2%".into()
            }
        );
        // The stop is there: nothing to do until a new best.
        p.stop_loss = Some(Price::new(dec!(102.9)));
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(104)), &hold_ctx(&p)).action,
            Action::Hold
        );
        p.best_price = Some(Price::new(dec!(110)));
        assert!(matches!(
            s.evaluate(&at(Side::Long, dec!(109)), &hold_ctx(&p)).action,
            Action::MoveStop { price, .. } if price == Price::new(dec!(107.8))
        ));
        // A stop already tighter than the trail is not loosened.
        p.stop_loss = Some(Price::new(dec!(108)));
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(109)), &hold_ctx(&p)).action,
            Action::Hold
        );
        // A close through the trail exits.
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(107.8)), &hold_ctx(&p))
                .action,
            Action::Close {
                reason: "trailing stop".into()
            }
        );
        // Short: best 90 → 91.8.
        let mut p = view(Side::Short, dec!(100));
        p.best_price = Some(Price::new(dec!(90)));
        assert!(matches!(
            s.evaluate(&at(Side::Short, dec!(91)), &hold_ctx(&p)).action,
            Action::MoveStop { price, .. } if price == Price::new(dec!(91.8))
        ));
        p.stop_loss = Some(Price::new(dec!(91)));
        assert_eq!(
            s.evaluate(&at(Side::Short, dec!(90.5)), &hold_ctx(&p))
                .action,
            Action::Hold
        );
        assert!(matches!(
            s.evaluate(&at(Side::Short, dec!(91.8)), &hold_ctx(&p))
                .action,
            Action::Close { .. }
        ));
    }

    #[test]
    fn partial_take_profit_steps_fire_once_in_order() {
        let s = strat();
        let mut p = view(Side::Long, dec!(100));
        p.stop_loss = Some(Price::new(dec!(1000))); // keep the trail move out of the way
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(104.99)), &hold_ctx(&p))
                .action,
            Action::Hold
        );
        let expect = [dec!(0.25), dec!(0.35) / dec!(0.75), Decimal::ONE];
        for (i, want) in expect.iter().enumerate() {
            // Far above every level, but the trail (best 120 → 117.6) is not hit at 120.
            let d = s.evaluate(&at(Side::Long, dec!(120)), &hold_ctx(&p));
            assert_eq!(
                d.action,
                Action::PartialClose {
                    fraction: *want,
                    stage: i as u8 + 1,
                    reason: format!(
                        "take-profit step {} at +{}% (pnl +20%)",
                        i + 1,
                        [5, 10, 15][i]
                    )
                }
            );
            p.partial_exits_done = i as u8 + 1;
        }
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(120)), &hold_ctx(&p)).action,
            Action::Hold
        );
        // Step 2 waits for +10 %.
        p.partial_exits_done = 1;
        p.best_price = Some(Price::new(dec!(109.9)));
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(109.9)), &hold_ctx(&p))
                .action,
            Action::Hold
        );
        assert!(matches!(
            s.evaluate(&at(Side::Long, dec!(110)), &hold_ctx(&p)).action,
            Action::PartialClose { stage: 2, .. }
        ));
        // Short: +5 % at 95.
        let mut p = view(Side::Short, dec!(100));
        p.stop_loss = Some(Price::new(dec!(1)));
        assert!(matches!(
            s.evaluate(&at(Side::Short, dec!(95)), &hold_ctx(&p)).action,
            Action::PartialClose { stage: 1, .. }
        ));
    }

    #[test]
    fn priority_reverse_then_exit_then_partial_then_stop_move() {
        let s = strat();
        let mut p = view(Side::Long, dec!(100));
        p.best_price = Some(Price::new(dec!(112)));
        // +11 %: partial due (step 1) and a stop move (109.76) due → partial.
        let d = s.evaluate(&at(Side::Long, dec!(111)), &hold_ctx(&p));
        assert!(
            matches!(d.action, Action::PartialClose { stage: 1, .. }),
            "{d:?}"
        );
        assert!(held(&d, "trailing_stop_move"));
        p.partial_exits_done = 3;
        assert!(matches!(
            s.evaluate(&at(Side::Long, dec!(111)), &hold_ctx(&p)).action,
            Action::MoveStop { .. }
        ));
        // Through the trail beats the partial.
        p.partial_exits_done = 0;
        assert_eq!(
            s.evaluate(&at(Side::Long, dec!(109)), &hold_ctx(&p)).action,
            Action::Close {
                reason: "trailing stop".into()
            }
        );
        // A confirmed opposite cross beats everything.
        let mut snap = at(Side::Long, dec!(109));
        death(&mut snap);
        falling(&mut snap);
        trend(&mut snap);
        assert!(matches!(
            s.evaluate(&snap, &hold_ctx(&p)).action,
            Action::Reverse {
                side: Side::Short,
                ..
            }
        ));
    }

    fn table(src: &str) -> toml::Table {
        src.parse().unwrap()
    }

    #[test]
    fn params_defaults_parse_and_validation_names_the_key() {
        let p: Params = parse_params(&toml::Table::new(), "p").unwrap();
        assert_eq!(p, Params::default());
        let p: Params = parse_params(
            &table("trailing_distance_pct = 0.02\nzlhma_period = 14"),
            "p",
        )
        .unwrap();
        assert_eq!(p.trailing_distance_pct, dec!(0.02));
        assert_eq!(p.zlhma_period, 14);
        assert!(build(&toml::Table::new(), "p").is_ok());
        let cases = [
            ("zlhma = 3", "s.params.zlhma"),
            ("ema_fast = 200", "s.params.ema_fast"),
            ("ema_fast = 0", "s.params.ema_fast"),
            ("zlhma_period = 1", "s.params.zlhma_period"),
            ("adx_period = 0", "s.params.adx_period"),
            ("adx_threshold = -1.0", "s.params.adx_threshold"),
            ("stop_loss_pct = 1.2", "s.params.stop_loss_pct"),
            (
                "trailing_distance_pct = -0.02",
                "s.params.trailing_distance_pct",
            ),
            (
                "trailing_activation_pct = -0.05",
                "s.params.trailing_activation_pct",
            ),
            (
                "take_profit_levels = [0.05, 0.05, 0.15]",
                "s.params.take_profit_levels[1]",
            ),
            (
                "take_profit_fractions = [0.6, 0.35, 0.40]",
                "s.params.take_profit_fractions",
            ),
            (
                "take_profit_fractions = [0.25]",
                "s.params.take_profit_fractions",
            ),
            (
                "exit_on_opposite_cross = 1",
                "s.params.exit_on_opposite_cross",
            ),
        ];
        for (src, path) in cases {
            let e = match build(&table(src), "s.params") {
                Ok(_) => panic!("accepted: {src}"),
                Err(e) => e.to_string(),
            };
            assert!(e.starts_with(&format!("{path}:")), "{src}: {e}");
        }
    }

    // ---- driven by candles ----

    fn c(i: i64, mid: f64, half: f64) -> Candle {
        let d = |x: f64| Price::new(Decimal::try_from(x).unwrap().round_dp(4));
        Candle {
            open_time: i * HOUR_MS,
            open: d(mid),
            high: d(mid + half),
            low: d(mid - half),
            close: d(mid),
            volume: Decimal::ONE,
        }
    }

    #[test]
    fn warms_up_then_reads_the_indicators_it_was_fed() {
        let candles: Vec<Candle> = (0..260)
            .map(|i| c(i, 100.0 + (i as f64 * 0.05).sin() * 10.0, 0.8))
            .collect();
        let mut s = strat();
        assert_eq!(s.warmup(), 201);
        let (mut f, mut sl, mut z, mut a) =
            (Ema::new(50), Ema::new(200), ZlHma::new(21), Adx::new(14));
        let (mut prev_diff, mut prev_z) = (None, None);
        for (i, k) in candles.iter().enumerate() {
            s.update(k);
            let x = k.close.to_f64();
            let (fv, sv, zv, av) = (
                f.update(x),
                sl.update(x),
                z.update(x),
                a.update(Bar::from(k)),
            );
            let d = s.decide(&Context::flat(k.open_time + HOUR_MS));
            if i + 1 < s.warmup() {
                assert_eq!(d.conditions[0].name, "warmed_up", "{i}");
            } else {
                let snap = s.snapshot().expect("ready after warm-up");
                assert_eq!(snap.ema_fast, fv.unwrap());
                assert_eq!(snap.ema_slow, sv.unwrap());
                assert_eq!(snap.prev_diff, prev_diff.unwrap());
                assert_eq!(snap.zlhma, zv.unwrap());
                assert_eq!(snap.prev_zlhma, prev_z.unwrap());
                assert_eq!(snap.adx, av.unwrap().adx);
                assert_eq!(d.conditions.len(), 5);
            }
            prev_diff = fv.zip(sv).map(|(a, b)| a - b);
            prev_z = zv;
        }
    }

    #[test]
    fn a_trending_rally_after_a_decline_opens_a_long_on_the_cross() {
        // 300 candles down, then a strong rally with widening ranges (ADX high).
        let candles: Vec<Candle> = (0..420)
            .map(|i| {
                let x = i as f64;
                if i < 300 {
                    c(i, 300.0 - 0.3 * x, 0.5)
                } else {
                    c(i, 210.0 + 1.5 * (x - 300.0), 0.5)
                }
            })
            .collect();
        let mut s = strat();
        let mut opens = Vec::new();
        for (i, k) in candles.iter().enumerate() {
            s.update(k);
            let d = s.decide(&Context::flat(k.open_time + HOUR_MS));
            if let Action::Open { side, .. } = d.action {
                assert!(held(&d, "adx_trend"), "{}", d.conditions_line());
                opens.push((i, side, d));
            }
        }
        assert_eq!(
            opens.len(),
            1,
            "{:?}",
            opens.iter().map(|o| o.0).collect::<Vec<_>>()
        );
        let (i, side, d) = &opens[0];
        assert_eq!(*side, Side::Long);
        assert!(*i > 300);
        assert!(held(d, "ema_golden_cross") && held(d, "zlhma_rising"));
    }

    /// Over real candles with a naive position book: every entry is a confirmed cross, steps go
    /// 1, 2, 3, the stop only tightens, and positions end.
    #[test]
    fn real_data_consistency() {
        use crate::data::{load_csv, resample};
        use crate::domain::Timeframe;
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-perp-15m.csv");
        let series = load_csv(&path).unwrap();
        let candles = resample(&series.candles, series.timeframe, Timeframe::H1, true);
        let mut s = strat();
        let mut pos: Option<PositionView> = None;
        let mut pending: Option<Action> = None;
        let (mut entries, mut exits, mut partials, mut moves) = (0, 0, 0, 0);
        let open = |side: Side, stop: Option<StopSpec>, k: &Candle| PositionView {
            side,
            qty: Qty::new(Decimal::ONE),
            entry_price: k.open,
            opened_at: k.open_time,
            best_price: None,
            stop_loss: stop.map(|st| st.stop_price(side, k.open)),
            partial_exits_done: 0,
            pyramids_done: 0,
        };
        for k in &candles {
            if let Some(a) = pending.take() {
                match a {
                    Action::Open { side, stop, .. } | Action::Reverse { side, stop, .. } => {
                        pos = Some(open(side, stop, k))
                    }
                    Action::Close { .. } => pos = None,
                    Action::PartialClose {
                        fraction, stage, ..
                    } => {
                        let p = pos.as_mut().unwrap();
                        assert_eq!(stage, p.partial_exits_done + 1);
                        p.qty = p.qty * (Decimal::ONE - fraction);
                        p.partial_exits_done = stage;
                        if p.qty.get().is_zero() {
                            pos = None;
                        }
                    }
                    Action::MoveStop { price, .. } => {
                        let p = pos.as_mut().unwrap();
                        let old = p.stop_loss.unwrap();
                        match p.side {
                            Side::Long => assert!(price > old),
                            Side::Short => assert!(price < old),
                        }
                        p.stop_loss = Some(price);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if let Some(p) = &pos {
                if p.stop_loss.is_some_and(|st| match p.side {
                    Side::Long => k.low <= st,
                    Side::Short => k.high >= st,
                }) {
                    pos = None;
                    exits += 1;
                }
            }
            if let Some(p) = pos.as_mut() {
                p.best_price = Some(match (p.side, p.best_price) {
                    (Side::Long, b) => b.map_or(k.high, |b| b.max(k.high)),
                    (Side::Short, b) => b.map_or(k.low, |b| b.min(k.low)),
                });
            }
            s.update(k);
            let ctx = match &pos {
                Some(p) => Context::holding(p, k.open_time + HOUR_MS),
                None => Context::flat(k.open_time + HOUR_MS),
            };
            let d = s.decide(&ctx);
            match &d.action {
                Action::Open { side, .. } | Action::Reverse { side, .. } => {
                    entries += 1;
                    let (cross, dir) = match side {
                        Side::Long => ("ema_golden_cross", "zlhma_rising"),
                        Side::Short => ("ema_death_cross", "zlhma_falling"),
                    };
                    assert!(
                        held(&d, cross) && held(&d, dir) && held(&d, "adx_trend"),
                        "{}",
                        d.conditions_line()
                    );
                }
                Action::Close { .. } => exits += 1,
                Action::PartialClose { .. } => partials += 1,
                Action::MoveStop { .. } => moves += 1,
                Action::Hold => {}
                other => panic!("unexpected {other:?}"),
            }
            pending = Some(d.action).filter(|a| *a != Action::Hold);
        }
        assert!(entries > 0, "no entries over {} candles", candles.len());
        eprintln!(
            "ZLHMA_EMA_CROSS on {} 1h candles: {entries} entries, {exits} exits, \
             {partials} partials, {moves} stop moves",
            candles.len()
        );
    }

    #[test]
    fn exchange_exits_are_the_ladder_and_a_five_percent_trail_of_two() {
        use crate::strategy::Trailing;
        let plan = strat().exchange_exits();
        let got: Vec<_> = plan
            .take_profits
            .iter()
            .map(|t| (t.profit_pct, t.fraction, t.stage))
            .collect();
        assert_eq!(
            got,
            vec![
                (dec!(0.05), dec!(0.25), 1),
                (dec!(0.10), dec!(0.35) / dec!(0.75), 2),
                (dec!(0.15), Decimal::ONE, 3)
            ]
        );
        assert_eq!(
            plan.trailing,
            Some(Trailing {
                activation_pct: dec!(0.05),
                callback_pct: dec!(0.02)
            })
        );
        // A 0.05 % trail is below Binance's 0.1 % minimum: evaluator-managed only.
        let s = ZlhmaEmaCross::new(Params {
            trailing_distance_pct: dec!(0.0005),
            ..Params::default()
        });
        assert_eq!(s.exchange_exits().trailing, None);
    }
}
