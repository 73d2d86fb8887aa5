//! The enrollment workflow's own time, without the wait for a person: from the request to the
//! review (validate, options, rank, route, review) and from the approval to the welcome email
//! (decide, enroll, welcome), for 20 requests — with the offline provider, and with an
//! OpenAI-compatible fake that answers after one second. Targets: < 100 ms and < 3 s.
//!
//! Run: `cargo bench --bench enrollment` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::time::Duration;

use cedar::app::AppState;
use cedar::config::{AiProviderKind, Secret};
use serde_json::{Value, json};

const REQUESTS: usize = 20;

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
    let teacher = call(
        reqwest::Method::POST,
        "/v1/teachers".into(),
        Some(json!({"first_name": "Ana", "last_name": "Lopes", "email": "ana@bench.ca", "instruments": ["piano"]})),
    )
    .await;
    let teacher = teacher["id"].as_str().unwrap().to_owned();
    let windows: Vec<Value> =
        (1..=5).map(|d| json!({"weekday": d, "start_time": "15:00", "end_time": "20:00"})).collect();
    call(reqwest::Method::PUT, format!("/v1/teachers/{teacher}/availability"), Some(json!({"windows": windows}))).await;
    let family = call(reqwest::Method::POST, "/v1/families".into(), Some(json!({"name": "Famille Banc"}))).await;
    let family = family["id"].as_str().unwrap().to_owned();
    call(reqwest::Method::PATCH, format!("/v1/families/{family}"), Some(json!({"ai_consent": true}))).await;

    // The same database seen through a second state whose AI provider answers in one second.
    let fake = support::slow_openai(rank_in_order).await;
    let mut settings = (*offline.settings).clone();
    settings.ai.openai.api_key = Some(Secret::new("sk-bench"));
    settings.ai.openai.base_url = fake;
    settings.ai.providers = vec![AiProviderKind::OpenAi];
    settings.ai.monthly_budget_micros = i64::MAX;
    let with_ai = AppState::new(offline.db.clone(), settings).unwrap();

    for (label, state) in [("offline provider", &offline), ("provider answering after 1 s", &with_ai)] {
        let (mut to_review, mut after_approval) = (Vec::new(), Vec::new());
        for i in 0..REQUESTS {
            let slot = 15 + (i % 5) as u32;
            let request = call(reqwest::Method::POST, "/v1/enrollments".into(), Some(json!({"family_id": family,
                "student": {"first_name": format!("Kid{i}"), "last_name": "Banc"}, "instrument": "piano", "lesson_minutes": 30,
                "preferred_times": [{"weekday": 1 + i % 5, "start_time": format!("{slot}:00"), "end_time": format!("{slot}:45")}]}))).await;
            let input = json!({"enrollment_id": request["id"]});
            let (review, approval, _) = support::review_round_trip(
                state,
                "enrollment",
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
        support::report("  request → review", to_review);
        support::report("  approval → welcome email", after_approval);
        support::report("  workflow time (both)", total);
    }
}

/// Ranks the options in order (the provider answers after a second).
fn rank_in_order(_body: &Value, prompt: &Value) -> Value {
    let options = prompt["options"].as_array().map_or(0, Vec::len);
    json!({"ranking": (0..options).collect::<Vec<_>>(), "reasons": ["Earliest slot in the window"],
        "welcome_paragraph": "Welcome to the school!"})
}
