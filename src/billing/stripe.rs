//! Stripe: a small form-encoded client (every call carries an `Idempotency-Key` derived from
//! Cedar's ids, retries on 429/5xx), customers per payee family, PaymentIntents for invoice
//! balances, and `POST /webhooks/stripe` — signature checked on the raw body, each event
//! stored once and applied through the job queue.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::Utc;
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::types::Json as SqlJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::invoices;
use super::payments::{self, NewPayment};
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::domain::Cents;
use crate::error::{ApiError, ApiResult};
use crate::http::Json;
use crate::jobs::queue::{self, Job, NewJob};
use crate::jobs::worker::JobError;
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub const EVENT: &str = "stripe.event";
/// Signatures older (or newer) than this are refused, as Stripe's libraries do.
pub const TOLERANCE_SECS: i64 = 300;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(checkout)).routes(routes!(webhook)).routes(routes!(stop_autopay))
}

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// Checks a `Stripe-Signature` header against the raw body: `t=<unix>,v1=<hex>[,v1=…]`, the
/// HMAC of `{t}.{body}` with the whole `whsec_…` secret, any `v1` may match, `t` within
/// [`TOLERANCE_SECS`] of `now`.
pub fn verify_signature(header: &str, body: &[u8], secret: &str, now: i64) -> Result<(), &'static str> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.push(v.to_owned()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or("no timestamp in Stripe-Signature")?;
    if signatures.is_empty() {
        return Err("no v1 signature in Stripe-Signature");
    }
    let mut signed = timestamp.to_string().into_bytes();
    signed.push(b'.');
    signed.extend_from_slice(body);
    let expected = hex::encode(hmac_sha256(secret.as_bytes(), &signed));
    // Constant-time comparison of each candidate.
    let matches = signatures.iter().any(|candidate| {
        candidate.len() == expected.len()
            && candidate.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !matches {
        return Err("no matching v1 signature");
    }
    if (now - timestamp).abs() > TOLERANCE_SECS {
        return Err("timestamp outside the tolerance");
    }
    Ok(())
}

/// The Stripe API client.
pub struct Stripe {
    http: reqwest::Client,
    base: String,
    key: String,
}

pub fn client(state: &AppState) -> ApiResult<Stripe> {
    let account = state.settings.billing.stripe.as_ref().ok_or_else(|| {
        ApiError::conflict("Card payments are not set up (STRIPE_SECRET_KEY); pay by cash, cheque or e-Transfer")
    })?;
    Ok(Stripe {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ApiError::Internal(e.into()))?,
        base: account.api_base.clone(),
        key: account.secret_key.expose().to_owned(),
    })
}

impl Stripe {
    /// POSTs a form; retries 429/5xx and connection failures with backoff, reusing the same
    /// idempotency key so Stripe acts once.
    pub async fn post(&self, path: &str, form: &[(&str, String)], idempotency_key: &str) -> ApiResult<Value> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
            .finish();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .http
                .post(format!("{}{path}", self.base))
                .bearer_auth(&self.key)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("idempotency-key", idempotency_key)
                .body(body.clone())
                .send()
                .await;
            let retryable = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let reply: Value = response.json().await.unwrap_or(Value::Null);
                    if (200..300).contains(&status) {
                        return Ok(reply);
                    }
                    let message = reply["error"]["message"].as_str().unwrap_or("no message").to_owned();
                    if !(status == 429 || status >= 500) || attempt >= 3 {
                        return Err(ApiError::Upstream(format!("Stripe answered {status}: {message}")));
                    }
                    message
                }
                Err(error) if attempt >= 3 => {
                    return Err(ApiError::Upstream(format!("Stripe is unreachable: {error}")));
                }
                Err(error) => error.to_string(),
            };
            tracing::warn!(path, attempt, error = %retryable, "Stripe call failed; retrying");
            tokio::time::sleep(Duration::from_millis(300 * 2u64.pow(attempt))).await;
        }
    }
}

/// The family's Stripe customer, created once (idempotency key per family).
pub(super) async fn customer(state: &AppState, stripe: &Stripe, family: Uuid) -> ApiResult<String> {
    const SQL: &str = "SELECT f.stripe_customer_id, f.name, u.email FROM families f LEFT JOIN users u ON u.id = f.payee_user_id \
        WHERE f.id = $1";
    let (existing, name, email): (Option<String>, String, Option<String>) =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(family).fetch_one(pool).await)?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let mut form = vec![("name", name), ("metadata[family_id]", family.to_string())];
    if let Some(email) = email {
        form.push(("email", email));
    }
    let created = stripe.post("/v1/customers", &form, &format!("cedar-customer-{family}")).await?;
    let id =
        created["id"].as_str().ok_or_else(|| ApiError::Upstream("Stripe returned no customer id".into()))?.to_owned();
    const SAVE: &str = "UPDATE families SET stripe_customer_id = $2 WHERE id = $1 AND stripe_customer_id IS NULL";
    on_db!(&state.db, pool => sqlx::query(SAVE).bind(family).bind(&id).execute(pool).await.map(|_| ()))?;
    Ok(id)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checkout {
    /// For Stripe.js `confirmPayment`.
    client_secret: String,
    payment_intent_id: String,
    amount_cents: Cents,
    currency: &'static str,
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckoutParams {
    /// Save the card to pay the family's next invoices automatically on their due date.
    #[serde(default)]
    autopay: bool,
}

/// Starts a card payment of the invoice's balance: a Stripe PaymentIntent (admins, or the
/// family's parents). The same balance and choice map to the same PaymentIntent, and an invoice
/// has one payable PaymentIntent at a time (a new one cancels the last; one being paid → 409). With
/// `?autopay=true` the card is saved (`setup_future_usage=off_session`) and, once the payment
/// succeeds, charged for later invoices on their due date.
#[utoipa::path(post, path = "/v1/invoices/{id}/checkout", tag = "billing", params(CheckoutParams), security(("bearer" = [])),
    responses((status = 200, body = Checkout), (status = 401), (status = 404), (status = 409), (status = 502)))]
async fn checkout(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    crate::http::Query(params): crate::http::Query<CheckoutParams>,
) -> ApiResult<Json<Checkout>> {
    let mut tx = state.db.begin_read().await?;
    let invoice = invoices::find_visible(&mut tx, &state, &user, id).await?;
    tx.rollback().await?;
    if user.role == Role::Teacher {
        return Err(ApiError::NotFound);
    }
    if !matches!(invoice.status.as_str(), "open" | "partially_paid") || !invoice.amount_due_cents.is_positive() {
        return Err(ApiError::conflict(format!("Nothing to pay: the invoice is {}", invoice.status)));
    }
    let stripe = client(&state)?;
    let customer = customer(&state, &stripe, invoice.family_id).await?;
    let mut form = vec![
        ("amount", invoice.amount_due_cents.to_string()),
        ("currency", "cad".to_owned()),
        ("customer", customer),
        ("description", format!("Invoice {}", invoice.number)),
        ("metadata[invoice_id]", invoice.id.to_string()),
        ("metadata[family_id]", invoice.family_id.to_string()),
        ("automatic_payment_methods[enabled]", "true".to_owned()),
    ];
    if params.autopay {
        form.push(("setup_future_usage", "off_session".to_owned()));
        form.push(("metadata[autopay]", "true".to_owned()));
    }
    // Paid so far is part of the key: a new balance is a new PaymentIntent. The same checkout
    // again gets the live one back; after a different one it gets a fresh key (Stripe would
    // otherwise replay the cancelled intent for a day).
    let autopay = if params.autopay { "-autopay" } else { "" };
    let base = format!("cedar-invoice-{}-paid-{}{autopay}", invoice.id, invoice.amount_paid_cents);
    let live = live_intent(&state, id).await?;
    let key = match &live {
        Some((_, key)) if *key == base || key.starts_with(&format!("{base}-after-")) => key.clone(),
        Some((previous, _)) => format!("{base}-after-{previous}"),
        None => base,
    };
    let intent = stripe.post("/v1/payment_intents", &form, &key).await?;
    let (Some(intent_id), Some(secret)) = (intent["id"].as_str(), intent["client_secret"].as_str()) else {
        return Err(ApiError::Upstream("Stripe returned no PaymentIntent".into()));
    };
    // One live PaymentIntent per invoice: the one this replaces (a checkout with the other
    // autopay choice, an earlier balance) is cancelled first, so two cannot both be paid.
    if let Some((previous, _)) = live.filter(|(p, _)| p != intent_id)
        && let Err(error) = cancel_intent(&stripe, &previous).await
    {
        // It could not be cancelled: it is being paid or was paid. Withdraw the new one.
        cancel_intent(&stripe, intent_id).await.ok();
        tracing::warn!(invoice = %id, error = %error, "an earlier PaymentIntent could not be cancelled");
        return Err(ApiError::conflict("A card payment of this invoice is already under way"));
    }
    save_intent(&state, id, intent_id, &key).await?;
    Ok(Json(Checkout {
        client_secret: secret.to_owned(),
        payment_intent_id: intent_id.to_owned(),
        amount_cents: invoice.amount_due_cents,
        currency: "CAD",
    }))
}

/// The PaymentIntent last started for the invoice and the key it was created with, if any.
pub(super) async fn live_intent(state: &AppState, invoice: Uuid) -> ApiResult<Option<(String, String)>> {
    const SQL: &str = "SELECT stripe_payment_intent_id, COALESCE(stripe_payment_intent_key, '') FROM invoices \
        WHERE id = $1 AND stripe_payment_intent_id IS NOT NULL";
    Ok(on_db!(&state.db, pool => sqlx::query_as(SQL).bind(invoice).fetch_optional(pool).await)?)
}

async fn save_intent(state: &AppState, invoice: Uuid, intent: &str, key: &str) -> ApiResult<()> {
    const SAVE: &str = "UPDATE invoices SET stripe_payment_intent_id = $2, stripe_payment_intent_key = $3, \
        updated_at = $4 WHERE id = $1";
    on_db!(&state.db, pool => sqlx::query(SAVE).bind(invoice).bind(intent).bind(key).bind(Utc::now())
        .execute(pool).await.map(|_| ()))?;
    Ok(())
}

/// Cancels a PaymentIntent (already cancelled is fine; paid or processing is an error).
pub(super) async fn cancel_intent(stripe: &Stripe, intent: &str) -> ApiResult<()> {
    let form = [("cancellation_reason", "duplicate".to_owned())];
    match stripe.post(&format!("/v1/payment_intents/{intent}/cancel"), &form, &format!("cedar-cancel-{intent}")).await {
        Ok(_) => Ok(()),
        Err(error) => Err(error),
    }
}

/// Receives Stripe events. A bad, missing or stale signature → 400 and nothing is stored;
/// otherwise the event is stored once (by its id) with the job that applies it, and Stripe
/// gets its 200 whatever happens next.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing",
    responses((status = 200, description = "Received (or a duplicate)"), (status = 400), (status = 404)))]
async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult<Json<Value>> {
    let secret = state.settings.billing.stripe_webhook_secret.as_ref().ok_or(ApiError::NotFound)?;
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    if let Err(why) = verify_signature(signature, &body, secret.expose(), Utc::now().timestamp()) {
        metrics::counter!("stripe_webhooks_total", "outcome" => "bad_signature").increment(1);
        // Recorded, so repeated failures reach the owner (ops::notify) from any process.
        audit::record(&state.db, AuditEvent::new("stripe.webhook_rejected").details(json!({"why": why}))).await?;
        return Err(ApiError::BadRequest(format!("Stripe-Signature rejected: {why}")));
    }
    let event: Value = serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("not JSON: {e}")))?;
    let (Some(id), Some(kind)) = (event["id"].as_str(), event["type"].as_str()) else {
        return Err(ApiError::BadRequest("an event needs id and type".into()));
    };
    const SQL: &str = "INSERT INTO stripe_events (id, type, payload, received_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";
    let mut tx = state.db.begin().await?;
    let inserted = on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(kind).bind(SqlJson(&event)).bind(Utc::now())
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if inserted == 1 {
        let job = NewJob::now("billing", EVENT, json!({"event_id": id})).dedupe(format!("stripe:{id}"));
        queue::enqueue(&mut tx, job).await?;
    }
    tx.commit().await?;
    state.job_wakeup.notify_one();
    metrics::counter!("stripe_webhooks_total", "outcome" => if inserted == 1 { "stored" } else { "duplicate" })
        .increment(1);
    Ok(Json(json!({"received": true, "duplicate": inserted == 0})))
}

fn retry(e: impl std::fmt::Display) -> JobError {
    JobError::Retry(e.to_string())
}

/// The `stripe.event` job: applies one stored event. Safe to run twice (payments are unique
/// per PaymentIntent, refunds per refund id); an event about a payment not seen yet (out of
/// order) is retried later.
pub async fn apply(state: &AppState, job: &Job) -> Result<(), JobError> {
    let id = job.payload.0["event_id"].as_str().ok_or_else(|| JobError::Permanent("no event_id".into()))?.to_owned();
    const LOAD: &str = "SELECT type, payload, processed_at IS NOT NULL FROM stripe_events WHERE id = $1";
    let row: Option<(String, SqlJson<Value>, bool)> =
        on_db!(&state.db, pool => sqlx::query_as(LOAD).bind(&id).fetch_optional(pool).await).map_err(retry)?;
    let Some((kind, SqlJson(event), processed)) = row else { return Ok(()) };
    if processed {
        return Ok(());
    }
    let object = &event["data"]["object"];
    let mut tx = state.db.begin().await.map_err(retry)?;
    match kind.as_str() {
        "payment_intent.succeeded" => intent_succeeded(&mut tx, state, object).await?,
        "payment_intent.payment_failed" => intent_failed(&mut tx, state, object).await?,
        "charge.refunded" => charge_refunded(&mut tx, object).await?,
        "charge.dispute.created" => dispute_created(&mut tx, object).await?,
        other => tracing::info!(event = %id, kind = other, "Stripe event acknowledged and ignored"),
    }
    const DONE: &str = "UPDATE stripe_events SET processed_at = $2 WHERE id = $1";
    on_tx!(&mut tx, conn => sqlx::query(DONE).bind(&id).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))
        .map_err(retry)?;
    tx.commit().await.map_err(retry)?;
    state.job_wakeup.notify_one();
    Ok(())
}

fn invoice_of(object: &Value) -> Option<Uuid> {
    object["metadata"]["invoice_id"].as_str().and_then(|s| Uuid::parse_str(s).ok())
}

async fn intent_succeeded(tx: &mut crate::db::Tx, state: &AppState, intent: &Value) -> Result<(), JobError> {
    let Some(invoice_id) = invoice_of(intent) else { return Ok(()) };
    let intent_id = intent["id"].as_str().unwrap_or_default();
    // Paid: no longer the invoice's live PaymentIntent (the next balance gets a new one).
    const SETTLED: &str = "UPDATE invoices SET stripe_payment_intent_id = NULL, stripe_payment_intent_key = NULL \
        WHERE id = $1 AND stripe_payment_intent_id = $2";
    on_tx!(tx, conn => sqlx::query(SETTLED).bind(invoice_id).bind(intent_id).execute(&mut **conn).await.map(|_| ()))
        .map_err(retry)?;
    if payments::by_intent(tx, intent_id).await.map_err(retry)?.is_some() {
        return Ok(());
    }
    const INVOICE: &str = "SELECT family_id, number, status FROM invoices WHERE id = $1";
    let Some((family, number, status)): Option<(Uuid, String, String)> =
        on_tx!(tx, conn => sqlx::query_as(INVOICE).bind(invoice_id).fetch_optional(&mut **conn).await)
            .map_err(retry)?
    else {
        return Err(JobError::Permanent(format!("PaymentIntent {intent_id} names an unknown invoice")));
    };
    if status == "void" {
        // The money was taken: it is recorded (the invoice stays void) and the office is asked
        // to refund it.
        let task = crate::tasks::NewTask {
            title: format!("Refund the card payment received for void invoice {number}"),
            detail: Some(format!("PaymentIntent {intent_id}")),
            subject_type: Some("invoice".into()),
            subject_id: Some(invoice_id),
            dedupe_key: Some(format!("void-paid:{intent_id}")),
            ..crate::tasks::NewTask::default()
        };
        crate::tasks::create(tx, task).await.map_err(retry)?;
    }
    let amount = Cents(intent["amount_received"].as_i64().or_else(|| intent["amount"].as_i64()).unwrap_or(0));
    let payment = payments::record(
        tx,
        NewPayment {
            invoice_id,
            family_id: family,
            kind: "payment",
            amount_cents: amount,
            method: "stripe",
            reference: intent["latest_charge"].as_str(),
            refund_of: None,
            stripe_payment_intent_id: Some(intent_id),
            stripe_refund_id: None,
            created_by: None,
        },
    )
    .await
    .map_err(retry)?;
    payments::received_email(tx, state, family, &number, amount, payment).await.map_err(retry)?;
    // A card saved for autopay pays the family's next invoices.
    if intent["metadata"]["autopay"] == "true"
        && let Some(method) = intent["payment_method"].as_str()
    {
        const SAVE: &str = "UPDATE families SET stripe_autopay_method = $2 WHERE id = $1";
        on_tx!(tx, conn => sqlx::query(SAVE).bind(family).bind(method).execute(&mut **conn).await.map(|_| ()))
            .map_err(retry)?;
        audit::record_tx(tx, AuditEvent::new("family.autopay_enabled").subject("family", family))
            .await
            .map_err(retry)?;
    }
    Ok(())
}

/// Turns autopay off for a family (its parents or an admin).
#[utoipa::path(delete, path = "/v1/families/{id}/autopay", tag = "billing", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 404)))]
async fn stop_autopay(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::http::StatusCode> {
    let allowed = user.role == Role::Admin || (user.role == Role::Parent && user.family_id == Some(id));
    if !allowed {
        return Err(ApiError::NotFound);
    }
    const SQL: &str = "UPDATE families SET stripe_autopay_method = NULL WHERE id = $1";
    let mut tx = state.db.begin().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if n == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("family.autopay_disabled").by(&user).subject("family", id)).await?;
    tx.commit().await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Daily: charges the saved card of autopay families for invoices due today or earlier, with
/// an off-session PaymentIntent. The key names the invoice and its paid amount, so running
/// the job twice charges once; the outcome arrives by webhook. Returns how many were charged.
pub async fn autopay(state: &AppState) -> anyhow::Result<usize> {
    if state.settings.billing.stripe.is_none() {
        return Ok(0);
    }
    const DUE: &str = "SELECT i.id, i.family_id, i.number, i.total_cents - i.amount_paid_cents, i.amount_paid_cents, \
        f.stripe_customer_id, f.stripe_autopay_method FROM invoices i JOIN families f ON f.id = i.family_id \
        WHERE i.status IN ('open', 'partially_paid') AND i.due_date <= $1 AND f.stripe_autopay_method IS NOT NULL \
        AND f.stripe_customer_id IS NOT NULL ORDER BY i.id";
    type Row = (Uuid, Uuid, String, i64, i64, String, String);
    let today = Utc::now().with_timezone(&state.settings.timezone).date_naive();
    let due: Vec<Row> = on_db!(&state.db, pool => sqlx::query_as(DUE).bind(today).fetch_all(pool).await)?;
    let stripe = client(state).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut charged = 0;
    for (invoice, family, number, balance, paid, customer, method) in due {
        if balance < 50 {
            continue;
        }
        let form = [
            ("amount", balance.to_string()),
            ("currency", "cad".to_owned()),
            ("customer", customer),
            ("payment_method", method),
            ("off_session", "true".to_owned()),
            ("confirm", "true".to_owned()),
            ("description", format!("Invoice {number} (autopay)")),
            ("metadata[invoice_id]", invoice.to_string()),
            ("metadata[family_id]", family.to_string()),
        ];
        // A checkout left open for this invoice is cancelled first: the family cannot then
        // pay it by hand while the saved card is charged. If it cannot be, it is being paid.
        if let Some((previous, _)) = live_intent(state, invoice).await.map_err(|e| anyhow::anyhow!("{e}"))?
            && let Err(error) = cancel_intent(&stripe, &previous).await
        {
            tracing::warn!(invoice = %invoice, error = %error, "autopay skipped: a card payment is under way");
            continue;
        }
        // Likewise a pay link's Checkout Session: expired, so the card is not charged twice.
        if let Err(error) = super::checkout_sessions::expire(state, &stripe, invoice).await {
            tracing::warn!(invoice = %invoice, error = %error, "autopay skipped: the pay link's session is still open");
            continue;
        }
        let key = format!("cedar-autopay-{invoice}-paid-{paid}");
        match stripe.post("/v1/payment_intents", &form, &key).await {
            Ok(intent) => {
                if let Some(intent_id) = intent["id"].as_str() {
                    save_intent(state, invoice, intent_id, &key).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                charged += 1;
            }
            // A declined card also arrives as payment_intent.payment_failed.
            Err(error) => tracing::warn!(invoice = %invoice, error = %error, "autopay charge failed"),
        }
    }
    Ok(charged)
}

async fn intent_failed(tx: &mut crate::db::Tx, state: &AppState, intent: &Value) -> Result<(), JobError> {
    let Some(invoice_id) = invoice_of(intent) else { return Ok(()) };
    let intent_id = intent["id"].as_str().unwrap_or_default();
    const INVOICE: &str = "SELECT family_id, number, total_cents - amount_paid_cents FROM invoices WHERE id = $1";
    let Some((family, number, balance)): Option<(Uuid, String, Cents)> =
        on_tx!(tx, conn => sqlx::query_as(INVOICE).bind(invoice_id).fetch_optional(&mut **conn).await)
            .map_err(retry)?
    else {
        return Ok(());
    };
    let reason = intent["last_payment_error"]["message"].as_str().map(str::to_owned);
    // The payment_issue workflow takes it from here; its run is unique per PaymentIntent.
    let method = intent["last_payment_error"]["payment_method"]["id"].as_str().or(intent["payment_method"].as_str());
    let input = json!({"invoice_id": invoice_id, "reason": "payment_failed", "payment_intent_id": intent_id,
        "payment_method": method});
    super::issues::start_run(tx, input, &format!("payment_issue:{intent_id}"), None).await.map_err(retry)?;
    let vars = |_: &str| json!({"number": number, "amount": balance.format_cad(), "reason": reason});
    crate::messaging::email_family(
        tx,
        &state.settings,
        family,
        "payment_failed",
        vars,
        Some(&format!("payment-failed:{intent_id}")),
    )
    .await
    .map_err(retry)?;
    audit::record_tx(
        tx,
        AuditEvent::new("payment.failed").subject("invoice", invoice_id).details(json!({"payment_intent": intent_id})),
    )
    .await
    .map_err(retry)?;
    Ok(())
}

async fn charge_refunded(tx: &mut crate::db::Tx, charge: &Value) -> Result<(), JobError> {
    let Some(intent_id) = charge["payment_intent"].as_str() else { return Ok(()) };
    let Some(payment) = payments::by_intent(tx, intent_id).await.map_err(retry)? else {
        // The payment's own event has not been applied yet: try again later.
        return Err(JobError::Retry(format!("no payment for {intent_id} yet")));
    };
    // Stripe reports the total refunded; record what Cedar does not know yet.
    const KNOWN: &str = "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) FROM payments WHERE refund_of = $1";
    let known: Cents =
        on_tx!(tx, conn => sqlx::query_scalar(KNOWN).bind(payment.id).fetch_one(&mut **conn).await).map_err(retry)?;
    let total = Cents(charge["amount_refunded"].as_i64().unwrap_or(0));
    let missing = total - known;
    if !missing.is_positive() {
        return Ok(());
    }
    let refund_id = charge["refunds"]["data"][0]["id"].as_str().map(str::to_owned);
    payments::record(
        tx,
        NewPayment {
            invoice_id: payment.invoice_id,
            family_id: payment.family_id,
            kind: "refund",
            amount_cents: missing,
            method: "stripe",
            reference: Some("refunded in Stripe"),
            refund_of: Some(payment.id),
            stripe_payment_intent_id: Some(intent_id),
            stripe_refund_id: refund_id.as_deref(),
            created_by: None,
        },
    )
    .await
    .map_err(retry)?;
    Ok(())
}

async fn dispute_created(tx: &mut crate::db::Tx, dispute: &Value) -> Result<(), JobError> {
    let Some(intent_id) = dispute["payment_intent"].as_str() else { return Ok(()) };
    let Some(payment) = payments::by_intent(tx, intent_id).await.map_err(retry)? else {
        return Err(JobError::Retry(format!("no payment for {intent_id} yet")));
    };
    const SQL: &str = "UPDATE payments SET status = 'disputed' WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(SQL).bind(payment.id).execute(&mut **conn).await.map(|_| ())).map_err(retry)?;
    let input = json!({"invoice_id": payment.invoice_id, "reason": "dispute", "payment_intent_id": intent_id,
        "dispute_id": dispute["id"], "dispute_reason": dispute["reason"]});
    let key = format!("payment_issue:dispute:{}", dispute["id"].as_str().unwrap_or(intent_id));
    super::issues::start_run(tx, input, &key, None).await.map_err(retry)?;
    let details = json!({"payment_intent": intent_id, "reason": dispute["reason"], "amount_cents": dispute["amount"]});
    audit::record_tx(tx, AuditEvent::new("payment.disputed").subject("payment", payment.id).details(details))
        .await
        .map_err(retry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYLOAD: &[u8] = include_bytes!("../../tests/fixtures/stripe_event_test_signature.json");
    const HEADER: &str = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,\
        v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef";

    #[test]
    fn stripes_published_vector_verifies() {
        assert_eq!(PAYLOAD.len(), 484);
        assert_eq!(verify_signature(HEADER, PAYLOAD, "webhook_secret", 1_533_204_620 + 100), Ok(()));
        // Any matching v1 among several is enough.
        assert_eq!(verify_signature(&format!("{HEADER},v1=bad"), PAYLOAD, "webhook_secret", 1_533_204_620), Ok(()));
    }

    #[test]
    fn tampering_a_wrong_secret_or_a_stale_timestamp_is_refused() {
        let now = 1_533_204_620;
        let mut tampered = PAYLOAD.to_vec();
        tampered[10] ^= 1;
        assert!(verify_signature(HEADER, &tampered, "webhook_secret", now).is_err());
        assert!(verify_signature(HEADER, PAYLOAD, "another_secret", now).is_err());
        assert!(verify_signature(HEADER, PAYLOAD, "webhook_secret", now + TOLERANCE_SECS + 1).is_err());
        assert!(verify_signature("t=1533204620", PAYLOAD, "webhook_secret", now).is_err());
        assert!(verify_signature("v1=abc", PAYLOAD, "webhook_secret", now).is_err());
        assert!(verify_signature("", PAYLOAD, "webhook_secret", now).is_err());
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
