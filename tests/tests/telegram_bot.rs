//! The Telegram bot through the real `albra` binary: `albra telegram serve` runs as a child
//! process on a loopback port, Telegram's deliveries are posted to it as Telegram posts them,
//! its answers go to the Telegram-Bot-API-speaking loopback server, and its orders to the
//! Binance one. Checked: the guards (secret token, chat allow-list, redelivered and stale
//! updates), answers that agree with `albra status --json`, audited pause/resume, and `/close`
//! and `/close_all` that only run on their own person's unexpired, unused confirmation.

use albra_core::domain::AccountId;
use albra_core::state::PendingConfirm;
use albra_tests::harness::{self, run, TestConfig, MAIN_KEY};
use albra_tests::telegram_server::{
    callback_update, message_update, post_to_webhook, BotCall, TelegramTestServer,
};
use rust_decimal::Decimal;
use serde_json::Value;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type Env = harness::JobEnv;

const CHAT: i64 = 4242;
const USER: u64 = 777;
const SECRET: &str = "webhook-secret_0123456789";

/// Update ids, unique within a test process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `albra telegram serve` on a free loopback port; killed when dropped.
struct Served {
    child: Child,
    url: String,
    tg: TelegramTestServer,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bot_env(tg: &TelegramTestServer) -> Vec<(&'static str, String)> {
    vec![
        ("TELEGRAM_BOT_TOKEN", TelegramTestServer::TOKEN.to_string()),
        ("TELEGRAM_CHAT_ID", CHAT.to_string()),
        ("TELEGRAM_WEBHOOK_SECRET", SECRET.to_string()),
        ("ALBRA_TELEGRAM_API_URL", tg.url.clone()),
    ]
}

async fn serve(env: &Env) -> Served {
    let tg = TelegramTestServer::start().await;
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let child = harness::command("albra", env.dir(), &env.server.url, &bot_env(&tg))
        .args(["telegram", "serve", "--listen", &addr.to_string()])
        .args([
            "--path",
            "/telegram",
            "--config",
            "albra.toml",
            "--state",
            "state",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn albra telegram serve");
    let mut served = Served {
        child,
        url: format!("http://{addr}/telegram"),
        tg,
    };
    let t0 = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Ok(Some(status)) = served.child.try_wait() {
            panic!("albra telegram serve exited: {status}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "serve did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    served
}

impl Served {
    async fn post(&self, secret: Option<&str>, update: &Value) -> u16 {
        post_to_webhook(&self.url, secret, update).await.unwrap()
    }

    /// Post a message from `USER` in `chat`, sent `age` seconds ago.
    async fn say_in(&self, chat: i64, age: u64, text: &str) -> u16 {
        let u = message_update(next_id(), 1, chat, USER, now_s() - age, text);
        self.post(Some(SECRET), &u).await
    }

    /// `text` in the allowed chat; returns the answer sent to it.
    async fn say(&self, text: &str) -> BotCall {
        let before = self.sent().len();
        assert_eq!(self.say_in(CHAT, 0, text).await, 200, "{text}");
        let sent = self.sent();
        assert_eq!(sent.len(), before + 1, "one answer to {text}: {sent:?}");
        sent.last().unwrap().clone()
    }

    fn sent(&self) -> Vec<BotCall> {
        self.tg.calls_to("sendMessage")
    }

    /// `user` presses the button carrying `data` under message `message_id`; returns the
    /// answerCallbackQuery text.
    async fn press(&self, user: u64, message_id: i64, data: &str) -> String {
        let (update_id, query_id) = self.tg.push_callback(CHAT, user, message_id, data);
        let u = callback_update(update_id, &query_id, CHAT, user, message_id, data);
        assert_eq!(self.post(Some(SECRET), &u).await, 200);
        let answers = self.tg.calls_to("answerCallbackQuery");
        let a = answers.last().expect("the press is answered");
        a.params["text"].as_str().unwrap_or_default().to_string()
    }

    /// The message id of the last message sent whose text contains `needle`.
    fn message_id(&self, needle: &str) -> i64 {
        (1..500)
            .rev()
            .find(|id| {
                self.tg
                    .message_text(&CHAT.to_string(), *id)
                    .is_some_and(|t| t.contains(needle))
            })
            .unwrap_or_else(|| panic!("no message with {needle}"))
    }
}

fn text(c: &BotCall) -> &str {
    c.text.as_deref().unwrap_or_default()
}

/// The callback data of the Confirm and Cancel buttons of a keyboard answer.
fn buttons(c: &BotCall) -> (String, String) {
    let row = &c.reply_markup.as_ref().expect("a keyboard")["inline_keyboard"][0];
    let data = |i: usize| row[i]["callback_data"].as_str().unwrap().to_string();
    (data(0), data(1))
}

async fn status_json(env: &Env) -> Value {
    let r = env.albra(&["status", "--json"]).await;
    assert!(r.ok(), "{r}");
    serde_json::from_str(&r.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_replayed_and_stale_updates_do_nothing() {
    let env = Env::at_signal(&TestConfig::default(), 0).await;
    let bot = serve(&env).await;
    let help = message_update(next_id(), 1, CHAT, USER, now_s(), "/help");
    assert_eq!(bot.post(None, &help).await, 401, "no secret");
    assert_eq!(
        bot.post(Some("webhook-secret_0123456788"), &help).await,
        401
    );
    assert_eq!(bot.post(Some("x"), &help).await, 401, "a short guess");
    assert!(bot.sent().is_empty(), "nothing answered without the secret");
    let status = post_raw(&bot.url, b"{not json").await;
    assert_eq!(status, 400);

    assert_eq!(bot.say_in(999, 0, "/status").await, 200, "a foreign chat");
    assert!(bot.sent().is_empty(), "a foreign chat is never answered");

    // The same update twice (Telegram redelivers what it thinks was lost): one answer.
    assert_eq!(bot.post(Some(SECRET), &help).await, 200);
    assert_eq!(bot.post(Some(SECRET), &help).await, 200);
    assert_eq!(bot.sent().len(), 1);
    assert!(text(&bot.sent()[0]).contains("/close SYMBOL [STRATEGY]"));

    assert_eq!(bot.say_in(CHAT, 3600, "/status").await, 200, "an hour old");
    assert_eq!(bot.sent().len(), 1, "a stale update is not answered");
    assert_eq!(bot.say_in(CHAT, 0, "just chatting").await, 200);
    assert_eq!(bot.sent().len(), 1, "plain text is not a command");

    let unknown = bot.say("/launch rockets").await;
    assert!(
        text(&unknown).contains("unknown command /launch; /help lists them"),
        "{unknown:?}"
    );
    let bad = bot.say("/daily 0").await;
    assert!(
        text(&bad).contains("is not a number from 1 to 90"),
        "{bad:?}"
    );
    let daily = bot.say("/daily 3").await;
    assert!(text(&daily).contains("Daily PnL"), "{daily:?}");
    for cmd in [
        "/weekly",
        "/performance",
        "/profit 7",
        "/risk",
        "/health",
        "/accounts",
    ] {
        let a = bot.say(cmd).await;
        assert_eq!(a.status, 200, "{cmd}: {a:?}");
    }
}

async fn post_raw(url: &str, body: &[u8]) -> u16 {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client
        .post(url)
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_agree_with_the_cli_and_changes_are_audited() {
    let env = Env::entered(&TestConfig::default()).await;
    let bot = serve(&env).await;
    let status = status_json(&env).await;
    let equity: Decimal = status["accounts"][0]["figures"]["equity"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let answer = bot.say("/status").await;
    let want = format!("equity {:.2} USDT", equity.round_dp(2));
    assert!(text(&answer).contains(&want), "{want}: {answer:?}");
    let positions = bot.say("/positions").await;
    assert!(text(&positions).contains("BTCUSDT"), "{positions:?}");
    let balance = bot.say("/balance").await;
    assert!(text(&balance).contains("main"), "{balance:?}");

    let paused = bot.say("/pause main").await;
    assert!(text(&paused).contains("paused"), "{paused:?}");
    assert_eq!(
        status_json(&env).await["accounts"][0]["figures"]["paused"],
        true
    );
    let audit = env.repo().audit_records().await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].command, "/pause main");
    assert_eq!(
        (audit[0].chat_id, audit[0].user_id, audit[0].ok),
        (CHAT, USER as i64, true)
    );
    assert_eq!(audit[0].user.as_deref(), Some("@op777"));
    let resumed = bot.say("/resume").await;
    assert!(text(&resumed).contains("resumed"), "{resumed:?}");
    assert_eq!(
        status_json(&env).await["accounts"][0]["figures"]["paused"],
        false
    );
    let stopped = bot.say("/stop").await;
    assert!(text(&stopped).contains("paused"), "{stopped:?}");
    assert_eq!(
        status_json(&env).await["accounts"][0]["figures"]["paused"],
        true
    );
    bot.say("/resume main").await;
    let synced = bot.say("/sync main").await;
    assert!(text(&synced).contains("synced"), "{synced:?}");
    assert_eq!(env.repo().audit_records().await.unwrap().len(), 5);

    // /close asks; Confirm closes the strategy position through the engine's exit.
    let posted = env.orders_posted();
    let ask = bot.say("/close BTCUSDT").await;
    assert!(text(&ask).contains("Close BTCUSDT"), "{ask:?}");
    let (confirm, _) = buttons(&ask);
    assert_eq!(env.orders_posted(), posted, "asking sends nothing");
    let msg = bot.message_id("Close BTCUSDT");
    assert_eq!(bot.press(USER, msg, &confirm).await, "running…");
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT"), Decimal::ZERO);
    let edited = bot.tg.message_text(&CHAT.to_string(), msg).unwrap();
    assert!(
        edited.contains("1 position(s) closed, 0 still open"),
        "{edited}"
    );
    let trades = env.repo().trades(&AccountId::new("main")).await.unwrap();
    assert_eq!(trades.len(), 1, "the close is recorded as a trade");
    let nothing = bot.say("/close BTCUSDT").await;
    assert!(text(&nothing).contains("nothing to do"), "{nothing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_runs_once_on_its_own_unexpired_confirmation() {
    let env = Env::entered(&TestConfig::default()).await;
    let bot = serve(&env).await;
    let posted = env.orders_posted();
    let ask = bot.say("/close_all main").await;
    assert!(text(&ask).contains("Emergency stop"), "{ask:?}");
    let (confirm, cancel) = buttons(&ask);
    assert!(confirm.starts_with("ok:") && cancel.starts_with("no:"));
    let msg = bot.message_id("Emergency stop");
    // A made-up confirmation, and someone else's press, do nothing.
    assert_eq!(
        bot.press(USER, msg, "ok:0123456789abcdef0123456789abcdef")
            .await,
        "expired or already used"
    );
    assert_eq!(
        bot.press(USER + 1, msg, &confirm).await,
        "only the person who asked can confirm"
    );
    assert_eq!(env.orders_posted(), posted);
    // A confirmation whose minute has passed (written as the bot writes one).
    let old = PendingConfirm {
        command: "/close_all main".into(),
        chat_id: CHAT,
        user_id: USER as i64,
        expires_at: now_s() as i64 * 1000 - 1_000,
    };
    env.repo().save_confirm("expirednonce", &old).await.unwrap();
    assert_eq!(
        bot.press(USER, msg, "ok:expirednonce").await,
        "expired or already used"
    );
    assert!(bot
        .tg
        .message_text(&CHAT.to_string(), msg)
        .unwrap()
        .contains("confirmation expired; nothing was done"));
    assert_eq!(
        env.orders_posted(),
        posted,
        "an expired confirmation sends nothing"
    );

    assert_eq!(bot.press(USER, msg, &confirm).await, "running…");
    assert_eq!(env.server.position(MAIN_KEY, "BTCUSDT"), Decimal::ZERO);
    assert!(env.server.open_algo_orders(MAIN_KEY).is_empty());
    assert!(env.server.open_orders(MAIN_KEY).is_empty());
    assert_eq!(
        status_json(&env).await["accounts"][0]["figures"]["paused"],
        true
    );
    let edited = bot.tg.message_text(&CHAT.to_string(), msg).unwrap();
    assert!(
        edited.contains("flat true, open orders 0, paused true"),
        "{edited}"
    );
    let audit = env.repo().audit_records().await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0].command.as_str(), audit[0].ok),
        ("/close_all main", true)
    );

    // The same button again: used.
    let posted = env.orders_posted();
    assert_eq!(
        bot.press(USER, msg, &confirm).await,
        "expired or already used"
    );
    assert_eq!(
        bot.press(USER, msg, &cancel).await,
        "expired or already used"
    );
    assert_eq!(
        env.orders_posted(),
        posted,
        "a used confirmation sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_webhook_registers_the_secret_and_poll_answers_from_get_updates() {
    let env = Env::at_signal(&TestConfig::default(), 0).await;
    let tg = TelegramTestServer::start().await;
    let url = "https://bot.example.com/telegram";
    let r = run(
        "albra",
        env.dir(),
        &env.server.url,
        &["telegram", "set-webhook", url, "--config", "albra.toml"],
        &bot_env(&tg),
    )
    .await;
    assert!(r.ok(), "{r}");
    let hook = tg.webhook().expect("a webhook");
    assert_eq!(hook.url, url);
    assert_eq!(hook.secret_token.as_deref(), Some(SECRET));
    assert_eq!(
        hook.allowed_updates,
        Some(vec!["message".to_string(), "callback_query".to_string()])
    );
    assert!(!r.stdout.contains(SECRET) && !r.stderr.contains(SECRET));

    // A host without a public URL (a bot with no webhook: Telegram refuses getUpdates while
    // one is set): the same bot fed by getUpdates.
    let tg = TelegramTestServer::start().await;
    tg.push_message(CHAT, USER, now_s(), "/help");
    tg.push_message(999, USER, now_s(), "/status");
    let mut child = harness::command("albra", env.dir(), &env.server.url, &bot_env(&tg))
        .args([
            "telegram",
            "poll",
            "--config",
            "albra.toml",
            "--state",
            "state",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn albra telegram poll");
    let t0 = std::time::Instant::now();
    while tg.calls_to("sendMessage").is_empty() && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = tg.calls_to("sendMessage");
    assert_eq!(sent.len(), 1, "the allowed chat only: {sent:?}");
    assert_eq!(sent[0].chat_id.as_deref(), Some(CHAT.to_string().as_str()));
    // The next poll confirms the batch.
    while tg.pending_updates() > 0 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        tg.pending_updates(),
        0,
        "the batch is confirmed by the offset"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_sends_the_syncs_equity_as_a_png() {
    // The sync after the entry left one equity point; a second one 16 minutes on, after the mark
    // price fell 3 %, gives the line a slope and the drawdown a depth.
    let env = Env::entered(&TestConfig::default()).await;
    let main = AccountId::new("main");
    let entry = env.repo().positions(&main).await.unwrap()[0]
        .value
        .entry_price
        .get();
    env.server
        .set_mark_price("BTCUSDT", entry * Decimal::new(97, 2));
    env.server.set_time(env.signal.eval_time() + 16 * 60_000);
    assert!(env.sync().await.ok());
    let served = serve(&env).await;
    let help = served.say("/help").await;
    assert!(text(&help).contains("/chart [ACCOUNT]"), "{help:?}");

    assert_eq!(served.say_in(CHAT, 0, "/chart main").await, 200);
    let photos = served.tg.calls_to("sendPhoto");
    assert_eq!(photos.len(), 1, "{:?}", served.tg.calls());
    let png = photos[0].photo.clone().expect("a picture");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((size(16), size(20)), (800, 500), "IHDR width and height");
    let caption = photos[0].text.clone().unwrap_or_default();
    assert_eq!(
        photos[0].chat_id.as_deref(),
        Some(CHAT.to_string().as_str())
    );
    assert!(caption.contains("main (blue)"), "{caption}");
    let points = env.repo().equity_points(&main, 0, i64::MAX).await.unwrap();
    assert_eq!(points.len(), 2);
    let last = format!(
        "{:.2}",
        points[1].equity.to_string().parse::<f64>().unwrap()
    );
    assert!(
        caption.contains(&format!("→ {last} USDT")),
        "{caption} / {last}"
    );

    let unknown = served.say("/chart nosuch").await;
    assert!(
        text(&unknown).contains("no account `nosuch`"),
        "{unknown:?}"
    );
    assert_eq!(served.tg.calls_to("sendPhoto").len(), 1);
}
