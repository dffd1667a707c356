//! `GET /fapi/v3/positionRisk` answers: see `albra_core::fuzzing::positions`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_core::fuzzing::positions(data));
