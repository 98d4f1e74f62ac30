//! The event outbox: every event a sender's application may want pushed to it
//! (`campaign.completed`, engagements, and the delivery events webhooks ask
//! for) is a row here first, written in the same transaction as the change it
//! reports where there is one; webhooks deliver from it in id order
//! ([`super::webhooks`]).
//!
//! A row holds one event (its payload a JSON object), or, for delivery
//! outcomes, the events of one type of one batch recorded at one group commit
//! (in the form of [`super::outcome_lines`]: a header line, then a line of
//! fields per event): at 20,000 deliveries a second, a row per event would
//! cost the store more than the delivery itself. [`members`] reads every
//! form, including the older one of such rows (`n` > 1, one `AT<TAB>JSON`
//! line per event).
//!
//! A recipient's final outcome (delivered, bounced, expired) is written once:
//! live, when delivery records it, or else when its batch completes (after a
//! crash between the two). Which recipients of a live batch have theirs in the
//! outbox is a bitmap per batch (`outcome_events`), updated in the same
//! transaction as the events and dropped when the batch completes.
//!
//! Ids are handed out in commit order: on PostgreSQL every transaction that
//! adds events first takes one advisory lock (held to its commit), so a
//! reader that sees row N has seen every row before N that will ever exist;
//! SQLite has one writer at a time anyway. A webhook can then keep a single
//! place in the outbox without skipping a row whose transaction committed late.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::Row;

use super::batches::values;
use super::campaigns::INSERT_ROWS;
use super::outcome_lines::{self, Outcome};
use super::{now, Backend, Context, Store, StoreError};

/// The advisory lock every event-adding transaction takes on PostgreSQL.
const OUTBOX_LOCK: i64 = 7_340_032;

/// One delivery outcome of a batch's recipient, for the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeEvent {
    /// The recipient's index in its batch.
    pub index: u32,
    /// Its type (`message.delivered`, …).
    pub kind: &'static str,
    /// Whether it is the recipient's final outcome (written once).
    pub is_final: bool,
    /// Unix second it happened.
    pub at: i64,
    /// Its fields ([`outcome_lines::event_line`]).
    pub data: String,
}

/// A batch's outcome events, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcomes {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// The gateway whose delivery they report.
    pub gateway: String,
    /// Its events.
    pub events: Vec<OutcomeEvent>,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Its number, increasing.
    pub id: i64,
    /// Unix second it happened (its last event's, for a group).
    pub at: i64,
    /// What happened (`campaign.completed`, …).
    pub kind: String,
    /// The campaign it is about, if one.
    pub campaign: Option<i64>,
    /// How many events it holds.
    pub n: i64,
    /// Its payload ([`members`]).
    pub payload: String,
}

/// One event of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// Its place in the row (0 for a single event).
    pub part: usize,
    /// Unix second it happened.
    pub at: i64,
    /// Its data.
    pub data: Data<'a>,
}

/// An event's data (the webhook body's `data`), as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data<'a> {
    /// A JSON object, one line.
    Json(&'a str),
    /// A delivery outcome's fields.
    Outcome(Outcome<'a>),
}

impl Data<'_> {
    /// Appends its JSON object.
    pub fn write_json(&self, out: &mut String) {
        match self {
            Data::Json(text) => out.push_str(text),
            Data::Outcome(o) => o.write_json(out),
        }
    }

    /// About how long its JSON is (to size a buffer).
    pub fn json_len_hint(&self) -> usize {
        match self {
            Data::Json(text) => text.len(),
            Data::Outcome(o) => o.json_len_hint(),
        }
    }

    /// Its JSON object, parsed (`null` if the stored JSON is not).
    pub fn value(&self) -> serde_json::Value {
        match self {
            Data::Json(text) => serde_json::from_str(text).unwrap_or_default(),
            Data::Outcome(o) => serde_json::from_str(&o.json()).unwrap_or_default(),
        }
    }
}

/// The events of a row: each of its lines in the form of
/// [`outcome_lines`], else its payload itself when it holds one, else each
/// of its lines (`AT<TAB>JSON`). A malformed line is skipped.
pub fn members(at: i64, n: i64, payload: &str) -> Vec<Member<'_>> {
    if let Some((shared, lines)) = outcome_lines::parse(payload) {
        return outcome_lines::events(shared, lines)
            .enumerate()
            .map(|(part, (at, o))| Member {
                part,
                at,
                data: Data::Outcome(o),
            })
            .collect();
    }
    if n <= 1 {
        return vec![Member {
            part: 0,
            at,
            data: Data::Json(payload),
        }];
    }
    payload
        .lines()
        .filter_map(|line| {
            let (t, data) = line.split_once('\t')?;
            Some((t.parse().ok()?, data))
        })
        .enumerate()
        .map(|(part, (at, data))| Member {
            part,
            at,
            data: Data::Json(data),
        })
        .collect()
}

/// The id of event `part` of row `id` holding `n` events: `evt_ID`, or
/// `evt_ID.PART` in a group.
pub fn event_id(id: i64, n: i64, part: usize) -> String {
    if n <= 1 {
        format!("evt_{id}")
    } else {
        format!("evt_{id}.{part}")
    }
}

/// Sets bit `index` of a bitmap (one bit per recipient of a batch), growing it.
pub fn set_bit(bits: &mut Vec<u8>, index: u32) {
    let (byte, bit) = (index as usize / 8, 1u8 << (index % 8));
    if bits.len() <= byte {
        bits.resize(byte + 1, 0);
    }
    bits[byte] |= bit;
}

/// Whether bit `index` of a bitmap is set.
pub fn has_bit(bits: &[u8], index: u32) -> bool {
    let (byte, bit) = (index as usize / 8, 1u8 << (index % 8));
    bits.get(byte).is_some_and(|b| b & bit != 0)
}

/// A row to insert.
struct NewRow<'a> {
    at: i64,
    kind: &'a str,
    campaign: i64,
    n: i64,
    payload: String,
}

/// Events in one row at most: a webhook request of up to 1,000 events reads
/// a few rows whole, not one row of a whole commit.
const ROW_EVENTS: usize = 500;

/// The rows of the events kept of one commit (each with its batch, in the
/// order they came): one row per campaign, gateway and type, up to
/// [`ROW_EVENTS`] each, in the form of [`outcome_lines`]; a campaign's
/// deferrals before its final outcomes (a recipient's deferrals come before
/// its final outcome). At campaign speed a commit holds a few events of each
/// of thousands of live batches: a row per batch cost the store a row's
/// write, index entries and read for every few events.
fn rows_of<'a>(events: &[(&'a BatchOutcomes, &'a OutcomeEvent)]) -> Vec<NewRow<'a>> {
    let mut groups: Vec<(i64, &str, &str, bool)> = Vec::new();
    for (b, e) in events {
        let key = (b.campaign, b.gateway.as_str(), e.kind, e.is_final);
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    // Stable: campaigns and types keep their first order otherwise.
    groups.sort_by_key(|(_, _, _, is_final)| *is_final);
    let mut rows = Vec::new();
    for (campaign, gateway, kind, is_final) in groups {
        let of: Vec<&(&BatchOutcomes, &OutcomeEvent)> = events
            .iter()
            .filter(|(b, e)| {
                (b.campaign, b.gateway.as_str(), e.kind, e.is_final)
                    == (campaign, gateway, kind, is_final)
            })
            .collect();
        for part in of.chunks(ROW_EVENTS) {
            let at = part.iter().map(|(_, e)| e.at).max().unwrap_or(0);
            let mut payload = String::with_capacity(
                32 + gateway.len() + part.iter().map(|(_, e)| e.data.len() + 24).sum::<usize>(),
            );
            outcome_lines::push_header(&mut payload, campaign, gateway);
            for (b, e) in part {
                use std::fmt::Write;
                let _ = write!(payload, "{}\t{}\t", e.at, b.batch);
                payload.push_str(&e.data);
                payload.push('\n');
            }
            rows.push(NewRow {
                at,
                kind,
                campaign,
                n: part.len() as i64,
                payload,
            });
        }
    }
    rows
}

impl Store {
    /// Appends one event.
    pub async fn add_event(
        &self,
        kind: &str,
        campaign: Option<i64>,
        payload: &serde_json::Value,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write("add an event").await?;
        self.lock_outbox(&mut tx).await?;
        let id = self
            .insert_event(&mut tx, kind, campaign, &payload.to_string(), now())
            .await?;
        tx.commit().await.what("add an event")?;
        Ok(id)
    }

    /// Appends one event in `tx`, which holds the outbox's lock.
    pub(crate) async fn insert_event(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        kind: &str,
        campaign: Option<i64>,
        payload: &str,
        at: i64,
    ) -> Result<i64, StoreError> {
        sqlx::query(
            "INSERT INTO events (at, kind, campaign, payload, n) VALUES ($1, $2, $3, $4, 1) RETURNING id",
        )
        .bind(at)
        .bind(kind)
        .bind(campaign)
        .bind(payload)
        .fetch_one(&mut **tx)
        .await
        .and_then(|r| r.try_get(0))
        .what("add an event")
    }

    /// Appends batches' outcome events, in one transaction: a final outcome
    /// already in the outbox is not written again.
    pub async fn add_outcomes(&self, batches: &[BatchOutcomes]) -> Result<(), StoreError> {
        if batches.iter().all(|b| b.events.is_empty()) {
            return Ok(());
        }
        let mut tx = self.begin_write("add delivery events").await?;
        self.insert_outcomes(&mut tx, batches, &[]).await?;
        tx.commit().await.what("commit delivery events")?;
        Ok(())
    }

    /// Takes the outbox's lock for the rest of `tx` (PostgreSQL; SQLite's
    /// write transactions are one at a time already). Every transaction that
    /// adds events takes it before anything else it locks.
    pub(crate) async fn lock_outbox(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    ) -> Result<(), StoreError> {
        if self.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(OUTBOX_LOCK)
                .execute(&mut **tx)
                .await
                .what("lock the outbox")?;
        }
        Ok(())
    }

    /// The writes of [`Store::add_outcomes`], in `tx` (which it locks);
    /// the batches of `completed` are done: their bitmaps go.
    pub(crate) async fn insert_outcomes(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        batches: &[BatchOutcomes],
        completed: &[(i64, i64)],
    ) -> Result<(), StoreError> {
        let batches: Vec<&BatchOutcomes> =
            batches.iter().filter(|b| !b.events.is_empty()).collect();
        if batches.is_empty() {
            return Ok(());
        }
        self.lock_outbox(tx).await?;
        // Which final outcomes each batch has in the outbox already.
        let mut sent: HashMap<(i64, i64), Vec<u8>> = HashMap::new();
        for chunk in batches.chunks(INSERT_ROWS / 2) {
            let sql = format!(
                "SELECT campaign, batch, sent FROM outcome_events WHERE (campaign, batch) IN (VALUES {})",
                values(self.backend(), chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for b in chunk {
                query = query.bind(b.campaign).bind(b.batch);
            }
            for r in query
                .fetch_all(&mut **tx)
                .await
                .what("read written outcomes")?
            {
                let what = "read written outcomes";
                sent.insert(
                    (
                        r.try_get("campaign").what(what)?,
                        r.try_get("batch").what(what)?,
                    ),
                    r.try_get("sent").what(what)?,
                );
            }
        }
        let mut keep = Vec::new();
        let mut changed: Vec<(i64, i64)> = Vec::new();
        for b in batches.iter().copied() {
            let bits = sent.entry((b.campaign, b.batch)).or_default();
            let mut grew = false;
            for e in &b.events {
                if e.is_final {
                    if has_bit(bits, e.index) {
                        continue;
                    }
                    set_bit(bits, e.index);
                    grew = true;
                }
                keep.push((b, e));
            }
            if grew {
                changed.push((b.campaign, b.batch));
            }
        }
        let rows = rows_of(&keep);
        for chunk in rows.chunks(INSERT_ROWS / 5) {
            let sql = format!(
                "INSERT INTO events (at, kind, campaign, payload, n) VALUES {}",
                values(self.backend(), chunk.len(), 5)
            );
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.at)
                    .bind(r.kind)
                    .bind(r.campaign)
                    .bind(r.payload.as_str())
                    .bind(r.n);
            }
            query.execute(&mut **tx).await.what("add delivery events")?;
        }
        for chunk in completed.chunks(INSERT_ROWS / 2) {
            let sql = format!(
                "DELETE FROM outcome_events WHERE (campaign, batch) IN (VALUES {})",
                values(self.backend(), chunk.len(), 2)
            );
            let mut query = sqlx::query(&sql);
            for (campaign, batch) in chunk {
                query = query.bind(*campaign).bind(*batch);
            }
            query
                .execute(&mut **tx)
                .await
                .what("drop written outcomes")?;
        }
        changed.retain(|key| !completed.contains(key));
        for chunk in changed.chunks(INSERT_ROWS / 3) {
            let sql = format!(
                "INSERT INTO outcome_events (campaign, batch, sent) VALUES {} \
                 ON CONFLICT (campaign, batch) DO UPDATE SET sent = excluded.sent",
                values(self.backend(), chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for key in chunk {
                query = query
                    .bind(key.0)
                    .bind(key.1)
                    .bind(sent.get(key).cloned().unwrap_or_default());
            }
            query
                .execute(&mut **tx)
                .await
                .what("record written outcomes")?;
        }
        Ok(())
    }

    /// The newest row's id (0: none).
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM events")
            .fetch_one(self.pool())
            .await
            .and_then(|r| r.try_get(0))
            .what("read the newest event")
    }

    /// Campaign `campaign`'s latest `limit` outbox rows, newest first (the
    /// dashboard's live events).
    pub async fn campaign_events(
        &self,
        campaign: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, campaign, n, payload FROM events WHERE campaign = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(campaign)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("list a campaign's events")?;
        rows.iter().map(event_of).collect()
    }

    /// Rows after `after`, oldest first, at most `limit`.
    pub async fn events(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, kind, campaign, n, payload FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .what("list events")?;
        rows.iter().map(event_of).collect()
    }
}

fn event_of(r: &sqlx::any::AnyRow) -> Result<Event, StoreError> {
    let what = "read an event";
    Ok(Event {
        id: r.try_get("id").what(what)?,
        at: r.try_get("at").what(what)?,
        kind: r.try_get("kind").what(what)?,
        campaign: r.try_get("campaign").what(what)?,
        n: r.try_get("n").what(what)?,
        payload: r.try_get("payload").what(what)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::outcome_lines::{event_line, Fields};

    fn e(index: u32, kind: &'static str, is_final: bool, at: i64) -> OutcomeEvent {
        OutcomeEvent {
            index,
            kind,
            is_final,
            at,
            data: event_line(&Fields {
                index,
                attempt: 1,
                code: 250,
                next_attempt: 0,
                enhanced: "",
                recipient: "r@x.test",
                reply: "ok",
            }),
        }
    }

    #[test]
    fn a_commits_events_become_a_row_per_campaign_and_type_deferrals_first() {
        let events = [
            e(0, "message.delivered", true, 5),
            e(1, "message.deferred", false, 6),
            e(2, "message.delivered", true, 7),
            e(1, "message.delivered", true, 8),
        ];
        let b = |campaign: i64, batch: i64| BatchOutcomes {
            campaign,
            batch,
            gateway: "gw".to_owned(),
            events: Vec::new(),
        };
        let (b4, b5, other) = (b(3, 4), b(3, 5), b(9, 1));
        let kept = [
            (&b4, &events[0]),
            (&b4, &events[1]),
            (&other, &events[0]),
            (&b5, &events[2]),
            (&b4, &events[3]),
        ];
        let rows = rows_of(&kept);
        let got: Vec<(i64, &str, i64, i64, &str)> = rows
            .iter()
            .map(|r| (r.campaign, r.kind, r.n, r.at, r.payload.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    3,
                    "message.deferred",
                    1,
                    6,
                    "v2\t3\tgw\n6\t4\t1\t1\t250\t0\t\tr@x.test\tok\n"
                ),
                (
                    3,
                    "message.delivered",
                    3,
                    8,
                    "v2\t3\tgw\n5\t4\t0\t1\t250\t0\t\tr@x.test\tok\n\
                     7\t5\t2\t1\t250\t0\t\tr@x.test\tok\n8\t4\t1\t1\t250\t0\t\tr@x.test\tok\n"
                ),
                (
                    9,
                    "message.delivered",
                    1,
                    5,
                    "v2\t9\tgw\n5\t1\t0\t1\t250\t0\t\tr@x.test\tok\n"
                ),
            ]
        );
        // A long commit is cut into rows of ROW_EVENTS.
        let many: Vec<(&BatchOutcomes, &OutcomeEvent)> =
            (0..ROW_EVENTS * 2 + 1).map(|_| (&b4, &events[0])).collect();
        let sizes: Vec<i64> = rows_of(&many).iter().map(|r| r.n).collect();
        assert_eq!(sizes, [ROW_EVENTS as i64, ROW_EVENTS as i64, 1]);
        let index_of = |m: &Member<'_>| m.data.value()["index"].as_i64();
        let m = members(8, 3, &rows[1].payload);
        assert_eq!(
            m.iter()
                .map(|m| (m.part, m.at, index_of(m)))
                .collect::<Vec<_>>(),
            [(0, 5, Some(0)), (1, 7, Some(2)), (2, 8, Some(1))]
        );
        assert_eq!(m[0].data.value()["campaign"], 3);
        assert_eq!(m[0].data.value()["batch"], 4);
        assert_eq!(m[1].data.value()["batch"], 5);
        assert_eq!(m[0].data.value()["gateway"], "gw");
        // One event: the same form.
        let one = members(6, 1, &rows[0].payload);
        assert_eq!((one.len(), index_of(&one[0])), (1, Some(1)));
        // A single JSON event, and the older form of a group.
        assert_eq!(members(6, 1, "{\"i\":1}")[0].data, Data::Json("{\"i\":1}"));
        let old = members(8, 2, "5\t{\"i\":0}\n7\t{\"i\":2}\n");
        assert_eq!(
            old.iter()
                .map(|m| (m.part, m.at, m.data))
                .collect::<Vec<_>>(),
            [
                (0, 5, Data::Json("{\"i\":0}")),
                (1, 7, Data::Json("{\"i\":2}"))
            ]
        );
        assert_eq!(
            (event_id(9, 1, 0), event_id(9, 3, 2)),
            ("evt_9".to_owned(), "evt_9.2".to_owned())
        );
    }
}
