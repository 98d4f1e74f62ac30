//! The outbox events of delivery outcomes (`message.delivered`, `deferred`,
//! `bounced`, `expired`), written only when some webhook wants their type.
//!
//! Written twice over, once in effect: live, from each attempt's reply as
//! delivery records it (with the reply text), and again from the final rows
//! when a batch completes, so that an outcome recorded in a slot but not yet
//! in the outbox when the process was killed is not lost. A final outcome's
//! event carries a key (campaign, batch, index) that makes the second write a
//! no-op. Deferrals are written live only.

use volley_queue::State;

use crate::store::batches::DoneBatch;
use crate::store::events::NewEvent;
use crate::webhook::kinds::Kinds;

/// One attempt's outcome for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// Campaign id.
    pub campaign: i64,
    /// Batch id.
    pub batch: i64,
    /// Index in the batch.
    pub index: i64,
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

/// The once-only key of a recipient's final outcome.
fn final_key(campaign: i64, batch: i64, index: i64) -> String {
    format!("{campaign}.{batch}.{index}")
}

/// The event of `a`, when `wanted` has its type.
pub fn attempt_event(a: &Attempt<'_>, wanted: Kinds) -> Option<NewEvent> {
    let kind = kind_of(a.state).filter(|k| wanted.has(k))?;
    let mut data = serde_json::json!({
        "campaign": a.campaign,
        "batch": a.batch,
        "index": a.index,
        "recipient": a.recipient,
        "code": a.code,
        "enhanced": a.enhanced,
        "reply": a.reply,
        "attempt": a.attempt,
        "gateway": a.gateway,
    });
    if a.state == State::Deferred && a.next_attempt > 0 {
        data["next_attempt"] = crate::plane::view::rfc3339(a.next_attempt as i64).into();
    }
    Some(NewEvent {
        at: a.at,
        kind,
        campaign: Some(a.campaign),
        payload: data.to_string(),
        dedupe: a
            .state
            .is_final()
            .then(|| final_key(a.campaign, a.batch, a.index)),
    })
}

/// The final outcomes' events of batches done (delivered, bounced and
/// expired recipients; suppressed and cancelled ones have none), for the
/// types `wanted` has.
pub fn final_events(done: &[DoneBatch], wanted: Kinds, gateway: &str) -> Vec<NewEvent> {
    let mut out = Vec::new();
    if !wanted.any_delivery() {
        return out;
    }
    for b in done {
        for r in &b.recipients {
            let state = match r.status.as_str() {
                "delivered" => State::Delivered,
                "bounced" => State::Bounced,
                "expired" => State::Expired,
                _ => continue,
            };
            let attempt = Attempt {
                campaign: b.campaign,
                batch: b.batch,
                index: r.idx,
                recipient: &r.email,
                state,
                code: u16::try_from(r.code).unwrap_or(0),
                enhanced: &r.enhanced,
                reply: &r.reply,
                attempt: u32::try_from(r.attempts).unwrap_or(0),
                next_attempt: 0,
                at: r.at,
                gateway,
            };
            out.extend(attempt_event(&attempt, wanted));
        }
    }
    out
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
            recipient: "a@x.test",
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
        assert_eq!(e.kind, "message.delivered");
        assert_eq!(e.dedupe.as_deref(), Some("3.7.2"));
        let data: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(data["recipient"], "a@x.test");
        assert_eq!(data["code"], 250);
        assert_eq!(data["gateway"], "gw1");
        assert!(data.get("next_attempt").is_none());

        let d = attempt_event(&attempt(State::Deferred), all).unwrap();
        assert_eq!((d.kind, d.dedupe.as_deref()), ("message.deferred", None));
        let data: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
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
        let got: Vec<(&str, Option<String>)> = final_events(&done, Kinds::all(), "local")
            .into_iter()
            .map(|e| (e.kind, e.dedupe))
            .collect();
        assert_eq!(
            got,
            [
                ("message.delivered", Some("1.2.0".to_owned())),
                ("message.bounced", Some("1.2.2".to_owned())),
                ("message.expired", Some("1.2.4".to_owned())),
            ]
        );
        let none = final_events(&done, Kinds::of(&["message.clicked".to_owned()]), "local");
        assert!(none.is_empty());
    }
}
