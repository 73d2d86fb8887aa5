//! `/v1/reviews`: the inbox of proposals waiting for a person. Admins see and decide all of
//! them; a teacher those a workflow addressed to them (their own students'). Approving (with
//! optional edits, checked against the proposal's schema) or rejecting resumes the run.

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::ai::schema;
use super::engine;
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

use super::definition::ReviewStatus;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_reviews))
        .routes(routes!(get_review))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Review {
    id: Uuid,
    run_id: Uuid,
    workflow: String,
    /// The review step's name.
    step: String,
    /// `pending | approved | rejected | cancelled`.
    status: ReviewStatus,
    /// What the proposal is about.
    #[schema(value_type = Object)]
    subject: SqlJson<Value>,
    /// What the workflow proposes.
    #[schema(value_type = Object)]
    proposal: SqlJson<Value>,
    /// What the reviewer needs to judge it: source data, who drafted it and why.
    #[schema(value_type = Object)]
    context: SqlJson<Value>,
    /// JSON schema the (edited) proposal must satisfy.
    #[schema(value_type = Option<Object>)]
    proposal_schema: Option<SqlJson<Value>>,
    /// Besides admins, the teacher who may decide.
    teacher_id: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    edits: Option<SqlJson<Value>>,
    reason: Option<String>,
    decided_by: Option<Uuid>,
    decided_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    #[serde(skip)]
    step_seq: i32,
    #[serde(skip)]
    on_approve: String,
    #[serde(skip)]
    on_reject: Option<String>,
}

const COLUMNS: &str = "id, run_id, workflow, step, status, subject, proposal, context, proposal_schema, teacher_id, \
    edits, reason, decided_by, decided_at, created_at, step_seq, on_approve, on_reject";

/// Reviews a user may see: admins all, teachers theirs, parents none (403).
fn reviewer_filter(user: &CurrentUser) -> ApiResult<Option<Uuid>> {
    match user.role {
        Role::Admin => Ok(None),
        Role::Teacher => Ok(Some(user.teacher_id.unwrap_or(Uuid::nil()))),
        Role::Parent => Err(ApiError::Forbidden),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReviewFilter {
    /// Default `pending`.
    status: Option<String>,
    workflow: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The review inbox, oldest first (admins: all; teachers: those addressed to them).
#[utoipa::path(get, path = "/v1/reviews", tag = "workflows", params(ReviewFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Review>)), (status = 401), (status = 403), (status = 422)))]
async fn list_reviews(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<ReviewFilter>,
) -> ApiResult<Json<Page<Review>>> {
    let teacher = reviewer_filter(&user)?;
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let status = filter.status.clone().unwrap_or_else(|| "pending".into());
    let mut errors = Errors::default();
    errors.choice::<ReviewStatus>("status", &status);
    let (after, limit) = (page.after()?, page.fetch_limit()?);
    errors.into_result()?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reviews WHERE status = $1 AND ($2 IS NULL OR workflow = $2) \
         AND ($3 IS NULL OR teacher_id = $3) AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Review>(sql).bind(&status).bind(&filter.workflow)
        .bind(teacher).bind(after).bind(limit).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |r| r.id)?))
}

async fn find_visible(tx: &mut Tx, user: &CurrentUser, id: Uuid) -> ApiResult<Review> {
    let teacher = reviewer_filter(user)?;
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM reviews WHERE id = $1 AND ($2 IS NULL OR teacher_id = $2)"));
    let review =
        on_tx!(tx, conn => sqlx::query_as::<_, Review>(sql).bind(id).bind(teacher).fetch_optional(&mut **conn).await)?;
    review.ok_or(ApiError::NotFound)
}

/// One review.
#[utoipa::path(get, path = "/v1/reviews/{id}", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = Review), (status = 401), (status = 403), (status = 404)))]
async fn get_review(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Json<Review>> {
    let teacher = reviewer_filter(&user)?;
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM reviews WHERE id = $1 AND ($2 IS NULL OR teacher_id = $2)"));
    let review =
        on_db!(&state.db, pool => sqlx::query_as::<_, Review>(sql).bind(id).bind(teacher).fetch_optional(pool).await)?;
    review.map(Json).ok_or(ApiError::NotFound)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Fields of the proposal to change before it is applied.
    #[schema(value_type = Option<Object>)]
    edits: Option<Value>,
}

/// Approves the proposal, with optional edits, and resumes the run.
#[utoipa::path(post, path = "/v1/reviews/{id}/approve", tag = "workflows", request_body = Approval, security(("bearer" = [])),
    responses((status = 200, body = Review), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn approve(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(approval): Json<Approval>,
) -> ApiResult<Json<Review>> {
    let mut tx = state.db.begin().await?;
    let decided = approve_in(&mut tx, &user, id, approval.edits).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(Json(decided))
}

/// Approves review `id` as `user` (who must be allowed to see it) in `tx`, with optional
/// edits checked against the proposal's schema, and resumes its run.
pub(crate) async fn approve_in(tx: &mut Tx, user: &CurrentUser, id: Uuid, edits: Option<Value>) -> ApiResult<Review> {
    let review = find_visible(tx, user, id).await?;
    pending(&review)?;
    let mut proposal = review.proposal.0.clone();
    let edits = edits.filter(|e| e.as_object().is_some_and(|o| !o.is_empty()));
    if let Some(edits) = &edits {
        let (Some(fields), Some(target)) = (edits.as_object(), proposal.as_object_mut()) else {
            return Err(ApiError::invalid("edits", "must be an object of proposal fields"));
        };
        for (field, value) in fields {
            target.insert(field.clone(), value.clone());
        }
        if let Some(SqlJson(schema)) = &review.proposal_schema
            && let Err(problem) = schema::validate(schema, &proposal)
        {
            return Err(ApiError::invalid("edits", format!("the edited proposal is invalid: {problem}")));
        }
    }
    let now = Utc::now();
    let decision = json!({
        "decision": "approved",
        "proposal": proposal,
        "edits": edits,
        "edited": edits.is_some(),
        "decided_by": user.id,
        "decided_at": now,
    });
    decide(tx, &review, "approved", edits.as_ref(), None, user).await?;
    if !engine::resume_after_review(
        tx,
        review.run_id,
        review.step_seq,
        &review.step,
        decision,
        Some(&review.on_approve),
        None,
    )
    .await?
    {
        return Err(ApiError::conflict("The run is no longer waiting for this review"));
    }
    let event = AuditEvent::new("review.approved").by(user).subject("review", id);
    audit::record_tx(tx, event.details(json!({"run_id": review.run_id, "edits": edits}))).await?;
    let decided = find_visible(tx, user, id).await?;
    let outcome = if edits.is_some() { "approved_with_edits" } else { "approved" };
    metrics::counter!("reviews_total", "workflow" => review.workflow.clone(), "decision" => outcome).increment(1);
    Ok(decided)
}

/// The pending review of a run, if it waits for one.
pub(crate) async fn pending_of_run(tx: &mut Tx, run: Uuid) -> ApiResult<Option<Uuid>> {
    const SQL: &str = "SELECT id FROM reviews WHERE run_id = $1 AND status = 'pending' ORDER BY id LIMIT 1";
    Ok(on_tx!(tx, conn => sqlx::query_scalar(SQL).bind(run).fetch_optional(&mut **conn).await)?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// Why; kept with the run and in the audit trail.
    reason: String,
}

/// Rejects the proposal: the workflow follows its rejection branch, or the run ends as
/// `cancelled`.
#[utoipa::path(post, path = "/v1/reviews/{id}/reject", tag = "workflows", request_body = Rejection, security(("bearer" = [])),
    responses((status = 200, body = Review), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn reject(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(rejection): Json<Rejection>,
) -> ApiResult<Json<Review>> {
    let reason = rejection.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 2_000 {
        return Err(ApiError::invalid("reason", "must be between 1 and 2000 characters"));
    }
    let mut tx = state.db.begin().await?;
    let review = find_visible(&mut tx, &user, id).await?;
    pending(&review)?;
    let decision = json!({"decision": "rejected", "reason": reason, "decided_by": user.id, "decided_at": Utc::now()});
    decide(&mut tx, &review, "rejected", None, Some(&reason), &user).await?;
    let next = review.on_reject.as_deref();
    let end = next.is_none().then(|| format!("rejected at review: {reason}"));
    if !engine::resume_after_review(&mut tx, review.run_id, review.step_seq, &review.step, decision, next, end).await? {
        return Err(ApiError::conflict("The run is no longer waiting for this review"));
    }
    let event = AuditEvent::new("review.rejected").by(&user).subject("review", id);
    audit::record_tx(&mut tx, event.details(json!({"run_id": review.run_id, "reason": reason}))).await?;
    let decided = find_visible(&mut tx, &user, id).await?;
    tx.commit().await?;
    metrics::counter!("reviews_total", "workflow" => review.workflow.clone(), "decision" => "rejected").increment(1);
    if next.is_none() {
        engine::finished_metrics(&state, &review.workflow, review.run_id, "cancelled").await;
    }
    state.job_wakeup.notify_one();
    Ok(Json(decided))
}

fn pending(review: &Review) -> ApiResult<()> {
    if review.status != "pending" {
        return Err(ApiError::conflict(format!("This review is already {}", review.status)));
    }
    Ok(())
}

async fn decide(
    tx: &mut Tx,
    review: &Review,
    status: &str,
    edits: Option<&Value>,
    reason: Option<&str>,
    user: &CurrentUser,
) -> ApiResult<()> {
    const SQL: &str = "UPDATE reviews SET status = $2, edits = $3, reason = $4, decided_by = $5, decided_at = $6 \
        WHERE id = $1 AND status = 'pending'";
    let moved = on_tx!(tx, conn => sqlx::query(SQL).bind(review.id).bind(status).bind(edits.map(SqlJson))
        .bind(reason).bind(user.id).bind(Utc::now()).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if moved == 0 {
        return Err(ApiError::conflict("This review was decided meanwhile"));
    }
    Ok(())
}
