//! `GET /fapi/v1/income` answers: see `albra_adapters::fuzzing::income`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::income(data));
