//! The RRULE subset lessons use (RFC 5545): `FREQ=WEEKLY` with `INTERVAL`, `BYDAY`, `COUNT`
//! and `UNTIL`. Occurrences are computed in the school's time zone, so a 16:00 lesson stays
//! 16:00 local across daylight-saving changes while its UTC time moves by an hour.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, Utc, Weekday};
use chrono_tz::Tz;

use crate::time::resolve_local;

/// Never expand more than this many occurrences from one rule.
pub const MAX_OCCURRENCES: usize = 260;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub interval: u32,
    pub by_day: Vec<Weekday>,
    pub count: Option<u32>,
    pub until: Option<Until>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// `UNTIL=20261231T235959Z`.
    Instant(DateTime<Utc>),
    /// `UNTIL=20261231`: through that local date.
    Date(NaiveDate),
}

fn weekday(code: &str) -> Option<Weekday> {
    Some(match code {
        "MO" => Weekday::Mon,
        "TU" => Weekday::Tue,
        "WE" => Weekday::Wed,
        "TH" => Weekday::Thu,
        "FR" => Weekday::Fri,
        "SA" => Weekday::Sat,
        "SU" => Weekday::Sun,
        _ => return None,
    })
}

/// Parses a rule such as `FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;COUNT=10` (an `RRULE:` prefix is
/// accepted). A rule needs `COUNT` or `UNTIL`: lessons are booked for a bounded term.
pub fn parse(rrule: &str) -> Result<Rule, String> {
    let body = rrule.trim().strip_prefix("RRULE:").unwrap_or(rrule.trim());
    let mut rule = Rule { interval: 1, by_day: Vec::new(), count: None, until: None };
    let mut freq = None;
    for part in body.split(';').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').ok_or_else(|| format!("{part:?} is not KEY=VALUE"))?;
        match key.to_ascii_uppercase().as_str() {
            "FREQ" => freq = Some(value.to_ascii_uppercase()),
            "INTERVAL" => {
                rule.interval = value.parse().ok().filter(|n| (1..=52).contains(n)).ok_or("INTERVAL must be 1 to 52")?
            }
            "COUNT" => {
                rule.count = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_OCCURRENCES as u32).contains(n))
                        .ok_or("COUNT must be 1 to 260")?,
                )
            }
            "UNTIL" => rule.until = Some(parse_until(value)?),
            "BYDAY" => {
                for code in value.split(',') {
                    let day =
                        weekday(&code.to_ascii_uppercase()).ok_or_else(|| format!("BYDAY {code:?} is not MO..SU"))?;
                    if !rule.by_day.contains(&day) {
                        rule.by_day.push(day);
                    }
                }
            }
            "WKST" => {}
            other => return Err(format!("{other} is not supported (use FREQ, INTERVAL, BYDAY, COUNT, UNTIL)")),
        }
    }
    match freq.as_deref() {
        Some("WEEKLY") => {}
        Some(other) => return Err(format!("FREQ={other} is not supported; lessons repeat WEEKLY")),
        None => return Err("FREQ=WEEKLY is required".into()),
    }
    if rule.count.is_some() && rule.until.is_some() {
        return Err("give COUNT or UNTIL, not both".into());
    }
    if rule.count.is_none() && rule.until.is_none() {
        return Err(
            "give COUNT or UNTIL so the series ends (or add terms: a rule without either runs to the end of its term)"
                .into(),
        );
    }
    rule.by_day.sort_by_key(Weekday::num_days_from_monday);
    Ok(rule)
}

fn parse_until(value: &str) -> Result<Until, String> {
    if let Ok(instant) = NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%SZ") {
        return Ok(Until::Instant(instant.and_utc()));
    }
    NaiveDate::parse_from_str(value, "%Y%m%d")
        .map(Until::Date)
        .map_err(|_| "UNTIL must be YYYYMMDD or YYYYMMDDTHHMMSSZ".into())
}

/// Every occurrence start of `rule` beginning with `first` (which is the first occurrence when
/// its weekday is in BYDAY), in time zone `tz`.
pub fn expand(rule: &Rule, first: DateTime<Utc>, tz: Tz) -> Vec<DateTime<Utc>> {
    let local = first.with_timezone(&tz).naive_local();
    let (first_date, time) = (local.date(), local.time());
    let days = if rule.by_day.is_empty() { vec![first_date.weekday()] } else { rule.by_day.clone() };
    let monday = first_date - Duration::days(i64::from(first_date.weekday().num_days_from_monday()));
    let limit = rule.count.map_or(MAX_OCCURRENCES, |c| c as usize).min(MAX_OCCURRENCES);
    let mut out = Vec::new();
    for week in 0..(MAX_OCCURRENCES as i64 * 2) {
        let week_start = monday + Duration::weeks(week * i64::from(rule.interval));
        for day in &days {
            let date = week_start + Duration::days(i64::from(day.num_days_from_monday()));
            if date < first_date {
                continue;
            }
            let start = resolve_local(tz, date.and_time(time));
            let past_until = match rule.until {
                Some(Until::Instant(until)) => start > until,
                Some(Until::Date(until)) => date > until,
                None => false,
            };
            if past_until || out.len() >= limit {
                return out;
            }
            out.push(start);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_the_subset() {
        let rule = parse("RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=WE,MO;COUNT=4").unwrap();
        assert_eq!(rule.interval, 2);
        assert_eq!(rule.by_day, [Weekday::Mon, Weekday::Wed]);
        assert_eq!(rule.count, Some(4));
        assert!(parse("FREQ=DAILY;COUNT=3").is_err());
        assert!(parse("FREQ=WEEKLY").is_err(), "unbounded");
        assert!(parse("FREQ=WEEKLY;COUNT=2;UNTIL=20261231").is_err());
        assert!(parse("FREQ=WEEKLY;BYDAY=XX;COUNT=2").is_err());
        assert!(parse("FREQ=WEEKLY;BYMONTH=1;COUNT=2").is_err());
        assert!(parse("FREQ=WEEKLY;COUNT=0").is_err());
    }

    #[test]
    fn stays_at_local_time_across_the_november_dst_change() {
        // Mondays 16:00 in Toronto from 26 Oct 2026 (EDT, UTC-4) past 1 Nov (EST, UTC-5).
        let rule = parse("FREQ=WEEKLY;COUNT=3").unwrap();
        let starts = expand(&rule, utc("2026-10-26T20:00:00Z"), chrono_tz::America::Toronto);
        assert_eq!(starts, [utc("2026-10-26T20:00:00Z"), utc("2026-11-02T21:00:00Z"), utc("2026-11-09T21:00:00Z")]);
    }

    #[test]
    fn byday_interval_and_until() {
        // Mon and Wed every other week, through 2026-09-30 (local date).
        let rule = parse("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;UNTIL=20260930").unwrap();
        let starts = expand(&rule, utc("2026-09-07T21:00:00Z"), chrono_tz::America::Toronto);
        let days: Vec<String> = starts.iter().map(|s| s.format("%Y-%m-%d").to_string()).collect();
        assert_eq!(days, ["2026-09-07", "2026-09-09", "2026-09-21", "2026-09-23"]);
    }

    #[test]
    fn spring_forward_gap_moves_an_hour_later() {
        let tz = chrono_tz::America::Toronto;
        let local = NaiveDate::from_ymd_opt(2027, 3, 14).unwrap().and_hms_opt(2, 30, 0).unwrap();
        assert_eq!(resolve_local(tz, local), utc("2027-03-14T07:30:00Z"));
    }
}
