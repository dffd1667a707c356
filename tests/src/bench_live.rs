//! What `make bench-live` measures (the `albra-bench-live` binary prints it): the real `evaluator`
//! and `position-sync` processes against the loopback Binance server with a fixed latency added to
//! every request, for a given number of symbols and accounts. One scenario is a trading close (the
//! first EMA_CROSS signal of `data/BTCUSDT-perp-15m.csv`: every account enters every symbol), the
//! quiet close after it (positions held, nothing to do) and a quiet `position-sync` with the
//! positions open, each run in a fresh server and state directory.
//!
//! Symbols beyond BTCUSDT (ETHUSDT, SOLUSDT, BNBUSDT) reuse the BTCUSDT candles under their own
//! names, so every symbol signals on the same candle. Measured, never asserted here: the figures
//! come from the server's request journal (arrival and answer times on the server clock, the
//! weight it counted) and the wall time of each process.

use crate::binance_server::{BinanceTestServer, LoggedRequest, ServerOptions, TestAccount};
use crate::harness::{self, Run, MAIN_KEY, MAIN_SECRET};
use albra_core::domain::Timeframe;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

/// The symbols a case draws from, in order; all but the first carry BTCUSDT's candles.
pub const SYMBOLS: [&str; 4] = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"];

/// The accounts a case draws from, in order.
pub const ACCOUNTS: [BenchAccount; 3] = [
    BenchAccount {
        id: "main",
        key_source: "env",
        key_env: "BINANCE_API_KEY",
        secret_env: "BINANCE_SECRET_KEY",
        api_key: MAIN_KEY,
        api_secret: MAIN_SECRET,
    },
    BenchAccount {
        id: "sub1",
        key_source: "env:SUB1",
        key_env: "SUB1_API_KEY",
        secret_env: "SUB1_API_SECRET",
        api_key: "bench-sub1-api-key-0123456789",
        api_secret: "bench-sub1-secret-abcdefghijklmn",
    },
    BenchAccount {
        id: "sub2",
        key_source: "env:SUB2",
        key_env: "SUB2_API_KEY",
        secret_env: "SUB2_API_SECRET",
        api_key: "bench-sub2-api-key-0123456789",
        api_secret: "bench-sub2-secret-abcdefghijklmn",
    },
];

/// One account of the config and the server, with the environment its keys are read from.
#[derive(Clone, Copy, Debug)]
pub struct BenchAccount {
    pub id: &'static str,
    pub key_source: &'static str,
    pub key_env: &'static str,
    pub secret_env: &'static str,
    pub api_key: &'static str,
    pub api_secret: &'static str,
}

/// How many symbols and accounts a case trades.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub symbols: usize,
    pub accounts: usize,
}

/// The three jobs of one scenario, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Job {
    TradingClose,
    QuietClose,
    QuietSync,
}

impl Job {
    pub const ALL: [Job; 3] = [Job::TradingClose, Job::QuietClose, Job::QuietSync];

    pub fn label(self) -> &'static str {
        match self {
            Job::TradingClose => "evaluator, trading close",
            Job::QuietClose => "evaluator, quiet close",
            Job::QuietSync => "position-sync, quiet",
        }
    }
}

/// What one job cost, read from the server's journal of its requests.
#[derive(Clone, Debug)]
pub struct JobFigures {
    pub job: Job,
    /// The process from spawn to exit.
    pub wall: Duration,
    pub requests: usize,
    /// Sum of the documented weights the server counted.
    pub weight: u64,
    /// Weight per account id; requests sent without an API key under `unsigned`.
    pub weight_by_account: BTreeMap<String, u64>,
    /// `POST /fapi/v1/order` and `POST /fapi/v1/algoOrder` requests.
    pub orders: usize,
    pub algo_orders: usize,
    /// Sequential round trips before the first entry order and before the first stop arrived.
    pub to_entry: Option<RoundTrips>,
    pub to_stop: Option<RoundTrips>,
    /// Sequential round trips before the last stop arrived (the last symbol and account done).
    pub to_last_stop: Option<RoundTrips>,
    /// The job's requests as the server journaled them, oldest first.
    pub log: Vec<LoggedRequest>,
}

/// Sequential round trips before an event, two ways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundTrips {
    /// (event arrival − first request arrival) / added latency, rounded; `None` without latency.
    pub by_time: Option<u64>,
    /// The longest chain of requests each sent after the one before it was answered, among those
    /// answered before the event arrived: the round trips the event waited for, whatever the
    /// processing time between them.
    pub by_chain: u64,
}

/// Runs the three jobs of one scenario against a fresh server with `latency` added per request.
/// Fails with the process output when a job fails or the trading close does not enter.
pub async fn run_case(case: Case, latency: Duration) -> Result<Vec<JobFigures>, String> {
    run_case_limited(case, latency, None).await
}

/// [`run_case`] with `risk.max_positions_per_account` set to `max_positions` when given (room
/// for every symbol otherwise): the trading close must then enter that many symbols per account.
pub async fn run_case_limited(
    case: Case,
    latency: Duration,
    max_positions: Option<usize>,
) -> Result<Vec<JobFigures>, String> {
    if !(1..=SYMBOLS.len()).contains(&case.symbols)
        || !(1..=ACCOUNTS.len()).contains(&case.accounts)
    {
        return Err(format!(
            "a case has 1–{} symbols and 1–{} accounts, not {case:?}",
            SYMBOLS.len(),
            ACCOUNTS.len()
        ));
    }
    let candles = harness::btc_15m();
    let history = 1000;
    let signal = harness::signals(&candles, history, 0, 1)
        .first()
        .copied()
        .ok_or("no EMA_CROSS signal in data/BTCUSDT-perp-15m.csv")?;
    let next = harness::signals(&candles, history, signal.index + 1, 1);
    if next.first().is_some_and(|n| n.index == signal.index + 1) {
        return Err("the candle after the first signal signals too: no quiet close".into());
    }
    let symbols = &SYMBOLS[..case.symbols];
    let accounts = &ACCOUNTS[..case.accounts];
    let server = BinanceTestServer::start(ServerOptions {
        candles: symbols
            .iter()
            .map(|s| (s.to_string(), candles.clone()))
            .collect::<HashMap<_, _>>(),
        base_tf_ms: Timeframe::M15.millis(),
        accounts: accounts
            .iter()
            .map(|a| TestAccount {
                api_key: a.api_key.into(),
                api_secret: a.api_secret.into(),
                wallet_balance: Decimal::from(10_000),
            })
            .collect(),
        start_time_ms: signal.eval_time(),
    })
    .await;
    server.set_latency(latency);
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let positions = max_positions.unwrap_or(symbols.len().max(3));
    write_config(dir.path(), symbols, accounts, history, positions)?;
    let env: Vec<(&str, String)> = accounts
        .iter()
        .flat_map(|a| {
            [
                (a.key_env, a.api_key.to_string()),
                (a.secret_env, a.api_secret.to_string()),
            ]
        })
        .collect();
    let state = ["--config", "albra.toml", "--state", "state"];
    let evaluator: Vec<&str> = ["--timeframe", "15m"].into_iter().chain(state).collect();
    let mut out = Vec::new();
    for job in Job::ALL {
        let (bin, args) = match job {
            Job::TradingClose => ("evaluator", &evaluator[..]),
            Job::QuietClose => {
                server.set_time(signal.eval_time() + Timeframe::M15.millis());
                ("evaluator", &evaluator[..])
            }
            Job::QuietSync => ("position-sync", &state[..]),
        };
        let before = server.requests().len();
        let t = Instant::now();
        let run = harness::run(bin, dir.path(), &server.url, args, &env).await;
        let wall = t.elapsed();
        if !run.ok() {
            return Err(format!("{} failed:\n{run}", job.label()));
        }
        let log = server.requests().split_off(before);
        let figures = figures(job, wall, &log, accounts, latency);
        check(
            job,
            &figures,
            case.symbols.min(positions) * case.accounts,
            &run,
        )?;
        out.push(figures);
    }
    Ok(out)
}

/// The trading close must send `entries` entries (every symbol on every account, unless the
/// positions are limited) with a stop each; the quiet jobs must send no order.
fn check(job: Job, f: &JobFigures, entries: usize, run: &Run) -> Result<(), String> {
    let ok = match job {
        Job::TradingClose => f.orders == entries && f.algo_orders >= entries,
        Job::QuietClose | Job::QuietSync => f.orders == 0 && f.algo_orders == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} sent {} orders and {} conditional orders ({entries} entries expected on the \
             trading close, none after):\n{run}",
            job.label(),
            f.orders,
            f.algo_orders
        ))
    }
}

/// The config: EMA_CROSS 50/200 on 15m for `symbols`, on each of `accounts`, at most `positions`
/// positions per account.
fn write_config(
    dir: &Path,
    symbols: &[&str],
    accounts: &[BenchAccount],
    history: usize,
    positions: usize,
) -> Result<(), String> {
    let list = symbols
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        r#"
[binance]
recv_window_ms = 5000
timeout_ms = 5000

[jobs]
close_delay_secs = 3
kline_wait_secs = 2
history = {history}
pending_timeout_secs = 120

[notifier]
console = true
telegram = false

[risk]
max_positions_per_account = {positions}

[[strategies]]
name = "EMA_CROSS"
timeframe = "15m"
symbols = [{list}]
leverage = 3
size_pct = 0.1
[strategies.params]
fast = 50
slow = 200
stop_loss_pct = 0.03
"#,
    );
    for a in accounts {
        text.push_str(&format!(
            "\n[[accounts]]\nid = \"{}\"\nkey_source = \"{}\"\nstrategies = [\"EMA_CROSS\"]\n",
            a.id, a.key_source
        ));
    }
    std::fs::write(dir.join("albra.toml"), text).map_err(|e| format!("write config: {e}"))
}

/// The figures of one job from its slice of the journal.
pub fn figures(
    job: Job,
    wall: Duration,
    log: &[LoggedRequest],
    accounts: &[BenchAccount],
    latency: Duration,
) -> JobFigures {
    let mut weight_by_account = BTreeMap::new();
    for r in log {
        let who = r
            .api_key
            .as_deref()
            .map(|k| {
                accounts
                    .iter()
                    .find(|a| a.api_key == k)
                    .map_or("unknown key", |a| a.id)
            })
            .unwrap_or("unsigned");
        *weight_by_account.entry(who.to_string()).or_insert(0) += r.weight;
    }
    let is = |r: &LoggedRequest, path: &str| r.method == "POST" && r.path == path;
    let entry = log.iter().position(|r| is(r, "/fapi/v1/order"));
    let is_stop = |r: &LoggedRequest| {
        is(r, "/fapi/v1/algoOrder") && r.params.get("type").is_some_and(|t| t == "STOP_MARKET")
    };
    let stop = log.iter().position(is_stop);
    let last_stop = log.iter().rposition(is_stop);
    JobFigures {
        job,
        wall,
        requests: log.len(),
        weight: log.iter().map(|r| r.weight).sum(),
        weight_by_account,
        orders: log.iter().filter(|r| is(r, "/fapi/v1/order")).count(),
        algo_orders: log.iter().filter(|r| is(r, "/fapi/v1/algoOrder")).count(),
        to_entry: entry.map(|i| round_trips(log, i, latency)),
        to_stop: stop.map(|i| round_trips(log, i, latency)),
        to_last_stop: last_stop.map(|i| round_trips(log, i, latency)),
        log: log.to_vec(),
    }
}

/// Sequential round trips before `log[event]` arrived (see [`RoundTrips`]).
pub fn round_trips(log: &[LoggedRequest], event: usize, latency: Duration) -> RoundTrips {
    let first = log.iter().map(|r| r.time).min().unwrap_or(log[event].time);
    let ms = latency.as_secs_f64() * 1000.0;
    let by_time = (ms > 0.0).then(|| ((log[event].time - first) as f64 / ms).round() as u64);
    RoundTrips {
        by_time,
        by_chain: chain_depths(log)[event] - 1,
    }
}

/// For each request, the longest chain of requests ending with it in which each was sent after
/// the one before it was answered (1: it waited for none).
pub fn chain_depths(log: &[LoggedRequest]) -> Vec<u64> {
    let mut depth = vec![0u64; log.len()];
    let mut order: Vec<usize> = (0..log.len()).collect();
    order.sort_by_key(|&i| log[i].time);
    let before = |i: usize, at: i64, depth: &[u64]| {
        (0..log.len())
            .filter(|&q| q != i && log[q].answered.is_some_and(|a| a <= at))
            .map(|q| depth[q])
            .max()
            .unwrap_or(0)
    };
    for &i in &order {
        depth[i] = 1 + before(i, log[i].time, &depth);
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, time: i64, answered: i64) -> LoggedRequest {
        LoggedRequest {
            method: method.into(),
            path: path.into(),
            params: BTreeMap::new(),
            api_key: None,
            time,
            weight: 1,
            answered: Some(answered),
            status: Some(200),
            fault: None,
        }
    }

    #[test]
    fn round_trips_count_the_chain_of_waits_and_the_time_in_latencies() {
        // time, then two reads side by side, then the order: two round trips before it.
        let log = [
            req("GET", "/fapi/v1/time", 0, 50),
            req("GET", "/fapi/v3/account", 51, 101),
            req("GET", "/fapi/v1/klines", 52, 130),
            req("POST", "/fapi/v1/order", 131, 181),
        ];
        let rt = round_trips(&log, 3, Duration::from_millis(50));
        assert_eq!(rt.by_chain, 2);
        assert_eq!(rt.by_time, Some(3), "131 ms is 2.6 latencies");
        assert_eq!(round_trips(&log, 0, Duration::ZERO).by_chain, 0);
        assert_eq!(round_trips(&log, 0, Duration::ZERO).by_time, None);
    }

    #[test]
    fn figures_split_the_weight_by_account_and_find_the_entry_and_its_stop() {
        let mut signed = req("GET", "/fapi/v3/account", 51, 101);
        signed.api_key = Some(ACCOUNTS[1].api_key.into());
        signed.weight = 5;
        let mut stop = req("POST", "/fapi/v1/algoOrder", 200, 250);
        stop.params.insert("type".into(), "STOP_MARKET".into());
        let log = [
            req("GET", "/fapi/v1/time", 0, 50),
            signed,
            req("POST", "/fapi/v1/order", 120, 170),
            stop,
        ];
        let f = figures(
            Job::TradingClose,
            Duration::from_millis(300),
            &log,
            &ACCOUNTS,
            Duration::from_millis(50),
        );
        assert_eq!(
            (f.requests, f.weight, f.orders, f.algo_orders),
            (4, 8, 1, 1)
        );
        assert_eq!(f.weight_by_account["sub1"], 5);
        assert_eq!(f.weight_by_account["unsigned"], 3);
        assert_eq!(f.to_entry.unwrap().by_chain, 2);
        assert_eq!(f.to_stop.unwrap().by_chain, 3);
        assert_eq!(f.to_last_stop, f.to_stop);
    }
}
