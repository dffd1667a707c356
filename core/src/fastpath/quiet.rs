//! The quiet-candle memo: what a backtest's last full evaluation of its single (account,
//! strategy, symbol) read, kept so that the candles after it that decide HOLD are decided on
//! those reads without asking the exchange or the store again. It is safe because the typed
//! in-process state's write marks say when any of those reads would differ, and because a
//! research run keeps no record of a HOLD ([`Research`]). `core/tests/quiet_path.rs` checks it
//! against `--full-jobs`, and `tests/tests/differential.rs` against the real jobs.

use super::typed_state::WriteMarks;
use super::*;
use crate::config::StrategyConfig;
use crate::domain::{Candle, PositionKey, StrategyId, Symbol, Timeframe};
use crate::jobs::{track_best, AccountRuntime, CacheKey, DecisionInputs, Fed};
use crate::ports::StoreError;
use crate::strategy::{self, Action};

/// What a backtest's last full evaluation of its single (account, strategy, symbol) read from the
/// state, with the strategy it fed: the shortcut for the candles after it. The reads stay valid
/// while the typed state's write marks for them are unchanged.
pub(crate) struct Quiet {
    pub(super) key: CacheKey,
    pub(super) fed: Option<Fed>,
    pub(super) marks: WriteMarks,
    pub(super) paused: bool,
    pub(super) inputs: DecisionInputs,
}

impl FastPath<'_> {
    /// The only (account, strategy, symbol) evaluated at `tf`, if there is exactly one (a
    /// backtest's shape).
    fn single_target(&self, tf: Timeframe) -> Option<(&AccountRuntime, &StrategyConfig, &Symbol)> {
        let mut accounts = self.engine.accounts.iter().filter(|a| a.config.enabled);
        let acct = accounts.next()?;
        if accounts.next().is_some() {
            return None;
        }
        let mut strategies = self
            .engine
            .config
            .account_strategies(&acct.config)
            .filter(|s| s.timeframe == tf);
        let s = strategies.next()?;
        if strategies.next().is_some() {
            return None;
        }
        match s.symbols.as_slice() {
            [sym] => Some((acct, s, sym)),
            _ => None,
        }
    }

    /// After a backtest's full evaluation: keep what the next candle's decision would read, for
    /// [`FastPath::evaluate_quiet`]. Only for the typed in-process state (its write marks tell
    /// when a read would differ) and only when HOLDs leave no record.
    pub(super) async fn remember(&self, tf: Timeframe) {
        let Some(marks) = self.marks() else {
            return;
        };
        let Some((acct, s, sym)) = self.single_target(tf) else {
            return;
        };
        let account = &acct.config.id;
        let key = (account.clone(), s.name.clone(), sym.clone(), tf);
        let Some(fed) = self.engine.cache.take(&key) else {
            return;
        };
        let pkey = PositionKey {
            account: account.clone(),
            strategy: StrategyId::new(&s.name),
            symbol: sym.clone(),
        };
        let reads = async {
            let paused = self
                .engine
                .repo
                .account_state(account)
                .await?
                .is_some_and(|v| v.value.paused);
            let all = self.engine.repo.positions(account).await?;
            let last_entry = self.engine.repo.last_entry(account, &pkey.strategy).await?;
            Ok::<_, StoreError>((paused, DecisionInputs::new(&all, &pkey, last_entry)))
        };
        match reads.await {
            Ok((paused, inputs)) if self.marks() == Some(marks) => {
                self.keep_quiet(Box::new(Quiet {
                    key,
                    fed: Some(fed),
                    marks,
                    paused,
                    inputs,
                }))
            }
            // A read failed (the full evaluation reports it next time) or something wrote meanwhile.
            _ => self.engine.cache.put(key, fed.0, fed.1),
        }
    }

    /// A backtest's shortcut for `candle`, the candle of `tf` that closed last at `now`: when the
    /// state the last full evaluation read is unchanged (see [`Quiet`]), run what
    /// [`FastPath::evaluate`] runs for it — keep the position's best price, feed the strategy,
    /// decide — on those reads, without asking the exchange for the candle it already has.
    ///
    /// `true`: the decision is HOLD and the candle is done; a backtest's full evaluation would
    /// have done exactly this (a HOLD leaves no record there, [`Research`]).
    /// `false`: run [`FastPath::evaluate`]. If the strategy has seen the candle by then, it is not
    /// fed it again, and the best price it moved is already stored.
    pub async fn evaluate_quiet(&self, tf: Timeframe, now: i64, candle: &Candle) -> bool {
        let delay = now - candle.close_time(tf);
        self.evaluate_quiet_run(tf, std::slice::from_ref(candle), delay)
            .await
            == 1
    }

    /// [`FastPath::evaluate_quiet`] for consecutive `candles` of `tf`, each decided `delay` ms after
    /// it closes, with nothing else acting between them (a backtest's stretch where the exchange
    /// has no order that a candle could fill and no risk state is kept): the memo is checked
    /// against the state once, then each candle gets exactly what [`FastPath::evaluate_quiet`]
    /// gives it, except that the best price is saved once, when the run stops, rather than on
    /// each candle that moves it.
    ///
    /// Returns how many candles, from the first, were decided HOLD and are done. The candle after
    /// them, if any, is left to [`FastPath::evaluate`] as a `false` from
    /// [`FastPath::evaluate_quiet`] leaves it.
    pub async fn evaluate_quiet_run(&self, tf: Timeframe, candles: &[Candle], delay: i64) -> usize {
        let Some(marks) = self.marks() else {
            return 0;
        };
        let Some(mut q) = self.take_quiet() else {
            return 0;
        };
        if q.key.3 != tf || marks.positions != q.marks.positions || marks.entries != q.marks.entries
        {
            self.keep_quiet(q);
            return 0;
        }
        if marks.paused != q.marks.paused {
            // Only `paused` is read from the account state.
            match self.engine.repo.account_paused(&q.key.0).await {
                Ok(paused) => {
                    q.paused = paused.unwrap_or(false);
                    q.marks.paused = marks.paused;
                }
                Err(_) => {
                    self.keep_quiet(q);
                    return 0;
                }
            }
        }
        if q.paused {
            self.keep_quiet(q);
            return 0;
        }
        // The best price is kept in the memo as it moves and written once, when the run stops:
        // nothing reads the store between these candles, so the one write leaves what a write
        // on each moving candle would (a trending stretch moves it on thousands of candles).
        // `unsaved`: the first candle whose move is not stored yet.
        let mut unsaved: Option<usize> = None;
        for (done, candle) in candles.iter().enumerate() {
            let now = candle.close_time(tf) + delay;
            let consecutive = q
                .fed
                .as_ref()
                .is_some_and(|(_, last)| last + tf.millis() == candle.open_time);
            if candle.open_time != tf.last_closed_open(now) || !consecutive {
                return self.end_quiet_run(q, unsaved, done, false).await;
            }
            if let Some(p) = q.inputs.position.as_mut().filter(|p| p.value.is_open()) {
                if track_best(&mut p.value, std::slice::from_ref(candle), tf) {
                    p.value.updated_at = now;
                    unsaved.get_or_insert(done);
                }
            }
            let (strat, last) = q.fed.as_mut().expect("checked above");
            strat.update(candle);
            *last = candle.open_time;
            let v = q.inputs.open_view();
            let ctx = strategy::Context {
                position: v.as_ref(),
                now,
                last_entry_time: q.inputs.last_entry_time,
                open_positions: q.inputs.open_positions,
            };
            if strat.decide_action(&ctx) != Action::Hold {
                // The full evaluation decides this candle again, on the stored best price.
                return self.end_quiet_run(q, unsaved, done, true).await;
            }
        }
        self.end_quiet_run(q, unsaved, candles.len(), false).await
    }

    /// Stop a quiet run after its first `done` candles: store the best price if it moved since
    /// candle `unsaved`, then keep the memo for the next run, or (`acting`: the candle after them
    /// is not a HOLD) hand its strategy back for the full evaluation. Returns the candles done.
    ///
    /// A failed write (a backtest's own store has none) drops the memo with the strategy it fed
    /// past the move, and leaves the candles from the first unsaved move to full evaluations,
    /// which read the state afresh and rebuild the strategy.
    async fn end_quiet_run(
        &self,
        mut q: Box<Quiet>,
        unsaved: Option<usize>,
        done: usize,
        acting: bool,
    ) -> usize {
        if let (Some(first), Some(p)) = (unsaved, q.inputs.position.as_mut()) {
            let written = q.marks.positions + 1;
            match self
                .engine
                .repo
                .save_position(&p.value, Some(p.version))
                .await
            {
                Ok(v) if self.marks().map(|m| m.positions) == Some(written) => {
                    p.version = v;
                    q.marks.positions = written;
                }
                _ => return first,
            }
        }
        if acting {
            self.hand_back(q);
        } else {
            self.keep_quiet(q);
        }
        done
    }
}
