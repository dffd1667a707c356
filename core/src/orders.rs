//! Orders: the one place where quantities and prices are rounded to a symbol's filters, and the
//! exactly-once submission of orders over any [`Exchange`].
//!
//! Exactly once: every order carries a deterministic client id. When the outcome of a send is
//! unknown (timeout, 503) the order is looked up by that id before anything else happens; it is
//! only sent again (with the same id) once the exchange has said, repeatedly, that it does not know
//! it. A duplicate-id rejection also resolves to a lookup.
//!
//! Exchange-side exits: [`plan_exits`] turns a strategy's [`ExitPlan`] (take-profit ladder,
//! trailing stop) into trigger prices and quantities on the symbol's grids, from the actual fill.

use crate::domain::{ExitKind, Price, Qty, Side, Symbol};
use crate::ports::{
    AlgoOrder, AlgoOrderInfo, Exchange, ExchangeError, MarketOrder, OrderInfo, Refusal,
    SymbolFilters,
};
use crate::strategy::ExitPlan;
use rust_decimal::{Decimal, RoundingStrategy};
use std::time::Duration;

/// Why an order could not be built from the sizing.
#[derive(thiserror::Error, Debug, PartialEq)]
pub enum SizingError {
    #[error("quantity {qty} is below the minimum {min} for {symbol}")]
    BelowMinQty {
        symbol: String,
        qty: Decimal,
        min: Decimal,
    },
    #[error("notional {notional} is below the exchange minimum {min} for {symbol}")]
    BelowMinNotional {
        symbol: String,
        notional: Decimal,
        min: Decimal,
    },
    #[error("quantity {qty} is above the maximum {max} for {symbol}")]
    AboveMaxQty {
        symbol: String,
        qty: Decimal,
        max: Decimal,
    },
}

fn floor_to(x: Decimal, step: Decimal) -> Decimal {
    if step <= Decimal::ZERO {
        return x;
    }
    ((x / step).floor() * step).normalize()
}

fn round_to(x: Decimal, step: Decimal, strategy: RoundingStrategy) -> Decimal {
    if step <= Decimal::ZERO {
        return x;
    }
    ((x / step).round_dp_with_strategy(0, strategy) * step).normalize()
}

/// A market quantity rounded DOWN to the market step (never more than was sized), validated
/// against the market lot bounds and (unless reduce-only) the minimum notional at `ref_price`.
pub fn market_qty(
    f: &SymbolFilters,
    raw: Decimal,
    ref_price: Price,
    reduce_only: bool,
) -> Result<Qty, SizingError> {
    let step = if f.market_step_size > Decimal::ZERO {
        f.market_step_size
    } else {
        f.step_size
    };
    let q = floor_to(raw, step);
    let min = f.market_min_qty.max(Decimal::ZERO);
    if q <= Decimal::ZERO || q < min {
        return Err(SizingError::BelowMinQty {
            symbol: f.symbol.0.clone(),
            qty: q,
            min: min.max(step),
        });
    }
    if f.market_max_qty > Decimal::ZERO && q > f.market_max_qty {
        return Err(SizingError::AboveMaxQty {
            symbol: f.symbol.0.clone(),
            qty: q,
            max: f.market_max_qty,
        });
    }
    // Binance exempts reduce-only orders from MIN_NOTIONAL.
    if !reduce_only && q * ref_price.get() < f.min_notional {
        return Err(SizingError::BelowMinNotional {
            symbol: f.symbol.0.clone(),
            notional: (q * ref_price.get()).round_dp(2),
            min: f.min_notional,
        });
    }
    Ok(Qty::new(q))
}

/// A quantity to close (part of) a position: on the step grid, never above `held`.
pub fn close_qty(f: &SymbolFilters, held: Qty) -> Qty {
    let step = if f.market_step_size > Decimal::ZERO {
        f.market_step_size
    } else {
        f.step_size
    };
    Qty::new(floor_to(held.get(), step))
}

/// A stop trigger on the tick grid, rounded AWAY from the position's price (a long's stop is rounded
/// down, a short's up) so rounding never tightens the stop.
pub fn stop_price(f: &SymbolFilters, side: Side, raw: Price) -> Price {
    let strategy = match side {
        Side::Long => RoundingStrategy::ToNegativeInfinity,
        Side::Short => RoundingStrategy::ToPositiveInfinity,
    };
    Price::new(round_to(raw.get(), f.tick_size, strategy).max(f.min_price))
}

/// A take-profit trigger on the tick grid, rounded away from the entry (a long's up, a short's down).
pub fn target_price(f: &SymbolFilters, side: Side, raw: Price) -> Price {
    stop_price(f, side.opposite(), raw)
}

/// Binance's `callbackRate` range for TRAILING_STOP_MARKET, in percent (1 = 1 %): "min 0.1, max
/// 10 where 1 for 1%" (Binance derivatives API, New Order / New Algo Order, `callbackRate`; the
/// coin-margined page gives the same range, an older revision of it had max 4 and the USDⓈ-M one
/// max 5), in steps of 0.1.
pub const CALLBACK_RATE_MIN: Decimal = Decimal::from_parts(1, 0, 0, false, 1);
pub const CALLBACK_RATE_MAX: Decimal = Decimal::from_parts(10, 0, 0, false, 0);
pub const CALLBACK_RATE_STEP: Decimal = Decimal::from_parts(1, 0, 0, false, 1);

/// The `callbackRate` (percent) of a trailing stop that gives back `callback_pct` (a fraction,
/// 0.02 = 2 %) of the best price, or `None` when Binance cannot express it.
pub fn callback_rate(callback_pct: Decimal) -> Option<Decimal> {
    let r = (callback_pct * Decimal::ONE_HUNDRED).normalize();
    (r >= CALLBACK_RATE_MIN && r <= CALLBACK_RATE_MAX && (r % CALLBACK_RATE_STEP).is_zero())
        .then_some(r)
}

/// One exchange-side exit order to place: what it is, its trigger (activation price for a
/// trailing stop) on the tick grid and its quantity on the lot grid.
#[derive(Clone, Copy, PartialEq, Debug)]
pub struct PlannedExit {
    pub kind: ExitKind,
    pub trigger: Price,
    pub qty: Qty,
}

/// A quantity for a conditional exit order: floored to both the LOT_SIZE step (which the Algo API
/// checks) and the MARKET_LOT_SIZE step (the market order it triggers).
fn exit_qty(f: &SymbolFilters, raw: Decimal) -> Decimal {
    let q = floor_to(raw.max(Decimal::ZERO), f.market_step_size);
    floor_to(q, f.step_size)
}

/// The exchange orders of `plan` for a position of `side` holding `qty` at the average entry
/// `entry`, with `done` ladder steps already filled; and a note for every step not placed as is.
///
/// Ladder steps are computed in order like the strategy's at-close partial closes: step k closes
/// `fraction_k` of what is held when it fires (floored to the lot grid), so its quantity is taken
/// from what the earlier steps leave. A step that rounds below the minimum quantity is merged into
/// the next one (which then closes the combined fraction `1 − (1 − f_k)(1 − f_{k+1})` of what is
/// held at step k); the last one is skipped. Reduce-only exits are exempt from MIN_NOTIONAL, so
/// only the quantity bounds apply. Triggers sit at `entry × (1 ± profit)`, rounded away from the
/// entry. The trailing stop covers the whole quantity and activates at `entry × (1 ± activation)`.
pub fn plan_exits(
    f: &SymbolFilters,
    plan: &ExitPlan,
    side: Side,
    entry: Price,
    qty: Qty,
    done: u8,
) -> (Vec<PlannedExit>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    if qty.get() <= Decimal::ZERO || entry.get() <= Decimal::ZERO {
        return (out, notes);
    }
    let min = f.min_qty.max(f.market_min_qty).max(Decimal::ZERO);
    let at = |pct: Decimal| target_price(f, side, entry * (Decimal::ONE + side.sign() * pct));
    let steps: Vec<_> = plan
        .take_profits
        .iter()
        .filter(|s| s.stage > done)
        .collect();
    let mut held = qty.get();
    // Fraction of `held` carried over from steps merged into the next one.
    let mut carried = Decimal::ZERO;
    for (i, s) in steps.iter().enumerate() {
        let frac = s.fraction.clamp(Decimal::ZERO, Decimal::ONE);
        let combined = Decimal::ONE - (Decimal::ONE - carried) * (Decimal::ONE - frac);
        let q = exit_qty(f, held * combined).min(held);
        if q <= Decimal::ZERO || q < min {
            if let Some(next) = steps.get(i + 1) {
                notes.push(format!(
                    "take-profit step {} ({held} × {}) rounds to {q}, below the minimum quantity {min}: merged into step {}",
                    s.stage,
                    combined.round_dp(4).normalize(),
                    next.stage
                ));
                carried = combined;
            } else {
                notes.push(format!(
                    "take-profit step {} skipped: {held} × {} rounds to {q}, below the minimum quantity {min}",
                    s.stage,
                    combined.round_dp(4).normalize()
                ));
            }
            continue;
        }
        out.push(PlannedExit {
            kind: ExitKind::TakeProfit { stage: s.stage },
            trigger: at(s.profit_pct),
            qty: Qty::new(q),
        });
        held -= q;
        carried = Decimal::ZERO;
    }
    if let Some(t) = plan.trailing {
        let q = exit_qty(f, qty.get());
        match callback_rate(t.callback_pct) {
            Some(rate) if q >= min && q > Decimal::ZERO => out.push(PlannedExit {
                kind: ExitKind::Trailing {
                    callback_rate: rate,
                },
                trigger: at(t.activation_pct),
                qty: Qty::new(q),
            }),
            Some(_) => notes.push(format!(
                "trailing stop skipped: {} rounds to {q}, below the minimum quantity {min}",
                qty
            )),
            None => notes.push(format!(
                "trailing stop skipped: a {} callback is outside Binance's callbackRate range {CALLBACK_RATE_MIN}–{CALLBACK_RATE_MAX} %",
                t.callback_pct
            )),
        }
    }
    (out, notes)
}

/// Retry policy of [`submit_market`] and [`submit_algo`].
#[derive(Clone, Copy, Debug)]
pub struct SubmitPolicy {
    /// Sends of the same order at most (each after the exchange confirmed it does not know it).
    pub max_sends: u32,
    /// Lookups after an unknown outcome before concluding the order does not exist.
    pub lookups: u32,
    /// Pause between lookups / after a retryable error without Retry-After.
    pub pause: Duration,
    /// Longest Retry-After honoured; longer ones fail the submission.
    pub max_wait: Duration,
    /// Most time spent waiting (Retry-After and pauses) over the whole submission: the share of
    /// the job's time budget one order may use, so no submission waits without a cap.
    pub max_total_wait: Duration,
    /// No send (first or repeated) starts after this: the end of the candle claim's lease, less
    /// `recvWindow`, so that once the lease has passed no request of this run can still be
    /// accepted and another run may trust a lookup that finds nothing. `None`: no such bound.
    pub send_until: Option<std::time::Instant>,
}

impl Default for SubmitPolicy {
    fn default() -> Self {
        SubmitPolicy {
            max_sends: 3,
            lookups: 3,
            pause: Duration::from_millis(500),
            max_wait: Duration::from_secs(10),
            max_total_wait: Duration::from_secs(20),
            send_until: None,
        }
    }
}

impl SubmitPolicy {
    /// No pauses: for replay and backtests on the paper exchange.
    pub fn instant() -> Self {
        SubmitPolicy {
            pause: Duration::ZERO,
            ..Default::default()
        }
    }

    /// For protective stops: a position without its stop is the worst state the system can be
    /// in, so a rate-limit storm (429/418 with `Retry-After` up to 30 s) is waited out, within
    /// `budget` in all, rather than giving up after the first long `Retry-After`.
    pub fn protective(self, budget: Duration) -> Self {
        SubmitPolicy {
            max_sends: self.max_sends.max(8),
            max_wait: self.max_wait.max(Duration::from_secs(30)).min(budget),
            max_total_wait: budget,
            ..self
        }
    }
}

/// The waits of one submission, checked against [`SubmitPolicy::max_total_wait`].
struct WaitBudget {
    left: Duration,
}

impl WaitBudget {
    fn new(p: &SubmitPolicy) -> Self {
        WaitBudget {
            left: p.max_total_wait,
        }
    }

    /// Wait out a retryable failure (its `Retry-After`, else the policy's pause) when this was
    /// not the `last` try and the wait fits the policy and what is left of the budget; otherwise
    /// hand the failure back.
    async fn wait_out(
        &mut self,
        e: ExchangeError,
        policy: &SubmitPolicy,
        last: bool,
    ) -> Result<(), ExchangeError> {
        let ExchangeError::Retryable { retry_after, .. } = &e else {
            return Err(e);
        };
        let wait = retry_after.unwrap_or(policy.pause);
        if last || wait > policy.max_wait || wait > self.left {
            return Err(e);
        }
        self.left -= wait;
        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "waiting out a retryable failure");
        pause(wait).await;
        Ok(())
    }
}

/// An order answer that does not parse may still describe an executed order: treat it as an
/// unknown outcome (look it up) rather than as a failure.
fn unparsed_is_unknown(e: ExchangeError) -> ExchangeError {
    match e {
        ExchangeError::Decode {
            endpoint,
            error,
            excerpt,
        } => ExchangeError::UnknownOutcome {
            endpoint,
            detail: format!("answer did not parse ({error}): {excerpt}"),
        },
        e => e,
    }
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// One kind of order as the exactly-once loop ([`submit_once`]) sends and looks it up.
#[async_trait::async_trait]
trait Submission: Sync {
    /// What the exchange reports of the order.
    type Info: Send;
    /// The client id every send and lookup of it carries.
    fn id(&self) -> &str;
    async fn send(&self, ex: &dyn Exchange) -> Result<Self::Info, ExchangeError>;
    /// `None` when the exchange does not know the order.
    async fn lookup(&self, ex: &dyn Exchange) -> Result<Option<Self::Info>, ExchangeError>;
    /// Waits until a found order is final (a market order still working), if it has to.
    async fn settle(
        &self,
        ex: &dyn Exchange,
        found: Self::Info,
        policy: SubmitPolicy,
    ) -> Result<Self::Info, ExchangeError>;
}

#[async_trait::async_trait]
impl Submission for MarketOrder {
    type Info = OrderInfo;
    fn id(&self) -> &str {
        self.client_id.as_str()
    }
    async fn send(&self, ex: &dyn Exchange) -> Result<OrderInfo, ExchangeError> {
        ex.place_market(self).await
    }
    async fn lookup(&self, ex: &dyn Exchange) -> Result<Option<OrderInfo>, ExchangeError> {
        ex.order_by_client_id(&self.symbol, self.id()).await
    }
    async fn settle(
        &self,
        ex: &dyn Exchange,
        found: OrderInfo,
        policy: SubmitPolicy,
    ) -> Result<OrderInfo, ExchangeError> {
        if found.status.is_final() {
            Ok(found)
        } else {
            poll_until_final(ex, self, policy).await
        }
    }
}

#[async_trait::async_trait]
impl Submission for AlgoOrder {
    type Info = AlgoOrderInfo;
    fn id(&self) -> &str {
        self.client_algo_id.as_str()
    }
    async fn send(&self, ex: &dyn Exchange) -> Result<AlgoOrderInfo, ExchangeError> {
        ex.place_algo(self).await
    }
    async fn lookup(&self, ex: &dyn Exchange) -> Result<Option<AlgoOrderInfo>, ExchangeError> {
        ex.algo_by_client_id(self.id()).await
    }
    async fn settle(
        &self,
        _ex: &dyn Exchange,
        found: AlgoOrderInfo,
        _policy: SubmitPolicy,
    ) -> Result<AlgoOrderInfo, ExchangeError> {
        Ok(found)
    }
}

/// Cancelling a resting regular order, as [`AlgoCancel`] does a conditional one.
struct OrderCancel<'a> {
    symbol: &'a Symbol,
    client_id: &'a str,
}

#[async_trait::async_trait]
impl Submission for OrderCancel<'_> {
    type Info = ();
    fn id(&self) -> &str {
        self.client_id
    }
    async fn send(&self, ex: &dyn Exchange) -> Result<(), ExchangeError> {
        ex.cancel_order(self.symbol, self.client_id).await
    }
    /// Done (`Some`) once the order is no longer open: cancelled, filled, or unknown.
    async fn lookup(&self, ex: &dyn Exchange) -> Result<Option<()>, ExchangeError> {
        Ok(
            match ex.order_by_client_id(self.symbol, self.client_id).await? {
                Some(o) if !o.status.is_final() => None,
                _ => Some(()),
            },
        )
    }
    async fn settle(&self, _: &dyn Exchange, _: (), _: SubmitPolicy) -> Result<(), ExchangeError> {
        Ok(())
    }
}

/// Cancelling a conditional order, sent through the same exactly-once loop: after an unknown
/// outcome the order is looked up, and the cancel is sent again only while it is still open.
struct AlgoCancel<'a> {
    symbol: &'a Symbol,
    client_algo_id: &'a str,
}

#[async_trait::async_trait]
impl Submission for AlgoCancel<'_> {
    type Info = ();
    fn id(&self) -> &str {
        self.client_algo_id
    }
    async fn send(&self, ex: &dyn Exchange) -> Result<(), ExchangeError> {
        ex.cancel_algo(self.symbol, self.client_algo_id).await
    }
    /// Done (`Some`) once the order is no longer open: cancelled, fired, or unknown.
    async fn lookup(&self, ex: &dyn Exchange) -> Result<Option<()>, ExchangeError> {
        Ok(match ex.algo_by_client_id(self.client_algo_id).await? {
            Some(a) if a.status.is_open() => None,
            _ => Some(()),
        })
    }
    async fn settle(&self, _: &dyn Exchange, _: (), _: SubmitPolicy) -> Result<(), ExchangeError> {
        Ok(())
    }
}

/// Cancel a conditional order exactly once (see [`submit_once`]).
pub async fn cancel_algo(
    ex: &dyn Exchange,
    symbol: &Symbol,
    client_algo_id: &str,
    policy: SubmitPolicy,
) -> Result<(), ExchangeError> {
    let cancel = AlgoCancel {
        symbol,
        client_algo_id,
    };
    submit_once(ex, &cancel, policy).await
}

/// Cancel a resting regular order exactly once (see [`submit_once`]).
pub async fn cancel_order(
    ex: &dyn Exchange,
    symbol: &Symbol,
    client_id: &str,
    policy: SubmitPolicy,
) -> Result<(), ExchangeError> {
    submit_once(ex, &OrderCancel { symbol, client_id }, policy).await
}

/// Send a market order exactly once (see the module docs). Returns the order as the exchange
/// reports it; a still-working order is polled until it is final or the lookups run out.
pub async fn submit_market(
    ex: &dyn Exchange,
    order: &MarketOrder,
    policy: SubmitPolicy,
) -> Result<OrderInfo, ExchangeError> {
    submit_once(ex, order, policy).await
}

/// Place a conditional order exactly once: an existing order with the same client algo id is
/// returned instead of sending a second one.
pub async fn submit_algo(
    ex: &dyn Exchange,
    order: &AlgoOrder,
    policy: SubmitPolicy,
) -> Result<AlgoOrderInfo, ExchangeError> {
    submit_once(ex, order, policy).await
}

/// The exactly-once loop every order kind goes through: an unknown outcome is looked up before
/// anything else and only sent again (same id) once the exchange has said, after
/// `policy.lookups` lookups, that it does not know it; a duplicate-id rejection resolves to a
/// lookup; a retryable failure is waited out within the policy's budget, then looked up first
/// (a 5xx may have executed it, and Binance refuses a duplicate id only among open orders). No
/// send starts after `policy.send_until`.
async fn submit_once<S: Submission>(
    ex: &dyn Exchange,
    order: &S,
    policy: SubmitPolicy,
) -> Result<S::Info, ExchangeError> {
    let id = order.id();
    let mut sends = 0;
    let mut budget = WaitBudget::new(&policy);
    loop {
        if policy
            .send_until
            .is_some_and(|t| std::time::Instant::now() >= t)
        {
            return Err(past_send_window(id, sends));
        }
        sends += 1;
        match order.send(ex).await.map_err(unparsed_is_unknown) {
            Ok(o) => return order.settle(ex, o, policy).await,
            Err(ExchangeError::UnknownOutcome { endpoint, detail }) => {
                tracing::warn!(client_id = id, %endpoint, %detail, "order outcome unknown; looking it up");
                for _ in 0..policy.lookups {
                    pause(policy.pause).await;
                    match order.lookup(ex).await {
                        Ok(Some(o)) => return order.settle(ex, o, policy).await,
                        Ok(None) => continue,
                        // The lookup itself failing is no licence to resend: keep looking.
                        Err(e) => tracing::warn!(client_id = id, error = %e, "lookup failed"),
                    }
                }
                if sends >= policy.max_sends {
                    return Err(ExchangeError::UnknownOutcome {
                        endpoint,
                        detail: format!("{detail}; order {id} still not found after {sends} sends"),
                    });
                }
                tracing::warn!(
                    client_id = id,
                    "exchange does not know the order; sending it again with the same id"
                );
            }
            Err(e) if e.refusal() == Some(Refusal::DuplicateId) => {
                return match lookup_waiting(ex, order, policy, &mut budget).await? {
                    Some(o) => order.settle(ex, o, policy).await,
                    None => Err(e),
                };
            }
            Err(e @ ExchangeError::Retryable { .. }) => {
                budget
                    .wait_out(e, &policy, sends >= policy.max_sends)
                    .await?;
                if let Some(o) = lookup_waiting(ex, order, policy, &mut budget).await? {
                    return order.settle(ex, o, policy).await;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Look an order up by its client id, waiting out rate limits on the lookup itself within the
/// submission's budget (a protective stop must not be abandoned over a 429 on a read).
async fn lookup_waiting<S: Submission>(
    ex: &dyn Exchange,
    order: &S,
    policy: SubmitPolicy,
    budget: &mut WaitBudget,
) -> Result<Option<S::Info>, ExchangeError> {
    loop {
        match order.lookup(ex).await {
            Err(e @ ExchangeError::Retryable { .. }) => {
                budget.wait_out(e, &policy, false).await?;
            }
            other => return other,
        }
    }
}

/// The error of a submission whose claim's lease left no time to (re)send: nothing was sent
/// when it is the first send; otherwise an earlier send's fate is still unknown.
fn past_send_window(id: &str, sends: u32) -> ExchangeError {
    if sends == 0 {
        ExchangeError::SendWindowClosed {
            client_id: id.to_string(),
        }
    } else {
        ExchangeError::UnknownOutcome {
            endpoint: "POST /fapi/v1/order".into(),
            detail: format!(
                "the candle claim's lease leaves no time to send order {id} again; {sends} earlier send(s) unresolved"
            ),
        }
    }
}

async fn poll_until_final(
    ex: &dyn Exchange,
    order: &MarketOrder,
    policy: SubmitPolicy,
) -> Result<OrderInfo, ExchangeError> {
    let mut last = None;
    for _ in 0..policy.lookups.max(1) {
        pause(policy.pause).await;
        if let Some(o) = ex
            .order_by_client_id(&order.symbol, order.client_id.as_str())
            .await?
        {
            if o.status.is_final() {
                return Ok(o);
            }
            last = Some(o);
        }
    }
    last.ok_or_else(|| ExchangeError::UnknownOutcome {
        endpoint: "GET /fapi/v1/order".into(),
        detail: format!("order {} vanished while working", order.client_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Symbol;
    use rust_decimal_macros::dec;

    fn btc() -> SymbolFilters {
        SymbolFilters {
            symbol: Symbol::new("BTCUSDT"),
            tick_size: dec!(0.10),
            min_price: dec!(556.80),
            max_price: dec!(4529764),
            step_size: dec!(0.001),
            min_qty: dec!(0.001),
            max_qty: dec!(1000),
            market_step_size: dec!(0.001),
            market_min_qty: dec!(0.001),
            market_max_qty: dec!(120),
            min_notional: dec!(100),
        }
    }

    #[test]
    fn market_qty_floors_to_step_and_checks_bounds() {
        let f = btc();
        let p = Price::new(dec!(100000));
        assert_eq!(
            market_qty(&f, dec!(0.0129), p, false).unwrap(),
            Qty::new(dec!(0.012))
        );
        assert!(matches!(
            market_qty(&f, dec!(0.0009), p, false),
            Err(SizingError::BelowMinQty { .. })
        ));
        // 0.001 BTC at 50,000 = 50 USDT < 100: rejected, unless reduce-only.
        let p2 = Price::new(dec!(50000));
        assert!(matches!(
            market_qty(&f, dec!(0.001), p2, false),
            Err(SizingError::BelowMinNotional { .. })
        ));
        assert_eq!(
            market_qty(&f, dec!(0.001), p2, true).unwrap(),
            Qty::new(dec!(0.001))
        );
        assert!(matches!(
            market_qty(&f, dec!(500), p, false),
            Err(SizingError::AboveMaxQty { .. })
        ));
    }

    #[test]
    fn stops_round_away_from_the_position() {
        let f = btc();
        assert_eq!(
            stop_price(&f, Side::Long, Price::new(dec!(97000.07))),
            Price::new(dec!(97000))
        );
        assert_eq!(
            stop_price(&f, Side::Short, Price::new(dec!(103000.01))),
            Price::new(dec!(103000.1))
        );
        assert_eq!(
            target_price(&f, Side::Long, Price::new(dec!(105000.01))),
            Price::new(dec!(105000.1))
        );
        assert_eq!(close_qty(&f, Qty::new(dec!(0.0125))), Qty::new(dec!(0.012)));
    }

    fn ladder_plan(trailing: bool) -> ExitPlan {
        use crate::strategy::{TpStep, Trailing};
        let f = [dec!(0.25), dec!(0.35) / dec!(0.75), dec!(1)];
        ExitPlan {
            take_profits: [dec!(0.05), dec!(0.10), dec!(0.15)]
                .iter()
                .zip(f)
                .enumerate()
                .map(|(i, (l, f))| TpStep {
                    profit_pct: *l,
                    fraction: f,
                    stage: i as u8 + 1,
                })
                .collect(),
            trailing: trailing
                .then(|| Trailing::expressible(dec!(0.05), dec!(0.02)))
                .flatten(),
        }
    }

    fn tp(stage: u8, trigger: Decimal, qty: Decimal) -> PlannedExit {
        PlannedExit {
            kind: ExitKind::TakeProfit { stage },
            trigger: Price::new(trigger),
            qty: Qty::new(qty),
        }
    }

    #[test]
    fn callback_rate_follows_binances_range_and_step() {
        assert_eq!(callback_rate(dec!(0.02)), Some(dec!(2)));
        assert_eq!(callback_rate(dec!(0.10)), Some(dec!(10)));
        assert_eq!(callback_rate(dec!(0.001)), Some(dec!(0.1)));
        assert_eq!(callback_rate(dec!(0.11)), None, "above 10 %");
        assert_eq!(callback_rate(dec!(0.0005)), None, "below 0.1 %");
        assert_eq!(
            callback_rate(dec!(0.0125)),
            None,
            "1.25 is off the 0.1 step"
        );
    }

    #[test]
    fn a_long_ladder_takes_each_step_from_what_the_earlier_ones_leave() {
        let f = btc();
        let (orders, notes) = plan_exits(
            &f,
            &ladder_plan(true),
            Side::Long,
            Price::new(dec!(100000)),
            Qty::new(dec!(0.1)),
            0,
        );
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            orders,
            vec![
                tp(1, dec!(105000), dec!(0.025)),
                // 0.075 × 7/15 = 0.035 (35 % of the original), the rest at the last step.
                tp(2, dec!(110000), dec!(0.035)),
                tp(3, dec!(115000), dec!(0.04)),
                PlannedExit {
                    kind: ExitKind::Trailing {
                        callback_rate: dec!(2)
                    },
                    trigger: Price::new(dec!(105000)),
                    qty: Qty::new(dec!(0.1)),
                },
            ]
        );
        // The same steps, from step 2 on, once step 1 is done (what the sync re-plans).
        let (rest, _) = plan_exits(
            &f,
            &ladder_plan(false),
            Side::Long,
            Price::new(dec!(100000)),
            Qty::new(dec!(0.075)),
            1,
        );
        assert_eq!(rest, orders[1..3].to_vec());
    }

    #[test]
    fn a_short_ladder_sits_below_the_entry_rounded_away_from_it() {
        let f = btc();
        let (orders, _) = plan_exits(
            &f,
            &ladder_plan(true),
            Side::Short,
            Price::new(dec!(100000.05)),
            Qty::new(dec!(0.013)),
            0,
        );
        // 0.013 × 0.25 = 0.00325 → 0.003; 0.010 × 7/15 = 0.00467 → 0.004; 0.006 left.
        assert_eq!(
            orders[..3].to_vec(),
            vec![
                tp(1, dec!(95000.0), dec!(0.003)),
                tp(2, dec!(90000.0), dec!(0.004)),
                tp(3, dec!(85000.0), dec!(0.006)),
            ]
        );
        // 100000.05 × 0.95 = 95000.0475: a short's target rounds down (away from the entry).
        assert_eq!(orders[3].trigger, Price::new(dec!(95000.0)));
        let total: Decimal = orders[..3].iter().map(|o| o.qty.get()).sum();
        assert_eq!(total, dec!(0.013), "the ladder closes exactly the share");
        for o in &orders {
            assert_eq!((o.qty.get() / f.step_size).fract(), Decimal::ZERO);
            assert_eq!((o.trigger.get() / f.tick_size).fract(), Decimal::ZERO);
        }
    }

    #[test]
    fn a_step_below_the_minimum_is_merged_into_the_next() {
        let f = btc();
        // 0.003 × 0.25 = 0.00075 < 0.001: step 1 merges into step 2, which closes
        // 1 − 0.75 × 8/15 = 60 % of 0.003 → 0.001; step 3 closes the 0.002 left.
        let (orders, notes) = plan_exits(
            &f,
            &ladder_plan(false),
            Side::Long,
            Price::new(dec!(100000)),
            Qty::new(dec!(0.003)),
            0,
        );
        assert_eq!(
            orders,
            vec![
                tp(2, dec!(110000), dec!(0.001)),
                tp(3, dec!(115000), dec!(0.002))
            ]
        );
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("merged into step 2"), "{notes:?}");
        // One lot: everything merges into the last step.
        let (orders, notes) = plan_exits(
            &f,
            &ladder_plan(false),
            Side::Long,
            Price::new(dec!(100000)),
            Qty::new(dec!(0.001)),
            0,
        );
        assert_eq!(orders, vec![tp(3, dec!(115000), dec!(0.001))]);
        assert_eq!(notes.len(), 2);
        // Nothing placeable at all: the last step is skipped with its reason.
        let mut coarse = btc();
        coarse.min_qty = dec!(0.01);
        coarse.market_min_qty = dec!(0.01);
        let (orders, notes) = plan_exits(
            &coarse,
            &ladder_plan(true),
            Side::Long,
            Price::new(dec!(100000)),
            Qty::new(dec!(0.005)),
            0,
        );
        assert!(orders.is_empty(), "{orders:?}");
        assert!(
            notes.last().unwrap().contains("trailing stop skipped"),
            "{notes:?}"
        );
        assert!(
            notes.iter().any(|n| n.contains("step 3 skipped")),
            "{notes:?}"
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn filters(tick_exp: u32, step_exp: u32) -> SymbolFilters {
            SymbolFilters {
                symbol: Symbol::new("XUSDT"),
                tick_size: Decimal::new(1, tick_exp),
                min_price: Decimal::ZERO,
                max_price: Decimal::from(10_000_000),
                step_size: Decimal::new(1, step_exp),
                min_qty: Decimal::new(1, step_exp),
                max_qty: Decimal::from(1_000_000),
                market_step_size: Decimal::new(1, step_exp),
                market_min_qty: Decimal::new(1, step_exp),
                market_max_qty: Decimal::from(1_000_000),
                min_notional: Decimal::from(5),
            }
        }

        proptest! {
            /// A sized quantity sits on the step grid and never exceeds what was sized.
            #[test]
            fn market_qty_on_grid_and_never_above_raw(raw_units in 1u64..10_000_000_000, scale in 0u32..8, step_exp in 0u32..6, px in 1u64..200_000) {
                let f = filters(2, step_exp);
                let raw = Decimal::new(raw_units as i64, scale);
                let price = Price::new(Decimal::from(px));
                if let Ok(q) = market_qty(&f, raw, price, false) {
                    prop_assert!(q.get() <= raw);
                    prop_assert_eq!((q.get() / f.market_step_size).fract(), Decimal::ZERO);
                    prop_assert!(q.get() * price.get() >= f.min_notional);
                    prop_assert!(raw - q.get() < f.market_step_size);
                }
            }

            /// A stop sits on the tick grid and rounding never moves it toward the position.
            #[test]
            fn stops_on_tick_grid_never_tighter(raw_units in 1u64..10_000_000_000, scale in 0u32..8, tick_exp in 0u32..5, long in any::<bool>()) {
                let f = filters(tick_exp, 3);
                let raw = Price::new(Decimal::new(raw_units as i64, scale));
                let side = if long { Side::Long } else { Side::Short };
                let p = stop_price(&f, side, raw);
                prop_assert_eq!((p.get() / f.tick_size).fract(), Decimal::ZERO);
                match side {
                    Side::Long => prop_assert!(p.get() <= raw.get() || raw.get() < f.tick_size),
                    Side::Short => prop_assert!(p.get() >= raw.get()),
                }
                prop_assert!((p.get() - raw.get()).abs() < f.tick_size || raw.get() < f.tick_size);
            }
        }
    }
}
