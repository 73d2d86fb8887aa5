//! `progress_report`: personalised progress reports, reviewed by each student's teacher, with
//! the students who need attention flagged for the owner.
//!
//! A run for a period (input `{period_start, period_end, student_ids?}`) plans: it compiles
//! and flags every active student (or those named), gives the owner one task listing the
//! flagged ones, and starts one run per student without a report for the period. A student's
//! run: compile (api) → flag (decision) → draft (ai; the report is stored as a draft) →
//! review (the student's teacher, or an admin) → save (action: approved; the family's email
//! is sent shortly after, one per family with each child's report) | discard (rejected).
//! A rerun of a period continues: students with a report are skipped, never redrafted.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Utc};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::ai::AiTask;
use super::engine::{ReviewRequest, Step, StepCtx, StepError, StepResult, Subject, Transition, Workflow};
use crate::app::AppState;
use crate::config::ProgressSettings;
use crate::error::DomainError;
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::{JobError, Registry, Schedule};
use crate::people::service::{self as people, ReportSubject};
use crate::scheduling::AttendanceStats;
use crate::tasks::{self, NewTask};
use crate::{on_db, on_tx};

pub const NAME: &str = "progress_report";
pub const SEND: &str = "progress_reports.send";
pub const MONTHLY: &str = "progress_reports.monthly";
pub const REMIND: &str = "progress_reports.remind";
const QUEUE: &str = super::engine::QUEUE;

pub fn workflow() -> Workflow {
    Workflow::new(NAME, "Drafts progress reports for a period, reviewed by each student's teacher.", prepare)
        .step(Step::decision("plan", plan).timeout(Duration::from_secs(300)))
        .step(Step::api("compile", compile))
        .step(Step::decision("flag", flag))
        .step(Step::ai("draft", draft).timeout(Duration::from_secs(90)))
        .step(Step::review("review", review))
        .step(Step::action("save", save))
        .step(Step::action("discard", discard))
}

fn date(input: &Value, field: &str) -> Option<NaiveDate> {
    input.get(field).and_then(Value::as_str).and_then(|s| s.parse().ok())
}

fn students(input: &Value) -> Option<Vec<Uuid>> {
    input
        .get("student_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).filter_map(|s| Uuid::parse_str(s).ok()).collect())
}

fn period(cx: &StepCtx) -> Result<(NaiveDate, NaiveDate), StepError> {
    match (date(&cx.input, "period_start"), date(&cx.input, "period_end")) {
        (Some(start), Some(end)) => Ok((start, end)),
        _ => Err(StepError::Fatal("input has no period".into())),
    }
}

async fn prepare(state: AppState, input: Value) -> Result<Subject, DomainError> {
    let (Some(start), Some(end)) = (date(&input, "period_start"), date(&input, "period_end")) else {
        return Err(DomainError::invalid("input.period_start", "period_start and period_end must be dates"));
    };
    if end < start || (end - start).num_days() > 366 {
        return Err(DomainError::invalid("input.period_end", "must be on or after period_start, within a year"));
    }
    match students(&input) {
        Some(ids) if ids.len() == 1 => {
            let student = people::student(&state.db, ids[0])
                .await?
                .ok_or_else(|| DomainError::invalid("input.student_ids", "no such student"))?;
            Ok(Subject { kind: "student", id: student.id, family_id: Some(student.family_id), once_key: None })
        }
        Some(ids) if ids.len() != input["student_ids"].as_array().map_or(0, Vec::len) => {
            Err(DomainError::invalid("input.student_ids", "must be student ids"))
        }
        _ => Ok(Subject { kind: "period", id: Uuid::nil(), family_id: None, once_key: None }),
    }
}

/// Start of `date` in the school's zone.
fn midnight(tz: chrono_tz::Tz, date: NaiveDate) -> DateTime<Utc> {
    crate::time::at_local(tz, date, NaiveTime::MIN)
}

/// What a report is built from, for one student.
async fn compile_one(
    state: &AppState,
    student: &ReportSubject,
    start: NaiveDate,
    end: NaiveDate,
) -> Result<Value, StepError> {
    let tz = state.settings.timezone;
    let (from, to) = (midnight(tz, start), midnight(tz, end + chrono::Duration::days(1)));
    let span = (end - start).num_days() + 1;
    let current = crate::scheduling::attendance(&state.db, student.id, from, to).await.map_err(StepError::retry)?;
    let previous = crate::scheduling::attendance(&state.db, student.id, from - chrono::Duration::days(span), from)
        .await
        .map_err(StepError::retry)?;
    let notes = people::notes_between(&state.db, student.id, start, end).await.map_err(StepError::retry)?;
    let last_note = people::last_note_date(&state.db, student.id).await.map_err(StepError::retry)?;
    let overdue = crate::billing::issues::family_overdue(&state.db, student.family_id, crate::time::today(tz))
        .await
        .map_err(StepError::retry)?;
    Ok(json!({
        "student_id": student.id,
        "family_id": student.family_id,
        "first_name": student.preferred_name.clone().unwrap_or(student.first_name.clone()),
        "instrument": student.instrument,
        "level": student.level,
        "teacher_id": student.teacher_id,
        "teacher": student.teacher_name,
        "start_date": student.start_date,
        "language": student.language,
        "metrics": metrics(&current, &previous),
        "notes": notes.iter().map(|n| json!({"date": n.date, "text": n.body, "goals": n.goals})).collect::<Vec<_>>(),
        "last_note": last_note,
        "overdue_invoice": overdue,
    }))
}

fn metrics(current: &AttendanceStats, previous: &AttendanceStats) -> Value {
    json!({
        "lessons": current.lessons,
        "present": current.present,
        "absent": current.absent,
        "cancelled_by_student": current.cancelled_by_student,
        "cancelled_by_teacher": current.cancelled_by_teacher,
        "cancelled_other": current.cancelled_other,
        "attendance_percent": current.attendance_percent(),
        "previous_attendance_percent": previous.attendance_percent(),
        "longest_missed_streak": current.longest_missed_streak,
        "makeup_credits": current.makeup_credits,
        "last_attended": current.last_attended,
    })
}

/// Why a student needs attention, by the settings' thresholds.
fn reasons(compiled: &Value, rules: &ProgressSettings, end: NaiveDate) -> Vec<String> {
    let m = &compiled["metrics"];
    let mut out = Vec::new();
    if let Some(rate) = m["attendance_percent"].as_i64() {
        if rate < rules.min_attendance_percent {
            out.push(format!("attendance {rate}% (below {}%)", rules.min_attendance_percent));
        }
        if let Some(before) = m["previous_attendance_percent"].as_i64()
            && before - rate >= rules.drop_points
        {
            out.push(format!("attendance fell from {before}% to {rate}%"));
        }
    }
    let streak = m["longest_missed_streak"].as_i64().unwrap_or(0);
    if streak >= rules.missed_in_a_row {
        out.push(format!("{streak} lessons in a row cancelled or missed"));
    }
    let weeks = chrono::Duration::weeks(rules.note_weeks);
    let last_note: Option<NaiveDate> = compiled["last_note"].as_str().and_then(|s| s.parse().ok());
    if last_note.is_none_or(|d| end - d > weeks) {
        out.push(format!("no progress note for {} weeks", rules.note_weeks));
    }
    let last_attended: Option<DateTime<Utc>> = m["last_attended"].as_str().and_then(|s| s.parse().ok());
    let lessons = m["lessons"].as_i64().unwrap_or(0);
    if lessons > 0 && last_attended.is_none_or(|at| (end - at.date_naive()).num_days() > rules.gap_days) {
        out.push(format!("no lesson attended in the last {} days", rules.gap_days));
    }
    if compiled["overdue_invoice"] == true {
        out.push("an overdue invoice might end lessons".into());
    }
    out
}

/// A period run: flag every student, one task for the owner, one run per student.
async fn plan(cx: StepCtx) -> StepResult {
    let (start, end) = period(&cx)?;
    let only = students(&cx.input);
    if only.as_ref().is_some_and(|ids| ids.len() == 1) {
        return Ok(Transition::goto("compile", json!({"student_run": true})));
    }
    let subjects = people::report_subjects(&cx.state.db, only.as_deref()).await.map_err(StepError::retry)?;
    const EXISTING: &str = "SELECT student_id FROM progress_reports WHERE period_start = $1 AND period_end = $2";
    let done: Vec<Uuid> =
        on_db!(&cx.state.db, pool => sqlx::query_scalar(EXISTING).bind(start).bind(end).fetch_all(pool).await)?;
    let mut flagged = Vec::new();
    for student in &subjects {
        let compiled = compile_one(&cx.state, student, start, end).await?;
        let why = reasons(&compiled, &cx.state.settings.progress, end);
        if !why.is_empty() {
            flagged.push(format!(
                "{} ({}): {}",
                compiled["first_name"].as_str().unwrap_or(""),
                student.instrument,
                why.join("; ")
            ));
        }
    }
    let mut tx = cx.state.db.begin().await?;
    if !flagged.is_empty() {
        let task = NewTask {
            title: format!("{} student(s) need attention ({start} – {end})", flagged.len()),
            detail: Some(flagged.join("\n")),
            run_id: Some(cx.run_id),
            dedupe_key: Some(format!("progress:{start}:{end}:attention")),
            ..NewTask::default()
        };
        tasks::create(&mut tx, task).await.map_err(StepError::retry)?;
    }
    let mut started = 0;
    for student in subjects.iter().filter(|s| !done.contains(&s.id)) {
        let input = json!({"period_start": start, "period_end": end, "student_ids": [student.id]});
        let job = NewJob::now(QUEUE, super::engine::START, json!({"workflow": NAME, "input": input}))
            .dedupe(format!("progress_report:{}:{start}:{end}", student.id));
        queue::enqueue(&mut tx, job).await?;
        started += 1;
    }
    Ok(Transition::succeed(json!({"students": subjects.len(), "started": started, "already_reported": done.len(),
        "flagged": flagged}))
    .in_tx(tx))
}

async fn compile(cx: StepCtx) -> StepResult {
    let (start, end) = period(&cx)?;
    let id = students(&cx.input).and_then(|ids| ids.first().copied()).ok_or(StepError::Fatal("no student".into()))?;
    let subjects = people::report_subjects(&cx.state.db, Some(&[id])).await.map_err(StepError::retry)?;
    let Some(student) = subjects.first() else {
        return Ok(Transition::succeed(json!({"skipped": "the student is not active"})));
    };
    Ok(Transition::goto("flag", compile_one(&cx.state, student, start, end).await?))
}

async fn flag(cx: StepCtx) -> StepResult {
    let (_, end) = period(&cx)?;
    let why = reasons(cx.output("compile"), &cx.state.settings.progress, end);
    Ok(Transition::goto("draft", json!({"attention": !why.is_empty(), "reasons": why})))
}

pub static REPORT: AiTask = AiTask {
    name: "progress_report",
    instructions: "You write a music student's progress report for their family, in the language given (en or fr). \
        Use only the facts given: the attendance numbers and the teacher's notes. Never invent pieces, achievements, \
        exams or numbers. Cover what was worked on, progress, next goals and practice advice, warmly and briefly. \
        Address the family, name the student by the first name given, and do not mention billing.",
    schema: report_schema,
    check: check_report,
    offline: offline_report,
    max_tokens: 900,
};

fn report_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary", "body"],
        "properties": {
            "summary": {"type": "string", "minLength": 10, "maxLength": 300},
            "body": {"type": "string", "minLength": 40, "maxLength": 4000}
        }
    })
}

/// Grounding: every number in the report must come from the data it was given.
fn check_report(answer: &Value, input: &Value) -> Result<(), String> {
    let text = format!("{} {}", answer["summary"].as_str().unwrap_or(""), answer["body"].as_str().unwrap_or(""));
    super::ai::numbers_grounded(&text, input)
}

/// Templates in English and French from the numbers and the teacher's notes.
fn offline_report(input: &Value) -> Value {
    let french = input["language"] == "fr";
    let name = input["first_name"].as_str().unwrap_or(if french { "votre enfant" } else { "your child" });
    let instrument = input["instrument"].as_str().unwrap_or("music");
    let m = &input["metrics"];
    let (present, lessons) = (m["present"].as_i64().unwrap_or(0), m["lessons"].as_i64().unwrap_or(0));
    let notes: Vec<String> =
        input["notes"].as_array().into_iter().flatten().filter_map(|n| n["text"].as_str()).map(str::to_owned).collect();
    let goals: Vec<String> = input["notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["goals"].as_str())
        .map(str::to_owned)
        .collect();
    let (summary, mut body) = if french {
        (
            format!("{name} a suivi {present} cours de {instrument} sur {lessons} pendant la période."),
            format!("Bonjour,\n\nVoici le bilan de {name} en {instrument} : {present} cours suivis sur {lessons}."),
        )
    } else {
        (
            format!("{name} attended {present} of {lessons} {instrument} lessons this period."),
            format!("Hello,\n\nHere is how {name} is doing in {instrument}: {present} of {lessons} lessons attended."),
        )
    };
    if !notes.is_empty() {
        body.push_str(if french { "\n\nCe que nous avons travaillé :\n" } else { "\n\nWhat we worked on:\n" });
        for note in &notes {
            body.push_str(&format!("- {note}\n"));
        }
    }
    if !goals.is_empty() {
        body.push_str(if french { "\nProchains objectifs : " } else { "\nNext goals: " });
        body.push_str(&goals.join("; "));
        body.push('\n');
    }
    body.push_str(if french {
        "\nUn peu de pratique chaque jour, même courte, fait toute la différence."
    } else {
        "\nA little practice every day, even a short one, makes all the difference."
    });
    json!({"summary": summary, "body": body})
}

/// Drafts the report and stores it (one per student and period: a rerun keeps the first).
async fn draft(cx: StepCtx) -> StepResult {
    let (start, end) = period(&cx)?;
    let compiled = cx.output("compile").clone();
    let student = compiled["student_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let Some(student) = student else { return Err(StepError::Fatal("nothing compiled".into())) };
    // Only what the report needs: first name, instrument, level, numbers, the teacher's notes.
    let input = json!({
        "first_name": compiled["first_name"], "instrument": compiled["instrument"], "level": compiled["level"],
        "language": compiled["language"], "period_start": start, "period_end": end,
        "metrics": {"lessons": compiled["metrics"]["lessons"], "present": compiled["metrics"]["present"],
            "absent": compiled["metrics"]["absent"], "cancelled_by_student": compiled["metrics"]["cancelled_by_student"],
            "cancelled_by_teacher": compiled["metrics"]["cancelled_by_teacher"],
            "attendance_percent": compiled["metrics"]["attendance_percent"]},
        "notes": compiled["notes"],
    });
    let outcome = cx.ai(&REPORT, &input, true).await?;
    let now = Utc::now();
    const INSERT: &str = "INSERT INTO progress_reports (id, student_id, family_id, teacher_id, period_start, period_end, \
        status, language, summary, body, attention, attention_reasons, metrics, run_id, drafted_by, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) \
        ON CONFLICT (student_id, period_start, period_end) DO NOTHING";
    const EXISTING: &str =
        "SELECT id, status FROM progress_reports WHERE student_id = $1 AND period_start = $2 AND period_end = $3";
    let family = compiled["family_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let teacher = compiled["teacher_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let flags = cx.output("flag");
    let mut tx = cx.state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(Uuid::now_v7()).bind(student).bind(family).bind(teacher)
        .bind(start).bind(end).bind(compiled["language"].as_str().unwrap_or("en"))
        .bind(outcome.output["summary"].as_str().unwrap_or_default()).bind(outcome.output["body"].as_str().unwrap_or_default())
        .bind(flags["attention"] == true).bind(SqlJson(&flags["reasons"])).bind(SqlJson(&compiled["metrics"]))
        .bind(cx.run_id).bind(&outcome.provider).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    let (report, status): (Uuid, String) = on_tx!(&mut tx, conn => sqlx::query_as(EXISTING).bind(student).bind(start)
        .bind(end).fetch_one(&mut **conn).await)?;
    if status != "draft" {
        return Ok(Transition::succeed(
            json!({"report_id": report, "skipped": format!("the report is already {status}")}),
        )
        .in_tx(tx));
    }
    Ok(Transition::goto(
        "review",
        json!({"report_id": report, "summary": outcome.output["summary"], "body": outcome.output["body"],
            "provider": outcome.provider, "model": outcome.model, "fallback_reason": outcome.fallback_reason}),
    )
    .in_tx(tx))
}

async fn review(cx: StepCtx) -> StepResult {
    let compiled = cx.output("compile");
    let drafted = cx.output("draft");
    let teacher = compiled["teacher_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let request = ReviewRequest {
        subject: json!({"kind": "progress_report", "id": drafted["report_id"], "student_id": compiled["student_id"],
            "student": compiled["first_name"], "teacher": compiled["teacher"], "period_start": cx.input["period_start"],
            "period_end": cx.input["period_end"], "attention": cx.output("flag")["attention"]}),
        proposal: json!({"summary": drafted["summary"], "body": drafted["body"]}),
        context: json!({
            "metrics": compiled["metrics"],
            "notes": compiled["notes"],
            "attention_reasons": cx.output("flag")["reasons"],
            "language": compiled["language"],
            "drafted_by": {"provider": drafted["provider"], "model": drafted["model"]},
            "fallback_reason": drafted["fallback_reason"],
            "how_to_decide": "approve (optionally editing summary and body) to send it to the family; reject to discard the draft",
        }),
        schema: Some(report_schema()),
        teacher_id: teacher,
        on_approve: "save",
        on_reject: Some("discard"),
    };
    Ok(Transition::review(json!({"proposal": request.proposal}), request))
}

/// Approved: the reviewed text is stored and the family's email goes out shortly (one email
/// per family: siblings' reports approved within the same minutes travel together).
async fn save(cx: StepCtx) -> StepResult {
    let decision = cx.output("review");
    let proposal = &decision["proposal"];
    let report = cx.output("draft")["report_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let Some(report) = report else { return Err(StepError::Fatal("no report".into())) };
    let by = decision["decided_by"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let now = Utc::now();
    const SQL: &str = "UPDATE progress_reports SET summary = $2, body = $3, status = 'approved', approved_by = $4, \
        approved_at = $5, updated_at = $5 WHERE id = $1 AND status = 'draft'";
    let mut tx = cx.state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(report).bind(proposal["summary"].as_str().unwrap_or_default())
        .bind(proposal["body"].as_str().unwrap_or_default()).bind(by).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    let family = cx.output("compile")["family_id"].clone();
    let bucket = now.timestamp() / 60;
    let payload =
        json!({"family_id": family, "period_start": cx.input["period_start"], "period_end": cx.input["period_end"]});
    let job = NewJob::now(QUEUE, SEND, payload)
        .at(now + chrono::Duration::seconds(i64::from(cx.state.settings.progress.send_delay_secs)))
        .dedupe(format!("progress-send:{}:{}:{bucket}", family.as_str().unwrap_or(""), cx.input["period_start"]));
    queue::enqueue(&mut tx, job).await?;
    Ok(Transition::succeed(json!({"report_id": report, "approved": true})).in_tx(tx))
}

async fn discard(cx: StepCtx) -> StepResult {
    let report = cx.output("draft")["report_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let mut tx = cx.state.db.begin().await?;
    const SQL: &str = "DELETE FROM progress_reports WHERE id = $1 AND status = 'draft'";
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(report).execute(&mut **conn).await.map(|_| ()))?;
    Ok(Transition::succeed(json!({"discarded": report, "reason": cx.output("review")["reason"]})).in_tx(tx))
}

fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::Retry(e.to_string())
}

/// `progress_reports.send`: one email to the family with each approved, unsent report of the
/// period, then the reports are `sent`.
pub async fn send(state: &AppState, job: &Job) -> Result<(), JobError> {
    let payload = &job.payload.0;
    let family = payload["family_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let (Some(family), Some(start), Some(end)) = (family, date(payload, "period_start"), date(payload, "period_end"))
    else {
        return Err(JobError::Permanent("payload needs family_id and the period".into()));
    };
    const SQL: &str = "SELECT r.id, COALESCE(s.preferred_name, s.first_name), r.summary, r.body FROM progress_reports r \
        JOIN students s ON s.id = r.student_id WHERE r.family_id = $1 AND r.period_start = $2 AND r.period_end = $3 \
        AND r.status = 'approved' ORDER BY s.first_name, r.id";
    let rows: Vec<(Uuid, String, String, String)> =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(family).bind(start).bind(end).fetch_all(pool).await)
            .map_err(retry)?;
    if rows.is_empty() {
        return Ok(());
    }
    // Signed links: a parent opens the report from the email without signing in.
    let mut reports: Vec<Value> = Vec::with_capacity(rows.len());
    for (id, student, summary, body) in &rows {
        let link = crate::http::signed_links::link(state, "progress-reports", *id, "view").await.map_err(retry)?;
        reports.push(json!({"student": student, "summary": summary, "body": body, "link": link}));
    }
    let period = format!("{start} – {end}");
    let ids: Vec<String> = rows.iter().map(|r| r.0.simple().to_string()).collect();
    let key = format!("progress-report:{}", ids.join(","));
    let mut tx = state.db.begin().await.map_err(retry)?;
    let vars = |_: &str| json!({"period": period, "reports": reports});
    crate::messaging::email_family(&mut tx, &state.settings, family, "progress_report", vars, Some(&key))
        .await
        .map_err(retry)?;
    const SENT: &str = "UPDATE progress_reports SET status = 'sent', sent_at = $2, updated_at = $2 WHERE id = $1 AND status = 'approved'";
    let now = Utc::now();
    for (id, ..) in &rows {
        on_tx!(&mut tx, conn => sqlx::query(SENT).bind(id).bind(now).execute(&mut **conn).await.map(|_| ()))
            .map_err(retry)?;
    }
    tx.commit().await.map_err(retry)?;
    state.job_wakeup.notify_one();
    Ok(())
}

/// `progress_reports.monthly`: on the 1st, a period run for the month that just ended.
pub async fn monthly(state: &AppState) -> Result<(), JobError> {
    if !state.settings.progress.monthly {
        return Ok(());
    }
    let today = crate::time::today(state.settings.timezone);
    let end = today.with_day0(0).map(|first| first - chrono::Duration::days(1)).unwrap_or(today);
    let start = end.with_day0(0).unwrap_or(end);
    let mut tx = state.db.begin().await.map_err(retry)?;
    let input = json!({"period_start": start, "period_end": end});
    let job = NewJob::now(QUEUE, super::engine::START, json!({"workflow": NAME, "input": input}))
        .dedupe(format!("progress_report:period:{start}:{end}"));
    queue::enqueue(&mut tx, job).await.map_err(retry)?;
    tx.commit().await.map_err(retry)?;
    state.job_wakeup.notify_one();
    Ok(())
}

/// `progress_reports.remind`: each teacher with report reviews waiting two days or more gets a
/// task (once a day).
pub async fn remind(state: &AppState) -> Result<(), JobError> {
    const SQL: &str = "SELECT u.id, COUNT(*) FROM reviews r JOIN users u ON u.teacher_id = r.teacher_id \
        AND u.status = 'active' WHERE r.workflow = $1 AND r.status = 'pending' AND r.created_at < $2 GROUP BY u.id";
    let waiting: Vec<(Uuid, i64)> = on_db!(&state.db, pool => sqlx::query_as(SQL).bind(NAME)
        .bind(Utc::now() - chrono::Duration::days(2)).fetch_all(pool).await)
    .map_err(retry)?;
    let today = crate::time::today(state.settings.timezone);
    let mut tx = state.db.begin().await.map_err(retry)?;
    for (user, count) in waiting {
        let task = NewTask {
            title: format!("{count} progress report(s) wait for your review"),
            due_on: Some(today),
            assignee_id: Some(user),
            dedupe_key: Some(format!("progress-remind:{user}:{today}")),
            ..NewTask::default()
        };
        tasks::create(&mut tx, task).await.map_err(retry)?;
    }
    tx.commit().await.map_err(retry)?;
    Ok(())
}

pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry
        .on(QUEUE, SEND, |state: AppState, job| async move { send(&state, &job).await })
        .on(QUEUE, MONTHLY, |state: AppState, _job| async move { monthly(&state).await })
        .on(QUEUE, REMIND, |state: AppState, _job| async move { remind(&state).await })
}

pub fn schedules() -> Vec<Schedule> {
    vec![
        Schedule::new("progress-reports-monthly", QUEUE, MONTHLY, "0 5 1 * *"),
        Schedule::new("progress-reports-remind", QUEUE, REMIND, "0 8 * * *"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_come_from_the_data() {
        let input = json!({"metrics": {"lessons": 4, "present": 3}});
        assert!(check_report(&json!({"summary": "Attended 3 of 4 lessons.", "body": "x"}), &input).is_ok());
        let err = check_report(&json!({"summary": "Passed grade 5!", "body": "x"}), &input).unwrap_err();
        assert!(err.contains('5'), "{err}");
    }

    #[test]
    fn falling_attendance_and_silence_are_flagged() {
        let rules = ProgressSettings {
            monthly: true,
            min_attendance_percent: 75,
            drop_points: 20,
            missed_in_a_row: 3,
            note_weeks: 6,
            gap_days: 21,
            send_delay_secs: 60,
        };
        let end = NaiveDate::from_ymd_opt(2026, 11, 30).unwrap();
        let compiled = json!({"metrics": {"attendance_percent": 50, "previous_attendance_percent": 100,
            "longest_missed_streak": 2, "lessons": 4, "last_attended": "2026-11-20T21:00:00Z"},
            "last_note": "2026-11-25", "overdue_invoice": false});
        assert_eq!(reasons(&compiled, &rules, end), ["attendance 50% (below 75%)", "attendance fell from 100% to 50%"]);
        let fine = json!({"metrics": {"attendance_percent": 100, "previous_attendance_percent": 100,
            "longest_missed_streak": 0, "lessons": 4, "last_attended": "2026-11-24T21:00:00Z"},
            "last_note": "2026-11-25", "overdue_invoice": false});
        assert!(reasons(&fine, &rules, end).is_empty());
    }
}
