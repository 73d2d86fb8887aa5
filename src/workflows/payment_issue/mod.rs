//! `payment_issue`: a failed card payment, a dispute, an overdue invoice or a family's
//! question, resolved with a drafted answer, ranked options Cedar can carry out, and
//! follow-up tasks.
//!
//! merge (decision: a second trigger for the same invoice and reason joins the open run) →
//! gather (api) → classify (decision; AI for free-text inquiries) → propose (ai: the reply in
//! the family's language and the ranking of the options) → route (decision: auto-resolve or
//! review) → review → act (action: the chosen option, the reply by email and in the billing
//! thread, tasks, a follow-up check) | close (rejected).

use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use serde_json::{Value, json};
use uuid::Uuid;

use super::engine::{ReviewRequest, Step, StepCtx, StepError, StepResult, Subject, Transition, Workflow};
use crate::app::AppState;
use crate::billing::inquiries::{self, InquiryStatus};
use crate::billing::issues::{self, InvoiceBrief};
use crate::domain::Cents;
use crate::error::DomainError;
use crate::on_db;
use crate::people::service as people;
use crate::tasks::{self, NewTask};

mod drafting;

use drafting::{CLASSIFY, PROPOSE, plan};

pub const NAME: &str = issues::WORKFLOW;

/// Why a run started.
const REASONS: &[&str] = &["payment_failed", "dispute", "inquiry", "overdue"];

/// What the issue is, as the office would name it.
pub(super) const CATEGORIES: &[&str] = &[
    "card_declined",
    "insufficient_funds",
    "expired_card",
    "authentication_required",
    "dispute",
    "question_about_charge",
    "hardship",
    "already_paid",
    "unpaid",
];

/// What Cedar can do about it.
const OPTION_KINDS: &[&str] = &[
    "retry_card",
    "send_payment_instructions",
    "payment_plan",
    "waive_late_fee",
    "record_manual_payment",
    "correct_invoice",
    "pause_autopay",
    "escalate",
];

pub fn workflow() -> Workflow {
    Workflow::new(NAME, "Resolves a failed payment, dispute, overdue invoice or billing question.", prepare)
        .step(Step::decision("merge", merge))
        .step(Step::api("gather", gather))
        .step(Step::decision("classify", classify).timeout(Duration::from_secs(90)))
        .step(Step::ai("propose", propose).timeout(Duration::from_secs(90)))
        .step(Step::decision("route", route))
        .step(Step::review("review", review))
        .step(Step::action("act", act))
        .step(Step::action("close", close))
}

fn uuid_field(input: &Value, field: &str) -> Option<Uuid> {
    input.get(field).and_then(Value::as_str).and_then(|s| Uuid::parse_str(s).ok())
}

async fn prepare(state: AppState, input: Value) -> Result<Subject, DomainError> {
    let id = uuid_field(&input, "invoice_id")
        .ok_or_else(|| DomainError::invalid("input.invoice_id", "must be an invoice id"))?;
    let reason = input.get("reason").and_then(Value::as_str).unwrap_or_default();
    if !REASONS.contains(&reason) {
        return Err(DomainError::invalid("input.reason", format!("must be one of: {}", REASONS.join(", "))));
    }
    let invoice = issues::invoice(&state.db, id)
        .await?
        .ok_or_else(|| DomainError::invalid("input.invoice_id", "no such invoice"))?;
    Ok(Subject { kind: "invoice", id, family_id: Some(invoice.family_id), once_key: None })
}

async fn load(cx: &StepCtx) -> Result<InvoiceBrief, StepError> {
    let id = uuid_field(&cx.input, "invoice_id").ok_or_else(|| StepError::Fatal("input has no invoice_id".into()))?;
    issues::invoice(&cx.state.db, id)
        .await
        .map_err(StepError::retry)?
        .ok_or_else(|| StepError::Fatal("the invoice no longer exists".into()))
}

fn reason(cx: &StepCtx) -> &str {
    cx.input["reason"].as_str().unwrap_or("overdue")
}

/// One open run per invoice and reason: a later run hands its trigger to the earlier one.
async fn merge(cx: StepCtx) -> StepResult {
    const OPEN: &str = "SELECT id, input FROM workflow_runs WHERE workflow = $1 AND subject_id = $2 AND id < $3 \
        AND status IN ('pending', 'running', 'waiting_for_review') ORDER BY id";
    let invoice =
        uuid_field(&cx.input, "invoice_id").ok_or_else(|| StepError::Fatal("input has no invoice_id".into()))?;
    let open: Vec<(Uuid, sqlx::types::Json<Value>)> = on_db!(&cx.state.db, pool => sqlx::query_as(OPEN).bind(NAME)
        .bind(invoice).bind(cx.run_id).fetch_all(pool).await)?;
    let earlier = open.iter().find(|(_, input)| input.0["reason"] == cx.input["reason"]).map(|(id, _)| *id);
    let Some(earlier) = earlier else {
        return Ok(Transition::goto("gather", json!({"merged_into": null})));
    };
    let mut tx = cx.state.db.begin().await?;
    if let Some(inquiry) = uuid_field(&cx.input, "inquiry_id") {
        inquiries::attach(&mut tx, inquiry, earlier).await.map_err(StepError::retry)?;
    }
    Ok(Transition::succeed(json!({"merged_into": earlier, "trigger": cx.input})).in_tx(tx))
}

/// The family's billing history, the inquiry and the billing conversation, the lessons of the
/// invoice's period.
async fn gather(cx: StepCtx) -> StepResult {
    let invoice = load(&cx).await?;
    let history = issues::history(&cx.state.db, invoice.family_id).await.map_err(StepError::retry)?;
    let inquiry = match uuid_field(&cx.input, "inquiry_id") {
        Some(id) => inquiries::find(&cx.state.db, id).await.map_err(StepError::retry)?,
        None => None,
    };
    let tz = cx.state.settings.timezone;
    let (from, to) = (
        crate::time::at_local(tz, invoice.period_start, chrono::NaiveTime::MIN),
        crate::time::at_local(tz, invoice.period_end + chrono::Duration::days(1), chrono::NaiveTime::MIN),
    );
    let lessons = crate::scheduling::family_lesson_summary(&cx.state.db, invoice.family_id, from, to)
        .await
        .map_err(StepError::retry)?;
    let thread =
        crate::messaging::billing_messages(&cx.state.db, invoice.family_id, 10).await.map_err(StepError::retry)?;
    const PREVIOUS: &str = "SELECT status, context FROM workflow_runs WHERE workflow = $1 AND family_id = $2 AND id <> $3 \
        AND status IN ('succeeded', 'failed', 'cancelled') ORDER BY id DESC LIMIT 5";
    let previous: Vec<(String, Option<sqlx::types::Json<Value>>)> = on_db!(&cx.state.db, pool => sqlx::query_as(PREVIOUS)
        .bind(NAME).bind(invoice.family_id).bind(cx.run_id).fetch_all(pool).await)?;
    let language = people::family_language(&cx.state.db, invoice.family_id).await.map_err(StepError::retry)?;
    Ok(Transition::goto(
        "classify",
        json!({
            "invoice": {"id": invoice.id, "number": invoice.number, "status": invoice.status,
                "total_cents": invoice.total_cents, "paid_cents": invoice.amount_paid_cents,
                "balance_cents": invoice.balance(), "due_date": invoice.due_date, "late_fee_applied": invoice.late_fee_applied,
                "period_start": invoice.period_start, "period_end": invoice.period_end},
            "history": history,
            "inquiry": inquiry.map(|i| json!({"id": i.id, "message": i.message, "at": i.created_at})),
            "lessons": lessons,
            "thread": thread.iter().map(|(from_family, body, at)| json!({"from_family": from_family,
                "body": body.chars().take(1000).collect::<String>(), "at": at})).collect::<Vec<_>>(),
            "previous_runs": previous.iter().map(|(status, context)| json!({"status": status,
                "category": context.as_ref().map(|c| c.0["classify"]["category"].clone()),
                "option": context.as_ref().map(|c| c.0["act"]["option"].clone())})).collect::<Vec<_>>(),
            "language": language,
        }),
    ))
}

/// The decline code of the payment attempt that started the run (or the latest one).
fn decline(cx: &StepCtx) -> (Option<String>, Option<String>) {
    let attempts = cx.output("gather")["history"]["failed_attempts"].as_array().cloned().unwrap_or_default();
    let intent = cx.input["payment_intent_id"].as_str();
    let attempt =
        attempts.iter().find(|a| intent.is_some() && a["payment_intent"].as_str() == intent).or(attempts.first());
    let text = |field: &str| attempt.and_then(|a| a[field].as_str()).map(str::to_owned);
    (text("decline_code"), text("code"))
}

/// Rules first: the reason and the card's decline code name most issues for certain; a
/// family's own words go to the AI (or the offline keyword rules).
async fn classify(cx: StepCtx) -> StepResult {
    let (decline_code, code) = decline(&cx);
    let by_rule = match reason(&cx) {
        "dispute" => Some("dispute"),
        "payment_failed" => Some(match (decline_code.as_deref(), code.as_deref()) {
            (Some("insufficient_funds"), _) => "insufficient_funds",
            (Some("expired_card"), _) | (_, Some("expired_card")) => "expired_card",
            (_, Some("authentication_required")) | (Some("authentication_required"), _) => "authentication_required",
            _ => "card_declined",
        }),
        "overdue" => Some("unpaid"),
        _ => None,
    };
    if let Some(category) = by_rule {
        return Ok(Transition::goto(
            "propose",
            json!({"category": category, "certain": true, "by": "rules", "decline_code": decline_code, "code": code}),
        ));
    }
    let gathered = cx.output("gather");
    let input = json!({
        "message": gathered["inquiry"]["message"],
        "balance_cents": gathered["invoice"]["balance_cents"],
        "payments": gathered["history"]["payments"],
        "failed_attempts": gathered["history"]["failed_attempts"],
    });
    let outcome = cx.ai(&CLASSIFY, &input, true).await?;
    Ok(Transition::goto(
        "propose",
        json!({"category": outcome.output["category"], "certain": false, "by": outcome.provider,
            "evidence": outcome.output["evidence"], "fallback_reason": outcome.fallback_reason}),
    ))
}

/// The actions Cedar can take in this situation, with their parameters; the AI only ranks
/// them and writes the reply, so no amount or date comes from a model.
fn options(cx: &StepCtx, category: &str) -> Vec<Value> {
    let gathered = cx.output("gather");
    let balance = Cents(gathered["invoice"]["balance_cents"].as_i64().unwrap_or(0));
    let today = crate::time::today(cx.state.settings.timezone);
    let autopay = gathered["history"]["autopay"] == true;
    let card_known = autopay || gathered["history"]["stripe_customer"] == true;
    let stripe = cx.state.settings.billing.stripe.is_some();
    let mut out = Vec::new();
    let card_problem = matches!(category, "card_declined" | "insufficient_funds" | "authentication_required");
    if stripe && card_known && card_problem && balance.is_positive() {
        // Insufficient funds: retry after the next payday-ish Friday; otherwise in three days.
        let days = if category == "insufficient_funds" {
            (i64::from(chrono::Weekday::Fri.num_days_from_monday()) - i64::from(today.weekday().num_days_from_monday()))
                .rem_euclid(7)
                .max(3)
        } else {
            3
        };
        out.push(json!({"kind": "retry_card", "on": today + chrono::Duration::days(days)}));
    }
    if balance.is_positive() && category != "already_paid" {
        out.push(json!({"kind": "send_payment_instructions"}));
    }
    if balance >= Cents(4_000) && category != "already_paid" {
        out.push(json!({"kind": "payment_plan", "instalments": plan(balance, today, 3)}));
    }
    if gathered["invoice"]["late_fee_applied"] == true {
        out.push(json!({"kind": "waive_late_fee"}));
    }
    if category == "already_paid" && balance.is_positive() {
        out.push(json!({"kind": "record_manual_payment", "amount_cents": balance, "method": "e_transfer",
            "reference": "reported by the family"}));
    }
    if matches!(category, "question_about_charge" | "dispute") && balance.is_positive() {
        out.push(json!({"kind": "correct_invoice", "credit_cents": 0, "description": "Correction"}));
    }
    if autopay && matches!(category, "card_declined" | "expired_card" | "insufficient_funds" | "dispute") {
        out.push(json!({"kind": "pause_autopay"}));
    }
    out.push(json!({"kind": "escalate"}));
    out
}

/// The options, ranked, and the drafted reply.
async fn propose(cx: StepCtx) -> StepResult {
    let category = cx.output("classify")["category"].as_str().unwrap_or("unpaid").to_owned();
    let options = options(&cx, &category);
    let gathered = cx.output("gather");
    // Amounts, dates, codes and the family's own message: no names, addresses or card details.
    let input = json!({
        "category": category,
        "language": gathered["language"],
        "invoice_number": gathered["invoice"]["number"],
        "balance_cents": gathered["invoice"]["balance_cents"],
        "due_date": gathered["invoice"]["due_date"],
        "late_fee_applied": gathered["invoice"]["late_fee_applied"],
        "decline_code": cx.output("classify")["decline_code"],
        "message": gathered["inquiry"]["message"],
        "previous_runs": gathered["previous_runs"],
        "options": options,
    });
    let outcome = cx.ai(&PROPOSE, &input, true).await?;
    let ranked: Vec<Value> = outcome.output["ranking"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .filter_map(|i| options.get(i as usize).cloned())
        .collect();
    Ok(Transition::goto(
        "route",
        json!({"options": ranked, "reply": outcome.output["reply"], "provider": outcome.provider,
            "model": outcome.model, "fallback_reason": outcome.fallback_reason}),
    ))
}

fn proposal(cx: &StepCtx) -> Value {
    json!({"option": 0, "reply": cx.output("propose")["reply"], "options": cx.output("propose")["options"]})
}

/// Auto-resolution (when enabled): a certain insufficient-funds decline, the first for this
/// invoice, whose best option is a card retry, is acted on without review; the skip is recorded.
async fn route(cx: StepCtx) -> StepResult {
    let classified = cx.output("classify");
    let invoice = &cx.output("gather")["invoice"]["id"];
    let attempts = cx.output("gather")["history"]["failed_attempts"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|f| &f["invoice_id"] == invoice).count());
    let first_retry = cx.output("propose")["options"][0]["kind"] == "retry_card";
    if cx.state.settings.payment_issue_auto_resolve
        && classified["certain"] == true
        && classified["category"] == "insufficient_funds"
        && attempts <= 1
        && first_retry
    {
        return Ok(Transition::goto(
            "act",
            json!({"review_skipped": true, "why": "auto-resolve: first insufficient-funds decline, retry the card",
                "proposal": proposal(&cx)}),
        ));
    }
    Ok(Transition::goto("review", json!({"review_skipped": false})))
}

async fn review(cx: StepCtx) -> StepResult {
    let gathered = cx.output("gather");
    let options = cx.output("propose")["options"].clone();
    let count = options.as_array().map_or(0, Vec::len);
    let schema = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["option", "reply", "options"],
        "properties": {
            "option": {"type": "integer", "minimum": 0, "maximum": count.saturating_sub(1)},
            "reply": {"type": "string", "minLength": 1, "maxLength": 3000},
            "options": {"type": "array", "minItems": count, "maxItems": count, "items": {
                "type": "object", "required": ["kind"],
                "properties": {"kind": {"type": "string", "enum": OPTION_KINDS}}
            }}
        }
    });
    let request = ReviewRequest {
        subject: json!({"kind": "invoice", "id": gathered["invoice"]["id"], "number": gathered["invoice"]["number"],
            "family_id": cx.family_id, "reason": reason(&cx), "category": cx.output("classify")["category"]}),
        proposal: proposal(&cx),
        context: json!({
            "invoice": gathered["invoice"],
            "history": gathered["history"],
            "inquiry": gathered["inquiry"],
            "thread": gathered["thread"],
            "lessons": gathered["lessons"],
            "previous_runs": gathered["previous_runs"],
            "classification": cx.output("classify"),
            "drafted_by": {"provider": cx.output("propose")["provider"], "model": cx.output("propose")["model"]},
            "fallback_reason": cx.output("propose")["fallback_reason"],
            "how_to_decide": "approve to carry out options[option] and send the reply (edit option, reply, or the \
                chosen option's parameters: plan dates and amounts, credit_cents, retry date); reject to close without \
                action",
        }),
        schema: Some(schema),
        teacher_id: None,
        on_approve: "act",
        on_reject: Some("close"),
    };
    Ok(Transition::review(json!({"proposal": request.proposal}), request))
}

/// The decision to apply: the reviewer's (possibly edited) proposal, or the auto-resolved one.
fn decision(cx: &StepCtx) -> Value {
    match cx.output("review").get("decision") {
        Some(_) => cx.output("review").clone(),
        None => json!({"decision": "approved", "proposal": cx.output("route")["proposal"], "decided_by": null}),
    }
}

fn decided_by(cx: &StepCtx) -> Option<Uuid> {
    decision(cx)["decided_by"].as_str().and_then(|s| Uuid::parse_str(s).ok())
}

fn date(value: &Value, field: &str) -> Result<NaiveDate, StepError> {
    value[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| StepError::Fatal(format!("the option needs a date in {field}")))
}

fn cents(value: &Value, field: &str) -> Result<Cents, StepError> {
    value[field].as_i64().map(Cents).ok_or_else(|| StepError::Fatal(format!("the option needs an amount in {field}")))
}

/// Carries out the chosen option, sends the reply (email and billing thread), creates the
/// follow-up tasks and schedules the follow-up check — all in the checkpoint's transaction, so
/// a crash repeats nothing that committed and loses nothing that did not.
async fn act(cx: StepCtx) -> StepResult {
    let invoice = load(&cx).await?;
    let decision = decision(&cx);
    let proposal = &decision["proposal"];
    let index = proposal["option"].as_u64().unwrap_or(0) as usize;
    let option =
        proposal["options"].get(index).cloned().ok_or_else(|| StepError::Fatal(format!("no option {index}")))?;
    let kind = option["kind"].as_str().unwrap_or_default().to_owned();
    let reply = proposal["reply"].as_str().unwrap_or_default().trim().to_owned();
    let tz = cx.state.settings.timezone;
    let today = crate::time::today(tz);
    let by = decided_by(&cx);
    let number = invoice.number.clone();
    let task = |title: String, due_on: Option<NaiveDate>, key: &str| NewTask {
        title,
        due_on,
        subject_type: Some("invoice".into()),
        subject_id: Some(invoice.id),
        run_id: Some(cx.run_id),
        dedupe_key: Some(format!("run:{}:{key}", cx.run_id)),
        ..NewTask::default()
    };
    let refused = |e: DomainError| match e {
        DomainError::Internal(_) | DomainError::Unavailable(_) => StepError::retry(e),
        other => StepError::Fatal(format!("the chosen option cannot be carried out: {other}")),
    };
    let mut tx = cx.state.db.begin().await?;
    let mut tasks_created = Vec::new();
    let mut follow_up = Some(today + chrono::Duration::days(7));
    let mut done = json!({});
    match kind.as_str() {
        "retry_card" => {
            let on = date(&option, "on")?;
            let method = cx.input["payment_method"].as_str();
            issues::schedule_retry(&mut tx, tz, invoice.id, cx.run_id, method, on).await.map_err(refused)?;
            tasks_created.push(task(format!("Check the card retry for {number} on {on}"), Some(on), "retry"));
            follow_up = Some(on + chrono::Duration::days(3));
            done = json!({"retry_on": on});
        }
        "payment_plan" => {
            let mut instalments = Vec::new();
            for item in option["instalments"].as_array().into_iter().flatten() {
                instalments.push((date(item, "due_on")?, cents(item, "amount_cents")?));
            }
            let plan = issues::create_plan(&mut tx, tz, &invoice, cx.run_id, &instalments).await.map_err(refused)?;
            let count = instalments.len();
            for (i, (due_on, amount)) in instalments.iter().enumerate() {
                let title = format!(
                    "Check instalment {} of {count} for {number} ({}) paid by {due_on}",
                    i + 1,
                    amount.format_cad()
                );
                tasks_created.push(task(title, Some(*due_on), &format!("instalment-{}", i + 1)));
            }
            follow_up = instalments.last().map(|(due, _)| *due + chrono::Duration::days(3));
            done = json!({"plan_id": plan, "instalments": count});
        }
        "waive_late_fee" => {
            let waived = issues::waive_late_fee(&mut tx, invoice.id).await.map_err(refused)?;
            done = json!({"waived": waived});
        }
        "record_manual_payment" => {
            let amount = cents(&option, "amount_cents")?;
            let method = option["method"].as_str().unwrap_or("e_transfer");
            let reference = option["reference"].as_str();
            let payment =
                issues::record_manual(&mut tx, &invoice, amount, method, reference, by).await.map_err(refused)?;
            if amount >= invoice.balance() {
                follow_up = None;
            }
            done = json!({"payment_id": payment, "amount_cents": amount});
        }
        "correct_invoice" => {
            let credit = cents(&option, "credit_cents").unwrap_or(Cents::ZERO);
            if credit.is_positive() {
                let description = option["description"].as_str().unwrap_or("Correction");
                issues::credit(&mut tx, invoice.id, credit, description).await.map_err(refused)?;
                if credit >= invoice.balance() {
                    follow_up = None;
                }
            } else {
                tasks_created.push(task(format!("Review the lines of {number}"), Some(today), "review-lines"));
            }
            done = json!({"credit_cents": credit});
        }
        "pause_autopay" => {
            let paused = issues::pause_autopay(&mut tx, invoice.family_id).await.map_err(refused)?;
            done = json!({"autopay_paused": paused});
        }
        "escalate" => {
            let title = format!("Call the family about {number} ({})", invoice.balance().format_cad());
            tasks_created.push(task(title, Some(today + chrono::Duration::days(1)), "call"));
        }
        "send_payment_instructions" => {}
        other => return Err(StepError::Fatal(format!("unknown option {other}"))),
    }
    if cx.output("classify")["category"] == "dispute" {
        let title = format!("Answer the Stripe dispute for {number}");
        tasks_created.push(task(title, Some(today + chrono::Duration::days(7)), "dispute"));
    }
    let mut task_ids = Vec::new();
    for new in tasks_created {
        task_ids.push(tasks::create(&mut tx, new).await.map_err(StepError::retry)?);
    }
    let mut emails = 0;
    let mut thread = None;
    if !reply.is_empty() {
        let balance = issues::invoice_balance(&mut tx, invoice.id).await.map_err(StepError::retry)?;
        let vars = |language: &str| json!({"number": number, "amount": balance.format_in(language), "reply": reply});
        let key = format!("payment-issue-reply:{}", cx.run_id);
        emails = crate::messaging::email_family(
            &mut tx,
            &cx.state.settings,
            invoice.family_id,
            "payment_issue_reply",
            vars,
            Some(&key),
        )
        .await
        .map_err(StepError::retry)?;
        thread = Some(
            crate::messaging::post_to_billing_thread(&mut tx, &cx.state.settings, invoice.family_id, by, &reply)
                .await
                .map_err(StepError::retry)?,
        );
    }
    if let Some(on) = follow_up {
        issues::schedule_follow_up(&mut tx, tz, invoice.id, cx.run_id, on).await.map_err(StepError::retry)?;
    }
    inquiries::settle(&mut tx, cx.run_id, InquiryStatus::Answered).await.map_err(StepError::retry)?;
    let event = crate::privacy::audit::AuditEvent::new("payment_issue.resolved").subject("invoice", invoice.id);
    crate::privacy::audit::record_tx(
        &mut tx,
        event
            .details(json!({"workflow_run": cx.run_id, "option": kind, "category": cx.output("classify")["category"]})),
    )
    .await?;
    Ok(Transition::succeed(json!({"option": kind, "done": done, "emails": emails, "thread_id": thread,
        "tasks": task_ids, "follow_up_on": follow_up}))
    .in_tx(tx))
}

/// Rejected: nothing is sent or changed; the inquiry (if any) is closed for the office to
/// handle by hand.
async fn close(cx: StepCtx) -> StepResult {
    let reason = cx.output("review")["reason"].as_str().map(str::to_owned);
    let mut tx = cx.state.db.begin().await?;
    inquiries::settle(&mut tx, cx.run_id, InquiryStatus::Closed).await.map_err(StepError::retry)?;
    Ok(Transition::succeed(json!({"closed": true, "reason": reason})).in_tx(tx))
}
