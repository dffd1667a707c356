//! The evaluation's gather phase: the closed candles (only those a fed strategy has not seen),
//! the strategy fed and its decision, and what the decision reads from the stored state.

use super::*;

/// What a decision reads from the stored state besides the candles and `now`.
pub(crate) struct DecisionInputs {
    /// The strategy's position on the symbol (any status).
    pub(crate) position: Option<Versioned<Position>>,
    /// Open or pending positions of the strategy on the account (concurrency limits).
    pub(crate) open_positions: usize,
    /// The strategy's latest entry on the account (signal intervals).
    pub(crate) last_entry_time: Option<i64>,
}

impl DecisionInputs {
    pub(crate) fn new(
        all: &[Versioned<Position>],
        key: &PositionKey,
        last_entry: Option<i64>,
    ) -> DecisionInputs {
        let position = all.iter().find(|p| p.value.key == *key).cloned();
        let mine = all
            .iter()
            .filter(|p| p.value.key.strategy == key.strategy && !p.value.is_manual);
        let open_positions = mine
            .clone()
            .filter(|p| p.value.is_open() || p.value.status == PositionStatus::Pending)
            .count();
        let mut last_entry_time = mine.map(|p| p.value.opened_at).max();
        if let Some(t) = last_entry {
            last_entry_time = Some(last_entry_time.map_or(t, |x| x.max(t)));
        }
        DecisionInputs {
            position,
            open_positions,
            last_entry_time,
        }
    }

    pub(crate) fn open_view(&self) -> Option<PositionView> {
        self.position
            .as_ref()
            .filter(|p| p.value.is_open())
            .map(|p| view(&p.value))
    }
}

/// Move an open position's best price since entry by the closed `candles` (trailing stops and
/// give-back exits); whether it moved.
pub(crate) fn track_best(
    p: &mut Position,
    candles: &[crate::domain::Candle],
    tf: Timeframe,
) -> bool {
    let since = p.opened_at;
    let long = p.side == Side::Long;
    let mut moved = false;
    // One comparison per candle (a backtest asks on every candle it holds). Ties keep what
    // `max`/`min` keep: the later high, the earlier low.
    for c in candles.iter().filter(|c| c.open_time + tf.millis() > since) {
        let x = if long { c.high } else { c.low };
        let (take, beyond) = match p.best_price {
            None => (true, true),
            Some(b) => match (long, x.cmp(&b)) {
                (true, o) => (o.is_ge(), o.is_gt()),
                (false, o) => (o.is_lt(), o.is_lt()),
            },
        };
        if take {
            p.best_price = Some(x);
            moved |= beyond;
        }
    }
    moved
}

/// Outcome of fetching candles for one evaluation.
pub(super) enum Fetched {
    Ready(Vec<crate::domain::Candle>),
    /// The exchange has not served the newest closed candle: never evaluate a stale one.
    NotYet {
        newest: Option<i64>,
    },
}

/// A decision gathered for one candle: the decision, the strategy's stored position on the
/// symbol (any status), and the price to size against (the candle's close).
pub(crate) type Prepared = (Decision, Option<Versioned<Position>>, Price);

impl Engine {
    /// The evaluation's gather phase and the strategy's decision: the strategy fed up to the
    /// candle, what the decision reads from the store, then the decision. `Ok(None)` when the
    /// candle is not served yet.
    pub(crate) async fn prepare<R: CandleRunner>(
        &self,
        it: Item<'_>,
        runner: &R,
    ) -> Result<Option<Prepared>, EngineError> {
        let cache_key = (
            it.acct.config.id.clone(),
            it.s.name.clone(),
            it.sym.clone(),
            it.tf,
        );
        let Some((mut strat, candles, last_close)) =
            self.fed_strategy(it, &cache_key, runner).await?
        else {
            return Ok(None);
        };
        for c in &candles {
            strat.update(c);
        }
        let (account, now) = (&it.acct.config.id, it.now);
        let key = it.position_key();
        let all = self.repo.positions(account).await?;
        let last_entry = self.repo.last_entry(account, &key.strategy).await?;
        let mut inputs = DecisionInputs::new(&all, &key, last_entry);
        // Keep the best price stored: a strategy fed only fresh candles relies on it.
        if let Some(p) = inputs.position.as_mut().filter(|p| p.value.is_open()) {
            if track_best(&mut p.value, &candles, it.tf) {
                p.value.updated_at = now;
                p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
            }
        }
        let v = inputs.open_view();
        let ctx = strategy::Context {
            position: v.as_ref(),
            now,
            last_entry_time: inputs.last_entry_time,
            open_positions: inputs.open_positions,
        };
        let decision = runner.decide(self, strat.as_ref(), &ctx);
        self.cache.put(cache_key, strat, it.open_time);
        Ok(Some((decision, inputs.position, last_close)))
    }

    /// The strategy fed up to the candle being evaluated, with the candles it has still to be
    /// fed and the newest close: from the cache (fetching only the candles closed since it was
    /// fed, or rebuilt from its window when that moved on) or built cold from `history`
    /// candles. `Ok(None)` when the exchange has not served the candle yet.
    async fn fed_strategy<R: CandleRunner>(
        &self,
        it: Item<'_>,
        cache_key: &CacheKey,
        runner: &R,
    ) -> Result<Option<(Box<dyn strategy::Strategy>, Vec<Candle>, Price)>, EngineError> {
        let (ex, sym, tf, open_time) = (it.acct.exchange.as_ref(), it.sym, it.tf, it.open_time);
        let build = || {
            let s = it.s;
            strategy::build(&s.name, &s.params, &format!("strategies.{}.params", s.name))
                .map_err(EngineError::from)
        };
        // The candles a cold start fetches (at least the strategy's warm-up).
        let limit =
            |st: &dyn strategy::Strategy| self.config.jobs.history.max(st.warmup() as u32 + 2);
        // A strategy fed up to an earlier candle only needs the candles closed since.
        // `last == open_time`: it has seen this candle already (a retry, or a backtest's quiet
        // path that handed the candle over): it is fed nothing again.
        if let Some((st, last)) = self.cache.take(cache_key).filter(|(_, l)| *l <= open_time) {
            let need = ((open_time - last) / tf.millis()) as u32 + 1;
            match self
                .fetch_closed(ex, sym, tf, need.max(2), open_time, it.now)
                .await?
            {
                Fetched::Ready(c) if c.first().is_some_and(|f| f.open_time <= last) => {
                    let close = c.last().map(|x| x.close).unwrap_or_default();
                    let fresh: Vec<_> = c.into_iter().filter(|x| x.open_time > last).collect();
                    let limit = limit(st.as_ref()) as usize;
                    return Ok(Some(
                        match runner.slide(&self.cache, cache_key, &fresh, limit) {
                            // Its window moved on: built again from it, as a cold start would be.
                            Some(window) => (build()?, window, close),
                            None => (st, fresh, close),
                        },
                    ));
                }
                Fetched::Ready(_) => {}
                Fetched::NotYet { .. } => {
                    self.cache.put(cache_key.clone(), st, last);
                    return Ok(None);
                }
            }
        }
        let st = build()?;
        let limit = limit(st.as_ref());
        match self
            .fetch_closed(ex, sym, tf, limit, open_time, it.now)
            .await?
        {
            Fetched::Ready(c) => {
                let close = c.last().map(|x| x.close).unwrap_or_default();
                runner.start_window(&self.cache, cache_key, &c);
                Ok(Some((st, c, close)))
            }
            Fetched::NotYet { newest } => {
                tracing::warn!(symbol = %sym, newest = ?newest, expected = open_time, "newest closed candle missing");
                Ok(None)
            }
        }
    }

    pub(super) async fn fetch_closed(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        tf: Timeframe,
        limit: u32,
        open_time: i64,
        now: i64,
    ) -> Result<Fetched, EngineError> {
        let mut newest = None;
        for attempt in 0..self.timing.kline_attempts.max(1) {
            if attempt > 0 && !self.timing.kline_pause.is_zero() {
                tokio::time::sleep(self.timing.kline_pause).await;
            }
            let mut candles = ex.closed_klines(sym, tf, limit, now).await?;
            // Never look past the candle being evaluated, whatever the exchange served.
            candles.retain(|c| c.open_time <= open_time);
            newest = candles.last().map(|c| c.open_time);
            if newest == Some(open_time) {
                return Ok(Fetched::Ready(candles));
            }
        }
        Ok(Fetched::NotYet { newest })
    }
}
