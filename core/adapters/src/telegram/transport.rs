//! One Bot API call over the wire: the request (JSON or a multipart upload) to
//! `{base}/bot{token}/{method}`, the answer's `{"ok":…}` envelope, and what is retried.
//!
//! - HTTP 429: wait the `parameters.retry_after` Telegram asks for, unless that would pass the
//!   caller's deadline: then give up at once with an error naming the wait.
//! - HTTP 5xx and network failures: retried with exponential backoff and jitter, within the
//!   deadline and a number of attempts.
//! - Any other 4xx: not retried (the same request would get the same answer); the error carries
//!   Telegram's `description`.
//! - 3xx: never followed (it would carry the token elsewhere, see `crate::http`), not retried.
//!
//! The token is in every URL, so no error ever quotes a URL, and any text that comes from
//! outside (reqwest's message, Telegram's description) has the token scrubbed out.

use albra_core::ports::Secret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;
use tokio::time::Instant;

/// Why a Bot API call failed. Never holds the token or a URL.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TelegramError {
    /// Telegram refused the request (a 4xx other than 429); asking again would not help.
    #[error("{method}: Telegram refused it (HTTP {status}): {description}")]
    Rejected {
        method: &'static str,
        status: u16,
        description: String,
    },
    /// Rate limited, and the wait Telegram asks for would pass the caller's deadline.
    #[error(
        "{method}: rate limited, Telegram asks to wait {retry_after:?}, which would pass the \
         deadline ({left:?} left); given up"
    )]
    RateLimited {
        method: &'static str,
        retry_after: Duration,
        left: Duration,
    },
    /// The chat's own rate limit (one message a second, twenty a minute to a group) would have
    /// the message wait past the caller's deadline; it was not sent.
    #[error(
        "{method}: the chat's rate limit (1 message/s, 20/min to a group) needs a wait of \
         {wait:?}, which would pass the deadline ({left:?} left); not sent"
    )]
    ChatRateLimited {
        method: &'static str,
        wait: Duration,
        left: Duration,
    },
    /// 5xx or network failures until the attempts or the deadline ran out.
    #[error("{method}: failed after {attempts} attempt(s): {last}")]
    Unavailable {
        method: &'static str,
        attempts: u32,
        last: String,
    },
    /// A redirect, which is never followed (it would resend the token to another host).
    #[error(
        "{method} answered HTTP {status}, a redirect, which is never followed; check \
         ALBRA_TELEGRAM_API_URL"
    )]
    Redirect { method: &'static str, status: u16 },
    /// The deadline had passed before the call could be (re)sent.
    #[error("{method}: deadline passed before the call could be sent")]
    DeadlinePassed { method: &'static str },
    /// The answer was not the Bot API's JSON, or not the expected result.
    #[error("{method}: unexpected answer (HTTP {status}): {detail}")]
    Malformed {
        method: &'static str,
        status: u16,
        detail: String,
    },
    /// The request breaks one of Telegram's limits and was not sent.
    #[error("{method}: not sent: {detail}")]
    Invalid {
        method: &'static str,
        detail: String,
    },
}

/// The body of a call. Kept as data so it can be rebuilt for each attempt (a multipart form is
/// consumed when sent).
pub(crate) enum Payload {
    Json(Value),
    /// Text fields, and one file field `(name, file name, mime type, bytes)`.
    Multipart {
        fields: Vec<(&'static str, String)>,
        file: (&'static str, &'static str, &'static str, Vec<u8>),
    },
}

/// How transient failures (5xx, network) are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. Waits Telegram asks for with 429 do not count: the
    /// caller's deadline bounds them.
    pub attempts: u32,
    /// Backoff before the second attempt; doubled for each later one, with jitter.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(500),
        }
    }
}

pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub base: String,
    pub token: Secret,
    pub retry: RetryPolicy,
    /// Whole-request timeout of an ordinary call (a long poll adds its own wait).
    pub timeout: Duration,
}

/// What one attempt came to.
enum Attempt<T> {
    Done(T),
    /// Retry after a wait: `Some` is Telegram's `retry_after`, `None` means our backoff.
    Retry(Option<Duration>, String),
    Fail(TelegramError),
}

impl Transport {
    /// Calls `method` until it succeeds, fails for good, or `deadline` would pass. `extra` is
    /// added to the request timeout (a long poll's own wait).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        payload: &Payload,
        extra: Duration,
        deadline: Instant,
    ) -> Result<T, TelegramError> {
        let mut failures = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(TelegramError::DeadlinePassed { method });
            }
            let timeout = (self.timeout + extra).min(left);
            let (wait, last) = match self.attempt(method, payload, timeout).await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(Some(after), _) => (after, None),
                Attempt::Retry(None, last) => {
                    failures += 1;
                    if failures >= self.retry.attempts {
                        return Err(self.unavailable(method, failures, &last));
                    }
                    (self.backoff(failures), Some(last))
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if wait >= left {
                return Err(match last {
                    Some(last) => self.unavailable(method, failures, &last),
                    None => TelegramError::RateLimited {
                        method,
                        retry_after: wait,
                        left,
                    },
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn unavailable(&self, method: &'static str, attempts: u32, last: &str) -> TelegramError {
        TelegramError::Unavailable {
            method,
            attempts,
            last: self.scrub(last),
        }
    }

    /// Exponential backoff with "equal jitter": half the step fixed, half random, so clients
    /// that failed together do not retry together.
    fn backoff(&self, failures: u32) -> Duration {
        let step = self.retry.first_backoff * 2u32.saturating_pow(failures - 1);
        let half = step / 2;
        half + half.mul_f64(random_unit())
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        method: &'static str,
        payload: &Payload,
        timeout: Duration,
    ) -> Attempt<T> {
        let url = format!("{}/bot{}/{method}", self.base, self.token.expose());
        let request = self.http.post(&url).timeout(timeout);
        let request = match payload {
            Payload::Json(body) => request.json(body),
            Payload::Multipart { fields, file } => match multipart(fields, file) {
                Ok(form) => request.multipart(form),
                Err(e) => return Attempt::Fail(self.invalid(method, e)),
            },
        };
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(None, network(e)),
        };
        let status = response.status().as_u16();
        if response.status().is_redirection() {
            return Attempt::Fail(TelegramError::Redirect { method, status });
        }
        match response.bytes().await {
            Ok(body) => self.answer(method, status, &body),
            Err(e) => Attempt::Retry(None, network(e)),
        }
    }

    /// Reads the `{"ok":…}` envelope of an answer.
    fn answer<T: DeserializeOwned>(
        &self,
        method: &'static str,
        status: u16,
        body: &[u8],
    ) -> Attempt<T> {
        let envelope: Option<Value> = serde_json::from_slice(body).ok();
        let ok = envelope.as_ref().and_then(|v| v["ok"].as_bool());
        if (200..300).contains(&status) && ok == Some(true) {
            let result = envelope.map(|mut v| v["result"].take()).unwrap_or_default();
            return match serde_json::from_value(result) {
                Ok(v) => Attempt::Done(v),
                Err(e) => Attempt::Fail(self.malformed(method, status, e.to_string())),
            };
        }
        self.failure(method, status, envelope.unwrap_or_default())
    }

    /// What an error answer means: wait and retry (429, 5xx) or give up (any other status).
    fn failure<T>(&self, method: &'static str, status: u16, envelope: Value) -> Attempt<T> {
        let description = envelope["description"].as_str().unwrap_or_default();
        match status {
            // Telegram always says how long; 1 s is the least it ever asks.
            429 => {
                let after = envelope["parameters"]["retry_after"].as_u64().unwrap_or(1);
                Attempt::Retry(Some(Duration::from_secs(after)), format!("HTTP {status}"))
            }
            500.. => {
                let last = format!("HTTP {status} {description}");
                Attempt::Retry(None, last.trim_end().to_string())
            }
            _ if description.is_empty() => {
                Attempt::Fail(self.malformed(method, status, "no Bot API answer".into()))
            }
            _ => Attempt::Fail(TelegramError::Rejected {
                method,
                status,
                description: self.scrub(description),
            }),
        }
    }

    fn malformed(&self, method: &'static str, status: u16, detail: String) -> TelegramError {
        TelegramError::Malformed {
            method,
            status,
            detail: self.scrub(&detail),
        }
    }

    pub fn invalid(&self, method: &'static str, detail: impl ToString) -> TelegramError {
        TelegramError::Invalid {
            method,
            detail: self.scrub(&detail.to_string()),
        }
    }

    /// `text` without the token: outside text (an echoed request, a library's message) must not
    /// carry it into an error or a log.
    fn scrub(&self, text: &str) -> String {
        let token = self.token.expose();
        if token.is_empty() {
            return text.to_string();
        }
        text.replace(token, "***")
    }
}

/// A network failure with its causes (`error sending request: … connection refused`), never its
/// URL (which holds the token).
fn network(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn multipart(
    fields: &[(&'static str, String)],
    file: &(&'static str, &'static str, &'static str, Vec<u8>),
) -> Result<reqwest::multipart::Form, reqwest::Error> {
    let (name, file_name, mime, bytes) = file;
    let part = reqwest::multipart::Part::bytes(bytes.clone())
        .file_name(*file_name)
        .mime_str(mime)?;
    let form = fields
        .iter()
        .fold(reqwest::multipart::Form::new(), |form, (k, v)| {
            form.text(*k, v.clone())
        });
    Ok(form.part(*name, part))
}

/// A number in [0, 1) that differs between calls: std's `RandomState` is seeded randomly per
/// thread and stepped per instance, which is enough to spread retries (no need for a RNG crate).
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport() -> Transport {
        Transport {
            http: reqwest::Client::new(),
            base: "http://127.0.0.1:1".into(),
            token: Secret::new("123:tok"),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_in_its_upper_half() {
        let t = transport();
        for failures in 1..5 {
            let step = Duration::from_millis(500) * 2u32.pow(failures - 1);
            let waits: Vec<_> = (0..20).map(|_| t.backoff(failures)).collect();
            assert!(
                waits.iter().all(|w| *w >= step / 2 && *w <= step),
                "{waits:?}"
            );
            assert!(waits.iter().any(|w| *w != waits[0]), "no jitter: {waits:?}");
        }
    }

    #[test]
    fn answers_are_classified() {
        let t = transport();
        let ok: Attempt<i64> = t.answer("m", 200, br#"{"ok":true,"result":7}"#);
        assert!(matches!(ok, Attempt::Done(7)));
        let limited: Attempt<i64> = t.answer(
            "m",
            429,
            br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 3","parameters":{"retry_after":3}}"#,
        );
        assert!(matches!(limited, Attempt::Retry(Some(d), _) if d == Duration::from_secs(3)));
        let down: Attempt<i64> = t.answer("m", 502, b"<html>Bad Gateway</html>");
        assert!(matches!(down, Attempt::Retry(None, _)));
        let refused: Attempt<i64> = t.answer(
            "m",
            400,
            br#"{"ok":false,"error_code":400,"description":"Bad Request: chat 123:tok not found"}"#,
        );
        let Attempt::Fail(e) = refused else {
            panic!("not a failure")
        };
        assert_eq!(
            e.to_string(),
            "m: Telegram refused it (HTTP 400): Bad Request: chat *** not found"
        );
    }
}
