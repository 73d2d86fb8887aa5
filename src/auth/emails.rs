//! Emails that carry one-time links: sign-up confirmation and password recovery requested
//! by the public. Links never rest in the outbox body (see `messaging::email_user_with_link`).
//!
//! A recovery request is handled by a job, so `POST /auth/v1/recover` does the same work
//! (one queued job) whether or not the address has an account: its timing reveals nothing.

use chrono::Duration;
use serde_json::json;
use uuid::Uuid;

use super::store::{self, OneTimePurpose, UserRecord};
use crate::app::AppState;
use crate::config::Settings;
use crate::db::Tx;
use crate::error::ApiResult;
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::{JobError, Registry};
use crate::privacy::audit::{self, AuditEvent};

pub const QUEUE: &str = "email";
pub const RECOVER: &str = "auth.recover";

/// How long a sign-up confirmation link works.
pub const CONFIRM_VALID_FOR: Duration = Duration::days(7);

pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry.on(QUEUE, RECOVER, |state: AppState, job| async move { send_recovery(&state, &job).await })
}

/// Queues the confirmation email of a new open sign-up.
pub async fn send_signup_confirmation(tx: &mut Tx, settings: &Settings, user: Uuid) -> ApiResult<()> {
    let (token, _) = store::issue_one_time_token(tx, user, OneTimePurpose::Signup, CONFIRM_VALID_FOR).await?;
    let link = format!("{}/auth/v1/verify?type=signup&token={token}", settings.public_url);
    let vars = json!({"valid_days": CONFIRM_VALID_FOR.num_days()});
    crate::messaging::email_user_with_link(tx, settings, user, "confirm_signup", vars, link).await?;
    Ok(())
}

/// Queues a recovery request for `email` (already validated), whoever asks.
pub async fn request_recovery(tx: &mut Tx, email: &str, ip: &str) -> Result<(), sqlx::Error> {
    queue::enqueue(tx, NewJob::now(QUEUE, RECOVER, json!({"email": email, "ip": ip})).max_attempts(5)).await?;
    Ok(())
}

/// The `auth.recover` job: emails a reset link when the address belongs to an active account.
async fn send_recovery(state: &AppState, job: &Job) -> Result<(), JobError> {
    let retry = |e: &dyn std::fmt::Display| JobError::Retry(e.to_string());
    let email = job.payload.0["email"].as_str().unwrap_or_default();
    let ip = job.payload.0["ip"].as_str().unwrap_or_default();
    let Some(user) = store::user_by_email(&state.db, email).await.map_err(|e| retry(&e))?.filter(UserRecord::is_active)
    else {
        return Ok(());
    };
    let mut tx = state.db.begin().await.map_err(|e| retry(&e))?;
    let valid_for = super::users::RESET_VALID_FOR;
    let (token, _) = store::issue_one_time_token(&mut tx, user.id, OneTimePurpose::Recovery, valid_for)
        .await
        .map_err(|e| retry(&e))?;
    let link = format!("{}/auth/v1/verify?type=recovery&token={token}", state.settings.public_url);
    let vars = json!({"valid_hours": valid_for.num_hours()});
    crate::messaging::email_user_with_link(&mut tx, &state.settings, user.id, "password_reset", vars, link)
        .await
        .map_err(|e| retry(&e))?;
    let event = AuditEvent::new("auth.password_reset_requested").subject("user", user.id);
    audit::record_tx(&mut tx, event.details(json!({"ip": ip}))).await.map_err(|e| retry(&e))?;
    tx.commit().await.map_err(|e| retry(&e))?;
    Ok(())
}
