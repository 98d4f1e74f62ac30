//! `[delivery]`: how volley connects to and talks with receiving servers.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{duration, integer};

/// Whether to use STARTTLS when delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// Use STARTTLS when the server offers it, without verifying its certificate
    /// (RFC 7435 opportunistic security); plaintext otherwise. The default.
    Opportunistic,
    /// Refuse to deliver without STARTTLS; the certificate must verify against the
    /// system roots (or `tls_ca_file`) unless `tls_verify = false`.
    Required,
    /// Never use STARTTLS.
    Disabled,
}

/// The `[delivery]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct DeliveryConfig {
    /// Destination port for MX delivery. Default 25.
    #[serde(deserialize_with = "port")]
    pub smtp_port: u16,
    /// Name sent in EHLO/HELO; empty uses the host name.
    pub helo_name: String,
    /// STARTTLS policy: "opportunistic" (default), "required" or "disabled".
    pub tls: TlsPolicy,
    /// With `tls = "required"`, whether the server certificate must verify.
    /// Default true.
    pub tls_verify: bool,
    /// Extra PEM CA certificates trusted for verification (empty: none).
    pub tls_ca_file: Option<PathBuf>,
    /// Local addresses to send from, used in turn (an egress pool); empty lets the
    /// system choose.
    pub source_addresses: Vec<IpAddr>,
    /// Connections open at once over all sites. Default 500; 1..=100000.
    #[serde(deserialize_with = "max_connections")]
    pub max_connections: u32,
    /// Time to establish a TCP connection. Default 30s.
    #[serde(deserialize_with = "short_timeout")]
    pub connect_timeout: Duration,
    /// Time to wait for the 220 greeting. Default 5m (RFC 5321 §4.5.3.2).
    #[serde(deserialize_with = "long_timeout")]
    pub greeting_timeout: Duration,
    /// Time to wait for the reply to EHLO, MAIL, RCPT, DATA, BDAT chunks, RSET,
    /// STARTTLS. Default 5m (RFC 5321 §4.5.3.2).
    #[serde(deserialize_with = "long_timeout")]
    pub command_timeout: Duration,
    /// Time to wait for the reply to the end of the message data. Default 10m
    /// (RFC 5321 §4.5.3.2).
    #[serde(deserialize_with = "long_timeout")]
    pub data_timeout: Duration,
    /// On SIGTERM or Ctrl-C, how long to wait for the replies of the
    /// transactions in flight (no new ones start) before exiting; those still
    /// without a reply then may be sent again after the restart. Default 10s;
    /// 0s..=10m.
    #[serde(deserialize_with = "stop_timeout")]
    pub stop_timeout: Duration,
    /// Transactions sent ahead on one pipelined connection before their replies
    /// are read. Default 10; 1..=1000.
    #[serde(deserialize_with = "pipeline_depth")]
    pub pipeline_depth: u32,
    /// Delivery threads, each running its share of the connections from connect
    /// to close. Default 0: one per CPU core; 0..=1024.
    #[serde(deserialize_with = "threads")]
    pub threads: u32,
    /// The delivery log: one JSON line per attempt. Default
    /// "/var/log/volley/delivery.jsonl".
    pub log: PathBuf,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            smtp_port: 25,
            helo_name: String::new(),
            tls: TlsPolicy::Opportunistic,
            tls_verify: true,
            tls_ca_file: None,
            source_addresses: Vec::new(),
            max_connections: 500,
            connect_timeout: Duration::from_secs(30),
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            stop_timeout: Duration::from_secs(10),
            pipeline_depth: 10,
            threads: 0,
            log: PathBuf::from("/var/log/volley/delivery.jsonl"),
        }
    }
}

const SHORT: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(600);
const LONG: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(3600);

fn port<'de, D: Deserializer<'de>>(de: D) -> Result<u16, D::Error> {
    integer::in_range(de, 1..=65535)
}
fn max_connections<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=100_000)
}
fn pipeline_depth<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=1000)
}
fn threads<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 0..=1024)
}
fn short_timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, SHORT)
}
fn long_timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, LONG)
}
fn stop_timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, Duration::ZERO..=Duration::from_secs(600))
}
