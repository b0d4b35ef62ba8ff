//! Fuzz target: see `selfheal::fuzzing::env_file` for what it drives and the property it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| selfheal::fuzzing::env_file(data));
