//! Telegram Bot API notifier: `sendMessage` to the configured chat, retried with backoff, through
//! the outbound HTTP policy of [`crate::http`] (the bot token travels in the URL).

use albra_core::ports::{Notification, Notifier, NotifyError, TelegramCreds};
use async_trait::async_trait;
use std::time::Duration;

/// Telegram Bot API `sendMessage`, retried with exponential backoff. Every message is tagged with
/// its account.
pub struct TelegramNotifier {
    http: reqwest::Client,
    base: String,
    creds: TelegramCreds,
    attempts: u32,
    backoff: Duration,
}

impl TelegramNotifier {
    pub const DEFAULT_URL: &'static str = "https://api.telegram.org";
    /// Environment variable that overrides [`Self::DEFAULT_URL`] (tests).
    pub const URL_ENV: &'static str = "ALBRA_TELEGRAM_API_URL";

    /// A notifier for `ALBRA_TELEGRAM_API_URL`, or the Bot API when that is unset or empty.
    pub fn new(creds: TelegramCreds) -> Result<Self, String> {
        let base = std::env::var(Self::URL_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| Self::DEFAULT_URL.to_string());
        Self::with_base_url(creds, &base)
    }

    /// A notifier for `base`, which must be https (plain http only to loopback): the bot token
    /// travels in every request's URL.
    pub fn with_base_url(creds: TelegramCreds, base: &str) -> Result<Self, String> {
        let base = base.trim().trim_end_matches('/');
        let url = crate::http::checked_base_url("Telegram API URL", base)?;
        // No redirects and no Referer (see `crate::http`): the token reaches only `base`.
        let http = crate::http::client_builder(&url, Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the Telegram HTTP client: {e}"))?;
        Ok(TelegramNotifier {
            http,
            base: base.to_string(),
            creds,
            attempts: 3,
            backoff: Duration::from_millis(500),
        })
    }
}

#[async_trait]
impl Notifier for TelegramNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let url = format!(
            "{}/bot{}/sendMessage",
            self.base,
            self.creds.bot_token.expose()
        );
        let body = serde_json::json!({
            "chat_id": self.creds.chat_id,
            "text": format!("[{}] {:?} {}: {}", n.account, n.priority, n.kind, n.text),
            "disable_web_page_preview": true,
        });
        let mut wait = self.backoff;
        let mut last = String::new();
        for attempt in 0..self.attempts {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            match self.http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                // Never followed (it would send the token elsewhere), and asking again would
                // get the same answer.
                Ok(r) if r.status().is_redirection() => {
                    return Err(undelivered(format!(
                        "sendMessage answered HTTP {}, a redirect, which is never followed; \
                         check {}",
                        r.status(),
                        Self::URL_ENV
                    )))
                }
                // The token is part of the URL: report the status only, never the URL.
                Ok(r) => last = format!("sendMessage answered HTTP {}", r.status()),
                Err(e) => last = format!("sendMessage failed: {}", e.without_url()),
            }
        }
        Err(undelivered(last))
    }
}

fn undelivered(detail: String) -> NotifyError {
    NotifyError::Undelivered {
        channel: "telegram",
        detail,
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
        let elsewhere = RawServer::start(|_| json_ok(r#"{"ok":true}"#)).await;
        for status in [302, 307] {
            let to = elsewhere.base.clone();
            let server =
                RawServer::start(move |head| redirect(status, &format!("{to}{}", target(head))))
                    .await;
            let mut t = TelegramNotifier::with_base_url(creds(), &server.base).unwrap();
            t.backoff = Duration::from_millis(1);
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
