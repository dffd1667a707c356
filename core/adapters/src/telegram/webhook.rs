//! The webhook's shared logic, for every front end that receives Telegram's POSTs (`albra
//! telegram serve`, a Lambda behind a function URL): check the secret token in constant time,
//! decode the update, hand it to the [`Bot`], and say which HTTP status to answer.

use super::api::updates::Update;
use super::bot::{Bot, Handled};
use albra_core::ports::Secret;
use subtle::ConstantTimeEq;

/// The header Telegram sends the webhook's secret in.
pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// Whether `got` is the secret. `subtle` compares every byte whatever the first difference, so
/// the answer's timing does not tell an attacker how much of a guess was right (only whether
/// its length was, which the secret's format does not hide anyway).
pub fn secret_matches(expected: &Secret, got: Option<&[u8]>) -> bool {
    match got {
        Some(g) => bool::from(expected.expose().as_bytes().ct_eq(g)),
        None => false,
    }
}

/// One webhook delivery: `header` is the value of [`SECRET_HEADER`], if any. Returns the HTTP
/// status to answer: 401 (missing or wrong secret; nothing done), 400 (not an update), 500
/// (the store failed before the update was taken: Telegram delivers it again), else 200, also
/// for updates the bot ignored, so Telegram does not redeliver them.
pub async fn handle_webhook(
    bot: &Bot,
    secret: &Secret,
    header: Option<&[u8]>,
    body: &[u8],
    now: i64,
) -> u16 {
    if !secret_matches(secret, header) {
        tracing::warn!("webhook call without the right secret token: refused");
        return 401;
    }
    let update: Update = match serde_json::from_slice(body) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "webhook body is not a Telegram update");
            return 400;
        }
    };
    match bot.handle(&update, now).await {
        Handled::Failed(_) => 500,
        h => {
            tracing::info!(update_id = update.update_id, handled = ?h, "update handled");
            200
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_secret_matches() {
        let s = Secret::new("abc-DEF_123");
        assert!(secret_matches(&s, Some(b"abc-DEF_123")));
        for bad in [
            &b"abc-DEF_124"[..],
            b"abc-DEF_12",
            b"abc-DEF_1234",
            b"",
            b"ABC-DEF_123",
        ] {
            assert!(!secret_matches(&s, Some(bad)), "{bad:?}");
        }
        assert!(!secret_matches(&s, None));
    }
}
