//! Crash adoption: a PENDING entry record resolved by looking its order up (adopt it and place
//! the stop, or drop the record when the exchange never saw the order).

use super::*;

impl Engine {
    pub(super) async fn resolve_pending(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let pos = v.value.clone();
        let account = &pos.key.account;
        match ex
            .order_by_client_id(&pos.key.symbol, &pos.entry_client_id)
            .await?
        {
            Some(o) if o.status.is_final() && !o.executed_qty.is_zero() => {
                let filters = ex.symbol_filters(&pos.key.symbol).await?;
                // Keep the planned stop distance relative to the actual fill.
                let shift = o.avg_price.0 - pos.entry_price.0;
                let mut p = pos.clone();
                p.qty = o.executed_qty;
                p.entry_price = o.avg_price;
                p.best_price = Some(o.avg_price);
                p.stop_loss = pos
                    .stop_loss
                    .map(|s| orders::stop_price(&filters, p.side, Price(s.0 + shift)));
                p.take_profit = pos
                    .take_profit
                    .map(|s| orders::target_price(&filters, p.side, Price(s.0 + shift)));
                p.entry_fee = ex
                    .user_trades(&p.key.symbol, p.opened_at - 60_000)
                    .await
                    .map(|ts| {
                        Notional(
                            ts.iter()
                                .filter(|t| t.order_id == o.order_id)
                                .map(|t| t.commission.0)
                                .sum(),
                        )
                    })
                    .unwrap_or_default();
                p.status = PositionStatus::Active;
                p.updated_at = now;
                // The stop may already exist if the crash came after it was placed.
                let mut protection = Protection::Placed;
                if let Some(stop_id) = self.existing_stop(ex, &p).await? {
                    p.stop_client_id = Some(stop_id);
                } else {
                    let others = self.repo.positions(account).await?;
                    protection = self
                        .protect(ex, &mut p, &filters, &others, now, report)
                        .await;
                }
                if let Protection::Failed(why) = &protection {
                    report.errors.push(unprotected(&p, why));
                }
                // The same deterministic ids as the interrupted run: exits it placed are found.
                if let Some(plan) = self.exit_plan(&p) {
                    let others = self.repo.positions(account).await?;
                    self.reconcile_exits(ex, &mut p, &filters, &others, &plan, None, now, report)
                        .await?;
                }
                v.version = self.repo.save_position(&p, Some(v.version)).await?;
                self.repo
                    .record_entry(account, &p.key.strategy, p.opened_at)
                    .await?;
                v.value = p.clone();
                self.notify(
                    account,
                    Priority::High,
                    "adopted",
                    || notices::adopted_pending(&p),
                    now,
                )
                .await;
                if let Protection::Passed(level) = protection {
                    self.close_passed_stop(ex, v.clone(), level, now, report)
                        .await?;
                    v.value.status = PositionStatus::Closed;
                }
            }
            Some(o) if o.status.is_final() => {
                self.repo.delete_position(&pos.key, v.version).await?;
                v.value.status = PositionStatus::Closed;
                self.notify(
                    account,
                    Priority::Medium,
                    "entry_dropped",
                    || {
                        notices::entry_dropped(
                            &pos,
                            &format!("ended {:?} without a fill", o.status),
                        )
                    },
                    now,
                )
                .await;
            }
            Some(_) => {}
            None => {
                let age = now - pos.updated_at;
                if age > self.config.jobs.pending_timeout_secs as i64 * 1000 {
                    self.repo.delete_position(&pos.key, v.version).await?;
                    v.value.status = PositionStatus::Closed;
                    self.notify(
                        account,
                        Priority::Medium,
                        "entry_dropped",
                        || {
                            notices::entry_dropped(
                                &pos,
                                "never reached the exchange; intent dropped",
                            )
                        },
                        now,
                    )
                    .await;
                }
            }
        }
        Ok(())
    }
}
