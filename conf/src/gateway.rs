//! `[gateway]`: a delivery gateway of a fleet (`volley gateway`): its name, the
//! control planes it leases batches from, its token and how much it takes.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::integer;

/// The `[gateway]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct GatewayConfig {
    /// The gateway's name in the fleet (`GET /v1/gateways`): 1 to 64 letters,
    /// digits, `-`, `_` or `.`. Default: the host name.
    #[serde(deserialize_with = "name")]
    pub name: Option<String>,
    /// The control planes' API base URLs (`http://HOST:PORT`), tried in turn.
    #[serde(deserialize_with = "control")]
    pub control: Vec<String>,
    /// A file holding a `gateway` token (`volley token create --role
    /// gateway`). Required by `volley gateway`.
    pub token_file: Option<PathBuf>,
    /// Most batches leased at once. Default 64; allowed 1..=10000.
    #[serde(deserialize_with = "max_batches")]
    pub max_batches: u32,
    /// Where the gateway serves `GET /metrics` (Prometheus text format),
    /// `IP:PORT`. Default: unset (not served).
    #[serde(deserialize_with = "crate::control::listen")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            name: None,
            control: Vec::new(),
            token_file: None,
            max_batches: 64,
            metrics_listen: None,
        }
    }
}

const MAX_BATCHES: RangeInclusive<u32> = 1..=10_000;

fn name<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(de)?;
    let ok = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is not a gateway name: 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    Ok(Some(text))
}

fn control<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let urls = Vec::<String>::deserialize(de)?;
    for url in &urls {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(serde::de::Error::custom(format!(
                "{url:?} is not a control plane URL like \"http://127.0.0.1:8025\""
            )));
        }
    }
    Ok(urls
        .into_iter()
        .map(|u| u.trim_end_matches('/').to_owned())
        .collect())
}

fn max_batches<'de, D: Deserializer<'de>>(de: D) -> Result<u32, D::Error> {
    integer::in_range(de, MAX_BATCHES)
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
    fn keys_defaults_and_errors() {
        let c = Config::default().gateway;
        assert_eq!((c.name, c.max_batches), (None, 64));
        let g = Config::parse(
            "[gateway]\nname = \"gw-1\"\ncontrol = [\"http://127.0.0.1:8025/\", \"http://127.0.0.2:8025\"]\n\
             token_file = \"/etc/volley/gw.token\"\nmax_batches = 8\n",
            Path::new("v.toml"),
        )
        .unwrap()
        .gateway;
        assert_eq!(g.name.as_deref(), Some("gw-1"));
        assert_eq!(
            g.control,
            ["http://127.0.0.1:8025", "http://127.0.0.2:8025"]
        );
        assert_eq!(g.max_batches, 8);
        assert_eq!(
            error("[gateway]\nname = \"gw 1\"\n"),
            "volley.toml:2:8: gateway.name: \"gw 1\" is not a gateway name: 1 to 64 letters, digits, '-', '_' or '.'"
        );
        assert_eq!(
            error("[gateway]\ncontrol = [\"127.0.0.1:8025\"]\n"),
            "volley.toml:2:11: gateway.control: \"127.0.0.1:8025\" is not a control plane URL like \"http://127.0.0.1:8025\""
        );
        assert!(error("[gateway]\nmax_batches = 0\n")
            .starts_with("volley.toml:2:15: gateway.max_batches: "));
    }
}
