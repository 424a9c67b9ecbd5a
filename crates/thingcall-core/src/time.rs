//! Epoch milliseconds and the timestamp formats Alibaba puts on the wire.
//!
//! * `Timestamp` / `x-acs-date`: `yyyy-MM-ddTHH:mm:ssZ` (UTC, no fraction).
//! * `Utc*` fields: `yyyy-MM-ddTHH:mm:ss.SSSZ`.
//! * `Gmt*` fields: `yyyy-MM-dd HH:mm:ss` in UTC+8, despite the name.
//!
//! The conversions use the days-from-civil algorithm, so no date library and
//! no clock are needed.

use std::fmt::Write as _;

/// Milliseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(i64);

const MS_PER_DAY: i64 = 86_400_000;

impl UnixMillis {
    /// Wraps a millisecond count.
    pub const fn new(millis: i64) -> UnixMillis {
        UnixMillis(millis)
    }

    /// Whole seconds since the epoch.
    pub const fn from_secs(secs: i64) -> UnixMillis {
        UnixMillis(secs.saturating_mul(1000))
    }

    /// The millisecond count.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Adds a (possibly negative) number of milliseconds, saturating.
    pub const fn add_millis(self, millis: i64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(millis))
    }

    /// Parses `yyyy-MM-ddTHH:mm:ssZ` exactly (the `Timestamp` parameter and
    /// the `x-acs-date` header). Anything else is `None`.
    pub fn parse_iso8601_seconds(s: &str) -> Option<UnixMillis> {
        let b = s.as_bytes();
        if b.len() != 20
            || b[4] != b'-'
            || b[7] != b'-'
            || b[10] != b'T'
            || b[13] != b':'
            || b[16] != b':'
            || b[19] != b'Z'
        {
            return None;
        }
        let num = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = &b[range];
            if !part.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(
                part.iter()
                    .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')),
            )
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return None;
        }
        let days = days_from_civil(year, month, day);
        Some(UnixMillis(
            days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000,
        ))
    }

    /// `yyyy-MM-ddTHH:mm:ssZ`.
    pub fn to_iso8601_seconds(self) -> String {
        let p = Parts::of(self.0);
        let mut s = String::with_capacity(20);
        let _ = write!(
            s,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            p.year, p.month, p.day, p.hour, p.minute, p.second
        );
        s
    }

    /// `yyyy-MM-ddTHH:mm:ss.SSSZ` (the `Utc*` response fields).
    pub fn to_iso8601_millis(self) -> String {
        let p = Parts::of(self.0);
        let mut s = String::with_capacity(24);
        let _ = write!(
            s,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            p.year, p.month, p.day, p.hour, p.minute, p.second, p.millis
        );
        s
    }

    /// `yyyy-MM-dd HH:mm:ss` in UTC+8 (the `Gmt*` response fields).
    pub fn to_gmt8(self) -> String {
        let p = Parts::of(self.0.saturating_add(8 * 3_600_000));
        let mut s = String::with_capacity(19);
        let _ = write!(
            s,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            p.year, p.month, p.day, p.hour, p.minute, p.second
        );
        s
    }
}

struct Parts {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
}

impl Parts {
    fn of(millis: i64) -> Parts {
        let days = millis.div_euclid(MS_PER_DAY);
        let rem = millis.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        Parts {
            year,
            month,
            day,
            hour: rem / 3_600_000,
            minute: rem / 60_000 % 60,
            second: rem / 1000 % 60,
            millis: rem % 1000,
        }
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days, proleptic Gregorian.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_timestamps() {
        let t = UnixMillis::parse_iso8601_seconds("2016-02-23T12:46:24Z").unwrap();
        assert_eq!(t.get(), 1_456_231_584_000);
        assert_eq!(t.to_iso8601_seconds(), "2016-02-23T12:46:24Z");
        let t = UnixMillis::new(1_578_466_028_000); // the QueryDeviceDetail example
        assert_eq!(t.to_gmt8(), "2020-01-08 14:47:08");
        assert_eq!(t.to_iso8601_millis(), "2020-01-08T06:47:08.000Z");
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "2016-02-23T12:46:24",
            "2016-02-23 12:46:24Z",
            "2016-02-30T12:46:24Z",
            "2015-02-29T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "2016-02-23T24:00:00Z",
            "2016-02-23T12:46:24.000Z",
            "+016-02-23T12:46:24Z",
            "２016-02-23T12:46:24Z",
        ] {
            assert_eq!(UnixMillis::parse_iso8601_seconds(bad), None, "{bad}");
        }
        assert!(UnixMillis::parse_iso8601_seconds("2016-02-29T00:00:00Z").is_some());
    }

    proptest! {
        #[test]
        fn seconds_round_trip(secs in 0i64..253_402_300_799) {
            let t = UnixMillis::from_secs(secs);
            prop_assert_eq!(UnixMillis::parse_iso8601_seconds(&t.to_iso8601_seconds()), Some(t));
        }

        #[test]
        fn parser_never_panics(s in ".{0,24}") {
            let _ = UnixMillis::parse_iso8601_seconds(&s);
        }
    }
}
