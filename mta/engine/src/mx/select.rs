//! The network-free parts of MX resolution: domain normalisation, interpreting an MX
//! RRset (null MX, implicit MX, ordering, de-duplication), shuffling hosts of equal
//! preference, and the site key.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_resolver::proto::rr::Name;

use super::MxHost;

/// The longest domain accepted, in presentation form without the trailing dot.
const MAX_DOMAIN_LEN: usize = 253;
/// The longest label accepted.
const MAX_LABEL_LEN: usize = 63;

/// A recipient domain after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormalizedDomain {
    /// Lower-case ASCII (IDNA labels as `xn--` punycode), no trailing dot: the cache key
    /// and [`Destination::domain`](super::Destination::domain).
    pub(crate) key: String,
    /// The same name, fully qualified, for queries (never subject to the search list).
    pub(crate) name: Name,
}

/// Normalises a recipient domain: strips one trailing dot, lower-cases, converts
/// unicode (IDNA) to punycode and checks RFC 5321 `Domain` syntax (LDH labels of at
/// most 63 octets, at most 253 octets in all). The error is a human-readable reason.
pub(crate) fn normalize_domain(input: &str) -> Result<NormalizedDomain, String> {
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() {
        return Err("empty domain".to_owned());
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        let name = Name::from_utf8(trimmed).map_err(|e| format!("not a valid IDNA name: {e}"))?;
        name.to_lowercase()
            .to_ascii()
            .trim_end_matches('.')
            .to_owned()
    };
    check_ldh(&ascii)?;
    let mut name = Name::from_ascii(&ascii).map_err(|e| format!("not a valid name: {e}"))?;
    name.set_fqdn(true);
    Ok(NormalizedDomain { key: ascii, name })
}

/// Checks RFC 5321 `Domain` syntax on a lower-case ASCII name without trailing dot.
fn check_ldh(domain: &str) -> Result<(), String> {
    if domain.len() > MAX_DOMAIN_LEN {
        return Err(format!("longer than {MAX_DOMAIN_LEN} characters"));
    }
    for label in domain.split('.') {
        if label.is_empty() {
            return Err("empty label".to_owned());
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!("label longer than {MAX_LABEL_LEN} characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
        {
            return Err(format!("invalid character {c:?}"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// The presentation form of a host name as used in [`MxHost::name`]: lower-case
/// ASCII, no trailing dot.
pub(crate) fn host_name(name: &Name) -> String {
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// What an MX RRset says about a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MxSet {
    /// RFC 7505 null MX: the only MX records have the root as exchange.
    Null,
    /// No MX records at all: fall back to the implicit MX (RFC 5321 §5.1).
    Empty,
    /// Exchanges sorted by preference (stable: equal preferences keep answer order),
    /// each exchange once (at its lowest preference), root exchanges removed.
    Hosts(Vec<(u16, Name)>),
}

/// Interprets the (preference, exchange) pairs of an MX answer.
///
/// A set made only of "." exchanges is a null MX (RFC 7505 asks for exactly one with
/// preference 0, but any set of only-root exchanges can only mean "no mail"); a "."
/// among real exchanges is ignored.
pub(crate) fn classify_mx(records: impl IntoIterator<Item = (u16, Name)>) -> MxSet {
    let mut saw_root = false;
    let mut hosts: Vec<(u16, Name)> = Vec::new();
    for (preference, exchange) in records {
        if exchange.is_root() {
            saw_root = true;
            continue;
        }
        hosts.push((preference, exchange));
    }
    if hosts.is_empty() {
        return if saw_root { MxSet::Null } else { MxSet::Empty };
    }
    hosts.sort_by_key(|(preference, _)| *preference);
    let mut seen: Vec<String> = Vec::with_capacity(hosts.len());
    hosts.retain(|(_, exchange)| {
        let key = host_name(exchange);
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
    MxSet::Hosts(hosts)
}

/// Shuffles each run of equal preference in `items` (which must already be sorted by
/// preference) in place; `below(n)` returns a random index in `0..n`.
pub(crate) fn shuffle_equal_preferences<T>(
    items: &mut [T],
    preference: impl Fn(&T) -> u16,
    below: &mut impl FnMut(usize) -> usize,
) {
    let mut start = 0;
    while start < items.len() {
        let pref = preference(&items[start]);
        let mut end = start + 1;
        while end < items.len() && preference(&items[end]) == pref {
            end += 1;
        }
        // Fisher-Yates over items[start..end].
        let group = &mut items[start..end];
        for i in (1..group.len()).rev() {
            let j = below(i + 1);
            group.swap(i, j);
        }
        start = end;
    }
}

/// The site key of a list of MX hosts: sorted, de-duplicated names joined with ",".
pub(crate) fn site_key(hosts: &[MxHost]) -> String {
    let mut names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

/// A small non-cryptographic PRNG (SplitMix64), enough to spread load over MX hosts.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded from std's per-process random hash keys, a global counter and
    /// the clock, so that every call site gets a different stream.
    pub(crate) fn from_entropy() -> SplitMix64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        if let Ok(now) = SystemTime::now().duration_since(UNIX_EPOCH) {
            hasher.write_u128(now.as_nanos());
        }
        SplitMix64(hasher.finish())
    }

    /// A generator with a fixed seed (tests).
    #[cfg(test)]
    pub(crate) fn with_seed(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random index in `0..n` (`n` > 0; the modulo bias is negligible for small `n`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n <= 1 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn name(s: &str) -> Name {
        match Name::from_ascii(s) {
            Ok(n) => n,
            Err(e) => panic!("bad test name {s}: {e}"),
        }
    }

    fn host(n: &str, preference: u16) -> MxHost {
        MxHost {
            name: n.to_owned(),
            preference,
            addrs: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        }
    }

    #[test]
    fn normalizes_case_and_trailing_dot() {
        let d = normalize_domain("Example.COM.").unwrap();
        assert_eq!(d.key, "example.com");
        assert!(d.name.is_fqdn());
        assert_eq!(d.name.to_ascii(), "example.com.");
        assert_eq!(normalize_domain("example.com").unwrap().key, "example.com");
    }

    #[test]
    fn unicode_domains_become_punycode() {
        let d = normalize_domain("Bücher.Example").unwrap();
        assert_eq!(d.key, "xn--bcher-kva.example");
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap().key,
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn rejects_invalid_domains() {
        for bad in [
            "",
            ".",
            "..",
            "a..b",
            ".example.com",
            "exa mple.com",
            "under_score.com",
            "-lead.com",
            "trail-.com",
            "[192.0.2.1]",
            "user@example.com",
            "example.com..",
            "a\\.b.com",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
        let long_label = format!("{}.com", "a".repeat(64));
        assert!(normalize_domain(&long_label).is_err());
        let long_name = ["abcdefghi"; 26].join(".");
        assert!(long_name.len() > 253);
        assert!(normalize_domain(&long_name).is_err());
        let ok_63 = format!("{}.com", "a".repeat(63));
        assert!(normalize_domain(&ok_63).is_ok());
    }

    #[test]
    fn host_names_are_lower_case_without_dot() {
        assert_eq!(host_name(&name("MX1.Example.COM.")), "mx1.example.com");
        assert_eq!(host_name(&name("mx1.example.com")), "mx1.example.com");
    }

    #[test]
    fn single_root_mx_is_null_mx() {
        assert_eq!(classify_mx([(0, Name::root())]), MxSet::Null);
        // Any set of root-only exchanges means no mail.
        assert_eq!(
            classify_mx([(10, Name::root()), (0, Name::root())]),
            MxSet::Null
        );
    }

    #[test]
    fn root_among_real_exchanges_is_ignored() {
        let set = classify_mx([(0, Name::root()), (10, name("mx.example.com."))]);
        assert_eq!(set, MxSet::Hosts(vec![(10, name("mx.example.com."))]));
    }

    #[test]
    fn no_records_means_implicit_mx() {
        assert_eq!(classify_mx([]), MxSet::Empty);
    }

    #[test]
    fn exchanges_are_sorted_and_deduplicated() {
        let set = classify_mx([
            (20, name("b.example.com.")),
            (10, name("a.example.com.")),
            (30, name("A.example.com.")),
            (10, name("c.example.com.")),
        ]);
        let MxSet::Hosts(hosts) = set else {
            panic!("expected hosts");
        };
        let got: Vec<(u16, String)> = hosts.iter().map(|(p, n)| (*p, host_name(n))).collect();
        assert_eq!(
            got,
            vec![
                (10, "a.example.com".to_owned()),
                (10, "c.example.com".to_owned()),
                (20, "b.example.com".to_owned()),
            ]
        );
    }

    #[test]
    fn shuffle_keeps_preference_order() {
        let mut rng = SplitMix64::with_seed(7);
        for _ in 0..200 {
            let mut hosts = vec![
                host("a", 5),
                host("b", 10),
                host("c", 10),
                host("d", 10),
                host("e", 20),
                host("f", 20),
            ];
            shuffle_equal_preferences(&mut hosts, |h| h.preference, &mut |n| rng.below(n));
            let prefs: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, vec![5, 10, 10, 10, 20, 20]);
            assert_eq!(hosts[0].name, "a");
            let mid: HashSet<&str> = hosts[1..4].iter().map(|h| h.name.as_str()).collect();
            assert_eq!(mid, HashSet::from(["b", "c", "d"]));
        }
    }

    #[test]
    fn shuffle_produces_every_order() {
        let mut rng = SplitMix64::with_seed(42);
        let mut seen = HashSet::new();
        for _ in 0..500 {
            let mut hosts = vec![host("a", 10), host("b", 10), host("c", 10)];
            shuffle_equal_preferences(&mut hosts, |h| h.preference, &mut |n| rng.below(n));
            seen.insert(
                hosts
                    .iter()
                    .map(|h| h.name.clone())
                    .collect::<Vec<_>>()
                    .join(""),
            );
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    #[test]
    fn entropy_seeds_differ() {
        let a = SplitMix64::from_entropy().next_u64();
        let b = SplitMix64::from_entropy().next_u64();
        assert_ne!(a, b);
    }

    #[test]
    fn site_key_is_sorted_and_deduplicated() {
        let hosts = vec![
            host("mx2.example.net", 10),
            host("mx1.example.net", 20),
            host("mx2.example.net", 30),
        ];
        assert_eq!(site_key(&hosts), "mx1.example.net,mx2.example.net");
        let other = vec![host("mx1.example.net", 5), host("mx2.example.net", 5)];
        assert_eq!(site_key(&hosts), site_key(&other));
        assert_eq!(site_key(&[]), "");
    }
}
