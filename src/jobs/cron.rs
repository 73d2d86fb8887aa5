//! Five-field cron expressions (`minute hour day-of-month month day-of-week`) evaluated on the
//! wall clock of the school's time zone: `0 9 * * 1` is Monday 09:00 local in winter and in
//! summer. A time skipped by spring-forward fires an hour later; a time repeated by fall-back
//! fires once.

use chrono::{DateTime, Datelike, Duration, NaiveDateTime, Timelike, Utc};
use chrono_tz::Tz;

use crate::time::resolve_local;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: Vec<u32>,
    hours: Vec<u32>,
    days: Vec<u32>,
    months: Vec<u32>,
    /// 0 = Sunday … 6 = Saturday (7 is accepted as Sunday).
    weekdays: Vec<u32>,
    any_day: bool,
    any_weekday: bool,
}

fn field(text: &str, min: u32, max: u32) -> Result<Vec<u32>, String> {
    let mut values = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                (range, step.parse::<u32>().ok().filter(|s| *s > 0).ok_or(format!("bad step in {part:?}"))?)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                a.parse().map_err(|_| format!("bad number in {part:?}"))?,
                b.parse().map_err(|_| format!("bad number in {part:?}"))?,
            )
        } else {
            let n: u32 = range.parse().map_err(|_| format!("bad number in {part:?}"))?;
            (n, if part.contains('/') { max } else { n })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        values.extend((lo..=hi).step_by(step as usize));
    }
    values.sort_unstable();
    values.dedup();
    Ok(values)
}

impl Cron {
    pub fn parse(expression: &str) -> Result<Self, String> {
        let parts: Vec<&str> = expression.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = parts[..] else {
            return Err("a cron expression has five fields: minute hour day month weekday".into());
        };
        let mut weekdays = field(weekday, 0, 7)?;
        if weekdays.contains(&7) {
            weekdays.retain(|d| *d != 7);
            weekdays.push(0);
            weekdays.sort_unstable();
            weekdays.dedup();
        }
        Ok(Self {
            minutes: field(minute, 0, 59)?,
            hours: field(hour, 0, 23)?,
            days: field(day, 1, 31)?,
            months: field(month, 1, 12)?,
            weekdays,
            any_day: day == "*",
            any_weekday: weekday == "*",
        })
    }

    fn matches(&self, local: NaiveDateTime) -> bool {
        let day_ok = self.days.contains(&local.day());
        let weekday_ok = self.weekdays.contains(&local.weekday().num_days_from_sunday());
        // As in classic cron: when both day fields are restricted, either may match.
        let date_ok = match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => day_ok,
            (true, false) => weekday_ok,
            (false, false) => day_ok || weekday_ok,
        };
        date_ok
            && self.months.contains(&local.month())
            && self.hours.contains(&local.hour())
            && self.minutes.contains(&local.minute())
    }

    /// The first firing strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let start = after.with_timezone(&tz).naive_local().with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let mut local = start;
        // Walk local wall-clock minutes (skipping hours and days that cannot match).
        for _ in 0..(366 * 24 * 60) {
            if !self.months.contains(&local.month()) || !self.date_may_match(local) {
                local = (local.date() + Duration::days(1)).and_hms_opt(0, 0, 0)?;
                continue;
            }
            if !self.hours.contains(&local.hour()) {
                local = local.with_minute(0)? + Duration::hours(1);
                continue;
            }
            if self.matches(local) {
                let instant = resolve_local(tz, local);
                if instant > after {
                    return Some(instant);
                }
            }
            local += Duration::minutes(1);
        }
        None
    }

    fn date_may_match(&self, local: NaiveDateTime) -> bool {
        let probe = local.with_hour(self.hours[0]).and_then(|l| l.with_minute(self.minutes[0])).unwrap_or(local);
        let day_ok = self.days.contains(&probe.day());
        let weekday_ok = self.weekdays.contains(&probe.weekday().num_days_from_sunday());
        match (self.any_day, self.any_weekday) {
            (true, true) => true,
            (false, true) => day_ok,
            (true, false) => weekday_ok,
            (false, false) => day_ok || weekday_ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const TORONTO: Tz = chrono_tz::America::Toronto;

    #[test]
    fn parses_and_rejects() {
        assert!(Cron::parse("*/15 9-17 * * 1-5").is_ok());
        assert!(Cron::parse("0 9 * *").is_err());
        assert!(Cron::parse("60 * * * *").is_err());
        assert!(Cron::parse("0 0 * * 8").is_err());
    }

    #[test]
    fn fires_at_local_time_across_the_november_change() {
        // Daily 09:00 Toronto: 13:00Z in EDT, 14:00Z in EST.
        let cron = Cron::parse("0 9 * * *").unwrap();
        let first = cron.next_after(utc("2026-10-31T14:00:00Z"), TORONTO).unwrap();
        assert_eq!(first, utc("2026-11-01T14:00:00Z"));
        let before = cron.next_after(utc("2026-10-30T14:00:00Z"), TORONTO).unwrap();
        assert_eq!(before, utc("2026-10-31T13:00:00Z"));
    }

    #[test]
    fn repeated_hour_fires_once_and_skipped_hour_fires_later() {
        // 01:30 happens twice on 1 Nov 2026 in Toronto: once only.
        let cron = Cron::parse("30 1 * * *").unwrap();
        let first = cron.next_after(utc("2026-11-01T04:00:00Z"), TORONTO).unwrap();
        assert_eq!(first, utc("2026-11-01T05:30:00Z"));
        let second = cron.next_after(first, TORONTO).unwrap();
        assert_eq!(second, utc("2026-11-02T06:30:00Z"));
        // 02:30 does not exist on 14 Mar 2027: it fires at 03:30 EDT.
        let cron = Cron::parse("30 2 * * *").unwrap();
        assert_eq!(cron.next_after(utc("2027-03-14T05:00:00Z"), TORONTO).unwrap(), utc("2027-03-14T07:30:00Z"));
    }

    #[test]
    fn weekdays_and_steps() {
        let cron = Cron::parse("*/20 16 * * 1,3").unwrap();
        // Sunday 2026-11-29 → Monday 30th 16:00 EST = 21:00Z, then 16:20.
        let a = cron.next_after(utc("2026-11-29T12:00:00Z"), TORONTO).unwrap();
        assert_eq!(a, utc("2026-11-30T21:00:00Z"));
        assert_eq!(cron.next_after(a, TORONTO).unwrap(), utc("2026-11-30T21:20:00Z"));
    }
}
