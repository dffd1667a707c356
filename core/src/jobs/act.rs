//! Acting on a decision: what the exchange did since the last sync is recorded first, then the
//! decision is routed to an entry, an exit, a pyramid add, a partial close or a stop move.

use super::*;

impl Engine {
    /// Act on a decision for one held candle: record first what the exchange did since the last
    /// sync (gather), route the decision to a step ([`plan::route`]), then carry it out (apply).
    pub(super) async fn act(
        &self,
        it: Item<'_>,
        decision: Decision,
        position: Option<Versioned<Position>>,
        ref_price: Price,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<Outcome, EngineError> {
        let position = match self.drop_interrupted_entry(it, position, report).await? {
            Ok(p) => p,
            Err(outcome) => return Ok(outcome),
        };
        let open = position.filter(|p| p.value.is_open());
        let open = match self.since_last_sync(it, &decision, open, report).await? {
            Ok(open) => open,
            Err(outcome) => return Ok(outcome),
        };
        let (acct, ex, now) = (it.acct, it.acct.exchange.as_ref(), it.now);
        match plan::route(&decision, open) {
            Step::Nothing(why) => Ok(Outcome::Held(why)),
            Step::PartialClose {
                pos,
                fraction,
                stage,
                reason,
            } => {
                self.partial_close(acct, pos, fraction, stage, &reason, now, report)
                    .await
            }
            Step::Pyramid {
                pos,
                fraction,
                stage,
            } => {
                self.pyramid(
                    acct, it.s, pos, fraction, stage, ref_price, now, report, ledger,
                )
                .await
            }
            Step::MoveStop { pos, price, reason } => {
                self.move_stop(acct, pos, price, &reason, now, report).await
            }
            Step::Close { pos, reason } => {
                let why = Why::new(ExitReason::Signal, &reason);
                self.exit(ex, pos, why, it.open_time, now, report).await?;
                Ok(Outcome::Closed { reason })
            }
            Step::Enter { signal, reverse } => {
                if let Some(p) = reverse {
                    let why = format!("reverse to {}", signal.side);
                    let why = Why::new(ExitReason::Signal, &why);
                    self.exit(ex, p, why, it.open_time, now, report).await?;
                }
                self.enter(it, signal, ref_price, &decision, report, ledger)
                    .await
            }
        }
    }

    /// A PENDING record of the strategy on this symbol: this candle's own entry, left by a run
    /// that never sent it, is dropped (`Ok(None)`: evaluated afresh); any other is for the sync
    /// to confirm (`Err(outcome)`: nothing done).
    async fn drop_interrupted_entry(
        &self,
        it: Item<'_>,
        mut position: Option<Versioned<Position>>,
        report: &mut JobReport,
    ) -> Result<Result<Option<Versioned<Position>>, Outcome>, EngineError> {
        let Some(p) = position.take_if(|p| p.value.status == PositionStatus::Pending) else {
            return Ok(Ok(position));
        };
        let v = &p.value;
        let ours = ClientId::derive(
            &it.acct.config.id,
            &v.key.strategy,
            it.sym,
            it.open_time,
            Intent::Entry,
            0,
        );
        if v.entry_client_id != ours.0 {
            return Ok(Err(Outcome::Skipped(
                "skipped: an entry is pending confirmation by the sync job".into(),
            )));
        }
        // This candle's own entry, written by a run that held this claim and never reached
        // Acting (a claim that sent anything is never taken over nor released): its order
        // was never sent, so the record goes and the candle is evaluated afresh.
        self.repo.delete_position(&v.key, p.version).await?;
        report.note(format!(
            "{}: dropped the pending entry {ours} of an interrupted run that never sent it",
            v.key
        ));
        Ok(Ok(None))
    }

    /// What the exchange did to the open position since the last sync, recorded before acting
    /// on it. `Ok(open)`: the position still open after that; `Err(outcome)`: nothing more to do.
    async fn since_last_sync(
        &self,
        it: Item<'_>,
        decision: &Decision,
        open: Option<Versioned<Position>>,
        report: &mut JobReport,
    ) -> Result<Result<Option<Versioned<Position>>, Outcome>, EngineError> {
        let ex = it.acct.exchange.as_ref();
        let Some(mut p) = open else {
            return Ok(Ok(None));
        };
        if decision.action == Action::Hold {
            // A stop that fired while the decision holds is recorded now rather than at the next
            // sync, so nothing reads the position as open in between. (The research fast path
            // acts on no HOLD: a backtest syncs after every candle anyway.)
            if !self.protection_fired(ex, &p.value, &HashSet::new()).await? {
                return Ok(Ok(Some(p)));
            }
            self.record_exchange_close(ex, &p, it.now).await?;
            return Ok(Err(Outcome::Held(format!(
                "hold; the protective order had closed the position: {}",
                decision.conditions_line()
            ))));
        }
        // The exchange may have closed it since the last sync (its stop fired at this close):
        // record that close instead of sending an exit the exchange would reject.
        if self.protection_fired(ex, &p.value, &HashSet::new()).await? {
            self.record_exchange_close(ex, &p, it.now).await?;
            return Ok(Ok(None));
        }
        // A take-profit step or trailing stop that filled since the last sync (within the last
        // minute before this close) is recorded first, as the sync would, so the decision acts
        // on what is left instead of being skipped.
        if !p.value.exit_orders.is_empty() {
            let live = ex.open_algo_orders(Some(it.sym)).await?;
            let ids: HashSet<&str> = live.iter().map(|a| a.client_algo_id.as_str()).collect();
            if self
                .record_exit_fills(ex, &mut p, &ids, it.now, report)
                .await?
            {
                return Ok(Ok(None));
            }
        }
        if !self.shares_match(ex, &p.value).await? {
            return Ok(Err(Outcome::Skipped(format!(
                "skipped {}: the exchange's {} position differs from the stored shares; the sync job reconciles it first",
                crate::signals::action_label(&decision.action),
                it.sym
            ))));
        }
        Ok(Ok(Some(p)))
    }
}
