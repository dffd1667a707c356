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
    ) -> Result<Outcome, EngineError> {
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let side = p.value.side;
        let new = orders::stop_price(&filters, side, price);
        let tightens = match (p.value.stop_loss, side) {
            (None, _) => true,
            (Some(old), Side::Long) => new.get() > old.get(),
            (Some(old), Side::Short) => new.get() < old.get(),
        };
        if !tightens {
            return Ok(Outcome::Held(format!(
                "hold (stop {new} would not tighten {:?})",
                p.value.stop_loss
            )));
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
        Ok(Outcome::StopMoved {
            to: new,
            reason: reason.to_string(),
        })
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
            let shape = sharing_shape(&v.value, &on_sym);
            // A closePosition stop alone on its symbol fits as it is: no trading rules needed.
            if !shape.shared && a.close_position {
                continue;
            }
            if filters.is_none() {
                filters = Some(ex.symbol_filters(sym).await?);
            }
            let f = filters.as_ref().expect("filters just read");
            let want_qty = orders::close_qty(f, v.value.qty);
            if quantity_stop_fits(&a, shape, want_qty) {
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
                || notices::stop_resized(&p.value, shape.shared, shape.reduce_only, want_qty),
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

/// The stop a share of a symbol needs.
#[derive(Clone, Copy, Debug, PartialEq)]
struct SharingShape {
    /// Another open position (any strategy, or MANUAL) holds the symbol too.
    shared: bool,
    /// Shared, and every other share is on this one's side.
    reduce_only: bool,
}

/// The shape of `pos`'s stop among `on_sym`, the open positions on its symbol (itself included).
fn sharing_shape(pos: &Position, on_sym: &[&Versioned<Position>]) -> SharingShape {
    let sharing: Vec<_> = on_sym.iter().filter(|o| o.value.key != pos.key).collect();
    let shared = !sharing.is_empty();
    let reduce_only = shared && sharing.iter().all(|o| o.value.side == pos.side);
    SharingShape {
        shared,
        reduce_only,
    }
}

/// Whether the open stop `a` of a shared symbol is already the quantity stop `shape` needs for
/// `want_qty`.
fn quantity_stop_fits(a: &AlgoOrderInfo, shape: SharingShape, want_qty: Qty) -> bool {
    shape.shared
        && !a.close_position
        && a.reduce_only == shape.reduce_only
        && a.qty == Some(want_qty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn position(strategy: &str, side: Side) -> Versioned<Position> {
        Versioned {
            value: Position {
                key: PositionKey {
                    account: AccountId::new("a"),
                    strategy: StrategyId::new(strategy),
                    symbol: Symbol::new("BTCUSDT"),
                },
                side,
                qty: Qty::new(d("2")),
                entry_price: Price::new(d("100")),
                leverage: 1,
                status: PositionStatus::Active,
                is_manual: false,
                entry_client_id: "E1".into(),
                signal_open_time: 0,
                opened_at: 0,
                stop_loss: Some(Price::new(d("95"))),
                take_profit: None,
                stop_client_id: Some("S1".into()),
                stop_generation: 4,
                partial_exits_done: 0,
                pyramids_done: 0,
                best_price: None,
                entry_fee: Notional::ZERO,
                updated_at: 0,
                exit_orders: Vec::new(),
                exit_generation: 0,
            },
            version: 1,
        }
    }

    fn stop(close_position: bool, reduce_only: bool, qty: Option<&str>) -> AlgoOrderInfo {
        AlgoOrderInfo {
            algo_id: 1,
            client_algo_id: "S1".into(),
            symbol: Symbol::new("BTCUSDT"),
            side: Side::Long.exit_order_side(),
            kind: AlgoKind::StopMarket,
            status: AlgoStatus::New,
            trigger_price: Some(Price::new(d("95"))),
            qty: qty.map(|q| Qty::new(d(q))),
            close_position,
            reduce_only,
            actual_order_id: None,
            actual_price: None,
            update_time: 0,
        }
    }

    #[test]
    fn sharing_shape_of_a_symbol() {
        let me = position("s", Side::Long);
        let long = position("t", Side::Long);
        let short = position("u", Side::Short);
        // (open positions on the symbol, shared, reduce_only)
        let table = [
            (vec![&me], false, false),
            (vec![&me, &long], true, true),
            (vec![&long, &me], true, true),
            (vec![&me, &short], true, false),
            (vec![&me, &long, &short], true, false),
        ];
        for (i, (on_sym, shared, reduce_only)) in table.into_iter().enumerate() {
            let got = sharing_shape(&me.value, &on_sym);
            assert_eq!(
                got,
                SharingShape {
                    shared,
                    reduce_only
                },
                "row {i}"
            );
        }
    }

    #[test]
    fn quantity_stop_fits_only_its_exact_shape() {
        let shape = |shared, reduce_only| SharingShape {
            shared,
            reduce_only,
        };
        let two = Qty::new(d("2"));
        // (stop on the exchange, shape wanted, fits)
        let table = [
            (stop(false, true, Some("2")), shape(true, true), true),
            (stop(false, false, Some("2")), shape(true, false), true),
            (stop(false, false, Some("2")), shape(true, true), false),
            (stop(false, true, Some("2")), shape(true, false), false),
            (stop(false, true, Some("3")), shape(true, true), false),
            (stop(false, true, None), shape(true, true), false),
            (stop(true, true, None), shape(true, true), false),
            // Alone on the symbol a quantity stop is replaced by closePosition.
            (stop(false, false, Some("2")), shape(false, false), false),
        ];
        for (i, (a, want_shape, fits)) in table.into_iter().enumerate() {
            assert_eq!(quantity_stop_fits(&a, want_shape, two), fits, "row {i}");
        }
    }

    /// The notice made in notices.rs reads exactly as the text reshape_stops made itself.
    #[test]
    fn stop_resized_notice_unchanged() {
        let p = position("s", Side::Long).value;
        let q = Qty::new(d("1.5"));
        let text = |what: &str| {
            (
                "reshape:E1:4".to_string(),
                format!(
                    "{}: stop re-placed as {what} for the symbol's sharing",
                    p.key
                ),
            )
        };
        assert_eq!(
            notices::stop_resized(&p, true, true, q),
            text("reduce-only quantity 1.5")
        );
        assert_eq!(
            notices::stop_resized(&p, true, false, q),
            text("quantity 1.5")
        );
        assert_eq!(
            notices::stop_resized(&p, false, true, q),
            text("closePosition")
        );
        assert_eq!(
            notices::stop_resized(&p, false, false, q),
            text("closePosition")
        );
    }
}
