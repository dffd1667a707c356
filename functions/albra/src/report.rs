//! `backtest --report FILE.html`: the page `albra_web::backtest` lays out, from the runs, their
//! candles read again from the data files (at a timeframe the chart can show whole), and the
//! command's settings.

use crate::cli::SimArgs;
use albra_core::backtest::{self, Dimension, RunResult};
use albra_core::config::Config;
use albra_core::data;
use albra_core::domain::{Candle, Timeframe};
use albra_core::timerange::TimeRange;
use albra_web::backtest::{backtest_html, BacktestPage, Table};
use anyhow::{Context, Result};
use std::path::Path;

/// The most candles a report's chart holds: beyond it the candles are coarsened (a four-year 1h
/// file is 35,000 bars, unreadable at once and megabytes of page).
const CHART_CANDLES: usize = 5_000;

/// The coarsest timeframe needed to keep `count` candles of `tf` within [`CHART_CANDLES`].
fn chart_timeframe(tf: Timeframe, count: usize) -> Timeframe {
    Timeframe::ALL
        .into_iter()
        .filter(|t| *t >= tf && t.millis() % tf.millis() == 0)
        .find(|t| count as i64 * tf.millis() / t.millis() <= CHART_CANDLES as i64)
        .unwrap_or(Timeframe::H4.max(tf))
}

/// The run's candles over its equity curve's span, at the chart's timeframe.
fn run_candles(r: &RunResult) -> Result<(Timeframe, Vec<Candle>)> {
    let series =
        data::load_csv(&r.data).with_context(|| format!("reading {}", r.data.display()))?;
    let series = if series.timeframe < r.timeframe {
        series.resampled(r.timeframe, true)
    } else {
        series
    };
    let (from, to) = (
        r.equity.first().map_or(i64::MIN, |p| p.0),
        r.equity.last().map_or(i64::MAX, |p| p.0),
    );
    let span: Vec<Candle> = series
        .candles
        .into_iter()
        .filter(|c| c.open_time >= from && c.open_time < to)
        .collect();
    let tf = chart_timeframe(series.timeframe, span.len());
    if tf == series.timeframe {
        return Ok((tf, span));
    }
    Ok((tf, data::resample(&span, series.timeframe, tf, false)))
}

/// The command's settings as the report's parameters table shows them.
fn parameters(
    runs: &[RunResult],
    sim: &SimArgs,
    cfg: Option<&Config>,
    config: &Path,
    range: Option<&TimeRange>,
) -> Vec<(String, String)> {
    let mut p = vec![
        (
            "config".to_string(),
            match cfg {
                Some(_) => config.display().to_string(),
                None => "(built-in defaults)".to_string(),
            },
        ),
        ("fee".into(), sim.fee.to_string()),
        ("slippage".into(), sim.slippage.to_string()),
        ("starting equity".into(), format!("{} USDT", sim.equity)),
        ("risk".into(), sim.risk.clone()),
        (
            "timerange".into(),
            range.map_or("the whole file".to_string(), |r| r.to_string()),
        ),
    ];
    let mut seen = Vec::new();
    for r in runs {
        if seen.contains(&r.strategy) {
            continue;
        }
        seen.push(r.strategy.clone());
        let s = cfg.and_then(|c| c.strategy(&r.strategy));
        let value = match s {
            Some(s) => format!(
                "leverage {}x, size {} of equity, params {}",
                s.leverage,
                s.size_pct,
                if s.params.is_empty() {
                    "the strategy's defaults".to_string()
                } else {
                    s.params.to_string().trim().replace('\n', ", ")
                }
            ),
            None => "the built-in defaults".to_string(),
        };
        p.push((r.strategy.clone(), value));
    }
    for r in runs {
        let run = format!("{} {}", r.symbol, r.timeframe);
        p.push((format!("data ({run})"), r.data.display().to_string()));
        let funding = match &r.funding.file {
            Some(f) => format!(
                "{}: {} payments, {:.2} USDT",
                f.display(),
                r.funding.payments,
                r.funding.total.round_dp(2)
            ),
            None => format!(
                "no data (no {} beside the candles)",
                backtest::funding_file_name(&r.data)
            ),
        };
        p.push((format!("funding ({} {run})", r.strategy), funding));
    }
    p
}

/// The breakdowns of every run's trades, one table per dimension with its total line: the
/// figures of `backtest::breakdown`, laid out as `--breakdown` prints them.
fn breakdown_tables(runs: &[RunResult]) -> Vec<Table> {
    Dimension::ALL
        .into_iter()
        .map(|d| {
            let rows = backtest::breakdown(runs, d);
            let total = backtest::total(&rows, "total");
            Table {
                title: format!("By {d}"),
                header: ["", "trades", "win rate", "PnL", "fees", "funding"]
                    .map(String::from)
                    .to_vec(),
                rows: rows
                    .iter()
                    .chain(std::iter::once(&total))
                    .map(|r| {
                        vec![
                            r.key.clone(),
                            r.trades.to_string(),
                            format!("{:.1}%", r.win_rate() * 100.0),
                            format!("{:.2}", r.pnl.round_dp(2)),
                            format!("{:.2}", r.fees.round_dp(2)),
                            format!("{:.2}", r.funding.round_dp(2)),
                        ]
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Write the report of `runs` to `path`.
pub fn write(
    path: &Path,
    runs: &[RunResult],
    sim: &SimArgs,
    cfg: Option<&Config>,
    config: &Path,
    range: Option<&TimeRange>,
) -> Result<()> {
    let candles = runs.iter().map(run_candles).collect::<Result<Vec<_>>>()?;
    let page = BacktestPage {
        runs,
        candles,
        parameters: parameters(runs, sim, cfg, config, range),
        tables: breakdown_tables(runs),
        generated_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    };
    let html = backtest_html(&page)?;
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_files_are_charted_at_a_coarser_timeframe() {
        assert_eq!(chart_timeframe(Timeframe::H1, 4_000), Timeframe::H1);
        assert_eq!(chart_timeframe(Timeframe::H1, 35_000), Timeframe::H4);
        assert_eq!(chart_timeframe(Timeframe::M15, 17_000), Timeframe::H1);
        assert_eq!(chart_timeframe(Timeframe::M5, 60_000), Timeframe::H1);
        assert_eq!(
            chart_timeframe(Timeframe::H4, 90_000),
            Timeframe::H4,
            "nothing coarser"
        );
    }
}
