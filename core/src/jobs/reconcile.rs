//! The sync's reconciliation decisions, as pure functions of the stored positions, the exchange's
//! snapshot and `now`: which symbols drifted, what each strategy share on a symbol becomes
//! (held, resized or closed), which positions pause or resume with their strategy, and what the
//! person's own (MANUAL) share on a symbol becomes. They read nothing and write nothing: the
//! sync job ([`super::sync`]) gathers what they need, calls them, and applies their answers with
//! conditional writes. The lookups that need the exchange's order history (entries written ahead
//! of their order, protective orders that fired, fills since a share book, entries of ours to
//! adopt) stay in the job; their results are inputs here.
//!
//! The invariant the plans keep (property-tested below): after the strategy verdicts and the
//! MANUAL step are applied, the open shares on every symbol add up to the exchange's net, and a
//! hand-made order never moves a strategy's share when the fills explain the move.

use super::{signed, Versioned};
use crate::domain::{
    AccountId, Notional, Position, PositionKey, PositionStatus, Price, Qty, Side, StrategyId,
    Symbol,
};
use crate::ports::ExchangePosition;
use crate::shares::ShareBook;
use rust_decimal::prelude::Signed;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The exchange's net per symbol with a position: signed amount and entry price.
pub(super) type Net = BTreeMap<Symbol, (Decimal, Price)>;

/// The net of every symbol the exchange holds a position on.
pub(super) fn net_of(positions: &[ExchangePosition]) -> Net {
    positions
        .iter()
        .filter(|p| !p.amount.is_zero())
        .map(|p| (p.symbol.clone(), (p.amount, p.entry_price)))
        .collect()
}

/// The mark price of every symbol the exchange holds a position on.
pub(super) fn marks_of(positions: &[ExchangePosition]) -> crate::domain::Marks {
    positions
        .iter()
        .filter(|p| !p.amount.is_zero())
        .map(|p| (p.symbol.clone(), p.mark_price))
        .collect()
}

/// The signed net on `sym` (zero when the exchange holds none).
pub(super) fn net_amount(net: &Net, sym: &Symbol) -> Decimal {
    net.get(sym).map(|x| x.0).unwrap_or_default()
}

/// The open stored shares on `sym`: signed quantity per strategy, and the MANUAL one.
pub(super) fn stored_shares(
    stored: &[Versioned<Position>],
    sym: &Symbol,
) -> (BTreeMap<StrategyId, Decimal>, Decimal) {
    let mut strategies = BTreeMap::new();
    let mut manual = Decimal::ZERO;
    for v in stored
        .iter()
        .filter(|v| &v.value.key.symbol == sym && v.value.is_open())
    {
        if v.value.is_manual {
            manual += signed(&v.value);
        } else {
            *strategies.entry(v.value.key.strategy.clone()).or_default() += signed(&v.value);
        }
    }
    (strategies, manual)
}

/// Sum of the open stored shares on `sym`, strategies only or MANUAL included.
fn open_sum(stored: &[Versioned<Position>], sym: &Symbol, with_manual: bool) -> Decimal {
    stored
        .iter()
        .filter(|v| &v.value.key.symbol == sym && v.value.is_open())
        .filter(|v| with_manual || !v.value.is_manual)
        .map(|v| signed(&v.value))
        .sum()
}

/// Symbols whose exchange net differs from the sum of their open stored shares (MANUAL
/// included): the sync's drift, and the symbols whose fills it reads.
pub(super) fn drifted(net: &Net, stored: &[Versioned<Position>]) -> BTreeSet<Symbol> {
    net.keys()
        .chain(
            stored
                .iter()
                .filter(|v| v.value.is_open())
                .map(|v| &v.value.key.symbol),
        )
        .filter(|sym| net_amount(net, sym) != open_sum(stored, sym, true))
        .cloned()
        .collect()
}

/// What the sync makes of a strategy position whose symbol's net changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Verdict {
    /// The exchange no longer holds it.
    Closed,
    /// It holds this quantity now.
    Resized(Qty),
    /// As stored: check its protection.
    Held,
}

/// The verdict from the share the fills give the position's strategy.
pub(super) fn by_fills(share: Decimal, p: &Position) -> Verdict {
    if share.is_zero() || share.signum() != p.side.sign() {
        Verdict::Closed
    } else if share.abs() != p.qty.get() {
        Verdict::Resized(Qty::new(share.abs()))
    } else {
        Verdict::Held
    }
}

/// The verdict from sizes alone, when the net moved and fills cannot tell whose fills moved it
/// (no book yet, fills unreadable): the net gone or turned means closed; a sole strategy holding
/// more than the net was reduced.
pub(super) fn by_sizes(ex_amt: Decimal, ours: Decimal, p: &Position) -> Verdict {
    if ex_amt.is_zero() || ex_amt.signum() != ours.signum() {
        Verdict::Closed
    } else if ex_amt.abs() < ours.abs() && ours.abs() == p.qty.get() {
        Verdict::Resized(Qty::new(ex_amt.abs()))
    } else {
        Verdict::Held
    }
}

/// The open strategy (not MANUAL) positions' symbols, each once, in order.
pub(super) fn strategy_symbols(stored: &[Versioned<Position>]) -> Vec<Symbol> {
    stored
        .iter()
        .filter(|v| !v.value.is_manual && v.value.is_open())
        .map(|v| v.value.key.symbol.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The verdict on every open strategy position on `sym` (by index into `stored`): held while the
/// shares add up to a non-flat net; else by the fills' shares when `book` explains the move,
/// else by sizes.
pub(super) fn symbol_verdicts(
    stored: &[Versioned<Position>],
    net: &Net,
    sym: &Symbol,
    book: Option<&ShareBook>,
) -> Vec<(usize, Verdict)> {
    let ex_amt = net_amount(net, sym);
    let ours = open_sum(stored, sym, false);
    let all = open_sum(stored, sym, true);
    stored
        .iter()
        .enumerate()
        .filter(|(_, v)| &v.value.key.symbol == sym && !v.value.is_manual && v.value.is_open())
        .map(|(i, v)| {
            let verdict = match book {
                // Nothing moved (a flat net, though, holds no share at all).
                _ if all == ex_amt && !ex_amt.is_zero() => Verdict::Held,
                Some(book) => by_fills(book.share(&v.value.key.strategy), &v.value),
                None => by_sizes(ex_amt, ours, &v.value),
            };
            (i, verdict)
        })
        .collect()
}

/// Open strategy positions whose status follows whether their strategy runs on the account: a
/// position whose strategy no longer runs is PAUSED (still tracked and protected, managed by
/// nobody); a PAUSED one whose strategy runs again is ACTIVE. By index into `stored`.
pub(super) fn status_changes(
    stored: &[Versioned<Position>],
    running: &HashSet<&str>,
) -> Vec<(usize, PositionStatus)> {
    stored
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.value.is_manual && v.value.is_open())
        .filter_map(|(i, v)| {
            let runs = running.contains(v.value.key.strategy.as_str());
            match (v.value.status, runs) {
                (PositionStatus::Paused, true) => Some((i, PositionStatus::Active)),
                (PositionStatus::Active | PositionStatus::Modified, false) => {
                    Some((i, PositionStatus::Paused))
                }
                _ => None,
            }
        })
        .collect()
}

/// Symbols whose MANUAL share may need reconciling: every symbol the exchange holds, and every
/// symbol with a stored MANUAL position.
pub(super) fn manual_symbols(net: &Net, stored: &[Versioned<Position>]) -> BTreeSet<Symbol> {
    net.keys()
        .cloned()
        .chain(
            stored
                .iter()
                .filter(|v| v.value.is_manual)
                .map(|v| v.value.key.symbol.clone()),
        )
        .collect()
}

/// What the exchange holds on `sym` that no open strategy share explains (signed), with the
/// exchange's entry price.
pub(super) fn residual(
    net: &Net,
    stored: &[Versioned<Position>],
    sym: &Symbol,
) -> (Decimal, Price) {
    let (ex_amt, ex_entry) = net
        .get(sym)
        .cloned()
        .unwrap_or((Decimal::ZERO, Price::ZERO));
    (ex_amt - open_sum(stored, sym, false), ex_entry)
}

/// What becomes of the MANUAL share on a symbol.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum ManualStep {
    /// Already right (or nothing on either side).
    Nothing,
    /// The residual is gone: the stored MANUAL position (by index) is closed.
    Close(usize),
    /// A residual with no MANUAL record: track this new position.
    Open(Box<Position>),
    /// The stored MANUAL position (by index) now holds this side and quantity.
    Change(usize, Side, Qty),
}

/// The MANUAL step on `sym` for `residual` (see [`residual`]), given the stored positions.
pub(super) fn manual_step(
    account: &AccountId,
    sym: &Symbol,
    (residual, ex_entry): (Decimal, Price),
    stored: &[Versioned<Position>],
    now: i64,
) -> ManualStep {
    let idx = stored
        .iter()
        .position(|v| v.value.is_manual && &v.value.key.symbol == sym);
    let side = if residual > Decimal::ZERO {
        Side::Long
    } else {
        Side::Short
    };
    match (idx, residual.is_zero()) {
        (None, true) => ManualStep::Nothing,
        (Some(i), true) => ManualStep::Close(i),
        (None, false) => ManualStep::Open(Box::new(manual_position(
            account, sym, side, residual, ex_entry, now,
        ))),
        (Some(i), false) => {
            let v = &stored[i].value;
            if v.side == side && v.qty.get() == residual.abs() {
                ManualStep::Nothing
            } else {
                ManualStep::Change(i, side, Qty::new(residual.abs()))
            }
        }
    }
}

/// A MANUAL position: the person's own share, tracked and never touched.
fn manual_position(
    account: &AccountId,
    sym: &Symbol,
    side: Side,
    residual: Decimal,
    ex_entry: Price,
    now: i64,
) -> Position {
    Position {
        key: PositionKey {
            account: account.clone(),
            strategy: StrategyId::manual(),
            symbol: sym.clone(),
        },
        side,
        qty: Qty::new(residual.abs()),
        entry_price: ex_entry,
        leverage: 0,
        status: PositionStatus::Active,
        is_manual: true,
        entry_client_id: String::new(),
        signal_open_time: 0,
        opened_at: now,
        stop_loss: None,
        take_profit: None,
        stop_client_id: None,
        stop_generation: 0,
        partial_exits_done: 0,
        pyramids_done: 0,
        best_price: None,
        entry_fee: Notional::ZERO,
        updated_at: now,
        exit_orders: Vec::new(),
        exit_generation: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shares::{OwnedFill, Owner};
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    type Stored = Vec<Versioned<Position>>;

    fn acct() -> AccountId {
        AccountId::new("main")
    }

    /// A stored open position: `strategy` "MANUAL" makes the person's own share.
    fn pos(
        strategy: &str,
        sym: &str,
        signed_qty: Decimal,
        status: PositionStatus,
    ) -> Versioned<Position> {
        let side = if signed_qty > Decimal::ZERO {
            Side::Long
        } else {
            Side::Short
        };
        let mut p = manual_position(
            &acct(),
            &Symbol::new(sym),
            side,
            signed_qty,
            Price::new(dec!(100)),
            0,
        );
        if strategy != "MANUAL" {
            p.key.strategy = StrategyId::new(strategy);
            p.is_manual = false;
            p.entry_client_id = format!("{strategy}-{sym}");
        }
        p.status = status;
        Versioned {
            value: p,
            version: 1,
        }
    }

    fn open(strategy: &str, sym: &str, q: Decimal) -> Versioned<Position> {
        pos(strategy, sym, q, PositionStatus::Active)
    }

    fn net(entries: &[(&str, Decimal)]) -> Net {
        entries
            .iter()
            .map(|(s, q)| (Symbol::new(*s), (*q, Price::new(dec!(101)))))
            .collect()
    }

    fn syms(v: &[&str]) -> BTreeSet<Symbol> {
        v.iter().map(|s| Symbol::new(*s)).collect()
    }

    #[test]
    fn drift_is_every_symbol_whose_net_differs_from_its_open_shares() {
        let a = open("A", "BTCUSDT", dec!(1));
        let m = open("MANUAL", "BTCUSDT", dec!(0.5));
        let e = open("A", "ETHUSDT", dec!(-2));
        let closed = pos("B", "SOLUSDT", dec!(3), PositionStatus::Closed);
        let cases: Vec<(&str, Net, Stored, Vec<&str>)> = vec![
            (
                "all agree",
                net(&[("BTCUSDT", dec!(1.5)), ("ETHUSDT", dec!(-2))]),
                vec![a.clone(), m.clone(), e.clone()],
                vec![],
            ),
            (
                "manual share counts",
                net(&[("BTCUSDT", dec!(1))]),
                vec![a.clone(), m.clone()],
                vec!["BTCUSDT"],
            ),
            (
                "stored, flat on the exchange",
                net(&[]),
                vec![e.clone()],
                vec!["ETHUSDT"],
            ),
            (
                "held, nothing stored",
                net(&[("XRPUSDT", dec!(7))]),
                vec![],
                vec!["XRPUSDT"],
            ),
            (
                "a closed record is no share",
                net(&[]),
                vec![closed],
                vec![],
            ),
            (
                "side turned",
                net(&[("ETHUSDT", dec!(2))]),
                vec![e],
                vec!["ETHUSDT"],
            ),
        ];
        for (name, n, stored, want) in cases {
            assert_eq!(drifted(&n, &stored), syms(&want), "{name}");
        }
    }

    #[test]
    fn verdicts_by_sizes_when_no_fills_explain_the_move() {
        // (exchange net, the strategy shares on BTCUSDT, expected verdicts in order)
        use Verdict::*;
        let q = |x: Decimal| Resized(Qty::new(x));
        let cases: Vec<(&str, Decimal, Stored, Vec<Verdict>)> = vec![
            (
                "unchanged",
                dec!(1),
                vec![open("A", "BTCUSDT", dec!(1))],
                vec![Held],
            ),
            (
                "flat",
                dec!(0),
                vec![open("A", "BTCUSDT", dec!(1))],
                vec![Closed],
            ),
            (
                "turned",
                dec!(-1),
                vec![open("A", "BTCUSDT", dec!(1))],
                vec![Closed],
            ),
            (
                "sole share reduced",
                dec!(0.4),
                vec![open("A", "BTCUSDT", dec!(1))],
                vec![q(dec!(0.4))],
            ),
            (
                "grew: a hand-made add is MANUAL's",
                dec!(3),
                vec![open("A", "BTCUSDT", dec!(1))],
                vec![Held],
            ),
            (
                "two shares, net less: sizes cannot say whose",
                dec!(1.5),
                vec![open("A", "BTCUSDT", dec!(1)), open("B", "BTCUSDT", dec!(1))],
                vec![Held, Held],
            ),
            (
                "flat net, though a MANUAL share cancels it: a flat net holds no share",
                dec!(0),
                vec![
                    open("A", "BTCUSDT", dec!(1)),
                    open("MANUAL", "BTCUSDT", dec!(-1)),
                ],
                vec![Closed],
            ),
            (
                "two shares, flat: both closed",
                dec!(0),
                vec![open("A", "BTCUSDT", dec!(1)), open("B", "BTCUSDT", dec!(1))],
                vec![Closed, Closed],
            ),
        ];
        for (name, ex, stored, want) in cases {
            let n = net(&[("BTCUSDT", ex)]);
            let got: Vec<Verdict> = symbol_verdicts(&stored, &n, &Symbol::new("BTCUSDT"), None)
                .into_iter()
                .map(|(_, v)| v)
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn verdicts_by_fills_follow_each_strategys_own_share() {
        use Verdict::*;
        let stored = vec![
            open("A", "BTCUSDT", dec!(1)),
            open("B", "BTCUSDT", dec!(2)),
            open("C", "BTCUSDT", dec!(0.5)),
            open("MANUAL", "BTCUSDT", dec!(0.1)),
        ];
        let (held, manual) = stored_shares(&stored, &Symbol::new("BTCUSDT"));
        let mut after = ShareBook {
            as_of: 0,
            strategies: held,
            manual,
            protective: Vec::new(),
        };
        // A's stop fired (−1), B partly closed by its own take-profit (−0.5), C untouched, and a
        // hand-made sale of 0.3 that only the MANUAL share takes.
        for (t, (owner, qty)) in [
            (Owner::Strategy(StrategyId::new("A")), dec!(-1)),
            (Owner::Strategy(StrategyId::new("B")), dec!(-0.5)),
            (Owner::Manual, dec!(-0.3)),
        ]
        .into_iter()
        .enumerate()
        {
            after.apply(&OwnedFill {
                trade_id: t as i64,
                time: t as i64,
                qty,
                owner,
            });
        }
        let n = net(&[("BTCUSDT", after.net())]);
        assert_eq!(after.net(), dec!(1.8));
        let got = symbol_verdicts(&stored, &n, &Symbol::new("BTCUSDT"), Some(&after));
        assert_eq!(
            got,
            vec![(0, Closed), (1, Resized(Qty::new(dec!(1.5)))), (2, Held)]
        );
    }

    #[test]
    fn positions_pause_and_resume_with_their_strategy() {
        let stored = vec![
            pos("A", "BTCUSDT", dec!(1), PositionStatus::Active),
            pos("B", "BTCUSDT", dec!(1), PositionStatus::Modified),
            pos("C", "ETHUSDT", dec!(1), PositionStatus::Paused),
            pos("D", "ETHUSDT", dec!(1), PositionStatus::Paused),
            pos("MANUAL", "SOLUSDT", dec!(1), PositionStatus::Active),
            pos("E", "SOLUSDT", dec!(1), PositionStatus::Pending),
        ];
        let running: HashSet<&str> = ["A", "C"].into_iter().collect();
        assert_eq!(
            status_changes(&stored, &running),
            vec![(1, PositionStatus::Paused), (2, PositionStatus::Active)]
        );
        assert!(
            status_changes(&stored, &["A", "B", "D", "E"].into_iter().collect())
                .iter()
                .all(|(i, s)| *i == 3 && *s == PositionStatus::Active)
        );
    }

    #[test]
    fn the_manual_share_takes_what_no_strategy_explains() {
        let sym = Symbol::new("BTCUSDT");
        let m_long = open("MANUAL", "BTCUSDT", dec!(0.5));
        let a = open("A", "BTCUSDT", dec!(1));
        // (stored, exchange net, expected step)
        let cases: Vec<(&str, Stored, Decimal, &str)> = vec![
            ("nothing either side", vec![a.clone()], dec!(1), "nothing"),
            (
                "as stored",
                vec![a.clone(), m_long.clone()],
                dec!(1.5),
                "nothing",
            ),
            ("gone", vec![a.clone(), m_long.clone()], dec!(1), "close 1"),
            ("found long", vec![a.clone()], dec!(1.25), "open LONG 0.25"),
            (
                "found short under a long strategy",
                vec![a.clone()],
                dec!(0.75),
                "open SHORT 0.25",
            ),
            (
                "grew",
                vec![a.clone(), m_long.clone()],
                dec!(2),
                "change 1 LONG 1",
            ),
            (
                "turned",
                vec![m_long.clone()],
                dec!(-0.2),
                "change 0 SHORT 0.2",
            ),
        ];
        for (name, stored, ex, want) in cases {
            let n = net(&[("BTCUSDT", ex)]);
            let step = manual_step(&acct(), &sym, residual(&n, &stored, &sym), &stored, 9);
            let got = match step {
                ManualStep::Nothing => "nothing".to_string(),
                ManualStep::Close(i) => format!("close {i}"),
                ManualStep::Open(p) => {
                    assert!(
                        p.is_manual && p.opened_at == 9 && p.entry_price == Price::new(dec!(101))
                    );
                    format!("open {} {}", p.side, p.qty)
                }
                ManualStep::Change(i, side, q) => format!("change {i} {side} {q}"),
            };
            assert_eq!(got, want, "{name}");
        }
    }

    /// Apply the verdicts and the MANUAL step to `stored` as the sync does (without the
    /// exchange calls), for the invariant below.
    fn apply_plan(
        stored: &mut Vec<Versioned<Position>>,
        n: &Net,
        sym: &Symbol,
        book: Option<&ShareBook>,
    ) {
        for (i, v) in symbol_verdicts(stored, n, sym, book) {
            match v {
                Verdict::Closed => stored[i].value.status = PositionStatus::Closed,
                Verdict::Resized(q) => stored[i].value.qty = q,
                Verdict::Held => {}
            }
        }
        stored.retain(|v| v.value.status != PositionStatus::Closed);
        match manual_step(&acct(), sym, residual(n, stored, sym), stored, 0) {
            ManualStep::Nothing => {}
            ManualStep::Close(i) => {
                stored.remove(i);
            }
            ManualStep::Open(p) => stored.push(Versioned {
                value: *p,
                version: 0,
            }),
            ManualStep::Change(i, side, q) => {
                stored[i].value.side = side;
                stored[i].value.qty = q;
            }
        }
    }

    proptest! {
        /// Whatever the stored shares and whatever the fills since the book (bot, hand-made),
        /// once the plan is applied the open shares add up to the exchange's net; where the net
        /// moved and the fills' book explains it, every strategy's share is exactly its own
        /// fills' sum, whatever a hand-made order did.
        #[test]
        fn applied_plans_add_up_to_the_net(
            shares in proptest::collection::vec(-20i64..=20, 0..4),
            manual in -10i64..=10,
            moves in proptest::collection::vec((0usize..5, -10i64..=10), 0..8),
            with_book in any::<bool>(),
        ) {
            let sym = Symbol::new("BTCUSDT");
            let names = ["A", "B", "C", "D"];
            let mut stored: Vec<Versioned<Position>> = shares
                .iter()
                .enumerate()
                .filter(|(_, q)| **q != 0)
                .map(|(i, q)| open(names[i], "BTCUSDT", Decimal::from(*q)))
                .collect();
            if manual != 0 {
                stored.push(open("MANUAL", "BTCUSDT", Decimal::from(manual)));
            }
            let (held, manual_share) = stored_shares(&stored, &sym);
            let mut book = ShareBook { as_of: 0, strategies: held, manual: manual_share, protective: Vec::new() };
            // Fills by strategies that hold a share (a strategy's own fill never turns its
            // share: at most it closes it), or by hand (anyone else).
            for (t, (who, q)) in moves.iter().enumerate() {
                let mut qty = Decimal::from(*q);
                let owner = match names.get(*who).map(|n| StrategyId::new(*n)) {
                    Some(s) if !book.share(&s).is_zero() => {
                        let cur = book.share(&s);
                        if (cur + qty).signum() == -cur.signum() {
                            qty = -cur;
                        }
                        Owner::Strategy(s)
                    }
                    _ => Owner::Manual,
                };
                book.apply(&OwnedFill { trade_id: t as i64, time: t as i64, qty, owner });
            }
            let ex_net = book.net();
            let n = net(&[("BTCUSDT", ex_net)]);
            let after = with_book.then_some(book);
            // Fills that leave the net where the stored shares put it are not read at all (the
            // protective orders that fired were looked up before, by their own ids).
            let moved = drifted(&n, &stored).contains(&sym);
            apply_plan(&mut stored, &n, &sym, after.as_ref());
            let total: Decimal = stored.iter().filter(|v| v.value.is_open()).map(|v| signed(&v.value)).sum();
            prop_assert_eq!(total, ex_net);
            if let Some(after) = after.as_ref().filter(|_| moved) {
                for s in names.iter().map(|n| StrategyId::new(*n)) {
                    let got: Decimal = stored
                        .iter()
                        .filter(|v| v.value.key.strategy == s)
                        .map(|v| signed(&v.value))
                        .sum();
                    prop_assert_eq!(got, after.share(&s), "strategy {}", s);
                }
            }
        }
    }
}
