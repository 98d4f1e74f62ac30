//! `[[route]]`: send some domains to a smarthost instead of their MX.

use serde::{Deserialize, Deserializer};

use crate::delivery::TlsPolicy;
use crate::glob::Glob;

/// One `[[route]]` entry: recipients whose domain matches `domain` go to `via`.
/// The first matching route wins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with domain and via")]
pub struct Route {
    /// Domain pattern, e.g. "*.corp.example" or "*" for everything.
    pub domain: Glob,
    /// The smarthost as "host:port" (a name, resolved by A/AAAA, or an IP).
    #[serde(deserialize_with = "host_port")]
    pub via: String,
    /// STARTTLS policy for this route; default: `[delivery] tls`.
    #[serde(default)]
    pub tls: Option<TlsPolicy>,
}

impl Route {
    /// The host part of `via` (brackets removed from an IPv6 literal).
    pub fn host(&self) -> &str {
        let (host, _) = self.via.rsplit_once(':').unwrap_or((&self.via, ""));
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port part of `via`.
    pub fn port(&self) -> u16 {
        self.via
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(25)
    }
}

fn host_port<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    let valid = text
        .rsplit_once(':')
        .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0))
        .is_some();
    if !valid {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is not host:port (e.g. \"relay.example.com:587\" or \"[::1]:25\")"
        )));
    }
    Ok(text)
}
