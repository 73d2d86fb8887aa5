//! A waiting review in its domain's terms, and the reviewer's form turned back into the
//! `edits` the review API takes. One shape per kind of proposal: an enrolment's ranked
//! options on a week grid, a payment issue's history and options, a schedule review's moves
//! before and after, a progress report's draft beside its data; anything else as JSON.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::forms::FormData;
use super::i18n::Lang;

/// The kind of review, from its subject (`enrollment`, `invoice`, `schedule_review`,
/// `progress_report`, or anything else shown generically).
pub fn kind(review: &Value) -> &str {
    match review["subject"]["kind"].as_str() {
        Some(k @ ("enrollment" | "invoice" | "schedule_review" | "progress_report")) => k,
        _ => "generic",
    }
}

/// One line for the inbox: what it is, about whom, how long it has waited.
pub fn summary(review: &Value, lang: Lang, now: DateTime<Utc>) -> Value {
    let subject = &review["subject"];
    let labels = lang.labels();
    let kind_label = subject["kind"]
        .as_str()
        .and_then(|k| labels.get(format!("kind_{k}").as_str()).copied())
        .unwrap_or_else(|| review["workflow"].as_str().unwrap_or("review"));
    let about = match kind(review) {
        "enrollment" => {
            format!("{} · {}", subject["student"].as_str().unwrap_or("?"), subject["instrument"].as_str().unwrap_or(""))
        }
        "invoice" => format!(
            "{} · {}",
            subject["number"].as_str().unwrap_or("?"),
            subject["category"].as_str().or(subject["reason"].as_str()).unwrap_or("")
        ),
        "schedule_review" => format!(
            "{} · {} {}",
            subject["week_of"].as_str().unwrap_or("?"),
            subject["moves"].as_i64().unwrap_or(0),
            labels["moves"].to_lowercase()
        ),
        "progress_report" => format!(
            "{} · {} – {}",
            subject["student"].as_str().unwrap_or("?"),
            subject["period_start"].as_str().unwrap_or(""),
            subject["period_end"].as_str().unwrap_or("")
        ),
        _ => subject["name"].as_str().or(subject["student"].as_str()).unwrap_or("").to_owned(),
    };
    let created = review["created_at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok());
    let minutes = created.map_or(0, |c| (now - c.with_timezone(&Utc)).num_minutes());
    json!({
        "id": review["id"], "kind": kind(review), "kind_label": kind_label, "about": about,
        "waited": lang.waited(minutes), "waited_minutes": minutes, "attention": subject["attention"] == true,
    })
}

/// What the review page shows beyond the raw review.
pub fn details(review: &Value, family: Option<&Value>, lang: Lang) -> Value {
    let mut details = match kind(review) {
        "enrollment" => enrollment(review, family, lang),
        "invoice" => payment_issue(review, lang),
        "schedule_review" => schedule(review, lang),
        "progress_report" => json!({
            "metrics": pairs(&review["context"]["metrics"]),
            "notes": review["context"]["notes"].as_array().cloned().unwrap_or_default().iter().map(note_text).collect::<Vec<_>>(),
        }),
        _ => json!({"context_json": serde_json::to_string_pretty(&review["context"]).unwrap_or_default()}),
    };
    details["proposal_json"] = json!(serde_json::to_string_pretty(&review["proposal"]).unwrap_or_default());
    details
}

fn enrollment(review: &Value, family: Option<&Value>, lang: Lang) -> Value {
    let context = &review["context"];
    let request = &context["request"];
    let options: Vec<Value> = context["options"].as_array().cloned().unwrap_or_default();
    let chosen = review["proposal"]["option"].as_u64().unwrap_or(0);
    let described: Vec<Value> = options
        .iter()
        .enumerate()
        .map(|(i, o)| {
            json!({
                "index": i, "number": i + 1, "chosen": i as u64 == chosen,
                "teacher": o["teacher"], "load": o["teacher_load"], "day": lang.weekday(weekday0(&o["weekday"])),
                "start_time": o["start_time"], "first_lesson": o["first_lesson"].as_str().map(|s| &s[..s.len().min(10)]),
                "exact": o["exact"] == true, "minutes_off": o["minutes_from_preferred"].as_i64().unwrap_or(0).abs(),
            })
        })
        .collect();
    let preferred: Vec<Value> = request["preferred_times"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| json!({"day": lang.weekday(weekday0(&w["weekday"])), "from": w["start_time"], "to": w["end_time"]}))
        .collect();
    json!({
        "family": family.map(|f| json!({"name": f["name"], "email": f["email"], "phone": f["phone"],
            "language": f["preferred_language"]})),
        "request": request, "preferred": preferred, "options": described,
        "grid": week_grid(&options, request, lang),
        "checks": context["checks"].as_array().cloned().unwrap_or_default(),
        "reasons": context["reasons"].as_array().cloned().unwrap_or_default(),
        "decision": review["proposal"]["decision"], "welcome": review["proposal"]["welcome_paragraph"],
    })
}

/// ISO weekday (1 = Monday) to an index from 0.
fn weekday0(value: &Value) -> usize {
    (value.as_u64().unwrap_or(1).clamp(1, 7) - 1) as usize
}

fn minutes_of(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    Some(h.parse::<u32>().ok()? * 60 + m.get(..2).unwrap_or(m).parse::<u32>().ok()?)
}

/// A half-hour table of the week: the family's preferred windows shaded, each option's number
/// in the slot where its lesson starts (a table, so screen readers read it as one).
fn week_grid(options: &[Value], request: &Value, lang: Lang) -> Value {
    let windows: Vec<(usize, u32, u32)> = request["preferred_times"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| {
            Some((
                weekday0(&w["weekday"]),
                minutes_of(w["start_time"].as_str()?)?,
                minutes_of(w["end_time"].as_str()?)?,
            ))
        })
        .collect();
    let starts: Vec<(usize, u32, usize)> = options
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((weekday0(&o["weekday"]), minutes_of(o["start_time"].as_str()?)?, i + 1)))
        .collect();
    let days: BTreeSet<usize> = windows.iter().map(|w| w.0).chain(starts.iter().map(|s| s.0)).collect();
    let first = windows.iter().map(|w| w.1).chain(starts.iter().map(|s| s.1)).min().unwrap_or(15 * 60) / 30 * 30;
    let last = windows.iter().map(|w| w.2).chain(starts.iter().map(|s| s.1 + 30)).max().unwrap_or(20 * 60).min(24 * 60);
    let rows: Vec<Value> = (first..last)
        .step_by(30)
        .map(|slot| {
            let cells: Vec<Value> = days
                .iter()
                .map(|&day| {
                    let preferred = windows.iter().any(|w| w.0 == day && w.1 <= slot && slot < w.2);
                    let here: Vec<usize> =
                        starts.iter().filter(|s| s.0 == day && s.1 >= slot && s.1 < slot + 30).map(|s| s.2).collect();
                    json!({"preferred": preferred, "options": here})
                })
                .collect();
            json!({"time": format!("{:02}:{:02}", slot / 60, slot % 60), "cells": cells})
        })
        .collect();
    json!({"days": days.iter().map(|&d| lang.weekday(d)).collect::<Vec<_>>(), "rows": rows})
}

fn payment_issue(review: &Value, lang: Lang) -> Value {
    let context = &review["context"];
    let history = &context["history"];
    let chosen = review["proposal"]["option"].as_u64().unwrap_or(0);
    let options: Vec<Value> = review["proposal"]["options"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, o)| {
            let mut rest = o.clone();
            if let Some(map) = rest.as_object_mut() {
                map.remove("kind");
            }
            let params = pairs(&rest).into_iter().map(|p| format!("{}: {}", p["key"], p["value"].as_str().unwrap_or("")));
            json!({"index": i, "chosen": i as u64 == chosen, "kind": o["kind"].as_str().unwrap_or("?").replace('_', " "),
                "params": params.collect::<Vec<_>>().join(" · ")})
        })
        .collect();
    let cents = |v: &Value| lang.money(v.as_i64().unwrap_or(0));
    let invoice = &context["invoice"];
    json!({
        "invoice": {"number": invoice["number"], "total": cents(&invoice["total_cents"]),
            "balance": cents(&invoice["balance_cents"]), "due_date": invoice["due_date"], "status": invoice["status"]},
        "category": context["classification"]["category"],
        "payments": history["payments"].as_array().into_iter().flatten().map(|p| json!({
            "when": p["at"].as_str().map(|s| &s[..s.len().min(10)]), "amount": cents(&p["amount_cents"]),
            "kind": p["kind"], "method": p["method"], "status": p["status"]})).collect::<Vec<_>>(),
        "failed": history["failed_attempts"].as_array().into_iter().flatten().map(|f| json!({
            "when": f["at"].as_str().map(|s| &s[..s.len().min(10)]), "amount": cents(&f["amount_cents"]),
            "reason": f["decline_code"].as_str().or(f["code"].as_str()).unwrap_or("-")})).collect::<Vec<_>>(),
        "inquiry": context["inquiry"]["message"],
        "options": options,
        "reply": review["proposal"]["reply"],
    })
}

fn schedule(review: &Value, lang: Lang) -> Value {
    let moves: Vec<Value> = review["proposal"]["moves"].as_array().cloned().unwrap_or_default();
    let place = |p: &Value| {
        if p.is_null() {
            return String::from("—");
        }
        let room = p["room"].as_str().map(|r| format!(" · {r}")).unwrap_or_default();
        format!(
            "{} {} · {}{room}",
            lang.weekday(weekday0(&p["weekday"])),
            p["start_time"].as_str().unwrap_or("?"),
            p["teacher"].as_str().unwrap_or("?")
        )
    };
    // Each affected teacher's week: what leaves and what arrives, by day.
    let mut teachers: Vec<(String, Vec<Value>)> = Vec::new();
    for m in &moves {
        for (side, at) in [("before", &m["from"]), ("after", &m["to"])] {
            let Some(name) = at["teacher"].as_str() else { continue };
            let entry = json!({"side": side, "day": lang.weekday(weekday0(&at["weekday"])), "order": weekday0(&at["weekday"]),
                "time": at["start_time"], "student": m["student"], "item": m["item"]});
            match teachers.iter_mut().find(|(n, _)| n == name) {
                Some((_, list)) => list.push(entry),
                None => teachers.push((name.to_owned(), vec![entry])),
            }
        }
    }
    let weeks: Vec<Value> = teachers
        .into_iter()
        .map(|(name, mut entries)| {
            entries.sort_by_key(|e| (e["order"].as_u64(), e["time"].as_str().map(str::to_owned)));
            let days: BTreeSet<(u64, String)> = entries
                .iter()
                .map(|e| (e["order"].as_u64().unwrap_or(0), e["day"].as_str().unwrap_or("").to_owned()))
                .collect();
            let rows: Vec<Value> = days
                .into_iter()
                .map(|(order, day)| {
                    let side = |s: &str| -> Vec<Value> {
                        entries
                            .iter()
                            .filter(|e| e["order"].as_u64() == Some(order) && e["side"] == s)
                            .cloned()
                            .collect()
                    };
                    json!({"day": day, "before": side("before"), "after": side("after")})
                })
                .collect();
            json!({"teacher": name, "rows": rows})
        })
        .collect();
    json!({
        "summary": review["proposal"]["summary"],
        "moves": moves.iter().map(|m| json!({"item": m["item"], "student": m["student"], "instrument": m["instrument"],
            "kind": m["kind"], "from": place(&m["from"]), "to": place(&m["to"])})).collect::<Vec<_>>(),
        "weeks": weeks,
    })
}

/// An object's fields as `{key, value}` for a definition list.
fn pairs(object: &Value) -> Vec<Value> {
    object
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => "—".into(),
                other => other.to_string(),
            };
            json!({"key": k.replace('_', " "), "value": text})
        })
        .collect()
}

fn note_text(note: &Value) -> Value {
    match note {
        Value::String(s) => json!({"date": null, "text": s}),
        other => json!({
            "date": other["date"].as_str().or(other["created_at"].as_str()).map(|s| &s[..s.len().min(10)]),
            "text": other["body"].as_str().or(other["note"].as_str()).or(other["text"].as_str()).unwrap_or(""),
        }),
    }
}

/// The reviewer's edits from the approval form, or why the form cannot be read.
pub fn edits(review: &Value, form: &FormData) -> Result<Value, String> {
    let number = |key: &str| -> Result<Option<u64>, String> {
        form.get(key).map(|v| v.parse::<u64>().map_err(|_| format!("{key} must be a number"))).transpose()
    };
    // The whole proposal as JSON (under "Advanced"), when the reviewer changed it, wins: it
    // reaches what the fields do not (a payment plan's dates and amounts, say).
    if let Some(raw) = form.get("proposal") {
        let parsed: Value = serde_json::from_str(raw).map_err(|e| format!("the proposal is not JSON: {e}"))?;
        if parsed != review["proposal"] {
            return Ok(parsed);
        }
    }
    let mut edits = serde_json::Map::new();
    let text = |key: &str, edits: &mut serde_json::Map<String, Value>| {
        if let Some(value) = form.get(key) {
            edits.insert(key.to_owned(), Value::String(value.replace("\r\n", "\n")));
        }
    };
    match kind(review) {
        "enrollment" => {
            if let Some(option) = number("option")? {
                edits.insert("option".into(), json!(option));
            }
            text("decision", &mut edits);
            text("welcome_paragraph", &mut edits);
        }
        "invoice" => {
            if let Some(option) = number("option")? {
                edits.insert("option".into(), json!(option));
            }
            text("reply", &mut edits);
        }
        "schedule_review" => {
            let chosen: BTreeSet<&str> = form.all("move").collect();
            let moves: Vec<Value> = review["proposal"]["moves"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["item"].as_str().is_some_and(|i| chosen.contains(i)))
                .cloned()
                .collect();
            edits.insert("moves".into(), Value::Array(moves));
        }
        "progress_report" => {
            text("summary", &mut edits);
            text("body", &mut edits);
        }
        _ => {}
    }
    Ok(Value::Object(edits))
}
