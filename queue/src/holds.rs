//! Operator holds on the queue (Postfix's `postsuper -h`, KumoMTA's `kcli
//! suspend`): recipients of a held campaign, destination domain or site are
//! not sent to — no new transaction takes them — until released. Their slots
//! are untouched: a hold is not an outcome.
//!
//! Kept in `SPOOL/holds`, one rule a line (`campaign 12`, `domain
//! example.com`, `site mx.example.com`), written atomically by whoever holds
//! the spool (the daemon, or `volley queue hold` on a stopped spool), so a hold
//! survives a restart. The engine asks [`Holds::generation`] (one atomic load)
//! and reads the rules only when they changed.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::spool::Spool;
use crate::QueueError;

/// What a hold (or a purge) applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Every recipient of a campaign (its id).
    Campaign(u64),
    /// Recipients at a destination domain (lower case, no trailing dot).
    Domain(String),
    /// Recipients whose domain is served by a site: an MX host name, or a
    /// route's `via`, as `queue summary` and `/metrics` name it.
    Site(String),
}

impl Rule {
    /// The rule of `kind` (`campaign`, `domain`, `site`) and `value`, checked
    /// and normalised; the error says what is wrong.
    pub fn parse(kind: &str, value: &str) -> Result<Rule, String> {
        let value = value.trim();
        let name = || {
            let v = value.trim_end_matches('.').to_ascii_lowercase();
            let ok = !v.is_empty()
                && v.len() <= 255
                && v.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
                });
            if ok {
                Ok(v)
            } else {
                Err(format!("{value:?} is not a {kind} name"))
            }
        };
        match kind {
            "campaign" => value
                .parse::<u64>()
                .ok()
                .filter(|&id| id > 0)
                .map(Rule::Campaign)
                .ok_or_else(|| format!("{value:?} is not a campaign id")),
            "domain" => name().map(Rule::Domain),
            "site" => name().map(Rule::Site),
            _ => Err(format!(
                "{kind:?} is not something to hold: campaign, domain or site"
            )),
        }
    }

    /// Whether it covers a recipient of `campaign` at `domain` (lower case),
    /// sent through `site` when known.
    pub fn covers(&self, campaign: u64, domain: &str, site: Option<&str>) -> bool {
        match self {
            Rule::Campaign(id) => *id == campaign,
            Rule::Domain(d) => d.eq_ignore_ascii_case(domain),
            Rule::Site(s) => site.is_some_and(|site| site_matches(s, site)),
        }
    }

    /// `campaign`, `domain` or `site`.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::Campaign(_) => "campaign",
            Rule::Domain(_) => "domain",
            Rule::Site(_) => "site",
        }
    }

    /// The id or name it applies to.
    pub fn value(&self) -> String {
        match self {
            Rule::Campaign(id) => id.to_string(),
            Rule::Domain(d) | Rule::Site(d) => d.clone(),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.value())
    }
}

/// The rules in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldSet {
    rules: BTreeSet<Rule>,
    /// A fleet's purges under way: each rule holds the campaigns up to an
    /// id (those that existed when it was ordered) until the gateway has
    /// finalised them.
    purging: BTreeSet<(Rule, u64)>,
}

impl HoldSet {
    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.purging.is_empty()
    }

    /// The rules, in order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// Whether a recipient of `campaign` at `domain` (lower case), sent
    /// through `site` when known, is held.
    pub fn holds(&self, campaign: u64, domain: &str, site: Option<&str>) -> bool {
        self.rules.iter().any(|r| r.covers(campaign, domain, site))
            || self
                .purging
                .iter()
                .any(|(r, upto)| campaign <= *upto && r.covers(campaign, domain, site))
    }

    /// Whether the site of key `site` is held as a whole: a rule naming the
    /// key itself, one of its MX hosts (a key is their names joined by
    /// commas) or its route's `via` (a key `route:VIA`). (A purge under way
    /// holds only its campaigns' recipients: checked per recipient.)
    pub fn holds_site(&self, site: &str) -> bool {
        self.rules.iter().any(|r| match r {
            Rule::Site(s) => site_matches(s, site),
            _ => false,
        })
    }

    fn parse(text: &str, path: &Path) -> Result<HoldSet, QueueError> {
        let mut rules = BTreeSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (kind, value) = line.split_once(' ').unwrap_or((line, ""));
            let rule = Rule::parse(kind, value).map_err(|e| {
                QueueError::io(
                    "read",
                    path,
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("line {}: {e}", n + 1),
                    ),
                )
            })?;
            rules.insert(rule);
        }
        Ok(HoldSet {
            rules,
            purging: BTreeSet::new(),
        })
    }

    fn text(&self) -> String {
        let mut out =
            String::from("# volley queue holds: one rule a line (volley queue hold / release)\n");
        for r in &self.rules {
            out.push_str(&r.to_string());
            out.push('\n');
        }
        out
    }
}

/// Whether a rule's site `name` names the site of key `key`.
pub fn site_matches(name: &str, key: &str) -> bool {
    key.eq_ignore_ascii_case(name)
        || key
            .strip_prefix("route:")
            .is_some_and(|via| via.eq_ignore_ascii_case(name))
        || key.split(',').any(|host| host.eq_ignore_ascii_case(name))
}

/// The holds of a spool, shared by its writer and the delivery engine.
#[derive(Debug)]
pub struct Holds {
    path: PathBuf,
    set: RwLock<Arc<HoldSet>>,
    generation: AtomicU64,
}

impl Holds {
    /// Where a spool's holds are kept.
    pub fn path(root: &Path) -> PathBuf {
        root.join("holds")
    }

    /// The holds of the spool at `root` (none when the file is missing).
    pub fn open(root: &Path) -> Result<Holds, QueueError> {
        let path = Holds::path(root);
        let set = match std::fs::read_to_string(&path) {
            Ok(text) => HoldSet::parse(&text, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HoldSet::default(),
            Err(e) => return Err(QueueError::io("read", &path, e)),
        };
        Ok(Holds {
            path,
            set: RwLock::new(Arc::new(set)),
            generation: AtomicU64::new(1),
        })
    }

    /// No holds, kept nowhere (tests, `volley send` without a spool's holds).
    pub fn none() -> Holds {
        Holds {
            path: PathBuf::new(),
            set: RwLock::new(Arc::default()),
            generation: AtomicU64::new(1),
        }
    }

    /// Changes each time the rules do: a reader compares it with the one it
    /// read the rules at.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The rules now.
    pub fn snapshot(&self) -> Arc<HoldSet> {
        Arc::clone(&self.set.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Replaces the rules, in memory only (a fleet gateway's: the control
    /// plane's store keeps them); answers whether they changed.
    pub fn replace(
        &self,
        rules: impl IntoIterator<Item = Rule>,
        purging: impl IntoIterator<Item = (Rule, u64)>,
    ) -> bool {
        let next = HoldSet {
            rules: rules.into_iter().collect(),
            purging: purging.into_iter().collect(),
        };
        let mut guard = self.set.write().unwrap_or_else(PoisonError::into_inner);
        if **guard == next {
            return false;
        }
        *guard = Arc::new(next);
        self.generation.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Adds (`hold`) or removes a rule, durably through `spool` (which must
    /// be this holds' spool); answers whether anything changed.
    pub fn change(&self, spool: &Spool, rule: &Rule, hold: bool) -> Result<bool, QueueError> {
        let mut guard = self.set.write().unwrap_or_else(PoisonError::into_inner);
        let mut next = HoldSet::clone(&guard);
        let changed = if hold {
            next.rules.insert(rule.clone())
        } else {
            next.rules.remove(rule)
        };
        if changed {
            spool.write_atomic(&self.path, next.text().as_bytes())?;
            *guard = Arc::new(next);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_normalise() {
        let table: [(&str, &str, Result<Rule, &str>); 8] = [
            ("campaign", "12", Ok(Rule::Campaign(12))),
            ("campaign", "0", Err("not a campaign id")),
            ("campaign", "x", Err("not a campaign id")),
            (
                "domain",
                "Example.COM.",
                Ok(Rule::Domain("example.com".into())),
            ),
            ("domain", "a b", Err("not a domain name")),
            (
                "site",
                "mx1.example.com",
                Ok(Rule::Site("mx1.example.com".into())),
            ),
            (
                "site",
                "127.0.0.1:25",
                Ok(Rule::Site("127.0.0.1:25".into())),
            ),
            ("recipient", "a@b", Err("campaign, domain or site")),
        ];
        for (kind, value, want) in table {
            match (Rule::parse(kind, value), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{kind} {value}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{kind} {value}: {got}"),
                (got, want) => panic!("{kind} {value}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_set_holds_what_its_rules_say() {
        let set = HoldSet {
            rules: [
                Rule::Campaign(7),
                Rule::Domain("held.test".into()),
                Rule::Site("mx.slow.test".into()),
            ]
            .into(),
            purging: [(Rule::Domain("purged.test".into()), 100)].into(),
        };
        let table = [
            (7, "free.test", None, true),
            (8, "free.test", None, false),
            (8, "held.test", None, true),
            (8, "HELD.test", None, true),
            (8, "free.test", Some("mx.slow.test"), true),
            (8, "free.test", Some("mx.fast.test"), false),
            (8, "free.test", Some("mx.a.test,mx.slow.test"), true),
            (8, "free.test", Some("route:mx.slow.test"), true),
            (8, "free.test", Some("route:mx.slow.test:2525"), false),
            (8, "purged.test", None, true),
            (101, "purged.test", None, false),
        ];
        for (campaign, domain, site, want) in table {
            assert_eq!(
                set.holds(campaign, domain, site),
                want,
                "{campaign} {domain} {site:?}"
            );
        }
    }

    #[test]
    fn holds_survive_a_reopen_and_bump_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let holds = Holds::open(spool.root()).unwrap();
        let g0 = holds.generation();
        assert!(holds
            .change(&spool, &Rule::Domain("a.test".into()), true)
            .unwrap());
        assert!(!holds
            .change(&spool, &Rule::Domain("a.test".into()), true)
            .unwrap());
        assert!(holds.change(&spool, &Rule::Campaign(3), true).unwrap());
        assert!(holds.generation() > g0);
        let again = Holds::open(spool.root()).unwrap();
        assert_eq!(*again.snapshot(), *holds.snapshot());
        assert!(holds.change(&spool, &Rule::Campaign(3), false).unwrap());
        let again = Holds::open(spool.root()).unwrap();
        assert_eq!(again.snapshot().rules().count(), 1);
    }
}
