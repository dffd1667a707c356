//! `albra download`: closed candles and funding rates of USDⓈ-M perpetuals from Binance's public
//! futures API into the research files (`<SYMBOL>-perp-<TF>.csv`, `<SYMBOL>-funding.csv`).
//!
//! This module owns the download plan (which windows a file lacks), the pagination, the pacing
//! (the minute's request weight and the funding endpoint's own limit, `Retry-After`), the merge
//! with what a file already holds and the atomic replacement of the file. The wire protocol is the
//! Binance client's ([`BinanceClient::klines_between`], [`BinanceClient::funding_rates`]); the
//! file formats are `albra_core::data`'s.
//!
//! A file is only ever replaced whole, through a temporary file in the same folder renamed over
//! it once every page arrived: an interrupted run leaves the previous file as it was, and the
//! rerun resumes from it.

use albra_adapters::app;
use albra_adapters::binance::{
    klines_weight, BinanceClient, BinanceConfig, MAX_FUNDING_RATES, MAX_KLINES,
};
use albra_cli::cli::ConfigFile;
use albra_core::config::Config;
use albra_core::data::{self, FundingRate, Gap};
use albra_core::domain::{Candle, Symbol, Timeframe};
use albra_core::ports::ExchangeError;
use anyhow::{bail, Context, Result};
use chrono::NaiveDate;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Weight per minute the download allows itself: well under Binance's 2400, so the trading jobs
/// sharing the IP keep their headroom.
const WEIGHT_BUDGET: u32 = 1000;
/// Funding-rate requests per five minutes the download allows itself (Binance: 500).
const FUNDING_BUDGET: usize = 400;
const FUNDING_WINDOW: Duration = Duration::from_secs(300);
/// Failed attempts of one page before the download gives up.
const PAGE_ATTEMPTS: u32 = 6;
/// The longest `Retry-After` obeyed; a longer one (an IP ban) ends the run with its length.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
const DAY_MS: i64 = 86_400_000;

/// What to download, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub symbols: Vec<Symbol>,
    pub tf: Timeframe,
    /// First ms of the `--from` day.
    pub from: i64,
    /// First ms after the `--to` day; `None`: up to the last closed candle.
    pub until: Option<i64>,
    pub dir: PathBuf,
}

/// The request from the command line; the error names the flag and value.
pub fn request(
    symbols: &[String],
    tf: Timeframe,
    from: NaiveDate,
    to: Option<NaiveDate>,
    dir: PathBuf,
) -> std::result::Result<Request, String> {
    let mut checked: Vec<Symbol> = Vec::new();
    for s in symbols {
        let upper = s.trim().to_ascii_uppercase();
        if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "--symbol: `{s}` is not a symbol (letters and digits, e.g. BTCUSDT)"
            ));
        }
        let symbol = Symbol::new(upper);
        if !checked.contains(&symbol) {
            checked.push(symbol);
        }
    }
    if let Some(to) = to {
        if to < from {
            return Err(format!("--to {to} is before --from {from}"));
        }
    }
    Ok(Request {
        symbols: checked,
        tf,
        from: day_start(from),
        until: to.map(|d| day_start(d) + DAY_MS),
        dir,
    })
}

fn day_start(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_millis()
}

/// `albra download`: check the request and the config (exit 2), then download every symbol.
/// The config is optional here: when the default `config/albra.toml` does not exist (and neither
/// `--config` nor `ALBRA_CONFIG` named another), Binance is `ALBRA_BINANCE_URL` or mainnet.
pub fn main(
    config: std::result::Result<ConfigFile, String>,
    req: std::result::Result<Request, String>,
) -> ExitCode {
    let checked = req.and_then(|req| binance_config(config).map(|cfg| (req, cfg)));
    let (req, cfg) = match checked {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    albra_cli::exit_code(rt.block_on(async {
        let client = BinanceClient::new(cfg, None).context("Binance client")?;
        run(&client, &req).await
    }))
}

/// The Binance settings of the config file, or the defaults (mainnet unless `ALBRA_BINANCE_URL`)
/// when none is read: downloading needs no account. A named file that is missing is an error.
fn binance_config(
    config: std::result::Result<ConfigFile, String>,
) -> std::result::Result<BinanceConfig, String> {
    match config? {
        ConfigFile::Read(path) => {
            let cfg = Config::load(&path).map_err(|e| e.to_string())?;
            Ok(app::binance_config(&cfg))
        }
        ConfigFile::BuiltIn { .. } => Ok(BinanceConfig {
            base_url: BinanceConfig::resolve_url(None),
            ..BinanceConfig::default()
        }),
    }
}

/// Download every symbol of `req`, one after the other, printing a summary per file.
pub async fn run(client: &BinanceClient, req: &Request) -> Result<()> {
    std::fs::create_dir_all(&req.dir)
        .with_context(|| format!("--dir {}: cannot create the folder", req.dir.display()))?;
    let mut pacer = Pacer::new(client.clone());
    let progress = std::io::stderr().is_terminal();
    for symbol in &req.symbols {
        let candles = download_candles(&mut pacer, req, symbol, progress).await?;
        println!("{candles}");
        let funding = download_funding(&mut pacer, req, symbol).await?;
        println!("{funding}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Candles

/// What a candle download did to its file.
struct CandleSummary {
    label: String,
    tf: Timeframe,
    file: PathBuf,
    added: usize,
    candles: Vec<Candle>,
    gaps: Vec<Gap>,
}

impl std::fmt::Display for CandleSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.display();
        match (self.candles.first(), self.candles.last()) {
            (Some(first), Some(last)) => {
                if self.added == 0 {
                    write!(f, "{}: {file} is up to date", self.label)?;
                } else {
                    write!(f, "{}: {file}: {} candles added", self.label, self.added)?;
                }
                write!(
                    f,
                    ", {} in total, {} to {}, ",
                    self.candles.len(),
                    utc(first.open_time),
                    utc(last.open_time)
                )?;
                match self.gaps.len() {
                    0 => write!(f, "no gaps")?,
                    n => write!(f, "{n} gap(s) in Binance's data (not filled)")?,
                }
                for g in &self.gaps {
                    let ms = self.tf.millis();
                    let (first, last) = (
                        g.after_open_time + ms,
                        g.after_open_time + g.missing_candles as i64 * ms,
                    );
                    write!(
                        f,
                        "\n  gap: {g} (none opened from {} to {})",
                        utc(first),
                        utc(last)
                    )?;
                }
                Ok(())
            }
            _ => write!(
                f,
                "{}: no closed candle in the range; {file} not written",
                self.label
            ),
        }
    }
}

async fn download_candles(
    pacer: &mut Pacer,
    req: &Request,
    symbol: &Symbol,
    progress: bool,
) -> Result<CandleSummary> {
    let tf = req.tf;
    let file = req.dir.join(format!("{symbol}-perp-{tf}.csv"));
    let label = format!("{symbol} {tf}");
    let existing = read_candles(&file, tf)?;
    let now = pacer.exchange_now().await?;
    // Candles opening from the forming one on are never asked for.
    let end = req.until.unwrap_or(i64::MAX).min(tf.open_of(now));
    let span = existing.first().zip(existing.last());
    let (head_w, tail_w) = candle_windows(
        span.map(|(a, b)| (a.open_time, b.open_time)),
        req.from,
        end,
        tf,
    );
    let mut meter = Meter::new(&label, progress, expected(&[head_w, tail_w], tf));
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    // A part of the head is dropped on failure: the file must start at --from or at its old first
    // candle, or the next run would take the hole for one of Binance's gaps. What arrived of the
    // tail is kept: it continues the file, and the next run resumes after it.
    let fetched = match fetch_candles(pacer, (symbol, tf), head_w, now, &mut meter, &mut head).await
    {
        Ok(()) => fetch_candles(pacer, (symbol, tf), tail_w, now, &mut meter, &mut tail).await,
        Err(e) => Err(e),
    };
    meter.done();
    if fetched.is_err() {
        head.clear();
    }
    let added = head.len() + tail.len();
    let candles = merge_candles(head, existing, tail, tf).with_context(|| label.clone())?;
    if added > 0 {
        write_atomic(&file, &data::candles_csv(&candles))?;
    }
    fetched.with_context(|| {
        format!(
            "{label}: download stopped ({added} new candles saved in {}; rerun to resume)",
            file.display()
        )
    })?;
    let gaps = data::find_gaps(&candles, tf);
    Ok(CandleSummary {
        label,
        tf,
        file,
        added,
        candles,
        gaps,
    })
}

/// The candles a file already holds (none when it does not exist), checked to be of `tf`.
fn read_candles(file: &Path, tf: Timeframe) -> Result<Vec<Candle>> {
    if !file.exists() {
        return Ok(Vec::new());
    }
    let series = data::load_csv(file)?;
    if series.timeframe != tf {
        bail!(
            "{}: holds {} candles, not {tf}; move it away or download another timeframe",
            file.display(),
            series.timeframe
        );
    }
    Ok(series.candles)
}

/// The windows `[start, end)` a file spanning `span` (its first and last open time) lacks for a
/// download of `[from, end)`: before its first candle, and after its last. Empty windows are
/// `(x, x)`. A file that reaches past `from` or `end` keeps its candles; nothing between its first
/// and last candle is fetched again (a gap there is Binance's).
fn candle_windows(
    span: Option<(i64, i64)>,
    from: i64,
    end: i64,
    tf: Timeframe,
) -> ((i64, i64), (i64, i64)) {
    let from = tf.open_of(from + tf.millis() - 1);
    match span {
        None => ((from, from), (from, end.max(from))),
        Some((first, last)) => {
            let head = (from, first.min(end).max(from));
            let tail_start = last + tf.millis();
            (head, (tail_start, end.max(tail_start)))
        }
    }
}

/// Candles a set of windows can hold at most.
fn expected(windows: &[(i64, i64)], tf: Timeframe) -> u64 {
    windows
        .iter()
        .map(|(s, e)| ((e - s).max(0) / tf.millis()) as u64)
        .sum()
}

/// Every closed candle in `window` into `out`, page after page (each from just after the last one
/// received); on failure `out` holds the pages that arrived.
async fn fetch_candles(
    pacer: &mut Pacer,
    (symbol, tf): (&Symbol, Timeframe),
    (start, end): (i64, i64),
    now: i64,
    meter: &mut Meter,
    out: &mut Vec<Candle>,
) -> Result<()> {
    let mut from = start;
    while from < end {
        pacer
            .before_klines(klines_weight(MAX_KLINES), meter)
            .await?;
        let client = pacer.client.clone();
        let page = with_retries("GET /fapi/v1/klines", meter, || {
            client.klines_between(symbol, tf, (from, end), MAX_KLINES, now)
        })
        .await?;
        let Some(last) = page.last() else { break };
        from = last.open_time + tf.millis();
        meter.advance(page.len() as u64, last.open_time);
        out.extend(page);
    }
    Ok(())
}

/// `head`, then the file's candles, then `tail`, checked to be strictly increasing and aligned to
/// `tf` (so the file written is continuous but for Binance's own gaps).
fn merge_candles(
    head: Vec<Candle>,
    existing: Vec<Candle>,
    tail: Vec<Candle>,
    tf: Timeframe,
) -> Result<Vec<Candle>> {
    let mut all = head;
    all.extend(existing);
    all.extend(tail);
    for (i, c) in all.iter().enumerate() {
        if c.open_time.rem_euclid(tf.millis()) != 0 {
            bail!("candle at {} is not aligned to {tf}", utc(c.open_time));
        }
        if i > 0 && all[i - 1].open_time >= c.open_time {
            bail!(
                "candles out of order: {} after {}",
                utc(c.open_time),
                utc(all[i - 1].open_time)
            );
        }
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// Funding rates

async fn download_funding(pacer: &mut Pacer, req: &Request, symbol: &Symbol) -> Result<String> {
    let file = req.dir.join(data::funding_file_name(symbol.as_str()));
    let existing = if file.exists() {
        data::load_funding_csv(&file)?
    } else {
        Vec::new()
    };
    let now = pacer.exchange_now().await?;
    // Settlements up to now (included), within the requested days.
    let end = req.until.unwrap_or(i64::MAX).min(now + 1);
    let span = existing
        .first()
        .zip(existing.last())
        .map(|(a, b)| (a.time, b.time));
    let (head_w, tail_w) = funding_windows(span, req.from, end);
    let context = || {
        format!(
            "{symbol} funding: download stopped, {} left as it was",
            file.display()
        )
    };
    let head = fetch_funding(pacer, symbol, head_w)
        .await
        .with_context(context)?;
    let tail = fetch_funding(pacer, symbol, tail_w)
        .await
        .with_context(context)?;
    let added = head.len() + tail.len();
    let mut rates = head;
    rates.extend(existing);
    rates.extend(tail);
    if rates.windows(2).any(|w| w[0].time >= w[1].time) {
        bail!(
            "{symbol} funding: settlements out of order; {} left as it was",
            file.display()
        );
    }
    if added > 0 {
        write_atomic(&file, &data::funding_csv(&rates))?;
    }
    Ok(funding_summary(symbol, &file, added, &rates))
}

fn funding_summary(symbol: &Symbol, file: &Path, added: usize, rates: &[FundingRate]) -> String {
    let file = file.display();
    match (rates.first(), rates.last()) {
        (Some(first), Some(last)) => {
            let head = if added == 0 {
                format!("{symbol} funding: {file} is up to date")
            } else {
                format!("{symbol} funding: {file}: {added} rates added")
            };
            format!(
                "{head}, {} in total, {} to {}",
                rates.len(),
                utc(first.time),
                utc(last.time)
            )
        }
        _ => format!("{symbol} funding: no settlement in the range; {file} not written"),
    }
}

/// As [`candle_windows`] for settlement times, which follow no fixed grid: before the first one,
/// and from just after the last one.
fn funding_windows(span: Option<(i64, i64)>, from: i64, end: i64) -> ((i64, i64), (i64, i64)) {
    match span {
        None => ((from, from), (from, end.max(from))),
        Some((first, last)) => (
            (from, first.min(end).max(from)),
            (last + 1, end.max(last + 1)),
        ),
    }
}

async fn fetch_funding(
    pacer: &mut Pacer,
    symbol: &Symbol,
    (start, end): (i64, i64),
) -> Result<Vec<FundingRate>> {
    let mut out: Vec<FundingRate> = Vec::new();
    let mut from = start;
    let mut quiet = Meter::new("", false, 0);
    while from < end {
        pacer.before_funding().await;
        let client = pacer.client.clone();
        let page = with_retries("GET /fapi/v1/fundingRate", &mut quiet, || {
            client.funding_rates(symbol, (from, end), MAX_FUNDING_RATES)
        })
        .await?;
        let Some(last) = page.last() else { break };
        from = last.time + 1;
        out.extend(page);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Pacing and retries

/// Keeps the download inside its budgets: the minute's request weight (from the gauge Binance
/// returns with every answer) and the funding endpoint's requests per five minutes.
struct Pacer {
    client: BinanceClient,
    funding_sent: VecDeque<Instant>,
}

impl Pacer {
    fn new(client: BinanceClient) -> Self {
        Pacer {
            client,
            funding_sent: VecDeque::new(),
        }
    }

    /// The exchange clock: measured once, then carried forward by the monotonic clock.
    async fn exchange_now(&self) -> Result<i64> {
        self.client
            .exchange_now(Duration::from_secs(600))
            .await
            .context("GET /fapi/v1/time")
    }

    /// Wait, when a klines request of weight `cost` would take the minute past the budget, until
    /// the exchange's next minute.
    async fn before_klines(&self, cost: u32, meter: &mut Meter) -> Result<()> {
        let used = self.client.used_weight_1m();
        let now = self.exchange_now().await?;
        if let Some(wait) = weight_pause(used, cost, WEIGHT_BUDGET, now) {
            meter.note(&format!(
                "weight {} of {WEIGHT_BUDGET} this minute, waiting {} s",
                used.unwrap_or(0),
                wait.as_secs()
            ));
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Wait while the last five minutes already hold the funding budget's requests.
    async fn before_funding(&mut self) {
        while let Some(oldest) = self.funding_sent.front().copied() {
            if oldest.elapsed() >= FUNDING_WINDOW {
                self.funding_sent.pop_front();
            } else if self.funding_sent.len() >= FUNDING_BUDGET {
                tokio::time::sleep(FUNDING_WINDOW - oldest.elapsed()).await;
            } else {
                break;
            }
        }
        self.funding_sent.push_back(Instant::now());
    }
}

/// How long to wait before a request of weight `cost` when the exchange reported `used` this
/// minute: until just after the exchange's next minute (`now` is its clock, ms) if the request
/// would go past `budget`, else not at all.
fn weight_pause(used: Option<u32>, cost: u32, budget: u32, now: i64) -> Option<Duration> {
    let used = used?;
    if used.saturating_add(cost) <= budget {
        return None;
    }
    // One second past the boundary: the exchange's minute and our estimate of its clock differ
    // by the round trip.
    let to_next_minute = 60_000 - now.rem_euclid(60_000) + 1_000;
    Some(Duration::from_millis(to_next_minute as u64))
}

/// Run `page` until it succeeds, waiting out rate limits (`Retry-After`, at most
/// [`MAX_RETRY_AFTER`]) and transient failures; anything else, or [`PAGE_ATTEMPTS`] failures, ends
/// the download with the error. The client already retried short waits itself.
async fn with_retries<T, F, Fut>(endpoint: &str, meter: &mut Meter, mut page: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, ExchangeError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let error = match page().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let wait = match &error {
            ExchangeError::Retryable { retry_after, .. } if attempt < PAGE_ATTEMPTS => {
                retry_after.unwrap_or(Duration::from_secs(u64::from(attempt)))
            }
            _ if attempt > 1 => {
                return Err(error).context(format!("{endpoint}, attempt {attempt}"))
            }
            _ => return Err(error.into()),
        };
        if wait > MAX_RETRY_AFTER {
            bail!(
                "{endpoint}: Binance asks to wait {} s (Retry-After) — longer than the {} s this \
                 download waits; rerun later, it resumes where it stopped ({error})",
                wait.as_secs(),
                MAX_RETRY_AFTER.as_secs()
            );
        }
        meter.note(&format!(
            "rate limited, waiting {} s",
            wait.as_secs().max(1)
        ));
        tracing::warn!(%endpoint, attempt, wait_ms = wait.as_millis() as u64, error = %error, "download waits");
        tokio::time::sleep(wait).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Progress and files

/// A progress line on stderr, redrawn in place; silent unless stderr is a terminal.
struct Meter {
    label: String,
    on: bool,
    got: u64,
    expected: u64,
}

impl Meter {
    fn new(label: &str, on: bool, expected: u64) -> Self {
        Meter {
            label: label.to_string(),
            on,
            got: 0,
            expected,
        }
    }

    fn advance(&mut self, n: u64, reached: i64) {
        self.got += n;
        let line = format!(
            "{}: {}/{} candles, at {}",
            self.label,
            self.got,
            self.expected,
            utc(reached)
        );
        self.draw(&line);
    }

    fn note(&self, what: &str) {
        self.draw(&format!(
            "{}: {}/{} candles, {what}",
            self.label, self.got, self.expected
        ));
    }

    fn draw(&self, line: &str) {
        if self.on {
            let mut err = std::io::stderr().lock();
            // Padding wipes what a longer previous line left.
            let _ = write!(err, "\r{line:<78}");
            let _ = err.flush();
        }
    }

    /// Clear the line for the summary.
    fn done(&self) {
        self.draw("");
        if self.on {
            eprint!("\r");
        }
    }
}

/// Replace `file` with `text` through a temporary file in the same folder, so the file is either
/// the old one or the new one, never a part.
fn write_atomic(file: &Path, text: &str) -> Result<()> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("{}: cannot create a temporary file", dir.display()))?;
    // A temporary file is private (0600); the data file keeps the mode of the one it replaces,
    // or gets the usual 0644.
    let mode = std::fs::metadata(file).map_or(0o644, |m| m.permissions().mode());
    tmp.write_all(text.as_bytes())
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", file.display()))?;
    tmp.persist(file)
        .map_err(|e| e.error)
        .with_context(|| format!("{}: cannot replace", file.display()))?;
    Ok(())
}

/// `2024-01-01 00:00 UTC`.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    const M15: i64 = 900_000;
    const JAN1: i64 = 1_704_067_200_000; // 2024-01-01 00:00 UTC
    const TF: Timeframe = Timeframe::M15;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn the_request_is_checked_and_in_utc_days() {
        let r = request(
            &["btcusdt".into(), "ETHUSDT".into(), "BTCUSDT".into()],
            TF,
            day("2024-01-01"),
            Some(day("2024-01-02")),
            "d".into(),
        )
        .unwrap();
        assert_eq!(
            r.symbols,
            vec![Symbol::new("BTCUSDT"), Symbol::new("ETHUSDT")]
        );
        assert_eq!(r.from, JAN1);
        assert_eq!(r.until, Some(JAN1 + 2 * DAY_MS), "--to is included");
        let e = request(
            &["BTC-USDT".into()],
            TF,
            day("2024-01-01"),
            None,
            "d".into(),
        );
        assert!(e.unwrap_err().contains("--symbol: `BTC-USDT`"));
        let e = request(
            &["BTCUSDT".into()],
            TF,
            day("2024-02-01"),
            Some(day("2024-01-31")),
            "d".into(),
        );
        assert_eq!(
            e.unwrap_err(),
            "--to 2024-01-31 is before --from 2024-02-01"
        );
    }

    #[test]
    fn windows_cover_only_what_the_file_lacks() {
        let end = JAN1 + 100 * M15;
        // No file: everything.
        assert_eq!(
            candle_windows(None, JAN1, end, TF),
            ((JAN1, JAN1), (JAN1, end))
        );
        // A file in the middle: before and after it.
        let span = Some((JAN1 + 10 * M15, JAN1 + 20 * M15));
        assert_eq!(
            candle_windows(span, JAN1, end, TF),
            ((JAN1, JAN1 + 10 * M15), (JAN1 + 21 * M15, end))
        );
        // --from after the file's first candle: nothing before it.
        let (head, _) = candle_windows(span, JAN1 + 15 * M15, end, TF);
        assert_eq!(head.0, head.1);
        // Up to date: the last candle is the last closed one.
        let (_, tail) = candle_windows(Some((JAN1, end - M15)), JAN1, end, TF);
        assert_eq!(tail.0, tail.1);
        // A file beyond --to is kept, nothing fetched after it.
        let (head, tail) = candle_windows(Some((JAN1, end + 50 * M15)), JAN1, end, TF);
        assert_eq!((head.0 == head.1, tail.0 == tail.1), (true, true));
        // --from mid-candle starts at the next candle.
        assert_eq!(candle_windows(None, JAN1 + 1, end, TF).1 .0, JAN1 + M15);
        assert_eq!(expected(&[(JAN1, JAN1 + 10 * M15), (5, 5)], TF), 10);
        // Funding: after the last settlement, exclusive of it.
        assert_eq!(
            funding_windows(Some((JAN1 + 10, JAN1 + 50)), JAN1, JAN1 + 100),
            ((JAN1, JAN1 + 10), (JAN1 + 51, JAN1 + 100))
        );
        assert_eq!(
            funding_windows(None, JAN1, JAN1 - 5),
            ((JAN1, JAN1), (JAN1, JAN1))
        );
    }

    fn c(t: i64) -> Candle {
        Candle {
            open_time: t,
            open: Decimal::ONE.into(),
            high: Decimal::ONE.into(),
            low: Decimal::ONE.into(),
            close: Decimal::ONE.into(),
            volume: Decimal::ONE,
        }
    }

    #[test]
    fn merging_keeps_order_and_refuses_overlap_or_misalignment() {
        let merged = merge_candles(
            vec![c(JAN1)],
            vec![c(JAN1 + M15)],
            vec![c(JAN1 + 3 * M15)],
            TF,
        )
        .unwrap();
        assert_eq!(merged.len(), 3);
        assert_eq!(
            data::find_gaps(&merged, TF).len(),
            1,
            "a gap is kept, not filled"
        );
        let e = merge_candles(vec![c(JAN1 + M15)], vec![c(JAN1 + M15)], vec![], TF).unwrap_err();
        assert!(e.to_string().contains("out of order"), "{e}");
        let e = merge_candles(vec![], vec![], vec![c(JAN1 + 1)], TF).unwrap_err();
        assert!(e.to_string().contains("not aligned to 15m"), "{e}");
    }

    #[test]
    fn weight_pauses_until_the_next_exchange_minute() {
        let now = JAN1 + 45_500; // 45.5 s into a minute
        assert_eq!(weight_pause(None, 10, 1000, now), None, "no gauge yet");
        assert_eq!(
            weight_pause(Some(990), 10, 1000, now),
            None,
            "exactly the budget"
        );
        assert_eq!(
            weight_pause(Some(991), 10, 1000, now),
            Some(Duration::from_millis(14_500 + 1_000))
        );
        assert_eq!(
            weight_pause(Some(2400), 10, 1000, JAN1),
            Some(Duration::from_millis(61_000))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_wait_out_rate_limits_and_give_up_on_the_rest() {
        let mut meter = Meter::new("t", false, 0);
        let limited = |s: u64| ExchangeError::Retryable {
            endpoint: "GET /x".into(),
            detail: "429".into(),
            retry_after: Some(Duration::from_secs(s)),
        };
        let mut calls = 0;
        let t0 = tokio::time::Instant::now();
        let v = with_retries("GET /x", &mut meter, || {
            calls += 1;
            let r = if calls < 3 { Err(limited(20)) } else { Ok(7) };
            async move { r }
        })
        .await
        .unwrap();
        assert_eq!((v, calls), (7, 3));
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(40),
            "Retry-After obeyed twice"
        );

        let e = with_retries("GET /x", &mut meter, || async {
            Err::<(), _>(limited(3600))
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("wait 3600 s"), "{e}");
        let e = with_retries("GET /x", &mut meter, || async {
            Err::<(), _>(ExchangeError::Fatal("boom".into()))
        })
        .await
        .unwrap_err();
        assert!(format!("{e:#}").contains("boom"), "{e:#}");
        let mut calls = 0;
        let e = with_retries("GET /x", &mut meter, || {
            calls += 1;
            async { Err::<(), _>(limited(1)) }
        })
        .await
        .unwrap_err();
        assert_eq!(calls, PAGE_ATTEMPTS);
        assert!(format!("{e:#}").contains("GET /x, attempt 6"), "{e:#}");
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("BTCUSDT-funding.csv");
        write_atomic(&file, "a\n").unwrap();
        let mode = |f: &Path| std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o644, "readable like any data file");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&file, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "b\n");
        assert_eq!(mode(&file), 0o640, "the replaced file's mode is kept");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
        let e = write_atomic(&dir.path().join("missing/x.csv"), "c").unwrap_err();
        assert!(format!("{e:#}").contains("missing"), "{e:#}");
    }
}
