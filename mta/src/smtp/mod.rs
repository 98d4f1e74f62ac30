//! The SMTP protocol core, without I/O.
//!
//! Everything here is a deterministic state machine or a pure function: bytes read from
//! the peer go in, bytes to write and events come out. Nothing here touches a socket,
//! a timer or tokio; the driver reads, feeds, writes and enforces timeouts (see
//! STYLE.md §1, after quinn-proto and rustls).
//!
//! Layout:
//! - [`reply`]: parsing server replies, enhanced status codes.
//! - [`ehlo`]: the capabilities a server announces.
//! - [`data`]: CRLF normalization and dot-stuffing of message bodies.
//! - [`client`]: the client [`Session`]: greeting, EHLO, STARTTLS, pipelined
//!   transactions with DATA or BDAT, QUIT.
//! - [`server`]: the server [`server::Session`]: commands in, replies and
//!   decisions (AUTH, accepted messages, STARTTLS) out; relay rules, limits,
//!   DATA and BDAT content checks.

pub mod client;
pub mod data;
pub mod ehlo;
pub mod reply;
pub mod server;

pub use client::{
    CloseReason, Event, RcptResult, Session, SessionConfig, SessionError, Stage, TlsMode,
    Transaction, TransactionResult,
};
pub use ehlo::Capabilities;
pub use reply::{parse_reply, Enhanced, Parse, Reply, ReplyError};
