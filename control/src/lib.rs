//! volley's control plane: campaigns, partitioning into batches, the gateway registry,
//! leases, events and suppressions, over an embedded store or PostgreSQL.
//!
//! Not built yet: this crate holds the place DESIGN.md gives it. It never links the
//! SMTP code; gateways talk to it over HTTP or, on one node, through the same trait.
