//! What an API key may do, as Binance reports it (`GET /sapi/v1/account/apiRestrictions`, a
//! signed call on the spot API host), and what `albra validate` makes of it. The futures hosts do
//! not serve it: mainnet keys are asked on `api.binance.com`, a loopback test server on its own
//! base; the testnet and demo hosts have no such endpoint, so their keys are "not reported".

use super::{checked_keys, decode, Auth, BinanceClient, Inner};
use albra_core::ports::{ApiKeys, ExchangeError};
use reqwest::Method;
use serde_json::Value;
use std::sync::Arc;

/// The spot API host of Binance's mainnet, which serves `/sapi`.
pub const SPOT_MAINNET_URL: &str = "https://api.binance.com";

/// Where the key permissions of an account trading at `futures_url` can be asked: mainnet's spot
/// host for `fapi.binance.com`, the same base for a loopback server (the tests' server serves
/// `/sapi` too), none for any other host (testnet, demo).
pub fn permissions_base(futures_url: &str) -> Option<String> {
    let url = futures_url.trim().trim_end_matches('/');
    let host = albra_core::config::url_host(url);
    if host == "fapi.binance.com" {
        return Some(SPOT_MAINNET_URL.to_string());
    }
    albra_core::config::is_loopback_host(&host).then(|| url.to_string())
}

/// The permissions of one key (the fields `validate` judges; absent ones read as `false`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPermissions {
    pub ip_restrict: bool,
    pub enable_reading: bool,
    pub enable_futures: bool,
    pub enable_withdrawals: bool,
    pub enable_internal_transfer: bool,
    pub permits_universal_transfer: bool,
}

/// `validate`'s reading of a key's permissions: warnings to print, and whether the key cannot
/// trade futures at all (a failure).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PermissionVerdict {
    pub warnings: Vec<String>,
    pub futures_disabled: bool,
}

impl KeyPermissions {
    fn parse(v: &Value) -> Result<Self, String> {
        let obj = v.as_object().ok_or("expected a JSON object")?;
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        if !obj.contains_key("enableFutures") || !obj.contains_key("ipRestrict") {
            return Err("expected the fields ipRestrict and enableFutures".into());
        }
        Ok(KeyPermissions {
            ip_restrict: flag("ipRestrict"),
            enable_reading: flag("enableReading"),
            enable_futures: flag("enableFutures"),
            enable_withdrawals: flag("enableWithdrawals"),
            enable_internal_transfer: flag("enableInternalTransfer"),
            permits_universal_transfer: flag("permitsUniversalTransfer"),
        })
    }

    /// A short line of what the key may do, e.g. `reading, futures, IP-restricted`.
    pub fn summary(&self) -> String {
        let mut v = Vec::new();
        for (on, what) in [
            (self.enable_reading, "reading"),
            (self.enable_futures, "futures"),
            (self.enable_withdrawals, "WITHDRAWALS"),
            (self.enable_internal_transfer, "internal transfer"),
            (self.permits_universal_transfer, "universal transfer"),
        ] {
            if on {
                v.push(what);
            }
        }
        v.push(if self.ip_restrict {
            "IP-restricted"
        } else {
            "NOT IP-restricted"
        });
        v.join(", ")
    }

    /// Withdrawals and a key usable from any IP are warnings (the bot needs neither, and either
    /// turns a leaked key into lost funds); a key without futures permission cannot trade.
    pub fn verdict(&self) -> PermissionVerdict {
        let mut warnings = Vec::new();
        if self.enable_withdrawals {
            warnings.push("the key can WITHDRAW funds; albra never withdraws: turn withdrawals off for this key".to_string());
        }
        if !self.ip_restrict {
            warnings.push("the key is NOT IP-restricted: anyone holding it can use it from anywhere; restrict it to this host's IP".to_string());
        }
        if self.enable_internal_transfer || self.permits_universal_transfer {
            warnings.push(
                "the key can transfer funds between accounts; albra does not need it".to_string(),
            );
        }
        PermissionVerdict {
            warnings,
            futures_disabled: !self.enable_futures,
        }
    }
}

impl BinanceClient {
    /// The permissions of `keys` as the host at `base` reports them. The clock offset is this
    /// client's (measured on its futures host: call after a signed futures read succeeded).
    pub async fn key_permissions(
        &self,
        base: &str,
        keys: ApiKeys,
    ) -> Result<KeyPermissions, ExchangeError> {
        let base = base.trim().trim_end_matches('/').to_string();
        let url = crate::http::checked_base_url("Binance spot API URL", &base)
            .map_err(ExchangeError::Fatal)?;
        let i = &self.inner;
        let timeout = std::time::Duration::from_secs(10);
        let http = crate::http::client_builder(&url, timeout)
            .build()
            .map_err(|e| ExchangeError::Fatal(format!("cannot build HTTP client: {e}")))?;
        let spot = BinanceClient {
            inner: Arc::new(Inner {
                http,
                base_url: base,
                recv_window_ms: i.recv_window_ms,
                max_retry_wait: i.max_retry_wait,
                keys: Some(checked_keys(keys)?),
                link: i.link.clone(),
            }),
        };
        let endpoint = "GET /sapi/v1/account/apiRestrictions";
        let v = spot
            .call(
                Method::GET,
                "/sapi/v1/account/apiRestrictions",
                vec![],
                Auth::Signed,
            )
            .await?;
        decode(endpoint, &v, KeyPermissions::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn permissions_are_asked_where_binance_serves_them() {
        let at = permissions_base;
        assert_eq!(
            at("https://fapi.binance.com/").as_deref(),
            Some(SPOT_MAINNET_URL)
        );
        assert_eq!(
            at("http://127.0.0.1:4000").as_deref(),
            Some("http://127.0.0.1:4000")
        );
        assert_eq!(at("https://testnet.binancefuture.com"), None);
        assert_eq!(at("https://demo-fapi.binance.com"), None);
        assert_eq!(at("https://fapi.example.com"), None);
    }

    #[test]
    fn withdrawals_and_no_ip_restriction_warn_and_no_futures_fails() {
        let p = KeyPermissions::parse(&json!({"ipRestrict": true, "enableFutures": true,
            "enableReading": true, "enableWithdrawals": false}))
        .unwrap();
        assert_eq!(p.verdict(), PermissionVerdict::default());
        assert_eq!(p.summary(), "reading, futures, IP-restricted");
        let p = KeyPermissions::parse(&json!({"ipRestrict": false, "enableFutures": false,
            "enableWithdrawals": true}))
        .unwrap();
        let v = p.verdict();
        assert!(v.futures_disabled);
        assert_eq!(v.warnings.len(), 2, "{v:?}");
        assert!(v.warnings[0].contains("WITHDRAW") && v.warnings[1].contains("NOT IP-restricted"));
        assert!(KeyPermissions::parse(&json!({"enableReading": true})).is_err());
    }
}
