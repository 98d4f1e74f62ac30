//! The outbox events of delivery outcomes (`message.delivered`, `deferred`,
//! `bounced`, `expired`), written only when some webhook wants their type.
//!
//! Written live, from each attempt's reply as delivery records it (with the
//! reply text), and a final outcome again from the final rows when its batch
//! completes, so that one recorded in a slot but not yet in the outbox when
//! the process was killed is not lost; the store writes each recipient's
//! final outcome once ([`crate::store::events`]). Deferrals are written live
//! only.
//!
//! The payload is written by hand (this runs once per message at campaign
//! speed; a `serde_json::Value` per event cost more than the store's write).

use std::io::Write;

use volley_queue::State;

use crate::store::batches::DoneBatch;
use crate::store::events::{BatchOutcomes, OutcomeEvent};
use crate::webhook::kinds::Kinds;

/// One attempt's outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Index in the batch.
    pub index: u32,
    /// The address.
    pub recipient: &'a str,
    /// The state the attempt left it in.
    pub state: State,
    /// SMTP reply code (0: none).
    pub code: u16,
    /// Enhanced status code, or "".
    pub enhanced: &'a str,
    /// Reply text or local reason.
    pub reply: &'a str,
    /// The attempt's number (1: the first).
    pub attempt: u32,
    /// For a deferral, the unix second of the next attempt (0: none).
    pub next_attempt: u64,
    /// Unix second of the answer.
    pub at: i64,
    /// The gateway that made it.
    pub gateway: &'a str,
}

/// The event type of an outcome, if it has one.
fn kind_of(state: State) -> Option<&'static str> {
    match state {
        State::Delivered => Some("message.delivered"),
        State::Deferred => Some("message.deferred"),
        State::Bounced => Some("message.bounced"),
        State::Expired => Some("message.expired"),
        State::Pending | State::InFlight => None,
    }
}

/// Appends `text` as a JSON string.
fn string(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// The event of `a`, when `wanted` has its type.
pub fn attempt_event(a: &Attempt<'_>, wanted: Kinds) -> Option<OutcomeEvent> {
    let kind = kind_of(a.state).filter(|k| wanted.has(k))?;
    let mut out = Vec::with_capacity(160 + a.reply.len() + a.recipient.len());
    let _ = write!(
        out,
        "{{\"campaign\":{},\"batch\":{},\"index\":{},\"recipient\":",
        a.campaign, a.batch, a.index
    );
    string(&mut out, a.recipient);
    let _ = write!(out, ",\"code\":{},\"enhanced\":", a.code);
    string(&mut out, a.enhanced);
    out.extend_from_slice(b",\"reply\":");
    string(&mut out, a.reply);
    let _ = write!(out, ",\"attempt\":{},\"gateway\":", a.attempt);
    string(&mut out, a.gateway);
    if a.state == State::Deferred && a.next_attempt > 0 {
        out.extend_from_slice(b",\"next_attempt\":");
        string(
            &mut out,
            &crate::plane::view::rfc3339(a.next_attempt as i64),
        );
    }
    out.push(b'}');
    Some(OutcomeEvent {
        index: a.index,
        kind,
        is_final: a.state.is_final(),
        at: a.at,
        // serde_json writes UTF-8, and so does write! of numbers.
        data: String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    })
}

/// The final outcomes' events of batches done (delivered, bounced and
/// expired recipients; suppressed and cancelled ones have none), for the
/// types `wanted` has: written where the live ones are missing.
pub fn final_events(done: &[DoneBatch], wanted: Kinds, gateway: &str) -> Vec<BatchOutcomes> {
    if !wanted.any_delivery() {
        return Vec::new();
    }
    done.iter()
        .map(|b| BatchOutcomes {
            campaign: b.campaign,
            batch: b.batch,
            events: b
                .recipients
                .iter()
                .filter_map(|r| {
                    let state = match r.status.as_str() {
                        "delivered" => State::Delivered,
                        "bounced" => State::Bounced,
                        "expired" => State::Expired,
                        _ => return None,
                    };
                    attempt_event(
                        &Attempt {
                            campaign: b.campaign,
                            batch: b.batch,
                            index: u32::try_from(r.idx).ok()?,
                            recipient: &r.email,
                            state,
                            code: u16::try_from(r.code).unwrap_or(0),
                            enhanced: &r.enhanced,
                            reply: &r.reply,
                            attempt: u32::try_from(r.attempts).unwrap_or(0),
                            next_attempt: 0,
                            at: r.at,
                            gateway,
                        },
                        wanted,
                    )
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::batches::FinalRecipient;

    fn attempt(state: State) -> Attempt<'static> {
        Attempt {
            campaign: 3,
            batch: 7,
            index: 2,
            recipient: "a\"b@x.test",
            state,
            code: 250,
            enhanced: "2.0.0",
            reply: "Ok: queued as ABC",
            attempt: 1,
            next_attempt: 1_796_616_000,
            at: 1_796_615_000,
            gateway: "gw1",
        }
    }

    #[test]
    fn events_of_attempts() {
        let all = Kinds::all();
        let e = attempt_event(&attempt(State::Delivered), all).unwrap();
        assert_eq!(
            (e.kind, e.is_final, e.index),
            ("message.delivered", true, 2)
        );
        assert!(!e.data.contains('\n'));
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["recipient"], "a\"b@x.test");
        assert_eq!(
            (
                data["campaign"].as_i64(),
                data["batch"].as_i64(),
                data["index"].as_i64()
            ),
            (Some(3), Some(7), Some(2))
        );
        assert_eq!(data["reply"], "Ok: queued as ABC");
        assert_eq!(data["code"], 250);
        assert_eq!(data["gateway"], "gw1");
        assert!(data.get("next_attempt").is_none());

        let d = attempt_event(&attempt(State::Deferred), all).unwrap();
        assert_eq!((d.kind, d.is_final), ("message.deferred", false));
        let data: serde_json::Value = serde_json::from_str(&d.data).unwrap();
        assert_eq!(data["next_attempt"], "2026-12-07T04:00:00Z");

        let only_bounces = Kinds::of(&["message.bounced".to_owned()]);
        assert!(attempt_event(&attempt(State::Delivered), only_bounces).is_none());
        assert!(attempt_event(&attempt(State::Bounced), only_bounces).is_some());
        assert!(attempt_event(&attempt(State::Pending), all).is_none());
    }

    #[test]
    fn final_events_skip_suppressed_and_cancelled() {
        let row = |idx: i64, status: &str| FinalRecipient {
            idx,
            email: format!("r{idx}@x.test"),
            status: status.to_owned(),
            attempts: 1,
            code: 250,
            enhanced: String::new(),
            reply: String::new(),
            at: 5,
        };
        let done = [DoneBatch {
            campaign: 1,
            batch: 2,
            domains: Vec::new(),
            recipients: vec![
                row(0, "delivered"),
                row(1, "suppressed"),
                row(2, "bounced"),
                row(3, "cancelled"),
                row(4, "expired"),
            ],
        }];
        let got: Vec<(&str, u32)> = final_events(&done, Kinds::all(), "local")[0]
            .events
            .iter()
            .map(|e| (e.kind, e.index))
            .collect();
        assert_eq!(
            got,
            [
                ("message.delivered", 0),
                ("message.bounced", 2),
                ("message.expired", 4),
            ]
        );
        let none = final_events(&done, Kinds::of(&["message.clicked".to_owned()]), "local");
        assert!(none.is_empty());
    }
}
