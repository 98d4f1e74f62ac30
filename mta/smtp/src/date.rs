//! Dates as mail writes them: the RFC 5322 `Date:` / `Received:` form, and the
//! civil calendar under it (shared with the delivery log's RFC 3339 timestamps).

use bytes::{BufMut, BytesMut};

use crate::decimal::put_decimal;

/// Writes an RFC 5322 date-time in UTC, `Thu, 01 Jan 1970 00:00:00 +0000`, for
/// `secs` since the Unix epoch.
pub fn write_date(secs: u64, out: &mut BytesMut) {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // u64::MAX seconds is ~2.1e14 days: well inside i64.
    let (year, month, day) = civil_from_days(days as i64);
    out.put_slice(DAYS[(days % 7) as usize]);
    out.put_slice(b", ");
    put_decimal(out, u64::from(day), 2);
    out.put_u8(b' ');
    out.put_slice(MONTHS[(month as usize).saturating_sub(1) % 12]);
    out.put_u8(b' ');
    put_decimal(out, year.max(0) as u64, 4);
    out.put_u8(b' ');
    put_decimal(out, rem / 3600, 2);
    out.put_u8(b':');
    put_decimal(out, rem / 60 % 60, 2);
    out.put_u8(b':');
    put_decimal(out, rem % 60, 2);
    out.put_slice(b" +0000");
}

/// The civil date (year, month 1-12, day 1-31) of `z` days since 1970-01-01
/// (Howard Hinnant's algorithm; negative `z` are days before).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(secs: u64) -> String {
        let mut out = BytesMut::new();
        write_date(secs, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn dates() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 +0000");
        assert_eq!(date(1_735_689_599), "Tue, 31 Dec 2024 23:59:59 +0000");
        assert_eq!(date(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 +0000");
        // Far future: no panic, a 4+ digit year.
        assert!(date(u64::MAX).ends_with("+0000"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
