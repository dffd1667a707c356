//! The texts of the jobs' notifications, and the event ids that deduplicate them, made in one
//! place: each function returns `(event_id, text)` for one kind of event. The ids are stable
//! (a notifier drops a second notification with the same id), so an event reported again by a
//! later run of the same job is not sent twice.

use crate::config::StrategyConfig;
use crate::domain::{
    AccountId, ClientId, Position, PositionStatus, Price, Qty, Side, StrategyId, Symbol,
    TradeRecord,
};
use crate::ports::{ExchangeError, OrderInfo, Priority};
use crate::risk;
use crate::strategy::Decision;

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
            p.side,
            p.qty.get(),
            p.entry_price
        ),
    )
}

/// The person's own share changed from `before` (side and quantity) to what `p` holds.
pub(super) fn manual_changed(p: &Position, before: &str, now: i64) -> (String, String) {
    let (account, sym) = (&p.key.account, &p.key.symbol);
    (
        format!("mchange:{account}:{sym}:{now}"),
        format!(
            "MANUAL {sym} changed: {before} → {} {}",
            p.side,
            p.qty.get()
        ),
    )
}

/// A strategy entered: side, size, price, strategy and timeframe, leverage, its stop as placed
/// (`stop`), and the decision's note and conditions.
pub(super) fn entry(
    p: &Position,
    s: &StrategyConfig,
    lev: u32,
    stop: &str,
    decision: &Decision,
) -> (String, String) {
    (
        format!("entry:{}", p.entry_client_id),
        format!(
            "ENTRY {} {} {} @ {} ({} {}, lev {lev}x) {stop}. {} | {}",
            p.side,
            p.qty,
            p.key.symbol,
            p.entry_price,
            s.name,
            s.timeframe,
            decision.note,
            decision.conditions_line()
        ),
    )
}

/// A strategy's exit order filled (`id`: its client id), with the trade it closed.
pub(super) fn exit(id: &ClientId, p: &Position, t: &TradeRecord, reason: &str) -> (String, String) {
    (
        format!("exit:{id}"),
        format!(
            "EXIT {} {} {} @ {} ({reason}); PnL {} after fees {}",
            p.side,
            t.qty,
            p.key.symbol,
            t.exit_price,
            t.pnl.get().round_dp(2),
            t.fees.get().round_dp(2)
        ),
    )
}

/// A partial close of step `stage` filled `qty` of the position `p` held before it.
pub(super) fn partial_exit(
    id: &ClientId,
    p: &Position,
    stage: u8,
    qty: Qty,
    t: &TradeRecord,
    reason: &str,
) -> (String, String) {
    (
        format!("partial:{id}"),
        format!(
            "PARTIAL EXIT {stage}: {} {qty} of {} {} @ {} ({reason}); PnL {}",
            p.side,
            p.qty,
            p.key.symbol,
            t.exit_price,
            t.pnl.get().round_dp(2)
        ),
    )
}

/// A pyramid add of step `stage` filled; `after` is the position it made.
pub(super) fn pyramid(
    id: &ClientId,
    stage: u8,
    fill: &OrderInfo,
    after: &Position,
) -> (String, String) {
    (
        format!("pyramid:{id}"),
        format!(
            "PYRAMID {stage}: added {} {} @ {} → {} @ avg {}",
            fill.executed_qty,
            after.key.symbol,
            fill.avg_price,
            after.qty,
            after.entry_price.get().round_dp(2)
        ),
    )
}

/// The exchange closed a position itself (its stop, a take-profit, a liquidation: `reason`).
pub(super) fn closed_on_exchange(p: &Position, t: &TradeRecord, reason: &str) -> (String, String) {
    (
        format!("xclose:{}", p.entry_client_id),
        format!(
            "CLOSED by the exchange ({reason}): {} {} {} @ {}; PnL {} after fees {} and funding {}",
            p.side,
            p.qty,
            p.key.symbol,
            t.exit_price,
            t.pnl.get().round_dp(2),
            t.fees.get().round_dp(2),
            t.funding.get().round_dp(2)
        ),
    )
}

/// A candle's entry or evaluation that did not go ahead, and `why` (`kind`: what stopped it,
/// also the event id's prefix: `skip`, `manual`, `nofilter`, `blocked`, `size`).
pub(super) fn blocked(
    kind: &str,
    account: &AccountId,
    strategy: &str,
    sym: &Symbol,
    open_time: i64,
    why: &str,
) -> (String, String) {
    (
        format!("{kind}:{account}:{strategy}:{sym}:{open_time}"),
        format!("{strategy}/{sym}: {why}"),
    )
}

/// An entry sized down by the risk rules (`notes`: which, and by how much).
pub(super) fn risk_reduced(
    account: &AccountId,
    sid: &StrategyId,
    sym: &Symbol,
    open_time: i64,
    side: Side,
    qty: Qty,
    notes: &[String],
) -> (String, String) {
    (
        format!("reduced:{account}:{sid}:{sym}:{open_time}"),
        format!(
            "{sid}/{sym}: entry {side} sized {qty} by risk: {}",
            notes.join("; ")
        ),
    )
}

/// An entry order whose outcome is unknown after its lookups: the sync resolves it.
pub(super) fn order_unknown(
    sid: &StrategyId,
    sym: &Symbol,
    entry_id: &ClientId,
    e: &ExchangeError,
) -> (String, String) {
    (
        format!("unknown:{entry_id}"),
        format!(
            "{sid}/{sym}: entry {entry_id} outcome unknown; the sync job will resolve it ({e})"
        ),
    )
}

/// An entry order the exchange refused (`msg`: its words).
pub(super) fn order_rejected(
    sid: &StrategyId,
    sym: &Symbol,
    entry_id: &ClientId,
    side: Side,
    qty: Qty,
    msg: &str,
) -> (String, String) {
    (
        format!("rejected:{entry_id}"),
        format!("{sid}/{sym}: entry {side} {qty} rejected: {msg}"),
    )
}

/// A strategy's exit order failed (`id`: its client id); the position stays open.
pub(super) fn exit_failed(
    id: &ClientId,
    p: &Position,
    reason: &str,
    e: &ExchangeError,
) -> (String, String) {
    (
        format!("exitfail:{id}"),
        format!("{}: exit ({reason}) failed: {e}", p.key),
    )
}

/// A position's stop moved from `old` (none when it had none) to `new`.
pub(super) fn stop_moved(
    p: &Position,
    old: Option<Price>,
    new: Price,
    reason: &str,
) -> (String, String) {
    (
        format!("move:{}:{}", p.entry_client_id, p.stop_generation),
        format!(
            "{}: stop moved {} → {new} ({reason})",
            p.key,
            old.map(|s| s.to_string()).unwrap_or_else(|| "none".into())
        ),
    )
}

/// A pending entry that an interrupted run wrote turned out filled on the exchange: adopted.
pub(super) fn adopted_pending(p: &Position) -> (String, String) {
    (
        format!("adopt:{}", p.entry_client_id),
        format!(
            "{}: entry {} confirmed on the exchange after an interrupted run: {} {} @ {}; stop {}",
            p.key,
            p.entry_client_id,
            p.side,
            p.qty,
            p.entry_price,
            p.stop_loss
                .map(|s| s.to_string())
                .unwrap_or_else(|| "none".into())
        ),
    )
}

/// A pending entry dropped: its order never filled (`what` happened to it).
pub(super) fn entry_dropped(p: &Position, what: &str) -> (String, String) {
    (
        format!("drop:{}", p.entry_client_id),
        format!("{}: entry {} {what}", p.key, p.entry_client_id),
    )
}

// --- exchange-side exits, protection and stops ---

/// How an exchange-side exit order is named in texts and in the ids of its failures.
pub(super) fn describe_exit(kind: crate::domain::ExitKind) -> String {
    match kind {
        crate::domain::ExitKind::TakeProfit { stage } => format!("take-profit step {stage}"),
        crate::domain::ExitKind::Trailing { callback_rate } => {
            format!("trailing stop (callback {callback_rate} %)")
        }
    }
}

/// An exchange-side exit order that had gone (`was`: what the exchange said of it) and was
/// re-placed as `id` at `trigger` for `qty`.
pub(super) fn exit_replaced(
    p: &Position,
    id: &ClientId,
    kind: crate::domain::ExitKind,
    was: &str,
    trigger: Price,
    qty: Qty,
) -> (String, String) {
    (
        format!("reexit:{id}"),
        format!(
            "{}: {} was missing ({was}); re-placed at {trigger} for {qty}",
            p.key,
            describe_exit(kind)
        ),
    )
}

/// An exchange-side exit order that could not be placed; the text is also the job's report line.
pub(super) fn exit_order_failed(
    p: &Position,
    kind: crate::domain::ExitKind,
    trigger: Price,
    qty: Qty,
    e: &ExchangeError,
) -> (String, String) {
    (
        format!(
            "exitfail:{}:{}:{trigger}",
            p.entry_client_id,
            describe_exit(kind)
        ),
        format!(
            "{}: {} at {trigger} for {qty} could not be placed: {e}; the strategy's at-close rule stays in charge",
            p.key,
            describe_exit(kind)
        ),
    )
}

/// A take-profit step or trailing stop (`client_id`) that filled part of the position `p` held
/// before it on the exchange: `t` is the trade it made, `stage` the step it counts as.
pub(super) fn exchange_partial_exit(
    p: &Position,
    client_id: &str,
    stage: u8,
    t: &TradeRecord,
) -> (String, String) {
    (
        format!("xpartial:{client_id}"),
        format!(
            "PARTIAL EXIT {stage} on the exchange ({}): {} {} of {} {} @ {}; PnL {} after fees {}",
            t.reason,
            p.side,
            t.qty.get(),
            p.qty,
            p.key.symbol,
            t.exit_price.get().round_dp(8).normalize(),
            t.pnl.get().round_dp(2),
            t.fees.get().round_dp(2)
        ),
    )
}

/// A protective stop (`id`) at `trigger` that could not be placed: the position is unprotected.
pub(super) fn stop_failed(
    p: &Position,
    id: &ClientId,
    trigger: Price,
    e: &ExchangeError,
) -> (String, String) {
    (
        format!("stopfail:{id}"),
        format!(
            "{}: protective stop {trigger} could not be placed: {e}",
            p.key
        ),
    )
}

/// A take-profit order (`id`) at `tp` that could not be placed.
pub(super) fn tp_failed(
    p: &Position,
    id: &ClientId,
    tp: Price,
    e: &ExchangeError,
) -> (String, String) {
    (
        format!("tpfail:{id}"),
        format!("{}: take-profit {tp} could not be placed: {e}", p.key),
    )
}

/// A protective stop that had gone (`was`: what the exchange said of it) re-placed; `p` is the
/// position with its new stop generation.
pub(super) fn stop_replaced(p: &Position, was: &str) -> (String, String) {
    (
        format!("restop:{}:{}", p.entry_client_id, p.stop_generation),
        format!(
            "{}: protective stop was missing ({was}); re-placed at {}",
            p.key,
            p.stop_loss.map(|s| s.to_string()).unwrap_or_default()
        ),
    )
}

/// A stop re-placed in the shape the symbol's sharing asks for: a quantity stop of `qty`
/// (reduce-only or not) when `shared`, closePosition otherwise.
pub(super) fn stop_resized(
    p: &Position,
    shared: bool,
    reduce_only: bool,
    qty: Qty,
) -> (String, String) {
    (
        format!("reshape:{}:{}", p.entry_client_id, p.stop_generation),
        format!(
            "{}: stop re-placed as {} for the symbol's sharing",
            p.key,
            if shared {
                format!(
                    "{}quantity {qty}",
                    if reduce_only { "reduce-only " } else { "" }
                )
            } else {
                "closePosition".to_string()
            }
        ),
    )
}

// --- records, adoption, exits and pyramid ---

/// An exchange position no record covered carries our entry id `id`: adopted as `p`.
pub(super) fn adopted_found(id: &ClientId, p: &Position) -> (String, String) {
    (
        format!("adopt:{id}"),
        format!(
            "{}: exchange position carries our entry id {id}; adopted as {} {} @ {} (not manual)",
            p.key, p.side, p.qty, p.entry_price
        ),
    )
}

/// A pyramid step of the position `p` blocked by the risk rules (`why`).
pub(super) fn pyramid_blocked(p: &Position, stage: u8, why: &str) -> (String, String) {
    (
        format!("blocked:{}:{stage}", p.entry_client_id),
        format!("{}: {why}", p.key),
    )
}

// --- risk events and the portfolio view ---

/// How a risk event is delivered: its priority and kind.
pub(super) fn risk_event_kind(ev: &risk::RiskEvent) -> (Priority, &'static str) {
    match ev {
        risk::RiskEvent::MddLevelChanged { .. } => (Priority::High, "mdd_level"),
        risk::RiskEvent::DailyLossHalt { .. } => (Priority::Critical, "daily_loss_limit"),
        risk::RiskEvent::HaltLifted => (Priority::Medium, "daily_loss_reset"),
    }
}

/// A risk event of `account` on trading day `day`: one per level, halt and day.
pub(super) fn risk_event(account: &AccountId, day: i64, ev: &risk::RiskEvent) -> (String, String) {
    let id = match ev {
        risk::RiskEvent::MddLevelChanged { to, .. } => format!("mdd:{account}:{day}:{to}"),
        risk::RiskEvent::DailyLossHalt { until, .. } => format!("halt:{account}:{until}"),
        risk::RiskEvent::HaltLifted => format!("unhalt:{account}:{day}"),
    };
    (id, ev.describe())
}

/// An advisory portfolio warning, once per warning and trading day.
pub(super) fn portfolio_warning(day: i64, w: &str) -> (String, String) {
    (
        format!("portfolio:{day}:{w}"),
        format!("portfolio (advisory, nothing is closed): {w}"),
    )
}
