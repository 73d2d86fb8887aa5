//! Lessons: recurrence across DST, closures, every conflict kind, the booking race, free slots,
//! attendance and makeup credits, edits, roles, iCalendar feeds.

use std::str::FromStr;

use axum::Router;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::helpers::{School, json_ok, school, send};

async fn room(app: &TestApp, s: &School, name: &str) -> String {
    let room =
        json_ok(send(app, "POST", "/v1/rooms", &s.admin, Some(json!({"name": name, "capacity": 2}))).await, 201).await;
    room["id"].as_str().unwrap().to_owned()
}

fn lesson(teacher: &str, student: &str, starts_at: &str, minutes: i64) -> Value {
    json!({"teacher_id": teacher, "student_id": student, "starts_at": starts_at, "duration_minutes": minutes})
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn book(app: &TestApp, token: &str, body: Value) -> reqwest::Response {
    send(app, "POST", "/v1/lessons", token, Some(body)).await
}

fn kinds(problem: &Value) -> Vec<String> {
    problem["conflicts"].as_array().unwrap().iter().map(|c| c["kind"].as_str().unwrap().to_owned()).collect()
}

fn starts(booking: &Value) -> Vec<String> {
    booking["occurrences"].as_array().unwrap().iter().map(|l| l["starts_at"].as_str().unwrap().to_owned()).collect()
}

async fn weekly_lesson_keeps_local_time_across_dst(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    // Mondays 16:00 Toronto from 26 Oct 2026; clocks fall back on Sunday 1 Nov.
    let body = with(
        lesson(&s.teacher1_id, &s.students[0], "2026-10-26T20:00:00Z", 30),
        json!({"recurrence": {"rrule": "FREQ=WEEKLY;COUNT=3"}}),
    );
    let booking = json_ok(book(&app, &s.admin, body).await, 201).await;
    assert_eq!(starts(&booking), ["2026-10-26T20:00:00Z", "2026-11-02T21:00:00Z", "2026-11-09T21:00:00Z"]);
    assert!(booking["series_id"].is_string());
    assert_eq!(booking["starts_at"], "2026-10-26T20:00:00Z", "the first lesson is the top-level object");
    assert!(booking["occurrences"].as_array().unwrap().iter().all(|l| l["series_id"] == booking["series_id"]));
    let listed =
        json_ok(send(&app, "GET", &format!("/v1/lessons?student_id={}", s.students[0]), &s.admin, None).await, 200)
            .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 3);
}

async fn closures_skip_series_occurrences_and_block_single_lessons(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    json_ok(send(&app, "POST", "/v1/calendar-exceptions", &s.admin,
        Some(json!({"kind": "closure", "name": "Remembrance week", "starts_on": "2026-11-09", "ends_on": "2026-11-13"}))).await, 201).await;
    let body = with(
        lesson(&s.teacher1_id, &s.students[0], "2026-11-02T21:00:00Z", 30),
        json!({"recurrence": {"rrule": "FREQ=WEEKLY;COUNT=3"}}),
    );
    let booking = json_ok(book(&app, &s.admin, body).await, 201).await;
    // As in RFC 5545, a skipped occurrence still counts towards COUNT.
    assert_eq!(starts(&booking), ["2026-11-02T21:00:00Z", "2026-11-16T21:00:00Z"]);
    assert_eq!(
        booking["skipped"],
        json!([{"starts_at": "2026-11-09T21:00:00Z", "reason": "closure", "detail": "Remembrance week"}])
    );
    let single = book(&app, &s.admin, lesson(&s.teacher2_id, &s.students[1], "2026-11-10T21:00:00Z", 30)).await;
    assert_eq!(kinds(&assert_problem(single, 409).await), ["closure"]);
}

async fn every_conflict_kind_is_reported_and_back_to_back_is_fine(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let r = room(&app, &s, "Studio A").await;
    let [helene, zoe, liam] = s.students.clone();
    let base = with(lesson(&s.teacher1_id, &helene, "2026-12-07T21:00:00Z", 30), json!({"room_id": r}));
    let first = json_ok(book(&app, &s.admin, base.clone()).await, 201).await;
    // Back to back (half-open intervals): same teacher, student and room, right after.
    json_ok(book(&app, &s.admin, with(base.clone(), json!({"starts_at": "2026-12-07T21:30:00Z"}))).await, 201).await;
    json_ok(book(&app, &s.admin, with(base.clone(), json!({"starts_at": "2026-12-07T20:30:00Z"}))).await, 201).await;

    let teacher = book(&app, &s.admin, lesson(&s.teacher1_id, &zoe, "2026-12-07T21:15:00Z", 30)).await;
    let teacher = assert_problem(teacher, 409).await;
    assert_eq!(kinds(&teacher), ["teacher", "teacher"]);
    assert_eq!(teacher["conflicts"][0]["lesson_id"], first["id"]);
    let student = book(&app, &s.admin, lesson(&s.teacher2_id, &helene, "2026-12-07T21:10:00Z", 15)).await;
    assert_eq!(kinds(&assert_problem(student, 409).await), ["student"]);
    let room_clash =
        book(&app, &s.admin, with(lesson(&s.teacher2_id, &liam, "2026-12-07T21:00:00Z", 30), json!({"room_id": r})))
            .await;
    assert_eq!(kinds(&assert_problem(room_clash, 409).await), ["room"]);
    let all_three = book(&app, &s.admin, with(base.clone(), json!({"duration_minutes": 15}))).await;
    assert_eq!(kinds(&assert_problem(all_three, 409).await), ["teacher", "student", "room"]);

    // Outside availability: Mondays 15:00–18:00 only.
    json_ok(
        send(
            &app,
            "PUT",
            &format!("/v1/teachers/{}/availability", s.teacher1_id),
            &s.teacher1,
            Some(json!({"windows": [{"weekday": 1, "start_time": "15:00", "end_time": "18:00"}]})),
        )
        .await,
        200,
    )
    .await;
    let tuesday = lesson(&s.teacher1_id, &liam, "2026-12-08T21:00:00Z", 30);
    assert_eq!(kinds(&assert_problem(book(&app, &s.admin, tuesday.clone()).await, 409).await), ["availability"]);
    let late = lesson(&s.teacher1_id, &liam, "2026-12-07T22:45:00Z", 30);
    assert_eq!(kinds(&assert_problem(book(&app, &s.admin, late).await, 409).await), ["availability"]);
    let forced =
        json_ok(book(&app, &s.admin, with(tuesday.clone(), json!({"override_availability": true}))).await, 201).await;
    assert_eq!(forced["availability_override"], true);
    let not_admin = book(
        &app,
        &s.teacher1,
        with(lesson(&s.teacher1_id, &liam, "2026-12-15T21:00:00Z", 30), json!({"override_availability": true})),
    )
    .await;
    assert_problem(not_admin, 422).await;

    // Time off and terms.
    json_ok(send(&app, "POST", "/v1/calendar-exceptions", &s.teacher2,
        Some(json!({"kind": "time_off", "teacher_id": s.teacher2_id, "name": "Conference", "starts_on": "2026-12-09", "ends_on": "2026-12-09"}))).await, 201).await;
    let away = book(&app, &s.admin, lesson(&s.teacher2_id, &zoe, "2026-12-09T21:00:00Z", 30)).await;
    assert_eq!(kinds(&assert_problem(away, 409).await), ["time_off"]);
    json_ok(
        send(
            &app,
            "POST",
            "/v1/calendar-exceptions",
            &s.admin,
            Some(json!({"kind": "term", "name": "Fall 2026", "starts_on": "2026-09-01", "ends_on": "2026-12-18"})),
        )
        .await,
        201,
    )
    .await;
    let holidays = book(&app, &s.admin, lesson(&s.teacher2_id, &zoe, "2026-12-28T21:00:00Z", 30)).await;
    assert_eq!(kinds(&assert_problem(holidays, 409).await), ["outside_term"]);
    // A teacher cannot declare a closure, nor another teacher's time off.
    assert_problem(
        send(
            &app,
            "POST",
            "/v1/calendar-exceptions",
            &s.teacher1,
            Some(json!({"kind": "closure", "name": "x", "starts_on": "2026-12-01", "ends_on": "2026-12-01"})),
        )
        .await,
        403,
    )
    .await;
}

async fn dry_run_reports_without_writing(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let first = lesson(&s.teacher1_id, &s.students[0], "2026-12-07T21:00:00Z", 30);
    json_ok(book(&app, &s.admin, first).await, 201).await;
    let series = with(
        lesson(&s.teacher1_id, &s.students[0], "2026-11-30T21:00:00Z", 30),
        json!({"recurrence": {"rrule": "FREQ=WEEKLY;COUNT=3"}}),
    );
    let report = json_ok(send(&app, "POST", "/v1/lessons?dry_run=true", &s.admin, Some(series)).await, 200).await;
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["occurrences"].as_array().unwrap().len(), 3);
    assert_eq!(kinds(&report), ["teacher", "student"]);
    assert_eq!(report["conflicts"][0]["occurrence_starts_at"], "2026-12-07T21:00:00Z");
    let listed = json_ok(send(&app, "GET", "/v1/lessons", &s.admin, None).await, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "the dry run wrote nothing");
}

async fn fifty_concurrent_bookings_of_one_slot_yield_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let body = lesson(&s.teacher2_id, &s.students[1], "2026-12-14T21:00:00Z", 45);
    let attempts = (0..50).map(|_| book(&app, &s.admin, body.clone()));
    let statuses: Vec<u16> =
        futures_util::future::join_all(attempts).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 49, "{statuses:?}");
    let listed = json_ok(send(&app, "GET", "/v1/lessons", &s.admin, None).await, 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

async fn free_slots_avoid_lessons_and_closures(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    json_ok(
        send(
            &app,
            "PUT",
            &format!("/v1/teachers/{}/availability", s.teacher1_id),
            &s.admin,
            Some(json!({"windows": [{"weekday": 1, "start_time": "16:00", "end_time": "18:00"}]})),
        )
        .await,
        200,
    )
    .await;
    // Monday 7 Dec 2026 (EST): a lesson 16:30–17:00 local.
    json_ok(book(&app, &s.admin, lesson(&s.teacher1_id, &s.students[0], "2026-12-07T21:30:00Z", 30)).await, 201).await;
    let path = format!(
        "/v1/availability?teacher_id={}&from=2026-12-07T00:00:00Z&to=2026-12-15T00:00:00Z&duration_minutes=30",
        s.teacher1_id
    );
    let slots = json_ok(send(&app, "GET", &path, &s.parent_a, None).await, 200).await;
    let got: Vec<&str> = slots["items"].as_array().unwrap().iter().map(|s| s["starts_at"].as_str().unwrap()).collect();
    assert_eq!(
        got,
        [
            "2026-12-07T21:00:00Z",
            "2026-12-07T22:00:00Z",
            "2026-12-07T22:15:00Z",
            "2026-12-07T22:30:00Z",
            "2026-12-14T21:00:00Z",
            "2026-12-14T21:15:00Z",
            "2026-12-14T21:30:00Z",
            "2026-12-14T21:45:00Z",
            "2026-12-14T22:00:00Z",
            "2026-12-14T22:15:00Z",
            "2026-12-14T22:30:00Z",
        ]
    );
    json_ok(
        send(
            &app,
            "POST",
            "/v1/calendar-exceptions",
            &s.admin,
            Some(json!({"kind": "closure", "name": "Snow day", "starts_on": "2026-12-14", "ends_on": "2026-12-14"})),
        )
        .await,
        201,
    )
    .await;
    let slots = json_ok(send(&app, "GET", &path, &s.admin, None).await, 200).await;
    assert_eq!(slots["items"].as_array().unwrap().len(), 4);
    let bad = send(
        &app,
        "GET",
        &format!(
            "/v1/availability?teacher_id={}&from=2026-12-07T00:00:00Z&to=2027-03-01T00:00:00Z&duration_minutes=5",
            s.teacher1_id
        ),
        &s.admin,
        None,
    )
    .await;
    assert_eq!(assert_problem(bad, 422).await["errors"].as_array().unwrap().len(), 2);
}

async fn attendance_grants_and_makeups_spend_credits(backend: Backend) {
    let app = spawn_app_with(backend, Router::new(), |s| s.makeup_cap = 2).await;
    let s = school(&app).await;
    let helene = &s.students[0];
    let soon = (chrono::Utc::now() + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:00:00Z").to_string();
    let mut lessons = Vec::new();
    for start in ["2027-01-04T21:00:00Z", "2027-01-11T21:00:00Z", "2027-01-18T21:00:00Z", "2027-01-25T21:00:00Z", &soon]
    {
        let l = json_ok(book(&app, &s.admin, lesson(&s.teacher1_id, helene, start, 30)).await, 201).await;
        lessons.push(l["id"].as_str().unwrap().to_owned());
    }
    let attend = |id: &str, token: &str, status: &str| {
        let path = format!("/v1/lessons/{id}/attendance");
        let (app, token, status) = (&app, token.to_owned(), status.to_owned());
        async move { send(app, "POST", &path, &token, Some(json!({"status": status, "note": "marked"}))).await }
    };
    // Someone else's lesson, a parent marking presence: refused.
    assert_problem(attend(&lessons[0], &s.teacher2, "present").await, 404).await;
    assert_problem(attend(&lessons[0], &s.parent_a, "present").await, 403).await;
    assert_problem(attend(&lessons[0], &s.teacher1, "late").await, 422).await;

    let by_teacher = json_ok(attend(&lessons[0], &s.teacher1, "cancelled_by_teacher").await, 200).await;
    assert_eq!(by_teacher["lesson"]["status"], "cancelled");
    assert_eq!(by_teacher["lesson"]["attendance"], "cancelled_by_teacher");
    assert!(by_teacher["makeup_credit"]["id"].is_string());
    // Marking it again does not grant twice.
    let again = json_ok(attend(&lessons[0], &s.teacher1, "cancelled_by_teacher").await, 200).await;
    assert!(again["makeup_credit"].is_null());
    // A parent cancels well ahead: a credit; two hours ahead: none.
    let ahead = json_ok(attend(&lessons[1], &s.parent_a, "cancelled_by_student").await, 200).await;
    assert!(ahead["makeup_credit"].is_object());
    let late = json_ok(attend(&lessons[4], &s.parent_a, "cancelled_by_student").await, 200).await;
    assert!(late["makeup_credit"].is_null());
    assert!(late["makeup_note"].as_str().unwrap().contains("24 hours"));
    // The cap (2 here) stops a third.
    let capped = json_ok(attend(&lessons[2], &s.teacher1, "cancelled_by_teacher").await, 200).await;
    assert!(capped["makeup_credit"].is_null());
    assert!(capped["makeup_note"].as_str().unwrap().contains("maximum"));
    let present = json_ok(attend(&lessons[3], &s.teacher1, "present").await, 200).await;
    assert_eq!(present["lesson"]["status"], "scheduled");

    let credits_path = format!("/v1/makeup-credits?student_id={helene}");
    let credits = json_ok(send(&app, "GET", &credits_path, &s.parent_a, None).await, 200).await;
    assert_eq!(credits["available"], 2);
    assert_problem(send(&app, "GET", &credits_path, &s.parent_b, None).await, 404).await;

    // The cancelled slot is free again, and a makeup spends the oldest credit.
    let makeup = with(lesson(&s.teacher1_id, helene, "2027-01-04T21:00:00Z", 30), json!({"makeup": true}));
    let booked = json_ok(book(&app, &s.admin, makeup.clone()).await, 201).await;
    assert_eq!(booked["is_makeup"], true);
    let credits = json_ok(send(&app, "GET", &credits_path, &s.parent_a, None).await, 200).await;
    assert_eq!(credits["available"], 1);
    // Expired credits cannot be spent.
    let past = chrono::Utc::now() - chrono::Duration::days(1);
    cedar::on_db!(&app.state.db, pool => sqlx::query("UPDATE makeup_credits SET expires_at = $1 WHERE status = 'available'")
        .bind(past).execute(pool).await.map(|_| ()))
    .unwrap();
    let credits = json_ok(send(&app, "GET", &credits_path, &s.parent_a, None).await, 200).await;
    assert_eq!(credits["available"], 0);
    assert!(credits["items"].as_array().unwrap().iter().any(|c| c["status"] == "expired"));
    let none_left = book(&app, &s.admin, with(makeup, json!({"starts_at": "2027-02-01T21:00:00Z"}))).await;
    assert_eq!(assert_problem(none_left, 422).await["errors"][0]["field"], "makeup");
}

async fn edit_one_occurrence_or_this_and_following(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let body = with(
        lesson(&s.teacher1_id, &s.students[0], "2026-10-19T20:00:00Z", 30),
        json!({"recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"}}),
    );
    let booking = json_ok(book(&app, &s.admin, body).await, 201).await;
    let ids: Vec<String> =
        booking["occurrences"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    // Just the second: an hour later.
    let moved = json_ok(
        send(
            &app,
            "PATCH",
            &format!("/v1/lessons/{}", ids[1]),
            &s.teacher1,
            Some(json!({"starts_at": "2026-10-26T21:00:00Z"})),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(moved["items"][0]["starts_at"], "2026-10-26T21:00:00Z");
    // From the third on: 30 minutes later in local time (the series crosses the DST change).
    let following = json_ok(
        send(
            &app,
            "PATCH",
            &format!("/v1/lessons/{}", ids[2]),
            &s.admin,
            Some(json!({"starts_at": "2026-11-02T21:30:00Z", "scope": "following"})),
        )
        .await,
        200,
    )
    .await;
    let got: Vec<&str> =
        following["items"].as_array().unwrap().iter().map(|l| l["starts_at"].as_str().unwrap()).collect();
    assert_eq!(got, ["2026-11-02T21:30:00Z", "2026-11-09T21:30:00Z"]);
    let first = json_ok(send(&app, "GET", &format!("/v1/lessons/{}", ids[0]), &s.admin, None).await, 200).await;
    assert_eq!(first["starts_at"], "2026-10-19T20:00:00Z", "earlier occurrences stay");
    // Moving onto another lesson is a conflict.
    json_ok(book(&app, &s.admin, lesson(&s.teacher1_id, &s.students[2], "2026-11-16T21:00:00Z", 30)).await, 201).await;
    let clash = send(
        &app,
        "PATCH",
        &format!("/v1/lessons/{}", ids[3]),
        &s.admin,
        Some(json!({"starts_at": "2026-11-16T21:00:00Z"})),
    )
    .await;
    assert_eq!(kinds(&assert_problem(clash, 409).await), ["teacher"]);
    // Cancel one, delete following, delete the series.
    let cancelled = json_ok(
        send(&app, "PATCH", &format!("/v1/lessons/{}", ids[0]), &s.admin, Some(json!({"status": "cancelled"}))).await,
        200,
    )
    .await;
    assert_eq!(cancelled["items"][0]["status"], "cancelled");
    assert_eq!(
        send(&app, "DELETE", &format!("/v1/lessons/{}?scope=following", ids[2]), &s.admin, None).await.status(),
        204
    );
    let left =
        json_ok(send(&app, "GET", &format!("/v1/lessons?student_id={}", s.students[0]), &s.admin, None).await, 200)
            .await;
    assert_eq!(left["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        send(&app, "DELETE", &format!("/v1/lessons/{}?scope=series", ids[0]), &s.admin, None).await.status(),
        204
    );
    let left =
        json_ok(send(&app, "GET", &format!("/v1/lessons?student_id={}", s.students[0]), &s.admin, None).await, 200)
            .await;
    assert!(left["items"].as_array().unwrap().is_empty());
}

async fn lessons_follow_roles(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let mine =
        json_ok(book(&app, &s.teacher1, lesson(&s.teacher1_id, &s.students[0], "2026-12-07T21:00:00Z", 30)).await, 201)
            .await;
    let theirs =
        json_ok(book(&app, &s.admin, lesson(&s.teacher2_id, &s.students[1], "2026-12-07T21:00:00Z", 30)).await, 201)
            .await;
    assert_problem(
        book(&app, &s.teacher1, lesson(&s.teacher2_id, &s.students[1], "2026-12-08T21:00:00Z", 30)).await,
        403,
    )
    .await;
    assert_problem(
        book(&app, &s.parent_a, lesson(&s.teacher1_id, &s.students[0], "2026-12-08T21:00:00Z", 30)).await,
        403,
    )
    .await;
    let count = |token: &str| {
        let (app, token) = (&app, token.to_owned());
        async move {
            json_ok(send(app, "GET", "/v1/lessons", &token, None).await, 200).await["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(count(&s.admin).await, 2);
    assert_eq!(count(&s.teacher1).await, 1);
    assert_eq!(count(&s.parent_a).await, 1);
    assert_eq!(count(&s.parent_b).await, 1);
    assert_problem(
        send(&app, "GET", &format!("/v1/lessons/{}", theirs["id"].as_str().unwrap()), &s.parent_a, None).await,
        404,
    )
    .await;
    assert_problem(
        send(&app, "GET", &format!("/v1/lessons/{}", theirs["id"].as_str().unwrap()), &s.teacher1, None).await,
        404,
    )
    .await;
    assert_problem(
        send(
            &app,
            "PATCH",
            &format!("/v1/lessons/{}", mine["id"].as_str().unwrap()),
            &s.parent_a,
            Some(json!({"notes": "x"})),
        )
        .await,
        403,
    )
    .await;
    let bad = book(
        &app,
        &s.admin,
        json!({"teacher_id": s.teacher1_id, "student_id": uuid::Uuid::now_v7(), "starts_at": "2026-12-09T21:00:00Z", "ends_at": "2026-12-09T20:00:00Z", "recurrence": {"rrule": "FREQ=DAILY"}}),
    );
    let fields: Vec<String> = assert_problem(bad.await, 422).await["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fields, ["ends_at", "recurrence.rrule"]);
    let unknown =
        book(&app, &s.admin, lesson(&s.teacher1_id, &uuid::Uuid::now_v7().to_string(), "2026-12-09T21:00:00Z", 30))
            .await;
    assert_eq!(assert_problem(unknown, 422).await["errors"][0]["field"], "student_id");
}

async fn calendar_feeds_are_valid_icalendar(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let r = room(&app, &s, "Studio B").await;
    let soon = chrono::Utc::now() + chrono::Duration::days(7);
    let start = soon.format("%Y-%m-%dT21:00:00Z").to_string();
    let body = with(
        lesson(&s.teacher1_id, &s.students[0], &start, 30),
        json!({"room_id": r, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=2"}}),
    );
    let booking = json_ok(book(&app, &s.admin, body).await, 201).await;
    let second = booking["occurrences"][1]["id"].as_str().unwrap().to_owned();
    json_ok(
        send(
            &app,
            "POST",
            &format!("/v1/lessons/{second}/attendance"),
            &s.teacher1,
            Some(json!({"status": "cancelled_by_teacher"})),
        )
        .await,
        200,
    )
    .await;

    let family =
        json_ok(send(&app, "GET", &format!("/v1/families/{}", s.family_a), &s.parent_a, None).await, 200).await;
    let url = family["calendar_url"].as_str().unwrap();
    let path = &url[url.find("/v1/").unwrap()..];
    let response = app.get(path).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/calendar"));
    let text = response.text().await.unwrap();
    let calendar = icalendar::Calendar::from_str(&text).expect("the feed parses as iCalendar");
    let events: Vec<&icalendar::Event> = calendar.components.iter().filter_map(|c| c.as_event()).collect();
    assert_eq!(events.len(), 2);
    use icalendar::{Component, EventLike};
    assert_eq!(events[0].get_uid(), Some(format!("{}@cedar", booking["id"].as_str().unwrap()).as_str()));
    assert_eq!(events[0].get_location(), Some("Studio B"));
    assert!(events[0].get_summary().unwrap().contains("Piano with Élodie Gagné"));
    assert_eq!(events[1].get_status(), Some(icalendar::EventStatus::Cancelled));
    assert!(events[0].get_start().is_some() && events[0].get_end().is_some());

    // The teacher's feed shows the student; rotating the token retires the old URL.
    let teacher =
        json_ok(send(&app, "GET", &format!("/v1/teachers/{}", s.teacher1_id), &s.teacher1, None).await, 200).await;
    let teacher_url = teacher["calendar_url"].as_str().unwrap().to_owned();
    let teacher_feed = app.get(&teacher_url[teacher_url.find("/v1/").unwrap()..]).await.text().await.unwrap();
    assert!(teacher_feed.contains("Hélène Côté"));
    let rotated = json_ok(
        send(&app, "POST", &format!("/v1/families/{}/calendar-token", s.family_a), &s.parent_a, None).await,
        200,
    )
    .await;
    assert_ne!(rotated["calendar_url"], family["calendar_url"]);
    assert_problem(app.get(path).await, 404).await;
    let new = rotated["calendar_url"].as_str().unwrap();
    assert_eq!(app.get(&new[new.find("/v1/").unwrap()..]).await.status(), 200);
    assert_problem(
        send(&app, "POST", &format!("/v1/families/{}/calendar-token", s.family_a), &s.parent_b, None).await,
        404,
    )
    .await;
    assert_problem(app.get("/v1/calendars/not-a-token.ics").await, 404).await;
}

async fn other_peoples_lessons_and_time_off_are_out_of_reach(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let r = room(&app, &s, "Studio C").await;
    let booked = json_ok(
        book(
            &app,
            &s.admin,
            with(lesson(&s.teacher1_id, &s.students[0], "2027-01-04T21:00:00Z", 30), json!({"room_id": r})),
        )
        .await,
        201,
    )
    .await;
    let id = booked["id"].as_str().unwrap();
    // Another family cannot cancel it, nor see it.
    let cancel = send(
        &app,
        "POST",
        &format!("/v1/lessons/{id}/attendance"),
        &s.parent_b,
        Some(json!({"status": "cancelled_by_student"})),
    )
    .await;
    assert_problem(cancel, 404).await;
    assert_problem(send(&app, "DELETE", &format!("/v1/lessons/{id}"), &s.teacher2, None).await, 404).await;
    // Records a lesson depends on cannot be deleted from under it.
    assert_problem(send(&app, "DELETE", &format!("/v1/students/{}", s.students[0]), &s.admin, None).await, 409).await;
    assert_problem(send(&app, "DELETE", &format!("/v1/rooms/{r}"), &s.admin, None).await, 409).await;
    assert_problem(send(&app, "DELETE", &format!("/v1/teachers/{}", s.teacher1_id), &s.admin, None).await, 409).await;
    // Time off belongs to its teacher.
    let off = json_ok(send(&app, "POST", "/v1/calendar-exceptions", &s.teacher2,
        Some(json!({"kind": "time_off", "teacher_id": s.teacher2_id, "name": "Dentist", "starts_on": "2027-01-05", "ends_on": "2027-01-05"}))).await, 201).await;
    let off_id = off["id"].as_str().unwrap();
    assert_problem(send(&app, "POST", "/v1/calendar-exceptions", &s.teacher1,
        Some(json!({"kind": "time_off", "teacher_id": s.teacher2_id, "name": "x", "starts_on": "2027-01-06", "ends_on": "2027-01-06"}))).await, 403).await;
    assert_problem(send(&app, "DELETE", &format!("/v1/calendar-exceptions/{off_id}"), &s.teacher1, None).await, 404)
        .await;
    assert_problem(send(&app, "DELETE", &format!("/v1/calendar-exceptions/{off_id}"), &s.parent_a, None).await, 403)
        .await;
    assert_eq!(
        send(&app, "DELETE", &format!("/v1/calendar-exceptions/{off_id}"), &s.teacher2, None).await.status(),
        204
    );
    // Only the teacher (or an admin) sets their availability.
    let windows = json!({"windows": [{"weekday": 1, "start_time": "15:00", "end_time": "18:00"}]});
    assert_problem(
        send(&app, "PUT", &format!("/v1/teachers/{}/availability", s.teacher2_id), &s.teacher1, Some(windows.clone()))
            .await,
        403,
    )
    .await;
    let overlapping = json!({"windows": [{"weekday": 1, "start_time": "15:00", "end_time": "18:00"}, {"weekday": 1, "start_time": "17:00", "end_time": "19:00"}]});
    let bad =
        send(&app, "PUT", &format!("/v1/teachers/{}/availability", s.teacher1_id), &s.teacher1, Some(overlapping))
            .await;
    assert_eq!(assert_problem(bad, 422).await["errors"][0]["field"], "windows[1]");
}

backend_tests!(
    other_peoples_lessons_and_time_off_are_out_of_reach,
    weekly_lesson_keeps_local_time_across_dst,
    closures_skip_series_occurrences_and_block_single_lessons,
    every_conflict_kind_is_reported_and_back_to_back_is_fine,
    dry_run_reports_without_writing,
    fifty_concurrent_bookings_of_one_slot_yield_one,
    free_slots_avoid_lessons_and_closures,
    attendance_grants_and_makeups_spend_credits,
    edit_one_occurrence_or_this_and_following,
    lessons_follow_roles,
    calendar_feeds_are_valid_icalendar,
    teachers_book_and_remove_only_their_own,
    reads_do_not_wait_for_a_writer,
    parents_cancel_only_ahead_of_time,
    free_slots_for_a_student_need_sight_of_the_student,
    marked_lessons_are_cancelled_not_deleted,
);

/// A lesson with attendance (and the credit it may have earned) is history: deleting it, or a
/// series that holds it, is refused; later lessons can still go.
async fn marked_lessons_are_cancelled_not_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let booked = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0],
            "starts_at": "2027-03-02T21:00:00Z", "duration_minutes": 30, "override_availability": true,
            "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"}}),
        )
        .await
        .expect(201);
    let ids: Vec<String> =
        booked["occurrences"].as_array().unwrap().iter().map(|l| l["id"].as_str().unwrap().to_owned()).collect();
    let credit = office
        .post(&format!("/v1/lessons/{}/attendance", ids[0]), json!({"status": "cancelled_by_teacher"}))
        .await
        .expect(200);
    assert!(credit["makeup_credit"]["id"].is_string());
    office.delete(&format!("/v1/lessons/{}", ids[0])).await.problem(409);
    office.delete(&format!("/v1/lessons/{}?scope=series", ids[1])).await.problem(409);
    assert_eq!(office.delete(&format!("/v1/lessons/{}?scope=following", ids[1])).await.status, 204);
    let left = office.get(&format!("/v1/lessons?student_id={}&from=2027-01-01T00:00:00Z", s.students[0])).await;
    let left = left.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["attendance"], "cancelled_by_teacher");
    let credits = office.get(&format!("/v1/makeup-credits?student_id={}", s.students[0])).await.expect(200);
    assert_eq!(credits["available"], 1, "the credit it earned is still there");
}

/// `student_id` shapes the free slots with that student's lessons: only someone who may see
/// the student may ask (another family's child is 404, as everywhere).
async fn free_slots_for_a_student_need_sight_of_the_student(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let path = |student: &str| {
        format!(
            "/v1/availability?teacher_id={}&student_id={student}&from=2026-12-07T00:00:00Z&to=2026-12-15T00:00:00Z&duration_minutes=30",
            s.teacher1_id
        )
    };
    app.as_user(&s.parent_b).get(&path(&s.students[0])).await.problem(404);
    app.as_user(&s.parent_a).get(&path(&s.students[0])).await.expect(200);
    app.as_user(&s.admin).get(&path(&s.students[1])).await.expect(200);
}

/// A parent may cancel a lesson before it starts, not one that has taken place or that the
/// teacher has marked (that would also take it off per-lesson billing).
async fn parents_cancel_only_ahead_of_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let mut ids = Vec::new();
    for start in ["2026-11-03T21:00:00Z", "2026-11-10T21:00:00Z", "2027-02-02T21:00:00Z", "2027-02-09T21:00:00Z"] {
        let booked = office
            .post(
                "/v1/lessons",
                json!({"teacher_id": s.teacher1_id, "student_id": s.students[0], "starts_at": start,
                "duration_minutes": 30, "override_availability": true}),
            )
            .await
            .expect(201);
        ids.push(booked["id"].as_str().unwrap().to_owned());
    }
    let mark = |id: &str| format!("/v1/lessons/{id}/attendance");
    app.as_user(&s.teacher1).post(&mark(&ids[0]), json!({"status": "present"})).await.expect(200);
    app.as_user(&s.teacher1).post(&mark(&ids[2]), json!({"status": "cancelled_by_teacher"})).await.expect(200);
    let parent = app.as_user(&s.parent_a);
    let cancel = json!({"status": "cancelled_by_student"});
    parent.post(&mark(&ids[0]), cancel.clone()).await.problem(409);
    parent.post(&mark(&ids[1]), cancel.clone()).await.problem(409);
    parent.post(&mark(&ids[2]), cancel.clone()).await.problem(409);
    parent.post(&mark(&ids[3]), cancel).await.expect(200);
    let lesson = office.get(&format!("/v1/lessons/{}", ids[0])).await.expect(200);
    assert_eq!(lesson["attendance"], "present", "nothing changed");
}

/// Free-slot searches and dry runs only read: while another transaction holds the write lock
/// (SQLite's single writer), they still answer at once.
async fn reads_do_not_wait_for_a_writer(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let mut writer = app.state.db.begin().await.unwrap();
    cedar::on_tx!(&mut writer, conn => sqlx::query("UPDATE rooms SET capacity = capacity WHERE 1 = 0")
        .execute(&mut **conn).await.map(|_| ()))
    .unwrap();
    let path = format!(
        "/v1/availability?teacher_id={}&from=2026-12-07T00:00:00Z&to=2026-12-15T00:00:00Z&duration_minutes=30",
        s.teacher1_id
    );
    let office = app.as_user(&s.admin);
    let started = std::time::Instant::now();
    let slots = tokio::time::timeout(std::time::Duration::from_secs(5), office.get(&path)).await;
    assert!(slots.is_ok(), "the free-slot search waited for the writer");
    slots.unwrap().expect(200);
    let dry_run = json!({"teacher_id": s.teacher1_id, "student_id": s.students[0], "starts_at": "2027-02-02T21:00:00Z",
        "duration_minutes": 30});
    let report =
        tokio::time::timeout(std::time::Duration::from_secs(5), office.post("/v1/lessons?dry_run=true", dry_run)).await;
    assert!(report.is_ok(), "the dry run waited for the writer");
    report.unwrap().expect(200);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    writer.rollback().await.unwrap();
}

/// A teacher books only their own students, and a substitute's occurrence in another
/// teacher's series never lets them move or remove the rest of it.
async fn teachers_book_and_remove_only_their_own(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let (helene, zoe) = (s.students[0].clone(), s.students[1].clone());
    let lesson = |teacher: &str, student: &str, start: &str| {
        json!({"teacher_id": teacher, "student_id": student, "starts_at": start, "duration_minutes": 30,
            "override_availability": false})
    };
    // Teacher 2 may not book Hélène (teacher 1's student), even as a dry run.
    let theirs = lesson(&s.teacher2_id, &helene, "2027-01-12T21:00:00Z");
    let refused = app.as_user(&s.teacher2).post("/v1/lessons", theirs.clone()).await.problem(422);
    assert_eq!(refused["errors"][0]["field"], "student_id");
    app.as_user(&s.teacher2).post("/v1/lessons?dry_run=true", theirs).await.problem(422);
    let own = lesson(&s.teacher2_id, &zoe, "2027-01-13T21:00:00Z");
    app.as_user(&s.teacher2).post("/v1/lessons?dry_run=true", own).await.expect(200);
    let office = app.as_user(&s.admin);
    // The office books Hélène weekly with teacher 1, and gives one occurrence to teacher 2.
    let mut series = lesson(&s.teacher1_id, &helene, "2027-01-05T21:00:00Z");
    series["recurrence"] = json!({"rrule": "FREQ=WEEKLY;COUNT=4"});
    series["override_availability"] = json!(true);
    let booked = office.post("/v1/lessons", series).await.expect(201);
    let occurrences = booked["occurrences"].as_array().unwrap().clone();
    let substitute = occurrences[1]["id"].as_str().unwrap();
    office
        .patch(
            &format!("/v1/lessons/{substitute}"),
            json!({"teacher_id": s.teacher2_id, "override_availability": true}),
        )
        .await
        .expect(200);
    // Teacher 2 removes "the whole series": only their own occurrence goes.
    let removed = app.as_user(&s.teacher2).delete(&format!("/v1/lessons/{substitute}?scope=series")).await;
    assert_eq!(removed.status, 204);
    let left = office.get(&format!("/v1/lessons?student_id={helene}&from=2027-01-01T00:00:00Z")).await.expect(200);
    let left = left["items"].as_array().unwrap();
    assert_eq!(left.len(), 3, "teacher 1's three lessons stay");
    assert!(left.iter().all(|l| l["teacher_id"] == s.teacher1_id));
}
