//! The gateway protocol's messages, defined once for both sides: the control
//! plane's API (`POST /v1/leases`, `POST /v1/reports`, `GET
//! /v1/content/HASH`) and the gateway (`volley gateway`). JSON; bytes
//! (batch files, slots) in base64.
//!
//! A gateway asks for leases sized to its free capacity; each [`Lease`] carries
//! the batch's immutable bytes, its recorded slots, an epoch and an expiry. It
//! reports each held batch's slots at least every few seconds
//! ([`ReportRequest`]), which renews the lease; a report whose epoch is stale
//! is refused (`409`, the batch named in [`ReportResponse::stale`]) and the
//! gateway drops that batch. Finished batches go back with their recipients'
//! final rows ([`DoneReport`]).

use serde::{Deserialize, Serialize};
use volley_queue::holds::Rule;

use crate::store::batches::{Counts, FinalRecipient};
use crate::suppress::Change;

/// `POST /v1/leases`: a gateway asks for work.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The gateway's name.
    pub gateway: String,
    /// Batches it can take now (its free capacity); 0 asks only for orders.
    pub want: u32,
    /// How long the control plane may hold the request when nothing is due
    /// (long poll), in milliseconds; at most 30,000.
    #[serde(default)]
    pub wait_ms: u64,
    /// Its delivery figures per site since its last request or report.
    #[serde(default)]
    pub figures: Vec<SiteFigures>,
    /// The last suppression change it applied (the answer carries those
    /// after it).
    #[serde(default)]
    pub suppressions_after: i64,
}

/// The answer to a [`LeaseRequest`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaseResponse {
    /// The batches leased now.
    pub leases: Vec<Lease>,
    /// What to do with each campaign of the leases (and of held batches).
    pub campaigns: Vec<CampaignOrder>,
    /// What the gateway follows, as in every answer.
    #[serde(flatten)]
    pub fleet: FleetState,
}

/// What every answer to a gateway carries (lease and report alike): the
/// fleet's state as the gateway must follow it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetState {
    /// How long a lease lasts without a report, in seconds.
    pub ttl_secs: u64,
    /// The delivery event types webhooks want (`message.delivered`, …): the
    /// gateway reports the attempts of these types ([`BatchReport::attempts`]).
    #[serde(default)]
    pub events: Vec<String>,
    /// The fleet's suppression changes after the request's
    /// `suppressions_after`, in order: apply them before sending more.
    #[serde(default)]
    pub suppressions: Vec<SuppressionUpdate>,
    /// How many live gateways share each site's limits: a gateway sends to a
    /// site within its configured limits divided by this.
    #[serde(default)]
    pub limit_share: u32,
    /// The fleet's holds, all of them: no new transaction to what they cover.
    #[serde(default, with = "rules")]
    pub holds: Vec<Rule>,
    /// The purges ordered lately: carry each out on the batches held or
    /// leased (of its campaigns), as soon as they are.
    #[serde(default)]
    pub purges: Vec<Purge>,
}

/// One change of the fleet's suppression list, with its place in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionUpdate {
    /// Its row in the log.
    pub id: i64,
    /// The change.
    #[serde(flatten)]
    pub change: Change,
}

/// One batch leased to a gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Lease {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Its destination site.
    pub site: String,
    /// The lease's epoch: every report on the batch names it.
    pub epoch: i64,
    /// Unix second the lease ends unless a report renews it.
    pub expires: i64,
    /// The hash (hex) of the batch's content (`GET /v1/content/HASH`).
    pub content_hash: String,
    /// The batch file as partitioned, base64.
    pub file: String,
    /// The recipients' slots as last reported (8 bytes each, little-endian),
    /// base64; absent: as in the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<String>,
}

/// What a gateway does with a campaign's batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Deliver.
    Send,
    /// Start nothing new (suspended, scheduled, or not known here).
    Hold,
    /// Finalise the unsent recipients with `mark` and finish the batch
    /// (cancelled, or past its `stop_at`).
    Finalize,
}

/// An order about one campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignOrder {
    /// Campaign id.
    pub campaign: i64,
    /// What to do.
    pub action: Action,
    /// With [`Action::Finalize`]: the slot mark ([`volley_queue::slot::mark`]).
    #[serde(default)]
    pub mark: u64,
}

/// A gateway's delivery figures for one batch site (its first domain) over
/// an interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteFigures {
    /// The site (a batch's first domain).
    pub site: String,
    /// Recipients delivered.
    pub delivered: u64,
    /// Recipients deferred or bounced.
    pub failed: u64,
    /// Seconds the interval lasted.
    pub seconds: f64,
    /// Transactions to the site that got a reply in the interval.
    #[serde(default)]
    pub transactions: u64,
    /// Seconds those transactions took (each from its start, or the reply
    /// before it on its connection if later, to its reply: not the wait
    /// behind others pipelined) plus the seconds spent opening connections.
    #[serde(default)]
    pub busy_seconds: f64,
    /// Where the gateway sends the domain's mail (its MX hosts, or a
    /// route): the site its figures are learned for, shared by every domain
    /// with the same; empty when not resolved.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mx: String,
}

/// `POST /v1/reports`: a gateway's progress on the batches it holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The gateway's name.
    pub gateway: String,
    /// Held batches whose slots changed (or that need renewing).
    #[serde(default)]
    pub batches: Vec<BatchReport>,
    /// Batches whose recipients are all final.
    #[serde(default)]
    pub done: Vec<DoneReport>,
    /// Recipients delivered since the last report.
    #[serde(default)]
    pub delivered: i64,
    /// Delivery figures per site since the last report.
    #[serde(default)]
    pub figures: Vec<SiteFigures>,
    /// The suppressions its listener added or lifted since its last report
    /// (bounces, complaints, unsubscribe requests): for the whole fleet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<Change>,
    /// As [`LeaseRequest::suppressions_after`].
    #[serde(default)]
    pub suppressions_after: i64,
}

/// One held batch's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchReport {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// The epoch of the gateway's lease.
    pub epoch: i64,
    /// Every recipient's slot (8 bytes each, little-endian), base64; empty
    /// when none changed since the gateway's last accepted report (the lease
    /// is only renewed, in one statement for all such batches).
    pub slots: String,
    /// Recipients by state per destination domain.
    pub domains: Vec<(String, Counts)>,
    /// The batch's site, as its lease named it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub site: String,
    /// The attempts made since the last accepted report, in order, of the
    /// types the control plane asked for (its webhooks' delivery events).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptReport>,
}

/// One attempt's outcome for one recipient of a held batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptReport {
    /// Index in the batch.
    pub index: u32,
    /// The address.
    pub recipient: String,
    /// `delivered`, `deferred`, `bounced` or `expired`.
    pub state: String,
    /// SMTP reply code (0: none).
    pub code: u16,
    /// The attempt's number (1: the first).
    pub attempt: u32,
    /// For a deferral, the unix second of the next attempt.
    #[serde(default)]
    pub next_attempt: u64,
    /// Unix second of the answer.
    pub at: i64,
    /// Enhanced status code, or "".
    #[serde(default)]
    pub enhanced: String,
    /// Reply text or local reason.
    #[serde(default)]
    pub reply: String,
}

/// A finished batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneReport {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// The epoch of the gateway's lease.
    pub epoch: i64,
    /// Final counts per domain.
    pub domains: Vec<(String, Counts)>,
    /// Every recipient's final row.
    pub recipients: Vec<FinalRecipient>,
}

/// A batch named in an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchKey {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
}

/// The answer to a [`ReportRequest`]: `200` when every batch was still the
/// gateway's, else `409` with the stale ones (the others are recorded).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReportResponse {
    /// Batches no longer the gateway's (leased to another, or done): drop
    /// them, send nothing more from them.
    pub stale: Vec<BatchKey>,
    /// Held batches of sites another live gateway delivers to much faster:
    /// start no more transactions of them and, once none is in flight,
    /// report their slots and release them (`POST /v1/releases`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub give_back: Vec<BatchKey>,
    /// Orders for the campaigns of the reported batches.
    pub campaigns: Vec<CampaignOrder>,
    /// What the gateway follows, as in every answer.
    #[serde(flatten)]
    pub fleet: FleetState,
}

/// A gateway as `GET /v1/gateways` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayView {
    /// Its name.
    pub name: String,
    /// `live` (reported within the lease time) or `lost`.
    pub state: String,
    /// Leases it holds now.
    pub leases: i64,
    /// Recipients it delivered.
    pub delivered: i64,
    /// Unix second of its last contact.
    pub last_contact: i64,
    /// Its learned delivery figures per site.
    pub sites: Vec<SiteEstimate>,
}

/// What the control plane learned of one gateway's delivery to one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteEstimate {
    /// The site.
    pub site: String,
    /// Recipients delivered per second (a moving average).
    pub rate: f64,
    /// Share of attempts deferred or bounced (a moving average).
    pub failure_rate: f64,
    /// Recipients its figures cover.
    pub samples: u64,
    /// Seconds a transaction takes, connecting included (a moving average;
    /// 0 while unknown): what the assignment compares, as it does not
    /// depend on how much work the gateway was given.
    #[serde(default)]
    pub transaction_seconds: f64,
    /// Transactions its `transaction_seconds` covers.
    #[serde(default)]
    pub transactions: u64,
    /// Unix second of the last figures that covered any attempt.
    #[serde(default)]
    pub updated: i64,
}

/// Base64 (standard, padded) of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

/// Bytes of base64 `text`, or why not.
pub fn decode(text: &str) -> Result<Vec<u8>, String> {
    data_encoding::BASE64
        .decode(text.as_bytes())
        .map_err(|e| format!("bad base64: {e}"))
}

/// Holds on the wire: `[{"kind": "domain", "value": "example.com"}, …]`;
/// one this binary cannot read is left out.
mod rules {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use volley_queue::holds::Rule;

    #[derive(Serialize, Deserialize)]
    struct Wire {
        kind: String,
        value: String,
    }

    pub fn serialize<S: Serializer>(rules: &[Rule], s: S) -> Result<S::Ok, S::Error> {
        rules
            .iter()
            .map(|r| Wire {
                kind: r.kind().to_owned(),
                value: r.value(),
            })
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Rule>, D::Error> {
        Ok(Vec::<Wire>::deserialize(d)?
            .into_iter()
            .filter_map(|w| Rule::parse(&w.kind, &w.value).ok())
            .collect())
    }
}

/// A purge ordered on a control plane, for the gateways to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// Its number.
    pub id: i64,
    /// `campaign`, `domain` or `site`.
    pub kind: String,
    /// The campaign id, domain or site.
    pub value: String,
    /// The highest campaign id it covers.
    pub upto: i64,
}

impl Purge {
    /// Its rule (`None`: one this binary cannot read).
    pub fn rule(&self) -> Option<Rule> {
        Rule::parse(&self.kind, &self.value).ok()
    }
}
