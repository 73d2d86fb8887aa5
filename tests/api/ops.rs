//! Health, readiness, metrics, OpenAPI and docs; migrations.

use axum::Router;
use cedar::app::AppState;
use cedar::db::Db;
use serde_json::Value;

use crate::backend_tests;
use crate::common::{Backend, TestDatabase, assert_problem, spawn_app, start};

async fn health_is_ok(backend: Backend) {
    let app = spawn_app(backend).await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

async fn ready_when_migrated(backend: Backend) {
    let app = spawn_app(backend).await;
    let body: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(body["database"], expected);
    assert!(body["migrations"].as_u64().unwrap() >= 1);
}

async fn not_ready_when_database_goes_away(backend: Backend) {
    let app = spawn_app(backend).await;
    assert_eq!(app.get("/ready").await.status(), 200);
    match backend {
        // SQLite is a file in-process: the pool closing is how it goes away.
        Backend::Sqlite => app.state.db.close().await,
        // PostgreSQL: the database is dropped and its connections killed under the app.
        Backend::Postgres => app.database.drop_now().await,
    }
    let body = assert_problem(app.get("/ready").await, 503).await;
    let detail = body["detail"].as_str().unwrap();
    assert_eq!(detail, "the database is unreachable", "which dependency, and no driver text: {body}");
    // Liveness does not depend on the database.
    assert_eq!(app.get("/health").await.status(), 200);
}

async fn not_ready_when_not_migrated(backend: Backend) {
    let database = TestDatabase::create(backend).await;
    let settings = database.settings();
    let db = Db::connect(&settings).await.unwrap();
    let app = start(AppState::new(db.clone(), settings).unwrap(), database, Router::new()).await;
    let body = assert_problem(app.get("/ready").await, 503).await;
    assert!(body["detail"].as_str().unwrap().contains("migrated"), "{body}");
    db.migrate().await.unwrap();
    assert_eq!(app.get("/ready").await.status(), 200);
}

async fn migrations_are_idempotent(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = &app.state.db;
    let known = db.known_migrations();
    assert_eq!(db.applied_migrations().await.unwrap(), known);
    assert_eq!(db.migrate().await.unwrap(), 0, "second run applies nothing");
    assert_eq!(db.migrate().await.unwrap(), 0);
    assert_eq!(db.applied_migrations().await.unwrap(), known);
}

async fn metrics_report_requests_and_pool(backend: Backend) {
    let app = spawn_app(backend).await;
    app.get("/health").await;
    app.get("/no-such-route").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(text.contains(r#"http_requests_total{method="GET",route="/health",status="200"}"#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(text.contains("http_request_duration_seconds_bucket{"), "{text}");
    assert!(text.contains(r#"db_pool_connections{state="idle"}"#), "{text}");
}

async fn openapi_and_docs_are_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/health", "/ready", "/metrics"] {
        assert!(spec["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(spec["components"]["schemas"]["Problem"].is_object());

    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"));
    // Every asset comes from the binary: the page works offline.
    for asset in ["swagger-ui-bundle.js", "swagger-ui.css", "swagger-initializer.js"] {
        assert!(html.contains(asset), "{asset} not referenced");
        let response = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
        assert!(response.bytes().await.unwrap().len() > 100, "{asset} is empty");
    }
    assert!(!html.contains("https://"), "docs page loads something from the internet");
    // /docs without the slash redirects to the page.
    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let response = redirect.get(app.url("/docs")).send().await.unwrap();
    assert!(response.status().is_redirection());
}

backend_tests!(
    health_is_ok,
    ready_when_migrated,
    not_ready_when_database_goes_away,
    not_ready_when_not_migrated,
    migrations_are_idempotent,
    metrics_report_requests_and_pool,
    openapi_and_docs_are_served,
    metrics_can_require_the_scrape_token,
);

/// With `CEDAR_METRICS_TOKEN`, `/metrics` answers only the bearer token Prometheus sends.
async fn metrics_can_require_the_scrape_token(backend: Backend) {
    let app = crate::common::spawn_app_with(backend, Router::new(), |s| {
        s.metrics_token = Some(cedar::config::Secret::new("scrape-secret-1"));
    })
    .await;
    assert_problem(app.get("/metrics").await, 401).await;
    let wrong = app.client.get(app.url("/metrics")).bearer_auth("scrape-secret-2").send().await.unwrap();
    assert_problem(wrong, 401).await;
    let right = app.client.get(app.url("/metrics")).bearer_auth("scrape-secret-1").send().await.unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("db_pool_connections"));
}
