//! The booking service the lesson endpoints and the workflows share: moving a weekly series
//! from a date (conflict-checked, all or nothing) and cancelling occurrences.

use cedar::scheduling::booking::{self, Occurrences, WeeklyPlace};
use chrono::{DateTime, NaiveTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::backend_tests;
use crate::common::{Backend, TestApp, spawn_app};
use crate::helpers::{School, school};

backend_tests!(
    a_series_moves_from_a_date_or_not_at_all,
    cancelling_following_occurrences_keeps_them_as_history,
    a_lesson_still_running_at_from_is_listed_and_none_lasts_over_four_hours,
    a_booking_and_its_audit_entry_are_written_together_or_not_at_all,
    the_lesson_list_pages_by_cursor_and_shows_each_family_its_own,
);

fn uuid(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().unwrap()).unwrap()
}

/// Teacher 1 teaches Mondays and Wednesdays 09:00–21:00; Hélène has four Monday lessons at
/// 16:00 Toronto time from 1 March 2027 (across the 14 March change to daylight time).
pub(crate) async fn weekly_series(app: &TestApp, s: &School) -> (Uuid, Vec<Value>) {
    let office = app.as_user(&s.admin);
    let windows = json!({"windows": [{"weekday": 1, "start_time": "09:00", "end_time": "21:00"},
        {"weekday": 3, "start_time": "09:00", "end_time": "21:00"}]});
    office.put(&format!("/v1/teachers/{}/availability", s.teacher1_id), windows).await.expect(200);
    let booked = office
        .post("/v1/lessons", json!({"teacher_id": s.teacher1_id, "student_id": s.students[0],
            "starts_at": "2027-03-01T21:00:00Z", "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=4"}}))
        .await
        .expect(201);
    let occurrences = booked["occurrences"].as_array().unwrap().clone();
    (uuid(&occurrences[0]["series_id"]), occurrences)
}

async fn lessons_of(app: &TestApp, s: &School) -> Vec<Value> {
    let path = format!("/v1/lessons?student_id={}&from=2027-02-01T00:00:00Z&to=2027-05-01T00:00:00Z", s.students[0]);
    app.as_user(&s.admin).get(&path).await.expect(200)["items"].as_array().unwrap().clone()
}

fn starts(lessons: &[Value]) -> Vec<&str> {
    lessons.iter().map(|l| l["starts_at"].as_str().unwrap()).collect()
}

async fn a_series_moves_from_a_date_or_not_at_all(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let (series, occurrences) = weekly_series(&app, &s).await;
    let tz = app.state.settings.timezone;
    let from: DateTime<Utc> = occurrences[1]["starts_at"].as_str().unwrap().parse().unwrap();
    let wednesday_5pm = WeeklyPlace {
        teacher_id: Uuid::parse_str(&s.teacher1_id).unwrap(),
        room_id: None,
        weekday: 3,
        start_time: NaiveTime::from_hms_opt(17, 0, 0).unwrap(),
    };

    // Zoë already has Wednesday 17:00 with teacher 1 in the third week: the move collides.
    let office = app.as_user(&s.admin);
    office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[1],
            "starts_at": "2027-03-17T21:00:00Z", "duration_minutes": 30}),
        )
        .await
        .expect(201);
    let mut tx = app.state.db.begin().await.unwrap();
    let refused = booking::move_series(&mut tx, tz, series, from, wednesday_5pm).await.unwrap();
    tx.rollback().await.unwrap();
    let conflicts = refused.expect_err("the third week collides");
    assert_eq!(conflicts.iter().map(|c| c.kind).collect::<Vec<_>>(), ["teacher"]);
    assert_eq!(
        starts(&lessons_of(&app, &s).await),
        ["2027-03-01T21:00:00Z", "2027-03-08T21:00:00Z", "2027-03-15T20:00:00Z", "2027-03-22T20:00:00Z"],
        "nothing moved"
    );

    // At 18:00 it fits: the first lesson stays, the others move to Wednesdays, same local time
    // on both sides of the daylight-saving change.
    let six_pm = WeeklyPlace { start_time: NaiveTime::from_hms_opt(18, 0, 0).unwrap(), ..wednesday_5pm };
    let mut tx = app.state.db.begin().await.unwrap();
    let moved = booking::move_series(&mut tx, tz, series, from, six_pm).await.unwrap().expect("no conflicts");
    tx.commit().await.unwrap();
    assert_eq!(moved.len(), 3);
    assert_eq!(
        starts(&lessons_of(&app, &s).await),
        ["2027-03-01T21:00:00Z", "2027-03-10T23:00:00Z", "2027-03-17T22:00:00Z", "2027-03-24T22:00:00Z"]
    );
}

async fn cancelling_following_occurrences_keeps_them_as_history(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let (series, occurrences) = weekly_series(&app, &s).await;
    let from: DateTime<Utc> = occurrences[2]["starts_at"].as_str().unwrap().parse().unwrap();
    let mut tx = app.state.db.begin().await.unwrap();
    assert_eq!(booking::cancel(&mut tx, Occurrences::Following { series_id: series, from }).await.unwrap(), 2);
    tx.commit().await.unwrap();
    let statuses: Vec<Value> = lessons_of(&app, &s).await.iter().map(|l| l["status"].clone()).collect();
    assert_eq!(statuses, ["scheduled", "scheduled", "cancelled", "cancelled"]);

    // Cancelling again changes nothing; the freed slot can be booked by someone else.
    let mut tx = app.state.db.begin().await.unwrap();
    assert_eq!(booking::cancel(&mut tx, Occurrences::Following { series_id: series, from }).await.unwrap(), 0);
    tx.commit().await.unwrap();
    app.as_user(&s.admin)
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[1],
            "starts_at": occurrences[2]["starts_at"], "duration_minutes": 30}),
        )
        .await
        .expect(201);
}

/// The week view and the conflict check bound their index range with `starts_at > from - 4 h`:
/// a four-hour lesson that began before `from` is still found, and the database refuses a
/// longer one however it is written.
async fn a_lesson_still_running_at_from_is_listed_and_none_lasts_over_four_hours(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let long = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0],
            "starts_at": "2027-03-01T21:00:00Z", "duration_minutes": 240, "override_availability": true}),
        )
        .await
        .expect(201);
    let id = long["occurrences"][0]["id"].as_str().unwrap().to_owned();
    let listed = |from: &str| format!("/v1/lessons?teacher_id={}&from={from}&to=2027-03-03T00:00:00Z", s.teacher1_id);
    let page = office.get(&listed("2027-03-02T00:59:00Z")).await.expect(200);
    assert_eq!(page["items"][0]["id"], id.as_str(), "ends at 01:00, so running at 00:59");
    let page = office.get(&listed("2027-03-02T01:00:00Z")).await.expect(200);
    assert_eq!(page["items"], json!([]));
    // A second booking overlapping its last minute is a conflict.
    let clash = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[1],
            "starts_at": "2027-03-02T00:45:00Z", "duration_minutes": 30, "override_availability": true}),
        )
        .await
        .problem(409);
    assert_eq!(clash["conflicts"][0]["lesson_id"], id.as_str(), "{clash:#}");
    let db = &app.state.db;
    let lesson = Uuid::parse_str(&id).unwrap();
    let five_hours: DateTime<Utc> = "2027-03-02T02:00:00Z".parse().unwrap();
    let stretched = cedar::on_db!(db, pool => sqlx::query("UPDATE lessons SET ends_at = $2 WHERE id = $1")
        .bind(lesson).bind(five_hours).execute(pool).await.map(|_| ()));
    assert!(stretched.unwrap_err().to_string().contains("lessons_length"));
}

/// On PostgreSQL a plain booking is one statement (lessons, series and audit entry); this
/// checks all three land together, and that a refused booking writes none of them.
async fn a_booking_and_its_audit_entry_are_written_together_or_not_at_all(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let created = |subject: Uuid| format!("/v1/audit-log?action=lesson.created&subject_id={subject}");
    let room = office.post("/v1/rooms", json!({"name": "Studio Chopin", "capacity": 2})).await.expect(201);
    let room_id = room["id"].as_str().unwrap();

    let single = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher1_id, "student_id": s.students[0], "room_id": room_id,
            "starts_at": "2027-03-02T21:00:00Z", "duration_minutes": 45, "notes": "bring the Czerny"}),
        )
        .await
        .expect(201);
    assert_eq!(single["occurrences"].as_array().unwrap().len(), 1);
    assert_eq!(single["ends_at"], "2027-03-02T21:45:00Z");
    assert_eq!(single["notes"], "bring the Czerny");
    assert_eq!(single["room_id"], room_id);
    assert!(single["series_id"].is_null());
    let entries = office.get(&created(uuid(&single["id"]))).await.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["subject_type"], "lesson");
    assert_eq!(entries[0]["details"]["occurrences"], 1);

    let series = office
        .post("/v1/lessons", json!({"teacher_id": s.teacher1_id, "student_id": s.students[1],
            "starts_at": "2027-03-03T21:00:00Z", "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=3"}}))
        .await
        .expect(201);
    let occurrences = series["occurrences"].as_array().unwrap();
    assert_eq!(starts(occurrences), ["2027-03-03T21:00:00Z", "2027-03-10T21:00:00Z", "2027-03-17T20:00:00Z"]);
    let series_id = uuid(&occurrences[0]["series_id"]);
    assert!(occurrences.iter().all(|o| uuid(&o["series_id"]) == series_id));
    let entries = office.get(&created(series_id)).await.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["subject_type"], "lesson_series");
    assert_eq!(entries[0]["details"]["occurrences"], 3);

    // Refused: a double booking of the room (409), an unknown student (422). Nothing written.
    let all_created = "/v1/audit-log?action=lesson.created";
    let before = office.get(all_created).await.expect(200)["items"].as_array().unwrap().len();
    let clash = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher2_id, "student_id": s.students[2], "room_id": room_id,
            "starts_at": "2027-03-02T21:30:00Z", "duration_minutes": 30}),
        )
        .await
        .expect(409);
    assert_eq!(clash["conflicts"][0]["kind"], "room");
    assert_eq!(clash["conflicts"][0]["lesson_id"], single["id"]);
    let missing = office
        .post(
            "/v1/lessons",
            json!({"teacher_id": s.teacher2_id, "student_id": Uuid::now_v7(),
            "starts_at": "2027-03-04T21:00:00Z", "duration_minutes": 30}),
        )
        .await
        .expect(422);
    assert!(missing["errors"].to_string().contains("student_id"), "{missing}");
    assert_eq!(office.get(all_created).await.expect(200)["items"].as_array().unwrap().len(), before);
    let path = format!("/v1/lessons?from=2027-03-01T00:00:00Z&to=2027-03-05T00:00:00Z&teacher_id={}", s.teacher2_id);
    assert!(office.get(&path).await.expect(200)["items"].as_array().unwrap().is_empty());
}

/// `GET /v1/lessons` pages with `limit` and the `next_cursor` it returns: every lesson once,
/// in time order, each listed exactly as the booking returned it; a cursor it did not issue is
/// a 422 naming `cursor`; a parent sees their own child's lessons and another family none.
async fn the_lesson_list_pages_by_cursor_and_shows_each_family_its_own(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let (_, occurrences) = weekly_series(&app, &s).await;
    let office = app.as_user(&s.admin);
    let path = format!("/v1/lessons?teacher_id={}&limit=3", s.teacher1_id);
    let first = office.get(&path).await.expect(200);
    assert_eq!(first["items"].as_array().unwrap(), &occurrences[..3]);
    let cursor = first["next_cursor"].as_str().expect("a cursor to the fourth lesson");
    let again = office.get(&path).await.expect(200);
    assert_eq!(again, first, "the same request lists the same page");
    let second = office.get(&format!("{path}&cursor={cursor}")).await.expect(200);
    assert_eq!(second["items"].as_array().unwrap(), &occurrences[3..]);
    assert_eq!(second["next_cursor"], Value::Null);

    let bad = office.get(&format!("{path}&cursor=not-a-cursor")).await.problem(422);
    assert!(bad.to_string().contains("cursor"), "{bad}");

    let own = app.as_user(&s.parent_a).get(&format!("/v1/lessons?teacher_id={}", s.teacher1_id)).await.expect(200);
    assert_eq!(own["items"].as_array().unwrap(), &occurrences);
    let other = app.as_user(&s.parent_b).get(&format!("/v1/lessons?teacher_id={}", s.teacher1_id)).await.expect(200);
    assert_eq!(other, json!({"items": [], "next_cursor": null}));
}
