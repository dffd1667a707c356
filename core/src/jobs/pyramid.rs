//! Pyramid adds: a market order adding to an open position, sized by risk, and the stop and
//! exit orders resized to the new quantity.

use super::*;

impl Engine {
    /// Add to a position (a pyramiding step): `fraction` of the strategy's base entry size.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn pyramid(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        mut p: Versioned<Position>,
        fraction: Decimal,
        stage: u8,
        ref_price: Price,
        now: i64,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        if stage <= p.value.pyramids_done {
            return Ok(format!("hold (pyramid step {stage} already done)"));
        }
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let read_at = ledger.mark();
        let mut snap = ex.account().await?;
        let (lev, size_pct) = self.config.effective_sizing(&acct.config, s);
        let ref_price = self.sizing_price(ex, &p.value.key.symbol, ref_price).await;
        // Sized one at a time with the evaluation's other orders (`MarginLedger`).
        let turn = ledger.size().await;
        snap.total_initial_margin = Notional(snap.total_initial_margin.0 + ledger.unseen(read_at));
        let mut raw = snap.equity.0 * size_pct * Decimal::from(lev) * fraction / ref_price.0;
        if self.sizing.protects() {
            let state = self.observe_account(&acct.config, snap.equity, now).await?;
            let limits = risk::Limits::new(&self.config.risk, &self.config.strategy_risk(&s.name));
            let held_margin = p.value.qty.0 * ref_price.0 / Decimal::from(lev.max(1));
            match risk::pyramid_room(
                &state,
                snap.equity.0,
                snap.total_initial_margin.0,
                held_margin,
                raw,
                ref_price.0,
                lev,
                &limits,
                now,
            ) {
                Ok(room) => raw = room,
                Err(reason) => {
                    let why = format!("pyramid step {stage} blocked by risk: {reason}");
                    self.notify(
                        &acct.config.id,
                        Priority::Medium,
                        "blocked",
                        || {
                            (
                                format!("blocked:{}:{stage}", p.value.entry_client_id),
                                format!("{}: {why}", p.value.key),
                            )
                        },
                        now,
                    )
                    .await;
                    return Ok(why);
                }
            }
        }
        let qty = match orders::market_qty(&filters, raw, ref_price, false) {
            Ok(q) => q,
            Err(e) => return Ok(format!("pyramid step {stage} skipped: {e}")),
        };
        let pos = p.value.clone();
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            Intent::Pyramid,
            stage as u32,
        );
        let order = MarketOrder {
            symbol: pos.key.symbol.clone(),
            side: pos.side.entry_order_side(),
            qty,
            reduce_only: false,
            client_id: id.clone(),
        };
        let margin = |q: Qty, p: Price| q.0 * p.0 / Decimal::from(lev.max(1));
        let slot = ledger.take(margin(qty, ref_price));
        drop(turn);
        let policy = self.before_send(report).await?;
        let sent = self
            .send_adding(ex, &order, policy, (ledger, slot, &margin), report)
            .await;
        let fill = match sent {
            Ok(f) => f,
            Err(ExchangeError::Rejected { msg, .. }) => {
                report.orders_rejected += 1;
                return Ok(format!("pyramid step {stage} rejected: {msg}"));
            }
            Err(e) => return Err(e.into()),
        };
        report.orders_placed += 1;
        let add_fee: Decimal = ex
            .user_trades(&pos.key.symbol, now - 60_000)
            .await
            .map(|ts| {
                ts.iter()
                    .filter(|t| t.order_id == fill.order_id)
                    .map(|t| t.commission.0)
                    .sum()
            })
            .unwrap_or_default();
        let total = pos.qty.0 + fill.executed_qty.0;
        p.value.entry_price =
            Price((pos.qty.0 * pos.entry_price.0 + fill.executed_qty.0 * fill.avg_price.0) / total);
        p.value.qty = Qty(total);
        p.value.entry_fee = Notional(pos.entry_fee.0 + add_fee);
        p.value.pyramids_done = stage;
        p.value.updated_at = now;
        p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
        self.resize_protection(ex, &mut p, &filters, now, report)
            .await?;
        self.notify(
            &pos.key.account,
            Priority::High,
            "pyramid",
            || notices::pyramid(&id, stage, &fill, &p.value),
            now,
        )
        .await;
        Ok(format!(
            "pyramid step {stage}: added {} @ {}",
            fill.executed_qty, fill.avg_price
        ))
    }
}
