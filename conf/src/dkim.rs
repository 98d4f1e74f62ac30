//! `[[dkim]]`: DKIM signing keys, one entry per signing domain and selector.
//!
//! Each entry names a signing domain (`d=`), a selector (`s=`), the private key
//! file and the algorithm. A message is signed with the entries whose domain is
//! its From domain or a parent of it; when several domains match, the most
//! specific (longest) one wins, and every entry with that domain signs, which is
//! how RSA and Ed25519 dual signing is configured. Reading and checking the key
//! file is the signer's business (`volley_engine::dkim`): this crate stays pure.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

/// The DKIM signing algorithm of a key (`a=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum DkimAlgorithm {
    /// `rsa-sha256` (RFC 6376): the one every verifier understands. The default.
    #[default]
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// `ed25519-sha256` (RFC 8463), written `"ed25519"` or `"ed25519-sha256"`:
    /// short keys and signatures, cheap to compute; not every verifier knows it,
    /// so it is usually deployed next to an RSA key for the same domain.
    #[serde(rename = "ed25519", alias = "ed25519-sha256")]
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The name used in the `a=` tag: `rsa-sha256` or `ed25519-sha256`.
    pub fn tag(self) -> &'static str {
        match self {
            DkimAlgorithm::RsaSha256 => "rsa-sha256",
            DkimAlgorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

/// At most this many header field names in `headers`.
const MAX_SIGNED_HEADERS: usize = 64;

/// One `[[dkim]]` entry: a signing key for a domain.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table with domain, selector and key_file"
)]
pub struct DkimConfig {
    /// The signing domain (`d=`), lower-cased, without a trailing dot. Messages
    /// whose From domain equals it or is a subdomain of it are signed with this
    /// key; the most specific matching domain wins.
    #[serde(deserialize_with = "domain")]
    pub domain: String,
    /// The selector (`s=`): the public key is published as a TXT record at
    /// `<selector>._domainkey.<domain>`. One or more dot-separated labels of
    /// letters, digits and hyphens.
    #[serde(deserialize_with = "selector")]
    pub selector: String,
    /// The private key, PEM: PKCS#8 (`BEGIN PRIVATE KEY`) for either algorithm,
    /// or PKCS#1 (`BEGIN RSA PRIVATE KEY`) for RSA. Read when the signer is built.
    #[serde(deserialize_with = "key_file")]
    pub key_file: PathBuf,
    /// `"rsa-sha256"` (default) or `"ed25519"` (= `"ed25519-sha256"`).
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// Header fields to sign, by name (any case). Must include From; no name
    /// twice; at most 64. Default: [`DkimConfig::DEFAULT_HEADERS`].
    #[serde(default = "default_headers", deserialize_with = "headers")]
    pub headers: Vec<String>,
}

impl DkimConfig {
    /// The header fields signed by default, in this order (`h=`). Fields a
    /// message lacks are still listed, so that adding them later breaks the
    /// signature.
    pub const DEFAULT_HEADERS: [&'static str; 10] = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Reply-To",
        "MIME-Version",
        "Content-Type",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ];
}

fn default_headers() -> Vec<String> {
    DkimConfig::DEFAULT_HEADERS
        .iter()
        .map(|h| (*h).to_owned())
        .collect()
}

fn domain<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    let name = text.strip_suffix('.').unwrap_or(&text).to_ascii_lowercase();
    check_name(&name, "domain", 253)
        .map_err(|why| serde::de::Error::custom(format!("{text:?} is not a domain name: {why}")))?;
    if !name.contains('.') {
        return Err(serde::de::Error::custom(format!(
            "{text:?} is not a domain name: a signing domain has at least two labels \
             (e.g. \"example.com\")"
        )));
    }
    Ok(name)
}

fn selector<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    check_name(&text, "selector", 63)
        .map_err(|why| serde::de::Error::custom(format!("{text:?} is not a selector: {why}")))?;
    Ok(text)
}

/// Checks a dot-separated name of LDH labels (RFC 1035, RFC 6376 §3.1):
/// labels of 1 to 63 letters, digits and hyphens, not starting or ending with a
/// hyphen; at most `max_len` characters in all.
pub(crate) fn check_name(name: &str, what: &str, max_len: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} must not be empty"));
    }
    if name.len() > max_len {
        return Err(format!("longer than {max_len} characters"));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "{c:?} is not allowed (letters, digits, '-' and '.' only; \
                 internationalized names in their xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

fn key_file<'de, D: Deserializer<'de>>(de: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(de)?;
    if path.as_os_str().is_empty() {
        return Err(serde::de::Error::custom("must not be empty"));
    }
    Ok(path)
}

fn headers<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(de)?;
    check_headers(&names).map_err(serde::de::Error::custom)?;
    Ok(names)
}

fn check_headers(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_SIGNED_HEADERS {
        return Err(format!(
            "{} header fields: allowed at most {MAX_SIGNED_HEADERS}",
            names.len()
        ));
    }
    for (i, name) in names.iter().enumerate() {
        // RFC 5322 §3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
        if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
            return Err(format!(
                "{name:?} is not a header field name (printable ASCII without ':' or spaces)"
            ));
        }
        if names[..i].iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(format!("{name:?} is listed twice"));
        }
    }
    if !names.iter().any(|n| n.eq_ignore_ascii_case("From")) {
        return Err(
            "must include \"From\" (RFC 6376 §5.4: the From field is always signed)".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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

    const MINIMAL: &str =
        "[[dkim]]\ndomain = \"Acme.Test.\"\nselector = \"s2026\"\nkey_file = \"/k.pem\"\n";

    #[test]
    fn minimal_entry_takes_defaults() {
        let config = parse(MINIMAL).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            config.dkim,
            vec![DkimConfig {
                domain: "acme.test".into(),
                selector: "s2026".into(),
                key_file: PathBuf::from("/k.pem"),
                algorithm: DkimAlgorithm::RsaSha256,
                headers: default_headers(),
            }]
        );
        assert_eq!(config.dkim[0].algorithm.tag(), "rsa-sha256");
    }

    #[test]
    fn every_key() {
        let text = "[[dkim]]\ndomain = \"acme.test\"\nselector = \"s2026.eu\"\n\
                    key_file = \"k.pem\"\nalgorithm = \"ed25519\"\nheaders = [\"from\", \"Subject\"]\n\
                    [[dkim]]\ndomain = \"acme.test\"\nselector = \"r1\"\nkey_file = \"r.pem\"\n\
                    algorithm = \"ed25519-sha256\"\n";
        let config = parse(text).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.dkim.len(), 2);
        assert_eq!(config.dkim[0].algorithm, DkimAlgorithm::Ed25519Sha256);
        assert_eq!(config.dkim[0].algorithm.tag(), "ed25519-sha256");
        assert_eq!(config.dkim[0].selector, "s2026.eu");
        assert_eq!(config.dkim[0].headers, ["from", "Subject"]);
        assert_eq!(config.dkim[1].algorithm, DkimAlgorithm::Ed25519Sha256);
    }

    #[test]
    fn missing_keys() {
        let message = error("[[dkim]]\ndomain = \"acme.test\"\nselector = \"s\"\n");
        assert!(message.contains("missing field `key_file`"), "{message}");
        assert!(message.starts_with("volley.toml:1:"), "{message}");
    }

    #[test]
    fn unknown_key_is_named() {
        let message = error(&format!("{MINIMAL}algoritm = \"ed25519\"\n"));
        assert!(message.starts_with("volley.toml:5:1: "), "{message}");
        assert!(message.contains("did you mean `algorithm`?"), "{message}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let cases = [
            (
                "domain = \"acme test\"",
                "\"acme test\" is not a domain name: ' ' is not allowed",
            ),
            (
                "domain = \"localhost\"",
                "\"localhost\" is not a domain name: a signing domain has at least two labels",
            ),
            (
                "domain = \"a..test\"",
                "\"a..test\" is not a domain name: empty label",
            ),
            (
                "domain = \"-a.test\"",
                "\"-a.test\" is not a domain name: label \"-a\" starts or ends with '-'",
            ),
            ("domain = \"\"", "the domain must not be empty"),
            (
                "selector = \"s_1\"",
                "\"s_1\" is not a selector: '_' is not allowed",
            ),
            ("key_file = \"\"", "must not be empty"),
            (
                "algorithm = \"rsa-sha1\"",
                "unknown variant `rsa-sha1`, expected one of `rsa-sha256`, `ed25519`, `ed25519-sha256`",
            ),
            (
                "headers = [\"To\", \"Subject\"]",
                "must include \"From\"",
            ),
            (
                "headers = [\"From\", \"from\"]",
                "\"from\" is listed twice",
            ),
            (
                "headers = [\"From\", \"X Y\"]",
                "\"X Y\" is not a header field name",
            ),
            ("headers = []", "must include \"From\""),
        ];
        for (line, expected) in cases {
            let key = line.split(' ').next().unwrap_or_default();
            // The bad line replaces the minimal entry's line of the same key, or is
            // appended as line 5.
            let mut lines: Vec<String> = MINIMAL.lines().map(str::to_owned).collect();
            let at = match lines.iter().position(|l| l.starts_with(&format!("{key} "))) {
                Some(at) => {
                    lines[at] = line.to_owned();
                    at
                }
                None => {
                    lines.push(line.to_owned());
                    lines.len() - 1
                }
            };
            let text = lines.join("\n") + "\n";
            let message = error(&text);
            let column = line.find('=').unwrap_or_default() + 3;
            let prefix = format!("volley.toml:{}:{column}: dkim", at + 1);
            assert!(message.starts_with(&prefix), "{line}: {message}");
            assert!(message.contains(&format!(".{key}: ")), "{line}: {message}");
            assert!(message.contains(expected), "{line}: {message}");
        }
    }

    #[test]
    fn too_many_headers() {
        let mut names: Vec<String> = (0..64).map(|i| format!("X-{i}")).collect();
        names[0] = "From".into();
        assert_eq!(check_headers(&names), Ok(()));
        names.push("X-last".into());
        assert_eq!(
            check_headers(&names),
            Err("65 header fields: allowed at most 64".into())
        );
    }

    #[test]
    fn long_names() {
        let label = "a".repeat(64);
        assert!(check_name(&format!("{label}.test"), "domain", 253)
            .is_err_and(|e| e.contains("longer than 63")));
        let long = vec!["abcdefghi"; 26].join(".");
        assert!(check_name(&long, "domain", 253).is_err_and(|e| e.contains("longer than 253")));
        assert_eq!(check_name("xn--bcher-kva.test", "domain", 253), Ok(()));
    }
}
