//! `position-sync`: reconcile every enabled account with the exchange once, then exit (run every
//! 60 s). Adopts our own interrupted entries, tracks MANUAL positions, records closes done by the
//! exchange with realised PnL, re-places missing protective stops, updates equity state.
//!
//! With `AWS_LAMBDA_RUNTIME_API` set it is a Lambda function instead: the app is built once per
//! cold start and each scheduled event runs one reconciliation. Both worlds call [`sync_once`].
//! An event with `"job": "status-report"` (its own 30-minute schedule) sends the status report
//! instead (`albra_adapters::status_report`), reading the state only.

use albra_adapters::lambda::{self, JobFailure, Runtime, ScheduleEvent};
use albra_core::config;
use albra_core::jobs::JobReport;
use clap::Parser;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const JOB: &str = "position-sync";
const EXPECTED_EVENT: &str =
    "expected a JSON object {} or {\"time\": \"<RFC 3339 scheduled time>\"} \
(the schedule's Input), optionally with \"job\": \"position-sync\" or \"status-report\", or an \
EventBridge Scheduled Event";
/// The job a scheduled event may ask for instead of the sync.
const STATUS_REPORT: &str = "status-report";

#[derive(Parser)]
#[command(
    name = "position-sync",
    version,
    about = "Reconcile stored positions with the exchange once (run every 60 s)",
    long_about = "Reads each enabled account's exchange positions, open algo orders and equity; adopts an exchange \
position whose entry carries one of our client ids (a crash between the order and the state write is healed here); \
tracks anything else as MANUAL and never touches it; records positions closed by the exchange (stop filled) with \
the realised PnL from userTrades; re-places missing protective stops.\n\nWith AWS_LAMBDA_RUNTIME_API set it serves \
Lambda events instead (one reconciliation per event).\n\nExit codes: 0 ok, 1 a job error, 2 bad config or \
arguments."
)]
struct Args {
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
}

/// The one reconciliation both worlds run, at the exchange clock's `now`. Prints the report and
/// the run's metrics.
async fn sync_once(rt: &Runtime) -> JobReport {
    let started = Instant::now();
    let now = rt.app.exchange_now().await;
    let report = rt.app.engine.sync_job(now).await;
    for l in &report.lines {
        println!("{l}");
    }
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    rt.emit_metrics(JOB, None, &report, started, now).await;
    report
}

/// The status report of the event's slot (its scheduled time, else now): reads the state
/// only, and a slow or down Telegram does not fail it.
async fn status_report(rt: &Runtime, at: Option<i64>) -> Result<Value, JobFailure> {
    let now = match at {
        Some(t) => t,
        None => rt.app.exchange_now().await,
    };
    let e = &rt.app.engine;
    let outcome = albra_adapters::status_report::send(
        &e.config,
        &e.repo,
        rt.app.telegram.as_deref(),
        &rt.app.telegram_budget,
        now,
    )
    .await
    .map_err(|err| JobFailure::retryable(format!("{STATUS_REPORT} failed: {err}")))?;
    println!("{STATUS_REPORT}: {outcome:?}");
    Ok(json!({"job": STATUS_REPORT, "outcome": format!("{outcome:?}")}))
}

/// One Lambda invocation: the event is validated before anything touches the exchange or state.
async fn handle(rt: &Runtime, payload: Value) -> Result<Value, JobFailure> {
    let ev = ScheduleEvent::parse(payload, EXPECTED_EVENT)?;
    rt.app.telegram_budget.renew();
    match ev.job() {
        None | Some(JOB) => {}
        Some(STATUS_REPORT) => return status_report(rt, ev.time_ms(EXPECTED_EVENT)?).await,
        Some(other) => {
            return Err(JobFailure::non_retryable(format!(
                "rejected event: no job `{other}` in this function; {EXPECTED_EVENT}"
            )))
        }
    }
    if ev.timeframe().is_some() {
        return Err(JobFailure::non_retryable(format!(
            "rejected event: position-sync takes no timeframe (is this the evaluator's schedule?); \
             {EXPECTED_EVENT}"
        )));
    }
    if let Some(at) = ev.time_ms(EXPECTED_EVENT)? {
        // A reconciliation delivered minutes late is superseded by the next minute's run.
        lambda::check_fresh(at, rt.app.exchange_now().await)?;
    }
    let report = sync_once(rt).await;
    if !report.ok() {
        // The next minute's run repeats the reconciliation whatever the cause.
        return Err(JobFailure::retryable(format!(
            "{JOB} failed: {}",
            report.error_texts().join("; ")
        )));
    }
    Ok(json!({
        "job": JOB,
        "sync_drift": report.sync_drift,
        "orders_placed": report.orders_placed,
        "lines": report.lines,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    albra_core::logging::init();
    let args = Args::parse();
    let in_lambda = lambda::in_lambda();
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
    if sync_once(&rt).await.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
