//! The workflow engine: checkpoints and crash-resume, retries, timeouts, fallbacks,
//! cancellation, unique runs, the review inbox, and AI providers (fallback between them,
//! invalid answers, consent and budget gates) against HTTP fakes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cedar::app::AppState;
use cedar::config::{AiProviderKind, Secret, Settings};
use cedar::jobs::queue::{self, NewJob};
use cedar::workflows::engine::{Definitions, Step, StepCtx, StepError, Subject, Transition, Workflow};
use serde_json::{Value, json};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Backend, TestApp, assert_problem, spawn_app_with_workflows};
use crate::fakes::{ANTHROPIC_KEY, AiFake, OPENAI_KEY, Reply};
use crate::helpers::{School, json_ok, school, send, start_worker, stop_worker};

/// Polls the run until its status is `wanted`; returns the run.
async fn wait_for_run(app: &TestApp, admin: &str, id: &str, wanted: &str) -> Value {
    let mut run = Value::Null;
    for _ in 0..1200 {
        run = json_ok(send(app, "GET", &format!("/v1/workflow-runs/{id}"), admin, None).await, 200).await;
        if run["status"] == wanted {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("run {id} never became {wanted}: {run:#}");
}

fn step<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name}: {run:#}"))
}

async fn audit_count(state: &AppState, action: &str) -> i64 {
    cedar::on_db!(&state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = $1")
        .bind(action).fetch_one(pool).await)
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// The engine, with a test workflow: first (action) → slow (api) → second (action), where
// `slow` does what the test tells it and falls back to `rescue` (action) when it fails for good.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slow {
    Ok,
    /// Never returns (a hung or killed worker).
    Hang,
    /// Fails with a retryable error this many more times.
    Fail(u32),
    /// Waits for `release`, then succeeds.
    Gate,
}

#[derive(Clone)]
struct Control {
    slow: Arc<Mutex<Slow>>,
    release: Arc<Notify>,
}

fn set(control: &Control, slow: Slow) {
    *control.slow.lock().unwrap() = slow;
}

async fn audit_in_tx(cx: &StepCtx, action: &'static str) -> Result<cedar::db::Tx, StepError> {
    let mut tx = cx.state.db.begin().await?;
    let event = cedar::privacy::audit::AuditEvent::new(action).subject("workflow_run", cx.run_id);
    cedar::privacy::audit::record_tx(&mut tx, event).await?;
    Ok(tx)
}

fn test_flow(control: Control) -> Workflow {
    Workflow::new("test_flow", "engine test", |_state: AppState, input: Value| async move {
        if input.get("bad").is_some() {
            return Err(cedar::error::DomainError::invalid("input.bad", "is not allowed"));
        }
        Ok(Subject { kind: "test", id: Uuid::now_v7(), family_id: None, once_key: None })
    })
    .step(Step::action("first", |cx: StepCtx| async move {
        let tx = audit_in_tx(&cx, "test.first").await?;
        Ok(Transition::goto("slow", json!({"done": "first"})).in_tx(tx))
    }))
    .step(
        Step::api("slow", move |_cx: StepCtx| {
            let control = control.clone();
            async move {
                let behaviour = *control.slow.lock().unwrap();
                match behaviour {
                    Slow::Ok => {}
                    Slow::Hang => std::future::pending::<()>().await,
                    Slow::Fail(0) => {}
                    Slow::Fail(n) => {
                        *control.slow.lock().unwrap() = Slow::Fail(n - 1);
                        return Err(StepError::Retry(format!("transient failure ({n} to go)")));
                    }
                    Slow::Gate => control.release.notified().await,
                }
                Ok(Transition::goto("second", json!({"done": "slow"})))
            }
        })
        .attempts(3, Duration::from_millis(100))
        .timeout(Duration::from_secs(3))
        .fallback("rescue"),
    )
    .step(Step::action("rescue", |cx: StepCtx| async move {
        let tx = audit_in_tx(&cx, "test.rescue").await?;
        Ok(Transition::goto("second", json!({"rescued": true})).in_tx(tx))
    }))
    .step(Step::action("second", |cx: StepCtx| async move {
        let tx = audit_in_tx(&cx, "test.second").await?;
        Ok(Transition::succeed(json!({"done": "second"})).in_tx(tx))
    }))
}

async fn engine_app(backend: Backend) -> (TestApp, String, Control) {
    let control = Control { slow: Arc::new(Mutex::new(Slow::Ok)), release: Arc::new(Notify::new()) };
    let definitions = cedar::workflows::builtin().with(test_flow(control.clone()));
    let app = spawn_app_with_workflows(backend, definitions, |_| {}).await;
    let admin = crate::common::admin_token(&app).await;
    (app, admin, control)
}

async fn start_test_run(app: &TestApp, admin: &str) -> String {
    let run = json_ok(
        send(app, "POST", "/v1/workflow-runs", admin, Some(json!({"workflow": "test_flow", "input": {}}))).await,
        201,
    )
    .await;
    // A worker already running may have picked the run up before the answer was read.
    match run["status"].as_str() {
        Some("pending") => assert_eq!(run["current_step"], "first"),
        Some("running") => {}
        other => panic!("a new run is {other:?}"),
    }
    run["id"].as_str().unwrap().to_owned()
}

async fn a_run_resumes_after_its_worker_dies_without_repeating_finished_steps(backend: Backend) {
    let (app, admin, control) = engine_app(backend).await;
    set(&control, Slow::Hang);
    let run_id = start_test_run(&app, &admin).await;
    let (_stop, first_worker) = start_worker(&app.state, Duration::from_secs(1));
    // The first worker finishes `first`, then hangs in `slow`.
    let mut run = Value::Null;
    for _ in 0..1200 {
        run = json_ok(send(&app, "GET", &format!("/v1/workflow-runs/{run_id}"), &admin, None).await, 200).await;
        if run["current_step"] == "slow" && run["steps"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(step(&run, "first")["status"], "succeeded");
    assert_eq!(step(&run, "slow")["status"], "running");
    // The worker process dies: its tasks (and heartbeats) stop, the lease runs out.
    first_worker.abort();
    let _ = first_worker.await;
    set(&control, Slow::Ok);
    let second = start_worker(&app.state, Duration::from_secs(1));
    let run = wait_for_run(&app, &admin, &run_id, "succeeded").await;
    stop_worker(second).await;

    assert_eq!(step(&run, "first")["attempts"], 1);
    assert_eq!(step(&run, "slow")["attempts"], 2, "{run:#}");
    assert_eq!(step(&run, "second")["attempts"], 1);
    assert_eq!(audit_count(&app.state, "test.first").await, 1, "the finished action did not run again");
    assert_eq!(audit_count(&app.state, "test.second").await, 1);
    assert_eq!(run["context"]["first"], json!({"done": "first"}));
    assert_eq!(run["context"]["second"], json!({"done": "second"}));
    assert!(run["finished_at"].is_string());
    // Each step's input is what it saw: the run input and the context so far.
    assert_eq!(step(&run, "slow")["input"]["context"]["first"], json!({"done": "first"}));
}

async fn a_failing_step_is_retried_with_backoff_then_falls_back(backend: Backend) {
    let (app, admin, control) = engine_app(backend).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));

    // Two transient failures, then success on the third and last attempt.
    set(&control, Slow::Fail(2));
    let run_id = start_test_run(&app, &admin).await;
    let run = wait_for_run(&app, &admin, &run_id, "succeeded").await;
    let slow = step(&run, "slow");
    assert_eq!(slow["attempts"], 3);
    assert_eq!(slow["status"], "succeeded");
    assert!(slow["error"].as_str().unwrap().contains("transient failure"), "{slow}");
    // Backoff: 100 ms then 200 ms between attempts.
    let started = chrono::DateTime::parse_from_rfc3339(run["started_at"].as_str().unwrap()).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(run["finished_at"].as_str().unwrap()).unwrap();
    assert!((finished - started).num_milliseconds() >= 300, "{started} → {finished}");
    assert_eq!(audit_count(&app.state, "test.rescue").await, 0);

    // Failing every attempt: the fallback step runs and the run still succeeds.
    set(&control, Slow::Fail(10));
    let run_id = start_test_run(&app, &admin).await;
    let run = wait_for_run(&app, &admin, &run_id, "succeeded").await;
    assert_eq!(step(&run, "slow")["status"], "failed");
    assert_eq!(step(&run, "slow")["attempts"], 3);
    assert_eq!(run["context"]["slow"]["fell_back_to"], "rescue");
    assert_eq!(run["context"]["rescue"], json!({"rescued": true}));
    assert_eq!(audit_count(&app.state, "test.rescue").await, 1);
    stop_worker(worker).await;
}

async fn a_step_that_times_out_counts_as_a_failed_attempt(backend: Backend) {
    let control = Control { slow: Arc::new(Mutex::new(Slow::Hang)), release: Arc::new(Notify::new()) };
    let hung = test_flow(control.clone());
    // The same flow with a short timeout on `slow`.
    let mut flow = hung;
    let slow = flow.steps.iter_mut().find(|s| s.name == "slow").unwrap();
    slow.timeout = Duration::from_millis(200);
    slow.max_attempts = 2;
    let app = spawn_app_with_workflows(backend, Definitions::default().with(flow), |_| {}).await;
    let admin = crate::common::admin_token(&app).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = start_test_run(&app, &admin).await;
    let run = wait_for_run(&app, &admin, &run_id, "succeeded").await;
    let slow = step(&run, "slow");
    assert_eq!(slow["attempts"], 2);
    assert!(slow["error"].as_str().unwrap().contains("timed out"), "{slow}");
    assert_eq!(run["context"]["rescue"], json!({"rescued": true}));
    stop_worker(worker).await;
}

async fn cancelling_a_run_mid_step_rolls_back_the_step_and_stops_it(backend: Backend) {
    let (app, admin, control) = engine_app(backend).await;
    set(&control, Slow::Gate);
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = start_test_run(&app, &admin).await;
    for _ in 0..1200 {
        let run = json_ok(send(&app, "GET", &format!("/v1/workflow-runs/{run_id}"), &admin, None).await, 200).await;
        if run["current_step"] == "slow" && run["status"] == "running" && run["steps"].as_array().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let cancelled =
        json_ok(send(&app, "POST", &format!("/v1/workflow-runs/{run_id}/cancel"), &admin, None).await, 200).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["error"].as_str().unwrap().contains("cancelled by"));
    // The step now finishes, but its checkpoint is refused: nothing after it runs.
    control.release.notify_one();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = json_ok(send(&app, "GET", &format!("/v1/workflow-runs/{run_id}"), &admin, None).await, 200).await;
    assert_eq!(run["status"], "cancelled");
    assert!(run["context"].get("slow").is_none(), "{run:#}");
    assert_eq!(audit_count(&app.state, "test.second").await, 0);
    assert_eq!(audit_count(&app.state, "workflow.cancelled").await, 1);
    // A finished run cannot be cancelled again.
    assert_problem(send(&app, "POST", &format!("/v1/workflow-runs/{run_id}/cancel"), &admin, None).await, 409).await;
    stop_worker(worker).await;
}

async fn runs_start_once_per_trigger_and_bad_input_fails_them(backend: Backend) {
    let (app, admin, _control) = engine_app(backend).await;
    // Business code enqueues `workflow.start` in its own transaction; a dedupe key keeps it unique.
    for _ in 0..2 {
        let mut tx = app.state.db.begin().await.unwrap();
        let job = NewJob::now("workflows", "workflow.start", json!({"workflow": "test_flow", "input": {}}))
            .dedupe("trigger-1");
        queue::enqueue(&mut tx, job).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = app.state.db.begin().await.unwrap();
    let job = NewJob::now("workflows", "workflow.start", json!({"workflow": "test_flow", "input": {"bad": 1}}));
    queue::enqueue(&mut tx, job).await.unwrap();
    // A workflow this build does not define: kept pending, not lost.
    let job = NewJob::now(
        "workflows",
        "workflow.start",
        json!({"workflow": "attendance_digest", "input": {"month": "2026-11"}}),
    );
    queue::enqueue(&mut tx, job).await.unwrap();
    tx.commit().await.unwrap();

    let worker = start_worker(&app.state, Duration::from_secs(30));
    let mut runs = Value::Null;
    for _ in 0..1200 {
        runs = json_ok(send(&app, "GET", "/v1/workflow-runs", &admin, None).await, 200).await;
        let items = runs["items"].as_array().unwrap();
        if items.len() == 3
            && items
                .iter()
                .all(|r| r["status"] != "running" && (r["status"] != "pending" || r["workflow"] == "attendance_digest"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop_worker(worker).await;
    let items = runs["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{runs:#}");
    let of = |status: &str| items.iter().filter(|r| r["status"] == status).collect::<Vec<_>>();
    assert_eq!(of("succeeded").len(), 1, "{runs:#}");
    let failed = of("failed");
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"].as_str().unwrap().contains("input.bad"), "{}", failed[0]);
    let pending = of("pending");
    assert_eq!(pending[0]["workflow"], "attendance_digest");
    assert!(pending[0]["error"].as_str().unwrap().contains("does not define"));
    let filtered =
        json_ok(send(&app, "GET", "/v1/workflow-runs?workflow=test_flow&status=succeeded", &admin, None).await, 200)
            .await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    assert_problem(send(&app, "GET", "/v1/workflow-runs?status=sleeping", &admin, None).await, 422).await;
}

async fn manual_starts_are_checked_and_admin_only(backend: Backend) {
    let (app, admin, _control) = engine_app(backend).await;
    let body = assert_problem(
        send(&app, "POST", "/v1/workflow-runs", &admin, Some(json!({"workflow": "nope", "input": {}}))).await,
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "workflow");
    let body = assert_problem(
        send(&app, "POST", "/v1/workflow-runs", &admin, Some(json!({"workflow": "practice_plan", "input": {}}))).await,
        422,
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "input.student_id");
    let none = json_ok(send(&app, "GET", "/v1/workflow-runs", &admin, None).await, 200).await;
    assert_eq!(none["items"], json!([]), "a refused start creates nothing");
    let (_, teacher) = crate::common::user_with_role(&app, &admin, "t@cedarheights.ca", "teacher").await;
    assert_problem(send(&app, "GET", "/v1/workflow-runs", &teacher, None).await, 403).await;
    assert_problem(
        send(&app, "POST", "/v1/workflow-runs", &teacher, Some(json!({"workflow": "test_flow", "input": {}}))).await,
        403,
    )
    .await;
    assert_problem(send(&app, "GET", &format!("/v1/workflow-runs/{}", Uuid::now_v7()), &admin, None).await, 404).await;
    let workflows = json_ok(send(&app, "GET", "/v1/workflows", &admin, None).await, 200).await;
    let plan = workflows["items"].as_array().unwrap().iter().find(|w| w["name"] == "practice_plan").unwrap();
    let kinds: Vec<&str> = plan["steps"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["api", "ai", "action", "decision", "review", "action"]);
}

// ---------------------------------------------------------------------------------------
// practice_plan: the demo workflow, with the offline provider and with provider fakes.

fn plan(minutes: i64) -> Value {
    json!({
        "focus": "Even scales and a steady pulse",
        "goals": ["D major scale hands together at 80 bpm", "Clap the rhythm of bars 9-16 before playing"],
        "minutes_per_day": minutes,
        "message": "Great work this week, Hélène! Keep it steady."
    })
}

async fn practice_app(
    backend: Backend,
    fake: Option<&AiFake>,
    adjust: impl FnOnce(&mut Settings),
) -> (TestApp, School) {
    let fake = fake.cloned();
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), move |settings| {
        if let Some(fake) = fake {
            settings.ai.openai.api_key = Some(Secret::new(OPENAI_KEY));
            settings.ai.openai.base_url = fake.openai_url();
            settings.ai.anthropic.api_key = Some(Secret::new(ANTHROPIC_KEY));
            settings.ai.anthropic.base_url = fake.anthropic_url();
            settings.ai.providers = vec![AiProviderKind::OpenAi, AiProviderKind::Anthropic];
            settings.ai.max_retries = 1;
        }
        adjust(settings);
    })
    .await;
    let s = school(&app).await;
    let helene = &s.students[0];
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/students/{helene}/progress-notes"),
            &s.teacher1,
            Some(json!({
            "text": "Scales in D major are uneven; rhythm in bars 9-16 rushes.", "goals": "Steady tempo"})),
        )
        .await,
        201,
    )
    .await;
    (app, s)
}

async fn consent(app: &TestApp, s: &School, granted: bool) {
    let family = s.family_a.clone();
    json_ok(
        send(app, "PATCH", &format!("/v1/families/{family}"), &s.parent_a, Some(json!({"ai_consent": granted}))).await,
        200,
    )
    .await;
}

async fn start_plan(app: &TestApp, s: &School) -> String {
    let run = json_ok(
        send(
            app,
            "POST",
            "/v1/workflow-runs",
            &s.admin,
            Some(json!({"workflow": "practice_plan", "input": {"student_id": s.students[0]}})),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(run["subject_kind"], "student");
    run["id"].as_str().unwrap().to_owned()
}

async fn pending_review(app: &TestApp, token: &str, run_id: &str) -> Value {
    let reviews = json_ok(send(app, "GET", "/v1/reviews", token, None).await, 200).await;
    reviews["items"].as_array().unwrap().iter().find(|r| r["run_id"] == run_id).cloned().unwrap_or(Value::Null)
}

async fn practice_plan_runs_offline_and_a_teacher_approves_with_edits(backend: Backend) {
    let (app, s) = practice_app(backend, None, |_| {}).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = start_plan(&app, &s).await;
    let run = wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    assert_eq!(run["current_step"], "review");
    let review_id = run["review_id"].as_str().unwrap().to_owned();

    // The teacher of the student sees it with what they need to judge it; the other teacher
    // and parents do not.
    let review = pending_review(&app, &s.teacher1, &run_id).await;
    assert_eq!(review["id"], review_id);
    assert_eq!(review["workflow"], "practice_plan");
    assert_eq!(review["subject"]["name"], "Hélène");
    assert_eq!(review["context"]["drafted_by"]["provider"], "offline");
    assert!(review["context"]["fallback_reason"].as_str().unwrap().contains("no external AI provider"));
    assert!(review["context"]["recent_notes"][0]["body"].as_str().unwrap().contains("Scales in D major"));
    let goals = review["proposal"]["goals"].as_array().unwrap();
    assert!(
        goals.iter().any(|g| g.as_str().unwrap().contains("scales")),
        "rule-based goals follow the notes: {goals:?}"
    );
    assert!(goals.iter().any(|g| g.as_str().unwrap().to_lowercase().contains("rhythm")));
    assert_eq!(pending_review(&app, &s.teacher2, &run_id).await, Value::Null);
    assert_problem(send(&app, "GET", &format!("/v1/reviews/{review_id}"), &s.teacher2, None).await, 404).await;
    assert_problem(
        send(&app, "POST", &format!("/v1/reviews/{review_id}/approve"), &s.teacher2, Some(json!({}))).await,
        404,
    )
    .await;
    assert_problem(send(&app, "GET", "/v1/reviews", &s.parent_a, None).await, 403).await;

    // Edits must keep to the proposal's schema.
    let bad = assert_problem(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{review_id}/approve"),
            &s.teacher1,
            Some(json!({"edits": {"minutes_per_day": 500}})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(bad["errors"][0]["field"], "edits");
    assert_eq!(pending_review(&app, &s.teacher1, &run_id).await["status"], "pending");

    let approved = json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{review_id}/approve"),
            &s.teacher1,
            Some(json!({"edits": {"minutes_per_day": 30}})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["edits"], json!({"minutes_per_day": 30}));
    let run = wait_for_run(&app, &s.admin, &run_id, "succeeded").await;
    stop_worker(worker).await;

    let names: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["gather", "draft", "route", "review", "save"]);
    assert!(run["steps"].as_array().unwrap().iter().all(|s| s["status"] == "succeeded"), "{run:#}");
    assert_eq!(run["context"]["review"]["edited"], true);
    assert_eq!(run["ai_calls"][0]["provider"], "offline");
    assert_eq!(run["ai_cost_micros"], 0);
    // The approved, edited plan is filed once as a progress note.
    let notes = json_ok(
        send(&app, "GET", &format!("/v1/students/{}/progress-notes", s.students[0]), &s.admin, None).await,
        200,
    )
    .await;
    let plans: Vec<&Value> = notes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["text"].as_str().unwrap().starts_with("Practice plan"))
        .collect();
    assert_eq!(plans.len(), 1, "{notes:#}");
    assert!(plans[0]["text"].as_str().unwrap().contains("Daily practice: 30 minutes"));
    // A decided review cannot be decided again.
    assert_problem(
        send(&app, "POST", &format!("/v1/reviews/{review_id}/reject"), &s.admin, Some(json!({"reason": "late"}))).await,
        409,
    )
    .await;
    assert_eq!(audit_count(&app.state, "review.approved").await, 1);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    for series in [
        "workflow_runs_total{workflow=\"practice_plan\",status=\"succeeded\"}",
        "workflow_step_duration_seconds_bucket{workflow=\"practice_plan\",step=\"draft\",outcome=\"succeeded\"",
        "workflow_run_duration_seconds_count{workflow=\"practice_plan\"}",
        "workflow_runs_open{workflow=\"practice_plan\",status=\"waiting_for_review\"}",
        "reviews_total{workflow=\"practice_plan\",decision=\"approved_with_edits\"}",
        "ai_requests_total{provider=\"offline\",outcome=\"ok\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
}

async fn rejecting_or_cancelling_a_review_ends_the_run(backend: Backend) {
    let (app, s) = practice_app(backend, None, |_| {}).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = start_plan(&app, &s).await;
    let run = wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    let review_id = run["review_id"].as_str().unwrap().to_owned();
    assert_problem(
        send(&app, "POST", &format!("/v1/reviews/{review_id}/reject"), &s.admin, Some(json!({"reason": "  "}))).await,
        422,
    )
    .await;
    let rejected = json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{review_id}/reject"),
            &s.admin,
            Some(json!({"reason": "Exam repertoire first"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(rejected["reason"], "Exam repertoire first");
    let run = wait_for_run(&app, &s.admin, &run_id, "cancelled").await;
    assert!(run["error"].as_str().unwrap().contains("Exam repertoire first"));
    assert_eq!(run["context"]["review"]["decision"], "rejected");
    assert_eq!(audit_count(&app.state, "review.rejected").await, 1);

    // Cancelling a run that waits for review closes the review.
    let run_id = start_plan(&app, &s).await;
    let run = wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    let review_id = run["review_id"].as_str().unwrap().to_owned();
    json_ok(send(&app, "POST", &format!("/v1/workflow-runs/{run_id}/cancel"), &s.admin, None).await, 200).await;
    let review = json_ok(send(&app, "GET", &format!("/v1/reviews/{review_id}"), &s.admin, None).await, 200).await;
    assert_eq!(review["status"], "cancelled");
    assert_problem(
        send(&app, "POST", &format!("/v1/reviews/{review_id}/approve"), &s.admin, Some(json!({}))).await,
        409,
    )
    .await;
    stop_worker(worker).await;
    let notes = json_ok(
        send(&app, "GET", &format!("/v1/students/{}/progress-notes", s.students[0]), &s.admin, None).await,
        200,
    )
    .await;
    assert_eq!(notes["items"].as_array().unwrap().len(), 1, "no plan was filed");
}

async fn openai_429_then_500_falls_back_to_anthropic(backend: Backend) {
    let fake = AiFake::start(plan(25)).await;
    fake.script_openai([Reply::Status(429, Some(20)), Reply::Status(500, None)]);
    // Anthropic is overloaded once (529, `retry-after: 0`), then answers.
    fake.script_anthropic([Reply::Status(529, Some(0))]);
    let (app, s) = practice_app(backend, Some(&fake), |_| {}).await;
    consent(&app, &s, true).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = start_plan(&app, &s).await;
    let run = wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    stop_worker(worker).await;

    let openai = fake.requests("openai");
    assert_eq!(openai.len(), 2, "one retry after 429, then give up after 500");
    let body = &openai[0].body;
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["response_format"]["json_schema"]["name"], "practice_plan");
    // Only the fields the task needs: no family name, no ids, no contact details.
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("Hélène") && prompt.contains("Scales in D major"), "{prompt}");
    assert!(!prompt.contains("Côté") && !prompt.contains(&s.students[0]) && !prompt.contains("example.ca"), "{prompt}");
    let anthropic = fake.requests("anthropic");
    assert_eq!(anthropic.len(), 2);
    assert_eq!(anthropic[0].headers["anthropic-version"], "2023-06-01");
    assert_eq!(anthropic[0].body["tool_choice"], json!({"type": "tool", "name": "practice_plan"}));

    let review = pending_review(&app, &s.admin, &run_id).await;
    assert_eq!(review["proposal"], plan(25));
    assert_eq!(review["context"]["drafted_by"]["provider"], "anthropic");
    let calls: Vec<(String, String)> = run["ai_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["provider"].as_str().unwrap().to_owned(), c["outcome"].as_str().unwrap().to_owned()))
        .collect();
    let expected = [("openai", "error"), ("openai", "error"), ("anthropic", "error"), ("anthropic", "ok")];
    assert_eq!(calls, expected.map(|(p, o)| (p.to_owned(), o.to_owned())));
    // 510 input and 150 output tokens at CAD 1.40 / 7.00 per million.
    assert_eq!(run["ai_tokens"], 660);
    assert_eq!(run["ai_cost_micros"], 510 * 14 / 10 + 150 * 7);
    let usage = json_ok(send(&app, "GET", "/v1/ai/usage", &s.admin, None).await, 200).await;
    assert_eq!(usage["spent_micros"], 510 * 14 / 10 + 150 * 7);
    assert_eq!(usage["providers"], json!(["openai", "anthropic", "offline"]));
}

async fn an_invalid_answer_is_corrected_once_then_offline_takes_over(backend: Backend) {
    let fake = AiFake::start(plan(25)).await;
    let mut repeated = plan(25);
    repeated["goals"] = json!(["Scales daily", "scales daily"]);
    fake.script_openai([Reply::Answer(plan(500)), Reply::Answer(repeated)]);
    let (app, s) = practice_app(backend, Some(&fake), |settings| {
        settings.ai.providers = vec![AiProviderKind::OpenAi];
    })
    .await;
    consent(&app, &s, true).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = start_plan(&app, &s).await;
    let run = wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    stop_worker(worker).await;

    let requests = fake.requests("openai");
    assert_eq!(requests.len(), 2);
    let correction = requests[1].body["messages"][1]["content"].as_str().unwrap();
    assert!(correction.contains("rejected") && correction.contains("minutes_per_day"), "{correction}");
    let review = pending_review(&app, &s.admin, &run_id).await;
    assert_eq!(review["context"]["drafted_by"]["provider"], "offline");
    assert!(review["context"]["fallback_reason"].as_str().unwrap().contains("invalid answer twice"), "{review:#}");
    let outcomes: Vec<&str> =
        run["ai_calls"].as_array().unwrap().iter().map(|c| c["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["invalid_output", "invalid_output", "ok"]);
}

async fn no_consent_or_no_budget_means_no_request_leaves(backend: Backend) {
    let fake = AiFake::start(plan(25)).await;
    // A budget of one millionth of a dollar: the first real call spends it.
    let (app, s) = practice_app(backend, Some(&fake), |settings| settings.ai.monthly_budget_micros = 1).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));

    // No consent (the default): nothing reaches any provider.
    let run_id = start_plan(&app, &s).await;
    wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    assert_eq!(fake.requests("openai").len() + fake.requests("anthropic").len(), 0);
    let review = pending_review(&app, &s.admin, &run_id).await;
    assert!(review["context"]["fallback_reason"].as_str().unwrap().contains("consented"), "{review:#}");

    // With consent the provider answers, and that spends the budget.
    consent(&app, &s, true).await;
    let run_id = start_plan(&app, &s).await;
    wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    assert_eq!(fake.requests("openai").len(), 1);
    assert_eq!(pending_review(&app, &s.admin, &run_id).await["context"]["drafted_by"]["provider"], "openai");

    // Budget spent: offline again, and the office is told.
    let run_id = start_plan(&app, &s).await;
    wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    stop_worker(worker).await;
    assert_eq!(fake.requests("openai").len(), 1, "no request after the budget ran out");
    let review = pending_review(&app, &s.admin, &run_id).await;
    assert!(review["context"]["fallback_reason"].as_str().unwrap().contains("budget"), "{review:#}");
    assert_eq!(audit_count(&app.state, "ai.external_skipped").await, 2);
    let usage = json_ok(send(&app, "GET", "/v1/ai/usage", &s.admin, None).await, 200).await;
    assert_eq!(usage["exhausted"], true);
    assert_eq!(audit_count(&app.state, "family.ai_consent_changed").await, 1);
}

async fn a_run_over_its_token_cap_stays_offline(backend: Backend) {
    let fake = AiFake::start(plan(25)).await;
    let (app, s) = practice_app(backend, Some(&fake), |settings| settings.ai.run_token_cap = 0).await;
    consent(&app, &s, true).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = start_plan(&app, &s).await;
    wait_for_run(&app, &s.admin, &run_id, "waiting_for_review").await;
    stop_worker(worker).await;
    assert_eq!(fake.requests("openai").len(), 0);
    let review = pending_review(&app, &s.admin, &run_id).await;
    assert!(review["context"]["fallback_reason"].as_str().unwrap().contains("AI tokens"), "{review:#}");
}

/// One family's runs may spend only their share of the monthly budget: past it, that family's
/// runs are drafted offline (and say why) while the school's budget is left for the others.
async fn one_family_cannot_spend_the_schools_ai_budget(backend: Backend) {
    let fake = AiFake::start(plan(25)).await;
    let (app, s) = practice_app(backend, Some(&fake), |settings| settings.ai.family_monthly_micros = 1).await;
    consent(&app, &s, true).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let first = start_plan(&app, &s).await;
    wait_for_run(&app, &s.admin, &first, "waiting_for_review").await;
    let second = start_plan(&app, &s).await;
    wait_for_run(&app, &s.admin, &second, "waiting_for_review").await;
    stop_worker(worker).await;
    assert_eq!(fake.requests("openai").len(), 1, "the family's share was spent by the first run");
    let review = pending_review(&app, &s.admin, &second).await;
    assert!(review["context"]["fallback_reason"].as_str().unwrap().contains("family's share"), "{review:#}");
    let usage = json_ok(send(&app, "GET", "/v1/ai/usage", &s.admin, None).await, 200).await;
    assert_eq!(usage["exhausted"], false, "the school's budget is not spent: {usage}");
}

backend_tests!(
    one_family_cannot_spend_the_schools_ai_budget,
    a_run_resumes_after_its_worker_dies_without_repeating_finished_steps,
    a_failing_step_is_retried_with_backoff_then_falls_back,
    a_step_that_times_out_counts_as_a_failed_attempt,
    cancelling_a_run_mid_step_rolls_back_the_step_and_stops_it,
    runs_start_once_per_trigger_and_bad_input_fails_them,
    manual_starts_are_checked_and_admin_only,
    practice_plan_runs_offline_and_a_teacher_approves_with_edits,
    rejecting_or_cancelling_a_review_ends_the_run,
    openai_429_then_500_falls_back_to_anthropic,
    an_invalid_answer_is_corrected_once_then_offline_takes_over,
    no_consent_or_no_budget_means_no_request_leaves,
    a_run_over_its_token_cap_stays_offline,
);
