//! Cedar's built-in, GoTrue-compatible auth endpoints under `/auth/v1`, so supabase-js works
//! against Cedar unchanged: same paths, same token response, same `{code, error_code, msg}`
//! errors. Request bodies are parsed leniently (supabase-js adds fields such as
//! `gotrue_meta_security` and `code_challenge`), and the anon key it sends as a bearer token is
//! simply not looked at on these public routes.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::auth::current_user::Role;
use crate::auth::password;
use crate::auth::service::{Auth, Mode};
use crate::auth::store::{self, NewUser, Refresh, UserRecord};
use crate::config::SignupPolicy;
use crate::error::ApiError;
use crate::http::Email;
use crate::http::Query;
use crate::privacy::audit::{self, AuditEvent};

mod account;

/// GoTrue's error body.
#[derive(Debug)]
pub struct GoTrueError {
    status: StatusCode,
    error_code: &'static str,
    msg: String,
    retry_after: Option<u64>,
}

impl GoTrueError {
    fn new(status: StatusCode, error_code: &'static str, msg: impl Into<String>) -> Self {
        Self { status, error_code, msg: msg.into(), retry_after: None }
    }

    fn invalid_credentials() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_credentials", "Invalid login credentials")
    }

    fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "over_request_rate_limit", "Request rate limit reached")
        }
    }

    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "auth endpoint failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "unexpected_failure", "Unexpected failure; please retry")
    }
}

impl From<sqlx::Error> for GoTrueError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

impl From<ApiError> for GoTrueError {
    fn from(error: ApiError) -> Self {
        Self::internal(error.to_string())
    }
}

impl From<anyhow::Error> for GoTrueError {
    fn from(error: anyhow::Error) -> Self {
        Self::internal(format!("{error:#}"))
    }
}

impl IntoResponse for GoTrueError {
    fn into_response(self) -> Response {
        let body = json!({"code": self.status.as_u16(), "error_code": self.error_code, "msg": self.msg});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

type GoTrueResult<T> = Result<T, GoTrueError>;

/// supabase-js's session payload.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    expires_at: i64,
    refresh_token: String,
    #[schema(value_type = Object)]
    user: Value,
}

/// The user object in GoTrue's shape; `app_metadata.role` carries the Cedar role.
pub fn gotrue_user(user: &UserRecord) -> Value {
    json!({
        "id": user.id.to_string(),
        "aud": "authenticated",
        "role": "authenticated",
        "email": user.email,
        "email_confirmed_at": user.email_confirmed_at,
        "phone": "",
        "confirmed_at": user.email_confirmed_at,
        "last_sign_in_at": user.last_sign_in_at,
        "app_metadata": {"provider": "email", "providers": ["email"], "role": user.role},
        "user_metadata": user.user_metadata.0,
        "identities": [],
        "created_at": user.created_at,
        "updated_at": user.updated_at,
        "is_anonymous": false,
    })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(signup)).routes(routes!(token)).merge(account::router())
}

/// The address a request names, normalised, or GoTrue's 400 saying why it is not one.
fn email_of(text: &str) -> GoTrueResult<Email> {
    Email::parse(text).map_err(|why| {
        GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            format!("Unable to validate email address: {why}"),
        )
    })
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> GoTrueResult<T> {
    if body.is_empty() {
        return Err(GoTrueError::new(StatusCode::BAD_REQUEST, "bad_json", "A JSON request body is required"));
    }
    if crate::http::contains_escaped_nul(body) {
        return Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "Text must not contain NUL characters",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        GoTrueError::new(StatusCode::BAD_REQUEST, "bad_json", format!("Could not parse request body as JSON: {e}"))
    })
}

fn built_in(auth: &Auth) -> GoTrueResult<()> {
    match auth.mode {
        Mode::BuiltIn(_) => Ok(()),
        Mode::Supabase(_) => Err(GoTrueError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "This Cedar uses Supabase Auth; sign in through Supabase",
        )),
    }
}

/// The opening of every public GoTrue call: built-in mode only, then `action`'s budget per
/// client IP. Returns the client's key (also what audits record).
fn admit(state: &AppState, peer: SocketAddr, headers: &HeaderMap, action: &str) -> GoTrueResult<String> {
    built_in(&state.auth)?;
    let ip = crate::http::client::client_key(peer, headers, &state.settings.trusted_proxies);
    limit(&state.auth.ip_limiter, &format!("{action}:{ip}"))?;
    Ok(ip)
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok())
}

fn limit(limiter: &crate::app::ratelimit::RateLimiter, key: &str) -> GoTrueResult<()> {
    limiter.check(key).map_err(GoTrueError::rate_limited)
}

/// Starts a session for `user` and answers with the token response.
async fn start_session(
    state: &AppState,
    user: &UserRecord,
    headers: &HeaderMap,
    ip: &str,
    event: AuditEvent,
) -> GoTrueResult<TokenResponse> {
    let mut tx = state.db.begin().await?;
    let (session_id, refresh_token) = store::create_session(&mut tx, user.id, user_agent(headers), Some(ip)).await?;
    store::touch_sign_in(&mut tx, user.id).await?;
    audit::record_tx(&mut tx, event.actor(user.id, user.role()).subject("session", session_id).ip(Some(ip.to_owned())))
        .await?;
    tx.commit().await?;
    let user = store::user_by_id(&state.db, user.id).await?.unwrap_or_else(|| user.clone());
    token_response(&state.auth, &user, session_id, refresh_token)
}

fn token_response(
    auth: &Auth,
    user: &UserRecord,
    session_id: uuid::Uuid,
    refresh_token: String,
) -> GoTrueResult<TokenResponse> {
    let (access_token, expires_at) = auth.issue_access_token(user, session_id)?;
    Ok(TokenResponse {
        access_token,
        token_type: "bearer",
        expires_in: auth.access_ttl.as_secs(),
        expires_at,
        refresh_token,
        user: gotrue_user(user),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct Credentials {
    email: String,
    password: String,
    /// Stored as the user's `user_metadata` (never trusted for anything).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    data: Option<Value>,
}

/// Creates a parent account and signs it in (when sign-up is open).
#[utoipa::path(post, path = "/auth/v1/signup", tag = "auth", request_body = Credentials,
    responses((status = 200, body = TokenResponse), (status = 400), (status = 422), (status = 429)))]
async fn signup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> GoTrueResult<axum::Json<TokenResponse>> {
    let ip = admit(&state, peer, &headers, "signup")?;
    if state.auth.signup == SignupPolicy::Invite {
        return Err(GoTrueError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "signup_disabled",
            "Signups not allowed for this instance; ask the school for an invitation",
        ));
    }
    let input: Credentials = parse(&body)?;
    let email = email_of(&input.email)?;
    if let Some(why) = password::weakness(&input.password) {
        return Err(GoTrueError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", why));
    }
    let hash = password::hash(input.password).await?;
    let metadata = input.data.filter(Value::is_object).unwrap_or_else(|| json!({}));
    let new = NewUser {
        id: uuid::Uuid::now_v7(),
        email: email.as_str(),
        role: Role::Parent,
        display_name: None,
        family_id: None,
        teacher_id: None,
        password_hash: Some(&hash),
        user_metadata: metadata,
        // Proven only when the emailed link is followed (until then the office cannot link
        // this account to a family).
        email_confirmed: false,
    };
    let mut tx = state.db.begin().await?;
    let user = match store::insert_user(&mut tx, &new).await {
        Ok(user) => user,
        Err(error) if is_unique_violation(&error) => {
            return Err(GoTrueError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "user_already_exists",
                "User already registered",
            ));
        }
        Err(error) => return Err(error.into()),
    };
    audit::record_tx(
        &mut tx,
        AuditEvent::new("user.created")
            .actor(user.id, Role::Parent)
            .subject("user", user.id)
            .details(json!({"via": "signup"})),
    )
    .await?;
    crate::auth::emails::send_signup_confirmation(&mut tx, &state.settings, user.id).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(axum::Json(start_session(&state, &user, &headers, &ip, AuditEvent::new("auth.sign_in")).await?))
}

/// Checks and hashes a new password, if one was given.
async fn new_password_hash(password: Option<String>) -> GoTrueResult<Option<String>> {
    let Some(password) = password else { return Ok(None) };
    if let Some(why) = password::weakness(&password) {
        return Err(GoTrueError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", why));
    }
    Ok(Some(password::hash(password).await?))
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct GrantType {
    /// `password` or `refresh_token`.
    grant_type: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RefreshInput {
    refresh_token: String,
}

/// Signs in with a password, or exchanges a refresh token (single use; rotated).
#[utoipa::path(post, path = "/auth/v1/token", tag = "auth", params(GrantType),
    request_body(content = Object, description = "`{email, password}` or `{refresh_token}`"),
    responses((status = 200, body = TokenResponse), (status = 400), (status = 429)))]
async fn token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(grant): Query<GrantType>,
    headers: HeaderMap,
    body: Bytes,
) -> GoTrueResult<axum::Json<TokenResponse>> {
    built_in(&state.auth)?;
    let ip = crate::http::client::client_key(peer, &headers, &state.settings.trusted_proxies);
    match grant.grant_type.as_deref() {
        Some("password") => password_grant(&state, &ip, &headers, parse(&body)?).await.map(axum::Json),
        Some("refresh_token") => refresh_grant(&state, &ip, parse(&body)?).await.map(axum::Json),
        _ => Err(GoTrueError::new(StatusCode::BAD_REQUEST, "validation_failed", "Unsupported grant_type")),
    }
}

async fn password_grant(
    state: &AppState,
    ip: &str,
    headers: &HeaderMap,
    input: Credentials,
) -> GoTrueResult<TokenResponse> {
    limit(&state.auth.ip_limiter, &format!("signin:{ip}"))?;
    // A bounded, normalised address (at most 254 characters) is all that may reach the
    // limiter's keys and the audit trail; anything else is not an account.
    let email = crate::http::Email::parse(&input.email)
        .map_err(|_| {
            GoTrueError::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "Unable to validate email address: invalid format",
            )
        })?
        .as_str()
        .to_owned();
    // Only failures count against an account, per client and (ten times looser) overall, so
    // a stranger can neither guess at length nor lock the owner out from their own network.
    let (here, anywhere) = (format!("signin-failed:{email}:{ip}"), format!("signin-failed:{email}"));
    state.auth.account_limiter.blocked(&here).map_err(GoTrueError::rate_limited)?;
    state.auth.account_limiter_overall.blocked(&anywhere).map_err(GoTrueError::rate_limited)?;
    let user = store::user_by_email(&state.db, &email).await?;
    // Same work and the same answer whether the account is unknown, disabled or the password
    // is wrong.
    let stored = user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok = password::verify(input.password, stored).await;
    match user {
        Some(user) if password_ok && user.is_active() => {
            start_session(state, &user, headers, ip, AuditEvent::new("auth.sign_in")).await
        }
        user => {
            let reason = match &user {
                None => "unknown_account",
                Some(u) if !u.is_active() => "account_disabled",
                Some(_) => "wrong_password",
            };
            state.auth.account_limiter.count(&here);
            state.auth.account_limiter_overall.count(&anywhere);
            let mut event = AuditEvent::new("auth.sign_in_failed")
                .ip(Some(ip.to_owned()))
                .details(json!({"email": email, "reason": reason}));
            if let Some(user) = &user {
                event = event.subject("user", user.id);
            }
            audit::record(&state.db, event).await?;
            Err(GoTrueError::invalid_credentials())
        }
    }
}

async fn refresh_grant(state: &AppState, ip: &str, input: RefreshInput) -> GoTrueResult<TokenResponse> {
    // A client refreshes about hourly; the per-IP sign-in budget leaves plenty for a whole office.
    limit(&state.auth.ip_limiter, &format!("refresh:{ip}"))?;
    let mut tx = state.db.begin().await?;
    let outcome = store::rotate_refresh_token(&mut tx, input.refresh_token.trim()).await?;
    match outcome {
        Refresh::Rotated { user_id, session_id, refresh_token } => {
            tx.commit().await?;
            let user = store::user_by_id(&state.db, user_id).await?.filter(UserRecord::is_active).ok_or_else(|| {
                GoTrueError::new(StatusCode::BAD_REQUEST, "session_not_found", "Invalid Refresh Token: Session Expired")
            })?;
            token_response(&state.auth, &user, session_id, refresh_token)
        }
        Refresh::Reused { user_id, session_id } => {
            let role = store::user_by_id(&state.db, user_id).await?.map_or(Role::Parent, |u| u.role());
            audit::record_tx(
                &mut tx,
                AuditEvent::new("auth.session_revoked")
                    .actor(user_id, role)
                    .subject("session", session_id)
                    .ip(Some(ip.to_owned()))
                    .details(json!({"reason": "refresh_token_reused"})),
            )
            .await?;
            tx.commit().await?;
            state.auth.forget_sessions(&[session_id]);
            Err(GoTrueError::new(
                StatusCode::BAD_REQUEST,
                "refresh_token_already_used",
                "Invalid Refresh Token: Already Used",
            ))
        }
        Refresh::SessionRevoked => Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "session_not_found",
            "Invalid Refresh Token: Session Expired",
        )),
        Refresh::NotFound => Err(GoTrueError::new(
            StatusCode::BAD_REQUEST,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
        )),
    }
}
