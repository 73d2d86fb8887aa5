//! How a [`Lesson`] row decodes.

use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Row};
use uuid::Uuid;

use super::lessons::Lesson;
use super::{Attendance, LessonStatus};

/// A row of either backend that holds a lesson in [`super::lessons::COLUMNS`] order (the
/// decoding bounds, written once).
trait LessonRow<'r>: Row {
    fn lesson(&'r self) -> sqlx::Result<Lesson>;
}

/// Rows decode by position, in [`super::lessons::COLUMNS`] order, without sqlx's per-value
/// type check: the week view decodes 1,600 values per request, and looking each up by name
/// and checking its type was a tenth of its CPU. The column list is a constant, and every
/// query of lessons runs in the tests on both backends; a mismatch would fail to decode.
impl<'r, R: Row> LessonRow<'r> for R
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
    fn lesson(&'r self) -> sqlx::Result<Lesson> {
        Ok(Lesson {
            id: self.try_get_unchecked(0)?,
            series_id: self.try_get_unchecked(1)?,
            teacher_id: self.try_get_unchecked(2)?,
            student_id: self.try_get_unchecked(3)?,
            room_id: self.try_get_unchecked(4)?,
            starts_at: self.try_get_unchecked(5)?,
            ends_at: self.try_get_unchecked(6)?,
            status: self.try_get_unchecked(7)?,
            attendance: self.try_get_unchecked(8)?,
            attendance_note: self.try_get_unchecked(9)?,
            is_makeup: self.try_get_unchecked(10)?,
            availability_override: self.try_get_unchecked(11)?,
            notes: self.try_get_unchecked(12)?,
            substitute_for: self.try_get_unchecked(13)?,
            created_at: self.try_get_unchecked(14)?,
            updated_at: self.try_get_unchecked(15)?,
        })
    }
}

impl<'r, R: LessonRow<'r>> sqlx::FromRow<'r, R> for Lesson {
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        row.lesson()
    }
}

/// A lesson and its row's version number (`COLUMNS, l.row_version`), for the lesson list's
/// kept pages (`super::lesson_pages`).
pub struct Versioned {
    pub lesson: Lesson,
    pub version: i64,
}

impl<'r, R: LessonRow<'r>> sqlx::FromRow<'r, R> for Versioned
where
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Self { lesson: row.lesson()?, version: row.try_get_unchecked(16)? })
    }
}
