//! How a [`Lesson`] row decodes.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row};
use uuid::Uuid;

use super::lessons::Lesson;
use super::{Attendance, LessonStatus};

/// Rows decode by position, in [`super::lessons::COLUMNS`] order, without sqlx's per-value
/// type check: the week view decodes 1,600 values per request, and looking each up by name
/// and checking its type was a tenth of its CPU. The column list is a constant, and every
/// query of lessons runs in the tests on both backends; a mismatch would fail to decode.
impl<'r, R: Row> sqlx::FromRow<'r, R> for Lesson
where
    usize: ColumnIndex<R>,
    Uuid: Decode<'r, R::Database>,
    DateTime<Utc>: Decode<'r, R::Database>,
    LessonStatus: Decode<'r, R::Database>,
    bool: Decode<'r, R::Database>,
    Option<Uuid>: Decode<'r, R::Database>,
    Option<Attendance>: Decode<'r, R::Database>,
    Option<String>: Decode<'r, R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        lesson(row)
    }
}

/// A lesson and its row's version number (`COLUMNS, l.row_version`), for the lesson list's
/// kept pages (`super::lesson_pages`).
pub struct Versioned {
    pub lesson: Lesson,
    pub version: i64,
}

impl<'r, R: Row> sqlx::FromRow<'r, R> for Versioned
where
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database>,
    Uuid: Decode<'r, R::Database>,
    DateTime<Utc>: Decode<'r, R::Database>,
    LessonStatus: Decode<'r, R::Database>,
    bool: Decode<'r, R::Database>,
    Option<Uuid>: Decode<'r, R::Database>,
    Option<Attendance>: Decode<'r, R::Database>,
    Option<String>: Decode<'r, R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Self { lesson: lesson(row)?, version: row.try_get_unchecked(16)? })
    }
}

fn lesson<'r, R: Row>(row: &'r R) -> sqlx::Result<Lesson>
where
    usize: ColumnIndex<R>,
    Uuid: Decode<'r, R::Database>,
    DateTime<Utc>: Decode<'r, R::Database>,
    LessonStatus: Decode<'r, R::Database>,
    bool: Decode<'r, R::Database>,
    Option<Uuid>: Decode<'r, R::Database>,
    Option<Attendance>: Decode<'r, R::Database>,
    Option<String>: Decode<'r, R::Database>,
{
    Ok(Lesson {
        id: row.try_get_unchecked(0)?,
        series_id: row.try_get_unchecked(1)?,
        teacher_id: row.try_get_unchecked(2)?,
        student_id: row.try_get_unchecked(3)?,
        room_id: row.try_get_unchecked(4)?,
        starts_at: row.try_get_unchecked(5)?,
        ends_at: row.try_get_unchecked(6)?,
        status: row.try_get_unchecked(7)?,
        attendance: row.try_get_unchecked(8)?,
        attendance_note: row.try_get_unchecked(9)?,
        is_makeup: row.try_get_unchecked(10)?,
        availability_override: row.try_get_unchecked(11)?,
        notes: row.try_get_unchecked(12)?,
        substitute_for: row.try_get_unchecked(13)?,
        created_at: row.try_get_unchecked(14)?,
        updated_at: row.try_get_unchecked(15)?,
    })
}
