//! `[control]`: the control plane — where its HTTP API listens, which store it
//! keeps campaigns in, and the bounds on what a request may carry.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::integer;

/// The `[control]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct ControlConfig {
    /// Where `volley run` serves the HTTP API (`IP:PORT`). Default
    /// `127.0.0.1:8025`; `""`: no API.
    #[serde(deserialize_with = "listen")]
    pub listen: Option<SocketAddr>,
    /// The store: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`. Unset
    /// (the default): `SPOOL/control.db`, an SQLite file in the spool.
    #[serde(deserialize_with = "database")]
    pub database: Option<String>,
    /// A file holding the API token the `volley campaign` commands use when
    /// neither `--token` nor `$VOLLEY_TOKEN` gives one.
    pub token_file: Option<PathBuf>,
    /// Largest upload (`POST /v1/uploads`) in bytes. Default 10 GiB; allowed
    /// 1 KiB..=1 TiB.
    #[serde(deserialize_with = "max_upload_bytes")]
    pub max_upload_bytes: u64,
    /// Largest JSON request body in bytes (a campaign with its inline
    /// recipients and attachments). Default 64 MiB; allowed 1 KiB..=1 GiB.
    #[serde(deserialize_with = "max_body_bytes")]
    pub max_body_bytes: u64,
    /// Most recipients a campaign may carry inline (`recipients`); more go
    /// through an upload. Default 10,000; allowed 1..=1,000,000.
    #[serde(deserialize_with = "max_recipients")]
    pub max_recipients: u32,
    /// How long a gateway's lease on a batch lasts without a report renewing
    /// it: a gateway silent this long is `lost` and its batches go to others.
    /// Default 30s; allowed 5s..=10m.
    #[serde(deserialize_with = "lease_ttl")]
    pub lease_ttl: std::time::Duration,
    /// How due batches are handed to gateways: `learned` (each site's batches
    /// to the gateways that deliver to it fastest, exploring the others) or
    /// `round_robin`. Default `learned`.
    pub assignment: Assignment,
}

/// `[control] assignment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// By learned delivery time per (gateway, site).
    Learned,
    /// In turn, whatever the site.
    RoundRobin,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8025))),
            database: None,
            token_file: None,
            max_upload_bytes: 10 << 30,
            max_body_bytes: 64 << 20,
            max_recipients: 10_000,
            lease_ttl: std::time::Duration::from_secs(30),
            assignment: Assignment::Learned,
        }
    }
}

const UPLOAD: RangeInclusive<u64> = 1024..=(1 << 40);
const BODY: RangeInclusive<u64> = 1024..=(1 << 30);
const RECIPIENTS: RangeInclusive<u32> = 1..=1_000_000;

pub(crate) fn listen<'de, D: Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(de)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.trim().parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP:PORT address (e.g. \"127.0.0.1:8025\"; \"\" for no API)"
        ))
    })
}

fn database<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(de)?;
    let ok = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| text.starts_with(p));
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is not a database URL: use sqlite://PATH or postgres://USER@HOST:PORT/DB"
        )));
    }
    Ok(Some(text))
}

fn max_upload_bytes<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    integer::in_range(de, UPLOAD)
}

fn max_body_bytes<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    integer::in_range(de, BODY)
}

fn lease_ttl<'de, D: Deserializer<'de>>(de: D) -> Result<std::time::Duration, D::Error> {
    use std::time::Duration;
    crate::duration::in_range(de, Duration::from_secs(5)..=Duration::from_secs(600))
}

fn max_recipients<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, RECIPIENTS)
}

#[cfg(test)]
mod tests {
    use crate::Config;
    use std::path::Path;

    fn error(text: &str) -> String {
        Config::parse(text, Path::new("volley.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_and_errors() {
        let c = Config::default().control;
        assert_eq!(
            c.listen.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:8025")
        );
        let off = Config::parse("[control]\nlisten = \"\"\n", Path::new("v.toml")).unwrap();
        assert_eq!(off.control.listen, None);
        let pg = Config::parse(
            "[control]\ndatabase = \"postgres://v@127.0.0.5:5432/volley\"\n",
            Path::new("v.toml"),
        )
        .unwrap();
        assert_eq!(
            pg.control.database.as_deref(),
            Some("postgres://v@127.0.0.5:5432/volley")
        );
        assert_eq!(
            error("[control]\nlisten = \"localhost\"\n"),
            "volley.toml:2:10: control.listen: \"localhost\" is not an IP:PORT address (e.g. \"127.0.0.1:8025\"; \"\" for no API)"
        );
        assert!(error("[control]\ndatabase = \"mysql://x\"\n")
            .starts_with("volley.toml:2:12: control.database: "));
        assert!(error("[control]\nmax_recipients = 0\n")
            .starts_with("volley.toml:2:18: control.max_recipients: "));
    }
}
