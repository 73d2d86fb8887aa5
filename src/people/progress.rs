//! `/v1/students/{id}/progress-notes`: what a teacher writes after lessons. Teachers write for
//! their own students, admins for anyone; the family reads its children's notes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::students;
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::error::ApiResult;
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_notes, create_note))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProgressNote {
    id: Uuid,
    student_id: Uuid,
    teacher_id: Option<Uuid>,
    author_id: Uuid,
    /// The day the note is about.
    #[sqlx(rename = "note_date")]
    date: NaiveDate,
    lesson_id: Option<Uuid>,
    #[sqlx(rename = "body")]
    text: String,
    /// Pieces and repertoire worked on.
    #[schema(value_type = Vec<String>)]
    pieces: SqlJson<Vec<String>>,
    goals: Option<String>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, student_id, teacher_id, author_id, note_date, lesson_id, body, pieces, goals, created_at";

/// A student's progress notes, newest first (whoever may see the student).
#[utoipa::path(get, path = "/v1/students/{id}/progress-notes", tag = "students", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<ProgressNote>)), (status = 401), (status = 404)))]
async fn list_notes(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(student_id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<ProgressNote>>> {
    students::find_visible(&state.db, &user, student_id).await?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM progress_notes WHERE student_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, ProgressNote>(sql)
        .bind(student_id).bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |n| n.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNote {
    /// Default today (school time zone).
    date: Option<NaiveDate>,
    lesson_id: Option<Uuid>,
    text: String,
    pieces: Option<Vec<String>>,
    goals: Option<String>,
}

/// Writes a progress note (the student's teachers and admins).
#[utoipa::path(post, path = "/v1/students/{id}/progress-notes", tag = "students", request_body = CreateNote, security(("bearer" = [])),
    responses((status = 201, body = ProgressNote), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn create_note(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(student_id): Path<Uuid>,
    Json(input): Json<CreateNote>,
) -> ApiResult<(StatusCode, Json<ProgressNote>)> {
    // A parent may read the student but never write: 404 first (not theirs), then 403.
    students::find_visible(&state.db, &user, student_id).await?;
    user.require(&[Role::Admin, Role::Teacher])?;
    let mut errors = Errors::default();
    let text = input.text.trim().to_owned();
    if text.is_empty() || text.chars().count() > 10_000 {
        errors.add("text", "must be 1 to 10000 characters");
    }
    let pieces: Vec<String> = input.pieces.unwrap_or_default().into_iter().map(|p| p.trim().to_owned()).collect();
    if pieces.len() > 50 || pieces.iter().any(|p| p.is_empty() || p.chars().count() > 200) {
        errors.add("pieces", "must be at most 50 pieces of 1 to 200 characters");
    }
    let goals = errors.optional_text("goals", input.goals.as_deref());
    let today = Utc::now().with_timezone(&state.settings.timezone).date_naive();
    let date = input.date.unwrap_or(today);
    if date > today {
        errors.add("date", "must not be in the future");
    }
    errors.into_result()?;

    const SQL: &str = "INSERT INTO progress_notes (id, student_id, teacher_id, author_id, note_date, lesson_id, body, \
        pieces, goals, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL)
        .bind(id).bind(student_id).bind(user.teacher_id).bind(user.id).bind(date).bind(input.lesson_id).bind(&text)
        .bind(SqlJson(&pieces)).bind(&goals).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("progress_note.created").by(&user).subject("student", student_id))
        .await?;
    tx.commit().await?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM progress_notes WHERE id = $1"));
    let note = on_db!(&state.db, pool => sqlx::query_as::<_, ProgressNote>(sql).bind(id).fetch_one(pool).await)?;
    Ok((StatusCode::CREATED, Json(note)))
}
