//! Test peers for the delivery engine's end-to-end tests: real SMTP receivers on
//! 127.0.0.x, started per test and killed on Drop.
//!
//! * [`smtp_sink`]: Postfix `smtp-sink`, a fast receiver that dumps each message.
//! * [`scripted`]: an aiosmtpd receiver driven by a JSON scenario (per-recipient
//!   replies, deferrals, 421, dropped connections, delays, STARTTLS).
//! * [`postfix`]: a private real Postfix (CHUNKING, SMTPUTF8, STARTTLS); root only.
//! * [`dnsmasq`]: a DNS server for MX/A lookups (maintained separately).
//! * [`postgres`]: a private PostgreSQL (initdb + pg_ctl in a temp dir).
//! * [`http`]: a minimal HTTP client for the control plane's API.
//! * [`port`]: free ports and waiting for listeners; [`process`]: child processes.
//!
//! Each test binary declares `mod support;` and uses a subset, hence the allow.
#![allow(dead_code)]

pub mod dnsmasq;
pub mod engine;
pub mod http;
pub mod port;
pub mod postfix;
pub mod postgres;
pub mod process;
pub mod scripted;
pub mod smtp_sink;

/// Says that the calling test cannot run here (a peer is missing, or it needs
/// root) and why: on stderr, and as a line in the file `$VOLLEY_TEST_SKIPS`
/// when set, so that `scripts/test.sh` counts the test as skipped rather than
/// passed. The test then returns without asserting anything.
pub fn skip(test: &str, reason: &str) {
    eprintln!("SKIPPED {test}: {reason}");
    if let Some(path) = std::env::var_os("VOLLEY_TEST_SKIPS") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Ok(mut file) = file {
            let _ = writeln!(file, "{test}: {reason}");
        }
    }
}
