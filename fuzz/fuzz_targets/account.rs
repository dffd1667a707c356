//! `GET /fapi/v3/account` answers: see `albra_adapters::fuzzing::account`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::account(data));
