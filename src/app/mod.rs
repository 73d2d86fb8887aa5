//! Application state, the router with its middleware stack, and the server's lifecycle.

pub mod idempotency;
pub mod jobs;
mod memory;
mod middleware;
mod openapi;
pub mod ratelimit;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::map_request_body::MapRequestBodyLayer;
use tower_http::map_response_body::MapResponseBodyLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Settings;
use crate::db::Db;

pub use crate::http::request_id::current as current_request_id;

/// Everything a handler may need; cloning it (every extractor and middleware does, per
/// request) is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares; read through `state.db`, `state.settings`, ….
#[derive(Clone)]
pub struct Shared {
    pub db: Db,
    pub auth: Arc<crate::auth::Auth>,
    pub settings: Arc<Settings>,
    pub metrics: PrometheusHandle,
    pub started_at: Instant,
    /// Wakes in-process workers after a commit that enqueued jobs (PostgreSQL also notifies
    /// other processes through LISTEN/NOTIFY).
    pub job_wakeup: Arc<tokio::sync::Notify>,
    /// The workflow definitions this build runs (tests add their own).
    pub workflows: Arc<crate::workflows::engine::Definitions>,
    pub ai: Arc<crate::workflows::ai::Gateway>,
    pub mailer: Arc<crate::messaging::transport::Mailer>,
    /// The general request limit (`CEDAR_RATE_LIMIT_PER_MINUTE`), per user or per IP.
    pub request_limiter: Arc<ratelimit::RateLimiter>,
    /// Signs the links in emails that open a page without signing in.
    pub link_key: Arc<crate::http::signed_links::LinkKey>,
    /// Pages of the lesson list answered before, served again once their rows are confirmed
    /// unchanged.
    pub lesson_pages: Arc<crate::scheduling::lesson_pages::LessonPages>,
    /// Staff reads awaiting their audit entry (started on first use).
    read_log: Arc<OnceLock<crate::privacy::read_log::ReadLog>>,
}

impl AppState {
    /// Connects to the database and applies pending migrations.
    pub async fn init(settings: Settings) -> anyhow::Result<Self> {
        let db = Db::connect(&settings).await?;
        let applied = db.prepare(settings.supabase.is_some()).await?;
        if applied > 0 {
            tracing::info!(applied, backend = db.backend().as_str(), "database migrated");
        }
        let state = Self::new(db, settings)?;
        // The email-link key exists before any transaction needs it (SQLite has one writer).
        state.link_key.get(&state.db).await?;
        Ok(state)
    }

    /// State over an existing pool, without migrating (tests use this to see `/ready` say 503).
    pub fn new(db: Db, settings: Settings) -> anyhow::Result<Self> {
        install_constraints();
        let auth = Arc::new(crate::auth::Auth::new(&settings)?);
        Ok(Self(Arc::new(Shared {
            db,
            auth,
            metrics: metrics_handle(),
            started_at: Instant::now(),
            job_wakeup: Arc::new(tokio::sync::Notify::new()),
            workflows: Arc::new(crate::workflows::builtin()),
            ai: Arc::new(crate::workflows::ai::Gateway::new(&settings.ai)?),
            mailer: Arc::new(crate::messaging::transport::Mailer::new(&settings.email.transport)?),
            request_limiter: Arc::new(ratelimit::RateLimiter::new(
                settings.rate_limit_per_minute,
                std::time::Duration::from_secs(60),
            )),
            link_key: Arc::default(),
            lesson_pages: Arc::default(),
            read_log: Arc::default(),
            settings: Arc::new(settings),
        })))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Changing a part (tests swap in their own workflows or settings) changes this copy only,
/// as with any cloned value.
impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }
}

impl AppState {
    /// The group-commit writer of staff reads' audit entries.
    pub fn read_log(&self) -> &crate::privacy::read_log::ReadLog {
        self.read_log.get_or_init(|| crate::privacy::read_log::ReadLog::start(self.db.clone()))
    }
}

/// Every slice's constraints, so a violation anywhere maps to the domain error its slice
/// declared (see `db::Constraint`).
pub fn install_constraints() {
    static ALL: &[&[crate::db::Constraint]] = &[
        idempotency::CONSTRAINTS,
        crate::auth::CONSTRAINTS,
        crate::people::CONSTRAINTS,
        crate::scheduling::CONSTRAINTS,
        crate::billing::CONSTRAINTS,
        crate::school_year::CONSTRAINTS,
    ];
    crate::db::install_constraints(ALL);
}

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const LATENCY_BUCKETS: &[f64] =
                &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours stays empty,
            // which `/metrics` would show plainly.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Cedar API",
        description = "Backend of Cedar Heights Music Academy. Errors are RFC 9457 \
            `application/problem+json`; mutating requests accept an `Idempotency-Key` header.",
        license(name = "MIT"),
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    modifiers(&BearerAuth),
    tags(
        (name = "auth", description = "Supabase-compatible sign-up, sign-in, tokens (GoTrue error shape)"),
        (name = "me", description = "The signed-in user and their sessions"),
        (name = "users", description = "Accounts and roles (admin)"),
        (name = "families", description = "Households, guardians and payee"),
        (name = "students", description = "Students, search and progress notes"),
        (name = "teachers", description = "The teaching roster"),
        (name = "rooms", description = "Teaching rooms"),
        (name = "enrollments", description = "Enrollment requests and decisions"),
        (name = "scheduling", description = "Availability, lessons, conflicts, attendance, makeup credits, calendars"),
        (name = "workflows", description = "Background jobs, workflow runs, the review inbox and AI usage"),
        (name = "billing", description = "Tuition rates, billing runs, invoices, payments, refunds, Stripe"),
        (name = "messaging", description = "Threads, email templates, the email outbox and email preferences"),
        (name = "privacy", description = "Audit trail"),
        (name = "tasks", description = "The owner's follow-up list; workflows add to it"),
        (name = "ops", description = "Health, readiness, metrics and API documentation"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the routes refer to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// All documented routes, before state and middleware.
pub(crate) fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(crate::ops::router())
        .merge(crate::auth::router())
        .merge(crate::people::router())
        .merge(crate::scheduling::router())
        .merge(crate::school_year::router())
        .merge(crate::jobs::api::router())
        .merge(crate::workflows::router())
        .merge(crate::messaging::router())
        .merge(crate::billing::router())
        .merge(crate::privacy::router())
        .merge(crate::tasks::router())
}

/// The OpenAPI document, generated from the route annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut api = api_router().split_for_parts().1;
    openapi::document_common_answers(&mut api);
    api
}

/// The complete HTTP application.
pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// The application plus `extra` routes, which get the same middleware stack (used by tests
/// to exercise the plumbing with probe handlers).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    let (routes, mut api) = api_router().split_for_parts();
    openapi::document_common_answers(&mut api);
    // The document is served as bytes made once: the structure behind it is most of what
    // building the routes allocates, and it is dropped here.
    let document = axum::body::Bytes::from(serde_json::to_vec(&api).expect("the OpenAPI document serializes"));
    drop(api);
    let routes = routes.merge(extra);
    // The console acts through the API in process: it gets its own copy of the API routes
    // with the full middleware stack (authentication, limits, idempotency).
    let internal = with_middleware(with_fallbacks(routes.clone()), &state);
    let serve_document = move || {
        let document = document.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document) }
    };
    let public = routes
        .route("/openapi.json", axum::routing::get(serve_document))
        .merge(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::from("/openapi.json")))
        .merge(crate::console::router(internal));
    with_middleware(with_fallbacks(public), &state)
}

/// Problem answers for unknown paths and methods.
fn with_fallbacks(routes: Router<AppState>) -> Router<AppState> {
    routes.fallback(middleware::not_found).method_not_allowed_fallback(middleware::method_not_allowed)
}

/// Cedar's middleware stack around `routes`.
fn with_middleware(routes: Router<AppState>, state: &AppState) -> Router {
    let body_limit = state.settings.body_limit_bytes;
    // Outermost first. Requests flow down this list, responses back up.
    // Layers that change body types are followed by a `Body::new` mapping so the
    // `from_fn` middleware around them all see plain `Request`/`Response`.
    let stack = ServiceBuilder::new()
        .layer(axum::middleware::from_fn(middleware::request_id))
        .layer(MapResponseBodyLayer::new(Body::new))
        .layer(middleware::trace_layer())
        .layer(axum::middleware::from_fn(middleware::catch_panic))
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .layer(middleware::cors_layer(&state.settings.cors_origins))
        .layer(axum::middleware::from_fn(middleware::security_headers))
        .layer(MapResponseBodyLayer::new(Body::new))
        .layer(CompressionLayer::new())
        .layer(axum::middleware::from_fn(middleware::problem_for_bare_errors))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::timeout))
        .layer(MapResponseBodyLayer::new(Body::new))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(MapRequestBodyLayer::new(Body::new))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn(middleware::reject_nul))
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::auth::authenticate))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::rate_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::middleware));

    routes.layer(stack).with_state(state.clone())
}

/// Runs the API until SIGTERM/SIGINT, then lets in-flight requests finish (up to the grace
/// period).
pub async fn serve(settings: Settings, no_worker: bool) -> anyhow::Result<()> {
    let addr = settings.addr;
    let grace = settings.shutdown_grace;
    let state = AppState::init(settings).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} (CEDAR_ADDR)"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        database = %state.settings.database_url,
        worker = !no_worker,
        "cedar is listening; API docs at /docs"
    );
    let housekeeping = tokio::spawn(memory::keep_bounded(state.clone()));
    let (stop_worker, worker_stopped) = tokio::sync::watch::channel(false);
    let worker = if no_worker { None } else { Some(tokio::spawn(jobs::start_worker(state.clone(), worker_stopped))) };
    let app = router(state.clone());
    // Building the routes allocated and freed the OpenAPI structures: give those pages back now.
    memory::trim_now().await;
    let result = run_until_shutdown(listener, app, shutdown_signal(), grace).await;
    let _ = stop_worker.send(true);
    if let Some(worker) = worker {
        match worker.await {
            Ok(Err(error)) => tracing::error!(error = %format!("{error:#}"), "worker failed"),
            Err(error) => tracing::error!(error = %error, "worker panicked"),
            Ok(Ok(())) => {}
        }
    }
    housekeeping.abort();
    state.db.close().await;
    tracing::info!("stopped");
    result
}

/// `cedar worker`: background jobs only, until SIGTERM/SIGINT.
pub async fn work(settings: Settings) -> anyhow::Result<()> {
    let state = AppState::init(settings).await?;
    tracing::info!(database = %state.settings.database_url, "cedar worker starting");
    let housekeeping = tokio::spawn(memory::keep_bounded(state.clone()));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(jobs::start_worker(state.clone(), stopped));
    shutdown_signal().await;
    let _ = stop.send(true);
    let result = worker.await?;
    housekeeping.abort();
    state.db.close().await;
    result
}

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting connections and
/// gives in-flight requests up to `grace` to finish.
pub async fn run_until_shutdown(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    grace: std::time::Duration,
) -> anyhow::Result<()> {
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight requests");
        let _ = signalled_tx.send(());
    });
    let mut server = tokio::spawn(server.into_future());
    tokio::select! {
        result = &mut server => result??,
        _ = signalled_rx => match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result??,
            Err(_) => {
                server.abort();
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing open connections");
            }
        },
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

impl crate::jobs::JobContext for AppState {
    fn db(&self) -> &Db {
        &self.db
    }

    fn job_wakeup(&self) -> Arc<tokio::sync::Notify> {
        self.job_wakeup.clone()
    }

    fn timezone(&self) -> chrono_tz::Tz {
        self.settings.timezone
    }
}
