//! Staff reads of a family's or student's record are audited before the answer leaves (who
//! looked at whose data). Written one at a time, each read waited for its own INSERT and
//! commit (a WAL flush): under load that, not the read, bounded `GET /v1/students/{id}`.
//!
//! Group commit keeps the guarantee and shares the cost: a request hands its row to one writer
//! task and awaits the outcome; the writer takes every row waiting at that moment (up to
//! [`MAX_BATCH`]) and writes them in one transaction — one statement on PostgreSQL
//! (`UNNEST`), one commit on SQLite — then answers each request. Nothing waits for a timer:
//! a lone read is written at once, and the rows that arrive while a batch is being written
//! form the next one.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::db::Db;

/// Most rows in one transaction.
const MAX_BATCH: usize = 512;

/// One staff read, as the audit trail records it (`family.viewed`, `student.viewed`).
#[derive(Debug, Clone)]
pub struct ReadEvent {
    pub actor_id: Uuid,
    pub actor_role: &'static str,
    pub action: &'static str,
    pub subject_type: &'static str,
    pub subject_id: String,
    pub request_id: Option<String>,
}

struct Pending {
    id: Uuid,
    at: DateTime<Utc>,
    event: ReadEvent,
    done: oneshot::Sender<Result<(), String>>,
}

/// The handle requests write through; the writer task ends when the last handle is dropped.
pub struct ReadLog {
    queue: mpsc::Sender<Pending>,
}

impl ReadLog {
    /// Starts the writer (needs a Tokio runtime).
    pub fn start(db: Db) -> Self {
        let (queue, rows) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(write_batches(db, rows));
        Self { queue }
    }

    /// Records `event`; returns once it is committed (or failed to be).
    pub async fn record(&self, event: ReadEvent) -> Result<(), sqlx::Error> {
        let (done, outcome) = oneshot::channel();
        let pending = Pending { id: Uuid::now_v7(), at: Utc::now(), event, done };
        self.queue.send(pending).await.map_err(|_| stopped())?;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(sqlx::Error::Protocol(format!("audit of a read failed: {message}"))),
            Err(_) => Err(stopped()),
        }
    }
}

fn stopped() -> sqlx::Error {
    sqlx::Error::Protocol("the audit writer has stopped".into())
}

async fn write_batches(db: Db, mut rows: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rows.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let outcome = insert(&db, &batch).await.map_err(|e| e.to_string());
        if let Err(message) = &outcome {
            tracing::error!(rows = batch.len(), error = %message, "audit: writing staff reads failed");
        }
        metrics::histogram!("audit_read_batch_rows").record(batch.len() as f64);
        for pending in batch.drain(..) {
            let _ = pending.done.send(outcome.clone());
        }
    }
}

async fn insert(db: &Db, batch: &[Pending]) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(pool) => {
            const SQL: &str = "INSERT INTO audit_log (id, occurred_at, actor_id, actor_role, action, subject_type, \
                subject_id, request_id) SELECT * FROM UNNEST($1::uuid[], $2::timestamptz[], $3::uuid[], $4::text[], \
                $5::text[], $6::text[], $7::text[], $8::text[])";
            let column = |f: fn(&Pending) -> String| batch.iter().map(f).collect::<Vec<_>>();
            sqlx::query(SQL)
                .bind(batch.iter().map(|p| p.id).collect::<Vec<_>>())
                .bind(batch.iter().map(|p| p.at).collect::<Vec<_>>())
                .bind(batch.iter().map(|p| p.event.actor_id).collect::<Vec<_>>())
                .bind(column(|p| p.event.actor_role.to_owned()))
                .bind(column(|p| p.event.action.to_owned()))
                .bind(column(|p| p.event.subject_type.to_owned()))
                .bind(column(|p| p.event.subject_id.clone()))
                .bind(batch.iter().map(|p| p.event.request_id.clone()).collect::<Vec<_>>())
                .execute(pool)
                .await?;
        }
        Db::Sqlite(pool) => {
            const SQL: &str = "INSERT INTO audit_log (id, occurred_at, actor_id, actor_role, action, subject_type, \
                subject_id, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            for p in batch {
                sqlx::query(SQL)
                    .bind(p.id)
                    .bind(p.at)
                    .bind(p.event.actor_id)
                    .bind(p.event.actor_role)
                    .bind(p.event.action)
                    .bind(p.event.subject_type)
                    .bind(&p.event.subject_id)
                    .bind(&p.event.request_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
