//! The schedule_review workflow's own time (everything but the wait for the owner) and the
//! utilization gain it proposes, on two schools:
//! - the `cedar demo` school (8 teachers, ~165 weekly lessons, a waitlist);
//! - the reference instance `medium-1.json` (15 teachers, 8 rooms, 215 active students, 36
//!   waitlisted) loaded through the HTTP API: teachers and their availability, rooms,
//!   families, students, one enrollment request per student carrying its availability as the
//!   preferred times, and a weekly series per current lesson.
//!
//! Offline provider, a 3 s optimizer limit and the default move budget (60); the proposal is
//! approved whole. Targets: own time < 5 s; ≥ +15 % relative utilization on medium-1.
//!
//! Run: `cargo bench --bench schedule_review` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::collections::BTreeMap;

use cedar::app::AppState;
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let demo = support::state(&dir).await;
    cedar::people::demo::load(&demo.db, demo.settings.timezone).await.unwrap();
    let (addr, token) = support::serve_with_admin(&demo).await;
    measure("demo school", &demo, addr, &token).await;

    let dir = tempfile::tempdir().unwrap();
    let mut state = support::state(&dir).await;
    // Cedar has one daily maximum for every teacher; the instance's range from 270 to 360.
    let mut settings = (*state.settings).clone();
    settings.schedule_review.teacher_max_minutes_per_day = 330;
    state = AppState::new(state.db.clone(), settings).unwrap();
    let (addr, token) = support::serve_with_admin(&state).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedule-opt/instances/medium-1.json");
    let instance: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let loaded = std::time::Instant::now();
    load_instance(&state, addr, &token, &instance).await;
    println!("medium-1 loaded through the API in {:.1} s", loaded.elapsed().as_secs_f64());
    measure("medium-1 (via the API)", &state, addr, &token).await;
}

async fn measure(name: &str, state: &AppState, addr: std::net::SocketAddr, token: &str) {
    let http = reqwest::Client::new();
    let view = |run: uuid::Uuid| {
        let request = http.get(format!("http://{addr}/v1/workflow-runs/{run}")).bearer_auth(token);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let approve = |review: String| {
        let request =
            http.post(format!("http://{addr}/v1/reviews/{review}/approve")).bearer_auth(token).json(&json!({}));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let input = json!({"time_limit_secs": 3});
    let (to_review, after, run) = support::review_round_trip(state, "schedule_review", input, view, approve).await;
    let optimizer = &run["context"]["optimize"]["optimizer"];
    let steps: BTreeMap<String, f64> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let started: chrono::DateTime<chrono::Utc> = s["started_at"].as_str()?.parse().ok()?;
            let finished: chrono::DateTime<chrono::Utc> = s["finished_at"].as_str()?.parse().ok()?;
            Some((s["name"].as_str()?.to_owned(), (finished - started).num_milliseconds() as f64 / 1000.0))
        })
        .collect();
    let (before, after_util) = (
        optimizer["utilization_before"].as_f64().unwrap_or(0.0),
        optimizer["utilization_after"].as_f64().unwrap_or(0.0),
    );
    let apply = &run["context"]["apply"];
    println!("{name}:");
    println!(
        "  own time {:.2} s (to review {:.2} s + apply {:.2} s); steps (s): {steps:?}",
        (to_review + after).as_secs_f64(),
        to_review.as_secs_f64(),
        after.as_secs_f64()
    );
    println!(
        "  utilization {before:.1}% -> {after_util:.1}% ({:+.1}% relative); gap {} -> {} min; moved {} of budget {}; \
         waitlisted seated {}; applied {}, skipped {}; emails {}",
        if before > 0.0 { 100.0 * (after_util - before) / before } else { 0.0 },
        optimizer["gap_minutes_before"],
        optimizer["gap_minutes_after"],
        optimizer["moved"],
        optimizer["max_moves"],
        optimizer["waitlisted_placed"],
        apply["applied"].as_array().map_or(0, Vec::len),
        apply["skipped"].as_array().map_or(0, Vec::len),
        apply["emails"]
    );
}

/// Creates the instance's school through the API, lessons as weekly series from next week.
async fn load_instance(state: &AppState, addr: std::net::SocketAddr, token: &str, instance: &Value) {
    let http = reqwest::Client::new();
    let send = |method: reqwest::Method, path: &str, body: Value| {
        let request = http.request(method, format!("http://{addr}{path}")).bearer_auth(token).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            assert!(status.is_success(), "{status}: {body:#}");
            body
        }
    };
    let post = |path: &str, body: Value| send(reqwest::Method::POST, path, body);
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let mut teachers = BTreeMap::new();
    for t in instance["teachers"].as_array().unwrap() {
        let key = t["id"].as_str().unwrap();
        let body = json!({"first_name": "Teacher", "last_name": key, "email": format!("{key}@bench.example"),
            "instruments": t["instruments"]});
        let teacher = id(&post("/v1/teachers", body).await);
        let windows = json!({"windows": t["availability"]});
        send(reqwest::Method::PUT, &format!("/v1/teachers/{teacher}/availability"), windows).await;
        teachers.insert(key.to_owned(), teacher);
    }
    let mut rooms = BTreeMap::new();
    for r in instance["rooms"].as_array().unwrap() {
        let body = json!({"name": r["name"], "capacity": 1, "instruments": r["instruments"]});
        rooms.insert(r["id"].as_str().unwrap().to_owned(), id(&post("/v1/rooms", body).await));
    }
    let mut families = BTreeMap::new();
    let mut students = BTreeMap::new();
    for s in instance["students"].as_array().unwrap() {
        let family_key = s["family_id"].as_str().unwrap().to_owned();
        if !families.contains_key(&family_key) {
            let family = id(&post("/v1/families", json!({"name": format!("Family {family_key}")})).await);
            families.insert(family_key.clone(), family);
        }
        let family = &families[&family_key];
        let waitlisted = s["status"] == "waitlisted";
        let mut body = json!({"family_id": family, "first_name": s["id"], "last_name": "Bench",
            "instrument": s["instrument"], "status": s["status"]});
        if !waitlisted {
            body["teacher_id"] = json!(teachers[s["teacher_id"].as_str().unwrap()]);
        }
        let student = id(&post("/v1/students", body).await);
        let request = json!({"family_id": family, "student_id": student, "instrument": s["instrument"],
            "lesson_minutes": s["lesson_minutes"], "preferred_times": s["availability"]});
        post("/v1/enrollments", request).await;
        students.insert(s["id"].as_str().unwrap().to_owned(), (student, s["lesson_minutes"].clone()));
    }
    // The enrollment workflow is not what is measured: its queued starts are dropped.
    cedar::on_db!(&state.db, pool => sqlx::query("DELETE FROM jobs WHERE kind = 'workflow.start'").execute(pool).await
        .map(|_| ()))
    .unwrap();
    let tz = state.settings.timezone;
    let monday = cedar::time::next_weekday(cedar::time::today(tz), 1);
    for a in instance["current"].as_array().unwrap() {
        let (student, minutes) = &students[a["student_id"].as_str().unwrap()];
        let date = monday + chrono::Duration::days(a["weekday"].as_i64().unwrap() - 1);
        let time = cedar::time::parse_hhmm(a["start_time"].as_str().unwrap()).unwrap();
        let body = json!({"teacher_id": teachers[a["teacher_id"].as_str().unwrap()],
            "student_id": student, "room_id": rooms[a["room_id"].as_str().unwrap()],
            "starts_at": cedar::time::at_local(tz, date, time), "duration_minutes": minutes,
            "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=8"}});
        post("/v1/lessons", body).await;
    }
}
