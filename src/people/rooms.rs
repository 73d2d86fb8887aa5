//! `/v1/rooms`: teaching rooms, their capacity and the instruments they are equipped for.
//! Admins manage them; admins and teachers read them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, Role};
use crate::db::{CommitMark, Db};
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query, nullable};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_rooms, create_room)).routes(routes!(get_room, update_room, delete_room))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Room {
    id: Uuid,
    name: String,
    capacity: i32,
    /// Instruments the room is equipped for (e.g. a piano); empty means any.
    #[schema(value_type = Vec<String>)]
    instruments: SqlJson<Vec<String>>,
    notes: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, capacity, instruments, notes, created_at, updated_at";

async fn find(db: &Db, id: Uuid) -> ApiResult<Room> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM rooms WHERE id = $1"));
    on_db!(db, pool => sqlx::query_as::<_, Room>(sql).bind(id).fetch_optional(pool).await)?.ok_or(ApiError::NotFound)
}

/// Rooms (admins and teachers).
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Room>)), (status = 401), (status = 403)))]
async fn list_rooms(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Room>>> {
    user.require(&[Role::Admin, Role::Teacher])?;
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM rooms WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Room>(sql).bind(page.after()?).bind(page.fetch_limit()?)
        .fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |r| r.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    name: String,
    capacity: i32,
    instruments: Option<Vec<String>>,
    notes: Option<String>,
}

fn validate_capacity(errors: &mut Errors, capacity: i32) {
    if !(1..=200).contains(&capacity) {
        errors.add("capacity", "must be between 1 and 200");
    }
}

/// Adds a room (admin).
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", request_body = CreateRoom, security(("bearer" = [])),
    responses((status = 201, body = Room), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create_room(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<CreateRoom>,
) -> ApiResult<(StatusCode, Json<Room>)> {
    let mut errors = Errors::default();
    let name = errors.name("name", &input.name);
    validate_capacity(&mut errors, input.capacity);
    let instruments = errors.instruments("instruments", input.instruments.as_deref().unwrap_or_default());
    let notes = errors.optional_text("notes", input.notes.as_deref());
    errors.into_result()?;
    const SQL: &str = "INSERT INTO rooms (id, name, capacity, instruments, notes, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $6)";
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(&name).bind(input.capacity).bind(SqlJson(&instruments))
        .bind(&notes).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("room.created").by(&admin).subject("room", id)).await?;
    CommitMark::answer_is(201, format!("/v1/rooms/{id}"));
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(find(&state.db, id).await?)))
}

/// One room (admins and teachers).
#[utoipa::path(get, path = "/v1/rooms/{id}", tag = "rooms", security(("bearer" = [])),
    responses((status = 200, body = Room), (status = 401), (status = 403), (status = 404)))]
async fn get_room(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Json<Room>> {
    user.require(&[Role::Admin, Role::Teacher])?;
    Ok(Json(find(&state.db, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoom {
    name: Option<String>,
    capacity: Option<i32>,
    instruments: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    notes: Option<Option<String>>,
}

/// Changes a room (admin).
#[utoipa::path(patch, path = "/v1/rooms/{id}", tag = "rooms", request_body = UpdateRoom, security(("bearer" = [])),
    responses((status = 200, body = Room), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn update_room(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateRoom>,
) -> ApiResult<Json<Room>> {
    let current = find(&state.db, id).await?;
    let mut errors = Errors::default();
    let name = input.name.as_deref().map_or(current.name.clone(), |v| errors.name("name", v));
    let capacity = input.capacity.unwrap_or(current.capacity);
    validate_capacity(&mut errors, capacity);
    let instruments = match &input.instruments {
        Some(list) => errors.instruments("instruments", list),
        None => current.instruments.0.clone(),
    };
    let notes = match &input.notes {
        Some(v) => errors.optional_text("notes", v.as_deref()),
        None => current.notes.clone(),
    };
    errors.into_result()?;
    const SQL: &str =
        "UPDATE rooms SET name = $2, capacity = $3, instruments = $4, notes = $5, updated_at = $6 WHERE id = $1";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(&name).bind(capacity).bind(SqlJson(&instruments))
        .bind(&notes).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("room.updated").by(&admin).subject("room", id)).await?;
    tx.commit().await?;
    Ok(Json(find(&state.db, id).await?))
}

/// Deletes a room (admin).
#[utoipa::path(delete, path = "/v1/rooms/{id}", tag = "rooms", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn delete_room(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    const SQL: &str = "DELETE FROM rooms WHERE id = $1";
    let mut tx = state.db.begin().await?;
    let deleted =
        on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|r| r.rows_affected()))
            .map_err(crate::db::still_referenced("The room is still in use"))?;
    if deleted == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("room.deleted").by(&admin).subject("room", id)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
