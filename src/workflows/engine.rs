//! The workflow engine. A workflow is a list of named steps defined in Rust; each step returns
//! a [`Transition`] (its output and what comes next). The engine persists every step's input,
//! output, attempts, timings and error, and checkpoints the run's context after every step in
//! the same transaction as the step's own database writes, so a run resumes after a crash at
//! the step it was on and never repeats a finished step. Steps run in `workflow.run` jobs on
//! the `workflows` queue; a `review` transition pauses the run until a person decides.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::Tx;
use crate::error::DomainError;
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::{JobError, Registry};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

use super::definition::Next;
pub use super::definition::*;

pub const QUEUE: &str = "workflows";
/// A job that creates a run from `{workflow, input}` (enqueued by business code) and runs it.
pub const START: &str = "workflow.start";
/// A job that advances the run `{run_id}` as far as it can go.
pub const ADVANCE: &str = "workflow.run";

/// The engine's two job handlers.
pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry.on(QUEUE, START, |state: AppState, job: Job| async move { start_from_job(&state, &job).await }).on(
        QUEUE,
        ADVANCE,
        |state: AppState, job: Job| async move {
            let run_id = job.payload.0["run_id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| JobError::Permanent("payload has no run_id".into()))?;
            advance(&state, run_id).await
        },
    )
}

fn retry(error: impl std::fmt::Display) -> JobError {
    JobError::Retry(error.to_string())
}

/// Who started a run.
pub enum Trigger {
    User(Uuid),
    System,
}

/// Creates a run (already prepared) and its first job in `tx`. With a `dedupe_key`, a second
/// start with the same key returns the first run's id.
pub async fn create_run(
    tx: &mut Tx,
    workflow: &Workflow,
    input: &Value,
    subject: Option<&Subject>,
    trigger: Trigger,
    dedupe_key: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    create_run_as(tx, Uuid::now_v7(), workflow, input, subject, trigger, dedupe_key).await
}

/// [`create_run`] with the run's id chosen by the caller (a trigger that reports the id at once).
async fn create_run_as(
    tx: &mut Tx,
    id: Uuid,
    workflow: &Workflow,
    input: &Value,
    subject: Option<&Subject>,
    trigger: Trigger,
    dedupe_key: Option<&str>,
) -> Result<Uuid, sqlx::Error> {
    const INSERT: &str = "INSERT INTO workflow_runs (id, workflow, status, input, current_step, step_seq, subject_kind, \
        subject_id, family_id, started_by, dedupe_key, created_at, updated_at) \
        VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) ON CONFLICT DO NOTHING";
    const EXISTING: &str = "SELECT id FROM workflow_runs WHERE dedupe_key = $1";
    let started_by = match trigger {
        Trigger::User(user) => Some(user),
        Trigger::System => None,
    };
    // An unprepared run (no subject) starts at no step; the engine prepares it first.
    let first = subject.map(|_| workflow.steps[0].name);
    let inserted = on_tx!(tx, conn => sqlx::query(INSERT).bind(id).bind(workflow.name).bind(SqlJson(input))
        .bind(first).bind(i32::from(first.is_some())).bind(subject.map(|s| s.kind)).bind(subject.map(|s| s.id))
        .bind(subject.and_then(|s| s.family_id)).bind(started_by).bind(dedupe_key).bind(Utc::now())
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if inserted == 0 {
        return on_tx!(tx, conn => sqlx::query_scalar(EXISTING).bind(dedupe_key).fetch_one(&mut **conn).await);
    }
    enqueue_advance(tx, id, 0).await?;
    Ok(id)
}

/// The run already holding `key`, if one does and it is still alive or succeeded. A failed or
/// cancelled one gives its key up (renamed after itself), so a new run may take it.
pub async fn claim_once_key(tx: &mut Tx, key: &str) -> Result<Option<Uuid>, sqlx::Error> {
    const FIND: &str = "SELECT id, status FROM workflow_runs WHERE dedupe_key = $1";
    const RELEASE: &str = "UPDATE workflow_runs SET dedupe_key = $2 WHERE id = $1";
    let found: Option<(Uuid, String)> =
        on_tx!(tx, conn => sqlx::query_as(FIND).bind(key).fetch_optional(&mut **conn).await)?;
    match found {
        Some((id, status)) if status == "failed" || status == "cancelled" => {
            on_tx!(tx, conn => sqlx::query(RELEASE).bind(id).bind(format!("{key}:ended:{id}")).execute(&mut **conn)
                .await.map(|_| ()))?;
            Ok(None)
        }
        Some((id, _)) => Ok(Some(id)),
        None => Ok(None),
    }
}

/// Queues a job that advances the run; `seq` makes it unique per checkpoint.
async fn enqueue_advance(tx: &mut Tx, run_id: Uuid, seq: i32) -> Result<(), sqlx::Error> {
    let job = NewJob::now(QUEUE, ADVANCE, json!({"run_id": run_id})).dedupe(format!("run:{run_id}:seq:{seq}"));
    queue::enqueue(tx, job).await.map(|_| ())
}

/// `workflow.start {workflow, input}`: the run exists once per job, even if the job is retried.
async fn start_from_job(state: &AppState, job: &Job) -> Result<(), JobError> {
    let payload = &job.payload.0;
    let name = payload["workflow"].as_str().ok_or_else(|| JobError::Permanent("payload has no workflow".into()))?;
    let input = payload.get("input").cloned().unwrap_or(Value::Null);
    let dedupe = format!("job:{}", job.id);
    // A trigger may have chosen the run's id to report it at once.
    let id = payload.get("run_id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok());
    let id = id.unwrap_or_else(Uuid::now_v7);
    let mut tx = state.db.begin().await.map_err(retry)?;
    match state.workflows.get(name) {
        Some(workflow) => create_run_as(&mut tx, id, &workflow, &input, None, Trigger::System, Some(&dedupe)).await,
        None => {
            // Kept as `pending` until a build that defines the workflow picks it up.
            const INSERT: &str = "INSERT INTO workflow_runs (id, workflow, status, input, dedupe_key, error, created_at, \
                updated_at) VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING";
            let error = format!("this version of Cedar does not define the {name} workflow; the run waits for one that does");
            on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(id).bind(name).bind(SqlJson(&input)).bind(&dedupe)
                .bind(&error).bind(Utc::now()).execute(&mut **conn).await.map(|_| id))
        }
    }
    .map_err(retry)?;
    tx.commit().await.map_err(retry)?;
    // The run's first advance job (queued with it) takes it from here; advancing inline as
    // well would race that job and could run a step, and its AI call, twice.
    state.job_wakeup.notify_one();
    Ok(())
}

/// At worker start: runs left `pending` by a build that lacked their definition, or whose
/// first job was lost, get a job again.
pub async fn resume_pending(state: &AppState) -> anyhow::Result<usize> {
    const SQL: &str = "SELECT id, workflow FROM workflow_runs WHERE status = 'pending'";
    let rows: Vec<(Uuid, String)> = on_db!(&state.db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?;
    let mut resumed = 0;
    let mut tx = state.db.begin().await?;
    for (id, workflow) in rows {
        if state.workflows.get(&workflow).is_some() {
            enqueue_advance(&mut tx, id, 0).await?;
            resumed += 1;
        }
    }
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(resumed)
}

#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    workflow: String,
    status: String,
    input: SqlJson<Value>,
    context: SqlJson<Value>,
    current_step: Option<String>,
    step_seq: i32,
    family_id: Option<Uuid>,
}

async fn load(state: &AppState, run_id: Uuid) -> Result<Option<RunRow>, JobError> {
    const SQL: &str = "SELECT id, workflow, status, input, context, current_step, step_seq, family_id \
        FROM workflow_runs WHERE id = $1";
    on_db!(&state.db, pool => sqlx::query_as::<_, RunRow>(SQL).bind(run_id).fetch_optional(pool).await).map_err(retry)
}

/// Runs the run's steps until it finishes, waits for a review, is cancelled, or schedules a
/// retry. Safe to call twice for the same run: a checkpoint only lands on the version it read.
pub async fn advance(state: &AppState, run_id: Uuid) -> Result<(), JobError> {
    loop {
        let Some(run) = load(state, run_id).await? else { return Ok(()) };
        if !matches!(run.status.as_str(), "pending" | "running") {
            return Ok(());
        }
        let Some(workflow) = state.workflows.get(&run.workflow) else { return Ok(()) };
        let Some(step_name) = run.current_step.clone() else {
            prepare(state, &workflow, &run).await?;
            continue;
        };
        let Some(step) = workflow.find(&step_name) else {
            finish(state, &run, "failed", Some(format!("the definition has no step {step_name}"))).await?;
            return Ok(());
        };
        if !run_step(state, &workflow, &run, step).await? {
            return Ok(());
        }
    }
}

/// Checks an unprepared run's input and points it at the first step.
async fn prepare(state: &AppState, workflow: &Workflow, run: &RunRow) -> Result<(), JobError> {
    match workflow.prepare(state, &run.input.0).await {
        Ok(subject) => {
            const SQL: &str = "UPDATE workflow_runs SET current_step = $2, step_seq = 1, subject_kind = $3, \
                subject_id = $4, family_id = $5, error = NULL, updated_at = $6 WHERE id = $1 AND current_step IS NULL";
            on_db!(&state.db, pool => sqlx::query(SQL).bind(run.id).bind(workflow.steps[0].name).bind(subject.kind)
                .bind(subject.id).bind(subject.family_id).bind(Utc::now()).execute(pool).await.map(|_| ()))
            .map_err(retry)
        }
        Err(error) if error.is_transient() => Err(JobError::Retry(format!("{error:#}"))),
        Err(error) => {
            let why = match &error {
                DomainError::Invalid(fields) => {
                    fields.iter().map(|f| format!("{}: {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
                }
                other => other.to_string(),
            };
            finish(state, run, "failed", Some(format!("invalid input: {why}"))).await
        }
    }
}

/// Runs one step once. Returns whether the run may go on in this job.
async fn run_step(state: &AppState, workflow: &Workflow, run: &RunRow, step: &Step) -> Result<bool, JobError> {
    let attempt = begin_step(state, run, step).await?;
    let Some(attempt) = attempt else { return Ok(false) };
    let started = Instant::now();
    let result = if attempt > step.max_attempts {
        // Earlier attempts never reported back (the worker died or hung each time).
        Err(StepError::Fatal(format!("{} attempts did not finish", attempt - 1)))
    } else {
        let cx = StepCtx {
            state: state.clone(),
            run_id: run.id,
            workflow: run.workflow.clone(),
            step: step.name,
            seq: run.step_seq,
            attempt,
            input: run.input.0.clone(),
            context: run.context.0.clone(),
            family_id: run.family_id,
        };
        let running = AssertUnwindSafe((step.run)(cx)).catch_unwind();
        match tokio::time::timeout(step.timeout, running).await {
            Err(_) => Err(StepError::Retry(format!("timed out after {} s", step.timeout.as_secs_f64()))),
            Ok(Err(_panic)) => Err(StepError::Retry("the step panicked".into())),
            Ok(Ok(result)) => result,
        }
    };
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(_) => "succeeded",
        Err(_) => "failed",
    };
    metrics::histogram!("workflow_step_duration_seconds", "workflow" => workflow.name, "step" => step.name, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
    match result {
        Ok(transition) => write_checkpoint(state, workflow, run, step, transition, elapsed, "succeeded").await,
        Err(StepError::Retry(error)) if attempt < step.max_attempts => {
            let delay = step.backoff.saturating_mul(2u32.saturating_pow((attempt - 1) as u32));
            step_failed(state, run, "running", &error, elapsed, Some(delay)).await?;
            tracing::warn!(run = %run.id, step = step.name, attempt, error, "step failed; retrying later");
            Ok(false)
        }
        Err(StepError::Retry(error) | StepError::Fatal(error)) => {
            tracing::warn!(run = %run.id, step = step.name, attempt, error, "step failed for good");
            match step.fallback {
                Some(fallback) => {
                    let output = json!({"error": error, "fell_back_to": fallback});
                    let transition = Transition::goto(fallback, output);
                    step_failed(state, run, "failed", &error, elapsed, None).await?;
                    write_checkpoint(state, workflow, run, step, transition, elapsed, "failed").await
                }
                None => {
                    step_failed(state, run, "failed", &error, elapsed, None).await?;
                    finish(state, run, "failed", Some(format!("step {} failed: {error}", step.name))).await?;
                    Ok(false)
                }
            }
        }
    }
}

/// Marks the run running and records an attempt of the step; `None` if the run moved on.
async fn begin_step(state: &AppState, run: &RunRow, step: &Step) -> Result<Option<i32>, JobError> {
    const RUN: &str = "UPDATE workflow_runs SET status = 'running', started_at = COALESCE(started_at, $3), updated_at = $3 \
        WHERE id = $1 AND step_seq = $2 AND status IN ('pending', 'running')";
    const STEP: &str = "INSERT INTO workflow_steps (id, run_id, seq, name, kind, status, attempts, input, started_at) \
        VALUES ($1, $2, $3, $4, $5, 'running', 1, $6, $7) ON CONFLICT (run_id, seq) DO UPDATE SET attempts = \
        workflow_steps.attempts + 1, status = 'running', started_at = excluded.started_at, error = workflow_steps.error \
        RETURNING attempts";
    let now = Utc::now();
    let input = json!({"input": run.input.0, "context": run.context.0});
    let mut tx = state.db.begin().await.map_err(retry)?;
    let moved = on_tx!(&mut tx, conn => sqlx::query(RUN).bind(run.id).bind(run.step_seq).bind(now)
        .execute(&mut **conn).await.map(|r| r.rows_affected()))
    .map_err(retry)?;
    if moved == 0 {
        return Ok(None);
    }
    let attempts: i32 = on_tx!(&mut tx, conn => sqlx::query_scalar(STEP).bind(Uuid::now_v7()).bind(run.id)
        .bind(run.step_seq).bind(step.name).bind(step.kind.as_str()).bind(SqlJson(&input)).bind(now)
        .fetch_one(&mut **conn).await)
    .map_err(retry)?;
    tx.commit().await.map_err(retry)?;
    Ok(Some(attempts))
}

/// Records a failed attempt; with `retry_in`, queues the next one.
async fn step_failed(
    state: &AppState,
    run: &RunRow,
    status: &str,
    error: &str,
    elapsed: Duration,
    retry_in: Option<Duration>,
) -> Result<(), JobError> {
    const SQL: &str = "UPDATE workflow_steps SET status = $3, error = $4, finished_at = $5, duration_ms = $6 \
        WHERE run_id = $1 AND seq = $2 RETURNING attempts";
    let error: String = error.chars().take(2_000).collect();
    let mut tx = state.db.begin().await.map_err(retry)?;
    let attempts: i32 = on_tx!(&mut tx, conn => sqlx::query_scalar(SQL).bind(run.id).bind(run.step_seq).bind(status)
        .bind(&error).bind(Utc::now()).bind(elapsed.as_millis() as i64).fetch_one(&mut **conn).await)
    .map_err(retry)?;
    if let Some(delay) = retry_in {
        let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        let job = NewJob::now(QUEUE, ADVANCE, json!({"run_id": run.id})).at(at).dedupe(format!(
            "run:{}:seq:{}:attempt:{}",
            run.id,
            run.step_seq,
            attempts + 1
        ));
        queue::enqueue(&mut tx, job).await.map_err(retry)?;
    }
    tx.commit().await.map_err(retry)
}

/// Stores the step's output in the context and moves the run on, in one transaction with the
/// step's own writes (`step_status`: how the step ended). Returns whether the run may go on in
/// this job.
async fn write_checkpoint(
    state: &AppState,
    workflow: &Workflow,
    run: &RunRow,
    step: &Step,
    transition: Transition,
    elapsed: Duration,
    step_status: &str,
) -> Result<bool, JobError> {
    const STEP: &str = "UPDATE workflow_steps SET status = $3, output = $4, finished_at = $5, duration_ms = $6 \
        WHERE run_id = $1 AND seq = $2";
    // A run waiting for review stays at the review's seq; the decision moves it on.
    const RUN: &str = "UPDATE workflow_runs SET context = $3, current_step = $4, \
        step_seq = CASE WHEN $5 = 'waiting_for_review' THEN step_seq ELSE step_seq + 1 END, status = $5, \
        error = $6, updated_at = $7, finished_at = $8 WHERE id = $1 AND step_seq = $2 AND status = 'running'";
    const REVIEW: &str = "INSERT INTO reviews (id, run_id, step_seq, step, workflow, status, subject, proposal, context, \
        proposal_schema, teacher_id, on_approve, on_reject, created_at) \
        VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $12, $13)";
    let Transition { output, next, tx } = transition;
    let mut tx = match tx {
        Some(tx) => tx,
        None => state.db.begin().await.map_err(retry)?,
    };
    let now = Utc::now();
    let mut context = run.context.0.clone();
    if !context.is_object() {
        context = json!({});
    }
    context[step.name] = output.clone();
    let (status, current, error, finished, step_status) = match &next {
        Next::Step(name) => ("running", Some(*name), None, None, step_status),
        Next::Succeed => ("succeeded", None, None, Some(now), step_status),
        Next::Fail(reason) => ("failed", None, Some(reason.clone()), Some(now), step_status),
        Next::Review(_) => ("waiting_for_review", Some(step.name), None, None, "waiting"),
    };
    if let Next::Step(name) = next
        && workflow.find(name).is_none()
    {
        return Err(JobError::Permanent(format!("step {} names an unknown next step {name}", step.name)));
    }
    on_tx!(&mut tx, conn => sqlx::query(STEP).bind(run.id).bind(run.step_seq).bind(step_status).bind(SqlJson(&output))
        .bind(now).bind(elapsed.as_millis() as i64).execute(&mut **conn).await.map(|_| ()))
    .map_err(retry)?;
    let moved = on_tx!(&mut tx, conn => sqlx::query(RUN).bind(run.id).bind(run.step_seq).bind(SqlJson(&context))
        .bind(current).bind(status).bind(&error).bind(now).bind(finished)
        .execute(&mut **conn).await.map(|r| r.rows_affected()))
    .map_err(retry)?;
    if moved == 0 {
        // Cancelled meanwhile, or another worker checkpointed this step first: the step's
        // writes are rolled back with this transaction.
        tx.rollback().await.map_err(retry)?;
        return Ok(false);
    }
    if let Next::Review(request) = &next {
        on_tx!(&mut tx, conn => sqlx::query(REVIEW).bind(Uuid::now_v7()).bind(run.id).bind(run.step_seq).bind(step.name)
            .bind(&run.workflow).bind(SqlJson(&request.subject)).bind(SqlJson(&request.proposal))
            .bind(SqlJson(&request.context)).bind(request.schema.as_ref().map(SqlJson)).bind(request.teacher_id)
            .bind(request.on_approve).bind(request.on_reject).bind(now)
            .execute(&mut **conn).await.map(|_| ()))
        .map_err(retry)?;
    }
    tx.commit().await.map_err(retry)?;
    if finished.is_some() {
        finished_metrics(state, &run.workflow, run.id, status).await;
    }
    Ok(status == "running")
}

/// Ends a run outside a checkpoint (preparation failed, a step failed for good).
async fn finish(state: &AppState, run: &RunRow, status: &str, error: Option<String>) -> Result<(), JobError> {
    const SQL: &str = "UPDATE workflow_runs SET status = $3, error = $4, finished_at = $5, updated_at = $5 \
        WHERE id = $1 AND step_seq = $2 AND status IN ('pending', 'running')";
    let moved = on_db!(&state.db, pool => sqlx::query(SQL).bind(run.id).bind(run.step_seq).bind(status).bind(&error)
        .bind(Utc::now()).execute(pool).await.map(|r| r.rows_affected()))
    .map_err(retry)?;
    if moved == 1 {
        if status == "failed" {
            let event = AuditEvent::new("workflow.failed").subject("workflow_run", run.id);
            let _ = audit::record(&state.db, event.details(json!({"workflow": run.workflow, "error": error}))).await;
        }
        finished_metrics(state, &run.workflow, run.id, status).await;
    }
    Ok(())
}

/// Counts the outcome and records the run's working time (its steps, not the wait for review).
pub(crate) async fn finished_metrics(state: &AppState, workflow: &str, run_id: Uuid, status: &str) {
    metrics::counter!("workflow_runs_total", "workflow" => workflow.to_owned(), "status" => status.to_owned())
        .increment(1);
    const SQL: &str = "SELECT CAST(COALESCE(SUM(duration_ms), 0) AS BIGINT) FROM workflow_steps WHERE run_id = $1 AND kind <> 'review'";
    if let Ok(ms) = on_db!(&state.db, pool => sqlx::query_scalar::<_, i64>(SQL).bind(run_id).fetch_one(pool).await) {
        metrics::histogram!("workflow_run_duration_seconds", "workflow" => workflow.to_owned())
            .record(ms as f64 / 1000.0);
    }
}

/// The decision on a pending review, applied to its run in `tx`: the step's output becomes
/// the decision (with the possibly edited proposal), and the run goes on at `next` (or ends
/// as `cancelled` when `next` is `None`).
pub(crate) async fn resume_after_review(
    tx: &mut Tx,
    run_id: Uuid,
    step_seq: i32,
    step: &str,
    decision: Value,
    next: Option<&str>,
    end_reason: Option<String>,
) -> Result<bool, sqlx::Error> {
    const CONTEXT: &str = "SELECT context FROM workflow_runs WHERE id = $1";
    const STEP: &str = "UPDATE workflow_steps SET status = 'succeeded', output = $3, finished_at = $4 \
        WHERE run_id = $1 AND seq = $2";
    const RUN: &str = "UPDATE workflow_runs SET context = $3, current_step = $4, step_seq = step_seq + 1, status = $5, \
        error = $6, updated_at = $7, finished_at = $8 WHERE id = $1 AND step_seq = $2 AND status = 'waiting_for_review'";
    let now = Utc::now();
    let SqlJson(mut context): SqlJson<Value> =
        on_tx!(tx, conn => sqlx::query_scalar(CONTEXT).bind(run_id).fetch_one(&mut **conn).await)?;
    context[step] = decision.clone();
    on_tx!(tx, conn => sqlx::query(STEP).bind(run_id).bind(step_seq).bind(SqlJson(&decision)).bind(now)
        .execute(&mut **conn).await.map(|_| ()))?;
    let (status, finished) = match next {
        Some(_) => ("running", None),
        None => ("cancelled", Some(now)),
    };
    let moved = on_tx!(tx, conn => sqlx::query(RUN).bind(run_id).bind(step_seq).bind(SqlJson(&context)).bind(next)
        .bind(status).bind(&end_reason).bind(now).bind(finished).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if moved == 1 && next.is_some() {
        enqueue_advance(tx, run_id, step_seq + 1).await?;
    }
    Ok(moved == 1)
}

/// Cancels a run that has not finished: pending reviews close, a step still running loses
/// its checkpoint (its writes roll back). Returns false if the run had already finished.
pub(crate) async fn cancel(tx: &mut Tx, run_id: Uuid, reason: &str) -> Result<bool, sqlx::Error> {
    const RUN: &str = "UPDATE workflow_runs SET status = 'cancelled', error = $2, finished_at = $3, updated_at = $3 \
        WHERE id = $1 AND status IN ('pending', 'running', 'waiting_for_review')";
    const REVIEWS: &str =
        "UPDATE reviews SET status = 'cancelled', decided_at = $2 WHERE run_id = $1 AND status = 'pending'";
    const STEPS: &str = "UPDATE workflow_steps SET status = 'cancelled', finished_at = $2 WHERE run_id = $1 AND status IN ('running', 'waiting')";
    let now = Utc::now();
    let moved = on_tx!(tx, conn => sqlx::query(RUN).bind(run_id).bind(reason).bind(now)
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if moved == 0 {
        return Ok(false);
    }
    on_tx!(tx, conn => sqlx::query(REVIEWS).bind(run_id).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    on_tx!(tx, conn => sqlx::query(STEPS).bind(run_id).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    Ok(true)
}

/// Unfinished runs by workflow and status (including ones waiting for review), for `/metrics`.
pub async fn open_runs(db: &crate::db::Db) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    const SQL: &str = "SELECT workflow, status, COUNT(*) FROM workflow_runs \
        WHERE status IN ('pending', 'running', 'waiting_for_review') GROUP BY workflow, status";
    on_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)
}
