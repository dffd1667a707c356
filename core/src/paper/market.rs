//! Where the paper exchange gets its prices: recorded candles ([`RecordedMarket`]) or a real
//! exchange's public klines ([`LiveMarket`]).

use super::*;

/// Where the paper exchange gets its prices.
#[async_trait]
pub trait MarketData: Send + Sync {
    /// Up to `limit` newest candles of `tf` closed at `now` (open + tf ≤ now), oldest first.
    async fn closed_candles(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError>;
    /// Price a market order fills at, at `now` (before slippage).
    async fn price(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError>;
    /// Candles at the finest resolution that CLOSED in (from, to], oldest first, for stop and
    /// take-profit triggering.
    async fn candles_closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Timeframe, Candle)>, ExchangeError>;
    /// Recorded candles answer at once: the paper exchange then reads them in place instead of
    /// awaiting a future and collecting a list (backtests ask on every candle). Same answers.
    fn as_recorded(&self) -> Option<&RecordedMarket> {
        None
    }
}

pub(super) fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A series' candles: aggregated here, or a loaded file shared with the caller (a backtest runs
/// many strategies and parameter sets over one file without copying it).
pub(super) enum Candles {
    Owned(Vec<Candle>),
    Shared(Arc<CandleSeries>),
}

impl std::ops::Deref for Candles {
    type Target = [Candle];
    fn deref(&self) -> &[Candle] {
        match self {
            Candles::Owned(v) => v,
            Candles::Shared(s) => &s.candles,
        }
    }
}

/// Candles of one timeframe with an index of their contiguous runs, so "which candle holds time t"
/// is index arithmetic inside a run and a binary search only across gaps.
pub(super) struct Indexed {
    tf_ms: i64,
    candles: Candles,
    /// (open time of the run's first candle, index of that candle); runs are separated by gaps.
    runs: Vec<(i64, usize)>,
}

impl Indexed {
    fn new(candles: Candles, tf: Timeframe) -> Self {
        let tf_ms = tf.millis();
        let mut runs = Vec::new();
        for (i, c) in candles.iter().enumerate() {
            if i == 0 || c.open_time != candles[i - 1].open_time + tf_ms {
                runs.push((c.open_time, i));
            }
        }
        Indexed {
            tf_ms,
            candles,
            runs,
        }
    }

    /// [`Indexed::new`] for a loaded series, its runs taken from the gaps the loader found
    /// instead of a scan over every candle (a backtest's file has 51,224 of them, and the scan
    /// was a tenth of a millisecond per run). The gap list is checked first, at the cost of a
    /// binary search per gap: each gap must sit where it says, and together they must account
    /// for every candle missing between the first and the last, which for sorted, distinct,
    /// aligned candles (what a [`CandleSeries`] holds) leaves no other gap. Otherwise: the scan.
    fn of_series(series: Arc<CandleSeries>) -> Self {
        let tf = series.timeframe;
        match runs_from_gaps(&series) {
            Some(runs) => Indexed {
                tf_ms: tf.millis(),
                candles: Candles::Shared(series),
                runs,
            },
            None => Indexed::new(Candles::Shared(series), tf),
        }
    }

    /// Number of candles whose open time is ≤ `t`.
    fn count_open_le(&self, t: i64) -> usize {
        let k = self.runs.partition_point(|&(start, _)| start <= t);
        if k == 0 {
            return 0;
        }
        let (start, idx) = self.runs[k - 1];
        let run_end = self.runs.get(k).map_or(self.candles.len(), |r| r.1);
        let off = ((t - start) / self.tf_ms) as usize + 1;
        (idx + off).min(run_end)
    }
}

/// The runs of `series` (as [`Indexed`] keeps them) read off its gap list, when the list passes
/// the check [`Indexed::of_series`] describes; `None` otherwise.
pub(super) fn runs_from_gaps(series: &CandleSeries) -> Option<Vec<(i64, usize)>> {
    let tf_ms = series.timeframe.millis();
    let c = &series.candles;
    let (first, last) = (c.first()?.open_time, c.last()?.open_time);
    let mut runs = vec![(first, 0usize)];
    let mut missing = 0i64;
    for g in &series.gaps {
        let skipped = i64::try_from(g.missing_candles).ok()?;
        let next = g.after_open_time + (skipped + 1) * tf_ms;
        let i = c.partition_point(|x| x.open_time < next);
        let before = c.get(i.checked_sub(1)?)?;
        let seam = c.get(i)?.open_time == next && before.open_time == g.after_open_time;
        if !seam || skipped == 0 || next <= runs[runs.len() - 1].0 {
            return None;
        }
        runs.push((next, i));
        missing += skipped;
    }
    let slots = (last - first) / tf_ms + 1;
    (slots - missing == c.len() as i64).then_some(runs)
}

pub(super) struct Recorded {
    base_tf: Timeframe,
    base: Indexed,
    /// Coarser timeframes, aggregated on first use (complete buckets only).
    coarser: [OnceLock<Indexed>; 5],
}

impl Recorded {
    fn series(&self, symbol: &Symbol, tf: Timeframe) -> Result<&Indexed, ExchangeError> {
        if tf == self.base_tf {
            return Ok(&self.base);
        }
        if tf < self.base_tf {
            return Err(ExchangeError::Fatal(format!(
                "recorded candles for {symbol} are {}; {tf} candles cannot be derived from them",
                self.base_tf
            )));
        }
        let slot = Timeframe::ALL
            .iter()
            .position(|t| *t == tf)
            .expect("every timeframe is in ALL");
        Ok(self.coarser[slot].get_or_init(|| {
            Indexed::new(
                Candles::Owned(resample(&self.base.candles, self.base_tf, tf, true)),
                tf,
            )
        }))
    }
}

/// Market data from recorded candles (replay and backtests). Serves any timeframe at or above the
/// recorded one by aggregating it (cached per timeframe; only complete buckets count as closed).
#[derive(Default)]
pub struct RecordedMarket {
    /// A handful of symbols at most: a list is found faster than a hash is computed.
    symbols: Vec<(Symbol, Recorded)>,
}

impl RecordedMarket {
    pub fn new(symbol: Symbol, series: CandleSeries) -> Self {
        let mut m = RecordedMarket::default();
        m.add(symbol, series);
        m
    }

    /// The candles of one symbol, shared with the caller instead of moved in.
    pub fn shared(symbol: Symbol, series: Arc<CandleSeries>) -> Self {
        let mut m = RecordedMarket::default();
        let tf = series.timeframe;
        m.insert_indexed(symbol, tf, Indexed::of_series(series));
        m
    }

    /// Add (or replace) the candles of another symbol.
    pub fn add(&mut self, symbol: Symbol, series: CandleSeries) -> &mut Self {
        self.insert(symbol, series.timeframe, Candles::Owned(series.candles));
        self
    }

    fn insert(&mut self, symbol: Symbol, tf: Timeframe, candles: Candles) {
        self.insert_indexed(symbol, tf, Indexed::new(candles, tf));
    }

    fn insert_indexed(&mut self, symbol: Symbol, tf: Timeframe, base: Indexed) {
        let rec = Recorded {
            base_tf: tf,
            base,
            coarser: Default::default(),
        };
        match self.symbols.iter_mut().find(|(s, _)| *s == symbol) {
            Some((_, r)) => *r = rec,
            None => self.symbols.push((symbol, rec)),
        }
    }

    fn get(&self, symbol: &Symbol) -> Option<&Recorded> {
        self.symbols
            .iter()
            .find(|(s, _)| s == symbol)
            .map(|(_, r)| r)
    }

    /// Recorded timeframe, first open time and last close time of a symbol's candles.
    pub fn span(&self, symbol: &Symbol) -> Option<(Timeframe, i64, i64)> {
        let r = self.get(symbol)?;
        let first = r.base.candles.first()?;
        let last = r.base.candles.last()?;
        Some((r.base_tf, first.open_time, last.open_time + r.base.tf_ms))
    }

    fn recorded(&self, symbol: &Symbol) -> Result<&Recorded, ExchangeError> {
        self.get(symbol)
            .ok_or_else(|| ExchangeError::Fatal(format!("no recorded candles for {symbol}")))
    }

    /// The open of the recorded candle containing `now` ([`MarketData::price`]).
    pub fn price_at(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError> {
        let r = self.recorded(symbol)?;
        let s = &r.base;
        let n = s.count_open_le(now);
        if n > 0 {
            let c = &s.candles[n - 1];
            if now < c.open_time + s.tf_ms {
                return Ok(c.open);
            }
        }
        let (Some(first), Some(last)) = (s.candles.first(), s.candles.last()) else {
            return Err(ExchangeError::Fatal(format!(
                "no recorded candles for {symbol}"
            )));
        };
        // During an outage nothing trades: an order waits for the first price after it.
        if n > 0 && n < s.candles.len() {
            return Ok(s.candles[n].open);
        }
        // Right after the last recorded close (within one candle), the last close is the price:
        // a backtest closes what is still open there.
        let end = last.open_time + s.tf_ms;
        if n == s.candles.len() && now >= end && now < end + s.tf_ms {
            return Ok(last.close);
        }
        let why = if n == 0 {
            format!(
                "before the recorded data, which starts at {}",
                utc(first.open_time)
            )
        } else if n == s.candles.len() {
            format!(
                "after the end of the recorded data (the last candle closed at {})",
                utc(last.open_time + s.tf_ms)
            )
        } else {
            format!(
                "inside a gap of the recorded data (exchange outage): no candles from {} to {}",
                utc(s.candles[n - 1].open_time + s.tf_ms),
                utc(s.candles[n].open_time)
            )
        };
        Err(ExchangeError::Fatal(format!(
            "{symbol}: no recorded price at {}: {why}",
            utc(now)
        )))
    }

    /// The base candles that closed in (from, to], oldest first, with their timeframe
    /// ([`MarketData::candles_closed_between`], in place).
    pub fn closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<(Timeframe, &[Candle]), ExchangeError> {
        let r = self.recorded(symbol)?;
        let s = &r.base;
        if to <= from {
            return Ok((r.base_tf, &[]));
        }
        // close = open + tf: closed in (from, to] ⇔ open in (from − tf, to − tf].
        let start = s.count_open_le(from - s.tf_ms);
        let end = s.count_open_le(to - s.tf_ms);
        Ok((r.base_tf, &s.candles[start..end.max(start)]))
    }
}

#[async_trait]
impl MarketData for RecordedMarket {
    async fn closed_candles(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        let s = self.recorded(symbol)?.series(symbol, tf)?;
        let end = s.count_open_le(now - tf.millis());
        let start = end.saturating_sub(limit as usize);
        Ok(s.candles[start..end].to_vec())
    }

    async fn price(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError> {
        self.price_at(symbol, now)
    }

    async fn candles_closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Timeframe, Candle)>, ExchangeError> {
        let (tf, candles) = self.closed_between(symbol, from, to)?;
        Ok(candles.iter().map(|c| (tf, *c)).collect())
    }

    fn as_recorded(&self) -> Option<&RecordedMarket> {
        Some(self)
    }
}

/// Market data from a real exchange's public endpoints (for `albra run --paper`): prices and
/// triggers come from closed 1m klines.
pub struct LiveMarket {
    exchange: Arc<dyn Exchange>,
}

/// Binance serves at most this many klines per request.
pub(super) const MAX_KLINES: i64 = 1500;

impl LiveMarket {
    pub fn new(exchange: Arc<dyn Exchange>) -> Self {
        LiveMarket { exchange }
    }
}

#[async_trait]
impl MarketData for LiveMarket {
    async fn closed_candles(
        &self,
        symbol: &Symbol,
        tf: Timeframe,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Candle>, ExchangeError> {
        self.exchange.closed_klines(symbol, tf, limit, now).await
    }

    /// The close of the newest closed 1m candle.
    async fn price(&self, symbol: &Symbol, now: i64) -> Result<Price, ExchangeError> {
        let k = self
            .exchange
            .closed_klines(symbol, Timeframe::M1, 1, now)
            .await?;
        k.last()
            .map(|c| c.close)
            .ok_or_else(|| ExchangeError::Retryable {
                endpoint: "GET /fapi/v1/klines".into(),
                detail: format!("no closed 1m candle of {symbol} at {}", utc(now)),
                retry_after: None,
            })
    }

    /// Closed 1m candles in (from, to]; at most the newest 1,500 minutes (one klines request).
    async fn candles_closed_between(
        &self,
        symbol: &Symbol,
        from: i64,
        to: i64,
    ) -> Result<Vec<(Timeframe, Candle)>, ExchangeError> {
        if to <= from {
            return Ok(Vec::new());
        }
        let m1 = Timeframe::M1.millis();
        let limit = ((to - from) / m1 + 1).clamp(1, MAX_KLINES) as u32;
        let k = self
            .exchange
            .closed_klines(symbol, Timeframe::M1, limit, to)
            .await?;
        Ok(k.into_iter()
            .filter(|c| {
                let close = c.open_time + m1;
                close > from && close <= to
            })
            .map(|c| (Timeframe::M1, c))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    const T0: i64 = 1_751_630_400_000; // 2025-07-04 12:00 UTC

    #[test]
    fn a_series_is_indexed_from_its_gap_list_exactly_as_by_the_scan() {
        let tf = Timeframe::H1;
        let h = tf.millis();
        let scan = |s: &CandleSeries| Indexed::new(Candles::Owned(s.candles.clone()), tf).runs;
        let of = |s: CandleSeries| Indexed::of_series(Arc::new(s)).runs;
        // Runs of 3, 1 and 2 candles: one missing after the third, two after the fourth.
        let open: [i64; 6] = [0, 1, 2, 4, 7, 8];
        let candles: Vec<Candle> = open
            .iter()
            .map(|&k| Candle {
                open_time: T0 + k * h,
                open: Price::new(dec!(1)),
                high: Price::new(dec!(1)),
                low: Price::new(dec!(1)),
                close: Price::new(dec!(1)),
                volume: dec!(1),
            })
            .collect();
        let good = CandleSeries::new(candles.clone(), tf);
        assert_eq!(good.gaps.len(), 2);
        assert!(runs_from_gaps(&good).is_some(), "a right list is used");
        assert_eq!(of(good.clone()), scan(&good));
        assert_eq!(scan(&good), vec![(T0, 0), (T0 + 4 * h, 3), (T0 + 7 * h, 4)]);
        // Gap lists that are wrong in any way fall back to the scan, which finds the truth.
        let gap = |after: i64, missing: u64| crate::data::Gap {
            after_open_time: T0 + after * h,
            missing_candles: missing,
        };
        for wrong in [
            vec![],
            vec![gap(2, 1)],
            vec![gap(2, 1), gap(4, 1)],
            vec![gap(2, 1), gap(3, 2)],
            vec![gap(2, 1), gap(4, 2), gap(7, 0)],
            vec![gap(4, 2), gap(2, 1)],
            vec![gap(-1, 0), gap(2, 1), gap(4, 2)],
            vec![gap(8, 1), gap(2, 1), gap(4, 2)],
        ] {
            let s = CandleSeries {
                candles: candles.clone(),
                timeframe: tf,
                gaps: wrong.clone(),
            };
            assert_eq!(runs_from_gaps(&s), None, "{wrong:?}");
            assert_eq!(of(s), scan(&good), "{wrong:?}");
        }
        // The real spot file: fifteen outages, indexed the same both ways.
        let spot = crate::data::load_csv(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/BTCUSDT-spot-1h.csv"),
        )
        .unwrap();
        assert_eq!(spot.gaps.len(), 15);
        let want = scan(&spot);
        assert_eq!(want.len(), 16);
        assert_eq!(runs_from_gaps(&spot).as_ref(), Some(&want));
        assert_eq!(of(spot), want);
    }
}
