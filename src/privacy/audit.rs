//! The audit trail: who did what to which record, when, from where. Written in the same
//! transaction as the change it describes (`record_tx`), or on its own for events that change
//! nothing else (a failed sign-in). Read by admins at `GET /v1/audit-log`.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, Role};
use crate::db::{Db, Tx};
use crate::error::ApiResult;
use crate::http::pagination::{Page, PageParams};
use crate::http::{Json, Query};
use crate::{on_db, on_tx};

/// One event to record. Build with [`AuditEvent::new`] and the setters.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: &'static str,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<Role>,
    pub subject_type: Option<&'static str>,
    pub subject_id: Option<String>,
    pub ip: Option<String>,
    pub details: Value,
}

impl AuditEvent {
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            actor_id: None,
            actor_role: None,
            subject_type: None,
            subject_id: None,
            ip: None,
            details: Value::Object(Default::default()),
        }
    }

    pub fn actor(mut self, id: Uuid, role: Role) -> Self {
        self.actor_id = Some(id);
        self.actor_role = Some(role);
        self
    }

    pub fn by(self, user: &crate::auth::CurrentUser) -> Self {
        self.actor(user.id, user.role)
    }

    pub fn subject(mut self, kind: &'static str, id: impl ToString) -> Self {
        self.subject_type = Some(kind);
        self.subject_id = Some(id.to_string());
        self
    }

    pub fn ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }

    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// The audit entry's ten columns, in the order every insert binds them.
macro_rules! audit_columns {
    () => {
        "id, occurred_at, actor_id, actor_role, action, subject_type, subject_id, ip, request_id, details"
    };
}

const INSERT: &str =
    concat!("INSERT INTO audit_log (", audit_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");

/// The audit entry as one part of a larger PostgreSQL statement (a `WITH … AS (INSERT …)`):
/// its ten values are `$first`… in [`bind_from`]'s order.
pub(crate) fn insert_from(first: usize) -> String {
    let values: Vec<String> = (first..first + 10).map(|n| format!("${n}")).collect();
    format!(concat!("INSERT INTO audit_log (", audit_columns!(), ") VALUES ({})"), values.join(", "))
}

/// Binds `event`'s values for [`insert_from`].
pub(crate) fn bind_from<'q, O>(
    query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
    event: AuditEvent,
) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
    query
        .bind(Uuid::now_v7())
        .bind(Utc::now())
        .bind(event.actor_id)
        .bind(event.actor_role.map(Role::as_str))
        .bind(event.action)
        .bind(event.subject_type)
        .bind(event.subject_id)
        .bind(event.ip)
        .bind(crate::http::request_id::current())
        .bind(SqlJson(event.details))
}

/// Records the event inside the caller's transaction: it exists if and only if the change does.
pub async fn record_tx(tx: &mut Tx, event: AuditEvent) -> Result<(), sqlx::Error> {
    let request_id = crate::http::request_id::current();
    on_tx!(tx, conn => sqlx::query(INSERT)
        .bind(Uuid::now_v7()).bind(Utc::now()).bind(event.actor_id).bind(event.actor_role.map(Role::as_str))
        .bind(event.action).bind(event.subject_type).bind(&event.subject_id).bind(&event.ip)
        .bind(&request_id).bind(SqlJson(&event.details))
        .execute(&mut **conn).await.map(|_| ()))
}

/// Records an event that accompanies no other write.
pub async fn record(db: &Db, event: AuditEvent) -> Result<(), sqlx::Error> {
    let request_id = crate::http::request_id::current();
    on_db!(db, pool => sqlx::query(INSERT)
        .bind(Uuid::now_v7()).bind(Utc::now()).bind(event.actor_id).bind(event.actor_role.map(Role::as_str))
        .bind(event.action).bind(event.subject_type).bind(&event.subject_id).bind(&event.ip)
        .bind(&request_id).bind(SqlJson(&event.details))
        .execute(pool).await.map(|_| ()))
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    /// e.g. `auth.sign_in`, `user.role_changed`.
    pub action: String,
    pub subject_type: Option<String>,
    pub subject_id: Option<String>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: SqlJson<Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// Only events by this user.
    pub actor_id: Option<Uuid>,
    /// Only events about this record id.
    pub subject_id: Option<String>,
    /// Only this action (`auth.sign_in_failed`, …).
    pub action: Option<String>,
    /// Events at or after this time (RFC 3339).
    pub from: Option<DateTime<Utc>>,
    /// Events before this time (RFC 3339).
    pub to: Option<DateTime<Utc>>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Records that staff read a family's or student's record, before the read is answered
/// (parents reading their own family are not audited: it is their data). Concurrent reads
/// share one commit (`read_log`).
pub async fn record_read(
    state: &AppState,
    user: &crate::auth::CurrentUser,
    kind: &'static str,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    if user.role == Role::Parent {
        return Ok(());
    }
    let event = super::read_log::ReadEvent {
        actor_id: user.id,
        actor_role: user.role.as_str(),
        action: if kind == "family" { "family.viewed" } else { "student.viewed" },
        subject_type: kind,
        subject_id: id.to_string(),
        request_id: crate::http::request_id::current(),
    };
    state.read_log().record(event).await
}

/// Every audit entry about one of `subjects` (record ids as text), oldest first.
pub async fn about(db: &Db, subjects: &[String]) -> Result<Vec<AuditEntry>, sqlx::Error> {
    const SQL: &str = "SELECT id, occurred_at, actor_id, actor_role, action, subject_type, subject_id, ip, request_id, \
        details FROM audit_log WHERE subject_id = $1 ORDER BY id";
    let mut all = Vec::new();
    for subject in subjects {
        all.extend(on_db!(db, pool => sqlx::query_as::<_, AuditEntry>(SQL).bind(subject).fetch_all(pool).await)?);
    }
    all.sort_by_key(|e| e.id);
    Ok(all)
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit_log))
}

/// The audit trail, newest first (admin).
#[utoipa::path(get, path = "/v1/audit-log", tag = "privacy", params(AuditFilter),
    security(("bearer" = [])),
    responses((status = 200, body = inline(Page<AuditEntry>)), (status = 401), (status = 403)))]
async fn list_audit_log(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(filter): Query<AuditFilter>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    const SQL: &str = "SELECT id, occurred_at, actor_id, actor_role, action, subject_type, subject_id, ip, \
        request_id, details FROM audit_log \
        WHERE ($1 IS NULL OR actor_id = $1) AND ($2 IS NULL OR subject_id = $2) AND ($3 IS NULL OR action = $3) \
        AND ($4 IS NULL OR occurred_at >= $4) AND ($5 IS NULL OR occurred_at < $5) AND ($6 IS NULL OR id < $6) \
        ORDER BY id DESC LIMIT $7";
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, AuditEntry>(SQL)
        .bind(filter.actor_id).bind(&filter.subject_id).bind(&filter.action).bind(filter.from).bind(filter.to)
        .bind(page.after()?).bind(page.fetch_limit()?)
        .fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |e| e.id)?))
}
