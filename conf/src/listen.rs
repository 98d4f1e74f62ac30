//! `[[listen]]`: the addresses volley's SMTP server accepts connections on.
//!
//! Each entry is one socket with a role (who may send what through it) and a TLS
//! mode. Limits and the certificate are shared by all listeners (`[server]`), as are
//! the relay rules (`[relay]`).

use std::net::SocketAddr;

use serde::Deserialize;

/// What a listener is for; decides which recipients it takes (see `[relay]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenRole {
    /// Mail submission by local programs and users (ports 587, 465, or a local
    /// port replacing `sendmail`): any recipient when the session authenticated
    /// (AUTH, only after TLS) or the client address is in `[relay] networks`;
    /// otherwise only recipients in `[relay] domains`.
    Submission,
    /// Mail for volley itself (bounces, complaints, replies) from anywhere: only
    /// recipients in `[relay] domains`, no AUTH offered.
    Inbound,
}

/// How a listener uses TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenTls {
    /// Plaintext first; STARTTLS (RFC 3207) is offered when `[server]
    /// tls_cert_file` is set. The default.
    #[default]
    Starttls,
    /// TLS from the first byte (RFC 8314 "implicit TLS", port 465 style); needs
    /// a certificate.
    Implicit,
    /// Never TLS (and so never AUTH).
    None,
}

/// One `[[listen]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with address and role")]
pub struct ListenConfig {
    /// The socket address to bind, e.g. `"127.0.0.1:2525"` or `"[::]:25"`.
    pub address: SocketAddr,
    /// `"submission"` or `"inbound"`.
    pub role: ListenRole,
    /// `"starttls"` (default), `"implicit"` or `"none"`.
    #[serde(default)]
    pub tls: ListenTls,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{Config, ConfigError};

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("volley.toml"))
    }

    #[test]
    fn entries() {
        let config = parse(
            "[[listen]]\naddress = \"127.0.0.1:2525\"\nrole = \"submission\"\n\
             [[listen]]\naddress = \"[::1]:25\"\nrole = \"inbound\"\ntls = \"none\"\n\
             [[listen]]\naddress = \"0.0.0.0:465\"\nrole = \"submission\"\ntls = \"implicit\"\n",
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.listen.len(), 3);
        assert_eq!(config.listen[0].tls, ListenTls::Starttls);
        assert_eq!(config.listen[0].address.port(), 2525);
        assert_eq!(config.listen[1].role, ListenRole::Inbound);
        assert_eq!(config.listen[1].tls, ListenTls::None);
        assert_eq!(config.listen[2].tls, ListenTls::Implicit);
    }

    #[test]
    fn errors_name_the_key() {
        let message = |text: &str| match parse(text) {
            Ok(config) => panic!("parsed {config:?}"),
            Err(err) => err.to_string(),
        };
        let m = message("[[listen]]\naddress = \"localhost:25\"\nrole = \"inbound\"\n");
        assert!(
            m.starts_with("volley.toml:2:11: listen[0].address: "),
            "{m}"
        );
        let m = message("[[listen]]\naddress = \"127.0.0.1:25\"\nrole = \"relay\"\n");
        assert!(
            m.starts_with("volley.toml:3:8: listen[0].role: unknown variant `relay`"),
            "{m}"
        );
        let m = message("[[listen]]\naddress = \"127.0.0.1:25\"\n");
        assert!(m.contains("missing field `role`"), "{m}");
    }
}
