//! A Telegram-Bot-API-speaking HTTP server on loopback: the stand-in for `api.telegram.org` in the
//! integration tests. The real [`albra_adapters::telegram::BotClient`] talks to it through its
//! base URL (`ALBRA_TELEGRAM_API_URL` for the binaries).
//!
//! It answers `/bot<token>/<method>` for sendMessage, sendPhoto (multipart), editMessageText,
//! answerCallbackQuery, setWebhook, deleteWebhook, getWebhookInfo, getUpdates (long poll, offset
//! confirming) and getMe, in Telegram's envelope (`{"ok":true,"result":…}` or
//! `{"ok":false,"error_code":…,"description":…}`), with Telegram's rules: a wrong token is 401,
//! a text over 4096 characters (after entity parsing) or HTML Telegram cannot parse is 400.
//!
//! Tests read every call ([`BotCall`], with when it arrived), queue updates for getUpdates
//! ([`TelegramTestServer::push_message`], [`TelegramTestServer::push_callback`]), inject faults
//! ([`TelegramTestServer::fail_next`]: 429 with `retry_after`, 500, 502; and
//! [`TelegramTestServer::set_delay`], a slow answer) and post updates to a webhook as Telegram does
//! ([`post_to_webhook`]).
//!
//! Files: `http.rs` routes a request, reads its parameters and applies faults; `methods.rs`
//! implements each Bot API method; `html.rs` is Telegram's HTML parser.

mod html;
mod http;
mod methods;

use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// One Bot API call as the server received it and answered it.
#[derive(Clone, Debug, PartialEq)]
pub struct BotCall {
    /// The method as named in the path (`sendMessage`).
    pub method: String,
    /// `chat_id` as sent (a number is recorded as its decimal text).
    pub chat_id: Option<String>,
    /// `text`, or the caption of a photo.
    pub text: Option<String>,
    pub parse_mode: Option<String>,
    /// `reply_markup`, parsed.
    pub reply_markup: Option<Value>,
    /// Bytes of the uploaded `photo`.
    pub photo_len: Option<usize>,
    /// The uploaded `photo` itself (the tests check what a picture holds).
    pub photo: Option<Vec<u8>>,
    /// Every parameter (query, JSON, form or multipart text field).
    pub params: Map<String, Value>,
    /// HTTP status of the answer.
    pub status: u16,
    /// Telegram's `description` when it refused the call.
    pub description: Option<String>,
    /// When the server received it (before any delay it was told to add).
    pub at: std::time::Instant,
}

/// A fault answered instead of the method's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 429 "Too Many Requests: retry after N" with `parameters.retry_after = N`.
    RetryAfter(u64),
    /// 500 with Telegram's JSON, or 502 with the HTML page of the proxy in front of it (as the
    /// real Bot API does), or any other status with a JSON error.
    Status(u16),
}

/// The webhook as set by setWebhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret_token: Option<String>,
    pub allowed_updates: Option<Vec<String>>,
}

#[derive(Default)]
pub(crate) struct Inner {
    calls: Vec<BotCall>,
    /// Unconfirmed updates, oldest first.
    updates: VecDeque<Value>,
    next_update_id: u64,
    next_message_id: i64,
    /// Sent messages by (chat, message id): text and reply markup (for editMessageText).
    messages: HashMap<(String, i64), (String, Option<Value>)>,
    /// Callback query ids queued and not yet answered.
    callbacks: HashSet<String>,
    faults: HashMap<String, VecDeque<Fault>>,
    webhook: Option<Webhook>,
    /// Every call waits this long before it is answered (a slow Telegram).
    delay: Option<std::time::Duration>,
}

pub(crate) struct Shared {
    token: String,
    inner: Mutex<Inner>,
    /// Bumped when an update is queued, waking long polls.
    pushed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The server; stops when dropped.
pub struct TelegramTestServer {
    /// Base URL (`http://127.0.0.1:port`), what the client takes as its API URL.
    pub url: String,
    shared: Arc<Shared>,
}

impl Drop for TelegramTestServer {
    fn drop(&mut self) {
        let _ = self.shared.shutdown.send(true);
    }
}

impl TelegramTestServer {
    /// The token [`start`](Self::start) accepts.
    pub const TOKEN: &'static str = "123456789:AAtest-token_for-the-loopback-bot";
    /// The bot's user id (the number before the token's colon).
    pub const BOT_ID: u64 = 123_456_789;

    /// Binds `127.0.0.1:0`, accepting [`Self::TOKEN`].
    pub async fn start() -> TelegramTestServer {
        Self::start_with_token(Self::TOKEN).await
    }

    /// Binds `127.0.0.1:0`, accepting `token` only (any other is 401 Unauthorized).
    pub async fn start_with_token(token: &str) -> TelegramTestServer {
        let shared = Arc::new(Shared {
            token: token.to_string(),
            inner: Mutex::new(Inner {
                next_update_id: 100_000,
                next_message_id: 1,
                ..Inner::default()
            }),
            pushed: watch::channel(0).0,
            shutdown: watch::channel(false).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Telegram test server on 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        let app = axum::Router::new()
            .fallback(http::handle)
            .with_state(shared.clone());
        let mut stop = shared.shutdown.subscribe();
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("telegram test server stopped: {e}");
            }
        });
        TelegramTestServer { url, shared }
    }

    /// Every call so far, in arrival order (a long poll is recorded when it answers).
    pub fn calls(&self) -> Vec<BotCall> {
        self.shared.lock().calls.clone()
    }

    /// The calls to `method`.
    pub fn calls_to(&self, method: &str) -> Vec<BotCall> {
        let calls = self.shared.lock().calls.clone();
        calls.into_iter().filter(|c| c.method == method).collect()
    }

    /// The next `n` calls to `method` answer `fault` (after the ones already queued).
    pub fn fail_next(&self, method: &str, n: usize, fault: Fault) {
        let mut g = self.shared.lock();
        let queue = g.faults.entry(method.to_string()).or_default();
        queue.extend(std::iter::repeat_n(fault, n));
    }

    /// Every call from now on waits `delay` before it is answered (`None`: answers at once).
    pub fn set_delay(&self, delay: Option<std::time::Duration>) {
        self.shared.lock().delay = delay;
    }

    /// Queues a text message from user `user_id` in chat `chat_id`, sent at `date` (s since the
    /// epoch). Returns its update id.
    pub fn push_message(&self, chat_id: i64, user_id: u64, date: u64, text: &str) -> u64 {
        self.push(|id, g| {
            let message_id = g.take_message_id();
            message_update(id, message_id, chat_id, user_id, date, text)
        })
    }

    /// Queues a press on a button with `data` under the bot's message `message_id` in
    /// `chat_id`. Returns the update id and the callback query id (for answerCallbackQuery).
    pub fn push_callback(
        &self,
        chat_id: i64,
        user_id: u64,
        message_id: i64,
        data: &str,
    ) -> (u64, String) {
        let query_id = format!("cbq-{}", self.shared.lock().next_update_id);
        let q = query_id.clone();
        let update_id = self.push(|id, g| {
            g.callbacks.insert(q.clone());
            callback_update(id, &q, chat_id, user_id, message_id, data)
        });
        (update_id, query_id)
    }

    fn push(&self, make: impl FnOnce(u64, &mut Inner) -> Value) -> u64 {
        let id = {
            let mut g = self.shared.lock();
            let id = g.next_update_id;
            g.next_update_id += 1;
            let update = make(id, &mut g);
            g.updates.push_back(update);
            id
        };
        self.shared.pushed.send_modify(|n| *n += 1);
        id
    }

    /// Updates queued and not yet confirmed by an offset.
    pub fn pending_updates(&self) -> usize {
        self.shared.lock().updates.len()
    }

    /// The webhook, if one is set.
    pub fn webhook(&self) -> Option<Webhook> {
        self.shared.lock().webhook.clone()
    }

    /// The current text of a message the bot sent (after any edit).
    pub fn message_text(&self, chat_id: &str, message_id: i64) -> Option<String> {
        let g = self.shared.lock();
        g.messages
            .get(&(chat_id.to_string(), message_id))
            .map(|(text, _)| text.clone())
    }
}

impl Inner {
    fn take_message_id(&mut self) -> i64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }
}

/// Seconds since the epoch (Telegram's `date`).
pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A user as Telegram describes one.
fn user(id: u64) -> Value {
    json!({"id": id, "is_bot": false, "first_name": "Operator", "username": format!("op{id}")})
}

/// A private chat (a negative id is a group).
fn chat(id: i64) -> Value {
    if id < 0 {
        json!({"id": id, "type": "supergroup", "title": "Albra ops"})
    } else {
        json!({"id": id, "type": "private", "first_name": "Operator"})
    }
}

/// An update carrying a text message, as Telegram sends it (getUpdates or webhook).
pub fn message_update(
    update_id: u64,
    message_id: i64,
    chat_id: i64,
    user_id: u64,
    date: u64,
    text: &str,
) -> Value {
    let mut message = json!({
        "message_id": message_id,
        "from": user(user_id),
        "chat": chat(chat_id),
        "date": date,
        "text": text,
    });
    // Telegram marks a leading command as a bot_command entity.
    if text.starts_with('/') {
        let len = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .encode_utf16()
            .count();
        message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
    }
    json!({"update_id": update_id, "message": message})
}

/// An update carrying a button press, as Telegram sends it.
pub fn callback_update(
    update_id: u64,
    query_id: &str,
    chat_id: i64,
    user_id: u64,
    message_id: i64,
    data: &str,
) -> Value {
    json!({
        "update_id": update_id,
        "callback_query": {
            "id": query_id,
            "from": user(user_id),
            "message": {
                "message_id": message_id,
                "from": methods::bot_user(),
                "chat": chat(chat_id),
                "date": now_s(),
                "text": "…",
            },
            "chat_instance": format!("ci-{chat_id}"),
            "data": data,
        }
    })
}

/// Posts `update` to a webhook `url` as Telegram does: JSON body, and the secret given to
/// setWebhook in `X-Telegram-Bot-Api-Secret-Token`. Returns the HTTP status of the answer.
pub async fn post_to_webhook(
    url: &str,
    secret_token: Option<&str>,
    update: &Value,
) -> reqwest::Result<u16> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut request = client.post(url).json(update);
    if let Some(secret) = secret_token {
        request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
    }
    Ok(request.send().await?.status().as_u16())
}
