//! Maps how a Binance request failed (transport error or HTTP status + body) onto
//! [`ExchangeError`], the one decision the engine needs: retry, look up first, or give up.
//!
//! The rules follow Binance's "HTTP Return Codes" and "Handling Specific 503 Errors" notes
//! (developers.binance.com, derivatives/usds-margined-futures/general-info):
//! 429/418 mean the request was refused before execution; a 503 "Unknown error, please check your
//! request or try again later." means the execution status is unknown; 4xx carry `{code,msg}`.
//! Pure functions so the whole table is unit-tested without a network.

use albra_core::ports::ExchangeError;
use std::time::Duration;

/// API key / signature problems: retrying the same request can never succeed.
/// -2014 "API-key format invalid", -2015 "Invalid API-key, IP, or permissions", -1022 "Signature
/// for this request is not valid".
const FATAL_CODES: [i64; 3] = [-2014, -2015, -1022];
/// -1006 "unexpected response from the message bus" and -1007 "timeout waiting for response from
/// backend server": Binance documents both as "execution status unknown".
const UNKNOWN_OUTCOME_CODES: [i64; 2] = [-1006, -1007];
/// -1003 "too many requests" and -1008 "request throttled by system-level protection": the
/// request was not executed.
const THROTTLED_CODES: [i64; 2] = [-1003, -1008];

/// Longest body excerpt carried in a `Decode` error.
pub(crate) const EXCERPT_CHARS: usize = 200;

/// How a request failed below HTTP.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Transport {
    /// Nothing reached the server (DNS, refused, connect timeout, TLS handshake).
    Connect,
    /// The request may have reached the server: timeout or reset after the connection was up,
    /// or the body of a response could not be read.
    AfterSend,
}

/// The first `EXCERPT_CHARS` characters of a body, on a character boundary.
pub(crate) fn excerpt(body: &str) -> String {
    match body.char_indices().nth(EXCERPT_CHARS) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_string(),
    }
}

/// `{code, msg}` of a Binance error body, if the body is one.
pub(crate) fn api_error(body: &str) -> Option<(i64, String)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let code = match v.get("code")? {
        serde_json::Value::Number(n) => n.as_i64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    let msg = v
        .get("msg")
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    Some((code, msg))
}

/// `Retry-After` in seconds (Binance sends integer seconds with 429 and 418).
pub(crate) fn parse_retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs))
}

/// True for the statuses that mean "refused by the rate limiter, not executed".
pub(crate) fn is_rate_limit_status(status: u16) -> bool {
    status == 429 || status == 418
}

/// Classify a transport failure. `idempotent` is true for GET.
pub(crate) fn transport_error(
    idempotent: bool,
    endpoint: &str,
    kind: Transport,
    detail: String,
) -> ExchangeError {
    if kind == Transport::Connect || idempotent {
        ExchangeError::Retryable {
            endpoint: endpoint.to_string(),
            detail,
            retry_after: None,
        }
    } else {
        // A POST/DELETE that may have arrived: the order may exist. The engine must look it up.
        ExchangeError::UnknownOutcome {
            endpoint: endpoint.to_string(),
            detail,
        }
    }
}

/// Classify a non-2xx HTTP answer.
pub(crate) fn status_error(
    idempotent: bool,
    endpoint: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> ExchangeError {
    let api = api_error(body);
    let detail = match &api {
        Some((code, msg)) => format!("HTTP {status}, code {code}: {msg}"),
        None => format!("HTTP {status}: {}", excerpt(body)),
    };
    let retryable = |detail: String| ExchangeError::Retryable {
        endpoint: endpoint.to_string(),
        detail,
        retry_after,
    };
    let unknown = |detail: String| ExchangeError::UnknownOutcome {
        endpoint: endpoint.to_string(),
        detail,
    };
    let api_code = api.as_ref().map(|(c, _)| *c);

    // Binance never redirects API calls: a 3xx comes from something else on the way (a proxy, a
    // captive portal, a wrong base URL). The client follows no redirect, since that would hand the
    // API key and the signed query to the host the answer names; asking again would get the same
    // answer, so it is fatal. The Location is left out: it may repeat the signed query.
    if (300..400).contains(&status) {
        return ExchangeError::Fatal(format!(
            "{endpoint}: answered HTTP {status}, a redirect, which is never followed (it would \
             send the API key and signature to another host); check the Binance base URL"
        ));
    }
    if is_rate_limit_status(status) {
        return retryable(detail);
    }
    // 503 "Unknown error …" = execution status unknown; 408/504 = the gateway gave up waiting
    // for the backend after forwarding the request. For a GET nothing changed, so retry.
    if matches!(status, 503 | 408 | 504) {
        return if idempotent {
            retryable(detail)
        } else {
            unknown(detail)
        };
    }
    if let Some(code) = api_code {
        if UNKNOWN_OUTCOME_CODES.contains(&code) {
            return if idempotent {
                retryable(detail)
            } else {
                unknown(detail)
            };
        }
        if THROTTLED_CODES.contains(&code) {
            return retryable(detail);
        }
    }
    if status >= 500 {
        return retryable(detail);
    }
    match api {
        Some((code, msg)) if FATAL_CODES.contains(&code) => ExchangeError::Fatal(format!(
            "{endpoint}: API key or signature refused (code {code}: {msg}); check the account's keys"
        )),
        Some((code, msg)) => super::codes::rejected(endpoint, code, &msg),
        None => ExchangeError::Decode {
            endpoint: endpoint.to_string(),
            error: format!("HTTP {status} without a Binance error body"),
            excerpt: excerpt(body),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::codes::refusal;
    use albra_core::ports::Refusal;

    #[derive(Debug, PartialEq)]
    enum Kind {
        Retryable(Option<u64>),
        Rejected(Refusal),
        Unknown,
        Decode,
        Fatal,
    }

    fn kind(e: &ExchangeError) -> Kind {
        match e {
            ExchangeError::Retryable { retry_after, .. } => {
                Kind::Retryable(retry_after.map(|d| d.as_secs()))
            }
            ExchangeError::Rejected { reason, .. } => Kind::Rejected(*reason),
            ExchangeError::UnknownOutcome { .. } => Kind::Unknown,
            ExchangeError::Decode { .. } => Kind::Decode,
            ExchangeError::Fatal(_) | ExchangeError::SendWindowClosed { .. } => Kind::Fatal,
        }
    }

    #[test]
    fn status_table() {
        const GET: bool = true;
        const POST: bool = false;
        let unknown_503 = r#"{"code":-1000,"msg":"Unknown error, please check your request or try again later."}"#;
        let cases: Vec<(bool, u16, Option<u64>, &str, Kind)> = vec![
            (
                GET,
                429,
                Some(7),
                r#"{"code":-1003,"msg":"Too many requests"}"#,
                Kind::Retryable(Some(7)),
            ),
            (
                POST,
                429,
                Some(7),
                r#"{"code":-1003,"msg":"Too many requests"}"#,
                Kind::Retryable(Some(7)),
            ),
            (POST, 418, Some(120), "", Kind::Retryable(Some(120))),
            (POST, 503, None, unknown_503, Kind::Unknown),
            (GET, 503, None, unknown_503, Kind::Retryable(None)),
            (
                POST,
                503,
                None,
                "<html>Service Unavailable</html>",
                Kind::Unknown,
            ),
            (POST, 504, None, "", Kind::Unknown),
            (POST, 408, None, "", Kind::Unknown),
            (GET, 408, None, "", Kind::Retryable(None)),
            (
                POST,
                500,
                None,
                r#"{"code":-1001,"msg":"Internal error"}"#,
                Kind::Retryable(None),
            ),
            (GET, 502, None, "bad gateway", Kind::Retryable(None)),
            (
                POST,
                400,
                None,
                r#"{"code":-1007,"msg":"Timeout waiting for response from backend server."}"#,
                Kind::Unknown,
            ),
            (
                GET,
                400,
                None,
                r#"{"code":-1007,"msg":"Timeout waiting for response from backend server."}"#,
                Kind::Retryable(None),
            ),
            (
                POST,
                400,
                None,
                r#"{"code":-1008,"msg":"Request throttled by system-level protection."}"#,
                Kind::Retryable(None),
            ),
            (
                POST,
                400,
                None,
                r#"{"code":-2019,"msg":"Margin is insufficient."}"#,
                Kind::Rejected(refusal(-2019)),
            ),
            (
                POST,
                400,
                None,
                r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#,
                Kind::Rejected(refusal(-1021)),
            ),
            (
                GET,
                400,
                None,
                r#"{"code":-2013,"msg":"Order does not exist."}"#,
                Kind::Rejected(refusal(-2013)),
            ),
            (
                POST,
                400,
                None,
                r#"{"code":-4164,"msg":"Order's notional must be no smaller than 100"}"#,
                Kind::Rejected(refusal(-4164)),
            ),
            (
                POST,
                400,
                None,
                r#"{"code":"-4116","msg":"ClientOrderId is duplicated."}"#,
                Kind::Rejected(refusal(-4116)),
            ),
            (
                GET,
                401,
                None,
                r#"{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#,
                Kind::Fatal,
            ),
            (
                GET,
                400,
                None,
                r#"{"code":-2014,"msg":"API-key format invalid."}"#,
                Kind::Fatal,
            ),
            (
                POST,
                400,
                None,
                r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#,
                Kind::Fatal,
            ),
            (GET, 301, None, "", Kind::Fatal),
            (GET, 302, None, "<html>Moved</html>", Kind::Fatal),
            (POST, 307, None, "", Kind::Fatal),
            (POST, 308, Some(1), "", Kind::Fatal),
            (GET, 403, None, "<html>WAF</html>", Kind::Decode),
            (POST, 404, None, "", Kind::Decode),
        ];
        for (idempotent, status, ra, body, want) in cases {
            let e = status_error(
                idempotent,
                "POST /fapi/v1/order",
                status,
                ra.map(Duration::from_secs),
                body,
            );
            assert_eq!(
                kind(&e),
                want,
                "idempotent={idempotent} status={status} body={body}"
            );
        }
    }

    #[test]
    fn transport_table() {
        let e = transport_error(
            false,
            "POST /fapi/v1/order",
            Transport::Connect,
            "refused".into(),
        );
        assert_eq!(kind(&e), Kind::Retryable(None));
        let e = transport_error(
            false,
            "POST /fapi/v1/order",
            Transport::AfterSend,
            "timeout".into(),
        );
        assert_eq!(kind(&e), Kind::Unknown);
        let e = transport_error(
            false,
            "DELETE /fapi/v1/algoOrder",
            Transport::AfterSend,
            "reset".into(),
        );
        assert_eq!(kind(&e), Kind::Unknown);
        let e = transport_error(
            true,
            "GET /fapi/v1/order",
            Transport::AfterSend,
            "timeout".into(),
        );
        assert_eq!(kind(&e), Kind::Retryable(None));
    }

    #[test]
    fn decode_error_names_endpoint_and_excerpt() {
        let body = "x".repeat(500);
        match status_error(true, "GET /fapi/v3/account", 404, None, &body) {
            ExchangeError::Decode {
                endpoint, excerpt, ..
            } => {
                assert_eq!(endpoint, "GET /fapi/v3/account");
                assert_eq!(excerpt.chars().count(), EXCERPT_CHARS + 1);
                assert!(excerpt.ends_with('…'));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(super::excerpt("héllo"), "héllo");
        let multi = "é".repeat(300);
        assert!(super::excerpt(&multi).starts_with(&"é".repeat(200)));
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(Some("12")), Some(Duration::from_secs(12)));
        assert_eq!(parse_retry_after(Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
