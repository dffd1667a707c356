//! Safe under fire, with the real `evaluator` and `position-sync` processes against the
//! Binance-speaking loopback server: a process killed after claiming its candle is healed by a
//! rerun once the claim's lease has passed, and so is one killed after its PENDING write whose
//! entry never reached the exchange (looked up first); a transient failure is retried while the candle is
//! fresh; a rate-limit storm on the stop is waited out, and a stop that still cannot be placed
//! fails the job and is placed first by the next sync; no exchange clock, no evaluation.

use albra_core::domain::{AccountId, PositionStatus};
use albra_tests::binance_server::{Fault, FaultKind, FaultRule};
use albra_tests::harness::{self, TestConfig, MAIN_KEY};
use std::time::{Duration, Instant};

type Env = harness::JobEnv;

async fn env_at_signal() -> Env {
    Env::at_signal(&TestConfig::default(), 0).await
}

/// `albra positions` over the scenario's state.
async fn positions(env: &Env) -> harness::Run {
    harness::run(
        "albra",
        env.dir(),
        &env.server.url,
        &["positions", "--config", "albra.toml", "--state", "state"],
        &[],
    )
    .await
}

fn rate_limit(path: &str, retry_after_s: u64) -> Fault {
    Fault::RateLimit429 {
        path: path.into(),
        retry_after_s,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_exchange_clock_means_no_evaluation_and_no_hang() {
    let env = env_at_signal().await;
    // Retry-After beyond the client's longest wait: every clock read fails at once.
    for _ in 0..6 {
        env.server.inject(rate_limit("/fapi/v1/time", 60));
    }
    let started = Instant::now();
    let r = env.evaluator().await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("exchange clock unavailable"), "{r}");
    // An error, never a heartbeat: no metric line says the job ran.
    assert!(!r.stdout.contains("Heartbeat"), "{r}");
    assert_eq!(env.orders_posted(), 0, "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_account_read_is_retried_while_the_candle_is_fresh() {
    let env = env_at_signal().await;
    // 12 s: longer than the client waits by itself, so the evaluation fails and gives its candle
    // back; the job evaluates it again after the Retry-After, not sooner.
    env.server.inject(rate_limit("/fapi/v3/account", 12));
    let started = Instant::now();
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert!(r.stderr.contains("retrying in 12 s"), "{r}");
    assert!(r.stdout.contains("entered"), "{r}");
    assert!(started.elapsed() >= Duration::from_secs(12), "{r}");
    assert_eq!(env.orders_posted(), 1, "{r}");
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 1, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_its_claim_is_healed_by_a_rerun_after_the_lease() {
    let env = env_at_signal().await;
    // The candles never come back: the process is killed while it waits for them, after it
    // claimed the candle and before it sent anything.
    env.server.inject(Fault::HoldAfterApply {
        path: "/fapi/v1/klines".into(),
    });
    let mut child = env.spawn_evaluator();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.server.count("GET", "/fapi/v1/klines") == 0 {
        assert!(Instant::now() < deadline, "the klines request never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Within the lease the rerun says so and fails (a scheduler retry comes back later).
    let r = env.evaluator().await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("claimed by another run until"), "{r}");
    assert_eq!(env.orders_posted(), 0);

    // After the lease (60 s) the candle is evaluated, once.
    env.server.set_time(env.signal.eval_time() + 61_000);
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("entered"), "{r}");
    assert_eq!(env.orders_posted(), 1);
    let again = env.evaluator().await;
    assert!(
        again.ok() && again.stdout.contains("already evaluated"),
        "{again}"
    );
    assert_eq!(env.orders_posted(), 1);
}

/// The campaign's finding: killed after its PENDING write and the move to Acting, with the
/// entry still on its way (the server holds the request and never applies it). Within the lease
/// the rerun leaves it to the sync; after it, the rerun looks the entry up, finds nothing, takes
/// the candle back and enters once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_before_its_entry_reached_the_exchange_is_taken_back_after_the_lease() {
    let env = env_at_signal().await;
    env.server.add_rule(FaultRule::new(
        "POST",
        "/fapi/v1/order",
        FaultKind::Hold { apply: false },
    ));
    let mut child = env.spawn_evaluator();
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.orders_posted() == 0 {
        assert!(Instant::now() < deadline, "the entry request never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let pending = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].value.status, PositionStatus::Pending);

    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("another run is acting"), "{r}");
    assert_eq!(env.orders_posted(), 1, "nothing sent within the lease");

    // After the Acting lease (60 s from the move to Acting).
    env.server.set_time(env.signal.eval_time() + 62_000);
    let r = env.evaluator().await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    assert!(r.stderr.contains("took back the candle"), "{r}");
    assert_eq!(env.server.orders(MAIN_KEY).len(), 1, "one entry applied");
    let stored = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].value.status, PositionStatus::Active);
    let again = env.evaluator().await;
    assert!(
        again.ok() && again.stdout.contains("already evaluated"),
        "{again}"
    );
    assert_eq!(env.server.orders(MAIN_KEY).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_storm_on_the_stop_is_waited_out() {
    let env = env_at_signal().await;
    for _ in 0..3 {
        env.server.inject(rate_limit("/fapi/v1/algoOrder", 2));
    }
    let r = env.evaluator().await;
    assert!(r.ok(), "{r}");
    let algos = env.server.open_algo_orders(MAIN_KEY);
    assert_eq!(algos.len(), 1, "{r}\n{algos:?}");
    assert_eq!(algos[0]["orderType"], "STOP_MARKET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unplaced_stop_fails_the_job_and_the_next_sync_places_it_first() {
    let env = env_at_signal().await;
    // Retry-After 60 s: more than a stop may wait (35 s), so it is not placed in this run.
    env.server.inject(rate_limit("/fapi/v1/algoOrder", 60));
    let r = env.evaluator().await;
    assert_eq!(
        r.code,
        Some(1),
        "an unprotected position must fail the job: {r}"
    );
    assert!(r.stderr.contains("UNPROTECTED"), "{r}");
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
    let p = env.repo().positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].value.status, PositionStatus::Active);
    assert!(p[0].value.stop_client_id.is_none());
    let shown = positions(&env).await;
    assert!(
        shown.ok() && shown.stdout.contains("ACTIVE UNPROTECTED"),
        "{shown}"
    );

    // The sync places it, even though its account read is rate-limited this time.
    env.server.inject(rate_limit("/fapi/v3/account", 60));
    let s = env.sync().await;
    assert_eq!(s.code, Some(1), "the account read failed: {s}");
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 1, "{s}");
    let s = env.sync().await;
    assert!(s.ok(), "{s}");
    assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 1, "{s}");
    let shown = positions(&env).await;
    assert!(
        shown.ok() && !shown.stdout.contains("UNPROTECTED"),
        "{shown}"
    );
}
