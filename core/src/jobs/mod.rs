//! The jobs as plain async functions over the ports: [`Engine::evaluate`] (candle-close evaluation)
//! and [`Engine::sync_positions`] (the 60-second reconciliation). Lambda, cron, the CLI, replay and
//! backtests all call these; `now` is always an argument.
//!
//! Crash safety of an entry: the position is written as PENDING (with its deterministic client id)
//! before the order is sent, then ACTIVE after the fill and the protective stop. A process killed in
//! between leaves a PENDING record that the next sync resolves by looking the order up (adopt it and
//! place the stop, or drop the record when the exchange never saw the order). An exchange position
//! that no record explains is matched against our deterministic entry ids of recent candles before
//! it is declared MANUAL.
//!
//! Exchange-side exits: after every entry, pyramid add or partial close, the position's
//! take-profit ladder and trailing stop (its strategy's `exchange_exits`, priced from the actual
//! fill by `orders::plan_exits`) are placed or resized (`reconcile_exits`). The sync records their
//! fills from userTrades before it compares sizes (`record_exit_fills`), re-places what went
//! missing, and every close cancels what is left (`cancel_protection`).

use crate::config::{AccountConfig, Config, StrategyConfig};
use crate::domain::{
    AccountId, AccountState, Candle, ClientId, ExitKind, ExitOrder, ExitReason, Intent, Notional,
    Position, PositionKey, PositionStatus, Price, Qty, Side, StrategyId, Symbol, Timeframe,
    TradeRecord,
};
use crate::orders::{self, SubmitPolicy};
use crate::ports::{
    AlgoKind, AlgoOrder, AlgoOrderInfo, AlgoStatus, Exchange, ExchangeError, MarketOrder,
    Notification, Notifier, OrderInfo, OrderStatus, Priority, Refusal, StoreError, SymbolFilters,
    WorkingType,
};
use crate::risk;
use crate::state::{RunKey, StateRepo, Versioned};

mod act;
mod adopt;
mod cache;
mod claim;
mod enter;
mod evaluate;
mod exit;
mod exits;
mod gather;
mod margin;
mod notices;
mod plan;
mod protect;
mod pyramid;
mod reconcile;
mod records;
mod report;
mod shares;
mod stops;
mod sync;
use crate::strategy::{self, Action, Decision, PositionView, StopSpec};
pub use cache::StrategyCache;
pub(crate) use cache::{CacheKey, Fed};
pub use claim::HeldClaim;
pub(crate) use evaluate::{CandleRunner, Item};
use exit::Why;
pub(crate) use gather::{track_best, DecisionInputs, Prepared};
pub(crate) use margin::MarginLedger;
use plan::{EntrySignal, Step};
use protect::{unprotected, Protection};
pub use report::{EngineError, JobFailure, JobReport, Line, Outcome};
use rust_decimal::prelude::Signed;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
pub use sync::{SYNC_JOB, SYNC_RECORD_REFRESH_MS};
/// One account the jobs run for, with the exchange connection that trades it.
#[derive(Clone)]
pub struct AccountRuntime {
    pub config: AccountConfig,
    pub exchange: Arc<dyn Exchange>,
}

/// The most one protective stop may wait on rate limits: most of the sync's 50 s Lambda
/// timeout, half the evaluator's 90 s, and longer than Binance's usual `Retry-After` storms.
pub const PROTECT_BUDGET: Duration = Duration::from_secs(35);

/// Pauses the engine may take (zero in replay and backtests).
#[derive(Clone, Copy, Debug)]
pub struct EngineTiming {
    pub submit: SubmitPolicy,
    /// Submission of protective stops: rate limits waited out within a larger budget
    /// ([`SubmitPolicy::protective`]).
    pub protect: SubmitPolicy,
    /// Pause between asks for a newest closed candle that the exchange does not serve yet.
    pub kline_pause: Duration,
    /// How many times to ask before skipping the candle.
    pub kline_attempts: u32,
}

impl EngineTiming {
    pub fn live(cfg: &Config) -> Self {
        let attempts = (cfg.jobs.kline_wait_secs / 2).max(1) as u32;
        EngineTiming {
            submit: SubmitPolicy::default(),
            protect: SubmitPolicy::default().protective(PROTECT_BUDGET),
            kline_pause: Duration::from_secs(2),
            kline_attempts: attempts,
        }
    }
    pub fn instant() -> Self {
        EngineTiming {
            submit: SubmitPolicy::instant(),
            protect: SubmitPolicy::instant().protective(PROTECT_BUDGET),
            kline_pause: Duration::ZERO,
            kline_attempts: 1,
        }
    }
}

pub struct Engine {
    pub config: Arc<Config>,
    pub repo: StateRepo,
    pub accounts: Vec<AccountRuntime>,
    pub notifier: Arc<dyn Notifier>,
    pub timing: EngineTiming,
    /// Strategies already fed, for processes that evaluate again and again (scheduler, replay,
    /// backtest, a warm Lambda): the next evaluation fetches only the candles that closed since
    /// and decides exactly as a cold start would (see [`StrategyCache`]).
    pub cache: StrategyCache,
    /// How entries are sized and protected.
    pub sizing: Sizing,
}

/// How entries are sized and protected: by the risk rules, or with all equity and no protective
/// orders (the reference backtest's `--risk off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sizing {
    /// Size, leverage and limits from the risk rules; every position has its stop on the
    /// exchange and its exit orders. What the jobs always use.
    #[default]
    Risk,
    /// Every entry takes all equity ([`crate::fastpath::all_equity_qty`]); no position limit,
    /// no stop, no exit orders. Research only (`albra backtest --risk off`).
    AllEquity,
}

impl Sizing {
    /// Whether positions get protective stops and exit orders, and entries the risk limits.
    pub fn protects(self) -> bool {
        self == Sizing::Risk
    }
}

/// A candle's time as `2025-07-04 12:00 UTC`, for report lines.
pub(super) use crate::domain::utc_minute as iso;

pub(super) fn signed(p: &Position) -> Decimal {
    p.side.sign() * p.qty.get()
}

/// The client algo id of a position's take-profit order (placed only when it has a level).
pub(super) fn take_profit_id(p: &Position) -> ClientId {
    ClientId::derive(
        &p.key.account,
        &p.key.strategy,
        &p.key.symbol,
        p.signal_open_time,
        Intent::TakeProfit,
        0,
    )
}

/// Client ids of a position's stop and take-profit orders, as far as it has placed them.
pub(super) fn stop_and_take_profit_ids(p: &Position) -> Vec<String> {
    let mut ids: Vec<String> = p.stop_client_id.iter().cloned().collect();
    if p.take_profit.is_some() {
        ids.push(take_profit_id(p).0);
    }
    ids
}

/// Client ids of every protective and exit order a position has on the exchange.
pub(super) fn protective_ids(p: &Position) -> Vec<String> {
    let mut ids = stop_and_take_profit_ids(p);
    ids.extend(p.exit_orders.iter().map(|e| e.client_id.clone()));
    ids
}

/// The trade that closes `qty` of `pos` at `exit_price` at `exit_time`: what every close takes
/// from the position. Its figures (PnL, fees, funding) are zero here and set by the caller.
pub(super) fn closing_trade(
    pos: &Position,
    id: String,
    qty: Qty,
    (exit_price, exit_time): (Price, i64),
    reason: String,
) -> TradeRecord {
    TradeRecord {
        id,
        account: pos.key.account.clone(),
        strategy: pos.key.strategy.clone(),
        symbol: pos.key.symbol.clone(),
        side: pos.side,
        qty,
        entry_price: pos.entry_price,
        exit_price,
        entry_time: pos.opened_at,
        exit_time,
        pnl: Notional::ZERO,
        fees: Notional::ZERO,
        funding: Notional::ZERO,
        reason,
        stop_loss: pos.stop_loss,
    }
}

/// Whether other strategies hold open positions on `pos`'s symbol, and whether all of those sit
/// on `pos`'s side (reduce-only orders of this share are then safe in one-way mode). The stop
/// and the exit orders are shaped from it.
pub(super) fn symbol_sharing(pos: &Position, others: &[Versioned<Position>]) -> (bool, bool) {
    let mut sharing = others.iter().filter(|o| {
        o.value.key.symbol == pos.key.symbol
            && o.value.key.strategy != pos.key.strategy
            && o.value.is_open()
    });
    let first = sharing.next();
    let same_side = first
        .into_iter()
        .chain(sharing)
        .all(|o| o.value.side == pos.side);
    (first.is_some(), same_side)
}

pub(super) fn view(p: &Position) -> PositionView {
    PositionView {
        side: p.side,
        qty: p.qty,
        entry_price: p.entry_price,
        opened_at: p.opened_at,
        best_price: p.best_price,
        stop_loss: p.stop_loss,
        partial_exits_done: p.partial_exits_done,
        pyramids_done: p.pyramids_done,
    }
}

impl Engine {
    /// Send a notification; `message` makes its event id and text, only when the notifier keeps
    /// them (a backtest's does not: it would format every entry and exit for nothing).
    async fn notify(
        &self,
        account: &AccountId,
        priority: Priority,
        kind: &str,
        message: impl FnOnce() -> (String, String),
        now: i64,
    ) {
        if !self.notifier.enabled() {
            return;
        }
        let (event_id, text) = message();
        let n = Notification {
            event_id,
            account: account.clone(),
            priority,
            kind: kind.to_string(),
            text,
            time: now,
        };
        if let Err(e) = self.notifier.notify(&n).await {
            tracing::warn!(error = %e, kind, "notification failed");
        }
    }

    // -----------------------------------------------------------------------------------------
    // evaluate
    // -----------------------------------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Candle, Price, Qty};

    /// `track_best` as first written (max/min over the candles, then against the known best):
    /// the reference for the one-comparison loop.
    fn track_best_reference(p: &mut Position, candles: &[Candle], tf: Timeframe) -> bool {
        let seen = candles
            .iter()
            .filter(|c| c.open_time + tf.millis() > p.opened_at);
        let best = match p.side {
            Side::Long => seen.map(|c| c.high).max(),
            Side::Short => seen.map(|c| c.low).min(),
        };
        let next = match (p.best_price, best) {
            (Some(a), Some(b)) => Some(if p.side == Side::Long {
                a.max(b)
            } else {
                a.min(b)
            }),
            (a, b) => a.or(b),
        };
        let moved = next != p.best_price;
        p.best_price = next;
        moved
    }

    #[test]
    fn iso_is_chronos_format_everywhere() {
        let chrono_iso = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_else(|| ms.to_string())
        };
        let mut next = crate::test_rng(0x150_d47e);
        let year = 31_556_952_000i64;
        for k in 0..20_000 {
            // Around the epoch, years 0 and 9999 (the sign changes) and chrono's limits.
            let centre = [0, -1970 * year, 8030 * year, 8031 * year, i64::MAX / 2][k % 5];
            let ms = centre + (next() % (4 * year as u64)) as i64 - 2 * year;
            assert_eq!(iso(ms), chrono_iso(ms), "{ms}");
        }
        assert_eq!(iso(1_751_630_400_000), "2025-07-04 12:00 UTC");
        assert_eq!(iso(i64::MAX), chrono_iso(i64::MAX));
    }

    #[test]
    fn track_best_matches_max_and_min_ties_and_scales_included() {
        let mut next = crate::test_rng(0x5eed_b357);
        let tf = Timeframe::H1;
        // Few distinct values, written at two scales (100 and 100.0 are equal, not identical),
        // so ties and equal-but-rescaled prices are frequent.
        let price = |r: u64| {
            let v = 100 + (r % 5) as i64;
            Price::new(if r & 8 == 0 {
                Decimal::from(v)
            } else {
                Decimal::new(v * 10, 1)
            })
        };
        for case in 0..20_000 {
            let side = if case % 2 == 0 {
                Side::Long
            } else {
                Side::Short
            };
            let candles: Vec<Candle> = (0..(next() % 4) as i64)
                .map(|i| {
                    let (a, b) = (price(next()), price(next()));
                    Candle {
                        open_time: i * tf.millis(),
                        open: a.min(b),
                        high: a.max(b),
                        low: a.min(b),
                        close: a.min(b),
                        volume: Decimal::ONE,
                    }
                })
                .collect();
            let mut p = Position {
                key: PositionKey {
                    account: AccountId::new("a"),
                    strategy: StrategyId::new("s"),
                    symbol: Symbol::new("BTCUSDT"),
                },
                side,
                qty: Qty::new(Decimal::ONE),
                entry_price: price(next()),
                leverage: 1,
                status: PositionStatus::Active,
                is_manual: false,
                entry_client_id: String::new(),
                signal_open_time: 0,
                // Some candles closed before the entry and do not count.
                opened_at: (next() % 3) as i64 * tf.millis(),
                stop_loss: None,
                take_profit: None,
                stop_client_id: None,
                stop_generation: 0,
                partial_exits_done: 0,
                pyramids_done: 0,
                best_price: (!next().is_multiple_of(3)).then(|| price(next())),
                entry_fee: Notional::ZERO,
                updated_at: 0,
                exit_orders: Vec::new(),
                exit_generation: 0,
            };
            let mut q = p.clone();
            let moved = track_best(&mut p, &candles, tf);
            let expected = track_best_reference(&mut q, &candles, tf);
            assert_eq!(moved, expected, "case {case}");
            // Bit for bit: the same representation, scale included.
            assert_eq!(
                p.best_price.map(|b| b.get().serialize()),
                q.best_price.map(|b| b.get().serialize()),
                "case {case}"
            );
        }
    }
}
