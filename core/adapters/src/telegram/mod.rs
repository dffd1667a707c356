//! Telegram: the Bot API transport of the operator surface, and the notifier built on it.
//!
//! - `client.rs`: [`BotClient`], the Bot API methods (send, edit, answer a button, upload a
//!   photo, webhook, long poll, getMe), typed with `frankenstein`'s types.
//! - `transport.rs`: one call over the wire through the outbound policy of [`crate::http`]
//!   (the bot token travels in the URL), what is retried and how long it may wait
//!   ([`TelegramError`], [`RetryPolicy`]).
//! - `ratelimit.rs`: the per-chat limits every message sent waits for (one a second, twenty a
//!   minute to a group), per process.
//! - `text.rs`: Telegram's text rules: HTML escaping, splitting long texts ([`split_html`]).
//! - `bot.rs`: [`bot::Bot`], the bot itself: the update guards (allow-listed chat, once per
//!   update, age limit), the commands through the query/command layer, confirmations, audit.
//! - `webhook.rs`: [`webhook::handle_webhook`], one webhook delivery (secret token checked in
//!   constant time, JSON decoded, handed to the bot) for every HTTP front end.
//! - this file: [`TelegramNotifier`], the [`Notifier`] that sends each notification to the
//!   configured chat.

pub mod bot;
mod client;
mod ratelimit;
mod text;
mod transport;
pub mod webhook;

pub use client::{BotClient, UpdateBatch};
/// The Bot API types (`Update`, `Message`, `CallbackQuery`, `InlineKeyboardMarkup`, …) the
/// client's methods take and return.
pub use frankenstein as api;
pub use text::{html_attr_escape, html_escape, split_html, tg_len, CAPTION_LIMIT, MESSAGE_LIMIT};
pub use transport::{RetryPolicy, TelegramError};

use albra_core::ports::{Notification, Notifier, NotifyError, TelegramCreds};
use async_trait::async_trait;
use std::time::Duration;

/// Sends every notification to the configured chat, tagged with its account, escaped for HTML
/// and split when long. Retries (see `transport`) stay within [`Self::BUDGET`] per
/// notification.
pub struct TelegramNotifier {
    client: BotClient,
    chat: String,
}

impl TelegramNotifier {
    pub const DEFAULT_URL: &'static str = BotClient::DEFAULT_URL;
    /// Environment variable that overrides [`Self::DEFAULT_URL`] (tests).
    pub const URL_ENV: &'static str = BotClient::URL_ENV;
    /// How long one notification may take, waits for rate limits and retries included: a
    /// notification must never hold a job past its own budget.
    pub const BUDGET: Duration = Duration::from_secs(15);

    /// A notifier for `ALBRA_TELEGRAM_API_URL`, or the Bot API when that is unset or empty.
    pub fn new(creds: TelegramCreds) -> Result<Self, String> {
        Ok(Self::from_client(
            BotClient::new(creds.bot_token)?,
            creds.chat_id,
        ))
    }

    /// A notifier for `base`, which must be https (plain http only to loopback): the bot token
    /// travels in every request's URL.
    pub fn with_base_url(creds: TelegramCreds, base: &str) -> Result<Self, String> {
        let client = BotClient::with_base_url(creds.bot_token, base)?;
        Ok(Self::from_client(client, creds.chat_id))
    }

    fn from_client(client: BotClient, chat: String) -> Self {
        TelegramNotifier { client, chat }
    }

    /// Sends `html` as it is (already escaped where it must be) to the chat, within `deadline`:
    /// the status report, which is laid out as HTML.
    pub async fn send_html(
        &self,
        html: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), TelegramError> {
        self.client
            .send_message(&self.chat, html, None, deadline)
            .await
            .map(drop)
    }

    /// The notification as the message text (HTML, everything it carries escaped).
    fn render(n: &Notification) -> String {
        html_escape(&format!(
            "[{}] {:?} {}: {}",
            n.account, n.priority, n.kind, n.text
        ))
    }
}

#[async_trait]
impl Notifier for TelegramNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let deadline = tokio::time::Instant::now() + Self::BUDGET;
        self.client
            .send_message(&self.chat, &Self::render(n), None, deadline)
            .await
            .map(drop)
            .map_err(|e| NotifyError::Undelivered {
                channel: "telegram",
                detail: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use albra_core::domain::AccountId;
    use albra_core::ports::Priority;

    fn n(id: &str, p: Priority) -> Notification {
        Notification {
            event_id: id.into(),
            account: AccountId::new("main"),
            priority: p,
            kind: "entry".into(),
            text: "hello".into(),
            time: 0,
        }
    }

    fn creds() -> TelegramCreds {
        TelegramCreds {
            bot_token: albra_core::ports::Secret::new("123456:bot-token-xyz"),
            chat_id: "42".into(),
        }
    }

    /// A redirect is not followed: the token (in the URL) reaches only the configured host, no
    /// request carries a Referer, and the error names the status.
    #[tokio::test]
    async fn telegram_follows_no_redirect() {
        use crate::http::test_server::{has_referer, json_ok, redirect, target, RawServer};
        let elsewhere = RawServer::start(|_| {
            json_ok(r#"{"ok":true,"result":{"message_id":1,"date":0,"chat":{"id":42,"type":"private"}}}"#)
        })
        .await;
        for status in [302, 307] {
            let to = elsewhere.base.clone();
            let server =
                RawServer::start(move |head| redirect(status, &format!("{to}{}", target(head))))
                    .await;
            let t = TelegramNotifier::with_base_url(creds(), &server.base).unwrap();
            let err = t
                .notify(&n("r", Priority::High))
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("HTTP {status}")), "{err}");
            assert!(!err.contains("bot-token-xyz"), "{err}");
            let heads = server.heads();
            assert_eq!(heads.len(), 1, "a redirect is not retried: {heads:?}");
            assert!(heads[0].contains("/bot123456:bot-token-xyz/sendMessage"));
            assert!(!has_referer(&heads[0]), "{heads:?}");
        }
        assert!(
            elsewhere.heads().is_empty(),
            "the redirect target received {:?}",
            elsewhere.heads()
        );
        // The same notifier pointed at the second server delivers (the test server works).
        let t = TelegramNotifier::with_base_url(creds(), &elsewhere.base).unwrap();
        t.notify(&n("ok", Priority::High)).await.unwrap();
        assert_eq!(elsewhere.heads().len(), 1);
    }

    #[test]
    fn telegram_needs_https_except_on_loopback() {
        for remote in ["http://example.com", "http://10.0.0.1:8080"] {
            let err = TelegramNotifier::with_base_url(creds(), remote)
                .err()
                .expect(remote);
            assert!(
                err.contains(remote) && err.contains("https is required"),
                "{err}"
            );
        }
        assert!(TelegramNotifier::with_base_url(creds(), "http://127.0.0.1:1").is_ok());
        assert!(TelegramNotifier::with_base_url(creds(), TelegramNotifier::DEFAULT_URL).is_ok());
    }
}
