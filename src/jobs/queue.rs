//! The job queue, in the database. Jobs are enqueued in the caller's transaction (they exist
//! if and only if the business change committed), claimed with `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL (SQLite serialises writers), leased (a crashed worker's job is claimed again
//! when its lease runs out), retried with exponential backoff and jitter, and `dead` after
//! `max_attempts` (visible and retryable by an admin).

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::db::{Db, Tx, TxConn};
use crate::{on_db, on_tx};

crate::text_enum! {
    /// Where a job is in its life.
    pub enum JobStatus {
        Queued = "queued",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Dead = "dead",
        Cancelled = "cancelled",
    }
}

/// PostgreSQL channel that wakes workers when a job is enqueued (delivered at commit).
pub const NOTIFY_CHANNEL: &str = "cedar_jobs";

/// A job to run later.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub queue: String,
    pub kind: String,
    pub payload: Value,
    pub run_at: DateTime<Utc>,
    /// Jobs with the same key are enqueued once.
    pub dedupe_key: Option<String>,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn now(queue: impl Into<String>, kind: impl Into<String>, payload: Value) -> Self {
        Self { queue: queue.into(), kind: kind.into(), payload, run_at: Utc::now(), dedupe_key: None, max_attempts: 10 }
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn at(mut self, run_at: DateTime<Utc>) -> Self {
        self.run_at = run_at;
        self
    }

    pub fn max_attempts(mut self, attempts: i32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }
}

/// Inserts the job unless one with the same dedupe key exists; returns the new job's id.
pub async fn enqueue(tx: &mut Tx, job: NewJob) -> Result<Option<Uuid>, sqlx::Error> {
    const SQL: &str = "INSERT INTO jobs (id, queue, kind, payload, status, max_attempts, run_at, dedupe_key, created_at, \
        updated_at) VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $8) ON CONFLICT DO NOTHING";
    let id = Uuid::now_v7();
    let inserted = on_tx!(tx, conn => sqlx::query(SQL)
        .bind(id).bind(&job.queue).bind(&job.kind).bind(SqlJson(&job.payload)).bind(job.max_attempts).bind(job.run_at)
        .bind(&job.dedupe_key).bind(Utc::now())
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if let TxConn::Postgres(conn) = tx.conn_mut() {
        sqlx::query("SELECT pg_notify($1, $2)").bind(NOTIFY_CHANNEL).bind(&job.queue).execute(&mut **conn).await?;
    }
    Ok((inserted == 1).then_some(id))
}

/// A claimed job.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub queue: String,
    pub kind: String,
    pub payload: SqlJson<Value>,
    /// Including this one.
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
}

/// Claims up to `limit` runnable jobs of `queue` for `worker`, leasing them until
/// `now + lease`, oldest first.
pub async fn claim(db: &Db, queue: &str, worker: &str, limit: i64, lease: Duration) -> Result<Vec<Job>, sqlx::Error> {
    const PICK: &str =
        "SELECT id FROM jobs WHERE queue = $4 AND status = 'queued' AND run_at <= $3 ORDER BY run_at LIMIT $5";
    let now = Utc::now();
    let lock = match db {
        Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        Db::Sqlite(_) => "",
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, updated_at = $3 \
         WHERE id IN ({PICK}{lock}) RETURNING id, queue, kind, payload, attempts, max_attempts, created_at"
    ));
    match db {
        Db::Sqlite(pool) => {
            sqlx::query_as::<_, Job>(sql)
                .bind(worker)
                .bind(now + lease)
                .bind(now)
                .bind(queue)
                .bind(limit)
                .fetch_all(pool)
                .await
        }
        Db::Postgres(pool) => {
            // A claim lost in a crash only puts the job back to `queued`, so its commit need
            // not wait for the disk; completions (which must not be lost) still do.
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL synchronous_commit TO OFF").execute(&mut *tx).await?;
            let jobs = sqlx::query_as::<_, Job>(sql)
                .bind(worker)
                .bind(now + lease)
                .bind(now)
                .bind(queue)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(jobs)
        }
    }
}

/// Like [`claim`], on a PostgreSQL connection the worker keeps for claiming, whose session
/// commits asynchronously (`SET synchronous_commit TO OFF`): one round trip per claim.
pub async fn claim_on(
    conn: &mut sqlx::PgConnection,
    queue: &str,
    worker: &str,
    limit: i64,
    lease: Duration,
) -> Result<Vec<Job>, sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET status = 'running', locked_by = $1, locked_until = $2, attempts = attempts + 1, \
        updated_at = $3 WHERE id IN (SELECT id FROM jobs WHERE queue = $4 AND status = 'queued' AND run_at <= $3 \
        ORDER BY run_at LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING id, queue, kind, payload, attempts, max_attempts, created_at";
    let now = Utc::now();
    sqlx::query_as::<_, Job>(SQL).bind(worker).bind(now + lease).bind(now).bind(queue).bind(limit).fetch_all(conn).await
}

/// A connection for [`claim_on`]: out of the pool (so its session setting never leaks to
/// other queries) and committing asynchronously.
pub async fn claim_connection(db: &Db) -> Option<sqlx::PgConnection> {
    let Db::Postgres(pool) = db else { return None };
    let mut conn = pool.acquire().await.ok()?.detach();
    sqlx::query("SET synchronous_commit TO OFF").execute(&mut conn).await.ok()?;
    Some(conn)
}

/// Puts jobs whose lease ran out (their worker died or hung) back in the queue, where the next
/// claim picks them up; their attempt stays counted. Returns how many.
pub async fn requeue_expired(db: &Db) -> Result<u64, sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, run_at = $1, \
        last_error = 'lease expired', updated_at = $1 WHERE status = 'running' AND locked_until < $1";
    on_db!(db, pool => sqlx::query(SQL).bind(Utc::now()).execute(pool).await.map(|r| r.rows_affected()))
}

/// Extends the lease of a job this worker still holds; false if it lost the job.
pub async fn heartbeat(db: &Db, id: Uuid, worker: &str, lease: Duration) -> Result<bool, sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET locked_until = $3 WHERE id = $1 AND locked_by = $2 AND status = 'running'";
    let n = on_db!(db, pool => sqlx::query(SQL).bind(id).bind(worker).bind(Utc::now() + lease).execute(pool).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn complete(db: &Db, id: Uuid, worker: &str) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET status = 'succeeded', locked_by = NULL, locked_until = NULL, last_error = NULL, \
        updated_at = $3 WHERE id = $1 AND locked_by = $2";
    on_db!(db, pool => sqlx::query(SQL).bind(id).bind(worker).bind(Utc::now()).execute(pool).await.map(|_| ()))
}

/// Marks many finished jobs succeeded in one transaction (one commit, one fsync, however
/// many jobs).
pub async fn complete_all(db: &Db, ids: &[Uuid], worker: &str) -> Result<(), sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET status = 'succeeded', locked_by = NULL, locked_until = NULL, last_error = NULL, \
        updated_at = $3 WHERE id = $1 AND locked_by = $2";
    if let [id] = ids {
        return complete(db, *id, worker).await;
    }
    let now = Utc::now();
    let mut tx = db.begin().await?;
    for id in ids {
        on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(worker).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    }
    tx.commit().await
}

/// Exponential backoff: 2 s, 4 s, 8 s … capped at an hour, ±25 % jitter so retries of many
/// jobs that failed together spread out.
pub fn backoff(attempts: i32) -> Duration {
    let base = 2_i64.saturating_pow(attempts.clamp(1, 12) as u32).min(3_600);
    let mut byte = [0u8; 1];
    let _ = getrandom::fill(&mut byte);
    let jitter = 0.75 + f64::from(byte[0]) / 255.0 * 0.5;
    Duration::milliseconds((base as f64 * 1_000.0 * jitter) as i64)
}

/// Records a failure: back to the queue after a backoff, or `dead` when attempts are used up
/// or the error is permanent. Returns the new status.
pub async fn fail(db: &Db, job: &Job, worker: &str, error: &str, permanent: bool) -> Result<&'static str, sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET status = $3, run_at = $4, locked_by = NULL, locked_until = NULL, last_error = $5, \
        updated_at = $6 WHERE id = $1 AND locked_by = $2";
    let now = Utc::now();
    let status = if permanent || job.attempts >= job.max_attempts { "dead" } else { "queued" };
    let error: String = error.chars().take(2_000).collect();
    on_db!(db, pool => sqlx::query(SQL).bind(job.id).bind(worker).bind(status).bind(now + backoff(job.attempts))
        .bind(error).bind(now).execute(pool).await.map(|_| ()))?;
    Ok(status)
}

/// Gives claimed jobs back (graceful shutdown of a worker that could not finish them).
pub async fn release(db: &Db, worker: &str) -> Result<u64, sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET status = 'queued', locked_by = NULL, locked_until = NULL, \
        attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = $2 WHERE locked_by = $1 AND status = 'running'";
    on_db!(db, pool => sqlx::query(SQL).bind(worker).bind(Utc::now()).execute(pool).await.map(|r| r.rows_affected()))
}

/// Puts a dead or failed job back in the queue with fresh attempts (admin action).
pub async fn retry(tx: &mut Tx, id: Uuid) -> Result<bool, sqlx::Error> {
    const SQL: &str = "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, last_error = NULL, updated_at = $2 \
        WHERE id = $1 AND status IN ('dead', 'failed')";
    let n = on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(Utc::now()).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Queue depth and oldest runnable job age per queue, for `/metrics`.
pub async fn depth(db: &Db) -> Result<Vec<(String, String, i64, Option<DateTime<Utc>>)>, sqlx::Error> {
    const SQL: &str = "SELECT queue, status, COUNT(*), MIN(run_at) FROM jobs WHERE status IN ('queued', 'running', 'dead') \
        GROUP BY queue, status";
    on_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)
}

/// Deletes succeeded jobs finished more than `older_than` ago (housekeeping); dead jobs stay
/// until an admin retries them. Returns how many.
pub async fn purge_succeeded(db: &Db, older_than: Duration) -> Result<u64, sqlx::Error> {
    const SQL: &str = "DELETE FROM jobs WHERE status = 'succeeded' AND updated_at < $1";
    on_db!(db, pool => sqlx::query(SQL).bind(Utc::now() - older_than).execute(pool).await.map(|r| r.rows_affected()))
}
