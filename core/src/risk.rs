//! Risk and sizing rules as pure functions over persisted state: drawdown (MDD) levels and their
//! recovery, the daily-loss halt, Kelly sizing from a strategy's closed trades, loss-streak cuts,
//! optional regime and volatility multipliers, and the hard limits every entry must respect
//! (positions per account, margin per position and in total, risk per trade at the stop, spacing
//! between entries). Nothing here touches the network, a store or a clock: the engine reads the
//! state, calls these functions with `now`, and records and notifies the reasons they return.
//!
//! Sizing chain of an entry (margin as a fraction of equity, notional = margin × leverage):
//! base `size_pct` (or half-Kelly clamped to the strategy's range once enough trades exist)
//! × MDD multiplier × loss-streak factor × regime × volatility, then capped by
//! `max_position_pct`, by the room left under `max_total_margin_pct`, and by
//! `risk_per_trade_pct` of equity lost at the stop. Money stays `Decimal`; f64 appears only in the
//! volatility and regime statistics.

use crate::config::{
    HaltReset, KellyConfig, LossStreakCut, MddConfig, RegimeConfig, RiskConfig, VolatilityConfig,
};
use crate::domain::{AccountState, Notional};
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::Decimal;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;
/// How many counted trade keys an account state remembers (replays are recent by nature, and
/// the trade record's own create-if-absent already stops a replay before it gets here).
const COUNTED_TRADES_KEPT: usize = 64;

/// Something the risk layer noticed that the trader must hear about.
#[derive(Clone, Debug, PartialEq)]
pub enum RiskEvent {
    MddLevelChanged {
        from: u8,
        to: u8,
        drawdown: Decimal,
        multiplier: Decimal,
    },
    DailyLossHalt {
        loss_pct: Decimal,
        limit_pct: Decimal,
        until: i64,
    },
    HaltLifted,
}

impl RiskEvent {
    /// One line for notifications and job reports.
    pub fn describe(&self) -> String {
        match self {
            RiskEvent::MddLevelChanged {
                from,
                to,
                drawdown,
                multiplier,
            } => format!(
                "MDD level {from} → {to}: drawdown {}% from the equity peak; entry size ×{}",
                (drawdown * Decimal::ONE_HUNDRED).round_dp(2),
                multiplier.normalize()
            ),
            RiskEvent::DailyLossHalt {
                loss_pct,
                limit_pct,
                until,
            } => format!(
                "DAILY LOSS LIMIT hit: {}% of the day's starting equity lost (limit {}%); no new entries until {}",
                (loss_pct * Decimal::ONE_HUNDRED).round_dp(2),
                (limit_pct * Decimal::ONE_HUNDRED).normalize(),
                iso(*until)
            ),
            RiskEvent::HaltLifted => "daily loss halt lifted: new entries allowed again".into(),
        }
    }
}

use crate::domain::utc_minute as iso;

/// The trading day (days since epoch, shifted by the configured start hour) containing `now`.
pub fn trading_day(now: i64, start_hour_utc: u32) -> i64 {
    (now - i64::from(start_hour_utc) * HOUR_MS).div_euclid(DAY_MS)
}

/// Start (ms) of the trading day after the one containing `now`.
pub fn next_day_start(now: i64, start_hour_utc: u32) -> i64 {
    (trading_day(now, start_hour_utc) + 1) * DAY_MS + i64::from(start_hour_utc) * HOUR_MS
}

/// Drawdown of `equity` from `peak` as a fraction (0 when at or above the peak).
pub fn drawdown(peak: Decimal, equity: Decimal) -> Decimal {
    // At or above the peak the quotient is ≤ 0: no division needed (run on every equity fold).
    if peak <= Decimal::ZERO || equity >= peak {
        return Decimal::ZERO;
    }
    ((peak - equity) / peak).max(Decimal::ZERO)
}

/// MDD level of a drawdown: the number of thresholds reached (lower bounds inclusive, so 30 %
/// exactly is level 1 and anything above the last threshold is the emergency level).
pub fn mdd_level(cfg: &MddConfig, dd: Decimal) -> u8 {
    cfg.thresholds.iter().filter(|t| dd >= **t).count() as u8
}

/// Size multiplier of a level, raised by `recovery_step` for every `recovery_wins` consecutive
/// wins, never above 1.
pub fn mdd_multiplier(cfg: &MddConfig, level: u8, consecutive_wins: u32) -> Decimal {
    let base = cfg
        .multipliers
        .get(level as usize)
        .or(cfg.multipliers.last())
        .copied()
        .unwrap_or(Decimal::ONE);
    let steps = consecutive_wins / cfg.recovery_wins.max(1);
    (base + cfg.recovery_step * Decimal::from(steps)).min(Decimal::ONE)
}

/// The level for drawdown `dd` coming from level `prev`: deeper levels are entered at once, a
/// level is left downwards only past the hysteresis margin (so equity hovering at a threshold
/// neither flips the level nor the entry size on every run).
pub fn mdd_level_from(cfg: &MddConfig, dd: Decimal, prev: u8) -> u8 {
    let level = mdd_level(cfg, dd);
    if level < prev {
        mdd_level(cfg, dd + cfg.hysteresis).min(prev)
    } else {
        level
    }
}

/// The deepest (emergency) level of a configuration.
pub fn emergency_level(cfg: &MddConfig) -> u8 {
    cfg.thresholds.len() as u8
}

/// Fold a fresh equity reading into the account state: peak (never decreases), trading day and
/// its starting equity, MDD level, daily-loss halt. Returns the new state and what changed.
pub fn observe_equity(
    prev: &AccountState,
    equity: Notional,
    now: i64,
    cfg: &RiskConfig,
    daily_loss_pct: Decimal,
) -> (AccountState, Vec<RiskEvent>) {
    let mut st = prev.clone();
    let events = observe_equity_in(&mut st, equity, now, cfg, daily_loss_pct);
    (st, events)
}

/// [`observe_equity`] in place (a backtest folds every candle's equity into its state). Only the
/// fields [`Observed`] holds are written.
pub fn observe_equity_in(
    st: &mut AccountState,
    equity: Notional,
    now: i64,
    cfg: &RiskConfig,
    daily_loss_pct: Decimal,
) -> Vec<RiskEvent> {
    let mut events = Vec::new();
    let fresh = st.peak_equity.get() <= Decimal::ZERO && st.day_start_equity.get() <= Decimal::ZERO;
    let prev_level = st.mdd_level;
    st.equity = equity;
    if equity.get() > st.peak_equity.get() {
        st.peak_equity = equity;
    }
    let day = trading_day(now, cfg.day_start_hour_utc);
    if fresh || st.day != day {
        st.day = day;
        st.day_start_equity = equity;
        st.daily_realized_pnl = Notional::ZERO;
    }
    if let Some(until) = st.daily_halt_until {
        if until <= now {
            st.daily_halt_until = None;
            events.push(RiskEvent::HaltLifted);
        }
    }
    let level = mdd_level_at(&cfg.mdd, st.peak_equity.get(), equity.get(), prev_level);
    if level != prev_level {
        events.push(RiskEvent::MddLevelChanged {
            from: prev_level,
            to: level,
            drawdown: drawdown(st.peak_equity.get(), equity.get()),
            multiplier: mdd_multiplier(&cfg.mdd, level, st.consecutive_wins),
        });
    }
    st.mdd_level = level;
    if st.daily_halt_until.is_none() && daily_loss_over(st, daily_loss_pct) {
        let loss = daily_loss(st);
        let until = match cfg.halt_reset {
            HaltReset::Day => next_day_start(now, cfg.day_start_hour_utc),
            HaltReset::Rolling24h => now + DAY_MS,
        };
        st.daily_halt_until = Some(until);
        events.push(RiskEvent::DailyLossHalt {
            loss_pct: loss,
            limit_pct: daily_loss_pct,
            until,
        });
    }
    events
}

/// The fields [`observe_equity_in`] writes: taken before a fold, they tell whether it changed
/// the state (equal as the whole state compares, numerically) and undo one that did not, to the
/// exact representation.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct Observed {
    equity: Notional,
    peak_equity: Notional,
    day: i64,
    day_start_equity: Notional,
    daily_realized_pnl: Notional,
    daily_halt_until: Option<i64>,
    mdd_level: u8,
}

impl Observed {
    pub fn of(st: &AccountState) -> Observed {
        Observed {
            equity: st.equity,
            peak_equity: st.peak_equity,
            day: st.day,
            day_start_equity: st.day_start_equity,
            daily_realized_pnl: st.daily_realized_pnl,
            daily_halt_until: st.daily_halt_until,
            mdd_level: st.mdd_level,
        }
    }

    pub fn restore(self, st: &mut AccountState) {
        st.equity = self.equity;
        st.peak_equity = self.peak_equity;
        st.day = self.day;
        st.day_start_equity = self.day_start_equity;
        st.daily_realized_pnl = self.daily_realized_pnl;
        st.daily_halt_until = self.daily_halt_until;
        st.mdd_level = self.mdd_level;
    }
}

/// Loss of equity since the day's start, as a fraction of the day's starting equity (≥ 0).
pub fn daily_loss(st: &AccountState) -> Decimal {
    if st.day_start_equity.get() <= Decimal::ZERO || st.equity.get() >= st.day_start_equity.get() {
        return Decimal::ZERO;
    }
    ((st.day_start_equity.get() - st.equity.get()) / st.day_start_equity.get()).max(Decimal::ZERO)
}

/// Whether [`daily_loss`] exceeds `limit`, decided without dividing whenever the quotient is
/// clearly on one side (the fold runs on every equity reading; see [`side_of`]).
fn daily_loss_over(st: &AccountState, limit: Decimal) -> bool {
    let (start, equity) = (st.day_start_equity.get(), st.equity.get());
    if start <= Decimal::ZERO || equity >= start {
        return Decimal::ZERO > limit;
    }
    side_of(quotient(start, equity), limit).unwrap_or_else(|| daily_loss(st) > limit)
}

/// `(a − b) / a` (for `a > b`, `a > 0`) in f64, for [`side_of`]. The conversions need not be the
/// nearest f64 (equity after fees has many decimals, where the exact conversion is slow): each is
/// within 1e-15 relative, so the quotient is within a few 1e-15 of the exact one.
fn quotient(a: Decimal, b: Decimal) -> f64 {
    let af = crate::domain::decimal_to_f64_approx(a);
    (af - crate::domain::decimal_to_f64_approx(b)) / af
}

/// Whether the exact quotient `q` stands for is ≥ `t` (`Some(true)`), < `t` (`Some(false)`), or
/// too close to `t` to tell in f64 (`None`: divide in Decimal). Sound: the f64 quotient is within
/// a few 1e-15 of the exact one ([`quotient`]), `t` in f64 within 1e-15 of `t`, and
/// `rust_decimal`'s rounded quotient within 1e-27, so a value further than [`QUOTIENT_MARGIN`]
/// from `t` is on the same side of `t` in all three (and an exact equality always falls back).
fn side_of(q: f64, t: Decimal) -> Option<bool> {
    let tf = crate::domain::decimal_to_f64_approx(t);
    ((q - tf).abs() > QUOTIENT_MARGIN).then_some(q >= tf)
}

/// See [`side_of`]: many orders of magnitude above both rounding errors, far below any
/// threshold or limit a trader configures (fractions with a few decimals).
const QUOTIENT_MARGIN: f64 = 1e-9;

/// [`mdd_level_from`] of `drawdown(peak, equity)`, without the division whenever every threshold
/// (and every threshold less the hysteresis) is clearly on one side of the drawdown: the same
/// level, from the same comparisons (`dd + h ≥ t` is `dd ≥ t − h` exactly: both sums are exact
/// in Decimal for fractions).
pub fn mdd_level_at(cfg: &MddConfig, peak: Decimal, equity: Decimal, prev: u8) -> u8 {
    if peak <= Decimal::ZERO || equity >= peak {
        return mdd_level_from(cfg, Decimal::ZERO, prev);
    }
    let q = quotient(peak, equity);
    // The level counts thresholds reached; `None` as soon as one is too close to call.
    let count = |less: Option<Decimal>| -> Option<u8> {
        let mut n = 0u8;
        for t in &cfg.thresholds {
            let t = less.map_or(*t, |h| *t - h);
            n += u8::from(side_of(q, t)?);
        }
        Some(n)
    };
    let level = match count(None) {
        Some(l) if l >= prev => return l,
        Some(_) => count(Some(cfg.hysteresis)).map(|l| l.min(prev)),
        None => None,
    };
    level.unwrap_or_else(|| mdd_level_from(cfg, drawdown(peak, equity), prev))
}

/// Count one closed trade (consecutive results, the day's realised PnL) exactly once: `None` when
/// this trade id was counted already.
pub fn apply_trade(
    prev: &AccountState,
    trade_id: &str,
    pnl: Notional,
    exit_time: i64,
    start_hour_utc: u32,
) -> Option<AccountState> {
    let key = crate::domain::trade_key(trade_id);
    if prev.counted_trade_keys.contains(&key) {
        return None;
    }
    let mut st = prev.clone();
    if pnl.get() > Decimal::ZERO {
        st.consecutive_wins += 1;
        st.consecutive_losses = 0;
    } else if pnl.get() < Decimal::ZERO {
        st.consecutive_losses += 1;
        st.consecutive_wins = 0;
    }
    if trading_day(exit_time, start_hour_utc) == st.day {
        st.daily_realized_pnl += pnl;
    }
    // Shared until a trade changes it: the state is cloned on every equity fold.
    let keys = std::sync::Arc::make_mut(&mut st.counted_trade_keys);
    keys.push(key);
    if keys.len() > COUNTED_TRADES_KEPT {
        let drop = keys.len() - COUNTED_TRADES_KEPT;
        keys.drain(..drop);
    }
    Some(st)
}

/// The newest closed trades of one strategy on one account, kept beside the trade records
/// (`STATS#{strategy}`) so an entry is sized from one small item, not the whole trade history.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StrategyStats {
    /// (exit time, trade id, PnL net of fees), in the trade records' order (exit time, then id),
    /// at most the number kept. Shared ids: the item is read and rewritten on every closed trade.
    pub recent: Vec<(i64, std::sync::Arc<str>, Decimal)>,
    /// The newest trading day a trade closed on, and the strategy's realised PnL that day.
    pub day: i64,
    pub day_pnl: Decimal,
    /// How many trades the window keeps (`risk.kelly.lookback` when built); a different
    /// setting rebuilds it from the trade records.
    #[serde(default)]
    pub keep: usize,
}

impl StrategyStats {
    /// Rebuild from the strategy's trades (any order).
    pub fn from_trades<'a>(
        trades: impl IntoIterator<Item = (i64, &'a str, Decimal)>,
        day_start_hour_utc: u32,
        keep: usize,
    ) -> StrategyStats {
        let mut all: Vec<(i64, &str, Decimal)> = trades.into_iter().collect();
        all.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let mut st = StrategyStats {
            keep,
            ..StrategyStats::default()
        };
        for (t, id, pnl) in all {
            st.apply(t, id, pnl, day_start_hour_utc, keep);
        }
        st
    }

    /// Count one closed trade. `false` (nothing changed) when it is already counted: among the
    /// recent ones, or older than all of them with the window full (it either was counted and
    /// has aged out, or it closed before everything the window holds).
    pub fn apply(
        &mut self,
        exit_time: i64,
        id: &str,
        pnl: Decimal,
        day_start_hour_utc: u32,
        keep: usize,
    ) -> bool {
        if keep == 0 || self.recent.iter().any(|(_, i, _)| &**i == id) {
            return false;
        }
        let at = self
            .recent
            .partition_point(|(t, i, _)| (*t, &**i) < (exit_time, id));
        if at == 0 && self.recent.len() >= keep {
            return false;
        }
        self.recent.insert(at, (exit_time, id.into(), pnl));
        if self.recent.len() > keep {
            self.recent.remove(0);
        }
        let day = trading_day(exit_time, day_start_hour_utc);
        if day == self.day {
            self.day_pnl += pnl;
        } else if day > self.day {
            self.day = day;
            self.day_pnl = pnl;
        }
        true
    }

    /// PnL of the recent trades, oldest first.
    pub fn pnls(&self) -> Vec<Decimal> {
        self.recent.iter().map(|(_, _, p)| *p).collect()
    }

    /// Realised PnL of trades that closed on trading day `day`.
    pub fn pnl_on(&self, day: i64) -> Decimal {
        if day == self.day {
            self.day_pnl
        } else {
            Decimal::ZERO
        }
    }
}

/// Statistics of a strategy's closed trades (PnL net of fees, oldest first).
#[derive(Clone, Debug, PartialEq)]
pub struct TradeStats {
    pub trades: usize,
    pub wins: usize,
    pub losses: usize,
    pub avg_win: Decimal,
    pub avg_loss: Decimal,
    pub consecutive_losses: u32,
    pub consecutive_wins: u32,
}

impl TradeStats {
    /// Statistics of the newest `lookback` results; streaks are counted from the newest backwards.
    pub fn from_pnls(pnls: &[Decimal], lookback: usize) -> TradeStats {
        let recent = &pnls[pnls.len().saturating_sub(lookback)..];
        let wins: Vec<Decimal> = recent
            .iter()
            .copied()
            .filter(|p| p.is_sign_positive() && !p.is_zero())
            .collect();
        let losses: Vec<Decimal> = recent
            .iter()
            .copied()
            .filter(|p| p.is_sign_negative() && !p.is_zero())
            .collect();
        let avg = |v: &[Decimal]| {
            if v.is_empty() {
                Decimal::ZERO
            } else {
                v.iter().map(|x| x.abs()).sum::<Decimal>() / Decimal::from(v.len())
            }
        };
        let streak = |win: bool| {
            pnls.iter()
                .rev()
                .filter(|p| !p.is_zero())
                .take_while(|p| p.is_sign_positive() == win)
                .count() as u32
        };
        TradeStats {
            trades: recent.len(),
            wins: wins.len(),
            losses: losses.len(),
            avg_win: avg(&wins),
            avg_loss: avg(&losses),
            consecutive_losses: streak(false),
            consecutive_wins: streak(true),
        }
    }
}

/// Kelly size (margin fraction of equity) from a strategy's closed trades: `f = (p·b − q)/b` with
/// `p` the win rate, `q = 1 − p`, `b` the payoff ratio (average win / average loss), times
/// `cfg.fraction` (half-Kelly), clamped to `[lo, hi]`. Below `cfg.min_trades` the strategy's base
/// size is used. Returns the size and why.
pub fn kelly_size(
    pnls: &[Decimal],
    cfg: &KellyConfig,
    range: (Decimal, Decimal),
    base: Decimal,
) -> (Decimal, String) {
    let (lo, hi) = range;
    let s = TradeStats::from_pnls(pnls, cfg.lookback);
    if s.trades < cfg.min_trades {
        let size = base.clamp(lo, hi);
        return (
            size,
            format!(
                "Kelly: {} closed trades < {} → base size {}",
                s.trades,
                cfg.min_trades,
                size.normalize()
            ),
        );
    }
    let n = Decimal::from(s.trades);
    let p = Decimal::from(s.wins) / n;
    let q = Decimal::ONE - p;
    let f = if s.losses == 0 {
        // Never lost: the formula's limit for b → ∞ is p.
        p
    } else if s.wins == 0 || s.avg_win.is_zero() {
        -q
    } else {
        let b = s.avg_win / s.avg_loss;
        (p * b - q) / b
    };
    let raw = f * cfg.fraction;
    let size = raw.clamp(lo, hi);
    (
        size,
        format!(
            "Kelly: {} trades, win rate {}%, payoff {}, f {} × {} = {} → size {}",
            s.trades,
            (p * Decimal::ONE_HUNDRED).round_dp(1),
            if s.avg_loss.is_zero() {
                "∞".to_string()
            } else {
                (s.avg_win / s.avg_loss).round_dp(2).to_string()
            },
            f.round_dp(4),
            cfg.fraction.normalize(),
            raw.round_dp(4),
            size.normalize()
        ),
    )
}

/// Size factor after a streak of consecutive losses: the deepest cut reached (1 when none).
pub fn loss_streak_factor(cuts: &[LossStreakCut], consecutive_losses: u32) -> Decimal {
    cuts.iter()
        .filter(|c| consecutive_losses >= c.losses)
        .map(|c| c.factor)
        .min()
        .unwrap_or(Decimal::ONE)
}

/// Volatility targeting: target annualised volatility / realised (log returns of `closes`, one per
/// `period_ms`), clamped to the configured range. `None` when there are too few closes.
pub fn volatility_multiplier(
    closes: &[Decimal],
    period_ms: i64,
    cfg: &VolatilityConfig,
) -> Option<(Decimal, f64)> {
    let xs: Vec<f64> = closes.iter().filter_map(|c| c.to_f64()).collect();
    if xs.len() < 3 || period_ms <= 0 {
        return None;
    }
    let rets: Vec<f64> = xs
        .windows(2)
        .filter(|w| w[0] > 0.0 && w[1] > 0.0)
        .map(|w| (w[1] / w[0]).ln())
        .collect();
    if rets.len() < 2 {
        return None;
    }
    let mean = rets.iter().sum::<f64>() / rets.len() as f64;
    let var = rets.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (rets.len() - 1) as f64;
    let per_year = (365.0 * 86_400_000.0) / period_ms as f64;
    let annual = (var * per_year).sqrt();
    let target = cfg.target_annual.to_f64()?;
    let raw = if annual > 0.0 {
        target / annual
    } else {
        f64::MAX
    };
    let m = Decimal::from_f64(raw.min(1e6))?
        .round_dp(4)
        .clamp(cfg.min_multiplier, cfg.max_multiplier);
    Some((m, annual))
}

/// Market regime from the efficiency ratio of `closes` (net move / path length): a choppy market
/// gets `min_multiplier`, a clean trend (ratio ≥ `trend_er`) `max_multiplier`, linear between.
pub fn regime_multiplier(closes: &[Decimal], cfg: &RegimeConfig) -> Option<(Decimal, Decimal)> {
    if closes.len() < 2 {
        return None;
    }
    let net = (closes[closes.len() - 1] - closes[0]).abs();
    let path: Decimal = closes.windows(2).map(|w| (w[1] - w[0]).abs()).sum();
    let er = if path.is_zero() {
        Decimal::ZERO
    } else {
        net / path
    };
    let t = (er / cfg.trend_er).min(Decimal::ONE);
    let m = cfg.min_multiplier + (cfg.max_multiplier - cfg.min_multiplier) * t;
    Some((m.round_dp(4), er.round_dp(4)))
}

/// The limits that apply to one entry of one strategy on one account.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_positions: u32,
    pub max_position_pct: Decimal,
    pub max_total_margin_pct: Decimal,
    pub risk_per_trade_pct: Decimal,
    pub min_entry_interval_ms: i64,
    /// The strategy's own daily loss limit (fraction of the day's starting equity).
    pub strategy_daily_loss_pct: Option<Decimal>,
    pub mdd: MddConfig,
    pub kelly: KellyConfig,
    pub loss_streak: Vec<LossStreakCut>,
    /// The strategy's share of the account's equity it sizes from (`[accounts.allocation]`,
    /// 1 when unallocated). The account-wide caps above stay on the whole equity.
    pub allocation: Decimal,
}

impl Limits {
    /// The limits of `strategy`'s entries on `account`: `[risk]` with the account's overrides,
    /// the strategy's own risk settings and its allocation on the account.
    pub fn for_account(
        cfg: &crate::config::Config,
        account: &crate::config::AccountConfig,
        strategy: &str,
    ) -> Limits {
        Limits {
            allocation: cfg.allocation(account, strategy),
            ..Limits::new(&cfg.account_risk(account), &cfg.strategy_risk(strategy))
        }
    }

    pub fn new(cfg: &RiskConfig, strategy: &crate::config::StrategyRisk) -> Limits {
        let interval = strategy
            .min_entry_interval_secs
            .unwrap_or(0)
            .max(cfg.min_entry_interval_secs);
        Limits {
            max_positions: cfg.max_positions_per_account,
            max_position_pct: cfg.max_position_pct,
            max_total_margin_pct: cfg.max_total_margin_pct,
            risk_per_trade_pct: cfg.risk_per_trade_pct,
            min_entry_interval_ms: interval as i64 * 1000,
            strategy_daily_loss_pct: strategy.daily_loss_pct,
            mdd: cfg.mdd.clone(),
            kelly: cfg.kelly.clone(),
            loss_streak: cfg.loss_streak.clone(),
            allocation: Decimal::ONE,
        }
    }
}

/// The equity a strategy sizes from: its `allocation` of the account's equity (the whole of it
/// when unallocated, untouched so unallocated sizes stay exactly as they were).
pub fn allocated_equity(equity: Decimal, allocation: Decimal) -> Decimal {
    if allocation == Decimal::ONE {
        equity
    } else {
        equity * allocation
    }
}

/// Everything one entry is sized from.
#[derive(Clone, Debug)]
pub struct EntryRequest {
    pub equity: Decimal,
    /// Initial margin already in use on the account.
    pub margin_in_use: Decimal,
    /// Open (or pending) positions of the account, MANUAL ones included.
    pub open_positions: u32,
    pub price: Decimal,
    /// The protective stop the entry will carry (on the tick grid).
    pub stop: Option<Decimal>,
    pub leverage: u32,
    /// The strategy's configured (or account-overridden) size.
    pub base_size_pct: Decimal,
    pub kelly_range: Option<(Decimal, Decimal)>,
    /// The strategy's closed-trade PnLs on this account, oldest first.
    pub strategy_pnls: Vec<Decimal>,
    /// The strategy's realised PnL of the current trading day.
    pub strategy_pnl_today: Decimal,
    pub last_entry: Option<i64>,
    pub regime: Option<Decimal>,
    pub volatility: Option<Decimal>,
    pub now: i64,
}

/// What the risk layer decided for an entry.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryVerdict {
    /// No entry, and why.
    Blocked(String),
    Sized(Sizing),
}

/// A sized entry: raw quantity (before the step grid, which only rounds down) and the reasons
/// each rule changed the size.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizing {
    pub qty: Decimal,
    /// Margin fraction before the multipliers (base or Kelly).
    pub size_pct: Decimal,
    /// Product of the MDD, loss-streak, regime and volatility multipliers.
    pub multiplier: Decimal,
    pub margin: Decimal,
    /// Reasons the size moved away from the base (empty when nothing applied).
    pub notes: Vec<String>,
    /// True when a rule made the entry smaller than the base size would have been.
    pub reduced: bool,
}

/// Decide whether an entry may be opened and how large. `state` is the account's stored state
/// after the latest equity was folded in (see [`observe_equity`]).
pub fn size_entry(state: &AccountState, req: &EntryRequest, lim: &Limits) -> EntryVerdict {
    let now = req.now;
    if let Some(until) = state.daily_halt_until.filter(|u| *u > now) {
        return EntryVerdict::Blocked(format!(
            "daily loss limit: no new entries until {}",
            iso(until)
        ));
    }
    if req.equity <= Decimal::ZERO || req.price <= Decimal::ZERO {
        return EntryVerdict::Blocked(format!(
            "no equity ({}) or price ({}) to size from",
            req.equity, req.price
        ));
    }
    let peak = state.peak_equity.get().max(req.equity);
    let dd = drawdown(peak, req.equity);
    let level = mdd_level_from(&lim.mdd, dd, state.mdd_level);
    if level >= emergency_level(&lim.mdd) && !lim.mdd.allow_entries_in_emergency {
        return EntryVerdict::Blocked(format!(
            "MDD emergency level {level}: drawdown {}% from the peak {}; no new entries (risk.mdd.allow_entries_in_emergency = false)",
            (dd * Decimal::ONE_HUNDRED).round_dp(2),
            peak.round_dp(2)
        ));
    }
    if req.open_positions >= lim.max_positions {
        return EntryVerdict::Blocked(format!(
            "{} positions open, risk.max_positions_per_account = {}",
            req.open_positions, lim.max_positions
        ));
    }
    if let Some(last) = req.last_entry {
        if lim.min_entry_interval_ms > 0 && now - last < lim.min_entry_interval_ms {
            return EntryVerdict::Blocked(format!(
                "last entry {} min ago, minimum interval {} min",
                (now - last) / 60_000,
                lim.min_entry_interval_ms / 60_000
            ));
        }
    }
    if let Some(pct) = lim.strategy_daily_loss_pct {
        let limit = state.day_start_equity.get().max(Decimal::ZERO) * pct;
        if limit > Decimal::ZERO && -req.strategy_pnl_today > limit {
            return EntryVerdict::Blocked(format!(
                "strategy daily loss {} exceeds {}% of the day's starting equity",
                (-req.strategy_pnl_today).round_dp(2),
                (pct * Decimal::ONE_HUNDRED).normalize()
            ));
        }
    }

    let mut notes = Vec::new();
    let size_pct = match req.kelly_range {
        Some(range) => {
            let (s, why) = kelly_size(&req.strategy_pnls, &lim.kelly, range, req.base_size_pct);
            notes.push(why);
            s
        }
        None => req.base_size_pct,
    };
    let mut mult = Decimal::ONE;
    let wins = state.consecutive_wins;
    let m = mdd_multiplier(&lim.mdd, level, wins);
    if m != Decimal::ONE {
        notes.push(format!(
            "MDD level {level} (drawdown {}%): ×{}",
            (dd * Decimal::ONE_HUNDRED).round_dp(2),
            m.normalize()
        ));
    }
    mult *= m;
    let stats = TradeStats::from_pnls(&req.strategy_pnls, lim.kelly.lookback);
    let f = loss_streak_factor(&lim.loss_streak, stats.consecutive_losses);
    if f != Decimal::ONE {
        notes.push(format!(
            "{} consecutive losses: ×{}",
            stats.consecutive_losses,
            f.normalize()
        ));
    }
    mult *= f;
    if let Some(r) = req.regime {
        notes.push(format!("market regime: ×{}", r.normalize()));
        mult *= r;
    }
    if let Some(v) = req.volatility {
        notes.push(format!("volatility target: ×{}", v.normalize()));
        mult *= v;
    }
    let sizing_equity = allocated_equity(req.equity, lim.allocation);
    if lim.allocation != Decimal::ONE {
        notes.push(format!(
            "allocation: sized from {}% of equity",
            (lim.allocation * Decimal::ONE_HUNDRED).normalize()
        ));
    }
    let base_margin = sizing_equity * req.base_size_pct;
    let mut margin = sizing_equity * size_pct * mult;
    let cap = req.equity * lim.max_position_pct;
    if margin > cap {
        notes.push(format!(
            "capped at risk.max_position_pct {} of equity",
            lim.max_position_pct.normalize()
        ));
        margin = cap;
    }
    let room = req.equity * lim.max_total_margin_pct - req.margin_in_use;
    if room <= Decimal::ZERO {
        return EntryVerdict::Blocked(format!(
            "margin in use {} already at risk.max_total_margin_pct {} of equity {}",
            req.margin_in_use.round_dp(2),
            lim.max_total_margin_pct.normalize(),
            req.equity.round_dp(2)
        ));
    }
    if margin > room {
        notes.push(format!(
            "capped to the {} margin left under risk.max_total_margin_pct",
            room.round_dp(2)
        ));
        margin = room;
    }
    let lev = Decimal::from(req.leverage.max(1));
    let mut qty = margin * lev / req.price;
    if let Some(stop) = req.stop {
        let dist = (req.price - stop).abs();
        if !dist.is_zero() {
            let max_qty = req.equity * lim.risk_per_trade_pct / dist;
            if qty > max_qty {
                notes.push(format!(
                    "capped at risk.risk_per_trade_pct {}% of equity lost at the stop {}",
                    (lim.risk_per_trade_pct * Decimal::ONE_HUNDRED).normalize(),
                    stop.normalize()
                ));
                qty = max_qty;
                margin = qty * req.price / lev;
            }
        }
    }
    if qty <= Decimal::ZERO {
        return EntryVerdict::Blocked("sized to nothing".into());
    }
    EntryVerdict::Sized(Sizing {
        qty,
        size_pct,
        multiplier: mult,
        margin,
        reduced: margin < base_margin,
        notes,
    })
}

/// Room for a pyramid add under the position and total-margin caps: the largest extra quantity
/// (raw) given the position's current margin. `Err` with the reason when there is none.
#[allow(clippy::too_many_arguments)]
pub fn pyramid_room(
    state: &AccountState,
    equity: Decimal,
    margin_in_use: Decimal,
    position_margin: Decimal,
    wanted_qty: Decimal,
    price: Decimal,
    leverage: u32,
    lim: &Limits,
    now: i64,
) -> Result<Decimal, String> {
    if let Some(until) = state.daily_halt_until.filter(|u| *u > now) {
        return Err(format!("daily loss limit: no adds until {}", iso(until)));
    }
    let level = mdd_level(
        &lim.mdd,
        drawdown(state.peak_equity.get().max(equity), equity),
    );
    if level >= emergency_level(&lim.mdd) && !lim.mdd.allow_entries_in_emergency {
        return Err(format!("MDD emergency level {level}: no adds"));
    }
    if price <= Decimal::ZERO || equity <= Decimal::ZERO {
        return Err("no equity or price to size from".into());
    }
    let lev = Decimal::from(leverage.max(1));
    let by_position = equity * lim.max_position_pct - position_margin;
    let by_total = equity * lim.max_total_margin_pct - margin_in_use;
    let room = by_position.min(by_total);
    if room <= Decimal::ZERO {
        return Err(format!(
            "no margin room (position cap {}, total cap {})",
            by_position.round_dp(2),
            by_total.round_dp(2)
        ));
    }
    Ok(wanted_qty.min(room * lev / price))
}

/// Advisory portfolio view across accounts: warnings only, nothing is ever closed from here.
pub fn portfolio_warnings(accounts: &[(String, AccountState)], cfg: &RiskConfig) -> Vec<String> {
    let mut out = Vec::new();
    let equity: Decimal = accounts.iter().map(|(_, s)| s.equity.get()).sum();
    let peak: Decimal = accounts.iter().map(|(_, s)| s.peak_equity.get()).sum();
    let dd = drawdown(peak, equity);
    if let Some(first) = cfg.mdd.thresholds.first() {
        if accounts.len() > 1 && dd >= *first {
            out.push(format!(
                "portfolio drawdown {}% across {} accounts (equity {} vs peaks {})",
                (dd * Decimal::ONE_HUNDRED).round_dp(2),
                accounts.len(),
                equity.round_dp(2),
                peak.round_dp(2)
            ));
        }
    }
    for (id, s) in accounts {
        if s.mdd_level > 0 {
            out.push(format!("{id}: MDD level {}", s.mdd_level));
        }
        if s.daily_halt_until.is_some() {
            out.push(format!("{id}: new entries halted by the daily loss limit"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StrategyRisk;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn cfg() -> RiskConfig {
        RiskConfig::default()
    }

    fn limits() -> Limits {
        Limits::new(&cfg(), &StrategyRisk::default())
    }

    /// Two accounts: `main` on `[risk]`, `sub1` with every account-level limit overridden and
    /// EMA_CROSS allocated 40 % of its equity.
    fn accounts_config() -> crate::config::Config {
        crate::config::Config::parse(
            r#"
[[strategies]]
name = "EMA_CROSS"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1

[[accounts]]
id = "main"
key_source = "env"
strategies = ["EMA_CROSS"]

[[accounts]]
id = "sub1"
key_source = "env:SUB1"
strategies = ["EMA_CROSS"]
[accounts.risk]
max_positions_per_account = 1
max_position_pct = 0.02
max_total_margin_pct = 0.3
risk_per_trade_pct = 0.001
[accounts.allocation]
EMA_CROSS = 0.4
"#,
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn each_account_limit_applies_to_its_own_account() {
        let c = accounts_config();
        let (main, sub) = (
            Limits::for_account(&c, &c.accounts[0], "EMA_CROSS"),
            Limits::for_account(&c, &c.accounts[1], "EMA_CROSS"),
        );
        let st = state(dec!(1000), dec!(1000));
        // max_positions_per_account: one open position blocks sub1, not main.
        let one_open = EntryRequest {
            open_positions: 1,
            ..request(dec!(1000))
        };
        assert!(matches!(
            size_entry(&st, &one_open, &main),
            EntryVerdict::Sized(_)
        ));
        match size_entry(&st, &one_open, &sub) {
            EntryVerdict::Blocked(w) => assert!(w.contains("= 1"), "{w}"),
            other => panic!("{other:?}"),
        }
        // max_position_pct: main sizes 10 % of equity as margin; sub1 is capped at 2 %.
        assert_eq!(
            sized(size_entry(&st, &request(dec!(1000)), &main)).margin,
            dec!(100)
        );
        let cap = Limits {
            allocation: Decimal::ONE,
            ..sub.clone()
        };
        assert_eq!(
            sized(size_entry(&st, &request(dec!(1000)), &cap)).margin,
            dec!(20)
        );
        // max_total_margin_pct: 290 in use leaves sub1 10 of its 30 %; main is not capped.
        let used = EntryRequest {
            margin_in_use: dec!(290),
            ..request(dec!(1000))
        };
        assert_eq!(sized(size_entry(&st, &used, &cap)).margin, dec!(10));
        assert_eq!(sized(size_entry(&st, &used, &main)).margin, dec!(100));
        // risk_per_trade_pct: 0.1 % of 1000 at a stop 10 away is 0.1 contracts for sub1.
        let stopped = EntryRequest {
            stop: Some(dec!(90)),
            ..request(dec!(1000))
        };
        assert_eq!(sized(size_entry(&st, &stopped, &cap)).qty, dec!(0.1));
        assert_eq!(sized(size_entry(&st, &stopped, &main)).qty, dec!(1.5));
    }

    #[test]
    fn an_allocation_sizes_from_its_share_of_equity() {
        let c = accounts_config();
        let sub = Limits {
            max_position_pct: dec!(0.5),
            ..Limits::for_account(&c, &c.accounts[1], "EMA_CROSS")
        };
        assert_eq!(sub.allocation, dec!(0.4));
        let st = state(dec!(1000), dec!(1000));
        let s = sized(size_entry(&st, &request(dec!(1000)), &sub));
        // 10 % of 40 % of 1000 as margin, 3x at 100: 1.2 contracts; not "reduced" by risk.
        assert_eq!((s.margin, s.qty, s.reduced), (dec!(40), dec!(1.2), false));
        assert!(
            s.notes.iter().any(|n| n.contains("40% of equity")),
            "{:?}",
            s.notes
        );
        // Unallocated: the whole equity, to the digit, and no note.
        let whole = sized(size_entry(&st, &request(dec!(1000)), &limits()));
        assert_eq!((whole.margin, whole.qty), (dec!(100), dec!(3)));
        assert!(whole.notes.is_empty());
        assert_eq!(
            allocated_equity(dec!(1234.50), Decimal::ONE).to_string(),
            "1234.50"
        );
    }

    fn state(peak: Decimal, equity: Decimal) -> AccountState {
        AccountState {
            equity: Notional::new(equity),
            peak_equity: Notional::new(peak),
            day_start_equity: Notional::new(equity),
            ..AccountState::default()
        }
    }

    fn request(equity: Decimal) -> EntryRequest {
        EntryRequest {
            equity,
            margin_in_use: Decimal::ZERO,
            open_positions: 0,
            price: dec!(100),
            stop: None,
            leverage: 3,
            base_size_pct: dec!(0.1),
            kelly_range: None,
            strategy_pnls: vec![],
            strategy_pnl_today: Decimal::ZERO,
            last_entry: None,
            regime: None,
            volatility: None,
            now: 1_700_000_000_000,
        }
    }

    fn sized(v: EntryVerdict) -> Sizing {
        match v {
            EntryVerdict::Sized(s) => s,
            EntryVerdict::Blocked(why) => panic!("blocked: {why}"),
        }
    }

    #[test]
    fn mdd_levels_and_multipliers_follow_the_table() {
        let m = MddConfig::default();
        let cases = [
            (dec!(0), 0, dec!(1.0)),
            (dec!(0.2999), 0, dec!(1.0)),
            (dec!(0.30), 1, dec!(0.7)),
            (dec!(0.34), 1, dec!(0.7)),
            (dec!(0.35), 2, dec!(0.5)),
            (dec!(0.39), 2, dec!(0.5)),
            (dec!(0.40), 3, dec!(0.3)),
            (dec!(0.4999), 3, dec!(0.3)),
            (dec!(0.50), 4, dec!(0.1)),
            (dec!(0.9), 4, dec!(0.1)),
        ];
        for (dd, level, mult) in cases {
            assert_eq!(mdd_level(&m, dd), level, "dd {dd}");
            assert_eq!(mdd_multiplier(&m, level, 0), mult, "dd {dd}");
        }
    }

    #[test]
    fn a_level_is_left_downwards_only_past_the_hysteresis_margin() {
        let c = cfg();
        let t0 = 1_700_000_000_000;
        let obs = |st: &AccountState, eq: Decimal, k: i64| {
            observe_equity(st, Notional::new(eq), t0 + k * 60_000, &c, dec!(0.99))
        };
        let (s, _) = obs(&AccountState::default(), dec!(10000), 0);
        let (s, ev) = obs(&s, dec!(6990), 1); // 30.1 %: level 1
        assert_eq!(s.mdd_level, 1);
        assert_eq!(ev.len(), 1, "{ev:?}");
        // Hovering just under 30 %: stays at level 1, nothing notified.
        let (s, ev) = obs(&s, dec!(7010), 2); // 29.9 %
        assert_eq!(s.mdd_level, 1);
        assert!(ev.is_empty(), "{ev:?}");
        let (s, ev) = obs(&s, dec!(6995), 3); // 30.05 %
        assert!(ev.is_empty() && s.mdd_level == 1, "{ev:?}");
        // 28.9 %: more than one point under the threshold, back to level 0.
        let (s, ev) = obs(&s, dec!(7110), 4);
        assert_eq!(s.mdd_level, 0);
        assert!(
            matches!(
                ev.as_slice(),
                [RiskEvent::MddLevelChanged { from: 1, to: 0, .. }]
            ),
            "{ev:?}"
        );
        // Sizing uses the same sticky level: at 29.9 % from level 1 the entry is still ×0.7.
        assert_eq!(mdd_level_from(&c.mdd, dec!(0.299), 1), 1);
        assert_eq!(mdd_level_from(&c.mdd, dec!(0.299), 0), 0);
        // Going deeper is immediate, and a fall from level 3 to 31 % lands on level 1.
        let (s, _) = obs(&s, dec!(5900), 5); // 41 %
        assert_eq!(s.mdd_level, 3);
        let (s, _) = obs(&s, dec!(6900), 6); // 31 %
        assert_eq!(s.mdd_level, 1);
    }

    #[test]
    fn recovery_adds_a_tenth_per_three_wins_up_to_one() {
        let m = MddConfig::default();
        assert_eq!(mdd_multiplier(&m, 2, 2), dec!(0.5));
        assert_eq!(mdd_multiplier(&m, 2, 3), dec!(0.6));
        assert_eq!(mdd_multiplier(&m, 2, 8), dec!(0.7));
        assert_eq!(mdd_multiplier(&m, 2, 60), dec!(1.0));
        assert_eq!(mdd_multiplier(&m, 0, 60), dec!(1.0));
    }

    #[test]
    fn observing_equity_tracks_peak_level_changes_and_the_daily_halt() {
        let c = cfg();
        let t0 = 1_700_000_000_000; // 2023-11-14 22:13 UTC
        let (s1, ev) = observe_equity(
            &AccountState::default(),
            Notional::new(dec!(10000)),
            t0,
            &c,
            dec!(0.05),
        );
        assert_eq!(s1.peak_equity.get(), dec!(10000));
        assert_eq!(s1.day_start_equity.get(), dec!(10000));
        assert!(ev.is_empty(), "{ev:?}");
        // −6 % on the same day: halt until the next 00:00 UTC, and no level change (6 % < 30 %).
        let (s2, ev) = observe_equity(&s1, Notional::new(dec!(9400)), t0 + 60_000, &c, dec!(0.05));
        assert_eq!(s2.peak_equity.get(), dec!(10000));
        let until = next_day_start(t0, 0);
        assert_eq!(until, 1_700_006_400_000);
        assert_eq!(s2.daily_halt_until, Some(until));
        assert!(
            matches!(ev.as_slice(), [RiskEvent::DailyLossHalt { .. }]),
            "{ev:?}"
        );
        assert!(ev[0].describe().contains("DAILY LOSS LIMIT"));
        // Observed again: no second event.
        let (s3, ev) = observe_equity(&s2, Notional::new(dec!(9300)), t0 + 120_000, &c, dec!(0.05));
        assert!(ev.is_empty(), "{ev:?}");
        // The next day: halt lifted, new starting equity.
        let (s4, ev) = observe_equity(&s3, Notional::new(dec!(9300)), until + 1, &c, dec!(0.05));
        assert_eq!(s4.daily_halt_until, None);
        assert_eq!(s4.day_start_equity.get(), dec!(9300));
        assert_eq!(ev, vec![RiskEvent::HaltLifted]);
        // A 36 % drawdown is level 2 and says so.
        let (s5, ev) = observe_equity(&s4, Notional::new(dec!(6400)), until + 2, &c, dec!(0.5));
        assert_eq!(s5.mdd_level, 2);
        assert!(
            matches!(
                ev.as_slice(),
                [RiskEvent::MddLevelChanged { from: 0, to: 2, .. }]
            ),
            "{ev:?}"
        );
        assert!(ev[0].describe().contains("×0.5"), "{}", ev[0].describe());
    }

    #[test]
    fn a_rolling_halt_lasts_24_hours_and_the_day_start_hour_is_configurable() {
        let mut c = cfg();
        c.halt_reset = HaltReset::Rolling24h;
        c.day_start_hour_utc = 8;
        let t0 = 1_700_000_000_000;
        let (s1, _) = observe_equity(
            &AccountState::default(),
            Notional::new(dec!(1000)),
            t0,
            &c,
            dec!(0.05),
        );
        let (s2, _) = observe_equity(&s1, Notional::new(dec!(900)), t0 + 1, &c, dec!(0.05));
        assert_eq!(s2.daily_halt_until, Some(t0 + 1 + DAY_MS));
        assert_eq!(next_day_start(t0, 8) % DAY_MS, 8 * HOUR_MS);
        assert!(next_day_start(t0, 8) > t0);
    }

    #[test]
    fn a_trade_is_counted_once_and_moves_the_streaks() {
        let s = state(dec!(100), dec!(100));
        let a = apply_trade(&s, "t1", Notional::new(dec!(5)), 0, 0).unwrap();
        assert_eq!((a.consecutive_wins, a.consecutive_losses), (1, 0));
        assert_eq!(a.daily_realized_pnl.get(), dec!(5));
        assert!(apply_trade(&a, "t1", Notional::new(dec!(5)), 0, 0).is_none());
        let b = apply_trade(&a, "t2", Notional::new(dec!(-3)), 0, 0).unwrap();
        assert_eq!((b.consecutive_wins, b.consecutive_losses), (0, 1));
        assert_eq!(b.daily_realized_pnl.get(), dec!(2));
    }

    #[test]
    fn kelly_uses_half_kelly_clamped_and_the_base_below_the_sample() {
        let k = KellyConfig::default();
        let range = (dec!(0.05), dec!(0.20));
        // 10 trades < 20: base size.
        let few = vec![dec!(10); 10];
        let (s, why) = kelly_size(&few, &k, range, dec!(0.1));
        assert_eq!(s, dec!(0.1));
        assert!(why.contains("base size"), "{why}");
        // 60 % wins of +20, 40 % losses of −10: b = 2, f = (0.6·2 − 0.4)/2 = 0.4, half = 0.2.
        let mut pnls = Vec::new();
        for i in 0..50 {
            pnls.push(if i % 5 < 3 { dec!(20) } else { dec!(-10) });
        }
        let (s, why) = kelly_size(&pnls, &k, range, dec!(0.1));
        assert_eq!(s, dec!(0.2), "{why}");
        // 55 % wins, b = 1: f = 0.1, half = 0.05.
        let mut pnls = Vec::new();
        for i in 0..100 {
            pnls.push(if i % 20 < 11 { dec!(10) } else { dec!(-10) });
        }
        assert_eq!(kelly_size(&pnls, &k, range, dec!(0.1)).0, dec!(0.05));
        // A losing record clamps to the minimum.
        let bad = vec![dec!(-1); 40];
        assert_eq!(kelly_size(&bad, &k, range, dec!(0.1)).0, dec!(0.05));
        // Only the last 100 trades count: 100 old losses then 100 wins of a 2:1 record.
        let mut long = vec![dec!(-5); 100];
        for i in 0..100 {
            long.push(if i % 5 < 3 { dec!(20) } else { dec!(-10) });
        }
        assert_eq!(kelly_size(&long, &k, range, dec!(0.1)).0, dec!(0.2));
    }

    #[test]
    fn loss_streaks_cut_the_size() {
        let cuts = cfg().loss_streak;
        assert_eq!(loss_streak_factor(&cuts, 2), dec!(1));
        assert_eq!(loss_streak_factor(&cuts, 3), dec!(0.7));
        assert_eq!(loss_streak_factor(&cuts, 6), dec!(0.5));
        assert_eq!(loss_streak_factor(&cuts, 9), dec!(0.3));
        let mut pnls = vec![dec!(5); 3];
        pnls.extend([dec!(-1); 5]);
        let s = sized(size_entry(
            &state(dec!(10000), dec!(10000)),
            &EntryRequest {
                strategy_pnls: pnls,
                ..request(dec!(10000))
            },
            &limits(),
        ));
        assert_eq!(s.multiplier, dec!(0.5));
        assert!(
            s.notes.iter().any(|n| n.contains("5 consecutive losses")),
            "{:?}",
            s.notes
        );
        assert!(s.reduced);
    }

    #[test]
    fn volatility_and_regime_multipliers() {
        let v = VolatilityConfig::default();
        // Alternating ±1 % hourly: ~0.93 annualised ⇒ 0.15 / 0.93 clamps to the 0.5 floor.
        let mut closes = vec![dec!(100)];
        for i in 0..100 {
            let last = *closes.last().unwrap();
            closes.push(if i % 2 == 0 {
                last * dec!(1.01)
            } else {
                last / dec!(1.01)
            });
        }
        let (m, annual) = volatility_multiplier(&closes, 3_600_000, &v).unwrap();
        assert!(annual > 0.9 && annual < 1.0, "{annual}");
        assert_eq!(m, dec!(0.5));
        // Very quiet market: capped at the 1.0 ceiling.
        let quiet: Vec<Decimal> = (0..50)
            .map(|i| dec!(100) + Decimal::new(i % 2, 4))
            .collect();
        assert_eq!(
            volatility_multiplier(&quiet, 3_600_000, &v).unwrap().0,
            dec!(1.0)
        );
        let r = RegimeConfig::default();
        let trend: Vec<Decimal> = (0..50).map(Decimal::from).collect();
        assert_eq!(regime_multiplier(&trend, &r).unwrap().0, dec!(1.2));
        let chop: Vec<Decimal> = (0..51).map(|i| Decimal::from(i % 2)).collect();
        assert_eq!(regime_multiplier(&chop, &r).unwrap().0, dec!(0.6));
    }

    #[test]
    fn blocks_name_their_reason() {
        let l = limits();
        let now = request(dec!(1)).now;
        let mut halted = state(dec!(10000), dec!(10000));
        halted.daily_halt_until = Some(now + 1);
        let why = |v: EntryVerdict| match v {
            EntryVerdict::Blocked(w) => w,
            EntryVerdict::Sized(s) => panic!("sized {s:?}"),
        };
        assert!(why(size_entry(&halted, &request(dec!(10000)), &l)).contains("daily loss limit"));
        // An expired halt does not block.
        halted.daily_halt_until = Some(now);
        sized(size_entry(&halted, &request(dec!(10000)), &l));
        // Emergency: 55 % drawdown.
        let w = why(size_entry(
            &state(dec!(10000), dec!(4500)),
            &request(dec!(4500)),
            &l,
        ));
        assert!(w.contains("MDD emergency level 4"), "{w}");
        let mut allow = l.clone();
        allow.mdd.allow_entries_in_emergency = true;
        let s = sized(size_entry(
            &state(dec!(10000), dec!(4500)),
            &request(dec!(4500)),
            &allow,
        ));
        assert_eq!(s.multiplier, dec!(0.1));
        let w = why(size_entry(
            &state(dec!(1), dec!(1)),
            &EntryRequest {
                open_positions: 3,
                ..request(dec!(10000))
            },
            &l,
        ));
        assert!(w.contains("max_positions_per_account = 3"), "{w}");
        let mut spaced = l.clone();
        spaced.min_entry_interval_ms = 4 * HOUR_MS;
        let w = why(size_entry(
            &state(dec!(1), dec!(1)),
            &EntryRequest {
                last_entry: Some(now - HOUR_MS),
                ..request(dec!(10000))
            },
            &spaced,
        ));
        assert!(w.contains("minimum interval 240 min"), "{w}");
        let w = why(size_entry(
            &state(dec!(1), dec!(1)),
            &EntryRequest {
                margin_in_use: dec!(9000),
                ..request(dec!(10000))
            },
            &l,
        ));
        assert!(w.contains("max_total_margin_pct"), "{w}");
        let mut strat = l.clone();
        strat.strategy_daily_loss_pct = Some(dec!(0.03));
        let w = why(size_entry(
            &state(dec!(10000), dec!(10000)),
            &EntryRequest {
                strategy_pnl_today: dec!(-301),
                ..request(dec!(10000))
            },
            &strat,
        ));
        assert!(w.contains("strategy daily loss"), "{w}");
    }

    #[test]
    fn mdd_level_two_halves_the_entry() {
        let base = sized(size_entry(
            &state(dec!(6300), dec!(6300)),
            &request(dec!(6300)),
            &limits(),
        ));
        let lvl2 = sized(size_entry(
            &state(dec!(10000), dec!(6300)),
            &request(dec!(6300)),
            &limits(),
        ));
        assert_eq!(lvl2.qty * dec!(2), base.qty);
        assert!(
            lvl2.notes.iter().any(|n| n.contains("MDD level 2")),
            "{:?}",
            lvl2.notes
        );
        assert!(lvl2.reduced && !base.reduced);
    }

    #[test]
    fn caps_apply_in_order_with_reasons() {
        // Size 0.5 × 3 lev at 100, stop 1 % away: 1.5 × equity notional would lose 1.5 % at the
        // stop — exactly the cap; a stop 2 % away halves it.
        let s = sized(size_entry(
            &state(dec!(1), dec!(1)),
            &EntryRequest {
                base_size_pct: dec!(0.5),
                stop: Some(dec!(98)),
                ..request(dec!(10000))
            },
            &limits(),
        ));
        assert_eq!(s.qty, dec!(75));
        assert!(
            s.notes.iter().any(|n| n.contains("risk_per_trade_pct")),
            "{:?}",
            s.notes
        );
        // Margin room: 8000 of 9000 used leaves 1000.
        let s = sized(size_entry(
            &state(dec!(1), dec!(1)),
            &EntryRequest {
                base_size_pct: dec!(0.2),
                margin_in_use: dec!(8000),
                ..request(dec!(10000))
            },
            &limits(),
        ));
        assert_eq!(s.margin, dec!(1000));
        assert!(
            s.notes.iter().any(|n| n.contains("max_total_margin_pct")),
            "{:?}",
            s.notes
        );
    }

    #[test]
    fn a_pyramid_add_stays_under_the_position_and_total_caps() {
        let l = limits();
        let st = state(dec!(10000), dec!(10000));
        // Position margin 4 000 of a 5 000 cap: at most 1 000 more margin = 30 units at 100 × 3.
        let room = pyramid_room(
            &st,
            dec!(10000),
            dec!(4000),
            dec!(4000),
            dec!(100),
            dec!(100),
            3,
            &l,
            0,
        );
        assert_eq!(room, Ok(dec!(30)));
        // Total margin 8 800 of 9 000: 200 more = 6 units.
        let room = pyramid_room(
            &st,
            dec!(10000),
            dec!(8800),
            dec!(1000),
            dec!(100),
            dec!(100),
            3,
            &l,
            0,
        );
        assert_eq!(room, Ok(dec!(6)));
        // A smaller wish is kept as is.
        let room = pyramid_room(
            &st,
            dec!(10000),
            dec!(0),
            dec!(0),
            dec!(2),
            dec!(100),
            3,
            &l,
            0,
        );
        assert_eq!(room, Ok(dec!(2)));
        let full = pyramid_room(
            &st,
            dec!(10000),
            dec!(5000),
            dec!(5000),
            dec!(1),
            dec!(100),
            3,
            &l,
            0,
        );
        assert!(full.unwrap_err().contains("no margin room"));
        let mut halted = st.clone();
        halted.daily_halt_until = Some(10);
        let h = pyramid_room(
            &halted,
            dec!(10000),
            dec!(0),
            dec!(0),
            dec!(1),
            dec!(100),
            3,
            &l,
            0,
        );
        assert!(h.unwrap_err().contains("daily loss limit"));
    }

    #[test]
    fn portfolio_view_only_warns() {
        let mut a = state(dec!(10000), dec!(6000));
        a.mdd_level = 2;
        let b = state(dec!(10000), dec!(6000));
        let w = portfolio_warnings(&[("main".into(), a), ("sub1".into(), b)], &cfg());
        assert!(
            w.iter().any(|x| x.contains("portfolio drawdown 40")),
            "{w:?}"
        );
        assert!(w.iter().any(|x| x.contains("main: MDD level 2")), "{w:?}");
    }

    fn filters(step: Decimal, tick: Decimal, min_notional: Decimal) -> crate::ports::SymbolFilters {
        crate::ports::SymbolFilters {
            symbol: crate::domain::Symbol::new("BTCUSDT"),
            tick_size: tick,
            min_price: tick,
            max_price: dec!(1000000),
            step_size: step,
            min_qty: step,
            max_qty: dec!(100000),
            market_step_size: step,
            market_min_qty: step,
            market_max_qty: dec!(100000),
            min_notional,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// A sized entry, rounded to the step grid as the engine does, breaks no cap.
        #[test]
        fn a_sized_order_never_breaks_a_cap(
            equity in 100u32..1_000_000,
            peak_extra in 0u32..1_000_000,
            used_pct in 0u32..100,
            price_cents in 100u64..10_000_000,
            stop_bp in 1u32..2_000,
            lev in 1u32..50,
            size_bp in 1u32..5_000,
            wins in 0u32..20,
            losses in 0usize..10,
            step_exp in 0u32..5,
        ) {
            let equity = Decimal::from(equity);
            let price = Decimal::new(price_cents as i64, 2);
            let stop = price * (Decimal::ONE - Decimal::new(stop_bp as i64, 4));
            let mut st = state(equity + Decimal::from(peak_extra), equity);
            st.consecutive_wins = wins;
            let mut pnls = vec![dec!(3); 30];
            pnls.extend(vec![dec!(-2); losses]);
            let used = equity * Decimal::new(used_pct as i64, 2);
            let req = EntryRequest {
                equity,
                margin_in_use: used,
                price,
                stop: Some(stop),
                leverage: lev,
                base_size_pct: Decimal::new(size_bp as i64, 4),
                kelly_range: Some((dec!(0.05), dec!(0.2))),
                strategy_pnls: pnls,
                ..request(equity)
            };
            let l = limits();
            if let EntryVerdict::Sized(s) = size_entry(&st, &req, &l) {
                let f = filters(Decimal::new(1, step_exp), dec!(0.01), dec!(5));
                if let Ok(q) = crate::orders::market_qty(&f, s.qty, crate::domain::Price::new(price), false) {
                    let q = q.get();
                    prop_assert!(q <= s.qty);
                    prop_assert_eq!((q / f.step_size).fract(), Decimal::ZERO);
                    let margin = q * price / Decimal::from(lev);
                    prop_assert!(margin <= equity * l.max_position_pct);
                    prop_assert!(used + margin <= equity * l.max_total_margin_pct);
                    prop_assert!(q * (price - stop) <= equity * l.risk_per_trade_pct);
                    prop_assert!(q * price >= f.min_notional);
                    // Never more than the undiscounted base (or Kelly max) size.
                    prop_assert!(margin <= equity * Decimal::new(size_bp as i64, 4).max(dec!(0.2)));
                }
            }
        }

        /// Stops and targets land on the tick grid and never tighten.
        #[test]
        fn prices_sit_on_the_tick_grid(raw_cents in 1i64..100_000_000, tick_exp in 0u32..4, long in any::<bool>()) {
            let tick = Decimal::new(1, tick_exp);
            let f = filters(dec!(0.001), tick, dec!(5));
            let raw = crate::domain::Price::new(Decimal::new(raw_cents, 2));
            let side = if long { crate::domain::Side::Long } else { crate::domain::Side::Short };
            let s = crate::orders::stop_price(&f, side, raw);
            prop_assert_eq!((s.get() / tick).fract(), Decimal::ZERO);
            if long { prop_assert!(s.get() <= raw.get().max(f.min_price)) } else { prop_assert!(s.get() >= raw.get()) }
            let t = crate::orders::target_price(&f, side, raw);
            prop_assert_eq!((t.get() / tick).fract(), Decimal::ZERO);
        }

        /// The in-place fold's change check (the fields [`Observed`] holds) says "changed"
        /// exactly when the whole state differs, and undoing an unchanged fold gives back the
        /// state to the exact representation: readings that repeat (at another scale too), days
        /// that turn, halts that start and lift.
        #[test]
        fn an_in_place_fold_sees_every_change_and_undoes_none(
            steps in proptest::collection::vec((0usize..6, 0u8..3, any::<bool>()), 1..80),
        ) {
            // A configuration change alone (tighter MDD thresholds) moves the level too.
            let loose = cfg();
            let mut tight = cfg();
            tight.mdd.thresholds = tight.mdd.thresholds.iter().map(|t| t / dec!(4)).collect();
            tight.mdd.hysteresis = Decimal::ZERO;
            let readings = [dec!(10000), dec!(10000.00), dec!(9800), dec!(9400), dec!(11000), dec!(9400.0)];
            let mut st = AccountState::default();
            let mut t = 1_700_000_000_000i64;
            for (r, dt, is_tight) in steps {
                let c = if is_tight { &tight } else { &loose };
                t += [0, 3_600_000, DAY_MS][dt as usize];
                let equity = Notional::new(readings[r]);
                let (next, events) = observe_equity(&st, equity, t, c, dec!(0.05));
                let mut x = st.clone();
                let before = Observed::of(&x);
                let events_in = observe_equity_in(&mut x, equity, t, c, dec!(0.05));
                prop_assert_eq!(&events_in, &events);
                let changed = Observed::of(&x) != before;
                prop_assert_eq!(changed, next != st);
                if !changed {
                    before.restore(&mut x);
                    prop_assert_eq!(
                        serde_json::to_string(&x).unwrap(),
                        serde_json::to_string(&st).unwrap()
                    );
                }
                st = next;
            }
        }

        /// The equity peak never decreases, whatever equity readings arrive.
        #[test]
        fn equity_peak_never_decreases(readings in proptest::collection::vec(1u32..1_000_000, 1..60)) {
            let c = cfg();
            let mut st = AccountState::default();
            let mut t = 1_700_000_000_000i64;
            let mut max_seen = Decimal::ZERO;
            for r in readings {
                let before = st.peak_equity.get();
                let (next, _) = observe_equity(&st, Notional::new(Decimal::from(r)), t, &c, dec!(0.05));
                max_seen = max_seen.max(Decimal::from(r));
                prop_assert!(next.peak_equity.get() >= before);
                prop_assert_eq!(next.peak_equity.get(), max_seen);
                prop_assert!(next.mdd_level <= emergency_level(&c.mdd));
                st = next;
                t += 3_600_000;
            }
        }

        /// The MDD level and the daily-loss check decided without dividing equal the Decimal
        /// quotients' answers: random readings, and readings put exactly on a threshold (and on a
        /// threshold less the hysteresis) and one unit of the last decimal either side of it.
        #[test]
        fn levels_without_division_equal_the_decimal_quotients(
            peak_units in 1i64..10_000_000_000,
            peak_scale in 0u32..9,
            tail in proptest::option::of(0i64..i64::MAX),
            frac_bp in 0i64..10_000,
            at in 0usize..12,
            nudge in -1i64..=1,
            prev in 0u8..=4,
            limit_bp in 0i64..10_000,
        ) {
            let c = cfg();
            // Equity after fees carries many decimals: a tail of up to 18 of them makes the
            // mantissa up to ~93 bits, past the exact conversion's fast path.
            let peak = Decimal::new(peak_units, peak_scale)
                + tail.map_or(Decimal::ZERO, |t| Decimal::new(t, 18));
            let mut marks: Vec<Decimal> = c.mdd.thresholds.clone();
            marks.extend(c.mdd.thresholds.iter().map(|t| *t - c.mdd.hysteresis));
            marks.extend([Decimal::new(limit_bp, 4), Decimal::new(frac_bp, 4)]);
            let frac = marks[at % marks.len()];
            // equity = peak · (1 − frac), nudged by one unit of its last decimal.
            let exact = peak - peak * frac;
            let equity = (exact + Decimal::new(nudge, exact.scale())).max(Decimal::ZERO);
            let want = mdd_level_from(&c.mdd, drawdown(peak, equity), prev);
            prop_assert_eq!(mdd_level_at(&c.mdd, peak, equity, prev), want);
            let st = AccountState {
                equity: Notional::new(equity),
                day_start_equity: Notional::new(peak),
                ..AccountState::default()
            };
            let limit = Decimal::new(limit_bp, 4);
            prop_assert_eq!(daily_loss_over(&st, limit), daily_loss(&st) > limit);
            prop_assert_eq!(daily_loss_over(&st, frac), daily_loss(&st) > frac);
        }

        /// A duplicate or replayed trade never changes the state twice.
        #[test]
        fn a_replayed_trade_counts_once(pnls in proptest::collection::vec(-100i64..100, 1..40), replay in proptest::collection::vec(0usize..40, 0..40)) {
            let mut st = state(dec!(1000), dec!(1000));
            let mut once = st.clone();
            for (i, p) in pnls.iter().enumerate() {
                once = apply_trade(&once, &format!("t{i}"), Notional::new(Decimal::from(*p)), 0, 0).unwrap();
            }
            for (i, p) in pnls.iter().enumerate() {
                if let Some(n) = apply_trade(&st, &format!("t{i}"), Notional::new(Decimal::from(*p)), 0, 0) { st = n; }
                for r in replay.iter().filter(|r| **r <= i) {
                    let id = format!("t{r}");
                    let again = apply_trade(&st, &id, Notional::new(Decimal::from(pnls[*r])), 0, 0);
                    prop_assert!(again.is_none());
                }
            }
            prop_assert_eq!(st, once);
        }
    }

    #[test]
    fn strategy_stats_match_a_rebuild_and_count_each_trade_once() {
        let day = DAY_MS;
        let trades: Vec<(i64, String, Decimal)> = (0..12)
            .map(|i| (i * day / 4 + 1, format!("t{i:02}"), Decimal::from(i - 5)))
            .collect();
        let keep = 5;
        // Applied in a shuffled order, with a replay of each: same as the rebuild from all.
        let mut st = StrategyStats::default();
        let mut counted = 0;
        for k in [3usize, 0, 7, 11, 1, 9, 2, 10, 4, 6, 8, 5] {
            let (t, id, p) = &trades[k];
            counted += usize::from(st.apply(*t, id, *p, 0, keep));
            assert!(
                !st.apply(*t, id, *p, 0, keep),
                "replay of {id} counted twice"
            );
        }
        let rebuilt = StrategyStats::from_trades(
            trades.iter().map(|(t, i, p)| (*t, i.as_str(), *p)),
            0,
            keep,
        );
        let newest: Vec<Decimal> = trades[7..].iter().map(|t| t.2).collect();
        assert_eq!(rebuilt.pnls(), newest);
        assert_eq!(st.pnls(), newest);
        // Trades 8..11 closed on day 2 (t = 2.0, 2.25, 2.5, 2.75 days): 3 + 4 + 5 + 6.
        assert_eq!(rebuilt.day, 2);
        assert_eq!(rebuilt.pnl_on(2), Decimal::from(18));
        assert_eq!(rebuilt.pnl_on(1), Decimal::ZERO);
        assert_eq!(st.day, rebuilt.day);
        assert_eq!(st.day_pnl, rebuilt.day_pnl);
        assert!(counted >= keep);
    }
}
