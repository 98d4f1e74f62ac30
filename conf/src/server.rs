//! `[server]`: the SMTP server's name, certificate, users file and limits, shared
//! by every `[[listen]]` entry.
//!
//! Reading the certificate, key and users file is the server's business
//! (`volley_engine::listen`); this crate only checks the values' shape and range.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{duration, integer};

/// The `[server]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct ServerConfig {
    /// Our name in the greeting, the EHLO reply and Received: headers; empty
    /// (the default) uses the system host name, or `localhost` if there is none.
    pub hostname: String,
    /// The certificate chain (PEM) for STARTTLS and implicit TLS. Without it no
    /// listener offers STARTTLS, and none accepts AUTH.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM, PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Largest message accepted, in bytes (announced in EHLO `SIZE`). Default
    /// 26214400 (25 MiB); 1024..=1073741824.
    #[serde(deserialize_with = "max_message_size")]
    pub max_message_size: u64,
    /// Recipients per message; more get `452 4.5.3`. Default 1000; 1..=100000.
    #[serde(deserialize_with = "max_recipients")]
    pub max_recipients: u32,
    /// Longest command line in bytes, CRLF included. Default 4096 (RFC 5321's
    /// 512 plus room for parameters and AUTH PLAIN initial responses);
    /// 512..=65536.
    #[serde(deserialize_with = "max_line_length")]
    pub max_line_length: u32,
    /// Errors (bad commands, failed AUTH) before the session is closed with
    /// `421 4.7.0`. Default 10; 1..=1000.
    #[serde(deserialize_with = "max_errors")]
    pub max_errors: u32,
    /// Commands that move no mail (NOOP, RSET, VRFY, HELP, a repeated EHLO…)
    /// one session may send in a row before it is closed with `421 4.7.0 Too
    /// many commands without mail`. Default 100; 1..=100000.
    #[serde(deserialize_with = "max_junk_commands")]
    pub max_junk_commands: u32,
    /// Failed AUTH attempts from one client address, or for one user name,
    /// within `auth_lockout` after which further attempts get `454 4.7.0`
    /// without a password check (each failure past the third already delays
    /// the next check: 1 s, 2 s, 4 s … 30 s). Default 10; 1..=1000.
    #[serde(deserialize_with = "max_errors")]
    pub max_auth_failures: u32,
    /// How long failed AUTH attempts count. Default 15m; 1m..=1d.
    #[serde(deserialize_with = "auth_lockout")]
    pub auth_lockout: Duration,
    /// Password checks (argon2id, ~19 MiB each) run at once over all
    /// sessions; more wait their turn, so memory stays bounded whatever
    /// clients do. Default 0: one per core; 0..=1024.
    #[serde(deserialize_with = "max_auth_checks")]
    pub max_auth_checks: u32,
    /// Bytes of message content all sessions may hold in memory at once: a
    /// message reserves its declared `SIZE` (else `max_message_size`) before
    /// its content is read; one that does not fit gets `452 4.3.1` (try again
    /// later). Default 1 GiB; 1 MiB..=64 GiB (raised to `max_message_size`
    /// when below it).
    #[serde(deserialize_with = "max_buffered_bytes")]
    pub max_buffered_bytes: u64,
    /// Connections open at once over all listeners. Default 1000; 1..=100000.
    #[serde(deserialize_with = "max_connections")]
    pub max_connections: u32,
    /// Connections open at once from one client address. Default 20; 1..=100000.
    #[serde(deserialize_with = "max_connections")]
    pub max_connections_per_ip: u32,
    /// Time a client may stay silent before `421 4.4.2`. Default 5m
    /// (RFC 5321 §4.5.3.2.7); 100ms..=1h.
    #[serde(deserialize_with = "idle_timeout")]
    pub idle_timeout: Duration,
    /// Longest session, whatever the client does. Default 30m; 1s..=1d.
    #[serde(deserialize_with = "session_timeout")]
    pub session_timeout: Duration,
    /// More AUTH users, one `name:PHC-hash` per line (`#` comments), besides the
    /// `[[user]]` entries. Read when the server starts.
    pub users_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            hostname: String::new(),
            tls_cert_file: None,
            tls_key_file: None,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: 4096,
            max_errors: 10,
            max_junk_commands: 100,
            max_auth_failures: 10,
            auth_lockout: Duration::from_secs(900),
            max_auth_checks: 0,
            max_buffered_bytes: 1 << 30,
            max_connections: 1000,
            max_connections_per_ip: 20,
            idle_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(1800),
            users_file: None,
        }
    }
}

const IDLE: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(3600);
const SESSION: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(86_400);

fn max_message_size<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    integer::in_range(de, 1024..=1 << 30)
}
fn max_recipients<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=100_000)
}
fn max_line_length<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 512..=65_536)
}
fn max_errors<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=1000)
}
fn auth_lockout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, Duration::from_secs(60)..=Duration::from_secs(86_400))
}
fn max_auth_checks<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 0..=1024)
}
fn max_buffered_bytes<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    integer::in_range(de, (1 << 20)..=(64 << 30))
}
fn max_junk_commands<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=100_000)
}
fn max_connections<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=100_000)
}
fn idle_timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, IDLE)
}
fn session_timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, SESSION)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    use super::*;

    #[test]
    fn values_and_ranges() {
        let config = Config::parse(
            "[server]\nhostname = \"mx.acme.test\"\nmax_message_size = 1048576\n\
             idle_timeout = \"250ms\"\nusers_file = \"/etc/volley/users\"\n",
            Path::new("volley.toml"),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.server.hostname, "mx.acme.test");
        assert_eq!(config.server.max_message_size, 1 << 20);
        assert_eq!(config.server.idle_timeout, Duration::from_millis(250));
        assert_eq!(config.server.max_recipients, 1000);
        let err = Config::parse(
            "[server]\nmax_line_length = 100\n",
            Path::new("volley.toml"),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "volley.toml:2:19: server.max_line_length: 100 is out of range: \
                 allowed 512..=65536"
            )
        );
    }
}
