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
    AccountId, AccountState, Candle, ClientId, ExitKind, ExitOrder, Intent, Notional, Position,
    PositionKey, PositionStatus, Price, Qty, Side, StrategyId, Symbol, Timeframe, TradeRecord,
};
use crate::orders::{self, SubmitPolicy};
use crate::ports::{
    AlgoKind, AlgoOrder, AlgoOrderInfo, AlgoStatus, Exchange, ExchangeError, MarketOrder,
    Notification, Notifier, OrderInfo, OrderStatus, Priority, Refusal, StoreError, SymbolFilters,
    WorkingType,
};
use crate::risk;
use crate::state::{RunKey, StateRepo, Versioned, WriteMarks};

mod claim;
mod margin;
mod notices;
mod protect;
mod quiet;
mod reconcile;
mod shares;
mod sync;
use crate::strategy::{self, Action, Decision, PositionView, StopSpec};
pub use claim::HeldClaim;
use margin::MarginLedger;
use protect::{unprotected, Protection};
use quiet::Quiet;
use rust_decimal::prelude::Signed;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;
pub use sync::{SYNC_JOB, SYNC_RECORD_REFRESH_MS};

/// Why a job failed.
#[derive(thiserror::Error, Debug)]
pub enum EngineError {
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configured strategy's parameters do not build it.
    #[error(transparent)]
    Strategy(#[from] strategy::StrategyError),
    /// The exchange gave no usable price to size an order against.
    #[error("no reference price for {0}")]
    NoReferencePrice(Symbol),
    /// A stop that had to move could not be placed at its new level; the old stop stays.
    #[error("{key}: could not place the moved stop at {level} ({detail}); the old stop stays")]
    StopNotMoved {
        key: PositionKey,
        level: Price,
        detail: String,
    },
    /// Other writers kept changing the account state between this job's read and its write.
    #[error("{0}: account state kept changing under concurrent writers")]
    StateContended(AccountId),
    /// Another run holds the candle's claim (still evaluating) until its lease ends.
    #[error("claimed by another run until {} (its lease); a rerun after that takes it over if that run has died", iso(*.until))]
    ClaimedElsewhere { until: i64 },
    /// Another run took this candle over (this run outlived its claim's lease); nothing was sent.
    #[error(
        "another run took this candle over (this run outlived its claim's lease); nothing sent"
    )]
    TakenOver,
}

/// One account the jobs run for, with the exchange connection that trades it.
#[derive(Clone)]
pub struct AccountRuntime {
    pub config: AccountConfig,
    pub exchange: Arc<dyn Exchange>,
}

/// What a job did: one line per item, and the failures (the job fails when there are any).
#[derive(Debug, Default, Clone)]
pub struct JobReport {
    pub lines: Vec<String>,
    pub errors: Vec<String>,
    pub orders_placed: u32,
    pub orders_rejected: u32,
    /// Orders handed to the exchange (whatever came of them): a failure before any was sent
    /// gives the candle back for a retry.
    pub orders_attempted: u32,
    /// Symbols whose exchange position differed from the stored state when the sync started
    /// (before it healed anything): the sync-drift metric.
    pub sync_drift: u32,
    /// The candle claim held by the evaluation in progress (none outside one).
    pub claim: Option<HeldClaim>,
    /// The longest `Retry-After` among the failures: a rerun must not come sooner.
    pub retry_after: Option<Duration>,
}

impl JobReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Adds another part of the same job (one account's) after this one.
    fn absorb(&mut self, other: JobReport) {
        self.lines.extend(other.lines);
        self.errors.extend(other.errors);
        self.orders_placed += other.orders_placed;
        self.orders_rejected += other.orders_rejected;
        self.orders_attempted += other.orders_attempted;
        self.sync_drift += other.sync_drift;
        self.retry_after = self.retry_after.max(other.retry_after);
    }
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
    /// Claim and record a run marker for every candle, HOLD decisions included (the jobs' audit
    /// trail). Backtests switch it off: a HOLD changes nothing and leaves no marker, and only
    /// candles that act claim theirs, after deciding.
    pub record_holds: bool,
    /// Keep what each evaluation read for the candles after it ([`Engine::evaluate_quiet`]):
    /// only backtests that call it, and only with `record_holds` off.
    pub quiet_memo: bool,
}

impl EngineTiming {
    pub fn live(cfg: &Config) -> Self {
        let attempts = (cfg.jobs.kline_wait_secs / 2).max(1) as u32;
        EngineTiming {
            submit: SubmitPolicy::default(),
            protect: SubmitPolicy::default().protective(PROTECT_BUDGET),
            kline_pause: Duration::from_secs(2),
            kline_attempts: attempts,
            record_holds: true,
            quiet_memo: false,
        }
    }
    pub fn instant() -> Self {
        EngineTiming {
            submit: SubmitPolicy::instant(),
            protect: SubmitPolicy::instant().protective(PROTECT_BUDGET),
            kline_pause: Duration::ZERO,
            kline_attempts: 1,
            record_holds: true,
            quiet_memo: false,
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
    /// Backtest policy `--risk off`: every entry uses all equity (quantity = equity / price), no
    /// position limit, no protective stop orders. Never set by the jobs.
    pub risk_off: bool,
}

type CacheKey = (AccountId, String, Symbol, Timeframe);
/// When each account's share books were dated, per symbol.
type BookDates = std::collections::HashMap<AccountId, std::collections::HashMap<Symbol, i64>>;
/// A fed strategy and the open time of the last candle it was fed.
type Fed = (Box<dyn strategy::Strategy>, i64);

/// Fed strategy instances with the open time of the last candle each was fed, and a backtest's
/// quiet-candle memo ([`Engine::evaluate_quiet`]).
///
/// A cold start builds a strategy from the last `jobs.history` candles (its window). A strategy
/// fed every candle since the process started has seen older candles too, and indicators with an
/// infinite memory (every EMA, Wilder's averages) would read differently: a warm process could
/// decide otherwise than a cold one. So the default cache also keeps each strategy's window, and
/// once the new candles push it past `history` it builds the strategy again from the window (the
/// candles a cold start would fetch, none fetched twice). Backtests use
/// [`StrategyCache::unbounded`]: a run decides as a job whose history reaches back to the first
/// candle of its file.
#[derive(Default)]
pub struct StrategyCache {
    fed: std::sync::Mutex<std::collections::HashMap<CacheKey, Fed>>,
    /// The candles each strategy in `fed` was built from, oldest first (not kept when unbounded).
    windows:
        std::sync::Mutex<std::collections::HashMap<CacheKey, std::collections::VecDeque<Candle>>>,
    /// Feed cached strategies every new candle and never build them again (backtests).
    unbounded: bool,
    quiet: std::sync::Mutex<Option<Box<Quiet>>>,
    /// When each (account, symbol) share book in the store was dated, as this process last read
    /// or wrote it: a process that syncs again and again (scheduler, replay) need not read an
    /// unchanged book every minute.
    books: std::sync::Mutex<BookDates>,
}

impl StrategyCache {
    /// A cache that feeds its strategies every candle since the first, never rebuilding them from
    /// a window: a backtest's (its decisions see the whole file before each close).
    pub fn unbounded() -> Self {
        StrategyCache {
            unbounded: true,
            ..StrategyCache::default()
        }
    }
    /// Remember the candles a strategy was just built from.
    fn start_window(&self, k: &CacheKey, candles: &[Candle]) {
        if !self.unbounded {
            let mut w = self.windows.lock().expect("strategy windows");
            w.insert(k.clone(), candles.iter().copied().collect());
        }
    }
    /// Add `fresh` to `k`'s window. When that makes it longer than `limit` (the candles a cold
    /// start fetches), drop the oldest and return the window: the strategy must be built again
    /// from it. `None`: feeding `fresh` leaves it as a cold start would build it.
    fn slide(&self, k: &CacheKey, fresh: &[Candle], limit: usize) -> Option<Vec<Candle>> {
        if self.unbounded {
            return None;
        }
        let mut w = self.windows.lock().expect("strategy windows");
        let window = w.entry(k.clone()).or_default();
        window.extend(fresh.iter().copied());
        if window.len() <= limit {
            return None;
        }
        let surplus = window.len() - limit;
        window.drain(..surplus);
        Some(window.iter().copied().collect())
    }
    fn take(&self, k: &CacheKey) -> Option<(Box<dyn strategy::Strategy>, i64)> {
        self.fed.lock().expect("strategy cache").remove(k)
    }
    fn put(&self, k: CacheKey, s: Box<dyn strategy::Strategy>, last: i64) {
        self.fed
            .lock()
            .expect("strategy cache")
            .insert(k, (s, last));
    }
    fn book_dated(&self, account: &AccountId, sym: &Symbol) -> Option<i64> {
        let books = self.books.lock().expect("book dates");
        books.get(account)?.get(sym).copied()
    }
    fn date_book(&self, account: &AccountId, sym: &Symbol, as_of: i64) {
        let mut books = self.books.lock().expect("book dates");
        let of_account = books.entry(account.clone()).or_default();
        of_account.insert(sym.clone(), as_of);
    }
    fn take_quiet(&self) -> Option<Box<Quiet>> {
        self.quiet.lock().expect("quiet memo").take()
    }
    fn keep_quiet(&self, q: Box<Quiet>) {
        *self.quiet.lock().expect("quiet memo") = Some(q);
    }
    /// Hand the memo's strategy back to the cache (the full evaluation feeds it from there).
    fn release_quiet(&self) {
        if let Some(q) = self.take_quiet() {
            self.hand_back(q);
        }
    }
    /// Drop a memo taken out, its strategy back in the cache.
    fn hand_back(&self, q: Box<Quiet>) {
        if let Quiet {
            key,
            fed: Some((st, last)),
            ..
        } = *q
        {
            self.put(key, st, last);
        }
    }
}

/// What a decision reads from the stored state besides the candles and `now`.
struct DecisionInputs {
    /// The strategy's position on the symbol (any status).
    position: Option<Versioned<Position>>,
    /// Open or pending positions of the strategy on the account (concurrency limits).
    open_positions: usize,
    /// The strategy's latest entry on the account (signal intervals).
    last_entry_time: Option<i64>,
}

impl DecisionInputs {
    fn new(
        all: &[Versioned<Position>],
        key: &PositionKey,
        last_entry: Option<i64>,
    ) -> DecisionInputs {
        let position = all.iter().find(|p| p.value.key == *key).cloned();
        let mine = all
            .iter()
            .filter(|p| p.value.key.strategy == key.strategy && !p.value.is_manual);
        let open_positions = mine
            .clone()
            .filter(|p| p.value.is_open() || p.value.status == PositionStatus::Pending)
            .count();
        let mut last_entry_time = mine.map(|p| p.value.opened_at).max();
        if let Some(t) = last_entry {
            last_entry_time = Some(last_entry_time.map_or(t, |x| x.max(t)));
        }
        DecisionInputs {
            position,
            open_positions,
            last_entry_time,
        }
    }

    fn open_view(&self) -> Option<PositionView> {
        self.position
            .as_ref()
            .filter(|p| p.value.is_open())
            .map(|p| view(&p.value))
    }
}

/// Move an open position's best price since entry by the closed `candles` (trailing stops and
/// give-back exits); whether it moved.
fn track_best(p: &mut Position, candles: &[crate::domain::Candle], tf: Timeframe) -> bool {
    let since = p.opened_at;
    let long = p.side == Side::Long;
    let mut moved = false;
    // One comparison per candle (a backtest asks on every candle it holds). Ties keep what
    // `max`/`min` keep: the later high, the earlier low.
    for c in candles.iter().filter(|c| c.open_time + tf.millis() > since) {
        let x = if long { c.high } else { c.low };
        let (take, beyond) = match p.best_price {
            None => (true, true),
            Some(b) => match (long, x.cmp(&b)) {
                (true, o) => (o.is_ge(), o.is_gt()),
                (false, o) => (o.is_lt(), o.is_lt()),
            },
        };
        if take {
            p.best_price = Some(x);
            moved |= beyond;
        }
    }
    moved
}

/// A candle's time as `2025-07-04 12:00 UTC`, for report lines.
fn iso(ms: i64) -> String {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::from_timestamp_millis(ms) {
        // The fields written directly: chrono parsing the format string on every call was a
        // visible share of a backtest's evaluations. Outside 0–9999 chrono adds a sign.
        Some(d) if (0..=9999).contains(&d.year()) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Some(d) => d.format("%Y-%m-%d %H:%M UTC").to_string(),
        None => ms.to_string(),
    }
}

fn signed(p: &Position) -> Decimal {
    p.side.sign() * p.qty.0
}

/// The client algo id of a position's take-profit order (placed only when it has a level).
fn take_profit_id(p: &Position) -> ClientId {
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
fn stop_and_take_profit_ids(p: &Position) -> Vec<String> {
    let mut ids: Vec<String> = p.stop_client_id.iter().cloned().collect();
    if p.take_profit.is_some() {
        ids.push(take_profit_id(p).0);
    }
    ids
}

/// Client ids of every protective and exit order a position has on the exchange.
fn protective_ids(p: &Position) -> Vec<String> {
    let mut ids = stop_and_take_profit_ids(p);
    ids.extend(p.exit_orders.iter().map(|e| e.client_id.clone()));
    ids
}

/// Whether other strategies hold open positions on `pos`'s symbol, and whether all of those sit
/// on `pos`'s side (reduce-only orders of this share are then safe in one-way mode). The stop
/// and the exit orders are shaped from it.
fn symbol_sharing(pos: &Position, others: &[Versioned<Position>]) -> (bool, bool) {
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

fn view(p: &Position) -> PositionView {
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

/// Take quantity and price from the fill, and move planned stop / target by the difference
/// between the reference price and the actual fill.
fn apply_fill(
    pos: &mut Position,
    fill: &OrderInfo,
    filters: &SymbolFilters,
    stop: Option<StopSpec>,
    take_profit: Option<StopSpec>,
) {
    pos.qty = fill.executed_qty;
    pos.entry_price = fill.avg_price;
    pos.best_price = Some(fill.avg_price);
    pos.stop_loss = stop
        .map(|sp| orders::stop_price(filters, pos.side, sp.stop_price(pos.side, fill.avg_price)));
    pos.take_profit = take_profit.map(|sp| {
        orders::target_price(filters, pos.side, sp.target_price(pos.side, fill.avg_price))
    });
}

/// The commission the exchange charged for entry order `order_id` (zero, with a warning, when
/// `userTrades` cannot say).
async fn entry_fee(ex: &dyn Exchange, symbol: Symbol, opened_at: i64, order_id: i64) -> Notional {
    match ex.user_trades(&symbol, opened_at - 60_000).await {
        Ok(trades) => Notional(
            trades
                .iter()
                .filter(|t| t.order_id == order_id)
                .map(|t| t.commission.0)
                .sum(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "entry fee unknown (userTrades failed)");
            Notional::ZERO
        }
    }
}

/// Outcome of fetching candles for one evaluation.
enum Fetched {
    Ready(Vec<crate::domain::Candle>),
    /// The exchange has not served the newest closed candle: never evaluate a stale one.
    NotYet {
        newest: Option<i64>,
    },
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

    /// Evaluate the candle of `tf` that closed last at `now`, for every enabled account and every
    /// enabled strategy of that timeframe.
    pub async fn evaluate(&self, tf: Timeframe, now: i64) -> JobReport {
        let open_time = tf.last_closed_open(now);
        self.cache.release_quiet();
        // Accounts share nothing on the exchange or in the store: they are evaluated at once,
        // and their reports joined in configuration order.
        let parts = futures::future::join_all(
            self.accounts
                .iter()
                .filter(|a| a.config.enabled)
                .map(|acct| self.evaluate_account(acct, tf, open_time, now)),
        )
        .await;
        let mut report = JobReport::default();
        for part in parts {
            report.absorb(part);
        }
        self.remember_quiet(tf).await;
        report
    }

    /// One account's part of [`Engine::evaluate`]: each of its strategies of `tf` on each of
    /// their symbols, one after another (shares of one symbol must not interleave).
    async fn evaluate_account(
        &self,
        acct: &AccountRuntime,
        tf: Timeframe,
        open_time: i64,
        now: i64,
    ) -> JobReport {
        let mut report = JobReport::default();
        let id = &acct.config.id;
        match self.repo.account_state(id).await {
            Ok(Some(s)) if s.value.paused => {
                report
                    .lines
                    .push(format!("{id}: paused; nothing evaluated"));
                return report;
            }
            Ok(_) => {}
            Err(e) => {
                report.errors.push(format!("{id}: {e}"));
                return report;
            }
        }
        let items: Vec<(&StrategyConfig, &Symbol)> = self
            .config
            .account_strategies(&acct.config)
            .filter(|s| s.timeframe == tf)
            .flat_map(|s| s.symbols.iter().map(move |sym| (s, sym)))
            .collect();
        // The symbols are worked at once, the strategies of one symbol one after another in
        // configuration order (their shares of the symbol's net must not interleave); entries
        // and pyramid adds are sized one at a time (`MarginLedger`). Lines keep that order.
        let mut groups: Vec<(&Symbol, Vec<usize>)> = Vec::new();
        for (i, (_, sym)) in items.iter().enumerate() {
            match groups.iter_mut().find(|(g, _)| g == sym) {
                Some((_, of_symbol)) => of_symbol.push(i),
                None => groups.push((sym, vec![i])),
            }
        }
        let ledger = MarginLedger::default();
        let parts = futures::future::join_all(groups.iter().map(|(_, of_symbol)| {
            let (items, ledger) = (&items, &ledger);
            async move {
                let mut out = Vec::with_capacity(of_symbol.len());
                for &i in of_symbol {
                    let (s, sym) = items[i];
                    let part = self
                        .evaluate_item(acct, s, sym, tf, open_time, now, ledger)
                        .await;
                    out.push((i, part));
                }
                out
            }
        }))
        .await;
        let mut parts: Vec<(usize, JobReport)> = parts.into_iter().flatten().collect();
        parts.sort_by_key(|(i, _)| *i);
        for (_, part) in parts {
            report.absorb(part);
        }
        report
    }

    /// One strategy on one symbol of [`Engine::evaluate_account`], with its own report.
    #[allow(clippy::too_many_arguments)]
    async fn evaluate_item(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        tf: Timeframe,
        open_time: i64,
        now: i64,
        ledger: &MarginLedger,
    ) -> JobReport {
        let mut report = JobReport::default();
        let id = &acct.config.id;
        let tag = || format!("{id}/{}/{sym} {tf} candle {}", s.name, iso(open_time));
        match self
            .evaluate_one(acct, s, sym, tf, open_time, now, &mut report, ledger)
            .await
        {
            // Empty: a HOLD that leaves no record (see `EngineTiming::record_holds`).
            Ok(line) if line.is_empty() => {}
            Ok(line) => report.lines.push(format!("{}: {line}", tag())),
            Err(e) => {
                if let EngineError::Exchange(ExchangeError::Retryable {
                    retry_after: Some(d),
                    ..
                }) = &e
                {
                    report.retry_after = report.retry_after.max(Some(*d));
                }
                report.errors.push(format!("{}: {e}", tag()))
            }
        }
        report
    }

    #[allow(clippy::too_many_arguments)]
    async fn evaluate_one(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        tf: Timeframe,
        open_time: i64,
        now: i64,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        let account = &acct.config.id;
        let sid = StrategyId::new(&s.name);
        let run = RunKey {
            account: account.clone(),
            strategy: sid.clone(),
            symbol: sym.clone(),
            tf,
            open_time,
        };
        // The jobs claim the candle before anything else; a backtest decides first and claims
        // only candles that act (a HOLD changes nothing, so it needs no marker).
        let early = self.timing.record_holds;
        let mut claimed = None;
        if early {
            match self.claim(acct, &run, now).await? {
                Ok(c) => claimed = Some(c),
                Err(line) => return Ok(line),
            }
        }
        // Until an order is sent, a failure gives the candle back so a retry can evaluate it.
        let prepared = self.prepare(acct, s, sym, tf, open_time, now).await;
        if !early {
            if let Ok(Some((d, _, _))) = &prepared {
                if d.action == Action::Hold {
                    return Ok(String::new());
                }
            }
            if prepared.is_ok() {
                match self.claim(acct, &run, now).await? {
                    Ok(c) => claimed = Some(c),
                    Err(line) => return Ok(line),
                }
            }
        }
        let prepared = match prepared {
            Ok(x) => x,
            Err(e) => {
                if let Some(c) = &claimed {
                    self.release_claim(c).await;
                }
                return Err(e);
            }
        };
        let Some((decision, position, ref_price)) = prepared else {
            let why = format!(
                "skipped: the exchange has not served the closed candle {} yet (not evaluating a stale candle)",
                iso(open_time)
            );
            self.notify(
                account,
                Priority::Medium,
                "skipped",
                || notices::blocked("skip", account, &s.name, sym, open_time, &why),
                now,
            )
            .await;
            return Ok(match claimed {
                Some(c) => self.finish_claim(&c, why).await,
                None => why,
            });
        };
        tracing::info!(account = %account, strategy = %s.name, symbol = %sym, action = ?decision.action, conditions = %decision.conditions_line(), "decision");
        // The claim travels with the report: the first order moves it to Acting (`before_send`).
        report.claim = claimed;
        let result = self
            .act(
                acct, s, sym, open_time, now, decision, position, ref_price, report, ledger,
            )
            .await;
        let claim = report.claim.take().expect("claimed before acting");
        match result {
            Ok(outcome) => Ok(self.finish_claim(&claim, outcome).await),
            Err(e) => {
                // Nothing sent: give the candle back for a retry. Once Acting, the marker stays
                // and the sync resolves what was sent.
                if !claim.acting {
                    self.release_claim(&claim).await;
                }
                Err(e)
            }
        }
    }

    /// Act on a decision for one held candle: check what the exchange did since the last sync,
    /// then enter, exit, resize or move the stop.
    #[allow(clippy::too_many_arguments)]
    async fn act(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        open_time: i64,
        now: i64,
        decision: Decision,
        mut position: Option<Versioned<Position>>,
        ref_price: Price,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        let account = &acct.config.id;
        if let Some(p) = position.take_if(|p| p.value.status == PositionStatus::Pending) {
            let ours = ClientId::derive(
                account,
                &p.value.key.strategy,
                sym,
                open_time,
                Intent::Entry,
                0,
            );
            if p.value.entry_client_id != ours.0 {
                return Ok("skipped: an entry is pending confirmation by the sync job".into());
            }
            // This candle's own entry, written by a run that held this claim and never reached
            // Acting (a claim that sent anything is never taken over nor released): its order
            // was never sent, so the record goes and the candle is evaluated afresh.
            self.repo.delete_position(&p.value.key, p.version).await?;
            report.lines.push(format!(
                "{}: dropped the pending entry {ours} of an interrupted run that never sent it",
                p.value.key
            ));
        }
        let mut open = position.filter(|p| p.value.is_open());
        // A stop that fired while the decision holds is recorded now rather than at the next
        // sync, so nothing reads the position as open in between. Only the jobs look (one
        // request); a backtest syncs after every candle anyway.
        if decision.action == Action::Hold && self.timing.record_holds {
            if let Some(p) = open.take() {
                let ex = acct.exchange.as_ref();
                if !self.protection_fired(ex, &p.value, &HashSet::new()).await? {
                    open = Some(p);
                } else {
                    self.record_exchange_close(ex, &p, now).await?;
                    return Ok(format!(
                        "hold; the protective order had closed the position: {}",
                        decision.conditions_line()
                    ));
                }
            }
        }
        // The exchange may have closed it since the last sync (its stop fired at this close):
        // record that close instead of sending an exit the exchange would reject.
        if decision.action != Action::Hold {
            if let Some(mut p) = open.take() {
                let ex = acct.exchange.as_ref();
                if self.protection_fired(ex, &p.value, &HashSet::new()).await? {
                    self.record_exchange_close(ex, &p, now).await?;
                } else {
                    // A take-profit step or trailing stop that filled since the last sync (within
                    // the last minute before this close) is recorded first, as the sync would, so
                    // the decision acts on what is left instead of being skipped.
                    let mut closed = false;
                    if !p.value.exit_orders.is_empty() {
                        let live = ex.open_algo_orders(Some(sym)).await?;
                        let ids: HashSet<&str> =
                            live.iter().map(|a| a.client_algo_id.as_str()).collect();
                        closed = self
                            .record_exit_fills(ex, &mut p, &ids, now, report)
                            .await?;
                    }
                    if !closed {
                        if !self.shares_match(ex, &p.value).await? {
                            return Ok(format!(
                                "skipped {}: the exchange's {sym} position differs from the stored shares; the sync job reconciles it first",
                                crate::signals::action_label(&decision.action)
                            ));
                        }
                        open = Some(p);
                    }
                }
            }
        }
        Ok(match decision.action.clone() {
            Action::Hold => format!("hold ({}) {}", decision.note, decision.conditions_line()),
            Action::PartialClose {
                fraction,
                stage,
                reason,
            } => match open {
                Some(p) => {
                    self.partial_close(acct, p, fraction, stage, &reason, now, report)
                        .await?
                }
                None => "hold (partial close while flat)".into(),
            },
            Action::Pyramid { fraction, stage } => match open {
                Some(p) => {
                    self.pyramid(acct, s, p, fraction, stage, ref_price, now, report, ledger)
                        .await?
                }
                None => "hold (pyramid while flat)".into(),
            },
            Action::MoveStop { price, reason } => match open {
                Some(p) => self.move_stop(acct, p, price, &reason, now, report).await?,
                None => "hold (stop move while flat)".into(),
            },
            Action::Close { reason } => match open {
                Some(p) => {
                    self.exit(acct.exchange.as_ref(), p, &reason, open_time, now, report)
                        .await?;
                    format!("closed: {reason}")
                }
                None => "hold (close signal while flat)".into(),
            },
            Action::Open {
                side,
                stop,
                take_profit,
            }
            | Action::Reverse {
                side,
                stop,
                take_profit,
            } => {
                let reverse = matches!(decision.action, Action::Reverse { .. });
                match open {
                    Some(_) if !reverse => {
                        return Ok("hold (open signal while already in a position)".into())
                    }
                    Some(p) => {
                        let why = format!("reverse to {side}");
                        self.exit(acct.exchange.as_ref(), p, &why, open_time, now, report)
                            .await?
                    }
                    None => {}
                }
                self.enter(
                    acct,
                    s,
                    sym,
                    side,
                    stop,
                    take_profit,
                    open_time,
                    now,
                    ref_price,
                    &decision,
                    report,
                    ledger,
                )
                .await?
            }
        })
    }

    /// Fetch candles, build the strategy and decide. `Ok(None)` when the candle is not served yet.
    async fn prepare(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        tf: Timeframe,
        open_time: i64,
        now: i64,
    ) -> Result<Option<(Decision, Option<Versioned<Position>>, Price)>, EngineError> {
        let ex = acct.exchange.as_ref();
        let cache_key = (acct.config.id.clone(), s.name.clone(), sym.clone(), tf);
        let build = || {
            strategy::build(&s.name, &s.params, &format!("strategies.{}.params", s.name))
                .map_err(EngineError::from)
        };
        // The candles a cold start fetches (at least the strategy's warm-up).
        let limit =
            |st: &dyn strategy::Strategy| self.config.jobs.history.max(st.warmup() as u32 + 2);
        // A strategy fed up to an earlier candle only needs the candles closed since.
        let mut fed = None;
        if let Some((st, last)) = self.cache.take(&cache_key) {
            // `last == open_time`: it has seen this candle already (a retry, or a backtest's
            // quiet path that handed the candle over): it is fed nothing again.
            if last <= open_time {
                let need = ((open_time - last) / tf.millis()) as u32 + 1;
                match self
                    .fetch_closed(ex, sym, tf, need.max(2), open_time, now)
                    .await?
                {
                    Fetched::Ready(c) if c.first().is_some_and(|f| f.open_time <= last) => {
                        let close = c.last().map(|x| x.close).unwrap_or_default();
                        let fresh: Vec<_> = c.into_iter().filter(|x| x.open_time > last).collect();
                        let limit = limit(st.as_ref()) as usize;
                        fed = Some(match self.cache.slide(&cache_key, &fresh, limit) {
                            // Its window moved on: built again from it, as a cold start would be.
                            Some(window) => (build()?, window, close),
                            None => (st, fresh, close),
                        });
                    }
                    Fetched::Ready(_) => {}
                    Fetched::NotYet { .. } => {
                        self.cache.put(cache_key, st, last);
                        return Ok(None);
                    }
                }
            }
        }
        let (mut strat, candles, last_close) = match fed {
            Some((st, fresh, close)) => (st, fresh, close),
            None => {
                let st = build()?;
                let limit = limit(st.as_ref());
                match self
                    .fetch_closed(ex, sym, tf, limit, open_time, now)
                    .await?
                {
                    Fetched::Ready(c) => {
                        let close = c.last().map(|x| x.close).unwrap_or_default();
                        self.cache.start_window(&cache_key, &c);
                        (st, c, close)
                    }
                    Fetched::NotYet { newest } => {
                        tracing::warn!(symbol = %sym, newest = ?newest, expected = open_time, "newest closed candle missing");
                        return Ok(None);
                    }
                }
            }
        };
        for c in &candles {
            strat.update(c);
        }
        let key = PositionKey {
            account: acct.config.id.clone(),
            strategy: StrategyId::new(&s.name),
            symbol: sym.clone(),
        };
        let all = self.repo.positions(&acct.config.id).await?;
        let last_entry = self.repo.last_entry(&acct.config.id, &key.strategy).await?;
        let mut inputs = DecisionInputs::new(&all, &key, last_entry);
        // Keep the best price stored: a strategy fed only fresh candles relies on it.
        if let Some(p) = inputs.position.as_mut().filter(|p| p.value.is_open()) {
            if track_best(&mut p.value, &candles, tf) {
                p.value.updated_at = now;
                p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
            }
        }
        let v = inputs.open_view();
        let ctx = strategy::Context {
            position: v.as_ref(),
            now,
            last_entry_time: inputs.last_entry_time,
            open_positions: inputs.open_positions,
        };
        // A backtest keeps no record of a HOLD (`record_holds`), and with a discarding notifier
        // and the decision log off nothing reads any decision's explanation: skip building it.
        let quick = (!self.timing.record_holds).then(|| strat.decide_action(&ctx));
        let unread = || !self.notifier.enabled() && !tracing::enabled!(tracing::Level::INFO);
        let decision = match quick {
            Some(action) if action == Action::Hold || unread() => Decision {
                action,
                conditions: Vec::new(),
                note: String::new(),
            },
            _ => strat.decide(&ctx),
        };
        self.cache.put(cache_key, strat, open_time);
        Ok(Some((decision, inputs.position, last_close)))
    }

    async fn fetch_closed(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        tf: Timeframe,
        limit: u32,
        open_time: i64,
        now: i64,
    ) -> Result<Fetched, EngineError> {
        let mut newest = None;
        for attempt in 0..self.timing.kline_attempts.max(1) {
            if attempt > 0 && !self.timing.kline_pause.is_zero() {
                tokio::time::sleep(self.timing.kline_pause).await;
            }
            let mut candles = ex.closed_klines(sym, tf, limit, now).await?;
            // Never look past the candle being evaluated, whatever the exchange served.
            candles.retain(|c| c.open_time <= open_time);
            newest = candles.last().map(|c| c.open_time);
            if newest == Some(open_time) {
                return Ok(Fetched::Ready(candles));
            }
        }
        Ok(Fetched::NotYet { newest })
    }

    /// Open a position: size, write the pending record, send the entry exactly once, protect it.
    #[allow(clippy::too_many_arguments)]
    async fn enter(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        side: Side,
        stop: Option<StopSpec>,
        take_profit: Option<StopSpec>,
        open_time: i64,
        now: i64,
        ref_price: Price,
        decision: &Decision,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        let account = &acct.config.id;
        let ex = acct.exchange.as_ref();
        let sid = StrategyId::new(&s.name);

        // Checked before anything is asked of the exchange: a blocked entry changes nothing
        // there (not even the symbol's leverage, which a hand-made position shares).
        let stored = self.repo.positions(account).await?;
        if let Some(why) = self.against_manual(&stored, sym, side) {
            self.notify(
                account,
                Priority::High,
                "blocked",
                || notices::blocked("manual", account, sid.as_str(), sym, open_time, &why),
                now,
            )
            .await;
            return Ok(why);
        }
        // Risk off (backtests only): no protective stop, no limits, all equity.
        let stop = if self.risk_off { None } else { stop };
        let (lev, size_pct) = self.config.effective_sizing(&acct.config, s);
        // Everything the order waits for from the exchange is asked at once: the trading rules,
        // the account, the price, and the symbol's margin type and leverage set. The answers are
        // then taken in the order the entry uses them, so a failure reports as it would one
        // after another.
        let read_at = ledger.mark();
        let (filters, snap, ref_price, setup) = futures::join!(
            ex.symbol_filters(sym),
            ex.account(),
            self.sizing_price(ex, sym, ref_price),
            self.ensure_symbol_setup(ex, sym, lev, s.margin_type),
        );
        let filters = match filters {
            Ok(f) => f,
            Err(ExchangeError::Fatal(m)) => {
                let why = format!("entry blocked: no trading filters for {sym}: {m}");
                self.notify(
                    account,
                    Priority::High,
                    "blocked",
                    || notices::blocked("nofilter", account, sid.as_str(), sym, open_time, &why),
                    now,
                )
                .await;
                return Ok(why);
            }
            Err(e) => return Err(e.into()),
        };
        let mut snap = snap?;
        if ref_price.is_zero() {
            return Err(EngineError::NoReferencePrice(sym.clone()));
        }
        // Sized one at a time, from the store as the entries before this one left it and with
        // the margin of this evaluation's orders the account read may not show (`MarginLedger`).
        let turn = ledger.size().await;
        let stored = self.repo.positions(account).await?;
        snap.total_initial_margin = Notional(snap.total_initial_margin.0 + ledger.unseen(read_at));
        let mut risk_notes: Vec<String> = Vec::new();
        let mut risk_reduced = false;
        let raw_qty = if self.risk_off {
            snap.equity.0 / ref_price.0
        } else {
            let state = self.observe_account(&acct.config, snap.equity, now).await?;
            let stop_px =
                stop.map(|sp| orders::stop_price(&filters, side, sp.stop_price(side, ref_price)).0);
            let req = self
                .entry_request(
                    acct, s, sym, &stored, &snap, ref_price, stop_px, lev, size_pct, now,
                )
                .await?;
            let limits = risk::Limits::new(&self.config.risk, &self.config.strategy_risk(&s.name));
            match risk::size_entry(&state, &req, &limits) {
                risk::EntryVerdict::Blocked(reason) => {
                    let why = format!("entry {side} blocked by risk: {reason}");
                    self.notify(
                        account,
                        Priority::Medium,
                        "blocked",
                        || notices::blocked("blocked", account, sid.as_str(), sym, open_time, &why),
                        now,
                    )
                    .await;
                    return Ok(why);
                }
                risk::EntryVerdict::Sized(sz) => {
                    risk_reduced = sz.reduced;
                    risk_notes = sz.notes;
                    sz.qty
                }
            }
        };
        let qty = match orders::market_qty(&filters, raw_qty, ref_price, false) {
            Ok(q) => q,
            Err(e) => {
                let why = format!(
                    "entry {side} skipped: {e} (equity {}, size {size_pct}, leverage {lev}{})",
                    snap.equity,
                    if risk_notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", risk_notes.join("; "))
                    }
                );
                self.notify(
                    account,
                    Priority::Medium,
                    "skipped",
                    || notices::blocked("size", account, sid.as_str(), sym, open_time, &why),
                    now,
                )
                .await;
                return Ok(why);
            }
        };
        if risk_reduced {
            self.notify(
                account,
                Priority::Medium,
                "risk_reduced",
                || notices::risk_reduced(account, &sid, sym, open_time, side, qty, &risk_notes),
                now,
            )
            .await;
        }
        setup?;

        let entry_id = ClientId::derive(account, &sid, sym, open_time, Intent::Entry, 0);
        let key = PositionKey {
            account: account.clone(),
            strategy: sid.clone(),
            symbol: sym.clone(),
        };
        let mut pos = Position {
            key: key.clone(),
            side,
            qty,
            entry_price: ref_price,
            leverage: lev,
            status: PositionStatus::Pending,
            is_manual: false,
            entry_client_id: entry_id.0.clone(),
            signal_open_time: open_time,
            opened_at: now,
            stop_loss: stop
                .map(|sp| orders::stop_price(&filters, side, sp.stop_price(side, ref_price))),
            take_profit: take_profit
                .map(|sp| orders::target_price(&filters, side, sp.target_price(side, ref_price))),
            stop_client_id: None,
            stop_generation: 0,
            partial_exits_done: 0,
            pyramids_done: 0,
            best_price: Some(ref_price),
            entry_fee: Notional::ZERO,
            updated_at: now,
            exit_orders: Vec::new(),
            exit_generation: 0,
        };
        // The reverse path deleted the old record; anything still here is a conflict to surface.
        let existing = self.repo.position(&key).await?.map(|v| v.version);
        let mut version = self.repo.save_position(&pos, existing).await?;
        let margin = |q: Qty, p: Price| q.0 * p.0 / Decimal::from(lev.max(1));
        let slot = ledger.take(margin(qty, ref_price));
        drop(turn);

        let order = MarketOrder {
            symbol: sym.clone(),
            side: side.entry_order_side(),
            qty,
            reduce_only: false,
            client_id: entry_id.clone(),
        };
        let policy = self.before_send(report).await?;
        let sent = self
            .send_adding(ex, &order, policy, (ledger, slot, &margin), report)
            .await;
        let fill = match sent {
            Ok(o) => o,
            Err(e @ ExchangeError::UnknownOutcome { .. }) => {
                // Keep the pending record: the sync job will find the order or drop the record.
                self.notify(
                    account,
                    Priority::Critical,
                    "order_unknown",
                    || notices::order_unknown(&sid, sym, &entry_id, &e),
                    now,
                )
                .await;
                return Err(e.into());
            }
            Err(e) => {
                // The exchange said no (or never executed it): nothing is open, drop the intent.
                self.repo.delete_position(&key, version).await?;
                if let ExchangeError::Rejected { msg, .. } = &e {
                    report.orders_rejected += 1;
                    self.notify(
                        account,
                        Priority::High,
                        "order_rejected",
                        || notices::order_rejected(&sid, sym, &entry_id, side, qty, msg),
                        now,
                    )
                    .await;
                    return Ok(format!(
                        "entry {side} {qty} rejected by the exchange: {msg}"
                    ));
                }
                return Err(e.into());
            }
        };
        report.orders_placed += 1;
        if fill.executed_qty.is_zero() {
            self.repo.delete_position(&key, version).await?;
            return Ok(format!(
                "entry {entry_id} ended {:?} without a fill",
                fill.status
            ));
        }
        apply_fill(&mut pos, &fill, &filters, stop, take_profit);
        pos.status = PositionStatus::Active;
        pos.updated_at = now;
        // The stop goes out right after the fill; the fee is read beside it.
        let (entry_fee, protection) = futures::join!(
            entry_fee(ex, pos.key.symbol.clone(), pos.opened_at, fill.order_id),
            self.protect(ex, &mut pos, &filters, &stored, now, report)
        );
        pos.entry_fee = entry_fee;
        if let Protection::Passed(level) = protection {
            version = self.repo.save_position(&pos, Some(version)).await?;
            self.repo.record_entry(account, &sid, now).await?;
            let (qty, price) = (pos.qty, pos.entry_price);
            let p = Versioned {
                value: pos,
                version,
            };
            let why = self.close_passed_stop(ex, p, level, now, report).await?;
            return Ok(format!("entered {side} {qty} @ {price}, then {why}"));
        }
        if let Protection::Failed(why) = &protection {
            report.errors.push(unprotected(&pos, why));
        }
        if let Some(plan) = self.exit_plan(&pos) {
            if let Err(e) = self
                .reconcile_exits(ex, &mut pos, &filters, &stored, &plan, None, now, report)
                .await
            {
                report.errors.push(format!(
                    "{key}: exit orders not placed after the entry: {e}"
                ));
            }
        }
        version = self.repo.save_position(&pos, Some(version)).await?;
        self.repo.record_entry(account, &sid, now).await?;
        if !self.risk_off && symbol_sharing(&pos, &stored).0 {
            // Another share on this symbol may carry a closePosition stop that would now close
            // this entry too: reshape the symbol's stops to the new sharing. (Alone on the
            // symbol, the entry's own stop was placed in the shape it needs.)
            if let Err(e) = self
                .reshape_stops(ex, account, sym, None, now, report)
                .await
            {
                report.errors.push(format!(
                    "{key}: stops of {sym} not reshaped after the entry: {e}"
                ));
            }
        }
        let _ = version;
        let stop_txt = match (&pos.stop_loss, protection == Protection::Placed) {
            (Some(p), true) => format!("stop {p}"),
            (Some(p), false) => {
                format!("STOP {p} NOT PLACED (UNPROTECTED; the sync places it first)")
            }
            (None, _) => "no stop".to_string(),
        };
        self.notify(
            account,
            Priority::High,
            "entry",
            || notices::entry(&pos, s, lev, &stop_txt, decision),
            now,
        )
        .await;
        let risk_txt = if risk_notes.is_empty() {
            String::new()
        } else {
            format!(" [risk: {}]", risk_notes.join("; "))
        };
        Ok(format!(
            "entered {side} {} @ {} ({stop_txt}){risk_txt}",
            pos.qty, pos.entry_price
        ))
    }

    /// Why an entry of `side` on `sym` must not be sent: a hand-made position on the other side
    /// of the symbol, which one-way mode would net with it (reduce or flip the person's position),
    /// unless `risk.entries_against_manual` allows it.
    fn against_manual(
        &self,
        stored: &[Versioned<Position>],
        sym: &Symbol,
        side: Side,
    ) -> Option<String> {
        if self.config.risk.entries_against_manual {
            return None;
        }
        let m = stored
            .iter()
            .map(|v| &v.value)
            .find(|p| p.is_manual && p.is_open() && &p.key.symbol == sym && p.side != side)?;
        Some(format!(
            "entry {side} not sent: the MANUAL {} {} {sym} on this account would be netted with it (one-way mode) and reduced or flipped; set risk.entries_against_manual = true to allow it",
            m.side, m.qty
        ))
    }

    /// The price an order sent now will fill near: the exchange's last trade, or the decision
    /// candle's close when the exchange cannot say.
    async fn sizing_price(&self, ex: &dyn Exchange, sym: &Symbol, candle_close: Price) -> Price {
        match ex.last_price(sym).await {
            Ok(p) if !p.is_zero() => p,
            Ok(_) => candle_close,
            Err(e) => {
                tracing::warn!(symbol = %sym, error = %e, "last price unavailable; sizing from the candle close");
                candle_close
            }
        }
    }

    /// Set the symbol's margin type and leverage to the configured ones, both at once and
    /// without reading them first: each request is idempotent (-4046 when the margin type is
    /// already that; the same leverage is accepted again), so this costs two weight-1 requests
    /// side by side instead of a read (weight 5) and up to two writes one after another, and
    /// it puts back whatever was changed by hand.
    async fn ensure_symbol_setup(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        lev: u32,
        margin: crate::ports::MarginType,
    ) -> Result<(), EngineError> {
        let (margin_set, lev_set) =
            futures::join!(ex.set_margin_type(sym, margin), ex.set_leverage(sym, lev));
        match margin_set {
            Ok(()) => {}
            Err(e) if e.refusal() == Some(Refusal::MarginTypeUnchanged) => {}
            // A position already open on the symbol (another share, a hand-made one) pins its
            // margin type: trade under it rather than lose the signal; it is only a setting.
            Err(e) if e.refusal() == Some(Refusal::MarginTypeLocked) => {
                tracing::warn!(symbol = %sym, configured = ?margin, "margin type not changed: the symbol holds a position; trading under the exchange's");
            }
            Err(e) => return Err(e.into()),
        }
        lev_set?;
        Ok(())
    }

    /// Send a market order that adds exposure (an entry or a pyramid add) exactly once, and tell
    /// the margin ledger what it took: a fill its margin, a refusal nothing, an unknown outcome
    /// keeps the estimate (it may have filled). A retryable refusal of every send goes through
    /// [`Engine::unsent_order`].
    async fn send_adding(
        &self,
        ex: &dyn Exchange,
        order: &MarketOrder,
        policy: SubmitPolicy,
        (ledger, slot, margin): (
            &MarginLedger,
            margin::Slot,
            &(dyn Fn(Qty, Price) -> Decimal + Sync),
        ),
        report: &mut JobReport,
    ) -> Result<OrderInfo, ExchangeError> {
        let sent = match orders::submit_market(ex, order, policy).await {
            Err(e @ ExchangeError::Retryable { .. }) => {
                self.unsent_order(ex, order, e, report).await
            }
            other => other,
        };
        match &sent {
            Ok(o) => ledger.answered(slot, margin(o.executed_qty, o.avg_price)),
            Err(ExchangeError::UnknownOutcome { .. }) => {}
            Err(_) => ledger.answered(slot, Decimal::ZERO),
        }
        sent
    }

    /// An entry or add whose every send was refused as retryable (a 429 storm past the
    /// submission's budget, say): no send executed, which one lookup by its client id confirms
    /// for the last one. Confirmed, the candle is given back (its claim released although
    /// Acting: nothing of this order is on the exchange, and whatever else the candle did is
    /// already recorded), so the next run decides it again instead of the signal being lost.
    /// Found after all, the order is the fill; the lookup failing leaves the outcome unknown
    /// (an entry's pending record stays for the sync).
    async fn unsent_order(
        &self,
        ex: &dyn Exchange,
        order: &MarketOrder,
        e: ExchangeError,
        report: &mut JobReport,
    ) -> Result<OrderInfo, ExchangeError> {
        match ex
            .order_by_client_id(&order.symbol, order.client_id.as_str())
            .await
        {
            Ok(Some(o)) => Ok(o),
            Ok(None) => {
                if let Some(c) = report.claim.as_mut() {
                    c.acting = false;
                }
                Err(e)
            }
            Err(lookup) => Err(ExchangeError::UnknownOutcome {
                endpoint: "POST /fapi/v1/order".into(),
                detail: format!(
                    "{e}; and the lookup of {} failed: {lookup}",
                    order.client_id
                ),
            }),
        }
    }

    /// Close a position with a reduce-only market order, cancel its protective orders and record
    /// the trade with the realised figures the exchange reports.
    async fn exit(
        &self,
        ex: &dyn Exchange,
        p: Versioned<Position>,
        reason: &str,
        open_time: i64,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let pos = &p.value;
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            open_time,
            Intent::Exit,
            0,
        );
        self.exit_as(ex, p, reason, id, now, report).await
    }

    /// [`Engine::exit`] with the closing order's client id given.
    async fn exit_as(
        &self,
        ex: &dyn Exchange,
        p: Versioned<Position>,
        reason: &str,
        id: ClientId,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        // `ex` trades this position's account.
        let pos = &p.value;
        let filters = ex.symbol_filters(&pos.key.symbol).await?;
        let order = MarketOrder {
            symbol: pos.key.symbol.clone(),
            side: pos.side.exit_order_side(),
            qty: orders::close_qty(&filters, pos.qty),
            reduce_only: self
                .reduces_net(ex, &pos.key.symbol, pos.side, pos.qty)
                .await?,
            client_id: id.clone(),
        };
        let policy = self.before_send(report).await?;
        let fill = match orders::submit_market(ex, &order, policy).await {
            Ok(f) => f,
            Err(e) => {
                if e.refusal().is_some() {
                    report.orders_rejected += 1;
                }
                self.notify(
                    &pos.key.account,
                    Priority::Critical,
                    "exit_failed",
                    || notices::exit_failed(&id, pos, reason, &e),
                    now,
                )
                .await;
                return Err(e.into());
            }
        };
        report.orders_placed += 1;
        self.cancel_protection(ex, pos).await;
        let (exit_price, gross, exit_fee) = self.closing_figures(ex, pos, &fill).await;
        // The order is done: missing income history must not fail the exit (logged, funding 0).
        let (funding, _) = self.position_income(ex, pos, now).await.unwrap_or_else(|e| {
            tracing::warn!(position = %pos.key, error = %e, "funding unknown (income history failed)");
            (Decimal::ZERO, Decimal::ZERO)
        });
        let trade = TradeRecord {
            id: format!("{}:close", pos.entry_client_id),
            account: pos.key.account.clone(),
            strategy: pos.key.strategy.clone(),
            symbol: pos.key.symbol.clone(),
            side: pos.side,
            qty: fill.executed_qty,
            entry_price: pos.entry_price,
            exit_price,
            entry_time: pos.opened_at,
            exit_time: now,
            pnl: Notional(gross - exit_fee - pos.entry_fee.0 + funding),
            fees: Notional(exit_fee + pos.entry_fee.0),
            funding: Notional(funding),
            reason: "signal".into(),
        };
        self.record_trade(&trade).await?;
        self.repo.delete_position(&pos.key, p.version).await?;
        self.notify(
            &pos.key.account,
            Priority::High,
            "exit",
            || notices::exit(&id, pos, &trade, reason),
            now,
        )
        .await;
        Ok(())
    }

    /// Realised figures of one closing order from the exchange's fills: (avg price, gross PnL, fees).
    async fn closing_figures(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        fill: &OrderInfo,
    ) -> (Price, Decimal, Decimal) {
        let trades = ex
            .user_trades(&pos.key.symbol, pos.opened_at - 60_000)
            .await
            .unwrap_or_default();
        let closing: Vec<_> = trades
            .iter()
            .filter(|t| t.order_id == fill.order_id)
            .collect();
        if closing.is_empty() {
            let gross =
                pos.side.sign() * fill.executed_qty.0 * (fill.avg_price.0 - pos.entry_price.0);
            return (fill.avg_price, gross, Decimal::ZERO);
        }
        let q: Decimal = closing.iter().map(|t| t.qty.0).sum();
        let px = closing.iter().map(|t| t.qty.0 * t.price.0).sum::<Decimal>() / q;
        (
            Price(px),
            closing.iter().map(|t| t.realized_pnl.0).sum(),
            closing.iter().map(|t| t.commission.0).sum(),
        )
    }

    /// Close part of a position (a take-profit step) and record it as a trade of its own.
    #[allow(clippy::too_many_arguments)]
    async fn partial_close(
        &self,
        acct: &AccountRuntime,
        mut p: Versioned<Position>,
        fraction: Decimal,
        stage: u8,
        reason: &str,
        now: i64,
        report: &mut JobReport,
    ) -> Result<String, EngineError> {
        if stage <= p.value.partial_exits_done {
            return Ok(format!("hold (take-profit step {stage} already done)"));
        }
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let qty = orders::close_qty(&filters, Qty(p.value.qty.0 * fraction.min(Decimal::ONE)));
        if qty.is_zero() {
            return Ok(format!(
                "take-profit step {stage} skipped: {} × {fraction} is below one lot",
                p.value.qty
            ));
        }
        if qty.0 >= p.value.qty.0 {
            let line = format!("closed: {reason}");
            self.exit(
                acct.exchange.as_ref(),
                p,
                reason,
                Timeframe::M1.last_closed_open(now),
                now,
                report,
            )
            .await?;
            return Ok(line);
        }
        let pos = p.value.clone();
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            Intent::PartialExit,
            stage as u32,
        );
        let order = MarketOrder {
            symbol: pos.key.symbol.clone(),
            side: pos.side.exit_order_side(),
            qty,
            reduce_only: self.reduces_net(ex, &pos.key.symbol, pos.side, qty).await?,
            client_id: id.clone(),
        };
        let policy = self.before_send(report).await?;
        let fill = orders::submit_market(ex, &order, policy).await?;
        report.orders_placed += 1;
        let (exit_price, gross, exit_fee) = self.closing_figures(ex, &pos, &fill).await;
        // The entry fee is shared pro rata between the part closed now and the rest.
        let fee_share = pos.entry_fee.0 * fill.executed_qty.0 / pos.qty.0;
        let trade = TradeRecord {
            id: format!("{}:tp{stage}", pos.entry_client_id),
            account: pos.key.account.clone(),
            strategy: pos.key.strategy.clone(),
            symbol: pos.key.symbol.clone(),
            side: pos.side,
            qty: fill.executed_qty,
            entry_price: pos.entry_price,
            exit_price,
            entry_time: pos.opened_at,
            exit_time: now,
            pnl: Notional(gross - exit_fee - fee_share),
            fees: Notional(exit_fee + fee_share),
            // Funding is attributed once, to the close of what remains.
            funding: Notional::ZERO,
            reason: format!("partial_take_profit_{stage}"),
        };
        self.record_trade(&trade).await?;
        p.value.qty = Qty(pos.qty.0 - fill.executed_qty.0);
        p.value.entry_fee = Notional(pos.entry_fee.0 - fee_share);
        p.value.partial_exits_done = stage;
        p.value.updated_at = now;
        p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
        self.resize_protection(ex, &mut p, &filters, now, report)
            .await?;
        self.notify(
            &pos.key.account,
            Priority::High,
            "partial_exit",
            || notices::partial_exit(&id, &pos, stage, fill.executed_qty, &trade, reason),
            now,
        )
        .await;
        Ok(format!(
            "take-profit step {stage}: closed {} @ {exit_price}",
            fill.executed_qty
        ))
    }

    /// Add to a position (a pyramiding step): `fraction` of the strategy's base entry size.
    #[allow(clippy::too_many_arguments)]
    async fn pyramid(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        mut p: Versioned<Position>,
        fraction: Decimal,
        stage: u8,
        ref_price: Price,
        now: i64,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        if stage <= p.value.pyramids_done {
            return Ok(format!("hold (pyramid step {stage} already done)"));
        }
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let read_at = ledger.mark();
        let mut snap = ex.account().await?;
        let (lev, size_pct) = self.config.effective_sizing(&acct.config, s);
        let ref_price = self.sizing_price(ex, &p.value.key.symbol, ref_price).await;
        // Sized one at a time with the evaluation's other orders (`MarginLedger`).
        let turn = ledger.size().await;
        snap.total_initial_margin = Notional(snap.total_initial_margin.0 + ledger.unseen(read_at));
        let mut raw = snap.equity.0 * size_pct * Decimal::from(lev) * fraction / ref_price.0;
        if !self.risk_off {
            let state = self.observe_account(&acct.config, snap.equity, now).await?;
            let limits = risk::Limits::new(&self.config.risk, &self.config.strategy_risk(&s.name));
            let held_margin = p.value.qty.0 * ref_price.0 / Decimal::from(lev.max(1));
            match risk::pyramid_room(
                &state,
                snap.equity.0,
                snap.total_initial_margin.0,
                held_margin,
                raw,
                ref_price.0,
                lev,
                &limits,
                now,
            ) {
                Ok(room) => raw = room,
                Err(reason) => {
                    let why = format!("pyramid step {stage} blocked by risk: {reason}");
                    self.notify(
                        &acct.config.id,
                        Priority::Medium,
                        "blocked",
                        || {
                            (
                                format!("blocked:{}:{stage}", p.value.entry_client_id),
                                format!("{}: {why}", p.value.key),
                            )
                        },
                        now,
                    )
                    .await;
                    return Ok(why);
                }
            }
        }
        let qty = match orders::market_qty(&filters, raw, ref_price, false) {
            Ok(q) => q,
            Err(e) => return Ok(format!("pyramid step {stage} skipped: {e}")),
        };
        let pos = p.value.clone();
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            Intent::Pyramid,
            stage as u32,
        );
        let order = MarketOrder {
            symbol: pos.key.symbol.clone(),
            side: pos.side.entry_order_side(),
            qty,
            reduce_only: false,
            client_id: id.clone(),
        };
        let margin = |q: Qty, p: Price| q.0 * p.0 / Decimal::from(lev.max(1));
        let slot = ledger.take(margin(qty, ref_price));
        drop(turn);
        let policy = self.before_send(report).await?;
        let sent = self
            .send_adding(ex, &order, policy, (ledger, slot, &margin), report)
            .await;
        let fill = match sent {
            Ok(f) => f,
            Err(ExchangeError::Rejected { msg, .. }) => {
                report.orders_rejected += 1;
                return Ok(format!("pyramid step {stage} rejected: {msg}"));
            }
            Err(e) => return Err(e.into()),
        };
        report.orders_placed += 1;
        let add_fee: Decimal = ex
            .user_trades(&pos.key.symbol, now - 60_000)
            .await
            .map(|ts| {
                ts.iter()
                    .filter(|t| t.order_id == fill.order_id)
                    .map(|t| t.commission.0)
                    .sum()
            })
            .unwrap_or_default();
        let total = pos.qty.0 + fill.executed_qty.0;
        p.value.entry_price =
            Price((pos.qty.0 * pos.entry_price.0 + fill.executed_qty.0 * fill.avg_price.0) / total);
        p.value.qty = Qty(total);
        p.value.entry_fee = Notional(pos.entry_fee.0 + add_fee);
        p.value.pyramids_done = stage;
        p.value.updated_at = now;
        p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
        self.resize_protection(ex, &mut p, &filters, now, report)
            .await?;
        self.notify(
            &pos.key.account,
            Priority::High,
            "pyramid",
            || notices::pyramid(&id, stage, &fill, &p.value),
            now,
        )
        .await;
        Ok(format!(
            "pyramid step {stage}: added {} @ {}",
            fill.executed_qty, fill.avg_price
        ))
    }

    /// Move the protective stop to `price` if that tightens it: the new stop is placed before the
    /// old one is cancelled, so the position is never unprotected.
    async fn move_stop(
        &self,
        acct: &AccountRuntime,
        mut p: Versioned<Position>,
        price: Price,
        reason: &str,
        now: i64,
        report: &mut JobReport,
    ) -> Result<String, EngineError> {
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let side = p.value.side;
        let new = orders::stop_price(&filters, side, price);
        let tightens = match (p.value.stop_loss, side) {
            (None, _) => true,
            (Some(old), Side::Long) => new.0 > old.0,
            (Some(old), Side::Short) => new.0 < old.0,
        };
        if !tightens {
            return Ok(format!(
                "hold (stop {new} would not tighten {:?})",
                p.value.stop_loss
            ));
        }
        let old_id = p.value.stop_client_id.clone();
        let old_stop = p.value.stop_loss;
        p.value.stop_loss = Some(new);
        p.value.stop_generation += 1;
        let others = self.repo.positions(&p.value.key.account).await?;
        match self
            .protect(ex, &mut p.value, &filters, &others, now, report)
            .await
        {
            Protection::Placed => {}
            // The trailing level is already behind the price: that exit has happened.
            Protection::Passed(level) => {
                return self.close_passed_stop(ex, p, level, now, report).await;
            }
            Protection::Failed(e) => {
                return Err(EngineError::StopNotMoved {
                    key: p.value.key.clone(),
                    level: new,
                    detail: e.to_string(),
                });
            }
        }
        if let Some(id) = old_id {
            if let Err(e) =
                orders::cancel_algo(ex, &p.value.key.symbol, &id, self.timing.submit).await
            {
                tracing::warn!(client_algo_id = %id, error = %e, "old stop not cancelled");
            }
        }
        p.value.updated_at = now;
        self.repo.save_position(&p.value, Some(p.version)).await?;
        self.notify(
            &p.value.key.account,
            Priority::Medium,
            "stop_moved",
            || notices::stop_moved(&p.value, old_stop, new, reason),
            now,
        )
        .await;
        Ok(format!("stop moved to {new} ({reason})"))
    }

    /// After a size change: a quantity-based (shared-symbol) stop must match the new size, so it
    /// is replaced; a closePosition stop covers any size and stays.
    async fn resize_protection(
        &self,
        ex: &dyn Exchange,
        p: &mut Versioned<Position>,
        filters: &SymbolFilters,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        // The ladder and the trailing stop follow the new size and average entry.
        let plan = self.exit_plan(&p.value);
        if let Some(plan) = plan.filter(|x| !x.is_empty() || !p.value.exit_orders.is_empty()) {
            let others = self.repo.positions(&p.value.key.account).await?;
            if self
                .reconcile_exits(ex, &mut p.value, filters, &others, &plan, None, now, report)
                .await?
            {
                p.value.updated_at = now;
                p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
            }
        }
        let Some(id) = p.value.stop_client_id.clone() else {
            return Ok(());
        };
        match ex.algo_by_client_id(&id).await? {
            Some(a) if a.status.is_open() && a.close_position => return Ok(()),
            _ => {}
        }
        p.value.stop_generation += 1;
        let others = self.repo.positions(&p.value.key.account).await?;
        // Not placed: the old stop (of the old size) stays and the sync reshapes it later.
        if self
            .protect(ex, &mut p.value, filters, &others, now, report)
            .await
            == Protection::Placed
        {
            if let Err(e) =
                orders::cancel_algo(ex, &p.value.key.symbol, &id, self.timing.submit).await
            {
                tracing::warn!(client_algo_id = %id, error = %e, "old stop not cancelled");
            }
            p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
        }
        Ok(())
    }

    /// Make every open strategy stop on `sym` match the symbol's sharing: closePosition when one
    /// position holds the symbol, this share's quantity otherwise (reduce-only while all shares
    /// are on one side). A stop of the wrong shape is replaced: the new one first, then the old
    /// one cancelled, so the position is never unprotected.
    async fn reshape_stops(
        &self,
        ex: &dyn Exchange,
        account: &AccountId,
        sym: &Symbol,
        known: Option<&[AlgoOrderInfo]>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let all = self.repo.positions(account).await?;
        let on_sym: Vec<&Versioned<Position>> = all
            .iter()
            .filter(|v| &v.value.key.symbol == sym && v.value.is_open())
            .collect();
        let mut filters: Option<SymbolFilters> = None;
        for v in on_sym.iter().filter(|v| !v.value.is_manual) {
            let Some(id) = v.value.stop_client_id.clone() else {
                continue;
            };
            // A missing stop is the sync's check_stop business; only open ones are reshaped.
            let found = match known {
                Some(list) => list.iter().find(|a| a.client_algo_id == id).cloned(),
                None => ex.algo_by_client_id(&id).await?,
            };
            let Some(a) = found.filter(|a| a.status.is_open()) else {
                continue;
            };
            let sharing: Vec<_> = on_sym
                .iter()
                .filter(|o| o.value.key != v.value.key)
                .collect();
            let shared = !sharing.is_empty();
            let reduce_only = shared && sharing.iter().all(|o| o.value.side == v.value.side);
            // A closePosition stop alone on its symbol fits as it is: no trading rules needed.
            if !shared && a.close_position {
                continue;
            }
            if filters.is_none() {
                filters = Some(ex.symbol_filters(sym).await?);
            }
            let f = filters.as_ref().expect("filters just read");
            let want_qty = orders::close_qty(f, v.value.qty);
            if shared
                && !a.close_position
                && a.reduce_only == reduce_only
                && a.qty == Some(want_qty)
            {
                continue;
            }
            let mut p = (*v).clone();
            p.value.stop_generation += 1;
            // Not placed: the old stop stays in force.
            if self.protect(ex, &mut p.value, f, &all, now, report).await != Protection::Placed {
                continue;
            }
            if let Err(e) = orders::cancel_algo(ex, sym, &id, self.timing.submit).await {
                tracing::warn!(client_algo_id = %id, error = %e, "old stop not cancelled");
            }
            p.value.updated_at = now;
            self.repo.save_position(&p.value, Some(p.version)).await?;
            self.notify(
                account,
                Priority::Medium,
                "stop_resized",
                || {
                    (
                        format!(
                            "reshape:{}:{}",
                            p.value.entry_client_id, p.value.stop_generation
                        ),
                        format!(
                            "{}: stop re-placed as {} for the symbol's sharing",
                            p.value.key,
                            if shared {
                                format!(
                                    "{}quantity {want_qty}",
                                    if reduce_only { "reduce-only " } else { "" }
                                )
                            } else {
                                "closePosition".to_string()
                            }
                        ),
                    )
                },
                now,
            )
            .await;
        }
        Ok(())
    }

    /// Cancel a position's protective orders that are still open (no piling up).
    async fn cancel_protection(&self, ex: &dyn Exchange, pos: &Position) {
        let ids = protective_ids(pos);
        for id in ids {
            match ex.algo_by_client_id(&id).await {
                Ok(Some(a)) if a.status.is_open() => {
                    if let Err(e) =
                        orders::cancel_algo(ex, &pos.key.symbol, &id, self.timing.submit).await
                    {
                        tracing::warn!(client_algo_id = %id, error = %e, "could not cancel a protective order");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(client_algo_id = %id, error = %e, "could not look up a protective order")
                }
            }
        }
    }

    /// The exchange-side exits the position's strategy declares: none under `--risk off` (no
    /// protective orders at all) and for MANUAL positions; `None` (leave what is on the exchange
    /// as it is) for a strategy no longer configured or whose parameters no longer build.
    fn exit_plan(&self, pos: &Position) -> Option<strategy::ExitPlan> {
        if self.risk_off || pos.is_manual {
            return Some(strategy::ExitPlan::default());
        }
        let s = self.config.strategy(pos.key.strategy.as_str())?;
        match strategy::build(&s.name, &s.params, &format!("strategies.{}.params", s.name)) {
            Ok(st) => Some(st.exchange_exits()),
            Err(e) => {
                tracing::warn!(position = %pos.key, error = %e, "exit plan unavailable; exit orders left as they are");
                None
            }
        }
    }

    /// Deterministic `clientAlgoId` of an exit order: one per ladder stage (or the trailing stop)
    /// and re-placement generation, so a retry finds the order instead of sending a second one.
    fn exit_client_id(pos: &Position, kind: ExitKind, generation: u32) -> ClientId {
        let (intent, n) = match kind {
            ExitKind::TakeProfit { stage } => (
                Intent::TakeProfitStep,
                generation
                    .saturating_mul(100)
                    .saturating_add(u32::from(stage)),
            ),
            ExitKind::Trailing { .. } => (Intent::TrailingStop, generation),
        };
        ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            intent,
            n,
        )
    }

    /// Make a position's exchange-side exits (take-profit ladder, trailing stop) match `plan` for
    /// its current quantity, average entry and steps done (`orders::plan_exits`): orders that fit
    /// stay, orders that no longer fit are cancelled after their replacements are placed, and
    /// missing ones are placed with fresh deterministic ids. An order that had gone from the
    /// exchange (cancelled by hand) and is re-placed is alerted. When one has fired and the sync
    /// has not recorded it yet, nothing changes. Returns whether `pos.exit_orders` changed.
    #[allow(clippy::too_many_arguments)]
    async fn reconcile_exits(
        &self,
        ex: &dyn Exchange,
        pos: &mut Position,
        filters: &SymbolFilters,
        others: &[Versioned<Position>],
        plan: &strategy::ExitPlan,
        open_ids: Option<&HashSet<&str>>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<bool, EngineError> {
        if plan.is_empty() && pos.exit_orders.is_empty() {
            return Ok(false);
        }
        let (want, notes) = orders::plan_exits(
            filters,
            plan,
            pos.side,
            pos.entry_price,
            pos.qty,
            pos.partial_exits_done,
        );
        // Same sharing rule as the stop (see `protect`): reduce-only unless opposite shares.
        let (shared, reduce_only) = symbol_sharing(pos, others);
        let mut live: Vec<ExitOrder> = Vec::new();
        let mut gone: Vec<(ExitOrder, String)> = Vec::new();
        for e in &pos.exit_orders {
            if open_ids.is_some_and(|ids| ids.contains(e.client_id.as_str())) {
                live.push(e.clone());
                continue;
            }
            match ex.algo_by_client_id(&e.client_id).await? {
                Some(a) if a.status.is_open() => live.push(e.clone()),
                Some(a)
                    if matches!(
                        a.status,
                        AlgoStatus::Triggering | AlgoStatus::Triggered | AlgoStatus::Finished
                    ) =>
                {
                    // Fired: the sync records the fill first (`record_exit_fills`).
                    return Ok(false);
                }
                Some(a) => gone.push((e.clone(), format!("{:?}", a.status).to_uppercase())),
                None => gone.push((e.clone(), "unknown to the exchange".into())),
            }
        }
        let fits = |e: &ExitOrder, w: &orders::PlannedExit| {
            e.kind == w.kind
                && e.trigger_price == w.trigger
                && e.reduce_only == reduce_only
                && match w.kind {
                    ExitKind::TakeProfit { .. } => e.qty == w.qty,
                    // Re-placing a trailing stop restarts its tracking of the best price. Held
                    // alone, a larger reduce-only quantity is capped by the exchange at what is
                    // left after a ladder step, so it stays; a shared symbol needs the exact share.
                    ExitKind::Trailing { .. } => {
                        e.qty == w.qty || (!shared && reduce_only && e.qty.0 > w.qty.0)
                    }
                }
        };
        let mut keep: Vec<ExitOrder> = Vec::new();
        let mut todo: Vec<orders::PlannedExit> = Vec::new();
        for w in &want {
            match live.iter().position(|e| fits(e, w)) {
                Some(i) => keep.push(live.remove(i)),
                None => todo.push(*w),
            }
        }
        let stale = live;
        if todo.is_empty() && stale.is_empty() && gone.is_empty() {
            return Ok(false);
        }
        let same_slot = |a: ExitKind, b: ExitKind| match (a, b) {
            (ExitKind::TakeProfit { stage: x }, ExitKind::TakeProfit { stage: y }) => x == y,
            (ExitKind::Trailing { .. }, ExitKind::Trailing { .. }) => true,
            _ => false,
        };
        let describe = |k: ExitKind| match k {
            ExitKind::TakeProfit { stage } => format!("take-profit step {stage}"),
            ExitKind::Trailing { callback_rate } => {
                format!("trailing stop (callback {callback_rate} %)")
            }
        };
        if !todo.is_empty() {
            pos.exit_generation += 1;
            for n in &notes {
                report.lines.push(format!("{}: {n}", pos.key));
            }
        }
        let mut placed = Vec::new();
        for w in todo {
            let id = Self::exit_client_id(pos, w.kind, pos.exit_generation);
            let order = AlgoOrder {
                symbol: pos.key.symbol.clone(),
                side: pos.side.exit_order_side(),
                kind: match w.kind {
                    ExitKind::TakeProfit { .. } => AlgoKind::TakeProfitMarket,
                    ExitKind::Trailing { callback_rate } => {
                        AlgoKind::TrailingStopMarket { callback_rate }
                    }
                },
                trigger_price: Some(w.trigger),
                qty: Some(w.qty),
                close_position: false,
                reduce_only,
                working_type: WorkingType::MarkPrice,
                client_algo_id: id.clone(),
            };
            match orders::submit_algo(ex, &order, self.timing.submit).await {
                Ok(_) => {
                    report.orders_placed += 1;
                    placed.push(ExitOrder {
                        kind: w.kind,
                        client_id: id.0.clone(),
                        trigger_price: w.trigger,
                        qty: w.qty,
                        reduce_only,
                    });
                    if let Some((_, was)) = gone.iter().find(|(g, _)| same_slot(g.kind, w.kind)) {
                        self.notify(
                            &pos.key.account,
                            Priority::High,
                            "exit_replaced",
                            || {
                                (
                                    format!("reexit:{id}"),
                                    format!(
                                        "{}: {} was missing ({was}); re-placed at {} for {}",
                                        pos.key,
                                        describe(w.kind),
                                        w.trigger,
                                        w.qty
                                    ),
                                )
                            },
                            now,
                        )
                        .await;
                    }
                }
                Err(e) => {
                    if e.refusal().is_some() {
                        report.orders_rejected += 1;
                    }
                    let text = format!(
                        "{}: {} at {} for {} could not be placed: {e}; the strategy's at-close rule stays in charge",
                        pos.key,
                        describe(w.kind),
                        w.trigger,
                        w.qty
                    );
                    report.lines.push(text.clone());
                    self.notify(
                        &pos.key.account,
                        Priority::High,
                        "exit_failed",
                        || {
                            (
                                format!(
                                    "exitfail:{}:{}:{}",
                                    pos.entry_client_id,
                                    describe(w.kind),
                                    w.trigger
                                ),
                                text,
                            )
                        },
                        now,
                    )
                    .await;
                }
            }
        }
        for e in &stale {
            if let Err(err) =
                orders::cancel_algo(ex, &pos.key.symbol, &e.client_id, self.timing.submit).await
            {
                tracing::warn!(client_algo_id = %e.client_id, error = %err, "stale exit order not cancelled");
            }
        }
        keep.extend(placed);
        keep.sort_by_key(|e| match e.kind {
            ExitKind::TakeProfit { stage } => u16::from(stage),
            ExitKind::Trailing { .. } => u16::MAX,
        });
        pos.exit_orders = keep;
        Ok(true)
    }

    /// The sync's check of a position's exchange-side exits: re-place what is missing (alerted
    /// when it was cancelled by hand), resize what no longer fits.
    async fn check_exits(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        open_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let Some(plan) = self.exit_plan(&v.value) else {
            return Ok(());
        };
        if plan.is_empty() && v.value.exit_orders.is_empty() {
            return Ok(());
        }
        let filters = ex.symbol_filters(&v.value.key.symbol).await?;
        let others = self.repo.positions(&v.value.key.account).await?;
        let mut p = v.value.clone();
        if self
            .reconcile_exits(
                ex,
                &mut p,
                &filters,
                &others,
                &plan,
                Some(open_ids),
                now,
                report,
            )
            .await?
        {
            p.updated_at = now;
            v.version = self.repo.save_position(&p, Some(v.version)).await?;
            v.value = p;
        }
        Ok(())
    }

    /// Record the exchange-side exits of a strategy position that fired since the last sync, in
    /// the order they filled. A take-profit step that leaves part of the position is a partial
    /// close: its own trade (`<entry id>:tp<stage>`, the same id the at-close fallback uses) with
    /// the realised PnL and fees of its fills from userTrades, the quantity reduced and
    /// `partial_exits_done` moved on so the step never fires twice; a quantity stop (shared
    /// symbol) is resized to what is left and the rest of the ladder stays. A step that closes
    /// what is left, or the trailing stop, closes the position. Returns true when it closed.
    async fn record_exit_fills(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        open_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<bool, EngineError> {
        let mut fired: Vec<(ExitOrder, AlgoOrderInfo)> = Vec::new();
        for e in v
            .value
            .exit_orders
            .iter()
            .filter(|e| !open_ids.contains(e.client_id.as_str()))
        {
            if let Some(a) = ex.algo_by_client_id(&e.client_id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    fired.push((e.clone(), a));
                }
            }
        }
        if fired.is_empty() {
            return Ok(false);
        }
        fired.sort_by_key(|(e, a)| {
            (
                a.update_time,
                match e.kind {
                    ExitKind::TakeProfit { stage } => u16::from(stage),
                    ExitKind::Trailing { .. } => u16::MAX,
                },
            )
        });
        let sym = v.value.key.symbol.clone();
        let trades = ex.user_trades(&sym, v.value.opened_at - 60_000).await?;
        let mut reduced = false;
        for (e, a) in fired {
            v.value.exit_orders.retain(|x| x.client_id != e.client_id);
            let fills: Vec<_> = trades
                .iter()
                .filter(|t| Some(t.order_id) == a.actual_order_id)
                .collect();
            let executed: Decimal = fills.iter().map(|t| t.qty.0).sum();
            if executed.is_zero() {
                tracing::warn!(position = %v.value.key, client_algo_id = %e.client_id, "exit order fired without a fill");
                continue;
            }
            if executed >= v.value.qty.0 {
                let reason = match e.kind {
                    ExitKind::TakeProfit { .. } => "take_profit",
                    ExitKind::Trailing { .. } => "trailing_stop",
                };
                self.record_close(ex, v, Some((reason.to_string(), a)), now)
                    .await?;
                return Ok(true);
            }
            let pos = v.value.clone();
            let exit_price = fills.iter().map(|t| t.qty.0 * t.price.0).sum::<Decimal>() / executed;
            let gross: Decimal = fills.iter().map(|t| t.realized_pnl.0).sum();
            let exit_fee: Decimal = fills.iter().map(|t| t.commission.0).sum();
            // The entry fee is shared pro rata between the part closed now and the rest.
            let fee_share = pos.entry_fee.0 * executed / pos.qty.0;
            let (id, reason, stage) = match e.kind {
                ExitKind::TakeProfit { stage } => (
                    format!("{}:tp{stage}", pos.entry_client_id),
                    format!("partial_take_profit_{stage}"),
                    stage,
                ),
                ExitKind::Trailing { .. } => (
                    format!("{}:trail{}", pos.entry_client_id, a.algo_id),
                    "partial_trailing_stop".to_string(),
                    pos.partial_exits_done,
                ),
            };
            let trade = TradeRecord {
                id,
                account: pos.key.account.clone(),
                strategy: pos.key.strategy.clone(),
                symbol: sym.clone(),
                side: pos.side,
                qty: Qty(executed),
                entry_price: pos.entry_price,
                exit_price: Price(exit_price),
                entry_time: pos.opened_at,
                exit_time: fills.iter().map(|t| t.time).max().unwrap_or(now),
                pnl: Notional(gross - exit_fee - fee_share),
                fees: Notional(exit_fee + fee_share),
                // Funding is attributed once, to the close of what remains.
                funding: Notional::ZERO,
                reason: reason.clone(),
            };
            self.record_trade(&trade).await?;
            v.value.qty = Qty(pos.qty.0 - executed);
            v.value.entry_fee = Notional(pos.entry_fee.0 - fee_share);
            v.value.partial_exits_done = pos.partial_exits_done.max(stage);
            v.value.updated_at = now;
            v.version = self.repo.save_position(&v.value, Some(v.version)).await?;
            reduced = true;
            let text = format!(
                "PARTIAL EXIT {stage} on the exchange ({reason}): {} {executed} of {} {sym} @ {}; PnL {} after fees {}",
                pos.side,
                pos.qty,
                exit_price.round_dp(8).normalize(),
                trade.pnl.0.round_dp(2),
                trade.fees.0.round_dp(2)
            );
            report.lines.push(format!("{}: {text}", pos.key));
            self.notify(
                &pos.key.account,
                Priority::High,
                "partial_exit",
                || (format!("xpartial:{}", e.client_id), text),
                now,
            )
            .await;
        }
        if reduced {
            let filters = ex.symbol_filters(&sym).await?;
            self.resize_protection(ex, v, &filters, now, report).await?;
        }
        Ok(false)
    }

    /// Close every open strategy position of the enabled accounts (or of one account) at market,
    /// cancelling their protective orders and recording the trades. MANUAL positions are never
    /// touched. Used at the end of a backtest and by an emergency stop.
    pub async fn close_positions(
        &self,
        account: Option<&AccountId>,
        reason: &str,
        now: i64,
    ) -> JobReport {
        let mut report = JobReport::default();
        for acct in self
            .accounts
            .iter()
            .filter(|a| a.config.enabled && account.is_none_or(|x| x == &a.config.id))
        {
            let positions = match self.repo.positions(&acct.config.id).await {
                Ok(p) => p,
                Err(e) => {
                    report.errors.push(format!("{}: {e}", acct.config.id));
                    continue;
                }
            };
            for p in positions
                .into_iter()
                .filter(|p| p.value.is_open() && !p.value.is_manual)
            {
                let key = p.value.key.clone();
                match self
                    .exit(
                        acct.exchange.as_ref(),
                        p,
                        reason,
                        Timeframe::M1.last_closed_open(now),
                        now,
                        &mut report,
                    )
                    .await
                {
                    Ok(()) => report.lines.push(format!("{key}: closed ({reason})")),
                    Err(e) => report.errors.push(format!("{key}: {e}")),
                }
            }
        }
        report
    }

    // -----------------------------------------------------------------------------------------
    // sync
    // -----------------------------------------------------------------------------------------

    async fn resolve_pending(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let pos = v.value.clone();
        let account = &pos.key.account;
        match ex
            .order_by_client_id(&pos.key.symbol, &pos.entry_client_id)
            .await?
        {
            Some(o) if o.status.is_final() && !o.executed_qty.is_zero() => {
                let filters = ex.symbol_filters(&pos.key.symbol).await?;
                // Keep the planned stop distance relative to the actual fill.
                let shift = o.avg_price.0 - pos.entry_price.0;
                let mut p = pos.clone();
                p.qty = o.executed_qty;
                p.entry_price = o.avg_price;
                p.best_price = Some(o.avg_price);
                p.stop_loss = pos
                    .stop_loss
                    .map(|s| orders::stop_price(&filters, p.side, Price(s.0 + shift)));
                p.take_profit = pos
                    .take_profit
                    .map(|s| orders::target_price(&filters, p.side, Price(s.0 + shift)));
                p.entry_fee = ex
                    .user_trades(&p.key.symbol, p.opened_at - 60_000)
                    .await
                    .map(|ts| {
                        Notional(
                            ts.iter()
                                .filter(|t| t.order_id == o.order_id)
                                .map(|t| t.commission.0)
                                .sum(),
                        )
                    })
                    .unwrap_or_default();
                p.status = PositionStatus::Active;
                p.updated_at = now;
                // The stop may already exist if the crash came after it was placed.
                let mut protection = Protection::Placed;
                if let Some(stop_id) = self.existing_stop(ex, &p).await? {
                    p.stop_client_id = Some(stop_id);
                } else {
                    let others = self.repo.positions(account).await?;
                    protection = self
                        .protect(ex, &mut p, &filters, &others, now, report)
                        .await;
                }
                if let Protection::Failed(why) = &protection {
                    report.errors.push(unprotected(&p, why));
                }
                // The same deterministic ids as the interrupted run: exits it placed are found.
                if let Some(plan) = self.exit_plan(&p) {
                    let others = self.repo.positions(account).await?;
                    self.reconcile_exits(ex, &mut p, &filters, &others, &plan, None, now, report)
                        .await?;
                }
                v.version = self.repo.save_position(&p, Some(v.version)).await?;
                self.repo
                    .record_entry(account, &p.key.strategy, p.opened_at)
                    .await?;
                v.value = p.clone();
                self.notify(
                    account,
                    Priority::High,
                    "adopted",
                    || notices::adopted_pending(&p),
                    now,
                )
                .await;
                if let Protection::Passed(level) = protection {
                    self.close_passed_stop(ex, v.clone(), level, now, report)
                        .await?;
                    v.value.status = PositionStatus::Closed;
                }
            }
            Some(o) if o.status.is_final() => {
                self.repo.delete_position(&pos.key, v.version).await?;
                v.value.status = PositionStatus::Closed;
                self.notify(
                    account,
                    Priority::Medium,
                    "entry_dropped",
                    || {
                        notices::entry_dropped(
                            &pos,
                            &format!("ended {:?} without a fill", o.status),
                        )
                    },
                    now,
                )
                .await;
            }
            Some(_) => {}
            None => {
                let age = now - pos.updated_at;
                if age > self.config.jobs.pending_timeout_secs as i64 * 1000 {
                    self.repo.delete_position(&pos.key, v.version).await?;
                    v.value.status = PositionStatus::Closed;
                    self.notify(
                        account,
                        Priority::Medium,
                        "entry_dropped",
                        || {
                            notices::entry_dropped(
                                &pos,
                                "never reached the exchange; intent dropped",
                            )
                        },
                        now,
                    )
                    .await;
                }
            }
        }
        Ok(())
    }

    /// Whether the position's stop or take-profit has fired on the exchange (only orders no longer
    /// open are looked up).
    async fn protection_fired(
        &self,
        ex: &dyn Exchange,
        p: &Position,
        open_ids: &HashSet<&str>,
    ) -> Result<bool, EngineError> {
        let ids = stop_and_take_profit_ids(p);
        for id in ids.iter().filter(|id| !open_ids.contains(id.as_str())) {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Whether closing `qty` of a `side` share reduces the exchange's net position. In one-way
    /// mode with two strategies holding opposite shares, closing one share can grow the net the
    /// other way; such an order cannot be reduce-only (Binance rejects it with -2022).
    async fn reduces_net(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        side: Side,
        qty: Qty,
    ) -> Result<bool, EngineError> {
        let net: Decimal = ex
            .positions()
            .await?
            .iter()
            .filter(|x| &x.symbol == sym)
            .map(|x| x.amount)
            .sum();
        Ok(net.signum() == side.sign() && net.abs() >= qty.0)
    }

    /// Whether the exchange's net position on the symbol is exactly what the stored shares (every
    /// strategy's and MANUAL) add up to. When it is not, something happened on the exchange that
    /// the sync job must reconcile before anyone trades that symbol.
    async fn shares_match(&self, ex: &dyn Exchange, p: &Position) -> Result<bool, EngineError> {
        let net: Decimal = ex
            .positions()
            .await?
            .iter()
            .filter(|x| x.symbol == p.key.symbol)
            .map(|x| x.amount)
            .sum();
        let stored: Decimal = self
            .repo
            .positions(&p.key.account)
            .await?
            .iter()
            .filter(|v| v.value.key.symbol == p.key.symbol && v.value.is_open())
            .map(|v| signed(&v.value))
            .sum();
        Ok(net == stored)
    }

    async fn existing_stop(
        &self,
        ex: &dyn Exchange,
        p: &Position,
    ) -> Result<Option<String>, EngineError> {
        let id = ClientId::derive(
            &p.key.account,
            &p.key.strategy,
            &p.key.symbol,
            p.signal_open_time,
            Intent::StopLoss,
            p.stop_generation,
        );
        Ok(match ex.algo_by_client_id(id.as_str()).await? {
            Some(a) if a.status.is_open() => Some(a.client_algo_id),
            _ => None,
        })
    }

    /// A strategy position the exchange no longer holds: find out how it closed, record the trade
    /// with the exchange's realised figures, clean up its protective orders.
    async fn record_exchange_close(
        &self,
        ex: &dyn Exchange,
        v: &Versioned<Position>,
        now: i64,
    ) -> Result<(), EngineError> {
        self.record_close(ex, v, None, now).await
    }

    /// [`Engine::record_exchange_close`], with the order that closed it when already known
    /// (`reason`, the fired algo order); otherwise it is looked for among the stop, the
    /// take-profit and the exit orders.
    async fn record_close(
        &self,
        ex: &dyn Exchange,
        v: &Versioned<Position>,
        known: Option<(String, AlgoOrderInfo)>,
        now: i64,
    ) -> Result<(), EngineError> {
        let pos = &v.value;
        let mut reason = "exchange".to_string();
        let mut close_order: Option<i64> = None;
        let mut stop_info: Option<AlgoOrderInfo> = None;
        if let Some((r, a)) = known {
            reason = r;
            close_order = a.actual_order_id;
            stop_info = Some(a);
        }
        if let Some(id) = pos
            .stop_client_id
            .as_ref()
            .filter(|_| close_order.is_none())
        {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    reason = "stop".into();
                    close_order = a.actual_order_id;
                    stop_info = Some(a);
                }
            }
        }
        let exit_ids: Vec<(ExitKind, &str)> = if close_order.is_none() {
            pos.exit_orders
                .iter()
                .map(|e| (e.kind, e.client_id.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        for (kind, id) in exit_ids {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered)
                    && a.actual_order_id.is_some()
                {
                    reason = match kind {
                        ExitKind::TakeProfit { .. } => "take_profit".into(),
                        ExitKind::Trailing { .. } => "trailing_stop".into(),
                    };
                    close_order = a.actual_order_id;
                    stop_info = Some(a);
                    break;
                }
            }
        }
        if close_order.is_none() && pos.take_profit.is_some() {
            let tp = take_profit_id(pos);
            if let Some(a) = ex.algo_by_client_id(tp.as_str()).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    reason = "take_profit".into();
                    close_order = a.actual_order_id;
                    stop_info = Some(a);
                }
            }
        }
        let trades = ex
            .user_trades(&pos.key.symbol, pos.opened_at - 60_000)
            .await?;
        let exit_side = pos.side.exit_order_side();
        let closing: Vec<_> = trades
            .iter()
            .filter(|t| match close_order {
                Some(id) => t.order_id == id,
                None => t.side == exit_side && t.time >= pos.opened_at && !t.realized_pnl.is_zero(),
            })
            .collect();
        let (exit_price, gross, exit_fee) = if closing.is_empty() {
            let px = stop_info
                .as_ref()
                .and_then(|a| a.actual_price.or(a.trigger_price))
                .unwrap_or(pos.entry_price);
            (
                px,
                pos.side.sign() * pos.qty.0 * (px.0 - pos.entry_price.0),
                Decimal::ZERO,
            )
        } else {
            let q: Decimal = closing.iter().map(|t| t.qty.0).sum();
            let px = closing.iter().map(|t| t.qty.0 * t.price.0).sum::<Decimal>() / q;
            (
                Price(px),
                closing.iter().map(|t| t.realized_pnl.0).sum(),
                closing.iter().map(|t| t.commission.0).sum(),
            )
        };
        let exit_time = closing.iter().map(|t| t.time).max().unwrap_or(now);
        let (funding, clearance) = self.position_income(ex, pos, now).await?;
        // Not our stop or take-profit, and the exchange booked a liquidation clearance fee on the
        // symbol while the position was open: it was liquidated.
        if close_order.is_none() && !clearance.is_zero() {
            reason = "liquidation".into();
        }
        let trade = TradeRecord {
            id: format!("{}:close", pos.entry_client_id),
            account: pos.key.account.clone(),
            strategy: pos.key.strategy.clone(),
            symbol: pos.key.symbol.clone(),
            side: pos.side,
            qty: pos.qty,
            entry_price: pos.entry_price,
            exit_price,
            entry_time: pos.opened_at,
            exit_time,
            pnl: Notional(gross - exit_fee - pos.entry_fee.0 - clearance + funding),
            fees: Notional(exit_fee + pos.entry_fee.0 + clearance),
            funding: Notional(funding),
            reason: reason.clone(),
        };
        self.record_trade(&trade).await?;
        self.cancel_protection(ex, pos).await;
        self.repo.delete_position(&pos.key, v.version).await?;
        let (priority, kind) = if reason == "liquidation" {
            (Priority::Critical, "liquidation")
        } else {
            (Priority::High, "closed_on_exchange")
        };
        self.notify(
            &pos.key.account,
            priority,
            kind,
            || notices::closed_on_exchange(pos, &trade, &reason),
            now,
        )
        .await;
        Ok(())
    }

    /// Funding (this position's share) and liquidation clearance fees the exchange booked on the
    /// position's symbol between its opening and `until`, from the income history. The funding
    /// share is the position's quantity over all tracked open quantity on the symbol.
    async fn position_income(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        until: i64,
    ) -> Result<(Decimal, Decimal), EngineError> {
        let rows = ex.income(pos.opened_at).await?;
        let on_symbol = |kind: &str| {
            rows.iter()
                .filter(|i| {
                    i.symbol.as_ref() == Some(&pos.key.symbol)
                        && i.time >= pos.opened_at
                        && i.time <= until
                        && i.income_type == kind
                })
                .map(|i| i.income.0)
                .sum::<Decimal>()
        };
        let funding_total = on_symbol("FUNDING_FEE");
        let clearance = -on_symbol("INSURANCE_CLEAR");
        if funding_total.is_zero() {
            return Ok((Decimal::ZERO, clearance));
        }
        let held: Decimal = self
            .repo
            .positions(&pos.key.account)
            .await?
            .iter()
            .filter(|v| v.value.key.symbol == pos.key.symbol && v.value.is_open())
            .map(|v| v.value.qty.0)
            .sum();
        let share = if held > pos.qty.0 {
            pos.qty.0 / held
        } else {
            Decimal::ONE
        };
        Ok(((funding_total * share).round_dp(8), clearance))
    }

    /// Fold a fresh equity reading into the account's risk state (peak, day start, MDD level,
    /// daily-loss halt), save it and notify what changed. Returns the state entries are sized from.
    async fn observe_account(
        &self,
        acct: &AccountConfig,
        equity: Notional,
        now: i64,
    ) -> Result<AccountState, EngineError> {
        self.observe_account_then(acct, equity, now, AccountState::clone)
            .await
    }

    /// [`Engine::observe_account`] giving `then` of the state folded instead of a copy of it.
    async fn observe_account_then<R>(
        &self,
        acct: &AccountConfig,
        equity: Notional,
        now: i64,
        then: impl Fn(&AccountState) -> R,
    ) -> Result<R, EngineError> {
        let account = &acct.id;
        let limit = self.config.daily_loss_pct(acct);
        // The typed backend folds in place: nothing can write in between. A state that exists
        // and is unchanged is not written, and is left exactly as it was.
        if let Some(r) = self.repo.fold_account_state(account, |st, existing| {
            let before = risk::Observed::of(st);
            let events = risk::observe_equity_in(st, equity, now, &self.config.risk, limit);
            let write = !existing || risk::Observed::of(st) != before;
            if write {
                st.updated_at = now;
            } else {
                before.restore(st);
            }
            // As the loop below: events are announced only with the write that records them.
            let events = if write { events } else { Vec::new() };
            (write, (then(st), st.day, events))
        }) {
            let (r, day, events) = r?;
            self.announce_risk_events(account, day, events, now).await;
            return Ok(r);
        }
        for _ in 0..3 {
            let current = self.repo.account_state(account).await?;
            let (prev, version) = match current {
                Some(v) => (v.value, Some(v.version)),
                None => (AccountState::default(), None),
            };
            let (mut st, events) =
                risk::observe_equity(&prev, equity, now, &self.config.risk, limit);
            if version.is_some() && st == prev {
                return Ok(then(&st));
            }
            st.updated_at = now;
            match self.repo.save_account_state(account, &st, version).await {
                Ok(_) => {}
                // Another job wrote in between: read its state and fold our reading in again.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
            self.announce_risk_events(account, st.day, events, now)
                .await;
            return Ok(then(&st));
        }
        Err(EngineError::StateContended(account.clone()))
    }

    /// Tell the trader what a written risk fold changed (level, halt, halt lifted).
    async fn announce_risk_events(
        &self,
        account: &AccountId,
        day: i64,
        events: Vec<risk::RiskEvent>,
        now: i64,
    ) {
        for ev in events {
            let (priority, kind, id) = match &ev {
                risk::RiskEvent::MddLevelChanged { to, .. } => (
                    Priority::High,
                    "mdd_level",
                    format!("mdd:{account}:{day}:{to}"),
                ),
                risk::RiskEvent::DailyLossHalt { until, .. } => (
                    Priority::Critical,
                    "daily_loss_limit",
                    format!("halt:{account}:{until}"),
                ),
                risk::RiskEvent::HaltLifted => (
                    Priority::Medium,
                    "daily_loss_reset",
                    format!("unhalt:{account}:{day}"),
                ),
            };
            // Delivered to the trader by the notifier; the log keeps it at info (backtests
            // would otherwise print every level change).
            tracing::info!(%account, event = %ev.describe(), "risk event");
            self.notify(account, priority, kind, || (id, ev.describe()), now)
                .await;
        }
    }

    /// Record a closed trade once and count it once in the account's risk state (consecutive
    /// results, the day's realised PnL). A trade already recorded changes nothing.
    async fn record_trade(&self, t: &TradeRecord) -> Result<bool, EngineError> {
        if !self.repo.record_trade(t).await? {
            return Ok(false);
        }
        self.count_in_strategy_stats(t).await?;
        let hour = self.config.risk.day_start_hour_utc;
        for _ in 0..3 {
            let current = self.repo.account_state(&t.account).await?;
            let (prev, version) = match current {
                Some(v) => (v.value, Some(v.version)),
                None => (AccountState::default(), None),
            };
            let Some(st) = risk::apply_trade(&prev, &t.id, t.pnl, t.exit_time, hour) else {
                return Ok(true);
            };
            match self.repo.save_account_state(&t.account, &st, version).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(trade = %t.id, "trade recorded but not counted in the account state (concurrent writers)");
        Ok(true)
    }

    /// Count a newly recorded trade in its strategy's stats item (what entries are sized from).
    /// A missing or differently sized window is rebuilt from the trade records instead.
    async fn count_in_strategy_stats(&self, t: &TradeRecord) -> Result<(), EngineError> {
        let hour = self.config.risk.day_start_hour_utc;
        let window = self.stats_window();
        // The typed backend counts in place (the loop below would copy the window on the read
        // and again on the write). A missing or differently sized window goes to the loop.
        if let Some(r) = self
            .repo
            .fold_strategy_stats(&t.account, &t.strategy, |st| {
                if st.keep != window {
                    return (false, false);
                }
                (st.apply(t.exit_time, &t.id, t.pnl.0, hour, window), true)
            })
        {
            if r? == Some(true) {
                return Ok(());
            }
        }
        for _ in 0..3 {
            let current = self.repo.strategy_stats(&t.account, &t.strategy).await?;
            let (st, version) = match current {
                Some(v) if v.value.keep == self.stats_window() => {
                    let mut st = v.value;
                    if !st.apply(t.exit_time, &t.id, t.pnl.0, hour, st.keep) {
                        return Ok(());
                    }
                    (st, Some(v.version))
                }
                other => (
                    self.rebuild_strategy_stats(&t.account, &t.strategy).await?,
                    other.map(|v| v.version),
                ),
            };
            match self
                .repo
                .save_strategy_stats(&t.account, &t.strategy, &st, version)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(trade = %t.id, "trade recorded but not counted in the strategy stats (concurrent writers)");
        Ok(())
    }

    fn stats_window(&self) -> usize {
        self.config.risk.kelly.lookback.max(1)
    }

    async fn rebuild_strategy_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
    ) -> Result<risk::StrategyStats, EngineError> {
        let trades = self.repo.trades(account).await?;
        Ok(risk::StrategyStats::from_trades(
            trades
                .iter()
                .filter(|t| &t.strategy == strategy)
                .map(|t| (t.exit_time, t.id.as_str(), t.pnl.0)),
            self.config.risk.day_start_hour_utc,
            self.stats_window(),
        ))
    }

    /// The strategy's stats window, rebuilt (and saved) from the trade records when missing or
    /// sized for another lookback.
    async fn strategy_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
    ) -> Result<risk::StrategyStats, EngineError> {
        let current = self.repo.strategy_stats(account, strategy).await?;
        if let Some(v) = &current {
            if v.value.keep == self.stats_window() {
                return Ok(v.value.clone());
            }
        }
        let st = self.rebuild_strategy_stats(account, strategy).await?;
        match self
            .repo
            .save_strategy_stats(account, strategy, &st, current.map(|v| v.version))
            .await
        {
            // Somebody else saved it meanwhile: theirs is as good as ours.
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(st)
    }

    /// Everything an entry is sized from, read from the store and (when enabled) the market.
    #[allow(clippy::too_many_arguments)]
    async fn entry_request(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        stored: &[Versioned<Position>],
        snap: &crate::ports::AccountSnapshot,
        price: Price,
        stop: Option<Decimal>,
        lev: u32,
        size_pct: Decimal,
        now: i64,
    ) -> Result<risk::EntryRequest, EngineError> {
        let account = &acct.config.id;
        let sid = StrategyId::new(&s.name);
        let open_positions = stored
            .iter()
            .filter(|p| p.value.is_open() || p.value.status == PositionStatus::Pending)
            .count() as u32;
        let stats = self.strategy_stats(account, &sid).await?;
        let today = risk::trading_day(now, self.config.risk.day_start_hour_utc);
        let strategy_pnl_today = stats.pnl_on(today);
        let mut last_entry = stored
            .iter()
            .filter(|p| p.value.key.strategy == sid && !p.value.is_manual)
            .map(|p| p.value.opened_at)
            .max();
        if let Some(t) = self.repo.last_entry(account, &sid).await? {
            last_entry = Some(last_entry.map_or(t, |x| x.max(t)));
        }
        let rc = &self.config.risk;
        let (mut regime, mut volatility) = (None, None);
        if rc.regime.enabled || rc.volatility.enabled {
            let n = rc.regime.lookback.max(rc.volatility.lookback) as u32 + 1;
            let closes: Vec<Decimal> = acct
                .exchange
                .closed_klines(sym, s.timeframe, n, now)
                .await?
                .iter()
                .map(|c| c.close.0)
                .collect();
            let tail = |k: usize| &closes[closes.len().saturating_sub(k + 1)..];
            if rc.regime.enabled {
                regime = risk::regime_multiplier(tail(rc.regime.lookback), &rc.regime).map(|x| x.0);
            }
            if rc.volatility.enabled {
                volatility = risk::volatility_multiplier(
                    tail(rc.volatility.lookback),
                    s.timeframe.millis(),
                    &rc.volatility,
                )
                .map(|x| x.0);
            }
        }
        Ok(risk::EntryRequest {
            equity: snap.equity.0,
            margin_in_use: snap.total_initial_margin.0,
            open_positions,
            price: price.0,
            stop,
            leverage: lev,
            base_size_pct: size_pct,
            kelly_range: self.config.strategy_risk(&s.name).kelly_range(),
            strategy_pnls: stats.pnls(),
            strategy_pnl_today,
            last_entry,
            regime,
            volatility,
            now,
        })
    }
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
            Price(if r & 8 == 0 {
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
                qty: Qty(Decimal::ONE),
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
                p.best_price.map(|b| b.0.serialize()),
                q.best_price.map(|b| b.0.serialize()),
                "case {case}"
            );
        }
    }
}
