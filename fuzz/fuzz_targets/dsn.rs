//! Fuzz target: see volley_inbound::fuzzing::dsn.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_inbound::fuzzing::dsn(data);
});
