//! `GET /v1/privacy/export?family_id=`: an access request answered with one JSON document of
//! everything Cedar holds about a family — and nothing of another family. Secrets (password
//! hashes, token hashes, calendar tokens) are withheld. Every export is audited.

use axum::extract::State;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::audit::{self, AuditEvent};
use super::consents::family_for;
use super::rows::rows_as_json;
use crate::app::AppState;
use crate::auth::CurrentUser;
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::on_db;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(export))
}

/// Each section of the export: its name and the query that selects the family's rows (`$1`).
const SECTIONS: &[(&str, &str)] = &[
    ("family", "SELECT * FROM families WHERE id = $1"),
    (
        "guardians",
        "SELECT id, email, role, display_name, status, created_at, updated_at, last_sign_in_at FROM users \
         WHERE family_id = $1 ORDER BY id",
    ),
    ("students", "SELECT * FROM students WHERE family_id = $1 ORDER BY id"),
    ("enrollments", "SELECT * FROM enrollments WHERE family_id = $1 ORDER BY id"),
    ("reenrollments", "SELECT * FROM reenrollments WHERE family_id = $1 ORDER BY id"),
    (
        "lessons",
        // Every column but `row_version`, the kept pages' internal number (scheduling::lesson_pages).
        "SELECT l.id, l.series_id, l.teacher_id, l.student_id, l.room_id, l.starts_at, l.ends_at, l.status, \
         l.attendance, l.attendance_note, l.attendance_marked_by, l.attendance_marked_at, l.is_makeup, \
         l.availability_override, l.notes, l.created_at, l.updated_at, l.substitute_for \
         FROM lessons l JOIN students s ON s.id = l.student_id WHERE s.family_id = $1 ORDER BY l.starts_at",
    ),
    (
        "makeup_credits",
        "SELECT m.* FROM makeup_credits m JOIN students s ON s.id = m.student_id WHERE s.family_id = $1 ORDER BY m.id",
    ),
    (
        "progress_notes",
        "SELECT n.* FROM progress_notes n JOIN students s ON s.id = n.student_id WHERE s.family_id = $1 ORDER BY n.id",
    ),
    ("invoices", "SELECT * FROM invoices WHERE family_id = $1 ORDER BY issued_at"),
    (
        "invoice_lines",
        "SELECT l.* FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE i.family_id = $1 \
         ORDER BY l.invoice_id, l.position",
    ),
    ("payments", "SELECT * FROM payments WHERE family_id = $1 ORDER BY id"),
    (
        "payment_plans",
        "SELECT p.id, p.invoice_id, i.seq, i.due_on, i.amount_cents FROM payment_plans p \
         JOIN payment_plan_instalments i ON i.plan_id = p.id JOIN invoices v ON v.id = p.invoice_id \
         WHERE v.family_id = $1 ORDER BY p.id, i.seq",
    ),
    ("billing_inquiries", "SELECT * FROM billing_inquiries WHERE family_id = $1 ORDER BY id"),
    (
        "threads",
        "SELECT t.* FROM threads t WHERE t.family_id = $1 OR EXISTS (SELECT 1 FROM thread_participants p \
         JOIN users u ON u.id = p.user_id WHERE p.thread_id = t.id AND u.family_id = $1) ORDER BY t.id",
    ),
    (
        "messages",
        "SELECT m.* FROM messages m JOIN threads t ON t.id = m.thread_id WHERE t.family_id = $1 OR EXISTS \
         (SELECT 1 FROM thread_participants p JOIN users u ON u.id = p.user_id WHERE p.thread_id = t.id \
         AND u.family_id = $1) ORDER BY m.id",
    ),
    (
        "emails",
        "SELECT id, template, to_address, to_name, language, subject, body, status, created_at, sent_at FROM outbox \
         WHERE user_id IN (SELECT id FROM users WHERE family_id = $1) \
         OR to_address = (SELECT email FROM families WHERE id = $1) ORDER BY id",
    ),
    ("consents", "SELECT * FROM consents WHERE family_id = $1 ORDER BY recorded_at, id"),
    ("erasure_requests", "SELECT * FROM erasure_requests WHERE family_id = $1 ORDER BY id"),
    (
        "workflow_runs",
        "SELECT id, workflow, status, subject_kind, subject_id, created_at, finished_at FROM workflow_runs \
         WHERE family_id = $1 ORDER BY id",
    ),
    (
        "ai_calls",
        "SELECT a.id, r.workflow AS purpose, a.step, a.provider, a.model, a.outcome, a.created_at FROM ai_calls a \
         JOIN workflow_runs r ON r.id = a.run_id WHERE r.family_id = $1 ORDER BY a.id",
    ),
];

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// The family (parents: their own; admins: any).
    family_id: Option<Uuid>,
}

/// Everything Cedar holds about a family, as one JSON document (an access request under
/// PIPEDA). Parents export their own family (another's is 404); admins any.
#[utoipa::path(get, path = "/v1/privacy/export", tag = "privacy", params(ExportQuery), security(("bearer" = [])),
    responses((status = 200, description = "The family's data, by kind of record"), (status = 401), (status = 403),
        (status = 404), (status = 422)))]
async fn export(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(query): Query<ExportQuery>,
) -> ApiResult<Json<Value>> {
    let family = family_for(&user, query.family_id)?.ok_or_else(|| ApiError::invalid("family_id", "is required"))?;
    const EXISTS: &str = "SELECT COUNT(*) FROM families WHERE id = $1";
    let exists: i64 = on_db!(&state.db, pool => sqlx::query_scalar(EXISTS).bind(family).fetch_one(pool).await)?;
    if exists == 0 {
        return Err(ApiError::NotFound);
    }
    let mut document = Map::new();
    document.insert("exported_at".into(), json!(Utc::now()));
    document.insert("family_id".into(), json!(family));
    for (name, sql) in SECTIONS {
        let mut rows = rows_as_json(&state.db, sql, family).await?;
        let value = if *name == "family" { rows.pop().unwrap_or(Value::Null) } else { Value::Array(rows) };
        document.insert((*name).to_owned(), value);
    }
    // The audit trail about the family, its students and its guardians.
    let mut subjects = vec![family.to_string()];
    for section in ["students", "guardians"] {
        subjects.extend(
            document[section].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str()).map(str::to_owned),
        );
    }
    document.insert("audit_log".into(), json!(audit::about(&state.db, &subjects).await?));
    let event = AuditEvent::new("privacy.exported").by(&user).subject("family", family);
    audit::record(&state.db, event).await?;
    Ok(Json(Value::Object(document)))
}
