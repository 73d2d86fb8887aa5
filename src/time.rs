//! School-local time. The school's zone (`CEDAR_TIMEZONE`) governs recurrence, schedules and
//! "today"; instants are stored and sent in UTC. Every conversion between the two goes
//! through here so daylight-saving gaps and overlaps are handled one way everywhere.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The UTC instant of a local wall-clock time. In the spring-forward gap the time does not
/// exist; it moves to the same wall time one hour later. In the fall-back overlap the first
/// (daylight) instant is used.
/// A weekday's name (0 = Monday) in English or French (lower case, as French writes them).
pub fn weekday_name(index_from_monday: usize, french: bool) -> &'static str {
    const EN: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    const FR: [&str; 7] = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"];
    (if french { FR } else { EN })[index_from_monday % 7]
}

/// A month's name (0 = January) in English or French.
pub fn month_name(index0: usize, french: bool) -> &'static str {
    const EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const FR: [&str; 12] = [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ];
    (if french { FR } else { EN })[index0 % 12]
}

pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => resolve_local(tz, local + Duration::hours(1)),
    }
}

/// The instant of `time` on local `date`.
pub fn at_local(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
    resolve_local(tz, date.and_time(time))
}

/// The local calendar date of an instant.
pub fn local_date(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// The local wall-clock time of an instant.
pub fn local_naive(tz: Tz, at: DateTime<Utc>) -> NaiveDateTime {
    at.with_timezone(&tz).naive_local()
}

/// Today's date in the school's zone.
pub fn today(tz: Tz) -> NaiveDate {
    local_date(tz, Utc::now())
}

/// The first date strictly after `after` that falls on ISO `weekday` (Monday = 1).
pub fn next_weekday(after: NaiveDate, weekday: u8) -> NaiveDate {
    let today = i64::from(after.weekday().number_from_monday());
    let mut days = i64::from(weekday) - today;
    if days <= 0 {
        days += 7;
    }
    after + Duration::days(days)
}

/// The date on ISO `weekday` in the Monday-to-Sunday week of `date`.
pub fn same_week_weekday(date: NaiveDate, weekday: u8) -> NaiveDate {
    let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
    monday + Duration::days(i64::from(weekday.clamp(1, 7)) - 1)
}

/// A weekly window in the school's local time: ISO weekday (Monday = 1) and HH:MM bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeeklyWindow {
    pub weekday: u8,
    pub start_time: String,
    pub end_time: String,
}

pub fn parse_hhmm(value: &str) -> Option<NaiveTime> {
    if value.len() != 5 {
        return None;
    }
    NaiveTime::parse_from_str(value, "%H:%M").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spring_forward_gap_moves_an_hour_later_and_overlap_takes_daylight_time() {
        let tz = chrono_tz::America::Toronto;
        let gap = NaiveDate::from_ymd_opt(2026, 3, 8).unwrap().and_hms_opt(2, 30, 0).unwrap();
        assert_eq!(resolve_local(tz, gap).to_rfc3339(), "2026-03-08T07:30:00+00:00");
        let overlap = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap().and_hms_opt(1, 30, 0).unwrap();
        assert_eq!(resolve_local(tz, overlap).to_rfc3339(), "2026-11-01T05:30:00+00:00");
        assert_eq!(local_naive(tz, resolve_local(tz, overlap)), overlap);
    }
}

/// `#[serde(serialize_with = "crate::time::json_utc")]`: the same RFC 3339 text chrono writes
/// (`2027-01-11T20:00:00Z`, fractions as .mmm, .uuuuuu or .nnnnnnnnn), formatted into a stack
/// buffer. chrono's own `Serialize` goes through `collect_str`, which serde_json escapes one
/// small fragment at a time: a list of 100 lessons spent a fifth of its CPU there.
pub fn json_utc<S: serde::Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; 32];
    match rfc3339_into(at, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => at.serialize(serializer),
    }
}

/// The RFC 3339 text of `at` in `buffer`, or `None` where chrono's own formatting is needed
/// (years outside 0–9999, leap seconds).
pub(crate) fn rfc3339_into<'a>(at: &DateTime<Utc>, buffer: &'a mut [u8; 32]) -> Option<&'a str> {
    use chrono::Timelike;
    let (year, nanos) = (at.year(), at.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut value = value;
        for i in (0..digits).rev() {
            buffer[at + i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second(), 2);
    let mut end = 19;
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if digits > 0 {
        put(20, fraction, digits);
        buffer[19] = b'.';
        end = 20 + digits;
    }
    for (at, byte) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (end, b'Z')] {
        buffer[at] = byte;
    }
    std::str::from_utf8(&buffer[..=end]).ok()
}

#[cfg(test)]
mod json_utc_tests {
    use super::*;

    #[derive(Serialize)]
    struct Fast(#[serde(serialize_with = "json_utc")] DateTime<Utc>);

    #[test]
    fn writes_exactly_what_chrono_writes() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for i in 0..20_000u64 {
            let seconds = (next() % 253_402_300_799) as i64; // 1970 … 9999
            let nanos = match i % 4 {
                0 => 0,
                1 => (next() % 1000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1_000,
                _ => (next() % 1_000_000_000) as u32,
            };
            let at = DateTime::from_timestamp(seconds, nanos).unwrap();
            assert_eq!(serde_json::to_string(&Fast(at)).unwrap(), serde_json::to_string(&at).unwrap());
        }
        let far = DateTime::from_timestamp(-70_000_000_000, 5).unwrap(); // before year 0: chrono's own path
        assert_eq!(serde_json::to_string(&Fast(far)).unwrap(), serde_json::to_string(&far).unwrap());
    }
}
