//! Reading a batch's slots into what the store keeps: counts per destination
//! domain, and the rows of its final recipients.

use volley_queue::slot::{final_status, mark};
use volley_queue::{BatchView, Slot, State};

use crate::store::batches::{Counts, FinalRecipient};

/// Adds one recipient in `slot` to `counts`.
pub fn count(counts: &mut Counts, slot: Slot) {
    counts.recipients += 1;
    match (slot.state, slot.next_attempt) {
        (State::Pending, _) => counts.pending += 1,
        (State::InFlight, _) => counts.in_flight += 1,
        (State::Deferred, _) => counts.deferred += 1,
        (State::Delivered, _) => counts.delivered += 1,
        (State::Bounced, mark::SUPPRESSED) if slot.code == 0 => counts.suppressed += 1,
        (State::Bounced, _) => counts.bounced += 1,
        (State::Expired, mark::CANCELLED | mark::PURGED) => counts.cancelled += 1,
        (State::Expired, _) => counts.expired += 1,
    }
}

/// A batch's recipients by state per destination domain (lower case, in batch
/// order); `slot` gives each recipient's slot (a corrupt one counts as pending).
pub fn domain_counts(
    view: &BatchView<'_>,
    slot: impl Fn(usize) -> Option<Slot>,
) -> Vec<(String, Counts)> {
    let mut out: Vec<(String, Counts)> = Vec::new();
    let mut last: &[u8] = &[];
    for (i, r) in view.recipients().enumerate() {
        if out.is_empty() || !r.domain.eq_ignore_ascii_case(last) {
            last = r.domain;
            let domain = String::from_utf8_lossy(r.domain).to_ascii_lowercase();
            match out.iter_mut().position(|(d, _)| *d == domain) {
                // Sorted by domain, so a domain comes back only in a mixed-case list.
                Some(p) => {
                    let item = out.remove(p);
                    out.push(item);
                }
                None => out.push((domain, Counts::default())),
            }
        }
        if let Some((_, counts)) = out.last_mut() {
            count(counts, slot(i).unwrap_or(Slot::PENDING));
        }
    }
    out
}

/// The last answer a recipient got, when the engine kept it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastReply {
    /// Unix second.
    pub at: i64,
    /// Enhanced status code or "".
    pub enhanced: String,
    /// Reply text or reason.
    pub text: String,
}

/// The row of recipient `index` of `view` in final `slot`, with its last reply
/// if known (else none, at `now`).
pub fn final_row(
    view: &BatchView<'_>,
    index: usize,
    slot: Slot,
    reply: Option<&LastReply>,
    now: i64,
) -> FinalRecipient {
    let email = view
        .recipient(index)
        .map(|r| r.address())
        .unwrap_or_default();
    let fallback = || match (slot.state, slot.next_attempt) {
        (State::Expired, mark::CANCELLED) => "the campaign was cancelled".to_owned(),
        (State::Expired, mark::STOPPED) => "the campaign's stop_at passed".to_owned(),
        (State::Expired, mark::PURGED) => "purged from the queue by an operator".to_owned(),
        (State::Bounced, mark::SUPPRESSED) if slot.code == 0 => {
            "on the suppression list".to_owned()
        }
        _ => String::new(),
    };
    FinalRecipient {
        idx: index as i64,
        email,
        status: final_status(slot).to_owned(),
        attempts: i64::from(slot.attempts),
        code: i64::from(slot.code),
        enhanced: reply.map(|r| r.enhanced.clone()).unwrap_or_default(),
        reply: reply.map_or_else(fallback, |r| r.text.clone()),
        at: reply.map_or(now, |r| r.at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_queue::{BatchBuilder, BatchMeta};

    #[test]
    fn counts_per_domain_and_marks() {
        let meta = BatchMeta {
            batch_id: 0,
            campaign_id: 1,
            content_hash: [0; 32],
            created_at: 0,
        };
        let mut b = BatchBuilder::new(meta, &[] as &[&str]).unwrap();
        for a in ["a@x.test", "b@X.test", "c@y.test", "d@y.test", "e@y.test"] {
            b.push(a, &[] as &[&[u8]]).unwrap();
        }
        let file = b.finish().unwrap();
        let view = BatchView::parse(&file).unwrap();
        let s = |state, code, next_attempt| Slot {
            state,
            attempts: 1,
            code,
            next_attempt,
        };
        let slots = [
            s(State::Delivered, 250, 0),
            s(State::Bounced, 0, mark::SUPPRESSED),
            s(State::Expired, 0, mark::CANCELLED),
            s(State::Bounced, 550, 0),
            s(State::Deferred, 451, 99),
        ];
        let got = domain_counts(&view, |i| slots.get(i).copied());
        let x = Counts {
            recipients: 2,
            delivered: 1,
            suppressed: 1,
            ..Counts::default()
        };
        let y = Counts {
            recipients: 3,
            cancelled: 1,
            bounced: 1,
            deferred: 1,
            ..Counts::default()
        };
        assert_eq!(
            got,
            vec![("x.test".to_owned(), x), ("y.test".to_owned(), y)]
        );
        let row = final_row(&view, 2, slots[2], None, 7);
        assert_eq!(
            (row.status.as_str(), row.reply.as_str(), row.at),
            ("cancelled", "the campaign was cancelled", 7)
        );
        assert_eq!(final_row(&view, 1, slots[1], None, 7).status, "suppressed");
    }
}
