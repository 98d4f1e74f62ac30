//! Fuzz target: see volley_smtp::fuzzing::smtp_replies.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_smtp::fuzzing::smtp_replies(data);
});
