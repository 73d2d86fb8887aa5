//! What the rest of Cedar may ask of the people slice without writing its SQL: the
//! workflows, scheduling and billing call these instead of reading `students`, `teachers`,
//! `enrollments` or `progress_notes` themselves.

use chrono::{NaiveDate, Utc};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::db::{Db, Tx};
use crate::error::DomainResult;
use crate::{on_db, on_tx};

pub use super::enrollments::{
    Enrollment, ensure_student, load as load_enrollment, notify as notify_enrollment,
    transition as transition_enrollment,
};

/// The language a family reads (`en` or `fr`; `en` for an unknown family).
pub async fn family_language(db: &Db, family: Uuid) -> DomainResult<String> {
    const SQL: &str = "SELECT preferred_language FROM families WHERE id = $1";
    let language: Option<String> = on_db!(db, pool => sqlx::query_scalar(SQL).bind(family).fetch_optional(pool).await)?;
    Ok(language.unwrap_or_else(|| "en".into()))
}

/// A student as a sibling check sees them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StudentBrief {
    pub id: Uuid,
    pub first_name: String,
    pub preferred_name: Option<String>,
    pub instrument: String,
    pub status: String,
    pub teacher_id: Option<Uuid>,
    pub family_id: Uuid,
}

const BRIEF: &str = "SELECT id, first_name, preferred_name, instrument, status, teacher_id, family_id FROM students";

/// One student, or `None`.
pub async fn student(db: &Db, id: Uuid) -> DomainResult<Option<StudentBrief>> {
    let sql = sqlx::AssertSqlSafe(format!("{BRIEF} WHERE id = $1"));
    Ok(on_db!(db, pool => sqlx::query_as::<_, StudentBrief>(sql).bind(id).fetch_optional(pool).await)?)
}

/// Every student of a family.
pub async fn family_students(db: &Db, family_id: Uuid) -> DomainResult<Vec<StudentBrief>> {
    let sql = sqlx::AssertSqlSafe(format!("{BRIEF} WHERE family_id = $1"));
    Ok(on_db!(db, pool => sqlx::query_as::<_, StudentBrief>(sql).bind(family_id).fetch_all(pool).await)?)
}

/// Submitted requests of a family for `instrument`, other than `except`.
pub async fn open_requests(db: &Db, family_id: Uuid, except: Uuid, instrument: &str) -> DomainResult<i64> {
    const SQL: &str = "SELECT COUNT(*) FROM enrollments WHERE family_id = $1 AND id <> $2 AND status = 'submitted' \
        AND instrument = $3";
    Ok(on_db!(db, pool => sqlx::query_scalar(SQL).bind(family_id).bind(except).bind(instrument).fetch_one(pool).await)?)
}

/// An active teacher of an instrument, with how many active students they teach.
#[derive(Debug, Clone)]
pub struct TeacherLoad {
    pub id: Uuid,
    pub name: String,
    pub active_students: i64,
}

/// Active teachers who teach `instrument`, in id order.
pub async fn teachers_of(db: &Db, instrument: &str) -> DomainResult<Vec<TeacherLoad>> {
    const SQL: &str = "SELECT id, first_name || ' ' || last_name, instruments, \
        (SELECT COUNT(*) FROM students s WHERE s.teacher_id = t.id AND s.status = 'active') \
        FROM teachers t WHERE active = TRUE ORDER BY id";
    let rows: Vec<(Uuid, String, SqlJson<Vec<String>>, i64)> =
        on_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, instruments, _)| instruments.0.iter().any(|i| i == instrument))
        .map(|(id, name, _, active_students)| TeacherLoad { id, name, active_students })
        .collect())
}

/// Makes a student active with `teacher` as their main teacher (keeping an earlier start date).
pub async fn activate_student(tx: &mut Tx, id: Uuid, teacher: Uuid, start_date: NaiveDate) -> DomainResult<()> {
    const SQL: &str = "UPDATE students SET status = 'active', teacher_id = $2, start_date = COALESCE(start_date, $3), \
        updated_at = $4 WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(teacher).bind(start_date).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    Ok(())
}

/// A progress note as a workflow reads it.
#[derive(Debug, Clone)]
pub struct NoteBrief {
    pub date: NaiveDate,
    pub body: String,
    pub goals: Option<String>,
}

/// The latest `limit` progress notes of a student, newest first.
pub async fn recent_notes(db: &Db, student: Uuid, limit: i64) -> DomainResult<Vec<NoteBrief>> {
    const SQL: &str = "SELECT note_date, body, goals FROM progress_notes WHERE student_id = $1 \
        ORDER BY note_date DESC, id DESC LIMIT $2";
    let rows: Vec<(NaiveDate, String, Option<String>)> =
        on_db!(db, pool => sqlx::query_as(SQL).bind(student).bind(limit).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|(date, body, goals)| NoteBrief { date, body, goals }).collect())
}

/// A student's progress notes dated in `[from, to]`, oldest first.
pub async fn notes_between(db: &Db, student: Uuid, from: NaiveDate, to: NaiveDate) -> DomainResult<Vec<NoteBrief>> {
    const SQL: &str = "SELECT note_date, body, goals FROM progress_notes WHERE student_id = $1 \
        AND note_date >= $2 AND note_date <= $3 ORDER BY note_date, id";
    let rows: Vec<(NaiveDate, String, Option<String>)> =
        on_db!(db, pool => sqlx::query_as(SQL).bind(student).bind(from).bind(to).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|(date, body, goals)| NoteBrief { date, body, goals }).collect())
}

/// The date of a student's latest progress note, if any.
pub async fn last_note_date(db: &Db, student: Uuid) -> DomainResult<Option<NaiveDate>> {
    const SQL: &str = "SELECT MAX(note_date) FROM progress_notes WHERE student_id = $1";
    Ok(on_db!(db, pool => sqlx::query_scalar(SQL).bind(student).fetch_one(pool).await)?)
}

/// Active students (all, or those named), with what a report needs to know about them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportSubject {
    pub id: Uuid,
    pub family_id: Uuid,
    pub first_name: String,
    pub preferred_name: Option<String>,
    pub instrument: String,
    pub level: Option<String>,
    pub teacher_id: Option<Uuid>,
    pub teacher_name: Option<String>,
    pub teacher_user_id: Option<Uuid>,
    pub start_date: Option<NaiveDate>,
    pub language: String,
}

pub async fn report_subjects(db: &Db, only: Option<&[Uuid]>) -> DomainResult<Vec<ReportSubject>> {
    const SQL: &str = "SELECT s.id, s.family_id, s.first_name, s.preferred_name, s.instrument, s.level, s.teacher_id, \
        t.first_name || ' ' || t.last_name AS teacher_name, (SELECT u.id FROM users u WHERE u.teacher_id = t.id \
        AND u.status = 'active' ORDER BY u.id LIMIT 1) AS teacher_user_id, s.start_date, f.preferred_language AS language \
        FROM students s JOIN families f ON f.id = s.family_id LEFT JOIN teachers t ON t.id = s.teacher_id \
        WHERE s.status = 'active' AND f.erased_at IS NULL ORDER BY s.id";
    let all = on_db!(db, pool => sqlx::query_as::<_, ReportSubject>(SQL).fetch_all(pool).await)?;
    Ok(match only {
        Some(ids) => all.into_iter().filter(|s| ids.contains(&s.id)).collect(),
        None => all,
    })
}

/// A progress note written by a workflow (or a person).
pub struct NewNote<'a> {
    pub student_id: Uuid,
    pub teacher_id: Option<Uuid>,
    pub author_id: Option<Uuid>,
    pub date: NaiveDate,
    pub body: &'a str,
    pub pieces: Value,
    pub goals: Option<&'a str>,
}

/// Writes a progress note; returns its id.
pub async fn add_note(tx: &mut Tx, note: NewNote<'_>) -> DomainResult<Uuid> {
    const SQL: &str = "INSERT INTO progress_notes (id, student_id, teacher_id, author_id, note_date, body, pieces, goals, \
        created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    let id = Uuid::now_v7();
    on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(note.student_id).bind(note.teacher_id).bind(note.author_id)
        .bind(note.date).bind(note.body).bind(SqlJson(&note.pieces)).bind(note.goals).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    Ok(id)
}
