//! Candle CSV files: see `albra_core::fuzzing::candle_csv`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_core::fuzzing::candle_csv(data));
