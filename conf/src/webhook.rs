//! `[[webhook]]`: HTTP endpoints that every event of the outbox is pushed to,
//! signed per the Standard Webhooks specification.
//!
//! Entries here are the operator's; applications add their own through the
//! API (`POST /v1/webhooks`). Both are delivered the same way, by whichever
//! control-plane process holds the webhook (`volley run` or `volley control`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The event types a webhook can ask for, in the order they are documented.
pub const EVENT_TYPES: &[&str] = &[
    "message.delivered",
    "message.deferred",
    "message.bounced",
    "message.expired",
    "message.complained",
    "message.unsubscribed",
    "message.clicked",
    "message.opened",
    "message.replied",
    "campaign.completed",
];

/// Most events one batched request carries.
pub const MAX_BATCH: u32 = 10_000;

/// One `[[webhook]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with url and secret_file")]
pub struct WebhookConfig {
    /// Where events are POSTed: an `http://` or `https://` URL.
    #[serde(deserialize_with = "url")]
    pub url: String,
    /// The event types sent ([`EVENT_TYPES`]); empty or absent: every type.
    #[serde(default, deserialize_with = "events")]
    pub events: Vec<String>,
    /// A file holding the signing secret in the Standard Webhooks form,
    /// `whsec_` followed by the base64 of 24 to 64 random bytes. Required.
    pub secret_file: PathBuf,
    /// Events per request: absent, one event per request (its body is the
    /// event); `N` (1..=10000), up to N events per request as `{"type":
    /// "batch", "data": [EVENT, ...]}`.
    #[serde(default, deserialize_with = "batch")]
    pub batch: Option<u32>,
    /// How long a request that keeps failing is retried (with backoff) before
    /// its events are counted as failed and skipped. Default "3d"; allowed
    /// "1m"..="30d".
    #[serde(default = "default_retry_for", deserialize_with = "retry_for")]
    pub retry_for: Duration,
    /// How long one request may take. Default "10s"; allowed "1s"..="2m".
    #[serde(default = "default_timeout", deserialize_with = "timeout")]
    pub timeout: Duration,
}

/// The default of `retry_for`: three days.
pub fn default_retry_for() -> Duration {
    Duration::from_secs(3 * 86_400)
}

/// The default of `timeout`.
pub fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Checks a webhook URL: `http://` or `https://`, a host, no spaces or
/// control characters, no user name or password in it.
pub fn check_webhook_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let bad = |why: &str| {
        Err(format!(
            "{url:?} is not a webhook URL like \"https://app.example.com/volley-events\": {why}"
        ))
    };
    let Some(rest) = rest else {
        return bad("it must start with https:// or http://");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return bad("it has no host");
    }
    if authority.contains('@') {
        return bad("credentials in the URL would be sent to every redirect target and logged: the signature authenticates volley");
    }
    if url.len() > 2000 {
        return bad("it is longer than 2000 characters");
    }
    if let Some(c) = url.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return bad(&format!("it holds {c:?}"));
    }
    Ok(())
}

/// Checks a list of event types against [`EVENT_TYPES`].
pub fn check_event_types(types: &[String]) -> Result<(), String> {
    for t in types {
        if !EVENT_TYPES.contains(&t.as_str()) {
            return Err(format!(
                "{t:?} is not an event type: use some of {}",
                EVENT_TYPES.join(", ")
            ));
        }
    }
    Ok(())
}

/// Checks a secret in the Standard Webhooks form (`whsec_` + base64 of 24 to
/// 64 bytes) and answers its key bytes.
pub fn parse_webhook_secret(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let Some(b64) = text.strip_prefix("whsec_") else {
        return Err("a webhook secret starts with \"whsec_\" followed by base64 (make one with: echo \"whsec_$(head -c 32 /dev/urandom | base64)\")".to_owned());
    };
    let key = data_encoding::BASE64
        .decode(b64.as_bytes())
        .map_err(|e| format!("the part after \"whsec_\" is not base64: {e}"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!(
            "the secret holds {} bytes: use 24 to 64 random bytes",
            key.len()
        ));
    }
    Ok(key)
}

fn url<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    let text = String::deserialize(de)?;
    check_webhook_url(&text).map_err(serde::de::Error::custom)?;
    Ok(text)
}

fn events<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(de)?;
    check_event_types(&list).map_err(serde::de::Error::custom)?;
    Ok(list)
}

fn batch<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    crate::integer::in_range(de, 1..=MAX_BATCH).map(Some)
}

fn retry_for<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    crate::duration::in_range(
        de,
        Duration::from_secs(60)..=Duration::from_secs(30 * 86_400),
    )
}

fn timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    crate::duration::in_range(de, Duration::from_secs(1)..=Duration::from_secs(120))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use std::path::Path;

    fn error(text: &str) -> String {
        Config::parse(text, Path::new("volley.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn entries_with_defaults() {
        let config = Config::parse(
            "[[webhook]]\nurl = \"https://app.test/hook\"\nsecret_file = \"/s\"\n\n[[webhook]]\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"message.delivered\"]\nsecret_file = \"/t\"\nbatch = 500\n",
            Path::new("v.toml"),
        )
        .unwrap();
        assert_eq!(config.webhook.len(), 2);
        let w = &config.webhook[0];
        assert_eq!(
            (w.events.len(), w.batch, w.retry_for, w.timeout),
            (0, None, default_retry_for(), default_timeout())
        );
        assert_eq!(config.webhook[1].batch, Some(500));
    }

    #[test]
    fn bad_entries_name_line_and_key() {
        let table = [
            (
                "[[webhook]]\nurl = \"ftp://x\"\nsecret_file = \"/s\"\n",
                "volley.toml:2:7: webhook[0].url: \"ftp://x\" is not a webhook URL",
            ),
            (
                "[[webhook]]\nurl = \"https://u:p@x.test/\"\nsecret_file = \"/s\"\n",
                "webhook[0].url: \"https://u:p@x.test/\" is not a webhook URL like \"https://app.example.com/volley-events\": credentials",
            ),
            (
                "[[webhook]]\nurl = \"https://x.test/\"\nevents = [\"message.sent\"]\nsecret_file = \"/s\"\n",
                "volley.toml:3:10: webhook[0].events: \"message.sent\" is not an event type: use some of message.delivered,",
            ),
            (
                "[[webhook]]\nurl = \"https://x.test/\"\nsecret_file = \"/s\"\nbatch = 0\n",
                "volley.toml:4:9: webhook[0].batch: 0 is out of range",
            ),
            (
                "[[webhook]]\nurl = \"https://x.test/\"\n",
                "missing field `secret_file`",
            ),
            (
                "[[webhook]]\nurl = \"https://x.test/\"\nsecret_file = \"/s\"\nretry_for = \"10s\"\n",
                "webhook[0].retry_for: 10s is out of range",
            ),
        ];
        for (text, want) in table {
            let got = error(text);
            assert!(got.contains(want), "{text:?}: {got}");
        }
    }

    #[test]
    fn secrets_in_the_standard_form() {
        let key = [7u8; 32];
        let text = format!("whsec_{}\n", data_encoding::BASE64.encode(&key));
        assert_eq!(parse_webhook_secret(&text).unwrap(), key.to_vec());
        for bad in ["", "secret", "whsec_!!", "whsec_AAAA"] {
            assert!(parse_webhook_secret(bad).is_err(), "{bad:?}");
        }
    }
}
