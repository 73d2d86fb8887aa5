//! iCalendar (RFC 5545) feeds: `GET /v1/calendars/{token}.ics` for a family or a teacher. The
//! token is a secret in the URL (calendar apps cannot send bearer tokens); its owner can
//! replace it, which retires the old URL.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use icalendar::{Calendar, Component, Event, EventLike, EventStatus};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult};
use crate::http::Json;
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(calendar_feed))
        .routes(routes!(rotate_family_token))
        .routes(routes!(rotate_teacher_token))
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    status: String,
    instrument: String,
    student_first: String,
    student_last: String,
    teacher_first: String,
    teacher_last: String,
    room: Option<String>,
    updated_at: DateTime<Utc>,
}

const FEED: &str = "SELECT l.id, l.starts_at, l.ends_at, l.status, s.instrument, s.first_name AS student_first, \
    s.last_name AS student_last, t.first_name AS teacher_first, t.last_name AS teacher_last, r.name AS room, l.updated_at \
    FROM lessons l JOIN students s ON s.id = l.student_id JOIN teachers t ON t.id = l.teacher_id \
    LEFT JOIN rooms r ON r.id = l.room_id \
    WHERE ($1 IS NULL OR s.family_id = $1) AND ($2 IS NULL OR l.teacher_id = $2) AND l.starts_at >= $3 AND l.starts_at < $4 \
    ORDER BY l.starts_at";

/// A family's or teacher's lessons as an iCalendar feed (from 90 days ago to a year ahead).
#[utoipa::path(get, path = "/v1/calendars/{file}", tag = "scheduling",
    params(("file" = String, Path, description = "`{token}.ics`")),
    responses((status = 200, description = "text/calendar", content_type = "text/calendar"), (status = 404)))]
async fn calendar_feed(State(state): State<AppState>, Path(file): Path<String>) -> ApiResult<Response> {
    let token = file.strip_suffix(".ics").ok_or(ApiError::NotFound)?;
    if token.is_empty() || token.len() > 100 {
        return Err(ApiError::NotFound);
    }
    const FAMILY: &str = "SELECT id, name FROM families WHERE calendar_token = $1";
    const TEACHER: &str = "SELECT id, first_name || ' ' || last_name FROM teachers WHERE calendar_token = $1";
    let family: Option<(Uuid, String)> =
        on_db!(&state.db, pool => sqlx::query_as(FAMILY).bind(token).fetch_optional(pool).await)?;
    let teacher: Option<(Uuid, String)> = match family {
        Some(_) => None,
        None => on_db!(&state.db, pool => sqlx::query_as(TEACHER).bind(token).fetch_optional(pool).await)?,
    };
    let (family_id, teacher_id, owner) = match (family, teacher) {
        (Some((id, name)), _) => (Some(id), None, name),
        (None, Some((id, name))) => (None, Some(id), name),
        (None, None) => return Err(ApiError::NotFound),
    };
    let now = Utc::now();
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, FeedRow>(FEED).bind(family_id).bind(teacher_id)
        .bind(now - Duration::days(90)).bind(now + Duration::days(366)).fetch_all(pool).await)?;
    let mut calendar = Calendar::new();
    calendar.name(&format!("Cedar Heights Music Academy — {owner}"));
    for row in rows {
        let summary = if teacher_id.is_some() {
            format!("{} — {} {}", capitalise(&row.instrument), row.student_first, row.student_last)
        } else {
            format!(
                "{} with {} {} ({})",
                capitalise(&row.instrument),
                row.teacher_first,
                row.teacher_last,
                row.student_first
            )
        };
        let mut event = Event::new();
        event
            .uid(&format!("{}@cedar", row.id))
            .summary(&summary)
            .starts(row.starts_at)
            .ends(row.ends_at)
            .timestamp(row.updated_at)
            .status(if row.status == "cancelled" { EventStatus::Cancelled } else { EventStatus::Confirmed });
        if let Some(room) = &row.room {
            event.location(room);
        }
        calendar.push(event.done());
    }
    let mut response = calendar.done().to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/calendar; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    Ok(response)
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CalendarUrl {
    calendar_url: String,
}

/// Replaces a family's calendar URL (its guardians or admins); the old URL stops working.
#[utoipa::path(post, path = "/v1/families/{id}/calendar-token", tag = "scheduling", security(("bearer" = [])),
    responses((status = 200, body = CalendarUrl), (status = 401), (status = 403), (status = 404)))]
async fn rotate_family_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<CalendarUrl>> {
    if !user.is_admin() && user.family_id != Some(id) {
        return Err(ApiError::NotFound);
    }
    rotate(&state, &user, "families", id).await
}

/// Replaces a teacher's calendar URL (the teacher or admins); the old URL stops working.
#[utoipa::path(post, path = "/v1/teachers/{id}/calendar-token", tag = "scheduling", security(("bearer" = [])),
    responses((status = 200, body = CalendarUrl), (status = 401), (status = 403), (status = 404)))]
async fn rotate_teacher_token(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<CalendarUrl>> {
    if !user.is_admin() && user.teacher_id != Some(id) {
        return Err(ApiError::Forbidden);
    }
    rotate(&state, &user, "teachers", id).await
}

async fn rotate(state: &AppState, user: &CurrentUser, table: &'static str, id: Uuid) -> ApiResult<Json<CalendarUrl>> {
    let token = crate::auth::store::new_secret_token().0;
    let sql = match table {
        "families" => "UPDATE families SET calendar_token = $2 WHERE id = $1",
        _ => "UPDATE teachers SET calendar_token = $2 WHERE id = $1",
    };
    let mut tx = state.db.begin().await?;
    let changed = on_tx!(&mut tx, conn => sqlx::query(sql).bind(id).bind(&token).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if changed == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("calendar.token_rotated").by(user).subject(table, id)).await?;
    tx.commit().await?;
    Ok(Json(CalendarUrl { calendar_url: format!("{}/v1/calendars/{token}.ics", state.settings.public_url) }))
}
