//! A Binance-USDⓈ-M-speaking HTTP server on loopback: the stand-in for `fapi.binance.com` in every
//! integration test. The real reqwest client and the real `evaluator` / `position-sync` binaries talk
//! to it through `ALBRA_BINANCE_URL`.
//!
//! It owns a small simulated exchange: recorded candles served as klines (the still-open row
//! included, like Binance), real filters in `exchangeInfo`, accounts with one-way netting
//! positions, MARKET fills at the mark price with 0.04 % taker commission, conditional orders on the
//! Algo Order API, margin, user trades and income. Every signed request is verified (API key,
//! HMAC-SHA256 over the exact query + body, `timestamp` within `recvWindow` of the server clock).
//! Tests steer it by hand (server clock, mark price, manual orders, triggering stops) and arm
//! fault rules ([`FaultRule`]: by method, path and parameter; on the n-th match, the next k or a
//! seeded chance; timeouts, 503 unknown outcome, 429/418 with `Retry-After`, -1021, CDN HTML
//! pages, dropped connections, holds released by hand), or inject the older one-shot [`Fault`]s.
//! Every fault that fires is journaled ([`BinanceTestServer::fired_faults`]).
//!
//! A fixed latency can be added to every request ([`BinanceTestServer::set_latency`], zero by
//! default): `make bench-live` uses it to count the sequential round trips of the jobs.
//!
//! The server clock runs at wall-clock speed from the last [`BinanceTestServer::set_time`], so a
//! client that syncs its offset from `/fapi/v1/time` stays inside `recvWindow` while it works.

mod exchange;
mod faults;
mod http;
mod market;
mod render;
mod signing;

pub use faults::{FaultKind, FaultRule, FiredFault, When};
pub use market::{funding_rate_at, load_candles_csv, FUNDING_INTERVAL_MS};
pub use signing::{sign, signed_query};

use albra_core::domain::{Candle, OrderSide};
use exchange::{Account, Exchange};
use faults::Rules;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the server starts with.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Recorded candles per symbol at the base timeframe.
    pub candles: HashMap<String, Vec<Candle>>,
    /// Base timeframe of `candles` in ms (900 000 for 15m); klines of coarser multiples are built
    /// from it.
    pub base_tf_ms: i64,
    pub accounts: Vec<TestAccount>,
    /// Initial server clock (ms since the epoch).
    pub start_time_ms: i64,
}

/// One futures account: its API credentials and its starting USDT wallet balance.
#[derive(Clone, Debug)]
pub struct TestAccount {
    pub api_key: String,
    pub api_secret: String,
    pub wallet_balance: Decimal,
}

/// What an account's API key may do, as `GET /sapi/v1/account/apiRestrictions` reports it.
/// The default is the safe key: readable, futures, IP-restricted, no withdrawals or transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRestrictions {
    pub ip_restrict: bool,
    pub enable_reading: bool,
    pub enable_futures: bool,
    pub enable_withdrawals: bool,
    pub enable_internal_transfer: bool,
}

impl Default for KeyRestrictions {
    fn default() -> Self {
        KeyRestrictions {
            ip_restrict: true,
            enable_reading: true,
            enable_futures: true,
            enable_withdrawals: false,
            enable_internal_transfer: false,
        }
    }
}

impl KeyRestrictions {
    fn render(&self) -> serde_json::Value {
        serde_json::json!({
            "ipRestrict": self.ip_restrict,
            "createTime": 1_698_645_219_000_i64,
            "enableReading": self.enable_reading,
            "enableWithdrawals": self.enable_withdrawals,
            "enableInternalTransfer": self.enable_internal_transfer,
            "enableMargin": false,
            "enableFutures": self.enable_futures,
            "permitsUniversalTransfer": false,
            "enableVanillaOptions": false,
            "enableFixApiTrade": false,
            "enableFixReadOnly": false,
            "enableSpotAndMarginTrading": false,
            "enablePortfolioMarginTrading": false
        })
    }
}

/// A one-shot fault, consumed by the next request to `path` (whatever its method).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Never answer within any sane client timeout (60 s). With `apply`, the request takes effect
    /// first (the order is placed) and only the answer is lost.
    Timeout { path: String, apply: bool },
    /// HTTP 503 `{"code":-1000,"msg":"Unknown error, please check your request or try again later."}`,
    /// the request applied or not per `apply`.
    Unknown503 { path: String, apply: bool },
    /// HTTP 429 with `Retry-After: retry_after_s` and code -1003; nothing applied.
    RateLimit429 { path: String, retry_after_s: u64 },
    /// HTTP 400 code -1021 once, as if the client clock had drifted; nothing applied.
    Timestamp1021 { path: String },
    /// Apply the request, then never answer until the server is dropped (kill tests).
    HoldAfterApply { path: String },
}

impl Fault {
    /// The same fault as a rule: the next request to its path, whatever the method.
    pub fn into_rule(self) -> FaultRule {
        let (path, kind) = match self {
            Fault::Timeout { path, apply } => (path, FaultKind::Timeout { apply }),
            Fault::Unknown503 { path, apply } => (path, FaultKind::Unknown503 { apply }),
            Fault::RateLimit429 {
                path,
                retry_after_s,
            } => (path, FaultKind::RateLimit429 { retry_after_s }),
            Fault::Timestamp1021 { path } => (path, FaultKind::Timestamp1021),
            Fault::HoldAfterApply { path } => (path, FaultKind::Hold { apply: true }),
        };
        FaultRule {
            method: None,
            ..FaultRule::new("GET", &path, kind)
        }
    }
}

/// One request as the server received it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query and form-body parameters (the query wins on a clash, as on Binance).
    pub params: BTreeMap<String, String>,
    /// The `X-MBX-APIKEY` header, if sent.
    pub api_key: Option<String>,
    /// Server time when it arrived.
    pub time: i64,
    /// Its IP request weight as the server counted it (the documented weight of the endpoint for
    /// these parameters; 0 for orders, which count against order limits instead).
    pub weight: u64,
    /// Server time when the answer was ready (after any added latency); `None` while unanswered.
    pub answered: Option<i64>,
    /// HTTP status of the answer; `None` while unanswered (timeouts, holds).
    pub status: Option<u16>,
    /// The fault that hit it, if one did.
    pub fault: Option<FaultKind>,
}

/// Mutable state behind one lock; handlers never hold it across an await.
pub(crate) struct Inner {
    pub x: Exchange,
    clock_base: i64,
    clock_at: Instant,
    rules: Rules,
    pub log: Vec<LoggedRequest>,
    weight_minute: i64,
    weight: u64,
    /// Added to every request before it is processed and answered (see [`BinanceTestServer::set_latency`]).
    pub latency: Duration,
}

impl Inner {
    pub fn now(&self) -> i64 {
        self.clock_base + self.clock_at.elapsed().as_millis() as i64
    }

    /// Adds `w` to the running weight of the current server-time minute and returns the total.
    pub fn add_weight(&mut self, w: u64, now: i64) -> u64 {
        let minute = now.div_euclid(60_000);
        if minute != self.weight_minute {
            self.weight_minute = minute;
            self.weight = 0;
        }
        self.weight += w;
        self.weight
    }

    /// The fault for the request just logged at `index`, if a rule fires on it; journaled.
    pub fn take_fault(
        &mut self,
        index: usize,
        get: &dyn Fn(&str) -> Option<String>,
    ) -> Option<FaultKind> {
        let (method, path) = (self.log[index].method.clone(), self.log[index].path.clone());
        let (rule, kind) = self.rules.pick(&method, &path, get)?;
        let time = self.now();
        self.log[index].fault = Some(kind);
        self.rules.fired.push(FiredFault {
            rule,
            request: index,
            method,
            path,
            kind,
            time,
        });
        Some(kind)
    }
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Count of POST /fapi/v1/order requests that took effect.
    pub applied_orders: watch::Sender<u64>,
    pub shutdown: watch::Sender<bool>,
    /// Bumped by [`BinanceTestServer::release_holds`]: held requests answer.
    pub release: watch::Sender<u64>,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the server for the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves when the server is being dropped.
    pub async fn closed(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|down| *down).await;
    }
}

/// The running server. Dropping it stops it (hanging answers are released).
pub struct BinanceTestServer {
    /// `http://127.0.0.1:PORT`, the value for `ALBRA_BINANCE_URL`.
    pub url: String,
    shared: Arc<Shared>,
    orders_seen: Mutex<u64>,
}

impl BinanceTestServer {
    /// Binds `127.0.0.1:0` and serves until dropped.
    pub async fn start(opts: ServerOptions) -> BinanceTestServer {
        Self::start_on(opts, 0)
            .await
            .expect("bind the Binance test server on 127.0.0.1")
    }

    /// Like [`start`](Self::start) on a chosen port (the manual-run binary).
    pub async fn start_on(opts: ServerOptions, port: u16) -> std::io::Result<BinanceTestServer> {
        let market = market::Market::new(opts.candles, opts.base_tf_ms);
        let accounts = opts
            .accounts
            .into_iter()
            .map(|a| (a.api_key, Account::new(a.api_secret, a.wallet_balance)))
            .collect();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                x: Exchange::new(market, accounts),
                clock_base: opts.start_time_ms,
                clock_at: Instant::now(),
                rules: Rules::default(),
                log: Vec::new(),
                weight_minute: i64::MIN,
                weight: 0,
                latency: Duration::ZERO,
            }),
            applied_orders: watch::channel(0).0,
            shutdown: watch::channel(false).0,
            release: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let stop = shared.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.closed().await })
                .await;
            if let Err(e) = served {
                eprintln!("binance test server stopped: {e}");
            }
        });
        Ok(BinanceTestServer {
            url,
            shared,
            orders_seen: Mutex::new(0),
        })
    }

    /// Sets what the key of the account `api_key` reports it may do.
    pub fn set_key_restrictions(&self, api_key: &str, r: KeyRestrictions) {
        self.shared
            .lock()
            .x
            .accounts
            .get_mut(api_key)
            .unwrap_or_else(|| panic!("unknown test account `{api_key}`"))
            .restrictions = r;
    }

    /// Sets the exchange clock (it keeps running from there at wall-clock speed).
    pub fn set_time(&self, ms: i64) {
        let mut g = self.shared.lock();
        g.clock_base = ms;
        g.clock_at = Instant::now();
    }

    pub fn time(&self) -> i64 {
        self.shared.lock().now()
    }

    /// Overrides the mark price (default: open of the candle containing the server time). Does not
    /// fire conditional orders; see [`trigger_algo_orders`](Self::trigger_algo_orders).
    pub fn set_mark_price(&self, symbol: &str, p: Decimal) {
        self.shared.lock().x.market.set_mark(symbol, p);
    }

    /// Adds a fixed latency to every request from now on (zero: none, the default): each one is
    /// journaled on arrival, then waits `latency` before it takes effect and is answered, as if
    /// the exchange were a round trip of `latency` away. Concurrent requests wait side by side.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Moves the exchange clock by `delta_ms` (negative: back), as a clock jump or skew.
    pub fn shift_time(&self, delta_ms: i64) {
        let mut g = self.shared.lock();
        g.clock_base = g.now() + delta_ms;
        g.clock_at = Instant::now();
    }

    /// A one-shot fault on the next request to its path (see [`Fault::into_rule`]).
    pub fn inject(&self, fault: Fault) {
        self.add_rule(fault.into_rule());
    }

    /// Arms a fault rule; returns its id (as [`FiredFault::rule`] names it).
    pub fn add_rule(&self, rule: FaultRule) -> usize {
        self.shared.lock().rules.add(rule)
    }

    /// Disarms every rule not yet spent (faults already fired stay in the journal).
    pub fn clear_rules(&self) {
        self.shared.lock().rules.clear();
    }

    /// Rules armed and not yet spent.
    pub fn pending_rules(&self) -> usize {
        self.shared.lock().rules.pending()
    }

    /// Every fault fired so far, oldest first.
    pub fn fired_faults(&self) -> Vec<FiredFault> {
        self.shared.lock().rules.fired.clone()
    }

    /// Requests held by a [`FaultKind::Hold`] and not answered yet.
    pub fn holding(&self) -> usize {
        let g = self.shared.lock();
        g.rules
            .fired
            .iter()
            .filter(|f| matches!(f.kind, FaultKind::Hold { .. }))
            .filter(|f| g.log[f.request].status.is_none())
            .count()
    }

    /// Answers every held request (503 unknown; each applied only if its hold said so).
    pub fn release_holds(&self) {
        self.shared.release.send_modify(|n| *n += 1);
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }

    pub fn count(&self, method: &str, path: &str) -> usize {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
            .count()
    }

    /// Signed net position amount (0 when flat).
    pub fn position(&self, api_key: &str, symbol: &str) -> Decimal {
        let g = self.shared.lock();
        g.x.accounts
            .get(api_key)
            .unwrap_or_else(|| panic!("unknown test account `{api_key}`"))
            .amount(symbol)
    }

    /// USDT wallet balance (realised PnL and commissions included).
    pub fn wallet_balance(&self, api_key: &str) -> Decimal {
        let g = self.shared.lock();
        g.x.accounts
            .get(api_key)
            .unwrap_or_else(|| panic!("unknown test account `{api_key}`"))
            .wallet
    }

    /// Conditional orders waiting for their trigger, in `openAlgoOrders` shape.
    pub fn open_algo_orders(&self, api_key: &str) -> Vec<serde_json::Value> {
        self.algo_orders(api_key)
            .into_iter()
            .filter(|a| a["algoStatus"] == "NEW")
            .collect()
    }

    /// Every conditional order ever placed (any status), in `GET /fapi/v1/algoOrder` shape.
    pub fn algo_orders(&self, api_key: &str) -> Vec<serde_json::Value> {
        let g = self.shared.lock();
        let acct =
            g.x.accounts
                .get(api_key)
                .unwrap_or_else(|| panic!("unknown test account `{api_key}`"));
        acct.algos
            .iter()
            .map(|a| render::algo(a, &g.x.market.rules[&a.symbol]))
            .collect()
    }

    /// Every order (API, manual and triggered), in `GET /fapi/v1/order` shape.
    pub fn orders(&self, api_key: &str) -> Vec<serde_json::Value> {
        let g = self.shared.lock();
        let acct =
            g.x.accounts
                .get(api_key)
                .unwrap_or_else(|| panic!("unknown test account `{api_key}`"));
        acct.orders
            .iter()
            .map(|o| render::order(o, &g.x.market.rules[&o.symbol]))
            .collect()
    }

    /// Every fill, in `/fapi/v1/userTrades` shape.
    pub fn user_trades(&self, api_key: &str) -> Vec<serde_json::Value> {
        let g = self.shared.lock();
        let acct =
            g.x.accounts
                .get(api_key)
                .unwrap_or_else(|| panic!("unknown test account `{api_key}`"));
        acct.trades
            .iter()
            .map(|t| render::trade(t, &g.x.market.rules[&t.symbol]))
            .collect()
    }

    /// A MARKET order placed by hand on the website (client id `web_…`), filled at the mark price
    /// without the API's filters. `side` is `BUY` or `SELL`.
    pub fn manual_market_order(&self, api_key: &str, symbol: &str, side: &str, qty: Decimal) {
        let side = hand_side(side);
        let mut g = self.shared.lock();
        let now = g.now();
        g.x.mark(symbol, now)
            .unwrap_or_else(|e| panic!("manual order on {symbol}: {}", e.msg));
        assert!(
            g.x.accounts.contains_key(api_key),
            "unknown test account `{api_key}`"
        );
        let client_id = g.x.generated_client_id("web_");
        let req = exchange::MarketRequest {
            symbol: symbol.to_string(),
            side,
            qty,
            reduce_only: false,
        };
        g.x.execute_market(api_key, &req, client_id, now);
    }

    /// A LIMIT order placed by hand on the website (client id `web_…`), resting on the book: this
    /// server never fills limit orders, so it stays open until cancelled. Returns its client id.
    pub fn manual_limit_order(
        &self,
        api_key: &str,
        symbol: &str,
        side: &str,
        qty: Decimal,
        price: Decimal,
    ) -> String {
        let side = hand_side(side);
        let mut g = self.shared.lock();
        let now = g.now();
        let client_id = g.x.generated_client_id("web_");
        let order_id = g.x.take_order_id();
        let order = exchange::Order {
            order_id,
            client_id: client_id.clone(),
            symbol: symbol.to_string(),
            side,
            orig_type: "LIMIT".to_string(),
            qty,
            executed: Decimal::ZERO,
            avg_price: Decimal::ZERO,
            reduce_only: false,
            close_position: false,
            stop_price: Decimal::ZERO,
            price,
            status: "NEW",
            time: now,
            update_time: now,
        };
        g.x.accounts
            .get_mut(api_key)
            .unwrap_or_else(|| panic!("unknown test account `{api_key}`"))
            .orders
            .push(order);
        client_id
    }

    /// Regular orders of the account still open (resting), as `GET /fapi/v1/openOrders` lists them.
    pub fn open_orders(&self, api_key: &str) -> Vec<String> {
        let g = self.shared.lock();
        g.x.accounts[api_key]
            .orders
            .iter()
            .filter(|o| o.is_open())
            .map(|o| o.client_id.clone())
            .collect()
    }

    /// Liquidates the account's whole position on `symbol` at `price` (mark set there first):
    /// a LIQUIDATION order, its fills, and the clearance fee as `INSURANCE_CLEAR` income.
    /// Returns the liquidation order's client id.
    pub fn liquidate(&self, api_key: &str, symbol: &str, price: Decimal) -> Option<String> {
        let mut g = self.shared.lock();
        let now = g.now();
        assert!(
            g.x.accounts.contains_key(api_key),
            "unknown test account `{api_key}`"
        );
        g.x.liquidate(api_key, symbol, price, now)
            .map(|o| o.client_id)
    }

    /// Books a funding payment on `symbol` (positive received, negative paid) at the server time.
    pub fn funding(&self, api_key: &str, symbol: &str, amount: Decimal) {
        let mut g = self.shared.lock();
        let now = g.now();
        assert!(
            g.x.accounts.contains_key(api_key),
            "unknown test account `{api_key}`"
        );
        g.x.funding(api_key, symbol, amount, now);
    }

    /// Leaves the `filter_type` filter (e.g. `MIN_NOTIONAL`) of `symbol` out of exchangeInfo.
    pub fn hide_filter(&self, symbol: &str, filter_type: &str) {
        let mut g = self.shared.lock();
        g.x.hidden_filters
            .push((symbol.to_string(), filter_type.to_string()));
    }

    /// Cancels an open conditional order by hand (as on the website).
    pub fn cancel_algo_by_hand(&self, api_key: &str, client_algo_id: &str) {
        let mut g = self.shared.lock();
        let now = g.now();
        let acct =
            g.x.accounts
                .get_mut(api_key)
                .unwrap_or_else(|| panic!("unknown test account `{api_key}`"));
        let a = acct
            .algos
            .iter_mut()
            .find(|a| a.client_algo_id == client_algo_id && a.is_open())
            .unwrap_or_else(|| panic!("no open algo order `{client_algo_id}`"));
        a.status = "CANCELED";
        a.update_time = now;
    }

    /// Sets the mark of `symbol` to `price` and fires every open conditional order that price
    /// crosses (a SELL stop at or below its trigger, a BUY stop at or above, take-profits the other
    /// way), filling each as a MARKET order at `price`. Returns how many fired.
    pub fn trigger_algo_orders(&self, symbol: &str, price: Decimal) -> usize {
        let mut g = self.shared.lock();
        let now = g.now();
        g.x.trigger(symbol, price, now)
    }

    /// The activation price and callback rate (percent) a conditional order was placed with.
    pub fn trailing_params(
        &self,
        api_key: &str,
        client_algo_id: &str,
    ) -> Option<(Option<Decimal>, Option<Decimal>)> {
        self.shared
            .lock()
            .x
            .trailing_params(api_key, client_algo_id)
    }

    /// Fires one open conditional order of the account `api_key` at `price`, stamped `time`
    /// (server ms), whatever the mark: for a test that plays each candle against the orders by its
    /// own market model (the differential test plays the paper exchange's). Returns whether an
    /// open order with that `clientAlgoId` was found.
    pub fn fire_algo_order(
        &self,
        api_key: &str,
        client_algo_id: &str,
        price: Decimal,
        time: i64,
    ) -> bool {
        self.shared
            .lock()
            .x
            .fire_one(api_key, client_algo_id, price, time)
    }

    /// Resolves `true` once a `POST /fapi/v1/order` has taken effect beyond those already reported
    /// by earlier calls (the first call: any order since start); `false` on timeout.
    pub async fn wait_for_order(&self, timeout: Duration) -> bool {
        let target = *self.orders_seen.lock().unwrap_or_else(|e| e.into_inner()) + 1;
        let mut rx = self.shared.applied_orders.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|n| *n >= target)).await;
        if matches!(reached, Ok(Ok(_))) {
            let mut seen = self.orders_seen.lock().unwrap_or_else(|e| e.into_inner());
            *seen = (*seen).max(target);
            true
        } else {
            false
        }
    }
}

impl Drop for BinanceTestServer {
    fn drop(&mut self) {
        // Releases held answers and stops accepting connections.
        let _ = self.shared.shutdown.send(true);
    }
}

/// The side of an order a test places by hand (`BUY` or `SELL`, any case).
fn hand_side(side: &str) -> OrderSide {
    match side.to_ascii_uppercase().as_str() {
        "BUY" => OrderSide::Buy,
        "SELL" => OrderSide::Sell,
        other => panic!("side must be BUY or SELL, got `{other}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn empty_server() -> BinanceTestServer {
        BinanceTestServer::start(ServerOptions {
            base_tf_ms: 900_000,
            start_time_ms: 1_700_000_000_000,
            ..ServerOptions::default()
        })
        .await
    }

    #[tokio::test]
    async fn the_journal_keeps_each_requests_own_weight_and_answer_time() {
        let s = empty_server().await;
        let http = reqwest::Client::new();
        for path in [
            "/fapi/v1/time",
            "/fapi/v1/openAlgoOrders",
            "/fapi/v1/openAlgoOrders?symbol=BTCUSDT",
        ] {
            http.get(format!("{}{path}", s.url)).send().await.unwrap();
        }
        let log = s.requests();
        let weights: Vec<u64> = log.iter().map(|r| r.weight).collect();
        // The unsigned time (1), the account-wide open algo list (40) and one symbol's (1): the
        // weight is counted even when the signed request is then refused.
        assert_eq!(weights, [1, 40, 1]);
        for r in &log {
            let answered = r.answered.expect("answered");
            assert!(answered >= r.time, "{r:?}");
        }
    }

    #[tokio::test]
    async fn an_added_latency_delays_every_answer_and_concurrent_requests_wait_side_by_side() {
        let s = empty_server().await;
        let http = reqwest::Client::new();
        let url = format!("{}/fapi/v1/time", s.url);
        // Zero by default: a loopback answer is far under 50 ms.
        let t = Instant::now();
        http.get(&url).send().await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(50));

        s.set_latency(Duration::from_millis(100));
        let t = Instant::now();
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(t.elapsed() >= Duration::from_millis(100));
        let last = s.requests().pop().unwrap();
        assert!(last.answered.unwrap() - last.time >= 100, "{last:?}");

        // Four at once take about one latency, not four.
        let t = Instant::now();
        let all = (0..4).map(|_| http.get(&url).send());
        for r in futures_join(all).await {
            assert_eq!(r.unwrap().status(), 200);
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(300), "{took:?}");
    }

    /// Awaits every future concurrently on the current task's runtime.
    async fn futures_join<F: std::future::Future + Send + 'static>(
        futs: impl Iterator<Item = F>,
    ) -> Vec<F::Output>
    where
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futs.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.expect("join"));
        }
        out
    }
}
