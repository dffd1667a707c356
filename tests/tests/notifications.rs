//! Notifications that arrive, once, through the real binaries and the loopback Telegram server:
//! each channel's minimum priority, LOW notifications folded into the status report instead of
//! sent alone, the report sent once per 30-minute slot, a slow or down Telegram that costs a job
//! its Telegram budget and never its exit code (what it held back shows in the next report), and
//! the per-chat spacing of messages measured where they arrive.

use albra_adapters::telegram::BotClient;
use albra_core::ports::Secret;
use albra_tests::harness::{self, run, Run, TestConfig};
use albra_tests::telegram_server::TelegramTestServer;
use std::path::Path;
use std::time::{Duration, Instant};

const CHAT: &str = "4242";

/// The harness's config with `[notifier]` replaced by `notifier` (its body).
fn set_notifier(dir: &Path, notifier: &str) {
    let path = dir.join("albra.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let old = "[notifier]\nconsole = true\ntelegram = false\n";
    assert!(text.contains(old), "the harness config changed:\n{text}");
    std::fs::write(
        &path,
        text.replace(old, &format!("[notifier]\n{notifier}\n")),
    )
    .unwrap();
}

fn telegram_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TELEGRAM_BOT_TOKEN", TelegramTestServer::TOKEN.to_string()),
        ("TELEGRAM_CHAT_ID", CHAT.to_string()),
        ("ALBRA_TELEGRAM_API_URL", url.to_string()),
    ]
}

/// `albra ARGS --config albra.toml --state state` in `dir`, Telegram at `tg_url`.
async fn albra(dir: &Path, tg_url: &str, args: &[&str]) -> Run {
    // Before the subcommand: `notify`'s text after `--` takes every word.
    let mut a = vec!["--config", "albra.toml", "--state", "state"];
    a.extend(args);
    // No exchange is reached by these commands: any URL will do.
    run(
        "albra",
        dir,
        "http://127.0.0.1:1",
        &a,
        &telegram_env(tg_url),
    )
    .await
}

fn sent_texts(tg: &TelegramTestServer) -> Vec<String> {
    tg.calls_to("sendMessage")
        .into_iter()
        .filter(|c| c.status == 200)
        .filter_map(|c| c.text)
        .collect()
}

fn config_dir(notifier: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    harness::write_config(dir.path(), &TestConfig::default());
    set_notifier(dir.path(), notifier);
    dir
}

fn slot_now() -> i64 {
    albra_core::status_report::slot_of(chrono::Utc::now().timestamp_millis())
}

#[tokio::test]
async fn each_channel_keeps_its_own_minimum_priority() {
    let tg = TelegramTestServer::start().await;
    let dir = config_dir(
        "console = true\ntelegram = true\nmin_priority = \"LOW\"\n\
         console_min_priority = \"CRITICAL\"\ntelegram_min_priority = \"HIGH\"",
    );
    for (priority, text) in [
        ("medium", "medium-msg"),
        ("high", "high-msg"),
        ("critical", "critical-msg"),
    ] {
        let r = albra(
            dir.path(),
            &tg.url,
            &["notify", "--priority", priority, "--", text],
        )
        .await;
        assert!(r.ok(), "{r}");
        let printed = r.stdout.contains(text);
        assert_eq!(
            printed,
            priority == "critical",
            "console min CRITICAL:\n{r}"
        );
    }
    let sent = sent_texts(&tg);
    assert_eq!(sent.len(), 2, "telegram min HIGH: {sent:?}");
    assert!(
        sent[0].contains("high-msg") && sent[1].contains("critical-msg"),
        "{sent:?}"
    );
}

#[tokio::test]
async fn a_low_notification_is_folded_into_the_next_report_which_goes_once_per_slot() {
    let tg = TelegramTestServer::start().await;
    let dir = config_dir("console = true\ntelegram = true");
    let r = albra(
        dir.path(),
        &tg.url,
        &[
            "notify",
            "--priority",
            "low",
            "--kind",
            "heartbeat",
            "--account",
            "main",
            "--",
            "low-one",
        ],
    )
    .await;
    assert!(r.ok(), "{r}");
    assert!(
        r.stdout.contains("[LOW] main heartbeat: low-one"),
        "the console still prints it:\n{r}"
    );
    assert!(
        sent_texts(&tg).is_empty(),
        "not sent alone: {:?}",
        sent_texts(&tg)
    );

    let slot = slot_now();
    let r = albra(dir.path(), &tg.url, &["status-report"]).await;
    assert!(r.ok(), "{r}");
    let sent = sent_texts(&tg);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let report = &sent[0];
    assert!(report.starts_with("<b>Status report</b>"), "{report}");
    assert!(report.contains("<b>main</b>"), "{report}");
    assert!(
        report.contains("<b>Low-priority</b> (1)\nmain heartbeat: 1\n"),
        "{report}"
    );
    assert!(report.contains("low-one"), "{report}");
    assert!(
        r.stdout.contains("Status report"),
        "and on the console:\n{r}"
    );

    let again = albra(dir.path(), &tg.url, &["status-report"]).await;
    assert!(again.ok(), "{again}");
    if slot_now() == slot {
        assert_eq!(
            sent_texts(&tg).len(),
            1,
            "a rerun in the slot sends nothing"
        );
        assert!(again.stderr.contains("already sent"), "{again}");
    }
    // Shown once: the next slot's report does not fold it again.
    let repo = albra_core::state::StateRepo::new(std::sync::Arc::new(
        albra_adapters::store::sqlite::SqliteStore::open(dir.path().join("state/albra.db"))
            .unwrap(),
    ));
    assert!(repo.deferred_notices().await.unwrap().is_empty());
}

/// The evaluator at a signal (it enters and notifies), with Telegram at `tg_url` and a 2 s
/// budget: it exits 0 well within the time its notifications alone would have taken, and the
/// next report, with Telegram back, lists what it could not send.
async fn job_within_budget(tg_url: &str, healthy: &TelegramTestServer) {
    let env = harness::JobEnv::at_signal(&TestConfig::default(), 0).await;
    set_notifier(
        env.dir(),
        "console = true\ntelegram = true\ntelegram_budget_secs = 2",
    );
    let args = [
        "--timeframe",
        "15m",
        "--config",
        "albra.toml",
        "--state",
        "state",
    ];
    let started = Instant::now();
    let r = run(
        "evaluator",
        env.dir(),
        &env.server.url,
        &args,
        &telegram_env(tg_url),
    )
    .await;
    let took = started.elapsed();
    assert!(r.ok(), "{r}");
    assert!(r.stdout.contains("[HIGH]"), "it had something to say:\n{r}");
    // Each notification alone may take 15 s (TelegramNotifier::BUDGET); the job's budget is 2 s.
    assert!(took < Duration::from_secs(10), "{took:?}\n{r}");
    assert!(r.stderr.contains("status report"), "one warning:\n{r}");

    let report = run(
        "albra",
        env.dir(),
        &env.server.url,
        &[
            "status-report",
            "--config",
            "albra.toml",
            "--state",
            "state",
        ],
        &telegram_env(&healthy.url),
    )
    .await;
    assert!(report.ok(), "{report}");
    let sent = sent_texts(healthy);
    let text = sent.last().expect("the report");
    assert!(text.contains("<b>Not delivered in time</b>"), "{text}");
    assert!(text.contains("[main] entry"), "{text}");
    assert!(text.contains("Open positions"), "{text}");
}

#[tokio::test]
async fn a_slow_telegram_costs_a_job_its_budget_not_its_exit_code() {
    let slow = TelegramTestServer::start().await;
    slow.set_delay(Some(Duration::from_secs(30)));
    let healthy = TelegramTestServer::start().await;
    job_within_budget(&slow.url.clone(), &healthy).await;
}

#[tokio::test]
async fn a_down_telegram_costs_a_job_its_budget_not_its_exit_code() {
    let healthy = TelegramTestServer::start().await;
    // Nothing listens on port 1: every connection is refused and retried with backoff.
    job_within_budget("http://127.0.0.1:1", &healthy).await;
}

/// Two clients of one process sending to one chat: the messages arrive at least a second
/// apart (a few ms of loopback jitter allowed), while another chat is not held up.
#[tokio::test]
async fn messages_to_one_chat_arrive_a_second_apart() {
    let tg = TelegramTestServer::start().await;
    let client =
        || BotClient::with_base_url(Secret::new(TelegramTestServer::TOKEN), &tg.url).unwrap();
    let (a, b) = (client(), client());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let (r1, r2, r3) = tokio::join!(
        a.send_message(CHAT, "one", None, deadline),
        b.send_message(CHAT, "two", None, deadline),
        a.send_message(CHAT, "three", None, deadline),
    );
    r1.unwrap();
    r2.unwrap();
    r3.unwrap();
    let other_started = Instant::now();
    b.send_message("777", "elsewhere", None, deadline)
        .await
        .unwrap();
    assert!(
        other_started.elapsed() < Duration::from_millis(500),
        "another chat waits for none"
    );
    let mut at: Vec<Instant> = tg
        .calls_to("sendMessage")
        .into_iter()
        .filter(|c| c.chat_id.as_deref() == Some(CHAT))
        .map(|c| c.at)
        .collect();
    at.sort();
    assert_eq!(at.len(), 3);
    for w in at.windows(2) {
        let gap = w[1] - w[0];
        assert!(gap >= Duration::from_millis(950), "{gap:?}");
    }
}
