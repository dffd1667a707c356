//! The real `BotClient` (reqwest) against the loopback Telegram Bot API server: every method on
//! the wire, Telegram's limits respected (long texts split, HTML escaped), and each failure class
//! handled as Telegram asks (429 waits `retry_after` within the deadline, 5xx retried, other 4xx
//! reported with Telegram's description and never retried). No error ever carries the token.

use albra_adapters::telegram::api::types::{
    AllowedUpdate, InlineKeyboardButton, InlineKeyboardMarkup, MaybeInaccessibleMessage,
};
use albra_adapters::telegram::api::updates::UpdateContent;
use albra_adapters::telegram::{
    html_escape, BotClient, RetryPolicy, TelegramError, TelegramNotifier,
};
use albra_core::domain::AccountId;
use albra_core::ports::{Notification, Notifier, Priority, Secret, TelegramCreds};
use albra_tests::telegram_server::{message_update, post_to_webhook, Fault, TelegramTestServer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const CHAT: &str = "4242";

fn client(server: &TelegramTestServer) -> BotClient {
    BotClient::with_base_url(Secret::new(TelegramTestServer::TOKEN), &server.url)
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(50),
        })
}

fn within(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// The error's text, checked free of the token (Display and Debug alike).
fn shown(e: &TelegramError) -> String {
    let (text, debug) = (e.to_string(), format!("{e:?}"));
    for s in [&text, &debug] {
        assert!(!s.contains(TelegramTestServer::TOKEN), "token leaked: {s}");
        assert!(!s.contains("AAtest-token"), "token leaked: {s}");
    }
    text
}

fn keyboard() -> InlineKeyboardMarkup {
    let button = InlineKeyboardButton::builder()
        .text("Pause")
        .callback_data("pause:main")
        .build();
    InlineKeyboardMarkup::builder()
        .inline_keyboard(vec![vec![button]])
        .build()
}

#[tokio::test]
async fn a_long_text_arrives_as_ordered_parts_each_accepted() {
    let server = TelegramTestServer::start().await;
    let (mut html, mut shown_text) = (String::new(), String::new());
    for i in 0..200 {
        html.push_str(&format!("<b>{i:03}</b> {} &lt;ok&gt;\n", "x".repeat(40)));
        shown_text.push_str(&format!("{i:03} {} <ok>\n", "x".repeat(40)));
    }
    let ids = client(&server)
        .send_message(CHAT, &html, Some(keyboard()), within(10))
        .await
        .unwrap();
    let calls = server.calls_to("sendMessage");
    assert!(calls.len() >= 3, "{} parts", calls.len());
    assert_eq!(ids.len(), calls.len());
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call.status, 200, "{:?}", call.description);
        assert_eq!(call.parse_mode.as_deref(), Some("HTML"));
        assert_eq!(call.chat_id.as_deref(), Some(CHAT));
        assert!(call.text.as_ref().unwrap().encode_utf16().count() <= 4096);
        // The keyboard goes under the last part only.
        assert_eq!(call.reply_markup.is_some(), i == calls.len() - 1);
    }
    let arrived: String = ids
        .iter()
        .map(|id| server.message_text(CHAT, (*id).into()).unwrap())
        .collect();
    assert_eq!(arrived, shown_text);
}

#[tokio::test]
async fn html_special_characters_arrive_escaped_and_unescaped_html_is_refused_once() {
    let server = TelegramTestServer::start().await;
    let raw = "PnL < 0 && margin > 80% for \"BTCUSDT\" <script>";
    let ids = client(&server)
        .send_message(
            CHAT,
            &format!("<i>{}</i>", html_escape(raw)),
            None,
            within(5),
        )
        .await
        .unwrap();
    let call = &server.calls_to("sendMessage")[0];
    assert_eq!(call.status, 200);
    assert_eq!(
        call.text.as_deref(),
        Some("<i>PnL &lt; 0 &amp;&amp; margin &gt; 80% for \"BTCUSDT\" &lt;script&gt;</i>")
    );
    assert_eq!(
        server.message_text(CHAT, ids[0].into()).as_deref(),
        Some(raw)
    );

    let e = client(&server)
        .send_message(CHAT, raw, None, within(5))
        .await
        .unwrap_err();
    let text = shown(&e);
    assert!(
        matches!(&e, TelegramError::Rejected { status: 400, description, .. }
            if description.starts_with("Bad Request: can't parse entities")),
        "{text}"
    );
    assert_eq!(
        server.calls_to("sendMessage").len(),
        2,
        "a 400 is not retried"
    );
}

#[tokio::test]
async fn rate_limit_waits_retry_after_within_the_deadline() {
    let server = TelegramTestServer::start().await;
    server.fail_next("sendMessage", 1, Fault::RetryAfter(1));
    let started = std::time::Instant::now();
    client(&server)
        .send_message(CHAT, "after the wait", None, within(10))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let statuses: Vec<u16> = server
        .calls_to("sendMessage")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![429, 200]);
}

#[tokio::test]
async fn rate_limit_past_the_deadline_gives_up_at_once_naming_the_wait() {
    let server = TelegramTestServer::start().await;
    server.fail_next("sendMessage", 1, Fault::RetryAfter(3));
    let started = std::time::Instant::now();
    let deadline = Instant::now() + Duration::from_millis(800);
    let e = client(&server)
        .send_message(CHAT, "too late", None, deadline)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let text = shown(&e);
    assert!(
        matches!(e, TelegramError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(3)),
        "{text}"
    );
    assert!(
        text.contains("wait 3s") && text.contains("deadline"),
        "{text}"
    );
    assert_eq!(server.calls_to("sendMessage").len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_reported() {
    let server = TelegramTestServer::start().await;
    server.fail_next("sendMessage", 1, Fault::Status(500));
    server.fail_next("sendMessage", 1, Fault::Status(502));
    client(&server)
        .send_message(CHAT, "third time lucky", None, within(10))
        .await
        .unwrap();
    let statuses: Vec<u16> = server
        .calls_to("sendMessage")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, vec![500, 502, 200]);

    server.fail_next("getMe", 5, Fault::Status(500));
    let e = client(&server).get_me(within(10)).await.unwrap_err();
    let text = shown(&e);
    assert!(
        matches!(e, TelegramError::Unavailable { attempts: 3, .. }) && text.contains("HTTP 500"),
        "{text}"
    );
    assert_eq!(server.calls_to("getMe").len(), 3);
}

#[tokio::test]
async fn a_bad_request_is_not_retried_and_reports_telegrams_description() {
    let server = TelegramTestServer::start().await;
    let c = client(&server);
    let e = c
        .edit_message_text(CHAT, 999, "new text", None, within(5))
        .await
        .unwrap_err();
    let text = shown(&e);
    assert_eq!(
        text,
        "editMessageText: Telegram refused it (HTTP 400): Bad Request: message to edit not found"
    );
    assert_eq!(server.calls_to("editMessageText").len(), 1);

    // Editing a sent message works; the same text again is nothing to do, not an error.
    let id = c
        .send_message(CHAT, "v1", Some(keyboard()), within(5))
        .await
        .unwrap()[0];
    c.edit_message_text(CHAT, id, "<b>v2</b>", None, within(5))
        .await
        .unwrap();
    c.edit_message_text(CHAT, id, "<b>v2</b>", None, within(5))
        .await
        .unwrap();
    assert_eq!(server.message_text(CHAT, id.into()).as_deref(), Some("v2"));
    // An edit cannot be split: refused before sending.
    let e = c
        .edit_message_text(CHAT, id, &"y".repeat(5000), None, within(5))
        .await
        .unwrap_err();
    assert!(matches!(e, TelegramError::Invalid { .. }), "{}", shown(&e));
    assert_eq!(server.calls_to("editMessageText").len(), 3);
}

#[tokio::test]
async fn send_photo_delivers_the_bytes_and_caption() {
    let server = TelegramTestServer::start().await;
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&640u32.to_be_bytes());
    png.extend_from_slice(&480u32.to_be_bytes());
    png.extend((0..5000u32).map(|i| (i % 251) as u8));
    let id = client(&server)
        .send_photo(CHAT, png.clone(), Some("<b>equity</b> 7d"), within(5))
        .await
        .unwrap();
    let call = &server.calls_to("sendPhoto")[0];
    assert_eq!(call.status, 200, "{:?}", call.description);
    assert_eq!(call.photo_len, Some(png.len()));
    assert_eq!(call.chat_id.as_deref(), Some(CHAT));
    assert_eq!(call.text.as_deref(), Some("<b>equity</b> 7d"));
    assert_eq!(call.parse_mode.as_deref(), Some("HTML"));
    assert!(id > 0);

    // Not an image: Telegram's refusal, reported.
    let e = client(&server)
        .send_photo(CHAT, b"not a png".to_vec(), None, within(5))
        .await
        .unwrap_err();
    assert!(shown(&e).contains("IMAGE_PROCESS_FAILED"));
}

#[tokio::test]
async fn set_webhook_records_url_secret_and_kinds_and_delete_removes_it() {
    let server = TelegramTestServer::start().await;
    let c = client(&server);
    let secret = Secret::new("s3cr3t_webhook-token");
    let kinds = [AllowedUpdate::Message, AllowedUpdate::CallbackQuery];
    c.set_webhook(
        "https://ops.example.com/telegram",
        &secret,
        &kinds,
        within(5),
    )
    .await
    .unwrap();
    let hook = server.webhook().unwrap();
    assert_eq!(hook.url, "https://ops.example.com/telegram");
    assert_eq!(hook.secret_token.as_deref(), Some("s3cr3t_webhook-token"));
    assert_eq!(
        hook.allowed_updates,
        Some(vec!["message".to_string(), "callback_query".to_string()])
    );
    let info = c.get_webhook_info(within(5)).await.unwrap();
    assert_eq!(info.url, "https://ops.example.com/telegram");

    // While a webhook is set Telegram refuses getUpdates.
    let e = c
        .get_updates(None, Duration::ZERO, within(5))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TelegramError::Rejected { status: 409, .. }),
        "{}",
        shown(&e)
    );

    let e = c
        .set_webhook("http://ops.example.com/telegram", &secret, &[], within(5))
        .await
        .unwrap_err();
    assert!(shown(&e).contains("An HTTPS URL must be provided"));

    c.delete_webhook(false, within(5)).await.unwrap();
    assert_eq!(server.webhook(), None);
    assert_eq!(c.get_webhook_info(within(5)).await.unwrap().url, "");
}

#[tokio::test]
async fn get_updates_returns_queued_updates_and_an_offset_confirms_them() {
    let server = TelegramTestServer::start().await;
    let c = client(&server);
    let first = server.push_message(4242, 7, 1_767_000_000, "/status");
    let (second, query) = server.push_callback(4242, 7, 12, "pause:main");
    let batch = c
        .get_updates(None, Duration::ZERO, within(5))
        .await
        .unwrap();
    assert_eq!(
        (batch.next_offset, batch.unreadable),
        (Some(second as i64 + 1), 0)
    );
    let updates = &batch.updates;
    let ids: Vec<u64> = updates.iter().map(|u| u.update_id.into()).collect();
    assert_eq!(ids, vec![first, second]);
    let UpdateContent::Message(m) = &updates[0].content else {
        panic!("{:?}", updates[0]);
    };
    assert_eq!((m.chat.id, m.from.as_ref().unwrap().id), (4242, 7));
    assert_eq!(
        (m.date, m.text.as_deref()),
        (1_767_000_000, Some("/status"))
    );
    let UpdateContent::CallbackQuery(q) = &updates[1].content else {
        panic!("{:?}", updates[1]);
    };
    assert_eq!(
        (q.id.as_str(), q.data.as_deref()),
        (query.as_str(), Some("pause:main"))
    );
    let Some(MaybeInaccessibleMessage::Message(under)) = &q.message else {
        panic!("{q:?}");
    };
    assert_eq!(under.message_id, 12);

    // Not confirmed yet: asked again, the same updates come back.
    let again = c
        .get_updates(None, Duration::ZERO, within(5))
        .await
        .unwrap();
    assert_eq!(again.updates.len(), 2);
    let rest = c
        .get_updates(batch.next_offset, Duration::ZERO, within(5))
        .await
        .unwrap();
    assert!(rest.updates.is_empty() && rest.next_offset.is_none());
    assert_eq!(server.pending_updates(), 0);

    c.answer_callback_query(&query, Some("Paused"), within(5))
        .await
        .unwrap();
    let e = c
        .answer_callback_query(&query, None, within(5))
        .await
        .unwrap_err();
    assert!(shown(&e).contains("query ID is invalid"));
}

#[tokio::test]
async fn a_long_poll_answers_when_an_update_arrives() {
    let server = Arc::new(TelegramTestServer::start().await);
    let pusher = server.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pusher.push_message(4242, 7, 1_767_000_000, "hello");
    });
    let started = std::time::Instant::now();
    let batch = client(&server)
        .get_updates(None, Duration::from_secs(20), within(30))
        .await
        .unwrap();
    assert_eq!(batch.updates.len(), 1);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // An empty poll ends at its timeout with no update.
    let started = std::time::Instant::now();
    let none = client(&server)
        .get_updates(batch.next_offset, Duration::from_secs(1), within(10))
        .await
        .unwrap();
    assert!(none.updates.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(1));
}

#[tokio::test]
async fn get_me_and_a_wrong_token() {
    let server = TelegramTestServer::start().await;
    let me = client(&server).get_me(within(5)).await.unwrap();
    assert!(me.is_bot);
    assert_eq!(me.id, TelegramTestServer::BOT_ID);

    let wrong = "987654:AAwrong-token-value";
    let c = BotClient::with_base_url(Secret::new(wrong), &server.url).unwrap();
    let e = c.get_me(within(5)).await.unwrap_err();
    let text = shown(&e);
    assert!(!text.contains(wrong), "{text}");
    assert_eq!(text, "getMe: Telegram refused it (HTTP 401): Unauthorized");
    // Network failures name no URL either (the token is in it).
    let c = BotClient::with_base_url(Secret::new(TelegramTestServer::TOKEN), "http://127.0.0.1:1")
        .unwrap()
        .with_retry(RetryPolicy {
            attempts: 2,
            first_backoff: Duration::from_millis(10),
        });
    let e = c.get_me(within(5)).await.unwrap_err();
    let text = shown(&e);
    assert!(
        matches!(e, TelegramError::Unavailable { attempts: 2, .. }),
        "{text}"
    );
    assert!(!text.contains("127.0.0.1:1/bot"), "{text}");
}

#[tokio::test]
async fn the_notifier_sends_escaped_html_to_its_chat() {
    let server = TelegramTestServer::start().await;
    let creds = TelegramCreds {
        bot_token: Secret::new(TelegramTestServer::TOKEN),
        chat_id: CHAT.into(),
    };
    let notifier = TelegramNotifier::with_base_url(creds, &server.url).unwrap();
    let n = Notification {
        event_id: "e1".into(),
        account: AccountId::new("main"),
        priority: Priority::High,
        kind: "entry".into(),
        text: "BTCUSDT long <1x> & stop".into(),
        time: 0,
    };
    notifier.notify(&n).await.unwrap();
    let call = &server.calls_to("sendMessage")[0];
    assert_eq!(call.status, 200);
    assert_eq!(
        call.text.as_deref(),
        Some("[main] High entry: BTCUSDT long &lt;1x&gt; &amp; stop")
    );
}

/// What the webhook received: the secret header and the update.
type Delivery = (Option<String>, serde_json::Value);

#[tokio::test]
async fn updates_are_posted_to_a_webhook_with_the_secret_header() {
    let seen: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap,
                  axum::Json(body): axum::Json<serde_json::Value>| {
                let record = record.clone();
                async move {
                    let secret = headers
                        .get("X-Telegram-Bot-Api-Secret-Token")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    record.lock().unwrap().push((secret, body));
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let update = message_update(5, 1, 4242, 7, 1_767_000_000, "/pause main");
    let status = post_to_webhook(&url, Some("s3cr3t"), &update)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(Some("s3cr3t".to_string()), update)]);
    assert_eq!(
        seen[0].1["message"]["entities"][0]["type"],
        serde_json::json!("bot_command")
    );
}
