//! The signed-in side of the GoTrue surface: logout, the user object and its updates (with
//! re-authentication for password changes from old sessions), invite and recovery links,
//! password-reset requests, and the public signing keys.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::current_user::CurrentUser;
use crate::auth::password;
use crate::auth::store::{self, OneTimePurpose, UserRecord};
use crate::error::ApiError;
use crate::http::Query;
use crate::privacy::audit::{self, AuditEvent};

use super::{
    GoTrueError, GoTrueResult, TokenResponse, admit, built_in, email_of, gotrue_user, limit, new_password_hash, parse,
    start_session,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(logout))
        .routes(routes!(get_user, update_user))
        .routes(routes!(verify, verify_link))
        .routes(routes!(recover))
        .routes(routes!(jwks))
}

fn signed_in(user: Result<CurrentUser, ApiError>) -> GoTrueResult<CurrentUser> {
    user.map_err(|e| {
        let msg = match e {
            ApiError::Unauthorized(why) => why,
            other => other.to_string(),
        };
        GoTrueError::new(StatusCode::UNAUTHORIZED, "bad_jwt", msg)
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct LogoutScope {
    /// `global` (default: every session of the user), `local` (this one) or `others`.
    scope: Option<String>,
}

/// Ends this session, every session (`global`), or every other one; takes effect at once.
#[utoipa::path(post, path = "/auth/v1/logout", tag = "auth", params(LogoutScope), security(("bearer" = [])),
    responses((status = 204), (status = 401)))]
async fn logout(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    Query(scope): Query<LogoutScope>,
) -> GoTrueResult<StatusCode> {
    let user = signed_in(user)?;
    let current = user.session_id;
    let scope = scope.scope.unwrap_or_else(|| "global".to_owned());
    let mut tx = state.db.begin().await?;
    let revoked = match (scope.as_str(), current) {
        ("local", Some(session)) => {
            if store::revoke_session(&mut tx, session, "logout").await? {
                vec![session]
            } else {
                vec![]
            }
        }
        ("local", None) => vec![],
        ("others", _) => store::revoke_user_sessions(&mut tx, user.id, current, "logout_others").await?,
        ("global", _) => store::revoke_user_sessions(&mut tx, user.id, None, "logout_global").await?,
        _ => {
            return Err(GoTrueError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "scope must be global, local or others",
            ));
        }
    };
    audit::record_tx(
        &mut tx,
        AuditEvent::new("auth.sign_out")
            .by(&user)
            .subject("user", user.id)
            .details(json!({"scope": scope, "sessions": revoked})),
    )
    .await?;
    tx.commit().await?;
    state.auth.forget_sessions(&revoked);
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user, GoTrue-shaped.
#[utoipa::path(get, path = "/auth/v1/user", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 401)))]
async fn get_user(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
) -> GoTrueResult<axum::Json<Value>> {
    let user = signed_in(user)?;
    let record = store::user_by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| GoTrueError::new(StatusCode::NOT_FOUND, "user_not_found", "User not found"))?;
    Ok(axum::Json(gotrue_user(&record)))
}

#[derive(Debug, Deserialize)]
struct UserUpdate {
    password: Option<String>,
    /// Required to change the password from a session more than [`RECENT_SIGN_IN`] old.
    current_password: Option<String>,
    data: Option<Value>,
    email: Option<String>,
}

/// A session this young may change its password without the current one (as after a
/// sign-in or a recovery link); an older one must prove it again.
const RECENT_SIGN_IN: chrono::Duration = chrono::Duration::minutes(10);

/// Changes the signed-in user's password and/or `user_metadata` (supabase-js `updateUser`).
#[utoipa::path(put, path = "/auth/v1/user", tag = "auth", security(("bearer" = [])),
    request_body(content = Object, description = "`{password?, data?}`"),
    responses((status = 200, body = Object), (status = 401), (status = 422)))]
async fn update_user(
    State(state): State<AppState>,
    user: Result<CurrentUser, ApiError>,
    body: Bytes,
) -> GoTrueResult<axum::Json<Value>> {
    built_in(&state.auth)?;
    let user = signed_in(user)?;
    let input: UserUpdate = parse(&body)?;
    if input.email.is_some() {
        return Err(GoTrueError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "email_change_not_supported",
            "Ask the school office to change your email address",
        ));
    }
    if input.password.is_some() {
        // Each change costs argon2 work (two with re-authentication): a few per minute.
        limit(&state.auth.ip_limiter, &format!("password-change:{}", user.id))?;
        reauthenticate(&state, &user, input.current_password.clone()).await?;
    }
    let hash = new_password_hash(input.password).await?;
    let mut tx = state.db.begin().await?;
    if let Some(hash) = &hash {
        store::set_password(&mut tx, user.id, hash).await?;
        // Whoever else held a session (a stolen token, a forgotten device) is signed out.
        let revoked = store::revoke_user_sessions(&mut tx, user.id, user.session_id, "password_changed").await?;
        let event = AuditEvent::new("auth.password_changed").by(&user).subject("user", user.id);
        audit::record_tx(&mut tx, event.details(json!({"sessions_ended": revoked.len()}))).await?;
    }
    if let Some(data) = input.data.filter(Value::is_object) {
        store::set_user_metadata(&mut tx, user.id, &data).await?;
    }
    tx.commit().await?;
    let record = store::user_by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| GoTrueError::new(StatusCode::NOT_FOUND, "user_not_found", "User not found"))?;
    Ok(axum::Json(gotrue_user(&record)))
}

/// A password change from a session older than [`RECENT_SIGN_IN`] needs the current password.
async fn reauthenticate(state: &AppState, user: &CurrentUser, current: Option<String>) -> GoTrueResult<()> {
    const STARTED: &str = "SELECT created_at FROM auth_sessions WHERE id = $1";
    let started: Option<chrono::DateTime<chrono::Utc>> = match user.session_id {
        Some(session) => crate::on_db!(&state.db, pool => sqlx::query_scalar(STARTED).bind(session)
            .fetch_optional(pool).await)?,
        None => None,
    };
    if started.is_some_and(|at| chrono::Utc::now() - at < RECENT_SIGN_IN) {
        return Ok(());
    }
    let Some(current) = current else {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "reauthentication_needed",
            "Give current_password to change the password of a session that is not recent",
        ));
    };
    let stored = store::user_by_id(&state.db, user.id).await?.and_then(|u| u.password_hash);
    if !password::verify(current, stored).await {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "reauthentication_not_valid",
            "The current password is wrong",
        ));
    }
    Ok(())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VerifyInput {
    /// `invite`, `recovery`, or `signup` (also `email`) to confirm a sign-up's address.
    #[serde(rename = "type")]
    kind: String,
    /// The one-time token (supabase-js `verifyOtp` sends it as `token_hash`).
    token: Option<String>,
    token_hash: Option<String>,
    /// Optionally set the new password in the same call.
    password: Option<String>,
}

/// Spends an invite or password-recovery token and signs the user in.
#[utoipa::path(post, path = "/auth/v1/verify", tag = "auth", request_body = VerifyInput,
    responses((status = 200, body = TokenResponse), (status = 403, description = "Token invalid, used or expired"), (status = 429)))]
async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> GoTrueResult<axum::Json<TokenResponse>> {
    let ip = admit(&state, peer, &headers, "verify")?;
    let input: VerifyInput = parse(&body)?;
    let purpose = purpose_of(&input.kind)?;
    let Some(token) = input.token.or(input.token_hash).filter(|t| !t.is_empty()) else {
        return Err(GoTrueError::new(StatusCode::BAD_REQUEST, "validation_failed", "token is required"));
    };
    let hash = new_password_hash(input.password).await?;
    let mut tx = state.db.begin().await?;
    let Some(user_id) = store::consume_one_time_token(&mut tx, &token, purpose).await? else {
        return Err(GoTrueError::new(StatusCode::FORBIDDEN, "otp_expired", "Token has expired or is invalid"));
    };
    if let Some(hash) = &hash {
        store::set_password(&mut tx, user_id, hash).await?;
    }
    // Every one-time link was delivered to the address: following it proves the mailbox.
    store::confirm_email(&mut tx, user_id).await?;
    if purpose == OneTimePurpose::Recovery {
        // A reset ends every existing session: whoever knew the old password is signed out.
        let revoked = store::revoke_user_sessions(&mut tx, user_id, None, "password_reset").await?;
        state.auth.forget_sessions(&revoked);
    }
    tx.commit().await?;
    let user = store::user_by_id(&state.db, user_id)
        .await?
        .filter(UserRecord::is_active)
        .ok_or_else(|| GoTrueError::new(StatusCode::FORBIDDEN, "otp_expired", "Token has expired or is invalid"))?;
    let action = match purpose {
        OneTimePurpose::Invite => "auth.invite_accepted",
        OneTimePurpose::Recovery => "auth.password_reset",
        OneTimePurpose::Signup => "auth.email_confirmed",
    };
    Ok(axum::Json(start_session(&state, &user, &headers, &ip, AuditEvent::new(action)).await?))
}

fn purpose_of(kind: &str) -> GoTrueResult<OneTimePurpose> {
    match kind {
        "invite" => Ok(OneTimePurpose::Invite),
        "recovery" => Ok(OneTimePurpose::Recovery),
        "signup" | "email" => Ok(OneTimePurpose::Signup),
        _ => Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "type must be invite, recovery or signup",
        )),
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct VerifyLink {
    /// `signup` (or `email`): the confirmation link of a sign-up.
    #[serde(rename = "type")]
    kind: String,
    token: String,
}

/// The confirmation link of a sign-up, opened in a browser: confirms the address and says so.
/// (Invitation and recovery links need a new password: they are spent with `POST`.)
#[utoipa::path(get, path = "/auth/v1/verify", tag = "auth", params(VerifyLink),
    responses((status = 200, content_type = "text/html", description = "Address confirmed"),
        (status = 400), (status = 403, description = "Token invalid, used or expired"), (status = 429)))]
async fn verify_link(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(link): Query<VerifyLink>,
) -> GoTrueResult<Response> {
    let ip = admit(&state, peer, &headers, "verify")?;
    if purpose_of(&link.kind)? != OneTimePurpose::Signup {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Invitation and recovery links are opened in the school's app, which sets the new password",
        ));
    }
    let mut tx = state.db.begin().await?;
    let Some(user_id) = store::consume_one_time_token(&mut tx, &link.token, OneTimePurpose::Signup).await? else {
        return Err(GoTrueError::new(StatusCode::FORBIDDEN, "otp_expired", "Token has expired or is invalid"));
    };
    store::confirm_email(&mut tx, user_id).await?;
    audit::record_tx(&mut tx, AuditEvent::new("auth.email_confirmed").subject("user", user_id).ip(Some(ip))).await?;
    tx.commit().await?;
    let school = crate::messaging::templates::SCHOOL;
    let page = format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>{school}</title>\
         <main><h1>Email address confirmed</h1><p>Thank you. You can close this page and sign in to {school}.</p>\
         <p lang=\"fr\">Adresse courriel confirmée. Vous pouvez fermer cette page.</p></main></html>"
    );
    Ok(axum::response::Html(page).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RecoverInput {
    email: String,
}

/// Emails a password-reset link (supabase-js `resetPasswordForEmail`). Always answers 200 `{}`,
/// whether or not the address has an account, so it reveals nothing.
#[utoipa::path(post, path = "/auth/v1/recover", tag = "auth", request_body = RecoverInput,
    responses((status = 200, body = Object), (status = 400), (status = 429)))]
async fn recover(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> GoTrueResult<axum::Json<Value>> {
    let ip = admit(&state, peer, &headers, "recover")?;
    let input: RecoverInput = parse(&body)?;
    let email = email_of(&input.email)?;
    limit(&state.auth.account_limiter, &format!("recover:{}", email.as_str()))?;
    // The same work for every address, known or not: the lookup happens in a job.
    let mut tx = state.db.begin().await?;
    crate::auth::emails::request_recovery(&mut tx, email.as_str(), &ip).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(axum::Json(json!({})))
}

/// Public keys of Cedar's token signing key (JWKS), for other services to verify tokens.
#[utoipa::path(get, path = "/auth/v1/.well-known/jwks.json", tag = "auth", responses((status = 200, body = Object)))]
async fn jwks(State(state): State<AppState>) -> GoTrueResult<Response> {
    built_in(&state.auth)?;
    let key = state.auth.signing_key().expect("built-in mode has a key");
    let mut response = axum::Json(&key.jwks).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=600"));
    Ok(response)
}
