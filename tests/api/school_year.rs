//! The school year: closures and time off added after booking (cancelled and emailed once per
//! family in its language, or handed to the office with free slots), withdrawal from a date,
//! substitutes (conflict-checked, billed per the setting), terms and re-enrollment, links that
//! work from an email (verify, printable pages, pay links through the Stripe fake).

use std::time::Duration;

use cedar::config::{ClosureAction, EmailTransport, Secret, Settings};
use chrono::{Datelike, NaiveDate, NaiveTime};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::billing::{WEBHOOK_SECRET, billing_app, deliver, event, signed};
use crate::common::{Backend, TestApp, admin_token, sign_in, spawn_app_with_workflows};
use crate::helpers::{School, school, start_worker, stop_worker};
use crate::mail::{Received, SmtpServer};
use crate::stripe_fake::StripeFake;

backend_tests!(
    a_closure_or_time_off_after_booking_cancels_and_tells_each_family_once,
    in_reschedule_mode_the_office_gets_a_task_with_free_slots,
    withdrawing_cancels_from_the_effective_date_and_reactivating_restores_nothing,
    a_withdrawal_prorates_flat_monthly_tuition,
    a_substitute_is_conflict_checked_notified_and_billed_per_the_setting,
    terms_bound_series_and_reenrollment_continues_or_withdraws,
    invitation_links_open_a_password_page_or_redirect_to_the_site,
    invoice_emails_carry_signed_links_to_a_printable_page_and_a_pay_page,
);

fn smtp(server: &SmtpServer) -> impl FnOnce(&mut Settings) + use<> {
    let url = server.url();
    move |settings: &mut Settings| {
        settings.email.transport = EmailTransport::Smtp { url: Secret::new(url) };
        settings.email.digest_minutes = 0;
    }
}

async fn app_with(backend: Backend, adjust: impl FnOnce(&mut Settings)) -> (TestApp, School) {
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), adjust).await;
    let s = school(&app).await;
    (app, s)
}

/// The Tuesday `weeks` after next Tuesday (school-local date).
fn tuesday(app: &TestApp, weeks: i64) -> NaiveDate {
    let today = cedar::time::today(app.state.settings.timezone);
    cedar::time::next_weekday(today, 2) + chrono::Duration::weeks(weeks)
}

fn at(app: &TestApp, date: NaiveDate, hhmm: &str) -> String {
    let time = NaiveTime::parse_from_str(hhmm, "%H:%M").unwrap();
    cedar::time::at_local(app.state.settings.timezone, date, time).to_rfc3339()
}

/// Books `count` weekly lessons; returns their ids in order.
async fn weekly(app: &TestApp, s: &School, teacher: &str, student: &str, starts_at: &str, count: u32) -> Vec<String> {
    let body = json!({"teacher_id": teacher, "student_id": student, "starts_at": starts_at, "duration_minutes": 30,
        "recurrence": {"rrule": format!("FREQ=WEEKLY;COUNT={count}")}, "override_availability": true});
    let booked = app.as_user(&s.admin).post("/v1/lessons", body).await.expect(201);
    booked["occurrences"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect()
}

async fn lesson(app: &TestApp, s: &School, id: &str) -> Value {
    app.as_user(&s.admin).get(&format!("/v1/lessons/{id}")).await.expect(200)
}

async fn outbox(app: &TestApp, s: &School, query: &str) -> Vec<Value> {
    app.as_user(&s.admin).get(&format!("/v1/outbox?{query}")).await.expect(200)["items"].as_array().unwrap().clone()
}

async fn wait_for_mail(server: &SmtpServer, count: usize) -> Vec<Received> {
    for _ in 0..1200 {
        if server.received().len() >= count {
            return server.received();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {count} emails, got {:#?}", server.received());
}

async fn a_closure_or_time_off_after_booking_cancels_and_tells_each_family_once(backend: Backend) {
    let server = SmtpServer::start().await;
    let (app, s) = app_with(backend, smtp(&server)).await;
    let office = app.as_user(&s.admin);
    let first = tuesday(&app, 0);
    let helene = weekly(&app, &s, &s.teacher1_id, &s.students[0], &at(&app, first, "16:00"), 3).await;
    let zoe = weekly(&app, &s, &s.teacher2_id, &s.students[1], &at(&app, first, "17:00"), 3).await;

    // A snow day on the first Tuesday: both lessons cancelled, not billed, no credit.
    let closure = office
        .post(
            "/v1/calendar-exceptions",
            json!({"kind": "closure", "name": "Snow day", "starts_on": first, "ends_on": first}),
        )
        .await
        .expect(201);
    assert_eq!(closure["affected"]["action"], "cancelled");
    assert_eq!(closure["affected"]["lesson_ids"].as_array().unwrap().len(), 2);
    assert_eq!(closure["affected"]["families_notified"], 2);
    assert_eq!(closure["affected"]["makeup_credits"], 0);
    for id in [&helene[0], &zoe[0]] {
        let l = lesson(&app, &s, id).await;
        assert_eq!(l["status"], "cancelled");
        assert_eq!(l["attendance"], Value::Null, "a closure is nobody's absence");
    }
    assert_eq!(lesson(&app, &s, &helene[1]).await["status"], "scheduled");

    // Teacher 1 takes the second Tuesday off (entered by the teacher): only her lesson goes,
    // as a teacher cancellation, with a makeup credit.
    let second = tuesday(&app, 1);
    let time_off = app
        .as_user(&s.teacher1)
        .post(
            "/v1/calendar-exceptions",
            json!({"kind": "time_off", "teacher_id": s.teacher1_id, "name": "Conference", "starts_on": second, "ends_on": second}),
        )
        .await
        .expect(201);
    assert_eq!(time_off["affected"]["lesson_ids"], json!([helene[1]]));
    assert_eq!(time_off["affected"]["makeup_credits"], 1);
    assert_eq!(lesson(&app, &s, &helene[1]).await["attendance"], "cancelled_by_teacher");
    assert_eq!(lesson(&app, &s, &zoe[1]).await["status"], "scheduled");
    let credits = office.get(&format!("/v1/makeup-credits?student_id={}", s.students[0])).await.expect(200);
    assert_eq!(credits["items"].as_array().unwrap().len(), 1);

    // The same closure entered twice finds nothing left to cancel and emails no one again.
    let again = office
        .post(
            "/v1/calendar-exceptions",
            json!({"kind": "closure", "name": "Snow day", "starts_on": first, "ends_on": first}),
        )
        .await
        .expect(201);
    assert_eq!(again["affected"]["action"], "none");
    // Bad input changes nothing.
    office
        .post(
            "/v1/calendar-exceptions",
            json!({"kind": "closure", "name": "Oops", "starts_on": second, "ends_on": first}),
        )
        .await
        .problem(422);
    assert_eq!(lesson(&app, &s, &zoe[1]).await["status"], "scheduled");

    // One email per family per event, in the family's language, naming the child.
    let worker = start_worker(&app.state, Duration::from_secs(30));
    let mail = wait_for_mail(&server, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_worker(worker).await;
    assert_eq!(server.received().len(), 3, "{:#?}", server.received());
    let to = |m: &Received| m.header("To").unwrap_or_default();
    let french: Vec<&Received> = mail.iter().filter(|m| to(m).contains("a@example.ca")).collect();
    assert_eq!(french.len(), 2);
    let snow = french.iter().find(|m| m.header("Subject").unwrap().contains("Snow day")).unwrap();
    assert_eq!(snow.header("Subject").unwrap(), "Cours touchés : Snow day");
    assert!(snow.body().contains("Hélène") && snow.body().contains("ne seront pas facturés"), "{}", snow.body());
    let conference = french.iter().find(|m| m.header("Subject").unwrap().contains("Conference")).unwrap();
    assert!(
        conference.body().contains("Élodie Gagné") && conference.body().contains("rattrapage"),
        "{}",
        conference.body()
    );
    let english = mail.iter().find(|m| to(m).contains("b@example.ca")).unwrap();
    assert_eq!(english.header("Subject").unwrap(), "Lessons affected: Snow day");
    assert!(english.body().contains("Zoë") && !english.body().contains("Hélène"), "{}", english.body());
}

async fn in_reschedule_mode_the_office_gets_a_task_with_free_slots(backend: Backend) {
    let (app, s) = app_with(backend, |settings| settings.school_year.closure_action = ClosureAction::Reschedule).await;
    let office = app.as_user(&s.admin);
    office
        .put(
            &format!("/v1/teachers/{}/availability", s.teacher1_id),
            json!({"windows": [{"weekday": 2, "start_time": "15:00", "end_time": "19:00"}]}),
        )
        .await
        .expect(200);
    let first = tuesday(&app, 0);
    let booked = weekly(&app, &s, &s.teacher1_id, &s.students[0], &at(&app, first, "16:00"), 1).await;
    let closure = office
        .post(
            "/v1/calendar-exceptions",
            json!({"kind": "closure", "name": "Boiler repair", "starts_on": first, "ends_on": first}),
        )
        .await
        .expect(201);
    assert_eq!(closure["affected"]["action"], "to_reschedule");
    let tasks = closure["affected"]["task_ids"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    let task = office.get(&format!("/v1/tasks/{}", tasks[0].as_str().unwrap())).await.expect(200);
    assert_eq!(task["subject_id"], booked[0]);
    let detail = task["detail"].as_str().unwrap();
    // Free slots come from the teacher's Tuesday window in the following weeks.
    let next = tuesday(&app, 1);
    assert!(detail.contains(&at(&app, next, "15:00")[..16]), "{detail}");
    assert!(task["title"].as_str().unwrap().contains("Hélène"));
    // The lesson waits for the office; the family hears that a new time is coming.
    assert_eq!(lesson(&app, &s, &booked[0]).await["status"], "scheduled");
    let emails = outbox(&app, &s, "template=lessons_disrupted").await;
    assert_eq!(emails.len(), 1);
    assert!(emails[0]["body"].as_str().unwrap().contains("nouvel horaire"));
}

async fn withdrawing_cancels_from_the_effective_date_and_reactivating_restores_nothing(backend: Backend) {
    let (app, s) = app_with(backend, |_| {}).await;
    let office = app.as_user(&s.admin);
    let booked = weekly(&app, &s, &s.teacher1_id, &s.students[0], &at(&app, tuesday(&app, 0), "16:00"), 4).await;
    let effective = tuesday(&app, 2);
    let path = format!("/v1/students/{}", s.students[0]);
    // effective_on only goes with a withdrawal; refused, nothing changes.
    office.patch(&path, json!({"effective_on": effective})).await.problem(422);
    office.patch(&path, json!({"status": "withdrawn", "effective_on": "2031-01-01"})).await.problem(422);
    assert_eq!(office.get(&path).await.expect(200)["status"], "active");

    let student = office.patch(&path, json!({"status": "withdrawn", "effective_on": effective})).await.expect(200);
    assert_eq!(student["status"], "withdrawn");
    assert_eq!(
        student["end_date"],
        (effective - chrono::Duration::days(1)).to_string(),
        "billed through the day before"
    );
    let statuses: Vec<Value> = {
        let mut out = Vec::new();
        for id in &booked {
            out.push(lesson(&app, &s, id).await["status"].clone());
        }
        out
    };
    assert_eq!(statuses, json!(["scheduled", "scheduled", "cancelled", "cancelled"]).as_array().unwrap().clone());
    // The teacher is told which times are free again.
    let told = outbox(&app, &s, "template=student_withdrawn").await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["to_address"], "t1@cedarheights.ca");
    assert!(told[0]["body"].as_str().unwrap().contains("2 upcoming lesson(s)"), "{}", told[0]["body"]);

    // Back to active: billing resumes, no lesson comes back by itself.
    let student = office.patch(&path, json!({"status": "active"})).await.expect(200);
    assert_eq!(student["end_date"], Value::Null);
    assert_eq!(lesson(&app, &s, &booked[3]).await["status"], "cancelled");
    let audit = office.get(&format!("/v1/audit-log?subject_id={}", s.students[0])).await.expect(200);
    let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.iter().filter(|a| **a == "student.updated").count() >= 2, "{actions:?}");
}

async fn a_withdrawal_prorates_flat_monthly_tuition(backend: Backend) {
    // Zoë (family B) pays a flat 150.00 a month and has five Wednesdays in December.
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let office = app.as_user(&s.admin);
    office
        .patch(&format!("/v1/students/{}", s.students[1]), json!({"status": "withdrawn", "effective_on": "2026-12-16"}))
        .await
        .expect(200);
    let lessons = office.get(&format!("/v1/lessons?student_id={}&limit=10", s.students[1])).await.expect(200);
    let statuses: Vec<&str> =
        lessons["items"].as_array().unwrap().iter().map(|l| l["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["scheduled", "scheduled", "cancelled", "cancelled", "cancelled"]);
    let run = office
        .post("/v1/billing/runs", json!({"period_start": "2026-12-01", "period_end": "2026-12-31", "dry_run": true}))
        .await
        .expect(200);
    let family = run["preview"].as_array().unwrap().iter().find(|d| d["family_id"] == s.family_b).unwrap().clone();
    let zoe = family["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "tuition" && l["student_id"] == s.students[1].as_str())
        .unwrap()
        .clone();
    assert!(zoe["description"].as_str().unwrap().contains("15 of 31 days"), "{zoe}");
    assert_eq!(zoe["amount_cents"], 7_258, "150.00 × 15 ÷ 31, rounded: {zoe}");
}

async fn december_tuition(app: &TestApp, s: &School) -> Vec<Value> {
    let run = app
        .as_user(&s.admin)
        .post("/v1/billing/runs", json!({"period_start": "2026-12-01", "period_end": "2026-12-31", "dry_run": true}))
        .await
        .expect(200);
    let preview = run["preview"].as_array().unwrap();
    let family = preview.iter().find(|d| d["family_id"] == s.family_a).unwrap();
    family["lines"].as_array().unwrap().iter().filter(|l| l["kind"] == "tuition").cloned().collect()
}

async fn a_substitute_is_conflict_checked_notified_and_billed_per_the_setting(backend: Backend) {
    // Hélène (teacher 1, 3500 a lesson) has five Tuesdays in December; teacher 2 charges 4000.
    let (app, s) = billing_app(backend, None, |_| {}).await;
    let office = app.as_user(&s.admin);
    let helene = office.get(&format!("/v1/lessons?student_id={}&limit=10", s.students[0])).await.expect(200);
    let ids: Vec<String> =
        helene["items"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    // Teacher 2 is busy at the same time on 8 December.
    let busy = json!({"teacher_id": s.teacher2_id, "student_id": s.students[1], "starts_at": "2026-12-08T21:00:00Z",
        "duration_minutes": 30, "override_availability": true});
    office.post("/v1/lessons", busy).await.expect(201);
    let conflict = office
        .post(&format!("/v1/lessons/{}/substitute", ids[1]), json!({"teacher_id": s.teacher2_id}))
        .await
        .problem(409);
    assert_eq!(conflict["conflicts"][0]["kind"], "teacher");
    assert_eq!(lesson(&app, &s, &ids[1]).await["teacher_id"], s.teacher1_id);
    // Only the office assigns substitutes; a parent sees no such lesson to change.
    app.as_user(&s.teacher1)
        .post(&format!("/v1/lessons/{}/substitute", ids[0]), json!({"teacher_id": s.teacher2_id}))
        .await
        .problem(403);
    office
        .post(
            &format!("/v1/lessons/{}/substitute", ids[0]),
            json!({"teacher_id": "0190dead-0000-7000-8000-000000000000"}),
        )
        .await
        .problem(422);

    let taught = office
        .post(&format!("/v1/lessons/{}/substitute", ids[0]), json!({"teacher_id": s.teacher2_id}))
        .await
        .expect(200);
    assert_eq!(taught["teacher_id"], s.teacher2_id);
    assert_eq!(taught["substitute_for"], s.teacher1_id);
    // Teacher 2 now sees it; the family is told, in French.
    app.as_user(&s.teacher2).get(&format!("/v1/lessons/{}", ids[0])).await.expect(200);
    let told = outbox(&app, &s, "template=lesson_substitute").await;
    assert_eq!(told.len(), 1);
    assert!(
        told[0]["subject"].as_str().unwrap().starts_with("Un enseignant remplaçant pour Hélène"),
        "{}",
        told[0]["subject"]
    );
    assert!(told[0]["body"].as_str().unwrap().contains("Sam Wilson"));
    // Billed at the regular teacher's rate: still five lessons at 3500.
    let lines = december_tuition(&app, &s).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!((lines[0]["quantity"].as_i64(), lines[0]["unit_cents"].as_i64()), (Some(5), Some(3500)));
    // A cancelled lesson gets no substitute.
    office
        .post(&format!("/v1/lessons/{}/attendance", ids[4]), json!({"status": "cancelled_by_student"}))
        .await
        .expect(200);
    office.post(&format!("/v1/lessons/{}/substitute", ids[4]), json!({"teacher_id": s.teacher2_id})).await.problem(409);
    // Naming the regular teacher again undoes it.
    let back = office
        .post(&format!("/v1/lessons/{}/substitute", ids[0]), json!({"teacher_id": s.teacher1_id}))
        .await
        .expect(200);
    assert_eq!(back["substitute_for"], Value::Null);

    // With CEDAR_SUBSTITUTE_RATE=substitute the substitute's own rate applies.
    let (app, s) = billing_app(backend, None, |settings| settings.school_year.bill_substitute_rate = true).await;
    let helene =
        app.as_user(&s.admin).get(&format!("/v1/lessons?student_id={}&limit=10", s.students[0])).await.expect(200);
    let first = helene["items"][0]["id"].as_str().unwrap().to_owned();
    app.as_user(&s.admin)
        .post(&format!("/v1/lessons/{first}/substitute"), json!({"teacher_id": s.teacher2_id}))
        .await
        .expect(200);
    let mut units: Vec<(i64, i64)> = december_tuition(&app, &s)
        .await
        .iter()
        .map(|l| (l["quantity"].as_i64().unwrap(), l["unit_cents"].as_i64().unwrap()))
        .collect();
    units.sort();
    assert_eq!(units, vec![(1, 4000), (4, 3500)]);
}

async fn terms_bound_series_and_reenrollment_continues_or_withdraws(backend: Backend) {
    let (app, s) = app_with(backend, |_| {}).await;
    let office = app.as_user(&s.admin);
    let today = cedar::time::today(app.state.settings.timezone);
    let (fall_start, fall_end) = (today - chrono::Duration::days(30), tuesday(&app, 1) + chrono::Duration::days(3));
    let (winter_start, winter_end) = (fall_end + chrono::Duration::days(3), fall_end + chrono::Duration::days(60));
    // Bad terms are refused and change nothing.
    office.post("/v1/terms", json!({"starts_on": fall_start, "ends_on": fall_end})).await.problem(422);
    office.post("/v1/terms", json!({"name": "Fall", "starts_on": fall_end, "ends_on": fall_start})).await.problem(422);
    office
        .post(
            "/v1/terms",
            json!({"name": "Fall", "starts_on": fall_start, "ends_on": fall_end, "billing_months": ["2026-13"]}),
        )
        .await
        .problem(422);
    app.as_user(&s.parent_a)
        .post("/v1/terms", json!({"name": "Fall", "starts_on": fall_start, "ends_on": fall_end}))
        .await
        .problem(403);
    let fall = office
        .post("/v1/terms", json!({"name": "Fall", "starts_on": fall_start, "ends_on": fall_end}))
        .await
        .expect(201);
    assert!(!fall["billing_months"].as_array().unwrap().is_empty(), "every month the term touches by default");
    let winter = office
        .post("/v1/terms", json!({"name": "Winter", "starts_on": winter_start, "ends_on": winter_end}))
        .await
        .expect(201);
    office
        .post("/v1/terms", json!({"name": "Overlap", "starts_on": fall_end, "ends_on": winter_start}))
        .await
        .problem(409);
    office
        .post("/v1/terms", json!({"name": "Winter", "starts_on": winter_end + chrono::Duration::days(10), "ends_on": winter_end + chrono::Duration::days(20)}))
        .await
        .problem(409);
    assert_eq!(app.as_user(&s.parent_a).get("/v1/terms").await.expect(200)["items"].as_array().unwrap().len(), 2);
    // Billing months: inside a term's months yes, the summer after none.
    let this_month = today.with_day0(0).unwrap();
    assert!(cedar::school_year::terms::bills_month(&app.state.db, this_month).await.unwrap());
    let far = NaiveDate::from_ymd_opt(2031, 7, 1).unwrap();
    assert!(!cedar::school_year::terms::bills_month(&app.state.db, far).await.unwrap());

    // Hélène and Zoë have weekly lessons to the end of the fall term.
    weekly(&app, &s, &s.teacher1_id, &s.students[0], &at(&app, tuesday(&app, 0), "16:00"), 2).await;
    weekly(&app, &s, &s.teacher2_id, &s.students[1], &at(&app, tuesday(&app, 0), "17:00"), 2).await;
    let winter_id = winter["id"].as_str().unwrap();
    let offered = office.post(&format!("/v1/terms/{winter_id}/reenrollment"), json!({})).await.expect(200);
    assert_eq!(offered["offered"], 2);
    assert_eq!(office.post(&format!("/v1/terms/{winter_id}/reenrollment"), json!({})).await.expect(200)["offered"], 0);
    let offers = outbox(&app, &s, "template=reenrollment_offer").await;
    assert_eq!(offers.len(), 2);
    let french = offers.iter().find(|e| e["to_address"] == "a@example.ca").unwrap();
    assert_eq!(french["subject"], "Poursuivre les cours à la session Winter?");
    assert!(
        french["body"].as_str().unwrap().contains("Hélène : piano, mardi 16 h 00 avec Élodie Gagné"),
        "{}",
        french["body"]
    );
    let english = offers.iter().find(|e| e["to_address"] == "b@example.ca").unwrap();
    assert!(
        english["body"].as_str().unwrap().contains("Zoë: violin, Tuesday 17:00 with Sam Wilson"),
        "{}",
        english["body"]
    );

    // Each family sees and decides its own; another family's is not found; teachers none.
    let mine = app.as_user(&s.parent_a).get("/v1/reenrollments").await.expect(200);
    let items = mine["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    let helene_offer = items[0]["id"].as_str().unwrap().to_owned();
    app.as_user(&s.parent_b).post(&format!("/v1/reenrollments/{helene_offer}/accept"), json!({})).await.problem(404);
    app.as_user(&s.teacher1).get("/v1/reenrollments").await.problem(403);

    // Accepting books Tuesdays through the end of winter, at the same time with the same teacher.
    let accepted =
        app.as_user(&s.parent_a).post(&format!("/v1/reenrollments/{helene_offer}/accept"), json!({})).await.expect(200);
    assert_eq!(accepted["status"], "accepted");
    let booked = accepted["outcome"]["lessons_booked"].as_i64().unwrap();
    let tuesdays = (0..=60)
        .map(|d| winter_start + chrono::Duration::days(d))
        .filter(|d| *d <= winter_end && d.weekday() == chrono::Weekday::Tue)
        .count();
    assert_eq!(booked as usize, tuesdays);
    let again =
        app.as_user(&s.parent_a).post(&format!("/v1/reenrollments/{helene_offer}/accept"), json!({})).await.expect(200);
    assert_eq!(again["outcome"]["lessons_booked"], booked, "accepting twice books once");
    let from = at(&app, winter_start, "00:00");
    let lessons = office
        .get(&format!("/v1/lessons?student_id={}&from={}&limit=100", s.students[0], urlencode(&from)))
        .await
        .expect(200);
    let lessons = lessons["items"].as_array().unwrap();
    assert_eq!(lessons.len(), tuesdays);
    assert!(lessons.iter().all(|l| l["teacher_id"] == s.teacher1_id && l["series_id"].is_string()));

    // Zoë's family declines: she is withdrawn when winter starts (the daily job, when due).
    let theirs = app.as_user(&s.parent_b).get("/v1/reenrollments").await.expect(200);
    let zoe_offer = theirs["items"][0]["id"].as_str().unwrap().to_owned();
    let declined =
        app.as_user(&s.parent_b).post(&format!("/v1/reenrollments/{zoe_offer}/decline"), json!({})).await.expect(200);
    assert_eq!(declined["withdraw_on"], winter_start.to_string());
    app.as_user(&s.parent_b).post(&format!("/v1/reenrollments/{zoe_offer}/accept"), json!({})).await.problem(409);
    let zoe = format!("/v1/students/{}", s.students[1]);
    assert_eq!(office.get(&zoe).await.expect(200)["status"], "active", "until the term starts");
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE reenrollments SET withdraw_on = $1 WHERE id = $2")
        .bind(today).bind(uuid::Uuid::parse_str(&zoe_offer).unwrap()).execute(pool).await.map(|_| ()))
    .unwrap();
    let (_, withdrawn) = cedar::school_year::reenrollment::daily(&app.state).await.unwrap();
    assert_eq!(withdrawn, 1);
    assert_eq!(office.get(&zoe).await.expect(200)["status"], "withdrawn");
    let (_, again) = cedar::school_year::reenrollment::daily(&app.state).await.unwrap();
    assert_eq!(again, 0, "withdrawn once");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// The URL in `body` containing `needle`, pointed at the test app (links carry
/// `CEDAR_PUBLIC_URL`, which a test server on port 0 does not know).
fn url_with(app: &TestApp, body: &str, needle: &str) -> String {
    let url = body
        .split_whitespace()
        .find(|w| w.starts_with("http") && w.contains(needle))
        .unwrap_or_else(|| panic!("no {needle} in {body}"));
    assert!(url.starts_with(&app.state.settings.public_url), "{url}");
    app.url(&url[app.state.settings.public_url.len()..])
}

fn link_in(body: &str, marker: &str) -> String {
    let start = body.find(marker).unwrap_or_else(|| panic!("no {marker} in {body}"));
    body[start..].split_whitespace().next().unwrap().to_owned()
}

async fn invitation_links_open_a_password_page_or_redirect_to_the_site(backend: Backend) {
    let server = SmtpServer::start().await;
    let (app, s) = app_with(backend, smtp(&server)).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    app.as_user(&s.admin)
        .post("/v1/users", json!({"email": "new.parent@example.ca", "role": "parent"}))
        .await
        .expect(201);
    let mail = wait_for_mail(&server, 1).await;
    let link = link_in(&mail[0].body(), "http");
    assert!(link.contains("/auth/v1/verify?type=invite&token="), "{link}");
    let path = &link[link.find("/auth/v1").unwrap()..];
    // Opening it shows the password page; opening it twice (a mail scanner) spends nothing.
    for _ in 0..2 {
        let page = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("form-action 'self'") && csp.contains("style-src 'unsafe-inline'"), "{csp}");
        let html = page.text().await.unwrap();
        assert!(
            html.contains("<form method=\"post\" action=\"/auth/v1/verify\"") && html.contains("name=\"password\"")
        );
    }
    let token = path.split("token=").nth(1).unwrap().to_owned();
    let form = |password: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("type", "invite")
            .append_pair("token", &token)
            .append_pair("password", password)
            .finish()
    };
    let post = |body: String| {
        app.client
            .post(app.url("/auth/v1/verify"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    // A weak password is refused with a page, and the link still works.
    let weak = post(form("short")).await.unwrap();
    assert_eq!(weak.status(), 422);
    assert!(weak.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let saved = post(form("a-good-new-password")).await.unwrap();
    assert_eq!(saved.status(), 200);
    assert!(saved.text().await.unwrap().contains("Password saved"));
    let session = sign_in(&app, "new.parent@example.ca", "a-good-new-password").await;
    assert!(session["access_token"].is_string());
    assert_eq!(post(form("a-good-new-password")).await.unwrap().status(), 403, "spent");
    stop_worker(worker).await;

    // With a site URL the link verifies and redirects there with the session in the fragment.
    let server = SmtpServer::start().await;
    let adjust = smtp(&server);
    let app = spawn_app_with_workflows(backend, cedar::workflows::builtin(), move |settings| {
        adjust(settings);
        settings.school_year.site_url = Some("https://app.cedarheights.example".into());
    })
    .await;
    let admin = admin_token(&app).await;
    let worker = start_worker(&app.state, Duration::from_secs(30));
    app.as_user(&admin).post("/v1/users", json!({"email": "second@example.ca", "role": "parent"})).await.expect(201);
    let mail = wait_for_mail(&server, 1).await;
    stop_worker(worker).await;
    let link = link_in(&mail[0].body(), "http");
    let path = link[link.find("/auth/v1").unwrap()..].to_owned();
    let client = no_redirects();
    let to = format!("{path}&redirect_to={}", urlencode("https://app.cedarheights.example/welcome"));
    let first = client.get(app.url(&to)).send().await.unwrap();
    assert_eq!(first.status(), 303);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("https://app.cedarheights.example/welcome#access_token="), "{location}");
    assert!(
        location.contains("refresh_token=")
            && location.contains("type=invite")
            && location.contains("token_type=bearer")
    );
    let access = location.split("access_token=").nth(1).unwrap().split('&').next().unwrap();
    let me = app.client.get(app.url("/v1/me")).bearer_auth(access).send().await.unwrap();
    assert_eq!(me.status(), 200);
    // Spent: the site gets GoTrue's error fragment; a foreign redirect_to is not followed.
    let evil = format!("{path}&redirect_to={}", urlencode("https://evil.example/"));
    let second = client.get(app.url(&evil)).send().await.unwrap();
    let location = second.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://app.cedarheights.example#error=access_denied&error_code=otp_expired"),
        "{location}"
    );
}

fn sign_link(key: &[u8], page: &str, id: &str, expires: i64) -> String {
    hex::encode(cedar::billing::stripe::hmac_sha256(key, format!("{page}\n{id}\n{expires}").as_bytes()))
}

async fn invoice_emails_carry_signed_links_to_a_printable_page_and_a_pay_page(backend: Backend) {
    let stripe = StripeFake::start().await;
    let (app, s) = billing_app(backend, Some(&stripe), |_| {}).await;
    let office = app.as_user(&s.admin);
    office
        .post("/v1/billing/runs", json!({"period_start": "2026-12-01", "period_end": "2026-12-31"}))
        .await
        .expect(201);
    let emails = outbox(&app, &s, "template=invoice_issued").await;
    let email = emails.iter().find(|e| e["to_address"] == "a@example.ca").unwrap();
    let body = email["body"].as_str().unwrap();
    let view = url_with(&app, body, "/view?");
    assert!(view.contains("/view?expires="), "{body}");
    let pay = url_with(&app, body, "/pay?");
    let invoice_id = view.split("/v1/invoices/").nth(1).unwrap().split('/').next().unwrap().to_owned();

    // The printable page opens without a token, styled under its own CSP, with a pay link.
    let page = app.client.get(&view).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("style-src 'unsafe-inline'") && csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<style>") && html.contains("Balance due") && html.contains("/pay?expires="), "{html}");
    // Altered, made up or expired links open nothing.
    let tampered = view.replace("sig=", "sig=0");
    assert_eq!(app.client.get(&tampered).send().await.unwrap().status(), 403);
    let other = view.replace(&invoice_id, &s.family_a);
    assert_eq!(app.client.get(&other).send().await.unwrap().status(), 403);
    let key: Vec<u8> = cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = 'email_links'")
        .fetch_one(pool).await)
    .unwrap();
    let past = chrono::Utc::now().timestamp() - 60;
    let expired = format!(
        "/v1/invoices/{invoice_id}/view?expires={past}&sig={}",
        sign_link(&key, "invoices/view", &invoice_id, past)
    );
    let refused = app.client.get(app.url(&expired)).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("expired"));
    // A view link does not open the pay page.
    let swapped = view.replace("/view?", "/pay?");
    assert_eq!(app.client.get(&swapped).send().await.unwrap().status(), 403);

    // The pay link opens a Stripe Checkout Session for the balance; again, the same one.
    let client = no_redirects();
    let first = client.get(&pay).send().await.unwrap();
    assert_eq!(first.status(), 303);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("https://checkout.stripe.com/c/pay/cs_test_"), "{location}");
    let second = client.get(&pay).send().await.unwrap();
    assert_eq!(second.headers()["location"].to_str().unwrap(), location);
    let sessions = stripe.calls("/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let invoice = office.get(&format!("/v1/invoices/{invoice_id}")).await.expect(200);
    let form = &sessions[0].form;
    assert_eq!(form["line_items[0][price_data][unit_amount]"], invoice["amount_due_cents"].to_string());
    assert_eq!(form["payment_intent_data[metadata][invoice_id]"], invoice_id);
    assert_eq!(form["mode"], "payment");
    // Autopay comes due first: the open session is expired so the card is not charged twice,
    // and the pay link then opens a fresh session.
    let session = location.rsplit('/').next().unwrap().to_owned();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE families SET stripe_autopay_method = 'pm_card_visa' WHERE id = $1")
        .bind(uuid::Uuid::parse_str(&s.family_a).unwrap()).execute(pool).await.map(|_| ()))
    .unwrap();
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE invoices SET due_date = $1 WHERE id = $2")
        .bind(cedar::time::today(app.state.settings.timezone)).bind(uuid::Uuid::parse_str(&invoice_id).unwrap())
        .execute(pool).await.map(|_| ()))
    .unwrap();
    assert_eq!(cedar::billing::stripe::autopay(&app.state).await.unwrap(), 1);
    assert_eq!(stripe.session_status(&session).as_deref(), Some("expired"));
    // The saved card's payment is under way: the pay link says so rather than opening a
    // second way to pay.
    let busy = client.get(&pay).send().await.unwrap();
    assert_eq!(busy.status(), 409);
    assert!(busy.text().await.unwrap().contains("under way"));
    // Paid through the session: the same webhook path records it; the link then says so.
    let now = chrono::Utc::now().timestamp();
    let due = invoice["amount_due_cents"].as_i64().unwrap();
    let paid = event(
        "evt_checkout_paid",
        "payment_intent.succeeded",
        json!({"id": "pi_from_checkout", "object": "payment_intent", "amount": due, "amount_received": due,
            "currency": "cad", "status": "succeeded", "latest_charge": "ch_checkout", "metadata": {"invoice_id": invoice_id}}),
    );
    let response = deliver(&app, &paid, Some(signed(&paid, now, WEBHOOK_SECRET))).await;
    assert_eq!(response.status(), 200);
    let worker = start_worker(&app.state, Duration::from_secs(30));
    crate::helpers::wait_until(&app, &s.admin, &format!("/v1/invoices/{invoice_id}"), |i| i["status"] == "paid").await;
    stop_worker(worker).await;
    let after = client.get(&pay).send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert!(after.text().await.unwrap().contains("Nothing to pay"));

    // Without Stripe, the pay page gives the school's e-Transfer instructions.
    let (app, s) = billing_app(backend, None, |settings| {
        settings.school_year.etransfer_email = Some("payments@cedarheights.example".into());
    })
    .await;
    app.as_user(&s.admin)
        .post("/v1/billing/runs", json!({"period_start": "2026-12-01", "period_end": "2026-12-31"}))
        .await
        .expect(201);
    let emails = outbox(&app, &s, "template=invoice_issued").await;
    let body = emails[0]["body"].as_str().unwrap();
    let pay = url_with(&app, body, "/pay?");
    let page = no_redirects().get(&pay).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("payments@cedarheights.example") && html.contains("Interac e-Transfer"), "{html}");
}
