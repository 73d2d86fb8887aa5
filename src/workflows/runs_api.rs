//! `/v1/workflow-runs` (admin): runs with their steps and AI calls, manual start, cancel;
//! `/v1/workflows` (the definitions) and `/v1/ai/usage` (spend against the monthly budget).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::engine::{self, RunStatus, Trigger};
use crate::app::AppState;
use crate::auth::AdminUser;
use crate::db::CommitMark;
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::on_db;
use crate::privacy::audit::{self, AuditEvent};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs, start_run))
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(list_workflows))
        .routes(routes!(ai_usage))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RunView {
    id: Uuid,
    /// `practice_plan`, and the business workflows as they land.
    workflow: String,
    /// `pending | running | waiting_for_review | succeeded | failed | cancelled`.
    status: String,
    #[schema(value_type = Object)]
    input: SqlJson<Value>,
    /// Each finished step's output by step name (single reads only).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    context: Option<Value>,
    /// The step running next, or waiting for review.
    current_step: Option<String>,
    subject_kind: Option<String>,
    subject_id: Option<Uuid>,
    family_id: Option<Uuid>,
    started_by: Option<Uuid>,
    error: Option<String>,
    ai_tokens: i64,
    /// Estimated AI cost in millionths of a Canadian dollar.
    ai_cost_micros: i64,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<Vec<StepView>>,
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    ai_calls: Option<Vec<AiCallView>>,
    /// The pending review, when the run waits for one.
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    review_id: Option<Uuid>,
}

const COLUMNS: &str = "id, workflow, status, input, current_step, subject_kind, subject_id, family_id, started_by, \
    error, ai_tokens, ai_cost_micros, created_at, started_at, finished_at, updated_at";

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct StepView {
    seq: i32,
    name: String,
    /// `api | ai | decision | action | review`.
    kind: String,
    /// `running | succeeded | failed | waiting | cancelled`.
    status: String,
    attempts: i32,
    #[schema(value_type = Option<Object>)]
    input: Option<SqlJson<Value>>,
    #[schema(value_type = Option<Object>)]
    output: Option<SqlJson<Value>>,
    error: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AiCallView {
    step: String,
    provider: String,
    model: String,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    latency_ms: i64,
    /// `ok | invalid_output | error`.
    outcome: String,
    error: Option<String>,
    created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunFilter {
    workflow: Option<String>,
    status: Option<String>,
    subject_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Runs, newest first (admin).
#[utoipa::path(get, path = "/v1/workflow-runs", tag = "workflows", params(RunFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<RunView>)), (status = 401), (status = 403), (status = 422)))]
async fn list_runs(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(filter): Query<RunFilter>,
) -> ApiResult<Json<Page<RunView>>> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let mut errors = Errors::default();
    if let Some(status) = &filter.status {
        errors.choice::<RunStatus>("status", status);
    }
    let (after, limit) = (page.after()?, page.fetch_limit()?);
    errors.into_result()?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM workflow_runs WHERE ($1 IS NULL OR workflow = $1) AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR subject_id = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, RunView>(sql).bind(&filter.workflow).bind(&filter.status)
        .bind(filter.subject_id).bind(after).bind(limit).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |r| r.id)?))
}

/// One run with its context, steps (input, output, attempts, timings, errors) and AI calls.
#[utoipa::path(get, path = "/v1/workflow-runs/{id}", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = RunView), (status = 401), (status = 403), (status = 404)))]
async fn get_run(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RunView>> {
    Ok(Json(load_run(&state, id).await?))
}

async fn load_run(state: &AppState, id: Uuid) -> ApiResult<RunView> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM workflow_runs WHERE id = $1"));
    const CONTEXT: &str = "SELECT context FROM workflow_runs WHERE id = $1";
    const STEPS: &str = "SELECT seq, name, kind, status, attempts, input, output, error, started_at, finished_at, \
        duration_ms FROM workflow_steps WHERE run_id = $1 ORDER BY seq";
    const CALLS: &str = "SELECT step, provider, model, input_tokens, output_tokens, cost_micros, latency_ms, outcome, \
        error, created_at FROM ai_calls WHERE run_id = $1 ORDER BY created_at, id";
    const REVIEW: &str = "SELECT id FROM reviews WHERE run_id = $1 AND status = 'pending'";
    let mut run = on_db!(&state.db, pool => sqlx::query_as::<_, RunView>(sql).bind(id).fetch_optional(pool).await)?
        .ok_or(ApiError::NotFound)?;
    let SqlJson(context): SqlJson<Value> =
        on_db!(&state.db, pool => sqlx::query_scalar(CONTEXT).bind(id).fetch_one(pool).await)?;
    run.context = Some(context);
    run.steps = Some(on_db!(&state.db, pool => sqlx::query_as(STEPS).bind(id).fetch_all(pool).await)?);
    run.ai_calls = Some(on_db!(&state.db, pool => sqlx::query_as(CALLS).bind(id).fetch_all(pool).await)?);
    run.review_id = on_db!(&state.db, pool => sqlx::query_scalar(REVIEW).bind(id).fetch_optional(pool).await)?;
    Ok(run)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// A workflow name from `GET /v1/workflows`.
    workflow: String,
    #[schema(value_type = Object)]
    #[serde(default)]
    input: Value,
}

/// Starts a run by hand (admin); the input is checked by the workflow before anything runs.
#[utoipa::path(post, path = "/v1/workflow-runs", tag = "workflows", request_body = StartRun, security(("bearer" = [])),
    responses((status = 201, body = RunView),
        (status = 200, body = RunView, description = "A run for the same subject (e.g. the same week's schedule review) already exists; this is it"),
        (status = 401), (status = 403), (status = 422)))]
async fn start_run(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(request): Json<StartRun>,
) -> ApiResult<(StatusCode, Json<RunView>)> {
    let workflow = state.workflows.get(&request.workflow).ok_or_else(|| {
        let known: Vec<&str> = state.workflows.all().iter().map(|w| w.name).collect();
        ApiError::invalid("workflow", format!("unknown workflow; known: {}", known.join(", ")))
    })?;
    let subject = workflow.prepare(&state, &request.input).await?;
    let mut tx = state.db.begin().await?;
    if let Some(key) = &subject.once_key
        && let Some(existing) = engine::claim_once_key(&mut tx, key).await?
    {
        tx.rollback().await?;
        return Ok((StatusCode::OK, Json(load_run(&state, existing).await?)));
    }
    let key = subject.once_key.as_deref();
    let id =
        engine::create_run(&mut tx, &workflow, &request.input, Some(&subject), Trigger::User(admin.id), key).await?;
    let event = AuditEvent::new("workflow.started").by(&admin).subject("workflow_run", id);
    audit::record_tx(&mut tx, event.details(json!({"workflow": workflow.name}))).await?;
    CommitMark::answer_is(201, format!("/v1/workflow-runs/{id}"));
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(load_run(&state, id).await?)))
}

/// Stops a run that has not finished (admin): nothing more runs, pending reviews close, and
/// a step caught mid-way has its writes rolled back.
#[utoipa::path(post, path = "/v1/workflow-runs/{id}/cancel", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = RunView), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn cancel_run(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<RunView>> {
    let run = load_run(&state, id).await?;
    let mut tx = state.db.begin().await?;
    if !engine::cancel(&mut tx, id, &format!("cancelled by {}", admin.email)).await? {
        return Err(ApiError::conflict(format!("The run has already finished ({})", run.status)));
    }
    audit::record_tx(&mut tx, AuditEvent::new("workflow.cancelled").by(&admin).subject("workflow_run", id)).await?;
    tx.commit().await?;
    engine::finished_metrics(&state, &run.workflow, id, "cancelled").await;
    Ok(Json(load_run(&state, id).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    name: &'static str,
    description: &'static str,
    steps: Vec<StepDefinition>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StepDefinition {
    name: &'static str,
    kind: &'static str,
    max_attempts: i32,
    timeout_secs: u64,
    fallback: Option<&'static str>,
}

/// The workflows this server runs, with their steps (admin).
#[utoipa::path(get, path = "/v1/workflows", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = inline(Page<WorkflowView>)), (status = 401), (status = 403)))]
async fn list_workflows(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> Json<Page<WorkflowView>> {
    let items = state
        .workflows
        .all()
        .iter()
        .map(|w| WorkflowView {
            name: w.name,
            description: w.description,
            steps: w
                .steps
                .iter()
                .map(|s| StepDefinition {
                    name: s.name,
                    kind: s.kind.as_str(),
                    max_attempts: s.max_attempts,
                    timeout_secs: s.timeout.as_secs(),
                    fallback: s.fallback,
                })
                .collect(),
        })
        .collect();
    Json(Page { items, next_cursor: None })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AiUsage {
    /// Start of the budget month (midnight on the 1st, school time zone).
    month_start: DateTime<Utc>,
    budget_micros: i64,
    spent_micros: i64,
    /// True once external AI is paused for the rest of the month.
    exhausted: bool,
    /// Providers tried, in order; `offline` is always last.
    providers: Vec<&'static str>,
    by_provider: Vec<ProviderUsage>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProviderUsage {
    provider: String,
    calls: i64,
    failed_calls: i64,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
}

/// This month's AI spend against the budget (admin). Amounts in millionths of a CAD.
#[utoipa::path(get, path = "/v1/ai/usage", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = AiUsage), (status = 401), (status = 403)))]
async fn ai_usage(State(state): State<AppState>, AdminUser(_admin): AdminUser) -> ApiResult<Json<AiUsage>> {
    const SQL: &str = "SELECT provider, COUNT(*) AS calls, \
        CAST(COALESCE(SUM(CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END), 0) AS BIGINT) AS failed_calls, \
        CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
        CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros FROM ai_calls WHERE created_at >= $1 GROUP BY provider ORDER BY provider";
    let month_start = super::ai::month_start(Utc::now(), state.settings.timezone);
    let by_provider: Vec<ProviderUsage> =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(month_start).fetch_all(pool).await)?;
    let spent_micros = state.ai.month_spend(&state).await?;
    let budget_micros = state.ai.monthly_budget_micros();
    Ok(Json(AiUsage {
        month_start,
        budget_micros,
        spent_micros,
        exhausted: spent_micros >= budget_micros,
        providers: state.ai.provider_names(),
        by_provider,
    }))
}
