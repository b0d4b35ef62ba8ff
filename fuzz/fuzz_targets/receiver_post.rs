//! Fuzz target: see `selfheal::fuzzing::receiver_post` for what it drives and the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| selfheal::fuzzing::receiver_post(data));
