//! Scheduling at school scale: 50 teachers, 5,000 students, 20,000 lessons. Measures a
//! conflict-checked lesson creation and a one-week view, over HTTP, p50/p99.
//!
//! Run: `cargo bench --bench scheduling` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::time::Instant;

use chrono::{TimeZone, Utc};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = support::state(&dir).await;

    // 50 teachers, 5,000 students (2,500 families), 20,000 lessons: each student has four
    // weekly 30-minute lessons, spread over teachers' afternoons from January 2027.
    let started = Instant::now();
    let now = Utc::now();
    let mut tx = state.db.begin().await.unwrap();
    let mut teachers = Vec::new();
    for t in 0..50 {
        let id = Uuid::now_v7();
        cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO teachers (id, first_name, last_name, email, instruments, \
            active, calendar_token, created_at, updated_at) VALUES ($1, 'T', $2, $3, $4, TRUE, $5, $6, $6)")
            .bind(id).bind(format!("{t}")).bind(format!("t{t}@bench.ca")).bind(SqlJson(vec!["piano"]))
            .bind(Uuid::now_v7().to_string()).bind(now).execute(&mut **conn).await.map(|_| ()))
        .unwrap();
        teachers.push(id);
    }
    let mut students = Vec::new();
    for f in 0..2_500 {
        let family = Uuid::now_v7();
        cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO families (id, name, preferred_language, calendar_token, \
            created_at, updated_at) VALUES ($1, $2, 'en', $3, $4, $4)")
            .bind(family).bind(format!("F{f}")).bind(Uuid::now_v7().to_string()).bind(now).execute(&mut **conn).await.map(|_| ()))
        .unwrap();
        for c in 0..2 {
            let id = Uuid::now_v7();
            cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO students (id, family_id, first_name, last_name, instrument, \
                instruments, status, search_text, created_at, updated_at) VALUES ($1, $2, $3, 'S', 'piano', '[]', 'active', 's', $4, $4)")
                .bind(id).bind(family).bind(format!("S{f}-{c}")).bind(now).execute(&mut **conn).await.map(|_| ()))
            .unwrap();
            students.push(id);
        }
    }
    // Student i has lessons with teacher i % 50 at slot (i / 50) of the week: 100 students per
    // teacher, 20 half-hour slots a day over 5 weekdays = 100 slots, no overlaps.
    let base = Utc.with_ymd_and_hms(2027, 1, 4, 21, 0, 0).unwrap();
    for (i, student) in students.iter().enumerate() {
        let teacher = teachers[i % 50];
        let slot = (i / 50) as i64;
        let (day, half_hour) = (slot / 20, slot % 20);
        for week in 0..4 {
            let start = base + chrono::Duration::days(day + 7 * week) + chrono::Duration::minutes(30 * half_hour)
                - chrono::Duration::hours(6);
            cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO lessons (id, teacher_id, student_id, starts_at, ends_at, \
                status, is_makeup, availability_override, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'scheduled', FALSE, FALSE, $6, $6)")
                .bind(Uuid::now_v7()).bind(teacher).bind(student).bind(start).bind(start + chrono::Duration::minutes(30))
                .bind(now).execute(&mut **conn).await.map(|_| ()))
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
    if let cedar::db::Db::Postgres(pool) = &state.db {
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
    }
    println!("seeded 50 teachers, 5,000 students, 20,000 lessons in {:.1} s", started.elapsed().as_secs_f64());

    let (addr, token) = support::serve_with_admin(&state).await;
    let client = reqwest::Client::new();

    // Conflict-checked creates: half collide (409 with the list), half book a free evening.
    let mut created = Vec::new();
    let mut refused = Vec::new();
    for i in 0..400usize {
        let teacher = teachers[i % 50];
        let student = students[(i * 37) % students.len()];
        let collide = i % 2 == 0;
        let start = if collide {
            base - chrono::Duration::hours(6)
        } else {
            base + chrono::Duration::days(28 + (i / 50) as i64) + chrono::Duration::minutes(30 * (i % 50) as i64)
        };
        let body = serde_json::json!({"teacher_id": teacher, "student_id": student, "starts_at": start, "duration_minutes": 30});
        let t = Instant::now();
        let response =
            client.post(format!("http://{addr}/v1/lessons")).bearer_auth(&token).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        response.bytes().await.unwrap();
        match status {
            201 => created.push(t.elapsed()),
            409 => refused.push(t.elapsed()),
            other => panic!("unexpected {other}"),
        }
    }
    support::report("create lesson (booked, 201)", created);
    support::report("create lesson (conflict, 409)", refused);

    // One week of one teacher, and one week of the whole school (first page of 500).
    let mut teacher_week = Vec::new();
    let mut school_week = Vec::new();
    for i in 0..200usize {
        let from = (base - chrono::Duration::days(1)).to_rfc3339().replace('+', "%2B");
        let to = (base + chrono::Duration::days(6)).to_rfc3339().replace('+', "%2B");
        let url = format!("http://{addr}/v1/lessons?teacher_id={}&from={from}&to={to}", teachers[i % 50]);
        let t = Instant::now();
        let body: serde_json::Value = client.get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        teacher_week.push(t.elapsed());
        assert_eq!(body["items"].as_array().unwrap().len(), 100);
        let url = format!("http://{addr}/v1/lessons?from={from}&to={to}&limit=500");
        let t = Instant::now();
        let body: serde_json::Value = client.get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        school_week.push(t.elapsed());
        assert_eq!(body["items"].as_array().unwrap().len(), 500);
    }
    support::report("one teacher's week (100 lessons)", teacher_week);
    support::report("school week, first page (500 lessons)", school_week);
}
