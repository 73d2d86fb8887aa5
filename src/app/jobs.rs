//! The one place that gathers every job handler and recurring schedule: the queue's own
//! housekeeping, then each slice's, then the workflow engine's. A new job kind is declared in
//! its slice (`jobs`/`schedules`) and added here.

use super::AppState;
use crate::config::Settings;
use crate::jobs::{self, JobError, Registry, Schedule};

/// Every job handler a worker runs.
pub fn registry() -> Registry<AppState> {
    let registry =
        jobs::worker::register(Registry::new()).on(
            "maintenance",
            "idempotency.purge",
            |state: AppState, _job| async move {
                super::idempotency::purge_expired(&state.db).await.map(|_| ()).map_err(retry)
            },
        );
    let registry = crate::auth::jobs(registry);
    let registry = crate::scheduling::jobs(registry);
    let registry = crate::school_year::jobs(registry);
    let registry = crate::ops::jobs(registry);
    let registry = crate::messaging::jobs(registry);
    let registry = crate::billing::jobs(registry);
    let registry = crate::privacy::jobs(registry);
    crate::workflows::jobs(registry)
}

/// Every recurring schedule, in the school's zone.
pub fn schedules(settings: &Settings) -> Vec<Schedule> {
    let mut all = jobs::worker::schedules();
    all.push(Schedule::new("idempotency-purge", "maintenance", "idempotency.purge", "17 * * * *"));
    all.extend(crate::scheduling::schedules());
    all.extend(crate::school_year::schedules());
    all.extend(crate::ops::schedules(settings));
    all.extend(crate::messaging::schedules());
    all.extend(crate::billing::schedules(settings));
    all.extend(crate::privacy::schedules());
    all.extend(crate::workflows::schedules(settings));
    all
}

/// Installs the schedules and runs the worker until `stop` turns true.
pub async fn start_worker(state: AppState, stop: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<()> {
    for schedule in schedules(&state.settings) {
        let Schedule { name, queue, kind, cron } = schedule;
        jobs::worker::upsert_schedule(&state, &name, &queue, &kind, &cron, serde_json::json!({})).await?;
    }
    let options = jobs::worker::WorkerOptions {
        concurrency: state.settings.worker_concurrency,
        shutdown_grace: state.settings.shutdown_grace,
        ..jobs::worker::WorkerOptions::default()
    };
    let resumed = crate::workflows::engine::resume_pending(&state).await?;
    if resumed > 0 {
        tracing::info!(runs = resumed, "resuming pending workflow runs");
    }
    jobs::worker::run(state, registry(), options, stop).await
}

fn retry(error: impl std::fmt::Display) -> JobError {
    JobError::Retry(format!("{error:#}"))
}
