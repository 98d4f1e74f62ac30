//! The store's tables, as versioned migrations. Each migration is one SQL text
//! for both databases, with `{serial}` standing for an auto-numbered primary
//! key (SQLite's `INTEGER PRIMARY KEY`, PostgreSQL's `BIGSERIAL PRIMARY KEY`),
//! `{blob}` for bytes (`BLOB`, `BYTEA`) and `{reseed_events}` for what sets
//! the events' numbering past the ids a copy kept.
//! Every integer is a `BIGINT` (a signed 64-bit `i64` in both), times are unix
//! seconds, flags are 0/1: the types the Any driver reads the same way from
//! both.
//!
//! A migration, once released, never changes: a new one is appended.

/// The migrations, in order: (version, SQL statements separated by `;`).
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, V1),
    (2, V2),
    (3, V3),
    (4, V4),
    (5, V5),
    (6, V6),
    (7, V7),
    (8, V8),
    (9, V9),
    (10, V10),
];

/// The newest schema version this binary knows.
pub fn current() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Version 1: tokens, campaigns (with tags, rejected rows, idempotency), batch
/// rows with lease fields and per-domain progress, the final outcomes of a
/// done batch's recipients (one row per batch: a JSON array, written once),
/// failure reasons counted per campaign, uploads and the event outbox.
const V1: &str = r#"
CREATE TABLE tokens (
    id {serial},
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE TABLE campaigns (
    id BIGINT PRIMARY KEY,
    owner BIGINT,
    state TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    sender_domain TEXT NOT NULL,
    list_path TEXT NOT NULL,
    batch_size BIGINT NOT NULL,
    start_at BIGINT,
    stop_at BIGINT,
    notify TEXT NOT NULL,
    tags TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT,
    partitioned BIGINT NOT NULL,
    recipients BIGINT NOT NULL,
    rejected_rows BIGINT NOT NULL,
    suppressed BIGINT NOT NULL,
    batches BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT,
    summary_queued BIGINT NOT NULL,
    UNIQUE (owner, idempotency_key)
);
CREATE INDEX campaigns_state ON campaigns (state, id);
CREATE TABLE campaign_tags (
    campaign BIGINT NOT NULL,
    tag TEXT NOT NULL,
    PRIMARY KEY (campaign, tag)
);
CREATE INDEX campaign_tags_tag ON campaign_tags (tag, campaign);
CREATE TABLE rejects (
    campaign BIGINT NOT NULL,
    line BIGINT NOT NULL,
    email TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (campaign, line)
);
CREATE TABLE batches (
    campaign BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    site TEXT NOT NULL,
    recipients BIGINT NOT NULL,
    state TEXT NOT NULL,
    lease_holder TEXT,
    lease_epoch BIGINT NOT NULL,
    lease_expires BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (campaign, batch)
);
CREATE INDEX batches_state ON batches (state, campaign, batch);
CREATE TABLE progress (
    campaign BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    domain TEXT NOT NULL,
    recipients BIGINT NOT NULL,
    pending BIGINT NOT NULL,
    in_flight BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    deferred BIGINT NOT NULL,
    bounced BIGINT NOT NULL,
    expired BIGINT NOT NULL,
    suppressed BIGINT NOT NULL,
    cancelled BIGINT NOT NULL,
    PRIMARY KEY (campaign, batch, domain)
);
CREATE TABLE outcomes (
    campaign BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    recipients TEXT NOT NULL,
    PRIMARY KEY (campaign, batch)
);
CREATE TABLE failures (
    campaign BIGINT NOT NULL,
    code BIGINT NOT NULL,
    enhanced TEXT NOT NULL,
    count BIGINT NOT NULL,
    sample TEXT NOT NULL,
    PRIMARY KEY (campaign, code, enhanced)
);
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    owner BIGINT,
    path TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    campaign BIGINT
);
CREATE TABLE events (
    id {serial},
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    campaign BIGINT,
    payload TEXT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX events_unsent ON events (sent_at, id)
"#;

/// Version 2, the fleet: the immutable bytes of each batch and each content
/// item (gateways lease them from any control-plane process), a batch's
/// recorded slots (8 bytes per recipient, little-endian, as its gateway last
/// reported them; NULL: as in its file), recipients sent again after a
/// gateway was lost (per campaign), and the gateways seen.
const V2: &str = r#"
ALTER TABLE batches ADD COLUMN slots {blob};
ALTER TABLE campaigns ADD COLUMN resent_after_failure BIGINT NOT NULL DEFAULT 0;
CREATE INDEX batches_lease ON batches (lease_holder, lease_expires);
CREATE TABLE batch_files (
    campaign BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    bytes {blob} NOT NULL,
    PRIMARY KEY (campaign, batch)
);
CREATE TABLE contents (
    hash TEXT PRIMARY KEY,
    bytes {blob} NOT NULL
);
CREATE TABLE gateways (
    name TEXT PRIMARY KEY,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    figures TEXT NOT NULL
)
"#;

/// Version 3, closing the loop over the web: each campaign's tracked links
/// (link index to the template's URL, what `/c/TOKEN` redirects to), and what
/// recipients did with their message (`unsubscribed`, `clicked`, `opened`), at
/// most once per recipient, kind and link.
const V3: &str = r#"
CREATE TABLE campaign_links (
    campaign BIGINT NOT NULL,
    link BIGINT NOT NULL,
    url TEXT NOT NULL,
    PRIMARY KEY (campaign, link)
);
CREATE TABLE engagements (
    campaign BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    kind TEXT NOT NULL,
    link BIGINT NOT NULL,
    email TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (campaign, batch, idx, kind, link)
);
CREATE INDEX engagements_kind ON engagements (campaign, kind)
"#;

/// Version 4, webhooks: the endpoints events are pushed to (from the config
/// or the API), each with its place in the outbox (`next_row`, `next_part`:
/// the next event to send is event `next_part` of the first row from
/// `next_row` on that it wants), the request being tried (up to `pend_row`,
/// `pend_part`, fixed when first tried so that a retry carries the same
/// events under the same id), its retry state and its counts. Outbox rows
/// may hold a group of delivery events (`n`); which final outcomes of a live
/// batch are in the outbox is a bitmap per batch (`outcome_events`). The
/// events table is made again, its ids kept: `n` before the payload (SQLite
/// reads a row's columns in order, through a large payload's overflow pages
/// to reach one after it), without the unused `sent_at` and its index (one
/// index less per row written).
const V4: &str = r#"
CREATE TABLE events_v4 (
    id {serial},
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    campaign BIGINT,
    n BIGINT NOT NULL,
    payload TEXT NOT NULL
);
INSERT INTO events_v4 (id, at, kind, campaign, n, payload) SELECT id, at, kind, campaign, 1, payload FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;
{reseed_events};
CREATE TABLE outcome_events (
    campaign BIGINT NOT NULL,
    batch BIGINT NOT NULL,
    sent {blob} NOT NULL,
    PRIMARY KEY (campaign, batch)
);
CREATE TABLE webhooks (
    id {serial},
    owner BIGINT,
    source TEXT NOT NULL,
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    secret TEXT NOT NULL,
    batch BIGINT NOT NULL,
    retry_for BIGINT NOT NULL,
    timeout_ms BIGINT NOT NULL,
    state TEXT NOT NULL,
    next_row BIGINT NOT NULL,
    next_part BIGINT NOT NULL,
    pend_row BIGINT,
    pend_part BIGINT,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    failing_since BIGINT,
    delivered BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    last_attempt_at BIGINT,
    worker TEXT,
    worker_until BIGINT,
    created_at BIGINT NOT NULL
)
"#;

/// Version 5, lists (the design's D role): lists with the merge fields their
/// members have and what their subscribe form asks; members (an address,
/// its fields, `subscribed` or `unsubscribed`); which list a campaign was
/// sent to (an unsubscribe leaves it); and subscribe requests from the form,
/// buffered until confirmed and then applied in bulk.
const V5: &str = r#"
CREATE TABLE lists (
    id {serial},
    owner BIGINT,
    name TEXT NOT NULL,
    fields TEXT NOT NULL,
    from_address TEXT,
    form_fields TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE list_members (
    list BIGINT NOT NULL,
    email TEXT NOT NULL,
    fields TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (list, email)
);
CREATE TABLE campaign_lists (
    campaign BIGINT PRIMARY KEY,
    list BIGINT NOT NULL
);
CREATE TABLE subscribe_requests (
    id {serial},
    list BIGINT NOT NULL,
    email TEXT NOT NULL,
    fields TEXT NOT NULL,
    client TEXT NOT NULL,
    at BIGINT NOT NULL,
    state TEXT NOT NULL,
    claimed_by TEXT,
    claimed_at BIGINT,
    campaign BIGINT,
    confirmed_at BIGINT
);
CREATE INDEX subscribe_requests_state ON subscribe_requests (state, id);
CREATE INDEX subscribe_requests_client ON subscribe_requests (client, at);
CREATE INDEX subscribe_requests_email ON subscribe_requests (list, email, at)
"#;

/// Version 6, the fleet's suppression log: every entry a process added or
/// lifted, in order, for the others to apply (a change keeps its time as it
/// travels: the same change is one row).
const V6: &str = r#"
CREATE TABLE suppression_log (
    id {serial},
    at BIGINT NOT NULL,
    op TEXT NOT NULL,
    domain TEXT NOT NULL,
    address TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    origin TEXT NOT NULL,
    logged_at BIGINT NOT NULL,
    UNIQUE (op, domain, address, at)
)
"#;

/// Version 7, the fleet's queue holds (`volley queue hold` on a control
/// plane): one row per rule, sent to every gateway with its answers; the
/// purges ordered (each covers the campaigns up to `upto`); the outbox by
/// campaign (the dashboard's live events); the dashboard's sessions (by the
/// hash of their id, so any control plane serves them).
const V7: &str = r#"
CREATE TABLE holds (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE INDEX events_campaign ON events (campaign, id);
CREATE TABLE purges (
    id {serial},
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    upto BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX purges_created ON purges (created_at);
CREATE TABLE sessions (
    hash TEXT PRIMARY KEY,
    token BIGINT NOT NULL,
    csrf TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at)
"#;

/// Version 8: the batches not done, by campaign and batch (a partial index):
/// what every lease request looks for, without stepping over those done.
const V8: &str = r#"
CREATE INDEX batches_open ON batches (campaign, batch) WHERE state <> 'done'
"#;

/// Version 9: the open batches split by whether a gateway holds them. A lease
/// request reads the free ones in batch order without stepping over the
/// hundreds a busy fleet holds at the front of the queue, and the held ones
/// by expiry (those run out: usually none).
const V9: &str = r#"
CREATE INDEX batches_free ON batches (campaign, batch) WHERE state <> 'done' AND lease_holder IS NULL;
CREATE INDEX batches_held ON batches (lease_expires) WHERE state <> 'done' AND lease_holder IS NOT NULL
"#;

/// Version 10: whether the holder of a batch's lease has reported on it under
/// this lease (a claim sets 0, the holder's first report or renewal 1). A
/// lease never reported was never installed (the answer carrying it was lost
/// with the control plane that gave it): once it runs out it is offered again
/// even while its holder is heard from, which sends nothing from a batch
/// before its first report is recorded. Leases held before this version count
/// as reported.
const V10: &str = r#"
ALTER TABLE batches ADD COLUMN lease_reported BIGINT NOT NULL DEFAULT 1
"#;
