//! Notifiers that need no network: console lines, an in-memory collector for replay and tests, one
//! that discards, and a fan-out that filters by priority and drops duplicate event ids. Telegram
//! is an adapter (`albra_adapters::telegram`).

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
