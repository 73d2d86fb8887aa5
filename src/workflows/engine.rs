//! The workflow engine. A workflow is a list of named steps defined in Rust; each step returns
//! a [`Transition`] (its output and what comes next). The engine persists every step's input,
//! output, attempts, timings and error, and checkpoints the run's context after every step in
//! the same transaction as the step's own database writes, so a run resumes after a crash at
//! the step it was on and never repeats a finished step. Steps run in `workflow.run` jobs on
//! the `workflows` queue; a `review` transition pauses the run until a person decides.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::ai::{AiCaller, AiOutcome, AiTask};
use crate::app::AppState;
use crate::db::Tx;
use crate::error::ApiError;
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::{JobError, Registry};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub const QUEUE: &str = "workflows";
/// A job that creates a run from `{workflow, input}` (enqueued by business code) and runs it.
pub const START: &str = "workflow.start";
/// A job that advances the run `{run_id}` as far as it can go.
pub const ADVANCE: &str = "workflow.run";

pub const RUN_STATUSES: &[&str] = &["pending", "running", "waiting_for_review", "succeeded", "failed", "cancelled"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Calls an internal service or an external API.
    Api,
    /// Asks an AI provider for structured output (see [`StepCtx::ai`]).
    Ai,
    /// Chooses the next step from the context.
    Decision,
    /// A business operation; its writes commit with the checkpoint.
    Action,
    /// Pauses the run until a person approves, edits or rejects.
    Review,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Ai => "ai",
            Self::Decision => "decision",
            Self::Action => "action",
            Self::Review => "review",
        }
    }
}

/// How a step failed.
#[derive(Debug)]
pub enum StepError {
    /// Worth another attempt (per the step's retry policy).
    Retry(String),
    /// Will not work however often it is tried: straight to the fallback, or the run fails.
    Fatal(String),
}

impl<E: Into<anyhow::Error>> From<E> for StepError {
    fn from(error: E) -> Self {
        Self::Retry(format!("{:#}", error.into()))
    }
}

pub type StepResult = Result<Transition, StepError>;
type StepFn = Arc<dyn Fn(StepCtx) -> BoxFuture<'static, StepResult> + Send + Sync>;
type PrepareFn = Arc<dyn Fn(AppState, Value) -> BoxFuture<'static, Result<Subject, ApiError>> + Send + Sync>;

/// What a run is about: shown in lists and used by the consent gate.
#[derive(Debug, Clone)]
pub struct Subject {
    pub kind: &'static str,
    pub id: Uuid,
    /// The family whose personal data the run handles.
    pub family_id: Option<Uuid>,
}

/// One step of a workflow.
pub struct Step {
    pub name: &'static str,
    pub kind: StepKind,
    run: StepFn,
    /// Attempts before the step counts as failed (crashes and timeouts count too).
    pub max_attempts: i32,
    /// Delay before the second attempt; doubled for each further one.
    pub backoff: Duration,
    pub timeout: Duration,
    /// Where the run goes when the step fails for good; without one, the run fails.
    pub fallback: Option<&'static str>,
}

impl Step {
    fn new<F, Fut>(name: &'static str, kind: StepKind, run: F) -> Self
    where
        F: Fn(StepCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        Self {
            name,
            kind,
            run: Arc::new(move |cx| Box::pin(run(cx))),
            max_attempts: 3,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            fallback: None,
        }
    }

    pub fn api<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(StepCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        Self::new(name, StepKind::Api, run)
    }

    pub fn ai<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(StepCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        Self::new(name, StepKind::Ai, run)
    }

    pub fn decision<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(StepCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        Self::new(name, StepKind::Decision, run)
    }

    pub fn action<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(StepCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        Self::new(name, StepKind::Action, run)
    }

    pub fn review<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn(StepCtx) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult> + Send + 'static,
    {
        Self::new(name, StepKind::Review, run)
    }

    /// Runs the step's function once, outside the engine (tests wrap steps with it).
    pub fn call(&self, cx: StepCtx) -> BoxFuture<'static, StepResult> {
        (self.run)(cx)
    }

    pub fn attempts(mut self, max_attempts: i32, backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.backoff = backoff;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn fallback(mut self, step: &'static str) -> Self {
        self.fallback = Some(step);
        self
    }
}

/// A workflow definition: steps in Rust, the first one is where a run starts.
pub struct Workflow {
    pub name: &'static str,
    pub description: &'static str,
    pub steps: Vec<Step>,
    prepare: PrepareFn,
}

impl Workflow {
    /// `prepare` checks a run's input (422 on a manual start) and names its subject.
    pub fn new<F, Fut>(name: &'static str, description: &'static str, prepare: F) -> Self
    where
        F: Fn(AppState, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Subject, ApiError>> + Send + 'static,
    {
        Self {
            name,
            description,
            steps: Vec::new(),
            prepare: Arc::new(move |state, input| Box::pin(prepare(state, input))),
        }
    }

    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    pub fn find(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub async fn prepare(&self, state: &AppState, input: &Value) -> Result<Subject, ApiError> {
        (self.prepare)(state.clone(), input.clone()).await
    }

    /// Every step a transition may name exists (checked when definitions are registered).
    fn check(&self) {
        assert!(!self.steps.is_empty(), "workflow {} has no steps", self.name);
        for step in &self.steps {
            if let Some(fallback) = step.fallback {
                assert!(
                    self.find(fallback).is_some(),
                    "{}: fallback {fallback} of {} is not a step",
                    self.name,
                    step.name
                );
            }
        }
    }
}

/// The workflows this build knows.
#[derive(Default)]
pub struct Definitions {
    workflows: HashMap<&'static str, Arc<Workflow>>,
}

impl Definitions {
    /// The built-in workflows.
    pub fn with(mut self, workflow: Workflow) -> Self {
        workflow.check();
        self.workflows.insert(workflow.name, Arc::new(workflow));
        self
    }

    pub fn get(&self, name: &str) -> Option<Arc<Workflow>> {
        self.workflows.get(name).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Workflow>> {
        let mut all: Vec<_> = self.workflows.values().cloned().collect();
        all.sort_by_key(|w| w.name);
        all
    }
}

/// What a step sees.
#[derive(Clone)]
pub struct StepCtx {
    pub state: AppState,
    pub run_id: Uuid,
    pub workflow: String,
    pub step: &'static str,
    /// This step's position in the run (a step visited twice has two).
    pub seq: i32,
    /// 1 on the first attempt.
    pub attempt: i32,
    pub input: Value,
    /// Outputs of the steps finished so far, by step name.
    pub context: Value,
    pub family_id: Option<Uuid>,
}

impl StepCtx {
    /// The output of an earlier step (`Null` if it has not run).
    pub fn output(&self, step: &str) -> &Value {
        self.context.get(step).unwrap_or(&Value::Null)
    }

    /// A key naming this step of this run: the same on every attempt, so an external call
    /// made with it acts once however often the step is retried.
    pub fn idempotency_key(&self) -> String {
        format!("cedar-run-{}-step-{}", self.run_id, self.seq)
    }

    /// Runs an AI task through the gateway. `personal`: the input carries the run's family's
    /// personal data, so external providers need that family's consent.
    pub async fn ai(&self, task: &AiTask, input: &Value, personal: bool) -> anyhow::Result<AiOutcome> {
        let caller = AiCaller {
            run_id: Some(self.run_id),
            step: self.step.to_owned(),
            family_id: if personal { self.family_id } else { None },
        };
        self.state.ai.complete(&self.state, &caller, task, input).await
    }
}

/// A step's result: its output (stored in the context under the step's name) and what
/// happens next. Carrying `tx` makes the step's writes commit together with the checkpoint.
pub struct Transition {
    output: Value,
    next: Next,
    tx: Option<Tx>,
}

enum Next {
    Step(&'static str),
    Succeed,
    Fail(String),
    Review(ReviewRequest),
}

/// What a review step asks a person to decide.
pub struct ReviewRequest {
    /// What the proposal is about (names, ids), for the inbox.
    pub subject: Value,
    /// What the workflow proposes; approving may edit its fields.
    pub proposal: Value,
    /// What the reviewer needs to judge it: the source data, what the AI was asked, why.
    pub context: Value,
    /// The proposal's JSON schema; edits must keep to it.
    pub schema: Option<Value>,
    /// Besides admins, this teacher may decide (e.g. for their own student).
    pub teacher_id: Option<Uuid>,
    pub on_approve: &'static str,
    /// Without one, a rejection ends the run as `cancelled`.
    pub on_reject: Option<&'static str>,
}

impl Transition {
    pub fn goto(next: &'static str, output: Value) -> Self {
        Self { output, next: Next::Step(next), tx: None }
    }

    pub fn succeed(output: Value) -> Self {
        Self { output, next: Next::Succeed, tx: None }
    }

    pub fn fail(reason: impl Into<String>, output: Value) -> Self {
        Self { output, next: Next::Fail(reason.into()), tx: None }
    }

    pub fn review(output: Value, request: ReviewRequest) -> Self {
        Self { output, next: Next::Review(request), tx: None }
    }

    /// Commits `tx` (the step's writes) together with the checkpoint.
    pub fn in_tx(mut self, tx: Tx) -> Self {
        self.tx = Some(tx);
        self
    }
}

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
    const INSERT: &str = "INSERT INTO workflow_runs (id, workflow, status, input, current_step, step_seq, subject_kind, \
        subject_id, family_id, started_by, dedupe_key, created_at, updated_at) \
        VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) ON CONFLICT DO NOTHING";
    const EXISTING: &str = "SELECT id FROM workflow_runs WHERE dedupe_key = $1";
    let id = Uuid::now_v7();
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
    let mut tx = state.db.begin().await.map_err(retry)?;
    let run_id = match state.workflows.get(name) {
        Some(workflow) => create_run(&mut tx, &workflow, &input, None, Trigger::System, Some(&dedupe)).await,
        None => {
            // Kept as `pending` until a build that defines the workflow picks it up.
            const INSERT: &str = "INSERT INTO workflow_runs (id, workflow, status, input, dedupe_key, error, created_at, \
                updated_at) VALUES ($1, $2, 'pending', $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING";
            let error = format!("this version of Cedar does not define the {name} workflow; the run waits for one that does");
            let id = Uuid::now_v7();
            on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(id).bind(name).bind(SqlJson(&input)).bind(&dedupe)
                .bind(&error).bind(Utc::now()).execute(&mut **conn).await.map(|_| id))
        }
    }
    .map_err(retry)?;
    tx.commit().await.map_err(retry)?;
    advance(state, run_id).await
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
        Err(ApiError::Internal(error)) => Err(JobError::Retry(format!("{error:#}"))),
        Err(error) => {
            let why = match &error {
                ApiError::Validation(fields) => {
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
