//! The payment_issue workflow end to end: a declined card answered after review with an email
//! at a real SMTP server and a follow-up task; a parent's inquiry in the billing thread; "already
//! paid" resolved by recording the payment; a dispute; a hardship payment plan with its
//! reminders; duplicate triggers; an act that fails after doing its work; the consent gate; and
//! the tasks API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cedar::config::{AiProviderKind, EmailTransport, Secret, Settings};
use cedar::workflows::engine::{Step, StepCtx, StepError};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::billing::{WEBHOOK_SECRET, billing_app, deliver, event, run_december, signed};
use crate::common::{Backend, TestApp};
use crate::fakes::{AiFake, OPENAI_KEY, Reply};
use crate::helpers::{School, run_reaching, start_worker, stop_worker};
use crate::mail::SmtpServer;
use crate::stripe_fake::StripeFake;

backend_tests!(
    a_declined_card_is_answered_after_review_with_an_email_and_a_task,
    auto_resolution_retries_a_first_insufficient_funds_decline_without_review,
    a_parents_inquiry_goes_to_the_billing_thread_and_already_paid_is_recorded,
    a_dispute_becomes_tasks_for_the_office,
    hardship_gets_a_payment_plan_with_instalment_reminders,
    an_act_that_fails_after_its_work_repeats_nothing,
    external_ai_sees_only_consenting_families_and_no_names,
    tasks_follow_roles,
    a_card_payment_on_a_void_invoice_becomes_a_refund_task,
);

/// Money taken for an invoice voided meanwhile is recorded (the invoice stays void) and the
/// office gets a task to refund it.
async fn a_card_payment_on_a_void_invoice_becomes_a_refund_task(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let (a, _) = run_december(&app, &s).await;
    let invoice = a["id"].as_str().unwrap().to_owned();
    app.as_user(&s.admin).post(&format!("/v1/invoices/{invoice}/void"), json!({})).await.expect(200);
    let paid = event(
        "evt_late_pay",
        "payment_intent.succeeded",
        json!({"id": "pi_late", "object": "payment_intent", "amount": 19_775, "amount_received": 19_775,
            "status": "succeeded", "metadata": {"invoice_id": invoice}}),
    );
    send_event(&app, &paid).await;
    send_event(&app, &paid).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let mut tasks = Vec::new();
    for _ in 0..1200 {
        tasks = tasks_about(&app, &s, &invoice).await;
        if !tasks.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop_worker(worker).await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert!(tasks[0].starts_with("Refund the card payment"));
    let after = app.as_user(&s.admin).get(&format!("/v1/invoices/{invoice}")).await.expect(200);
    assert_eq!(after["status"], "void");
}

fn smtp(server: &SmtpServer) -> impl FnOnce(&mut Settings) {
    let url = server.url();
    move |settings: &mut Settings| settings.email.transport = EmailTransport::Smtp { url: Secret::new(url) }
}

async fn send_event(app: &TestApp, body: &str) {
    let now = chrono::Utc::now().timestamp();
    let response = deliver(app, body, Some(signed(body, now, WEBHOOK_SECRET))).await;
    assert_eq!(response.status(), 200);
}

/// The payment_issue runs, oldest first.
async fn runs(app: &TestApp, s: &School) -> Vec<Value> {
    let page = app.as_user(&s.admin).get("/v1/workflow-runs?workflow=payment_issue").await.expect(200);
    let mut items = page["items"].as_array().unwrap().clone();
    items.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    items
}

/// The first payment_issue run once one exists and has reached `status`.
async fn only_run(app: &TestApp, s: &School, status: &str) -> Value {
    for _ in 0..1200 {
        if let Some(run) = runs(app, s).await.first() {
            return run_reaching(app, s, run["id"].as_str().unwrap(), status).await;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no payment_issue run started");
}

async fn review_of(app: &TestApp, s: &School, run: &Value) -> Value {
    let id = run["review_id"].as_str().expect("a pending review");
    app.as_user(&s.admin).get(&format!("/v1/reviews/{id}")).await.expect(200)
}

async fn approve(app: &TestApp, s: &School, review: &Value, edits: Value) {
    let path = format!("/v1/reviews/{}/approve", review["id"].as_str().unwrap());
    app.as_user(&s.admin).post(&path, json!({"edits": edits})).await.expect(200);
}

fn kinds(review: &Value) -> Vec<String> {
    review["proposal"]["options"].as_array().unwrap().iter().map(|o| o["kind"].as_str().unwrap().to_owned()).collect()
}

async fn tasks_about(app: &TestApp, s: &School, invoice: &str) -> Vec<String> {
    let page = app.as_user(&s.admin).get(&format!("/v1/tasks?subject_id={invoice}")).await.expect(200);
    page["items"].as_array().unwrap().iter().map(|t| t["title"].as_str().unwrap().to_owned()).collect()
}

/// The emails received so far whose subject starts with `prefix`, once there are `count`.
async fn wait_for_mail(server: &SmtpServer, prefix: &str, count: usize) -> Vec<crate::mail::Received> {
    let matching = || -> Vec<crate::mail::Received> {
        server.received().into_iter().filter(|m| m.header("Subject").unwrap_or_default().starts_with(prefix)).collect()
    };
    for _ in 0..1200 {
        if matching().len() >= count {
            return matching();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {count} emails starting {prefix:?}: {:#?}", server.received());
}

fn declined(id: &str, intent: &str, invoice: &str, decline_code: &str) -> String {
    event(
        id,
        "payment_intent.payment_failed",
        json!({"id": intent, "object": "payment_intent", "amount": 19_775, "status": "requires_payment_method",
            "metadata": {"invoice_id": invoice}, "last_payment_error": {"code": "card_declined",
            "decline_code": decline_code, "message": "Your card has insufficient funds.",
            "payment_method": {"id": "pm_card_1"}}}),
    )
}

async fn a_declined_card_is_answered_after_review_with_an_email_and_a_task(backend: Backend) {
    let (stripe, server) = (StripeFake::start().await, SmtpServer::start().await);
    let (app, s) = billing_app(backend, Some(&stripe), smtp(&server)).await;
    let (a, _) = run_december(&app, &s).await;
    let invoice = a["id"].as_str().unwrap().to_owned();
    // A card checkout makes Family A a Stripe customer; the charge then fails.
    app.as_user(&s.parent_a).post(&format!("/v1/invoices/{invoice}/checkout"), json!({})).await.expect(200);
    let failed = declined("evt_declined", "pi_declined", &invoice, "insufficient_funds");
    // Stripe delivers it twice, and a second event about the same PaymentIntent arrives too.
    send_event(&app, &failed).await;
    send_event(&app, &failed).await;
    send_event(&app, &declined("evt_declined_again", "pi_declined", &invoice, "insufficient_funds")).await;

    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run = only_run(&app, &s, "waiting_for_review").await;
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["subject"]["category"], "insufficient_funds");
    assert_eq!(review["subject"]["number"], a["number"]);
    assert_eq!(kinds(&review)[0], "retry_card", "{review:#}");
    assert_eq!(review["context"]["history"]["failed_attempts"][0]["decline_code"], "insufficient_funds");
    assert_eq!(review["context"]["drafted_by"]["provider"], "offline");
    let draft = review["proposal"]["reply"].as_str().unwrap();
    assert!(
        draft.contains(a["number"].as_str().unwrap()) && draft.contains("197,75"),
        "French, with the amount: {draft}"
    );

    // The owner reads it on the console (history, options, the draft) and edits the reply there.
    let reply = "Votre paiement a été refusé; nous réessaierons la carte vendredi.";
    let mut owner = crate::console::Browser::new(&app);
    owner.sign_in(crate::common::ADMIN_EMAIL, crate::common::ADMIN_PASSWORD).await;
    let morning = owner.get("/console").await;
    let number = a["number"].as_str().unwrap();
    let failed_payments = &morning.body[morning.body.find("id=\"money\"").unwrap()..];
    assert!(failed_payments.contains(number) && failed_payments.contains("insufficient_funds"), "the money section");
    let id = review["id"].as_str().unwrap();
    let page = owner.get(&format!("/console/reviews/{id}")).await;
    assert_eq!(page.status, 200);
    for shown in [number, "Payment history", "Failed attempts", "insufficient_funds", "retry card", "name=\"reply\""] {
        assert!(page.body.contains(shown), "the payment review shows {shown}");
    }
    let approved = owner.submit(&format!("/console/reviews/{id}/approve"), &[("option", "0"), ("reply", reply)]).await;
    assert_eq!(approved.status, 303, "{}", approved.body);
    let done = run_reaching(&app, &s, run["id"].as_str().unwrap(), "succeeded").await;
    let names: Vec<&str> = done["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["merge", "gather", "classify", "propose", "route", "review", "act"]);
    let answer = wait_for_mail(&server, "Au sujet de la facture", 1).await;
    stop_worker(worker).await;
    assert_eq!(answer.len(), 1, "one reply, in French");
    assert!(answer[0].body().contains("nous réessaierons la carte vendredi"));
    assert_eq!(runs(&app, &s).await.len(), 1, "three deliveries, one run");

    let tasks = tasks_about(&app, &s, &invoice).await;
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].starts_with("Check the card retry"), "{tasks:?}");
    let jobs = app.as_user(&s.admin).get("/v1/jobs?queue=billing").await.expect(200);
    let kinds: Vec<&str> = jobs["items"].as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "billing.retry_charge").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "billing.payment_issue_follow_up").count(), 1);
    // The reply is also in the family's billing thread.
    let threads = app.as_user(&s.parent_a).get("/v1/threads").await.expect(200);
    let billing =
        threads["items"].as_array().unwrap().iter().find(|t| t["subject"] == "Billing").expect("a billing thread");
    let messages = app
        .as_user(&s.parent_a)
        .get(&format!("/v1/threads/{}/messages", billing["id"].as_str().unwrap()))
        .await
        .expect(200);
    assert_eq!(messages["items"][0]["body"], reply);
}

async fn auto_resolution_retries_a_first_insufficient_funds_decline_without_review(backend: Backend) {
    let stripe = StripeFake::start().await;
    let (app, s) = billing_app(backend, Some(&stripe), |settings| settings.payment_issue_auto_resolve = true).await;
    let (a, _) = run_december(&app, &s).await;
    let invoice = a["id"].as_str().unwrap().to_owned();
    app.as_user(&s.parent_a).post(&format!("/v1/invoices/{invoice}/checkout"), json!({})).await.expect(200);
    send_event(&app, &declined("evt_nsf", "pi_nsf", &invoice, "insufficient_funds")).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run = only_run(&app, &s, "succeeded").await;
    let names: Vec<&str> = run["steps"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["merge", "gather", "classify", "propose", "route", "act"], "no review");
    let route = run["steps"].as_array().unwrap().iter().find(|s| s["name"] == "route").unwrap();
    assert_eq!(route["output"]["review_skipped"], true);
    assert_eq!(tasks_about(&app, &s, &invoice).await.len(), 1);

    // A card declined for another reason still waits for a person.
    let (_, b) = (a, run_december_b(&app, &s).await);
    send_event(&app, &declined("evt_lost", "pi_lost", &b, "lost_card")).await;
    for _ in 0..1200 {
        if runs(&app, &s).await.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let second = runs(&app, &s).await[1].clone();
    let second = run_reaching(&app, &s, second["id"].as_str().unwrap(), "waiting_for_review").await;
    stop_worker(worker).await;
    assert_eq!(review_of(&app, &s, &second).await["subject"]["category"], "card_declined");
}

/// Family B's December invoice id.
async fn run_december_b(app: &TestApp, s: &School) -> String {
    let page = app.as_user(&s.parent_b).get("/v1/invoices").await.expect(200);
    page["items"][0]["id"].as_str().unwrap().to_owned()
}

async fn a_parents_inquiry_goes_to_the_billing_thread_and_already_paid_is_recorded(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let (a, _) = run_december(&app, &s).await;
    let invoice = a["id"].as_str().unwrap().to_owned();
    let message = "Nous avons déjà payé par virement Interac le 3 décembre.";
    // Only the family itself (or the office) may ask about its invoice.
    let inquiry = json!({"invoice_id": invoice, "message": message});
    app.as_user(&s.parent_b).post("/v1/billing/inquiries", inquiry.clone()).await.problem(404);
    app.as_user(&s.teacher1).post("/v1/billing/inquiries", inquiry.clone()).await.problem(403);
    app.as_user(&s.admin).post("/v1/billing/inquiries", inquiry.clone()).await.problem(422);
    app.as_user(&s.parent_a).post("/v1/billing/inquiries", json!({"message": " "})).await.problem(422);
    let created = app.as_user(&s.parent_a).post("/v1/billing/inquiries", inquiry).await.expect(202);
    assert_eq!(created["status"], "open");
    assert_eq!(
        app.as_user(&s.parent_a).get("/v1/billing/inquiries").await.expect(200)["items"].as_array().unwrap().len(),
        1
    );
    assert_eq!(app.as_user(&s.parent_b).get("/v1/billing/inquiries").await.expect(200)["items"], json!([]));
    let thread = created["thread_id"].as_str().unwrap();
    let messages = app.as_user(&s.parent_a).get(&format!("/v1/threads/{thread}/messages")).await.expect(200);
    assert_eq!(messages["items"][0]["body"], message);

    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run = run_reaching(&app, &s, created["run_id"].as_str().unwrap(), "waiting_for_review").await;
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["subject"]["category"], "already_paid");
    assert_eq!(review["context"]["inquiry"]["message"], message);
    assert_eq!(kinds(&review)[0], "record_manual_payment");
    assert_eq!(review["proposal"]["options"][0]["amount_cents"], 19_775);
    approve(&app, &s, &review, json!({})).await;
    run_reaching(&app, &s, created["run_id"].as_str().unwrap(), "succeeded").await;
    stop_worker(worker).await;

    let invoice = app.as_user(&s.parent_a).get(&format!("/v1/invoices/{invoice}")).await.expect(200);
    assert_eq!(invoice["status"], "paid");
    let payments = app.as_user(&s.admin).get(&format!("/v1/payments?invoice_id={}", a["id"].as_str().unwrap())).await;
    let payments = payments.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(payments.len(), 1);
    assert_eq!(payments[0]["method"], "e_transfer");
    let inquiries = app.as_user(&s.parent_a).get("/v1/billing/inquiries").await.expect(200);
    assert_eq!(inquiries["items"][0]["status"], "answered");
    let messages = app.as_user(&s.parent_a).get(&format!("/v1/threads/{thread}/messages")).await.expect(200);
    assert_eq!(messages["items"].as_array().unwrap().len(), 2, "the question and the answer");
}

async fn a_dispute_becomes_tasks_for_the_office(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let (a, _) = run_december(&app, &s).await;
    let invoice = a["id"].as_str().unwrap().to_owned();
    let paid = event(
        "evt_paid",
        "payment_intent.succeeded",
        json!({"id": "pi_paid", "object": "payment_intent", "amount": 19_775, "amount_received": 19_775,
            "status": "succeeded", "metadata": {"invoice_id": invoice}}),
    );
    let dispute = event(
        "evt_dispute",
        "charge.dispute.created",
        json!({"id": "dp_1", "object": "dispute", "payment_intent": "pi_paid", "amount": 19_775, "reason": "fraudulent"}),
    );
    send_event(&app, &paid).await;
    send_event(&app, &dispute).await;
    send_event(&app, &dispute).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run = only_run(&app, &s, "waiting_for_review").await;
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["subject"]["reason"], "dispute");
    assert_eq!(review["subject"]["category"], "dispute");
    assert_eq!(kinds(&review)[0], "escalate");
    approve(&app, &s, &review, json!({})).await;
    run_reaching(&app, &s, run["id"].as_str().unwrap(), "succeeded").await;
    stop_worker(worker).await;
    let mut tasks = tasks_about(&app, &s, &invoice).await;
    tasks.sort();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert!(tasks[0].starts_with("Answer the Stripe dispute") && tasks[1].starts_with("Call the family"), "{tasks:?}");
    assert_eq!(runs(&app, &s).await.len(), 1);
}

async fn hardship_gets_a_payment_plan_with_instalment_reminders(backend: Backend) {
    let server = SmtpServer::start().await;
    let (app, s) = billing_app(backend, None, smtp(&server)).await;
    let (_, b) = run_december(&app, &s).await;
    let invoice = b["id"].as_str().unwrap().to_owned();
    let message = "I lost my job last month; could we pay this in instalments?";
    let created = app
        .as_user(&s.parent_b)
        .post("/v1/billing/inquiries", json!({"invoice_id": invoice, "message": message}))
        .await
        .expect(202);
    // A second question about the same invoice joins the open run instead of starting another.
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run = run_reaching(&app, &s, created["run_id"].as_str().unwrap(), "waiting_for_review").await;
    let second = app
        .as_user(&s.parent_b)
        .post("/v1/billing/inquiries", json!({"invoice_id": invoice, "message": "Also, is the HST right?"}))
        .await
        .expect(202);
    let merged = run_reaching(&app, &s, second["run_id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(merged["steps"].as_array().unwrap().len(), 1, "merged at once");
    let inquiries = app.as_user(&s.parent_b).get("/v1/billing/inquiries").await.expect(200);
    assert!(inquiries["items"].as_array().unwrap().iter().all(|i| i["run_id"] == run["id"]), "{inquiries:#}");

    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["subject"]["category"], "hardship");
    assert_eq!(kinds(&review)[0], "payment_plan");
    // The owner moves the first instalment to tomorrow (its reminder is due at once).
    let mut options = review["proposal"]["options"].clone();
    let plan = &mut options[0]["instalments"];
    let amounts: i64 = plan.as_array().unwrap().iter().map(|i| i["amount_cents"].as_i64().unwrap()).sum();
    assert_eq!(amounts, 23_840, "the instalments cover the balance");
    let tomorrow = (chrono::Utc::now().with_timezone(&chrono_tz::America::Toronto).date_naive()
        + chrono::Duration::days(1))
    .to_string();
    plan[0]["due_on"] = json!(tomorrow);
    // On the console: the plan's dates are edited in the whole-proposal JSON ("Advanced").
    let mut owner = crate::console::Browser::new(&app);
    owner.sign_in(crate::common::ADMIN_EMAIL, crate::common::ADMIN_PASSWORD).await;
    let id = review["id"].as_str().unwrap();
    assert!(owner.get(&format!("/console/reviews/{id}")).await.body.contains("name=\"proposal\""));
    let mut proposal = review["proposal"].clone();
    proposal["options"] = options;
    let edited = serde_json::to_string_pretty(&proposal).unwrap();
    let path = format!("/console/reviews/{id}/approve");
    let broken = owner.submit(&path, &[("option", "0"), ("proposal", "{not json")]).await;
    assert_eq!(broken.status, 422, "a typo in the JSON is explained, nothing decided");
    assert_eq!(review_of(&app, &s, &run).await["status"], "pending");
    let approved = owner.submit(&path, &[("option", "0"), ("proposal", &edited)]).await;
    assert_eq!(approved.status, 303, "{}", approved.body);
    run_reaching(&app, &s, run["id"].as_str().unwrap(), "succeeded").await;
    // The reply and the first instalment's reminder reach the family.
    wait_for_mail(&server, "About invoice", 1).await;
    wait_for_mail(&server, "Instalment 1 of 3", 1).await;
    stop_worker(worker).await;
    let tasks = tasks_about(&app, &s, &invoice).await;
    assert_eq!(tasks.iter().filter(|t| t.starts_with("Check instalment")).count(), 3, "{tasks:?}");
    let jobs = app.as_user(&s.admin).get("/v1/jobs?queue=billing&limit=200").await.expect(200);
    let reminders =
        jobs["items"].as_array().unwrap().iter().filter(|j| j["kind"] == "billing.instalment_reminder").count();
    assert_eq!(reminders, 3);
    let answered = app.as_user(&s.parent_b).get("/v1/billing/inquiries").await.expect(200);
    assert!(answered["items"].as_array().unwrap().iter().all(|i| i["status"] == "answered"));
}

async fn an_act_that_fails_after_its_work_repeats_nothing(backend: Backend) {
    // The act step does all its work, then fails (as a crash before the commit would): its
    // writes roll back, and the retry does everything exactly once.
    let fail_once = Arc::new(AtomicBool::new(true));
    let mut workflow = cedar::workflows::payment_issue::workflow();
    let index = workflow.steps.iter().position(|s| s.name == "act").unwrap();
    let original = Arc::new(workflow.steps.remove(index));
    let flag = fail_once.clone();
    workflow.steps.insert(
        index,
        Step::action("act", move |cx: StepCtx| {
            let (original, flag) = (original.clone(), flag.clone());
            async move {
                let transition = original.call(cx).await?;
                if flag.swap(false, Ordering::SeqCst) {
                    drop(transition);
                    return Err(StepError::Retry("the worker died before the commit".into()));
                }
                Ok(transition)
            }
        }),
    );
    let server = SmtpServer::start().await;
    let url = server.url();
    let app =
        crate::common::spawn_app_with_workflows(backend, cedar::workflows::builtin().with(workflow), move |settings| {
            settings.email.transport = EmailTransport::Smtp { url: Secret::new(url) };
        })
        .await;
    let s = crate::helpers::school(&app).await;
    let office = app.as_user(&s.admin);
    office
        .post("/v1/tuition-rates", json!({"lesson_minutes": 30, "per_lesson_cents": 3500, "monthly_cents": 14000}))
        .await
        .expect(201);
    office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0], "starts_at": "2026-12-01T21:00:00Z",
            "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"}, "override_availability": true}),
        )
        .await
        .expect(201);
    office
        .post("/v1/billing/runs", json!({"period_start": "2026-12-01", "period_end": "2026-12-31"}))
        .await
        .expect(201);
    let invoice =
        app.as_user(&s.parent_a).get("/v1/invoices").await.expect(200)["items"][0]["id"].as_str().unwrap().to_owned();
    let created = app
        .as_user(&s.parent_a)
        .post("/v1/billing/inquiries", json!({"invoice_id": invoice, "message": "I paid by e-Transfer yesterday"}))
        .await
        .expect(202);
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let run_id = created["run_id"].as_str().unwrap();
    let run = run_reaching(&app, &s, run_id, "waiting_for_review").await;
    let review = review_of(&app, &s, &run).await;
    approve(&app, &s, &review, json!({})).await;
    let run = run_reaching(&app, &s, run_id, "succeeded").await;
    wait_for_mail(&server, "Au sujet", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_worker(worker).await;
    let act = run["steps"].as_array().unwrap().iter().find(|s| s["name"] == "act").unwrap().clone();
    assert_eq!(act["attempts"], 2);
    let payments = office.get(&format!("/v1/payments?invoice_id={invoice}")).await.expect(200);
    assert_eq!(payments["items"].as_array().unwrap().len(), 1, "one payment");
    let replies = office.get("/v1/outbox?template=payment_issue_reply").await.expect(200);
    assert_eq!(replies["items"].as_array().unwrap().len(), 1, "one reply queued");
    assert_eq!(wait_for_mail(&server, "Au sujet", 1).await.len(), 1, "one reply sent");
}

async fn external_ai_sees_only_consenting_families_and_no_names(backend: Backend) {
    let fake = AiFake::start(json!({})).await;
    let base = fake.openai_url();
    let (app, s) = billing_app(backend, None, move |settings| {
        settings.ai.openai.api_key = Some(Secret::new(OPENAI_KEY));
        settings.ai.openai.base_url = base;
        settings.ai.providers = vec![AiProviderKind::OpenAi];
    })
    .await;
    let (a, b) = run_december(&app, &s).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    // Family B never consented: its inquiry is handled offline, nothing leaves.
    let question = "Why are there five lessons on this invoice?";
    let created = app
        .as_user(&s.parent_b)
        .post("/v1/billing/inquiries", json!({"invoice_id": b["id"], "message": question}))
        .await
        .expect(202);
    let run = run_reaching(&app, &s, created["run_id"].as_str().unwrap(), "waiting_for_review").await;
    assert_eq!(fake.requests("openai").len(), 0);
    assert!(review_of(&app, &s, &run).await["context"]["fallback_reason"].as_str().unwrap().contains("consented"));

    // Family A consents: the provider classifies and drafts, seeing amounts and the question only.
    app.as_user(&s.parent_a)
        .patch(&format!("/v1/families/{}", s.family_a), json!({"ai_consent": true}))
        .await
        .expect(200);
    fake.script_openai([
        Reply::Answer(json!({"category": "question_about_charge", "evidence": "five lessons"})),
        Reply::Answer(
            json!({"ranking": [2, 0, 1, 3], "reply": "December has five Tuesdays, so five lessons are billed."}),
        ),
    ]);
    let created = app
        .as_user(&s.parent_a)
        .post("/v1/billing/inquiries", json!({"invoice_id": a["id"], "message": question}))
        .await
        .expect(202);
    let run = run_reaching(&app, &s, created["run_id"].as_str().unwrap(), "waiting_for_review").await;
    stop_worker(worker).await;
    let requests = fake.requests("openai");
    let asked: Vec<String> = requests
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.body["response_format"]["json_schema"]["name"],
                r.body["messages"].as_array().unwrap().len()
            )
        })
        .collect();
    assert_eq!(requests.len(), 2, "classify and propose, each answered right the first time: {asked:?}");
    for request in &requests {
        let prompt = request.body["messages"][1]["content"].as_str().unwrap();
        assert!(!prompt.contains("Côté") && !prompt.contains("example.ca") && !prompt.contains("Hélène"), "{prompt}");
    }
    assert!(requests[1].body["messages"][1]["content"].as_str().unwrap().contains("19775"));
    let review = review_of(&app, &s, &run).await;
    assert_eq!(review["context"]["drafted_by"]["provider"], "openai");
    assert_eq!(review["proposal"]["reply"], "December has five Tuesdays, so five lessons are billed.");
    assert_eq!(kinds(&review), ["correct_invoice", "send_payment_instructions", "payment_plan", "escalate"]);
}

async fn tasks_follow_roles(backend: Backend) {
    let app = crate::common::spawn_app(backend).await;
    let s = crate::helpers::school(&app).await;
    let office = app.as_user(&s.admin);
    let me = app.as_user(&s.teacher1).get("/v1/me").await.expect(200);
    let theirs = office
        .post("/v1/tasks", json!({"title": "Tune the studio piano", "due_on": "2026-12-10", "assignee_id": me["id"]}))
        .await
        .expect(201);
    assert_eq!(theirs["status"], "open");
    let other = office.post("/v1/tasks", json!({"title": "Order new music stands"})).await.expect(201);
    office.post("/v1/tasks", json!({"title": " "})).await.problem(422);
    app.as_user(&s.teacher1).post("/v1/tasks", json!({"title": "Mine"})).await.problem(403);
    app.as_user(&s.parent_a).get("/v1/tasks").await.problem(403);
    // A teacher sees and closes their own task, and only that.
    let teacher = app.as_user(&s.teacher1);
    let listed = teacher.get("/v1/tasks").await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    teacher.get(&format!("/v1/tasks/{}", other["id"].as_str().unwrap())).await.problem(404);
    let path = format!("/v1/tasks/{}", theirs["id"].as_str().unwrap());
    teacher.patch(&path, json!({"title": "Something else"})).await.problem(403);
    let done = teacher.patch(&path, json!({"status": "done"})).await.expect(200);
    assert_eq!(done["status"], "done");
    assert!(done["closed_at"].is_string());
    teacher.patch(&path, json!({"status": "finished"})).await.problem(422);
    assert_eq!(office.get("/v1/tasks?status=open").await.expect(200)["items"].as_array().unwrap().len(), 1);
    office.get("/v1/tasks?status=later").await.problem(422);
}
