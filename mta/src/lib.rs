//! volley's delivery engine: the SMTP client and server state machines, DNS MX
//! resolution, connection pools and per-site shaping, mail merge and DKIM.
//!
//! It does not render templates (a [`source::MessageSource`] does, at send time) nor
//! decide what to send: it delivers what the spool holds and records each reply in
//! the recipient's state slot and the delivery log.
//!
//! # Layout
//! - [`smtp`]: the SMTP protocol, apart from I/O: reply parser, EHLO capabilities,
//!   dot-stuffing, the client [`smtp::Session`] and the server
//!   [`smtp::server::Session`] state machines.
//! - [`listen`]: the tokio driver of the SMTP server: listeners, TLS, limits, AUTH
//!   users; accepted messages go to a caller's [`listen::Deposit`].
//! - [`deposit`]: [`deposit::SpoolDeposit`], accepted messages into the spool
//!   (stored verbatim, batches of their own; local domains to `inbound/`).
//! - [`conn`]: the tokio driver of one outgoing connection (TCP, STARTTLS, timeouts).
//! - [`tls`]: rustls client configurations (opportunistic, verified).
//! - [`mx`]: MX resolution with hickory-resolver, implicit and null MX, caching.
//! - [`engine`]: a delivery round: due work, sites, connection workers, recording.
//! - [`outcome`], [`shaping`]: pure decisions (reply to outcome; rate, backoff, pause).
//! - [`merge`]: templates compiled once, rendered per recipient at send time.
//! - [`dkim`]: DKIM signing (mail-auth), with a body-hash cache.
//! - [`inbound`]: what comes back — VERP return paths, DSN and ARF parsing,
//!   unsubscribe replies, classification into events (sans-IO).
//! - [`feedback`]: those events applied — delivery-log lines and suppressions
//!   (through a [`feedback::SuppressionWriter`] the binary provides).
//! - [`fuzzing`]: entry points of the fuzz targets, also run by `cargo test`.
//! - [`log`]: the JSON-lines delivery log. [`source`]: where messages come from.
//! - [`sweep`]: removing old `done/` batches and relayed messages no batch needs.

pub mod conn;
mod decimal;
pub mod deposit;
pub mod dkim;
pub mod engine;
pub mod feedback;
pub mod fuzzing;
pub mod inbound;
pub mod listen;
pub mod log;
pub mod merge;
pub mod mx;
pub mod outcome;
pub mod shaping;
pub mod smtp;
pub mod source;
pub mod sweep;
pub mod tls;
