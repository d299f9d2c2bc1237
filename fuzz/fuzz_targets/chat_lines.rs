//! Fuzz target: `sockit::fuzzing::chat_lines` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::chat_lines(data));
