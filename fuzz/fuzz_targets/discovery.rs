//! Fuzz target: `sockit::fuzzing::discovery` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::discovery(data));
