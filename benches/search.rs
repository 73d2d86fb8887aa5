//! Latency of `GET /v1/students?q=…` over 10,000 students, as an admin (who sees them all).
//!
//! Run: `cargo bench --bench search` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::time::Instant;

use cedar::http::validate::fold;
use chrono::Utc;
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

const FIRST: &[&str] =
    &["Hélène", "Émile", "Chloé", "Zoé", "Gabriel", "Liam", "Emma", "Noah", "Olivia", "Félix", "Anaïs", "Jacob"];
const LAST: &[&str] =
    &["Côté", "Gagné", "Tremblay", "Smith", "Nguyen", "Bélanger", "Wilson", "Lefèvre", "Patel", "Roy"];
const INSTRUMENTS: &[&str] = &["piano", "violin", "guitar", "voice", "cello", "flute"];

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let state = support::state(&dir).await;

    // 5,000 families with two children each.
    let started = Instant::now();
    let now = Utc::now();
    let mut tx = state.db.begin().await.unwrap();
    for f in 0..5_000usize {
        let family = Uuid::now_v7();
        let last = LAST[f % LAST.len()];
        let family_name = format!("Famille {last} {f}");
        cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO families (id, name, preferred_language, calendar_token, \
            created_at, updated_at) VALUES ($1, $2, 'en', $3, $4, $4)")
            .bind(family).bind(&family_name).bind(Uuid::now_v7().to_string()).bind(now)
            .execute(&mut **conn).await.map(|_| ()))
        .unwrap();
        for c in 0..2usize {
            let first = FIRST[(f * 7 + c * 3) % FIRST.len()];
            let instrument = INSTRUMENTS[(f + c) % INSTRUMENTS.len()];
            let search = fold(&format!("{first} {last} {family_name}"));
            cedar::on_tx!(&mut tx, conn => sqlx::query("INSERT INTO students (id, family_id, first_name, last_name, \
                instrument, instruments, status, search_text, created_at, updated_at) \
                VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $8)")
                .bind(Uuid::now_v7()).bind(family).bind(first).bind(last).bind(instrument)
                .bind(SqlJson(vec![instrument])).bind(search).bind(now)
                .execute(&mut **conn).await.map(|_| ()))
            .unwrap();
        }
    }
    tx.commit().await.unwrap();
    if let cedar::db::Db::Postgres(pool) = &state.db {
        sqlx::query("ANALYZE").execute(pool).await.unwrap();
    }
    println!("seeded 10,000 students in {:.1} s", started.elapsed().as_secs_f64());

    let (addr, token) = support::serve_with_admin(&state).await;
    let client = reqwest::Client::new();

    let queries = ["helene", "cote", "tremblay zoe", "famille roy 4999", "emile gagne", "nobody-matches"];
    let mut all = Vec::new();
    for q in queries {
        let url = format!("http://{addr}/v1/students?q={}&limit=50", q.replace(' ', "%20"));
        let mut samples = Vec::new();
        let mut found = 0;
        for i in 0..220 {
            let started = Instant::now();
            let response = client.get(&url).bearer_auth(&token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.unwrap();
            if i >= 20 {
                samples.push(started.elapsed());
            }
            found = body["items"].as_array().unwrap().len();
        }
        all.extend(samples.iter().copied());
        support::report(&format!("q={q} ({found} items)"), samples);
    }
    support::report("all searches", all);
}
