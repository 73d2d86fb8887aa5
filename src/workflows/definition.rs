//! How a workflow is defined: named steps of a kind (`api | ai | decision | action | review`),
//! each an async function from its [`StepCtx`] to a [`Transition`], with attempts, backoff,
//! timeout and fallback. The engine (`engine.rs`) runs them; the built-in list is
//! `workflows::builtin`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::ai::{AiCaller, AiOutcome, AiTask};
use crate::app::AppState;
use crate::db::Tx;
use crate::error::DomainError;

crate::text_enum! {
    /// Where a workflow run is.
    pub enum RunStatus {
        Pending = "pending",
        Running = "running",
        WaitingForReview = "waiting_for_review",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

crate::text_enum! {
    /// A person's decision on a review, or its absence.
    pub enum ReviewStatus {
        Pending = "pending",
        Approved = "approved",
        Rejected = "rejected",
        Cancelled = "cancelled",
    }
}

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

impl StepError {
    /// A retryable failure, for `map_err`.
    pub fn retry(error: impl std::fmt::Display) -> Self {
        Self::Retry(error.to_string())
    }
}

impl<E: Into<anyhow::Error>> From<E> for StepError {
    fn from(error: E) -> Self {
        Self::Retry(format!("{:#}", error.into()))
    }
}

pub type StepResult = Result<Transition, StepError>;
pub(super) type StepFn = Arc<dyn Fn(StepCtx) -> BoxFuture<'static, StepResult> + Send + Sync>;
type PrepareFn = Arc<dyn Fn(AppState, Value) -> BoxFuture<'static, Result<Subject, DomainError>> + Send + Sync>;

/// What a run is about: shown in lists and used by the consent gate.
#[derive(Debug, Clone)]
pub struct Subject {
    pub kind: &'static str,
    pub id: Uuid,
    /// The family whose personal data the run handles.
    pub family_id: Option<Uuid>,
    /// At most one run per key (e.g. one schedule review per week): a second start finds the
    /// first run, unless that one failed or was cancelled.
    pub once_key: Option<String>,
}

/// One step of a workflow.
pub struct Step {
    pub name: &'static str,
    pub kind: StepKind,
    pub(super) run: StepFn,
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
        Fut: Future<Output = Result<Subject, DomainError>> + Send + 'static,
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

    pub async fn prepare(&self, state: &AppState, input: &Value) -> Result<Subject, DomainError> {
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

    /// [`StepCtx::ai`] for a run about many families (a school-wide review): the input carries
    /// `family`'s personal data, so external providers need that family's consent.
    pub async fn ai_about(&self, task: &AiTask, input: &Value, family: Uuid) -> anyhow::Result<AiOutcome> {
        let caller = AiCaller { run_id: Some(self.run_id), step: self.step.to_owned(), family_id: Some(family) };
        self.state.ai.complete(&self.state, &caller, task, input).await
    }
}

/// A step's result: its output (stored in the context under the step's name) and what
/// happens next. Carrying `tx` makes the step's writes commit together with the checkpoint.
pub struct Transition {
    pub(super) output: Value,
    pub(super) next: Next,
    pub(super) tx: Option<Tx>,
}

pub(super) enum Next {
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
