//! Pyramid adds: a market order adding to an open position, sized by risk, and the stop and
//! exit orders resized to the new quantity.

use super::adopt::commission_of;
use super::*;
use crate::ports::AccountSnapshot;

/// The market order of pyramid step `stage` adding `qty` to `pos`, under its deterministic id.
pub(super) fn pyramid_order(pos: &Position, stage: u8, qty: Qty) -> MarketOrder {
    let id = ClientId::derive(
        &pos.key.account,
        &pos.key.strategy,
        &pos.key.symbol,
        pos.signal_open_time,
        Intent::Pyramid,
        stage as u32,
    );
    MarketOrder {
        symbol: pos.key.symbol.clone(),
        side: pos.side.entry_order_side(),
        qty,
        reduce_only: false,
        client_id: id,
    }
}

/// `pos` after the add `fill` of step `stage`: the sizes summed, the entry price their
/// quantity-weighted average, the add's fee (`add_fee`) added to the entry fee.
pub(super) fn pyramided(
    pos: &Position,
    fill: &OrderInfo,
    add_fee: Decimal,
    stage: u8,
    now: i64,
) -> Position {
    let total = pos.qty.get() + fill.executed_qty.get();
    let mut p = pos.clone();
    p.entry_price = Price::new(
        (pos.qty.get() * pos.entry_price.get() + fill.executed_qty.get() * fill.avg_price.get())
            / total,
    );
    p.qty = Qty::new(total);
    p.entry_fee = Notional::new(pos.entry_fee.get() + add_fee);
    p.pyramids_done = stage;
    p.updated_at = now;
    p
}

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
    ) -> Result<Outcome, EngineError> {
        if stage <= p.value.pyramids_done {
            return Ok(Outcome::Held(format!(
                "hold (pyramid step {stage} already done)"
            )));
        }
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let read_at = ledger.mark();
        let mut snap = ex.account().await?;
        let (lev, size_pct) = self.config.effective_sizing(&acct.config, s);
        let ref_price = self.sizing_price(ex, &p.value.key.symbol, ref_price).await;
        // Sized one at a time with the evaluation's other orders (`MarginLedger`).
        let turn = ledger.size().await;
        snap.total_initial_margin =
            Notional::new(snap.total_initial_margin.get() + ledger.unseen(read_at));
        // An add is a share of the strategy's base size: of its allocation of the equity.
        let equity = risk::allocated_equity(
            snap.equity.get(),
            self.config.allocation(&acct.config, &s.name),
        );
        let mut raw = equity * size_pct * Decimal::from(lev) * fraction / ref_price.get();
        if self.sizing.protects() {
            match self
                .risk_room(acct, s, &p.value, &snap, (raw, ref_price, lev), stage, now)
                .await?
            {
                Ok(room) => raw = room,
                Err(why) => return Ok(Outcome::Blocked(why)),
            }
        }
        let qty = match orders::market_qty(&filters, raw, ref_price, false) {
            Ok(q) => q,
            Err(e) => {
                return Ok(Outcome::Skipped(format!(
                    "pyramid step {stage} skipped: {e}"
                )))
            }
        };
        let order = pyramid_order(&p.value, stage, qty);
        let margin = |q: Qty, p: Price| q.get() * p.get() / Decimal::from(lev.max(1));
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
                return Ok(Outcome::Blocked(format!(
                    "pyramid step {stage} rejected: {msg}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        report.orders_placed += 1;
        self.record_add(
            ex,
            &mut p,
            &filters,
            (&order.client_id, stage),
            &fill,
            now,
            report,
        )
        .await?;
        Ok(Outcome::Pyramided {
            stage,
            qty: fill.executed_qty,
            price: fill.avg_price,
        })
    }

    /// The room the risk rules leave for pyramid step `stage` of `pos` (`raw`: the quantity
    /// wanted at `ref_price`, on leverage `lev`), against the account state folded from `snap`.
    /// A blocked step is notified; `Err` is its report line.
    #[allow(clippy::too_many_arguments)]
    async fn risk_room(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        pos: &Position,
        snap: &AccountSnapshot,
        (raw, ref_price, lev): (Decimal, Price, u32),
        stage: u8,
        now: i64,
    ) -> Result<Result<Decimal, String>, EngineError> {
        let state = self.observe_account(&acct.config, snap.equity, now).await?;
        let limits = risk::Limits::for_account(&self.config, &acct.config, &s.name);
        let held_margin = pos.qty.get() * ref_price.get() / Decimal::from(lev.max(1));
        match risk::pyramid_room(
            &state,
            snap.equity.get(),
            snap.total_initial_margin.get(),
            held_margin,
            raw,
            ref_price.get(),
            lev,
            &limits,
            now,
        ) {
            Ok(room) => Ok(Ok(room)),
            Err(reason) => {
                let why = format!("pyramid step {stage} blocked by risk: {reason}");
                self.notify(
                    &acct.config.id,
                    Priority::Medium,
                    "blocked",
                    || notices::pyramid_blocked(pos, stage, &why),
                    now,
                )
                .await;
                Ok(Err(why))
            }
        }
    }

    /// Record a filled pyramid add of step `stage` (its order `id`): the position's new size,
    /// average price and entry fee written, its stop and exit orders resized, the add notified.
    #[allow(clippy::too_many_arguments)]
    async fn record_add(
        &self,
        ex: &dyn Exchange,
        p: &mut Versioned<Position>,
        filters: &SymbolFilters,
        (id, stage): (&ClientId, u8),
        fill: &OrderInfo,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let add_fee: Decimal = ex
            .user_trades(&p.value.key.symbol, now - 60_000)
            .await
            .map(|ts| commission_of(&ts, fill.order_id))
            .unwrap_or_default();
        p.value = pyramided(&p.value, fill, add_fee, stage, now);
        p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
        self.resize_protection(ex, p, filters, now, report).await?;
        self.notify(
            &p.value.key.account,
            Priority::High,
            "pyramid",
            || notices::pyramid(id, stage, fill, &p.value),
            now,
        )
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderSide;
    use rust_decimal_macros::dec;

    fn fill(side: OrderSide, qty: Decimal, price: Decimal) -> OrderInfo {
        OrderInfo {
            symbol: Symbol::new("BTCUSDT"),
            order_id: 3,
            client_id: "p".into(),
            side,
            status: OrderStatus::Filled,
            orig_qty: Qty::new(qty),
            executed_qty: Qty::new(qty),
            avg_price: Price::new(price),
            reduce_only: false,
            update_time: 1_000,
        }
    }

    /// An open position of 1 at 100 with an entry fee of 0.5.
    fn pos(side: Side) -> Position {
        let id = ClientId("e".into());
        let o = fill(side.entry_order_side(), dec!(1), dec!(100));
        let found = super::super::adopt::FoundEntry {
            key: PositionKey {
                account: AccountId::new("main"),
                strategy: StrategyId::new("A"),
                symbol: Symbol::new("BTCUSDT"),
            },
            id: &id,
            open_time: 60_000,
            side,
            order: &o,
        };
        let filters = crate::paper::generous_filters(&Symbol::new("BTCUSDT"));
        let mut p = super::super::adopt::found_position(&found, &filters, 3, None, 1_000);
        p.entry_fee = Notional::new(dec!(0.5));
        p
    }

    #[test]
    fn pyramided_averages_the_entry_and_adds_the_fee() {
        // (side, add qty, add price, want qty, want entry)
        let cases = [
            (Side::Long, dec!(1), dec!(110), dec!(2), dec!(105)),
            (Side::Long, dec!(3), dec!(104), dec!(4), dec!(103)),
            (Side::Short, dec!(0.5), dec!(94), dec!(1.5), dec!(98)),
        ];
        for (side, q, px, want_qty, want_entry) in cases {
            let before = pos(side);
            let p = pyramided(
                &before,
                &fill(side.entry_order_side(), q, px),
                dec!(0.2),
                2,
                9,
            );
            assert_eq!(
                (p.qty, p.entry_price),
                (Qty::new(want_qty), Price::new(want_entry))
            );
            assert_eq!(p.entry_fee, Notional::new(dec!(0.7)));
            assert_eq!((p.pyramids_done, p.updated_at), (2, 9));
            assert_eq!(
                (p.key, p.side, p.stop_loss),
                (before.key, before.side, before.stop_loss)
            );
        }
    }

    #[test]
    fn pyramid_order_adds_on_the_entry_side_under_the_steps_own_id() {
        for (side, order_side) in [(Side::Long, OrderSide::Buy), (Side::Short, OrderSide::Sell)] {
            let p = pos(side);
            let o = pyramid_order(&p, 2, Qty::new(dec!(0.3)));
            let id = ClientId::derive(
                &p.key.account,
                &p.key.strategy,
                &p.key.symbol,
                60_000,
                Intent::Pyramid,
                2,
            );
            assert_eq!(
                (o.side, o.qty, o.reduce_only),
                (order_side, Qty::new(dec!(0.3)), false)
            );
            assert_eq!((&o.client_id, &o.symbol), (&id, &p.key.symbol));
            assert_ne!(
                pyramid_order(&p, 3, Qty::new(dec!(0.3))).client_id,
                o.client_id
            );
        }
    }
}
