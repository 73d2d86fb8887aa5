//! Durable background work: the job queue (enqueue in the business transaction, claim with
//! `SKIP LOCKED`, leases, backoff, dead jobs), recurring schedules and the worker. The
//! workflow engine, review inbox and AI providers build on this (see docs/workflows.md).

pub mod cron;
mod jobs_api;
pub mod queue;
pub mod worker;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    jobs_api::router()
}
