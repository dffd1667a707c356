//! Protection: placing a position's protective stop (rate limits waited out within the
//! protective budget), closing at market a position whose stop level the price has passed, and
//! the sync's repair of missing stops, first thing in every sync.

use super::*;

/// What came of placing a position's protective stop.
#[derive(Debug, PartialEq)]
pub(super) enum Protection {
    /// On the exchange (or the position has no stop to place).
    Placed,
    /// Refused because the market has already passed this level (-2021): the position must be
    /// closed at market ([`Engine::close_passed_stop`]).
    Passed(Price),
    /// Not placed after every retry the budget allowed: the position is unprotected.
    Failed(String),
}

/// The job error that says a position is left without its protective stop. Every job that ends
/// with one exits non-zero, so `JobErrors` and the alarms see it; the next sync re-places the
/// stop first.
pub(super) fn unprotected(pos: &Position, why: &str) -> JobFailure {
    JobFailure::Unprotected {
        key: pos.key.clone(),
        stop: pos.stop_loss,
        why: why.to_string(),
    }
}

/// How a position's protective orders are shaped on its symbol.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct ProtectiveShape {
    /// Another strategy or a MANUAL position holds the symbol too: a quantity order of this
    /// share instead of closePosition.
    shared: bool,
    reduce_only: bool,
}

/// The shape of `pos`'s protective orders given the open positions `others` of its account.
/// closePosition closes the whole net position: only when nothing else (another strategy or a
/// MANUAL position) shares the symbol. A shared symbol gets a quantity stop of this share,
/// reduce-only while every share is on the same side; with opposite shares in one-way mode a
/// reduce-only order would be rejected (or cut short) when the net is on the other side, so the
/// stop is a plain order of exactly this share.
fn protective_shape(pos: &Position, others: &[Versioned<Position>]) -> ProtectiveShape {
    let (shared, same_side) = symbol_sharing(pos, others);
    ProtectiveShape {
        shared,
        reduce_only: shared && same_side,
    }
}

/// A protective order (`kind`: the stop or the take-profit) of `pos` at `trigger`, with the
/// client id `id`, in the given shape.
fn protective_order(
    pos: &Position,
    filters: &SymbolFilters,
    shape: ProtectiveShape,
    kind: AlgoKind,
    trigger: Price,
    id: &ClientId,
) -> AlgoOrder {
    AlgoOrder {
        symbol: pos.key.symbol.clone(),
        side: pos.side.exit_order_side(),
        kind,
        trigger_price: Some(trigger),
        qty: shape.shared.then(|| orders::close_qty(filters, pos.qty)),
        close_position: !shape.shared,
        reduce_only: shape.reduce_only,
        working_type: WorkingType::MarkPrice,
        client_algo_id: id.clone(),
    }
}

/// Whether the mark price has reached a `side` position's stop level (at or beyond it).
fn stop_breached(side: Side, stop: Price, mark: Price) -> bool {
    match side {
        Side::Long => mark.get() <= stop.get(),
        Side::Short => mark.get() >= stop.get(),
    }
}

impl Engine {
    /// Place the protective stop (and take-profit) of a position. Rate limits are waited out
    /// within the protective budget (`EngineTiming::protect`); a stop still not placed after
    /// that is announced CRITICAL here and the caller fails its job.
    pub(super) async fn protect(
        &self,
        ex: &dyn Exchange,
        pos: &mut Position,
        filters: &SymbolFilters,
        others: &[Versioned<Position>],
        now: i64,
        report: &mut JobReport,
    ) -> Protection {
        let Some(trigger) = pos.stop_loss else {
            return Protection::Placed;
        };
        let shape = protective_shape(pos, others);
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            Intent::StopLoss,
            pos.stop_generation,
        );
        let order = protective_order(pos, filters, shape, AlgoKind::StopMarket, trigger, &id);
        let outcome = match orders::submit_algo(ex, &order, self.timing.protect).await {
            Ok(_) => {
                pos.stop_client_id = Some(id.0.clone());
                report.orders_placed += 1;
                Protection::Placed
            }
            // The caller closes at market; that is no failure to announce.
            Err(e) if e.refusal() == Some(Refusal::WouldTriggerImmediately) => {
                return Protection::Passed(trigger);
            }
            Err(e) => {
                if e.refusal().is_some() {
                    report.orders_rejected += 1;
                }
                self.notify(
                    &pos.key.account,
                    Priority::Critical,
                    "stop_failed",
                    || notices::stop_failed(pos, &id, trigger, &e),
                    now,
                )
                .await;
                Protection::Failed(e.to_string())
            }
        };
        if let Some(tp) = pos.take_profit {
            self.place_take_profit(ex, pos, filters, shape, tp, now, report)
                .await;
        }
        outcome
    }

    /// Place the take-profit order of a position at `tp`, shaped as its stop; a failure is
    /// alerted and otherwise left alone (the stop protects the position).
    #[allow(clippy::too_many_arguments)]
    async fn place_take_profit(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        filters: &SymbolFilters,
        shape: ProtectiveShape,
        tp: Price,
        now: i64,
        report: &mut JobReport,
    ) {
        let tp_id = take_profit_id(pos);
        let order = protective_order(pos, filters, shape, AlgoKind::TakeProfitMarket, tp, &tp_id);
        match orders::submit_algo(ex, &order, self.timing.submit).await {
            Ok(_) => report.orders_placed += 1,
            Err(e) => {
                self.notify(
                    &pos.key.account,
                    Priority::High,
                    "tp_failed",
                    || notices::tp_failed(pos, &tp_id, tp, &e),
                    now,
                )
                .await;
            }
        }
    }

    /// Close a position whose stop level the market has already passed (Binance answers -2021,
    /// "would immediately trigger", to such a stop): the stop's exit has in effect happened, so
    /// it is done now at market instead of leaving the position on its old stop or none. The
    /// client id belongs to this stop generation, so a rerun finds the same order.
    pub(super) async fn close_passed_stop(
        &self,
        ex: &dyn Exchange,
        p: Versioned<Position>,
        level: Price,
        now: i64,
        report: &mut JobReport,
    ) -> Result<Outcome, EngineError> {
        let pos = &p.value;
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            Intent::Exit,
            pos.stop_generation + 1,
        );
        let outcome = Outcome::StopPassed { level };
        let text = outcome.to_string();
        self.exit_as(ex, p, Why::new(ExitReason::Stop, &text), id, now, report)
            .await?;
        Ok(outcome)
    }

    /// Cancel the open stops a position's later stop generations replaced: a swap whose cancel
    /// failed (timeout, a 5xx page) leaves the old stop working beside the new one, and a
    /// `closePosition` one would close every share of the symbol. Later generations than the
    /// stored one are left alone: an evaluation may be placing one right now.
    pub(super) async fn cancel_superseded_stops(
        &self,
        ex: &dyn Exchange,
        stored: &[Versioned<Position>],
        open_ids: &HashSet<&str>,
        report: &mut JobReport,
    ) {
        for p in stored
            .iter()
            .map(|v| &v.value)
            .filter(|p| !p.is_manual && p.is_open() && p.stop_generation > 0)
        {
            // Generation 0 is the bare id; generation g > 0 appends `-<g in base 36>`.
            let base = ClientId::derive(
                &p.key.account,
                &p.key.strategy,
                &p.key.symbol,
                p.signal_open_time,
                Intent::StopLoss,
                0,
            );
            let superseded = open_ids.iter().filter(|id| {
                let generation = match id.strip_prefix(base.as_str()) {
                    Some("") => Some(0),
                    Some(rest) => rest
                        .strip_prefix('-')
                        .and_then(|g| u32::from_str_radix(g, 36).ok()),
                    None => None,
                };
                generation.is_some_and(|g| g < p.stop_generation)
            });
            for id in superseded {
                match orders::cancel_algo(ex, &p.key.symbol, id, self.timing.submit).await {
                    Ok(()) => report.note(format!(
                        "{}: cancelled the stop {id} that generation {} replaced",
                        p.key, p.stop_generation
                    )),
                    Err(e) => {
                        tracing::warn!(client_algo_id = %id, error = %e, "replaced stop not cancelled; the next sync tries again");
                    }
                }
            }
        }
    }

    /// The sync's first pass: re-place the missing stop of every strategy position on a symbol
    /// whose exchange amount equals the stored shares (a symbol that differs is reconciled first,
    /// later in the same sync, since its stop may have fired).
    pub(super) async fn restore_stops(
        &self,
        ex: &dyn Exchange,
        stored: &mut [Versioned<Position>],
        net: &BTreeMap<Symbol, (Decimal, Price)>,
        open_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let settled = |sym: &Symbol, stored: &[Versioned<Position>]| {
            let held: Decimal = stored
                .iter()
                .filter(|v| &v.value.key.symbol == sym && v.value.is_open())
                .map(|v| signed(&v.value))
                .sum();
            net.get(sym).map(|x| x.0).unwrap_or_default() == held
        };
        for i in 0..stored.len() {
            let p = &stored[i].value;
            let missing = !p.is_manual
                && p.is_open()
                && p.stop_loss.is_some()
                && !p
                    .stop_client_id
                    .as_deref()
                    .is_some_and(|id| open_ids.contains(id));
            if missing && settled(&p.key.symbol, stored) {
                self.check_stop(ex, &mut stored[i], open_ids, now, report)
                    .await?;
            }
        }
        Ok(())
    }

    /// Re-place a protective stop that is no longer on the exchange.
    pub(super) async fn check_stop(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        open_ids: &HashSet<&str>,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let Some(was) = self.missing_stop(ex, &v.value, open_ids).await? else {
            return Ok(());
        };
        if self.close_breached_stop(ex, v, &was, now, report).await? {
            return Ok(());
        }
        self.replace_missing_stop(ex, v, &was, now, report).await
    }

    /// Why the position's protective stop is not on the exchange (`never placed`, or what the
    /// exchange says of it), or `None` when it has no stop level or its stop is open.
    async fn missing_stop(
        &self,
        ex: &dyn Exchange,
        pos: &Position,
        open_ids: &HashSet<&str>,
    ) -> Result<Option<String>, EngineError> {
        if pos.stop_loss.is_none() {
            return Ok(None);
        }
        if let Some(id) = &pos.stop_client_id {
            if open_ids.contains(id.as_str()) {
                return Ok(None);
            }
        }
        // The snapshot of open orders was taken at the start of this sync; a stop placed since
        // (adoption above) is not in it, so ask about this one order before replacing it.
        Ok(Some(match &pos.stop_client_id {
            Some(id) => match ex.algo_by_client_id(id).await? {
                Some(a) if a.status.is_open() => return Ok(None),
                Some(a) => format!("{:?}", a.status).to_uppercase(),
                None => "unknown to the exchange".into(),
            },
            None => "never placed".into(),
        }))
    }

    /// A stop level the market has already passed cannot be placed (-2021 "would immediately
    /// trigger"): the position should have been stopped out, so it is closed now. Returns
    /// whether it was (`v` is then marked closed).
    async fn close_breached_stop(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        was: &str,
        now: i64,
        report: &mut JobReport,
    ) -> Result<bool, EngineError> {
        let mark = ex
            .positions()
            .await?
            .into_iter()
            .find(|x| x.symbol == v.value.key.symbol)
            .map(|x| x.mark_price);
        let (Some(stop), Some(mark)) = (v.value.stop_loss, mark) else {
            return Ok(false);
        };
        if !stop_breached(v.value.side, stop, mark) {
            return Ok(false);
        }
        let reason = format!(
            "stop level {stop} already passed (mark {}) while the stop was {was}",
            mark.get().round_dp(2)
        );
        self.exit(
            ex,
            v.clone(),
            Why::new(ExitReason::Stop, &reason),
            Timeframe::M1.last_closed_open(now),
            now,
            report,
        )
        .await?;
        v.value.status = PositionStatus::Closed;
        Ok(true)
    }

    /// Place the missing stop again (a new generation when one had been placed) and save the
    /// position with it, alerted; a level passed meanwhile closes the position, and a stop not
    /// placed is the job's error.
    async fn replace_missing_stop(
        &self,
        ex: &dyn Exchange,
        v: &mut Versioned<Position>,
        was: &str,
        now: i64,
        report: &mut JobReport,
    ) -> Result<(), EngineError> {
        let filters = ex.symbol_filters(&v.value.key.symbol).await?;
        let others = self.repo.positions(&v.value.key.account).await?;
        let mut p = v.value.clone();
        if p.stop_client_id.is_some() {
            p.stop_generation += 1;
        }
        let protection = self
            .protect(ex, &mut p, &filters, &others, now, report)
            .await;
        match protection {
            Protection::Placed => {}
            Protection::Passed(level) => {
                self.close_passed_stop(ex, v.clone(), level, now, report)
                    .await?;
                v.value.status = PositionStatus::Closed;
                return Ok(());
            }
            Protection::Failed(why) => {
                report.errors.push(unprotected(&v.value, &why));
                return Ok(());
            }
        }
        p.updated_at = now;
        v.version = self.repo.save_position(&p, Some(v.version)).await?;
        v.value = p;
        self.notify(
            &v.value.key.account,
            Priority::High,
            "stop_replaced",
            || notices::stop_replaced(&v.value, was),
            now,
        )
        .await;
        Ok(())
    }
}

impl Engine {
    /// Whether the position's stop or take-profit has fired on the exchange (only orders no longer
    /// open are looked up).
    pub(super) async fn protection_fired(
        &self,
        ex: &dyn Exchange,
        p: &Position,
        open_ids: &HashSet<&str>,
    ) -> Result<bool, EngineError> {
        let ids = stop_and_take_profit_ids(p);
        for id in ids.iter().filter(|id| !open_ids.contains(id.as_str())) {
            if let Some(a) = ex.algo_by_client_id(id).await? {
                if matches!(a.status, AlgoStatus::Finished | AlgoStatus::Triggered) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    pub(super) async fn existing_stop(
        &self,
        ex: &dyn Exchange,
        p: &Position,
    ) -> Result<Option<String>, EngineError> {
        let id = ClientId::derive(
            &p.key.account,
            &p.key.strategy,
            &p.key.symbol,
            p.signal_open_time,
            Intent::StopLoss,
            p.stop_generation,
        );
        Ok(match ex.algo_by_client_id(id.as_str()).await? {
            Some(a) if a.status.is_open() => Some(a.client_algo_id),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn position(strategy: &str, side: Side, manual: bool) -> Versioned<Position> {
        Versioned {
            value: Position {
                key: PositionKey {
                    account: AccountId::new("a"),
                    strategy: StrategyId::new(strategy),
                    symbol: Symbol::new("BTCUSDT"),
                },
                side,
                qty: Qty::new(d("1.2345")),
                entry_price: Price::new(d("100")),
                leverage: 1,
                status: PositionStatus::Active,
                is_manual: manual,
                entry_client_id: "E1".into(),
                signal_open_time: 0,
                opened_at: 0,
                stop_loss: Some(Price::new(d("95"))),
                take_profit: None,
                stop_client_id: None,
                stop_generation: 3,
                partial_exits_done: 0,
                pyramids_done: 0,
                best_price: None,
                entry_fee: Notional::ZERO,
                updated_at: 0,
                exit_orders: Vec::new(),
                exit_generation: 0,
            },
            version: 1,
        }
    }

    fn filters() -> SymbolFilters {
        SymbolFilters {
            symbol: Symbol::new("BTCUSDT"),
            tick_size: d("0.1"),
            min_price: d("0.1"),
            max_price: d("1000000"),
            step_size: d("0.01"),
            min_qty: d("0.01"),
            max_qty: d("1000"),
            market_step_size: d("0.01"),
            market_min_qty: d("0.01"),
            market_max_qty: d("1000"),
            min_notional: d("5"),
        }
    }

    #[test]
    fn stop_breached_at_or_beyond_the_level() {
        // (side, stop, mark, breached)
        let table = [
            (Side::Long, "95", "96", false),
            (Side::Long, "95", "95", true),
            (Side::Long, "95", "94", true),
            (Side::Short, "105", "104", false),
            (Side::Short, "105", "105", true),
            (Side::Short, "105", "106", true),
        ];
        for (side, stop, mark, want) in table {
            let got = stop_breached(side, Price::new(d(stop)), Price::new(d(mark)));
            assert_eq!(got, want, "{side:?} stop {stop} mark {mark}");
        }
    }

    #[test]
    fn protective_shape_follows_the_sharing() {
        let me = position("s", Side::Long, false);
        // (others on the account, shared, reduce_only)
        let table = [
            (vec![], false, false),
            (vec![me.clone()], false, false),
            (vec![position("t", Side::Long, false)], true, true),
            (vec![position("t", Side::Long, true)], true, true),
            (vec![position("t", Side::Short, false)], true, false),
            (
                vec![
                    position("t", Side::Long, false),
                    position("u", Side::Short, false),
                ],
                true,
                false,
            ),
        ];
        for (i, (others, shared, reduce_only)) in table.into_iter().enumerate() {
            let got = protective_shape(&me.value, &others);
            assert_eq!(
                got,
                ProtectiveShape {
                    shared,
                    reduce_only
                },
                "row {i}"
            );
        }
    }

    #[test]
    fn protective_order_by_shape() {
        let me = position("s", Side::Long, false).value;
        let f = filters();
        let id = ClientId("cid".into());
        // (shared, reduce_only, qty, closePosition)
        let table = [
            (false, false, None, true),
            (true, true, Some(orders::close_qty(&f, me.qty)), false),
            (true, false, Some(orders::close_qty(&f, me.qty)), false),
        ];
        for (shared, reduce_only, qty, close) in table {
            let shape = ProtectiveShape {
                shared,
                reduce_only,
            };
            for kind in [AlgoKind::StopMarket, AlgoKind::TakeProfitMarket] {
                let o = protective_order(&me, &f, shape, kind, Price::new(d("95")), &id);
                assert_eq!(o.kind, kind);
                assert_eq!(o.symbol, me.key.symbol);
                assert_eq!(o.side, Side::Long.exit_order_side());
                assert_eq!(o.trigger_price, Some(Price::new(d("95"))));
                assert_eq!(
                    (o.qty, o.close_position, o.reduce_only),
                    (qty, close, reduce_only)
                );
                assert_eq!(o.working_type, WorkingType::MarkPrice);
                assert_eq!(o.client_algo_id, id);
            }
        }
    }

    /// The notices made in notices.rs read exactly as the texts protection made itself.
    #[test]
    fn protection_notices_unchanged() {
        let mut p = position("s", Side::Long, false).value;
        let id = ClientId("cid".into());
        let e = ExchangeError::Fatal("bad".into());
        let trigger = Price::new(d("95.5"));
        assert_eq!(
            notices::stop_failed(&p, &id, trigger, &e),
            (
                "stopfail:cid".to_string(),
                format!(
                    "{}: protective stop {trigger} could not be placed: {e}",
                    p.key
                )
            )
        );
        assert_eq!(
            notices::tp_failed(&p, &id, trigger, &e),
            (
                "tpfail:cid".to_string(),
                format!("{}: take-profit {trigger} could not be placed: {e}", p.key)
            )
        );
        assert_eq!(
            notices::stop_replaced(&p, "CANCELED"),
            (
                "restop:E1:3".to_string(),
                format!(
                    "{}: protective stop was missing (CANCELED); re-placed at 95",
                    p.key
                )
            )
        );
        p.stop_loss = None;
        assert_eq!(
            notices::stop_replaced(&p, "never placed").1,
            format!(
                "{}: protective stop was missing (never placed); re-placed at ",
                p.key
            )
        );
    }
}
