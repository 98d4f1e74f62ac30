//! Duration keys: humantime strings such as `"1s"`, `"250ms"` or `"1h 30m"`,
//! with an allowed range checked inside the deserializer (see `integer.rs`).

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

use humantime::format_duration;
use serde::de::{self, Deserializer, Visitor};

const EXPECTED: &str = r#"a time span like "1s" or "250ms""#;

/// Deserializes a humantime string and checks that it lies in `range`.
///
/// Errors: `invalid duration "fast": expected a time span like "1s" or "250ms"
/// (<humantime's reason>)` or `2h is out of range: allowed 0s..=1h`. Bare
/// numbers are rejected: the unit must be explicit.
pub(crate) fn in_range<'de, D>(de: D, range: RangeInclusive<Duration>) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    de.deserialize_str(InRange(range))
}

/// Deserializes a list of humantime strings, each checked against `range`, and
/// the list against `len` (number of entries).
pub(crate) fn list_in_range<'de, D>(
    de: D,
    range: RangeInclusive<Duration>,
    len: RangeInclusive<usize>,
) -> Result<Vec<Duration>, D::Error>
where
    D: Deserializer<'de>,
{
    de.deserialize_seq(ListInRange { range, len })
}

struct ListInRange {
    range: RangeInclusive<Duration>,
    len: RangeInclusive<usize>,
}

impl<'de> Visitor<'de> for ListInRange {
    type Value = Vec<Duration>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a list of time spans like [\"5m\", \"1h\"]")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Duration>, A::Error> {
        let mut out = Vec::new();
        while let Some(value) = seq.next_element_seed(InRange(self.range.clone()))? {
            out.push(value);
        }
        if !self.len.contains(&out.len()) {
            return Err(de::Error::custom(format!(
                "{} entries: allowed {}..={}",
                out.len(),
                self.len.start(),
                self.len.end()
            )));
        }
        Ok(out)
    }
}

impl<'de> de::DeserializeSeed<'de> for InRange {
    type Value = Duration;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Duration, D::Error> {
        de.deserialize_str(self)
    }
}

struct InRange(RangeInclusive<Duration>);

impl Visitor<'_> for InRange {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        let value = humantime::parse_duration(text).map_err(|err| {
            E::custom(format!(
                "invalid duration {text:?}: expected {EXPECTED} ({err})"
            ))
        })?;
        if self.0.contains(&value) {
            Ok(value)
        } else {
            Err(E::custom(format!(
                "{text} is out of range: allowed {}..={}",
                format_duration(*self.0.start()),
                format_duration(*self.0.end())
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn parse(text: &str) -> Result<Duration, String> {
        let de: StrDeserializer<Error> = text.into_deserializer();
        in_range(de, Duration::ZERO..=HOUR).map_err(|err| err.to_string())
    }

    #[test]
    fn spans() {
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(HOUR));
    }

    #[test]
    fn errors() {
        assert_eq!(
            parse("1h 1ms"),
            Err("1h 1ms is out of range: allowed 0s..=1h".into())
        );
        assert_eq!(
            parse(""),
            Err(r#"invalid duration "": expected a time span like "1s" or "250ms" (value was empty)"#.into())
        );
        assert_eq!(
            parse("5 parsecs"),
            Err(r#"invalid duration "5 parsecs": expected a time span like "1s" or "250ms" (unknown time unit "parsecs", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations))"#.into())
        );
    }
}
