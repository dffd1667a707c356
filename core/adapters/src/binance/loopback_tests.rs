//! The client against a tiny loopback HTTP/1.1 server: signing on the wire, retry and
//! exactly-once rules (429 Retry-After, -1021 resync, 503 and timeouts on POST), weight gauge.
//! Each test scripts the server's answers per request; short timeouts keep them quick.

use super::*;
use albra_core::domain::{ClientId, OrderSide, Qty};
use albra_core::ports::{ApiKeys, Secret};
use rust_decimal_macros::dec;
use std::sync::atomic::AtomicUsize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
const SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    api_key: Option<String>,
    content_length: Vec<String>,
}

impl Seen {
    fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }
    /// The signature must be the HMAC of exactly the bytes before `&signature=`.
    fn signature_ok(&self) -> bool {
        match self.query.rsplit_once("&signature=") {
            Some((payload, sig)) => sign(SECRET, payload) == sig,
            None => false,
        }
    }
}

enum Reply {
    Json(u16, Vec<(&'static str, String)>, String),
    /// Read the request, then never answer.
    Hang,
}

fn ok(body: &str) -> Reply {
    Reply::Json(200, vec![], body.to_string())
}

type Handler = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serve `handler(request, n)` where `n` counts earlier requests to the same path.
    async fn start(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let seen2 = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = sock.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let mut lines = head.split("\r\n");
                    let mut request_line = lines.next().unwrap_or("").split(' ');
                    let method = request_line.next().unwrap_or("").to_string();
                    let target = request_line.next().unwrap_or("").to_string();
                    let (path, query) = match target.split_once('?') {
                        Some((p, q)) => (p.to_string(), q.to_string()),
                        None => (target.clone(), String::new()),
                    };
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                        .collect();
                    let header = |name: &str| {
                        headers
                            .iter()
                            .filter(|(k, _)| k == name)
                            .map(|(_, v)| v.clone())
                            .collect::<Vec<_>>()
                    };
                    let req = Seen {
                        method,
                        path,
                        query,
                        api_key: header("x-mbx-apikey").into_iter().next(),
                        content_length: header("content-length"),
                    };
                    let n = {
                        let mut s = seen.lock().unwrap();
                        let n = s.iter().filter(|r| r.path == req.path).count();
                        s.push(req.clone());
                        n
                    };
                    match handler(&req, n) {
                        Reply::Hang => {
                            tokio::time::sleep(Duration::from_secs(30)).await;
                        }
                        Reply::Json(status, headers, body) => {
                            let mut out = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                                body.len()
                            );
                            for (k, v) in headers {
                                out.push_str(&format!("{k}: {v}\r\n"));
                            }
                            out.push_str("\r\n");
                            out.push_str(&body);
                            let _ = sock.write_all(out.as_bytes()).await;
                            let _ = sock.shutdown().await;
                        }
                    }
                });
            }
        });
        Server { base, seen }
    }

    fn hits(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

fn client(base: &str, keys: bool) -> BinanceClient {
    client_with(base, keys, Duration::from_secs(2))
}

fn client_with(base: &str, keys: bool, timeout: Duration) -> BinanceClient {
    let cfg = BinanceConfig {
        base_url: base.to_string(),
        recv_window_ms: 5000,
        timeout,
        max_retry_wait: Duration::from_secs(3),
    };
    let keys = keys.then(|| ApiKeys {
        api_key: Secret::new(KEY),
        api_secret: Secret::new(SECRET),
    });
    BinanceClient::new(cfg, keys).unwrap()
}

fn time_body() -> String {
    format!(r#"{{"serverTime": {}}}"#, local_now_ms())
}

const FILLED: &str = r#"{"clientOrderId": "al-EN-abc-1", "cumQuote": "217.9886", "executedQty": "0.002",
  "orderId": 42, "avgPrice": "108994.30", "origQty": "0.002", "price": "0", "reduceOnly": false,
  "side": "BUY", "positionSide": "BOTH", "status": "FILLED", "symbol": "BTCUSDT", "type": "MARKET",
  "updateTime": 1751630405123}"#;

fn market() -> MarketOrder {
    MarketOrder {
        symbol: Symbol::new("BTCUSDT"),
        side: OrderSide::Buy,
        qty: Qty::new(dec!(0.002)),
        reduce_only: false,
        client_id: ClientId("al-EN-abc-1".to_string()),
    }
}

/// Errors must never leak the key, the secret or a signature.
fn assert_no_secrets(e: &ExchangeError, seen: &[Seen]) {
    let text = format!("{e} {e:?}");
    assert!(!text.contains(KEY), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    for s in seen {
        if let Some(sig) = s.param("signature") {
            assert!(!text.contains(&sig), "{text}");
        }
    }
}

#[tokio::test]
async fn signed_market_order_on_the_wire() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&format!(r#"{{"serverTime": {}}}"#, local_now_ms() + 7_000)),
        "/fapi/v1/order" => {
            let mut r = ok(FILLED);
            if let Reply::Json(_, h, _) = &mut r {
                h.push(("X-MBX-USED-WEIGHT-1M", "42".to_string()));
            }
            r
        }
        _ => Reply::Json(404, vec![], "{}".into()),
    })
    .await;
    let c = client(&server.base, true);
    let o = c.place_market(&market()).await.unwrap();
    assert_eq!(o.order_id, 42);
    assert_eq!(c.used_weight_1m(), Some(42));
    let offset = c.time_offset_ms().unwrap();
    assert!((6_000..8_000).contains(&offset), "offset {offset}");

    let hits = server.hits("/fapi/v1/order");
    assert_eq!(hits.len(), 1);
    let h = &hits[0];
    assert_eq!(h.method, "POST");
    assert_eq!(
        h.content_length,
        vec!["0".to_string()],
        "params in the query, empty body"
    );
    assert_eq!(h.api_key.as_deref(), Some(KEY));
    assert!(
        h.signature_ok(),
        "signature over the exact query: {}",
        h.query
    );
    assert!(h.query.starts_with(
        "symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.002&newClientOrderId=al-EN-abc-1&newOrderRespType=RESULT&recvWindow=5000&timestamp="
    ), "{}", h.query);
    // The timestamp is on the exchange clock (local + offset).
    let ts: i64 = h.param("timestamp").unwrap().parse().unwrap();
    assert!((ts - (local_now_ms() + offset)).abs() < 2_000, "ts {ts}");
    // The time endpoint is public: no key sent.
    assert_eq!(server.hits("/fapi/v1/time")[0].api_key, None);
}

/// One process measures the exchange clock once: an account client made `with_keys` signs with
/// the public client's offset (no time request of its own), shares its exchangeInfo table and
/// weight gauge, and `exchange_now` reuses a fresh measurement moved on by the monotonic clock.
#[tokio::test]
async fn clients_with_keys_share_the_clock_the_rules_and_the_weight() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&format!(r#"{{"serverTime": {}}}"#, local_now_ms() + 7_000)),
        "/fapi/v1/exchangeInfo" => ok(r#"{"symbols": []}"#),
        "/fapi/v1/order" => {
            let mut r = ok(FILLED);
            if let Reply::Json(_, h, _) = &mut r {
                h.push(("X-MBX-USED-WEIGHT-1M", "17".to_string()));
            }
            r
        }
        _ => Reply::Json(404, vec![], "{}".into()),
    })
    .await;
    let public = client(&server.base, false);
    let first = public.exchange_now(Duration::from_secs(5)).await.unwrap();
    let account = public
        .with_keys(ApiKeys {
            api_key: Secret::new(KEY),
            api_secret: Secret::new(SECRET),
        })
        .unwrap();
    assert_eq!(account.time_offset_ms(), public.time_offset_ms());
    account.place_market(&market()).await.unwrap();
    let again = public.exchange_now(Duration::from_secs(5)).await.unwrap();
    assert!(again >= first && again - first < 2_000, "{first} {again}");
    assert_eq!(server.hits("/fapi/v1/time").len(), 1, "one clock read");
    let h = &server.hits("/fapi/v1/order")[0];
    assert!(h.signature_ok());
    let ts: i64 = h.param("timestamp").unwrap().parse().unwrap();
    assert!((ts - (local_now_ms() + 7_000)).abs() < 2_000, "ts {ts}");
    // The order's answer set the gauge the public client reads.
    assert_eq!(public.used_weight_1m(), Some(17));
    // One exchangeInfo for both.
    let btc = Symbol::new("BTCUSDT");
    assert!(public.symbol_filters(&btc).await.is_err());
    assert!(account.symbol_filters(&btc).await.is_err());
    assert_eq!(server.hits("/fapi/v1/exchangeInfo").len(), 1);
    // A measurement older than allowed is taken again.
    tokio::time::sleep(Duration::from_millis(20)).await;
    public
        .exchange_now(Duration::from_millis(10))
        .await
        .unwrap();
    assert_eq!(server.hits("/fapi/v1/time").len(), 2);
}

#[tokio::test]
async fn public_endpoints_and_exchange_info_cache() {
    let t0 = 1_751_626_800_000_i64;
    let server = Server::start(move |req, _| match req.path.as_str() {
        "/fapi/v1/klines" => ok(&format!(
            r#"[[{t0},"1","2","0.5","1.5","10",{},"0",1,"0","0","0"],
                [{},"1.5","2","1","1.8","11",{},"0",1,"0","0","0"]]"#,
            t0 + 899_999,
            t0 + 900_000,
            t0 + 1_799_999
        )),
        "/fapi/v1/exchangeInfo" => ok(crate::binance::parse::tests::BTC_INFO),
        _ => Reply::Json(404, vec![], "{}".into()),
    })
    .await;
    let c = client(&server.base, false);
    let k = c
        .closed_klines(&Symbol::new("BTCUSDT"), Timeframe::M15, 100, t0 + 1_000_000)
        .await
        .unwrap();
    assert_eq!(k.len(), 1, "a forming candle served anyway is dropped");
    assert_eq!(k[0].open_time, t0);
    // The window ends before the forming candle (open t0 + 900 000): exactly `limit` closed rows
    // are asked for, so 1000 of them cost weight 5, not 10 as 1001 would.
    let kh = &server.hits("/fapi/v1/klines")[0];
    assert_eq!(
        kh.query,
        format!(
            "symbol=BTCUSDT&interval=15m&endTime={}&limit=100",
            t0 + 899_999
        )
    );
    assert_eq!(kh.api_key, None);

    let btc = c.symbol_filters(&Symbol::new("BTCUSDT")).await.unwrap();
    assert_eq!(btc.tick_size, dec!(0.1));
    match c.symbol_filters(&Symbol::new("NOPEUSDT")).await {
        Err(ExchangeError::Fatal(m)) => assert!(m.contains("NOPEUSDT"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hits("/fapi/v1/exchangeInfo").len(), 1, "cached");

    // Without keys a signed call fails before anything is sent.
    match c.account().await {
        Err(ExchangeError::Fatal(m)) => {
            assert!(
                m.contains("needs API keys") && m.contains("GET /fapi/v3/account"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(server.hits("/fapi/v3/account").is_empty());
    assert!(server.hits("/fapi/v1/time").is_empty());
}

#[tokio::test]
async fn history_windows_on_the_wire() {
    let t0 = 1_751_626_800_000_i64;
    let server = Server::start(move |req, _| match req.path.as_str() {
        // Three rows: one before the window (a server that ignores startTime), one inside, one
        // still forming at `now`.
        "/fapi/v1/klines" => ok(&format!(
            r#"[[{},"1","2","0.5","1.5","10",0,"0",1,"0","0","0"],
                [{t0},"1.50","2","1","1.8","11",0,"0",1,"0","0","0"],
                [{},"1.8","2","1","1.9","1",0,"0",1,"0","0","0"]]"#,
            t0 - 900_000,
            t0 + 900_000
        )),
        "/fapi/v1/fundingRate" => ok(&format!(
            r#"[{{"symbol":"BTCUSDT","fundingRate":"0.00010000","fundingTime":{t0},"markPrice":"108994.30"}}]"#
        )),
        _ => Reply::Json(404, vec![], "{}".into()),
    })
    .await;
    let c = client(&server.base, false);
    let btc = Symbol::new("BTCUSDT");
    let window = (t0, t0 + 10 * 900_000);
    let k = c
        .klines_between(&btc, Timeframe::M15, window, 1500, t0 + 1_000_000)
        .await
        .unwrap();
    assert_eq!(
        k.len(),
        1,
        "only the closed candle inside the window: {k:?}"
    );
    assert_eq!(
        (k[0].open_time, k[0].open.get().to_string()),
        (t0, "1.50".into())
    );
    assert_eq!(
        server.hits("/fapi/v1/klines")[0].query,
        format!(
            "symbol=BTCUSDT&interval=15m&startTime={t0}&endTime={}&limit=1500",
            window.1 - 1
        )
    );
    let f = c.funding_rates(&btc, window, 5000).await.unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].mark_price.map(|p| p.to_string()),
        Some("108994.30".into())
    );
    let fh = &server.hits("/fapi/v1/fundingRate")[0];
    assert_eq!(
        fh.query,
        format!(
            "symbol=BTCUSDT&startTime={t0}&endTime={}&limit=1000",
            window.1 - 1
        ),
        "the limit is capped at Binance's 1000"
    );
    assert_eq!(fh.api_key, None);
    // An empty window asks nothing.
    assert!(c
        .funding_rates(&btc, (t0, t0), 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(server.hits("/fapi/v1/fundingRate").len(), 1);
    assert_eq!(klines_weight(1500), 10);
    assert_eq!(klines_weight(1000), 5);
    assert_eq!(klines_weight(99), 1);
    assert_eq!(klines_weight(100), 2);
}

#[tokio::test]
async fn recv_window_rejection_resyncs_and_resends_once() {
    // The first clock reading is 30 s off (as after a stale sync); the server enforces recvWindow
    // against its real clock, so only a resynced timestamp gets through.
    let server = Server::start(|req, n| match req.path.as_str() {
        "/fapi/v1/time" if n == 0 => ok(&format!(r#"{{"serverTime": {}}}"#, local_now_ms() - 30_000)),
        "/fapi/v1/time" => ok(&time_body()),
        "/fapi/v1/order" => {
            let ts: i64 = req.param("timestamp").unwrap().parse().unwrap();
            if (local_now_ms() - ts).abs() > 5_000 {
                Reply::Json(
                    400,
                    vec![],
                    r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#.into(),
                )
            } else {
                ok(FILLED)
            }
        }
        _ => Reply::Json(404, vec![], "{}".into()),
    })
    .await;
    let c = client(&server.base, true);
    let o = c.place_market(&market()).await.unwrap();
    assert_eq!(o.client_id, "al-EN-abc-1");
    assert_eq!(
        server.hits("/fapi/v1/time").len(),
        2,
        "initial sync + resync"
    );
    let orders = server.hits("/fapi/v1/order");
    assert_eq!(orders.len(), 2);
    assert!(orders.iter().all(Seen::signature_ok));
    let ts = |s: &Seen| s.param("timestamp").unwrap().parse::<i64>().unwrap();
    assert!(
        ts(&orders[1]) - ts(&orders[0]) > 25_000,
        "second send uses the resynced clock"
    );
    assert!(c.time_offset_ms().unwrap().abs() < 2_000);
}

#[tokio::test]
async fn second_recv_window_rejection_is_retryable_and_not_resent() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&time_body()),
        _ => Reply::Json(
            400,
            vec![],
            r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#
                .into(),
        ),
    })
    .await;
    let c = client(&server.base, true);
    let e = c.place_market(&market()).await.unwrap_err();
    assert!(matches!(e, ExchangeError::Retryable { .. }), "{e:?}");
    assert_eq!(server.hits("/fapi/v1/order").len(), 2);
    assert_eq!(server.hits("/fapi/v1/time").len(), 2);
    assert_no_secrets(&e, &server.hits("/fapi/v1/order"));
}

#[tokio::test]
async fn get_honours_retry_after_then_succeeds() {
    let server = Server::start(|req, n| match req.path.as_str() {
        "/fapi/v1/time" if n == 0 => Reply::Json(
            429,
            vec![("Retry-After", "1".into())],
            r#"{"code":-1003,"msg":"Too many requests."}"#.into(),
        ),
        "/fapi/v1/time" => ok(r#"{"serverTime": 1499827319559}"#),
        _ => Reply::Json(404, vec![], "{}".into()),
    })
    .await;
    let c = client(&server.base, false);
    let started = Instant::now();
    assert_eq!(c.server_time().await.unwrap(), 1_499_827_319_559);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After"
    );
    assert_eq!(server.hits("/fapi/v1/time").len(), 2);
}

#[tokio::test]
async fn retry_after_beyond_the_limit_is_returned_not_slept() {
    let server = Server::start(|_, _| {
        Reply::Json(
            418,
            vec![("Retry-After", "120".into())],
            r#"{"code":-1003,"msg":"banned"}"#.into(),
        )
    })
    .await;
    let c = client(&server.base, false);
    let started = Instant::now();
    match c.server_time().await {
        Err(ExchangeError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(120)))
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.hits("/fapi/v1/time").len(), 1);
}

#[tokio::test]
async fn rate_limited_post_is_resent_once_only() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&time_body()),
        _ => Reply::Json(
            429,
            vec![("Retry-After", "0".into())],
            r#"{"code":-1003,"msg":"Too many requests."}"#.into(),
        ),
    })
    .await;
    let c = client(&server.base, true);
    let e = c.place_market(&market()).await.unwrap_err();
    assert!(matches!(e, ExchangeError::Retryable { .. }), "{e:?}");
    assert_eq!(
        server.hits("/fapi/v1/order").len(),
        2,
        "one resend for 429, no more"
    );
}

#[tokio::test]
async fn post_503_is_unknown_outcome_and_not_resent() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&time_body()),
        _ => Reply::Json(
            503,
            vec![],
            r#"{"code":-1000,"msg":"Unknown error, please check your request or try again later."}"#.into(),
        ),
    })
    .await;
    let c = client(&server.base, true);
    let e = c.place_market(&market()).await.unwrap_err();
    match &e {
        ExchangeError::UnknownOutcome { endpoint, .. } => {
            assert_eq!(endpoint, "POST /fapi/v1/order")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hits("/fapi/v1/order").len(), 1);
    assert_no_secrets(&e, &server.hits("/fapi/v1/order"));

    // The same answer to an idempotent lookup is retried (3 attempts) and stays retryable.
    let e = c
        .order_by_client_id(&Symbol::new("BTCUSDT"), "al-EN-abc-1")
        .await
        .unwrap_err();
    assert!(matches!(e, ExchangeError::Retryable { .. }), "{e:?}");
    let lookups = server.hits("/fapi/v1/order").len() - 1;
    assert_eq!(lookups, 3);
}

#[tokio::test]
async fn post_timeout_is_unknown_outcome() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&time_body()),
        _ => Reply::Hang,
    })
    .await;
    let c = client_with(&server.base, true, Duration::from_millis(400));
    let e = c.place_market(&market()).await.unwrap_err();
    match &e {
        ExchangeError::UnknownOutcome { endpoint, detail } => {
            assert_eq!(endpoint, "POST /fapi/v1/order");
            assert!(detail.contains("timeout"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hits("/fapi/v1/order").len(), 1, "never resent");
    assert_no_secrets(&e, &server.hits("/fapi/v1/order"));
}

#[tokio::test]
async fn refused_connection_is_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let c = client_with(&base, true, Duration::from_millis(500));
    // Nothing was sent, so even a POST may be retried by the caller.
    *c.inner.link.time_offset.lock().unwrap() = Some(0);
    let e = c.place_market(&market()).await.unwrap_err();
    assert!(matches!(e, ExchangeError::Retryable { .. }), "{e:?}");
    assert_no_secrets(&e, &[]);
}

#[tokio::test]
async fn lookups_map_unknown_ids_to_none() {
    let calls = Arc::new(AtomicUsize::new(0));
    let calls2 = calls.clone();
    let server = Server::start(move |req, _| {
        calls2.fetch_add(1, Ordering::SeqCst);
        match req.path.as_str() {
            "/fapi/v1/time" => ok(&time_body()),
            "/fapi/v1/order" => Reply::Json(
                400,
                vec![],
                r#"{"code":-2013,"msg":"Order does not exist."}"#.into(),
            ),
            "/fapi/v1/algoOrder" if req.method == "GET" => Reply::Json(
                400,
                vec![],
                r#"{"code":-2013,"msg":"Order does not exist."}"#.into(),
            ),
            "/fapi/v1/algoOrder" => Reply::Json(
                400,
                vec![],
                r#"{"code":-2011,"msg":"Unknown order sent."}"#.into(),
            ),
            "/fapi/v1/marginType" => Reply::Json(
                400,
                vec![],
                r#"{"code":-4046,"msg":"No need to change margin type."}"#.into(),
            ),
            _ => Reply::Json(404, vec![], "{}".into()),
        }
    })
    .await;
    let c = client(&server.base, true);
    let btc = Symbol::new("BTCUSDT");
    assert!(c
        .order_by_client_id(&btc, "al-EN-x")
        .await
        .unwrap()
        .is_none());
    assert!(c.algo_by_client_id("al-SL-x").await.unwrap().is_none());
    assert_eq!(
        c.cancel_algo(&btc, "al-SL-x")
            .await
            .unwrap_err()
            .to_string(),
        "DELETE /fapi/v1/algoOrder: rejected by the exchange: code -2011: Unknown order sent."
    );
    c.set_margin_type(&btc, MarginType::Isolated).await.unwrap();
    let cancel = server
        .hits("/fapi/v1/algoOrder")
        .into_iter()
        .find(|r| r.method == "DELETE")
        .unwrap();
    assert!(cancel
        .query
        .starts_with("clientAlgoId=al-SL-x&recvWindow=5000&timestamp="));
    assert!(cancel.signature_ok());
    let margin = &server.hits("/fapi/v1/marginType")[0];
    assert!(margin
        .query
        .starts_with("symbol=BTCUSDT&marginType=ISOLATED&"));
    assert_eq!(
        server.hits("/fapi/v1/order").len(),
        1,
        "a -2013 is not retried"
    );
}

#[tokio::test]
async fn malformed_answers_are_decode_errors_with_excerpts() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&time_body()),
        "/fapi/v3/account" => ok(r#"{"totalWalletBalance": "103.1", "availableBalance": "90"}"#),
        "/fapi/v3/positionRisk" => ok("<html>maintenance</html>"),
        _ => Reply::Json(404, vec![], "{}".into()),
    })
    .await;
    let c = client(&server.base, true);
    match c.account().await {
        Err(ExchangeError::Decode {
            endpoint,
            error,
            excerpt,
        }) => {
            assert_eq!(endpoint, "GET /fapi/v3/account");
            assert!(error.contains("totalMarginBalance"), "{error}");
            assert_eq!(
                excerpt,
                r#"{"totalWalletBalance": "103.1", "availableBalance": "90"}"#
            );
        }
        other => panic!("{other:?}"),
    }
    match c.positions().await {
        Err(ExchangeError::Decode {
            endpoint, excerpt, ..
        }) => {
            assert_eq!(endpoint, "GET /fapi/v3/positionRisk");
            assert_eq!(excerpt, "<html>maintenance</html>");
        }
        other => panic!("{other:?}"),
    }
    // A 2xx that does not parse is not retried: the request was answered.
    assert_eq!(server.hits("/fapi/v3/positionRisk").len(), 1);
}

#[tokio::test]
async fn post_server_error_is_retryable_but_left_to_the_engine() {
    let server = Server::start(|req, _| match req.path.as_str() {
        "/fapi/v1/time" => ok(&time_body()),
        _ => Reply::Json(500, vec![], r#"{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}"#.into()),
    })
    .await;
    let c = client(&server.base, true);
    let e = c.place_market(&market()).await.unwrap_err();
    assert!(matches!(e, ExchangeError::Retryable { .. }), "{e:?}");
    assert_eq!(
        server.hits("/fapi/v1/order").len(),
        1,
        "a POST is only resent after 429/418 or -1021"
    );
}

/// A redirect is not followed: the API key and the signed query reach only the configured host,
/// no request carries a Referer, and the caller gets a fatal error naming the status.
#[tokio::test]
async fn redirects_are_refused_and_keys_stay_with_the_configured_host() {
    use crate::http::test_server::{has_referer, json_ok, redirect, target, RawServer};
    let elsewhere = RawServer::start(|_| json_ok(FILLED)).await;
    for status in [301, 302, 307, 308] {
        let to = elsewhere.base.clone();
        let server = RawServer::start(move |head| {
            if target(head).starts_with("/fapi/v1/time") {
                json_ok(&time_body())
            } else {
                redirect(status, &format!("{to}{}", target(head)))
            }
        })
        .await;
        let c = client(&server.base, true);
        let e = c.account().await.unwrap_err();
        match &e {
            ExchangeError::Fatal(m) => {
                assert!(m.contains(&format!("HTTP {status}")), "{m}");
                assert!(m.contains("GET /fapi/v3/account"), "{m}");
                assert!(!m.contains(KEY) && !m.contains("signature="), "{m}");
            }
            other => panic!("status {status}: {other:?}"),
        }
        let e = c.place_market(&market()).await.unwrap_err();
        assert!(
            matches!(&e, ExchangeError::Fatal(m) if m.contains(&format!("HTTP {status}"))),
            "status {status}: {e:?}"
        );
        let heads = server.heads();
        let signed: Vec<&String> = heads.iter().filter(|h| h.contains("signature=")).collect();
        assert_eq!(
            signed.len(),
            2,
            "one GET and one POST, neither retried: {heads:?}"
        );
        assert!(
            signed
                .iter()
                .all(|h| h.to_ascii_lowercase().contains("x-mbx-apikey: ")),
            "the configured host did get the key: {heads:?}"
        );
        assert!(!heads.iter().any(|h| has_referer(h)), "{heads:?}");
    }
    assert!(
        elsewhere.heads().is_empty(),
        "the redirect target received {:?}",
        elsewhere.heads()
    );
}

/// Plain http is refused at construction unless the host is loopback; nothing is sent, since
/// `new` makes no request.
#[test]
fn plain_http_only_to_loopback() {
    let cfg = |base: &str| BinanceConfig {
        base_url: base.to_string(),
        ..BinanceConfig::default()
    };
    for remote in [
        "http://example.com",
        "http://10.0.0.1",
        "http://fapi.binance.com/",
    ] {
        match BinanceClient::new(cfg(remote), None) {
            Err(ExchangeError::Fatal(m)) => {
                assert!(
                    m.contains(remote.trim_end_matches('/')) && m.contains("https is required"),
                    "{m}"
                );
            }
            other => panic!("{remote}: {other:?}"),
        }
    }
    for fine in [
        "http://127.0.0.1:9",
        "http://localhost:9",
        "http://[::1]:9",
        "https://fapi.binance.com",
        "https://testnet.binancefuture.com",
    ] {
        assert!(BinanceClient::new(cfg(fine), None).is_ok(), "{fine}");
    }
}
