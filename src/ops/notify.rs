//! Telling the owner when something needs them, by email to every active admin: a daily
//! digest (`CEDAR_OWNER_DIGEST_CRON`) and, checked every ten minutes, alerts for what cannot
//! wait — the AI budget at 80 % and 100 % (once per month each), jobs that died, and Stripe
//! webhooks failing their signature check repeatedly (once per hour each). Dedupe keys make
//! every email go out once however often the checks run.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::AppState;
use crate::on_db;

/// What the owner should look at today.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Digest {
    pub reviews_waiting: i64,
    /// Hours the oldest waiting review has waited.
    pub oldest_review_hours: i64,
    pub tasks_overdue: i64,
    pub tasks_open: i64,
    pub jobs_dead: i64,
    pub emails_dead: i64,
    /// Card payments that failed in the last day.
    pub payments_failed: i64,
    pub ai_spent_cad: String,
    pub ai_budget_cad: String,
    pub ai_percent: i64,
}

async fn count(state: &AppState, sql: &'static str, since: Option<DateTime<Utc>>) -> anyhow::Result<i64> {
    Ok(match since {
        Some(since) => on_db!(&state.db, pool => sqlx::query_scalar::<_, i64>(sql).bind(since).fetch_one(pool).await)?,
        None => on_db!(&state.db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await)?,
    })
}

pub async fn digest(state: &AppState) -> anyhow::Result<Digest> {
    let now = Utc::now();
    let today = crate::time::today(state.settings.timezone);
    const OLDEST: &str = "SELECT MIN(created_at) FROM reviews WHERE status = 'pending'";
    let oldest: Option<DateTime<Utc>> = on_db!(&state.db, pool => sqlx::query_scalar(OLDEST).fetch_one(pool).await)?;
    const OVERDUE: &str = "SELECT COUNT(*) FROM tasks WHERE status = 'open' AND due_on < $1";
    let overdue: i64 = on_db!(&state.db, pool => sqlx::query_scalar(OVERDUE).bind(today).fetch_one(pool).await)?;
    let spent = state.ai.month_spend(state).await?;
    let budget = state.ai.monthly_budget_micros();
    Ok(Digest {
        reviews_waiting: count(state, "SELECT COUNT(*) FROM reviews WHERE status = 'pending'", None).await?,
        oldest_review_hours: oldest.map_or(0, |t| (now - t).num_hours()),
        tasks_overdue: overdue,
        tasks_open: count(state, "SELECT COUNT(*) FROM tasks WHERE status = 'open'", None).await?,
        jobs_dead: count(state, "SELECT COUNT(*) FROM jobs WHERE status = 'dead'", None).await?,
        emails_dead: count(state, "SELECT COUNT(*) FROM outbox WHERE status = 'dead'", None).await?,
        payments_failed: count(
            state,
            "SELECT COUNT(*) FROM stripe_events WHERE type = 'payment_intent.payment_failed' AND received_at >= $1",
            Some(now - Duration::days(1)),
        )
        .await?,
        ai_spent_cad: format!("{:.2}", spent as f64 / 1e6),
        ai_budget_cad: format!("{:.2}", budget as f64 / 1e6),
        ai_percent: if budget > 0 { spent * 100 / budget } else { 0 },
    })
}

/// Emails `template` to every active admin, once per `key`. Returns how many were queued.
async fn email_admins(state: &AppState, template: &'static str, vars: Value, key: &str) -> anyhow::Result<usize> {
    const ADMINS: &str = "SELECT id FROM users WHERE role = 'admin' AND status = 'active' ORDER BY id";
    let admins: Vec<Uuid> = on_db!(&state.db, pool => sqlx::query_scalar(ADMINS).fetch_all(pool).await)?;
    let mut tx = state.db.begin().await?;
    let mut queued = 0;
    for admin in admins {
        let dedupe = Some(format!("{key}:{admin}"));
        let sent = crate::messaging::email_user(&mut tx, &state.settings, admin, template, vars.clone(), dedupe)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        queued += usize::from(sent.is_some());
    }
    tx.commit().await?;
    if queued > 0 {
        state.job_wakeup.notify_one();
    }
    Ok(queued)
}

/// The daily digest, once per day.
pub async fn send_digest(state: &AppState) -> anyhow::Result<usize> {
    let digest = digest(state).await?;
    let today = crate::time::today(state.settings.timezone);
    let mut vars = serde_json::to_value(&digest)?;
    vars["date"] = json!(today.to_string());
    email_admins(state, "owner_digest", vars, &format!("owner-digest:{today}")).await
}

/// One alert: a stable key (what and when, so it goes out once) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub key: String,
    pub title: String,
    pub detail: String,
}

/// What cannot wait, as of now.
pub async fn alerts(state: &AppState) -> anyhow::Result<Vec<Alert>> {
    let now = Utc::now();
    let local = now.with_timezone(&state.settings.timezone);
    let month = local.format("%Y-%m").to_string();
    let hour = local.format("%Y-%m-%dT%H").to_string();
    let mut out = Vec::new();
    let budget = state.ai.monthly_budget_micros();
    if budget > 0 {
        let spent = state.ai.month_spend(state).await?;
        let percent = spent * 100 / budget;
        for threshold in [100, 80] {
            if percent >= threshold {
                out.push(Alert {
                    key: format!("alert:ai-budget-{threshold}:{month}"),
                    title: format!("AI spending has reached {threshold} % of this month's budget"),
                    detail: format!(
                        "CAD {:.2} of {:.2} spent this month.{}",
                        spent as f64 / 1e6,
                        budget as f64 / 1e6,
                        if threshold == 100 {
                            " Workflows now draft with Cedar's own templates (offline) until next month; raise CEDAR_AI_MONTHLY_BUDGET_CAD to resume."
                        } else {
                            ""
                        }
                    ),
                });
                break;
            }
        }
    }
    const DEAD: &str = "SELECT COUNT(*) FROM jobs WHERE status = 'dead' AND updated_at >= $1";
    let dead: i64 =
        on_db!(&state.db, pool => sqlx::query_scalar(DEAD).bind(now - Duration::minutes(60)).fetch_one(pool).await)?;
    if dead > 0 {
        out.push(Alert {
            key: format!("alert:jobs-dead:{hour}"),
            title: format!("{dead} background job(s) died in the last hour"),
            detail: "They exhausted their retries. GET /v1/jobs?status=dead shows why; POST /v1/jobs/{id}/retry runs one again.".into(),
        });
    }
    const REJECTED: &str =
        "SELECT COUNT(*) FROM audit_log WHERE action = 'stripe.webhook_rejected' AND occurred_at >= $1";
    let rejected: i64 = on_db!(&state.db, pool => sqlx::query_scalar(REJECTED).bind(now - Duration::minutes(60)).fetch_one(pool).await)?;
    let threshold = i64::from(state.settings.operations.webhook_failure_alert);
    if threshold > 0 && rejected >= threshold {
        out.push(Alert {
            key: format!("alert:webhook-signature:{hour}"),
            title: format!("{rejected} Stripe webhook deliveries failed the signature check in the last hour"),
            detail: "Payments may not be recorded. Check STRIPE_WEBHOOK_SECRET against the endpoint's signing secret in the Stripe dashboard.".into(),
        });
    }
    if let Some(stale) = backup_overdue(state, now)? {
        out.push(stale);
    }
    Ok(out)
}

/// With scheduled backups on, an alert when the newest backup is more than 26 hours old (the
/// daily job failed or the worker is down), once per day.
fn backup_overdue(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<Option<Alert>> {
    let Some(dir) = &state.settings.operations.backup_dir else { return Ok(None) };
    let newest = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("cedar-"))
                .filter_map(|e| e.metadata().and_then(|m| m.modified()).ok())
                .max()
        })
        .unwrap_or(None);
    let age = newest.map(|t| now - DateTime::<Utc>::from(t));
    if age.is_some_and(|a| a < Duration::hours(26)) {
        return Ok(None);
    }
    let day = now.with_timezone(&state.settings.timezone).format("%Y-%m-%d");
    Ok(Some(Alert {
        key: format!("alert:backup-overdue:{day}"),
        title: "No database backup in the last 26 hours".into(),
        detail: match age {
            Some(age) => format!(
                "The newest backup in {} is {} hours old. Check the worker's log for ops.backup errors (disk space, pg_dump).",
                dir.display(),
                age.num_hours()
            ),
            None => format!("{} holds no backup yet. Check the worker's log for ops.backup errors.", dir.display()),
        },
    }))
}

/// Emails each current alert once; returns how many emails were queued.
pub async fn send_alerts(state: &AppState) -> anyhow::Result<usize> {
    let mut queued = 0;
    for alert in alerts(state).await? {
        let vars = json!({"title": alert.title, "detail": alert.detail});
        queued += email_admins(state, "owner_alert", vars, &alert.key).await?;
    }
    Ok(queued)
}
