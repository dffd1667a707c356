//! The `albra` operator CLI as a process: replay over real candles, validate, live refusing to
//! start without keys, status and positions on a fresh store, clear errors for bad input.

use albra_tests::harness::{self, bin};
use std::path::Path;
use std::process::Command;

fn albra(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    run(&bin("albra"), dir, args, env)
}

/// The executable `exe` as [`albra`] runs the built one: no keys, no internet.
fn run(
    exe: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Option<i32>, String, String) {
    let mut c = Command::new(exe);
    c.current_dir(dir)
        .args(args)
        .env_remove("BINANCE_API_KEY")
        .env_remove("BINANCE_SECRET_KEY")
        .env_remove("TELEGRAM_BOT_TOKEN")
        .env_remove("TELEGRAM_CHAT_ID")
        .env_remove("ALBRA_CONFIG")
        .env_remove("ALBRA_STATE")
        .env_remove("ALBRA_ENV_FILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Nothing here may reach the internet: point Binance at a closed loopback port.
        .env("ALBRA_BINANCE_URL", "http://127.0.0.1:9");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run albra");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A Binance-speaking loopback server (its main account's keys are `harness::MAIN_KEY` /
/// `MAIN_SECRET`) on a runtime of its own, for the commands that make signed calls.
fn binance() -> (
    tokio::runtime::Runtime,
    albra_tests::binance_server::BinanceTestServer,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let candles = harness::btc_15m();
    let at = candles[300].open_time;
    let server = rt.block_on(harness::start_server(&candles, at));
    (rt, server)
}

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    harness::write_config(dir.path(), &harness::TestConfig::default());
    dir
}

/// The first `rows` candles of the repository's sample as a CSV in `dir`.
fn sample(dir: &Path, rows: usize) -> std::path::PathBuf {
    let src = std::fs::read_to_string(
        albra_tests::moto::workspace_root().join("data/BTCUSDT-perp-15m.csv"),
    )
    .unwrap();
    let text: Vec<&str> = src.lines().take(rows + 1).collect();
    let path = dir.join("BTCUSDT-perp-15m.csv");
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

#[test]
fn replay_runs_the_jobs_over_recorded_candles_and_summarises() {
    let dir = setup();
    let data = sample(dir.path(), 3000);
    // The replay keeps its scratch state under the temp directory and must remove it.
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = albra(
        dir.path(),
        &[
            "replay",
            "--config",
            "albra.toml",
            "--data",
            data.to_str().unwrap(),
        ],
        &[("TMPDIR", tmp.path().to_str().unwrap())],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "replay left scratch files behind: {left:?}"
    );
    // Notifications as they happen, then the summary.
    assert!(out.contains("[HIGH] main entry: ENTRY"), "{out}");
    assert!(out.contains("replay BTCUSDT 15m: 3000 candles"), "{out}");
    assert!(out.contains("trades "), "{out}");
    assert!(out.contains("win rate"), "{out}");
    assert!(out.contains("max drawdown"), "{out}");
    let entries = out.matches("main entry: ENTRY").count();
    assert!(entries >= 2, "several signals in 3000 candles: {entries}");
}

#[test]
fn replay_rejects_a_bad_data_file_with_its_line() {
    let dir = setup();
    let data = sample(dir.path(), 50);
    let mut text = std::fs::read_to_string(&data).unwrap();
    text = text.replacen("108842.3", "abc", 1);
    std::fs::write(&data, text).unwrap();
    let (code, out, err) = albra(
        dir.path(),
        &[
            "replay",
            "--config",
            "albra.toml",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(
        err.contains("BTCUSDT-perp-15m.csv:2:"),
        "file and line named: {err}"
    );
    assert!(
        err.contains("close") && err.contains("abc"),
        "column and value named: {err}"
    );
    let (code, _, err) = albra(
        dir.path(),
        &["replay", "--config", "albra.toml", "--data", "missing.csv"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("missing.csv"), "{err}");
}

#[test]
fn live_refuses_to_start_without_keys() {
    let dir = setup();
    let (code, out, err) = albra(
        dir.path(),
        &["run", "--live", "--config", "albra.toml"],
        &[],
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("BINANCE_API_KEY"), "{err}");
}

#[test]
fn validate_reports_config_and_keys() {
    let dir = setup();
    let (code, out, err) = albra(dir.path(), &["validate", "--config", "albra.toml"], &[]);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("OK (1 strategies, 1 accounts)"), "{out}");
    assert!(out.contains("KEYS MISSING"), "{out}");
    // Present but wrong keys: one signed read-only call, rejected, exit 1.
    let (_rt, server) = binance();
    let (code, out, err) = albra(
        dir.path(),
        &["validate", "--config", "albra.toml"],
        &[
            ("ALBRA_BINANCE_URL", server.url.as_str()),
            ("BINANCE_API_KEY", "k-123456"),
            ("BINANCE_SECRET_KEY", "s-very-secret"),
        ],
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("KEYS NOT ACCEPTED"), "{out}");
    assert!(err.contains("did not accept the keys of: main"), "{err}");
    assert!(
        !out.contains("s-very-secret") && !err.contains("s-very-secret"),
        "secret printed"
    );
    // The exchange's own keys: accepted, with the account's equity.
    let (code, out, err) = albra(
        dir.path(),
        &["validate", "--config", "albra.toml"],
        &[
            ("ALBRA_BINANCE_URL", server.url.as_str()),
            ("BINANCE_API_KEY", harness::MAIN_KEY),
            ("BINANCE_SECRET_KEY", harness::MAIN_SECRET),
        ],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("keys accepted by http://127.0.0.1"), "{out}");
    assert!(
        out.contains("live trading: allowed on http://127.0.0.1"),
        "{out}"
    );
    assert_eq!(server.count("GET", "/fapi/v3/account"), 2);
    // Unreachable exchange: not accepted either.
    let (code, out, _) = albra(
        dir.path(),
        &["validate", "--config", "albra.toml"],
        &[
            ("BINANCE_API_KEY", harness::MAIN_KEY),
            ("BINANCE_SECRET_KEY", harness::MAIN_SECRET),
        ],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("KEYS NOT ACCEPTED by http://127.0.0.1:9"),
        "{out}"
    );
}

/// Real money needs `live = true` on the account: without it `run --live` and the jobs stop
/// before any client, key or store is touched (exit 2), and `validate` says so.
#[test]
fn live_trading_needs_the_accounts_opt_in() {
    let dir = setup();
    let real = [
        ("ALBRA_BINANCE_URL", "https://fapi.binance.com"),
        ("BINANCE_API_KEY", "k-123456"),
        ("BINANCE_SECRET_KEY", "s-very-secret"),
    ];
    let (code, out, err) = albra(
        dir.path(),
        &[
            "run",
            "--live",
            "--config",
            "albra.toml",
            "--state",
            "state",
        ],
        &real,
    );
    assert_eq!(code, Some(2), "{out}\n{err}");
    assert!(
        err.contains("accounts[0] (`main`)") && err.contains("live = true"),
        "{err}"
    );
    assert!(!dir.path().join("state").exists(), "nothing was opened");
    for (job, args) in [
        ("evaluator", vec!["--timeframe", "15m"]),
        ("position-sync", vec![]),
    ] {
        let mut a = args.clone();
        a.extend(["--config", "albra.toml", "--state", "state"]);
        let (code, out, err) = run(&bin(job), dir.path(), &a, &real);
        assert_eq!(code, Some(2), "{job}: {out}\n{err}");
        assert!(err.contains("live = true"), "{job}: {err}");
    }
    // With the opt-in the refusal is gone (this run then fails on the closed loopback port of
    // the test environment, exit 1, not on the opt-in).
    let cfg = std::fs::read_to_string(dir.path().join("albra.toml")).unwrap();
    let opted = cfg.replacen(
        "key_source = \"env\"",
        "key_source = \"env\"\nlive = true",
        1,
    );
    assert_ne!(cfg, opted, "the test config names key_source = \"env\"");
    std::fs::write(dir.path().join("albra.toml"), opted).unwrap();
    let (code, out, _) = albra(dir.path(), &["validate", "--config", "albra.toml"], &[]);
    assert!(!out.contains("live trading refused"), "{out}");
    assert_eq!(code, Some(1), "keys missing: {out}");
    // Opted in, with keys, but the exchange cannot be reached: `run --live` does not start.
    let (code, out, err) = albra(
        dir.path(),
        &[
            "run",
            "--live",
            "--config",
            "albra.toml",
            "--state",
            "state",
        ],
        &[
            ("BINANCE_API_KEY", "k-123456"),
            ("BINANCE_SECRET_KEY", "s-very-secret"),
        ],
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("did not answer a signed read"), "{err}");
}

/// Keys come from `--env-file` (or `ALBRA_ENV_FILE`) or `./.env`, never a parent folder's, and
/// only from a file no one but its owner can read.
#[test]
fn validate_reads_a_private_env_file_and_never_a_parents() {
    use std::os::unix::fs::PermissionsExt;
    let dir = setup();
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let keys = dir.path().join("keys.env");
    std::fs::write(
        &keys,
        format!(
            "BINANCE_API_KEY={}\nBINANCE_SECRET_KEY={}\n",
            harness::MAIN_KEY,
            harness::MAIN_SECRET
        ),
    )
    .unwrap();
    let (_rt, server) = binance();
    let url = [("ALBRA_BINANCE_URL", server.url.as_str())];
    chmod(&keys, 0o644);
    let args = [
        "validate",
        "--config",
        "albra.toml",
        "--env-file",
        "keys.env",
    ];
    let (code, out, err) = albra(dir.path(), &args, &url);
    assert_eq!(code, Some(1), "{out}\n{err}");
    for part in ["keys.env", "mode 0644", "chmod 600 keys.env"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    assert!(!err.contains(harness::MAIN_SECRET) && !out.contains(harness::MAIN_SECRET));

    chmod(&keys, 0o600);
    let (code, out, err) = albra(dir.path(), &args, &url);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("keys accepted"), "{out}");
    let (code, out, err) = albra(
        dir.path(),
        &["validate", "--config", "albra.toml"],
        &[url[0], ("ALBRA_ENV_FILE", "keys.env")],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");

    // The same keys as ./.env are read in that folder, but not from a folder below it.
    std::fs::rename(&keys, dir.path().join(".env")).unwrap();
    let (code, out, err) = albra(dir.path(), &["validate", "--config", "albra.toml"], &url);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let (code, out, err) = albra(&sub, &["validate", "--config", "../albra.toml"], &url);
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(out.contains("KEYS MISSING"), "{out}");

    let (code, out, err) = albra(
        dir.path(),
        &[
            "validate",
            "--config",
            "albra.toml",
            "--env-file",
            "nope.env",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{out}\n{err}");
    assert!(err.contains("nope.env"), "{err}");
}

#[test]
fn status_and_positions_on_a_fresh_store() {
    let dir = setup();
    let (code, out, err) = albra(
        dir.path(),
        &["status", "--config", "albra.toml", "--state", "state"],
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("main: no state yet"), "{out}");
    let (code, out, _) = albra(
        dir.path(),
        &["positions", "--config", "albra.toml", "--state", "state"],
        &[],
    );
    assert_eq!(code, Some(0));
    assert!(out.contains("(no positions)"), "{out}");
    let (code, _, err) = albra(
        dir.path(),
        &["positions", "--config", "albra.toml", "--account", "nope"],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("no account `nope`"), "{err}");
}

#[test]
fn unknown_config_keys_exit_2() {
    let dir = setup();
    let path = dir.path().join("albra.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[jobs]", "[jobs]\nclose_delay = 3");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = albra(dir.path(), &["status", "--config", "albra.toml"], &[]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("albra.toml: jobs") && err.contains("close_delay"),
        "{err}"
    );
}

#[test]
fn indicators_print_named_columns_with_empty_warm_up_cells() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path(), 300);
    let (code, out, err) = albra(
        dir.path(),
        &[
            "indicators",
            "--data",
            data.to_str().unwrap(),
            "--indicator",
            "ema:20",
            "--indicator",
            "macd:12,26,9",
            "--indicator",
            "adx:14",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "open_time,ema_20,macd_12_26_9,macd_signal_12_26_9,macd_hist_12_26_9,adx_14,plus_di_14,minus_di_14"
    );
    assert_eq!(lines.len(), 301, "one row per candle");
    assert!(
        lines[1].starts_with("1751629500000,,"),
        "empty during warm-up: {}",
        lines[1]
    );
    let row20: Vec<&str> = lines[20].split(',').collect();
    assert!(
        !row20[1].is_empty() && row20[2].is_empty(),
        "EMA(20) ready at row 20, MACD not: {}",
        lines[20]
    );
    let (code, _, err) = albra(
        dir.path(),
        &[
            "indicators",
            "--data",
            data.to_str().unwrap(),
            "--indicator",
            "emx:3",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("unknown indicator `emx`") && err.contains("ema"),
        "{err}"
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    // Far more output than a pipe buffers, so the writer is still writing when the reader goes.
    let data = sample(dir.path(), 17_000);
    let mut child = Command::new(bin("albra"))
        .current_dir(dir.path())
        .args(["indicators", "--data", data.to_str().unwrap()])
        .args(["--indicator", "ema:20", "--indicator", "macd:12,26,9"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run albra");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("open_time,ema_20,"), "{first}");
    // The reader is dropped here, as `head -1` exits.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.contains("Broken pipe") && !err.contains("error"),
        "{err}"
    );
}

#[test]
fn signals_print_every_candle_with_decision_and_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path(), 2000);
    let (code, out, err) = albra(
        dir.path(),
        &[
            "signals",
            "--strategy",
            "EMA_CROSS",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "open_time,close,action,note,conditions_held,conditions"
    );
    assert_eq!(
        lines.len(),
        2001,
        "one row per closed candle (no config: the data's 15m)"
    );
    let actions: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains(",OPEN ") || l.contains(",REVERSE "))
        .collect();
    assert!(!actions.is_empty(), "signals found");
    assert!(actions[0].contains("cross_"), "{}", actions[0]);
    let (code, _, err) = albra(
        dir.path(),
        &[
            "signals",
            "--strategy",
            "NOPE",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("valid: EMA_CROSS, TFPE, ZLMACD_ICHIMOKU, ZLHMA_EMA_CROSS"),
        "{err}"
    );
}

/// All three seed strategies on two accounts, two of them sharing BTCUSDT on one account (in
/// one-way mode, with opposite shares at times): the replay runs without a job error and never
/// mistakes one strategy's stop fill or exit for a manual position.
#[test]
fn replay_of_the_seed_strategies_on_shared_symbols_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path(), 6000);
    std::fs::write(
        dir.path().join("seed.toml"),
        r#"
[notifier]
telegram = false
[[strategies]]
name = "ZLMACD_ICHIMOKU"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 10
size_pct = 0.1
[[strategies]]
name = "ZLHMA_EMA_CROSS"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 10
size_pct = 0.1
[[strategies]]
name = "TFPE"
timeframe = "4h"
symbols = ["BTCUSDT"]
leverage = 10
size_pct = 0.2
[[accounts]]
id = "main"
key_source = "env"
strategies = ["ZLMACD_ICHIMOKU"]
[[accounts]]
id = "sub1"
key_source = "env:SUB1"
strategies = ["ZLHMA_EMA_CROSS", "TFPE"]
"#,
    )
    .unwrap();
    let (code, out, err) = albra(
        dir.path(),
        &[
            "replay",
            "--config",
            "seed.toml",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(
        code,
        Some(0),
        "{}\n{err}",
        out.lines().rev().take(5).collect::<Vec<_>>().join("\n")
    );
    for s in ["ZLMACD_ICHIMOKU 1h", "ZLHMA_EMA_CROSS 1h", "TFPE 4h"] {
        assert!(out.contains(s), "no {s} entry");
    }
    assert!(
        !out.contains("MANUAL"),
        "a strategy's own fill was taken for a manual position"
    );
    assert!(
        !out.contains("size_changed"),
        "a share was resized by another strategy's order"
    );
    assert!(
        out.contains("closed_on_exchange"),
        "stops filled on the paper exchange are recorded"
    );
}

#[test]
fn backtest_prints_metrics_and_writes_trades_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path(), 4000);
    let trades = dir.path().join("trades.csv");
    let report = dir.path().join("report.html");
    let (code, out, err) = albra(
        dir.path(),
        &[
            "backtest",
            "--strategy",
            "EMA_CROSS,TFPE",
            "--data",
            data.to_str().unwrap(),
            "--timeframe",
            "1h",
            "--trades-out",
            trades.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("EMA_CROSS        BTCUSDT   1h"), "{out}");
    assert!(out.contains("TFPE"), "{out}");
    let csv = std::fs::read_to_string(&trades).unwrap();
    assert!(csv.starts_with(
        "strategy,symbol,side,entry_time,exit_time,entry_price,exit_price,qty,pnl,fees,funding,exit_reason\n"
    ));
    assert!(csv.lines().count() > 2, "{csv}");
    // The page itself is checked in a browser (tests/tests/backtest_report.rs).
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.contains("id=\"equity-1\"") && html.contains("id=\"candles-1\""));
    assert!(
        !html.contains("<script src") && !html.contains("<link"),
        "self-contained"
    );
    let (code, _, err) = albra(
        dir.path(),
        &[
            "backtest",
            "--strategy",
            "NOPE",
            "--data",
            data.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("unknown strategy `NOPE`") && err.contains("EMA_CROSS"),
        "{err}"
    );
    let (code, _, err) = albra(
        dir.path(),
        &[
            "backtest",
            "--strategy",
            "EMA_CROSS",
            "--data",
            data.to_str().unwrap(),
            "--timeframe",
            "5m",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("finer 5m"), "{err}");
}

#[test]
fn walk_forward_reports_every_window_and_writes_the_stitched_equity() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path(), 17_280);
    let windows = dir.path().join("windows.csv");
    let equity = dir.path().join("oos.csv");
    let (code, out, err) = albra(
        dir.path(),
        &[
            "walk-forward",
            "--strategy",
            "EMA_CROSS",
            "--data",
            data.to_str().unwrap(),
            "--timeframe",
            "1h",
            "--in-sample",
            "0.5",
            "--step",
            "30d",
            "--grid",
            "fast=8,12",
            "--grid",
            "slow=26,50",
            "--windows-out",
            windows.to_str().unwrap(),
            "--equity-out",
            equity.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("walk-forward: 4 parameter sets × 5 windows over 4319 candles"),
        "{out}"
    );
    assert!(
        out.contains("out-of-sample, stitched: EMA_CROSS BTCUSDT 1h"),
        "{out}"
    );
    let csv = std::fs::read_to_string(&windows).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "window,is_start,is_end,oos_start,oos_end,fast,slow,is_score,is_return,is_sharpe,oos_return,oos_sharpe,oos_max_dd,oos_trades"
    );
    assert_eq!(rows.len(), 6, "{csv}");
    // Each row's winner is one of the grid's values.
    for r in &rows[1..] {
        let f: Vec<&str> = r.split(',').collect();
        assert!(
            ["8", "12"].contains(&f[5]) && ["26", "50"].contains(&f[6]),
            "{r}"
        );
    }
    let eq = std::fs::read_to_string(&equity).unwrap();
    assert!(eq.starts_with("time,equity\n"));
    // One point per out-of-sample hour plus the start: 4 windows of 30 days and a last one cut
    // at the data's end.
    assert!(eq.lines().count() > 4 * 30 * 24, "{}", eq.lines().count());

    let (code, _, err) = albra(
        dir.path(),
        &[
            "walk-forward",
            "--strategy",
            "EMA_CROSS",
            "--data",
            data.to_str().unwrap(),
            "--grid",
            "fastt=8,12",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("fastt"), "{err}");
    let (code, _, err) = albra(
        dir.path(),
        &[
            "walk-forward",
            "--strategy",
            "EMA_CROSS",
            "--data",
            data.to_str().unwrap(),
            "--grid",
            "fast=8,12",
            "--step",
            "30x",
        ],
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--step") && err.contains("unknown unit `x`"),
        "{err}"
    );
}

#[test]
fn albra_hands_its_other_commands_to_albra_ops_beside_it() {
    // Through the pair as built, `status`, `positions`, `validate`, `replay` and `run` above run in
    // albra-ops. A copy of albra alone still runs the candle-file tools, and says what the others
    // need.
    let dir = setup();
    let apart = tempfile::tempdir().unwrap();
    let copy = apart.path().join("albra");
    std::fs::copy(bin("albra"), &copy).unwrap();
    let lone = |args: &[&str]| run(&copy, dir.path(), args, &[]);
    let data = sample(dir.path(), 50);
    let (code, out, err) = lone(&[
        "indicators",
        "--data",
        data.to_str().unwrap(),
        "--indicator",
        "ema:20",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().next(), Some("open_time,ema_20"), "{out}");
    assert_eq!(out.lines().count(), 51, "{out}");
    let (code, out, _) = lone(&["--help"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("replay, run, status, positions and validate run in albra-ops"),
        "{out}"
    );
    let (code, out, err) = lone(&["status", "--config", "albra.toml", "--state", "state"]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(out.is_empty(), "{out}");
    let wanted = apart.path().join("albra-ops");
    for part in [
        "`albra status` runs in albra-ops",
        &wanted.display().to_string(),
        "make build",
        "infra/ec2/install.sh",
    ] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
}

#[test]
fn albra_leaves_the_aws_sdk_tls_and_sqlite_to_albra_ops() {
    // What keeps `albra backtest` quick to start: the loader applies every relocation of the
    // libraries a program links before `main`, and the AWS SDK, TLS and SQLite are most of them.
    // Each marker is a string only that library's code uses: the DynamoDB and SSM protocol
    // targets and SQLite's statement API.
    let albra = std::fs::read(bin("albra")).unwrap();
    let ops = std::fs::read(bin("albra-ops")).unwrap();
    let has = |bytes: &[u8], s: &str| bytes.windows(s.len()).any(|w| w == s.as_bytes());
    for marker in ["DynamoDB_20120810", "AmazonSSM", "sqlite3_prepare"] {
        assert!(
            has(&ops, marker),
            "albra-ops lost {marker}: the check no longer bites"
        );
        assert!(
            !has(&albra, marker),
            "albra links the library behind {marker}"
        );
    }
}

/// A `--config` named on the command line or in ALBRA_CONFIG must exist, for the tools and the
/// other commands alike; without one the default file is read, or the built-in defaults serve and
/// stderr says so once; `--config none` asks for them.
#[test]
fn a_named_config_that_is_missing_is_an_error_never_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let data = sample(dir.path(), 500);
    let backtest = [
        "backtest",
        "--strategy",
        "EMA_CROSS",
        "--data",
        data.to_str().unwrap(),
    ];
    fn named<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["--config", "nope.toml"], args].concat()
    }
    for args in [
        named(&backtest),
        named(&["indicators", "--data", "x.csv", "--indicator", "ema:20"]),
        named(&["status"]),
        named(&["replay", "--data", data.to_str().unwrap()]),
    ] {
        let (code, out, err) = albra(dir.path(), &args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {out}\n{err}");
        assert!(
            err.starts_with("error: --config nope.toml: no such file"),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = albra(dir.path(), &backtest, &[("ALBRA_CONFIG", "nope.toml")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--config nope.toml: no such file"), "{err}");

    // No config named, none at the default path: the built-in defaults, said once.
    let (code, out, err) = albra(dir.path(), &backtest, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("EMA_CROSS"), "{out}");
    assert_eq!(
        err.matches("no config at config/albra.toml: built-in defaults")
            .count(),
        1,
        "{err}"
    );
    // Asked for by name: nothing to say.
    let (code, out, err) = albra(
        dir.path(),
        &[&["--config", "none"], &backtest[..]].concat(),
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(err.is_empty(), "{err}");
    // The other commands need a file: a missing default one is still an error naming it.
    let (code, _, err) = albra(dir.path(), &["status"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("config/albra.toml"), "{err}");
    let (code, _, err) = albra(dir.path(), &["--config", "none", "status"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--config none") && err.contains("`status` needs a config file"),
        "{err}"
    );
}

/// The rows of a 15m sample's candles opening in `[from, to)` (ms), by their first field.
fn rows_between(csv: &str, from: i64, to: i64) -> Vec<&str> {
    csv.lines()
        .skip(1)
        .filter(|l| {
            let t: i64 = l.split(',').next().unwrap().parse().unwrap();
            t >= from && t < to
        })
        .collect()
}

const AUG1_2025: i64 = 1_754_006_400_000;
const DAY: i64 = 86_400_000;

/// `--timerange` on the tools: only the range's candles are traded or printed, the strategy
/// warms up on the earlier ones (signals print exactly the whole run's rows), and a range the
/// file does not hold, or that does not parse, exits 2 naming the flag. No progress reaches a
/// stderr that is not a terminal.
#[test]
fn timerange_selects_candles_and_keeps_the_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    // 2025-07-04 11:45 to 2025-08-15.
    let data = sample(dir.path(), 4000);
    let csv = std::fs::read_to_string(&data).unwrap();
    let data = data.to_str().unwrap();
    let signals = |extra: &[&str]| {
        let args = [
            &[
                "--config",
                "none",
                "signals",
                "--strategy",
                "EMA_CROSS",
                "--data",
                data,
            ],
            extra,
        ]
        .concat();
        let (code, out, err) = albra(dir.path(), &args, &[]);
        assert_eq!(code, Some(0), "{err}");
        assert!(err.is_empty(), "{err}");
        out
    };
    let whole = signals(&[]);
    let ranged = signals(&["--timerange", "20250801-20250810"]);
    let expected = rows_between(&whole, AUG1_2025, AUG1_2025 + 10 * DAY);
    assert_eq!(expected.len(), 960);
    assert_eq!(ranged.lines().skip(1).collect::<Vec<_>>(), expected);

    let backtest = |range: &str| {
        albra(
            dir.path(),
            &[
                "--config",
                "none",
                "backtest",
                "--strategy",
                "EMA_CROSS",
                "--data",
                data,
                "--timerange",
                range,
            ],
            &[],
        )
    };
    let (code, out, err) = backtest("20250801-20250810");
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains("EMA_CROSS        BTCUSDT   15m      960"),
        "{out}"
    );
    assert!(err.is_empty(), "no progress without a terminal: {err:?}");

    let (code, _, err) = backtest("20300101-");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--timerange 20300101-: ")
            && err.contains("holds no candle in it (its candles run 20250704-20250815)"),
        "{err}"
    );
    for bad in ["20250810-20250801", "2025-08-01", "-"] {
        let (code, _, err) = backtest(bad);
        assert_eq!(code, Some(2), "{bad}: {err}");
        assert!(err.contains("--timerange"), "{bad}: {err}");
    }

    let (code, out, err) = albra(
        dir.path(),
        &[
            "--config",
            "none",
            "walk-forward",
            "--strategy",
            "EMA_CROSS",
            "--data",
            data,
            "--timerange",
            "20250720-",
            "--in-sample",
            "0.5",
            "--step",
            "7d",
            "--grid",
            "fast=8,12",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(err.is_empty(), "no progress without a terminal: {err:?}");
    let candles = rows_between(&csv, AUG1_2025 - 12 * DAY, i64::MAX).len();
    assert!(out.contains(&format!("over {candles} candles")), "{out}");
    assert!(
        out.contains("\n  1  2025-07-20 00:00"),
        "the first window starts the range: {out}"
    );
}

/// `replay --timerange`: the jobs run over the range's minutes only (reading their history from
/// the candles before it); no progress on a stderr that is not a terminal.
#[test]
fn replay_over_a_timerange() {
    let dir = setup();
    let data = sample(dir.path(), 3000);
    let csv = std::fs::read_to_string(&data).unwrap();
    let (code, out, err) = albra(
        dir.path(),
        &[
            "replay",
            "--config",
            "albra.toml",
            "--quiet",
            "--data",
            data.to_str().unwrap(),
            "--timerange",
            "20250801-",
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    let candles = rows_between(&csv, AUG1_2025, i64::MAX).len();
    assert!(
        out.contains(&format!("replay BTCUSDT 15m: {candles} candles")),
        "{out}"
    );
    assert!(!err.contains('\r') && !err.contains("minutes"), "{err:?}");
    let (code, _, err) = albra(
        dir.path(),
        &[
            "replay",
            "--config",
            "albra.toml",
            "--data",
            data.to_str().unwrap(),
            "--timerange",
            "-20250101",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--timerange -20250101: "), "{err}");
}
