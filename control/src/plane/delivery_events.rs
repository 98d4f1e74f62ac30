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
//! An event is stored as a line of fields ([`crate::store::outcome_lines`]),
//! its JSON made when a webhook request is written: this runs once per
//! message at campaign speed.

use volley_queue::State;

use crate::store::batches::DoneBatch;
use crate::store::events::{BatchOutcomes, OutcomeEvent};
use crate::store::outcome_lines::{event_line, Fields};
use crate::webhook::kinds::Kinds;

/// One attempt's outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
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

/// The event of `a`, when `wanted` has its type.
pub fn attempt_event(a: &Attempt<'_>, wanted: Kinds) -> Option<OutcomeEvent> {
    let kind = kind_of(a.state).filter(|k| wanted.has(k))?;
    let next_attempt = if a.state == State::Deferred {
        a.next_attempt
    } else {
        0
    };
    Some(OutcomeEvent {
        index: a.index,
        kind,
        is_final: a.state.is_final(),
        at: a.at,
        data: event_line(&Fields {
            index: a.index,
            attempt: a.attempt,
            code: a.code,
            next_attempt,
            enhanced: a.enhanced,
            recipient: a.recipient,
            reply: a.reply,
        }),
    })
}

/// The final outcomes' events of batches done (delivered, bounced and
/// expired recipients; suppressed and cancelled ones have none), for the
/// types `wanted` has: written where the live ones are missing. `written`
/// says of a batch's recipient that its final event is known to be in the
/// outbox already (it is not made again; the store skips the others it has).
pub fn final_events(
    done: &[DoneBatch],
    wanted: Kinds,
    gateway: &str,
    written: &dyn Fn(&DoneBatch, u32) -> bool,
) -> Vec<BatchOutcomes> {
    if !wanted.any_delivery() {
        return Vec::new();
    }
    done.iter()
        .map(|b| BatchOutcomes {
            campaign: b.campaign,
            batch: b.batch,
            gateway: gateway.to_owned(),
            events: b
                .recipients
                .iter()
                .filter_map(|r| {
                    let index = u32::try_from(r.idx).ok()?;
                    if written(b, index) {
                        return None;
                    }
                    let state = match r.status.as_str() {
                        "delivered" => State::Delivered,
                        "bounced" => State::Bounced,
                        "expired" => State::Expired,
                        _ => return None,
                    };
                    attempt_event(
                        &Attempt {
                            index,
                            recipient: &r.email,
                            state,
                            code: u16::try_from(r.code).unwrap_or(0),
                            enhanced: &r.enhanced,
                            reply: &r.reply,
                            attempt: u32::try_from(r.attempts).unwrap_or(0),
                            next_attempt: 0,
                            at: r.at,
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
            index: 2,
            recipient: "a\"b@x.test",
            state,
            code: 250,
            enhanced: "2.0.0",
            reply: "Ok: queued as ABC",
            attempt: 1,
            next_attempt: 1_796_616_000,
            at: 1_796_615_000,
        }
    }

    /// The JSON a webhook gets for `e`, of campaign 3, batch 7, by `gw1`.
    fn json_of(e: &OutcomeEvent) -> serde_json::Value {
        let mut payload = String::new();
        crate::store::outcome_lines::push_header(&mut payload, 3, "gw1");
        payload.push_str(&format!("{}\t7\t{}\n", e.at, e.data));
        let m = crate::store::events::members(e.at, 1, &payload);
        assert_eq!(m.len(), 1);
        m[0].data.value()
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
        let data = json_of(&e);
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
        let data = json_of(&d);
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
        let none_written = |_: &DoneBatch, _: u32| false;
        let got: Vec<(&str, u32)> = final_events(&done, Kinds::all(), "local", &none_written)[0]
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
        let none = final_events(
            &done,
            Kinds::of(&["message.clicked".to_owned()]),
            "local",
            &none_written,
        );
        assert!(none.is_empty());
        // Those known to be in the outbox are not made again.
        let delivered_written = |_: &DoneBatch, i: u32| i == 0;
        let got: Vec<u32> = final_events(&done, Kinds::all(), "local", &delivered_written)[0]
            .events
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(got, [2, 4]);
    }
}
