//! The work of one delivery round: live batches, and the recipients due now
//! grouped by destination domain; due recipients on the suppression list are set
//! apart (the engine finalises them without sending).

use std::collections::HashMap;
use std::sync::Arc;

use volley_queue::{QueueError, Slot, State};

use crate::delivery::feed::{LiveBatch, Opened};
use crate::suppress::{sending_domain, Suppressions};
use volley_merge::source::MessageSource;

/// One recipient to attempt: its batch and index.
#[derive(Debug, Clone)]
pub struct Item {
    /// The batch.
    pub batch: Arc<LiveBatch>,
    /// Recipient index in the batch.
    pub index: u32,
}

impl Item {
    /// The recipient's address, decoded from its batch. The send path already has
    /// it; this is for the paths that fail before a transaction (DNS, rendering).
    pub fn address(&self) -> String {
        self.batch
            .map
            .view()
            .recipient(self.index as usize)
            .map(|r| r.address())
            .unwrap_or_default()
    }
}

/// Orders a site's recipients gathered from several domains so that those of
/// one relayed message are next to each other, to share a transaction
/// ([`crate::delivery::site`]): the site's queue is the domains' lists one
/// after another, which parts a message sent to two domains behind one site
/// (a smarthost, a provider hosting both). A stable sort by batch (in the
/// order the batches first appear) and recipient index; nothing moves when no
/// item is relayed mail, so a campaign's order (its batches', its domains')
/// is left as planned.
pub fn group_relayed(items: &mut [Item]) {
    if !items.iter().any(|i| i.batch.map.header().is_relay()) {
        return;
    }
    let mut rank: HashMap<*const LiveBatch, usize> = HashMap::new();
    for item in items.iter() {
        let next = rank.len();
        rank.entry(Arc::as_ptr(&item.batch)).or_insert(next);
    }
    items.sort_by_key(|i| (rank[&Arc::as_ptr(&i.batch)], i.index));
}

/// What a round starts from.
#[derive(Debug, Default)]
pub struct Work {
    /// Every live batch opened for this round (all are synced and checked for
    /// completion at the end).
    pub batches: Vec<Arc<LiveBatch>>,
    /// Due recipients per lower-cased destination domain.
    pub by_domain: HashMap<String, Vec<Item>>,
    /// Recipients found in flight (left by a crash) and reset to pending: they may
    /// have been delivered already, so they are the possible duplicates.
    pub in_flight_reset: u64,
    /// Due recipients on the suppression list for their batch's sending domain:
    /// not to be sent.
    pub suppressed: Vec<Item>,
    /// Recipients not due yet (deferred with a later next attempt).
    pub not_due: u64,
    /// The earliest unix second at which a recipient not due yet becomes due.
    pub next_due: Option<u64>,
    /// Corrupt batch files quarantined by the recovery scan.
    pub quarantined: u64,
    /// Unfinished recipients in batches left for the next round (the window was
    /// full).
    pub waiting: u64,
}

/// The work of a round from the batches a feed `opened`: in-flight recipients
/// (left by a crash) are reset, and those due at `now` (unix seconds) are
/// collected by destination domain. Suppressed recipients (in `suppressions` for
/// the domain of their batch's envelope sender, asked of `source`) are set apart
/// in [`Work::suppressed`].
pub fn collect(
    opened: Opened,
    now: u64,
    suppressions: &dyn Suppressions,
    source: &dyn MessageSource,
) -> Result<Work, QueueError> {
    let screen = !suppressions.is_empty();
    let mut address = String::with_capacity(128);
    let mut work = Work {
        quarantined: opened.quarantined,
        waiting: opened.waiting,
        not_due: opened.not_due,
        next_due: opened.next_due,
        ..Work::default()
    };
    for batch in opened.batches {
        work.in_flight_reset += batch.map.reset_in_flight()? as u64;
        let view = batch.map.view();
        let mut last_domain: &[u8] = &[];
        let mut last_key = String::new();
        // One template per batch, so one envelope sender domain (a template that
        // cannot be loaded gives "": only `*` entries apply; rendering fails later).
        let sender_domain = if screen {
            sending_domain(&source.envelope_from(&view, 0).unwrap_or_default())
        } else {
            String::new()
        };
        for (index, recipient) in view.recipients().enumerate() {
            let slot = batch.map.slot(index).map_err(|fault| QueueError::Corrupt {
                path: batch.map.path().to_owned(),
                fault,
            })?;
            if !is_due(slot, now) {
                if !slot.state.is_final() {
                    work.not_due += 1;
                    let at = slot.next_attempt;
                    work.next_due = Some(work.next_due.map_or(at, |t| t.min(at)));
                }
                continue;
            }
            // Recipients are sorted by domain: the key is made once per run of them.
            if last_domain != recipient.domain || last_key.is_empty() {
                last_domain = recipient.domain;
                last_key = String::from_utf8_lossy(recipient.domain).to_ascii_lowercase();
            }
            let item = Item {
                batch: batch.clone(),
                index: index as u32,
            };
            if screen {
                address.clear();
                address.push_str(&String::from_utf8_lossy(recipient.local));
                address.push('@');
                address.push_str(&String::from_utf8_lossy(recipient.domain));
                if suppressions.is_suppressed(&address, &sender_domain) {
                    work.suppressed.push(item);
                    continue;
                }
            }
            match work.by_domain.get_mut(&last_key) {
                Some(items) => items.push(item),
                None => {
                    work.by_domain.insert(last_key.clone(), vec![item]);
                }
            }
        }
        work.batches.push(batch);
    }
    Ok(work)
}

/// Whether a recipient in `slot` should be attempted at `now`.
pub fn is_due(slot: Slot, now: u64) -> bool {
    match slot.state {
        State::Pending | State::InFlight => true,
        State::Deferred => slot.next_attempt <= now,
        State::Delivered | State::Bounced | State::Expired => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::feed::{Feed, SpoolFeed};
    use crate::suppress::NoSuppressions;
    use std::sync::atomic::{AtomicU32, Ordering};
    use volley_merge::source::StaticMessage;
    use volley_queue::Spool;
    use volley_queue::{BatchBuilder, BatchMeta};

    /// Suppresses listed (address, sending domain) pairs; counts refreshes.
    struct Listed(Vec<(&'static str, &'static str)>, AtomicU32);

    impl Suppressions for Listed {
        fn is_suppressed(&self, address: &str, sending_domain: &str) -> bool {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.iter().any(|(a, d)| {
                a.eq_ignore_ascii_case(address) && (*d == "*" || *d == sending_domain)
            })
        }
        fn refresh(&self) {}
    }

    fn spool_with(addresses: &[&str]) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let meta = BatchMeta {
            batch_id: 0,
            campaign_id: 1,
            content_hash: [0; 32],
            created_at: 0,
        };
        let mut b = BatchBuilder::new(meta, &[] as &[&str]).unwrap();
        for a in addresses {
            b.push(a, &[] as &[&[u8]]).unwrap();
        }
        spool.write_batch(&b.finish().unwrap()).unwrap();
        (dir, spool)
    }

    /// The batches of a round from `spool`, as the engine gets them.
    fn opened(spool: &Spool, window: u64) -> Opened {
        SpoolFeed::new(spool.try_clone().unwrap())
            .open_round(0, window)
            .unwrap()
    }

    fn source(from: &str) -> StaticMessage {
        StaticMessage {
            from: from.into(),
            message: bytes::Bytes::from_static(b"Subject: x\r\n\r\nx\r\n"),
        }
    }

    #[test]
    fn suppressed_recipients_are_set_apart_for_their_sending_domain() {
        let (_dir, spool) = spool_with(&["a@x.test", "B@X.test", "c@y.test", "d@y.test"]);
        let list = Listed(
            vec![
                ("b@x.test", "*"),
                ("c@y.test", "acme.test"),
                ("d@y.test", "other.test"),
            ],
            AtomicU32::new(0),
        );
        let work = collect(opened(&spool, 1000), 0, &list, &source("news@Acme.TEST")).unwrap();
        let suppressed: Vec<u32> = work.suppressed.iter().map(|i| i.index).collect();
        let mut sent: Vec<String> = work
            .by_domain
            .values()
            .flatten()
            .map(Item::address)
            .collect();
        sent.sort();
        assert_eq!(suppressed, [1, 2]);
        assert_eq!(sent, ["a@x.test", "d@y.test"]);
        assert_eq!(
            list.1.load(Ordering::Relaxed),
            4,
            "asked once per due recipient"
        );

        // No suppressions: nothing is asked, everything is due.
        let work = collect(
            opened(&spool, 1000),
            0,
            &NoSuppressions,
            &source("news@acme.test"),
        )
        .unwrap();
        assert!(work.suppressed.is_empty());
        assert_eq!(work.by_domain.values().flatten().count(), 4);
    }

    #[test]
    fn a_relayed_messages_recipients_at_one_site_come_together() {
        // A campaign batch, and a relay batch: message 0 to a@one.test and
        // b@two.test, message 1 to c@one.test and d@two.test.
        let (_dir, spool) = spool_with(&["e@one.test", "f@two.test", "g@one.test"]);
        let mut relay = volley_queue::relay::OpenBatch::create(
            &spool.open_dir(),
            None,
            volley_queue::ids::INBOUND_ID_BASE + 1,
            10,
            &[],
            0,
        )
        .unwrap();
        let none: &[&[u8]] = &[];
        for (m, (x, y)) in [("a", "b"), ("c", "d")].into_iter().enumerate() {
            let rcpts = [("one.test", x, none), ("two.test", y, none)];
            relay.append("x@src.test", &rcpts, format!("m{m}\r\n").as_bytes());
        }
        relay.commit().unwrap();
        relay.seal(&spool.active_dir()).unwrap().unwrap();
        let work = collect(
            opened(&spool, 1000),
            0,
            &NoSuppressions,
            &source("x@src.test"),
        )
        .unwrap();
        let of = |domain: &str| work.by_domain.get(domain).cloned().unwrap_or_default();
        let names = |items: &[Item]| -> Vec<String> { items.iter().map(|i| i.address()).collect() };
        // The site's queue as planned: one domain's list, then the other's.
        let mut site: Vec<Item> = of("one.test").into_iter().chain(of("two.test")).collect();
        group_relayed(&mut site);
        let relayed = ["a@one.test", "b@two.test", "c@one.test", "d@two.test"];
        let relayed: Vec<String> = relayed.iter().map(|s| s.to_string()).collect();
        let got = names(&site);
        let at = got.iter().position(|a| a == "a@one.test").unwrap();
        assert_eq!(got[at..at + 4], relayed[..], "{got:?}");
        // Campaign recipients keep their batch's index order too.
        let campaign: Vec<&String> = got.iter().filter(|a| !relayed.contains(a)).collect();
        assert_eq!(campaign, ["e@one.test", "f@two.test", "g@one.test"]);

        // No relayed mail: nothing moves.
        let mut only_campaign: Vec<Item> = site
            .iter()
            .filter(|i| !i.batch.map.header().is_relay())
            .cloned()
            .rev()
            .collect();
        let before = names(&only_campaign);
        group_relayed(&mut only_campaign);
        assert_eq!(names(&only_campaign), before);
    }

    #[test]
    fn a_round_maps_batches_up_to_its_window() {
        use volley_queue::{BatchBuilder, BatchMeta};
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let files: Vec<Vec<u8>> = (0..3)
            .map(|batch_id| {
                let meta = BatchMeta {
                    batch_id,
                    campaign_id: 1,
                    content_hash: [0; 32],
                    created_at: 0,
                };
                let mut b = BatchBuilder::new(meta, &[] as &[&str]).unwrap();
                for i in 0..10 {
                    b.push(&format!("u{i}@x.test"), &[] as &[&[u8]]).unwrap();
                }
                b.finish().unwrap()
            })
            .collect();
        spool
            .write_batches(files.iter().map(Vec::as_slice))
            .unwrap();
        let work = collect(
            opened(&spool, 15),
            0,
            &NoSuppressions,
            &source("news@acme.test"),
        )
        .unwrap();
        assert_eq!(work.batches.len(), 2, "the second batch fills the window");
        assert_eq!(work.by_domain["x.test"].len(), 20);
        assert_eq!(work.waiting, 10);
        let all = collect(
            opened(&spool, 1000),
            0,
            &NoSuppressions,
            &source("news@acme.test"),
        )
        .unwrap();
        assert_eq!((all.batches.len(), all.waiting), (3, 0));
    }

    #[test]
    fn due_recipients() {
        let s = |state, next_attempt| Slot {
            state,
            attempts: 1,
            code: 451,
            next_attempt,
        };
        let table = [
            (s(State::Pending, 0), true),
            (s(State::InFlight, 0), true),
            (s(State::Deferred, 100), true),
            (s(State::Deferred, 101), false),
            (s(State::Delivered, 0), false),
            (s(State::Bounced, 0), false),
            (s(State::Expired, 0), false),
        ];
        for (slot, due) in table {
            assert_eq!(is_due(slot, 100), due, "{slot:?}");
        }
    }
}
