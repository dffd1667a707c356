//! Exchange-side exits: a position's take-profit ladder and trailing stop placed or resized
//! from its strategy's plan, and their fills recorded.

use super::*;
use crate::ports::UserTrade;

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
        let Some((live, gone)) = self.exit_orders_on_exchange(ex, pos, open_ids).await? else {
            // Fired: the sync records the fill first (`record_exit_fills`).
            return Ok(false);
        };
        let ExitDiff {
            mut keep,
            todo,
            stale,
        } = diff_exits(&want, live, shared, reduce_only);
        if todo.is_empty() && stale.is_empty() && gone.is_empty() {
            return Ok(false);
        }
        if !todo.is_empty() {
            pos.exit_generation += 1;
            for n in &notes {
                report.note(format!("{}: {n}", pos.key));
            }
        }
        let placed = self
            .place_exits(ex, pos, todo, &gone, reduce_only, now, report)
            .await;
        for e in &stale {
            if let Err(err) =
                orders::cancel_algo(ex, &pos.key.symbol, &e.client_id, self.timing.submit).await
            {
                tracing::warn!(client_algo_id = %e.client_id, error = %err, "stale exit order not cancelled");
            }
        }
        keep.extend(placed);
        keep.sort_by_key(|e| exit_rank(e.kind));
        pos.exit_orders = keep;
        Ok(true)
    }

    /// The position's recorded exit orders as the exchange has them, looked up in order: those
    /// still working (`open_ids`, this sync's snapshot of open orders, or a lookup) and those gone
    /// with what the exchange said of them. `None` as soon as one has fired.
    async fn exit_orders_on_exchange(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        open_ids: Option<&HashSet<&str>>,
    ) -> Result<Option<(Vec<ExitOrder>, Vec<(ExitOrder, String)>)>, EngineError> {
        let mut live: Vec<ExitOrder> = Vec::new();
        let mut gone: Vec<(ExitOrder, String)> = Vec::new();
        for e in &pos.exit_orders {
            if open_ids.is_some_and(|ids| ids.contains(e.client_id.as_str())) {
                live.push(e.clone());
                continue;
            }
            let found = ex.algo_by_client_id(&e.client_id).await?;
            match exit_order_state(found.map(|a| a.status)) {
                ExitOrderState::Live => live.push(e.clone()),
                ExitOrderState::Fired => return Ok(None),
                ExitOrderState::Gone(was) => gone.push((e.clone(), was)),
            }
        }
        Ok(Some((live, gone)))
    }

    /// Place the planned exits in order with ids of the position's current exit generation;
    /// returns the orders placed. A re-placed order that had gone (`gone`) is alerted, and one
    /// that could not be placed is reported and alerted (the at-close rule stays in charge).
    #[allow(clippy::too_many_arguments)]
    async fn place_exits(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        todo: Vec<orders::PlannedExit>,
        gone: &[(ExitOrder, String)],
        reduce_only: bool,
        now: i64,
        report: &mut JobReport,
    ) -> Vec<ExitOrder> {
        let mut placed = Vec::new();
        for w in todo {
            let id = Self::exit_client_id(pos, w.kind, pos.exit_generation);
            let order = exit_algo_order(pos, &w, reduce_only, &id);
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
                            || notices::exit_replaced(pos, &id, w.kind, was, w.trigger, w.qty),
                            now,
                        )
                        .await;
                    }
                }
                Err(e) => {
                    if e.refusal().is_some() {
                        report.orders_rejected += 1;
                    }
                    let (event, text) =
                        notices::exit_order_failed(pos, w.kind, w.trigger, w.qty, &e);
                    report.note(text.clone());
                    self.notify(
                        &pos.key.account,
                        Priority::High,
                        "exit_failed",
                        || (event, text),
                        now,
                    )
                    .await;
                }
            }
        }
        placed
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
        let fired = self.fired_exit_orders(ex, &v.value, open_ids).await?;
        if fired.is_empty() {
            return Ok(false);
        }
        let sym = v.value.key.symbol.clone();
        let trades = ex.user_trades(&sym, v.value.opened_at - 60_000).await?;
        let mut reduced = false;
        for (e, a) in fired {
            v.value.exit_orders.retain(|x| x.client_id != e.client_id);
            let fills: Vec<&UserTrade> = trades
                .iter()
                .filter(|t| Some(t.order_id) == a.actual_order_id)
                .collect();
            let executed: Decimal = fills.iter().map(|t| t.qty.get()).sum();
            if executed.is_zero() {
                tracing::warn!(position = %v.value.key, client_algo_id = %e.client_id, "exit order fired without a fill");
                continue;
            }
            if executed >= v.value.qty.get() {
                let reason = match e.kind {
                    ExitKind::TakeProfit { .. } => "take_profit",
                    ExitKind::Trailing { .. } => "trailing_stop",
                };
                self.record_close(ex, v, Some((reason.to_string(), a)), now)
                    .await?;
                return Ok(true);
            }
            let partial = plan_partial_exit(&v.value, &e, &a, &fills, now);
            self.record_partial_exit(v, &e, partial, now, report)
                .await?;
            reduced = true;
        }
        if reduced {
            let filters = ex.symbol_filters(&sym).await?;
            self.resize_protection(ex, v, &filters, now, report).await?;
        }
        Ok(false)
    }

    /// The position's exit orders that have fired (only orders no longer open are looked up),
    /// in the order they filled: by update time, ladder steps before the trailing stop.
    async fn fired_exit_orders(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        open_ids: &HashSet<&str>,
    ) -> Result<Vec<(ExitOrder, AlgoOrderInfo)>, EngineError> {
        let mut fired: Vec<(ExitOrder, AlgoOrderInfo)> = Vec::new();
        for e in pos
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
        fired.sort_by_key(|(e, a)| (a.update_time, exit_rank(e.kind)));
        Ok(fired)
    }

    /// Write a partial close on the exchange (`e` filled part of the position): its trade, then
    /// the position with the quantity, entry fee and steps done that are left; reported and
    /// alerted.
    async fn record_partial_exit(
        &self,
        v: &mut Versioned<Position>,
        e: &ExitOrder,
        partial: PartialExit,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let pos = v.value.clone();
        let PartialExit {
            trade,
            stage,
            fee_share,
        } = partial;
        self.record_trade(&trade).await?;
        v.value.qty = pos.qty - trade.qty;
        v.value.entry_fee = Notional::new(pos.entry_fee.get() - fee_share);
        v.value.partial_exits_done = pos.partial_exits_done.max(stage);
        v.value.updated_at = now;
        v.version = self.repo.save_position(&v.value, Some(v.version)).await?;
        let (event, text) = notices::exchange_partial_exit(&pos, &e.client_id, stage, &trade);
        report.note(format!("{}: {text}", pos.key));
        self.notify(
            &pos.key.account,
            Priority::High,
            "partial_exit",
            || (event, text),
            now,
        )
        .await;
        Ok(())
    }
}

/// Where an exit order sorts: ladder steps by stage, the trailing stop last.
fn exit_rank(kind: ExitKind) -> u16 {
    match kind {
        ExitKind::TakeProfit { stage } => u16::from(stage),
        ExitKind::Trailing { .. } => u16::MAX,
    }
}

/// Whether two exit orders hold the same place in the plan (the same ladder step, or the
/// trailing stop), whatever their price and quantity.
fn same_slot(a: ExitKind, b: ExitKind) -> bool {
    match (a, b) {
        (ExitKind::TakeProfit { stage: x }, ExitKind::TakeProfit { stage: y }) => x == y,
        (ExitKind::Trailing { .. }, ExitKind::Trailing { .. }) => true,
        _ => false,
    }
}

/// What the exchange says of a recorded exit order.
#[derive(Debug, PartialEq)]
enum ExitOrderState {
    /// Still waiting for its trigger.
    Live,
    /// Triggering or done: its fill is the sync's to record.
    Fired,
    /// Cancelled, expired, rejected or unknown (the words for the alert).
    Gone(String),
}

/// The state of an exit order from its status on the exchange (`None`: unknown to it).
fn exit_order_state(status: Option<AlgoStatus>) -> ExitOrderState {
    match status {
        Some(s) if s.is_open() => ExitOrderState::Live,
        Some(AlgoStatus::Triggering | AlgoStatus::Triggered | AlgoStatus::Finished) => {
            ExitOrderState::Fired
        }
        Some(s) => ExitOrderState::Gone(format!("{s:?}").to_uppercase()),
        None => ExitOrderState::Gone("unknown to the exchange".into()),
    }
}

/// Whether a working exit order `e` serves the planned exit `w` as it is, given the symbol's
/// sharing (`shared`) and the reduce-only flag its orders need.
fn exit_fits(e: &ExitOrder, w: &orders::PlannedExit, shared: bool, reduce_only: bool) -> bool {
    e.kind == w.kind
        && e.trigger_price == w.trigger
        && e.reduce_only == reduce_only
        && match w.kind {
            ExitKind::TakeProfit { .. } => e.qty == w.qty,
            // Re-placing a trailing stop restarts its tracking of the best price. Held
            // alone, a larger reduce-only quantity is capped by the exchange at what is
            // left after a ladder step, so it stays; a shared symbol needs the exact share.
            ExitKind::Trailing { .. } => {
                e.qty == w.qty || (!shared && reduce_only && e.qty.get() > w.qty.get())
            }
        }
}

/// The working exit orders against the planned ones: those that fit stay (`keep`, in plan
/// order), planned exits no order fits are to be placed (`todo`), and the orders left over no
/// longer fit (`stale`: cancelled once the replacements are placed).
#[derive(Debug, PartialEq)]
struct ExitDiff {
    keep: Vec<ExitOrder>,
    todo: Vec<orders::PlannedExit>,
    stale: Vec<ExitOrder>,
}

/// Match each planned exit, in order, with the first working order that fits it.
fn diff_exits(
    want: &[orders::PlannedExit],
    mut live: Vec<ExitOrder>,
    shared: bool,
    reduce_only: bool,
) -> ExitDiff {
    let mut keep: Vec<ExitOrder> = Vec::new();
    let mut todo: Vec<orders::PlannedExit> = Vec::new();
    for w in want {
        match live
            .iter()
            .position(|e| exit_fits(e, w, shared, reduce_only))
        {
            Some(i) => keep.push(live.remove(i)),
            None => todo.push(*w),
        }
    }
    ExitDiff {
        keep,
        todo,
        stale: live,
    }
}

/// The algo order that places the planned exit `w` of `pos` with the client id `id`.
fn exit_algo_order(
    pos: &Position,
    w: &orders::PlannedExit,
    reduce_only: bool,
    id: &ClientId,
) -> AlgoOrder {
    AlgoOrder {
        symbol: pos.key.symbol.clone(),
        side: pos.side.exit_order_side(),
        kind: match w.kind {
            ExitKind::TakeProfit { .. } => AlgoKind::TakeProfitMarket,
            ExitKind::Trailing { callback_rate } => AlgoKind::TrailingStopMarket { callback_rate },
        },
        trigger_price: Some(w.trigger),
        qty: Some(w.qty),
        close_position: false,
        reduce_only,
        working_type: WorkingType::MarkPrice,
        client_algo_id: id.clone(),
    }
}

/// A partial close on the exchange, worked out from its fills: the trade to record, the step it
/// counts as, and the share of the entry fee that goes with it.
#[derive(Debug, PartialEq)]
struct PartialExit {
    trade: TradeRecord,
    stage: u8,
    fee_share: Decimal,
}

/// The partial close that the fills of the exit order `e` (fired as `a`) made of `pos`, which
/// they did not close: at least one fill, less than the position's quantity.
fn plan_partial_exit(
    pos: &Position,
    e: &ExitOrder,
    a: &AlgoOrderInfo,
    fills: &[&UserTrade],
    now: i64,
) -> PartialExit {
    let executed: Decimal = fills.iter().map(|t| t.qty.get()).sum();
    let exit_price = fills
        .iter()
        .map(|t| t.qty.get() * t.price.get())
        .sum::<Decimal>()
        / executed;
    let gross: Decimal = fills.iter().map(|t| t.realized_pnl.get()).sum();
    let exit_fee: Decimal = fills.iter().map(|t| t.commission.get()).sum();
    // The entry fee is shared pro rata between the part closed now and the rest.
    let fee_share = pos.entry_fee.get() * executed / pos.qty.get();
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
    let exit_time = fills.iter().map(|t| t.time).max().unwrap_or(now);
    let (qty, exit_price) = (Qty::new(executed), Price::new(exit_price));
    // Funding is attributed once, to the close of what remains (zero here).
    let trade = TradeRecord {
        pnl: Notional::new(gross - exit_fee - fee_share),
        fees: Notional::new(exit_fee + fee_share),
        ..closing_trade(pos, id, qty, (exit_price, exit_time), reason)
    };
    PartialExit {
        trade,
        stage,
        fee_share,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn tp(stage: u8) -> ExitKind {
        ExitKind::TakeProfit { stage }
    }

    fn trail() -> ExitKind {
        ExitKind::Trailing {
            callback_rate: d("1.5"),
        }
    }

    fn planned(kind: ExitKind, trigger: &str, qty: &str) -> orders::PlannedExit {
        orders::PlannedExit {
            kind,
            trigger: Price::new(d(trigger)),
            qty: Qty::new(d(qty)),
        }
    }

    fn working(kind: ExitKind, trigger: &str, qty: &str, reduce_only: bool) -> ExitOrder {
        ExitOrder {
            kind,
            client_id: format!("{kind:?}-{trigger}-{qty}"),
            trigger_price: Price::new(d(trigger)),
            qty: Qty::new(d(qty)),
            reduce_only,
        }
    }

    fn position(qty: &str, entry_fee: &str, done: u8) -> Position {
        Position {
            key: PositionKey {
                account: AccountId::new("a"),
                strategy: StrategyId::new("s"),
                symbol: Symbol::new("BTCUSDT"),
            },
            side: Side::Long,
            qty: Qty::new(d(qty)),
            entry_price: Price::new(d("100")),
            leverage: 1,
            status: PositionStatus::Active,
            is_manual: false,
            entry_client_id: "E1".into(),
            signal_open_time: 0,
            opened_at: 1_000,
            stop_loss: None,
            take_profit: None,
            stop_client_id: None,
            stop_generation: 0,
            partial_exits_done: done,
            pyramids_done: 0,
            best_price: None,
            entry_fee: Notional::new(d(entry_fee)),
            updated_at: 0,
            exit_orders: Vec::new(),
            exit_generation: 0,
        }
    }

    fn fill(qty: &str, price: &str, pnl: &str, fee: &str, time: i64) -> UserTrade {
        UserTrade {
            symbol: Symbol::new("BTCUSDT"),
            id: time,
            order_id: 7,
            side: Side::Long.exit_order_side(),
            price: Price::new(d(price)),
            qty: Qty::new(d(qty)),
            realized_pnl: Notional::new(d(pnl)),
            commission: Notional::new(d(fee)),
            commission_asset: "USDT".into(),
            time,
        }
    }

    fn fired(algo_id: i64) -> AlgoOrderInfo {
        AlgoOrderInfo {
            algo_id,
            client_algo_id: "x".into(),
            symbol: Symbol::new("BTCUSDT"),
            side: Side::Long.exit_order_side(),
            kind: AlgoKind::TakeProfitMarket,
            status: AlgoStatus::Finished,
            trigger_price: None,
            qty: None,
            close_position: false,
            reduce_only: true,
            actual_order_id: Some(7),
            actual_price: None,
            update_time: 0,
        }
    }

    #[test]
    fn exit_order_state_by_status() {
        let gone = |s: &str| ExitOrderState::Gone(s.into());
        let table = [
            (None, gone("unknown to the exchange")),
            (Some(AlgoStatus::New), ExitOrderState::Live),
            (Some(AlgoStatus::Triggering), ExitOrderState::Fired),
            (Some(AlgoStatus::Triggered), ExitOrderState::Fired),
            (Some(AlgoStatus::Finished), ExitOrderState::Fired),
            (Some(AlgoStatus::Canceled), gone("CANCELED")),
            (Some(AlgoStatus::Expired), gone("EXPIRED")),
            (Some(AlgoStatus::Rejected), gone("REJECTED")),
        ];
        for (status, want) in table {
            assert_eq!(exit_order_state(status), want, "{status:?}");
        }
    }

    #[test]
    fn ranks_and_slots() {
        assert!(exit_rank(tp(1)) < exit_rank(tp(2)));
        assert_eq!(exit_rank(trail()), u16::MAX);
        let other_trail = ExitKind::Trailing {
            callback_rate: d("3"),
        };
        let table = [
            (tp(1), tp(1), true),
            (tp(1), tp(2), false),
            (tp(1), trail(), false),
            (trail(), tp(1), false),
            (trail(), other_trail, true),
        ];
        for (a, b, want) in table {
            assert_eq!(same_slot(a, b), want, "{a:?} {b:?}");
        }
    }

    #[test]
    fn exit_fits_take_profit_exactly() {
        // (order, plan, shared, reduce_only, fits)
        let table = [
            (
                working(tp(1), "110", "2", true),
                planned(tp(1), "110", "2"),
                false,
                true,
                true,
            ),
            (
                working(tp(1), "110", "3", true),
                planned(tp(1), "110", "2"),
                false,
                true,
                false,
            ),
            (
                working(tp(1), "111", "2", true),
                planned(tp(1), "110", "2"),
                false,
                true,
                false,
            ),
            (
                working(tp(1), "110", "2", false),
                planned(tp(1), "110", "2"),
                false,
                true,
                false,
            ),
            (
                working(tp(2), "110", "2", true),
                planned(tp(1), "110", "2"),
                false,
                true,
                false,
            ),
        ];
        for (i, (e, w, shared, reduce_only, want)) in table.into_iter().enumerate() {
            assert_eq!(exit_fits(&e, &w, shared, reduce_only), want, "row {i}");
        }
    }

    #[test]
    fn exit_fits_trailing_stop_table() {
        // (order, plan, shared, reduce_only, fits)
        let table = [
            // Held alone, a larger reduce-only trailing stop stays; shared it must be exact.
            (
                working(trail(), "120", "3", true),
                planned(trail(), "120", "2"),
                false,
                true,
                true,
            ),
            (
                working(trail(), "120", "3", true),
                planned(trail(), "120", "2"),
                true,
                true,
                false,
            ),
            (
                working(trail(), "120", "3", false),
                planned(trail(), "120", "2"),
                true,
                false,
                false,
            ),
            (
                working(trail(), "120", "1", true),
                planned(trail(), "120", "2"),
                false,
                true,
                false,
            ),
            (
                working(trail(), "120", "2", false),
                planned(trail(), "120", "2"),
                true,
                false,
                true,
            ),
        ];
        for (i, (e, w, shared, reduce_only, want)) in table.into_iter().enumerate() {
            assert_eq!(exit_fits(&e, &w, shared, reduce_only), want, "row {i}");
        }
    }

    #[test]
    fn diff_exits_keeps_places_and_cancels() {
        let a = working(tp(1), "110", "1", true);
        let b = working(tp(2), "120", "1", true);
        let c = working(trail(), "130", "2", true);
        let want = [
            planned(tp(1), "110", "1"),
            planned(tp(2), "125", "1"),
            planned(trail(), "130", "1"),
        ];
        // (working orders, shared, kept, to place, stale)
        let table = [
            (vec![], false, vec![], want.to_vec(), vec![]),
            (
                vec![c.clone(), b.clone(), a.clone()],
                false,
                vec![a.clone(), c.clone()],
                vec![want[1]],
                vec![b.clone()],
            ),
            (
                vec![a.clone(), b.clone(), c.clone()],
                true,
                vec![a.clone()],
                vec![want[1], want[2]],
                vec![b.clone(), c.clone()],
            ),
        ];
        for (i, (live, shared, keep, todo, stale)) in table.into_iter().enumerate() {
            assert_eq!(
                diff_exits(&want, live, shared, true),
                ExitDiff { keep, todo, stale },
                "row {i}"
            );
        }
        assert_eq!(
            diff_exits(&[], vec![a.clone()], false, true),
            ExitDiff {
                keep: vec![],
                todo: vec![],
                stale: vec![a],
            }
        );
    }

    #[test]
    fn exit_algo_order_kinds() {
        let pos = position("2", "0", 0);
        let id = ClientId("cid".into());
        let o = exit_algo_order(&pos, &planned(tp(1), "110", "1"), true, &id);
        assert_eq!(o.kind, AlgoKind::TakeProfitMarket);
        assert_eq!(
            (o.trigger_price, o.qty),
            (Some(Price::new(d("110"))), Some(Qty::new(d("1"))))
        );
        assert!(o.reduce_only && !o.close_position);
        assert_eq!(o.side, Side::Long.exit_order_side());
        let o = exit_algo_order(&pos, &planned(trail(), "120", "2"), false, &id);
        assert_eq!(
            o.kind,
            AlgoKind::TrailingStopMarket {
                callback_rate: d("1.5")
            }
        );
        assert!(!o.reduce_only && !o.close_position);
        assert_eq!(o.client_algo_id, id);
    }

    #[test]
    fn partial_exit_plans() {
        let pos = position("4", "2", 1);
        let fills = [
            fill("1", "110", "10", "0.1", 5_000),
            fill("1", "112", "12", "0.2", 6_000),
        ];
        let fills: Vec<&UserTrade> = fills.iter().collect();
        // (order kind, trade id, reason, stage)
        let table = [
            (tp(2), "E1:tp2", "partial_take_profit_2", 2),
            (trail(), "E1:trail42", "partial_trailing_stop", 1),
        ];
        for (kind, id, reason, stage) in table {
            let e = working(kind, "110", "2", true);
            let p = plan_partial_exit(&pos, &e, &fired(42), &fills, 9_000);
            assert_eq!(p.stage, stage);
            // Half the position: half the entry fee goes with it.
            assert_eq!(p.fee_share, d("1"));
            let t = &p.trade;
            assert_eq!((t.id.as_str(), t.reason.as_str()), (id, reason));
            assert_eq!(t.qty, Qty::new(d("2")));
            assert_eq!(t.exit_price, Price::new(d("111")));
            assert_eq!(t.pnl, Notional::new(d("20.7")));
            assert_eq!(t.fees, Notional::new(d("1.3")));
            assert_eq!(t.funding, Notional::ZERO);
            assert_eq!((t.entry_time, t.exit_time), (1_000, 6_000));
            assert_eq!(t.symbol, pos.key.symbol);
        }
    }

    /// The notices made in notices.rs read exactly as the texts these jobs made themselves.
    #[test]
    fn exit_notices_unchanged() {
        let pos = position("4", "2", 1);
        let id = ClientId("cid".into());
        for (kind, describe) in [
            (tp(2), "take-profit step 2".to_string()),
            (trail(), "trailing stop (callback 1.5 %)".to_string()),
        ] {
            let (t, q) = (Price::new(d("110.5")), Qty::new(d("0.25")));
            assert_eq!(notices::describe_exit(kind), describe);
            assert_eq!(
                notices::exit_replaced(&pos, &id, kind, "CANCELED", t, q),
                (
                    "reexit:cid".to_string(),
                    format!(
                        "{}: {describe} was missing (CANCELED); re-placed at {t} for {q}",
                        pos.key
                    )
                )
            );
            let e = ExchangeError::Fatal("bad".into());
            assert_eq!(
                notices::exit_order_failed(&pos, kind, t, q, &e),
                (
                    format!("exitfail:E1:{describe}:{t}"),
                    format!(
                        "{}: {describe} at {t} for {q} could not be placed: {e}; the strategy's at-close rule stays in charge",
                        pos.key
                    )
                )
            );
        }
        let fills = [fill("1", "110.123456789", "10", "0.1", 5_000)];
        let fills: Vec<&UserTrade> = fills.iter().collect();
        let e = working(tp(2), "110", "1", true);
        let p = plan_partial_exit(&pos, &e, &fired(42), &fills, 9_000);
        assert_eq!(
            notices::exchange_partial_exit(&pos, &e.client_id, p.stage, &p.trade),
            (
                format!("xpartial:{}", e.client_id),
                format!(
                    "PARTIAL EXIT 2 on the exchange (partial_take_profit_2): {} 1 of {} BTCUSDT @ 110.12345679; PnL {} after fees {}",
                    pos.side,
                    pos.qty,
                    p.trade.pnl.get().round_dp(2),
                    p.trade.fees.get().round_dp(2)
                )
            )
        );
    }
}
