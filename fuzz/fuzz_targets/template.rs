//! Fuzz target: see volley_mta::fuzzing::template.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_mta::fuzzing::template(data);
});
