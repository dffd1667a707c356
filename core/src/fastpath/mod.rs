//! The research fast path: the only place in Albra that skips work for speed. Backtests and
//! walk-forward use it; the jobs (Lambda, cron, the scheduler, `albra replay`) never do, and the
//! live engine ([`crate::jobs`]) has no field, branch or method that exists for it. Backtests run
//! the same engine, rules and state layout as the jobs (nothing is implemented twice); these
//! shortcuts are valid only for a process that owns all of its state.
//!
//! What it holds, and why each shortcut is safe:
//! - **Decide first, claim only what acts** ([`Research`]): the jobs claim every candle before
//!   deciding, so each decision leaves a run marker (their audit trail). A backtest decides
//!   first and claims only a candle whose decision is not HOLD. A HOLD changes nothing else, so
//!   the trades, orders and state are the same; only the markers nobody reads in a backtest are
//!   missing, and the decision's explanation is built only when someone reads it. Its
//!   strategies are fed every candle since the first and never rebuilt from a `history` window
//!   (a job's cache rebuilds them so a warm process decides as a cold one).
//! - **The typed in-process state and its write marks** ([`typed_state`]): a backtest's state is
//!   kept decoded in a [`Table`](crate::store::memory::Table) instead of JSON bodies, keys are
//!   built in per-thread buffers, and the account state and strategy stats are folded in place.
//!   It is a [`StateBackend`](crate::state::StateBackend), the port every store implements, and
//!   keeps the stores' rules: every write is conditional with the same versions and conflicts,
//!   and callers use the same [`StateRepo`](crate::state::StateRepo) methods on any backend
//!   (`update_account_state`, `update_strategy_stats`). A backtest builds its repo over it and
//!   hands the same `Arc` to [`FastPath`], which alone reads its marks. `core/tests/state_backends.rs` runs random
//!   sequences of every write and read on both and requires equal results, versions and reads.
//!   Every write that can change what an evaluation reads moves a counter
//!   ([`WriteMarks`](typed_state::WriteMarks)); a key/value store has none, so the jobs never
//!   skip anything.
//! - **The quiet-candle memo** ([`FastPath::evaluate_quiet`], `quiet.rs`): what the last full
//!   evaluation of a backtest's single (account, strategy, symbol) read, reused for the candles
//!   after it while the write marks say none of those reads would differ.
//!   `core/tests/quiet_path.rs` requires it to equal full evaluations of every candle.
//! - **All-equity sizing** ([`all_equity_qty`]): `--risk off` sizes every entry with all equity
//!   and places no protective orders ([`crate::jobs::Sizing::AllEquity`]), the reference
//!   backtest's rules.
//!
//! `tests/tests/differential.rs` shows that a backtest, `albra replay` and the real job binaries
//! make the same decisions, orders and trades on the same candles.

mod quiet;
pub mod typed_state;

use crate::domain::Candle;
use crate::domain::Timeframe;
use crate::jobs::{
    CacheKey, CandleRunner, Engine, EngineError, Item, JobReport, MarginLedger, Outcome,
    StrategyCache,
};
use crate::strategy::{self, Action, Decision};
use quiet::Quiet;
use rust_decimal::Decimal;
use std::sync::{Arc, Mutex};
use typed_state::{TypedState, WriteMarks};

/// A research run's evaluations over an [`Engine`]: [`Research`] per candle, and the
/// quiet-candle memo between candles when it has the state's write marks.
pub struct FastPath<'e> {
    engine: &'e Engine,
    /// The engine's state, whose write marks the memo checks (`None`: no memo).
    state: Option<Arc<TypedState>>,
    memo: Mutex<Option<Box<Quiet>>>,
}

impl<'e> FastPath<'e> {
    /// `state`: the [`TypedState`] the engine's repo is built over, for the quiet-candle memo;
    /// `None` keeps no memo (`--full-jobs`, which checks it). It must be the engine's own: the
    /// memo trusts its marks to count every write the engine makes.
    pub fn new(engine: &'e Engine, state: Option<Arc<TypedState>>) -> Self {
        FastPath {
            engine,
            state,
            memo: Mutex::new(None),
        }
    }

    /// The write marks of the engine's state, when the memo is kept.
    fn marks(&self) -> Option<WriteMarks> {
        self.state.as_ref().map(|s| s.marks())
    }

    /// [`Engine::evaluate`] the research way ([`Research`]), remembering what it read for the
    /// quiet candles after it.
    pub async fn evaluate(&self, tf: Timeframe, now: i64) -> JobReport {
        // The memo's strategy goes back to the cache: the full evaluation feeds it from there.
        if let Some(q) = self.take_quiet() {
            self.hand_back(q);
        }
        let report = self.engine.evaluate_with(tf, now, &Research).await;
        self.remember(tf).await;
        report
    }

    fn take_quiet(&self) -> Option<Box<Quiet>> {
        self.memo.lock().expect("quiet memo").take()
    }

    fn keep_quiet(&self, q: Box<Quiet>) {
        *self.memo.lock().expect("quiet memo") = Some(q);
    }

    /// Drop a memo taken out, its strategy back in the engine's cache.
    fn hand_back(&self, q: Box<Quiet>) {
        if let Quiet {
            key,
            fed: Some((st, last)),
            ..
        } = *q
        {
            self.engine.cache.put(key, st, last);
        }
    }
}

/// The research way to evaluate a candle: decide first, and claim the candle only when the
/// decision acts (a HOLD leaves no run marker and is not acted on).
pub struct Research;

impl CandleRunner for Research {
    async fn run<'a>(
        &'a self,
        engine: &'a Engine,
        it: Item<'a>,
        report: &'a mut JobReport,
        ledger: &'a MarginLedger,
    ) -> Result<Outcome, EngineError> {
        let prepared = engine.prepare(it, self).await?;
        if prepared
            .as_ref()
            .is_some_and(|(d, _, _)| d.action == Action::Hold)
        {
            return Ok(Outcome::Unrecorded);
        }
        let claimed = match engine.claim(it.acct, &it.run_key(), it.now).await? {
            Ok(c) => c,
            Err(outcome) => return Ok(outcome),
        };
        engine
            .act_claimed(it, claimed, prepared, report, ledger)
            .await
    }

    /// The decision, explained only when someone reads it: nothing records a research run's
    /// HOLD, and with a discarding notifier and the decision log off nothing reads any
    /// explanation.
    fn decide(
        &self,
        engine: &Engine,
        strat: &dyn strategy::Strategy,
        ctx: &strategy::Context,
    ) -> Decision {
        let action = strat.decide_action(ctx);
        let unread = || !engine.notifier.enabled() && !tracing::enabled!(tracing::Level::INFO);
        if action == Action::Hold || unread() {
            return Decision {
                action,
                conditions: Vec::new(),
                note: String::new(),
            };
        }
        strat.decide(ctx)
    }

    /// No window: a research run feeds its strategies every candle since the first and never
    /// builds them again, so it decides as a job whose history reaches back to the first candle
    /// of its file.
    fn start_window(&self, _: &StrategyCache, _: &CacheKey, _: &[Candle]) {}

    fn slide(
        &self,
        _: &StrategyCache,
        _: &CacheKey,
        _: &[Candle],
        _: usize,
    ) -> Option<Vec<Candle>> {
        None
    }
}

/// An entry's quantity with all equity at `price` (`--risk off`).
pub fn all_equity_qty(equity: Decimal, price: Decimal) -> Decimal {
    equity / price
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_equity_buys_what_the_equity_pays_for() {
        let q = all_equity_qty(Decimal::from(10_000), Decimal::from(40_000));
        assert_eq!(q, Decimal::new(25, 2));
    }
}
