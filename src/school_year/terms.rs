//! Terms: the school year's blocks (`/v1/terms`). Once any term exists lessons happen only
//! inside terms; a weekly series booked by the enrollment workflow or the schedule review runs
//! to the end of the term it starts in; the monthly billing run bills only a term's billing
//! months. Re-enrollment for a term is offered `CEDAR_REENROLLMENT_NOTICE_DAYS` before it
//! starts (see [`super::reenrollment`]).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser};
use crate::db::{Db, Tx};
use crate::error::{ApiError, ApiResult, DomainResult};
use crate::http::Json;
use crate::http::validate::Errors;
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_terms, create_term)).routes(routes!(get_term, update_term, delete_term))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Term {
    pub id: Uuid,
    pub name: String,
    /// First day of lessons (school-local), inclusive.
    pub starts_on: NaiveDate,
    /// Last day of lessons, inclusive.
    pub ends_on: NaiveDate,
    /// Months the monthly billing run bills for this term, `YYYY-MM`.
    #[schema(value_type = Vec<String>)]
    pub billing_months: SqlJson<Vec<String>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, starts_on, ends_on, billing_months, created_at";

/// The term containing `date`, if any.
pub async fn containing(tx: &mut Tx, date: NaiveDate) -> DomainResult<Option<Term>> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM terms WHERE starts_on <= $1 AND ends_on >= $1 ORDER BY starts_on LIMIT 1"
    ));
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, Term>(sql).bind(date).fetch_optional(&mut **conn).await)?)
}

/// How a weekly series starting on `first` is booked: through the end of the term it starts
/// in (`FREQ=WEEKLY;UNTIL=…`), or, with no term there, `default_weeks` occurrences.
pub async fn weekly_span(tx: &mut Tx, first: NaiveDate, default_weeks: i64) -> DomainResult<(i64, String)> {
    Ok(match containing(tx, first).await? {
        Some(term) => {
            let weeks = ((term.ends_on - first).num_days() / 7 + 1).clamp(1, 52);
            (weeks, format!("FREQ=WEEKLY;UNTIL={}", term.ends_on.format("%Y%m%d")))
        }
        None => (default_weeks, format!("FREQ=WEEKLY;COUNT={default_weeks}")),
    })
}

/// `rrule` with `;UNTIL=` the last day of the term containing `starts_at` when it has neither
/// `COUNT` nor `UNTIL` and such a term exists; otherwise unchanged.
pub async fn bounded_by_term(state: &AppState, rrule: &str, starts_at: DateTime<Utc>) -> ApiResult<String> {
    let upper = rrule.to_ascii_uppercase();
    if upper.contains("COUNT=") || upper.contains("UNTIL=") {
        return Ok(rrule.to_owned());
    }
    let mut tx = state.db.begin_read().await?;
    let date = crate::time::local_date(state.settings.timezone, starts_at);
    let term = crate::school_year::terms::containing(&mut tx, date).await?;
    tx.rollback().await?;
    Ok(match term {
        Some(term) => format!("{};UNTIL={}", rrule.trim().trim_end_matches(';'), term.ends_on.format("%Y%m%d")),
        None => rrule.to_owned(),
    })
}

/// Whether the monthly run bills the month starting `month` (day 1): always when no term
/// exists, else only a term's billing month.
pub async fn bills_month(db: &Db, month: NaiveDate) -> DomainResult<bool> {
    const SQL: &str = "SELECT billing_months FROM terms";
    let rows: Vec<SqlJson<Vec<String>>> = on_db!(db, pool => sqlx::query_scalar(SQL).fetch_all(pool).await)?;
    let key = month.format("%Y-%m").to_string();
    Ok(rows.is_empty() || rows.iter().any(|months| months.0.contains(&key)))
}

/// Every month a term touches, `YYYY-MM`: the default billing months.
fn months_between(start: NaiveDate, end: NaiveDate) -> Vec<String> {
    let mut months = Vec::new();
    let mut month = start.with_day(1).expect("day 1 exists");
    while month <= end && months.len() < 24 {
        months.push(month.format("%Y-%m").to_string());
        month = month + chrono::Months::new(1);
    }
    months
}

pub(crate) async fn find(db: &Db, id: Uuid) -> ApiResult<Term> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM terms WHERE id = $1"));
    on_db!(db, pool => sqlx::query_as::<_, Term>(sql).bind(id).fetch_optional(pool).await)?.ok_or(ApiError::NotFound)
}

/// The school year's terms, in order (anyone signed in).
#[utoipa::path(get, path = "/v1/terms", tag = "school year", security(("bearer" = [])),
    responses((status = 200, body = inline(crate::http::pagination::Page<Term>)), (status = 401)))]
async fn list_terms(
    State(state): State<AppState>,
    _user: CurrentUser,
) -> ApiResult<Json<crate::http::pagination::Page<Term>>> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM terms ORDER BY starts_on LIMIT 200"));
    let items = on_db!(&state.db, pool => sqlx::query_as::<_, Term>(sql).fetch_all(pool).await)?;
    Ok(Json(crate::http::pagination::Page { items, next_cursor: None }))
}

#[utoipa::path(get, path = "/v1/terms/{id}", tag = "school year", security(("bearer" = [])),
    responses((status = 200, body = Term), (status = 401), (status = 404)))]
async fn get_term(State(state): State<AppState>, _user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Json<Term>> {
    Ok(Json(find(&state.db, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermInput {
    name: Option<String>,
    starts_on: Option<NaiveDate>,
    ends_on: Option<NaiveDate>,
    /// `YYYY-MM` months billed [default: every month the term touches].
    billing_months: Option<Vec<String>>,
}

/// Validates a term's fields (merged over `current` for an update): dates in order, at most
/// a year long, no overlap with another term, billing months well formed.
async fn validated(
    db: &Db,
    id: Option<Uuid>,
    input: &TermInput,
    current: Option<&Term>,
) -> ApiResult<(String, NaiveDate, NaiveDate, Vec<String>)> {
    let mut errors = Errors::default();
    let name = match (&input.name, current) {
        (Some(name), _) => errors.name("name", name),
        (None, Some(term)) => term.name.clone(),
        (None, None) => {
            errors.add("name", "is required");
            String::new()
        }
    };
    let starts_on = input.starts_on.or(current.map(|t| t.starts_on));
    let ends_on = input.ends_on.or(current.map(|t| t.ends_on));
    let (Some(starts_on), Some(ends_on)) = (starts_on, ends_on) else {
        errors.add("starts_on", "starts_on and ends_on are required");
        errors.into_result()?;
        unreachable!("errors were added");
    };
    if ends_on <= starts_on {
        errors.add("ends_on", "must be after starts_on");
    } else if ends_on - starts_on > Duration::days(366) {
        errors.add("ends_on", "a term lasts at most a year");
    }
    let months = match &input.billing_months {
        Some(months) => {
            for (i, month) in months.iter().enumerate() {
                if NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").is_err() || month.len() != 7 {
                    errors.add(format!("billing_months[{i}]"), "must be a month as YYYY-MM");
                }
            }
            if months.len() > 24 {
                errors.add("billing_months", "at most 24 months");
            }
            let mut months = months.clone();
            months.sort();
            months.dedup();
            months
        }
        None if input.starts_on.is_some() || input.ends_on.is_some() || current.is_none() => {
            months_between(starts_on, ends_on)
        }
        None => current.map(|t| t.billing_months.0.clone()).unwrap_or_default(),
    };
    errors.into_result()?;
    const OVERLAP: &str =
        "SELECT name FROM terms WHERE starts_on <= $2 AND ends_on >= $1 AND ($3 IS NULL OR id <> $3) LIMIT 1";
    let other: Option<String> = on_db!(db, pool => sqlx::query_scalar(OVERLAP).bind(starts_on).bind(ends_on).bind(id).fetch_optional(pool).await)?;
    if let Some(other) = other {
        return Err(ApiError::conflict(format!("The term overlaps {other}")));
    }
    Ok((name, starts_on, ends_on, months))
}

/// Adds a term (admins).
#[utoipa::path(post, path = "/v1/terms", tag = "school year", request_body = TermInput, security(("bearer" = [])),
    responses((status = 201, body = Term), (status = 401), (status = 403), (status = 409, description = "Overlaps another term"),
        (status = 422)))]
async fn create_term(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<TermInput>,
) -> ApiResult<(StatusCode, Json<Term>)> {
    let (name, starts_on, ends_on, months) = validated(&state.db, None, &input, None).await?;
    const SQL: &str =
        "INSERT INTO terms (id, name, starts_on, ends_on, billing_months, created_at) VALUES ($1, $2, $3, $4, $5, $6)";
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(&name).bind(starts_on).bind(ends_on).bind(SqlJson(&months))
        .bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("term.created").by(&admin).subject("term", id)).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(find(&state.db, id).await?)))
}

/// Changes a term (admins). Lessons already booked stay as they are.
#[utoipa::path(patch, path = "/v1/terms/{id}", tag = "school year", request_body = TermInput, security(("bearer" = [])),
    responses((status = 200, body = Term), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn update_term(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<TermInput>,
) -> ApiResult<Json<Term>> {
    let current = find(&state.db, id).await?;
    let (name, starts_on, ends_on, months) = validated(&state.db, Some(id), &input, Some(&current)).await?;
    const SQL: &str = "UPDATE terms SET name = $2, starts_on = $3, ends_on = $4, billing_months = $5 WHERE id = $1";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(&name).bind(starts_on).bind(ends_on).bind(SqlJson(&months))
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("term.updated").by(&admin).subject("term", id)).await?;
    tx.commit().await?;
    Ok(Json(find(&state.db, id).await?))
}

/// Removes a term and its re-enrollment offers (admins). Lessons stay.
#[utoipa::path(delete, path = "/v1/terms/{id}", tag = "school year", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn delete_term(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    const SQL: &str = "DELETE FROM terms WHERE id = $1";
    let mut tx = state.db.begin().await?;
    let deleted =
        on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if deleted == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("term.deleted").by(&admin).subject("term", id)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
