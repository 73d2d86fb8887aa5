//! Durable background work: the job queue (enqueue in the business transaction, claim with
//! `SKIP LOCKED`, leases, backoff, dead jobs), recurring schedules and the worker. The
//! workflow engine, review inbox and AI providers build on this (see docs/workflows.md).

pub mod ai;
pub mod cron;
pub mod engine;
pub mod enrollment;
mod jobs_api;
pub mod practice_plan;
pub mod queue;
pub mod reviews;
mod runs_api;
pub mod worker;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// Every job handler a worker runs: housekeeping and the workflow engine.
pub fn registry() -> worker::Registry {
    crate::billing::register(crate::messaging::register(engine::register(worker::Registry::standard())))
}

pub fn router() -> OpenApiRouter<AppState> {
    jobs_api::router().merge(runs_api::router()).merge(reviews::router())
}
