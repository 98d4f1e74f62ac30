//! Fuzz target: see volley_mta::fuzzing::smtp_commands.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_mta::fuzzing::smtp_commands(data);
});
