//! The job queue and worker: exactly-once under concurrency, backoff, dead jobs and admin
//! retry, dedupe, delays, expired leases, schedules, graceful shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedar::app::AppState;
use cedar::jobs::queue::{self, NewJob};
use cedar::jobs::worker::{self, JobError, Registry, WorkerOptions};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Backend, admin_token, assert_problem, spawn_app};
use crate::helpers::{json_ok, send};

type Runs = Arc<Mutex<HashMap<Uuid, usize>>>;

fn counting(runs: Runs) -> Registry<AppState> {
    Registry::default().on("test", "count", move |_state: AppState, job: queue::Job| {
        let runs = runs.clone();
        async move {
            *runs.lock().unwrap().entry(job.id).or_default() += 1;
            Ok(())
        }
    })
}

fn fast() -> WorkerOptions {
    WorkerOptions { poll_interval: Duration::from_millis(50), ..WorkerOptions::default() }
}

async fn enqueue(state: &AppState, job: NewJob) -> Option<Uuid> {
    let mut tx = state.db.begin().await.unwrap();
    let id = queue::enqueue(&mut tx, job).await.unwrap();
    tx.commit().await.unwrap();
    state.job_wakeup.notify_one();
    id
}

async fn status(state: &AppState, id: Uuid) -> (String, i32, Option<String>) {
    cedar::on_db!(&state.db, pool => sqlx::query_as("SELECT status, attempts, last_error FROM jobs WHERE id = $1")
        .bind(id).fetch_one(pool).await)
    .unwrap()
}

async fn wait_for(state: &AppState, id: Uuid, wanted: &str) -> (String, i32, Option<String>) {
    for _ in 0..200 {
        let s = status(state, id).await;
        if s.0 == wanted {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("job {id} never became {wanted}: {:?}", status(state, id).await);
}

fn start(
    state: &AppState,
    registry: Registry<AppState>,
    options: WorkerOptions,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (stop, stopped) = watch::channel(false);
    (stop, tokio::spawn(worker::run(state.clone(), registry, options, stopped)))
}

async fn two_workers_run_every_job_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let runs: Runs = Arc::default();
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(enqueue(&app.state, NewJob::now("test", "count", json!({"i": i}))).await.unwrap());
    }
    let (stop_a, a) = start(&app.state, counting(runs.clone()), fast());
    let (stop_b, b) = start(&app.state, counting(runs.clone()), fast());
    for id in &ids {
        wait_for(&app.state, *id, "succeeded").await;
    }
    stop_a.send(true).unwrap();
    stop_b.send(true).unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let runs = runs.lock().unwrap();
    assert_eq!(runs.len(), 120);
    assert!(runs.values().all(|n| *n == 1), "a job ran twice");
}

async fn failures_back_off_then_die_and_an_admin_can_retry(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = admin_token(&app).await;
    let healthy = Arc::new(Mutex::new(false));
    let flag = healthy.clone();
    let registry = Registry::default()
        .on("test", "flaky", move |_s: AppState, _j| {
            let ok = *flag.lock().unwrap();
            async move { if ok { Ok(()) } else { Err(JobError::Retry("upstream said 503".into())) } }
        })
        .on("test", "broken", |_s: AppState, _j| async { Err(JobError::Permanent("bad payload".into())) });
    let flaky = enqueue(&app.state, NewJob::now("test", "flaky", json!({})).max_attempts(3)).await.unwrap();
    let broken = enqueue(&app.state, NewJob::now("test", "broken", json!({}))).await.unwrap();
    let (stop, worker) = start(&app.state, registry, fast());

    let (_, attempts, error) = wait_for(&app.state, broken, "dead").await;
    assert_eq!((attempts, error.as_deref()), (1, Some("bad payload")), "a permanent error is not retried");
    for attempt in 1..=2 {
        for _ in 0..200 {
            if status(&app.state, flaky).await.1 == attempt && status(&app.state, flaky).await.0 == "queued" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Backed off: not runnable for roughly 2^attempt seconds (±25 %).
        let run_at: chrono::DateTime<chrono::Utc> = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar(
            "SELECT run_at FROM jobs WHERE id = $1").bind(flaky).fetch_one(pool).await)
        .unwrap();
        let wait = (run_at - chrono::Utc::now()).num_milliseconds();
        let expected = 1000 * 2_i64.pow(attempt as u32);
        assert!(wait > expected * 6 / 10 && wait <= expected * 5 / 4, "attempt {attempt}: backoff {wait} ms");
        // Skip the wait.
        cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE jobs SET run_at = $2 WHERE id = $1")
            .bind(flaky).bind(chrono::Utc::now()).execute(pool).await.map(|_| ()))
        .unwrap();
        app.state.job_wakeup.notify_one();
    }
    let (_, attempts, error) = wait_for(&app.state, flaky, "dead").await;
    assert_eq!((attempts, error.as_deref()), (3, Some("upstream said 503")));

    let dead = json_ok(send(&app, "GET", "/v1/jobs?status=dead", &admin, None).await, 200).await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 2);
    *healthy.lock().unwrap() = true;
    let retried = json_ok(send(&app, "POST", &format!("/v1/jobs/{flaky}/retry"), &admin, None).await, 200).await;
    assert_eq!(retried["attempts"], 0);
    wait_for(&app.state, flaky, "succeeded").await;
    assert_problem(send(&app, "POST", &format!("/v1/jobs/{flaky}/retry"), &admin, None).await, 409).await;
    assert_problem(send(&app, "POST", &format!("/v1/jobs/{}/retry", Uuid::now_v7()), &admin, None).await, 404).await;
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    // Housekeeping deletes old succeeded jobs and keeps dead ones for the office.
    let purged = queue::purge_succeeded(&app.state.db, chrono::Duration::zero()).await.unwrap();
    assert_eq!(purged, 1);
    assert_eq!(status(&app.state, broken).await.0, "dead");
}

async fn dedupe_delay_and_foreign_queues(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = enqueue(&app.state, NewJob::now("test", "count", json!({})).dedupe("once")).await;
    let second = enqueue(&app.state, NewJob::now("test", "count", json!({})).dedupe("once")).await;
    assert!(first.is_some() && second.is_none());
    let later = enqueue(
        &app.state,
        NewJob::now("test", "count", json!({})).at(chrono::Utc::now() + chrono::Duration::hours(1)),
    )
    .await
    .unwrap();
    let other = enqueue(&app.state, NewJob::now("workflows", "workflow.start", json!({}))).await.unwrap();
    let runs: Runs = Arc::default();
    let (stop, worker) = start(&app.state, counting(runs.clone()), fast());
    wait_for(&app.state, first.unwrap(), "succeeded").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status(&app.state, later).await.0, "queued", "a delayed job waits for its time");
    assert_eq!(status(&app.state, other).await.0, "queued", "a queue without handlers is left alone");
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    assert_eq!(runs.lock().unwrap().len(), 1);
}

async fn a_dead_workers_job_is_taken_over_after_its_lease(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = enqueue(&app.state, NewJob::now("test", "count", json!({}))).await.unwrap();
    // A worker claimed it and died: the row says running, leased until a moment ago.
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE jobs SET status = 'running', attempts = 1, locked_by = 'crashed', \
        locked_until = $2 WHERE id = $1").bind(id).bind(chrono::Utc::now() - chrono::Duration::seconds(1)).execute(pool).await.map(|_| ()))
    .unwrap();
    let runs: Runs = Arc::default();
    let (stop, worker) = start(&app.state, counting(runs.clone()), fast());
    let (_, attempts, error) = wait_for(&app.state, id, "succeeded").await;
    assert_eq!((attempts, error), (2, None));
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    // And a live lease is respected.
    let held = enqueue(&app.state, NewJob::now("test", "count", json!({}))).await.unwrap();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE jobs SET status = 'running', locked_by = 'alive', locked_until = $2 WHERE id = $1")
        .bind(held).bind(chrono::Utc::now() + chrono::Duration::minutes(5)).execute(pool).await.map(|_| ()))
    .unwrap();
    let claimed = queue::claim(&app.state.db, "test", "me", 10, chrono::Duration::seconds(30)).await.unwrap();
    assert!(claimed.is_empty());
}

async fn a_due_schedule_fires_once_among_many_workers(backend: Backend) {
    let app = spawn_app(backend).await;
    worker::upsert_schedule(&app.state, "nightly", "test", "count", "0 3 * * *", json!({"n": 1})).await.unwrap();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE schedules SET next_run_at = $1")
        .bind(chrono::Utc::now() - chrono::Duration::minutes(1)).execute(pool).await.map(|_| ()))
    .unwrap();
    let fired = futures_util::future::join_all((0..6).map(|_| worker::fire_due_schedules(&app.state))).await;
    let total: usize = fired.into_iter().map(|r| r.unwrap()).sum();
    assert_eq!(total, 1);
    let jobs: Vec<(String, Value)> =
        cedar::on_db!(&app.state.db, pool => sqlx::query_as::<_, (String, sqlx::types::Json<Value>)>(
        "SELECT kind, payload FROM jobs WHERE queue = 'test'").fetch_all(pool).await)
        .unwrap()
        .into_iter()
        .map(|(k, p)| (k, p.0))
        .collect();
    assert_eq!(jobs, [("count".to_owned(), json!({"n": 1}))]);
    let next: chrono::DateTime<chrono::Utc> = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar(
        "SELECT next_run_at FROM schedules WHERE name = 'nightly'").fetch_one(pool).await)
    .unwrap();
    let local = next.with_timezone(&app.state.settings.timezone);
    assert_eq!(local.format("%H:%M").to_string(), "03:00");
    assert!(next > chrono::Utc::now());
}

async fn shutdown_finishes_running_jobs(backend: Backend) {
    let app = spawn_app(backend).await;
    let registry = Registry::default().on("test", "slow", |_s: AppState, _j| async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(())
    });
    let id = enqueue(&app.state, NewJob::now("test", "slow", json!({}))).await.unwrap();
    let (stop, worker) = start(&app.state, registry, fast());
    wait_for(&app.state, id, "running").await;
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    assert_eq!(status(&app.state, id).await.0, "succeeded");
}

backend_tests!(
    two_workers_run_every_job_exactly_once,
    failures_back_off_then_die_and_an_admin_can_retry,
    dedupe_delay_and_foreign_queues,
    a_dead_workers_job_is_taken_over_after_its_lease,
    a_due_schedule_fires_once_among_many_workers,
    shutdown_finishes_running_jobs,
);
