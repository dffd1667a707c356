//! `albra telegram serve | poll | set-webhook`: the local front ends of the Telegram bot
//! (`albra_adapters::telegram::bot`). `serve` is an HTTP server over the same webhook function a
//! Lambda calls (`webhook::handle_webhook`); `poll` feeds the bot from getUpdates; neither
//! decides anything about an update itself.

use albra_adapters::app;
use albra_adapters::telegram::api::types::AllowedUpdate;
use albra_adapters::telegram::bot::Bot;
use albra_adapters::telegram::webhook::{handle_webhook, SECRET_HEADER};
use albra_adapters::telegram::BotClient;
use albra_core::config::Config;
use albra_core::ports::{Secret, Secrets};
use anyhow::{anyhow, Context, Result};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn wall_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn webhook_secret(env_file: Option<&Path>) -> Result<Secret> {
    let secrets = app::default_secrets(env_file).map_err(|e| anyhow!("{e}"))?;
    secrets.webhook_secret().await.map_err(|e| anyhow!("{e}"))
}

async fn bot(cfg: Config, state: &str, env_file: Option<&Path>) -> Result<Arc<Bot>> {
    Ok(Arc::new(
        Bot::build(cfg, state, env_file)
            .await
            .map_err(|e| anyhow!("{e}"))?,
    ))
}

/// `serve`: POST `path` on `listen`; every delivery through `handle_webhook`.
pub async fn serve(
    cfg: Config,
    state: &str,
    env_file: Option<&Path>,
    listen: SocketAddr,
    path: &str,
) -> Result<()> {
    let secret = Arc::new(webhook_secret(env_file).await?);
    let bot = bot(cfg, state, env_file).await?;
    let handler = move |headers: HeaderMap, body: Bytes| {
        let (bot, secret) = (bot.clone(), secret.clone());
        async move {
            let header = headers.get(SECRET_HEADER).map(|v| v.as_bytes());
            let status = handle_webhook(&bot, &secret, header, &body, wall_ms()).await;
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    let router = axum::Router::new().route(path, axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!("albra telegram: serving POST {path} on {listen}");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the webhook server stopped")
}

/// `poll`: getUpdates in a loop, each batch handled in order and confirmed by the next call's
/// offset; a failed call waits a few seconds (a webhook that is set makes Telegram refuse).
pub async fn poll(cfg: Config, state: &str, env_file: Option<&Path>) -> Result<()> {
    let bot = bot(cfg, state, env_file).await?;
    eprintln!("albra telegram: polling for updates (Ctrl-C stops)");
    let mut offset = None;
    loop {
        let deadline = Instant::now() + Duration::from_secs(60);
        let batch = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            b = bot.client().get_updates(offset, Duration::from_secs(50), deadline) => b,
        };
        match batch {
            Ok(batch) => {
                for u in &batch.updates {
                    let handled = bot.handle(u, wall_ms()).await;
                    tracing::info!(update_id = u.update_id, ?handled, "update handled");
                }
                offset = batch.next_offset.or(offset);
            }
            Err(e) => {
                tracing::warn!(error = %e, "getUpdates failed; trying again in 5 s");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

/// `set-webhook URL`: register it with the secret, for messages and button presses only.
pub async fn set_webhook(env_file: Option<&Path>, url: &str) -> Result<()> {
    let secret = webhook_secret(env_file).await?;
    let secrets = app::default_secrets(env_file).map_err(|e| anyhow!("{e}"))?;
    let creds = secrets
        .telegram()
        .await
        .map_err(|e| anyhow!("{e}"))?
        .ok_or_else(|| anyhow!("TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID are not set"))?;
    let client = BotClient::new(creds.bot_token).map_err(|e| anyhow!("{e}"))?;
    let allowed = [AllowedUpdate::Message, AllowedUpdate::CallbackQuery];
    client
        .set_webhook(
            url,
            &secret,
            &allowed,
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .context("setWebhook")?;
    println!("webhook set: Telegram posts messages and button presses to {url}");
    Ok(())
}
