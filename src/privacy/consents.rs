//! `/v1/consents`: the consent register. Every grant or withdrawal is a new row (who, when,
//! how); the current state of a kind is its latest row. `ai_processing` gates external AI
//! (checked before every provider call, so a withdrawal stops runs in flight at their next
//! AI step); `marketing_email` governs newsletters, never transactional mail;
//! `data_collection` records the family's agreement to the school keeping its records.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit::{self, AuditEvent};
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::db::{Db, Tx};
use crate::error::{ApiError, ApiResult, DomainResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::{on_db, on_tx, text_enum};

text_enum! {
    /// What a family consents to.
    pub enum ConsentKind {
        DataCollection = "data_collection",
        AiProcessing = "ai_processing",
        MarketingEmail = "marketing_email",
    }
}

text_enum! {
    /// How a consent was recorded.
    pub enum ConsentMethod {
        /// By a parent, in the app.
        App = "app",
        /// By the office on the family's behalf (with a note of how it was given).
        Office = "office",
        /// Carried over from an earlier version of Cedar.
        Migration = "migration",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_consents, record_consent))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Consent {
    pub id: Uuid,
    pub family_id: Uuid,
    pub kind: ConsentKind,
    pub granted: bool,
    pub recorded_at: DateTime<Utc>,
    pub recorded_by: Option<Uuid>,
    pub method: ConsentMethod,
    pub note: Option<String>,
    /// Whether this row is the kind's current state for the family.
    #[sqlx(default)]
    pub current: bool,
}

const COLUMNS: &str = "id, family_id, kind, granted, recorded_at, recorded_by, method, note";

/// Records a grant or withdrawal in `tx`; returns the row's id.
pub async fn record(
    tx: &mut Tx,
    family: Uuid,
    kind: ConsentKind,
    granted: bool,
    by: Option<Uuid>,
    method: ConsentMethod,
    note: Option<&str>,
) -> DomainResult<Uuid> {
    const SQL: &str = "INSERT INTO consents (id, family_id, kind, granted, recorded_at, recorded_by, method, note) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
    let id = Uuid::now_v7();
    on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(family).bind(kind).bind(granted).bind(Utc::now()).bind(by)
        .bind(method).bind(note).execute(&mut **conn).await.map(|_| ()))?;
    Ok(id)
}

/// The SQL of a family's current state for one kind (`$1` family, `$2` kind): the latest row.
pub const CURRENT: &str = "SELECT granted FROM consents WHERE family_id = $1 AND kind = $2 \
    ORDER BY recorded_at DESC, id DESC LIMIT 1";

/// Whether the family currently consents to `kind` (no row: no).
pub async fn granted(db: &Db, family: Uuid, kind: ConsentKind) -> DomainResult<bool> {
    let current: Option<bool> =
        on_db!(db, pool => sqlx::query_scalar(CURRENT).bind(family).bind(kind).fetch_optional(pool).await)?;
    Ok(current.unwrap_or(false))
}

/// Like [`granted`], inside a transaction.
pub async fn granted_tx(tx: &mut Tx, family: Uuid, kind: ConsentKind) -> DomainResult<bool> {
    let current: Option<bool> =
        on_tx!(tx, conn => sqlx::query_scalar(CURRENT).bind(family).bind(kind).fetch_optional(&mut **conn).await)?;
    Ok(current.unwrap_or(false))
}

/// Every consent row of a family, oldest first (for the export).
pub async fn history(db: &Db, family: Uuid) -> DomainResult<Vec<Consent>> {
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM consents WHERE family_id = $1 ORDER BY recorded_at, id"));
    Ok(on_db!(db, pool => sqlx::query_as::<_, Consent>(sql).bind(family).fetch_all(pool).await)?)
}

/// The family a user may act for: a parent their own (another → 404); an admin the one named.
pub(super) fn family_for(user: &CurrentUser, named: Option<Uuid>) -> ApiResult<Option<Uuid>> {
    match user.role {
        Role::Admin => Ok(named),
        Role::Parent => {
            let own = user.family_id.ok_or(ApiError::NotFound)?;
            match named {
                Some(other) if other != own => Err(ApiError::NotFound),
                _ => Ok(Some(own)),
            }
        }
        Role::Teacher => Err(ApiError::Forbidden),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsentFilter {
    /// Admins: one family's (parents always see their own).
    family_id: Option<Uuid>,
    /// `data_collection`, `ai_processing` or `marketing_email`.
    kind: Option<String>,
    /// Only the current state of each kind.
    #[serde(default)]
    current: bool,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The consent register, oldest first: every grant and withdrawal, each marked `current` when
/// it is the kind's latest for its family (parents: their family's; admins: all; teachers 403).
#[utoipa::path(get, path = "/v1/consents", tag = "privacy", params(ConsentFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Consent>)), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn list_consents(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<ConsentFilter>,
) -> ApiResult<Json<Page<Consent>>> {
    let family = family_for(&user, filter.family_id)?;
    let mut errors = Errors::default();
    let kind = errors.optional_choice::<ConsentKind>("kind", filter.kind.as_deref());
    errors.into_result()?;
    let page = PageParams { limit: filter.limit, cursor: filter.cursor };
    // A row is current when no later row of its family and kind exists.
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, NOT EXISTS (SELECT 1 FROM consents n WHERE n.family_id = c.family_id AND n.kind = c.kind \
         AND (n.recorded_at > c.recorded_at OR (n.recorded_at = c.recorded_at AND n.id > c.id))) AS current \
         FROM consents c WHERE ($1 IS NULL OR family_id = $1) AND ($2 IS NULL OR kind = $2) AND ($3 IS NULL OR id > $3) \
         ORDER BY id LIMIT $4"
    ));
    let mut rows = on_db!(&state.db, pool => sqlx::query_as::<_, Consent>(sql).bind(family).bind(kind)
        .bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    if filter.current {
        rows.retain(|c| c.current);
    }
    Ok(Json(Page::from_rows(rows, &page, |c| c.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewConsent {
    /// Admins name the family; parents record their own.
    family_id: Option<Uuid>,
    /// `data_collection`, `ai_processing` or `marketing_email`.
    kind: String,
    granted: bool,
    /// How the family gave or withdrew it (required when the office records it).
    note: Option<String>,
}

/// Records a grant or a withdrawal (a parent for their family, an admin on a family's behalf
/// with a note).
#[utoipa::path(post, path = "/v1/consents", tag = "privacy", request_body = NewConsent, security(("bearer" = [])),
    responses((status = 201, body = Consent), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn record_consent(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<NewConsent>,
) -> ApiResult<(StatusCode, Json<Consent>)> {
    let family = family_for(&user, input.family_id)?;
    let mut errors = Errors::default();
    let kind = errors.choice::<ConsentKind>("kind", &input.kind);
    let note = errors.optional_text("note", input.note.as_deref());
    if family.is_none() {
        errors.add("family_id", "is required for admins");
    }
    let method = if user.role == Role::Admin { ConsentMethod::Office } else { ConsentMethod::App };
    if method == ConsentMethod::Office && note.is_none() {
        errors.add("note", "say how the family gave or withdrew consent (phone, paper form, …)");
    }
    errors.into_result()?;
    let (family, kind) = (family.expect("validated"), kind.expect("validated"));
    let mut tx = state.db.begin().await?;
    const EXISTS: &str = "SELECT COUNT(*) FROM families WHERE id = $1 AND erased_at IS NULL";
    let exists: i64 = on_tx!(&mut tx, conn => sqlx::query_scalar(EXISTS).bind(family).fetch_one(&mut **conn).await)?;
    if exists == 0 {
        return Err(ApiError::NotFound);
    }
    let id = record(&mut tx, family, kind, input.granted, Some(user.id), method, note.as_deref()).await?;
    let event = AuditEvent::new(if input.granted { "consent.granted" } else { "consent.withdrawn" })
        .by(&user)
        .subject("family", family)
        .details(serde_json::json!({"kind": kind, "method": method}));
    audit::record_tx(&mut tx, event).await?;
    tx.commit().await?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS}, TRUE AS current FROM consents WHERE id = $1"));
    let consent = on_db!(&state.db, pool => sqlx::query_as::<_, Consent>(sql).bind(id).fetch_one(pool).await)?;
    Ok((StatusCode::CREATED, Json(consent)))
}
