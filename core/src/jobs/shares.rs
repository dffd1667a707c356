//! The sync's fill attribution: for a symbol whose net no longer matches the stored shares, read
//! the fills since the symbol's [`ShareBook`] and let [`crate::shares::attribute`] say whose
//! share changed; after the sync, write the book again where the shares add up to the net.

use super::reconcile::stored_shares;
use super::*;
use crate::ports::ExchangePosition;
use crate::shares::{attribute, Owners, RawFill, ShareBook};
use std::collections::HashMap;

/// At most this many fills are read per symbol; a longer history is left to the size rules.
const MAX_FILLS: usize = 1000;
/// Orders are looked for from this long before the first fill (a market order is created just
/// before it fills; a hand-placed limit order may be older and then counts as MANUAL anyway).
const ORDER_LOOKBACK_MS: i64 = 60_000;
/// A book whose shares have not changed is still re-dated this often, so the next read of fills
/// starts well inside the exchange's 7-day `userTrades` window.
const BOOK_REFRESH_MS: i64 = 24 * 3600 * 1000;

impl Engine {
    /// For every symbol whose net moved (`moved`, read at the start of the sync) and still
    /// differs from its open stored shares, the shares the fills since its book explain. Symbols
    /// missing here (no book yet, fills unreadable or not adding up) are left to the size rules;
    /// each such case is a line in the report. `closed`: positions this sync has already
    /// recorded closed (their stops may have fired).
    pub(super) async fn attribute_fills(
        &self,
        acct: &AccountRuntime,
        net: &BTreeMap<Symbol, (Decimal, Price)>,
        stored: &[Versioned<Position>],
        closed: &[Position],
        moved: &BTreeSet<Symbol>,
        report: &mut JobReport,
    ) -> Result<BTreeMap<Symbol, ShareBook>, EngineError> {
        let account = &acct.config.id;
        let mut out = BTreeMap::new();
        for sym in moved.iter().cloned() {
            let ex_amt = net.get(&sym).map(|x| x.0).unwrap_or_default();
            let (held, manual) = stored_shares(stored, &sym);
            if held.values().sum::<Decimal>() + manual == ex_amt {
                continue;
            }
            let Some(book) = self.repo.share_book(account, &sym).await? else {
                report.note(format!(
                    "{account} {sym}: no share book yet; the net change is judged by sizes"
                ));
                continue;
            };
            match self
                .read_attribution(acct, &sym, &book.value, ex_amt, &held, stored, closed)
                .await
            {
                Ok(b) => {
                    out.insert(sym, b);
                }
                Err(why) => report.note(format!(
                    "{account} {sym}: fills do not explain the net change ({why}); judged by sizes"
                )),
            }
        }
        Ok(out)
    }

    /// Reads the fills after `book` and their orders, and attributes them.
    #[allow(clippy::too_many_arguments)]
    async fn read_attribution(
        &self,
        acct: &AccountRuntime,
        sym: &Symbol,
        book: &ShareBook,
        ex_amt: Decimal,
        held: &BTreeMap<StrategyId, Decimal>,
        stored: &[Versioned<Position>],
        closed: &[Position],
    ) -> Result<ShareBook, String> {
        let ex = acct.exchange.as_ref();
        let trades = ex
            .user_trades(sym, book.as_of + 1)
            .await
            .map_err(|e| e.to_string())?;
        if trades.len() >= MAX_FILLS {
            return Err(format!("{} fills or more since the book", MAX_FILLS));
        }
        let first = trades.iter().map(|t| t.time).min().unwrap_or(book.as_of);
        let orders = if trades.is_empty() {
            Vec::new()
        } else {
            ex.all_orders(sym, first - ORDER_LOOKBACK_MS)
                .await
                .map_err(|e| e.to_string())?
        };
        let client_ids: HashMap<i64, String> = orders
            .into_iter()
            .map(|o| (o.order_id, o.client_id))
            .collect();
        let fills: Vec<RawFill> = trades
            .iter()
            .map(|t| RawFill {
                trade_id: t.id,
                order_id: t.order_id,
                time: t.time,
                side: t.side,
                qty: t.qty.get(),
                client_id: client_ids.get(&t.order_id).cloned(),
            })
            .collect();
        let mut strategies: BTreeSet<StrategyId> = self
            .config
            .account_strategies(&acct.config)
            .map(|s| StrategyId::new(s.name.clone()))
            .collect();
        strategies.extend(
            stored
                .iter()
                .filter(|v| !v.value.is_manual)
                .map(|v| v.value.key.strategy.clone()),
        );
        strategies.extend(book.strategies.keys().cloned());
        let plain = Owners::new(&acct.config.id, sym, &strategies, HashMap::new());
        let triggered = if fills.iter().any(|f| plain.unexplained(f)) {
            self.triggered_orders(ex, sym, book, stored, closed)
                .await
                .map_err(|e| e.to_string())?
        } else {
            HashMap::new()
        };
        let owners = Owners::new(&acct.config.id, sym, &strategies, triggered);
        attribute(book, &fills, &owners, ex_amt, held).map_err(|e| e.to_string())
    }

    /// The order ids our protective and exit orders on `sym` created when they triggered: the
    /// exchange may give such an order a client id of its own, so its fill is matched by id.
    async fn triggered_orders(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        book: &ShareBook,
        stored: &[Versioned<Position>],
        closed: &[Position],
    ) -> Result<HashMap<i64, StrategyId>, EngineError> {
        let mut ids: BTreeSet<(StrategyId, String)> = book.protective.iter().cloned().collect();
        for p in stored.iter().map(|v| &v.value).chain(closed) {
            if &p.key.symbol == sym && !p.is_manual {
                ids.extend(
                    protective_ids(p)
                        .into_iter()
                        .map(|id| (p.key.strategy.clone(), id)),
                );
            }
        }
        let mut out = HashMap::new();
        for (strategy, id) in ids {
            if let Some(order_id) = ex
                .algo_by_client_id(&id)
                .await?
                .and_then(|a| a.actual_order_id)
            {
                out.insert(order_id, strategy);
            }
        }
        Ok(out)
    }

    /// After the sync: a symbol whose open stored shares add up to the exchange's net gets its
    /// book written when this sync reconciled a move of its net (`moved`), when it has none, or
    /// when it is a day old. Between such writes the book stays true on its own: the jobs' own
    /// fills since it are folded in by whose they are. `as_of` is the position's last change, or
    /// the job's time when that is older or the symbol is flat: no fill came between it and the
    /// read of the net.
    pub(super) async fn save_share_books(
        &self,
        account: &AccountId,
        ex_positions: &[ExchangePosition],
        stored: &[Versioned<Position>],
        moved: &BTreeSet<Symbol>,
        now: i64,
    ) -> Result<(), EngineError> {
        let symbols: BTreeSet<&Symbol> = ex_positions
            .iter()
            .filter(|p| !p.amount.is_zero())
            .map(|p| &p.symbol)
            .chain(
                stored
                    .iter()
                    .filter(|v| v.value.is_open())
                    .map(|v| &v.value.key.symbol),
            )
            .collect();
        let stale = |as_of: i64| now - as_of >= BOOK_REFRESH_MS;
        for sym in symbols {
            let moved = moved.contains(sym);
            let dated = self.cache.book_dated(account, sym);
            if !moved && dated.is_some_and(|t| !stale(t)) {
                continue;
            }
            let ex = ex_positions
                .iter()
                .find(|p| p.symbol == *sym && !p.amount.is_zero());
            let ex_amt = ex.map(|p| p.amount).unwrap_or_default();
            let (strategies, manual) = stored_shares(stored, sym);
            if strategies.values().sum::<Decimal>() + manual != ex_amt {
                continue;
            }
            let old = self.repo.share_book(account, sym).await?;
            if let Some(o) = old.as_ref().filter(|o| !moved && !stale(o.value.as_of)) {
                self.cache.date_book(account, sym, o.value.as_of);
                continue;
            }
            let protective = stored
                .iter()
                .filter(|v| v.value.key.symbol == *sym && !v.value.is_manual && v.value.is_open())
                .flat_map(|v| {
                    protective_ids(&v.value)
                        .into_iter()
                        .map(|id| (v.value.key.strategy.clone(), id))
                })
                .collect();
            let book = ShareBook {
                as_of: ex.map_or(now, |p| p.update_time.max(now)),
                strategies: strategies
                    .into_iter()
                    .filter(|(_, q)| !q.is_zero())
                    .collect(),
                manual,
                protective,
            };
            self.repo
                .save_share_book(account, sym, &book, old.map(|o| o.version))
                .await?;
            self.cache.date_book(account, sym, book.as_of);
        }
        Ok(())
    }
}

impl Engine {
    /// Whether closing `qty` of a `side` share reduces the exchange's net position. In one-way
    /// mode with two strategies holding opposite shares, closing one share can grow the net the
    /// other way; such an order cannot be reduce-only (Binance rejects it with -2022).
    pub(super) async fn reduces_net(
        &self,
        ex: &dyn Exchange,
        sym: &Symbol,
        side: Side,
        qty: Qty,
    ) -> Result<bool, EngineError> {
        let net: Decimal = ex
            .positions()
            .await?
            .iter()
            .filter(|x| &x.symbol == sym)
            .map(|x| x.amount)
            .sum();
        Ok(net.signum() == side.sign() && net.abs() >= qty.get())
    }

    /// Whether the exchange's net position on the symbol is exactly what the stored shares (every
    /// strategy's and MANUAL) add up to. When it is not, something happened on the exchange that
    /// the sync job must reconcile before anyone trades that symbol.
    pub(super) async fn shares_match(
        &self,
        ex: &dyn Exchange,
        p: &Position,
    ) -> Result<bool, EngineError> {
        let net: Decimal = ex
            .positions()
            .await?
            .iter()
            .filter(|x| x.symbol == p.key.symbol)
            .map(|x| x.amount)
            .sum();
        let stored: Decimal = self
            .repo
            .positions(&p.key.account)
            .await?
            .iter()
            .filter(|v| v.value.key.symbol == p.key.symbol && v.value.is_open())
            .map(|v| signed(&v.value))
            .sum();
        Ok(net == stored)
    }
}
