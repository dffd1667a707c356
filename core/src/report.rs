//! Periodic reports (`albra report`, and the curves of the bot's `/chart`): one period's figures
//! per account and per strategy, computed purely from what the store holds — the live sync's
//! equity points ([`EquityPoint`], one per 15 minutes) and the closed trades — and the report's
//! `now`. Front ends lay a [`Report`] out and compute no figure of their own.
//!
//! The definitions, once:
//! - **Period**: whole UTC days. `daily` is the last complete UTC day before the one holding
//!   `now`, `weekly` the seven complete days before it: a report of a closed period gives the
//!   same figures whenever it is run.
//! - **Return**: last equity point of the period over its first, minus one.
//! - **Max drawdown**: the largest fall of equity from its running peak over the period's
//!   points, as a fraction of that peak (0 … 1).
//! - **Sharpe**: the daily returns of the period (each day's close, its last point, over the
//!   previous close; the first day's over the last point before the period, or the period's
//!   first point), mean over sample standard deviation, risk-free rate 0, times √365 (futures
//!   trade every day). At least two daily returns are needed: a daily report has none.
//! - **Trades, win rate, fees, funding, PnL**: the trades that closed in the period
//!   ([`PerformanceRow::of`], the query layer's figures). Funding is what those trades carried
//!   (received or paid while open, already part of their PnL); funding on positions still open
//!   is not in any figure until they close.
//! - **API weight**: the exchange's `X-MBX-USED-WEIGHT-1M` as each equity point recorded it
//!   (the IP's weight in that minute, the sync's requests included): its peak and mean.
//!
//! Sharpe and drawdown are the account's (equity is recorded per account); a strategy's row has
//! its trades' figures and its PnL as a fraction of the account's starting equity.

use crate::domain::{AccountId, StrategyId, TradeRecord};
use crate::query::queries::PerformanceRow;
use crate::state::EquityPoint;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

const DAY_MS: i64 = 86_400_000;

/// Which period a report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    Daily,
    Weekly,
}

impl ReportKind {
    pub fn parse(s: &str) -> Option<ReportKind> {
        match s {
            "daily" => Some(ReportKind::Daily),
            "weekly" => Some(ReportKind::Weekly),
            _ => None,
        }
    }

    fn days(self) -> i64 {
        match self {
            ReportKind::Daily => 1,
            ReportKind::Weekly => 7,
        }
    }
}

/// The span `[start, end)` (ms) a report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// The complete UTC days of a `kind` report before the day holding `now`.
    pub fn of(kind: ReportKind, now: i64) -> Window {
        let end = now.div_euclid(DAY_MS) * DAY_MS;
        Window {
            start: end - kind.days() * DAY_MS,
            end,
        }
    }

    /// From when equity points are needed: one day before the window, for the close before its
    /// first day.
    pub fn points_from(&self) -> i64 {
        self.start - DAY_MS
    }

    fn holds(&self, t: i64) -> bool {
        t >= self.start && t < self.end
    }
}

/// What the store holds of one account for a report: its equity points from
/// [`Window::points_from`] to the window's end, oldest first, and its closed trades (any; those
/// outside the window are left out here).
#[derive(Clone, Debug)]
pub struct AccountData {
    pub account: AccountId,
    pub points: Vec<EquityPoint>,
    pub trades: Vec<TradeRecord>,
}

/// A report: per account, its equity figures, its strategies' and its total trade figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub kind: ReportKind,
    pub window: Window,
    pub accounts: Vec<AccountReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AccountReport {
    pub account: AccountId,
    /// `None`: no equity point in the period (see `notes`).
    pub equity: Option<EquityFigures>,
    /// One row per strategy with trades closed in the period.
    pub strategies: Vec<TradeFigures>,
    /// Every trade of the account closed in the period (`strategy: None`).
    pub total: TradeFigures,
    /// `None`: no point of the period carried the exchange's weight (the paper exchange).
    pub api_weight: Option<ApiWeight>,
    /// The period's equity points with their drawdown, for charts.
    pub curve: Vec<CurvePoint>,
    /// What the figures leave out or could not be computed from, in words.
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EquityFigures {
    pub start_equity: Decimal,
    pub end_equity: Decimal,
    /// `end_equity / start_equity - 1`; `None` when the start is not positive.
    pub return_frac: Option<f64>,
    /// Largest fall from the running peak, as a fraction of it (0 … 1).
    pub max_drawdown: f64,
    /// Annualised (√365) Sharpe of the daily returns; `None` with fewer than two of them or
    /// none that differ.
    pub sharpe: Option<f64>,
    pub daily_returns: usize,
    pub points: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TradeFigures {
    /// `None`: every strategy of the account.
    pub strategy: Option<StrategyId>,
    pub trades: usize,
    pub wins: usize,
    /// `None` without trades.
    pub win_rate: Option<Decimal>,
    pub pnl: Decimal,
    pub fees: Decimal,
    pub funding: Decimal,
    /// PnL over the account's starting equity; `None` without a positive starting equity.
    pub return_frac: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ApiWeight {
    /// Equity points that carried the gauge.
    pub samples: usize,
    pub peak_1m: u32,
    pub mean_1m: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CurvePoint {
    pub at: i64,
    pub equity: f64,
    /// Fall from the running peak as a fraction of it (0 … 1).
    pub drawdown: f64,
}

/// The `kind` report of the window [`Window::of`] `now`, over each account's data.
pub fn build(kind: ReportKind, now: i64, data: &[AccountData]) -> Report {
    let window = Window::of(kind, now);
    Report {
        kind,
        window,
        accounts: data.iter().map(|d| account_report(&window, d)).collect(),
    }
}

fn account_report(w: &Window, d: &AccountData) -> AccountReport {
    let inside: Vec<&EquityPoint> = d.points.iter().filter(|p| w.holds(p.at)).collect();
    let before = d.points.iter().rfind(|p| p.at < w.start);
    let curve = curve(&inside);
    let equity = equity_figures(w, before, &inside, &curve);
    let start = equity.as_ref().map(|e| e.start_equity);
    let trades: Vec<&TradeRecord> = d.trades.iter().filter(|t| w.holds(t.exit_time)).collect();
    let mut by_strategy: BTreeMap<&StrategyId, Vec<&TradeRecord>> = BTreeMap::new();
    for t in &trades {
        by_strategy.entry(&t.strategy).or_default().push(t);
    }
    let strategies = by_strategy
        .into_iter()
        .map(|(s, ts)| trade_figures(&d.account, Some(s.clone()), &ts, start))
        .collect();
    let mut notes = Vec::new();
    if equity.is_none() {
        notes.push("no equity points in the period: return, Sharpe and drawdown need the position-sync's readings (one per 15 minutes; backtests record none)".into());
    } else if equity.as_ref().is_some_and(|e| e.sharpe.is_none()) {
        notes.push(
            "Sharpe: needs at least two differing daily returns (a weekly report has up to seven)"
                .into(),
        );
    }
    if trades.is_empty() {
        notes.push("no trades closed in the period".into());
    }
    notes.push("funding: what the trades closed in the period received or paid while open (part of their PnL); funding on positions still open is not included".into());
    let api_weight = api_weight(&inside);
    if api_weight.is_none() {
        notes.push("API weight: not reported by the exchange for this period's readings".into());
    }
    AccountReport {
        account: d.account.clone(),
        equity,
        total: trade_figures(&d.account, None, &trades, start),
        strategies,
        api_weight,
        curve,
        notes,
    }
}

fn f(x: Decimal) -> f64 {
    x.to_f64().unwrap_or(0.0)
}

/// The equity curve of `points` (oldest first) with each point's drawdown: what `/chart` draws.
pub fn equity_curve(points: &[EquityPoint]) -> Vec<CurvePoint> {
    curve(&points.iter().collect::<Vec<_>>())
}

/// The accounts' combined equity: at each 15-minute bucket any of `series` (each oldest first)
/// has a point in, the sum of every account's latest reading at or before it, from the first
/// bucket where every account has one (a sum missing an account would show its start as a
/// jump). The weight gauge is per host, so the sum carries none.
pub fn combined_points(series: &[&[EquityPoint]]) -> Vec<EquityPoint> {
    use crate::state::equity_bucket;
    let mut buckets: Vec<i64> = series
        .iter()
        .flat_map(|s| s.iter().map(|p| equity_bucket(p.at)))
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    let mut next = vec![0usize; series.len()];
    let mut out = Vec::new();
    for b in buckets {
        let mut sum = Some(Decimal::ZERO);
        for (s, i) in series.iter().zip(next.iter_mut()) {
            while *i < s.len() && equity_bucket(s[*i].at) <= b {
                *i += 1;
            }
            sum = match (sum, i.checked_sub(1)) {
                (Some(total), Some(last)) => Some(total + s[last].equity),
                _ => None,
            };
        }
        if let Some(equity) = sum {
            out.push(EquityPoint {
                at: b,
                equity,
                api_weight_1m: None,
            });
        }
    }
    out
}

/// Each point with its fall from the running peak (0 while the peak is not positive).
fn curve(points: &[&EquityPoint]) -> Vec<CurvePoint> {
    let mut peak = f64::MIN;
    points
        .iter()
        .map(|p| {
            let e = f(p.equity);
            peak = peak.max(e);
            let drawdown = if peak > 0.0 {
                ((peak - e) / peak).clamp(0.0, 1.0)
            } else {
                0.0
            };
            CurvePoint {
                at: p.at,
                equity: e,
                drawdown,
            }
        })
        .collect()
}

fn equity_figures(
    w: &Window,
    before: Option<&EquityPoint>,
    inside: &[&EquityPoint],
    curve: &[CurvePoint],
) -> Option<EquityFigures> {
    let (first, last) = (inside.first()?, inside.last()?);
    let (start, end) = (first.equity, last.equity);
    let returns = daily_returns(w, before.unwrap_or(first), inside);
    Some(EquityFigures {
        start_equity: start,
        end_equity: end,
        return_frac: (start > Decimal::ZERO).then(|| f(end) / f(start) - 1.0),
        max_drawdown: curve.iter().map(|c| c.drawdown).fold(0.0, f64::max),
        sharpe: sharpe(&returns),
        daily_returns: returns.len(),
        points: inside.len(),
    })
}

/// Each day's close (its last point) over the previous close, the first over `base`. A day
/// without a point has no close; the next day's return then spans both.
fn daily_returns(w: &Window, base: &EquityPoint, inside: &[&EquityPoint]) -> Vec<f64> {
    let mut closes: BTreeMap<i64, f64> = BTreeMap::new();
    for p in inside {
        closes.insert((p.at - w.start).div_euclid(DAY_MS), f(p.equity));
    }
    let mut prev = f(base.equity);
    let mut out = Vec::new();
    for close in closes.into_values() {
        if prev > 0.0 {
            out.push(close / prev - 1.0);
        }
        prev = close;
    }
    out
}

/// Mean over sample standard deviation, times √365; `None` below two returns or with no spread.
pub fn sharpe(returns: &[f64]) -> Option<f64> {
    if returns.len() < 2 {
        return None;
    }
    let n = returns.len() as f64;
    let mean = returns.iter().sum::<f64>() / n;
    let var = returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sd = var.sqrt();
    (sd > 1e-12 && sd.is_finite()).then(|| mean / sd * 365f64.sqrt())
}

fn trade_figures(
    account: &AccountId,
    strategy: Option<StrategyId>,
    trades: &[&TradeRecord],
    start_equity: Option<Decimal>,
) -> TradeFigures {
    let row = PerformanceRow::of(account, strategy, trades.iter().copied());
    TradeFigures {
        trades: row.trades,
        wins: row.wins,
        win_rate: (row.trades > 0).then_some(row.win_rate),
        funding: trades.iter().map(|t| t.funding.get()).sum(),
        return_frac: start_equity
            .filter(|s| *s > Decimal::ZERO)
            .map(|s| f(row.total_pnl) / f(s)),
        pnl: row.total_pnl,
        fees: row.fees,
        strategy: row.strategy,
    }
}

fn api_weight(points: &[&EquityPoint]) -> Option<ApiWeight> {
    let ws: Vec<u32> = points.iter().filter_map(|p| p.api_weight_1m).collect();
    let peak_1m = *ws.iter().max()?;
    Some(ApiWeight {
        samples: ws.len(),
        peak_1m,
        mean_1m: ws.iter().map(|&w| f64::from(w)).sum::<f64>() / ws.len() as f64,
    })
}

#[cfg(test)]
mod tests;
