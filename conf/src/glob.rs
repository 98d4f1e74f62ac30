//! Domain and host-name patterns: `*` matches any run of characters (dots
//! included), `?` one character; matching ignores ASCII case.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A validated pattern such as `*.google.com` or `gmail.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob(String);

impl Glob {
    /// Parses a pattern: non-empty, no spaces or control characters.
    pub fn new(pattern: &str) -> Result<Glob, String> {
        if pattern.is_empty() {
            return Err("empty pattern".into());
        }
        if let Some(c) = pattern
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("pattern {pattern:?} contains {c:?}"));
        }
        Ok(Glob(pattern.trim_end_matches('.').to_ascii_lowercase()))
    }

    /// The pattern as written (lower-cased).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` (a domain or host name; a trailing dot is ignored) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        matches(self.0.as_bytes(), name.as_bytes())
    }
}

/// Iterative wildcard matching with one backtrack point: linear for one `*`,
/// never exponential. Hand-written: ~20 lines, smaller than a dependency.
fn matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Glob, D::Error> {
        let text = String::deserialize(de)?;
        Glob::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_like_a_shell_glob_ignoring_case() {
        let table = [
            ("gmail.com", "gmail.com", true),
            ("gmail.com", "GMAIL.COM.", true),
            ("gmail.com", "xgmail.com", false),
            ("*.google.com", "gmail-smtp-in.l.google.com", true),
            ("*.google.com", "google.com", false),
            ("*google.com", "google.com", true),
            ("*", "anything.test", true),
            ("mx?.test", "mx1.test", true),
            ("mx?.test", "mx10.test", false),
            ("*.*.test", "a.b.test", true),
            ("*.*.test", "a.test", false),
        ];
        for (pattern, name, expected) in table {
            assert_eq!(
                Glob::new(pattern).unwrap().matches(name),
                expected,
                "{pattern} ~ {name}"
            );
        }
    }

    #[test]
    fn refuses_empty_and_spaces() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("a b").is_err());
    }
}
