//! Fuzz target: `sockit::fuzzing::ping_reply` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::ping_reply(data));
