//! Candle CSV files: see `albra_adapters::fuzzing::candle_csv`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::candle_csv(data));
