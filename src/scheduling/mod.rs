//! Scheduling: teacher availability and calendar exceptions, recurring lessons with conflict
//! detection (enforced by PostgreSQL exclusion constraints, or SQLite's single writer),
//! attendance and makeup credits, free-slot search and iCalendar feeds. See
//! `docs/scheduling.md`.

pub mod booking;
pub(crate) mod calendar;
pub mod credits;
pub mod facts;
mod feeds;
mod lesson_json;
mod lesson_list;
pub mod lesson_pages;
mod lesson_row;
pub(crate) mod lessons;
pub mod recurrence;
mod substitutes;

use chrono::{DateTime, Duration, Utc};
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::text_enum;

/// The longest a lesson may last (bookings and edits are refused beyond it; PostgreSQL checks
/// it too, SQLite with triggers).
pub const MAX_LESSON: Duration = Duration::minutes(240);
/// The shortest.
pub const MIN_LESSON: Duration = Duration::minutes(15);

/// The earliest start of a lesson that can still be running at `at`: with it, "overlaps
/// [from, to)" becomes one index range on `(teacher_id | student_id | room_id, starts_at)`
/// instead of everything the teacher ever taught before `to`.
pub fn running_since(at: DateTime<Utc>) -> DateTime<Utc> {
    at - MAX_LESSON
}

text_enum! {
    /// Whether a lesson takes place.
    pub enum LessonStatus {
        Scheduled = "scheduled",
        Cancelled = "cancelled",
    }
}

text_enum! {
    /// What happened at a lesson.
    pub enum Attendance {
        Present = "present",
        Absent = "absent",
        CancelledByStudent = "cancelled_by_student",
        CancelledByTeacher = "cancelled_by_teacher",
    }
}

impl Attendance {
    pub fn is_cancellation(self) -> bool {
        matches!(self, Self::CancelledByStudent | Self::CancelledByTeacher)
    }
}

text_enum! {
    /// The life of a makeup credit.
    pub enum CreditStatus {
        Available = "available",
        Used = "used",
        Expired = "expired",
    }
}

text_enum! {
    /// Which occurrences of a series an edit or removal takes.
    pub enum EditScope {
        This = "this",
        Following = "following",
        Series = "series",
    }
}
use crate::db::{Constraint, ConstraintKind};

pub fn router() -> OpenApiRouter<AppState> {
    calendar::router()
        .merge(lessons::router())
        .merge(credits::router())
        .merge(feeds::router())
        .merge(substitutes::router())
}

/// The database's last word on double bookings (PostgreSQL), should two bookings race past
/// the conflict check.
pub static CONSTRAINTS: &[Constraint] = &[
    Constraint {
        name: "lessons_teacher_no_overlap",
        sqlite_columns: "",
        kind: ConstraintKind::Unique,
        field: "teacher_id",
        message: "The teacher already has a lesson at that time",
    },
    Constraint {
        name: "lessons_student_no_overlap",
        sqlite_columns: "",
        kind: ConstraintKind::Unique,
        field: "student_id",
        message: "The student already has a lesson at that time",
    },
    Constraint {
        name: "lessons_room_no_overlap",
        sqlite_columns: "",
        kind: ConstraintKind::Unique,
        field: "room_id",
        message: "The room is already booked at that time",
    },
];

/// The job handlers of this slice: expiring makeup credits.
pub fn jobs(registry: crate::jobs::Registry<AppState>) -> crate::jobs::Registry<AppState> {
    registry.on("maintenance", "makeup_credits.expire", |state: AppState, _job| async move {
        credits::expire_credits(&state.db).await.map(|_| ()).map_err(|e| crate::jobs::JobError::Retry(format!("{e:#}")))
    })
}

/// Makeup credits past their expiry are closed nightly.
pub fn schedules() -> Vec<crate::jobs::Schedule> {
    vec![crate::jobs::Schedule::new("makeup-credits-expire", "maintenance", "makeup_credits.expire", "5 3 * * *")]
}

/// How a family's lessons in `[from, to)` went, by status and attendance: what a billing
/// question about that period needs to know.
pub async fn family_lesson_summary(
    db: &crate::db::Db,
    family: uuid::Uuid,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> crate::error::DomainResult<serde_json::Value> {
    const SQL: &str = "SELECT l.status, l.attendance, COUNT(*) FROM lessons l JOIN students s ON s.id = l.student_id \
        WHERE s.family_id = $1 AND l.starts_at >= $2 AND l.starts_at < $3 GROUP BY l.status, l.attendance";
    let rows: Vec<(LessonStatus, Option<Attendance>, i64)> =
        crate::on_db!(db, pool => sqlx::query_as(SQL).bind(family).bind(from).bind(to).fetch_all(pool).await)?;
    Ok(serde_json::Value::Array(
        rows.into_iter()
            .map(|(status, attendance, count)| serde_json::json!({"status": status, "attendance": attendance, "count": count}))
            .collect(),
    ))
}

/// How a student's lessons in `[from, to)` went: what a progress report compiles.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AttendanceStats {
    /// Lessons that were to take place (scheduled, or marked, in the period).
    pub lessons: i64,
    pub present: i64,
    pub absent: i64,
    pub cancelled_by_student: i64,
    pub cancelled_by_teacher: i64,
    /// Cancelled by the school or the office (closures, edits) without attendance.
    pub cancelled_other: i64,
    /// The longest run of consecutive lessons the student cancelled or missed.
    pub longest_missed_streak: i64,
    pub last_attended: Option<chrono::DateTime<chrono::Utc>>,
    /// Makeup credits the student can still spend.
    pub makeup_credits: i64,
}

impl AttendanceStats {
    /// Attended ÷ lessons the student was expected at (teacher cancellations excluded), in
    /// percent; `None` without any.
    pub fn attendance_percent(&self) -> Option<i64> {
        let expected = self.present + self.absent + self.cancelled_by_student;
        (expected > 0).then(|| (self.present * 100 + expected / 2) / expected)
    }
}

/// A student's lessons in `[from, to)` that have already started, counted.
pub async fn attendance(
    db: &crate::db::Db,
    student: uuid::Uuid,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> crate::error::DomainResult<AttendanceStats> {
    const SQL: &str = "SELECT starts_at, status, attendance FROM lessons WHERE student_id = $1 AND starts_at >= $2 \
        AND starts_at < $3 AND starts_at < $4 ORDER BY starts_at";
    const CREDITS: &str = "SELECT COUNT(*) FROM makeup_credits WHERE student_id = $1 AND status = 'available' \
        AND expires_at > $2";
    type Row = (chrono::DateTime<chrono::Utc>, LessonStatus, Option<Attendance>);
    let now = chrono::Utc::now();
    let rows: Vec<Row> = crate::on_db!(db, pool => sqlx::query_as(SQL).bind(student).bind(from).bind(to).bind(now).fetch_all(pool).await)?;
    let mut stats = AttendanceStats::default();
    let mut streak = 0;
    for (starts_at, status, attendance) in rows {
        stats.lessons += 1;
        match (status, attendance) {
            (_, Some(Attendance::Present)) => {
                stats.present += 1;
                stats.last_attended = Some(starts_at);
                streak = 0;
            }
            (_, Some(Attendance::Absent)) => {
                stats.absent += 1;
                streak += 1;
            }
            (_, Some(Attendance::CancelledByStudent)) => {
                stats.cancelled_by_student += 1;
                streak += 1;
            }
            (_, Some(Attendance::CancelledByTeacher)) => stats.cancelled_by_teacher += 1,
            (LessonStatus::Cancelled, None) => stats.cancelled_other += 1,
            // Past and not marked: counted as a lesson, neither attended nor missed.
            (LessonStatus::Scheduled, None) => {}
        }
        stats.longest_missed_streak = stats.longest_missed_streak.max(streak);
    }
    stats.makeup_credits =
        crate::on_db!(db, pool => sqlx::query_scalar(CREDITS).bind(student).bind(now).fetch_one(pool).await)?;
    Ok(stats)
}
