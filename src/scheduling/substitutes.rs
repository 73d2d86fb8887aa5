//! A substitute teaches one occurrence in place of the student's own teacher. The lesson's
//! `teacher_id` becomes the substitute (so their timetable, conflicts and feed show it) and
//! `substitute_for` keeps the regular teacher, whose rate bills it unless
//! `CEDAR_SUBSTITUTE_RATE=substitute`. Naming the regular teacher again undoes it.

use axum::extract::{Path, State};
use chrono::Utc;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::LessonStatus;
use super::booking::{self, Slot};
use super::lessons::{Lesson, find_visible};
use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ApiResult};
use crate::http::Json;
use crate::on_tx;
use crate::privacy::audit::{self, AuditEvent};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(assign_substitute))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubstituteInput {
    /// The teacher who teaches this occurrence; the lesson's regular teacher undoes a substitution.
    teacher_id: Uuid,
    /// Book the substitute outside their weekly availability.
    #[serde(default)]
    override_availability: bool,
}

/// Assigns a substitute teacher to one upcoming lesson (admins): checked for the substitute's
/// other lessons, availability and time off like any booking; the family is emailed.
#[utoipa::path(post, path = "/v1/lessons/{id}/substitute", tag = "scheduling", request_body = SubstituteInput,
    security(("bearer" = [])),
    responses((status = 200, body = Lesson), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The substitute is not free, or the lesson is past or cancelled"), (status = 422)))]
async fn assign_substitute(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<SubstituteInput>,
) -> ApiResult<Json<Lesson>> {
    let lesson = find_visible(&state.db, &admin, id).await?;
    if crate::people::teacher_exists(&state.db, input.teacher_id).await.is_err() {
        return Err(ApiError::invalid("teacher_id", "No such teacher"));
    }
    if lesson.status != LessonStatus::Scheduled || lesson.starts_at <= Utc::now() {
        return Err(ApiError::conflict("Only an upcoming scheduled lesson can get a substitute"));
    }
    let regular = lesson.substitute_for.unwrap_or(lesson.teacher_id);
    if input.teacher_id == lesson.teacher_id {
        return Ok(Json(lesson));
    }
    let tz = state.settings.timezone;
    let slot = Slot {
        starts_at: lesson.starts_at,
        ends_at: lesson.ends_at,
        teacher_id: input.teacher_id,
        student_id: lesson.student_id,
        room_id: lesson.room_id,
    };
    let mut tx = state.db.begin().await?;
    let conflicts = booking::check(&mut tx, tz, &[slot], &[lesson.id], !input.override_availability).await?;
    if !conflicts.is_empty() {
        return Err(booking::conflict_error(conflicts).into());
    }
    let substitute_for = (input.teacher_id != regular).then_some(regular);
    const UPDATE: &str = "UPDATE lessons SET teacher_id = $2, substitute_for = $3, availability_override = $4, \
        updated_at = $5 WHERE id = $1 AND status = 'scheduled'";
    on_tx!(&mut tx, conn => sqlx::query(UPDATE).bind(id).bind(input.teacher_id).bind(substitute_for)
        .bind(lesson.availability_override || input.override_availability).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    notify_family(&mut tx, &state, &lesson, input.teacher_id, substitute_for).await?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("lesson.substitute")
            .by(&admin)
            .subject("lesson", id)
            .details(json!({"from": lesson.teacher_id, "to": input.teacher_id, "substitute_for": substitute_for})),
    )
    .await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(Json(find_visible(&state.db, &admin, id).await?))
}

async fn notify_family(
    tx: &mut crate::db::Tx,
    state: &AppState,
    lesson: &Lesson,
    teacher: Uuid,
    regular: Option<Uuid>,
) -> ApiResult<()> {
    const STUDENT: &str = "SELECT family_id, COALESCE(preferred_name, first_name) FROM students WHERE id = $1";
    const TEACHER: &str = "SELECT first_name || ' ' || last_name FROM teachers WHERE id = $1";
    let (family, student): (Uuid, String) =
        on_tx!(tx, conn => sqlx::query_as(STUDENT).bind(lesson.student_id).fetch_one(&mut **conn).await)?;
    let substitute: String =
        on_tx!(tx, conn => sqlx::query_scalar(TEACHER).bind(teacher).fetch_one(&mut **conn).await)?;
    let regular: Option<String> = match regular {
        Some(id) => on_tx!(tx, conn => sqlx::query_scalar(TEACHER).bind(id).fetch_optional(&mut **conn).await)?,
        None => None,
    };
    let tz = state.settings.timezone;
    let starts_at = lesson.starts_at;
    let vars = |language: &str| {
        json!({"student": student, "when": crate::messaging::when(starts_at, tz, language), "substitute": substitute,
            "regular": regular})
    };
    let key = format!("substitute:{}:{teacher}", lesson.id);
    crate::messaging::email_family(tx, &state.settings, family, "lesson_substitute", vars, Some(&key)).await?;
    Ok(())
}
