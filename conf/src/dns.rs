//! `[dns]`: how volley resolves MX records.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{duration, integer};

/// The `[dns]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct DnsConfig {
    /// Name servers as `ip:port`; empty uses the system resolver (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// Time to wait for one answer. Default 5s; allowed 100ms..=60s.
    #[serde(deserialize_with = "timeout")]
    pub timeout: Duration,
    /// Tries per query before it counts as a temporary failure. Default 2; 1..=10.
    #[serde(deserialize_with = "attempts")]
    pub attempts: u32,
}

const TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(60);
const ATTEMPTS: RangeInclusive<u32> = 1..=10;

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

fn timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, TIMEOUT)
}

fn attempts<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, ATTEMPTS)
}
