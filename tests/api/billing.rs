//! Billing: runs per period (once), the school's money rules, invoice visibility, manual
//! payments and refunds, Stripe checkout against the fake, signed webhooks applied once and
//! in any order, late fees once.

use std::time::Duration;

use cedar::billing::stripe::hmac_sha256;
use cedar::config::{Secret, Settings, StripeAccount};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, TestApp, assert_problem, spawn_app_with_workflows};
use crate::helpers::{School, json_ok, school, send, start_worker, stop_worker, wait_until};
use crate::stripe_fake::{STRIPE_KEY, StripeFake};

pub const WEBHOOK_SECRET: &str = "whsec_test_secret";

pub async fn billing_app(
    backend: Backend,
    stripe: Option<&StripeFake>,
    adjust: impl FnOnce(&mut Settings),
) -> (TestApp, School) {
    let base = stripe.map(|s| s.base.clone());
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), move |settings| {
        settings.billing.tax = Some(("HST".into(), 13_000));
        settings.billing.sibling_discount_percent = 10;
        settings.billing.stripe_webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
        if let Some(base) = base {
            settings.billing.stripe = Some(StripeAccount { secret_key: Secret::new(STRIPE_KEY), api_base: base });
        }
        adjust(settings);
    })
    .await;
    let s = school(&app).await;
    let rate = |body: Value| {
        let (app, admin) = (&app, s.admin.clone());
        async move { json_ok(send(app, "POST", "/v1/tuition-rates", &admin, Some(body)).await, 201).await }
    };
    rate(json!({"lesson_minutes": 30, "per_lesson_cents": 3500, "monthly_cents": 14000})).await;
    rate(json!({"lesson_minutes": 30, "teacher_id": s.teacher2_id, "per_lesson_cents": 4000, "monthly_cents": 15000}))
        .await;
    // December 2026 has five Tuesdays: Hélène (family A) pays per lesson.
    book(&app, &s, &s.teacher1_id, &s.students[0], "2026-12-01T21:00:00Z").await;
    // Family B: Zoë (teacher 2) and Liam, flat monthly; Liam, off the waiting list, starts on
    // 17 December.
    json_ok(
        send(&app, "PATCH", &format!("/v1/students/{}", s.students[2]), &s.admin, Some(json!({"status": "active"})))
            .await,
        200,
    )
    .await;
    book(&app, &s, &s.teacher2_id, &s.students[1], "2026-12-02T21:00:00Z").await;
    book(&app, &s, &s.teacher1_id, &s.students[2], "2026-12-17T22:00:00Z").await;
    for (student, start) in [(&s.students[1], None), (&s.students[2], Some("2026-12-17"))] {
        json_ok(
            send(
                &app,
                "PUT",
                &format!("/v1/students/{student}/billing"),
                &s.admin,
                Some(json!({"billing_mode": "monthly", "start_date": start})),
            )
            .await,
            200,
        )
        .await;
    }
    (app, s)
}

async fn book(app: &TestApp, s: &School, teacher: &str, student: &str, start: &str) {
    json_ok(
        send(
            app,
            "POST",
            "/v1/lessons",
            &s.admin,
            Some(json!({"teacher_id": teacher, "student_id": student,
            "starts_at": start, "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=5"},
            "override_availability": true})),
        )
        .await,
        201,
    )
    .await;
}

const DECEMBER: fn() -> Value = || json!({"period_start": "2026-12-01", "period_end": "2026-12-31"});

async fn invoices_of(app: &TestApp, token: &str) -> Vec<Value> {
    let page = json_ok(send(app, "GET", "/v1/invoices", token, None).await, 200).await;
    page["items"].as_array().unwrap().clone()
}

pub async fn run_december(app: &TestApp, s: &School) -> (Value, Value) {
    json_ok(send(app, "POST", "/v1/billing/runs", &s.admin, Some(DECEMBER())).await, 201).await;
    let a = invoices_of(app, &s.parent_a).await.remove(0);
    let b = invoices_of(app, &s.parent_b).await.remove(0);
    (a, b)
}

async fn a_billing_run_bills_each_family_once_by_the_school_rules(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    // A preview stores nothing.
    let mut preview = DECEMBER();
    preview["dry_run"] = json!(true);
    let dry = json_ok(send(&app, "POST", "/v1/billing/runs", &s.admin, Some(preview)).await, 200).await;
    assert_eq!(dry["preview"].as_array().unwrap().len(), 2);
    assert_eq!(dry["total_cents"], 19_775 + 23_840);
    assert_eq!(invoices_of(&app, &s.admin).await.len(), 0);

    let first = json_ok(send(&app, "POST", "/v1/billing/runs", &s.admin, Some(DECEMBER())).await, 201).await;
    assert_eq!(first["created"], 2);
    assert_eq!(first["already_run"], false);
    let again = json_ok(send(&app, "POST", "/v1/billing/runs", &s.admin, Some(DECEMBER())).await, 200).await;
    assert_eq!(again["created"], 0, "a second run creates nothing");
    assert_eq!(again["already_run"], true);
    assert_eq!(again["id"], first["id"]);

    let all = invoices_of(&app, &s.admin).await;
    let mut numbers: Vec<&str> = all.iter().map(|i| i["number"].as_str().unwrap()).collect();
    numbers.sort();
    assert_eq!(numbers, ["INV-2026-0001", "INV-2026-0002"]);

    // Family A: five lessons at $35, HST 13 %.
    let a = invoices_of(&app, &s.parent_a).await;
    assert_eq!(a.len(), 1, "parents see their own invoices only");
    let a = &a[0];
    assert_eq!((a["subtotal_cents"].as_i64(), a["discount_cents"].as_i64()), (Some(17_500), Some(0)));
    assert_eq!((a["tax_cents"].as_i64(), a["total_cents"].as_i64()), (Some(2_275), Some(19_775)));
    assert_eq!(a["amount_due_cents"], 19_775);
    assert_eq!(a["status"], "open");
    assert_eq!(a["currency"], "CAD");
    let id_a = a["id"].as_str().unwrap();
    let detail = json_ok(send(&app, "GET", &format!("/v1/invoices/{id_a}"), &s.parent_a, None).await, 200).await;
    assert_eq!(detail["lines"][0]["quantity"], 5);
    assert_eq!(detail["lines"][0]["unit_cents"], 3_500);
    assert_eq!(detail["tax_name"], "HST");

    // Family B: Zoë's teacher-specific flat $150; Liam's $140 prorated to 15 of 31 days
    // ($67.74), less 10 % sibling discount ($6.77); HST on the rest.
    let b = &invoices_of(&app, &s.parent_b).await[0];
    let id_b = b["id"].as_str().unwrap();
    let detail = json_ok(send(&app, "GET", &format!("/v1/invoices/{id_b}"), &s.admin, None).await, 200).await;
    let amounts: Vec<(String, i64)> = detail["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["kind"].as_str().unwrap().to_owned(), l["amount_cents"].as_i64().unwrap()))
        .collect();
    let expected = [("tuition", 15_000), ("tuition", 6_774), ("discount", -677)];
    assert_eq!(amounts, expected.map(|(k, a)| (k.to_owned(), a)));
    assert_eq!((b["subtotal_cents"].as_i64(), b["discount_cents"].as_i64()), (Some(21_774), Some(677)));
    assert_eq!((b["tax_cents"].as_i64(), b["total_cents"].as_i64()), (Some(2_743), Some(23_840)));

    // Other families' invoices are not found; teachers have no invoices.
    assert_problem(send(&app, "GET", &format!("/v1/invoices/{id_a}"), &s.parent_b, None).await, 404).await;
    assert_problem(send(&app, "GET", "/v1/invoices", &s.teacher1, None).await, 403).await;
    let html = send(&app, "GET", &format!("/v1/invoices/{id_a}/html"), &s.parent_a, None).await.text().await.unwrap();
    assert!(html.contains(a["number"].as_str().unwrap()) && html.contains("$197.75") && html.contains("HST"), "{html}");
    // Each family was told.
    let outbox = json_ok(send(&app, "GET", "/v1/outbox?template=invoice_issued", &s.admin, None).await, 200).await;
    let to: Vec<&str> = outbox["items"].as_array().unwrap().iter().map(|e| e["to_address"].as_str().unwrap()).collect();
    assert_eq!(to.len(), 2);
    assert!(to.contains(&"a@example.ca") && to.contains(&"b@example.ca"));
    // Bad periods are refused.
    assert_problem(
        send(
            &app,
            "POST",
            "/v1/billing/runs",
            &s.admin,
            Some(json!({"period_start": "2026-12-31", "period_end": "2026-12-01"})),
        )
        .await,
        422,
    )
    .await;
    assert_problem(send(&app, "POST", "/v1/billing/runs", &s.parent_a, Some(DECEMBER())).await, 403).await;
}

async fn manual_payments_partial_payments_and_refunds(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let (a, _) = run_december(&app, &s).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let pay = |body: Value| send(&app, "POST", "/v1/payments", &s.admin, Some(body));
    let bad =
        assert_problem(pay(json!({"invoice_id": id, "amount_cents": 5000, "method": "e_transfer"})).await, 422).await;
    assert_eq!(bad["errors"][0]["field"], "reference");
    let bad = assert_problem(pay(json!({"invoice_id": id, "amount_cents": 19_776, "method": "cash"})).await, 422).await;
    assert_eq!(bad["errors"][0]["field"], "amount_cents");
    assert_problem(pay(json!({"invoice_id": id, "amount_cents": 0, "method": "bitcoin"})).await, 422).await;
    assert_problem(
        send(
            &app,
            "POST",
            "/v1/payments",
            &s.parent_a,
            Some(json!({"invoice_id": id, "amount_cents": 100, "method": "cash"})),
        )
        .await,
        403,
    )
    .await;

    let partial = json_ok(
        pay(json!({"invoice_id": id, "amount_cents": 10_000, "method": "cheque", "reference": "cheque 118"})).await,
        201,
    )
    .await;
    let invoice = json_ok(send(&app, "GET", &format!("/v1/invoices/{id}"), &s.admin, None).await, 200).await;
    assert_eq!(
        (invoice["status"].as_str(), invoice["amount_due_cents"].as_i64()),
        (Some("partially_paid"), Some(9_775))
    );
    json_ok(
        pay(json!({"invoice_id": id, "amount_cents": 9_775, "method": "e_transfer", "reference": "CA1234XYZ"})).await,
        201,
    )
    .await;
    let invoice = json_ok(send(&app, "GET", &format!("/v1/invoices/{id}"), &s.admin, None).await, 200).await;
    assert_eq!((invoice["status"].as_str(), invoice["amount_due_cents"].as_i64()), (Some("paid"), Some(0)));
    assert_problem(pay(json!({"invoice_id": id, "amount_cents": 1, "method": "cash"})).await, 422).await;

    // A refund of part of the cheque reopens the balance; more than is left is refused.
    let pid = partial["id"].as_str().unwrap();
    let refund = json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/payments/{pid}/refund"),
            &s.admin,
            Some(json!({"amount_cents": 2_500, "reason": "lesson credit"})),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(refund["kind"], "refund");
    assert_problem(
        send(&app, "POST", &format!("/v1/payments/{pid}/refund"), &s.admin, Some(json!({"amount_cents": 7_501}))).await,
        422,
    )
    .await;
    let invoice = json_ok(send(&app, "GET", &format!("/v1/invoices/{id}"), &s.admin, None).await, 200).await;
    assert_eq!(
        (invoice["status"].as_str(), invoice["amount_paid_cents"].as_i64()),
        (Some("partially_paid"), Some(17_275))
    );

    // Parents see their own payment history only.
    let mine = json_ok(send(&app, "GET", "/v1/payments", &s.parent_a, None).await, 200).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 3);
    let theirs = json_ok(send(&app, "GET", "/v1/payments", &s.parent_b, None).await, 200).await;
    assert_eq!(theirs["items"], json!([]));
    let emails = json_ok(send(&app, "GET", "/v1/outbox?template=payment_received", &s.admin, None).await, 200).await;
    assert_eq!(emails["items"].as_array().unwrap().len(), 2);
}

pub fn signed(body: &str, timestamp: i64, secret: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes());
    format!("t={timestamp},v1={}", hex::encode(mac))
}

pub async fn deliver(app: &TestApp, body: &str, signature: Option<String>) -> reqwest::Response {
    let mut request =
        app.client.post(app.url("/webhooks/stripe")).header("content-type", "application/json").body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.unwrap()
}

pub fn event(id: &str, kind: &str, object: Value) -> String {
    json!({"id": id, "object": "event", "type": kind, "api_version": "2024-06-20", "created": 1_790_000_000,
        "livemode": false, "data": {"object": object}})
    .to_string()
}

async fn stripe_checkout_and_webhooks_apply_each_event_once(backend: Backend) {
    let stripe = StripeFake::start().await;
    let (app, s) = billing_app(backend, Some(&stripe), |_| {}).await;
    let (a, b) = run_december(&app, &s).await;
    let (id_a, id_b) = (a["id"].as_str().unwrap().to_owned(), b["id"].as_str().unwrap().to_owned());

    // Checkout: a customer for the family (once), a PaymentIntent for the balance.
    stripe.fail_next([500]);
    let checkout =
        json_ok(send(&app, "POST", &format!("/v1/invoices/{id_a}/checkout"), &s.parent_a, None).await, 200).await;
    assert_eq!(checkout["amount_cents"], 19_775);
    assert!(checkout["client_secret"].as_str().unwrap().contains("_secret_"));
    let again =
        json_ok(send(&app, "POST", &format!("/v1/invoices/{id_a}/checkout"), &s.parent_a, None).await, 200).await;
    assert_eq!(again["payment_intent_id"], checkout["payment_intent_id"], "same balance, same PaymentIntent");
    let customers = stripe.calls("/v1/customers");
    assert_eq!(customers.len(), 2, "a 500, then the retry with the same key");
    assert_eq!(customers[0].idempotency_key, customers[1].idempotency_key);
    assert_eq!(customers[1].form["metadata[family_id]"], s.family_a);
    let intents = stripe.calls("/v1/payment_intents");
    assert_eq!(intents.len(), 2);
    assert_eq!(intents[0].idempotency_key, intents[1].idempotency_key);
    assert_eq!(intents[0].form["amount"], "19775");
    assert_eq!(intents[0].form["currency"], "cad");
    assert_eq!(intents[0].form["metadata[invoice_id]"], id_a);
    assert_problem(send(&app, "POST", &format!("/v1/invoices/{id_a}/checkout"), &s.parent_b, None).await, 404).await;

    // Webhooks: unsigned, wrongly signed or stale deliveries are refused and not stored.
    let now = chrono::Utc::now().timestamp();
    let intent = checkout["payment_intent_id"].as_str().unwrap();
    let paid = event(
        "evt_paid_a",
        "payment_intent.succeeded",
        json!({"id": intent, "object": "payment_intent", "amount": 19_775, "amount_received": 19_775, "currency": "cad",
            "status": "succeeded", "latest_charge": "ch_a", "metadata": {"invoice_id": id_a}}),
    );
    assert_problem(deliver(&app, &paid, None).await, 400).await;
    assert_problem(deliver(&app, &paid, Some(signed(&paid, now, "whsec_wrong"))).await, 400).await;
    assert_problem(deliver(&app, &paid, Some(signed(&paid, now - 301, WEBHOOK_SECRET))).await, 400).await;
    let stored: i64 = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events").fetch_one(pool).await).unwrap();
    assert_eq!(stored, 0);

    // A good delivery, delivered twice: applied once.
    for duplicate in [false, true] {
        let response = json_ok(deliver(&app, &paid, Some(signed(&paid, now, WEBHOOK_SECRET))).await, 200).await;
        assert_eq!(response["duplicate"], duplicate);
    }
    // Family B's events arrive out of order: the refund before the payment it refunds.
    let refunded = event(
        "evt_refund_b",
        "charge.refunded",
        json!({"id": "ch_b", "object": "charge", "payment_intent": "pi_b",
        "amount": 23_840, "amount_refunded": 3_840, "refunds": {"data": [{"id": "re_b1", "amount": 3_840}]}}),
    );
    let paid_b = event(
        "evt_paid_b",
        "payment_intent.succeeded",
        json!({"id": "pi_b", "object": "payment_intent",
        "amount": 23_840, "amount_received": 23_840, "status": "succeeded", "metadata": {"invoice_id": id_b}}),
    );
    let failed = event(
        "evt_failed",
        "payment_intent.payment_failed",
        json!({"id": "pi_fail", "object": "payment_intent",
        "amount": 23_840, "status": "requires_payment_method", "metadata": {"invoice_id": id_b},
        "last_payment_error": {"message": "Your card was declined."}}),
    );
    let unknown = event("evt_other", "customer.updated", json!({"id": "cus_1", "object": "customer"}));
    for body in [&refunded, &paid_b, &failed, &unknown] {
        json_ok(deliver(&app, body, Some(signed(body, now, WEBHOOK_SECRET))).await, 200).await;
    }

    // The events wait in the database until a worker applies them.
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let invoice_a = wait_until(&app, &s.admin, &format!("/v1/invoices/{id_a}"), |i| i["status"] == "paid").await;
    assert_eq!(invoice_a["amount_paid_cents"], 19_775);
    let invoice_b =
        wait_until(&app, &s.admin, &format!("/v1/invoices/{id_b}"), |i| i["amount_paid_cents"] == 20_000).await;
    assert_eq!(invoice_b["status"], "partially_paid");
    let payments =
        json_ok(send(&app, "GET", &format!("/v1/payments?invoice_id={id_a}"), &s.parent_a, None).await, 200).await;
    assert_eq!(payments["items"].as_array().unwrap().len(), 1, "one payment for two deliveries");
    assert_eq!(payments["items"][0]["method"], "stripe");
    // A failed payment starts the payment_issue workflow and tells the family.
    // Events are applied concurrently: wait for the failed one rather than assume its turn came.
    let started =
        |jobs: &Value| jobs["items"].as_array().unwrap().iter().any(|j| j["dedupe_key"] == "payment_issue:pi_fail");
    let jobs = wait_until(&app, &s.admin, "/v1/jobs?queue=workflows", started).await;
    assert!(started(&jobs), "{jobs:#}");
    let failed_mail = json_ok(send(&app, "GET", "/v1/outbox?template=payment_failed", &s.admin, None).await, 200).await;
    assert!(failed_mail["items"][0]["body"].as_str().unwrap().contains("Your card was declined."));

    // Refunding the Stripe payment through Cedar calls Stripe once, even when retried.
    let stripe_payment = payments["items"][0]["id"].as_str().unwrap().to_owned();
    let refund_path = format!("/v1/payments/{stripe_payment}/refund");
    for _ in 0..2 {
        let response = app
            .client
            .post(app.url(&refund_path))
            .bearer_auth(&s.admin)
            .header("idempotency-key", "refund-1")
            .json(&json!({"amount_cents": 1_000}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    stop_worker(worker).await;
    assert_eq!(stripe.calls("/v1/refunds").len(), 1);
    assert_eq!(stripe.calls("/v1/refunds")[0].form["payment_intent"], intent);
    let invoice_a = json_ok(send(&app, "GET", &format!("/v1/invoices/{id_a}"), &s.admin, None).await, 200).await;
    assert_eq!(invoice_a["amount_paid_cents"], 18_775);
    let processed: i64 = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM stripe_events WHERE processed_at IS NOT NULL").fetch_one(pool).await).unwrap();
    assert_eq!(processed, 5);
}

async fn late_fees_apply_once_and_reminders_go_out(backend: Backend) {
    let (app, s) = billing_app(backend, None, |settings| {
        settings.billing.late_fee_cents = cedar::domain::Cents(1_500);
        settings.billing.late_fee_after_days = 7;
    })
    .await;
    let (a, b) = run_december(&app, &s).await;
    // Invoice A is ten days overdue, B exactly a week.
    let today = chrono::Utc::now().with_timezone(&app.state.settings.timezone).date_naive();
    for (invoice, days) in [(&a, 10), (&b, 7)] {
        let id = uuid::Uuid::parse_str(invoice["id"].as_str().unwrap()).unwrap();
        cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE invoices SET due_date = $2 WHERE id = $1")
            .bind(id).bind(today - chrono::Duration::days(days)).execute(pool).await.map(|_| ()))
        .unwrap();
    }
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap(), (0, 1, 1));
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap(), (0, 0, 0), "once only");
    let id_a = a["id"].as_str().unwrap();
    let invoice = json_ok(send(&app, "GET", &format!("/v1/invoices/{id_a}"), &s.parent_a, None).await, 200).await;
    assert_eq!(invoice["total_cents"], 19_775 + 1_500);
    assert_eq!(invoice["late_fee_applied"], true);
    assert_eq!(invoice["lines"].as_array().unwrap().last().unwrap()["kind"], "late_fee");
    let reminders = json_ok(send(&app, "GET", "/v1/outbox?template=payment_reminder", &s.admin, None).await, 200).await;
    let reminder = &reminders["items"][0];
    assert_eq!(reminder["to_address"], "b@example.ca");
    assert!(reminder["subject"].as_str().unwrap().starts_with("Overdue"), "{reminder}");
}

async fn autopay_charges_the_saved_card_once_on_the_due_date(backend: Backend) {
    let stripe = StripeFake::start().await;
    let (app, s) = billing_app(backend, Some(&stripe), |_| {}).await;
    let (_, b) = run_december(&app, &s).await;
    let id_b = b["id"].as_str().unwrap().to_owned();
    // Family B pays part of the invoice by card and saves it for autopay.
    let checkout = json_ok(
        send(&app, "POST", &format!("/v1/invoices/{id_b}/checkout?autopay=true"), &s.parent_b, None).await,
        200,
    )
    .await;
    let intent = stripe.calls("/v1/payment_intents").remove(0);
    assert_eq!(intent.form["setup_future_usage"], "off_session");
    let now = chrono::Utc::now().timestamp();
    let paid = event(
        "evt_autopay_b",
        "payment_intent.succeeded",
        json!({"id": checkout["payment_intent_id"],
        "object": "payment_intent", "amount": 23_840, "amount_received": 10_000, "payment_method": "pm_card_visa",
        "metadata": {"invoice_id": id_b, "autopay": "true"}}),
    );
    json_ok(deliver(&app, &paid, Some(signed(&paid, now, WEBHOOK_SECRET))).await, 200).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    wait_until(&app, &s.admin, &format!("/v1/invoices/{id_b}"), |i| i["amount_paid_cents"] == 10_000).await;
    stop_worker(worker).await;
    // Not due yet: nothing charged. Due today: the balance, off session, once however often
    // the job runs.
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap().0, 0);
    let today = chrono::Utc::now().with_timezone(&app.state.settings.timezone).date_naive();
    let invoice = uuid::Uuid::parse_str(&id_b).unwrap();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE invoices SET due_date = $2 WHERE id = $1")
        .bind(invoice).bind(today).execute(pool).await.map(|_| ()))
    .unwrap();
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap().0, 1);
    // Run again before Stripe's webhook arrives: the charge is under way, nothing more is sent.
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap().0, 0);
    let charges: Vec<_> =
        stripe.calls("/v1/payment_intents").into_iter().filter(|c| c.form.contains_key("off_session")).collect();
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].form["amount"], "13840");
    assert_eq!(charges[0].form["payment_method"], "pm_card_visa");
    assert_eq!(charges[0].form["confirm"], "true");
    // Turned off by the family: no more charges; other families cannot touch it.
    assert_problem(send(&app, "DELETE", &format!("/v1/families/{}/autopay", s.family_b), &s.parent_a, None).await, 404)
        .await;
    assert_eq!(
        send(&app, "DELETE", &format!("/v1/families/{}/autopay", s.family_b), &s.parent_b, None).await.status(),
        204
    );
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap().0, 0);
}

async fn rates_billing_modes_and_voids_refuse_bad_requests(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    // The default 30-minute rate exists: the same one again is a conflict; bad values are 422.
    let duplicate = assert_problem(
        send(
            &app,
            "POST",
            "/v1/tuition-rates",
            &s.admin,
            Some(json!({"lesson_minutes": 30, "per_lesson_cents": 1, "monthly_cents": 1})),
        )
        .await,
        409,
    )
    .await;
    assert!(duplicate["detail"].as_str().unwrap().contains("already exists"), "{duplicate}");
    let bad = assert_problem(
        send(
            &app,
            "POST",
            "/v1/tuition-rates",
            &s.admin,
            Some(json!({"lesson_minutes": 5, "per_lesson_cents": -1, "monthly_cents": 100})),
        )
        .await,
        422,
    )
    .await;
    assert_eq!(bad["errors"].as_array().unwrap().len(), 2);
    assert_problem(send(&app, "GET", "/v1/tuition-rates", &s.parent_a, None).await, 403).await;
    let helene = &s.students[0];
    assert_problem(
        send(&app, "PUT", &format!("/v1/students/{helene}/billing"), &s.admin, Some(json!({"billing_mode": "yearly"})))
            .await,
        422,
    )
    .await;
    assert_problem(
        send(
            &app,
            "PUT",
            &format!("/v1/students/{helene}/billing"),
            &s.parent_a,
            Some(json!({"billing_mode": "monthly"})),
        )
        .await,
        403,
    )
    .await;
    let mine =
        json_ok(send(&app, "GET", &format!("/v1/students/{helene}/billing"), &s.parent_a, None).await, 200).await;
    assert_eq!(mine["billing_mode"], "per_lesson");
    assert_problem(send(&app, "GET", &format!("/v1/students/{helene}/billing"), &s.parent_b, None).await, 404).await;

    // Voiding: only the office, only unpaid invoices, and a voided invoice takes no payment.
    let (a, b) = run_december(&app, &s).await;
    let (id_a, id_b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    assert_problem(send(&app, "POST", &format!("/v1/invoices/{id_a}/void"), &s.parent_a, None).await, 403).await;
    json_ok(
        send(
            &app,
            "POST",
            "/v1/payments",
            &s.admin,
            Some(json!({"invoice_id": id_b, "amount_cents": 100, "method": "cash"})),
        )
        .await,
        201,
    )
    .await;
    assert_problem(send(&app, "POST", &format!("/v1/invoices/{id_b}/void"), &s.admin, None).await, 409).await;
    let voided = json_ok(send(&app, "POST", &format!("/v1/invoices/{id_a}/void"), &s.admin, None).await, 200).await;
    assert_eq!((voided["status"].as_str(), voided["amount_due_cents"].as_i64()), (Some("void"), Some(0)));
    assert_problem(
        send(
            &app,
            "POST",
            "/v1/payments",
            &s.admin,
            Some(json!({"invoice_id": id_a, "amount_cents": 100, "method": "cash"})),
        )
        .await,
        409,
    )
    .await;
    assert_problem(send(&app, "POST", &format!("/v1/invoices/{id_a}/checkout"), &s.parent_a, None).await, 409).await;
}

backend_tests!(
    rates_billing_modes_and_voids_refuse_bad_requests,
    autopay_charges_the_saved_card_once_on_the_due_date,
    a_billing_run_bills_each_family_once_by_the_school_rules,
    manual_payments_partial_payments_and_refunds,
    stripe_checkout_and_webhooks_apply_each_event_once,
    late_fees_apply_once_and_reminders_go_out,
    a_missing_rate_skips_one_family_not_the_run,
    concurrent_payments_and_refunds_respect_the_balance,
    one_balance_has_one_live_payment_intent,
);

/// Checkout, checkout with autopay and the autopay job never leave two payable PaymentIntents
/// for one balance: each new one cancels the last, and one being paid blocks the others.
async fn one_balance_has_one_live_payment_intent(backend: Backend) {
    let stripe = StripeFake::start().await;
    let (app, s) = billing_app(backend, Some(&stripe), |_| {}).await;
    let (_, b) = run_december(&app, &s).await;
    let id_b = b["id"].as_str().unwrap().to_owned();
    let checkout = |autopay: bool| {
        let path = format!("/v1/invoices/{id_b}/checkout{}", if autopay { "?autopay=true" } else { "" });
        let app = &app;
        let parent = s.parent_b.clone();
        async move { send(app, "POST", &path, &parent, None).await }
    };
    let plain = json_ok(checkout(false).await, 200).await;
    let plain_id = plain["payment_intent_id"].as_str().unwrap().to_owned();
    // The same request again: the same intent, nothing cancelled.
    assert_eq!(json_ok(checkout(false).await, 200).await["payment_intent_id"], plain_id);
    assert_eq!(stripe.intent_status(&plain_id).as_deref(), Some("requires_payment_method"));
    // With autopay: a new intent, and the plain one can no longer be paid.
    let saving = json_ok(checkout(true).await, 200).await;
    let saving_id = saving["payment_intent_id"].as_str().unwrap().to_owned();
    assert_ne!(saving_id, plain_id);
    assert_eq!(stripe.intent_status(&plain_id).as_deref(), Some("canceled"));

    // Back to a plain payment: a fresh intent (not the cancelled one), and the saving one goes.
    let again = json_ok(checkout(false).await, 200).await;
    let again_id = again["payment_intent_id"].as_str().unwrap().to_owned();
    assert!(again_id != plain_id && again_id != saving_id);
    assert_eq!(stripe.intent_status(&saving_id).as_deref(), Some("canceled"));
    let saving = json_ok(checkout(true).await, 200).await;
    let saving_id = saving["payment_intent_id"].as_str().unwrap().to_owned();
    assert_eq!(stripe.intent_status(&again_id).as_deref(), Some("canceled"));
    // The family is paying it in the browser: another checkout is refused, not doubled.
    stripe.set_intent_status(&saving_id, "processing");
    assert_problem(checkout(false).await, 409).await;

    // The autopay job leaves an invoice alone while a card payment is under way.
    let today = chrono::Utc::now().with_timezone(&app.state.settings.timezone).date_naive();
    let invoice = uuid::Uuid::parse_str(&id_b).unwrap();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE invoices SET due_date = $2 WHERE id = $1")
        .bind(invoice).bind(today).execute(pool).await.map(|_| ()))
    .unwrap();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE families SET stripe_autopay_method = 'pm_card_visa', \
        stripe_customer_id = COALESCE(stripe_customer_id, 'cus_x') WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&s.family_b).unwrap()).execute(pool).await.map(|_| ()))
    .unwrap();
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap().0, 0);
    assert!(stripe.calls("/v1/payment_intents").iter().all(|c| !c.form.contains_key("off_session")));
    // Once that attempt fails (the intent can be cancelled again), autopay charges the card.
    stripe.set_intent_status(&saving_id, "requires_payment_method");
    assert_eq!(cedar::billing::runs::daily(&app.state).await.unwrap().0, 1);
    assert_eq!(stripe.intent_status(&saving_id).as_deref(), Some("canceled"));
}

/// Payments recorded at the same moment cannot together exceed the balance, and refunds at
/// the same moment cannot together exceed the payment.
async fn concurrent_payments_and_refunds_respect_the_balance(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let (a, _) = run_december(&app, &s).await;
    let id = a["id"].as_str().unwrap().to_owned();
    let due = a["amount_due_cents"].as_i64().unwrap();
    let pay = || {
        send(
            &app,
            "POST",
            "/v1/payments",
            &s.admin,
            Some(json!({"invoice_id": id, "amount_cents": due, "method": "cash"})),
        )
    };
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..4).map(|_| pay())).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    let invoice = json_ok(send(&app, "GET", &format!("/v1/invoices/{id}"), &s.admin, None).await, 200).await;
    assert_eq!(invoice["amount_paid_cents"].as_i64(), Some(due));

    let payments =
        json_ok(send(&app, "GET", &format!("/v1/payments?invoice_id={id}"), &s.admin, None).await, 200).await;
    let pid = payments["items"][0]["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/payments/{pid}/refund");
    let refund = || send(&app, "POST", &path, &s.admin, Some(json!({"amount_cents": due})));
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..4).map(|_| refund())).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| matches!(s, 201 | 409 | 422)), "{statuses:?}");
    let invoice = json_ok(send(&app, "GET", &format!("/v1/invoices/{id}"), &s.admin, None).await, 200).await;
    assert_eq!(invoice["amount_paid_cents"].as_i64(), Some(0));
}

/// A lesson length without a tuition rate stops that family's invoice, not everyone's; once
/// the rate exists, running the period again bills the family.
async fn a_missing_rate_skips_one_family_not_the_run(backend: Backend) {
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let office = app.as_user(&s.admin);
    office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0],
            "starts_at": "2026-12-19T15:00:00Z", "duration_minutes": 45, "override_availability": true}),
        )
        .await
        .expect(201);
    let first = office.post("/v1/billing/runs", DECEMBER()).await.expect(201);
    assert_eq!(first["created"], 1, "family B is billed: {first:#}");
    assert_eq!(first["not_billed"][0]["family_id"], s.family_a);
    assert!(first["not_billed"][0]["reason"].as_str().unwrap().contains("45-minute"), "{first:#}");
    office
        .post("/v1/tuition-rates", json!({"lesson_minutes": 45, "per_lesson_cents": 5000, "monthly_cents": 20000}))
        .await
        .expect(201);
    let again = office.post("/v1/billing/runs", DECEMBER()).await.expect(200);
    assert_eq!((again["created"].as_i64(), again["already_run"].as_bool()), (Some(1), Some(true)), "{again:#}");
    assert_eq!(again["not_billed"], json!([]));
}
