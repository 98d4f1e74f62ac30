//! Running the `volley` binary from the cli crate's end-to-end tests.
//!
//! Each test binary declares `mod common;` and uses a subset, hence the allow.
#![allow(dead_code)]

use std::path::Path;
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

/// Runs `volley -C CONFIG ARGS` to the end, as [`volley`] does.
pub fn volley_with(config: &Path, args: &[&str]) -> Output {
    let config = config.display().to_string();
    let mut all = vec!["-C", config.as_str()];
    all.extend_from_slice(args);
    volley(&all)
}

/// Runs `volley --config CONFIG ARGS` with `input` on its standard input
/// (no `$VOLLEY_CONFIG`, default logging) to the end.
pub fn volley_with_input(config: &Path, args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("VOLLEY_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run volley");
    child
        .stdin
        .take()
        .expect("volley's stdin")
        .write_all(input)
        .expect("write volley's stdin");
    child.wait_with_output().expect("wait for volley")
}

/// `volley --config CONFIG run` (no `$VOLLEY_CONFIG`, info logs, no stdin), for a
/// test to spawn as the daemon.
pub fn volley_run(config: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
    cmd.args(["--config", config, "run"])
        .env_remove("VOLLEY_CONFIG")
        .env("VOLLEY_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

/// A command's standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
