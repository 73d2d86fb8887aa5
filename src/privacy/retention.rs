//! Retention: personal data Cedar no longer needs is purged daily (`privacy.retention`, 03:40
//! school time), each kind after its own period (settings; docs/privacy.md says why each).

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::audit::{self, AuditEvent};
use crate::app::AppState;
use crate::{on_db, on_tx};

pub const PURGE: &str = "privacy.retention";

pub use crate::config::Retention;

fn years(n: u32) -> Duration {
    Duration::days(365 * i64::from(n))
}

/// Purges what is due at `now`; returns what was purged, by kind.
pub async fn purge(state: &AppState, now: DateTime<Utc>) -> anyhow::Result<Value> {
    let policy = state.settings.retention;
    let outbox_cutoff = now - Duration::days(i64::from(policy.outbox_days));
    let ai_cutoff = now - Duration::days(i64::from(policy.ai_days));
    let audit_cutoff = now - years(policy.audit_years);
    let family_cutoff = now - years(policy.former_family_years);
    const OUTBOX: &str = "UPDATE outbox SET subject = '[purged]', body = '[purged]' WHERE status IN ('sent', 'dead') \
        AND created_at < $1 AND body <> '[purged]'";
    const AI: &str = "UPDATE workflow_steps SET input = NULL, output = NULL WHERE kind = 'ai' AND finished_at < $1 \
        AND (input IS NOT NULL OR output IS NOT NULL) \
        AND run_id IN (SELECT id FROM workflow_runs WHERE status IN ('succeeded', 'failed', 'cancelled'))";
    const AUDIT: &str = "DELETE FROM audit_log WHERE occurred_at < $1";
    const FORMER: &str = "SELECT f.id FROM families f WHERE f.erased_at IS NULL AND f.created_at < $1 \
        AND NOT EXISTS (SELECT 1 FROM students s WHERE s.family_id = f.id AND s.status IN ('active', 'waitlisted')) \
        AND NOT EXISTS (SELECT 1 FROM lessons l JOIN students s ON s.id = l.student_id WHERE s.family_id = f.id \
            AND l.starts_at >= $1) \
        AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.family_id = f.id \
            AND (i.status IN ('open', 'partially_paid') OR i.issued_at >= $1)) \
        ORDER BY f.id LIMIT 100";
    let db = &state.db;
    let outbox =
        on_db!(db, pool => sqlx::query(OUTBOX).bind(outbox_cutoff).execute(pool).await.map(|r| r.rows_affected()))?;
    let ai = on_db!(db, pool => sqlx::query(AI).bind(ai_cutoff).execute(pool).await.map(|r| r.rows_affected()))?;
    let audit_entries =
        on_db!(db, pool => sqlx::query(AUDIT).bind(audit_cutoff).execute(pool).await.map(|r| r.rows_affected()))?;
    let former: Vec<Uuid> = on_db!(db, pool => sqlx::query_scalar(FORMER).bind(family_cutoff).fetch_all(pool).await)?;
    for family in &former {
        let mut tx = db.begin().await?;
        let summary = super::erasure::erase(&mut tx, *family, now).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        const RECORD: &str = "INSERT INTO erasure_requests (id, family_id, status, reason, requested_at, completed_at) \
            VALUES ($1, $2, 'completed', $3, $4, $4)";
        let reason = format!("retention: no activity for {} years", policy.former_family_years);
        on_tx!(&mut tx, conn => sqlx::query(RECORD).bind(Uuid::now_v7()).bind(family).bind(reason).bind(now)
            .execute(&mut **conn).await.map(|_| ()))?;
        let event = AuditEvent::new("privacy.erased").subject("family", family).details(summary);
        audit::record_tx(&mut tx, event).await?;
        tx.commit().await?;
    }
    let purged = json!({"email_bodies": outbox, "ai_steps": ai, "audit_entries": audit_entries,
        "former_families": former.len()});
    if purged.as_object().is_some_and(|o| o.values().any(|v| v.as_u64() != Some(0))) {
        audit::record(db, AuditEvent::new("privacy.retention_purged").details(purged.clone())).await?;
    }
    Ok(purged)
}
