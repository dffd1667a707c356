//! What engine tests over the paper exchange build alike: an EMA_CROSS config, the shared
//! BTCUSDT 15m sample, and an engine whose one account trades a paper exchange replaying it.

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use albra_core::config::Config;
use albra_core::data::{self, CandleSeries};
use albra_core::domain::{Notional, Symbol};
use albra_core::jobs::{AccountRuntime, Engine, EngineTiming, Sizing};
use albra_core::notify::CollectingNotifier;
use albra_core::paper::{MarketData, PaperConfig, PaperExchange, RecordedMarket};
use albra_core::ports::{Clock, SimClock};
use albra_core::state::StateRepo;
use std::sync::Arc;

/// A config of one account, `main`, trading EMA_CROSS on BTCUSDT 15m (3x, 10 % margin) with
/// its stop `stop_loss_pct` from the entry, and `extra` (more tables) after it.
pub fn ema_cross_15m(stop_loss_pct: &str, extra: &str) -> String {
    format!(
        r#"
[notifier]
telegram = false
[[strategies]]
name = "EMA_CROSS"
timeframe = "15m"
symbols = ["BTCUSDT"]
leverage = 3
size_pct = 0.1
[strategies.params]
stop_loss_pct = {stop_loss_pct}
[[accounts]]
id = "main"
key_source = "env"
strategies = ["EMA_CROSS"]
{extra}"#
    )
}

/// `data/BTCUSDT-perp-15m.csv`, loaded.
pub fn perp_15m() -> CandleSeries {
    // The repository's data folder, from `core/` or `core/adapters/` (whose tests share this file).
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("data/BTCUSDT-perp-15m.csv"))
        .find(|p| p.exists())
        .expect("data/BTCUSDT-perp-15m.csv above the crate");
    data::load_csv(&path).unwrap()
}

/// A paper exchange of 10,000 USDT replaying `series` as BTCUSDT on `clock`.
pub fn paper_exchange(series: CandleSeries, clock: &Arc<SimClock>) -> PaperExchange {
    let market: Arc<dyn MarketData> = Arc::new(RecordedMarket::new(Symbol::new("BTCUSDT"), series));
    PaperExchange::new(
        market,
        clock.clone() as Arc<dyn Clock>,
        PaperConfig {
            initial_balance: Notional::new(10_000.into()),
            ..PaperConfig::default()
        },
    )
}

/// An engine for `config` (TOML; its first account trades) with `repo` as its state, over a
/// [`paper_exchange`] of `series`, and the clock both read, at `now`. Jobs run at once
/// (`EngineTiming::instant`), notices are collected.
pub fn paper_engine(
    config: &str,
    series: CandleSeries,
    now: i64,
    repo: StateRepo,
) -> (Engine, Arc<SimClock>) {
    let clock = Arc::new(SimClock::new(now));
    let ex = Arc::new(paper_exchange(series, &clock));
    let cfg = Config::parse(config, "test.toml").unwrap();
    let engine = Engine {
        accounts: vec![AccountRuntime {
            config: cfg.accounts[0].clone(),
            exchange: ex,
        }],
        config: Arc::new(cfg),
        repo,
        notifier: Arc::new(CollectingNotifier::default()),
        timing: EngineTiming::instant(),
        cache: Default::default(),
        sizing: Sizing::Risk,
    };
    (engine, clock)
}
