//! Billing: tuition rates and modes, billing runs and invoices, payments and refunds, Stripe
//! checkout and webhooks (docs/billing.md). Money is integer cents, CAD.

pub mod checkout_sessions;
pub mod inquiries;
pub mod invoices;
pub mod issues;
pub mod money;
pub mod payments;
mod rates;
pub mod runs;
pub mod stripe;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;
use crate::config::Settings;
use crate::jobs::{JobError, Registry, Schedule};

pub const QUEUE: &str = "billing";

/// Constraint violations of this slice, as domain errors (see `db::CONSTRAINTS`).
pub static CONSTRAINTS: &[crate::db::Constraint] = &[crate::db::Constraint {
    name: "tuition_rates_key",
    sqlite_columns: "",
    kind: crate::db::ConstraintKind::Unique,
    field: "lesson_minutes",
    message: "A rate for this lesson length, teacher and instrument already exists",
}];

pub fn router() -> OpenApiRouter<AppState> {
    invoices::router()
        .merge(inquiries::router())
        .merge(rates::router())
        .merge(runs::router())
        .merge(payments::router())
        .merge(stripe::router())
}

/// The job handlers of this slice.
pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry
        .on(QUEUE, stripe::EVENT, |state: AppState, job| async move { stripe::apply(&state, &job).await })
        .on(QUEUE, "billing.monthly_run", |state: AppState, _job| async move {
            runs::monthly_run(&state).await.map_err(|e| JobError::Retry(format!("{e:#}")))
        })
        .on(QUEUE, "billing.daily", |state: AppState, _job| async move {
            runs::daily(&state).await.map(|_| ()).map_err(|e| JobError::Retry(format!("{e:#}")))
        })
        .on(QUEUE, "billing.overdue_issues", |state: AppState, _job| async move {
            let days = state.settings.payment_issue_overdue_days;
            issues::overdue_runs(&state, days).await.map(|_| ()).map_err(|e| JobError::Retry(format!("{e:#}")))
        })
        .on(QUEUE, issues::RETRY_CHARGE, |state: AppState, job| async move { issues::retry_charge(&state, &job).await })
        .on(QUEUE, issues::INSTALMENT_REMINDER, |state: AppState, job| async move {
            issues::instalment_reminder(&state, &job).await
        })
        .on(QUEUE, issues::FOLLOW_UP, |state: AppState, job| async move { issues::follow_up(&state, &job).await })
}

/// The monthly run on `CEDAR_BILLING_DAY` at 06:00, late fees and reminders daily at 07:00,
/// overdue invoices handed to the payment_issue workflow at 07:30 (school zone).
pub fn schedules(settings: &Settings) -> Vec<Schedule> {
    let day = settings.billing.billing_day;
    vec![
        Schedule::new("billing-monthly-run", QUEUE, "billing.monthly_run", format!("0 6 {day} * *")),
        Schedule::new("billing-daily", QUEUE, "billing.daily", "0 7 * * *"),
        Schedule::new("billing-overdue-issues", QUEUE, "billing.overdue_issues", "30 7 * * *"),
    ]
}
