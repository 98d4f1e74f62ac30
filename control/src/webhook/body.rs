//! What one webhook request carries: the events from the webhook's place in
//! the outbox ([`take`], [`between`]: pure, over the rows read), and the body,
//! one event, `{"type", "timestamp", "id", "data"}`, or a batch of them,
//! `{"type": "batch", "timestamp", "data": [EVENT, ...]}`. Written by hand from
//! the stored payloads (already JSON), so that a batch of thousands of events
//! is not parsed and serialized again.

use crate::store::events::{event_id, members, Data};
use crate::store::rfc3339;
use crate::store::webhooks::{OutboxRow, Pos};

/// One event of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    /// Its row.
    pub row: i64,
    /// Events in its row.
    pub n: i64,
    /// Its place in its row.
    pub part: usize,
    /// Unix second it happened.
    pub at: i64,
    /// Its type.
    pub kind: &'a str,
    /// Its data.
    pub data: Data<'a>,
}

/// The events of `rows` (those a webhook wants, in id order) from `from` on,
/// in order, while `keep` says so for the place of each.
fn walk<'a>(
    rows: &'a [OutboxRow],
    from: Pos,
    mut keep: impl FnMut(Pos, usize) -> bool,
) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for row in rows.iter().filter(|r| r.id >= from.row) {
        for m in members(row.at, row.n, &row.payload) {
            let here = Pos {
                row: row.id,
                part: m.part as i64,
            };
            if here < from {
                continue;
            }
            if !keep(here, out.len()) {
                return out;
            }
            out.push(Item {
                row: row.id,
                n: row.n,
                part: m.part,
                at: m.at,
                kind: &row.kind,
                data: m.data,
            });
        }
    }
    out
}

/// A new request: at most `limit` events of `rows` from `from` on, and where
/// it ends. `exhausted`: the rows read are every row the webhook wants up to
/// that id (the request then ends past it, skipping what it does not want).
pub fn take(
    rows: &[OutboxRow],
    from: Pos,
    limit: usize,
    exhausted: Option<i64>,
) -> (Vec<Item<'_>>, Pos) {
    let mut end = None;
    let items = walk(rows, from, |here, taken| {
        if taken < limit {
            return true;
        }
        end = Some(here);
        false
    });
    let end = end.unwrap_or_else(|| {
        let past = match exhausted {
            Some(last) => last,
            None => rows.last().map_or(from.row - 1, |r| r.id),
        };
        Pos {
            row: past + 1,
            part: 0,
        }
        .max(from)
    });
    (items, end)
}

/// The events of the request from `from` up to `end` (exclusive) over `rows`.
pub fn between(rows: &[OutboxRow], from: Pos, end: Pos) -> Vec<Item<'_>> {
    walk(rows, from, |here, _| here < end)
}

impl Item<'_> {
    /// Its id (`evt_ROW` or `evt_ROW.PART`), the same in every request.
    pub fn id(&self) -> String {
        event_id(self.row, self.n, self.part)
    }
}

/// The body of a request carrying `items`: the event itself when `batched`
/// is false (then `items` holds one), else a batch, whose timestamp is its
/// newest event's (so that a retry is the same bytes).
pub fn body(items: &[Item<'_>], batched: bool) -> String {
    let mut out = String::with_capacity(
        64 + items
            .iter()
            .map(|e| e.data.json_len_hint() + 96)
            .sum::<usize>(),
    );
    // Consecutive events mostly share their second: formatted once.
    let mut time = Times::default();
    if !batched {
        if let Some(e) = items.first() {
            push_event(&mut out, e, &mut time);
        }
        return out;
    }
    out.push_str("{\"type\":\"batch\",\"timestamp\":\"");
    let newest = items.iter().map(|e| e.at).max().unwrap_or(0);
    out.push_str(time.of(newest));
    out.push_str("\",\"data\":[");
    for (i, e) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_event(&mut out, e, &mut time);
    }
    out.push_str("]}");
    out
}

/// The last time formatted.
#[derive(Default)]
struct Times {
    at: Option<i64>,
    text: String,
}

impl Times {
    fn of(&mut self, at: i64) -> &str {
        if self.at != Some(at) {
            self.at = Some(at);
            self.text = rfc3339(at);
        }
        &self.text
    }
}

/// Appends event `e` as JSON to `out`.
fn push_event(out: &mut String, e: &Item<'_>, time: &mut Times) {
    use std::fmt::Write;
    out.push_str("{\"type\":");
    if e.kind
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    {
        // Our types: nothing to escape.
        out.push('"');
        out.push_str(e.kind);
        out.push('"');
    } else {
        out.push_str(&serde_json::Value::from(e.kind).to_string());
    }
    out.push_str(",\"timestamp\":\"");
    out.push_str(time.of(e.at));
    out.push_str("\",\"id\":\"evt_");
    let _ = write!(out, "{}", e.row);
    if e.n > 1 {
        let _ = write!(out, ".{}", e.part);
    }
    out.push_str("\",\"data\":");
    // Stored JSON objects are one line each (serde_json's); outcome lines
    // are written as JSON here.
    e.data.write_json(out);
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(id: i64, kind: &str) -> OutboxRow {
        OutboxRow {
            id,
            at: 1_796_616_000,
            kind: kind.to_owned(),
            n: 1,
            payload: format!("{{\"r\":\"a{id}\"}}"),
        }
    }

    fn group(id: i64, n: usize) -> OutboxRow {
        OutboxRow {
            id,
            at: 1_796_616_000,
            kind: "message.delivered".to_owned(),
            n: n as i64,
            payload: (0..n)
                .map(|i| format!("1796616000\t{{\"r\":\"g{id}.{i}\"}}\n"))
                .collect(),
        }
    }

    fn ids(items: &[Item<'_>]) -> Vec<String> {
        items.iter().map(Item::id).collect()
    }

    #[test]
    fn requests_take_up_to_the_limit_and_split_groups() {
        let p = |row, part| Pos { row, part };
        let rows = [
            single(3, "campaign.completed"),
            group(5, 3),
            single(8, "message.bounced"),
        ];
        // Everything fits.
        let (items, end) = take(&rows, p(1, 0), 10, Some(9));
        assert_eq!(
            ids(&items),
            ["evt_3", "evt_5.0", "evt_5.1", "evt_5.2", "evt_8"]
        );
        assert_eq!(end, p(10, 0));
        // A group split across two requests.
        let (items, end) = take(&rows, p(1, 0), 2, None);
        assert_eq!(
            (ids(&items), end),
            (vec!["evt_3".into(), "evt_5.0".into()], p(5, 1))
        );
        let (items, end) = take(&rows, end, 2, None);
        assert_eq!(
            (ids(&items), end),
            (vec!["evt_5.1".into(), "evt_5.2".into()], p(8, 0))
        );
        let (items, end) = take(&rows, end, 2, None);
        assert_eq!((ids(&items), end), (vec!["evt_8".into()], p(9, 0)));
        // The same request read again: the same events.
        assert_eq!(
            ids(&between(&rows, p(5, 1), p(8, 0))),
            ["evt_5.1", "evt_5.2"]
        );
        assert_eq!(ids(&between(&rows, p(1, 0), p(5, 1))), ["evt_3", "evt_5.0"]);
        // Nothing wanted up to row 20: past it.
        let (items, end) = take(&[], p(9, 0), 5, Some(20));
        assert_eq!((items.len(), end), (0, p(21, 0)));
    }

    #[test]
    fn one_event_and_a_batch_are_json() {
        let rows = [single(7, "message.delivered"), group(9, 2)];
        let items = between(&rows, Pos { row: 0, part: 0 }, Pos { row: 99, part: 0 });
        let one = body(&items[..1], false);
        let v: serde_json::Value = serde_json::from_str(&one).unwrap();
        assert_eq!(v["type"], "message.delivered");
        assert_eq!(v["timestamp"], "2026-12-07T04:00:00Z");
        assert_eq!(v["id"], "evt_7");
        assert_eq!(v["data"]["r"], "a7");

        let many = body(&items, true);
        let v: serde_json::Value = serde_json::from_str(&many).unwrap();
        assert_eq!(v["type"], "batch");
        assert_eq!(v["timestamp"], "2026-12-07T04:00:00Z");
        assert_eq!(v["data"][2]["id"], "evt_9.1");
        assert_eq!(v["data"][2]["data"]["r"], "g9.1");
        assert_eq!(v["data"].as_array().map(Vec::len), Some(3));
    }
}
