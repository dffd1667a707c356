//! Who may read the dashboard: whoever presents the token (`ALBRA_DASHBOARD_TOKEN`, or SSM in
//! Lambda) once, at `/login`, and then carries the session cookie it gets back.
//!
//! The cookie is `albra_session=<expiry>.<mac>`: the expiry (epoch seconds) and an HMAC-SHA256 of
//! it keyed by the token. Nothing is stored server side, so any Lambda instance or a restarted
//! process accepts it, a new token ends every session, and the token itself never leaves the
//! login request. It is HttpOnly (no script reads it), Secure (never sent over plain http, but
//! to loopback, which browsers count as secure) and SameSite=Strict (no other site's page makes
//! the browser send it).

use albra_core::ports::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "albra_session";
/// How long a session lasts.
pub const SESSION_SECS: i64 = 12 * 3600;

/// The token, and the sessions it signs.
pub struct Auth {
    token: Secret,
}

impl Auth {
    pub fn new(token: Secret) -> Auth {
        Auth { token }
    }

    fn mac(&self, msg: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(self.token.expose().as_bytes())
            .expect("HMAC takes a key of any length");
        m.update(msg.as_bytes());
        m
    }

    /// Whether `given` is the token, in time independent of where they differ (both are
    /// MACed first, so their lengths do not show either).
    pub fn token_matches(&self, given: &str) -> bool {
        let a = self.mac(given).finalize().into_bytes();
        let b = self.mac(self.token.expose()).finalize().into_bytes();
        a.ct_eq(&b).into()
    }

    fn session_value(&self, expiry: i64) -> String {
        let mac = self.mac(&format!("albra-dashboard-session:{expiry}"));
        format!("{expiry}.{}", hex::encode(mac.finalize().into_bytes()))
    }

    /// The `Set-Cookie` value of a new session from `now_ms`.
    pub fn session_cookie(&self, now_ms: i64) -> String {
        let expiry = now_ms / 1000 + SESSION_SECS;
        format!(
            "{COOKIE}={}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}",
            self.session_value(expiry)
        )
    }

    /// The `Set-Cookie` value that ends a session.
    pub fn cleared_cookie() -> String {
        format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
    }

    /// Whether a `Cookie` header carries a session this token signed that has not expired.
    pub fn session_valid(&self, cookie_header: Option<&str>, now_ms: i64) -> bool {
        let Some(value) = cookie_header.and_then(session_of) else {
            return false;
        };
        let Some((expiry, mac)) = value.split_once('.') else {
            return false;
        };
        let Ok(expiry) = expiry.parse::<i64>() else {
            return false;
        };
        if expiry <= now_ms / 1000 || expiry > now_ms / 1000 + SESSION_SECS {
            return false;
        }
        let Ok(mac) = hex::decode(mac) else {
            return false;
        };
        self.mac(&format!("albra-dashboard-session:{expiry}"))
            .verify_slice(&mac)
            .is_ok()
    }
}

/// The session cookie's value in a `Cookie` header (`a=1; albra_session=…`).
fn session_of(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_601_600_000;

    fn auth() -> Auth {
        Auth::new(Secret::new("0123456789abcdef0123456789abcdef"))
    }

    #[test]
    fn only_the_token_logs_in() {
        let a = auth();
        assert!(a.token_matches("0123456789abcdef0123456789abcdef"));
        assert!(!a.token_matches("0123456789abcdef0123456789abcdeX"));
        assert!(!a.token_matches(""));
        assert!(!a.token_matches("0123456789abcdef0123456789abcdef0"));
    }

    #[test]
    fn a_session_holds_until_it_expires_and_only_under_its_token() {
        let a = auth();
        let set = a.session_cookie(NOW);
        assert!(set.contains("HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=43200"));
        let value = set.split(';').next().unwrap();
        let header = format!("theme=dark; {value}");
        assert!(a.session_valid(Some(&header), NOW));
        assert!(a.session_valid(Some(&header), NOW + SESSION_SECS * 1000 - 1000));
        assert!(!a.session_valid(Some(&header), NOW + SESSION_SECS * 1000));
        // Another token (a rotated one) signs other sessions.
        let other = Auth::new(Secret::new("another-token-of-enough-length-0000"));
        assert!(!other.session_valid(Some(&header), NOW));
        // A forged expiry, a cut MAC, garbage and no cookie all fail.
        let (exp, mac) = value
            .strip_prefix("albra_session=")
            .unwrap()
            .split_once('.')
            .unwrap();
        let later: i64 = exp.parse::<i64>().unwrap() + 1;
        for bad in [
            format!("albra_session={later}.{mac}"),
            format!("albra_session={exp}.{}", &mac[..10]),
            "albra_session=x.y".to_string(),
            "albra_session=".to_string(),
            "other=1".to_string(),
        ] {
            assert!(!a.session_valid(Some(&bad), NOW), "{bad}");
        }
        assert!(!a.session_valid(None, NOW));
        assert!(Auth::cleared_cookie().contains("Max-Age=0"));
    }
}
