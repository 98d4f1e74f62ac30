//! volley's batched, memory-mapped queue.
//!
//! One batch file holds ~100 recipients (configurable): their addresses, their merge
//! values and an 8-byte state slot each. Files are written once (temporary name,
//! fsync, link into place, directory fsync) and then only their slots change, in
//! place, through a shared mapping with atomic stores. A million recipients take
//! ~10,000 files instead of a million.
//!
//! This crate does not talk SMTP, render messages or decide retries: it stores and
//! recalls who is to get what and where each recipient stands.
//!
//! # Layout
//! - [`format`](mod@format): the file format v1 (FORMAT.md), header, validation, [`BatchView`].
//! - [`slot`]: the 8-byte state slot, [`Slot`] and [`State`].
//! - [`builder`]: [`BatchBuilder`], the bytes of a new batch.
//! - [`mapped`]: [`MappedBatch`], a live batch with in-place slot updates (the only
//!   `unsafe` code in volley).
//! - [`relay`]: relay batches (format v2): received messages appended to shared
//!   files in group commits, sealed, and recovered after a crash.
//! - [`spool`]: the [`Spool`] directory, grouped durable writes, the recovery scan,
//!   quarantine.
//! - [`summary`]: counts by state, per batch and per domain.
//! - [`holds`]: the operator's holds on the queue (by campaign, domain or site).
//! - [`ids`]: campaign ids of campaigns and of received messages.
//! - [`link`]: signed tokens of the web links in campaign messages (unsubscribe,
//!   clicks, opens): one recipient of one batch, checked by the web endpoints.
//! - [`fuzzing`]: entry points for the fuzz targets and their stable-Rust harness.

pub mod builder;
pub mod error;
pub mod format;
pub mod fuzzing;
pub mod holds;
pub mod ids;
pub mod link;
pub mod mapped;
pub mod relay;
pub mod slot;
pub mod spool;
pub mod summary;
mod varint;

pub use builder::{BatchBuilder, BatchMeta, BuildError};
pub use error::QueueError;
pub use format::{BatchIndex, BatchView, FormatError, Header, Recipient, Region, RelayedMessage};
pub use mapped::MappedBatch;
pub use slot::{Slot, SlotError, State};
pub use spool::{BatchStatus, Quarantined, Recovery, Spool};
pub use summary::{DomainSummary, StateCounts};
