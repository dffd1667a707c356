//! The operator commands through the real `albra` binary (which hands them to `albra-ops`):
//! the read commands agree with the store a replay and the jobs wrote, `--json` prints the query
//! layer's types, pause/resume write the flag and a paused account enters nothing while its stop
//! stays, switch-strategy edits the config only when safe, and an emergency stop against the
//! Binance-speaking loopback server leaves the account flat, without any open order, and paused.

use albra_core::domain::AccountId;
use albra_tests::harness::{self, Run, TestConfig, MAIN_KEY};
use rust_decimal::Decimal;
use serde_json::Value;

type Env = harness::JobEnv;

fn json(r: &Run) -> Value {
    assert!(r.ok(), "{r}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {r}"))
}

fn dec(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("a decimal string: {v}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_agree_with_the_store_and_the_exchange() {
    let env = Env::entered(&TestConfig::default()).await;
    let status = json(&env.albra(&["status", "--json"]).await);
    let main = &status["accounts"][0];
    assert_eq!(main["account"], "main");
    assert_eq!(main["open_positions"], 1);
    let repo = env.repo();
    let st = repo.account_state(&AccountId::new("main")).await.unwrap();
    let equity = st.expect("the sync wrote the state").value.equity.get();
    assert_eq!(dec(&main["figures"]["equity"]), equity);

    let rows = json(&env.albra(&["positions", "--json"]).await);
    let stored = repo.positions(&AccountId::new("main")).await.unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_eq!(dec(&rows[0]["qty"]), stored[0].value.qty.get());
    assert_eq!(rows[0]["unprotected"], false);
    let table = env.albra(&["positions"]).await;
    assert!(
        table.ok() && table.stdout.contains("EMA_CROSS  BTCUSDT"),
        "{table}"
    );

    // Balance is the exchange's answer to a signed read, beside the recorded equity.
    let bal = json(&env.albra(&["balance", "--json"]).await);
    let wallet = env.server.wallet_balance(MAIN_KEY);
    assert_eq!(dec(&bal[0]["exchange"]["wallet_balance"]), wallet);
    assert_eq!(dec(&bal[0]["state_equity"]), equity);

    let risk = json(&env.albra(&["risk-check", "--json"]).await);
    assert_eq!(risk[0]["open_positions"], 1);
    let health = json(&env.albra(&["health", "--json"]).await);
    let jobs: Vec<&str> = health
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["position-sync", "evaluator-15m"]);
    assert!(health.as_array().unwrap().iter().all(|h| h["ok"] == true));
    let strategies = json(&env.albra(&["list-strategies", "--json"]).await);
    let ema = &strategies[0];
    assert_eq!(
        (ema["name"].as_str(), ema["configured"].as_bool()),
        (Some("EMA_CROSS"), Some(true))
    );
    assert_eq!(ema["accounts"][0], "main");
    // The sync's dry run sees nothing to heal and sends nothing.
    let posted = env.orders_posted();
    let dry = env.albra(&["sync", "main", "--dry-run"]).await;
    assert!(
        dry.ok() && dry.stdout.contains("store and exchange agree"),
        "{dry}"
    );
    assert_eq!(env.orders_posted(), posted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_account_enters_nothing_while_its_stop_stays() {
    let env = Env::entered(&TestConfig::default()).await;
    let r = env.albra(&["pause", "main"]).await;
    assert!(r.ok() && r.stdout.contains("main: paused"), "{r}");
    let again = env.albra(&["pause", "main"]).await;
    assert!(
        again.ok() && again.stdout.contains("already paused"),
        "{again}"
    );
    let risk = json(&env.albra(&["risk-check", "--json"]).await);
    assert!(
        risk[0]["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["kind"] == "paused"),
        "{risk}"
    );
    // The next signal: the paused account sends nothing; the sync keeps the stop.
    let candles = harness::btc_15m();
    let next = harness::signals(&candles, 1000, env.signal.index + 1, 1)[0];
    env.server.set_time(next.eval_time());
    let posted = env.orders_posted();
    let eval = env.evaluator().await;
    assert!(
        eval.ok() && eval.stdout.contains("paused; nothing evaluated"),
        "{eval}"
    );
    assert!(env.sync().await.ok());
    assert_eq!(
        env.orders_posted(),
        posted,
        "a paused account enters nothing"
    );
    assert_eq!(
        env.server.open_algo_orders(MAIN_KEY).len(),
        1,
        "its stop stays"
    );
    let r = env.albra(&["resume", "main"]).await;
    assert!(r.ok() && r.stdout.contains("resumed"), "{r}");
    let status = json(&env.albra(&["status", "--json"]).await);
    assert_eq!(status["accounts"][0]["figures"]["paused"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_strategy_is_refused_while_a_dropped_strategy_holds_a_position() {
    let env = Env::entered(&TestConfig::default()).await;
    let cfg_path = env.dir().join("albra.toml");
    let mut text = std::fs::read_to_string(&cfg_path).unwrap();
    text = text.replace(
        "[[accounts]]",
        "[[strategies]]\nname = \"TFPE\"\ntimeframe = \"1h\"\nsymbols = [\"ETHUSDT\"]\nleverage = 2\nsize_pct = 0.05\n\n# the main account\n[[accounts]]",
    );
    std::fs::write(&cfg_path, &text).unwrap();
    let r = env.albra(&["switch-strategy", "main", "NOPE"]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("unknown strategy `NOPE`"), "{r}");
    let r = env.albra(&["switch-strategy", "main", "TFPE"]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("close them first"), "{r}");
    assert_eq!(
        std::fs::read_to_string(&cfg_path).unwrap(),
        text,
        "nothing written"
    );
    // Once flat (an emergency stop), the switch goes through and keeps the comments.
    assert!(env.albra(&["emergency-stop", "main", "--yes"]).await.ok());
    let dry = env
        .albra(&["switch-strategy", "main", "TFPE", "--dry-run"])
        .await;
    assert!(dry.ok() && dry.stdout.contains("dry run"), "{dry}");
    assert_eq!(std::fs::read_to_string(&cfg_path).unwrap(), text);
    let r = env.albra(&["switch-strategy", "main", "TFPE"]).await;
    assert!(r.ok(), "{r}");
    let after = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(
        after.contains("strategies = [\"TFPE\"]") && after.contains("# the main account"),
        "{after}"
    );
    let strategies = json(&env.albra(&["list-strategies", "--json"]).await);
    assert_eq!(strategies[1]["accounts"][0], "main", "{strategies}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_stop_leaves_the_account_flat_without_orders_and_paused() {
    let env = Env::entered(&TestConfig::default()).await;
    // A hand-made position on another symbol is flattened too.
    env.server.set_mark_price("ETHUSDT", Decimal::from(3000));
    env.server
        .manual_market_order(MAIN_KEY, "ETHUSDT", "BUY", Decimal::new(5, 1));
    // And a limit order resting on the book, which could open exposure again once flat.
    let resting = env.server.manual_limit_order(
        MAIN_KEY,
        "ETHUSDT",
        "BUY",
        Decimal::ONE,
        Decimal::from(2500),
    );
    let posted = env.orders_posted();
    let dry = env.albra(&["emergency-stop", "main", "--dry-run"]).await;
    assert!(dry.ok(), "{dry}");
    let cancel_resting = format!("cancel resting ETHUSDT BUY 1 {resting}");
    for want in [
        cancel_resting.as_str(),
        "pause the account",
        "close main/BTCUSDT_EMA_CROSS",
        "cancel BTCUSDT STOP_MARKET",
        "flatten ETHUSDT SELL 0.5",
    ] {
        assert!(dry.stdout.contains(want), "{want}: {dry}");
    }
    assert_eq!(env.orders_posted(), posted, "a dry run sends nothing");
    // Off a terminal it asks for --yes rather than going ahead.
    let r = env.albra(&["emergency-stop", "main"]).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(r.stderr.contains("pass --yes"), "{r}");
    assert_eq!(env.orders_posted(), posted);

    let r = env.albra(&["emergency-stop", "all", "--yes"]).await;
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout
            .contains("main: flat true, open conditional orders 0, paused true"),
        "{r}"
    );
    for sym in ["BTCUSDT", "ETHUSDT"] {
        assert_eq!(env.server.position(MAIN_KEY, sym), Decimal::ZERO, "{sym}");
    }
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
    assert!(
        env.server.open_orders(MAIN_KEY).is_empty(),
        "the resting order is cancelled"
    );
    let status = json(&env.albra(&["status", "--json"]).await);
    assert_eq!(status["accounts"][0]["figures"]["paused"], true);
    assert_eq!(status["accounts"][0]["open_positions"], 0);
    // Run again: nothing left to do, nothing sent.
    let posted = env.orders_posted();
    let r = env.albra(&["emergency-stop", "main", "--yes"]).await;
    assert!(
        r.ok() && r.stdout.contains("already paused and flat"),
        "{r}"
    );
    assert_eq!(env.orders_posted(), posted);
    let trades = env.repo().trades(&AccountId::new("main")).await.unwrap();
    assert_eq!(trades.len(), 1, "the strategy position's close is recorded");
}

#[test]
fn operator_commands_explain_themselves_and_name_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    harness::write_config(dir.path(), &TestConfig::default());
    let exe = harness::bin("albra");
    let out = |args: &[&str]| {
        let o = std::process::Command::new(&exe)
            .current_dir(dir.path())
            .args(args)
            .env("ALBRA_BINANCE_URL", "http://127.0.0.1:9")
            .env_remove("ALBRA_CONFIG")
            .env_remove("ALBRA_STATE")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    };
    let (code, help, _) = out(&["emergency-stop", "--help"]);
    assert_eq!(code, Some(0));
    assert!(
        help.contains("--dry-run") && help.contains("--yes"),
        "{help}"
    );
    let (code, _, err) = out(&[
        "pause",
        "nope",
        "--config",
        "albra.toml",
        "--state",
        "state",
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("no account `nope`") && err.contains("main"),
        "{err}"
    );
    let (code, _, err) = out(&["sync"]);
    assert_eq!(code, Some(2), "an account or --all is required: {err}");
}

/// A newcomer's first hour: `albra replay --state DIR` (what `make run` does) leaves its store
/// where the read commands look, says so, and starts without a line that looks like a failure.
#[test]
fn the_read_commands_find_what_a_replay_left() {
    let dir = tempfile::tempdir().unwrap();
    harness::write_config(dir.path(), &TestConfig::default());
    let src = std::fs::read_to_string(
        albra_tests::moto::workspace_root().join("data/BTCUSDT-perp-15m.csv"),
    )
    .unwrap();
    let rows: Vec<&str> = src.lines().take(3001).collect();
    std::fs::write(
        dir.path().join("BTCUSDT-perp-15m.csv"),
        rows.join("\n") + "\n",
    )
    .unwrap();
    let albra = |args: &[&str]| {
        let o = std::process::Command::new(harness::bin("albra"))
            .current_dir(dir.path())
            .args(args)
            .args(["--config", "albra.toml", "--state", "state/replay"])
            .env("ALBRA_BINANCE_URL", "http://127.0.0.1:9")
            .env_remove("ALBRA_CONFIG")
            .env_remove("ALBRA_STATE")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (o.status.code(), text(&o.stdout), text(&o.stderr))
    };
    let (code, out, err) = albra(&["replay", "--data", "BTCUSDT-perp-15m.csv"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        !err.contains("WARN") && !out.contains("WARN"),
        "{out}\n{err}"
    );
    assert!(out.contains("state kept in state/replay/albra.db"), "{out}");
    let trades: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("trades "))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a trade count in the summary: {out}"));
    let (code, status, err) = albra(&["status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["accounts"][0]["closed_trades"], trades, "{status}\n{out}");
    assert!(
        v["accounts"][0]["figures"]["equity"].is_string(),
        "{status}"
    );
    // The replay says how to report its last week, and that report has its equity history.
    let hint = out
        .lines()
        .find_map(|l| l.split("`albra report ").nth(1))
        .and_then(|r| r.split('`').next())
        .unwrap_or_else(|| panic!("a report command in the summary: {out}"));
    let args: Vec<&str> = hint
        .split_whitespace()
        .take_while(|a| *a != "--state")
        .collect();
    let mut report = vec!["report"];
    report.extend(&args);
    report.push("--json");
    let (code, rep, err) = albra(&report);
    assert_eq!(code, Some(0), "{hint}: {err}");
    let r: Value = serde_json::from_str(&rep).unwrap();
    let end: Decimal = r["accounts"][0]["equity"]["end_equity"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the week's end equity: {rep}"));
    assert!(end > Decimal::ZERO, "{rep}");
    // One point per 15 minutes of the week up to where the replay's data ends (this cut of the
    // file ends six hours into its last day).
    let points = r["accounts"][0]["curve"].as_array().map_or(0, Vec::len);
    assert_eq!(points, 7 * 96 - 24, "{rep}");
    // A second replay into the same store is refused, naming it.
    let (code, _, err) = albra(&["replay", "--data", "BTCUSDT-perp-15m.csv"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("state/replay/albra.db already holds one"),
        "{err}"
    );
}

/// The UTC day after the one holding `ms`, as `--on` takes it (the daily report is then that day).
fn day_after(ms: i64) -> String {
    let next = chrono::DateTime::from_timestamp_millis(ms).unwrap() + chrono::Duration::days(1);
    next.format("%Y-%m-%d").to_string()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("a number: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_reads_the_syncs_equity_points_and_writes_a_page_or_json() {
    let env = Env::entered(&TestConfig::default()).await;
    let main = AccountId::new("main");
    // The mark price moves 2 % (against a long, for a short); 16 minutes on, the next sync's
    // point falls in the next 15-minute bucket. A rerun in the same bucket records nothing more.
    let t1 = env.signal.eval_time();
    let entry = env.repo().positions(&main).await.unwrap()[0]
        .value
        .entry_price
        .get();
    env.server
        .set_mark_price("BTCUSDT", entry * Decimal::new(98, 2));
    env.server.set_time(t1 + 16 * 60_000);
    assert!(env.sync().await.ok());
    assert!(env.sync().await.ok());
    let points = env
        .repo()
        .equity_points(&main, t1 - 3_600_000, t1 + 3_600_000)
        .await
        .unwrap();
    assert_eq!(points.len(), 2, "one point per bucket: {points:?}");
    let (e1, e2) = (points[0].equity, points[1].equity);
    assert_ne!(e1, e2, "the mark price moved the equity");
    // The gauge the exchange sent with the sync's last answers, as recorded.
    let weights: Vec<u32> = points.iter().map(|p| p.api_weight_1m.unwrap()).collect();
    assert!(weights.iter().all(|w| *w > 0), "{weights:?}");

    let on = day_after(t1);
    let r = json(
        &env.albra(&["report", "--type", "daily", "--on", &on, "--json"])
            .await,
    );
    let a = &r["accounts"][0];
    assert_eq!(a["account"], "main");
    let eq = &a["equity"];
    assert_eq!((dec(&eq["start_equity"]), dec(&eq["end_equity"])), (e1, e2));
    assert_eq!(eq["points"], 2);
    let (f1, f2) = (
        e1.to_string().parse::<f64>().unwrap(),
        e2.to_string().parse::<f64>().unwrap(),
    );
    assert!(
        (num(&eq["return_frac"]) - (f2 / f1 - 1.0)).abs() < 1e-12,
        "{eq}"
    );
    let mdd = ((f1 - f2) / f1).max(0.0);
    assert!((num(&eq["max_drawdown"]) - mdd).abs() < 1e-12, "{eq}");
    assert!(
        eq["sharpe"].is_null(),
        "a daily report has one daily return"
    );
    assert_eq!(a["total"]["trades"], 0);
    assert!(a["total"]["win_rate"].is_null());
    let w = &a["api_weight"];
    assert_eq!(w["samples"], 2);
    assert_eq!(w["peak_1m"], weights.iter().max().copied().unwrap());
    assert!(a["notes"]
        .to_string()
        .contains("no trades closed in the period"));

    // The day before holds nothing: said in words, no NaN.
    let empty = env
        .albra(&[
            "report",
            "--type",
            "daily",
            "--on",
            &day_after(t1 - 86_400_000),
        ])
        .await;
    assert!(
        empty.ok() && empty.stdout.contains("no equity points"),
        "{empty}"
    );
    let table = env
        .albra(&["report", "--type", "weekly", "--on", &on])
        .await;
    assert!(
        table.ok() && table.stdout.contains("max drawdown"),
        "{table}"
    );
    assert!(!table.stdout.contains("NaN"), "{table}");

    let html = env
        .albra(&["report", "--type", "daily", "--on", &on, "-o", "r.html"])
        .await;
    assert!(html.ok(), "{html}");
    let page = std::fs::read_to_string(env.dir().join("r.html")).unwrap();
    assert!(
        page.contains(albra_adapters::web::UPLOT_JS),
        "uPlot is inlined"
    );
    assert!(
        page.contains(&format!("\"equity\":{f2:?}")) || page.contains(&format!("\"equity\":{f2}")),
        "the curve is in the page"
    );
    assert!(page.contains("Account main"));
    let js = env
        .albra(&["report", "--type", "daily", "--on", &on, "-o", "r.json"])
        .await;
    assert!(js.ok(), "{js}");
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(env.dir().join("r.json")).unwrap()).unwrap();
    assert_eq!(saved, r);
    let txt = env
        .albra(&["report", "--type", "daily", "-o", "r.txt"])
        .await;
    assert!(!txt.ok() && txt.stderr.contains(".txt"), "{txt}");
    assert!(!env.dir().join("r.txt").exists());
}
