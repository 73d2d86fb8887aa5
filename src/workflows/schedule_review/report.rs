//! The AI tasks of the schedule review: the owner's summary (no personal data: counts,
//! teachers, times) and one note per affected family (its children's changes, in its
//! language; an external provider only with the family's consent).

use serde_json::{Value, json};

use crate::workflows::ai::AiTask;

pub static SUMMARY: AiTask = AiTask {
    name: "schedule_review_summary",
    instructions: "You help the owner of a music school review next week's timetable. From the metrics before and \
        after, the proposed changes (by teacher, weekday and time) and the conflicts found, write a short summary: \
        what changes, why (fewer idle gaps, waitlisted students seated), who is affected, and which conflicts need a \
        decision. Use only the numbers given. Plain text, no more than eight sentences.",
    schema: summary_schema,
    check: numbers_from_input,
    offline: offline_summary,
    max_tokens: 600,
};

fn summary_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["summary"],
        "properties": {"summary": {"type": "string", "minLength": 10, "maxLength": 3000}}
    })
}

pub static FAMILY_NOTE: AiTask = AiTask {
    name: "schedule_change_note",
    instructions: "You write a short, warm note to a family of a music school about a change of lesson time, in the \
        language given (en or fr). Name each child by the first name given with their new day and time, say why in \
        one phrase (a better fit in the teacher's day, or a place opening for a waitlisted student), and that they \
        can reply if the new time does not work. Use only the days and times given. Three sentences at most.",
    schema: note_schema,
    check: numbers_from_input,
    offline: offline_note,
    max_tokens: 300,
};

fn note_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["note"],
        "properties": {"note": {"type": "string", "minLength": 10, "maxLength": 1200}}
    })
}

/// Grounding: every number in the answer (times, counts) must come from the input.
fn numbers_from_input(answer: &Value, input: &Value) -> Result<(), String> {
    let text: Vec<&str> = answer.as_object().into_iter().flatten().filter_map(|(_, v)| v.as_str()).collect();
    crate::workflows::ai::numbers_grounded(&text.join(" "), input)
}

fn offline_summary(input: &Value) -> Value {
    let (before, after) = (&input["before"], &input["after"]);
    let changes = input["changes"].as_array().map_or(0, Vec::len);
    let seated = input["seated"].as_u64().unwrap_or(0);
    let moved = changes as u64 - seated.min(changes as u64);
    let conflicts = input["conflicts"]
        .as_object()
        .map(|c| c.iter().map(|(kind, n)| format!("{n} {}", kind.replace('_', " "))).collect::<Vec<_>>().join(", "));
    let mut summary = if changes == 0 {
        format!(
            "No change proposed for the week of {}: the timetable is already as tight as the constraints allow \
            (utilization {}%, {} idle minutes).",
            input["week_of"].as_str().unwrap_or(""),
            before["utilization_percent"],
            before["gap_minutes"]
        )
    } else {
        format!(
            "For the week of {}: {moved} lesson(s) move and {seated} waitlisted student(s) get a place. Utilization \
            goes from {}% to {}%, idle teacher time from {} to {} minutes a week.",
            input["week_of"].as_str().unwrap_or(""),
            before["utilization_percent"],
            after["utilization_percent"],
            before["gap_minutes"],
            after["gap_minutes"]
        )
    };
    if let Some(teachers) = input["teachers"].as_array().filter(|t| !t.is_empty()) {
        let names: Vec<&str> = teachers.iter().filter_map(Value::as_str).collect();
        summary.push_str(&format!(" Teachers affected: {}.", names.join(", ")));
    }
    match conflicts {
        Some(list) if !list.is_empty() => summary.push_str(&format!(" Conflicts to look at: {list}.")),
        _ => summary.push_str(" No conflicts found."),
    }
    json!({"summary": summary})
}

fn offline_note(input: &Value) -> Value {
    let french = input["language"] == "fr";
    let lines: Vec<String> = input["changes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let (student, to) = (c["student"].as_str().unwrap_or(""), c["to"].as_str().unwrap_or(""));
            match (french, c["from"].as_str()) {
                (true, Some(from)) => format!("le cours de {student} passe du {from} au {to}"),
                (true, None) => format!("{student} a une place le {to}"),
                (false, Some(from)) => format!("{student}'s lesson moves from {from} to {to}"),
                (false, None) => format!("{student} has a place on {to}"),
            }
        })
        .collect();
    let note = if french {
        format!(
            "Bonjour, pour mieux organiser la semaine de nos professeurs, {}. Si ce nouvel horaire ne vous convient \
            pas, répondez simplement à ce courriel.",
            lines.join(" ; ")
        )
    } else {
        format!(
            "Hello, to make our teachers' weeks work better, {}. If the new time does not suit you, just reply to \
            this email.",
            lines.join("; ")
        )
    };
    json!({"note": note})
}
