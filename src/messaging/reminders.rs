//! Scheduled emails, evaluated in the school's zone: lesson reminders (every 10 minutes, for
//! lessons starting within `CEDAR_LESSON_REMINDER_HOURS`) and a daily evening nudge to
//! teachers whose past week has lessons without attendance. Dedupe keys make each reminder
//! go out once however often the schedule runs.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::app::AppState;
use crate::on_db;

pub const LESSONS: &str = "reminders.lessons";
pub const ATTENDANCE: &str = "reminders.attendance";

/// Queues a reminder to each guardian of each lesson starting soon. Returns how many.
pub async fn lesson_reminders(state: &AppState) -> anyhow::Result<usize> {
    const SQL: &str = "SELECT l.id, l.starts_at, s.family_id, COALESCE(s.preferred_name, s.first_name), \
        t.first_name || ' ' || t.last_name, r.name, l.teacher_id FROM lessons l JOIN students s ON s.id = l.student_id \
        JOIN teachers t ON t.id = l.teacher_id LEFT JOIN rooms r ON r.id = l.room_id \
        WHERE l.status = 'scheduled' AND l.starts_at > $1 AND l.starts_at <= $2 ORDER BY l.starts_at";
    type Row = (Uuid, DateTime<Utc>, Uuid, String, String, Option<String>, Uuid);
    let now = Utc::now();
    let horizon = now + Duration::hours(i64::from(state.settings.email.lesson_reminder_hours));
    let lessons: Vec<Row> =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(now).bind(horizon).fetch_all(pool).await)?;
    let mut queued = 0;
    let tz = state.settings.timezone;
    // A lesson on a closure day or its teacher's time off (left for the office to move, with
    // `CEDAR_CLOSURE_ACTION=reschedule`) is not reminded.
    let mut tx = state.db.begin_read().await?;
    let exceptions = crate::scheduling::booking::Exceptions::load(
        &mut tx,
        crate::time::local_date(tz, now),
        crate::time::local_date(tz, horizon),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.rollback().await?;
    for (lesson, starts_at, family, student, teacher, room, teacher_id) in lessons {
        let date = crate::time::local_date(tz, starts_at);
        if exceptions.closure(date).is_some() || exceptions.time_off(teacher_id, date) {
            continue;
        }
        let mut tx = state.db.begin().await?;
        let vars = |language: &str| json!({"student": student, "teacher": teacher, "room": room, "when": super::when(starts_at, tz, language)});
        let key = format!("lesson-reminder:{lesson}:{}", starts_at.timestamp());
        queued += super::email_family(&mut tx, &state.settings, family, "lesson_reminder", vars, Some(&key))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
    }
    if queued > 0 {
        state.job_wakeup.notify_one();
    }
    Ok(queued)
}

/// Queues one email per teacher listing their past week's lessons without attendance.
pub async fn attendance_nudges(state: &AppState) -> anyhow::Result<usize> {
    const SQL: &str = "SELECT l.teacher_id, l.starts_at, s.first_name || ' ' || s.last_name FROM lessons l \
        JOIN students s ON s.id = l.student_id WHERE l.status = 'scheduled' AND l.attendance IS NULL \
        AND l.ends_at <= $1 AND l.ends_at > $2 ORDER BY l.teacher_id, l.starts_at";
    const ACCOUNT: &str = "SELECT id FROM users WHERE teacher_id = $1 AND status = 'active'";
    let now = Utc::now();
    let rows: Vec<(Uuid, DateTime<Utc>, String)> =
        on_db!(&state.db, pool => sqlx::query_as(SQL).bind(now).bind(now - Duration::days(7)).fetch_all(pool).await)?;
    let tz = state.settings.timezone;
    let today = now.with_timezone(&tz).date_naive();
    let mut queued = 0;
    let mut teachers: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    teachers.dedup();
    for teacher in teachers {
        let lessons: Vec<_> = rows
            .iter()
            .filter(|r| r.0 == teacher)
            .map(|(_, at, student)| json!({"when": super::when(*at, tz, "en"), "student": student}))
            .collect();
        let account: Option<Uuid> =
            on_db!(&state.db, pool => sqlx::query_scalar(ACCOUNT).bind(teacher).fetch_optional(pool).await)?;
        let Some(user) = account else { continue };
        let mut tx = state.db.begin().await?;
        let vars = json!({"count": lessons.len(), "lessons": lessons});
        let key = Some(format!("attendance-nudge:{teacher}:{today}"));
        if super::email_user(&mut tx, &state.settings, user, "attendance_nudge", vars, key)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .is_some()
        {
            queued += 1;
        }
        tx.commit().await?;
    }
    if queued > 0 {
        state.job_wakeup.notify_one();
    }
    Ok(queued)
}
