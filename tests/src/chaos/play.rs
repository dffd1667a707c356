//! Playing one scenario: its own loopback server (BTCUSDT, and ETHUSDT for hand-made positions on
//! a symbol no strategy trades) at a few seconds after a signal candle closed, its own temp dir
//! with config and state, and the jobs in the order cron would run them: hand-made positions
//! first, the faulted evaluator (killed at its boundary, doubled, or under a clock jump), then
//! the retry of the evaluator a minute after it failed, while the candle is fresh (faults off,
//! past the claim lease), disruptions after the entry (hand-made trades, hand-deleted stops), a
//! faulted sync, and one clean sync. What the checker needs is kept in [`Played`].

use super::jobs::{self, Job, JobRun};
use super::scenario::{hold_rule, Boundary, Kind, Manual, Scenario};
use crate::binance_server::{BinanceTestServer, FaultKind, FaultRule, ServerOptions, TestAccount};
use crate::harness::{self, Signal, TestConfig, MAIN_KEY, MAIN_SECRET};
use albra_core::domain::{Candle, Price, Side, Timeframe};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every scenario shares: the sample's candles and its first EMA_CROSS signals.
pub struct Fixture {
    pub candles: Arc<Vec<Candle>>,
    pub signals: Vec<Signal>,
}

impl Fixture {
    pub fn load() -> Fixture {
        let candles = harness::btc_15m();
        let cfg = TestConfig::default();
        let signals = harness::signals(&candles, cfg.history as usize, 0, super::scenario::SIGNALS);
        Fixture {
            candles: Arc::new(candles),
            signals,
        }
    }
}

/// Disruptions other than server faults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Disruptions {
    pub kills: u32,
    /// Kills planned whose boundary the job never reached (it failed earlier).
    pub kills_missed: u32,
    pub clock_jumps: u32,
    pub manual_orders: u32,
    pub stops_deleted: u32,
    pub stops_fired: u32,
}

/// A played scenario: the server and state it left, and every job run.
pub struct Played {
    pub scenario: Scenario,
    pub signal: Signal,
    pub server: BinanceTestServer,
    pub dir: tempfile::TempDir,
    pub runs: Vec<JobRun>,
    /// Whether the signal's entry is due (no MANUAL position against it was known).
    pub entry_expected: bool,
    pub disruptions: Disruptions,
    pub elapsed: Duration,
}

/// The other symbol: the BTCUSDT sample at 1/25 of the price.
fn eth_candles(btc: &[Candle]) -> Vec<Candle> {
    let scale = |p: Price| Price::new((p.get() / Decimal::from(25)).round_dp(2));
    btc.iter()
        .map(|c| Candle {
            open: scale(c.open),
            high: scale(c.high),
            low: scale(c.low),
            close: scale(c.close),
            ..*c
        })
        .collect()
}

async fn start_server(f: &Fixture, at: i64) -> BinanceTestServer {
    let candles = HashMap::from([
        ("BTCUSDT".to_string(), f.candles.to_vec()),
        ("ETHUSDT".to_string(), eth_candles(&f.candles)),
    ]);
    BinanceTestServer::start(ServerOptions {
        candles,
        base_tf_ms: Timeframe::M15.millis(),
        accounts: vec![TestAccount {
            api_key: MAIN_KEY.into(),
            api_secret: MAIN_SECRET.into(),
            wallet_balance: Decimal::from(10_000),
        }],
        start_time_ms: at,
    })
    .await
}

fn side_name(side: Side, same: bool) -> &'static str {
    match (side, same) {
        (Side::Long, true) | (Side::Short, false) => "BUY",
        _ => "SELL",
    }
}

/// Polls `cond` every 20 ms until it holds (true) or the job exits or 30 s pass (false).
async fn wait_for(
    r: &mut jobs::Running,
    server: &BinanceTestServer,
    cond: impl Fn(&BinanceTestServer) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if cond(server) {
            return true;
        }
        if r.exited() {
            return cond(server);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn entry_answered(s: &BinanceTestServer) -> bool {
    s.requests().iter().any(|q| {
        q.method == "POST"
            && q.path == "/fapi/v1/order"
            && q.params.get("type").map(String::as_str) == Some("MARKET")
            && q.status == Some(200)
    })
}

impl Played {
    fn run_label(&self) -> String {
        format!("scenario {}", self.scenario.index)
    }

    async fn run(&mut self, job: Job, label: &str) {
        let r = jobs::run(job, label, self.dir.path(), &self.server).await;
        self.runs.push(r);
    }

    /// Runs `job` and kills it once `cond` holds (a held request, an answered order).
    async fn kill_when(
        &mut self,
        job: Job,
        label: &str,
        cond: impl Fn(&BinanceTestServer) -> bool,
    ) {
        let mut r = jobs::spawn(job, label, self.dir.path(), &self.server);
        let run = if wait_for(&mut r, &self.server, cond).await && !r.exited() {
            self.disruptions.kills += 1;
            r.kill(&self.server).await
        } else {
            self.disruptions.kills_missed += 1;
            r.finish(&self.server).await
        };
        self.runs.push(run);
    }

    /// Places a hand-made MARKET order (as on the website).
    fn manual(&mut self, symbol: &str, side: &str, qty: Decimal) {
        self.server.manual_market_order(MAIN_KEY, symbol, side, qty);
        self.disruptions.manual_orders += 1;
    }
}

/// Plays scenario `sc` from start to the clean sync.
pub async fn play(sc: Scenario, f: &Fixture) -> Played {
    let started = Instant::now();
    let signal = f.signals[sc.signal];
    let server = start_server(f, signal.eval_time()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    harness::write_config(dir.path(), &TestConfig::default());
    let mut p = Played {
        scenario: sc,
        signal,
        server,
        dir,
        runs: Vec::new(),
        entry_expected: true,
        disruptions: Disruptions::default(),
        elapsed: Duration::ZERO,
    };
    before_entry(&mut p).await;
    faulted_evaluation(&mut p).await;
    // The retry a minute after the failed run (Lambda's async retry): faults over, the claim's
    // lease passed (an Acting lease counts from the move to Acting, so from the failed run's
    // end), the candle still the newest closed one.
    p.server.clear_rules();
    p.server.release_holds();
    let retry_at = (p.signal.eval_time() + 65_000).max(p.server.time() + 61_000);
    p.server.set_time(retry_at);
    p.run(Job::Evaluator, "rerun while fresh").await;
    if p.scenario.kind == Kind::Concurrent {
        p.run(Job::Evaluator, "the same run repeated").await;
    }
    after_entry(&mut p).await;
    faulted_sync(&mut p).await;
    p.server.clear_rules();
    p.server.release_holds();
    p.run(Job::Sync, "clean sync").await;
    p.elapsed = started.elapsed();
    trace(&p);
    p
}

/// Hand-made positions that exist before the evaluation, recorded by a clean sync (as the
/// minute's sync would have done before the candle closed).
async fn before_entry(p: &mut Played) {
    let side = p.signal.side;
    match p.scenario.kind {
        Kind::Manual(Manual::OtherSymbol) => {
            p.manual(
                "ETHUSDT",
                side_name(side, p.scenario.seed & 1 == 0),
                Decimal::new(5, 1),
            );
        }
        Kind::Manual(Manual::Before { same_side }) => {
            p.manual("BTCUSDT", side_name(side, same_side), Decimal::new(5, 3));
            p.entry_expected = same_side;
        }
        _ => return,
    }
    p.run(Job::Sync, "sync after the hand-made order").await;
}

/// The evaluator under the scenario's faults: plain, killed at a boundary, twice at once, or
/// under a clock jump.
async fn faulted_evaluation(p: &mut Played) {
    for rule in p.scenario.eval_rules.clone() {
        p.server.add_rule(rule);
    }
    match p.scenario.kind {
        Kind::Kill(Boundary::AfterFill) => {
            p.kill_when(Job::Evaluator, "killed after the fill", entry_answered)
                .await
        }
        Kind::Kill(b) if hold_rule(b).is_some() => {
            let label = format!("killed at {b:?}");
            p.kill_when(Job::Evaluator, &label, |s| s.holding() > 0)
                .await
        }
        Kind::Concurrent => {
            let a = jobs::spawn(Job::Evaluator, "concurrent A", p.dir.path(), &p.server);
            let b = jobs::spawn(Job::Evaluator, "concurrent B", p.dir.path(), &p.server);
            let (a, b) = tokio::join!(a.finish(&p.server), b.finish(&p.server));
            let (a, b) = super::check::share_faults(a, b);
            p.runs.extend([a, b]);
        }
        Kind::ClockSkew(delta) => {
            let mut r = jobs::spawn(Job::Evaluator, "clock jump", p.dir.path(), &p.server);
            if wait_for(&mut r, &p.server, |s| s.count("GET", "/fapi/v1/klines") > 0).await {
                p.server.shift_time(delta);
                p.disruptions.clock_jumps += 1;
            }
            let run = r.finish(&p.server).await;
            p.runs.push(run);
        }
        _ => p.run(Job::Evaluator, "faulted").await,
    }
}

/// Disruptions once the entry stands: hand-made trades on its symbol, hand-deleted stops,
/// stops the price fires. Before a trade or a fired stop, the minute's sync runs once, so the
/// symbol has a share book and the next sync attributes the change to its fills.
async fn after_entry(p: &mut Played) {
    if matches!(
        p.scenario.kind,
        Kind::StopFired | Kind::Manual(Manual::After { .. })
    ) {
        p.run(Job::Sync, "sync before the change").await;
    }
    match p.scenario.kind {
        Kind::Manual(Manual::After { same_side }) => {
            p.manual(
                "BTCUSDT",
                side_name(p.signal.side, same_side),
                Decimal::new(5, 3),
            );
        }
        Kind::DeletedStop | Kind::Kill(Boundary::DuringSyncReplace { .. }) => {
            for a in p.server.open_algo_orders(MAIN_KEY) {
                let id = a["clientAlgoId"].as_str().unwrap_or_default().to_string();
                p.server.cancel_algo_by_hand(MAIN_KEY, &id);
                p.disruptions.stops_deleted += 1;
            }
        }
        Kind::StopFired => {
            let fired = fire_stop(&p.server);
            p.disruptions.stops_fired += fired as u32;
        }
        _ => {}
    }
}

/// Moves the price one tick past the open stop on BTCUSDT so it fires; how many fired.
fn fire_stop(server: &BinanceTestServer) -> usize {
    let Some(stop) = server
        .open_algo_orders(MAIN_KEY)
        .into_iter()
        .find(|a| a["symbol"] == "BTCUSDT")
    else {
        return 0;
    };
    let trigger: Decimal = stop["triggerPrice"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    let tick = Decimal::new(1, 1);
    let price = if stop["side"] == "SELL" {
        trigger - tick
    } else {
        trigger + tick
    };
    server.trigger_algo_orders("BTCUSDT", price)
}

/// A sync under the scenario's sync faults, or killed while it re-places a deleted stop.
async fn faulted_sync(p: &mut Played) {
    for rule in p.scenario.sync_rules.clone() {
        p.server.add_rule(rule);
    }
    if let Kind::Kill(Boundary::DuringSyncReplace { apply }) = p.scenario.kind {
        p.server.add_rule(FaultRule::new(
            "POST",
            "/fapi/v1/algoOrder",
            FaultKind::Hold { apply },
        ));
        p.kill_when(Job::Sync, "sync killed while re-placing the stop", |s| {
            s.holding() > 0
        })
        .await;
    } else if !p.scenario.sync_rules.is_empty() {
        p.run(Job::Sync, "faulted sync").await;
    }
}

/// Debug aid: `ALBRA_CHAOS_TRACE=1` prints each scenario's runs as they finish.
fn trace(p: &Played) {
    if std::env::var_os("ALBRA_CHAOS_TRACE").is_none() {
        return;
    }
    eprintln!("=== {} {}", p.run_label(), p.scenario.describe());
    for r in &p.runs {
        eprintln!(
            "--- {:?} {} exit {:?} hung {} killed {} {:?} faults {:?}\n{}\n{}",
            r.job,
            r.label,
            r.code,
            r.hung,
            r.killed,
            r.elapsed,
            r.faults
                .iter()
                .map(|f| format!("{} {} {}", f.kind.label(), f.method, f.path))
                .collect::<Vec<_>>(),
            r.stdout.trim_end(),
            r.stderr.trim_end()
        );
    }
}
