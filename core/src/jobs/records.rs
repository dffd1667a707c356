//! Records: closed trades (once), the account's risk state folded from equity readings and
//! trades, and the strategy stats entries are sized from.

use super::*;
use crate::state::UpdateError;
use crate::store::memory::Update;

/// A failed state update as the job's error: a store failure, or writers that kept winning.
fn contended(e: UpdateError, account: &AccountId) -> EngineError {
    match e {
        UpdateError::Store(e) => EngineError::from(e),
        UpdateError::Contended { .. } => EngineError::StateContended(account.clone()),
    }
}
use crate::ports::UserTrade;

/// The order that closed a position, as far as the exchange tells ([`Engine::find_closer`]).
struct Closer {
    /// Why it closed: "exchange" (unknown), "stop", "take_profit", "trailing_stop", or the
    /// caller's reason.
    reason: String,
    /// The market order the fired algo order became: its fills closed the position.
    order: Option<i64>,
    /// The fired algo order (its price stands in when no fill is found).
    algo: Option<AlgoOrderInfo>,
}

impl Closer {
    fn of(reason: String, a: AlgoOrderInfo) -> Self {
        Closer {
            reason,
            order: a.actual_order_id,
            algo: Some(a),
        }
    }
}

/// A conditional order that went off (its order sent, or done).
fn fired(a: &AlgoOrderInfo) -> bool {
    matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered)
}

/// The realised figures of a close: average exit price, gross PnL, exit fees, and when.
#[derive(Clone, PartialEq, Debug)]
pub(super) struct ExitFigures {
    pub price: Price,
    pub gross: Decimal,
    pub fee: Decimal,
    pub time: i64,
}

/// The fills that closed `pos`: those of `close_order` when known, else every fill on its exit
/// side since it opened that realised a PnL.
pub(super) fn closing_trades<'a>(
    trades: &'a [UserTrade],
    pos: &Position,
    close_order: Option<i64>,
) -> Vec<&'a UserTrade> {
    let exit_side = pos.side.exit_order_side();
    trades
        .iter()
        .filter(|t| match close_order {
            Some(id) => t.order_id == id,
            None => t.side == exit_side && t.time >= pos.opened_at && !t.realized_pnl.is_zero(),
        })
        .collect()
}

/// The figures of a close from its fills (`closing`): their volume-weighted price, realised PnL
/// and commissions, dated by the last. Without fills, the fired order's price (else the entry
/// price) gives the gross PnL, with no fee, dated `now`.
pub(super) fn exchange_close_figures(
    pos: &Position,
    closing: &[&UserTrade],
    algo: Option<&AlgoOrderInfo>,
    now: i64,
) -> ExitFigures {
    let time = closing.iter().map(|t| t.time).max().unwrap_or(now);
    if closing.is_empty() {
        let px = algo
            .and_then(|a| a.actual_price.or(a.trigger_price))
            .unwrap_or(pos.entry_price);
        return ExitFigures {
            price: px,
            gross: pos.side.sign() * pos.qty.get() * (px.get() - pos.entry_price.get()),
            fee: Decimal::ZERO,
            time,
        };
    }
    let q: Decimal = closing.iter().map(|t| t.qty.get()).sum();
    let px = closing
        .iter()
        .map(|t| t.qty.get() * t.price.get())
        .sum::<Decimal>()
        / q;
    ExitFigures {
        price: Price::new(px),
        gross: closing.iter().map(|t| t.realized_pnl.get()).sum(),
        fee: closing.iter().map(|t| t.commission.get()).sum(),
        time,
    }
}

/// Why a position closed: `found` (the order that closed it), except that a close by none of
/// our orders while the exchange booked a liquidation clearance fee on the symbol is a
/// liquidation.
pub(super) fn close_reason(found: String, close_order: Option<i64>, clearance: Decimal) -> String {
    if close_order.is_none() && !clearance.is_zero() {
        "liquidation".into()
    } else {
        found
    }
}

/// The trade of a close the exchange made: the entry fee, the clearance fee and the funding
/// share count in its PnL.
pub(super) fn exchange_close_trade(
    pos: &Position,
    f: &ExitFigures,
    funding: Decimal,
    clearance: Decimal,
    reason: &str,
) -> TradeRecord {
    let id = format!("{}:close", pos.entry_client_id);
    TradeRecord {
        pnl: Notional::new(f.gross - f.fee - pos.entry_fee.get() - clearance + funding),
        fees: Notional::new(f.fee + pos.entry_fee.get() + clearance),
        funding: Notional::new(funding),
        ..closing_trade(pos, id, pos.qty, (f.price, f.time), reason.to_string())
    }
}

/// A liquidation is critical; any other close by the exchange is high.
pub(super) fn close_notice_kind(reason: &str) -> (Priority, &'static str) {
    if reason == "liquidation" {
        (Priority::Critical, "liquidation")
    } else {
        (Priority::High, "closed_on_exchange")
    }
}

impl Engine {
    /// A strategy position the exchange no longer holds: find out how it closed, record the trade
    /// with the exchange's realised figures, clean up its protective orders.
    pub(super) async fn record_exchange_close(
        &self,
        ex: &dyn Exchange,
        v: &Versioned<Position>,
        now: i64,
    ) -> Result<(), EngineError> {
        self.record_close(ex, v, None, now).await
    }

    /// [`Engine::record_exchange_close`], with the order that closed it when already known
    /// (`reason`, the fired algo order); otherwise it is looked for among the stop, the
    /// take-profit and the exit orders.
    pub(super) async fn record_close(
        &self,
        ex: &dyn Exchange,
        v: &Versioned<Position>,
        known: Option<(String, AlgoOrderInfo)>,
        now: i64,
    ) -> Result<(), EngineError> {
        let pos = &v.value;
        let closer = self.find_closer(ex, pos, known).await?;
        let trades = ex
            .user_trades(&pos.key.symbol, pos.opened_at - 60_000)
            .await?;
        let closing = closing_trades(&trades, pos, closer.order);
        let figures = exchange_close_figures(pos, &closing, closer.algo.as_ref(), now);
        let (funding, clearance) = self.position_income(ex, pos, now).await?;
        let reason = close_reason(closer.reason, closer.order, clearance);
        let trade = exchange_close_trade(pos, &figures, funding, clearance, &reason);
        self.record_trade(&trade).await?;
        self.cancel_protection(ex, pos).await;
        self.repo.delete_position(&pos.key, v.version).await?;
        let (priority, kind) = close_notice_kind(&reason);
        self.notify(
            &pos.key.account,
            priority,
            kind,
            || notices::closed_on_exchange(pos, &trade, &reason),
            now,
        )
        .await;
        Ok(())
    }

    /// The order that closed `pos`: the one `known` (when it names the order's fills), else its
    /// stop, else the first exit order that fired, else its take-profit, looked up in that
    /// order and only as far as needed. None found: "exchange", with no order.
    async fn find_closer(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        known: Option<(String, AlgoOrderInfo)>,
    ) -> Result<Closer, EngineError> {
        let mut closer = Closer {
            reason: "exchange".to_string(),
            order: None,
            algo: None,
        };
        if let Some((r, a)) = known {
            closer = Closer::of(r, a);
        }
        if let Some(id) = pos
            .stop_client_id
            .as_ref()
            .filter(|_| closer.order.is_none())
        {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if fired(&a) {
                    closer = Closer::of("stop".into(), a);
                }
            }
        }
        let exit_ids: Vec<(ExitKind, &str)> = if closer.order.is_none() {
            pos.exit_orders
                .iter()
                .map(|e| (e.kind, e.client_id.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        for (kind, id) in exit_ids {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if fired(&a) && a.actual_order_id.is_some() {
                    let reason = match kind {
                        ExitKind::TakeProfit { .. } => "take_profit",
                        ExitKind::Trailing { .. } => "trailing_stop",
                    };
                    closer = Closer::of(reason.into(), a);
                    break;
                }
            }
        }
        if closer.order.is_none() && pos.take_profit.is_some() {
            let tp = take_profit_id(pos);
            if let Some(a) = ex.algo_by_client_id(tp.as_str()).await? {
                if fired(&a) {
                    closer = Closer::of("take_profit".into(), a);
                }
            }
        }
        Ok(closer)
    }

    /// Funding (this position's share) and liquidation clearance fees the exchange booked on the
    /// position's symbol between its opening and `until`, from the income history. The funding
    /// share is the position's quantity over all tracked open quantity on the symbol.
    pub(super) async fn position_income(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        until: i64,
    ) -> Result<(Decimal, Decimal), EngineError> {
        let rows = ex.income(pos.opened_at).await?;
        let on_symbol = |kind: &str| {
            rows.iter()
                .filter(|i| {
                    i.symbol.as_ref() == Some(&pos.key.symbol)
                        && i.time >= pos.opened_at
                        && i.time <= until
                        && i.income_type == kind
                })
                .map(|i| i.income.get())
                .sum::<Decimal>()
        };
        let funding_total = on_symbol("FUNDING_FEE");
        let clearance = -on_symbol("INSURANCE_CLEAR");
        if funding_total.is_zero() {
            return Ok((Decimal::ZERO, clearance));
        }
        let held: Decimal = self
            .repo
            .positions(&pos.key.account)
            .await?
            .iter()
            .filter(|v| v.value.key.symbol == pos.key.symbol && v.value.is_open())
            .map(|v| v.value.qty.get())
            .sum();
        let share = if held > pos.qty.get() {
            pos.qty.get() / held
        } else {
            Decimal::ONE
        };
        Ok(((funding_total * share).round_dp(8), clearance))
    }

    /// Fold a fresh equity reading into the account's risk state (peak, day start, MDD level,
    /// daily-loss halt), save it and notify what changed. Returns the state entries are sized from.
    pub(super) async fn observe_account(
        &self,
        acct: &AccountConfig,
        equity: Notional,
        now: i64,
    ) -> Result<AccountState, EngineError> {
        self.observe_account_then(acct, equity, None, now, AccountState::clone)
            .await
    }

    /// [`Engine::observe_account`] giving `then` of the state folded instead of a copy of it.
    pub(super) async fn observe_account_then<R: Send>(
        &self,
        acct: &AccountConfig,
        equity: Notional,
        marks: Option<&crate::domain::Marks>,
        now: i64,
        then: impl Fn(&AccountState) -> R + Sync,
    ) -> Result<R, EngineError> {
        let account = &acct.id;
        let limit = self.config.daily_loss_pct(acct);
        // A state that exists and is unchanged is not written, and is left exactly as it was;
        // events are announced only with the write that records them. New marks alone are a
        // change (a flat account's marks go empty once); with an open position equity moves
        // with them, so they ride on the write the fold makes anyway.
        let (r, day, events) = self
            .repo
            .update_account_state(account, |st, existing| {
                let before = risk::Observed::of(st);
                let events = risk::observe_equity_in(st, equity, now, &self.config.risk, limit);
                let new_marks = marks.filter(|m| **m != st.marks);
                let write = !existing || risk::Observed::of(st) != before || new_marks.is_some();
                if write {
                    st.updated_at = now;
                    if let Some(m) = new_marks {
                        st.marks = m.clone();
                        st.marks_at = Some(now);
                    }
                } else {
                    before.restore(st);
                }
                let events = if write { events } else { Vec::new() };
                (write, (then(st), st.day, events))
            })
            .await
            .map_err(|e| contended(e, account))?;
        self.announce_risk_events(account, day, events, now).await;
        Ok(r)
    }

    /// Tell the trader what a written risk fold changed (level, halt, halt lifted).
    pub(super) async fn announce_risk_events(
        &self,
        account: &AccountId,
        day: i64,
        events: Vec<risk::RiskEvent>,
        now: i64,
    ) {
        for ev in events {
            let (priority, kind) = notices::risk_event_kind(&ev);
            // Delivered to the trader by the notifier; the log keeps it at info (backtests
            // would otherwise print every level change).
            tracing::info!(%account, event = %ev.describe(), "risk event");
            let message = || notices::risk_event(account, day, &ev);
            self.notify(account, priority, kind, message, now).await;
        }
    }

    /// Record a closed trade once and count it once in the account's risk state (consecutive
    /// results, the day's realised PnL). A trade already recorded changes nothing.
    pub(super) async fn record_trade(&self, t: &TradeRecord) -> Result<bool, EngineError> {
        if !self.repo.record_trade(t).await? {
            return Ok(false);
        }
        self.count_in_strategy_stats(t).await?;
        let hour = self.config.risk.day_start_hour_utc;
        let counted = self
            .repo
            .update_account_state(&t.account, |st, _| {
                match risk::apply_trade(st, &t.id, t.pnl, t.exit_time, hour) {
                    Some(next) => {
                        *st = next;
                        (true, ())
                    }
                    None => (false, ()),
                }
            })
            .await;
        match counted {
            Ok(()) => {}
            Err(UpdateError::Contended { .. }) => {
                tracing::warn!(trade = %t.id, "trade recorded but not counted in the account state (concurrent writers)");
            }
            Err(UpdateError::Store(e)) => return Err(e.into()),
        }
        Ok(true)
    }

    /// Count a newly recorded trade in its strategy's stats item (what entries are sized from).
    /// A missing or differently sized window is rebuilt from the trade records instead.
    pub(super) async fn count_in_strategy_stats(&self, t: &TradeRecord) -> Result<(), EngineError> {
        let hour = self.config.risk.day_start_hour_utc;
        let window = self.stats_window();
        let count = |st: &mut risk::StrategyStats| {
            if st.apply(t.exit_time, &t.id, t.pnl.get(), hour, window) {
                Update::Changed
            } else {
                Update::Keep
            }
        };
        let (acct, strategy) = (&t.account, &t.strategy);
        // Counted where it is when the item keeps this window (in place on the typed state).
        let counted = self
            .repo
            .update_strategy_stats(acct, strategy, |st| match st {
                Some(st) if st.keep == window => (count(st), true),
                _ => (Update::Keep, false),
            })
            .await;
        let done = match counted {
            Ok(counted) if !counted => {
                // Missing or sized for another lookback: rebuilt from the trade records (which
                // hold `t`); a writer that rebuilt it meanwhile left a window to count in.
                let fresh = self.rebuild_strategy_stats(acct, strategy).await?;
                self.repo
                    .update_strategy_stats(acct, strategy, |st| match st {
                        Some(st) if st.keep == window => (count(st), ()),
                        _ => (Update::Put(fresh.clone()), ()),
                    })
                    .await
            }
            other => other.map(|_| ()),
        };
        match done {
            Ok(()) => Ok(()),
            Err(UpdateError::Contended { .. }) => {
                tracing::warn!(trade = %t.id, "trade recorded but not counted in the strategy stats (concurrent writers)");
                Ok(())
            }
            Err(UpdateError::Store(e)) => Err(e.into()),
        }
    }

    pub(super) fn stats_window(&self) -> usize {
        self.config.risk.kelly.lookback.max(1)
    }

    pub(super) async fn rebuild_strategy_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
    ) -> Result<risk::StrategyStats, EngineError> {
        let trades = self.repo.trades(account).await?;
        Ok(risk::StrategyStats::from_trades(
            trades
                .iter()
                .filter(|t| &t.strategy == strategy)
                .map(|t| (t.exit_time, t.id.as_str(), t.pnl.get())),
            self.config.risk.day_start_hour_utc,
            self.stats_window(),
        ))
    }

    /// The strategy's stats window, rebuilt (and saved) from the trade records when missing or
    /// sized for another lookback.
    pub(super) async fn strategy_stats(
        &self,
        account: &AccountId,
        strategy: &StrategyId,
    ) -> Result<risk::StrategyStats, EngineError> {
        let current = self.repo.strategy_stats(account, strategy).await?;
        if let Some(v) = &current {
            if v.value.keep == self.stats_window() {
                return Ok(v.value.clone());
            }
        }
        let st = self.rebuild_strategy_stats(account, strategy).await?;
        match self
            .repo
            .save_strategy_stats(account, strategy, &st, current.map(|v| v.version))
            .await
        {
            // Somebody else saved it meanwhile: theirs is as good as ours.
            Ok(_) => {}
            Err(e) if e.is_conflict() => {}
            Err(e) => return Err(e.into()),
        }
        Ok(st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OrderSide;
    use rust_decimal_macros::dec;

    /// An open position of 2 at 100 opened at 1 000, with an entry fee of 0.5.
    fn pos(side: Side) -> Position {
        let id = ClientId("e".into());
        let o = OrderInfo {
            symbol: Symbol::new("BTCUSDT"),
            order_id: 1,
            client_id: "e".into(),
            side: side.entry_order_side(),
            status: OrderStatus::Filled,
            orig_qty: Qty::new(dec!(2)),
            executed_qty: Qty::new(dec!(2)),
            avg_price: Price::new(dec!(100)),
            reduce_only: false,
            update_time: 1_000,
        };
        let found = super::super::adopt::FoundEntry {
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
        let filters = crate::paper::generous_filters(&Symbol::new("BTCUSDT"));
        let mut p = super::super::adopt::found_position(&found, &filters, 3, None, 1_000);
        p.entry_fee = Notional::new(dec!(0.5));
        p
    }

    fn fill(
        order_id: i64,
        side: OrderSide,
        qty: Decimal,
        price: Decimal,
        pnl: Decimal,
        time: i64,
    ) -> UserTrade {
        UserTrade {
            symbol: Symbol::new("BTCUSDT"),
            id: time,
            order_id,
            side,
            price: Price::new(price),
            qty: Qty::new(qty),
            realized_pnl: Notional::new(pnl),
            commission: Notional::new(dec!(0.1)),
            commission_asset: "USDT".into(),
            time,
        }
    }

    fn algo(actual: Option<Decimal>, trigger: Option<Decimal>) -> AlgoOrderInfo {
        AlgoOrderInfo {
            algo_id: 1,
            client_algo_id: "s".into(),
            symbol: Symbol::new("BTCUSDT"),
            side: OrderSide::Sell,
            kind: AlgoKind::StopMarket,
            status: AlgoStatus::Finished,
            trigger_price: trigger.map(Price::new),
            qty: None,
            close_position: true,
            reduce_only: false,
            actual_order_id: Some(9),
            actual_price: actual.map(Price::new),
            update_time: 0,
        }
    }

    #[test]
    fn closing_trades_are_the_orders_fills_or_the_exit_sides_realising_ones() {
        use OrderSide::*;
        let trades = [
            fill(9, Sell, dec!(1), dec!(110), dec!(10), 2_000),
            fill(8, Sell, dec!(1), dec!(111), dec!(11), 2_000),
            fill(7, Sell, dec!(1), dec!(111), dec!(0), 2_000),
            fill(6, Buy, dec!(1), dec!(111), dec!(5), 2_000),
            fill(5, Sell, dec!(1), dec!(90), dec!(-10), 500),
        ];
        let ids = |side, order| -> Vec<i64> {
            closing_trades(&trades, &pos(side), order)
                .iter()
                .map(|t| t.order_id)
                .collect()
        };
        let cases = [
            (Side::Long, Some(9), vec![9]),
            (Side::Long, Some(4), vec![]),
            (Side::Long, None, vec![9, 8]),
            (Side::Short, None, vec![6]),
        ];
        for (side, order, want) in cases {
            assert_eq!(ids(side, order), want, "{side:?} {order:?}");
        }
    }

    #[test]
    fn exchange_close_figures_from_fills_or_the_fired_orders_price() {
        let long = pos(Side::Long);
        let (a, b) = (
            fill(9, OrderSide::Sell, dec!(1), dec!(110), dec!(10), 2_000),
            fill(9, OrderSide::Sell, dec!(3), dec!(114), dec!(42), 3_000),
        );
        let cases: [(Vec<&UserTrade>, Option<AlgoOrderInfo>, ExitFigures); 5] = [
            (
                vec![&a, &b],
                None,
                ExitFigures {
                    price: Price::new(dec!(113)),
                    gross: dec!(52),
                    fee: dec!(0.2),
                    time: 3_000,
                },
            ),
            (
                vec![&a],
                Some(algo(Some(dec!(1)), None)),
                ExitFigures {
                    price: Price::new(dec!(110)),
                    gross: dec!(10),
                    fee: dec!(0.1),
                    time: 2_000,
                },
            ),
            (
                vec![],
                Some(algo(Some(dec!(95)), Some(dec!(96)))),
                ExitFigures {
                    price: Price::new(dec!(95)),
                    gross: dec!(-10),
                    fee: dec!(0),
                    time: 7,
                },
            ),
            (
                vec![],
                Some(algo(None, Some(dec!(96)))),
                ExitFigures {
                    price: Price::new(dec!(96)),
                    gross: dec!(-8),
                    fee: dec!(0),
                    time: 7,
                },
            ),
            (
                vec![],
                None,
                ExitFigures {
                    price: Price::new(dec!(100)),
                    gross: dec!(0),
                    fee: dec!(0),
                    time: 7,
                },
            ),
        ];
        for (closing, algo, want) in cases {
            assert_eq!(
                exchange_close_figures(&long, &closing, algo.as_ref(), 7),
                want
            );
        }
        let short =
            exchange_close_figures(&pos(Side::Short), &[], Some(&algo(None, Some(dec!(96)))), 7);
        assert_eq!(short.gross, dec!(8));
    }

    #[test]
    fn a_close_by_none_of_our_orders_with_a_clearance_fee_is_a_liquidation() {
        let cases = [
            ("stop", Some(9), dec!(0), "stop"),
            ("stop", Some(9), dec!(3), "stop"),
            ("exchange", None, dec!(0), "exchange"),
            ("exchange", None, dec!(3), "liquidation"),
            ("take_profit", None, dec!(3), "liquidation"),
        ];
        for (found, order, clearance, want) in cases {
            assert_eq!(close_reason(found.into(), order, clearance), want);
        }
        assert_eq!(
            close_notice_kind("liquidation"),
            (Priority::Critical, "liquidation")
        );
        assert_eq!(
            close_notice_kind("stop"),
            (Priority::High, "closed_on_exchange")
        );
    }

    #[test]
    fn exchange_close_trade_counts_entry_fee_clearance_and_funding() {
        let p = pos(Side::Long);
        let f = ExitFigures {
            price: Price::new(dec!(110)),
            gross: dec!(20),
            fee: dec!(0.2),
            time: 3_000,
        };
        let t = exchange_close_trade(&p, &f, dec!(-0.3), dec!(1), "liquidation");
        assert_eq!(t.id, "e:close");
        assert_eq!(
            (t.qty, t.entry_price, t.exit_price),
            (
                Qty::new(dec!(2)),
                Price::new(dec!(100)),
                Price::new(dec!(110))
            )
        );
        assert_eq!((t.entry_time, t.exit_time), (1_000, 3_000));
        assert_eq!(t.pnl, Notional::new(dec!(18.0)));
        assert_eq!(t.fees, Notional::new(dec!(1.7)));
        assert_eq!(t.funding, Notional::new(dec!(-0.3)));
        assert_eq!(t.reason, "liquidation");
    }
}
