//! The suppression list in memory: entries by normalised address, bounce
//! histories, and how each journal record changes them. No I/O.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::record::{BounceKind, Record};

/// Longest address (in bytes) normalised on the stack when looked up; longer or
/// non-ASCII ones are lower-cased into a `String`.
const STACK_KEY: usize = 320;

/// Bounce timestamps kept per address and sending domain, per kind: limits above
/// this are treated as this.
pub const HISTORY_CAP: usize = 256;

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

/// Longest free-text reason or detail kept, in characters.
pub const TEXT_MAX: usize = 200;

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

/// One suppression of an address (the address is the key it is stored under).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The sending domain it applies to (lower case), or `*` for every one.
    pub domain: Arc<str>,
    /// Why.
    pub reason: Reason,
    /// Unix seconds when it was added.
    pub since: u64,
    /// More about it, e.g. the DSN status `5.1.1`.
    pub detail: Option<Box<str>>,
}

/// The entries of one address: almost always one, kept without a `Vec`.
#[derive(Debug, Clone)]
enum Entries {
    One(Entry),
    Many(Vec<Entry>),
}

impl Entries {
    fn as_slice(&self) -> &[Entry] {
        match self {
            Entries::One(e) => std::slice::from_ref(e),
            Entries::Many(v) => v,
        }
    }
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

/// The whole list in memory.
#[derive(Debug, Default)]
pub(crate) struct List {
    /// Entries by normalised address (see [`normalize`]).
    entries: HashMap<Box<str>, Entries>,
    /// Number of entries (over all addresses).
    len: usize,
    /// Sending domains, shared by the entries that name them.
    domains: HashSet<Arc<str>>,
    /// Bounce histories by (normalised address, sending domain).
    histories: HashMap<(Box<str>, Arc<str>), History>,
}

/// The form addresses are stored and compared in: trimmed and lower-cased
/// (Unicode), local part included. Most MTAs treat local parts as case-sensitive,
/// but nobody hands out `Bob@` and `bob@` to two people, and a suppression list
/// must not be dodged by a change of case.
pub fn normalize(address: &str) -> String {
    address.trim().to_lowercase()
}

/// Calls `f` with the normalised form of `address`, built on the stack for the
/// usual (ASCII, short) address: the per-recipient lookup allocates nothing.
fn with_key<R>(address: &str, f: impl FnOnce(&str) -> R) -> R {
    let address = address.trim();
    if !address.is_ascii() || address.len() > STACK_KEY {
        return f(&address.to_lowercase());
    }
    if !address.bytes().any(|b| b.is_ascii_uppercase()) {
        return f(address);
    }
    let mut buf = [0u8; STACK_KEY];
    let key = &mut buf[..address.len()];
    key.copy_from_slice(address.as_bytes());
    key.make_ascii_lowercase();
    match std::str::from_utf8(key) {
        Ok(key) => f(key),
        Err(_) => f(&address.to_lowercase()),
    }
}

/// Whether an entry for `entry_domain` applies to mail from `sending` (any case).
fn applies(entry_domain: &str, sending: &str) -> bool {
    entry_domain == "*"
        || entry_domain.eq_ignore_ascii_case(sending)
        || (!sending.is_ascii() && entry_domain == sending.to_lowercase())
}

impl List {
    /// Entries over all addresses.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry that suppresses `address` for mail from `sending_domain`: one for
    /// that domain if there is one, else one for `*`.
    pub(crate) fn find(&self, address: &str, sending_domain: &str) -> Option<&Entry> {
        with_key(address, |key| {
            let entries = self.entries.get(key)?.as_slice();
            entries
                .iter()
                .find(|e| &*e.domain != "*" && applies(&e.domain, sending_domain))
                .or_else(|| entries.iter().find(|e| &*e.domain == "*"))
        })
    }

    /// The entries of `address` (normalised), for every sending domain.
    pub(crate) fn entries_of(&self, address: &str) -> &[Entry] {
        with_key(address, |key| {
            self.entries.get(key).map_or(&[][..], Entries::as_slice)
        })
    }

    /// Every (normalised address, entry).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries
            .iter()
            .flat_map(|(a, es)| es.as_slice().iter().map(move |e| (&**a, e)))
    }

    /// Every bounce history.
    pub(crate) fn histories(&self) -> impl Iterator<Item = (&str, &str, &History)> {
        self.histories.iter().map(|((a, d), h)| (&**a, &**d, h))
    }

    /// The bounce history of `address` for `domain`, if any.
    pub(crate) fn history(&self, address: &str, domain: &str) -> Option<&History> {
        let key = (normalize(address).into_boxed_str(), self.domain_key(domain));
        self.histories.get(&key)
    }

    fn domain_key(&self, domain: &str) -> Arc<str> {
        self.domains
            .get(domain)
            .cloned()
            .unwrap_or_else(|| Arc::from(domain))
    }

    fn intern(&mut self, domain: &str) -> Arc<str> {
        if let Some(d) = self.domains.get(domain) {
            return d.clone();
        }
        let d: Arc<str> = Arc::from(domain);
        self.domains.insert(d.clone());
        d
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
            } => {
                let address = normalize(address);
                let domain = self.intern(&domain.to_lowercase());
                if self.entries_of(&address).iter().any(|e| e.domain == domain) {
                    return false;
                }
                let entry = Entry {
                    domain: domain.clone(),
                    reason: Reason::parse(reason),
                    since,
                    detail: (!detail.is_empty()).then(|| detail.into()),
                };
                let address: Box<str> = address.into();
                // The bounces that led here (or came before a manual entry) have
                // done their work.
                self.histories.remove(&(address.clone(), domain));
                match self.entries.get_mut(&address) {
                    None => {
                        self.entries.insert(address, Entries::One(entry));
                    }
                    Some(Entries::Many(v)) => v.push(entry),
                    Some(es) => {
                        let single = std::mem::replace(es, Entries::Many(Vec::new()));
                        if let Entries::One(first) = single {
                            *es = Entries::Many(vec![first, entry]);
                        }
                    }
                }
                self.len += 1;
                true
            }
            Record::Remove {
                domain, address, ..
            } => {
                let address: Box<str> = normalize(address).into();
                let domain = domain.to_lowercase();
                self.histories
                    .remove(&(address.clone(), self.domain_key(&domain)));
                let Some(es) = self.entries.get_mut(&address) else {
                    return false;
                };
                let removed = match es {
                    Entries::One(e) => {
                        if *e.domain == *domain {
                            self.entries.remove(&address);
                            true
                        } else {
                            false
                        }
                    }
                    Entries::Many(v) => {
                        let before = v.len();
                        v.retain(|e| *e.domain != *domain);
                        let removed = v.len() < before;
                        if v.len() == 1 {
                            if let Some(last) = v.pop() {
                                *es = Entries::One(last);
                            }
                        } else if v.is_empty() {
                            self.entries.remove(&address);
                        }
                        removed
                    }
                };
                if removed {
                    self.len -= 1;
                }
                removed
            }
            Record::Bounce {
                at,
                domain,
                address,
                kind,
            } => {
                let domain = self.intern(&domain.to_lowercase());
                let history = self
                    .histories
                    .entry((normalize(address).into(), domain))
                    .or_default();
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

    /// Drops soft bounces of `address` for `domain` older than `cutoff`.
    pub(crate) fn prune_soft(&mut self, address: &str, domain: &str, cutoff: u64) {
        let key = (normalize(address).into_boxed_str(), self.domain_key(domain));
        if let Some(h) = self.histories.get_mut(&key) {
            h.soft.retain(|&t| t >= cutoff);
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
    fn lookups_ignore_case_and_prefer_the_sending_domain_entry() {
        let mut list = List::default();
        assert!(list.apply(&add("Bob@Example.TEST", "*")));
        assert!(!list.apply(&add("bob@example.test", "*")), "already there");
        assert!(list.apply(&add("bob@example.test", "Acme.test")));
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.find(" BOB@example.test ", "other.test")
                .map(|e| &*e.domain),
            Some("*")
        );
        assert_eq!(
            list.find("bob@EXAMPLE.test", "ACME.TEST")
                .map(|e| &*e.domain),
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
        let remove = |domain| Record::Remove {
            at: 11,
            domain,
            address: "A@X.test",
        };
        assert!(list.apply(&remove("acme.test")));
        assert!(!list.apply(&remove("acme.test")));
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.find("a@x.test", "acme.test").map(|e| &*e.domain),
            Some("*")
        );
        assert!(list.apply(&remove("*")));
        assert!(list.find("a@x.test", "acme.test").is_none());
        assert!(list.find("a@x.test", "beta.test").is_some());
        assert!(list.apply(&remove("beta.test")));
        assert_eq!((list.len(), list.entries.len()), (0, 0));
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
