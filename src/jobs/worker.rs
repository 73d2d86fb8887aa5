//! Workers: claim jobs of the queues they have handlers for, run them with bounded
//! concurrency, keep their leases alive, and fire recurring schedules. Woken by PostgreSQL
//! `LISTEN/NOTIFY` (or in-process on SQLite) with a slow polling fallback; any number of
//! worker processes share one PostgreSQL queue.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use futures_util::FutureExt;
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use tokio::sync::{Notify, Semaphore, watch};
use uuid::Uuid;

use super::JobContext;
use super::cron::Cron;
use super::queue::{self, Job, NewJob};
use crate::{on_db, on_tx};

/// How a job handler failed.
#[derive(Debug)]
pub enum JobError {
    /// Worth retrying later (with backoff).
    Retry(String),
    /// Will never succeed: straight to `dead`.
    Permanent(String),
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;
pub type Handler<S> = Arc<dyn Fn(S, Job) -> HandlerFuture + Send + Sync>;

/// Which code runs which `(queue, kind)`. The application builds one (see `app::jobs`).
pub struct Registry<S> {
    handlers: HashMap<(String, String), Handler<S>>,
}

impl<S> Clone for Registry<S> {
    fn clone(&self) -> Self {
        Self { handlers: self.handlers.clone() }
    }
}

impl<S: JobContext> Default for Registry<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: JobContext> Registry<S> {
    pub fn new() -> Self {
        Self { handlers: HashMap::new() }
    }

    pub fn on<F, Fut>(mut self, queue: &str, kind: &str, handler: F) -> Self
    where
        F: Fn(S, Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        let handler: Handler<S> = Arc::new(move |state, job| Box::pin(handler(state, job)));
        self.handlers.insert((queue.to_owned(), kind.to_owned()), handler);
        self
    }

    fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.handlers.keys().map(|(q, _)| q.clone()).collect();
        queues.sort();
        queues.dedup();
        queues
    }
}

/// A recurring job: `cron` (five fields, school time) enqueues `queue`/`kind` with an empty
/// payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub name: String,
    pub queue: String,
    pub kind: String,
    pub cron: String,
}

impl Schedule {
    pub fn new(name: impl Into<String>, queue: &str, kind: &str, cron: impl Into<String>) -> Self {
        Self { name: name.into(), queue: queue.to_owned(), kind: kind.to_owned(), cron: cron.into() }
    }
}

/// The queue's own housekeeping schedule: finished jobs are purged daily.
pub fn schedules() -> Vec<Schedule> {
    vec![Schedule::new("jobs-purge", "maintenance", "jobs.purge", "25 3 * * *")]
}

/// The queue's own housekeeping handler.
pub fn register<S: JobContext>(registry: Registry<S>) -> Registry<S> {
    registry.on("maintenance", "jobs.purge", |state: S, _job| async move {
        queue::purge_succeeded(state.db(), Duration::days(14))
            .await
            .map(|_| ())
            .map_err(|e| JobError::Retry(format!("{e:#}")))
    })
}

/// Creates or updates a schedule; its next run is computed from now in `tz`.
pub async fn upsert_schedule(
    state: &impl JobContext,
    name: &str,
    queue: &str,
    kind: &str,
    cron: &str,
    payload: Value,
) -> anyhow::Result<()> {
    let parsed = Cron::parse(cron).map_err(|e| anyhow::anyhow!("schedule {name}: {e}"))?;
    let next = parsed
        .next_after(Utc::now(), state.timezone())
        .ok_or_else(|| anyhow::anyhow!("schedule {name} never fires"))?;
    const SQL: &str = "INSERT INTO schedules (name, queue, kind, cron, payload, next_run_at) VALUES ($1, $2, $3, $4, $5, $6) \
        ON CONFLICT (name) DO UPDATE SET queue = excluded.queue, kind = excluded.kind, payload = excluded.payload, \
        next_run_at = CASE WHEN schedules.cron = excluded.cron THEN schedules.next_run_at ELSE excluded.next_run_at END, \
        cron = excluded.cron";
    on_db!(state.db(), pool => sqlx::query(SQL).bind(name).bind(queue).bind(kind).bind(cron).bind(SqlJson(&payload))
        .bind(next).execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Enqueues the due firings of every schedule, once each even with many workers: a firing is
/// claimed by moving `next_run_at` forward from the value read, and its job carries a dedupe
/// key naming that instant.
pub async fn fire_due_schedules(state: &impl JobContext) -> anyhow::Result<usize> {
    const DUE: &str = "SELECT name, queue, kind, cron, payload, next_run_at FROM schedules WHERE next_run_at <= $1";
    const ADVANCE: &str =
        "UPDATE schedules SET next_run_at = $3, last_run_at = $4 WHERE name = $1 AND next_run_at = $2";
    type Row = (String, String, String, String, SqlJson<Value>, DateTime<Utc>);
    let now = Utc::now();
    let due: Vec<Row> = on_db!(state.db(), pool => sqlx::query_as(DUE).bind(now).fetch_all(pool).await)?;
    let mut fired = 0;
    for (name, queue, kind, cron, payload, next_run_at) in due {
        let Ok(parsed) = Cron::parse(&cron) else { continue };
        let Some(next) = parsed.next_after(now, state.timezone()) else { continue };
        let mut tx = state.db().begin().await?;
        let moved = on_tx!(&mut tx, conn => sqlx::query(ADVANCE).bind(&name).bind(next_run_at).bind(next).bind(now)
            .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
        if moved == 1 {
            let job =
                NewJob::now(queue, kind, payload.0).dedupe(format!("schedule:{name}:{}", next_run_at.to_rfc3339()));
            queue::enqueue(&mut tx, job).await?;
            fired += 1;
        }
        tx.commit().await?;
    }
    Ok(fired)
}

/// Settings of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub concurrency: usize,
    pub lease: Duration,
    pub poll_interval: StdDuration,
    /// How long running jobs get to finish on shutdown before they are released.
    pub shutdown_grace: StdDuration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease: Duration::seconds(60),
            poll_interval: StdDuration::from_secs(2),
            shutdown_grace: StdDuration::from_secs(30),
        }
    }
}

/// Runs jobs until `shutdown` turns true; then finishes (or, after the grace, releases) the
/// jobs it holds.
pub async fn run<S: JobContext>(
    state: S,
    registry: Registry<S>,
    options: WorkerOptions,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let id = format!("{}-{}", hostname(), Uuid::now_v7().simple());
    let wake = Arc::new(Notify::new());
    let _listener = spawn_listener(&state, wake.clone()).await;
    let local_wake = state.job_wakeup();
    let permits = Arc::new(Semaphore::new(options.concurrency.max(1)));
    let queues = registry.queues();
    tracing::info!(worker = %id, ?queues, concurrency = options.concurrency, "worker started");
    let mut tasks = tokio::task::JoinSet::new();
    // Successes are recorded in batches by one task: a commit per batch, not per job.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Uuid>();
    let recorder = {
        let (db, worker) = (state.db().clone(), id.clone());
        tokio::spawn(async move {
            while let Some(first) = done_rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < 500 {
                    match done_rx.try_recv() {
                        Ok(id) => batch.push(id),
                        Err(_) => break,
                    }
                }
                if let Err(error) = queue::complete_all(&db, &batch, &worker).await {
                    tracing::error!(error = %error, jobs = batch.len(), "recording finished jobs failed; their leases will expire and they will run again");
                }
            }
        })
    };
    let mut last_upkeep: Option<std::time::Instant> = None;
    let mut claim_conn = queue::claim_connection(state.db()).await;
    loop {
        if *shutdown.borrow() {
            break;
        }
        if claim_conn.is_none() {
            claim_conn = queue::claim_connection(state.db()).await;
        }
        // Schedules and expired leases: about once a second, not on every claim.
        if last_upkeep.is_none_or(|at| at.elapsed() >= StdDuration::from_secs(1)) {
            last_upkeep = Some(std::time::Instant::now());
            if let Err(error) = fire_due_schedules(&state).await {
                tracing::warn!(error = %format!("{error:#}"), "firing schedules failed");
            }
            match queue::requeue_expired(state.db()).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(jobs = n, "requeued jobs whose worker lease expired"),
                Err(error) => tracing::warn!(error = %error, "requeueing expired jobs failed"),
            }
        }
        let mut claimed_any = false;
        for queue_name in &queues {
            let free = permits.available_permits();
            if free == 0 {
                break;
            }
            let claimed = match claim_conn.as_mut() {
                Some(conn) => queue::claim_on(conn, queue_name, &id, free as i64, options.lease).await,
                None => queue::claim(state.db(), queue_name, &id, free as i64, options.lease).await,
            };
            let jobs = match claimed {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(error = %error, queue = %queue_name, "claiming jobs failed");
                    // A broken dedicated connection is replaced on the next round.
                    claim_conn = None;
                    continue;
                }
            };
            for job in jobs {
                claimed_any = true;
                let permit = permits.clone().acquire_owned().await?;
                let (state, registry, worker, lease) = (state.clone(), registry.clone(), id.clone(), options.lease);
                let done = done_tx.clone();
                tasks.spawn(async move {
                    run_one(&state, &registry, &worker, job, lease, &done).await;
                    drop(permit);
                });
            }
        }
        while tasks.try_join_next().is_some() {}
        if claimed_any && permits.available_permits() > 0 {
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = local_wake.notified() => {}
            _ = tokio::time::sleep(options.poll_interval) => {}
            _ = shutdown.changed() => {}
            _ = async { if permits.available_permits() == 0 { tasks.join_next().await; } else { std::future::pending::<()>().await } } => {}
        }
    }
    tracing::info!(worker = %id, running = tasks.len(), "worker stopping");
    let finished =
        tokio::time::timeout(options.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    drop(done_tx);
    recorder.await?;
    if finished.is_err() {
        let released = queue::release(state.db(), &id).await?;
        tracing::warn!(released, "grace period over; unfinished jobs released to the queue");
    }
    Ok(())
}

async fn run_one<S: JobContext>(
    state: &S,
    registry: &Registry<S>,
    worker: &str,
    job: Job,
    lease: Duration,
    done: &tokio::sync::mpsc::UnboundedSender<Uuid>,
) {
    let started = std::time::Instant::now();
    let Some(handler) = registry.handlers.get(&(job.queue.clone(), job.kind.clone())).cloned() else {
        let _ =
            queue::fail(state.db(), &job, worker, &format!("no handler for {}/{}", job.queue, job.kind), true).await;
        return;
    };
    // Keep the lease alive while the handler runs, and only then: the guard stops the
    // heartbeat when this task ends in any way (finished, panicked or aborted with its
    // worker), so a dead worker's lease runs out and another worker takes the job.
    let _heartbeat = AbortOnDrop({
        let (db, worker, id) = (state.db().clone(), worker.to_owned(), job.id);
        tokio::spawn(async move {
            let period = (lease / 3).to_std().unwrap_or(StdDuration::from_secs(20));
            loop {
                tokio::time::sleep(period).await;
                if !matches!(queue::heartbeat(&db, id, &worker, lease).await, Ok(true)) {
                    break;
                }
            }
        })
    });
    let outcome = AssertUnwindSafe(handler(state.clone(), job.clone()))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(JobError::Retry("the handler panicked".into())));
    let labels = [("queue", job.queue.clone()), ("kind", job.kind.clone())];
    let result = match outcome {
        Ok(()) => match done.send(job.id) {
            Ok(()) => Ok("succeeded"),
            Err(_) => queue::complete(state.db(), job.id, worker).await.map(|_| "succeeded"),
        },
        Err(JobError::Retry(why)) => queue::fail(state.db(), &job, worker, &why, false).await,
        Err(JobError::Permanent(why)) => queue::fail(state.db(), &job, worker, &why, true).await,
    };
    match result {
        Ok(status) => {
            metrics::counter!("jobs_total", "queue" => labels[0].1.clone(), "kind" => labels[1].1.clone(), "outcome" => status).increment(1);
            metrics::histogram!("job_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
            if status != "succeeded" {
                tracing::warn!(job = %job.id, kind = %job.kind, attempts = job.attempts, status, "job failed");
            }
        }
        Err(error) => tracing::error!(job = %job.id, error = %error, "recording the job outcome failed"),
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// On PostgreSQL, wake this worker when any process enqueues a job.
async fn spawn_listener(state: &impl JobContext, wake: Arc<Notify>) -> Option<tokio::task::JoinHandle<()>> {
    let crate::db::Db::Postgres(pool) = state.db() else { return None };
    let mut listener = match sqlx::postgres::PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::warn!(error = %error, "LISTEN unavailable; polling only");
            return None;
        }
    };
    if listener.listen(queue::NOTIFY_CHANNEL).await.is_err() {
        return None;
    }
    Some(tokio::spawn(async move {
        while listener.recv().await.is_ok() {
            wake.notify_one();
        }
    }))
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_else(|_| "cedar".into())
}
