//! AI for workflow steps: one [`Provider`] trait with OpenAI, Anthropic and offline
//! implementations, and the [`Gateway`] that decides whether an external provider may be asked
//! at all (consent, monthly budget, per-run token cap), tries the providers in order with
//! retries, validates every answer against the task's JSON schema and business rules, records
//! every call, and falls back to the offline provider — so a workflow always gets a usable draft.

mod anthropic;
mod openai;
pub mod schema;

use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::{AiProviderKind, AiSettings};
use crate::on_db;
use crate::privacy::audit::{self, AuditEvent};

/// A structured-output task: what to ask, the shape of the answer, the rules it must obey,
/// and the deterministic answer Cedar gives itself when no external AI may or can answer.
pub struct AiTask {
    /// Names the schema (OpenAI) and the forced tool (Anthropic): `^[a-zA-Z0-9_-]+$`.
    pub name: &'static str,
    /// The system prompt.
    pub instructions: &'static str,
    pub schema: fn() -> Value,
    /// Business rules beyond the schema, given the answer and the task input.
    pub check: fn(&Value, &Value) -> Result<(), String>,
    /// The offline provider: templates and rules over the task input.
    pub offline: fn(&Value) -> Value,
    pub max_tokens: u32,
}

/// One request to a provider.
pub struct AiRequest<'a> {
    pub task: &'a AiTask,
    /// The task input as the user message (JSON of exactly the fields the task needs).
    pub prompt: String,
    pub input: &'a Value,
}

/// A provider's answer: the parsed output (or why it could not be parsed) and the usage.
#[derive(Debug)]
pub struct AiReply {
    pub output: Result<Value, String>,
    /// The answer as text, to quote back when asking for a correction.
    pub raw: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
}

/// Why a provider request failed.
#[derive(Debug)]
pub enum AiError {
    /// Worth retrying: 408, 409, 429, 5xx, 529, timeouts, connection errors.
    Transient { status: Option<u16>, retry_after: Option<Duration>, message: String },
    /// Not worth retrying (400, 401, 403, 404, an unexpected response shape).
    Rejected { status: Option<u16>, message: String },
}

impl std::fmt::Display for AiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient { status: Some(s), message, .. } | Self::Rejected { status: Some(s), message } => {
                write!(f, "HTTP {s}: {message}")
            }
            Self::Transient { message, .. } | Self::Rejected { message, .. } => f.write_str(message),
        }
    }
}

/// An AI provider. External ones speak HTTP; `offline` answers from the task's own rules.
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    fn model(&self) -> &str;
    fn complete<'a>(&'a self, request: &'a AiRequest<'a>) -> BoxFuture<'a, Result<AiReply, AiError>>;
}

/// Cedar's deterministic provider: no network, no cost, always available.
pub struct Offline;

impl Provider for Offline {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn model(&self) -> &str {
        "rules"
    }

    fn complete<'a>(&'a self, request: &'a AiRequest<'a>) -> BoxFuture<'a, Result<AiReply, AiError>> {
        Box::pin(async move {
            let output = (request.task.offline)(request.input);
            Ok(AiReply {
                raw: output.to_string(),
                output: Ok(output),
                model: "rules".into(),
                input_tokens: 0,
                output_tokens: 0,
            })
        })
    }
}

/// Classifies an HTTP error status the way the providers document them.
pub(crate) fn http_error(status: u16, headers: &reqwest::header::HeaderMap, body: &str) -> AiError {
    let message: String = body.chars().take(300).collect();
    if matches!(status, 408 | 409 | 429 | 529) || status >= 500 {
        AiError::Transient { status: Some(status), retry_after: retry_after(headers), message }
    } else {
        AiError::Rejected { status: Some(status), message }
    }
}

/// `retry-after-ms` (OpenAI) or `retry-after` in seconds.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header =
        |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<f64>().ok());
    if let Some(ms) = header("retry-after-ms").filter(|ms| *ms >= 0.0) {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    header("retry-after").filter(|s| *s >= 0.0).map(Duration::from_secs_f64)
}

pub(crate) fn transport_error(error: reqwest::Error) -> AiError {
    let message = if error.is_timeout() { "request timed out".to_owned() } else { format!("request failed: {error}") };
    AiError::Transient { status: None, retry_after: None, message }
}

/// Who is asking: the run and step (for the call log and the token cap) and whose personal
/// data the input carries (for the consent gate).
#[derive(Debug, Clone)]
pub struct AiCaller {
    pub run_id: Option<Uuid>,
    pub step: String,
    /// The family whose data is in the input, if any; external providers need its consent.
    pub family_id: Option<Uuid>,
}

/// What a task produced and how.
#[derive(Debug, Clone, Serialize)]
pub struct AiOutcome {
    pub output: Value,
    pub provider: String,
    pub model: String,
    /// Set when the offline provider answered because external AI was skipped or failed.
    pub fallback_reason: Option<String>,
}

/// The providers in order plus the offline last resort, and the rules for using them.
pub struct Gateway {
    external: Vec<Box<dyn Provider>>,
    settings: AiSettings,
}

impl Gateway {
    pub fn new(settings: &AiSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(settings.timeout).build()?;
        let external = settings
            .providers
            .iter()
            .map(|kind| -> Box<dyn Provider> {
                match kind {
                    AiProviderKind::OpenAi => Box::new(openai::OpenAi::new(http.clone(), &settings.openai)),
                    AiProviderKind::Anthropic => Box::new(anthropic::Anthropic::new(http.clone(), &settings.anthropic)),
                }
            })
            .collect();
        Ok(Self { external, settings: settings.clone() })
    }

    /// Names of the providers tried, in order.
    pub fn provider_names(&self) -> Vec<&'static str> {
        self.external.iter().map(|p| p.name()).chain(["offline"]).collect()
    }

    /// Runs `task` on `input`: external providers if allowed, else (or when they fail) offline.
    pub async fn complete(
        &self,
        state: &AppState,
        caller: &AiCaller,
        task: &AiTask,
        input: &Value,
    ) -> anyhow::Result<AiOutcome> {
        let mut fallback_reason = match self.external_blocked(state, caller).await? {
            Some(reason) => {
                skipped(state, caller, &reason).await;
                Some(reason)
            }
            None if self.external.is_empty() => Some("no external AI provider is configured".to_owned()),
            None => None,
        };
        if fallback_reason.is_none() {
            let mut failures = Vec::new();
            for provider in &self.external {
                match self.ask(state, caller, provider.as_ref(), task, input).await? {
                    Ok(outcome) => return Ok(outcome),
                    Err(why) => failures.push(format!("{}: {why}", provider.name())),
                }
            }
            fallback_reason = Some(failures.join("; "));
        }
        let request = AiRequest { task, prompt: String::new(), input };
        let started = Instant::now();
        let reply = Offline.complete(&request).await.map_err(|e| anyhow::anyhow!("offline provider: {e}"))?;
        let output = reply.output.map_err(|e| anyhow::anyhow!("offline provider: {e}"))?;
        self.record(state, caller, "offline", "rules", (0, 0), started, "ok", None).await?;
        Ok(AiOutcome { output, provider: "offline".into(), model: "rules".into(), fallback_reason })
    }

    /// Why external AI may not be used for this caller, if it may not.
    async fn external_blocked(&self, state: &AppState, caller: &AiCaller) -> anyhow::Result<Option<String>> {
        if self.external.is_empty() {
            return Ok(None);
        }
        if let Some(family) = caller.family_id {
            // The consent register's current state, read at every call: a withdrawal stops runs
            // in flight at their next AI step.
            let kind = crate::privacy::consents::ConsentKind::AiProcessing;
            if !crate::privacy::consents::granted(&state.db, family, kind).await? {
                return Ok(Some("the family has not consented to AI processing".into()));
            }
        }
        let spent = self.month_spend(state).await?;
        if spent >= self.settings.monthly_budget_micros {
            return Ok(Some(format!(
                "the monthly AI budget (CAD {:.2}) is spent",
                self.settings.monthly_budget_micros as f64 / 1e6
            )));
        }
        if let Some(family) = caller.family_id {
            let spent = self.family_month_spend(state, family).await?;
            if spent >= self.settings.family_monthly_micros {
                return Ok(Some(format!(
                    "this family's share of the monthly AI budget (CAD {:.2}) is spent",
                    self.settings.family_monthly_micros as f64 / 1e6
                )));
            }
        }
        if let Some(run) = caller.run_id {
            let used = run_tokens(state, run).await?;
            if used >= self.settings.run_token_cap {
                return Ok(Some(format!("this run used its {} AI tokens", self.settings.run_token_cap)));
            }
        }
        Ok(None)
    }

    /// Millionths of a dollar spent on external AI since the start of this month (school zone).
    pub async fn month_spend(&self, state: &AppState) -> anyhow::Result<i64> {
        const SQL: &str = "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) FROM ai_calls WHERE created_at >= $1";
        let since = month_start(Utc::now(), state.settings.timezone);
        let spent: i64 = on_db!(&state.db, pool => sqlx::query_scalar(SQL).bind(since).fetch_one(pool).await)?;
        Ok(spent)
    }

    /// What the runs about `family` spent on external AI this month.
    async fn family_month_spend(&self, state: &AppState, family: Uuid) -> anyhow::Result<i64> {
        const SQL: &str = "SELECT CAST(COALESCE(SUM(c.cost_micros), 0) AS BIGINT) FROM ai_calls c \
            JOIN workflow_runs r ON r.id = c.run_id WHERE c.created_at >= $1 AND r.family_id = $2";
        let since = month_start(Utc::now(), state.settings.timezone);
        let spent: i64 =
            on_db!(&state.db, pool => sqlx::query_scalar(SQL).bind(since).bind(family).fetch_one(pool).await)?;
        Ok(spent)
    }

    pub fn monthly_budget_micros(&self) -> i64 {
        self.settings.monthly_budget_micros
    }

    /// One provider, with retries on transient errors and one correction round for an invalid
    /// answer. `Ok(Err(why))`: this provider could not help.
    async fn ask(
        &self,
        state: &AppState,
        caller: &AiCaller,
        provider: &dyn Provider,
        task: &AiTask,
        input: &Value,
    ) -> anyhow::Result<Result<AiOutcome, String>> {
        let schema = (task.schema)();
        let base_prompt = input.to_string();
        let mut prompt = base_prompt.clone();
        let mut corrections = 0;
        let mut retries = 0;
        loop {
            let request = AiRequest { task, prompt: prompt.clone(), input };
            let started = Instant::now();
            match provider.complete(&request).await {
                Ok(reply) => {
                    let tokens = (reply.input_tokens, reply.output_tokens);
                    let verdict = reply.output.and_then(|output| {
                        schema::validate(&schema, &output).and_then(|()| (task.check)(&output, input)).map(|()| output)
                    });
                    match verdict {
                        Ok(output) => {
                            self.record(state, caller, provider.name(), &reply.model, tokens, started, "ok", None)
                                .await?;
                            return Ok(Ok(AiOutcome {
                                output,
                                provider: provider.name().into(),
                                model: reply.model,
                                fallback_reason: None,
                            }));
                        }
                        Err(error) => {
                            self.record(
                                state,
                                caller,
                                provider.name(),
                                &reply.model,
                                tokens,
                                started,
                                "invalid_output",
                                Some(&error),
                            )
                            .await?;
                            if corrections == 1 {
                                return Ok(Err(format!("invalid answer twice ({error})")));
                            }
                            corrections += 1;
                            prompt = format!(
                                "{base_prompt}\n\nYour previous answer was rejected: {error}.\nPrevious answer: {}\n\
                                 Answer again, following the schema and the rules.",
                                reply.raw.chars().take(4_000).collect::<String>()
                            );
                        }
                    }
                }
                Err(error) => {
                    let message = error.to_string();
                    self.record(
                        state,
                        caller,
                        provider.name(),
                        provider.model(),
                        (0, 0),
                        started,
                        "error",
                        Some(&message),
                    )
                    .await?;
                    let AiError::Transient { retry_after, .. } = error else {
                        return Ok(Err(message));
                    };
                    if retries >= self.settings.max_retries {
                        return Ok(Err(message));
                    }
                    let wait = retry_after.unwrap_or_else(|| Duration::from_millis(500 * 2u64.pow(retries)));
                    if wait > Duration::from_secs(30) {
                        return Ok(Err(format!("{message} (asked to wait {} s)", wait.as_secs())));
                    }
                    retries += 1;
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        state: &AppState,
        caller: &AiCaller,
        provider: &str,
        model: &str,
        (input_tokens, output_tokens): (i64, i64),
        started: Instant,
        outcome: &str,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        let (input_price, output_price) = if provider == "offline" { (0.0, 0.0) } else { self.settings.price(model) };
        // CAD per million tokens × tokens = millionths of a dollar.
        let cost = (input_tokens as f64 * input_price + output_tokens as f64 * output_price).round() as i64;
        let latency = started.elapsed();
        const INSERT: &str = "INSERT INTO ai_calls (id, run_id, step, provider, model, input_tokens, output_tokens, \
            cost_micros, latency_ms, outcome, error, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
        const RUN: &str =
            "UPDATE workflow_runs SET ai_tokens = ai_tokens + $2, ai_cost_micros = ai_cost_micros + $3 WHERE id = $1";
        let error: Option<String> = error.map(|e| e.chars().take(1_000).collect());
        let mut tx = state.db.begin().await?;
        crate::on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(Uuid::now_v7()).bind(caller.run_id).bind(&caller.step)
            .bind(provider).bind(model).bind(input_tokens).bind(output_tokens).bind(cost).bind(latency.as_millis() as i64)
            .bind(outcome).bind(&error).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
        if let Some(run) = caller.run_id
            && input_tokens + output_tokens + cost > 0
        {
            crate::on_tx!(&mut tx, conn => sqlx::query(RUN).bind(run).bind(input_tokens + output_tokens).bind(cost)
                .execute(&mut **conn).await.map(|_| ()))?;
        }
        tx.commit().await?;
        let provider = provider.to_owned();
        metrics::counter!("ai_requests_total", "provider" => provider.clone(), "outcome" => outcome.to_owned())
            .increment(1);
        metrics::histogram!("ai_request_duration_seconds", "provider" => provider.clone())
            .record(latency.as_secs_f64());
        metrics::counter!("ai_tokens_total", "provider" => provider.clone(), "direction" => "input")
            .increment(input_tokens as u64);
        metrics::counter!("ai_tokens_total", "provider" => provider.clone(), "direction" => "output")
            .increment(output_tokens as u64);
        metrics::counter!("ai_cost_cad_micros_total", "provider" => provider).increment(cost as u64);
        Ok(())
    }
}

async fn run_tokens(state: &AppState, run: Uuid) -> anyhow::Result<i64> {
    const SQL: &str =
        "SELECT CAST(COALESCE(SUM(input_tokens + output_tokens), 0) AS BIGINT) FROM ai_calls WHERE run_id = $1";
    Ok(on_db!(&state.db, pool => sqlx::query_scalar(SQL).bind(run).fetch_one(pool).await)?)
}

/// Tells the office that external AI was skipped: an audit event (the admin's trail), a log
/// line and a metric. The step's output also carries the reason into the review.
async fn skipped(state: &AppState, caller: &AiCaller, reason: &str) {
    tracing::warn!(run = ?caller.run_id, step = %caller.step, reason, "external AI skipped; using the offline provider");
    metrics::counter!("ai_external_skipped_total").increment(1);
    let mut event =
        AuditEvent::new("ai.external_skipped").details(serde_json::json!({"reason": reason, "step": caller.step}));
    if let Some(run) = caller.run_id {
        event = event.subject("workflow_run", run);
    }
    if let Err(error) = audit::record(&state.db, event).await {
        tracing::warn!(error = %error, "recording the skipped AI call failed");
    }
}

/// Grounding for an [`AiTask::check`]: every number in `text` must appear in the task's input,
/// so a model cannot invent a count, a time or a grade.
pub fn numbers_grounded(text: &str, input: &Value) -> Result<(), String> {
    let given = input.to_string();
    let mut number = String::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_digit() {
            number.push(c);
        } else if !number.is_empty() {
            if !given.contains(&number) {
                return Err(format!("the number {number} is not in the data given; use only the given facts"));
            }
            number.clear();
        }
    }
    Ok(())
}

/// Midnight on the first of `now`'s month in `zone`, as UTC.
pub fn month_start(now: DateTime<Utc>, zone: chrono_tz::Tz) -> DateTime<Utc> {
    let local = now.with_timezone(&zone);
    zone.with_ymd_and_hms(local.year(), local.month(), 1, 0, 0, 0)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}
