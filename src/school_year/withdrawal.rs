//! A student leaving: from the effective date their lessons not yet marked are cancelled (so
//! they are neither reminded nor billed), flat billing stops the day before (prorated by the
//! billing run from `students.end_date`), open re-enrollment offers are declined, and each
//! teacher who loses lessons is told. Reactivating later restores none of it: lessons are
//! booked again on purpose.

use chrono::{Duration, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::db::Tx;
use crate::error::ApiResult;
use crate::on_tx;
use crate::time::at_local;

/// What a withdrawal did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Withdrawal {
    /// First day without lessons.
    pub effective_on: NaiveDate,
    pub lessons_cancelled: u64,
    /// Teachers emailed about the freed times.
    pub teachers_notified: usize,
}

/// Withdraws `student` from `effective_on`, in the caller's transaction (which also sets the
/// status).
pub async fn withdraw(tx: &mut Tx, state: &AppState, student: Uuid, effective_on: NaiveDate) -> ApiResult<Withdrawal> {
    const LESSONS: &str = "SELECT l.teacher_id, COUNT(*) FROM lessons l WHERE l.student_id = $1 AND l.status = 'scheduled' \
        AND l.attendance IS NULL AND l.starts_at >= $2 GROUP BY l.teacher_id ORDER BY l.teacher_id";
    const CANCEL: &str = "UPDATE lessons SET status = 'cancelled', attendance_note = 'withdrawn', updated_at = $3 \
        WHERE student_id = $1 AND status = 'scheduled' AND attendance IS NULL AND starts_at >= $2";
    const END: &str = "UPDATE students SET end_date = $2 WHERE id = $1 AND (end_date IS NULL OR end_date > $2)";
    const OFFERS: &str = "UPDATE reenrollments SET status = 'declined', decided_at = $2 WHERE student_id = $1 \
        AND status = 'offered'";
    const STUDENT: &str = "SELECT first_name || ' ' || last_name, instrument FROM students WHERE id = $1";
    const ACCOUNT: &str = "SELECT id FROM users WHERE teacher_id = $1 AND status = 'active'";
    let tz = state.settings.timezone;
    let from = at_local(tz, effective_on, NaiveTime::MIN);
    let now = Utc::now();
    let by_teacher: Vec<(Uuid, i64)> =
        on_tx!(tx, conn => sqlx::query_as(LESSONS).bind(student).bind(from).fetch_all(&mut **conn).await)?;
    let cancelled = on_tx!(tx, conn => sqlx::query(CANCEL).bind(student).bind(from).bind(now).execute(&mut **conn).await
        .map(|r| r.rows_affected()))?;
    on_tx!(tx, conn => sqlx::query(END).bind(student).bind(effective_on - Duration::days(1)).execute(&mut **conn).await
        .map(|_| ()))?;
    on_tx!(tx, conn => sqlx::query(OFFERS).bind(student).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    let (name, instrument): (String, String) =
        on_tx!(tx, conn => sqlx::query_as(STUDENT).bind(student).fetch_one(&mut **conn).await)?;
    let mut notified = 0;
    for (teacher, lessons) in by_teacher {
        let account: Option<Uuid> =
            on_tx!(tx, conn => sqlx::query_scalar(ACCOUNT).bind(teacher).fetch_optional(&mut **conn).await)?;
        let Some(account) = account else { continue };
        let vars = json!({"student": name, "instrument": instrument, "effective": effective_on.to_string(), "lessons": lessons});
        let key = format!("withdrawn:{student}:{effective_on}:{teacher}");
        if crate::messaging::email_user(tx, &state.settings, account, "student_withdrawn", vars, Some(key))
            .await?
            .is_some()
        {
            notified += 1;
        }
    }
    Ok(Withdrawal { effective_on, lessons_cancelled: cancelled, teachers_notified: notified })
}
