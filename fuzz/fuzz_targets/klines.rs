//! `GET /fapi/v1/klines` answers: see `albra_core::fuzzing::klines`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_core::fuzzing::klines(data));
