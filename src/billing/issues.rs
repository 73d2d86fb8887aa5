//! What the `payment_issue` workflow asks of billing: how a run is started (always through the
//! queue, in the transaction of the business change that causes it), a family's payment
//! history, and the actions that resolve an issue — a card retry, a payment plan with its
//! reminders, a late-fee waiver or credit, a manual payment, pausing autopay — plus the
//! follow-up check that reopens an issue whose balance is still due.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use uuid::Uuid;

use super::money::{Cents, Line};
use super::payments::{self, NewPayment};
use crate::app::AppState;
use crate::db::{Db, Tx};
use crate::error::{DomainError, DomainResult};
use crate::jobs::JobError;
use crate::jobs::queue::{self, Job, NewJob};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

/// The workflow's name, as the queue knows it.
pub const WORKFLOW: &str = "payment_issue";
pub const RETRY_CHARGE: &str = "billing.retry_charge";
pub const INSTALMENT_REMINDER: &str = "billing.instalment_reminder";
pub const FOLLOW_UP: &str = "billing.payment_issue_follow_up";

/// Queues the start of a `payment_issue` run in `tx`. `dedupe` names the trigger (a
/// PaymentIntent, a dispute, an inquiry, an overdue invoice), so a repeated trigger starts
/// nothing new; `run_id` fixes the run's id for callers that report it at once.
pub async fn start_run(tx: &mut Tx, input: Value, dedupe: &str, run_id: Option<Uuid>) -> DomainResult<()> {
    let job =
        NewJob::now("workflows", "workflow.start", json!({"workflow": WORKFLOW, "input": input, "run_id": run_id}))
            .dedupe(dedupe);
    queue::enqueue(tx, job).await?;
    Ok(())
}

/// The invoice an issue is about, as the workflow needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InvoiceBrief {
    pub id: Uuid,
    pub number: String,
    pub family_id: Uuid,
    pub status: super::invoices::InvoiceStatus,
    pub total_cents: Cents,
    pub amount_paid_cents: Cents,
    pub due_date: NaiveDate,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub late_fee_applied: bool,
}

impl InvoiceBrief {
    pub fn balance(&self) -> Cents {
        (self.total_cents - self.amount_paid_cents).max(Cents::ZERO)
    }
}

const BRIEF: &str = "SELECT id, number, family_id, status, total_cents, amount_paid_cents, due_date, period_start, \
    period_end, late_fee_applied FROM invoices";

pub async fn invoice(db: &Db, id: Uuid) -> DomainResult<Option<InvoiceBrief>> {
    let sql = sqlx::AssertSqlSafe(format!("{BRIEF} WHERE id = $1"));
    Ok(on_db!(db, pool => sqlx::query_as::<_, InvoiceBrief>(sql).bind(id).fetch_optional(pool).await)?)
}

/// The balance of an invoice as `tx` sees it (after the step's own payments and credits).
pub async fn invoice_balance(tx: &mut Tx, id: Uuid) -> DomainResult<Cents> {
    const SQL: &str = "SELECT total_cents - amount_paid_cents FROM invoices WHERE id = $1";
    let balance: Option<Cents> =
        on_tx!(tx, conn => sqlx::query_scalar(SQL).bind(id).fetch_optional(&mut **conn).await)?;
    Ok(balance.unwrap_or(Cents::ZERO).max(Cents::ZERO))
}

/// Whether a family has an invoice unpaid past its due date (a payment issue that might end
/// lessons).
pub async fn family_overdue(db: &Db, family: Uuid, today: NaiveDate) -> DomainResult<bool> {
    const SQL: &str = "SELECT COUNT(*) FROM invoices WHERE family_id = $1 AND status IN ('open', 'partially_paid') \
        AND due_date < $2";
    let n: i64 = on_db!(db, pool => sqlx::query_scalar(SQL).bind(family).bind(today).fetch_one(pool).await)?;
    Ok(n > 0)
}

/// A family's billing history for the workflow's `gather` step: invoices, payments and
/// refunds, failed card attempts with their decline codes, disputes, autopay, payment plans.
/// Amounts, dates and codes only: no names, addresses or card details.
pub async fn history(db: &Db, family: Uuid) -> DomainResult<Value> {
    let sql = sqlx::AssertSqlSafe(format!("{BRIEF} WHERE family_id = $1 ORDER BY issued_at DESC LIMIT 12"));
    let invoices = on_db!(db, pool => sqlx::query_as::<_, InvoiceBrief>(sql).bind(family).fetch_all(pool).await)?;
    const PAYMENTS: &str = "SELECT invoice_id, kind, amount_cents, method, status, created_at FROM payments \
        WHERE family_id = $1 ORDER BY id DESC LIMIT 50";
    type PaymentRow = (Uuid, String, Cents, String, String, DateTime<Utc>);
    let payments: Vec<PaymentRow> = on_db!(db, pool => sqlx::query_as(PAYMENTS).bind(family).fetch_all(pool).await)?;
    // The failed attempts on the family's invoices, found by the invoice id Stripe echoes back
    // in the event's metadata (the JSON path is written per backend).
    const FAILED_SQLITE: &str = "SELECT payload, received_at FROM stripe_events \
        WHERE type = 'payment_intent.payment_failed' AND json_extract(payload, '$.data.object.metadata.invoice_id') = $1 \
        ORDER BY received_at DESC";
    const FAILED_POSTGRES: &str = "SELECT payload, received_at FROM stripe_events \
        WHERE type = 'payment_intent.payment_failed' AND payload->'data'->'object'->'metadata'->>'invoice_id' = $1 \
        ORDER BY received_at DESC";
    let mut failed = Vec::new();
    for invoice in &invoices {
        let id = invoice.id.to_string();
        let events: Vec<(SqlJson<Value>, DateTime<Utc>)> = match db {
            Db::Sqlite(pool) => sqlx::query_as(FAILED_SQLITE).bind(&id).fetch_all(pool).await?,
            Db::Postgres(pool) => sqlx::query_as(FAILED_POSTGRES).bind(&id).fetch_all(pool).await?,
        };
        for (payload, at) in events {
            let intent = &payload.0["data"]["object"];
            let error = &intent["last_payment_error"];
            failed.push(json!({"invoice_id": id, "at": at, "amount_cents": intent["amount"],
                "code": error["code"], "decline_code": error["decline_code"], "payment_intent": intent["id"]}));
        }
    }
    const FAMILY: &str =
        "SELECT stripe_autopay_method IS NOT NULL, stripe_customer_id IS NOT NULL FROM families WHERE id = $1";
    let (autopay, stripe_customer): (bool, bool) =
        on_db!(db, pool => sqlx::query_as(FAMILY).bind(family).fetch_optional(pool).await)?.unwrap_or((false, false));
    const PLANS: &str = "SELECT p.invoice_id, i.seq, i.due_on, i.amount_cents FROM payment_plans p \
        JOIN payment_plan_instalments i ON i.plan_id = p.id JOIN invoices v ON v.id = p.invoice_id \
        WHERE v.family_id = $1 ORDER BY p.id, i.seq";
    let plans: Vec<(Uuid, i32, NaiveDate, Cents)> =
        on_db!(db, pool => sqlx::query_as(PLANS).bind(family).fetch_all(pool).await)?;
    Ok(json!({
        "invoices": invoices.iter().map(|i| json!({"id": i.id, "number": i.number, "status": i.status,
            "total_cents": i.total_cents, "paid_cents": i.amount_paid_cents, "balance_cents": i.balance(),
            "due_date": i.due_date, "late_fee_applied": i.late_fee_applied})).collect::<Vec<_>>(),
        "payments": payments.iter().map(|(invoice, kind, amount, method, status, at)| json!({"invoice_id": invoice,
            "kind": kind, "amount_cents": amount, "method": method, "status": status, "at": at})).collect::<Vec<_>>(),
        "failed_attempts": failed,
        "disputes": payments.iter().filter(|p| p.4 == "disputed").map(|p| json!({"invoice_id": p.0, "amount_cents": p.2}))
            .collect::<Vec<_>>(),
        "autopay": autopay,
        "stripe_customer": stripe_customer,
        "payment_plans": plans.iter().map(|(invoice, seq, due, amount)| json!({"invoice_id": invoice, "seq": seq,
            "due_on": due, "amount_cents": amount})).collect::<Vec<_>>(),
    }))
}

/// Adds a credit line (a negative amount) to an invoice and lowers its totals.
pub async fn credit(tx: &mut Tx, invoice: Uuid, amount: Cents, description: &str) -> DomainResult<()> {
    if !amount.is_positive() {
        return Err(DomainError::invalid("credit_cents", "must be more than 0"));
    }
    const TOTALS: &str = "UPDATE invoices SET subtotal_cents = subtotal_cents - $2, total_cents = total_cents - $2, \
        updated_at = $3 WHERE id = $1 AND status IN ('open', 'partially_paid') AND total_cents - amount_paid_cents >= $2";
    let changed = on_tx!(tx, conn => sqlx::query(TOTALS).bind(invoice).bind(amount).bind(Utc::now())
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if changed == 0 {
        return Err(DomainError::Refused("the invoice is not open or the credit exceeds its balance".into()));
    }
    const POSITION: &str = "SELECT COALESCE(MAX(position), 0) + 1 FROM invoice_lines WHERE invoice_id = $1";
    let position: i32 = on_tx!(tx, conn => sqlx::query_scalar(POSITION).bind(invoice).fetch_one(&mut **conn).await)?;
    let line = Line {
        kind: "credit",
        description: description.to_owned(),
        student_id: None,
        quantity: 1,
        unit_cents: -amount,
        amount_cents: -amount,
    };
    super::runs::insert_line(tx, invoice, position, &line).await?;
    payments::settle(tx, invoice).await?;
    Ok(())
}

/// Takes the late fee back as a credit line; `false` when the invoice has none.
pub async fn waive_late_fee(tx: &mut Tx, invoice: Uuid) -> DomainResult<bool> {
    const FEE: &str =
        "SELECT COALESCE(SUM(amount_cents), 0) FROM invoice_lines WHERE invoice_id = $1 AND kind = 'late_fee'";
    let fee: i64 = on_tx!(tx, conn => sqlx::query_scalar::<_, i64>(FEE).bind(invoice).fetch_one(&mut **conn).await)?;
    if fee <= 0 {
        return Ok(false);
    }
    credit(tx, invoice, Cents(fee), "Late fee waived").await?;
    Ok(true)
}

/// Records a payment the family made outside Cedar (an e-Transfer not yet recorded).
pub async fn record_manual(
    tx: &mut Tx,
    invoice: &InvoiceBrief,
    amount: Cents,
    method: &str,
    reference: Option<&str>,
    by: Option<Uuid>,
) -> DomainResult<Uuid> {
    if !amount.is_positive() || amount > invoice.balance() {
        return Err(DomainError::invalid("amount_cents", format!("must be between 1 and {}", invoice.balance())));
    }
    if !matches!(method, "cash" | "cheque" | "e_transfer") {
        return Err(DomainError::invalid("method", "must be one of: cash, cheque, e_transfer"));
    }
    let payment = NewPayment {
        invoice_id: invoice.id,
        family_id: invoice.family_id,
        kind: "payment",
        amount_cents: amount,
        method,
        reference,
        refund_of: None,
        stripe_payment_intent_id: None,
        stripe_refund_id: None,
        created_by: by,
    };
    payments::record(tx, payment).await
}

/// Stops charging the family's saved card automatically.
pub async fn pause_autopay(tx: &mut Tx, family: Uuid) -> DomainResult<bool> {
    const SQL: &str =
        "UPDATE families SET stripe_autopay_method = NULL WHERE id = $1 AND stripe_autopay_method IS NOT NULL";
    let n = on_tx!(tx, conn => sqlx::query(SQL).bind(family).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// 09:00 school time on `date` (now, if that has passed).
fn morning(tz: chrono_tz::Tz, date: NaiveDate) -> DateTime<Utc> {
    crate::time::at_local(tz, date, NaiveTime::from_hms_opt(9, 0, 0).expect("valid time")).max(Utc::now())
}

/// A payment plan: instalments (date, amount) that together cover the balance, each with a
/// reminder three days before it is due. Once per run.
pub async fn create_plan(
    tx: &mut Tx,
    tz: chrono_tz::Tz,
    invoice: &InvoiceBrief,
    run_id: Uuid,
    instalments: &[(NaiveDate, Cents)],
) -> DomainResult<Uuid> {
    if !(2..=4).contains(&instalments.len()) {
        return Err(DomainError::invalid("instalments", "a plan has 2 to 4 instalments"));
    }
    let total: Cents = instalments.iter().map(|(_, amount)| *amount).sum();
    if total != invoice.balance() || instalments.iter().any(|(_, amount)| !amount.is_positive()) {
        return Err(DomainError::invalid(
            "instalments",
            format!("the instalments must be positive and add up to the balance, {}", invoice.balance()),
        ));
    }
    if instalments.windows(2).any(|w| w[0].0 >= w[1].0) || instalments[0].0 < crate::time::today(tz) {
        return Err(DomainError::invalid("instalments", "the dates must be in order, from today on"));
    }
    const PLAN: &str = "INSERT INTO payment_plans (id, invoice_id, run_id, created_at) VALUES ($1, $2, $3, $4) \
        ON CONFLICT (run_id) DO NOTHING";
    let plan = Uuid::now_v7();
    let inserted = on_tx!(tx, conn => sqlx::query(PLAN).bind(plan).bind(invoice.id).bind(run_id).bind(Utc::now())
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if inserted == 0 {
        const EXISTING: &str = "SELECT id FROM payment_plans WHERE run_id = $1";
        return Ok(on_tx!(tx, conn => sqlx::query_scalar(EXISTING).bind(run_id).fetch_one(&mut **conn).await)?);
    }
    const INSTALMENT: &str =
        "INSERT INTO payment_plan_instalments (id, plan_id, seq, due_on, amount_cents) VALUES ($1, $2, $3, $4, $5)";
    for (seq, (due_on, amount)) in instalments.iter().enumerate() {
        let id = Uuid::now_v7();
        let seq = seq as i32 + 1;
        on_tx!(tx, conn => sqlx::query(INSTALMENT).bind(id).bind(plan).bind(seq).bind(due_on).bind(amount)
            .execute(&mut **conn).await.map(|_| ()))?;
        let payload = json!({"instalment_id": id});
        let job = NewJob::now(super::QUEUE, INSTALMENT_REMINDER, payload)
            .at(morning(tz, *due_on - Duration::days(3)))
            .dedupe(format!("instalment-reminder:{id}"));
        queue::enqueue(tx, job).await?;
    }
    Ok(plan)
}

/// Schedules a retry of the card that failed (off-session, once per run) on `on`.
pub async fn schedule_retry(
    tx: &mut Tx,
    tz: chrono_tz::Tz,
    invoice: Uuid,
    run_id: Uuid,
    payment_method: Option<&str>,
    on: NaiveDate,
) -> DomainResult<()> {
    let payload = json!({"invoice_id": invoice, "run_id": run_id, "payment_method": payment_method});
    let job = NewJob::now(super::QUEUE, RETRY_CHARGE, payload).at(morning(tz, on)).dedupe(format!("retry:{run_id}"));
    queue::enqueue(tx, job).await?;
    Ok(())
}

/// Checks on `on` whether the invoice is paid; if not, a new `payment_issue` run starts
/// (reason `overdue`, pointing back at this one).
pub async fn schedule_follow_up(
    tx: &mut Tx,
    tz: chrono_tz::Tz,
    invoice: Uuid,
    run_id: Uuid,
    on: NaiveDate,
) -> DomainResult<()> {
    let job = NewJob::now(super::QUEUE, FOLLOW_UP, json!({"invoice_id": invoice, "run_id": run_id}))
        .at(morning(tz, on))
        .dedupe(format!("follow-up:{run_id}"));
    queue::enqueue(tx, job).await?;
    Ok(())
}

fn retry(error: impl std::fmt::Display) -> JobError {
    JobError::Retry(error.to_string())
}

fn uuid_of(job: &Job, field: &str) -> Result<Uuid, JobError> {
    job.payload.0[field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| JobError::Permanent(format!("payload has no {field}")))
}

/// The `billing.retry_charge` job: charges the balance to the family's card off-session with
/// an idempotency key naming the run, so the job can run twice and charge once. The outcome
/// arrives by webhook like any payment.
pub async fn retry_charge(state: &AppState, job: &Job) -> Result<(), JobError> {
    let (invoice_id, run_id) = (uuid_of(job, "invoice_id")?, uuid_of(job, "run_id")?);
    let Some(invoice) = invoice(&state.db, invoice_id).await.map_err(retry)? else { return Ok(()) };
    if !invoice.balance().is_positive() || state.settings.billing.stripe.is_none() {
        return Ok(());
    }
    const FAMILY: &str = "SELECT stripe_customer_id, stripe_autopay_method FROM families WHERE id = $1";
    let (customer, saved): (Option<String>, Option<String>) =
        on_db!(&state.db, pool => sqlx::query_as(FAMILY).bind(invoice.family_id).fetch_one(pool).await)
            .map_err(retry)?;
    let method = job.payload.0["payment_method"].as_str().map(str::to_owned).or(saved);
    let (Some(customer), Some(method)) = (customer, method) else {
        tracing::info!(invoice = %invoice.id, "no saved card to retry; the reminder and the follow-up remain");
        return Ok(());
    };
    let stripe = super::stripe::client(state).map_err(retry)?;
    let form = [
        ("amount", invoice.balance().to_string()),
        ("currency", "cad".to_owned()),
        ("customer", customer),
        ("payment_method", method),
        ("off_session", "true".to_owned()),
        ("confirm", "true".to_owned()),
        ("description", format!("Invoice {} (retry)", invoice.number)),
        ("metadata[invoice_id]", invoice.id.to_string()),
        ("metadata[family_id]", invoice.family_id.to_string()),
    ];
    if let Err(error) = stripe.post("/v1/payment_intents", &form, &format!("cedar-retry-{run_id}")).await {
        // A declined card is not a job failure: it arrives as payment_intent.payment_failed.
        tracing::warn!(invoice = %invoice.id, error = %error, "card retry refused");
    }
    Ok(())
}

/// The `billing.instalment_reminder` job: reminds the family of an instalment, once, unless
/// the invoice is paid by then.
pub async fn instalment_reminder(state: &AppState, job: &Job) -> Result<(), JobError> {
    let instalment = uuid_of(job, "instalment_id")?;
    const SQL: &str = "SELECT p.invoice_id, i.seq, i.due_on, i.amount_cents, \
        (SELECT COUNT(*) FROM payment_plan_instalments o WHERE o.plan_id = p.id) \
        FROM payment_plan_instalments i JOIN payment_plans p ON p.id = i.plan_id WHERE i.id = $1";
    let row: Option<(Uuid, i32, NaiveDate, Cents, i64)> =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(instalment).fetch_optional(pool).await).map_err(retry)?;
    let Some((invoice_id, seq, due_on, amount, count)) = row else { return Ok(()) };
    let Some(invoice) = invoice(&state.db, invoice_id).await.map_err(retry)? else { return Ok(()) };
    if !invoice.balance().is_positive() {
        return Ok(());
    }
    let mut tx = state.db.begin().await.map_err(retry)?;
    let vars = |language: &str| {
        json!({"number": invoice.number, "amount": amount.format_in(language), "seq": seq, "count": count,
            "due_on": due_on.to_string()})
    };
    let key = format!("instalment-reminder:{instalment}");
    crate::messaging::email_family(
        &mut tx,
        &state.settings,
        invoice.family_id,
        "instalment_reminder",
        vars,
        Some(&key),
    )
    .await
    .map_err(retry)?;
    tx.commit().await.map_err(retry)?;
    state.job_wakeup.notify_one();
    Ok(())
}

/// The follow-up check: an invoice still not paid gets a new `payment_issue` run.
pub async fn follow_up(state: &AppState, job: &Job) -> Result<(), JobError> {
    let (invoice_id, run_id) = (uuid_of(job, "invoice_id")?, uuid_of(job, "run_id")?);
    let Some(invoice) = invoice(&state.db, invoice_id).await.map_err(retry)? else { return Ok(()) };
    if !invoice.balance().is_positive() || invoice.status == super::invoices::InvoiceStatus::Void {
        return Ok(());
    }
    let mut tx = state.db.begin().await.map_err(retry)?;
    let input = json!({"invoice_id": invoice.id, "reason": "overdue", "follow_up_of": run_id});
    start_run(&mut tx, input, &format!("payment_issue:follow-up:{run_id}"), None).await.map_err(retry)?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("payment_issue.reopened").subject("invoice", invoice.id).details(json!({"after_run": run_id})),
    )
    .await
    .map_err(retry)?;
    tx.commit().await.map_err(retry)?;
    state.job_wakeup.notify_one();
    Ok(())
}

/// Daily: invoices unpaid `days` after their due date start a `payment_issue` run, once each.
pub async fn overdue_runs(state: &AppState, days: u32) -> anyhow::Result<usize> {
    if days == 0 {
        return Ok(0);
    }
    let cutoff = crate::time::today(state.settings.timezone) - Duration::days(i64::from(days));
    const SQL: &str =
        "SELECT id FROM invoices WHERE status IN ('open', 'partially_paid') AND due_date <= $1 ORDER BY id";
    let due: Vec<Uuid> = on_db!(&state.db, pool => sqlx::query_scalar(SQL).bind(cutoff).fetch_all(pool).await)?;
    let mut tx = state.db.begin().await?;
    for invoice in &due {
        let input = json!({"invoice_id": invoice, "reason": "overdue"});
        start_run(&mut tx, input, &format!("payment_issue:overdue:{invoice}"), None).await?;
    }
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(due.len())
}
