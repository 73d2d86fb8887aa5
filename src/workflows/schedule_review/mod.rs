//! `schedule_review`: once a week, a reviewed proposal that makes the timetable tighter and
//! seats the waitlist (see docs/workflows.md).
//!
//! snapshot (api: the optimizer's instance from Cedar's data) → analyse (api: conflicts and
//! metrics now) → optimize (api: `crate::optimize`, bounded and cancellable) → report (ai: the
//! owner's summary and a note per affected family) → review (approve all moves, a subset via
//! `edits.moves`, or reject) → apply (action: each accepted move re-checked and applied from
//! `week_of` on, waitlisted students booked, one email per family, a task per skipped move —
//! all in the step's one transaction, so a crash applies everything once or nothing).

mod analyse;
mod report;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{Datelike, NaiveDate, NaiveTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::engine::{ReviewRequest, Step, StepCtx, StepError, StepResult, Subject, Transition, Workflow};
use crate::app::AppState;
use crate::error::DomainError;
use crate::jobs::{JobError, Registry, Schedule};
use crate::optimize::{self, AssignmentOut, Model};
use crate::people::service as people;
use crate::scheduling::booking::{self, BookingOptions, Parties, WeeklyPlace};
use crate::tasks::{self, NewTask};
use crate::{on_db, on_tx};
use snapshot::{NO_ROOM, Snapshot};

pub const NAME: &str = "schedule_review";
pub const WEEKLY: &str = "schedule_review.weekly";
const QUEUE: &str = super::engine::QUEUE;
const INPUT_FIELDS: [&str; 3] = ["week_of", "time_limit_secs", "max_moves"];

pub fn workflow() -> Workflow {
    Workflow::new(
        NAME,
        "Reviews the coming week's timetable: conflicts, a tighter timetable with the waitlist seated, reviewed before it applies.",
        prepare,
    )
    .step(Step::api("snapshot", take_snapshot).timeout(Duration::from_secs(120)))
    .step(Step::api("analyse", analyse_now).timeout(Duration::from_secs(120)))
    .step(Step::api("optimize", optimize_week).timeout(Duration::from_secs(700)))
    .step(Step::ai("report", write_report).timeout(Duration::from_secs(600)))
    .step(Step::review("review", review))
    .step(Step::action("apply", apply).timeout(Duration::from_secs(300)))
}

/// The Monday of the week a run is about: the input's week (any date in it), else next week.
fn week_of(input: &Value, tz: chrono_tz::Tz) -> Option<NaiveDate> {
    match input.get("week_of") {
        None | Some(Value::Null) => Some(crate::time::next_weekday(crate::time::today(tz), 1)),
        Some(value) => value.as_str()?.parse().ok().map(|d| crate::time::same_week_weekday(d, 1)),
    }
}

async fn prepare(state: AppState, input: Value) -> Result<Subject, DomainError> {
    let tz = state.settings.timezone;
    if let Some(fields) = input.as_object() {
        if let Some(unknown) = fields.keys().find(|k| !INPUT_FIELDS.contains(&k.as_str())) {
            return Err(DomainError::invalid(
                format!("input.{unknown}"),
                format!("unknown field; known: {}", INPUT_FIELDS.join(", ")),
            ));
        }
    } else if !input.is_null() {
        return Err(DomainError::invalid("input", "must be an object"));
    }
    let week =
        week_of(&input, tz).ok_or_else(|| DomainError::invalid("input.week_of", "must be a date (YYYY-MM-DD)"))?;
    let this_week = crate::time::same_week_weekday(crate::time::today(tz), 1);
    if week < this_week {
        return Err(DomainError::invalid("input.week_of", "must be this week or a later one"));
    }
    for (field, max) in [("time_limit_secs", 600), ("max_moves", 10_000)] {
        match input.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64().is_some_and(|n| n <= max && (field == "max_moves" || n >= 1)) => {}
            Some(_) => {
                let low = if field == "max_moves" { 0 } else { 1 };
                return Err(DomainError::invalid(format!("input.{field}"), format!("must be an integer {low}–{max}")));
            }
        }
    }
    Ok(Subject { kind: "week", id: Uuid::nil(), family_id: None, once_key: Some(format!("{NAME}:{week}")) })
}

fn snapshot_of(cx: &StepCtx) -> Result<Snapshot, StepError> {
    serde_json::from_value(cx.output("snapshot").clone())
        .map_err(|e| StepError::Fatal(format!("the snapshot cannot be read: {e}")))
}

async fn take_snapshot(cx: StepCtx) -> StepResult {
    let week = week_of(&cx.input, cx.state.settings.timezone).ok_or(StepError::Fatal("input has no week".into()))?;
    let snapshot = snapshot::build(&cx.state, week).await?;
    Ok(Transition::goto("analyse", serde_json::to_value(snapshot)?))
}

async fn analyse_now(cx: StepCtx) -> StepResult {
    let snapshot = snapshot_of(&cx)?;
    let conflicts = analyse::conflicts(&cx.state, snapshot.week_of).await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for c in &conflicts {
        *counts.entry(c["kind"].as_str().unwrap_or("other").to_owned()).or_default() += 1;
    }
    let metrics = analyse::metrics(&snapshot, &snapshot.instance.current);
    Ok(Transition::goto("optimize", json!({"conflicts": conflicts, "counts": counts, "metrics": metrics})))
}

/// Runs the optimizer off the async threads; a cancelled run stops it within a quarter second.
async fn optimize_week(cx: StepCtx) -> StepResult {
    let snapshot = snapshot_of(&cx)?;
    let before = cx.output("analyse")["metrics"].clone();
    let model = match Model::from_instance(&snapshot.instance) {
        Ok(model) => model,
        Err(problem) => {
            // The analysis still reaches the owner; only the proposal is empty.
            return Ok(Transition::goto(
                "report",
                json!({"error": problem.to_string(), "moves": [], "before": before, "after": before}),
            ));
        }
    };
    let settings = &cx.state.settings.schedule_review;
    let limit = cx.input["time_limit_secs"].as_u64().unwrap_or(settings.time_limit_secs);
    let max_moves = cx.input["max_moves"].as_u64().map_or(settings.max_moves, |n| n as usize);
    let options = optimize::Options {
        time_limit: Duration::from_secs(limit),
        seed: 1,
        max_moves: Some(max_moves),
        threads: 2,
        iterations: None,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (cancel, db, run) = (cancel.clone(), cx.state.db.clone(), cx.run_id);
        tokio::spawn(async move {
            const STATUS: &str = "SELECT status FROM workflow_runs WHERE id = $1";
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let status: Option<String> =
                    on_db!(&db, pool => sqlx::query_scalar(STATUS).bind(run).fetch_optional(pool).await).ok().flatten();
                if status.as_deref() == Some("cancelled") {
                    cancel.store(true, Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let flag = cancel.clone();
    let outcome = tokio::task::spawn_blocking(move || optimize::optimize(&model, &options, &flag)).await;
    watcher.abort();
    let outcome = outcome.map_err(|e| StepError::Fatal(format!("the optimizer stopped: {e}")))?;
    if cancel.load(Ordering::SeqCst) {
        return Err(StepError::Fatal("the run was cancelled".into()));
    }
    let assignments = &outcome.solution.assignments;
    let moves = moves(&snapshot, assignments);
    let after = analyse::metrics(&snapshot, assignments);
    Ok(Transition::goto(
        "report",
        json!({
            "moves": moves,
            "before": before,
            "after": after,
            "optimizer": {
                "objective_before": outcome.before.objective, "objective_after": outcome.after.objective,
                "utilization_before": outcome.before.utilization_pct, "utilization_after": outcome.after.utilization_pct,
                "gap_minutes_before": outcome.before.gap_minutes, "gap_minutes_after": outcome.after.gap_minutes,
                "moved": outcome.after.moved, "waitlisted_placed": outcome.after.waitlisted_placed,
                "max_moves": max_moves, "time_limit_secs": limit, "wall_ms": outcome.wall.as_millis() as u64,
                "feasible": outcome.after.feasible(),
            },
            "solution": assignments,
        }),
    ))
}

/// "Tuesday 16:30" / "mardi 16 h 30".
fn when(place: &Value, language: &str) -> String {
    let day = place["weekday"].as_u64().unwrap_or(1).clamp(1, 7) as usize - 1;
    let time = place["start_time"].as_str().unwrap_or("");
    if language == "fr" {
        format!("{} {}", crate::time::weekday_name(day, true), time.replace(':', " h "))
    } else {
        format!("{} {time}", crate::time::weekday_name(day, false))
    }
}

/// The differences between the current timetable and the optimizer's, one per lesson.
fn moves(snapshot: &Snapshot, after: &[AssignmentOut]) -> Vec<Value> {
    let before: BTreeMap<&str, &AssignmentOut> =
        snapshot.instance.current.iter().map(|a| (a.student_id.as_str(), a)).collect();
    let place = |a: &AssignmentOut| {
        let room = (!a.room_id.starts_with(NO_ROOM)).then(|| a.room_id.clone());
        json!({"teacher_id": a.teacher_id, "teacher": snapshot.teacher_names.get(&a.teacher_id),
            "room_id": room, "room": room.as_ref().and_then(|r| snapshot.room_names.get(r)),
            "weekday": a.weekday, "start_time": a.start_time})
    };
    let mut out = Vec::new();
    for a in after {
        let Some(item) = snapshot.item(&a.student_id) else { continue };
        let (kind, from) = match before.get(a.student_id.as_str()) {
            Some(b) if b == &a => continue,
            Some(b) if b.teacher_id != a.teacher_id => ("teacher", place(b)),
            Some(b) if b.weekday != a.weekday || b.start_time != a.start_time => ("time", place(b)),
            Some(b) => ("room", place(b)),
            None => ("seat", Value::Null),
        };
        out.push(json!({
            "item": item.key, "student_id": item.student_id, "enrollment_id": item.enrollment_id,
            "series_id": item.series_id, "family_id": item.family_id, "student": item.student,
            "instrument": item.instrument, "minutes": item.minutes, "kind": kind, "from": from, "to": place(a),
        }));
    }
    out
}

async fn write_report(cx: StepCtx) -> StepResult {
    let snapshot = snapshot_of(&cx)?;
    let optimized = cx.output("optimize");
    let moves: Vec<Value> = optimized["moves"].as_array().cloned().unwrap_or_default();
    let mut teachers: Vec<String> =
        moves.iter().filter_map(|m| m["to"]["teacher"].as_str().map(str::to_owned)).collect();
    teachers.sort();
    teachers.dedup();
    // The owner's summary: numbers, teachers and times only — no family's data.
    let input = json!({
        "week_of": snapshot.week_of,
        "before": optimized["before"], "after": optimized["after"],
        "changes": moves.iter().map(|m| json!({"kind": m["kind"], "teacher": m["to"]["teacher"],
            "from": m["from"].get("weekday").map(|_| when(&m["from"], "en")), "to": when(&m["to"], "en")})).collect::<Vec<_>>(),
        "seated": moves.iter().filter(|m| m["kind"] == "seat").count(),
        "teachers": teachers,
        "conflicts": cx.output("analyse")["counts"],
        "optimizer_error": optimized["error"],
    });
    let summary = cx.ai(&report::SUMMARY, &input, false).await?;
    // One note per family whose lessons change day, time or teacher (a room alone goes unnoticed).
    let mut families: BTreeMap<Uuid, Vec<&Value>> = BTreeMap::new();
    for m in moves.iter().filter(|m| m["kind"] != "room") {
        if let Some(family) = m["family_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) {
            families.entry(family).or_default().push(m);
        }
    }
    let mut notes = Vec::new();
    for (family, changes) in families {
        let language = people::family_language(&cx.state.db, family).await.map_err(StepError::retry)?;
        let input = json!({
            "language": language,
            "changes": changes.iter().map(|m| json!({"student": m["student"], "instrument": m["instrument"],
                "teacher": m["to"]["teacher"], "from": m["from"].get("weekday").map(|_| when(&m["from"], &language)),
                "to": when(&m["to"], &language)})).collect::<Vec<_>>(),
        });
        let note = cx.ai_about(&report::FAMILY_NOTE, &input, family).await?;
        notes.push(json!({"family_id": family, "language": language, "note": note.output["note"],
            "provider": note.provider, "fallback_reason": note.fallback_reason}));
    }
    Ok(Transition::goto(
        "review",
        json!({"summary": summary.output["summary"], "provider": summary.provider, "model": summary.model,
            "fallback_reason": summary.fallback_reason, "family_notes": notes}),
    ))
}

fn proposal_schema() -> Value {
    json!({
        "type": "object",
        "required": ["summary", "moves", "family_notes"],
        "properties": {
            "summary": {"type": "string", "maxLength": 5000},
            "moves": {"type": "array", "items": {"type": "object", "required": ["item"],
                "properties": {"item": {"type": "string"}}}},
            "family_notes": {"type": "array", "items": {"type": "object", "required": ["family_id", "note"],
                "properties": {"family_id": {"type": "string"}, "note": {"type": "string", "maxLength": 2000}}}}
        }
    })
}

async fn review(cx: StepCtx) -> StepResult {
    let snapshot = snapshot_of(&cx)?;
    let optimized = cx.output("optimize");
    let reported = cx.output("report");
    let moves = optimized["moves"].clone();
    let count = moves.as_array().map_or(0, Vec::len);
    let request = ReviewRequest {
        subject: json!({"kind": "schedule_review", "week_of": snapshot.week_of, "moves": count,
            "conflicts": cx.output("analyse")["conflicts"].as_array().map_or(0, Vec::len)}),
        proposal: json!({
            "summary": reported["summary"],
            "moves": moves,
            "family_notes": reported["family_notes"].as_array().into_iter().flatten()
                .map(|n| json!({"family_id": n["family_id"], "language": n["language"], "note": n["note"]}))
                .collect::<Vec<_>>(),
        }),
        context: json!({
            "week_of": snapshot.week_of,
            "before": optimized["before"],
            "after": optimized["after"],
            "optimizer": optimized["optimizer"],
            "optimizer_error": optimized["error"],
            "conflicts": cx.output("analyse")["conflicts"],
            "left_out": snapshot.left_out,
            "pinned": snapshot.items.iter().filter(|i| i.pinned.is_some())
                .map(|i| json!({"student": i.student, "student_id": i.student_id, "why": i.pinned})).collect::<Vec<_>>(),
            "drafted_by": {"provider": reported["provider"], "model": reported["model"]},
            "fallback_reason": reported["fallback_reason"],
            "how_to_decide": "approve to apply every move from the week_of on; approve with edits.moves (a subset of \
                the moves, by item) to apply only those; edit family_notes to change what families read; reject to \
                change nothing",
        }),
        schema: Some(proposal_schema()),
        teacher_id: None,
        on_approve: "apply",
        on_reject: None,
    };
    Ok(Transition::review(json!({"moves": count}), request))
}

async fn apply(cx: StepCtx) -> StepResult {
    let snapshot = snapshot_of(&cx)?;
    let tz = cx.state.settings.timezone;
    let decision = cx.output("review");
    let by = decision["decided_by"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let proposed: Vec<Value> = cx.output("optimize")["moves"].as_array().cloned().unwrap_or_default();
    // Only moves of the proposal, named by the reviewer's (possibly edited) list; what they name
    // is applied as proposed.
    let chosen: Vec<String> = decision["proposal"]["moves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["item"].as_str().map(str::to_owned))
        .collect();
    let ignored: Vec<&String> = chosen.iter().filter(|k| !proposed.iter().any(|m| m["item"] == k.as_str())).collect();
    let accepted: Vec<&Value> =
        proposed.iter().filter(|m| m["item"].as_str().is_some_and(|k| chosen.iter().any(|c| c == k))).collect();
    let from = crate::time::at_local(tz, snapshot.week_of, NaiveTime::MIN);

    let mut tx = cx.state.db.begin().await?;
    let mut applied: Vec<&Value> = Vec::new();
    let mut skipped: Vec<(&Value, String)> = Vec::new();
    let (moves, seats): (Vec<&Value>, Vec<&Value>) = accepted.into_iter().partition(|m| m["kind"] != "seat");
    // Moves first, together: lessons may trade places, so each is checked against the timetable
    // without the lessons of the moves still going ahead; a move that does not fit is dropped,
    // and the check repeats, since the lessons it keeps in place may block others.
    let mut going = Vec::new();
    for m in moves {
        match targets(&mut tx, &cx, m, from).await? {
            Ok(lessons) => going.push((m, lessons)),
            Err(why) => skipped.push((m, why)),
        }
    }
    let mut cancel = Vec::new();
    loop {
        let ignore: Vec<Uuid> = going.iter().flat_map(|(_, l)| l.iter().map(|(id, _)| *id)).collect();
        let (mut fits, mut dropped) = (Vec::new(), false);
        cancel.clear();
        for (m, lessons) in going {
            let slots: Vec<booking::Slot> = lessons.iter().map(|(_, s)| s.clone()).collect();
            let found = booking::check(&mut tx, tz, &slots, &ignore, true).await.map_err(StepError::retry)?;
            let (blocking, closed) = booking::split_conflicts(found);
            if blocking.is_empty() {
                cancel.extend(closed);
                fits.push((m, lessons));
            } else {
                skipped.push((m, describe(&blocking, tz)));
                dropped = true;
            }
        }
        going = fits;
        if !dropped {
            break;
        }
    }
    let writes: Vec<(Uuid, booking::Slot)> = going.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
    booking::write_moves(&mut tx, &writes, &cancel).await.map_err(StepError::retry)?;
    applied.extend(going.iter().map(|(m, _)| *m));
    // Then the waitlist, into what the moves left free.
    for m in seats {
        match seat(&mut tx, &cx, &snapshot, m, by).await? {
            Ok(()) => applied.push(m),
            Err(why) => skipped.push((m, why)),
        }
    }

    // One email per family with its new times and the reviewed note.
    let notes: BTreeMap<String, String> = decision["proposal"]["family_notes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n["family_id"].as_str()?.to_owned(), n["note"].as_str()?.to_owned())))
        .collect();
    let mut by_family: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for m in applied.iter().filter(|m| m["kind"] != "room") {
        if let Some(family) = m["family_id"].as_str() {
            by_family.entry(family.to_owned()).or_default().push(m);
        }
    }
    let mut emails = 0;
    for (family, changes) in &by_family {
        let Ok(family_id) = Uuid::parse_str(family) else { continue };
        let note = notes.get(family).cloned();
        let week = snapshot.week_of.to_string();
        let vars = |language: &str| {
            json!({"week_of": week, "note": note,
                "changes": changes.iter().map(|m| json!({"student": m["student"], "instrument": m["instrument"],
                    "teacher": m["to"]["teacher"], "to": when(&m["to"], language),
                    "from": m["from"].get("weekday").map(|_| when(&m["from"], language))})).collect::<Vec<_>>()})
        };
        let key = format!("schedule-change:{}:{family}", cx.run_id);
        emails +=
            crate::messaging::email_family(&mut tx, &cx.state.settings, family_id, "schedule_change", vars, Some(&key))
                .await
                .map_err(StepError::retry)?;
    }
    // The owner decides what to do about each move that did not fit any more.
    for (m, why) in &skipped {
        let task = NewTask {
            title: format!(
                "Schedule change not applied: {} ({}) to {}",
                m["student"].as_str().unwrap_or(""),
                m["instrument"].as_str().unwrap_or(""),
                when(&m["to"], "en")
            ),
            detail: Some(format!("Week of {}: {why}", snapshot.week_of)),
            run_id: Some(cx.run_id),
            subject_type: m["student_id"].as_str().map(|_| "student".to_owned()),
            subject_id: m["student_id"].as_str().and_then(|s| Uuid::parse_str(s).ok()),
            dedupe_key: Some(format!("schedule-skip:{}:{}", cx.run_id, m["item"].as_str().unwrap_or(""))),
            ..NewTask::default()
        };
        tasks::create(&mut tx, task).await.map_err(StepError::retry)?;
    }
    let summary = json!({
        "week_of": snapshot.week_of,
        "applied": applied.iter().map(|m| json!({"item": m["item"], "student_id": m["student_id"], "kind": m["kind"],
            "from": m["from"], "to": m["to"]})).collect::<Vec<_>>(),
        "skipped": skipped.iter().map(|(m, why)| json!({"item": m["item"], "student_id": m["student_id"],
            "kind": m["kind"], "to": m["to"], "reason": why})).collect::<Vec<_>>(),
        "ignored": ignored,
        "emails": emails,
    });
    let event = crate::privacy::audit::AuditEvent::new("schedule_review.applied").subject("workflow_run", cx.run_id);
    let details = json!({"week_of": snapshot.week_of, "applied": applied.len(), "skipped": skipped.len()});
    crate::privacy::audit::record_tx(&mut tx, event.details(details)).await?;
    Ok(Transition::succeed(summary).in_tx(tx))
}

fn uuid(value: &Value) -> Option<Uuid> {
    value.as_str().and_then(|s| Uuid::parse_str(s).ok())
}

/// The place a move goes to, as the booking service takes it.
fn weekly_place(to: &Value) -> Option<WeeklyPlace> {
    Some(WeeklyPlace {
        teacher_id: uuid(&to["teacher_id"])?,
        room_id: uuid(&to["room_id"]),
        weekday: u8::try_from(to["weekday"].as_u64()?).ok()?,
        start_time: crate::time::parse_hhmm(to["start_time"].as_str()?)?,
    })
}

fn describe(conflicts: &[booking::Conflict], tz: chrono_tz::Tz) -> String {
    let mut reasons: Vec<String> = conflicts
        .iter()
        .map(|c| format!("{} ({})", c.detail, c.occurrence_starts_at.with_timezone(&tz).format("%Y-%m-%d")))
        .collect();
    reasons.dedup();
    reasons.truncate(3);
    format!("no longer fits: {}", reasons.join("; "))
}

/// The lessons a move changes, each with its new slot — unless the series has changed since
/// the proposal (it then keeps its new place) or has no lessons left.
async fn targets(
    tx: &mut crate::db::Tx,
    cx: &StepCtx,
    m: &Value,
    from: chrono::DateTime<Utc>,
) -> Result<Result<Vec<(Uuid, booking::Slot)>, String>, StepError> {
    let tz = cx.state.settings.timezone;
    let (Some(to), Some(series)) = (weekly_place(&m["to"]), uuid(&m["series_id"])) else {
        return Ok(Err("the move names no weekly series or place".into()));
    };
    const FIRST: &str = "SELECT teacher_id, room_id, starts_at FROM lessons WHERE series_id = $1 AND starts_at >= $2 \
        AND status = 'scheduled' ORDER BY starts_at LIMIT 1";
    let first: Option<(Uuid, Option<Uuid>, chrono::DateTime<Utc>)> =
        on_tx!(tx, conn => sqlx::query_as(FIRST).bind(series).bind(from).fetch_optional(&mut **conn).await)?;
    let Some((teacher, room, starts_at)) = first else {
        return Ok(Err("the series has no lessons from that week on".into()));
    };
    let local = starts_at.with_timezone(&tz);
    let was = &m["from"];
    let unchanged = Some(teacher) == uuid(&was["teacher_id"])
        && room == uuid(&was["room_id"])
        && Some(u64::from(local.weekday().number_from_monday())) == was["weekday"].as_u64()
        && Some(local.format("%H:%M").to_string().as_str()) == was["start_time"].as_str();
    if !unchanged {
        return Ok(Err("the lesson was changed since the proposal".into()));
    }
    Ok(Ok(booking::series_targets(tx, tz, series, from, to).await.map_err(StepError::retry)?))
}

/// Books a waitlisted student (or request) seated by the proposal: a weekly series from that
/// week on, the student active, the request approved.
async fn seat(
    tx: &mut crate::db::Tx,
    cx: &StepCtx,
    snapshot: &Snapshot,
    m: &Value,
    by: Option<Uuid>,
) -> Result<Result<(), String>, StepError> {
    let tz = cx.state.settings.timezone;
    let Some(to) = weekly_place(&m["to"]) else { return Ok(Err("the move names no place".into())) };
    let minutes = m["minutes"].as_i64().unwrap_or(30);
    let first_date = crate::time::same_week_weekday(snapshot.week_of, to.weekday);
    let enrollment = match uuid(&m["enrollment_id"]) {
        Some(id) => match people::load_enrollment(tx, id).await.map_err(StepError::retry)? {
            Some(e) if e.status.as_str() == "waitlisted" => Some(e),
            _ => return Ok(Err("the request is no longer waitlisted".into())),
        },
        None => None,
    };
    let student = match (&enrollment, uuid(&m["student_id"])) {
        (Some(e), _) => e.student_id,
        (None, Some(id)) => {
            const STATUS: &str = "SELECT status FROM students WHERE id = $1";
            let status: Option<String> =
                on_tx!(tx, conn => sqlx::query_scalar(STATUS).bind(id).fetch_optional(&mut **conn).await)?;
            if status.as_deref() != Some("waitlisted") {
                return Ok(Err("the student is no longer waitlisted".into()));
            }
            Some(id)
        }
        (None, None) => return Ok(Err("no student".into())),
    };
    let parties =
        Parties { teacher_id: to.teacher_id, student_id: student.unwrap_or(Uuid::nil()), room_id: to.room_id };
    let (weeks, rrule) =
        crate::school_year::terms::weekly_span(tx, first_date, crate::workflows::enrollment::LESSONS_BOOKED)
            .await
            .map_err(StepError::retry)?;
    let slots = booking::weekly_slots(tz, first_date, to.start_time, minutes, weeks, parties);
    let conflicts = booking::check(tx, tz, &slots, &[], true).await.map_err(StepError::retry)?;
    let (blocking, skip) = booking::split_conflicts(conflicts);
    if !blocking.is_empty() {
        return Ok(Err(describe(&blocking, tz)));
    }
    let by = by.unwrap_or(Uuid::nil());
    let student = match &enrollment {
        Some(e) => {
            people::transition_enrollment(tx, e.id, &["waitlisted"], "approved", None, Some(to.teacher_id), by)
                .await
                .map_err(StepError::retry)?;
            people::ensure_student(tx, e, "active", Some(to.teacher_id), Some(first_date))
                .await
                .map_err(StepError::retry)?
        }
        None => student.unwrap_or(Uuid::nil()),
    };
    people::activate_student(tx, student, to.teacher_id, first_date).await.map_err(StepError::retry)?;
    let to_book: Vec<_> = slots
        .into_iter()
        .filter(|s| !skip.contains(&s.starts_at))
        .map(|s| booking::Slot { student_id: student, ..s })
        .collect();
    let options = BookingOptions { rrule: Some(&rrule), booked_by: Some(by), ..BookingOptions::default() };
    booking::book(tx, tz, &to_book, options).await.map_err(StepError::retry)?;
    Ok(Ok(()))
}

/// `schedule_review.weekly`: the run for the coming week, once.
pub async fn weekly(state: &AppState) -> Result<(), JobError> {
    let retry = |e: &dyn std::fmt::Display| JobError::Retry(e.to_string());
    let Some(workflow) = state.workflows.get(NAME) else { return Ok(()) };
    let input = json!({"week_of": crate::time::next_weekday(crate::time::today(state.settings.timezone), 1)});
    let subject = workflow.prepare(state, &input).await.map_err(|e| JobError::Permanent(e.to_string()))?;
    let mut tx = state.db.begin().await.map_err(|e| retry(&e))?;
    let key = subject.once_key.clone().unwrap_or_default();
    if super::engine::claim_once_key(&mut tx, &key).await.map_err(|e| retry(&e))?.is_none() {
        super::engine::create_run(
            &mut tx,
            &workflow,
            &input,
            Some(&subject),
            super::engine::Trigger::System,
            Some(&key),
        )
        .await
        .map_err(|e| retry(&e))?;
    }
    tx.commit().await.map_err(|e| retry(&e))?;
    state.job_wakeup.notify_one();
    Ok(())
}

pub fn jobs(registry: Registry<AppState>) -> Registry<AppState> {
    registry.on(QUEUE, WEEKLY, |state: AppState, _job| async move { weekly(&state).await })
}

pub fn schedules(settings: &crate::config::Settings) -> Vec<Schedule> {
    vec![Schedule::new("schedule-review-weekly", QUEUE, WEEKLY, settings.schedule_review.cron.clone())]
}
