//! The suppression list in memory: entries by normalised address, bounce
//! histories, and how each journal record changes them. No I/O.
//!
//! Built for millions of entries held by every sending process: addresses live
//! once in one string arena, each entry is a 32-byte record, and the index maps a
//! 64-bit hash of the address to the first record of a chain (the entries of that
//! address for each sending domain, and of any address whose hash collides). About
//! 70 bytes per entry in all, against ~200 for a `HashMap<String, Entry>`, and
//! one allocation per load instead of one per entry. Lookups hash the normalised
//! address built on the stack: no allocation per recipient.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use super::record::{BounceKind, Record};

/// Longest address (in bytes) normalised on the stack when looked up; longer or
/// non-ASCII ones are lower-cased into a `String`.
const STACK_KEY: usize = 320;

/// Bounce timestamps kept per address and sending domain, per kind: limits above
/// this are treated as this.
pub const HISTORY_CAP: usize = 256;

/// Longest free-text reason or detail kept, in characters.
pub const TEXT_MAX: usize = 200;

/// No next record / no detail.
const NONE: u32 = u32::MAX;
/// Domain index of `*`.
const STAR: u32 = 0;
/// Domain index of a removed record.
const DEAD: u32 = u32::MAX;

/// Why an address is suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Added by hand (`volley suppress add`).
    Manual,
    /// Hard bounces reached `[bounce] hard_limit`.
    HardBounce,
    /// Soft bounces reached `[bounce] soft_limit` within `[bounce] window`.
    SoftBounce,
    /// The recipient reported the mail as spam (ARF).
    Complaint,
    /// The recipient unsubscribed.
    Unsubscribe,
    /// Loaded from a file (`volley suppress import`).
    Import,
    /// Any other reason, as text (no control characters, at most 200 characters).
    Other(Box<str>),
}

/// `text` trimmed, with control characters (tab, CR, LF, …) replaced by spaces and
/// cut at [`TEXT_MAX`] characters: safe for one field of a journal line.
pub fn clean_text(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(TEXT_MAX)
        .collect()
}

impl Reason {
    /// The reason named by `text`: one of the names of [`Reason::as_str`], else
    /// [`Reason::Other`] with the text cleaned by [`clean_text`]; empty is `manual`.
    pub fn parse(text: &str) -> Reason {
        match text.trim() {
            "" | "manual" => Reason::Manual,
            "hard_bounce" => Reason::HardBounce,
            "soft_bounce" => Reason::SoftBounce,
            "complaint" => Reason::Complaint,
            "unsubscribe" => Reason::Unsubscribe,
            "import" => Reason::Import,
            other => Reason::Other(clean_text(other).into()),
        }
    }

    /// The name written in the journal and shown by `volley suppress list`.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Manual => "manual",
            Reason::HardBounce => "hard_bounce",
            Reason::SoftBounce => "soft_bounce",
            Reason::Complaint => "complaint",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Import => "import",
            Reason::Other(text) => text,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One suppression, borrowed from the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The address, normalised (see [`normalize`]).
    pub address: &'a str,
    /// The sending domain it applies to (lower case), or `*` for every one.
    pub domain: &'a str,
    /// Why.
    pub reason: &'a Reason,
    /// Unix seconds when it was added.
    pub since: u64,
    /// More about it, e.g. the DSN status `5.1.1`.
    pub detail: Option<&'a str>,
}

impl Entry<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> Suppression {
        Suppression {
            address: self.address.to_owned(),
            domain: self.domain.to_owned(),
            reason: self.reason.clone(),
            since: self.since,
            detail: self.detail.map(str::to_owned),
        }
    }
}

/// One suppression, owned (see [`Entry`] for the fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppression {
    /// The address, normalised.
    pub address: String,
    /// The sending domain, or `*`.
    pub domain: String,
    /// Why.
    pub reason: Reason,
    /// Unix seconds when it was added.
    pub since: u64,
    /// More about it.
    pub detail: Option<String>,
}

/// Recent bounces of one address for one sending domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Unix seconds of the hard bounces (at most [`HISTORY_CAP`], oldest dropped).
    pub hard: Vec<u64>,
    /// Unix seconds of the soft bounces (likewise).
    pub soft: Vec<u64>,
}

/// Whether a journal record changed the list.
pub(crate) type Changed = bool;

/// One entry: 32 bytes.
#[derive(Debug, Clone, Copy)]
struct Rec {
    since: u64,
    /// The address in the arena.
    addr_off: u32,
    /// Index in `domains`; [`DEAD`] once removed.
    domain: u32,
    /// Index in `reasons`.
    reason: u32,
    /// Index in `details`, or [`NONE`].
    detail: u32,
    /// Next record of the same hash chain, or [`NONE`].
    next: u32,
    addr_len: u16,
}

/// The index's hasher: its keys are already hashes.
#[derive(Debug, Default)]
struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Interned strings (sending domains, reasons, details) by index.
#[derive(Debug)]
struct Table<T> {
    items: Vec<T>,
    ids: HashMap<T, u32>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            items: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl Table<Box<str>> {
    fn intern_str(&mut self, item: &str) -> u32 {
        match self.ids.get(item) {
            Some(&id) => id,
            None => self.intern(Box::from(item)),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone> Table<T> {
    fn intern(&mut self, item: T) -> u32 {
        if let Some(&id) = self.ids.get(&item) {
            return id;
        }
        let id = self.items.len() as u32;
        self.items.push(item.clone());
        self.ids.insert(item, id);
        id
    }
}

/// The whole list in memory.
#[derive(Debug)]
pub(crate) struct List {
    /// Every normalised address, once, back to back.
    arena: String,
    records: Vec<Rec>,
    /// Hash of a normalised address to the first record of its chain.
    index: HashMap<u64, u32, BuildHasherDefault<Passthrough>>,
    /// Seed of the address hash (random per process: chains cannot be aimed at).
    seed: u64,
    /// Live entries.
    len: usize,
    /// Removed records still in `records` (reclaimed by [`List::rebuild`]).
    dead: usize,
    /// Sending domains, `*` first.
    domains: Table<Box<str>>,
    reasons: Table<Reason>,
    details: Table<Box<str>>,
    /// Bounce histories by (normalised address, sending domain).
    histories: HashMap<(Box<str>, Box<str>), History>,
    /// Tests: every address hashes the same, so all share one chain.
    #[cfg(test)]
    collide: bool,
}

impl Default for List {
    fn default() -> List {
        let mut domains = Table::default();
        domains.intern(Box::from("*"));
        List {
            arena: String::new(),
            records: Vec::new(),
            index: HashMap::default(),
            seed: std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
            len: 0,
            dead: 0,
            domains,
            reasons: Table::default(),
            details: Table::default(),
            histories: HashMap::new(),
            #[cfg(test)]
            collide: false,
        }
    }
}

/// The form addresses are stored and compared in: trimmed and lower-cased
/// (Unicode), local part included. Most MTAs treat local parts as case-sensitive,
/// but nobody hands out `Bob@` and `bob@` to two people, and a suppression list
/// must not be dodged by a change of case.
pub fn normalize(address: &str) -> String {
    address.trim().to_lowercase()
}

/// Calls `f` with `text` trimmed and lower-cased, built on the stack for the
/// usual (ASCII, short) text: the per-recipient lookup allocates nothing.
fn with_lower<R>(text: &str, f: impl FnOnce(&str) -> R) -> R {
    let text = text.trim();
    if !text.is_ascii() || text.len() > STACK_KEY {
        return f(&text.to_lowercase());
    }
    if !text.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(text);
    }
    let mut buf = [0u8; STACK_KEY];
    let key = &mut buf[..text.len()];
    key.copy_from_slice(text.as_bytes());
    key.make_ascii_lowercase();
    match std::str::from_utf8(key) {
        Ok(key) => f(key),
        Err(_) => f(&text.to_lowercase()),
    }
}

impl List {
    /// Entries over all addresses.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn hash(&self, key: &str) -> u64 {
        #[cfg(test)]
        if self.collide {
            return 7;
        }
        xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), self.seed)
    }

    fn address_of(&self, rec: &Rec) -> &str {
        let start = rec.addr_off as usize;
        self.arena
            .get(start..start + usize::from(rec.addr_len))
            .unwrap_or_default()
    }

    fn entry(&self, rec: &Rec) -> Entry<'_> {
        Entry {
            address: self.address_of(rec),
            domain: self
                .domains
                .items
                .get(rec.domain as usize)
                .map_or("*", |d| &**d),
            reason: self
                .reasons
                .items
                .get(rec.reason as usize)
                .unwrap_or(&Reason::Manual),
            since: rec.since,
            detail: self.details.items.get(rec.detail as usize).map(|d| &**d),
        }
    }

    /// The records of the chain for `key`'s hash that hold `key`, with their
    /// indexes.
    fn chain<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (u32, &'a Rec)> + 'a {
        let mut at = self.index.get(&self.hash(key)).copied().unwrap_or(NONE);
        std::iter::from_fn(move || {
            while let Some(rec) = self.records.get(at as usize) {
                let i = at;
                at = rec.next;
                if self.address_of(rec) == key {
                    return Some((i, rec));
                }
            }
            None
        })
    }

    /// The entry that suppresses `address` for mail from `sending_domain`: one for
    /// that domain if there is one, else one for `*`.
    pub(crate) fn find(&self, address: &str, sending_domain: &str) -> Option<Entry<'_>> {
        let domain = with_lower(sending_domain, |d| self.domains.ids.get(d).copied());
        with_lower(address, |key| {
            let mut star = None;
            for (_, rec) in self.chain(key) {
                if Some(rec.domain) == domain && rec.domain != STAR {
                    return Some(self.entry(rec));
                }
                if rec.domain == STAR {
                    star = Some(*rec);
                }
            }
            star.map(|rec| self.entry(&rec))
        })
    }

    /// The entries of `address` (any case), for every sending domain.
    pub(crate) fn entries_of(&self, address: &str) -> Vec<Entry<'_>> {
        with_lower(address, |key| {
            self.chain(key).map(|(_, rec)| self.entry(rec)).collect()
        })
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Entry<'_>> {
        self.records
            .iter()
            .filter(|r| r.domain != DEAD)
            .map(|r| self.entry(r))
    }

    /// Every bounce history: (address, sending domain, history).
    pub(crate) fn histories(&self) -> impl Iterator<Item = (&str, &str, &History)> {
        self.histories.iter().map(|((a, d), h)| (&**a, &**d, h))
    }

    /// The bounce history of `address` for `domain` (both normalised), if any.
    pub(crate) fn history(&self, address: &str, domain: &str) -> Option<&History> {
        self.histories.get(&(Box::from(address), Box::from(domain)))
    }

    /// Drops soft bounces of `address` for `domain` (both normalised) older than
    /// `cutoff`.
    pub(crate) fn prune_soft(&mut self, address: &str, domain: &str, cutoff: u64) {
        if let Some(h) = self
            .histories
            .get_mut(&(Box::from(address), Box::from(domain)))
        {
            h.soft.retain(|&t| t >= cutoff);
        }
    }

    /// Removed records waiting to be reclaimed.
    pub(crate) fn dead(&self) -> usize {
        self.dead
    }

    /// Gives back the spare capacity of the arena and the records (after a load).
    pub(crate) fn shrink(&mut self) {
        self.arena.shrink_to_fit();
        self.records.shrink_to_fit();
    }

    /// A copy without removed records nor unused strings.
    pub(crate) fn rebuild(&self) -> List {
        let mut fresh = List::default();
        for e in self.iter() {
            fresh.add(e.address, e.domain, e.reason.clone(), e.detail, e.since);
        }
        fresh.histories = self.histories.clone();
        fresh.shrink();
        fresh
    }

    fn forget_history(&mut self, address: &str, domain: &str) {
        if !self.histories.is_empty() {
            self.histories
                .remove(&(Box::from(address), Box::from(domain)));
        }
    }

    /// Adds an entry for normalised `address` and lower-case `domain`, unless one
    /// is there.
    fn add(
        &mut self,
        address: &str,
        domain: &str,
        reason: Reason,
        detail: Option<&str>,
        since: u64,
    ) -> Changed {
        let domain_id = self.domains.intern_str(domain);
        let mut addr = None;
        for (_, rec) in self.chain(address) {
            if rec.domain == domain_id {
                return false;
            }
            addr = Some((rec.addr_off, rec.addr_len));
        }
        let (addr_off, addr_len) = match addr {
            Some(found) => found,
            None => {
                let (Ok(off), Ok(len)) = (
                    u32::try_from(self.arena.len()),
                    u16::try_from(address.len()),
                ) else {
                    tracing::error!(
                        address,
                        "the suppression list is full (4 GiB of addresses): entry dropped"
                    );
                    return false;
                };
                self.arena.push_str(address);
                (off, len)
            }
        };
        let Ok(index) = u32::try_from(self.records.len()) else {
            return false;
        };
        let hash = self.hash(address);
        let reason = self.reasons.intern(reason);
        let detail = detail.map_or(NONE, |d| self.details.intern_str(d));
        let next = self.index.insert(hash, index).unwrap_or(NONE);
        self.records.push(Rec {
            since,
            addr_off,
            domain: domain_id,
            reason,
            detail,
            next,
            addr_len,
        });
        self.len += 1;
        // The bounces that led here (or came before a manual entry) have done
        // their work.
        self.forget_history(address, domain);
        true
    }

    /// Removes the entry for normalised `address` and lower-case `domain`.
    fn remove(&mut self, address: &str, domain: &str) -> Changed {
        self.forget_history(address, domain);
        let Some(&domain_id) = self.domains.ids.get(domain) else {
            return false;
        };
        let Some((found, _)) = self.chain(address).find(|(_, r)| r.domain == domain_id) else {
            return false;
        };
        let hash = self.hash(address);
        let next = self.records[found as usize].next;
        // Unlink: from the index if it is the chain's head, else from its
        // predecessor.
        if self.index.get(&hash) == Some(&found) {
            if next == NONE {
                self.index.remove(&hash);
            } else {
                self.index.insert(hash, next);
            }
        } else {
            let mut at = self.index.get(&hash).copied().unwrap_or(NONE);
            while let Some(rec) = self.records.get_mut(at as usize) {
                if rec.next == found {
                    rec.next = next;
                    break;
                }
                at = rec.next;
            }
        }
        let rec = &mut self.records[found as usize];
        rec.domain = DEAD;
        rec.next = NONE;
        self.len -= 1;
        self.dead += 1;
        true
    }

    /// Applies one record. Addresses and domains are normalised here, so records
    /// written by hand or by an older writer still match.
    pub(crate) fn apply(&mut self, record: &Record<'_>) -> Changed {
        match *record {
            Record::Add {
                since,
                domain,
                address,
                reason,
                detail,
            } => with_lower(address, |address| {
                with_lower(domain, |domain| {
                    self.add(
                        address,
                        domain,
                        Reason::parse(reason),
                        (!detail.is_empty()).then_some(detail),
                        since,
                    )
                })
            }),
            Record::Remove {
                domain, address, ..
            } => with_lower(address, |address| {
                with_lower(domain, |domain| self.remove(address, domain))
            }),
            Record::Bounce {
                at,
                domain,
                address,
                kind,
            } => {
                let key = (
                    normalize(address).into(),
                    domain.trim().to_lowercase().into(),
                );
                let history = self.histories.entry(key).or_default();
                let times = match kind {
                    BounceKind::Hard => &mut history.hard,
                    BounceKind::Soft => &mut history.soft,
                };
                if times.len() >= HISTORY_CAP {
                    times.remove(0);
                }
                times.push(at);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add<'a>(address: &'a str, domain: &'a str) -> Record<'a> {
        Record::Add {
            since: 10,
            domain,
            address,
            reason: "manual",
            detail: "",
        }
    }

    #[test]
    fn records_are_32_bytes() {
        assert_eq!(std::mem::size_of::<Rec>(), 32);
    }

    #[test]
    fn lookups_ignore_case_and_prefer_the_sending_domain_entry() {
        let mut list = List::default();
        assert!(list.apply(&add("Bob@Example.TEST", "*")));
        assert!(!list.apply(&add("bob@example.test", "*")), "already there");
        assert!(list.apply(&add("bob@example.test", "Acme.test")));
        assert_eq!(list.len(), 2);
        assert_eq!(list.arena, "bob@example.test", "the address is stored once");
        let found = list.find(" BOB@example.test ", "other.test").unwrap();
        assert_eq!((found.address, found.domain), ("bob@example.test", "*"));
        assert_eq!(
            list.find("bob@EXAMPLE.test", "ACME.TEST").map(|e| e.domain),
            Some("acme.test")
        );
        assert!(list.find("bobby@example.test", "acme.test").is_none());
        // Non-ASCII addresses compare by Unicode lower case.
        assert!(list.apply(&add("ÅSA@Example.test", "acme.test")));
        assert!(list.find("åsa@example.test", "acme.test").is_some());
        assert!(list.find("åsa@example.test", "other.test").is_none());
    }

    #[test]
    fn removing_takes_exactly_the_named_domain() {
        let mut list = List::default();
        list.apply(&add("a@x.test", "*"));
        list.apply(&add("a@x.test", "acme.test"));
        list.apply(&add("a@x.test", "beta.test"));
        list.apply(&add("b@x.test", "acme.test"));
        let remove = |domain| Record::Remove {
            at: 11,
            domain,
            address: "A@X.test",
        };
        // The middle of the chain, its head, its tail.
        assert!(list.apply(&remove("acme.test")));
        assert!(!list.apply(&remove("acme.test")));
        assert_eq!(list.len(), 3);
        assert_eq!(
            list.find("a@x.test", "acme.test").map(|e| e.domain),
            Some("*")
        );
        assert!(list.apply(&remove("beta.test")));
        assert!(list.find("a@x.test", "beta.test").unwrap().domain == "*");
        assert!(list.apply(&remove("*")));
        assert!(list.find("a@x.test", "beta.test").is_none());
        assert!(list.entries_of("a@x.test").is_empty());
        assert!(list.find("b@x.test", "acme.test").is_some());
        assert_eq!((list.len(), list.dead(), list.index.len()), (1, 3, 1));
        // Added again after removal; the rebuild drops the removed records.
        assert!(list.apply(&add("a@x.test", "*")));
        let fresh = list.rebuild();
        assert_eq!((fresh.len(), fresh.dead(), fresh.records.len()), (2, 0, 2));
        assert!(fresh.find("a@x.test", "z.test").is_some());
        assert_eq!(fresh.arena, "b@x.testa@x.test");
    }

    #[test]
    fn colliding_hashes_share_a_chain_without_mixing_addresses() {
        let mut list = List {
            collide: true,
            ..List::default()
        };
        for i in 0..20 {
            let a = format!("u{i}@x.test");
            assert!(list.apply(&add(&a, if i % 2 == 0 { "*" } else { "acme.test" })));
        }
        assert_eq!(list.index.len(), 1, "one chain");
        for i in 0..20 {
            let e = list.find(&format!("U{i}@x.test"), "acme.test").unwrap();
            assert_eq!(e.address, format!("u{i}@x.test"));
            assert!(list.find(&format!("u{i}@x.test"), "beta.test").is_some() == (i % 2 == 0));
        }
        assert!(list.find("u20@x.test", "acme.test").is_none());
        // Removing from the head, the middle and the tail keeps the rest linked.
        for i in [19, 10, 0] {
            let a = format!("u{i}@x.test");
            let d = if i % 2 == 0 { "*" } else { "acme.test" };
            assert!(list.apply(&Record::Remove {
                at: 1,
                domain: d,
                address: &a
            }));
        }
        let left: Vec<String> = (0..20)
            .filter(|i| list.find(&format!("u{i}@x.test"), "acme.test").is_some())
            .map(|i| i.to_string())
            .collect();
        assert_eq!(left.len(), 17);
        assert!(
            !left.contains(&"19".into())
                && !left.contains(&"10".into())
                && !left.contains(&"0".into())
        );
        assert_eq!(list.len(), 17);
    }

    #[test]
    fn reasons_parse_known_names_and_keep_other_text_clean() {
        assert_eq!(Reason::parse("hard_bounce"), Reason::HardBounce);
        assert_eq!(Reason::parse(""), Reason::Manual);
        assert_eq!(
            Reason::parse(" asked\tby\r\nphone "),
            Reason::Other("asked by  phone".into())
        );
        assert_eq!(clean_text(&"x".repeat(500)).len(), TEXT_MAX);
    }
}
