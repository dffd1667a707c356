//! The candle-close evaluation job: every enabled account, its strategies of the timeframe on
//! each of their symbols. Per candle, in phases: claim it, gather and decide ([`Engine::prepare`]),
//! plan and apply ([`Engine::act`]), then record the outcome on the claim.

use super::*;

/// How one candle of one strategy on one symbol is evaluated: the jobs' way (claim the candle,
/// then decide and act: [`Engine::evaluate`]) or the research fast path's
/// ([`crate::fastpath`]: decide first, claim only a candle that acts).
///
/// Dispatched statically (each runner's evaluation is its own code, no boxed future per candle).
pub(crate) trait CandleRunner: Sync {
    fn run<'a>(
        &'a self,
        engine: &'a Engine,
        it: Item<'a>,
        report: &'a mut JobReport,
        ledger: &'a MarginLedger,
    ) -> impl std::future::Future<Output = Result<Outcome, EngineError>> + Send + 'a;

    /// The strategy's decision once fed: the jobs explain every condition it checked (their
    /// report and notices show it).
    fn decide(
        &self,
        _engine: &Engine,
        strat: &dyn strategy::Strategy,
        ctx: &strategy::Context,
    ) -> Decision {
        strat.decide(ctx)
    }

    /// Remember the candles a strategy was just built from (its window, [`StrategyCache`]).
    fn start_window(&self, cache: &StrategyCache, k: &CacheKey, candles: &[Candle]) {
        cache.start_window(k, candles);
    }

    /// Add `fresh` to the strategy's window: `Some(window)` when it must be built again from it,
    /// as a cold start would build it ([`StrategyCache`]).
    fn slide(
        &self,
        cache: &StrategyCache,
        k: &CacheKey,
        fresh: &[Candle],
        limit: usize,
    ) -> Option<Vec<Candle>> {
        cache.slide(k, fresh, limit)
    }
}

/// The jobs' way: every candle claimed before anything else, so its run marker is the audit
/// trail of every decision, HOLD included.
struct Jobs;

impl CandleRunner for Jobs {
    async fn run<'a>(
        &'a self,
        engine: &'a Engine,
        it: Item<'a>,
        report: &'a mut JobReport,
        ledger: &'a MarginLedger,
    ) -> Result<Outcome, EngineError> {
        let claimed = match engine.claim(it.acct, &it.run_key(), it.now).await? {
            Ok(c) => c,
            Err(outcome) => return Ok(outcome),
        };
        // Until an order is sent, a failure gives the candle back so a retry can evaluate it.
        let prepared = match engine.prepare(it, self).await {
            Ok(p) => p,
            Err(e) => {
                engine.release_claim(&claimed).await;
                return Err(e);
            }
        };
        engine
            .act_claimed(it, claimed, prepared, report, ledger)
            .await
    }
}

impl Engine {
    /// Evaluate the candle of `tf` that closed last at `now`, for every enabled account and every
    /// enabled strategy of that timeframe.
    pub async fn evaluate(&self, tf: Timeframe, now: i64) -> JobReport {
        self.evaluate_with(tf, now, &Jobs).await
    }

    /// [`Engine::evaluate`] with each candle evaluated by `runner`.
    pub(crate) async fn evaluate_with<R: CandleRunner>(
        &self,
        tf: Timeframe,
        now: i64,
        runner: &R,
    ) -> JobReport {
        let open_time = tf.last_closed_open(now);
        // Accounts share nothing on the exchange or in the store: they are evaluated at once,
        // and their reports joined in configuration order.
        let parts = futures::future::join_all(
            self.accounts
                .iter()
                .filter(|a| a.config.enabled)
                .map(|acct| self.evaluate_account(acct, tf, open_time, now, runner)),
        )
        .await;
        let mut report = JobReport::default();
        for part in parts {
            report.absorb(part);
        }
        report
    }

    /// One account's part of [`Engine::evaluate`]: each of its strategies of `tf` on each of
    /// their symbols, one after another (shares of one symbol must not interleave).
    async fn evaluate_account<R: CandleRunner>(
        &self,
        acct: &AccountRuntime,
        tf: Timeframe,
        open_time: i64,
        now: i64,
        runner: &R,
    ) -> JobReport {
        let mut report = JobReport::default();
        let id = &acct.config.id;
        match self.repo.account_state(id).await {
            Ok(Some(s)) if s.value.paused => {
                report.note(format!("{id}: paused; nothing evaluated"));
                return report;
            }
            Ok(_) => {}
            Err(e) => {
                report.errors.push(JobFailure::step(id, e));
                return report;
            }
        }
        let items: Vec<(&StrategyConfig, &Symbol)> = self
            .config
            .account_strategies(&acct.config)
            .filter(|s| s.timeframe == tf)
            .flat_map(|s| s.symbols.iter().map(move |sym| (s, sym)))
            .collect();
        // The symbols are worked at once, the strategies of one symbol one after another in
        // configuration order (their shares of the symbol's net must not interleave); entries
        // and pyramid adds are sized one at a time (`MarginLedger`). Lines keep that order.
        let mut groups: Vec<(&Symbol, Vec<usize>)> = Vec::new();
        for (i, (_, sym)) in items.iter().enumerate() {
            match groups.iter_mut().find(|(g, _)| g == sym) {
                Some((_, of_symbol)) => of_symbol.push(i),
                None => groups.push((sym, vec![i])),
            }
        }
        let ledger = MarginLedger::default();
        let parts = futures::future::join_all(groups.iter().map(|(_, of_symbol)| {
            let (items, ledger) = (&items, &ledger);
            async move {
                let mut out = Vec::with_capacity(of_symbol.len());
                for &i in of_symbol {
                    let (s, sym) = items[i];
                    let it = Item {
                        acct,
                        s,
                        sym,
                        tf,
                        open_time,
                        now,
                    };
                    let part = self.evaluate_item(it, ledger, runner).await;
                    out.push((i, part));
                }
                out
            }
        }))
        .await;
        let mut parts: Vec<(usize, JobReport)> = parts.into_iter().flatten().collect();
        parts.sort_by_key(|(i, _)| *i);
        for (_, part) in parts {
            report.absorb(part);
        }
        report
    }

    /// One strategy on one symbol of [`Engine::evaluate_account`], with its own report.
    async fn evaluate_item<R: CandleRunner>(
        &self,
        it: Item<'_>,
        ledger: &MarginLedger,
        runner: &R,
    ) -> JobReport {
        let mut report = JobReport::default();
        let tag = || {
            let (id, s, sym, tf) = (&it.acct.config.id, it.s, it.sym, it.tf);
            format!("{id}/{}/{sym} {tf} candle {}", s.name, iso(it.open_time))
        };
        match runner.run(self, it, &mut report, ledger).await {
            Ok(Outcome::Unrecorded) => {}
            Ok(outcome) => report.lines.push(Line::Candle {
                candle: it.run_key(),
                outcome,
            }),
            Err(e) => {
                if let EngineError::Exchange(ExchangeError::Retryable {
                    retry_after: Some(d),
                    ..
                }) = &e
                {
                    report.retry_after = report.retry_after.max(Some(*d));
                }
                report.errors.push(JobFailure::step(tag(), e))
            }
        }
        report
    }

    /// Act on a claimed candle's decision ([`Engine::act`]) and record the outcome on the claim;
    /// `prepared` is `None` when the exchange has not served the candle.
    pub(crate) async fn act_claimed(
        &self,
        it: Item<'_>,
        claimed: HeldClaim,
        prepared: Option<Prepared>,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<Outcome, EngineError> {
        let Some((decision, position, ref_price)) = prepared else {
            return Ok(self.skip_unserved(it, claimed).await);
        };
        tracing::info!(account = %it.acct.config.id, strategy = %it.s.name, symbol = %it.sym, action = ?decision.action, conditions = %decision.conditions_line(), "decision");
        // The claim travels with the report: the first order moves it to Acting (`before_send`).
        report.claim = Some(claimed);
        let result = self
            .act(it, decision, position, ref_price, report, ledger)
            .await;
        let claim = report.claim.take().expect("claimed before acting");
        match result {
            Ok(outcome) => Ok(self.finish_claim(&claim, outcome).await),
            Err(e) => {
                // Nothing sent: give the candle back for a retry. Once Acting, the marker stays
                // and the sync resolves what was sent.
                if !claim.acting {
                    self.release_claim(&claim).await;
                }
                Err(e)
            }
        }
    }

    /// The exchange has not served the candle: tell the trader, and record it on the claim.
    async fn skip_unserved(&self, it: Item<'_>, claimed: HeldClaim) -> Outcome {
        let (account, open_time) = (&it.acct.config.id, it.open_time);
        let why = format!(
            "skipped: the exchange has not served the closed candle {} yet (not evaluating a stale candle)",
            iso(open_time)
        );
        self.notify(
            account,
            Priority::Medium,
            "skipped",
            || notices::blocked("skip", account, &it.s.name, it.sym, open_time, &why),
            it.now,
        )
        .await;
        self.finish_claim(&claimed, Outcome::Skipped(why)).await
    }
}

/// One strategy on one symbol at one candle close: what every phase of an evaluation works on.
#[derive(Clone, Copy)]
pub(crate) struct Item<'a> {
    pub acct: &'a AccountRuntime,
    pub s: &'a StrategyConfig,
    pub sym: &'a Symbol,
    pub tf: Timeframe,
    /// Open time of the candle being evaluated (the one that closed last at `now`).
    pub open_time: i64,
    pub now: i64,
}

impl Item<'_> {
    pub(crate) fn run_key(&self) -> RunKey {
        RunKey {
            account: self.acct.config.id.clone(),
            strategy: StrategyId::new(&self.s.name),
            symbol: self.sym.clone(),
            tf: self.tf,
            open_time: self.open_time,
        }
    }

    pub(super) fn position_key(&self) -> PositionKey {
        PositionKey {
            account: self.acct.config.id.clone(),
            strategy: StrategyId::new(&self.s.name),
            symbol: self.sym.clone(),
        }
    }
}
