//! Crash adoption, the one path for a crash between order and write: an entry order found by its
//! deterministic client id becomes an ACTIVE position with its stop ([`Engine::adopt`]). It is
//! found either from a PENDING record the interrupted run wrote ahead of its order
//! ([`Engine::resolve_pending`]: adopt it, or drop the record when the exchange never filled or
//! never saw the order), or from an exchange position no record covers
//! ([`Engine::adopt_by_client_id`]: our entry ids of recent candles, tried before the amount is
//! declared MANUAL).

use super::*;
use crate::domain::OrderSide;
use crate::ports::UserTrade;

/// Where an adopted entry comes from: how its record is written, and what a stop level the price
/// already passed becomes.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum Origin {
    /// A PENDING record (at this version) the interrupted run wrote ahead of its order: saved over
    /// it; a passed level is closed at market by the caller once the record is ACTIVE.
    Pending(u64),
    /// An exchange position no record covers: written new; a passed level is reported, and
    /// check_stop, first in the next sync, closes the position at market or places the stop.
    Found,
}

/// What to do with a PENDING entry record, given its order as the exchange reports it.
#[derive(Clone, PartialEq, Debug)]
pub(super) enum PendingStep<'a> {
    /// The order filled (in part or whole) and is done: adopt the fill.
    Adopt(&'a OrderInfo),
    /// The order never filled, or never reached the exchange in time: drop the record; what
    /// happened to it, for the notice.
    Drop(String),
    /// Still working, or not seen yet but young: the next sync looks again.
    Wait,
}

/// The step for a PENDING record whose order lookup gave `order`, written `age_ms` ago;
/// an order never seen is given up after `timeout_ms`.
pub(super) fn pending_step(
    order: Option<&OrderInfo>,
    age_ms: i64,
    timeout_ms: i64,
) -> PendingStep<'_> {
    match order {
        Some(o) if o.status.is_final() && !o.executed_qty.is_zero() => PendingStep::Adopt(o),
        Some(o) if o.status.is_final() => {
            PendingStep::Drop(format!("ended {:?} without a fill", o.status))
        }
        Some(_) => PendingStep::Wait,
        None if age_ms > timeout_ms => {
            PendingStep::Drop("never reached the exchange; intent dropped".into())
        }
        None => PendingStep::Wait,
    }
}

/// The commission the exchange charged on `order_id`'s fills.
pub(super) fn commission_of(trades: &[UserTrade], order_id: i64) -> Decimal {
    trades
        .iter()
        .filter(|t| t.order_id == order_id)
        .map(|t| t.commission.get())
        .sum()
}

/// The PENDING record `pos` made ACTIVE from its order's fill `o`: the filled size and price,
/// and the planned stop and take-profit moved by the fill's slippage (their distance to the
/// entry kept), rounded to the symbol's ticks.
pub(super) fn active_from_fill(
    pos: &Position,
    o: &OrderInfo,
    filters: &SymbolFilters,
    entry_fee: Notional,
    now: i64,
) -> Position {
    let shift = o.avg_price.get() - pos.entry_price.get();
    let mut p = pos.clone();
    p.qty = o.executed_qty;
    p.entry_price = o.avg_price;
    p.best_price = Some(o.avg_price);
    p.stop_loss = pos
        .stop_loss
        .map(|s| orders::stop_price(filters, p.side, Price::new(s.get() + shift)));
    p.take_profit = pos
        .take_profit
        .map(|s| orders::target_price(filters, p.side, Price::new(s.get() + shift)));
    p.entry_fee = entry_fee;
    p.status = PositionStatus::Active;
    p.updated_at = now;
    p
}

/// The side of a filled entry order of ours that can explain `residual` (the signed amount on
/// the exchange no record covers): filled, in the residual's direction, and no larger than it.
pub(super) fn adoptable_side(o: &OrderInfo, residual: Decimal) -> Option<Side> {
    if o.status != OrderStatus::Filled || o.executed_qty.is_zero() {
        return None;
    }
    let side = if o.side == OrderSide::Buy {
        Side::Long
    } else {
        Side::Short
    };
    if side.sign() != residual.signum() || o.executed_qty.get() > residual.abs() {
        return None;
    }
    Some(side)
}

/// What an entry order found by its client id (`id`, of the candle `open_time`) says about the
/// position no record covers.
pub(super) struct FoundEntry<'a> {
    pub key: PositionKey,
    pub id: &'a ClientId,
    pub open_time: i64,
    pub side: Side,
    pub order: &'a OrderInfo,
}

/// The ACTIVE position for a found entry: its fill, the strategy's leverage, and the stop the
/// strategy attaches at entry (`stop`) priced from the fill. No take-profit and no entry fee
/// are known for it.
pub(super) fn found_position(
    e: &FoundEntry<'_>,
    filters: &SymbolFilters,
    leverage: u32,
    stop: Option<StopSpec>,
    now: i64,
) -> Position {
    let (side, o) = (e.side, e.order);
    Position {
        key: e.key.clone(),
        side,
        qty: o.executed_qty,
        entry_price: o.avg_price,
        leverage,
        status: PositionStatus::Active,
        is_manual: false,
        entry_client_id: e.id.0.clone(),
        signal_open_time: e.open_time,
        opened_at: o.update_time,
        stop_loss: stop
            .map(|sp| orders::stop_price(filters, side, sp.stop_price(side, o.avg_price))),
        take_profit: None,
        stop_client_id: None,
        stop_generation: 0,
        partial_exits_done: 0,
        pyramids_done: 0,
        best_price: Some(o.avg_price),
        entry_fee: Notional::ZERO,
        updated_at: now,
        exit_orders: Vec::new(),
        exit_generation: 0,
    }
}

impl Engine {
    /// Adopt an entry order's fill as the ACTIVE position `p` (already built from the fill): its
    /// stop found or placed, its exchange-side exits reconciled, its record written (over the
    /// PENDING one, or new). Returns how the stop went and the record's version; a passed level
    /// is left to the caller for a PENDING record ([`Origin`]).
    pub(super) async fn adopt(
        &self,
        ex: &dyn Exchange,
        p: &mut Position,
        filters: &SymbolFilters,
        origin: Origin,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(Protection, u64), EngineError> {
        let account = p.key.account.clone();
        // The stop may already exist if the crash came after it was placed.
        let mut protection = Protection::Placed;
        if let Some(stop_id) = self.existing_stop(ex, p).await? {
            p.stop_client_id = Some(stop_id);
        } else {
            let others = self.repo.positions(&account).await?;
            protection = self.protect(ex, p, filters, &others, now, report).await;
        }
        match (&protection, origin) {
            (Protection::Failed(why), _) => report.errors.push(unprotected(p, why)),
            (Protection::Passed(level), Origin::Found) => report.errors.push(unprotected(
                p,
                &format!("its level {level} is already passed"),
            )),
            _ => {}
        }
        // The same deterministic ids as the interrupted run: exits it placed are found.
        if let Some(plan) = self.exit_plan(p) {
            let others = self.repo.positions(&account).await?;
            self.reconcile_exits(ex, p, filters, &others, &plan, None, now, report)
                .await?;
        }
        let expected = match origin {
            Origin::Pending(version) => Some(version),
            Origin::Found => None,
        };
        let version = self.repo.save_position(p, expected).await?;
        Ok((protection, version))
    }

    /// Resolve a PENDING entry record by looking its order up ([`pending_step`]): adopt the fill,
    /// drop the record, or wait for the next sync. `v` is marked closed when it is dropped, or
    /// when its adopted stop level was passed and it was closed at market.
    pub(super) async fn resolve_pending(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let pos = v.value.clone();
        let order = ex
            .order_by_client_id(&pos.key.symbol, &pos.entry_client_id)
            .await?;
        let timeout = self.config.jobs.pending_timeout_secs as i64 * 1000;
        match pending_step(order.as_ref(), now - pos.updated_at, timeout) {
            PendingStep::Adopt(o) => self.adopt_pending(ex, v, o, now, report).await?,
            PendingStep::Drop(what) => {
                self.repo.delete_position(&pos.key, v.version).await?;
                v.value.status = PositionStatus::Closed;
                self.notify(
                    &pos.key.account,
                    Priority::Medium,
                    "entry_dropped",
                    || notices::entry_dropped(&pos, &what),
                    now,
                )
                .await;
            }
            PendingStep::Wait => {}
        }
        Ok(())
    }

    /// Adopt a PENDING record's filled order `o`: the record becomes ACTIVE with its stop
    /// ([`Engine::adopt`]), the entry counts for the strategy, and a stop level already passed
    /// closes the position at market.
    async fn adopt_pending(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        o: &OrderInfo,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let pos = &v.value;
        let filters = ex.symbol_filters(&pos.key.symbol).await?;
        let entry_fee = ex
            .user_trades(&pos.key.symbol, pos.opened_at - 60_000)
            .await
            .map(|ts| Notional::new(commission_of(&ts, o.order_id)))
            .unwrap_or_default();
        let mut p = active_from_fill(pos, o, &filters, entry_fee, now);
        let (protection, version) = self
            .adopt(
                ex,
                &mut p,
                &filters,
                Origin::Pending(v.version),
                now,
                report,
            )
            .await?;
        v.version = version;
        let account = &p.key.account;
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
        Ok(())
    }

    /// Look for one of our entry orders (recent candles of every strategy that trades `sym` on this
    /// account) that explains an exchange position no record covers, and adopt it.
    pub(super) async fn adopt_by_client_id(
        &self,
        acct: &AccountRuntime,
        sym: &Symbol,
        residual: Decimal,
        now: i64,
        report: &mut JobReport,
    ) -> Result<Option<Position>, EngineError> {
        let ex = acct.exchange.as_ref();
        let account = &acct.config.id;
        for s in self
            .config
            .account_strategies(&acct.config)
            .filter(|s| s.symbols.contains(sym))
        {
            let sid = StrategyId::new(&s.name);
            let key = PositionKey {
                account: account.clone(),
                strategy: sid.clone(),
                symbol: sym.clone(),
            };
            if self.repo.position(&key).await?.is_some() {
                continue;
            }
            let last = s.timeframe.last_closed_open(now);
            for k in 0..4 {
                let open_time = last - k * s.timeframe.millis();
                let id = ClientId::derive(account, &sid, sym, open_time, Intent::Entry, 0);
                let Some(o) = ex.order_by_client_id(sym, id.as_str()).await? else {
                    continue;
                };
                let Some(side) = adoptable_side(&o, residual) else {
                    continue;
                };
                let found = FoundEntry {
                    key,
                    id: &id,
                    open_time,
                    side,
                    order: &o,
                };
                return Ok(Some(self.adopt_found(acct, s, found, now, report).await?));
            }
        }
        Ok(None)
    }

    /// Adopt a found entry of strategy `s` as a new ACTIVE record ([`Engine::adopt`]), with the
    /// stop the strategy attaches at entry.
    async fn adopt_found(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        found: FoundEntry<'_>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<Position, EngineError> {
        let ex = acct.exchange.as_ref();
        let sym = &found.key.symbol;
        let stop = self
            .entry_stop(ex, s, sym, found.open_time, found.side, now)
            .await?;
        let filters = ex.symbol_filters(sym).await?;
        let (lev, _) = self.config.effective_sizing(&acct.config, s);
        let mut p = found_position(&found, &filters, lev, stop, now);
        self.adopt(ex, &mut p, &filters, Origin::Found, now, report)
            .await?;
        self.notify(
            &acct.config.id,
            Priority::High,
            "adopted",
            || notices::adopted_found(found.id, &p),
            now,
        )
        .await;
        Ok(p)
    }

    /// The stop strategy `s` attaches at entry on `side`, rebuilt from its current view of the
    /// market up to the entry's candle (`open_time`).
    async fn entry_stop(
        &self,
        ex: &dyn Exchange,
        s: &StrategyConfig,
        sym: &Symbol,
        open_time: i64,
        side: Side,
        now: i64,
    ) -> Result<Option<StopSpec>, EngineError> {
        let mut strat =
            strategy::build(&s.name, &s.params, &format!("strategies.{}.params", s.name))
                .map_err(EngineError::from)?;
        let candles = ex
            .closed_klines(
                sym,
                s.timeframe,
                self.config.jobs.history.max(strat.warmup() as u32 + 2),
                now,
            )
            .await?;
        for c in candles.iter().filter(|c| c.open_time <= open_time) {
            strat.update(c);
        }
        Ok(strat.protective_stop(side))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn order(side: OrderSide, status: OrderStatus, executed: Decimal) -> OrderInfo {
        OrderInfo {
            symbol: Symbol::new("BTCUSDT"),
            order_id: 7,
            client_id: "e".into(),
            side,
            status,
            orig_qty: Qty::new(dec!(1)),
            executed_qty: Qty::new(executed),
            avg_price: Price::new(dec!(101)),
            reduce_only: false,
            update_time: 5_000,
        }
    }

    fn filters() -> SymbolFilters {
        crate::paper::generous_filters(&Symbol::new("BTCUSDT"))
    }

    fn pending(side: Side) -> Position {
        let id = ClientId("e".into());
        let o = order(OrderSide::Buy, OrderStatus::New, dec!(0));
        let found = FoundEntry {
            key: PositionKey {
                account: AccountId::new("main"),
                strategy: StrategyId::new("A"),
                symbol: Symbol::new("BTCUSDT"),
            },
            id: &id,
            open_time: 0,
            side,
            order: &o,
        };
        let mut p = found_position(&found, &filters(), 3, None, 1);
        p.status = PositionStatus::Pending;
        p.qty = Qty::new(dec!(1));
        p.entry_price = Price::new(dec!(100));
        p
    }

    #[test]
    fn pending_step_adopts_fills_drops_dead_orders_and_waits_otherwise() {
        use OrderStatus::*;
        // (order: status and executed qty, age, dropped with, adopted)
        type Case = (
            Option<(OrderStatus, Decimal)>,
            i64,
            Option<&'static str>,
            bool,
        );
        let cases: &[Case] = &[
            (Some((Filled, dec!(1))), 0, None, true),
            (Some((Canceled, dec!(0.5))), 0, None, true),
            (
                Some((Expired, dec!(0))),
                0,
                Some("ended Expired without a fill"),
                false,
            ),
            (
                Some((Canceled, dec!(0))),
                0,
                Some("ended Canceled without a fill"),
                false,
            ),
            (Some((New, dec!(0))), 10_000, None, false),
            (Some((PartiallyFilled, dec!(0.5))), 10_000, None, false),
            (None, 1_000, None, false),
            (
                None,
                1_001,
                Some("never reached the exchange; intent dropped"),
                false,
            ),
        ];
        for (o, age, dropped, adopted) in cases {
            let info = o.map(|(st, q)| order(OrderSide::Buy, st, q));
            let step = pending_step(info.as_ref(), *age, 1_000);
            match (dropped, adopted) {
                (Some(what), _) => assert_eq!(step, PendingStep::Drop(what.to_string())),
                (None, true) => assert_eq!(step, PendingStep::Adopt(info.as_ref().unwrap())),
                (None, false) => assert_eq!(step, PendingStep::Wait, "{o:?} {age}"),
            }
        }
    }

    #[test]
    fn adoptable_side_needs_a_fill_in_the_residuals_direction_within_it() {
        use OrderSide::*;
        use OrderStatus::*;
        let cases = [
            (Buy, Filled, dec!(1), dec!(1), Some(Side::Long)),
            (Buy, Filled, dec!(1), dec!(2), Some(Side::Long)),
            (Sell, Filled, dec!(1), dec!(-1.5), Some(Side::Short)),
            (Buy, Filled, dec!(1), dec!(-1), None),
            (Sell, Filled, dec!(1), dec!(1), None),
            (Buy, Filled, dec!(2), dec!(1), None),
            (Buy, Filled, dec!(0), dec!(1), None),
            (Buy, Canceled, dec!(1), dec!(1), None),
            (Buy, PartiallyFilled, dec!(1), dec!(1), None),
        ];
        for (side, status, executed, residual, want) in cases {
            let o = order(side, status, executed);
            assert_eq!(
                adoptable_side(&o, residual),
                want,
                "{side:?} {status:?} {executed} {residual}"
            );
        }
    }

    #[test]
    fn commission_of_sums_only_the_orders_fills() {
        let trade = |order_id, fee| UserTrade {
            symbol: Symbol::new("BTCUSDT"),
            id: 1,
            order_id,
            side: OrderSide::Buy,
            price: Price::new(dec!(100)),
            qty: Qty::new(dec!(1)),
            realized_pnl: Notional::ZERO,
            commission: Notional::new(fee),
            commission_asset: "USDT".into(),
            time: 0,
        };
        let ts = [trade(7, dec!(0.1)), trade(8, dec!(5)), trade(7, dec!(0.25))];
        assert_eq!(commission_of(&ts, 7), dec!(0.35));
        assert_eq!(commission_of(&ts, 9), Decimal::ZERO);
        assert_eq!(commission_of(&[], 7), Decimal::ZERO);
    }

    #[test]
    fn active_from_fill_keeps_the_planned_distances_from_the_actual_fill() {
        // (side, stop, take-profit) planned around 100; the fill is at 101.
        let cases = [
            (
                Side::Long,
                Some(dec!(95)),
                Some(dec!(110)),
                Some(dec!(96)),
                Some(dec!(111)),
            ),
            (Side::Short, Some(dec!(105)), None, Some(dec!(106)), None),
            (Side::Long, None, None, None, None),
        ];
        for (side, stop, tp, want_stop, want_tp) in cases {
            let mut pos = pending(side);
            pos.stop_loss = stop.map(Price::new);
            pos.take_profit = tp.map(Price::new);
            let side_o = side.entry_order_side();
            let o = order(side_o, OrderStatus::Filled, dec!(0.5));
            let p = active_from_fill(&pos, &o, &filters(), Notional::new(dec!(0.02)), 9);
            assert_eq!(p.stop_loss, want_stop.map(Price::new));
            assert_eq!(p.take_profit, want_tp.map(Price::new));
            assert_eq!(
                (p.qty, p.entry_price),
                (Qty::new(dec!(0.5)), Price::new(dec!(101)))
            );
            assert_eq!(p.best_price, Some(Price::new(dec!(101))));
            assert_eq!(p.entry_fee, Notional::new(dec!(0.02)));
            assert_eq!((p.status, p.updated_at), (PositionStatus::Active, 9));
            assert_eq!(p.key, pos.key);
        }
    }

    #[test]
    fn found_position_is_the_fill_with_the_strategys_stop() {
        let id = ClientId("x-entry".into());
        let cases = [
            (
                Side::Long,
                Some(StopSpec::Distance(dec!(2))),
                Some(dec!(99)),
            ),
            (
                Side::Short,
                Some(StopSpec::Percent(dec!(0.01))),
                Some(dec!(102.01)),
            ),
            (Side::Long, None, None),
        ];
        for (side, stop, want) in cases {
            let o = order(side.entry_order_side(), OrderStatus::Filled, dec!(0.3));
            let found = FoundEntry {
                key: pending(side).key,
                id: &id,
                open_time: 60_000,
                side,
                order: &o,
            };
            let p = found_position(&found, &filters(), 5, stop, 9);
            assert_eq!(p.stop_loss, want.map(Price::new));
            assert_eq!(
                (p.side, p.qty, p.entry_price),
                (side, Qty::new(dec!(0.3)), Price::new(dec!(101)))
            );
            assert_eq!((p.leverage, p.entry_client_id.as_str()), (5, "x-entry"));
            assert_eq!(
                (p.signal_open_time, p.opened_at, p.updated_at),
                (60_000, 5_000, 9)
            );
            assert_eq!(p.status, PositionStatus::Active);
            assert!(!p.is_manual && p.take_profit.is_none() && p.entry_fee.is_zero());
        }
    }
}
