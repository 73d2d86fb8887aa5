//! The authentication service kept in `AppState`: verifies bearer tokens (with a short cache of
//! the user behind each session), issues Cedar's own tokens, and holds the sign-in rate limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Header};
use serde_json::json;
use uuid::Uuid;

use super::current_user::{AuthFailure, CurrentUser, Role};
use super::keys::SigningKey;
use super::store::{self, NewUser, UserRecord};
use super::verify::{SupabaseVerifier, TokenError, verify_builtin};
use crate::app::ratelimit::RateLimiter;
use crate::config::{Settings, SignupPolicy};
use crate::db::Db;
use crate::privacy::audit::{self, AuditEvent};

/// How long a verified session's user is reused without asking the database. Revocations made
/// by this process drop the entry at once; other processes see them within this time.
const USER_CACHE_TTL: Duration = Duration::from_secs(5);

pub enum Mode {
    /// Cedar issues and verifies its own tokens.
    BuiltIn(SigningKey),
    /// Supabase Auth issues tokens; Cedar only verifies them.
    Supabase(SupabaseVerifier),
}

pub struct Auth {
    pub mode: Mode,
    /// `iss` of Cedar's own tokens: PUBLIC_URL/auth/v1.
    pub issuer: String,
    pub access_ttl: Duration,
    pub signup: SignupPolicy,
    pub ip_limiter: RateLimiter,
    /// Failed sign-ins per account and client; also reset emails per address.
    pub account_limiter: RateLimiter,
    /// Failed sign-ins per account from anywhere (ten times looser).
    pub account_limiter_overall: RateLimiter,
    cache: Mutex<HashMap<Uuid, (CurrentUser, Instant)>>,
    verified: Mutex<HashMap<[u8; 32], VerifiedToken>>,
    /// Tokens Cedar's own key refused (by digest, with the refusal), for a minute: a client
    /// retrying the same bad token costs a lookup, not an ECDSA verification. Keyed by the whole
    /// token, so no valid token can ever match a refused one.
    rejected: Mutex<HashMap<[u8; 32], (String, i64)>>,
}

/// What a verified token says, kept so a repeated token is not verified again.
#[derive(Debug, Clone)]
struct VerifiedToken {
    user_id: Uuid,
    session_id: Option<Uuid>,
    email: Option<String>,
    /// The issuer vouches for the address (Supabase's `email_verified`).
    email_verified: bool,
    /// Unix seconds: the token's `exp`, or sooner.
    valid_until: i64,
}

/// Longest a verified token is remembered.
const VERIFIED_TOKEN_TTL_SECS: i64 = 60;

impl Auth {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let issuer = format!("{}/auth/v1", settings.public_url);
        let mode = match &settings.supabase {
            Some(supabase) => Mode::Supabase(SupabaseVerifier::new(supabase, &issuer)),
            None => Mode::BuiltIn(SigningKey::load_or_create(&settings.jwt_key_file)?),
        };
        Ok(Self {
            mode,
            issuer,
            access_ttl: settings.access_token_ttl,
            signup: settings.signup,
            ip_limiter: RateLimiter::new(settings.auth_rate_per_ip, Duration::from_secs(60)),
            account_limiter: RateLimiter::new(settings.auth_rate_per_account, Duration::from_secs(15 * 60)),
            account_limiter_overall: RateLimiter::new(
                settings.auth_rate_per_account.saturating_mul(10),
                Duration::from_secs(15 * 60),
            ),
            cache: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            rejected: Mutex::new(HashMap::new()),
        })
    }

    pub fn signing_key(&self) -> Option<&SigningKey> {
        match &self.mode {
            Mode::BuiltIn(key) => Some(key),
            Mode::Supabase(_) => None,
        }
    }

    /// Verifies a bearer token and finds its Cedar user.
    pub async fn authenticate(&self, db: &Db, token: &str) -> Result<CurrentUser, AuthFailure> {
        let verified = self.verify_token(token).await?;
        match &self.mode {
            Mode::BuiltIn(_) => {
                let Some(session_id) = verified.session_id else {
                    return Err(AuthFailure::Unauthorized(format!("Invalid token: {}", TokenError::Invalid)));
                };
                if let Some(user) = self.cached(session_id).filter(|u| u.id == verified.user_id) {
                    return Ok(user);
                }
                let found = store::session_user(db, session_id).await.map_err(internal)?;
                match found {
                    Some((record, true)) if record.id == verified.user_id && record.is_active() => {
                        let user = current_user(&record, Some(session_id));
                        self.remember(session_id, &user);
                        Ok(user)
                    }
                    _ => Err(AuthFailure::Unauthorized("The session has ended; sign in again".into())),
                }
            }
            Mode::Supabase(_) => {
                let user_id = verified.user_id;
                if let Some(user) = self.cached(user_id) {
                    return Ok(CurrentUser { session_id: verified.session_id, ..user });
                }
                let record = match store::user_by_id(db, user_id).await.map_err(internal)? {
                    Some(record) if record.email_confirmed_at.is_none() && verified.email_verified => {
                        confirm_email(db, user_id).await.map_err(internal)?;
                        record
                    }
                    Some(record) => record,
                    None => self.adopt_supabase_user(db, user_id, &verified).await?,
                };
                if !record.is_active() {
                    return Err(AuthFailure::Unauthorized("This account is disabled".into()));
                }
                let user = current_user(&record, verified.session_id);
                // An unconfirmed account is looked up each time, so the token that first says
                // `email_verified` confirms it at once.
                if record.email_confirmed_at.is_some() || verified.email_verified {
                    self.remember(user_id, &user);
                }
                Ok(user)
            }
        }
    }

    /// Checks the signature and claims, remembering the outcome for a token already seen: the
    /// same bytes verify the same way until `exp`, so a repeated token skips the ECDSA/RSA
    /// work. Entries live at most a minute, so a key withdrawn from a JWKS stops being
    /// honoured soon after. Revocation is not decided here but by the session check.
    async fn verify_token(&self, token: &str) -> Result<VerifiedToken, AuthFailure> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = chrono::Utc::now().timestamp();
        {
            let seen = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = seen.get(&digest).filter(|v| v.valid_until > now) {
                return Ok(hit.clone());
            }
        }
        {
            let rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((why, _)) = rejected.get(&digest).filter(|(_, until)| *until > now) {
                return Err(AuthFailure::Unauthorized(why.clone()));
            }
        }
        let unauthorized = |e: TokenError| AuthFailure::Unauthorized(format!("Invalid token: {e}"));
        let (user_id, claims) = match &self.mode {
            // Only Cedar's own key is remembered as refusing: a Supabase refusal may come from a
            // JWKS that was momentarily out of date.
            Mode::BuiltIn(key) => verify_builtin(token, &key.kid, &key.decoding, &self.issuer).map_err(|e| {
                let failure = unauthorized(e);
                if let AuthFailure::Unauthorized(why) = &failure {
                    let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
                    if rejected.len() >= 10_000 {
                        rejected.retain(|_, (_, until)| *until > now);
                        if rejected.len() >= 10_000 {
                            rejected.clear();
                        }
                    }
                    rejected.insert(digest, (why.clone(), now + VERIFIED_TOKEN_TTL_SECS));
                }
                failure
            })?,
            Mode::Supabase(verifier) => verifier.verify(token).await.map_err(unauthorized)?,
        };
        let verified = VerifiedToken {
            user_id,
            session_id: claims.session_id.as_deref().and_then(|s| Uuid::parse_str(s).ok()),
            email_verified: claims.email_verified(),
            email: claims.email,
            valid_until: claims.exp.min(now + VERIFIED_TOKEN_TTL_SECS),
        };
        let mut seen = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= 10_000 {
            seen.retain(|_, v| v.valid_until > now);
            if seen.len() >= 10_000 {
                seen.clear();
            }
        }
        seen.insert(digest, verified.clone());
        Ok(verified)
    }

    /// A valid Supabase user Cedar has not seen: a parent account when sign-up is open.
    /// Creates the Cedar account of a Supabase user seen for the first time. Its address
    /// counts as confirmed only when Supabase says so (`email_verified`).
    async fn adopt_supabase_user(&self, db: &Db, id: Uuid, token: &VerifiedToken) -> Result<UserRecord, AuthFailure> {
        let email = token.email.as_deref();
        if let Some(record) = self.claim_preregistered(db, id, token).await? {
            return Ok(record);
        }
        if self.signup == SignupPolicy::Invite {
            return Err(AuthFailure::Forbidden(
                "There is no Cedar account for this user; ask the school for an invitation".into(),
            ));
        }
        let Some(email) = email.map(|e| e.trim().to_lowercase()).filter(|e| e.contains('@')) else {
            return Err(AuthFailure::Forbidden("The token carries no email address".into()));
        };
        let new = NewUser {
            id,
            email: &email,
            role: Role::Parent,
            display_name: None,
            family_id: None,
            teacher_id: None,
            password_hash: None,
            user_metadata: json!({}),
            email_confirmed: token.email_verified,
        };
        let result: Result<UserRecord, sqlx::Error> = async {
            let mut tx = db.begin().await?;
            let record = store::insert_user(&mut tx, &new).await?;
            audit::record_tx(
                &mut tx,
                AuditEvent::new("user.created")
                    .actor(record.id, Role::Parent)
                    .subject("user", record.id)
                    .details(json!({"via": "supabase", "role": "parent"})),
            )
            .await?;
            tx.commit().await?;
            Ok(record)
        }
        .await;
        match result {
            Ok(record) => Ok(record),
            // A concurrent first request created it, or the email belongs to another account.
            Err(_) => match store::user_by_id(db, id).await.map_err(internal)? {
                Some(record) => Ok(record),
                None => Err(AuthFailure::Forbidden("This email address already belongs to another account".into())),
            },
        }
    }

    /// An account the office made before this Supabase user first signed in (`cedar admin
    /// create` in Supabase mode) is taken over by the first token whose address is that one
    /// and verified by Supabase: the account gets the Supabase user's id.
    async fn claim_preregistered(
        &self,
        db: &Db,
        id: Uuid,
        token: &VerifiedToken,
    ) -> Result<Option<UserRecord>, AuthFailure> {
        let Some(email) = token.email.as_deref().map(|e| e.trim().to_lowercase()).filter(|_| token.email_verified)
        else {
            return Ok(None);
        };
        let Some(record) = store::user_by_email(db, &email).await.map_err(internal)? else { return Ok(None) };
        if record.user_metadata.0.get(super::users::SUPABASE_PENDING) != Some(&json!(true)) {
            return Ok(None);
        }
        const CLAIM: &str = "UPDATE users SET id = $2, user_metadata = $3, email_confirmed_at = COALESCE(email_confirmed_at, $4), \
            updated_at = $4 WHERE id = $1";
        let mut metadata = record.user_metadata.0.clone();
        if let Some(map) = metadata.as_object_mut() {
            map.remove(super::users::SUPABASE_PENDING);
        }
        let result: Result<(), sqlx::Error> = async {
            let mut tx = db.begin().await?;
            crate::on_tx!(&mut tx, conn => sqlx::query(CLAIM).bind(record.id).bind(id)
                .bind(sqlx::types::Json(&metadata)).bind(chrono::Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
            audit::record_tx(
                &mut tx,
                AuditEvent::new("user.supabase_linked")
                    .actor(id, record.role())
                    .subject("user", id)
                    .details(json!({"preregistered_as": record.id})),
            )
            .await?;
            tx.commit().await
        }
        .await;
        result.map_err(internal)?;
        store::user_by_id(db, id).await.map_err(internal)
    }

    fn cached(&self, key: Uuid) -> Option<CurrentUser> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&key).filter(|(_, at)| at.elapsed() < USER_CACHE_TTL).map(|(user, _)| user.clone())
    }

    fn remember(&self, key: Uuid, user: &CurrentUser) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < USER_CACHE_TTL);
        }
        cache.insert(key, (user.clone(), Instant::now()));
    }

    /// Drops cached sessions so a revocation or account change takes effect at once.
    pub fn forget_sessions(&self, session_ids: &[Uuid]) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for id in session_ids {
            cache.remove(id);
        }
    }

    /// Drops every cached entry of a user (role change, disable, delete).
    pub fn forget_user(&self, user_id: Uuid) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (user, _)| user.id != user_id);
    }

    /// Signs an access token with Supabase's claims; returns it with its `exp`.
    pub fn issue_access_token(&self, user: &UserRecord, session_id: Uuid) -> anyhow::Result<(String, i64)> {
        let Some(key) = self.signing_key() else {
            anyhow::bail!("Cedar does not issue tokens in Supabase mode");
        };
        let now = chrono::Utc::now().timestamp();
        let exp = now + self.access_ttl.as_secs() as i64;
        let claims = json!({
            "iss": self.issuer,
            "aud": "authenticated",
            "sub": user.id.to_string(),
            "exp": exp,
            "iat": now,
            "email": user.email,
            "phone": "",
            "role": "authenticated",
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": session_id.to_string(),
            "is_anonymous": false,
            "app_metadata": {"provider": "email", "providers": ["email"], "role": user.role},
            "user_metadata": user.user_metadata.0,
        });
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".into());
        Ok((jsonwebtoken::encode(&header, &claims, &key.encoding)?, exp))
    }
}

pub fn current_user(record: &UserRecord, session_id: Option<Uuid>) -> CurrentUser {
    CurrentUser {
        id: record.id,
        email: record.email.clone(),
        role: record.role(),
        family_id: record.family_id,
        teacher_id: record.teacher_id,
        session_id,
    }
}

async fn confirm_email(db: &Db, user_id: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    store::confirm_email(&mut tx, user_id).await?;
    tx.commit().await
}

fn internal(error: sqlx::Error) -> AuthFailure {
    tracing::error!(error = %error, "database error while authenticating");
    AuthFailure::Unavailable
}
