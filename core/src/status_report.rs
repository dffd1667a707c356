//! The status report every 30 minutes (`albra status-report`): what the store says of each
//! account (equity, today's PnL, paused or halted, open positions and whether each has its stop
//! on the exchange), the jobs that need attention, and the notifications that waited for it
//! (`notify::Deferring`): the LOW ones folded into one summary, and those Telegram did not take
//! in time listed. Everything is read from the state through the query layer and laid out with
//! the bot's renderers (`crate::bot::render`): this module computes no figure of its own. It is
//! pure apart from [`gather`]; the sending (once per 30-minute slot) is the caller's.

use crate::bot::render::{self, escape};
use crate::config::Config;
use crate::domain::{utc_minute, PositionStatus};
use crate::ports::{Notification, Priority};
use crate::query::queries::{self, JobHealth, JobState, PositionRow, RiskCheck, StatusReport};
use crate::query::QueryError;
use crate::state::{Deferral, DeferredNotice, StateRepo, Versioned};
use std::collections::BTreeMap;

/// The report's period: one per slot, however often it runs.
pub const SLOT_MS: i64 = 30 * 60 * 1000;
/// How many of the newest folded lines the summary quotes in full.
pub const NEWEST_LINES: usize = 5;

/// The start (ms) of the 30-minute slot `now` falls in.
pub fn slot_of(now: i64) -> i64 {
    now.div_euclid(SLOT_MS) * SLOT_MS
}

/// The report's event id: the same for every run in one slot, so the stored dedupe lets one
/// through.
pub fn event_id(slot: i64) -> String {
    format!("status-report:{slot}")
}

/// What one report shows.
pub struct Digest {
    pub slot: i64,
    pub status: StatusReport,
    pub positions: Vec<PositionRow>,
    pub risk: Vec<RiskCheck>,
    pub health: Vec<JobHealth>,
    /// The notifications waiting for this report, oldest first, with their versions (the
    /// caller removes what it showed).
    pub deferred: Vec<Versioned<DeferredNotice>>,
}

/// Reads everything the report shows, at `now`.
pub async fn gather(repo: &StateRepo, cfg: &Config, now: i64) -> Result<Digest, QueryError> {
    let positions = queries::positions(repo, cfg, None).await?;
    Ok(Digest {
        slot: slot_of(now),
        status: queries::status(repo, cfg, now).await?,
        positions: positions
            .into_iter()
            .filter(|p| p.status != PositionStatus::Closed)
            .collect(),
        risk: queries::risk_check(repo, cfg, None, now).await?,
        health: queries::job_health(repo, cfg, None, now).await?,
        deferred: repo.deferred_notices().await?,
    })
}

/// The report as Telegram HTML.
pub fn render(d: &Digest) -> String {
    let mut out = format!("<b>Status report</b> {}\n", utc_minute(d.slot));
    out.push_str(&render::status(&d.status));
    out.push_str(&positions(&d.positions));
    out.push_str(&halts(&d.risk));
    let attention: Vec<JobHealth> = d
        .health
        .iter()
        .filter(|h| h.state() != JobState::Ok)
        .cloned()
        .collect();
    if attention.is_empty() {
        out.push_str("Jobs: all ok\n");
    } else {
        out.push_str(&render::health(&attention));
    }
    let notices: Vec<&DeferredNotice> = d.deferred.iter().map(|v| &v.value).collect();
    out.push_str(&undelivered(&notices));
    out.push_str(&folded(&notices));
    out
}

/// The open positions, each saying whether its stop is on the exchange (a MANUAL one has none
/// of ours).
fn positions(rows: &[PositionRow]) -> String {
    if rows.is_empty() {
        return "No open positions.\n".into();
    }
    let mut out = String::from("<b>Open positions</b>\n");
    for p in rows {
        let stop = match (p.is_manual, p.unprotected, p.stop_loss) {
            (true, ..) => "manual, no stop of ours".to_string(),
            _ if p.status == PositionStatus::Pending => "entry pending".to_string(),
            (_, true, _) => "<b>STOP NOT ON THE EXCHANGE</b>".to_string(),
            (_, _, Some(s)) => format!("stop {s} on the exchange"),
            (_, _, None) => "no stop".to_string(),
        };
        out.push_str(&render::position_line(p, &format!(": {stop}")));
    }
    out
}

/// The halted accounts, one line each (nothing when every account trades).
fn halts(checks: &[RiskCheck]) -> String {
    let mut out = String::new();
    for c in checks.iter().filter(|c| c.enabled) {
        if let Some(until) = c.halted_until {
            out.push_str(&format!(
                "<b>{}</b>: HALTED by the daily loss limit until {}\n",
                escape(c.account.as_str()),
                utc_minute(until)
            ));
        }
    }
    out
}

/// The notifications Telegram did not take in time (CRITICAL and HIGH first), each in full.
pub fn undelivered(notices: &[&DeferredNotice]) -> String {
    let mut late: Vec<&Notification> = notices
        .iter()
        .filter(|d| d.reason == Deferral::Undelivered)
        .map(|d| &d.notification)
        .collect();
    if late.is_empty() {
        return String::new();
    }
    late.sort_by_key(|n| (std::cmp::Reverse(n.priority), n.time));
    let mut out = format!("<b>Not delivered in time</b> ({})\n", late.len());
    for n in late {
        let mark = if n.priority >= Priority::High {
            "❗ "
        } else {
            ""
        };
        out.push_str(&format!("{mark}{}\n", line(n)));
    }
    out
}

/// The LOW notifications as one summary: how many per account and kind, then the newest few.
pub fn folded(notices: &[&DeferredNotice]) -> String {
    let low: Vec<&Notification> = notices
        .iter()
        .filter(|d| d.reason == Deferral::Folded)
        .map(|d| &d.notification)
        .collect();
    if low.is_empty() {
        return String::new();
    }
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for n in &low {
        *counts
            .entry((n.account.as_str(), n.kind.as_str()))
            .or_default() += 1;
    }
    let mut out = format!("<b>Low-priority</b> ({})\n", low.len());
    for ((account, kind), count) in counts {
        out.push_str(&format!("{} {}: {count}\n", escape(account), escape(kind)));
    }
    let mut newest = low.clone();
    newest.sort_by_key(|n| std::cmp::Reverse(n.time));
    out.push_str("newest:\n");
    for n in newest.into_iter().take(NEWEST_LINES) {
        out.push_str(&format!("{}\n", line(n)));
    }
    out
}

/// One notification as a line: time, priority, account, kind, text (escaped).
fn line(n: &Notification) -> String {
    escape(&format!(
        "{} {:?} [{}] {}: {}",
        utc_minute(n.time),
        n.priority,
        n.account,
        n.kind,
        n.text
    ))
}

/// The HTML as plain text, for the console.
pub fn plain(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;

    fn d(account: &str, kind: &str, p: Priority, time: i64, reason: Deferral) -> DeferredNotice {
        DeferredNotice {
            notification: Notification {
                event_id: format!("{account}:{kind}:{time}"),
                account: AccountId::new(account),
                priority: p,
                kind: kind.into(),
                text: format!("<{kind}> at {time}"),
                time,
            },
            reason,
        }
    }

    #[test]
    fn low_notifications_fold_into_counts_and_the_newest_lines() {
        let mut all = Vec::new();
        for i in 0..7 {
            all.push(d(
                "main",
                "skipped",
                Priority::Low,
                i * 60_000,
                Deferral::Folded,
            ));
        }
        all.push(d(
            "sub1",
            "heartbeat",
            Priority::Low,
            3_000,
            Deferral::Folded,
        ));
        all.push(d(
            "main",
            "entry",
            Priority::High,
            5_000,
            Deferral::Undelivered,
        ));
        let refs: Vec<&DeferredNotice> = all.iter().collect();
        let text = folded(&refs);
        assert!(text.starts_with("<b>Low-priority</b> (8)\n"), "{text}");
        assert!(
            text.contains("main skipped: 7\nsub1 heartbeat: 1\n"),
            "{text}"
        );
        assert_eq!(text.matches(" Low [").count(), NEWEST_LINES, "{text}");
        assert!(
            text.contains("&lt;skipped&gt; at 360000"),
            "newest first: {text}"
        );
        assert!(
            !text.contains("at 0\n"),
            "the oldest is only counted: {text}"
        );
        assert!(!text.contains("entry"), "{text}");
    }

    #[test]
    fn undelivered_lists_the_urgent_first_in_full() {
        let all = [
            d(
                "main",
                "entry",
                Priority::Medium,
                1_000,
                Deferral::Undelivered,
            ),
            d(
                "main",
                "liquidation",
                Priority::Critical,
                2_000,
                Deferral::Undelivered,
            ),
            d("main", "skipped", Priority::Low, 3_000, Deferral::Folded),
        ];
        let refs: Vec<&DeferredNotice> = all.iter().collect();
        let text = undelivered(&refs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "<b>Not delivered in time</b> (2)");
        assert!(
            lines[1].starts_with("❗ ") && lines[1].contains("liquidation"),
            "{text}"
        );
        assert!(lines[2].contains("Medium [main] entry"), "{text}");
        assert_eq!(undelivered(&[]), "");
    }

    #[test]
    fn slots_are_half_hours_and_their_ids_deterministic() {
        let t = 1_795_266_000_000; // 13:00 UTC
        assert_eq!(slot_of(t + 29 * 60_000), t);
        assert_eq!(slot_of(t + 30 * 60_000), t + SLOT_MS);
        assert_eq!(event_id(slot_of(t + 1)), event_id(slot_of(t + 1_700_000)));
        assert_eq!(plain("<b>a</b> &lt;1&gt; &amp;"), "a <1> &");
    }
}
