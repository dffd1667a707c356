//! The one behaviour contract every [`StateStore`] must meet (SQLite file, DynamoDB), written once
//! and run against each implementation by `tests/tests/store_contract.rs`.
//!
//! Each check works in its own partitions (a per-run unique `pk` prefix), so checks can share a
//! store, run in any order, and be re-run against a store that already holds data.

use albra_core::ports::{Expect, Record, StateStore, StoreError};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A partition key no other check (or earlier run on the same store) uses.
pub fn unique_pk(tag: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "TEST#{tag}#{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn expect_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) -> StoreError {
    match r {
        Err(e) if e.is_conflict() => e,
        other => panic!("{what}: expected Conflict, got {other:?}"),
    }
}

/// What a contract run leaves behind for implementation-specific follow-up checks.
#[derive(Clone, Debug)]
pub struct ContractReport {
    /// The partition [`query_many_pages`] filled (1,200 items under `ITEM#`).
    pub pages_pk: String,
    /// Conflicts the concurrent writers met and retried.
    pub conflicts: u64,
}

/// Every check below, in sequence.
pub async fn run_contract(store: Arc<dyn StateStore>) -> ContractReport {
    let pages_pk = run_semantics(store.clone()).await;
    let conflicts = concurrent_increments(vec![store.clone()], 20).await;
    ContractReport {
        pages_pk,
        conflicts,
    }
}

/// Every check except racing writers. Used alone against moto, whose server does not serialise
/// a condition check with its write (two racing writers can both pass); the conditional
/// expressions themselves are checked here deterministically, and the atomicity under races is
/// DynamoDB's own documented guarantee. Returns the partition used for the paging check.
pub async fn run_semantics(store: Arc<dyn StateStore>) -> String {
    missing_and_create(store.as_ref()).await;
    versioned_updates(store.as_ref()).await;
    conditional_deletes(store.as_ref()).await;
    query_scope_and_order(store.as_ref()).await;
    let pages_pk = query_many_pages(store.clone(), 1_200, 1_024).await;
    ttl_round_trip(store.as_ref()).await;
    large_bodies(store.as_ref()).await;
    assert!(
        !store.describe().is_empty(),
        "describe() must say something"
    );
    pages_pk
}

/// A missing item reads as `None`; an `Absent` put creates version 1; a second `Absent` put is a
/// conflict that leaves the first body in place; a `Version` put on a missing item is a conflict.
pub async fn missing_and_create(store: &dyn StateStore) {
    let pk = unique_pk("create");
    assert_eq!(store.get(&pk, "ITEM").await.unwrap(), None);

    let v = store
        .put(&pk, "ITEM", r#"{"a":1}"#, Expect::Absent, None)
        .await
        .unwrap();
    assert_eq!(v, 1, "a created item starts at version 1");
    let rec = store
        .get(&pk, "ITEM")
        .await
        .unwrap()
        .expect("item just created");
    assert_eq!(
        rec,
        Record {
            pk: pk.clone(),
            sk: "ITEM".into(),
            version: 1,
            body: r#"{"a":1}"#.into(),
            expires_at: None,
        }
    );

    let err = expect_conflict(
        store
            .put(&pk, "ITEM", r#"{"a":2}"#, Expect::Absent, None)
            .await,
        "second Absent put",
    );
    assert!(
        matches!(&err, StoreError::Conflict { pk: p, sk, .. } if *p == pk && sk == "ITEM"),
        "conflict names the item: {err:?}"
    );
    assert_eq!(
        store.get(&pk, "ITEM").await.unwrap().unwrap().body,
        r#"{"a":1}"#
    );

    expect_conflict(
        store
            .put(&pk, "NEVER", "{}", Expect::Version(1), None)
            .await,
        "Version put on a missing item",
    );
    assert_eq!(store.get(&pk, "NEVER").await.unwrap(), None);
    // A different sort key in the same partition is a different item.
    assert_eq!(store.get(&pk, "ITEM2").await.unwrap(), None);
}

/// `Version(v)` writes v+1; a stale version is a conflict and the body stays the newer one.
pub async fn versioned_updates(store: &dyn StateStore) {
    let pk = unique_pk("update");
    store
        .put(&pk, "X", "one", Expect::Absent, None)
        .await
        .unwrap();
    assert_eq!(
        store
            .put(&pk, "X", "two", Expect::Version(1), None)
            .await
            .unwrap(),
        2
    );
    expect_conflict(
        store.put(&pk, "X", "stale", Expect::Version(1), None).await,
        "stale Version(1) put",
    );
    // A version from the future is as wrong as one from the past.
    expect_conflict(
        store
            .put(&pk, "X", "future", Expect::Version(7), None)
            .await,
        "Version(7) put at version 2",
    );
    let rec = store.get(&pk, "X").await.unwrap().unwrap();
    assert_eq!((rec.version, rec.body.as_str()), (2, "two"));
    assert_eq!(
        store
            .put(&pk, "X", "three", Expect::Version(2), None)
            .await
            .unwrap(),
        3
    );
    assert_eq!(store.get(&pk, "X").await.unwrap().unwrap().body, "three");
}

/// Deletes need the current version: a stale one is a conflict (the item survives); the right one
/// removes it; deleting it again is a conflict; `Expect::Absent` is refused.
pub async fn conditional_deletes(store: &dyn StateStore) {
    let pk = unique_pk("delete");
    store
        .put(&pk, "D", "v1", Expect::Absent, None)
        .await
        .unwrap();
    store
        .put(&pk, "D", "v2", Expect::Version(1), None)
        .await
        .unwrap();
    expect_conflict(
        store.delete(&pk, "D", Expect::Version(1)).await,
        "delete with a stale version",
    );
    assert_eq!(store.get(&pk, "D").await.unwrap().unwrap().body, "v2");

    let err = store
        .delete(&pk, "D", Expect::Absent)
        .await
        .expect_err("delete with Expect::Absent must be refused");
    assert!(
        !err.is_conflict(),
        "a refused Absent delete is not a race: {err:?}"
    );
    assert!(store.get(&pk, "D").await.unwrap().is_some());

    store.delete(&pk, "D", Expect::Version(2)).await.unwrap();
    assert_eq!(store.get(&pk, "D").await.unwrap(), None);
    expect_conflict(
        store.delete(&pk, "D", Expect::Version(2)).await,
        "delete of an item that is gone",
    );
    // The key is free again: a new item starts over at version 1.
    assert_eq!(
        store
            .put(&pk, "D", "again", Expect::Absent, None)
            .await
            .unwrap(),
        1
    );
}

/// `query` returns only the partition and prefix asked for, ordered by sort key (byte order, as
/// DynamoDB sorts UTF-8 strings), with full records.
pub async fn query_scope_and_order(store: &dyn StateStore) {
    let pk = unique_pk("query");
    let other_pk = format!("{pk}X"); // shares pk as a prefix: must not leak in
    for sk in ["POS#b", "TRADE#1", "POS#a", "POSX", "PO", "POS#é", "POS#"] {
        store
            .put(&pk, sk, &format!("body-{sk}"), Expect::Absent, None)
            .await
            .unwrap();
    }
    store
        .put(&other_pk, "POS#c", "other", Expect::Absent, None)
        .await
        .unwrap();
    store
        .put(
            &pk,
            "POS#a",
            "body-POS#a-2",
            Expect::Version(1),
            Some(4_000_000_000),
        )
        .await
        .unwrap();

    let got = store.query(&pk, "POS#").await.unwrap();
    let sks: Vec<&str> = got.iter().map(|r| r.sk.as_str()).collect();
    assert_eq!(sks, vec!["POS#", "POS#a", "POS#b", "POS#é"]);
    for r in &got {
        assert_eq!(r.pk, pk);
        let want = if r.sk == "POS#a" {
            "body-POS#a-2".to_string()
        } else {
            format!("body-{}", r.sk)
        };
        assert_eq!(r.body, want);
    }
    assert_eq!(got[1].version, 2);
    assert_eq!(got[1].expires_at, Some(4_000_000_000));
    assert_eq!(got[0].version, 1);

    let all: Vec<String> = store
        .query(&pk, "")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.sk)
        .collect();
    assert_eq!(
        all,
        vec!["PO", "POS#", "POS#a", "POS#b", "POS#é", "POSX", "TRADE#1"]
    );
    assert!(store.query(&pk, "ZZZ").await.unwrap().is_empty());
    assert!(store
        .query(&unique_pk("empty"), "")
        .await
        .unwrap()
        .is_empty());
    let other = store.query(&other_pk, "POS#").await.unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(
        (other[0].pk.as_str(), other[0].body.as_str()),
        (other_pk.as_str(), "other")
    );
}

/// `count` items of about `body_len` bytes come back complete and in order: with the defaults
/// (1,200 × 1 KB) that is more than one DynamoDB page (1 MB). Returns the partition used.
pub async fn query_many_pages(store: Arc<dyn StateStore>, count: u32, body_len: usize) -> String {
    let pk = unique_pk("pages");
    // Write in a scrambled order (7 is coprime to the counts used) with a few writers at once.
    let order: Vec<u32> = (0..count).map(|i| (i * 7) % count).collect();
    assert!(
        {
            let mut o = order.clone();
            o.sort();
            o == (0..count).collect::<Vec<_>>()
        },
        "count must be coprime to 7"
    );
    let mut set = tokio::task::JoinSet::new();
    for chunk in order.chunks(order.len().div_ceil(8)) {
        let (store, pk, chunk) = (store.clone(), pk.clone(), chunk.to_vec());
        set.spawn(async move {
            for i in chunk {
                store
                    .put(
                        &pk,
                        &format!("ITEM#{i:05}"),
                        &page_body(i, body_len),
                        Expect::Absent,
                        None,
                    )
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("writer task");
    }
    store
        .put(&pk, "JUNK#after", "x", Expect::Absent, None)
        .await
        .unwrap();

    let got = store.query(&pk, "ITEM#").await.unwrap();
    assert_eq!(got.len(), count as usize, "every item, across pages");
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.sk, format!("ITEM#{i:05}"), "ordered by sort key");
        assert_eq!(r.body, page_body(i as u32, body_len), "body of {}", r.sk);
    }
    assert_eq!(
        store.query(&pk, "").await.unwrap().len(),
        count as usize + 1
    );
    pk
}

fn page_body(i: u32, len: usize) -> String {
    let head = format!("{{\"i\":{i},\"pad\":\"");
    let pad_len = len.saturating_sub(head.len() + 2);
    let pad: String = (0..pad_len)
        .map(|k| char::from(b'a' + ((k as u32 + i) % 26) as u8))
        .collect();
    format!("{head}{pad}\"}}")
}

/// `expires_at` is stored and returned by get and query, and a later write without it clears it.
pub async fn ttl_round_trip(store: &dyn StateStore) {
    let pk = unique_pk("ttl");
    let t = 1_900_000_000_i64;
    store
        .put(&pk, "RUN#1", "{}", Expect::Absent, Some(t))
        .await
        .unwrap();
    store
        .put(&pk, "RUN#2", "{}", Expect::Absent, None)
        .await
        .unwrap();
    assert_eq!(
        store.get(&pk, "RUN#1").await.unwrap().unwrap().expires_at,
        Some(t)
    );
    assert_eq!(
        store.get(&pk, "RUN#2").await.unwrap().unwrap().expires_at,
        None
    );
    let q = store.query(&pk, "RUN#").await.unwrap();
    assert_eq!(
        q.iter().map(|r| r.expires_at).collect::<Vec<_>>(),
        vec![Some(t), None]
    );
    store
        .put(&pk, "RUN#1", "{}", Expect::Version(1), Some(t + 60))
        .await
        .unwrap();
    assert_eq!(
        store.get(&pk, "RUN#1").await.unwrap().unwrap().expires_at,
        Some(t + 60)
    );
    store
        .put(&pk, "RUN#1", "{}", Expect::Version(2), None)
        .await
        .unwrap();
    assert_eq!(
        store.get(&pk, "RUN#1").await.unwrap().unwrap().expires_at,
        None
    );
}

/// A ~100 KB body with multi-byte characters, quotes and newlines round-trips byte for byte.
pub async fn large_bodies(store: &dyn StateStore) {
    let pk = unique_pk("large");
    let unit = "{\"k\":\"€ü—\\\"quoted\\\"\",\n\"n\":12345.678}\t";
    let body: String = unit.repeat(100_000 / unit.len() + 1);
    assert!(body.len() >= 100_000);
    store
        .put(&pk, "BIG", &body, Expect::Absent, None)
        .await
        .unwrap();
    let rec = store.get(&pk, "BIG").await.unwrap().unwrap();
    assert_eq!(rec.body.len(), body.len());
    assert!(rec.body == body, "large body changed on the way");
    let bigger = format!("{body}{body}");
    store
        .put(&pk, "BIG", &bigger, Expect::Version(1), None)
        .await
        .unwrap();
    let q = store.query(&pk, "B").await.unwrap();
    assert_eq!(q.len(), 1);
    assert!(q[0].body == bigger, "large body changed in query");
}

/// The body of a counter item: `n` and the tags of every increment that landed.
fn counter_body(n: u64, tags: &[String]) -> String {
    json!({ "n": n, "tags": tags }).to_string()
}

fn parse_counter(body: &str) -> (u64, Vec<String>) {
    let v: Value = serde_json::from_str(body).expect("counter body is JSON");
    let n = v["n"].as_u64().expect("counter n");
    let tags = v["tags"]
        .as_array()
        .expect("counter tags")
        .iter()
        .map(|t| t.as_str().expect("tag").to_string())
        .collect();
    (n, tags)
}

/// Create the counter item (n = 0) that [`increment`] works on.
pub async fn create_counter(store: &dyn StateStore, pk: &str, sk: &str) {
    store
        .put(pk, sk, &counter_body(0, &[]), Expect::Absent, None)
        .await
        .unwrap();
}

/// One read-modify-write increment tagged `tag`, retried on conflict; returns how many conflicts
/// it met. The yield between read and write gives other writers the chance to interleave.
pub async fn increment(store: &dyn StateStore, pk: &str, sk: &str, tag: &str) -> u64 {
    let mut conflicts = 0;
    for attempt in 0..10_000u32 {
        let rec = store
            .get(pk, sk)
            .await
            .unwrap()
            .expect("counter item exists");
        let (n, mut tags) = parse_counter(&rec.body);
        tags.push(tag.to_string());
        tokio::task::yield_now().await;
        match store
            .put(
                pk,
                sk,
                &counter_body(n + 1, &tags),
                Expect::Version(rec.version),
                None,
            )
            .await
        {
            Ok(v) => {
                assert_eq!(v, rec.version + 1);
                return conflicts;
            }
            Err(e) if e.is_conflict() => {
                conflicts += 1;
                // Back off a little, with jitter, so many writers do not retry in lockstep.
                let jitter = (attempt as u64 * 7 + tag.len() as u64 * 13) % 5;
                tokio::time::sleep(Duration::from_millis(1 + jitter)).await;
            }
            Err(e) => panic!("increment {tag}: {e}"),
        }
    }
    panic!("increment {tag}: still conflicting after 10000 attempts");
}

/// Check the counter holds exactly the increments tagged `expected` (each once) and that its
/// version is 1 + their number.
pub async fn assert_counter(store: &dyn StateStore, pk: &str, sk: &str, expected: &[String]) {
    let rec = store.get(pk, sk).await.unwrap().expect("counter exists");
    let (n, mut tags) = parse_counter(&rec.body);
    tags.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(tags, want, "every increment exactly once (no lost update)");
    assert_eq!(n, expected.len() as u64, "counter value");
    assert_eq!(
        rec.version,
        expected.len() as u64 + 1,
        "one version per write"
    );
}

/// `writers` tasks increment one counter at once through `stores` (writer i uses store
/// i % len: two handles on one file or table interleave); ends with exactly `writers` increments.
/// Returns how many conflicts the writers met.
pub async fn concurrent_increments(stores: Vec<Arc<dyn StateStore>>, writers: usize) -> u64 {
    assert!(!stores.is_empty());
    let pk = unique_pk("counter");
    create_counter(stores[0].as_ref(), &pk, "COUNTER").await;
    let tags: Vec<String> = (0..writers).map(|i| format!("w{i}")).collect();
    let mut set = tokio::task::JoinSet::new();
    for (i, tag) in tags.iter().enumerate() {
        let (store, pk, tag) = (stores[i % stores.len()].clone(), pk.clone(), tag.clone());
        set.spawn(async move { increment(store.as_ref(), &pk, "COUNTER", &tag).await });
    }
    let mut conflicts = 0;
    while let Some(r) = set.join_next().await {
        conflicts += r.expect("writer task");
    }
    for store in &stores {
        assert_counter(store.as_ref(), &pk, "COUNTER", &tags).await;
    }
    conflicts
}
