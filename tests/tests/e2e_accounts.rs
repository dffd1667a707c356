//! Several accounts through the real binaries against loopback Binance servers: `--account`
//! runs one account only, `mode = "single"` runs the main one, two accounts with two base URLs
//! each trade on their own server, and `albra validate` reports each key's permissions.

use albra_core::domain::Timeframe;
use albra_tests::binance_server::{BinanceTestServer, KeyRestrictions, ServerOptions, TestAccount};
use albra_tests::harness::{self, Run, Signal, TestConfig, MAIN_KEY, MAIN_SECRET};
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::path::Path;

const SUB_KEY: &str = "test-sub1-api-key-0123456789";
const SUB_SECRET: &str = "test-sub1-secret-abcdefghijklmno";

fn account(key: &str, secret: &str) -> TestAccount {
    TestAccount {
        api_key: key.into(),
        api_secret: secret.into(),
        wallet_balance: Decimal::from(10_000),
    }
}

/// A server with the real candles at the first EMA_CROSS signal, holding `accounts`.
async fn server(signal: Signal, accounts: Vec<TestAccount>) -> BinanceTestServer {
    let mut candles = HashMap::new();
    candles.insert("BTCUSDT".to_string(), harness::btc_15m());
    BinanceTestServer::start(ServerOptions {
        candles,
        base_tf_ms: Timeframe::M15.millis(),
        accounts,
        start_time_ms: signal.eval_time(),
    })
    .await
}

fn first_signal() -> Signal {
    harness::signals(&harness::btc_15m(), 1000, 0, 1)[0]
}

/// The harness's one-account config with `top` before it and `sub1` (keys SUB1_*, EMA_CROSS)
/// after it; `main_extra` goes into the main account's entry.
fn write_config(dir: &Path, top: &str, main_extra: &str, sub_extra: &str) {
    let path = harness::write_config(dir, &TestConfig::default());
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("id = \"main\"\n", &format!("id = \"main\"\n{main_extra}\n"));
    let text = format!(
        "{top}\n{text}\n[[accounts]]\nid = \"sub1\"\nkey_source = \"env:SUB1\"\nstrategies = [\"EMA_CROSS\"]\n{sub_extra}\n"
    );
    std::fs::write(path, text).unwrap();
}

fn sub_env() -> Vec<(&'static str, String)> {
    vec![
        ("SUB1_API_KEY", SUB_KEY.to_string()),
        ("SUB1_API_SECRET", SUB_SECRET.to_string()),
    ]
}

async fn evaluator(dir: &Path, url: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--timeframe",
        "15m",
        "--config",
        "albra.toml",
        "--state",
        "state",
    ];
    args.extend(extra);
    harness::run("evaluator", dir, url, &args, &sub_env()).await
}

fn entries(s: &BinanceTestServer, key: &str) -> usize {
    s.orders(key).len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_flag_runs_that_account_only_and_refuses_unknown_or_disabled_ones() {
    let signal = first_signal();
    let s = server(
        signal,
        vec![account(MAIN_KEY, MAIN_SECRET), account(SUB_KEY, SUB_SECRET)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "", "", "");
    for (asked, says) in [("nope", "no such account"), ("off", "disabled")] {
        if asked == "off" {
            write_config(dir.path(), "", "", "[[accounts]]\nid = \"off\"\nenabled = false\nkey_source = \"env:OFF\"\nstrategies = [\"EMA_CROSS\"]");
        }
        let r = evaluator(dir.path(), &s.url, &["--account", asked]).await;
        assert_eq!(r.code, Some(2), "{r}");
        assert!(r.stderr.contains(&format!("--account {asked}")), "{r}");
        assert!(
            r.stderr.contains(says) && r.stderr.contains("main, sub1"),
            "{r}"
        );
    }
    // The local scheduler refuses the same way before it starts.
    let r = harness::run(
        "albra",
        dir.path(),
        &s.url,
        &[
            "run",
            "--account",
            "nope",
            "--config",
            "albra.toml",
            "--state",
            "state",
        ],
        &sub_env(),
    )
    .await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("--account nope") && r.stderr.contains("main, sub1"),
        "{r}"
    );
    assert!(s.requests().is_empty(), "nothing was asked of the exchange");
    let r = evaluator(dir.path(), &s.url, &["--account", "sub1"]).await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    assert_eq!(entries(&s, SUB_KEY), 1, "sub1's entry");
    assert_eq!(entries(&s, MAIN_KEY), 0, "main was not run");
    let main_reads = s
        .requests()
        .iter()
        .filter(|q| q.api_key.as_deref() == Some(MAIN_KEY))
        .count();
    assert_eq!(main_reads, 0, "no signed call with main's key");
    // Without the flag every enabled account runs: main enters now, sub1's candle is done.
    let r = evaluator(dir.path(), &s.url, &[]).await;
    assert!(r.ok(), "{r}");
    assert_eq!((entries(&s, MAIN_KEY), entries(&s, SUB_KEY)), (1, 1), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_mode_runs_only_the_main_account() {
    let signal = first_signal();
    let s = server(
        signal,
        vec![account(MAIN_KEY, MAIN_SECRET), account(SUB_KEY, SUB_SECRET)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // sub1 is marked main: single mode runs it and not the first listed.
    write_config(dir.path(), "mode = \"single\"", "", "main = true");
    let r = evaluator(dir.path(), &s.url, &[]).await;
    assert!(r.ok() && r.stdout.contains("entered"), "{r}");
    assert_eq!((entries(&s, MAIN_KEY), entries(&s, SUB_KEY)), (0, 1), "{r}");
    let r = evaluator(dir.path(), &s.url, &["--account", "main"]).await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("main account `sub1`"), "{r}");
    let r = harness::run(
        "position-sync",
        dir.path(),
        &s.url,
        &["--config", "albra.toml", "--state", "state"],
        &sub_env(),
    )
    .await;
    assert!(r.ok(), "{r}");
    assert_eq!(entries(&s, MAIN_KEY), 0);
    assert!(s
        .requests()
        .iter()
        .all(|q| q.api_key.as_deref() != Some(MAIN_KEY)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_on_two_base_urls_each_trade_on_their_own_server() {
    let signal = first_signal();
    let a = server(signal, vec![account(MAIN_KEY, MAIN_SECRET)]).await;
    let b = server(signal, vec![account(SUB_KEY, SUB_SECRET)]).await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "", "", &format!("base_url = \"{}\"", b.url));
    let path = dir.path().join("albra.toml");
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "[binance]\n",
        &format!("[binance]\nbase_url = \"{}\"\n", a.url),
        1,
    );
    std::fs::write(&path, text).unwrap();
    // The environment's URL would win over both: this test runs without it.
    let mut c = harness::command("evaluator", dir.path(), "unused", &sub_env());
    c.env_remove("ALBRA_BINANCE_URL").args([
        "--timeframe",
        "15m",
        "--config",
        "albra.toml",
        "--state",
        "state",
    ]);
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .unwrap()
        .unwrap();
    let r = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(r.ok(), "{r}");
    assert_eq!(entries(&a, MAIN_KEY), 1, "main's entry on its server: {r}");
    assert_eq!(entries(&b, SUB_KEY), 1, "sub1's entry on its server: {r}");
    assert_eq!(a.open_algo_orders(MAIN_KEY).len(), 1, "main's stop");
    assert_eq!(b.open_algo_orders(SUB_KEY).len(), 1, "sub1's stop");
    for (s, other) in [(&a, SUB_KEY), (&b, MAIN_KEY)] {
        assert!(
            s.requests()
                .iter()
                .all(|q| q.api_key.as_deref() != Some(other)),
            "a key reached the other account's server"
        );
        // Each host's trading rules were read from that host.
        assert!(s.count("GET", "/fapi/v1/exchangeInfo") >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_warns_of_withdrawals_and_no_ip_restriction_and_fails_without_futures() {
    let signal = first_signal();
    let s = server(
        signal,
        vec![account(MAIN_KEY, MAIN_SECRET), account(SUB_KEY, SUB_SECRET)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "", "", "");
    let env = sub_env();
    let validate = || {
        harness::run(
            "albra",
            dir.path(),
            &s.url,
            &["validate", "--config", "albra.toml"],
            &env,
        )
    };
    let r = validate().await;
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout
            .contains("account main: key permissions (http://127.0.0.1"),
        "{r}"
    );
    assert!(r.stdout.contains("reading, futures, IP-restricted"), "{r}");
    assert!(!r.stdout.contains("WARN account"), "{r}");
    s.set_key_restrictions(
        SUB_KEY,
        KeyRestrictions {
            ip_restrict: false,
            enable_withdrawals: true,
            ..KeyRestrictions::default()
        },
    );
    let r = validate().await;
    assert!(r.ok(), "warnings only: {r}");
    assert!(
        r.stdout.contains("WARN account sub1: the key can WITHDRAW"),
        "{r}"
    );
    assert!(
        r.stdout
            .contains("WARN account sub1: the key is NOT IP-restricted"),
        "{r}"
    );
    assert!(!r.stdout.contains("WARN account main"), "{r}");
    s.set_key_restrictions(
        MAIN_KEY,
        KeyRestrictions {
            enable_futures: false,
            ..KeyRestrictions::default()
        },
    );
    let r = validate().await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr
            .contains("the key of main has no futures permission"),
        "{r}"
    );
    for secret in [MAIN_SECRET, SUB_SECRET] {
        assert!(
            !r.stdout.contains(secret) && !r.stderr.contains(secret),
            "secret printed"
        );
    }
    assert_eq!(s.count("GET", "/sapi/v1/account/apiRestrictions"), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_strategies_on_one_symbol_are_warned_of_at_validate_and_job_start() {
    let signal = first_signal();
    let s = server(
        signal,
        vec![account(MAIN_KEY, MAIN_SECRET), account(SUB_KEY, SUB_SECRET)],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "", "", "");
    let path = dir.path().join("albra.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen(
            "[[accounts]]\nid = \"main\"",
            "[[strategies]]\nname = \"TFPE\"\ntimeframe = \"1h\"\nsymbols = [\"BTCUSDT\"]\nleverage = 3\nsize_pct = 0.1\n\n[[accounts]]\nid = \"main\"",
            1,
        )
        .replace(
            "id = \"sub1\"\nkey_source = \"env:SUB1\"\nstrategies = [\"EMA_CROSS\"]",
            "id = \"sub1\"\nkey_source = \"env:SUB1\"\nstrategies = [\"EMA_CROSS\", \"TFPE\"]",
        );
    std::fs::write(&path, text).unwrap();
    let warning = "account sub1: strategies EMA_CROSS, TFPE all trade BTCUSDT";
    let env = sub_env();
    let r = harness::run(
        "albra",
        dir.path(),
        &s.url,
        &["validate", "--config", "albra.toml"],
        &env,
    )
    .await;
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains(&format!("WARN {warning}")), "{r}");
    assert!(!r.stdout.contains("account main: strategies"), "{r}");
    let r = harness::run(
        "position-sync",
        dir.path(),
        &s.url,
        &["--config", "albra.toml", "--state", "state"],
        &env,
    )
    .await;
    assert!(r.ok(), "{r}");
    assert_eq!(r.stderr.matches(warning).count(), 1, "{r}");
}
