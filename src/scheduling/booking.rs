//! The booking service: every way a lesson enters, moves in or leaves the timetable goes
//! through here, whoever asks (the lesson endpoints, the enrollment workflow, the schedule
//! review). It checks conflicts — teacher, student and room double bookings, the teacher's
//! availability and time off, closures and terms — and writes lessons and series. Callers own
//! the transaction, so a booking commits with whatever else their step writes; the database's
//! exclusion constraints (PostgreSQL) or single writer (SQLite) have the last word on races.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::LessonStatus;
pub use super::calendar::Exceptions;
use super::calendar::within_availability;
use super::lessons::{COLUMNS, RETURNED};
use crate::db::Tx;
use crate::error::{DomainError, DomainResult};
use crate::on_tx;
use crate::time::{local_date, resolve_local};

/// One reason an occurrence cannot be booked.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Conflict {
    /// Start of the occurrence that conflicts.
    pub occurrence_starts_at: DateTime<Utc>,
    /// `teacher`, `student`, `room` (double booking), `availability`, `closure`, `time_off`
    /// or `outside_term`.
    pub kind: &'static str,
    /// The lesson it collides with, for double bookings.
    pub lesson_id: Option<Uuid>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Skipped {
    pub starts_at: DateTime<Utc>,
    /// `closure` or `outside_term`.
    pub reason: &'static str,
    pub detail: String,
}

/// One occurrence to book or move.
#[derive(Debug, Clone)]
pub struct Slot {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub teacher_id: Uuid,
    pub student_id: Uuid,
    pub room_id: Option<Uuid>,
}

/// A scheduled lesson overlapping an occurrence: id, teacher, student, room, start, end.
pub(crate) type Overlap = (Uuid, Uuid, Uuid, Option<Uuid>, DateTime<Utc>, DateTime<Utc>);

/// Scheduled lessons overlapping the occurrence `[$1, $2)` that share its teacher ($3),
/// student ($4) or room ($5); `$6` = [`super::running_since`] of `$1` bounds the range.
pub(crate) const OVERLAPS: &str = "SELECT id, teacher_id, student_id, room_id, starts_at, ends_at FROM lessons \
    WHERE status = 'scheduled' AND starts_at < $2 AND ends_at > $1 AND starts_at > $6 \
    AND (teacher_id = $3 OR student_id = $4 OR ($5 IS NOT NULL AND room_id = $5)) ORDER BY starts_at";

pub(crate) async fn overlaps_in_tx(tx: &mut Tx, slot: &Slot) -> DomainResult<Vec<Overlap>> {
    Ok(on_tx!(tx, conn => sqlx::query_as(OVERLAPS)
        .bind(slot.starts_at).bind(slot.ends_at).bind(slot.teacher_id).bind(slot.student_id).bind(slot.room_id)
        .bind(super::running_since(slot.starts_at)).fetch_all(&mut **conn).await)?)
}

/// Every conflict of `slots` with existing scheduled lessons (other than `ignore`), the
/// teacher's availability (unless overridden), time off, and — when `skip_closures` is false —
/// closures and terms.
pub async fn conflicts(
    tx: &mut Tx,
    tz: chrono_tz::Tz,
    slots: &[Slot],
    ignore: &[Uuid],
    check_availability: bool,
    exceptions: &Exceptions,
) -> DomainResult<Vec<Conflict>> {
    let mut out = Vec::new();
    let mut teacher_windows = std::collections::HashMap::new();
    for slot in slots {
        if check_availability
            && let std::collections::hash_map::Entry::Vacant(entry) = teacher_windows.entry(slot.teacher_id)
        {
            entry.insert(windows_in_tx(tx, slot.teacher_id).await?);
        }
        let windows = teacher_windows.get(&slot.teacher_id).map(Vec::as_slice);
        let overlaps = overlaps_in_tx(tx, slot).await?;
        slot_conflicts(tz, slot, exceptions, windows, &overlaps, ignore, &mut out);
    }
    Ok(out)
}

/// The conflicts of one occurrence with what it is checked against: the calendar, the
/// teacher's weekly windows (`None`: availability not checked) and the scheduled lessons
/// overlapping it (those in `ignore` aside).
pub(crate) fn slot_conflicts<'a>(
    tz: chrono_tz::Tz,
    slot: &Slot,
    exceptions: &Exceptions,
    windows: Option<&[crate::people::WeeklyWindow]>,
    overlaps: impl IntoIterator<Item = &'a Overlap>,
    ignore: &[Uuid],
    out: &mut Vec<Conflict>,
) {
    let date = slot.starts_at.with_timezone(&tz).date_naive();
    let conflict = |kind, detail: String| Conflict {
        occurrence_starts_at: slot.starts_at,
        kind,
        lesson_id: None,
        starts_at: slot.starts_at,
        ends_at: slot.ends_at,
        detail,
    };
    if let Some(name) = exceptions.closure(date) {
        out.push(conflict("closure", format!("The school is closed: {name}")));
    }
    if exceptions.outside_terms(date) {
        out.push(conflict("outside_term", "No term covers this date".into()));
    }
    if exceptions.time_off(slot.teacher_id, date) {
        out.push(conflict("time_off", "The teacher is away".into()));
    }
    if let Some(windows) = windows
        && !within_availability(windows, tz, slot.starts_at, slot.ends_at)
    {
        out.push(conflict("availability", "Outside the teacher's availability".into()));
    }
    for &(id, teacher, student, room, starts_at, ends_at) in overlaps.into_iter().filter(|r| !ignore.contains(&r.0)) {
        for (kind, hit) in [
            ("teacher", teacher == slot.teacher_id),
            ("student", student == slot.student_id),
            ("room", room.is_some() && room == slot.room_id),
        ] {
            if hit {
                out.push(Conflict {
                    occurrence_starts_at: slot.starts_at,
                    kind,
                    lesson_id: Some(id),
                    starts_at,
                    ends_at,
                    detail: format!("The {kind} already has a lesson then"),
                });
            }
        }
    }
}

pub(crate) async fn windows_in_tx(tx: &mut Tx, teacher_id: Uuid) -> DomainResult<Vec<crate::people::WeeklyWindow>> {
    const SQL: &str = "SELECT weekday, start_time, end_time FROM teacher_availability WHERE teacher_id = $1";
    let rows: Vec<(i32, String, String)> =
        on_tx!(tx, conn => sqlx::query_as(SQL).bind(teacher_id).fetch_all(&mut **conn).await)?;
    Ok(rows
        .into_iter()
        .map(|(d, s, e)| crate::people::WeeklyWindow { weekday: d as u8, start_time: s, end_time: e })
        .collect())
}

pub fn conflict_error(conflicts: Vec<Conflict>) -> DomainError {
    let n = conflicts.len();
    DomainError::Conflict {
        detail: format!("{n} conflict(s); nothing was booked"),
        conflicts: conflicts.into_iter().map(|c| serde_json::to_value(c).unwrap_or(Value::Null)).collect(),
    }
}

/// Conflicts of `slots`, loading the closures, terms and time off of their dates first.
pub async fn check(
    tx: &mut Tx,
    tz: chrono_tz::Tz,
    slots: &[Slot],
    ignore: &[Uuid],
    check_availability: bool,
) -> DomainResult<Vec<Conflict>> {
    let (Some(first), Some(last)) = (slots.iter().map(|s| s.starts_at).min(), slots.iter().map(|s| s.starts_at).max())
    else {
        return Ok(Vec::new());
    };
    let exceptions = Exceptions::load(tx, local_date(tz, first), local_date(tz, last)).await?;
    conflicts(tx, tz, slots, ignore, check_availability, &exceptions).await
}

/// Who meets where: the parties of a lesson.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parties {
    pub teacher_id: Uuid,
    pub student_id: Uuid,
    pub room_id: Option<Uuid>,
}

/// `weeks` weekly occurrences of `minutes` at local `start`, on `first` and the same weekday
/// after it.
pub fn weekly_slots(
    tz: chrono_tz::Tz,
    first: NaiveDate,
    start: NaiveTime,
    minutes: i64,
    weeks: i64,
    parties: Parties,
) -> Vec<Slot> {
    let Parties { teacher_id, student_id, room_id } = parties;
    (0..weeks)
        .map(|week| {
            let starts_at = resolve_local(tz, (first + Duration::weeks(week)).and_time(start));
            Slot { starts_at, ends_at: starts_at + Duration::minutes(minutes), teacher_id, student_id, room_id }
        })
        .collect()
}

/// How a booking is recorded.
#[derive(Debug, Clone, Default)]
pub struct BookingOptions<'a> {
    /// Set for a recurring series (the rule as the client gave it).
    pub rrule: Option<&'a str>,
    /// Who booked a series.
    pub booked_by: Option<Uuid>,
    /// A makeup lesson, paid with a credit.
    pub makeup: bool,
    /// Booked outside the teacher's availability (admins only).
    pub availability_override: bool,
    pub notes: Option<&'a str>,
}

/// What [`book`] wrote.
#[derive(Debug, Clone)]
pub struct Booked {
    pub series_id: Option<Uuid>,
    /// The lessons as written, in time order (`RETURNING`: no second read).
    pub lessons: Vec<super::lessons::Lesson>,
}

impl Booked {
    pub fn lesson_ids(&self) -> impl Iterator<Item = Uuid> + '_ {
        self.lessons.iter().map(|l| l.id)
    }

    /// What the booking's audit entry is about: the series, or the single lesson.
    pub fn audit_subject(&self) -> (&'static str, Uuid) {
        audit_subject(self.series_id, self.lessons[0].id)
    }
}

fn audit_subject(series_id: Option<Uuid>, first_lesson: Uuid) -> (&'static str, Uuid) {
    match series_id {
        Some(series) => ("lesson_series", series),
        None => ("lesson", first_lesson),
    }
}

/// [`book`] and its audit entry (`audit`, about the series or lesson) as one statement — its
/// own transaction — on PostgreSQL: one round trip instead of four. Callers check conflicts
/// first; the exclusion constraints still refuse a double booking that slipped in between.
pub async fn book_in_one_statement(
    pool: &sqlx::PgPool,
    tz: chrono_tz::Tz,
    slots: &[Slot],
    options: BookingOptions<'_>,
    audit: crate::privacy::audit::AuditEvent,
) -> DomainResult<Booked> {
    let series_id = options.rrule.map(|_| Uuid::now_v7());
    let lesson_ids: Vec<Uuid> = slots.iter().map(|_| Uuid::now_v7()).collect();
    let (kind, subject) = audit_subject(series_id, lesson_ids[0]);
    let sql = sqlx::AssertSqlSafe(format!(
        "WITH series AS (INSERT INTO lesson_series (id, rrule, timezone, created_by, created_at) \
            SELECT $1, $2, $3, $4, $5 WHERE $1::uuid IS NOT NULL), \
        booked AS (INSERT INTO lessons (id, series_id, teacher_id, student_id, room_id, starts_at, ends_at, status, \
            is_makeup, availability_override, notes, created_at, updated_at) \
            SELECT s.id, $1, s.teacher_id, s.student_id, s.room_id, s.starts_at, s.ends_at, 'scheduled', $6, $7, $8, $5, $5 \
            FROM UNNEST($9::uuid[], $10::uuid[], $11::uuid[], $12::uuid[], $13::timestamptz[], $14::timestamptz[]) \
                AS s(id, teacher_id, student_id, room_id, starts_at, ends_at) \
            RETURNING *), \
        audited AS ({}) \
        SELECT {COLUMNS} FROM booked l ORDER BY l.starts_at",
        crate::privacy::audit::insert_from(15)
    ));
    let query = sqlx::query_as::<_, super::lessons::Lesson>(sql)
        .bind(series_id)
        .bind(options.rrule.map(str::trim))
        .bind(tz.name())
        .bind(options.booked_by)
        .bind(Utc::now())
        .bind(options.makeup)
        .bind(options.availability_override)
        .bind(options.notes)
        .bind(&lesson_ids)
        .bind(slots.iter().map(|s| s.teacher_id).collect::<Vec<_>>())
        .bind(slots.iter().map(|s| s.student_id).collect::<Vec<_>>())
        .bind(slots.iter().map(|s| s.room_id).collect::<Vec<_>>())
        .bind(slots.iter().map(|s| s.starts_at).collect::<Vec<_>>())
        .bind(slots.iter().map(|s| s.ends_at).collect::<Vec<_>>());
    let lessons = crate::privacy::audit::bind_from(query, audit.subject(kind, subject)).fetch_all(pool).await?;
    Ok(Booked { series_id, lessons })
}

/// Writes `slots` as lessons — a series when `options.rrule` is set. Callers check conflicts
/// first ([`check`]); this only writes.
pub async fn book(tx: &mut Tx, tz: chrono_tz::Tz, slots: &[Slot], options: BookingOptions<'_>) -> DomainResult<Booked> {
    let series_id = match options.rrule {
        Some(rrule) => {
            const SERIES: &str =
                "INSERT INTO lesson_series (id, rrule, timezone, created_by, created_at) VALUES ($1, $2, $3, $4, $5)";
            let id = Uuid::now_v7();
            on_tx!(tx, conn => sqlx::query(SERIES).bind(id).bind(rrule.trim()).bind(tz.name()).bind(options.booked_by)
                .bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
            Some(id)
        }
        None => None,
    };
    let mut lessons = Vec::with_capacity(slots.len());
    for slot in slots {
        lessons.push(
            insert_lesson(tx, slot, series_id, options.makeup, options.availability_override, options.notes).await?,
        );
    }
    Ok(Booked { series_id, lessons })
}

/// Rewrites lessons in place: each `(lesson id, new slot)` gets the slot's time, teacher and
/// room, plus `status` and `notes`. Callers check conflicts first.
pub async fn reschedule(
    tx: &mut Tx,
    moves: &[(Uuid, Slot)],
    status: LessonStatus,
    notes: Option<&str>,
    availability_override: bool,
) -> DomainResult<()> {
    const UPDATE: &str = "UPDATE lessons SET starts_at = $2, ends_at = $3, teacher_id = $4, room_id = $5, status = $6, \
        notes = $7, availability_override = (availability_override OR $8), updated_at = $9 WHERE id = $1";
    for (lesson_id, slot) in moves {
        on_tx!(tx, conn => sqlx::query(UPDATE).bind(lesson_id).bind(slot.starts_at).bind(slot.ends_at)
            .bind(slot.teacher_id).bind(slot.room_id).bind(status).bind(notes).bind(availability_override)
            .bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    }
    Ok(())
}

/// Where a weekly series goes: a teacher, a room and a local weekday and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeeklyPlace {
    pub teacher_id: Uuid,
    pub room_id: Option<Uuid>,
    /// ISO weekday, Monday = 1.
    pub weekday: u8,
    pub start_time: NaiveTime,
}

/// The scheduled occurrences of `series_id` starting at or after `from`, each with the slot
/// `to` gives it (same week, same length).
pub async fn series_targets(
    tx: &mut Tx,
    tz: chrono_tz::Tz,
    series_id: Uuid,
    from: DateTime<Utc>,
    to: WeeklyPlace,
) -> DomainResult<Vec<(Uuid, Slot)>> {
    const TARGETS: &str = "SELECT id, student_id, starts_at, ends_at FROM lessons \
        WHERE series_id = $1 AND starts_at >= $2 AND status = 'scheduled' ORDER BY starts_at";
    let rows: Vec<(Uuid, Uuid, DateTime<Utc>, DateTime<Utc>)> =
        on_tx!(tx, conn => sqlx::query_as(TARGETS).bind(series_id).bind(from).fetch_all(&mut **conn).await)?;
    Ok(rows
        .iter()
        .map(|(id, student, starts_at, ends_at)| {
            let date = crate::time::same_week_weekday(local_date(tz, *starts_at), to.weekday);
            let start = resolve_local(tz, date.and_time(to.start_time));
            let slot = Slot {
                starts_at: start,
                ends_at: start + (*ends_at - *starts_at),
                teacher_id: to.teacher_id,
                student_id: *student,
                room_id: to.room_id,
            };
            (*id, slot)
        })
        .collect())
}

/// Conflicts that stop a move; closures and days outside terms only cancel the occurrence
/// (as a new series skips them). Returns (blocking, occurrences to cancel).
pub fn split_conflicts(found: Vec<Conflict>) -> (Vec<Conflict>, Vec<DateTime<Utc>>) {
    let (skipped, blocking): (Vec<Conflict>, Vec<Conflict>) =
        found.into_iter().partition(|c| matches!(c.kind, "closure" | "outside_term"));
    (blocking, skipped.into_iter().map(|c| c.occurrence_starts_at).collect())
}

/// Writes lessons to their new slots (checked by the caller), cancelling those starting at a
/// `cancel` instant. Every lesson is set aside first, so lessons trading places never overlap
/// midway (the exclusion constraints see only scheduled lessons).
pub async fn write_moves(tx: &mut Tx, moves: &[(Uuid, Slot)], cancel: &[DateTime<Utc>]) -> DomainResult<()> {
    const PARK: &str = "UPDATE lessons SET status = 'cancelled' WHERE id = $1";
    for (lesson_id, _) in moves {
        on_tx!(tx, conn => sqlx::query(PARK).bind(lesson_id).execute(&mut **conn).await.map(|_| ()))?;
    }
    const UPDATE: &str = "UPDATE lessons SET starts_at = $2, ends_at = $3, teacher_id = $4, room_id = $5, status = $6, \
        updated_at = $7 WHERE id = $1";
    for (lesson_id, slot) in moves {
        let status = if cancel.contains(&slot.starts_at) { LessonStatus::Cancelled } else { LessonStatus::Scheduled };
        on_tx!(tx, conn => sqlx::query(UPDATE).bind(lesson_id).bind(slot.starts_at).bind(slot.ends_at)
            .bind(slot.teacher_id).bind(slot.room_id).bind(status).bind(Utc::now()).execute(&mut **conn).await
            .map(|_| ()))?;
    }
    Ok(())
}

/// Moves the scheduled occurrences of `series_id` starting at or after `from` to `to`, keeping
/// each one's length and its week. Returns the moved lesson ids, or the conflicts (nothing is
/// written then). An occurrence that lands on a closure or outside every term is moved and
/// cancelled, as a new series skips such dates; any other conflict stops the whole move.
pub async fn move_series(
    tx: &mut Tx,
    tz: chrono_tz::Tz,
    series_id: Uuid,
    from: DateTime<Utc>,
    to: WeeklyPlace,
) -> DomainResult<Result<Vec<Uuid>, Vec<Conflict>>> {
    let moves = series_targets(tx, tz, series_id, from, to).await?;
    let slots: Vec<Slot> = moves.iter().map(|(_, s)| s.clone()).collect();
    let ids: Vec<Uuid> = moves.iter().map(|(id, _)| *id).collect();
    let (blocking, cancel) = split_conflicts(check(tx, tz, &slots, &ids, true).await?);
    if !blocking.is_empty() {
        return Ok(Err(blocking));
    }
    write_moves(tx, &moves, &cancel).await?;
    Ok(Ok(ids))
}

/// Cancels every scheduled lesson of a family's students starting after `from` (a family
/// leaving, or erased); returns how many.
pub async fn cancel_family_from(tx: &mut Tx, family: Uuid, from: DateTime<Utc>) -> DomainResult<u64> {
    const SQL: &str = "UPDATE lessons SET status = 'cancelled', updated_at = $3 WHERE status = 'scheduled' \
        AND starts_at > $2 AND student_id IN (SELECT id FROM students WHERE family_id = $1)";
    Ok(on_tx!(tx, conn => sqlx::query(SQL).bind(family).bind(from).bind(Utc::now()).execute(&mut **conn).await
        .map(|r| r.rows_affected()))?)
}

/// Which occurrences a removal takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrences {
    /// One lesson.
    One(Uuid),
    /// Every occurrence of a series starting at or after an instant.
    Following { series_id: Uuid, from: DateTime<Utc> },
    /// A whole series.
    Series(Uuid),
}

/// Deletes occurrences; returns how many lessons went.
pub async fn delete(tx: &mut Tx, which: Occurrences, only_teacher: Option<Uuid>) -> DomainResult<u64> {
    // `only_teacher`: a teacher removes only their own occurrences (a substitute's one lesson
    // in another teacher's series never takes the series with it).
    Ok(match (which, only_teacher) {
        (Occurrences::Series(series_id), None) => {
            const SQL: &str = "DELETE FROM lesson_series WHERE id = $1";
            on_tx!(tx, conn => sqlx::query(SQL).bind(series_id).execute(&mut **conn).await.map(|r| r.rows_affected()))?
        }
        (Occurrences::Series(series_id), Some(teacher)) => {
            const SQL: &str = "DELETE FROM lessons WHERE series_id = $1 AND teacher_id = $2";
            on_tx!(tx, conn => sqlx::query(SQL).bind(series_id).bind(teacher).execute(&mut **conn).await
                .map(|r| r.rows_affected()))?
        }
        (Occurrences::Following { series_id, from }, teacher) => {
            const SQL: &str =
                "DELETE FROM lessons WHERE series_id = $1 AND starts_at >= $2 AND ($3 IS NULL OR teacher_id = $3)";
            on_tx!(tx, conn => sqlx::query(SQL).bind(series_id).bind(from).bind(teacher).execute(&mut **conn).await
                .map(|r| r.rows_affected()))?
        }
        (Occurrences::One(id), _) => {
            const SQL: &str = "DELETE FROM lessons WHERE id = $1";
            on_tx!(tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|r| r.rows_affected()))?
        }
    })
}

/// Cancels the scheduled occurrences (the lessons stay, with status `cancelled`, so history
/// and billing see them); returns how many changed.
pub async fn cancel(tx: &mut Tx, which: Occurrences) -> DomainResult<u64> {
    let now = Utc::now();
    Ok(match which {
        Occurrences::One(id) => {
            const SQL: &str =
                "UPDATE lessons SET status = 'cancelled', updated_at = $2 WHERE id = $1 AND status = 'scheduled'";
            on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(now).execute(&mut **conn).await.map(|r| r.rows_affected()))?
        }
        Occurrences::Following { series_id, from } => {
            const SQL: &str = "UPDATE lessons SET status = 'cancelled', updated_at = $3 \
                WHERE series_id = $1 AND starts_at >= $2 AND status = 'scheduled'";
            on_tx!(tx, conn => sqlx::query(SQL).bind(series_id).bind(from).bind(now).execute(&mut **conn).await
                .map(|r| r.rows_affected()))?
        }
        Occurrences::Series(series_id) => {
            const SQL: &str = "UPDATE lessons SET status = 'cancelled', updated_at = $2 \
                WHERE series_id = $1 AND status = 'scheduled'";
            on_tx!(tx, conn => sqlx::query(SQL).bind(series_id).bind(now).execute(&mut **conn).await
                .map(|r| r.rows_affected()))?
        }
    })
}

async fn insert_lesson(
    tx: &mut Tx,
    slot: &Slot,
    series_id: Option<Uuid>,
    makeup: bool,
    availability_override: bool,
    notes: Option<&str>,
) -> DomainResult<super::lessons::Lesson> {
    const SQL: &str = "INSERT INTO lessons (id, series_id, teacher_id, student_id, room_id, starts_at, ends_at, status, \
        is_makeup, availability_override, notes, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, 'scheduled', $8, $9, $10, $11, $11) RETURNING ";
    let sql = sqlx::AssertSqlSafe(format!("{SQL}{RETURNED}"));
    let lesson = on_tx!(tx, conn => sqlx::query_as::<_, super::lessons::Lesson>(sql).bind(Uuid::now_v7())
        .bind(series_id).bind(slot.teacher_id).bind(slot.student_id).bind(slot.room_id).bind(slot.starts_at)
        .bind(slot.ends_at).bind(makeup).bind(availability_override).bind(notes).bind(Utc::now())
        .fetch_one(&mut **conn).await)?;
    Ok(lesson)
}

/// Shifts an occurrence by `shift` in local wall-clock terms, so "one hour later" stays one
/// hour later on both sides of a daylight-saving change.
pub fn shift_local(tz: chrono_tz::Tz, start: DateTime<Utc>, shift: Duration) -> DateTime<Utc> {
    resolve_local(tz, start.with_timezone(&tz).naive_local() + shift)
}
