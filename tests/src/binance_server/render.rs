//! Binance's JSON shapes for the test exchange's state (numbers as strings where Binance uses
//! strings). The field sets follow the response examples of Binance's USDⓈ-M documentation; the
//! fixtures under `tests/fixtures/binance/` record them and a test compares the two.

use super::exchange::{Account, Algo, Exchange, IncomeRow, Order, Trade};
use super::market::SymbolRules;
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// Money with 8 decimals, like every balance field of Binance.
pub(crate) fn money(d: Decimal) -> String {
    format!("{:.8}", d.round_dp(8))
}

fn fixed(d: Decimal, dp: u32) -> String {
    format!("{:.*}", dp as usize, d.round_dp(dp))
}

fn plain(d: Decimal) -> String {
    d.normalize().to_string()
}

fn qty(d: Decimal, r: &SymbolRules) -> String {
    fixed(d, r.quantity_precision)
}

fn price(d: Decimal, r: &SymbolRules) -> String {
    fixed(d, r.price_precision)
}

/// Rough notional cap of Binance's leverage brackets (BTCUSDT-like).
pub(crate) fn max_notional(leverage: u32) -> &'static str {
    match leverage {
        101.. => "50000",
        76..=100 => "600000",
        51..=75 => "3000000",
        26..=50 => "12000000",
        21..=25 => "70000000",
        11..=20 => "100000000",
        6..=10 => "230000000",
        5 => "480000000",
        4 => "600000000",
        3 => "800000000",
        2 => "1200000000",
        _ => "1800000000",
    }
}

/// `GET /fapi/v1/order` / `openOrders` shape.
pub(crate) fn order(o: &Order, r: &SymbolRules) -> Value {
    json!({
        "avgPrice": fixed(o.avg_price, r.price_precision + 3),
        "clientOrderId": o.client_id,
        "cumQuote": fixed(o.executed * o.avg_price, 5),
        "executedQty": qty(o.executed, r),
        "orderId": o.order_id,
        "origQty": qty(o.qty, r),
        "origType": o.orig_type,
        "price": plain(o.price),
        "reduceOnly": o.reduce_only,
        "side": o.side.as_str(),
        "positionSide": "BOTH",
        "status": o.status,
        "stopPrice": plain(o.stop_price),
        "closePosition": o.close_position,
        "symbol": o.symbol,
        "time": o.time,
        "timeInForce": "GTC",
        "type": if o.orig_type == "LIMIT" { "LIMIT" } else { "MARKET" },
        "updateTime": o.update_time,
        "workingType": "CONTRACT_PRICE",
        "priceProtect": false,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0
    })
}

/// `POST /fapi/v1/order` answer. `RESULT` reports the fill; `ACK` (Binance's default for MARKET)
/// reports the order as accepted but not yet executed.
pub(crate) fn new_order(o: &Order, r: &SymbolRules, result: bool) -> Value {
    let (status, executed, avg) = if result {
        (o.status, o.executed, o.avg_price)
    } else {
        ("NEW", Decimal::ZERO, Decimal::ZERO)
    };
    json!({
        "clientOrderId": o.client_id,
        "cumQty": qty(executed, r),
        "cumQuote": fixed(executed * avg, 5),
        "executedQty": qty(executed, r),
        "orderId": o.order_id,
        "avgPrice": fixed(avg, r.price_precision + 3),
        "origQty": qty(o.qty, r),
        "price": "0",
        "reduceOnly": o.reduce_only,
        "side": o.side.as_str(),
        "positionSide": "BOTH",
        "status": status,
        "stopPrice": "0",
        "closePosition": false,
        "symbol": o.symbol,
        "timeInForce": "GTC",
        "type": "MARKET",
        "origType": "MARKET",
        "updateTime": o.update_time,
        "workingType": "CONTRACT_PRICE",
        "priceProtect": false,
        "priceMatch": "NONE",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0
    })
}

fn opt_price(d: Option<Decimal>, r: &SymbolRules) -> String {
    d.map(|d| price(d, r)).unwrap_or_default()
}

/// `POST /fapi/v1/algoOrder` answer.
pub(crate) fn new_algo(a: &Algo, r: &SymbolRules) -> Value {
    json!({
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side.as_str(),
        "positionSide": "BOTH",
        "timeInForce": a.time_in_force,
        "quantity": a.qty.map(|q| qty(q, r)).unwrap_or_else(|| qty(Decimal::ZERO, r)),
        "algoStatus": a.status,
        "triggerPrice": price(a.trigger_price, r),
        "price": price(a.price, r),
        "icebergQuantity": null,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "activatePrice": opt_price(a.activate_price, r),
        "callbackRate": a.callback_rate.map(plain).unwrap_or_default(),
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": 0
    })
}

/// `GET /fapi/v1/algoOrder` / `openAlgoOrders` shape.
pub(crate) fn algo(a: &Algo, r: &SymbolRules) -> Value {
    json!({
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": a.order_type,
        "symbol": a.symbol,
        "side": a.side.as_str(),
        "positionSide": "BOTH",
        "timeInForce": a.time_in_force,
        "quantity": a.qty.map(|q| qty(q, r)).unwrap_or_else(|| qty(Decimal::ZERO, r)),
        "algoStatus": a.status,
        "actualOrderId": a.actual_order_id.map(|id| id.to_string()).unwrap_or_default(),
        "actualPrice": price(a.actual_price.unwrap_or_default(), r),
        "triggerPrice": price(a.trigger_price, r),
        "price": price(a.price, r),
        "icebergQuantity": null,
        "tpTriggerPrice": price(Decimal::ZERO, r),
        "tpPrice": price(Decimal::ZERO, r),
        "slTriggerPrice": price(Decimal::ZERO, r),
        "slPrice": price(Decimal::ZERO, r),
        "tpOrderType": "",
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only,
        "createTime": a.create_time,
        "updateTime": a.update_time,
        "triggerTime": a.trigger_time,
        "goodTillDate": 0
    })
}

/// `GET /fapi/v1/userTrades` row.
pub(crate) fn trade(t: &Trade, r: &SymbolRules) -> Value {
    json!({
        "buyer": t.side == albra_core::domain::OrderSide::Buy,
        "commission": money(t.commission),
        "commissionAsset": "USDT",
        "id": t.id,
        "maker": false,
        "orderId": t.order_id,
        "price": plain(t.price),
        "qty": qty(t.qty, r),
        "quoteQty": plain((t.qty * t.price).round_dp(8)),
        "realizedPnl": money(t.realized_pnl),
        "side": t.side.as_str(),
        "positionSide": "BOTH",
        "symbol": t.symbol,
        "time": t.time
    })
}

/// `GET /fapi/v1/income` row.
pub(crate) fn income(i: &IncomeRow) -> Value {
    json!({
        "symbol": i.symbol,
        "incomeType": i.income_type,
        "income": money(i.income),
        "asset": "USDT",
        "info": i.income_type,
        "time": i.time,
        "tranId": i.tran_id,
        "tradeId": i.trade_id
    })
}

/// `GET /fapi/v1/symbolConfig` row.
pub(crate) fn symbol_config(acct: &Account, symbol: &str) -> Value {
    let c = acct.config(symbol);
    json!({
        "symbol": symbol,
        "marginType": c.margin.as_str(),
        "isAutoAddMargin": false,
        "leverage": c.leverage,
        "maxNotionalValue": max_notional(c.leverage)
    })
}

/// Rough cross-margin liquidation price (maintenance margin ignored): where the whole wallet is lost.
fn liquidation(amt: Decimal, entry: Decimal, wallet: Decimal) -> Decimal {
    if amt.is_zero() {
        return Decimal::ZERO;
    }
    (entry - wallet / amt).max(Decimal::ZERO)
}

/// `GET /fapi/v3/positionRisk` rows: non-zero positions only (as v3 does).
pub(crate) fn position_risk(x: &Exchange, key: &str, symbol: Option<&str>, now: i64) -> Vec<Value> {
    let acct = &x.accounts[key];
    acct.positions
        .iter()
        .filter(|(s, p)| !p.amt.is_zero() && symbol.is_none_or(|want| want == s.as_str()))
        .map(|(s, p)| {
            let r = &x.market.rules[s];
            let mark = x.market.mark(s, now).unwrap_or(p.entry);
            let notional = p.amt * mark;
            let im = notional.abs() / Decimal::from(acct.config(s).leverage);
            json!({
                "symbol": s,
                "positionSide": "BOTH",
                "positionAmt": qty(p.amt, r),
                "entryPrice": plain(p.entry),
                "breakEvenPrice": plain(p.entry),
                "markPrice": money(mark),
                "unRealizedProfit": money(p.amt * (mark - p.entry)),
                "liquidationPrice": money(liquidation(p.amt, p.entry, acct.wallet)),
                "isolatedMargin": "0",
                "notional": money(notional),
                "marginAsset": "USDT",
                "isolatedWallet": "0",
                "initialMargin": money(im),
                "maintMargin": money(notional.abs() * Decimal::new(4, 3)),
                "positionInitialMargin": money(im),
                "openOrderInitialMargin": "0",
                "adl": 0,
                "bidNotional": "0",
                "askNotional": "0",
                "updateTime": p.update_time
            })
        })
        .collect()
}

/// `GET /fapi/v3/account`.
pub(crate) fn account(x: &Exchange, key: &str, now: i64) -> Value {
    let t = x.totals(key, now);
    let acct = &x.accounts[key];
    let positions: Vec<Value> = acct
        .positions
        .iter()
        .filter(|(_, p)| !p.amt.is_zero())
        .map(|(s, p)| {
            let r = &x.market.rules[s];
            let mark = x.market.mark(s, now).unwrap_or(p.entry);
            let notional = p.amt * mark;
            let im = notional.abs() / Decimal::from(acct.config(s).leverage);
            json!({
                "symbol": s,
                "positionSide": "BOTH",
                "positionAmt": qty(p.amt, r),
                "unrealizedProfit": money(p.amt * (mark - p.entry)),
                "isolatedMargin": "0",
                "notional": money(notional),
                "isolatedWallet": "0",
                "initialMargin": money(im),
                "maintMargin": money(notional.abs() * Decimal::new(4, 3)),
                "updateTime": p.update_time
            })
        })
        .collect();
    let max_withdraw = t.available().min(t.wallet).max(Decimal::ZERO);
    json!({
        "totalInitialMargin": money(t.initial_margin),
        "totalMaintMargin": money(t.maint_margin),
        "totalWalletBalance": money(t.wallet),
        "totalUnrealizedProfit": money(t.unrealized),
        "totalMarginBalance": money(t.margin_balance()),
        "totalPositionInitialMargin": money(t.initial_margin),
        "totalOpenOrderInitialMargin": money(Decimal::ZERO),
        "totalCrossWalletBalance": money(t.wallet),
        "totalCrossUnPnl": money(t.unrealized),
        "availableBalance": money(t.available()),
        "maxWithdrawAmount": money(max_withdraw),
        "assets": [{
            "asset": "USDT",
            "walletBalance": money(t.wallet),
            "unrealizedProfit": money(t.unrealized),
            "marginBalance": money(t.margin_balance()),
            "maintMargin": money(t.maint_margin),
            "initialMargin": money(t.initial_margin),
            "positionInitialMargin": money(t.initial_margin),
            "openOrderInitialMargin": money(Decimal::ZERO),
            "crossWalletBalance": money(t.wallet),
            "crossUnPnl": money(t.unrealized),
            "availableBalance": money(t.available()),
            "maxWithdrawAmount": money(max_withdraw),
            "updateTime": now
        }],
        "positions": positions
    })
}

/// `GET /fapi/v1/exchangeInfo`.
/// The filters of `symbol` minus those the test hid (see `BinanceTestServer::hide_filter`).
fn without_hidden(x: &Exchange, symbol: &str, filters: Value) -> Value {
    match filters {
        Value::Array(list) => Value::Array(
            list.into_iter()
                .filter(|f| {
                    let ty = f["filterType"].as_str().unwrap_or_default();
                    !x.hidden_filters.iter().any(|(s, t)| s == symbol && t == ty)
                })
                .collect(),
        ),
        other => other,
    }
}

pub(crate) fn exchange_info(x: &Exchange, now: i64) -> Value {
    let symbols: Vec<Value> = x
        .market
        .rules
        .values()
        .map(|r| {
            json!({
                "symbol": r.symbol,
                "pair": r.symbol,
                "contractType": "PERPETUAL",
                "deliveryDate": 4133404800000i64,
                "onboardDate": 1569398400000i64,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": r.base_asset,
                "quoteAsset": "USDT",
                "marginAsset": "USDT",
                "pricePrecision": r.price_precision,
                "quantityPrecision": r.quantity_precision,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "filters": without_hidden(x, &r.symbol, json!([
                    {"filterType": "PRICE_FILTER", "minPrice": r.min_price.to_string(),
                     "maxPrice": r.max_price.to_string(), "tickSize": r.tick_size.to_string()},
                    {"filterType": "LOT_SIZE", "minQty": r.min_qty.to_string(),
                     "maxQty": r.max_qty.to_string(), "stepSize": r.step_size.to_string()},
                    {"filterType": "MARKET_LOT_SIZE", "minQty": r.market_min_qty.to_string(),
                     "maxQty": r.market_max_qty.to_string(), "stepSize": r.market_step_size.to_string()},
                    {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                    {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                    {"filterType": "MIN_NOTIONAL", "notional": r.min_notional.to_string()},
                    {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
                     "multiplierDown": "0.9500", "multiplierDecimal": "4"}
                ])),
                "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                               "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05"
            })
        })
        .collect();
    json!({
        "timezone": "UTC",
        "serverTime": now,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300}
        ],
        "exchangeFilters": [],
        "assets": [
            {"asset": "USDT", "marginAvailable": true, "autoAssetExchange": "-10000"}
        ],
        "symbols": symbols
    })
}
