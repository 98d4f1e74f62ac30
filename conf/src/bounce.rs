//! `[bounce]`: what comes back after delivery — the VERP return path that carries
//! each message's campaign, batch and recipient, its signing key, and how many
//! asynchronous bounces suppress an address.
//!
//! This crate stays pure: reading or creating the key file is
//! `volley_engine::verp_key::load_or_create_key`'s business, and counting bounces
//! against the limits is the suppression list's.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::dkim::check_name;
use crate::{duration, integer};

/// The `[bounce]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct BounceConfig {
    /// Domain of the VERP return paths (`<prefix><token>@<domain>`), lower-cased,
    /// without a trailing dot. Its MX must point at volley's inbound listener.
    /// Unset (the default): no VERP, messages keep their template's return path.
    #[serde(deserialize_with = "domain")]
    pub domain: Option<String>,
    /// Start of every VERP local part, lower-cased: 1 to 16 letters, digits and
    /// `-`, `_`, `+`, `.` (not first, never two in a row). Default `b-`. The token after it is
    /// 48 characters, so the local part stays within 64 octets.
    #[serde(deserialize_with = "prefix")]
    pub prefix: String,
    /// The key that signs VERP tokens (HMAC-SHA256): a file of at least 32 bytes.
    /// Unset: `SPOOL/bounce.key`, created with 32 random bytes on first use.
    #[serde(deserialize_with = "secret_file")]
    pub secret_file: Option<PathBuf>,
    /// Hard bounces (bad address) within `window` that suppress an address.
    /// Default 1; allowed 1..=100.
    #[serde(deserialize_with = "hard_limit")]
    pub hard_limit: u32,
    /// Soft bounces (mailbox full, temporary trouble) within `window` that
    /// suppress an address. Default 5; allowed 1..=1000.
    #[serde(deserialize_with = "soft_limit")]
    pub soft_limit: u32,
    /// How far back bounces count towards the limits, and how long `volley run`
    /// keeps finished batches in `done/` (VERP lookups need them). Default 7d;
    /// allowed 1h..=1year.
    #[serde(deserialize_with = "window")]
    pub window: Duration,
    /// Relayed mail still undelivered this long after it was queued gets a
    /// delay warning to its sender (a DSN with `Action: delayed`), once per
    /// recipient, unless `NOTIFY` left delays out. Default 0s: no warnings;
    /// allowed 0s..=30d.
    #[serde(deserialize_with = "delay_warning")]
    pub delay_warning: Duration,
    /// The feedback loops volley is enrolled in (a mailbox provider's ARF
    /// reports), each a client network (`"192.0.2.0/24"`) or a sender domain
    /// (`"fbl.provider.example"`) whose DKIM signature on the report verifies
    /// (`d=` that domain or one below it): complaints from them suppress their
    /// recipient without a VERP token. Every other report that names its
    /// recipient without a verified token waits for an operator (`volley
    /// suppress pending`). Default: none.
    pub fbl_sources: Vec<FblSource>,
}

/// One of `[bounce] fbl_sources`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FblSource {
    /// Reports received from a client in this network.
    Network(crate::Cidr),
    /// Reports with a DKIM signature that verifies for this domain (lower-case,
    /// no trailing dot) or a subdomain of it.
    Domain(String),
}

impl FblSource {
    /// Whether a verified DKIM signature by `d` (any case) names this source.
    pub fn signed_by(&self, d: &str) -> bool {
        let FblSource::Domain(domain) = self else {
            return false;
        };
        let d = d.strip_suffix('.').unwrap_or(d).to_ascii_lowercase();
        d == *domain
            || d.strip_suffix(domain.as_str())
                .is_some_and(|below| below.ends_with('.'))
    }
}

impl<'de> Deserialize<'de> for FblSource {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<FblSource, D::Error> {
        let text = String::deserialize(de)?;
        let looks_like_address =
            text.contains(['/', ':']) || text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if looks_like_address {
            return text.parse().map(FblSource::Network).map_err(|why| {
                serde::de::Error::custom(format!(
                    "{text:?} is not a client network like \"192.0.2.0/24\": {why}"
                ))
            });
        }
        let name = text.strip_suffix('.').unwrap_or(&text).to_ascii_lowercase();
        check_name(&name, "domain", 253).map_err(|why| {
            serde::de::Error::custom(format!(
                "{text:?} is neither a client network like \"192.0.2.0/24\" nor a sender \
                 domain like \"fbl.provider.example\": {why}"
            ))
        })?;
        Ok(FblSource::Domain(name))
    }
}

/// Longest `prefix`: the local part is the prefix and a 48-character token, and
/// RFC 5321 §4.5.3.1.1 allows 64 octets.
pub const MAX_VERP_PREFIX: usize = 16;

const DAY: u64 = 86_400;
const HARD_LIMIT: RangeInclusive<u32> = 1..=100;
const SOFT_LIMIT: RangeInclusive<u32> = 1..=1000;
/// Up to humantime's year (365.25 days), so that the error message reads "1year".
const WINDOW: RangeInclusive<Duration> =
    Duration::from_secs(3600)..=Duration::from_secs(365 * DAY + DAY / 4);

impl Default for BounceConfig {
    fn default() -> Self {
        BounceConfig {
            domain: None,
            prefix: "b-".into(),
            secret_file: None,
            hard_limit: 1,
            soft_limit: 5,
            window: Duration::from_secs(7 * DAY),
            delay_warning: Duration::ZERO,
            fbl_sources: Vec::new(),
        }
    }
}

impl BounceConfig {
    /// The key file: `secret_file` if set, else `bounce.key` in `spool_dir`.
    pub fn secret_path(&self, spool_dir: &Path) -> PathBuf {
        match &self.secret_file {
            Some(path) => path.clone(),
            None => spool_dir.join("bounce.key"),
        }
    }
}

fn delay_warning<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, Duration::ZERO..=Duration::from_secs(30 * DAY))
}

fn domain<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(de)?;
    let name = text.strip_suffix('.').unwrap_or(&text).to_ascii_lowercase();
    check_name(&name, "domain", 253)
        .map_err(|why| serde::de::Error::custom(format!("{text:?} is not a domain name: {why}")))?;
    Ok(Some(name))
}

fn prefix<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    check_prefix(&text)
        .map_err(|why| serde::de::Error::custom(format!("{text:?} is not a VERP prefix: {why}")))?;
    Ok(text.to_ascii_lowercase())
}

/// Checks a VERP prefix: 1 to [`MAX_VERP_PREFIX`] characters of an unquoted local
/// part that no receiver rewrites.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Err("must not be empty".into());
    }
    if prefix.len() > MAX_VERP_PREFIX {
        return Err(format!("longer than {MAX_VERP_PREFIX} characters"));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !c.is_ascii_alphanumeric() && !matches!(c, '-' | '_' | '+' | '.'))
    {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '-', '_', '+' and '.' only)"
        ));
    }
    if prefix.starts_with('.') || prefix.contains("..") {
        return Err("must not start with '.' nor hold two in a row".into());
    }
    Ok(())
}

fn secret_file<'de, D: Deserializer<'de>>(de: D) -> Result<Option<PathBuf>, D::Error> {
    let path = PathBuf::deserialize(de)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(Some(path))
}

fn hard_limit<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, HARD_LIMIT)
}

fn soft_limit<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, SOFT_LIMIT)
}

fn window<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    duration::in_range(de, WINDOW)
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigError};

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("volley.toml"))
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(config) => panic!("expected an error, parsed {config:?}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn defaults() {
        let config = parse("[bounce]\n").unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.bounce, BounceConfig::default());
        assert_eq!(config.bounce.domain, None);
        assert_eq!(config.bounce.prefix, "b-");
        assert_eq!(config.bounce.hard_limit, 1);
        assert_eq!(config.bounce.soft_limit, 5);
        assert_eq!(config.bounce.window, Duration::from_secs(7 * DAY));
        assert_eq!(
            config.bounce.secret_path(Path::new("/var/spool/volley")),
            Path::new("/var/spool/volley/bounce.key")
        );
    }

    #[test]
    fn every_key() {
        let text = "[bounce]\ndomain = \"Bounce.Acme.Test.\"\nprefix = \"VB.\"\n\
                    secret_file = \"/etc/volley/bounce.key\"\nhard_limit = 2\n\
                    soft_limit = 10\nwindow = \"30d\"\ndelay_warning = \"4h\"\n\
                    fbl_sources = [\"192.0.2.0/24\", \"FBL.Provider.Test.\"]\n";
        let bounce = parse(text).unwrap_or_else(|err| panic!("{err}")).bounce;
        assert_eq!(
            bounce,
            BounceConfig {
                domain: Some("bounce.acme.test".into()),
                prefix: "vb.".into(),
                secret_file: Some(PathBuf::from("/etc/volley/bounce.key")),
                hard_limit: 2,
                soft_limit: 10,
                window: Duration::from_secs(30 * DAY),
                delay_warning: Duration::from_secs(4 * 3600),
                fbl_sources: vec![
                    FblSource::Network("192.0.2.0/24".parse().unwrap()),
                    FblSource::Domain("fbl.provider.test".into()),
                ],
            }
        );
        assert_eq!(
            bounce.secret_path(Path::new("/spool")),
            Path::new("/etc/volley/bounce.key")
        );
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let cases = [
            (
                "domain = \"bounce acme\"",
                "volley.toml:2:10: bounce.domain: \"bounce acme\" is not a domain name: ' ' is not allowed (letters, digits, '-' and '.' only; internationalized names in their xn-- form)",
            ),
            (
                "domain = \"\"",
                "volley.toml:2:10: bounce.domain: \"\" is not a domain name: the domain must not be empty",
            ),
            (
                "prefix = \"\"",
                "volley.toml:2:10: bounce.prefix: \"\" is not a VERP prefix: must not be empty",
            ),
            (
                "prefix = \"bounces-from-acme-\"",
                "volley.toml:2:10: bounce.prefix: \"bounces-from-acme-\" is not a VERP prefix: longer than 16 characters",
            ),
            (
                "prefix = \"b@\"",
                "volley.toml:2:10: bounce.prefix: \"b@\" is not a VERP prefix: '@' is not allowed (letters, digits, '-', '_', '+' and '.' only)",
            ),
            (
                "prefix = \".b\"",
                "volley.toml:2:10: bounce.prefix: \".b\" is not a VERP prefix: must not start with '.' nor hold two in a row",
            ),
            (
                "secret_file = \"\"",
                "volley.toml:2:15: bounce.secret_file: must not be empty",
            ),
            (
                "hard_limit = 0",
                "volley.toml:2:14: bounce.hard_limit: 0 is out of range: allowed 1..=100",
            ),
            (
                "soft_limit = 1001",
                "volley.toml:2:14: bounce.soft_limit: 1001 is out of range: allowed 1..=1000",
            ),
            (
                "window = \"59m\"",
                "volley.toml:2:10: bounce.window: 59m is out of range: allowed 1h..=1year",
            ),
            (
                "fbl_sources = [\"192.0.2.0/33\"]",
                "volley.toml:2:15: bounce.fbl_sources[0]: \"192.0.2.0/33\" is not a client network like \"192.0.2.0/24\": prefix /33 is longer than 32 bits",
            ),
            (
                "fbl_sources = [\"fbl provider\"]",
                "volley.toml:2:15: bounce.fbl_sources[0]: \"fbl provider\" is neither a client network like \"192.0.2.0/24\" nor a sender domain like \"fbl.provider.example\": ' ' is not allowed (letters, digits, '-' and '.' only; internationalized names in their xn-- form)",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(error(&format!("[bounce]\n{line}\n")), expected, "{line}");
        }
    }

    #[test]
    fn a_domain_source_names_its_subdomains_only() {
        let source = FblSource::Domain("fbl.provider.test".into());
        for (d, named) in [
            ("fbl.provider.test", true),
            ("FBL.Provider.Test.", true),
            ("mail.fbl.provider.test", true),
            ("evilfbl.provider.test", false),
            ("provider.test", false),
            ("fbl.provider.test.evil.test", false),
        ] {
            assert_eq!(source.signed_by(d), named, "{d}");
        }
        let network = FblSource::Network("192.0.2.0/24".parse().unwrap());
        assert!(!network.signed_by("fbl.provider.test"));
    }

    #[test]
    fn unknown_key_is_named() {
        assert_eq!(
            error("[bounce]\nsoft_limits = 3\n"),
            "volley.toml:2:1: bounce.soft_limits: unknown key; did you mean `soft_limit`? \
             (known keys: domain, prefix, secret_file, hard_limit, soft_limit, window, delay_warning, fbl_sources)"
        );
    }
}
