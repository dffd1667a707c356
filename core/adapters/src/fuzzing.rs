//! The parsers of outside input, one entry point per kind, for the fuzz targets (`fuzz/`, run with
//! `make fuzz`) and for `core/tests/fuzz_corpus.rs`, which replays the committed corpora
//! (`fuzz/corpus/<target>/`) through the same functions on the stable toolchain.
//!
//! Outside input is whatever Albra reads that another party wrote: Binance's JSON answers (klines,
//! account, positions, orders, algo orders, trades, income, exchangeInfo filters), the candle CSV
//! files, the TOML config and the Lambda event. Each function hands the bytes to the real parser
//! the way the program does (the Binance client reads a body as lossy UTF-8 text and parses it
//! with serde_json; a candle file is parsed from its bytes; the config is read as UTF-8 text; the
//! Lambda runtime parses the event from its bytes), returns quietly when the parser refuses the
//! input, and when the parser accepts it, checks what that parser promises: the value, written
//! back in the input's shape, parses to itself, and the parser's own checks hold (klines closed,
//! sorted and unique; positions non-zero; tick and step sizes positive; candles possible, sorted
//! and aligned; config values within their documented ranges). A panic here is a bug: the parser
//! crashed on outside input, or it accepted what it promises to refuse.

use crate::binance::parse;
use crate::lambda_event::ScheduleEvent;
use albra_core::config::Config;
use albra_core::data;
use albra_core::domain::{Candle, Symbol, Timeframe};
use albra_core::ports::{
    AccountSnapshot, AlgoKind, AlgoOrderInfo, ExchangePosition, Income, OrderInfo, SymbolFilters,
    UserTrade,
};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// A target: its name (the fuzz target's and its corpus folder's) and the function it runs.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 11] = [
    ("klines", klines),
    ("account", account),
    ("positions", positions),
    ("order", order),
    ("algo_order", algo_order),
    ("user_trades", user_trades),
    ("income", income),
    ("exchange_info", exchange_info),
    ("candle_csv", candle_csv),
    ("config", config),
    ("lambda_event", lambda_event),
];

/// A Binance answer body as the client parses it: text (invalid UTF-8 replaced), then JSON.
fn binance_json(data: &[u8]) -> Option<Value> {
    serde_json::from_str(&String::from_utf8_lossy(data)).ok()
}

/// `Decimal` equality that also requires the same scale (a normalized value stays normalized).
fn same_digits(a: Decimal, b: Decimal) -> bool {
    a == b && a.scale() == b.scale()
}

fn is_normalized(d: Decimal) -> bool {
    same_digits(d, d.normalize())
}

fn s(d: Decimal) -> String {
    d.to_string()
}

/// "Now" for the klines: a real instant (2025-07-04 12:00 UTC) and both extremes.
const KLINE_NOWS: [i64; 3] = [1_751_630_400_000, i64::MIN, i64::MAX];

/// `GET /fapi/v1/klines` for every timeframe at each of [`KLINE_NOWS`].
pub fn klines(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    let rows = v.as_array().map_or(0, Vec::len);
    for tf in Timeframe::ALL {
        for now in KLINE_NOWS {
            let Ok(all) = parse::closed_klines(&v, tf, usize::MAX, now) else {
                continue;
            };
            assert!(all.len() <= rows, "more candles than rows");
            for c in &all {
                assert!(
                    c.close_time(tf) <= now,
                    "a candle still open at {now}: {c:?}"
                );
            }
            for w in all.windows(2) {
                assert!(
                    w[0].open_time < w[1].open_time,
                    "not sorted and unique: {w:?}"
                );
            }
            for limit in [0, 1, 2] {
                let newest =
                    parse::closed_klines(&v, tf, limit, now).expect("parsed without limit");
                assert_eq!(
                    newest,
                    all[all.len().saturating_sub(limit)..],
                    "limit {limit}"
                );
            }
            let back: Vec<Value> = all.iter().map(|c| kline_row(c, tf)).collect();
            assert_eq!(
                parse::closed_klines(&Value::Array(back), tf, usize::MAX, now).as_ref(),
                Ok(&all),
                "written back"
            );
        }
    }
}

fn kline_row(c: &Candle, tf: Timeframe) -> Value {
    json!([
        c.open_time,
        s(c.open.get()),
        s(c.high.get()),
        s(c.low.get()),
        s(c.close.get()),
        s(c.volume),
        c.open_time.saturating_add(tf.millis() - 1),
        "0",
        0,
        "0",
        "0",
        "0"
    ])
}

/// `GET /fapi/v3/account`.
pub fn account(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    let Ok(a) = parse::account(&v) else {
        return;
    };
    let back = json!({
        "totalMarginBalance": s(a.equity.get()),
        "totalWalletBalance": s(a.wallet_balance.get()),
        "availableBalance": s(a.available_balance.get()),
        "totalInitialMargin": s(a.total_initial_margin.get()),
        "totalUnrealizedProfit": s(a.unrealized_pnl.get()),
    });
    assert_eq!(
        parse::account(&back).as_ref(),
        Ok::<&AccountSnapshot, _>(&a)
    );
}

/// `GET /fapi/v3/positionRisk`.
pub fn positions(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    let Ok(all) = parse::positions(&v) else {
        return;
    };
    assert!(all.len() <= v.as_array().map_or(0, Vec::len));
    for p in &all {
        assert!(!p.amount.is_zero(), "a flat row kept: {p:?}");
        assert!(is_normalized(p.amount), "amount not normalized: {p:?}");
    }
    let back: Vec<Value> = all.iter().map(position_row).collect();
    assert_eq!(
        parse::positions(&Value::Array(back)).as_ref(),
        Ok::<&Vec<ExchangePosition>, _>(&all)
    );
}

fn position_row(p: &ExchangePosition) -> Value {
    let mut row = json!({
        "symbol": p.symbol.as_str(),
        "positionAmt": s(p.amount),
        "entryPrice": s(p.entry_price.get()),
        "markPrice": s(p.mark_price.get()),
        "unRealizedProfit": s(p.unrealized_pnl.get()),
        "liquidationPrice": s(p.liquidation_price.get()),
        "updateTime": p.update_time,
    });
    if let Some(l) = p.leverage {
        row["leverage"] = json!(l.to_string());
    }
    row
}

/// `POST /fapi/v1/order` and `GET /fapi/v1/order`.
pub fn order(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    let Ok(o) = parse::order(&v) else {
        return;
    };
    assert!(
        is_normalized(o.avg_price.get()),
        "avg price not normalized: {o:?}"
    );
    let back = json!({
        "symbol": o.symbol.as_str(),
        "orderId": o.order_id,
        "clientOrderId": o.client_id,
        "side": o.side.as_str(),
        "status": o.status,
        "origQty": s(o.orig_qty.get()),
        "executedQty": s(o.executed_qty.get()),
        "avgPrice": s(o.avg_price.get()),
        "reduceOnly": o.reduce_only,
        "updateTime": o.update_time,
    });
    assert_eq!(parse::order(&back).as_ref(), Ok::<&OrderInfo, _>(&o));
}

/// `POST/GET /fapi/v1/algoOrder`, `GET /fapi/v1/openAlgoOrders` (an array) and the answer of
/// `DELETE /fapi/v1/algoOrder`.
pub fn algo_order(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    if let Ok(Some((code, _))) = parse::cancel_algo_failure(&v) {
        assert!(!matches!(code, 0 | 200), "success read as a failure");
    }
    let parsed = if v.is_array() {
        parse::algo_orders(&v)
    } else {
        parse::algo_order(&v).map(|a| vec![a])
    };
    let Ok(all) = parsed else {
        return;
    };
    for a in &all {
        // Binance's "0" and "" mean "not set": never a zero price or quantity.
        assert!(a.trigger_price.is_none_or(|p| !p.get().is_zero()), "{a:?}");
        assert!(a.qty.is_none_or(|q| !q.get().is_zero()), "{a:?}");
        assert!(a.actual_price.is_none_or(|p| !p.get().is_zero()), "{a:?}");
        let back = algo_row(a);
        assert_eq!(
            parse::algo_order(&back).as_ref(),
            Ok::<&AlgoOrderInfo, _>(a)
        );
    }
}

fn algo_row(a: &AlgoOrderInfo) -> Value {
    let opt = |d: Option<Decimal>| d.map(s).unwrap_or_default();
    let (ty, rate) = match a.kind {
        AlgoKind::StopMarket => ("STOP_MARKET", String::new()),
        AlgoKind::TakeProfitMarket => ("TAKE_PROFIT_MARKET", String::new()),
        AlgoKind::TrailingStopMarket { callback_rate } => {
            ("TRAILING_STOP_MARKET", s(callback_rate))
        }
    };
    json!({
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "orderType": ty,
        "callbackRate": rate,
        "symbol": a.symbol.as_str(),
        "side": a.side.as_str(),
        "algoStatus": a.status,
        "triggerPrice": opt(a.trigger_price.map(|p| p.get())),
        "quantity": opt(a.qty.map(|q| q.get())),
        "closePosition": a.close_position,
        "reduceOnly": a.reduce_only,
        "actualOrderId": a.actual_order_id.map(|id| id.to_string()).unwrap_or_default(),
        "actualPrice": opt(a.actual_price.map(|p| p.get())),
        "updateTime": a.update_time,
    })
}

/// `GET /fapi/v1/userTrades`.
pub fn user_trades(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    let Ok(all) = parse::user_trades(&v) else {
        return;
    };
    let back: Vec<Value> = all
        .iter()
        .map(|t| {
            json!({
                "symbol": t.symbol.as_str(),
                "id": t.id,
                "orderId": t.order_id,
                "side": t.side.as_str(),
                "price": s(t.price.get()),
                "qty": s(t.qty.get()),
                "realizedPnl": s(t.realized_pnl.get()),
                "commission": s(t.commission.get()),
                "commissionAsset": t.commission_asset,
                "time": t.time,
            })
        })
        .collect();
    assert_eq!(
        parse::user_trades(&Value::Array(back)).as_ref(),
        Ok::<&Vec<UserTrade>, _>(&all)
    );
}

/// `GET /fapi/v1/income`.
pub fn income(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    let Ok(all) = parse::income(&v) else {
        return;
    };
    let back: Vec<Value> = all
        .iter()
        .map(|i| {
            assert!(i.symbol.as_ref().is_none_or(|s| !s.as_str().is_empty()));
            assert!(i.trade_id.as_ref().is_none_or(|t| !t.is_empty()));
            json!({
                "symbol": i.symbol.as_ref().map_or("", Symbol::as_str),
                "incomeType": i.income_type,
                "income": s(i.income.get()),
                "asset": i.asset,
                "time": i.time,
                "tranId": i.tran_id.to_string(),
                "tradeId": i.trade_id.clone().unwrap_or_default(),
            })
        })
        .collect();
    assert_eq!(
        parse::income(&Value::Array(back)).as_ref(),
        Ok::<&Vec<Income>, _>(&all)
    );
}

/// `GET /fapi/v1/exchangeInfo`: the symbol table, then each symbol's filters.
pub fn exchange_info(data: &[u8]) {
    let Some(v) = binance_json(data) else {
        return;
    };
    let Ok(table) = parse::exchange_symbols(&v) else {
        return;
    };
    for (name, entry) in &table {
        let sym = Symbol::new(name.clone());
        let Ok(f) = parse::symbol_filters(&sym, entry) else {
            continue;
        };
        assert_eq!(f.symbol, sym);
        for step in [f.tick_size, f.step_size, f.market_step_size] {
            assert!(
                step > Decimal::ZERO,
                "a zero or negative step accepted: {f:?}"
            );
        }
        let all = [
            f.tick_size,
            f.min_price,
            f.max_price,
            f.step_size,
            f.min_qty,
            f.max_qty,
            f.market_step_size,
            f.market_min_qty,
            f.market_max_qty,
            f.min_notional,
        ];
        assert!(all.into_iter().all(is_normalized), "not normalized: {f:?}");
        let back = json!({"filters": [
            {"filterType": "PRICE_FILTER", "tickSize": s(f.tick_size), "minPrice": s(f.min_price),
             "maxPrice": s(f.max_price)},
            {"filterType": "LOT_SIZE", "stepSize": s(f.step_size), "minQty": s(f.min_qty),
             "maxQty": s(f.max_qty)},
            {"filterType": "MARKET_LOT_SIZE", "stepSize": s(f.market_step_size),
             "minQty": s(f.market_min_qty), "maxQty": s(f.market_max_qty)},
            {"filterType": "MIN_NOTIONAL", "notional": s(f.min_notional)},
        ]});
        assert_eq!(
            parse::symbol_filters(&sym, &back).as_ref().ok(),
            Some::<&SymbolFilters>(&f)
        );
    }
}

/// The name a candle file is parsed under: a single-row file takes its timeframe from it.
const CSV_SOURCE: &str = "fuzz-15m.csv";

/// A candle CSV file: read in one piece and in several chunks (the result and any error must be
/// the same), and, when accepted, resampled to the coarser timeframes as a backtest does.
pub fn candle_csv(data: &[u8]) {
    let whole = data::parse_bytes(data, CSV_SOURCE, 1);
    for chunks in [2, 3] {
        assert_eq!(
            data::parse_bytes(data, CSV_SOURCE, chunks),
            whole,
            "{chunks} chunks"
        );
    }
    let Ok(series) = whole else {
        return;
    };
    let tf = series.timeframe;
    assert!(!series.candles.is_empty());
    for c in &series.candles {
        assert!(
            Decimal::ZERO < c.low.get()
                && c.low <= c.open
                && c.open <= c.high
                && c.low <= c.close
                && c.close <= c.high
                && c.volume >= Decimal::ZERO,
            "an impossible candle accepted: {c:?}"
        );
        assert_eq!(c.open_time, tf.open_of(c.open_time), "misaligned: {c:?}");
    }
    for w in series.candles.windows(2) {
        assert!(
            w[0].open_time < w[1].open_time,
            "not sorted and unique: {w:?}"
        );
    }
    assert_eq!(series.gaps, data::find_gaps(&series.candles, tf));
    for to in Timeframe::ALL.into_iter().filter(|&to| to >= tf) {
        for complete_only in [false, true] {
            let coarse = series.resampled(to, complete_only);
            assert!(coarse.len() <= series.len());
            for w in coarse.candles.windows(2) {
                assert!(w[0].open_time < w[1].open_time, "{to} buckets out of order");
            }
        }
    }
}

/// The TOML config (`Config::parse`, as `Config::load` after reading the file as UTF-8).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse(text, "fuzz.toml") {
        Ok(cfg) => cfg,
        Err(e) => {
            assert_eq!(e.file, "fuzz.toml");
            assert!(!e.path.is_empty() && !e.message.is_empty(), "{e:?}");
            return;
        }
    };
    let fraction = |d: Decimal| Decimal::ZERO < d && d <= Decimal::ONE;
    assert!(fraction(cfg.risk.max_position_pct));
    assert!(fraction(cfg.risk.max_total_margin_pct));
    assert!(fraction(cfg.risk.daily_loss_pct));
    assert!(cfg.risk.max_positions_per_account >= 1);
    assert!(cfg.paper.initial_equity > Decimal::ZERO);
    assert!((1..=60_000).contains(&cfg.binance.recv_window_ms));
    for st in &cfg.strategies {
        assert!(Timeframe::SCHEDULED.contains(&st.timeframe), "{}", st.name);
        assert!((1..=125).contains(&st.leverage) && st.leverage <= cfg.risk.max_leverage);
        assert!(fraction(st.size_pct) && st.size_pct <= cfg.risk.max_position_pct);
        assert!(!st.symbols.is_empty());
        for sym in &st.symbols {
            assert!(
                !sym.as_str().is_empty()
                    && sym
                        .as_str()
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()),
                "{sym}"
            );
        }
        assert_eq!(cfg.strategy(&st.name).map(|x| &x.name), Some(&st.name));
    }
    assert!(!cfg.accounts.is_empty());
    for a in &cfg.accounts {
        assert!(a.key_source().is_ok(), "{}", a.id);
        for name in &a.strategies {
            assert!(cfg.strategy(name).is_some(), "{} runs unknown {name}", a.id);
        }
        assert!(fraction(cfg.daily_loss_pct(a)));
        for st in cfg.account_strategies(a) {
            let (leverage, size) = cfg.effective_sizing(a, st);
            assert!(leverage >= 1 && leverage <= st.leverage);
            assert!(fraction(size), "{} {}: size {size}", a.id, st.name);
        }
    }
}

const EVENT_EXPECTED: &str = "expected a scheduled event";
/// 0000-01-01T00:00:00Z and 10000-01-01T00:00:00Z: the UTC instants RFC 3339 can write.
const RFC3339_FIRST_MS: i64 = -62_167_219_200_000;
const RFC3339_END_MS: i64 = 253_402_300_800_000;
const DAY_MS: i64 = 86_400_000;

/// A Lambda invocation's payload (the runtime parses it from the bytes as JSON).
pub fn lambda_event(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let ev = match ScheduleEvent::parse(v, EVENT_EXPECTED) {
        Ok(ev) => ev,
        Err(e) => {
            assert!(
                e.0.starts_with("rejected event") && e.0.ends_with(EVENT_EXPECTED),
                "{e}"
            );
            return;
        }
    };
    assert!(ev
        .detail_type
        .as_deref()
        .is_none_or(|d| d == "Scheduled Event"));
    if let Some(tf) = ev.timeframe() {
        if let Ok(t) = tf.parse::<Timeframe>() {
            assert_eq!(t.as_str(), tf);
        }
    }
    match ev.time_ms(EVENT_EXPECTED) {
        Ok(None) => assert!(ev.time.is_none()),
        Ok(Some(ms)) => {
            // RFC 3339 years run 0000..=9999 with offsets below a day, so the instant is within a
            // day of those years ("0000-01-01T00:04:00+23:59" is in year -1 UTC).
            assert!((RFC3339_FIRST_MS - DAY_MS..RFC3339_END_MS + DAY_MS).contains(&ms));
            // The instant (to the millisecond) written back as RFC 3339 in UTC reads as itself.
            if (RFC3339_FIRST_MS..RFC3339_END_MS).contains(&ms) {
                let t =
                    chrono::DateTime::from_timestamp_millis(ms).expect("a year 0..=9999 instant");
                let again = ScheduleEvent {
                    time: Some(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
                    ..ScheduleEvent::default()
                };
                assert_eq!(again.time_ms(EVENT_EXPECTED), Ok(Some(ms)));
            }
        }
        Err(e) => assert!(
            e.0.starts_with("rejected event") && e.0.ends_with(EVENT_EXPECTED),
            "{e}"
        ),
    }
}
