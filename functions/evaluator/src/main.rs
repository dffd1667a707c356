//! `evaluator --timeframe 15m|1h|4h`: evaluate the candle that just closed, for every enabled
//! account and strategy of that timeframe, then exit. Run by cron a few seconds after each close;
//! it waits on the exchange clock until close + `jobs.close_delay_secs`.
//!
//! With `AWS_LAMBDA_RUNTIME_API` set it is a Lambda function instead: the app (clients, SSM keys,
//! store) is built once per cold start and each EventBridge Scheduler event evaluates the candle
//! of its scheduled `time` (see `albra_adapters::lambda` for the event contract). Both worlds call
//! [`evaluate_at`].

use albra_adapters::lambda::{self, JobFailure, Runtime, ScheduleEvent};
use albra_core::config;
use albra_core::domain::Timeframe;
use albra_core::jobs::JobReport;
use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const JOB: &str = "evaluator";
const EXPECTED_EVENT: &str =
    "expected a JSON object {\"timeframe\": \"15m\"|\"1h\"|\"4h\", \"time\": \
\"<RFC 3339 scheduled time>\"} (the schedule's Input), or an EventBridge Scheduled Event with \
detail.timeframe";

#[derive(Parser)]
#[command(
    name = "evaluator",
    version,
    about = "Evaluate the candle that just closed and place at most one protected order per signal",
    long_about = "Evaluates the newest CLOSED candle of --timeframe for every enabled account and every enabled \
strategy of that timeframe. Each (account, strategy, symbol, candle) is claimed once in the state store: a second \
run for the same candle does nothing and says so. Orders go to Binance (ALBRA_BINANCE_URL overrides the URL) with \
each account's keys (env / .env or SSM, as config says).\n\nWith AWS_LAMBDA_RUNTIME_API set it serves Lambda \
events instead (EventBridge Scheduler: {\"timeframe\":\"1h\",\"time\":\"<aws.scheduler.scheduled-time>\"}); \
--timeframe is then taken from each event.\n\nExit codes: 0 ok, 1 a job error (one-line reason on stderr), 2 bad \
config or arguments."
)]
struct Args {
    /// Candle interval to evaluate: 15m, 1h or 4h (required outside Lambda).
    #[arg(long)]
    timeframe: Option<Timeframe>,
    /// Config file.
    #[arg(long, env = "ALBRA_CONFIG", default_value_os_t = config::default_path())]
    config: PathBuf,
    /// State store: a local path (embedded SQLite, default ./state) or dynamodb:TABLE.
    #[arg(long, env = "ALBRA_STATE", default_value = "./state")]
    state: String,
    /// Keys file (KEY=value lines, readable by its owner only). Without it, ./.env is read when
    /// present; never a parent folder's.
    #[arg(long, env = "ALBRA_ENV_FILE")]
    env_file: Option<PathBuf>,
    /// Run only this account (it must be enabled and, with mode = "single", the main one).
    /// Without it: every enabled account (mode = "multi") or the main one (mode = "single").
    #[arg(long, env = "ALBRA_ACCOUNT")]
    account: Option<String>,
    /// Do not wait for close + delay on the exchange clock (evaluate the last closed candle now).
    #[arg(long)]
    no_wait: bool,
}

fn scheduled_timeframe(tf: Timeframe) -> Result<Timeframe, String> {
    if Timeframe::SCHEDULED.contains(&tf) {
        Ok(tf)
    } else {
        Err(format!("timeframe must be 15m, 1h or 4h (got {tf})"))
    }
}

/// Longest the evaluator waits for close + delay beyond the delay itself. Schedulers fire within
/// the minute of the close, so a longer wait means the clocks disagree: the job says so instead of
/// sleeping on it.
const MAX_CLOSE_WAIT_MS: i64 = 60_000;
/// How long after close + delay (exchange clock) an evaluation that failed before sending any
/// order is tried again within the same run: the candle is still fresh, and a failure such as a
/// rate limit or an account read usually clears within seconds.
const RETRY_WINDOW_MS: i64 = 45_000;

/// The one evaluation both worlds run: the candle that closed last at `at` (the scheduled time in
/// Lambda, the exchange clock on the command line), after waiting on the exchange clock for
/// close + `jobs.close_delay_secs` when `wait`. Failures that gave their candle back are retried
/// until `RETRY_WINDOW_MS` after the close. Prints the report and the run's metrics; returns the
/// report and the `now` the candle was evaluated at, or why it was not evaluated at all.
async fn evaluate_at(
    rt: &Runtime,
    tf: Timeframe,
    at: i64,
    wait: bool,
) -> Result<(JobReport, i64), String> {
    let started = Instant::now();
    let delay = rt.app.engine.config.jobs.close_delay_secs as i64 * 1000;
    let ready_at = tf.open_of(at) + delay;
    let mut now = at;
    if wait {
        let ex_now = rt.app.exchange_clock().await.map_err(|e| e.0)?;
        let lag = ready_at - ex_now;
        if lag > delay + MAX_CLOSE_WAIT_MS {
            return Err(format!(
                "the exchange clock ({}) is {} s before the close of the candle chosen at {}: the clocks disagree; not waiting on them",
                iso(ex_now),
                lag / 1000,
                iso(at)
            ));
        }
        if lag > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(lag as u64)).await;
        }
        now = at.max(ready_at);
    }
    let mut pause = std::time::Duration::from_secs(2);
    let report = loop {
        let report = rt.app.engine.evaluate(tf, now).await;
        for l in &report.lines {
            println!("{l}");
        }
        if report.ok() || report.orders_attempted > 0 || !wait {
            break report;
        }
        // Every failure gave its candle back (nothing was sent): evaluate again while fresh,
        // at the exchange clock's time so a dead run's expired claim can be taken over, and
        // never sooner than the exchange asked (a 429 ignored turns into a 418 ban).
        let backoff = report.retry_after.unwrap_or_default().max(pause);
        let next = match rt.app.exchange_clock().await {
            Ok(t) => t + backoff.as_millis() as i64,
            Err(_) => break report,
        };
        if next > ready_at + RETRY_WINDOW_MS || tf.open_of(next) != tf.open_of(at) {
            break report;
        }
        for e in &report.errors {
            eprintln!("retrying in {} s after: {e}", backoff.as_secs());
        }
        tokio::time::sleep(backoff).await;
        now = next;
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
    };
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    rt.emit_metrics(JOB, Some(tf.as_str()), &report, started, now)
        .await;
    Ok((report, now))
}

use albra_core::domain::utc_iso as iso;

/// One Lambda invocation: validate the event fully before anything touches the exchange or state.
async fn handle(rt: &Runtime, payload: Value) -> Result<Value, JobFailure> {
    let ev = ScheduleEvent::parse(payload, EXPECTED_EVENT)?;
    if let Some(job) = ev.job().filter(|j| *j != "evaluator") {
        return Err(JobFailure::non_retryable(format!(
            "rejected event: the evaluator runs no job `{job}` (is this another function's \
             schedule?); {EXPECTED_EVENT}"
        )));
    }
    rt.app.telegram_budget.renew();
    let (Some(tf), Some(at)) = (ev.timeframe(), ev.time_ms(EXPECTED_EVENT)?) else {
        return Err(JobFailure::non_retryable(format!(
            "rejected event: `time` and `timeframe` are both required; {EXPECTED_EVENT}"
        )));
    };
    if let (Some(a), Some(b)) = (
        ev.timeframe.as_deref(),
        ev.detail.as_ref().and_then(|d| d.timeframe.as_deref()),
    ) {
        if a != b {
            return Err(JobFailure::non_retryable(format!(
                "rejected event: `timeframe` {a} and `detail.timeframe` {b} disagree"
            )));
        }
    }
    let tf = tf
        .parse::<Timeframe>()
        .and_then(scheduled_timeframe)
        .map_err(|e| JobFailure::non_retryable(format!("rejected event: {e}; {EXPECTED_EVENT}")))?;
    let ex_now = rt
        .app
        .exchange_clock()
        .await
        .map_err(|e| JobFailure::retryable(e.0))?;
    lambda::check_fresh(at, ex_now)?;
    let (report, now) = evaluate_at(rt, tf, at, true)
        .await
        .map_err(JobFailure::retryable)?;
    if !report.ok() {
        return Err(JobFailure::from_report(JOB, &report));
    }
    Ok(json!({
        "job": JOB,
        "timeframe": tf.as_str(),
        "candle_open_time": tf.last_closed_open(now),
        "orders_placed": report.orders_placed,
        "orders_rejected": report.orders_rejected,
        "lines": report.lines,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    albra_core::logging::init();
    let args = Args::parse();
    let in_lambda = lambda::in_lambda();
    let tf = match args.timeframe.map(scheduled_timeframe).transpose() {
        Ok(tf) => tf,
        Err(e) => {
            eprintln!("error: --{e}");
            return ExitCode::from(2);
        }
    };
    if tf.is_none() && !in_lambda {
        eprintln!("error: --timeframe is required (15m, 1h or 4h)");
        return ExitCode::from(2);
    }
    let rt = match Runtime::init(
        &args.config,
        &args.state,
        args.env_file.as_deref(),
        args.account.as_deref(),
    )
    .await
    {
        Ok(rt) => rt,
        Err(e) => return lambda::init_failed(e).await,
    };
    if in_lambda {
        let rt = &rt;
        return match lambda::serve(|payload| handle(rt, payload)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: Lambda runtime: {e}");
                ExitCode::from(1)
            }
        };
    }
    let Some(tf) = tf else {
        return ExitCode::from(2);
    };
    let at = match rt.app.exchange_clock().await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match evaluate_at(&rt, tf, at, !args.no_wait).await {
        Ok((report, _)) if report.ok() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
