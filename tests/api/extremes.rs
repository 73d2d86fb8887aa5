//! Inputs at the edges of their types — durations of 2^63 minutes, years ±262,142, NUL bytes,
//! huge page sizes — get a clear 4xx problem and change nothing; never a 500 or a panic.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::common::{Backend, spawn_app};
use crate::helpers::school;

async fn extreme_inputs_are_client_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = school(&app).await;
    let office = app.as_user(&s.admin);
    let (teacher, student) = (s.teacher1_id.clone(), s.students[0].clone());
    let far = "+262142-12-31T23:59:59Z";
    let before = "-262143-01-01T00:00:00Z";
    let bodies: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/v1/lessons".into(),
            json!({"teacher_id": teacher, "student_id": student,
            "starts_at": "2027-03-01T21:00:00Z", "duration_minutes": i64::MAX}),
        ),
        (
            "POST",
            "/v1/lessons".into(),
            json!({"teacher_id": teacher, "student_id": student,
            "starts_at": "2027-03-01T21:00:00Z", "duration_minutes": i64::MIN}),
        ),
        (
            "POST",
            "/v1/lessons".into(),
            json!({"teacher_id": teacher, "student_id": student,
            "starts_at": far, "duration_minutes": 30}),
        ),
        (
            "POST",
            "/v1/lessons".into(),
            json!({"teacher_id": teacher, "student_id": student,
            "starts_at": before, "duration_minutes": 30}),
        ),
        (
            "POST",
            "/v1/lessons".into(),
            json!({"teacher_id": teacher, "student_id": student,
            "starts_at": far, "duration_minutes": 30, "recurrence": {"rrule": "FREQ=WEEKLY;COUNT=52"}}),
        ),
        (
            "POST",
            "/v1/lessons".into(),
            json!({"teacher_id": teacher, "student_id": student,
            "starts_at": "2027-03-01T21:00:00Z", "ends_at": far}),
        ),
        (
            "POST",
            "/v1/calendar-exceptions".into(),
            json!({"kind": "closure", "name": "x",
            "starts_on": "+262142-12-31", "ends_on": "+262142-12-31"}),
        ),
        (
            "POST",
            "/v1/enrollments".into(),
            json!({"family_id": s.family_a, "student_id": student,
            "instrument": "piano", "lesson_minutes": i64::MAX, "preferred_times": []}),
        ),
        ("POST", "/v1/tasks".into(), json!({"title": "x", "due_on": "+262142-12-31"})),
        ("POST", "/v1/billing/runs".into(), json!({"month": "+262142-12"})),
        ("POST", "/v1/billing/runs".into(), json!({"month": "262142-12"})),
        ("POST", "/v1/progress-reports".into(), json!({"month": "262142-12"})),
        (
            "POST",
            "/v1/tuition-rates".into(),
            json!({"lesson_minutes": i64::MAX, "amount_cents": i64::MAX, "name": "x"}),
        ),
        ("POST", "/v1/payments".into(), json!({"family_id": s.family_a, "amount_cents": i64::MAX, "method": "cash"})),
    ];
    for (method, path, body) in bodies {
        let response = match method {
            "POST" => office.post(&path, body.clone()).await,
            _ => unreachable!(),
        };
        let status = response.status;
        assert!((400..500).contains(&status), "{method} {path} {body} → {status}: {}", response.body);
    }
    let queries = [
        format!("/v1/availability?teacher_id={teacher}&from={far}&to={far}&duration_minutes=30"),
        format!(
            "/v1/availability?teacher_id={teacher}&from=2027-03-01T00:00:00Z&to=2027-03-08T00:00:00Z&duration_minutes={}",
            i64::MAX
        ),
        format!("/v1/availability?teacher_id={teacher}&from={before}&to=2027-03-08T00:00:00Z&duration_minutes=30"),
        format!("/v1/lessons?from={before}&to={far}"),
        "/v1/lessons?from=%2B262142-12-31T23:59:59Z".into(),
        "/v1/students?limit=18446744073709551616".into(),
        "/v1/students?limit=-1".into(),
        "/v1/audit-log?from=%2B262142-12-31T23:59:59Z".into(),
        "/v1/ai/usage?month=262142-12".into(),
        "/v1/invoices?month=262142-12".into(),
        "/v1/calendars/%00.ics".into(),
    ];
    for path in queries {
        let response = office.get(&path).await;
        let status = response.status;
        assert!(status < 500, "GET {path} → {status}: {}", response.body);
    }
}

backend_tests!(extreme_inputs_are_client_errors);
