//! Typed configuration for volley.
//!
//! One TOML file describes the whole MTA. This crate turns it into a [`Config`]
//! with serde: every key is optional and takes its documented default, unknown
//! keys and sections are rejected, and values outside their allowed range are
//! rejected while deserializing. Every error is a single line naming the file,
//! line, column and dotted key (`volley.toml:2:14: queue.batch_size: ...`), with
//! a "did you mean" hint for misspelled keys. `volley.example.toml` beside this
//! crate documents every key with its default.
//!
//! What it does not do: watch or reload the file, merge several files, read
//! settings from environment variables (only the *location* of the file, see
//! [`Config::locate`]), or check anything that needs the filesystem or network
//! (whether the spool directory exists is the queue's business).
//!
//! # Layout
//!
//! - `config.rs`: [`Config`], the root, and how text becomes a `Config`.
//! - `locate.rs`: where the file comes from (explicit path, `$VOLLEY_CONFIG`, `/etc`).
//! - one file per section: `spool.rs` ([`SpoolConfig`]), `queue.rs` ([`QueueConfig`]),
//!   `dns.rs`, `delivery.rs`, `retry.rs`, `route.rs` (`[[route]]`), `site.rs`
//!   (`[site]` and `[[site_override]]`), `dkim.rs` (`[[dkim]]`); for the SMTP
//!   server `listen.rs` (`[[listen]]`), `server.rs` (`[server]`), `user.rs`
//!   (`[[user]]` and the users file), `relay.rs` (`[relay]`, CIDR blocks); `bounce.rs` ([`BounceConfig`]: VERP
//!   return paths and bounce limits); `control.rs` ([`ControlConfig`]: the API and the store); `web.rs`
//!   ([`WebConfig`]: the public link endpoints); `webhook.rs` (`[[webhook]]`,
//!   [`WebhookConfig`]: endpoints events are pushed to);
//!   `glob.rs` for domain patterns.
//!   A new section is a new file with one struct, plus one field in [`Config`].
//! - `integer.rs`, `duration.rs`: range checks for values, used with
//!   `#[serde(deserialize_with)]` so errors point at the offending value.
//! - `error.rs`: [`ConfigError`] and the translation of toml/serde errors into it.
//! - `suggest.rs`: "did you mean" for unknown keys.

mod bounce;
mod config;
mod control;
mod delivery;
mod dkim;
mod dns;
mod duration;
mod error;
mod gateway;
mod glob;
mod integer;
mod listen;
mod locate;
mod queue;
mod relay;
mod retry;
mod route;
mod server;
mod site;
mod spool;
mod suggest;
mod user;
mod web;
mod webhook;

pub use bounce::{BounceConfig, FblSource, MAX_VERP_PREFIX};
pub use config::Config;
pub use control::{Assignment, ControlConfig};
pub use delivery::{DeliveryConfig, TlsPolicy};
pub use dkim::{DkimAlgorithm, DkimConfig};
pub use dns::DnsConfig;
pub use error::ConfigError;
pub use gateway::GatewayConfig;
pub use glob::Glob;
pub use listen::{ListenConfig, ListenRole, ListenTls};
pub use locate::{CONFIG_ENV, DEFAULT_CONFIG_PATH};
pub use queue::QueueConfig;
pub use relay::{Cidr, RelayConfig};
pub use retry::RetryConfig;
pub use route::Route;
pub use server::ServerConfig;
pub use site::{limits_for, SiteLimits, SiteOverride};
pub use spool::SpoolConfig;
pub use user::{load_users_file, parse_users, UserConfig};
pub use web::{check_base_url, WebConfig};
pub use webhook::{
    check_event_types, check_webhook_url, default_retry_for as default_webhook_retry_for,
    default_timeout as default_webhook_timeout, parse_webhook_secret, WebhookConfig, EVENT_TYPES,
    MAX_BATCH,
};
