//! Configuration (`config/albra.toml`): accounts, strategies, risk, notifier, exchange and job
//! settings. Loading is strict: unknown keys are errors, and every error names the file, the key
//! path and what was expected, so a bad file stops the job before anything is sent.

use crate::domain::{AccountId, Symbol, Timeframe};
use crate::ports::{KeySource, MarginType, Priority};
use crate::strategy;
use rust_decimal::Decimal;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

mod accounts;
pub use accounts::{resolve_url, AccountChoiceError, SharedSymbol, MAINNET_URL, URL_ENV};

/// A configuration error: file, key path, and what was wrong or expected.
#[derive(thiserror::Error, Debug)]
#[error("{file}: {path}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub message: String,
}

fn dec(s: &str) -> Decimal {
    s.parse().expect("valid decimal literal")
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `multi` (the default, today's behaviour): every enabled account runs; `single`: only the
    /// main account (see [`Config::main_account`]).
    #[serde(default)]
    pub mode: AccountMode,
    #[serde(default)]
    pub binance: BinanceSection,
    #[serde(default)]
    pub jobs: JobsSection,
    #[serde(default)]
    pub risk: RiskConfig,
    #[serde(default)]
    pub notifier: NotifierConfig,
    #[serde(default)]
    pub paper: PaperSection,
    #[serde(default)]
    pub telegram: TelegramSection,
    pub strategies: Vec<StrategyConfig>,
    pub accounts: Vec<AccountConfig>,
}

/// Which accounts the jobs run (top-level `mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AccountMode {
    /// Only the main account: the one with `main = true`, else the first listed.
    Single,
    /// Every enabled account (or the one `--account` names).
    #[default]
    Multi,
}

/// `[binance]`: where the REST API is. `ALBRA_BINANCE_URL` in the environment wins over `base_url`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BinanceSection {
    pub base_url: Option<String>,
    pub recv_window_ms: u64,
    pub timeout_ms: u64,
}
impl Default for BinanceSection {
    fn default() -> Self {
        BinanceSection {
            base_url: None,
            recv_window_ms: 5_000,
            timeout_ms: 10_000,
        }
    }
}

/// `[jobs]`: timing of the scheduled jobs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JobsSection {
    /// Seconds after a candle's close (exchange clock) before it is evaluated.
    pub close_delay_secs: u64,
    /// How long to keep asking for the newest closed candle before skipping it.
    pub kline_wait_secs: u64,
    /// Closed candles fetched per evaluation (at least the strategy's warm-up).
    pub history: u32,
    /// Seconds a pending entry may stay unconfirmed before sync gives up on it.
    pub pending_timeout_secs: u64,
    /// Seconds an evaluator's claim on a candle holds before a rerun may take it over, if the
    /// claiming run sent no order (it died while fetching candles or sizing). Longer than
    /// `binance.recv_window_ms`, so no request of the dead run can still arrive at the exchange.
    pub claim_lease_secs: u64,
}
impl Default for JobsSection {
    fn default() -> Self {
        JobsSection {
            close_delay_secs: 3,
            kline_wait_secs: 20,
            history: 1000,
            pending_timeout_secs: 120,
            claim_lease_secs: 60,
        }
    }
}

/// `[risk]`: account-level limits and the sizing chain (see `risk.rs` for the rules).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RiskConfig {
    pub max_positions_per_account: u32,
    /// Largest margin one position may use, as a fraction of equity.
    pub max_position_pct: Decimal,
    /// Largest total initial margin in use, as a fraction of equity.
    pub max_total_margin_pct: Decimal,
    /// Loss since the day's starting equity (fraction) that halts new entries.
    pub daily_loss_pct: Decimal,
    pub max_leverage: u32,
    /// Largest loss one entry may take at its stop, as a fraction of equity.
    pub risk_per_trade_pct: Decimal,
    /// Hour (UTC) at which the trading day, its starting equity and a daily halt reset.
    pub day_start_hour_utc: u32,
    /// `day`: a daily-loss halt lasts until the next day start; `24h`: 24 hours from the hit.
    pub halt_reset: HaltReset,
    /// Smallest spacing between two entries of one strategy on one account (seconds; 0 = none).
    pub min_entry_interval_secs: u64,
    /// Send an entry opposite a hand-made (MANUAL) position on its symbol. One-way mode nets the
    /// two, so such an entry reduces or flips the person's position on the exchange; off by
    /// default: the entry is not sent and the notification says why.
    pub entries_against_manual: bool,
    pub mdd: MddConfig,
    pub kelly: KellyConfig,
    /// `[[risk.loss_streak]]`: size cuts after consecutive losses, e.g. 3 → ×0.7.
    pub loss_streak: Vec<LossStreakCut>,
    pub volatility: VolatilityConfig,
    pub regime: RegimeConfig,
    /// `[risk.strategies.NAME]`: one strategy's own risk settings (Kelly range, …).
    pub strategies: BTreeMap<String, StrategyRisk>,
}
impl Default for RiskConfig {
    fn default() -> Self {
        RiskConfig {
            max_positions_per_account: 3,
            max_position_pct: dec("0.5"),
            max_total_margin_pct: dec("0.9"),
            daily_loss_pct: dec("0.05"),
            max_leverage: 20,
            risk_per_trade_pct: dec("0.015"),
            day_start_hour_utc: 0,
            halt_reset: HaltReset::Day,
            min_entry_interval_secs: 0,
            entries_against_manual: false,
            mdd: MddConfig::default(),
            kelly: KellyConfig::default(),
            loss_streak: vec![
                LossStreakCut {
                    losses: 3,
                    factor: dec("0.7"),
                },
                LossStreakCut {
                    losses: 5,
                    factor: dec("0.5"),
                },
                LossStreakCut {
                    losses: 7,
                    factor: dec("0.3"),
                },
            ],
            volatility: VolatilityConfig::default(),
            regime: RegimeConfig::default(),
            strategies: BTreeMap::new(),
        }
    }
}

/// How long a daily-loss halt lasts.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HaltReset {
    /// Until the next trading-day start (`day_start_hour_utc`).
    Day,
    /// 24 hours from the moment the limit was hit.
    #[serde(rename = "24h")]
    Rolling24h,
}

/// `[risk.mdd]`: drawdown levels. Thresholds are fractions of the equity peak; level `i + 1`
/// starts at `thresholds[i]` and multiplies sizes by `multipliers[i + 1]` (level 0: `multipliers[0]`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MddConfig {
    pub thresholds: Vec<Decimal>,
    pub multipliers: Vec<Decimal>,
    /// Allow new entries (at the emergency multiplier) in the deepest level.
    pub allow_entries_in_emergency: bool,
    /// Consecutive wins per recovery step, and the multiplier added per step (capped at 1).
    pub recovery_wins: u32,
    pub recovery_step: Decimal,
    /// A level is left downwards only once the drawdown is this far (as a fraction of the peak)
    /// below the level's threshold, so equity hovering at a threshold does not flip the level
    /// (and notify) on every run.
    pub hysteresis: Decimal,
}
impl Default for MddConfig {
    fn default() -> Self {
        MddConfig {
            thresholds: vec![dec("0.30"), dec("0.35"), dec("0.40"), dec("0.50")],
            multipliers: vec![dec("1.0"), dec("0.7"), dec("0.5"), dec("0.3"), dec("0.1")],
            allow_entries_in_emergency: false,
            recovery_wins: 3,
            recovery_step: dec("0.1"),
            hysteresis: dec("0.01"),
        }
    }
}

/// `[risk.kelly]`: how Kelly sizing reads a strategy's history (the range is per strategy).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KellyConfig {
    /// Closed trades looked at (the newest).
    pub lookback: usize,
    /// Below this many closed trades the strategy's base `size_pct` is used.
    pub min_trades: usize,
    /// Fraction of the full Kelly bet (0.5 = half-Kelly).
    pub fraction: Decimal,
}
impl Default for KellyConfig {
    fn default() -> Self {
        KellyConfig {
            lookback: 100,
            min_trades: 20,
            fraction: dec("0.5"),
        }
    }
}

/// One `[[risk.loss_streak]]` cut.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LossStreakCut {
    pub losses: u32,
    pub factor: Decimal,
}

/// `[risk.volatility]`: volatility targeting (size × target / realised, clamped).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VolatilityConfig {
    pub enabled: bool,
    /// Target annualised volatility (0.15 = 15 %).
    pub target_annual: Decimal,
    /// Candles of the strategy's timeframe the realised volatility is measured over.
    pub lookback: usize,
    pub min_multiplier: Decimal,
    pub max_multiplier: Decimal,
}
impl Default for VolatilityConfig {
    fn default() -> Self {
        VolatilityConfig {
            enabled: false,
            target_annual: dec("0.15"),
            lookback: 100,
            min_multiplier: dec("0.5"),
            max_multiplier: dec("1.0"),
        }
    }
}

/// `[risk.regime]`: market-regime multiplier from the efficiency ratio of recent closes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegimeConfig {
    pub enabled: bool,
    pub lookback: usize,
    /// Multiplier in a choppy market (efficiency ratio 0) and in a clean trend (ratio ≥ `trend_er`).
    pub min_multiplier: Decimal,
    pub max_multiplier: Decimal,
    pub trend_er: Decimal,
}
impl Default for RegimeConfig {
    fn default() -> Self {
        RegimeConfig {
            enabled: false,
            lookback: 50,
            min_multiplier: dec("0.6"),
            max_multiplier: dec("1.2"),
            trend_er: dec("0.5"),
        }
    }
}

/// `[notifier]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifierConfig {
    /// Send to Telegram when `TELEGRAM_BOT_TOKEN` / `TELEGRAM_CHAT_ID` (or their SSM parameters) exist.
    pub telegram: bool,
    /// Print notifications on stdout.
    pub console: bool,
    /// Lowest priority delivered, on every channel that does not set its own.
    pub min_priority: Priority,
    /// Lowest priority printed on the console (default: `min_priority`).
    pub console_min_priority: Option<Priority>,
    /// Lowest priority sent to Telegram (default: `min_priority`).
    pub telegram_min_priority: Option<Priority>,
    /// Seconds one process may spend on Telegram in all (rate-limit waits and retries
    /// included); what is left once they are spent waits for the next status report.
    pub telegram_budget_secs: u64,
}
impl Default for NotifierConfig {
    fn default() -> Self {
        NotifierConfig {
            telegram: true,
            console: true,
            min_priority: Priority::Low,
            console_min_priority: None,
            telegram_min_priority: None,
            telegram_budget_secs: Self::DEFAULT_TELEGRAM_BUDGET_SECS,
        }
    }
}
impl NotifierConfig {
    pub const DEFAULT_TELEGRAM_BUDGET_SECS: u64 = 5;
    /// The largest budget accepted: well inside the shortest Lambda timeout (position-sync, 50 s)
    /// once the job's own work is counted.
    pub const MAX_TELEGRAM_BUDGET_SECS: u64 = 20;

    /// The console's minimum: its own, else the shared one.
    pub fn console_min(&self) -> Priority {
        self.console_min_priority.unwrap_or(self.min_priority)
    }

    /// Telegram's minimum: its own, else the shared one.
    pub fn telegram_min(&self) -> Priority {
        self.telegram_min_priority.unwrap_or(self.min_priority)
    }
}

/// `[telegram]`: who may command the bot.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelegramSection {
    /// Chats whose commands the bot answers. Empty: only `TELEGRAM_CHAT_ID`, the chat the
    /// notifications go to. Any other chat is ignored (and logged once).
    pub allowed_chat_ids: Vec<i64>,
}

/// `[paper]`: the paper exchange used by replay and `albra run --paper`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PaperSection {
    pub initial_equity: Decimal,
    pub commission: Decimal,
    pub slippage: Decimal,
}
impl Default for PaperSection {
    fn default() -> Self {
        PaperSection {
            initial_equity: dec("10000"),
            commission: dec("0.0004"),
            slippage: dec("0.0001"),
        }
    }
}

/// `[[strategies]]`: one strategy and where it trades.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StrategyConfig {
    /// Registered strategy name (`EMA_CROSS`, …).
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub timeframe: Timeframe,
    pub symbols: Vec<Symbol>,
    pub leverage: u32,
    /// Margin committed per entry as a fraction of equity (notional = equity × size_pct × leverage).
    pub size_pct: Decimal,
    #[serde(default = "isolated")]
    pub margin_type: MarginType,
    /// Strategy parameters; unknown keys are rejected by the strategy.
    #[serde(default)]
    pub params: toml::Table,
}

/// `[risk.strategies.NAME]`: Kelly range, the strategy's own daily loss limit and signal spacing.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StrategyRisk {
    /// Kelly sizing within `[kelly_min_pct, kelly_max_pct]` of equity as margin (both or neither).
    pub kelly_min_pct: Option<Decimal>,
    pub kelly_max_pct: Option<Decimal>,
    /// This strategy's realised loss today (fraction of the day's starting equity) that halts its entries.
    pub daily_loss_pct: Option<Decimal>,
    /// Smallest spacing between two entries of this strategy (seconds), over `risk.min_entry_interval_secs`.
    pub min_entry_interval_secs: Option<u64>,
}

impl StrategyRisk {
    /// The Kelly range, when Kelly sizing is configured.
    pub fn kelly_range(&self) -> Option<(Decimal, Decimal)> {
        self.kelly_min_pct.zip(self.kelly_max_pct)
    }
}

fn yes() -> bool {
    true
}
fn isolated() -> MarginType {
    MarginType::Isolated
}

/// `[[accounts]]`: main account or a sub-account.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub id: AccountId,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `env` (BINANCE_API_KEY / BINANCE_SECRET_KEY), `env:SUB1` (SUB1_API_KEY / SUB1_API_SECRET),
    /// `ssm` (/albra/{stage}/{id}/binance_api_key …, stage from `ALBRA_STAGE`, default `prod`)
    /// or `ssm:/custom/prefix`.
    pub key_source: String,
    /// Names of the strategies this account runs.
    pub strategies: Vec<String>,
    #[serde(default)]
    pub risk: RiskOverrides,
    /// Trade real money: without it the live jobs, `run --live` and Lambda refuse to start
    /// (exit 2) when the Binance URL is not a test one (see [`Config::live_refusals`]).
    #[serde(default)]
    pub live: bool,
    /// The main account (`mode = "single"` runs only it). At most one; without any, the first
    /// listed account is the main one.
    #[serde(default)]
    pub main: bool,
    /// This account's Binance REST base URL, over `[binance] base_url`; `ALBRA_BINANCE_URL`
    /// still wins over both (see [`Config::account_url`]).
    #[serde(default)]
    pub base_url: Option<String>,
    /// `[accounts.allocation]`: a strategy's share of the account's equity for sizing (e.g.
    /// `TFPE = 0.6`: it sizes as if the account held 60 % of its equity). Unlisted strategies
    /// size from the whole equity; the account-wide caps stay on the whole equity.
    #[serde(default)]
    pub allocation: BTreeMap<String, Decimal>,
}

/// `[accounts.risk]`: per-account overrides of `[risk]` and of strategy sizing.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RiskOverrides {
    pub daily_loss_pct: Option<Decimal>,
    pub max_leverage: Option<u32>,
    pub size_pct: Option<Decimal>,
    pub max_positions_per_account: Option<u32>,
    pub max_position_pct: Option<Decimal>,
    pub max_total_margin_pct: Option<Decimal>,
    pub risk_per_trade_pct: Option<Decimal>,
}

impl AccountConfig {
    pub fn key_source(&self) -> Result<KeySource, String> {
        parse_key_source(&self.key_source, &self.id)
    }
}

pub fn parse_key_source(s: &str, account: &AccountId) -> Result<KeySource, String> {
    let s = s.trim();
    let (kind, arg) = match s.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (s, None),
    };
    match (kind, arg) {
        ("env", None) => Ok(KeySource::Env {
            prefix: "BINANCE".into(),
        }),
        ("env", Some(p))
            if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            Ok(KeySource::Env {
                prefix: p.to_ascii_uppercase(),
            })
        }
        ("ssm", None) => Ok(KeySource::Ssm {
            prefix: default_ssm_prefix(account),
        }),
        ("ssm", Some(p)) if p.starts_with('/') && !p.ends_with('/') => Ok(KeySource::Ssm {
            prefix: p.to_string(),
        }),
        _ => Err(format!(
            "expected `env`, `env:PREFIX` (e.g. env:SUB1), `ssm` or `ssm:/param/prefix`, got `{s}`"
        )),
    }
}

/// Whether orders sent to `base_url` move no real money: a loopback server, Binance's futures
/// testnet or its demo-trading API. Any other host is taken as real money.
pub fn is_test_exchange(base_url: &str) -> bool {
    let host = url_host(base_url);
    is_loopback_host(&host)
        || host == "testnet.binancefuture.com"
        || host == "demo-fapi.binance.com"
}

/// The host of a base URL, lower-cased, without scheme, user, port or path (`[::1]` → `::1`).
pub fn url_host(base_url: &str) -> String {
    let rest = base_url
        .trim()
        .split_once("://")
        .map_or(base_url.trim(), |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
    .to_ascii_lowercase()
}

/// Whether `host` (as [`url_host`] gives it) is this machine: `localhost` or a loopback address.
pub fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Config {
    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            path: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &file)
    }

    /// Parse and validate config text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let at = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError {
                file: file.to_string(),
                // An empty path comes from a key named `''` at the top level.
                path: if path == "." || path.is_empty() {
                    "(top level)".into()
                } else {
                    path
                },
                message: format!("{}{at}", inner.message().trim()),
            }
        })?;
        cfg.validate(file).map_err(|mut e| {
            if let Some(line) = locate_key(text, &e.path) {
                e.message = format!("{} (line {line})", e.message);
            }
            e
        })?;
        Ok(cfg)
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |path: String, message: String| ConfigError {
            file: file.to_string(),
            path,
            message,
        };
        let budget = self.notifier.telegram_budget_secs;
        if budget == 0 || budget > NotifierConfig::MAX_TELEGRAM_BUDGET_SECS {
            return Err(err(
                "notifier.telegram_budget_secs".into(),
                format!(
                    "expected 1–{} seconds, got {budget}",
                    NotifierConfig::MAX_TELEGRAM_BUDGET_SECS
                ),
            ));
        }
        let mut names = HashSet::new();
        for (i, s) in self.strategies.iter().enumerate() {
            let at = |k: &str| format!("strategies[{i}].{k}");
            if !names.insert(s.name.as_str()) {
                return Err(err(
                    at("name"),
                    format!("strategy `{}` is listed twice", s.name),
                ));
            }
            strategy::build(&s.name, &s.params, &at("params")).map_err(|e| match e {
                strategy::StrategyError::Unknown { .. } => err(at("name"), e.to_string()),
                strategy::StrategyError::BadParams { path, message } => err(path, message),
            })?;
            if !Timeframe::SCHEDULED.contains(&s.timeframe) {
                return Err(err(
                    at("timeframe"),
                    format!("expected 15m, 1h or 4h, got {}", s.timeframe),
                ));
            }
            if s.symbols.is_empty() {
                return Err(err(at("symbols"), "expected at least one symbol".into()));
            }
            for (j, sym) in s.symbols.iter().enumerate() {
                if sym.0.is_empty()
                    || !sym
                        .0
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                {
                    return Err(err(
                        format!("strategies[{i}].symbols[{j}]"),
                        format!(
                            "expected an upper-case Binance symbol like BTCUSDT, got `{}`",
                            sym.0
                        ),
                    ));
                }
            }
            if s.leverage == 0 || s.leverage > 125 {
                return Err(err(
                    at("leverage"),
                    format!("expected 1–125, got {}", s.leverage),
                ));
            }
            if s.leverage > self.risk.max_leverage {
                return Err(err(
                    at("leverage"),
                    format!(
                        "{} exceeds risk.max_leverage = {}",
                        s.leverage, self.risk.max_leverage
                    ),
                ));
            }
            if s.size_pct <= Decimal::ZERO || s.size_pct > Decimal::ONE {
                return Err(err(
                    at("size_pct"),
                    format!("expected a fraction in (0, 1], got {}", s.size_pct),
                ));
            }
            if s.size_pct > self.risk.max_position_pct {
                return Err(err(
                    at("size_pct"),
                    format!(
                        "{} exceeds risk.max_position_pct = {}",
                        s.size_pct, self.risk.max_position_pct
                    ),
                ));
            }
        }
        let fraction = |path: &str, v: Decimal| -> Result<(), ConfigError> {
            if v <= Decimal::ZERO || v > Decimal::ONE {
                return Err(err(
                    path.into(),
                    format!("expected a fraction in (0, 1], got {v}"),
                ));
            }
            Ok(())
        };
        fraction("risk.max_position_pct", self.risk.max_position_pct)?;
        if let Some(i) = self.telegram.allowed_chat_ids.iter().position(|c| *c == 0) {
            return Err(err(
                format!("telegram.allowed_chat_ids[{i}]"),
                "expected a Telegram chat id (a user's positive id, a group's negative one), got 0"
                    .into(),
            ));
        }
        fraction("risk.max_total_margin_pct", self.risk.max_total_margin_pct)?;
        fraction("risk.daily_loss_pct", self.risk.daily_loss_pct)?;
        if self.risk.max_positions_per_account == 0 {
            return Err(err(
                "risk.max_positions_per_account".into(),
                "expected at least 1".into(),
            ));
        }
        if self.paper.initial_equity <= Decimal::ZERO {
            return Err(err(
                "paper.initial_equity".into(),
                "expected a positive amount".into(),
            ));
        }
        if self.paper.commission < Decimal::ZERO || self.paper.slippage < Decimal::ZERO {
            return Err(err(
                "paper".into(),
                "commission and slippage must be ≥ 0".into(),
            ));
        }
        if self.binance.recv_window_ms == 0 || self.binance.recv_window_ms > 60_000 {
            return Err(err(
                "binance.recv_window_ms".into(),
                format!(
                    "expected 1–60000 (Binance's limit), got {}",
                    self.binance.recv_window_ms
                ),
            ));
        }
        let lease_ms = self.jobs.claim_lease_secs.saturating_mul(1000);
        // A run sends orders until its lease less recvWindow and 2 s: leave it at least 8 s.
        if lease_ms < self.binance.recv_window_ms + 10_000 || self.jobs.claim_lease_secs > 3600 {
            return Err(err(
                "jobs.claim_lease_secs".into(),
                format!(
                    "expected at least binance.recv_window_ms + 10 s ({} ms) and at most 3600 s, got {} s",
                    self.binance.recv_window_ms + 10_000,
                    self.jobs.claim_lease_secs
                ),
            ));
        }
        if self.accounts.is_empty() {
            return Err(err(
                "accounts".into(),
                "expected at least one [[accounts]] entry".into(),
            ));
        }
        let mut ids = HashSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            let at = |k: &str| format!("accounts[{i}].{k}");
            if a.id.0.is_empty()
                || !a
                    .id
                    .0
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    at("id"),
                    format!("expected letters, digits, `_` or `-`, got `{}`", a.id),
                ));
            }
            if !ids.insert(a.id.0.as_str()) {
                return Err(err(at("id"), format!("account `{}` is listed twice", a.id)));
            }
            a.key_source().map_err(|m| err(at("key_source"), m))?;
            for (j, s) in a.strategies.iter().enumerate() {
                if !names.contains(s.as_str()) {
                    return Err(err(
                        format!("accounts[{i}].strategies[{j}]"),
                        format!(
                            "no [[strategies]] entry named `{s}` (defined: {})",
                            self.strategies
                                .iter()
                                .map(|s| s.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
            }
            if let Some(p) = a.risk.daily_loss_pct {
                fraction(&at("risk.daily_loss_pct"), p)?;
            }
            if let Some(p) = a.risk.size_pct {
                fraction(&at("risk.size_pct"), p)?;
                if p > self.risk.max_position_pct {
                    return Err(err(
                        at("risk.size_pct"),
                        format!(
                            "{p} exceeds risk.max_position_pct = {}",
                            self.risk.max_position_pct
                        ),
                    ));
                }
            }
            if let Some(l) = a.risk.max_leverage {
                if l == 0 || l > 125 {
                    return Err(err(
                        at("risk.max_leverage"),
                        format!("expected 1–125, got {l}"),
                    ));
                }
            }
        }
        self.validate_risk(&names)
            .and_then(|()| self.validate_accounts())
            .map_err(|(path, message)| err(path, message))
    }

    /// Risk settings that are out of range or contradict each other; `(key path, message)`.
    fn validate_risk(&self, names: &HashSet<&str>) -> Result<(), (String, String)> {
        let r = &self.risk;
        let fraction = |path: &str, v: Decimal| {
            if v <= Decimal::ZERO || v > Decimal::ONE {
                Err((
                    path.to_string(),
                    format!("expected a fraction in (0, 1], got {v}"),
                ))
            } else {
                Ok(())
            }
        };
        fraction("risk.risk_per_trade_pct", r.risk_per_trade_pct)?;
        if r.max_position_pct > r.max_total_margin_pct {
            return Err((
                "risk.max_position_pct".into(),
                format!(
                    "{} exceeds risk.max_total_margin_pct = {}: one position could never be opened at full size",
                    r.max_position_pct, r.max_total_margin_pct
                ),
            ));
        }
        if r.risk_per_trade_pct > r.daily_loss_pct {
            return Err((
                "risk.risk_per_trade_pct".into(),
                format!(
                    "{} exceeds risk.daily_loss_pct = {}: one stopped trade would break the daily limit",
                    r.risk_per_trade_pct, r.daily_loss_pct
                ),
            ));
        }
        if r.day_start_hour_utc > 23 {
            return Err((
                "risk.day_start_hour_utc".into(),
                format!("expected 0–23, got {}", r.day_start_hour_utc),
            ));
        }
        let m = &r.mdd;
        if m.thresholds.is_empty() || m.multipliers.len() != m.thresholds.len() + 1 {
            return Err((
                "risk.mdd.multipliers".into(),
                format!(
                    "expected one multiplier per level: {} thresholds need {} multipliers, got {}",
                    m.thresholds.len(),
                    m.thresholds.len() + 1,
                    m.multipliers.len()
                ),
            ));
        }
        for (i, t) in m.thresholds.iter().enumerate() {
            fraction(&format!("risk.mdd.thresholds[{i}]"), *t)?;
            if i > 0 && *t <= m.thresholds[i - 1] {
                return Err((
                    format!("risk.mdd.thresholds[{i}]"),
                    format!(
                        "thresholds must increase: {t} after {}",
                        m.thresholds[i - 1]
                    ),
                ));
            }
        }
        for (i, x) in m.multipliers.iter().enumerate() {
            fraction(&format!("risk.mdd.multipliers[{i}]"), *x)?;
            if i > 0 && *x > m.multipliers[i - 1] {
                return Err((
                    format!("risk.mdd.multipliers[{i}]"),
                    format!(
                        "a deeper drawdown level cannot size larger: {x} after {}",
                        m.multipliers[i - 1]
                    ),
                ));
            }
        }
        if m.recovery_wins == 0 {
            return Err((
                "risk.mdd.recovery_wins".into(),
                "expected at least 1".into(),
            ));
        }
        if m.hysteresis < Decimal::ZERO || m.hysteresis > dec("0.1") {
            return Err((
                "risk.mdd.hysteresis".into(),
                format!(
                    "expected 0–0.1 (a fraction of the peak), got {}",
                    m.hysteresis
                ),
            ));
        }
        if m.recovery_step < Decimal::ZERO || m.recovery_step > Decimal::ONE {
            return Err((
                "risk.mdd.recovery_step".into(),
                format!("expected 0–1, got {}", m.recovery_step),
            ));
        }
        let k = &r.kelly;
        if k.lookback == 0 {
            return Err(("risk.kelly.lookback".into(), "expected at least 1".into()));
        }
        if k.min_trades > k.lookback {
            return Err((
                "risk.kelly.min_trades".into(),
                format!(
                    "{} exceeds risk.kelly.lookback = {}: Kelly sizing could never start",
                    k.min_trades, k.lookback
                ),
            ));
        }
        fraction("risk.kelly.fraction", k.fraction)?;
        for (i, c) in r.loss_streak.iter().enumerate() {
            fraction(&format!("risk.loss_streak[{i}].factor"), c.factor)?;
            if c.losses == 0 {
                return Err((
                    format!("risk.loss_streak[{i}].losses"),
                    "expected at least 1".into(),
                ));
            }
            if i > 0 {
                let prev = &r.loss_streak[i - 1];
                if c.losses <= prev.losses || c.factor > prev.factor {
                    return Err((
                        format!("risk.loss_streak[{i}]"),
                        format!(
                            "cuts must grow with the streak: {} losses ×{} after {} losses ×{}",
                            c.losses, c.factor, prev.losses, prev.factor
                        ),
                    ));
                }
            }
        }
        let range = |path: &str, lookback: usize, lo: Decimal, hi: Decimal| {
            if lookback < 2 {
                return Err((
                    format!("{path}.lookback"),
                    "expected at least 2".to_string(),
                ));
            }
            if lo <= Decimal::ZERO || lo > hi {
                return Err((
                    format!("{path}.min_multiplier"),
                    format!("expected 0 < min_multiplier ≤ max_multiplier ({hi}), got {lo}"),
                ));
            }
            Ok(())
        };
        let v = &r.volatility;
        range(
            "risk.volatility",
            v.lookback,
            v.min_multiplier,
            v.max_multiplier,
        )?;
        if v.target_annual <= Decimal::ZERO {
            return Err((
                "risk.volatility.target_annual".into(),
                format!("expected a positive fraction, got {}", v.target_annual),
            ));
        }
        let g = &r.regime;
        range(
            "risk.regime",
            g.lookback,
            g.min_multiplier,
            g.max_multiplier,
        )?;
        fraction("risk.regime.trend_er", g.trend_er)?;
        for (name, sr) in &r.strategies {
            let at = |k: &str| format!("risk.strategies.{name}.{k}");
            if !names.contains(name.as_str()) {
                return Err((
                    format!("risk.strategies.{name}"),
                    format!("no [[strategies]] entry named `{name}`"),
                ));
            }
            match (sr.kelly_min_pct, sr.kelly_max_pct) {
                (None, None) => {}
                (Some(lo), Some(hi)) => {
                    fraction(&at("kelly_min_pct"), lo)?;
                    fraction(&at("kelly_max_pct"), hi)?;
                    if lo > hi {
                        return Err((
                            at("kelly_min_pct"),
                            format!("{lo} exceeds {} = {hi}", at("kelly_max_pct")),
                        ));
                    }
                    if hi > r.max_position_pct {
                        return Err((
                            at("kelly_max_pct"),
                            format!(
                                "{hi} exceeds risk.max_position_pct = {}: the Kelly range lies above the largest position allowed",
                                r.max_position_pct
                            ),
                        ));
                    }
                }
                (Some(_), None) => {
                    return Err((
                        at("kelly_max_pct"),
                        "set both kelly_min_pct and kelly_max_pct, or neither".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err((
                        at("kelly_min_pct"),
                        "set both kelly_min_pct and kelly_max_pct, or neither".into(),
                    ))
                }
            }
            if let Some(d) = sr.daily_loss_pct {
                fraction(&at("daily_loss_pct"), d)?;
            }
        }
        Ok(())
    }

    /// The strategy's own risk settings (defaults when it has no `[risk.strategies.NAME]`).
    pub fn strategy_risk(&self, name: &str) -> StrategyRisk {
        self.risk.strategies.get(name).cloned().unwrap_or_default()
    }

    /// The daily loss limit of an account: its override, else `risk.daily_loss_pct`.
    pub fn daily_loss_pct(&self, account: &AccountConfig) -> Decimal {
        account
            .risk
            .daily_loss_pct
            .unwrap_or(self.risk.daily_loss_pct)
    }

    pub fn strategy(&self, name: &str) -> Option<&StrategyConfig> {
        self.strategies.iter().find(|s| s.name == name)
    }

    /// Enabled strategies of an account, in config order.
    pub fn account_strategies<'a>(
        &'a self,
        account: &'a AccountConfig,
    ) -> impl Iterator<Item = &'a StrategyConfig> + 'a {
        account
            .strategies
            .iter()
            .filter_map(move |n| self.strategy(n))
            .filter(|s| s.enabled)
    }

    /// The effective (strategy leverage capped by the account's max) leverage and size for an account.
    pub fn effective_sizing(&self, account: &AccountConfig, s: &StrategyConfig) -> (u32, Decimal) {
        let lev_cap = account.risk.max_leverage.unwrap_or(self.risk.max_leverage);
        let size = account.risk.size_pct.unwrap_or(s.size_pct);
        (s.leverage.min(lev_cap), size)
    }

    /// The Binance REST base URL of the process (its clock and market data):
    /// `ALBRA_BINANCE_URL` wins over `binance.base_url`. Each account's own is
    /// [`Config::account_url`].
    pub fn binance_url(&self) -> String {
        resolve_url(
            std::env::var(URL_ENV).ok().as_deref(),
            None,
            self.binance.base_url.as_deref(),
        )
    }
}

/// Best-effort line of a validated key path (`risk.strategies.X.kelly_max_pct`,
/// `strategies[1].size_pct`) in the TOML text: the table header, then the key inside it.
fn locate_key(text: &str, path: &str) -> Option<usize> {
    let segments: Vec<&str> = path.split('.').collect();
    let (key, tables) = segments.split_last()?;
    let key = key.split('[').next()?;
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut table = String::new();
    for seg in tables {
        let (name, index) = match seg.split_once('[') {
            Some((n, i)) => (n, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (*seg, None),
        };
        if !table.is_empty() {
            table.push('.');
        }
        table.push_str(name);
        match index {
            Some(n) => {
                let header = format!("[[{table}]]");
                start = lines
                    .iter()
                    .enumerate()
                    .skip(start)
                    .filter(|(_, l)| l.trim_start().starts_with(&header))
                    .nth(n)?
                    .0;
            }
            None => {
                let header = format!("[{table}]");
                if let Some((i, _)) = lines
                    .iter()
                    .enumerate()
                    .skip(start)
                    .find(|(_, l)| l.trim_start().starts_with(&header))
                {
                    start = i;
                }
            }
        }
    }
    lines
        .iter()
        .enumerate()
        .skip(start)
        .find(|(_, l)| {
            let t = l.trim_start();
            t.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(i, _)| i + 1)
}

/// The default config path: `$ALBRA_CONFIG`, else `config/albra.toml`.
pub fn default_path() -> PathBuf {
    std::env::var("ALBRA_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("config/albra.toml"))
}

/// The variable naming the deployment stage whose SSM parameters are read (the Lambda functions
/// get the template's `Stage` in it; it is also their metrics' `Stage` dimension).
pub const STAGE_VAR: &str = "ALBRA_STAGE";
/// The stage SSM names use when [`STAGE_VAR`] is unset: what `make deploy` deploys by default.
pub const DEFAULT_SSM_STAGE: &str = "prod";

/// The stage the SSM names live under: [`STAGE_VAR`], default [`DEFAULT_SSM_STAGE`]. Every name
/// is under `/albra/{stage}/`, so a stage's functions are granted that path only and cannot read
/// another stage's keys.
pub fn ssm_stage() -> String {
    std::env::var(STAGE_VAR)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_SSM_STAGE.to_string())
}

/// An account's SSM prefix in a stage: `/albra/{stage}/{account}`.
pub fn ssm_account_prefix(stage: &str, account: &AccountId) -> String {
    format!("/albra/{stage}/{}", account.as_str())
}

/// The default SSM prefix of an account: `/albra/{stage}/{account}`, stage from [`ssm_stage`].
pub fn default_ssm_prefix(account: &AccountId) -> String {
    ssm_account_prefix(&ssm_stage(), account)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[risk]
max_positions_per_account = 3

[[strategies]]
name = "EMA_CROSS"
timeframe = "1h"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[strategies.params]
fast = 50
slow = 200

[[accounts]]
id = "main"
key_source = "env"
strategies = ["EMA_CROSS"]

[[accounts]]
id = "sub1"
key_source = "env:SUB1"
strategies = ["EMA_CROSS"]
[accounts.risk]
max_leverage = 2
"#;

    #[test]
    fn parses_the_good_file() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        assert_eq!(c.accounts.len(), 2);
        assert_eq!(c.strategies[0].timeframe, Timeframe::H1);
        assert_eq!(
            c.accounts[1].key_source().unwrap(),
            KeySource::Env {
                prefix: "SUB1".into()
            }
        );
        let (lev, size) = c.effective_sizing(&c.accounts[1], &c.strategies[0]);
        assert_eq!((lev, size), (2, dec("0.1")));
        assert_eq!(c.jobs.close_delay_secs, 3);
    }

    fn bad(text: &str) -> String {
        Config::parse(text, "cfg.toml").unwrap_err().to_string()
    }

    #[test]
    fn telegram_chats_are_listed_and_unknown_keys_refused() {
        let with = |section: &str| {
            GOOD.replacen("[[strategies]]", &format!("{section}\n[[strategies]]"), 1)
        };
        let c = Config::parse(
            &with("[telegram]\nallowed_chat_ids = [42, -100123]"),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.telegram.allowed_chat_ids, [42, -100123]);
        assert!(Config::parse(GOOD, "t.toml")
            .unwrap()
            .telegram
            .allowed_chat_ids
            .is_empty());
        let e = bad(&with("[telegram]\nallowed_chats = [42]"));
        assert!(e.contains("allowed_chats"), "{e}");
        let e = bad(&with("[telegram]\nallowed_chat_ids = [0]"));
        assert!(e.contains("telegram.allowed_chat_ids[0]"), "{e}");
    }

    #[test]
    fn test_exchanges_are_loopback_testnet_and_demo_only() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.8.9.10",
            "http://localhost:1/",
            "http://[::1]:443/fapi",
            "https://testnet.binancefuture.com",
            "https://DEMO-FAPI.binance.com/",
        ] {
            assert!(is_test_exchange(url), "{url}");
        }
        for url in [
            "https://fapi.binance.com",
            "https://fapi.binance.com:443/",
            "https://testnet.binancefuture.com.evil.example",
            "https://127.0.0.1.example.com",
            "https://user@fapi.binance.com",
            "https://10.0.0.1",
            "",
        ] {
            assert!(!is_test_exchange(url), "{url}");
        }
    }

    #[test]
    fn real_money_needs_live_on_every_enabled_account() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        let r = c.live_refusals_with(Some("https://fapi.binance.com"));
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].starts_with("accounts[0] (`main`)") && r[0].contains("live = true"));
        assert!(c.live_refusals_with(Some("http://127.0.0.1:9")).is_empty());
        let opted = GOOD.replace(
            "key_source = \"env:SUB1\"",
            "key_source = \"env:SUB1\"\nlive = true",
        );
        let c = Config::parse(&opted, "t.toml").unwrap();
        let r = c.live_refusals_with(Some("https://fapi.binance.com"));
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].contains("`main`"), "{r:?}");
        let c = Config::parse(
            &opted.replace("id = \"main\"", "id = \"main\"\nenabled = false"),
            "t.toml",
        )
        .unwrap();
        assert!(c
            .live_refusals_with(Some("https://fapi.binance.com"))
            .is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = bad(&GOOD.replace("max_positions_per_account", "max_positons"));
        assert!(e.starts_with("cfg.toml: risk"), "{e}");
        assert!(e.contains("max_positons"), "{e}");
        let e = bad(&GOOD.replace("fast = 50", "fastt = 50"));
        assert!(e.contains("strategies[0].params"), "{e}");
        assert!(e.contains("fastt"), "{e}");
        // An empty key named no path at all before (found by fuzzing).
        let e = Config::parse("['']\n", "cfg.toml").unwrap_err();
        assert_eq!(e.path, "(top level)", "{e}");
        assert!(e.message.contains("unknown field ``"), "{e}");
    }

    #[test]
    fn wrong_types_and_values_name_the_key() {
        let e = bad(&GOOD.replace("leverage = 3", "leverage = \"three\""));
        assert!(e.contains("strategies[0].leverage"), "{e}");
        assert!(e.contains("line"), "{e}");
        let e = bad(&GOOD.replace("timeframe = \"1h\"", "timeframe = \"2h\""));
        assert!(e.contains("strategies[0].timeframe"), "{e}");
        let e = bad(&GOOD.replace("size_pct = 0.1", "size_pct = 1.5"));
        assert!(e.contains("strategies[0].size_pct"), "{e}");
        let e = bad(&GOOD.replace("key_source = \"env:SUB1\"", "key_source = \"vault\""));
        assert!(e.contains("accounts[1].key_source"), "{e}");
        let e = bad(&GOOD.replace(
            "strategies = [\"EMA_CROSS\"]\n\n[[accounts]]",
            "strategies = [\"TFPX\"]\n\n[[accounts]]",
        ));
        assert!(
            e.contains("accounts[0].strategies[0]") && e.contains("TFPX"),
            "{e}"
        );
        let e = bad(&GOOD.replace("name = \"EMA_CROSS\"", "name = \"NOPE\""));
        assert!(
            e.contains("strategies[0].name") && e.contains("EMA_CROSS"),
            "{e}"
        );
    }

    /// Each channel's minimum falls back to `min_priority`; unknown keys, bad priorities and a
    /// budget out of range name their key.
    #[test]
    fn notifier_minimums_per_channel_and_the_telegram_budget() {
        let with = |section: &str| {
            GOOD.replacen("[[strategies]]", &format!("{section}\n[[strategies]]"), 1)
        };
        let c = Config::parse(
            &with("[notifier]\nmin_priority = \"MEDIUM\"\ntelegram_min_priority = \"HIGH\""),
            "t.toml",
        )
        .unwrap();
        assert_eq!(c.notifier.console_min(), Priority::Medium);
        assert_eq!(c.notifier.telegram_min(), Priority::High);
        assert_eq!(c.notifier.telegram_budget_secs, 5);
        let c = Config::parse(
            &with("[notifier]\nconsole_min_priority = \"CRITICAL\""),
            "t",
        )
        .unwrap();
        assert_eq!(
            (c.notifier.console_min(), c.notifier.telegram_min()),
            (Priority::Critical, Priority::Low)
        );
        let e = bad(&with("[notifier]\ntelegram_min_priority = \"URGENT\""));
        assert!(e.contains("notifier.telegram_min_priority"), "{e}");
        let e = bad(&with("[notifier]\nconsole_minimum = \"LOW\""));
        assert!(e.contains("console_minimum"), "{e}");
        for budget in ["0", "60"] {
            let e = bad(&with(&format!(
                "[notifier]\ntelegram_budget_secs = {budget}"
            )));
            assert!(e.contains("notifier.telegram_budget_secs"), "{e}");
        }
    }

    #[test]
    fn contradicting_risk_limits_are_rejected_naming_both_keys() {
        let kelly = GOOD.replace(
            "[[accounts]]\nid = \"main\"",
            "[risk.strategies.EMA_CROSS]\nkelly_min_pct = 0.05\nkelly_max_pct = 0.6\n\n[[accounts]]\nid = \"main\"",
        );
        let e = bad(&kelly);
        assert!(e.contains("risk.strategies.EMA_CROSS.kelly_max_pct"), "{e}");
        assert!(e.contains("risk.max_position_pct"), "{e}");
        assert!(e.contains("(line 17)"), "{e}");
        let ok = kelly.replace("kelly_max_pct = 0.6", "kelly_max_pct = 0.2");
        let c = Config::parse(&ok, "t.toml").unwrap();
        assert_eq!(
            c.strategy_risk("EMA_CROSS").kelly_range(),
            Some((dec("0.05"), dec("0.2")))
        );
        let e = bad(&GOOD.replace(
            "max_positions_per_account = 3",
            "max_positions_per_account = 3\nmax_position_pct = 0.95\nmax_total_margin_pct = 0.9",
        ));
        assert!(
            e.contains("risk.max_position_pct") && e.contains("risk.max_total_margin_pct"),
            "{e}"
        );
        let e = bad(&GOOD.replace(
            "max_positions_per_account = 3",
            "max_positions_per_account = 3\nrisk_per_trade_pct = 0.06",
        ));
        assert!(
            e.contains("risk.risk_per_trade_pct") && e.contains("risk.daily_loss_pct"),
            "{e}"
        );
        let e = bad(&GOOD.replace(
            "max_positions_per_account = 3",
            "max_positions_per_account = 3\n[risk.mdd]\nmultipliers = [1.0, 0.5, 0.7, 0.3, 0.1]",
        ));
        assert!(e.contains("risk.mdd.multipliers[2]"), "{e}");
        let e = bad(&GOOD.replace(
            "max_positions_per_account = 3",
            "max_positions_per_account = 3\n[risk.kelly]\nmin_trades = 200",
        ));
        assert!(
            e.contains("risk.kelly.min_trades") && e.contains("lookback"),
            "{e}"
        );
        let e = bad(&GOOD.replace(
            "[[accounts]]\nid = \"main\"",
            "[risk.strategies.TFPE]\ndaily_loss_pct = 0.03\n\n[[accounts]]\nid = \"main\"",
        ));
        assert!(e.contains("risk.strategies.TFPE"), "{e}");
        let e = bad(&GOOD.replace(
            "max_positions_per_account = 3",
            "max_positions_per_account = 3\nhalt_reset = \"weekly\"",
        ));
        assert!(e.contains("risk.halt_reset"), "{e}");
    }

    #[test]
    fn env_url_wins() {
        let c = Config::parse(GOOD, "t.toml").unwrap();
        // Only checks the fallback when the variable is unset in this test process.
        if std::env::var("ALBRA_BINANCE_URL").is_err() {
            assert_eq!(c.binance_url(), "https://fapi.binance.com");
        }
    }
}
