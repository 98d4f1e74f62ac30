//! The bodies of webhook requests: one event, `{"type", "timestamp", "id",
//! "data"}`, or a batch of them, `{"type": "batch", "timestamp", "data":
//! [EVENT, ...]}`. Written by hand from the stored payloads (already JSON), so
//! that a batch of thousands of events is not parsed and serialized again.

use std::time::{Duration, UNIX_EPOCH};

use crate::store::webhooks::OutboxEvent;

/// RFC 3339 UTC, seconds, of unix second `at`.
fn rfc3339(at: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The id of event `id` in bodies and in `webhook-id` (one event a request).
pub fn event_id(id: i64) -> String {
    format!("evt_{id}")
}

/// Appends event `e` as JSON to `out`.
pub fn push_event(out: &mut String, e: &OutboxEvent) {
    out.push_str("{\"type\":");
    // Types are ours (ASCII, no quotes), but they are written as JSON strings
    // all the same.
    out.push_str(&serde_json::Value::from(e.kind.as_str()).to_string());
    out.push_str(",\"timestamp\":\"");
    out.push_str(&rfc3339(e.at));
    out.push_str("\",\"id\":\"");
    out.push_str(&event_id(e.id));
    out.push_str("\",\"data\":");
    // Stored payloads are JSON objects written by serde_json.
    out.push_str(&e.payload);
    out.push('}');
}

/// The body of a request carrying `events`: the event itself when `batched`
/// is false (then `events` holds one), else a batch sent at `now`.
pub fn body(events: &[OutboxEvent], batched: bool, now: i64) -> String {
    let mut out =
        String::with_capacity(64 + events.iter().map(|e| e.payload.len() + 96).sum::<usize>());
    if !batched {
        if let Some(e) = events.first() {
            push_event(&mut out, e);
        }
        return out;
    }
    out.push_str("{\"type\":\"batch\",\"timestamp\":\"");
    out.push_str(&rfc3339(now));
    out.push_str("\",\"data\":[");
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_event(&mut out, e);
    }
    out.push_str("]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, kind: &str) -> OutboxEvent {
        OutboxEvent {
            id,
            at: 1_796_616_000,
            kind: kind.to_owned(),
            payload: format!("{{\"campaign\":1,\"recipient\":\"a{id}@x.test\"}}"),
        }
    }

    #[test]
    fn one_event_and_a_batch_are_json() {
        let one = body(&[event(7, "message.delivered")], false, 0);
        let v: serde_json::Value = serde_json::from_str(&one).unwrap();
        assert_eq!(v["type"], "message.delivered");
        assert_eq!(v["timestamp"], "2026-12-07T04:00:00Z");
        assert_eq!(v["id"], "evt_7");
        assert_eq!(v["data"]["recipient"], "a7@x.test");

        let many = body(
            &[event(7, "message.delivered"), event(9, "message.bounced")],
            true,
            1_796_616_001,
        );
        let v: serde_json::Value = serde_json::from_str(&many).unwrap();
        assert_eq!(v["type"], "batch");
        assert_eq!(v["timestamp"], "2026-12-07T04:00:01Z");
        assert_eq!(v["data"][1]["type"], "message.bounced");
        assert_eq!(v["data"][1]["data"]["recipient"], "a9@x.test");
        assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    }
}
