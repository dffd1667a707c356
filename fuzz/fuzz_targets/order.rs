//! `POST`/`GET /fapi/v1/order` answers: see `albra_adapters::fuzzing::order`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::order(data));
