//! `GET /fapi/v1/userTrades` answers: see `albra_adapters::fuzzing::user_trades`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::user_trades(data));
