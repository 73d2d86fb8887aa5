//! The payment_issue workflow's own time, without the wait for a person: from a billing
//! question to the review (merge, gather, classify, propose, route, review) and from the
//! approval to the reply and tasks (act), for 20 questions — with the offline provider, and
//! with an OpenAI-compatible fake that answers each request after one second (a question
//! takes two requests: classify and propose). Targets: < 100 ms and < 3 s.
//!
//! Run: `cargo bench --bench payment_issue` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::time::Duration;

use cedar::app::AppState;
use cedar::config::{AiProviderKind, Secret};
use serde_json::{Value, json};

const QUESTIONS: usize = 20;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let offline = support::state(&dir).await;
    let (addr, admin) = support::serve_with_admin(&offline).await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: String, body: Option<Value>| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let mut request = http.request(method, format!("http://{addr}{path}")).bearer_auth(admin);
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            assert!(response.status().is_success(), "{path}: {}", response.status());
            response.json::<Value>().await.unwrap()
        }
    };
    // One invoice per family: 20 families with a month of weekly lessons each.
    let teacher = call(
        reqwest::Method::POST,
        "/v1/teachers".into(),
        Some(json!({"first_name": "Ana", "last_name": "Lopes", "email": "ana@bench.ca", "instruments": ["piano"]})),
    )
    .await;
    let teacher = teacher["id"].as_str().unwrap().to_owned();
    call(
        reqwest::Method::POST,
        "/v1/tuition-rates".into(),
        Some(json!({"lesson_minutes": 30, "per_lesson_cents": 3500, "monthly_cents": 14000})),
    )
    .await;
    let mut families = Vec::new();
    for i in 0..QUESTIONS {
        let family =
            call(reqwest::Method::POST, "/v1/families".into(), Some(json!({"name": format!("Famille {i}")}))).await;
        let family = family["id"].as_str().unwrap().to_owned();
        call(reqwest::Method::PATCH, format!("/v1/families/{family}"), Some(json!({"ai_consent": true}))).await;
        let student = call(
            reqwest::Method::POST,
            "/v1/students".into(),
            Some(json!({"family_id": family,
            "first_name": format!("Kid{i}"), "last_name": "Banc", "instrument": "piano", "teacher_id": teacher})),
        )
        .await;
        let start = format!("2026-12-{:02}T{}:00:00Z", 1 + i % 5, 14 + i / 5);
        call(
            reqwest::Method::POST,
            "/v1/lessons".into(),
            Some(json!({"teacher_id": teacher, "student_id": student["id"],
            "starts_at": start, "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"},
            "override_availability": true})),
        )
        .await;
        families.push(family);
    }
    call(
        reqwest::Method::POST,
        "/v1/billing/runs".into(),
        Some(json!({"period_start": "2026-12-01", "period_end": "2026-12-31"})),
    )
    .await;
    let invoices = call(reqwest::Method::GET, "/v1/invoices?limit=100".into(), None).await;
    let invoices: Vec<(String, String)> = invoices["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i["family_id"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(invoices.len(), QUESTIONS);

    // The same database seen through a second state whose AI provider answers in one second.
    let fake = support::slow_openai(answer_question).await;
    let mut settings = (*offline.settings).clone();
    settings.ai.openai.api_key = Some(Secret::new("sk-bench"));
    settings.ai.openai.base_url = fake;
    settings.ai.providers = vec![AiProviderKind::OpenAi];
    settings.ai.monthly_budget_micros = i64::MAX;
    settings.ai.run_token_cap = i64::MAX;
    let with_ai = AppState::new(offline.db.clone(), settings).unwrap();

    for (label, state) in [("offline provider", &offline), ("provider answering after 1 s", &with_ai)] {
        let (mut to_review, mut after_approval) = (Vec::new(), Vec::new());
        for (invoice, family) in &invoices {
            // The question is recorded through the API (its own run waits in the queue, which
            // no worker serves here); the measured run is advanced directly.
            let inquiry = call(
                reqwest::Method::POST,
                "/v1/billing/inquiries".into(),
                Some(json!({"family_id": family,
                "invoice_id": invoice, "message": "Why are there four lessons on this invoice?"})),
            )
            .await;
            let input = json!({"invoice_id": invoice, "reason": "inquiry", "inquiry_id": inquiry["id"]});
            let (review, approval, _) = support::review_round_trip(
                state,
                "payment_issue",
                input,
                |run| call(reqwest::Method::GET, format!("/v1/workflow-runs/{run}"), None),
                |review| call(reqwest::Method::POST, format!("/v1/reviews/{review}/approve"), Some(json!({}))),
            )
            .await;
            to_review.push(review);
            after_approval.push(approval);
        }
        let total: Vec<Duration> = to_review.iter().zip(&after_approval).map(|(a, b)| *a + *b).collect();
        println!("{label}:");
        support::report("  question → review", to_review);
        support::report("  approval → reply and tasks", after_approval);
        support::report("  workflow time (both)", total);
    }
}

/// Classifies as a question about a charge, and keeps the options in order with a short reply
/// (the provider answers after a second).
fn answer_question(body: &Value, prompt: &Value) -> Value {
    if body["response_format"]["json_schema"]["name"] == "payment_issue_classification" {
        json!({"category": "question_about_charge", "evidence": "four lessons"})
    } else {
        let options = prompt["options"].as_array().map_or(0, Vec::len);
        json!({"ranking": (0..options).collect::<Vec<_>>(), "reply": "December had four lessons on your day."})
    }
}
