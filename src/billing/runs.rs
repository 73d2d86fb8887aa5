//! Billing runs: a family's invoice computed for a period (rates, proration, sibling
//! discount, registration fee, tax), issued with a gap-free number of its year, one per family
//! per period however often the run is repeated; and the scheduled work — the monthly run,
//! autopay, late fees and reminders.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::money::{self, Cents, Line, Totals};
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser};
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::time::resolve_local;
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_runs, create_run))
}

// Computing an invoice

/// A family's invoice for a period, before it is stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Draft {
    family_id: Uuid,
    family_name: String,
    lines: Vec<Line>,
    #[serde(flatten)]
    totals: Totals,
}

/// (lesson minutes, teacher, instrument, per lesson, monthly).
type RateRow = (i32, Option<Uuid>, Option<String>, Cents, Cents);

pub struct RateTable(Vec<RateRow>);

impl RateTable {
    async fn load(db: &crate::db::Db) -> ApiResult<Self> {
        const SQL: &str =
            "SELECT lesson_minutes, teacher_id, instrument, per_lesson_cents, monthly_cents FROM tuition_rates";
        Ok(Self(on_db!(db, pool => sqlx::query_as(SQL).fetch_all(pool).await)?))
    }

    /// (per lesson, monthly) for a lesson length, teacher and instrument: the most specific rate.
    fn find(&self, minutes: i32, teacher: Uuid, instrument: &str) -> Option<(Cents, Cents)> {
        self.0
            .iter()
            .filter(|(m, t, i, _, _)| {
                *m == minutes && t.is_none_or(|t| t == teacher) && i.as_deref().is_none_or(|i| i == instrument)
            })
            .max_by_key(|(_, t, i, _, _)| (t.is_some(), i.is_some()))
            .map(|(_, _, _, lesson, month)| (*lesson, *month))
    }
}

/// UTC bounds of local dates `[start, end]`.
fn bounds(tz: chrono_tz::Tz, start: NaiveDate, end: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let midnight = |d: NaiveDate| resolve_local(tz, d.and_hms_opt(0, 0, 0).expect("midnight exists"));
    (midnight(start), midnight(end + Duration::days(1)))
}

type StudentRow = (Uuid, String, String, String, String, Option<NaiveDate>, Option<NaiveDate>);
/// (student, teacher, starts, ends, attendance, teacher name, is makeup).
type LessonRow = (Uuid, Uuid, DateTime<Utc>, DateTime<Utc>, Option<String>, String, bool);

/// Computes a family's invoice for `[start, end]`; `None` when there is nothing to bill.
pub async fn draft(
    tx: &mut Tx,
    state: &AppState,
    rates: &RateTable,
    family: (Uuid, String),
    start: NaiveDate,
    end: NaiveDate,
) -> ApiResult<Option<Draft>> {
    const STUDENTS: &str = "SELECT id, first_name || ' ' || last_name, instrument, billing_mode, status, start_date, end_date \
        FROM students WHERE family_id = $1 ORDER BY id";
    // Scheduled lessons, and the ones the teacher cancelled (credited in flat mode). A
    // substitute's lesson is billed at the regular teacher's rate unless `$4`.
    const LESSONS: &str = "SELECT l.student_id, t.id, l.starts_at, l.ends_at, l.attendance, t.first_name || ' ' || t.last_name, \
        l.is_makeup FROM lessons l JOIN students s ON s.id = l.student_id \
        JOIN teachers t ON t.id = (CASE WHEN $4 THEN l.teacher_id ELSE COALESCE(l.substitute_for, l.teacher_id) END) \
        WHERE s.family_id = $1 AND (l.status = 'scheduled' OR l.attendance = 'cancelled_by_teacher') \
        AND l.starts_at >= $2 AND l.starts_at < $3 ORDER BY l.starts_at";
    let tz = state.settings.timezone;
    let (from, to) = bounds(tz, start, end);
    let students: Vec<StudentRow> =
        on_tx!(tx, conn => sqlx::query_as(STUDENTS).bind(family.0).fetch_all(&mut **conn).await)?;
    let lessons: Vec<LessonRow> = on_tx!(tx, conn => sqlx::query_as(LESSONS).bind(family.0).bind(from).bind(to)
        .bind(state.settings.school_year.bill_substitute_rate).fetch_all(&mut **conn).await)?;
    let mut lines = Vec::new();
    let period_days = (end - start).num_days() + 1;
    for (student, name, instrument, mode, status, first_day, last_day) in &students {
        let own: Vec<&LessonRow> = lessons.iter().filter(|l| l.0 == *student).collect();
        if mode == "per_lesson" {
            // Lessons the teacher cancelled are not charged.
            let mut groups: Vec<(Uuid, i32, String, i64)> = Vec::new();
            // Makeup lessons and lessons the teacher cancelled are not charged.
            for (_, teacher, starts, ends, attendance, teacher_name, makeup) in &own {
                if *makeup || attendance.as_deref() == Some("cancelled_by_teacher") {
                    continue;
                }
                let minutes = (*ends - *starts).num_minutes() as i32;
                match groups.iter_mut().find(|g| g.0 == *teacher && g.1 == minutes) {
                    Some(group) => group.3 += 1,
                    None => groups.push((*teacher, minutes, teacher_name.clone(), 1)),
                }
            }
            for (teacher, minutes, teacher_name, count) in groups {
                let (per_lesson, _) =
                    rates.find(minutes, teacher, instrument).ok_or_else(|| missing_rate(minutes, instrument))?;
                lines.push(Line {
                    kind: "tuition",
                    description: format!("{name}: {instrument} lessons, {minutes} min × {count} ({teacher_name})"),
                    student_id: Some(*student),
                    quantity: count as i32,
                    unit_cents: per_lesson,
                    amount_cents: per_lesson * count,
                });
            }
        } else {
            if !matches!(status.as_str(), "active" | "withdrawn") {
                continue;
            }
            let active_from = first_day.map_or(start, |d| d.max(start));
            let active_to = last_day.map_or(end, |d| d.min(end));
            if active_to < active_from {
                continue;
            }
            // The flat rate follows the student's lesson length (their first lesson of the period).
            let Some((_, teacher, starts, ends, _, _, _)) = own.iter().find(|l| !l.6) else { continue };
            let minutes = (*ends - *starts).num_minutes() as i32;
            let (per_lesson, monthly) =
                rates.find(minutes, *teacher, instrument).ok_or_else(|| missing_rate(minutes, instrument))?;
            let days = (active_to - active_from).num_days() + 1;
            let amount = monthly.ratio(days, period_days);
            let description = if days == period_days {
                format!("{name}: {instrument}, {minutes} min weekly, flat monthly tuition")
            } else {
                format!("{name}: {instrument}, flat monthly tuition, {days} of {period_days} days")
            };
            lines.push(Line {
                kind: "tuition",
                description,
                student_id: Some(*student),
                quantity: 1,
                unit_cents: amount,
                amount_cents: amount,
            });
            // Teacher cancellations not made up within the period are credited.
            let cancelled = own.iter().filter(|l| l.4.as_deref() == Some("cancelled_by_teacher")).count() as i64;
            let made_up = own.iter().filter(|l| l.6).count() as i64;
            let cancelled = (cancelled - made_up).max(0);
            if cancelled > 0 {
                lines.push(Line {
                    kind: "credit",
                    description: format!("{name}: {cancelled} lesson(s) cancelled by the teacher"),
                    student_id: Some(*student),
                    quantity: cancelled as i32,
                    unit_cents: -per_lesson,
                    amount_cents: -per_lesson * cancelled,
                });
            }
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    money::sibling_discounts(&mut lines, i64::from(state.settings.billing.sibling_discount_percent));
    let fee = state.settings.billing.registration_fee_cents;
    if fee.is_positive() {
        const FIRST: &str = "SELECT COUNT(*) FROM invoices WHERE family_id = $1 AND status <> 'void'";
        let earlier: i64 = on_tx!(tx, conn => sqlx::query_scalar(FIRST).bind(family.0).fetch_one(&mut **conn).await)?;
        if earlier == 0 {
            lines.push(Line {
                kind: "registration",
                description: "Registration fee".into(),
                student_id: None,
                quantity: 1,
                unit_cents: fee,
                amount_cents: fee,
            });
        }
    }
    let totals = money::totals(&lines, tax_rate(state));
    Ok(Some(Draft { family_id: family.0, family_name: family.1, lines, totals }))
}

fn missing_rate(minutes: i32, instrument: &str) -> ApiError {
    ApiError::invalid(
        "tuition_rates",
        format!("no tuition rate for {minutes}-minute {instrument} lessons; add one first"),
    )
}

fn tax_rate(state: &AppState) -> i64 {
    state.settings.billing.tax.as_ref().map_or(0, |(_, rate)| *rate)
}

/// Stores a draft as an open invoice with the next number of the year, and emails the family.
async fn issue(
    tx: &mut Tx,
    state: &AppState,
    draft: &Draft,
    run: Uuid,
    start: NaiveDate,
    end: NaiveDate,
) -> ApiResult<Option<Uuid>> {
    let now = Utc::now();
    let today = now.with_timezone(&state.settings.timezone).date_naive();
    let year = chrono::Datelike::year(&today);
    const EXISTS: &str = "SELECT id FROM invoices WHERE family_id = $1 AND period_start = $2 AND period_end = $3";
    let existing: Option<Uuid> = on_tx!(tx, conn => sqlx::query_scalar(EXISTS).bind(draft.family_id).bind(start).bind(end).fetch_optional(&mut **conn).await)?;
    if existing.is_some() {
        return Ok(None);
    }
    let number = next_number(tx, year).await?;
    let id = Uuid::now_v7();
    let due = today + Duration::days(i64::from(state.settings.billing.payment_terms_days));
    const INVOICE: &str = "INSERT INTO invoices (id, number, family_id, billing_run_id, period_start, period_end, status, \
        currency, subtotal_cents, discount_cents, tax_cents, total_cents, due_date, issued_at, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, 'open', 'CAD', $7, $8, $9, $10, $11, $12, $12, $12)";
    let t = draft.totals;
    on_tx!(tx, conn => sqlx::query(INVOICE).bind(id).bind(&number).bind(draft.family_id).bind(run).bind(start).bind(end)
        .bind(t.subtotal_cents).bind(t.discount_cents).bind(t.tax_cents).bind(t.total_cents).bind(due).bind(now)
        .execute(&mut **conn).await.map(|_| ()))?;
    for (position, line) in draft.lines.iter().enumerate() {
        insert_line(tx, id, position as i32, line).await?;
    }
    let total = t.total_cents.format_cad();
    let view_link = crate::http::signed_links::link(state, "invoices", id, "view").await?;
    let pay_link = crate::http::signed_links::link(state, "invoices", id, "pay").await?;
    let vars = |_: &str| json!({"number": number, "total": total, "due_date": due.to_string(), "view_link": view_link, "pay_link": pay_link});
    crate::messaging::email_family(
        tx,
        &state.settings,
        draft.family_id,
        "invoice_issued",
        vars,
        Some(&format!("invoice:{id}")),
    )
    .await?;
    Ok(Some(id))
}

pub(crate) async fn insert_line(
    tx: &mut Tx,
    invoice: Uuid,
    position: i32,
    line: &Line,
) -> crate::error::DomainResult<()> {
    const SQL: &str = "INSERT INTO invoice_lines (id, invoice_id, position, kind, description, student_id, quantity, \
        unit_cents, amount_cents) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
    on_tx!(tx, conn => sqlx::query(SQL).bind(Uuid::now_v7()).bind(invoice).bind(position).bind(line.kind)
        .bind(&line.description).bind(line.student_id).bind(line.quantity).bind(line.unit_cents).bind(line.amount_cents)
        .execute(&mut **conn).await.map(|_| ()))?;
    Ok(())
}

/// `INV-2026-0001`: the counter row is updated in the invoice's transaction, so a rolled
/// back invoice gives its number back and numbers have no gaps.
async fn next_number(tx: &mut Tx, year: i32) -> ApiResult<String> {
    const INIT: &str = "INSERT INTO invoice_counters (year, last) VALUES ($1, 0) ON CONFLICT (year) DO NOTHING";
    const NEXT: &str = "UPDATE invoice_counters SET last = last + 1 WHERE year = $1 RETURNING last";
    on_tx!(tx, conn => sqlx::query(INIT).bind(year).execute(&mut **conn).await.map(|_| ()))?;
    let n: i32 = on_tx!(tx, conn => sqlx::query_scalar(NEXT).bind(year).fetch_one(&mut **conn).await)?;
    Ok(format!("INV-{year}-{n:04}"))
}

// Billing runs

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    period_start: NaiveDate,
    period_end: NaiveDate,
    /// Compute and return the invoices without storing anything.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunResult {
    id: Option<Uuid>,
    period_start: NaiveDate,
    period_end: NaiveDate,
    dry_run: bool,
    /// True when this period had been billed before; only missing invoices were created.
    already_run: bool,
    /// Invoices created by this call.
    created: usize,
    invoice_ids: Vec<Uuid>,
    /// Dry runs: the invoices that would be created.
    #[serde(skip_serializing_if = "Option::is_none")]
    preview: Option<Vec<Draft>>,
    total_cents: Cents,
    /// Families not billed, and why (a lesson length without a tuition rate): the run bills
    /// everyone it can; add the rate and run the period again to bill them.
    not_billed: Vec<NotBilled>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotBilled {
    family_id: Uuid,
    reason: String,
}

/// Whether a draft failed for want of a tuition rate (the family is skipped, not the run).
fn rate_missing(error: &ApiError) -> Option<String> {
    match error {
        ApiError::Validation(fields) if fields.iter().any(|f| f.field == "tuition_rates") => {
            Some(fields.iter().map(|f| f.message.clone()).collect::<Vec<_>>().join("; "))
        }
        _ => None,
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct BillingRun {
    id: Uuid,
    period_start: NaiveDate,
    period_end: NaiveDate,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
}

/// Billing runs, newest first (admin).
#[utoipa::path(get, path = "/v1/billing/runs", tag = "billing", params(PageParams), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<BillingRun>)), (status = 401), (status = 403)))]
async fn list_runs(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<BillingRun>>> {
    const SQL: &str = "SELECT id, period_start, period_end, created_by, created_at FROM billing_runs \
        WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2";
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, BillingRun>(SQL).bind(page.after()?)
        .bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |r| r.id)?))
}

/// Bills a period: one invoice per family with something to bill (admin). Idempotent per
/// period: a second run creates only what is missing (normally nothing) and says so.
#[utoipa::path(post, path = "/v1/billing/runs", tag = "billing", request_body = RunRequest, security(("bearer" = [])),
    responses((status = 201, body = RunResult), (status = 200, body = RunResult, description = "Already run, or a dry run"),
        (status = 401), (status = 403), (status = 422)))]
async fn create_run(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<RunRequest>,
) -> ApiResult<(StatusCode, Json<RunResult>)> {
    if input.period_end < input.period_start || (input.period_end - input.period_start).num_days() > 92 {
        return Err(ApiError::invalid("period_end", "must be on or after period_start, at most 3 months later"));
    }
    let result = run(&state, Some(&admin), input.period_start, input.period_end, input.dry_run).await?;
    let status = if result.already_run || result.dry_run { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(result)))
}

/// Runs billing for `[start, end]` (the API and the monthly schedule).
pub async fn run(
    state: &AppState,
    admin: Option<&CurrentUser>,
    start: NaiveDate,
    end: NaiveDate,
    dry_run: bool,
) -> ApiResult<RunResult> {
    const FAMILIES: &str =
        "SELECT DISTINCT f.id, f.name FROM families f JOIN students s ON s.family_id = f.id ORDER BY f.id";
    let families: Vec<(Uuid, String)> = on_db!(&state.db, pool => sqlx::query_as(FAMILIES).fetch_all(pool).await)?;
    let mut result = RunResult {
        id: None,
        period_start: start,
        period_end: end,
        dry_run,
        already_run: false,
        created: 0,
        invoice_ids: vec![],
        preview: dry_run.then(Vec::new),
        total_cents: Cents::ZERO,
        not_billed: vec![],
    };
    if dry_run {
        let rates = RateTable::load(&state.db).await?;
        let mut tx = state.db.begin_read().await?;
        for family in families {
            let family_id = family.0;
            match draft(&mut tx, state, &rates, family, start, end).await {
                Ok(Some(draft)) => {
                    result.total_cents += draft.totals.total_cents;
                    result.preview.get_or_insert_with(Vec::new).push(draft);
                }
                Ok(None) => {}
                Err(error) => match rate_missing(&error) {
                    Some(reason) => result.not_billed.push(NotBilled { family_id, reason }),
                    None => return Err(error),
                },
            }
        }
        tx.rollback().await?;
        return Ok(result);
    }
    // The run row first: it names the period once, however often it is billed.
    const RUN: &str = "INSERT INTO billing_runs (id, period_start, period_end, created_by, created_at) \
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT (period_start, period_end) DO NOTHING";
    const EXISTING: &str = "SELECT id FROM billing_runs WHERE period_start = $1 AND period_end = $2";
    let mut tx = state.db.begin().await?;
    let inserted = on_tx!(&mut tx, conn => sqlx::query(RUN).bind(Uuid::now_v7()).bind(start).bind(end)
        .bind(admin.map(|a| a.id)).bind(Utc::now()).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    let run_id: Uuid =
        on_tx!(&mut tx, conn => sqlx::query_scalar(EXISTING).bind(start).bind(end).fetch_one(&mut **conn).await)?;
    if let Some(admin) = admin {
        let event = AuditEvent::new("billing.run").by(admin).subject("billing_run", run_id);
        audit::record_tx(&mut tx, event.details(json!({"period_start": start, "period_end": end}))).await?;
    }
    tx.commit().await?;
    result.id = Some(run_id);
    result.already_run = inserted == 0;
    // Families already billed for the period are skipped without computing anything.
    const BILLED: &str = "SELECT family_id FROM invoices WHERE period_start = $1 AND period_end = $2";
    let billed: std::collections::HashSet<Uuid> =
        on_db!(&state.db, pool => sqlx::query_scalar(BILLED).bind(start).bind(end).fetch_all(pool).await)?
            .into_iter()
            .collect();
    let rates = RateTable::load(&state.db).await?;
    // One transaction per family: a crash mid-run keeps what was issued, and the next run
    // issues the rest.
    for family in families.into_iter().filter(|f| !billed.contains(&f.0)) {
        let mut tx = state.db.begin().await?;
        let family_id = family.0;
        let draft = match draft(&mut tx, state, &rates, family, start, end).await {
            Ok(Some(draft)) => draft,
            Ok(None) => {
                tx.rollback().await?;
                continue;
            }
            Err(error) => {
                tx.rollback().await?;
                match rate_missing(&error) {
                    Some(reason) => {
                        tracing::warn!(family = %family_id, reason, "family not billed");
                        result.not_billed.push(NotBilled { family_id, reason });
                        continue;
                    }
                    None => return Err(error),
                }
            }
        };
        match issue(&mut tx, state, &draft, run_id, start, end).await? {
            Some(id) => {
                tx.commit().await?;
                result.created += 1;
                result.total_cents += draft.totals.total_cents;
                result.invoice_ids.push(id);
            }
            None => tx.rollback().await?,
        }
    }
    metrics::counter!("invoices_issued_total").increment(result.created as u64);
    state.job_wakeup.notify_one();
    Ok(result)
}

// Scheduled work

/// The monthly run: bills the current month (school zone) on `CEDAR_BILLING_DAY`.
pub async fn monthly_run(state: &AppState) -> anyhow::Result<()> {
    let today = Utc::now().with_timezone(&state.settings.timezone).date_naive();
    let start = today.with_day(1).expect("day 1 exists");
    let end = (start + chrono::Months::new(1)) - Duration::days(1);
    // Between terms (summer) nothing is billed; without terms every month is.
    if !crate::school_year::terms::bills_month(&state.db, start).await? {
        tracing::info!(month = %start, "not a billing month of any term; no billing run");
        return Ok(());
    }
    run(state, None, start, end, false).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

use chrono::Datelike;

/// Daily: autopay charges for invoices due, a late fee, once, on invoices unpaid
/// `late_fee_after_days` past due; reminders three days before the due date and a week after
/// it. Returns (autopay charges, late fees, reminders).
pub async fn daily(state: &AppState) -> anyhow::Result<(usize, usize, usize)> {
    let charged = super::stripe::autopay(state).await?;
    let today = Utc::now().with_timezone(&state.settings.timezone).date_naive();
    let billing = &state.settings.billing;
    let mut fees = 0;
    if billing.late_fee_cents.is_positive() {
        const LATE: &str = "SELECT id FROM invoices WHERE status IN ('open', 'partially_paid') AND late_fee_applied = FALSE \
            AND due_date < $1";
        let cutoff = today - Duration::days(i64::from(billing.late_fee_after_days));
        let late: Vec<Uuid> = on_db!(&state.db, pool => sqlx::query_scalar(LATE).bind(cutoff).fetch_all(pool).await)?;
        for id in late {
            let mut tx = state.db.begin().await?;
            if add_late_fee(&mut tx, state, id).await.map_err(|e| anyhow::anyhow!("{e}"))? {
                fees += 1;
            }
            tx.commit().await?;
        }
    }
    const REMIND: &str = "SELECT id, family_id, number, total_cents - amount_paid_cents, due_date FROM invoices \
        WHERE status IN ('open', 'partially_paid') AND (due_date = $1 OR due_date = $2)";
    let soon = today + Duration::days(3);
    let overdue = today - Duration::days(7);
    let due: Vec<(Uuid, Uuid, String, Cents, NaiveDate)> =
        on_db!(&state.db, pool => sqlx::query_as(REMIND).bind(soon).bind(overdue).fetch_all(pool).await)?;
    let mut reminders = 0;
    for (id, family, number, balance, due_date) in due {
        let mut tx = state.db.begin().await?;
        let vars = |_: &str| {
            json!({"number": number, "amount": balance.format_cad(), "due_date": due_date.to_string(),
            "overdue": due_date < today})
        };
        let key = format!("payment-reminder:{id}:{due_date}:{}", due_date < today);
        reminders +=
            crate::messaging::email_family(&mut tx, &state.settings, family, "payment_reminder", vars, Some(&key))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
    }
    state.job_wakeup.notify_one();
    Ok((charged, fees, reminders))
}

/// Adds the late fee line to an invoice once (the flag is set in the same UPDATE).
async fn add_late_fee(tx: &mut Tx, state: &AppState, id: Uuid) -> ApiResult<bool> {
    let fee = state.settings.billing.late_fee_cents;
    const FLAG: &str = "UPDATE invoices SET late_fee_applied = TRUE, subtotal_cents = subtotal_cents + $2, \
        total_cents = total_cents + $2, updated_at = $3 WHERE id = $1 AND late_fee_applied = FALSE \
        AND status IN ('open', 'partially_paid')";
    let moved = on_tx!(tx, conn => sqlx::query(FLAG).bind(id).bind(fee).bind(Utc::now())
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if moved == 0 {
        return Ok(false);
    }
    const POSITION: &str = "SELECT COALESCE(MAX(position), 0) + 1 FROM invoice_lines WHERE invoice_id = $1";
    let position: i32 = on_tx!(tx, conn => sqlx::query_scalar(POSITION).bind(id).fetch_one(&mut **conn).await)?;
    let line = Line {
        kind: "late_fee",
        description: "Late payment fee".into(),
        student_id: None,
        quantity: 1,
        unit_cents: fee,
        amount_cents: fee,
    };
    insert_line(tx, id, position, &line).await?;
    audit::record_tx(
        tx,
        AuditEvent::new("invoice.late_fee").subject("invoice", id).details(json!({"amount_cents": fee})),
    )
    .await?;
    Ok(true)
}
