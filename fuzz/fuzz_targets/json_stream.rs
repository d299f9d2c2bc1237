//! Fuzz target: `sockit::fuzzing::json_stream` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::json_stream(data));
