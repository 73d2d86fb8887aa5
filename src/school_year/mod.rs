//! The school year as it unfolds: terms and re-enrollment for the next one, closures and time
//! off added after lessons were booked, withdrawals. See `docs/school-year.md`.

pub mod disruptions;
pub mod reenrollment;
pub mod terms;
pub mod withdrawal;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::db::{Constraint, ConstraintKind};
use crate::jobs::{JobError, Registry, Schedule};

pub fn router() -> OpenApiRouter<AppState> {
    terms::router().merge(reenrollment::router())
}

pub static CONSTRAINTS: &[Constraint] = &[Constraint {
    name: "terms_name_key",
    sqlite_columns: "terms.name",
    kind: ConstraintKind::Unique,
    field: "name",
    message: "A term with this name exists",
}];

/// The daily job: re-enrollment offers and withdrawals of declined places.
pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry.on("maintenance", "school_year.daily", |state: AppState, _job| async move {
        reenrollment::daily(&state).await.map(|_| ()).map_err(|e| JobError::Retry(format!("{e:#}")))
    })
}

pub fn schedules() -> Vec<Schedule> {
    vec![Schedule::new("school-year-daily", "maintenance", "school_year.daily", "30 6 * * *")]
}
