//! volley's control plane: campaigns, partitioning into batches, the gateway
//! registry and leases, events; and the suppression list.
//!
//! It never links the SMTP code: it turns a recipient list into batch files in a
//! spool, and gateways deliver them (in-process on one node, over HTTP in a fleet).
//!
//! # Layout
//! - [`address`]: which recipient addresses are refused before queueing.
//! - [`recipients`]: reading a CSV recipient list, rejected rows with line numbers.
//! - [`partition`]: sorting by destination and cutting batch files.
//! - [`api`]: the HTTP API (axum) over the plane.
//! - [`bounded`]: the HTTP listeners' bounds (connections at once, idle time).
//! - [`campaign`]: what a partitioning keeps in the spool beside its batches.
//! - [`dashboard`]: the operator's web pages at `/` (sessions, CSRF, assets).
//! - [`fleet`]: the lease service gateways of a fleet ask for work, and the
//!   gateway protocol's messages.
//! - [`metrics`]: `/metrics` in the Prometheus text format.
//! - [`queue_ops`]: holds and purges of the queue, as the API asks for them.
//! - [`plane`]: the control plane's operations (submit, suspend, resume,
//!   cancel, the scheduler, what delivery may send).
//! - [`store`]: the store (SQLite or PostgreSQL): campaigns, batch rows,
//!   progress, final recipients, tokens, the event outbox.
//! - [`targeting`]: which members of a list a campaign goes to (`where`).
//! - [`suppress`]: the suppression list in the spool, bounce counting, imports.
//! - [`web`]: the public endpoints links in messages point at (`[web]`):
//!   one-click unsubscribe, tracked clicks and opens.
//! - [`webhook`]: the outbox pushed to webhooks, signed per Standard Webhooks.

pub mod address;
pub mod api;
pub mod bounded;
pub mod campaign;
pub mod dashboard;
pub mod fleet;
pub mod metrics;
pub mod partition;
pub mod plane;
pub mod queue_ops;
pub mod recipients;
pub mod store;
pub mod suppress;
pub mod targeting;
pub mod web;
pub mod webhook;
