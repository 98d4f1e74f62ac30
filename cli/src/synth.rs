//! Synthetic recipients for benchmarks and the demo: deterministic, realistic sizes.

/// The merge fields every synthetic recipient has.
pub const FIELDS: [&str; 5] = ["first_name", "last_name", "city", "company", "customer_id"];

const FIRST: [&str; 24] = [
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Oliver", "Sophia", "Elijah", "Isabella", "Lucas",
    "Mia", "Mateo", "Amelia", "Léa", "Harper", "Jürgen", "Evelyn", "Chloé", "Aarav", "Yuki",
    "Fatima", "Santiago", "Ingrid", "Kwame",
];
const LAST: [&str; 24] = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernández",
    "Lopez",
    "Müller",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Nakamura",
    "O'Brien",
    "Kowalski",
    "Dubois",
    "Rossi",
];
const CITIES: [&str; 16] = [
    "New York",
    "London",
    "Paris",
    "Berlin",
    "Madrid",
    "Toronto",
    "Sydney",
    "São Paulo",
    "Chicago",
    "Amsterdam",
    "Zürich",
    "Tokyo",
    "Austin",
    "Dublin",
    "Lyon",
    "Seattle",
];
const COMPANIES: [&str; 12] = [
    "Acme Corp",
    "Globex",
    "Initech",
    "Umbrella Ltd",
    "Hooli",
    "Stark Industries",
    "Wayne Enterprises",
    "Vandelay Imports",
    "Soylent Inc",
    "Wonka GmbH",
    "Tyrell",
    "Cyberdyne",
];
/// Mailbox providers and their share (per mille) of a consumer list; the rest goes
/// to `company<k>.example` domains.
const PROVIDERS: [(&str, u64); 6] = [
    ("gmail.com", 380),
    ("yahoo.com", 120),
    ("outlook.com", 90),
    ("hotmail.com", 60),
    ("icloud.com", 50),
    ("aol.com", 20),
];
const SMALL_DOMAINS: u64 = 1000;

/// A deterministic generator (splitmix64): the same seed gives the same list.
#[derive(Debug, Clone)]
pub struct Synth {
    state: u64,
}

impl Synth {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Synth {
        Synth { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[(self.next() % list.len() as u64) as usize]
    }

    /// How `n` recipients spread over destination domains, sorted by domain name
    /// (the order partitioning writes them in).
    pub fn domain_counts(&mut self, n: u64) -> Vec<(String, u64)> {
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for _ in 0..n {
            let mut roll = self.next() % 1000;
            let mut domain = None;
            for (name, share) in PROVIDERS {
                if roll < share {
                    domain = Some(name.to_owned());
                    break;
                }
                roll -= share;
            }
            let domain =
                domain.unwrap_or_else(|| format!("company{}.example", self.next() % SMALL_DOMAINS));
            *counts.entry(domain).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Recipient number `i` at `domain`: its address and five merge values.
    pub fn recipient(&mut self, i: u64, domain: &str) -> (String, [String; 5]) {
        let first = self.pick(&FIRST);
        let last = self.pick(&LAST);
        let local: String = format!("{first}.{last}{i}")
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .chain(std::iter::once('.'))
            .collect::<String>()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let values = [
            first.to_owned(),
            last.to_owned(),
            self.pick(&CITIES).to_owned(),
            self.pick(&COMPANIES).to_owned(),
            format!("C{:08}", self.next() % 100_000_000),
        ];
        (format!("{local}@{domain}"), values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_deterministic_and_sorted() {
        let a = Synth::new(1).domain_counts(5000);
        let b = Synth::new(1).domain_counts(5000);
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|(_, c)| c).sum::<u64>(), 5000);
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0));
        let gmail = a
            .iter()
            .find(|(d, _)| d == "gmail.com")
            .map(|(_, c)| *c)
            .unwrap_or(0);
        assert!((1600..2200).contains(&gmail), "{gmail}");
    }

    #[test]
    fn addresses_are_plain_ascii() {
        let mut s = Synth::new(7);
        for i in 0..200 {
            let (address, values) = s.recipient(i, "example.com");
            assert!(address.is_ascii(), "{address}");
            assert_eq!(address.matches('@').count(), 1);
            assert!(values.iter().all(|v| !v.is_empty()));
        }
    }
}
