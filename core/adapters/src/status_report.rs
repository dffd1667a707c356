//! Sends the status report (`albra_core::report`) once per 30-minute slot: the report's event id
//! is taken in the store first (`take_notice`), so a rerun in the same slot sends nothing; a
//! report Telegram did not take gives the id back, so the next run of the slot tries again. It
//! reads the state only (no exchange call, no order). Telegram gets what is left of the
//! process's budget and no more: a slow or down Telegram costs the run its budget, never its
//! exit code. The notifications the report showed are removed from the store once it reached
//! every configured channel.

use crate::app::{build_notifier, default_secrets, AppError};
use crate::store::open_store;
use crate::telegram::TelegramNotifier;
use albra_core::config::Config;
use albra_core::notify::{SendBudget, StoredDedupe};
use albra_core::state::StateRepo;
use albra_core::status_report as report;
use std::path::Path;

/// How a run went.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent (to Telegram too when it is configured); `shown` deferred notifications cleared.
    Sent { telegram: bool, shown: usize },
    /// This slot's report went out already: nothing sent.
    AlreadySent { slot: i64 },
    /// Printed, but Telegram did not take it: the deferred notifications are kept, and a rerun
    /// in the same slot tries again.
    TelegramFailed { error: String },
}

/// The report of `now`'s slot, once: gathered, printed on the console when configured, and
/// sent to `telegram` within what is left of `budget`.
pub async fn send(
    cfg: &Config,
    repo: &StateRepo,
    telegram: Option<&TelegramNotifier>,
    budget: &SendBudget,
    now: i64,
) -> Result<Outcome, AppError> {
    let store_error = |e: &dyn std::fmt::Display| AppError(format!("status report: {e}"));
    let digest = report::gather(repo, cfg, now)
        .await
        .map_err(|e| store_error(&e))?;
    let id = report::event_id(digest.slot);
    if !repo
        .take_notice(&id, now, StoredDedupe::KEEP_SECS)
        .await
        .map_err(|e| store_error(&e))?
    {
        return Ok(Outcome::AlreadySent { slot: digest.slot });
    }
    let html = report::render(&digest);
    if cfg.notifier.console {
        println!("{}", report::plain(&html));
    }
    if let Some(t) = telegram {
        let deadline = tokio::time::Instant::now() + budget.left();
        if let Err(e) = t.send_html(&html, deadline).await {
            tracing::warn!(error = %e, "the status report did not reach Telegram; the next run of this slot tries again");
            if let Err(e) = repo.release_notice(&id).await {
                tracing::warn!(error = %e, "the status report's slot could not be given back");
            }
            return Ok(Outcome::TelegramFailed {
                error: e.to_string(),
            });
        }
    }
    for d in &digest.deferred {
        let event_id = &d.value.notification.event_id;
        repo.clear_deferred(event_id, d.version)
            .await
            .map_err(|e| store_error(&e))?;
    }
    Ok(Outcome::Sent {
        telegram: telegram.is_some(),
        shown: digest.deferred.len(),
    })
}

/// `albra status-report`: the store of `state_spec`, the Telegram channel of the config and
/// the keys file, and the wall clock's slot. Needs no exchange key.
pub async fn run_once(
    cfg: &Config,
    state_spec: &str,
    env_file: Option<&Path>,
    now: i64,
) -> Result<Outcome, AppError> {
    let secrets = default_secrets(env_file)?;
    let store = open_store(state_spec)
        .await
        .map_err(|e| AppError(e.to_string()))?;
    let repo = StateRepo::new(store);
    let channels = build_notifier(cfg, &secrets, &repo).await?;
    send(
        cfg,
        &repo,
        channels.telegram.as_deref(),
        &channels.budget,
        now,
    )
    .await
}
