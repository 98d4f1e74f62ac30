//! Fuzz target: see volley_smtp::fuzzing::smtp_commands.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_smtp::fuzzing::smtp_commands(data);
});
