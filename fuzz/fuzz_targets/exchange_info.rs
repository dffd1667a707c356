//! `GET /fapi/v1/exchangeInfo` answers and their symbol filters: see `albra_adapters::fuzzing::exchange_info`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::exchange_info(data));
