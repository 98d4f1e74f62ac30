//! Fuzz target: arbitrary bytes as a batch file (see volley_queue::fuzzing).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    volley_queue::fuzzing::batch_reader(data);
});
