//! Who owns each part of a symbol's net position: the fill attribution of the sync job.
//!
//! Binance nets every order on a symbol into one position (one-way mode), so several strategies
//! and the trader's own hand-made trades can hold *shares* of one net. Sizes alone cannot say
//! whose share changed: a hand-made sell of 0.02 and a strategy shrinking by 0.02 leave the same
//! net. Fills can: every fill carries its order, and every order of ours carries a client id
//! derived from its owner ([`ClientId::owner_of`]).
//!
//! A [`ShareBook`] is a symbol's shares at a moment (`as_of`, exchange time) when they were known
//! to add up to the net. Folding the fills made after it into the book ([`ShareBook::apply`])
//! gives each share as the sum of its own fills:
//! - a fill of an order of ours (our client id, or the order a protective order of ours triggered)
//!   moves that strategy's share;
//! - a liquidation or auto-deleveraging fill reduces the net, and with it every share on the net's
//!   side, in proportion;
//! - any other fill (website, app, another program) moves the MANUAL share;
//! - a net that reaches zero closes every share: flat is flat, whoever's fill made it so.
//!
//! Everything here is pure: the sync gathers the book, the fills and their orders, and applies
//! what [`attribute`] returns.

use crate::domain::{owner_hash, AccountId, ClientId, OrderSide, StrategyId, Symbol};
use rust_decimal::prelude::Signed;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Whose fill it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owner {
    Strategy(StrategyId),
    Manual,
    /// A liquidation or auto-deleveraging order of the exchange.
    Liquidation,
}

/// One fill, signed (> 0 bought), with its owner.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedFill {
    pub trade_id: i64,
    pub time: i64,
    pub qty: Decimal,
    pub owner: Owner,
}

/// A symbol's shares at `as_of`: every fill up to that exchange time is counted in.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ShareBook {
    /// Exchange time (ms) of the last change the book includes.
    pub as_of: i64,
    /// Signed share of each strategy (no zero entries).
    pub strategies: BTreeMap<StrategyId, Decimal>,
    /// Signed MANUAL share.
    pub manual: Decimal,
    /// Client ids of the strategies' protective orders at `as_of`: a fill of the order one of them
    /// triggered is that strategy's, whatever client id the exchange gave the triggered order.
    #[serde(default)]
    pub protective: Vec<(StrategyId, String)>,
}

impl ShareBook {
    /// What the shares add up to.
    pub fn net(&self) -> Decimal {
        self.strategies.values().sum::<Decimal>() + self.manual
    }

    /// A strategy's signed share (zero when it holds none).
    pub fn share(&self, s: &StrategyId) -> Decimal {
        self.strategies.get(s).copied().unwrap_or_default()
    }

    /// Folds one fill in (fills must come in trade order).
    pub fn apply(&mut self, f: &OwnedFill) {
        match &f.owner {
            Owner::Strategy(s) => *self.strategies.entry(s.clone()).or_default() += f.qty,
            Owner::Manual => self.manual += f.qty,
            Owner::Liquidation => self.liquidate(f.qty),
        }
        if self.net().is_zero() {
            self.strategies.clear();
            self.manual = Decimal::ZERO;
        }
        self.strategies.retain(|_, q| !q.is_zero());
        self.as_of = self.as_of.max(f.time);
    }

    /// A liquidation fill of `qty` (signed against the net): every share on the net's side gives
    /// up its part in proportion; the last one takes the rounding remainder.
    fn liquidate(&mut self, qty: Decimal) {
        let net = self.net();
        let side = net.signum();
        let on_side: Decimal = self
            .strategies
            .values()
            .chain(std::iter::once(&self.manual))
            .filter(|q| q.signum() == side)
            .sum();
        if on_side.is_zero() {
            self.manual += qty;
            return;
        }
        let mut left = qty;
        let mut shares: Vec<&mut Decimal> = self
            .strategies
            .values_mut()
            .chain(std::iter::once(&mut self.manual))
            .filter(|q| q.signum() == side)
            .collect();
        let last = shares.len() - 1;
        for (i, q) in shares.iter_mut().enumerate() {
            let part = if i == last {
                left
            } else {
                (qty * **q / on_side).round_dp(8)
            };
            **q += part;
            left -= part;
        }
    }
}

/// One fill as `/fapi/v1/userTrades` reports it, with its order's client id from
/// `/fapi/v1/allOrders` (`None` when the order was not found).
#[derive(Clone, Debug, PartialEq)]
pub struct RawFill {
    pub trade_id: i64,
    pub order_id: i64,
    pub time: i64,
    pub side: OrderSide,
    pub qty: Decimal,
    pub client_id: Option<String>,
}

/// Tells whose a fill is, for one account and symbol.
pub struct Owners {
    by_hash: HashMap<String, StrategyId>,
    triggered: HashMap<i64, StrategyId>,
}

impl Owners {
    /// `strategies`: every strategy that may trade the symbol on the account (configured, or
    /// holding a stored position). `triggered`: the order ids our protective orders created.
    pub fn new<'a>(
        account: &AccountId,
        symbol: &Symbol,
        strategies: impl IntoIterator<Item = &'a StrategyId>,
        triggered: HashMap<i64, StrategyId>,
    ) -> Owners {
        let by_hash = strategies
            .into_iter()
            .map(|s| (owner_hash(account, s, symbol), s.clone()))
            .collect();
        Owners { by_hash, triggered }
    }

    /// The owner of a fill: ours by client id or triggered order, the exchange's for
    /// liquidations (`autoclose-…`, `adl_autoclose…`), MANUAL otherwise.
    pub fn of(&self, f: &RawFill) -> Owner {
        if let Some(s) = self.triggered.get(&f.order_id) {
            return Owner::Strategy(s.clone());
        }
        let Some(id) = f.client_id.as_deref() else {
            return Owner::Manual;
        };
        if id.starts_with("autoclose-") || id.starts_with("adl_autoclose") {
            return Owner::Liquidation;
        }
        match ClientId::owner_of(id).and_then(|h| self.by_hash.get(h)) {
            Some(s) => Owner::Strategy(s.clone()),
            None => Owner::Manual,
        }
    }

    /// Whether an order id not yet known to be a triggered one could still be ours: its fill
    /// has no client id of ours and is no liquidation.
    pub fn unexplained(&self, f: &RawFill) -> bool {
        self.of(f) == Owner::Manual
    }
}

/// Why the fills could not be trusted to explain the net; the sync then falls back to sizes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unexplained {
    #[error("the fills since {as_of} add up to {attributed}, the exchange holds {net}")]
    NetMismatch {
        as_of: i64,
        attributed: Decimal,
        net: Decimal,
    },
    #[error("the fills give {strategy} a share of {share} that no open position of it holds")]
    UnknownShare {
        strategy: StrategyId,
        share: Decimal,
    },
}

/// The shares after folding `fills` (any order; sorted here by trade id) into `book`, checked
/// against what the exchange holds (`net`) and against the strategies that hold an open stored
/// position on the symbol (`held`: signed share each). A share the fills give to a strategy
/// with no such position means a fill was misread; the caller keeps its size rules then.
pub fn attribute(
    book: &ShareBook,
    fills: &[RawFill],
    owners: &Owners,
    net: Decimal,
    held: &BTreeMap<StrategyId, Decimal>,
) -> Result<ShareBook, Unexplained> {
    let mut fills: Vec<&RawFill> = fills.iter().filter(|f| f.time > book.as_of).collect();
    fills.sort_by_key(|f| f.trade_id);
    let mut out = book.clone();
    for f in fills {
        let qty = match f.side {
            OrderSide::Buy => f.qty,
            OrderSide::Sell => -f.qty,
        };
        out.apply(&OwnedFill {
            trade_id: f.trade_id,
            time: f.time,
            qty,
            owner: owners.of(f),
        });
    }
    if out.net() != net {
        return Err(Unexplained::NetMismatch {
            as_of: book.as_of,
            attributed: out.net(),
            net,
        });
    }
    for (s, share) in &out.strategies {
        let stored = held.get(s).copied().unwrap_or_default();
        if stored.is_zero() || stored.signum() != share.signum() {
            return Err(Unexplained::UnknownShare {
                strategy: s.clone(),
                share: *share,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn acct() -> AccountId {
        AccountId::new("main")
    }
    fn btc() -> Symbol {
        Symbol::new("BTCUSDT")
    }
    fn ema() -> StrategyId {
        StrategyId::new("EMA_CROSS")
    }
    fn tfpe() -> StrategyId {
        StrategyId::new("TFPE")
    }
    fn owners() -> Owners {
        Owners::new(&acct(), &btc(), [&ema(), &tfpe()], HashMap::new())
    }
    fn our_id(s: &StrategyId, minute: i64) -> String {
        ClientId::derive(
            &acct(),
            s,
            &btc(),
            minute * 60_000,
            crate::domain::Intent::Entry,
            0,
        )
        .0
    }
    fn fill(id: i64, side: OrderSide, qty: Decimal, client: &str) -> RawFill {
        RawFill {
            trade_id: id,
            order_id: 1000 + id,
            time: 10 * id,
            side,
            qty,
            client_id: Some(client.to_string()),
        }
    }
    fn book(strats: &[(StrategyId, Decimal)], manual: Decimal) -> ShareBook {
        ShareBook {
            as_of: 0,
            strategies: strats.iter().cloned().collect(),
            manual,
            protective: Vec::new(),
        }
    }
    fn held(strats: &[(StrategyId, Decimal)]) -> BTreeMap<StrategyId, Decimal> {
        strats.iter().cloned().collect()
    }

    #[test]
    fn owners_by_client_id_triggered_order_and_liquidation() {
        let mut trig = HashMap::new();
        trig.insert(77, tfpe());
        let o = Owners::new(&acct(), &btc(), [&ema(), &tfpe()], trig);
        let mut f = fill(1, OrderSide::Buy, dec!(1), &our_id(&ema(), 5));
        assert_eq!(o.of(&f), Owner::Strategy(ema()));
        f.client_id = Some("web_abc123".into());
        assert_eq!(o.of(&f), Owner::Manual);
        f.order_id = 77;
        assert_eq!(o.of(&f), Owner::Strategy(tfpe()), "triggered stop of TFPE");
        f.order_id = 1;
        f.client_id = Some("autoclose-1700000000000".into());
        assert_eq!(o.of(&f), Owner::Liquidation);
        f.client_id = Some("adl_autoclose".into());
        assert_eq!(o.of(&f), Owner::Liquidation);
        // Ours in shape, but another account's or symbol's owner: not this book's strategy.
        let other = ClientId::derive(
            &AccountId::new("sub1"),
            &ema(),
            &btc(),
            0,
            crate::domain::Intent::Entry,
            0,
        );
        f.client_id = Some(other.0);
        assert_eq!(o.of(&f), Owner::Manual);
        f.client_id = None;
        assert_eq!(o.of(&f), Owner::Manual);
    }

    /// The campaign's case: a strategy SHORT, then a bigger hand-made LONG. The net turns long;
    /// by sizes the strategy looked closed, by fills it still holds its short.
    #[test]
    fn a_hand_made_buy_larger_than_a_strategy_short_leaves_the_short_in_place() {
        let b = book(&[(ema(), dec!(-0.05))], dec!(0));
        let fills = [fill(1, OrderSide::Buy, dec!(0.1), "web_x")];
        let held = held(&[(ema(), dec!(-0.05))]);
        let out = attribute(&b, &fills, &owners(), dec!(0.05), &held).unwrap();
        assert_eq!(out.share(&ema()), dec!(-0.05));
        assert_eq!(out.manual, dec!(0.1));
        assert_eq!(out.as_of, 10);
    }

    #[test]
    fn a_person_closing_their_manual_share_leaves_the_strategy_alone() {
        let b = book(&[(ema(), dec!(0.05))], dec!(0.1));
        let fills = [fill(1, OrderSide::Sell, dec!(0.1), "ios_y")];
        let out = attribute(
            &b,
            &fills,
            &owners(),
            dec!(0.05),
            &held(&[(ema(), dec!(0.05))]),
        );
        let out = out.unwrap();
        assert_eq!(out.share(&ema()), dec!(0.05));
        assert_eq!(out.manual, dec!(0));
    }

    #[test]
    fn a_hand_made_partial_sell_is_a_manual_share_not_a_smaller_strategy() {
        let b = book(&[(ema(), dec!(0.05))], dec!(0));
        let fills = [fill(1, OrderSide::Sell, dec!(0.02), "web_z")];
        let out = attribute(
            &b,
            &fills,
            &owners(),
            dec!(0.03),
            &held(&[(ema(), dec!(0.05))]),
        );
        let out = out.unwrap();
        assert_eq!(out.share(&ema()), dec!(0.05));
        assert_eq!(out.manual, dec!(-0.02));
    }

    #[test]
    fn a_flat_net_closes_every_share() {
        let b = book(&[(ema(), dec!(0.05))], dec!(0));
        let fills = [fill(1, OrderSide::Sell, dec!(0.05), "web_close")];
        let out = attribute(
            &b,
            &fills,
            &owners(),
            dec!(0),
            &held(&[(ema(), dec!(0.05))]),
        );
        let out = out.unwrap();
        assert!(out.strategies.is_empty());
        assert_eq!(out.manual, dec!(0));
    }

    #[test]
    fn a_liquidation_reduces_the_shares_on_the_nets_side_in_proportion() {
        let b = book(&[(ema(), dec!(0.3)), (tfpe(), dec!(-0.1))], dec!(0.1));
        // Net 0.3; a partial liquidation sells 0.15 of it.
        let fills = [fill(1, OrderSide::Sell, dec!(0.15), "autoclose-1")];
        let h = held(&[(ema(), dec!(0.3)), (tfpe(), dec!(-0.1))]);
        let out = attribute(&b, &fills, &owners(), dec!(0.15), &h).unwrap();
        assert_eq!(out.share(&ema()), dec!(0.1875));
        assert_eq!(out.manual, dec!(0.0625));
        assert_eq!(
            out.share(&tfpe()),
            dec!(-0.1),
            "the other side is untouched"
        );
    }

    #[test]
    fn fills_that_do_not_explain_the_net_are_refused() {
        let b = book(&[(ema(), dec!(0.05))], dec!(0));
        let fills = [fill(1, OrderSide::Sell, dec!(0.02), "web_z")];
        let err = attribute(
            &b,
            &fills,
            &owners(),
            dec!(0.01),
            &held(&[(ema(), dec!(0.05))]),
        );
        assert!(
            matches!(err, Err(Unexplained::NetMismatch { .. })),
            "{err:?}"
        );
        // Fills at or before the book's time are already in it.
        let mut later = b.clone();
        later.as_of = 10;
        let out = attribute(
            &later,
            &fills,
            &owners(),
            dec!(0.05),
            &held(&[(ema(), dec!(0.05))]),
        );
        assert_eq!(out.unwrap(), later);
    }

    #[test]
    fn a_share_for_a_strategy_with_no_open_position_is_refused() {
        // TFPE's entry fill with no TFPE position stored: adoption's business, not attribution's.
        let b = book(&[(ema(), dec!(0.05))], dec!(0));
        let fills = [fill(1, OrderSide::Buy, dec!(0.01), &our_id(&tfpe(), 9))];
        let err = attribute(
            &b,
            &fills,
            &owners(),
            dec!(0.06),
            &held(&[(ema(), dec!(0.05))]),
        );
        assert!(
            matches!(err, Err(Unexplained::UnknownShare { .. })),
            "{err:?}"
        );
    }

    /// One step of a random history: who trades, which way, how much (in lots of 0.001).
    #[derive(Clone, Debug)]
    enum Step {
        Bot(usize, bool, u32),
        Hand(bool, u32),
        Liquidate,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0usize..2, any::<bool>(), 1u32..50).prop_map(|(s, b, q)| Step::Bot(s, b, q)),
            3 => (any::<bool>(), 1u32..50).prop_map(|(b, q)| Step::Hand(b, q)),
            1 => Just(Step::Liquidate),
        ]
    }

    proptest! {
        /// Random bot and hand-made fills (and liquidations), with the book taken at a random
        /// point: after attribution every share equals the sum of its own fills since the net
        /// was last flat (a liquidation closes the whole net here), and the shares add up to the
        /// exchange's net. The reference is computed independently, fill by fill.
        #[test]
        fn every_share_is_the_sum_of_its_own_fills(
            steps in proptest::collection::vec(step(), 1..40),
            cut in 0usize..40,
        ) {
            let strats = [ema(), tfpe()];
            let mut fills = Vec::new();
            let mut net = Decimal::ZERO;
            let mut own: BTreeMap<String, Decimal> = BTreeMap::new();
            let mut minute = 0;
            for (i, s) in steps.iter().enumerate() {
                minute += 1;
                let (signed, client) = match s {
                    Step::Bot(k, buy, q) => {
                        let q = Decimal::new(*q as i64, 3);
                        (if *buy { q } else { -q }, our_id(&strats[*k], minute))
                    }
                    Step::Hand(buy, q) => {
                        let q = Decimal::new(*q as i64, 3);
                        (if *buy { q } else { -q }, format!("web_{i}"))
                    }
                    Step::Liquidate if !net.is_zero() => (-net, format!("autoclose-{i}")),
                    Step::Liquidate => continue,
                };
                let side = if signed > Decimal::ZERO { OrderSide::Buy } else { OrderSide::Sell };
                fills.push(fill(i as i64 + 1, side, signed.abs(), &client));
                net += signed;
                let who = match s {
                    Step::Bot(k, ..) => strats[*k].0.clone(),
                    _ => "MANUAL".to_string(),
                };
                if matches!(s, Step::Liquidate) || net.is_zero() {
                    own.clear();
                } else {
                    *own.entry(who).or_default() += signed;
                }
            }
            let cut = cut.min(fills.len());
            // The book as the sync would have written it after the first `cut` fills.
            let mut b = ShareBook::default();
            for f in &fills[..cut] {
                b.apply(&OwnedFill {
                    trade_id: f.trade_id,
                    time: f.time,
                    qty: if f.side == OrderSide::Buy { f.qty } else { -f.qty },
                    owner: owners().of(f),
                });
            }
            let held: BTreeMap<StrategyId, Decimal> = strats
                .iter()
                .map(|s| (s.clone(), own.get(&s.0).copied().unwrap_or_default()))
                .filter(|(_, q)| !q.is_zero())
                .collect();
            let out = attribute(&b, &fills, &owners(), net, &held).unwrap();
            prop_assert_eq!(out.net(), net);
            for s in &strats {
                prop_assert_eq!(out.share(s), own.get(&s.0).copied().unwrap_or_default());
            }
            prop_assert_eq!(out.manual, own.get("MANUAL").copied().unwrap_or_default());
        }
    }
}
