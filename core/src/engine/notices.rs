//! The texts of the jobs' notifications, and the event ids that deduplicate them, made in one
//! place: each function returns `(event_id, text)` for one kind of event. The ids are stable
//! (a notifier drops a second notification with the same id), so an event reported again by a
//! later run of the same job is not sent twice.

use crate::domain::{Position, PositionStatus, Qty};

/// A strategy position whose size the exchange changed (its own fills, or the exchange holding
/// less than its sole share).
pub(super) fn size_changed(p: &Position, before: Qty, now_qty: Qty) -> (String, String) {
    (
        format!("resize:{}:{before}:{now_qty}", p.entry_client_id),
        format!(
            "{}: size changed on the exchange {before} → {now_qty}",
            p.key
        ),
    )
}

/// A strategy position paused because its strategy no longer runs on the account, or resumed.
pub(super) fn position_paused(p: &Position, now: i64) -> (String, String) {
    let text = if p.status == PositionStatus::Paused {
        format!(
            "{}: PAUSED: strategy {} is not enabled on this account; the position stays tracked and its stop stays on the exchange",
            p.key, p.key.strategy
        )
    } else {
        format!(
            "{}: resumed: strategy {} is enabled again",
            p.key, p.key.strategy
        )
    };
    (format!("pause:{}:{now}", p.entry_client_id), text)
}

/// The person's own share on a symbol is gone.
pub(super) fn manual_closed(p: &Position) -> (String, String) {
    let (account, sym) = (&p.key.account, &p.key.symbol);
    (
        format!("mclose:{account}:{sym}:{}", p.opened_at),
        format!("MANUAL {} {} {sym} is closed", p.side, p.qty),
    )
}

/// An amount on the exchange no strategy explains, now tracked as the person's own share.
pub(super) fn manual_found(p: &Position, now: i64) -> (String, String) {
    let (account, sym) = (&p.key.account, &p.key.symbol);
    (
        format!("manual:{account}:{sym}:{now}"),
        format!(
            "MANUAL position found: {} {} {sym} @ {} (tracked, never touched)",
            p.side, p.qty.0, p.entry_price
        ),
    )
}

/// The person's own share changed from `before` (side and quantity) to what `p` holds.
pub(super) fn manual_changed(p: &Position, before: &str, now: i64) -> (String, String) {
    let (account, sym) = (&p.key.account, &p.key.symbol);
    (
        format!("mchange:{account}:{sym}:{now}"),
        format!("MANUAL {sym} changed: {before} → {} {}", p.side, p.qty.0),
    )
}
