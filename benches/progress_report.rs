//! The progress_report workflow on the demo school (180 students): the period run that flags
//! every student and plans their runs, then one run per student from compile to the teacher's
//! review — with the offline provider (one after another: own time per report), and with an
//! OpenAI-compatible fake answering after one second, run with bounded parallelism (8 at a
//! time, as 8 worker slots would) against the 1 s × N it would take one by one.
//! Targets: < 20 ms of own time per student offline; well under N seconds with the provider.
//!
//! Run: `cargo bench --bench progress_report` (SQLite in a temp dir), or with
//! `BENCH_DATABASE_URL=postgres://…` against an empty PostgreSQL database.

mod support;

use std::time::{Duration, Instant};

use cedar::app::AppState;
use cedar::config::{AiProviderKind, Secret};
use cedar::workflows::engine::{self, Trigger};
use futures_util::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

const PARALLEL: usize = 8;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let offline = support::state(&dir).await;
    cedar::people::demo::load(&offline.db, offline.settings.timezone).await.unwrap();
    let families: Vec<Uuid> =
        cedar::on_db!(&offline.db, pool => sqlx::query_scalar("SELECT id FROM families").fetch_all(pool).await)
            .unwrap();
    let mut tx = offline.db.begin().await.unwrap();
    for family in &families {
        use cedar::privacy::consents::{ConsentKind, ConsentMethod, record};
        record(&mut tx, *family, ConsentKind::AiProcessing, true, None, ConsentMethod::Office, Some("bench"))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let today = cedar::time::today(offline.settings.timezone);
    let start = today - chrono::Duration::days(27);
    let students: Vec<Uuid> =
        cedar::people::service::report_subjects(&offline.db, None).await.unwrap().into_iter().map(|s| s.id).collect();
    println!("{} active students, period {start} – {today}", students.len());

    // The period run: flags every student and plans their runs.
    let period = json!({"period_start": start, "period_end": today});
    let started = Instant::now();
    let run = start_run(&offline, &period).await;
    engine::advance(&offline, run).await.unwrap();
    println!("period run (flag {} students, plan their runs): {:.1} ms", students.len(), ms(started.elapsed()));

    // One run per student, offline, one after another.
    let mut own = Vec::new();
    let total = Instant::now();
    for student in &students {
        let input = json!({"period_start": start, "period_end": today, "student_ids": [student]});
        let run = start_run(&offline, &input).await;
        let started = Instant::now();
        engine::advance(&offline, run).await.unwrap();
        own.push(started.elapsed());
    }
    println!("offline provider, {} reports in {:.0} ms:", students.len(), ms(total.elapsed()));
    support::report("  own time per report", own);

    // A second period, with a provider answering after 1 s, 8 runs at a time.
    let fake = support::slow_openai(report_from_numbers).await;
    let mut settings = (*offline.settings).clone();
    settings.ai.openai.api_key = Some(Secret::new("sk-bench"));
    settings.ai.openai.base_url = fake;
    settings.ai.providers = vec![AiProviderKind::OpenAi];
    settings.ai.monthly_budget_micros = i64::MAX;
    let with_ai = AppState::new(offline.db.clone(), settings).unwrap();
    let earlier = start - chrono::Duration::days(28);
    let mut runs = Vec::new();
    for student in &students {
        let input =
            json!({"period_start": earlier, "period_end": start - chrono::Duration::days(1), "student_ids": [student]});
        runs.push(start_run(&with_ai, &input).await);
    }
    let total = Instant::now();
    let times: Vec<Duration> = futures_util::stream::iter(runs)
        .map(|run| {
            let state = with_ai.clone();
            async move {
                let started = Instant::now();
                engine::advance(&state, run).await.unwrap();
                started.elapsed()
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let elapsed = total.elapsed();
    println!(
        "provider answering after 1 s, {} reports, {PARALLEL} at a time: {:.1} s (one by one: ≥ {} s)",
        students.len(),
        elapsed.as_secs_f64(),
        students.len()
    );
    support::report("  per report (incl. the 1 s answer)", times);
    let drafted: Vec<String> = cedar::on_db!(&offline.db, pool => sqlx::query_scalar(
        "SELECT drafted_by FROM progress_reports WHERE period_start = $1").bind(earlier).fetch_all(pool).await)
    .unwrap();
    println!("  drafted by the provider: {} of {}", drafted.iter().filter(|d| *d == "openai").count(), drafted.len());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn start_run(state: &AppState, input: &Value) -> Uuid {
    let workflow = state.workflows.get("progress_report").unwrap();
    let subject = workflow.prepare(state, input).await.unwrap();
    let mut tx = state.db.begin().await.unwrap();
    let run = engine::create_run(&mut tx, &workflow, input, Some(&subject), Trigger::System, None).await.unwrap();
    tx.commit().await.unwrap();
    run
}

/// Writes a report from the numbers it was given (the provider answers after a second).
fn report_from_numbers(_body: &Value, prompt: &Value) -> Value {
    let name = prompt["first_name"].as_str().unwrap_or("Your child");
    let (present, lessons) = (&prompt["metrics"]["present"], &prompt["metrics"]["lessons"]);
    json!({"summary": format!("{name} attended {present} of {lessons} lessons."),
        "body": format!("{name} attended {present} of {lessons} lessons and worked steadily this period.")})
}
