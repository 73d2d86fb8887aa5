//! `/v1/teachers`: who teaches what. Everyone signed in may read the roster; pay rates are for
//! admins only. A teacher record links to at most one account (`users.teacher_id`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{calendar_url, new_calendar_token};
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser};
use crate::db::{CommitMark, Db, Tx};
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query, nullable};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_teachers, create_teacher)).routes(routes!(
        get_teacher,
        update_teacher,
        delete_teacher
    ))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TeacherRow {
    pub id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone: Option<String>,
    pub instruments: SqlJson<Vec<String>>,
    pub bio: Option<String>,
    pub pay_rate_cents: Option<i64>,
    pub active: bool,
    pub calendar_token: String,
    pub user_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "t.id, t.first_name, t.last_name, t.email, t.phone, t.instruments, t.bio, t.pay_rate_cents, \
    t.active, t.calendar_token, (SELECT u.id FROM users u WHERE u.teacher_id = t.id) AS user_id, t.created_at, \
    t.updated_at";

#[derive(Debug, Serialize, ToSchema)]
pub struct Teacher {
    id: Uuid,
    first_name: String,
    last_name: String,
    email: String,
    phone: Option<String>,
    instruments: Vec<String>,
    bio: Option<String>,
    /// Hourly pay in cents, for payroll (admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pay_rate_cents: Option<i64>,
    active: bool,
    /// The teacher's sign-in account, if any.
    user_id: Option<Uuid>,
    /// iCalendar feed of the teacher's lessons (secret URL; the teacher and admins only).
    #[serde(skip_serializing_if = "Option::is_none")]
    calendar_url: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn present(state: &AppState, user: &CurrentUser, row: TeacherRow) -> Teacher {
    let own = user.teacher_id == Some(row.id);
    Teacher {
        calendar_url: (user.is_admin() || own).then(|| calendar_url(state, &row.calendar_token)),
        pay_rate_cents: if user.is_admin() { row.pay_rate_cents } else { None },
        id: row.id,
        first_name: row.first_name,
        last_name: row.last_name,
        email: row.email,
        phone: row.phone,
        instruments: row.instruments.0,
        bio: row.bio,
        active: row.active,
        user_id: row.user_id,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

pub(crate) async fn find(db: &Db, id: Uuid) -> ApiResult<TeacherRow> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM teachers t WHERE t.id = $1"));
    on_db!(db, pool => sqlx::query_as::<_, TeacherRow>(sql).bind(id).fetch_optional(pool).await)?
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TeacherFilter {
    /// Teachers of this instrument.
    instrument: Option<String>,
    /// Only active (true) or inactive (false) teachers.
    active: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The teaching roster.
#[utoipa::path(get, path = "/v1/teachers", tag = "teachers", params(TeacherFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Teacher>)), (status = 401)))]
async fn list_teachers(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<TeacherFilter>,
) -> ApiResult<Json<Page<Teacher>>> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let instrument =
        filter.instrument.as_deref().map(|i| format!("%\"{}\"%", i.trim().to_lowercase().replace('"', "")));
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM teachers t WHERE ($1 IS NULL OR CAST(t.instruments AS TEXT) LIKE $1) \
         AND ($2 IS NULL OR t.active = $2) AND ($3 IS NULL OR t.id > $3) ORDER BY t.id LIMIT $4"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, TeacherRow>(sql)
        .bind(&instrument).bind(filter.active).bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    let page = Page::from_rows(rows, &page, |t| t.id)?;
    Ok(Json(Page {
        items: page.items.into_iter().map(|row| present(&state, &user, row)).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTeacher {
    first_name: String,
    last_name: String,
    email: String,
    phone: Option<String>,
    instruments: Vec<String>,
    bio: Option<String>,
    pay_rate_cents: Option<i64>,
    /// Default true.
    active: Option<bool>,
    /// Link an existing account (it gets the teacher's scope).
    user_id: Option<Uuid>,
}

async fn link_account(tx: &mut Tx, teacher_id: Uuid, user_id: Option<Uuid>) -> ApiResult<()> {
    const UNLINK: &str = "UPDATE users SET teacher_id = NULL WHERE teacher_id = $1";
    const LINK: &str =
        "UPDATE users SET teacher_id = $1, updated_at = $3 WHERE id = $2 AND role IN ('teacher', 'admin')";
    on_tx!(tx, conn => sqlx::query(UNLINK).bind(teacher_id).execute(&mut **conn).await.map(|_| ()))?;
    if let Some(user_id) = user_id {
        let linked = on_tx!(tx, conn => sqlx::query(LINK).bind(teacher_id).bind(user_id).bind(Utc::now())
            .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
        if linked == 0 {
            return Err(ApiError::invalid("user_id", "is not a teacher or admin account"));
        }
    }
    Ok(())
}

fn validate_pay(errors: &mut Errors, pay: Option<i64>) {
    if pay.is_some_and(|p| !(0..=10_000_000).contains(&p)) {
        errors.add("pay_rate_cents", "must be between 0 and 10000000");
    }
}

/// Adds a teacher (admin).
#[utoipa::path(post, path = "/v1/teachers", tag = "teachers", request_body = CreateTeacher, security(("bearer" = [])),
    responses((status = 201, body = Teacher), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create_teacher(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<CreateTeacher>,
) -> ApiResult<(StatusCode, Json<Teacher>)> {
    let mut errors = Errors::default();
    let first = errors.name("first_name", &input.first_name);
    let last = errors.name("last_name", &input.last_name);
    let email = errors.email("email", &input.email);
    let phone = errors.optional_phone("phone", input.phone.as_deref());
    let instruments = errors.instruments("instruments", &input.instruments);
    if instruments.is_empty() {
        errors.add("instruments", "must list at least one instrument");
    }
    let bio = errors.optional_text("bio", input.bio.as_deref());
    validate_pay(&mut errors, input.pay_rate_cents);
    errors.into_result()?;

    const SQL: &str = "INSERT INTO teachers (id, first_name, last_name, email, phone, instruments, bio, pay_rate_cents, \
        active, calendar_token, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)";
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL)
        .bind(id).bind(&first).bind(&last).bind(&email).bind(&phone).bind(SqlJson(&instruments)).bind(&bio)
        .bind(input.pay_rate_cents).bind(input.active.unwrap_or(true)).bind(new_calendar_token()).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    link_account(&mut tx, id, input.user_id).await?;
    audit::record_tx(&mut tx, AuditEvent::new("teacher.created").by(&admin).subject("teacher", id)).await?;
    CommitMark::answer_is(201, format!("/v1/teachers/{id}"));
    tx.commit().await?;
    if let Some(user_id) = input.user_id {
        state.auth.forget_user(user_id);
    }
    Ok((StatusCode::CREATED, Json(present(&state, &admin, find(&state.db, id).await?))))
}

/// One teacher.
#[utoipa::path(get, path = "/v1/teachers/{id}", tag = "teachers", security(("bearer" = [])),
    responses((status = 200, body = Teacher), (status = 401), (status = 404)))]
async fn get_teacher(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Teacher>> {
    Ok(Json(present(&state, &user, find(&state.db, id).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTeacher {
    first_name: Option<String>,
    last_name: Option<String>,
    email: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    instruments: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    bio: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>)]
    pay_rate_cents: Option<Option<i64>>,
    active: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    user_id: Option<Option<Uuid>>,
}

/// Changes a teacher (admin).
#[utoipa::path(patch, path = "/v1/teachers/{id}", tag = "teachers", request_body = UpdateTeacher, security(("bearer" = [])),
    responses((status = 200, body = Teacher), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn update_teacher(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateTeacher>,
) -> ApiResult<Json<Teacher>> {
    let current = find(&state.db, id).await?;
    let mut errors = Errors::default();
    let first = input.first_name.as_deref().map_or(current.first_name.clone(), |v| errors.name("first_name", v));
    let last = input.last_name.as_deref().map_or(current.last_name.clone(), |v| errors.name("last_name", v));
    let email = input.email.as_deref().map_or(current.email.clone(), |v| errors.email("email", v));
    let phone = match &input.phone {
        Some(v) => errors.optional_phone("phone", v.as_deref()),
        None => current.phone.clone(),
    };
    let instruments = match &input.instruments {
        Some(list) => {
            let list = errors.instruments("instruments", list);
            if list.is_empty() {
                errors.add("instruments", "must list at least one instrument");
            }
            list
        }
        None => current.instruments.0.clone(),
    };
    let bio = match &input.bio {
        Some(v) => errors.optional_text("bio", v.as_deref()),
        None => current.bio.clone(),
    };
    let pay = input.pay_rate_cents.unwrap_or(current.pay_rate_cents);
    validate_pay(&mut errors, pay);
    errors.into_result()?;

    const SQL: &str = "UPDATE teachers SET first_name = $2, last_name = $3, email = $4, phone = $5, instruments = $6, \
        bio = $7, pay_rate_cents = $8, active = $9, updated_at = $10 WHERE id = $1";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL)
        .bind(id).bind(&first).bind(&last).bind(&email).bind(&phone).bind(SqlJson(&instruments)).bind(&bio)
        .bind(pay).bind(input.active.unwrap_or(current.active)).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    if let Some(user_id) = input.user_id {
        link_account(&mut tx, id, user_id).await?;
    }
    audit::record_tx(
        &mut tx,
        AuditEvent::new("teacher.updated").by(&admin).subject("teacher", id).details(json!({"active": input.active})),
    )
    .await?;
    tx.commit().await?;
    for user in [current.user_id, input.user_id.flatten()].into_iter().flatten() {
        state.auth.forget_user(user);
    }
    Ok(Json(present(&state, &admin, find(&state.db, id).await?)))
}

/// Deletes a teacher (admin); their students keep their records without a main teacher.
/// Prefer `active: false` to keep history.
#[utoipa::path(delete, path = "/v1/teachers/{id}", tag = "teachers", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn delete_teacher(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let current = find(&state.db, id).await?;
    const SQL: &str = "DELETE FROM teachers WHERE id = $1";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|_| ())).map_err(
        crate::db::still_referenced("The teacher still has records that depend on them; deactivate them instead"),
    )?;
    audit::record_tx(&mut tx, AuditEvent::new("teacher.deleted").by(&admin).subject("teacher", id)).await?;
    tx.commit().await?;
    if let Some(user) = current.user_id {
        state.auth.forget_user(user);
    }
    Ok(StatusCode::NO_CONTENT)
}
