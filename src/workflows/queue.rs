//! Enqueueing jobs in the caller's transaction: the job exists if and only if the business
//! change that causes it committed (transactional outbox).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::db::Tx;
use crate::on_tx;

/// A job to run later.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: &'static str,
    pub kind: &'static str,
    pub payload: Value,
    pub run_at: DateTime<Utc>,
    /// Jobs with the same key are enqueued once.
    pub dedupe_key: Option<String>,
}

impl NewJob {
    pub fn now(queue: &'static str, kind: &'static str, payload: Value) -> Self {
        Self { queue, kind, payload, run_at: Utc::now(), dedupe_key: None }
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }
}

/// Inserts the job unless one with the same dedupe key exists; returns the new job's id.
pub async fn enqueue(tx: &mut Tx, job: NewJob) -> Result<Option<Uuid>, sqlx::Error> {
    const SQL: &str = "INSERT INTO jobs (id, queue, kind, payload, status, run_at, dedupe_key, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $7) ON CONFLICT DO NOTHING";
    let id = Uuid::now_v7();
    let inserted = on_tx!(tx, conn => sqlx::query(SQL)
        .bind(id).bind(job.queue).bind(job.kind).bind(SqlJson(&job.payload)).bind(job.run_at)
        .bind(&job.dedupe_key).bind(Utc::now())
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    Ok((inserted == 1).then_some(id))
}
