//! The enrollment workflow end to end: offline and with a provider fake, consent, review with
//! edits, a slot taken between review and booking, decline, waitlist, a crash between the
//! actions, auto-approve; the welcome email reaches a real SMTP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cedar::config::{AiProviderKind, EmailTransport, Secret, Settings};
use cedar::workflows::engine::{Definitions, Step, StepCtx};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, TestApp, spawn_app_with_workflows};
use crate::fakes::{AiFake, OPENAI_KEY};
use crate::helpers::{School, json_ok, school, send, start_worker, stop_worker};
use crate::mail::SmtpServer;

async fn setup(backend: Backend, definitions: Definitions, adjust: impl FnOnce(&mut Settings)) -> (TestApp, School) {
    let app = spawn_app_with_workflows(backend, definitions, adjust).await;
    let s = school(&app).await;
    // Teacher 1 (piano, voice) teaches Tuesdays 15:00–19:00.
    json_ok(
        send(
            &app,
            "PUT",
            &format!("/v1/teachers/{}/availability", s.teacher1_id),
            &s.admin,
            Some(json!({"windows": [{"weekday": 2, "start_time": "15:00", "end_time": "19:00"}]})),
        )
        .await,
        200,
    )
    .await;
    (app, s)
}

async fn request(app: &TestApp, token: &str, family: &str, first_name: &str) -> String {
    let body = json!({"family_id": family, "student": {"first_name": first_name, "last_name": "Côté", "birth_date": "2015-04-02"},
        "instrument": "piano", "lesson_minutes": 30, "experience": "Two years of Suzuki",
        "preferred_times": [{"weekday": 2, "start_time": "16:00", "end_time": "17:00"}]});
    json_ok(send(app, "POST", "/v1/enrollments", token, Some(body)).await, 201).await["id"].as_str().unwrap().to_owned()
}

/// The run of an enrollment request, once it has reached `status`.
async fn run_of(app: &TestApp, s: &School, enrollment: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..1200 {
        let runs = json_ok(send(app, "GET", "/v1/workflow-runs?workflow=enrollment", &s.admin, None).await, 200).await;
        if let Some(run) = runs["items"].as_array().unwrap().iter().find(|r| r["input"]["enrollment_id"] == enrollment)
        {
            last = json_ok(
                send(app, "GET", &format!("/v1/workflow-runs/{}", run["id"].as_str().unwrap()), &s.admin, None).await,
                200,
            )
            .await;
            if last["status"] == status {
                return last;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the run of {enrollment} never became {status}: {last:#}");
}

async fn review_of(app: &TestApp, s: &School, run: &Value) -> Value {
    let id = run["review_id"].as_str().expect("a pending review");
    json_ok(send(app, "GET", &format!("/v1/reviews/{id}"), &s.admin, None).await, 200).await
}

async fn lessons_of(app: &TestApp, s: &School, student: &str) -> Vec<Value> {
    let page =
        json_ok(send(app, "GET", &format!("/v1/lessons?student_id={student}&limit=100"), &s.admin, None).await, 200)
            .await;
    page["items"].as_array().unwrap().clone()
}

fn local_time(starts_at: &str) -> String {
    let at: chrono::DateTime<chrono::Utc> = starts_at.parse().unwrap();
    at.with_timezone(&chrono_tz::America::Toronto).format("%a %H:%M").to_string()
}

fn smtp(server: &SmtpServer) -> impl FnOnce(&mut Settings) {
    let url = server.url();
    move |settings: &mut Settings| settings.email.transport = EmailTransport::Smtp { url: Secret::new(url) }
}

async fn offline_request_is_reviewed_edited_and_booked_with_a_welcome_email(backend: Backend) {
    let server = SmtpServer::start().await;
    let (app, s) = setup(backend, cedar::workflows::builtin(), smtp(&server)).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let enrollment = request(&app, &s.parent_a, &s.family_a, "Éloïse").await;
    let run = run_of(&app, &s, &enrollment, "waiting_for_review").await;
    let review = review_of(&app, &s, &run).await;
    // The reviewer sees the checks, the conflict-checked options ranked, and the draft.
    assert!(review["context"]["checks"].as_array().unwrap().iter().all(|c| c["ok"] == true), "{review:#}");
    let options = review["context"]["options"].as_array().unwrap();
    let times: Vec<String> = options.iter().map(|o| local_time(o["first_lesson"].as_str().unwrap())).collect();
    assert_eq!(times, ["Tue 16:00", "Tue 16:15"], "exact preferred time first");
    assert_eq!(options[0]["teacher_id"], s.teacher1_id);
    assert_eq!(review["context"]["drafted_by"]["provider"], "offline");
    assert_eq!(review["proposal"]["decision"], "enroll");
    assert!(review["proposal"]["welcome_paragraph"].as_str().unwrap().contains("Éloïse"));
    assert_eq!(review["subject"]["student"], "Éloïse Côté");

    // The owner picks the second slot and rewrites the paragraph.
    let edits = json!({"option": 1, "welcome_paragraph": "Nous avons hâte d'entendre Éloïse jouer !"});
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{}/approve", review["id"].as_str().unwrap()),
            &s.admin,
            Some(json!({"edits": edits})),
        )
        .await,
        200,
    )
    .await;
    let run = run_of(&app, &s, &enrollment, "succeeded").await;
    let names: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["validate", "options", "rank", "route", "review", "decide", "enroll", "welcome"]);

    let request = json_ok(send(&app, "GET", &format!("/v1/enrollments/{enrollment}"), &s.admin, None).await, 200).await;
    assert_eq!(request["status"], "approved");
    let student = request["student_id"].as_str().unwrap().to_owned();
    let record = json_ok(send(&app, "GET", &format!("/v1/students/{student}"), &s.admin, None).await, 200).await;
    assert_eq!(
        (record["status"].as_str(), record["teacher_id"].as_str()),
        (Some("active"), Some(s.teacher1_id.as_str()))
    );
    let lessons = lessons_of(&app, &s, &student).await;
    assert_eq!(lessons.len(), 12);
    assert!(lessons.iter().all(|l| local_time(l["starts_at"].as_str().unwrap()) == "Tue 16:15"));
    // Received at submission, then the welcome (French: family A's language).
    let mail = wait_for(&server, 2).await;
    let welcome = &mail[1];
    assert_eq!(welcome.to, ["a@example.ca"]);
    assert_eq!(welcome.header("Subject").unwrap(), "Bienvenue à Cedar Heights Music Academy");
    let body = welcome.body();
    assert!(body.contains("Nous avons hâte d'entendre Éloïse jouer !") && body.contains("mardi"), "{body}");
    stop_worker(worker).await;
}

async fn wait_for(server: &SmtpServer, count: usize) -> Vec<crate::mail::Received> {
    for _ in 0..1200 {
        if server.received().len() >= count {
            return server.received();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {count} emails: {:#?}", server.received());
}

async fn a_provider_ranks_only_with_the_familys_consent(backend: Backend) {
    let answer = json!({"ranking": [1, 0], "reasons": ["16:15 leaves time to get from school"],
        "welcome_paragraph": "Welcome, Éloïse! We look forward to the first lesson."});
    let fake = AiFake::start(answer).await;
    let base = fake.openai_url();
    let (app, s) = setup(backend, cedar::workflows::builtin(), move |settings| {
        settings.ai.openai.api_key = Some(Secret::new(OPENAI_KEY));
        settings.ai.openai.base_url = base;
        settings.ai.providers = vec![AiProviderKind::OpenAi];
    })
    .await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    // Family B never consented: its request is ranked offline, nothing leaves.
    let b = request(&app, &s.parent_b, &s.family_b, "Noah").await;
    let run = run_of(&app, &s, &b, "waiting_for_review").await;
    assert_eq!(fake.requests("openai").len(), 0);
    let review = review_of(&app, &s, &run).await;
    assert!(review["context"]["fallback_reason"].as_str().unwrap().contains("consented"));
    // Family A consents: the provider's ranking is used.
    json_ok(
        send(&app, "PATCH", &format!("/v1/families/{}", s.family_a), &s.parent_a, Some(json!({"ai_consent": true})))
            .await,
        200,
    )
    .await;
    let a = request(&app, &s.parent_a, &s.family_a, "Éloïse").await;
    let run = run_of(&app, &s, &a, "waiting_for_review").await;
    stop_worker(worker).await;
    let requests = fake.requests("openai");
    assert_eq!(requests.len(), 1);
    let prompt = requests[0].body["messages"][1]["content"].as_str().unwrap();
    assert!(prompt.contains("Éloïse") && !prompt.contains("Côté") && !prompt.contains("example.ca"), "{prompt}");
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["context"]["drafted_by"]["provider"], "openai");
    let first = local_time(review["context"]["options"][0]["first_lesson"].as_str().unwrap());
    assert_eq!(first, "Tue 16:15", "the provider's order");
    assert!(run["ai_cost_micros"].as_i64().unwrap() > 0);
}

async fn a_slot_taken_after_review_goes_back_to_a_new_review(backend: Backend) {
    let (app, s) = setup(backend, cedar::workflows::builtin(), |_| {}).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let enrollment = request(&app, &s.parent_a, &s.family_a, "Éloïse").await;
    let run = run_of(&app, &s, &enrollment, "waiting_for_review").await;
    let review = review_of(&app, &s, &run).await;
    let taken = review["context"]["options"][0]["first_lesson"].as_str().unwrap().to_owned();
    // Meanwhile the office books Hélène into that very slot.
    json_ok(
        send(
            &app,
            "POST",
            "/v1/lessons",
            &s.admin,
            Some(json!({"teacher_id": s.teacher1_id, "student_id": s.students[0],
        "starts_at": taken, "duration_minutes": 30})),
        )
        .await,
        201,
    )
    .await;
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{}/approve", review["id"].as_str().unwrap()),
            &s.admin,
            Some(json!({})),
        )
        .await,
        200,
    )
    .await;
    // Back through options to a fresh review, without the taken slot; nothing was booked.
    let mut again = Value::Null;
    for _ in 0..1200 {
        again = run_of(&app, &s, &enrollment, "waiting_for_review").await;
        if again["review_id"] != review["id"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(again["review_id"], review["id"]);
    let second = review_of(&app, &s, &again).await;
    assert_eq!(second["context"]["slot_taken_before"], true);
    let times: Vec<&str> =
        second["context"]["options"].as_array().unwrap().iter().map(|o| o["first_lesson"].as_str().unwrap()).collect();
    assert!(!times.contains(&taken.as_str()), "{times:?}");
    let request = json_ok(send(&app, "GET", &format!("/v1/enrollments/{enrollment}"), &s.admin, None).await, 200).await;
    assert_eq!(request["status"], "submitted");
    assert!(request["student_id"].is_null());
    stop_worker(worker).await;
}

async fn the_owner_can_decline_or_waitlist(backend: Backend) {
    let (app, s) = setup(backend, cedar::workflows::builtin(), |_| {}).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let declined = request(&app, &s.parent_a, &s.family_a, "Éloïse").await;
    let waitlisted = request(&app, &s.parent_b, &s.family_b, "Noah").await;
    let run = run_of(&app, &s, &declined, "waiting_for_review").await;
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{}/reject", run["review_id"].as_str().unwrap()),
            &s.admin,
            Some(json!({"reason": "Piano is full until January."})),
        )
        .await,
        200,
    )
    .await;
    run_of(&app, &s, &declined, "succeeded").await;
    let run = run_of(&app, &s, &waitlisted, "waiting_for_review").await;
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{}/approve", run["review_id"].as_str().unwrap()),
            &s.admin,
            Some(json!({"edits": {"decision": "waitlist"}})),
        )
        .await,
        200,
    )
    .await;
    run_of(&app, &s, &waitlisted, "succeeded").await;
    stop_worker(worker).await;
    let first = json_ok(send(&app, "GET", &format!("/v1/enrollments/{declined}"), &s.admin, None).await, 200).await;
    assert_eq!(
        (first["status"].as_str(), first["decision_reason"].as_str()),
        (Some("declined"), Some("Piano is full until January."))
    );
    let second = json_ok(send(&app, "GET", &format!("/v1/enrollments/{waitlisted}"), &s.admin, None).await, 200).await;
    assert_eq!(second["status"], "waitlisted");
    let student = json_ok(
        send(&app, "GET", &format!("/v1/students/{}", second["student_id"].as_str().unwrap()), &s.admin, None).await,
        200,
    )
    .await;
    assert_eq!(student["status"], "waitlisted");
    let outbox = json_ok(send(&app, "GET", "/v1/outbox?limit=50", &s.admin, None).await, 200).await;
    let templates: Vec<&str> =
        outbox["items"].as_array().unwrap().iter().map(|e| e["template"].as_str().unwrap()).collect();
    assert!(
        templates.contains(&"enrollment_declined") && templates.contains(&"enrollment_waitlisted"),
        "{templates:?}"
    );
}

async fn a_crash_between_the_actions_repeats_nothing(backend: Backend) {
    // The welcome step hangs on its first attempt (its worker dies there), after `enroll`
    // has committed the student and lessons.
    let hang = Arc::new(AtomicBool::new(true));
    let mut workflow = cedar::workflows::enrollment::workflow();
    let index = workflow.steps.iter().position(|s| s.name == "welcome").unwrap();
    let original = Arc::new(workflow.steps.remove(index));
    let flag = hang.clone();
    workflow.steps.insert(
        index,
        Step::action("welcome", move |cx: StepCtx| {
            let (original, flag) = (original.clone(), flag.clone());
            async move {
                if flag.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                original.call(cx).await
            }
        }),
    );
    let (app, s) = setup(backend, cedar::workflows::builtin().with(workflow), |_| {}).await;
    let first_worker = start_worker(&app.state, Duration::from_secs(1));
    let enrollment = request(&app, &s.parent_a, &s.family_a, "Éloïse").await;
    let run = run_of(&app, &s, &enrollment, "waiting_for_review").await;
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/reviews/{}/approve", run["review_id"].as_str().unwrap()),
            &s.admin,
            Some(json!({})),
        )
        .await,
        200,
    )
    .await;
    for _ in 0..1200 {
        let run = run_of(&app, &s, &enrollment, "running").await;
        if run["current_step"] == "welcome" && run["steps"].as_array().unwrap().iter().any(|s| s["name"] == "welcome") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    first_worker.1.abort();
    let _ = first_worker.1.await;
    hang.store(false, Ordering::SeqCst);
    let second_worker = start_worker(&app.state, Duration::from_secs(1));
    let run = run_of(&app, &s, &enrollment, "succeeded").await;
    stop_worker(second_worker).await;
    let step = |name: &str| run["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap().clone();
    assert_eq!(step("enroll")["attempts"], 1);
    assert_eq!(step("welcome")["attempts"], 2);
    let request = json_ok(send(&app, "GET", &format!("/v1/enrollments/{enrollment}"), &s.admin, None).await, 200).await;
    let student = request["student_id"].as_str().unwrap();
    assert_eq!(lessons_of(&app, &s, student).await.len(), 12, "lessons booked once");
    let students =
        json_ok(send(&app, "GET", &format!("/v1/students?family_id={}", s.family_a), &s.admin, None).await, 200).await;
    assert_eq!(students["items"].as_array().unwrap().len(), 2, "Hélène and one Éloïse");
    let welcome = json_ok(send(&app, "GET", "/v1/outbox?template=welcome", &s.admin, None).await, 200).await;
    assert_eq!(welcome["items"].as_array().unwrap().len(), 1);
}

async fn auto_approve_skips_review_only_when_everything_fits(backend: Backend) {
    let (app, s) =
        setup(backend, cedar::workflows::builtin(), |settings| settings.enrollment_auto_approve = true).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let enrollment = request(&app, &s.parent_a, &s.family_a, "Éloïse").await;
    let run = run_of(&app, &s, &enrollment, "succeeded").await;
    assert_eq!(run["context"]["route"]["review_skipped"], true);
    assert!(run["steps"].as_array().unwrap().iter().all(|s| s["name"] != "review"));
    // A request for an instrument nobody teaches still goes to a person.
    let body = json!({"family_id": s.family_b, "student": {"first_name": "Noah", "last_name": "Tremblay"}, "instrument": "harp",
        "lesson_minutes": 30, "preferred_times": [{"weekday": 2, "start_time": "16:00", "end_time": "17:00"}]});
    let harp = json_ok(send(&app, "POST", "/v1/enrollments", &s.parent_b, Some(body)).await, 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = run_of(&app, &s, &harp, "waiting_for_review").await;
    stop_worker(worker).await;
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["proposal"]["decision"], "waitlist");
    assert_eq!(review["context"]["options"], json!([]));
}

/// A request for a child already at the school names that child, and the drafted welcome is
/// in the family's language; approved, the weekly lessons run to the end of the term.
async fn an_existing_student_is_named_in_the_familys_language_and_booked_to_term_end(backend: Backend) {
    let (app, s) = setup(backend, cedar::workflows::builtin(), |_| {}).await;
    let today = cedar::time::today(app.state.settings.timezone);
    let term_end = today + chrono::Duration::days(40);
    app.as_user(&s.admin)
        .post(
            "/v1/terms",
            json!({"name": "Winter", "starts_on": today - chrono::Duration::days(10), "ends_on": term_end}),
        )
        .await
        .expect(201);
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let body = json!({"family_id": s.family_a, "student_id": s.students[0], "instrument": "voice", "lesson_minutes": 30,
        "preferred_times": [{"weekday": 2, "start_time": "17:00", "end_time": "18:00"}]});
    let id =
        app.as_user(&s.parent_a).post("/v1/enrollments", body).await.expect(201)["id"].as_str().unwrap().to_owned();
    let run = run_of(&app, &s, &id, "waiting_for_review").await;
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["subject"]["student"], "Hélène Côté");
    let welcome = review["proposal"]["welcome_paragraph"].as_str().unwrap();
    assert!(welcome.contains("Hélène") && welcome.starts_with("Nous sommes ravis"), "{welcome}");
    let approve = format!("/v1/reviews/{}/approve", review["id"].as_str().unwrap());
    app.as_user(&s.admin).post(&approve, json!({})).await.expect(200);
    let done = run_of(&app, &s, &id, "succeeded").await;
    stop_worker(worker).await;
    let voice: Vec<Value> = lessons_of(&app, &s, &s.students[0]).await;
    assert!(!voice.is_empty(), "{done:#}");
    let first = cedar::time::next_weekday(today, 2);
    let tuesdays = (0..).map(|w| first + chrono::Duration::weeks(w)).take_while(|d| *d <= term_end).count();
    assert_eq!(voice.len(), tuesdays, "weekly through the end of the term");
    let last: chrono::DateTime<chrono::Utc> = voice.last().unwrap()["starts_at"].as_str().unwrap().parse().unwrap();
    assert!(cedar::time::local_date(app.state.settings.timezone, last) <= term_end);
}

backend_tests!(
    an_existing_student_is_named_in_the_familys_language_and_booked_to_term_end,
    offline_request_is_reviewed_edited_and_booked_with_a_welcome_email,
    a_provider_ranks_only_with_the_familys_consent,
    a_slot_taken_after_review_goes_back_to_a_new_review,
    the_owner_can_decline_or_waitlist,
    a_crash_between_the_actions_repeats_nothing,
    auto_approve_skips_review_only_when_everything_fits,
    a_window_reaching_midnight_ends_the_search,
);

/// A preferred window up to 23:59 used to loop for ever (a `NaiveTime` wraps at midnight) while
/// holding SQLite's write lock: the search must end, and find nothing there.
async fn a_window_reaching_midnight_ends_the_search(backend: Backend) {
    let (app, s) = setup(backend, cedar::workflows::builtin(), |_| {}).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let body = json!({"family_id": s.family_a, "student": {"first_name": "Nuit", "last_name": "Côté"},
        "instrument": "piano", "lesson_minutes": 30,
        "preferred_times": [{"weekday": 2, "start_time": "23:00", "end_time": "23:59"}]});
    let enrollment = app.as_user(&s.parent_a).post("/v1/enrollments", body).await.expect(201);
    let run = run_of(&app, &s, enrollment["id"].as_str().unwrap(), "waiting_for_review").await;
    // Writers are not kept waiting meanwhile.
    app.as_user(&s.admin).post("/v1/rooms", json!({"name": "Studio Z", "capacity": 2})).await.expect(201);
    stop_worker(worker).await;
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["context"]["options"], json!([]));
    assert_eq!(review["proposal"]["decision"], "waitlist");
}
