//! Harness for end-to-end tests of the real binaries: locate them in the cargo target directory,
//! write a config, start the Binance-speaking server with the repository's real candles, run a
//! binary as a process with the right environment, and find the candles where EMA_CROSS signals.

use crate::binance_server::{load_candles_csv, BinanceTestServer, ServerOptions, TestAccount};
use albra_core::domain::{Candle, Side, Timeframe};
use albra_core::strategy::{self, Action};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const MAIN_KEY: &str = "test-main-api-key-0123456789";
pub const MAIN_SECRET: &str = "test-main-secret-abcdefghijklmnop";

/// The directory cargo put the workspace binaries in (`…/target/debug`): the parent of a test
/// executable's `deps/`, or the directory of a binary such as `albra-chaos`.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary; panics with the fix if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which `make test` does)",
        p.display()
    );
    p
}

/// The repository's real 15m BTCUSDT candles.
pub fn btc_15m() -> Vec<Candle> {
    let path = crate::moto::workspace_root().join("data/BTCUSDT-perp-15m.csv");
    load_candles_csv(&path).expect("data/BTCUSDT-perp-15m.csv")
}

/// Start the server with the real candles and one funded main account.
pub async fn start_server(candles: &[Candle], start_time_ms: i64) -> BinanceTestServer {
    let mut map = HashMap::new();
    map.insert("BTCUSDT".to_string(), candles.to_vec());
    BinanceTestServer::start(ServerOptions {
        candles: map,
        base_tf_ms: Timeframe::M15.millis(),
        accounts: vec![TestAccount {
            api_key: MAIN_KEY.into(),
            api_secret: MAIN_SECRET.into(),
            wallet_balance: Decimal::from(10_000),
        }],
        start_time_ms,
    })
    .await
}

/// Settings that vary between tests.
#[derive(Clone, Debug)]
pub struct TestConfig {
    pub history: u32,
    pub timeout_ms: u64,
    pub stop_loss_pct: &'static str,
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig {
            history: 1000,
            timeout_ms: 2000,
            stop_loss_pct: "0.03",
        }
    }
}

/// Write a config for EMA_CROSS on 15m BTCUSDT for the main account (keys from the environment).
pub fn write_config(dir: &Path, t: &TestConfig) -> PathBuf {
    let text = format!(
        r#"
[binance]
recv_window_ms = 5000
timeout_ms = {timeout}

[jobs]
close_delay_secs = 3
kline_wait_secs = 2
history = {history}
pending_timeout_secs = 120

[notifier]
console = true
telegram = false

[[strategies]]
name = "EMA_CROSS"
timeframe = "15m"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[strategies.params]
fast = 50
slow = 200
stop_loss_pct = {stop}

[[accounts]]
id = "main"
key_source = "env"
strategies = ["EMA_CROSS"]
"#,
        timeout = t.timeout_ms,
        history = t.history,
        stop = t.stop_loss_pct
    );
    let path = dir.join("albra.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A binary run: exit code and both streams.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A command for a binary with the environment of a loopback test: Binance at `url`, the main
/// account's keys, no Telegram, no AWS metadata lookups, working directory `dir` (no stray `.env`).
pub fn command(name: &str, dir: &Path, url: &str, extra_env: &[(&str, String)]) -> Command {
    let mut c = Command::new(bin(name));
    c.current_dir(dir)
        .env("ALBRA_BINANCE_URL", url)
        .env("BINANCE_API_KEY", MAIN_KEY)
        .env("BINANCE_SECRET_KEY", MAIN_SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ALBRA_LOG", "warn")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("TELEGRAM_CHAT_ID")
        .env_remove("TELEGRAM_WEBHOOK_SECRET")
        .env_remove("ALBRA_CONFIG")
        .env_remove("ALBRA_STATE")
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c
}

/// Run a binary to completion (off the async runtime, so the in-process server keeps serving).
pub async fn run(
    name: &str,
    dir: &Path,
    url: &str,
    args: &[&str],
    extra_env: &[(&str, String)],
) -> Run {
    let mut c = command(name, dir, url, extra_env);
    c.args(args);
    let out: Output = tokio::task::spawn_blocking(move || c.output())
        .await
        .expect("join")
        .expect("spawn binary");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A candle where EMA_CROSS (fast 50 / slow 200) signals, seen exactly as the evaluator sees it:
/// the last `history` closed candles ending at that candle.
#[derive(Clone, Copy, Debug)]
pub struct Signal {
    pub index: usize,
    pub side: Side,
    pub open_time: i64,
}

impl Signal {
    /// A few seconds after this candle's close: when the evaluator runs for it.
    pub fn eval_time(&self) -> i64 {
        self.open_time + Timeframe::M15.millis() + 5_000
    }
}

/// The first `n` EMA_CROSS signals at or after candle `from`.
pub fn signals(candles: &[Candle], history: usize, from: usize, n: usize) -> Vec<Signal> {
    let mut out = Vec::new();
    let mut params = toml::Table::new();
    params.insert("fast".into(), toml::Value::Integer(50));
    params.insert("slow".into(), toml::Value::Integer(200));
    for i in from.max(201)..candles.len() {
        let mut s = strategy::build("EMA_CROSS", &params, "test").expect("strategy");
        let start = (i + 1).saturating_sub(history);
        for c in &candles[start..=i] {
            s.update(c);
        }
        if let Action::Open { side, .. } = s.decide(&strategy::Context::flat(0)).action {
            // Only a real cross (not a re-entry) opens from flat with default params.
            out.push(Signal {
                index: i,
                side,
                open_time: candles[i].open_time,
            });
            if out.len() == n {
                break;
            }
        }
    }
    out
}

/// The evaluator's arguments in a [`JobEnv`]: 15m, the scenario's config and state.
const EVALUATOR_ARGS: [&str; 6] = [
    "--timeframe",
    "15m",
    "--config",
    "albra.toml",
    "--state",
    "state",
];

/// One scenario of the scheduled jobs: a Binance test server a few seconds after a signal
/// candle closed, and a directory holding the config and the SQLite state the binaries use.
pub struct JobEnv {
    pub server: BinanceTestServer,
    pub dir: tempfile::TempDir,
    pub signal: Signal,
}

impl JobEnv {
    /// At the `n`-th EMA_CROSS signal of the sample (0 = the first), with `cfg` written out.
    pub async fn at_signal(cfg: &TestConfig, n: usize) -> JobEnv {
        let candles = btc_15m();
        let signal = signals(&candles, cfg.history as usize, 0, n + 1)[n];
        let server = start_server(&candles, signal.eval_time()).await;
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), cfg);
        JobEnv {
            server,
            dir,
            signal,
        }
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// `evaluator --timeframe 15m` on this scenario's config and state.
    pub async fn evaluator(&self) -> Run {
        run(
            "evaluator",
            self.dir(),
            &self.server.url,
            &EVALUATOR_ARGS,
            &[],
        )
        .await
    }
    /// `evaluator --timeframe 15m` started in the background, its output discarded (the kill
    /// tests stop it at a chosen moment).
    pub fn spawn_evaluator(&self) -> std::process::Child {
        command("evaluator", self.dir(), &self.server.url, &[])
            .args(EVALUATOR_ARGS)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn evaluator")
    }
    /// `position-sync` on this scenario's config and state.
    pub async fn sync(&self) -> Run {
        run(
            "position-sync",
            self.dir(),
            &self.server.url,
            &["--config", "albra.toml", "--state", "state"],
            &[],
        )
        .await
    }
    /// At the first signal with the evaluator's entry made and the sync run after it: one open
    /// position with its stop on the exchange.
    pub async fn entered(cfg: &TestConfig) -> JobEnv {
        let env = JobEnv::at_signal(cfg, 0).await;
        assert!(env.evaluator().await.ok());
        assert!(env.sync().await.ok());
        assert_eq!(env.server.open_algo_orders(MAIN_KEY).len(), 1, "the stop");
        env
    }
    /// `albra ARGS --config albra.toml --state state` on this scenario, against its server.
    pub async fn albra(&self, args: &[&str]) -> Run {
        let mut a = args.to_vec();
        a.extend(["--config", "albra.toml", "--state", "state"]);
        run("albra", self.dir(), &self.server.url, &a, &[]).await
    }
    /// The state the binaries wrote.
    pub fn repo(&self) -> albra_core::state::StateRepo {
        albra_core::state::StateRepo::new(std::sync::Arc::new(
            albra_adapters::store::sqlite::SqliteStore::open(self.dir().join("state/albra.db"))
                .expect("open state"),
        ))
    }
    /// Entry and exit orders the server received.
    pub fn orders_posted(&self) -> usize {
        self.server.count("POST", "/fapi/v1/order")
    }
}
