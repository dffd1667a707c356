//! The journal of what one paper account was sent (`--orders-out`).

use super::*;

/// What one paper account was sent: every MARKET order (those its conditional orders triggered
/// included) and every conditional order, each list in the order the orders were placed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OrderJournal {
    pub orders: Vec<OrderInfo>,
    pub algos: Vec<AlgoOrderInfo>,
}

/// The header of [`OrderJournal::csv_rows`]: `kind` is `MARKET` or the conditional order's
/// Binance type, `time` its last update (ms), prices and quantities empty when not set.
pub const ORDERS_CSV_HEADER: &str =
    "run,symbol,kind,client_id,side,qty,reduce_only,close_position,trigger_price,callback_rate,status,avg_price,time\n";

impl OrderJournal {
    /// One CSV row per order (MARKET orders first, then conditional ones), labelled `run`.
    pub fn csv_rows(&self, run: &str, out: &mut String) {
        use std::fmt::Write;
        // A status as Binance spells it (its serde name).
        fn text<T: serde::Serialize>(v: &T) -> String {
            serde_json::to_value(v)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        }
        for o in &self.orders {
            let _ = writeln!(
                out,
                "{run},{},MARKET,{},{},{},{},false,,,{},{},{}",
                o.symbol,
                o.client_id,
                o.side.as_str(),
                o.orig_qty.get().normalize(),
                o.reduce_only,
                text(&o.status),
                o.avg_price.get().normalize(),
                o.update_time
            );
        }
        for a in &self.algos {
            let callback = match a.kind {
                AlgoKind::TrailingStopMarket { callback_rate } => {
                    callback_rate.normalize().to_string()
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{run},{},{},{},{},{},{},{},{},{callback},{},{},{}",
                a.symbol,
                a.kind.binance_type(),
                a.client_algo_id,
                a.side.as_str(),
                a.qty
                    .map(|q| q.get().normalize().to_string())
                    .unwrap_or_default(),
                a.reduce_only,
                a.close_position,
                a.trigger_price
                    .map(|p| p.get().normalize().to_string())
                    .unwrap_or_default(),
                text(&a.status),
                a.actual_price
                    .map(|p| p.get().normalize().to_string())
                    .unwrap_or_default(),
                a.update_time
            );
        }
    }
}
