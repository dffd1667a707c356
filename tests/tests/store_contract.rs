//! The state store contract (`albra_tests::store_contract`) against every implementation: the
//! SQLite file (durable and fast), two connections and two processes on one file, and DynamoDB on
//! a real moto server (one handle, and this process plus a second one reaching it through
//! `open_store` and the standard AWS environment variables).

use albra_adapters::store::{open_store, DynamoStore, SqliteStore};
use albra_core::ports::{Expect, StateStore, StoreError};
use albra_tests::moto::MotoServer;
use albra_tests::store_contract::{self as contract, unique_pk};
use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_meets_the_contract() {
    let store = albra_core::store::memory::MemoryStore::new();
    contract::run_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_durable_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state/albra.db")).unwrap();
    contract::run_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_fast_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_fast(dir.path().join("scratch.db")).unwrap();
    contract::run_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "current_thread")]
async fn sqlite_meets_the_contract_on_a_single_thread_runtime() {
    // Replay may drive the store from a current-thread runtime: the fast store runs inline there.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_fast(dir.path().join("scratch.db")).unwrap();
    contract::run_contract(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_connections_on_one_file_see_each_other_and_never_lose_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("albra.db");
    let a: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&path).unwrap());

    // A write through one connection is what the other reads, and guards its writes.
    let pk = unique_pk("two-conn");
    a.put(&pk, "S", "from-a", Expect::Absent, None)
        .await
        .unwrap();
    let seen = b.get(&pk, "S").await.unwrap().unwrap();
    assert_eq!((seen.version, seen.body.as_str()), (1, "from-a"));
    assert!(b
        .put(&pk, "S", "from-b", Expect::Absent, None)
        .await
        .unwrap_err()
        .is_conflict());
    b.put(&pk, "S", "from-b", Expect::Version(1), None)
        .await
        .unwrap();
    assert!(a
        .put(&pk, "S", "stale-a", Expect::Version(1), None)
        .await
        .unwrap_err()
        .is_conflict());
    assert_eq!(a.get(&pk, "S").await.unwrap().unwrap().body, "from-b");

    // Writers alternate between the two connections on one counter.
    let conflicts = contract::concurrent_increments(vec![a.clone(), b.clone()], 20).await;
    eprintln!("two connections: {conflicts} conflicts retried");

    // The contract holds through the second connection on a file the first one filled.
    contract::run_contract(b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_processes_on_one_file_never_lose_updates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("albra.db");
    let spec = format!("sqlite:{}", path.display());
    let store: Arc<dyn StateStore> = Arc::new(SqliteStore::open(&path).unwrap());
    two_process_increments(store, &spec, &[], dir.path()).await;
}

// ---------------------------------------------------------------------------------------------
// DynamoDB on moto
// ---------------------------------------------------------------------------------------------

async fn dynamo_on(moto: &MotoServer, table: &str) -> DynamoStore {
    let config = moto.sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), table);
    store.create_table_if_missing().await.unwrap();
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_on_moto_meets_the_contract() {
    let moto = MotoServer::start();
    let table = "albra-contract";
    let store = dynamo_on(&moto, table).await;
    // Creating again is a no-op, not an error.
    store.create_table_if_missing().await.unwrap();
    assert_eq!(store.describe(), "dynamodb:albra-contract");

    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("ttl"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));

    let pages_pk = contract::run_semantics(Arc::new(store.clone())).await;

    // The 1,200 × 1 KB partition really is more than one page: a single raw Query stops early with
    // a LastEvaluatedKey, so the store's complete answer proves it followed the pages.
    let page = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pages_pk.clone()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(
        page.last_evaluated_key().is_some(),
        "one page should not hold 1.2 MB"
    );
    assert!(
        page.items().len() < 1_200,
        "{} items in one page",
        page.items().len()
    );

    // The TTL attribute is the number the table's TTL reads.
    let pk = unique_pk("ttl-attr");
    store
        .put(&pk, "R", "{}", Expect::Absent, Some(1_900_000_123))
        .await
        .unwrap();
    let raw = client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk))
        .key("sk", AttributeValue::S("R".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = raw.item().unwrap();
    assert_eq!(
        item.get("ttl"),
        Some(&AttributeValue::N("1900000123".into()))
    );
    assert_eq!(item.get("version"), Some(&AttributeValue::N("1".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_errors_say_what_failed() {
    let moto = MotoServer::start();
    let config = moto.sdk_config().await;
    let missing = DynamoStore::new(aws_sdk_dynamodb::Client::new(&config), "no-such-table");
    let err = missing.get("P", "S").await.unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    assert!(err.to_string().contains("no-such-table"), "{err}");

    // Nothing listens on a port we just freed: the store is unavailable, not in conflict.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = aws_sdk_dynamodb::config::Builder::from(&config)
        .endpoint_url(format!("http://127.0.0.1:{port}"))
        .build();
    let down = DynamoStore::new(aws_sdk_dynamodb::Client::from_conf(dead), "t-down");
    let err = down
        .put("P", "S", "{}", Expect::Absent, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

// ---------------------------------------------------------------------------------------------
// Two processes
// ---------------------------------------------------------------------------------------------

const WRITERS: usize = 4;
const ROUNDS: usize = 10;

fn tags(who: &str) -> Vec<String> {
    (0..WRITERS)
        .flat_map(|w| (0..ROUNDS).map(move |r| format!("{who}-w{w}-r{r}")))
        .collect()
}

/// `WRITERS` tasks each doing `ROUNDS` increments of one counter, writer by writer in sequence;
/// returns the conflicts they retried.
async fn run_writers(store: Arc<dyn StateStore>, pk: &str, who: &str) -> u64 {
    let mut set = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let (store, pk, who) = (store.clone(), pk.to_string(), who.to_string());
        set.spawn(async move {
            let mut conflicts = 0;
            for r in 0..ROUNDS {
                let tag = format!("{who}-w{w}-r{r}");
                conflicts += contract::increment(store.as_ref(), &pk, "COUNTER", &tag).await;
            }
            conflicts
        });
    }
    let mut conflicts = 0;
    while let Some(r) = set.join_next().await {
        conflicts += r.expect("writer task");
    }
    eprintln!("{who}: {conflicts} conflicts retried");
    conflicts
}

/// This process and a child (this test binary re-run as `helper_increments`) increment one counter
/// at the same time; the counter must end with every increment of both exactly once.
async fn two_process_increments(
    store: Arc<dyn StateStore>,
    spec: &str,
    env: &[(&'static str, String)],
    scratch: &Path,
) {
    let pk = unique_pk("two-proc");
    contract::create_counter(store.as_ref(), &pk, "COUNTER").await;
    let ready = scratch.join("child-ready");
    let go = scratch.join("go");
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_increments",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ALBRA_HELPER_SPEC", spec)
        .env("ALBRA_HELPER_PK", &pk)
        .env("ALBRA_HELPER_READY", &ready)
        .env("ALBRA_HELPER_GO", &go)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn helper process");
    wait_for_file(&ready, Duration::from_secs(60)).await;
    std::fs::write(&go, b"go").unwrap();
    run_writers(store.clone(), &pk, "parent").await;
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "helper failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "helper did not run:\n{stdout}\n{stderr}"
    );
    eprintln!(
        "child said: {}",
        stderr
            .lines()
            .filter(|l| l.contains("conflicts"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let mut all = tags("parent");
    all.extend(tags("child"));
    contract::assert_counter(store.as_ref(), &pk, "COUNTER", &all).await;
}

async fn wait_for_file(path: &Path, timeout: Duration) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < timeout,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The child half of the two-process tests, which start it with `ALBRA_HELPER_*` set; on its own
/// (e.g. `cargo test -- --ignored`) it has nothing to do and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "child process of the two-process tests; they run it"]
async fn helper_increments() {
    let Ok(spec) = std::env::var("ALBRA_HELPER_SPEC") else {
        eprintln!(
            "helper_increments: ALBRA_HELPER_SPEC not set; only the two-process tests run this"
        );
        return;
    };
    let pk = std::env::var("ALBRA_HELPER_PK").unwrap();
    let ready = PathBuf::from(std::env::var("ALBRA_HELPER_READY").unwrap());
    let go = PathBuf::from(std::env::var("ALBRA_HELPER_GO").unwrap());
    let store = open_store(&spec).await.unwrap();
    // Prove the store is reachable before telling the parent to start.
    assert!(store.get(&pk, "COUNTER").await.unwrap().is_some());
    std::fs::write(&ready, b"ready").unwrap();
    wait_for_file(&go, Duration::from_secs(60)).await;
    run_writers(store, &pk, "child").await;
}
