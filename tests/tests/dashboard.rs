//! The dashboard in a real browser: a replay of two accounts fills a store, the real `albra
//! dashboard` serves it, headless Chromium logs in and goes through every page, and every figure
//! it reads back is the one `albra status --json` prints for the same store. Requests without
//! the session get no figure. Screenshots land in `$CARGO_TARGET_DIR/dashboard-screenshots/`.

use albra_tests::browser::Browser;
use albra_tests::harness;
use rust_decimal::Decimal;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "dashboard-test-token-0123456789abcdef";

/// A store filled by a replay of 3,000 15-minute candles with `main` and `sub1` trading.
fn replayed(dir: &Path) {
    let root = albra_tests::moto::workspace_root();
    let config = std::fs::read_to_string(root.join("config/albra.toml")).unwrap();
    let two = config.replacen(
        "id = \"sub1\"\nenabled = false",
        "id = \"sub1\"\nenabled = true",
        1,
    );
    assert_ne!(two, config, "config/albra.toml's sub1 entry changed shape");
    std::fs::write(dir.join("albra.toml"), two).unwrap();
    let src = std::fs::read_to_string(root.join("data/BTCUSDT-perp-15m.csv")).unwrap();
    let rows: Vec<&str> = src.lines().take(3001).collect();
    std::fs::write(dir.join("BTCUSDT-perp-15m.csv"), rows.join("\n") + "\n").unwrap();
    let (code, out, err) = albra(dir, &["replay", "--data", "BTCUSDT-perp-15m.csv"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
}

fn albra(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let o = Command::new(harness::bin("albra"))
        .current_dir(dir)
        .args(args)
        .args(["--config", "albra.toml", "--state", "state/replay"])
        .env("ALBRA_BINANCE_URL", "http://127.0.0.1:9")
        .env_remove("ALBRA_CONFIG")
        .env_remove("ALBRA_STATE")
        .env_remove("ALBRA_DASHBOARD_TOKEN")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

/// The running dashboard and its address; killed when dropped.
struct Served {
    child: Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Served {
    let mut child = Command::new(harness::bin("albra"))
        .current_dir(dir)
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .args(["--data", "BTCUSDT-perp-15m.csv"])
        .args(["--config", "albra.toml", "--state", "state/replay"])
        .env("ALBRA_DASHBOARD_TOKEN", TOKEN)
        .env("ALBRA_BINANCE_URL", "http://127.0.0.1:9")
        .env_remove("ALBRA_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    Served { child, url }
}

fn screenshots() -> PathBuf {
    // tests/ → the target dir's tmp: CARGO_TARGET_TMPDIR is <target>/tmp.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("dashboard-screenshots")
}

/// A figure as the pages and the bot lay it out: two decimals, `round_dp`.
fn money(v: &Value) -> String {
    match v.as_str() {
        Some(s) => format!("{:.2}", s.parse::<Decimal>().unwrap().round_dp(2)),
        None => "-".into(),
    }
}

/// Without the session: pages send to the login, data is refused, and no answer carries a
/// figure of the store.
async fn nothing_without_a_session(url: &str, status: &Value) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let equity = money(&status["accounts"][0]["figures"]["equity"]);
    for page in [
        "/",
        "/equity",
        "/trades",
        "/performance",
        "/chart?symbol=BTCUSDT",
    ] {
        let r = http.get(format!("{url}{page}")).send().await.unwrap();
        assert_eq!(r.status(), 303, "{page}");
        let to = r.headers()["location"].to_str().unwrap().to_string();
        assert!(to.starts_with("/login?next="), "{page} → {to}");
        assert!(r.text().await.unwrap().is_empty(), "{page} has a body");
    }
    for data in ["/api/status", "/trades.csv"] {
        let r = http.get(format!("{url}{data}")).send().await.unwrap();
        assert_eq!(r.status(), 401, "{data}");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains(&equity) && !body.contains("BTCUSDT"),
            "{data}: {body}"
        );
    }
    // A forged cookie and a wrong token get nothing either.
    let r = http
        .get(format!("{url}/api/status"))
        .header("cookie", "albra_session=9999999999.00")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{url}/login"))
        .form(&[
            ("token", "not-the-token-but-long-enough-000"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
}

/// The overview shows, per account, the figures of `albra status --json`.
async fn overview_matches_status(b: &Browser, status: &Value) {
    for a in status["accounts"].as_array().unwrap() {
        let id = a["account"].as_str().unwrap();
        let sel = |field: &str| format!("section[data-account='{id}'] [data-field='{field}']");
        let f = &a["figures"];
        assert!(f.is_object(), "{id} has figures after the replay");
        for field in ["equity", "peak_equity", "daily_pnl"] {
            assert_eq!(
                b.text(&sel(field)).await.unwrap(),
                money(&f[field]),
                "{id} {field}"
            );
        }
        assert_eq!(
            b.text(&sel("drawdown_pct")).await.unwrap(),
            format!("{}%", money(&f["drawdown_pct"])),
            "{id} drawdown"
        );
        assert_eq!(
            b.text(&sel("mdd_level")).await.unwrap(),
            f["mdd_level"].to_string()
        );
        for field in ["unrealized_pnl", "realized_pnl"] {
            assert_eq!(
                b.text(&sel(field)).await.unwrap(),
                money(&a[field]),
                "{id} {field}"
            );
        }
        assert_eq!(
            b.text(&sel("closed_trades")).await.unwrap(),
            a["closed_trades"].to_string()
        );
        assert_eq!(
            b.attr(&sel("equity"), "data-value")
                .await
                .unwrap()
                .as_deref(),
            f["equity"].as_str(),
            "the exact figure rides along"
        );
        let rows = format!("section[data-account='{id}'] tr.position");
        let positions = a["positions"].as_array().unwrap();
        assert_eq!(
            b.count(&rows).await.unwrap(),
            positions.len(),
            "{id} positions"
        );
        assert!(
            !positions.is_empty(),
            "the replay ends with {id} holding a position"
        );
        let cells = |field: &str| format!("{rows} [data-field='{field}']");
        for (i, p) in positions.iter().enumerate() {
            let plain = |k: &str| p[k].as_str().unwrap_or("-").to_string();
            let got = |field: &'static str| {
                let sel = cells(field);
                async move { b.texts(&sel).await.unwrap()[i].clone() }
            };
            assert_eq!(got("side").await, plain("side"));
            assert_eq!(got("qty").await, plain("qty"));
            assert_eq!(got("entry_price").await, plain("entry_price"));
            assert_eq!(got("mark_price").await, plain("mark_price"));
            assert_eq!(got("stop_loss").await, plain("stop_loss"));
            assert_eq!(got("take_profit").await, plain("take_profit"));
            assert_eq!(got("unrealized_pnl").await, money(&p["unrealized_pnl"]));
        }
        let jobs = a["jobs"].as_array().unwrap();
        let states = b
            .texts(&format!(
                "section[data-account='{id}'] tr.job [data-field='state']"
            ))
            .await
            .unwrap();
        let expect: Vec<String> = jobs
            .iter()
            .map(|j| j["state"].as_str().unwrap().replace('_', " "))
            .collect();
        assert_eq!(states, expect, "{id} jobs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_shows_what_the_query_layer_says_and_nothing_without_the_token() {
    let dir = tempfile::tempdir().unwrap();
    replayed(dir.path());
    let (code, out, err) = albra(dir.path(), &["status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    let served = serve(dir.path());
    let url = served.url.clone();
    nothing_without_a_session(&url, &status).await;

    let shots = screenshots();
    let b = Browser::start().await.unwrap();
    // Any page sends to the login; a wrong token is refused there, the right one goes back.
    b.goto(&format!("{url}/trades")).await.unwrap();
    assert!(b
        .current_url()
        .await
        .unwrap()
        .contains("/login?next=%2Ftrades"));
    b.screenshot(shots.join("0-login.png")).await.unwrap();
    b.fill("#token", "not-the-token-but-long-enough-000")
        .await
        .unwrap();
    b.click("#login").await.unwrap();
    b.wait_for("#login-error", Duration::from_secs(5))
        .await
        .unwrap();
    b.fill("#token", TOKEN).await.unwrap();
    b.click("#login").await.unwrap();
    b.wait_for("table.trades", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(b.current_url().await.unwrap(), format!("{url}/trades"));
    let session = b
        .cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name == "albra_session")
        .expect("the session cookie");
    assert!(session.http_only && session.secure);
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    assert_eq!(
        b.eval("return document.cookie").await.unwrap(),
        "",
        "no script reads the session"
    );

    // Overview: every figure is the status query's.
    b.goto(&format!("{url}/")).await.unwrap();
    b.wait_for("section.account", Duration::from_secs(5))
        .await
        .unwrap();
    overview_matches_status(&b, &status).await;
    assert_eq!(
        b.attr("meta[http-equiv='refresh']", "content")
            .await
            .unwrap()
            .as_deref(),
        Some("30"),
        "the overview reloads itself"
    );
    b.screenshot(shots.join("1-overview.png")).await.unwrap();

    // The JSON the page is built from is the CLI's, but for the answer's own time.
    let cookie = format!("albra_session={}", session.value);
    let get = |path: &str| {
        reqwest::Client::new()
            .get(format!("{url}{path}"))
            .header("cookie", cookie.clone())
            .send()
    };
    let api: Value = get("/api/status").await.unwrap().json().await.unwrap();
    let strip = |mut v: Value| {
        v["at"] = Value::Null;
        for a in v["accounts"].as_array_mut().unwrap() {
            a["heartbeat_age_ms"] = Value::Null;
            for j in a["jobs"].as_array_mut().unwrap() {
                j["age_ms"] = Value::Null;
            }
        }
        v
    };
    assert_eq!(strip(api), strip(status.clone()));

    // Equity: one curve per account and the combined one, drawn.
    b.goto(&format!("{url}/equity?days=365")).await.unwrap();
    b.wait_for("section.curve canvas", Duration::from_secs(5))
        .await
        .unwrap();
    let charts = b.eval("return window.albraCharts").await.unwrap();
    let names: Vec<&str> = charts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["account"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["main", "sub1", "combined"]);
    let shown = b
        .texts("section.curve [data-field='points']")
        .await
        .unwrap();
    for (c, n) in charts.as_array().unwrap().iter().zip(&shown) {
        assert_eq!(c["points"].to_string(), *n, "the chart draws every point");
        assert_eq!(c["points"], c["drawdown"]);
        assert!(c["points"].as_u64().unwrap() > 100, "{c}");
    }
    b.screenshot(shots.join("2-equity.png")).await.unwrap();

    // Trades: all of them, their PnL the status's realised PnL; a filter narrows; the CSV is
    // the same list.
    let closed: u64 = status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["closed_trades"].as_u64().unwrap())
        .sum();
    let realized: Decimal = status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["realized_pnl"]
                .as_str()
                .unwrap()
                .parse::<Decimal>()
                .unwrap()
        })
        .sum();
    b.goto(&format!("{url}/trades")).await.unwrap();
    assert_eq!(b.text("#trade-count").await.unwrap(), closed.to_string());
    assert_eq!(b.count("tr.trade").await.unwrap() as u64, closed);
    assert_eq!(
        b.text("#trade-pnl").await.unwrap(),
        format!("{:.2}", realized.round_dp(2))
    );
    b.screenshot(shots.join("3-trades.png")).await.unwrap();
    b.goto(&format!("{url}/trades?account=sub1")).await.unwrap();
    let sub1 = &status["accounts"][1];
    assert_eq!(
        b.text("#trade-count").await.unwrap(),
        sub1["closed_trades"].to_string()
    );
    assert_eq!(
        b.text("#trade-pnl").await.unwrap(),
        money(&sub1["realized_pnl"])
    );
    b.goto(&format!(
        "{url}/trades?symbol=ETHUSDT&from=2025-01-01&to=2025-12-31"
    ))
    .await
    .unwrap();
    assert_eq!(b.text("#trade-count").await.unwrap(), "0");
    let csv = get("/trades.csv?account=sub1").await.unwrap();
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("account,strategy,symbol,side,qty,entry_time"));
    assert_eq!(lines.count().to_string(), sub1["closed_trades"].to_string());

    // Performance: each account's total row is its status.
    b.goto(&format!("{url}/performance")).await.unwrap();
    for a in status["accounts"].as_array().unwrap() {
        let id = a["account"].as_str().unwrap();
        let row = format!("tr.perf.total[data-account='{id}']");
        assert_eq!(
            b.text(&format!("{row} [data-field='total_pnl']"))
                .await
                .unwrap(),
            money(&a["realized_pnl"])
        );
        assert_eq!(
            b.text(&format!("{row} [data-field='trades']"))
                .await
                .unwrap(),
            a["closed_trades"].to_string()
        );
    }
    b.screenshot(shots.join("4-performance.png")).await.unwrap();

    // Chart: the replay's candles with every trade's entry, exit and stop, the open positions'
    // entries and their stops as lines.
    b.goto(&format!("{url}/chart?symbol=BTCUSDT&tf=1h"))
        .await
        .unwrap();
    b.wait_for("#candles canvas", Duration::from_secs(5))
        .await
        .unwrap();
    let chart = b.eval("return window.albraChart").await.unwrap();
    assert_eq!(
        chart["candles"].to_string(),
        b.text("#candle-count").await.unwrap()
    );
    assert_eq!(
        chart["marks"].to_string(),
        b.text("#mark-count").await.unwrap()
    );
    let trades: u64 = b.text("#mark-trades").await.unwrap().parse().unwrap();
    let open: usize = status["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["positions"].as_array().unwrap().len())
        .sum();
    assert!(trades > 0 && trades <= closed, "{trades} of {closed}");
    assert_eq!(
        chart["marks"].as_u64().unwrap(),
        3 * trades + open as u64,
        "entry, exit and stop per trade, entry per open position"
    );
    assert_eq!(
        chart["lines"].as_u64().unwrap(),
        open as u64,
        "one stop line each"
    );
    assert_eq!(
        b.count("tr.mark[data-kind='stop']").await.unwrap() as u64,
        trades
    );
    b.screenshot(shots.join("5-chart.png")).await.unwrap();

    // Logging out ends the session.
    b.goto(&format!("{url}/logout")).await.unwrap();
    b.goto(&format!("{url}/")).await.unwrap();
    assert!(b.current_url().await.unwrap().contains("/login"));
    b.close().await.unwrap();
    drop(served);
}

/// Without a token the dashboard does not start, and says what to set.
#[test]
fn no_token_no_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let root = albra_tests::moto::workspace_root();
    std::fs::copy(
        root.join("config/albra.toml"),
        dir.path().join("albra.toml"),
    )
    .unwrap();
    let (code, _, err) = albra(dir.path(), &["dashboard", "--listen", "127.0.0.1:0"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("ALBRA_DASHBOARD_TOKEN"), "{err}");
    let short = Command::new(harness::bin("albra"))
        .current_dir(dir.path())
        .args([
            "dashboard",
            "--listen",
            "127.0.0.1:0",
            "--config",
            "albra.toml",
        ])
        .env("ALBRA_DASHBOARD_TOKEN", "tooShortTok")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&short.stderr);
    assert_ne!(short.status.code(), Some(0));
    assert!(err.contains("at least 24 characters"), "{err}");
    assert!(
        !err.contains("tooShortTok"),
        "the token is never printed: {err}"
    );
}
