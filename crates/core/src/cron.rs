//! Five-field cron expressions (minute hour day-of-month month
//! day-of-week), read on a time zone's wall clock, and the schedules of
//! `[schedules.NAME]` that use them.
//!
//! Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists
//! `a,b`, month names `jan`–`dec` and weekday names `sun`–`sat` (Sunday is
//! 0 or 7). As in classic cron, when both day fields are restricted either
//! may match, and when one starts with `*` both must. A wall-clock time a
//! daylight-saving change skips is moved forward by the gap (02:30 → 03:30);
//! one it repeats fires once, at its first occurrence.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

use crate::time::Timestamp;

/// A parsed expression: a bit per value each field accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    any_day: bool,
    any_weekday: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// How far ahead [`Cron::next_after`] looks (a 29 February may be 8 years off).
const SEARCH_DAYS: i32 = 8 * 366 + 2;

impl Cron {
    /// Parses `text`; the error names the field and what is wrong.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{text:?} has {} fields; a cron expression has five: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        }
        let (minutes, _) = field(fields[0], "minute", 0, 59, &[], 0)?;
        let (hours, _) = field(fields[1], "hour", 0, 23, &[], 0)?;
        let (days, any_day) = field(fields[2], "day-of-month", 1, 31, &[], 1)?;
        let (months, _) = field(fields[3], "month", 1, 12, &MONTHS, 1)?;
        let (mut weekdays, any_weekday) = field(fields[4], "day-of-week", 0, 7, &WEEKDAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays & !(1 << 7)) | 1;
        }
        Ok(Cron {
            text: fields.join(" "),
            minutes,
            hours,
            days,
            months,
            weekdays,
            any_day,
            any_weekday,
        })
    }

    /// The expression as given (fields one space apart).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, date: Date) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        // Classic (Vixie) cron: when either day field starts with `*` both
        // must match (a plain `*` matches every day); when both are
        // restricted, either may.
        if self.any_day || self.any_weekday {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first time the expression matches strictly after `after`, read
    /// on `tz`'s wall clock; `None` when it never does (say, 30 February).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let instant = jiff::Timestamp::from_millisecond(after.as_millis()).ok()?;
        let start = instant.to_zoned(tz.clone()).datetime();
        let mut date = start.date();
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                for hour in bits(self.hours) {
                    for minute in bits(self.minutes) {
                        let time = Time::new(hour as i8, minute as i8, 0, 0).ok()?;
                        let wall = DateTime::from_parts(date, time);
                        // Wall times at or before the start cannot come after it.
                        if wall < start.with().second(0).subsec_nanosecond(0).build().ok()? {
                            continue;
                        }
                        let zoned = tz.to_ambiguous_zoned(wall).compatible().ok()?;
                        let millis = zoned.timestamp().as_millisecond();
                        if millis > after.as_millis() {
                            return Some(Timestamp::from_millis(millis));
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// The set bits of `mask`, lowest first.
fn bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |bit| mask & (1 << bit) != 0)
}

/// One field's bits and whether it starts with `*`. `base` is the value
/// the first name stands for.
fn field(
    text: &str,
    name: &str,
    min: u32,
    max: u32,
    names: &[&str],
    base: u32,
) -> Result<(u64, bool), String> {
    let bad = |why: String| format!("cron {name} field {text:?}: {why}");
    let value = |part: &str| -> Result<u32, String> {
        let lower = part.to_ascii_lowercase();
        if let Some(index) = names.iter().position(|known| *known == lower) {
            return Ok(index as u32 + base);
        }
        let number: u32 = part.parse().map_err(|_| {
            bad(format!(
                "{part:?} is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            ))
        })?;
        if number < min || number > max {
            return Err(bad(format!("{number} is outside {min}-{max}")));
        }
        Ok(number)
    };
    let mut mask = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|step| (1..=max - min + 1).contains(step))
                    .ok_or_else(|| {
                        bad(format!(
                            "step {step:?} is not a number from 1 to {}",
                            max - min + 1
                        ))
                    })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((low, high)) = range.split_once('-') {
            let (low, high) = (value(low)?, value(high)?);
            if low > high {
                return Err(bad(format!("range {range:?} runs backwards")));
            }
            (low, high)
        } else {
            let single = value(range)?;
            // `5/10` means 5, 15, 25, … as in most crons.
            (single, if part.contains('/') { max } else { single })
        };
        let mut at = low;
        while at <= high {
            mask |= 1 << at;
            at += step;
        }
    }
    Ok((mask, text.starts_with('*')))
}

/// What a schedule does after downtime about the slots it missed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// Skips them.
    None,
    /// Runs the latest one (the default).
    #[default]
    Last,
    /// Runs every one (at most [`MAX_CATCH_UP`]).
    All,
}

/// The most missed slots `catch_up = "all"` runs.
pub const MAX_CATCH_UP: usize = 1000;

impl CatchUp {
    /// `none`, `last` or `all`.
    pub fn parse(text: &str) -> Option<CatchUp> {
        match text {
            "none" => Some(CatchUp::None),
            "last" => Some(CatchUp::Last),
            "all" => Some(CatchUp::All),
            _ => None,
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::Last => "last",
            CatchUp::All => "all",
        }
    }
}

/// A task submitted on every slot of a cron expression
/// (`[schedules.NAME]`). Each slot's task has the idempotency key
/// `schedule:<name>:<slot>`, so instances sharing a store make one task
/// per slot between them.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The name (`[schedules.NAME]`).
    pub name: String,
    /// The op it submits.
    pub op: String,
    /// When.
    pub cron: Cron,
    /// The zone the expression is read in (its IANA name).
    pub timezone: String,
    /// The params each task gets.
    pub params: serde_json::Value,
    /// What happens to slots missed while no instance ran.
    pub catch_up: CatchUp,
    /// The metadata each task gets (`metadata = {…}`; checked by the
    /// submit rules).
    pub metadata: crate::model::Metadata,
    zone: TimeZone,
}

impl Schedule {
    /// A schedule; the error says what is wrong with the expression or zone.
    pub fn new(
        name: impl Into<String>,
        op: impl Into<String>,
        cron: &str,
        timezone: &str,
        params: serde_json::Value,
        catch_up: CatchUp,
    ) -> Result<Schedule, String> {
        let zone = TimeZone::get(timezone).map_err(|_| {
            format!(
                "unknown time zone {timezone:?} (an IANA name such as \"UTC\" or \"Europe/Berlin\")"
            )
        })?;
        Ok(Schedule {
            name: name.into(),
            op: op.into(),
            cron: Cron::parse(cron)?,
            timezone: timezone.to_owned(),
            params,
            catch_up,
            metadata: crate::model::Metadata::new(),
            zone,
        })
    }

    /// The first slot strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.cron.next_after(after, &self.zone)
    }

    /// The idempotency-key prefix of this schedule's tasks.
    pub fn key_prefix(&self) -> String {
        format!("schedule:{}:", self.name)
    }

    /// The idempotency key of the task for `slot`.
    pub fn key(&self, slot: Timestamp) -> String {
        format!("{}{slot}", self.key_prefix())
    }

    /// The slot a key of this schedule names.
    pub fn slot_of(&self, key: &str) -> Option<Timestamp> {
        key.strip_prefix(&self.key_prefix())
            .and_then(Timestamp::parse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn next(cron: &str, after: &str, zone: &str) -> String {
        Cron::parse(cron)
            .unwrap()
            .next_after(at(after), &TimeZone::get(zone).unwrap())
            .unwrap()
            .to_string()
    }

    #[test]
    fn fields_parse_and_bad_ones_say_why() {
        assert_eq!(
            next("0 3 * * *", "2026-11-29T13:00:00.000Z", "UTC"),
            "2026-11-30T03:00:00.000Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-11-29T13:00:00.000Z", "UTC"),
            "2026-11-29T13:15:00.000Z"
        );
        assert_eq!(
            next("* * * * *", "2026-11-29T13:00:30.500Z", "UTC"),
            "2026-11-29T13:01:00.000Z"
        );
        assert_eq!(
            next("30 9 * * mon-fri", "2026-11-28T10:00:00.000Z", "UTC"),
            "2026-11-30T09:30:00.000Z"
        );
        assert_eq!(
            next("0 0 1 jan *", "2026-11-29T00:00:00.000Z", "UTC"),
            "2027-01-01T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-11-29T00:00:00.000Z", "UTC"),
            "2028-02-29T00:00:00.000Z"
        );
        assert_eq!(
            next("0 12 * * 7", "2026-11-29T13:00:00.000Z", "UTC"),
            "2026-12-06T12:00:00.000Z"
        );
        // A step in a day field counts (odd days; even weekdays).
        assert_eq!(
            next("0 0 */2 * *", "2026-11-29T13:00:00.000Z", "UTC"),
            "2026-12-01T00:00:00.000Z"
        );
        assert_eq!(
            next("0 0 * * */2", "2026-11-29T13:00:00.000Z", "UTC"),
            "2026-12-01T00:00:00.000Z"
        );
        // `*/2` with a weekday: both must hold (an odd day that is a Monday).
        assert_eq!(
            next("0 0 */2 * mon", "2026-11-29T13:00:00.000Z", "UTC"),
            "2026-12-07T00:00:00.000Z"
        );
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(
            next("0 0 1 * 1", "2026-11-29T13:00:00.000Z", "UTC"),
            "2026-11-30T00:00:00.000Z"
        );
        assert!(
            Cron::parse("0 0 30 2 *")
                .unwrap()
                .next_after(at("2026-01-01T00:00:00.000Z"), &TimeZone::UTC)
                .is_none()
        );
        for (bad, says) in [
            ("0 3 * *", "five"),
            ("60 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * foo *", "month"),
            ("* * * * 8", "day-of-week"),
            ("*/0 * * * *", "step"),
            ("30-59/4294967290 * * * *", "step"),
            ("5-1 * * * *", "backwards"),
        ] {
            let error = Cron::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn wall_clock_in_a_zone_across_daylight_saving() {
        // 03:00 Berlin is 02:00 UTC in winter.
        assert_eq!(
            next("0 3 * * *", "2026-11-29T13:00:00.000Z", "Europe/Berlin"),
            "2026-11-30T02:00:00.000Z"
        );
        // 2027-03-28 02:30 does not exist in Berlin: it fires at 03:30 CEST (01:30 UTC).
        assert_eq!(
            next("30 2 * * *", "2027-03-27T12:00:00.000Z", "Europe/Berlin"),
            "2027-03-28T01:30:00.000Z"
        );
        // 2027-10-31 02:30 happens twice: once, at the first (00:30 UTC).
        let cron = Cron::parse("30 2 * * *").unwrap();
        let zone = TimeZone::get("Europe/Berlin").unwrap();
        let first = cron
            .next_after(at("2027-10-30T12:00:00.000Z"), &zone)
            .unwrap();
        assert_eq!(first.to_string(), "2027-10-31T00:30:00.000Z");
        let then = cron.next_after(first, &zone).unwrap();
        assert_eq!(then.to_string(), "2027-11-01T01:30:00.000Z");
    }

    #[test]
    fn keys_name_their_slot() {
        let schedule = Schedule::new(
            "nightly",
            "backup",
            "0 3 * * *",
            "UTC",
            serde_json::json!({}),
            CatchUp::Last,
        )
        .unwrap();
        let slot = at("2026-11-30T03:00:00.000Z");
        assert_eq!(
            schedule.key(slot),
            "schedule:nightly:2026-11-30T03:00:00.000Z"
        );
        assert_eq!(schedule.slot_of(&schedule.key(slot)), Some(slot));
        assert!(
            Schedule::new(
                "x",
                "y",
                "0 3 * * *",
                "Mars/Base",
                serde_json::json!({}),
                CatchUp::Last
            )
            .is_err()
        );
    }
}
