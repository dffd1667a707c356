//! Acting on a decision: what the exchange did since the last sync is recorded first, then the
//! decision is routed to an entry, an exit, a pyramid add, a partial close or a stop move.

use super::*;

impl Engine {
    /// Act on a decision for one held candle: check what the exchange did since the last sync,
    /// then enter, exit, resize or move the stop.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn act(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        open_time: i64,
        now: i64,
        decision: Decision,
        mut position: Option<Versioned<Position>>,
        ref_price: Price,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        let account = &acct.config.id;
        if let Some(p) = position.take_if(|p| p.value.status == PositionStatus::Pending) {
            let ours = ClientId::derive(
                account,
                &p.value.key.strategy,
                sym,
                open_time,
                Intent::Entry,
                0,
            );
            if p.value.entry_client_id != ours.0 {
                return Ok("skipped: an entry is pending confirmation by the sync job".into());
            }
            // This candle's own entry, written by a run that held this claim and never reached
            // Acting (a claim that sent anything is never taken over nor released): its order
            // was never sent, so the record goes and the candle is evaluated afresh.
            self.repo.delete_position(&p.value.key, p.version).await?;
            report.lines.push(format!(
                "{}: dropped the pending entry {ours} of an interrupted run that never sent it",
                p.value.key
            ));
        }
        let mut open = position.filter(|p| p.value.is_open());
        // A stop that fired while the decision holds is recorded now rather than at the next
        // sync, so nothing reads the position as open in between. Only the jobs look (one
        // request); a backtest syncs after every candle anyway.
        if decision.action == Action::Hold && self.timing.record_holds {
            if let Some(p) = open.take() {
                let ex = acct.exchange.as_ref();
                if !self.protection_fired(ex, &p.value, &HashSet::new()).await? {
                    open = Some(p);
                } else {
                    self.record_exchange_close(ex, &p, now).await?;
                    return Ok(format!(
                        "hold; the protective order had closed the position: {}",
                        decision.conditions_line()
                    ));
                }
            }
        }
        // The exchange may have closed it since the last sync (its stop fired at this close):
        // record that close instead of sending an exit the exchange would reject.
        if decision.action != Action::Hold {
            if let Some(mut p) = open.take() {
                let ex = acct.exchange.as_ref();
                if self.protection_fired(ex, &p.value, &HashSet::new()).await? {
                    self.record_exchange_close(ex, &p, now).await?;
                } else {
                    // A take-profit step or trailing stop that filled since the last sync (within
                    // the last minute before this close) is recorded first, as the sync would, so
                    // the decision acts on what is left instead of being skipped.
                    let mut closed = false;
                    if !p.value.exit_orders.is_empty() {
                        let live = ex.open_algo_orders(Some(sym)).await?;
                        let ids: HashSet<&str> =
                            live.iter().map(|a| a.client_algo_id.as_str()).collect();
                        closed = self
                            .record_exit_fills(ex, &mut p, &ids, now, report)
                            .await?;
                    }
                    if !closed {
                        if !self.shares_match(ex, &p.value).await? {
                            return Ok(format!(
                                "skipped {}: the exchange's {sym} position differs from the stored shares; the sync job reconciles it first",
                                crate::signals::action_label(&decision.action)
                            ));
                        }
                        open = Some(p);
                    }
                }
            }
        }
        Ok(match decision.action.clone() {
            Action::Hold => format!("hold ({}) {}", decision.note, decision.conditions_line()),
            Action::PartialClose {
                fraction,
                stage,
                reason,
            } => match open {
                Some(p) => {
                    self.partial_close(acct, p, fraction, stage, &reason, now, report)
                        .await?
                }
                None => "hold (partial close while flat)".into(),
            },
            Action::Pyramid { fraction, stage } => match open {
                Some(p) => {
                    self.pyramid(acct, s, p, fraction, stage, ref_price, now, report, ledger)
                        .await?
                }
                None => "hold (pyramid while flat)".into(),
            },
            Action::MoveStop { price, reason } => match open {
                Some(p) => self.move_stop(acct, p, price, &reason, now, report).await?,
                None => "hold (stop move while flat)".into(),
            },
            Action::Close { reason } => match open {
                Some(p) => {
                    self.exit(acct.exchange.as_ref(), p, &reason, open_time, now, report)
                        .await?;
                    format!("closed: {reason}")
                }
                None => "hold (close signal while flat)".into(),
            },
            Action::Open {
                side,
                stop,
                take_profit,
            }
            | Action::Reverse {
                side,
                stop,
                take_profit,
            } => {
                let reverse = matches!(decision.action, Action::Reverse { .. });
                match open {
                    Some(_) if !reverse => {
                        return Ok("hold (open signal while already in a position)".into())
                    }
                    Some(p) => {
                        let why = format!("reverse to {side}");
                        self.exit(acct.exchange.as_ref(), p, &why, open_time, now, report)
                            .await?
                    }
                    None => {}
                }
                self.enter(
                    acct,
                    s,
                    sym,
                    side,
                    stop,
                    take_profit,
                    open_time,
                    now,
                    ref_price,
                    &decision,
                    report,
                    ledger,
                )
                .await?
            }
        })
    }
}
