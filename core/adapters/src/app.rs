//! Wiring shared by the binaries: from a config, a state spec and a mode to a ready [`Engine`].
//! Clients, secrets and the store are built here once per process (once per cold start in Lambda),
//! never inside a job.

use crate::binance::{BinanceClient, BinanceConfig};
use crate::secrets::{ChainSecrets, EnvSecrets, TelegramSource, TELEGRAM_TOKEN_VAR};
use crate::store::open_store;
use crate::telegram::TelegramNotifier;
use albra_core::config::Config;
use albra_core::domain::Notional;
use albra_core::jobs::{AccountRuntime, Engine, EngineTiming, Sizing};
use albra_core::notify::{
    ConsoleNotifier, Deferring, FanoutNotifier, MinPriority, SendBudget, StoredDedupe,
};
use albra_core::paper::{LiveMarket, MarketData, PaperConfig, PaperExchange};
use albra_core::ports::{Clock, Exchange, Notifier, Priority, Secrets, SystemClock};
use albra_core::state::StateRepo;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Where orders go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Real orders with each account's keys (or whatever `ALBRA_BINANCE_URL` points at).
    Live,
    /// Live public market data, fills simulated in process.
    Paper,
    /// The accounts' signed clients without the live opt-in, for commands that only read
    /// (`balance`): nothing in them sends an order.
    ReadOnly,
}

#[derive(thiserror::Error, Debug)]
#[error("{0}")]
pub struct AppError(pub String);

/// How old a measurement of the exchange clock may be and still date a job's step: the
/// evaluator reads the clock at its start and again before it waits for the close, and a
/// process measures it once for both (and for every account's signatures). Each measurement
/// is moved on by the monotonic clock, and a -1021 answer measures it again.
pub const CLOCK_REUSE: Duration = Duration::from_secs(5);

/// A ready engine plus the exchange whose clock the jobs follow.
pub struct App {
    pub engine: Engine,
    /// Public client for the exchange clock and market data.
    pub clock_exchange: Arc<dyn Exchange>,
    /// The same client, typed: the account clients share its clock, weight gauge and
    /// exchangeInfo table (see [`BinanceClient::with_keys`]).
    pub binance: BinanceClient,
    /// The Telegram channel itself (no folding, dedupe or budget), when configured: the status
    /// report sends through it.
    pub telegram: Option<Arc<TelegramNotifier>>,
    /// The process's Telegram budget (`notifier.telegram_budget_secs`), shared by every
    /// notification; a long-lived process renews it as each job starts.
    pub telegram_budget: Arc<SendBudget>,
}

impl App {
    /// The exchange's clock (ms), with no fallback: the evaluator picks its candle and waits for
    /// its close on this clock, and a host clock that runs ahead or behind would pick the wrong
    /// candle or sleep by the skew.
    pub async fn exchange_clock(&self) -> Result<i64, AppError> {
        self.binance.exchange_now(CLOCK_REUSE).await.map_err(|e| {
            AppError(format!(
                "exchange clock unavailable ({e}); no candle is chosen from the local clock"
            ))
        })
    }

    /// The exchange's clock (ms), falling back to the local clock if the exchange cannot answer:
    /// for the sync, which only dates what it records.
    pub async fn exchange_now(&self) -> i64 {
        match self.binance.exchange_now(CLOCK_REUSE).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "exchange clock unavailable; using the local clock");
                SystemClock.now_ms()
            }
        }
    }
}

/// The client settings of the process's own URL (its clock and public market data):
/// `ALBRA_BINANCE_URL`, else `[binance] base_url`, else mainnet.
pub fn binance_config(cfg: &Config) -> BinanceConfig {
    binance_config_at(cfg, cfg.binance_url())
}

/// The client settings of `[binance]` at `base_url` (an account's own, see
/// [`Config::account_url`]).
pub fn binance_config_at(cfg: &Config, base_url: String) -> BinanceConfig {
    BinanceConfig {
        base_url,
        recv_window_ms: cfg.binance.recv_window_ms,
        timeout: Duration::from_millis(cfg.binance.timeout_ms),
        ..BinanceConfig::default()
    }
}

/// One public client per distinct base URL: accounts on one URL share its clock, weight gauge
/// and exchangeInfo table (see [`BinanceClient::with_keys`]); accounts on another URL (testnet
/// beside mainnet) get their own, since neither the clock offset nor the trading rules of one
/// host describe the other.
struct HostClients {
    /// `[binance]`'s settings, at the process's URL.
    template: BinanceConfig,
    by_url: Vec<(String, BinanceClient, Arc<dyn MarketData>)>,
}

impl HostClients {
    fn new(cfg: &Config, process: &BinanceClient) -> Self {
        let template = binance_config(cfg);
        let market = Self::market(process);
        HostClients {
            by_url: vec![(template.base_url.clone(), process.clone(), market)],
            template,
        }
    }

    fn market(client: &BinanceClient) -> Arc<dyn MarketData> {
        Arc::new(LiveMarket::new(
            Arc::new(client.clone()) as Arc<dyn Exchange>
        ))
    }

    fn entry(&mut self, url: &str) -> Result<usize, AppError> {
        if let Some(i) = self.by_url.iter().position(|(u, ..)| u == url) {
            return Ok(i);
        }
        let cfg = BinanceConfig {
            base_url: url.to_string(),
            ..self.template.clone()
        };
        let c = BinanceClient::new(cfg, None)
            .map_err(|e| AppError(format!("Binance client for {url}: {e}")))?;
        let market = Self::market(&c);
        self.by_url.push((url.to_string(), c, market));
        Ok(self.by_url.len() - 1)
    }

    /// The public client of `url`.
    fn at(&mut self, url: &str) -> Result<BinanceClient, AppError> {
        let i = self.entry(url)?;
        Ok(self.by_url[i].1.clone())
    }

    /// The live market data of `url`, one per host for every paper account on it.
    fn market_at(&mut self, url: &str) -> Result<Arc<dyn MarketData>, AppError> {
        let i = self.entry(url)?;
        Ok(self.by_url[i].2.clone())
    }
}

/// The notifier of a process and its parts.
pub struct Channels {
    /// What the jobs notify through.
    pub notifier: Arc<dyn Notifier>,
    /// The bare Telegram channel, when configured and its credentials are set.
    pub telegram: Option<Arc<TelegramNotifier>>,
    pub budget: Arc<SendBudget>,
}

/// Build the notifier the config asks for: the console and/or Telegram, each with its own
/// minimum priority. A Telegram API URL that is not https (or loopback http) is an error, not
/// "Telegram off": alarms must not vanish quietly. Telegram messages go out once per event id
/// across every process sharing `repo`'s store ([`StoredDedupe`]); LOW ones, and those Telegram
/// does not take within the process's budget, wait in the store for the next status report
/// ([`Deferring`]). The console, a log, shows each process's own as they come.
pub async fn build_notifier(
    cfg: &Config,
    secrets: &dyn Secrets,
    repo: &StateRepo,
) -> Result<Channels, AppError> {
    let budget = Arc::new(SendBudget::new(Duration::from_secs(
        cfg.notifier.telegram_budget_secs,
    )));
    let mut inner: Vec<Arc<dyn Notifier>> = Vec::new();
    if cfg.notifier.console {
        let console = Arc::new(ConsoleNotifier);
        inner.push(Arc::new(MinPriority::new(
            console,
            cfg.notifier.console_min(),
        )));
    }
    let telegram = match cfg.notifier.telegram {
        true => telegram_channel(secrets).await?,
        false => None,
    };
    if let Some(t) = &telegram {
        let deferring = Arc::new(Deferring::new(
            t.clone(),
            repo.clone(),
            Arc::new(SystemClock),
            budget.clone(),
        ));
        let once = Arc::new(StoredDedupe::new(deferring, repo.clone()));
        inner.push(Arc::new(MinPriority::new(
            once,
            cfg.notifier.telegram_min(),
        )));
    }
    Ok(Channels {
        notifier: Arc::new(FanoutNotifier::new(inner, Priority::Low)),
        telegram,
        budget,
    })
}

/// The bare Telegram channel: `None` when its credentials are not set (or unreadable, logged).
pub async fn telegram_channel(
    secrets: &dyn Secrets,
) -> Result<Option<Arc<TelegramNotifier>>, AppError> {
    match secrets.telegram().await {
        Ok(Some(creds)) => Ok(Some(Arc::new(
            TelegramNotifier::new(creds).map_err(AppError)?,
        ))),
        Ok(None) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, "Telegram credentials unreadable; Telegram off");
            Ok(None)
        }
    }
}

/// Refuse live trading where an enabled account would trade real money without `live = true`
/// (see [`Config::live_refusals`]); the message names each account and the fix. Callers exit 2.
pub fn live_opt_in(cfg: &Config) -> Result<(), AppError> {
    let refusals = cfg.live_refusals();
    if refusals.is_empty() {
        return Ok(());
    }
    Err(AppError(format!(
        "no order is sent: {}",
        refusals.join("; ")
    )))
}

/// Secrets from the environment and `env_file` (`--env-file`), or `./.env` when no file is named
/// (see [`EnvSecrets::load`]), and SSM for accounts configured with `ssm`. Telegram's
/// credentials come from SSM (`/albra/{stage}/telegram/…`) in a Lambda whose environment does
/// not set `TELEGRAM_BOT_TOKEN`, else from the environment (see [`telegram_source`]).
pub fn default_secrets(env_file: Option<&Path>) -> Result<ChainSecrets, AppError> {
    let env = EnvSecrets::load(env_file).map_err(|e| AppError(e.to_string()))?;
    let source = telegram_source(crate::lambda::in_lambda(), env.is_set(TELEGRAM_TOKEN_VAR));
    Ok(ChainSecrets::new(env, source))
}

/// Where Telegram's credentials are read: a Lambda keeps them in SSM beside the accounts' keys
/// (its environment is visible to anyone who can read the function's configuration), unless
/// its environment sets them explicitly; everywhere else the environment and `.env`.
pub fn telegram_source(in_lambda: bool, token_in_env: bool) -> TelegramSource {
    if in_lambda && !token_in_env {
        TelegramSource::Ssm
    } else {
        TelegramSource::Env
    }
}

/// Build the engine of a job (`evaluator`, `position-sync`, `albra run`, their Lambdas): only
/// the accounts the job runs (`mode`, and `only` from `--account`, see
/// [`Config::running_accounts`]), after one WARN line per symbol two strategies of an account
/// share. An account choice that cannot run is an error before anything is built.
pub async fn build_jobs(
    mut cfg: Config,
    state_spec: &str,
    mode: Mode,
    env_file: Option<&Path>,
    only: Option<&str>,
) -> Result<App, AppError> {
    select_job_accounts(&mut cfg, only)?;
    build(cfg, state_spec, mode, env_file).await
}

/// Narrow `cfg` to the accounts a job runs and warn of their shared symbols (see [`build_jobs`]).
pub fn select_job_accounts(cfg: &mut Config, only: Option<&str>) -> Result<(), AppError> {
    cfg.retain_running(only)
        .map_err(|e| AppError(e.to_string()))?;
    for w in cfg.shared_symbol_warnings() {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// Build the engine for a mode. Live mode refuses to start when an enabled account has no keys.
/// `env_file` is the `--env-file` given, if any (see [`default_secrets`]).
pub async fn build(
    cfg: Config,
    state_spec: &str,
    mode: Mode,
    env_file: Option<&Path>,
) -> Result<App, AppError> {
    if mode == Mode::Live {
        live_opt_in(&cfg)?;
    }
    let secrets = default_secrets(env_file)?;
    let store = open_store(state_spec)
        .await
        .map_err(|e| AppError(e.to_string()))?;
    let bcfg = binance_config(&cfg);
    let binance = BinanceClient::new(bcfg.clone(), None).map_err(|e| AppError(e.to_string()))?;
    let public: Arc<dyn Exchange> = Arc::new(binance.clone());
    let mut accounts = Vec::new();
    let mut hosts = HostClients::new(&cfg, &binance);
    match mode {
        Mode::Live | Mode::ReadOnly => {
            for a in cfg.accounts.iter().filter(|a| a.enabled) {
                let source = a
                    .key_source()
                    .map_err(|m| AppError(format!("account {}: key_source: {m}", a.id)))?;
                let keys = secrets
                    .binance_keys(&a.id, &source)
                    .await
                    .map_err(|e| AppError(format!("account {}: {e}", a.id)))?;
                let client = hosts
                    .at(&cfg.account_url(a))?
                    .with_keys(keys)
                    .map_err(|e| AppError(e.to_string()))?;
                accounts.push(AccountRuntime {
                    config: a.clone(),
                    exchange: Arc::new(client),
                });
            }
        }
        Mode::Paper => {
            for a in cfg.accounts.iter().filter(|a| a.enabled) {
                // Paper fills follow the market of the account's own host.
                let market = hosts.market_at(&cfg.account_url(a))?;
                let ex = PaperExchange::new(
                    market.clone(),
                    Arc::new(SystemClock) as Arc<dyn Clock>,
                    PaperConfig {
                        initial_balance: Notional::new(cfg.paper.initial_equity),
                        commission_rate: cfg.paper.commission,
                        slippage: cfg.paper.slippage,
                        ..PaperConfig::default()
                    },
                );
                accounts.push(AccountRuntime {
                    config: a.clone(),
                    exchange: Arc::new(ex),
                });
            }
        }
    }
    let repo = StateRepo::new(store);
    let channels = build_notifier(&cfg, &secrets, &repo).await?;
    let timing = EngineTiming::live(&cfg);
    Ok(App {
        engine: Engine {
            config: Arc::new(cfg),
            repo,
            accounts,
            notifier: channels.notifier,
            timing,
            cache: Default::default(),
            sizing: Sizing::Risk,
        },
        clock_exchange: public,
        binance,
        telegram: channels.telegram,
        telegram_budget: channels.budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Lambda reads Telegram's credentials from SSM unless its environment sets the token;
    /// a host always from its environment and `.env`.
    #[test]
    fn telegram_credentials_come_from_ssm_only_in_a_lambda_without_them_in_its_environment() {
        assert_eq!(telegram_source(true, false), TelegramSource::Ssm);
        assert_eq!(telegram_source(true, true), TelegramSource::Env);
        assert_eq!(telegram_source(false, false), TelegramSource::Env);
        assert_eq!(telegram_source(false, true), TelegramSource::Env);
    }
}
