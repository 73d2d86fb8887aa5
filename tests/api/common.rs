//! Test harness: the real router on 127.0.0.1:0 with a fresh database per test, on SQLite
//! and (when `TEST_DATABASE_URL` is set) on PostgreSQL. Shared request helpers are in
//! `helpers.rs`.

use std::str::FromStr;

use axum::Router;
use cedar::app::AppState;
use cedar::config::Settings;
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Generates `sqlite::<name>` and `postgres::<name>` tests from `async fn <name>(Backend)`.
/// The PostgreSQL variants run when `TEST_DATABASE_URL` was set for the build (`.ci/run`
/// always sets it; `build.rs` passes it on as a cfg) and are reported as ignored otherwise,
/// so a test that did not run never counts as passed.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[cfg_attr(not(cedar_postgres_tests), ignore = "set TEST_DATABASE_URL=postgres://… to run it")]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await;
                }
            )*
        }
    };
}

pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_DATABASE_URL").ok().filter(|s| !s.is_empty())
}

/// A database that exists for one test and is removed afterwards.
pub struct TestDatabase {
    pub url: Option<String>,
    pub data_dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Self { url: None, data_dir, pg_name: None },
            Backend::Postgres => {
                let admin_url = postgres_url().expect("TEST_DATABASE_URL");
                let name = format!("cedar_test_{}", uuid::Uuid::now_v7().simple());
                let mut admin = PgConnectOptions::from_str(&admin_url)
                    .expect("TEST_DATABASE_URL is a PostgreSQL URL")
                    .connect()
                    .await
                    .expect("PostgreSQL at TEST_DATABASE_URL is reachable");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                let mut url = url::Url::parse(&admin_url).expect("TEST_DATABASE_URL parses");
                url.set_path(&name);
                Self { url: Some(url.to_string()), data_dir, pg_name: Some(name) }
            }
        }
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::for_data_dir(self.data_dir.path(), self.url.as_deref()).expect("test settings");
        // Tests poll quickly; the general limit has a test of its own (http_stack).
        settings.rate_limit_per_minute = 0;
        settings
    }

    /// Drops the PostgreSQL database now, terminating its connections (the "database went
    /// away" case).
    pub async fn drop_now(&self) {
        if let Some(name) = &self.pg_name {
            drop_postgres_database(name).await;
        }
    }
}

async fn drop_postgres_database(name: &str) {
    let Some(admin_url) = postgres_url() else {
        return;
    };
    if let Ok(mut admin) = PgConnectOptions::from_str(&admin_url).expect("url").connect().await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut admin).await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside async context; use a private runtime on a plain thread.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(drop_postgres_database(&name));
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub database: TestDatabase,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client.post(self.url(path)).json(body).send().await.expect("request")
    }

    /// Stops accepting connections; in-flight requests may finish. Returns when the server
    /// has stopped.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(server) => server.await?,
            None => Ok(()),
        }
    }
}

/// Starts the application with a fresh, migrated database.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, Router::new(), |_| {}).await
}

/// Starts the application with extra probe routes and adjusted settings.
pub async fn spawn_app_with(backend: Backend, extra: Router<AppState>, adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let mut settings = database.settings();
    adjust(&mut settings);
    let state = AppState::init(settings).await.expect("app state");
    start(state, database, extra).await
}

/// Starts the application over an already built state. `CEDAR_TEST_LOG=debug` shows its logs.
pub async fn start(state: AppState, database: TestDatabase, extra: Router<AppState>) -> TestApp {
    if let Ok(filter) = std::env::var("CEDAR_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = cedar::app::router_with(state.clone(), extra);
    let (tx, rx) = oneshot::channel::<()>();
    let grace = state.settings.shutdown_grace;
    let server = tokio::spawn(cedar::app::run_until_shutdown(
        listener,
        app,
        async move {
            let _ = rx.await;
        },
        grace,
    ));
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder().no_proxy().build().expect("client"),
        state,
        database,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// Asserts an RFC 9457 problem response with this status and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "unexpected status");
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: serde_json::Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status, "{body}");
    for field in ["type", "title", "detail"] {
        assert!(body[field].is_string(), "problem lacks {field}: {body}");
    }
    body
}

pub const ADMIN_EMAIL: &str = "owner@cedarheights.ca";
pub const ADMIN_PASSWORD: &str = "owner-password-1";

/// Creates the first admin the way `cedar admin create` does and signs them in.
pub async fn admin_token(app: &TestApp) -> String {
    if cedar::auth::store::user_by_email(&app.state.db, ADMIN_EMAIL).await.unwrap().is_none() {
        cedar::auth::create_admin_cli(&app.state.db, ADMIN_EMAIL, ADMIN_PASSWORD.into(), Some("Owner"))
            .await
            .expect("admin created");
    }
    sign_in(app, ADMIN_EMAIL, ADMIN_PASSWORD).await["access_token"].as_str().unwrap().to_owned()
}

/// Signs in with a password; panics unless it works. Returns the token response.
pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> serde_json::Value {
    let response = app
        .client
        .post(app.url("/auth/v1/token?grant_type=password"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "sign-in of {email} failed");
    response.json().await.unwrap()
}

/// Signs a parent up; returns the token response.
pub async fn sign_up(app: &TestApp, email: &str, password: &str) -> serde_json::Value {
    let response = app
        .client
        .post(app.url("/auth/v1/signup"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "sign-up of {email} failed");
    response.json().await.unwrap()
}

/// Follows the confirmation link emailed to `email` at sign-up (the link waits, outside the
/// stored body, in the outbox row until the email is sent).
pub async fn confirm_email(app: &TestApp, email: &str) {
    let link: String = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT secret FROM outbox \
        WHERE to_address = $1 AND template = 'confirm_signup' ORDER BY id DESC LIMIT 1")
        .bind(email).fetch_one(pool).await)
    .expect("a confirmation email with its link");
    let path = link.split_once("/auth/v1/").map(|(_, rest)| format!("/auth/v1/{rest}")).unwrap();
    let response = app.client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(response.status(), 200, "confirming {email}");
}

/// Creates a user of any role through the admin API with a password; returns its id and a
/// signed-in access token.
pub async fn user_with_role(app: &TestApp, admin: &str, email: &str, role: &str) -> (String, String) {
    let response = app
        .client
        .post(app.url("/v1/users"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"email": email, "role": role, "password": "a-good-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let user: serde_json::Value = response.json().await.unwrap();
    let token = sign_in(app, email, "a-good-password").await["access_token"].as_str().unwrap().to_owned();
    (user["id"].as_str().unwrap().to_owned(), token)
}

/// Asserts a GoTrue-shaped error `{code, error_code, msg}`.
pub async fn assert_gotrue_error(response: reqwest::Response, status: u16, error_code: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    let body: serde_json::Value = response.json().await.expect("GoTrue error body is JSON");
    assert_eq!(body["code"], status, "{body}");
    assert_eq!(body["error_code"], error_code, "{body}");
    assert!(body["msg"].is_string(), "{body}");
    body
}

/// The claims of a JWT, without verifying it.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Starts the application with these workflow definitions and adjusted settings.
pub async fn spawn_app_with_workflows(
    backend: Backend,
    workflows: cedar::workflows::engine::Definitions,
    adjust: impl FnOnce(&mut Settings),
) -> TestApp {
    let database = TestDatabase::create(backend).await;
    let mut settings = database.settings();
    adjust(&mut settings);
    let mut state = AppState::init(settings).await.expect("app state");
    state.workflows = std::sync::Arc::new(workflows);
    start(state, database, Router::new()).await
}
