//! What comes back after delivery: bounces, complaints and unsubscribe replies,
//! read from inbound messages and turned into events.
//!
//! Campaign messages go out with a VERP return path ([`Verp`]): the envelope
//! sender names the campaign, batch and recipient and carries an HMAC tag, so a
//! bounce to it identifies its recipient whatever the bounce says, and a bounce
//! to a forged address is refused. [`classify()`] takes an inbound message (the
//! SMTP envelope and the bytes) and answers with [`InboundEvent`]s: an
//! asynchronous bounce (a DSN, RFC 3464) classed hard, soft or policy; a
//! complaint (an ARF report, RFC 5965); an unsubscribe request (a reply saying
//! `unsubscribe` or `delete`); or nothing to do.
//!
//! Everything here is sans-IO — bytes in, decisions out. It does not read the
//! VERP key file (`volley_engine::verp_key` does), receive mail (the SMTP
//! server does), keep the suppression list, count bounces against `[bounce]
//! hard_limit` / `soft_limit`, write log lines or act on events
//! (`volley_engine::feedback` does, on receipt).
//!
//! What it may use: `volley-smtp` (reply and enhanced status codes, and the
//! server's [`VerpCheck`](volley_smtp::server::VerpCheck), which [`Verp`]
//! implements), `mail-parser` (MIME structure), `ring` (HMAC), `data-encoding`.
//!
//! # Layout
//! - [`verp`]: the return-path format, [`Verp`] (make, decode, verify).
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`arf`]: RFC 5965 feedback reports.
//! - [`reply`]: `unsubscribe` / `delete` replies and auto-reply detection.
//! - [`classify`](mod@classify): the decision, and the bounce class table.
//! - `fields`, `original`: header-style field blocks, the returned original's
//!   identifying fields ([`OriginalHeaders`]).
//! - `fixtures/`: hand-written DSNs, reports and replies for the tests, read
//!   through [`testing`] (also by the engine's tests).
//! - [`fuzzing`]: the entry point of the `dsn` fuzz target, also run by
//!   `cargo test`.

pub mod arf;
pub mod classify;
pub mod dsn;
mod fields;
pub mod fuzzing;
mod original;
pub mod reply;
pub mod testing;
pub mod verp;

pub use arf::{FeedbackReport, FeedbackType};
pub use classify::{
    class_of, classify, BounceClass, Envelope, Evidence, IgnoreReason, InboundEvent,
};
pub use dsn::{Action, Dsn, RecipientStatus};
pub use original::OriginalHeaders;
pub use verp::{Verp, VerpError, VerpSetupError, VerpTarget};

#[cfg(test)]
pub(crate) mod tests;
