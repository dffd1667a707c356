//! What the operator surface keeps in the store, under the partition `BOT` (no account owns it):
//!
//! | sk                                  | item                                   |
//! |-------------------------------------|----------------------------------------|
//! | `UPDATE#{update_id:020}`            | [`SeenUpdate`] (TTL: a redelivery window) |
//! | `CONFIRM#{nonce}`                   | [`PendingConfirm`] (TTL: its expiry)   |
//! | `AUDIT#{time:013}#{update_id:020}`  | [`AuditRecord`]                        |
//! | `NOTICE#{event_id}`                 | [`SeenUpdate`] (TTL: the dedupe window) |
//! | `DEFER#{event_id}`                  | [`DeferredNotice`] (TTL: [`DeferredNotice::KEEP_SECS`]) |
//!
//! Every write is conditional like the rest of the state: a Telegram update is taken once by
//! whichever process creates its `UPDATE#` item first, a confirmation is used once by
//! whichever deletes it first, and a deferred notification is kept once (by event id) and
//! removed by the status report that showed it.

use super::{StateRepo, Versioned};
use crate::ports::{Expect, Notification, StoreError};
use serde::{Deserialize, Serialize};

const BOT_PK: &str = "BOT";

/// A Telegram update this bot has taken (its `update_id` is the key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SeenUpdate {
    /// When it was taken (ms).
    pub at: i64,
}

/// A command waiting for its confirmation button (`/close`, `/close_all`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PendingConfirm {
    /// The command as typed (parsed again when confirmed).
    pub command: String,
    pub chat_id: i64,
    pub user_id: i64,
    /// After this (ms) the button does nothing.
    pub expires_at: i64,
}

/// One state-changing command: who sent it, when, and what came of it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    pub at: i64,
    pub update_id: i64,
    pub chat_id: i64,
    pub user_id: i64,
    /// `@username` when the sender has one.
    pub user: Option<String>,
    pub command: String,
    pub outcome: String,
    pub ok: bool,
}

/// Why a notification waits for the next status report instead of going out on its own.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Deferral {
    /// A LOW one: never sent alone, folded into the report's summary.
    Folded,
    /// Telegram did not take it within the process's budget (slow, down, or the budget spent).
    Undelivered,
}

/// A notification kept for the next status report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DeferredNotice {
    pub notification: Notification,
    pub reason: Deferral,
}

impl DeferredNotice {
    /// Kept this long if no report shows it (the report runs every 30 minutes; two days
    /// covers a long outage of the report itself without letting the partition grow).
    pub const KEEP_SECS: i64 = 2 * 24 * 3600;
}

fn defer_sk(event_id: &str) -> String {
    format!("DEFER#{event_id}")
}

fn update_sk(update_id: i64) -> String {
    format!("UPDATE#{update_id:020}")
}

fn confirm_sk(nonce: &str) -> String {
    format!("CONFIRM#{nonce}")
}

impl StateRepo {
    /// Take update `update_id` once: `true` for the first caller, `false` when it was taken
    /// before (Telegram redelivers an update its webhook did not acknowledge in time). The
    /// record expires `keep_secs` after `now`.
    pub async fn take_update(
        &self,
        update_id: i64,
        now: i64,
        keep_secs: i64,
    ) -> Result<bool, StoreError> {
        let expiry = Some(now / 1000 + keep_secs);
        let seen = SeenUpdate { at: now };
        self.create(BOT_PK, &update_sk(update_id), &seen, expiry)
            .await
    }

    /// Take notification `event_id` once across every process that shares the store: `true` for
    /// the first caller (it sends), `false` when another run sent it already. Kept `keep_secs`.
    pub async fn take_notice(
        &self,
        event_id: &str,
        now: i64,
        keep_secs: i64,
    ) -> Result<bool, StoreError> {
        let expiry = Some(now / 1000 + keep_secs);
        let sk = format!("NOTICE#{event_id}");
        self.create(BOT_PK, &sk, &SeenUpdate { at: now }, expiry)
            .await
    }

    /// Forget notice `event_id`, so a later run may send it again: for a message whose send
    /// failed after [`take_notice`](Self::take_notice) (the status report of a slot).
    pub async fn release_notice(&self, event_id: &str) -> Result<(), StoreError> {
        let sk = format!("NOTICE#{event_id}");
        let Some(v) = self.get::<SeenUpdate>(BOT_PK, &sk).await? else {
            return Ok(());
        };
        match self.delete(BOT_PK, &sk, Expect::Version(v.version)).await {
            Err(e) if e.is_conflict() => Ok(()),
            r => r,
        }
    }

    /// Keep `d` for the next status report, once per event id: `false` when it is kept already.
    /// It expires [`DeferredNotice::KEEP_SECS`] after `now` (ms, the wall clock: the
    /// notification's own time is the exchange's, which a test server may set in the past).
    pub async fn defer_notice(&self, d: &DeferredNotice, now: i64) -> Result<bool, StoreError> {
        let expiry = Some(now / 1000 + DeferredNotice::KEEP_SECS);
        let sk = defer_sk(&d.notification.event_id);
        self.create(BOT_PK, &sk, d, expiry).await
    }

    /// Every deferred notification, oldest first, with its version (to remove it once shown).
    pub async fn deferred_notices(&self) -> Result<Vec<Versioned<DeferredNotice>>, StoreError> {
        let mut all = self.query::<DeferredNotice>(BOT_PK, "DEFER#").await?;
        all.sort_by(|a, b| {
            let (a, b) = (&a.value.notification, &b.value.notification);
            (a.time, &a.event_id).cmp(&(b.time, &b.event_id))
        });
        Ok(all)
    }

    /// Remove a deferred notification the report showed; one changed or gone since is left.
    pub async fn clear_deferred(&self, event_id: &str, version: u64) -> Result<(), StoreError> {
        match self
            .delete(BOT_PK, &defer_sk(event_id), Expect::Version(version))
            .await
        {
            Err(e) if e.is_conflict() => Ok(()),
            r => r,
        }
    }

    /// Keep a command waiting for its confirmation under `nonce`.
    pub async fn save_confirm(&self, nonce: &str, c: &PendingConfirm) -> Result<(), StoreError> {
        let expiry = Some(c.expires_at / 1000 + 60);
        self.put(BOT_PK, &confirm_sk(nonce), c, Expect::Absent, expiry)
            .await
            .map(drop)
    }

    /// Use the confirmation `nonce` once: the command when this caller removed it first (expired
    /// or not: the caller checks), `None` when it does not exist or another caller used it.
    pub async fn use_confirm(&self, nonce: &str) -> Result<Option<PendingConfirm>, StoreError> {
        let sk = confirm_sk(nonce);
        let Some(Versioned { value, version }) = self.get::<PendingConfirm>(BOT_PK, &sk).await?
        else {
            return Ok(None);
        };
        match self.delete(BOT_PK, &sk, Expect::Version(version)).await {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Record a state-changing command.
    pub async fn record_audit(&self, a: &AuditRecord) -> Result<(), StoreError> {
        let sk = format!("AUDIT#{:013}#{:020}", a.at, a.update_id);
        // The same update recorded twice (a retried write that had landed): one record.
        self.create(BOT_PK, &sk, a, None).await.map(drop)
    }

    /// Every audit record, oldest first.
    pub async fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self
            .query::<AuditRecord>(BOT_PK, "AUDIT#")
            .await?
            .into_iter()
            .map(|v| v.value)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;

    fn repo() -> StateRepo {
        StateRepo::new(Arc::new(MemoryStore::default()))
    }

    #[tokio::test]
    async fn an_update_is_taken_once_and_a_confirmation_used_once() {
        let r = repo();
        assert!(r.take_update(42, 1_000, 600).await.unwrap());
        assert!(!r.take_update(42, 2_000, 600).await.unwrap(), "redelivered");
        assert!(r.take_update(43, 2_000, 600).await.unwrap());
        let c = PendingConfirm {
            command: "/close_all main".into(),
            chat_id: 7,
            user_id: 9,
            expires_at: 60_000,
        };
        r.save_confirm("n1", &c).await.unwrap();
        assert_eq!(r.use_confirm("n1").await.unwrap(), Some(c));
        assert_eq!(r.use_confirm("n1").await.unwrap(), None, "used once");
        assert_eq!(r.use_confirm("nope").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_deferred_notice_is_kept_once_listed_oldest_first_and_cleared() {
        let r = repo();
        let d = |id: &str, time| DeferredNotice {
            notification: Notification {
                event_id: id.into(),
                account: crate::domain::AccountId::new("main"),
                priority: crate::ports::Priority::Low,
                kind: "skipped".into(),
                text: "t".into(),
                time,
            },
            reason: Deferral::Folded,
        };
        assert!(r.defer_notice(&d("b", 2_000), 2_000).await.unwrap());
        assert!(r.defer_notice(&d("a", 1_000), 2_000).await.unwrap());
        assert!(
            !r.defer_notice(&d("a", 1_000), 2_000).await.unwrap(),
            "kept once"
        );
        let all = r.deferred_notices().await.unwrap();
        let ids: Vec<&str> = all
            .iter()
            .map(|v| v.value.notification.event_id.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        r.clear_deferred("a", all[0].version).await.unwrap();
        assert_eq!(r.deferred_notices().await.unwrap().len(), 1);
        assert!(r.take_notice("n", 0, 60).await.unwrap());
        r.release_notice("n").await.unwrap();
        assert!(r.take_notice("n", 0, 60).await.unwrap(), "released");
    }

    #[tokio::test]
    async fn audit_records_are_kept_in_time_order_once_each() {
        let r = repo();
        let rec = |at, update_id, command: &str| AuditRecord {
            at,
            update_id,
            chat_id: 7,
            user_id: 9,
            user: Some("@trader".into()),
            command: command.into(),
            outcome: "paused".into(),
            ok: true,
        };
        r.record_audit(&rec(2_000, 2, "/resume")).await.unwrap();
        r.record_audit(&rec(1_000, 1, "/pause main")).await.unwrap();
        r.record_audit(&rec(1_000, 1, "/pause main")).await.unwrap();
        let got: Vec<String> = r
            .audit_records()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.command)
            .collect();
        assert_eq!(got, ["/pause main", "/resume"]);
    }
}
