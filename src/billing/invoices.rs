//! Invoices: listing and reading them (each family sees its own), the printable HTML, and
//! voiding. They are created by billing runs (`runs.rs`).

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::money::Cents;
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, Role};
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::http::escape_html;
use crate::http::pagination::{Page, PageParams};
use crate::http::signed_links::{self, Signed};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

crate::text_enum! {
    /// Where an invoice is.
    pub enum InvoiceStatus {
        Draft = "draft",
        Open = "open",
        Paid = "paid",
        PartiallyPaid = "partially_paid",
        Void = "void",
        Uncollectible = "uncollectible",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_invoices))
        .routes(routes!(get_invoice))
        .routes(routes!(invoice_html))
        .routes(routes!(invoice_view))
        .routes(routes!(invoice_pay))
        .routes(routes!(void_invoice))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Invoice {
    pub id: Uuid,
    pub number: String,
    pub family_id: Uuid,
    /// `draft | open | paid | partially_paid | void | uncollectible`.
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal_cents: Cents,
    pub discount_cents: Cents,
    pub tax_cents: Cents,
    pub total_cents: Cents,
    pub amount_paid_cents: Cents,
    #[sqlx(skip)]
    pub amount_due_cents: Cents,
    pub due_date: NaiveDate,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub issued_at: DateTime<Utc>,
    pub late_fee_applied: bool,
    /// Name of the tax, when one is charged.
    #[sqlx(skip)]
    pub tax_name: Option<String>,
    #[sqlx(skip)]
    pub lines: Vec<InvoiceLine>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct InvoiceLine {
    kind: String,
    description: String,
    student_id: Option<Uuid>,
    quantity: i32,
    unit_cents: Cents,
    amount_cents: Cents,
}

pub const COLUMNS: &str = "id, number, family_id, status, currency, subtotal_cents, discount_cents, tax_cents, total_cents, \
    amount_paid_cents, due_date, period_start, period_end, issued_at, late_fee_applied";

const LINES: &str = "SELECT kind, description, student_id, quantity, unit_cents, amount_cents FROM invoice_lines \
    WHERE invoice_id = $1 ORDER BY position";

fn finish(state: &AppState, mut invoice: Invoice) -> Invoice {
    invoice.amount_due_cents = if invoice.status == InvoiceStatus::Void {
        Cents::ZERO
    } else {
        (invoice.total_cents - invoice.amount_paid_cents).max(Cents::ZERO)
    };
    invoice.tax_name =
        state.settings.billing.tax.as_ref().map(|(name, _)| name.clone()).filter(|_| invoice.tax_cents.is_positive());
    invoice
}

/// An invoice the user may see (admins: all; parents: their family's; teachers: none) → 404.
pub(crate) async fn find_visible(tx: &mut Tx, state: &AppState, user: &CurrentUser, id: Uuid) -> ApiResult<Invoice> {
    let family = match user.role {
        Role::Admin => None,
        Role::Parent => Some(user.family_id.ok_or(ApiError::NotFound)?),
        Role::Teacher => return Err(ApiError::NotFound),
    };
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM invoices WHERE id = $1 AND ($2 IS NULL OR family_id = $2)"));
    let invoice =
        on_tx!(tx, conn => sqlx::query_as::<_, Invoice>(sql).bind(id).bind(family).fetch_optional(&mut **conn).await)?
            .ok_or(ApiError::NotFound)?;
    let lines = on_tx!(tx, conn => sqlx::query_as::<_, InvoiceLine>(LINES).bind(id).fetch_all(&mut **conn).await)?;
    Ok(finish(state, Invoice { lines, ..invoice }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceFilter {
    status: Option<String>,
    family_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Invoices, newest first (admins: all; parents: their family's).
#[utoipa::path(get, path = "/v1/invoices", tag = "billing", params(InvoiceFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Invoice>)), (status = 401), (status = 403), (status = 422)))]
async fn list_invoices(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<InvoiceFilter>,
) -> ApiResult<Json<Page<Invoice>>> {
    let family = match user.role {
        Role::Admin => filter.family_id,
        Role::Parent => match user.family_id {
            Some(own) => Some(own),
            None => return Ok(Json(Page { items: vec![], next_cursor: None })),
        },
        Role::Teacher => return Err(ApiError::Forbidden),
    };
    if user.role == Role::Parent && filter.family_id.is_some_and(|f| Some(f) != user.family_id) {
        return Ok(Json(Page { items: vec![], next_cursor: None }));
    }
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let mut errors = Errors::default();
    if let Some(status) = &filter.status {
        errors.choice::<InvoiceStatus>("status", status);
    }
    let (after, limit) = (page.after()?, page.fetch_limit()?);
    errors.into_result()?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM invoices WHERE ($1 IS NULL OR family_id = $1) AND ($2 IS NULL OR status = $2) \
         AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Invoice>(sql).bind(family).bind(&filter.status)
        .bind(after).bind(limit).fetch_all(pool).await)?;
    let rows = rows.into_iter().map(|i| finish(&state, i)).collect();
    Ok(Json(Page::from_rows(rows, &page, |i| i.id)?))
}

/// One invoice with its lines.
#[utoipa::path(get, path = "/v1/invoices/{id}", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = Invoice), (status = 401), (status = 404)))]
async fn get_invoice(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Invoice>> {
    let mut tx = state.db.begin_read().await?;
    let invoice = find_visible(&mut tx, &state, &user, id).await?;
    tx.commit().await?;
    Ok(Json(invoice))
}

/// A printable invoice (HTML).
#[utoipa::path(get, path = "/v1/invoices/{id}/html", tag = "billing", security(("bearer" = [])),
    responses((status = 200, content_type = "text/html"), (status = 401), (status = 404)))]
async fn invoice_html(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Response> {
    let mut tx = state.db.begin_read().await?;
    let invoice = find_visible(&mut tx, &state, &user, id).await?;
    tx.commit().await?;
    printable(&state, &invoice, "").await
}

/// A printable invoice without signing in: the link in its email (`expires`, `sig`).
#[utoipa::path(get, path = "/v1/invoices/{id}/view", tag = "billing", params(Signed),
    responses((status = 200, content_type = "text/html"), (status = 403, description = "Link altered or expired")))]
async fn invoice_view(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(link): Query<Signed>,
) -> ApiResult<Response> {
    if let Err(why) = signed_links::check(&state, "invoices", id, "view", link.expires, &link.sig).await? {
        return Ok(link_refused(why));
    }
    let invoice = find(&state, id).await?;
    let pay = if invoice.amount_due_cents.is_positive() {
        let url = signed_links::link(&state, "invoices", id, "pay").await?;
        format!(
            "<p class=noprint><a href=\"{}\">Pay {} online</a></p>",
            escape_html(&url),
            invoice.amount_due_cents.format_cad()
        )
    } else {
        String::new()
    };
    printable(&state, &invoice, &pay).await
}

/// The page a signed link shows when it does not open: altered, or expired.
pub(crate) fn link_refused(why: signed_links::LinkError) -> Response {
    let text = match why {
        signed_links::LinkError::Invalid => "This link is not valid. Open the link from the email again.",
        signed_links::LinkError::Expired => {
            "This link has expired. Sign in to the school's app, or ask the office for a new one."
        }
    };
    page(StatusCode::FORBIDDEN, "Link not valid", &format!("<p>{text}</p>"))
}

/// An invoice visible to no one in particular: the signed-link pages.
pub(crate) async fn find(state: &AppState, id: Uuid) -> ApiResult<Invoice> {
    let mut tx = state.db.begin_read().await?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM invoices WHERE id = $1"));
    let invoice =
        on_tx!(&mut tx, conn => sqlx::query_as::<_, Invoice>(sql).bind(id).fetch_optional(&mut **conn).await)?
            .ok_or(ApiError::NotFound)?;
    let lines = on_tx!(&mut tx, conn => sqlx::query_as::<_, InvoiceLine>(LINES).bind(id).fetch_all(&mut **conn).await)?;
    tx.commit().await?;
    Ok(finish(state, Invoice { lines, ..invoice }))
}

/// Cedar's small HTML pages: their own inline style under a CSP that allows only that.
pub(crate) fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:sans-serif;max-width:44em;margin:2em auto;padding:0 1em;color:#1a1a1a}}\
         td,th{{padding:.3em .6em}}.n{{text-align:right}}table{{width:100%;border-collapse:collapse}}tr{{border-bottom:1px solid #ddd}}\
         a{{color:#1d4d2b}}@media print{{.noprint{{display:none}}body{{margin:0}}}}</style></head><body>{body}</body></html>",
        title = escape_html(title),
    );
    let mut response = (status, Html(html)).into_response();
    response.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_CSP));
    response
}

/// Inline style only; no scripts, frames or remote content.
pub(crate) const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

async fn printable(state: &AppState, invoice: &Invoice, extra: &str) -> ApiResult<Response> {
    const FAMILY: &str = "SELECT name FROM families WHERE id = $1";
    let family: String =
        on_db!(&state.db, pool => sqlx::query_scalar(FAMILY).bind(invoice.family_id).fetch_one(pool).await)?;
    let rows: String = invoice
        .lines
        .iter()
        .map(|l| {
            format!(
                "<tr><td>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
                escape_html(&l.description),
                l.quantity,
                l.amount_cents.format_cad()
            )
        })
        .collect();
    let tax = invoice.tax_name.clone().unwrap_or_else(|| "Tax".into());
    let body = format!(
        "<h1>{school}</h1><h2>Invoice {number}</h2><p>{family}<br>Period {start} – {end}<br>Issued {issued}, due {due}</p>\
         <table><tr><th>Item</th><th class=n>Qty</th><th class=n>Amount</th></tr>{rows}</table>\
         <table><tr><td>Subtotal</td><td class=n>{subtotal}</td></tr><tr><td>Discounts</td><td class=n>-{discount}</td></tr>\
         <tr><td>{tax}</td><td class=n>{tax_amount}</td></tr><tr><th>Total (CAD)</th><th class=n>{total}</th></tr>\
         <tr><td>Paid</td><td class=n>{paid}</td></tr><tr><th>Balance due</th><th class=n>{due_amount}</th></tr></table>{extra}",
        number = escape_html(&invoice.number),
        school = escape_html(crate::messaging::templates::SCHOOL),
        family = escape_html(&family),
        tax = escape_html(&tax),
        start = invoice.period_start,
        end = invoice.period_end,
        issued = invoice.issued_at.with_timezone(&state.settings.timezone).date_naive(),
        due = invoice.due_date,
        subtotal = invoice.subtotal_cents.format_cad(),
        discount = invoice.discount_cents.format_cad(),
        tax_amount = invoice.tax_cents.format_cad(),
        total = invoice.total_cents.format_cad(),
        paid = invoice.amount_paid_cents.format_cad(),
        due_amount = invoice.amount_due_cents.format_cad(),
    );
    Ok(page(StatusCode::OK, &format!("Invoice {}", invoice.number), &body))
}

/// The pay link of an invoice's email: with Stripe, a redirect to a Stripe-hosted Checkout
/// Session for the balance; without, the school's e-Transfer instructions.
#[utoipa::path(get, path = "/v1/invoices/{id}/pay", tag = "billing", params(Signed),
    responses((status = 303, description = "To Stripe Checkout"), (status = 200, content_type = "text/html",
        description = "Nothing to pay, or e-Transfer instructions"), (status = 403, description = "Link altered or expired"),
        (status = 409, description = "A card payment is under way"), (status = 502)))]
async fn invoice_pay(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(link): Query<Signed>,
) -> ApiResult<Response> {
    if let Err(why) = signed_links::check(&state, "invoices", id, "pay", link.expires, &link.sig).await? {
        return Ok(link_refused(why));
    }
    let invoice = find(&state, id).await?;
    let title = format!("Invoice {}", invoice.number);
    if !matches!(invoice.status, InvoiceStatus::Open | InvoiceStatus::PartiallyPaid)
        || !invoice.amount_due_cents.is_positive()
    {
        let text = format!(
            "<h1>{}</h1><p>Nothing to pay: this invoice is {}. Thank you.</p>",
            escape_html(&title),
            invoice.status
        );
        return Ok(page(StatusCode::OK, &title, &text));
    }
    if state.settings.billing.stripe.is_some() {
        let back = signed_links::link(&state, "invoices", id, "view").await?;
        let url = match super::checkout_sessions::open(&state, &invoice, &back).await {
            Ok(url) => url,
            Err(ApiError::Conflict { detail, .. }) => {
                return Ok(page(
                    StatusCode::CONFLICT,
                    &title,
                    &format!("<h1>{}</h1><p>{}</p>", escape_html(&title), escape_html(&detail)),
                ));
            }
            Err(error) => return Err(error),
        };
        let location =
            HeaderValue::from_str(&url).map_err(|_| ApiError::Upstream("Stripe returned a bad URL".into()))?;
        return Ok((StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response());
    }
    let amount = invoice.amount_due_cents.format_cad();
    let how = match &state.settings.school_year.etransfer_email {
        Some(address) => format!(
            "<p>Send an Interac e-Transfer of <strong>{amount}</strong> to <strong>{}</strong> with the message \
             <strong>{}</strong>. We record it within two business days.</p>",
            escape_html(address),
            escape_html(&invoice.number)
        ),
        None => format!(
            "<p>To pay the balance of <strong>{amount}</strong>, please contact the office (cash, cheque or e-Transfer).</p>"
        ),
    };
    Ok(page(StatusCode::OK, &title, &format!("<h1>{}</h1>{how}", escape_html(&title))))
}

/// Voids an invoice with no payments (admin); its number stays used.
#[utoipa::path(post, path = "/v1/invoices/{id}/void", tag = "billing", security(("bearer" = [])),
    responses((status = 200, body = Invoice), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn void_invoice(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Invoice>> {
    let mut tx = state.db.begin_read().await?;
    let invoice = find_visible(&mut tx, &state, &admin, id).await?;
    if invoice.amount_paid_cents != Cents::ZERO || !matches!(invoice.status, InvoiceStatus::Open | InvoiceStatus::Draft)
    {
        return Err(ApiError::conflict(format!(
            "Only unpaid open invoices can be voided; this one is {}",
            invoice.status
        )));
    }
    const SQL: &str = "UPDATE invoices SET status = 'void', updated_at = $2 WHERE id = $1";
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("invoice.voided").by(&admin).subject("invoice", id)).await?;
    let invoice = find_visible(&mut tx, &state, &admin, id).await?;
    tx.commit().await?;
    Ok(Json(invoice))
}
