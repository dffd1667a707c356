//! Orders: the one place where quantities and prices are rounded to a symbol's filters, and the
//! exactly-once submission of orders over any [`Exchange`].
//!
//! Exactly once: every order carries a deterministic client id. When the outcome of a send is
//! unknown (timeout, 503) the order is looked up by that id before anything else happens; it is
//! only sent again (with the same id) once the exchange has said, repeatedly, that it does not know
//! it. A duplicate-id rejection also resolves to a lookup.

use crate::domain::{Price, Qty, Side};
use crate::ports::{
    codes, AlgoOrder, AlgoOrderInfo, Exchange, ExchangeError, MarketOrder, OrderInfo, SymbolFilters,
};
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
    if !reduce_only && q * ref_price.0 < f.min_notional {
        return Err(SizingError::BelowMinNotional {
            symbol: f.symbol.0.clone(),
            notional: (q * ref_price.0).round_dp(2),
            min: f.min_notional,
        });
    }
    Ok(Qty(q))
}

/// A quantity to close (part of) a position: on the step grid, never above `held`.
pub fn close_qty(f: &SymbolFilters, held: Qty) -> Qty {
    let step = if f.market_step_size > Decimal::ZERO {
        f.market_step_size
    } else {
        f.step_size
    };
    Qty(floor_to(held.0, step))
}

/// A stop trigger on the tick grid, rounded AWAY from the position's price (a long's stop is rounded
/// down, a short's up) so rounding never tightens the stop.
pub fn stop_price(f: &SymbolFilters, side: Side, raw: Price) -> Price {
    let strategy = match side {
        Side::Long => RoundingStrategy::ToNegativeInfinity,
        Side::Short => RoundingStrategy::ToPositiveInfinity,
    };
    Price(round_to(raw.0, f.tick_size, strategy).max(f.min_price))
}

/// A take-profit trigger on the tick grid, rounded away from the entry (a long's up, a short's down).
pub fn target_price(f: &SymbolFilters, side: Side, raw: Price) -> Price {
    stop_price(f, side.opposite(), raw)
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
}

impl Default for SubmitPolicy {
    fn default() -> Self {
        SubmitPolicy {
            max_sends: 3,
            lookups: 3,
            pause: Duration::from_millis(500),
            max_wait: Duration::from_secs(10),
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

/// Send a market order exactly once (see the module docs). Returns the order as the exchange
/// reports it; a still-working order is polled until it is final or the lookups run out.
pub async fn submit_market(
    ex: &dyn Exchange,
    order: &MarketOrder,
    policy: SubmitPolicy,
) -> Result<OrderInfo, ExchangeError> {
    let id = order.client_id.as_str();
    let mut sends = 0;
    loop {
        sends += 1;
        match ex.place_market(order).await.map_err(unparsed_is_unknown) {
            Ok(o) if o.status.is_final() => return Ok(o),
            Ok(_) => return poll_until_final(ex, order, policy).await,
            Err(ExchangeError::UnknownOutcome { endpoint, detail }) => {
                tracing::warn!(client_id = id, %endpoint, %detail, "order outcome unknown; looking it up");
                for _ in 0..policy.lookups {
                    pause(policy.pause).await;
                    match ex.order_by_client_id(&order.symbol, id).await {
                        Ok(Some(o)) if o.status.is_final() => return Ok(o),
                        Ok(Some(_)) => return poll_until_final(ex, order, policy).await,
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
            Err(e) if e.rejected_code() == Some(codes::DUPLICATE_CLIENT_ID) => {
                return match ex.order_by_client_id(&order.symbol, id).await? {
                    Some(o) if o.status.is_final() => Ok(o),
                    Some(_) => poll_until_final(ex, order, policy).await,
                    None => Err(e),
                };
            }
            Err(ExchangeError::Retryable {
                endpoint,
                detail,
                retry_after,
            }) => {
                let wait = retry_after.unwrap_or(policy.pause);
                if sends >= policy.max_sends || wait > policy.max_wait {
                    return Err(ExchangeError::Retryable {
                        endpoint,
                        detail,
                        retry_after,
                    });
                }
                pause(wait).await;
                // A 5xx may have executed the order, and Binance only rejects duplicate ids among
                // OPEN orders: a filled market order's id would be accepted again. Look first.
                if let Some(o) = ex.order_by_client_id(&order.symbol, id).await? {
                    return if o.status.is_final() {
                        Ok(o)
                    } else {
                        poll_until_final(ex, order, policy).await
                    };
                }
            }
            Err(e) => return Err(e),
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

/// Place a conditional order exactly once: an existing order with the same client algo id is
/// returned instead of sending a second one.
pub async fn submit_algo(
    ex: &dyn Exchange,
    order: &AlgoOrder,
    policy: SubmitPolicy,
) -> Result<AlgoOrderInfo, ExchangeError> {
    let id = order.client_algo_id.as_str();
    let mut sends = 0;
    loop {
        sends += 1;
        match ex.place_algo(order).await.map_err(unparsed_is_unknown) {
            Ok(o) => return Ok(o),
            Err(ExchangeError::UnknownOutcome { endpoint, detail }) => {
                for _ in 0..policy.lookups {
                    pause(policy.pause).await;
                    match ex.algo_by_client_id(id).await {
                        Ok(Some(o)) => return Ok(o),
                        Ok(None) => continue,
                        Err(e) => tracing::warn!(client_algo_id = id, error = %e, "lookup failed"),
                    }
                }
                if sends >= policy.max_sends {
                    return Err(ExchangeError::UnknownOutcome { endpoint, detail });
                }
            }
            Err(e) if e.rejected_code() == Some(codes::DUPLICATE_CLIENT_ID) => {
                return ex.algo_by_client_id(id).await?.ok_or(e);
            }
            Err(ExchangeError::Retryable {
                endpoint,
                detail,
                retry_after,
            }) => {
                let wait = retry_after.unwrap_or(policy.pause);
                if sends >= policy.max_sends || wait > policy.max_wait {
                    return Err(ExchangeError::Retryable {
                        endpoint,
                        detail,
                        retry_after,
                    });
                }
                pause(wait).await;
                if let Some(o) = ex.algo_by_client_id(id).await? {
                    return Ok(o);
                }
            }
            Err(e) => return Err(e),
        }
    }
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
        let p = Price(dec!(100000));
        assert_eq!(
            market_qty(&f, dec!(0.0129), p, false).unwrap(),
            Qty(dec!(0.012))
        );
        assert!(matches!(
            market_qty(&f, dec!(0.0009), p, false),
            Err(SizingError::BelowMinQty { .. })
        ));
        // 0.001 BTC at 50,000 = 50 USDT < 100: rejected, unless reduce-only.
        let p2 = Price(dec!(50000));
        assert!(matches!(
            market_qty(&f, dec!(0.001), p2, false),
            Err(SizingError::BelowMinNotional { .. })
        ));
        assert_eq!(
            market_qty(&f, dec!(0.001), p2, true).unwrap(),
            Qty(dec!(0.001))
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
            stop_price(&f, Side::Long, Price(dec!(97000.07))),
            Price(dec!(97000))
        );
        assert_eq!(
            stop_price(&f, Side::Short, Price(dec!(103000.01))),
            Price(dec!(103000.1))
        );
        assert_eq!(
            target_price(&f, Side::Long, Price(dec!(105000.01))),
            Price(dec!(105000.1))
        );
        assert_eq!(close_qty(&f, Qty(dec!(0.0125))), Qty(dec!(0.012)));
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
                let price = Price(Decimal::from(px));
                if let Ok(q) = market_qty(&f, raw, price, false) {
                    prop_assert!(q.0 <= raw);
                    prop_assert_eq!((q.0 / f.market_step_size).fract(), Decimal::ZERO);
                    prop_assert!(q.0 * price.0 >= f.min_notional);
                    prop_assert!(raw - q.0 < f.market_step_size);
                }
            }

            /// A stop sits on the tick grid and rounding never moves it toward the position.
            #[test]
            fn stops_on_tick_grid_never_tighter(raw_units in 1u64..10_000_000_000, scale in 0u32..8, tick_exp in 0u32..5, long in any::<bool>()) {
                let f = filters(tick_exp, 3);
                let raw = Price(Decimal::new(raw_units as i64, scale));
                let side = if long { Side::Long } else { Side::Short };
                let p = stop_price(&f, side, raw);
                prop_assert_eq!((p.0 / f.tick_size).fract(), Decimal::ZERO);
                match side {
                    Side::Long => prop_assert!(p.0 <= raw.0 || raw.0 < f.tick_size),
                    Side::Short => prop_assert!(p.0 >= raw.0),
                }
                prop_assert!((p.0 - raw.0).abs() < f.tick_size || raw.0 < f.tick_size);
            }
        }
    }
}
