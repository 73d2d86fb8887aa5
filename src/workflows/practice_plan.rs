//! `practice_plan`: the demo workflow, small enough to show every step kind. From a student's
//! recent progress notes it drafts a week's practice plan (AI, or Cedar's offline rules), asks
//! the student's teacher or an admin to approve or edit it, and files the approved plan as a
//! progress note.
//!
//! gather (api) → draft (ai; fails → template) → route (decision) → review → save (action)

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use super::ai::AiTask;
use super::engine::{ReviewRequest, Step, StepCtx, StepError, StepResult, Subject, Transition, Workflow};
use crate::app::AppState;
use crate::error::DomainError;
use crate::people::service as people;
use crate::privacy::audit::{self, AuditEvent};

pub const NAME: &str = "practice_plan";

pub fn workflow() -> Workflow {
    Workflow::new(
        NAME,
        "Drafts a week's practice plan from a student's progress notes; a teacher approves it.",
        prepare,
    )
    .step(Step::api("gather", gather))
    .step(Step::ai("draft", draft).timeout(Duration::from_secs(90)).fallback("template"))
    .step(Step::action("template", template))
    .step(Step::decision("route", route))
    .step(Step::review("review", review))
    .step(Step::action("save", save))
}

/// Input `{student_id}`: the student must exist.
async fn prepare(state: AppState, input: Value) -> Result<Subject, DomainError> {
    let id = input
        .get("student_id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| DomainError::invalid("input.student_id", "must be a student id"))?;
    match crate::people::service::student(&state.db, id).await?.map(|s| s.family_id) {
        Some(family_id) => Ok(Subject { kind: "student", id, family_id: Some(family_id), once_key: None }),
        None => Err(DomainError::invalid("input.student_id", "no such student")),
    }
}

fn student_id(cx: &StepCtx) -> Result<Uuid, StepError> {
    cx.input["student_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| StepError::Fatal("input has no student_id".into()))
}

/// The student and their five latest progress notes.
async fn gather(cx: StepCtx) -> StepResult {
    let id = student_id(&cx)?;
    let Some(student) = people::student(&cx.state.db, id).await? else {
        return Err(StepError::Fatal("the student no longer exists".into()));
    };
    let people::StudentBrief { first_name, preferred_name, instrument, status, teacher_id, .. } = student;
    let notes: Vec<Value> = people::recent_notes(&cx.state.db, id, 5)
        .await?
        .into_iter()
        .map(|n| json!({"date": n.date, "body": n.body, "goals": n.goals}))
        .collect();
    Ok(Transition::goto(
        "draft",
        json!({
            "student_id": id,
            "name": preferred_name.unwrap_or(first_name),
            "instrument": instrument,
            "status": status,
            "teacher_id": teacher_id,
            "recent_notes": notes,
        }),
    ))
}

pub static PLAN: AiTask = AiTask {
    name: "practice_plan",
    instructions: "You are the assistant of a music school. From a student's recent lesson notes, write a \
        one-week home practice plan: one focus sentence, one to five concrete goals, minutes of practice per day \
        suited to the student, and a short encouraging message to the student. Use only the notes given.",
    schema: plan_schema,
    check: check_plan,
    offline: offline_plan,
    max_tokens: 800,
};

fn plan_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["focus", "goals", "minutes_per_day", "message"],
        "properties": {
            "focus": {"type": "string", "minLength": 3, "maxLength": 300},
            "goals": {"type": "array", "minItems": 1, "maxItems": 5, "items": {"type": "string", "minLength": 3, "maxLength": 200}},
            "minutes_per_day": {"type": "integer", "minimum": 5, "maximum": 120},
            "message": {"type": "string", "minLength": 3, "maxLength": 1200}
        }
    })
}

/// Business rules the schema cannot say.
fn check_plan(plan: &Value, _input: &Value) -> Result<(), String> {
    let goals: Vec<String> =
        plan["goals"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_lowercase).collect();
    let mut unique = goals.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != goals.len() {
        return Err("goals repeat each other".into());
    }
    Ok(())
}

/// The offline provider: goals from the techniques the notes mention, a time by instrument.
fn offline_plan(input: &Value) -> Value {
    let name = input["name"].as_str().unwrap_or("there");
    let instrument = input["instrument"].as_str().unwrap_or("your instrument");
    let notes: String = input["recent_notes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| [n["body"].as_str().unwrap_or_default(), n["goals"].as_str().unwrap_or_default()])
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase();
    const TOPICS: &[(&str, &str)] = &[
        ("scale", "Play this week's scales slowly and evenly, hands separately then together"),
        ("sight", "Sight-read one short new piece each day"),
        ("rhythm", "Clap and count the rhythm of the tricky bars before playing them"),
        ("posture", "Check posture and hand position at the start of every session"),
        ("dynamic", "Practise the dynamics: make the loud and soft passages clearly different"),
        ("memor", "Memorise four bars a day of the current piece"),
        ("tempo", "Use a metronome: start slower than comfortable and raise the tempo gradually"),
        ("bow", "Open-string bowing exercises for a straight, even sound"),
        ("breath", "Long-tone breathing exercises before playing"),
    ];
    let mut goals: Vec<&str> = TOPICS.iter().filter(|(word, _)| notes.contains(word)).map(|(_, goal)| *goal).collect();
    goals.truncate(4);
    if goals.is_empty() {
        goals.push("Warm up with five minutes of technique before the pieces");
        goals.push("Play the current piece through once a day, then repeat the hardest passage three times");
    }
    let minutes = match instrument {
        "voice" => 15,
        "piano" | "violin" | "cello" => 25,
        _ => 20,
    };
    json!({
        "focus": format!("Steady, daily {instrument} practice built on this week's lesson"),
        "goals": goals,
        "minutes_per_day": minutes,
        "message": format!("Hi {name}! Short, regular practice beats one long session. Enjoy this week's music!"),
    })
}

/// Only the fields the task needs: first or preferred name, instrument, the notes.
async fn draft(cx: StepCtx) -> StepResult {
    let gathered = cx.output("gather");
    let input = json!({
        "name": gathered["name"],
        "instrument": gathered["instrument"],
        "recent_notes": gathered["recent_notes"],
    });
    let outcome = cx.ai(&PLAN, &input, true).await?;
    Ok(Transition::goto("route", serde_json::to_value(outcome)?))
}

/// Reached when drafting failed for good: the offline plan, flagged for the reviewer.
async fn template(cx: StepCtx) -> StepResult {
    let gathered = cx.output("gather");
    let plan = offline_plan(gathered);
    let why = cx.output("draft")["error"].as_str().unwrap_or("drafting failed").to_owned();
    Ok(Transition::goto(
        "route",
        json!({"output": plan, "provider": "offline", "model": "template", "fallback_reason": why}),
    ))
}

/// Inactive students get no plan; everyone else's plan goes to review.
async fn route(cx: StepCtx) -> StepResult {
    if cx.output("gather")["status"] != "active" {
        return Ok(Transition::succeed(json!({"branch": "end", "reason": "the student is not active"})));
    }
    Ok(Transition::goto("review", json!({"branch": "review"})))
}

fn drafted(cx: &StepCtx) -> &Value {
    match cx.output("draft").get("output") {
        Some(_) => cx.output("draft"),
        None => cx.output("template"),
    }
}

async fn review(cx: StepCtx) -> StepResult {
    let gathered = cx.output("gather").clone();
    let draft = drafted(&cx).clone();
    let teacher_id = gathered["teacher_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let request = ReviewRequest {
        subject: json!({"kind": "student", "id": gathered["student_id"], "name": gathered["name"],
            "instrument": gathered["instrument"]}),
        proposal: draft["output"].clone(),
        context: json!({
            "recent_notes": gathered["recent_notes"],
            "drafted_by": {"provider": draft["provider"], "model": draft["model"]},
            "fallback_reason": draft["fallback_reason"],
        }),
        schema: Some(plan_schema()),
        teacher_id,
        on_approve: "save",
        on_reject: None,
    };
    Ok(Transition::review(json!({"proposal": draft["output"]}), request))
}

/// Files the approved plan as a progress note, in the checkpoint's transaction.
async fn save(cx: StepCtx) -> StepResult {
    let id = student_id(&cx)?;
    let decision = cx.output("review");
    let plan = &decision["proposal"];
    let author = decision["decided_by"].as_str().and_then(|s| Uuid::parse_str(s).ok()).unwrap_or(Uuid::nil());
    let teacher = cx.output("gather")["teacher_id"].as_str().and_then(|s| Uuid::parse_str(s).ok());
    let goals: Vec<&str> = plan["goals"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let body = format!(
        "Practice plan: {}\n\n{}\n\nDaily practice: {} minutes.\n\n{}",
        plan["focus"].as_str().unwrap_or_default(),
        goals.iter().map(|g| format!("- {g}")).collect::<Vec<_>>().join("\n"),
        plan["minutes_per_day"],
        plan["message"].as_str().unwrap_or_default()
    );
    let today = crate::time::today(cx.state.settings.timezone);
    let goals = goals.join("; ");
    let mut tx = cx.state.db.begin().await?;
    let note = people::NewNote {
        student_id: id,
        teacher_id: teacher,
        author_id: Some(author),
        date: today,
        body: &body,
        pieces: json!([]),
        goals: Some(&goals),
    };
    let note_id = people::add_note(&mut tx, note).await?;
    let event = AuditEvent::new("progress_note.created").subject("student", id);
    audit::record_tx(&mut tx, event.details(json!({"workflow_run": cx.run_id, "note_id": note_id}))).await?;
    Ok(Transition::succeed(json!({"note_id": note_id})).in_tx(tx))
}
