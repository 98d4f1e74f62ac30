//! Fuzz target: see volley_mta::fuzzing::dsn.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_mta::fuzzing::dsn(data);
});
