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
pub(super) fn unprotected(pos: &Position, why: &str) -> String {
    format!(
        "{}: UNPROTECTED: protective stop {} not on the exchange ({why}); the next sync places it first",
        pos.key,
        pos.stop_loss.map(|s| s.to_string()).unwrap_or_default()
    )
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
        // closePosition closes the whole net position: only when nothing else (another strategy
        // or a MANUAL position) shares the symbol. A shared symbol gets a quantity stop of this
        // share, reduce-only while every share is on the same side; with opposite shares in
        // one-way mode a reduce-only order would be rejected (or cut short) when the net is on
        // the other side, so the stop is a plain order of exactly this share.
        let (shared, same_side) = symbol_sharing(pos, others);
        let reduce_only = shared && same_side;
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            Intent::StopLoss,
            pos.stop_generation,
        );
        let order = AlgoOrder {
            symbol: pos.key.symbol.clone(),
            side: pos.side.exit_order_side(),
            kind: AlgoKind::StopMarket,
            trigger_price: Some(trigger),
            qty: shared.then(|| orders::close_qty(filters, pos.qty)),
            close_position: !shared,
            reduce_only,
            working_type: WorkingType::MarkPrice,
            client_algo_id: id.clone(),
        };
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
                    || {
                        (
                            format!("stopfail:{id}"),
                            format!(
                                "{}: protective stop {trigger} could not be placed: {e}",
                                pos.key
                            ),
                        )
                    },
                    now,
                )
                .await;
                Protection::Failed(e.to_string())
            }
        };
        if let Some(tp) = pos.take_profit {
            let tp_id = take_profit_id(pos);
            let order = AlgoOrder {
                symbol: pos.key.symbol.clone(),
                side: pos.side.exit_order_side(),
                kind: AlgoKind::TakeProfitMarket,
                trigger_price: Some(tp),
                qty: shared.then(|| orders::close_qty(filters, pos.qty)),
                close_position: !shared,
                reduce_only,
                working_type: WorkingType::MarkPrice,
                client_algo_id: tp_id.clone(),
            };
            match orders::submit_algo(ex, &order, self.timing.submit).await {
                Ok(_) => report.orders_placed += 1,
                Err(e) => {
                    self.notify(
                        &pos.key.account,
                        Priority::High,
                        "tp_failed",
                        || {
                            (
                                format!("tpfail:{tp_id}"),
                                format!("{}: take-profit {tp} could not be placed: {e}", pos.key),
                            )
                        },
                        now,
                    )
                    .await;
                }
            }
        }
        outcome
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
    ) -> Result<String, EngineError> {
        let pos = &p.value;
        let id = ClientId::derive(
            &pos.key.account,
            &pos.key.strategy,
            &pos.key.symbol,
            pos.signal_open_time,
            Intent::Exit,
            pos.stop_generation + 1,
        );
        let reason = format!("stop level {level} already passed; closed at market");
        self.exit_as(ex, p, &reason, id, now, report).await?;
        Ok(reason)
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
                    Ok(()) => report.lines.push(format!(
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
        if v.value.stop_loss.is_none() {
            return Ok(());
        }
        if let Some(id) = &v.value.stop_client_id {
            if open_ids.contains(id.as_str()) {
                return Ok(());
            }
        }
        // The snapshot of open orders was taken at the start of this sync; a stop placed since
        // (adoption above) is not in it, so ask about this one order before replacing it.
        let was = match &v.value.stop_client_id {
            Some(id) => match ex.algo_by_client_id(id).await? {
                Some(a) if a.status.is_open() => return Ok(()),
                Some(a) => format!("{:?}", a.status).to_uppercase(),
                None => "unknown to the exchange".into(),
            },
            None => "never placed".into(),
        };
        // A stop level the market has already passed cannot be placed (-2021 "would immediately
        // trigger"): the position should have been stopped out, so close it now.
        let mark = ex
            .positions()
            .await?
            .into_iter()
            .find(|x| x.symbol == v.value.key.symbol)
            .map(|x| x.mark_price);
        if let (Some(stop), Some(mark)) = (v.value.stop_loss, mark) {
            let breached = match v.value.side {
                Side::Long => mark.0 <= stop.0,
                Side::Short => mark.0 >= stop.0,
            };
            if breached {
                let reason = format!(
                    "stop level {stop} already passed (mark {}) while the stop was {was}",
                    mark.0.round_dp(2)
                );
                self.exit(
                    ex,
                    v.clone(),
                    &reason,
                    Timeframe::M1.last_closed_open(now),
                    now,
                    report,
                )
                .await?;
                v.value.status = PositionStatus::Closed;
                return Ok(());
            }
        }
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
        {
            p.updated_at = now;
            v.version = self.repo.save_position(&p, Some(v.version)).await?;
            v.value = p;
            self.notify(
                &v.value.key.account,
                Priority::High,
                "stop_replaced",
                || {
                    (
                        format!(
                            "restop:{}:{}",
                            v.value.entry_client_id, v.value.stop_generation
                        ),
                        format!(
                            "{}: protective stop was missing ({was}); re-placed at {}",
                            v.value.key,
                            v.value.stop_loss.map(|s| s.to_string()).unwrap_or_default()
                        ),
                    )
                },
                now,
            )
            .await;
        }
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
