//! `Idempotency-Key` for every mutating route.
//!
//! A POST/PUT/PATCH/DELETE carrying the header is recorded per (caller, key) before it runs.
//! The first request executes and its response (status, content type, location, body) is
//! stored; a retry with the same key and the same request gets that stored response back with
//! `Idempotent-Replayed: true`; the same key with a different method, path or body is a 422;
//! a retry while the first is still running is a 409 with `Retry-After`. Keys expire after
//! 24 h. Responses with status 5xx or 429 are not kept, so the client may retry them —
//! unless the request's write had already committed.
//!
//! Crash safety: every write transaction of a keyed request marks the key `applied` in that
//! same transaction ([`CommitMark`]), naming the answer to rebuild (a status and the path
//! whose `GET` gives the body). A process that dies after the commit but before storing the
//! response leaves an `applied` key: the retry gets the rebuilt answer and nothing runs
//! twice. A process that dies before its commit leaves an `in_progress` claim whose short
//! lease (renewed while the request runs) lapses within [`LEASE`]; the retry then runs.
//!
//! The caller is the verified user once authentication has put an [`IdempotencyScope`] in the
//! request's extensions; before that (or for anonymous calls) it is a hash of the
//! `Authorization` header, so two callers never share keys.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::future::Future;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::types::Json as SqlJson;

use crate::app::AppState;
use crate::db::{CommitMark, Constraint, ConstraintKind, Db};
use crate::error::ApiError;
use crate::on_db;

pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// How long a key is remembered.
pub const KEY_TTL: chrono::Duration = chrono::Duration::hours(24);

/// How long a claim outlives its last renewal: a dead process blocks a retry at most this long.
pub const LEASE: std::time::Duration = std::time::Duration::from_secs(15);
const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub static CONSTRAINTS: &[Constraint] = &[Constraint {
    name: "idempotency_keys_pkey",
    sqlite_columns: "idempotency_keys.scope, idempotency_keys.idempotency_key",
    kind: ConstraintKind::Unique,
    field: "Idempotency-Key",
    message: "This idempotency key is already in use",
}];

/// Identity of the caller for idempotency purposes, set by the authentication layer.
#[derive(Debug, Clone)]
pub struct IdempotencyScope(pub String);

/// What a stored key says about a new request.
enum Claim {
    /// This request owns the key and must run.
    Run,
    Replay(StoredResponse),
    /// The write committed but its response was never stored: answer from the data.
    Rebuild(Option<(u16, String)>),
    /// Another request holds the key (for at most [`LEASE`] after its process dies).
    StillRunning,
    DifferentRequest,
}

struct StoredResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mutating = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    // Sign-in answers are tokens: never stored for replay (and supabase-js sends no key).
    let secret_answer = request.uri().path().starts_with("/auth/v1/");
    let Some(key) = request.headers().get(&IDEMPOTENCY_KEY).filter(|_| mutating && !secret_answer).cloned() else {
        return next.run(request).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => k.to_owned(),
        _ => {
            return ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible ASCII characters".into())
                .into_response();
        }
    };
    let scope = scope_of(&request);
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, state.settings.body_limit_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge.into_response(),
    };
    let fingerprint = fingerprint(&parts.method, parts.uri.path_and_query().map_or("", |p| p.as_str()), &body);

    let claim = match claim(&state.db, &scope, &key, &fingerprint).await {
        Ok(claim) => claim,
        Err(error) => return ApiError::from(error).into_response(),
    };
    match claim {
        Claim::Replay(stored) => replay(stored),
        Claim::StillRunning => {
            let mut response =
                ApiError::conflict("A request with this Idempotency-Key is still being processed").into_response();
            // Most claims end within a second; a dead process's lapses within LEASE.
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        Claim::Rebuild(answer) => {
            let response = rebuild(&state, parts, answer).await;
            finish(&state.db, &scope, &key, response).await
        }
        Claim::DifferentRequest => ApiError::Unprocessable(
            "This Idempotency-Key was already used for a different request; use a new key".into(),
        )
        .into_response(),
        Claim::Run => {
            let mark = CommitMark::new(&scope, &key);
            let run = mark.scope(next.run(Request::from_parts(parts, Body::from(body))));
            let response = run_renewing(&state.db, &scope, &key, run).await;
            finish(&state.db, &scope, &key, response).await
        }
    }
}

fn scope_of(request: &Request) -> String {
    if let Some(IdempotencyScope(scope)) = request.extensions().get::<IdempotencyScope>() {
        return format!("user:{scope}");
    }
    match request.headers().get(header::AUTHORIZATION) {
        Some(credentials) => format!("credentials:{}", hex::encode(Sha256::digest(credentials.as_bytes()))),
        None => "anonymous".to_owned(),
    }
}

fn fingerprint(method: &Method, path_and_query: &str, body: &Bytes) -> String {
    let mut hash = Sha256::new();
    hash.update(method.as_str());
    hash.update([0]);
    hash.update(path_and_query);
    hash.update([0]);
    hash.update(body);
    hex::encode(hash.finalize())
}

async fn claim(db: &Db, scope: &str, key: &str, fingerprint: &str) -> Result<Claim, sqlx::Error> {
    const INSERT: &str = "INSERT INTO idempotency_keys \
        (scope, idempotency_key, request_hash, state, locked_until, created_at, expires_at) \
        VALUES ($1, $2, $3, 'in_progress', $4, $5, $6) \
        ON CONFLICT (scope, idempotency_key) DO NOTHING";
    const SELECT: &str = "SELECT request_hash, state, response_status, response_headers, response_body, \
        answer_status, answer_path, locked_until, expires_at FROM idempotency_keys \
        WHERE scope = $1 AND idempotency_key = $2";
    const DELETE_EXPIRED: &str =
        "DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND expires_at <= $3";
    const TAKE_OVER: &str = "UPDATE idempotency_keys SET locked_until = $3 \
        WHERE scope = $1 AND idempotency_key = $2 AND state = 'in_progress' AND locked_until <= $4";

    type Row = (
        String,
        String,
        Option<i32>,
        Option<SqlJson<Vec<(String, String)>>>,
        Option<Vec<u8>>,
        Option<i32>,
        Option<String>,
        DateTime<Utc>,
        DateTime<Utc>,
    );

    // Two rounds at most: a row may expire or vanish between our statements.
    for _ in 0..3 {
        let now = Utc::now();
        let locked_until = lease_from(now);
        let inserted = on_db!(db, pool => sqlx::query(INSERT)
            .bind(scope).bind(key).bind(fingerprint).bind(locked_until).bind(now).bind(now + KEY_TTL)
            .execute(pool).await.map(|r| r.rows_affected()))?;
        if inserted == 1 {
            return Ok(Claim::Run);
        }
        let row: Option<Row> =
            on_db!(db, pool => sqlx::query_as(SELECT).bind(scope).bind(key).fetch_optional(pool).await)?;
        let Some((hash, state, status, headers, body, answer_status, answer_path, row_locked_until, expires_at)) = row
        else {
            continue;
        };
        if expires_at <= now {
            on_db!(db, pool => sqlx::query(DELETE_EXPIRED).bind(scope).bind(key).bind(now).execute(pool).await.map(|r| r.rows_affected()))?;
            continue;
        }
        if hash != fingerprint {
            return Ok(Claim::DifferentRequest);
        }
        if state == "completed" {
            return Ok(Claim::Replay(StoredResponse {
                status: status.unwrap_or(200) as u16,
                headers: headers.map(|h| h.0).unwrap_or_default(),
                body: body.unwrap_or_default(),
            }));
        }
        if state == "applied" {
            let answer = answer_status.zip(answer_path).map(|(status, path)| (status as u16, path));
            return Ok(Claim::Rebuild(answer));
        }
        if row_locked_until <= now {
            // The first attempt's process died mid-request; this retry takes over.
            let taken = on_db!(db, pool => sqlx::query(TAKE_OVER)
                .bind(scope).bind(key).bind(locked_until).bind(now).execute(pool).await.map(|r| r.rows_affected()))?;
            if taken == 1 {
                return Ok(Claim::Run);
            }
        }
        return Ok(Claim::StillRunning);
    }
    Ok(Claim::StillRunning)
}

fn lease_from(now: DateTime<Utc>) -> DateTime<Utc> {
    now + chrono::Duration::from_std(LEASE).unwrap_or(chrono::Duration::seconds(15))
}

/// Runs the request, extending the claim's lease every few seconds while it is alive.
async fn run_renewing(db: &Db, scope: &str, key: &str, run: impl Future<Output = Response>) -> Response {
    const RENEW: &str = "UPDATE idempotency_keys SET locked_until = $3 \
        WHERE scope = $1 AND idempotency_key = $2 AND state = 'in_progress'";
    tokio::pin!(run);
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    loop {
        tokio::select! {
            response = &mut run => return response,
            _ = renew.tick() => {
                let until = lease_from(Utc::now());
                let renewed = on_db!(db, pool => sqlx::query(RENEW).bind(scope).bind(key).bind(until)
                    .execute(pool).await.map(|_| ()));
                if let Err(error) = renewed {
                    tracing::warn!(error = %error, "could not renew an idempotency claim");
                }
            }
        }
    }
}

/// The answer to a retry whose first attempt committed but never stored its response: the
/// declared status with the current `GET` of the declared path; without a declaration, a
/// DELETE's 204 or a PUT/PATCH's current resource.
async fn rebuild(state: &AppState, parts: axum::http::request::Parts, answer: Option<(u16, String)>) -> Response {
    let (status, path) = match (answer, &parts.method) {
        (Some(answer), _) => answer,
        (None, &Method::DELETE) => return StatusCode::NO_CONTENT.into_response(),
        (None, &Method::PUT | &Method::PATCH) => (200, parts.uri.path().to_owned()),
        (None, _) => {
            return ApiError::conflict(
                "This request was already applied; its response was lost in a restart. Read the resource to see its state",
            )
            .into_response();
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if status == StatusCode::NO_CONTENT {
        return status.into_response();
    }
    let mut read = Request::builder().method(Method::GET).uri(&path).body(Body::empty()).expect("a GET of a path");
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE && name != IDEMPOTENCY_KEY {
            read.headers_mut().append(name, value.clone());
        }
    }
    // The caller was authenticated for the retry; the read runs as them.
    *read.extensions_mut() = parts.extensions;
    // This request was routed to the write's handler: route the read afresh (a rare path,
    // taken only after a crash, so building the routes here costs nothing that matters).
    let routes = super::api_router().split_for_parts().0.with_state(state.clone());
    let mut response = match tower::ServiceExt::oneshot(routes, read).await {
        Ok(response) => response,
        Err(infallible) => match infallible {},
    };
    if response.status() == StatusCode::OK {
        *response.status_mut() = status;
    }
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Stores a final response (or forgets the key when the outcome is worth retrying) and
/// passes the response on.
async fn finish(db: &Db, scope: &str, key: &str, response: Response) -> Response {
    const COMPLETE: &str = "UPDATE idempotency_keys SET state = 'completed', response_status = $3, \
        response_headers = $4, response_body = $5 WHERE scope = $1 AND idempotency_key = $2";
    // A key whose write committed is kept even on a 5xx: its retry is rebuilt, never re-run.
    const FORGET: &str =
        "DELETE FROM idempotency_keys WHERE scope = $1 AND idempotency_key = $2 AND state = 'in_progress'";

    let status = response.status();
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        if let Err(error) =
            on_db!(db, pool => sqlx::query(FORGET).bind(scope).bind(key).execute(pool).await.map(|r| r.rows_affected()))
        {
            tracing::warn!(error = %error, "could not release idempotency key");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => {
            return ApiError::Internal(anyhow::anyhow!("reading response body: {error}")).into_response();
        }
    };
    let kept: Vec<(String, String)> = [header::CONTENT_TYPE, header::LOCATION]
        .iter()
        .filter_map(|name| Some((name.as_str().to_owned(), parts.headers.get(name)?.to_str().ok()?.to_owned())))
        .collect();
    let stored = on_db!(db, pool => sqlx::query(COMPLETE)
        .bind(scope).bind(key).bind(i32::from(status.as_u16())).bind(SqlJson(&kept)).bind(body.as_ref())
        .execute(pool).await.map(|r| r.rows_affected()));
    if let Err(error) = stored {
        // The request itself succeeded; a retry would re-run it once the lease ends.
        tracing::error!(error = %error, "could not store idempotent response");
    }
    Response::from_parts(parts, Body::from(body))
}

fn replay(stored: StoredResponse) -> Response {
    let mut response = Response::new(Body::from(stored.body));
    *response.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    for (name, value) in stored.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Deletes keys past their 24 h; returns how many.
pub async fn purge_expired(db: &Db) -> anyhow::Result<u64> {
    const SQL: &str = "DELETE FROM idempotency_keys WHERE expires_at <= $1";
    let done = on_db!(db, pool => sqlx::query(SQL).bind(Utc::now()).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(done)
}
