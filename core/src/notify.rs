//! Notifiers that need no network: console lines, an in-memory collector for replay and tests, one
//! that discards, a fan-out that filters by priority and drops duplicate event ids, one channel's
//! minimum priority ([`MinPriority`]), [`StoredDedupe`], which sends each event id once across
//! every process sharing a state store, and [`Deferring`], which keeps a LOW notification, and one
//! the channel did not take within the process's [`SendBudget`], for the next status report
//! (`crate::report`) instead of letting it hold up the job. Telegram is an adapter
//! (`albra_adapters::telegram`).

use crate::ports::{Clock, Notification, Notifier, NotifyError, Priority};
use crate::state::{Deferral, DeferredNotice, StateRepo};
use async_trait::async_trait;
use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// One channel's minimum: passes on the notifications at or above `min`, drops the rest.
pub struct MinPriority {
    inner: Arc<dyn Notifier>,
    min: Priority,
}

impl MinPriority {
    pub fn new(inner: Arc<dyn Notifier>, min: Priority) -> Self {
        MinPriority { inner, min }
    }
}

#[async_trait]
impl Notifier for MinPriority {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        if n.priority < self.min {
            return Ok(());
        }
        self.inner.notify(n).await
    }
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }
}

/// The time one process may spend on a channel in all, shared by every notification it makes:
/// a job must not fail nor overrun because Telegram is slow. What is spent is the time the sends
/// took (waits for rate limits and retries included), not the time since the process started.
/// A process that runs one job after another (a warm Lambda, `albra run`, the bot) calls
/// [`renew`](Self::renew) as each job starts.
pub struct SendBudget {
    total: Duration,
    spent: Mutex<Duration>,
    /// The one warning of a job whose budget ran out has been logged.
    warned: AtomicBool,
}

impl SendBudget {
    pub fn new(total: Duration) -> Self {
        SendBudget {
            total,
            spent: Mutex::new(Duration::ZERO),
            warned: AtomicBool::new(false),
        }
    }

    /// What is left to spend.
    pub fn left(&self) -> Duration {
        self.total
            .saturating_sub(*self.spent.lock().expect("budget lock"))
    }

    fn spend(&self, d: Duration) {
        *self.spent.lock().expect("budget lock") += d;
    }

    /// The whole budget again, for the next job of a long-lived process.
    pub fn renew(&self) {
        *self.spent.lock().expect("budget lock") = Duration::ZERO;
        self.warned.store(false, Ordering::Relaxed);
    }

    /// `true` the first time it is asked since the budget was (re)made.
    fn first_warning(&self) -> bool {
        !self.warned.swap(true, Ordering::Relaxed)
    }
}

/// What happens to a notification at a deferring channel (pure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Sent now, within what is left of the budget.
    Send(Duration),
    /// Kept for the next status report.
    Keep(Deferral),
}

/// A LOW notification is never sent alone; any other is sent while budget is left.
pub fn route(priority: Priority, left: Duration) -> Route {
    match priority {
        Priority::Low => Route::Keep(Deferral::Folded),
        _ if left.is_zero() => Route::Keep(Deferral::Undelivered),
        _ => Route::Send(left),
    }
}

/// The channel of a job (Telegram): LOW notifications are stored for the next status report's
/// summary, and a notification the channel does not take within what is left of the process's
/// [`SendBudget`] (it failed, or it was still waiting when the budget ran out) is stored for
/// the report's "not delivered in time" list. A job therefore never waits on the channel longer
/// than its budget, and never fails because of it: the only error left is a store that cannot
/// keep what was not sent.
pub struct Deferring {
    inner: Arc<dyn Notifier>,
    repo: StateRepo,
    /// Dates what is kept (its expiry): the wall clock in the binaries.
    clock: Arc<dyn Clock>,
    /// `None`: LOW ones are folded, the rest sent with no budget and their failures reported
    /// ([`Deferring::folding`]).
    budget: Option<Arc<SendBudget>>,
}

impl Deferring {
    pub fn new(
        inner: Arc<dyn Notifier>,
        repo: StateRepo,
        clock: Arc<dyn Clock>,
        budget: Arc<SendBudget>,
    ) -> Self {
        Deferring {
            inner,
            repo,
            clock,
            budget: Some(budget),
        }
    }

    /// Folds LOW notifications and sends the rest, reporting a failure instead of keeping it:
    /// for an operator's script (`albra notify`), which must know an alert did not get through.
    pub fn folding(inner: Arc<dyn Notifier>, repo: StateRepo, clock: Arc<dyn Clock>) -> Self {
        Deferring {
            inner,
            repo,
            clock,
            budget: None,
        }
    }

    async fn keep(&self, n: &Notification, reason: Deferral) -> Result<(), NotifyError> {
        let d = DeferredNotice {
            notification: n.clone(),
            reason,
        };
        self.repo
            .defer_notice(&d, self.clock.now_ms())
            .await
            .map(drop)
            .map_err(|e| NotifyError::Undelivered {
                channel: "telegram",
                detail: format!("not sent, and not kept for the status report: {e}"),
            })
    }

    /// Sends within `left`; `Err` says why it did not arrive.
    async fn send(
        &self,
        budget: &SendBudget,
        n: &Notification,
        left: Duration,
    ) -> Result<(), String> {
        let started = tokio::time::Instant::now();
        let sent = tokio::time::timeout(left, self.inner.notify(n)).await;
        budget.spend(started.elapsed());
        match sent {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the Telegram budget ({left:?} left) ran out")),
        }
    }
}

#[async_trait]
impl Notifier for Deferring {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let Some(budget) = &self.budget else {
            return match n.priority {
                Priority::Low => self.keep(n, Deferral::Folded).await,
                _ => self.inner.notify(n).await,
            };
        };
        match route(n.priority, budget.left()) {
            Route::Keep(Deferral::Folded) => self.keep(n, Deferral::Folded).await,
            Route::Keep(reason) => {
                if budget.first_warning() {
                    tracing::warn!(event_id = %n.event_id, "Telegram budget spent: the remaining notifications wait for the next status report");
                }
                self.keep(n, reason).await
            }
            Route::Send(left) => match self.send(budget, n, left).await {
                Ok(()) => Ok(()),
                Err(why) => {
                    if budget.first_warning() {
                        tracing::warn!(event_id = %n.event_id, error = %why, "Telegram did not take a notification within the budget; it waits for the next status report (further ones this job are not logged)");
                    }
                    self.keep(n, Deferral::Undelivered).await
                }
            },
        }
    }
    fn enabled(&self) -> bool {
        self.inner.enabled()
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

    #[test]
    fn low_is_folded_and_an_empty_budget_keeps_the_rest() {
        let s = Duration::from_secs(1);
        assert_eq!(route(Priority::Low, s), Route::Keep(Deferral::Folded));
        assert_eq!(route(Priority::Medium, s), Route::Send(s));
        assert_eq!(
            route(Priority::Critical, Duration::ZERO),
            Route::Keep(Deferral::Undelivered)
        );
    }

    #[tokio::test]
    async fn each_channel_keeps_its_own_minimum() {
        let console = Arc::new(CollectingNotifier::default());
        let telegram = Arc::new(CollectingNotifier::default());
        let f = FanoutNotifier::new(
            vec![
                Arc::new(MinPriority::new(console.clone(), Priority::Low)),
                Arc::new(MinPriority::new(telegram.clone(), Priority::High)),
            ],
            Priority::Low,
        );
        for (id, p) in [
            ("l", Priority::Low),
            ("m", Priority::Medium),
            ("h", Priority::High),
        ] {
            f.notify(&n(id, p)).await.unwrap();
        }
        let ids =
            |c: &CollectingNotifier| c.take().into_iter().map(|n| n.event_id).collect::<Vec<_>>();
        assert_eq!(ids(&console), ["l", "m", "h"]);
        assert_eq!(ids(&telegram), ["h"]);
    }

    /// A channel that takes `0` to answer.
    struct Slow(Duration);

    #[async_trait]
    impl Notifier for Slow {
        async fn notify(&self, _: &Notification) -> Result<(), NotifyError> {
            tokio::time::sleep(self.0).await;
            Ok(())
        }
    }

    /// LOW is kept, not sent; a slow channel uses the budget up once, and what follows is kept
    /// at once without waiting; a renewed budget sends again.
    #[tokio::test(start_paused = true)]
    async fn deferring_keeps_low_and_whatever_the_budget_cannot_send() {
        let repo = StateRepo::new(Arc::new(crate::store::memory::MemoryStore::default()));
        let budget = Arc::new(SendBudget::new(Duration::from_secs(5)));
        let d = Deferring::new(
            Arc::new(Slow(Duration::from_secs(60))),
            repo.clone(),
            Arc::new(crate::ports::SimClock::new(0)),
            budget.clone(),
        );
        let started = tokio::time::Instant::now();
        d.notify(&n("low", Priority::Low)).await.unwrap();
        d.notify(&n("high", Priority::High)).await.unwrap();
        d.notify(&n("crit", Priority::Critical)).await.unwrap();
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(5),
            "the budget, once"
        );
        let kept: Vec<(String, Deferral)> = repo
            .deferred_notices()
            .await
            .unwrap()
            .into_iter()
            .map(|v| (v.value.notification.event_id, v.value.reason))
            .collect();
        assert_eq!(kept.len(), 3);
        assert!(kept.contains(&("low".into(), Deferral::Folded)));
        assert!(kept.contains(&("crit".into(), Deferral::Undelivered)));
        budget.renew();
        let quick = Deferring::new(
            Arc::new(CollectingNotifier::default()),
            repo.clone(),
            Arc::new(crate::ports::SimClock::new(0)),
            budget,
        );
        quick.notify(&n("later", Priority::High)).await.unwrap();
        assert_eq!(
            repo.deferred_notices().await.unwrap().len(),
            3,
            "sent, not kept"
        );
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
