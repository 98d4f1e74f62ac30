//! Running the `volley` binary from the cli crate's end-to-end tests.
//!
//! Each test binary declares `mod common;` and uses a subset, hence the allow.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

/// Runs `volley ARGS` (no `$VOLLEY_CONFIG`, warnings only, no stdin) to the end.
pub fn volley(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(args)
        .env_remove("VOLLEY_CONFIG")
        .env("VOLLEY_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run volley")
}

/// A command's standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
