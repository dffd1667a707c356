//! Notifiers that need no network: console lines, an in-memory collector for replay and tests, one
//! that discards, a fan-out that filters by priority and drops duplicate event ids, and
//! [`StoredDedupe`], which sends each event id once across every process sharing a state store.
//! Telegram is an adapter (`albra_adapters::telegram`).

use crate::ports::{Notification, Notifier, NotifyError, Priority};
use async_trait::async_trait;
use std::collections::HashSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// One line per notification on stdout: `2025-07-05 12:00 UTC [HIGH] main entry: …`.
pub struct ConsoleNotifier;

pub fn format_line(n: &Notification) -> String {
    let t = chrono::DateTime::from_timestamp_millis(n.time)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    format!(
        "{t} [{:?}] {} {}: {}",
        n.priority, n.account, n.kind, n.text
    )
    .replace("[Low]", "[LOW]")
    .replace("[Medium]", "[MEDIUM]")
    .replace("[High]", "[HIGH]")
    .replace("[Critical]", "[CRITICAL]")
}

#[async_trait]
impl Notifier for ConsoleNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", format_line(n)).map_err(|e| NotifyError::Undelivered {
            channel: "console",
            detail: e.to_string(),
        })
    }
}

/// Keeps every notification in memory (replay summaries, tests).
#[derive(Default)]
pub struct CollectingNotifier {
    pub items: Mutex<Vec<Notification>>,
}

impl CollectingNotifier {
    pub fn take(&self) -> Vec<Notification> {
        std::mem::take(&mut *self.items.lock().expect("notifier lock"))
    }
}

#[async_trait]
impl Notifier for CollectingNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        self.items.lock().expect("notifier lock").push(n.clone());
        Ok(())
    }
}

/// Throws every notification away, so the engine does not make them: backtests, whose trades and
/// equity are the result and whose notifications nobody reads.
pub struct DiscardNotifier;

#[async_trait]
impl Notifier for DiscardNotifier {
    async fn notify(&self, _: &Notification) -> Result<(), NotifyError> {
        Ok(())
    }
    fn enabled(&self) -> bool {
        false
    }
}

/// Sends to every inner notifier the notifications at or above `min`, each event id once per process.
pub struct FanoutNotifier {
    inner: Vec<Arc<dyn Notifier>>,
    min: Priority,
    seen: Mutex<HashSet<String>>,
}

impl FanoutNotifier {
    pub fn new(inner: Vec<Arc<dyn Notifier>>, min: Priority) -> Self {
        FanoutNotifier {
            inner,
            min,
            seen: Mutex::new(HashSet::new()),
        }
    }
}

#[async_trait]
impl Notifier for FanoutNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        if n.priority < self.min
            || !self
                .seen
                .lock()
                .expect("notifier lock")
                .insert(n.event_id.clone())
        {
            return Ok(());
        }
        let mut errors = Vec::new();
        for i in &self.inner {
            if let Err(e) = i.notify(n).await {
                errors.push(e);
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(NotifyError::Several(errors)),
        }
    }
}

/// Sends each event id once across processes: a rerun of a job, a second container, a sync and
/// an evaluation that see the same fill all make the same deterministic event id, and only the
/// first to record it in the store sends it. When the store cannot be read the notification is
/// sent anyway: a duplicate alert is better than a lost one.
pub struct StoredDedupe {
    inner: Arc<dyn Notifier>,
    repo: crate::state::StateRepo,
    keep_secs: i64,
}

impl StoredDedupe {
    /// How long an event id is remembered: longer than any rerun or redelivery of a job.
    pub const KEEP_SECS: i64 = 7 * 24 * 3600;

    pub fn new(inner: Arc<dyn Notifier>, repo: crate::state::StateRepo) -> Self {
        StoredDedupe {
            inner,
            repo,
            keep_secs: Self::KEEP_SECS,
        }
    }
}

#[async_trait]
impl Notifier for StoredDedupe {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        match self
            .repo
            .take_notice(&n.event_id, n.time, self.keep_secs)
            .await
        {
            Ok(false) => Ok(()),
            Ok(true) => self.inner.notify(n).await,
            Err(e) => {
                tracing::warn!(event_id = %n.event_id, error = %e, "notification dedupe unreadable; sending anyway");
                self.inner.notify(n).await
            }
        }
    }
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;

    fn n(id: &str, p: Priority) -> Notification {
        Notification {
            event_id: id.into(),
            account: AccountId::new("main"),
            priority: p,
            kind: "entry".into(),
            text: "hello".into(),
            time: 0,
        }
    }

    #[tokio::test]
    async fn fanout_filters_and_dedupes() {
        let c = Arc::new(CollectingNotifier::default());
        let f = FanoutNotifier::new(vec![c.clone()], Priority::Medium);
        f.notify(&n("a", Priority::High)).await.unwrap();
        f.notify(&n("a", Priority::High)).await.unwrap();
        f.notify(&n("b", Priority::Low)).await.unwrap();
        let got = c.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event_id, "a");
        assert!(format_line(&got[0]).contains("[HIGH] main entry: hello"));
    }

    /// Two processes (two notifiers over one store) send an event once; another event still goes.
    #[tokio::test]
    async fn stored_dedupe_sends_each_event_once_across_processes() {
        let store = Arc::new(crate::store::memory::MemoryStore::default());
        let c = Arc::new(CollectingNotifier::default());
        let one = StoredDedupe::new(c.clone(), crate::state::StateRepo::new(store.clone()));
        let two = StoredDedupe::new(c.clone(), crate::state::StateRepo::new(store));
        one.notify(&n("fill:1", Priority::High)).await.unwrap();
        two.notify(&n("fill:1", Priority::High)).await.unwrap();
        two.notify(&n("fill:2", Priority::High)).await.unwrap();
        let ids: Vec<String> = c.take().into_iter().map(|n| n.event_id).collect();
        assert_eq!(ids, ["fill:1", "fill:2"]);
    }

    struct Failing(&'static str);

    #[async_trait]
    impl Notifier for Failing {
        async fn notify(&self, _: &Notification) -> Result<(), NotifyError> {
            Err(NotifyError::Undelivered {
                channel: self.0,
                detail: "down".into(),
            })
        }
    }

    #[tokio::test]
    async fn a_fanout_reports_every_channel_that_failed_and_still_delivers_to_the_rest() {
        let c = Arc::new(CollectingNotifier::default());
        let one = FanoutNotifier::new(vec![Arc::new(Failing("a")), c.clone()], Priority::Low);
        let e = one.notify(&n("x", Priority::High)).await.unwrap_err();
        assert_eq!(
            e,
            NotifyError::Undelivered {
                channel: "a",
                detail: "down".into()
            }
        );
        assert_eq!(c.take().len(), 1, "the working channel still got it");
        let two = FanoutNotifier::new(
            vec![Arc::new(Failing("a")), Arc::new(Failing("b"))],
            Priority::Low,
        );
        let e = two.notify(&n("y", Priority::High)).await.unwrap_err();
        assert!(matches!(&e, NotifyError::Several(v) if v.len() == 2));
        assert_eq!(e.to_string(), "a: down; b: down");
    }
}
