//! Durable AI-assisted workflows on top of the job queue (`crate::jobs`): the engine
//! (checkpointed steps, retries, fallbacks, review), the review inbox, the AI gateway, and the
//! built-in workflow definitions (see docs/workflows.md).

pub mod ai;
pub mod definition;
pub mod engine;
pub mod enrollment;
pub mod payment_issue;
pub mod practice_plan;
pub mod reviews;
mod runs_api;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

pub use engine::jobs;

/// The workflows this build runs. A new workflow is a module here and a line in this list.
pub fn builtin() -> engine::Definitions {
    engine::Definitions::default()
        .with(practice_plan::workflow())
        .with(enrollment::workflow())
        .with(payment_issue::workflow())
}

pub fn router() -> OpenApiRouter<AppState> {
    runs_api::router().merge(reviews::router())
}
