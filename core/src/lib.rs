//! Albra core: everything that decides (strategies, risk, sizing, the jobs) and the adapters behind
//! the ports that let the same decisions run live, on paper, in replay and in backtests.
//!
//! Dependency direction is one way: `domain` ← `ports` ← decision code (`strategy`, `engine`) ←
//! adapters (`binance`, `paper`, `store`, `secrets`, `notify`). Decision code never touches the
//! network, the disk or a clock; it gets `now` and the ports as arguments.

pub mod app;
pub mod backtest;
pub mod binance;
pub mod config;
pub mod data;
pub mod domain;
pub mod emf;
pub mod engine;
pub mod fuzzing;
mod http;
mod hugepages;
pub mod indicators;
pub mod lambda_event;
pub mod logging;
pub mod notify;
pub mod orders;
pub mod paper;
pub mod ports;
pub mod query;
pub mod replay;
pub mod risk;
pub mod secrets;
pub mod shares;
pub mod signals;
pub mod state;
pub mod store;
pub mod strategy;
pub mod walkforward;

/// Deterministic pseudo-random numbers for unit tests that sweep many inputs (xorshift64).
#[cfg(test)]
pub(crate) fn test_rng(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
