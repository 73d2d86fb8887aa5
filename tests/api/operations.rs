//! Operations: the backup drill (back up while writing, restore into a fresh database,
//! compare every table; restores refuse a non-empty database without --force) and the
//! owner's digest and alerts, each sent once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use cedar::db::Db;
use cedar::scheduling::lesson_pages::last_row_version;
use serde_json::json;

use crate::backend_tests;
use crate::billing::{deliver, event, signed};
use crate::common::{Backend, TestApp, TestDatabase, spawn_app_with_workflows};
use crate::helpers::school;

backend_tests!(
    a_backup_taken_while_writing_restores_every_table,
    the_owner_hears_once_about_what_needs_them,
    a_restore_never_hands_out_a_lesson_version_twice,
);

/// Every table's rows as text, sorted (order-independent), by table name.
async fn tables(db: &Db) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    match db {
        Db::Sqlite(pool) => {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for name in names {
                let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info($1) ORDER BY cid")
                    .bind(&name)
                    .fetch_all(pool)
                    .await
                    .unwrap();
                let row = columns.iter().map(|c| format!("quote(\"{c}\")")).collect::<Vec<_>>().join(" || '|' || ");
                let sql = format!("SELECT {row} FROM \"{name}\"");
                let mut rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap();
                rows.sort();
                out.insert(name, rows);
            }
        }
        Db::Postgres(pool) => {
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for name in names {
                let sql = format!("SELECT t::text FROM \"{name}\" t");
                let mut rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap();
                rows.sort();
                out.insert(name, rows);
            }
        }
    }
    out
}

async fn restored(backend: Backend, file: &std::path::Path) -> (TestDatabase, Db) {
    let target = TestDatabase::create(backend).await;
    let settings = target.settings();
    cedar::ops::backup::restore(&settings, file, false).await.expect("restore into an empty database");
    let db = Db::connect(&settings).await.unwrap();
    (target, db)
}

async fn a_backup_taken_while_writing_restores_every_table(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    // A writer adds students through the API for as long as the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (client, url, token, family) =
            (app.client.clone(), app.url("/v1/students"), s.admin.clone(), s.family_a.clone());
        let (stop, written) = (stop.clone(), written.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let n = written.load(Ordering::SeqCst);
                let body = json!({"family_id": family, "first_name": format!("Élève{n}"), "last_name": "Côté", "instrument": "piano"});
                let response = client.post(&url).bearer_auth(&token).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 201);
                written.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while written.load(Ordering::SeqCst) < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = written.load(Ordering::SeqCst);
    let during = cedar::ops::backup::backup(&app.state.settings, &app.state.db, dir.path()).await.unwrap();
    let at_backup = written.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(during.bytes > 0);
    assert!(
        cedar::ops::backup::backup(&app.state.settings, &app.state.db, &during.path).await.is_err(),
        "never overwrites"
    );

    // The copy taken mid-write is consistent: every table there, no student half-written,
    // the students up to the backup's moment.
    let source = tables(&app.state.db).await;
    let (during_guard, during_db) = restored(backend, &during.path).await;
    let copy = tables(&during_db).await;
    assert_eq!(copy.keys().collect::<Vec<_>>(), source.keys().collect::<Vec<_>>(), "every table");
    let students = copy["students"].len();
    assert!((3 + before..=3 + at_backup + 1).contains(&students), "{before} ≤ {students} - 3 ≤ {at_backup} + 1");
    for (table, rows) in &copy {
        assert!(rows.len() <= source[table].len(), "{table}");
    }
    if let Db::Sqlite(pool) = &during_db {
        let check: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(pool).await.unwrap();
        assert_eq!(check, "ok");
    }
    // A restore never lands on a database holding Cedar's tables unless forced.
    let settings = during_guard.settings();
    let refused = cedar::ops::backup::restore(&settings, &during.path, false).await.unwrap_err();
    assert!(refused.to_string().contains("--force"), "{refused}");
    during_db.close().await;

    // Quiet now: a backup restores to exactly the same rows, table by table.
    let after =
        cedar::ops::backup::backup(&app.state.settings, &app.state.db, &dir.path().join("after.bak")).await.unwrap();
    let (guard, after_db) = restored(backend, &after.path).await;
    let copy = tables(&after_db).await;
    let source = tables(&app.state.db).await;
    assert_eq!(copy.len(), source.len());
    for (table, rows) in &source {
        assert_eq!(&copy[table], rows, "table {table} differs");
    }
    after_db.close().await;
    // Forced over the older copy, the database becomes the newer one.
    cedar::ops::backup::restore(&guard.settings(), &during.path, true).await.unwrap();
    let forced = Db::connect(&guard.settings()).await.unwrap();
    assert_eq!(tables(&forced).await["students"].len(), students);
    forced.close().await;
    // A backup of one backend does not restore into the other.
    if backend == Backend::Postgres || crate::common::postgres_url().is_some() {
        let other =
            TestDatabase::create(if backend == Backend::Sqlite { Backend::Postgres } else { Backend::Sqlite }).await;
        let refused = cedar::ops::backup::restore(&other.settings(), &after.path, false).await.unwrap_err();
        assert!(refused.to_string().contains("is not a"), "{refused}");
    }
}

/// Kept pages of the lesson list are checked against the lessons' version numbers
/// (`scheduling::lesson_pages`), so a restore over a database must not hand out again the
/// numbers that database had handed out since the backup.
async fn a_restore_never_hands_out_a_lesson_version_twice(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let windows = json!({"windows": [{"weekday": 1, "start_time": "09:00", "end_time": "21:00"}]});
    office.put(&format!("/v1/teachers/{}/availability", s.teacher1_id), windows).await.expect(200);
    let book = |starts_at: &'static str| {
        office.post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0], "starts_at": starts_at, "duration_minutes": 30}),
        )
    };
    book("2027-03-01T21:00:00Z").await.expect(201);
    let dir = tempfile::tempdir().unwrap();
    let older =
        cedar::ops::backup::backup(&app.state.settings, &app.state.db, &dir.path().join("older.bak")).await.unwrap();
    book("2027-03-08T21:00:00Z").await.expect(201);
    let handed_out = last_row_version(&app.state.db).await.unwrap().expect("lessons are numbered");
    let newer =
        cedar::ops::backup::backup(&app.state.settings, &app.state.db, &dir.path().join("newer.bak")).await.unwrap();

    let (target, db) = restored(backend, &newer.path).await;
    assert_eq!(last_row_version(&db).await.unwrap(), Some(handed_out));
    db.close().await;
    cedar::ops::backup::restore(&target.settings(), &older.path, true).await.unwrap();
    let db = Db::connect(&target.settings()).await.unwrap();
    assert_eq!(tables(&db).await["lessons"].len(), 1, "the older copy");
    assert!(last_row_version(&db).await.unwrap().unwrap() >= handed_out);
    // (SQLite's RETURNING does not show what a trigger wrote: read it afterwards.)
    let renumbered: i64 = cedar::on_db!(&db, pool => {
        sqlx::query("UPDATE lessons SET notes = 'after the restore'").execute(pool).await.unwrap();
        sqlx::query_scalar("SELECT row_version FROM lessons").fetch_one(pool).await.unwrap()
    });
    assert!(renumbered > handed_out, "{renumbered} > {handed_out}");
    db.close().await;
}

async fn outbox_count(app: &TestApp, admin: &str, template: &str) -> usize {
    let page = app.as_user(admin).get(&format!("/v1/outbox?template={template}")).await.expect(200);
    page["items"].as_array().unwrap().len()
}

async fn the_owner_hears_once_about_what_needs_them(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |settings| {
        settings.ai.monthly_budget_micros = 1_000_000;
        settings.billing.stripe_webhook_secret = Some(cedar::config::Secret::new(crate::billing::WEBHOOK_SECRET));
    })
    .await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let yesterday = cedar::time::today(app.state.settings.timezone) - chrono::Duration::days(1);
    office.post("/v1/tasks", json!({"title": "Call the piano tuner", "due_on": yesterday})).await.expect(201);
    let db = &app.state.db;
    let now = chrono::Utc::now();
    cedar::on_db!(db, pool => sqlx::query("INSERT INTO jobs (id, queue, kind, payload, status, attempts, max_attempts, run_at, \
        last_error, created_at, updated_at) VALUES ($1, 'default', 'email.send', '{}', 'dead', 10, 10, $2, 'SMTP 550', $2, $2)")
        .bind(uuid::Uuid::now_v7()).bind(now).execute(pool).await.map(|_| ()))
    .unwrap();
    // 0.85 of a 1.00 budget spent on AI this month.
    cedar::on_db!(db, pool => sqlx::query("INSERT INTO ai_calls (id, step, provider, model, cost_micros, latency_ms, outcome, created_at) \
        VALUES ($1, 'rank', 'openai', 'gpt-4o-mini', 850000, 300, 'ok', $2)").bind(uuid::Uuid::now_v7()).bind(now)
        .execute(pool).await.map(|_| ()))
    .unwrap();
    // Three webhook deliveries with a wrong signature.
    let body = event("evt_forged", "payment_intent.succeeded", json!({"id": "pi_x", "metadata": {}}));
    for _ in 0..3 {
        let response = deliver(&app, &body, Some(signed(&body, now.timestamp(), "whsec_wrong"))).await;
        assert_eq!(response.status(), 400);
    }

    let digest = cedar::ops::notify::digest(&app.state).await.unwrap();
    assert_eq!((digest.tasks_overdue, digest.jobs_dead, digest.ai_percent), (1, 1, 85));
    assert_eq!(cedar::ops::notify::send_digest(&app.state).await.unwrap(), 1, "one admin");
    assert_eq!(cedar::ops::notify::send_digest(&app.state).await.unwrap(), 0, "once a day");
    let emails = app.as_user(&s.admin).get("/v1/outbox?template=owner_digest").await.expect(200);
    let email = &emails["items"][0];
    assert!(email["subject"].as_str().unwrap().contains("1 overdue task"), "{}", email["subject"]);
    assert!(email["body"].as_str().unwrap().contains("CAD 0.85 of 1.00 (85 %)"), "{}", email["body"]);

    let alerts = cedar::ops::notify::alerts(&app.state).await.unwrap();
    let titles: Vec<&str> = alerts.iter().map(|a| a.title.as_str()).collect();
    assert_eq!(alerts.len(), 3, "{titles:?}");
    assert!(titles[0].contains("80 %") && titles[1].contains("died") && titles[2].contains("signature"), "{titles:?}");
    assert_eq!(cedar::ops::notify::send_alerts(&app.state).await.unwrap(), 3);
    assert_eq!(cedar::ops::notify::send_alerts(&app.state).await.unwrap(), 0, "each alert once");
    assert_eq!(outbox_count(&app, &s.admin, "owner_alert").await, 3);
    // Spending past the budget is a new alert, sent once.
    cedar::on_db!(db, pool => sqlx::query("INSERT INTO ai_calls (id, step, provider, model, cost_micros, latency_ms, outcome, created_at) \
        VALUES ($1, 'rank', 'openai', 'gpt-4o-mini', 200000, 300, 'ok', $2)").bind(uuid::Uuid::now_v7()).bind(now)
        .execute(pool).await.map(|_| ()))
    .unwrap();
    assert_eq!(cedar::ops::notify::send_alerts(&app.state).await.unwrap(), 1);
    assert_eq!(outbox_count(&app, &s.admin, "owner_alert").await, 4);
    // Scheduled backups on, none written for over a day: that is an alert too (once a day).
    let dir = tempfile::tempdir().unwrap();
    let mut state = app.state.clone();
    let mut settings = (*state.settings).clone();
    settings.operations.backup_dir = Some(dir.path().to_owned());
    state.settings = Arc::new(settings);
    let alerts = cedar::ops::notify::alerts(&state).await.unwrap();
    assert!(alerts.iter().any(|a| a.title.contains("No database backup")), "{alerts:?}");
    let made = cedar::ops::backup::backup(&state.settings, &state.db, dir.path()).await.unwrap();
    assert!(made.path.file_name().unwrap().to_string_lossy().starts_with("cedar-"));
    let alerts = cedar::ops::notify::alerts(&state).await.unwrap();
    assert!(!alerts.iter().any(|a| a.title.contains("No database backup")), "{alerts:?}");
    // Teachers and parents never get them.
    let to: Vec<String> = app.as_user(&s.admin).get("/v1/outbox?template=owner_alert").await.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["to_address"].as_str().unwrap().to_owned())
        .collect();
    assert!(to.iter().all(|a| !a.contains("example.ca") && !a.starts_with('t')), "{to:?}");
}
