//! Re-enrollment for the next term. `CEDAR_REENROLLMENT_NOTICE_DAYS` before a term starts
//! (daily job, or `POST /v1/terms/{id}/reenrollment` at once), every active student with
//! weekly lessons in the weeks before it is offered a place: one row per student, one email per
//! family, one task for the office. Accepting books the student's weekly lessons again, same
//! day, time, teacher and room, through the new term (weeks that are no longer free are listed
//! and handed to the office as a task); declining withdraws the student when the term starts.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::terms::{self, Term};
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, Role};
use crate::db::Tx;
use crate::error::{ApiError, ApiResult};
use crate::http::{Json, Query};
use crate::privacy::audit::{self, AuditEvent};
use crate::scheduling::booking::{self, BookingOptions, Parties};
use crate::time::{at_local, local_naive, next_weekday, today};
use crate::{on_db, on_tx};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_reenrollments))
        .routes(routes!(offer_now))
        .routes(routes!(accept))
        .routes(routes!(decline))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Reenrollment {
    pub id: Uuid,
    /// The term offered.
    pub term_id: Uuid,
    pub student_id: Uuid,
    pub family_id: Uuid,
    /// `offered`, `accepted` or `declined`.
    pub status: String,
    /// After acceptance: the lessons booked and the weeks that could not be.
    #[schema(value_type = Option<Object>)]
    pub outcome: Option<SqlJson<Value>>,
    pub offered_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// A declined place: the day the student is withdrawn.
    pub withdraw_on: Option<NaiveDate>,
}

const COLUMNS: &str = "id, term_id, student_id, family_id, status, outcome, offered_at, decided_at, withdraw_on";

/// Offers the places for `term` (once per student); returns how many were new.
pub async fn offer(state: &AppState, term: &Term) -> ApiResult<usize> {
    // Students with weekly lessons in the four weeks before the term starts.
    const STUDENTS: &str = "SELECT DISTINCT s.id, s.family_id FROM students s JOIN lessons l ON l.student_id = s.id \
        WHERE s.status = 'active' AND l.status = 'scheduled' AND l.series_id IS NOT NULL \
        AND l.starts_at >= $1 AND l.starts_at < $2 ORDER BY s.family_id, s.id";
    const INSERT: &str = "INSERT INTO reenrollments (id, term_id, student_id, family_id, status, offered_at) \
        VALUES ($1, $2, $3, $4, 'offered', $5) ON CONFLICT (term_id, student_id) DO NOTHING";
    let tz = state.settings.timezone;
    let start = at_local(tz, term.starts_on, NaiveTime::MIN);
    let mut tx = state.db.begin().await?;
    let students: Vec<(Uuid, Uuid)> = on_tx!(&mut tx, conn => sqlx::query_as(STUDENTS)
        .bind(start - Duration::days(28)).bind(start).fetch_all(&mut **conn).await)?;
    let mut offered: BTreeMap<Uuid, Vec<Uuid>> = BTreeMap::new();
    let now = Utc::now();
    for (student, family) in students {
        let inserted = on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(Uuid::now_v7()).bind(term.id).bind(student)
            .bind(family).bind(now).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
        if inserted > 0 {
            offered.entry(family).or_default().push(student);
        }
    }
    let count: usize = offered.values().map(Vec::len).sum();
    let reply_by = (term.starts_on - Duration::days(7)).max(today(tz));
    for (family, students) in &offered {
        let mut listed = Vec::new();
        for student in students {
            listed.extend(last_weekly_lesson(&mut tx, *student, start).await?);
        }
        let vars = |language: &str| {
            let students: Vec<Value> = listed.iter().map(|l| l.describe(tz, language)).collect();
            json!({"term": term.name, "starts_on": term.starts_on.to_string(), "reply_by": reply_by.to_string(),
                "students": students})
        };
        let key = format!("reenrollment:{}:{family}", term.id);
        crate::messaging::email_family(&mut tx, &state.settings, *family, "reenrollment_offer", vars, Some(&key))
            .await?;
    }
    if count > 0 {
        let task = crate::tasks::NewTask {
            title: format!("Re-enrollment for {}: {count} place(s) offered", term.name),
            detail: Some(format!(
                "Families answer by {reply_by} (GET /v1/reenrollments?term_id={}); accepted places are booked \
                 through the term, declined students are withdrawn when it starts.",
                term.id
            )),
            due_on: Some(reply_by),
            subject_type: Some("term".into()),
            subject_id: Some(term.id),
            dedupe_key: Some(format!("reenrollment:{}:{}", term.id, now.timestamp())),
            ..crate::tasks::NewTask::default()
        };
        crate::tasks::create(&mut tx, task).await?;
        audit::record_tx(
            &mut tx,
            AuditEvent::new("term.reenrollment_offered").subject("term", term.id).details(json!({"offered": count})),
        )
        .await?;
    }
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(count)
}

/// A student's last weekly lesson before the new term: what the offer email describes.
struct WeeklyLesson {
    name: String,
    instrument: String,
    at: DateTime<Utc>,
    teacher: String,
}

impl WeeklyLesson {
    /// "Hélène", "piano, Tuesday 16:00 with Élodie Gagné" (or "piano, mardi 16 h 00 avec …").
    fn describe(&self, tz: chrono_tz::Tz, language: &str) -> Value {
        let local = local_naive(tz, self.at);
        let lessons = if language == "fr" {
            let day = crate::time::weekday_name(local.weekday().num_days_from_monday() as usize, true);
            format!("{}, {day} {} h {} avec {}", self.instrument, local.format("%H"), local.format("%M"), self.teacher)
        } else {
            format!("{}, {} {} with {}", self.instrument, local.format("%A"), local.format("%H:%M"), self.teacher)
        };
        json!({"name": self.name, "lessons": lessons})
    }
}

async fn last_weekly_lesson(tx: &mut Tx, student: Uuid, before: DateTime<Utc>) -> ApiResult<Option<WeeklyLesson>> {
    const SQL: &str = "SELECT COALESCE(s.preferred_name, s.first_name), s.instrument, l.starts_at, t.first_name || ' ' || t.last_name \
        FROM students s JOIN lessons l ON l.student_id = s.id JOIN teachers t ON t.id = COALESCE(l.substitute_for, l.teacher_id) \
        WHERE s.id = $1 AND l.status = 'scheduled' AND l.series_id IS NOT NULL AND l.starts_at < $2 \
        ORDER BY l.starts_at DESC LIMIT 1";
    let row: Option<(String, String, DateTime<Utc>, String)> =
        on_tx!(tx, conn => sqlx::query_as(SQL).bind(student).bind(before).fetch_optional(&mut **conn).await)?;
    Ok(row.map(|(name, instrument, at, teacher)| WeeklyLesson { name, instrument, at, teacher }))
}

/// Daily: offers places for terms starting within the notice period, and withdraws students
/// whose declined place has come due. Returns (offered, withdrawn).
pub async fn daily(state: &AppState) -> anyhow::Result<(usize, usize)> {
    let tz = state.settings.timezone;
    let today = today(tz);
    let horizon = today + Duration::days(i64::from(state.settings.school_year.reenrollment_notice_days));
    let sql = sqlx::AssertSqlSafe(
        "SELECT id, name, starts_on, ends_on, billing_months, created_at FROM terms WHERE starts_on > $1 AND starts_on <= $2 \
         ORDER BY starts_on",
    );
    let upcoming: Vec<Term> =
        on_db!(&state.db, pool => sqlx::query_as::<_, Term>(sql).bind(today).bind(horizon).fetch_all(pool).await)?;
    let mut offered = 0;
    for term in &upcoming {
        offered += offer(state, term).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // Once a term has started, places nobody answered for go to the office, once per term.
    const UNANSWERED: &str = "SELECT t.id, t.name, COUNT(*) FROM reenrollments r JOIN terms t ON t.id = r.term_id \
        WHERE r.status = 'offered' AND t.starts_on <= $1 AND t.ends_on >= $1 GROUP BY t.id, t.name";
    let unanswered: Vec<(Uuid, String, i64)> =
        on_db!(&state.db, pool => sqlx::query_as(UNANSWERED).bind(today).fetch_all(pool).await)?;
    for (term, name, count) in unanswered {
        let mut tx = state.db.begin().await?;
        let task = crate::tasks::NewTask {
            title: format!("{name} has started: {count} re-enrollment offer(s) unanswered"),
            detail: Some(format!(
                "GET /v1/reenrollments?term_id={term}&status=offered; accept or decline for the family."
            )),
            due_on: Some(today),
            subject_type: Some("term".into()),
            subject_id: Some(term),
            dedupe_key: Some(format!("reenrollment-unanswered:{term}")),
            ..crate::tasks::NewTask::default()
        };
        crate::tasks::create(&mut tx, task).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
    }
    const DUE: &str = "SELECT id, student_id, withdraw_on FROM reenrollments WHERE status = 'declined' \
        AND withdraw_on <= $1 AND withdrawn_at IS NULL";
    let due: Vec<(Uuid, Uuid, NaiveDate)> =
        on_db!(&state.db, pool => sqlx::query_as(DUE).bind(today).fetch_all(pool).await)?;
    let withdrawn = due.len();
    for (id, student, on) in due {
        let mut tx = state.db.begin().await?;
        withdraw_declined(&mut tx, state, id, student, on).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        tx.commit().await?;
    }
    if withdrawn > 0 {
        state.job_wakeup.notify_one();
    }
    Ok((offered, withdrawn))
}

async fn withdraw_declined(tx: &mut Tx, state: &AppState, id: Uuid, student: Uuid, on: NaiveDate) -> ApiResult<()> {
    const STATUS: &str =
        "UPDATE students SET status = 'withdrawn', updated_at = $2 WHERE id = $1 AND status <> 'withdrawn'";
    const DONE: &str = "UPDATE reenrollments SET withdrawn_at = $2 WHERE id = $1";
    let now = Utc::now();
    let changed = on_tx!(tx, conn => sqlx::query(STATUS).bind(student).bind(now).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if changed > 0 {
        let withdrawal = super::withdrawal::withdraw(tx, state, student, on).await?;
        audit::record_tx(
            tx,
            AuditEvent::new("student.withdrawn")
                .subject("student", student)
                .details(json!({"reenrollment": id, "withdrawal": withdrawal})),
        )
        .await?;
    }
    on_tx!(tx, conn => sqlx::query(DONE).bind(id).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReenrollmentFilter {
    term_id: Option<Uuid>,
    /// `offered`, `accepted` or `declined`.
    status: Option<String>,
}

/// Re-enrollment offers: admins see all, parents their family's.
#[utoipa::path(get, path = "/v1/reenrollments", tag = "school year", params(ReenrollmentFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(crate::http::pagination::Page<Reenrollment>)), (status = 401), (status = 403)))]
async fn list_reenrollments(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<ReenrollmentFilter>,
) -> ApiResult<Json<crate::http::pagination::Page<Reenrollment>>> {
    let family = match user.role {
        Role::Admin => None,
        Role::Parent => Some(user.family_id.ok_or(ApiError::NotFound)?),
        Role::Teacher => return Err(ApiError::Forbidden),
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM reenrollments WHERE ($1 IS NULL OR family_id = $1) AND ($2 IS NULL OR term_id = $2) \
         AND ($3 IS NULL OR status = $3) ORDER BY offered_at, id LIMIT 1000"
    ));
    let items = on_db!(&state.db, pool => sqlx::query_as::<_, Reenrollment>(sql).bind(family).bind(filter.term_id)
        .bind(&filter.status).fetch_all(pool).await)?;
    Ok(Json(crate::http::pagination::Page { items, next_cursor: None }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Offered {
    /// Places offered now (students already offered this term are not offered again).
    offered: usize,
}

/// Offers re-enrollment for a term now, instead of waiting for the daily job (admins).
#[utoipa::path(post, path = "/v1/terms/{id}/reenrollment", tag = "school year", security(("bearer" = [])),
    responses((status = 200, body = Offered), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "The term has started")))]
async fn offer_now(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Offered>> {
    let term = terms::find(&state.db, id).await?;
    if term.starts_on <= today(state.settings.timezone) {
        return Err(ApiError::conflict("The term has started; book lessons directly"));
    }
    Ok(Json(Offered { offered: offer(&state, &term).await? }))
}

/// The offer, locked for a decision by its family (or an admin); 404 for anyone else.
async fn decidable(tx: &mut Tx, user: &CurrentUser, id: Uuid) -> ApiResult<Reenrollment> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM reenrollments WHERE id = $1"));
    tx.lock_row("reenrollments", id).await?;
    let row = on_tx!(tx, conn => sqlx::query_as::<_, Reenrollment>(sql).bind(id).fetch_optional(&mut **conn).await)?
        .ok_or(ApiError::NotFound)?;
    match user.role {
        Role::Admin => {}
        Role::Parent if user.family_id == Some(row.family_id) => {}
        _ => return Err(ApiError::NotFound),
    }
    Ok(row)
}

async fn find(state: &AppState, id: Uuid) -> ApiResult<Reenrollment> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM reenrollments WHERE id = $1"));
    on_db!(&state.db, pool => sqlx::query_as::<_, Reenrollment>(sql).bind(id).fetch_optional(pool).await)?
        .ok_or(ApiError::NotFound)
}

/// Accepts a place: the student's weekly lessons continue through the new term (the family's
/// parents or an admin). Accepting again answers the first outcome.
#[utoipa::path(post, path = "/v1/reenrollments/{id}/accept", tag = "school year", security(("bearer" = [])),
    responses((status = 200, body = Reenrollment), (status = 401), (status = 404), (status = 409, description = "Already declined")))]
async fn accept(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Reenrollment>> {
    let mut tx = state.db.begin().await?;
    let offer = decidable(&mut tx, &user, id).await?;
    match offer.status.as_str() {
        "accepted" => return Ok(Json(offer)),
        "declined" => return Err(ApiError::conflict("This place was declined; ask the office to enroll again")),
        _ => {}
    }
    let term = terms::find(&state.db, offer.term_id).await?;
    let outcome = continue_series(&mut tx, &state, &offer, &term, user.id).await?;
    const SQL: &str =
        "UPDATE reenrollments SET status = 'accepted', outcome = $2, decided_at = $3, decided_by = $4 WHERE id = $1";
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(SqlJson(&outcome)).bind(Utc::now()).bind(user.id)
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("reenrollment.accepted").by(&user).subject("reenrollment", id).details(outcome),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(find(&state, id).await?))
}

/// Declines a place: the student is withdrawn when the new term starts (the family's parents
/// or an admin). Their lessons until then stay.
#[utoipa::path(post, path = "/v1/reenrollments/{id}/decline", tag = "school year", security(("bearer" = [])),
    responses((status = 200, body = Reenrollment), (status = 401), (status = 404), (status = 409, description = "Already accepted")))]
async fn decline(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Reenrollment>> {
    let mut tx = state.db.begin().await?;
    let offer = decidable(&mut tx, &user, id).await?;
    match offer.status.as_str() {
        "declined" => return Ok(Json(offer)),
        "accepted" => {
            return Err(ApiError::conflict("This place was accepted; ask the office to withdraw the student"));
        }
        _ => {}
    }
    let term = terms::find(&state.db, offer.term_id).await?;
    const SQL: &str = "UPDATE reenrollments SET status = 'declined', decided_at = $2, decided_by = $3, withdraw_on = $4 WHERE id = $1";
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(Utc::now()).bind(user.id).bind(term.starts_on)
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(&mut tx, AuditEvent::new("reenrollment.declined").by(&user).subject("reenrollment", id)).await?;
    if term.starts_on <= today(state.settings.timezone) {
        withdraw_declined(&mut tx, &state, id, offer.student_id, term.starts_on).await?;
    }
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(Json(find(&state, id).await?))
}

/// Books the student's weekly lessons of the weeks before `term` again through `term`: each
/// series' last occurrence gives the weekday, time, length, (regular) teacher and room.
async fn continue_series(
    tx: &mut Tx,
    state: &AppState,
    offer: &Reenrollment,
    term: &Term,
    by: Uuid,
) -> ApiResult<Value> {
    const LAST: &str = "SELECT series_id, starts_at, ends_at, COALESCE(substitute_for, teacher_id), room_id FROM lessons \
        WHERE student_id = $1 AND series_id IS NOT NULL AND status = 'scheduled' AND starts_at >= $2 AND starts_at < $3 \
        ORDER BY starts_at DESC";
    let tz = state.settings.timezone;
    let start = at_local(tz, term.starts_on, NaiveTime::MIN);
    // Series, start, end, the regular teacher, room.
    type Recent = (Uuid, DateTime<Utc>, DateTime<Utc>, Uuid, Option<Uuid>);
    let recent: Vec<Recent> = on_tx!(tx, conn => sqlx::query_as(LAST)
        .bind(offer.student_id).bind(start - Duration::days(35)).bind(start).fetch_all(&mut **conn).await)?;
    let mut seen = Vec::new();
    let mut booked_ids = Vec::new();
    let mut not_booked = Vec::new();
    for (series, starts_at, ends_at, teacher, room) in recent {
        if seen.contains(&series) {
            continue;
        }
        seen.push(series);
        let local = local_naive(tz, starts_at);
        let weekday = local.date().weekday().number_from_monday() as u8;
        let first = next_weekday(term.starts_on - Duration::days(1), weekday);
        let (weeks, _) = terms::weekly_span(tx, first, crate::workflows::enrollment::LESSONS_BOOKED).await?;
        let rrule = format!("FREQ=WEEKLY;UNTIL={}", term.ends_on.format("%Y%m%d"));
        let parties = Parties { teacher_id: teacher, student_id: offer.student_id, room_id: room };
        let slots = booking::weekly_slots(tz, first, local.time(), (ends_at - starts_at).num_minutes(), weeks, parties);
        let conflicts = booking::check(tx, tz, &slots, &[], true).await?;
        let (blocking, skipped) = booking::split_conflicts(conflicts);
        let blocked: Vec<DateTime<Utc>> = blocking.iter().map(|c| c.occurrence_starts_at).collect();
        for conflict in &blocking {
            not_booked.push(json!({"starts_at": conflict.occurrence_starts_at, "kind": conflict.kind}));
        }
        let to_book: Vec<_> =
            slots.into_iter().filter(|s| !blocked.contains(&s.starts_at) && !skipped.contains(&s.starts_at)).collect();
        if to_book.is_empty() {
            continue;
        }
        let options = BookingOptions { rrule: Some(&rrule), booked_by: Some(by), ..BookingOptions::default() };
        booked_ids.extend(booking::book(tx, tz, &to_book, options).await?.lesson_ids());
    }
    if !not_booked.is_empty() {
        let task = crate::tasks::NewTask {
            title: format!("Re-enrollment for {}: {} week(s) could not be booked", term.name, not_booked.len()),
            detail: Some(format!("Student {}: {}", offer.student_id, Value::Array(not_booked.clone()))),
            subject_type: Some("student".into()),
            subject_id: Some(offer.student_id),
            dedupe_key: Some(format!("reenrollment-gaps:{}", offer.id)),
            ..crate::tasks::NewTask::default()
        };
        crate::tasks::create(tx, task).await?;
    }
    Ok(json!({"lessons_booked": booked_ids.len(), "lesson_ids": booked_ids, "not_booked": not_booked}))
}
