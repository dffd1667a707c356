//! Entries: checks against hand-made positions, sizing by risk, the pending record, the entry
//! order sent exactly once, then its protective stop and exit orders.

use super::*;

/// Take quantity and price from the fill, and move planned stop / target by the difference
/// between the reference price and the actual fill.
pub(super) fn apply_fill(
    pos: &mut Position,
    fill: &OrderInfo,
    filters: &SymbolFilters,
    stop: Option<StopSpec>,
    take_profit: Option<StopSpec>,
) {
    pos.qty = fill.executed_qty;
    pos.entry_price = fill.avg_price;
    pos.best_price = Some(fill.avg_price);
    pos.stop_loss = stop
        .map(|sp| orders::stop_price(filters, pos.side, sp.stop_price(pos.side, fill.avg_price)));
    pos.take_profit = take_profit.map(|sp| {
        orders::target_price(filters, pos.side, sp.target_price(pos.side, fill.avg_price))
    });
}

/// The commission the exchange charged for entry order `order_id` (zero, with a warning, when
/// `userTrades` cannot say).
pub(super) async fn entry_fee(
    ex: &dyn Exchange,
    symbol: Symbol,
    opened_at: i64,
    order_id: i64,
) -> Notional {
    match ex.user_trades(&symbol, opened_at - 60_000).await {
        Ok(trades) => Notional(
            trades
                .iter()
                .filter(|t| t.order_id == order_id)
                .map(|t| t.commission.0)
                .sum(),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "entry fee unknown (userTrades failed)");
            Notional::ZERO
        }
    }
}

impl Engine {
    /// Open a position: size, write the pending record, send the entry exactly once, protect it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn enter(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        side: Side,
        stop: Option<StopSpec>,
        take_profit: Option<StopSpec>,
        open_time: i64,
        now: i64,
        ref_price: Price,
        decision: &Decision,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<String, EngineError> {
        let account = &acct.config.id;
        let ex = acct.exchange.as_ref();
        let sid = StrategyId::new(&s.name);

        // Checked before anything is asked of the exchange: a blocked entry changes nothing
        // there (not even the symbol's leverage, which a hand-made position shares).
        let stored = self.repo.positions(account).await?;
        if let Some(why) = self.against_manual(&stored, sym, side) {
            self.notify(
                account,
                Priority::High,
                "blocked",
                || notices::blocked("manual", account, sid.as_str(), sym, open_time, &why),
                now,
            )
            .await;
            return Ok(why);
        }
        // Risk off (backtests only): no protective stop, no limits, all equity.
        let stop = if self.risk_off { None } else { stop };
        let (lev, size_pct) = self.config.effective_sizing(&acct.config, s);
        // Everything the order waits for from the exchange is asked at once: the trading rules,
        // the account, the price, and the symbol's margin type and leverage set. The answers are
        // then taken in the order the entry uses them, so a failure reports as it would one
        // after another.
        let read_at = ledger.mark();
        let (filters, snap, ref_price, setup) = futures::join!(
            ex.symbol_filters(sym),
            ex.account(),
            self.sizing_price(ex, sym, ref_price),
            self.ensure_symbol_setup(ex, sym, lev, s.margin_type),
        );
        let filters = match filters {
            Ok(f) => f,
            Err(ExchangeError::Fatal(m)) => {
                let why = format!("entry blocked: no trading filters for {sym}: {m}");
                self.notify(
                    account,
                    Priority::High,
                    "blocked",
                    || notices::blocked("nofilter", account, sid.as_str(), sym, open_time, &why),
                    now,
                )
                .await;
                return Ok(why);
            }
            Err(e) => return Err(e.into()),
        };
        let mut snap = snap?;
        if ref_price.is_zero() {
            return Err(EngineError::NoReferencePrice(sym.clone()));
        }
        // Sized one at a time, from the store as the entries before this one left it and with
        // the margin of this evaluation's orders the account read may not show (`MarginLedger`).
        let turn = ledger.size().await;
        let stored = self.repo.positions(account).await?;
        snap.total_initial_margin = Notional(snap.total_initial_margin.0 + ledger.unseen(read_at));
        let mut risk_notes: Vec<String> = Vec::new();
        let mut risk_reduced = false;
        let raw_qty = if self.risk_off {
            snap.equity.0 / ref_price.0
        } else {
            let state = self.observe_account(&acct.config, snap.equity, now).await?;
            let stop_px =
                stop.map(|sp| orders::stop_price(&filters, side, sp.stop_price(side, ref_price)).0);
            let req = self
                .entry_request(
                    acct, s, sym, &stored, &snap, ref_price, stop_px, lev, size_pct, now,
                )
                .await?;
            let limits = risk::Limits::new(&self.config.risk, &self.config.strategy_risk(&s.name));
            match risk::size_entry(&state, &req, &limits) {
                risk::EntryVerdict::Blocked(reason) => {
                    let why = format!("entry {side} blocked by risk: {reason}");
                    self.notify(
                        account,
                        Priority::Medium,
                        "blocked",
                        || notices::blocked("blocked", account, sid.as_str(), sym, open_time, &why),
                        now,
                    )
                    .await;
                    return Ok(why);
                }
                risk::EntryVerdict::Sized(sz) => {
                    risk_reduced = sz.reduced;
                    risk_notes = sz.notes;
                    sz.qty
                }
            }
        };
        let qty = match orders::market_qty(&filters, raw_qty, ref_price, false) {
            Ok(q) => q,
            Err(e) => {
                let why = format!(
                    "entry {side} skipped: {e} (equity {}, size {size_pct}, leverage {lev}{})",
                    snap.equity,
                    if risk_notes.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", risk_notes.join("; "))
                    }
                );
                self.notify(
                    account,
                    Priority::Medium,
                    "skipped",
                    || notices::blocked("size", account, sid.as_str(), sym, open_time, &why),
                    now,
                )
                .await;
                return Ok(why);
            }
        };
        if risk_reduced {
            self.notify(
                account,
                Priority::Medium,
                "risk_reduced",
                || notices::risk_reduced(account, &sid, sym, open_time, side, qty, &risk_notes),
                now,
            )
            .await;
        }
        setup?;

        let entry_id = ClientId::derive(account, &sid, sym, open_time, Intent::Entry, 0);
        let key = PositionKey {
            account: account.clone(),
            strategy: sid.clone(),
            symbol: sym.clone(),
        };
        let mut pos = Position {
            key: key.clone(),
            side,
            qty,
            entry_price: ref_price,
            leverage: lev,
            status: PositionStatus::Pending,
            is_manual: false,
            entry_client_id: entry_id.0.clone(),
            signal_open_time: open_time,
            opened_at: now,
            stop_loss: stop
                .map(|sp| orders::stop_price(&filters, side, sp.stop_price(side, ref_price))),
            take_profit: take_profit
                .map(|sp| orders::target_price(&filters, side, sp.target_price(side, ref_price))),
            stop_client_id: None,
            stop_generation: 0,
            partial_exits_done: 0,
            pyramids_done: 0,
            best_price: Some(ref_price),
            entry_fee: Notional::ZERO,
            updated_at: now,
            exit_orders: Vec::new(),
            exit_generation: 0,
        };
        // The reverse path deleted the old record; anything still here is a conflict to surface.
        let existing = self.repo.position(&key).await?.map(|v| v.version);
        let mut version = self.repo.save_position(&pos, existing).await?;
        let margin = |q: Qty, p: Price| q.0 * p.0 / Decimal::from(lev.max(1));
        let slot = ledger.take(margin(qty, ref_price));
        drop(turn);

        let order = MarketOrder {
            symbol: sym.clone(),
            side: side.entry_order_side(),
            qty,
            reduce_only: false,
            client_id: entry_id.clone(),
        };
        let policy = self.before_send(report).await?;
        let sent = self
            .send_adding(ex, &order, policy, (ledger, slot, &margin), report)
            .await;
        let fill = match sent {
            Ok(o) => o,
            Err(e @ ExchangeError::UnknownOutcome { .. }) => {
                // Keep the pending record: the sync job will find the order or drop the record.
                self.notify(
                    account,
                    Priority::Critical,
                    "order_unknown",
                    || notices::order_unknown(&sid, sym, &entry_id, &e),
                    now,
                )
                .await;
                return Err(e.into());
            }
            Err(e) => {
                // The exchange said no (or never executed it): nothing is open, drop the intent.
                self.repo.delete_position(&key, version).await?;
                if let ExchangeError::Rejected { msg, .. } = &e {
                    report.orders_rejected += 1;
                    self.notify(
                        account,
                        Priority::High,
                        "order_rejected",
                        || notices::order_rejected(&sid, sym, &entry_id, side, qty, msg),
                        now,
                    )
                    .await;
                    return Ok(format!(
                        "entry {side} {qty} rejected by the exchange: {msg}"
                    ));
                }
                return Err(e.into());
            }
        };
        report.orders_placed += 1;
        if fill.executed_qty.is_zero() {
            self.repo.delete_position(&key, version).await?;
            return Ok(format!(
                "entry {entry_id} ended {:?} without a fill",
                fill.status
            ));
        }
        apply_fill(&mut pos, &fill, &filters, stop, take_profit);
        pos.status = PositionStatus::Active;
        pos.updated_at = now;
        // The stop goes out right after the fill; the fee is read beside it.
        let (entry_fee, protection) = futures::join!(
            entry_fee(ex, pos.key.symbol.clone(), pos.opened_at, fill.order_id),
            self.protect(ex, &mut pos, &filters, &stored, now, report)
        );
        pos.entry_fee = entry_fee;
        if let Protection::Passed(level) = protection {
            version = self.repo.save_position(&pos, Some(version)).await?;
            self.repo.record_entry(account, &sid, now).await?;
            let (qty, price) = (pos.qty, pos.entry_price);
            let p = Versioned {
                value: pos,
                version,
            };
            let why = self.close_passed_stop(ex, p, level, now, report).await?;
            return Ok(format!("entered {side} {qty} @ {price}, then {why}"));
        }
        if let Protection::Failed(why) = &protection {
            report.errors.push(unprotected(&pos, why));
        }
        if let Some(plan) = self.exit_plan(&pos) {
            if let Err(e) = self
                .reconcile_exits(ex, &mut pos, &filters, &stored, &plan, None, now, report)
                .await
            {
                report.errors.push(format!(
                    "{key}: exit orders not placed after the entry: {e}"
                ));
            }
        }
        version = self.repo.save_position(&pos, Some(version)).await?;
        self.repo.record_entry(account, &sid, now).await?;
        if !self.risk_off && symbol_sharing(&pos, &stored).0 {
            // Another share on this symbol may carry a closePosition stop that would now close
            // this entry too: reshape the symbol's stops to the new sharing. (Alone on the
            // symbol, the entry's own stop was placed in the shape it needs.)
            if let Err(e) = self
                .reshape_stops(ex, account, sym, None, now, report)
                .await
            {
                report.errors.push(format!(
                    "{key}: stops of {sym} not reshaped after the entry: {e}"
                ));
            }
        }
        let _ = version;
        let stop_txt = match (&pos.stop_loss, protection == Protection::Placed) {
            (Some(p), true) => format!("stop {p}"),
            (Some(p), false) => {
                format!("STOP {p} NOT PLACED (UNPROTECTED; the sync places it first)")
            }
            (None, _) => "no stop".to_string(),
        };
        self.notify(
            account,
            Priority::High,
            "entry",
            || notices::entry(&pos, s, lev, &stop_txt, decision),
            now,
        )
        .await;
        let risk_txt = if risk_notes.is_empty() {
            String::new()
        } else {
            format!(" [risk: {}]", risk_notes.join("; "))
        };
        Ok(format!(
            "entered {side} {} @ {} ({stop_txt}){risk_txt}",
            pos.qty, pos.entry_price
        ))
    }

    /// Why an entry of `side` on `sym` must not be sent: a hand-made position on the other side
    /// of the symbol, which one-way mode would net with it (reduce or flip the person's position),
    /// unless `risk.entries_against_manual` allows it.
    pub(super) fn against_manual(
        &self,
        stored: &[Versioned<Position>],
        sym: &Symbol,
        side: Side,
    ) -> Option<String> {
        if self.config.risk.entries_against_manual {
            return None;
        }
        let m = stored
            .iter()
            .map(|v| &v.value)
            .find(|p| p.is_manual && p.is_open() && &p.key.symbol == sym && p.side != side)?;
        Some(format!(
            "entry {side} not sent: the MANUAL {} {} {sym} on this account would be netted with it (one-way mode) and reduced or flipped; set risk.entries_against_manual = true to allow it",
            m.side, m.qty
        ))
    }

    /// The price an order sent now will fill near: the exchange's last trade, or the decision
    /// candle's close when the exchange cannot say.
    pub(super) async fn sizing_price(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        candle_close: Price,
    ) -> Price {
        match ex.last_price(sym).await {
            Ok(p) if !p.is_zero() => p,
            Ok(_) => candle_close,
            Err(e) => {
                tracing::warn!(symbol = %sym, error = %e, "last price unavailable; sizing from the candle close");
                candle_close
            }
        }
    }

    /// Set the symbol's margin type and leverage to the configured ones, both at once and
    /// without reading them first: each request is idempotent (-4046 when the margin type is
    /// already that; the same leverage is accepted again), so this costs two weight-1 requests
    /// side by side instead of a read (weight 5) and up to two writes one after another, and
    /// it puts back whatever was changed by hand.
    pub(super) async fn ensure_symbol_setup(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        lev: u32,
        margin: crate::ports::MarginType,
    ) -> Result<(), EngineError> {
        let (margin_set, lev_set) =
            futures::join!(ex.set_margin_type(sym, margin), ex.set_leverage(sym, lev));
        match margin_set {
            Ok(()) => {}
            Err(e) if e.refusal() == Some(Refusal::MarginTypeUnchanged) => {}
            // A position already open on the symbol (another share, a hand-made one) pins its
            // margin type: trade under it rather than lose the signal; it is only a setting.
            Err(e) if e.refusal() == Some(Refusal::MarginTypeLocked) => {
                tracing::warn!(symbol = %sym, configured = ?margin, "margin type not changed: the symbol holds a position; trading under the exchange's");
            }
            Err(e) => return Err(e.into()),
        }
        lev_set?;
        Ok(())
    }

    /// Send a market order that adds exposure (an entry or a pyramid add) exactly once, and tell
    /// the margin ledger what it took: a fill its margin, a refusal nothing, an unknown outcome
    /// keeps the estimate (it may have filled). A retryable refusal of every send goes through
    /// [`Engine::unsent_order`].
    pub(super) async fn send_adding(
        &self,
        ex: &dyn Exchange,
        order: &MarketOrder,
        policy: SubmitPolicy,
        (ledger, slot, margin): (
            &MarginLedger,
            margin::Slot,
            &(dyn Fn(Qty, Price) -> Decimal + Sync),
        ),
        report: &mut JobReport,
    ) -> Result<OrderInfo, ExchangeError> {
        let sent = match orders::submit_market(ex, order, policy).await {
            Err(e @ ExchangeError::Retryable { .. }) => {
                self.unsent_order(ex, order, e, report).await
            }
            other => other,
        };
        match &sent {
            Ok(o) => ledger.answered(slot, margin(o.executed_qty, o.avg_price)),
            Err(ExchangeError::UnknownOutcome { .. }) => {}
            Err(_) => ledger.answered(slot, Decimal::ZERO),
        }
        sent
    }

    /// An entry or add whose every send was refused as retryable (a 429 storm past the
    /// submission's budget, say): no send executed, which one lookup by its client id confirms
    /// for the last one. Confirmed, the candle is given back (its claim released although
    /// Acting: nothing of this order is on the exchange, and whatever else the candle did is
    /// already recorded), so the next run decides it again instead of the signal being lost.
    /// Found after all, the order is the fill; the lookup failing leaves the outcome unknown
    /// (an entry's pending record stays for the sync).
    pub(super) async fn unsent_order(
        &self,
        ex: &dyn Exchange,
        order: &MarketOrder,
        e: ExchangeError,
        report: &mut JobReport,
    ) -> Result<OrderInfo, ExchangeError> {
        match ex
            .order_by_client_id(&order.symbol, order.client_id.as_str())
            .await
        {
            Ok(Some(o)) => Ok(o),
            Ok(None) => {
                if let Some(c) = report.claim.as_mut() {
                    c.acting = false;
                }
                Err(e)
            }
            Err(lookup) => Err(ExchangeError::UnknownOutcome {
                endpoint: "POST /fapi/v1/order".into(),
                detail: format!(
                    "{e}; and the lookup of {} failed: {lookup}",
                    order.client_id
                ),
            }),
        }
    }

    /// Everything an entry is sized from, read from the store and (when enabled) the market.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn entry_request(
        &self,
        acct: &AccountRuntime,
        s: &StrategyConfig,
        sym: &Symbol,
        stored: &[Versioned<Position>],
        snap: &crate::ports::AccountSnapshot,
        price: Price,
        stop: Option<Decimal>,
        lev: u32,
        size_pct: Decimal,
        now: i64,
    ) -> Result<risk::EntryRequest, EngineError> {
        let account = &acct.config.id;
        let sid = StrategyId::new(&s.name);
        let open_positions = stored
            .iter()
            .filter(|p| p.value.is_open() || p.value.status == PositionStatus::Pending)
            .count() as u32;
        let stats = self.strategy_stats(account, &sid).await?;
        let today = risk::trading_day(now, self.config.risk.day_start_hour_utc);
        let strategy_pnl_today = stats.pnl_on(today);
        let mut last_entry = stored
            .iter()
            .filter(|p| p.value.key.strategy == sid && !p.value.is_manual)
            .map(|p| p.value.opened_at)
            .max();
        if let Some(t) = self.repo.last_entry(account, &sid).await? {
            last_entry = Some(last_entry.map_or(t, |x| x.max(t)));
        }
        let rc = &self.config.risk;
        let (mut regime, mut volatility) = (None, None);
        if rc.regime.enabled || rc.volatility.enabled {
            let n = rc.regime.lookback.max(rc.volatility.lookback) as u32 + 1;
            let closes: Vec<Decimal> = acct
                .exchange
                .closed_klines(sym, s.timeframe, n, now)
                .await?
                .iter()
                .map(|c| c.close.0)
                .collect();
            let tail = |k: usize| &closes[closes.len().saturating_sub(k + 1)..];
            if rc.regime.enabled {
                regime = risk::regime_multiplier(tail(rc.regime.lookback), &rc.regime).map(|x| x.0);
            }
            if rc.volatility.enabled {
                volatility = risk::volatility_multiplier(
                    tail(rc.volatility.lookback),
                    s.timeframe.millis(),
                    &rc.volatility,
                )
                .map(|x| x.0);
            }
        }
        Ok(risk::EntryRequest {
            equity: snap.equity.0,
            margin_in_use: snap.total_initial_margin.0,
            open_positions,
            price: price.0,
            stop,
            leverage: lev,
            base_size_pct: size_pct,
            kelly_range: self.config.strategy_risk(&s.name).kelly_range(),
            strategy_pnls: stats.pnls(),
            strategy_pnl_today,
            last_entry,
            regime,
            volatility,
            now,
        })
    }
}
