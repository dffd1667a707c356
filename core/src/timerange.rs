//! `--timerange START-END`: the part of a candle file a research run trades, evaluates or reports
//! (backtest, walk-forward, signals, replay), written as freqtrade writes it: `YYYYMMDD` dates in
//! UTC, either side empty (`20240101-`, `-20241231`), END inclusive (the whole of that day).
//!
//! A range only chooses which candles count. The candles before it stay the strategies' warm-up,
//! so the first candle of a range is decided as the same candle of a run over the whole file: see
//! [`TimeRange::select`] for how much of them each run reads and why.

use crate::domain::Candle;
use std::fmt;

const DAY_MS: i64 = 86_400_000;

/// A span of UTC days, as milliseconds since the Unix epoch; `None` is open on that side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// The first millisecond inside: 00:00 UTC of START.
    pub start: Option<i64>,
    /// The first millisecond after: 00:00 UTC of the day after END (END is inclusive).
    pub end: Option<i64>,
}

/// Where a range falls in a candle slice: `candles[warm_start..start]` is the warm-up read before
/// the range, `candles[start..end]` the candles inside it (never empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selection {
    pub warm_start: usize,
    pub start: usize,
    pub end: usize,
}

/// A range that holds no candle of the data it was applied to.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("--timerange {range}: {file}holds no candle in it (its candles run {first}-{last})")]
pub struct RangeError {
    pub range: TimeRange,
    /// `PATH ` when the caller named the file ([`RangeError::in_file`]), else empty.
    file: String,
    /// The data's first and last candle days, `YYYYMMDD` as the flag takes them (empty: no data).
    first: String,
    last: String,
}

impl RangeError {
    /// The same error, naming the file the candles came from.
    pub fn in_file(mut self, path: &std::path::Path) -> RangeError {
        self.file = format!("{} ", path.display());
        self
    }
}

impl TimeRange {
    /// Parse `START-END` (`YYYYMMDD-YYYYMMDD`, either side may be empty, not both). The error
    /// says what is wrong with the text; the caller names the flag.
    pub fn parse(s: &str) -> Result<TimeRange, String> {
        let (a, b) = s.split_once('-').ok_or_else(|| {
            format!("`{s}` is not START-END (e.g. 20240101-20241231, 20240101-, -20241231)")
        })?;
        if a.is_empty() && b.is_empty() {
            return Err("give START, END or both (e.g. 20240101-20241231)".into());
        }
        let start = (!a.is_empty()).then(|| day_start(a)).transpose()?;
        let end = (!b.is_empty())
            .then(|| day_start(b).map(|d| d + DAY_MS))
            .transpose()?;
        if let (Some(s0), Some(e0)) = (start, end) {
            if e0 <= s0 {
                return Err(format!("END {b} is before START {a}"));
            }
        }
        Ok(TimeRange { start, end })
    }

    /// Whether the candle opening at `open_time` is inside.
    pub fn contains(&self, open_time: i64) -> bool {
        self.start.is_none_or(|s| open_time >= s) && self.end.is_none_or(|e| open_time < e)
    }

    /// The candles of `candles` (in time order) that open inside the range, and the warm-up
    /// before them: the last `warmup` candles, or with `None` every earlier candle of the slice.
    ///
    /// Research runs (backtest, signals) feed a strategy from the first candle of its file and
    /// never rebuild it, so indicators with an infinite memory (every EMA, Wilder's averages)
    /// carry all of it: only `None` decides the range's first candle exactly as the run over the
    /// whole file does. A count (the strategy's `warmup`, the jobs' `history`) is what a cold job
    /// would read.
    pub fn select(
        &self,
        candles: &[Candle],
        warmup: Option<usize>,
    ) -> Result<Selection, RangeError> {
        let start = self
            .start
            .map_or(0, |s| candles.partition_point(|c| c.open_time < s));
        let end = self.end.map_or(candles.len(), |e| {
            candles.partition_point(|c| c.open_time < e)
        });
        if end <= start {
            return Err(RangeError {
                range: *self,
                file: String::new(),
                first: candles
                    .first()
                    .map(|c| ymd(c.open_time))
                    .unwrap_or_default(),
                last: candles.last().map(|c| ymd(c.open_time)).unwrap_or_default(),
            });
        }
        let warm_start = warmup.map_or(0, |n| start.saturating_sub(n));
        Ok(Selection {
            warm_start,
            start,
            end,
        })
    }
}

/// Written back as the flag takes it: `20240101-20241231`, `20240101-`, `-20241231`.
impl fmt::Display for TimeRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let start = self.start.map(ymd).unwrap_or_default();
        let end = self.end.map(|e| ymd(e - DAY_MS)).unwrap_or_default();
        write!(f, "{start}-{end}")
    }
}

impl std::str::FromStr for TimeRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TimeRange::parse(s)
    }
}

/// 00:00 UTC of a `YYYYMMDD` day, in ms.
fn day_start(s: &str) -> Result<i64, String> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{s}` is not a date as YYYYMMDD (e.g. 20240101)"));
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y%m%d")
        .map_err(|_| format!("`{s}` is not a calendar day"))?;
    Ok(d.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis())
}

/// The UTC day of `ms` as `YYYYMMDD`.
fn ymd(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y%m%d").to_string())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Price;
    use rust_decimal::Decimal;

    const JAN1_2024: i64 = 1_704_067_200_000;

    fn candles(from: i64, n: usize, step: i64) -> Vec<Candle> {
        let p = Price::new(Decimal::ONE);
        (0..n)
            .map(|i| Candle {
                open_time: from + i as i64 * step,
                open: p,
                high: p,
                low: p,
                close: p,
                volume: Decimal::ONE,
            })
            .collect()
    }

    #[test]
    fn parses_both_open_sides_and_makes_end_inclusive() {
        let r = TimeRange::parse("20240101-20241231").unwrap();
        assert_eq!(r.start, Some(JAN1_2024));
        assert_eq!(r.end, Some(JAN1_2024 + 366 * DAY_MS), "2024 is a leap year");
        assert_eq!(
            TimeRange::parse("20240101-").unwrap(),
            TimeRange {
                start: Some(JAN1_2024),
                end: None
            }
        );
        assert_eq!(
            TimeRange::parse("-20240101").unwrap(),
            TimeRange {
                start: None,
                end: Some(JAN1_2024 + DAY_MS)
            }
        );
        // One day is a range: START = END.
        let one = TimeRange::parse("20240101-20240101").unwrap();
        assert_eq!(one.end.unwrap() - one.start.unwrap(), DAY_MS);
        for s in ["20240101-20241231", "20240101-", "-20241231"] {
            assert_eq!(TimeRange::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn rejects_nonsense_saying_what_is_wrong() {
        let err = |s: &str| TimeRange::parse(s).unwrap_err();
        assert!(err("20241231-20240101").contains("END 20240101 is before START 20241231"));
        assert!(err("-").contains("give START, END or both"));
        assert!(err("").contains("not START-END"));
        assert!(err("20240101").contains("not START-END"));
        assert!(err("2024-01-01-").contains("not a date as YYYYMMDD"));
        assert!(err("2024011-").contains("not a date as YYYYMMDD"));
        assert!(err("20240230-").contains("not a calendar day"));
        assert!(err("20240101-2024123x").contains("`2024123x`"));
    }

    #[test]
    fn contains_counts_candles_by_their_open_time() {
        let r = TimeRange::parse("20240101-20240101").unwrap();
        assert!(!r.contains(JAN1_2024 - 1));
        assert!(r.contains(JAN1_2024));
        assert!(
            r.contains(JAN1_2024 + DAY_MS - 3_600_000),
            "the day's last 1h candle"
        );
        assert!(!r.contains(JAN1_2024 + DAY_MS));
        assert!(TimeRange::default().contains(i64::MIN));
    }

    #[test]
    fn selects_the_range_and_the_warm_up_before_it() {
        // Ten days of daily candles from 2024-01-01.
        let c = candles(JAN1_2024, 10, DAY_MS);
        let r = TimeRange::parse("20240104-20240106").unwrap();
        let all = r.select(&c, None).unwrap();
        assert_eq!(
            all,
            Selection {
                warm_start: 0,
                start: 3,
                end: 6
            }
        );
        assert_eq!(r.select(&c, Some(2)).unwrap().warm_start, 1);
        // The file holds fewer warm-up candles than asked: all it has.
        assert_eq!(r.select(&c, Some(50)).unwrap().warm_start, 0);
        // Open sides, and sides beyond the data, are cut at the data.
        let open = TimeRange::parse("-20240102")
            .unwrap()
            .select(&c, Some(5))
            .unwrap();
        assert_eq!((open.warm_start, open.start, open.end), (0, 0, 2));
        let wide = TimeRange::parse("20230101-20300101")
            .unwrap()
            .select(&c, None)
            .unwrap();
        assert_eq!((wide.start, wide.end), (0, 10));
    }

    #[test]
    fn a_range_without_candles_names_the_flag_the_file_and_its_days() {
        let c = candles(JAN1_2024, 10, DAY_MS);
        let e = TimeRange::parse("20250101-")
            .unwrap()
            .select(&c, None)
            .unwrap_err()
            .in_file(std::path::Path::new("data/X.csv"));
        assert_eq!(
            e.to_string(),
            "--timerange 20250101-: data/X.csv holds no candle in it (its candles run 20240101-20240110)"
        );
        assert!(TimeRange::parse("-20231231")
            .unwrap()
            .select(&c, None)
            .is_err());
        assert!(TimeRange::parse("20240101-")
            .unwrap()
            .select(&[], None)
            .is_err());
    }
}
