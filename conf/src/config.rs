//! The root of the configuration and how TOML text becomes a [`Config`].

use std::path::Path;

use serde::Deserialize;

use crate::bounce::BounceConfig;
use crate::control::ControlConfig;
use crate::delivery::DeliveryConfig;
use crate::dkim::DkimConfig;
use crate::dns::DnsConfig;
use crate::error::ConfigError;
use crate::gateway::GatewayConfig;
use crate::listen::ListenConfig;
use crate::queue::QueueConfig;
use crate::relay::RelayConfig;
use crate::retry::RetryConfig;
use crate::route::Route;
use crate::server::ServerConfig;
use crate::site::{SiteLimits, SiteOverride};
use crate::spool::SpoolConfig;
use crate::user::UserConfig;
use crate::web::WebConfig;
use crate::webhook::WebhookConfig;

/// The whole volley configuration: one field per `[section]` of the file.
///
/// `Config::default()` is what an empty file (or no file at all) yields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[spool]`: where the queue lives on disk.
    pub spool: SpoolConfig,
    /// `[queue]`: batching and flushing of queue state.
    pub queue: QueueConfig,
    /// `[dns]`: MX resolution.
    pub dns: DnsConfig,
    /// `[delivery]`: connecting to and talking with receiving servers.
    pub delivery: DeliveryConfig,
    /// `[retry]`: retry intervals and expiry of deferred recipients.
    pub retry: RetryConfig,
    /// `[[route]]`: domains sent to a smarthost instead of their MX.
    pub route: Vec<Route>,
    /// `[site]`: default limits per destination site.
    pub site: SiteLimits,
    /// `[[site_override]]`: limits for sites matched by domain or MX host.
    pub site_override: Vec<SiteOverride>,
    /// `[[dkim]]`: signing keys per domain.
    pub dkim: Vec<DkimConfig>,
    /// `[[listen]]`: the SMTP server's sockets, each with a role and TLS mode.
    pub listen: Vec<ListenConfig>,
    /// `[server]`: the SMTP server's name, certificate and limits.
    pub server: ServerConfig,
    /// `[[user]]`: who may AUTH to the SMTP server (more in `server.users_file`).
    pub user: Vec<UserConfig>,
    /// `[relay]`: trusted networks and the domains volley receives mail for.
    pub relay: RelayConfig,
    /// `[bounce]`: VERP return paths and what bounces back.
    pub bounce: BounceConfig,
    /// `[control]`: the control plane's API and store.
    pub control: ControlConfig,
    /// `[gateway]`: this process as a delivery gateway of a fleet.
    pub gateway: GatewayConfig,
    /// `[web]`: the public endpoints of unsubscribe, click and open links; on
    /// when the section is present.
    pub web: Option<WebConfig>,
    /// `[[webhook]]`: endpoints every event of the outbox is pushed to.
    pub webhook: Vec<WebhookConfig>,
}

impl Config {
    /// Reads and parses the configuration file at `path`.
    ///
    /// Errors name `path` as given (not canonicalized).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|io| ConfigError::Read {
            path: path.to_path_buf(),
            io,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration `text`; `file` is only used in error messages.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let document = toml::de::Deserializer::parse(text)
            .map_err(|err| ConfigError::from_syntax(&err, text, file))?;
        serde_path_to_error::deserialize(document)
            .map_err(|err| ConfigError::from_deserialize(err, text, file))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

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
        let config = Config::default();
        assert_eq!(config.spool.dir, Path::new("/var/spool/volley"));
        assert_eq!(config.queue.batch_size, 100);
        assert_eq!(config.queue.sync_interval, Duration::from_secs(1));
    }

    #[test]
    fn empty_text_is_default() {
        assert_eq!(parse("").ok(), Some(Config::default()));
        assert_eq!(parse("# nothing\n\n").ok(), Some(Config::default()));
        assert_eq!(parse("[queue]\n").ok(), Some(Config::default()));
    }

    #[test]
    fn example_is_default() {
        let example = include_str!("../volley.example.toml");
        assert_eq!(parse(example).ok(), Some(Config::default()));
    }

    #[test]
    fn every_key_is_in_the_example() {
        // The known sections and keys come from serde itself (the unknown-field
        // message), so this test needs no update when a section is added.
        let example: toml::Table = toml::from_str(include_str!("../volley.example.toml"))
            .unwrap_or_else(|err| panic!("example: {err}"));
        let sections = known_keys("__probe = 1");
        assert!(sections.contains(&"queue".to_owned()), "{sections:?}");
        let text = include_str!("../volley.example.toml");
        for section in sections {
            // Arrays of tables have no default entries, and optional sections are
            // off unless written: the example documents them commented out,
            // `# [[name]]` or `# [name]` followed by `# key = ...` lines.
            let header = if ARRAY_SECTIONS.contains(&section.as_str()) {
                Some(format!("[[{section}]]"))
            } else if OPTIONAL_SECTIONS.contains(&section.as_str()) {
                Some(format!("[{section}]"))
            } else {
                None
            };
            if let Some(header) = header {
                assert!(
                    text.contains(&format!("# {header}")),
                    "example lacks {header}"
                );
                for key in known_keys(&format!("{header}\n__probe = 1")) {
                    assert!(
                        text.contains(&format!("# {key} = ")),
                        "example lacks {section}.{key}"
                    );
                }
                continue;
            }
            let table = example
                .get(&section)
                .and_then(toml::Value::as_table)
                .unwrap_or_else(|| panic!("example lacks [{section}]"));
            for key in known_keys(&format!("[{section}]\n__probe = 1")) {
                assert!(
                    table.contains_key(&key) || text.contains(&format!("# {key} = ")),
                    "example lacks {section}.{key}"
                );
            }
        }
    }

    /// Sections whose presence turns something on, commented out in the example.
    const OPTIONAL_SECTIONS: [&str; 1] = ["web"];

    /// Sections that are arrays of tables (`[[route]]`), empty by default.
    const ARRAY_SECTIONS: [&str; 6] = [
        "route",
        "site_override",
        "dkim",
        "listen",
        "user",
        "webhook",
    ];

    fn known_keys(text: &str) -> Vec<String> {
        let message = match toml::from_str::<Config>(text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(err) => err.message().to_owned(),
        };
        crate::error::known_fields(&message, "__probe")
            .unwrap_or_else(|| panic!("not an unknown-field message: {message}"))
    }

    #[test]
    fn values() {
        let config = parse(
            "[spool]\ndir = \"spool\"\n[queue]\nbatch_size = 100000\nsync_interval = \"250ms\"\n",
        )
        .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.spool.dir, Path::new("spool"));
        assert_eq!(config.queue.batch_size, 100_000);
        assert_eq!(config.queue.sync_interval, Duration::from_millis(250));
        // Missing keys keep their defaults next to given ones.
        let config = parse("[queue]\nbatch_size = 1\n").unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.queue.sync_interval, Duration::from_secs(1));
        // Dotted keys and inline tables are the same thing to TOML.
        let config = parse("queue.sync_interval = \"0s\"\nspool = { dir = \"/q\" }\n")
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.queue.sync_interval, Duration::ZERO);
        assert_eq!(config.spool.dir, Path::new("/q"));
    }

    #[test]
    fn unknown_key() {
        let text = "[queue]\nbatch_size = 5\nbatchsize = 10\n";
        assert_eq!(
            error(text),
            "volley.toml:3:1: queue.batchsize: unknown key; did you mean `batch_size`? \
             (known keys: batch_size, sync_interval, window, group_window, group_messages, group_bytes, seal_after)"
        );
        match parse(text) {
            Err(ConfigError::Invalid {
                file,
                line,
                column,
                key,
                ..
            }) => {
                assert_eq!(file, Path::new("volley.toml"));
                assert_eq!((line, column), (3, 1));
                assert_eq!(key, "queue.batchsize");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_key_without_suggestion() {
        assert_eq!(
            error("[queue]\n  frobnicate = true\n"),
            "volley.toml:2:3: queue.frobnicate: unknown key \
             (known keys: batch_size, sync_interval, window, group_window, group_messages, group_bytes, seal_after)"
        );
    }

    #[test]
    fn unknown_key_dotted_and_inline() {
        assert_eq!(
            error("queue.sync_intervall = \"1s\"\n"),
            "volley.toml:1:7: queue.sync_intervall: unknown key; did you mean `sync_interval`? \
             (known keys: batch_size, sync_interval, window, group_window, group_messages, group_bytes, seal_after)"
        );
        assert_eq!(
            error("spool = { dri = \"/q\" }\n"),
            "volley.toml:1:11: spool.dri: unknown key; did you mean `dir`? (known keys: dir)"
        );
    }

    #[test]
    fn unknown_section() {
        assert_eq!(
            error("# volley\n[spoool]\ndir = \"/q\"\n"),
            "volley.toml:2:2: spoool: unknown section; did you mean `spool`?"
        );
        assert_eq!(
            error("[frobnicate]\n"),
            "volley.toml:1:2: frobnicate: unknown section (known sections: spool, queue, dns, \
             delivery, retry, route, site, site_override, dkim, listen, server, user, relay, bounce, control, gateway, web, webhook)"
        );
    }

    #[test]
    fn delivery_threads_default_and_range() {
        let config = parse("[delivery]\nthreads = 4\n").unwrap();
        assert_eq!(config.delivery.threads, 4);
        assert_eq!(Config::default().delivery.threads, 0);
        assert_eq!(
            error("[delivery]\nthreads = 1025\n"),
            "volley.toml:2:11: delivery.threads: 1025 is out of range: allowed 0..=1024"
        );
    }

    #[test]
    fn delivery_stop_timeout_default_and_range() {
        let config = parse("[delivery]\nstop_timeout = \"0s\"\n").unwrap();
        assert_eq!(config.delivery.stop_timeout, Duration::ZERO);
        assert_eq!(
            Config::default().delivery.stop_timeout,
            Duration::from_secs(10)
        );
        let err = error("[delivery]\nstop_timeout = \"1h\"\n");
        assert!(
            err.starts_with("volley.toml:2:16: delivery.stop_timeout: "),
            "{err}"
        );
    }

    #[test]
    fn batch_size_out_of_range() {
        assert_eq!(
            error("[queue]\nbatch_size = 0\n"),
            "volley.toml:2:14: queue.batch_size: 0 is out of range: allowed 1..=100000"
        );
        assert_eq!(
            error("[queue]\nbatch_size = 100001\n"),
            "volley.toml:2:14: queue.batch_size: 100001 is out of range: allowed 1..=100000"
        );
        assert_eq!(
            error("[queue]\nbatch_size = -1\n"),
            "volley.toml:2:14: queue.batch_size: -1 is out of range: allowed 1..=100000"
        );
    }

    #[test]
    fn batch_size_wrong_type() {
        assert_eq!(
            error("[queue]\nbatch_size = \"ten\"\n"),
            "volley.toml:2:14: queue.batch_size: invalid type: string \"ten\", \
             expected an integer in 1..=100000"
        );
        assert_eq!(
            error("[queue]\nbatch_size = 1.5\n"),
            "volley.toml:2:14: queue.batch_size: invalid type: floating point `1.5`, \
             expected an integer in 1..=100000"
        );
    }

    #[test]
    fn bad_duration() {
        assert_eq!(
            error("[queue]\n\nsync_interval = \"fast\"\n"),
            "volley.toml:3:17: queue.sync_interval: invalid duration \"fast\": \
             expected a time span like \"1s\" or \"250ms\" (expected number at 0)"
        );
        assert_eq!(
            error("[queue]\nsync_interval = \"10\"\n"),
            "volley.toml:2:17: queue.sync_interval: invalid duration \"10\": \
             expected a time span like \"1s\" or \"250ms\" \
             (time unit needed, for example 10sec or 10ms)"
        );
        assert_eq!(
            error("[queue]\nsync_interval = 10\n"),
            "volley.toml:2:17: queue.sync_interval: invalid type: integer `10`, \
             expected a time span like \"1s\" or \"250ms\""
        );
        assert_eq!(
            error("[queue]\nsync_interval = \"61min\"\n"),
            "volley.toml:2:17: queue.sync_interval: 61min is out of range: allowed 0s..=1h"
        );
        let config =
            parse("[queue]\nsync_interval = \"1h\"\n").unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.queue.sync_interval, Duration::from_secs(3600));
    }

    #[test]
    fn wrong_section_type() {
        assert_eq!(
            error("queue = 5\n"),
            "volley.toml:1:9: queue: invalid type: integer `5`, expected a table"
        );
    }

    #[test]
    fn empty_spool_dir() {
        assert_eq!(
            error("[spool]\ndir = \"\"\n"),
            "volley.toml:2:7: spool.dir: must not be empty"
        );
    }

    #[test]
    fn syntax_error() {
        // No key: the document never got as far as keys. The message is toml's.
        assert_eq!(
            error("[queue]\nbatch_size = = 3\n"),
            "volley.toml:2:14: extra `=`, expected nothing"
        );
        assert_eq!(
            error("[queue\n"),
            "volley.toml:1:7: unclosed table, expected `]`"
        );
        assert_eq!(
            error("[queue]\nbatch_size = 1\nbatch_size = 2\n"),
            "volley.toml:3:1: duplicate key"
        );
        assert_eq!(
            error("[queue]\n[queue]\n"),
            "volley.toml:2:2: duplicate key"
        );
        match parse("[queue]\nbatch_size = \n") {
            Err(ConfigError::Invalid {
                line, column, key, ..
            }) => assert_eq!((line, column, key.as_str()), (2, 14, "")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn huge_integer_is_out_of_range() {
        assert_eq!(
            error("[queue]\nbatch_size = 99999999999999999999\n"),
            "volley.toml:2:14: queue.batch_size: 99999999999999999999 is out of range: \
             allowed 1..=100000"
        );
    }

    #[test]
    fn column_counts_characters() {
        // "é" is two bytes; the column is counted in characters.
        assert_eq!(
            error("spool = { dir = \"é\", dri = 1 }\n"),
            "volley.toml:1:22: spool.dri: unknown key; did you mean `dir`? (known keys: dir)"
        );
    }
}
