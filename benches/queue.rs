//! Job queue throughput and pickup latency with no-op jobs, with 1 and 4 worker tasks.
//!
//! Run: `cargo bench --bench queue` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cedar::app::AppState;
use cedar::jobs::queue::{self, NewJob};
use cedar::jobs::worker::{self, Registry, WorkerOptions};
use tokio::sync::{Notify, watch};

const JOBS: usize = 20_000;

async fn throughput(state: &AppState, tasks: usize) {
    let mut tx = state.db.begin().await.unwrap();
    for i in 0..JOBS {
        queue::enqueue(&mut tx, NewJob::now("bench", "noop", serde_json::json!({"i": i}))).await.unwrap();
        if i % 1_000 == 999 {
            tx.commit().await.unwrap();
            tx = state.db.begin().await.unwrap();
        }
    }
    tx.commit().await.unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(Notify::new());
    let (counter, signal) = (done.clone(), finished.clone());
    let registry = Registry::default().on("bench", "noop", move |_s: AppState, _j| {
        let (counter, signal) = (counter.clone(), signal.clone());
        async move {
            if counter.fetch_add(1, Ordering::SeqCst) + 1 == JOBS {
                signal.notify_one();
            }
            Ok(())
        }
    });
    let (stop, stopped) = watch::channel(false);
    let options =
        WorkerOptions { concurrency: tasks, poll_interval: Duration::from_millis(20), ..WorkerOptions::default() };
    let started = Instant::now();
    let worker = tokio::spawn(worker::run(state.clone(), registry, options, stopped));
    finished.notified().await;
    let elapsed = started.elapsed();
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    println!("{JOBS} no-op jobs, {tasks} task(s): {:.0} jobs/s", JOBS as f64 / elapsed.as_secs_f64());
    cedar::on_db!(&state.db, pool => sqlx::query("DELETE FROM jobs").execute(pool).await.map(|_| ())).unwrap();
}

async fn pickup(state: &AppState, tasks: usize) {
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ran = Arc::new(Notify::new());
    let (sink, signal) = (latencies.clone(), ran.clone());
    let registry = Registry::default().on("bench", "ping", move |_s: AppState, job: queue::Job| {
        let (sink, signal) = (sink.clone(), signal.clone());
        async move {
            let waited = (chrono::Utc::now() - job.created_at).to_std().unwrap_or_default();
            sink.lock().unwrap().push(waited);
            signal.notify_one();
            Ok(())
        }
    });
    let (stop, stopped) = watch::channel(false);
    // The poll fallback is slow on purpose: pickup must come from the wake-up.
    let options =
        WorkerOptions { concurrency: tasks, poll_interval: Duration::from_secs(5), ..WorkerOptions::default() };
    let worker = tokio::spawn(worker::run(state.clone(), registry, options, stopped));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..300 {
        let mut tx = state.db.begin().await.unwrap();
        queue::enqueue(&mut tx, NewJob::now("bench", "ping", serde_json::json!({}))).await.unwrap();
        tx.commit().await.unwrap();
        state.job_wakeup.notify_one();
        ran.notified().await;
    }
    stop.send(true).unwrap();
    worker.await.unwrap().unwrap();
    let samples = latencies.lock().unwrap().clone();
    support::report(&format!("pickup latency, {tasks} task(s)"), samples);
    cedar::on_db!(&state.db, pool => sqlx::query("DELETE FROM jobs").execute(pool).await.map(|_| ())).unwrap();
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = support::state(&dir).await;
    for tasks in [1, 4] {
        throughput(&state, tasks).await;
    }
    for tasks in [1, 4] {
        pickup(&state, tasks).await;
    }
}
