//! Who is calling: the [`CurrentUser`] extractor, role guards and ownership scopes.
//!
//! The `authenticate` middleware verifies a bearer token once per request (if there is one)
//! and leaves the result in the request's extensions; handlers ask for `CurrentUser` (any
//! signed-in user → else 401) or `AdminUser` (→ else 403). Public routes simply don't ask,
//! so a non-user bearer such as supabase-js's anon key never causes a 401 there.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::app::idempotency::IdempotencyScope;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Teacher,
    Parent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Teacher => "teacher",
            Self::Parent => "parent",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Self::Admin),
            "teacher" => Some(Self::Teacher),
            "parent" => Some(Self::Parent),
            _ => None,
        }
    }
}

/// The signed-in user of this request. The role always comes from Cedar's users table.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub email: String,
    pub role: Role,
    pub family_id: Option<Uuid>,
    pub teacher_id: Option<Uuid>,
    /// The sign-in session (Cedar-issued tokens and Supabase tokens that carry one).
    pub session_id: Option<Uuid>,
}

/// What rows of family- or teacher-owned data a user may see. Slices turn it into a WHERE
/// clause, so that a row outside the scope is simply not found (404), in single reads and in
/// lists alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Admins: everything.
    All,
    /// Parents: rows of their family.
    Family(Uuid),
    /// Teachers: rows of their students and lessons.
    Teacher(Uuid),
    /// A parent without a family or a teacher without a teacher record: nothing.
    Nothing,
}

impl CurrentUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// 403 unless the user has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) { Ok(()) } else { Err(ApiError::Forbidden) }
    }

    /// The scope as SQL filter values `(family, teacher)`, `None` meaning "no restriction"
    /// (bound as `$n IS NULL OR …`); `None` overall when the user may see nothing.
    pub fn row_filter(&self) -> Option<(Option<Uuid>, Option<Uuid>)> {
        match self.scope() {
            Scope::All => Some((None, None)),
            Scope::Family(family) => Some((Some(family), None)),
            Scope::Teacher(teacher) => Some((None, Some(teacher))),
            Scope::Nothing => None,
        }
    }

    pub fn scope(&self) -> Scope {
        match self.role {
            Role::Admin => Scope::All,
            Role::Parent => self.family_id.map_or(Scope::Nothing, Scope::Family),
            Role::Teacher => self.teacher_id.map_or(Scope::Nothing, Scope::Teacher),
        }
    }
}

/// Turns "found, but not yours" into the same 404 as "not found".
pub fn visible<T>(row: Option<T>, allowed: impl FnOnce(&T) -> bool) -> Result<T, ApiError> {
    match row {
        Some(row) if allowed(&row) => Ok(row),
        _ => Err(ApiError::NotFound),
    }
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone)]
pub enum AuthFailure {
    /// 401: no valid credentials.
    Unauthorized(String),
    /// 403: a valid Supabase user without a Cedar account (invite-only school).
    Forbidden(String),
    /// 503: the database could not be asked.
    Unavailable,
}

/// Extracts the bearer token, if any.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

pub async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    if let Some(token) = bearer_token(request.headers()) {
        match state.auth.authenticate(&state.db, token).await {
            Ok(user) => {
                request.extensions_mut().insert(IdempotencyScope(user.id.to_string()));
                request.extensions_mut().insert(user);
            }
            Err(failure) => {
                request.extensions_mut().insert(failure);
            }
        }
    }
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        Err(match parts.extensions.get::<AuthFailure>() {
            Some(AuthFailure::Unauthorized(why)) => ApiError::Unauthorized(why.clone()),
            Some(AuthFailure::Forbidden(why)) => ApiError::ForbiddenBecause(why.clone()),
            Some(AuthFailure::Unavailable) => ApiError::Unavailable("Could not verify the token right now".into()),
            None => ApiError::Unauthorized("A bearer token is required".to_owned()),
        })
    }
}

/// A signed-in admin (403 for other roles).
#[derive(Debug, Clone)]
pub struct AdminUser(pub CurrentUser);

impl<S: Send + Sync> FromRequestParts<S> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require(&[Role::Admin])?;
        Ok(Self(user))
    }
}
