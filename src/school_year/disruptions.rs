//! A closure or a teacher's time off added after lessons were booked. The lessons it covers
//! are found in the same transaction that adds it and, per `CEDAR_CLOSURE_ACTION`, either
//! cancelled (not billed; time off — and closures when `CEDAR_CLOSURE_MAKEUP_CREDIT` — earn a
//! makeup credit within the usual cap) or left for the office to move, with a task per lesson
//! listing free slots. Each affected family gets one email, in its language.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::AppState;
use crate::config::ClosureAction;
use crate::db::Tx;
use crate::error::ApiResult;
use crate::on_tx;
use crate::privacy::audit::{self, AuditEvent};
use crate::scheduling::booking::{Exceptions, windows_in_tx};
use crate::scheduling::calendar::open_slots;
use crate::time::at_local;

/// The calendar exception that disrupts lessons.
pub struct Disruption<'a> {
    pub id: Uuid,
    /// `closure` or `time_off`.
    pub kind: &'a str,
    pub teacher_id: Option<Uuid>,
    pub name: &'a str,
    pub starts_on: NaiveDate,
    pub ends_on: NaiveDate,
}

/// What adding the exception did to lessons already booked.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Affected {
    /// `cancelled`, `to_reschedule` (tasks for the office), or `none` (no lesson affected).
    pub action: &'static str,
    /// The future scheduled lessons the exception covers.
    pub lesson_ids: Vec<Uuid>,
    /// Families emailed (once each).
    pub families_notified: usize,
    /// Makeup credits granted for the cancelled lessons.
    pub makeup_credits: usize,
    /// Tasks asking the office to move a lesson (reschedule mode).
    pub task_ids: Vec<Uuid>,
}

#[derive(Debug, sqlx::FromRow)]
struct Lesson {
    id: Uuid,
    student_id: Uuid,
    teacher_id: Uuid,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    family_id: Uuid,
    student: String,
    teacher: String,
}

/// Finds and handles the lessons `disruption` covers, in the caller's transaction.
pub async fn apply(
    tx: &mut Tx,
    state: &AppState,
    disruption: &Disruption<'_>,
    actor: Option<Uuid>,
) -> ApiResult<Affected> {
    const SQL: &str = "SELECT l.id, l.student_id, l.teacher_id, l.starts_at, l.ends_at, s.family_id, \
        COALESCE(s.preferred_name, s.first_name) AS student, t.first_name || ' ' || t.last_name AS teacher \
        FROM lessons l JOIN students s ON s.id = l.student_id JOIN teachers t ON t.id = l.teacher_id \
        WHERE l.status = 'scheduled' AND l.starts_at >= $1 AND l.starts_at < $2 AND ($3 IS NULL OR l.teacher_id = $3) \
        ORDER BY l.starts_at, l.id";
    let tz = state.settings.timezone;
    let from = at_local(tz, disruption.starts_on, NaiveTime::MIN).max(Utc::now());
    let to = at_local(tz, disruption.ends_on + Duration::days(1), NaiveTime::MIN);
    let lessons: Vec<Lesson> = on_tx!(tx, conn => sqlx::query_as(SQL).bind(from).bind(to).bind(disruption.teacher_id)
        .fetch_all(&mut **conn).await)?;
    if lessons.is_empty() {
        return Ok(Affected { action: "none", ..Affected::default() });
    }
    let time_off = disruption.kind == "time_off";
    let mut affected = Affected { lesson_ids: lessons.iter().map(|l| l.id).collect(), ..Affected::default() };
    let cancel = state.settings.school_year.closure_action == ClosureAction::Cancel;
    let makeup = cancel && (time_off || state.settings.school_year.closure_makeup_credit);
    if cancel {
        affected.action = "cancelled";
        // The teacher's absence is the school's cancellation (`cancelled_by_teacher`: not billed,
        // credited in flat billing); a closure leaves attendance empty (not billed either).
        const CANCEL: &str = "UPDATE lessons SET status = 'cancelled', attendance = $2, attendance_note = $3, \
            attendance_marked_at = $4, updated_at = $4 WHERE id = $1 AND status = 'scheduled'";
        let attendance = time_off.then_some("cancelled_by_teacher");
        let now = Utc::now();
        for lesson in &lessons {
            on_tx!(tx, conn => sqlx::query(CANCEL).bind(lesson.id).bind(attendance).bind(disruption.name).bind(now)
                .execute(&mut **conn).await.map(|_| ()))?;
            if makeup {
                let settings = &state.settings;
                let granted = crate::scheduling::credits::grant_for(
                    tx,
                    lesson.student_id,
                    lesson.id,
                    settings.makeup_expiry_days,
                    settings.makeup_cap,
                )
                .await?;
                affected.makeup_credits += usize::from(granted.is_ok());
            }
        }
    } else {
        affected.action = "to_reschedule";
        for lesson in &lessons {
            affected.task_ids.push(reschedule_task(tx, state, disruption, lesson).await?);
        }
    }
    affected.families_notified = notify_families(tx, state, disruption, &lessons, cancel, makeup).await?;
    audit::record_tx(
        tx,
        AuditEvent {
            actor_id: actor,
            ..AuditEvent::new("calendar_exception.lessons_affected")
        }
        .subject("calendar_exception", disruption.id)
        .details(json!({"action": affected.action, "lessons": affected.lesson_ids, "makeup_credits": affected.makeup_credits})),
    )
    .await?;
    Ok(affected)
}

/// A task to move one lesson, listing up to five free slots of its teacher (and student) in
/// the two weeks after the exception ends.
async fn reschedule_task(
    tx: &mut Tx,
    state: &AppState,
    disruption: &Disruption<'_>,
    lesson: &Lesson,
) -> ApiResult<Uuid> {
    const BUSY: &str = "SELECT starts_at, ends_at FROM lessons WHERE status = 'scheduled' AND starts_at < $2 \
        AND ends_at > $1 AND starts_at > $5 AND (teacher_id = $3 OR student_id = $4)";
    let tz = state.settings.timezone;
    let first_day = disruption.ends_on + Duration::days(1);
    let range = (at_local(tz, first_day, NaiveTime::MIN), at_local(tz, first_day + Duration::days(14), NaiveTime::MIN));
    let windows = windows_in_tx(tx, lesson.teacher_id).await?;
    let exceptions = Exceptions::load(tx, first_day, first_day + Duration::days(14)).await?;
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = on_tx!(tx, conn => sqlx::query_as(BUSY).bind(range.0).bind(range.1)
        .bind(lesson.teacher_id).bind(lesson.student_id).bind(crate::scheduling::running_since(range.0))
        .fetch_all(&mut **conn).await)?;
    let slots =
        open_slots(&windows, &exceptions, &busy, tz, lesson.teacher_id, range, lesson.ends_at - lesson.starts_at, 5);
    let when = crate::messaging::when(lesson.starts_at, tz, "en");
    let mut detail = format!("{} ({}) with {}: {when}. Free slots:\n", lesson.student, disruption.name, lesson.teacher);
    if slots.is_empty() {
        detail.push_str("- none in the two weeks after; look further or book a makeup\n");
    }
    for (start, _) in &slots {
        detail.push_str(&format!("- {} ({})\n", crate::messaging::when(*start, tz, "en"), start.to_rfc3339()));
    }
    let task = crate::tasks::NewTask {
        title: format!("Reschedule {}'s lesson of {when}: {}", lesson.student, disruption.name),
        detail: Some(detail),
        due_on: Some(crate::time::local_date(tz, lesson.starts_at)),
        subject_type: Some("lesson".into()),
        subject_id: Some(lesson.id),
        dedupe_key: Some(format!("disruption:{}:{}", disruption.id, lesson.id)),
        ..crate::tasks::NewTask::default()
    };
    Ok(crate::tasks::create(tx, task).await?)
}

/// One email per family listing its affected lessons.
async fn notify_families(
    tx: &mut Tx,
    state: &AppState,
    disruption: &Disruption<'_>,
    lessons: &[Lesson],
    cancelled: bool,
    makeup: bool,
) -> ApiResult<usize> {
    let tz = state.settings.timezone;
    let mut by_family: BTreeMap<Uuid, Vec<&Lesson>> = BTreeMap::new();
    for lesson in lessons {
        by_family.entry(lesson.family_id).or_default().push(lesson);
    }
    let mut notified = 0;
    for (family, own) in by_family {
        let vars = |language: &str| {
            json!({
                "reason": disruption.name,
                "closure": disruption.kind == "closure",
                "teacher": own[0].teacher,
                "cancelled": cancelled,
                "makeup": makeup,
                "lessons": own.iter().map(|l| json!({"student": l.student, "teacher": l.teacher,
                    "when": crate::messaging::when(l.starts_at, tz, language)})).collect::<Vec<_>>(),
            })
        };
        let key = format!("disruption:{}:{family}", disruption.id);
        let sent =
            crate::messaging::email_family(tx, &state.settings, family, "lessons_disrupted", vars, Some(&key)).await?;
        notified += usize::from(sent > 0);
    }
    Ok(notified)
}
