//! `Idempotency-Key`: replay, misuse, concurrency, failures that may be retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use cedar::app::AppState;
use cedar::db::CommitMark;
use cedar::error::ApiError;
use cedar::http::Json;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, TestApp, admin_token, assert_problem, spawn_app_with};

/// A probe that counts how often it really ran; each run returns a new id.
fn counting_probes(runs: Arc<AtomicUsize>) -> Router<AppState> {
    let slow_runs = runs.clone();
    let flaky_runs = runs.clone();
    Router::new()
        .route(
            "/probe/things",
            post(move |Json(input): Json<Value>| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let id = uuid::Uuid::now_v7();
                    (
                        StatusCode::CREATED,
                        [("location", format!("/probe/things/{id}"))],
                        Json(json!({"id": id, "input": input})),
                    )
                }
            }),
        )
        .route(
            "/probe/slow-things",
            post(move || {
                let runs = slow_runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    (StatusCode::CREATED, Json(json!({"id": uuid::Uuid::now_v7()})))
                }
            }),
        )
        .route(
            "/probe/flaky",
            post(move || {
                let runs = flaky_runs.clone();
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                        Err(ApiError::Internal(anyhow::anyhow!("first attempt fails")))
                    } else {
                        Ok((StatusCode::CREATED, Json(json!({"ok": true}))))
                    }
                }
            }),
        )
}

/// Probes that commit a room and then fail the way a dying process would: by panicking
/// before the response is stored, or by answering 500 after the commit.
fn committing_probes(runs: Arc<AtomicUsize>) -> Router<AppState> {
    let json_runs = runs.clone();
    let failing_runs = runs.clone();
    Router::new()
        .route(
            "/probe/rooms-then-crash",
            post(move |State(state): State<AppState>, Json(input): Json<Value>| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let id =
                        insert_room(&state, &input, |id| CommitMark::answer_is(201, format!("/v1/rooms/{id}"))).await;
                    panic!("the process dies after committing room {id}");
                    #[allow(unreachable_code)]
                    StatusCode::CREATED
                }
            }),
        )
        .route(
            "/probe/rooms-json-then-crash",
            post(move |State(state): State<AppState>, Json(input): Json<Value>| {
                let runs = json_runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let id =
                        insert_room(&state, &input, |id| CommitMark::answer_with_json(201, &json!({"room": id}))).await;
                    panic!("the process dies after committing room {id}");
                    #[allow(unreachable_code)]
                    StatusCode::CREATED
                }
            }),
        )
        .route(
            "/probe/rooms-then-500",
            post(move |State(state): State<AppState>, Json(input): Json<Value>| {
                let runs = failing_runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    insert_room(&state, &input, |id| CommitMark::answer_is(201, format!("/v1/rooms/{id}"))).await;
                    Err::<StatusCode, _>(ApiError::Internal(anyhow::anyhow!("the answer is lost after the commit")))
                }
            }),
        )
}

async fn insert_room(state: &AppState, input: &Value, declare: impl FnOnce(uuid::Uuid)) -> uuid::Uuid {
    let id = uuid::Uuid::now_v7();
    let mut tx = state.db.begin().await.unwrap();
    cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO rooms (id, name, capacity, created_at, updated_at) \
        VALUES ($1, $2, 1, $3, $3)").bind(id).bind(input["name"].as_str().unwrap()).bind(chrono::Utc::now())
        .execute(&mut **conn).await.map(|_| ()))
    .unwrap();
    declare(id);
    tx.commit().await.unwrap();
    id
}

async fn rooms_named(app: &TestApp, name: &str) -> i64 {
    cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE name = $1")
        .bind(name).fetch_one(pool).await)
    .unwrap()
}

/// The write committed, then the process died before storing the response: the retry is
/// answered from the data (the declared `GET`), and nothing is written twice.
async fn a_commit_before_a_crash_is_answered_not_repeated(backend: Backend) {
    let runs = Arc::new(AtomicUsize::new(0));
    let app = spawn_app_with(backend, committing_probes(runs.clone()), |_| {}).await;
    let admin = format!("Bearer {}", admin_token(&app).await);
    let first = send(&app, "/probe/rooms-then-crash", Some("k1"), json!({"name": "Studio 9"}), Some(&admin)).await;
    assert_eq!(first.status(), 500);
    let retry = send(&app, "/probe/rooms-then-crash", Some("k1"), json!({"name": "Studio 9"}), Some(&admin)).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let room: Value = retry.json().await.unwrap();
    assert_eq!(room["name"], "Studio 9");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(rooms_named(&app, "Studio 9").await, 1);

    // A JSON answer declared before the commit is stored with the write.
    let body = json!({"name": "Studio 10"});
    assert_eq!(send(&app, "/probe/rooms-json-then-crash", Some("k2"), body.clone(), Some(&admin)).await.status(), 500);
    let retry = send(&app, "/probe/rooms-json-then-crash", Some("k2"), body, Some(&admin)).await;
    assert_eq!(retry.status(), 201);
    let answer: Value = retry.json().await.unwrap();
    assert!(answer["room"].is_string());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(rooms_named(&app, "Studio 10").await, 1);

    // A 5xx after the commit is not "worth retrying": the key stays, the retry is rebuilt.
    let body = json!({"name": "Studio 11"});
    assert_eq!(send(&app, "/probe/rooms-then-500", Some("k3"), body.clone(), Some(&admin)).await.status(), 500);
    let retry = send(&app, "/probe/rooms-then-500", Some("k3"), body, Some(&admin)).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(rooms_named(&app, "Studio 11").await, 1);
}

/// The real handlers declare their answers: a family created before a crash is found, not
/// created again, and a lesson booked before a crash is not a conflict with itself.
async fn real_creates_survive_a_lost_response(backend: Backend) {
    let app = crate::common::spawn_app(backend).await;
    let admin = format!("Bearer {}", admin_token(&app).await);
    let family = json!({"name": "Crash family"});
    let first: Value =
        send(&app, "/v1/families", Some("fam-1"), family.clone(), Some(&admin)).await.json().await.unwrap();
    // What a process that died right after the commit leaves behind.
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE idempotency_keys SET state = 'applied', \
        response_status = NULL, response_headers = NULL, response_body = NULL").execute(pool).await.map(|_| ()))
    .unwrap();
    let retry = send(&app, "/v1/families", Some("fam-1"), family, Some(&admin)).await;
    assert_eq!(retry.status(), 201);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let again: Value = retry.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["name"], "Crash family");
    let families: i64 = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM families \
        WHERE name = 'Crash family'").fetch_one(pool).await)
    .unwrap();
    assert_eq!(families, 1);

    // A booking stores its whole answer in the booking's own transaction.
    let school = crate::helpers::school(&app).await;
    let admin = format!("Bearer {}", school.admin);
    let booking = json!({"teacher_id": school.teacher1_id, "student_id": school.students[0],
        "starts_at": "2027-03-01T21:00:00Z", "duration_minutes": 30, "override_availability": true,
        "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=3"}});
    let first = send(&app, "/v1/lessons", Some("lesson-1"), booking.clone(), Some(&admin)).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["occurrences"].as_array().unwrap().len(), 3);
    let stored: (String, Option<i32>) = cedar::on_db!(&app.state.db, pool => sqlx::query_as("SELECT state, \
        response_status FROM idempotency_keys WHERE idempotency_key = 'lesson-1'").fetch_one(pool).await)
    .unwrap();
    assert_eq!(stored, ("completed".to_owned(), Some(201)));
    let retry = send(&app, "/v1/lessons", Some("lesson-1"), booking, Some(&admin)).await;
    assert_eq!(retry.status(), 201);
    let retry: Value = retry.json().await.unwrap();
    assert_eq!(retry["occurrences"], first["occurrences"]);
}

/// A claim held by a live request is renewed while it runs, so its lease can be short: a
/// dead process's claim lapses within `LEASE`, a live one's never does.
async fn a_running_claim_is_renewed(backend: Backend) {
    let (app, _runs) = app_with_counter(backend).await;
    let slow = {
        let app_client = app.client.clone();
        let url = app.url("/probe/slow-things");
        tokio::spawn(async move {
            app_client.post(url).header("idempotency-key", "slow").json(&json!({})).send().await.unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let busy = send(&app, "/probe/slow-things", Some("slow"), json!({}), None).await;
    assert_eq!(busy.status(), 409);
    assert_eq!(busy.headers()["retry-after"], "1");
    let lease: chrono::DateTime<chrono::Utc> = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar(
        "SELECT locked_until FROM idempotency_keys WHERE idempotency_key = 'slow'").fetch_one(pool).await)
    .unwrap();
    let left = lease - chrono::Utc::now();
    assert!(left <= chrono::Duration::from_std(cedar::app::idempotency::LEASE).unwrap(), "{left}");
    assert_eq!(slow.await.unwrap().status(), 201);
}

async fn app_with_counter(backend: Backend) -> (TestApp, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    (spawn_app_with(backend, counting_probes(runs.clone()), |_| {}).await, runs)
}

async fn send(app: &TestApp, path: &str, key: Option<&str>, body: Value, auth: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    request.send().await.unwrap()
}

async fn retry_with_same_key_returns_first_response(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    let first = send(&app, "/probe/things", Some("key-1"), json!({"n": 1}), None).await;
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].clone();
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body: Value = first.json().await.unwrap();

    let second = send(&app, "/probe/things", Some("key-1"), json!({"n": 1}), None).await;
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(second.headers()["location"], location);
    assert_eq!(second.headers()["content-type"], "application/json");
    let second_body: Value = second.json().await.unwrap();
    assert_eq!(first_body, second_body);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the retry must not run the handler again");

    // Without a key every request runs.
    send(&app, "/probe/things", None, json!({"n": 1}), None).await;
    send(&app, "/probe/things", None, json!({"n": 1}), None).await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}

async fn same_key_with_other_body_is_422(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    send(&app, "/probe/things", Some("key-2"), json!({"n": 1}), None).await;
    let misuse = send(&app, "/probe/things", Some("key-2"), json!({"n": 2}), None).await;
    let body = assert_problem(misuse, 422).await;
    assert!(body["detail"].as_str().unwrap().contains("different request"));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn keys_are_per_caller(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    let a: Value =
        send(&app, "/probe/things", Some("shared"), json!({}), Some("Bearer alice")).await.json().await.unwrap();
    let b: Value =
        send(&app, "/probe/things", Some("shared"), json!({}), Some("Bearer bob")).await.json().await.unwrap();
    assert_ne!(a["id"], b["id"]);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

async fn concurrent_requests_with_one_key_run_once(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    let requests = (0..5).map(|_| send(&app, "/probe/slow-things", Some("race"), json!({}), None));
    let responses = futures_util::future::join_all(requests).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 4, "{statuses:?}");
    for response in responses.into_iter().filter(|r| r.status() == 409) {
        assert_eq!(response.headers()["retry-after"], "1");
        assert_problem(response, 409).await;
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Once finished, a retry is a replay.
    let replay = send(&app, "/probe/slow-things", Some("race"), json!({}), None).await;
    assert_eq!(replay.status(), 201);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

async fn server_errors_are_not_stored(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    let first = send(&app, "/probe/flaky", Some("flaky-1"), json!({}), None).await;
    assert_problem(first, 500).await;
    let second = send(&app, "/probe/flaky", Some("flaky-1"), json!({}), None).await;
    assert_eq!(second.status(), 201);
    assert!(second.headers().get("idempotent-replayed").is_none());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

async fn client_errors_are_replayed(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    let bad = app
        .client
        .post(app.url("/probe/things"))
        .header("idempotency-key", "bad-1")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_problem(bad, 400).await;
    let again = app
        .client
        .post(app.url("/probe/things"))
        .header("idempotency-key", "bad-1")
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_problem(again, 400).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

async fn invalid_key_is_400(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    let long = "k".repeat(300);
    assert_problem(send(&app, "/probe/things", Some(&long), json!({}), None).await, 400).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

async fn expired_keys_run_again(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    send(&app, "/probe/things", Some("old"), json!({}), None).await;
    // Age the stored key past its 24 h.
    let past = chrono::Utc::now() - chrono::Duration::hours(25);
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE idempotency_keys SET expires_at = $1")
        .bind(past).execute(pool).await.map(|_| ()))
    .unwrap();
    let again = send(&app, "/probe/things", Some("old"), json!({}), None).await;
    assert!(again.headers().get("idempotent-replayed").is_none());
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    send(&app, "/probe/things", Some("other"), json!({}), None).await;
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE idempotency_keys SET expires_at = $1")
        .bind(past).execute(pool).await.map(|_| ()))
    .unwrap();
    assert_eq!(cedar::app::idempotency::purge_expired(&app.state.db).await.unwrap(), 2);
}

async fn abandoned_in_progress_key_is_taken_over(backend: Backend) {
    let (app, runs) = app_with_counter(backend).await;
    // A process died while holding the key: the row is in progress with an old lease.
    let now = chrono::Utc::now();
    let past = now - chrono::Duration::minutes(5);
    let body = serde_json::to_vec(&json!({"n": 7})).unwrap();
    let fingerprint = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update("POST");
        h.update([0]);
        h.update("/probe/things");
        h.update([0]);
        h.update(&body);
        hex::encode(h.finalize())
    };
    cedar::on_db!(&app.state.db, pool => sqlx::query("INSERT INTO idempotency_keys (scope, idempotency_key, \
        request_hash, state, locked_until, created_at, expires_at) VALUES ('anonymous', 'crashed', $1, 'in_progress', $2, $2, $3)")
        .bind(&fingerprint).bind(past).bind(now + chrono::Duration::hours(20)).execute(pool).await.map(|_| ()))
    .unwrap();
    let response = app
        .client
        .post(app.url("/probe/things"))
        .header("idempotency-key", "crashed")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

backend_tests!(
    retry_with_same_key_returns_first_response,
    same_key_with_other_body_is_422,
    keys_are_per_caller,
    concurrent_requests_with_one_key_run_once,
    server_errors_are_not_stored,
    client_errors_are_replayed,
    invalid_key_is_400,
    expired_keys_run_again,
    abandoned_in_progress_key_is_taken_over,
    token_answers_are_never_stored,
    a_commit_before_a_crash_is_answered_not_repeated,
    real_creates_survive_a_lost_response,
    a_running_claim_is_renewed,
);

/// A sign-in answer holds tokens: even with an Idempotency-Key it is not stored for replay.
async fn token_answers_are_never_stored(backend: Backend) {
    let app = crate::common::spawn_app(backend).await;
    crate::common::sign_up(&app, "keyed@example.ca", "password-1").await;
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url("/auth/v1/token?grant_type=password"))
            .header("idempotency-key", "sign-in-1")
            .json(&json!({"email": "keyed@example.ca", "password": "password-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let stored: i64 = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
        .fetch_one(pool).await)
    .unwrap();
    assert_eq!(stored, 0);
}
