//! What `albra run` does after each job so that a failing or stalled scheduler reaches a person,
//! the same way `infra/ec2/albra-job` does for the cron jobs: a job that fails `alert_after` runs
//! in a row sends one CRITICAL notification (and one when it succeeds again), and each success
//! writes the job's heartbeat file, which `albra-job check` (albra-watch.timer) reads to alert
//! when a job stops running at all. The file names and thresholds are albra-job's.

use albra_core::domain::AccountId;
use albra_core::ports::{Notification, Notifier, Priority};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The directory of the heartbeat files (`<job>.ok`), shared with `albra-job check`.
pub const JOBS_DIR_VAR: &str = "ALBRA_JOBS_DIR";

/// Failed runs in a row before the alert: the every-minute sync repeats itself, so one failure
/// is a blip; an evaluator's failed candle is a lost signal.
pub fn alert_after(job: &str) -> u32 {
    if job == "position-sync" {
        3
    } else {
        1
    }
}

/// Per-job failure streaks of one scheduler process.
pub struct JobWatch {
    notifier: Arc<dyn Notifier>,
    heartbeat_dir: Option<PathBuf>,
    /// Job → failed runs in a row, and whether that streak was alerted.
    streaks: Mutex<HashMap<String, (u32, bool)>>,
}

impl JobWatch {
    pub fn new(notifier: Arc<dyn Notifier>, heartbeat_dir: Option<PathBuf>) -> Self {
        JobWatch {
            notifier,
            heartbeat_dir,
            streaks: Mutex::new(HashMap::new()),
        }
    }

    /// Heartbeats in `ALBRA_JOBS_DIR` when it is set (the systemd unit sets it).
    pub fn from_env(notifier: Arc<dyn Notifier>) -> Self {
        let dir = std::env::var_os(JOBS_DIR_VAR)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        Self::new(notifier, dir)
    }

    /// Record one run of `job` (`position-sync`, `evaluator-1h`, …) at `now` (ms): `first_error`
    /// is `None` for a run without errors.
    pub async fn record(&self, job: &str, first_error: Option<&str>, now: i64) {
        let message = {
            let mut streaks = self.streaks.lock().expect("watch lock");
            let entry = streaks.entry(job.to_string()).or_insert((0, false));
            match first_error {
                None => {
                    let (failed, alerted) = std::mem::take(entry);
                    alerted.then(|| {
                        (
                            Priority::High,
                            "job_recovered",
                            format!("{job} succeeded again after {failed} failed runs"),
                        )
                    })
                }
                Some(err) => {
                    entry.0 += 1;
                    if entry.0 >= alert_after(job) && !entry.1 {
                        entry.1 = true;
                        Some((
                            Priority::Critical,
                            "job_failed",
                            format!("{job} failed {} run(s) in a row: {err}", entry.0),
                        ))
                    } else {
                        None
                    }
                }
            }
        };
        if first_error.is_none() {
            self.beat(job, now);
        }
        if let Some((priority, kind, text)) = message {
            let n = Notification {
                event_id: format!("ops:{kind}:{job}:{now}"),
                account: AccountId::new("ops"),
                priority,
                kind: kind.to_string(),
                text,
                time: now,
            };
            if let Err(e) = self.notifier.notify(&n).await {
                eprintln!("error: the {kind} alert for {job} was not delivered: {e}");
            }
        }
    }

    fn beat(&self, job: &str, now: i64) {
        let Some(dir) = &self.heartbeat_dir else {
            return;
        };
        // The content changes every time, so the file's mtime (what the check reads) does.
        let path = dir.join(format!("{job}.ok"));
        let written =
            std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, format!("{now}\n")));
        if let Err(e) = written {
            eprintln!("error: cannot write the heartbeat {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use albra_core::notify::CollectingNotifier;

    #[tokio::test]
    async fn alerts_once_per_failure_streak_and_on_recovery_and_beats_on_success() {
        let dir = std::env::temp_dir().join(format!("albra-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = Arc::new(CollectingNotifier::default());
        let w = JobWatch::new(c.clone(), Some(dir.join("jobs")));
        // The sync: two failures are a blip, the third alerts, the fourth does not repeat it.
        w.record("position-sync", Some("main: timeout"), 1).await;
        w.record("position-sync", Some("main: timeout"), 2).await;
        assert!(c.take().is_empty());
        assert!(!dir.join("jobs/position-sync.ok").exists());
        w.record("position-sync", Some("main: 429"), 3).await;
        w.record("position-sync", Some("main: 429"), 4).await;
        let got = c.take();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].priority, Priority::Critical);
        assert_eq!(got[0].kind, "job_failed");
        assert_eq!(
            got[0].text,
            "position-sync failed 3 run(s) in a row: main: 429"
        );
        w.record("position-sync", None, 5).await;
        let got = c.take();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, "job_recovered");
        assert!(
            got[0].text.contains("after 4 failed runs"),
            "{}",
            got[0].text
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("jobs/position-sync.ok")).unwrap(),
            "5\n"
        );
        // A success without an alerted streak says nothing; an evaluator alerts at once.
        w.record("position-sync", None, 6).await;
        w.record("evaluator-1h", Some("exchange clock unavailable"), 7)
            .await;
        let got = c.take();
        assert_eq!(got.len(), 1);
        assert!(
            got[0].text.starts_with("evaluator-1h failed 1 run(s)"),
            "{}",
            got[0].text
        );
        assert!(!dir.join("jobs/evaluator-1h.ok").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
