//! Exchange-side exits: a position's take-profit ladder and trailing stop placed or resized
//! from its strategy's plan, and their fills recorded.

use super::*;

impl Engine {
    /// The exchange-side exits the position's strategy declares: none under `--risk off` (no
    /// protective orders at all) and for MANUAL positions; `None` (leave what is on the exchange
    /// as it is) for a strategy no longer configured or whose parameters no longer build.
    pub(super) fn exit_plan(&self, pos: &Position) -> Option<strategy::ExitPlan> {
        if !self.sizing.protects() || pos.is_manual {
            return Some(strategy::ExitPlan::default());
        }
        let s = self.config.strategy(pos.key.strategy.as_str())?;
        match strategy::build(&s.name, &s.params, &format!("strategies.{}.params", s.name)) {
            Ok(st) => Some(st.exchange_exits()),
            Err(e) => {
                tracing::warn!(position = %pos.key, error = %e, "exit plan unavailable; exit orders left as they are");
                None
            }
        }
    }

    /// Deterministic `clientAlgoId` of an exit order: one per ladder stage (or the trailing stop)
    /// and re-placement generation, so a retry finds the order instead of sending a second one.
    pub(super) fn exit_client_id(pos: &Position, kind: ExitKind, generation: u32) -> ClientId {
        let (intent, n) = match kind {
            ExitKind::TakeProfit { stage } => (
                Intent::TakeProfitStep,
                generation
                    .saturating_mul(100)
                    .saturating_add(u32::from(stage)),
            ),
            ExitKind::Trailing { .. } => (Intent::TrailingStop, generation),
        };
        ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            intent,
            n,
        )
    }

    /// Make a position's exchange-side exits (take-profit ladder, trailing stop) match `plan` for
    /// its current quantity, average entry and steps done (`orders::plan_exits`): orders that fit
    /// stay, orders that no longer fit are cancelled after their replacements are placed, and
    /// missing ones are placed with fresh deterministic ids. An order that had gone from the
    /// exchange (cancelled by hand) and is re-placed is alerted. When one has fired and the sync
    /// has not recorded it yet, nothing changes. Returns whether `pos.exit_orders` changed.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn reconcile_exits(
        &self,
        ex: &dyn Exchange,
        pos: &mut Position,
        filters: &SymbolFilters,
        others: &[Versioned<Position>],
        plan: &strategy::ExitPlan,
        open_ids: Option<&HashSet<&str>>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<bool, EngineError> {
        if plan.is_empty() && pos.exit_orders.is_empty() {
            return Ok(false);
        }
        let (want, notes) = orders::plan_exits(
            filters,
            plan,
            pos.side,
            pos.entry_price,
            pos.qty,
            pos.partial_exits_done,
        );
        // Same sharing rule as the stop (see `protect`): reduce-only unless opposite shares.
        let (shared, reduce_only) = symbol_sharing(pos, others);
        let mut live: Vec<ExitOrder> = Vec::new();
        let mut gone: Vec<(ExitOrder, String)> = Vec::new();
        for e in &pos.exit_orders {
            if open_ids.is_some_and(|ids| ids.contains(e.client_id.as_str())) {
                live.push(e.clone());
                continue;
            }
            match ex.algo_by_client_id(&e.client_id).await? {
                Some(a) if a.status.is_open() => live.push(e.clone()),
                Some(a)
                    if matches!(
                        a.status,
                        AlgoStatus::Triggering | AlgoStatus::Triggered | AlgoStatus::Finished
                    ) =>
                {
                    // Fired: the sync records the fill first (`record_exit_fills`).
                    return Ok(false);
                }
                Some(a) => gone.push((e.clone(), format!("{:?}", a.status).to_uppercase())),
                None => gone.push((e.clone(), "unknown to the exchange".into())),
            }
        }
        let fits = |e: &ExitOrder, w: &orders::PlannedExit| {
            e.kind == w.kind
                && e.trigger_price == w.trigger
                && e.reduce_only == reduce_only
                && match w.kind {
                    ExitKind::TakeProfit { .. } => e.qty == w.qty,
                    // Re-placing a trailing stop restarts its tracking of the best price. Held
                    // alone, a larger reduce-only quantity is capped by the exchange at what is
                    // left after a ladder step, so it stays; a shared symbol needs the exact share.
                    ExitKind::Trailing { .. } => {
                        e.qty == w.qty || (!shared && reduce_only && e.qty.0 > w.qty.0)
                    }
                }
        };
        let mut keep: Vec<ExitOrder> = Vec::new();
        let mut todo: Vec<orders::PlannedExit> = Vec::new();
        for w in &want {
            match live.iter().position(|e| fits(e, w)) {
                Some(i) => keep.push(live.remove(i)),
                None => todo.push(*w),
            }
        }
        let stale = live;
        if todo.is_empty() && stale.is_empty() && gone.is_empty() {
            return Ok(false);
        }
        let same_slot = |a: ExitKind, b: ExitKind| match (a, b) {
            (ExitKind::TakeProfit { stage: x }, ExitKind::TakeProfit { stage: y }) => x == y,
            (ExitKind::Trailing { .. }, ExitKind::Trailing { .. }) => true,
            _ => false,
        };
        let describe = |k: ExitKind| match k {
            ExitKind::TakeProfit { stage } => format!("take-profit step {stage}"),
            ExitKind::Trailing { callback_rate } => {
                format!("trailing stop (callback {callback_rate} %)")
            }
        };
        if !todo.is_empty() {
            pos.exit_generation += 1;
            for n in &notes {
                report.lines.push(format!("{}: {n}", pos.key));
            }
        }
        let mut placed = Vec::new();
        for w in todo {
            let id = Self::exit_client_id(pos, w.kind, pos.exit_generation);
            let order = AlgoOrder {
                symbol: pos.key.symbol.clone(),
                side: pos.side.exit_order_side(),
                kind: match w.kind {
                    ExitKind::TakeProfit { .. } => AlgoKind::TakeProfitMarket,
                    ExitKind::Trailing { callback_rate } => {
                        AlgoKind::TrailingStopMarket { callback_rate }
                    }
                },
                trigger_price: Some(w.trigger),
                qty: Some(w.qty),
                close_position: false,
                reduce_only,
                working_type: WorkingType::MarkPrice,
                client_algo_id: id.clone(),
            };
            match orders::submit_algo(ex, &order, self.timing.submit).await {
                Ok(_) => {
                    report.orders_placed += 1;
                    placed.push(ExitOrder {
                        kind: w.kind,
                        client_id: id.0.clone(),
                        trigger_price: w.trigger,
                        qty: w.qty,
                        reduce_only,
                    });
                    if let Some((_, was)) = gone.iter().find(|(g, _)| same_slot(g.kind, w.kind)) {
                        self.notify(
                            &pos.key.account,
                            Priority::High,
                            "exit_replaced",
                            || {
                                (
                                    format!("reexit:{id}"),
                                    format!(
                                        "{}: {} was missing ({was}); re-placed at {} for {}",
                                        pos.key,
                                        describe(w.kind),
                                        w.trigger,
                                        w.qty
                                    ),
                                )
                            },
                            now,
                        )
                        .await;
                    }
                }
                Err(e) => {
                    if e.refusal().is_some() {
                        report.orders_rejected += 1;
                    }
                    let text = format!(
                        "{}: {} at {} for {} could not be placed: {e}; the strategy's at-close rule stays in charge",
                        pos.key,
                        describe(w.kind),
                        w.trigger,
                        w.qty
                    );
                    report.lines.push(text.clone());
                    self.notify(
                        &pos.key.account,
                        Priority::High,
                        "exit_failed",
                        || {
                            (
                                format!(
                                    "exitfail:{}:{}:{}",
                                    pos.entry_client_id,
                                    describe(w.kind),
                                    w.trigger
                                ),
                                text,
                            )
                        },
                        now,
                    )
                    .await;
                }
            }
        }
        for e in &stale {
            if let Err(err) =
                orders::cancel_algo(ex, &pos.key.symbol, &e.client_id, self.timing.submit).await
            {
                tracing::warn!(client_algo_id = %e.client_id, error = %err, "stale exit order not cancelled");
            }
        }
        keep.extend(placed);
        keep.sort_by_key(|e| match e.kind {
            ExitKind::TakeProfit { stage } => u16::from(stage),
            ExitKind::Trailing { .. } => u16::MAX,
        });
        pos.exit_orders = keep;
        Ok(true)
    }

    /// The sync's check of a position's exchange-side exits: re-place what is missing (alerted
    /// when it was cancelled by hand), resize what no longer fits.
    pub(super) async fn check_exits(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        open_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let Some(plan) = self.exit_plan(&v.value) else {
            return Ok(());
        };
        if plan.is_empty() && v.value.exit_orders.is_empty() {
            return Ok(());
        }
        let filters = ex.symbol_filters(&v.value.key.symbol).await?;
        let others = self.repo.positions(&v.value.key.account).await?;
        let mut p = v.value.clone();
        if self
            .reconcile_exits(
                ex,
                &mut p,
                &filters,
                &others,
                &plan,
                Some(open_ids),
                now,
                report,
            )
            .await?
        {
            p.updated_at = now;
            v.version = self.repo.save_position(&p, Some(v.version)).await?;
            v.value = p;
        }
        Ok(())
    }

    /// Record the exchange-side exits of a strategy position that fired since the last sync, in
    /// the order they filled. A take-profit step that leaves part of the position is a partial
    /// close: its own trade (`<entry id>:tp<stage>`, the same id the at-close fallback uses) with
    /// the realised PnL and fees of its fills from userTrades, the quantity reduced and
    /// `partial_exits_done` moved on so the step never fires twice; a quantity stop (shared
    /// symbol) is resized to what is left and the rest of the ladder stays. A step that closes
    /// what is left, or the trailing stop, closes the position. Returns true when it closed.
    pub(super) async fn record_exit_fills(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        open_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<bool, EngineError> {
        let mut fired: Vec<(ExitOrder, AlgoOrderInfo)> = Vec::new();
        for e in v
            .value
            .exit_orders
            .iter()
            .filter(|e| !open_ids.contains(e.client_id.as_str()))
        {
            if let Some(a) = ex.algo_by_client_id(&e.client_id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    fired.push((e.clone(), a));
                }
            }
        }
        if fired.is_empty() {
            return Ok(false);
        }
        fired.sort_by_key(|(e, a)| {
            (
                a.update_time,
                match e.kind {
                    ExitKind::TakeProfit { stage } => u16::from(stage),
                    ExitKind::Trailing { .. } => u16::MAX,
                },
            )
        });
        let sym = v.value.key.symbol.clone();
        let trades = ex.user_trades(&sym, v.value.opened_at - 60_000).await?;
        let mut reduced = false;
        for (e, a) in fired {
            v.value.exit_orders.retain(|x| x.client_id != e.client_id);
            let fills: Vec<_> = trades
                .iter()
                .filter(|t| Some(t.order_id) == a.actual_order_id)
                .collect();
            let executed: Decimal = fills.iter().map(|t| t.qty.0).sum();
            if executed.is_zero() {
                tracing::warn!(position = %v.value.key, client_algo_id = %e.client_id, "exit order fired without a fill");
                continue;
            }
            if executed >= v.value.qty.0 {
                let reason = match e.kind {
                    ExitKind::TakeProfit { .. } => "take_profit",
                    ExitKind::Trailing { .. } => "trailing_stop",
                };
                self.record_close(ex, v, Some((reason.to_string(), a)), now)
                    .await?;
                return Ok(true);
            }
            let pos = v.value.clone();
            let exit_price = fills.iter().map(|t| t.qty.0 * t.price.0).sum::<Decimal>() / executed;
            let gross: Decimal = fills.iter().map(|t| t.realized_pnl.0).sum();
            let exit_fee: Decimal = fills.iter().map(|t| t.commission.0).sum();
            // The entry fee is shared pro rata between the part closed now and the rest.
            let fee_share = pos.entry_fee.0 * executed / pos.qty.0;
            let (id, reason, stage) = match e.kind {
                ExitKind::TakeProfit { stage } => (
                    format!("{}:tp{stage}", pos.entry_client_id),
                    format!("partial_take_profit_{stage}"),
                    stage,
                ),
                ExitKind::Trailing { .. } => (
                    format!("{}:trail{}", pos.entry_client_id, a.algo_id),
                    "partial_trailing_stop".to_string(),
                    pos.partial_exits_done,
                ),
            };
            let trade = TradeRecord {
                id,
                account: pos.key.account.clone(),
                strategy: pos.key.strategy.clone(),
                symbol: sym.clone(),
                side: pos.side,
                qty: Qty(executed),
                entry_price: pos.entry_price,
                exit_price: Price(exit_price),
                entry_time: pos.opened_at,
                exit_time: fills.iter().map(|t| t.time).max().unwrap_or(now),
                pnl: Notional(gross - exit_fee - fee_share),
                fees: Notional(exit_fee + fee_share),
                // Funding is attributed once, to the close of what remains.
                funding: Notional::ZERO,
                reason: reason.clone(),
            };
            self.record_trade(&trade).await?;
            v.value.qty = Qty(pos.qty.0 - executed);
            v.value.entry_fee = Notional(pos.entry_fee.0 - fee_share);
            v.value.partial_exits_done = pos.partial_exits_done.max(stage);
            v.value.updated_at = now;
            v.version = self.repo.save_position(&v.value, Some(v.version)).await?;
            reduced = true;
            let text = format!(
                "PARTIAL EXIT {stage} on the exchange ({reason}): {} {executed} of {} {sym} @ {}; PnL {} after fees {}",
                pos.side,
                pos.qty,
                exit_price.round_dp(8).normalize(),
                trade.pnl.0.round_dp(2),
                trade.fees.0.round_dp(2)
            );
            report.lines.push(format!("{}: {text}", pos.key));
            self.notify(
                &pos.key.account,
                Priority::High,
                "partial_exit",
                || (format!("xpartial:{}", e.client_id), text),
                now,
            )
            .await;
        }
        if reduced {
            let filters = ex.symbol_filters(&sym).await?;
            self.resize_protection(ex, v, &filters, now, report).await?;
        }
        Ok(false)
    }
}
