//! volley's delivery engine: the SMTP client and server state machines, DNS MX
//! resolution, connection pools and per-site shaping, mail merge and DKIM.
//!
//! Not built yet: this crate holds the place DESIGN.md gives it. The delivery issue
//! fills it; until then the queue (`volley-queue`) is the only moving part.
