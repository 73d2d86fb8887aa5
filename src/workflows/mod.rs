//! Durable AI-assisted workflows on top of the job queue (`crate::jobs`): the engine
//! (checkpointed steps, retries, fallbacks, review), the review inbox, the AI gateway, and the
//! built-in workflow definitions (see docs/workflows.md).

pub mod ai;
pub mod definition;
pub mod engine;
pub mod enrollment;
pub mod payment_issue;
pub mod practice_plan;
pub mod progress_report;
mod progress_reports;
pub mod reviews;
mod runs_api;
pub mod schedule_review;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The engine's job handlers and those of the workflows' own jobs.
pub fn jobs(registry: crate::jobs::Registry<AppState>) -> crate::jobs::Registry<AppState> {
    schedule_review::jobs(progress_report::jobs(engine::jobs(registry)))
}

/// Recurring schedules of the workflows (progress reports monthly, reminders daily, the
/// schedule review weekly).
pub fn schedules(settings: &crate::config::Settings) -> Vec<crate::jobs::Schedule> {
    let mut all = progress_report::schedules();
    all.extend(schedule_review::schedules(settings));
    all
}

/// The workflows this build runs. A new workflow is a module here and a line in this list.
pub fn builtin() -> engine::Definitions {
    engine::Definitions::default()
        .with(practice_plan::workflow())
        .with(enrollment::workflow())
        .with(payment_issue::workflow())
        .with(progress_report::workflow())
        .with(schedule_review::workflow())
}

pub fn router() -> OpenApiRouter<AppState> {
    runs_api::router().merge(reviews::router()).merge(progress_reports::router())
}
