//! The history reads a front end draws from (the dashboard's trades, equity and chart pages):
//! closed trades under a filter and as CSV, every account's equity and drawdown curve beside
//! the accounts' combined curve, and what a candle chart of one symbol marks (each trade's entry,
//! exit and stop, the open positions' entries, stops and take-profits). The candles themselves
//! come from the caller (the exchange, or a candle file for a replay's store), so these stay
//! reads of the state store, with `now` and the window given.

use super::queries::PositionRow;
use super::{select_accounts, QueryError};
use crate::config::Config;
use crate::domain::{
    utc_iso as iso, AccountId, Price, Side, StrategyId, Symbol, Timeframe, TradeRecord,
};
use crate::report::{self, CurvePoint};
use crate::state::{EquityPoint, StateRepo};
use rust_decimal::Decimal;
use serde::Serialize;

/// Which closed trades to list: each field narrows; an unset one lets every trade through.
/// `from`/`to` (ms) bound the exit time, `[from, to)`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TradeFilter {
    pub account: Option<String>,
    pub strategy: Option<String>,
    pub symbol: Option<String>,
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl TradeFilter {
    /// Whether `t` passes every set field (the account is chosen by [`closed_trades`]).
    pub fn matches(&self, t: &TradeRecord) -> bool {
        self.strategy.as_deref().is_none_or(|s| t.strategy.0 == s)
            && self.symbol.as_deref().is_none_or(|s| t.symbol.0 == s)
            && self.from.is_none_or(|f| t.exit_time >= f)
            && self.to.is_none_or(|to| t.exit_time < to)
    }
}

/// The closed trades `filter` lets through, oldest exit first (then by id, so equal times keep
/// one order); an unknown account is an error naming the known ones.
pub async fn closed_trades(
    repo: &StateRepo,
    cfg: &Config,
    filter: &TradeFilter,
) -> Result<Vec<TradeRecord>, QueryError> {
    let mut out = Vec::new();
    for a in select_accounts(cfg, filter.account.as_deref())? {
        out.extend(
            repo.trades(&a.id)
                .await?
                .into_iter()
                .filter(|t| filter.matches(t)),
        );
    }
    out.sort_by(|a, b| (a.exit_time, &a.id).cmp(&(b.exit_time, &b.id)));
    Ok(out)
}

/// The sums over a list of closed trades (a filtered page's footer).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TradeTotals {
    pub trades: usize,
    /// Net of fees and funding, as each trade's.
    pub pnl: Decimal,
    pub fees: Decimal,
    pub funding: Decimal,
}

impl TradeTotals {
    pub fn of(trades: &[TradeRecord]) -> TradeTotals {
        trades.iter().fold(TradeTotals::default(), |mut t, x| {
            t.trades += 1;
            t.pnl += x.pnl.get();
            t.fees += x.fees.get();
            t.funding += x.funding.get();
            t
        })
    }
}

/// When any account's state was last written (ms): where a history page's default window ends,
/// so a replay's store (whose history is in the past) opens on its last days and a live one on
/// today. `None` before any sync.
pub async fn latest_activity(repo: &StateRepo, cfg: &Config) -> Result<Option<i64>, QueryError> {
    let mut latest = None;
    for a in &cfg.accounts {
        if let Some(st) = repo.account_state(&a.id).await? {
            latest = latest.max(Some(st.value.updated_at));
        }
    }
    Ok(latest)
}

/// The columns of [`trades_csv`].
pub const TRADES_CSV_HEADER: &str = "account,strategy,symbol,side,qty,entry_time,exit_time,entry_price,exit_price,stop_loss,pnl,fees,funding,reason\n";

/// Closed trades as CSV ([`TRADES_CSV_HEADER`]): times in ISO 8601 UTC, figures as stored
/// (PnL net of fees and funding), an empty `stop_loss` where the trade had none.
pub fn trades_csv(trades: &[TradeRecord]) -> String {
    let mut s = String::from(TRADES_CSV_HEADER);
    for t in trades {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(t.account.as_str()),
            csv_field(t.strategy.as_str()),
            csv_field(t.symbol.as_str()),
            t.side,
            t.qty,
            iso(t.entry_time),
            iso(t.exit_time),
            t.entry_price,
            t.exit_price,
            t.stop_loss.map(|p| p.to_string()).unwrap_or_default(),
            t.pnl.get().normalize(),
            t.fees.get().normalize(),
            t.funding.get().normalize(),
            csv_field(&t.reason),
        ));
    }
    s
}

/// A field quoted when it holds a comma, a quote or a line break (ids and reasons come from
/// the configuration and the exchange: nothing guarantees they never do).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One account's equity and drawdown over the window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountCurve {
    pub account: AccountId,
    pub points: Vec<CurvePoint>,
    /// The deepest drawdown of the window (fraction, 0 … 1) — the curve's own peak, not the
    /// account's all-time one.
    pub max_drawdown: f64,
}

/// Every account's curve and the accounts' combined one, over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EquityOverview {
    pub from: i64,
    pub to: i64,
    pub accounts: Vec<AccountCurve>,
    /// The sum of the accounts' equity per 15-minute bucket ([`report::combined_points`]).
    pub combined: AccountCurve,
}

/// The equity history of every account with any point in the window, and their sum.
pub async fn equity_overview(
    repo: &StateRepo,
    cfg: &Config,
    from: i64,
    to: i64,
) -> Result<EquityOverview, QueryError> {
    let mut series: Vec<(AccountId, Vec<EquityPoint>)> = Vec::new();
    for a in &cfg.accounts {
        let points = repo.equity_points(&a.id, from, to).await?;
        if !points.is_empty() {
            series.push((a.id.clone(), points));
        }
    }
    let all: Vec<&[EquityPoint]> = series.iter().map(|(_, p)| p.as_slice()).collect();
    let combined = curve_of(AccountId::new("combined"), &report::combined_points(&all));
    Ok(EquityOverview {
        from,
        to,
        accounts: series.iter().map(|(a, p)| curve_of(a.clone(), p)).collect(),
        combined,
    })
}

fn curve_of(account: AccountId, points: &[EquityPoint]) -> AccountCurve {
    let points = report::equity_curve(points);
    let max_drawdown = points.iter().map(|p| p.drawdown).fold(0.0, f64::max);
    AccountCurve {
        account,
        points,
        max_drawdown,
    }
}

/// What a mark on a candle chart stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    Entry,
    Exit,
    /// The stop a trade had when it closed.
    Stop,
}

/// One mark on a candle chart: at `bar` (the open time of the candle of the chart's timeframe
/// that holds `at`, where a chart attaches it) and `price`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChartMark {
    pub kind: MarkKind,
    pub at: i64,
    pub bar: i64,
    pub price: Price,
    pub side: Side,
    pub account: AccountId,
    pub strategy: StrategyId,
    /// `long entry`, `exit: stop`, `stop`, …
    pub label: String,
}

/// What a candle chart of `symbol` marks over `[from, to)`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SymbolMarks {
    pub symbol: Symbol,
    pub tf: Timeframe,
    /// Closed trades' entries, exits and stops, and open positions' entries, by `at`.
    pub marks: Vec<ChartMark>,
    /// The open positions on the symbol: their stops and take-profits are the chart's
    /// horizontal lines, valued as `status` values them.
    pub open: Vec<PositionRow>,
    /// How many closed trades the marks come from.
    pub trades: usize,
}

/// The marks of `symbol`'s trades (of one account and strategy when given) whose entry or exit
/// falls in `[from, to)`, and its open positions, for a chart of timeframe `tf`.
#[allow(clippy::too_many_arguments)]
pub async fn symbol_marks(
    repo: &StateRepo,
    cfg: &Config,
    account: Option<&str>,
    strategy: Option<&str>,
    symbol: &Symbol,
    tf: Timeframe,
    from: i64,
    to: i64,
) -> Result<SymbolMarks, QueryError> {
    let mut trades = Vec::new();
    let mut open = Vec::new();
    let of_strategy = |s: &StrategyId| strategy.is_none_or(|x| s.0 == x);
    for a in select_accounts(cfg, account)? {
        let marks = repo.account_state(&a.id).await?.map(|v| v.value.marks);
        trades.extend(repo.trades(&a.id).await?.into_iter().filter(|t| {
            t.symbol == *symbol
                && of_strategy(&t.strategy)
                && t.entry_time < to
                && t.exit_time >= from
        }));
        for p in repo.positions(&a.id).await? {
            let p = &p.value;
            if p.is_open() && p.key.symbol == *symbol && of_strategy(&p.key.strategy) {
                open.push(PositionRow::of(p, marks.as_ref()));
            }
        }
    }
    Ok(SymbolMarks {
        symbol: symbol.clone(),
        tf,
        marks: chart_marks(&trades, &open, tf, from, to),
        open,
        trades: trades.len(),
    })
}

/// The marks of `trades` and `open` inside `[from, to)`, by time (pure).
pub fn chart_marks(
    trades: &[TradeRecord],
    open: &[PositionRow],
    tf: Timeframe,
    from: i64,
    to: i64,
) -> Vec<ChartMark> {
    let mark =
        |kind, at: i64, price, side, account: &AccountId, strategy: &StrategyId, label| ChartMark {
            kind,
            at,
            bar: tf.open_of(at),
            price,
            side,
            account: account.clone(),
            strategy: strategy.clone(),
            label,
        };
    let mut out = Vec::new();
    for t in trades {
        let (a, s) = (&t.account, &t.strategy);
        let entry = format!("{} entry", side_word(t.side));
        out.push(mark(
            MarkKind::Entry,
            t.entry_time,
            t.entry_price,
            t.side,
            a,
            s,
            entry,
        ));
        out.push(mark(
            MarkKind::Exit,
            t.exit_time,
            t.exit_price,
            t.side,
            a,
            s,
            format!("exit: {}", t.reason),
        ));
        if let Some(stop) = t.stop_loss {
            out.push(mark(
                MarkKind::Stop,
                t.exit_time,
                stop,
                t.side,
                a,
                s,
                "stop".into(),
            ));
        }
    }
    for p in open {
        let entry = format!("{} entry (open)", side_word(p.side));
        let (a, s) = (&p.account, &p.strategy);
        out.push(mark(
            MarkKind::Entry,
            p.opened_at,
            p.entry_price,
            p.side,
            a,
            s,
            entry,
        ));
    }
    out.retain(|m| (from..to).contains(&m.at));
    out.sort_by_key(|m| (m.at, m.kind as u8));
    out
}

fn side_word(side: Side) -> &'static str {
    match side {
        Side::Long => "long",
        Side::Short => "short",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Notional;
    use rust_decimal_macros::dec;

    const H: i64 = 3_600_000;

    fn trade(id: &str, strategy: &str, symbol: &str, entry: i64, exit: i64) -> TradeRecord {
        TradeRecord {
            id: id.into(),
            account: AccountId::new("main"),
            strategy: StrategyId::new(strategy),
            symbol: Symbol::new(symbol),
            side: Side::Long,
            qty: crate::domain::Qty::new(dec!(0.5)),
            entry_price: Price::new(dec!(100)),
            exit_price: Price::new(dec!(95)),
            entry_time: entry,
            exit_time: exit,
            pnl: Notional::new(dec!(-2.5)),
            fees: Notional::new(dec!(0.1)),
            funding: Notional::new(dec!(-0.01)),
            reason: "stop".into(),
            stop_loss: Some(Price::new(dec!(95))),
        }
    }

    #[test]
    fn a_filter_narrows_by_each_field_and_bounds_the_exit_time_half_open() {
        let t = trade("a", "EMA_CROSS", "BTCUSDT", H, 2 * H);
        let pass = |f: TradeFilter| f.matches(&t);
        assert!(pass(TradeFilter::default()));
        assert!(pass(TradeFilter {
            strategy: Some("EMA_CROSS".into()),
            symbol: Some("BTCUSDT".into()),
            from: Some(2 * H),
            to: Some(2 * H + 1),
            ..TradeFilter::default()
        }));
        assert!(!pass(TradeFilter {
            strategy: Some("TFPE".into()),
            ..TradeFilter::default()
        }));
        assert!(!pass(TradeFilter {
            symbol: Some("ETHUSDT".into()),
            ..TradeFilter::default()
        }));
        assert!(!pass(TradeFilter {
            to: Some(2 * H),
            ..TradeFilter::default()
        }));
        assert!(!pass(TradeFilter {
            from: Some(2 * H + 1),
            ..TradeFilter::default()
        }));
    }

    #[test]
    fn totals_sum_pnl_fees_and_funding() {
        let t = [
            trade("a", "X", "BTCUSDT", 0, H),
            trade("b", "X", "BTCUSDT", 0, 2 * H),
        ];
        let s = TradeTotals::of(&t);
        assert_eq!(
            (s.trades, s.pnl, s.fees, s.funding),
            (2, dec!(-5), dec!(0.2), dec!(-0.02))
        );
    }

    #[test]
    fn the_csv_has_its_header_iso_times_and_quotes_what_needs_it() {
        let mut t = trade("a", "EMA_CROSS", "BTCUSDT", 0, H);
        t.reason = "manual, \"by bot\"".into();
        let csv = trades_csv(&[t]);
        let mut lines = csv.lines();
        assert_eq!(lines.next().unwrap(), TRADES_CSV_HEADER.trim_end());
        assert_eq!(
            lines.next().unwrap(),
            "main,EMA_CROSS,BTCUSDT,LONG,0.5,1970-01-01T00:00:00Z,1970-01-01T01:00:00Z,100,95,95,-2.5,0.1,-0.01,\"manual, \"\"by bot\"\"\""
        );
        assert_eq!(lines.next(), None);
    }

    #[test]
    fn marks_sit_on_their_bars_inside_the_window_in_time_order() {
        let tf = Timeframe::H1;
        let trades = [
            trade("a", "EMA_CROSS", "BTCUSDT", H + 5_000, 3 * H + 7_000),
            // Entered before the window: its entry is left out, its exit and stop are not.
            trade("b", "EMA_CROSS", "BTCUSDT", -H, 4 * H),
        ];
        let marks = chart_marks(&trades, &[], tf, 0, 10 * H);
        let got: Vec<_> = marks
            .iter()
            .map(|m| (m.kind, m.bar, m.label.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (MarkKind::Entry, H, "long entry"),
                (MarkKind::Exit, 3 * H, "exit: stop"),
                (MarkKind::Stop, 3 * H, "stop"),
                (MarkKind::Exit, 4 * H, "exit: stop"),
                (MarkKind::Stop, 4 * H, "stop"),
            ]
        );
        assert_eq!(marks[0].at, H + 5_000);
    }
}
