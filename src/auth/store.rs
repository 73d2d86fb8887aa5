//! SQL for users, sessions, refresh tokens and one-time tokens. Same text on both backends.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::current_user::Role;
use crate::db::{Db, Tx};
use crate::{on_db, on_tx};

/// How long a spent refresh token may still be presented (two browser tabs refreshing at once).
pub const REFRESH_REUSE_GRACE: chrono::Duration = chrono::Duration::seconds(10);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub display_name: Option<String>,
    pub status: String,
    pub family_id: Option<Uuid>,
    pub teacher_id: Option<Uuid>,
    pub password_hash: Option<String>,
    pub user_metadata: SqlJson<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_sign_in_at: Option<DateTime<Utc>>,
    /// When the owner of the address proved it (followed an emailed link, was invited, or
    /// was created by the office); `None` for an open sign-up not yet confirmed.
    pub email_confirmed_at: Option<DateTime<Utc>>,
}

impl UserRecord {
    pub fn role(&self) -> Role {
        Role::parse(&self.role).unwrap_or(Role::Parent)
    }

    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

const USER_COLUMNS: &str = "id, email, role, display_name, status, family_id, teacher_id, password_hash, \
    user_metadata, created_at, updated_at, last_sign_in_at, email_confirmed_at";

pub struct NewUser<'a> {
    pub id: Uuid,
    pub email: &'a str,
    pub role: Role,
    pub display_name: Option<&'a str>,
    pub family_id: Option<Uuid>,
    pub teacher_id: Option<Uuid>,
    pub password_hash: Option<&'a str>,
    pub user_metadata: Value,
    /// The address is vouched for (the office typed it, or an invitation will prove it).
    pub email_confirmed: bool,
}

pub async fn insert_user(tx: &mut Tx, user: &NewUser<'_>) -> Result<UserRecord, sqlx::Error> {
    const SQL: &str = "INSERT INTO users (id, email, role, display_name, status, family_id, teacher_id, \
        password_hash, user_metadata, created_at, updated_at, email_confirmed_at) \
        VALUES ($1, $2, $3, $4, 'active', $5, $6, $7, $8, $9, $9, $10) \
        RETURNING id, email, role, display_name, status, family_id, teacher_id, password_hash, \
        user_metadata, created_at, updated_at, last_sign_in_at, email_confirmed_at";
    let now = Utc::now();
    on_tx!(tx, conn => sqlx::query_as::<_, UserRecord>(SQL)
        .bind(user.id).bind(user.email).bind(user.role.as_str()).bind(user.display_name)
        .bind(user.family_id).bind(user.teacher_id).bind(user.password_hash)
        .bind(SqlJson(&user.user_metadata)).bind(now).bind(user.email_confirmed.then_some(now))
        .fetch_one(&mut **conn).await)
}

pub async fn user_by_id(db: &Db, id: Uuid) -> Result<Option<UserRecord>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
    on_db!(db, pool => sqlx::query_as::<_, UserRecord>(sql).bind(id).fetch_optional(pool).await)
}

pub async fn user_by_email(db: &Db, email: &str) -> Result<Option<UserRecord>, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"));
    on_db!(db, pool => sqlx::query_as::<_, UserRecord>(sql).bind(email).fetch_optional(pool).await)
}

pub async fn touch_sign_in(tx: &mut Tx, user_id: Uuid) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE users SET last_sign_in_at = $2 WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(user_id).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))
}

pub async fn set_password(tx: &mut Tx, user_id: Uuid, hash: &str) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(user_id).bind(hash).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))
}

pub async fn set_user_metadata(tx: &mut Tx, user_id: Uuid, metadata: &Value) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE users SET user_metadata = $2, updated_at = $3 WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(user_id).bind(SqlJson(metadata)).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))
}

/// A random, URL-safe token and the hash under which it is stored.
pub fn new_secret_token() -> (String, String) {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash_token(&token);
    (token, hash)
}

pub fn hash_token(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Starts a sign-in session; returns its id and first refresh token.
pub async fn create_session(
    tx: &mut Tx,
    user_id: Uuid,
    user_agent: Option<&str>,
    ip: Option<&str>,
) -> Result<(Uuid, String), sqlx::Error> {
    const SESSION: &str = "INSERT INTO auth_sessions (id, user_id, created_at, refreshed_at, user_agent, ip) \
        VALUES ($1, $2, $3, $3, $4, $5)";
    let id = Uuid::now_v7();
    let now = Utc::now();
    let user_agent = user_agent.map(|ua| ua.chars().take(300).collect::<String>());
    on_tx!(tx, conn => sqlx::query(SESSION).bind(id).bind(user_id).bind(now).bind(user_agent).bind(ip)
        .execute(&mut **conn).await.map(|_| ()))?;
    let refresh = insert_refresh_token(tx, id).await?;
    Ok((id, refresh))
}

async fn insert_refresh_token(tx: &mut Tx, session_id: Uuid) -> Result<String, sqlx::Error> {
    const SQL: &str = "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES ($1, $2, $3)";
    let (token, hash) = new_secret_token();
    on_tx!(tx, conn => sqlx::query(SQL).bind(hash).bind(session_id).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    Ok(token)
}

/// The outcome of presenting a refresh token.
pub enum Refresh {
    /// A new refresh token for the same session.
    Rotated {
        user_id: Uuid,
        session_id: Uuid,
        refresh_token: String,
    },
    NotFound,
    /// The session was already revoked (logout, reuse, disabled user).
    SessionRevoked,
    /// A spent token presented again after the grace period: the session is now revoked.
    Reused {
        user_id: Uuid,
        session_id: Uuid,
    },
}

pub async fn rotate_refresh_token(tx: &mut Tx, token: &str) -> Result<Refresh, sqlx::Error> {
    const FIND: &str = "SELECT rt.session_id, rt.used_at, s.user_id, s.revoked_at \
        FROM refresh_tokens rt JOIN auth_sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1";
    const SPEND: &str = "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL";
    const TOUCH: &str = "UPDATE auth_sessions SET refreshed_at = $2 WHERE id = $1";
    type Row = (Uuid, Option<DateTime<Utc>>, Uuid, Option<DateTime<Utc>>);

    let hash = hash_token(token);
    let row: Option<Row> = on_tx!(tx, conn => sqlx::query_as(FIND).bind(&hash).fetch_optional(&mut **conn).await)?;
    let Some((session_id, used_at, user_id, revoked_at)) = row else {
        return Ok(Refresh::NotFound);
    };
    if revoked_at.is_some() {
        return Ok(Refresh::SessionRevoked);
    }
    let now = Utc::now();
    let spent_now = on_tx!(tx, conn => sqlx::query(SPEND).bind(&hash).bind(now).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if spent_now == 0 {
        // Already spent (maybe by a concurrent request a moment ago).
        let spent_at = used_at.unwrap_or(now);
        if now - spent_at > REFRESH_REUSE_GRACE {
            revoke_session(tx, session_id, "refresh_token_reused").await?;
            return Ok(Refresh::Reused { user_id, session_id });
        }
    }
    on_tx!(tx, conn => sqlx::query(TOUCH).bind(session_id).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    let refresh_token = insert_refresh_token(tx, session_id).await?;
    Ok(Refresh::Rotated { user_id, session_id, refresh_token })
}

/// Revokes one session; returns whether it was active.
pub async fn revoke_session(tx: &mut Tx, session_id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    const SQL: &str =
        "UPDATE auth_sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL";
    let done = on_tx!(tx, conn => sqlx::query(SQL).bind(session_id).bind(Utc::now()).bind(reason)
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Revokes one of `user_id`'s active sessions; false when there is no such session.
pub async fn revoke_own_session(
    tx: &mut Tx,
    user_id: Uuid,
    session_id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    const SQL: &str = "UPDATE auth_sessions SET revoked_at = $3, revoked_reason = $4 \
        WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL";
    let done = on_tx!(tx, conn => sqlx::query(SQL).bind(session_id).bind(user_id).bind(Utc::now()).bind(reason)
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    Ok(done == 1)
}

/// Revokes every active session of a user except `keep`; returns the revoked ids.
pub async fn revoke_user_sessions(
    tx: &mut Tx,
    user_id: Uuid,
    keep: Option<Uuid>,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    const SQL: &str = "UPDATE auth_sessions SET revoked_at = $2, revoked_reason = $3 \
        WHERE user_id = $1 AND revoked_at IS NULL AND ($4 IS NULL OR id <> $4) RETURNING id";
    on_tx!(tx, conn => sqlx::query_scalar::<_, Uuid>(SQL).bind(user_id).bind(Utc::now()).bind(reason).bind(keep)
        .fetch_all(&mut **conn).await)
}

#[derive(Debug, sqlx::FromRow)]
pub struct SessionRecord {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub refreshed_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

pub async fn active_sessions(db: &Db, user_id: Uuid) -> Result<Vec<SessionRecord>, sqlx::Error> {
    const SQL: &str = "SELECT id, created_at, refreshed_at, user_agent, ip FROM auth_sessions \
        WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id DESC LIMIT 200";
    on_db!(db, pool => sqlx::query_as::<_, SessionRecord>(SQL).bind(user_id).fetch_all(pool).await)
}

/// The user behind a session, if the session is still active.
pub async fn session_user(db: &Db, session_id: Uuid) -> Result<Option<(UserRecord, bool)>, sqlx::Error> {
    const SQL: &str = "SELECT u.id, u.email, u.role, u.display_name, u.status, u.family_id, u.teacher_id, \
        CAST(NULL AS TEXT) AS password_hash, u.user_metadata, u.created_at, u.updated_at, u.last_sign_in_at, \
        u.email_confirmed_at, \
        CASE WHEN s.revoked_at IS NULL THEN 1 ELSE 0 END AS session_active \
        FROM auth_sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1";
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: UserRecord,
        session_active: i32,
    }
    let row = on_db!(db, pool => sqlx::query_as::<_, Row>(SQL).bind(session_id).fetch_optional(pool).await)?;
    Ok(row.map(|r| (r.user, r.session_active == 1)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneTimePurpose {
    Invite,
    Recovery,
    /// Confirms the address of an open sign-up.
    Signup,
}

impl OneTimePurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invite => "invite",
            Self::Recovery => "recovery",
            Self::Signup => "signup",
        }
    }
}

/// Records that the account's owner proved the address (kept from the first proof).
pub async fn confirm_email(tx: &mut Tx, user_id: Uuid) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE users SET email_confirmed_at = $2 WHERE id = $1 AND email_confirmed_at IS NULL";
    on_tx!(tx, conn => sqlx::query(SQL).bind(user_id).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))
}

/// Issues a one-time token (any earlier unused token of the same purpose stops working).
pub async fn issue_one_time_token(
    tx: &mut Tx,
    user_id: Uuid,
    purpose: OneTimePurpose,
    valid_for: chrono::Duration,
) -> Result<(String, DateTime<Utc>), sqlx::Error> {
    const RETIRE: &str =
        "UPDATE one_time_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL";
    const INSERT: &str = "INSERT INTO one_time_tokens (token_hash, user_id, purpose, created_at, expires_at) \
        VALUES ($1, $2, $3, $4, $5)";
    let now = Utc::now();
    let expires_at = now + valid_for;
    let (token, hash) = new_secret_token();
    on_tx!(tx, conn => sqlx::query(RETIRE).bind(user_id).bind(purpose.as_str()).bind(now)
        .execute(&mut **conn).await.map(|_| ()))?;
    on_tx!(tx, conn => sqlx::query(INSERT).bind(hash).bind(user_id).bind(purpose.as_str()).bind(now).bind(expires_at)
        .execute(&mut **conn).await.map(|_| ()))?;
    Ok((token, expires_at))
}

/// Spends a one-time token; returns its user when it was valid, unused and unexpired.
pub async fn consume_one_time_token(
    tx: &mut Tx,
    token: &str,
    purpose: OneTimePurpose,
) -> Result<Option<Uuid>, sqlx::Error> {
    const SQL: &str = "UPDATE one_time_tokens SET used_at = $3 \
        WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3 RETURNING user_id";
    on_tx!(tx, conn => sqlx::query_scalar::<_, Uuid>(SQL).bind(hash_token(token)).bind(purpose.as_str())
        .bind(Utc::now()).fetch_optional(&mut **conn).await)
}
