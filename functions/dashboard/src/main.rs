//! `dashboard`: the read-only dashboard as a Lambda function behind a function URL: the same
//! axum router as `albra dashboard` ([`albra_adapters::dashboard::router`]), so the two cannot
//! drift. Each invocation is one page request.
//!
//! The dashboard (its store, candle client, templates and token) is built once per cold start.
//! The token comes from SSM `/albra/{stage}/dashboard/token` unless `ALBRA_DASHBOARD_TOKEN` is
//! set; the function reads the state table and the exchange's public klines, holds no API key
//! and writes nothing.
//!
//! Outside Lambda it only explains itself: on a host the same pages are `albra dashboard`.

use albra_adapters::app;
use albra_adapters::dashboard::{self, Dashboard};
use albra_adapters::lambda::{self, InitError};
use albra_core::config::{self, Config};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "dashboard",
    version,
    about = "The read-only dashboard as a Lambda behind a function URL",
    long_about = "Serves the dashboard's pages in AWS Lambda (AWS_LAMBDA_RUNTIME_API set): the overview, \
equity, trades (and CSV), performance and chart pages of `albra dashboard`, through the same router. \
A request without the session cookie /login gives for the token gets no data.\n\n\
The token: the SSM SecureString /albra/<stage>/dashboard/token (ALBRA_STAGE), at least 24 characters, \
or ALBRA_DASHBOARD_TOKEN when set. Outside Lambda, run `albra dashboard` instead.\n\n\
Exit codes: 0 the runtime stopped, 1 setup failed, 2 bad config or not in Lambda."
)]
struct Args {
    #[arg(long, env = "ALBRA_CONFIG", default_value_os_t = config::default_path())]
    config: PathBuf,
    #[arg(long, env = "ALBRA_STATE", default_value = "./state")]
    state: String,
    #[arg(long, env = "ALBRA_ENV_FILE")]
    env_file: Option<PathBuf>,
}

/// The dashboard, built once per cold start.
async fn init(args: &Args) -> Result<Dashboard, InitError> {
    let cfg = Config::load(&args.config).map_err(|e| InitError::new(2, e.to_string()))?;
    lambda::aws_preflight(&cfg, &args.state)
        .await
        .map_err(|m| InitError::new(1, m))?;
    let token = app::default_secrets(args.env_file.as_deref())
        .map_err(|e| InitError::new(1, e.to_string()))?
        .dashboard_token(true)
        .await
        .map_err(|e| InitError::new(1, format!("the dashboard needs its token: {e}")))?;
    dashboard::build(cfg, &args.state, Vec::new(), token)
        .await
        .map_err(|e| InitError::new(1, e))
}

#[tokio::main]
async fn main() -> ExitCode {
    albra_core::logging::init();
    let args = Args::parse();
    if !lambda::in_lambda() {
        eprintln!(
            "error: dashboard runs in AWS Lambda (AWS_LAMBDA_RUNTIME_API is not set); on a host \
             run `albra dashboard` instead"
        );
        return ExitCode::from(2);
    }
    let d = match init(&args).await {
        Ok(d) => d,
        Err(e) => return lambda::init_failed(e).await,
    };
    match lambda_http::run(dashboard::router(Arc::new(d))).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: Lambda runtime: {e}");
            ExitCode::from(1)
        }
    }
}
