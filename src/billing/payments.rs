//! Payments: manual ones (cash, cheque, Interac e-Transfer) recorded by the office, Stripe
//! ones recorded from webhooks, refunds of either; the invoice's paid amount and status
//! follow in the same transaction.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::invoices;
use super::money::Cents;
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, Role};
use crate::db::{CommitMark, Tx};
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

crate::text_enum! {
    /// How a payment was made.
    pub enum PaymentMethod {
        Cash = "cash",
        Cheque = "cheque",
        ETransfer = "e_transfer",
        Stripe = "stripe",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_payments, create_payment)).routes(routes!(refund_payment))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Payment {
    pub id: Uuid,
    pub invoice_id: Uuid,
    pub family_id: Uuid,
    /// `payment` or `refund` (a refund's amount is also positive; it lowers the paid amount).
    pub kind: String,
    pub amount_cents: Cents,
    pub currency: String,
    /// `cash | cheque | e_transfer | stripe`.
    pub method: PaymentMethod,
    pub reference: Option<String>,
    /// `succeeded` or `disputed`.
    pub status: String,
    pub refund_of: Option<Uuid>,
    pub stripe_payment_intent_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, invoice_id, family_id, kind, amount_cents, currency, method, reference, status, refund_of, \
    stripe_payment_intent_id, created_at";

/// What to record.
pub struct NewPayment<'a> {
    pub invoice_id: Uuid,
    pub family_id: Uuid,
    pub kind: &'static str,
    pub amount_cents: Cents,
    pub method: &'a str,
    pub reference: Option<&'a str>,
    pub refund_of: Option<Uuid>,
    pub stripe_payment_intent_id: Option<&'a str>,
    pub stripe_refund_id: Option<&'a str>,
    pub created_by: Option<Uuid>,
}

/// Inserts a payment or refund and brings the invoice's paid amount and status up to date.
pub async fn record(tx: &mut Tx, payment: NewPayment<'_>) -> crate::error::DomainResult<Uuid> {
    const SQL: &str = "INSERT INTO payments (id, invoice_id, family_id, kind, amount_cents, currency, method, reference, \
        refund_of, stripe_payment_intent_id, stripe_refund_id, created_by, created_at) \
        VALUES ($1, $2, $3, $4, $5, 'CAD', $6, $7, $8, $9, $10, $11, $12)";
    let id = Uuid::now_v7();
    on_tx!(tx, conn => sqlx::query(SQL).bind(id).bind(payment.invoice_id).bind(payment.family_id).bind(payment.kind)
        .bind(payment.amount_cents).bind(payment.method).bind(payment.reference).bind(payment.refund_of)
        .bind(payment.stripe_payment_intent_id).bind(payment.stripe_refund_id).bind(payment.created_by).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    settle(tx, payment.invoice_id).await?;
    Ok(id)
}

/// Recomputes an invoice's paid amount from its payments, and its status from that.
pub async fn settle(tx: &mut Tx, invoice: Uuid) -> crate::error::DomainResult<()> {
    const PAID: &str = "SELECT CAST(COALESCE(SUM(CASE WHEN kind = 'payment' THEN amount_cents ELSE -amount_cents END), 0) AS BIGINT) \
        FROM payments WHERE invoice_id = $1";
    const UPDATE: &str = "UPDATE invoices SET amount_paid_cents = $2, status = CASE \
        WHEN status IN ('void', 'uncollectible', 'draft') THEN status \
        WHEN $2 >= total_cents AND total_cents > 0 THEN 'paid' WHEN $2 > 0 THEN 'partially_paid' ELSE 'open' END, \
        updated_at = $3 WHERE id = $1";
    let paid: i64 = on_tx!(tx, conn => sqlx::query_scalar(PAID).bind(invoice).fetch_one(&mut **conn).await)?;
    on_tx!(tx, conn => sqlx::query(UPDATE).bind(invoice).bind(paid).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentFilter {
    invoice_id: Option<Uuid>,
    family_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Payment history, newest first (admins: all; parents: their family's).
#[utoipa::path(get, path = "/v1/payments", tag = "billing", params(PaymentFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Payment>)), (status = 401), (status = 403)))]
async fn list_payments(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<PaymentFilter>,
) -> ApiResult<Json<Page<Payment>>> {
    let family = match user.role {
        Role::Admin => filter.family_id,
        Role::Parent => match user.family_id {
            Some(own) if filter.family_id.is_none_or(|f| f == own) => Some(own),
            _ => return Ok(Json(Page { items: vec![], next_cursor: None })),
        },
        Role::Teacher => return Err(ApiError::Forbidden),
    };
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payments WHERE ($1 IS NULL OR family_id = $1) AND ($2 IS NULL OR invoice_id = $2) \
         AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Payment>(sql).bind(family).bind(filter.invoice_id)
        .bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |p| p.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualPayment {
    invoice_id: Uuid,
    amount_cents: Cents,
    /// `cash | cheque | e_transfer`.
    method: String,
    /// Cheque number or e-Transfer reference (required for e-Transfers).
    reference: Option<String>,
}

/// Records a payment received outside Stripe (admin). Partial payments are fine; more than
/// the balance is refused.
#[utoipa::path(post, path = "/v1/payments", tag = "billing", request_body = ManualPayment, security(("bearer" = [])),
    responses((status = 201, body = Payment), (status = 401), (status = 403), (status = 409), (status = 422)))]
async fn create_payment(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<ManualPayment>,
) -> ApiResult<(StatusCode, Json<Payment>)> {
    let mut errors = Errors::default();
    // Card payments arrive through Stripe, never as a manual record.
    if errors.choice::<PaymentMethod>("method", &input.method) == Some(PaymentMethod::Stripe) {
        errors.add("method", "must be one of: cash, cheque, e_transfer");
    }
    let reference = errors.optional_name("reference", input.reference.as_deref());
    if input.method == "e_transfer" && reference.is_none() {
        errors.add("reference", "is required for an Interac e-Transfer");
    }
    if !input.amount_cents.is_positive() {
        errors.add("amount_cents", "must be positive");
    }
    let mut tx = state.db.begin().await?;
    // Two payments recorded at once must not both fit in one balance.
    tx.lock_row("invoices", input.invoice_id).await?;
    let invoice = invoices::find_visible(&mut tx, &state, &admin, input.invoice_id)
        .await
        .map_err(|_| ApiError::invalid("invoice_id", "No such invoice"))?;
    if matches!(invoice.status.as_str(), "void" | "draft") {
        return Err(ApiError::conflict(format!("This invoice is {}; it takes no payments", invoice.status)));
    }
    if input.amount_cents > invoice.amount_due_cents {
        errors.add("amount_cents", format!("is more than the balance due ({})", invoice.amount_due_cents.format_cad()));
    }
    errors.into_result()?;
    let id = record(
        &mut tx,
        NewPayment {
            invoice_id: invoice.id,
            family_id: invoice.family_id,
            kind: "payment",
            amount_cents: input.amount_cents,
            method: &input.method,
            reference: reference.as_deref(),
            refund_of: None,
            stripe_payment_intent_id: None,
            stripe_refund_id: None,
            created_by: Some(admin.id),
        },
    )
    .await?;
    let event = AuditEvent::new("payment.recorded").by(&admin).subject("invoice", invoice.id);
    audit::record_tx(&mut tx, event.details(json!({"amount_cents": input.amount_cents, "method": input.method})))
        .await?;
    received_email(&mut tx, &state, invoice.family_id, &invoice.number, input.amount_cents, id).await?;
    let payment = find(&mut tx, id).await?;
    CommitMark::answer_with_json(201, &payment);
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(payment)))
}

pub(crate) async fn received_email(
    tx: &mut Tx,
    state: &AppState,
    family: Uuid,
    number: &str,
    amount: Cents,
    id: Uuid,
) -> ApiResult<()> {
    let vars = |_: &str| json!({"number": number, "amount": amount.format_cad()});
    crate::messaging::email_family(
        tx,
        &state.settings,
        family,
        "payment_received",
        vars,
        Some(&format!("payment:{id}")),
    )
    .await?;
    Ok(())
}

async fn find(tx: &mut Tx, id: Uuid) -> ApiResult<Payment> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM payments WHERE id = $1"));
    on_tx!(tx, conn => sqlx::query_as::<_, Payment>(sql).bind(id).fetch_optional(&mut **conn).await)?
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// Default: everything not yet refunded.
    amount_cents: Option<Cents>,
    reason: Option<String>,
}

/// Refunds (part of) a payment (admin). Stripe payments are refunded through Stripe with an
/// idempotency key, so a retried request never refunds twice.
#[utoipa::path(post, path = "/v1/payments/{id}/refund", tag = "billing", request_body = RefundRequest, security(("bearer" = [])),
    responses((status = 201, body = Payment), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422), (status = 502)))]
async fn refund_payment(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<RefundRequest>,
) -> ApiResult<(StatusCode, Json<Payment>)> {
    let mut tx = state.db.begin().await?;
    let payment = find(&mut tx, id).await?;
    if payment.kind != "payment" {
        return Err(ApiError::conflict("A refund cannot be refunded"));
    }
    const REFUNDED: &str = "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM payments WHERE refund_of = $1";
    let refunded: Cents = on_tx!(&mut tx, conn => sqlx::query_scalar(REFUNDED).bind(id).fetch_one(&mut **conn).await)?;
    let refundable = payment.amount_cents - refunded;
    let amount = input.amount_cents.unwrap_or(refundable);
    if refundable == Cents::ZERO {
        return Err(ApiError::conflict("This payment is already fully refunded"));
    }
    if !amount.is_positive() || amount > refundable {
        return Err(ApiError::invalid("amount_cents", format!("must be between 1 and {refundable}")));
    }
    tx.rollback().await?;
    // Stripe first (outside the transaction); the key makes a retry of this request safe.
    let stripe_refund = match (&payment.stripe_payment_intent_id, payment.method.as_str()) {
        (Some(intent), "stripe") => {
            let stripe = super::stripe::client(&state)?;
            let key = format!("cedar-refund-{id}-{refunded}-{amount}");
            let form = [
                ("payment_intent", intent.clone()),
                ("amount", amount.to_string()),
                ("metadata[payment_id]", id.to_string()),
            ];
            let refund = stripe.post("/v1/refunds", &form, &key).await?;
            Some(refund["id"].as_str().unwrap_or_default().to_owned())
        }
        _ => None,
    };
    let mut tx = state.db.begin().await?;
    if let Some(refund) = &stripe_refund {
        // The charge.refunded webhook may have recorded it already.
        const KNOWN: &str = "SELECT id FROM payments WHERE stripe_refund_id = $1";
        let known: Option<Uuid> =
            on_tx!(&mut tx, conn => sqlx::query_scalar(KNOWN).bind(refund).fetch_optional(&mut **conn).await)?;
        if let Some(known) = known {
            let refund = find(&mut tx, known).await?;
            tx.commit().await?;
            return Ok((StatusCode::CREATED, Json(refund)));
        }
    }
    // Checked again under the payment's lock: two refunds at once cannot both take what is
    // left. (A Stripe refund already made is recorded whatever happens: the money moved.)
    tx.lock_row("payments", id).await?;
    let refunded_now: Cents =
        on_tx!(&mut tx, conn => sqlx::query_scalar(REFUNDED).bind(id).fetch_one(&mut **conn).await)?;
    if stripe_refund.is_none() && amount > payment.amount_cents - refunded_now {
        return Err(ApiError::conflict(format!(
            "Another refund was recorded meanwhile; {} is left to refund",
            (payment.amount_cents - refunded_now).format_cad()
        )));
    }
    let reason = input.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    let refund_id = record(
        &mut tx,
        NewPayment {
            invoice_id: payment.invoice_id,
            family_id: payment.family_id,
            kind: "refund",
            amount_cents: amount,
            method: payment.method.as_str(),
            reference: reason,
            refund_of: Some(id),
            stripe_payment_intent_id: payment.stripe_payment_intent_id.as_deref(),
            stripe_refund_id: stripe_refund.as_deref(),
            created_by: Some(admin.id),
        },
    )
    .await?;
    let event = AuditEvent::new("payment.refunded").by(&admin).subject("payment", id);
    audit::record_tx(&mut tx, event.details(json!({"amount_cents": amount, "reason": reason}))).await?;
    let refund = find(&mut tx, refund_id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(refund)))
}

/// A payment's invoice and family by Stripe PaymentIntent (webhooks).
pub(crate) async fn by_intent(tx: &mut Tx, intent: &str) -> ApiResult<Option<Payment>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM payments WHERE stripe_payment_intent_id = $1 AND kind = 'payment'"
    ));
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, Payment>(sql).bind(intent).fetch_optional(&mut **conn).await)?)
}
