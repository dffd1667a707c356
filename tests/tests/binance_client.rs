//! The real `BinanceClient` (reqwest) against the loopback Binance server: every `Exchange`
//! method on the wire, and each failure class mapped to the `ExchangeError` the engine relies on
//! (429 honoured via Retry-After, -1021 resync + resend, 503 / timeout on an order = unknown
//! outcome that a lookup resolves, rejections with Binance's codes, the open candle never returned).

use albra_adapters::binance::{BinanceClient, BinanceConfig};
use albra_core::domain::{Candle, ClientId, OrderSide, Price, Qty, Symbol, Timeframe};
use albra_core::ports::{
    AlgoKind, AlgoOrder, AlgoStatus, ApiKeys, Exchange, ExchangeError, MarginType, MarketOrder,
    OrderStatus, Secret, WorkingType,
};
use albra_tests::binance_server::{BinanceTestServer, Fault, ServerOptions, TestAccount};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const M15: i64 = 900_000;
const H1: i64 = 3_600_000;
/// 2025-12-29 00:00 UTC.
const T0: i64 = 1_766_966_400_000;
const KEY: &str = "client-key";
const SECRET: &str = "client-secret";

fn candles() -> Vec<Candle> {
    (0..400)
        .map(|i| {
            let open = Decimal::from(87_000 + (i % 16) * 25);
            Candle {
                open_time: T0 + i * M15,
                open: open.into(),
                high: (open + dec!(80)).into(),
                low: (open - dec!(60)).into(),
                close: (open + dec!(10)).into(),
                volume: Decimal::from(50 + i),
            }
        })
        .collect()
}

/// 7 s into the 15m candle that opened at 16:00 on day 3 (candle 256).
fn start_time() -> i64 {
    T0 + 256 * M15 + 7_000
}

async fn server() -> BinanceTestServer {
    let s = BinanceTestServer::start(ServerOptions {
        candles: HashMap::from([("BTCUSDT".to_string(), candles())]),
        base_tf_ms: M15,
        accounts: vec![TestAccount {
            api_key: KEY.into(),
            api_secret: SECRET.into(),
            wallet_balance: dec!(10000),
        }],
        start_time_ms: start_time(),
    })
    .await;
    s.set_mark_price("BTCUSDT", dec!(87000));
    s
}

fn client_with(s: &BinanceTestServer, secret: &str, timeout: Duration) -> BinanceClient {
    BinanceClient::new(
        BinanceConfig {
            base_url: s.url.clone(),
            recv_window_ms: 5000,
            timeout,
            max_retry_wait: Duration::from_secs(2),
        },
        Some(ApiKeys {
            api_key: Secret::new(KEY),
            api_secret: Secret::new(secret),
        }),
    )
    .expect("client builds")
}

fn client(s: &BinanceTestServer) -> BinanceClient {
    client_with(s, SECRET, Duration::from_secs(2))
}

fn btc() -> Symbol {
    Symbol::new("BTCUSDT")
}

fn market(side: OrderSide, qty: Decimal, reduce_only: bool, id: &str) -> MarketOrder {
    MarketOrder {
        symbol: btc(),
        side,
        qty: Qty::new(qty),
        reduce_only,
        client_id: ClientId(id.to_string()),
    }
}

fn close_all_stop(side: OrderSide, trigger: Decimal, id: &str) -> AlgoOrder {
    AlgoOrder {
        symbol: btc(),
        side,
        kind: AlgoKind::StopMarket,
        trigger_price: Some(Price::new(trigger)),
        qty: None,
        close_position: true,
        reduce_only: false,
        working_type: WorkingType::MarkPrice,
        client_algo_id: ClientId(id.to_string()),
    }
}

#[tokio::test]
async fn every_exchange_method_on_the_wire() {
    let s = server().await;
    let c = client(&s);

    let t = c.server_time().await.unwrap();
    assert!((start_time()..start_time() + 2_000).contains(&t));
    assert!(c.time_offset_ms().is_some());

    let filters = c.symbol_filters(&btc()).await.unwrap();
    assert_eq!(filters.tick_size, dec!(0.1));
    assert_eq!(filters.step_size, dec!(0.001));
    assert_eq!(filters.market_max_qty, dec!(120));
    assert_eq!(filters.min_notional, dec!(100));
    assert!(matches!(
        c.symbol_filters(&Symbol::new("NOPEUSDT")).await,
        Err(ExchangeError::Fatal(_))
    ));

    let acct = c.account().await.unwrap();
    assert_eq!(acct.equity.get(), dec!(10000));
    assert_eq!(acct.available_balance.get(), dec!(10000));

    c.set_leverage(&btc(), 10).await.unwrap();
    c.set_margin_type(&btc(), MarginType::Isolated)
        .await
        .unwrap();
    c.set_margin_type(&btc(), MarginType::Isolated)
        .await
        .expect("-4046 'no need to change' is success");
    let cfg = c.symbol_config(&btc()).await.unwrap();
    assert_eq!((cfg.leverage, cfg.margin_type), (10, MarginType::Isolated));

    let entry = c
        .place_market(&market(
            OrderSide::Buy,
            dec!(0.010),
            false,
            "albEN-0a1b2c3d4e5f-q1",
        ))
        .await
        .unwrap();
    assert_eq!(entry.status, OrderStatus::Filled);
    assert_eq!(entry.executed_qty.get(), dec!(0.010));
    assert_eq!(entry.avg_price.get(), dec!(87000));
    assert_eq!(entry.client_id, "albEN-0a1b2c3d4e5f-q1");

    let found = c
        .order_by_client_id(&btc(), "albEN-0a1b2c3d4e5f-q1")
        .await
        .unwrap()
        .expect("known order");
    assert_eq!(found.order_id, entry.order_id);
    assert_eq!(
        c.order_by_client_id(&btc(), "albEN-ffffffffffff-q1")
            .await
            .unwrap(),
        None
    );

    let positions = c.positions().await.unwrap();
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0].amount, dec!(0.01));
    assert_eq!(positions[0].entry_price.get(), dec!(87000));
    assert_eq!(positions[0].mark_price.get(), dec!(87000));

    let placed = c
        .place_algo(&close_all_stop(
            OrderSide::Sell,
            dec!(85500),
            "albSL-0a1b2c3d4e5f-q1",
        ))
        .await
        .unwrap();
    assert_eq!(placed.status, AlgoStatus::New);
    assert_eq!(placed.trigger_price, Some(Price::new(dec!(85500))));
    assert!(placed.close_position);
    let open = c.open_algo_orders(Some(&btc())).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].algo_id, placed.algo_id);
    assert_eq!(c.open_algo_orders(None).await.unwrap().len(), 1);
    assert_eq!(
        c.algo_by_client_id("albSL-ffffffffffff-q1").await.unwrap(),
        None
    );

    // The stop fires on the exchange; the client sees it finished with its fill.
    assert_eq!(s.trigger_algo_orders("BTCUSDT", dec!(85400)), 1);
    let done = c
        .algo_by_client_id("albSL-0a1b2c3d4e5f-q1")
        .await
        .unwrap()
        .expect("known algo order");
    assert_eq!(done.status, AlgoStatus::Finished);
    assert_eq!(done.actual_price, Some(Price::new(dec!(85400))));
    let fill_order = done.actual_order_id.expect("triggered order id");
    assert!(c.positions().await.unwrap().is_empty());
    assert!(c.open_algo_orders(None).await.unwrap().is_empty());

    let trades = c.user_trades(&btc(), start_time() - 1).await.unwrap();
    assert_eq!(trades.len(), 2);
    let exit = trades
        .iter()
        .find(|t| t.order_id == fill_order)
        .expect("stop fill");
    assert_eq!(exit.side, OrderSide::Sell);
    assert_eq!(exit.realized_pnl.get(), dec!(-16)); // (85400 − 87000) × 0.01
    assert_eq!(exit.commission.get(), dec!(0.3416));
    assert_eq!(exit.commission_asset, "USDT");
    // allOrders names each fill's order: our entry by its client id, and the triggered one.
    let orders = c.all_orders(&btc(), start_time() - 1).await.unwrap();
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert_eq!(orders[0].client_id, "albEN-0a1b2c3d4e5f-q1");
    assert_eq!(orders[0].order_id, entry.order_id);
    assert_eq!(orders[1].order_id, fill_order);
    assert_eq!(orders[1].executed_qty.get(), dec!(0.010));
    assert!(c.all_orders(&btc(), i64::MAX / 2).await.unwrap().is_empty());

    let income = c.income(start_time() - 1).await.unwrap();
    let total = |kind: &str| -> Decimal {
        income
            .iter()
            .filter(|i| i.income_type == kind)
            .map(|i| i.income.get())
            .sum()
    };
    assert_eq!(total("REALIZED_PNL"), dec!(-16));
    assert_eq!(total("COMMISSION"), -(dec!(0.348) + dec!(0.3416)));
    let after = c.account().await.unwrap();
    assert_eq!(
        after.wallet_balance.get(),
        dec!(10000) - dec!(16) - dec!(0.6896)
    );

    // Cancel: a live order goes away; an unknown one is a rejection the caller can read.
    c.place_market(&market(
        OrderSide::Sell,
        dec!(0.010),
        false,
        "albEN-0a1b2c3d4e5f-q2",
    ))
    .await
    .unwrap();
    c.place_algo(&close_all_stop(
        OrderSide::Buy,
        dec!(88500),
        "albSL-0a1b2c3d4e5f-q2",
    ))
    .await
    .unwrap();
    c.cancel_algo(&btc(), "albSL-0a1b2c3d4e5f-q2")
        .await
        .unwrap();
    let cancelled = c
        .algo_by_client_id("albSL-0a1b2c3d4e5f-q2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.status, AlgoStatus::Canceled);
    let err = c
        .cancel_algo(&btc(), "albSL-0a1b2c3d4e5f-q2")
        .await
        .unwrap_err();
    assert_eq!(code::<()>(Err(err)), -2011);

    assert!(c.used_weight_1m().unwrap_or(0) > 0, "weight header tracked");
}

#[tokio::test]
async fn closed_klines_never_return_the_open_candle() {
    let s = server().await;
    let c = client(&s);
    let now = s.time();
    let rows = c
        .closed_klines(&btc(), Timeframe::M15, 5, now)
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows.last().unwrap().open_time,
        T0 + 255 * M15,
        "candle 256 is still open"
    );
    assert!(rows
        .windows(2)
        .all(|w| w[1].open_time - w[0].open_time == M15));
    let all = candles();
    assert_eq!(rows.last().unwrap().close, all[255].close);

    // Hourly: 16:00 is forming, so the newest closed hour is 15:00.
    let hours = c
        .closed_klines(&btc(), Timeframe::H1, 3, now)
        .await
        .unwrap();
    assert_eq!(hours.len(), 3);
    assert_eq!(hours.last().unwrap().open_time, T0 + 63 * H1);
    assert_eq!(hours.last().unwrap().close, all[255].close);
    assert_eq!(hours.last().unwrap().open, all[252].open);

    // Exactly at the close the candle counts as closed.
    s.set_time(T0 + 257 * M15);
    let rows = c
        .closed_klines(&btc(), Timeframe::M15, 2, T0 + 257 * M15)
        .await
        .unwrap();
    assert_eq!(rows.last().unwrap().open_time, T0 + 256 * M15);
    // A caller whose `now` is still before that close does not get it either.
    let rows = c
        .closed_klines(&btc(), Timeframe::M15, 2, T0 + 257 * M15 - 1)
        .await
        .unwrap();
    assert_eq!(rows.last().unwrap().open_time, T0 + 255 * M15);
}

#[tokio::test]
async fn rate_limit_on_a_read_is_waited_out_per_retry_after() {
    let s = server().await;
    let c = client(&s);
    c.sync_time().await.unwrap();
    s.inject(Fault::RateLimit429 {
        path: "/fapi/v3/account".into(),
        retry_after_s: 1,
    });
    let started = Instant::now();
    let acct = c.account().await.unwrap();
    assert_eq!(acct.equity.get(), dec!(10000));
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(s.count("GET", "/fapi/v3/account"), 2);

    // A Retry-After beyond what the client may sleep comes back to the caller.
    s.inject(Fault::RateLimit429 {
        path: "/fapi/v3/positionRisk".into(),
        retry_after_s: 30,
    });
    match c.positions().await {
        Err(ExchangeError::Retryable { retry_after, .. }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(30)))
        }
        other => panic!("expected Retryable with Retry-After, got {other:?}"),
    }
    assert_eq!(s.count("GET", "/fapi/v3/positionRisk"), 1);
}

#[tokio::test]
async fn rate_limited_order_was_not_executed_and_is_resent_once() {
    let s = server().await;
    let c = client(&s);
    s.inject(Fault::RateLimit429 {
        path: "/fapi/v1/order".into(),
        retry_after_s: 1,
    });
    let o = c
        .place_market(&market(
            OrderSide::Buy,
            dec!(0.010),
            false,
            "albEN-0a1b2c3d4e5f-r1",
        ))
        .await
        .unwrap();
    assert_eq!(o.status, OrderStatus::Filled);
    assert_eq!(s.count("POST", "/fapi/v1/order"), 2);
    assert_eq!(
        s.position(KEY, "BTCUSDT"),
        dec!(0.010),
        "exactly one order took effect"
    );
}

#[tokio::test]
async fn timestamp_rejection_resyncs_the_clock_and_resends_once() {
    let s = server().await;
    let c = client(&s);
    c.sync_time().await.unwrap();
    let times_before = s.count("GET", "/fapi/v1/time");
    s.inject(Fault::Timestamp1021 {
        path: "/fapi/v1/order".into(),
    });
    c.place_market(&market(
        OrderSide::Buy,
        dec!(0.010),
        false,
        "albEN-0a1b2c3d4e5f-t1",
    ))
    .await
    .unwrap();
    assert_eq!(s.count("POST", "/fapi/v1/order"), 2);
    assert_eq!(
        s.count("GET", "/fapi/v1/time"),
        times_before + 1,
        "one resync"
    );
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(0.010));

    // A real drift: the exchange clock jumps 20 s ahead of what the client measured.
    s.set_time(s.time() + 20_000);
    let acct = c
        .account()
        .await
        .expect("resync recovers from a real -1021");
    assert_eq!(acct.wallet_balance.get(), dec!(10000) - dec!(0.348));
    let statuses: Vec<_> = s
        .requests()
        .into_iter()
        .filter(|r| r.path == "/fapi/v3/account")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(400), Some(200)]);

    // Two rejections in a row: reported as retryable, not resent a third time.
    s.inject(Fault::Timestamp1021 {
        path: "/fapi/v1/order".into(),
    });
    s.inject(Fault::Timestamp1021 {
        path: "/fapi/v1/order".into(),
    });
    let err = c
        .place_market(&market(
            OrderSide::Buy,
            dec!(0.010),
            false,
            "albEN-0a1b2c3d4e5f-t2",
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ExchangeError::Retryable { .. }), "{err:?}");
    assert_eq!(s.count("POST", "/fapi/v1/order"), 4);
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(0.010));
}

#[tokio::test]
async fn unknown_503_on_an_order_is_unknown_outcome_and_the_lookup_decides() {
    let s = server().await;
    let c = client(&s);
    s.inject(Fault::Unknown503 {
        path: "/fapi/v1/order".into(),
        apply: true,
    });
    let err = c
        .place_market(&market(
            OrderSide::Buy,
            dec!(0.010),
            false,
            "albEN-0a1b2c3d4e5f-u1",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::UnknownOutcome { .. }),
        "{err:?}"
    );
    assert_eq!(s.count("POST", "/fapi/v1/order"), 1, "never resent blindly");
    let found = c
        .order_by_client_id(&btc(), "albEN-0a1b2c3d4e5f-u1")
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.status), Some(OrderStatus::Filled));

    s.inject(Fault::Unknown503 {
        path: "/fapi/v1/order".into(),
        apply: false,
    });
    let err = c
        .place_market(&market(
            OrderSide::Buy,
            dec!(0.010),
            false,
            "albEN-0a1b2c3d4e5f-u2",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::UnknownOutcome { .. }),
        "{err:?}"
    );
    assert_eq!(
        c.order_by_client_id(&btc(), "albEN-0a1b2c3d4e5f-u2")
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(0.010));

    // The same fault on a read is just retried.
    s.inject(Fault::Unknown503 {
        path: "/fapi/v3/account".into(),
        apply: false,
    });
    assert!(c.account().await.is_ok());
    assert_eq!(s.count("GET", "/fapi/v3/account"), 2);
}

#[tokio::test]
async fn timeout_on_an_order_is_unknown_outcome() {
    let s = server().await;
    let c = client_with(&s, SECRET, Duration::from_millis(1200));
    c.sync_time().await.unwrap();
    s.inject(Fault::Timeout {
        path: "/fapi/v1/order".into(),
        apply: true,
    });
    let err = c
        .place_market(&market(
            OrderSide::Sell,
            dec!(0.010),
            false,
            "albEN-0a1b2c3d4e5f-w1",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::UnknownOutcome { .. }),
        "{err:?}"
    );
    assert_eq!(s.count("POST", "/fapi/v1/order"), 1);
    let found = c
        .order_by_client_id(&btc(), "albEN-0a1b2c3d4e5f-w1")
        .await
        .unwrap();
    assert!(
        found.is_some(),
        "the order took effect although its answer was lost"
    );
    assert_eq!(s.position(KEY, "BTCUSDT"), dec!(-0.010));

    // An algo order behaves the same way.
    s.inject(Fault::Timeout {
        path: "/fapi/v1/algoOrder".into(),
        apply: false,
    });
    let err = c
        .place_algo(&close_all_stop(
            OrderSide::Buy,
            dec!(88000),
            "albSL-0a1b2c3d4e5f-w1",
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExchangeError::UnknownOutcome { .. }),
        "{err:?}"
    );
    assert_eq!(
        c.algo_by_client_id("albSL-0a1b2c3d4e5f-w1").await.unwrap(),
        None
    );
}

/// The Binance code of a rejection, from its message (`code -2022: …`), after checking that the
/// reason the port sees is the one that code stands for.
fn code<T: std::fmt::Debug>(r: Result<T, ExchangeError>) -> i64 {
    match r {
        Err(ExchangeError::Rejected { reason, msg, .. }) => {
            let code: i64 = msg
                .strip_prefix("code ")
                .and_then(|m| m.split(':').next())
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("no Binance code in {msg:?}"));
            assert_eq!(
                reason,
                albra_adapters::binance::codes::refusal(code),
                "{msg}"
            );
            code
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn exchange_rejections_carry_binance_codes() {
    let s = server().await;
    let c = client(&s);
    let place = |side, qty, reduce, id: &'static str| {
        let c = &c;
        async move { c.place_market(&market(side, qty, reduce, id)).await }
    };
    assert_eq!(
        code(place(OrderSide::Sell, dec!(0.010), true, "albEX-0a1b2c3d4e5f-x1").await),
        -2022
    );
    assert_eq!(
        code(place(OrderSide::Buy, dec!(0.0105), false, "albEN-0a1b2c3d4e5f-x2").await),
        -1111
    );
    assert_eq!(
        code(place(OrderSide::Buy, dec!(0.001), false, "albEN-0a1b2c3d4e5f-x3").await),
        -4164
    );
    assert_eq!(
        code(place(OrderSide::Buy, dec!(5), false, "albEN-0a1b2c3d4e5f-x4").await),
        -2019
    );
    c.place_market(&market(
        OrderSide::Buy,
        dec!(0.010),
        false,
        "albEN-0a1b2c3d4e5f-x5",
    ))
    .await
    .unwrap();
    // A stop on the wrong side of the mark would trigger at once.
    let r = c
        .place_algo(&close_all_stop(
            OrderSide::Sell,
            dec!(87500),
            "albSL-0a1b2c3d4e5f-x5",
        ))
        .await;
    assert_eq!(code(r), -2021);
    c.place_algo(&close_all_stop(
        OrderSide::Sell,
        dec!(86000),
        "albSL-0a1b2c3d4e5f-x5",
    ))
    .await
    .unwrap();
    let dup = c
        .place_algo(&close_all_stop(
            OrderSide::Sell,
            dec!(85000),
            "albSL-0a1b2c3d4e5f-x5",
        ))
        .await;
    assert_eq!(code(dup), -4116);
    assert_eq!(
        s.count("POST", "/fapi/v1/order"),
        5,
        "no rejection was resent"
    );

    // Bad credentials are fatal, never retried.
    let wrong = client_with(&s, "wrong-secret", Duration::from_secs(2));
    assert!(matches!(
        wrong.account().await,
        Err(ExchangeError::Fatal(_))
    ));
}

/// A submission whose candle claim's lease leaves no time to send sends nothing (the first
/// send) and says so; another run may then trust a lookup that finds no order.
#[tokio::test]
async fn a_submission_past_its_send_window_sends_nothing() {
    let s = server().await;
    let c = client(&s);
    let policy = albra_core::orders::SubmitPolicy {
        send_until: Some(Instant::now()),
        ..albra_core::orders::SubmitPolicy::instant()
    };
    let order = market(OrderSide::Buy, dec!(0.010), false, "albEN-0a1b2c3d4e5f-w1");
    let e = albra_core::orders::submit_market(&c, &order, policy)
        .await
        .unwrap_err();
    assert!(
        matches!(e, ExchangeError::SendWindowClosed { ref client_id } if client_id == "albEN-0a1b2c3d4e5f-w1")
            && e.to_string().ends_with("nothing sent"),
        "{e}"
    );
    assert_eq!(s.count("POST", "/fapi/v1/order"), 0);
    // With time left, the same order goes through.
    let policy = albra_core::orders::SubmitPolicy {
        send_until: Some(Instant::now() + Duration::from_secs(30)),
        ..policy
    };
    let o = albra_core::orders::submit_market(&c, &order, policy)
        .await
        .unwrap();
    assert_eq!(o.executed_qty.get(), dec!(0.010));
}

/// A cancel goes through the same exactly-once loop: a cancel applied whose answer was lost
/// (503, outcome unknown) is looked up, found no longer open, and not sent again; one whose
/// answer was lost before it applied is sent again.
#[tokio::test]
async fn a_cancel_with_an_unknown_outcome_is_looked_up_before_it_is_sent_again() {
    let s = server().await;
    let c = client(&s);
    c.place_market(&market(
        OrderSide::Buy,
        dec!(0.010),
        false,
        "albEN-0a1b2c3d4e5f-c1",
    ))
    .await
    .unwrap();
    for id in ["albSL-0a1b2c3d4e5f-c1", "albSL-0a1b2c3d4e5f-c2"] {
        c.place_algo(&close_all_stop(OrderSide::Sell, dec!(85500), id))
            .await
            .unwrap();
    }
    let policy = albra_core::orders::SubmitPolicy::instant();
    s.inject(Fault::Unknown503 {
        path: "/fapi/v1/algoOrder".into(),
        apply: true,
    });
    albra_core::orders::cancel_algo(&c, &btc(), "albSL-0a1b2c3d4e5f-c1", policy)
        .await
        .unwrap();
    assert_eq!(
        s.count("DELETE", "/fapi/v1/algoOrder"),
        1,
        "applied: not sent again"
    );
    s.inject(Fault::Unknown503 {
        path: "/fapi/v1/algoOrder".into(),
        apply: false,
    });
    albra_core::orders::cancel_algo(&c, &btc(), "albSL-0a1b2c3d4e5f-c2", policy)
        .await
        .unwrap();
    assert_eq!(
        s.count("DELETE", "/fapi/v1/algoOrder"),
        3,
        "not applied: sent again"
    );
    assert!(c.open_algo_orders(None).await.unwrap().is_empty());
}
