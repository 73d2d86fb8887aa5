//! The HTTP middleware stack: request ids, logging, panics, metrics, CORS, security headers,
//! timeouts, and turning every error response into problem+json.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::app::AppState;
use crate::config::CorsOrigins;
use crate::error::{self, ApiError, PROBLEM_JSON};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Accepts a sane `x-request-id` from the caller (a proxy, say) or makes one; echoes it on the
/// response and makes it available to logs and problem bodies.
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let value = HeaderValue::from_str(&id).expect("request id is visible ASCII");
    request.headers_mut().insert(REQUEST_ID, value.clone());
    let mut response = crate::http::request_id::scope(id, next.run(request)).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

type MakeSpan = fn(&Request) -> Span;
type OnResponse = fn(&Response, Duration, &Span);

/// One span per request carrying its id, method and route template; one log line per
/// response with status and latency.
pub fn trace_layer() -> TraceLayer<SharedClassifier<ServerErrorsAsFailures>, MakeSpan, (), OnResponse> {
    fn make_span(request: &Request) -> Span {
        let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
        let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("-");
        // Secret tokens live in these paths (calendar feeds, unsubscribe links): the route
        // template stands in for them. Query strings (one-time links) are never logged.
        let path = request.uri().path();
        let secret = path.starts_with("/v1/calendars/") || path.starts_with("/v1/unsubscribe/");
        let path = if secret { route } else { path };
        tracing::info_span!("request", request_id, method = %request.method(), route, path = %path)
    }
    fn on_response(response: &Response, latency: Duration, _span: &Span) {
        let status = response.status().as_u16();
        let ms = latency.as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(status, ms, "response");
        } else {
            tracing::info!(status, ms, "response");
        }
    }
    TraceLayer::new_for_http()
        .make_span_with(make_span as MakeSpan)
        .on_request(())
        .on_response(on_response as OnResponse)
}

/// A panicking handler becomes a 500 problem (and a log line), not a dropped connection.
pub async fn catch_panic(request: Request, next: Next) -> Response {
    match std::panic::AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
        }
    }
}

/// `http_requests_total` and `http_request_duration_seconds` by method, route template and
/// status. Unmatched paths share one label so scanners cannot blow up the series count.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    super::memory::note_request();
    let labels = [("method", method), ("route", route), ("status", response.status().as_u16().to_string())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}

/// CORS for browser front ends, including the headers supabase-js sends.
pub fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::None => AllowOrigin::list(Vec::<HeaderValue>::new()),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("apikey"),
            HeaderName::from_static("x-client-info"),
            HeaderName::from_static("x-supabase-api-version"),
            HeaderName::from_static("idempotency-key"),
            REQUEST_ID,
        ])
        .expose_headers([
            REQUEST_ID,
            header::RETRY_AFTER,
            header::LOCATION,
            HeaderName::from_static("idempotent-replayed"),
        ])
        .max_age(Duration::from_secs(86_400))
}

/// Conservative browser-facing headers. The docs page needs its own scripts and styles; the
/// API itself never serves active content.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let is_docs = request.uri().path().starts_with("/docs");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let csp = if is_docs {
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    let defaults = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CONTENT_SECURITY_POLICY, csp),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ];
    for (name, value) in defaults {
        headers.entry(name).or_insert(HeaderValue::from_static(value));
    }
    if !is_docs {
        headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    }
    response
}

/// Abandons a request that runs past `CEDAR_REQUEST_TIMEOUT_SECS` with a 503 problem.
pub async fn timeout(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.settings.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Lower layers (body limits, axum's own rejections) answer errors with plain text or an
/// empty body; this rewrites any error response that is not already problem+json, keeping
/// headers such as `Allow` and `Retry-After`.
pub async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    // Problem bodies pass, and so do JSON bodies (the GoTrue-compatible /auth/v1 routes answer
    // errors in GoTrue's own `{code, error_code, msg}` shape, which supabase-js expects) and the
    // HTML pages Cedar shows to a browser that followed a link from an email.
    let is_structured = response.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(PROBLEM_JSON.as_bytes()) || v.starts_with(b"application/json") || v.starts_with(b"text/html")
    });
    if !(status.is_client_error() || status.is_server_error()) || is_structured {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let detail = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "The request body is larger than the server accepts".to_owned(),
        _ if text.trim().is_empty() => error::reason(status).to_owned(),
        _ => text.trim().to_owned(),
    };
    let problem = error::problem_for_status(status, &detail);
    let (problem_parts, problem_body) = problem.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, problem_parts.headers[header::CONTENT_TYPE].clone());
    Response::from_parts(parts, Body::new(problem_body))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Text with a NUL character is refused as 422 before it reaches a handler: PostgreSQL cannot
/// store it (it would be a 500 there) and no field of the API needs it. Checked in the path
/// and query (`%00`) and in JSON bodies (`\u0000`); bodies are already bounded by the limit.
pub async fn reject_nul(request: Request, next: Next) -> Response {
    // Bodies are checked where they are parsed (`http::Json`, the GoTrue parser), so no body
    // is read twice here.
    if request.uri().to_string().to_ascii_lowercase().contains("%00") {
        if request.uri().path().starts_with("/auth/v1/") {
            let body = serde_json::json!({"code": 400, "error_code": "validation_failed",
                "msg": "The address must not contain NUL characters"});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
        return ApiError::invalid("path", "must not contain NUL characters").into_response();
    }
    next.run(request).await
}

/// The general limit: `CEDAR_RATE_LIMIT_PER_MINUTE` requests per signed-in user, or per client
/// IP without a token; over it, 429 `/problems/rate-limited` with `Retry-After`. Probes
/// (`/health`, `/ready`, `/metrics`) are not counted.
pub async fn rate_limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.settings.rate_limit_per_minute == 0 || matches!(request.uri().path(), "/health" | "/ready" | "/metrics") {
        return next.run(request).await;
    }
    let key = match request.extensions().get::<crate::auth::CurrentUser>() {
        Some(user) => format!("user:{}", user.id),
        None => {
            let ip = request
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| crate::http::client::client_key(info.0, request.headers(), &state.settings.trusted_proxies))
                .unwrap_or_default();
            format!("ip:{ip}")
        }
    };
    match state.request_limiter.check(&key) {
        Ok(()) => next.run(request).await,
        Err(retry_after_secs) => ApiError::RateLimited { retry_after_secs }.into_response(),
    }
}
