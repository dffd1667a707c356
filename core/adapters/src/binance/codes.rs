//! Binance's error codes: the few the client itself reacts to, and their mapping to the port's
//! [`Refusal`] reasons, so that no code number leaves this adapter except inside a message.

use albra_core::ports::{ExchangeError, Refusal};

pub const TIMESTAMP_OUTSIDE_RECV_WINDOW: i64 = -1021;
pub const UNKNOWN_ORDER: i64 = -2013;
/// `DELETE /fapi/v1/order` of an order that is no longer open.
pub const CANCEL_UNKNOWN_ORDER: i64 = -2011;
/// A conditional order whose trigger the market has already passed.
pub const WOULD_TRIGGER_IMMEDIATELY: i64 = -2021;
pub const MARGIN_INSUFFICIENT: i64 = -2019;
pub const REDUCE_ONLY_REJECTED: i64 = -2022;
pub const PRECISION: i64 = -1111;
pub const NO_NEED_TO_CHANGE_MARGIN_TYPE: i64 = -4046;
/// The margin type cannot change while the symbol holds a position (a hand-made one, say).
pub const MARGIN_TYPE_LOCKED_BY_POSITION: i64 = -4048;
pub const DUPLICATE_CLIENT_ID: i64 = -4116;
pub const MIN_NOTIONAL: i64 = -4164;

/// The reason a Binance error code stands for.
pub fn refusal(code: i64) -> Refusal {
    match code {
        MARGIN_INSUFFICIENT => Refusal::InsufficientMargin,
        MIN_NOTIONAL => Refusal::BelowMinNotional,
        WOULD_TRIGGER_IMMEDIATELY => Refusal::WouldTriggerImmediately,
        DUPLICATE_CLIENT_ID => Refusal::DuplicateId,
        REDUCE_ONLY_REJECTED => Refusal::ReduceOnlyRejected,
        // Precision, and quantities under the minimum, over the maximum or not above zero.
        PRECISION | -4003 | -4004 | -4005 => Refusal::Precision,
        NO_NEED_TO_CHANGE_MARGIN_TYPE => Refusal::MarginTypeUnchanged,
        MARGIN_TYPE_LOCKED_BY_POSITION => Refusal::MarginTypeLocked,
        UNKNOWN_ORDER | CANCEL_UNKNOWN_ORDER => Refusal::UnknownOrder,
        TIMESTAMP_OUTSIDE_RECV_WINDOW => Refusal::ClockOutOfWindow,
        _ => Refusal::Other,
    }
}

/// A refusal of `endpoint` with Binance's `code` and message; the code stays in the message for
/// people (`code -2019: Margin is insufficient.`).
pub fn rejected(endpoint: &str, code: i64, msg: &str) -> ExchangeError {
    ExchangeError::Rejected {
        endpoint: endpoint.to_string(),
        reason: refusal(code),
        msg: format!("code {code}: {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_reasons_and_stay_in_the_message() {
        let table = [
            (-2019, Refusal::InsufficientMargin),
            (-4164, Refusal::BelowMinNotional),
            (-2021, Refusal::WouldTriggerImmediately),
            (-4116, Refusal::DuplicateId),
            (-2022, Refusal::ReduceOnlyRejected),
            (-1111, Refusal::Precision),
            (-4003, Refusal::Precision),
            (-4046, Refusal::MarginTypeUnchanged),
            (-4048, Refusal::MarginTypeLocked),
            (-2013, Refusal::UnknownOrder),
            (-2011, Refusal::UnknownOrder),
            (-1021, Refusal::ClockOutOfWindow),
            (-4120, Refusal::Other),
            (-9999, Refusal::Other),
        ];
        for (code, reason) in table {
            let e = rejected("POST /fapi/v1/order", code, "words");
            assert_eq!(e.refusal(), Some(reason), "{code}");
            assert_eq!(
                e.to_string(),
                format!("POST /fapi/v1/order: rejected by the exchange: code {code}: words")
            );
        }
    }
}
