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
//! `unsubscribe` or `delete`); or nothing to do. [`InboundEvent::log_event`]
//! makes the delivery-log line ([`crate::log::InboundLogEvent`]).
//!
//! Everything here is sans-IO — bytes in, decisions out — except
//! [`load_or_create_key`], which reads (or creates) the VERP key file. It does
//! not receive mail (the SMTP server does), keep the suppression list, count
//! bounces against `[bounce] hard_limit` / `soft_limit`, or act on events
//! ([`crate::feedback`] does, on receipt).
//!
//! # Layout
//! - [`verp`]: the return-path format, [`Verp`] (make, decode, verify).
//! - `key`: the key file ([`load_or_create_key`], [`verp_from_config`]).
//! - [`dsn`]: RFC 3464 delivery status notifications.
//! - [`arf`]: RFC 5965 feedback reports.
//! - [`reply`]: `unsubscribe` / `delete` replies and auto-reply detection.
//! - [`classify`](mod@classify): the decision, and the bounce class table.
//! - `fields`, `original`: header-style field blocks, the returned original's
//!   identifying fields ([`OriginalHeaders`]).
//! - `fixtures/`: hand-written DSNs, reports and replies for the tests.

pub mod arf;
pub mod classify;
pub mod dsn;
mod fields;
mod key;
mod original;
pub mod reply;
pub mod verp;

pub use arf::{FeedbackReport, FeedbackType};
pub use classify::{
    class_of, classify, BounceClass, Envelope, Evidence, IgnoreReason, InboundEvent,
};
pub use dsn::{Action, Dsn, RecipientStatus};
pub use key::{load_or_create_key, verp_from_config, KeyError, MAX_KEY_LEN};
pub use original::OriginalHeaders;
pub use verp::{Verp, VerpError, VerpSetupError, VerpTarget};

#[cfg(test)]
pub(crate) mod tests;
