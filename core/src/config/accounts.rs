//! What the config says about each account beyond its keys: which accounts a job runs (`mode`,
//! the main account, `--account`), where each one's orders go (`base_url`), the risk limits
//! that apply to it (`[accounts.risk]` over `[risk]`), each strategy's share of its equity
//! (`[accounts.allocation]`), and which of its strategies share a symbol. Pure functions over
//! [`Config`]; their checks run in [`Config::parse`].

use super::{AccountConfig, AccountMode, Config, RiskConfig};
use crate::domain::{AccountId, Symbol};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// Binance's USDⓈ-M REST API, when nothing else is configured.
pub const MAINNET_URL: &str = "https://fapi.binance.com";
/// The environment variable whose URL wins over every configured one (tests, testnet).
pub const URL_ENV: &str = "ALBRA_BINANCE_URL";

/// Why a job cannot run the accounts it was asked for.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum AccountChoiceError {
    #[error(
        "--account {asked}: no such account in the config; accounts this job can run: {valid}"
    )]
    Unknown { asked: String, valid: String },
    #[error("--account {asked}: the account is disabled (enabled = false); accounts this job can run: {valid}")]
    Disabled { asked: String, valid: String },
    #[error("--account {asked}: mode = \"single\" runs only the main account `{main}`; set mode = \"multi\" to run another one")]
    NotMain { asked: String, main: String },
}

/// Two or more enabled strategies of one account trading one symbol: in one-way mode they share
/// the symbol's net position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedSymbol {
    pub account: AccountId,
    pub symbol: Symbol,
    pub strategies: Vec<String>,
}

impl std::fmt::Display for SharedSymbol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "account {}: strategies {} all trade {} (they share its net position)",
            self.account,
            self.strategies.join(", "),
            self.symbol
        )
    }
}

/// The first non-empty of the environment's URL, the account's and the `[binance]` one, else
/// mainnet; trimmed, without a trailing `/`.
pub fn resolve_url(env: Option<&str>, account: Option<&str>, section: Option<&str>) -> String {
    [env, account, section]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .unwrap_or(MAINNET_URL)
        .trim_end_matches('/')
        .to_string()
}

fn env_url() -> Option<String> {
    std::env::var(URL_ENV).ok()
}

impl Config {
    /// The main account: the one with `main = true`, else the first listed (validation makes
    /// sure there is at most one and at least one account).
    pub fn main_account(&self) -> &AccountConfig {
        self.accounts
            .iter()
            .find(|a| a.main)
            .unwrap_or(&self.accounts[0])
    }

    /// The accounts a job runs: by `mode`, narrowed to `only` (`--account`) when given. An
    /// unknown, disabled or (in single mode) non-main `only` is an error naming the valid ones.
    pub fn running_accounts(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<&AccountConfig>, AccountChoiceError> {
        let by_mode: Vec<&AccountConfig> = match self.mode {
            AccountMode::Multi => self.accounts.iter().filter(|a| a.enabled).collect(),
            AccountMode::Single => vec![self.main_account()],
        };
        let Some(asked) = only else {
            return Ok(by_mode);
        };
        let valid = || {
            by_mode
                .iter()
                .map(|a| a.id.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(a) = by_mode.iter().find(|a| a.id.0 == asked) {
            return Ok(vec![*a]);
        }
        let asked = asked.to_string();
        match self.accounts.iter().find(|a| a.id.0 == asked) {
            None => Err(AccountChoiceError::Unknown {
                asked,
                valid: valid(),
            }),
            Some(a) if !a.enabled => Err(AccountChoiceError::Disabled {
                asked,
                valid: valid(),
            }),
            Some(_) => Err(AccountChoiceError::NotMain {
                asked,
                main: self.main_account().id.0.clone(),
            }),
        }
    }

    /// Keep only the accounts a job runs (see [`Config::running_accounts`]), so everything built
    /// from this config (clients, the live opt-in, schedules, metrics) concerns them alone.
    pub fn retain_running(&mut self, only: Option<&str>) -> Result<(), AccountChoiceError> {
        let keep: Vec<AccountId> = self
            .running_accounts(only)?
            .into_iter()
            .map(|a| a.id.clone())
            .collect();
        self.accounts.retain(|a| keep.contains(&a.id));
        // The main account is running or gone; single mode over the kept list runs them all.
        self.mode = AccountMode::Multi;
        Ok(())
    }

    /// The account's Binance REST base URL: `ALBRA_BINANCE_URL`, else its `base_url`, else
    /// `[binance] base_url`, else mainnet.
    pub fn account_url(&self, a: &AccountConfig) -> String {
        self.account_url_with(env_url().as_deref(), a)
    }

    /// [`Config::account_url`] with the environment's URL given.
    pub fn account_url_with(&self, env: Option<&str>, a: &AccountConfig) -> String {
        resolve_url(env, a.base_url.as_deref(), self.binance.base_url.as_deref())
    }

    /// `[risk]` with the account's `[accounts.risk]` overrides applied: the limits its entries
    /// are sized and refused by.
    pub fn account_risk(&self, a: &AccountConfig) -> RiskConfig {
        let o = &a.risk;
        let r = &self.risk;
        RiskConfig {
            max_positions_per_account: o
                .max_positions_per_account
                .unwrap_or(r.max_positions_per_account),
            max_position_pct: o.max_position_pct.unwrap_or(r.max_position_pct),
            max_total_margin_pct: o.max_total_margin_pct.unwrap_or(r.max_total_margin_pct),
            risk_per_trade_pct: o.risk_per_trade_pct.unwrap_or(r.risk_per_trade_pct),
            daily_loss_pct: o.daily_loss_pct.unwrap_or(r.daily_loss_pct),
            max_leverage: o.max_leverage.unwrap_or(r.max_leverage),
            ..r.clone()
        }
    }

    /// The strategy's share of the account's equity for sizing (1 when unallocated).
    pub fn allocation(&self, a: &AccountConfig, strategy: &str) -> Decimal {
        a.allocation.get(strategy).copied().unwrap_or(Decimal::ONE)
    }

    /// Symbols traded by more than one enabled strategy of the account, in symbol order.
    pub fn shared_symbols(&self, a: &AccountConfig) -> Vec<SharedSymbol> {
        let mut by_symbol: BTreeMap<&Symbol, Vec<String>> = BTreeMap::new();
        for s in self.account_strategies(a) {
            for sym in &s.symbols {
                by_symbol.entry(sym).or_default().push(s.name.clone());
            }
        }
        by_symbol
            .into_iter()
            .filter(|(_, v)| v.len() > 1)
            .map(|(symbol, strategies)| SharedSymbol {
                account: a.id.clone(),
                symbol: symbol.clone(),
                strategies,
            })
            .collect()
    }

    /// [`Config::shared_symbols`] of every enabled account: what config load and job start warn of.
    pub fn shared_symbol_warnings(&self) -> Vec<SharedSymbol> {
        self.accounts
            .iter()
            .filter(|a| a.enabled)
            .flat_map(|a| self.shared_symbols(a))
            .collect()
    }

    /// Why the live jobs must not start: one line per enabled account that would trade real
    /// money (its own URL is not a test one) without `live = true`. Empty when they may start.
    pub fn live_refusals(&self) -> Vec<String> {
        self.live_refusals_with(env_url().as_deref())
    }

    /// [`Config::live_refusals`] with the environment's URL given.
    pub fn live_refusals_with(&self, env: Option<&str>) -> Vec<String> {
        self.accounts
            .iter()
            .enumerate()
            .filter(|(_, a)| a.enabled && !a.live)
            .filter_map(|(i, a)| {
                let url = self.account_url_with(env, a);
                (!super::is_test_exchange(&url)).then(|| {
                    format!(
                        "accounts[{i}] (`{}`): orders would go to {url} with real money, and `live = true` is not set for this account; set it under this [[accounts]] entry to trade it, or point ALBRA_BINANCE_URL (or its base_url) at the testnet",
                        a.id
                    )
                })
            })
            .collect()
    }

    /// The account-level checks: the main account, base URLs, risk overrides and allocations;
    /// `(key path, message)`.
    pub(super) fn validate_accounts(&self) -> Result<(), (String, String)> {
        let mut main: Option<&AccountConfig> = None;
        for (i, a) in self.accounts.iter().enumerate() {
            let at = |k: &str| format!("accounts[{i}].{k}");
            if a.main {
                if let Some(m) = main {
                    return Err((
                        at("main"),
                        format!(
                            "only one account can be main; `{}` already is (`{}` says so too)",
                            m.id, a.id
                        ),
                    ));
                }
                main = Some(a);
            }
            if let Some(u) = &a.base_url {
                let u = u.trim();
                if !(u.starts_with("https://") || u.starts_with("http://")) || u.len() < 9 {
                    return Err((
                        at("base_url"),
                        format!("expected an http(s) URL like https://testnet.binancefuture.com, got `{u}`"),
                    ));
                }
            }
            self.validate_account_risk(a, &at)?;
            self.validate_allocation(a, &at)?;
        }
        let m = self.main_account();
        if self.mode == AccountMode::Single && !m.enabled {
            return Err((
                "mode".into(),
                format!(
                    "mode = \"single\" runs only the main account `{}`, which is disabled (enabled = false)",
                    m.id
                ),
            ));
        }
        Ok(())
    }

    fn validate_account_risk(
        &self,
        a: &AccountConfig,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(), (String, String)> {
        let o = &a.risk;
        for (key, v) in [
            ("max_position_pct", o.max_position_pct),
            ("max_total_margin_pct", o.max_total_margin_pct),
            ("risk_per_trade_pct", o.risk_per_trade_pct),
        ] {
            if let Some(v) = v.filter(|v| *v <= Decimal::ZERO || *v > Decimal::ONE) {
                return Err((
                    at(&format!("risk.{key}")),
                    format!("expected a fraction in (0, 1], got {v}"),
                ));
            }
        }
        if o.max_positions_per_account == Some(0) {
            return Err((
                at("risk.max_positions_per_account"),
                "expected at least 1".into(),
            ));
        }
        // The same contradictions `[risk]` is checked for, on the limits this account gets.
        let r = self.account_risk(a);
        if r.max_position_pct > r.max_total_margin_pct {
            return Err((
                at("risk.max_position_pct"),
                format!(
                    "{} exceeds the account's max_total_margin_pct = {}: one position could never be opened at full size",
                    r.max_position_pct, r.max_total_margin_pct
                ),
            ));
        }
        if r.risk_per_trade_pct > r.daily_loss_pct {
            return Err((
                at("risk.risk_per_trade_pct"),
                format!(
                    "{} exceeds the account's daily_loss_pct = {}: one stopped trade would break the daily limit",
                    r.risk_per_trade_pct, r.daily_loss_pct
                ),
            ));
        }
        Ok(())
    }

    fn validate_allocation(
        &self,
        a: &AccountConfig,
        at: &dyn Fn(&str) -> String,
    ) -> Result<(), (String, String)> {
        for (name, share) in &a.allocation {
            let key = at(&format!("allocation.{name}"));
            if !a.strategies.iter().any(|s| s == name) {
                return Err((
                    key,
                    format!(
                        "`{name}` is not one of this account's strategies ({})",
                        a.strategies.join(", ")
                    ),
                ));
            }
            if *share <= Decimal::ZERO || *share > Decimal::ONE {
                return Err((key, format!("expected a share in (0, 1], got {share}")));
            }
        }
        let sum: Decimal = a.allocation.values().sum();
        if sum > Decimal::ONE {
            return Err((
                at("allocation"),
                format!(
                    "the shares add up to {sum}, more than the whole equity (at most 1): {}",
                    a.allocation
                        .iter()
                        .map(|(k, v)| format!("{k} = {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[strategies]]
name = "EMA_CROSS"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1

[[strategies]]
name = "TFPE"
timeframe = "4h"
symbols = ["ETHUSDT", "BTCUSDT"]
leverage = 5
size_pct = 0.2

[[accounts]]
id = "main"
key_source = "env"
strategies = ["EMA_CROSS"]

[[accounts]]
id = "sub1"
key_source = "env:SUB1"
strategies = ["EMA_CROSS", "TFPE"]

[[accounts]]
id = "sub2"
enabled = false
key_source = "env:SUB2"
strategies = ["TFPE"]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(text, "t.toml").unwrap()
    }
    fn bad(text: &str) -> String {
        Config::parse(text, "t.toml").unwrap_err().to_string()
    }
    fn ids(v: Vec<&AccountConfig>) -> Vec<&str> {
        v.into_iter().map(|a| a.id.0.as_str()).collect()
    }
    /// `TWO` with `extra` at the end of the account entry `id = "ID"` (after its strategies).
    fn under(id: &str, extra: &str) -> String {
        let at = TWO.find(&format!("id = \"{id}\"\n")).unwrap();
        let line = at + TWO[at..].find("strategies = ").unwrap();
        let end = line + TWO[line..].find('\n').unwrap() + 1;
        format!("{}{extra}\n{}", &TWO[..end], &TWO[end..])
    }

    #[test]
    fn multi_is_the_default_and_runs_every_enabled_account() {
        let c = parse(TWO);
        assert_eq!(c.mode, AccountMode::Multi);
        assert_eq!(ids(c.running_accounts(None).unwrap()), ["main", "sub1"]);
        assert_eq!(ids(c.running_accounts(Some("sub1")).unwrap()), ["sub1"]);
    }

    #[test]
    fn single_runs_the_main_account_first_listed_or_marked() {
        let c = parse(&format!("mode = \"single\"\n{TWO}"));
        assert_eq!(ids(c.running_accounts(None).unwrap()), ["main"]);
        let c = parse(&format!(
            "mode = \"single\"\n{}",
            under("sub1", "main = true")
        ));
        assert_eq!(c.main_account().id.0, "sub1");
        assert_eq!(ids(c.running_accounts(None).unwrap()), ["sub1"]);
        let e = c.running_accounts(Some("main")).unwrap_err().to_string();
        assert!(
            e.contains("--account main") && e.contains("main account `sub1`"),
            "{e}"
        );
        let e = bad(&format!(
            "mode = \"single\"\n{}",
            under("sub2", "main = true")
        ));
        assert!(
            e.contains("t.toml: mode:") && e.contains("`sub2`") && e.contains("disabled"),
            "{e}"
        );
        let e = bad(&format!("mode = \"solo\"\n{TWO}"));
        assert!(e.contains("mode") && e.contains("solo"), "{e}");
        let two_mains = under("sub1", "main = true").replacen(
            "id = \"main\"\n",
            "id = \"main\"\nmain = true\n",
            1,
        );
        let e = bad(&two_mains);
        assert!(
            e.contains("accounts[1].main") && e.contains("`main` already is"),
            "{e}"
        );
    }

    #[test]
    fn an_account_choice_that_cannot_run_names_it_and_the_valid_ones() {
        let c = parse(TWO);
        let e = c.running_accounts(Some("nope")).unwrap_err().to_string();
        assert!(
            e.contains("--account nope") && e.contains("no such account"),
            "{e}"
        );
        assert!(e.contains("main, sub1"), "{e}");
        let e = c.running_accounts(Some("sub2")).unwrap_err().to_string();
        assert!(
            e.contains("--account sub2") && e.contains("disabled") && e.contains("main, sub1"),
            "{e}"
        );
        let mut c = c;
        c.retain_running(Some("sub1")).unwrap();
        assert_eq!(ids(c.accounts.iter().collect()), ["sub1"]);
    }

    #[test]
    fn account_urls_env_then_account_then_section_then_mainnet() {
        let text = format!(
            "[binance]\nbase_url = \"https://testnet.binancefuture.com/\"\n{}",
            under("sub1", "base_url = \"http://127.0.0.1:9/\"")
        );
        let c = parse(&text);
        let (main, sub1) = (&c.accounts[0], &c.accounts[1]);
        assert_eq!(
            c.account_url_with(None, main),
            "https://testnet.binancefuture.com"
        );
        assert_eq!(c.account_url_with(None, sub1), "http://127.0.0.1:9");
        assert_eq!(
            c.account_url_with(Some("http://[::1]:7"), sub1),
            "http://[::1]:7"
        );
        assert_eq!(c.account_url_with(Some(" "), sub1), "http://127.0.0.1:9");
        assert_eq!(parse(TWO).account_url_with(None, main), MAINNET_URL);
        let e = bad(&under("sub1", "base_url = \"fapi.binance.com\""));
        assert!(
            e.contains("accounts[1].base_url") && e.contains("http(s) URL"),
            "{e}"
        );
    }

    #[test]
    fn live_refusals_judge_each_account_by_its_own_url() {
        let c = parse(&under(
            "sub1",
            "base_url = \"https://testnet.binancefuture.com\"",
        ));
        let r = c.live_refusals_with(None);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(
            r[0].contains("`main`") && r[0].contains(MAINNET_URL),
            "{r:?}"
        );
        let c = parse(&under("sub1", "base_url = \"https://fapi.binance.com\""));
        let c = Config {
            binance: crate::config::BinanceSection {
                base_url: Some("http://127.0.0.1:1".into()),
                ..Default::default()
            },
            ..c
        };
        let r = c.live_refusals_with(None);
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("`sub1`"), "{r:?}");
        assert!(c.live_refusals_with(Some("http://127.0.0.1:2")).is_empty());
    }

    #[test]
    fn account_risk_overrides_each_limit_and_are_checked() {
        let c = parse(&under(
            "sub1",
            "[accounts.risk]\nmax_positions_per_account = 1\nmax_position_pct = 0.2\nmax_total_margin_pct = 0.4\nrisk_per_trade_pct = 0.01\ndaily_loss_pct = 0.02\nmax_leverage = 4",
        ));
        let r = c.account_risk(&c.accounts[1]);
        assert_eq!(r.max_positions_per_account, 1);
        assert_eq!(r.max_position_pct, "0.2".parse().unwrap());
        assert_eq!(r.max_total_margin_pct, "0.4".parse().unwrap());
        assert_eq!(r.risk_per_trade_pct, "0.01".parse().unwrap());
        assert_eq!(r.daily_loss_pct, "0.02".parse().unwrap());
        assert_eq!(r.max_leverage, 4);
        assert_eq!(c.account_risk(&c.accounts[0]), c.risk);
        for (line, key, says) in [
            (
                "max_positions_per_account = 0",
                "max_positions_per_account",
                "at least 1",
            ),
            ("max_position_pct = 0", "max_position_pct", "(0, 1]"),
            (
                "max_total_margin_pct = 1.5",
                "max_total_margin_pct",
                "(0, 1]",
            ),
            ("risk_per_trade_pct = -0.1", "risk_per_trade_pct", "(0, 1]"),
            (
                "max_total_margin_pct = 0.3",
                "max_position_pct",
                "max_total_margin_pct = 0.3",
            ),
            (
                "risk_per_trade_pct = 0.06",
                "risk_per_trade_pct",
                "daily_loss_pct = 0.05",
            ),
        ] {
            let e = bad(&under("sub1", &format!("[accounts.risk]\n{line}")));
            assert!(
                e.contains(&format!("accounts[1].risk.{key}")) && e.contains(says),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn allocations_are_shares_of_the_accounts_own_strategies() {
        let c = parse(&under(
            "sub1",
            "[accounts.allocation]\nTFPE = 0.6\nEMA_CROSS = 0.4",
        ));
        assert_eq!(c.allocation(&c.accounts[1], "TFPE"), "0.6".parse().unwrap());
        assert_eq!(c.allocation(&c.accounts[0], "EMA_CROSS"), Decimal::ONE);
        let e = bad(&under("main", "[accounts.allocation]\nTFPE = 0.5"));
        assert!(
            e.contains("accounts[0].allocation.TFPE")
                && e.contains("not one of this account's strategies"),
            "{e}"
        );
        let e = bad(&under("sub1", "[accounts.allocation]\nTFPE = 0"));
        assert!(
            e.contains("accounts[1].allocation.TFPE") && e.contains("(0, 1]"),
            "{e}"
        );
        let e = bad(&under(
            "sub1",
            "[accounts.allocation]\nTFPE = 0.7\nEMA_CROSS = 0.4",
        ));
        assert!(
            e.contains("accounts[1].allocation:") && e.contains("1.1"),
            "{e}"
        );
    }

    #[test]
    fn shared_symbols_name_account_symbol_and_strategies() {
        let c = parse(TWO);
        let w = c.shared_symbol_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            w[0].to_string(),
            "account sub1: strategies EMA_CROSS, TFPE all trade BTCUSDT (they share its net position)"
        );
    }
}
