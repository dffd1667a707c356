//! `albra download` through the real binaries against the Binance-speaking loopback server: a fresh
//! download over several pages holds exactly the server's closed candles and every 8-hour funding
//! rate; reruns fetch only what the files lack (new candles after the clock moved, a truncated
//! tail, days before the file's first candle) and leave an up-to-date file untouched; an outage in
//! the exchange's data is reported, never filled; 429s with Retry-After are waited out; a bad
//! `--from` exits 2 naming it.

use albra_core::data::{self, FundingRate};
use albra_core::domain::Candle;
use albra_tests::binance_server::{
    funding_rate_at, BinanceTestServer, FaultKind, FaultRule, ServerOptions, When,
    FUNDING_INTERVAL_MS,
};
use albra_tests::harness::{self, Run};
use std::collections::HashMap;
use std::path::Path;

const M15: i64 = 900_000;
const DAY: i64 = 86_400_000;

async fn server(candles: &[Candle], now: i64) -> BinanceTestServer {
    let map = HashMap::from([
        ("BTCUSDT".to_string(), candles.to_vec()),
        ("ETHUSDT".to_string(), candles.to_vec()),
    ]);
    BinanceTestServer::start(ServerOptions {
        candles: map,
        base_tf_ms: M15,
        accounts: vec![],
        start_time_ms: now,
    })
    .await
}

async fn download(s: &BinanceTestServer, dir: &Path, args: &[&str]) -> Run {
    let mut all = vec!["download", "--dir", "data"];
    all.extend_from_slice(args);
    harness::run("albra", dir, &s.url, &all, &[]).await
}

/// `download` of BTCUSDT 15m candles from `from` (to `to`, inclusive, when given).
async fn download_btc(s: &BinanceTestServer, dir: &Path, from: &str, to: Option<&str>) -> Run {
    let mut args = vec!["--symbol", "BTCUSDT", "--timeframe", "15m", "--from", from];
    if let Some(to) = to {
        args.extend(["--to", to]);
    }
    download(s, dir, &args).await
}

fn day_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

fn file_candles(dir: &Path, symbol: &str) -> Vec<Candle> {
    data::load_csv(&dir.join(format!("data/{symbol}-perp-15m.csv")))
        .unwrap()
        .candles
}

fn file_funding(dir: &Path, symbol: &str) -> Vec<FundingRate> {
    data::load_funding_csv(&dir.join(format!("data/{symbol}-funding.csv"))).unwrap()
}

/// What the server settles in `[from, until)`: every 8 hours from its first candle, the mark price
/// being the open of the candle containing the settlement.
fn expected_funding(candles: &[Candle], from: i64, until: i64) -> Vec<FundingRate> {
    let first = from.max(candles[0].open_time);
    let k0 = (first + FUNDING_INTERVAL_MS - 1).div_euclid(FUNDING_INTERVAL_MS);
    (k0..)
        .map(|k| k * FUNDING_INTERVAL_MS)
        .take_while(|t| *t < until)
        .map(|t| FundingRate {
            time: t,
            rate: funding_rate_at(t),
            mark_price: candles
                .iter()
                .find(|c| c.open_time <= t && t < c.open_time + M15)
                .map(|c| c.open.get()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_resume_and_leave_up_to_date_files_alone() {
    let candles = harness::btc_15m();
    let t0 = candles[0].open_time;
    // Candle 4000 is forming: 4000 closed candles, three pages of 1500.
    let mut now = candles[4000].open_time + 7 * 60_000;
    let s = server(&candles, now).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Start two days in: the first run leaves the first days out.
    let from2 = t0 - t0.rem_euclid(DAY) + 2 * DAY;
    let r = download(
        &s,
        d,
        &[
            "--symbol",
            "BTCUSDT,ethusdt",
            "--timeframe",
            "15m",
            "--from",
            &day_of(from2),
        ],
    )
    .await;
    assert!(r.ok(), "{r}");
    let skip = candles.iter().position(|c| c.open_time >= from2).unwrap();
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        assert_eq!(file_candles(d, symbol), candles[skip..4000], "{symbol}");
        assert_eq!(
            file_funding(d, symbol),
            expected_funding(&candles, from2, now + 1)
        );
    }
    assert!(
        r.stdout.contains(&format!(
            "BTCUSDT 15m: data/BTCUSDT-perp-15m.csv: {} candles added, {} in total",
            4000 - skip,
            4000 - skip
        )),
        "{r}"
    );
    assert!(r.stdout.contains("no gaps"), "{r}");
    let pages = s
        .requests()
        .iter()
        .filter(|q| q.path == "/fapi/v1/klines" && q.params["symbol"] == "BTCUSDT")
        .count();
    assert!(pages >= 3, "several pages: {pages}");
    assert!(
        s.requests()
            .iter()
            .filter(|q| q.path == "/fapi/v1/klines")
            .all(|q| q.params["limit"] == "1500"),
        "pages of 1500"
    );
    assert_eq!(r.stderr, "", "quiet when stderr is not a terminal");

    // Nothing new: both files stay as they are.
    let csv = d.join("data/BTCUSDT-perp-15m.csv");
    let before = std::fs::read(&csv).unwrap();
    let r = download_btc(&s, d, &day_of(from2), None).await;
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout.contains("data/BTCUSDT-perp-15m.csv is up to date"),
        "{r}"
    );
    assert!(
        r.stdout.contains("data/BTCUSDT-funding.csv is up to date"),
        "{r}"
    );
    assert_eq!(std::fs::read(&csv).unwrap(), before);

    // The clock moves on 1000 candles, the file loses its last 100 rows, and --from goes back two
    // days: the rerun fetches the head and the tail only, and the file is continuous.
    now += 1000 * M15;
    s.set_time(now);
    let text = String::from_utf8(before).unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(&csv, kept[..kept.len() - 100].join("\n") + "\n").unwrap();
    let served = s.requests().len();
    let r = download_btc(&s, d, &day_of(t0), None).await;
    assert!(r.ok(), "{r}");
    assert_eq!(file_candles(d, "BTCUSDT"), candles[..5000]);
    assert!(
        r.stdout.contains(&format!(
            "{} candles added, 5000 in total",
            5000 - (4000 - skip - 100)
        )),
        "{r}"
    );
    assert_eq!(
        file_funding(d, "BTCUSDT"),
        expected_funding(&candles, t0, now + 1)
    );
    let asked: Vec<i64> = s.requests()[served..]
        .iter()
        .filter(|q| q.path == "/fapi/v1/klines")
        .map(|q| q.params["startTime"].parse().unwrap())
        .collect();
    assert_eq!(asked[0], t0 - t0.rem_euclid(DAY), "the head from --from");
    assert!(
        asked.contains(&candles[4000 - 100 - 1].open_time.saturating_add(M15)),
        "the tail from after the last row kept: {asked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_reported_not_filled_and_to_is_inclusive() {
    let mut candles = harness::btc_15m();
    candles.truncate(2000);
    let gone = candles.drain(1000..1012).next().unwrap().open_time;
    let now = candles.last().unwrap().open_time + DAY;
    let s = server(&candles, now).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let to = day_of(candles[1500].open_time);
    let until = candles[1500].open_time - candles[1500].open_time.rem_euclid(DAY) + DAY;
    let r = download_btc(&s, d, &day_of(candles[0].open_time), Some(&to)).await;
    assert!(r.ok(), "{r}");
    let want: Vec<Candle> = candles
        .iter()
        .filter(|c| c.open_time < until)
        .cloned()
        .collect();
    assert_eq!(file_candles(d, "BTCUSDT"), want);
    assert_eq!(
        want.last().unwrap().open_time,
        until - M15,
        "--to's last candle, 23:45"
    );
    let line = format!(
        "gap: 12 candle(s) missing after {}",
        albra_core::domain::utc_minute(gone - M15)
    );
    assert!(
        r.stdout.contains("1 gap(s) in Binance's data (not filled)") && r.stdout.contains(&line),
        "{r}"
    );
    assert_eq!(
        file_funding(d, "BTCUSDT"),
        expected_funding(&candles, 0, until)
    );
    // A rerun keeps reporting it, and fetches nothing inside it.
    let r = download_btc(&s, d, &day_of(candles[0].open_time), Some(&to)).await;
    assert!(
        r.ok() && r.stdout.contains("is up to date") && r.stdout.contains(&line),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_waited_out() {
    let mut candles = harness::btc_15m();
    candles.truncate(3200);
    let now = candles.last().unwrap().open_time + DAY;
    let s = server(&candles, now).await;
    // The first three klines requests get 429 Retry-After 1: the client's own three attempts,
    // then the download waits and asks again.
    s.add_rule(
        FaultRule::new(
            "GET",
            "/fapi/v1/klines",
            FaultKind::RateLimit429 { retry_after_s: 1 },
        )
        .when(When::Next(3)),
    );
    s.add_rule(
        FaultRule::new(
            "GET",
            "/fapi/v1/fundingRate",
            FaultKind::RateLimit429 { retry_after_s: 1 },
        )
        .when(When::Nth(1)),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r = download_btc(&s, d, &day_of(candles[0].open_time), None).await;
    assert!(r.ok(), "{r}");
    assert_eq!(file_candles(d, "BTCUSDT"), candles);
    assert_eq!(
        file_funding(d, "BTCUSDT"),
        expected_funding(&candles, 0, now + 1)
    );
    assert_eq!(s.fired_faults().len(), 4);
    let klines: Vec<_> = s
        .requests()
        .into_iter()
        .filter(|q| q.path == "/fapi/v1/klines")
        .collect();
    assert_eq!(
        klines[3].params["startTime"], klines[0].params["startTime"],
        "the same page again"
    );
    assert!(
        klines[3].time - klines[2].time >= 1000,
        "Retry-After obeyed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_days_exit_2_naming_the_flag() {
    let s = server(&harness::btc_15m()[..10], 1_751_700_000_000).await;
    let dir = tempfile::tempdir().unwrap();
    let r = download(
        &s,
        dir.path(),
        &[
            "--symbol",
            "BTCUSDT",
            "--timeframe",
            "15m",
            "--from",
            "2024-13-01",
        ],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr.contains("--from") && r.stderr.contains("2024-13-01"),
        "{r}"
    );
    let r = download(
        &s,
        dir.path(),
        &[
            "--symbol",
            "BTCUSDT",
            "--timeframe",
            "15m",
            "--from",
            "2024-02-01",
            "--to",
            "2024-01-31",
        ],
    )
    .await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(
        r.stderr
            .contains("--to 2024-01-31 is before --from 2024-02-01"),
        "{r}"
    );
    assert!(s.requests().is_empty(), "nothing asked");
    assert!(!dir.path().join("data").exists());
    let help = harness::run("albra", dir.path(), &s.url, &["download", "--help"], &[]).await;
    assert!(
        help.ok()
            && help
                .stdout
                .contains("albra download --symbol BTCUSDT,ETHUSDT"),
        "{help}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_download_keeps_its_pages_and_resumes() {
    let mut candles = harness::btc_15m();
    candles.truncate(4000);
    let now = candles.last().unwrap().open_time + DAY;
    let s = server(&candles, now).await;
    // The second page is refused (-1021 is not retried on a public request): the run stops.
    s.add_rule(
        FaultRule::new("GET", "/fapi/v1/klines", FaultKind::Timestamp1021).when(When::Nth(2)),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let from = day_of(candles[0].open_time);
    let args = [
        "--symbol",
        "BTCUSDT",
        "--timeframe",
        "15m",
        "--from",
        from.as_str(),
    ];
    let r = download(&s, d, &args).await;
    assert_eq!(r.code, Some(1), "{r}");
    assert!(
        r.stderr.contains("BTCUSDT 15m: download stopped (1500 new candles saved in data/BTCUSDT-perp-15m.csv; rerun to resume)"),
        "{r}"
    );
    assert_eq!(
        file_candles(d, "BTCUSDT"),
        candles[..1500],
        "the first page, whole"
    );
    let r = download(&s, d, &args).await;
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout.contains("2500 candles added, 4000 in total"),
        "{r}"
    );
    assert_eq!(file_candles(d, "BTCUSDT"), candles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_names_binance_when_the_environment_does_not() {
    let candles = &harness::btc_15m()[..300];
    let s = server(candles, candles[299].open_time + DAY).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The tests' usual config, with Binance's URL in it.
    let written = harness::write_config(d, &harness::TestConfig::default());
    let text = std::fs::read_to_string(written).unwrap().replacen(
        "[binance]\n",
        &format!("[binance]\nbase_url = \"{}\"\n", s.url),
        1,
    );
    std::fs::create_dir(d.join("config")).unwrap();
    std::fs::write(d.join("config/albra.toml"), text).unwrap();
    let from = day_of(candles[0].open_time);
    let args = [
        "download",
        "--symbol",
        "BTCUSDT",
        "--timeframe",
        "1h",
        "--from",
        &from,
    ];
    // An empty ALBRA_BINANCE_URL counts as unset: the config's base_url is used.
    let unset = [("ALBRA_BINANCE_URL", String::new())];
    let r = harness::run("albra", d, "", &args, &unset).await;
    assert!(r.ok(), "{r}");
    let mut hours: Vec<i64> = candles.iter().map(|c| c.open_time / 3_600_000).collect();
    hours.dedup();
    let hours = hours.len();
    assert_eq!(
        data::load_csv(&d.join("data/BTCUSDT-perp-1h.csv"))
            .unwrap()
            .len(),
        hours
    );
    // A config named but missing is an error naming it, before anything is asked.
    let asked = s.requests().len();
    let mut named = args.to_vec();
    named.extend(["--config", "nope.toml"]);
    let r = harness::run("albra", d, &s.url, &named, &[]).await;
    assert_eq!(r.code, Some(2), "{r}");
    assert!(r.stderr.contains("nope.toml"), "{r}");
    assert_eq!(s.requests().len(), asked);
}
