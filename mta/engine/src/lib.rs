//! volley's delivery engine and SMTP listener: the tokio drivers around the
//! sans-IO crates. It takes batches from a [`Feed`](delivery::feed::Feed) (the
//! local spool today), resolves MX, drains each destination site over pooled,
//! pipelined, TLS connections, renders and signs each message at send time, and
//! records every reply in the recipient's state slot and the delivery log; it
//! listens for mail (submission and inbound), stores what it accepts in the spool
//! and acts on what comes back.
//!
//! It does not render templates (a [`MessageSource`](volley_merge::source::MessageSource)
//! of `volley-merge` does, at send time), speak SMTP itself (`volley-smtp`'s
//! sessions do; this crate reads, feeds, writes and times out), classify bounces
//! (`volley-inbound` does), nor decide what to send: it delivers the batches its
//! feed hands it.
//!
//! What it may use: `volley-conf`, `volley-queue`, `volley-smtp`, `volley-merge`,
//! `volley-inbound`, and the I/O crates (tokio, rustls, hickory, mail-auth).
//! Nothing of volley's depends on it but the binary and the benchmarks; the
//! control plane never links it.
//!
//! # Layout
//! Modules depend on each other in this order, never back (a module uses only
//! those above it):
//! - [`outcome`], [`shaping`]: pure decisions (reply to outcome; rate, backoff,
//!   pause).
//! - [`host`]: the machine's host name. [`tls`]: rustls client configurations.
//! - [`mx`]: MX resolution with hickory-resolver, implicit and null MX, caching.
//! - [`conn`]: the tokio driver of one outgoing connection (TCP, STARTTLS,
//!   timeouts) around `volley_smtp::client::Session`.
//! - [`log`]: the JSON-lines delivery log.
//! - [`dkim`]: DKIM signing (mail-auth), with a body-hash cache.
//! - [`suppress`]: the suppression list as the engine asks it (a trait).
//! - [`verp_key`]: the VERP key file (read or created).
//! - [`delivery`]: the [`Engine`]: its [`feed`](delivery::feed) (what to deliver,
//!   where progress goes), a round's due work, sites, lanes, recording.
//! - [`feedback`]: classified inbound events applied: log lines and suppressions
//!   (through a [`feedback::SuppressionWriter`] the binary provides).
//! - [`listen`]: the tokio driver of the SMTP server: listeners, TLS, limits, AUTH
//!   users; accepted messages go to a caller's [`listen::Deposit`].
//! - [`deposit`]: [`deposit::SpoolDeposit`], accepted messages into the spool
//!   (stored verbatim, batches of their own; local domains to `inbound/`).
//! - [`maildrop`]: the drop directory `volley sendmail` leaves messages in
//!   while a daemon holds the spool, and the daemon's pickup.
//! - [`sweep`]: removing old `done/` batches and relayed messages no batch needs.

pub mod conn;
pub mod delivery;
pub mod deposit;
pub mod dkim;
pub mod feedback;
pub mod host;
pub mod listen;
pub mod log;
pub mod maildrop;
pub mod metrics;
pub mod mx;
pub mod outcome;
pub mod shaping;
pub mod suppress;
pub mod sweep;
pub mod tls;
pub mod verp_key;

pub use delivery::{Engine, EngineError, RunReport};
