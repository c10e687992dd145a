//! UTC timestamps with millisecond precision, formatted as WIRE.md fixes them
//! (`2026-11-27T22:05:20.213Z`). Owns formatting and parsing; knows nothing of
//! tasks.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `TASKTAPE_CLOCK_SKEW_MS`, read once (0 when unset or not an integer).
fn skew() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var("TASKTAPE_CLOCK_SKEW_MS")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0)
    })
}

/// A UTC instant, in whole milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time, truncated to the millisecond (moved by
    /// `TASKTAPE_CLOCK_SKEW_MS` when that is set: a testing knob that plays a
    /// machine whose clock is off; never set it in production).
    pub fn now() -> Self {
        let millis = match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => i64::try_from(since.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        Timestamp(millis.saturating_add(skew()))
    }

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// This instant moved by `millis` milliseconds (saturating).
    pub const fn add_millis(self, millis: i64) -> Self {
        Timestamp(self.0.saturating_add(millis))
    }

    /// Parses an RFC 3339 time, `YYYY-MM-DDTHH:MM:SS[.fff…]` then `Z` or an
    /// offset `±HH:MM` (converted to UTC; `T` and `Z` in either case);
    /// extra fraction digits are truncated.
    pub fn parse(text: &str) -> Option<Self> {
        let (bytes, offset_minutes) = split_offset(text.as_bytes())?;
        if bytes.len() < 19 {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = bytes.get(range)?;
            part.iter().try_fold(0i64, |acc, &b| {
                b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
            })
        };
        if bytes[4] != b'-'
            || bytes[7] != b'-'
            || !bytes[10].eq_ignore_ascii_case(&b'T')
            || bytes[13] != b':'
        {
            return None;
        }
        if bytes[16] != b':' {
            return None;
        }
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let rest = &bytes[19..];
        let millis = match rest {
            [] => 0,
            [b'.', fraction @ ..] if !fraction.is_empty() => {
                if !fraction.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let mut millis = 0i64;
                for index in 0..3 {
                    let digit = fraction.get(index).map_or(0, |b| i64::from(b - b'0'));
                    millis = millis * 10 + digit;
                }
                millis
            }
            _ => return None,
        };
        let days = days_from_civil(year, month, day);
        let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
        Some(Timestamp(seconds * 1000 + millis))
    }

    /// Writes the WIRE.md form into `out` (24 bytes for years 0..=9999).
    pub fn write_to(self, out: &mut String) {
        let millis = self.0.rem_euclid(1000);
        let seconds = self.0.div_euclid(1000);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let mut buf = [0u8; 24];
        put(&mut buf[0..4], year);
        buf[4] = b'-';
        put(&mut buf[5..7], month);
        buf[7] = b'-';
        put(&mut buf[8..10], day);
        buf[10] = b'T';
        put(&mut buf[11..13], second_of_day / 3600);
        buf[13] = b':';
        put(&mut buf[14..16], second_of_day / 60 % 60);
        buf[16] = b':';
        put(&mut buf[17..19], second_of_day % 60);
        buf[19] = b'.';
        put(&mut buf[20..23], millis);
        buf[23] = b'Z';
        // Every byte written above is ASCII.
        out.push_str(std::str::from_utf8(&buf).unwrap_or("1970-01-01T00:00:00.000Z"));
    }
}

/// The time without its zone, and the zone's offset east of UTC in
/// minutes: `Z`/`z` is 0, `+HH:MM`/`-HH:MM` (hours 0–23, minutes 0–59).
fn split_offset(bytes: &[u8]) -> Option<(&[u8], i64)> {
    if let Some(time) = bytes
        .strip_suffix(b"Z")
        .or_else(|| bytes.strip_suffix(b"z"))
    {
        return Some((time, 0));
    }
    let split = bytes.len().checked_sub(6)?;
    let (time, zone) = bytes.split_at(split);
    let sign = match zone[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    if zone[3] != b':' || !zone[1..3].iter().chain(&zone[4..6]).all(u8::is_ascii_digit) {
        return None;
    }
    let number = |pair: &[u8]| i64::from(pair[0] - b'0') * 10 + i64::from(pair[1] - b'0');
    let (hours, minutes) = (number(&zone[1..3]), number(&zone[4..6]));
    if hours > 23 || minutes > 59 {
        return None;
    }
    Some((time, sign * (hours * 60 + minutes)))
}

fn put(slot: &mut [u8], mut value: i64) {
    value = value.clamp(0, 10i64.pow(slot.len() as u32) - 1);
    for byte in slot.iter_mut().rev() {
        *byte = b'0' + (value % 10) as u8;
        value /= 10;
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

// Howard Hinnant's civil-date algorithms (public domain).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(24);
        self.write_to(&mut text);
        f.write_str(&text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Timestamp::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid timestamp {text:?}: want 2026-01-31T12:00:00.000Z"
            ))
        })
    }
}

/// In the OpenAPI description a timestamp is an RFC 3339 string (UTC).
#[cfg(feature = "utoipa")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::DateTime,
            )))
            .into()
    }
}

#[cfg(feature = "utoipa")]
impl utoipa::ToSchema for Timestamp {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_the_wire_sample() {
        let ts = Timestamp::parse("2026-11-27T22:05:20.213Z").unwrap();
        assert_eq!(ts.to_string(), "2026-11-27T22:05:20.213Z");
        assert_eq!(
            Timestamp::from_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn round_trips_every_day_across_leap_years() {
        let mut day = -700_000i64;
        while day < 2_900_000 {
            let ts = Timestamp::from_millis(day * 86_400_000 + 45_296_789);
            assert_eq!(Timestamp::parse(&ts.to_string()), Some(ts), "day {day}");
            day += 37;
        }
    }

    #[test]
    fn any_rfc_3339_offset_is_read_as_utc() {
        let utc = Timestamp::parse("2026-11-27T22:05:20.213Z").unwrap();
        for same in [
            "2026-11-27T22:05:20.213+00:00",
            "2026-11-27T22:05:20.213-00:00",
            "2026-11-28T00:05:20.213+02:00",
            "2026-11-27T16:35:20.213-05:30",
            "2026-11-27t22:05:20.213z",
            "2026-11-28T07:05:20.213+09:00",
        ] {
            assert_eq!(Timestamp::parse(same), Some(utc), "{same}");
        }
        // Across a day and a year.
        assert_eq!(
            Timestamp::parse("2027-01-01T01:00:00+02:00"),
            Timestamp::parse("2026-12-31T23:00:00Z")
        );
        for bad in [
            "2026-11-27T22:05:20+0200",
            "2026-11-27T22:05:20+24:00",
            "2026-11-27T22:05:20+02:60",
            "2026-11-27T22:05:20 02:00",
            "2026-11-27T22:05:20+2:00",
            "2026-11-27T22:05:20",
            "+02:00",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_truncates_extra_fraction_and_rejects_garbage() {
        assert_eq!(
            Timestamp::parse("2026-11-27T22:05:20.213999Z"),
            Timestamp::parse("2026-11-27T22:05:20.213Z")
        );
        assert_eq!(
            Timestamp::parse("2026-11-27T22:05:20Z").map(Timestamp::as_millis),
            Timestamp::parse("2026-11-27T22:05:20.000Z").map(Timestamp::as_millis)
        );
        for bad in [
            "",
            "2026-11-27",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-11-27T22:05:20.Z",
            "2026-11-27 22:05:20Z",
            "2026-11-27T22:05:20.2x3Z",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }
}
