//! The email outbox. Sending an email = inserting an `outbox` row (rendered, addressed) and
//! its delivery job in the caller's transaction; the `email.send` job hands it to the
//! configured transport and records the transport's acceptance, so a retried job never sends
//! twice. `GET /v1/outbox`, `POST /v1/outbox/{id}/retry` (admin).

use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, header};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::transport::{DeliveryError, Outgoing};
use super::{defaults, templates};
use crate::app::AppState;
use crate::auth::AdminUser;
use crate::config::Settings;
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::worker::JobError;
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

crate::text_enum! {
    /// Where an email is.
    pub enum EmailStatus {
        Queued = "queued",
        Sent = "sent",
        Dead = "dead",
    }
}

pub const QUEUE: &str = "email";
pub const SEND: &str = "email.send";
const MAX_ATTEMPTS: i32 = 6;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_outbox)).routes(routes!(get_email)).routes(routes!(retry_email))
}

/// An email to queue.
#[derive(Debug, Clone)]
pub struct Email {
    pub template: &'static str,
    pub to_address: String,
    pub to_name: Option<String>,
    /// The recipient's account, when they have one (preferences, unsubscribe).
    pub user_id: Option<Uuid>,
    /// `en` or `fr`.
    pub language: String,
    pub vars: Value,
    /// An email with the same key is queued once.
    pub dedupe_key: Option<String>,
    /// A link carrying a one-time token. The stored body holds [`SECRET_LINK`] in its place;
    /// the link is kept apart until the transport accepts the email, then erased, so neither
    /// the outbox API nor a backup holds a usable token.
    pub secret_link: Option<String>,
}

/// What the stored body shows where a secret link goes.
pub const SECRET_LINK: &str = "[one-time link: sent only in the email]";

/// Renders and queues `email` in `tx`; `None` when the recipient opted out of this kind of
/// email or one with the same dedupe key exists.
pub async fn queue(tx: &mut Tx, settings: &Settings, mut email: Email) -> ApiResult<Option<Uuid>> {
    let default = defaults::find(email.template)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no template {}", email.template)))?;
    let language = if email.language == "fr" { "fr" } else { "en" };
    let mut list_unsubscribe = None;
    if default.category == "notification"
        && let Some(user) = email.user_id
    {
        let list = super::preferences::list_of(email.template);
        let (allowed, token) = super::preferences::allowed(tx, user, list).await?;
        if !allowed {
            return Ok(None);
        }
        list_unsubscribe = Some(format!("<{}/v1/unsubscribe/{token}?list={list}>", settings.public_url));
    }
    let (subject, body) = templates::source(tx, email.template, language)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no template {}", email.template)))?;
    if let Some(map) = email.vars.as_object_mut() {
        map.entry("name").or_insert_with(|| json!(email.to_name.clone().unwrap_or_default()));
    }
    let rendered = templates::render(&subject, &body, &email.vars)
        .map_err(|(field, e)| ApiError::Internal(anyhow::anyhow!("template {} {field}: {e}", email.template)))?;
    let id = Uuid::now_v7();
    let domain = settings.email.from.rsplit('@').next().unwrap_or("cedar.local").trim_end_matches('>').to_owned();
    const SQL: &str = "INSERT INTO outbox (id, template, category, to_address, to_name, user_id, language, subject, body, \
        message_id, list_unsubscribe, status, dedupe_key, created_at, secret) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'queued', $12, $13, $14) ON CONFLICT DO NOTHING";
    let inserted = on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(email.template).bind(default.category)
        .bind(&email.to_address).bind(&email.to_name).bind(email.user_id).bind(language).bind(&rendered.subject)
        .bind(&rendered.body).bind(format!("<{id}@{domain}>")).bind(&list_unsubscribe).bind(&email.dedupe_key)
        .bind(Utc::now()).bind(&email.secret_link).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if inserted == 0 {
        return Ok(None);
    }
    let job =
        NewJob::now(QUEUE, SEND, json!({"outbox_id": id})).dedupe(format!("outbox:{id}")).max_attempts(MAX_ATTEMPTS);
    queue::enqueue(tx, job).await?;
    metrics::counter!("emails_queued_total", "template" => email.template).increment(1);
    Ok(Some(id))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct OutboxEmail {
    id: Uuid,
    template: String,
    /// `transactional` or `notification`.
    category: String,
    to_address: String,
    to_name: Option<String>,
    user_id: Option<Uuid>,
    language: String,
    subject: String,
    body: String,
    message_id: String,
    list_unsubscribe: Option<String>,
    /// `queued | sent | dead`.
    status: String,
    attempts: i32,
    last_error: Option<String>,
    transport: Option<String>,
    /// What the transport answered when it accepted the email.
    provider_message_id: Option<String>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, template, category, to_address, to_name, user_id, language, subject, body, message_id, \
    list_unsubscribe, status, attempts, last_error, transport, provider_message_id, created_at, sent_at";

/// The `email.send` job: delivers one outbox email, once.
pub async fn deliver(state: &AppState, job: &Job) -> Result<(), JobError> {
    let id = job.payload.0["outbox_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| JobError::Permanent("payload has no outbox_id".into()))?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM outbox WHERE id = $1"));
    let email = on_db!(&state.db, pool => sqlx::query_as::<_, OutboxEmail>(sql).bind(id).fetch_optional(pool).await)
        .map_err(|e| JobError::Retry(e.to_string()))?;
    let Some(mut email) = email else { return Ok(()) };
    if email.status != "queued" {
        // Already accepted by the transport (a retried job): nothing to do.
        return Ok(());
    }
    const SECRET: &str = "SELECT secret FROM outbox WHERE id = $1";
    let secret: Option<String> = on_db!(&state.db, pool => sqlx::query_scalar(SECRET).bind(id).fetch_one(pool).await)
        .map_err(|e| JobError::Retry(e.to_string()))?;
    if let Some(link) = secret {
        email.body = email.body.replace(SECRET_LINK, &link);
    }
    let outgoing = outgoing(&state.settings, &email).map_err(JobError::Permanent)?;
    let transport = state.mailer.name();
    match state.mailer.send(&outgoing).await {
        Ok(accepted) => {
            const SQL: &str = "UPDATE outbox SET status = 'sent', sent_at = $2, provider_message_id = $3, transport = $4, \
                attempts = attempts + 1, last_error = NULL, secret = NULL WHERE id = $1 AND status = 'queued'";
            on_db!(&state.db, pool => sqlx::query(SQL).bind(id).bind(Utc::now()).bind(&accepted).bind(transport)
                .execute(pool).await.map(|_| ()))
            .map_err(|e| JobError::Retry(e.to_string()))?;
            metrics::counter!("emails_total", "transport" => transport, "outcome" => "sent").increment(1);
            Ok(())
        }
        Err(error) => {
            let (permanent, message) = match &error {
                DeliveryError::Permanent(m) => (true, m.clone()),
                DeliveryError::Transient(m) => (false, m.clone()),
            };
            let dead = permanent || job.attempts >= job.max_attempts;
            const SQL: &str = "UPDATE outbox SET status = $2, attempts = attempts + 1, last_error = $3, transport = $4 \
                WHERE id = $1 AND status = 'queued'";
            let status = if dead { "dead" } else { "queued" };
            on_db!(&state.db, pool => sqlx::query(SQL).bind(id).bind(status).bind(&message).bind(transport)
                .execute(pool).await.map(|_| ()))
            .map_err(|e| JobError::Retry(e.to_string()))?;
            metrics::counter!("emails_total", "transport" => transport, "outcome" => if dead { "dead" } else { "retry" })
                .increment(1);
            tracing::warn!(email = %id, transport, error = %message, dead, "email delivery failed");
            Err(if permanent { JobError::Permanent(message) } else { JobError::Retry(message) })
        }
    }
}

/// The email as transports see it.
fn outgoing(settings: &Settings, email: &OutboxEmail) -> Result<Outgoing, String> {
    let from: Mailbox = settings.email.from.parse().map_err(|e| format!("CEDAR_EMAIL_FROM: {e}"))?;
    let reply_to: Mailbox = settings
        .email
        .reply_to
        .as_deref()
        .unwrap_or(&settings.email.from)
        .parse()
        .map_err(|e| format!("reply-to: {e}"))?;
    let to = Mailbox::new(
        email.to_name.clone(),
        email.to_address.parse().map_err(|e| format!("recipient {}: {e}", email.to_address))?,
    );
    let mut builder = lettre::Message::builder()
        .from(from.clone())
        .reply_to(reply_to.clone())
        .to(to.clone())
        .subject(email.subject.clone())
        .message_id(Some(email.message_id.clone()))
        .header(header::ContentType::TEXT_PLAIN);
    if let Some(unsubscribe) = &email.list_unsubscribe {
        builder = builder.header(ListUnsubscribe(unsubscribe.clone())).header(ListUnsubscribePost);
    }
    let message = builder.body(email.body.clone()).map_err(|e| format!("building the message: {e}"))?;
    Ok(Outgoing {
        message,
        from,
        reply_to,
        to,
        subject: email.subject.clone(),
        body: email.body.clone(),
        message_id: email.message_id.clone(),
        list_unsubscribe: email.list_unsubscribe.clone(),
        outbox_id: email.id,
    })
}

/// `List-Unsubscribe` (RFC 2369) for notifications.
#[derive(Clone)]
struct ListUnsubscribe(String);

impl header::Header for ListUnsubscribe {
    fn name() -> header::HeaderName {
        header::HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }
    fn display(&self) -> header::HeaderValue {
        header::HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
#[derive(Clone)]
struct ListUnsubscribePost;

impl header::Header for ListUnsubscribePost {
    fn name() -> header::HeaderName {
        header::HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }
    fn display(&self) -> header::HeaderValue {
        header::HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".into())
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxFilter {
    status: Option<String>,
    template: Option<String>,
    to_address: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Emails, newest first (admin).
#[utoipa::path(get, path = "/v1/outbox", tag = "messaging", params(OutboxFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<OutboxEmail>)), (status = 401), (status = 403), (status = 422)))]
async fn list_outbox(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(filter): Query<OutboxFilter>,
) -> ApiResult<Json<Page<OutboxEmail>>> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let mut errors = Errors::default();
    if let Some(status) = &filter.status {
        errors.choice::<EmailStatus>("status", status);
    }
    let (after, limit) = (page.after()?, page.fetch_limit()?);
    errors.into_result()?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM outbox WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR template = $2) \
         AND ($3 IS NULL OR to_address = $3) AND ($4 IS NULL OR id < $4) ORDER BY id DESC LIMIT $5"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, OutboxEmail>(sql).bind(&filter.status)
        .bind(&filter.template).bind(&filter.to_address).bind(after).bind(limit).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |e| e.id)?))
}

/// One email (admin).
#[utoipa::path(get, path = "/v1/outbox/{id}", tag = "messaging", security(("bearer" = [])),
    responses((status = 200, body = OutboxEmail), (status = 401), (status = 403), (status = 404)))]
async fn get_email(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OutboxEmail>> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM outbox WHERE id = $1"));
    let email = on_db!(&state.db, pool => sqlx::query_as::<_, OutboxEmail>(sql).bind(id).fetch_optional(pool).await)?;
    email.map(Json).ok_or(ApiError::NotFound)
}

/// Queues a dead email for delivery again, with fresh attempts (admin).
#[utoipa::path(post, path = "/v1/outbox/{id}/retry", tag = "messaging", security(("bearer" = [])),
    responses((status = 200, body = OutboxEmail), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn retry_email(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<OutboxEmail>> {
    const SQL: &str =
        "UPDATE outbox SET status = 'queued', last_error = NULL WHERE id = $1 AND status = 'dead' RETURNING attempts";
    let mut tx = state.db.begin().await?;
    let attempts: Option<i32> =
        on_tx!(&mut tx, conn => sqlx::query_scalar(SQL).bind(id).fetch_optional(&mut **conn).await)?;
    let Some(attempts) = attempts else {
        tx.rollback().await?;
        let email = get_email(State(state.clone()), AdminUser(admin), Path(id)).await?;
        return Err(ApiError::conflict(format!("Only dead emails can be retried; this one is {}", email.0.status)));
    };
    let job = NewJob::now(QUEUE, SEND, json!({"outbox_id": id}))
        .dedupe(format!("outbox:{id}:retry:{attempts}"))
        .max_attempts(MAX_ATTEMPTS);
    queue::enqueue(&mut tx, job).await?;
    audit::record_tx(&mut tx, AuditEvent::new("email.retried").by(&admin).subject("outbox", id)).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    get_email(State(state), AdminUser(admin), Path(id)).await
}
