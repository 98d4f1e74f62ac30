//! volley's control plane: campaigns, partitioning into batches, and (later) the
//! gateway registry, leases, events and suppressions.
//!
//! It never links the SMTP code: it turns a recipient list into batch files in a
//! spool, and gateways deliver them (in-process on one node, over HTTP in a fleet).
//!
//! # Layout
//! - [`address`]: which recipient addresses are refused before queueing.
//! - [`recipients`]: reading a CSV recipient list, rejected rows with line numbers.
//! - [`partition`]: sorting by destination and cutting batch files.
//! - [`campaign`]: campaign records in the spool, for crash-safe submission.

pub mod address;
pub mod campaign;
pub mod partition;
pub mod recipients;
