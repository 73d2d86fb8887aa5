//! Email preferences. Transactional email (invoices, lesson changes, sign-in links) always
//! goes out; notifications (reminders, message digests) are on by default for existing
//! customers and can be turned off in the app or with one click from the email
//! (`List-Unsubscribe`, RFC 8058). Cedar sends no marketing email, so nothing needs opt-in.

use axum::extract::{Path, State};
use axum::response::Html;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub const LISTS: &[&str] = &["reminders", "message_emails"];

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_preferences, put_preferences))
        .routes(routes!(unsubscribe_page, unsubscribe))
}

/// Which preference governs a notification template.
pub fn list_of(template: &str) -> &'static str {
    match template {
        "new_message" => "message_emails",
        _ => "reminders",
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Preferences {
    /// Lesson reminders and attendance nudges.
    reminders: bool,
    /// Emails about new messages in the app.
    message_emails: bool,
}

/// The user's preferences (created with defaults on first use) and their unsubscribe token.
async fn load(tx: &mut Tx, user: Uuid) -> Result<(Preferences, String), sqlx::Error> {
    const INSERT: &str = "INSERT INTO email_preferences (user_id, unsubscribe_token, updated_at) VALUES ($1, $2, $3) \
        ON CONFLICT (user_id) DO NOTHING";
    const SELECT: &str =
        "SELECT reminders, message_emails, unsubscribe_token FROM email_preferences WHERE user_id = $1";
    let (token, _) = crate::auth::store::new_secret_token();
    on_tx!(tx, conn => sqlx::query(INSERT).bind(user).bind(&token).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    let (reminders, message_emails, token): (bool, bool, String) =
        on_tx!(tx, conn => sqlx::query_as(SELECT).bind(user).fetch_one(&mut **conn).await)?;
    Ok((Preferences { reminders, message_emails }, token))
}

/// Whether `user` accepts notifications of `list`, and their unsubscribe token.
pub async fn allowed(tx: &mut Tx, user: Uuid, list: &str) -> Result<(bool, String), sqlx::Error> {
    let (preferences, token) = load(tx, user).await?;
    let allowed = match list {
        "message_emails" => preferences.message_emails,
        _ => preferences.reminders,
    };
    Ok((allowed, token))
}

/// Your email preferences.
#[utoipa::path(get, path = "/v1/me/email-preferences", tag = "messaging", security(("bearer" = [])),
    responses((status = 200, body = Preferences), (status = 401)))]
async fn get_preferences(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Preferences>> {
    let mut tx = state.db.begin().await?;
    let (preferences, _) = load(&mut tx, user.id).await?;
    tx.commit().await?;
    Ok(Json(preferences))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreferencesUpdate {
    reminders: Option<bool>,
    message_emails: Option<bool>,
}

/// Changes your email preferences.
#[utoipa::path(put, path = "/v1/me/email-preferences", tag = "messaging", request_body = PreferencesUpdate, security(("bearer" = [])),
    responses((status = 200, body = Preferences), (status = 401), (status = 422)))]
async fn put_preferences(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(update): Json<PreferencesUpdate>,
) -> ApiResult<Json<Preferences>> {
    let mut tx = state.db.begin().await?;
    let (current, _) = load(&mut tx, user.id).await?;
    let next = Preferences {
        reminders: update.reminders.unwrap_or(current.reminders),
        message_emails: update.message_emails.unwrap_or(current.message_emails),
    };
    const SQL: &str =
        "UPDATE email_preferences SET reminders = $2, message_emails = $3, updated_at = $4 WHERE user_id = $1";
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(user.id).bind(next.reminders).bind(next.message_emails)
        .bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    let event = AuditEvent::new("email_preferences.updated").by(&user).subject("user", user.id);
    audit::record_tx(&mut tx, event.details(serde_json::to_value(&next).unwrap_or_default())).await?;
    tx.commit().await?;
    Ok(Json(next))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParam {
    /// `reminders` or `message_emails`.
    list: String,
}

/// The page an unsubscribe link opens: a button that posts the one-click unsubscribe (a GET
/// changes nothing, so link scanners cannot unsubscribe anyone).
#[utoipa::path(get, path = "/v1/unsubscribe/{token}", tag = "messaging", params(ListParam),
    responses((status = 200, content_type = "text/html")))]
async fn unsubscribe_page(Path(_token): Path<String>, Query(q): Query<ListParam>) -> ApiResult<Html<String>> {
    let list = LISTS.iter().find(|l| **l == q.list).ok_or_else(|| ApiError::invalid("list", "unknown list"))?;
    Ok(Html(format!(
        "<!doctype html><meta charset=utf-8><title>Unsubscribe</title>\
         <form method=post><p>Stop these emails ({list})?</p><button>Unsubscribe</button></form>"
    )))
}

/// One-click unsubscribe (RFC 8058): no sign-in, the token in the email identifies the user.
#[utoipa::path(post, path = "/v1/unsubscribe/{token}", tag = "messaging", params(ListParam),
    responses((status = 200, content_type = "text/html"), (status = 404), (status = 422)))]
async fn unsubscribe(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<ListParam>,
) -> ApiResult<Html<&'static str>> {
    let column = match q.list.as_str() {
        "reminders" => "reminders",
        "message_emails" => "message_emails",
        _ => return Err(ApiError::invalid("list", "must be reminders or message_emails")),
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE email_preferences SET {column} = FALSE, updated_at = $2 WHERE unsubscribe_token = $1 RETURNING user_id"
    ));
    let user: Option<Uuid> =
        on_db!(&state.db, pool => sqlx::query_scalar(sql).bind(&token).bind(Utc::now()).fetch_optional(pool).await)?;
    let user = user.ok_or(ApiError::NotFound)?;
    let event = AuditEvent::new("email_preferences.unsubscribed").subject("user", user);
    audit::record(&state.db, event.details(serde_json::json!({"list": column}))).await?;
    Ok(Html(
        "<!doctype html><meta charset=utf-8><title>Unsubscribed</title><p>Done: you will not get these emails any more.</p>",
    ))
}
