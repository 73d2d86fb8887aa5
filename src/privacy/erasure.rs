//! Erasure requests: a parent (for their family) or an admin asks; an admin approves; Cedar then
//! cancels the family's future lessons, closes its accounts (their tokens stop working) and
//! anonymises its personal data — names, contact details, notes, messages, email bodies, AI
//! inputs — while keeping what the law requires: invoices and payments stay six years (CRA),
//! shown for "Erased family <short id>". The erasure is one transaction: a crash leaves the
//! request pending and nothing half-erased, and approving again completes it. Approving a
//! completed request changes nothing.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit::{self, AuditEvent};
use super::consents::family_for;
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser};
use crate::db::Tx;
use crate::error::{ApiError, ApiResult, DomainResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::{on_db, on_tx, text_enum};

text_enum! {
    /// Where an erasure request is.
    pub enum ErasureStatus {
        Pending = "pending",
        Completed = "completed",
        Rejected = "rejected",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_requests, create_request))
        .routes(routes!(approve_request))
        .routes(routes!(reject_request))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ErasureRequest {
    pub id: Uuid,
    pub family_id: Uuid,
    pub status: ErasureStatus,
    pub reason: Option<String>,
    pub requested_by: Option<Uuid>,
    pub requested_at: DateTime<Utc>,
    pub decided_by: Option<Uuid>,
    pub decision_note: Option<String>,
    pub completed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, family_id, status, reason, requested_by, requested_at, decided_by, decision_note, completed_at";

async fn find(tx: &mut Tx, id: Uuid, family: Option<Uuid>) -> ApiResult<ErasureRequest> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erasure_requests WHERE id = $1 AND ($2 IS NULL OR family_id = $2)"
    ));
    on_tx!(tx, conn => sqlx::query_as::<_, ErasureRequest>(sql).bind(id).bind(family).fetch_optional(&mut **conn).await)?
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestFilter {
    /// Admins: one family's.
    family_id: Option<Uuid>,
    /// `pending`, `completed` or `rejected`.
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Erasure requests, oldest first (parents: their family's; admins: all).
#[utoipa::path(get, path = "/v1/privacy/erasure-requests", tag = "privacy", params(RequestFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<ErasureRequest>)), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn list_requests(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<RequestFilter>,
) -> ApiResult<Json<Page<ErasureRequest>>> {
    let family = family_for(&user, filter.family_id)?;
    let mut errors = Errors::default();
    let status = errors.optional_choice::<ErasureStatus>("status", filter.status.as_deref());
    errors.into_result()?;
    let page = PageParams { limit: filter.limit, cursor: filter.cursor };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erasure_requests WHERE ($1 IS NULL OR family_id = $1) AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR id > $3) ORDER BY id LIMIT $4"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, ErasureRequest>(sql).bind(family).bind(status)
        .bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |r| r.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// Admins name the family; parents ask for their own.
    family_id: Option<Uuid>,
    reason: Option<String>,
}

/// Asks for a family's personal data to be erased (a parent for their family, or an admin).
/// An open request for the family is returned rather than duplicated.
#[utoipa::path(post, path = "/v1/privacy/erasure-requests", tag = "privacy", request_body = NewRequest, security(("bearer" = [])),
    responses((status = 201, body = ErasureRequest), (status = 200, body = ErasureRequest, description = "Already requested"),
        (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn create_request(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<NewRequest>,
) -> ApiResult<(StatusCode, Json<ErasureRequest>)> {
    let family = family_for(&user, input.family_id)?.ok_or_else(|| ApiError::invalid("family_id", "is required"))?;
    let mut errors = Errors::default();
    let reason = errors.optional_text("reason", input.reason.as_deref());
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    const FAMILY: &str = "SELECT erased_at IS NOT NULL FROM families WHERE id = $1";
    let erased: Option<bool> =
        on_tx!(&mut tx, conn => sqlx::query_scalar(FAMILY).bind(family).fetch_optional(&mut **conn).await)?;
    match erased {
        None => return Err(ApiError::NotFound),
        Some(true) => return Err(ApiError::conflict("This family's data has already been erased")),
        Some(false) => {}
    }
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM erasure_requests WHERE family_id = $1 AND status = 'pending' ORDER BY id LIMIT 1"
    ));
    let open = on_tx!(&mut tx, conn => sqlx::query_as::<_, ErasureRequest>(sql).bind(family).fetch_optional(&mut **conn).await)?;
    if let Some(open) = open {
        return Ok((StatusCode::OK, Json(open)));
    }
    let id = Uuid::now_v7();
    const INSERT: &str = "INSERT INTO erasure_requests (id, family_id, status, reason, requested_by, requested_at) \
        VALUES ($1, $2, 'pending', $3, $4, $5)";
    on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(id).bind(family).bind(&reason).bind(user.id).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("privacy.erasure_requested").by(&user).subject("family", family)).await?;
    let request = find(&mut tx, id, None).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(request)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    note: Option<String>,
}

/// Approves a request and erases the family's personal data now (admin). Idempotent.
#[utoipa::path(post, path = "/v1/privacy/erasure-requests/{id}/approve", tag = "privacy", request_body = Option<Decision>,
    security(("bearer" = [])),
    responses((status = 200, body = ErasureRequest), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn approve_request(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ErasureRequest>> {
    let note = decision(&body)?.note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    let mut tx = state.db.begin().await?;
    let request = find(&mut tx, id, None).await?;
    match request.status {
        ErasureStatus::Completed => return Ok(Json(request)),
        ErasureStatus::Rejected => return Err(ApiError::conflict("This request was rejected")),
        ErasureStatus::Pending => {}
    }
    let summary = erase(&mut tx, request.family_id, Utc::now()).await?;
    const DONE: &str = "UPDATE erasure_requests SET status = 'completed', decided_by = $2, decision_note = $3, \
        completed_at = $4 WHERE id = $1 AND status = 'pending'";
    on_tx!(&mut tx, conn => sqlx::query(DONE).bind(id).bind(admin.id).bind(&note).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    let event = AuditEvent::new("privacy.erased").by(&admin).subject("family", request.family_id);
    audit::record_tx(&mut tx, event.details(summary)).await?;
    let request = find(&mut tx, id, None).await?;
    tx.commit().await?;
    for user in closed_accounts(&state, request.family_id).await? {
        state.auth.forget_user(user);
    }
    Ok(Json(request))
}

/// Rejects a request (admin), with a note for the family.
#[utoipa::path(post, path = "/v1/privacy/erasure-requests/{id}/reject", tag = "privacy", request_body = Option<Decision>,
    security(("bearer" = [])),
    responses((status = 200, body = ErasureRequest), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn reject_request(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    body: axum::body::Bytes,
) -> ApiResult<Json<ErasureRequest>> {
    let note = decision(&body)?.note;
    let mut tx = state.db.begin().await?;
    let request = find(&mut tx, id, None).await?;
    if request.status != ErasureStatus::Pending {
        return Err(ApiError::conflict(format!("The request is already {}", request.status)));
    }
    const SQL: &str =
        "UPDATE erasure_requests SET status = 'rejected', decided_by = $2, decision_note = $3 WHERE id = $1";
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(admin.id).bind(&note).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("privacy.erasure_rejected").by(&admin).subject("family", request.family_id),
    )
    .await?;
    let request = find(&mut tx, id, None).await?;
    tx.commit().await?;
    Ok(Json(request))
}

/// The optional decision body: none, or `{"note": …}`.
fn decision(body: &[u8]) -> ApiResult<Decision> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Decision::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::invalid("body", format!("expected {{\"note\": …}}: {e}")))
}

async fn closed_accounts(state: &AppState, family: Uuid) -> ApiResult<Vec<Uuid>> {
    const SQL: &str = "SELECT id FROM users WHERE family_id = $1";
    Ok(on_db!(&state.db, pool => sqlx::query_scalar(SQL).bind(family).fetch_all(pool).await)?)
}

/// What erasure does to each kind of record, in `tx`. Returns counts for the audit entry.
pub async fn erase(tx: &mut Tx, family: Uuid, now: DateTime<Utc>) -> DomainResult<serde_json::Value> {
    let short = family.simple().to_string()[..8].to_owned();
    let mut counts = serde_json::Map::new();
    // Future lessons go (the booking service is the only writer of lessons).
    let cancelled = crate::scheduling::booking::cancel_family_from(tx, family, now).await?;
    counts.insert("lessons_cancelled".into(), json!(cancelled));
    // Accounts close: no password, no sign-in, an address that reaches no one.
    const GUARDIANS: &str = "SELECT id FROM users WHERE family_id = $1";
    const CLOSE: &str = "UPDATE users SET status = 'disabled', email = $2, display_name = NULL, password_hash = NULL, \
        user_metadata = $3, updated_at = $4 WHERE id = $1";
    let guardians: Vec<Uuid> =
        on_tx!(tx, conn => sqlx::query_scalar(GUARDIANS).bind(family).fetch_all(&mut **conn).await)?;
    for user in &guardians {
        let address = format!("erased-{}@erased.invalid", user.simple());
        on_tx!(tx, conn => sqlx::query(CLOSE).bind(user).bind(address).bind(sqlx::types::Json(json!({}))).bind(now)
            .execute(&mut **conn).await.map(|_| ()))?;
    }
    counts.insert("accounts_closed".into(), json!(guardians.len()));
    let steps: &[(&str, &str)] = &[
        (
            "sessions_revoked",
            "UPDATE auth_sessions SET revoked_at = $2, revoked_reason = 'erased' WHERE revoked_at IS NULL \
             AND user_id IN (SELECT id FROM users WHERE family_id = $1)",
        ),
        (
            "students",
            "UPDATE students SET first_name = 'Erased', last_name = 'Student', preferred_name = NULL, birth_date = NULL, \
             notes = NULL, level = NULL, search_text = '', status = 'withdrawn', updated_at = $2 WHERE family_id = $1",
        ),
        (
            "progress_notes",
            "UPDATE progress_notes SET body = '[erased]', goals = NULL WHERE student_id IN \
             (SELECT id FROM students WHERE family_id = $1)",
        ),
        (
            "enrollments",
            "UPDATE enrollments SET student = NULL, experience = NULL, notes = NULL, decision_reason = NULL, \
             updated_at = $2 WHERE family_id = $1",
        ),
        (
            "messages",
            "UPDATE messages SET body = '[erased]' WHERE thread_id IN (SELECT id FROM threads WHERE family_id = $1) \
             OR author_id IN (SELECT id FROM users WHERE family_id = $1)",
        ),
        ("threads", "UPDATE threads SET subject = '[erased]' WHERE family_id = $1"),
        (
            "emails",
            "UPDATE outbox SET subject = '[erased]', body = '[erased]', to_name = NULL, \
             to_address = 'erased@erased.invalid' WHERE user_id IN (SELECT id FROM users WHERE family_id = $1) \
             OR to_address = (SELECT email FROM families WHERE id = $1)",
        ),
        ("billing_inquiries", "UPDATE billing_inquiries SET message = '[erased]' WHERE family_id = $1"),
        // Invoice lines stay (amounts, quantities, dates) but no longer name the child.
        (
            "invoice_lines",
            "UPDATE invoice_lines SET description = CASE kind WHEN 'tuition' THEN 'Tuition (erased student)' \
             WHEN 'credit' THEN 'Credit (erased student)' WHEN 'discount' THEN 'Sibling discount' ELSE description END \
             WHERE student_id IN (SELECT id FROM students WHERE family_id = $1)",
        ),
        (
            "workflow_inputs",
            "UPDATE workflow_steps SET input = NULL, output = NULL WHERE run_id IN \
             (SELECT id FROM workflow_runs WHERE family_id = $1)",
        ),
    ];
    for (name, sql) in steps {
        let sql = sqlx::AssertSqlSafe(*sql);
        let n = on_tx!(tx, conn => sqlx::query(sql).bind(family).bind(now).execute(&mut **conn).await
            .map(|r| r.rows_affected()))?;
        counts.insert((*name).into(), json!(n));
    }
    // Reviews and run contexts hold what the AI was asked and drafted.
    const RUNS: &str = "UPDATE workflow_runs SET context = $2 WHERE family_id = $1";
    const REVIEWS: &str = "UPDATE reviews SET subject = $2, proposal = $2, context = $2 WHERE run_id IN \
        (SELECT id FROM workflow_runs WHERE family_id = $1)";
    let empty = sqlx::types::Json(json!({"erased": true}));
    on_tx!(tx, conn => sqlx::query(RUNS).bind(family).bind(&empty).execute(&mut **conn).await.map(|_| ()))?;
    on_tx!(tx, conn => sqlx::query(REVIEWS).bind(family).bind(&empty).execute(&mut **conn).await.map(|_| ()))?;
    // The family itself last (the queries above find its email through it). Invoices and
    // payments keep pointing at it, now "Erased family <short id>".
    const FAMILY: &str = "UPDATE families SET name = $2, email = NULL, phone = NULL, address_line1 = NULL, \
        address_line2 = NULL, city = NULL, province = NULL, postal_code = NULL, notes = NULL, \
        stripe_autopay_method = NULL, calendar_token = $3, erased_at = $4, updated_at = $4 WHERE id = $1";
    let token = Uuid::new_v4().simple().to_string();
    on_tx!(tx, conn => sqlx::query(FAMILY).bind(family).bind(format!("Erased family {short}")).bind(token).bind(now)
        .execute(&mut **conn).await.map(|_| ()))?;
    Ok(serde_json::Value::Object(counts))
}
