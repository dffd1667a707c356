//! The real `evaluator` and `position-sync` binaries, run as processes against the Binance-speaking
//! loopback server (and moto for DynamoDB): one entry and one stop per signal, repeated runs place
//! nothing, a crash between order and state write is healed, unknown outcomes are looked up, the
//! open candle is never evaluated, stops filled or cancelled on the exchange are handled.

use albra_core::domain::{AccountId, PositionStatus, Side, Timeframe};
use albra_core::state::StateRepo;
use albra_tests::binance_server::Fault;
use albra_tests::harness::{self, run, TestConfig, MAIN_KEY};
use rust_decimal::prelude::Signed;
use rust_decimal::Decimal;
use std::sync::Arc;
use std::time::Duration;

type Env = harness::JobEnv;

/// A server at a few seconds after the first EMA_CROSS signal candle closes.
async fn env_at_signal(cfg: TestConfig) -> Env {
    Env::at_signal(&cfg, 0).await
}

fn expected_amount_sign(side: Side) -> Decimal {
    side.sign()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_entry_and_one_stop_per_signal_and_a_rerun_places_nothing() {
    let env = env_at_signal(TestConfig::default()).await;
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("entered"), "{r}");
    assert_eq!(env.orders_posted(), 1, "exactly one entry order");
    let pos = env.server.position(MAIN_KEY, "BTCUSDT");
    assert_eq!(
        pos.signum(),
        expected_amount_sign(env.signal.side),
        "position side"
    );
    let algos = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(algos.len(), 1, "exactly one protective stop: {algos:?}");
    assert_eq!(algos[0]["orderType"], "STOP_MARKET", "{algos:?}");
    assert_eq!(algos[0]["closePosition"], true, "{algos:?}");
    // The entry notification names the conditions that fired.
    assert!(r.stdout.contains("cross_"), "{r}");
    // The history is asked for as exactly 1000 closed candles ending before the forming one:
    // weight 5 (1001 rows would cost 10).
    let klines: Vec<_> = env
        .server
        .requests()
        .into_iter()
        .filter(|q| q.path == "/fapi/v1/klines")
        .collect();
    assert!(!klines.is_empty());
    let forming = env.signal.open_time + 900_000;
    for k in &klines {
        assert_eq!(k.params["limit"], "1000", "{k:?}");
        assert_eq!(k.params["endTime"], (forming - 1).to_string(), "{k:?}");
    }

    let p = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].value.status, PositionStatus::Active);
    assert_eq!(p[0].value.qty.get(), pos.abs());
    assert!(p[0]
        .value
        .stop_client_id
        .as_deref()
        .unwrap()
        .starts_with("albSL-"));

    // The same candle again: the run marker says it was done; nothing is sent.
    let again = env.evaluator().await;
    assert!(again.ok(), "{again}");
    assert!(
        again.stdout.contains("already evaluated"),
        "first:\n{r}\nagain:\n{again}"
    );
    assert_eq!(env.orders_posted(), 1);
    assert_eq!(env.server.count("POST", "/fapi/v1/algoOrder"), 1);

    // A sync now finds everything in order: no manual position, no new stop.
    let before = env.server.requests().len();
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert_eq!(env.server.count("POST", "/fapi/v1/algoOrder"), 1, "{s}");
    assert!(!s.stdout.contains("MANUAL"), "{s}");
    // Its open-algo read is asked for the symbol it holds (weight 1), not the account (40).
    let lists: Vec<_> = env.server.requests()[before..]
        .iter()
        .filter(|q| q.path == "/fapi/v1/openAlgoOrders")
        .cloned()
        .collect();
    assert_eq!(lists.len(), 1, "{lists:?}");
    assert_eq!(
        lists[0].params.get("symbol").map(String::as_str),
        Some("BTCUSDT")
    );
}

/// A reversal (the next EMA_CROSS signal) closes the position, cancels its stop and opens the
/// other way, without looking up a take-profit that was never placed (EMA_CROSS sets none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_cancels_the_stop_and_looks_up_no_take_profit_never_placed() {
    let env = env_at_signal(TestConfig::default()).await;
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    let candles = harness::btc_15m();
    let next = harness::signals(&candles, 1000, env.signal.index + 1, 1)[0];
    assert_ne!(next.side, env.signal.side, "EMA_CROSS signals alternate");
    env.server.set_time(next.eval_time());
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert_eq!(env.orders_posted(), 3, "entry, exit, entry: {r}");
    assert_eq!(
        env.server.position(MAIN_KEY, "BTCUSDT").signum(),
        expected_amount_sign(next.side)
    );
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 1, "only the new position's stop: {open:?}");
    let tp_lookups = env
        .server
        .requests()
        .into_iter()
        .filter(|q| q.path == "/fapi/v1/algoOrder" && q.method == "GET")
        .filter(|q| {
            q.params
                .get("clientAlgoId")
                .is_some_and(|id| id.starts_with("albTP"))
        })
        .count();
    assert_eq!(tp_lookups, 0, "no take-profit was ever placed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_candle_is_never_evaluated() {
    let env = env_at_signal(TestConfig::default()).await;
    // Halfway through the signal candle: the server's newest kline row (the still-open candle)
    // already shows the cross, but it must not be evaluated.
    env.server
        .set_time(env.signal.open_time + Timeframe::M15.millis() / 2);
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert_eq!(
        env.orders_posted(),
        0,
        "the open candle was evaluated:\n{r}"
    );
    assert!(r.stdout.contains("hold"), "{r}");
    // Once it has closed it is evaluated.
    env.server.set_time(env.signal.eval_time());
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert_eq!(env.orders_posted(), 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_after_the_order_is_healed_by_the_next_sync() {
    let env = env_at_signal(TestConfig::default()).await;
    env.server.inject(Fault::HoldAfterApply {
        path: "/fapi/v1/order".into(),
    });
    let mut child = env.spawn_evaluator();
    assert!(
        env.server.wait_for_order(Duration::from_secs(20)).await,
        "the order never arrived"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    // The order is on the exchange, unprotected; state only knows the intent.
    assert_ne!(env.server.position(MAIN_KEY, "BTCUSDT"), Decimal::ZERO);
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
    let before = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].value.status, PositionStatus::Pending);

    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("confirmed on the exchange"), "{s}");
    assert_eq!(env.orders_posted(), 1, "no second entry");
    assert_eq!(
        env.server.open_algo_orders(MAIN_KEY).len(),
        1,
        "stop placed by the sync"
    );
    let after = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(
        after.len(),
        1,
        "adopted, not a second (manual) position: {after:?}"
    );
    assert_eq!(after[0].value.status, PositionStatus::Active);
    assert!(!after[0].value.is_manual);
    // A second sync changes nothing.
    let s2 = env.sync().await;
    assert!(s2.ok(), "{s2}");
    assert_eq!(env.server.count("POST", "/fapi/v1/algoOrder"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_position_carrying_our_entry_id_is_adopted_not_manual() {
    let env = env_at_signal(TestConfig::default()).await;
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    // Lose the state entirely (as if the write never happened and the intent was lost) and the stop.
    std::fs::remove_dir_all(env.dir().join("state")).unwrap();
    let stop = env.server.open_algo_orders(MAIN_KEY)[0]["clientAlgoId"]
        .as_str()
        .unwrap()
        .to_string();
    env.server.cancel_algo_by_hand(MAIN_KEY, &stop);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("carries our entry id"), "{s}");
    let after = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!after[0].value.is_manual);
    assert_eq!(
        env.server.open_algo_orders(MAIN_KEY).len(),
        1,
        "stop re-placed"
    );
    assert_eq!(env.orders_posted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_on_the_order_is_resolved_by_looking_it_up() {
    let env = env_at_signal(TestConfig {
        timeout_ms: 1000,
        ..TestConfig::default()
    })
    .await;
    env.server.inject(Fault::Timeout {
        path: "/fapi/v1/order".into(),
        apply: true,
    });
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert_eq!(env.orders_posted(), 1, "never resent blindly:\n{r}");
    assert!(env.server.count("GET", "/fapi/v1/order") >= 1, "looked up");
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 1);
    let p = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(p[0].value.status, PositionStatus::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_unknown_outcome_is_looked_up_then_sent_again_with_the_same_id() {
    // Applied: found by the lookup, not sent twice.
    let env = env_at_signal(TestConfig::default()).await;
    env.server.inject(Fault::Unknown503 {
        path: "/fapi/v1/order".into(),
        apply: true,
    });
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert_eq!(env.orders_posted(), 1, "{r}");
    assert!(env.server.count("GET", "/fapi/v1/order") >= 1);

    // Not applied: the lookups find nothing, then the same client id is sent once more.
    let env = env_at_signal(TestConfig::default()).await;
    env.server.inject(Fault::Unknown503 {
        path: "/fapi/v1/order".into(),
        apply: false,
    });
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    let posts: Vec<_> = env
        .server
        .requests()
        .into_iter()
        .filter(|q| q.method == "POST" && q.path == "/fapi/v1/order")
        .collect();
    assert_eq!(posts.len(), 2, "{r}");
    assert_eq!(
        posts[0].params["newClientOrderId"],
        posts[1].params["newClientOrderId"]
    );
    assert!(
        env.server.count("GET", "/fapi/v1/order") >= 1,
        "looked up before resending"
    );
    assert_eq!(
        env.server.orders(MAIN_KEY).len(),
        1,
        "one order on the exchange"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_filled_between_syncs_is_recorded_with_realised_pnl() {
    let env = env_at_signal(TestConfig::default()).await;
    assert!(env.evaluator().await.ok());
    let algo = env.server.open_algo_orders(MAIN_KEY)[0].clone();
    let trigger: Decimal = algo["triggerPrice"].as_str().unwrap().parse().unwrap();
    assert_eq!(env.server.trigger_algo_orders("BTCUSDT", trigger), 1);
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT"), Decimal::ZERO);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("CLOSED by the exchange (stop)"), "{s}");
    let repo = env.repo();
    let main = AccountId::new("main");
    assert!(repo.positions(&main).await.unwrap().is_empty());
    let trades = repo.trades(&main).await.unwrap();
    assert_eq!(trades.len(), 1);
    let t = &trades[0];
    assert_eq!(t.reason, "stop");
    assert_eq!(t.exit_price.get(), trigger);
    // Realised PnL and fees come from the exchange's userTrades.
    let fills = env.server.user_trades(MAIN_KEY);
    let realized: Decimal = fills
        .iter()
        .map(|f| {
            f["realizedPnl"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    let fees: Decimal = fills
        .iter()
        .map(|f| {
            f["commission"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    assert_eq!(t.fees.get(), fees);
    assert_eq!(t.pnl.get(), realized - fees);
    assert!(t.pnl.get() < Decimal::ZERO, "a 3 % stop loses money: {t:?}");
    // Recording is idempotent: another sync records nothing new.
    assert!(env.sync().await.ok());
    assert_eq!(repo.trades(&main).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_position_is_tracked_and_never_touched() {
    let env = env_at_signal(TestConfig::default()).await;
    env.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", "BUY", Decimal::new(5, 3));
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(s.stdout.contains("MANUAL position found"), "{s}");
    let p = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(p.len(), 1);
    assert!(p[0].value.is_manual);
    assert_eq!(p[0].value.qty.get(), Decimal::new(5, 3));
    assert_eq!(
        env.orders_posted(),
        0,
        "sync never trades a manual position"
    );
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
    // The job left its run for job health (the query layer's heartbeat).
    let run = env
        .repo()
        .job_run(&AccountId::new("main"), albra_core::jobs::SYNC_JOB)
        .await
        .unwrap()
        .expect("the sync job records its run");
    assert!(run.ok, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_cancelled_by_hand_is_replaced_and_alerted() {
    let env = env_at_signal(TestConfig::default()).await;
    assert!(env.evaluator().await.ok());
    let id = env.server.open_algo_orders(MAIN_KEY)[0]["clientAlgoId"]
        .as_str()
        .unwrap()
        .to_string();
    env.server.cancel_algo_by_hand(MAIN_KEY, &id);
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert!(
        s.stdout.contains("protective stop was missing (CANCELED)"),
        "{s}"
    );
    let open = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(open.len(), 1);
    assert_ne!(
        open[0]["clientAlgoId"].as_str().unwrap(),
        id,
        "a new client algo id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_exits_2_naming_the_key() {
    let env = env_at_signal(TestConfig::default()).await;
    let path = env.dir().join("albra.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("leverage = 3", "leverage = \"x\"");
    std::fs::write(&path, text).unwrap();
    let r = env.evaluator().await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("strategies[0].leverage"), "{r}");
    assert_eq!(env.server.requests().len(), 0, "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluator_runs_on_dynamodb_state() {
    let moto = albra_tests::moto::MotoServer::start();
    let store = albra_adapters::store::dynamo::DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&moto.sdk_config().await),
        "albra-e2e",
    );
    store.create_table_if_missing().await.unwrap();
    let env = env_at_signal(TestConfig::default()).await;
    let aws: Vec<(&str, String)> = moto.env_vars();
    let args = [
        "--timeframe",
        "15m",
        "--config",
        "albra.toml",
        "--state",
        "dynamodb:albra-e2e",
    ];
    let r = run("evaluator", env.dir(), &env.server.url, &args, &aws).await;
    assert!(r.ok(), "{r}");
    assert_eq!(env.orders_posted(), 1);
    let again = run("evaluator", env.dir(), &env.server.url, &args, &aws).await;
    assert!(again.stdout.contains("already evaluated"), "{again}");
    assert_eq!(env.orders_posted(), 1);
    let repo = StateRepo::new(Arc::new(store));
    let p = repo.positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].value.status, PositionStatus::Active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn albra_run_paper_starts_the_scheduler_without_keys() {
    use std::io::{BufRead, BufReader};
    let env = env_at_signal(TestConfig::default()).await;
    let mut child = harness::command("albra", env.dir(), &env.server.url, &[])
        .env_remove("BINANCE_API_KEY")
        .env_remove("BINANCE_SECRET_KEY")
        .args([
            "run",
            "--paper",
            "--config",
            "albra.toml",
            "--state",
            "state",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .expect("albra run printed nothing within 20 s")
        .unwrap()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(line.contains("albra run (paper) started"), "{line}");
    assert!(line.contains("evaluating 15m"), "{line}");
    // Paper mode never sends a signed request to the exchange.
    assert!(env.server.requests().iter().all(|r| r.api_key.is_none()));
}
