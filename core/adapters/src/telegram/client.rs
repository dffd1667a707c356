//! [`BotClient`]: the Bot API methods the operator surface uses, typed with `frankenstein`'s
//! parameter and result types and sent by our own reqwest client (see `transport`), so the
//! outbound policy of `crate::http` holds for every call.
//!
//! Every method takes the caller's `deadline`: retries, Telegram's `retry_after` waits and the
//! per-chat rate limit (`ratelimit`, applied to every message sent) never run past it (a job has
//! a budget, and a notification is not worth blowing it).

use super::ratelimit::{is_group, ChatLimiter};
use super::text::{split_html, tg_len, CAPTION_LIMIT, MESSAGE_LIMIT};
use super::transport::{Payload, RetryPolicy, TelegramError, Transport};
use albra_core::ports::Secret;
use frankenstein::methods::{
    AnswerCallbackQueryParams, DeleteWebhookParams, EditMessageTextParams, GetUpdatesParams,
    SendMessageParams, SetWebhookParams,
};
use frankenstein::types::{
    AllowedUpdate, ChatId, InlineKeyboardMarkup, LinkPreviewOptions, ReplyMarkup, User,
};
use frankenstein::updates::{Update, WebhookInfo};
use frankenstein::ParseMode;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Whole-request timeout of an ordinary call.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Telegram's longest `getUpdates` long poll.
const MAX_POLL: Duration = Duration::from_secs(50);

/// A Telegram Bot API client for one bot.
pub struct BotClient {
    transport: Transport,
    /// The process's per-chat limits (see `ratelimit`).
    limiter: Arc<ChatLimiter>,
}

impl BotClient {
    pub const DEFAULT_URL: &'static str = "https://api.telegram.org";
    /// Environment variable that overrides [`Self::DEFAULT_URL`] (tests).
    pub const URL_ENV: &'static str = "ALBRA_TELEGRAM_API_URL";

    /// A client for `ALBRA_TELEGRAM_API_URL`, or the Bot API when that is unset or empty.
    pub fn new(token: Secret) -> Result<Self, String> {
        let base = std::env::var(Self::URL_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| Self::DEFAULT_URL.to_string());
        Self::with_base_url(token, &base)
    }

    /// A client for `base`, which must be https (plain http only to loopback): the bot token
    /// travels in every request's URL.
    pub fn with_base_url(token: Secret, base: &str) -> Result<Self, String> {
        let base = base.trim().trim_end_matches('/');
        let url = crate::http::checked_base_url("Telegram API URL", base)?;
        // No redirects and no Referer (see `crate::http`): the token reaches only `base`. The
        // timeout is set per request (a long poll needs more than an ordinary call).
        let http = crate::http::client_builder(&url, MAX_POLL + TIMEOUT)
            .build()
            .map_err(|e| format!("cannot build the Telegram HTTP client: {e}"))?;
        Ok(BotClient {
            transport: Transport {
                http,
                base: base.to_string(),
                token,
                retry: RetryPolicy::default(),
                timeout: TIMEOUT,
            },
            limiter: ChatLimiter::process(),
        })
    }

    /// The same client with another retry policy for 5xx and network failures.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.transport.retry = retry;
        self
    }

    /// Sends `html` (`parse_mode=HTML`; escape untrusted text with `html_escape`) to `chat`, as
    /// several messages in order when it is longer than Telegram's limit. The keyboard goes under
    /// the last part. Returns the message ids, in order.
    ///
    /// Parts already sent stay sent if a later one fails: the error says which method failed,
    /// and the caller's retry resends the whole text.
    pub async fn send_message(
        &self,
        chat: &str,
        html: &str,
        keyboard: Option<InlineKeyboardMarkup>,
        deadline: Instant,
    ) -> Result<Vec<i32>, TelegramError> {
        let parts = split_html(html, MESSAGE_LIMIT);
        let last = parts.len() - 1;
        let mut ids = Vec::with_capacity(parts.len());
        for (i, part) in parts.into_iter().enumerate() {
            let params = SendMessageParams::builder()
                .chat_id(chat_id(chat))
                .text(part)
                .parse_mode(ParseMode::Html)
                .link_preview_options(no_preview())
                .maybe_reply_markup(
                    keyboard
                        .clone()
                        .filter(|_| i == last)
                        .map(ReplyMarkup::InlineKeyboardMarkup),
                )
                .build();
            self.chat_slot("sendMessage", chat, deadline).await?;
            let sent: Sent = self.json("sendMessage", &params, deadline).await?;
            ids.push(sent.message_id);
        }
        Ok(ids)
    }

    /// Replaces the text (and keyboard) of a message the bot sent. An edit cannot be split: a
    /// text over the limit is refused before sending. Editing to the same text and keyboard is
    /// a success (Telegram answers "message is not modified", which only means there was
    /// nothing to do).
    pub async fn edit_message_text(
        &self,
        chat: &str,
        message_id: i32,
        html: &str,
        keyboard: Option<InlineKeyboardMarkup>,
        deadline: Instant,
    ) -> Result<(), TelegramError> {
        const METHOD: &str = "editMessageText";
        if tg_len(html) > MESSAGE_LIMIT {
            let detail = format!("text of {} characters, over {MESSAGE_LIMIT}", tg_len(html));
            return Err(self.transport.invalid(METHOD, detail));
        }
        let params = EditMessageTextParams::builder()
            .chat_id(chat_id(chat))
            .message_id(message_id)
            .text(html)
            .parse_mode(ParseMode::Html)
            .link_preview_options(no_preview())
            .maybe_reply_markup(keyboard)
            .build();
        match self
            .json::<serde_json::Value>(METHOD, &params, deadline)
            .await
        {
            Err(TelegramError::Rejected { description, .. })
                if description.contains("message is not modified") =>
            {
                Ok(())
            }
            other => other.map(drop),
        }
    }

    /// Acknowledges a button press (the client stops its spinner), with an optional toast.
    pub async fn answer_callback_query(
        &self,
        callback_query_id: &str,
        text: Option<&str>,
        deadline: Instant,
    ) -> Result<(), TelegramError> {
        let params = AnswerCallbackQueryParams::builder()
            .callback_query_id(callback_query_id)
            .maybe_text(text.map(str::to_string))
            .build();
        self.json::<bool>("answerCallbackQuery", &params, deadline)
            .await
            .map(drop)
    }

    /// Uploads a PNG to `chat` (multipart), with an optional HTML caption. Returns its message
    /// id.
    pub async fn send_photo(
        &self,
        chat: &str,
        png: Vec<u8>,
        caption: Option<&str>,
        deadline: Instant,
    ) -> Result<i32, TelegramError> {
        const METHOD: &str = "sendPhoto";
        let mut fields = vec![("chat_id", chat.to_string())];
        if let Some(caption) = caption {
            if tg_len(caption) > CAPTION_LIMIT {
                let detail = format!(
                    "caption of {} characters, over {CAPTION_LIMIT}",
                    tg_len(caption)
                );
                return Err(self.transport.invalid(METHOD, detail));
            }
            fields.push(("caption", caption.to_string()));
            fields.push(("parse_mode", "HTML".to_string()));
        }
        let payload = Payload::Multipart {
            fields,
            file: ("photo", "chart.png", "image/png", png),
        };
        self.chat_slot(METHOD, chat, deadline).await?;
        let sent: Sent = self
            .transport
            .call(METHOD, &payload, Duration::ZERO, deadline)
            .await?;
        Ok(sent.message_id)
    }

    /// Points Telegram at `url` for updates; each delivery carries `secret_token` in the
    /// `X-Telegram-Bot-Api-Secret-Token` header. `allowed_updates` empty means Telegram's
    /// default (all but a few kinds).
    pub async fn set_webhook(
        &self,
        url: &str,
        secret_token: &Secret,
        allowed_updates: &[AllowedUpdate],
        deadline: Instant,
    ) -> Result<(), TelegramError> {
        let params = SetWebhookParams::builder()
            .url(url)
            .secret_token(secret_token.expose())
            .allowed_updates(allowed_updates.to_vec())
            .build();
        self.json::<bool>("setWebhook", &params, deadline)
            .await
            .map(drop)
    }

    /// Removes the webhook (updates then wait for `getUpdates`), dropping the pending ones if
    /// asked.
    pub async fn delete_webhook(
        &self,
        drop_pending_updates: bool,
        deadline: Instant,
    ) -> Result<(), TelegramError> {
        let params = DeleteWebhookParams::builder()
            .drop_pending_updates(drop_pending_updates)
            .build();
        self.json::<bool>("deleteWebhook", &params, deadline)
            .await
            .map(drop)
    }

    /// The webhook as Telegram has it (empty `url` when none).
    pub async fn get_webhook_info(&self, deadline: Instant) -> Result<WebhookInfo, TelegramError> {
        self.json("getWebhookInfo", &serde_json::json!({}), deadline)
            .await
    }

    /// Updates from `offset` on (an offset confirms every update below it), waiting up to
    /// `timeout` (at most 50 s, and cut to end a second before `deadline`) for one to arrive.
    pub async fn get_updates(
        &self,
        offset: Option<i64>,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<UpdateBatch, TelegramError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let poll = timeout
            .min(MAX_POLL)
            .min(left.saturating_sub(Duration::from_secs(1)));
        let params = GetUpdatesParams::builder()
            .maybe_offset(offset)
            .timeout(poll.as_secs() as u32)
            .build();
        let payload = Payload::Json(self.to_json("getUpdates", &params)?);
        let raw: Vec<serde_json::Value> = self
            .transport
            .call("getUpdates", &payload, poll, deadline)
            .await?;
        Ok(UpdateBatch::read(raw))
    }

    /// The bot itself (checks the token).
    pub async fn get_me(&self, deadline: Instant) -> Result<User, TelegramError> {
        self.json("getMe", &serde_json::json!({}), deadline).await
    }

    /// Waits for `chat`'s next message slot, or fails at once when it falls past `deadline`.
    async fn chat_slot(
        &self,
        method: &'static str,
        chat: &str,
        deadline: Instant,
    ) -> Result<(), TelegramError> {
        let key = format!("{}#{chat}", self.transport.base);
        self.limiter
            .wait(&key, is_group(chat), deadline)
            .await
            .map_err(|wait| TelegramError::ChatRateLimited {
                method,
                wait,
                left: deadline.saturating_duration_since(Instant::now()),
            })
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        params: &impl Serialize,
        deadline: Instant,
    ) -> Result<T, TelegramError> {
        let payload = Payload::Json(self.to_json(method, params)?);
        self.transport
            .call(method, &payload, Duration::ZERO, deadline)
            .await
    }

    fn to_json(
        &self,
        method: &'static str,
        params: &impl Serialize,
    ) -> Result<serde_json::Value, TelegramError> {
        serde_json::to_value(params).map_err(|e| self.transport.invalid(method, e))
    }
}

/// The chat as configured: Telegram takes a numeric id as a string as well as `@channel`.
fn chat_id(chat: &str) -> ChatId {
    ChatId::String(chat.to_string())
}

/// What is read of a sent message: its id only. A message the bot just sent is not worth
/// failing over a field `frankenstein`'s `Message` does not know yet, since the caller would
/// then send it again.
#[derive(serde::Deserialize)]
struct Sent {
    message_id: i32,
}

/// One `getUpdates` answer.
#[derive(Debug)]
pub struct UpdateBatch {
    /// The updates, in order, that `frankenstein`'s `Update` reads.
    pub updates: Vec<Update>,
    /// The offset that confirms the whole batch (unreadable updates included), `None` when it
    /// was empty.
    pub next_offset: Option<i64>,
    /// Updates skipped because they could not be read (a kind newer than `frankenstein`).
    pub unreadable: usize,
}

impl UpdateBatch {
    /// Reads each update on its own: one Telegram adds tomorrow must not block the others, nor
    /// be fetched again forever for want of being confirmed.
    fn read(raw: Vec<serde_json::Value>) -> Self {
        let next_offset = raw
            .iter()
            .filter_map(|u| u["update_id"].as_i64())
            .max()
            .map(|id| id + 1);
        let mut updates = Vec::with_capacity(raw.len());
        let mut unreadable = 0;
        for u in raw {
            let id = u["update_id"].as_i64();
            match serde_json::from_value::<Update>(u) {
                Ok(update) => updates.push(update),
                Err(e) => {
                    unreadable += 1;
                    tracing::warn!(update_id = ?id, error = %e, "Telegram update skipped: unreadable");
                }
            }
        }
        UpdateBatch {
            updates,
            next_offset,
            unreadable,
        }
    }
}

/// Alerts carry links (Binance, dashboards) whose previews would only add noise.
fn no_preview() -> LinkPreviewOptions {
    LinkPreviewOptions::builder().is_disabled(true).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_unreadable_update_is_skipped_and_still_confirmed() {
        let message = json!({"update_id": 7, "message": {
            "message_id": 1, "date": 0, "chat": {"id": 42, "type": "private"}, "text": "/status"
        }});
        let unknown = json!({"update_id": 8, "something_new": {"x": 1}});
        let batch = UpdateBatch::read(vec![message, unknown]);
        assert_eq!(batch.updates.len(), 1);
        assert_eq!(batch.updates[0].update_id, 7);
        assert_eq!((batch.next_offset, batch.unreadable), (Some(9), 1));
        let empty = UpdateBatch::read(vec![]);
        assert_eq!((empty.next_offset, empty.unreadable), (None, 0));
    }
}
