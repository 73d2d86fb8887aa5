//! Privacy (PIPEDA): the audit trail (`audit`, used by every slice), the consent register,
//! access requests (export), erasure, and retention (docs/privacy.md). Export and erasure
//! read and anonymise the records of every slice; they are the one place that does, and say
//! so next to each query.

pub mod audit;
pub mod consents;
pub mod erasure;
mod export;
pub mod read_log;
pub mod retention;
mod rows;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::jobs::{JobError, Registry, Schedule};

pub fn router() -> OpenApiRouter<AppState> {
    audit::router().merge(consents::router()).merge(export::router()).merge(erasure::router())
}

/// The daily retention purge.
pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry.on("maintenance", retention::PURGE, |state: AppState, _job| async move {
        retention::purge(&state, chrono::Utc::now()).await.map(|_| ()).map_err(|e| JobError::Retry(format!("{e:#}")))
    })
}

pub fn schedules() -> Vec<Schedule> {
    vec![Schedule::new("privacy-retention", "maintenance", retention::PURGE, "40 3 * * *")]
}
