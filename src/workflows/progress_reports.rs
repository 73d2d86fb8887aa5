//! `/v1/progress-reports`: the reports the `progress_report` workflow drafts. Parents see their
//! children's sent reports; teachers their students'; admins all — anything else is 404. The
//! printable page is plain HTML with its own inline style. Admins approve waiting drafts in
//! bulk (`POST /v1/progress-reports/approve`), as if each were approved in the review inbox.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser};
use crate::error::{ApiError, ApiResult};
use crate::http::escape_html;
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::{on_db, text_enum};

text_enum! {
    /// Where a report is.
    pub enum ReportStatus {
        Draft = "draft",
        Approved = "approved",
        Sent = "sent",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_reports))
        .routes(routes!(approve_reports))
        .routes(routes!(get_report))
        .routes(routes!(report_html))
        .routes(routes!(report_view))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct ProgressReport {
    pub id: Uuid,
    pub student_id: Uuid,
    pub family_id: Uuid,
    pub teacher_id: Option<Uuid>,
    pub period_start: NaiveDate,
    pub period_end: NaiveDate,
    pub status: ReportStatus,
    pub language: String,
    pub summary: String,
    pub body: String,
    /// Whether the student needs attention (for the school; reasons below).
    pub attention: bool,
    #[schema(value_type = Vec<String>)]
    pub attention_reasons: SqlJson<Value>,
    /// Lessons, attendance and makeup figures of the period.
    #[schema(value_type = Object)]
    pub metrics: SqlJson<Value>,
    pub run_id: Option<Uuid>,
    pub drafted_by: Option<String>,
    pub approved_by: Option<Uuid>,
    pub approved_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "r.id, r.student_id, r.family_id, r.teacher_id, r.period_start, r.period_end, r.status, r.language, \
    r.summary, r.body, r.attention, r.attention_reasons, r.metrics, r.run_id, r.drafted_by, r.approved_by, r.approved_at, \
    r.sent_at, r.created_at";

/// `$1` family (parents: their own, sent reports only), `$2` teacher (their students').
const VISIBLE: &str = "($1 IS NULL OR (r.family_id = $1 AND r.status = 'sent')) AND ($2 IS NULL OR r.teacher_id = $2)";

async fn find_visible(state: &AppState, user: &CurrentUser, id: Uuid) -> ApiResult<ProgressReport> {
    let (family, teacher) = user.row_filter().ok_or(ApiError::NotFound)?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM progress_reports r WHERE {VISIBLE} AND r.id = $3"));
    on_db!(&state.db, pool => sqlx::query_as::<_, ProgressReport>(sql).bind(family).bind(teacher).bind(id)
        .fetch_optional(pool).await)?
    .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportFilter {
    student_id: Option<Uuid>,
    /// `draft`, `approved` or `sent`.
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Progress reports the caller may see, oldest first.
#[utoipa::path(get, path = "/v1/progress-reports", tag = "workflows", params(ReportFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<ProgressReport>)), (status = 401), (status = 422)))]
async fn list_reports(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<ReportFilter>,
) -> ApiResult<Json<Page<ProgressReport>>> {
    let Some((family, teacher)) = user.row_filter() else {
        return Ok(Json(Page { items: vec![], next_cursor: None }));
    };
    let mut errors = Errors::default();
    let status = errors.optional_choice::<ReportStatus>("status", filter.status.as_deref());
    errors.into_result()?;
    let page = PageParams { limit: filter.limit, cursor: filter.cursor };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM progress_reports r WHERE {VISIBLE} AND ($3 IS NULL OR r.student_id = $3) \
         AND ($4 IS NULL OR r.status = $4) AND ($5 IS NULL OR r.id > $5) ORDER BY r.id LIMIT $6"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, ProgressReport>(sql).bind(family).bind(teacher)
        .bind(filter.student_id).bind(status).bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |r| r.id)?))
}

/// One progress report.
#[utoipa::path(get, path = "/v1/progress-reports/{id}", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, body = ProgressReport), (status = 401), (status = 404)))]
async fn get_report(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProgressReport>> {
    Ok(Json(find_visible(&state, &user, id).await?))
}

/// The printable report (HTML with its own inline style; no scripts).
#[utoipa::path(get, path = "/v1/progress-reports/{id}/html", tag = "workflows", security(("bearer" = [])),
    responses((status = 200, content_type = "text/html"), (status = 401), (status = 404)))]
async fn report_html(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Response> {
    let report = find_visible(&state, &user, id).await?;
    printable(&state, &report).await
}

/// The printable report without signing in: the link in the family's email (`expires`,
/// `sig`); drafts never open this way.
#[utoipa::path(get, path = "/v1/progress-reports/{id}/view", tag = "workflows", params(crate::http::signed_links::Signed),
    responses((status = 200, content_type = "text/html"), (status = 403, description = "Link altered or expired"),
        (status = 404)))]
async fn report_view(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(link): Query<crate::http::signed_links::Signed>,
) -> ApiResult<Response> {
    use crate::http::signed_links;
    if let Err(why) = signed_links::check(&state, "progress-reports", id, "view", link.expires, &link.sig).await? {
        return Ok(crate::billing::invoices::link_refused(why));
    }
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM progress_reports r WHERE r.id = $1"));
    let report =
        on_db!(&state.db, pool => sqlx::query_as::<_, ProgressReport>(sql).bind(id).fetch_optional(pool).await)?
            .filter(|r| r.status != ReportStatus::Draft)
            .ok_or(ApiError::NotFound)?;
    printable(&state, &report).await
}

async fn printable(state: &AppState, report: &ProgressReport) -> ApiResult<Response> {
    let student = crate::people::service::student(&state.db, report.student_id).await?.ok_or(ApiError::NotFound)?;
    let name = student.preferred_name.clone().unwrap_or(student.first_name.clone());
    let french = report.language == "fr";
    let m = &report.metrics.0;
    let (title, lessons_label, present_label) = if french {
        ("Bulletin de progrès", "Cours", "Présences")
    } else {
        ("Progress report", "Lessons", "Attended")
    };
    let paragraphs: String =
        report.body.split("\n\n").map(|p| format!("<p>{}</p>", escape_html(p).replace('\n', "<br>"))).collect();
    let page = format!(
        "<!doctype html><html lang=\"{lang}\"><head><meta charset=\"utf-8\"><title>{title} – {name}</title>\
         <style>body{{font-family:Georgia,serif;max-width:40em;margin:2em auto;line-height:1.5;color:#222}}\
         h1{{font-size:1.4em;margin-bottom:0}}.period{{color:#666}}.summary{{font-style:italic}}\
         table{{border-collapse:collapse;margin:1em 0}}td{{padding:.2em 1em .2em 0}}\
         @media print{{body{{margin:0}}}}</style></head><body>\
         <h1>{title}: {name}</h1><p class=\"period\">{school} · {instrument} · {start} – {end}</p>\
         <p class=\"summary\">{summary}</p><table><tr><td>{lessons_label}</td><td>{lessons}</td></tr>\
         <tr><td>{present_label}</td><td>{present}</td></tr></table>{paragraphs}</body></html>",
        lang = if french { "fr" } else { "en" },
        name = escape_html(&name),
        school = escape_html(crate::messaging::templates::SCHOOL),
        instrument = escape_html(&student.instrument),
        start = report.period_start,
        end = report.period_end,
        summary = escape_html(&report.summary),
        lessons = m["lessons"],
        present = m["present"],
    );
    let mut response = Html(page).into_response();
    // Inline style only; still no scripts, frames or remote content.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkApproval {
    /// The draft reports to approve as drafted.
    report_ids: Vec<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BulkResult {
    /// Reports whose review was approved now.
    approved: Vec<Uuid>,
    /// Reports not waiting for review (already decided, or not found).
    skipped: Vec<Uuid>,
}

/// Approves waiting draft reports as drafted (admins), each exactly as the review inbox would.
#[utoipa::path(post, path = "/v1/progress-reports/approve", tag = "workflows", request_body = BulkApproval,
    security(("bearer" = [])),
    responses((status = 200, body = BulkResult), (status = 401), (status = 403), (status = 422)))]
async fn approve_reports(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<BulkApproval>,
) -> ApiResult<Json<BulkResult>> {
    if input.report_ids.len() > 500 {
        return Err(ApiError::invalid("report_ids", "at most 500 at a time"));
    }
    let (mut approved, mut skipped) = (Vec::new(), Vec::new());
    for id in input.report_ids {
        const RUN: &str = "SELECT run_id FROM progress_reports WHERE id = $1 AND status = 'draft'";
        let run: Option<Option<Uuid>> =
            on_db!(&state.db, pool => sqlx::query_scalar(RUN).bind(id).fetch_optional(pool).await)?;
        let Some(Some(run)) = run else {
            skipped.push(id);
            continue;
        };
        let mut tx = state.db.begin().await?;
        match super::reviews::pending_of_run(&mut tx, run).await? {
            Some(review) => {
                super::reviews::approve_in(&mut tx, &admin, review, None).await?;
                tx.commit().await?;
                approved.push(id);
            }
            None => {
                tx.rollback().await?;
                skipped.push(id);
            }
        }
    }
    state.job_wakeup.notify_one();
    Ok(Json(BulkResult { approved, skipped }))
}
