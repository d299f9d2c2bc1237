//! Fuzz target: `sockit::fuzzing::file_messages` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sockit::fuzzing::file_messages(data));
