//! Moving and reshaping protective stops: a strategy's stop move, a resize after the quantity
//! changed, the symbol's stops reshaped when shares come or go, and cancelling what is left.

use super::*;

impl Engine {
    /// Move the protective stop to `price` if that tightens it: the new stop is placed before the
    /// old one is cancelled, so the position is never unprotected.
    pub(super) async fn move_stop(
        &self,
        acct: &AccountRuntime,
        mut p: Versioned<Position>,
        price: Price,
        reason: &str,
        now: i64,
        report: &mut JobReport,
    ) -> Result<String, EngineError> {
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let side = p.value.side;
        let new = orders::stop_price(&filters, side, price);
        let tightens = match (p.value.stop_loss, side) {
            (None, _) => true,
            (Some(old), Side::Long) => new.0 > old.0,
            (Some(old), Side::Short) => new.0 < old.0,
        };
        if !tightens {
            return Ok(format!(
                "hold (stop {new} would not tighten {:?})",
                p.value.stop_loss
            ));
        }
        let old_id = p.value.stop_client_id.clone();
        let old_stop = p.value.stop_loss;
        p.value.stop_loss = Some(new);
        p.value.stop_generation += 1;
        let others = self.repo.positions(&p.value.key.account).await?;
        match self
            .protect(ex, &mut p.value, &filters, &others, now, report)
            .await
        {
            Protection::Placed => {}
            // The trailing level is already behind the price: that exit has happened.
            Protection::Passed(level) => {
                return self.close_passed_stop(ex, p, level, now, report).await;
            }
            Protection::Failed(e) => {
                return Err(EngineError::StopNotMoved {
                    key: p.value.key.clone(),
                    level: new,
                    detail: e.to_string(),
                });
            }
        }
        if let Some(id) = old_id {
            if let Err(e) =
                orders::cancel_algo(ex, &p.value.key.symbol, &id, self.timing.submit).await
            {
                tracing::warn!(client_algo_id = %id, error = %e, "old stop not cancelled");
            }
        }
        p.value.updated_at = now;
        self.repo.save_position(&p.value, Some(p.version)).await?;
        self.notify(
            &p.value.key.account,
            Priority::Medium,
            "stop_moved",
            || notices::stop_moved(&p.value, old_stop, new, reason),
            now,
        )
        .await;
        Ok(format!("stop moved to {new} ({reason})"))
    }

    /// After a size change: a quantity-based (shared-symbol) stop must match the new size, so it
    /// is replaced; a closePosition stop covers any size and stays.
    pub(super) async fn resize_protection(
        &self,
        ex: &dyn Exchange,
        p: &mut Versioned<Position>,
        filters: &SymbolFilters,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        // The ladder and the trailing stop follow the new size and average entry.
        let plan = self.exit_plan(&p.value);
        if let Some(plan) = plan.filter(|x| !x.is_empty() || !p.value.exit_orders.is_empty()) {
            let others = self.repo.positions(&p.value.key.account).await?;
            if self
                .reconcile_exits(ex, &mut p.value, filters, &others, &plan, None, now, report)
                .await?
            {
                p.value.updated_at = now;
                p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
            }
        }
        let Some(id) = p.value.stop_client_id.clone() else {
            return Ok(());
        };
        match ex.algo_by_client_id(&id).await? {
            Some(a) if a.status.is_open() && a.close_position => return Ok(()),
            _ => {}
        }
        p.value.stop_generation += 1;
        let others = self.repo.positions(&p.value.key.account).await?;
        // Not placed: the old stop (of the old size) stays and the sync reshapes it later.
        if self
            .protect(ex, &mut p.value, filters, &others, now, report)
            .await
            == Protection::Placed
        {
            if let Err(e) =
                orders::cancel_algo(ex, &p.value.key.symbol, &id, self.timing.submit).await
            {
                tracing::warn!(client_algo_id = %id, error = %e, "old stop not cancelled");
            }
            p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
        }
        Ok(())
    }

    /// Make every open strategy stop on `sym` match the symbol's sharing: closePosition when one
    /// position holds the symbol, this share's quantity otherwise (reduce-only while all shares
    /// are on one side). A stop of the wrong shape is replaced: the new one first, then the old
    /// one cancelled, so the position is never unprotected.
    pub(super) async fn reshape_stops(
        &self,
        ex: &dyn Exchange,
        account: &AccountId,
        sym: &Symbol,
        known: Option<&[AlgoOrderInfo]>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let all = self.repo.positions(account).await?;
        let on_sym: Vec<&Versioned<Position>> = all
            .iter()
            .filter(|v| &v.value.key.symbol == sym && v.value.is_open())
            .collect();
        let mut filters: Option<SymbolFilters> = None;
        for v in on_sym.iter().filter(|v| !v.value.is_manual) {
            let Some(id) = v.value.stop_client_id.clone() else {
                continue;
            };
            // A missing stop is the sync's check_stop business; only open ones are reshaped.
            let found = match known {
                Some(list) => list.iter().find(|a| a.client_algo_id == id).cloned(),
                None => ex.algo_by_client_id(&id).await?,
            };
            let Some(a) = found.filter(|a| a.status.is_open()) else {
                continue;
            };
            let sharing: Vec<_> = on_sym
                .iter()
                .filter(|o| o.value.key != v.value.key)
                .collect();
            let shared = !sharing.is_empty();
            let reduce_only = shared && sharing.iter().all(|o| o.value.side == v.value.side);
            // A closePosition stop alone on its symbol fits as it is: no trading rules needed.
            if !shared && a.close_position {
                continue;
            }
            if filters.is_none() {
                filters = Some(ex.symbol_filters(sym).await?);
            }
            let f = filters.as_ref().expect("filters just read");
            let want_qty = orders::close_qty(f, v.value.qty);
            if shared
                && !a.close_position
                && a.reduce_only == reduce_only
                && a.qty == Some(want_qty)
            {
                continue;
            }
            let mut p = (*v).clone();
            p.value.stop_generation += 1;
            // Not placed: the old stop stays in force.
            if self.protect(ex, &mut p.value, f, &all, now, report).await != Protection::Placed {
                continue;
            }
            if let Err(e) = orders::cancel_algo(ex, sym, &id, self.timing.submit).await {
                tracing::warn!(client_algo_id = %id, error = %e, "old stop not cancelled");
            }
            p.value.updated_at = now;
            self.repo.save_position(&p.value, Some(p.version)).await?;
            self.notify(
                account,
                Priority::Medium,
                "stop_resized",
                || {
                    (
                        format!(
                            "reshape:{}:{}",
                            p.value.entry_client_id, p.value.stop_generation
                        ),
                        format!(
                            "{}: stop re-placed as {} for the symbol's sharing",
                            p.value.key,
                            if shared {
                                format!(
                                    "{}quantity {want_qty}",
                                    if reduce_only { "reduce-only " } else { "" }
                                )
                            } else {
                                "closePosition".to_string()
                            }
                        ),
                    )
                },
                now,
            )
            .await;
        }
        Ok(())
    }

    /// Cancel a position's protective orders that are still open (no piling up).
    pub(super) async fn cancel_protection(&self, ex: &dyn Exchange, pos: &Position) {
        let ids = protective_ids(pos);
        for id in ids {
            match ex.algo_by_client_id(&id).await {
                Ok(Some(a)) if a.status.is_open() => {
                    if let Err(e) =
                        orders::cancel_algo(ex, &pos.key.symbol, &id, self.timing.submit).await
                    {
                        tracing::warn!(client_algo_id = %id, error = %e, "could not cancel a protective order");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(client_algo_id = %id, error = %e, "could not look up a protective order")
                }
            }
        }
    }
}
