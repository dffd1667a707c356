//! Order validation: what the exchange refuses (and with which [`Refusal`]) before a market or
//! conditional order is accepted.

use super::*;

impl PaperExchange {
    pub(super) fn check_market(
        &self,
        st: &State,
        f: &SymbolFilters,
        order: &MarketOrder,
        price: Decimal,
        fill: Decimal,
    ) -> Result<(), ExchangeError> {
        if st.order_by_client.contains_key(order.client_id.as_str()) {
            return Err(rejected(
                EP_ORDER,
                Refusal::DuplicateId,
                "ClientOrderId is duplicated.",
            ));
        }
        let q = order.qty.get();
        if q <= Decimal::ZERO {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Quantity less than or equal to zero.",
            ));
        }
        if !on_step(q, f.market_step_size) {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Precision is over the maximum defined for this asset.",
            ));
        }
        if q < f.market_min_qty {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Quantity less than min quantity.",
            ));
        }
        if q > f.market_max_qty {
            return Err(rejected(
                EP_ORDER,
                Refusal::Precision,
                "Quantity greater than max quantity.",
            ));
        }
        let amount = st.amount(&order.symbol);
        if order.reduce_only && (!reduces(order.side, amount) || q > amount.abs()) {
            return Err(rejected(
                EP_ORDER,
                Refusal::ReduceOnlyRejected,
                "ReduceOnly Order is rejected.",
            ));
        }
        if !order.reduce_only && q * price < f.min_notional {
            return Err(rejected(
                EP_ORDER,
                Refusal::BelowMinNotional,
                format!(
                    "Order's notional must be no smaller than {} (unless you choose reduce only).",
                    f.min_notional.normalize()
                ),
            ));
        }
        if !order.reduce_only && !st.margin_ok(&self.cfg, &order.symbol, order.side, q, price, fill)
        {
            return Err(rejected(
                EP_ORDER,
                Refusal::InsufficientMargin,
                "Margin is insufficient.",
            ));
        }
        Ok(())
    }

    pub(super) fn check_algo(
        &self,
        st: &State,
        f: &SymbolFilters,
        order: &AlgoOrder,
        price: Decimal,
    ) -> Result<(), ExchangeError> {
        if st
            .algo_by_client
            .contains_key(order.client_algo_id.as_str())
        {
            return Err(rejected(
                EP_ALGO,
                Refusal::DuplicateId,
                "ClientOrderId is duplicated.",
            ));
        }
        match (order.close_position, order.qty) {
            (true, Some(_)) => {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Other,
                    "Quantity must be zero with closePosition equals true",
                ))
            }
            (false, None) => {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Other,
                    "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.",
                ))
            }
            (false, Some(q)) => {
                let q = q.get();
                if q <= Decimal::ZERO {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Quantity less than or equal to zero.",
                    ));
                }
                if !on_step(q, f.step_size) {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Precision is over the maximum defined for this asset.",
                    ));
                }
                if q < f.min_qty {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Quantity less than min quantity.",
                    ));
                }
                if q > f.max_qty {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Precision,
                        "Quantity greater than max quantity.",
                    ));
                }
            }
            (true, None) => {}
        }
        let check_price = |p: Decimal, name: &str| -> Result<(), ExchangeError> {
            if p <= Decimal::ZERO || p < f.min_price {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Precision,
                    format!("{name}: Price less than min price."),
                ));
            }
            if p > f.max_price {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Precision,
                    format!("{name}: Stop price greater than max price."),
                ));
            }
            // Binance's PRICE_FILTER rule: (price − minPrice) % tickSize == 0.
            if !on_step(p - f.min_price, f.tick_size) {
                return Err(rejected(
                    EP_ALGO,
                    Refusal::Precision,
                    "Price not increased by tick size.",
                ));
            }
            Ok(())
        };
        match order.kind {
            AlgoKind::StopMarket | AlgoKind::TakeProfitMarket => {
                let Some(t) = order.trigger_price else {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Other,
                        "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.",
                    ));
                };
                check_price(t.get(), "triggerPrice")?;
                let stop = matches!(order.kind, AlgoKind::StopMarket);
                let immediate = match (order.side, stop) {
                    (OrderSide::Sell, true) | (OrderSide::Buy, false) => t.get() >= price,
                    (OrderSide::Buy, true) | (OrderSide::Sell, false) => t.get() <= price,
                };
                if immediate {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::WouldTriggerImmediately,
                        "Order would immediately trigger.",
                    ));
                }
            }
            AlgoKind::TrailingStopMarket { callback_rate } => {
                if callback_rate < Decimal::new(1, 1) || callback_rate > Decimal::from(10) {
                    return Err(rejected(
                        EP_ALGO,
                        Refusal::Other,
                        "Data sent for parameter 'callbackRate' is not valid.",
                    ));
                }
                if let Some(a) = order.trigger_price {
                    check_price(a.get(), "activatePrice")?;
                }
            }
        }
        Ok(())
    }
}
