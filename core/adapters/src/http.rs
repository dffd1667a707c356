//! The outbound HTTP policy shared by every client that carries a secret (Binance keys and
//! signatures, the Telegram bot token in its URL): requests go to the configured host and nowhere
//! else.
//!
//! - No redirects are followed: a redirect would resend the request, API key header and signed
//!   query included, to whatever host the answer names. A 3xx comes back to the caller as an
//!   answer, which each client turns into an error naming the status.
//! - No `Referer` header, which would otherwise carry the previous URL (signature, token) along.
//! - Plain `http://` only to loopback (test servers); anything else needs `https://`, so a key is
//!   never readable on the wire.

use reqwest::Url;
use std::net::IpAddr;
use std::time::Duration;

/// True when `url` names this machine: 127.0.0.0/8, `::1` or `localhost`.
pub(crate) fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    // An IPv6 host comes back in brackets (`[::1]`).
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Parse a base URL and refuse anything but `https://`, or `http://` to loopback. `what` names
/// the client in the error (`Binance base URL`).
pub(crate) fn checked_base_url(what: &str, base: &str) -> Result<Url, String> {
    let url = Url::parse(base).map_err(|e| format!("{what} `{base}` is not a URL: {e}"))?;
    let scheme = url.scheme().to_string();
    match scheme.as_str() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "{what} `{base}` uses plain http: https is required (plain http is accepted only \
             for loopback test servers: 127.0.0.0/8, ::1, localhost)"
        )),
        other => Err(format!(
            "{what} `{base}` has scheme `{other}`: https is required"
        )),
    }
}

/// A client builder for `base` with the policy above and a whole-request `timeout`.
pub(crate) fn client_builder(base: &Url, timeout: Duration) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .user_agent(concat!("albra/", env!("CARGO_PKG_VERSION")));
    if is_loopback(base) {
        // Loopback peers (tests) must never be routed through a system proxy.
        builder.no_proxy()
    } else {
        builder
    }
}

/// A loopback HTTP/1.1 server for tests that records the raw head of every request and answers
/// each with the text `reply` returns (a whole HTTP response).
#[cfg(test)]
pub(crate) mod test_server {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    pub(crate) struct RawServer {
        pub base: String,
        heads: Arc<Mutex<Vec<String>>>,
    }

    impl RawServer {
        pub async fn start(reply: impl Fn(&str) -> String + Send + Sync + 'static) -> RawServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            let heads: Arc<Mutex<Vec<String>>> = Arc::default();
            let reply = Arc::new(reply);
            let seen = heads.clone();
            tokio::spawn(async move {
                while let Ok((mut sock, _)) = listener.accept().await {
                    let seen = seen.clone();
                    let reply = reply.clone();
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 4096];
                        let end = loop {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break p;
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        seen.lock().unwrap().push(head.clone());
                        let _ = sock.write_all(reply(&head).as_bytes()).await;
                        let _ = sock.shutdown().await;
                    });
                }
            });
            RawServer { base, heads }
        }

        /// The request heads received so far (request line and headers).
        pub fn heads(&self) -> Vec<String> {
            self.heads.lock().unwrap().clone()
        }
    }

    /// A redirect answer pointing at `location`.
    pub(crate) fn redirect(status: u16, location: &str) -> String {
        format!(
            "HTTP/1.1 {status} Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    }

    /// A 200 answer with a JSON body.
    pub(crate) fn json_ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// The request target (path and query) of a request head.
    pub(crate) fn target(head: &str) -> &str {
        head.split(' ').nth(1).unwrap_or("")
    }

    /// True when the head carries a `Referer` header (any case).
    pub(crate) fn has_referer(head: &str) -> bool {
        head.lines()
            .any(|l| l.to_ascii_lowercase().starts_with("referer:"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.2.1",
            "http://localhost:1",
            "http://LOCALHOST",
            "http://[::1]:9000",
        ] {
            assert!(is_loopback(&Url::parse(ok).unwrap()), "{ok}");
            assert!(checked_base_url("test URL", ok).is_ok(), "{ok}");
        }
        for remote in [
            "http://example.com",
            "http://10.0.0.1",
            "http://128.0.0.1",
            "http://localhost.example.com",
            "http://[::2]",
            "http://0.0.0.0",
        ] {
            assert!(!is_loopback(&Url::parse(remote).unwrap()), "{remote}");
            let e = checked_base_url("test URL", remote).unwrap_err();
            assert!(e.contains(remote) && e.contains("https is required"), "{e}");
        }
        assert!(checked_base_url("test URL", "https://fapi.binance.com").is_ok());
        let e = checked_base_url("test URL", "ftp://127.0.0.1").unwrap_err();
        assert!(e.contains("https is required"), "{e}");
        assert!(checked_base_url("test URL", "not a url").is_err());
    }
}
