//! `[site]` and `[[site_override]]`: limits per destination site.
//!
//! A site is the set of MX hosts of a domain; domains sharing MX hosts share one
//! site, one connection pool and one set of limits. `[site]` holds the defaults;
//! each `[[site_override]]` matches by recipient domain or by MX host name and
//! replaces the keys it sets (the first matching override wins).

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::glob::Glob;
use crate::{duration, integer};

/// Limits for one site.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct SiteLimits {
    /// Connections open at once to the site. Default 10; 1..=10000.
    #[serde(deserialize_with = "max_connections")]
    pub max_connections: u32,
    /// Messages sent over one connection before it is closed. Default 100;
    /// 1..=1000000.
    #[serde(deserialize_with = "max_messages")]
    pub max_messages_per_connection: u32,
    /// Recipients of one relayed message sent in one transaction (RCPT
    /// commands before DATA), like Postfix's
    /// `smtp_destination_recipient_limit`; a message with more recipients at
    /// one site goes in several. Campaign mail always has one: each
    /// recipient's message is its own (merge fields, VERP). Default 100, the
    /// number RFC 5321 (4.5.3.1.8) requires every server to accept; 1..=1000.
    #[serde(deserialize_with = "max_recipients")]
    pub max_recipients_per_transaction: u32,
    /// Messages per second to the site, all connections together; 0 = no limit.
    /// Default 0; 0..=1000000.
    #[serde(deserialize_with = "rate")]
    pub max_messages_per_second: f64,
    /// Wait before reconnecting after a connection failure, at a site that has
    /// answered in this round (one that has not defers at once); doubles per
    /// consecutive failure up to `connect_backoff_max`. Default 10s.
    #[serde(deserialize_with = "backoff")]
    pub connect_backoff: Duration,
    /// Upper bound of the reconnect wait. Default 10m.
    #[serde(deserialize_with = "backoff")]
    pub connect_backoff_max: Duration,
    /// How long the site is paused after a 421 or a reply matching
    /// `pause_patterns`. Default 1m.
    #[serde(deserialize_with = "backoff")]
    pub pause: Duration,
    /// Reply texts (case-insensitive substrings) that pause the site like a 421,
    /// e.g. a provider's "try again later" wording. Default: none.
    pub pause_patterns: Vec<String>,
}

impl Default for SiteLimits {
    fn default() -> Self {
        SiteLimits {
            max_connections: 10,
            max_messages_per_connection: 100,
            max_recipients_per_transaction: 100,
            max_messages_per_second: 0.0,
            connect_backoff: Duration::from_secs(10),
            connect_backoff_max: Duration::from_secs(600),
            pause: Duration::from_secs(60),
            pause_patterns: Vec::new(),
        }
    }
}

/// One `[[site_override]]`: a match and the limits it changes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct SiteOverride {
    /// Recipient-domain pattern, e.g. "gmail.com".
    #[serde(default)]
    pub domain: Option<Glob>,
    /// MX host-name pattern, e.g. "*.google.com".
    #[serde(default)]
    pub mx: Option<Glob>,
    /// See [`SiteLimits::max_connections`].
    #[serde(default, deserialize_with = "opt_max_connections")]
    pub max_connections: Option<u32>,
    /// See [`SiteLimits::max_messages_per_connection`].
    #[serde(default, deserialize_with = "opt_max_messages")]
    pub max_messages_per_connection: Option<u32>,
    /// See [`SiteLimits::max_recipients_per_transaction`].
    #[serde(default, deserialize_with = "opt_max_recipients")]
    pub max_recipients_per_transaction: Option<u32>,
    /// See [`SiteLimits::max_messages_per_second`].
    #[serde(default, deserialize_with = "opt_rate")]
    pub max_messages_per_second: Option<f64>,
    /// See [`SiteLimits::connect_backoff`].
    #[serde(default, deserialize_with = "opt_backoff")]
    pub connect_backoff: Option<Duration>,
    /// See [`SiteLimits::connect_backoff_max`].
    #[serde(default, deserialize_with = "opt_backoff")]
    pub connect_backoff_max: Option<Duration>,
    /// See [`SiteLimits::pause`].
    #[serde(default, deserialize_with = "opt_backoff")]
    pub pause: Option<Duration>,
    /// See [`SiteLimits::pause_patterns`].
    #[serde(default)]
    pub pause_patterns: Option<Vec<String>>,
}

impl SiteOverride {
    /// Whether this override applies to a site reached for `domain` through the
    /// MX hosts `mx_hosts`.
    pub fn applies(&self, domain: &str, mx_hosts: &[&str]) -> bool {
        let by_domain = self.domain.as_ref().is_some_and(|g| g.matches(domain));
        let by_mx = self
            .mx
            .as_ref()
            .is_some_and(|g| mx_hosts.iter().any(|h| g.matches(h)));
        by_domain || by_mx
    }

    /// `base` with this override's keys applied.
    pub fn apply(&self, base: &SiteLimits) -> SiteLimits {
        SiteLimits {
            max_connections: self.max_connections.unwrap_or(base.max_connections),
            max_messages_per_connection: self
                .max_messages_per_connection
                .unwrap_or(base.max_messages_per_connection),
            max_recipients_per_transaction: self
                .max_recipients_per_transaction
                .unwrap_or(base.max_recipients_per_transaction),
            max_messages_per_second: self
                .max_messages_per_second
                .unwrap_or(base.max_messages_per_second),
            connect_backoff: self.connect_backoff.unwrap_or(base.connect_backoff),
            connect_backoff_max: self.connect_backoff_max.unwrap_or(base.connect_backoff_max),
            pause: self.pause.unwrap_or(base.pause),
            pause_patterns: self
                .pause_patterns
                .clone()
                .unwrap_or_else(|| base.pause_patterns.clone()),
        }
    }
}

/// The limits for a site: the first override matching the domain or an MX host
/// applied to the defaults.
pub fn limits_for(
    defaults: &SiteLimits,
    overrides: &[SiteOverride],
    domain: &str,
    mx_hosts: &[&str],
) -> SiteLimits {
    overrides
        .iter()
        .find(|o| o.applies(domain, mx_hosts))
        .map(|o| o.apply(defaults))
        .unwrap_or_else(|| defaults.clone())
}

const BACKOFF: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(86_400);

fn max_connections<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=10_000)
}
fn max_messages<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=1_000_000)
}
fn max_recipients<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, 1..=1_000)
}
fn rate<'de, D: Deserializer<'de>>(de: D) -> Result<f64, D::Error> {
    let value = f64::deserialize(de)?;
    if !(0.0..=1_000_000.0).contains(&value) {
        return Err(serde::de::Error::custom(format!(
            "{value} is out of range: allowed 0..=1000000"
        )));
    }
    Ok(value)
}
fn backoff<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, BACKOFF)
}
fn opt_max_connections<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    max_connections(de).map(Some)
}
fn opt_max_messages<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    max_messages(de).map(Some)
}
fn opt_max_recipients<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    max_recipients(de).map(Some)
}
fn opt_rate<'de, D: Deserializer<'de>>(de: D) -> Result<Option<f64>, D::Error> {
    rate(de).map(Some)
}
fn opt_backoff<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    backoff(de).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(s: &str) -> Option<Glob> {
        Glob::new(s).ok()
    }

    #[test]
    fn first_matching_override_applies_over_defaults() {
        let defaults = SiteLimits::default();
        let google = SiteOverride {
            domain: None,
            mx: glob("*.google.com"),
            max_connections: Some(20),
            max_messages_per_connection: None,
            max_recipients_per_transaction: Some(50),
            max_messages_per_second: Some(50.0),
            connect_backoff: None,
            connect_backoff_max: None,
            pause: None,
            pause_patterns: None,
        };
        let yahoo = SiteOverride {
            domain: glob("yahoo.*"),
            mx: None,
            max_connections: Some(5),
            ..google.clone()
        };
        let overrides = [google, yahoo];
        let l = limits_for(
            &defaults,
            &overrides,
            "example.com",
            &["aspmx.l.google.com"],
        );
        assert_eq!((l.max_connections, l.max_messages_per_second), (20, 50.0));
        assert_eq!(
            l.max_messages_per_connection,
            defaults.max_messages_per_connection
        );
        let l = limits_for(
            &defaults,
            &overrides,
            "yahoo.co.uk",
            &["mta5.am0.yahoodns.net"],
        );
        assert_eq!(l.max_connections, 5);
        let l = limits_for(&defaults, &overrides, "other.test", &["mx.other.test"]);
        assert_eq!(l, defaults);
    }
}
