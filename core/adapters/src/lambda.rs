//! What the function binaries share between their two worlds (a one-shot CLI, or a Lambda
//! function when `AWS_LAMBDA_RUNTIME_API` is set): the cold-start wiring, the scheduled-event
//! contract, the retryable / non-retryable error type and the metrics of a run. `evaluator` and
//! `position-sync` both use it, so both functions follow one contract.
//!
//! Event contract: [`crate::lambda_event`] (a JSON object with the RFC 3339 scheduled `time`
//! and, for the evaluator, the `timeframe`; anything else is rejected).
//!
//! Errors posted to the runtime's `/error` carry `errorType` `Albra.Retryable` (nothing was sent
//! to the exchange and the candle was given back: a redelivery of the same event may succeed) or
//! `Albra.NonRetryable` (a bad or stale event, a missing secret, or a failure after an order was
//! sent: a redelivery would fail the same way or do nothing). Redeliveries are always safe: the
//! run marker makes a second evaluation of the same candle a no-op.

use crate::app::{self, App};
use crate::binance::BinanceClient;
use crate::emf::{self, Detail, JobMeasures};
use crate::store::StoreSpec;
use albra_core::config::Config;
use albra_core::jobs::JobReport;
use albra_core::ports::{Exchange, KeySource};
use aws_sdk_ssm::config::ProvideCredentials;
use serde_json::Value;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

pub const RUNTIME_API_VAR: &str = "AWS_LAMBDA_RUNTIME_API";

/// An event older than this (by the exchange clock) is stale: its candle is left alone.
pub const MAX_EVENT_AGE_MS: i64 = 5 * 60_000;
/// An event this far ahead of the exchange clock is refused (clock skew allowance).
pub const MAX_EVENT_LEAD_MS: i64 = 60_000;
/// How long the AWS preflight may take before it gives up.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_millis(800);

/// True when running under a Lambda runtime (real or emulated).
pub fn in_lambda() -> bool {
    std::env::var_os(RUNTIME_API_VAR).is_some_and(|v| !v.is_empty())
}

/// The deployment stage metrics are published under (`ALBRA_STAGE`, default `local`).
pub fn stage() -> String {
    std::env::var("ALBRA_STAGE")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "local".to_string())
}

/// Whether a redelivery of the same event may succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Retryable,
    NonRetryable,
}

/// A failed invocation: posted to the runtime's `/error` with `errorType` from [`Retry`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub retry: Retry,
    pub message: String,
}

impl JobFailure {
    pub fn retryable(message: impl Into<String>) -> Self {
        JobFailure {
            retry: Retry::Retryable,
            message: message.into(),
        }
    }

    pub fn non_retryable(message: impl Into<String>) -> Self {
        JobFailure {
            retry: Retry::NonRetryable,
            message: message.into(),
        }
    }

    pub fn error_type(&self) -> &'static str {
        match self.retry {
            Retry::Retryable => "Albra.Retryable",
            Retry::NonRetryable => "Albra.NonRetryable",
        }
    }

    /// A job that reported errors: retryable only while nothing reached the exchange (the engine
    /// then gave the candle back), otherwise a redelivery would find the candle already claimed.
    pub fn from_report(job: &str, report: &JobReport) -> Self {
        let message = format!("{job} failed: {}", report.error_texts().join("; "));
        if report.orders_attempted == 0 {
            Self::retryable(message)
        } else {
            Self::non_retryable(message)
        }
    }
}

impl From<JobFailure> for lambda_runtime::Diagnostic {
    fn from(f: JobFailure) -> Self {
        lambda_runtime::Diagnostic {
            error_type: f.error_type().to_string(),
            error_message: f.message,
        }
    }
}

/// A cold-start failure, with the CLI's exit code for it (2 config, 1 anything else).
#[derive(Debug)]
pub struct InitError {
    pub code: u8,
    pub message: String,
}

impl InitError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        InitError {
            code,
            message: message.into(),
        }
    }
}

/// Everything built once per process (once per cold start in Lambda), never inside a handler.
pub struct Runtime {
    pub app: App,
    /// The app's public client, whose weight gauge every client of the process updates with the
    /// exchange's `X-MBX-USED-WEIGHT-1M` (the weight is per IP, so any answer gives the total).
    weight_probe: BinanceClient,
    pub stage: String,
    /// `ALBRA_METRICS`: how much becomes CloudWatch metrics; `None` prints no EMF lines.
    pub metrics: Option<Detail>,
}

impl Runtime {
    /// Load the config, keep the accounts the job runs (`mode`, `--account` as `only`), check
    /// the AWS setup when the config needs AWS, and build the app. `env_file` is `--env-file`
    /// (keys file), if given.
    pub async fn init(
        config: &Path,
        state: &str,
        env_file: Option<&Path>,
        only: Option<&str>,
    ) -> Result<Runtime, InitError> {
        let mut cfg = Config::load(config).map_err(|e| InitError::new(2, e.to_string()))?;
        app::select_job_accounts(&mut cfg, only).map_err(|e| InitError::new(2, e.to_string()))?;
        // Before any client, key or store: real money needs `live = true` per account.
        app::live_opt_in(&cfg).map_err(|e| InitError::new(2, e.to_string()))?;
        let unset = Detail::default_for(in_lambda(), std::io::stdout().is_terminal());
        let metrics = Detail::parse(std::env::var("ALBRA_METRICS").ok().as_deref(), unset)
            .map_err(|e| InitError::new(2, e))?;
        aws_preflight(&cfg, state)
            .await
            .map_err(|m| InitError::new(1, m))?;
        let app = app::build(cfg, state, app::Mode::Live, env_file)
            .await
            .map_err(|e| InitError::new(1, e.to_string()))?;
        let weight_probe = app.binance.clone();
        Ok(Runtime {
            app,
            weight_probe,
            stage: stage(),
            metrics,
        })
    }

    /// Print the run's EMF lines: one for the job, one per enabled account with stored state.
    /// A job run per timeframe (the evaluator) passes it: its heartbeat is then per timeframe,
    /// so the alarm of each schedule sees that schedule's runs only.
    pub async fn emit_metrics(
        &self,
        job: &str,
        timeframe: Option<&str>,
        report: &JobReport,
        started: Instant,
        now: i64,
    ) {
        let Some(detail) = self.metrics else {
            return;
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        // Every answer carries what this IP used this minute, and the process's clients share
        // one gauge: the job's last answer says it. Only a job that asked nothing sends one
        // weight-1 request to learn it.
        let api_weight_1m = match self.weight_probe.used_weight_1m() {
            Some(w) => Some(w),
            None => match self.weight_probe.server_time().await {
                Ok(_) => self.weight_probe.used_weight_1m(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not sample the API weight");
                    None
                }
            },
        };
        let m = JobMeasures {
            duration_ms,
            api_weight_1m,
        };
        emf::job_line(&self.stage, job, timeframe, now, report, &m, detail).emit();
        let repo = &self.app.engine.repo;
        for acct in self.app.engine.accounts.iter().filter(|a| a.config.enabled) {
            let id = &acct.config.id;
            let state = match repo.account_state(id).await {
                Ok(Some(s)) => s.value,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(account = %id, error = %e, "no account metrics: state unreadable");
                    continue;
                }
            };
            let open = match repo.positions(id).await {
                Ok(p) => p.iter().filter(|v| v.value.is_open()).count(),
                Err(e) => {
                    tracing::warn!(account = %id, error = %e, "no account metrics: positions unreadable");
                    continue;
                }
            };
            emf::account_line(&self.stage, id, now, &state, open, detail).emit();
        }
    }
}

/// Fail fast, with the fix, when the config needs AWS (DynamoDB state or SSM keys) and the
/// region or credentials are missing, instead of letting the SDK time out on each request.
pub async fn aws_preflight(cfg: &Config, state: &str) -> Result<(), String> {
    let dynamo = matches!(StoreSpec::parse(state), Ok(StoreSpec::Dynamo { .. }));
    let ssm = cfg
        .accounts
        .iter()
        .filter(|a| a.enabled)
        .any(|a| matches!(a.key_source(), Ok(KeySource::Ssm { .. })));
    if !dynamo && !ssm {
        return Ok(());
    }
    let needs = match (dynamo, ssm) {
        (true, true) => "DynamoDB state and SSM keys",
        (true, false) => "DynamoDB state",
        _ => "SSM keys",
    };
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    if sdk.region().is_none() {
        return Err(format!(
            "AWS region not set ({needs} need it): set AWS_REGION (Lambda sets it), or a region \
             for AWS_PROFILE in ~/.aws/config"
        ));
    }
    let Some(provider) = sdk.credentials_provider() else {
        return Err(format!("no AWS credentials provider ({needs} need one)"));
    };
    match tokio::time::timeout(PREFLIGHT_TIMEOUT, provider.provide_credentials()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "no AWS credentials ({needs} need them): set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role ({e})"
        )),
        Err(_) => Err(format!(
            "no AWS credentials within {PREFLIGHT_TIMEOUT:?} ({needs} need them): set \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM \
             role; off EC2 set AWS_EC2_METADATA_DISABLED=true"
        )),
    }
}

/// A function that could not start: the reason on stderr, reported to the runtime API in Lambda
/// ([`report_init_error`]), and the exit code to end the process with.
pub async fn init_failed(err: InitError) -> std::process::ExitCode {
    eprintln!("error: {}", err.message);
    report_init_error(&err).await;
    std::process::ExitCode::from(err.code)
}

/// Report a cold-start failure to the runtime API (`/runtime/init/error`), as Lambda expects
/// from a runtime that cannot start; the process exits after this.
pub async fn report_init_error(err: &InitError) {
    let Ok(api) = std::env::var(RUNTIME_API_VAR) else {
        return;
    };
    let body = serde_json::json!({
        "errorType": "Albra.InitError",
        "errorMessage": err.message,
    });
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot report the init error to the runtime API: {e}");
            return;
        }
    };
    let sent = client
        .post(format!("http://{api}/2018-06-01/runtime/init/error"))
        .header("Lambda-Runtime-Function-Error-Type", "Albra.InitError")
        .json(&body)
        .send()
        .await;
    if let Err(e) = sent {
        eprintln!("error: cannot report the init error to the runtime API: {e}");
    }
}

pub use crate::lambda_event::ScheduleEvent;

/// A refused event: a redelivery of the same event would be refused the same way.
impl From<crate::lambda_event::EventError> for JobFailure {
    fn from(e: crate::lambda_event::EventError) -> Self {
        JobFailure::non_retryable(e.0)
    }
}

/// Refuse an event whose scheduled time is too old or too far ahead of the exchange clock.
pub fn check_fresh(scheduled: i64, exchange_now: i64) -> Result<(), JobFailure> {
    use albra_core::domain::utc_iso as iso;
    if exchange_now - scheduled > MAX_EVENT_AGE_MS {
        return Err(JobFailure::non_retryable(format!(
            "stale event: scheduled for {} but the exchange clock says {} (more than {} s late); \
             its candle is not evaluated late",
            iso(scheduled),
            iso(exchange_now),
            MAX_EVENT_AGE_MS / 1000
        )));
    }
    if scheduled - exchange_now > MAX_EVENT_LEAD_MS {
        return Err(JobFailure::non_retryable(format!(
            "rejected event: scheduled for {} which is ahead of the exchange clock {}",
            iso(scheduled),
            iso(exchange_now)
        )));
    }
    Ok(())
}

/// Serve Lambda events with `handler` until the runtime stops; the [`Runtime`] is built before
/// (once per cold start) and shared by every invocation.
pub async fn serve<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Value) -> Fut,
    Fut: std::future::Future<Output = Result<Value, JobFailure>>,
{
    let handler = &handler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |ev: lambda_runtime::LambdaEvent<Value>| async move {
            tracing::info!(request_id = %ev.context.request_id, "invocation");
            handler(ev.payload).await
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job failure whose text is `text` after its scope.
    fn failure(text: &str) -> albra_core::jobs::JobFailure {
        let e = albra_core::ports::ExchangeError::Fatal(text.into());
        albra_core::jobs::JobFailure::step("test", e)
    }
    use serde_json::json;

    #[test]
    fn refused_events_are_not_retryable() {
        let e =
            ScheduleEvent::parse(json!({"timeframe": "1h", "tf": "x"}), "expected X").unwrap_err();
        let f = JobFailure::from(e);
        assert_eq!(f.retry, Retry::NonRetryable);
        assert!(
            f.message.contains("unknown field `tf`") && f.message.ends_with("expected X"),
            "{f}"
        );
    }

    #[test]
    fn freshness_window() {
        let t = 1_795_266_000_000;
        assert!(check_fresh(t, t + 3_000).is_ok());
        assert!(check_fresh(t, t + MAX_EVENT_AGE_MS).is_ok());
        let e = check_fresh(t, t + MAX_EVENT_AGE_MS + 1).unwrap_err();
        assert!(e.message.starts_with("stale event"), "{e}");
        assert!(check_fresh(t + MAX_EVENT_LEAD_MS + 1, t).is_err());
    }

    #[test]
    fn report_errors_are_retryable_only_before_any_order() {
        let mut r = JobReport {
            errors: vec![failure("main: exchange unreachable")],
            ..JobReport::default()
        };
        let f = JobFailure::from_report("evaluator", &r);
        assert_eq!(f.error_type(), "Albra.Retryable");
        assert!(f.message.contains("exchange unreachable"));
        r.orders_attempted = 1;
        let d: lambda_runtime::Diagnostic = JobFailure::from_report("evaluator", &r).into();
        assert_eq!(d.error_type, "Albra.NonRetryable");
    }
}
