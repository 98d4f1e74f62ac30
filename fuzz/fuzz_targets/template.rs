//! Fuzz target: see volley_merge::fuzzing::template.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_merge::fuzzing::template(data);
});
