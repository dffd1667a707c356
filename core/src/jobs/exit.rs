//! Exits at market: whole closes (signal, reversal, operator), partial closes, and the figures
//! of a close.

use super::*;

/// Why a position is closed at market: the reason its trade records and the words the
/// notifications give (a strategy's own, or the operator's command).
#[derive(Clone, Copy, Debug)]
pub(super) struct Why<'a> {
    pub kind: ExitReason,
    pub text: &'a str,
}

impl<'a> Why<'a> {
    pub fn new(kind: ExitReason, text: &'a str) -> Self {
        Why { kind, text }
    }
}

/// The client id of take-profit step `stage` of `pos` (deterministic: a retried step finds it).
pub(super) fn partial_exit_id(pos: &Position, stage: u8) -> ClientId {
    ClientId::derive(
        &pos.key.account,
        &pos.key.strategy,
        &pos.key.symbol,
        pos.signal_open_time,
        Intent::PartialExit,
        stage as u32,
    )
}

/// The trade of take-profit step `stage`, which closed `filled` of `pos` with the figures
/// `(exit price, gross PnL, exit fee)`, and the part of the entry fee it carries: the entry fee
/// is shared pro rata between the part closed now and the rest.
pub(super) fn partial_trade(
    pos: &Position,
    filled: Qty,
    (exit_price, gross, exit_fee): (Price, Decimal, Decimal),
    stage: u8,
    now: i64,
) -> (TradeRecord, Decimal) {
    let fee_share = pos.entry_fee.get() * filled.get() / pos.qty.get();
    let id = format!("{}:tp{stage}", pos.entry_client_id);
    let reason = format!("partial_take_profit_{stage}");
    // Funding is attributed once, to the close of what remains (zero here).
    let trade = TradeRecord {
        pnl: Notional::new(gross - exit_fee - fee_share),
        fees: Notional::new(exit_fee + fee_share),
        ..closing_trade(pos, id, filled, (exit_price, now), reason)
    };
    (trade, fee_share)
}

/// `pos` after take-profit step `stage` closed `filled` of it: the rest, with the rest of the
/// entry fee (`fee_share` went to the step's trade).
pub(super) fn after_partial(
    pos: &Position,
    filled: Qty,
    fee_share: Decimal,
    stage: u8,
    now: i64,
) -> Position {
    let mut p = pos.clone();
    p.qty = pos.qty - filled;
    p.entry_fee = Notional::new(pos.entry_fee.get() - fee_share);
    p.partial_exits_done = stage;
    p.updated_at = now;
    p
}

/// The trade of a whole close at market that filled `filled` of `pos` with the figures
/// `(exit price, gross PnL, exit fee)` for `reason`: the entry fee and the funding share count in
/// its PnL.
pub(super) fn exit_trade(
    pos: &Position,
    filled: Qty,
    (exit_price, gross, exit_fee): (Price, Decimal, Decimal),
    funding: Decimal,
    reason: ExitReason,
    now: i64,
) -> TradeRecord {
    let id = format!("{}:close", pos.entry_client_id);
    TradeRecord {
        pnl: Notional::new(gross - exit_fee - pos.entry_fee.get() + funding),
        fees: Notional::new(exit_fee + pos.entry_fee.get()),
        funding: Notional::new(funding),
        ..closing_trade(pos, id, filled, (exit_price, now), reason.to_string())
    }
}

impl Engine {
    /// Close a position with a reduce-only market order, cancel its protective orders and record
    /// the trade with the realised figures the exchange reports.
    pub(super) async fn exit(
        &self,
        ex: &dyn Exchange,
        p: Versioned<Position>,
        why: Why<'_>,
        open_time: i64,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let pos = &p.value;
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            open_time,
            Intent::Exit,
            0,
        );
        self.exit_as(ex, p, why, id, now, report).await
    }

    /// [`Engine::exit`] with the closing order's client id given.
    pub(super) async fn exit_as(
        &self,
        ex: &dyn Exchange,
        p: Versioned<Position>,
        why: Why<'_>,
        id: ClientId,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        // `ex` trades this position's account.
        let pos = &p.value;
        let reason = why.text;
        let filters = ex.symbol_filters(&pos.key.symbol).await?;
        let order = MarketOrder {
            symbol: pos.key.symbol.clone(),
            side: pos.side.exit_order_side(),
            qty: orders::close_qty(&filters, pos.qty),
            reduce_only: self
                .reduces_net(ex, &pos.key.symbol, pos.side, pos.qty)
                .await?,
            client_id: id.clone(),
        };
        let policy = self.before_send(report).await?;
        let fill = match orders::submit_market(ex, &order, policy).await {
            Ok(f) => f,
            Err(e) => {
                if e.refusal().is_some() {
                    report.orders_rejected += 1;
                }
                self.notify(
                    &pos.key.account,
                    Priority::Critical,
                    "exit_failed",
                    || notices::exit_failed(&id, pos, reason, &e),
                    now,
                )
                .await;
                return Err(e.into());
            }
        };
        report.orders_placed += 1;
        self.cancel_protection(ex, pos).await;
        let figures = self.closing_figures(ex, pos, &fill).await;
        // The order is done: missing income history must not fail the exit (logged, funding 0).
        let (funding, _) = self.position_income(ex, pos, now).await.unwrap_or_else(|e| {
            tracing::warn!(position = %pos.key, error = %e, "funding unknown (income history failed)");
            (Decimal::ZERO, Decimal::ZERO)
        });
        let trade = exit_trade(pos, fill.executed_qty, figures, funding, why.kind, now);
        self.record_trade(&trade).await?;
        self.repo.delete_position(&pos.key, p.version).await?;
        self.notify(
            &pos.key.account,
            Priority::High,
            "exit",
            || notices::exit(&id, pos, &trade, reason),
            now,
        )
        .await;
        Ok(())
    }

    /// Realised figures of one closing order from the exchange's fills: (avg price, gross PnL, fees).
    pub(super) async fn closing_figures(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        fill: &OrderInfo,
    ) -> (Price, Decimal, Decimal) {
        let trades = ex
            .user_trades(&pos.key.symbol, pos.opened_at - 60_000)
            .await
            .unwrap_or_default();
        let closing: Vec<_> = trades
            .iter()
            .filter(|t| t.order_id == fill.order_id)
            .collect();
        if closing.is_empty() {
            let gross = pos.side.sign()
                * fill.executed_qty.get()
                * (fill.avg_price.get() - pos.entry_price.get());
            return (fill.avg_price, gross, Decimal::ZERO);
        }
        let q: Decimal = closing.iter().map(|t| t.qty.get()).sum();
        let px = closing
            .iter()
            .map(|t| t.qty.get() * t.price.get())
            .sum::<Decimal>()
            / q;
        (
            Price::new(px),
            closing.iter().map(|t| t.realized_pnl.get()).sum(),
            closing.iter().map(|t| t.commission.get()).sum(),
        )
    }

    /// Close part of a position (a take-profit step) and record it as a trade of its own.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn partial_close(
        &self,
        acct: &AccountRuntime,
        mut p: Versioned<Position>,
        fraction: Decimal,
        stage: u8,
        reason: &str,
        now: i64,
        report: &mut JobReport,
    ) -> Result<Outcome, EngineError> {
        if stage <= p.value.partial_exits_done {
            return Ok(Outcome::Held(format!(
                "hold (take-profit step {stage} already done)"
            )));
        }
        let ex = acct.exchange.as_ref();
        let filters = ex.symbol_filters(&p.value.key.symbol).await?;
        let qty = orders::close_qty(&filters, p.value.qty * fraction.min(Decimal::ONE));
        if qty.is_zero() {
            return Ok(Outcome::Skipped(format!(
                "take-profit step {stage} skipped: {} × {fraction} is below one lot",
                p.value.qty
            )));
        }
        if qty.get() >= p.value.qty.get() {
            let outcome = Outcome::Closed {
                reason: reason.to_string(),
            };
            self.exit(
                acct.exchange.as_ref(),
                p,
                Why::new(ExitReason::PartialTakeProfit(stage), reason),
                Timeframe::M1.last_closed_open(now),
                now,
                report,
            )
            .await?;
            return Ok(outcome);
        }
        let pos = p.value.clone();
        let id = partial_exit_id(&pos, stage);
        let order = MarketOrder {
            symbol: pos.key.symbol.clone(),
            side: pos.side.exit_order_side(),
            qty,
            reduce_only: self.reduces_net(ex, &pos.key.symbol, pos.side, qty).await?,
            client_id: id.clone(),
        };
        let policy = self.before_send(report).await?;
        let fill = orders::submit_market(ex, &order, policy).await?;
        report.orders_placed += 1;
        let figures = self.closing_figures(ex, &pos, &fill).await;
        let (trade, fee_share) = partial_trade(&pos, fill.executed_qty, figures, stage, now);
        self.record_trade(&trade).await?;
        p.value = after_partial(&pos, fill.executed_qty, fee_share, stage, now);
        p.version = self.repo.save_position(&p.value, Some(p.version)).await?;
        self.resize_protection(ex, &mut p, &filters, now, report)
            .await?;
        self.notify(
            &pos.key.account,
            Priority::High,
            "partial_exit",
            || notices::partial_exit(&id, &pos, stage, fill.executed_qty, &trade, reason),
            now,
        )
        .await;
        Ok(Outcome::TookProfit {
            stage,
            qty: fill.executed_qty,
            price: trade.exit_price,
        })
    }

    /// Close every open strategy position of the enabled accounts (or of one account) at market,
    /// cancelling their protective orders and recording the trades. MANUAL positions are never
    /// touched. Used at the end of a backtest and by an emergency stop; `reason` is what the
    /// trades record.
    pub async fn close_positions(
        &self,
        account: Option<&AccountId>,
        reason: ExitReason,
        now: i64,
    ) -> JobReport {
        self.close_positions_where(account, reason, now, |_| true)
            .await
    }

    /// [`Self::close_positions`] restricted to the open strategy positions `wanted` accepts
    /// (the operator's `/close SYMBOL [STRATEGY]`); MANUAL positions are never touched either.
    pub async fn close_positions_where(
        &self,
        account: Option<&AccountId>,
        reason: ExitReason,
        now: i64,
        wanted: impl Fn(&PositionKey) -> bool,
    ) -> JobReport {
        let mut report = JobReport::default();
        let text = reason.to_string();
        for acct in self
            .accounts
            .iter()
            .filter(|a| a.config.enabled && account.is_none_or(|x| x == &a.config.id))
        {
            let positions = match self.repo.positions(&acct.config.id).await {
                Ok(p) => p,
                Err(e) => {
                    report.errors.push(JobFailure::step(&acct.config.id, e));
                    continue;
                }
            };
            for p in positions
                .into_iter()
                .filter(|p| p.value.is_open() && !p.value.is_manual && wanted(&p.value.key))
            {
                let key = p.value.key.clone();
                match self
                    .exit(
                        acct.exchange.as_ref(),
                        p,
                        Why::new(reason, &text),
                        Timeframe::M1.last_closed_open(now),
                        now,
                        &mut report,
                    )
                    .await
                {
                    Ok(()) => report.note(format!("{key}: closed ({reason})")),
                    Err(e) => report.errors.push(JobFailure::step(key, e)),
                }
            }
        }
        report
    }

    // -----------------------------------------------------------------------------------------
    // sync
    // -----------------------------------------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    /// An open long of 4 at 100 with an entry fee of 2.
    fn pos() -> Position {
        let id = ClientId("e".into());
        let o = OrderInfo {
            symbol: Symbol::new("BTCUSDT"),
            order_id: 1,
            client_id: "e".into(),
            side: crate::domain::OrderSide::Buy,
            status: OrderStatus::Filled,
            orig_qty: Qty::new(dec!(4)),
            executed_qty: Qty::new(dec!(4)),
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
            open_time: 60_000,
            side: Side::Long,
            order: &o,
        };
        let filters = crate::paper::generous_filters(&Symbol::new("BTCUSDT"));
        let mut p = super::super::adopt::found_position(&found, &filters, 3, None, 1_000);
        p.entry_fee = Notional::new(dec!(2));
        p
    }

    #[test]
    fn a_partial_close_carries_its_share_of_the_entry_fee() {
        // (filled, gross, exit fee, want fee share, want pnl)
        let cases = [
            (dec!(1), dec!(10), dec!(0.1), dec!(0.5), dec!(9.4)),
            (dec!(2), dec!(-4), dec!(0.2), dec!(1), dec!(-5.2)),
            (dec!(3), dec!(0), dec!(0), dec!(1.5), dec!(-1.5)),
        ];
        for (filled, gross, fee, want_share, want_pnl) in cases {
            let p = pos();
            let figures = (Price::new(dec!(110)), gross, fee);
            let (t, share) = partial_trade(&p, Qty::new(filled), figures, 2, 9);
            assert_eq!(share, want_share);
            assert_eq!(
                (t.pnl, t.fees),
                (Notional::new(want_pnl), Notional::new(fee + want_share))
            );
            assert_eq!(
                (t.id.as_str(), t.reason.as_str()),
                ("e:tp2", "partial_take_profit_2")
            );
            assert_eq!(
                (t.qty, t.exit_price, t.exit_time),
                (Qty::new(filled), Price::new(dec!(110)), 9)
            );
            assert!(t.funding.is_zero());
            let rest = after_partial(&p, Qty::new(filled), share, 2, 9);
            assert_eq!(rest.qty, Qty::new(dec!(4) - filled));
            assert_eq!(rest.entry_fee, Notional::new(dec!(2) - want_share));
            assert_eq!((rest.partial_exits_done, rest.updated_at), (2, 9));
        }
    }

    #[test]
    fn a_whole_close_counts_the_entry_fee_and_funding() {
        // (gross, exit fee, funding, want pnl, want fees)
        let cases = [
            (dec!(40), dec!(0.4), dec!(0), dec!(37.6), dec!(2.4)),
            (dec!(-8), dec!(0.4), dec!(-0.1), dec!(-10.5), dec!(2.4)),
        ];
        for (gross, fee, funding, want_pnl, want_fees) in cases {
            let t = exit_trade(
                &pos(),
                Qty::new(dec!(4)),
                (Price::new(dec!(110)), gross, fee),
                funding,
                ExitReason::Signal,
                9,
            );
            assert_eq!(
                (t.pnl, t.fees, t.funding),
                (
                    Notional::new(want_pnl),
                    Notional::new(want_fees),
                    Notional::new(funding)
                )
            );
            assert_eq!(
                (t.id.as_str(), t.reason.as_str(), t.exit_time),
                ("e:close", "signal", 9)
            );
        }
    }

    /// The trade carries the reason it was closed for, not always `signal`.
    #[test]
    fn a_whole_close_records_why_it_closed() {
        let cases = [
            (ExitReason::Signal, "signal"),
            (ExitReason::Stop, "stop"),
            (ExitReason::EmergencyStop, "emergency_stop"),
            (ExitReason::Manual, "manual"),
            (ExitReason::EndOfData, "end_of_data"),
            (ExitReason::PartialTakeProfit(3), "partial_take_profit_3"),
        ];
        for (why, want) in cases {
            let figures = (Price::new(dec!(110)), dec!(40), dec!(0.4));
            let t = exit_trade(&pos(), Qty::new(dec!(4)), figures, dec!(0), why, 9);
            assert_eq!(t.reason, want);
        }
    }

    #[test]
    fn each_take_profit_step_has_its_own_deterministic_id() {
        let p = pos();
        assert_eq!(partial_exit_id(&p, 1), partial_exit_id(&p.clone(), 1));
        assert_ne!(partial_exit_id(&p, 1), partial_exit_id(&p, 2));
        let want = ClientId::derive(
            &p.key.account,
            &p.key.strategy,
            &p.key.symbol,
            60_000,
            Intent::PartialExit,
            1,
        );
        assert_eq!(partial_exit_id(&p, 1), want);
    }
}
