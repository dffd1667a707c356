//! The TOML config: see `albra_adapters::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::config(data));
