//! `/v1/lessons`: single and recurring lessons, conflict detection (reported in full, and
//! enforced by the database), edits of one occurrence or this-and-following, attendance and
//! makeup credits.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::booking::{
    self, Booked, BookingOptions, Conflict, Occurrences, Parties, Skipped, Slot, conflict_error, conflicts, shift_local,
};
use super::calendar::Exceptions;
use super::facts::BookingFacts;
use super::lesson_list::LessonPage;
use super::recurrence;
use super::{Attendance, EditScope, LessonStatus};
use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::db::{CommitMark, Db};
use crate::error::{ApiError, ApiResult};
use crate::http::validate::Errors;
use crate::http::{Json, Query, nullable};
use crate::messaging::LessonNotice;
use crate::privacy::audit::{self, AuditEvent};
use crate::time::local_date;
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(super::lesson_list::list_lessons, create_lessons))
        .routes(routes!(get_lesson, update_lesson, delete_lesson))
        .routes(routes!(super::credits::mark_attendance))
}

/// Decoded from [`COLUMNS`] by position (`super::lesson_row`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Lesson {
    pub id: Uuid,
    /// The recurring series this occurrence belongs to.
    pub series_id: Option<Uuid>,
    pub teacher_id: Uuid,
    pub student_id: Uuid,
    pub room_id: Option<Uuid>,
    #[serde(serialize_with = "crate::time::json_utc")]
    pub starts_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::json_utc")]
    pub ends_at: DateTime<Utc>,
    pub status: LessonStatus,
    pub attendance: Option<Attendance>,
    pub attendance_note: Option<String>,
    /// Booked with a makeup credit.
    pub is_makeup: bool,
    /// Booked outside the teacher's availability by an admin.
    pub availability_override: bool,
    pub notes: Option<String>,
    /// The student's own teacher when a substitute (`teacher_id`) teaches this occurrence.
    pub substitute_for: Option<Uuid>,
    #[serde(serialize_with = "crate::time::json_utc")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::json_utc")]
    pub updated_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str = "l.id, l.series_id, l.teacher_id, l.student_id, l.room_id, l.starts_at, l.ends_at, \
    l.status, l.attendance, l.attendance_note, l.is_makeup, l.availability_override, l.notes, l.substitute_for, l.created_at, l.updated_at";

/// [`COLUMNS`] unqualified, for `RETURNING` (SQLite accepts no table name there).
pub(crate) const RETURNED: &str = "id, series_id, teacher_id, student_id, room_id, starts_at, ends_at, status, \
    attendance, attendance_note, is_makeup, availability_override, notes, substitute_for, created_at, updated_at";

/// Lessons a scope may see: `$1` family (parents: their children's), `$2` teacher (their own).
pub(crate) const VISIBLE: &str = "($1 IS NULL OR EXISTS (SELECT 1 FROM students s WHERE s.id = l.student_id \
    AND s.family_id = $1)) AND ($2 IS NULL OR l.teacher_id = $2)";

pub(crate) async fn find_visible(db: &Db, user: &CurrentUser, id: Uuid) -> ApiResult<Lesson> {
    let (family, teacher) = user.row_filter().ok_or(ApiError::NotFound)?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM lessons l WHERE {VISIBLE} AND l.id = $3"));
    on_db!(db, pool => sqlx::query_as::<_, Lesson>(sql).bind(family).bind(teacher).bind(id).fetch_optional(pool).await)?
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Recurrence {
    /// e.g. `FREQ=WEEKLY;COUNT=12` or `FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20261218`.
    rrule: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLesson {
    teacher_id: Uuid,
    student_id: Uuid,
    room_id: Option<Uuid>,
    /// Start of the (first) lesson.
    starts_at: DateTime<Utc>,
    /// End of the (first) lesson; or give `duration_minutes`.
    ends_at: Option<DateTime<Utc>>,
    duration_minutes: Option<i64>,
    recurrence: Option<Recurrence>,
    /// Admins may book outside the teacher's availability; the lesson records it.
    #[serde(default)]
    override_availability: bool,
    /// Book as a makeup lesson, spending one of the student's makeup credits.
    #[serde(default)]
    makeup: bool,
    notes: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DryRun {
    /// Report what would be booked and every conflict, without writing.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Booking {
    /// The first lesson booked (all of a series are in `occurrences`).
    #[serde(flatten)]
    lesson: Option<Lesson>,
    occurrences: Vec<Lesson>,
    /// Occurrences not booked because the school is closed or no term covers them.
    skipped: Vec<Skipped>,
}

impl Booking {
    fn new(booked: Booked, skipped: Vec<Skipped>) -> Self {
        Self { lesson: booked.lessons.first().cloned(), occurrences: booked.lessons, skipped }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DryRunReport {
    dry_run: bool,
    /// What would be booked.
    occurrences: Vec<SlotView>,
    skipped: Vec<Skipped>,
    conflicts: Vec<Conflict>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SlotView {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

/// Whom the caller may book for: admins anyone, teachers for themselves — and, for a new
/// booking, their own students only (`Some(teacher)`: to them anyone else's student is as
/// good as missing). Others 403.
fn booking_scope(user: &CurrentUser, teacher: Uuid, new_booking: bool) -> ApiResult<Option<Uuid>> {
    match user.role {
        Role::Admin => Ok(None),
        Role::Teacher if user.teacher_id == Some(teacher) => Ok(user.teacher_id.filter(|_| new_booking)),
        _ => Err(ApiError::Forbidden),
    }
}

/// Books a lesson or a weekly series. Every occurrence is checked against the teacher's,
/// student's and room's other lessons, the teacher's availability and time off, and closures;
/// any conflict → 409 listing them all, and nothing is booked. With `?dry_run=true` the
/// report comes back without writing.
#[utoipa::path(post, path = "/v1/lessons", tag = "scheduling", params(DryRun), request_body = CreateLesson, security(("bearer" = [])),
    responses((status = 201, body = Booking), (status = 200, body = DryRunReport), (status = 401), (status = 403),
        (status = 409, description = "Conflicts, listed in `conflicts`"), (status = 422)))]
async fn create_lessons(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(mode): Query<DryRun>,
    Json(input): Json<CreateLesson>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let mut errors = Errors::default();
    let ends_at = match (input.ends_at, input.duration_minutes) {
        (Some(end), None) => end,
        (None, Some(minutes)) if (1..=24 * 60).contains(&minutes) => input.starts_at + Duration::minutes(minutes),
        (None, Some(_)) => {
            errors.add("duration_minutes", "a lesson lasts 15 minutes to 4 hours");
            input.starts_at
        }
        _ => {
            errors.add("ends_at", "give ends_at or duration_minutes");
            input.starts_at
        }
    };
    let duration = ends_at - input.starts_at;
    if errors.0.is_empty() && !(super::MIN_LESSON..=super::MAX_LESSON).contains(&duration) {
        errors.add("ends_at", "a lesson lasts 15 minutes to 4 hours");
    }
    // A weekly rule without COUNT or UNTIL runs to the end of the term it starts in.
    let rrule = match &input.recurrence {
        Some(r) => Some(crate::school_year::terms::bounded_by_term(&state, &r.rrule, input.starts_at).await?),
        None => None,
    };
    let rule = match &rrule {
        Some(rrule) => match recurrence::parse(rrule) {
            Ok(rule) => Some(rule),
            Err(why) => {
                errors.add("recurrence.rrule", why);
                None
            }
        },
        None => None,
    };
    if input.override_availability && !user.is_admin() {
        errors.add("override_availability", "only admins may book outside availability");
    }
    if input.makeup && rule.is_some() {
        errors.add("makeup", "a makeup lesson is a single lesson");
    }
    let notes = errors.optional_text("notes", input.notes.as_deref());
    errors.into_result()?;
    let own_students_of = booking_scope(&user, input.teacher_id, true)?;
    let parties = Parties { teacher_id: input.teacher_id, student_id: input.student_id, room_id: input.room_id };
    let tz = state.settings.timezone;
    let candidates: Vec<Slot> = match &rule {
        Some(rule) => recurrence::expand(rule, input.starts_at, tz),
        None => vec![input.starts_at],
    }
    .into_iter()
    .map(|start| Slot {
        starts_at: start,
        ends_at: start + duration,
        teacher_id: input.teacher_id,
        student_id: input.student_id,
        room_id: input.room_id,
    })
    .collect();
    let days = local_date(tz, candidates.first().map_or(input.starts_at, |s| s.starts_at))
        ..=local_date(tz, candidates.last().map_or(input.starts_at, |s| s.starts_at));
    let check_availability = !input.override_availability;
    // PostgreSQL: one statement, no transaction (its exclusion constraints keep lessons
    // apart). SQLite: the same reads inside the booking's write transaction (its single
    // writer does).
    let (sqlite_tx, facts) = match &state.db {
        Db::Postgres(pool) => {
            (None, BookingFacts::read(pool, parties, own_students_of, days, &candidates, check_availability).await?)
        }
        Db::Sqlite(_) => {
            let mut tx = if mode.dry_run { state.db.begin_read().await? } else { state.db.begin().await? };
            let facts =
                BookingFacts::read_in(&mut tx, parties, own_students_of, days, &candidates, check_availability).await?;
            (Some(tx), facts)
        }
    };
    facts.parties_exist(input.room_id.is_some())?;
    // Occurrences of a series on closures or outside terms are skipped; a single lesson
    // there is a conflict.
    let mut skipped = Vec::new();
    let mut slots = Vec::new();
    for slot in candidates {
        let date = local_date(tz, slot.starts_at);
        let skip = match (rule.is_some(), facts.exceptions.closure(date)) {
            (false, _) => None,
            (true, Some(name)) => Some(("closure", name.to_owned())),
            (true, None) => {
                facts.exceptions.outside_terms(date).then(|| ("outside_term", "No term covers this date".to_owned()))
            }
        };
        match skip {
            Some((reason, detail)) => skipped.push(Skipped { starts_at: slot.starts_at, reason, detail }),
            None => slots.push(slot),
        }
    }
    let found = facts.conflicts(tz, &slots);
    if mode.dry_run {
        let report = DryRunReport {
            dry_run: true,
            occurrences: slots.iter().map(|s| SlotView { starts_at: s.starts_at, ends_at: s.ends_at }).collect(),
            skipped,
            conflicts: found,
        };
        return Ok((StatusCode::OK, Json(report)).into_response());
    }
    if !found.is_empty() {
        return Err(conflict_error(found).into());
    }
    if slots.is_empty() {
        return Err(ApiError::invalid("recurrence.rrule", "every occurrence falls on a closure or outside the terms"));
    }
    let options = BookingOptions {
        rrule: rrule.as_deref(),
        booked_by: Some(user.id),
        makeup: input.makeup,
        availability_override: input.override_availability,
        notes: notes.as_deref(),
    };
    let audit = AuditEvent::new("lesson.created").by(&user).details(json!({"occurrences": slots.len(),
        "skipped": skipped.len(), "availability_override": input.override_availability, "makeup": input.makeup}));
    let booking = match (&state.db, sqlite_tx) {
        // The common case on PostgreSQL — lessons and their audit entry — is one statement;
        // a makeup (its credit) or a keyed request (its mark) takes a transaction.
        (Db::Postgres(pool), _) if !input.makeup && !CommitMark::in_scope() => {
            Booking::new(booking::book_in_one_statement(pool, tz, &slots, options, audit).await?, skipped)
        }
        (_, tx) => {
            let mut tx = match tx {
                Some(tx) => tx,
                None => state.db.begin().await?,
            };
            let booked = booking::book(&mut tx, tz, &slots, options).await?;
            if input.makeup {
                super::credits::spend_credit(&mut tx, input.student_id, booked.lessons[0].id).await?;
            }
            let (kind, id) = booked.audit_subject();
            audit::record_tx(&mut tx, audit.subject(kind, id)).await?;
            let booking = Booking::new(booked, skipped);
            CommitMark::answer_with_json(201, &booking);
            tx.commit().await?;
            booking
        }
    };
    Ok((StatusCode::CREATED, Json(booking)).into_response())
}

/// One lesson the caller may see.
#[utoipa::path(get, path = "/v1/lessons/{id}", tag = "scheduling", security(("bearer" = [])),
    responses((status = 200, body = Lesson), (status = 401), (status = 404)))]
async fn get_lesson(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Json<Lesson>> {
    Ok(Json(find_visible(&state.db, &user, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateLesson {
    starts_at: Option<DateTime<Utc>>,
    ends_at: Option<DateTime<Utc>>,
    teacher_id: Option<Uuid>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    room_id: Option<Option<Uuid>>,
    /// `scheduled` or `cancelled`.
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    notes: Option<Option<String>>,
    /// `this` (default) or `following`: this occurrence and the later ones of its series
    /// move by the same amount.
    scope: Option<String>,
    #[serde(default)]
    override_availability: bool,
}

/// Moves, reassigns, cancels or annotates a lesson, or this and the following occurrences of
/// its series. Conflicts are checked as on creation.
#[utoipa::path(patch, path = "/v1/lessons/{id}", tag = "scheduling", request_body = UpdateLesson, security(("bearer" = [])),
    responses((status = 200, body = LessonPage), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn update_lesson(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateLesson>,
) -> ApiResult<Json<LessonPage>> {
    let lesson = find_visible(&state.db, &user, id).await?;
    user.require(&[Role::Admin, Role::Teacher])?;
    let mut errors = Errors::default();
    let scope = match errors.optional_choice::<EditScope>("scope", input.scope.as_deref()) {
        Some(EditScope::Series) => {
            errors.add("scope", "must be one of: this, following");
            EditScope::This
        }
        other => other.unwrap_or(EditScope::This),
    };
    let new_status = errors.optional_choice::<LessonStatus>("status", input.status.as_deref());
    if input.override_availability && !user.is_admin() {
        errors.add("override_availability", "only admins may book outside availability");
    }
    if scope == EditScope::Following && lesson.series_id.is_none() {
        errors.add("scope", "this lesson is not part of a series");
    }
    if user.role == Role::Teacher && input.teacher_id.is_some_and(|t| Some(t) != user.teacher_id) {
        errors.add("teacher_id", "teachers cannot hand lessons to another teacher; ask the office");
    }
    let notes = match &input.notes {
        Some(v) => errors.optional_text("notes", v.as_deref()),
        None => lesson.notes.clone(),
    };
    let new_start = input.starts_at.unwrap_or(lesson.starts_at);
    let new_end = input.ends_at.unwrap_or(new_start + (lesson.ends_at - lesson.starts_at));
    let duration = new_end - new_start;
    if !(super::MIN_LESSON..=super::MAX_LESSON).contains(&duration) {
        errors.add("ends_at", "a lesson lasts 15 minutes to 4 hours");
    }
    errors.into_result()?;
    let shift = new_start - lesson.starts_at;
    let teacher = input.teacher_id.unwrap_or(lesson.teacher_id);
    let room = input.room_id.unwrap_or(lesson.room_id);
    let status = new_status.unwrap_or(lesson.status);
    if input.teacher_id.is_some() || input.room_id.flatten().is_some() {
        booking_scope(&user, teacher, false)?;
        let parties = Parties { teacher_id: teacher, student_id: lesson.student_id, room_id: room };
        super::facts::parties_exist(&state.db, parties).await?;
    }

    let mut tx = state.db.begin().await?;
    let targets: Vec<Lesson> = if scope == EditScope::Following {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM lessons l WHERE l.series_id = $1 AND l.starts_at >= $2 \
             AND ($3 IS NULL OR l.teacher_id = $3) ORDER BY l.starts_at"
        ));
        // A teacher moves only their own occurrences of a series.
        let own = if user.role == Role::Teacher { user.teacher_id } else { None };
        on_tx!(&mut tx, conn => sqlx::query_as::<_, Lesson>(sql).bind(lesson.series_id).bind(lesson.starts_at)
            .bind(own).fetch_all(&mut **conn).await)?
    } else {
        vec![lesson.clone()]
    };
    let tz = state.settings.timezone;
    let moved: Vec<(Uuid, Slot)> = targets
        .iter()
        .map(|t| {
            let start = if scope == "following" { shift_local(tz, t.starts_at, shift) } else { new_start };
            (
                t.id,
                Slot {
                    starts_at: start,
                    ends_at: start + duration,
                    teacher_id: teacher,
                    student_id: t.student_id,
                    room_id: room,
                },
            )
        })
        .collect();
    if status == LessonStatus::Scheduled {
        let slots: Vec<Slot> = moved.iter().map(|(_, s)| s.clone()).collect();
        let (first, last) = (
            slots.first().map_or(new_start, |s| s.starts_at).with_timezone(&tz).date_naive(),
            slots.last().map_or(new_start, |s| s.starts_at).with_timezone(&tz).date_naive(),
        );
        let exceptions = Exceptions::load(&mut tx, first, last).await?;
        let ignore: Vec<Uuid> = moved.iter().map(|(id, _)| *id).collect();
        let found = conflicts(&mut tx, tz, &slots, &ignore, !input.override_availability, &exceptions).await?;
        if !found.is_empty() {
            return Err(conflict_error(found).into());
        }
    }
    booking::reschedule(&mut tx, &moved, status, notes.as_deref(), input.override_availability).await?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("lesson.updated")
            .by(&user)
            .subject("lesson", id)
            .details(json!({"scope": scope, "lessons": moved.len(), "status": status})),
    )
    .await?;
    let following = moved.len() > 1;
    let notice = if status == LessonStatus::Cancelled && lesson.status != LessonStatus::Cancelled {
        Some(LessonNotice::Cancelled { at: lesson.starts_at })
    } else if status == LessonStatus::Scheduled && new_start != lesson.starts_at {
        Some(LessonNotice::Moved { before: lesson.starts_at, after: new_start })
    } else {
        None
    };
    if let Some(notice) = notice {
        crate::messaging::lesson_notice(&mut tx, &state.settings, lesson.student_id, notice, following).await?;
    }
    tx.commit().await?;
    state.job_wakeup.notify_one();
    let mut items = Vec::new();
    for (lesson_id, _) in moved {
        items.push(find_visible(&state.db, &user, lesson_id).await?);
    }
    Ok(Json(LessonPage { items, next_cursor: None }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteScope {
    /// `this` (default), `following` or `series`.
    scope: Option<String>,
}

/// Deletes a lesson, this and the following occurrences, or its whole series (admins, or
/// the teacher of the lesson).
#[utoipa::path(delete, path = "/v1/lessons/{id}", tag = "scheduling", params(DeleteScope), security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn delete_lesson(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Query(q): Query<DeleteScope>,
) -> ApiResult<StatusCode> {
    let lesson = find_visible(&state.db, &user, id).await?;
    user.require(&[Role::Admin, Role::Teacher])?;
    let mut errors = Errors::default();
    let scope = errors.optional_choice::<EditScope>("scope", q.scope.as_deref()).unwrap_or(EditScope::This);
    if scope != EditScope::This && lesson.series_id.is_none() {
        errors.add("scope", "this lesson is not part of a series");
    }
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    let which = match (scope, lesson.series_id) {
        (EditScope::Series, Some(series_id)) => Occurrences::Series(series_id),
        (EditScope::Following, Some(series_id)) => Occurrences::Following { series_id, from: lesson.starts_at },
        _ => Occurrences::One(id),
    };
    let own = if user.role == Role::Teacher { user.teacher_id } else { None };
    // Attendance is history (and may have earned a makeup credit or been billed): a marked
    // lesson is cancelled, never deleted.
    const MARKED: &str = "SELECT COUNT(*) FROM lessons WHERE attendance IS NOT NULL AND ($4 IS NULL OR teacher_id = $4) \
        AND ((($1 IS NOT NULL) AND id = $1) OR (($2 IS NOT NULL) AND series_id = $2 AND starts_at >= $3))";
    let (one, series, from) = match which {
        Occurrences::One(id) => (Some(id), None, lesson.starts_at),
        Occurrences::Following { series_id, from } => (None, Some(series_id), from),
        Occurrences::Series(series_id) => (None, Some(series_id), DateTime::<Utc>::UNIX_EPOCH),
    };
    let marked: i64 = on_tx!(&mut tx, conn => sqlx::query_scalar(MARKED).bind(one).bind(series).bind(from).bind(own)
        .fetch_one(&mut **conn).await)?;
    if marked > 0 {
        return Err(ApiError::conflict(format!(
            "{marked} of these lessons have attendance recorded; cancel them instead, or delete from a later lesson"
        )));
    }
    let deleted = booking::delete(&mut tx, which, own).await?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("lesson.deleted")
            .by(&user)
            .subject("lesson", id)
            .details(json!({"scope": scope, "deleted": deleted})),
    )
    .await?;
    if lesson.status == LessonStatus::Scheduled {
        let notice = LessonNotice::Cancelled { at: lesson.starts_at };
        crate::messaging::lesson_notice(&mut tx, &state.settings, lesson.student_id, notice, deleted > 1).await?;
    }
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(StatusCode::NO_CONTENT)
}
