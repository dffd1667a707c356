//! Lambda scheduled events: see `albra_adapters::fuzzing::lambda_event`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::lambda_event(data));
