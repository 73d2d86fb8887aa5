//! Stripe-hosted Checkout Sessions: what an invoice email's pay link opens (see
//! `docs/school-year.md`). One session per invoice and balance; autopay expires an open one
//! before it charges the saved card. The payment arrives on the usual
//! `payment_intent.succeeded` webhook path ([`super::stripe`]).

use chrono::Utc;
use uuid::Uuid;

use super::invoices;
use super::stripe::{Stripe, cancel_intent, client, customer, live_intent};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::on_db;

/// A Stripe-hosted Checkout Session for the invoice's balance (the pay link in its email):
/// one per invoice and balance (the same balance again gets the same open session back),
/// its PaymentIntent carrying the invoice in its metadata so `payment_intent.succeeded`
/// records the payment on the usual webhook path. A PaymentIntent left open by an in-app
/// checkout is cancelled first (one payable intent per invoice); if it is being paid → 409.
/// Returns the session's URL.
pub(crate) async fn open(state: &AppState, invoice: &invoices::Invoice, back_url: &str) -> ApiResult<String> {
    // The balance is part of the key: a new balance is a new session. A session that expired
    // (or was expired for autopay) is replaced under a new key, since Stripe would replay the
    // expired one for a day.
    let base = format!("cedar-pay-{}-paid-{}-due-{}", invoice.id, invoice.amount_paid_cents, invoice.amount_due_cents);
    const LAST: &str = "SELECT stripe_checkout_session_id, stripe_checkout_url, stripe_checkout_key, stripe_checkout_expires_at \
        FROM invoices WHERE id = $1 AND stripe_checkout_session_id IS NOT NULL";
    type Last = (String, String, String, chrono::DateTime<Utc>);
    let last: Option<Last> =
        on_db!(&state.db, pool => sqlx::query_as(LAST).bind(invoice.id).fetch_optional(pool).await)?;
    let soon = Utc::now() + chrono::Duration::minutes(10);
    let key = match last {
        Some((_, url, key, expires)) if key.starts_with(&base) && expires > soon => return Ok(url),
        Some((session, _, key, _)) if key.starts_with(&base) => format!("{base}-after-{session}"),
        _ => base,
    };
    let stripe = client(state)?;
    if let Some((intent, _)) = live_intent(state, invoice.id).await? {
        cancel_intent(&stripe, &intent)
            .await
            .map_err(|_| ApiError::conflict("A card payment of this invoice is already under way"))?;
    }
    let customer = customer(state, &stripe, invoice.family_id).await?;
    let form = vec![
        ("mode", "payment".to_owned()),
        ("customer", customer),
        ("client_reference_id", invoice.id.to_string()),
        ("line_items[0][quantity]", "1".to_owned()),
        ("line_items[0][price_data][currency]", "cad".to_owned()),
        ("line_items[0][price_data][unit_amount]", invoice.amount_due_cents.to_string()),
        ("line_items[0][price_data][product_data][name]", format!("Invoice {}", invoice.number)),
        ("payment_intent_data[description]", format!("Invoice {}", invoice.number)),
        ("payment_intent_data[metadata][invoice_id]", invoice.id.to_string()),
        ("payment_intent_data[metadata][family_id]", invoice.family_id.to_string()),
        ("metadata[invoice_id]", invoice.id.to_string()),
        ("success_url", back_url.to_owned()),
        ("cancel_url", back_url.to_owned()),
    ];
    let session = stripe.post("/v1/checkout/sessions", &form, &key).await?;
    let (Some(id), Some(url)) = (session["id"].as_str(), session["url"].as_str()) else {
        return Err(ApiError::Upstream("Stripe returned no Checkout Session".into()));
    };
    let expires = session["expires_at"]
        .as_i64()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .unwrap_or_else(|| Utc::now() + chrono::Duration::hours(23));
    const SAVE: &str = "UPDATE invoices SET stripe_checkout_session_id = $2, stripe_checkout_url = $3, \
        stripe_checkout_key = $4, stripe_checkout_expires_at = $5, updated_at = $6 WHERE id = $1";
    on_db!(&state.db, pool => sqlx::query(SAVE).bind(invoice.id).bind(id).bind(url).bind(&key).bind(expires)
        .bind(Utc::now()).execute(pool).await.map(|_| ()))?;
    Ok(url.to_owned())
}

/// Expires the invoice's open Checkout Session, if any (autopay is about to charge the card).
pub(super) async fn expire(state: &AppState, stripe: &Stripe, invoice: Uuid) -> ApiResult<()> {
    const OPEN: &str =
        "SELECT stripe_checkout_session_id FROM invoices WHERE id = $1 AND stripe_checkout_expires_at > $2";
    let open: Option<Option<String>> =
        on_db!(&state.db, pool => sqlx::query_scalar(OPEN).bind(invoice).bind(Utc::now()).fetch_optional(pool).await)?;
    if let Some(Some(session)) = open {
        stripe
            .post(&format!("/v1/checkout/sessions/{session}/expire"), &[], &format!("cedar-expire-{session}"))
            .await?;
        const CLEAR: &str = "UPDATE invoices SET stripe_checkout_expires_at = $2 WHERE id = $1";
        on_db!(&state.db, pool => sqlx::query(CLEAR).bind(invoice).bind(Utc::now()).execute(pool).await.map(|_| ()))?;
    }
    Ok(())
}
