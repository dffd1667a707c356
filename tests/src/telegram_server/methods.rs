//! The Bot API methods the server speaks, with the checks Telegram makes and its error texts.

use super::{html, now_s, Inner, Shared, TelegramTestServer, Webhook};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Telegram's limits, counted after entity parsing.
const MESSAGE_LIMIT: usize = 4096;
const CAPTION_LIMIT: usize = 1024;
/// Telegram's longest long poll.
const MAX_POLL_S: u64 = 50;

/// An error answer: HTTP status (= `error_code`), `description`, and for 429 `retry_after`.
#[derive(Clone, Debug)]
pub(super) struct ApiError {
    pub status: u16,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: u16, description: &str) -> Self {
        ApiError {
            status,
            description: description.to_string(),
            retry_after: None,
        }
    }
    /// 400 "Bad Request: …".
    pub fn bad(what: &str) -> Self {
        Self::new(400, &format!("Bad Request: {what}"))
    }
}

/// A call's parameters, whatever way they came, and its uploaded files.
#[derive(Default)]
pub(super) struct Params {
    pub map: Map<String, Value>,
    pub files: HashMap<String, Vec<u8>>,
}

impl Params {
    /// A parameter as text (a JSON number as its digits), absent when empty.
    pub fn str(&self, name: &str) -> Option<String> {
        match self.map.get(name)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name)
            .map(|s| {
                s.parse()
                    .map_err(|_| ApiError::bad(&format!("invalid {name} specified")))
            })
            .transpose()
    }
    fn flag(&self, name: &str) -> bool {
        self.str(name).is_some_and(|s| s == "true" || s == "1")
    }
    /// A JSON-valued parameter: an object in a JSON body, or its serialised text in a form.
    pub fn json(&self, name: &str) -> Option<Value> {
        match self.map.get(name)? {
            Value::String(s) => serde_json::from_str(s).ok(),
            Value::Null => None,
            v => Some(v.clone()),
        }
    }
    fn chat(&self) -> Result<String, ApiError> {
        self.str("chat_id")
            .ok_or_else(|| ApiError::bad("chat_id is empty"))
    }
}

type Answer = Result<Value, ApiError>;

pub(super) async fn run(shared: &Shared, method: &str, p: &Params) -> Answer {
    // Telegram's method names are case-insensitive.
    match method.to_ascii_lowercase().as_str() {
        "getme" => Ok(bot_user()),
        "sendmessage" => send_message(&mut shared.lock(), p),
        "editmessagetext" => edit_message_text(&mut shared.lock(), p),
        "answercallbackquery" => answer_callback_query(&mut shared.lock(), p),
        "sendphoto" => send_photo(&mut shared.lock(), p),
        "setwebhook" => set_webhook(&mut shared.lock(), p),
        "deletewebhook" => delete_webhook(&mut shared.lock(), p),
        "getwebhookinfo" => Ok(webhook_info(&shared.lock())),
        "getupdates" => get_updates(shared, p).await,
        _ => Err(ApiError::new(404, "Not Found")),
    }
}

/// The bot, as getMe describes it.
pub(super) fn bot_user() -> Value {
    json!({
        "id": TelegramTestServer::BOT_ID,
        "is_bot": true,
        "first_name": "Albra Test Bot",
        "username": "albra_test_bot",
        "can_join_groups": true,
        "can_read_all_group_messages": false,
        "supports_inline_queries": false,
    })
}

/// The text Telegram would show, checked against its parser and `limit`.
fn checked_text(p: &Params, field: &str, limit: usize) -> Result<Option<String>, ApiError> {
    let Some(source) = p.str(field) else {
        return Ok(None);
    };
    let shown = match p.str("parse_mode").as_deref() {
        None => source,
        Some(m) if m.eq_ignore_ascii_case("html") => html::parse(&source)
            .map_err(|e| ApiError::bad(&format!("can't parse entities: {e}")))?,
        Some(_) => return Err(ApiError::bad("unsupported parse_mode")),
    };
    if shown.encode_utf16().count() > limit {
        let what = if field == "caption" {
            "message caption is too long"
        } else {
            "message is too long"
        };
        return Err(ApiError::bad(what));
    }
    Ok(Some(shown))
}

/// `reply_markup`, which must be a keyboard object when given.
fn markup(p: &Params) -> Result<Option<Value>, ApiError> {
    if !p.map.contains_key("reply_markup") {
        return Ok(None);
    }
    match p.json("reply_markup") {
        Some(v) if v.get("inline_keyboard").is_some_and(Value::is_array) => Ok(Some(v)),
        _ => Err(ApiError::bad(
            "can't parse inline keyboard button: InlineKeyboardButton must be an Object",
        )),
    }
}

fn message_json(chat: &str, message_id: i64, text: &str, markup: &Option<Value>) -> Value {
    let mut m = json!({
        "message_id": message_id,
        "from": bot_user(),
        "chat": chat_json(chat),
        "date": now_s(),
        "text": text,
    });
    if let Some(markup) = markup {
        m["reply_markup"] = markup.clone();
    }
    m
}

fn chat_json(chat: &str) -> Value {
    match chat.parse::<i64>() {
        Ok(id) if id < 0 => json!({"id": id, "type": "supergroup", "title": "Albra ops"}),
        Ok(id) => json!({"id": id, "type": "private", "first_name": "Operator"}),
        Err(_) => json!({"id": -100_000_000_001i64, "type": "channel", "title": chat}),
    }
}

fn send_message(g: &mut Inner, p: &Params) -> Answer {
    let chat = p.chat()?;
    let text = checked_text(p, "text", MESSAGE_LIMIT)?
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::bad("message text is empty"))?;
    let markup = markup(p)?;
    let id = g.take_message_id();
    let message = message_json(&chat, id, &text, &markup);
    g.messages.insert((chat, id), (text, markup));
    Ok(message)
}

fn edit_message_text(g: &mut Inner, p: &Params) -> Answer {
    let chat = p.chat()?;
    let id = p
        .int("message_id")?
        .ok_or_else(|| ApiError::bad("message identifier is not specified"))?;
    let text = checked_text(p, "text", MESSAGE_LIMIT)?
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::bad("message text is empty"))?;
    let markup = markup(p)?;
    let stored = g
        .messages
        .get_mut(&(chat.clone(), id))
        .ok_or_else(|| ApiError::bad("message to edit not found"))?;
    if stored.0 == text && stored.1 == markup {
        return Err(ApiError::bad(
            "message is not modified: specified new message content and reply markup are \
             exactly the same as a current content and reply markup of the message",
        ));
    }
    *stored = (text.clone(), markup.clone());
    Ok(message_json(&chat, id, &text, &markup))
}

fn answer_callback_query(g: &mut Inner, p: &Params) -> Answer {
    checked_text(p, "text", 200)?;
    let id = p.str("callback_query_id").unwrap_or_default();
    if !g.callbacks.remove(&id) {
        return Err(ApiError::bad(
            "query is too old and response timeout expired or query ID is invalid",
        ));
    }
    Ok(json!(true))
}

fn send_photo(g: &mut Inner, p: &Params) -> Answer {
    let chat = p.chat()?;
    let caption = checked_text(p, "caption", CAPTION_LIMIT)?;
    let Some(bytes) = p.files.get("photo") else {
        return Err(ApiError::bad("there is no photo in the request"));
    };
    let Some((width, height)) = png_size(bytes) else {
        return Err(ApiError::bad("IMAGE_PROCESS_FAILED"));
    };
    let id = g.take_message_id();
    let mut m = message_json(&chat, id, "", &None);
    m.as_object_mut().map(|o| o.remove("text"));
    m["photo"] = json!([{
        "file_id": format!("photo-{id}"),
        "file_unique_id": format!("u{id}"),
        "width": width,
        "height": height,
        "file_size": bytes.len(),
    }]);
    if let Some(caption) = caption {
        m["caption"] = json!(caption);
    }
    Ok(m)
}

/// Width and height of a PNG (its IHDR chunk), `None` when it is not one.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(MAGIC) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    Some((be(16), be(20)))
}

fn set_webhook(g: &mut Inner, p: &Params) -> Answer {
    let url = p.str("url").unwrap_or_default();
    if url.is_empty() {
        g.webhook = None;
        return Ok(json!(true));
    }
    // Telegram takes https only; loopback http is accepted too so tests can receive updates.
    let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"];
    if !url.starts_with("https://") && !loopback.iter().any(|l| url.starts_with(l)) {
        return Err(ApiError::bad(
            "bad webhook: An HTTPS URL must be provided for webhook",
        ));
    }
    let secret = p.str("secret_token");
    let valid = |s: &String| {
        s.len() <= 256
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if secret.as_ref().is_some_and(|s| !valid(s)) {
        return Err(ApiError::bad("secret token contains unallowed characters"));
    }
    let allowed_updates = p.json("allowed_updates").and_then(|v| {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
    });
    if p.flag("drop_pending_updates") {
        g.updates.clear();
    }
    g.webhook = Some(Webhook {
        url,
        secret_token: secret,
        allowed_updates,
    });
    Ok(json!(true))
}

fn delete_webhook(g: &mut Inner, p: &Params) -> Answer {
    if p.flag("drop_pending_updates") {
        g.updates.clear();
    }
    g.webhook = None;
    Ok(json!(true))
}

fn webhook_info(g: &Inner) -> Value {
    let mut info = json!({
        "url": g.webhook.as_ref().map_or("", |w| w.url.as_str()),
        "has_custom_certificate": false,
        "pending_update_count": g.updates.len(),
    });
    if let Some(allowed) = g.webhook.as_ref().and_then(|w| w.allowed_updates.clone()) {
        info["allowed_updates"] = json!(allowed);
    }
    info
}

/// Long poll: answers at once when updates at or after `offset` are queued, else when one is
/// pushed or `timeout` seconds pass. An offset confirms (drops) every update below it; a
/// negative one keeps only the last `-offset`.
async fn get_updates(shared: &Shared, p: &Params) -> Answer {
    let offset = p.int("offset")?;
    let limit = p.int("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = p.int("timeout")?.unwrap_or(0).clamp(0, MAX_POLL_S as i64) as u64;
    let until = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut pushed = shared.pushed.subscribe();
    loop {
        pushed.mark_unchanged();
        {
            let mut g = shared.lock();
            if g.webhook.is_some() {
                return Err(ApiError::new(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use \
                     deleteWebhook to delete the webhook first",
                ));
            }
            confirm(&mut g, offset);
            if !g.updates.is_empty() {
                return Ok(Value::Array(
                    g.updates.iter().take(limit).cloned().collect(),
                ));
            }
        }
        if tokio::time::timeout_at(until, pushed.changed())
            .await
            .is_err()
        {
            return Ok(json!([]));
        }
    }
}

fn confirm(g: &mut Inner, offset: Option<i64>) {
    match offset {
        Some(o) if o < 0 => {
            let keep = o.unsigned_abs() as usize;
            while g.updates.len() > keep {
                g.updates.pop_front();
            }
        }
        Some(o) => g
            .updates
            .retain(|u| u["update_id"].as_i64().is_some_and(|id| id >= o)),
        None => {}
    }
}
