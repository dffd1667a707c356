//! Breakdowns of backtest trades (`albra backtest --breakdown`): the closed trades of every run
//! grouped by one [`Dimension`] — exit month (UTC), symbol, exit reason or strategy — each group's
//! trades, wins, PnL, fees and funding summed exactly (decimals), so the rows of any one table add
//! up to the runs' totals.

use super::RunResult;
use crate::domain::TradeRecord;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// What a breakdown groups the trades by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// The month the trade closed in, UTC: `YYYY-MM`.
    Month,
    Symbol,
    /// The trade's exit reason ([`crate::domain::ExitReason`]).
    Exit,
    Strategy,
}

impl Dimension {
    /// Every dimension, in the order `--help` lists them.
    pub const ALL: [Dimension; 4] = [
        Dimension::Month,
        Dimension::Symbol,
        Dimension::Exit,
        Dimension::Strategy,
    ];

    /// The name `--breakdown` takes.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Month => "month",
            Dimension::Symbol => "symbol",
            Dimension::Exit => "exit",
            Dimension::Strategy => "strategy",
        }
    }

    /// The group `t` falls in.
    pub fn key(self, t: &TradeRecord) -> String {
        match self {
            Dimension::Month => chrono::DateTime::from_timestamp_millis(t.exit_time)
                .map(|d| d.format("%Y-%m").to_string())
                .unwrap_or_else(|| format!("{} ms", t.exit_time)),
            Dimension::Symbol => t.symbol.to_string(),
            Dimension::Exit => t.reason.clone(),
            Dimension::Strategy => t.strategy.to_string(),
        }
    }
}

impl fmt::Display for Dimension {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dimension {
    type Err = String;

    /// A dimension by name; an unknown one names itself and the valid ones.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Dimension::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let valid: Vec<&str> = Dimension::ALL.iter().map(|d| d.name()).collect();
                format!(
                    "unknown breakdown dimension `{s}` (valid: {})",
                    valid.join(", ")
                )
            })
    }
}

/// One group of a breakdown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BreakdownRow {
    pub key: String,
    pub trades: usize,
    /// Trades with a positive PnL (as the win rate of the run's metrics counts them).
    pub wins: usize,
    /// Net of fees and funding, as each trade's.
    pub pnl: Decimal,
    pub fees: Decimal,
    /// + received, − paid.
    pub funding: Decimal,
}

impl BreakdownRow {
    /// Wins over trades (0 without trades).
    pub fn win_rate(&self) -> f64 {
        if self.trades == 0 {
            0.0
        } else {
            self.wins as f64 / self.trades as f64
        }
    }

    fn add(&mut self, t: &TradeRecord) {
        self.trades += 1;
        self.wins += usize::from(t.pnl.get() > Decimal::ZERO);
        self.pnl += t.pnl.get();
        self.fees += t.fees.get();
        self.funding += t.funding.get();
    }
}

/// The trades of `runs` grouped by `dim`, one row per key in key order (months in time order).
pub fn breakdown(runs: &[RunResult], dim: Dimension) -> Vec<BreakdownRow> {
    let mut rows: BTreeMap<String, BreakdownRow> = BTreeMap::new();
    for t in runs.iter().flat_map(|r| &r.trades) {
        let key = dim.key(t);
        rows.entry(key.clone())
            .or_insert_with(|| BreakdownRow {
                key,
                ..BreakdownRow::default()
            })
            .add(t);
    }
    rows.into_values().collect()
}

/// The sum of every row of `rows` under `key` (a table's total line).
pub fn total(rows: &[BreakdownRow], key: &str) -> BreakdownRow {
    let mut sum = BreakdownRow {
        key: key.to_string(),
        ..BreakdownRow::default()
    };
    for r in rows {
        sum.trades += r.trades;
        sum.wins += r.wins;
        sum.pnl += r.pnl;
        sum.fees += r.fees;
        sum.funding += r.funding;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::{FundingCharged, Metrics};
    use crate::domain::{AccountId, Notional, Price, Qty, Side, StrategyId, Symbol, Timeframe};
    use crate::paper::OrderJournal;
    use rust_decimal_macros::dec;

    /// 2025-01-31 23:00 UTC and 2025-02-01 00:00 UTC, either side of a month's end.
    const JAN_END: i64 = 1_738_364_400_000;
    const FEB_START: i64 = 1_738_368_000_000;

    fn trade(strategy: &str, symbol: &str, exit: i64, reason: &str, pnl: Decimal) -> TradeRecord {
        TradeRecord {
            id: format!("{strategy}{symbol}{exit}{reason}"),
            account: AccountId::new("backtest"),
            strategy: StrategyId::new(strategy),
            symbol: Symbol::new(symbol),
            side: Side::Long,
            qty: Qty::new(dec!(1)),
            entry_price: Price::new(dec!(100)),
            exit_price: Price::new(dec!(101)),
            entry_time: exit - 3_600_000,
            exit_time: exit,
            pnl: Notional::new(pnl),
            fees: Notional::new(dec!(0.08)),
            funding: Notional::new(dec!(-0.01)),
            reason: reason.into(),
            stop_loss: None,
        }
    }

    fn run(strategy: &str, trades: Vec<TradeRecord>) -> RunResult {
        RunResult {
            strategy: strategy.into(),
            symbol: trades[0].symbol.clone(),
            data: "x.csv".into(),
            timeframe: Timeframe::H1,
            candles: 0,
            gaps: 0,
            trades,
            equity: vec![],
            exposed: vec![],
            metrics: Metrics::default(),
            job_errors: vec![],
            quiet_candles: 0,
            orders: OrderJournal::default(),
            funding: FundingCharged::default(),
            final_wallet: Decimal::ZERO,
        }
    }

    fn runs() -> Vec<RunResult> {
        vec![
            run(
                "EMA_CROSS",
                vec![
                    trade("EMA_CROSS", "BTCUSDT", JAN_END, "signal", dec!(5.5)),
                    trade("EMA_CROSS", "BTCUSDT", FEB_START, "stop", dec!(-2.25)),
                    trade("EMA_CROSS", "BTCUSDT", FEB_START + 1, "signal", dec!(0)),
                ],
            ),
            run(
                "TFPE",
                vec![trade(
                    "TFPE",
                    "ETHUSDT",
                    FEB_START,
                    "end_of_data",
                    dec!(1.125),
                )],
            ),
        ]
    }

    #[test]
    fn months_are_by_exit_time_in_utc() {
        let rows = breakdown(&runs(), Dimension::Month);
        let keys: Vec<(&str, usize, usize)> = rows
            .iter()
            .map(|r| (r.key.as_str(), r.trades, r.wins))
            .collect();
        assert_eq!(keys, vec![("2025-01", 1, 1), ("2025-02", 3, 1)]);
        assert_eq!(rows[1].pnl, dec!(-1.125));
        assert_eq!(rows[1].win_rate(), 1.0 / 3.0);
    }

    #[test]
    fn every_dimension_groups_by_its_key() {
        let keys = |d| -> Vec<(String, usize)> {
            breakdown(&runs(), d)
                .into_iter()
                .map(|r| (r.key, r.trades))
                .collect()
        };
        let s = |k: &str, n| (k.to_string(), n);
        assert_eq!(
            keys(Dimension::Symbol),
            vec![s("BTCUSDT", 3), s("ETHUSDT", 1)]
        );
        assert_eq!(
            keys(Dimension::Exit),
            vec![s("end_of_data", 1), s("signal", 2), s("stop", 1)]
        );
        assert_eq!(
            keys(Dimension::Strategy),
            vec![s("EMA_CROSS", 3), s("TFPE", 1)]
        );
    }

    /// Every table's rows add up to the totals of all trades, whatever the dimension.
    #[test]
    fn each_table_sums_to_the_totals() {
        let runs = runs();
        let all: Vec<&TradeRecord> = runs.iter().flat_map(|r| &r.trades).collect();
        let pnl: Decimal = all.iter().map(|t| t.pnl.get()).sum();
        let fees: Decimal = all.iter().map(|t| t.fees.get()).sum();
        let funding: Decimal = all.iter().map(|t| t.funding.get()).sum();
        let wins = all.iter().filter(|t| t.pnl.get() > Decimal::ZERO).count();
        for d in Dimension::ALL {
            let t = total(&breakdown(&runs, d), "total");
            assert_eq!(
                (t.trades, t.wins, t.pnl, t.fees, t.funding),
                (all.len(), wins, pnl, fees, funding),
                "{d}"
            );
        }
        assert_eq!(breakdown(&[], Dimension::Month), vec![]);
        assert_eq!(total(&[], "total").win_rate(), 0.0);
    }

    #[test]
    fn dimensions_parse_by_name_and_an_unknown_one_lists_the_valid() {
        for d in Dimension::ALL {
            assert_eq!(d.name().parse::<Dimension>(), Ok(d));
            assert_eq!(d.to_string(), d.name());
        }
        assert_eq!(" Month ".parse::<Dimension>(), Ok(Dimension::Month));
        let e = "week".parse::<Dimension>().unwrap_err();
        assert_eq!(
            e,
            "unknown breakdown dimension `week` (valid: month, symbol, exit, strategy)"
        );
    }
}
