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
use crate::http::escape_html;
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
    /// The page's language for a form post (`fr` or `en`).
    #[serde(default)]
    lang: Option<String>,
}

/// Spends an invite or password-recovery token and signs the user in. A form post (from the
/// page `GET /auth/v1/verify` shows when no site URL is configured) answers with a page.
#[utoipa::path(post, path = "/auth/v1/verify", tag = "auth", request_body = VerifyInput,
    responses((status = 200, body = TokenResponse), (status = 403, description = "Token invalid, used or expired"), (status = 429)))]
async fn verify(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> GoTrueResult<Response> {
    let ip = admit(&state, peer, &headers, "verify")?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if is_form {
        let input: VerifyInput = serde_urlencoded_form(&body)?;
        let language = input.lang.clone().unwrap_or_default();
        let result = match input.password.as_deref() {
            None | Some("") => {
                Err(GoTrueError::new(StatusCode::UNPROCESSABLE_ENTITY, "weak_password", "Choose a password"))
            }
            Some(_) => spend(&state, &headers, &ip, input).await,
        };
        return Ok(match result {
            Ok(_) => page(
                StatusCode::OK,
                &language,
                "Password saved",
                "Mot de passe enregistré",
                "Your password is set. You can now sign in with your email address and this password.",
                "Votre mot de passe est enregistré. Vous pouvez maintenant vous connecter avec votre adresse courriel et ce mot de passe.",
            ),
            Err(error) => page(
                error.status,
                &language,
                "That did not work",
                "Cela n'a pas fonctionné",
                &error.msg,
                "Le lien est expiré ou déjà utilisé, ou le mot de passe est trop faible. Revenez en arrière ou demandez un nouveau lien.",
            ),
        });
    }
    let input: VerifyInput = parse(&body)?;
    Ok(axum::Json(spend(&state, &headers, &ip, input).await?).into_response())
}

/// Spends the one-time token of `input` (setting its password, if any) and starts a session.
async fn spend(state: &AppState, headers: &HeaderMap, ip: &str, input: VerifyInput) -> GoTrueResult<TokenResponse> {
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
    start_session(state, &user, headers, ip, AuditEvent::new(action)).await
}

fn serde_urlencoded_form(body: &Bytes) -> GoTrueResult<VerifyInput> {
    let mut input = VerifyInput { kind: String::new(), token: None, token_hash: None, password: None, lang: None };
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "type" => input.kind = value.into_owned(),
            "token" => input.token = Some(value.into_owned()),
            "password" => input.password = Some(value.into_owned()),
            "lang" => input.lang = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(input)
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
    /// `invite`, `recovery`, or `signup` (also `email`).
    #[serde(rename = "type")]
    kind: String,
    token: String,
    /// Where to land after verifying; must be under `CEDAR_SITE_URL` (else the site URL is used).
    redirect_to: Option<String>,
    /// `fr` for the French page.
    lang: Option<String>,
}

/// A link from an email, opened in a browser, as GoTrue does it. With `CEDAR_SITE_URL` set, the
/// token is spent and the browser redirected there (or to an allowed `redirect_to`) with the
/// session in the URL fragment (`#access_token=…&refresh_token=…&type=…`), or with
/// `#error=…` when the link is spent or expired. Without a site URL, a sign-up link confirms the
/// address and says so, and an invitation or recovery link shows Cedar's own page to choose a
/// password (the token is spent only when that form is sent, so mail scanners that open links
/// do not use it up).
#[utoipa::path(get, path = "/auth/v1/verify", tag = "auth", params(VerifyLink),
    responses((status = 200, content_type = "text/html", description = "Address confirmed, or the password page"),
        (status = 303, description = "To the site URL with the session or the error in the fragment"),
        (status = 400), (status = 403, description = "Token invalid, used or expired"), (status = 429)))]
async fn verify_link(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(link): Query<VerifyLink>,
) -> GoTrueResult<Response> {
    let ip = admit(&state, peer, &headers, "verify")?;
    let purpose = purpose_of(&link.kind)?;
    let language = link.lang.clone().unwrap_or_default();
    if let Some(site) = &state.settings.school_year.site_url {
        let target = match &link.redirect_to {
            Some(to) if to == site || to.starts_with(&format!("{site}/")) || to.starts_with(&format!("{site}?")) => {
                to.clone()
            }
            _ => site.clone(),
        };
        let input = VerifyInput {
            kind: link.kind.clone(),
            token: Some(link.token.clone()),
            token_hash: None,
            password: None,
            lang: None,
        };
        let fragment = match spend(&state, &headers, &ip, input).await {
            Ok(session) => url::form_urlencoded::Serializer::new(String::new())
                .append_pair("access_token", &session.access_token)
                .append_pair("expires_at", &session.expires_at.to_string())
                .append_pair("expires_in", &session.expires_in.to_string())
                .append_pair("refresh_token", &session.refresh_token)
                .append_pair("token_type", "bearer")
                .append_pair("type", &link.kind)
                .finish(),
            Err(error) => url::form_urlencoded::Serializer::new(String::new())
                .append_pair("error", "access_denied")
                .append_pair("error_code", error.error_code)
                .append_pair("error_description", &error.msg)
                .finish(),
        };
        let location = HeaderValue::from_str(&format!("{target}#{fragment}"))
            .map_err(|_| GoTrueError::new(StatusCode::BAD_REQUEST, "validation_failed", "redirect_to is not a URL"))?;
        return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response());
    }
    if purpose != OneTimePurpose::Signup {
        return Ok(password_form(&link.kind, &link.token, &language));
    }
    let mut tx = state.db.begin().await?;
    let Some(user_id) = store::consume_one_time_token(&mut tx, &link.token, OneTimePurpose::Signup).await? else {
        return Err(GoTrueError::new(StatusCode::FORBIDDEN, "otp_expired", "Token has expired or is invalid"));
    };
    store::confirm_email(&mut tx, user_id).await?;
    audit::record_tx(&mut tx, AuditEvent::new("auth.email_confirmed").subject("user", user_id).ip(Some(ip))).await?;
    tx.commit().await?;
    Ok(page(
        StatusCode::OK,
        &language,
        "Email address confirmed",
        "Adresse courriel confirmée",
        "Thank you. You can close this page and sign in.",
        "Merci. Vous pouvez fermer cette page et vous connecter.",
    ))
}

/// Cedar's own small pages: inline styles only, no script, forms posting to Cedar alone.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";
const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28em;margin:3em auto;padding:0 1em;line-height:1.5;color:#1a1a1a}\
    label{display:block;margin:1em 0 .3em}input{font-size:1em;padding:.5em;width:100%;box-sizing:border-box}\
    button{margin-top:1em;font-size:1em;padding:.6em 1.2em;background:#1d4d2b;color:#fff;border:0;border-radius:4px}\
    button:focus,input:focus{outline:3px solid #f2b705}";

fn html_page(status: StatusCode, language: &str, title: &str, body: &str) -> Response {
    let school = escape_html(crate::messaging::templates::SCHOOL);
    let lang = if language == "fr" { "fr" } else { "en" };
    let html = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} – {school}</title><style>{PAGE_STYLE}</style></head><body><main><p>{school}</p><h1>{title}</h1>{body}</main></body></html>"
    );
    let mut response = (status, axum::response::Html(html)).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}

fn page(status: StatusCode, language: &str, title_en: &str, title_fr: &str, text_en: &str, text_fr: &str) -> Response {
    let (title, text) = if language == "fr" { (title_fr, text_fr) } else { (title_en, text_en) };
    html_page(status, language, &escape_html(title), &format!("<p>{}</p>", escape_html(text)))
}

/// The page an invitation or recovery link opens: choose a password.
fn password_form(kind: &str, token: &str, language: &str) -> Response {
    let french = language == "fr";
    let (title, label, button) = if french {
        ("Choisissez votre mot de passe", "Nouveau mot de passe (au moins 8 caractères)", "Enregistrer")
    } else {
        ("Choose your password", "New password (at least 8 characters)", "Save password")
    };
    let body = format!(
        "<form method=\"post\" action=\"/auth/v1/verify\"><input type=\"hidden\" name=\"type\" value=\"{kind}\">\
         <input type=\"hidden\" name=\"token\" value=\"{token}\"><input type=\"hidden\" name=\"lang\" value=\"{lang}\">\
         <label for=\"password\">{label}</label><input id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"new-password\" minlength=\"8\" required autofocus><button type=\"submit\">{button}</button></form>",
        kind = escape_html(kind),
        token = escape_html(token),
        lang = if french { "fr" } else { "en" },
    );
    html_page(StatusCode::OK, language, title, &body)
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
