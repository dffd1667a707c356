//! `GET /fapi/v1/klines` answers: see `albra_adapters::fuzzing::klines`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::klines(data));
