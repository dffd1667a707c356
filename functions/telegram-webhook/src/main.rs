//! `telegram-webhook`: the Telegram bot as a Lambda function behind a function URL. Telegram
//! POSTs each update to the URL; the function answers it through the same
//! [`handle_webhook`] as `albra telegram serve` (secret token compared in constant time, the
//! chat allow-list, `update_id` dedupe in the state store, stale updates ignored), so the two
//! front ends cannot drift.
//!
//! The bot (its app, exchange clients, store and Telegram client) is built once per cold start,
//! as the other functions build theirs. Its secrets come from SSM in Lambda:
//! `/albra/{stage}/telegram/{bot_token,chat_id,webhook_secret}` and each account's keys.
//!
//! Outside Lambda it only explains itself: locally the same bot runs as `albra telegram serve`
//! (or `poll`).

use albra_adapters::app;
use albra_adapters::lambda::{self, InitError};
use albra_adapters::telegram::bot::Bot;
use albra_adapters::telegram::webhook::{handle_webhook, SECRET_HEADER};
use albra_core::config::{self, Config};
use albra_core::ports::Secret;
use clap::Parser;
use lambda_http::{service_fn, Body, Request, Response};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "telegram-webhook",
    version,
    about = "The Telegram bot as a Lambda behind a function URL",
    long_about = "Serves Telegram's webhook deliveries in AWS Lambda (AWS_LAMBDA_RUNTIME_API set): each POST to \
the function URL is one update, answered by the same bot as `albra telegram serve`. A delivery without the \
X-Telegram-Bot-Api-Secret-Token registered by `albra telegram set-webhook URL` gets 401 and does nothing.\n\n\
Secrets (SSM SecureStrings of the stage, ALBRA_STAGE): /albra/<stage>/telegram/bot_token, chat_id and \
webhook_secret, and each account's keys. Outside Lambda, run `albra telegram serve` or `albra telegram poll` \
instead.\n\nExit codes: 0 the runtime stopped, 1 setup failed, 2 bad config or not in Lambda."
)]
struct Args {
    #[arg(long, env = "ALBRA_CONFIG", default_value_os_t = config::default_path())]
    config: PathBuf,
    #[arg(long, env = "ALBRA_STATE", default_value = "./state")]
    state: String,
    #[arg(long, env = "ALBRA_ENV_FILE")]
    env_file: Option<PathBuf>,
}

/// The bot and the secret its deliveries must carry, built once per cold start.
async fn init(args: &Args) -> Result<(Bot, Secret), InitError> {
    let cfg = Config::load(&args.config).map_err(|e| InitError::new(2, e.to_string()))?;
    // The bot closes positions on command: real money needs `live = true`, as for the jobs.
    app::live_opt_in(&cfg).map_err(|e| InitError::new(2, e.to_string()))?;
    lambda::aws_preflight(&cfg, &args.state)
        .await
        .map_err(|m| InitError::new(1, m))?;
    let env_file = args.env_file.as_deref();
    let secret = app::default_secrets(env_file)
        .map_err(|e| InitError::new(1, e.to_string()))?
        .webhook_secret()
        .await
        .map_err(|e| InitError::new(1, e.to_string()))?;
    let bot = Bot::build(cfg, &args.state, env_file)
        .await
        .map_err(|e| InitError::new(1, e.to_string()))?;
    Ok((bot, secret))
}

/// One function URL invocation: the status [`handle_webhook`] decides, and no body (Telegram
/// reads only the status; the answer to the user went out through the Bot API).
async fn deliver(bot: &Bot, secret: &Secret, req: Request) -> Result<Response<Body>, String> {
    let header = req.headers().get(SECRET_HEADER).map(|v| v.as_bytes());
    let now = chrono::Utc::now().timestamp_millis();
    let status = handle_webhook(bot, secret, header, req.body().as_ref(), now).await;
    Response::builder()
        .status(status)
        .body(Body::Empty)
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    albra_core::logging::init();
    let args = Args::parse();
    if !lambda::in_lambda() {
        eprintln!(
            "error: telegram-webhook runs in AWS Lambda (AWS_LAMBDA_RUNTIME_API is not set); \
             on a host run `albra telegram serve` (a webhook) or `albra telegram poll` instead"
        );
        return ExitCode::from(2);
    }
    let (bot, secret) = match init(&args).await {
        Ok(v) => v,
        Err(e) => return lambda::init_failed(e).await,
    };
    let (bot, secret) = (&bot, &secret);
    match lambda_http::run(service_fn(move |req| deliver(bot, secret, req))).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: Lambda runtime: {e}");
            ExitCode::from(1)
        }
    }
}
