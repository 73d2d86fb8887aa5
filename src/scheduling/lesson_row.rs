//! How a [`Lesson`] row decodes.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lessons::Lesson;
use super::{Attendance, LessonStatus};

/// A lesson's columns in [`super::lessons::COLUMNS`] order. Rows decode by position, as tuples do: the week
/// view decodes 1,600 columns per request, and looking each up by name was 5 % of its CPU.
type LessonColumns = (
    Uuid,
    Option<Uuid>,
    Uuid,
    Uuid,
    Option<Uuid>,
    DateTime<Utc>,
    DateTime<Utc>,
    LessonStatus,
    Option<Attendance>,
    Option<String>,
    bool,
    bool,
    Option<String>,
    Option<Uuid>,
    DateTime<Utc>,
    DateTime<Utc>,
);

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for Lesson
where
    LessonColumns: sqlx::FromRow<'r, R>,
{
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        let (
            id,
            series_id,
            teacher_id,
            student_id,
            room_id,
            starts_at,
            ends_at,
            status,
            attendance,
            attendance_note,
            is_makeup,
            availability_override,
            notes,
            substitute_for,
            created_at,
            updated_at,
        ) = LessonColumns::from_row(row)?;
        Ok(Self {
            id,
            series_id,
            teacher_id,
            student_id,
            room_id,
            starts_at,
            ends_at,
            status,
            attendance,
            attendance_note,
            is_makeup,
            availability_override,
            notes,
            substitute_for,
            created_at,
            updated_at,
        })
    }
}
