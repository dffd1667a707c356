//! The candle-close evaluation job: every enabled account, its strategies of the timeframe on
//! each of their symbols. Per candle: claim it, gather and decide, act, finish the claim.

use super::*;

impl Engine {
    /// Evaluate the candle of `tf` that closed last at `now`, for every enabled account and every
    /// enabled strategy of that timeframe.
    pub async fn evaluate(&self, tf: Timeframe, now: i64) -> JobReport {
        let open_time = tf.last_closed_open(now);
        self.cache.release_quiet();
        // Accounts share nothing on the exchange or in the store: they are evaluated at once,
        // and their reports joined in configuration order.
        let parts = futures::future::join_all(
            self.accounts
                .iter()
                .filter(|a| a.config.enabled)
                .map(|acct| self.evaluate_account(acct, tf, open_time, now)),
        )
        .await;
        let mut report = JobReport::default();
        for part in parts {
            report.absorb(part);
        }
        self.remember_quiet(tf).await;
        report
    }

    /// One account's part of [`Engine::evaluate`]: each of its strategies of `tf` on each of
    /// their symbols, one after another (shares of one symbol must not interleave).
    pub(super) async fn evaluate_account(
        &self,
        acct: &AccountRuntime,
        tf: Timeframe,
        open_time: i64,
        now: i64,
    ) -> JobReport {
        let mut report = JobReport::default();
        let id = &acct.config.id;
        match self.repo.account_state(id).await {
            Ok(Some(s)) if s.value.paused => {
                report
                    .lines
                    .push(format!("{id}: paused; nothing evaluated"));
                return report;
            }
            Ok(_) => {}
            Err(e) => {
                report.errors.push(format!("{id}: {e}"));
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
                    let part = self
                        .evaluate_item(acct, s, sym, tf, open_time, now, ledger)
                        .await;
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
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn evaluate_item(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        tf: Timeframe,
        open_time: i64,
        now: i64,
        ledger: &MarginLedger,
    ) -> JobReport {
        let mut report = JobReport::default();
        let id = &acct.config.id;
        let tag = || format!("{id}/{}/{sym} {tf} candle {}", s.name, iso(open_time));
        match self
            .evaluate_one(acct, s, sym, tf, open_time, now, &mut report, ledger)
            .await
        {
            // Empty: a HOLD that leaves no record (see `EngineTiming::record_holds`).
            Ok(line) if line.is_empty() => {}
            Ok(line) => report.lines.push(format!("{}: {line}", tag())),
            Err(e) => {
                if let EngineError::Exchange(ExchangeError::Retryable {
                    retry_after: Some(d),
                    ..
                }) = &e
                {
                    report.retry_after = report.retry_after.max(Some(*d));
                }
                report.errors.push(format!("{}: {e}", tag()))
            }
        }
        report
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn evaluate_one(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        tf: Timeframe,
        open_time: i64,
        now: i64,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        let account = &acct.config.id;
        let sid = StrategyId::new(&s.name);
        let run = RunKey {
            account: account.clone(),
            strategy: sid.clone(),
            symbol: sym.clone(),
            tf,
            open_time,
        };
        // The jobs claim the candle before anything else; a backtest decides first and claims
        // only candles that act (a HOLD changes nothing, so it needs no marker).
        let early = self.timing.record_holds;
        let mut claimed = None;
        if early {
            match self.claim(acct, &run, now).await? {
                Ok(c) => claimed = Some(c),
                Err(line) => return Ok(line),
            }
        }
        // Until an order is sent, a failure gives the candle back so a retry can evaluate it.
        let prepared = self.prepare(acct, s, sym, tf, open_time, now).await;
        if !early {
            if let Ok(Some((d, _, _))) = &prepared {
                if d.action == Action::Hold {
                    return Ok(String::new());
                }
            }
            if prepared.is_ok() {
                match self.claim(acct, &run, now).await? {
                    Ok(c) => claimed = Some(c),
                    Err(line) => return Ok(line),
                }
            }
        }
        let prepared = match prepared {
            Ok(x) => x,
            Err(e) => {
                if let Some(c) = &claimed {
                    self.release_claim(c).await;
                }
                return Err(e);
            }
        };
        let Some((decision, position, ref_price)) = prepared else {
            let why = format!(
                "skipped: the exchange has not served the closed candle {} yet (not evaluating a stale candle)",
                iso(open_time)
            );
            self.notify(
                account,
                Priority::Medium,
                "skipped",
                || notices::blocked("skip", account, &s.name, sym, open_time, &why),
                now,
            )
            .await;
            return Ok(match claimed {
                Some(c) => self.finish_claim(&c, why).await,
                None => why,
            });
        };
        tracing::info!(account = %account, strategy = %s.name, symbol = %sym, action = ?decision.action, conditions = %decision.conditions_line(), "decision");
        // The claim travels with the report: the first order moves it to Acting (`before_send`).
        report.claim = claimed;
        let result = self
            .act(
                acct, s, sym, open_time, now, decision, position, ref_price, report, ledger,
            )
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
}
