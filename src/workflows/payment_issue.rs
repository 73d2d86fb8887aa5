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

use super::ai::AiTask;
use super::engine::{ReviewRequest, Step, StepCtx, StepError, StepResult, Subject, Transition, Workflow};
use crate::app::AppState;
use crate::billing::inquiries::{self, InquiryStatus};
use crate::billing::issues::{self, InvoiceBrief};
use crate::domain::Cents;
use crate::error::DomainError;
use crate::on_db;
use crate::tasks::{self, NewTask};

pub const NAME: &str = issues::WORKFLOW;

/// Why a run started.
const REASONS: &[&str] = &["payment_failed", "dispute", "inquiry", "overdue"];

/// What the issue is, as the office would name it.
const CATEGORIES: &[&str] = &[
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
    Ok(Subject { kind: "invoice", id, family_id: Some(invoice.family_id) })
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
    const LANGUAGE: &str = "SELECT preferred_language FROM families WHERE id = $1";
    let language: Option<String> =
        on_db!(&cx.state.db, pool => sqlx::query_scalar(LANGUAGE).bind(invoice.family_id).fetch_optional(pool).await)?;
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
            "language": language.unwrap_or_else(|| "en".into()),
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

pub static CLASSIFY: AiTask = AiTask {
    name: "payment_issue_classification",
    instructions: "You help the office of a music school understand a family's message about a bill. Classify it as \
        exactly one category: question_about_charge (they ask why an amount is what it is), hardship (they cannot pay \
        now), already_paid (they say they paid, e.g. by e-Transfer), card_declined, expired_card, or unpaid. Quote the \
        words that decided it as evidence.",
    schema: classify_schema,
    check: check_classify,
    offline: offline_classify,
    max_tokens: 200,
};

fn classify_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["category", "evidence"],
        "properties": {
            "category": {"type": "string", "enum": ["question_about_charge", "hardship", "already_paid", "card_declined",
                "expired_card", "unpaid"]},
            "evidence": {"type": "string", "maxLength": 300}
        }
    })
}

fn check_classify(answer: &Value, _input: &Value) -> Result<(), String> {
    match answer["category"].as_str() {
        Some(category) if CATEGORIES.contains(&category) => Ok(()),
        _ => Err(format!("category must be one of: {}", CATEGORIES.join(", "))),
    }
}

/// Keyword rules, in English and French.
fn offline_classify(input: &Value) -> Value {
    let message = crate::http::validate::fold(input["message"].as_str().unwrap_or_default());
    let has = |words: &[&str]| words.iter().find(|w| message.contains(*w)).map(|w| (*w).to_owned());
    let (category, evidence) = if let Some(w) = has(&[
        "already paid",
        "e-transfer",
        "etransfer",
        "interac",
        "deja paye",
        "virement",
        "i paid",
        "we paid",
        "j'ai paye",
        "nous avons paye",
    ]) {
        ("already_paid", w)
    } else if let Some(w) = has(&[
        "afford",
        "lost my job",
        "difficult",
        "hardship",
        "can't pay",
        "cannot pay",
        "payment plan",
        "instalment",
        "installment",
        "difficile",
        "versements",
        "pas les moyens",
    ]) {
        ("hardship", w)
    } else if let Some(w) = has(&["expired", "expire"]) {
        ("expired_card", w)
    } else if let Some(w) = has(&["declined", "refusee", "refused"]) {
        ("card_declined", w)
    } else {
        ("question_about_charge", "a question about the invoice".to_owned())
    };
    json!({"category": category, "evidence": evidence})
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

/// `count` instalments a month apart from a week from now; the first takes the remainder.
fn plan(balance: Cents, today: NaiveDate, count: i64) -> Vec<Value> {
    let share = Cents(balance.0 / count);
    let first = balance - share * (count - 1);
    let start = today + chrono::Duration::days(7);
    (0..count)
        .map(|i| {
            let due = start.checked_add_months(chrono::Months::new(i as u32)).unwrap_or(start);
            json!({"due_on": due, "amount_cents": if i == 0 { first } else { share }})
        })
        .collect()
}

/// Default ranking per category: what the office would usually do first.
fn preferred(category: &str) -> &'static [&'static str] {
    match category {
        "insufficient_funds" => &["retry_card", "payment_plan", "send_payment_instructions", "escalate"],
        "card_declined" | "authentication_required" => &["send_payment_instructions", "retry_card", "escalate"],
        "expired_card" => &["send_payment_instructions", "pause_autopay", "escalate"],
        "dispute" => &["escalate", "correct_invoice", "pause_autopay"],
        "hardship" => &["payment_plan", "waive_late_fee", "escalate"],
        "already_paid" => &["record_manual_payment", "escalate"],
        "question_about_charge" => &["correct_invoice", "send_payment_instructions", "escalate"],
        _ => &["send_payment_instructions", "payment_plan", "waive_late_fee", "escalate"],
    }
}

pub static PROPOSE: AiTask = AiTask {
    name: "payment_issue_proposal",
    instructions: "You help the office of a music school answer a family about a bill. Given the issue category, the \
        amounts and dates, and the options the school can carry out, rank the options (by index) from most to least \
        suitable and write a short, kind, factual reply to the family in their language (language: en or fr). Mention \
        the amount due and the invoice number; never invent amounts, dates or policies; no legal threats.",
    schema: propose_schema,
    check: check_propose,
    offline: offline_propose,
    max_tokens: 700,
};

fn propose_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["ranking", "reply"],
        "properties": {
            "ranking": {"type": "array", "maxItems": 8, "items": {"type": "integer", "minimum": 0}},
            "reply": {"type": "string", "minLength": 10, "maxLength": 1500}
        }
    })
}

fn check_propose(answer: &Value, input: &Value) -> Result<(), String> {
    let count = input["options"].as_array().map_or(0, Vec::len) as u64;
    let mut ranking: Vec<u64> = answer["ranking"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    ranking.sort();
    if ranking != (0..count).collect::<Vec<_>>() {
        return Err(format!("ranking must list each option index 0..{} exactly once", count.saturating_sub(1)));
    }
    Ok(())
}

/// Template replies per category and language; the ranking follows [`preferred`].
fn offline_propose(input: &Value) -> Value {
    let options = input["options"].as_array().cloned().unwrap_or_default();
    let category = input["category"].as_str().unwrap_or("unpaid");
    let order = preferred(category);
    let mut ranking: Vec<usize> = (0..options.len()).collect();
    ranking.sort_by_key(|&i| {
        let kind = options[i]["kind"].as_str().unwrap_or_default();
        (order.iter().position(|k| *k == kind).unwrap_or(order.len()), i)
    });
    let french = input["language"] == "fr";
    let amount = Cents(input["balance_cents"].as_i64().unwrap_or(0)).format_in(if french { "fr" } else { "en" });
    let number = input["invoice_number"].as_str().unwrap_or_default();
    let reply = match (category, french) {
        ("insufficient_funds" | "card_declined" | "authentication_required", false) => format!(
            "Your card payment for invoice {number} ({amount}) did not go through. You can pay again with another card \
             in the app, or by e-Transfer; reply to this message if you would like to spread the payment."
        ),
        ("insufficient_funds" | "card_declined" | "authentication_required", true) => format!(
            "Le paiement par carte de la facture {number} ({amount}) n'a pas abouti. Vous pouvez payer de nouveau avec \
             une autre carte dans l'application, ou par virement Interac; répondez à ce message pour étaler le paiement."
        ),
        ("expired_card", false) => format!(
            "The card on file has expired, so invoice {number} ({amount}) could not be charged. Please pay with a \
             current card in the app or by e-Transfer."
        ),
        ("expired_card", true) => format!(
            "La carte enregistrée est expirée : la facture {number} ({amount}) n'a pas pu être débitée. Veuillez payer \
             avec une carte valide dans l'application ou par virement Interac."
        ),
        ("dispute", false) => format!(
            "We saw that the payment for invoice {number} was disputed with your bank. We would like to understand what \
             went wrong; the office will call you shortly."
        ),
        ("dispute", true) => format!(
            "Nous avons vu que le paiement de la facture {number} a été contesté auprès de votre banque. Nous aimerions \
             comprendre ce qui s'est passé; le bureau vous appellera sous peu."
        ),
        ("hardship", false) => format!(
            "Thank you for telling us. We can spread the {amount} of invoice {number} over a few instalments; the dates \
             are below, and you can reply if another schedule suits you better."
        ),
        ("hardship", true) => format!(
            "Merci de nous en avoir parlé. Nous pouvons étaler les {amount} de la facture {number} en quelques \
             versements; répondez-nous si un autre calendrier vous convient mieux."
        ),
        ("already_paid", false) => format!(
            "Thank you: we have recorded your payment for invoice {number}. Your account is up to date once it is \
             applied."
        ),
        ("already_paid", true) => format!(
            "Merci : nous avons enregistré votre paiement pour la facture {number}. Votre compte est à jour une fois \
             celui-ci appliqué."
        ),
        ("question_about_charge", false) => format!(
            "Thank you for your question about invoice {number}. We have reviewed its lines and the lessons of the \
             period; the office's answer is below. The amount due is {amount}."
        ),
        ("question_about_charge", true) => format!(
            "Merci pour votre question au sujet de la facture {number}. Nous avons revu ses lignes et les cours de la \
             période; voici la réponse du bureau. Le montant dû est de {amount}."
        ),
        (_, false) => format!(
            "Invoice {number} ({amount}) is past its due date. You can pay in the app or by e-Transfer; reply to this \
             message if you need more time."
        ),
        (_, true) => format!(
            "La facture {number} ({amount}) est échue. Vous pouvez payer dans l'application ou par virement Interac; \
             répondez à ce message s'il vous faut plus de temps."
        ),
    };
    json!({"ranking": ranking, "reply": reply})
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cover_the_balance_exactly() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap();
        let plan = plan(Cents(24_001), today, 3);
        let amounts: Vec<i64> = plan.iter().map(|i| i["amount_cents"].as_i64().unwrap()).collect();
        assert_eq!(amounts, [8_001, 8_000, 8_000]);
        let dates: Vec<&str> = plan.iter().map(|i| i["due_on"].as_str().unwrap()).collect();
        assert_eq!(dates, ["2026-12-08", "2027-01-08", "2027-02-08"]);
    }

    #[test]
    fn offline_classification_reads_english_and_french() {
        let say = |m: &str| offline_classify(&json!({"message": m}))["category"].clone();
        assert_eq!(say("We already paid by Interac e-Transfer on the 3rd"), "already_paid");
        assert_eq!(say("J'ai payé par virement la semaine dernière"), "already_paid");
        assert_eq!(say("I lost my job and cannot pay the whole amount"), "hardship");
        assert_eq!(say("Why are there five lessons in October?"), "question_about_charge");
    }

    #[test]
    fn offline_ranking_follows_the_category() {
        let options = json!([{"kind": "send_payment_instructions"}, {"kind": "payment_plan"}, {"kind": "escalate"}]);
        let answer = offline_propose(&json!({"category": "hardship", "options": options, "language": "fr",
            "balance_cents": 24_000, "invoice_number": "INV-2026-0001"}));
        assert_eq!(answer["ranking"], json!([1, 2, 0]));
        assert!(
            answer["reply"].as_str().unwrap().contains("240,00")
                || answer["reply"].as_str().unwrap().contains("$240.00")
        );
        assert!(check_propose(&answer, &json!({"options": options})).is_ok());
    }
}
