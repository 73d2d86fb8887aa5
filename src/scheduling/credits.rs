//! Attendance and makeup credits. A lesson cancelled by the teacher — or by the student with
//! enough notice — earns the student a makeup credit (expiring, capped); booking a lesson with
//! `makeup: true` spends the oldest one.

use axum::extract::{Path, State};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::lessons::{Lesson, find_visible};
use super::{Attendance, CreditStatus, LessonStatus};
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::db::{Db, Tx};
use crate::error::{ApiError, ApiResult};
use crate::http::validate::Errors;
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_credits))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttendanceInput {
    /// `present`, `absent`, `cancelled_by_student` or `cancelled_by_teacher`.
    status: String,
    note: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttendanceResult {
    lesson: Lesson,
    /// The makeup credit this earned, if any.
    makeup_credit: Option<MakeupCredit>,
    /// Why no credit was granted for a cancellation, if none was.
    makeup_note: Option<String>,
}

/// Records attendance. Teachers mark their own lessons, admins any; a parent may only cancel
/// their child's lesson (`cancelled_by_student`). Cancellations free the slot.
#[utoipa::path(post, path = "/v1/lessons/{id}/attendance", tag = "scheduling", request_body = AttendanceInput, security(("bearer" = [])),
    responses((status = 200, body = AttendanceResult), (status = 401), (status = 403), (status = 404), (status = 422)))]
pub(crate) async fn mark_attendance(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<AttendanceInput>,
) -> ApiResult<Json<AttendanceResult>> {
    let lesson = find_visible(&state.db, &user, id).await?;
    let mut errors = Errors::default();
    let attendance = errors.choice::<Attendance>("status", &input.status);
    let note = errors.optional_text("note", input.note.as_deref());
    errors.into_result()?;
    let attendance = attendance.expect("validated above");
    if user.role == Role::Parent && attendance != Attendance::CancelledByStudent {
        return Err(ApiError::ForbiddenBecause("Parents may only cancel a lesson (cancelled_by_student)".into()));
    }
    // A parent cancels ahead of time; a lesson that has begun, or was already marked, is the
    // teacher's or the office's to change (it may have been billed per lesson).
    if user.role == Role::Parent && (lesson.starts_at <= Utc::now() || lesson.attendance.is_some()) {
        return Err(ApiError::conflict("This lesson has started or was already marked; ask the office to change it"));
    }
    let cancelled = attendance.is_cancellation();
    let now = Utc::now();
    let mut tx = state.db.begin().await?;
    const SQL: &str = "UPDATE lessons SET attendance = $2, attendance_note = $3, attendance_marked_by = $4, \
        attendance_marked_at = $5, status = $6, updated_at = $5 WHERE id = $1";
    let status = if cancelled { LessonStatus::Cancelled } else { lesson.status };
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(attendance).bind(&note).bind(user.id).bind(now)
        .bind(status).execute(&mut **conn).await.map(|_| ()))?;

    let policy = &state.settings;
    let notice = lesson.starts_at - now;
    let earns = match attendance {
        Attendance::CancelledByTeacher => Ok(()),
        Attendance::CancelledByStudent if notice >= Duration::hours(i64::from(policy.makeup_notice_hours)) => Ok(()),
        Attendance::CancelledByStudent => {
            Err(format!("Cancelled with less than {} hours' notice", policy.makeup_notice_hours))
        }
        _ => Err(String::new()),
    };
    let (credit, makeup_note) = match earns {
        Ok(()) => match grant_credit(&mut tx, &lesson, policy.makeup_expiry_days, policy.makeup_cap).await? {
            Ok(credit) => (Some(credit), None),
            Err(why) => (None, Some(why)),
        },
        Err(why) => (None, (!why.is_empty()).then_some(why)),
    };
    audit::record_tx(
        &mut tx,
        AuditEvent::new("lesson.attendance")
            .by(&user)
            .subject("lesson", id)
            .details(json!({"status": attendance, "makeup_credit": credit.as_ref().map(|c| c.id)})),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(AttendanceResult { lesson: find_visible(&state.db, &user, id).await?, makeup_credit: credit, makeup_note }))
}

/// Grants a credit for a cancelled lesson unless the student holds the maximum already; once
/// per lesson (marking the same cancellation twice grants nothing more).
async fn grant_credit(
    tx: &mut Tx,
    lesson: &Lesson,
    expiry_days: u32,
    cap: u32,
) -> ApiResult<Result<MakeupCredit, String>> {
    grant_for(tx, lesson.student_id, lesson.id, expiry_days, cap).await
}

/// [`grant_credit`] by ids: a cancellation the office made (a closure, a teacher's time off).
pub(crate) async fn grant_for(
    tx: &mut Tx,
    student_id: Uuid,
    lesson_id: Uuid,
    expiry_days: u32,
    cap: u32,
) -> ApiResult<Result<MakeupCredit, String>> {
    const HELD: &str =
        "SELECT COUNT(*) FROM makeup_credits WHERE student_id = $1 AND status = 'available' AND expires_at > $2";
    const INSERT: &str = "INSERT INTO makeup_credits (id, student_id, source_lesson_id, status, expires_at, created_at) \
        VALUES ($1, $2, $3, 'available', $4, $5) ON CONFLICT (source_lesson_id) DO NOTHING";
    let now = Utc::now();
    let held: i64 =
        on_tx!(tx, conn => sqlx::query_scalar(HELD).bind(student_id).bind(now).fetch_one(&mut **conn).await)?;
    if held >= i64::from(cap) {
        return Ok(Err(format!("The student already holds the maximum of {cap} makeup credits")));
    }
    let id = Uuid::now_v7();
    let inserted = on_tx!(tx, conn => sqlx::query(INSERT).bind(id).bind(student_id).bind(lesson_id)
        .bind(now + Duration::days(i64::from(expiry_days))).bind(now).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if inserted == 0 {
        return Ok(Err("This cancellation already earned a credit".into()));
    }
    let sql = sqlx::AssertSqlSafe(format!("SELECT {CREDIT_COLUMNS} FROM makeup_credits WHERE id = $1"));
    Ok(Ok(on_tx!(tx, conn => sqlx::query_as::<_, MakeupCredit>(sql).bind(id).fetch_one(&mut **conn).await)?))
}

/// Spends the student's oldest valid credit on `lesson_id`; 422 when there is none.
pub(crate) async fn spend_credit(tx: &mut Tx, student_id: Uuid, lesson_id: Uuid) -> ApiResult<()> {
    const PICK: &str = "SELECT id FROM makeup_credits WHERE student_id = $1 AND status = 'available' AND expires_at > $2 \
        ORDER BY expires_at, id LIMIT 1";
    const SPEND: &str =
        "UPDATE makeup_credits SET status = 'used', used_lesson_id = $2 WHERE id = $1 AND status = 'available'";
    let now = Utc::now();
    let credit: Option<Uuid> =
        on_tx!(tx, conn => sqlx::query_scalar(PICK).bind(student_id).bind(now).fetch_optional(&mut **conn).await)?;
    let Some(credit) = credit else {
        return Err(ApiError::invalid("makeup", "The student has no makeup credit to spend"));
    };
    let spent = on_tx!(tx, conn => sqlx::query(SPEND).bind(credit).bind(lesson_id).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if spent == 0 {
        return Err(ApiError::conflict("The makeup credit was spent by another booking; retry"));
    }
    Ok(())
}

/// Marks credits past their expiry as expired; run periodically. Returns how many.
pub async fn expire_credits(db: &Db) -> anyhow::Result<u64> {
    const SQL: &str = "UPDATE makeup_credits SET status = 'expired' WHERE status = 'available' AND expires_at <= $1";
    Ok(on_db!(db, pool => sqlx::query(SQL).bind(Utc::now()).execute(pool).await.map(|r| r.rows_affected()))?)
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MakeupCredit {
    id: Uuid,
    student_id: Uuid,
    /// The cancelled lesson that earned it.
    source_lesson_id: Uuid,
    status: CreditStatus,
    expires_at: DateTime<Utc>,
    used_lesson_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

const CREDIT_COLUMNS: &str = "id, student_id, source_lesson_id, status, expires_at, used_lesson_id, created_at";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CreditFilter {
    student_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Credits {
    items: Vec<MakeupCredit>,
    /// Credits that can be spent now.
    available: usize,
}

/// A student's makeup credits (whoever may see the student).
#[utoipa::path(get, path = "/v1/makeup-credits", tag = "scheduling", params(CreditFilter), security(("bearer" = [])),
    responses((status = 200, body = Credits), (status = 401), (status = 404)))]
async fn list_credits(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<CreditFilter>,
) -> ApiResult<Json<Credits>> {
    crate::people::student_visible(&state.db, &user, q.student_id).await?;
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {CREDIT_COLUMNS} FROM makeup_credits WHERE student_id = $1 ORDER BY id"));
    let mut items =
        on_db!(&state.db, pool => sqlx::query_as::<_, MakeupCredit>(sql).bind(q.student_id).fetch_all(pool).await)?;
    // The daily job marks expired credits; until it has run, a credit past its date reads as
    // expired all the same.
    let now = Utc::now();
    for credit in items.iter_mut().filter(|c| c.status == CreditStatus::Available && c.expires_at <= now) {
        credit.status = CreditStatus::Expired;
    }
    let available = items.iter().filter(|c| c.status == CreditStatus::Available).count();
    Ok(Json(Credits { items, available }))
}
