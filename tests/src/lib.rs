//! placeholder

pub mod binance_server;
pub mod harness;
pub mod moto;
pub mod store_contract;
