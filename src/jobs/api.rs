//! `/v1/jobs` (admin): the queue's history, and retrying dead jobs.

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::queue;
use crate::app::AppState;
use crate::auth::AdminUser;
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::on_db;
use crate::privacy::audit::{self, AuditEvent};

use super::queue::JobStatus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_jobs)).routes(routes!(get_job)).routes(routes!(retry_job))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct JobView {
    id: Uuid,
    queue: String,
    kind: String,
    #[schema(value_type = Object)]
    payload: SqlJson<Value>,
    /// `queued`, `running`, `succeeded`, `dead` or `cancelled`.
    status: JobStatus,
    attempts: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    last_error: Option<String>,
    dedupe_key: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, queue, kind, payload, status, attempts, max_attempts, run_at, last_error, dedupe_key, \
    created_at, updated_at";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    queue: Option<String>,
    status: Option<String>,
    kind: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Jobs, newest first (admin).
#[utoipa::path(get, path = "/v1/jobs", tag = "workflows", params(JobFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<JobView>)), (status = 401), (status = 403)))]
async fn list_jobs(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(filter): Query<JobFilter>,
) -> ApiResult<Json<Page<JobView>>> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let mut errors = Errors::default();
    if let Some(status) = &filter.status {
        errors.choice::<JobStatus>("status", status);
    }
    let (after, limit) = (page.after()?, page.fetch_limit()?);
    errors.into_result()?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM jobs WHERE ($1 IS NULL OR queue = $1) AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, JobView>(sql).bind(&filter.queue).bind(&filter.status)
        .bind(&filter.kind).bind(after).bind(limit).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |j| j.id)?))
}

/// One job (admin).
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = JobView), (status = 401), (status = 403), (status = 404)))]
async fn get_job(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<JobView>> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"));
    let job = on_db!(&state.db, pool => sqlx::query_as::<_, JobView>(sql).bind(id).fetch_optional(pool).await)?;
    job.map(Json).ok_or(ApiError::NotFound)
}

/// Puts a dead job back in the queue with fresh attempts (admin).
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = JobView), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn retry_job(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<JobView>> {
    let mut tx = state.db.begin().await?;
    if !queue::retry(&mut tx, id).await? {
        tx.rollback().await?;
        get_job(State(state.clone()), AdminUser(admin.clone()), Path(id)).await?;
        return Err(ApiError::conflict("Only dead jobs can be retried"));
    }
    audit::record_tx(&mut tx, AuditEvent::new("job.retried").by(&admin).subject("job", id)).await?;
    // The job as retried (a worker may claim it the moment this commits).
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"));
    let job = crate::on_tx!(&mut tx, conn => sqlx::query_as::<_, JobView>(sql).bind(id).fetch_one(&mut **conn).await)?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(Json(job))
}
