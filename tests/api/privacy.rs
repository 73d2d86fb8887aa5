//! PIPEDA in the product: the consent register and the AI gate that follows it, access
//! requests (everything of the family, nothing of another), erasure (anonymised, invoices
//! kept, old tokens dead, idempotent), the retention purge, and the audit of reads.

use std::time::Duration;

use cedar::config::{AiProviderKind, Secret};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::billing::{billing_app, run_december};
use crate::common::{Backend, spawn_app};
use crate::fakes::{AiFake, OPENAI_KEY, Reply};
use crate::helpers::{run_reaching, school, start_worker, stop_worker};

backend_tests!(
    consents_are_a_register_with_a_current_state,
    the_ai_gate_follows_the_register,
    an_export_holds_everything_of_the_family_and_nothing_else,
    erasure_anonymises_keeps_invoices_and_ends_sessions,
    retention_purges_what_is_due_and_nothing_else,
    staff_reads_are_audited,
);

fn items(page: &Value) -> Vec<Value> {
    page["items"].as_array().unwrap().clone()
}

async fn consents_are_a_register_with_a_current_state(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let parent = app.as_user(&s.parent_a);
    let granted = parent.post("/v1/consents", json!({"kind": "ai_processing", "granted": true})).await.expect(201);
    assert_eq!((granted["method"].as_str(), granted["family_id"].as_str()), (Some("app"), Some(s.family_a.as_str())));
    parent.post("/v1/consents", json!({"kind": "marketing_email", "granted": true})).await.expect(201);
    parent.post("/v1/consents", json!({"kind": "ai_processing", "granted": false})).await.expect(201);
    parent.post("/v1/consents", json!({"kind": "newsletters", "granted": true})).await.problem(422);

    let history = items(&parent.get("/v1/consents").await.expect(200));
    assert_eq!(history.len(), 3);
    let current: Vec<(Value, Value)> =
        history.iter().filter(|c| c["current"] == true).map(|c| (c["kind"].clone(), c["granted"].clone())).collect();
    assert_eq!(current, [(json!("marketing_email"), json!(true)), (json!("ai_processing"), json!(false))]);
    assert_eq!(items(&parent.get("/v1/consents?current=true").await.expect(200)).len(), 2);
    let family = parent.get(&format!("/v1/families/{}", s.family_a)).await.expect(200);
    assert_eq!(family["ai_consent"], false, "the family record reads the register");

    // Another family's register is not there for a parent; teachers have none.
    assert_eq!(items(&app.as_user(&s.parent_b).get("/v1/consents").await.expect(200)), Vec::<Value>::new());
    app.as_user(&s.parent_b).get(&format!("/v1/consents?family_id={}", s.family_a)).await.problem(404);
    let theirs = json!({"family_id": s.family_a, "kind": "ai_processing", "granted": true});
    app.as_user(&s.parent_b).post("/v1/consents", theirs).await.problem(404);
    app.as_user(&s.teacher1).get("/v1/consents").await.problem(403);

    // The office records on a family's behalf, saying how.
    let office = app.as_user(&s.admin);
    let for_b = json!({"family_id": s.family_b, "kind": "data_collection", "granted": true});
    office.post("/v1/consents", for_b.clone()).await.problem(422);
    let mut with_note = for_b.clone();
    with_note["note"] = json!("paper form signed at registration");
    assert_eq!(office.post("/v1/consents", with_note).await.expect(201)["method"], "office");
    assert_eq!(items(&office.get(&format!("/v1/consents?family_id={}", s.family_b)).await.expect(200)).len(), 1);
    assert_eq!(items(&office.get("/v1/consents").await.expect(200)).len(), 4);
    // Setting the family's flag is a register entry too.
    parent.patch(&format!("/v1/families/{}", s.family_a), json!({"ai_consent": true})).await.expect(200);
    let latest = items(&parent.get("/v1/consents?kind=ai_processing&current=true").await.expect(200));
    assert_eq!(latest[0]["granted"], true);
}

async fn the_ai_gate_follows_the_register(backend: Backend) {
    let fake = AiFake::start(json!({})).await;
    let base = fake.openai_url();
    let (app, s) = billing_app(backend, None, move |settings| {
        settings.ai.openai.api_key = Some(Secret::new(OPENAI_KEY));
        settings.ai.openai.base_url = base;
        settings.ai.providers = vec![AiProviderKind::OpenAi];
    })
    .await;
    let (a, _) = run_december(&app, &s).await;
    let parent = app.as_user(&s.parent_a);
    parent.post("/v1/consents", json!({"kind": "ai_processing", "granted": true})).await.expect(201);
    fake.script_openai([
        Reply::Answer(json!({"category": "question_about_charge", "evidence": "lessons"})),
        Reply::Answer(json!({"ranking": [0, 1, 2, 3], "reply": "There were five Tuesdays in December."})),
    ]);
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let ask = |message: &str| json!({"invoice_id": a["id"], "message": message});
    let first = parent.post("/v1/billing/inquiries", ask("Why five lessons?")).await.expect(202);
    run_reaching(&app, &s, first["run_id"].as_str().unwrap(), "waiting_for_review").await;
    assert_eq!(fake.requests("openai").len(), 2);

    // Withdrawn: the next question stays with Cedar's own rules.
    parent.post("/v1/consents", json!({"kind": "ai_processing", "granted": false})).await.expect(201);
    let second = parent.post("/v1/billing/inquiries", ask("And the HST?")).await.expect(202);
    // It joins the open run for the invoice (wait for that); once that run is closed, the next
    // question starts a run of its own.
    run_reaching(&app, &s, second["run_id"].as_str().unwrap(), "succeeded").await;
    let run = run_reaching(&app, &s, first["run_id"].as_str().unwrap(), "waiting_for_review").await;
    app.as_user(&s.admin)
        .post(&format!("/v1/reviews/{}/reject", run["review_id"].as_str().unwrap()), json!({"reason": "by phone"}))
        .await
        .expect(200);
    let third = parent.post("/v1/billing/inquiries", ask("Is the late fee right?")).await.expect(202);
    run_reaching(&app, &s, third["run_id"].as_str().unwrap(), "waiting_for_review").await;
    stop_worker(worker).await;
    assert_eq!(fake.requests("openai").len(), 2, "nothing more left Cedar");
}

async fn an_export_holds_everything_of_the_family_and_nothing_else(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    run_december(&app, &s).await;
    let parent = app.as_user(&s.parent_a);
    parent.post("/v1/consents", json!({"kind": "marketing_email", "granted": false})).await.expect(201);
    parent.post("/v1/threads", json!({"subject": "Recital", "body": "Hélène will play Satie."})).await.expect(201);
    app.as_user(&s.teacher1)
        .post(
            &format!("/v1/students/{}/progress-notes", s.students[0]),
            json!({"text": "Gymnopédie no. 1, hands together"}),
        )
        .await
        .expect(201);

    let export = parent.get("/v1/privacy/export").await.expect(200);
    assert_eq!(export["family"]["name"], "Famille Côté");
    assert!(export["family"].get("calendar_token").is_none(), "secrets are withheld");
    assert_eq!(export["guardians"][0]["email"], "a@example.ca");
    assert!(export["guardians"][0].get("password_hash").is_none());
    let count = |section: &str| export[section].as_array().unwrap().len();
    assert_eq!(count("students"), 1);
    assert_eq!(count("lessons"), 5);
    assert!(export["lessons"][0].get("attendance_marked_at").is_some(), "every column of the lesson");
    assert!(export["lessons"][0].get("row_version").is_none(), "not the kept pages' internal number");
    assert_eq!(count("invoices"), 1);
    assert!(count("invoice_lines") >= 1);
    assert_eq!(count("progress_notes"), 1);
    assert_eq!(count("threads"), 1);
    assert_eq!(count("messages"), 1);
    assert!(count("emails") >= 1, "the invoice email");
    assert_eq!(count("consents"), 1);
    assert!(export["audit_log"].as_array().unwrap().iter().any(|e| e["action"] == "family.created"));
    let text = export.to_string();
    for other in ["Tremblay", "Zoë", "b@example.ca", s.family_b.as_str(), s.students[1].as_str()] {
        assert!(!text.contains(other), "another family's {other} is in the export");
    }

    // Another family's export is not there; admins export any family; each export is audited.
    app.as_user(&s.parent_b).get(&format!("/v1/privacy/export?family_id={}", s.family_a)).await.problem(404);
    app.as_user(&s.teacher1).get(&format!("/v1/privacy/export?family_id={}", s.family_a)).await.problem(403);
    let office = app.as_user(&s.admin);
    office.get("/v1/privacy/export").await.problem(422);
    let theirs = office.get(&format!("/v1/privacy/export?family_id={}", s.family_b)).await.expect(200);
    assert_eq!(theirs["students"].as_array().unwrap().len(), 2);
    let audit =
        office.get(&format!("/v1/audit-log?subject_id={}&action=privacy.exported", s.family_a)).await.expect(200);
    assert_eq!(items(&audit).len(), 1);
}

async fn erasure_anonymises_keeps_invoices_and_ends_sessions(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let (a, _) = run_december(&app, &s).await;
    let parent = app.as_user(&s.parent_a);
    parent.post("/v1/threads", json!({"subject": "Question", "body": "Hélène has a cold."})).await.expect(201);
    // A lesson in the future, which erasure cancels.
    app.as_user(&s.admin)
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0],
            "starts_at": "2030-01-08T21:00:00Z", "duration_minutes": 30, "override_availability": true}),
        )
        .await
        .expect(201);

    let request = parent.post("/v1/privacy/erasure-requests", json!({"reason": "moving away"})).await.expect(201);
    assert_eq!(request["status"], "pending");
    let again = parent.post("/v1/privacy/erasure-requests", json!({})).await.expect(200);
    assert_eq!(again["id"], request["id"], "one open request");
    assert_eq!(items(&app.as_user(&s.parent_b).get("/v1/privacy/erasure-requests").await.expect(200)).len(), 0);
    let approve = format!("/v1/privacy/erasure-requests/{}/approve", request["id"].as_str().unwrap());
    parent.post(&approve, json!({})).await.problem(403);
    // Family B asks too; the office rejects that one, which can then not be approved.
    let theirs = app.as_user(&s.parent_b).post("/v1/privacy/erasure-requests", json!({})).await.expect(201);
    let reject = format!("/v1/privacy/erasure-requests/{}/reject", theirs["id"].as_str().unwrap());
    app.as_user(&s.parent_b).post(&reject, json!({})).await.problem(403);
    let rejected = app.as_user(&s.admin).post(&reject, json!({"note": "outstanding balance first"})).await.expect(200);
    assert_eq!(rejected["status"], "rejected");
    app.as_user(&s.admin).post(&reject, json!({})).await.problem(409);
    let approve_theirs = format!("/v1/privacy/erasure-requests/{}/approve", theirs["id"].as_str().unwrap());
    app.as_user(&s.admin).post(&approve_theirs, json!({})).await.problem(409);
    let family_b = app.as_user(&s.admin).get(&format!("/v1/families/{}", s.family_b)).await.expect(200);
    assert_eq!(family_b["name"], "Tremblay-Smith", "nothing erased");

    let office = app.as_user(&s.admin);
    let done = office.call("POST", &approve, None).await.expect(200);
    assert_eq!(done["status"], "completed");
    assert_eq!(
        office.call("POST", &approve, None).await.expect(200)["completed_at"],
        done["completed_at"],
        "idempotent"
    );

    let family = office.get(&format!("/v1/families/{}", s.family_a)).await.expect(200);
    assert!(family["name"].as_str().unwrap().starts_with("Erased family "), "{family:#}");
    assert!(family["email"].is_null() && family["phone"].is_null());
    let student = office.get(&format!("/v1/students/{}", s.students[0])).await.expect(200);
    assert_eq!((student["first_name"].as_str(), student["status"].as_str()), (Some("Erased"), Some("withdrawn")));
    let invoice = office.get(&format!("/v1/invoices/{}", a["id"].as_str().unwrap())).await.expect(200);
    assert_eq!(invoice["total_cents"], a["total_cents"], "invoices stay");
    let lessons = office.get(&format!("/v1/lessons?student_id={}&from=2029-01-01T00:00:00Z", s.students[0])).await;
    assert!(items(&lessons.expect(200)).iter().all(|l| l["status"] == "cancelled"));
    let threads = office.get(&format!("/v1/threads?family_id={}", s.family_a)).await.expect(200);
    for thread in items(&threads) {
        let messages =
            office.get(&format!("/v1/threads/{}/messages", thread["id"].as_str().unwrap())).await.expect(200);
        assert!(items(&messages).iter().all(|m| m["body"] == "[erased]"));
    }
    // The parent's token no longer works; a new request for the family is refused.
    app.as_user(&s.parent_a).get("/v1/me").await.problem(401);
    let again = json!({"family_id": s.family_a});
    office.post("/v1/privacy/erasure-requests", again).await.problem(409);
    let export = office.get(&format!("/v1/privacy/export?family_id={}", s.family_a)).await.expect(200);
    let traces: Vec<&String> =
        export.as_object().unwrap().iter().filter(|(_, v)| v.to_string().contains("Hélène")).map(|(k, _)| k).collect();
    assert!(traces.is_empty(), "the child's name is still in {traces:?}");
}

async fn retention_purges_what_is_due_and_nothing_else(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    run_december(&app, &s).await;
    let office = app.as_user(&s.admin);
    // A former family, registered four years ago, with no student and nothing billed.
    let former = office.post("/v1/families", json!({"name": "Anciens", "email": "old@example.ca"})).await.expect(201);
    let former_id = former["id"].as_str().unwrap().to_owned();
    let now = chrono::Utc::now();
    let db = &app.state.db;
    let uuid = |s: &str| uuid::Uuid::parse_str(s).unwrap();
    cedar::on_db!(db, pool => sqlx::query("UPDATE families SET created_at = $2 WHERE id = $1")
        .bind(uuid(&former_id)).bind(now - chrono::Duration::days(4 * 365)).execute(pool).await.map(|_| ()))
    .unwrap();
    // One email sent long ago, the others recent; one audit entry older than seven years.
    let emails = items(&office.get("/v1/outbox?limit=200").await.expect(200));
    assert!(emails.len() >= 2);
    let old_email = uuid(emails[0]["id"].as_str().unwrap());
    cedar::on_db!(db, pool => sqlx::query("UPDATE outbox SET status = 'sent', created_at = $2 WHERE id = $1")
        .bind(old_email).bind(now - chrono::Duration::days(120)).execute(pool).await.map(|_| ()))
    .unwrap();
    let oldest_audit: uuid::Uuid =
        cedar::on_db!(db, pool => sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id LIMIT 1").fetch_one(pool).await)
            .unwrap();
    cedar::on_db!(db, pool => sqlx::query("UPDATE audit_log SET occurred_at = $2 WHERE id = $1")
        .bind(oldest_audit).bind(now - chrono::Duration::days(8 * 365)).execute(pool).await.map(|_| ()))
    .unwrap();

    let purged = cedar::privacy::retention::purge(&app.state, now).await.unwrap();
    assert_eq!(purged, json!({"email_bodies": 1, "ai_steps": 0, "audit_entries": 1, "former_families": 1}));
    let outbox = items(&office.get("/v1/outbox?limit=200").await.expect(200));
    let bodies: Vec<(&str, &str)> =
        outbox.iter().map(|e| (e["id"].as_str().unwrap(), e["body"].as_str().unwrap_or_default())).collect();
    assert_eq!(bodies.iter().filter(|(_, b)| *b == "[purged]").count(), 1);
    assert!(bodies.iter().any(|(id, b)| *id == old_email.to_string() && *b == "[purged]"));
    let family = office.get(&format!("/v1/families/{former_id}")).await.expect(200);
    assert!(family["name"].as_str().unwrap().starts_with("Erased family"));
    let current = office.get(&format!("/v1/families/{}", s.family_a)).await.expect(200);
    assert_eq!(current["name"], "Famille Côté", "a current family is untouched");
    // Nothing more is due the next day.
    let again = cedar::privacy::retention::purge(&app.state, now).await.unwrap();
    assert_eq!(again, json!({"email_bodies": 0, "ai_steps": 0, "audit_entries": 0, "former_families": 0}));
}

async fn staff_reads_are_audited(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let student = &s.students[0];
    app.as_user(&s.teacher1).get(&format!("/v1/students/{student}")).await.expect(200);
    app.as_user(&s.parent_a).get(&format!("/v1/students/{student}")).await.expect(200);
    app.as_user(&s.admin).get(&format!("/v1/families/{}", s.family_a)).await.expect(200);
    let office = app.as_user(&s.admin);
    let reads =
        items(&office.get(&format!("/v1/audit-log?subject_id={student}&action=student.viewed")).await.expect(200));
    assert_eq!(reads.len(), 1, "the teacher's read, not the parent's");
    let teacher = app.as_user(&s.teacher1).get("/v1/me").await.expect(200);
    assert_eq!(reads[0]["actor_id"], teacher["id"]);
    let family =
        items(&office.get(&format!("/v1/audit-log?subject_id={}&action=family.viewed", s.family_a)).await.expect(200));
    assert_eq!(family.len(), 1);
    let by_actor =
        items(&office.get(&format!("/v1/audit-log?actor_id={}", teacher["id"].as_str().unwrap())).await.expect(200));
    assert!(by_actor.iter().any(|e| e["action"] == "student.viewed"));

    // Concurrent reads share commits, yet every one is recorded, with its own request id,
    // before its answer.
    let reads = (0..40).map(|_| {
        let (client, url, token) =
            (app.client.clone(), app.url(&format!("/v1/students/{student}")), s.teacher1.clone());
        async move { client.get(url).bearer_auth(token).send().await.unwrap().status().as_u16() }
    });
    assert!(futures_util::future::join_all(reads).await.iter().all(|status| *status == 200));
    let path = format!("/v1/audit-log?subject_id={student}&action=student.viewed&limit=100");
    let reads = items(&office.get(&path).await.expect(200));
    assert_eq!(reads.len(), 41);
    let ids: std::collections::BTreeSet<&str> = reads.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 41, "one entry per request");
}
