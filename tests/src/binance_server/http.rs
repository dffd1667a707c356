//! The HTTP face of the test exchange: one fallback handler that logs the request, counts its
//! weight, applies an injected fault, verifies the signature and dispatches to the endpoint.

use super::exchange::{valid_client_id, Algo, ApiError, MarginKind, MarketRequest};
use super::market::interval_ms;
use super::render;
use super::signing::{merged_params, sent_signature, verify};
use super::{FaultKind, Inner, LoggedRequest, Shared};
use albra_core::domain::OrderSide;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Longer than any client timeout the tests use; the answer is effectively lost.
const TIMEOUT_HOLD: Duration = Duration::from_secs(60);

const ALGO_TYPES: [&str; 5] = [
    "STOP_MARKET",
    "TAKE_PROFIT_MARKET",
    "STOP",
    "TAKE_PROFIT",
    "TRAILING_STOP_MARKET",
];

/// What the server knows about a request.
struct Req {
    method: Method,
    path: String,
    query: String,
    body: String,
    params: BTreeMap<String, String>,
    api_key: Option<String>,
}

impl Req {
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
    fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name).ok_or_else(|| ApiError::mandatory(name))
    }
    fn decimal(&self, name: &str) -> Result<Option<Decimal>, ApiError> {
        let malformed = || {
            ApiError::bad(
                -1100,
                format!(
                    "Illegal characters found in parameter '{name}'; legal range is \
                     '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'."
                ),
            )
        };
        self.get(name)
            .map(|v| {
                let plain = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
                plain
                    .then(|| Decimal::from_str(v).ok())
                    .flatten()
                    .ok_or_else(malformed)
            })
            .transpose()
    }
    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .map(|v| v.parse::<i64>().map_err(|_| ApiError::mandatory(name)))
            .transpose()
    }
    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::invalid(name)),
        }
    }
    fn side(&self) -> Result<OrderSide, ApiError> {
        match self.require("side")? {
            "BUY" => Ok(OrderSide::Buy),
            "SELL" => Ok(OrderSide::Sell),
            _ => Err(ApiError::bad(-1117, "Invalid side.")),
        }
    }
}

/// A reply before it becomes an HTTP response.
struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            retry_after: None,
        }
    }
    fn error(e: ApiError) -> Reply {
        Reply {
            status: e.status,
            body: json!({"code": e.code, "msg": e.msg}),
            retry_after: None,
        }
    }
    fn unknown_503() -> Reply {
        Reply::error(ApiError::new(
            503,
            -1000,
            "Unknown error, please check your request or try again later.",
        ))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Endpoint {
    Ping,
    Time,
    Klines,
    ExchangeInfo,
    TickerPrice,
    Account,
    PositionRisk,
    SymbolConfig,
    Leverage,
    MarginType,
    NewOrder,
    QueryOrder,
    CancelOrder,
    AllOrders,
    OpenOrders,
    NewAlgo,
    QueryAlgo,
    CancelAlgo,
    OpenAlgos,
    CancelAllAlgos,
    UserTrades,
    Income,
    FundingRate,
    /// `/sapi/v1/account/apiRestrictions`: served by the spot host on Binance; here beside the
    /// futures endpoints, so one loopback base stands in for both.
    ApiRestrictions,
}

impl Endpoint {
    fn route(method: &Method, path: &str) -> Option<Endpoint> {
        use Endpoint::*;
        let m = method.as_str();
        Some(match (m, path) {
            ("GET", "/fapi/v1/ping") => Ping,
            ("GET", "/fapi/v1/time") => Time,
            ("GET", "/fapi/v1/klines") => Klines,
            ("GET", "/fapi/v1/exchangeInfo") => ExchangeInfo,
            ("GET", "/fapi/v1/ticker/price") => TickerPrice,
            ("GET", "/fapi/v3/account") => Account,
            ("GET", "/fapi/v3/positionRisk") => PositionRisk,
            ("GET", "/fapi/v1/symbolConfig") => SymbolConfig,
            ("POST", "/fapi/v1/leverage") => Leverage,
            ("POST", "/fapi/v1/marginType") => MarginType,
            ("POST", "/fapi/v1/order") => NewOrder,
            ("GET", "/fapi/v1/order") => QueryOrder,
            ("GET", "/fapi/v1/allOrders") => AllOrders,
            ("GET", "/fapi/v1/openOrders") => OpenOrders,
            ("DELETE", "/fapi/v1/order") => CancelOrder,
            ("POST", "/fapi/v1/algoOrder") => NewAlgo,
            ("GET", "/fapi/v1/algoOrder") => QueryAlgo,
            ("DELETE", "/fapi/v1/algoOrder") => CancelAlgo,
            ("GET", "/fapi/v1/openAlgoOrders") => OpenAlgos,
            ("DELETE", "/fapi/v1/algoOpenOrders") => CancelAllAlgos,
            ("GET", "/fapi/v1/userTrades") => UserTrades,
            ("GET", "/fapi/v1/income") => Income,
            ("GET", "/fapi/v1/fundingRate") => FundingRate,
            ("GET", "/sapi/v1/account/apiRestrictions") => ApiRestrictions,
            _ => return None,
        })
    }

    fn signed(self) -> bool {
        !matches!(
            self,
            Endpoint::Ping
                | Endpoint::Time
                | Endpoint::Klines
                | Endpoint::ExchangeInfo
                | Endpoint::TickerPrice
                | Endpoint::FundingRate
        )
    }

    /// IP request weight as documented (orders count against order limits, not weight).
    fn weight(self, req: &Req) -> u64 {
        use Endpoint::*;
        match self {
            Ping | Time | ExchangeInfo | TickerPrice | Leverage | MarginType | QueryOrder
            | CancelOrder | QueryAlgo | CancelAlgo | CancelAllAlgos | ApiRestrictions => 1,
            // Binance limits it on its own (500 requests per 5 minutes per IP, shared with
            // fundingInfo); it still counts as one request in the minute's gauge here.
            FundingRate => 1,
            NewOrder | NewAlgo => 0,
            Klines => match req
                .get("limit")
                .and_then(|l| l.parse::<u32>().ok())
                .unwrap_or(500)
            {
                0..=99 => 1,
                100..=499 => 2,
                500..=1000 => 5,
                _ => 10,
            },
            Account | PositionRisk | SymbolConfig | UserTrades | AllOrders => 5,
            OpenOrders | OpenAlgos => {
                if req.get("symbol").is_some() {
                    1
                } else {
                    40
                }
            }
            Income => 30,
        }
    }
}

pub(crate) async fn handle(
    State(s): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Subscribed before the fault is picked, so a release right after it is not missed.
    let released = s.release.subscribe();
    let query = uri.query().unwrap_or("").to_string();
    let body = String::from_utf8_lossy(&body).into_owned();
    let req = Req {
        params: merged_params(&query, &body),
        path: uri.path().to_string(),
        method,
        query,
        body,
        api_key: headers
            .get("X-MBX-APIKEY")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    let endpoint = Endpoint::route(&req.method, &req.path);
    let (index, weight, fault, latency) = {
        let mut g = s.lock();
        let now = g.now();
        let own = endpoint.map_or(1, |e| e.weight(&req));
        let weight = g.add_weight(own, now);
        g.log.push(LoggedRequest {
            method: req.method.as_str().to_string(),
            path: req.path.clone(),
            params: req.params.clone(),
            api_key: req.api_key.clone(),
            time: now,
            weight: own,
            answered: None,
            status: None,
            fault: None,
        });
        let index = g.log.len() - 1;
        let get = |name: &str| req.params.get(name).cloned();
        (index, weight, g.take_fault(index, &get), g.latency)
    };
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = s.closed() => {}
        }
    }
    let answer = match fault {
        None => Answer::Json(process(&s, endpoint, &req)),
        Some(kind) => act_out(&s, endpoint, &req, kind, released).await,
    };
    {
        let mut g = s.lock();
        let now = g.now();
        let logged = &mut g.log[index];
        logged.status = Some(answer.status());
        logged.answered = Some(now);
    }
    answer.into_response(weight)
}

/// What goes back on the wire.
enum Answer {
    Json(Reply),
    /// A CDN's HTML error page with this status.
    Html(u16),
    /// Status 200 and headers, then the connection breaks before the promised body is sent.
    Broken,
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Json(r) => r.status,
            Answer::Html(status) => *status,
            Answer::Broken => 200,
        }
    }

    fn into_response(self, weight: u64) -> Response {
        let mut resp = match self {
            Answer::Json(reply) => {
                let mut resp = (
                    StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    axum::Json(reply.body),
                )
                    .into_response();
                if let Some(secs) = reply.retry_after {
                    resp.headers_mut()
                        .insert("Retry-After", HeaderValue::from(secs));
                }
                resp
            }
            Answer::Html(status) => html_page(status),
            Answer::Broken => {
                // A Content-Length larger than a body of unknown length: hyper sends the head,
                // then the body ends early and it closes the connection, so the client reads a
                // truncated answer.
                let partial = axum::body::Body::from("{\"orderId\":").into_data_stream();
                let mut resp = axum::body::Body::from_stream(partial).into_response();
                resp.headers_mut().insert(
                    axum::http::header::CONTENT_LENGTH,
                    HeaderValue::from(4096u64),
                );
                resp
            }
        };
        resp.headers_mut()
            .insert("X-MBX-USED-WEIGHT-1M", HeaderValue::from(weight));
        resp
    }
}

/// The error page a CDN in front of the API serves for 502 / 504.
fn html_page(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let title = format!("{} {}", status, code.canonical_reason().unwrap_or("Error"));
    let page = format!(
        "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01 Transitional//EN\">\n<HTML><HEAD>\
         <TITLE>{title}</TITLE></HEAD><BODY><H1>{title}</H1>\nThe request could not be \
         satisfied.\n<HR noshade size=\"1px\">\nGenerated by cloudfront (CloudFront)\n</BODY></HTML>"
    );
    (code, [("content-type", "text/html")], page).into_response()
}

/// Plays a fault out on one request.
async fn act_out(
    s: &Shared,
    endpoint: Option<Endpoint>,
    req: &Req,
    kind: FaultKind,
    mut released: watch::Receiver<u64>,
) -> Answer {
    if kind.applies() {
        process(s, endpoint, req);
    }
    let reply = match kind {
        FaultKind::RateLimit429 { retry_after_s } => rate_limited(429, retry_after_s),
        FaultKind::Banned418 { retry_after_s } => rate_limited(418, retry_after_s),
        FaultKind::Timestamp1021 => Reply::error(ApiError::bad(
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        )),
        FaultKind::Unknown503 { .. } => Reply::unknown_503(),
        FaultKind::Html5xx { status, .. } => return Answer::Html(status),
        FaultKind::DropAfterApply => return Answer::Broken,
        FaultKind::Timeout { .. } => {
            tokio::select! {
                _ = tokio::time::sleep(TIMEOUT_HOLD) => {}
                _ = s.closed() => {}
            }
            Reply::unknown_503()
        }
        FaultKind::Hold { .. } => {
            tokio::select! {
                _ = released.changed() => {}
                _ = s.closed() => {}
            }
            Reply::unknown_503()
        }
    };
    Answer::Json(reply)
}

/// 429 (too many requests) or 418 (IP banned) with `Retry-After`.
fn rate_limited(status: u16, retry_after_s: u64) -> Reply {
    let msg = if status == 418 {
        "Way too many requests; IP banned until further notice. Please use the websocket for \
         live updates to avoid bans."
    } else {
        "Too many requests; current limit is 2400 requests per minute. Please use the websocket \
         for live updates to avoid polling the API."
    };
    Reply {
        retry_after: Some(retry_after_s),
        ..Reply::error(ApiError::new(status, -1003, msg))
    }
}

/// Authenticates and runs one request; notifies order waiters when an order took effect.
fn process(s: &Shared, endpoint: Option<Endpoint>, req: &Req) -> Reply {
    let Some(endpoint) = endpoint else {
        return Reply::error(ApiError::new(
            404,
            -5000,
            format!("Path {}, Method {} is invalid", req.path, req.method),
        ));
    };
    let result = {
        let mut g = s.lock();
        let now = g.now();
        authenticate(&g, endpoint, req, now)
            .and_then(|key| dispatch(&mut g, endpoint, req, key, now))
    };
    match result {
        Ok(body) => {
            if endpoint == Endpoint::NewOrder {
                s.applied_orders.send_modify(|n| *n += 1);
            }
            Reply::ok(body)
        }
        Err(e) => Reply::error(e),
    }
}

/// API key, signature and timestamp checks of a signed endpoint; returns the account key.
fn authenticate(
    g: &Inner,
    endpoint: Endpoint,
    req: &Req,
    now: i64,
) -> Result<Option<String>, ApiError> {
    if !endpoint.signed() {
        return Ok(None);
    }
    let invalid_key = || {
        ApiError::new(
            401,
            -2015,
            "Invalid API-key, IP, or permissions for action.",
        )
    };
    let key = req.api_key.as_deref().ok_or_else(invalid_key)?;
    let acct = g.x.accounts.get(key).ok_or_else(invalid_key)?;
    let timestamp = req
        .int("timestamp")?
        .ok_or_else(|| ApiError::mandatory("timestamp"))?;
    let signature =
        sent_signature(&req.query, &req.body).ok_or_else(|| ApiError::mandatory("signature"))?;
    if !verify(&acct.secret, &req.query, &req.body, &signature) {
        return Err(ApiError::bad(
            -1022,
            "Signature for this request is not valid.",
        ));
    }
    let recv_window = req.int("recvWindow")?.unwrap_or(5000);
    if !(1..=60_000).contains(&recv_window) {
        return Err(ApiError::invalid("recvWindow"));
    }
    if timestamp >= now + 1000 {
        return Err(ApiError::bad(
            -1021,
            "Timestamp for this request was 1000ms ahead of the server's time.",
        ));
    }
    if now - timestamp > recv_window {
        return Err(ApiError::bad(
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
        ));
    }
    Ok(Some(key.to_string()))
}

fn dispatch(
    g: &mut Inner,
    endpoint: Endpoint,
    req: &Req,
    key: Option<String>,
    now: i64,
) -> Result<Value, ApiError> {
    use Endpoint::*;
    let key = key.as_deref().unwrap_or_default();
    match endpoint {
        Ping => Ok(json!({})),
        Time => Ok(json!({ "serverTime": now })),
        ExchangeInfo => Ok(render::exchange_info(&g.x, now)),
        TickerPrice => {
            let symbol = req
                .get("symbol")
                .ok_or_else(|| ApiError::mandatory("symbol"))?
                .to_string();
            let price = g.x.mark(&symbol, now)?;
            Ok(json!({ "symbol": symbol, "price": price.normalize().to_string(), "time": now }))
        }
        Klines => klines(g, req, now),
        FundingRate => funding_rate(g, req, now),
        Account => Ok(render::account(&g.x, key, now)),
        ApiRestrictions => Ok(g.x.accounts[key].restrictions.render()),
        PositionRisk => {
            let symbol = optional_symbol(g, req)?;
            Ok(Value::Array(render::position_risk(&g.x, key, symbol, now)))
        }
        SymbolConfig => {
            let acct = &g.x.accounts[key];
            let rows = match optional_symbol(g, req)? {
                Some(s) => vec![render::symbol_config(acct, s)],
                None => {
                    g.x.market
                        .rules
                        .keys()
                        .map(|s| render::symbol_config(acct, s))
                        .collect()
                }
            };
            Ok(Value::Array(rows))
        }
        Leverage => leverage(g, req, key),
        MarginType => margin_type(g, req, key),
        NewOrder => new_order(g, req, key, now),
        QueryOrder => query_order(g, req, key),
        CancelOrder => cancel_order(g, req, key, now),
        AllOrders => all_orders(g, req, key),
        OpenOrders => {
            let symbol = optional_symbol(g, req)?;
            let x = &g.x;
            Ok(Value::Array(
                x.accounts[key]
                    .orders
                    .iter()
                    .filter(|o| o.is_open() && symbol.is_none_or(|s| s == o.symbol))
                    .map(|o| render::order(o, &x.market.rules[&o.symbol]))
                    .collect(),
            ))
        }
        NewAlgo => new_algo(g, req, key, now),
        QueryAlgo => {
            let i = find_algo(g, req, key)?
                .ok_or_else(|| ApiError::bad(-2013, "Order does not exist."))?;
            let a = &g.x.accounts[key].algos[i];
            Ok(render::algo(a, &g.x.market.rules[&a.symbol]))
        }
        CancelAlgo => {
            let i = find_algo(g, req, key)?
                .filter(|&i| g.x.accounts[key].algos[i].is_open())
                .ok_or_else(|| ApiError::bad(-2011, "Unknown order sent."))?;
            let a = &mut g.x.accounts.get_mut(key).expect("authenticated").algos[i];
            a.status = "CANCELED";
            a.update_time = now;
            Ok(json!({
                "algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "code": "200", "msg": "success"
            }))
        }
        OpenAlgos => {
            let symbol = optional_symbol(g, req)?;
            let algo_id = req.int("algoId")?;
            if req.get("algoType").is_some_and(|t| t != "CONDITIONAL") {
                return Err(ApiError::invalid("algoType"));
            }
            let x = &g.x;
            Ok(Value::Array(
                x.accounts[key]
                    .algos
                    .iter()
                    .filter(|a| a.is_open())
                    .filter(|a| symbol.is_none_or(|s| s == a.symbol))
                    .filter(|a| algo_id.is_none_or(|id| id == a.algo_id))
                    .map(|a| render::algo(a, &x.market.rules[&a.symbol]))
                    .collect(),
            ))
        }
        CancelAllAlgos => {
            let symbol = required_symbol(g, req)?.to_string();
            for a in
                g.x.accounts
                    .get_mut(key)
                    .expect("authenticated")
                    .algos
                    .iter_mut()
            {
                if a.is_open() && a.symbol == symbol {
                    a.status = "CANCELED";
                    a.update_time = now;
                }
            }
            Ok(json!({"code": 200, "msg": "The operation of cancel all open order is done."}))
        }
        UserTrades => user_trades(g, req, key),
        Income => income(g, req, key),
    }
}

fn required_symbol<'a>(g: &Inner, req: &'a Req) -> Result<&'a str, ApiError> {
    let s = req.require("symbol")?;
    g.x.rules(s)?;
    Ok(s)
}

fn optional_symbol<'a>(g: &Inner, req: &'a Req) -> Result<Option<&'a str>, ApiError> {
    match req.get("symbol") {
        Some(s) => {
            g.x.rules(s)?;
            Ok(Some(s))
        }
        None => Ok(None),
    }
}

fn klines(g: &Inner, req: &Req, now: i64) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?;
    let iv = interval_ms(req.require("interval")?)
        .filter(|ms| *ms >= g.x.market.base_tf_ms && ms % g.x.market.base_tf_ms == 0)
        .ok_or_else(|| ApiError::bad(-1120, "Invalid interval."))?;
    let limit = req.int("limit")?.unwrap_or(500);
    if limit < 1 {
        return Err(ApiError::invalid("limit"));
    }
    let start = req.int("startTime")?;
    let end = req.int("endTime")?;
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(ApiError::bad(-1023, "Start time is greater than end time."));
        }
    }
    let rows =
        g.x.market
            .klines(symbol, iv, start, end, limit.min(1500) as usize, now);
    Ok(Value::Array(rows.iter().map(|r| r.to_json()).collect()))
}

/// `GET /fapi/v1/fundingRate`: limit 100 by default, at most 1000.
fn funding_rate(g: &Inner, req: &Req, now: i64) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?;
    let limit = req.int("limit")?.unwrap_or(100);
    if limit < 1 {
        return Err(ApiError::invalid("limit"));
    }
    let (start, end) = (req.int("startTime")?, req.int("endTime")?);
    if let (Some(s), Some(e)) = (start, end) {
        if s > e {
            return Err(ApiError::bad(-1023, "Start time is greater than end time."));
        }
    }
    let rows =
        g.x.market
            .funding(symbol, (start, end), limit.min(1000) as usize, now);
    Ok(Value::Array(rows))
}

fn leverage(g: &mut Inner, req: &Req, key: &str) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?.to_string();
    let lev = req.require("leverage")?;
    let n: u32 = lev
        .parse()
        .ok()
        .filter(|n| (1..=125).contains(n))
        .ok_or_else(|| ApiError::bad(-4028, format!("Leverage {lev} is not valid")))?;
    let acct = g.x.accounts.get_mut(key).expect("authenticated");
    acct.configs.entry(symbol.clone()).or_default().leverage = n;
    Ok(json!({"leverage": n, "maxNotionalValue": render::max_notional(n), "symbol": symbol}))
}

fn margin_type(g: &mut Inner, req: &Req, key: &str) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?.to_string();
    let kind = match req.require("marginType")?.to_ascii_uppercase().as_str() {
        "CROSSED" | "CROSS" => MarginKind::Crossed,
        "ISOLATED" => MarginKind::Isolated,
        _ => return Err(ApiError::invalid("marginType")),
    };
    let acct = g.x.accounts.get_mut(key).expect("authenticated");
    if acct.config(&symbol).margin == kind {
        return Err(ApiError::bad(-4046, "No need to change margin type."));
    }
    if !acct.amount(&symbol).is_zero() {
        return Err(ApiError::bad(
            -4048,
            "Margin type cannot be changed if there exists position.",
        ));
    }
    acct.configs.entry(symbol).or_default().margin = kind;
    Ok(json!({"code": 200, "msg": "success"}))
}

fn client_id_param(req: &Req, name: &str) -> Result<Option<String>, ApiError> {
    match req.get(name) {
        Some(id) if !valid_client_id(id) => Err(ApiError::bad(
            -1100,
            format!(
                "Illegal characters found in parameter '{name}'; legal range is '^[\\.A-Z\\:/a-z0-9_-]{{1,36}}$'."
            ),
        )),
        other => Ok(other.map(str::to_string)),
    }
}

fn new_order(g: &mut Inner, req: &Req, key: &str, now: i64) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?.to_string();
    let side = req.side()?;
    let kind = req.require("type")?;
    if ALGO_TYPES.contains(&kind) {
        return Err(ApiError::bad(
            -4120,
            "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
        ));
    }
    if kind != "MARKET" {
        return Err(ApiError::bad(-1116, "Invalid orderType."));
    }
    if req.get("positionSide").is_some_and(|p| p != "BOTH") {
        return Err(ApiError::bad(
            -4061,
            "Order's position side does not match user's setting.",
        ));
    }
    if req.flag("closePosition")? {
        return Err(ApiError::not_required("closePosition"));
    }
    let qty = req
        .decimal("quantity")?
        .ok_or_else(|| ApiError::mandatory("quantity"))?;
    let reduce_only = req.flag("reduceOnly")?;
    let result = match req.get("newOrderRespType").unwrap_or("ACK") {
        "ACK" => false,
        "RESULT" => true,
        _ => return Err(ApiError::invalid("newOrderRespType")),
    };
    let client_id = client_id_param(req, "newClientOrderId")?;
    if let Some(id) = &client_id {
        // Client ids are unique among open orders only.
        if g.x.accounts[key]
            .orders
            .iter()
            .any(|o| o.is_open() && &o.client_id == id)
        {
            return Err(ApiError::bad(-4116, "ClientOrderId is duplicated."));
        }
    }
    let market = MarketRequest {
        symbol: symbol.clone(),
        side,
        qty,
        reduce_only,
    };
    g.x.check_market(key, &market, now)?;
    let client_id = match client_id {
        Some(id) => id,
        None => g.x.generated_client_id(""),
    };
    let order = g.x.execute_market(key, &market, client_id, now);
    Ok(render::new_order(
        &order,
        &g.x.market.rules[&symbol],
        result,
    ))
}

fn query_order(g: &Inner, req: &Req, key: &str) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?;
    let order_id = req.int("orderId")?;
    let client_id = req.get("origClientOrderId");
    if order_id.is_none() && client_id.is_none() {
        return Err(ApiError::bad(
            -1102,
            "Either orderId or origClientOrderId must be sent.",
        ));
    }
    g.x.accounts[key]
        .orders
        .iter()
        .rev()
        .find(|o| {
            o.symbol == symbol
                && order_id.is_none_or(|id| id == o.order_id)
                && client_id.is_none_or(|c| c == o.client_id)
        })
        .map(|o| render::order(o, &g.x.market.rules[symbol]))
        .ok_or_else(|| ApiError::bad(-2013, "Order does not exist."))
}

/// `DELETE /fapi/v1/order`: an open order is cancelled (and rendered as Binance does); anything
/// else is -2011, as on the exchange.
fn cancel_order(g: &mut Inner, req: &Req, key: &str, now: i64) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?.to_string();
    let order_id = req.int("orderId")?;
    let client_id = req.get("origClientOrderId");
    if order_id.is_none() && client_id.is_none() {
        return Err(ApiError::bad(
            -1102,
            "Either orderId or origClientOrderId must be sent.",
        ));
    }
    let x = &mut g.x;
    let o = x
        .accounts
        .get_mut(key)
        .expect("authenticated")
        .orders
        .iter_mut()
        .rev()
        .find(|o| {
            o.symbol == symbol
                && o.is_open()
                && order_id.is_none_or(|id| id == o.order_id)
                && client_id.is_none_or(|c| c == o.client_id)
        })
        .ok_or_else(|| ApiError::bad(-2011, "Unknown order sent."))?;
    o.status = "CANCELED";
    o.update_time = now;
    Ok(render::order(o, &x.market.rules[&symbol]))
}

fn find_algo(g: &Inner, req: &Req, key: &str) -> Result<Option<usize>, ApiError> {
    let algo_id = req.int("algoId")?;
    let client_id = req.get("clientAlgoId");
    if algo_id.is_none() && client_id.is_none() {
        return Err(ApiError::bad(
            -1102,
            "Either algoId or clientAlgoId must be sent.",
        ));
    }
    // Prefer the open one when a client id was reused after an earlier order finished.
    let algos = &g.x.accounts[key].algos;
    let matches = |a: &Algo| {
        algo_id.is_none_or(|id| id == a.algo_id) && client_id.is_none_or(|c| c == a.client_algo_id)
    };
    Ok(algos
        .iter()
        .rposition(|a| matches(a) && a.is_open())
        .or_else(|| algos.iter().rposition(matches)))
}

fn new_algo(g: &mut Inner, req: &Req, key: &str, now: i64) -> Result<Value, ApiError> {
    if req.require("algoType")? != "CONDITIONAL" {
        return Err(ApiError::invalid("algoType"));
    }
    let symbol = required_symbol(g, req)?.to_string();
    let side = req.side()?;
    let kind = req.require("type")?.to_string();
    if !ALGO_TYPES.contains(&kind.as_str()) {
        return Err(ApiError::bad(-1116, "Invalid orderType."));
    }
    if req.get("positionSide").is_some_and(|p| p != "BOTH") {
        return Err(ApiError::bad(
            -4061,
            "Order's position side does not match user's setting.",
        ));
    }
    let rules = g.x.rules(&symbol)?.clone();
    let close_position = req.flag("closePosition")?;
    let reduce_only = req.flag("reduceOnly")?;
    let qty = req.decimal("quantity")?;
    if close_position {
        if !matches!(kind.as_str(), "STOP_MARKET" | "TAKE_PROFIT_MARKET") {
            return Err(ApiError::not_required("closePosition"));
        }
        if qty.is_some() {
            return Err(ApiError::not_required("quantity"));
        }
        if reduce_only {
            return Err(ApiError::not_required("reduceOnly"));
        }
    }
    if let Some(q) = qty {
        if q <= Decimal::ZERO {
            return Err(ApiError::bad(-4003, "Quantity less than or equal to zero."));
        }
        if !(q % rules.step_size).is_zero() {
            return Err(ApiError::bad(
                -1111,
                "Precision is over the maximum defined for this asset.",
            ));
        }
    } else if !close_position {
        return Err(ApiError::mandatory("quantity"));
    }
    let trailing = kind == "TRAILING_STOP_MARKET";
    let on_tick = |p: Decimal| (p % rules.tick_size).is_zero();
    let trigger_price = if trailing {
        Decimal::ZERO
    } else {
        let t = req
            .decimal("triggerPrice")?
            .ok_or_else(|| ApiError::mandatory("triggerPrice"))?;
        if t <= Decimal::ZERO || !on_tick(t) {
            return Err(ApiError::bad(-4014, "Price not increased by tick size."));
        }
        t
    };
    let price = if matches!(kind.as_str(), "STOP" | "TAKE_PROFIT") {
        let p = req
            .decimal("price")?
            .ok_or_else(|| ApiError::mandatory("price"))?;
        if !on_tick(p) {
            return Err(ApiError::bad(-4014, "Price not increased by tick size."));
        }
        p
    } else {
        Decimal::ZERO
    };
    let callback_rate = req.decimal("callbackRate")?;
    if trailing {
        let rate = callback_rate.ok_or_else(|| ApiError::mandatory("callbackRate"))?;
        if rate < Decimal::new(1, 1) || rate > Decimal::TEN {
            return Err(ApiError::invalid("callbackRate"));
        }
    }
    let working_type = match req.get("workingType").unwrap_or("CONTRACT_PRICE") {
        w @ ("CONTRACT_PRICE" | "MARK_PRICE") => w.to_string(),
        _ => return Err(ApiError::invalid("workingType")),
    };
    let mark = g.x.mark(&symbol, now)?;
    if !trailing {
        let stop = matches!(kind.as_str(), "STOP_MARKET" | "STOP");
        let immediate = match (stop, side) {
            (true, OrderSide::Sell) | (false, OrderSide::Buy) => trigger_price >= mark,
            (true, OrderSide::Buy) | (false, OrderSide::Sell) => trigger_price <= mark,
        };
        if immediate {
            return Err(ApiError::bad(-2021, "Order would immediately trigger."));
        }
    }
    let client_algo_id = client_id_param(req, "clientAlgoId")?;
    let acct = &g.x.accounts[key];
    if let Some(id) = &client_algo_id {
        if acct
            .algos
            .iter()
            .any(|a| a.is_open() && &a.client_algo_id == id)
        {
            return Err(ApiError::bad(-4116, "ClientOrderId is duplicated."));
        }
    }
    if acct
        .algos
        .iter()
        .filter(|a| a.is_open() && a.symbol == symbol)
        .count()
        >= 10
    {
        return Err(ApiError::bad(-4045, "Reach max stop order limit."));
    }
    let client_algo_id = match client_algo_id {
        Some(id) => id,
        None => g.x.generated_client_id(""),
    };
    let algo = Algo {
        algo_id: g.x.next_algo_id(),
        client_algo_id,
        symbol: symbol.clone(),
        side,
        order_type: kind,
        qty,
        trigger_price,
        price,
        time_in_force: if close_position {
            "GTE_GTC".to_string()
        } else {
            req.get("timeInForce").unwrap_or("GTC").to_string()
        },
        working_type,
        close_position,
        reduce_only,
        price_protect: req.flag("priceProtect")?,
        activate_price: req.decimal("activatePrice")?,
        callback_rate,
        trail_extreme: None,
        status: "NEW",
        actual_order_id: None,
        actual_price: None,
        create_time: now,
        update_time: now,
        trigger_time: 0,
    };
    let body = render::new_algo(&algo, &rules);
    g.x.accounts
        .get_mut(key)
        .expect("authenticated")
        .algos
        .push(algo);
    Ok(body)
}

/// Rows with `start ≤ time ≤ end`; the first `limit` from `start` when given, else the newest.
fn window<T>(rows: Vec<T>, start: Option<i64>, limit: usize) -> Vec<T> {
    if start.is_some() {
        rows.into_iter().take(limit).collect()
    } else {
        let skip = rows.len().saturating_sub(limit);
        rows.into_iter().skip(skip).collect()
    }
}

fn user_trades(g: &Inner, req: &Req, key: &str) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?;
    let order_id = req.int("orderId")?;
    let from_id = req.int("fromId")?;
    let start = req.int("startTime")?;
    let end = req.int("endTime")?;
    let limit = req.int("limit")?.unwrap_or(500).clamp(1, 1000) as usize;
    let rules = &g.x.market.rules[symbol];
    let rows: Vec<Value> = g.x.accounts[key]
        .trades
        .iter()
        .filter(|t| t.symbol == symbol)
        .filter(|t| order_id.is_none_or(|id| id == t.order_id))
        .filter(|t| from_id.is_none_or(|id| t.id >= id))
        .filter(|t| start.is_none_or(|s| t.time >= s) && end.is_none_or(|e| t.time <= e))
        .map(|t| render::trade(t, rules))
        .collect();
    Ok(Value::Array(window(rows, start.or(from_id), limit)))
}

/// `GET /fapi/v1/allOrders`: the account's orders on one symbol (any status, manual, triggered
/// and liquidation orders included), oldest first, from `orderId` or within `startTime`..`endTime`
/// (creation time).
fn all_orders(g: &Inner, req: &Req, key: &str) -> Result<Value, ApiError> {
    let symbol = required_symbol(g, req)?;
    let from_id = req.int("orderId")?;
    let start = req.int("startTime")?;
    let end = req.int("endTime")?;
    let limit = req.int("limit")?.unwrap_or(500).clamp(1, 1000) as usize;
    let rules = &g.x.market.rules[symbol];
    let rows: Vec<Value> = g.x.accounts[key]
        .orders
        .iter()
        .filter(|o| o.symbol == symbol)
        .filter(|o| from_id.is_none_or(|id| o.order_id >= id))
        .filter(|o| start.is_none_or(|s| o.time >= s) && end.is_none_or(|e| o.time <= e))
        .map(|o| render::order(o, rules))
        .collect();
    Ok(Value::Array(window(rows, start.or(from_id), limit)))
}

fn income(g: &Inner, req: &Req, key: &str) -> Result<Value, ApiError> {
    let symbol = optional_symbol(g, req)?;
    let kind = req.get("incomeType");
    let start = req.int("startTime")?;
    let end = req.int("endTime")?;
    let limit = req.int("limit")?.unwrap_or(100).clamp(1, 1000) as usize;
    let rows: Vec<Value> = g.x.accounts[key]
        .income
        .iter()
        .filter(|i| symbol.is_none_or(|s| s == i.symbol))
        .filter(|i| kind.is_none_or(|k| k == i.income_type))
        .filter(|i| start.is_none_or(|s| i.time >= s) && end.is_none_or(|e| i.time <= e))
        .map(render::income)
        .collect();
    Ok(Value::Array(window(rows, start, limit)))
}
