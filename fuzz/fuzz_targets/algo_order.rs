//! Algo Order API answers (one order, the open list, a cancel): see `albra_adapters::fuzzing::algo_order`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| albra_adapters::fuzzing::algo_order(data));
