//! The bot's answers as Telegram HTML, laid out from the query layer's types: every figure comes
//! from the query, so `/status` says what `albra status --json` and the dashboard say. Every
//! text that came from outside (ids, names, error messages) is escaped.

use super::command::COMMANDS;
use crate::domain::AccountId;
use crate::query::commands::{
    CloseOutcome, ClosePlan, EmergencyOutcome, EmergencyPlan, SyncOutcome,
};
use crate::query::queries::{
    BalanceRow, JobHealth, PerformanceReport, Period, PeriodPnl, PositionRow, RiskCheck,
    StatusReport,
};
use rust_decimal::Decimal;

/// `<`, `>` and `&` as Telegram's HTML parse mode needs them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

use crate::domain::money_text as money;

use crate::domain::utc_minute as when;

pub fn status(r: &StatusReport) -> String {
    let mut out = String::from("<b>Status</b>\n");
    for a in &r.accounts {
        let name = escape(a.account.as_str());
        let off = if a.enabled { "" } else { " (disabled)" };
        match &a.figures {
            Some(f) => out.push_str(&format!(
                "<b>{name}</b>{off}: equity {} USDT, drawdown {}%{}\n  {} open, {} closed, PnL {}, today {}\n",
                money(f.equity),
                money(f.drawdown_pct),
                if f.paused { ", <b>PAUSED</b>" } else { "" },
                a.open_positions,
                a.closed_trades,
                money(a.realized_pnl),
                money(f.daily_pnl),
            )),
            None => out.push_str(&format!(
                "<b>{name}</b>{off}: no state yet (the sync has not run); {} open\n",
                a.open_positions
            )),
        }
    }
    out
}

/// `/accounts`: each account, enabled or not, paused or trading.
pub fn accounts(r: &StatusReport) -> String {
    let mut out = String::from("<b>Accounts</b>\n");
    for a in &r.accounts {
        let state = match (&a.figures, a.enabled) {
            (_, false) => "disabled",
            (Some(f), true) if f.paused => "PAUSED",
            (Some(_), true) => "trading",
            (None, true) => "no state yet",
        };
        out.push_str(&format!("{}: {state}\n", escape(a.account.as_str())));
    }
    out
}

pub fn positions(rows: &[PositionRow]) -> String {
    if rows.is_empty() {
        return "No positions.".into();
    }
    let mut out = String::from("<b>Positions</b>\n");
    for p in rows {
        let stop = p.stop_loss.map_or("-".into(), |s| s.to_string());
        out.push_str(&position_line(p, &format!(", stop {stop}")));
    }
    out
}

/// One position as a line: who holds it, side, size and entry, then `stop` (the caller's words
/// on its stop, HTML already) and its label.
pub fn position_line(p: &PositionRow, stop: &str) -> String {
    format!(
        "{} {}/{} <b>{}</b> {} @ {}{stop} [{}]\n",
        escape(p.account.as_str()),
        escape(p.strategy.as_str()),
        escape(p.symbol.as_str()),
        p.side,
        p.qty,
        p.entry_price,
        escape(&p.label),
    )
}

pub fn balance(rows: &[BalanceRow]) -> String {
    let mut out = String::from("<b>Balance</b>\n");
    for r in rows {
        let name = escape(r.account.as_str());
        match (&r.exchange, &r.error) {
            (Some(x), _) => out.push_str(&format!(
                "<b>{name}</b>: equity {} USDT, available {}, margin {}, unrealised {}\n",
                money(x.equity.get()),
                money(x.available_balance.get()),
                money(x.total_initial_margin.get()),
                money(x.unrealized_pnl.get()),
            )),
            (None, e) => out.push_str(&format!(
                "<b>{name}</b>: exchange did not answer: {}\n",
                escape(e.as_deref().unwrap_or("no answer"))
            )),
        }
    }
    out
}

pub fn performance(r: &PerformanceReport) -> String {
    let mut out = match r.since {
        Some(t) => format!("<b>Performance</b> since {}\n", when(t)),
        None => "<b>Performance</b> (all closed trades)\n".to_string(),
    };
    for row in &r.rows {
        let who = match &row.strategy {
            Some(s) => format!("{}/{}", row.account, s),
            None => format!("{} total", row.account),
        };
        out.push_str(&format!(
            "{}: {} trades, win {}%, PnL {}, fees {}, PF {}, max DD {}\n",
            escape(&who),
            row.trades,
            (row.win_rate * Decimal::ONE_HUNDRED).round_dp(1),
            money(row.total_pnl),
            money(row.fees),
            row.profit_factor
                .map_or("-".into(), |f| f.round_dp(2).to_string()),
            money(row.max_drawdown),
        ));
    }
    out
}

pub fn periods(rows: &[PeriodPnl], period: Period) -> String {
    let title = match period {
        Period::Day => "Daily PnL",
        Period::Week => "Weekly PnL",
    };
    let mut out = format!("<b>{title}</b>\n<pre>");
    for r in rows {
        let start = chrono::DateTime::from_timestamp_millis(r.start)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default();
        out.push_str(&format!(
            "{start} {:>10} {:>3} trades\n",
            money(r.pnl),
            r.trades
        ));
    }
    out.push_str("</pre>");
    out
}

pub fn risk(checks: &[RiskCheck]) -> String {
    let mut out = String::from("<b>Risk</b>\n");
    for c in checks {
        out.push_str(&format!(
            "<b>{}</b>: daily loss {} of limit {}, MDD level {}, size x{}, {}/{} positions\n",
            escape(c.account.as_str()),
            money(c.daily_loss),
            c.daily_loss_limit,
            c.mdd_level,
            c.size_multiplier,
            c.open_positions,
            c.max_positions,
        ));
        for w in &c.warnings {
            out.push_str(&format!("  ⚠️ {}\n", escape(&w.to_string())));
        }
    }
    out
}

pub fn health(rows: &[JobHealth]) -> String {
    let mut out = String::from("<b>Health</b>\n");
    for h in rows {
        let state = h.state();
        let age = h
            .age_ms
            .map_or(String::new(), |a| format!(", {} min ago", a / 60_000));
        out.push_str(&format!(
            "{} {}: <b>{state}</b>{age}\n",
            escape(h.account.as_str()),
            escape(&h.job)
        ));
    }
    out
}

/// The caption of the `/chart` picture: what it shows, and each account's line by its colour
/// (`colours[i]` for the `i`-th curve with points) with its first and last equity and deepest
/// drawdown; accounts without points are named as such.
pub fn chart_caption(
    curves: &[(AccountId, Vec<crate::report::CurvePoint>)],
    colours: &[&str],
) -> String {
    let mut out = String::from("<b>Equity (top) and drawdown (below), last 7 days</b>\n");
    let mut drawn = 0;
    for (account, c) in curves {
        let name = escape(account.as_str());
        let (Some(first), Some(last)) = (c.first(), c.last()) else {
            out.push_str(&format!("{name}: no equity points\n"));
            continue;
        };
        let deepest = c.iter().map(|p| p.drawdown).fold(0.0, f64::max);
        let colour = colours
            .get(drawn % colours.len().max(1))
            .copied()
            .unwrap_or("");
        drawn += 1;
        out.push_str(&format!(
            "{name} ({colour}): {:.2} → {:.2} USDT, max drawdown {:.2}%\n",
            first.equity,
            last.equity,
            deepest * 100.0
        ));
    }
    out
}

/// `/chart` when no account has an equity point in the last 7 days.
pub fn chart_empty() -> String {
    "No equity points in the last 7 days: the position-sync records one per 15 minutes.".into()
}

pub fn help() -> String {
    let mut out = String::from("<b>Commands</b>\n");
    for (_, usage, what) in COMMANDS {
        out.push_str(&format!("{} — {}\n", escape(usage), escape(what)));
    }
    out
}

/// What an emergency stop would do, asked before it runs.
pub fn emergency_plan(plans: &[EmergencyPlan]) -> String {
    let mut out = String::from("<b>Emergency stop</b>: this will\n");
    for p in plans {
        out.push_str(&format!(
            "<b>{}</b>: pause; close {} position(s); cancel {} conditional and {} resting order(s); flatten {} symbol(s)\n",
            escape(p.account.as_str()),
            p.close.len(),
            p.cancel.len(),
            p.cancel_resting.len(),
            p.flatten.len()
        ));
    }
    out
}

pub fn emergency_outcome(o: &EmergencyOutcome) -> String {
    let mut out = format!(
        "<b>{}</b>: flat {}, open orders {}, paused {}\n",
        escape(o.account.as_str()),
        o.flat,
        o.open_orders,
        o.paused
    );
    for e in &o.errors {
        out.push_str(&format!("  error: {}\n", escape(e)));
    }
    out
}

/// What `/close` would do, asked before it runs.
pub fn close_plan(p: &ClosePlan) -> String {
    let mut out = format!(
        "<b>Close {}</b>: this will close at market\n",
        escape(p.symbol.as_str())
    );
    for c in &p.close {
        out.push_str(&format!(
            "  {} {} {}\n",
            escape(&c.key.to_string()),
            c.side,
            c.qty
        ));
    }
    out
}

pub fn close_outcome(o: &CloseOutcome) -> String {
    let mut out = format!(
        "<b>{}</b>: {} position(s) closed, {} still open\n",
        escape(o.symbol.as_str()),
        o.closed,
        o.still_open
    );
    for l in &o.lines {
        out.push_str(&format!("  {}\n", escape(&l.to_string())));
    }
    for e in &o.errors {
        out.push_str(&format!("  error: {}\n", escape(e)));
    }
    out
}

pub fn sync_outcome(o: &SyncOutcome) -> String {
    let mut out = format!(
        "<b>{}</b>: synced, {} order(s) placed\n",
        escape(o.account.as_str()),
        o.orders_placed
    );
    for l in &o.lines {
        out.push_str(&format!("  {}\n", escape(&l.to_string())));
    }
    for e in &o.errors {
        out.push_str(&format!("  error: {}\n", escape(e)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AccountId;
    use crate::query::queries::{AccountFigures, AccountStatus};
    use rust_decimal_macros::dec;

    #[test]
    fn outside_text_is_escaped_and_figures_are_the_querys() {
        assert_eq!(escape("a<b>&c"), "a&lt;b&gt;&amp;c");
        let r = StatusReport {
            state: "sqlite:x".into(),
            at: 0,
            accounts: vec![AccountStatus {
                account: AccountId::new("m<1>"),
                enabled: true,
                figures: Some(AccountFigures {
                    equity: dec!(10123.456),
                    peak_equity: dec!(11000),
                    drawdown_pct: dec!(7.968),
                    mdd_level: 0,
                    paused: true,
                    daily_pnl: dec!(-12.5),
                    halted_until: None,
                    marks_at: None,
                }),
                open_positions: 2,
                closed_trades: 9,
                realized_pnl: dec!(123.456),
                positions: vec![],
                unrealized_pnl: None,
                jobs: vec![],
                heartbeat_age_ms: None,
            }],
        };
        let text = status(&r);
        assert!(
            text.contains("<b>m&lt;1&gt;</b>: equity 10123.46 USDT, drawdown 7.97%, <b>PAUSED</b>"),
            "{text}"
        );
        assert!(
            text.contains("2 open, 9 closed, PnL 123.46, today -12.50"),
            "{text}"
        );
        let h = help();
        assert_eq!(h.lines().count(), COMMANDS.len() + 1);
        assert!(h.contains("/close SYMBOL [STRATEGY]"), "{h}");
    }
}
