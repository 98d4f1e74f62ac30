//! One line of the suppression journal or snapshot, parsed and written (no I/O).
//! The format is in `FORMAT.md` beside this file.

use std::fmt::Write as _;

/// Which kind of bounce a `B` record counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BounceKind {
    /// A permanent failure (5xx, DSN action `failed`).
    Hard,
    /// A temporary failure that was given up on, or a 4xx DSN.
    Soft,
}

impl BounceKind {
    fn letter(self) -> char {
        match self {
            BounceKind::Hard => 'h',
            BounceKind::Soft => 's',
        }
    }
}

/// A record, borrowing its text from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    /// `A`: suppress `address` for `domain` (kept if already there).
    Add {
        since: u64,
        domain: &'a str,
        address: &'a str,
        reason: &'a str,
        detail: &'a str,
    },
    /// `R`: lift the suppression of `address` for `domain` (exactly that domain).
    Remove {
        at: u64,
        domain: &'a str,
        address: &'a str,
    },
    /// `B`: one bounce of `address` for mail from `domain`.
    Bounce {
        at: u64,
        domain: &'a str,
        address: &'a str,
        kind: BounceKind,
    },
}

/// First line of a snapshot: magic, format version, generation.
pub(crate) const SNAPSHOT_MAGIC: &str = "volley-suppress";
/// The format version this code writes and reads.
pub(crate) const VERSION: u32 = 1;

/// Parses the snapshot's first line into its generation.
pub(crate) fn parse_header(line: &str) -> Result<u64, String> {
    let mut parts = line.split(' ');
    if parts.next() != Some(SNAPSHOT_MAGIC) {
        return Err(format!("not a suppression snapshot (first line {line:?})"));
    }
    let version = parts.next().unwrap_or_default();
    if version != VERSION.to_string() {
        return Err(format!(
            "format version {version:?} is not supported (this volley reads {VERSION})"
        ));
    }
    let generation = parts
        .next()
        .and_then(|g| g.parse::<u64>().ok())
        .ok_or_else(|| format!("bad generation in {line:?}"))?;
    if parts.next().is_some() {
        return Err(format!("trailing fields in {line:?}"));
    }
    Ok(generation)
}

/// The snapshot's first line, with its line end.
pub(crate) fn header(generation: u64) -> String {
    format!("{SNAPSHOT_MAGIC} {VERSION} {generation}\n")
}

/// Parses one line (without its `\n`).
pub(crate) fn parse(line: &str) -> Result<Record<'_>, String> {
    if line.is_empty() {
        return Err("empty line".to_owned());
    }
    // At most 6 fields; one more tells "too many" (no allocation per line).
    let mut slots = [""; 7];
    let mut n = 0;
    for field in line.split('\t') {
        if n == slots.len() {
            break;
        }
        slots[n] = field;
        n += 1;
    }
    let fields = &slots[..n];
    let time = |text: &str| {
        text.parse::<u64>()
            .map_err(|_| format!("bad time {text:?}"))
    };
    let text = |name: &str, value: &str| {
        if value.chars().any(char::is_control) {
            Err(format!("control character in the {name}"))
        } else {
            Ok(())
        }
    };
    let key = |domain: &str, address: &str| {
        if domain.is_empty() {
            return Err("empty domain".to_owned());
        }
        if address.is_empty() || !address.contains('@') {
            return Err(format!("bad address {address:?}"));
        }
        text("domain", domain)?;
        text("address", address)
    };
    match fields {
        ["A", since, domain, address, reason, detail] => {
            key(domain, address)?;
            text("reason", reason)?;
            text("detail", detail)?;
            Ok(Record::Add {
                since: time(since)?,
                domain,
                address,
                reason,
                detail,
            })
        }
        ["R", at, domain, address] => {
            key(domain, address)?;
            Ok(Record::Remove {
                at: time(at)?,
                domain,
                address,
            })
        }
        ["B", at, domain, address, kind] => {
            key(domain, address)?;
            let kind = match *kind {
                "h" => BounceKind::Hard,
                "s" => BounceKind::Soft,
                other => return Err(format!("bad bounce kind {other:?}")),
            };
            Ok(Record::Bounce {
                at: time(at)?,
                domain,
                address,
                kind,
            })
        }
        _ => Err(format!(
            "unknown record {:?} or wrong number of fields ({}{})",
            fields.first().copied().unwrap_or_default(),
            fields.len(),
            if n == slots.len() { " or more" } else { "" }
        )),
    }
}

impl Record<'_> {
    /// Appends the line, with its `\n`, to `out`. Fields must hold no tab, CR or
    /// LF (the store checks addresses and domains and cleans reasons and details).
    pub(crate) fn write(&self, out: &mut String) {
        // Writing to a String cannot fail.
        let _ = match *self {
            Record::Add {
                since,
                domain,
                address,
                reason,
                detail,
            } => writeln!(out, "A\t{since}\t{domain}\t{address}\t{reason}\t{detail}"),
            Record::Remove {
                at,
                domain,
                address,
            } => writeln!(out, "R\t{at}\t{domain}\t{address}"),
            Record::Bounce {
                at,
                domain,
                address,
                kind,
            } => writeln!(out, "B\t{at}\t{domain}\t{address}\t{}", kind.letter()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip_as_tab_separated_lines() {
        let records = [
            Record::Add {
                since: 1_700_000_000,
                domain: "*",
                address: "a@x.test",
                reason: "hard_bounce",
                detail: "5.1.1",
            },
            Record::Add {
                since: 0,
                domain: "acme.test",
                address: "δοκιμή@παράδειγμα.δοκιμή",
                reason: "asked by phone",
                detail: "",
            },
            Record::Remove {
                at: 5,
                domain: "acme.test",
                address: "a@x.test",
            },
            Record::Bounce {
                at: 7,
                domain: "acme.test",
                address: "a@x.test",
                kind: BounceKind::Soft,
            },
        ];
        let mut text = String::new();
        for r in &records {
            r.write(&mut text);
        }
        assert_eq!(
            text.lines().next(),
            Some("A\t1700000000\t*\ta@x.test\thard_bounce\t5.1.1")
        );
        let parsed: Vec<Record<'_>> = text.lines().map(|l| parse(l).unwrap()).collect();
        assert_eq!(parsed, records);
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for (line, why) in [
            ("", "empty line"),
            ("A\t1\t*\ta@x.test\tmanual", "wrong number of fields (5)"),
            ("X\t1\t*\ta@x.test", "unknown record \"X\""),
            (
                "R\t1\t*\ta@x.test\t\t\t\t\t",
                "wrong number of fields (7 or more)",
            ),
            ("R\tsoon\t*\ta@x.test", "bad time \"soon\""),
            ("R\t1\t\ta@x.test", "empty domain"),
            ("R\t1\t*\tnobody", "bad address"),
            ("B\t1\t*\ta@x.test\tq", "bad bounce kind"),
            (
                "A\t1\t*\ta@x.test\tman\rual\t",
                "control character in the reason",
            ),
            // A torn line: the end of the address is missing, and so are the fields.
            ("A\t1700000000\t*\tuser@exa", "wrong number of fields (4)"),
        ] {
            let err = parse(line).unwrap_err();
            assert!(err.contains(why), "{line:?}: {err}");
        }
    }

    #[test]
    fn snapshot_headers() {
        assert_eq!(parse_header(header(42).trim_end()), Ok(42));
        assert!(parse_header("volley-suppress 2 1")
            .unwrap_err()
            .contains("version \"2\""));
        assert!(parse_header("A\t1\t*\ta@x.test\tm\t")
            .unwrap_err()
            .contains("not a suppression snapshot"));
    }

    proptest! {
        #[test]
        fn any_line_parses_or_fails_without_panicking(line in "\\PC{0,80}|[ABR\t0-9a-z@.*]{0,60}") {
            let _ = parse(&line);
            let _ = parse_header(&line);
        }
    }
}
