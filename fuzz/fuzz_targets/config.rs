//! The TOML config: see `albra_core::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_core::fuzzing::config(data));
