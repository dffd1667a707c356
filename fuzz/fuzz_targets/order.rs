//! `POST`/`GET /fapi/v1/order` answers: see `albra_core::fuzzing::order`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_core::fuzzing::order(data));
