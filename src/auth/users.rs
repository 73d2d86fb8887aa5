//! `/v1/me` (any signed-in user) and `/v1/users` (admins): accounts, roles, sessions,
//! invitations and password resets. Every change is audited in its own transaction.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::current_user::{AdminUser, CurrentUser, Role};
use super::password;
use super::store::{self, NewUser, OneTimePurpose, UserRecord};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, FieldError};
use crate::http::Email;
use crate::http::pagination::{Page, PageParams};
use crate::http::{Json, Query, nullable};
use crate::on_db;
use crate::privacy::audit::{self, AuditEvent};

/// How long an invitation stays valid.
const INVITE_VALID_FOR: chrono::Duration = chrono::Duration::days(7);
/// How long a password-reset token stays valid.
pub(crate) const RESET_VALID_FOR: chrono::Duration = chrono::Duration::hours(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(my_sessions))
        .routes(routes!(end_my_session))
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(issue_password_reset))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    id: Uuid,
    email: String,
    role: Role,
    display_name: Option<String>,
    family_id: Option<Uuid>,
    teacher_id: Option<Uuid>,
}

/// The signed-in user.
#[utoipa::path(get, path = "/v1/me", tag = "me", security(("bearer" = [])), responses((status = 200, body = Me), (status = 401)))]
async fn me(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Me>> {
    let record = store::user_by_id(&state.db, user.id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(Me {
        id: record.id,
        role: record.role(),
        email: record.email,
        display_name: record.display_name,
        family_id: record.family_id,
        teacher_id: record.teacher_id,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    id: Uuid,
    created_at: DateTime<Utc>,
    refreshed_at: DateTime<Utc>,
    user_agent: Option<String>,
    ip: Option<String>,
    /// The session this request was made with.
    current: bool,
}

/// The signed-in user's active sessions, newest first.
#[utoipa::path(get, path = "/v1/me/sessions", tag = "me", security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Session>)), (status = 401)))]
async fn my_sessions(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Page<Session>>> {
    let items = store::active_sessions(&state.db, user.id)
        .await?
        .into_iter()
        .map(|s| Session {
            current: Some(s.id) == user.session_id,
            id: s.id,
            created_at: s.created_at,
            refreshed_at: s.refreshed_at,
            user_agent: s.user_agent,
            ip: s.ip,
        })
        .collect();
    Ok(Json(Page { items, next_cursor: None }))
}

/// Signs one of the user's own sessions out (its tokens stop working at once).
#[utoipa::path(delete, path = "/v1/me/sessions/{id}", tag = "me", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 404)))]
async fn end_my_session(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    if !store::revoke_own_session(&mut tx, user.id, id, "ended_by_user").await? {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("auth.session_revoked").by(&user).subject("session", id)).await?;
    tx.commit().await?;
    state.auth.forget_sessions(&[id]);
    Ok(StatusCode::NO_CONTENT)
}

/// An account as admins see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    id: Uuid,
    email: String,
    role: Role,
    /// `active` or `disabled`.
    status: String,
    display_name: Option<String>,
    family_id: Option<Uuid>,
    teacher_id: Option<Uuid>,
    /// Whether the account can sign in with a password yet.
    has_password: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_sign_in_at: Option<DateTime<Utc>>,
    /// `null` for an open sign-up whose owner has not yet followed the confirmation link; such
    /// an account cannot be linked to a family by the office.
    email_confirmed_at: Option<DateTime<Utc>>,
}

impl From<UserRecord> for User {
    fn from(r: UserRecord) -> Self {
        Self {
            id: r.id,
            role: r.role(),
            email: r.email,
            status: r.status,
            display_name: r.display_name,
            family_id: r.family_id,
            teacher_id: r.teacher_id,
            has_password: r.password_hash.is_some(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_sign_in_at: r.last_sign_in_at,
            email_confirmed_at: r.email_confirmed_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// `admin`, `teacher` or `parent`.
    role: Option<String>,
    /// `active` or `disabled`.
    status: Option<String>,
    /// Part of the email or display name, case-insensitive.
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Accounts, oldest first (admin).
#[utoipa::path(get, path = "/v1/users", tag = "users", params(UserFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<User>)), (status = 401), (status = 403)))]
async fn list_users(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(filter): Query<UserFilter>,
) -> ApiResult<Json<Page<User>>> {
    const SQL: &str = "SELECT id, email, role, display_name, status, family_id, teacher_id, password_hash, \
        user_metadata, created_at, updated_at, last_sign_in_at, email_confirmed_at FROM users \
        WHERE ($1 IS NULL OR role = $1) AND ($2 IS NULL OR status = $2) \
        AND ($3 IS NULL OR email LIKE $3 ESCAPE '\\' OR LOWER(display_name) LIKE $3 ESCAPE '\\') \
        AND ($4 IS NULL OR id > $4) ORDER BY id LIMIT $5";
    if let Some(role) = &filter.role
        && Role::parse(role).is_none()
    {
        return Err(ApiError::invalid("role", "must be admin, teacher or parent"));
    }
    if let Some(status) = &filter.status
        && !matches!(status.as_str(), "active" | "disabled")
    {
        return Err(ApiError::invalid("status", "must be active or disabled"));
    }
    let pattern = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()).map(|q| {
        let escaped = q.to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
        format!("%{escaped}%")
    });
    let page = PageParams { limit: filter.limit, cursor: filter.cursor };
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, UserRecord>(SQL)
        .bind(&filter.role).bind(&filter.status).bind(&pattern).bind(page.after()?).bind(page.fetch_limit()?)
        .fetch_all(pool).await)?;
    let page = Page::from_rows(rows, &page, |u| u.id)?;
    Ok(Json(Page { items: page.items.into_iter().map(User::from).collect(), next_cursor: page.next_cursor }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    email: String,
    /// `admin`, `teacher` or `parent`.
    role: String,
    /// Set a password now; without one the response carries an invitation token.
    password: Option<String>,
    display_name: Option<String>,
    family_id: Option<Uuid>,
    teacher_id: Option<Uuid>,
}

/// A one-time token the person uses at `POST /auth/v1/verify` (`type` as given).
#[derive(Debug, Serialize, ToSchema)]
pub struct OneTimeToken {
    /// `invite` or `recovery`.
    #[serde(rename = "type")]
    kind: &'static str,
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    user: User,
    /// Present when no password was set: hand it to the person (email delivery comes with
    /// messaging).
    invite: Option<OneTimeToken>,
}

fn validate_display_name(name: Option<String>, errors: &mut Vec<FieldError>) -> Option<String> {
    let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        errors.push(FieldError::new("display_name", "must be at most 200 characters"));
    }
    name
}

/// Creates an account of any role (admin). Without a password, an invitation token is returned.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUser, security(("bearer" = [])),
    responses((status = 201, body = CreatedUser), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<CreatedUser>)> {
    let mut errors = Vec::new();
    let email = Email::parse(&input.email).map_err(|why| errors.push(FieldError::new("email", why))).ok();
    let role = Role::parse(&input.role);
    if role.is_none() {
        errors.push(FieldError::new("role", "must be admin, teacher or parent"));
    }
    if let Some(why) = input.password.as_deref().and_then(password::weakness) {
        errors.push(FieldError::new("password", why));
    }
    let display_name = validate_display_name(input.display_name, &mut errors);
    let (Some(email), Some(role), true) = (email, role, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let hash = match input.password {
        Some(password) => Some(password::hash(password).await?),
        None => None,
    };
    let new = NewUser {
        id: Uuid::now_v7(),
        email: email.as_str(),
        role,
        display_name: display_name.as_deref(),
        family_id: input.family_id,
        teacher_id: input.teacher_id,
        password_hash: hash.as_deref(),
        user_metadata: json!({}),
        // The office typed the address (an invitation is then spent from that mailbox).
        email_confirmed: true,
    };
    let mut tx = state.db.begin().await?;
    let record = store::insert_user(&mut tx, &new).await?;
    let invite = match hash {
        Some(_) => None,
        None => {
            let (token, expires_at) =
                store::issue_one_time_token(&mut tx, record.id, OneTimePurpose::Invite, INVITE_VALID_FOR).await?;
            let link = format!("{}/auth/v1/verify?type=invite&token={token}", state.settings.public_url);
            let vars = json!({"valid_hours": INVITE_VALID_FOR.num_hours()});
            crate::messaging::email_user_with_link(&mut tx, &state.settings, record.id, "invite", vars, link).await?;
            Some(OneTimeToken { kind: "invite", token, expires_at })
        }
    };
    audit::record_tx(
        &mut tx,
        AuditEvent::new("user.created")
            .by(&admin)
            .subject("user", record.id)
            .details(json!({"role": role.as_str(), "invited": invite.is_some()})),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(CreatedUser { user: record.into(), invite })))
}

/// One account (admin).
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401), (status = 403), (status = 404)))]
async fn get_user(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<User>> {
    let record = store::user_by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(record.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    email: Option<String>,
    role: Option<String>,
    /// `active` or `disabled`; disabling ends every session of the account at once.
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    family_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    teacher_id: Option<Option<Uuid>>,
}

/// Changes an account (admin): email, role, status, name, family or teacher link.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", request_body = UpdateUser, security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn update_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateUser>,
) -> ApiResult<Json<User>> {
    let current = store::user_by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let mut errors = Vec::new();
    let email = match &input.email {
        Some(raw) => Email::parse(raw).map_err(|why| errors.push(FieldError::new("email", why))).ok(),
        None => None,
    };
    let role = match &input.role {
        Some(raw) => {
            let parsed = Role::parse(raw);
            if parsed.is_none() {
                errors.push(FieldError::new("role", "must be admin, teacher or parent"));
            }
            parsed
        }
        None => None,
    };
    if let Some(status) = &input.status
        && !matches!(status.as_str(), "active" | "disabled")
    {
        errors.push(FieldError::new("status", "must be active or disabled"));
    }
    let display_name = input.display_name.map(|name| validate_display_name(name, &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if let Some(Some(family)) = input.family_id
        && current.family_id != Some(family)
        && current.email_confirmed_at.is_none()
    {
        // Else anyone could sign up with a parent's address first and be linked to the family.
        return Err(ApiError::invalid(
            "family_id",
            "this account has not confirmed its email address yet (the sign-up confirmation email has the link)",
        ));
    }
    let new_role = role.unwrap_or(current.role());
    let new_status = input.status.clone().unwrap_or_else(|| current.status.clone());
    if id == admin.id && (new_role != Role::Admin || new_status != "active") {
        return Err(ApiError::conflict("You cannot remove your own admin role or disable your own account"));
    }

    const SQL: &str = "UPDATE users SET email = $2, role = $3, status = $4, display_name = $5, family_id = $6, \
        teacher_id = $7, updated_at = $8 WHERE id = $1";
    let email = email.map_or(current.email.clone(), |e| e.as_str().to_owned());
    let display_name = display_name.unwrap_or(current.display_name.clone());
    let family_id = input.family_id.unwrap_or(current.family_id);
    let teacher_id = input.teacher_id.unwrap_or(current.teacher_id);
    let mut tx = state.db.begin().await?;
    crate::on_tx!(&mut tx, conn => sqlx::query(SQL)
        .bind(id).bind(&email).bind(new_role.as_str()).bind(&new_status).bind(&display_name)
        .bind(family_id).bind(teacher_id).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    if new_role != current.role() {
        audit::record_tx(
            &mut tx,
            AuditEvent::new("user.role_changed")
                .by(&admin)
                .subject("user", id)
                .details(json!({"from": current.role, "to": new_role.as_str()})),
        )
        .await?;
    }
    if new_status != current.status {
        let action = if new_status == "disabled" { "user.disabled" } else { "user.enabled" };
        if new_status == "disabled" {
            store::revoke_user_sessions(&mut tx, id, None, "user_disabled").await?;
        }
        audit::record_tx(&mut tx, AuditEvent::new(action).by(&admin).subject("user", id)).await?;
    }
    audit::record_tx(
        &mut tx,
        AuditEvent::new("user.updated").by(&admin).subject("user", id).details(json!({
            "email_changed": email != current.email,
            "family_id": family_id,
            "teacher_id": teacher_id,
        })),
    )
    .await?;
    tx.commit().await?;
    state.auth.forget_user(id);
    let record = store::user_by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    Ok(Json(record.into()))
}

/// Deletes an account and its sessions (admin). The audit trail keeps its history.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn delete_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if id == admin.id {
        return Err(ApiError::conflict("You cannot delete your own account"));
    }
    const SQL: &str = "DELETE FROM users WHERE id = $1";
    let mut tx = state.db.begin().await?;
    let deleted = crate::on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if deleted == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("user.deleted").by(&admin).subject("user", id)).await?;
    tx.commit().await?;
    state.auth.forget_user(id);
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a password-reset token for an account (admin); it works once, for two hours, at
/// `POST /auth/v1/verify {type: "recovery", token, password}`.
#[utoipa::path(post, path = "/v1/users/{id}/password-reset", tag = "users", security(("bearer" = [])),
    responses((status = 201, body = OneTimeToken), (status = 401), (status = 403), (status = 404)))]
async fn issue_password_reset(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<OneTimeToken>)> {
    store::user_by_id(&state.db, id).await?.ok_or(ApiError::NotFound)?;
    let mut tx = state.db.begin().await?;
    let (token, expires_at) =
        store::issue_one_time_token(&mut tx, id, OneTimePurpose::Recovery, RESET_VALID_FOR).await?;
    audit::record_tx(&mut tx, AuditEvent::new("auth.password_reset_issued").by(&admin).subject("user", id)).await?;
    let link = format!("{}/auth/v1/verify?type=recovery&token={token}", state.settings.public_url);
    let vars = json!({"valid_hours": RESET_VALID_FOR.num_hours()});
    crate::messaging::email_user_with_link(&mut tx, &state.settings, id, "password_reset", vars, link).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(OneTimeToken { kind: "recovery", token, expires_at })))
}

/// Creates an admin account from the command line (`cedar admin create`).
pub async fn create_admin_cli(
    db: &crate::db::Db,
    email: &str,
    password: String,
    display_name: Option<&str>,
) -> Result<UserRecord, String> {
    let email = Email::parse(email).map_err(|why| format!("--email {why}"))?;
    if let Some(why) = password::weakness(&password) {
        return Err(format!("--password is too weak: {why}"));
    }
    let hash = password::hash(password).await.map_err(|e| format!("{e:#}"))?;
    let new = NewUser {
        id: Uuid::now_v7(),
        email: email.as_str(),
        role: Role::Admin,
        display_name,
        family_id: None,
        teacher_id: None,
        password_hash: Some(&hash),
        user_metadata: json!({}),
        email_confirmed: true,
    };
    let result: Result<UserRecord, sqlx::Error> = async {
        let mut tx = db.begin().await?;
        let record = store::insert_user(&mut tx, &new).await?;
        audit::record_tx(
            &mut tx,
            AuditEvent::new("user.created").subject("user", record.id).details(json!({"role": "admin", "via": "cli"})),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }
    .await;
    result.map_err(|e| match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            format!("an account with email {email} already exists")
        }
        other => format!("database error: {other}"),
    })
}

/// Marks an account made before its Supabase user signed in: the first token from Supabase
/// with this (verified) address takes it over, id and all.
pub const SUPABASE_PENDING: &str = "cedar_pending_supabase_link";

/// `cedar admin create` in Supabase mode: Supabase owns passwords and user ids. When Cedar
/// shares Supabase's database and the user exists there (`auth.users`), the admin account
/// gets that user's id, so their first token is an admin's; otherwise the address is
/// pre-registered and the first Supabase token with that verified address claims it.
pub async fn create_supabase_admin_cli(
    db: &crate::db::Db,
    email: &str,
    display_name: Option<&str>,
) -> Result<UserRecord, String> {
    let email = Email::parse(email).map_err(|why| format!("--email {why}"))?;
    let existing = store::user_by_email(db, email.as_str()).await.map_err(|e| format!("database error: {e}"))?;
    if let Some(user) = existing {
        return Err(format!("an account with email {email} already exists ({}, role {})", user.id, user.role));
    }
    let supabase_id: Option<Uuid> = match db {
        crate::db::Db::Postgres(pool) if db.is_supabase().await => {
            sqlx::query_scalar("SELECT id FROM auth.users WHERE lower(email) = $1 LIMIT 1")
                .bind(email.as_str())
                .fetch_optional(pool)
                .await
                .map_err(|e| format!("reading auth.users: {e}"))?
        }
        _ => None,
    };
    let metadata = match supabase_id {
        Some(_) => json!({}),
        None => json!({SUPABASE_PENDING: true}),
    };
    let new = NewUser {
        id: supabase_id.unwrap_or_else(Uuid::now_v7),
        email: email.as_str(),
        role: Role::Admin,
        display_name,
        family_id: None,
        teacher_id: None,
        password_hash: None,
        user_metadata: metadata,
        email_confirmed: supabase_id.is_some(),
    };
    let result: Result<UserRecord, sqlx::Error> = async {
        let mut tx = db.begin().await?;
        let record = store::insert_user(&mut tx, &new).await?;
        let via =
            if supabase_id.is_some() { "cli, linked to the Supabase user" } else { "cli, awaiting the Supabase user" };
        audit::record_tx(
            &mut tx,
            AuditEvent::new("user.created").subject("user", record.id).details(json!({"role": "admin", "via": via})),
        )
        .await?;
        tx.commit().await?;
        Ok(record)
    }
    .await;
    result.map_err(|e| format!("database error: {e}"))
}
