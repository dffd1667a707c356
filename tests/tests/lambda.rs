//! The real `evaluator` and `position-sync` binaries in Lambda mode: each runs as a process against
//! a loopback Lambda Runtime API emulator (the `/2018-06-01/runtime/...` endpoints), moto for
//! DynamoDB and SSM (SSM behind a counting proxy) and the Binance-speaking test server. Events are
//! real EventBridge Scheduler payloads (fixtures in `tests/fixtures/events/`).

use albra_adapters::store::dynamo::DynamoStore;
use albra_core::domain::{AccountId, Candle, Price, StrategyId, Symbol, Timeframe};
use albra_core::state::{RunKey, StateRepo};
use albra_tests::binance_server::BinanceTestServer;
use albra_tests::harness::{self, signals, MAIN_KEY, MAIN_SECRET};
use albra_tests::moto::{workspace_root, MotoServer};
use aws_sdk_ssm::types::ParameterType;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TABLE: &str = "albra-lambda-test";
const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:albra-evaluator";

// ---------------------------------------------------------------------------------------------
// Lambda Runtime API emulator
// ---------------------------------------------------------------------------------------------

/// What the function posted back for one invocation.
#[derive(Clone, Debug)]
struct Outcome {
    ok: bool,
    error_type: Option<String>,
    body: String,
}

impl Outcome {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Emu {
    queue: Mutex<VecDeque<(String, String)>>,
    outcomes: Mutex<Vec<(String, Outcome)>>,
    init_errors: Mutex<Vec<(Option<String>, String)>>,
    next_calls: AtomicUsize,
    seq: AtomicUsize,
}

struct RuntimeApi {
    emu: Arc<Emu>,
    addr: String,
}

async fn next(State(emu): State<Arc<Emu>>) -> Response {
    emu.next_calls.fetch_add(1, Ordering::SeqCst);
    // Long poll, as the real API does: the function blocks here between invocations.
    loop {
        let ev = emu.queue.lock().unwrap().pop_front();
        if let Some((id, body)) = ev {
            let deadline = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
                + 60_000;
            return (
                StatusCode::OK,
                [
                    ("Lambda-Runtime-Aws-Request-Id", id),
                    ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                    ("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN.into()),
                    (
                        "Lambda-Runtime-Trace-Id",
                        "Root=1-00000000-000000000000000000000000".into(),
                    ),
                    ("Content-Type", "application/json".into()),
                ],
                body,
            )
                .into_response();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn response(
    State(emu): State<Arc<Emu>>,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    emu.outcomes.lock().unwrap().push((
        id,
        Outcome {
            ok: true,
            error_type: None,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    ));
    StatusCode::ACCEPTED
}

async fn error(
    State(emu): State<Arc<Emu>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let body = String::from_utf8_lossy(&body).into_owned();
    // The body's errorType is the function's own; the header is the runtime's category
    // (lambda_runtime sends `unhandled`).
    let error_type = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["errorType"].as_str().map(str::to_string))
        .or_else(|| {
            headers
                .get("Lambda-Runtime-Function-Error-Type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        });
    emu.outcomes.lock().unwrap().push((
        id,
        Outcome {
            ok: false,
            error_type,
            body,
        },
    ));
    StatusCode::ACCEPTED
}

async fn init_error(State(emu): State<Arc<Emu>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let t = headers
        .get("Lambda-Runtime-Function-Error-Type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    emu.init_errors
        .lock()
        .unwrap()
        .push((t, String::from_utf8_lossy(&body).into_owned()));
    StatusCode::ACCEPTED
}

impl RuntimeApi {
    async fn start() -> RuntimeApi {
        let emu = Arc::new(Emu::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(emu.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RuntimeApi { emu, addr }
    }

    /// Queue an event (raw body) and wait for what the function posts back.
    async fn invoke(&self, body: &str, fx: &mut Function) -> Outcome {
        let id = format!(
            "req-{}-{}",
            self.emu.seq.fetch_add(1, Ordering::SeqCst),
            std::process::id()
        );
        self.emu
            .queue
            .lock()
            .unwrap()
            .push_back((id.clone(), body.to_string()));
        let started = Instant::now();
        loop {
            if let Some((_, o)) = self
                .emu
                .outcomes
                .lock()
                .unwrap()
                .iter()
                .find(|(i, _)| *i == id)
            {
                return o.clone();
            }
            if let Ok(Some(status)) = fx.child.try_wait() {
                panic!(
                    "the function exited ({status}) during {id}:\n{}",
                    fx.output()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no outcome for {id} within 60 s:\n{}",
                fx.output()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn init_errors(&self) -> Vec<(Option<String>, String)> {
        self.emu.init_errors.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------------
// A counting proxy in front of moto: how many SSM requests a process made
// ---------------------------------------------------------------------------------------------

struct SsmProxy {
    url: String,
    ssm_calls: Arc<AtomicUsize>,
}

impl SsmProxy {
    async fn start(upstream: String) -> SsmProxy {
        let ssm_calls = Arc::new(AtomicUsize::new(0));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let counter = ssm_calls.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let http = http.clone();
                let upstream = upstream.clone();
                let counter = counter.clone();
                async move {
                    let target = headers
                        .get("x-amz-target")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if target.starts_with("AmazonSSM.") {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut req = http.request(method, format!("{upstream}{uri}"));
                    for (k, v) in headers.iter() {
                        if k != "host" && k != "content-length" {
                            req = req.header(k, v);
                        }
                    }
                    let resp = req.body(body).send().await.expect("moto answers the proxy");
                    let status = resp.status();
                    let ctype = resp
                        .headers()
                        .get("content-type")
                        .cloned()
                        .unwrap_or(axum::http::HeaderValue::from_static("application/json"));
                    let bytes = resp.bytes().await.unwrap_or_default();
                    (status, [("content-type", ctype)], bytes).into_response()
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SsmProxy { url, ssm_calls }
    }

    fn calls(&self) -> usize {
        self.ssm_calls.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// The function process
// ---------------------------------------------------------------------------------------------

struct Function {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Function {
    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default()
        )
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Wait for the process to exit by itself (init failures), at most `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let started = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            assert!(
                started.elapsed() < limit,
                "still running after {limit:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Lambda environment a function gets, with the runtime API at `api`.
fn lambda_env(api: &str, name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/11/21/[$LATEST]test".into(),
        ),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        ("ALBRA_STAGE", "test".into()),
        ("ALBRA_LOG", "info".into()),
    ]
}

fn spawn(
    name: &str,
    dir: &Path,
    binance_url: &str,
    env: &[(&str, String)],
    remove: &[&str],
) -> Function {
    let mut c = harness::command(name, dir, binance_url, env);
    // The keys come from SSM in these tests, never from the environment.
    c.env_remove("BINANCE_API_KEY")
        .env_remove("BINANCE_SECRET_KEY");
    for k in remove {
        c.env_remove(k);
    }
    let stdout = dir.join(format!("{name}.stdout"));
    let stderr = dir.join(format!("{name}.stderr"));
    c.stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
    Function {
        child: c.spawn().expect("spawn function"),
        stdout,
        stderr,
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture: 1h EMA_CROSS on the real candles, keys in SSM, state in DynamoDB
// ---------------------------------------------------------------------------------------------

/// The repository's 15m candles folded into 1h candles (only complete hours).
fn hourly(c15: &[Candle]) -> Vec<Candle> {
    let h = Timeframe::H1.millis();
    let mut out: Vec<Candle> = Vec::new();
    let mut i = 0;
    while i + 4 <= c15.len() {
        let w = &c15[i..i + 4];
        if w[0].open_time % h != 0 || w[3].open_time != w[0].open_time + 3 * Timeframe::M15.millis()
        {
            i += 1;
            continue;
        }
        out.push(Candle {
            open_time: w[0].open_time,
            open: w[0].open,
            high: Price::new(w.iter().map(|c| c.high.get()).max().unwrap()),
            low: Price::new(w.iter().map(|c| c.low.get()).min().unwrap()),
            close: w[3].close,
            volume: w.iter().map(|c| c.volume).sum(),
        });
        i += 4;
    }
    out
}

fn write_config(dir: &Path, key_source: &str) -> PathBuf {
    let text = format!(
        r#"
[binance]
recv_window_ms = 5000
timeout_ms = 2000

[jobs]
close_delay_secs = 3
kline_wait_secs = 2
history = 500
pending_timeout_secs = 120

[notifier]
console = true
telegram = false

[[strategies]]
name = "EMA_CROSS"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[strategies.params]
fast = 50
slow = 200
stop_loss_pct = 0.03

[[accounts]]
id = "main"
key_source = "{key_source}"
strategies = ["EMA_CROSS"]
"#
    );
    let path = dir.join("albra.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// SSM SecureStrings in moto, as an operator puts them (`aws ssm put-parameter --type SecureString`).
async fn put_secure_strings(sdk: &aws_config::SdkConfig, params: &[(&str, &str)]) {
    let ssm = aws_sdk_ssm::Client::new(sdk);
    for (name, value) in params {
        ssm.put_parameter()
            .name(*name)
            .value(*value)
            .r#type(ParameterType::SecureString)
            .overwrite(true)
            .send()
            .await
            .unwrap();
    }
}

struct World {
    moto: MotoServer,
    proxy: SsmProxy,
    api: RuntimeApi,
    server: BinanceTestServer,
    dir: tempfile::TempDir,
    /// Open time of the 1h candle where EMA_CROSS signals.
    signal_open: i64,
}

impl World {
    async fn start() -> World {
        let c15 = harness::btc_15m();
        let c1h = hourly(&c15);
        let signal = signals(&c1h, 500, 0, 1)[0];
        let close = signal.open_time + Timeframe::H1.millis();
        // The exchange clock a few seconds after the close (+ the 3 s close delay).
        let server = harness::start_server(&c15, close + 5_000).await;
        let moto = MotoServer::start();
        let sdk = moto.sdk_config().await;
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), TABLE)
            .create_table_if_missing()
            .await
            .expect("create table");
        // Under the stage the functions run in (ALBRA_STAGE=test): `ssm` reads
        // /albra/{stage}/{account}/….
        put_secure_strings(
            &sdk,
            &[
                ("/albra/test/main/binance_api_key", MAIN_KEY),
                ("/albra/test/main/binance_api_secret", MAIN_SECRET),
            ],
        )
        .await;
        let proxy = SsmProxy::start(moto.endpoint()).await;
        let api = RuntimeApi::start().await;
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), "ssm");
        World {
            moto,
            proxy,
            api,
            server,
            dir,
            signal_open: signal.open_time,
        }
    }

    fn env(&self, function: &str) -> Vec<(&'static str, String)> {
        let mut env = lambda_env(&self.api.addr, function);
        env.extend(self.moto.env_vars());
        env.push(("AWS_ENDPOINT_URL_SSM", self.proxy.url.clone()));
        env.push(("ALBRA_CONFIG", "albra.toml".into()));
        env.push(("ALBRA_STATE", format!("dynamodb:{TABLE}")));
        env
    }

    fn spawn(&self, function: &str) -> Function {
        self.spawn_with(function, &[])
    }

    fn spawn_with(&self, function: &str, extra: &[(&'static str, String)]) -> Function {
        let mut env = self.env(function);
        env.extend_from_slice(extra);
        spawn(function, self.dir.path(), &self.server.url, &env, &[])
    }

    fn orders_posted(&self) -> usize {
        self.server.count("POST", "/fapi/v1/order")
    }

    async fn repo(&self) -> StateRepo {
        let sdk = self.moto.sdk_config().await;
        StateRepo::new(Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            TABLE,
        )))
    }

    /// Items in the state table (every state write adds or changes one).
    async fn items(&self) -> Vec<String> {
        let sdk = self.moto.sdk_config().await;
        let out = aws_sdk_dynamodb::Client::new(&sdk)
            .scan()
            .table_name(TABLE)
            .send()
            .await
            .unwrap();
        let mut v: Vec<String> = out
            .items()
            .iter()
            .map(|i| {
                let sorted: std::collections::BTreeMap<_, _> = i.iter().collect();
                format!("{sorted:?}")
            })
            .collect();
        v.sort();
        v
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(workspace_root().join("tests/fixtures/events").join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn iso(ms: i64) -> String {
    chrono_free_iso(ms)
}

/// RFC 3339 of a UTC millisecond time, without pulling a date crate into the tests.
fn chrono_free_iso(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The Scheduler payload of the 1h schedule (the fixture, with this run's scheduled time).
fn scheduler_event(time_ms: i64) -> String {
    fixture("scheduler-evaluator-1h.json").replace("2026-11-21T13:00:00Z", &iso(time_ms))
}

/// EMF lines on the function's stdout.
fn emf_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("_aws").is_some())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn iso_formatting_matches_known_dates() {
    assert_eq!(iso(1_795_266_000_000), "2026-11-21T13:00:00Z");
    assert_eq!(iso(0), "1970-01-01T00:00:00Z");
    assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_events_evaluate_their_candle_once_and_ssm_is_read_once_per_cold_start() {
    let w = World::start().await;
    let close = w.signal_open + Timeframe::H1.millis();
    let mut f = w.spawn("evaluator");

    // 1. The 1h schedule fires at the close: the candle of the event's time is evaluated.
    let first = w.api.invoke(&scheduler_event(close), &mut f).await;
    assert!(first.ok, "{first:?}\n{}", f.output());
    let body = first.json();
    assert_eq!(body["timeframe"], "1h", "{body}");
    assert_eq!(body["candle_open_time"], w.signal_open, "{body}");
    assert_eq!(body["orders_placed"], 2, "the entry and its stop: {body}");
    assert!(
        body["lines"][0].as_str().unwrap().contains("entered"),
        "{body}"
    );
    assert_eq!(w.orders_posted(), 1, "one entry order");
    assert_eq!(w.server.open_algo_orders(MAIN_KEY).len(), 1, "one stop");
    // The run marker is the event's candle, in DynamoDB.
    let run = RunKey {
        account: AccountId::new("main"),
        strategy: StrategyId::new("EMA_CROSS"),
        symbol: Symbol::new("BTCUSDT"),
        tf: Timeframe::H1,
        open_time: w.signal_open,
    };
    assert!(
        w.repo().await.run_marker(&run).await.unwrap().is_some(),
        "run marker of the event's candle"
    );

    // 2. The same scheduled event delivered again (an async retry): nothing is placed.
    let items_before = w.items().await;
    let again = w.api.invoke(&scheduler_event(close), &mut f).await;
    assert!(again.ok, "{again:?}");
    assert_eq!(again.json()["orders_placed"], 0, "{}", again.body);
    assert!(again.body.contains("already evaluated"), "{}", again.body);
    assert_eq!(w.orders_posted(), 1, "the duplicate placed nothing");

    // 3. Malformed and unexpected payloads: a clear error, nothing sent, nothing written.
    let cases: [(&str, &str); 5] = [
        (
            r#"{"timeframe":"1h"}"#,
            "`time` and `timeframe` are both required",
        ),
        (
            &format!(r#"{{"timeframe":"2h","time":"{}"}}"#, iso(close)),
            "unknown timeframe `2h`",
        ),
        (
            &format!(
                r#"{{"timeframe":"1h","time":"{}","symbol":"ETHUSDT"}}"#,
                iso(close)
            ),
            "unknown field `symbol`",
        ),
        (r#"{"timeframe":"1h","time":"soon"}"#, "RFC 3339"),
        (
            &format!(
                r#"{{"timeframe":"1h","time":"{}"}}"#,
                iso(close - 6 * 3_600_000)
            ),
            "stale event",
        ),
    ];
    let orders_before = w.server.requests().len();
    for (payload, reason) in cases {
        let o = w.api.invoke(payload, &mut f).await;
        assert!(!o.ok, "{payload} accepted: {o:?}");
        assert_eq!(
            o.error_type.as_deref(),
            Some("Albra.NonRetryable"),
            "{payload}: {o:?}"
        );
        let msg = o.json()["errorMessage"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(msg.contains(reason), "{payload}: {msg}");
    }
    // Not JSON at all: the runtime's own deserialiser rejects it before the handler runs.
    let o = w.api.invoke("{not json", &mut f).await;
    assert!(!o.ok, "{o:?}");
    let signed_after: Vec<_> = w.server.requests()[orders_before..]
        .iter()
        .filter(|r| r.method == "POST" || r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert!(
        signed_after.is_empty(),
        "bad events reached the exchange: {signed_after:?}"
    );
    assert_eq!(w.orders_posted(), 1);
    assert_eq!(w.items().await, items_before, "bad events wrote state");

    // 4. One cold start, eight invocations: SSM was read once (both keys in one request).
    assert_eq!(w.proxy.calls(), 1, "SSM requests in one cold start");
    // The runtime asks for the next event after each invocation: 8 invocations, 9 asks.
    let started = Instant::now();
    while w.api.emu.next_calls.load(Ordering::SeqCst) < 9
        && started.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(w.api.emu.next_calls.load(Ordering::SeqCst), 9);
    assert!(
        f.child.try_wait().unwrap().is_none(),
        "one process served them all"
    );

    // 5. EMF metrics on stdout for every completed run.
    let out = f.stdout();
    let lines = emf_lines(&out);
    let jobs: Vec<&Value> = lines.iter().filter(|l| l["Job"] == "evaluator").collect();
    assert_eq!(jobs.len(), 2, "one job line per completed run:\n{out}");
    assert_eq!(jobs[0]["OrdersPlaced"], 2.0);
    assert_eq!(jobs[1]["OrdersPlaced"], 0.0);
    assert_eq!(jobs[0]["Stage"], "test");
    assert!(
        jobs[0]["ApiWeightUsed1m"].as_f64().unwrap() >= 1.0,
        "{}",
        jobs[0]
    );
    // By default only the alarmed values are CloudWatch metrics; the rest ride along.
    assert_eq!(
        jobs[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Albra"
    );
    assert_eq!(
        jobs[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"],
        serde_json::json!([
            {"Name": "OrdersRejected", "Unit": "Count"},
            {"Name": "JobErrors", "Unit": "Count"},
        ])
    );
    // The evaluator's heartbeat is per timeframe (one alarm per schedule), 1 for a clean run.
    assert_eq!(jobs[0]["Timeframe"], "1h");
    assert_eq!(jobs[0]["Heartbeat"], 1.0);
    assert_eq!(
        jobs[0]["_aws"]["CloudWatchMetrics"][1],
        serde_json::json!({
            "Namespace": "Albra",
            "Dimensions": [["Stage", "Job", "Timeframe"]],
            "Metrics": [{"Name": "Heartbeat", "Unit": "Count"}],
        })
    );
    // Logs are JSON in Lambda.
    let err = std::fs::read_to_string(&f.stderr).unwrap();
    let invocations = err
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "invocation" && v["level"] == "INFO")
        .count();
    // Seven reached the handler; the eighth (not JSON) was refused by the runtime before it.
    assert_eq!(invocations, 7, "JSON log lines:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn position_sync_serves_minute_events_and_emits_the_heartbeat() {
    let w = World::start().await;
    let close = w.signal_open + Timeframe::H1.millis();
    let mut ev = w.spawn("evaluator");
    let o = w.api.invoke(&scheduler_event(close), &mut ev).await;
    assert!(o.ok, "{o:?}");
    drop(ev);

    // Its own runtime API: the killed evaluator's unanswered long poll must not swallow the
    // sync's events (the emulator cannot tell a dead poller from a live one).
    let api = RuntimeApi::start().await;
    let mut f = w.spawn_with(
        "position-sync",
        &[
            ("ALBRA_METRICS", "full".into()),
            ("AWS_LAMBDA_RUNTIME_API", api.addr.clone()),
        ],
    );
    let sync_event =
        fixture("scheduler-position-sync.json").replace("2026-11-21T13:01:00Z", &iso(close));
    for _ in 0..2 {
        let o = api.invoke(&sync_event, &mut f).await;
        assert!(o.ok, "{o:?}\n{}", f.output());
        assert_eq!(o.json()["sync_drift"], 0, "{}", o.body);
        assert!(o.body.contains("1 open position"), "{}", o.body);
    }
    // No second stop, no order: everything was in order.
    assert_eq!(w.server.count("POST", "/fapi/v1/algoOrder"), 1);
    assert_eq!(w.orders_posted(), 1);

    // A position opened by hand: the next sync sees the exchange differ from state (drift 1) and
    // tracks it as MANUAL, after which they agree again.
    // Same direction as ours, so it adds to the exchange position instead of reducing it.
    let side = if w.server.position(MAIN_KEY, "BTCUSDT").is_sign_negative() {
        "SELL"
    } else {
        "BUY"
    };
    w.server
        .manual_market_order(MAIN_KEY, "BTCUSDT", side, rust_decimal::Decimal::new(5, 3));
    let o = api.invoke(&sync_event, &mut f).await;
    assert!(o.ok, "{o:?}");
    assert_eq!(o.json()["sync_drift"], 1, "{}", o.body);
    let o = api.invoke(&sync_event, &mut f).await;
    assert_eq!(o.json()["sync_drift"], 0, "{}", o.body);

    // The evaluator's 1h event is not a sync event.
    let o = api.invoke(&scheduler_event(close), &mut f).await;
    assert!(!o.ok);
    assert!(o.body.contains("takes no timeframe"), "{}", o.body);
    // Two cold starts (evaluator, then sync), one SSM request each.
    assert_eq!(w.proxy.calls(), 2);

    let lines = emf_lines(&f.stdout());
    let beats: Vec<&Value> = lines
        .iter()
        .filter(|l| l["Job"] == "position-sync")
        .collect();
    assert_eq!(beats.len(), 4, "{}", f.output());
    assert!(beats.iter().all(|b| b["Heartbeat"] == 1.0));
    let drift: Vec<f64> = beats
        .iter()
        .map(|b| b["SyncDrift"].as_f64().unwrap())
        .collect();
    assert_eq!(drift, [0.0, 0.0, 1.0, 0.0]);
    let acct: Vec<&Value> = lines.iter().filter(|l| l["Account"] == "main").collect();
    assert_eq!(acct.len(), 4, "account metrics: {}", f.output());
    assert_eq!(acct[0]["PositionsOpen"], 1.0);
    assert_eq!(
        acct[3]["PositionsOpen"], 2.0,
        "the MANUAL one counts: {}",
        acct[3]
    );
    assert!(acct[0]["EquityUsdt"].as_f64().unwrap() > 0.0);
    assert!(acct[0].get("MddLevel").is_some() && acct[0].get("DailyLossHalt").is_some());
    // ALBRA_METRICS=full: every value a metric, also per account.
    assert_eq!(
        acct[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["Stage"], ["Stage", "Account"]])
    );
    assert_eq!(
        beats[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .len(),
        7,
        "{}",
        beats[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ssm_parameter_fails_the_cold_start_naming_its_path() {
    let w = World::start().await;
    write_config(w.dir.path(), "ssm:/albra/nobody");
    let mut f = w.spawn("evaluator");
    let code = f.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1), "{}", f.output());
    let errs = w.api.init_errors();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].1.contains("/albra/nobody/binance_api_key"),
        "{errs:?}"
    );
    assert!(f.output().contains("/albra/nobody/binance_api_key"));
    // It never asked for an event, so nothing was evaluated.
    assert_eq!(w.api.emu.next_calls.load(Ordering::SeqCst), 0);
    assert_eq!(w.orders_posted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_region_or_credentials_fail_within_a_second_with_the_fix() {
    let api = RuntimeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "ssm");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut base = lambda_env(&api.addr, "evaluator");
    base.extend([
        ("ALBRA_CONFIG", "albra.toml".to_string()),
        ("ALBRA_STATE", format!("dynamodb:{TABLE}")),
        ("HOME", home.display().to_string()),
        (
            "AWS_CONFIG_FILE",
            home.join("none-config").display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("none-credentials").display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]);
    let aws_vars = [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_ENDPOINT_URL",
    ];

    // No region.
    let started = Instant::now();
    let mut f = spawn(
        "evaluator",
        dir.path(),
        "http://127.0.0.1:9",
        &base,
        &aws_vars,
    );
    let code = f.wait_exit(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{}", f.output());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let out = f.output();
    assert!(
        out.contains("AWS region not set") && out.contains("AWS_REGION"),
        "{out}"
    );
    drop(f);

    // A region but no credentials.
    let mut env = base.clone();
    env.push(("AWS_REGION", "eu-west-1".to_string()));
    let started = Instant::now();
    let mut f = spawn(
        "evaluator",
        dir.path(),
        "http://127.0.0.1:9",
        &env,
        &aws_vars[1..],
    );
    let code = f.wait_exit(Duration::from_secs(5)).await;
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{}", f.output());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    let out = f.output();
    assert!(
        out.contains("no AWS credentials") && out.contains("AWS_ACCESS_KEY_ID"),
        "{out}"
    );
    let errs = api.init_errors();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs
        .iter()
        .all(|(t, _)| t.as_deref() == Some("Albra.InitError")));
}

// ---------------------------------------------------------------------------------------------
// Benchmark (measured, never asserted): `make bench-lambda`
// ---------------------------------------------------------------------------------------------

/// Peak resident set of a running process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench-lambda`"]
async fn bench_lambda_start_rss_size_and_monthly_cost() {
    const RUNS: usize = 7;
    let bins = std::env::var_os("ALBRA_BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(harness::bin_dir);
    let c15 = harness::btc_15m();
    let signal = signals(&hourly(&c15), 500, 0, 1)[0];
    let close = signal.open_time + Timeframe::H1.millis();
    let server = harness::start_server(&c15, close + 5_000).await;
    let api = RuntimeApi::start().await;
    println!("bench-lambda: binaries from {}", bins.display());
    println!("  (keys from the environment, SQLite state: the cold start makes no network call)");
    let mut per_job = Vec::new();
    for job in ["evaluator", "position-sync"] {
        let program = bins.join(job);
        assert!(
            program.exists(),
            "{} missing: make bench-lambda builds it",
            program.display()
        );
        let size = std::fs::metadata(&program).unwrap().len();
        let (mut ready, mut first, mut warm, mut rss) = (vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            server.set_time(close + 5_000);
            let dir = tempfile::tempdir().unwrap();
            write_config(dir.path(), "env");
            let mut c = std::process::Command::new(&program);
            c.current_dir(dir.path())
                .env("ALBRA_BINANCE_URL", &server.url)
                .env("BINANCE_API_KEY", MAIN_KEY)
                .env("BINANCE_SECRET_KEY", MAIN_SECRET)
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("ALBRA_CONFIG", "albra.toml")
                .env("ALBRA_STATE", "state")
                .env_remove("TELEGRAM_BOT_TOKEN")
                .env_remove("TELEGRAM_CHAT_ID")
                .stdin(Stdio::null());
            for (k, v) in lambda_env(&api.addr, job) {
                c.env(k, v);
            }
            c.env("ALBRA_LOG", "warn");
            let stdout = dir.path().join("out");
            let stderr = dir.path().join("err");
            c.stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
                .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()));
            let before = api.emu.next_calls.load(Ordering::SeqCst);
            let t0 = Instant::now();
            let mut f = Function {
                child: c.spawn().unwrap(),
                stdout,
                stderr,
            };
            while api.emu.next_calls.load(Ordering::SeqCst) == before {
                assert!(t0.elapsed() < Duration::from_secs(10), "{}", f.output());
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            ready.push(t0.elapsed().as_secs_f64() * 1e3);
            let event = if job == "evaluator" {
                scheduler_event(close)
            } else {
                fixture("scheduler-position-sync.json").replace("2026-11-21T13:01:00Z", &iso(close))
            };
            let t = Instant::now();
            let o = api.invoke(&event, &mut f).await;
            assert!(o.ok, "{o:?}");
            first.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let o = api.invoke(&event, &mut f).await;
            assert!(o.ok, "{o:?}");
            warm.push(t.elapsed().as_secs_f64() * 1e3);
            rss.push(peak_rss_kib(f.child.id()).unwrap_or(0) as f64 / 1024.0);
        }
        let (r, fi, w, m) = (
            median(&mut ready),
            median(&mut first),
            median(&mut warm),
            median(&mut rss),
        );
        println!(
            "{job:>14}: start-to-ready {r:.1} ms (median of {RUNS}), first invocation {fi:.1} ms, \
             second {w:.1} ms, peak RSS {m:.1} MiB, bootstrap {:.1} MiB",
            size as f64 / 1_048_576.0
        );
        per_job.push((job, fi.max(w)));
    }

    // Monthly estimate for one deployment trading three accounts, from the measured durations.
    // List prices (us-east-1, arm64): Lambda $0.0000133334 per GB-s and $0.20 per million
    // requests; DynamoDB on demand $0.625 per million writes and $0.125 per million reads;
    // EventBridge Scheduler $1.00 per million after 14 million free; SSM standard parameters
    // free; CloudWatch custom metrics $0.30 per metric, alarms $0.10, logs $0.50 per GB.
    let accounts = 3.0;
    let memory_gb = 128.0 / 1024.0;
    let close_delay_s = 3.0;
    let month_min = 30.0 * 24.0 * 60.0;
    let eval_runs = month_min / 15.0 + month_min / 60.0 + month_min / 240.0;
    let sync_runs = month_min;
    let eval_ms = per_job[0].1;
    let sync_ms = per_job[1].1;
    // The evaluator sleeps until close + close_delay_secs (billed), then works per account.
    let eval_s = close_delay_s + accounts * eval_ms / 1e3;
    let sync_s = accounts * sync_ms / 1e3;
    let gb_s = memory_gb * (eval_runs * eval_s + sync_runs * sync_s);
    let lambda_compute = gb_s * 0.000_013_333_4;
    let lambda_requests = (eval_runs + sync_runs) / 1e6 * 0.20;
    // Per account and run: evaluator 4 reads + 2 writes, sync 4 reads + 1 write (state, positions,
    // run marker, metrics reads).
    let reads = accounts * 4.0 * (eval_runs + sync_runs);
    let writes = accounts * (2.0 * eval_runs + sync_runs);
    let dynamo = reads / 1e6 * 0.125 + writes / 1e6 * 0.625;
    let scheduler = 0.0; // 46,980 invocations a month, far under the 14 million free
    let log_gb = (eval_runs + sync_runs) * 2.5e3 / 1e9;
    let logs = log_gb * 0.50;
    let core = lambda_compute + lambda_requests + dynamo + scheduler + logs;
    // ALBRA_METRICS=alarms (the template's default): OrdersRejected and JobErrors per job, the
    // sync's Heartbeat and the evaluator's per timeframe (3), MddLevel and DailyLossHalt per
    // stage. full: 7 per job (the evaluator's heartbeat per timeframe: 2 more), 5 per stage and 5
    // per account.
    let metrics = 2.0 * 2.0 + 1.0 + 3.0 + 2.0;
    let metrics_full = 7.0 * 2.0 + 2.0 + 5.0 * (1.0 + accounts);
    // Lambda Errors ×2, heartbeats ×4, JobErrors ×2, MddLevel, DailyLossHalt, OrdersRejected.
    let alarms = 11.0;
    println!(
        "monthly estimate, 3 accounts, 128 MB arm64 (no free tier): {:.0} evaluator + {:.0} sync \
         invocations, {gb_s:.0} GB-s",
        eval_runs, sync_runs
    );
    println!(
        "  Lambda compute ${lambda_compute:.3} + requests ${lambda_requests:.3} + DynamoDB ${dynamo:.3} \
         + Scheduler ${scheduler:.3} + logs ${logs:.3} = ${core:.2}"
    );
    let cw = (metrics - 10.0f64).max(0.0) * 0.30;
    let cw_full = (metrics_full - 10.0f64).max(0.0) * 0.30;
    let cw_alarms = (alarms - 10.0f64).max(0.0) * 0.10;
    println!(
        "  CloudWatch, ALBRA_METRICS=alarms: {metrics:.0} custom metrics (10 free) ${cw:.2}, \
         {alarms:.0} alarms (10 free) ${cw_alarms:.2} => total ${:.2}/month",
        core + cw + cw_alarms
    );
    println!(
        "  CloudWatch, ALBRA_METRICS=full: {metrics_full:.0} custom metrics, ${cw_full:.2} beyond the \
         10 free (${:.2} without the free tier) => total ${:.2}/month",
        metrics_full * 0.30,
        core + cw_full + cw_alarms
    );
}

// ---------------------------------------------------------------------------------------------
// The Telegram bot behind a function URL
// ---------------------------------------------------------------------------------------------

const BOT_CHAT: i64 = 4242;
const WEBHOOK_SECRET: &str = "lambda-webhook_secret-0123";

/// A function URL invocation as Lambda delivers it (the API Gateway v2 HTTP payload a function
/// URL sends, headers lower-cased): Telegram's POST of `update`, with `secret` in its header.
fn function_url_event(secret: Option<&str>, update: &Value) -> String {
    let mut headers = serde_json::json!({ "content-type": "application/json" });
    if let Some(s) = secret {
        headers["x-telegram-bot-api-secret-token"] = Value::from(s);
    }
    url_event("POST", "/", headers, &[], &update.to_string())
}

/// A function URL invocation (payload 2.0) of `method path[?query]` with `headers`, the
/// `cookies` the browser sends and `body`.
fn url_event(
    method: &str,
    path: &str,
    mut headers: Value,
    cookies: &[String],
    body: &str,
) -> String {
    headers["host"] = Value::from("abcdefghij.lambda-url.us-east-1.on.aws");
    headers["x-forwarded-proto"] = Value::from("https");
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    serde_json::json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "cookies": cookies,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "91.108.6.1",
                "userAgent": ""
            },
            "requestId": "d2a0e1b5-0000-4000-8000-000000000000",
            "routeKey": "$default",
            "stage": "$default",
            "time": "07/Dec/2026:12:00:00 +0000",
            "timeEpoch": 1_796_644_800_000_i64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The real `telegram-webhook` binary in Lambda mode, its bot token, chat and webhook secret in
/// SSM (never in its environment): a delivery without the secret gets 401 and no answer; one
/// with it is answered in the chat through the Bot API; the same update delivered again is
/// answered once; a chat not on the allow-list gets 200 and nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_telegram_webhook_function_answers_only_deliveries_carrying_the_secret() {
    use albra_tests::telegram_server::{message_update, TelegramTestServer};
    let w = World::start().await;
    let tg = TelegramTestServer::start().await;
    put_secure_strings(
        &w.moto.sdk_config().await,
        &[
            ("/albra/test/telegram/bot_token", TelegramTestServer::TOKEN),
            ("/albra/test/telegram/chat_id", &BOT_CHAT.to_string()),
            ("/albra/test/telegram/webhook_secret", WEBHOOK_SECRET),
        ],
    )
    .await;
    let mut f = w.spawn_with(
        "telegram-webhook",
        &[("ALBRA_TELEGRAM_API_URL", tg.url.clone())],
    );
    let status = message_update(1, 10, BOT_CHAT, 7, now_secs(), "/status");

    for forged in [None, Some("lambda-webhook_secret-0124")] {
        let o = w
            .api
            .invoke(&function_url_event(forged, &status), &mut f)
            .await;
        assert!(o.ok, "{o:?}\n{}", f.output());
        assert_eq!(o.json()["statusCode"], 401, "{}", o.body);
    }
    assert!(
        tg.calls_to("sendMessage").is_empty(),
        "a forged delivery was answered"
    );

    let o = w
        .api
        .invoke(&function_url_event(Some(WEBHOOK_SECRET), &status), &mut f)
        .await;
    assert_eq!(o.json()["statusCode"], 200, "{}\n{}", o.body, f.output());
    let sent = tg.calls_to("sendMessage");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].chat_id.as_deref(), Some("4242"));
    let text = sent[0].text.clone().unwrap_or_default();
    assert!(
        text.contains("main"),
        "the status names the account: {text}"
    );

    // Telegram redelivers an update it did not see answered: done once only.
    let o = w
        .api
        .invoke(&function_url_event(Some(WEBHOOK_SECRET), &status), &mut f)
        .await;
    assert_eq!(o.json()["statusCode"], 200, "{}", o.body);
    assert_eq!(tg.calls_to("sendMessage").len(), 1, "answered twice");

    // Another chat: acknowledged (no redelivery) and ignored.
    let foreign = message_update(2, 11, 999, 8, now_secs(), "/status");
    let o = w
        .api
        .invoke(&function_url_event(Some(WEBHOOK_SECRET), &foreign), &mut f)
        .await;
    assert_eq!(o.json()["statusCode"], 200, "{}", o.body);
    assert_eq!(
        tg.calls_to("sendMessage").len(),
        1,
        "a foreign chat was answered"
    );
}

/// The 30-minute status report's schedule in Lambda: the position-sync function runs it on
/// `{"job":"status-report"}` with the Telegram credentials from SSM, and sends one message per
/// half hour (the same slot delivered again sends nothing); the account's open position is in it.
#[tokio::test(flavor = "multi_thread")]
async fn the_status_report_event_sends_one_report_per_half_hour_from_the_sync_function() {
    use albra_tests::telegram_server::TelegramTestServer;
    let w = World::start().await;
    let close = w.signal_open + Timeframe::H1.millis();
    let mut ev = w.spawn("evaluator");
    let o = w.api.invoke(&scheduler_event(close), &mut ev).await;
    assert!(o.ok, "{o:?}");
    drop(ev);

    let tg = TelegramTestServer::start().await;
    put_secure_strings(
        &w.moto.sdk_config().await,
        &[
            ("/albra/test/telegram/bot_token", TelegramTestServer::TOKEN),
            ("/albra/test/telegram/chat_id", &BOT_CHAT.to_string()),
        ],
    )
    .await;
    let cfg = w.dir.path().join("albra.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("telegram = false", "telegram = true")).unwrap();

    let api = RuntimeApi::start().await;
    let mut f = w.spawn_with(
        "position-sync",
        &[
            ("AWS_LAMBDA_RUNTIME_API", api.addr.clone()),
            ("ALBRA_TELEGRAM_API_URL", tg.url.clone()),
        ],
    );
    let event = format!(
        r#"{{"job":"status-report","time":"{}","execution_id":"e1","attempt":"1","schedule_arn":"arn:aws:scheduler:us-east-1:123456789012:schedule/default/albra-test-status-report"}}"#,
        iso(close + 30 * 60_000)
    );
    let o = api.invoke(&event, &mut f).await;
    assert!(o.ok, "{o:?}\n{}", f.output());
    assert_eq!(o.json()["job"], "status-report", "{}", o.body);
    let sent = tg.calls_to("sendMessage");
    assert_eq!(sent.len(), 1, "{sent:?}\n{}", f.output());
    assert_eq!(sent[0].chat_id.as_deref(), Some("4242"));
    let text = sent[0].text.clone().unwrap_or_default();
    assert!(
        text.contains("main") && text.contains("BTCUSDT"),
        "the report names the account and its open position: {text}"
    );

    // The same slot again (a retry, a second schedule target): nothing more is sent.
    let o = api.invoke(&event, &mut f).await;
    assert!(o.ok, "{o:?}");
    assert!(o.body.contains("AlreadySent"), "{}", o.body);
    assert_eq!(
        tg.calls_to("sendMessage").len(),
        1,
        "sent twice in one slot"
    );
    // No order was sent by the report.
    assert_eq!(w.orders_posted(), 1);
}

/// The real `dashboard` binary in Lambda mode over the DynamoDB store an evaluation filled,
/// its token in SSM (never in its environment): a page without the session sends to the login
/// and the JSON is refused; a wrong token gets 401 and no cookie; the token gets a session
/// cookie (HttpOnly, Secure, SameSite=Strict) through the function URL's `cookies`, and with it
/// the overview and `/api/status` show the account and its open position, as the store holds it.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_function_serves_its_pages_only_to_a_session() {
    const TOKEN: &str = "lambda-dashboard-token-0123456789ab";
    let w = World::start().await;
    let close = w.signal_open + Timeframe::H1.millis();
    let mut ev = w.spawn("evaluator");
    let o = w.api.invoke(&scheduler_event(close), &mut ev).await;
    assert!(o.ok, "{o:?}");
    drop(ev);
    put_secure_strings(
        &w.moto.sdk_config().await,
        &[("/albra/test/dashboard/token", TOKEN)],
    )
    .await;
    let mut f = w.spawn("dashboard");
    let get =
        |path: &str, cookies: &[String]| url_event("GET", path, serde_json::json!({}), cookies, "");

    let o = w.api.invoke(&get("/", &[]), &mut f).await;
    assert!(o.ok, "{o:?}\n{}", f.output());
    let r = o.json();
    assert_eq!(r["statusCode"], 303, "{}", o.body);
    assert_eq!(r["headers"]["location"], "/login?next=%2F");
    let o = w.api.invoke(&get("/api/status", &[]), &mut f).await;
    assert_eq!(o.json()["statusCode"], 401, "{}", o.body);
    assert!(!o.body.contains("BTCUSDT"), "{}", o.body);

    let form = serde_json::json!({ "content-type": "application/x-www-form-urlencoded" });
    let wrong = url_event(
        "POST",
        "/login",
        form.clone(),
        &[],
        "token=not-the-token-0123456789abcdef&next=%2F",
    );
    let o = w.api.invoke(&wrong, &mut f).await;
    assert_eq!(o.json()["statusCode"], 401, "{}", o.body);
    assert!(
        o.json()["cookies"].as_array().is_none_or(|c| c.is_empty()),
        "{}",
        o.body
    );

    let login = url_event(
        "POST",
        "/login",
        form,
        &[],
        &format!("token={TOKEN}&next=%2Fapi%2Fstatus"),
    );
    let o = w.api.invoke(&login, &mut f).await;
    let r = o.json();
    assert_eq!(r["statusCode"], 303, "{}", o.body);
    assert_eq!(r["headers"]["location"], "/api/status");
    let set = r["cookies"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no cookie: {}", o.body));
    assert!(set.contains("HttpOnly; Secure; SameSite=Strict"), "{set}");
    let session = vec![set.split(';').next().unwrap().to_string()];

    let o = w.api.invoke(&get("/api/status", &session), &mut f).await;
    let r = o.json();
    assert_eq!(r["statusCode"], 200, "{}\n{}", o.body, f.output());
    let status: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    let main = &status["accounts"][0];
    assert_eq!(main["account"], "main");
    assert_eq!(main["open_positions"], 1, "{status}");
    assert_eq!(main["positions"][0]["symbol"], "BTCUSDT");
    let stored = w
        .repo()
        .await
        .positions(&AccountId::new("main"))
        .await
        .unwrap();
    assert_eq!(
        main["positions"][0]["qty"].as_str().unwrap(),
        stored[0].value.qty.get().to_string(),
        "the page shows the store"
    );
    assert!(
        status["state"].as_str().unwrap().starts_with("dynamodb:"),
        "{status}"
    );

    let o = w.api.invoke(&get("/", &session), &mut f).await;
    let r = o.json();
    assert_eq!(r["statusCode"], 200, "{}", o.body);
    let page = r["body"].as_str().unwrap();
    assert!(
        page.contains("data-account=\"main\"") && page.contains("BTCUSDT"),
        "{page}"
    );
    assert_eq!(r["headers"]["cache-control"], "no-store");
}
