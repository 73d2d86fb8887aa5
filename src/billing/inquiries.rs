//! `/v1/billing/inquiries`: a family's question about a charge. The message lands in the
//! family's billing thread (so the conversation goes on in messaging) and starts a
//! `payment_issue` run that drafts the answer for the office to review.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::issues;
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::db::Tx;
use crate::error::{ApiError, ApiResult, DomainResult};
use crate::http::pagination::Page;
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx, text_enum};

text_enum! {
    /// Where an inquiry is.
    pub enum InquiryStatus {
        Open = "open",
        Answered = "answered",
        Closed = "closed",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_inquiries, create_inquiry))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Inquiry {
    pub id: Uuid,
    pub family_id: Uuid,
    pub invoice_id: Option<Uuid>,
    pub message: String,
    /// The family's billing thread, where the message and the answer are.
    pub thread_id: Option<Uuid>,
    /// The `payment_issue` run answering it (`GET /v1/workflow-runs/{id}`; it appears within
    /// moments of the inquiry).
    pub run_id: Uuid,
    pub status: InquiryStatus,
    pub submitted_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, family_id, invoice_id, message, thread_id, run_id, status, submitted_by, created_at, answered_at";

/// One inquiry, for the workflow.
pub async fn find(db: &crate::db::Db, id: Uuid) -> DomainResult<Option<Inquiry>> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM billing_inquiries WHERE id = $1"));
    Ok(on_db!(db, pool => sqlx::query_as::<_, Inquiry>(sql).bind(id).fetch_optional(pool).await)?)
}

/// Points an inquiry at the run that answers it (a second trigger joins an open run).
pub async fn attach(tx: &mut Tx, id: Uuid, run_id: Uuid) -> DomainResult<()> {
    const SQL: &str = "UPDATE billing_inquiries SET run_id = $2 WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(run_id).execute(&mut **conn).await.map(|_| ()))?;
    Ok(())
}

/// Marks the inquiries a run answered (or closed without an answer).
pub async fn settle(tx: &mut Tx, run_id: Uuid, status: InquiryStatus) -> DomainResult<u64> {
    const SQL: &str =
        "UPDATE billing_inquiries SET status = $2, answered_at = $3 WHERE run_id = $1 AND status = 'open'";
    let at = (status == InquiryStatus::Answered).then(Utc::now);
    Ok(on_tx!(tx, conn => sqlx::query(SQL).bind(run_id).bind(status).bind(at).execute(&mut **conn).await
        .map(|r| r.rows_affected()))?)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInquiry {
    /// The invoice it is about; without one, the family's latest unpaid (or latest) invoice.
    invoice_id: Option<Uuid>,
    /// Admins writing on a family's behalf name the family; parents write for their own.
    family_id: Option<Uuid>,
    message: String,
}

/// Asks the office about a charge (a parent for their family, an admin with `family_id`).
/// Answered 202: the inquiry is in the family's billing thread and a `payment_issue` run is
/// drafting the answer.
#[utoipa::path(post, path = "/v1/billing/inquiries", tag = "billing", request_body = NewInquiry, security(("bearer" = [])),
    responses((status = 202, body = Inquiry), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn create_inquiry(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<NewInquiry>,
) -> ApiResult<(StatusCode, Json<Inquiry>)> {
    let family = match user.role {
        Role::Parent => {
            let own = user.family_id.ok_or(ApiError::NotFound)?;
            if input.family_id.is_some_and(|f| f != own) {
                return Err(ApiError::NotFound);
            }
            own
        }
        Role::Admin => input.family_id.ok_or_else(|| ApiError::invalid("family_id", "is required for admins"))?,
        Role::Teacher => return Err(ApiError::Forbidden),
    };
    let mut errors = Errors::default();
    let message = input.message.trim().to_owned();
    if message.is_empty() || message.chars().count() > 5_000 {
        errors.add("message", "must be 1 to 5000 characters");
    }
    if message.contains('\0') {
        errors.add("message", "must not contain NUL characters");
    }
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    const FAMILY: &str = "SELECT COUNT(*) FROM families WHERE id = $1";
    let exists: i64 = on_tx!(&mut tx, conn => sqlx::query_scalar(FAMILY).bind(family).fetch_one(&mut **conn).await)?;
    if exists == 0 {
        return Err(ApiError::invalid("family_id", "No such family"));
    }
    // Another family's invoice is as good as missing.
    let invoice_id = match input.invoice_id {
        Some(id) => {
            const OWN: &str = "SELECT id FROM invoices WHERE id = $1 AND family_id = $2";
            let found: Option<Uuid> = on_tx!(&mut tx, conn => sqlx::query_scalar(OWN).bind(id).bind(family).fetch_optional(&mut **conn).await)?;
            Some(found.ok_or(ApiError::NotFound)?)
        }
        None => {
            const LATEST: &str = "SELECT id FROM invoices WHERE family_id = $1 AND status <> 'void' \
                ORDER BY CASE WHEN status IN ('open', 'partially_paid') THEN 0 ELSE 1 END, issued_at DESC LIMIT 1";
            on_tx!(&mut tx, conn => sqlx::query_scalar(LATEST).bind(family).fetch_optional(&mut **conn).await)?
        }
    };
    let author = (user.role == Role::Parent).then_some(user.id);
    let posted = if user.role == Role::Parent {
        message.clone()
    } else {
        format!("(recorded by the office for the family) {message}")
    };
    let thread =
        crate::messaging::post_to_billing_thread(&mut tx, &state.settings, family, author.or(Some(user.id)), &posted)
            .await?;
    let id = Uuid::now_v7();
    let run_id = Uuid::now_v7();
    const INSERT: &str = "INSERT INTO billing_inquiries (id, family_id, invoice_id, message, thread_id, run_id, status, \
        submitted_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'open', $7, $8)";
    on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(id).bind(family).bind(invoice_id).bind(&message).bind(thread)
        .bind(run_id).bind(user.id).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    match invoice_id {
        Some(invoice) => {
            let input = json!({"invoice_id": invoice, "reason": "inquiry", "inquiry_id": id});
            issues::start_run(&mut tx, input, &format!("payment_issue:inquiry:{id}"), Some(run_id)).await?;
        }
        None => {
            // Nothing billed yet: no workflow can look into it, so the office gets a task.
            let task = crate::tasks::NewTask {
                title: "Answer a billing question (no invoice yet)".into(),
                detail: Some(message.chars().take(500).collect()),
                subject_type: Some("family".into()),
                subject_id: Some(family),
                dedupe_key: Some(format!("inquiry:{id}")),
                ..crate::tasks::NewTask::default()
            };
            crate::tasks::create(&mut tx, task).await?;
        }
    }
    audit::record_tx(&mut tx, AuditEvent::new("billing_inquiry.created").by(&user).subject("family", family)).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    let inquiry = find(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(inquiry)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InquiryFilter {
    /// Admins: one family's.
    family_id: Option<Uuid>,
    /// `open`, `answered` or `closed`.
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Billing inquiries, oldest first (admins: all; parents: their family's).
#[utoipa::path(get, path = "/v1/billing/inquiries", tag = "billing", params(InquiryFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Inquiry>)), (status = 401), (status = 403), (status = 422)))]
async fn list_inquiries(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<InquiryFilter>,
) -> ApiResult<Json<Page<Inquiry>>> {
    let own = match user.role {
        Role::Admin => None,
        Role::Parent => Some(user.family_id.ok_or(ApiError::NotFound)?),
        Role::Teacher => return Err(ApiError::Forbidden),
    };
    let mut errors = Errors::default();
    let status = errors.optional_choice::<InquiryStatus>("status", filter.status.as_deref());
    errors.into_result()?;
    let page = crate::http::pagination::PageParams { limit: filter.limit, cursor: filter.cursor };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM billing_inquiries WHERE ($1 IS NULL OR family_id = $1) AND ($2 IS NULL OR family_id = $2) \
         AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Inquiry>(sql).bind(own).bind(filter.family_id)
        .bind(status).bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |i| i.id)?))
}
