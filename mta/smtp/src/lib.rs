//! volley's SMTP protocol core, without I/O.
//!
//! Everything here is a deterministic state machine or a pure function: bytes read from
//! the peer go in, bytes to write and events come out. Nothing here touches a socket,
//! a timer or tokio; the driver reads, feeds, writes and enforces timeouts (see
//! STYLE.md §1, after quinn-proto and rustls).
//!
//! What it may use: `volley-conf` (the relay policy's `ListenRole` and `Cidr`),
//! `bytes`, `memchr`, `thiserror` and `tracing` (the server session logs refusals).
//! No tokio, no sockets, no files: the crate's dependencies are what keeps it
//! sans-IO. Everything else of volley's depends on it, never the other way: the
//! server's VERP check is a trait ([`server::VerpCheck`]) that `volley-inbound`
//! implements.
//!
//! # Layout
//! - [`reply`]: parsing server replies, enhanced status codes.
//! - [`ehlo`]: the capabilities a server announces.
//! - [`data`]: CRLF normalization and dot-stuffing of message bodies.
//! - [`client`]: the client [`Session`]: greeting, EHLO, STARTTLS, pipelined
//!   transactions with DATA or BDAT, QUIT.
//! - [`server`]: the server [`server::Session`]: commands in, replies and
//!   decisions (AUTH, accepted messages, STARTTLS) out; relay rules, limits,
//!   DATA and BDAT content checks.
//! - [`dsn`]: the DSN extension's parameters (RFC 3461: RET, ENVID, NOTIFY,
//!   ORCPT) as the server receives them.
//! - [`date`], [`decimal`]: the RFC 5322 date and decimal numbers written without
//!   `fmt` (per-message paths: `Date:`, `Received:`, SIZE= and BDAT sizes).
//! - [`fuzzing`]: the entry points of the `smtp_replies` and `smtp_commands` fuzz
//!   targets, also run by `cargo test`.

pub mod client;
pub mod data;
pub mod date;
pub mod decimal;
pub mod dsn;
pub mod ehlo;
pub mod fuzzing;
pub mod reply;
pub mod server;

pub use client::{
    CloseReason, Event, RcptResult, Session, SessionConfig, SessionError, Stage, TlsMode,
    Transaction, TransactionResult,
};
pub use ehlo::Capabilities;
pub use reply::{parse_reply, Enhanced, Parse, Reply, ReplyError};
