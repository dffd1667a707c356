//! `GET /fapi/v1/userTrades` answers: see `albra_core::fuzzing::user_trades`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_core::fuzzing::user_trades(data));
