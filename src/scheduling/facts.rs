//! What a new booking is checked against, read in one go: whether its teacher, student and
//! room exist (and the student is the booking teacher's own), the calendar of its dates, the
//! teacher's weekly windows and the scheduled lessons overlapping each occurrence. On
//! PostgreSQL that is one statement outside any transaction — the exclusion constraints on
//! `lessons` have the last word on races, so a check that reads a moment early loses
//! nothing. Elsewhere (SQLite) the same reads run one by one inside the booking's write
//! transaction, whose single writer is the guarantee there.

use std::ops::RangeInclusive;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::booking::{self, Conflict, Overlap, Parties, Slot};
use super::calendar::{EXCEPTIONS_SQL, ExceptionRow, Exceptions};
use crate::db::Tx;
use crate::error::DomainResult;
use crate::http::validate::Errors;
use crate::on_tx;
use crate::people::WeeklyWindow;

/// How many teachers, students and rooms match the parties (0 or 1 each); `$3` set = the
/// student must be that teacher's own.
const PARTIES: &str = "SELECT (SELECT COUNT(*) FROM teachers WHERE id = $1), \
    (SELECT COUNT(*) FROM students WHERE id = $2 AND ($3 IS NULL OR teacher_id = $3)), \
    (SELECT COUNT(*) FROM rooms WHERE id = $4)";

#[derive(Debug)]
pub struct BookingFacts {
    parties: (i64, i64, i64),
    pub exceptions: Exceptions,
    /// The teacher's weekly windows; `None` when availability is not checked.
    windows: Option<Vec<WeeklyWindow>>,
    /// Overlapping scheduled lessons, by the start of the occurrence they overlap.
    overlaps: Vec<(DateTime<Utc>, Overlap)>,
}

impl BookingFacts {
    /// Everything in one statement (PostgreSQL), outside any transaction.
    pub async fn read(
        pool: &PgPool,
        parties: Parties,
        own_students_of: Option<Uuid>,
        days: RangeInclusive<NaiveDate>,
        candidates: &[Slot],
        check_availability: bool,
    ) -> DomainResult<Self> {
        // The calendar's query keeps its `$1`/`$2` (the days). A single occurrence's overlaps
        // are one index range per party with plain parameters, which PostgreSQL plans once
        // and reuses; a series passes arrays of starts, ends and lower bounds (planned anew
        // each time, at a fraction of a millisecond — series are rare).
        let overlaps = if candidates.len() == 1 {
            "SELECT $8::timestamptz AS occurrence, l.* FROM lessons l WHERE l.starts_at < $9::timestamptz \
                AND l.ends_at > $8::timestamptz AND l.starts_at > $10::timestamptz"
        } else {
            "SELECT s.starts_at AS occurrence, l.* FROM UNNEST($8::timestamptz[], $9::timestamptz[], $10::timestamptz[]) \
                AS s(starts_at, ends_at, since) JOIN lessons l ON l.starts_at < s.ends_at AND l.ends_at > s.starts_at \
                AND l.starts_at > s.since"
        };
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT (SELECT COUNT(*) FROM teachers WHERE id = $3), \
            (SELECT COUNT(*) FROM students WHERE id = $4 AND ($5::uuid IS NULL OR teacher_id = $5)), \
            (SELECT COUNT(*) FROM rooms WHERE id = $6), \
            (SELECT COALESCE(json_agg(json_build_array(kind, teacher_id, name, starts_on, ends_on)), '[]') \
                FROM ({EXCEPTIONS_SQL}) e), \
            (SELECT COALESCE(json_agg(json_build_array(weekday, start_time, end_time)), '[]') \
                FROM teacher_availability WHERE $7 AND teacher_id = $3), \
            (SELECT COALESCE(json_agg(json_build_array(o.occurrence, json_build_array(o.id, o.teacher_id, o.student_id, \
                o.room_id, o.starts_at, o.ends_at)) ORDER BY o.occurrence, o.starts_at), '[]') \
                FROM ({overlaps}) o WHERE o.status = 'scheduled' \
                AND (o.teacher_id = $3 OR o.student_id = $4 OR ($6::uuid IS NOT NULL AND o.room_id = $6)))"
        ));
        type Windows = Vec<(i32, String, String)>;
        type Row =
            (i64, i64, i64, SqlJson<Vec<ExceptionRow>>, SqlJson<Windows>, SqlJson<Vec<(DateTime<Utc>, Overlap)>>);
        let query = sqlx::query_as(sql)
            .bind(days.start())
            .bind(days.end())
            .bind(parties.teacher_id)
            .bind(parties.student_id)
            .bind(own_students_of)
            .bind(parties.room_id)
            .bind(check_availability);
        let query = match candidates {
            [one] => query.bind(one.starts_at).bind(one.ends_at).bind(super::running_since(one.starts_at)),
            many => query
                .bind(many.iter().map(|s| s.starts_at).collect::<Vec<_>>())
                .bind(many.iter().map(|s| s.ends_at).collect::<Vec<_>>())
                .bind(many.iter().map(|s| super::running_since(s.starts_at)).collect::<Vec<_>>()),
        };
        let (teachers, students, rooms, exceptions, windows, overlaps): Row = query.fetch_one(pool).await?;
        Ok(Self {
            parties: (teachers, students, rooms),
            exceptions: Exceptions::from_rows(exceptions.0),
            windows: check_availability.then(|| to_windows(windows.0)),
            overlaps: overlaps.0,
        })
    }

    /// The same reads one by one, inside the caller's transaction.
    pub async fn read_in(
        tx: &mut Tx,
        parties: Parties,
        own_students_of: Option<Uuid>,
        days: RangeInclusive<NaiveDate>,
        candidates: &[Slot],
        check_availability: bool,
    ) -> DomainResult<Self> {
        let counts = on_tx!(tx, conn => sqlx::query_as(PARTIES).bind(parties.teacher_id).bind(parties.student_id)
            .bind(own_students_of).bind(parties.room_id).fetch_one(&mut **conn).await)?;
        let exceptions = Exceptions::load(tx, *days.start(), *days.end()).await?;
        let windows =
            if check_availability { Some(booking::windows_in_tx(tx, parties.teacher_id).await?) } else { None };
        let mut overlaps = Vec::new();
        for slot in candidates {
            overlaps.extend(booking::overlaps_in_tx(tx, slot).await?.into_iter().map(|o| (slot.starts_at, o)));
        }
        Ok(Self { parties: counts, exceptions, windows, overlaps })
    }

    /// See [`missing_parties`].
    pub fn parties_exist(&self, room_given: bool) -> Result<(), crate::error::ApiError> {
        missing_parties(self.parties, room_given)
    }

    /// Every conflict of `slots` (a subset of the candidates read).
    pub fn conflicts(&self, tz: chrono_tz::Tz, slots: &[Slot]) -> Vec<Conflict> {
        let mut out = Vec::new();
        for slot in slots {
            let overlaps = self.overlaps.iter().filter(|(at, _)| *at == slot.starts_at).map(|(_, o)| o);
            booking::slot_conflicts(tz, slot, &self.exceptions, self.windows.as_deref(), overlaps, &[], &mut out);
        }
        out
    }
}

/// 422 unless the parties exist (for an edit that changes them).
pub async fn parties_exist(db: &crate::db::Db, parties: Parties) -> Result<(), crate::error::ApiError> {
    let counts = crate::on_db!(db, pool => sqlx::query_as(PARTIES).bind(parties.teacher_id)
        .bind(parties.student_id).bind(None::<Uuid>).bind(parties.room_id).fetch_one(pool).await)?;
    missing_parties(counts, parties.room_id.is_some())
}

/// 422 naming each party that does not exist (or is not the booking teacher's student).
fn missing_parties(
    (teachers, students, rooms): (i64, i64, i64),
    room_given: bool,
) -> Result<(), crate::error::ApiError> {
    let mut errors = Errors::default();
    if teachers == 0 {
        errors.add("teacher_id", "No such teacher");
    }
    if students == 0 {
        errors.add("student_id", "No such student");
    }
    if room_given && rooms == 0 {
        errors.add("room_id", "No such room");
    }
    errors.into_result()
}

fn to_windows(rows: Vec<(i32, String, String)>) -> Vec<WeeklyWindow> {
    rows.into_iter().map(|(d, s, e)| WeeklyWindow { weekday: d as u8, start_time: s, end_time: e }).collect()
}
