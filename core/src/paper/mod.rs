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
//!   Liquidation is not modelled.
//! - **Funding** is charged at each recorded funding time ([`PaperConfig::funding`]) on the
//!   position held then, into the wallet, with a `FUNDING_FEE` income row (`funding.rs`); without
//!   recorded rates none is charged.
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

use crate::data::{resample, CandleSeries, FundingRate};
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

mod exchange;
mod fills;
mod funding;
mod journal;
mod margin;
mod market;
mod validation;
pub use funding::funding_payment;
pub use journal::{OrderJournal, ORDERS_CSV_HEADER};
pub use market::{LiveMarket, MarketData, RecordedMarket};

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
    /// Recorded funding rates per symbol, in time order, charged at their times (none: no
    /// funding is charged).
    pub funding: HashMap<Symbol, Arc<[FundingRate]>>,
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
            funding: HashMap::new(),
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
    /// Each symbol's recorded funding still to charge (empty without recorded rates).
    funding: Vec<funding::FundingCursor>,
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
            funding: funding::cursors(&cfg, now),
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
    /// advance against the open conditional orders, oldest first, and charge the funding due in
    /// between, each at its time (`funding.rs`). Returns `now`.
    pub async fn advance(&self) -> Result<i64, ExchangeError> {
        let now = self.clock.now_ms();
        if self.cfg.funding.is_empty() {
            return self.advance_to(now).await;
        }
        self.advance_funded(now).await
    }

    /// [`Self::advance`] without funding: replay the candles that closed by `now`.
    async fn advance_to(&self, now: i64) -> Result<i64, ExchangeError> {
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
