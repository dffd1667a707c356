//! `GET /fapi/v3/positionRisk` answers: see `albra_adapters::fuzzing::positions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::positions(data));
