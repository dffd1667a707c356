//! On EC2, failures reach a person: `infra/ec2/albra-job` runs the real `position-sync` (against
//! the Binance-speaking loopback server) and sends its alerts through the real `albra-ops notify`
//! to a loopback Telegram Bot API. A sync that keeps failing produces one CRITICAL Telegram
//! message after three failed runs, one more when it succeeds again; a job whose heartbeat goes
//! stale is reported once by `albra-job check`; a Telegram that refuses the message makes
//! `albra notify` fail.

use albra_tests::harness::{self, TestConfig, MAIN_KEY, MAIN_SECRET};
use albra_tests::moto::workspace_root;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const BOT_TOKEN: &str = "4242:loopback-bot-token";
const CHAT_ID: &str = "-1009";

/// A loopback Telegram Bot API: records every `sendMessage`, or answers 500 while `fail` is set.
#[derive(Clone, Default)]
struct Telegram {
    sent: Arc<Mutex<Vec<(String, Value)>>>,
    fail: Arc<AtomicBool>,
}

impl Telegram {
    async fn start() -> (Telegram, String) {
        let tg = Telegram::default();
        let app = Router::new()
            .route("/{*path}", post(send_message))
            .with_state(tg.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (tg, url)
    }

    /// The texts sent so far (each checked to be a sendMessage of this bot to this chat).
    fn texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(path, body)| {
                assert_eq!(path, &format!("bot{BOT_TOKEN}/sendMessage"));
                assert_eq!(body["chat_id"], CHAT_ID, "{body}");
                body["text"].as_str().unwrap().to_string()
            })
            .collect()
    }
}

async fn send_message(
    State(tg): State<Telegram>,
    UrlPath(path): UrlPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    if tg.fail.load(Ordering::SeqCst) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"ok": false, "description": "Internal Server Error"})),
        );
    }
    tg.sent.lock().unwrap().push((path, body));
    (
        StatusCode::OK,
        Json(json!({"ok": true, "result": {"message_id": 1}})),
    )
}

/// An installed-like layout: `opt/bin` with the real binaries, the keys file, the config with
/// Telegram on, and the state directory albra-job works in.
struct Host {
    dir: tempfile::TempDir,
    telegram_url: String,
    binance_url: String,
}

impl Host {
    fn new(telegram_url: String, binance_url: String) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("opt/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for b in ["position-sync", "evaluator", "albra-ops"] {
            std::os::unix::fs::symlink(harness::bin(b), bin.join(b)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("var")).unwrap();
        let cfg = harness::write_config(dir.path(), &TestConfig::default());
        let text = std::fs::read_to_string(&cfg).unwrap();
        assert!(text.contains("telegram = false"));
        std::fs::write(&cfg, text.replace("telegram = false", "telegram = true")).unwrap();
        let host = Host {
            dir,
            telegram_url,
            binance_url,
        };
        host.write_keys("wrong-api-key");
        host
    }

    /// The keys file albra-job loads, with `api_key` for the main account.
    fn write_keys(&self, api_key: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("albra.env");
        std::fs::write(
            &path,
            format!(
                "BINANCE_API_KEY={api_key}\nBINANCE_SECRET_KEY={MAIN_SECRET}\n\
                 TELEGRAM_BOT_TOKEN={BOT_TOKEN}\nTELEGRAM_CHAT_ID={CHAT_ID}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn jobs(&self) -> PathBuf {
        self.dir.path().join("var/jobs")
    }

    /// `albra-job ARGS` as cron would run it, stderr for the journal (no journald here).
    fn albra_job(&self, args: &[&str]) -> Output {
        let mut c = Command::new("bash");
        c.arg(workspace_root().join("infra/ec2/albra-job"))
            .args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap())
            .env("ALBRA_PREFIX", self.dir.path().join("opt"))
            .env("ALBRA_ENV_FILE", self.dir.path().join("albra.env"))
            .env("ALBRA_STATE_DIR", self.dir.path().join("var"))
            .env("ALBRA_CONFIG", self.dir.path().join("albra.toml"))
            .env("ALBRA_JOURNAL", "off")
            .env("ALBRA_TELEGRAM_API_URL", &self.telegram_url)
            .env("ALBRA_BINANCE_URL", &self.binance_url)
            .env("ALBRA_LOG", "warn")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null());
        c.output().expect("run albra-job")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run off the async runtime, so the loopback servers keep serving.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_sync_reaches_telegram_once_and_its_recovery_too() {
    let candles = harness::btc_15m();
    let start = candles[1200].open_time;
    let server = harness::start_server(&candles, start).await;
    let (tg, tg_url) = Telegram::start().await;
    let host = Arc::new(Host::new(tg_url, server.url.clone()));

    // The exchange rejects the keys: every sync fails. Two failures are logged, not alerted.
    for n in 1..=2 {
        let h = host.clone();
        let out = blocking(move || h.albra_job(&["position-sync"])).await;
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "albra-job: position-sync failed (exit 1), {n} run(s) in a row"
            )),
            "{err}"
        );
        assert!(!err.contains("ALERT"), "{err}");
    }
    assert!(tg.texts().is_empty(), "{:?}", tg.texts());

    // The third failure in a row: one CRITICAL message, quoting the sync's own reason.
    let h = host.clone();
    let out = blocking(move || h.albra_job(&["position-sync"])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("ALERT: position-sync failed 3 run(s) in a row"),
        "{err}"
    );
    let texts = tg.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("Critical"), "{}", texts[0]);
    assert!(texts[0].contains("job_failed"), "{}", texts[0]);
    assert!(
        texts[0].contains("position-sync failed 3 run(s) in a row (exit 1; never here)"),
        "{}",
        texts[0]
    );
    let last_error = err
        .lines()
        .rfind(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("the sync printed no error: {err}"));
    assert!(texts[0].contains(last_error), "{} / {last_error}", texts[0]);

    // A fourth failure is the same outage: logged, not sent again.
    let h = host.clone();
    let out = blocking(move || h.albra_job(&["position-sync"])).await;
    assert!(
        stderr(&out).contains("4 run(s) in a row"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tg.texts().len(), 1);
    assert!(!host.jobs().join("position-sync.ok").exists());

    // The keys are fixed: the sync succeeds, says so once, and leaves its heartbeat.
    host.write_keys(MAIN_KEY);
    let h = host.clone();
    let out = blocking(move || h.albra_job(&["position-sync"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let texts = tg.texts();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("job_recovered"), "{}", texts[1]);
    assert!(
        texts[1].contains("position-sync succeeded again after 4 failed runs"),
        "{}",
        texts[1]
    );
    assert!(host.jobs().join("position-sync.ok").exists());
    assert!(!host.jobs().join("position-sync.failures").exists());
    let h = host.clone();
    let out = blocking(move || h.albra_job(&["position-sync"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        tg.texts().len(),
        2,
        "a good run after a good run says nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_heartbeat_is_reported_once_by_the_check() {
    let (tg, tg_url) = Telegram::start().await;
    // No exchange is needed: the check only reads heartbeats and sends through the notifier.
    let host = Arc::new(Host::new(tg_url, "http://127.0.0.1:9".into()));
    let jobs = host.jobs();
    std::fs::create_dir_all(&jobs).unwrap();
    let touch = |name: &str, ago: &str| {
        let st = Command::new("touch")
            .args(["-d", ago])
            .arg(jobs.join(name))
            .status()
            .unwrap();
        assert!(st.success());
    };
    // The 1h evaluator ran 30 minutes ago: on time. The sync's last success was 10 minutes ago:
    // more than its minute plus the 5-minute grace.
    touch("evaluator-1h.ok", "30 minutes ago");
    touch("position-sync.ok", "10 minutes ago");
    let h = host.clone();
    let out = blocking(move || h.albra_job(&["check"])).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let texts = tg.texts();
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert!(texts[0].contains("Critical"), "{}", texts[0]);
    assert!(texts[0].contains("job_missed"), "{}", texts[0]);
    assert!(
        texts[0].contains("position-sync: no successful run since"),
        "{}",
        texts[0]
    );
    assert!(stderr(&out).contains("ALERT: position-sync: no successful run"));

    // Still stale five minutes later: already reported.
    let h = host.clone();
    blocking(move || h.albra_job(&["check"])).await;
    assert_eq!(tg.texts().len(), 1);

    // The sync runs again: the next check says so, once.
    touch("position-sync.ok", "now");
    let h = host.clone();
    blocking(move || h.albra_job(&["check"])).await;
    let h = host.clone();
    blocking(move || h.albra_job(&["check"])).await;
    let texts = tg.texts();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(texts[1].contains("job_recovered"), "{}", texts[1]);
    assert!(
        texts[1].contains("position-sync: running again"),
        "{}",
        texts[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_fails_when_telegram_does_not_take_the_message() {
    let (tg, tg_url) = Telegram::start().await;
    let host = Host::new(tg_url.clone(), "http://127.0.0.1:9".into());
    let notify = move |dir: &Path| {
        Command::new(harness::bin("albra"))
            .args([
                "notify",
                "--priority",
                "critical",
                "--kind",
                "test",
                "disk",
                "full",
            ])
            .current_dir(dir)
            .env("ALBRA_CONFIG", dir.join("albra.toml"))
            .env("ALBRA_TELEGRAM_API_URL", &tg_url)
            .env("TELEGRAM_BOT_TOKEN", BOT_TOKEN)
            .env("TELEGRAM_CHAT_ID", CHAT_ID)
            .env_remove("ALBRA_ENV_FILE")
            .env("ALBRA_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let dir = host.dir.path().to_path_buf();
    let out = blocking({
        let (n, d) = (notify.clone(), dir.clone());
        move || n(&d)
    })
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Printed on the console too, with its priority.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[CRITICAL] ops test: disk full"),
        "{stdout}"
    );
    let texts = tg.texts();
    assert_eq!(texts.len(), 1);
    assert!(texts[0].contains("disk full"), "{}", texts[0]);

    tg.fail.store(true, Ordering::SeqCst);
    let out = blocking(move || notify(&dir)).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("notification not delivered"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("HTTP 500"), "{}", stderr(&out));
}
