//! Records: closed trades (once), the account's risk state folded from equity readings and
//! trades, and the strategy stats entries are sized from.

use super::*;

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
        let mut reason = "exchange".to_string();
        let mut close_order: Option<i64> = None;
        let mut stop_info: Option<AlgoOrderInfo> = None;
        if let Some((r, a)) = known {
            reason = r;
            close_order = a.actual_order_id;
            stop_info = Some(a);
        }
        if let Some(id) = pos
            .stop_client_id
            .as_ref()
            .filter(|_| close_order.is_none())
        {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    reason = "stop".into();
                    close_order = a.actual_order_id;
                    stop_info = Some(a);
                }
            }
        }
        let exit_ids: Vec<(ExitKind, &str)> = if close_order.is_none() {
            pos.exit_orders
                .iter()
                .map(|e| (e.kind, e.client_id.as_str()))
                .collect()
        } else {
            Vec::new()
        };
        for (kind, id) in exit_ids {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered)
                    && a.actual_order_id.is_some()
                {
                    reason = match kind {
                        ExitKind::TakeProfit { .. } => "take_profit".into(),
                        ExitKind::Trailing { .. } => "trailing_stop".into(),
                    };
                    close_order = a.actual_order_id;
                    stop_info = Some(a);
                    break;
                }
            }
        }
        if close_order.is_none() && pos.take_profit.is_some() {
            let tp = take_profit_id(pos);
            if let Some(a) = ex.algo_by_client_id(tp.as_str()).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    reason = "take_profit".into();
                    close_order = a.actual_order_id;
                    stop_info = Some(a);
                }
            }
        }
        let trades = ex
            .user_trades(&pos.key.symbol, pos.opened_at - 60_000)
            .await?;
        let exit_side = pos.side.exit_order_side();
        let closing: Vec<_> = trades
            .iter()
            .filter(|t| match close_order {
                Some(id) => t.order_id == id,
                None => t.side == exit_side && t.time >= pos.opened_at && !t.realized_pnl.is_zero(),
            })
            .collect();
        let (exit_price, gross, exit_fee) = if closing.is_empty() {
            let px = stop_info
                .as_ref()
                .and_then(|a| a.actual_price.or(a.trigger_price))
                .unwrap_or(pos.entry_price);
            (
                px,
                pos.side.sign() * pos.qty.0 * (px.0 - pos.entry_price.0),
                Decimal::ZERO,
            )
        } else {
            let q: Decimal = closing.iter().map(|t| t.qty.0).sum();
            let px = closing.iter().map(|t| t.qty.0 * t.price.0).sum::<Decimal>() / q;
            (
                Price(px),
                closing.iter().map(|t| t.realized_pnl.0).sum(),
                closing.iter().map(|t| t.commission.0).sum(),
            )
        };
        let exit_time = closing.iter().map(|t| t.time).max().unwrap_or(now);
        let (funding, clearance) = self.position_income(ex, pos, now).await?;
        // Not our stop or take-profit, and the exchange booked a liquidation clearance fee on the
        // symbol while the position was open: it was liquidated.
        if close_order.is_none() && !clearance.is_zero() {
            reason = "liquidation".into();
        }
        let trade = TradeRecord {
            id: format!("{}:close", pos.entry_client_id),
            account: pos.key.account.clone(),
            strategy: pos.key.strategy.clone(),
            symbol: pos.key.symbol.clone(),
            side: pos.side,
            qty: pos.qty,
            entry_price: pos.entry_price,
            exit_price,
            entry_time: pos.opened_at,
            exit_time,
            pnl: Notional(gross - exit_fee - pos.entry_fee.0 - clearance + funding),
            fees: Notional(exit_fee + pos.entry_fee.0 + clearance),
            funding: Notional(funding),
            reason: reason.clone(),
        };
        self.record_trade(&trade).await?;
        self.cancel_protection(ex, pos).await;
        self.repo.delete_position(&pos.key, v.version).await?;
        let (priority, kind) = if reason == "liquidation" {
            (Priority::Critical, "liquidation")
        } else {
            (Priority::High, "closed_on_exchange")
        };
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
                .map(|i| i.income.0)
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
            .map(|v| v.value.qty.0)
            .sum();
        let share = if held > pos.qty.0 {
            pos.qty.0 / held
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
        self.observe_account_then(acct, equity, now, AccountState::clone)
            .await
    }

    /// [`Engine::observe_account`] giving `then` of the state folded instead of a copy of it.
    pub(super) async fn observe_account_then<R>(
        &self,
        acct: &AccountConfig,
        equity: Notional,
        now: i64,
        then: impl Fn(&AccountState) -> R,
    ) -> Result<R, EngineError> {
        let account = &acct.id;
        let limit = self.config.daily_loss_pct(acct);
        // The typed backend folds in place: nothing can write in between. A state that exists
        // and is unchanged is not written, and is left exactly as it was.
        if let Some(r) = self.repo.fold_account_state(account, |st, existing| {
            let before = risk::Observed::of(st);
            let events = risk::observe_equity_in(st, equity, now, &self.config.risk, limit);
            let write = !existing || risk::Observed::of(st) != before;
            if write {
                st.updated_at = now;
            } else {
                before.restore(st);
            }
            // As the loop below: events are announced only with the write that records them.
            let events = if write { events } else { Vec::new() };
            (write, (then(st), st.day, events))
        }) {
            let (r, day, events) = r?;
            self.announce_risk_events(account, day, events, now).await;
            return Ok(r);
        }
        for _ in 0..3 {
            let current = self.repo.account_state(account).await?;
            let (prev, version) = match current {
                Some(v) => (v.value, Some(v.version)),
                None => (AccountState::default(), None),
            };
            let (mut st, events) =
                risk::observe_equity(&prev, equity, now, &self.config.risk, limit);
            if version.is_some() && st == prev {
                return Ok(then(&st));
            }
            st.updated_at = now;
            match self.repo.save_account_state(account, &st, version).await {
                Ok(_) => {}
                // Another job wrote in between: read its state and fold our reading in again.
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
            self.announce_risk_events(account, st.day, events, now)
                .await;
            return Ok(then(&st));
        }
        Err(EngineError::StateContended(account.clone()))
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
            let (priority, kind, id) = match &ev {
                risk::RiskEvent::MddLevelChanged { to, .. } => (
                    Priority::High,
                    "mdd_level",
                    format!("mdd:{account}:{day}:{to}"),
                ),
                risk::RiskEvent::DailyLossHalt { until, .. } => (
                    Priority::Critical,
                    "daily_loss_limit",
                    format!("halt:{account}:{until}"),
                ),
                risk::RiskEvent::HaltLifted => (
                    Priority::Medium,
                    "daily_loss_reset",
                    format!("unhalt:{account}:{day}"),
                ),
            };
            // Delivered to the trader by the notifier; the log keeps it at info (backtests
            // would otherwise print every level change).
            tracing::info!(%account, event = %ev.describe(), "risk event");
            self.notify(account, priority, kind, || (id, ev.describe()), now)
                .await;
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
        for _ in 0..3 {
            let current = self.repo.account_state(&t.account).await?;
            let (prev, version) = match current {
                Some(v) => (v.value, Some(v.version)),
                None => (AccountState::default(), None),
            };
            let Some(st) = risk::apply_trade(&prev, &t.id, t.pnl, t.exit_time, hour) else {
                return Ok(true);
            };
            match self.repo.save_account_state(&t.account, &st, version).await {
                Ok(_) => return Ok(true),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(trade = %t.id, "trade recorded but not counted in the account state (concurrent writers)");
        Ok(true)
    }

    /// Count a newly recorded trade in its strategy's stats item (what entries are sized from).
    /// A missing or differently sized window is rebuilt from the trade records instead.
    pub(super) async fn count_in_strategy_stats(&self, t: &TradeRecord) -> Result<(), EngineError> {
        let hour = self.config.risk.day_start_hour_utc;
        let window = self.stats_window();
        // The typed backend counts in place (the loop below would copy the window on the read
        // and again on the write). A missing or differently sized window goes to the loop.
        if let Some(r) = self
            .repo
            .fold_strategy_stats(&t.account, &t.strategy, |st| {
                if st.keep != window {
                    return (false, false);
                }
                (st.apply(t.exit_time, &t.id, t.pnl.0, hour, window), true)
            })
        {
            if r? == Some(true) {
                return Ok(());
            }
        }
        for _ in 0..3 {
            let current = self.repo.strategy_stats(&t.account, &t.strategy).await?;
            let (st, version) = match current {
                Some(v) if v.value.keep == self.stats_window() => {
                    let mut st = v.value;
                    if !st.apply(t.exit_time, &t.id, t.pnl.0, hour, st.keep) {
                        return Ok(());
                    }
                    (st, Some(v.version))
                }
                other => (
                    self.rebuild_strategy_stats(&t.account, &t.strategy).await?,
                    other.map(|v| v.version),
                ),
            };
            match self
                .repo
                .save_strategy_stats(&t.account, &t.strategy, &st, version)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        tracing::warn!(trade = %t.id, "trade recorded but not counted in the strategy stats (concurrent writers)");
        Ok(())
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
                .map(|t| (t.exit_time, t.id.as_str(), t.pnl.0)),
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
