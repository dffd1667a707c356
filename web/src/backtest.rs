//! The backtest report (`albra backtest --report FILE.html`): the run's parameters, each run's
//! figures, its equity and drawdown over time with the trades marked, a candle chart of its
//! symbol with every entry, exit and stop, its trades in a sortable table, and the breakdowns.
//! Charts are TradingView Lightweight Charts (the dashboard's candle library), inlined, so the
//! file works offline.
//!
//! The figures are the backtest's own (`RunResult`, its `Metrics`, its trades); this module only
//! reshapes them for the charts: times in seconds, the drawdown of each equity point from the
//! running peak, and the marks placed on the bars they fall in.

use crate::{render, RenderError, LWC_JS};
use albra_core::backtest::{Metrics, RunResult};
use albra_core::domain::{utc_minute, Candle, Timeframe, TradeRecord};
use albra_core::query::history::{chart_marks, ChartMark, MarkKind};
use minijinja::{context, Environment};
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

const TEMPLATE: &str = include_str!("../templates/backtest.html");

/// What the report shows besides the runs.
pub struct BacktestPage<'a> {
    pub runs: &'a [RunResult],
    /// Each run's candles for its chart (same order as `runs`), at `timeframe` (the run's, or
    /// coarser for a long file: the chart stays readable and the page small).
    pub candles: Vec<(Timeframe, Vec<Candle>)>,
    /// The command's settings as (name, value), shown as given.
    pub parameters: Vec<(String, String)>,
    /// Extra tables (title, header, rows), e.g. the breakdowns.
    pub tables: Vec<Table>,
    /// When the report was made (ms).
    pub generated_at: i64,
}

/// A table of text cells.
#[derive(Clone, Debug, Serialize)]
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One run as its section and charts read it.
#[derive(Serialize)]
struct RunView<'a> {
    title: String,
    symbol: String,
    data: String,
    candle_count: usize,
    gaps: usize,
    metrics: &'a Metrics,
    trades: &'a [TradeRecord],
    /// [time s, equity]
    equity: Points,
    /// [time s, drawdown %] (≤ 0)
    drawdown: Points,
    equity_marks: Vec<ChartMark>,
    candle_tf: Timeframe,
    candles: Vec<CandleView>,
    candle_marks: Vec<ChartMark>,
}

#[derive(Serialize)]
struct CandleView {
    time: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
}

fn f(d: rust_decimal::Decimal) -> f64 {
    d.to_f64().unwrap_or(f64::NAN)
}

/// The equity curve in seconds, one point per time (a chart needs them strictly rising: the
/// last value of a time stands), and its drawdown in percent of the running peak.
/// (time, value) points of a chart.
type Points = Vec<(i64, f64)>;

fn curves(equity: &[(i64, f64)]) -> (Points, Points) {
    let mut eq: Points = Vec::with_capacity(equity.len());
    for &(t, e) in equity {
        match eq.last_mut() {
            Some(last) if last.0 == t / 1000 => last.1 = e,
            _ => eq.push((t / 1000, e)),
        }
    }
    let mut peak = f64::MIN;
    let dd = eq
        .iter()
        .map(|&(t, e)| {
            peak = peak.max(e);
            let d = if peak > 0.0 {
                (e - peak) / peak * 100.0
            } else {
                0.0
            };
            (t, d)
        })
        .collect();
    (eq, dd)
}

fn view<'a>(r: &'a RunResult, candles: &(Timeframe, Vec<Candle>)) -> RunView<'a> {
    let (equity, drawdown) = curves(&r.equity);
    let (tf, cs) = candles;
    let span = |first: Option<i64>, last: Option<i64>| {
        (first.unwrap_or(i64::MIN), last.map_or(i64::MAX, |l| l + 1))
    };
    let (from, to) = span(r.equity.first().map(|p| p.0), r.equity.last().map(|p| p.0));
    let equity_marks = chart_marks(&r.trades, &[], r.timeframe, from, to)
        .into_iter()
        .filter(|m| m.kind != MarkKind::Stop)
        .collect();
    let (cfrom, cto) = span(
        cs.first().map(|c| c.open_time),
        cs.last().map(|c| c.close_time(*tf)),
    );
    RunView {
        title: format!("{} {} {}", r.strategy, r.symbol, r.timeframe),
        symbol: r.symbol.to_string(),
        data: r.data.display().to_string(),
        candle_count: r.candles,
        gaps: r.gaps,
        metrics: &r.metrics,
        trades: &r.trades,
        equity,
        drawdown,
        equity_marks,
        candle_tf: *tf,
        candles: cs
            .iter()
            .map(|c| CandleView {
                time: c.open_time / 1000,
                open: f(c.open.get()),
                high: f(c.high.get()),
                low: f(c.low.get()),
                close: f(c.close.get()),
            })
            .collect(),
        candle_marks: chart_marks(&r.trades, &[], *tf, cfrom, cto),
    }
}

/// The report as one self-contained HTML page.
pub fn backtest_html(page: &BacktestPage<'_>) -> Result<String, RenderError> {
    let mut env = Environment::new();
    crate::add_filters(&mut env);
    env.add_template("backtest.html", TEMPLATE)
        .map_err(|source| RenderError::new("backtest", source))?;
    let runs: Vec<RunView> = page
        .runs
        .iter()
        .zip(&page.candles)
        .map(|(r, c)| view(r, c))
        .collect();
    let ctx = context! {
        runs => runs,
        parameters => &page.parameters,
        tables => &page.tables,
        generated => utc_minute(page.generated_at),
        lwc_js => LWC_JS,
    };
    render(&env, "backtest.html", ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_are_in_seconds_strictly_rising_with_the_drawdown_from_the_peak() {
        let (eq, dd) = curves(&[(0, 100.0), (1000, 120.0), (1000, 110.0), (2000, 90.0)]);
        assert_eq!(eq, [(0, 100.0), (1, 110.0), (2, 90.0)]);
        let dd: Vec<_> = dd
            .iter()
            .map(|p| (p.0, (p.1 * 100.0).round() / 100.0))
            .collect();
        assert_eq!(dd, [(0, 0.0), (1, 0.0), (2, -18.18)]);
    }
}
