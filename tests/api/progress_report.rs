//! The progress_report workflow: a period's reports from real attendance and notes, the
//! students who need attention flagged for the owner, review by each student's teacher (and
//! in bulk by an admin), one email per family in its language at a real SMTP server, what
//! parents may see, the consent gate and grounding of AI drafts, and a rerun that creates
//! nothing twice.

use std::time::Duration;

use cedar::config::{AiProviderKind, EmailTransport, Secret, Settings};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, TestApp, spawn_app_with_workflows};
use crate::fakes::{AiFake, OPENAI_KEY, Reply};
use crate::helpers::{School, run_reaching, school, start_worker, stop_worker};
use crate::mail::SmtpServer;

backend_tests!(
    a_months_reports_are_reviewed_by_teachers_and_sent_once_per_family,
    drafts_use_ai_only_with_consent_and_only_the_facts,
    bad_workflow_input_is_422_and_starts_nothing,
);

/// A run the office starts by hand is checked first: a bad period, reason or id is a 422 on
/// its field and no run is created.
async fn bad_workflow_input_is_422_and_starts_nothing(backend: Backend) {
    let (app, s) = setup(backend, |_| {}).await;
    let office = app.as_user(&s.admin);
    let start = |workflow: &'static str, input: Value| {
        let office = &office;
        let body = json!({"workflow": workflow, "input": input});
        async move { office.post("/v1/workflow-runs", body).await }
    };
    let field = |body: &Value| body["errors"][0]["field"].as_str().unwrap_or_default().to_owned();
    let backwards = json!({"period_start": "2026-11-30", "period_end": "2026-11-01"});
    assert_eq!(field(&start("progress_report", backwards).await.problem(422)), "input.period_end");
    let no_dates = json!({"period_start": "November"});
    assert_eq!(field(&start("progress_report", no_dates).await.problem(422)), "input.period_start");
    let not_an_invoice = json!({"invoice_id": s.family_a, "reason": "inquiry"});
    assert_eq!(field(&start("payment_issue", not_an_invoice).await.problem(422)), "input.invoice_id");
    let no_reason = json!({"invoice_id": s.family_a, "reason": "whim"});
    assert_eq!(field(&start("payment_issue", no_reason).await.problem(422)), "input.reason");
    let teacher = json!({"workflow": "progress_report", "input": NOVEMBER()});
    app.as_user(&s.teacher1).post("/v1/workflow-runs", teacher).await.problem(403);
    assert_eq!(runs(&app, &s).await.len(), 0);
    let all = office.get("/v1/workflow-runs?workflow=payment_issue").await.expect(200);
    assert_eq!(all["items"], json!([]));
}

const NOVEMBER: fn() -> Value = || json!({"period_start": "2026-11-01", "period_end": "2026-11-30"});

async fn setup(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> (TestApp, School) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), |settings| {
        settings.progress.send_delay_secs = 0;
        adjust(settings);
    })
    .await;
    let s = school(&app).await;
    (app, s)
}

/// Four weekly lessons from `first` (Toronto 16:00), marked as `marks` says.
async fn lessons(app: &TestApp, s: &School, teacher: &str, student: &str, first: &str, marks: [&str; 4]) {
    let office = app.as_user(&s.admin);
    let booked = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": teacher, "student_id": student, "starts_at": first,
            "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"}, "override_availability": true}),
        )
        .await
        .expect(201);
    for (lesson, mark) in booked["occurrences"].as_array().unwrap().iter().zip(marks) {
        let path = format!("/v1/lessons/{}/attendance", lesson["id"].as_str().unwrap());
        office.post(&path, json!({"status": mark})).await.expect(200);
    }
}

async fn runs(app: &TestApp, s: &School) -> Vec<Value> {
    let page = app.as_user(&s.admin).get("/v1/workflow-runs?workflow=progress_report&limit=100").await.expect(200);
    page["items"].as_array().unwrap().clone()
}

/// Waits until `count` student runs wait for review; returns every run.
async fn waiting(app: &TestApp, s: &School, count: usize) -> Vec<Value> {
    for _ in 0..1200 {
        let all = runs(app, s).await;
        if all.iter().filter(|r| r["status"] == "waiting_for_review").count() >= count {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {count} reports waiting for review: {:#?}", runs(app, s).await);
}

async fn reports(app: &TestApp, token: &str) -> Vec<Value> {
    app.as_user(token).get("/v1/progress-reports").await.expect(200)["items"].as_array().unwrap().clone()
}

fn of<'a>(reports: &'a [Value], student: &str) -> &'a Value {
    reports.iter().find(|r| r["student_id"] == student).expect("a report for the student")
}

async fn a_months_reports_are_reviewed_by_teachers_and_sent_once_per_family(backend: Backend) {
    let server = SmtpServer::start().await;
    let url = server.url();
    let (app, s) =
        setup(backend, move |settings| settings.email.transport = EmailTransport::Smtp { url: Secret::new(url) }).await;
    let (helene, zoe) = (s.students[0].clone(), s.students[1].clone());
    // Hélène (family A, French): three of four in November, with notes. Zoë (family B): all of
    // October, then one of four in November.
    lessons(&app, &s, &s.teacher1_id, &helene, "2026-11-03T21:00:00Z", ["present", "present", "absent", "present"])
        .await;
    lessons(&app, &s, &s.teacher2_id, &zoe, "2026-10-07T20:00:00Z", ["present"; 4]).await;
    let zoe_nov = ["present", "cancelled_by_student", "cancelled_by_student", "cancelled_by_student"];
    lessons(&app, &s, &s.teacher2_id, &zoe, "2026-11-04T21:00:00Z", zoe_nov).await;
    let note =
        json!({"text": "Gymnopédie no. 1: hands together", "goals": "Pedalling in bar 12", "date": "2026-11-17"});
    app.as_user(&s.teacher1).post(&format!("/v1/students/{helene}/progress-notes"), note).await.expect(201);

    let worker = start_worker(&app.state, Duration::from_secs(30));
    let office = app.as_user(&s.admin);
    office.post("/v1/workflow-runs", json!({"workflow": "progress_report", "input": NOVEMBER()})).await.expect(201);
    waiting(&app, &s, 2).await;
    let all = reports(&app, &s.admin).await;
    assert_eq!(all.len(), 2, "Liam is waitlisted: no report");
    let (h, z) = (of(&all, &helene).clone(), of(&all, &zoe).clone());
    assert_eq!((h["metrics"]["lessons"].as_i64(), h["metrics"]["present"].as_i64()), (Some(4), Some(3)));
    assert_eq!(h["metrics"]["attendance_percent"], 75);
    assert_eq!((h["status"].as_str(), h["language"].as_str()), (Some("draft"), Some("fr")));
    assert!(h["summary"].as_str().unwrap().contains("3 cours") && h["body"].as_str().unwrap().contains("Gymnopédie"));
    assert_eq!(z["attention"], true);
    let reasons = z["attention_reasons"].as_array().unwrap();
    assert!(reasons.iter().any(|r| r == "attendance fell from 100% to 25%"), "{reasons:?}");
    assert_eq!(h["attention"], false, "{h:#}");
    // The owner gets one task listing the flagged student.
    let tasks = office.get("/v1/tasks").await.expect(200);
    let task = &tasks["items"][0];
    assert!(task["title"].as_str().unwrap().starts_with("1 student(s) need attention"), "{tasks:#}");
    assert!(task["detail"].as_str().unwrap().contains("Zoë"));

    // Each teacher reviews their own student's report, and only that one.
    let mine = app.as_user(&s.teacher1).get("/v1/reviews?status=pending").await.expect(200);
    let mine = mine["items"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["subject"]["student_id"], helene);
    let theirs = app.as_user(&s.teacher2).get("/v1/reviews?status=pending").await.expect(200);
    let theirs = theirs["items"][0]["id"].as_str().unwrap().to_owned();
    app.as_user(&s.teacher1).post(&format!("/v1/reviews/{theirs}/approve"), json!({})).await.problem(404);
    let edited = "Hélène a beaucoup progressé ce mois-ci : bravo !";
    // Teacher 1 does it on the console: the draft beside the month's figures and notes.
    let mut teacher = crate::console::Browser::new(&app);
    teacher.sign_in("t1@cedarheights.ca", "a-good-password").await;
    let inbox = teacher.get("/console").await.body;
    assert!(inbox.contains("Progress report") && !inbox.contains("Zoë"), "only their own student's report");
    let id = mine[0]["id"].as_str().unwrap();
    let page = teacher.get(&format!("/console/reviews/{id}")).await;
    for shown in ["attendance percent", "Gymnop", "name=\"summary\"", "name=\"body\""] {
        assert!(page.body.contains(shown), "the report review shows {shown}");
    }
    assert_eq!(teacher.get(&format!("/console/reviews/{theirs}")).await.status, 404);
    let body = mine[0]["proposal"]["body"].as_str().unwrap();
    let approved =
        teacher.submit(&format!("/console/reviews/{id}/approve"), &[("summary", edited), ("body", body)]).await;
    assert_eq!(approved.status, 303, "{}", approved.body);
    // The owner approves the rest in bulk.
    app.as_user(&s.teacher1).post("/v1/progress-reports/approve", json!({"report_ids": [z["id"]]})).await.problem(403);
    let bulk = office.post("/v1/progress-reports/approve", json!({"report_ids": [z["id"], h["id"]]})).await.expect(200);
    assert_eq!(bulk["approved"], json!([z["id"]]));

    // One email per family, in its language.
    let mut mail = Vec::new();
    for _ in 0..1200 {
        mail = server.received();
        if mail.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let subjects: Vec<String> = mail.iter().map(|m| m.header("Subject").unwrap_or_default()).collect();
    assert_eq!(subjects.len(), 2, "{subjects:?}");
    assert!(subjects.iter().any(|s| s.starts_with("Bulletin de progrès")), "{subjects:?}");
    assert!(subjects.iter().any(|s| s.starts_with("Progress report")), "{subjects:?}");
    let french = mail.iter().find(|m| m.header("Subject").unwrap_or_default().starts_with("Bulletin")).unwrap();
    assert!(french.body().contains(edited));
    // Its link is signed: it opens the printable report without signing in, styled.
    let body = french.body();
    let link = body.split_whitespace().find(|w| w.contains("/v1/progress-reports/") && w.contains("/view?")).unwrap();
    let path = &link[app.state.settings.public_url.len()..];
    let page = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("style-src 'unsafe-inline'"));
    assert!(page.text().await.unwrap().contains("Bulletin de progrès: Hélène"));
    assert_eq!(app.client.get(app.url(&path.replace("sig=", "sig=f"))).send().await.unwrap().status(), 403);

    // Parents see their own child's sent report and nothing else.
    let parent = reports(&app, &s.parent_a).await;
    for _ in 0..1200 {
        if reports(&app, &s.parent_a).await.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let parent = if parent.is_empty() { reports(&app, &s.parent_a).await } else { parent };
    assert_eq!(parent.len(), 1);
    assert_eq!(parent[0]["status"], "sent");
    let own = parent[0]["id"].as_str().unwrap();
    let page =
        app.client.get(app.url(&format!("/v1/progress-reports/{own}/html"))).bearer_auth(&s.parent_a).send().await;
    let page = page.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("Bulletin de progrès: Hélène"));
    app.as_user(&s.parent_a).get(&format!("/v1/progress-reports/{}", z["id"].as_str().unwrap())).await.problem(404);
    app.as_user(&s.parent_b).get(&format!("/v1/progress-reports/{own}/html")).await.problem(404);
    assert_eq!(reports(&app, &s.teacher2).await.len(), 1, "a teacher sees their students' reports");

    // A rerun of the period continues: nothing is drafted twice.
    let before = runs(&app, &s).await.len();
    let rerun =
        office.post("/v1/workflow-runs", json!({"workflow": "progress_report", "input": NOVEMBER()})).await.expect(201);
    let rerun = rerun["id"].as_str().unwrap().to_owned();
    let run = run_reaching(&app, &s, &rerun, "succeeded").await;
    let plan = run["steps"][0]["output"].clone();
    assert_eq!((plan["started"].as_i64(), plan["already_reported"].as_i64()), (Some(0), Some(2)), "{plan:#}");
    stop_worker(worker).await;
    assert_eq!(runs(&app, &s).await.len(), before + 1);
    assert_eq!(reports(&app, &s.admin).await.len(), 2);
    assert_eq!(server.received().len(), 2, "no second email");
}

async fn drafts_use_ai_only_with_consent_and_only_the_facts(backend: Backend) {
    let fake = AiFake::start(json!({})).await;
    let base = fake.openai_url();
    let (app, s) = setup(backend, move |settings| {
        settings.ai.openai.api_key = Some(Secret::new(OPENAI_KEY));
        settings.ai.openai.base_url = base;
        settings.ai.providers = vec![AiProviderKind::OpenAi];
    })
    .await;
    let (helene, zoe) = (s.students[0].clone(), s.students[1].clone());
    lessons(&app, &s, &s.teacher1_id, &helene, "2026-11-03T21:00:00Z", ["present"; 4]).await;
    lessons(&app, &s, &s.teacher2_id, &zoe, "2026-11-04T21:00:00Z", ["present"; 4]).await;
    app.as_user(&s.parent_a).post("/v1/consents", json!({"kind": "ai_processing", "granted": true})).await.expect(201);
    // The provider first claims an exam nobody mentioned; corrected, it keeps to the facts.
    fake.script_openai([
        Reply::Answer(json!({"summary": "Hélène passed her grade 8 exam!", "body": "A wonderful month with an exam passed in grade 8 and many pieces."})),
        Reply::Answer(json!({"summary": "Hélène came to all 4 lessons.", "body": "Hélène attended 4 of 4 lessons and worked steadily on her pieces this month."})),
    ]);
    let worker = start_worker(&app.state, Duration::from_secs(30));
    app.as_user(&s.admin)
        .post("/v1/workflow-runs", json!({"workflow": "progress_report", "input": NOVEMBER()}))
        .await
        .expect(201);
    waiting(&app, &s, 2).await;
    stop_worker(worker).await;
    let requests = fake.requests("openai");
    assert_eq!(requests.len(), 2, "family A only: a draft and its correction");
    for request in &requests {
        let prompt = request.body["messages"][1]["content"].as_str().unwrap();
        assert!(prompt.contains("Hélène") && !prompt.contains("Côté") && !prompt.contains("example.ca"), "{prompt}");
        assert!(!prompt.contains("Zoë"), "another family's child");
    }
    let all = reports(&app, &s.admin).await;
    assert_eq!(of(&all, &helene)["summary"], "Hélène came to all 4 lessons.");
    assert_eq!(of(&all, &helene)["drafted_by"], "openai");
    assert_eq!(of(&all, &zoe)["drafted_by"], "offline", "family B never consented");
}
