//! `GET /fapi/v1/income` answers: see `albra_core::fuzzing::income`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_core::fuzzing::income(data));
