//! Binance USDⓈ-M futures REST adapter: implements [`ports::Exchange`] over `reqwest`.
//!
//! This module owns the wire protocol: signing (HMAC-SHA256 over the exact query string that is
//! sent, `X-MBX-APIKEY`, `timestamp` from the exchange clock offset, `recvWindow`), request
//! building, response parsing ([`parse`]), error classification ([`classify`]), the
//! `X-MBX-USED-WEIGHT-1M` gauge and the exchangeInfo cache.
//!
//! Retry policy is deliberately narrow: idempotent GETs are retried here (3 attempts); a POST or
//! DELETE is sent again only after a -1021 clock resync or a 429/418 (both mean "not executed").
//! Everything else goes back to the engine, which owns exactly-once order logic.
//!
//! All parameters — POST and DELETE included — travel in the query string, so the string that
//! is signed is byte for byte the string that is sent. Neither the secret, the API key nor the
//! signature ever appears in an error or log line: errors carry `METHOD /path` only.
//!
//! [`ports::Exchange`]: albra_core::ports::Exchange

mod classify;
pub mod codes;
#[cfg(test)]
mod loopback_tests;
pub(crate) mod parse;
pub mod permissions;

use albra_core::data::FundingRate;
use albra_core::domain::{Candle, Price, Symbol, Timeframe};
use albra_core::ports::{
    AccountSnapshot, AlgoKind, AlgoOrder, AlgoOrderInfo, ApiKeys, Exchange, ExchangeError,
    ExchangePosition, Income, MarginType, MarketOrder, OrderInfo, Refusal, SymbolConfig,
    SymbolFilters, UserTrade,
};
use async_trait::async_trait;
use classify::Transport;
use hmac::{Hmac, Mac};
use reqwest::header::HeaderValue;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::Value;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Connection settings of the Binance client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinanceConfig {
    /// `https://fapi.binance.com`, or a loopback test server.
    pub base_url: String,
    /// Validity window of signed requests (Binance allows at most 60000).
    pub recv_window_ms: u64,
    /// Whole-request timeout (connect, send, wait, read).
    pub timeout: Duration,
    /// Longest pause the client accepts before an internal retry; a longer `Retry-After` is
    /// returned to the caller as `Retryable`.
    pub max_retry_wait: Duration,
}

impl BinanceConfig {
    pub const DEFAULT_URL: &'static str = "https://fapi.binance.com";
    /// Environment variable that overrides the configured base URL (tests, testnet).
    pub const URL_ENV: &'static str = "ALBRA_BINANCE_URL";

    /// The base URL to use: `ALBRA_BINANCE_URL` wins over `configured`, which wins over
    /// [`Self::DEFAULT_URL`]. Empty values count as unset; a trailing `/` is dropped.
    pub fn resolve_url(configured: Option<&str>) -> String {
        resolve_url_from(std::env::var(Self::URL_ENV).ok().as_deref(), configured)
    }
}

fn resolve_url_from(env: Option<&str>, configured: Option<&str>) -> String {
    albra_core::config::resolve_url(env, None, configured)
}

impl Default for BinanceConfig {
    fn default() -> Self {
        BinanceConfig {
            base_url: Self::DEFAULT_URL.to_string(),
            recv_window_ms: 5000,
            timeout: Duration::from_secs(10),
            max_retry_wait: Duration::from_secs(10),
        }
    }
}

/// Hex HMAC-SHA256 of `payload` keyed with `secret`: Binance's `signature` parameter.
pub fn sign(secret: &str, payload: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(payload.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// `k=v&k=v` with values percent-encoded, in the given order.
fn encode_query(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencoding::encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A decimal as Binance wants it: no exponent, no trailing zeros.
fn fmt_dec(d: Decimal) -> String {
    d.normalize().to_string()
}

fn local_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Pause before internal retry `attempt` (1-based) when the server gave no `Retry-After`.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 * u64::from(attempt))
}

/// Attempts per idempotent request (first try included).
const GET_ATTEMPTS: u32 = 3;
/// Most klines one request may ask for.
pub const MAX_KLINES: u32 = 1500;
/// Most funding rates one request may ask for.
pub const MAX_FUNDING_RATES: u32 = 1000;
/// Rows per page for userTrades and income (Binance's maximum).
const HISTORY_LIMIT: &str = "1000";
/// Trading rules change rarely; refetch after this long so long-lived processes follow them.
const EXCHANGE_INFO_TTL: Duration = Duration::from_secs(3600);
/// Marks "no weight header seen yet" in the weight gauge.
const NO_WEIGHT: u64 = u64::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Auth {
    Public,
    Signed,
}

/// One failed attempt: the error plus whether the exchange said it refused the request
/// unexecuted because of rate limits (429/418), which makes even a POST safe to resend.
struct Failure {
    error: ExchangeError,
    rate_limited: bool,
}

impl From<ExchangeError> for Failure {
    fn from(error: ExchangeError) -> Self {
        Failure {
            error,
            rate_limited: false,
        }
    }
}

struct Keys {
    api_key: HeaderValue,
    secret: albra_core::ports::Secret,
}

type SymbolTable = Arc<HashMap<String, Value>>;

struct Inner {
    http: reqwest::Client,
    base_url: String,
    recv_window_ms: u64,
    max_retry_wait: Duration,
    keys: Option<Keys>,
    link: Arc<Link>,
}

/// What the clients of one process and host share (see [`BinanceClient::with_keys`]): the
/// exchange clock, the IP weight gauge and the exchangeInfo table. One `/fapi/v1/time` then
/// serves every account's signatures, and one exchangeInfo every account's filters.
struct Link {
    /// Exchange clock minus local clock in ms, once measured.
    time_offset: Mutex<Option<i64>>,
    /// The exchange clock at the last measurement and the monotonic instant it stood for.
    clock: Mutex<Option<(i64, Instant)>>,
    used_weight: AtomicU64,
    exchange_info: tokio::sync::Mutex<Option<(Instant, SymbolTable)>>,
}

impl Link {
    fn new() -> Self {
        Link {
            time_offset: Mutex::new(None),
            clock: Mutex::new(None),
            used_weight: AtomicU64::new(NO_WEIGHT),
            exchange_info: tokio::sync::Mutex::new(None),
        }
    }
}

/// The checked form of a key pair.
fn checked_keys(k: ApiKeys) -> Result<Keys, ExchangeError> {
    if k.api_key.is_empty() || k.api_secret.is_empty() {
        return Err(ExchangeError::Fatal(
            "Binance API key or secret is empty".to_string(),
        ));
    }
    let mut api_key = HeaderValue::from_str(k.api_key.expose()).map_err(|_| {
        ExchangeError::Fatal(
            "Binance API key contains characters not allowed in an HTTP header".to_string(),
        )
    })?;
    api_key.set_sensitive(true);
    Ok(Keys {
        api_key,
        secret: k.api_secret,
    })
}

/// Binance USDⓈ-M futures REST client. Cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct BinanceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for BinanceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BinanceClient")
            .field("base_url", &self.inner.base_url)
            .field("signed", &self.inner.keys.is_some())
            .finish()
    }
}

impl BinanceClient {
    /// A client for `cfg.base_url`. With `keys: None` only public market data works; signed
    /// calls fail with `Fatal("… needs API keys")`.
    pub fn new(cfg: BinanceConfig, keys: Option<ApiKeys>) -> Result<Self, ExchangeError> {
        if cfg.recv_window_ms == 0 || cfg.recv_window_ms > 60_000 {
            return Err(ExchangeError::Fatal(format!(
                "Binance recvWindow must be 1..=60000 ms, got {}",
                cfg.recv_window_ms
            )));
        }
        let base_url = cfg.base_url.trim().trim_end_matches('/').to_string();
        let url = crate::http::checked_base_url("Binance base URL", &base_url)
            .map_err(ExchangeError::Fatal)?;
        let keys = keys.map(checked_keys).transpose()?;
        // A connect timeout shorter than the whole-request timeout makes "could not connect"
        // surface as a connect error (nothing sent → retryable), never as an ambiguous timeout.
        let connect_timeout = (cfg.timeout / 2).min(Duration::from_secs(5));
        // No redirects and no Referer (see `crate::http`): keys and signatures reach only `url`.
        let http = crate::http::client_builder(&url, cfg.timeout)
            .connect_timeout(connect_timeout)
            .build()
            .map_err(|e| ExchangeError::Fatal(format!("cannot build HTTP client: {e}")))?;
        Ok(BinanceClient {
            inner: Arc::new(Inner {
                http,
                base_url,
                recv_window_ms: cfg.recv_window_ms,
                max_retry_wait: cfg.max_retry_wait,
                keys,
                link: Arc::new(Link::new()),
            }),
        })
    }

    /// Another client of the same host and settings that signs with `keys` and shares this
    /// one's connections, exchange clock offset, weight gauge and exchangeInfo table: the
    /// process measures the clock once for every account (a -1021 resync by any of them serves
    /// them all) and reads the trading rules once.
    pub fn with_keys(&self, keys: ApiKeys) -> Result<Self, ExchangeError> {
        let i = &self.inner;
        Ok(BinanceClient {
            inner: Arc::new(Inner {
                http: i.http.clone(),
                base_url: i.base_url.clone(),
                recv_window_ms: i.recv_window_ms,
                max_retry_wait: i.max_retry_wait,
                keys: Some(checked_keys(keys)?),
                link: i.link.clone(),
            }),
        })
    }

    /// The last `X-MBX-USED-WEIGHT-1M` the exchange reported.
    pub fn used_weight_1m(&self) -> Option<u32> {
        match self.inner.link.used_weight.load(Ordering::Relaxed) {
            NO_WEIGHT => None,
            w => u32::try_from(w).ok(),
        }
    }

    /// Exchange clock minus local clock in ms, once synced.
    pub fn time_offset_ms(&self) -> Option<i64> {
        *self.inner.link.time_offset.lock().expect("offset lock")
    }

    /// The exchange clock (ms): from the last measurement when it is at most `max_age` old (its
    /// server time plus the monotonic time since), otherwise measured now.
    pub async fn exchange_now(&self, max_age: Duration) -> Result<i64, ExchangeError> {
        let last = *self.inner.link.clock.lock().expect("clock lock");
        if let Some((server, at)) = last {
            let age = at.elapsed();
            if age <= max_age {
                return Ok(server + age.as_millis() as i64);
            }
        }
        Ok(self.fetch_time().await?.0)
    }

    /// Measure the exchange clock offset (`GET /fapi/v1/time`), store it and return it.
    pub async fn sync_time(&self) -> Result<i64, ExchangeError> {
        Ok(self.fetch_time().await?.1)
    }

    /// Server time and the offset measured against the midpoint of the round trip.
    async fn fetch_time(&self) -> Result<(i64, i64), ExchangeError> {
        let (t0, i0) = (local_now_ms(), Instant::now());
        let v = self
            .call(Method::GET, "/fapi/v1/time", vec![], Auth::Public)
            .await?;
        let (t1, i1) = (local_now_ms(), Instant::now());
        let server = decode("GET /fapi/v1/time", &v, parse::server_time)?;
        let offset = server - (t0 + t1) / 2;
        *self.inner.link.time_offset.lock().expect("offset lock") = Some(offset);
        *self.inner.link.clock.lock().expect("clock lock") = Some((server, i0 + (i1 - i0) / 2));
        tracing::debug!(offset_ms = offset, "binance clock offset synced");
        Ok((server, offset))
    }

    /// Send a request (with the module's retry policy) and return the parsed JSON of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: &'static str,
        params: Vec<(&'static str, String)>,
        auth: Auth,
    ) -> Result<Answer, ExchangeError> {
        let endpoint = format!("{method} {path}");
        if auth == Auth::Signed && self.inner.keys.is_none() {
            return Err(ExchangeError::Fatal(format!(
                "{endpoint} needs API keys; this client was built for public data only"
            )));
        }
        let idempotent = method == Method::GET;
        let mut attempt = 0;
        let mut resynced = false;
        let mut rate_retry_used = false;
        loop {
            attempt += 1;
            if auth == Auth::Signed && self.time_offset_ms().is_none() {
                // Boxed: syncing calls `call` again (for the public time endpoint).
                Box::pin(self.sync_time()).await?;
            }
            let failure = match self
                .send_once(&method, path, &params, auth, &endpoint)
                .await
            {
                Ok(raw) => {
                    return match serde_json::from_str(&raw) {
                        Ok(json) => Ok(Answer { json, raw }),
                        Err(e) => Err(ExchangeError::Decode {
                            endpoint: endpoint.clone(),
                            error: format!("invalid JSON: {e}"),
                            excerpt: classify::excerpt(&raw),
                        }),
                    }
                }
                Err(f) => f,
            };
            let Failure {
                error,
                rate_limited,
            } = failure;
            // -1021: our clock drifted. The exchange rejected the request, so resync and send it
            // once more (any method); a second -1021 is reported as retryable.
            if auth == Auth::Signed && error.refusal() == Some(Refusal::ClockOutOfWindow) {
                if !resynced {
                    resynced = true;
                    tracing::warn!(%endpoint, "timestamp outside recvWindow; resyncing clock");
                    Box::pin(self.sync_time()).await?;
                    continue;
                }
                return Err(ExchangeError::Retryable {
                    endpoint,
                    detail: format!(
                        "timestamp outside recvWindow even after a clock resync ({error})"
                    ),
                    retry_after: None,
                });
            }
            if let ExchangeError::Retryable { retry_after, .. } = &error {
                let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                let may_retry = if idempotent {
                    attempt < GET_ATTEMPTS
                } else {
                    rate_limited && !rate_retry_used
                };
                if may_retry && wait <= self.inner.max_retry_wait {
                    if !idempotent {
                        rate_retry_used = true;
                    }
                    // Warn, not debug: a fault the client rides out must still show in the log.
                    tracing::warn!(%endpoint, attempt, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            }
            return Err(error);
        }
    }

    /// One HTTP exchange. Signed requests get a fresh timestamp and signature every time.
    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        params: &[(&'static str, String)],
        auth: Auth,
        endpoint: &str,
    ) -> Result<String, Failure> {
        let idempotent = *method == Method::GET;
        let mut query = encode_query(params);
        let mut request;
        match (auth, &self.inner.keys) {
            (Auth::Signed, Some(keys)) => {
                let timestamp = local_now_ms() + self.time_offset_ms().unwrap_or(0);
                if !query.is_empty() {
                    query.push('&');
                }
                query.push_str(&format!(
                    "recvWindow={}&timestamp={timestamp}",
                    self.inner.recv_window_ms
                ));
                let signature = sign(keys.secret.expose(), &query);
                query.push_str("&signature=");
                query.push_str(&signature);
                request = self
                    .inner
                    .http
                    .request(method.clone(), self.url(path, &query))
                    .header("X-MBX-APIKEY", keys.api_key.clone());
            }
            (Auth::Signed, None) => {
                return Err(ExchangeError::Fatal(format!("{endpoint} needs API keys")).into())
            }
            (Auth::Public, _) => {
                request = self
                    .inner
                    .http
                    .request(method.clone(), self.url(path, &query));
            }
        }
        if !idempotent {
            // Everything is in the query string; an explicit empty body keeps proxies happy.
            request = request.header(reqwest::header::CONTENT_LENGTH, "0");
        }
        let response = request.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                Transport::Connect
            } else {
                Transport::AfterSend
            };
            Failure::from(classify::transport_error(
                idempotent,
                endpoint,
                kind,
                transport_detail(e),
            ))
        })?;
        if let Some(w) = response
            .headers()
            .get("x-mbx-used-weight-1m")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            self.inner
                .link
                .used_weight
                .store(u64::from(w), Ordering::Relaxed);
        }
        let status = response.status().as_u16();
        let retry_after = classify::parse_retry_after(
            response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = response.text().await.map_err(|e| {
            // The status line arrived, so the request was processed; only its answer is lost.
            Failure::from(classify::transport_error(
                idempotent,
                endpoint,
                Transport::AfterSend,
                format!("HTTP {status}, body unreadable: {}", transport_detail(e)),
            ))
        })?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        tracing::debug!(%endpoint, status, "binance answered with an error");
        Err(Failure {
            error: classify::status_error(idempotent, endpoint, status, retry_after, &body),
            rate_limited: classify::is_rate_limit_status(status),
        })
    }

    fn url(&self, path: &str, query: &str) -> String {
        if query.is_empty() {
            format!("{}{path}", self.inner.base_url)
        } else {
            format!("{}{path}?{query}", self.inner.base_url)
        }
    }

    /// Symbol table from exchangeInfo, fetched once per [`EXCHANGE_INFO_TTL`].
    async fn exchange_info(&self) -> Result<SymbolTable, ExchangeError> {
        let mut cache = self.inner.link.exchange_info.lock().await;
        if let Some((at, table)) = cache.as_ref() {
            if at.elapsed() < EXCHANGE_INFO_TTL {
                return Ok(table.clone());
            }
        }
        let endpoint = "GET /fapi/v1/exchangeInfo";
        let v = self
            .call(Method::GET, "/fapi/v1/exchangeInfo", vec![], Auth::Public)
            .await?;
        let table = Arc::new(decode(endpoint, &v, parse::exchange_symbols)?);
        *cache = Some((Instant::now(), table.clone()));
        Ok(table)
    }
}

/// A reqwest error as text without its URL (which holds the signature) and with its causes.
fn transport_detail(e: reqwest::Error) -> String {
    use std::error::Error as _;
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "body error"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut out = format!("{kind}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// A 2xx answer: parsed JSON plus the raw body for error excerpts.
struct Answer {
    json: Value,
    raw: String,
}

/// Run a parser over an answer; a failure becomes `Decode` with endpoint and body excerpt.
fn decode<T>(
    endpoint: &str,
    answer: &Answer,
    f: impl FnOnce(&Value) -> Result<T, String>,
) -> Result<T, ExchangeError> {
    f(&answer.json).map_err(|error| ExchangeError::Decode {
        endpoint: endpoint.to_string(),
        error,
        excerpt: classify::excerpt(&answer.raw),
    })
}

/// Query parameters of a MARKET order (`POST /fapi/v1/order`).
fn market_order_params(order: &MarketOrder) -> Vec<(&'static str, String)> {
    let mut p = vec![
        ("symbol", order.symbol.as_str().to_string()),
        ("side", order.side.as_str().to_string()),
        ("type", "MARKET".to_string()),
        ("quantity", fmt_dec(order.qty.get())),
    ];
    if order.reduce_only {
        p.push(("reduceOnly", "true".to_string()));
    }
    p.push(("newClientOrderId", order.client_id.as_str().to_string()));
    p.push(("newOrderRespType", "RESULT".to_string()));
    p
}

/// Query parameters of a conditional order (`POST /fapi/v1/algoOrder`, algoType=CONDITIONAL).
///
/// Per Binance's New Algo Order (TRADE) REST documentation
/// (<https://developers.binance.com/docs/derivatives/usds-margined-futures/trade/rest-api/New-Algo-Order>):
/// `quantity` cannot be sent with
/// `closePosition=true`, nor can `reduceOnly`; `closePosition` only exists for STOP_MARKET and
/// TAKE_PROFIT_MARKET; trailing stops take `activatePrice` (optional) and `callbackRate`
/// (0.1–10, percent) instead of `triggerPrice`. (The REST page names the parameter
/// `activatePrice`, matching the `activatePrice` echoed in answers; the WebSocket API page spells
/// it `activationPrice`.) Inconsistent orders are refused here rather than silently reshaped.
fn algo_order_params(order: &AlgoOrder) -> Result<Vec<(&'static str, String)>, ExchangeError> {
    let bad = |why: &str| {
        ExchangeError::Fatal(format!(
            "POST /fapi/v1/algoOrder: refusing {} {}: {why}",
            order.kind.binance_type(),
            order.client_algo_id
        ))
    };
    let trailing = matches!(order.kind, AlgoKind::TrailingStopMarket { .. });
    if order.close_position && order.qty.is_some() {
        return Err(bad("closePosition orders carry no quantity"));
    }
    if !order.close_position && order.qty.is_none() {
        return Err(bad("a quantity or closePosition is required"));
    }
    if order.close_position && trailing {
        return Err(bad(
            "closePosition is only valid for STOP_MARKET and TAKE_PROFIT_MARKET",
        ));
    }
    if !trailing && order.trigger_price.is_none() {
        return Err(bad("a trigger price is required"));
    }
    let mut p = vec![
        ("algoType", "CONDITIONAL".to_string()),
        ("symbol", order.symbol.as_str().to_string()),
        ("side", order.side.as_str().to_string()),
        ("type", order.kind.binance_type().to_string()),
    ];
    if let Some(q) = order.qty {
        p.push(("quantity", fmt_dec(q.get())));
    }
    match order.kind {
        AlgoKind::TrailingStopMarket { callback_rate } => {
            if let Some(a) = order.trigger_price {
                p.push(("activatePrice", fmt_dec(a.get())));
            }
            p.push(("callbackRate", fmt_dec(callback_rate)));
        }
        AlgoKind::StopMarket | AlgoKind::TakeProfitMarket => {
            if let Some(t) = order.trigger_price {
                p.push(("triggerPrice", fmt_dec(t.get())));
            }
        }
    }
    let working_type = match order.working_type {
        albra_core::ports::WorkingType::MarkPrice => "MARK_PRICE",
        albra_core::ports::WorkingType::ContractPrice => "CONTRACT_PRICE",
    };
    p.push(("workingType", working_type.to_string()));
    if order.close_position {
        p.push(("closePosition", "true".to_string()));
    } else if order.reduce_only {
        p.push(("reduceOnly", "true".to_string()));
    }
    p.push(("clientAlgoId", order.client_algo_id.as_str().to_string()));
    Ok(p)
}

fn margin_type_str(m: MarginType) -> &'static str {
    match m {
        MarginType::Isolated => "ISOLATED",
        MarginType::Crossed => "CROSSED",
    }
}

impl BinanceClient {
    /// One signed page of an account's history on `path` (`userTrades`, `allOrders`, `income`):
    /// the rows from `start_time` on, up to 1000, on `symbol` when given.
    async fn history<T>(
        &self,
        path: &'static str,
        symbol: Option<&Symbol>,
        start_time: i64,
        parse: fn(&Value) -> Result<T, String>,
    ) -> Result<T, ExchangeError> {
        let mut params = Vec::with_capacity(3);
        if let Some(s) = symbol {
            params.push(("symbol", s.as_str().to_string()));
        }
        params.push(("startTime", start_time.to_string()));
        params.push(("limit", HISTORY_LIMIT.to_string()));
        let v = self.call(Method::GET, path, params, Auth::Signed).await?;
        decode(&format!("GET {path}"), &v, parse)
    }
}

/// The IP weight Binance charges for one `GET /fapi/v1/klines` of `limit` rows: it prices the
/// request by what was asked, not by what came back.
pub fn klines_weight(limit: u32) -> u32 {
    match limit {
        0..=99 => 1,
        100..=499 => 2,
        500..=1000 => 5,
        _ => 10,
    }
}

/// Market history for research downloads: public, one page per call, over an explicit window.
impl BinanceClient {
    /// The closed candles of `symbol` opening in `[start, end)`, oldest first: one page of at
    /// most `limit` (capped at [`MAX_KLINES`]) from `start` on. A candle still forming at the
    /// exchange time `now` is never returned, whatever the window says.
    pub async fn klines_between(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        (start, end): (i64, i64),
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        if limit == 0 || start >= end {
            return Ok(Vec::new());
        }
        let v = self
            .call(
                Method::GET,
                "/fapi/v1/klines",
                vec![
                    ("symbol", symbol.as_str().to_string()),
                    ("interval", tf.as_str().to_string()),
                    ("startTime", start.to_string()),
                    // Binance's endTime is inclusive.
                    ("endTime", (end - 1).to_string()),
                    ("limit", limit.min(MAX_KLINES).to_string()),
                ],
                Auth::Public,
            )
            .await?;
        let mut rows = decode("GET /fapi/v1/klines", &v, |v| {
            parse::closed_klines(v, tf, usize::MAX, now)
        })?;
        rows.retain(|c| (start..end).contains(&c.open_time));
        Ok(rows)
    }

    /// The funding settlements of `symbol` in `[start, end)`, oldest first: one page of at most
    /// `limit` (capped at [`MAX_FUNDING_RATES`]) from `start` on (`GET /fapi/v1/fundingRate`,
    /// whose rate limit is its own: 500 requests per 5 minutes per IP).
    pub async fn funding_rates(
        &self,
        symbol: &Symbol,
        (start, end): (i64, i64),
        limit: u32,
    ) -> Result<Vec<FundingRate>, ExchangeError> {
        if limit == 0 || start >= end {
            return Ok(Vec::new());
        }
        let v = self
            .call(
                Method::GET,
                "/fapi/v1/fundingRate",
                vec![
                    ("symbol", symbol.as_str().to_string()),
                    ("startTime", start.to_string()),
                    ("endTime", (end - 1).to_string()),
                    ("limit", limit.min(MAX_FUNDING_RATES).to_string()),
                ],
                Auth::Public,
            )
            .await?;
        let mut rows = decode("GET /fapi/v1/fundingRate", &v, parse::funding_rates)?;
        rows.retain(|r| (start..end).contains(&r.time));
        Ok(rows)
    }
}

#[async_trait]
impl Exchange for BinanceClient {
    async fn server_time(&self) -> Result<i64, ExchangeError> {
        Ok(self.fetch_time().await?.0)
    }

    fn used_weight_1m(&self) -> Option<u32> {
        BinanceClient::used_weight_1m(self)
    }

    async fn closed_klines(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Ending the window before the candle still forming asks for exactly the closed rows:
        // `limit` 1000 costs weight 5, where 1001 (one more for the forming row) cost 10.
        let last_closed_open = tf.open_of(now) - 1;
        let v = self
            .call(
                Method::GET,
                "/fapi/v1/klines",
                vec![
                    ("symbol", symbol.as_str().to_string()),
                    ("interval", tf.as_str().to_string()),
                    ("endTime", last_closed_open.to_string()),
                    ("limit", limit.min(MAX_KLINES).to_string()),
                ],
                Auth::Public,
            )
            .await?;
        decode("GET /fapi/v1/klines", &v, |v| {
            parse::closed_klines(v, tf, limit as usize, now)
        })
    }

    async fn symbol_filters(&self, symbol: &Symbol) -> Result<SymbolFilters, ExchangeError> {
        let table = self.exchange_info().await?;
        let entry = table.get(symbol.as_str()).ok_or_else(|| {
            ExchangeError::Fatal(format!(
                "exchangeInfo does not list symbol {symbol}; refusing to guess its trading rules"
            ))
        })?;
        parse::symbol_filters(symbol, entry)
    }

    async fn last_price(&self, symbol: &Symbol) -> Result<Price, ExchangeError> {
        let v = self
            .call(
                Method::GET,
                "/fapi/v1/ticker/price",
                vec![("symbol", symbol.as_str().to_string())],
                Auth::Public,
            )
            .await?;
        decode("GET /fapi/v1/ticker/price", &v, parse::ticker_price)
    }

    async fn account(&self) -> Result<AccountSnapshot, ExchangeError> {
        let v = self
            .call(Method::GET, "/fapi/v3/account", vec![], Auth::Signed)
            .await?;
        decode("GET /fapi/v3/account", &v, parse::account)
    }

    async fn positions(&self) -> Result<Vec<ExchangePosition>, ExchangeError> {
        let v = self
            .call(Method::GET, "/fapi/v3/positionRisk", vec![], Auth::Signed)
            .await?;
        decode("GET /fapi/v3/positionRisk", &v, parse::positions)
    }

    async fn symbol_config(&self, symbol: &Symbol) -> Result<SymbolConfig, ExchangeError> {
        let v = self
            .call(
                Method::GET,
                "/fapi/v1/symbolConfig",
                vec![("symbol", symbol.as_str().to_string())],
                Auth::Signed,
            )
            .await?;
        decode("GET /fapi/v1/symbolConfig", &v, |v| {
            parse::symbol_config(v, symbol)
        })
    }

    async fn set_leverage(&self, symbol: &Symbol, leverage: u32) -> Result<(), ExchangeError> {
        let v = self
            .call(
                Method::POST,
                "/fapi/v1/leverage",
                vec![
                    ("symbol", symbol.as_str().to_string()),
                    ("leverage", leverage.to_string()),
                ],
                Auth::Signed,
            )
            .await?;
        decode("POST /fapi/v1/leverage", &v, |v| {
            parse::as_obj(v, "leverage answer").map(|_| ())
        })
    }

    async fn set_margin_type(
        &self,
        symbol: &Symbol,
        margin: MarginType,
    ) -> Result<(), ExchangeError> {
        let result = self
            .call(
                Method::POST,
                "/fapi/v1/marginType",
                vec![
                    ("symbol", symbol.as_str().to_string()),
                    ("marginType", margin_type_str(margin).to_string()),
                ],
                Auth::Signed,
            )
            .await;
        match result {
            Ok(_) => Ok(()),
            // -4046 "No need to change margin type.": already what we asked for.
            Err(e) if e.refusal() == Some(Refusal::MarginTypeUnchanged) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn place_market(&self, order: &MarketOrder) -> Result<OrderInfo, ExchangeError> {
        let v = self
            .call(
                Method::POST,
                "/fapi/v1/order",
                market_order_params(order),
                Auth::Signed,
            )
            .await?;
        decode("POST /fapi/v1/order", &v, parse::order)
    }

    async fn order_by_client_id(
        &self,
        symbol: &Symbol,
        client_id: &str,
    ) -> Result<Option<OrderInfo>, ExchangeError> {
        let result = self
            .call(
                Method::GET,
                "/fapi/v1/order",
                vec![
                    ("symbol", symbol.as_str().to_string()),
                    ("origClientOrderId", client_id.to_string()),
                ],
                Auth::Signed,
            )
            .await;
        match result {
            Ok(v) => decode("GET /fapi/v1/order", &v, parse::order).map(Some),
            Err(e) if e.refusal() == Some(Refusal::UnknownOrder) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn place_algo(&self, order: &AlgoOrder) -> Result<AlgoOrderInfo, ExchangeError> {
        let params = algo_order_params(order)?;
        let v = self
            .call(Method::POST, "/fapi/v1/algoOrder", params, Auth::Signed)
            .await?;
        decode("POST /fapi/v1/algoOrder", &v, parse::algo_order)
    }

    async fn algo_by_client_id(
        &self,
        client_algo_id: &str,
    ) -> Result<Option<AlgoOrderInfo>, ExchangeError> {
        let result = self
            .call(
                Method::GET,
                "/fapi/v1/algoOrder",
                vec![("clientAlgoId", client_algo_id.to_string())],
                Auth::Signed,
            )
            .await;
        match result {
            Ok(v) => decode("GET /fapi/v1/algoOrder", &v, parse::algo_order).map(Some),
            // -2013 "Order does not exist." / -2011 "Unknown order sent.": not known here
            // (never placed, or purged: Binance forgets unfilled cancelled orders after 3 days).
            Err(e) if e.refusal() == Some(Refusal::UnknownOrder) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `DELETE /fapi/v1/algoOrder?clientAlgoId=`. Binance identifies algo orders by id alone
    /// (the endpoint takes no `symbol`); `_symbol` is kept for the port's shape. An unknown id
    /// comes back as `Rejected` so the caller can tell "already gone" from "cancelled".
    async fn cancel_algo(
        &self,
        _symbol: &Symbol,
        client_algo_id: &str,
    ) -> Result<(), ExchangeError> {
        let endpoint = "DELETE /fapi/v1/algoOrder";
        let v = self
            .call(
                Method::DELETE,
                "/fapi/v1/algoOrder",
                vec![("clientAlgoId", client_algo_id.to_string())],
                Auth::Signed,
            )
            .await?;
        match decode(endpoint, &v, parse::cancel_algo_failure)? {
            None => Ok(()),
            Some((code, msg)) => Err(codes::rejected(endpoint, code, &msg)),
        }
    }

    /// `GET /fapi/v1/openOrders`: weight 1 for one symbol, 40 for all.
    async fn open_orders(&self, symbol: Option<&Symbol>) -> Result<Vec<OrderInfo>, ExchangeError> {
        let params = symbol
            .map(|s| vec![("symbol", s.as_str().to_string())])
            .unwrap_or_default();
        let v = self
            .call(Method::GET, "/fapi/v1/openOrders", params, Auth::Signed)
            .await?;
        decode("GET /fapi/v1/openOrders", &v, parse::orders)
    }

    async fn cancel_order(&self, symbol: &Symbol, client_id: &str) -> Result<(), ExchangeError> {
        self.call(
            Method::DELETE,
            "/fapi/v1/order",
            vec![
                ("symbol", symbol.as_str().to_string()),
                ("origClientOrderId", client_id.to_string()),
            ],
            Auth::Signed,
        )
        .await
        .map(|_| ())
    }

    async fn open_algo_orders(
        &self,
        symbol: Option<&Symbol>,
    ) -> Result<Vec<AlgoOrderInfo>, ExchangeError> {
        let params = symbol
            .map(|s| vec![("symbol", s.as_str().to_string())])
            .unwrap_or_default();
        let v = self
            .call(Method::GET, "/fapi/v1/openAlgoOrders", params, Auth::Signed)
            .await?;
        decode("GET /fapi/v1/openAlgoOrders", &v, parse::algo_orders)
    }

    /// Fills from `start_time` on (Binance returns at most 7 days from `startTime`, up to 1000
    /// rows per call).
    async fn user_trades(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<UserTrade>, ExchangeError> {
        self.history(
            "/fapi/v1/userTrades",
            Some(symbol),
            start_time,
            parse::user_trades,
        )
        .await
    }

    async fn all_orders(
        &self,
        symbol: &Symbol,
        start_time: i64,
    ) -> Result<Vec<OrderInfo>, ExchangeError> {
        self.history(
            "/fapi/v1/allOrders",
            Some(symbol),
            start_time,
            parse::orders,
        )
        .await
    }

    /// Income rows from `start_time` on (up to 1000 per call).
    async fn income(&self, start_time: i64) -> Result<Vec<Income>, ExchangeError> {
        self.history("/fapi/v1/income", None, start_time, parse::income)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use albra_core::domain::{ClientId, OrderSide, Price, Qty};
    use albra_core::ports::WorkingType;
    use rust_decimal_macros::dec;

    #[test]
    fn sign_matches_binance_documentation() {
        let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let payload = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            sign(secret, payload),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }

    #[test]
    fn url_resolution_order() {
        assert_eq!(resolve_url_from(None, None), BinanceConfig::DEFAULT_URL);
        assert_eq!(
            resolve_url_from(None, Some("https://testnet.example/")),
            "https://testnet.example"
        );
        assert_eq!(
            resolve_url_from(
                Some("http://127.0.0.1:9000"),
                Some("https://testnet.example")
            ),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            resolve_url_from(Some("  "), Some("https://testnet.example")),
            "https://testnet.example"
        );
        assert_eq!(
            resolve_url_from(Some(""), Some("")),
            BinanceConfig::DEFAULT_URL
        );
    }

    #[test]
    fn config_defaults_and_validation() {
        let c = BinanceConfig::default();
        assert_eq!(c.base_url, "https://fapi.binance.com");
        assert_eq!(c.recv_window_ms, 5000);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.max_retry_wait, Duration::from_secs(10));
        let too_wide = BinanceConfig {
            recv_window_ms: 60_001,
            ..BinanceConfig::default()
        };
        assert!(matches!(
            BinanceClient::new(too_wide, None),
            Err(ExchangeError::Fatal(m)) if m.contains("recvWindow")
        ));
        let not_url = BinanceConfig {
            base_url: "fapi.binance.com".into(),
            ..BinanceConfig::default()
        };
        assert!(matches!(
            BinanceClient::new(not_url, None),
            Err(ExchangeError::Fatal(_))
        ));
        let client = BinanceClient::new(BinanceConfig::default(), None).unwrap();
        assert_eq!(client.used_weight_1m(), None);
        assert_eq!(client.time_offset_ms(), None);
    }

    #[test]
    fn query_encoding_keeps_order_and_escapes() {
        let q = encode_query(&[
            ("symbol", "BTCUSDT".into()),
            ("newClientOrderId", "al-EN-ab:c/d".into()),
            ("quantity", fmt_dec(dec!(0.00100))),
        ]);
        assert_eq!(
            q,
            "symbol=BTCUSDT&newClientOrderId=al-EN-ab%3Ac%2Fd&quantity=0.001"
        );
        assert_eq!(fmt_dec(dec!(100.000)), "100");
        assert_eq!(
            fmt_dec(Decimal::from_scientific("1.5e-7").unwrap()),
            "0.00000015"
        );
        assert_eq!(fmt_dec(Decimal::from_scientific("2e3").unwrap()), "2000");
    }

    fn cid(s: &str) -> ClientId {
        ClientId(s.to_string())
    }

    #[test]
    fn market_order_query() {
        let mut o = MarketOrder {
            symbol: Symbol::new("BTCUSDT"),
            side: OrderSide::Buy,
            qty: Qty::new(dec!(0.0020)),
            reduce_only: false,
            client_id: cid("al-EN-0a1b2c3d4e5f-1k2j3"),
        };
        assert_eq!(
            encode_query(&market_order_params(&o)),
            "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.002&newClientOrderId=al-EN-0a1b2c3d4e5f-1k2j3&newOrderRespType=RESULT"
        );
        o.reduce_only = true;
        o.side = OrderSide::Sell;
        assert_eq!(
            encode_query(&market_order_params(&o)),
            "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.002&reduceOnly=true&newClientOrderId=al-EN-0a1b2c3d4e5f-1k2j3&newOrderRespType=RESULT"
        );
    }

    fn stop() -> AlgoOrder {
        AlgoOrder {
            symbol: Symbol::new("BTCUSDT"),
            side: OrderSide::Sell,
            kind: AlgoKind::StopMarket,
            trigger_price: Some(Price::new(dec!(105000.00))),
            qty: Some(Qty::new(dec!(0.002))),
            close_position: false,
            reduce_only: true,
            working_type: WorkingType::MarkPrice,
            client_algo_id: cid("al-SL-0a1b2c3d4e5f-1k2j3"),
        }
    }

    #[test]
    fn algo_order_queries() {
        assert_eq!(
            encode_query(&algo_order_params(&stop()).unwrap()),
            "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=STOP_MARKET&quantity=0.002&triggerPrice=105000&workingType=MARK_PRICE&reduceOnly=true&clientAlgoId=al-SL-0a1b2c3d4e5f-1k2j3"
        );
        let close_all = AlgoOrder {
            kind: AlgoKind::TakeProfitMarket,
            qty: None,
            close_position: true,
            working_type: WorkingType::ContractPrice,
            ..stop()
        };
        assert_eq!(
            encode_query(&algo_order_params(&close_all).unwrap()),
            "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=TAKE_PROFIT_MARKET&triggerPrice=105000&workingType=CONTRACT_PRICE&closePosition=true&clientAlgoId=al-SL-0a1b2c3d4e5f-1k2j3",
            "no quantity and no reduceOnly with closePosition"
        );
        let trailing = AlgoOrder {
            kind: AlgoKind::TrailingStopMarket {
                callback_rate: dec!(1.50),
            },
            trigger_price: Some(Price::new(dec!(110000))),
            ..stop()
        };
        assert_eq!(
            encode_query(&algo_order_params(&trailing).unwrap()),
            "algoType=CONDITIONAL&symbol=BTCUSDT&side=SELL&type=TRAILING_STOP_MARKET&quantity=0.002&activatePrice=110000&callbackRate=1.5&workingType=MARK_PRICE&reduceOnly=true&clientAlgoId=al-SL-0a1b2c3d4e5f-1k2j3"
        );
        let trailing_now = AlgoOrder {
            trigger_price: None,
            ..trailing.clone()
        };
        assert!(!encode_query(&algo_order_params(&trailing_now).unwrap()).contains("activatePrice"));

        for bad in [
            AlgoOrder {
                close_position: true,
                ..stop()
            },
            AlgoOrder {
                qty: None,
                ..stop()
            },
            AlgoOrder {
                trigger_price: None,
                ..stop()
            },
            AlgoOrder {
                qty: None,
                close_position: true,
                ..trailing
            },
        ] {
            assert!(
                matches!(algo_order_params(&bad), Err(ExchangeError::Fatal(m)) if m.contains("al-SL-")),
                "{bad:?}"
            );
        }
    }
}
