//! Errors. [`DomainError`] is what services (booking, people, workflow steps) fail with, in
//! terms of the school's rules, with no HTTP in it; [`ApiError`] is the one error type of the
//! HTTP API, rendered as RFC 9457 `application/problem+json`, and every `DomainError` maps
//! onto it.
//!
//! Handlers return `Result<_, ApiError>`. Database errors convert with `?`: unique, foreign-key
//! and check violations are mapped by constraint name (see [`crate::db::Constraint`]) so no
//! handler needs to pre-check; anything unexpected becomes a 500 whose body carries only the
//! request id while the full cause chain goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::db::{self, ConstraintKind};

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request, as listed in a 422 problem's `errors`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    /// The field, in the request's own naming (`email`, `windows[2].start_time`).
    pub field: String,
    /// What is wrong, written for a person.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { field: field.into(), message: message.into() }
    }
}

/// RFC 9457 problem details, as sent on the wire.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type (`about:blank` for plain HTTP statuses).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    pub detail: String,
    /// Per-field validation errors (422).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// Conflicting records or occurrences (409), when the endpoint lists them.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub conflicts: Option<Vec<Value>>,
    /// The id of the request (also in the `x-request-id` header), to quote to support.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// How a service fails, whoever called it (a handler, a workflow step, the CLI).
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The record does not exist (or the caller may not see it).
    #[error("not found")]
    NotFound,
    /// The change collides with the current state; `conflicts` lists what it collides with.
    #[error("conflict: {detail}")]
    Conflict { detail: String, conflicts: Vec<Value> },
    /// Input that breaks a rule, per field.
    #[error("invalid input")]
    Invalid(Vec<FieldError>),
    /// A rule refuses the change as a whole.
    #[error("refused: {0}")]
    Refused(String),
    /// The database or a service Cedar needs is busy; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type DomainResult<T> = Result<T, DomainError>;

impl DomainError {
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict { detail: detail.into(), conflicts: Vec::new() }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![FieldError::new(field, message)])
    }

    /// Whether trying again later could succeed (a busy database, a lost connection).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Internal(_))
    }
}

impl From<sqlx::Error> for DomainError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db_error) = &error
            && let Some(mapped) = constraint_error(db_error.as_ref())
        {
            return mapped;
        }
        if matches!(error, sqlx::Error::PoolTimedOut) {
            return Self::Unavailable("The database is busy; please retry".to_owned());
        }
        Self::Internal(anyhow::Error::new(error).context("database error"))
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        match error {
            DomainError::NotFound => Self::NotFound,
            DomainError::Conflict { detail, conflicts } => Self::Conflict { detail, conflicts },
            DomainError::Invalid(fields) => Self::Validation(fields),
            DomainError::Refused(detail) => Self::Unprocessable(detail),
            DomainError::Unavailable(detail) => Self::Unavailable(detail),
            DomainError::Internal(error) => Self::Internal(error),
        }
    }
}

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("forbidden")]
    Forbidden,
    #[error("forbidden: {0}")]
    ForbiddenBecause(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("conflict: {detail}")]
    Conflict { detail: String, conflicts: Vec<Value> },
    #[error("payload too large")]
    PayloadTooLarge,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// A validation problem that is not about one field (e.g. an idempotency key reused with
    /// another body).
    #[error("unprocessable: {0}")]
    Unprocessable(String),
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("request timed out")]
    Timeout,
    /// A service Cedar depends on (Stripe) refused or failed; the detail is safe to show.
    #[error("upstream: {0}")]
    Upstream(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict { detail: detail.into(), conflicts: Vec::new() }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ForbiddenBecause(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Validation(_) | Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(&self) -> Problem {
        let status = self.status();
        let (kind, title, detail, errors, conflicts) = match self {
            Self::Validation(errors) => (
                "/problems/validation",
                "Validation failed",
                format!("{} field(s) are invalid", errors.len()),
                Some(errors.clone()),
                None,
            ),
            Self::Conflict { detail, conflicts } => (
                "/problems/conflict",
                "Conflict",
                detail.clone(),
                None,
                (!conflicts.is_empty()).then(|| conflicts.clone()),
            ),
            Self::RateLimited { retry_after_secs } => (
                "/problems/rate-limited",
                "Too many requests",
                format!("Rate limit reached; retry in {retry_after_secs} s"),
                None,
                None,
            ),
            Self::Timeout => (
                "/problems/timeout",
                "Request timed out",
                "The request took too long and was abandoned".to_owned(),
                None,
                None,
            ),
            Self::Internal(_) => (
                "about:blank",
                "Internal Server Error",
                "An unexpected error occurred; it has been logged with this request's id".to_owned(),
                None,
                None,
            ),
            other => ("about:blank", reason(status), other.plain_detail(), None, None),
        };
        Problem {
            kind: kind.to_owned(),
            title: title.to_owned(),
            status: status.as_u16(),
            detail,
            errors,
            conflicts,
            request_id: crate::http::request_id::current(),
        }
    }

    fn plain_detail(&self) -> String {
        match self {
            Self::BadRequest(d)
            | Self::Unauthorized(d)
            | Self::UnsupportedMediaType(d)
            | Self::Unprocessable(d)
            | Self::ForbiddenBecause(d)
            | Self::Unavailable(d)
            | Self::Upstream(d) => d.clone(),
            Self::Forbidden => "Your role does not allow this action".to_owned(),
            Self::NotFound => "No such resource".to_owned(),
            Self::MethodNotAllowed => "This method is not allowed on this resource".to_owned(),
            Self::PayloadTooLarge => "The request body is larger than the server accepts".to_owned(),
            _ => self.to_string(),
        }
    }
}

/// The canonical reason phrase of a status, used as the title of `about:blank` problems.
pub fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// Builds a problem response for a bare status (used where no [`ApiError`] exists, e.g. when a
/// lower layer answered with an empty error body).
pub fn problem_for_status(status: StatusCode, detail: &str) -> Response {
    let problem = Problem {
        kind: "about:blank".to_owned(),
        title: reason(status).to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        errors: None,
        conflicts: None,
        request_id: crate::http::request_id::current(),
    };
    problem_response(status, &problem)
}

fn problem_response(status: StatusCode, problem: &Problem) -> Response {
    let body = serde_json::to_vec(problem).unwrap_or_default();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(error) = &self {
            // `{:#}` prints the whole cause chain; the span carries the request id.
            tracing::error!(error = format!("{error:#}"), "internal error");
        }
        let mut response = problem_response(self.status(), &self.problem());
        if let Self::Unauthorized(_) = self {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Self::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        DomainError::from(error).into()
    }
}

/// Maps a constraint violation to the domain error its constraint declares.
///
/// PostgreSQL names the violated constraint; SQLite names the columns of a unique constraint
/// (`UNIQUE constraint failed: users.email`), and only says "FOREIGN KEY constraint failed"
/// for foreign keys, so those fall back to a generic 422 there.
fn constraint_error(error: &dyn sqlx::error::DatabaseError) -> Option<DomainError> {
    use sqlx::error::ErrorKind;
    let kind = db::violation_kind(error);
    if !matches!(
        kind,
        ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::CheckViolation
            | ErrorKind::ExclusionViolation
    ) {
        return None;
    }
    let known = match error.constraint() {
        Some(name) => db::find_constraint(name),
        None => db::find_constraint_by_sqlite_message(error.message()),
    };
    Some(match (known, kind) {
        (Some(c), _) => match c.kind {
            ConstraintKind::Unique => DomainError::conflict(c.message),
            ConstraintKind::ForeignKey | ConstraintKind::Check => DomainError::invalid(c.field, c.message),
        },
        (None, ErrorKind::UniqueViolation | ErrorKind::ExclusionViolation) => {
            DomainError::conflict("A record with the same unique values already exists")
        }
        (None, ErrorKind::ForeignKeyViolation) => {
            DomainError::Refused("The request refers to a record that does not exist".into())
        }
        (None, _) => DomainError::Refused("The request violates a data rule".into()),
    })
}

pub type ApiResult<T> = Result<T, ApiError>;
