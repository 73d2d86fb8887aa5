//! A billing run at scale: 2,000 families, 3,000 students (half billed per lesson, half flat
//! monthly, siblings discounted), four weekly lessons each in January 2027. Times the run
//! (invoices, lines, gap-free numbers, the invoice email of every family) and a second,
//! idempotent run of the same period.
//!
//! Run: `cargo bench --bench billing` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::time::Instant;

use chrono::{NaiveDate, TimeZone, Utc};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = support::state(&dir).await;
    let now = Utc::now();
    let mut tx = state.db.begin().await.unwrap();
    cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO tuition_rates (id, lesson_minutes, per_lesson_cents, monthly_cents, \
        created_at) VALUES ($1, 30, 3500, 14000, $2)").bind(Uuid::now_v7()).bind(now).execute(&mut **conn).await.map(|_| ()))
    .unwrap();
    let mut teachers = Vec::new();
    for t in 0..40 {
        let id = Uuid::now_v7();
        cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO teachers (id, first_name, last_name, email, instruments, \
            active, calendar_token, created_at, updated_at) VALUES ($1, 'T', $2, $3, $4, TRUE, $5, $6, $6)")
            .bind(id).bind(format!("{t}")).bind(format!("t{t}@bench.ca")).bind(SqlJson(vec!["piano"]))
            .bind(Uuid::now_v7().to_string()).bind(now).execute(&mut **conn).await.map(|_| ()))
        .unwrap();
        teachers.push(id);
    }
    let mut students = Vec::new();
    for f in 0..2_000 {
        let family = Uuid::now_v7();
        cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO families (id, name, email, preferred_language, calendar_token, \
            created_at, updated_at) VALUES ($1, $2, $3, 'en', $4, $5, $5)")
            .bind(family).bind(format!("F{f}")).bind(format!("f{f}@bench.ca")).bind(Uuid::now_v7().to_string()).bind(now)
            .execute(&mut **conn).await.map(|_| ()))
        .unwrap();
        for c in 0..(1 + f % 2) {
            let id = Uuid::now_v7();
            let mode = if f % 4 < 2 { "per_lesson" } else { "monthly" };
            cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO students (id, family_id, first_name, last_name, instrument, \
                instruments, status, search_text, billing_mode, created_at, updated_at) \
                VALUES ($1, $2, $3, 'S', 'piano', '[]', 'active', 's', $4, $5, $5)")
                .bind(id).bind(family).bind(format!("S{f}-{c}")).bind(mode).bind(now).execute(&mut **conn).await.map(|_| ()))
            .unwrap();
            students.push(id);
        }
    }
    // 75 students per teacher, one half-hour slot each in the teacher's week (20 a day).
    let base = Utc.with_ymd_and_hms(2027, 1, 4, 20, 0, 0).unwrap();
    for (i, student) in students.iter().enumerate() {
        let slot = (i / 40) as i64;
        let (day, half_hour) = (slot / 20, slot % 20);
        for week in 0..4 {
            let start = base + chrono::Duration::days(day + 7 * week) + chrono::Duration::minutes(30 * half_hour)
                - chrono::Duration::hours(6);
            cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO lessons (id, teacher_id, student_id, starts_at, ends_at, \
                status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'scheduled', $6, $6)")
                .bind(Uuid::now_v7()).bind(teachers[i % 40]).bind(student).bind(start)
                .bind(start + chrono::Duration::minutes(30)).bind(now).execute(&mut **conn).await.map(|_| ()))
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
    println!("set-up: 2,000 families, {} students, {} lessons", students.len(), students.len() * 4);

    let (start, end) = (NaiveDate::from_ymd_opt(2027, 1, 1).unwrap(), NaiveDate::from_ymd_opt(2027, 1, 31).unwrap());
    let timer = Instant::now();
    let preview = cedar::billing::runs::run(&state, None, start, end, true).await.unwrap();
    println!("dry run (preview)                     {:>8.2} s", timer.elapsed().as_secs_f64());
    let timer = Instant::now();
    let first = cedar::billing::runs::run(&state, None, start, end, false).await.unwrap();
    let elapsed = timer.elapsed();
    let json = serde_json::to_value(&first).unwrap();
    println!(
        "billing run, 2,000 families           {:>8.2} s   {} invoices ({:.2} ms each), total CAD {:.2}",
        elapsed.as_secs_f64(),
        json["created"],
        elapsed.as_secs_f64() * 1e3 / json["created"].as_f64().unwrap_or(1.0),
        json["total_cents"].as_f64().unwrap_or(0.0) / 100.0
    );
    assert_eq!(serde_json::to_value(&preview).unwrap()["total_cents"], json["total_cents"]);
    let timer = Instant::now();
    let again =
        serde_json::to_value(cedar::billing::runs::run(&state, None, start, end, false).await.unwrap()).unwrap();
    println!(
        "second run of the period (no-op)      {:>8.2} s   created {}",
        timer.elapsed().as_secs_f64(),
        again["created"]
    );
}
