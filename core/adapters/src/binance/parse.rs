//! Turns Binance USDⓈ-M JSON answers into the port's data types.
//!
//! Lenient on fields we do not use (Binance adds fields over time), strict on the ones we need:
//! a missing or malformed needed field is an error naming the field, which the client turns into
//! `ExchangeError::Decode` with the endpoint and a body excerpt. Numbers arrive as strings
//! (`"108994.30"`) and are parsed exactly into `Decimal`; some ids arrive as a number in one
//! endpoint and a string in another (`tranId`, `actualOrderId`), so id helpers accept both.
//!
//! Response shapes come from Binance's USDⓈ-M REST documentation, under
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures/>:
//! - `market-data/rest-api/Kline-Candlestick-Data`, `market-data/rest-api/Exchange-Information`
//! - `account/rest-api/Account-Information-V3` (`totalMarginBalance`, `totalWalletBalance`,
//!   `availableBalance`, `totalInitialMargin`, `totalUnrealizedProfit` as strings)
//! - `trade/rest-api/Position-Information-V3` (no `leverage` field in v3 rows)
//! - `account/rest-api/Symbol-Config` (`[{symbol, marginType, isAutoAddMargin, leverage,
//!   maxNotionalValue}]`, as in binance-connector-rust `SymbolConfigurationResponseInner`)
//! - `trade/rest-api/New-Order`, `trade/rest-api/Query-Order` (`avgPrice`/`cumQuote` "will be
//!   removed after CM migration")
//! - `trade/rest-api/New-Algo-Order`, `trade/rest-api/Query-Algo-Order`,
//!   `trade/rest-api/Current-All-Algo-Open-Orders`, `trade/rest-api/Cancel-Algo-Order`
//!   (`actualOrderId` is `""` until triggered, `actualPrice` `"0.00000"` until filled)
//! - `trade/rest-api/Account-Trade-List`, `account/rest-api/Get-Income-History` (`tranId` shown
//!   both as number and string, `tradeId` `""` when not applicable)

use albra_core::data::FundingRate;
use albra_core::domain::{Candle, Notional, OrderSide, Price, Qty, Symbol, Timeframe};
use albra_core::ports::{
    AccountSnapshot, AlgoKind, AlgoOrderInfo, AlgoStatus, ExchangeError, ExchangePosition, Income,
    MarginType, OrderInfo, OrderStatus, SymbolConfig, SymbolFilters, UserTrade,
};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

type Obj = Map<String, Value>;

pub(crate) fn as_obj<'a>(v: &'a Value, what: &str) -> Result<&'a Obj, String> {
    v.as_object()
        .ok_or_else(|| format!("expected a JSON object for {what}"))
}

pub(crate) fn as_array<'a>(v: &'a Value, what: &str) -> Result<&'a Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("expected a JSON array for {what}"))
}

fn get<'a>(o: &'a Obj, key: &str) -> Result<&'a Value, String> {
    match o.get(key) {
        Some(Value::Null) | None => Err(format!("missing field `{key}`")),
        Some(v) => Ok(v),
    }
}

fn decimal_of(v: &Value) -> Option<Decimal> {
    let s = match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Decimal::from_str_exact(&s)
        .or_else(|_| Decimal::from_scientific(&s))
        .ok()
}

fn dec(o: &Obj, key: &str) -> Result<Decimal, String> {
    let v = get(o, key)?;
    decimal_of(v).ok_or_else(|| format!("field `{key}` is not a decimal: {v}"))
}

/// Absent, null and `""` are `None` (Binance sends `""` for "not applicable").
fn dec_opt(o: &Obj, key: &str) -> Result<Option<Decimal>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(v) => decimal_of(v)
            .map(Some)
            .ok_or_else(|| format!("field `{key}` is not a decimal: {v}")),
    }
}

/// A decimal where Binance's "0" means "not set" (e.g. `actualPrice` before a trigger).
fn dec_nonzero(o: &Obj, key: &str) -> Result<Option<Decimal>, String> {
    Ok(dec_opt(o, key)?.filter(|d| !d.is_zero()))
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn int(o: &Obj, key: &str) -> Result<i64, String> {
    let v = get(o, key)?;
    int_of(v).ok_or_else(|| format!("field `{key}` is not an integer: {v}"))
}

fn int_opt(o: &Obj, key: &str) -> Result<Option<i64>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(v) => int_of(v)
            .map(Some)
            .ok_or_else(|| format!("field `{key}` is not an integer: {v}")),
    }
}

fn string(o: &Obj, key: &str) -> Result<String, String> {
    match get(o, key)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("field `{key}` is not a string: {other}")),
    }
}

/// Missing means false; accepts JSON booleans and `"true"`/`"false"` strings.
fn flag(o: &Obj, key: &str) -> Result<bool, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(format!("field `{key}` is not a boolean: {v}")),
    }
}

fn enum_field<T: DeserializeOwned>(o: &Obj, key: &str) -> Result<T, String> {
    let v = get(o, key)?;
    serde_json::from_value(v.clone()).map_err(|_| format!("field `{key}` has an unknown value {v}"))
}

fn symbol(o: &Obj, key: &str) -> Result<Symbol, String> {
    Ok(Symbol::new(string(o, key)?))
}

// ---------------------------------------------------------------------------------------------

/// Earliest timestamp accepted from the exchange: 2017-01-01T00:00:00Z (before Binance existed).
pub(crate) const MIN_TIME_MS: i64 = 1_483_228_800_000;
/// Latest timestamp accepted from the exchange: 2100-01-01T00:00:00Z. Times stay far from
/// `i64::MAX`, so adding an interval or a delay to one cannot overflow.
pub(crate) const MAX_TIME_MS: i64 = 4_102_444_800_000;

/// A timestamp in [`MIN_TIME_MS`, `MAX_TIME_MS`], or an error naming `what` and the value.
fn time_in_range(what: &str, t: i64) -> Result<i64, String> {
    if (MIN_TIME_MS..=MAX_TIME_MS).contains(&t) {
        Ok(t)
    } else {
        Err(format!(
            "{what} {t} is outside 2017-01-01..2100-01-01 (ms since the epoch)"
        ))
    }
}

/// `GET /fapi/v1/time`: `{"serverTime": 1499827319559}`.
pub(crate) fn server_time(v: &Value) -> Result<i64, String> {
    time_in_range(
        "field `serverTime`",
        int(as_obj(v, "server time")?, "serverTime")?,
    )
}

/// `GET /fapi/v1/klines`: rows `[openTime, "open", "high", "low", "close", "volume", closeTime, …]`.
/// Keeps only rows closed at `now` (open + interval ≤ now), oldest first, at most `limit`.
pub(crate) fn closed_klines(
    v: &Value,
    tf: Timeframe,
    limit: usize,
    now: i64,
) -> Result<Vec<Candle>, String> {
    let rows = as_array(v, "klines")?;
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let cells = row
            .as_array()
            .ok_or_else(|| format!("kline row {i} is not an array"))?;
        if cells.len() < 6 {
            return Err(format!(
                "kline row {i} has {} fields, expected 12",
                cells.len()
            ));
        }
        let open_time =
            int_of(&cells[0]).ok_or_else(|| format!("kline row {i}: open time {}", cells[0]))?;
        let open_time = time_in_range(&format!("kline row {i}: open time"), open_time)?;
        let d = |j: usize, name: &str| {
            decimal_of(&cells[j]).ok_or_else(|| format!("kline row {i}: {name} {}", cells[j]))
        };
        // Prices feed sizing (a division) and stop levels: zero or negative is a broken answer.
        let price = |j: usize, name: &str| -> Result<Price, String> {
            let p = d(j, name)?;
            if p > Decimal::ZERO {
                Ok(Price::new(p))
            } else {
                Err(format!("kline row {i}: {name} {p} is not a positive price"))
            }
        };
        let volume = d(5, "volume")?;
        if volume.is_sign_negative() && !volume.is_zero() {
            return Err(format!("kline row {i}: volume {volume} is negative"));
        }
        let candle = Candle {
            open_time,
            open: price(1, "open")?,
            high: price(2, "high")?,
            low: price(3, "low")?,
            close: price(4, "close")?,
            volume,
        };
        // The newest row is the candle still forming: never hand it to a strategy.
        if candle.close_time(tf) <= now {
            out.push(candle);
        }
    }
    out.sort_by_key(|c| c.open_time);
    out.dedup_by_key(|c| c.open_time);
    if out.len() > limit {
        out.drain(..out.len() - limit);
    }
    Ok(out)
}

/// `GET /fapi/v1/fundingRate`: `[{"symbol", "fundingRate": "-0.03750000", "fundingTime":
/// 1570608000000, "markPrice": "34287.54619963"}]`, oldest first. `markPrice` is `""` (or absent)
/// in Binance's oldest records. Rows come back sorted by time, one per time.
pub(crate) fn funding_rates(v: &Value) -> Result<Vec<FundingRate>, String> {
    let mut out = as_array(v, "fundingRate")?
        .iter()
        .enumerate()
        .map(|(i, row)| {
            (|| {
                let o = as_obj(row, "funding rate")?;
                let time = time_in_range("field `fundingTime`", int(o, "fundingTime")?)?;
                let mark_price = dec_opt(o, "markPrice")?;
                if mark_price.is_some_and(|p| p <= Decimal::ZERO) {
                    return Err(format!(
                        "field `markPrice` {mark_price:?} is not a positive price"
                    ));
                }
                Ok(FundingRate {
                    time,
                    rate: dec(o, "fundingRate")?,
                    mark_price,
                })
            })()
            .map_err(|e: String| format!("[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    out.sort_by_key(|r| r.time);
    out.dedup_by_key(|r| r.time);
    Ok(out)
}

/// `GET /fapi/v1/exchangeInfo`: symbol name → its JSON object (filters parsed on demand so one
/// odd symbol never breaks the others).
pub(crate) fn exchange_symbols(
    v: &Value,
) -> Result<std::collections::HashMap<String, Value>, String> {
    let symbols = get(as_obj(v, "exchangeInfo")?, "symbols")?;
    let mut out = std::collections::HashMap::new();
    for (i, s) in as_array(symbols, "exchangeInfo.symbols")?
        .iter()
        .enumerate()
    {
        let name = string(as_obj(s, "exchangeInfo symbol")?, "symbol")
            .map_err(|e| format!("symbols[{i}]: {e}"))?;
        out.insert(name, s.clone());
    }
    Ok(out)
}

/// PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE and MIN_NOTIONAL of one exchangeInfo symbol.
/// Any missing filter or field is `Fatal`, naming symbol and filter: rounding rules are never guessed.
pub(crate) fn symbol_filters(sym: &Symbol, v: &Value) -> Result<SymbolFilters, ExchangeError> {
    let fatal = |what: String| {
        ExchangeError::Fatal(format!(
            "exchangeInfo for {sym}: {what}; refusing to guess trading rules"
        ))
    };
    let o = v
        .as_object()
        .ok_or_else(|| fatal("symbol entry is not an object".into()))?;
    let filters = o
        .get("filters")
        .and_then(|f| f.as_array())
        .ok_or_else(|| fatal("no `filters` array".into()))?;
    let find = |ty: &str| {
        filters
            .iter()
            .filter_map(|f| f.as_object())
            .find(|f| f.get("filterType").and_then(|t| t.as_str()) == Some(ty))
            .ok_or_else(|| fatal(format!("filter {ty} is missing")))
    };
    let field = |f: &Obj, ty: &str, key: &str| {
        dec(f, key)
            .map(|d| d.normalize())
            .map_err(|e| fatal(format!("filter {ty}: {e}")))
    };
    let price = find("PRICE_FILTER")?;
    let lot = find("LOT_SIZE")?;
    let market = find("MARKET_LOT_SIZE")?;
    let notional = find("MIN_NOTIONAL")?;
    let out = SymbolFilters {
        symbol: sym.clone(),
        tick_size: field(price, "PRICE_FILTER", "tickSize")?,
        min_price: field(price, "PRICE_FILTER", "minPrice")?,
        max_price: field(price, "PRICE_FILTER", "maxPrice")?,
        step_size: field(lot, "LOT_SIZE", "stepSize")?,
        min_qty: field(lot, "LOT_SIZE", "minQty")?,
        max_qty: field(lot, "LOT_SIZE", "maxQty")?,
        market_step_size: field(market, "MARKET_LOT_SIZE", "stepSize")?,
        market_min_qty: field(market, "MARKET_LOT_SIZE", "minQty")?,
        market_max_qty: field(market, "MARKET_LOT_SIZE", "maxQty")?,
        min_notional: field(notional, "MIN_NOTIONAL", "notional")?,
    };
    if out.tick_size <= Decimal::ZERO
        || out.step_size <= Decimal::ZERO
        || out.market_step_size <= Decimal::ZERO
    {
        return Err(fatal("a tickSize/stepSize is zero".into()));
    }
    Ok(out)
}

/// `GET /fapi/v3/account` (single-asset mode figures are USDT).
/// `GET /fapi/v1/ticker/price`: `{"symbol":"BTCUSDT","price":"6000.01","time":1589437530011}`.
pub(crate) fn ticker_price(v: &Value) -> Result<Price, String> {
    let o = as_obj(v, "ticker price")?;
    Ok(Price::new(dec(o, "price")?))
}

pub(crate) fn account(v: &Value) -> Result<AccountSnapshot, String> {
    let o = as_obj(v, "account")?;
    Ok(AccountSnapshot {
        equity: Notional::new(dec(o, "totalMarginBalance")?),
        wallet_balance: Notional::new(dec(o, "totalWalletBalance")?),
        available_balance: Notional::new(dec(o, "availableBalance")?),
        total_initial_margin: Notional::new(dec(o, "totalInitialMargin")?),
        unrealized_pnl: Notional::new(dec(o, "totalUnrealizedProfit")?),
    })
}

/// `GET /fapi/v3/positionRisk`: non-zero rows only. V3 rows carry no `leverage`; it is read when
/// present (v2-shaped peers) and left `None` otherwise.
pub(crate) fn positions(v: &Value) -> Result<Vec<ExchangePosition>, String> {
    let mut out = Vec::new();
    for (i, row) in as_array(v, "positionRisk")?.iter().enumerate() {
        let p = (|| {
            let o = as_obj(row, "position")?;
            let amount = dec(o, "positionAmt")?;
            if amount.is_zero() {
                return Ok(None);
            }
            let leverage = match int_opt(o, "leverage")? {
                None => None,
                Some(l) => Some(
                    u32::try_from(l).map_err(|_| format!("field `leverage` out of range: {l}"))?,
                ),
            };
            Ok::<_, String>(Some(ExchangePosition {
                symbol: symbol(o, "symbol")?,
                amount: amount.normalize(),
                entry_price: Price::new(dec(o, "entryPrice")?),
                mark_price: Price::new(dec(o, "markPrice")?),
                unrealized_pnl: Notional::new(dec(o, "unRealizedProfit")?),
                liquidation_price: Price::new(dec(o, "liquidationPrice")?),
                leverage,
                update_time: int(o, "updateTime")?,
            }))
        })()
        .map_err(|e| format!("positions[{i}]: {e}"))?;
        out.extend(p);
    }
    Ok(out)
}

fn margin_type(s: &str) -> Result<MarginType, String> {
    match s.to_ascii_uppercase().as_str() {
        "ISOLATED" => Ok(MarginType::Isolated),
        "CROSSED" | "CROSS" => Ok(MarginType::Crossed),
        _ => Err(format!("field `marginType` has an unknown value {s:?}")),
    }
}

/// `GET /fapi/v1/symbolConfig?symbol=`: an array of
/// `{"symbol","marginType","isAutoAddMargin","leverage","maxNotionalValue"}`.
pub(crate) fn symbol_config(v: &Value, sym: &Symbol) -> Result<SymbolConfig, String> {
    let row = as_array(v, "symbolConfig")?
        .iter()
        .filter_map(|r| r.as_object())
        .find(|r| r.get("symbol").and_then(|s| s.as_str()) == Some(sym.as_str()))
        .ok_or_else(|| format!("no row for {sym}"))?;
    let leverage = int(row, "leverage")?;
    Ok(SymbolConfig {
        symbol: sym.clone(),
        leverage: u32::try_from(leverage)
            .map_err(|_| format!("field `leverage` out of range: {leverage}"))?,
        margin_type: margin_type(&string(row, "marginType")?)?,
    })
}

/// `POST /fapi/v1/order` (RESULT) and `GET /fapi/v1/order`.
///
/// Binance marks `avgPrice`/`cumQuote` "will be removed after CM migration": when `avgPrice` is
/// absent the average is derived from `cumQuote / executedQty`, and is zero when neither exists.
pub(crate) fn order(v: &Value) -> Result<OrderInfo, String> {
    let o = as_obj(v, "order")?;
    let executed = dec(o, "executedQty")?;
    let avg = match dec_opt(o, "avgPrice")? {
        Some(p) => p,
        None => match dec_opt(o, "cumQuote")? {
            Some(q) if !executed.is_zero() => q.checked_div(executed).ok_or_else(|| {
                format!("`cumQuote` {q} / `executedQty` {executed} is out of range")
            })?,
            _ => Decimal::ZERO,
        },
    };
    let update_time = match int_opt(o, "updateTime")? {
        Some(t) => t,
        None => int(o, "time")?,
    };
    Ok(OrderInfo {
        symbol: symbol(o, "symbol")?,
        order_id: int(o, "orderId")?,
        client_id: string(o, "clientOrderId")?,
        side: enum_field::<OrderSide>(o, "side")?,
        status: enum_field::<OrderStatus>(o, "status")?,
        orig_qty: Qty::new(dec(o, "origQty")?),
        executed_qty: Qty::new(executed),
        avg_price: Price::new(avg.normalize()),
        reduce_only: flag(o, "reduceOnly")?,
        update_time,
    })
}

/// `GET /fapi/v1/allOrders`: an array of orders.
pub(crate) fn orders(v: &Value) -> Result<Vec<OrderInfo>, String> {
    as_array(v, "allOrders")?
        .iter()
        .enumerate()
        .map(|(i, row)| order(row).map_err(|e| format!("[{i}]: {e}")))
        .collect()
}

/// The Algo API's `orderType` (+ `callbackRate`) as an [`AlgoKind`].
///
/// `STOP` and `TAKE_PROFIT` (limit-after-trigger, only ever placed by hand) are reported as
/// their market counterparts: for position sync what matters is that a protective trigger
/// exists on that side, and the port has no limit variant.
fn algo_kind(o: &Obj) -> Result<AlgoKind, String> {
    let ty = string(o, "orderType")?;
    match ty.as_str() {
        "STOP_MARKET" | "STOP" => Ok(AlgoKind::StopMarket),
        "TAKE_PROFIT_MARKET" | "TAKE_PROFIT" => Ok(AlgoKind::TakeProfitMarket),
        // Query/list answers do not echo `callbackRate`; zero then means "not reported".
        "TRAILING_STOP_MARKET" => Ok(AlgoKind::TrailingStopMarket {
            callback_rate: dec_opt(o, "callbackRate")?.unwrap_or_default().normalize(),
        }),
        other => Err(format!(
            "field `orderType` has an unsupported value {other:?}"
        )),
    }
}

/// One algo order from `POST/GET /fapi/v1/algoOrder` or `GET /fapi/v1/openAlgoOrders`.
pub(crate) fn algo_order(v: &Value) -> Result<AlgoOrderInfo, String> {
    let o = as_obj(v, "algo order")?;
    let kind = algo_kind(o)?;
    let mut trigger = dec_nonzero(o, "triggerPrice")?;
    if trigger.is_none() && matches!(kind, AlgoKind::TrailingStopMarket { .. }) {
        trigger = dec_nonzero(o, "activatePrice")?;
    }
    let update_time = match int_opt(o, "updateTime")? {
        Some(t) => t,
        None => int(o, "createTime")?,
    };
    Ok(AlgoOrderInfo {
        algo_id: int(o, "algoId")?,
        client_algo_id: string(o, "clientAlgoId")?,
        symbol: symbol(o, "symbol")?,
        side: enum_field::<OrderSide>(o, "side")?,
        kind,
        status: enum_field::<AlgoStatus>(o, "algoStatus")?,
        trigger_price: trigger.map(|d| Price::new(d.normalize())),
        qty: dec_nonzero(o, "quantity")?.map(|d| Qty::new(d.normalize())),
        close_position: flag(o, "closePosition")?,
        reduce_only: flag(o, "reduceOnly")?,
        // `""` until triggered, then the id of the order placed in the matching engine.
        actual_order_id: int_opt(o, "actualOrderId")?,
        // `"0.00000"` until filled.
        actual_price: dec_nonzero(o, "actualPrice")?.map(|d| Price::new(d.normalize())),
        update_time,
    })
}

pub(crate) fn algo_orders(v: &Value) -> Result<Vec<AlgoOrderInfo>, String> {
    as_array(v, "algo orders")?
        .iter()
        .enumerate()
        .map(|(i, row)| algo_order(row).map_err(|e| format!("[{i}]: {e}")))
        .collect()
}

/// `DELETE /fapi/v1/algoOrder`: `{"algoId","clientAlgoId","code":"200","msg":"success"}`.
/// Returns the `{code,msg}` when the answer reports a failure despite HTTP 200.
pub(crate) fn cancel_algo_failure(v: &Value) -> Result<Option<(i64, String)>, String> {
    let o = as_obj(v, "cancel algo order")?;
    match int_opt(o, "code")? {
        None | Some(200) | Some(0) => Ok(None),
        Some(code) => Ok(Some((
            code,
            o.get("msg")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_string(),
        ))),
    }
}

/// `GET /fapi/v1/userTrades`.
pub(crate) fn user_trades(v: &Value) -> Result<Vec<UserTrade>, String> {
    as_array(v, "userTrades")?
        .iter()
        .enumerate()
        .map(|(i, row)| {
            (|| {
                let o = as_obj(row, "trade")?;
                Ok(UserTrade {
                    symbol: symbol(o, "symbol")?,
                    id: int(o, "id")?,
                    order_id: int(o, "orderId")?,
                    side: enum_field::<OrderSide>(o, "side")?,
                    price: Price::new(dec(o, "price")?),
                    qty: Qty::new(dec(o, "qty")?),
                    realized_pnl: Notional::new(dec(o, "realizedPnl")?),
                    commission: Notional::new(dec(o, "commission")?),
                    commission_asset: string(o, "commissionAsset")?,
                    time: int(o, "time")?,
                })
            })()
            .map_err(|e: String| format!("[{i}]: {e}"))
        })
        .collect()
}

/// `GET /fapi/v1/income`. `symbol` and `tradeId` are `""` when not applicable; `tranId` is a
/// number in some answers and a string in others.
pub(crate) fn income(v: &Value) -> Result<Vec<Income>, String> {
    as_array(v, "income")?
        .iter()
        .enumerate()
        .map(|(i, row)| {
            (|| {
                let o = as_obj(row, "income row")?;
                let sym = match o.get("symbol") {
                    Some(Value::String(s)) if !s.is_empty() => Some(Symbol::new(s.clone())),
                    _ => None,
                };
                let trade_id = match o.get("tradeId") {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                };
                Ok(Income {
                    symbol: sym,
                    income_type: string(o, "incomeType")?,
                    income: Notional::new(dec(o, "income")?),
                    asset: string(o, "asset")?,
                    time: int(o, "time")?,
                    tran_id: int(o, "tranId")?,
                    trade_id,
                })
            })()
            .map_err(|e: String| format!("[{i}]: {e}"))
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn json(s: &str) -> Value {
        serde_json::from_str(s).expect("test JSON")
    }

    #[test]
    fn klines_drop_the_open_candle_and_keep_the_limit() {
        // 15m rows; the last one opened at 12:00 and is still forming at 12:05.
        let t0 = 1_751_626_800_000_i64; // 11:00 UTC
        let m15 = 900_000;
        let rows: Vec<String> = (0..5)
            .map(|k| {
                let o = t0 + k * m15;
                format!(
                    r#"[{o},"100.{k}0","101.5","99.25","100.{k}5","12.345",{},"1234.5",42,"6.1","610.5","0"]"#,
                    o + m15 - 1
                )
            })
            .collect();
        let v = json(&format!("[{}]", rows.join(",")));
        let now = t0 + 4 * m15 + 300_000; // 12:05
        let all = closed_klines(&v, Timeframe::M15, 10, now).unwrap();
        assert_eq!(all.len(), 4, "the forming 12:00 candle is dropped");
        assert_eq!(all[0].open_time, t0);
        assert_eq!(all[3].open_time, t0 + 3 * m15);
        assert_eq!(all[1].open, Price::new(dec!(100.10)));
        assert_eq!(all[1].close, Price::new(dec!(100.15)));
        assert_eq!(all[1].high, Price::new(dec!(101.5)));
        assert_eq!(all[1].low, Price::new(dec!(99.25)));
        assert_eq!(all[1].volume, dec!(12.345));

        let two = closed_klines(&v, Timeframe::M15, 2, now).unwrap();
        assert_eq!(
            two.iter().map(|c| c.open_time).collect::<Vec<_>>(),
            vec![t0 + 2 * m15, t0 + 3 * m15],
            "newest closed candles, oldest first"
        );
        // Exactly at the close of the 12:00 candle it counts as closed.
        let at_close = closed_klines(&v, Timeframe::M15, 10, t0 + 5 * m15).unwrap();
        assert_eq!(at_close.len(), 5);

        let bad = json(r#"[[1751626800000,"abc","1","1","1","1",0,"0",0,"0","0","0"]]"#);
        let e = closed_klines(&bad, Timeframe::M15, 10, now).unwrap_err();
        assert!(e.contains("open"), "{e}");
    }

    /// An open time near `i64::MAX` used to overflow `open + interval` (wrapping to a negative
    /// close in release builds, so the row counted as closed): it is an error naming the value.
    #[test]
    fn kline_times_and_prices_are_range_checked() {
        let now = 1_751_630_000_000_i64;
        let row = |t: &str, o: &str, h: &str, l: &str, c: &str, v: &str| {
            json(&format!(
                r#"[[{t},"{o}","{h}","{l}","{c}","{v}",0,"0",1,"0","0","0"]]"#
            ))
        };
        for t in [
            i64::MAX.to_string(),
            (i64::MAX - 899_999).to_string(),
            "4102444800001".to_string(),
            "0".to_string(),
            "-900000".to_string(),
            i64::MIN.to_string(),
            "1483228799999".to_string(),
        ] {
            let v = row(&t, "1", "2", "0.5", "1.5", "10");
            for tf in Timeframe::ALL {
                for at in [now, i64::MAX, i64::MIN] {
                    let e = closed_klines(&v, tf, 10, at).unwrap_err();
                    assert!(e.contains("open time") && e.contains(&t), "{e}");
                }
            }
        }
        // The edges of the range are accepted.
        let first = row("1483228800000", "1", "2", "0.5", "1.5", "0");
        assert_eq!(
            closed_klines(&first, Timeframe::H4, 10, now).unwrap().len(),
            1
        );
        let last = row("4102444800000", "1", "2", "0.5", "1.5", "0");
        assert!(closed_klines(&last, Timeframe::M1, 10, now)
            .unwrap()
            .is_empty());

        let t = "1751626800000";
        for (v, field, value) in [
            (row(t, "0", "2", "0.5", "1.5", "1"), "open", "0"),
            (row(t, "1", "-2", "0.5", "1.5", "1"), "high", "-2"),
            (row(t, "1", "2", "-0.5", "1.5", "1"), "low", "-0.5"),
            (row(t, "1", "2", "0.5", "0.000", "1"), "close", "0.000"),
            (row(t, "1", "2", "0.5", "1.5", "-1"), "volume", "-1"),
        ] {
            let e = closed_klines(&v, Timeframe::M15, 10, now).unwrap_err();
            assert!(e.contains(field) && e.contains(value), "{e}");
        }
        let e =
            closed_klines(&row(t, "NaN", "2", "1", "1", "1"), Timeframe::M15, 10, now).unwrap_err();
        assert!(e.contains("open") && e.contains("NaN"), "{e}");
    }

    #[test]
    fn server_time_is_range_checked() {
        assert_eq!(
            server_time(&json(r#"{"serverTime": 1499827319559}"#)).unwrap(),
            1_499_827_319_559
        );
        for bad in ["0", "-1", "9223372036854775807", "4102444800001"] {
            let e = server_time(&json(&format!(r#"{{"serverTime": {bad}}}"#))).unwrap_err();
            assert!(e.contains("serverTime") && e.contains(bad), "{e}");
        }
    }

    /// Shape of Binance's exchangeInfo symbol entry (BTCUSDT values as on fapi).
    pub(crate) const BTC_INFO: &str = r#"{
      "timezone": "UTC", "serverTime": 1751630405000, "rateLimits": [], "exchangeFilters": [], "assets": [],
      "symbols": [{
        "symbol": "BTCUSDT", "pair": "BTCUSDT", "contractType": "PERPETUAL", "status": "TRADING",
        "baseAsset": "BTC", "quoteAsset": "USDT", "marginAsset": "USDT", "pricePrecision": 2,
        "quantityPrecision": 3, "triggerProtect": "0.0500",
        "filters": [
          {"filterType": "PRICE_FILTER", "maxPrice": "4529764", "minPrice": "556.80", "tickSize": "0.10"},
          {"filterType": "LOT_SIZE", "maxQty": "1000", "minQty": "0.001", "stepSize": "0.001"},
          {"filterType": "MARKET_LOT_SIZE", "maxQty": "120", "minQty": "0.001", "stepSize": "0.001"},
          {"filterType": "MAX_NUM_ORDERS", "limit": 200},
          {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
          {"filterType": "MIN_NOTIONAL", "notional": "100"},
          {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500", "multiplierDown": "0.9500", "multiplierDecimal": "4"}
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"]
      }, {
        "symbol": "ODDUSDT", "status": "TRADING",
        "filters": [
          {"filterType": "PRICE_FILTER", "maxPrice": "300", "minPrice": "0.0001", "tickSize": "0.0001"},
          {"filterType": "LOT_SIZE", "maxQty": "10000000", "minQty": "1", "stepSize": "1"},
          {"filterType": "MIN_NOTIONAL", "notional": "5"}
        ]
      }]
    }"#;

    #[test]
    fn exchange_info_filters() {
        let syms = exchange_symbols(&json(BTC_INFO)).unwrap();
        let btc = Symbol::new("BTCUSDT");
        let f = symbol_filters(&btc, &syms["BTCUSDT"]).unwrap();
        assert_eq!(f.tick_size, dec!(0.1));
        assert_eq!(f.tick_size.to_string(), "0.1", "normalized");
        assert_eq!(f.min_price, dec!(556.8));
        assert_eq!(f.max_price, dec!(4529764));
        assert_eq!(f.step_size, dec!(0.001));
        assert_eq!(f.min_qty, dec!(0.001));
        assert_eq!(f.max_qty, dec!(1000));
        assert_eq!(f.market_step_size, dec!(0.001));
        assert_eq!(f.market_min_qty, dec!(0.001));
        assert_eq!(f.market_max_qty, dec!(120));
        assert_eq!(f.min_notional, dec!(100));

        let odd = Symbol::new("ODDUSDT");
        match symbol_filters(&odd, &syms["ODDUSDT"]) {
            Err(ExchangeError::Fatal(m)) => {
                assert!(
                    m.contains("ODDUSDT") && m.contains("MARKET_LOT_SIZE"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
        let mut broken = json(BTC_INFO)["symbols"][0].clone();
        broken["filters"][5] = json(r#"{"filterType": "MIN_NOTIONAL", "minNotional": "100"}"#);
        match symbol_filters(&btc, &broken) {
            Err(ExchangeError::Fatal(m)) => {
                assert!(
                    m.contains("BTCUSDT") && m.contains("MIN_NOTIONAL") && m.contains("notional"),
                    "{m}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn account_v3() {
        // Binance "Account Information V3" example (single-asset mode).
        let v = json(
            r#"{
            "totalInitialMargin": "12.50000000", "totalMaintMargin": "0.50000000",
            "totalWalletBalance": "103.12345678", "totalUnrealizedProfit": "-1.23000000",
            "totalMarginBalance": "101.89345678", "totalPositionInitialMargin": "12.50000000",
            "totalOpenOrderInitialMargin": "0.00000000", "totalCrossWalletBalance": "103.12345678",
            "totalCrossUnPnl": "-1.23000000", "availableBalance": "89.39345678",
            "maxWithdrawAmount": "89.39345678",
            "assets": [{"asset": "USDT", "walletBalance": "103.12345678", "updateTime": 1625474304765}],
            "positions": [{"symbol": "BTCUSDT", "positionSide": "BOTH", "positionAmt": "0.001"}]
        }"#,
        );
        let a = account(&v).unwrap();
        assert_eq!(a.equity, Notional::new(dec!(101.89345678)));
        assert_eq!(a.wallet_balance, Notional::new(dec!(103.12345678)));
        assert_eq!(a.available_balance, Notional::new(dec!(89.39345678)));
        assert_eq!(a.total_initial_margin, Notional::new(dec!(12.5)));
        assert_eq!(a.unrealized_pnl, Notional::new(dec!(-1.23)));
        let e = account(&json(r#"{"totalWalletBalance": "1"}"#)).unwrap_err();
        assert!(e.contains("totalMarginBalance"), "{e}");
    }

    #[test]
    fn position_risk_v3_keeps_non_zero_rows() {
        // Binance "Position Information V3" example rows plus a flat one.
        let v = json(
            r#"[
          {"symbol": "ADAUSDT", "positionSide": "BOTH", "positionAmt": "30", "entryPrice": "0.385",
           "breakEvenPrice": "0.385077", "markPrice": "0.41047590", "unRealizedProfit": "0.76427700",
           "liquidationPrice": "0", "isolatedMargin": "0", "notional": "12.31427700", "marginAsset": "USDT",
           "isolatedWallet": "0", "initialMargin": "0.61571385", "maintMargin": "0.08004280",
           "positionInitialMargin": "0.61571385", "openOrderInitialMargin": "0", "adl": 2,
           "bidNotional": "0", "askNotional": "0", "updateTime": 1720736417660},
          {"symbol": "COMPUSDT", "positionSide": "BOTH", "positionAmt": "-1.000", "entryPrice": "70.92841",
           "breakEvenPrice": "70.900038636", "markPrice": "49.72023376", "unRealizedProfit": "21.20817624",
           "liquidationPrice": "2260.56757210", "notional": "-49.72023376", "updateTime": 1708943511656},
          {"symbol": "ETHUSDT", "positionSide": "BOTH", "positionAmt": "0.000", "entryPrice": "0.0",
           "markPrice": "2500", "unRealizedProfit": "0", "liquidationPrice": "0", "updateTime": 0}
        ]"#,
        );
        let p = positions(&v).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].symbol, Symbol::new("ADAUSDT"));
        assert_eq!(p[0].amount, dec!(30));
        assert_eq!(p[0].entry_price, Price::new(dec!(0.385)));
        assert_eq!(p[0].mark_price, Price::new(dec!(0.4104759)));
        assert_eq!(p[0].unrealized_pnl, Notional::new(dec!(0.764277)));
        assert_eq!(p[0].leverage, None, "v3 carries no leverage");
        assert_eq!(p[0].update_time, 1_720_736_417_660);
        assert_eq!(p[1].amount, dec!(-1));
        assert_eq!(p[1].liquidation_price, Price::new(dec!(2260.5675721)));

        let with_lev = json(
            r#"[{"symbol": "BTCUSDT", "positionAmt": "0.002", "entryPrice": "60000", "markPrice": "61000",
            "unRealizedProfit": "2", "liquidationPrice": "30000", "leverage": "10", "updateTime": 1}]"#,
        );
        assert_eq!(positions(&with_lev).unwrap()[0].leverage, Some(10));
        let e = positions(&json(r#"[{"symbol": "X", "positionAmt": "1"}]"#)).unwrap_err();
        assert!(
            e.contains("positions[0]") && e.contains("entryPrice"),
            "{e}"
        );
    }

    #[test]
    fn symbol_config_row() {
        let v = json(
            r#"[{"symbol": "BTCUSDT", "marginType": "CROSSED", "isAutoAddMargin": "false",
                 "leverage": 21, "maxNotionalValue": "1000000"}]"#,
        );
        let c = symbol_config(&v, &Symbol::new("BTCUSDT")).unwrap();
        assert_eq!(c.leverage, 21);
        assert_eq!(c.margin_type, MarginType::Crossed);
        let iso = json(r#"[{"symbol": "ETHUSDT", "marginType": "ISOLATED", "leverage": "5"}]"#);
        assert_eq!(
            symbol_config(&iso, &Symbol::new("ETHUSDT"))
                .unwrap()
                .margin_type,
            MarginType::Isolated
        );
        assert!(symbol_config(&v, &Symbol::new("ETHUSDT"))
            .unwrap_err()
            .contains("ETHUSDT"));
    }

    #[test]
    fn market_order_result() {
        // New Order response with newOrderRespType=RESULT for a filled MARKET order.
        let v = json(
            r#"{"clientOrderId": "al-EN-0a1b2c3d4e5f-1k2j3", "cumQty": "0.002", "cumQuote": "217.9886",
            "executedQty": "0.002", "orderId": 4054219883, "avgPrice": "108994.30", "origQty": "0.002",
            "price": "0.00", "reduceOnly": false, "side": "BUY", "positionSide": "BOTH", "status": "FILLED",
            "stopPrice": "0.00", "closePosition": false, "symbol": "BTCUSDT", "timeInForce": "GTC",
            "type": "MARKET", "origType": "MARKET", "updateTime": 1751630405123, "workingType": "CONTRACT_PRICE",
            "priceProtect": false, "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER", "goodTillDate": 0}"#,
        );
        let o = order(&v).unwrap();
        assert_eq!(o.order_id, 4_054_219_883);
        assert_eq!(o.client_id, "al-EN-0a1b2c3d4e5f-1k2j3");
        assert_eq!(o.side, OrderSide::Buy);
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.executed_qty, Qty::new(dec!(0.002)));
        assert_eq!(o.avg_price, Price::new(dec!(108994.3)));
        assert!(!o.reduce_only);
        assert_eq!(o.update_time, 1_751_630_405_123);

        // Query Order example (TRAILING_STOP_MARKET, NEW) uses `time`/`updateTime` too.
        let q = json(
            r#"{"avgPrice": "0.00000", "clientOrderId": "abc", "cumQuote": "0", "executedQty": "0",
            "orderId": 1917641, "origQty": "0.40", "origType": "TRAILING_STOP_MARKET", "price": "0",
            "reduceOnly": false, "side": "BUY", "positionSide": "SHORT", "status": "NEW", "stopPrice": "9300",
            "closePosition": false, "symbol": "BTCUSDT", "time": 1579276756075, "timeInForce": "GTC",
            "type": "TRAILING_STOP_MARKET", "activatePrice": "9020", "priceRate": "0.3",
            "updateTime": 1579276756075, "workingType": "CONTRACT_PRICE", "priceProtect": false}"#,
        );
        let o = order(&q).unwrap();
        assert_eq!(o.status, OrderStatus::New);
        assert_eq!(o.avg_price, Price::new(Decimal::ZERO));
        assert_eq!(o.orig_qty, Qty::new(dec!(0.4)));

        // After the CM migration `avgPrice` may be gone: derive it from cumQuote.
        let no_avg = json(
            r#"{"clientOrderId": "x", "cumQuote": "217.9886", "executedQty": "0.002", "orderId": 1,
            "origQty": "0.002", "reduceOnly": true, "side": "SELL", "status": "FILLED", "symbol": "BTCUSDT",
            "updateTime": 5}"#,
        );
        let o = order(&no_avg).unwrap();
        assert_eq!(o.avg_price, Price::new(dec!(108994.3)));
        assert!(o.reduce_only);

        let bad_status = json(
            r#"{"clientOrderId": "x", "executedQty": "0", "orderId": 1, "origQty": "1", "side": "SELL",
            "status": "WEIRD", "symbol": "BTCUSDT", "updateTime": 5}"#,
        );
        assert!(order(&bad_status).unwrap_err().contains("status"));
    }

    /// A derived average beyond `Decimal`'s range is an error, not a panic as it was before
    /// (`fuzz/corpus/order/cum_quote_over_tiny_qty.json`).
    #[test]
    fn order_average_out_of_range_is_an_error() {
        let v = json(
            r#"{"clientOrderId": "x", "cumQuote": "79228162514264337593543950335",
            "executedQty": "0.0000000000000000000000000001", "orderId": 1, "origQty": "1",
            "side": "SELL", "status": "FILLED", "symbol": "BTCUSDT", "updateTime": 5}"#,
        );
        let e = order(&v).unwrap_err();
        assert!(e.contains("cumQuote") && e.contains("executedQty"), "{e}");
    }

    #[test]
    fn algo_orders_from_documented_shapes() {
        // New Algo Order response example (trailing fields as documented: "" when not trailing).
        let placed = json(
            r#"{"algoId": 2146760, "clientAlgoId": "6B2I9XVcJpCjqPAJ4YoFX7", "algoType": "CONDITIONAL",
            "orderType": "STOP_MARKET", "symbol": "BNBUSDT", "side": "SELL", "positionSide": "BOTH",
            "timeInForce": "GTC", "quantity": "0.01", "algoStatus": "NEW", "triggerPrice": "750.000",
            "price": "0.000", "icebergQuantity": null, "selfTradePreventionMode": "EXPIRE_MAKER",
            "workingType": "MARK_PRICE", "priceMatch": "NONE", "closePosition": false, "priceProtect": false,
            "reduceOnly": true, "activatePrice": "", "callbackRate": "", "createTime": 1750485492076,
            "updateTime": 1750485492076, "triggerTime": 0, "goodTillDate": 0}"#,
        );
        let a = algo_order(&placed).unwrap();
        assert_eq!(a.algo_id, 2_146_760);
        assert_eq!(a.client_algo_id, "6B2I9XVcJpCjqPAJ4YoFX7");
        assert_eq!(a.kind, AlgoKind::StopMarket);
        assert_eq!(a.status, AlgoStatus::New);
        assert_eq!(a.side, OrderSide::Sell);
        assert_eq!(a.trigger_price, Some(Price::new(dec!(750))));
        assert_eq!(a.qty, Some(Qty::new(dec!(0.01))));
        assert!(a.reduce_only && !a.close_position);
        assert_eq!(a.actual_order_id, None);
        assert_eq!(a.actual_price, None);

        // Query Algo Order example after triggering and filling.
        let queried = json(
            r#"{"algoId": 2146761, "clientAlgoId": "al-SL-0a1b2c3d4e5f-1k2j3", "algoType": "CONDITIONAL",
            "orderType": "STOP_MARKET", "symbol": "BTCUSDT", "side": "SELL", "positionSide": "BOTH",
            "timeInForce": "GTC", "quantity": "0.000", "algoStatus": "FINISHED", "actualOrderId": "4054219999",
            "actualPrice": "105012.40", "actualType": "MARKET", "actualQty": "0.002", "triggerPrice": "105000.0",
            "price": "0.0", "icebergQuantity": null, "tpOrderType": "", "selfTradePreventionMode": "NONE",
            "workingType": "MARK_PRICE", "priceMatch": "NONE", "closePosition": true, "priceProtect": false,
            "reduceOnly": false, "createTime": 1750485492076, "updateTime": 1750514545091,
            "triggerTime": 1750514545000, "goodTillDate": 0}"#,
        );
        let a = algo_order(&queried).unwrap();
        assert_eq!(a.status, AlgoStatus::Finished);
        assert!(a.close_position);
        assert_eq!(a.qty, None, "closePosition orders carry no quantity");
        assert_eq!(a.actual_order_id, Some(4_054_219_999));
        assert_eq!(a.actual_price, Some(Price::new(dec!(105012.4))));
        assert_eq!(a.update_time, 1_750_514_545_091);

        // Current All Algo Open Orders example (TAKE_PROFIT limit reported as a take-profit).
        let list = json(
            r#"[{"algoId": 2148627, "clientAlgoId": "MRumok0dkhrP4kCm12AHaB", "algoType": "CONDITIONAL",
            "orderType": "TAKE_PROFIT", "symbol": "BNBUSDT", "side": "SELL", "positionSide": "BOTH",
            "timeInForce": "GTC", "quantity": "0.01", "algoStatus": "NEW", "actualOrderId": "",
            "actualPrice": "0.00000", "triggerPrice": "750.000", "price": "750.000", "icebergQuantity": null,
            "tpTriggerPrice": "0.000", "tpPrice": "0.000", "slTriggerPrice": "0.000", "slPrice": "0.000",
            "tpOrderType": "", "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": "CONTRACT_PRICE",
            "priceMatch": "NONE", "closePosition": false, "priceProtect": false, "reduceOnly": false,
            "createTime": 1750514941540, "updateTime": 1750514941540, "triggerTime": 0, "goodTillDate": 0},
            {"algoId": 7, "clientAlgoId": "trail-1", "orderType": "TRAILING_STOP_MARKET", "symbol": "BTCUSDT",
            "side": "SELL", "quantity": "0.002", "algoStatus": "NEW", "actualOrderId": "", "actualPrice": "0",
            "triggerPrice": "", "activatePrice": "110000", "callbackRate": "1.5", "reduceOnly": true,
            "createTime": 10, "updateTime": 11}]"#,
        );
        let all = algo_orders(&list).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].kind, AlgoKind::TakeProfitMarket);
        assert!(all[0].status.is_open());
        assert_eq!(all[0].actual_order_id, None);
        assert_eq!(
            all[1].kind,
            AlgoKind::TrailingStopMarket {
                callback_rate: dec!(1.5)
            }
        );
        assert_eq!(
            all[1].trigger_price,
            Some(Price::new(dec!(110000))),
            "activation price"
        );

        let bad = json(r#"[{"algoId": 1, "clientAlgoId": "x", "orderType": "ICEBERG"}]"#);
        let e = algo_orders(&bad).unwrap_err();
        assert!(e.contains("[0]") && e.contains("ICEBERG"), "{e}");

        assert_eq!(
            cancel_algo_failure(&json(
                r#"{"algoId": 1, "clientAlgoId": "x", "code": "200", "msg": "success"}"#
            ))
            .unwrap(),
            None
        );
        assert_eq!(
            cancel_algo_failure(&json(r#"{"code": -2011, "msg": "Unknown order sent."}"#)).unwrap(),
            Some((-2011, "Unknown order sent.".to_string()))
        );
    }

    #[test]
    fn user_trades_and_income() {
        // Account Trade List example.
        let t = json(
            r#"[{"buyer": false, "commission": "-0.07819010", "commissionAsset": "USDT", "id": 698759,
            "maker": false, "orderId": 25851813, "price": "7819.01", "qty": "0.002", "quoteQty": "15.63802",
            "realizedPnl": "-0.91539999", "side": "SELL", "positionSide": "SHORT", "symbol": "BTCUSDT",
            "time": 1569514978020}]"#,
        );
        let t = user_trades(&t).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].id, 698_759);
        assert_eq!(t[0].order_id, 25_851_813);
        assert_eq!(t[0].side, OrderSide::Sell);
        assert_eq!(t[0].price, Price::new(dec!(7819.01)));
        assert_eq!(t[0].qty, Qty::new(dec!(0.002)));
        assert_eq!(t[0].realized_pnl, Notional::new(dec!(-0.91539999)));
        assert_eq!(t[0].commission, Notional::new(dec!(-0.0781901)));
        assert_eq!(t[0].commission_asset, "USDT");
        assert_eq!(t[0].time, 1_569_514_978_020);

        // Get Income History example: tranId as string in one row and number in the other.
        let i = json(
            r#"[{"symbol": "", "incomeType": "TRANSFER", "income": "-0.37500000", "asset": "USDT",
              "info": "TRANSFER", "time": 1570608000000, "tranId": "9689322392", "tradeId": ""},
             {"symbol": "BTCUSDT", "incomeType": "COMMISSION", "income": "-0.01000000", "asset": "USDT",
              "info": "COMMISSION", "time": 1570636800000, "tranId": 9689322393, "tradeId": "2059192"}]"#,
        );
        let i = income(&i).unwrap();
        assert_eq!(i[0].symbol, None);
        assert_eq!(i[0].trade_id, None);
        assert_eq!(i[0].tran_id, 9_689_322_392);
        assert_eq!(i[0].income, Notional::new(dec!(-0.375)));
        assert_eq!(i[1].symbol, Some(Symbol::new("BTCUSDT")));
        assert_eq!(i[1].income_type, "COMMISSION");
        assert_eq!(i[1].tran_id, 9_689_322_393);
        assert_eq!(i[1].trade_id.as_deref(), Some("2059192"));

        let e = income(&json(
            r#"[{"incomeType": "X", "income": "1", "asset": "USDT", "time": 1}]"#,
        ))
        .unwrap_err();
        assert!(e.contains("tranId"), "{e}");
    }

    #[test]
    fn funding_rates_from_the_documented_shape() {
        let v = json(
            r#"[{"symbol":"BTCUSDT","fundingRate":"-0.03750000","fundingTime":1570608000000,"markPrice":"34287.54619963"},
                {"symbol":"BTCUSDT","fundingRate":"0.00010000","fundingTime":1570636800000,"markPrice":""},
                {"symbol":"BTCUSDT","fundingRate":"0.00010000","fundingTime":1570579200000}]"#,
        );
        let rows = funding_rates(&v).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.time).collect::<Vec<_>>(),
            vec![1570579200000, 1570608000000, 1570636800000],
            "sorted by time"
        );
        assert_eq!(rows[1].rate.to_string(), "-0.03750000", "digits kept");
        assert_eq!(rows[1].mark_price.unwrap().to_string(), "34287.54619963");
        assert_eq!(rows[0].mark_price, None);
        assert_eq!(rows[2].mark_price, None);
        for (bad, want) in [
            (
                r#"[{"fundingRate":"0.1"}]"#,
                "[0]: missing field `fundingTime`",
            ),
            (
                r#"[{"fundingRate":"x","fundingTime":1570608000000}]"#,
                "`fundingRate`",
            ),
            (r#"[{"fundingRate":"0.1","fundingTime":5}]"#, "outside 2017"),
            (
                r#"[{"fundingRate":"0.1","fundingTime":1570608000000,"markPrice":"0"}]"#,
                "markPrice",
            ),
            (r#"{"code":-1121}"#, "expected a JSON array"),
        ] {
            let e = funding_rates(&json(bad)).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn server_time_field() {
        assert_eq!(
            server_time(&json(r#"{"serverTime": 1499827319559}"#)).unwrap(),
            1_499_827_319_559
        );
        assert!(server_time(&json(r#"{"time": 1}"#))
            .unwrap_err()
            .contains("serverTime"));
    }

    #[test]
    fn ticker_price_from_documented_shape() {
        let v =
            serde_json::json!({"symbol": "BTCUSDT", "price": "6000.01", "time": 1589437530011i64});
        assert_eq!(
            ticker_price(&v).unwrap(),
            Price::new("6000.01".parse().unwrap())
        );
        assert!(ticker_price(&serde_json::json!({"symbol": "BTCUSDT"})).is_err());
    }
}
