//! Ports: the traits the decision code talks through (exchange, state store, secrets, notifier, clock)
//! and the plain data they exchange. Adapters (Binance REST, paper exchange, SQLite, DynamoDB, SSM,
//! Telegram, …) implement them; the engine, replay and tests only see these traits.

use crate::domain::{
    AccountId, Candle, ClientId, Notional, OrderSide, Price, Qty, Symbol, Timeframe,
};
use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Exchange
// ---------------------------------------------------------------------------------------------

/// Trading rules of one symbol from `exchangeInfo` (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, MIN_NOTIONAL).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct SymbolFilters {
    pub symbol: Symbol,
    pub tick_size: Decimal,
    pub min_price: Decimal,
    pub max_price: Decimal,
    /// LOT_SIZE step (limit and conditional orders).
    pub step_size: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    /// MARKET_LOT_SIZE step and bounds (market orders).
    pub market_step_size: Decimal,
    pub market_min_qty: Decimal,
    pub market_max_qty: Decimal,
    /// MIN_NOTIONAL `notional` (reduce-only orders are exempt).
    pub min_notional: Decimal,
}

/// Account figures from `/fapi/v3/account` (USDT-margined).
#[derive(Clone, PartialEq, Debug, Default, Serialize, Deserialize)]
pub struct AccountSnapshot {
    /// totalMarginBalance: wallet balance + unrealised PnL. This is "equity" everywhere in Albra.
    pub equity: Notional,
    pub wallet_balance: Notional,
    pub available_balance: Notional,
    pub total_initial_margin: Notional,
    pub unrealized_pnl: Notional,
}

/// One row of `/fapi/v3/positionRisk` (one-way mode: positionSide BOTH, signed amount).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct ExchangePosition {
    pub symbol: Symbol,
    /// Signed: > 0 long, < 0 short.
    pub amount: Decimal,
    pub entry_price: Price,
    pub mark_price: Price,
    pub unrealized_pnl: Notional,
    pub liquidation_price: Price,
    pub leverage: Option<u32>,
    pub update_time: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MarginType {
    Isolated,
    Crossed,
}

/// `/fapi/v1/symbolConfig` row: what the account has set for a symbol.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct SymbolConfig {
    pub symbol: Symbol,
    pub leverage: u32,
    pub margin_type: MarginType,
}

/// A MARKET order (`newOrderRespType=RESULT`).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct MarketOrder {
    pub symbol: Symbol,
    pub side: OrderSide,
    pub qty: Qty,
    pub reduce_only: bool,
    pub client_id: ClientId,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    New,
    PartiallyFilled,
    Filled,
    Canceled,
    Rejected,
    Expired,
    ExpiredInMatch,
}

impl OrderStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, OrderStatus::New | OrderStatus::PartiallyFilled)
    }
}

/// An order as the exchange reports it (`POST /fapi/v1/order` RESULT or `GET /fapi/v1/order`).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct OrderInfo {
    pub symbol: Symbol,
    pub order_id: i64,
    pub client_id: String,
    pub side: OrderSide,
    pub status: OrderStatus,
    pub orig_qty: Qty,
    pub executed_qty: Qty,
    /// Average fill price (zero when nothing filled).
    pub avg_price: Price,
    pub reduce_only: bool,
    pub update_time: i64,
}

/// Conditional order types; Binance routes these through the Algo Order API.
#[derive(Clone, Copy, PartialEq, Debug, Serialize, Deserialize)]
pub enum AlgoKind {
    StopMarket,
    TakeProfitMarket,
    /// `callback_rate` in percent (Binance: 0.1 – 10).
    TrailingStopMarket {
        callback_rate: Decimal,
    },
}

impl AlgoKind {
    pub fn binance_type(&self) -> &'static str {
        match self {
            AlgoKind::StopMarket => "STOP_MARKET",
            AlgoKind::TakeProfitMarket => "TAKE_PROFIT_MARKET",
            AlgoKind::TrailingStopMarket { .. } => "TRAILING_STOP_MARKET",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkingType {
    MarkPrice,
    ContractPrice,
}

/// A conditional order for `POST /fapi/v1/algoOrder` (algoType=CONDITIONAL).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AlgoOrder {
    pub symbol: Symbol,
    pub side: OrderSide,
    pub kind: AlgoKind,
    /// Trigger price (activation price for trailing stops).
    pub trigger_price: Option<Price>,
    /// None together with `close_position = true`.
    pub qty: Option<Qty>,
    pub close_position: bool,
    pub reduce_only: bool,
    pub working_type: WorkingType,
    pub client_algo_id: ClientId,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlgoStatus {
    New,
    Triggering,
    Triggered,
    Finished,
    Canceled,
    Expired,
    Rejected,
}

impl AlgoStatus {
    /// Still waiting for its trigger on the exchange.
    pub fn is_open(self) -> bool {
        matches!(self, AlgoStatus::New)
    }
}

/// A conditional order as the Algo API reports it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct AlgoOrderInfo {
    pub algo_id: i64,
    pub client_algo_id: String,
    pub symbol: Symbol,
    pub side: OrderSide,
    pub kind: AlgoKind,
    pub status: AlgoStatus,
    pub trigger_price: Option<Price>,
    pub qty: Option<Qty>,
    pub close_position: bool,
    pub reduce_only: bool,
    /// Id of the order created when it triggered (for matching userTrades), if any.
    pub actual_order_id: Option<i64>,
    /// Average price of the triggered order, if the exchange reports it.
    pub actual_price: Option<Price>,
    pub update_time: i64,
}

/// One fill from `/fapi/v1/userTrades`.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct UserTrade {
    pub symbol: Symbol,
    pub id: i64,
    pub order_id: i64,
    pub side: OrderSide,
    pub price: Price,
    pub qty: Qty,
    pub realized_pnl: Notional,
    pub commission: Notional,
    pub commission_asset: String,
    pub time: i64,
}

/// One row of `/fapi/v1/income` (REALIZED_PNL, COMMISSION, FUNDING_FEE, …).
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Income {
    pub symbol: Option<Symbol>,
    pub income_type: String,
    pub income: Notional,
    pub asset: String,
    pub time: i64,
    pub tran_id: i64,
    pub trade_id: Option<String>,
}

/// How an exchange call failed, which decides what the caller may do next.
#[derive(thiserror::Error, Debug)]
pub enum ExchangeError {
    /// Safe to retry the same request after a pause (network failure before sending, 429/418, 5xx
    /// other than an unknown outcome, -1021 after the one resync).
    #[error("{endpoint}: temporary failure ({detail}); retry after {retry_after:?}")]
    Retryable {
        endpoint: String,
        detail: String,
        retry_after: Option<Duration>,
    },
    /// The exchange refused the request; sending it again will not help. `reason` is what the
    /// jobs act on; `msg` is the exchange's own words for people (an adapter may put its own
    /// error code in it).
    #[error("{endpoint}: rejected by the exchange: {msg}")]
    Rejected {
        endpoint: String,
        reason: Refusal,
        msg: String,
    },
    /// The request may or may not have taken effect (timeout after sending, 503 "Unknown error").
    /// An order in this state must be looked up by its client id before anything is resent.
    #[error("{endpoint}: outcome unknown ({detail}); look it up before any retry")]
    UnknownOutcome { endpoint: String, detail: String },
    /// The answer did not parse: the endpoint and a body excerpt say what came back.
    #[error("{endpoint}: unexpected answer ({error}): {excerpt}")]
    Decode {
        endpoint: String,
        error: String,
        excerpt: String,
    },
    /// The candle claim's lease left no time to send the order, so it was not sent (a rerun after
    /// the lease may take the candle over).
    #[error("the candle claim's lease leaves no time to send order {client_id}; nothing sent")]
    SendWindowClosed { client_id: String },
    /// Anything else that retrying cannot fix (bad keys, bad configuration, missing filter).
    #[error("{0}")]
    Fatal(String),
}

impl ExchangeError {
    /// Why the exchange refused the request, when it did.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ExchangeError::Rejected { reason, .. } => Some(*reason),
            _ => None,
        }
    }
}

/// Why an exchange refused a request, in the port's words: each adapter maps its own error codes
/// to these (Binance's live in `albra_adapters::binance::codes`). The jobs decide on these alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not enough margin for the order.
    InsufficientMargin,
    /// The order's notional is below the symbol's minimum.
    BelowMinNotional,
    /// A conditional order whose trigger the market has already passed.
    WouldTriggerImmediately,
    /// The client id is already taken (by an earlier send of the same order).
    DuplicateId,
    /// A reduce-only order that would not reduce the position.
    ReduceOnlyRejected,
    /// A quantity or price off the symbol's step, or outside its limits.
    Precision,
    /// The margin type asked is already the symbol's.
    MarginTypeUnchanged,
    /// The margin type cannot change while the symbol holds a position (a hand-made one, say).
    MarginTypeLocked,
    /// No such order (unknown client id, or already gone).
    UnknownOrder,
    /// The request's timestamp is outside the exchange's receive window (the clocks drifted).
    ClockOutOfWindow,
    /// Anything else the exchange refused: its message says what.
    Other,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::InsufficientMargin => "insufficient margin",
            Refusal::BelowMinNotional => "below the minimum notional",
            Refusal::WouldTriggerImmediately => "would trigger at once",
            Refusal::DuplicateId => "duplicate client id",
            Refusal::ReduceOnlyRejected => "reduce-only refused",
            Refusal::Precision => "quantity or price off the symbol's rules",
            Refusal::MarginTypeUnchanged => "margin type already set",
            Refusal::MarginTypeLocked => "margin type locked by an open position",
            Refusal::UnknownOrder => "unknown order",
            Refusal::ClockOutOfWindow => "timestamp outside the receive window",
            Refusal::Other => "refused",
        })
    }
}

/// One USDⓈ-M futures account on an exchange (live Binance, paper, or a test server).
///
/// Every method is one request's worth of work; retry and exactly-once policy live in the engine.
#[async_trait]
pub trait Exchange: Send + Sync {
    /// Exchange clock in ms since the epoch.
    async fn server_time(&self) -> Result<i64, ExchangeError>;
    /// Up to `limit` newest **closed** candles at `now` (a candle is closed when open + tf ≤ now),
    /// oldest first. The still-open candle is never returned.
    async fn closed_klines(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError>;
    async fn symbol_filters(&self, symbol: &Symbol) -> Result<SymbolFilters, ExchangeError>;
    /// The latest traded price (`GET /fapi/v1/ticker/price`): the reference for sizing an order
    /// that is about to be sent.
    async fn last_price(&self, symbol: &Symbol) -> Result<Price, ExchangeError>;
    async fn account(&self) -> Result<AccountSnapshot, ExchangeError>;
    /// The account's equity (wallet balance plus unrealised PnL): all the risk fold reads, so an
    /// exchange that can answer it without margins (the paper one, every backtest candle) may.
    async fn equity(&self) -> Result<Notional, ExchangeError> {
        Ok(self.account().await?.equity)
    }
    /// The weight the exchange last said this IP used in the current minute (Binance's
    /// `X-MBX-USED-WEIGHT-1M`); `None` for an exchange that meters nothing (the paper one).
    fn used_weight_1m(&self) -> Option<u32> {
        None
    }
    /// Non-zero positions only.
    async fn positions(&self) -> Result<Vec<ExchangePosition>, ExchangeError>;
    async fn symbol_config(&self, symbol: &Symbol) -> Result<SymbolConfig, ExchangeError>;
    async fn set_leverage(&self, symbol: &Symbol, leverage: u32) -> Result<(), ExchangeError>;
    async fn set_margin_type(
        &self,
        symbol: &Symbol,
        margin: MarginType,
    ) -> Result<(), ExchangeError>;
    async fn place_market(&self, order: &MarketOrder) -> Result<OrderInfo, ExchangeError>;
    /// `None` when the exchange does not know the client id (-2013).
    async fn order_by_client_id(
        &self,
        symbol: &Symbol,
        client_id: &str,
    ) -> Result<Option<OrderInfo>, ExchangeError>;
    async fn place_algo(&self, order: &AlgoOrder) -> Result<AlgoOrderInfo, ExchangeError>;
    /// `None` when the exchange does not know the client algo id.
    async fn algo_by_client_id(
        &self,
        client_algo_id: &str,
    ) -> Result<Option<AlgoOrderInfo>, ExchangeError>;
    async fn cancel_algo(&self, symbol: &Symbol, client_algo_id: &str)
        -> Result<(), ExchangeError>;
    /// Regular orders resting on the book (all symbols when `None`). Albra places only market
    /// and conditional orders, so these are limit orders placed by hand; an emergency stop
    /// cancels them too.
    async fn open_orders(&self, symbol: Option<&Symbol>) -> Result<Vec<OrderInfo>, ExchangeError>;
    /// Cancel a resting regular order; [`Refusal::UnknownOrder`] when it is no longer open.
    async fn cancel_order(&self, symbol: &Symbol, client_id: &str) -> Result<(), ExchangeError>;
    /// Conditional orders still waiting for their trigger (all symbols when `None`).
    async fn open_algo_orders(
        &self,
        symbol: Option<&Symbol>,
    ) -> Result<Vec<AlgoOrderInfo>, ExchangeError>;
    async fn user_trades(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<UserTrade>, ExchangeError>;
    /// Orders on `symbol` created at or after `start_time`, oldest first, up to 1000: ours,
    /// hand-made, triggered and liquidation ones, any status (`GET /fapi/v1/allOrders`). The sync
    /// reads their client ids to tell whose each fill is.
    async fn all_orders(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<OrderInfo>, ExchangeError>;
    async fn income(&self, start_time: i64) -> Result<Vec<Income>, ExchangeError>;
}

// ---------------------------------------------------------------------------------------------
// State store
// ---------------------------------------------------------------------------------------------

/// A stored item: a JSON body under (partition key, sort key) with a version for optimistic locking.
#[derive(Clone, PartialEq, Debug)]
pub struct Record {
    pub pk: String,
    pub sk: String,
    /// Starts at 1 on create; every successful put increments it.
    pub version: u64,
    pub body: String,
    /// Epoch seconds after which the item may be deleted (DynamoDB TTL); reads still return it until
    /// the store actually removes it.
    pub expires_at: Option<i64>,
}

/// The condition a write must meet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Expect {
    /// Create only: fail with `Conflict` if the item exists.
    Absent,
    /// Update only the version read: fail with `Conflict` if the item changed or vanished.
    Version(u64),
}

#[derive(thiserror::Error, Debug)]
pub enum StoreError {
    /// The condition failed: somebody else wrote first (or the item already exists).
    #[error("conditional write failed for {pk}/{sk}: {detail}")]
    Conflict {
        pk: String,
        sk: String,
        detail: String,
    },
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    #[error("state store error: {0}")]
    Other(String),
}

impl StoreError {
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict { .. })
    }
}

/// Key/value state with conditional writes. The typed layer (`state` module) builds positions,
/// trades, run markers and account state on top of these five operations, so both implementations
/// (embedded file, DynamoDB) stay small and pass one contract suite.
#[async_trait]
pub trait StateStore: Send + Sync {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Record>, StoreError>;
    /// Write `body` if `expect` holds; returns the new version.
    async fn put(
        &self,
        pk: &str,
        sk: &str,
        body: &str,
        expect: Expect,
        expires_at: Option<i64>,
    ) -> Result<u64, StoreError>;
    /// Delete if `expect` holds (`Expect::Absent` is not meaningful here and is rejected).
    async fn delete(&self, pk: &str, sk: &str, expect: Expect) -> Result<(), StoreError>;
    /// All items of a partition whose sort key starts with `sk_prefix`, ordered by sort key.
    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<Record>, StoreError>;
    /// A short description for logs (`sqlite:./state/albra.db`, `dynamodb:albra-prod`).
    fn describe(&self) -> String;
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

/// A secret string. Debug and Display print `***` so it can never end up in a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The only way to see the value: call sites that send it (signing, headers) are easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}
impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Binance API credentials of one account.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    pub api_key: Secret,
    pub api_secret: Secret,
}

/// Telegram bot credentials.
#[derive(Clone, Debug)]
pub struct TelegramCreds {
    pub bot_token: Secret,
    pub chat_id: String,
}

/// Where an account's keys come from (config `key_source`).
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum KeySource {
    /// Environment / `.env` with a name prefix: `BINANCE` → `BINANCE_API_KEY` + `BINANCE_SECRET_KEY`
    /// (the original system's main-account names); any other prefix `P` → `P_API_KEY` + `P_API_SECRET`.
    Env { prefix: String },
    /// SSM Parameter Store SecureStrings `{prefix}/binance_api_key` and `{prefix}/binance_api_secret`,
    /// default prefix `/albra/{stage}/{account}` (`crate::secrets::default_ssm_prefix`).
    Ssm { prefix: String },
}

#[derive(thiserror::Error, Debug)]
pub enum SecretsError {
    #[error("secret not found: {0}")]
    Missing(String),
    #[error("secrets backend error reading {name}: {detail}")]
    Backend { name: String, detail: String },
}

#[async_trait]
pub trait Secrets: Send + Sync {
    async fn binance_keys(
        &self,
        account: &AccountId,
        source: &KeySource,
    ) -> Result<ApiKeys, SecretsError>;
    /// `None` when Telegram is not configured.
    async fn telegram(&self) -> Result<Option<TelegramCreds>, SecretsError>;
}

// ---------------------------------------------------------------------------------------------
// Notifier and clock
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    Low,
    Medium,
    High,
    Critical,
}

/// Something the trader should hear about. `event_id` is deterministic so a re-run dedupes.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
pub struct Notification {
    pub event_id: String,
    pub account: AccountId,
    pub priority: Priority,
    /// Short machine-readable kind: `entry`, `exit`, `stop_placed`, `manual_found`, `skipped`, …
    pub kind: String,
    pub text: String,
    /// Time of the event (ms since the epoch, the job's `now`).
    pub time: i64,
}

#[async_trait]
pub trait Notifier: Send + Sync {
    /// Deliver one notification. Failures are reported, never fatal to the job that raised it.
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError>;
    /// `false` when notifications are thrown away unread: callers may then skip making them.
    fn enabled(&self) -> bool {
        true
    }
}

/// A notification that did not arrive.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum NotifyError {
    /// A channel did not take it (after its own retries); `detail` says why and never holds a
    /// secret (a bot token travels in Telegram's URLs, so no URL is ever quoted).
    #[error("{channel}: {detail}")]
    Undelivered {
        channel: &'static str,
        detail: String,
    },
    /// Several channels of a fan-out failed.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Several(Vec<NotifyError>),
}

/// The current time in ms since the epoch. Only adapters and binaries read it; decision code gets
/// `now` as an argument.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// Wall clock.
pub struct SystemClock;
impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to: replay, backtests and tests.
#[derive(Default)]
pub struct SimClock(std::sync::atomic::AtomicI64);
impl SimClock {
    pub fn new(t: i64) -> Self {
        SimClock(std::sync::atomic::AtomicI64::new(t))
    }
    pub fn set(&self, t: i64) {
        self.0.store(t, std::sync::atomic::Ordering::SeqCst);
    }
}
impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let k = ApiKeys {
            api_key: Secret::new("AKIAVERYSECRET"),
            api_secret: Secret::new("s3cr3t-value"),
        };
        let dbg = format!("{k:?} {} {}", k.api_key, k.api_secret);
        assert!(!dbg.contains("AKIAVERYSECRET"), "{dbg}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert_eq!(k.api_key.expose(), "AKIAVERYSECRET");
    }
}
