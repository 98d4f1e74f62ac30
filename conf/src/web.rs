//! `[web]`: the public web endpoints that links in campaign messages point at
//! (one-click unsubscribe, tracked clicks and opens), apart from the admin API.
//!
//! The section's presence turns them on: `volley run` and `volley control` then
//! serve `listen`, and every campaign message carries `List-Unsubscribe` links to
//! `base_url`. A gateway of a fleet needs the same `base_url` and `secret_file`
//! as its control planes (it writes the links, they check them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// The `[web]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct WebConfig {
    /// Where the public endpoints listen. Default `127.0.0.1:8080` (a reverse
    /// proxy in front terminates TLS for `base_url`).
    pub listen: SocketAddr,
    /// The public origin (and optional path prefix) that links point at, e.g.
    /// `https://links.acme.example`; no query or fragment, no trailing slash
    /// kept. Default: `http://` + `listen`.
    #[serde(deserialize_with = "base_url")]
    pub base_url: Option<String>,
    /// The key that signs link tokens (HMAC-SHA256): a file of at least 32
    /// bytes, the same on every process of a fleet. Unset: `SPOOL/web.key`,
    /// created with 32 random bytes on first use.
    pub secret_file: Option<PathBuf>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_url: None,
            secret_file: None,
        }
    }
}

impl WebConfig {
    /// The origin links point at: `base_url`, else `http://` + `listen`.
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(url) => url.clone(),
            None => format!("http://{}", self.listen),
        }
    }

    /// The key file: `secret_file` if set, else `web.key` in `spool_dir`.
    pub fn secret_path(&self, spool_dir: &Path) -> PathBuf {
        match &self.secret_file {
            Some(path) => path.clone(),
            None => spool_dir.join("web.key"),
        }
    }
}

/// Checks a base URL: `http://` or `https://`, a host, an optional path; no
/// query, fragment, space, quote or angle bracket (it goes into headers between
/// `<>` and into HTML attributes). Returns it without trailing slashes.
pub fn check_base_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let bad = |why: &str| {
        Err(format!(
            "{url:?} is not a base URL like \"https://links.example.com\": {why}"
        ))
    };
    let Some(rest) = rest else {
        return bad("it must start with https:// or http://");
    };
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return bad("it has no host");
    }
    if let Some(c) = url.chars().find(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '\\' | '`')
    }) {
        return bad(&format!("it holds {c:?}"));
    }
    if url.contains('?') || url.contains('#') {
        return bad("a query or fragment cannot be extended with a path");
    }
    if !url.is_ascii() {
        return bad("write it in ASCII (punycode for the host)");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn base_url<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(de)?;
    check_base_url(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
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
    fn absent_unless_written_and_defaults_when_empty() {
        assert_eq!(Config::default().web, None);
        let web = Config::parse("[web]\n", Path::new("v.toml"))
            .unwrap()
            .web
            .unwrap();
        assert_eq!(web.base_url(), "http://127.0.0.1:8080");
        assert_eq!(
            web.secret_path(Path::new("/var/spool/volley")),
            Path::new("/var/spool/volley/web.key")
        );
        let web = Config::parse(
            "[web]\nlisten = \"127.0.0.9:80\"\nbase_url = \"https://links.acme.test/v/\"\nsecret_file = \"/etc/volley/web.key\"\n",
            Path::new("v.toml"),
        )
        .unwrap()
        .web
        .unwrap();
        assert_eq!(web.base_url(), "https://links.acme.test/v");
        assert_eq!(web.listen.to_string(), "127.0.0.9:80");
    }

    #[test]
    fn bad_base_urls_are_refused_with_the_reason() {
        assert_eq!(
            error("[web]\nbase_url = \"links.acme.test\"\n"),
            "volley.toml:2:12: web.base_url: \"links.acme.test\" is not a base URL like \"https://links.example.com\": it must start with https:// or http://"
        );
        for (url, why) in [
            ("https://", "it has no host"),
            ("https://a.test/x?y=1", "a query or fragment"),
            ("https://a.test/<x>", "it holds '<'"),
            ("https://a.test/ x", "it holds ' '"),
        ] {
            let e = error(&format!("[web]\nbase_url = \"{url}\"\n"));
            assert!(e.contains(why), "{e}");
        }
        assert!(
            error("[web]\nlisten = \"nowhere\"\n").starts_with("volley.toml:2:10: web.listen: ")
        );
    }
}
