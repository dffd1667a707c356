//! Loopback protocol peers and harnesses for the integration tests: the Binance-speaking server,
//! the Telegram-Bot-API-speaking server, moto, headless Chromium (`browser`), the job harness, the
//! store contract, the seeded fault campaign (`chaos`) and the live-path cost measurement
//! (`bench_live`, what `make bench-live` prints).

pub mod bench_live;
pub mod binance_server;
pub mod browser;
pub mod chaos;
pub mod differential;
pub mod harness;
pub mod moto;
pub mod store_contract;
pub mod telegram_server;
