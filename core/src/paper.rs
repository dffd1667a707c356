//! The paper exchange: an in-process [`Exchange`] for replay, backtests and `albra run --paper`.
//!
//! It owns a simulated USDⓈ-M account (one-way mode, USDT-margined): wallet balance, netted
//! positions per symbol, leverage and margin type per symbol, market orders, conditional (algo)
//! orders, user trades and income rows. Prices come from a [`MarketData`] source: recorded candles
//! ([`RecordedMarket`], replay and backtests) or a real exchange's public klines ([`LiveMarket`]).
//!
//! How it behaves, and where it deliberately copies Binance:
//! - **Time** is the [`Clock`]'s (an adapter may read it). Every [`Exchange`] call first *advances*
//!   the account to `clock.now_ms()`: each candle that closed since the previous advance is replayed
//!   in time order against the open conditional orders (see below).
//! - **Market orders** fill at once, whole, at `MarketData::price(now)` moved by the configured
//!   slippage against the taker (buys higher, sells lower), and pay `commission_rate` on the fill's
//!   notional. With [`RecordedMarket`] the price is the open of the candle containing `now`, so an
//!   order sent a few seconds after a close fills at the next candle's open.
//! - **Rejections** carry the port's [`Refusal`] reasons with Binance's messages: a quantity off
//!   the MARKET_LOT_SIZE step or outside its bounds, or a trigger off the tick (`Precision`), a
//!   notional below MIN_NOTIONAL (reduce-only exempt), a reduce-only order that would increase or
//!   flip, insufficient margin, a client id already used, a conditional order that would trigger
//!   immediately. A rejected order leaves no trace (looking it up finds nothing, as on Binance).
//! - **Margin**: initial margin = |amount| × mark / leverage per position; equity = wallet +
//!   unrealised PnL at the latest price; available = equity − initial margin. An order that adds
//!   exposure needs the initial margin after the fill plus its commission and slippage within equity.
//!   Liquidation and funding are not modelled.
//! - **Conditional orders** (STOP_MARKET, TAKE_PROFIT_MARKET, TRAILING_STOP_MARKET) trigger from
//!   each closed candle's high and low at the resolution `MarketData::candles_closed_between`
//!   serves (the recorded timeframe in replay, 1m live). A sell stop fires when low ≤ trigger, a sell
//!   take-profit when high ≥ trigger (mirrored for buys). When a stop and a take-profit could both
//!   fire in one candle the stop fires first (the pessimistic reading of an OHLC bar). A trailing
//!   stop already active fires with the stops when the candle reaches its level from the best price
//!   known before the candle; one that activates or moves in the candle can only fire on the way
//!   back from the candle's extreme, so after the take-profits that extreme crossed. The fill is
//!   at the trigger, or at the candle's open when the open already gapped through it, with slippage
//!   against us. `closePosition` closes the whole position; a reduce-only quantity is capped at the
//!   position. A fired order becomes FINISHED with `actual_order_id` (the market order it created,
//!   findable in userTrades) and `actual_price`.
//! - **Leftover orders**: Binance does not cancel a `closePosition` or reduce-only conditional order
//!   when its position goes flat, and neither does this exchange: it stays NEW and open. While there
//!   is nothing for it to reduce it does nothing when its trigger is reached (it stays NEW), so it
//!   will act on a later position of the same direction — exactly the hazard the sync job must
//!   clean up live, which is why it is kept here.

use crate::data::{resample, CandleSeries};
use crate::domain::{Candle, ClientId, Notional, OrderSide, Price, Qty, Symbol, Timeframe};
use crate::ports::{
    AccountSnapshot, AlgoKind, AlgoOrder, AlgoOrderInfo, AlgoStatus, Clock, Exchange,
    ExchangeError, ExchangePosition, Income, MarginType, MarketOrder, OrderInfo, OrderStatus,
    Refusal, SymbolConfig, SymbolFilters, UserTrade,
};
use crate::store::memory::Fnv;
use async_trait::async_trait;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

// ---------------------------------------------------------------------------------------------
// Market data
// ---------------------------------------------------------------------------------------------

/// Where the paper exchange gets its prices.
#[async_trait]
pub trait MarketData: Send + Sync {
    /// Up to `limit` newest candles of `tf` closed at `now` (open + tf ≤ now), oldest first.
    async fn closed_candles(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError>;
    /// Price a market order fills at, at `now` (before slippage).
    async fn price(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError>;
    /// Candles at the finest resolution that CLOSED in (from, to], oldest first, for stop and
    /// take-profit triggering.
    async fn candles_closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Timeframe, Candle)>, ExchangeError>;
    /// Recorded candles answer at once: the paper exchange then reads them in place instead of
    /// awaiting a future and collecting a list (backtests ask on every candle). Same answers.
    fn as_recorded(&self) -> Option<&RecordedMarket> {
        None
    }
}

fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A series' candles: aggregated here, or a loaded file shared with the caller (a backtest runs
/// many strategies and parameter sets over one file without copying it).
enum Candles {
    Owned(Vec<Candle>),
    Shared(Arc<CandleSeries>),
}

impl std::ops::Deref for Candles {
    type Target = [Candle];
    fn deref(&self) -> &[Candle] {
        match self {
            Candles::Owned(v) => v,
            Candles::Shared(s) => &s.candles,
        }
    }
}

/// Candles of one timeframe with an index of their contiguous runs, so "which candle holds time t"
/// is index arithmetic inside a run and a binary search only across gaps.
struct Indexed {
    tf_ms: i64,
    candles: Candles,
    /// (open time of the run's first candle, index of that candle); runs are separated by gaps.
    runs: Vec<(i64, usize)>,
}

impl Indexed {
    fn new(candles: Candles, tf: Timeframe) -> Self {
        let tf_ms = tf.millis();
        let mut runs = Vec::new();
        for (i, c) in candles.iter().enumerate() {
            if i == 0 || c.open_time != candles[i - 1].open_time + tf_ms {
                runs.push((c.open_time, i));
            }
        }
        Indexed {
            tf_ms,
            candles,
            runs,
        }
    }

    /// [`Indexed::new`] for a loaded series, its runs taken from the gaps the loader found
    /// instead of a scan over every candle (a backtest's file has 51,224 of them, and the scan
    /// was a tenth of a millisecond per run). The gap list is checked first, at the cost of a
    /// binary search per gap: each gap must sit where it says, and together they must account
    /// for every candle missing between the first and the last, which for sorted, distinct,
    /// aligned candles (what a [`CandleSeries`] holds) leaves no other gap. Otherwise: the scan.
    fn of_series(series: Arc<CandleSeries>) -> Self {
        let tf = series.timeframe;
        match runs_from_gaps(&series) {
            Some(runs) => Indexed {
                tf_ms: tf.millis(),
                candles: Candles::Shared(series),
                runs,
            },
            None => Indexed::new(Candles::Shared(series), tf),
        }
    }

    /// Number of candles whose open time is ≤ `t`.
    fn count_open_le(&self, t: i64) -> usize {
        let k = self.runs.partition_point(|&(start, _)| start <= t);
        if k == 0 {
            return 0;
        }
        let (start, idx) = self.runs[k - 1];
        let run_end = self.runs.get(k).map_or(self.candles.len(), |r| r.1);
        let off = ((t - start) / self.tf_ms) as usize + 1;
        (idx + off).min(run_end)
    }
}

/// The runs of `series` (as [`Indexed`] keeps them) read off its gap list, when the list passes
/// the check [`Indexed::of_series`] describes; `None` otherwise.
fn runs_from_gaps(series: &CandleSeries) -> Option<Vec<(i64, usize)>> {
    let tf_ms = series.timeframe.millis();
    let c = &series.candles;
    let (first, last) = (c.first()?.open_time, c.last()?.open_time);
    let mut runs = vec![(first, 0usize)];
    let mut missing = 0i64;
    for g in &series.gaps {
        let skipped = i64::try_from(g.missing_candles).ok()?;
        let next = g.after_open_time + (skipped + 1) * tf_ms;
        let i = c.partition_point(|x| x.open_time < next);
        let before = c.get(i.checked_sub(1)?)?;
        let seam = c.get(i)?.open_time == next && before.open_time == g.after_open_time;
        if !seam || skipped == 0 || next <= runs[runs.len() - 1].0 {
            return None;
        }
        runs.push((next, i));
        missing += skipped;
    }
    let slots = (last - first) / tf_ms + 1;
    (slots - missing == c.len() as i64).then_some(runs)
}

struct Recorded {
    base_tf: Timeframe,
    base: Indexed,
    /// Coarser timeframes, aggregated on first use (complete buckets only).
    coarser: [OnceLock<Indexed>; 5],
}

impl Recorded {
    fn series(&self, symbol: &Symbol, tf: Timeframe) -> Result<&Indexed, ExchangeError> {
        if tf == self.base_tf {
            return Ok(&self.base);
        }
        if tf < self.base_tf {
            return Err(ExchangeError::Fatal(format!(
                "recorded candles for {symbol} are {}; {tf} candles cannot be derived from them",
                self.base_tf
            )));
        }
        let slot = Timeframe::ALL
            .iter()
            .position(|t| *t == tf)
            .expect("every timeframe is in ALL");
        Ok(self.coarser[slot].get_or_init(|| {
            Indexed::new(
                Candles::Owned(resample(&self.base.candles, self.base_tf, tf, true)),
                tf,
            )
        }))
    }
}

/// Market data from recorded candles (replay and backtests). Serves any timeframe at or above the
/// recorded one by aggregating it (cached per timeframe; only complete buckets count as closed).
#[derive(Default)]
pub struct RecordedMarket {
    /// A handful of symbols at most: a list is found faster than a hash is computed.
    symbols: Vec<(Symbol, Recorded)>,
}

impl RecordedMarket {
    pub fn new(symbol: Symbol, series: CandleSeries) -> Self {
        let mut m = RecordedMarket::default();
        m.add(symbol, series);
        m
    }

    /// The candles of one symbol, shared with the caller instead of moved in.
    pub fn shared(symbol: Symbol, series: Arc<CandleSeries>) -> Self {
        let mut m = RecordedMarket::default();
        let tf = series.timeframe;
        m.insert_indexed(symbol, tf, Indexed::of_series(series));
        m
    }

    /// Add (or replace) the candles of another symbol.
    pub fn add(&mut self, symbol: Symbol, series: CandleSeries) -> &mut Self {
        self.insert(symbol, series.timeframe, Candles::Owned(series.candles));
        self
    }

    fn insert(&mut self, symbol: Symbol, tf: Timeframe, candles: Candles) {
        self.insert_indexed(symbol, tf, Indexed::new(candles, tf));
    }

    fn insert_indexed(&mut self, symbol: Symbol, tf: Timeframe, base: Indexed) {
        let rec = Recorded {
            base_tf: tf,
            base,
            coarser: Default::default(),
        };
        match self.symbols.iter_mut().find(|(s, _)| *s == symbol) {
            Some((_, r)) => *r = rec,
            None => self.symbols.push((symbol, rec)),
        }
    }

    fn get(&self, symbol: &Symbol) -> Option<&Recorded> {
        self.symbols
            .iter()
            .find(|(s, _)| s == symbol)
            .map(|(_, r)| r)
    }

    /// Recorded timeframe, first open time and last close time of a symbol's candles.
    pub fn span(&self, symbol: &Symbol) -> Option<(Timeframe, i64, i64)> {
        let r = self.get(symbol)?;
        let first = r.base.candles.first()?;
        let last = r.base.candles.last()?;
        Some((r.base_tf, first.open_time, last.open_time + r.base.tf_ms))
    }

    fn recorded(&self, symbol: &Symbol) -> Result<&Recorded, ExchangeError> {
        self.get(symbol)
            .ok_or_else(|| ExchangeError::Fatal(format!("no recorded candles for {symbol}")))
    }

    /// The open of the recorded candle containing `now` ([`MarketData::price`]).
    pub fn price_at(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError> {
        let r = self.recorded(symbol)?;
        let s = &r.base;
        let n = s.count_open_le(now);
        if n > 0 {
            let c = &s.candles[n - 1];
            if now < c.open_time + s.tf_ms {
                return Ok(c.open);
            }
        }
        let (Some(first), Some(last)) = (s.candles.first(), s.candles.last()) else {
            return Err(ExchangeError::Fatal(format!(
                "no recorded candles for {symbol}"
            )));
        };
        // During an outage nothing trades: an order waits for the first price after it.
        if n > 0 && n < s.candles.len() {
            return Ok(s.candles[n].open);
        }
        // Right after the last recorded close (within one candle), the last close is the price:
        // a backtest closes what is still open there.
        let end = last.open_time + s.tf_ms;
        if n == s.candles.len() && now >= end && now < end + s.tf_ms {
            return Ok(last.close);
        }
        let why = if n == 0 {
            format!(
                "before the recorded data, which starts at {}",
                utc(first.open_time)
            )
        } else if n == s.candles.len() {
            format!(
                "after the end of the recorded data (the last candle closed at {})",
                utc(last.open_time + s.tf_ms)
            )
        } else {
            format!(
                "inside a gap of the recorded data (exchange outage): no candles from {} to {}",
                utc(s.candles[n - 1].open_time + s.tf_ms),
                utc(s.candles[n].open_time)
            )
        };
        Err(ExchangeError::Fatal(format!(
            "{symbol}: no recorded price at {}: {why}",
            utc(now)
        )))
    }

    /// The base candles that closed in (from, to], oldest first, with their timeframe
    /// ([`MarketData::candles_closed_between`], in place).
    pub fn closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<(Timeframe, &[Candle]), ExchangeError> {
        let r = self.recorded(symbol)?;
        let s = &r.base;
        if to <= from {
            return Ok((r.base_tf, &[]));
        }
        // close = open + tf: closed in (from, to] ⇔ open in (from − tf, to − tf].
        let start = s.count_open_le(from - s.tf_ms);
        let end = s.count_open_le(to - s.tf_ms);
        Ok((r.base_tf, &s.candles[start..end.max(start)]))
    }
}

#[async_trait]
impl MarketData for RecordedMarket {
    async fn closed_candles(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        let s = self.recorded(symbol)?.series(symbol, tf)?;
        let end = s.count_open_le(now - tf.millis());
        let start = end.saturating_sub(limit as usize);
        Ok(s.candles[start..end].to_vec())
    }

    async fn price(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError> {
        self.price_at(symbol, now)
    }

    async fn candles_closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Timeframe, Candle)>, ExchangeError> {
        let (tf, candles) = self.closed_between(symbol, from, to)?;
        Ok(candles.iter().map(|c| (tf, *c)).collect())
    }

    fn as_recorded(&self) -> Option<&RecordedMarket> {
        Some(self)
    }
}

/// Market data from a real exchange's public endpoints (for `albra run --paper`): prices and
/// triggers come from closed 1m klines.
pub struct LiveMarket {
    exchange: Arc<dyn Exchange>,
}

/// Binance serves at most this many klines per request.
const MAX_KLINES: i64 = 1500;

impl LiveMarket {
    pub fn new(exchange: Arc<dyn Exchange>) -> Self {
        LiveMarket { exchange }
    }
}

#[async_trait]
impl MarketData for LiveMarket {
    async fn closed_candles(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        self.exchange.closed_klines(symbol, tf, limit, now).await
    }

    /// The close of the newest closed 1m candle.
    async fn price(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError> {
        let k = self
            .exchange
            .closed_klines(symbol, Timeframe::M1, 1, now)
            .await?;
        k.last()
            .map(|c| c.close)
            .ok_or_else(|| ExchangeError::Retryable {
                endpoint: "GET /fapi/v1/klines".into(),
                detail: format!("no closed 1m candle of {symbol} at {}", utc(now)),
                retry_after: None,
            })
    }

    /// Closed 1m candles in (from, to]; at most the newest 1,500 minutes (one klines request).
    async fn candles_closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Timeframe, Candle)>, ExchangeError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let m1 = Timeframe::M1.millis();
        let limit = ((to - from) / m1 + 1).clamp(1, MAX_KLINES) as u32;
        let k = self
            .exchange
            .closed_klines(symbol, Timeframe::M1, limit, to)
            .await?;
        Ok(k.into_iter()
            .filter(|c| {
                let close = c.open_time + m1;
                close > from && close <= to
            })
            .map(|c| (Timeframe::M1, c))
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// Settings of a paper account.
#[derive(Clone, Debug)]
pub struct PaperConfig {
    /// Starting wallet balance (USDT).
    pub initial_balance: Notional,
    /// Fraction of the fill's notional paid on every fill (taker; 0.0004 = 0.04 %).
    pub commission_rate: Decimal,
    /// Fraction the fill moves against the taker (0.0001 = 0.01 %).
    pub slippage: Decimal,
    /// exchangeInfo filters per symbol.
    pub filters: HashMap<Symbol, SymbolFilters>,
    /// Filters for symbols missing from `filters` (its `symbol` is replaced); `None` makes an
    /// unknown symbol a fatal error naming it.
    pub fallback_filters: Option<SymbolFilters>,
    /// Leverage of a symbol until `set_leverage` changes it (Binance's default is 20).
    pub default_leverage: u32,
}

impl Default for PaperConfig {
    fn default() -> Self {
        PaperConfig {
            initial_balance: Notional::new(Decimal::from(10_000)),
            commission_rate: Decimal::new(4, 4),
            slippage: Decimal::new(1, 4),
            filters: realistic_filters(),
            fallback_filters: Some(generous_filters(&Symbol::new("OTHER"))),
            default_leverage: 20,
        }
    }
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("literal decimal")
}

/// BTCUSDT and ETHUSDT perpetual filters as Binance's exchangeInfo reports them (2025).
pub fn realistic_filters() -> HashMap<Symbol, SymbolFilters> {
    let btc = SymbolFilters {
        symbol: Symbol::new("BTCUSDT"),
        tick_size: d("0.10"),
        min_price: d("261.10"),
        max_price: d("809484"),
        step_size: d("0.001"),
        min_qty: d("0.001"),
        max_qty: d("1000"),
        market_step_size: d("0.001"),
        market_min_qty: d("0.001"),
        market_max_qty: d("120"),
        min_notional: d("100"),
    };
    let eth = SymbolFilters {
        symbol: Symbol::new("ETHUSDT"),
        tick_size: d("0.01"),
        min_price: d("39.86"),
        max_price: d("306177"),
        step_size: d("0.001"),
        min_qty: d("0.001"),
        max_qty: d("10000"),
        market_step_size: d("0.001"),
        market_min_qty: d("0.001"),
        market_max_qty: d("2000"),
        min_notional: d("20"),
    };
    [btc, eth]
        .into_iter()
        .map(|f| (f.symbol.clone(), f))
        .collect()
}

/// Permissive filters for any other symbol: 8-decimal ticks and steps, a 5 USDT minimum notional.
pub fn generous_filters(symbol: &Symbol) -> SymbolFilters {
    SymbolFilters {
        symbol: symbol.clone(),
        tick_size: d("0.00000001"),
        min_price: d("0.00000001"),
        max_price: d("100000000"),
        step_size: d("0.00000001"),
        min_qty: d("0.00000001"),
        max_qty: d("100000000"),
        market_step_size: d("0.00000001"),
        market_min_qty: d("0.00000001"),
        market_max_qty: d("100000000"),
        min_notional: d("5"),
    }
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

/// Wallet, non-zero positions (symbol, signed amount, entry price) and open conditional order
/// ids of a paper account: see [`PaperExchange::sync_view`]. Views are equal when these are.
#[derive(Clone, Debug)]
pub struct SyncView {
    pub wallet: Decimal,
    pub positions: Vec<(Symbol, Decimal, Decimal)>,
    pub open_algos: Vec<i64>,
    /// The exchange's change count when the view was taken (see [`SyncView::taken_with`]).
    changes: u64,
}

impl PartialEq for SyncView {
    fn eq(&self, other: &SyncView) -> bool {
        self.wallet == other.wallet
            && self.positions == other.positions
            && self.open_algos == other.open_algos
    }
}

impl SyncView {
    /// Whether both views were taken from one exchange with nothing changed in between: then
    /// they are equal, found without comparing them. `false` says nothing (a change undone
    /// since, or views of two exchanges).
    pub fn taken_with(&self, other: &SyncView) -> bool {
        self.changes == other.changes
    }
}

#[derive(Clone, Copy, Default)]
struct PaperPosition {
    /// Signed: > 0 long, < 0 short.
    amount: Decimal,
    entry: Decimal,
    update_time: i64,
}

/// The order in which conditional orders are tried against one candle.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    /// Stops, and trailing stops already active against the best price known before the candle.
    Stops,
    TakeProfits,
    /// Trailing stops activated or moved by this candle's extreme, firing on the way back.
    Trails,
}

struct Trail {
    /// Callback as a fraction (1 % → 0.01).
    callback: Decimal,
    activated: bool,
    /// Best price since activation: highest for a sell trail, lowest for a buy trail.
    best: Decimal,
}

struct AlgoEntry {
    info: AlgoOrderInfo,
    trail: Option<Trail>,
}

struct State {
    /// Candles that closed at or before this time have been applied to the conditional orders.
    advanced_to: i64,
    wallet: Decimal,
    positions: HashMap<Symbol, PaperPosition, Fnv>,
    configs: HashMap<Symbol, (u32, MarginType), Fnv>,
    orders: Vec<OrderInfo>,
    order_by_client: HashMap<String, usize, Fnv>,
    algos: Vec<AlgoEntry>,
    algo_by_client: HashMap<String, usize, Fnv>,
    /// Indices into `algos` of the orders still NEW (small, so the per-call scan stays cheap).
    open_algos: Vec<usize>,
    /// Counts the changes to what a [`SyncView`] shows: every fill (wallet, positions) and every
    /// conditional order opened, cancelled or finished. Only these methods write those fields.
    /// Each exchange starts at its own multiple of 2^32, so counts of two exchanges never meet.
    changes: u64,
    /// Reused by `on_candle` for the orders it tries.
    scratch: Vec<usize>,
    /// The symbols with open conditional orders, kept between advances (recorded markets).
    algo_symbols: Vec<Symbol>,
    trades: HashMap<Symbol, Vec<UserTrade>, Fnv>,
    income: Vec<Income>,
    /// Latest price seen per symbol (market price, candle close or fill).
    marks: HashMap<Symbol, Decimal, Fnv>,
    next_order_id: i64,
    next_algo_id: i64,
    next_trade_id: i64,
    next_tran_id: i64,
}

const EP_ORDER: &str = "POST /fapi/v1/order";
const EP_ALGO: &str = "POST /fapi/v1/algoOrder";

fn rejected(endpoint: &str, reason: Refusal, msg: impl Into<String>) -> ExchangeError {
    ExchangeError::Rejected {
        endpoint: endpoint.to_string(),
        reason,
        msg: msg.into(),
    }
}

fn sign(side: OrderSide) -> Decimal {
    match side {
        OrderSide::Buy => Decimal::ONE,
        OrderSide::Sell => Decimal::NEGATIVE_ONE,
    }
}

/// Does an order of `side` reduce a position of signed `amount`?
fn reduces(side: OrderSide, amount: Decimal) -> bool {
    match side {
        OrderSide::Sell => amount > Decimal::ZERO,
        OrderSide::Buy => amount < Decimal::ZERO,
    }
}

fn on_step(x: Decimal, step: Decimal) -> bool {
    step.is_zero() || (x % step).is_zero()
}

impl State {
    fn leverage(&self, cfg: &PaperConfig, symbol: &Symbol) -> u32 {
        self.configs
            .get(symbol)
            .map_or(cfg.default_leverage, |c| c.0)
            .max(1)
    }

    fn amount(&self, symbol: &Symbol) -> Decimal {
        self.positions
            .get(symbol)
            .map_or(Decimal::ZERO, |p| p.amount)
    }

    fn mark(&self, symbol: &Symbol, p: &PaperPosition) -> Decimal {
        self.marks.get(symbol).copied().unwrap_or(p.entry)
    }

    /// Unrealised PnL over all positions at the latest prices: [`Self::exposure`]'s first half,
    /// summed the same way.
    fn unrealized_pnl(&self) -> Decimal {
        let mut upnl = Decimal::ZERO;
        for (s, p) in &self.positions {
            if !p.amount.is_zero() {
                upnl += p.amount * (self.mark(s, p) - p.entry);
            }
        }
        upnl
    }

    /// (unrealised PnL, initial margin) over all positions at the latest prices, with `symbol`'s
    /// position replaced by `(amount, mark)` when given (to test an order before filling it).
    fn exposure(
        &self,
        cfg: &PaperConfig,
        replace: Option<(&Symbol, Decimal, Decimal)>,
    ) -> (Decimal, Decimal) {
        let mut upnl = Decimal::ZERO;
        let mut im = Decimal::ZERO;
        for (s, p) in &self.positions {
            let (amount, mark) = match replace {
                Some((rs, a, m)) if rs == s => (a, m),
                _ => (p.amount, self.mark(s, p)),
            };
            if amount.is_zero() {
                continue;
            }
            upnl += amount * (mark - p.entry);
            im += amount.abs() * mark / Decimal::from(self.leverage(cfg, s));
        }
        if let Some((rs, a, m)) = replace {
            if !self.positions.contains_key(rs) && !a.is_zero() {
                im += a.abs() * m / Decimal::from(self.leverage(cfg, rs));
            }
        }
        (upnl, im)
    }

    /// Binance's margin check for an order that adds exposure: after the fill, the initial margin
    /// must fit in equity less this order's commission and slippage cost.
    fn margin_ok(
        &self,
        cfg: &PaperConfig,
        symbol: &Symbol,
        side: OrderSide,
        qty: Decimal,
        mark: Decimal,
        fill: Decimal,
    ) -> bool {
        let old = self.amount(symbol);
        let new = old + sign(side) * qty;
        let adds = new.abs() > old.abs() || (old * new < Decimal::ZERO);
        if !adds {
            return true;
        }
        let (upnl, _) = self.exposure(cfg, None);
        let (_, im_after) = self.exposure(cfg, Some((symbol, new, mark)));
        let cost = fill * qty * cfg.commission_rate + qty * (fill - mark).abs();
        im_after <= self.wallet + upnl - cost
    }

    /// Apply one fill to the position and wallet, record the order, trade and income rows.
    #[allow(clippy::too_many_arguments)]
    fn fill(
        &mut self,
        cfg: &PaperConfig,
        symbol: &Symbol,
        side: OrderSide,
        qty: Decimal,
        price: Decimal,
        reduce_only: bool,
        client_id: String,
        time: i64,
    ) -> OrderInfo {
        let pos = self.positions.entry(symbol.clone()).or_default();
        let signed = sign(side) * qty;
        let mut realized = Decimal::ZERO;
        let mut closed_some = false;
        if pos.amount.is_zero() || (pos.amount > Decimal::ZERO) == (signed > Decimal::ZERO) {
            let held = pos.amount.abs();
            pos.entry = (held * pos.entry + qty * price) / (held + qty);
            pos.amount += signed;
        } else {
            let closing = qty.min(pos.amount.abs());
            let direction = if pos.amount > Decimal::ZERO {
                Decimal::ONE
            } else {
                Decimal::NEGATIVE_ONE
            };
            realized = closing * (price - pos.entry) * direction;
            closed_some = true;
            let flips = qty > pos.amount.abs();
            pos.amount += signed;
            if pos.amount.is_zero() {
                pos.entry = Decimal::ZERO;
            } else if flips {
                pos.entry = price;
            }
        }
        pos.update_time = time;
        let commission = price * qty * cfg.commission_rate;
        self.wallet += realized - commission;
        self.changes += 1;
        self.marks.insert(symbol.clone(), price);

        let order_id = self.next_order_id;
        self.next_order_id += 1;
        let trade_id = self.next_trade_id;
        self.next_trade_id += 1;
        self.trades
            .entry(symbol.clone())
            .or_default()
            .push(UserTrade {
                symbol: symbol.clone(),
                id: trade_id,
                order_id,
                side,
                price: Price::new(price),
                qty: Qty::new(qty),
                realized_pnl: Notional::new(realized),
                commission: Notional::new(commission),
                commission_asset: "USDT".into(),
                time,
            });
        // Binance books a REALIZED_PNL row for fills that reduce a position and a COMMISSION row
        // for every fill.
        if closed_some {
            self.push_income(symbol, "REALIZED_PNL", realized, time, trade_id);
        }
        if !commission.is_zero() {
            self.push_income(symbol, "COMMISSION", -commission, time, trade_id);
        }
        let info = OrderInfo {
            symbol: symbol.clone(),
            order_id,
            client_id: client_id.clone(),
            side,
            status: OrderStatus::Filled,
            orig_qty: Qty::new(qty),
            executed_qty: Qty::new(qty),
            avg_price: Price::new(price),
            reduce_only,
            update_time: time,
        };
        self.order_by_client.insert(client_id, self.orders.len());
        self.orders.push(info.clone());
        info
    }

    fn push_income(&mut self, symbol: &Symbol, kind: &str, amount: Decimal, time: i64, trade: i64) {
        let tran_id = self.next_tran_id;
        self.next_tran_id += 1;
        self.income.push(Income {
            symbol: Some(symbol.clone()),
            income_type: kind.into(),
            income: Notional::new(amount),
            asset: "USDT".into(),
            time,
            tran_id,
            trade_id: Some(trade.to_string()),
        });
    }

    /// Replay one closed candle of `symbol` against its open conditional orders.
    fn on_candle(&mut self, cfg: &PaperConfig, symbol: &Symbol, tf: Timeframe, c: &Candle) {
        // Fills inside the candle are stamped with its last millisecond (Binance's kline close time).
        let time = c.open_time + tf.millis() - 1;
        // A scratch list kept in the state: this runs for every candle a backtest holds orders.
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        ids.extend(
            self.open_algos
                .iter()
                .copied()
                .filter(|&i| &self.algos[i].info.symbol == symbol),
        );
        // Stops (and trailing stops already active) before take-profits: if both could fire in
        // this candle we assume the adverse move came first. A trailing stop that activates or
        // moves in this candle can only fire on the way back from the candle's extreme, so after
        // the take-profits that extreme crossed.
        ids.sort_by_key(|&i| self.algos[i].info.algo_id);
        let slip = cfg.slippage;
        let passes = [Pass::Stops, Pass::TakeProfits, Pass::Trails];
        for (pass, i) in passes
            .into_iter()
            .flat_map(|p| ids.iter().map(move |&i| (p, i)))
        {
            if self.algos[i].info.status != AlgoStatus::New {
                continue;
            }
            let Some(base) = self.trigger(i, c, pass) else {
                continue;
            };
            let a = &self.algos[i].info;
            let (side, algo_id) = (a.side, a.algo_id);
            let amount = self.amount(symbol);
            let qty = if a.close_position {
                reduces(side, amount).then(|| amount.abs())
            } else if a.reduce_only {
                let q = a.qty.map_or(Decimal::ZERO, |q| q.get());
                reduces(side, amount).then(|| q.min(amount.abs()))
            } else {
                a.qty.map(|q| q.get())
            };
            // Nothing to reduce: the order does nothing and stays NEW (see the module docs).
            let Some(qty) = qty.filter(|q| *q > Decimal::ZERO) else {
                continue;
            };
            let reduce = a.close_position || a.reduce_only;
            let fill = match side {
                OrderSide::Buy => base * (Decimal::ONE + slip),
                OrderSide::Sell => base * (Decimal::ONE - slip),
            };
            if !reduce && !self.margin_ok(cfg, symbol, side, qty, base, fill) {
                let a = &mut self.algos[i].info;
                a.status = AlgoStatus::Rejected;
                a.update_time = time;
                continue;
            }
            let order = self.fill(
                cfg,
                symbol,
                side,
                qty,
                fill,
                reduce,
                triggered_client_id(algo_id).0,
                time,
            );
            let a = &mut self.algos[i].info;
            a.status = AlgoStatus::Finished;
            a.actual_order_id = Some(order.order_id);
            a.actual_price = Some(Price::new(fill));
            a.update_time = time;
        }
        match self.marks.get_mut(symbol) {
            Some(m) => *m = c.close.get(),
            None => {
                self.marks.insert(symbol.clone(), c.close.get());
            }
        }
        let algos = &self.algos;
        let open = self.open_algos.len();
        self.open_algos
            .retain(|&i| algos[i].info.status == AlgoStatus::New);
        if self.open_algos.len() != open {
            self.changes += 1;
        }
        self.scratch = ids;
    }

    /// The price (before slippage) at which algo order `i` fires in candle `c` during `pass`, if it
    /// does; updates a trailing stop's state (see [`Pass`]).
    fn trigger(&mut self, i: usize, c: &Candle, pass: Pass) -> Option<Decimal> {
        let (o, h, l, cl) = (c.open.get(), c.high.get(), c.low.get(), c.close.get());
        let entry = &mut self.algos[i];
        let side = entry.info.side;
        let fires_down = |t: Decimal| (l <= t).then(|| if o <= t { o } else { t });
        let fires_up = |t: Decimal| (h >= t).then(|| if o >= t { o } else { t });
        match entry.info.kind {
            AlgoKind::StopMarket | AlgoKind::TakeProfitMarket => {
                let stop = matches!(entry.info.kind, AlgoKind::StopMarket);
                let due = if stop { Pass::Stops } else { Pass::TakeProfits };
                if pass != due {
                    return None;
                }
                let t = entry.info.trigger_price?.get();
                match (side, stop) {
                    (OrderSide::Sell, true) | (OrderSide::Buy, false) => fires_down(t),
                    (OrderSide::Buy, true) | (OrderSide::Sell, false) => fires_up(t),
                }
            }
            AlgoKind::TrailingStopMarket { .. } => {
                let activation = entry.info.trigger_price.map(|p| p.get());
                let tr = entry.trail.as_mut()?;
                let sell = side == OrderSide::Sell;
                let cb = tr.callback;
                let level = |best: Decimal| {
                    if sell {
                        best * (Decimal::ONE - cb)
                    } else {
                        best * (Decimal::ONE + cb)
                    }
                };
                match pass {
                    Pass::TakeProfits => return None,
                    // First against the best price known before this candle…
                    Pass::Stops => {
                        if !tr.activated {
                            return None;
                        }
                        let stop = level(tr.best);
                        return if sell {
                            fires_down(stop)
                        } else {
                            fires_up(stop)
                        };
                    }
                    Pass::Trails => {}
                }
                if !tr.activated {
                    let a = activation?;
                    let reached = if sell { h >= a } else { l <= a };
                    if !reached {
                        return None;
                    }
                    tr.activated = true;
                    tr.best = a;
                }
                // …then the extreme of this candle moves the stop; the close comes after the
                // extreme, so a close beyond the moved stop means the price crossed it on the way.
                tr.best = if sell { tr.best.max(h) } else { tr.best.min(l) };
                let stop = level(tr.best);
                let crossed = if sell { cl <= stop } else { cl >= stop };
                crossed.then_some(stop)
            }
        }
    }
}

/// What one paper account was sent: every MARKET order (those its conditional orders triggered
/// included) and every conditional order, each list in the order the orders were placed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderJournal {
    pub orders: Vec<OrderInfo>,
    pub algos: Vec<AlgoOrderInfo>,
}

/// The header of [`OrderJournal::csv_rows`]: `kind` is `MARKET` or the conditional order's
/// Binance type, `time` its last update (ms), prices and quantities empty when not set.
pub const ORDERS_CSV_HEADER: &str =
    "run,symbol,kind,client_id,side,qty,reduce_only,close_position,trigger_price,callback_rate,status,avg_price,time\n";

impl OrderJournal {
    /// One CSV row per order (MARKET orders first, then conditional ones), labelled `run`.
    pub fn csv_rows(&self, run: &str, out: &mut String) {
        use std::fmt::Write;
        // A status as Binance spells it (its serde name).
        fn text<T: serde::Serialize>(v: &T) -> String {
            serde_json::to_value(v)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }
        for o in &self.orders {
            let _ = writeln!(
                out,
                "{run},{},MARKET,{},{},{},{},false,,,{},{},{}",
                o.symbol,
                o.client_id,
                o.side.as_str(),
                o.orig_qty.get().normalize(),
                o.reduce_only,
                text(&o.status),
                o.avg_price.get().normalize(),
                o.update_time
            );
        }
        for a in &self.algos {
            let callback = match a.kind {
                AlgoKind::TrailingStopMarket { callback_rate } => {
                    callback_rate.normalize().to_string()
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{run},{},{},{},{},{},{},{},{},{callback},{},{},{}",
                a.symbol,
                a.kind.binance_type(),
                a.client_algo_id,
                a.side.as_str(),
                a.qty
                    .map(|q| q.get().normalize().to_string())
                    .unwrap_or_default(),
                a.reduce_only,
                a.close_position,
                a.trigger_price
                    .map(|p| p.get().normalize().to_string())
                    .unwrap_or_default(),
                text(&a.status),
                a.actual_price
                    .map(|p| p.get().normalize().to_string())
                    .unwrap_or_default(),
                a.update_time
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The exchange
// ---------------------------------------------------------------------------------------------

/// An in-process USDⓈ-M futures account (see the module docs for its rules).
pub struct PaperExchange {
    market: Arc<dyn MarketData>,
    clock: Arc<dyn Clock>,
    cfg: PaperConfig,
    state: Mutex<State>,
}

impl PaperExchange {
    pub fn new(market: Arc<dyn MarketData>, clock: Arc<dyn Clock>, cfg: PaperConfig) -> Self {
        let now = clock.now_ms();
        let state = State {
            advanced_to: now,
            wallet: cfg.initial_balance.get(),
            positions: HashMap::default(),
            configs: HashMap::default(),
            orders: Vec::new(),
            order_by_client: HashMap::default(),
            algos: Vec::new(),
            algo_by_client: HashMap::default(),
            open_algos: Vec::new(),
            changes: {
                static EXCHANGES: std::sync::atomic::AtomicU64 =
                    std::sync::atomic::AtomicU64::new(0);
                EXCHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 32
            },
            scratch: Vec::new(),
            algo_symbols: Vec::new(),
            trades: HashMap::default(),
            income: Vec::new(),
            marks: HashMap::default(),
            // Distinct ranges make an order id mistaken for an algo id (or a trade id) obvious.
            next_order_id: 10_000_001,
            next_algo_id: 20_000_001,
            next_trade_id: 30_000_001,
            next_tran_id: 40_000_001,
        };
        PaperExchange {
            market,
            clock,
            cfg,
            state: Mutex::new(state),
        }
    }

    pub fn config(&self) -> &PaperConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data (every mutation is
        // completed before anything can panic), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn filters(&self, symbol: &Symbol) -> Result<SymbolFilters, ExchangeError> {
        if let Some(f) = self.cfg.filters.get(symbol) {
            return Ok(f.clone());
        }
        match &self.cfg.fallback_filters {
            Some(f) => Ok(SymbolFilters {
                symbol: symbol.clone(),
                ..f.clone()
            }),
            None => Err(ExchangeError::Fatal(format!(
                "paper exchange: no exchange filters configured for {symbol}"
            ))),
        }
    }

    /// Bring the account up to `clock.now_ms()`: replay every candle that closed since the last
    /// advance against the open conditional orders, oldest first. Returns `now`.
    pub async fn advance(&self) -> Result<i64, ExchangeError> {
        let now = self.clock.now_ms();
        if let Some(rec) = self.market.as_recorded() {
            if let Some(now) = self.advance_recorded(rec, now)? {
                return Ok(now);
            }
        }
        let (from, symbols) = {
            let mut st = self.lock();
            if now <= st.advanced_to {
                return Ok(now);
            }
            let mut symbols: Vec<Symbol> = Vec::new();
            for &i in &st.open_algos {
                let s = &st.algos[i].info.symbol;
                if !symbols.contains(s) {
                    symbols.push(s.clone());
                }
            }
            if symbols.is_empty() {
                // Nothing can trigger: skip fetching candles altogether.
                st.advanced_to = now;
                return Ok(now);
            }
            (st.advanced_to, symbols)
        };
        // (close time, index into `symbols`, timeframe, candle)
        let mut candles: Vec<(i64, usize, Timeframe, Candle)> = Vec::new();
        for (k, s) in symbols.iter().enumerate() {
            for (tf, c) in self.market.candles_closed_between(s, from, now).await? {
                candles.push((c.open_time + tf.millis(), k, tf, c));
            }
        }
        candles.sort_by(|a, b| (a.0, &symbols[a.1]).cmp(&(b.0, &symbols[b.1])));
        let mut st = self.lock();
        // A concurrent call may have advanced meanwhile: apply only what it has not.
        let floor = st.advanced_to;
        if now <= floor {
            return Ok(now);
        }
        for (close, k, tf, c) in &candles {
            if *close > floor {
                st.on_candle(&self.cfg, &symbols[*k], *tf, c);
            }
        }
        st.advanced_to = now;
        Ok(now)
    }

    /// [`Self::advance`] over the recorded candles of one symbol, in one lock and in place (a
    /// backtest advances every candle): `Some(now)` when done, `None` when orders are open on
    /// several symbols, which the general path merges by close time.
    fn advance_recorded(
        &self,
        rec: &RecordedMarket,
        now: i64,
    ) -> Result<Option<i64>, ExchangeError> {
        let mut st = self.lock();
        if now <= st.advanced_to {
            return Ok(Some(now));
        }
        if st.open_algos.is_empty() {
            // Nothing can trigger.
            st.advanced_to = now;
            return Ok(Some(now));
        }
        // The symbols with open orders, kept from the last call when they are the same ones.
        let mut symbols = std::mem::take(&mut st.algo_symbols);
        {
            let State {
                open_algos, algos, ..
            } = &*st;
            let used = |s: &Symbol| open_algos.iter().any(|&i| algos[i].info.symbol == *s);
            symbols.retain(|s| used(s));
            for &i in open_algos {
                let s = &algos[i].info.symbol;
                if !symbols.contains(s) {
                    symbols.push(s.clone());
                }
            }
        }
        let from = st.advanced_to;
        let result = match symbols.as_slice() {
            [symbol] => rec.closed_between(symbol, from, now).map(|(tf, candles)| {
                for c in candles {
                    st.on_candle(&self.cfg, symbol, tf, c);
                }
                true
            }),
            // Several symbols interleave by close time: the general path merges them.
            _ => Ok(false),
        };
        st.algo_symbols = symbols;
        if !result? {
            return Ok(None);
        }
        st.advanced_to = now;
        Ok(Some(now))
    }

    /// Every order this account was sent, each list in the order the orders were placed: what
    /// `--orders-out` writes (a differential test compares it with the loopback server's).
    pub fn journal(&self) -> OrderJournal {
        let st = self.lock();
        OrderJournal {
            orders: st.orders.clone(),
            algos: st.algos.iter().map(|a| a.info.clone()).collect(),
        }
    }

    /// What a position sync compares, read in one lock after advancing to the clock. Backtests
    /// run the full sync only when it changed since the last one (a fill, an order placed,
    /// cancelled or triggered, funding); it also gives them the positions to mark equity with.
    pub async fn sync_view(&self) -> Result<SyncView, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        let mut positions: Vec<(Symbol, Decimal, Decimal)> = st
            .positions
            .iter()
            .filter(|(_, p)| !p.amount.is_zero())
            .map(|(s, p)| (s.clone(), p.amount, p.entry))
            .collect();
        positions.sort_by(|a, b| a.0.cmp(&b.0));
        let mut open_algos: Vec<i64> = st
            .open_algos
            .iter()
            .map(|&i| st.algos[i].info.algo_id)
            .collect();
        open_algos.sort_unstable();
        Ok(SyncView {
            wallet: st.wallet,
            positions,
            open_algos,
            changes: st.changes,
        })
    }

    /// Whether the account is still as `view` shows it, after advancing to the clock: the same
    /// comparison as `sync_view() == *view`, read in place (backtests ask every candle); nothing
    /// to compare when nothing changed since this exchange gave `view`.
    pub async fn sync_view_unchanged(&self, view: &SyncView) -> Result<bool, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        if st.changes == view.changes {
            return Ok(true);
        }
        if st.wallet != view.wallet || st.open_algos.len() != view.open_algos.len() {
            return Ok(false);
        }
        let held = st
            .positions
            .values()
            .filter(|p| !p.amount.is_zero())
            .count();
        if held != view.positions.len() {
            return Ok(false);
        }
        let same_positions = view.positions.iter().all(|(sym, amount, entry)| {
            st.positions
                .get(sym)
                .is_some_and(|p| p.amount == *amount && p.entry == *entry)
        });
        // Equal lengths and distinct ids: every open one found in the view's sorted ids is
        // set equality.
        let same_algos = st.open_algos.iter().all(|&i| {
            view.open_algos
                .binary_search(&st.algos[i].info.algo_id)
                .is_ok()
        });
        Ok(same_positions && same_algos)
    }

    /// Refresh the latest price of every symbol with a position; a symbol whose price cannot be had
    /// right now (outside recorded data, a network error live) keeps its last known price.
    async fn refresh_marks(&self, now: i64) {
        if let Some(rec) = self.market.as_recorded() {
            // In place, in one lock (backtests mark every candle).
            let mut st = self.lock();
            let State {
                positions, marks, ..
            } = &mut *st;
            for (s, p) in positions.iter() {
                if p.amount.is_zero() {
                    continue;
                }
                if let Ok(price) = rec.price_at(s, now) {
                    match marks.get_mut(s) {
                        Some(m) => *m = price.get(),
                        None => {
                            marks.insert(s.clone(), price.get());
                        }
                    }
                }
            }
            return;
        }
        let symbols: Vec<Symbol> = {
            let st = self.lock();
            st.positions
                .iter()
                .filter(|(_, p)| !p.amount.is_zero())
                .map(|(s, _)| s.clone())
                .collect()
        };
        for s in symbols {
            if let Ok(p) = self.market.price(&s, now).await {
                self.lock().marks.insert(s, p.get());
            }
        }
    }

    fn check_market(
        &self,
        st: &State,
        f: &SymbolFilters,
        order: &MarketOrder,
        price: Decimal,
        fill: Decimal,
    ) -> Result<(), ExchangeError> {
        if st.order_by_client.contains_key(order.client_id.as_str()) {
            return Err(rejected(
                EP_ORDER,
                Refusal::DuplicateId,
                "ClientOrderId is duplicated.",
            ));
        }
        let q = order.qty.get();
        if q <= Decimal::ZERO {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Quantity less than or equal to zero.",
            ));
        }
        if !on_step(q, f.market_step_size) {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Precision is over the maximum defined for this asset.",
            ));
        }
        if q < f.market_min_qty {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Quantity less than min quantity.",
            ));
        }
        if q > f.market_max_qty {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Quantity greater than max quantity.",
            ));
        }
        let amount = st.amount(&order.symbol);
        if order.reduce_only && (!reduces(order.side, amount) || q > amount.abs()) {
            return Err(rejected(
                EP_ORDER,
                Refusal::ReduceOnlyRejected,
                "ReduceOnly Order is rejected.",
            ));
        }
        if !order.reduce_only && q * price < f.min_notional {
            return Err(rejected(
                EP_ORDER,
                Refusal::BelowMinNotional,
                format!(
                    "Order's notional must be no smaller than {} (unless you choose reduce only).",
                    f.min_notional.normalize()
                ),
            ));
        }
        if !order.reduce_only && !st.margin_ok(&self.cfg, &order.symbol, order.side, q, price, fill)
        {
            return Err(rejected(
                EP_ORDER,
                Refusal::InsufficientMargin,
                "Margin is insufficient.",
            ));
        }
        Ok(())
    }

    fn check_algo(
        &self,
        st: &State,
        f: &SymbolFilters,
        order: &AlgoOrder,
        price: Decimal,
    ) -> Result<(), ExchangeError> {
        if st
            .algo_by_client
            .contains_key(order.client_algo_id.as_str())
        {
            return Err(rejected(
                EP_ALGO,
                Refusal::DuplicateId,
                "ClientOrderId is duplicated.",
            ));
        }
        match (order.close_position, order.qty) {
            (true, Some(_)) => {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Other,
                    "Quantity must be zero with closePosition equals true",
                ))
            }
            (false, None) => {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Other,
                    "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
                ))
            }
            (false, Some(q)) => {
                let q = q.get();
                if q <= Decimal::ZERO {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Quantity less than or equal to zero.",
                    ));
                }
                if !on_step(q, f.step_size) {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Precision is over the maximum defined for this asset.",
                    ));
                }
                if q < f.min_qty {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Quantity less than min quantity.",
                    ));
                }
                if q > f.max_qty {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Quantity greater than max quantity.",
                    ));
                }
            }
            (true, None) => {}
        }
        let check_price = |p: Decimal, name: &str| -> Result<(), ExchangeError> {
            if p <= Decimal::ZERO || p < f.min_price {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Precision,
                    format!("{name}: Price less than min price."),
                ));
            }
            if p > f.max_price {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Precision,
                    format!("{name}: Stop price greater than max price."),
                ));
            }
            // Binance's PRICE_FILTER rule: (price − minPrice) % tickSize == 0.
            if !on_step(p - f.min_price, f.tick_size) {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Precision,
                    "Price not increased by tick size.",
                ));
            }
            Ok(())
        };
        match order.kind {
            AlgoKind::StopMarket | AlgoKind::TakeProfitMarket => {
                let Some(t) = order.trigger_price else {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Other,
                        "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.",
                    ));
                };
                check_price(t.get(), "triggerPrice")?;
                let stop = matches!(order.kind, AlgoKind::StopMarket);
                let immediate = match (order.side, stop) {
                    (OrderSide::Sell, true) | (OrderSide::Buy, false) => t.get() >= price,
                    (OrderSide::Buy, true) | (OrderSide::Sell, false) => t.get() <= price,
                };
                if immediate {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::WouldTriggerImmediately,
                        "Order would immediately trigger.",
                    ));
                }
            }
            AlgoKind::TrailingStopMarket { callback_rate } => {
                if callback_rate < Decimal::new(1, 1) || callback_rate > Decimal::from(10) {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Other,
                        "Data sent for parameter 'callbackRate' is not valid.",
                    ));
                }
                if let Some(a) = order.trigger_price {
                    check_price(a.get(), "activatePrice")?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Exchange for PaperExchange {
    async fn server_time(&self) -> Result<i64, ExchangeError> {
        self.advance().await
    }

    async fn last_price(&self, symbol: &Symbol) -> Result<Price, ExchangeError> {
        let now = self.advance().await?;
        self.market.price(symbol, now).await
    }

    async fn closed_klines(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        self.advance().await?;
        self.market.closed_candles(symbol, tf, limit, now).await
    }

    async fn symbol_filters(&self, symbol: &Symbol) -> Result<SymbolFilters, ExchangeError> {
        self.advance().await?;
        self.filters(symbol)
    }

    async fn account(&self) -> Result<AccountSnapshot, ExchangeError> {
        let now = self.advance().await?;
        self.refresh_marks(now).await;
        let st = self.lock();
        let (upnl, im) = st.exposure(&self.cfg, None);
        let equity = st.wallet + upnl;
        Ok(AccountSnapshot {
            equity: Notional::new(equity),
            wallet_balance: Notional::new(st.wallet),
            available_balance: Notional::new((equity - im).max(Decimal::ZERO)),
            total_initial_margin: Notional::new(im),
            unrealized_pnl: Notional::new(upnl),
        })
    }

    async fn equity(&self) -> Result<Notional, ExchangeError> {
        let now = self.advance().await?;
        self.refresh_marks(now).await;
        let st = self.lock();
        Ok(Notional::new(st.wallet + st.unrealized_pnl()))
    }

    async fn positions(&self) -> Result<Vec<ExchangePosition>, ExchangeError> {
        let now = self.advance().await?;
        self.refresh_marks(now).await;
        let st = self.lock();
        let mut out: Vec<ExchangePosition> = st
            .positions
            .iter()
            .filter(|(_, p)| !p.amount.is_zero())
            .map(|(s, p)| {
                let mark = st.mark(s, p);
                ExchangePosition {
                    symbol: s.clone(),
                    amount: p.amount,
                    entry_price: Price::new(p.entry),
                    mark_price: Price::new(mark),
                    unrealized_pnl: Notional::new(p.amount * (mark - p.entry)),
                    // Liquidation is not modelled.
                    liquidation_price: Price::ZERO,
                    leverage: Some(st.leverage(&self.cfg, s)),
                    update_time: p.update_time,
                }
            })
            .collect();
        out.sort_by(|a, b| a.symbol.cmp(&b.symbol));
        Ok(out)
    }

    async fn symbol_config(&self, symbol: &Symbol) -> Result<SymbolConfig, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        let (leverage, margin_type) = st
            .configs
            .get(symbol)
            .copied()
            .unwrap_or((self.cfg.default_leverage, MarginType::Crossed));
        Ok(SymbolConfig {
            symbol: symbol.clone(),
            leverage,
            margin_type,
        })
    }

    async fn set_leverage(&self, symbol: &Symbol, leverage: u32) -> Result<(), ExchangeError> {
        self.advance().await?;
        if !(1..=125).contains(&leverage) {
            return Err(rejected(
                "POST /fapi/v1/leverage",
                Refusal::Other,
                format!("Leverage {leverage} is not valid"),
            ));
        }
        let mut st = self.lock();
        let default = (self.cfg.default_leverage, MarginType::Crossed);
        st.configs.entry(symbol.clone()).or_insert(default).0 = leverage;
        Ok(())
    }

    async fn set_margin_type(
        &self,
        symbol: &Symbol,
        margin: MarginType,
    ) -> Result<(), ExchangeError> {
        self.advance().await?;
        const EP: &str = "POST /fapi/v1/marginType";
        let mut st = self.lock();
        let default = (self.cfg.default_leverage, MarginType::Crossed);
        let current = st.configs.get(symbol).copied().unwrap_or(default);
        if current.1 == margin {
            return Err(rejected(
                EP,
                Refusal::MarginTypeUnchanged,
                "No need to change margin type.",
            ));
        }
        if !st.amount(symbol).is_zero() {
            return Err(rejected(
                EP,
                Refusal::MarginTypeLocked,
                "Margin type cannot be changed if there exists position.",
            ));
        }
        st.configs.insert(symbol.clone(), (current.0, margin));
        Ok(())
    }

    async fn place_market(&self, order: &MarketOrder) -> Result<OrderInfo, ExchangeError> {
        let now = self.advance().await?;
        let f = self.filters(&order.symbol)?;
        let price = self.market.price(&order.symbol, now).await?.get();
        let fill = match order.side {
            OrderSide::Buy => price * (Decimal::ONE + self.cfg.slippage),
            OrderSide::Sell => price * (Decimal::ONE - self.cfg.slippage),
        };
        let mut st = self.lock();
        st.marks.insert(order.symbol.clone(), price);
        self.check_market(&st, &f, order, price, fill)?;
        Ok(st.fill(
            &self.cfg,
            &order.symbol,
            order.side,
            order.qty.get(),
            fill,
            order.reduce_only,
            order.client_id.0.clone(),
            now,
        ))
    }

    async fn order_by_client_id(
        &self,
        symbol: &Symbol,
        client_id: &str,
    ) -> Result<Option<OrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st
            .order_by_client
            .get(client_id)
            .map(|&i| &st.orders[i])
            .filter(|o| &o.symbol == symbol)
            .cloned())
    }

    async fn place_algo(&self, order: &AlgoOrder) -> Result<AlgoOrderInfo, ExchangeError> {
        let now = self.advance().await?;
        let f = self.filters(&order.symbol)?;
        let price = self.market.price(&order.symbol, now).await?.get();
        let mut st = self.lock();
        st.marks.insert(order.symbol.clone(), price);
        self.check_algo(&st, &f, order, price)?;
        let algo_id = st.next_algo_id;
        st.next_algo_id += 1;
        let info = AlgoOrderInfo {
            algo_id,
            client_algo_id: order.client_algo_id.0.clone(),
            symbol: order.symbol.clone(),
            side: order.side,
            kind: order.kind,
            status: AlgoStatus::New,
            trigger_price: order.trigger_price,
            qty: order.qty,
            close_position: order.close_position,
            reduce_only: order.reduce_only,
            actual_order_id: None,
            actual_price: None,
            update_time: now,
        };
        let trail = match order.kind {
            AlgoKind::TrailingStopMarket { callback_rate } => {
                // Without an activation price Binance activates at once, from the current price.
                let activated = match order.trigger_price {
                    None => true,
                    Some(a) => match order.side {
                        OrderSide::Sell => price >= a.get(),
                        OrderSide::Buy => price <= a.get(),
                    },
                };
                Some(Trail {
                    callback: callback_rate / Decimal::from(100),
                    activated,
                    best: price,
                })
            }
            _ => None,
        };
        let idx = st.algos.len();
        st.algos.push(AlgoEntry {
            info: info.clone(),
            trail,
        });
        st.algo_by_client.insert(info.client_algo_id.clone(), idx);
        st.open_algos.push(idx);
        st.changes += 1;
        Ok(info)
    }

    async fn algo_by_client_id(
        &self,
        client_algo_id: &str,
    ) -> Result<Option<AlgoOrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st
            .algo_by_client
            .get(client_algo_id)
            .map(|&i| st.algos[i].info.clone()))
    }

    async fn cancel_algo(
        &self,
        symbol: &Symbol,
        client_algo_id: &str,
    ) -> Result<(), ExchangeError> {
        let now = self.advance().await?;
        let mut st = self.lock();
        let idx = st
            .algo_by_client
            .get(client_algo_id)
            .copied()
            .filter(|&i| {
                let a = &st.algos[i].info;
                &a.symbol == symbol && a.status == AlgoStatus::New
            })
            .ok_or_else(|| {
                rejected(
                    "DELETE /fapi/v1/algoOrder",
                    Refusal::UnknownOrder,
                    "Unknown order sent.",
                )
            })?;
        let a = &mut st.algos[idx].info;
        a.status = AlgoStatus::Canceled;
        a.update_time = now;
        st.open_algos.retain(|&i| i != idx);
        st.changes += 1;
        Ok(())
    }

    async fn open_algo_orders(
        &self,
        symbol: Option<&Symbol>,
    ) -> Result<Vec<AlgoOrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st
            .open_algos
            .iter()
            .map(|&i| &st.algos[i].info)
            .filter(|a| symbol.is_none_or(|s| &a.symbol == s))
            .cloned()
            .collect())
    }

    async fn user_trades(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<UserTrade>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        Ok(st.trades.get(symbol).map_or_else(Vec::new, |t| {
            let from = t.partition_point(|x| x.time < start_time);
            t[from..].to_vec()
        }))
    }

    async fn all_orders(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<OrderInfo>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        // Paper orders fill when created: their update time is their creation time.
        Ok(st
            .orders
            .iter()
            .filter(|o| &o.symbol == symbol && o.update_time >= start_time)
            .cloned()
            .collect())
    }

    async fn income(&self, start_time: i64) -> Result<Vec<Income>, ExchangeError> {
        self.advance().await?;
        let st = self.lock();
        let from = st.income.partition_point(|x| x.time < start_time);
        Ok(st.income[from..].to_vec())
    }
}

/// The client id a fired conditional order's market order carries (`paper-algo-<algoId>`).
pub fn triggered_client_id(algo_id: i64) -> ClientId {
    ClientId(format!("paper-algo-{algo_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::SimClock;
    use rust_decimal_macros::dec;

    const T0: i64 = 1_751_630_400_000; // 2025-07-04 12:00 UTC
    const M15: i64 = 900_000;

    type Row = (Decimal, Decimal, Decimal, Decimal);

    #[test]
    fn a_series_is_indexed_from_its_gap_list_exactly_as_by_the_scan() {
        let tf = Timeframe::H1;
        let h = tf.millis();
        let scan = |s: &CandleSeries| Indexed::new(Candles::Owned(s.candles.clone()), tf).runs;
        let of = |s: CandleSeries| Indexed::of_series(Arc::new(s)).runs;
        // Runs of 3, 1 and 2 candles: one missing after the third, two after the fourth.
        let open: [i64; 6] = [0, 1, 2, 4, 7, 8];
        let candles: Vec<Candle> = open
            .iter()
            .map(|&k| Candle {
                open_time: T0 + k * h,
                open: Price::new(dec!(1)),
                high: Price::new(dec!(1)),
                low: Price::new(dec!(1)),
                close: Price::new(dec!(1)),
                volume: dec!(1),
            })
            .collect();
        let good = CandleSeries::new(candles.clone(), tf);
        assert_eq!(good.gaps.len(), 2);
        assert!(runs_from_gaps(&good).is_some(), "a right list is used");
        assert_eq!(of(good.clone()), scan(&good));
        assert_eq!(scan(&good), vec![(T0, 0), (T0 + 4 * h, 3), (T0 + 7 * h, 4)]);
        // Gap lists that are wrong in any way fall back to the scan, which finds the truth.
        let gap = |after: i64, missing: u64| crate::data::Gap {
            after_open_time: T0 + after * h,
            missing_candles: missing,
        };
        for wrong in [
            vec![],
            vec![gap(2, 1)],
            vec![gap(2, 1), gap(4, 1)],
            vec![gap(2, 1), gap(3, 2)],
            vec![gap(2, 1), gap(4, 2), gap(7, 0)],
            vec![gap(4, 2), gap(2, 1)],
            vec![gap(-1, 0), gap(2, 1), gap(4, 2)],
            vec![gap(8, 1), gap(2, 1), gap(4, 2)],
        ] {
            let s = CandleSeries {
                candles: candles.clone(),
                timeframe: tf,
                gaps: wrong.clone(),
            };
            assert_eq!(runs_from_gaps(&s), None, "{wrong:?}");
            assert_eq!(of(s), scan(&good), "{wrong:?}");
        }
        // The real spot file: fifteen outages, indexed the same both ways.
        let spot = crate::data::load_csv(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-spot-1h.csv"),
        )
        .unwrap();
        assert_eq!(spot.gaps.len(), 15);
        let want = scan(&spot);
        assert_eq!(want.len(), 16);
        assert_eq!(runs_from_gaps(&spot).as_ref(), Some(&want));
        assert_eq!(of(spot), want);
    }

    fn btc() -> Symbol {
        Symbol::new("BTCUSDT")
    }

    /// A few seconds after candle `i` opened (= after candle `i − 1` closed).
    fn at(i: i64) -> i64 {
        T0 + i * M15 + 5_000
    }

    fn series(rows: &[Row], start: i64, tf: Timeframe) -> CandleSeries {
        let candles = rows
            .iter()
            .enumerate()
            .map(|(i, &(o, h, l, c))| Candle {
                open_time: start + i as i64 * tf.millis(),
                open: Price::new(o),
                high: Price::new(h),
                low: Price::new(l),
                close: Price::new(c),
                volume: dec!(1),
            })
            .collect();
        CandleSeries::new(candles, tf)
    }

    const C0: Row = (dec!(50000), dec!(50100), dec!(49900), dec!(50050));
    const C1: Row = (dec!(50060), dec!(50300), dec!(50000), dec!(50200));
    const QUIET: Row = (dec!(50200), dec!(50250), dec!(50100), dec!(50200));

    fn setup_with(rows: &[Row], cfg: PaperConfig) -> (Arc<SimClock>, PaperExchange) {
        let clock = Arc::new(SimClock::new(T0));
        let market = Arc::new(RecordedMarket::new(btc(), series(rows, T0, Timeframe::M15)));
        let ex = PaperExchange::new(market, clock.clone(), cfg);
        (clock, ex)
    }

    fn setup(rows: &[Row]) -> (Arc<SimClock>, PaperExchange) {
        setup_with(rows, PaperConfig::default())
    }

    fn mkt(side: OrderSide, qty: Decimal, id: &str) -> MarketOrder {
        MarketOrder {
            symbol: btc(),
            side,
            qty: Qty::new(qty),
            reduce_only: false,
            client_id: ClientId(id.into()),
        }
    }

    fn reduce(side: OrderSide, qty: Decimal, id: &str) -> MarketOrder {
        MarketOrder {
            reduce_only: true,
            ..mkt(side, qty, id)
        }
    }

    fn algo(side: OrderSide, kind: AlgoKind, trigger: Option<Decimal>, id: &str) -> AlgoOrder {
        AlgoOrder {
            symbol: btc(),
            side,
            kind,
            trigger_price: trigger.map(Price::new),
            qty: None,
            close_position: true,
            reduce_only: false,
            working_type: crate::ports::WorkingType::MarkPrice,
            client_algo_id: ClientId(id.into()),
        }
    }

    fn code(r: Result<impl std::fmt::Debug, ExchangeError>) -> Refusal {
        r.expect_err("expected a rejection")
            .refusal()
            .expect("a Rejected error")
    }

    async fn long_01_at_c1(clock: &SimClock, ex: &PaperExchange) -> OrderInfo {
        clock.set(at(1));
        ex.place_market(&mkt(OrderSide::Buy, dec!(0.1), "entry"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn market_order_fills_at_next_open_with_slippage_and_commission() {
        let (clock, ex) = setup(&[C0, C1, QUIET]);
        let o = long_01_at_c1(&clock, &ex).await;
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(
            o.avg_price,
            Price::new(dec!(50065.006)),
            "c1 open 50060 + 0.01 %"
        );
        assert_eq!(o.executed_qty, Qty::new(dec!(0.1)));
        assert_eq!(o.orig_qty, Qty::new(dec!(0.1)));
        assert_eq!(o.update_time, at(1));

        let acct = ex.account().await.unwrap();
        assert_eq!(acct.wallet_balance, Notional::new(dec!(9997.99739976)));

        let trades = ex.user_trades(&btc(), 0).await.unwrap();
        assert_eq!(trades.len(), 1);
        assert_eq!(trades[0].order_id, o.order_id);
        assert_eq!(trades[0].price, Price::new(dec!(50065.006)));
        assert_eq!(trades[0].commission, Notional::new(dec!(2.00260024)));
        assert_eq!(trades[0].realized_pnl, Notional::ZERO);
        assert_eq!(trades[0].time, at(1));
        assert!(ex.user_trades(&btc(), at(1) + 1).await.unwrap().is_empty());

        let income = ex.income(0).await.unwrap();
        assert_eq!(income.len(), 1, "an opening fill books no REALIZED_PNL");
        assert_eq!(income[0].income_type, "COMMISSION");
        assert_eq!(income[0].income, Notional::new(dec!(-2.00260024)));

        assert_eq!(
            ex.order_by_client_id(&btc(), "entry").await.unwrap(),
            Some(o)
        );
        assert_eq!(ex.order_by_client_id(&btc(), "nope").await.unwrap(), None);
        assert_eq!(
            ex.order_by_client_id(&Symbol::new("ETHUSDT"), "entry")
                .await
                .unwrap(),
            None
        );
        assert_eq!(ex.server_time().await.unwrap(), at(1));
    }

    #[tokio::test]
    async fn netting_realises_pnl_on_reductions_and_flips() {
        let rows = [
            C0,
            C1,
            QUIET,
            (dec!(50500), dec!(50600), dec!(50400), dec!(50500)),
            (dec!(50300), dec!(50400), dec!(50200), dec!(50300)),
        ];
        let cfg = PaperConfig {
            slippage: Decimal::ZERO,
            ..PaperConfig::default()
        };
        let (clock, ex) = setup_with(&rows, cfg);
        clock.set(at(1));
        ex.place_market(&mkt(OrderSide::Buy, dec!(0.1), "a"))
            .await
            .unwrap();
        clock.set(at(2));
        ex.place_market(&mkt(OrderSide::Buy, dec!(0.1), "b"))
            .await
            .unwrap();
        let p = ex.positions().await.unwrap();
        assert_eq!(p[0].amount, dec!(0.2));
        assert_eq!(
            p[0].entry_price,
            Price::new(dec!(50130)),
            "average of 50060 and 50200"
        );

        // Sell 0.3 at 50500: closes 0.2 (+74) and opens a 0.1 short at 50500.
        clock.set(at(3));
        let flip = ex
            .place_market(&mkt(OrderSide::Sell, dec!(0.3), "c"))
            .await
            .unwrap();
        let p = ex.positions().await.unwrap();
        assert_eq!(p[0].amount, dec!(-0.1));
        assert_eq!(p[0].entry_price, Price::new(dec!(50500)));
        let t = ex.user_trades(&btc(), at(3)).await.unwrap();
        assert_eq!(t[0].order_id, flip.order_id);
        assert_eq!(t[0].realized_pnl, Notional::new(dec!(74)));

        // Buy back half the short at 50300: +10, entry unchanged.
        clock.set(at(4));
        ex.place_market(&reduce(OrderSide::Buy, dec!(0.05), "d"))
            .await
            .unwrap();
        let p = ex.positions().await.unwrap();
        assert_eq!(p[0].amount, dec!(-0.05));
        assert_eq!(p[0].entry_price, Price::new(dec!(50500)));

        let realized: Vec<Decimal> = ex
            .income(0)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.income_type == "REALIZED_PNL")
            .map(|i| i.income.get())
            .collect();
        assert_eq!(realized, vec![dec!(74), dec!(10)]);
        // 0.04 % of 5006 + 5020 + 15150 + 2515 = 11.0764 in fees.
        let acct = ex.account().await.unwrap();
        assert_eq!(acct.wallet_balance, Notional::new(dec!(10072.9236)));
        assert_eq!(
            acct.unrealized_pnl,
            Notional::new(dec!(10)),
            "short 0.05 from 50500, marked at 50300"
        );
    }

    #[tokio::test]
    async fn every_market_rejection_uses_binances_code() {
        let (clock, ex) = setup(&[C0, C1, QUIET]);
        clock.set(at(1)); // price 50060
        let buy = |q: Decimal, id: &str| mkt(OrderSide::Buy, q, id);
        assert_eq!(
            code(ex.place_market(&buy(dec!(0.0015), "x1")).await),
            Refusal::Precision
        );
        assert_eq!(
            code(ex.place_market(&buy(dec!(0), "x2")).await),
            Refusal::Precision
        );
        assert_eq!(
            code(ex.place_market(&buy(dec!(121), "x3")).await),
            Refusal::Precision
        );
        assert_eq!(
            code(ex.place_market(&buy(dec!(0.001), "x4")).await),
            Refusal::BelowMinNotional,
            "50.06 USDT < 100"
        );
        assert_eq!(
            code(
                ex.place_market(&reduce(OrderSide::Sell, dec!(0.01), "x5"))
                    .await
            ),
            Refusal::ReduceOnlyRejected,
            "nothing to reduce"
        );
        ex.place_market(&buy(dec!(0.01), "ok1")).await.unwrap();
        assert_eq!(
            code(
                ex.place_market(&reduce(OrderSide::Buy, dec!(0.01), "x6"))
                    .await
            ),
            Refusal::ReduceOnlyRejected,
            "would increase"
        );
        assert_eq!(
            code(
                ex.place_market(&reduce(OrderSide::Sell, dec!(0.02), "x7"))
                    .await
            ),
            Refusal::ReduceOnlyRejected,
            "would flip"
        );
        // Reduce-only is exempt from MIN_NOTIONAL.
        ex.place_market(&reduce(OrderSide::Sell, dec!(0.001), "ok2"))
            .await
            .unwrap();
        assert_eq!(
            code(ex.place_market(&buy(dec!(0.01), "ok1")).await),
            Refusal::DuplicateId
        );
        assert_eq!(
            code(ex.place_market(&buy(dec!(0.01), "ok2")).await),
            Refusal::DuplicateId
        );
        // Leverage 20 on ~10,000 USDT: 4.5 BTC needs 11,263 of margin, 3.9 BTC fits.
        assert_eq!(
            code(ex.place_market(&buy(dec!(4.5), "x8")).await),
            Refusal::InsufficientMargin
        );
        ex.place_market(&buy(dec!(3.9), "ok3")).await.unwrap();
        assert_eq!(
            code(ex.place_market(&buy(dec!(0.5), "x9")).await),
            Refusal::InsufficientMargin,
            "margin already in use counts"
        );
        // Rejected orders leave no trace.
        for id in ["x1", "x4", "x5", "x8", "x9"] {
            assert_eq!(
                ex.order_by_client_id(&btc(), id).await.unwrap(),
                None,
                "{id}"
            );
        }
        assert_eq!(ex.positions().await.unwrap()[0].amount, dec!(3.909));
        assert_eq!(ex.user_trades(&btc(), 0).await.unwrap().len(), 3);

        let none = PaperConfig {
            fallback_filters: None,
            ..PaperConfig::default()
        };
        let (_c, strict) = setup_with(&[C0], none);
        let err = strict
            .symbol_filters(&Symbol::new("DOGEUSDT"))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExchangeError::Fatal(ref m) if m.contains("DOGEUSDT")),
            "{err}"
        );
        let generous = ex.symbol_filters(&Symbol::new("DOGEUSDT")).await.unwrap();
        assert_eq!(generous.symbol, Symbol::new("DOGEUSDT"));
        assert_eq!(generous.min_notional, dec!(5));
    }

    #[tokio::test]
    async fn stop_fires_inside_a_candle_from_its_low() {
        let c2 = (dec!(50200), dec!(50250), dec!(49400), dec!(49700));
        let (clock, ex) = setup(&[C0, C1, c2, QUIET]);
        long_01_at_c1(&clock, &ex).await;
        let placed = ex
            .place_algo(&algo(
                OrderSide::Sell,
                AlgoKind::StopMarket,
                Some(dec!(49500)),
                "sl",
            ))
            .await
            .unwrap();
        assert_eq!(placed.status, AlgoStatus::New);

        // c1 closed (low 50000): nothing.
        clock.set(at(2));
        assert_eq!(ex.open_algo_orders(None).await.unwrap().len(), 1);
        assert_eq!(ex.positions().await.unwrap()[0].amount, dec!(0.1));

        // c2 closed with low 49400 ≤ 49500: filled at the trigger less slippage.
        clock.set(at(3));
        assert!(ex.positions().await.unwrap().is_empty());
        let sl = ex.algo_by_client_id("sl").await.unwrap().unwrap();
        assert_eq!(sl.status, AlgoStatus::Finished);
        assert_eq!(sl.actual_price, Some(Price::new(dec!(49495.05))));
        let trades = ex.user_trades(&btc(), 0).await.unwrap();
        assert_eq!(trades.len(), 2);
        let exit = &trades[1];
        assert_eq!(Some(exit.order_id), sl.actual_order_id);
        assert_eq!(exit.side, OrderSide::Sell);
        assert_eq!(exit.price, Price::new(dec!(49495.05)));
        assert_eq!(exit.qty, Qty::new(dec!(0.1)));
        assert_eq!(exit.realized_pnl, Notional::new(dec!(-56.9956)));
        assert_eq!(exit.commission, Notional::new(dec!(1.979802)));
        assert_eq!(exit.time, T0 + 3 * M15 - 1, "stamped with c2's close time");
        let fired = ex
            .order_by_client_id(&btc(), triggered_client_id(sl.algo_id).as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fired.order_id, exit.order_id);
        assert!(fired.reduce_only);
        assert_eq!(
            ex.account().await.unwrap().wallet_balance,
            Notional::new(dec!(9939.02199776))
        );
        assert!(ex.open_algo_orders(Some(&btc())).await.unwrap().is_empty());
    }

    /// The change count behind `sync_view_unchanged`'s shortcut: every change a view shows (a
    /// fill, a conditional order placed, cancelled or fired) makes the last view stale, and the
    /// shortcut always agrees with comparing a fresh view.
    #[tokio::test]
    async fn sync_view_unchanged_sees_every_change_a_view_shows() {
        let c2 = (dec!(50200), dec!(50250), dec!(49400), dec!(49700));
        let (clock, ex) = setup(&[C0, C1, QUIET, c2, QUIET, QUIET, QUIET]);
        async fn check(ex: &PaperExchange, view: &SyncView, expect: bool) -> SyncView {
            let unchanged = ex.sync_view_unchanged(view).await.unwrap();
            let fresh = ex.sync_view().await.unwrap();
            assert_eq!(unchanged, expect);
            assert_eq!(
                unchanged,
                fresh == *view,
                "the shortcut agrees with comparing"
            );
            assert_eq!(fresh.taken_with(view), expect);
            fresh
        }
        clock.set(at(1));
        let v = ex.sync_view().await.unwrap();
        let v = check(&ex, &v, true).await;
        // A fill (wallet and position).
        ex.place_market(&mkt(OrderSide::Buy, dec!(0.1), "entry"))
            .await
            .unwrap();
        let v = check(&ex, &v, false).await;
        // A candle that touches nothing.
        clock.set(at(2));
        let v = check(&ex, &v, true).await;
        // A conditional order placed, then cancelled.
        let tp = algo(
            OrderSide::Sell,
            AlgoKind::TakeProfitMarket,
            Some(dec!(60000)),
            "tp",
        );
        ex.place_algo(&tp).await.unwrap();
        let v = check(&ex, &v, false).await;
        ex.cancel_algo(&btc(), "tp").await.unwrap();
        let v = check(&ex, &v, false).await;
        // A stop placed, then fired by c2's low (position closed, order finished).
        let sl = algo(
            OrderSide::Sell,
            AlgoKind::StopMarket,
            Some(dec!(49500)),
            "sl",
        );
        ex.place_algo(&sl).await.unwrap();
        let v = check(&ex, &v, false).await;
        clock.set(at(3));
        let v = check(&ex, &v, true).await;
        clock.set(at(4));
        let v = check(&ex, &v, false).await;
        assert!(v.positions.is_empty() && v.open_algos.is_empty());
        clock.set(at(5));
        let v = check(&ex, &v, true).await;
        // An opening stop the margin cannot carry: rejected when it fires, with no fill.
        let open = AlgoOrder {
            qty: Some(Qty::new(dec!(1000))),
            close_position: false,
            ..algo(
                OrderSide::Buy,
                AlgoKind::StopMarket,
                Some(dec!(50210)),
                "big",
            )
        };
        ex.place_algo(&open).await.unwrap();
        let v = check(&ex, &v, false).await;
        clock.set(at(6));
        let v = check(&ex, &v, false).await;
        let big = ex.algo_by_client_id("big").await.unwrap().unwrap();
        assert_eq!(big.status, AlgoStatus::Rejected);
        assert!(v.positions.is_empty() && v.open_algos.is_empty());

        // Views of two exchanges are never "taken with" each other, even when equal.
        let (_, other) = setup(&[C0, C1, QUIET, c2, QUIET, QUIET]);
        let a = other.sync_view().await.unwrap();
        let (_, third) = setup(&[C0, C1, QUIET, c2, QUIET, QUIET]);
        let b = third.sync_view().await.unwrap();
        assert_eq!(a, b);
        assert!(!a.taken_with(&b));
    }

    #[tokio::test]
    async fn stop_fires_before_take_profit_when_both_could() {
        let both = (dec!(50200), dec!(50900), dec!(49400), dec!(50000));
        let later = (dec!(50500), dec!(50950), dec!(50400), dec!(50600));
        let (clock, ex) = setup(&[C0, C1, both, later, QUIET]);
        long_01_at_c1(&clock, &ex).await;
        // Take-profit placed first, so the order is not simply by id.
        ex.place_algo(&algo(
            OrderSide::Sell,
            AlgoKind::TakeProfitMarket,
            Some(dec!(50800)),
            "tp",
        ))
        .await
        .unwrap();
        ex.place_algo(&algo(
            OrderSide::Sell,
            AlgoKind::StopMarket,
            Some(dec!(49500)),
            "sl",
        ))
        .await
        .unwrap();
        clock.set(at(3));
        let sl = ex.algo_by_client_id("sl").await.unwrap().unwrap();
        let tp = ex.algo_by_client_id("tp").await.unwrap().unwrap();
        assert_eq!(sl.status, AlgoStatus::Finished);
        assert_eq!(sl.actual_price, Some(Price::new(dec!(49495.05))));
        assert_eq!(
            tp.status,
            AlgoStatus::New,
            "left open, as Binance leaves it"
        );
        assert!(ex.positions().await.unwrap().is_empty());

        // The leftover take-profit is touched again while flat: it does nothing and stays NEW.
        clock.set(at(4));
        let open = ex.open_algo_orders(None).await.unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].client_algo_id, "tp");
        assert_eq!(ex.user_trades(&btc(), 0).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_gap_through_the_trigger_fills_at_the_open() {
        let gap = (dec!(49300), dec!(49350), dec!(49200), dec!(49250));
        let (clock, ex) = setup(&[C0, C1, gap, QUIET]);
        long_01_at_c1(&clock, &ex).await;
        ex.place_algo(&algo(
            OrderSide::Sell,
            AlgoKind::StopMarket,
            Some(dec!(49500)),
            "sl",
        ))
        .await
        .unwrap();
        clock.set(at(3));
        let sl = ex.algo_by_client_id("sl").await.unwrap().unwrap();
        assert_eq!(
            sl.actual_price,
            Some(Price::new(dec!(49295.07))),
            "open 49300 less slippage"
        );
        let t = ex.user_trades(&btc(), 0).await.unwrap();
        assert_eq!(t[1].realized_pnl, Notional::new(dec!(-76.9936)));

        // Mirror: a short's take-profit (BUY) fires from the low, at the open when it gapped.
        let down = (dec!(49700), dec!(49750), dec!(49600), dec!(49650));
        let (clock, ex) = setup(&[C0, C1, down, QUIET]);
        clock.set(at(1));
        ex.place_market(&mkt(OrderSide::Sell, dec!(0.1), "short"))
            .await
            .unwrap();
        ex.place_algo(&algo(
            OrderSide::Buy,
            AlgoKind::TakeProfitMarket,
            Some(dec!(49800)),
            "tp",
        ))
        .await
        .unwrap();
        ex.place_algo(&algo(
            OrderSide::Buy,
            AlgoKind::StopMarket,
            Some(dec!(50600)),
            "sl",
        ))
        .await
        .unwrap();
        clock.set(at(3));
        let tp = ex.algo_by_client_id("tp").await.unwrap().unwrap();
        assert_eq!(tp.status, AlgoStatus::Finished);
        assert_eq!(tp.actual_price, Some(Price::new(dec!(49704.97))));
        let t = ex.user_trades(&btc(), 0).await.unwrap();
        assert_eq!(t[0].price, Price::new(dec!(50054.994)));
        assert_eq!(t[1].realized_pnl, Notional::new(dec!(35.0024)));
        assert!(ex.positions().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn close_position_when_flat_does_nothing_and_reduce_only_is_capped() {
        let dip = (dec!(50200), dec!(50250), dec!(49400), dec!(49700));
        let (clock, ex) = setup(&[C0, C1, dip, QUIET]);
        clock.set(at(1));
        ex.place_algo(&algo(
            OrderSide::Sell,
            AlgoKind::StopMarket,
            Some(dec!(49500)),
            "flat",
        ))
        .await
        .unwrap();
        clock.set(at(3));
        let flat = ex.algo_by_client_id("flat").await.unwrap().unwrap();
        assert_eq!(flat.status, AlgoStatus::New);
        assert_eq!(flat.actual_order_id, None);
        assert!(ex.user_trades(&btc(), 0).await.unwrap().is_empty());
        assert_eq!(
            ex.account().await.unwrap().wallet_balance,
            Notional::new(dec!(10000))
        );

        // A reduce-only quantity larger than the position closes just the position.
        let (clock, ex) = setup(&[C0, C1, dip, QUIET]);
        long_01_at_c1(&clock, &ex).await;
        let mut capped = algo(
            OrderSide::Sell,
            AlgoKind::StopMarket,
            Some(dec!(49500)),
            "cap",
        );
        capped.close_position = false;
        capped.reduce_only = true;
        capped.qty = Some(Qty::new(dec!(0.5)));
        ex.place_algo(&capped).await.unwrap();
        clock.set(at(3));
        let t = ex.user_trades(&btc(), 0).await.unwrap();
        assert_eq!(t[1].qty, Qty::new(dec!(0.1)));
        assert!(ex.positions().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn equity_margin_and_symbol_settings() {
        let (clock, ex) = setup(&[C0, C1, QUIET]);
        assert_eq!(ex.symbol_config(&btc()).await.unwrap().leverage, 20);
        assert_eq!(code(ex.set_leverage(&btc(), 0).await), Refusal::Other);
        ex.set_leverage(&btc(), 10).await.unwrap();
        long_01_at_c1(&clock, &ex).await;
        clock.set(at(2)); // price = c2 open 50200
        let a = ex.account().await.unwrap();
        assert_eq!(a.wallet_balance, Notional::new(dec!(9997.99739976)));
        assert_eq!(a.unrealized_pnl, Notional::new(dec!(13.4994)));
        assert_eq!(a.equity, Notional::new(dec!(10011.49679976)));
        assert_eq!(
            a.total_initial_margin,
            Notional::new(dec!(502)),
            "0.1 × 50200 / 10"
        );
        assert_eq!(a.available_balance, Notional::new(dec!(9509.49679976)));
        let p = &ex.positions().await.unwrap()[0];
        assert_eq!(p.mark_price, Price::new(dec!(50200)));
        assert_eq!(p.entry_price, Price::new(dec!(50065.006)));
        assert_eq!(p.unrealized_pnl, Notional::new(dec!(13.4994)));
        assert_eq!(p.leverage, Some(10));
        assert_eq!(p.update_time, at(1));

        assert_eq!(
            code(ex.set_margin_type(&btc(), MarginType::Crossed).await),
            Refusal::MarginTypeUnchanged
        );
        assert_eq!(
            code(ex.set_margin_type(&btc(), MarginType::Isolated).await),
            Refusal::MarginTypeLocked
        );
        let eth = Symbol::new("ETHUSDT");
        ex.set_margin_type(&eth, MarginType::Isolated)
            .await
            .unwrap();
        let sc = ex.symbol_config(&eth).await.unwrap();
        assert_eq!((sc.leverage, sc.margin_type), (20, MarginType::Isolated));

        // Past the recorded data the last known price is kept for the account view.
        clock.set(at(10));
        let a = ex.account().await.unwrap();
        assert_eq!(a.unrealized_pnl, Notional::new(dec!(13.4994)));
        assert!(ex
            .place_market(&mkt(OrderSide::Buy, dec!(0.1), "late"))
            .await
            .is_err());
    }

    #[tokio::test]
    async fn trailing_stop_tracks_the_best_price() {
        let quiet = (dec!(50060), dec!(50800), dec!(50000), dec!(50500));
        let activate = (dec!(50500), dec!(51500), dec!(50400), dec!(51200));
        let pullback = (dec!(51200), dec!(51400), dec!(50900), dec!(51000));
        let run_then_drop = (dec!(51200), dec!(52000), dec!(51300), dec!(51400));
        let trail = |id: &str| AlgoOrder {
            close_position: false,
            reduce_only: true,
            qty: Some(Qty::new(dec!(0.1))),
            ..algo(
                OrderSide::Sell,
                AlgoKind::TrailingStopMarket {
                    callback_rate: dec!(1),
                },
                Some(dec!(51000)),
                id,
            )
        };

        // Activated at 51000 by a 51500 high (stop 50985); the next candle's low 50900 hits it.
        let (clock, ex) = setup(&[C0, quiet, activate, pullback, QUIET]);
        long_01_at_c1(&clock, &ex).await;
        ex.place_algo(&trail("tr")).await.unwrap();
        clock.set(at(3));
        assert_eq!(
            ex.algo_by_client_id("tr").await.unwrap().unwrap().status,
            AlgoStatus::New,
            "close 51200 stays above 50985"
        );
        clock.set(at(4));
        let tr = ex.algo_by_client_id("tr").await.unwrap().unwrap();
        assert_eq!(tr.status, AlgoStatus::Finished);
        assert_eq!(
            tr.actual_price,
            Some(Price::new(dec!(50979.9015))),
            "50985 less slippage"
        );
        assert!(ex.positions().await.unwrap().is_empty());

        // A new high in the candle moves the stop to 51480; the later close 51400 crosses it.
        let (clock, ex) = setup(&[C0, quiet, activate, run_then_drop, QUIET]);
        long_01_at_c1(&clock, &ex).await;
        ex.place_algo(&trail("tr")).await.unwrap();
        clock.set(at(4));
        let tr = ex.algo_by_client_id("tr").await.unwrap().unwrap();
        assert_eq!(tr.status, AlgoStatus::Finished);
        assert_eq!(tr.actual_price, Some(Price::new(dec!(51474.852))));

        // Never activated: never fires.
        let (clock, ex) = setup(&[C0, quiet, quiet, quiet]);
        long_01_at_c1(&clock, &ex).await;
        ex.place_algo(&trail("tr")).await.unwrap();
        clock.set(at(4));
        assert_eq!(
            ex.algo_by_client_id("tr").await.unwrap().unwrap().status,
            AlgoStatus::New
        );
    }

    #[tokio::test]
    async fn a_trail_moved_in_the_candle_fires_after_the_take_profits_its_extreme_crossed() {
        let quiet = (dec!(50060), dec!(50800), dec!(50000), dec!(50500));
        // Up through the 51300 take-profit and the 51000 activation to 52000 (trail 51480), then
        // back to a 51400 close: the take-profit filled on the way up, the trail on the way down.
        let spike = (dec!(50500), dec!(52000), dec!(50400), dec!(51400));
        let (clock, ex) = setup(&[C0, quiet, spike, QUIET]);
        long_01_at_c1(&clock, &ex).await;
        let reduce = |kind, trigger, qty, id: &str| AlgoOrder {
            close_position: false,
            reduce_only: true,
            qty: Some(Qty::new(qty)),
            ..algo(OrderSide::Sell, kind, Some(trigger), id)
        };
        // The trail is placed first (a lower algo id) and still fires second.
        let trailing = AlgoKind::TrailingStopMarket {
            callback_rate: dec!(1),
        };
        ex.place_algo(&reduce(trailing, dec!(51000), dec!(0.1), "tr"))
            .await
            .unwrap();
        ex.place_algo(&reduce(
            AlgoKind::TakeProfitMarket,
            dec!(51300),
            dec!(0.04),
            "tp",
        ))
        .await
        .unwrap();
        clock.set(at(3));
        let tp = ex.algo_by_client_id("tp").await.unwrap().unwrap();
        let tr = ex.algo_by_client_id("tr").await.unwrap().unwrap();
        assert_eq!(tp.status, AlgoStatus::Finished);
        assert_eq!(
            tp.actual_price,
            Some(Price::new(dec!(51294.87))),
            "51300 less slippage"
        );
        assert_eq!(tr.status, AlgoStatus::Finished);
        assert_eq!(
            tr.actual_price,
            Some(Price::new(dec!(51474.852))),
            "51480 less slippage"
        );
        let fills = ex.user_trades(&btc(), 0).await.unwrap();
        let qty_of = |id: Option<i64>| {
            fills
                .iter()
                .filter(|f| Some(f.order_id) == id)
                .map(|f| f.qty.get())
                .sum::<Decimal>()
        };
        assert_eq!(qty_of(tp.actual_order_id), dec!(0.04));
        assert_eq!(
            qty_of(tr.actual_order_id),
            dec!(0.06),
            "capped at what was left"
        );
        assert!(ex.positions().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn algo_validation_cancel_and_listing() {
        let (clock, ex) = setup(&[C0, C1, QUIET]);
        clock.set(at(1)); // price 50060
        let sl = |t: Decimal, id: &str| algo(OrderSide::Sell, AlgoKind::StopMarket, Some(t), id);
        assert_eq!(
            code(ex.place_algo(&sl(dec!(50100), "a1")).await),
            Refusal::WouldTriggerImmediately
        );
        assert_eq!(
            code(
                ex.place_algo(&algo(
                    OrderSide::Buy,
                    AlgoKind::StopMarket,
                    Some(dec!(50000)),
                    "a2"
                ))
                .await
            ),
            Refusal::WouldTriggerImmediately
        );
        assert_eq!(
            code(
                ex.place_algo(&algo(
                    OrderSide::Sell,
                    AlgoKind::TakeProfitMarket,
                    Some(dec!(50000)),
                    "a3"
                ))
                .await
            ),
            Refusal::WouldTriggerImmediately
        );
        assert_eq!(
            code(ex.place_algo(&sl(dec!(49500.05), "a4")).await),
            Refusal::Precision
        );
        assert_eq!(
            code(
                ex.place_algo(&algo(OrderSide::Sell, AlgoKind::StopMarket, None, "a5"))
                    .await
            ),
            Refusal::Other
        );
        let mut with_qty = sl(dec!(49500), "a6");
        with_qty.qty = Some(Qty::new(dec!(0.1)));
        assert_eq!(code(ex.place_algo(&with_qty).await), Refusal::Other);
        with_qty.close_position = false;
        with_qty.qty = Some(Qty::new(dec!(0.0015)));
        assert_eq!(code(ex.place_algo(&with_qty).await), Refusal::Precision);
        let bad_rate = algo(
            OrderSide::Sell,
            AlgoKind::TrailingStopMarket {
                callback_rate: dec!(20),
            },
            None,
            "a7",
        );
        assert_eq!(code(ex.place_algo(&bad_rate).await), Refusal::Other);

        ex.place_algo(&sl(dec!(49500), "ok")).await.unwrap();
        assert_eq!(
            code(ex.place_algo(&sl(dec!(49400), "ok")).await),
            Refusal::DuplicateId
        );
        assert_eq!(ex.algo_by_client_id("a1").await.unwrap(), None);
        assert_eq!(ex.open_algo_orders(Some(&btc())).await.unwrap().len(), 1);
        assert!(ex
            .open_algo_orders(Some(&Symbol::new("ETHUSDT")))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            code(ex.cancel_algo(&Symbol::new("ETHUSDT"), "ok").await),
            Refusal::UnknownOrder
        );
        ex.cancel_algo(&btc(), "ok").await.unwrap();
        assert_eq!(
            ex.algo_by_client_id("ok").await.unwrap().unwrap().status,
            AlgoStatus::Canceled
        );
        assert!(ex.open_algo_orders(None).await.unwrap().is_empty());
        assert_eq!(
            code(ex.cancel_algo(&btc(), "ok").await),
            Refusal::UnknownOrder
        );
        assert_eq!(
            code(ex.cancel_algo(&btc(), "unknown").await),
            Refusal::UnknownOrder
        );
    }

    #[tokio::test]
    async fn recorded_market_serves_coarser_closed_candles_and_says_why_it_has_no_price() {
        // 15m from 11:45: hour 11 is partial; hours 12 and 13 complete; then a gap; hour 16 complete.
        let start = T0 - M15;
        let mut rows: Vec<Row> = (0..9)
            .map(|i| {
                let p = Decimal::from(100 + i);
                (p, p + dec!(5), p - dec!(5), p + dec!(1))
            })
            .collect();
        let mut s = series(&rows, start, Timeframe::M15);
        rows.truncate(4);
        let after_gap = series(&rows, T0 + 4 * 3_600_000, Timeframe::M15);
        s.candles.extend(after_gap.candles);
        let s = CandleSeries::new(s.candles, Timeframe::M15);
        assert_eq!(s.gaps.len(), 1);
        let m = RecordedMarket::new(btc(), s);
        assert_eq!(
            m.span(&btc()),
            Some((Timeframe::M15, start, T0 + 5 * 3_600_000))
        );

        let h1 = m
            .closed_candles(&btc(), Timeframe::H1, 10, T0 + 2 * 3_600_000 + 5_000)
            .await
            .unwrap();
        assert_eq!(
            h1.len(),
            2,
            "the partial 11:00 hour is not a closed 1h candle"
        );
        assert_eq!(h1[0].open_time, T0);
        assert_eq!(h1[0].open, Price::new(dec!(101)));
        assert_eq!(h1[0].close, Price::new(dec!(105)));
        assert_eq!(h1[1].open_time, T0 + 3_600_000);
        // At 13:59 the 13:00 hour is still open.
        let h1 = m
            .closed_candles(&btc(), Timeframe::H1, 10, T0 + 2 * 3_600_000 - 1)
            .await
            .unwrap();
        assert_eq!(h1.len(), 1);
        let all = m
            .closed_candles(&btc(), Timeframe::H1, 10, T0 + 10 * 3_600_000)
            .await
            .unwrap();
        assert_eq!(
            all.iter().map(|c| c.open_time).collect::<Vec<_>>(),
            vec![T0, T0 + 3_600_000, T0 + 4 * 3_600_000],
            "the gap stays a gap"
        );
        let last2 = m
            .closed_candles(&btc(), Timeframe::M15, 2, T0 + 2 * 3_600_000)
            .await
            .unwrap();
        assert_eq!(last2.len(), 2);
        assert_eq!(last2[1].open_time, T0 + 2 * 3_600_000 - M15);
        assert!(matches!(
            m.closed_candles(&btc(), Timeframe::M5, 1, T0).await,
            Err(ExchangeError::Fatal(ref e)) if e.contains("15m")
        ));

        // Price: the open of the base candle containing now, on both sides of the gap.
        assert_eq!(
            m.price(&btc(), T0 + 5_000).await.unwrap(),
            Price::new(dec!(101))
        );
        assert_eq!(
            m.price(&btc(), T0 + 4 * 3_600_000 + M15 + 1).await.unwrap(),
            Price::new(dec!(101))
        );
        let err = |r: Result<Price, ExchangeError>| r.unwrap_err().to_string();
        // Inside an outage an order waits for the first price after it: the next candle's open.
        assert_eq!(
            m.price(&btc(), T0 + 2 * 3_600_000 + 5_000).await.unwrap(),
            Price::new(dec!(100))
        );
        // At the last close (within one candle after it) the price is that close; later, none.
        assert_eq!(
            m.price(&btc(), T0 + 5 * 3_600_000).await.unwrap(),
            Price::new(dec!(104))
        );
        assert!(err(m.price(&btc(), T0 + 5 * 3_600_000 + M15).await).contains("after the end"));
        assert!(err(m.price(&btc(), start - 1).await).contains("before the recorded data"));
        assert!(err(m.price(&Symbol::new("ETHUSDT"), T0).await).contains("ETHUSDT"));

        // Closed in (from, to]: the 12:00 and 12:15 candles close at 12:15 and 12:30.
        let c = m
            .candles_closed_between(&btc(), T0, T0 + 2 * M15)
            .await
            .unwrap();
        assert_eq!(
            c.iter()
                .map(|(tf, c)| (*tf, c.open_time))
                .collect::<Vec<_>>(),
            vec![(Timeframe::M15, T0), (Timeframe::M15, T0 + M15)]
        );
        assert!(m
            .candles_closed_between(&btc(), T0 + 1, T0 + M15 - 1)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn live_market_reads_closed_one_minute_klines() {
        // The "real exchange" here is another paper exchange over recorded 1m candles.
        let m1 = Timeframe::M1.millis();
        let rows: Vec<Row> = (0..30)
            .map(|i| {
                let p = Decimal::from(50_000 + i * 10);
                (p, p + dec!(20), p - dec!(20), p + dec!(5))
            })
            .collect();
        let clock = Arc::new(SimClock::new(T0 + 10 * m1 + 3_000));
        let recorded = Arc::new(RecordedMarket::new(btc(), series(&rows, T0, Timeframe::M1)));
        let upstream: Arc<dyn Exchange> = Arc::new(PaperExchange::new(
            recorded,
            clock.clone(),
            PaperConfig::default(),
        ));
        let live = LiveMarket::new(upstream);
        let now = T0 + 10 * m1 + 3_000;
        assert_eq!(
            live.price(&btc(), now).await.unwrap(),
            Price::new(dec!(50095)),
            "close of the 12:09 candle"
        );
        let between = live
            .candles_closed_between(&btc(), T0 + 2 * m1, now)
            .await
            .unwrap();
        assert_eq!(between.len(), 8, "candles closing 12:03 … 12:10");
        assert!(between.iter().all(|(tf, _)| *tf == Timeframe::M1));
        assert_eq!(between[0].1.open_time, T0 + 2 * m1);
        let m15 = live
            .closed_candles(&btc(), Timeframe::M15, 5, T0 + 31 * m1)
            .await
            .unwrap();
        assert_eq!(m15.len(), 2);
        assert_eq!(m15[1].close, Price::new(dec!(50295)));

        // Paper fills on live prices: a stop triggered by a 1m low.
        let paper = PaperExchange::new(Arc::new(live), clock.clone(), PaperConfig::default());
        paper
            .place_market(&mkt(OrderSide::Buy, dec!(0.01), "e"))
            .await
            .unwrap();
        let fill = paper.user_trades(&btc(), 0).await.unwrap()[0].price;
        assert_eq!(fill, Price::new(dec!(50095) * dec!(1.0001)));
        paper
            .place_algo(&algo(
                OrderSide::Sell,
                AlgoKind::TakeProfitMarket,
                Some(dec!(50150)),
                "tp",
            ))
            .await
            .unwrap();
        // The 12:12 candle (high 50140) does not reach it; the 12:13 one (high 50150) does.
        clock.set(T0 + 13 * m1 + 1_000);
        assert_eq!(paper.positions().await.unwrap().len(), 1);
        clock.set(T0 + 14 * m1 + 1_000);
        assert!(paper.positions().await.unwrap().is_empty());
        let tp = paper.algo_by_client_id("tp").await.unwrap().unwrap();
        assert_eq!(
            tp.actual_price,
            Some(Price::new(dec!(50150) * dec!(0.9999)))
        );
    }
}
