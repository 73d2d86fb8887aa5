//! Enrollment requests: submission (with its workflow job), decisions, ownership, validation.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, TestApp, assert_problem, sign_up, spawn_app};
use crate::helpers::{json_ok, school, send};

fn request(extra: Value) -> Value {
    let mut body = json!({
        "student": {"first_name": "Chloé", "last_name": "Côté", "birth_date": "2016-04-12"},
        "instrument": "Cello",
        "lesson_minutes": 45,
        "preferred_times": [{"weekday": 2, "start_time": "16:00", "end_time": "18:30"}],
        "experience": "Two years of piano",
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn jobs_for(app: &TestApp, enrollment_id: &str) -> Vec<(String, String, Value)> {
    let key = format!("enrollment:{enrollment_id}");
    cedar::on_db!(&app.state.db, pool => sqlx::query_as::<_, (String, String, sqlx::types::Json<Value>)>(
        "SELECT queue, kind, payload FROM jobs WHERE dedupe_key = $1").bind(&key).fetch_all(pool).await)
    .unwrap()
    .into_iter()
    .map(|(q, k, p)| (q, k, p.0))
    .collect()
}

async fn parent_submits_and_the_workflow_job_is_enqueued(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let created =
        json_ok(send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({})))).await, 201).await;
    assert_eq!(created["status"], "submitted");
    assert_eq!(created["family_id"], s.family_a);
    assert_eq!(created["instrument"], "cello");
    assert_eq!(created["lesson_minutes"], 45);
    assert_eq!(created["student"]["first_name"], "Chloé");
    assert!(created["student_id"].is_null());
    let id = created["id"].as_str().unwrap();
    let jobs = jobs_for(&app, id).await;
    assert_eq!(jobs.len(), 1, "exactly one durable job for the AI enrollment workflow");
    assert_eq!(jobs[0].0, "workflows");
    assert_eq!(jobs[0].2, json!({"workflow": "enrollment", "input": {"enrollment_id": id}}));

    // The parent sees it; the other family and the unassigned teacher do not.
    json_ok(send(&app, "GET", &format!("/v1/enrollments/{id}"), &s.parent_a, None).await, 200).await;
    assert_problem(send(&app, "GET", &format!("/v1/enrollments/{id}"), &s.parent_b, None).await, 404).await;
    assert_problem(send(&app, "GET", &format!("/v1/enrollments/{id}"), &s.teacher1, None).await, 404).await;
    let b_list = json_ok(send(&app, "GET", "/v1/enrollments", &s.parent_b, None).await, 200).await;
    assert!(b_list["items"].as_array().unwrap().is_empty());
    let log = json_ok(send(&app, "GET", &format!("/v1/audit-log?subject_id={id}"), &s.admin, None).await, 200).await;
    assert_eq!(log["items"][0]["action"], "enrollment.submitted");
}

async fn a_failed_submission_leaves_no_job(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let before: i64 =
        cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(pool).await)
            .unwrap();
    let invalid =
        send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({"lesson_minutes": 50})))).await;
    assert_problem(invalid, 422).await;
    let after: i64 =
        cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(pool).await)
            .unwrap();
    assert_eq!(before, after);
}

async fn submission_rules(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    // Another family's id: not visible, so 404.
    let other =
        send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({"family_id": s.family_b})))).await;
    assert_problem(other, 404).await;
    // Another family's student.
    let theirs = send(
        &app,
        "POST",
        "/v1/enrollments",
        &s.parent_a,
        Some(request(json!({"student": null, "student_id": s.students[1]}))),
    )
    .await;
    assert_eq!(assert_problem(theirs, 422).await["errors"][0]["field"], "student_id");
    // An existing student of one's own family is fine.
    let existing = json_ok(
        send(
            &app,
            "POST",
            "/v1/enrollments",
            &s.parent_a,
            Some(request(json!({"student": null, "student_id": s.students[0]}))),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(existing["student_id"], s.students[0]);
    // A parent without a family must create one first.
    let lonely = sign_up(&app, "new@example.ca", "password-1").await["access_token"].as_str().unwrap().to_owned();
    let response = send(&app, "POST", "/v1/enrollments", &lonely, Some(request(json!({})))).await;
    assert_eq!(assert_problem(response, 422).await["errors"][0]["field"], "family_id");
    // Teachers do not submit.
    assert_problem(send(&app, "POST", "/v1/enrollments", &s.teacher1, Some(request(json!({})))).await, 403).await;
    // Admins submit on a family's behalf and must say which.
    let missing = send(&app, "POST", "/v1/enrollments", &s.admin, Some(request(json!({})))).await;
    assert_eq!(assert_problem(missing, 422).await["errors"][0]["field"], "family_id");
    json_ok(
        send(&app, "POST", "/v1/enrollments", &s.admin, Some(request(json!({"family_id": s.family_b})))).await,
        201,
    )
    .await;
}

async fn every_validation_error_is_named(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let body = json!({
        "student": {"first_name": " ", "last_name": "Côté", "birth_date": "2999-01-01"},
        "instrument": "",
        "lesson_minutes": 50,
        "preferred_times": [
            {"weekday": 0, "start_time": "16:00", "end_time": "17:00"},
            {"weekday": 3, "start_time": "18:00", "end_time": "17:00"},
            {"weekday": 4, "start_time": "4pm", "end_time": "17:00"}
        ]
    });
    let response = send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(body)).await;
    let fields: Vec<String> = assert_problem(response, 422).await["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        fields,
        [
            "instrument",
            "lesson_minutes",
            "preferred_times[0].weekday",
            "preferred_times[1].end_time",
            "preferred_times[2].start_time",
            "student.first_name",
            "student.birth_date",
        ]
    );
    let both =
        send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({"student_id": s.students[0]})))).await;
    assert_eq!(assert_problem(both, 422).await["errors"][0]["field"], "student");
    let neither = send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({"student": null})))).await;
    assert_eq!(assert_problem(neither, 422).await["errors"][0]["field"], "student");
    let unknown =
        send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({"favourite_colour": "blue"})))).await;
    assert_problem(unknown, 422).await;
}

async fn approval_creates_the_student_and_assigns_the_teacher(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let created =
        json_ok(send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({})))).await, 201).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/enrollments/{id}/approve");
    assert_problem(send(&app, "POST", &path, &s.parent_a, Some(json!({"teacher_id": s.teacher1_id}))).await, 403).await;
    let unknown = send(&app, "POST", &path, &s.admin, Some(json!({"teacher_id": uuid::Uuid::now_v7()}))).await;
    assert_eq!(assert_problem(unknown, 422).await["errors"][0]["field"], "teacher_id");

    let approved = json_ok(
        send(&app, "POST", &path, &s.admin, Some(json!({"teacher_id": s.teacher1_id, "start_date": "2026-12-01"})))
            .await,
        200,
    )
    .await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["assigned_teacher_id"], s.teacher1_id);
    let student_id = approved["student_id"].as_str().unwrap().to_owned();
    let student = json_ok(send(&app, "GET", &format!("/v1/students/{student_id}"), &s.parent_a, None).await, 200).await;
    assert_eq!(student["status"], "active");
    assert_eq!(student["teacher_id"], s.teacher1_id);
    assert_eq!(student["instrument"], "cello");
    assert_eq!(student["first_name"], "Chloé");
    // The assigned teacher now sees the student and the request.
    json_ok(send(&app, "GET", &format!("/v1/students/{student_id}"), &s.teacher1, None).await, 200).await;
    json_ok(send(&app, "GET", &format!("/v1/enrollments/{id}"), &s.teacher1, None).await, 200).await;

    // A second decision is a conflict and creates nothing.
    assert_problem(send(&app, "POST", &path, &s.admin, Some(json!({"teacher_id": s.teacher2_id}))).await, 409).await;
    assert_problem(
        send(&app, "POST", &format!("/v1/enrollments/{id}/decline"), &s.admin, Some(json!({"reason": "late"}))).await,
        409,
    )
    .await;
    let family_students =
        json_ok(send(&app, "GET", &format!("/v1/students?family_id={}", s.family_a), &s.admin, None).await, 200).await;
    assert_eq!(family_students["items"].as_array().unwrap().len(), 2);
    let log = json_ok(
        send(&app, "GET", &format!("/v1/audit-log?subject_id={id}&action=enrollment.approved"), &s.admin, None).await,
        200,
    )
    .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 1);
}

async fn existing_student_is_activated_on_approval(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    // Liam (family B) is waitlisted without a teacher.
    let liam = &s.students[2];
    let created = json_ok(
        send(
            &app,
            "POST",
            "/v1/enrollments",
            &s.parent_b,
            Some(request(json!({"student": null, "student_id": liam, "instrument": "guitar"}))),
        )
        .await,
        201,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/enrollments/{id}/approve"),
            &s.admin,
            Some(json!({"teacher_id": s.teacher2_id})),
        )
        .await,
        200,
    )
    .await;
    let student = json_ok(send(&app, "GET", &format!("/v1/students/{liam}"), &s.teacher2, None).await, 200).await;
    assert_eq!(student["status"], "active");
    assert_eq!(student["teacher_id"], s.teacher2_id);
}

async fn decline_and_waitlist(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let a = json_ok(send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({})))).await, 201).await;
    let a_id = a["id"].as_str().unwrap();
    let no_reason = send(&app, "POST", &format!("/v1/enrollments/{a_id}/decline"), &s.admin, Some(json!({}))).await;
    assert_eq!(assert_problem(no_reason, 422).await["errors"][0]["field"], "reason");
    let declined = json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/enrollments/{a_id}/decline"),
            &s.admin,
            Some(json!({"reason": "No cello teacher this term"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(declined["status"], "declined");
    assert_eq!(declined["decision_reason"], "No cello teacher this term");
    assert!(declined["student_id"].is_null(), "declining creates no student");

    let b = json_ok(
        send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({"instrument": "flute"})))).await,
        201,
    )
    .await;
    let b_id = b["id"].as_str().unwrap();
    let waitlisted = json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/enrollments/{b_id}/waitlist"),
            &s.admin,
            Some(json!({"reason": "Full until January"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(waitlisted["status"], "waitlisted");
    let student = json_ok(
        send(&app, "GET", &format!("/v1/students/{}", waitlisted["student_id"].as_str().unwrap()), &s.parent_a, None)
            .await,
        200,
    )
    .await;
    assert_eq!(student["status"], "waitlisted");
    assert_problem(
        send(&app, "POST", &format!("/v1/enrollments/{b_id}/waitlist"), &s.admin, Some(json!({}))).await,
        409,
    )
    .await;
    // From the waitlist to approved: the same student becomes active.
    let approved = json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/enrollments/{b_id}/approve"),
            &s.admin,
            Some(json!({"teacher_id": s.teacher1_id})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(approved["student_id"], waitlisted["student_id"]);
    let student = json_ok(
        send(&app, "GET", &format!("/v1/students/{}", approved["student_id"].as_str().unwrap()), &s.admin, None).await,
        200,
    )
    .await;
    assert_eq!(student["status"], "active");

    let filtered = json_ok(send(&app, "GET", "/v1/enrollments?status=declined", &s.admin, None).await, 200).await;
    assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
    assert_problem(send(&app, "GET", "/v1/enrollments?status=maybe", &s.admin, None).await, 422).await;
    assert_problem(
        send(
            &app,
            "POST",
            &format!("/v1/enrollments/{}/approve", uuid::Uuid::now_v7()),
            &s.admin,
            Some(json!({"teacher_id": s.teacher1_id})),
        )
        .await,
        404,
    )
    .await;
}

async fn concurrent_approvals_decide_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let created =
        json_ok(send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(request(json!({})))).await, 201).await;
    let path = format!("/v1/enrollments/{}/approve", created["id"].as_str().unwrap());
    let attempts = (0..6).map(|i| {
        let teacher = if i % 2 == 0 { &s.teacher1_id } else { &s.teacher2_id };
        send(&app, "POST", &path, &s.admin, Some(json!({"teacher_id": teacher})))
    });
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 5, "{statuses:?}");
    let family_students =
        json_ok(send(&app, "GET", &format!("/v1/students?family_id={}", s.family_a), &s.admin, None).await, 200).await;
    assert_eq!(family_students["items"].as_array().unwrap().len(), 2, "one student created, not six");
}

/// Waitlisting and approving one request at the same moment (both allowed from `submitted`,
/// and approval also from `waitlisted`) makes one student, never two.
async fn approve_and_waitlist_at_once_make_one_student(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let count = || async {
        let page = json_ok(
            send(&app, "GET", &format!("/v1/students?family_id={}&limit=200", s.family_a), &s.admin, None).await,
            200,
        )
        .await;
        page["items"].as_array().unwrap().len()
    };
    let before = count().await;
    for round in 0..6 {
        let body = request(json!({"student": {"first_name": format!("Twin{round}"), "last_name": "Côté"}}));
        let created = json_ok(send(&app, "POST", "/v1/enrollments", &s.parent_a, Some(body)).await, 201).await;
        let id = created["id"].as_str().unwrap();
        let (approve_path, waitlist_path) =
            (format!("/v1/enrollments/{id}/approve"), format!("/v1/enrollments/{id}/waitlist"));
        let approve = send(&app, "POST", &approve_path, &s.admin, Some(json!({"teacher_id": s.teacher1_id})));
        let waitlist = send(&app, "POST", &waitlist_path, &s.admin, Some(json!({})));
        let (a, w) = tokio::join!(approve, waitlist);
        assert!(a.status().is_success() || w.status().is_success(), "{} {}", a.status(), w.status());
        assert_eq!(count().await, before + round + 1, "round {round}: one student per request");
    }
}

async fn a_retried_submission_creates_one_request_and_one_job(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let submit = || {
        app.client
            .post(app.url("/v1/enrollments"))
            .bearer_auth(&s.parent_a)
            .header("idempotency-key", "enrol-chloe-1")
            .json(&request(json!({})))
            .send()
    };
    let first = json_ok(submit().await.unwrap(), 201).await;
    let again = submit().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(json_ok(again, 201).await["id"], first["id"]);
    let listed = json_ok(send(&app, "GET", "/v1/enrollments", &s.parent_a, None).await, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let jobs: i64 =
        cedar::on_db!(&app.state.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE queue = 'workflows'")
        .fetch_one(pool).await)
        .unwrap();
    assert_eq!(jobs, 1);
}

backend_tests!(
    a_retried_submission_creates_one_request_and_one_job,
    parent_submits_and_the_workflow_job_is_enqueued,
    a_failed_submission_leaves_no_job,
    submission_rules,
    every_validation_error_is_named,
    approval_creates_the_student_and_assigns_the_teacher,
    existing_student_is_activated_on_approval,
    decline_and_waitlist,
    concurrent_approvals_decide_once,
    approve_and_waitlist_at_once_make_one_student,
);
