//! Operations endpoints: liveness, readiness, Prometheus metrics.
//! (`/openapi.json` and `/docs` are mounted by the router from the same annotations.)

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::AppState;
use crate::error::ApiError;
use crate::http::Json;
use crate::jobs::{JobError, Registry, Schedule};

pub mod backup;
pub mod notify;

/// The scheduled backup and the owner's digest and alerts.
pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    let retry = |e: anyhow::Error| JobError::Retry(format!("{e:#}"));
    registry
        .on("maintenance", "ops.backup", move |state: AppState, _job| async move {
            backup::scheduled(&state).await.map_err(retry)
        })
        .on("maintenance", "ops.owner_digest", move |state: AppState, _job| async move {
            notify::send_digest(&state).await.map(|_| ()).map_err(retry)
        })
        .on("maintenance", "ops.owner_alerts", move |state: AppState, _job| async move {
            notify::send_alerts(&state).await.map(|_| ()).map_err(retry)
        })
}

pub fn schedules(settings: &crate::config::Settings) -> Vec<Schedule> {
    let ops = &settings.operations;
    let mut all = Vec::new();
    if ops.backup_dir.is_some() {
        all.push(Schedule::new("ops-backup", "maintenance", "ops.backup", ops.backup_cron.clone()));
    }
    if let Some(cron) = &ops.owner_digest_cron {
        all.push(Schedule::new("ops-owner-digest", "maintenance", "ops.owner_digest", cron.clone()));
    }
    if ops.owner_alerts {
        all.push(Schedule::new("ops-owner-alerts", "maintenance", "ops.owner_alerts", "*/10 * * * *"));
    }
    all
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready)).routes(routes!(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the process answers.
    status: &'static str,
    version: &'static str,
    uptime_seconds: u64,
}

/// Liveness: the process is up and serving HTTP. Does not touch the database.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        uptime_seconds: state.started_at.elapsed().as_secs(),
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`.
    status: &'static str,
    /// `sqlite` or `postgres`.
    database: &'static str,
    /// Migrations applied.
    migrations: usize,
}

/// Readiness: the database answers and every migration this binary knows is applied.
#[utoipa::path(get, path = "/ready", tag = "ops", responses(
    (status = 200, body = Readiness),
    (status = 503, description = "Database unreachable or not migrated", body = crate::error::Problem, content_type = "application/problem+json"),
))]
async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    match state.db.check_ready().await {
        Ok(migrations) => Ok(Json(Readiness { status: "ready", database: state.db.backend().as_str(), migrations })),
        Err(reason) => {
            tracing::warn!(reason, "not ready");
            Err(ApiError::Unavailable(reason))
        }
    }
}

/// Prometheus text exposition: HTTP requests by route and status, latency histograms,
/// database pool usage.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
    (status = 401, description = "CEDAR_METRICS_TOKEN is set and the request does not carry it")))]
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = &state.settings.metrics_token {
        let given =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: the token is a secret.
        let matches = given.is_some_and(|g| {
            g.len() == expected.expose().len()
                && g.bytes().zip(expected.expose().bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !matches {
            return ApiError::Unauthorized("/metrics needs the metrics bearer token".into()).into_response();
        }
    }
    let (in_use, idle) = state.db.pool_usage();
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(f64::from(in_use));
    metrics::gauge!("db_pool_connections", "state" => "idle").set(f64::from(idle));
    metrics::gauge!("process_uptime_seconds").set(state.started_at.elapsed().as_secs_f64());
    if let Ok(depths) = crate::jobs::queue::depth(&state.db).await {
        let now = chrono::Utc::now();
        for (queue, status, count, oldest) in depths {
            metrics::gauge!("jobs", "queue" => queue.clone(), "status" => status.clone()).set(count as f64);
            if status == "queued" {
                let age = oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
                metrics::gauge!("jobs_oldest_queued_age_seconds", "queue" => queue).set(age);
            }
        }
    }
    if let Ok(open) = crate::workflows::engine::open_runs(&state.db).await {
        // Every known workflow gets all three gauges, so a count that drops to 0 shows 0.
        let mut names: Vec<String> = state.workflows.all().iter().map(|w| w.name.to_owned()).collect();
        names.extend(open.iter().map(|(w, _, _)| w.clone()));
        names.sort();
        names.dedup();
        for workflow in names {
            for status in ["pending", "running", "waiting_for_review"] {
                let count = open.iter().find(|(w, s, _)| *w == workflow && s == status).map_or(0, |(_, _, n)| *n);
                metrics::gauge!("workflow_runs_open", "workflow" => workflow.clone(), "status" => status)
                    .set(count as f64);
            }
        }
    }
    // What /ready answers, for the alert rules (a scrape reaches this process only).
    metrics::gauge!("cedar_ready").set(if state.db.check_ready().await.is_ok() { 1.0 } else { 0.0 });
    if let Ok(spent) = state.ai.month_spend(&state).await {
        metrics::gauge!("ai_month_spend_cad").set(spent as f64 / 1e6);
        metrics::gauge!("ai_monthly_budget_cad").set(state.ai.monthly_budget_micros() as f64 / 1e6);
    }
    const OUTBOX: &str = "SELECT status, COUNT(*) FROM outbox GROUP BY status";
    if let Ok(rows) = crate::on_db!(&state.db, pool => sqlx::query_as::<_, (String, i64)>(OUTBOX).fetch_all(pool).await)
    {
        for status in ["queued", "sent", "dead"] {
            let n = rows.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
            metrics::gauge!("outbox_emails", "status" => status).set(n as f64);
        }
    }
    state.metrics.run_upkeep();
    let mut response = state.metrics.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
