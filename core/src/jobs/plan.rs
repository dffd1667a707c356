//! The evaluation's plan phase: pure functions from what was gathered (the decision, the stored
//! position, the trading rules, the sized quantity) to what the apply phase does. Nothing here
//! reads a clock, the store or the exchange, so each rule is tested on plain data below.

use super::*;

/// What one decision does to the strategy's share of the symbol.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Nothing to send; the line says why.
    Nothing(String),
    PartialClose {
        pos: Versioned<Position>,
        fraction: Decimal,
        stage: u8,
        reason: String,
    },
    Pyramid {
        pos: Versioned<Position>,
        fraction: Decimal,
        stage: u8,
    },
    MoveStop {
        pos: Versioned<Position>,
        price: Price,
        reason: String,
    },
    Close {
        pos: Versioned<Position>,
        reason: String,
    },
    /// Open `signal.side`, first closing `reverse` (the opposite position) when it is a reversal.
    Enter {
        signal: EntrySignal,
        reverse: Option<Versioned<Position>>,
    },
}

/// What an entry asks for: the side, and the stop and take-profit as the strategy specified them
/// (priced from the fill once it is known).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct EntrySignal {
    pub side: Side,
    pub stop: Option<StopSpec>,
    pub take_profit: Option<StopSpec>,
}

/// Route a decision to its step, given the strategy's open position (if any) once what the
/// exchange did since the last sync has been recorded.
pub(super) fn route(decision: &Decision, open: Option<Versioned<Position>>) -> Step {
    let flat = |what: &str| Step::Nothing(format!("hold ({what} while flat)"));
    match (decision.action.clone(), open) {
        (Action::Hold, _) => Step::Nothing(format!(
            "hold ({}) {}",
            decision.note,
            decision.conditions_line()
        )),
        (Action::PartialClose { .. }, None) => flat("partial close"),
        (
            Action::PartialClose {
                fraction,
                stage,
                reason,
            },
            Some(pos),
        ) => Step::PartialClose {
            pos,
            fraction,
            stage,
            reason,
        },
        (Action::Pyramid { .. }, None) => flat("pyramid"),
        (Action::Pyramid { fraction, stage }, Some(pos)) => Step::Pyramid {
            pos,
            fraction,
            stage,
        },
        (Action::MoveStop { .. }, None) => flat("stop move"),
        (Action::MoveStop { price, reason }, Some(pos)) => Step::MoveStop { pos, price, reason },
        (Action::Close { .. }, None) => flat("close signal"),
        (Action::Close { reason }, Some(pos)) => Step::Close { pos, reason },
        (
            Action::Open {
                side,
                stop,
                take_profit,
            },
            open,
        ) => match open {
            Some(_) => Step::Nothing("hold (open signal while already in a position)".into()),
            None => Step::Enter {
                signal: EntrySignal {
                    side,
                    stop,
                    take_profit,
                },
                reverse: None,
            },
        },
        (
            Action::Reverse {
                side,
                stop,
                take_profit,
            },
            reverse,
        ) => Step::Enter {
            signal: EntrySignal {
                side,
                stop,
                take_profit,
            },
            reverse,
        },
    }
}

/// Why an entry of `side` on `sym` must not be sent: a hand-made position on the other side of
/// the symbol, which one-way mode would net with it (reduce or flip the person's position),
/// unless `allowed` (`risk.entries_against_manual`).
pub(super) fn against_manual(
    stored: &[Versioned<Position>],
    sym: &Symbol,
    side: Side,
    allowed: bool,
) -> Option<String> {
    if allowed {
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

/// The PENDING record an entry writes before its order leaves: the deterministic client id, the
/// stop and take-profit priced from the sizing price (moved to the fill later, [`apply_fill`]).
pub(super) struct PendingEntry<'a> {
    pub key: PositionKey,
    pub signal: EntrySignal,
    pub qty: Qty,
    pub leverage: u32,
    pub ref_price: Price,
    pub filters: &'a SymbolFilters,
    pub entry_id: &'a ClientId,
    pub open_time: i64,
    pub now: i64,
}

impl PendingEntry<'_> {
    pub(super) fn position(&self) -> Position {
        let (side, px, f) = (self.signal.side, self.ref_price, self.filters);
        Position {
            key: self.key.clone(),
            side,
            qty: self.qty,
            entry_price: px,
            leverage: self.leverage,
            status: PositionStatus::Pending,
            is_manual: false,
            entry_client_id: self.entry_id.0.clone(),
            signal_open_time: self.open_time,
            opened_at: self.now,
            stop_loss: self
                .signal
                .stop
                .map(|sp| orders::stop_price(f, side, sp.stop_price(side, px))),
            take_profit: self
                .signal
                .take_profit
                .map(|sp| orders::target_price(f, side, sp.target_price(side, px))),
            stop_client_id: None,
            stop_generation: 0,
            partial_exits_done: 0,
            pyramids_done: 0,
            best_price: Some(px),
            entry_fee: Notional::ZERO,
            updated_at: self.now,
            exit_orders: Vec::new(),
            exit_generation: 0,
        }
    }
}

/// The line of an entry skipped because its quantity does not pass the symbol's rules.
pub(super) fn size_skipped(
    side: Side,
    why: &dyn std::fmt::Display,
    equity: Notional,
    size_pct: Decimal,
    lev: u32,
    risk_notes: &[String],
) -> String {
    let notes = if risk_notes.is_empty() {
        String::new()
    } else {
        format!("; {}", risk_notes.join("; "))
    };
    format!("entry {side} skipped: {why} (equity {equity}, size {size_pct}, leverage {lev}{notes})")
}

/// How an entry's report line and notification describe its stop.
pub(super) fn stop_text(stop: Option<Price>, placed: bool) -> String {
    match (stop, placed) {
        (Some(p), true) => format!("stop {p}"),
        (Some(p), false) => format!("STOP {p} NOT PLACED (UNPROTECTED; the sync places it first)"),
        (None, _) => "no stop".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Action;

    fn pos(side: Side, manual: bool, sym: &str) -> Versioned<Position> {
        let key = PositionKey {
            account: AccountId::new("main"),
            strategy: StrategyId::new(if manual { "MANUAL" } else { "EMA_CROSS" }),
            symbol: Symbol::new(sym),
        };
        let filters = crate::paper::generous_filters(&Symbol::new(sym));
        let id = ClientId("e".into());
        let mut p = PendingEntry {
            key,
            signal: EntrySignal {
                side,
                stop: None,
                take_profit: None,
            },
            qty: Qty::new(Decimal::ONE),
            leverage: 10,
            ref_price: Price::new(Decimal::from(100)),
            filters: &filters,
            entry_id: &id,
            open_time: 0,
            now: 0,
        }
        .position();
        p.status = PositionStatus::Active;
        p.is_manual = manual;
        Versioned {
            value: p,
            version: 1,
        }
    }

    fn decision(action: Action) -> Decision {
        Decision {
            action,
            conditions: Vec::new(),
            note: "n".into(),
        }
    }

    fn kind(step: &Step) -> String {
        match step {
            Step::Nothing(line) => format!("nothing: {line}"),
            Step::PartialClose { stage, .. } => format!("partial {stage}"),
            Step::Pyramid { stage, .. } => format!("pyramid {stage}"),
            Step::MoveStop { price, .. } => format!("move {price}"),
            Step::Close { reason, .. } => format!("close {reason}"),
            Step::Enter { signal, reverse } => {
                format!("enter {} reverse={}", signal.side, reverse.is_some())
            }
        }
    }

    #[test]
    fn each_action_routes_by_whether_a_position_is_open() {
        let open = Action::Open {
            side: Side::Long,
            stop: None,
            take_profit: None,
        };
        let reverse = Action::Reverse {
            side: Side::Short,
            stop: None,
            take_profit: None,
        };
        let partial = Action::PartialClose {
            fraction: Decimal::new(5, 1),
            stage: 2,
            reason: "tp".into(),
        };
        let pyramid = Action::Pyramid {
            fraction: Decimal::ONE,
            stage: 1,
        };
        let mv = Action::MoveStop {
            price: Price::new(Decimal::from(90)),
            reason: "trail".into(),
        };
        let close = Action::Close { reason: "x".into() };
        let table: &[(&Action, bool, &str)] = &[
            (&Action::Hold, false, "nothing: hold (n) "),
            (&Action::Hold, true, "nothing: hold (n) "),
            (&open, false, "enter LONG reverse=false"),
            (
                &open,
                true,
                "nothing: hold (open signal while already in a position)",
            ),
            (&reverse, false, "enter SHORT reverse=false"),
            (&reverse, true, "enter SHORT reverse=true"),
            (&partial, false, "nothing: hold (partial close while flat)"),
            (&partial, true, "partial 2"),
            (&pyramid, false, "nothing: hold (pyramid while flat)"),
            (&pyramid, true, "pyramid 1"),
            (&mv, false, "nothing: hold (stop move while flat)"),
            (&mv, true, "move 90"),
            (&close, false, "nothing: hold (close signal while flat)"),
            (&close, true, "close x"),
        ];
        for (action, is_open, want) in table {
            let open = is_open.then(|| pos(Side::Long, false, "BTCUSDT"));
            let got = kind(&route(&decision((*action).clone()), open));
            assert_eq!(got.trim_end(), want.trim_end(), "{action:?} open={is_open}");
        }
    }

    #[test]
    fn entries_against_an_opposite_manual_position_are_refused_unless_allowed() {
        let sym = Symbol::new("BTCUSDT");
        let manual_short = vec![pos(Side::Short, true, "BTCUSDT")];
        let why = against_manual(&manual_short, &sym, Side::Long, false).expect("refused");
        assert!(why.starts_with("entry LONG not sent: the MANUAL SHORT 1 BTCUSDT"));
        assert!(against_manual(&manual_short, &sym, Side::Long, true).is_none());
        // Same side, another symbol, or a strategy's own position: nothing to net against.
        assert!(against_manual(&manual_short, &sym, Side::Short, false).is_none());
        let other = vec![pos(Side::Short, true, "ETHUSDT")];
        assert!(against_manual(&other, &sym, Side::Long, false).is_none());
        let strategy = vec![pos(Side::Short, false, "BTCUSDT")];
        assert!(against_manual(&strategy, &sym, Side::Long, false).is_none());
    }

    #[test]
    fn a_pending_entry_prices_its_stop_and_target_from_the_sizing_price() {
        let filters = SymbolFilters {
            tick_size: Decimal::new(1, 1),
            min_price: Decimal::new(1, 1),
            ..crate::paper::generous_filters(&Symbol::new("BTCUSDT"))
        };
        let id = ClientId("abc".into());
        let p = PendingEntry {
            key: pos(Side::Long, false, "BTCUSDT").value.key,
            signal: EntrySignal {
                side: Side::Short,
                stop: Some(StopSpec::Percent(Decimal::new(2, 2))),
                take_profit: Some(StopSpec::Percent(Decimal::new(4, 2))),
            },
            qty: Qty::new(Decimal::new(15, 1)),
            leverage: 5,
            ref_price: Price::new(Decimal::from(100)),
            filters: &filters,
            entry_id: &id,
            open_time: 7,
            now: 9,
        }
        .position();
        assert_eq!(p.status, PositionStatus::Pending);
        assert_eq!(p.entry_client_id, "abc");
        assert_eq!((p.signal_open_time, p.opened_at, p.updated_at), (7, 9, 9));
        // A short's stop sits above the price and its target below, on the tick grid.
        assert_eq!(p.stop_loss, Some(Price::new(Decimal::from(102))));
        assert_eq!(p.take_profit, Some(Price::new(Decimal::from(96))));
        assert_eq!(p.best_price, Some(Price::new(Decimal::from(100))));
    }

    #[test]
    fn entry_texts_name_the_stop_and_the_risk_notes() {
        let px = Some(Price::new(Decimal::from(95)));
        assert_eq!(stop_text(px, true), "stop 95");
        assert!(stop_text(px, false).contains("UNPROTECTED"));
        assert_eq!(stop_text(None, true), "no stop");
        let p = pos(Side::Long, false, "BTCUSDT").value;
        let entered = |stop_placed, risk_notes: &[&str]| Outcome::Entered {
            side: p.side,
            qty: p.qty,
            price: p.entry_price,
            stop: px,
            stop_placed,
            risk_notes: risk_notes.iter().map(|n| n.to_string()).collect(),
        };
        assert_eq!(
            entered(true, &["kelly 0.5"]).to_string(),
            "entered LONG 1 @ 100 (stop 95) [risk: kelly 0.5]"
        );
        assert!(entered(false, &[])
            .to_string()
            .ends_with("(STOP 95 NOT PLACED (UNPROTECTED; the sync places it first))"));
        let past = Outcome::EnteredPastStop {
            side: p.side,
            qty: p.qty,
            price: p.entry_price,
            level: Price::new(Decimal::from(99)),
        };
        assert_eq!(
            past.to_string(),
            "entered LONG 1 @ 100, then stop level 99 already passed; closed at market"
        );
        let line = size_skipped(
            Side::Long,
            &"below min notional",
            Notional::new(Decimal::from(50)),
            Decimal::new(2, 2),
            3,
            &[],
        );
        assert_eq!(
            line,
            "entry LONG skipped: below min notional (equity 50, size 0.02, leverage 3)"
        );
    }
}
