//! Every error path is problem+json; the middleware stack does what it promises.

use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use cedar::app::AppState;
use cedar::error::ApiError;
use cedar::http::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, assert_problem, spawn_app, spawn_app_with};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lesson {
    title: String,
    minutes: u32,
}

/// Probe handlers that use the crate's own extractor and error type.
fn probes() -> Router<AppState> {
    Router::new()
        .route(
            "/probe/lessons",
            post(|Json(lesson): Json<Lesson>| async move {
                if ![30, 45, 60].contains(&lesson.minutes) {
                    return Err(ApiError::invalid("minutes", "must be 30, 45 or 60"));
                }
                Ok(Json(json!({"title": lesson.title, "minutes": lesson.minutes})))
            }),
        )
        .route(
            "/probe/internal",
            get(|| async { Err::<(), _>(ApiError::Internal(anyhow::anyhow!("password=hunter2 leaked in a cause"))) }),
        )
        .route(
            "/probe/panic",
            get(|| async {
                if chrono::Utc::now().timestamp() > 0 {
                    panic!("probe panic with password=hunter2");
                }
                "unreachable"
            }),
        )
        .route(
            "/probe/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "done"
            }),
        )
        .route(
            "/probe/unique",
            post(|axum::extract::State(state): axum::extract::State<AppState>| async move {
                // Insert the same idempotency row twice: the second violates the primary key,
                // which the constraint registry maps to a 409.
                const SQL: &str = "INSERT INTO idempotency_keys (scope, idempotency_key, request_hash, state, \
                    locked_until, created_at, expires_at) VALUES ('probe', 'k', 'h', 'completed', $1, $1, $1)";
                let now = chrono::Utc::now();
                for _ in 0..2 {
                    cedar::on_db!(&state.db, pool => sqlx::query(SQL).bind(now).execute(pool).await.map(|_| ()))?;
                }
                Ok::<_, ApiError>("unreachable")
            }),
        )
}

async fn probe_app(backend: Backend) -> crate::common::TestApp {
    spawn_app_with(backend, probes(), |s| s.request_timeout = Duration::from_secs(1)).await
}

async fn unknown_route_is_404_problem(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = assert_problem(app.get("/v1/nothing-here").await, 404).await;
    assert!(body["request_id"].is_string());
}

async fn wrong_method_is_405_problem_with_allow(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.client.delete(app.url("/health")).send().await.unwrap();
    let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
    assert!(allow.unwrap_or_default().contains("GET"));
    assert_problem(response, 405).await;
}

async fn malformed_json_is_400(backend: Backend) {
    let app = probe_app(backend).await;
    let response = app
        .client
        .post(app.url("/probe/lessons"))
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    let body = assert_problem(response, 400).await;
    assert!(body["detail"].as_str().unwrap().contains("Malformed JSON"), "{body}");
}

async fn wrong_shape_is_422_naming_the_field(backend: Backend) {
    let app = probe_app(backend).await;
    let body =
        assert_problem(app.post_json("/probe/lessons", &json!({"title": "Piano", "minutes": "lots"})).await, 422).await;
    assert_eq!(body["errors"][0]["field"], "minutes", "{body}");

    let body =
        assert_problem(app.post_json("/probe/lessons", &json!({"title": "Piano", "minutes": 50})).await, 422).await;
    assert_eq!(body["errors"], json!([{"field": "minutes", "message": "must be 30, 45 or 60"}]));

    let ok = app.post_json("/probe/lessons", &json!({"title": "Piano", "minutes": 45})).await;
    assert_eq!(ok.status(), 200);
}

async fn missing_content_type_is_415(backend: Backend) {
    let app = probe_app(backend).await;
    let response = app.client.post(app.url("/probe/lessons")).body("{}").send().await.unwrap();
    assert_problem(response, 415).await;
}

async fn oversized_body_is_413(backend: Backend) {
    let app = probe_app(backend).await;
    let title = "x".repeat(1024 * 1024 + 10);
    let body = json!({"title": title, "minutes": 30});
    assert_problem(app.post_json("/probe/lessons", &body).await, 413).await;

    // Also when the size is not announced up front (chunked body).
    // One chunk just over the limit: the server may answer as soon as the limit is passed, and
    // a second chunk still being written then would fail on a closed connection instead.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(vec![b' '; 1024 * 1024 + 64])];
    let sent = app
        .client
        .post(app.url("/probe/lessons"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    match sent {
        Ok(response) => {
            assert_problem(response, 413).await;
        }
        // The server answers 413 as soon as the limit is passed and closes the connection; a
        // client still writing the rest of its chunk then sees a broken pipe, not the answer
        // (it depends on socket buffers and timing). The body was refused either way: the
        // server is up and accepted nothing.
        Err(error) => {
            assert!(error.is_request(), "{error}");
            assert_eq!(app.get("/health").await.status(), 200);
        }
    }
}

async fn internal_error_hides_internals(backend: Backend) {
    let app = probe_app(backend).await;
    let response = app.get("/probe/internal").await;
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = assert_problem(response, 500).await;
    let text = body.to_string();
    assert!(!text.contains("hunter2") && !text.contains("cause"), "{text}");
    assert_eq!(body["request_id"], request_id);
}

async fn panic_becomes_500_problem(backend: Backend) {
    let app = probe_app(backend).await;
    let body = assert_problem(app.get("/probe/panic").await, 500).await;
    assert!(!body.to_string().contains("hunter2"));
    // The server is still serving.
    assert_eq!(app.get("/health").await.status(), 200);
}

async fn slow_request_times_out_with_503(backend: Backend) {
    let app = probe_app(backend).await;
    let body = assert_problem(app.get("/probe/slow").await, 503).await;
    assert_eq!(body["type"], "/problems/timeout");
}

async fn unique_violation_maps_to_409_by_constraint(backend: Backend) {
    let app = probe_app(backend).await;
    let body = assert_problem(app.client.post(app.url("/probe/unique")).send().await.unwrap(), 409).await;
    assert_eq!(body["detail"], "This idempotency key is already in use", "{body}");
}

async fn request_id_is_taken_or_made_and_echoed(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.client.get(app.url("/health")).header("x-request-id", "req-abc-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-abc-123");

    let response = app.client.get(app.url("/health")).header("x-request-id", "x".repeat(500)).send().await.unwrap();
    let made = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
}

async fn security_headers_are_set(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/health").await;
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert!(headers["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(headers["cache-control"], "no-store");
}

async fn cors_preflight_allows_supabase_headers(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/auth/v1/token"))
        .header("origin", "http://localhost:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "apikey,x-client-info,x-supabase-api-version,authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let allowed = response.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    for h in ["apikey", "x-client-info", "x-supabase-api-version", "authorization", "idempotency-key"] {
        assert!(allowed.contains(h), "{h} missing from {allowed}");
    }
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

async fn cors_list_only_allows_listed_origins(backend: Backend) {
    let app = spawn_app_with(backend, Router::new(), |s| {
        s.cors_origins = cedar::config::CorsOrigins::List(vec!["https://app.cedarheights.ca".into()]);
    })
    .await;
    let allowed =
        app.client.get(app.url("/health")).header("origin", "https://app.cedarheights.ca").send().await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.cedarheights.ca");
    let other = app.client.get(app.url("/health")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

async fn responses_are_compressed_on_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.client.get(app.url("/openapi.json")).header("accept-encoding", "gzip").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

async fn graceful_shutdown_lets_in_flight_requests_finish(backend: Backend) {
    let mut app = probe_app(backend).await;
    let client = app.client.clone();
    // /probe/slow takes 1.5 s; the timeout is raised so it can finish.
    let url = app.url("/probe/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.shutdown().await.expect("clean shutdown");
    let response = in_flight.await.unwrap().expect("in-flight request completed");
    // It was abandoned by the 1 s request timeout or completed, but it was answered.
    assert!(response.status() == 200 || response.status() == 503, "{}", response.status());
    let after = reqwest::Client::new().get(app.url("/health")).send().await;
    assert!(after.is_err(), "server still accepting after shutdown");
}

async fn shutdown_waits_for_a_request_that_completes(backend: Backend) {
    let mut app = spawn_app_with(backend, probes(), |s| s.request_timeout = Duration::from_secs(10)).await;
    let client = app.client.clone();
    let url = app.url("/probe/slow");
    let in_flight = tokio::spawn(async move { client.get(url).send().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.shutdown().await.expect("clean shutdown");
    let response = in_flight.await.unwrap().expect("in-flight request completed");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
}

async fn unknown_json_field_is_rejected_clearly(backend: Backend) {
    let app = probe_app(backend).await;
    let body: Value = assert_problem(
        app.post_json("/probe/lessons", &json!({"title": "Piano", "minutes": 30, "colour": "red"})).await,
        422,
    )
    .await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("colour"), "{body}");
}

backend_tests!(
    unknown_route_is_404_problem,
    wrong_method_is_405_problem_with_allow,
    malformed_json_is_400,
    wrong_shape_is_422_naming_the_field,
    missing_content_type_is_415,
    oversized_body_is_413,
    internal_error_hides_internals,
    panic_becomes_500_problem,
    slow_request_times_out_with_503,
    unique_violation_maps_to_409_by_constraint,
    request_id_is_taken_or_made_and_echoed,
    security_headers_are_set,
    cors_preflight_allows_supabase_headers,
    cors_list_only_allows_listed_origins,
    responses_are_compressed_on_request,
    graceful_shutdown_lets_in_flight_requests_finish,
    shutdown_waits_for_a_request_that_completes,
    unknown_json_field_is_rejected_clearly,
    requests_over_the_general_limit_get_429,
    a_dropped_transaction_releases_its_locks_at_once,
);

/// A transaction dropped unfinished (a cancelled request) gives its locks back as its
/// connection returns to the pool, not when that connection is next borrowed: the pool skips
/// its release ping only for connections with nothing to flush (vendor/README.md). Watched
/// from a connection outside the pool, so the pool's own reuse cannot flush it instead.
async fn a_dropped_transaction_releases_its_locks_at_once(backend: Backend) {
    use sqlx::Connection;
    let app = spawn_app(backend).await;
    let db = &app.state.db;
    let mut tx = db.begin().await.unwrap();
    // SQLite's `BEGIN IMMEDIATE` already holds the write lock; on PostgreSQL take a lock too.
    if let cedar::db::TxConn::Postgres(conn) = cedar::db::Tx::conn_mut(&mut tx) {
        sqlx::query("SELECT pg_advisory_xact_lock(4242)").execute(&mut **conn).await.unwrap();
    }
    drop(tx);
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let lock_free = || async {
        match &app.state.settings.database_url {
            cedar::config::DatabaseUrl::Postgres(url) => {
                let mut other = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock(4242)").fetch_one(&mut other).await.unwrap()
            }
            cedar::config::DatabaseUrl::Sqlite(path) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path).busy_timeout(Duration::ZERO);
                let mut other = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.is_ok()
            }
        }
    };
    while !lock_free().await {
        assert!(std::time::Instant::now() < deadline, "the dropped transaction still holds its lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `CEDAR_RATE_LIMIT_PER_MINUTE` per signed-in user (per IP without a token): past it, the
/// documented 429 problem with `Retry-After`; another user is not affected; probes are free.
async fn requests_over_the_general_limit_get_429(backend: Backend) {
    let app = crate::common::spawn_app_with(backend, axum::Router::new(), |s| s.rate_limit_per_minute = 5).await;
    let admin = crate::common::admin_token(&app).await;
    for _ in 0..5 {
        assert_eq!(app.client.get(app.url("/v1/me")).bearer_auth(&admin).send().await.unwrap().status(), 200);
    }
    let limited = app.client.get(app.url("/v1/me")).bearer_auth(&admin).send().await.unwrap();
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    let body = assert_problem(limited, 429).await;
    assert_eq!(body["type"], "/problems/rate-limited");
    assert_eq!(app.get("/health").await.status(), 200, "probes are not counted");
    let other = crate::common::sign_up(&app, "other@example.ca", "password-1").await;
    let token = other["access_token"].as_str().unwrap();
    assert_eq!(app.client.get(app.url("/v1/me")).bearer_auth(token).send().await.unwrap().status(), 200);
}
