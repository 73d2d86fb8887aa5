//! Shared set-up of the HTTP benchmarks: an app on a fresh database, served on loopback, with
//! a signed-in admin; and percentile reporting.

use std::net::SocketAddr;
use std::time::Duration;

use cedar::app::AppState;
use cedar::config::Settings;

/// A fresh, migrated app on SQLite (temp dir) or `BENCH_DATABASE_URL`.
pub async fn state(dir: &tempfile::TempDir) -> AppState {
    let url = std::env::var("BENCH_DATABASE_URL").ok();
    let mut settings = Settings::for_data_dir(dir.path(), url.as_deref()).unwrap();
    settings.auth_rate_per_ip = 1_000_000;
    settings.auth_rate_per_account = 1_000_000;
    settings.rate_limit_per_minute = 0;
    let state = AppState::init(settings).await.unwrap();
    println!("backend: {}", state.db.backend().as_str());
    state
}

/// Serves the app on 127.0.0.1 and returns its address and an admin's access token.
#[allow(dead_code, reason = "not every benchmark signs in")]
pub async fn serve_with_admin(state: &AppState) -> (SocketAddr, String) {
    let (email, password) = ("bench-admin@example.ca", "bench-password-1");
    cedar::auth::create_admin_cli(&state.db, email, password.into(), None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = cedar::app::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let session: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{addr}/auth/v1/token?grant_type=password"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (addr, session["access_token"].as_str().unwrap().to_owned())
}

/// One workflow run measured the way the owner lives it: started, advanced to its review
/// (timed), approved over HTTP by `approve`, advanced to the end (timed). `view` reads the
/// run over HTTP. Returns (to review, after approval, the finished run as `view` shows it).
#[allow(dead_code, reason = "only the workflow benchmarks time reviews")]
pub async fn review_round_trip<V, VF, A, AF>(
    state: &AppState,
    workflow: &str,
    input: serde_json::Value,
    view: V,
    approve: A,
) -> (Duration, Duration, serde_json::Value)
where
    V: Fn(uuid::Uuid) -> VF,
    VF: std::future::Future<Output = serde_json::Value>,
    A: Fn(String) -> AF,
    AF: std::future::Future<Output = serde_json::Value>,
{
    use cedar::workflows::engine::{self, Trigger};
    let definition = state.workflows.get(workflow).unwrap();
    let subject = definition.prepare(state, &input).await.unwrap();
    let mut tx = state.db.begin().await.unwrap();
    let run = engine::create_run(&mut tx, &definition, &input, Some(&subject), Trigger::System, None).await.unwrap();
    tx.commit().await.unwrap();
    let started = std::time::Instant::now();
    engine::advance(state, run).await.unwrap();
    let to_review = started.elapsed();
    let run_view = view(run).await;
    assert_eq!(run_view["status"], "waiting_for_review", "{run_view:#}");
    approve(run_view["review_id"].as_str().unwrap().to_owned()).await;
    let started = std::time::Instant::now();
    engine::advance(state, run).await.unwrap();
    let after_approval = started.elapsed();
    let run_view = view(run).await;
    assert_eq!(run_view["status"], "succeeded", "{run_view:#}");
    (to_review, after_approval, run_view)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Prints p50 and p99 of the samples.
#[allow(dead_code, reason = "not every benchmark reports percentiles")]
pub fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<44} n={:<5} p50 {:>6.2} ms   p99 {:>6.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
}

/// An OpenAI-compatible chat-completions endpoint that answers after one second with
/// `answer(request body, prompt)` as the structured output; returns its base URL (`…/v1`).
#[allow(dead_code, reason = "only the workflow benchmarks use it")]
pub async fn slow_openai(answer: fn(&serde_json::Value, &serde_json::Value) -> serde_json::Value) -> String {
    use axum::extract::State;
    type Answer = fn(&serde_json::Value, &serde_json::Value) -> serde_json::Value;
    async fn complete(State(answer): State<Answer>, body: String) -> axum::Json<serde_json::Value> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let prompt: serde_json::Value = serde_json::from_str(body["messages"][1]["content"].as_str().unwrap()).unwrap();
        let output = answer(&body, &prompt);
        axum::Json(serde_json::json!({"id": "chatcmpl-bench", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": output.to_string()},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 450, "completion_tokens": 100, "total_tokens": 550}}))
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(complete)).with_state(answer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}
