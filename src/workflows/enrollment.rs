//! `enrollment`: from a submitted request to scheduled lessons and a welcome email.
//!
//! validate (decision) → options (api) → rank (ai) → route (decision: auto-approve or review)
//! → review → decide (decision) → enroll (action; the slot is re-checked, a taken slot goes
//! back to options) → welcome (action). A rejection declines the request; the reviewer may
//! also turn the proposal into a waitlisting.

use std::time::Duration;

use chrono::{NaiveDate, Timelike, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::ai::AiTask;
use super::engine::{ReviewRequest, Step, StepCtx, StepError, StepResult, Subject, Transition, Workflow};
use crate::app::AppState;
use crate::error::DomainError;
use crate::http::validate::{fold, parse_hhmm};
use crate::people::service as people;
use crate::people::service::Enrollment;
use crate::scheduling::booking::{self, BookingOptions, Exceptions, Parties, Slot};
use crate::time::next_weekday;

pub const NAME: &str = "enrollment";
/// Weekly lessons booked on approval (about a term).
pub const LESSONS_BOOKED: i64 = 12;
/// Occurrences checked for conflicts when searching for a weekly slot.
const WEEKS_CHECKED: i64 = 8;

pub fn workflow() -> Workflow {
    Workflow::new(NAME, "Turns an enrollment request into scheduled lessons, billing and a welcome email.", prepare)
        .step(Step::decision("validate", validate))
        .step(Step::api("options", options))
        .step(Step::ai("rank", rank).timeout(Duration::from_secs(90)))
        .step(Step::decision("route", route))
        .step(Step::review("review", review))
        .step(Step::decision("decide", decide))
        .step(Step::action("enroll", enroll))
        .step(Step::action("welcome", welcome))
        .step(Step::action("decline", decline))
        .step(Step::action("waitlist", waitlist))
}

fn enrollment_id(input: &Value) -> Option<Uuid> {
    input.get("enrollment_id").and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok())
}

async fn prepare(state: AppState, input: Value) -> Result<Subject, DomainError> {
    let id =
        enrollment_id(&input).ok_or_else(|| DomainError::invalid("input.enrollment_id", "must be an enrollment id"))?;
    let mut tx = state.db.begin_read().await?;
    let enrollment = people::load_enrollment(&mut tx, id).await?;
    tx.rollback().await?;
    let enrollment =
        enrollment.ok_or_else(|| DomainError::invalid("input.enrollment_id", "no such enrollment request"))?;
    Ok(Subject { kind: "enrollment", id, family_id: Some(enrollment.family_id), once_key: None })
}

async fn load(cx: &StepCtx) -> Result<Enrollment, StepError> {
    let id = enrollment_id(&cx.input).ok_or_else(|| StepError::Fatal("input has no enrollment_id".into()))?;
    let mut tx = cx.state.db.begin_read().await?;
    let enrollment = people::load_enrollment(&mut tx, id).await.map_err(|e| StepError::Retry(e.to_string()))?;
    tx.rollback().await?;
    enrollment.ok_or_else(|| StepError::Fatal("the enrollment request no longer exists".into()))
}

/// The child's (preferred) first and last name: from the request for a new student, from the
/// student record for an existing one.
async fn student_name(cx: &StepCtx, enrollment: &Enrollment) -> Result<(String, String), StepError> {
    const SQL: &str = "SELECT COALESCE(preferred_name, first_name), last_name FROM students WHERE id = $1";
    Ok(match (&enrollment.student, enrollment.student_id) {
        (Some(d), _) => (d.0.preferred_name.clone().unwrap_or(d.0.first_name.clone()), d.0.last_name.clone()),
        (None, Some(id)) => {
            let row: Option<(String, String)> = crate::on_db!(&cx.state.db, pool => sqlx::query_as(SQL).bind(id)
                .fetch_optional(pool).await)?;
            row.unwrap_or_default()
        }
        (None, None) => (String::new(), String::new()),
    })
}

/// Completeness and plausibility checks; each is reported to the reviewer.
async fn validate(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    if enrollment.status != "submitted" {
        return Ok(Transition::succeed(json!({"skipped": format!("the request is already {}", enrollment.status)})));
    }
    let mut checks = Vec::new();
    let mut check =
        |name: &str, ok: bool, detail: String| checks.push(json!({"check": name, "ok": ok, "detail": detail}));
    check(
        "preferred_times",
        !enrollment.preferred_times.0.is_empty(),
        format!("{} window(s)", enrollment.preferred_times.0.len()),
    );
    check(
        "lesson_minutes",
        matches!(enrollment.lesson_minutes, 30 | 45 | 60),
        format!("{} minutes", enrollment.lesson_minutes),
    );
    let birth = enrollment.student.as_ref().and_then(|d| d.0.birth_date);
    if let Some(birth) = birth {
        let today = Utc::now().date_naive();
        let age = today.years_since(birth).unwrap_or(0);
        check("age", (3..=90).contains(&age), format!("{age} years old"));
    }
    // The same child asked for twice: a student of the family with the same first name.
    let (first, _) = student_name(&cx, &enrollment).await?;
    let students = people::family_students(&cx.state.db, enrollment.family_id).await?;
    let duplicate = match enrollment.student_id {
        None => students.iter().find(|s| !first.is_empty() && fold(&s.first_name) == fold(&first)),
        Some(_) => None,
    };
    match duplicate {
        Some(s) => check(
            "duplicate_student",
            false,
            format!("the family already has {} ({}, {}), student {}", s.first_name, s.instrument, s.status, s.id),
        ),
        None => check("duplicate_student", true, "no student of this family has that name".into()),
    }
    let open = people::open_requests(&cx.state.db, enrollment.family_id, enrollment.id, &enrollment.instrument).await?;
    check("duplicate_request", open == 0, format!("{open} other open request(s) for {}", enrollment.instrument));
    let passed = checks.iter().all(|c| c["ok"] == true);
    Ok(Transition::goto("options", json!({"checks": checks, "passed": passed})))
}

/// Teachers of the instrument with a weekly slot free for the next weeks inside the preferred
/// windows, conflict-checked like a booking.
async fn options(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    let tz = cx.state.settings.timezone;
    let teachers = people::teachers_of(&cx.state.db, &enrollment.instrument).await?;
    let today = crate::time::today(tz);
    let minutes = i64::from(enrollment.lesson_minutes);
    // Only reads: a read transaction, never SQLite's write lock, while searching.
    let mut tx = cx.state.db.begin_read().await?;
    let exceptions = Exceptions::load(&mut tx, today, today + chrono::Duration::weeks(WEEKS_CHECKED + 1))
        .await
        .map_err(|e| StepError::Retry(e.to_string()))?;
    let mut found = Vec::new();
    for teacher in &teachers {
        let (name, load) = (&teacher.name, teacher.active_students);
        for window in &enrollment.preferred_times.0 {
            let (Some(from), Some(to)) = (parse_hhmm(&window.start_time), parse_hhmm(&window.end_time)) else {
                continue;
            };
            let first_date = next_weekday(today, window.weekday);
            // Minutes since midnight, so the search ends at the window's end even when a lesson
            // would run past midnight (a `NaiveTime` would wrap around and loop for ever).
            let minute_of = |t: chrono::NaiveTime| i64::from(t.num_seconds_from_midnight() / 60);
            let (first_minute, last_minute) = (minute_of(from), minute_of(to));
            let mut offset = first_minute;
            let mut per_window = 0;
            while offset + minutes <= last_minute && per_window < 2 {
                let start = from + chrono::Duration::minutes(offset - first_minute);
                let slots = weekly(tz, first_date, start, minutes, WEEKS_CHECKED, teacher.id, enrollment.student_id);
                let conflicts = booking::conflicts(&mut tx, tz, &slots, &[], true, &exceptions)
                    .await
                    .map_err(|e| StepError::Retry(e.to_string()))?;
                // A closure or the end of the term only skips weeks (as on booking); the slot
                // itself is free when nothing else is in the way.
                let (blocking, skipped) = booking::split_conflicts(conflicts);
                if blocking.is_empty() && skipped.len() < slots.len() {
                    found.push(json!({
                        "teacher_id": teacher.id, "teacher": name, "teacher_load": load, "weekday": window.weekday,
                        "start_time": start.format("%H:%M").to_string(), "first_lesson": slots[0].starts_at,
                        "exact": start == from, "minutes_from_preferred": (start - from).num_minutes(),
                    }));
                    per_window += 1;
                }
                offset += 15;
            }
        }
    }
    tx.rollback().await?;
    found.truncate(12);
    Ok(Transition::goto("rank", json!({"options": found, "teachers_considered": teachers.len()})))
}

/// `weeks` weekly slots for the request's student (nil until the student exists).
fn weekly(
    tz: chrono_tz::Tz,
    first: NaiveDate,
    start: chrono::NaiveTime,
    minutes: i64,
    weeks: i64,
    teacher: Uuid,
    student: Option<Uuid>,
) -> Vec<Slot> {
    let parties = Parties { teacher_id: teacher, student_id: student.unwrap_or(Uuid::nil()), room_id: None };
    booking::weekly_slots(tz, first, start, minutes, weeks, parties)
}

pub static RANK: AiTask = AiTask {
    name: "enrollment_recommendation",
    instructions: "You help the office of a music school place a new student. Rank the lesson options (by index) \
        from best to worst for this student: prefer options at the family's preferred time, teachers with fewer \
        students, and a sensible fit with the student's age and experience. Give short reasons an office manager can \
        check (in English), and write one warm welcome paragraph to the family naming the student, in the family's \
        `language` (en: English, fr: French; no prices, no promises about results).",
    schema: rank_schema,
    check: check_rank,
    offline: offline_rank,
    max_tokens: 700,
};

fn rank_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["ranking", "reasons", "welcome_paragraph"],
        "properties": {
            "ranking": {"type": "array", "maxItems": 12, "items": {"type": "integer", "minimum": 0}},
            "reasons": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 300}},
            "welcome_paragraph": {"type": "string", "minLength": 3, "maxLength": 800}
        }
    })
}

/// Every option ranked exactly once.
fn check_rank(answer: &Value, input: &Value) -> Result<(), String> {
    let count = input["options"].as_array().map_or(0, Vec::len);
    let mut ranking: Vec<u64> = answer["ranking"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    ranking.sort();
    if ranking != (0..count as u64).collect::<Vec<_>>() {
        return Err(format!("ranking must list each option index 0..{} exactly once", count.saturating_sub(1)));
    }
    // The paragraph is about this child: it names them (a draft about "your child" or someone
    // else goes back to the model, then to the template).
    if let Some(name) = input["student"].as_str().filter(|n| !n.is_empty())
        && !answer["welcome_paragraph"].as_str().unwrap_or_default().contains(name)
    {
        return Err(format!("welcome_paragraph must name the student, {name}"));
    }
    Ok(())
}

/// Deterministic ranking: exact preferred time first, then closest to it, then the teacher
/// with fewer students; a template welcome paragraph.
fn offline_rank(input: &Value) -> Value {
    let options = input["options"].as_array().cloned().unwrap_or_default();
    let mut order: Vec<usize> = (0..options.len()).collect();
    order.sort_by_key(|&i| {
        let o = &options[i];
        (
            o["exact"] != true,
            o["minutes_from_preferred"].as_i64().unwrap_or(0),
            o["teacher_load"].as_i64().unwrap_or(0),
            i,
        )
    });
    let reasons = match order.first().map(|&i| &options[i]) {
        Some(best) => vec![format!(
            "{} has {} at the family's {} time{}, and teaches {} students.",
            best["teacher"].as_str().unwrap_or("The teacher"),
            best["start_time"].as_str().unwrap_or(""),
            if best["exact"] == true { "preferred" } else { "requested" },
            if best["exact"] == true { "" } else { " window" },
            best["teacher_load"]
        )],
        None => vec!["No teacher of this instrument has a free weekly slot in the preferred times.".to_owned()],
    };
    let name = input["student"].as_str().filter(|n| !n.is_empty());
    let instrument = input["instrument"].as_str().unwrap_or("music");
    let welcome = if input["language"] == "fr" {
        let who = name.unwrap_or("votre enfant");
        format!(
            "Nous sommes ravis d'accueillir {who} dans notre programme de {instrument}. Apportez la musique que vous \
            jouez déjà au premier cours, et n'hésitez pas à nous écrire si vous avez des questions."
        )
    } else {
        let who = name.unwrap_or("your child");
        format!(
            "We are delighted to welcome {who} to our {instrument} program. Bring any music you already play to \
            the first lesson, and do not hesitate to write to us with questions."
        )
    };
    json!({"ranking": order, "reasons": reasons, "welcome_paragraph": welcome})
}

/// Orders the options and drafts the recommendation and welcome paragraph.
async fn rank(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    let options = cx.output("options")["options"].clone();
    let (first, _) = student_name(&cx, &enrollment).await?;
    let language = people::family_language(&cx.state.db, enrollment.family_id).await.map_err(StepError::retry)?;
    let age =
        enrollment.student.as_ref().and_then(|d| d.0.birth_date).and_then(|b| Utc::now().date_naive().years_since(b));
    // Only what the task needs: first name, age, experience, the options (teacher names and
    // times), and the family's language for the welcome paragraph.
    let input = json!({
        "student": first, "language": language, "age": age, "experience": enrollment.experience, "instrument": enrollment.instrument,
        "lesson_minutes": enrollment.lesson_minutes, "preferred_times": enrollment.preferred_times.0, "options": options,
    });
    let outcome = cx.ai(&RANK, &input, true).await?;
    let list = options.as_array().cloned().unwrap_or_default();
    let ranked: Vec<Value> = outcome.output["ranking"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .filter_map(|i| list.get(i as usize).cloned())
        .collect();
    Ok(Transition::goto(
        "route",
        json!({"ranked": ranked, "reasons": outcome.output["reasons"], "welcome_paragraph": outcome.output["welcome_paragraph"],
            "provider": outcome.provider, "model": outcome.model, "fallback_reason": outcome.fallback_reason}),
    ))
}

fn proposal(cx: &StepCtx) -> Value {
    let ranked = cx.output("rank")["ranked"].as_array().map_or(0, Vec::len);
    json!({
        "decision": if ranked > 0 { "enroll" } else { "waitlist" },
        "option": 0,
        "welcome_paragraph": cx.output("rank")["welcome_paragraph"],
    })
}

/// Auto-approve (when enabled) skips review when every check passed and the best option is
/// at the preferred time exactly; the skip is recorded.
async fn route(cx: StepCtx) -> StepResult {
    let passed = cx.output("validate")["passed"] == true;
    let exact = cx.output("rank")["ranked"][0]["exact"] == true;
    if cx.state.settings.enrollment_auto_approve && passed && exact {
        return Ok(Transition::goto(
            "decide",
            json!({"review_skipped": true, "why": "auto-approve: every check passed and the best option is at the preferred time",
                "proposal": proposal(&cx)}),
        ));
    }
    Ok(Transition::goto("review", json!({"review_skipped": false})))
}

async fn review(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    let (first, last) = student_name(&cx, &enrollment).await?;
    let ranked = cx.output("rank")["ranked"].clone();
    let count = ranked.as_array().map_or(0, Vec::len);
    let schema = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["decision", "option", "welcome_paragraph"],
        "properties": {
            "decision": {"type": "string", "enum": ["enroll", "waitlist"]},
            "option": {"type": "integer", "minimum": 0, "maximum": count.saturating_sub(1)},
            "welcome_paragraph": {"type": "string", "minLength": 3, "maxLength": 1500}
        }
    });
    let request = ReviewRequest {
        subject: json!({"kind": "enrollment", "id": enrollment.id, "student": format!("{first} {last}").trim(),
            "family_id": enrollment.family_id, "instrument": enrollment.instrument}),
        proposal: proposal(&cx),
        context: json!({
            "request": {"instrument": enrollment.instrument, "lesson_minutes": enrollment.lesson_minutes,
                "preferred_times": enrollment.preferred_times.0, "experience": enrollment.experience, "notes": enrollment.notes},
            "checks": cx.output("validate")["checks"],
            "options": ranked,
            "reasons": cx.output("rank")["reasons"],
            "drafted_by": {"provider": cx.output("rank")["provider"], "model": cx.output("rank")["model"]},
            "fallback_reason": cx.output("rank")["fallback_reason"],
            "slot_taken_before": cx.output("enroll")["slot_taken"],
            "how_to_decide": "approve (optionally edit option, welcome_paragraph, or decision: waitlist); reject with a reason to decline",
        }),
        schema: Some(schema),
        teacher_id: None,
        on_approve: "decide",
        on_reject: Some("decline"),
    };
    Ok(Transition::review(json!({"proposal": request.proposal}), request))
}

/// The decision to apply: the reviewer's (possibly edited) proposal, or the auto-approved one.
fn decision(cx: &StepCtx) -> Value {
    match cx.output("review").get("decision") {
        Some(_) => cx.output("review").clone(),
        None => json!({"decision": "approved", "proposal": cx.output("route")["proposal"], "decided_by": null}),
    }
}

async fn decide(cx: StepCtx) -> StepResult {
    let decision = decision(&cx);
    let next = if decision["proposal"]["decision"] == "waitlist" { "waitlist" } else { "enroll" };
    Ok(Transition::goto(next, json!({"branch": next})))
}

fn decided_by(cx: &StepCtx) -> Uuid {
    decision(cx)["decided_by"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or(Uuid::nil())
}

/// Creates or activates the student, books the weekly lessons (re-checked now: a slot taken
/// since the review sends the run back to options and a new review), and approves the request,
/// all in the checkpoint's transaction.
async fn enroll(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    if !matches!(enrollment.status.as_str(), "submitted" | "waitlisted") {
        return Ok(Transition::succeed(
            json!({"skipped": format!("the request was {} outside the workflow", enrollment.status)}),
        ));
    }
    let decision = decision(&cx);
    let index = decision["proposal"]["option"].as_u64().unwrap_or(0) as usize;
    let Some(option) = cx.output("rank")["ranked"].get(index).cloned() else {
        return Err(StepError::Fatal(format!("there is no option {index}")));
    };
    let teacher = option["teacher_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or(StepError::Fatal("option without teacher".into()))?;
    let tz = cx.state.settings.timezone;
    let today = crate::time::today(tz);
    let weekday = option["weekday"].as_u64().unwrap_or(1) as u8;
    let start =
        option["start_time"].as_str().and_then(parse_hhmm).ok_or(StepError::Fatal("option without time".into()))?;
    let first = next_weekday(today, weekday);
    let minutes = i64::from(enrollment.lesson_minutes);
    let mut tx = cx.state.db.begin().await?;
    // Through the end of the term it starts in; about a term (12 weeks) without terms.
    let (weeks, rrule) =
        crate::school_year::terms::weekly_span(&mut tx, first, LESSONS_BOOKED).await.map_err(StepError::retry)?;
    let slots = weekly(tz, first, start, minutes, weeks, teacher, enrollment.student_id);
    let exceptions = Exceptions::load(&mut tx, first, first + chrono::Duration::weeks(weeks))
        .await
        .map_err(|e| StepError::Retry(e.to_string()))?;
    let conflicts = booking::conflicts(&mut tx, tz, &slots, &[], true, &exceptions)
        .await
        .map_err(|e| StepError::Retry(e.to_string()))?;
    // Closures only skip occurrences; a double booking or lost availability means the slot is gone.
    let blocking: Vec<_> = conflicts.iter().filter(|c| !matches!(c.kind, "closure" | "outside_term")).collect();
    if !blocking.is_empty() {
        tx.rollback().await?;
        let kinds: Vec<&str> = blocking.iter().map(|c| c.kind).collect();
        return Ok(Transition::goto("options", json!({"slot_taken": true, "option": option, "conflicts": kinds})));
    }
    let skipped: Vec<_> = conflicts.iter().map(|c| c.occurrence_starts_at).collect();
    let by = decided_by(&cx);
    people::transition_enrollment(
        &mut tx,
        enrollment.id,
        &["submitted", "waitlisted"],
        "approved",
        None,
        Some(teacher),
        by,
    )
    .await
    .map_err(StepError::retry)?;
    let first_date = crate::time::local_date(tz, slots[0].starts_at);
    let student = people::ensure_student(&mut tx, &enrollment, "active", Some(teacher), Some(first_date))
        .await
        .map_err(StepError::retry)?;
    people::activate_student(&mut tx, student, teacher, first_date).await.map_err(StepError::retry)?;
    let to_book: Vec<Slot> = slots
        .iter()
        .filter(|s| !skipped.contains(&s.starts_at))
        .map(|slot| Slot { student_id: student, ..slot.clone() })
        .collect();
    let options = BookingOptions { rrule: Some(&rrule), booked_by: Some(by), ..BookingOptions::default() };
    let booked = booking::book(&mut tx, tz, &to_book, options).await.map_err(StepError::retry)?;
    let series = booked.series_id;
    let booked = booked.lessons.len();
    let event = crate::privacy::audit::AuditEvent::new("enrollment.approved").subject("enrollment", enrollment.id);
    crate::privacy::audit::record_tx(
        &mut tx,
        event.details(json!({"workflow_run": cx.run_id, "teacher_id": teacher,
        "student_id": student, "lessons": booked})),
    )
    .await?;
    Ok(Transition::goto(
        "welcome",
        json!({"student_id": student, "teacher_id": teacher, "series_id": series, "lessons": booked,
            "first_lesson": slots[0].starts_at, "teacher": option["teacher"]}),
    )
    .in_tx(tx))
}

/// The welcome email: the template plus the (reviewed) personal paragraph, once.
async fn welcome(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    let enrolled = cx.output("enroll").clone();
    let (first, _) = student_name(&cx, &enrollment).await?;
    let student = first;
    let first_lesson: chrono::DateTime<Utc> =
        serde_json::from_value(enrolled["first_lesson"].clone()).map_err(|e| StepError::Fatal(e.to_string()))?;
    let paragraph = decision(&cx)["proposal"]["welcome_paragraph"].as_str().map(str::to_owned);
    let tz = cx.state.settings.timezone;
    let teacher = enrolled["teacher"].as_str().unwrap_or_default().to_owned();
    let vars = |language: &str| {
        json!({"student": student, "instrument": enrollment.instrument, "teacher": teacher,
            "first_lesson": crate::messaging::when(first_lesson, tz, language), "personal": paragraph})
    };
    let mut tx = cx.state.db.begin().await?;
    let sent = crate::messaging::email_family(
        &mut tx,
        &cx.state.settings,
        enrollment.family_id,
        "welcome",
        vars,
        Some(&format!("welcome:{}", enrollment.id)),
    )
    .await
    .map_err(|e| StepError::Retry(e.to_string()))?;
    Ok(Transition::succeed(json!({"emails": sent})).in_tx(tx))
}

async fn decline(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    let reason = cx.output("review")["reason"].as_str().map(str::to_owned);
    let mut tx = cx.state.db.begin().await?;
    if enrollment.status == "submitted" || enrollment.status == "waitlisted" {
        people::transition_enrollment(
            &mut tx,
            enrollment.id,
            &["submitted", "waitlisted"],
            "declined",
            reason.as_deref(),
            None,
            decided_by(&cx),
        )
        .await
        .map_err(StepError::retry)?;
        people::notify_enrollment(&mut tx, &cx.state, enrollment.id, "enrollment_declined", reason.as_deref())
            .await
            .map_err(StepError::retry)?;
    }
    Ok(Transition::succeed(json!({"declined": true, "reason": reason})).in_tx(tx))
}

async fn waitlist(cx: StepCtx) -> StepResult {
    let enrollment = load(&cx).await?;
    let mut tx = cx.state.db.begin().await?;
    if enrollment.status == "submitted" {
        people::transition_enrollment(
            &mut tx,
            enrollment.id,
            &["submitted"],
            "waitlisted",
            None,
            None,
            decided_by(&cx),
        )
        .await
        .map_err(StepError::retry)?;
        people::ensure_student(&mut tx, &enrollment, "waitlisted", None, None).await.map_err(StepError::retry)?;
        people::notify_enrollment(&mut tx, &cx.state, enrollment.id, "enrollment_waitlisted", None)
            .await
            .map_err(StepError::retry)?;
    }
    Ok(Transition::succeed(json!({"waitlisted": true})).in_tx(tx))
}
