//! Integer keys with an allowed range.
//!
//! The range is checked inside the deserializer, so the error carries the
//! position of the offending value. Each key gets a one-line
//! `deserialize_with` function that calls [`in_range`] with its range.

use std::fmt;
use std::marker::PhantomData;
use std::ops::RangeInclusive;

use serde::de::{self, Deserializer, Visitor};

/// Deserializes an integer and checks that it lies in `range`.
///
/// Errors: `0 is out of range: allowed 1..=100000`, or for a non-integer,
/// `invalid type: string "ten", expected an integer in 1..=100000`.
pub(crate) fn in_range<'de, D, T>(de: D, range: RangeInclusive<T>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128> + PartialOrd + fmt::Display,
{
    de.deserialize_any(InRange {
        range,
        marker: PhantomData,
    })
}

struct InRange<T> {
    range: RangeInclusive<T>,
    marker: PhantomData<T>,
}

impl<T> InRange<T>
where
    T: TryFrom<i128> + PartialOrd + fmt::Display,
{
    fn check<E: de::Error>(self, value: impl Into<i128> + fmt::Display + Copy) -> Result<T, E> {
        match T::try_from(value.into()) {
            Ok(converted) if self.range.contains(&converted) => Ok(converted),
            _ => Err(E::custom(format!(
                "{value} is out of range: allowed {}..={}",
                self.range.start(),
                self.range.end()
            ))),
        }
    }
}

impl<T> Visitor<'_> for InRange<T>
where
    T: TryFrom<i128> + PartialOrd + fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an integer in {}..={}",
            self.range.start(),
            self.range.end()
        )
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        self.check(value)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        self.check(value)
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<T, E> {
        self.check(value)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<T, E> {
        match i128::try_from(value) {
            Ok(value) => self.check(value),
            // Larger than any range we could hold.
            Err(_) => Err(E::custom(format!(
                "{value} is out of range: allowed {}..={}",
                self.range.start(),
                self.range.end()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::de::value::{Error, I64Deserializer, StrDeserializer, U64Deserializer};
    use serde::de::IntoDeserializer;

    use super::*;

    fn int(value: i64, range: RangeInclusive<u8>) -> Result<u8, String> {
        let de: I64Deserializer<Error> = value.into_deserializer();
        in_range(de, range).map_err(|err| err.to_string())
    }

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(int(1, 1..=3), Ok(1));
        assert_eq!(int(3, 1..=3), Ok(3));
        assert_eq!(
            int(0, 1..=3),
            Err("0 is out of range: allowed 1..=3".into())
        );
        assert_eq!(
            int(4, 1..=3),
            Err("4 is out of range: allowed 1..=3".into())
        );
    }

    #[test]
    fn values_beyond_the_type_are_out_of_range() {
        assert_eq!(
            int(256, 0..=255),
            Err("256 is out of range: allowed 0..=255".into())
        );
        assert_eq!(
            int(-1, 0..=255),
            Err("-1 is out of range: allowed 0..=255".into())
        );
        let de: U64Deserializer<Error> = u64::MAX.into_deserializer();
        assert_eq!(
            in_range(de, 0..=i64::MAX).map_err(|err| err.to_string()),
            Err("18446744073709551615 is out of range: allowed 0..=9223372036854775807".into())
        );
    }

    #[test]
    fn other_types_are_rejected() {
        let de: StrDeserializer<Error> = "ten".into_deserializer();
        assert_eq!(
            in_range(de, 1..=10u32).map_err(|err| err.to_string()),
            Err("invalid type: string \"ten\", expected an integer in 1..=10".into())
        );
    }
}
