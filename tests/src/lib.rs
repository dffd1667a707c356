//! Loopback protocol peers and harnesses for the integration tests: the Binance-speaking server,
//! moto, the job harness, the store contract, and the seeded fault campaign (`chaos`).

pub mod binance_server;
pub mod chaos;
pub mod harness;
pub mod moto;
pub mod store_contract;
