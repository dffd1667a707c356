//! Market side of the test exchange: the recorded candles, the kline rows Binance would serve for
//! them at a given server time (including the still-open row), trading rules per symbol and the
//! mark price.

use albra_core::domain::Candle;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

/// Binance's USDⓈ-M kline intervals that can be built from a base timeframe (weeks and months are
/// not UTC-epoch aligned on Binance, so they are left out).
const INTERVALS: [(&str, i64); 13] = [
    ("1m", 60_000),
    ("3m", 180_000),
    ("5m", 300_000),
    ("15m", 900_000),
    ("30m", 1_800_000),
    ("1h", 3_600_000),
    ("2h", 7_200_000),
    ("4h", 14_400_000),
    ("6h", 21_600_000),
    ("8h", 28_800_000),
    ("12h", 43_200_000),
    ("1d", 86_400_000),
    ("3d", 259_200_000),
];

pub(crate) fn interval_ms(s: &str) -> Option<i64> {
    INTERVALS.iter().find(|(n, _)| *n == s).map(|(_, ms)| *ms)
}

/// Trading rules of one symbol, as `exchangeInfo` reports them.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SymbolRules {
    pub symbol: String,
    pub base_asset: String,
    pub price_precision: u32,
    pub quantity_precision: u32,
    pub tick_size: Decimal,
    pub min_price: Decimal,
    pub max_price: Decimal,
    pub step_size: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Decimal,
    pub market_step_size: Decimal,
    pub market_min_qty: Decimal,
    pub market_max_qty: Decimal,
    pub min_notional: Decimal,
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("literal decimal")
}

impl SymbolRules {
    /// The real filters of BTCUSDT and ETHUSDT perpetuals; anything else gets rules derived from
    /// its price level so that a one-step order is a few cents and prices have ~6 significant digits.
    pub fn for_symbol(symbol: &str, reference_price: Option<Decimal>) -> SymbolRules {
        let base_asset = symbol.strip_suffix("USDT").unwrap_or(symbol).to_string();
        match symbol {
            "BTCUSDT" => SymbolRules {
                symbol: symbol.into(),
                base_asset,
                price_precision: 2,
                quantity_precision: 3,
                tick_size: d("0.10"),
                min_price: d("556.80"),
                max_price: d("4529764"),
                step_size: d("0.001"),
                min_qty: d("0.001"),
                max_qty: d("1000"),
                market_step_size: d("0.001"),
                market_min_qty: d("0.001"),
                market_max_qty: d("120"),
                min_notional: d("100"),
            },
            "ETHUSDT" => SymbolRules {
                symbol: symbol.into(),
                base_asset,
                price_precision: 2,
                quantity_precision: 3,
                tick_size: d("0.01"),
                min_price: d("39.86"),
                max_price: d("306177"),
                step_size: d("0.001"),
                min_qty: d("0.001"),
                max_qty: d("10000"),
                market_step_size: d("0.001"),
                market_min_qty: d("0.001"),
                market_max_qty: d("2000"),
                min_notional: d("20"),
            },
            _ => {
                let p = reference_price.unwrap_or(Decimal::ONE).max(d("0.00000001"));
                let magnitude = p.to_f64().unwrap_or(1.0).log10().floor() as i32;
                let pow10 = |e: i32| -> Decimal {
                    if e >= 0 {
                        Decimal::from(10i64.pow(e as u32))
                    } else {
                        Decimal::new(1, (-e) as u32)
                    }
                };
                // ~6 significant digits of price; one step of quantity is worth well under 1 USDT.
                let tick = pow10((magnitude - 5).clamp(-8, 0));
                let step = pow10((2 - magnitude).clamp(-8, 0));
                SymbolRules {
                    symbol: symbol.into(),
                    base_asset,
                    price_precision: tick.scale(),
                    quantity_precision: step.scale(),
                    tick_size: tick,
                    min_price: tick,
                    max_price: (p * Decimal::from(100)).round_dp(tick.scale()),
                    step_size: step,
                    min_qty: step,
                    max_qty: step * Decimal::from(10_000_000),
                    market_step_size: step,
                    market_min_qty: step,
                    market_max_qty: step * Decimal::from(1_000_000),
                    min_notional: Decimal::from(5),
                }
            }
        }
    }
}

/// The test exchange settles funding every 8 hours, at 00:00, 08:00 and 16:00 UTC.
pub const FUNDING_INTERVAL_MS: i64 = 8 * 3_600_000;

/// The funding rate the test exchange settles at `time_ms`: a function of the settlement's index
/// alone (-0.00010000 to 0.00020000 in steps of 0.00005, eight decimals as Binance writes them), so
/// tests can compute what a download must hold.
pub fn funding_rate_at(time_ms: i64) -> Decimal {
    let k = time_ms.div_euclid(FUNDING_INTERVAL_MS);
    Decimal::new((k.rem_euclid(7) - 2) * 5_000, 8)
}

/// One 12-field kline row before it is rendered.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct KlineRow {
    pub open_time: i64,
    pub close_time: i64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    /// True for the row of the candle that contains the server time (its values are partial).
    pub is_open: bool,
}

impl KlineRow {
    /// Binance's array: open time, O, H, L, C, volume, close time, quote volume, trades,
    /// taker buy base volume, taker buy quote volume, ignore.
    pub fn to_json(&self) -> serde_json::Value {
        let quote = (self.volume * (self.open + self.close) / Decimal::TWO).round_dp(8);
        let trades = self.volume.round().to_i64().unwrap_or(0);
        serde_json::json!([
            self.open_time,
            self.open.normalize().to_string(),
            self.high.normalize().to_string(),
            self.low.normalize().to_string(),
            self.close.normalize().to_string(),
            self.volume.normalize().to_string(),
            self.close_time,
            quote.normalize().to_string(),
            trades,
            (self.volume / Decimal::TWO)
                .round_dp(8)
                .normalize()
                .to_string(),
            (quote / Decimal::TWO).round_dp(8).normalize().to_string(),
            "0"
        ])
    }
}

/// Candles and prices of every symbol the server knows.
pub(crate) struct Market {
    candles: HashMap<String, Vec<Candle>>,
    pub base_tf_ms: i64,
    mark_overrides: HashMap<String, Decimal>,
    pub rules: BTreeMap<String, SymbolRules>,
}

impl Market {
    pub fn new(mut candles: HashMap<String, Vec<Candle>>, base_tf_ms: i64) -> Market {
        assert!(base_tf_ms > 0, "base timeframe must be positive");
        let mut rules = BTreeMap::new();
        for (symbol, rows) in candles.iter_mut() {
            rows.sort_by_key(|c| c.open_time);
            rows.dedup_by_key(|c| c.open_time);
            let reference = rows.last().map(|c| c.close.get());
            rules.insert(symbol.clone(), SymbolRules::for_symbol(symbol, reference));
        }
        // The two symbols the system trades are always listed, like on the real exchange.
        for s in ["BTCUSDT", "ETHUSDT"] {
            rules
                .entry(s.to_string())
                .or_insert_with(|| SymbolRules::for_symbol(s, None));
        }
        Market {
            candles,
            base_tf_ms,
            mark_overrides: HashMap::new(),
            rules,
        }
    }

    pub fn set_mark(&mut self, symbol: &str, price: Decimal) {
        self.mark_overrides.insert(symbol.to_string(), price);
    }

    /// Base candle containing `now`, if the recorded data covers it.
    fn containing(&self, symbol: &str, now: i64) -> Option<&Candle> {
        let rows = self.candles.get(symbol)?;
        let i = rows.partition_point(|c| c.open_time <= now);
        let c = rows.get(i.checked_sub(1)?)?;
        (now < c.open_time + self.base_tf_ms).then_some(c)
    }

    /// Mark price: the override if set, else the open of the candle containing `now` (clamped to
    /// the first open / last close outside the recorded range).
    pub fn mark(&self, symbol: &str, now: i64) -> Option<Decimal> {
        if let Some(p) = self.mark_overrides.get(symbol) {
            return Some(*p);
        }
        if let Some(c) = self.containing(symbol, now) {
            return Some(c.open.get());
        }
        let rows = self.candles.get(symbol)?;
        let first = rows.first()?;
        if now < first.open_time {
            Some(first.open.get())
        } else {
            rows.last().map(|c| c.close.get())
        }
    }

    /// `GET /fapi/v1/fundingRate` rows of `symbol`: a settlement every [`FUNDING_INTERVAL_MS`]
    /// (00:00, 08:00, 16:00 UTC) from the first recorded candle on, none after `now`, with time in
    /// `[start, end]`, oldest first, at most `limit`: from `start` on when it is given, else the
    /// latest ones (as Binance does). The rate is [`funding_rate_at`]; the mark price is the open of
    /// the recorded candle containing the settlement, `""` when none does (as in Binance's oldest
    /// records).
    pub fn funding(
        &self,
        symbol: &str,
        (start, end): (Option<i64>, Option<i64>),
        limit: usize,
        now: i64,
    ) -> Vec<serde_json::Value> {
        let Some(first) = self.candles.get(symbol).and_then(|r| r.first()) else {
            return Vec::new();
        };
        let step = FUNDING_INTERVAL_MS;
        let lo = start.unwrap_or(i64::MIN).max(first.open_time);
        let hi = end.unwrap_or(i64::MAX).min(now);
        let (k_lo, k_hi) = ((lo + step - 1).div_euclid(step), hi.div_euclid(step));
        if k_lo > k_hi {
            return Vec::new();
        }
        let count = (k_hi - k_lo + 1).min(limit as i64);
        let k_first = if start.is_some() {
            k_lo
        } else {
            k_hi - count + 1
        };
        (k_first..k_first + count)
            .map(|k| {
                let t = k * step;
                let mark = self.containing(symbol, t).map_or(String::new(), |c| {
                    let mut p = c.open.get();
                    p.rescale(8);
                    p.to_string()
                });
                serde_json::json!({
                    "symbol": symbol,
                    "fundingTime": t,
                    "fundingRate": funding_rate_at(t).to_string(),
                    "markPrice": mark,
                })
            })
            .collect()
    }

    /// Kline rows for `interval_ms` (a multiple of the base timeframe) with open time in
    /// `[start, end]`, none opening after `now`. The candle containing `now` is included with its
    /// partial values (open, close = mark so far), exactly like Binance's newest row.
    pub fn klines(
        &self,
        symbol: &str,
        interval_ms: i64,
        start: Option<i64>,
        end: Option<i64>,
        limit: usize,
        now: i64,
    ) -> Vec<KlineRow> {
        let Some(rows) = self.candles.get(symbol) else {
            return Vec::new();
        };
        let bucket = |t: i64| t.div_euclid(interval_ms) * interval_ms;
        // Base candles that have opened by `now` and whose bucket opens no later than `end`.
        let mut hi = rows.partition_point(|c| c.open_time <= now);
        if let Some(end) = end {
            let limit_t = (end.div_euclid(interval_ms) + 1) * interval_ms;
            hi = hi.min(rows.partition_point(|c| c.open_time < limit_t));
        }
        let lo = match start {
            Some(start) => {
                let first = (start + interval_ms - 1).div_euclid(interval_ms) * interval_ms;
                rows.partition_point(|c| c.open_time < first)
            }
            None => {
                // Walk back over `limit` distinct buckets.
                let mut i = hi;
                let mut seen = 0usize;
                let mut current = None;
                while i > 0 {
                    let b = bucket(rows[i - 1].open_time);
                    if current != Some(b) {
                        if seen == limit {
                            break;
                        }
                        seen += 1;
                        current = Some(b);
                    }
                    i -= 1;
                }
                i
            }
        };
        let mut out: Vec<KlineRow> = Vec::new();
        if lo >= hi {
            return out;
        }
        for c in &rows[lo..hi] {
            let is_open = now < c.open_time + self.base_tf_ms;
            let (o, h, l, cl, v) = if is_open {
                let mark = self.mark(symbol, now).unwrap_or(c.open.get());
                (
                    c.open.get(),
                    c.open.get().max(mark),
                    c.open.get().min(mark),
                    mark,
                    Decimal::ZERO,
                )
            } else {
                (
                    c.open.get(),
                    c.high.get(),
                    c.low.get(),
                    c.close.get(),
                    c.volume,
                )
            };
            let b = bucket(c.open_time);
            match out.last_mut() {
                Some(row) if row.open_time == b => {
                    row.high = row.high.max(h);
                    row.low = row.low.min(l);
                    row.close = cl;
                    row.volume += v;
                    row.is_open |= is_open;
                }
                _ => out.push(KlineRow {
                    open_time: b,
                    close_time: b + interval_ms - 1,
                    open: o,
                    high: h,
                    low: l,
                    close: cl,
                    volume: v,
                    is_open,
                }),
            }
            if start.is_some() && out.len() > limit {
                out.pop();
                break;
            }
        }
        // A coarse bucket is still open while its last base candle has not closed.
        for row in out.iter_mut() {
            if row.close_time >= now {
                row.is_open = true;
            }
        }
        out
    }
}

/// Reads a candle CSV with header `open_time,open,high,low,close,volume` (the format of
/// `../shared/data`). Errors name the line.
pub fn load_candles_csv(path: &Path) -> Result<Vec<Candle>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.trim() == "open_time,open,high,low,close,volume" => {}
        Some((_, h)) => {
            return Err(format!(
                "{}:1: expected header `open_time,open,high,low,close,volume`, found `{h}`",
                path.display()
            ))
        }
        None => return Err(format!("{}: empty file", path.display())),
    }
    let mut out = Vec::new();
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| format!("{}:{}: {what}: `{line}`", path.display(), i + 1);
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 6 {
            return Err(bad("expected 6 fields"));
        }
        let open_time: i64 = f[0].parse().map_err(|_| bad("bad open_time"))?;
        let num = |s: &str| Decimal::from_str(s).map_err(|_| bad("bad number"));
        out.push(Candle {
            open_time,
            open: num(f[1])?.into(),
            high: num(f[2])?.into(),
            low: num(f[3])?.into(),
            close: num(f[4])?.into(),
            volume: num(f[5])?,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const M15: i64 = 900_000;
    const H1: i64 = 3_600_000;

    fn candle(t: i64, o: i64, h: i64, l: i64, c: i64) -> Candle {
        Candle {
            open_time: t,
            open: Decimal::from(o).into(),
            high: Decimal::from(h).into(),
            low: Decimal::from(l).into(),
            close: Decimal::from(c).into(),
            volume: Decimal::from(10),
        }
    }

    /// Eight 15m candles from 00:00 UTC: 100, 101, … opens.
    fn market() -> Market {
        let rows = (0..8)
            .map(|i| candle(i * M15, 100 + i, 110 + i, 90 + i, 101 + i))
            .collect();
        Market::new(HashMap::from([("BTCUSDT".to_string(), rows)]), M15)
    }

    #[test]
    fn base_klines_include_the_open_row_newest_last() {
        let m = market();
        let now = 3 * M15 + 5_000; // 5 s into the 4th candle
        let rows = m.klines("BTCUSDT", M15, None, None, 500, now);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows.last().unwrap().open_time, 3 * M15);
        assert!(rows.last().unwrap().is_open);
        assert!(!rows[2].is_open);
        // The open row only knows its open so far; the recorded close is not leaked.
        assert_eq!(rows[3].close, Decimal::from(103));
        assert_eq!(rows[3].volume, Decimal::ZERO);
        assert_eq!(rows[2].close, Decimal::from(103));
        assert_eq!(rows[2].close_time, 3 * M15 - 1);
    }

    #[test]
    fn funding_every_eight_hours_from_the_first_candle_up_to_now() {
        const H8: i64 = FUNDING_INTERVAL_MS;
        // Candles over the first 2 hours of day 0 only: later settlements have no mark price.
        let m = market();
        let times = |rows: &[serde_json::Value]| {
            rows.iter()
                .map(|r| r["fundingTime"].as_i64().unwrap())
                .collect::<Vec<_>>()
        };
        let now = 3 * H8 + 1;
        let all = m.funding("BTCUSDT", (None, None), 1000, now);
        assert_eq!(times(&all), vec![0, H8, 2 * H8, 3 * H8], "none after now");
        assert_eq!(all[0]["markPrice"], "100.00000000");
        assert_eq!(all[1]["markPrice"], "");
        assert_eq!(all[0]["fundingRate"], "-0.00010000");
        assert_eq!(funding_rate_at(H8 + 5).to_string(), "-0.00005000");
        assert_eq!(funding_rate_at(6 * H8), funding_rate_at(13 * H8));
        // A window, oldest first, limited from its start; without a start the latest ones.
        let w = m.funding("BTCUSDT", (Some(1), Some(3 * H8)), 2, now);
        assert_eq!(times(&w), vec![H8, 2 * H8]);
        let latest = m.funding("BTCUSDT", (None, None), 2, now);
        assert_eq!(times(&latest), vec![2 * H8, 3 * H8]);
        assert!(m.funding("ETHUSDT", (None, None), 10, now).is_empty());
        assert!(m
            .funding("BTCUSDT", (Some(H8 + 1), Some(2 * H8 - 1)), 10, now)
            .is_empty());
    }

    #[test]
    fn limit_takes_the_newest_rows() {
        let m = market();
        let rows = m.klines("BTCUSDT", M15, None, None, 2, 7 * M15 + 1);
        assert_eq!(
            rows.iter().map(|r| r.open_time).collect::<Vec<_>>(),
            vec![6 * M15, 7 * M15]
        );
    }

    #[test]
    fn start_and_end_bound_open_times() {
        let m = market();
        let rows = m.klines("BTCUSDT", M15, Some(M15), Some(3 * M15), 500, 8 * M15);
        assert_eq!(
            rows.iter().map(|r| r.open_time).collect::<Vec<_>>(),
            vec![M15, 2 * M15, 3 * M15]
        );
        let rows = m.klines("BTCUSDT", M15, Some(M15), None, 2, 8 * M15);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].open_time, M15);
    }

    #[test]
    fn hourly_rows_aggregate_utc_aligned() {
        let m = market();
        let rows = m.klines("BTCUSDT", H1, None, None, 500, 8 * M15);
        assert_eq!(rows.len(), 2);
        let first = &rows[0];
        assert_eq!(first.open_time, 0);
        assert_eq!(first.close_time, H1 - 1);
        assert_eq!(first.open, Decimal::from(100));
        assert_eq!(first.high, Decimal::from(113));
        assert_eq!(first.low, Decimal::from(90));
        assert_eq!(first.close, Decimal::from(104));
        assert_eq!(first.volume, Decimal::from(40));
        assert!(!first.is_open && !rows[1].is_open);
    }

    #[test]
    fn hourly_row_in_progress_is_partial_and_open() {
        let m = market();
        let now = 5 * M15 + 1_000; // 01:15:01, second hour in progress
        let rows = m.klines("BTCUSDT", H1, None, None, 500, now);
        assert_eq!(rows.len(), 2);
        let open = &rows[1];
        assert!(open.is_open);
        assert_eq!(open.open, Decimal::from(104));
        assert_eq!(open.close, Decimal::from(105)); // mark = open of the 01:15 candle
        assert_eq!(open.volume, Decimal::from(10)); // only the closed 01:00 candle counts
    }

    #[test]
    fn mark_follows_the_candle_and_honours_overrides() {
        let mut m = market();
        assert_eq!(m.mark("BTCUSDT", 2 * M15 + 10), Some(Decimal::from(102)));
        assert_eq!(m.mark("BTCUSDT", 100 * M15), Some(Decimal::from(108)));
        assert_eq!(m.mark("ETHUSDT", 0), None);
        m.set_mark("BTCUSDT", Decimal::from(99));
        assert_eq!(m.mark("BTCUSDT", 2 * M15), Some(Decimal::from(99)));
    }

    #[test]
    fn kline_json_has_twelve_fields_with_string_prices() {
        let m = market();
        let row = &m.klines("BTCUSDT", M15, None, None, 1, 2 * M15)[0];
        let v = row.to_json();
        let a = v.as_array().unwrap();
        assert_eq!(a.len(), 12);
        assert!(a[0].is_i64() && a[6].is_i64() && a[8].is_i64());
        for i in [1, 2, 3, 4, 5, 7, 9, 10, 11] {
            assert!(a[i].is_string(), "field {i} must be a string");
        }
    }

    #[test]
    fn rules_for_known_and_derived_symbols() {
        let btc = SymbolRules::for_symbol("BTCUSDT", None);
        assert_eq!(btc.tick_size, d("0.1"));
        assert_eq!(btc.market_max_qty, d("120"));
        let sol = SymbolRules::for_symbol("SOLUSDT", Some(d("150.25")));
        assert_eq!(sol.step_size, Decimal::ONE);
        assert_eq!(sol.tick_size, d("0.001"));
        assert_eq!(sol.min_notional, Decimal::from(5));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.csv");
        std::fs::write(
            &p,
            "open_time,open,high,low,close,volume\n0,1,2,0.5,1.5,3\nx,1,2,3,4,5\n",
        )
        .unwrap();
        let err = load_candles_csv(&p).unwrap_err();
        assert!(err.contains(":3:"), "{err}");
        std::fs::write(
            &p,
            "open_time,open,high,low,close,volume\n0,1,2,0.5,1.5,3\n",
        )
        .unwrap();
        let rows = load_candles_csv(&p).unwrap();
        assert_eq!(rows[0].close.get(), d("1.5"));
    }
}
