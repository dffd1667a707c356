//! The evaluation's gather phase: the closed candles (only those a fed strategy has not seen),
//! the strategy fed and its decision, and what the decision reads from the stored state.

use super::*;

/// What a decision reads from the stored state besides the candles and `now`.
pub(super) struct DecisionInputs {
    /// The strategy's position on the symbol (any status).
    pub(super) position: Option<Versioned<Position>>,
    /// Open or pending positions of the strategy on the account (concurrency limits).
    pub(super) open_positions: usize,
    /// The strategy's latest entry on the account (signal intervals).
    pub(super) last_entry_time: Option<i64>,
}

impl DecisionInputs {
    pub(super) fn new(
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

    pub(super) fn open_view(&self) -> Option<PositionView> {
        self.position
            .as_ref()
            .filter(|p| p.value.is_open())
            .map(|p| view(&p.value))
    }
}

/// Move an open position's best price since entry by the closed `candles` (trailing stops and
/// give-back exits); whether it moved.
pub(super) fn track_best(
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

impl Engine {
    /// Fetch candles, build the strategy and decide. `Ok(None)` when the candle is not served yet.
    pub(super) async fn prepare(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        tf: Timeframe,
        open_time: i64,
        now: i64,
    ) -> Result<Option<(Decision, Option<Versioned<Position>>, Price)>, EngineError> {
        let ex = acct.exchange.as_ref();
        let cache_key = (acct.config.id.clone(), s.name.clone(), sym.clone(), tf);
        let build = || {
            strategy::build(&s.name, &s.params, &format!("strategies.{}.params", s.name))
                .map_err(EngineError::from)
        };
        // The candles a cold start fetches (at least the strategy's warm-up).
        let limit =
            |st: &dyn strategy::Strategy| self.config.jobs.history.max(st.warmup() as u32 + 2);
        // A strategy fed up to an earlier candle only needs the candles closed since.
        let mut fed = None;
        if let Some((st, last)) = self.cache.take(&cache_key) {
            // `last == open_time`: it has seen this candle already (a retry, or a backtest's
            // quiet path that handed the candle over): it is fed nothing again.
            if last <= open_time {
                let need = ((open_time - last) / tf.millis()) as u32 + 1;
                match self
                    .fetch_closed(ex, sym, tf, need.max(2), open_time, now)
                    .await?
                {
                    Fetched::Ready(c) if c.first().is_some_and(|f| f.open_time <= last) => {
                        let close = c.last().map(|x| x.close).unwrap_or_default();
                        let fresh: Vec<_> = c.into_iter().filter(|x| x.open_time > last).collect();
                        let limit = limit(st.as_ref()) as usize;
                        fed = Some(match self.cache.slide(&cache_key, &fresh, limit) {
                            // Its window moved on: built again from it, as a cold start would be.
                            Some(window) => (build()?, window, close),
                            None => (st, fresh, close),
                        });
                    }
                    Fetched::Ready(_) => {}
                    Fetched::NotYet { .. } => {
                        self.cache.put(cache_key, st, last);
                        return Ok(None);
                    }
                }
            }
        }
        let (mut strat, candles, last_close) = match fed {
            Some((st, fresh, close)) => (st, fresh, close),
            None => {
                let st = build()?;
                let limit = limit(st.as_ref());
                match self
                    .fetch_closed(ex, sym, tf, limit, open_time, now)
                    .await?
                {
                    Fetched::Ready(c) => {
                        let close = c.last().map(|x| x.close).unwrap_or_default();
                        self.cache.start_window(&cache_key, &c);
                        (st, c, close)
                    }
                    Fetched::NotYet { newest } => {
                        tracing::warn!(symbol = %sym, newest = ?newest, expected = open_time, "newest closed candle missing");
                        return Ok(None);
                    }
                }
            }
        };
        for c in &candles {
            strat.update(c);
        }
        let key = PositionKey {
            account: acct.config.id.clone(),
            strategy: StrategyId::new(&s.name),
            symbol: sym.clone(),
        };
        let all = self.repo.positions(&acct.config.id).await?;
        let last_entry = self.repo.last_entry(&acct.config.id, &key.strategy).await?;
        let mut inputs = DecisionInputs::new(&all, &key, last_entry);
        // Keep the best price stored: a strategy fed only fresh candles relies on it.
        if let Some(p) = inputs.position.as_mut().filter(|p| p.value.is_open()) {
            if track_best(&mut p.value, &candles, tf) {
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
        // A backtest keeps no record of a HOLD (`record_holds`), and with a discarding notifier
        // and the decision log off nothing reads any decision's explanation: skip building it.
        let quick = (!self.timing.record_holds).then(|| strat.decide_action(&ctx));
        let unread = || !self.notifier.enabled() && !tracing::enabled!(tracing::Level::INFO);
        let decision = match quick {
            Some(action) if action == Action::Hold || unread() => Decision {
                action,
                conditions: Vec::new(),
                note: String::new(),
            },
            _ => strat.decide(&ctx),
        };
        self.cache.put(cache_key, strat, open_time);
        Ok(Some((decision, inputs.position, last_close)))
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
