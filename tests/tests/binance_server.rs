//! The loopback Binance server over real HTTP, driven by raw reqwest with its own signing: request
//! verification, the open kline row, -4120 for conditional orders on the plain endpoint, netting and
//! realised PnL, the algo order lifecycle, every fault class, and the recorded response shapes.

use albra_core::domain::Candle;
use albra_tests::binance_server::{
    signed_query, BinanceTestServer, Fault, FaultKind, FaultRule, ServerOptions, TestAccount, When,
};
use reqwest::Method;
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

const M15: i64 = 900_000;
const H1: i64 = 3_600_000;
/// 2025-12-29 00:00 UTC: the first synthetic candle.
const T0: i64 = 1_766_966_400_000;
const KEY: &str = "key-main";
const SECRET: &str = "secret-main";

/// 300 deterministic 15m candles around 87 000 (open rises 10 per candle in a 20-candle cycle).
fn candles() -> Vec<Candle> {
    (0..300)
        .map(|i| {
            let open = Decimal::from(87_000 + (i % 20) * 10);
            let close = open + dec!(5);
            Candle {
                open_time: T0 + i * M15,
                open: open.into(),
                high: (open + dec!(50)).into(),
                low: (open - dec!(50)).into(),
                close: close.into(),
                volume: Decimal::from(100 + i),
            }
        })
        .collect()
}

/// Server time: 5 s into candle 200.
fn now0() -> i64 {
    T0 + 200 * M15 + 5_000
}

async fn server() -> BinanceTestServer {
    BinanceTestServer::start(ServerOptions {
        candles: HashMap::from([("BTCUSDT".to_string(), candles())]),
        base_tf_ms: M15,
        accounts: vec![TestAccount {
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            wallet_balance: dec!(10000),
        }],
        start_time_ms: now0(),
    })
    .await
}

struct Answer {
    status: u16,
    weight: Option<u64>,
    retry_after: Option<String>,
    body: Value,
}

struct Api<'a> {
    http: reqwest::Client,
    server: &'a BinanceTestServer,
    key: String,
    secret: String,
}

impl<'a> Api<'a> {
    fn new(server: &'a BinanceTestServer) -> Api<'a> {
        Api::with(server, KEY, SECRET, Duration::from_secs(3))
    }
    fn with(server: &'a BinanceTestServer, key: &str, secret: &str, timeout: Duration) -> Api<'a> {
        Api {
            http: reqwest::Client::builder().timeout(timeout).build().unwrap(),
            server,
            key: key.into(),
            secret: secret.into(),
        }
    }

    async fn send(&self, method: Method, path_and_query: &str, body: Option<String>) -> Answer {
        let mut rb = self
            .http
            .request(method, format!("{}{path_and_query}", self.server.url))
            .header("X-MBX-APIKEY", &self.key);
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(b);
        }
        let resp = rb.send().await.expect("request reaches the test server");
        let status = resp.status().as_u16();
        let header = |n: &str| {
            resp.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let weight = header("X-MBX-USED-WEIGHT-1M").map(|w| w.parse().unwrap());
        let retry_after = header("Retry-After");
        let body = resp.json().await.expect("JSON body");
        Answer {
            status,
            weight,
            retry_after,
            body,
        }
    }

    async fn public(&self, path: &str, query: &str) -> Answer {
        self.send(Method::GET, &format!("{path}?{query}"), None)
            .await
    }

    /// Signed with `timestamp` = server time, all parameters in the query string.
    async fn signed(&self, method: Method, path: &str, params: &[(&str, &str)]) -> Answer {
        let mut p: Vec<(&str, String)> = params.iter().map(|(k, v)| (*k, v.to_string())).collect();
        p.push(("timestamp", self.server.time().to_string()));
        let q = signed_query(&self.secret, &p);
        self.send(method, &format!("{path}?{q}"), None).await
    }

    async fn market(&self, side: &str, qty: &str, reduce: bool, client_id: &str) -> Answer {
        self.signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("side", side),
                ("type", "MARKET"),
                ("quantity", qty),
                ("reduceOnly", if reduce { "true" } else { "false" }),
                ("newClientOrderId", client_id),
                ("newOrderRespType", "RESULT"),
            ],
        )
        .await
    }

    async fn stop(&self, side: &str, trigger: &str, client_id: &str) -> Answer {
        self.signed(
            Method::POST,
            "/fapi/v1/algoOrder",
            &[
                ("algoType", "CONDITIONAL"),
                ("symbol", "BTCUSDT"),
                ("side", side),
                ("type", "STOP_MARKET"),
                ("triggerPrice", trigger),
                ("closePosition", "true"),
                ("workingType", "MARK_PRICE"),
                ("clientAlgoId", client_id),
            ],
        )
        .await
    }
}

fn num(v: &Value) -> Decimal {
    Decimal::from_str(
        v.as_str()
            .unwrap_or_else(|| panic!("expected a string number, got {v}")),
    )
    .unwrap()
}

fn code(a: &Answer) -> i64 {
    a.body["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error code in {}", a.body))
}

#[tokio::test]
async fn public_endpoints_answer_without_a_key_and_count_weight() {
    let s = server().await;
    let api = Api::with(&s, "", "", Duration::from_secs(3));
    let t = api.public("/fapi/v1/time", "").await;
    assert_eq!(t.status, 200);
    let served = t.body["serverTime"].as_i64().unwrap();
    assert!((now0()..now0() + 2_000).contains(&served), "{served}");
    let w1 = t.weight.expect("weight header");

    let info = api.public("/fapi/v1/exchangeInfo", "").await;
    assert_eq!(info.status, 200);
    assert!(info.weight.unwrap() > w1, "weight is a running count");
    let btc = info.body["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "BTCUSDT")
        .unwrap();
    let filter = |t: &str| {
        btc["filters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["filterType"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(num(&filter("PRICE_FILTER")["tickSize"]), dec!(0.1));
    assert_eq!(num(&filter("PRICE_FILTER")["minPrice"]), dec!(556.8));
    assert_eq!(num(&filter("LOT_SIZE")["stepSize"]), dec!(0.001));
    assert_eq!(num(&filter("MARKET_LOT_SIZE")["maxQty"]), dec!(120));
    assert_eq!(num(&filter("MIN_NOTIONAL")["notional"]), dec!(100));
    let eth = info.body["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["symbol"] == "ETHUSDT")
        .expect("ETHUSDT is always listed");
    assert_eq!(num(&eth["filters"][0]["tickSize"]), dec!(0.01));

    let missing = api.public("/fapi/v1/nope", "").await;
    assert_eq!(missing.status, 404);
    assert_eq!(code(&missing), -5000);
    assert!(missing.weight.is_some());
}

#[tokio::test]
async fn signed_requests_are_verified() {
    let s = server().await;
    let good = Api::new(&s);
    assert_eq!(
        good.signed(Method::GET, "/fapi/v3/account", &[])
            .await
            .status,
        200
    );

    let unknown = Api::with(&s, "nobody", SECRET, Duration::from_secs(3));
    let a = unknown.signed(Method::GET, "/fapi/v3/account", &[]).await;
    assert_eq!((a.status, code(&a)), (401, -2015));

    let wrong_secret = Api::with(&s, KEY, "not-the-secret", Duration::from_secs(3));
    let a = wrong_secret
        .signed(Method::GET, "/fapi/v3/account", &[])
        .await;
    assert_eq!((a.status, code(&a)), (400, -1022));

    // Signing one order of parameters and sending another is a different string.
    let ts = s.time().to_string();
    let q = signed_query(
        SECRET,
        &[("timestamp", ts.clone()), ("recvWindow", "5000".into())],
    );
    let sig = q.rsplit_once("signature=").unwrap().1;
    let reordered = format!("recvWindow=5000&timestamp={ts}&signature={sig}");
    let a = good
        .send(Method::GET, &format!("/fapi/v3/account?{reordered}"), None)
        .await;
    assert_eq!(code(&a), -1022);

    // Stale and future timestamps.
    for (offset, window) in [(-6_000, None), (-20_000, Some("10000")), (1_500, None)] {
        let ts = (s.time() + offset).to_string();
        let mut p = vec![("timestamp", ts)];
        if let Some(w) = window {
            p.push(("recvWindow", w.to_string()));
        }
        let a = good
            .send(
                Method::GET,
                &format!("/fapi/v3/account?{}", signed_query(SECRET, &p)),
                None,
            )
            .await;
        assert_eq!((a.status, code(&a)), (400, -1021), "offset {offset}");
    }
    let ts = (s.time() - 6_000).to_string();
    let q = signed_query(SECRET, &[("timestamp", ts), ("recvWindow", "10000".into())]);
    let a = good
        .send(Method::GET, &format!("/fapi/v3/account?{q}"), None)
        .await;
    assert_eq!(a.status, 200, "a wider recvWindow accepts it: {}", a.body);

    // Query + form body are signed as one string, concatenated without a separator.
    let query = "symbol=BTCUSDT&side=BUY&type=MARKET";
    let body = format!(
        "quantity=0.010&newOrderRespType=RESULT&timestamp={}",
        s.time()
    );
    let sig = albra_tests::binance_server::sign(SECRET, &format!("{query}{body}"));
    let a = good
        .send(
            Method::POST,
            &format!("/fapi/v1/order?{query}"),
            Some(format!("{body}&signature={sig}")),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(0.010));

    // Nothing signed went through with a bad signature.
    assert_eq!(s.count("POST", "/fapi/v1/order"), 1);
}

#[tokio::test]
async fn klines_include_the_open_candle_and_aggregate_coarser_intervals() {
    let s = server().await;
    let api = Api::new(&s);
    let all = candles();
    let a = api
        .public("/fapi/v1/klines", "symbol=BTCUSDT&interval=15m&limit=3")
        .await;
    let rows = a.body.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r.as_array().unwrap().len(), 12);
        assert!(r[1].is_string() && r[4].is_string() && r[0].is_i64() && r[6].is_i64());
    }
    // Newest row = the candle containing server time, not yet closed.
    let open_row = &rows[2];
    assert_eq!(open_row[0].as_i64().unwrap(), T0 + 200 * M15);
    assert_eq!(open_row[6].as_i64().unwrap(), T0 + 201 * M15 - 1);
    assert!(open_row[6].as_i64().unwrap() > s.time());
    assert_eq!(
        num(&open_row[4]),
        all[200].open.get(),
        "open row closes at the mark so far"
    );
    assert_eq!(num(&open_row[5]), Decimal::ZERO);
    // The row before is the newest closed candle with its recorded values.
    assert_eq!(rows[1][0].as_i64().unwrap(), T0 + 199 * M15);
    assert_eq!(num(&rows[1][4]), all[199].close.get());

    // Moving the clock across the boundary closes it.
    s.set_time(T0 + 201 * M15 + 2_000);
    let a = api
        .public("/fapi/v1/klines", "symbol=BTCUSDT&interval=15m&limit=2")
        .await;
    assert_eq!(a.body[0][0].as_i64().unwrap(), T0 + 200 * M15);
    assert_eq!(num(&a.body[0][4]), all[200].close.get());

    // 1h rows: open of the first, max high, min low, close of the last, summed volume.
    s.set_time(T0 + 12 * H1 + 1_000);
    let a = api
        .public(
            "/fapi/v1/klines",
            &format!(
                "symbol=BTCUSDT&interval=1h&startTime={}&endTime={}",
                T0 + 4 * H1,
                T0 + 5 * H1
            ),
        )
        .await;
    let rows = a.body.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let hour: Vec<&Candle> = all[16..20].iter().collect();
    assert_eq!(rows[0][0].as_i64().unwrap(), T0 + 4 * H1);
    assert_eq!(rows[0][6].as_i64().unwrap(), T0 + 5 * H1 - 1);
    assert_eq!(num(&rows[0][1]), hour[0].open.get());
    assert_eq!(
        num(&rows[0][2]),
        hour.iter().map(|c| c.high.get()).max().unwrap()
    );
    assert_eq!(
        num(&rows[0][3]),
        hour.iter().map(|c| c.low.get()).min().unwrap()
    );
    assert_eq!(num(&rows[0][4]), hour[3].close.get());
    assert_eq!(
        num(&rows[0][5]),
        hour.iter().map(|c| c.volume).sum::<Decimal>()
    );

    // 4h at 12:00:01: the 12:00 bucket is open (one partial 15m candle).
    let a = api
        .public("/fapi/v1/klines", "symbol=BTCUSDT&interval=4h")
        .await;
    let rows = a.body.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[3][0].as_i64().unwrap(), T0 + 12 * H1);

    let bad = api
        .public("/fapi/v1/klines", "symbol=BTCUSDT&interval=5m")
        .await;
    assert_eq!(code(&bad), -1120, "finer than the recorded base timeframe");
    let bad = api
        .public("/fapi/v1/klines", "symbol=NOPEUSDT&interval=15m")
        .await;
    assert_eq!(code(&bad), -1121);
}

#[tokio::test]
async fn conditional_types_on_the_order_endpoint_are_refused_with_4120() {
    let s = server().await;
    let api = Api::new(&s);
    for kind in [
        "STOP_MARKET",
        "TAKE_PROFIT_MARKET",
        "TRAILING_STOP_MARKET",
        "STOP",
        "TAKE_PROFIT",
    ] {
        let a = api
            .signed(
                Method::POST,
                "/fapi/v1/order",
                &[
                    ("symbol", "BTCUSDT"),
                    ("side", "SELL"),
                    ("type", kind),
                    ("stopPrice", "80000"),
                    ("closePosition", "true"),
                ],
            )
            .await;
        assert_eq!((a.status, code(&a)), (400, -4120), "{kind}");
        assert_eq!(
            a.body["msg"],
            "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead."
        );
    }
    assert!(s.orders(KEY).is_empty());
    assert!(s.open_algo_orders(KEY).is_empty());
}

#[tokio::test]
async fn market_orders_net_into_one_position_with_realised_pnl() {
    let s = server().await;
    let api = Api::new(&s);
    s.set_mark_price("BTCUSDT", dec!(87000));
    let a = api
        .market("BUY", "0.010", false, "albEN-aaaaaaaaaaaa-1")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["status"], "FILLED");
    assert_eq!(num(&a.body["avgPrice"]), dec!(87000));
    assert_eq!(num(&a.body["executedQty"]), dec!(0.010));
    let entry_order_id = a.body["orderId"].as_i64().unwrap();

    s.set_mark_price("BTCUSDT", dec!(86000));
    api.market("BUY", "0.010", false, "albPY-aaaaaaaaaaaa-1")
        .await;
    s.set_mark_price("BTCUSDT", dec!(88000));
    let a = api
        .market("SELL", "0.005", true, "albPX-aaaaaaaaaaaa-1")
        .await;
    assert_eq!(a.status, 200, "{}", a.body);

    let risk = api
        .signed(
            Method::GET,
            "/fapi/v3/positionRisk",
            &[("symbol", "BTCUSDT")],
        )
        .await;
    let p = &risk.body[0];
    assert_eq!(num(&p["positionAmt"]), dec!(0.015));
    assert_eq!(num(&p["entryPrice"]), dec!(86500));
    assert_eq!(num(&p["markPrice"]), dec!(88000));
    assert_eq!(num(&p["unRealizedProfit"]), dec!(22.5));
    assert_eq!(p["positionSide"], "BOTH");

    let trades = api
        .signed(Method::GET, "/fapi/v1/userTrades", &[("symbol", "BTCUSDT")])
        .await;
    let t = trades.body.as_array().unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t[0]["orderId"].as_i64().unwrap(), entry_order_id);
    assert_eq!(num(&t[0]["commission"]), dec!(0.348)); // 870 × 0.04 %
    assert_eq!(t[0]["commissionAsset"], "USDT");
    assert_eq!(num(&t[2]["realizedPnl"]), dec!(7.5)); // (88000 − 86500) × 0.005
    assert_eq!(t[2]["side"], "SELL");

    let income = api.signed(Method::GET, "/fapi/v1/income", &[]).await;
    let rows = income.body.as_array().unwrap();
    let sum = |kind: &str| -> Decimal {
        rows.iter()
            .filter(|r| r["incomeType"] == kind)
            .map(|r| num(&r["income"]))
            .sum()
    };
    assert_eq!(sum("REALIZED_PNL"), dec!(7.5));
    assert_eq!(
        sum("COMMISSION"),
        -(dec!(0.348) + dec!(0.344) + dec!(0.176))
    );

    let acct = api.signed(Method::GET, "/fapi/v3/account", &[]).await;
    let wallet = dec!(10000) + dec!(7.5) - dec!(0.868);
    assert_eq!(num(&acct.body["totalWalletBalance"]), wallet);
    assert_eq!(num(&acct.body["totalUnrealizedProfit"]), dec!(22.5));
    assert_eq!(num(&acct.body["totalMarginBalance"]), wallet + dec!(22.5));
    assert_eq!(num(&acct.body["totalInitialMargin"]), dec!(66)); // 0.015 × 88000 / 20
    assert_eq!(
        num(&acct.body["availableBalance"]),
        wallet + dec!(22.5) - dec!(66)
    );

    // Rejections with Binance's codes; none of them touches the position.
    assert_eq!(code(&api.market("SELL", "0.020", true, "x1").await), -2022);
    assert_eq!(code(&api.market("BUY", "0.001", true, "x2").await), -2022);
    assert_eq!(code(&api.market("BUY", "0.0105", false, "x3").await), -1111);
    assert_eq!(code(&api.market("BUY", "0.001", false, "x4").await), -4164);
    assert_eq!(code(&api.market("BUY", "3.000", false, "x5").await), -2019);
    let bad_id = api.market("BUY", "0.010", false, "has space").await;
    assert_eq!(code(&bad_id), -1100);
    assert_eq!(code(&api.market("BUY", "1e-2", false, "x6").await), -1100);
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(0.015));

    // Lookup by client id, and the documented miss.
    let q = api
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("origClientOrderId", "albEN-aaaaaaaaaaaa-1"),
            ],
        )
        .await;
    assert_eq!(q.body["orderId"].as_i64().unwrap(), entry_order_id);
    assert_eq!(q.body["status"], "FILLED");
    let miss = api
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("origClientOrderId", "albEN-bbbbbbbbbbbb-1"),
            ],
        )
        .await;
    assert_eq!((miss.status, code(&miss)), (400, -2013));
    assert_eq!(miss.body["msg"], "Order does not exist.");

    // Closing flips nothing: a full reduce-only close leaves it flat.
    api.market("SELL", "0.015", true, "albEX-aaaaaaaaaaaa-1")
        .await;
    assert_eq!(s.position(KEY, "BTCUSDT"), Decimal::ZERO);
    let risk = api.signed(Method::GET, "/fapi/v3/positionRisk", &[]).await;
    assert_eq!(
        risk.body,
        serde_json::json!([]),
        "v3 lists non-zero positions only"
    );
}

#[tokio::test]
async fn ack_is_the_default_response_type() {
    let s = server().await;
    let api = Api::new(&s);
    let a = api
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "BUY"),
                ("type", "MARKET"),
                ("quantity", "0.002"),
            ],
        )
        .await;
    assert_eq!(a.body["status"], "NEW");
    assert_eq!(num(&a.body["executedQty"]), Decimal::ZERO);
    let id = a.body["clientOrderId"].as_str().unwrap();
    assert!(!id.starts_with("alb"));
    let q = api
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[("symbol", "BTCUSDT"), ("origClientOrderId", id)],
        )
        .await;
    assert_eq!(q.body["status"], "FILLED", "the market order filled anyway");
}

#[tokio::test]
async fn algo_orders_are_stored_listed_triggered_and_cancelled() {
    let s = server().await;
    let api = Api::new(&s);
    s.set_mark_price("BTCUSDT", dec!(87000));
    api.market("BUY", "0.010", false, "albEN-cccccccccccc-1")
        .await;

    // A SELL stop above the mark would trigger at once.
    let a = api.stop("SELL", "87100.0", "albSL-cccccccccccc-1").await;
    assert_eq!(code(&a), -2021);
    let a = api.stop("SELL", "86000.05", "albSL-cccccccccccc-1").await;
    assert_eq!(code(&a), -4014, "trigger not on the 0.1 tick");

    let a = api.stop("SELL", "86000.0", "albSL-cccccccccccc-1").await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["algoStatus"], "NEW");
    assert_eq!(a.body["algoType"], "CONDITIONAL");
    assert_eq!(a.body["orderType"], "STOP_MARKET");
    assert_eq!(a.body["closePosition"], true);
    let algo_id = a.body["algoId"].as_i64().unwrap();

    let dup = api.stop("SELL", "85000.0", "albSL-cccccccccccc-1").await;
    assert_eq!(code(&dup), -4116, "an open clientAlgoId cannot be reused");

    let open = api
        .signed(
            Method::GET,
            "/fapi/v1/openAlgoOrders",
            &[("symbol", "BTCUSDT")],
        )
        .await;
    assert_eq!(open.body.as_array().unwrap().len(), 1);
    assert_eq!(open.body[0]["algoId"].as_i64().unwrap(), algo_id);
    let plain_open = api
        .signed(Method::GET, "/fapi/v1/openOrders", &[("symbol", "BTCUSDT")])
        .await;
    assert_eq!(
        plain_open.body,
        serde_json::json!([]),
        "algo orders are not regular open orders"
    );

    // Not crossed yet.
    assert_eq!(s.trigger_algo_orders("BTCUSDT", dec!(86500)), 0);
    // Crossed: fills as MARKET at that price and closes the long.
    assert_eq!(s.trigger_algo_orders("BTCUSDT", dec!(85900)), 1);
    assert_eq!(s.position(KEY, "BTCUSDT"), Decimal::ZERO);
    let q = api
        .signed(
            Method::GET,
            "/fapi/v1/algoOrder",
            &[("clientAlgoId", "albSL-cccccccccccc-1")],
        )
        .await;
    assert_eq!(q.body["algoStatus"], "FINISHED");
    assert_eq!(num(&q.body["actualPrice"]), dec!(85900));
    let actual: i64 = q.body["actualOrderId"].as_str().unwrap().parse().unwrap();
    let trades = api
        .signed(
            Method::GET,
            "/fapi/v1/userTrades",
            &[("symbol", "BTCUSDT"), ("orderId", &actual.to_string())],
        )
        .await;
    assert_eq!(trades.body.as_array().unwrap().len(), 1);
    assert_eq!(num(&trades.body[0]["realizedPnl"]), dec!(-11)); // (85900 − 87000) × 0.01
    assert!(s.open_algo_orders(KEY).is_empty());

    // Cancelling a finished order is an unknown order; the id may be reused now.
    let c = api
        .signed(
            Method::DELETE,
            "/fapi/v1/algoOrder",
            &[("clientAlgoId", "albSL-cccccccccccc-1")],
        )
        .await;
    assert_eq!(code(&c), -2011);
    let miss = api
        .signed(
            Method::GET,
            "/fapi/v1/algoOrder",
            &[("clientAlgoId", "albSL-dddddddddddd-1")],
        )
        .await;
    assert_eq!(code(&miss), -2013);

    // closePosition on a flat account: fires, does nothing, finishes.
    s.set_mark_price("BTCUSDT", dec!(87000));
    api.stop("SELL", "86000.0", "albSL-cccccccccccc-2").await;
    assert_eq!(s.trigger_algo_orders("BTCUSDT", dec!(85000)), 1);
    let all = s.algo_orders(KEY);
    assert_eq!(all[1]["algoStatus"], "FINISHED");
    assert_eq!(all[1]["actualOrderId"], "");
    assert_eq!(s.position(KEY, "BTCUSDT"), Decimal::ZERO);

    // Cancel through the API and by hand.
    s.set_mark_price("BTCUSDT", dec!(87000));
    api.market("SELL", "0.010", false, "albEN-cccccccccccc-2")
        .await;
    api.stop("BUY", "88000.0", "albSL-cccccccccccc-3").await;
    api.stop("BUY", "89000.0", "manual-stop").await;
    let c = api
        .signed(
            Method::DELETE,
            "/fapi/v1/algoOrder",
            &[("clientAlgoId", "albSL-cccccccccccc-3")],
        )
        .await;
    assert_eq!(c.status, 200);
    assert_eq!(c.body["code"], "200");
    s.cancel_algo_by_hand(KEY, "manual-stop");
    assert!(s.open_algo_orders(KEY).is_empty());
    let statuses: Vec<_> = s
        .algo_orders(KEY)
        .iter()
        .map(|a| a["algoStatus"].clone())
        .collect();
    assert_eq!(
        statuses[2..],
        [Value::from("CANCELED"), Value::from("CANCELED")]
    );
    assert_eq!(
        s.position(KEY, "BTCUSDT"),
        dec!(-0.010),
        "cancelling touches no position"
    );
}

#[tokio::test]
async fn leverage_and_margin_type_are_per_symbol() {
    let s = server().await;
    let api = Api::new(&s);
    let cfg = api
        .signed(
            Method::GET,
            "/fapi/v1/symbolConfig",
            &[("symbol", "BTCUSDT")],
        )
        .await;
    assert_eq!(cfg.body[0]["leverage"], 20);
    assert_eq!(cfg.body[0]["marginType"], "CROSSED");

    let lev = api
        .signed(
            Method::POST,
            "/fapi/v1/leverage",
            &[("symbol", "BTCUSDT"), ("leverage", "5")],
        )
        .await;
    assert_eq!(lev.body["leverage"], 5);
    let bad = api
        .signed(
            Method::POST,
            "/fapi/v1/leverage",
            &[("symbol", "BTCUSDT"), ("leverage", "200")],
        )
        .await;
    assert_eq!(code(&bad), -4028);
    let same = api
        .signed(
            Method::POST,
            "/fapi/v1/marginType",
            &[("symbol", "BTCUSDT"), ("marginType", "CROSSED")],
        )
        .await;
    assert_eq!((same.status, code(&same)), (400, -4046));
    let iso = api
        .signed(
            Method::POST,
            "/fapi/v1/marginType",
            &[("symbol", "BTCUSDT"), ("marginType", "ISOLATED")],
        )
        .await;
    assert_eq!(iso.body["code"], 200);
    let cfg = api
        .signed(
            Method::GET,
            "/fapi/v1/symbolConfig",
            &[("symbol", "BTCUSDT")],
        )
        .await;
    assert_eq!(
        (
            cfg.body[0]["leverage"].clone(),
            cfg.body[0]["marginType"].clone()
        ),
        (5.into(), "ISOLATED".into())
    );

    // 5x: 10000 USDT carries at most 50000 notional.
    s.set_mark_price("BTCUSDT", dec!(87000));
    assert_eq!(code(&api.market("BUY", "0.600", false, "big").await), -2019);
    assert_eq!(api.market("BUY", "0.500", false, "ok").await.status, 200);
    let locked = api
        .signed(
            Method::POST,
            "/fapi/v1/marginType",
            &[("symbol", "BTCUSDT"), ("marginType", "CROSSED")],
        )
        .await;
    assert_eq!(code(&locked), -4048);
}

#[tokio::test]
async fn manual_orders_look_hand_placed() {
    let s = server().await;
    s.set_mark_price("BTCUSDT", dec!(87000));
    s.manual_market_order(KEY, "BTCUSDT", "SELL", dec!(0.003));
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(-0.003));
    let orders = s.orders(KEY);
    assert_eq!(orders.len(), 1);
    let id = orders[0]["clientOrderId"].as_str().unwrap();
    assert!(id.starts_with("web_") && !id.starts_with("alb"), "{id}");
    assert_eq!(s.user_trades(KEY).len(), 1);
    assert_eq!(
        s.count("POST", "/fapi/v1/order"),
        0,
        "no API request was made"
    );
}

#[tokio::test]
async fn rate_limit_and_timestamp_faults_are_one_shot_and_apply_nothing() {
    let s = server().await;
    let api = Api::new(&s);
    s.set_mark_price("BTCUSDT", dec!(87000));
    s.inject(Fault::RateLimit429 {
        path: "/fapi/v1/order".into(),
        retry_after_s: 7,
    });
    s.inject(Fault::Timestamp1021 {
        path: "/fapi/v1/order".into(),
    });

    let a = api
        .market("BUY", "0.002", false, "albEN-eeeeeeeeeeee-1")
        .await;
    assert_eq!((a.status, code(&a)), (429, -1003));
    assert_eq!(a.retry_after.as_deref(), Some("7"));
    let a = api
        .market("BUY", "0.002", false, "albEN-eeeeeeeeeeee-1")
        .await;
    assert_eq!((a.status, code(&a)), (400, -1021));
    assert_eq!(s.position(KEY, "BTCUSDT"), Decimal::ZERO);
    let a = api
        .market("BUY", "0.002", false, "albEN-eeeeeeeeeeee-1")
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(0.002));
    let statuses: Vec<_> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(429), Some(400), Some(200)]);
}

/// A raw signed MARKET order whose answer may be anything (HTML, a broken body, nothing).
async fn raw_market(
    s: &BinanceTestServer,
    client_id: &str,
) -> Result<reqwest::Response, reqwest::Error> {
    let p: Vec<(&str, String)> = vec![
        ("symbol", "BTCUSDT".into()),
        ("side", "BUY".into()),
        ("type", "MARKET".into()),
        ("quantity", "0.002".into()),
        ("newClientOrderId", client_id.into()),
        ("timestamp", s.time().to_string()),
    ];
    let url = format!("{}/fapi/v1/order?{}", s.url, signed_query(SECRET, &p));
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .post(url)
        .header("X-MBX-APIKEY", KEY)
        .send()
        .await
}

#[tokio::test]
async fn fault_rules_match_method_path_and_parameter_and_are_journaled() {
    let s = server().await;
    let api = Api::new(&s);
    s.set_mark_price("BTCUSDT", dec!(87000));
    let ban = FaultKind::Banned418 { retry_after_s: 2 };
    // The second GET of the order (not the POST, which matches no GET rule).
    let rule = s.add_rule(FaultRule::new("GET", "/fapi/v1/order", ban).when(When::Nth(2)));
    // Only MARKET orders on ETHUSDT: never fires here.
    s.add_rule(
        FaultRule::new("POST", "/fapi/v1/order", FaultKind::Timestamp1021)
            .param("symbol", "ETHUSDT"),
    );
    let a = api
        .market("BUY", "0.002", false, "albEN-aaaaaaaaaaa1-1")
        .await;
    assert_eq!(a.status, 200);
    let query = [
        ("symbol", "BTCUSDT"),
        ("origClientOrderId", "albEN-aaaaaaaaaaa1-1"),
    ];
    let first = api.signed(Method::GET, "/fapi/v1/order", &query).await;
    assert_eq!(first.status, 200);
    let second = api.signed(Method::GET, "/fapi/v1/order", &query).await;
    assert_eq!((second.status, code(&second)), (418, -1003));
    assert_eq!(second.retry_after.as_deref(), Some("2"));
    assert_eq!(s.pending_rules(), 1, "the ETHUSDT rule is still armed");
    s.clear_rules();
    assert_eq!(s.pending_rules(), 0);
    let fired = s.fired_faults();
    assert_eq!(fired.len(), 1);
    assert_eq!((fired[0].rule, fired[0].kind), (rule, ban));
    assert_eq!((fired[0].method.as_str(), fired[0].request), ("GET", 2));
    let log = s.requests();
    assert_eq!(log[2].fault, Some(ban));
    assert_eq!(log[1].fault, None);
}

#[tokio::test]
async fn html_pages_and_broken_connections_apply_as_told() {
    let s = server().await;
    s.set_mark_price("BTCUSDT", dec!(87000));
    let html = |apply| FaultKind::Html5xx { status: 504, apply };
    s.add_rule(FaultRule::new("POST", "/fapi/v1/order", html(false)));
    let r = raw_market(&s, "albEN-bbbbbbbbbbb1-1").await.unwrap();
    assert_eq!(r.status().as_u16(), 504);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("<TITLE>504 Gateway Timeout</TITLE>"));
    assert_eq!(s.position(KEY, "BTCUSDT"), Decimal::ZERO);
    s.add_rule(FaultRule::new("POST", "/fapi/v1/order", html(true)));
    let r = raw_market(&s, "albEN-bbbbbbbbbbb1-2").await.unwrap();
    assert_eq!(r.status().as_u16(), 504);
    assert_eq!(
        s.position(KEY, "BTCUSDT"),
        dec!(0.002),
        "applied behind the 504"
    );

    s.add_rule(FaultRule::new(
        "POST",
        "/fapi/v1/order",
        FaultKind::DropAfterApply,
    ));
    let body = match raw_market(&s, "albEN-bbbbbbbbbbb1-3").await {
        Ok(r) => r.text().await,
        Err(e) => Err(e),
    };
    assert!(body.is_err(), "the answer must break off: {body:?}");
    assert_eq!(
        s.position(KEY, "BTCUSDT"),
        dec!(0.004),
        "applied before the break"
    );
}

#[tokio::test]
async fn a_hold_answers_only_when_released_and_applies_as_told() {
    let s = server().await;
    s.set_mark_price("BTCUSDT", dec!(87000));
    s.add_rule(FaultRule::new(
        "POST",
        "/fapi/v1/order",
        FaultKind::Hold { apply: false },
    ));
    let held = raw_market(&s, "albEN-ccccccccccc1-1");
    tokio::pin!(held);
    let waited = tokio::time::timeout(Duration::from_millis(600), &mut held).await;
    assert!(waited.is_err(), "answered while held");
    assert_eq!(s.holding(), 1);
    s.release_holds();
    let r = held.await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(s.holding(), 0);
    assert_eq!(
        s.position(KEY, "BTCUSDT"),
        Decimal::ZERO,
        "an unapplied hold places nothing"
    );
    // The clock jumps: a request signed on the old clock is now outside recvWindow.
    let before = s.time();
    s.shift_time(30_000);
    assert!(s.time() >= before + 30_000);
}

#[tokio::test]
async fn unknown_503_applies_or_not_as_told() {
    let s = server().await;
    let api = Api::new(&s);
    s.set_mark_price("BTCUSDT", dec!(87000));
    s.inject(Fault::Unknown503 {
        path: "/fapi/v1/order".into(),
        apply: false,
    });
    let a = api
        .market("BUY", "0.002", false, "albEN-ffffffffffff-1")
        .await;
    assert_eq!((a.status, code(&a)), (503, -1000));
    assert_eq!(
        a.body["msg"],
        "Unknown error, please check your request or try again later."
    );
    assert_eq!(s.position(KEY, "BTCUSDT"), Decimal::ZERO);

    s.inject(Fault::Unknown503 {
        path: "/fapi/v1/order".into(),
        apply: true,
    });
    let a = api
        .market("BUY", "0.002", false, "albEN-ffffffffffff-2")
        .await;
    assert_eq!(a.status, 503);
    assert_eq!(
        s.position(KEY, "BTCUSDT"),
        dec!(0.002),
        "applied despite the 503"
    );
    let q = api
        .signed(
            Method::GET,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("origClientOrderId", "albEN-ffffffffffff-2"),
            ],
        )
        .await;
    assert_eq!(q.body["status"], "FILLED", "the lookup finds it");
}

#[tokio::test]
async fn timeout_with_apply_places_the_order_but_loses_the_answer() {
    let s = server().await;
    s.set_mark_price("BTCUSDT", dec!(87000));
    let impatient = Api::with(&s, KEY, SECRET, Duration::from_millis(800));
    s.inject(Fault::Timeout {
        path: "/fapi/v1/order".into(),
        apply: true,
    });
    let mut p: Vec<(&str, String)> = vec![
        ("symbol", "BTCUSDT".into()),
        ("side", "BUY".into()),
        ("type", "MARKET".into()),
        ("quantity", "0.002".into()),
        ("newClientOrderId", "albEN-111111111111-1".into()),
    ];
    p.push(("timestamp", s.time().to_string()));
    let url = format!("{}/fapi/v1/order?{}", s.url, signed_query(SECRET, &p));
    let err = impatient
        .http
        .post(url)
        .header("X-MBX-APIKEY", KEY)
        .send()
        .await
        .expect_err("the answer never comes");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(0.002));
    let logged = s.requests();
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].status, None, "still unanswered");
    assert_eq!(logged[0].params["newClientOrderId"], "albEN-111111111111-1");
    assert_eq!(logged[0].api_key.as_deref(), Some(KEY));

    s.inject(Fault::Timeout {
        path: "/fapi/v1/order".into(),
        apply: false,
    });
    p.pop();
    p.push(("timestamp", s.time().to_string()));
    let url = format!("{}/fapi/v1/order?{}", s.url, signed_query(SECRET, &p));
    let err = impatient
        .http
        .post(url)
        .header("X-MBX-APIKEY", KEY)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(
        s.position(KEY, "BTCUSDT"),
        dec!(0.002),
        "not applied this time"
    );
}

#[tokio::test]
async fn hold_after_apply_signals_the_order_and_never_answers() {
    let s = server().await;
    s.set_mark_price("BTCUSDT", dec!(87000));
    assert!(
        !s.wait_for_order(Duration::from_millis(50)).await,
        "nothing placed yet"
    );
    s.inject(Fault::HoldAfterApply {
        path: "/fapi/v1/order".into(),
    });
    let url = s.url.clone();
    let p = [
        ("symbol", "BTCUSDT"),
        ("side", "SELL"),
        ("type", "MARKET"),
        ("quantity", "0.002"),
    ];
    let mut params: Vec<(&str, String)> = p.iter().map(|(k, v)| (*k, v.to_string())).collect();
    params.push(("timestamp", s.time().to_string()));
    let q = signed_query(SECRET, &params);
    let pending = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{url}/fapi/v1/order?{q}"))
            .header("X-MBX-APIKEY", KEY)
            .timeout(Duration::from_secs(30))
            .send()
            .await
    });
    assert!(s.wait_for_order(Duration::from_secs(3)).await);
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(-0.002));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "the answer is held");
    assert!(
        !s.wait_for_order(Duration::from_millis(50)).await,
        "only one order so far"
    );
    drop(s);
    let released = tokio::time::timeout(Duration::from_secs(3), pending).await;
    assert!(
        released.is_ok(),
        "dropping the server releases the held request"
    );
}

/// Every key of the recorded fixture exists in `ours` with the same JSON type (arrays: first
/// elements compared recursively).
fn assert_shape(name: &str, fixture: &Value, ours: &Value, at: &str) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    assert_eq!(
        kind(fixture),
        kind(ours),
        "{name}{at}: type differs (ours: {ours})"
    );
    match (fixture, ours) {
        (Value::Object(f), Value::Object(o)) => {
            for (k, fv) in f {
                let ov = o
                    .get(k)
                    .unwrap_or_else(|| panic!("{name}{at}: missing key `{k}`"));
                assert_shape(name, fv, ov, &format!("{at}.{k}"));
            }
        }
        (Value::Array(f), Value::Array(o)) => {
            if let (Some(fv), Some(ov)) = (f.first(), o.first()) {
                assert_shape(name, fv, ov, &format!("{at}[0]"));
            }
            if f.first().is_some_and(Value::is_array) {
                assert_eq!(
                    f[0].as_array().unwrap().len(),
                    o[0].as_array().unwrap().len(),
                    "{name}{at}"
                );
            }
        }
        _ => {}
    }
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/binance")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn responses_match_recorded_shapes() {
    let s = server().await;
    let api = Api::new(&s);
    s.set_mark_price("BTCUSDT", dec!(87000));
    let check = |name: &str, a: &Answer| {
        assert!(
            a.status == 200 || name == "error.json",
            "{name}: {}",
            a.body
        );
        assert_shape(name, &fixture(name), &a.body, "");
    };
    check("time.json", &api.public("/fapi/v1/time", "").await);
    check(
        "klines.json",
        &api.public("/fapi/v1/klines", "symbol=BTCUSDT&interval=15m&limit=2")
            .await,
    );
    check(
        "exchange_info.json",
        &api.public("/fapi/v1/exchangeInfo", "").await,
    );
    check(
        "symbol_config.json",
        &api.signed(
            Method::GET,
            "/fapi/v1/symbolConfig",
            &[("symbol", "BTCUSDT")],
        )
        .await,
    );
    check(
        "leverage.json",
        &api.signed(
            Method::POST,
            "/fapi/v1/leverage",
            &[("symbol", "BTCUSDT"), ("leverage", "5")],
        )
        .await,
    );
    check(
        "margin_type.json",
        &api.signed(
            Method::POST,
            "/fapi/v1/marginType",
            &[("symbol", "BTCUSDT"), ("marginType", "ISOLATED")],
        )
        .await,
    );
    check(
        "order_result.json",
        &api.market("BUY", "0.010", false, "albEN-222222222222-1")
            .await,
    );
    check(
        "order_query.json",
        &api.signed(
            Method::GET,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("origClientOrderId", "albEN-222222222222-1"),
            ],
        )
        .await,
    );
    check(
        "account_v3.json",
        &api.signed(Method::GET, "/fapi/v3/account", &[]).await,
    );
    check(
        "position_risk_v3.json",
        &api.signed(Method::GET, "/fapi/v3/positionRisk", &[]).await,
    );
    check(
        "algo_order_new.json",
        &api.stop("SELL", "85000.0", "albSL-222222222222-1").await,
    );
    check(
        "open_algo_orders.json",
        &api.signed(Method::GET, "/fapi/v1/openAlgoOrders", &[])
            .await,
    );
    s.trigger_algo_orders("BTCUSDT", dec!(84000));
    check(
        "algo_order_query.json",
        &api.signed(
            Method::GET,
            "/fapi/v1/algoOrder",
            &[("clientAlgoId", "albSL-222222222222-1")],
        )
        .await,
    );
    s.set_mark_price("BTCUSDT", dec!(87000));
    api.market("BUY", "0.010", false, "albEN-222222222222-2")
        .await;
    api.stop("SELL", "85000.0", "albSL-222222222222-2").await;
    check(
        "algo_order_cancel.json",
        &api.signed(
            Method::DELETE,
            "/fapi/v1/algoOrder",
            &[("clientAlgoId", "albSL-222222222222-2")],
        )
        .await,
    );
    check(
        "user_trades.json",
        &api.signed(Method::GET, "/fapi/v1/userTrades", &[("symbol", "BTCUSDT")])
            .await,
    );
    check(
        "income.json",
        &api.signed(Method::GET, "/fapi/v1/income", &[]).await,
    );
    let refused = api
        .signed(
            Method::POST,
            "/fapi/v1/order",
            &[
                ("symbol", "BTCUSDT"),
                ("side", "SELL"),
                ("type", "STOP_MARKET"),
            ],
        )
        .await;
    check("error.json", &refused);
}
