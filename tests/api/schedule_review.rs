//! The schedule review workflow: the demo school's proposal passes the reference checker
//! (`evaluate.py`), a subset of moves applies exactly, a slot taken before apply is skipped and
//! reported, a crash in apply repeats nothing, family notes use AI only with consent, and
//! seeded conflicts (closure, substitute double booking, series ending) are reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cedar::config::{AiProviderKind, Secret};
use cedar::workflows::engine::{Step, StepCtx};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, TestApp, admin_token, spawn_app_with_workflows};
use crate::fakes::{AiFake, OPENAI_KEY, Reply};
use crate::helpers::{School, run_reaching, school, start_worker, stop_worker};

backend_tests!(
    the_demo_week_gives_a_proposal_the_reference_checker_accepts,
    approving_a_subset_applies_exactly_that_subset,
    a_slot_taken_before_apply_is_skipped_and_reported,
    a_crash_in_apply_moves_nothing_twice,
    family_notes_use_ai_only_with_consent,
    seeded_conflicts_are_all_reported,
    bad_input_is_refused_and_a_week_runs_once,
    a_rejection_changes_nothing_and_edits_only_choose_moves,
);

/// The Monday of the week the runs review (the next one).
fn week_of(app: &TestApp) -> chrono::NaiveDate {
    let tz = app.state.settings.timezone;
    cedar::time::next_weekday(cedar::time::today(tz), 1)
}

fn at(app: &TestApp, date: chrono::NaiveDate, hhmm: &str) -> String {
    let time = cedar::time::parse_hhmm(hhmm).unwrap();
    cedar::time::at_local(app.state.settings.timezone, date, time).to_rfc3339()
}

struct Gaps {
    s: School,
    room: String,
}

/// The sample school plus a teacher-1 Monday with two idle hours, six weeks from `week_of`:
/// Hélène (family A) 15:00, Marc (family B) 16:30, Anna (family A) 18:00 — piano, "Piano 1".
async fn gaps(app: &TestApp) -> Gaps {
    let s = school(app).await;
    let office = app.as_user(&s.admin);
    let room =
        office.post("/v1/rooms", json!({"name": "Piano 1", "capacity": 2, "instruments": ["piano"]})).await.expect(201)
            ["id"]
            .as_str()
            .unwrap()
            .to_owned();
    office
        .put(
            &format!("/v1/teachers/{}/availability", s.teacher1_id),
            json!({"windows": [{"weekday": 1, "start_time": "15:00", "end_time": "20:00"}]}),
        )
        .await
        .expect(200);
    let mut ids = vec![s.students[0].clone()];
    for (family, name) in [(&s.family_b, "Marc"), (&s.family_a, "Anna")] {
        let body = json!({"family_id": family, "first_name": name, "last_name": "Test", "instrument": "piano",
            "teacher_id": s.teacher1_id});
        ids.push(office.post("/v1/students", body).await.expect(201)["id"].as_str().unwrap().to_owned());
    }
    let monday = week_of(app);
    for (student, time) in ids.iter().zip(["15:00", "16:30", "18:00"]) {
        let body = json!({"teacher_id": s.teacher1_id, "student_id": student, "room_id": room,
            "starts_at": at(app, monday, time), "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=6"}});
        office.post("/v1/lessons", body).await.expect(201);
    }
    Gaps { s, room }
}

/// A review run for next week (1 s of search) once it waits for review: (run id, review id,
/// the review as the owner sees it).
async fn proposal(app: &TestApp, s: &School) -> (String, String, Value) {
    let office = app.as_user(&s.admin);
    let start = json!({"workflow": "schedule_review", "input": {"time_limit_secs": 1}});
    let run = office.post("/v1/workflow-runs", start).await.expect(201)["id"].as_str().unwrap().to_owned();
    let waiting = run_reaching(app, s, &run, "waiting_for_review").await;
    let review = waiting["review_id"].as_str().unwrap().to_owned();
    let body = office.get(&format!("/v1/reviews/{review}")).await.expect(200);
    (run, review, body)
}

/// (weekday, local HH:MM, teacher) of a student's first lesson from `week_of` on, and how many
/// scheduled lessons they have.
async fn first_lesson(app: &TestApp, s: &School, student: &str) -> (u32, String, usize) {
    let page = app.as_user(&s.admin).get(&format!("/v1/lessons?student_id={student}&limit=100")).await.expect(200);
    let tz = app.state.settings.timezone;
    let mut lessons: Vec<&Value> =
        page["items"].as_array().unwrap().iter().filter(|l| l["status"] == "scheduled").collect();
    lessons.sort_by_key(|l| l["starts_at"].as_str().unwrap().to_owned());
    let first: chrono::DateTime<chrono::Utc> = lessons[0]["starts_at"].as_str().unwrap().parse().unwrap();
    let local = first.with_timezone(&tz);
    use chrono::Datelike;
    (local.weekday().number_from_monday(), local.format("%H:%M").to_string(), lessons.len())
}

fn proposal_moves(review: &Value) -> Vec<Value> {
    review["proposal"]["moves"].as_array().unwrap().clone()
}

async fn the_demo_week_gives_a_proposal_the_reference_checker_accepts(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let admin = admin_token(&app).await;
    cedar::people::demo::load(&app.state.db, app.state.settings.timezone).await.unwrap();
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let office = app.as_user(&admin);
    let run = office
        .post("/v1/workflow-runs", json!({"workflow": "schedule_review", "input": {"time_limit_secs": 2}}))
        .await
        .expect(201);
    let id = run["id"].as_str().unwrap().to_owned();
    let run = crate::helpers::wait_until(&app, &admin, &format!("/v1/workflow-runs/{id}"), |r| {
        r["status"] == "waiting_for_review" || r["status"] == "failed"
    })
    .await;
    stop_worker(worker).await;
    assert_eq!(run["status"], "waiting_for_review", "{:#}", run["error"]);
    let context = &run["context"];
    assert!(context["optimize"]["error"].is_null(), "{}", context["optimize"]["error"]);
    // The reference scorer on Cedar's own instance and the proposed timetable.
    let dir = tempfile::tempdir().unwrap();
    let instance = dir.path().join("instance.json");
    let solution = dir.path().join("solution.json");
    std::fs::write(&instance, context["snapshot"]["instance"].to_string()).unwrap();
    std::fs::write(
        &solution,
        json!({"format": "cedar-schedule-opt-solution/1", "instance": "cedar",
        "assignments": context["optimize"]["solution"]})
        .to_string(),
    )
    .unwrap();
    let evaluate = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schedule-opt/evaluate.py");
    let out = std::process::Command::new("python3").arg(evaluate).arg(&instance).arg(&solution).output().unwrap();
    let report: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["after"]["feasible"], true, "{:#}", report["after"]["violations"]);
    assert_eq!(report["before"]["feasible"], true, "{:#}", report["before"]["violations"]);
    // The demo's waitlisted students find places; its packed afternoons need no other move.
    let moves = context["optimize"]["moves"].as_array().unwrap();
    assert!(moves.iter().any(|m| m["kind"] == "seat"), "{moves:#?}");
    assert_eq!(
        report["after"]["waitlisted_placed"].as_u64().unwrap() as usize,
        moves.iter().filter(|m| m["kind"] == "seat").count()
    );
    assert!(report["after"]["objective"].as_i64() > report["before"]["objective"].as_i64());
    let review = office.get(&format!("/v1/reviews/{}", run["review_id"].as_str().unwrap())).await.expect(200);
    assert!(
        review["proposal"]["summary"].as_str().unwrap().contains("waitlisted"),
        "{}",
        review["proposal"]["summary"]
    );
    assert!(review["context"]["before"]["utilization_percent"].is_number());
}

async fn approving_a_subset_applies_exactly_that_subset(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let g = gaps(&app).await;
    let s = &g.s;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let (run, review, pending) = proposal(&app, s).await;
    let office = app.as_user(&s.admin);
    let moves = proposal_moves(&pending);
    assert_eq!(moves.len(), 2, "two moves close both gaps: {moves:#?}");
    assert!(moves.iter().all(|m| m["kind"] == "time" && m["to"]["room_id"] == g.room.as_str()));
    assert_eq!(pending["context"]["before"]["gap_minutes"], 120);
    assert_eq!(pending["context"]["after"]["gap_minutes"], 0);
    let chosen = moves[0].clone();
    // The owner keeps only the first move, on the console's page.
    let mut owner = crate::console::Browser::new(&app);
    owner.sign_in(crate::common::ADMIN_EMAIL, crate::common::ADMIN_PASSWORD).await;
    let page = owner.get(&format!("/console/reviews/{review}")).await;
    assert_eq!(page.status, 200);
    for m in &moves {
        let item = m["item"].as_str().unwrap();
        assert!(page.body.contains(&format!("name=\"move\" value=\"{item}\"")), "a checkbox per move");
        assert!(page.body.contains(m["student"].as_str().unwrap()));
    }
    assert!(page.body.contains("class=\"leaves\"") && page.body.contains("class=\"arrives\""), "before and after");
    let kept = owner
        .submit(&format!("/console/reviews/{review}/approve"), &[("move", chosen["item"].as_str().unwrap())])
        .await;
    assert_eq!(kept.status, 303, "{}", kept.body);
    let done = run_reaching(&app, s, &run, "succeeded").await;
    stop_worker(worker).await;
    assert_eq!(done["context"]["apply"]["applied"].as_array().unwrap().len(), 1);
    assert_eq!(done["context"]["apply"]["skipped"], json!([]));
    let moved = chosen["student_id"].as_str().unwrap();
    let other = moves[1]["student_id"].as_str().unwrap();
    let (day, time, count) = first_lesson(&app, s, moved).await;
    assert_eq!(
        (day as u64, time.as_str(), count),
        (chosen["to"]["weekday"].as_u64().unwrap(), chosen["to"]["start_time"].as_str().unwrap(), 6)
    );
    let (_, time, count) = first_lesson(&app, s, other).await;
    assert_eq!(
        (time.as_str(), count),
        (moves[1]["from"]["start_time"].as_str().unwrap(), 6),
        "not approved: unchanged"
    );
    let emails = office.get("/v1/outbox?template=schedule_change").await.expect(200);
    let emails = emails["items"].as_array().unwrap();
    assert_eq!(emails.len(), 1, "one email, to the moved student's family");
}

async fn a_slot_taken_before_apply_is_skipped_and_reported(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let g = gaps(&app).await;
    let s = &g.s;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let (run, review, pending) = proposal(&app, s).await;
    let office = app.as_user(&s.admin);
    let moves = proposal_moves(&pending);
    let taken = &moves[0];
    // Zoë's violin lesson takes the piano room at the move's new time, in the third week.
    let third = week_of(&app) + chrono::Duration::weeks(2);
    let body = json!({"teacher_id": s.teacher2_id, "student_id": s.students[1], "room_id": g.room,
        "starts_at": at(&app, third, taken["to"]["start_time"].as_str().unwrap()), "duration_minutes": 30});
    office.post("/v1/lessons", body).await.expect(201);
    office.post(&format!("/v1/reviews/{review}/approve"), json!({})).await.expect(200);
    let done = run_reaching(&app, s, &run, "succeeded").await;
    stop_worker(worker).await;
    let apply = &done["context"]["apply"];
    let skipped = apply["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{apply:#}");
    assert_eq!(skipped[0]["item"], taken["item"]);
    assert!(skipped[0]["reason"].as_str().unwrap().contains("room"), "{}", skipped[0]["reason"]);
    assert_eq!(apply["applied"].as_array().unwrap().len(), 1, "the other move still applies");
    let (_, time, _) = first_lesson(&app, s, taken["student_id"].as_str().unwrap()).await;
    assert_eq!(time, taken["from"]["start_time"].as_str().unwrap(), "the skipped lesson keeps its time");
    let tasks =
        office.get(&format!("/v1/tasks?subject_id={}", taken["student_id"].as_str().unwrap())).await.expect(200);
    let tasks = tasks["items"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0]["title"].as_str().unwrap().starts_with("Schedule change not applied"), "{}", tasks[0]["title"]);
}

async fn a_crash_in_apply_moves_nothing_twice(backend: Backend) {
    // The apply step does all its writes, then its worker dies before the commit.
    let hang = Arc::new(AtomicBool::new(true));
    let mut workflow = cedar::workflows::schedule_review::workflow();
    let index = workflow.steps.iter().position(|s| s.name == "apply").unwrap();
    let original = Arc::new(workflow.steps.remove(index));
    let flag = hang.clone();
    workflow.steps.insert(
        index,
        Step::action("apply", move |cx: StepCtx| {
            let (original, flag) = (original.clone(), flag.clone());
            async move {
                let done = original.call(cx).await;
                if flag.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                done
            }
        }),
    );
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin().with(workflow), |_| {}).await;
    let g = gaps(&app).await;
    let s = &g.s;
    let first_worker = start_worker(&app.state, Duration::from_secs(1));
    let (run, review, pending) = proposal(&app, s).await;
    let moves = proposal_moves(&pending);
    app.as_user(&s.admin).post(&format!("/v1/reviews/{review}/approve"), json!({})).await.expect(200);
    for _ in 0..1200 {
        let r = app.as_user(&s.admin).get(&format!("/v1/workflow-runs/{run}")).await.expect(200);
        if r["current_step"] == "apply" && r["steps"].as_array().unwrap().iter().any(|s| s["name"] == "apply") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    first_worker.1.abort();
    let _ = first_worker.1.await;
    hang.store(false, Ordering::SeqCst);
    let second_worker = start_worker(&app.state, Duration::from_secs(1));
    let done = run_reaching(&app, s, &run, "succeeded").await;
    stop_worker(second_worker).await;
    let step = done["steps"].as_array().unwrap().iter().find(|s| s["name"] == "apply").unwrap().clone();
    assert_eq!(step["attempts"], 2);
    assert_eq!(done["context"]["apply"]["applied"].as_array().unwrap().len(), moves.len());
    for m in &moves {
        let (_, time, count) = first_lesson(&app, s, m["student_id"].as_str().unwrap()).await;
        assert_eq!((time.as_str(), count), (m["to"]["start_time"].as_str().unwrap(), 6), "moved once, nothing doubled");
    }
    let emails = app.as_user(&s.admin).get("/v1/outbox?template=schedule_change").await.expect(200);
    let families: std::collections::BTreeSet<&str> = moves.iter().map(|m| m["family_id"].as_str().unwrap()).collect();
    assert_eq!(emails["items"].as_array().unwrap().len(), families.len(), "one email per family");
}

async fn family_notes_use_ai_only_with_consent(backend: Backend) {
    let fake = AiFake::start(json!({})).await;
    let base = fake.openai_url();
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), move |settings| {
        settings.ai.openai.api_key = Some(Secret::new(OPENAI_KEY));
        settings.ai.openai.base_url = base;
        settings.ai.providers = vec![AiProviderKind::OpenAi];
    })
    .await;
    let g = gaps(&app).await;
    let s = &g.s;
    // Family A consents; family B (Marc) does not.
    app.as_user(&s.parent_a).post("/v1/consents", json!({"kind": "ai_processing", "granted": true})).await.expect(201);
    fake.script_openai([
        Reply::Answer(json!({"summary": "Two lessons move earlier on Monday to close the gaps in the afternoon."})),
        Reply::Answer(json!({"note": "Your lesson moves a little earlier on Mondays so the afternoon flows better."})),
    ]);
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let (run, _, pending) = proposal(&app, s).await;
    stop_worker(worker).await;
    assert_eq!(
        pending["proposal"]["summary"],
        "Two lessons move earlier on Monday to close the gaps in the afternoon."
    );
    let run = app.as_user(&s.admin).get(&format!("/v1/workflow-runs/{run}")).await.expect(200);
    let notes = run["context"]["report"]["family_notes"].as_array().unwrap().clone();
    let a_moves = proposal_moves(&pending).iter().any(|m| m["family_id"] == s.family_a.as_str());
    for note in &notes {
        if note["family_id"] == s.family_a.as_str() {
            assert_eq!(note["provider"], "openai");
        } else {
            assert_eq!(note["provider"], "offline");
            assert!(note["fallback_reason"].as_str().unwrap().contains("consent"), "{note}");
            assert!(note["note"].as_str().unwrap().contains("Marc"), "the template names the child: {note}");
        }
    }
    let requests = fake.requests("openai");
    assert_eq!(requests.len(), 1 + usize::from(a_moves), "the summary, and family A's note only");
    let summary = requests[0].body["messages"][1]["content"].as_str().unwrap();
    for name in ["Hélène", "Marc", "Anna"] {
        assert!(!summary.contains(name), "the owner's summary gets no child's name: {summary}");
    }
    for request in &requests[1..] {
        let prompt = request.body["messages"][1]["content"].as_str().unwrap();
        assert!(!prompt.contains("Marc"), "family B never consented: {prompt}");
    }
}

async fn seeded_conflicts_are_all_reported(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let monday = week_of(&app);
    let (tuesday, wednesday) = (monday + chrono::Duration::days(1), monday + chrono::Duration::days(2));
    // Hélène: a lesson on Tuesday, which then becomes a closure day behind the API's back (a
    // closure added through the API cancels the lessons it covers; see school_year).
    let lesson = |date, student: &str, teacher: &str| json!({"teacher_id": teacher, "student_id": student, "starts_at": at(&app, date, "16:00"), "duration_minutes": 30});
    office.post("/v1/lessons", lesson(tuesday, &s.students[0], &s.teacher1_id)).await.expect(201);
    cedar::on_db!(&app.state.db, pool => sqlx::query("INSERT INTO calendar_exceptions (id, kind, name, starts_on, ends_on, created_at) \
        VALUES ($1, 'closure', 'Snow day', $2, $2, $3)").bind(uuid::Uuid::now_v7()).bind(tuesday).bind(chrono::Utc::now())
        .execute(pool).await.map(|_| ()))
    .unwrap();
    // Hélène again on Wednesday; teacher 1 is also put on Zoë's lesson then as a substitute, by a
    // hand edit the booking checks never saw (the database constraint is lifted for it).
    office.post("/v1/lessons", lesson(wednesday, &s.students[0], &s.teacher1_id)).await.expect(201);
    let zoe = office
        .post("/v1/lessons", lesson(wednesday + chrono::Duration::days(7), &s.students[1], &s.teacher2_id))
        .await
        .expect(201);
    let db = &app.state.db;
    if backend == Backend::Postgres {
        cedar::on_db!(db, pool => sqlx::query("ALTER TABLE lessons DROP CONSTRAINT lessons_teacher_no_overlap")
            .execute(pool).await.map(|_| ()))
        .unwrap();
    }
    let starts: chrono::DateTime<chrono::Utc> = at(&app, wednesday, "16:00").parse().unwrap();
    let zoe_id = uuid::Uuid::parse_str(zoe["id"].as_str().unwrap()).unwrap();
    let teacher1 = uuid::Uuid::parse_str(&s.teacher1_id).unwrap();
    cedar::on_db!(db, pool => sqlx::query("UPDATE lessons SET teacher_id = $2, starts_at = $3, ends_at = $4 WHERE id = $1")
        .bind(zoe_id).bind(teacher1).bind(starts).bind(starts + chrono::Duration::minutes(30)).execute(pool).await.map(|_| ()))
    .unwrap();
    // A weekly series of two lessons ends within four weeks with nothing after it.
    let series = json!({"teacher_id": s.teacher2_id, "student_id": s.students[1], "starts_at": at(&app, monday, "17:00"),
        "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=2"}});
    office.post("/v1/lessons", series).await.expect(201);

    let worker = start_worker(&app.state, Duration::from_secs(30));
    let (_, _, pending) = proposal(&app, &s).await;
    stop_worker(worker).await;
    let conflicts = pending["context"]["conflicts"].as_array().unwrap();
    let of = |kind: &str| conflicts.iter().filter(|c| c["kind"] == kind).cloned().collect::<Vec<_>>();
    assert_eq!(of("closure").len(), 1, "{conflicts:#?}");
    let double = of("double_booking");
    assert_eq!(double.len(), 1, "{conflicts:#?}");
    assert_eq!((double[0]["resource"].as_str(), double[0]["substitute"].as_bool()), (Some("teacher"), Some(true)));
    assert_eq!(of("series_ending").len(), 1, "{conflicts:#?}");
    assert_eq!(of("series_ending")[0]["student_id"], s.students[1].as_str());
    // The optimizer still ran on what the template week can hold.
    assert!(pending["context"]["optimizer_error"].is_null(), "{}", pending["context"]["optimizer_error"]);
}

async fn bad_input_is_refused_and_a_week_runs_once(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let start = |input: Value| json!({"workflow": "schedule_review", "input": input});
    let past = week_of(&app) - chrono::Duration::weeks(2);
    for (input, field) in [
        (json!({"week_of": "next week"}), "input.week_of"),
        (json!({"week_of": past}), "input.week_of"),
        (json!({"time_limit_secs": 0}), "input.time_limit_secs"),
        (json!({"max_moves": -1}), "input.max_moves"),
        (json!({"moves": 3}), "input.moves"),
    ] {
        let problem = office.post("/v1/workflow-runs", start(input.clone())).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], field, "{input}: {problem:#}");
    }
    let runs = office.get("/v1/workflow-runs?workflow=schedule_review").await.expect(200);
    assert_eq!(runs["items"], json!([]), "nothing started");
    // Any date of a week names that week; the second trigger finds the first run.
    let monday = week_of(&app);
    let first = office.post("/v1/workflow-runs", start(json!({"week_of": monday}))).await.expect(201);
    let again = office
        .post("/v1/workflow-runs", start(json!({"week_of": monday + chrono::Duration::days(3)})))
        .await
        .expect(200);
    assert_eq!(first["id"], again["id"]);
    // A cancelled week may run again.
    office.post(&format!("/v1/workflow-runs/{}/cancel", first["id"].as_str().unwrap()), json!({})).await.expect(200);
    let fresh = office.post("/v1/workflow-runs", start(json!({"week_of": monday}))).await.expect(201);
    assert_ne!(fresh["id"], first["id"]);
    // The weekly job starts the coming week's run once.
    cedar::workflows::schedule_review::weekly(&app.state).await.unwrap();
    cedar::workflows::schedule_review::weekly(&app.state).await.unwrap();
    let runs = office.get("/v1/workflow-runs?workflow=schedule_review").await.expect(200);
    assert_eq!(runs["items"].as_array().unwrap().len(), 2, "the cancelled run and the week's one: {runs:#}");
}

async fn a_rejection_changes_nothing_and_edits_only_choose_moves(backend: Backend) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |_| {}).await;
    let g = gaps(&app).await;
    let s = &g.s;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let (run, review, pending) = proposal(&app, s).await;
    let office = app.as_user(&s.admin);
    // The office decides: a teacher neither sees nor approves the review, a parent sees no run.
    app.as_user(&s.teacher1).get(&format!("/v1/reviews/{review}")).await.problem(404);
    app.as_user(&s.teacher1).post(&format!("/v1/reviews/{review}/approve"), json!({})).await.problem(404);
    app.as_user(&s.parent_a).get(&format!("/v1/workflow-runs/{run}")).await.problem(403);
    let moves = proposal_moves(&pending);
    office
        .post(&format!("/v1/reviews/{review}/reject"), json!({"reason": "Not before the holidays"}))
        .await
        .expect(200);
    run_reaching(&app, s, &run, "cancelled").await;
    for m in &moves {
        let (_, time, count) = first_lesson(&app, s, m["student_id"].as_str().unwrap()).await;
        assert_eq!((time.as_str(), count), (m["from"]["start_time"].as_str().unwrap(), 6), "rejected: unchanged");
    }
    let emails = office.get("/v1/outbox?template=schedule_change").await.expect(200);
    assert_eq!(emails["items"], json!([]));

    // The rejected week may run again. An edit chooses among the proposed moves: a move it
    // invents is ignored, and a chosen move goes where it was proposed, not where the edit says.
    let (run, review, pending) = proposal(&app, s).await;
    let mut chosen = proposal_moves(&pending)[0].clone();
    let proposed = chosen["to"].clone();
    chosen["to"]["start_time"] = json!("19:30");
    let edits = json!({"moves": [chosen, {"item": "lesson:invented"}]});
    office.post(&format!("/v1/reviews/{review}/approve"), json!({"edits": edits})).await.expect(200);
    let done = run_reaching(&app, s, &run, "succeeded").await;
    stop_worker(worker).await;
    let apply = &done["context"]["apply"];
    assert_eq!(apply["applied"].as_array().unwrap().len(), 1, "{apply:#}");
    assert_eq!(apply["ignored"], json!(["lesson:invented"]));
    let (_, time, _) = first_lesson(&app, s, chosen["student_id"].as_str().unwrap()).await;
    assert_eq!(time, proposed["start_time"].as_str().unwrap());
}
