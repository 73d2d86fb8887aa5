//! Tuition rates (per lesson length, teacher and instrument) and how each student is billed.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, Role};
use crate::domain::Cents;
use crate::error::{ApiError, ApiResult};
use crate::http::Json;
use crate::http::pagination::Page;
use crate::http::validate::Errors;
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

crate::text_enum! {
    /// How a student's tuition is billed.
    pub enum BillingMode {
        PerLesson = "per_lesson",
        Monthly = "monthly",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_rates, create_rate))
        .routes(routes!(delete_rate))
        .routes(routes!(get_student_billing, put_student_billing))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Rate {
    id: Uuid,
    lesson_minutes: i32,
    /// Only for this teacher (most specific rate wins: teacher + instrument, teacher,
    /// instrument, then the school default).
    teacher_id: Option<Uuid>,
    instrument: Option<String>,
    per_lesson_cents: Cents,
    monthly_cents: Cents,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRate {
    lesson_minutes: i32,
    teacher_id: Option<Uuid>,
    instrument: Option<String>,
    per_lesson_cents: Cents,
    monthly_cents: Cents,
}

/// Tuition rates (admin).
#[utoipa::path(get, path = "/v1/tuition-rates", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Rate>)), (status = 401), (status = 403)))]
async fn list_rates(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Json<Page<Rate>>> {
    const SQL: &str = "SELECT id, lesson_minutes, teacher_id, instrument, per_lesson_cents, monthly_cents, created_at \
        FROM tuition_rates ORDER BY lesson_minutes, id";
    let items = on_db!(&state.db, pool => sqlx::query_as::<_, Rate>(SQL).fetch_all(pool).await)?;
    Ok(Json(Page { items, next_cursor: None }))
}

/// Adds a tuition rate (admin); one per lesson length, teacher and instrument.
#[utoipa::path(post, path = "/v1/tuition-rates", tag = "billing", request_body = NewRate, security(("bearer" = [])),
    responses((status = 201, body = Rate), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create_rate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<NewRate>,
) -> ApiResult<(StatusCode, Json<Rate>)> {
    let mut errors = Errors::default();
    if !(15..=240).contains(&input.lesson_minutes) {
        errors.add("lesson_minutes", "must be between 15 and 240");
    }
    for (field, value) in [("per_lesson_cents", input.per_lesson_cents), ("monthly_cents", input.monthly_cents)] {
        if !(Cents(0)..=Cents(10_000_000)).contains(&value) {
            errors.add(field, "must be between 0 and 10000000 cents");
        }
    }
    let instrument = input.instrument.as_deref().map(|i| errors.instrument("instrument", i));
    if let Some(teacher) = input.teacher_id
        && crate::people::teacher_exists(&state.db, teacher).await.is_err()
    {
        errors.add("teacher_id", "No such teacher");
    }
    errors.into_result()?;
    let rate = Rate {
        id: Uuid::now_v7(),
        lesson_minutes: input.lesson_minutes,
        teacher_id: input.teacher_id,
        instrument,
        per_lesson_cents: input.per_lesson_cents,
        monthly_cents: input.monthly_cents,
        created_at: Utc::now(),
    };
    const SQL: &str = "INSERT INTO tuition_rates (id, lesson_minutes, teacher_id, instrument, per_lesson_cents, \
        monthly_cents, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(rate.id).bind(rate.lesson_minutes).bind(rate.teacher_id)
        .bind(&rate.instrument).bind(rate.per_lesson_cents).bind(rate.monthly_cents).bind(rate.created_at)
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("tuition_rate.created").by(&admin).subject("tuition_rate", rate.id))
        .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(rate)))
}

/// Removes a tuition rate (admin); invoices already issued keep their amounts.
#[utoipa::path(delete, path = "/v1/tuition-rates/{id}", tag = "billing", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn delete_rate(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query("DELETE FROM tuition_rates WHERE id = $1").bind(id)
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("tuition_rate.deleted").by(&admin).subject("tuition_rate", id)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// Per-student billing

#[derive(Debug, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct StudentBilling {
    /// `per_lesson` (the scheduled lessons of the period) or `monthly` (flat, prorated).
    billing_mode: String,
    /// First day billed in flat mode (from the student record).
    #[serde(default)]
    start_date: Option<NaiveDate>,
    /// Last day billed (withdrawal); flat mode prorates the last month.
    #[serde(default)]
    end_date: Option<NaiveDate>,
}

/// How a student is billed (admin; the family's parents may read it).
#[utoipa::path(get, path = "/v1/students/{id}/billing", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = StudentBilling), (status = 401), (status = 404)))]
async fn get_student_billing(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<StudentBilling>> {
    if user.role == Role::Teacher {
        return Err(ApiError::Forbidden);
    }
    crate::people::students::find_visible(&state.db, &user, id).await?;
    const SQL: &str = "SELECT billing_mode, start_date, end_date FROM students WHERE id = $1";
    Ok(Json(on_db!(&state.db, pool => sqlx::query_as::<_, StudentBilling>(SQL).bind(id).fetch_one(pool).await)?))
}

/// Sets how a student is billed (admin).
#[utoipa::path(put, path = "/v1/students/{id}/billing", tag = "billing", request_body = StudentBilling, security(("bearer" = [])),
    responses((status = 200, body = StudentBilling), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn put_student_billing(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<StudentBilling>,
) -> ApiResult<Json<StudentBilling>> {
    crate::people::students::find_visible(&state.db, &admin, id).await?;
    let mut errors = Errors::default();
    errors.choice::<BillingMode>("billing_mode", &input.billing_mode);
    if let (Some(start), Some(end)) = (input.start_date, input.end_date)
        && end < start
    {
        errors.add("end_date", "must not be before start_date");
    }
    errors.into_result()?;
    const SQL: &str = "UPDATE students SET billing_mode = $2, start_date = COALESCE($3, start_date), end_date = $4, \
        updated_at = $5 WHERE id = $1";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(&input.billing_mode).bind(input.start_date).bind(input.end_date)
        .bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("student.billing_updated").by(&admin).subject("student", id)).await?;
    const READ: &str = "SELECT billing_mode, start_date, end_date FROM students WHERE id = $1";
    let billing =
        on_tx!(&mut tx, conn => sqlx::query_as::<_, StudentBilling>(READ).bind(id).fetch_one(&mut **conn).await)?;
    tx.commit().await?;
    Ok(Json(billing))
}
