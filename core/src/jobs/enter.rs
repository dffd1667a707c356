//! Entries: checks against hand-made positions, sizing by risk, the pending record, the entry
//! order sent exactly once, then its protective stop and exit orders.

use super::*;
use crate::ports::AccountSnapshot;

/// What the exchange answered for an entry (see [`Engine::gather_entry`]).
struct EntryMarket {
    filters: SymbolFilters,
    snap: AccountSnapshot,
    /// The price the order will fill near.
    ref_price: Price,
    /// Setting the symbol's margin type and leverage (checked once the entry is sized).
    setup: Result<(), EngineError>,
}

/// An entry refused before anything was sent: the notice's priority, kind and event tag, and why.
struct Refused {
    priority: Priority,
    kind: &'static str,
    tag: &'static str,
    why: String,
}

impl Refused {
    fn new(priority: Priority, kind: &'static str, tag: &'static str, why: String) -> Self {
        Refused {
            priority,
            kind,
            tag,
            why,
        }
    }
}

/// A market order that adds exposure and the margin ledger it takes its margin from: the
/// ledger, the slot reserved, and the margin of a quantity at a price.
pub(super) type Adding<'a> = (
    &'a MarginLedger,
    margin::Slot,
    &'a (dyn Fn(Qty, Price) -> Decimal + Sync),
);

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
        Ok(trades) => trades
            .iter()
            .filter(|t| t.order_id == order_id)
            .map(|t| t.commission)
            .sum(),
        Err(e) => {
            tracing::warn!(error = %e, "entry fee unknown (userTrades failed)");
            Notional::ZERO
        }
    }
}

impl Engine {
    /// Open a position, in phases: gather (the stored positions, then the trading rules, the
    /// account and the price at once), size it by risk and plan the PENDING record (pure:
    /// [`plan`]), then apply (write the record, send the entry exactly once, protect it).
    pub(super) async fn enter(
        &self,
        it: Item<'_>,
        signal: EntrySignal,
        ref_price: Price,
        decision: &Decision,
        report: &mut JobReport,
        ledger: &MarginLedger,
    ) -> Result<Outcome, EngineError> {
        let account = &it.acct.config.id;
        // Checked before anything is asked of the exchange: a blocked entry changes nothing
        // there (not even the symbol's leverage, which a hand-made position shares).
        let stored = self.repo.positions(account).await?;
        let allowed = self.config.risk.entries_against_manual;
        if let Some(why) = plan::against_manual(&stored, it.sym, signal.side, allowed) {
            return Ok(self
                .refuse(it, Priority::High, "blocked", "manual", why)
                .await);
        }
        // All-equity sizing (research only): no protective stop, no limits, all equity.
        let signal = EntrySignal {
            stop: signal.stop.filter(|_| self.sizing.protects()),
            ..signal
        };
        let read_at = ledger.mark();
        let mut m = match self.gather_entry(it, ref_price).await? {
            Ok(m) => m,
            Err(why) => {
                return Ok(self
                    .refuse(it, Priority::High, "blocked", "nofilter", why)
                    .await)
            }
        };
        // Sized one at a time, from the store as the entries before this one left it and with
        // the margin of this evaluation's orders the account read may not show (`MarginLedger`).
        let turn = ledger.size().await;
        let stored = self.repo.positions(account).await?;
        let margin_in = m.snap.total_initial_margin.get() + ledger.unseen(read_at);
        m.snap.total_initial_margin = Notional::new(margin_in);
        let (qty, risk_notes) = match self.size_entry(it, signal, &m, &stored).await? {
            Ok(sized) => sized,
            Err(r) => return Ok(self.refuse(it, r.priority, r.kind, r.tag, r.why).await),
        };
        let EntryMarket {
            filters,
            ref_price,
            setup,
            ..
        } = m;
        setup?;
        let lev = self.config.effective_sizing(&it.acct.config, it.s).0;
        let pending = self
            .write_pending(it, signal, qty, &filters, ref_price)
            .await?;
        let margin = |q: Qty, p: Price| q.get() * p.get() / Decimal::from(lev.max(1));
        let slot = ledger.take(margin(qty, ref_price));
        drop(turn);
        let sent = self
            .send_entry(it, &pending, (ledger, slot, &margin), report)
            .await?;
        let (mut pos, version, fill) = match sent {
            Ok(sent) => sent,
            Err(outcome) => return Ok(outcome),
        };
        apply_fill(&mut pos, &fill, &filters, signal.stop, signal.take_profit);
        pos.status = PositionStatus::Active;
        pos.updated_at = it.now;
        let entered = Versioned {
            value: pos,
            version,
        };
        let done = self
            .protect_entry(it, entered, &filters, &stored, fill.order_id, report)
            .await?;
        let (pos, placed) = match done {
            Ok(done) => done,
            Err(outcome) => return Ok(outcome),
        };
        Ok(self
            .announce_entry(it, &pos, placed, decision, &risk_notes)
            .await)
    }

    /// Write the PENDING record (with the entry's deterministic client id) before its order
    /// leaves; a record still there is a conflict to surface (the reverse path deleted the old one).
    async fn write_pending(
        &self,
        it: Item<'_>,
        signal: EntrySignal,
        qty: Qty,
        filters: &SymbolFilters,
        ref_price: Price,
    ) -> Result<Versioned<Position>, EngineError> {
        let key = it.position_key();
        let entry_id = ClientId::derive(
            &key.account,
            &key.strategy,
            it.sym,
            it.open_time,
            Intent::Entry,
            0,
        );
        let pos = plan::PendingEntry {
            key,
            signal,
            qty,
            leverage: self.config.effective_sizing(&it.acct.config, it.s).0,
            ref_price,
            filters,
            entry_id: &entry_id,
            open_time: it.open_time,
            now: it.now,
        }
        .position();
        let existing = self.repo.position(&pos.key).await?.map(|v| v.version);
        let version = self.repo.save_position(&pos, existing).await?;
        Ok(Versioned {
            value: pos,
            version,
        })
    }

    /// Tell the trader about a completed entry; its outcome.
    async fn announce_entry(
        &self,
        it: Item<'_>,
        pos: &Position,
        placed: bool,
        decision: &Decision,
        risk_notes: &[String],
    ) -> Outcome {
        let stop_txt = plan::stop_text(pos.stop_loss, placed);
        self.notify(
            &it.acct.config.id,
            Priority::High,
            "entry",
            || notices::entry(pos, it.s, pos.leverage, &stop_txt, decision),
            it.now,
        )
        .await;
        Outcome::Entered {
            side: pos.side,
            qty: pos.qty,
            price: pos.entry_price,
            stop: pos.stop_loss,
            stop_placed: placed,
            risk_notes: risk_notes.to_vec(),
        }
    }

    /// An entry refused before anything was sent: tell the trader (`kind` and the event id's
    /// `tag`), and return the outcome: skipped when `kind` is `skipped`, blocked otherwise.
    async fn refuse(
        &self,
        it: Item<'_>,
        priority: Priority,
        kind: &str,
        tag: &str,
        why: String,
    ) -> Outcome {
        let (account, name) = (&it.acct.config.id, it.s.name.as_str());
        self.notify(
            account,
            priority,
            kind,
            || notices::blocked(tag, account, name, it.sym, it.open_time, &why),
            it.now,
        )
        .await;
        match kind {
            "skipped" => Outcome::Skipped(why),
            _ => Outcome::Blocked(why),
        }
    }

    /// Everything the entry order waits for from the exchange, asked at once: the trading rules,
    /// the account, the price, and the symbol's margin type and leverage set. The answers are
    /// taken in the order the entry uses them, so a failure reports as it would one after
    /// another; the setup's outcome is checked once the entry is sized. `Err(why)`: the symbol
    /// has no trading rules (the entry is blocked).
    async fn gather_entry(
        &self,
        it: Item<'_>,
        candle_close: Price,
    ) -> Result<Result<EntryMarket, String>, EngineError> {
        let (ex, sym) = (it.acct.exchange.as_ref(), it.sym);
        let lev = self.config.effective_sizing(&it.acct.config, it.s).0;
        let (filters, snap, ref_price, setup) = futures::join!(
            ex.symbol_filters(sym),
            ex.account(),
            self.sizing_price(ex, sym, candle_close),
            self.ensure_symbol_setup(ex, sym, lev, it.s.margin_type),
        );
        let filters = match filters {
            Ok(f) => f,
            Err(ExchangeError::Fatal(m)) => {
                return Ok(Err(format!(
                    "entry blocked: no trading filters for {sym}: {m}"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let snap = snap?;
        if ref_price.is_zero() {
            return Err(EngineError::NoReferencePrice(sym.clone()));
        }
        Ok(Ok(EntryMarket {
            filters,
            snap,
            ref_price,
            setup,
        }))
    }

    /// The entry's quantity on the symbol's grid and the risk rules' notes (the risk state is
    /// folded from the account's equity first). `Err`: refused, and why.
    async fn size_entry(
        &self,
        it: Item<'_>,
        signal: EntrySignal,
        m: &EntryMarket,
        stored: &[Versioned<Position>],
    ) -> Result<Result<(Qty, Vec<String>), Refused>, EngineError> {
        let (lev, size_pct) = self.config.effective_sizing(&it.acct.config, it.s);
        let (side, ref_price, filters) = (signal.side, m.ref_price, &m.filters);
        let mut risk_notes: Vec<String> = Vec::new();
        let mut risk_reduced = false;
        let raw_qty = if !self.sizing.protects() {
            crate::fastpath::all_equity_qty(m.snap.equity.get(), ref_price.get())
        } else {
            let state = self
                .observe_account(&it.acct.config, m.snap.equity, it.now)
                .await?;
            let stop_px = signal
                .stop
                .map(|sp| orders::stop_price(filters, side, sp.stop_price(side, ref_price)).get());
            let req = self
                .entry_request(
                    it.acct, it.s, it.sym, stored, &m.snap, ref_price, stop_px, lev, size_pct,
                    it.now,
                )
                .await?;
            let limits = risk::Limits::for_account(&self.config, &it.acct.config, &it.s.name);
            match risk::size_entry(&state, &req, &limits) {
                risk::EntryVerdict::Blocked(reason) => {
                    let why = format!("entry {side} blocked by risk: {reason}");
                    return Ok(Err(Refused::new(
                        Priority::Medium,
                        "blocked",
                        "blocked",
                        why,
                    )));
                }
                risk::EntryVerdict::Sized(sz) => {
                    risk_reduced = sz.reduced;
                    risk_notes = sz.notes;
                    sz.qty
                }
            }
        };
        let qty = match orders::market_qty(filters, raw_qty, ref_price, false) {
            Ok(q) => q,
            Err(e) => {
                let eq = m.snap.equity;
                let why = plan::size_skipped(side, &e, eq, size_pct, lev, &risk_notes);
                return Ok(Err(Refused::new(Priority::Medium, "skipped", "size", why)));
            }
        };
        if risk_reduced {
            let (account, sid) = (&it.acct.config.id, StrategyId::new(&it.s.name));
            let (sym, open_time) = (it.sym, it.open_time);
            self.notify(
                account,
                Priority::Medium,
                "risk_reduced",
                || notices::risk_reduced(account, &sid, sym, open_time, side, qty, &risk_notes),
                it.now,
            )
            .await;
        }
        Ok(Ok((qty, risk_notes)))
    }

    /// Send the entry of the PENDING record exactly once. `Ok(Ok(..))`: the record, its version
    /// and the fill; `Ok(Err(outcome))`: refused or not filled (the record is dropped); an unknown
    /// outcome keeps the record for the sync and fails the job.
    async fn send_entry(
        &self,
        it: Item<'_>,
        pending: &Versioned<Position>,
        adding: Adding<'_>,
        report: &mut JobReport,
    ) -> Result<Result<(Position, u64, OrderInfo), Outcome>, EngineError> {
        let (ex, account) = (it.acct.exchange.as_ref(), &it.acct.config.id);
        let pos = &pending.value;
        let (key, sid, sym, side, qty) = (&pos.key, &pos.key.strategy, it.sym, pos.side, pos.qty);
        let entry_id = ClientId(pos.entry_client_id.clone());
        let order = MarketOrder {
            symbol: sym.clone(),
            side: side.entry_order_side(),
            qty,
            reduce_only: false,
            client_id: entry_id.clone(),
        };
        let policy = self.before_send(report).await?;
        let fill = match self.send_adding(ex, &order, policy, adding, report).await {
            Ok(o) => o,
            Err(e @ ExchangeError::UnknownOutcome { .. }) => {
                // Keep the pending record: the sync job will find the order or drop the record.
                self.notify(
                    account,
                    Priority::Critical,
                    "order_unknown",
                    || notices::order_unknown(sid, sym, &entry_id, &e),
                    it.now,
                )
                .await;
                return Err(e.into());
            }
            Err(e) => {
                // The exchange said no (or never executed it): nothing is open, drop the intent.
                self.repo.delete_position(key, pending.version).await?;
                let ExchangeError::Rejected { msg, .. } = &e else {
                    return Err(e.into());
                };
                report.orders_rejected += 1;
                self.notify(
                    account,
                    Priority::High,
                    "order_rejected",
                    || notices::order_rejected(sid, sym, &entry_id, side, qty, msg),
                    it.now,
                )
                .await;
                return Ok(Err(Outcome::Blocked(format!(
                    "entry {side} {qty} rejected by the exchange: {msg}"
                ))));
            }
        };
        report.orders_placed += 1;
        if fill.executed_qty.is_zero() {
            self.repo.delete_position(key, pending.version).await?;
            return Ok(Err(Outcome::Skipped(format!(
                "entry {entry_id} ended {:?} without a fill",
                fill.status
            ))));
        }
        Ok(Ok((pos.clone(), pending.version, fill)))
    }

    /// After the fill: the stop right away with the fee read beside it, then the exit orders,
    /// the record saved ACTIVE and the symbol's stops reshaped when it is shared. `Ok(Ok((pos,
    /// placed)))`: the entry stands (`placed`: its stop is on the exchange); `Ok(Err(outcome))`:
    /// the price had passed the stop and the position was closed at market.
    async fn protect_entry(
        &self,
        it: Item<'_>,
        entered: Versioned<Position>,
        filters: &SymbolFilters,
        stored: &[Versioned<Position>],
        order_id: i64,
        report: &mut JobReport,
    ) -> Result<Result<(Position, bool), Outcome>, EngineError> {
        let (ex, account, now) = (it.acct.exchange.as_ref(), &it.acct.config.id, it.now);
        let Versioned {
            value: mut pos,
            mut version,
        } = entered;
        let (sid, sym) = (pos.key.strategy.clone(), pos.key.symbol.clone());
        let (entry_fee, protection) = futures::join!(
            entry_fee(ex, sym.clone(), pos.opened_at, order_id),
            self.protect(ex, &mut pos, filters, stored, now, report)
        );
        pos.entry_fee = entry_fee;
        if let Protection::Passed(level) = protection {
            version = self.repo.save_position(&pos, Some(version)).await?;
            self.repo.record_entry(account, &sid, now).await?;
            let (side, qty, price) = (pos.side, pos.qty, pos.entry_price);
            let p = Versioned {
                value: pos,
                version,
            };
            self.close_passed_stop(ex, p, level, now, report).await?;
            return Ok(Err(Outcome::EnteredPastStop {
                side,
                qty,
                price,
                level,
            }));
        }
        if let Protection::Failed(why) = &protection {
            report.errors.push(unprotected(&pos, why));
        }
        if let Some(plan) = self.exit_plan(&pos) {
            if let Err(e) = self
                .reconcile_exits(ex, &mut pos, filters, stored, &plan, None, now, report)
                .await
            {
                report.errors.push(JobFailure::AfterEntry {
                    key: pos.key.clone(),
                    what: "exit orders not placed after the entry".into(),
                    error: Arc::new(e),
                });
            }
        }
        self.repo.save_position(&pos, Some(version)).await?;
        self.repo.record_entry(account, &sid, now).await?;
        if self.sizing.protects() && symbol_sharing(&pos, stored).0 {
            // Another share on this symbol may carry a closePosition stop that would now close
            // this entry too: reshape the symbol's stops to the new sharing. (Alone on the
            // symbol, the entry's own stop was placed in the shape it needs.)
            if let Err(e) = self
                .reshape_stops(ex, account, &sym, None, now, report)
                .await
            {
                report.errors.push(JobFailure::AfterEntry {
                    key: pos.key.clone(),
                    what: format!("stops of {sym} not reshaped after the entry"),
                    error: Arc::new(e),
                });
            }
        }
        Ok(Ok((pos, protection == Protection::Placed)))
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
        (ledger, slot, margin): Adding<'_>,
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
                .map(|c| c.close.get())
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
            equity: snap.equity.get(),
            margin_in_use: snap.total_initial_margin.get(),
            open_positions,
            price: price.get(),
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
