//! The payment_issue workflow's AI tasks and their offline answers: classifying a family's
//! message, ranking the options Cedar computed and drafting the reply (templates in English
//! and French), plus how a payment plan is split.

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::CATEGORIES;
use crate::domain::Cents;
use crate::workflows::ai::AiTask;

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
pub(super) fn offline_classify(input: &Value) -> Value {
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

/// `count` instalments a month apart from a week from now; the first takes the remainder.
pub(super) fn plan(balance: Cents, today: NaiveDate, count: i64) -> Vec<Value> {
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

pub(super) fn check_propose(answer: &Value, input: &Value) -> Result<(), String> {
    let count = input["options"].as_array().map_or(0, Vec::len) as u64;
    let mut ranking: Vec<u64> = answer["ranking"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    ranking.sort();
    if ranking != (0..count).collect::<Vec<_>>() {
        return Err(format!("ranking must list each option index 0..{} exactly once", count.saturating_sub(1)));
    }
    Ok(())
}

/// Template replies per category and language; the ranking follows [`preferred`].
pub(super) fn offline_propose(input: &Value) -> Value {
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
