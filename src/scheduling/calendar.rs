//! Teacher availability windows and calendar exceptions (closures, time off, terms), and the
//! free-slot search built on them.

use std::collections::HashMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::db::{Db, Tx};
use crate::error::{ApiError, ApiResult};
use crate::http::validate::{Errors, parse_hhmm};
use crate::http::{Json, Query};
use crate::people::WeeklyWindow;
use crate::privacy::audit::{self, AuditEvent};
use crate::time::resolve_local;
use crate::{on_db, on_tx};

crate::text_enum! {
    /// What a calendar exception is.
    pub enum ExceptionKind {
        Closure = "closure",
        TimeOff = "time_off",
        Term = "term",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_availability, put_availability))
        .routes(routes!(list_exceptions, create_exception))
        .routes(routes!(delete_exception))
        .routes(routes!(free_slots))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Availability {
    /// Weekly windows in school-local time.
    pub windows: Vec<WeeklyWindow>,
}

pub(crate) async fn windows(db: &Db, teacher_id: Uuid) -> ApiResult<Vec<WeeklyWindow>> {
    const SQL: &str = "SELECT weekday, start_time, end_time FROM teacher_availability WHERE teacher_id = $1 \
        ORDER BY weekday, start_time";
    let rows: Vec<(i32, String, String)> =
        on_db!(db, pool => sqlx::query_as(SQL).bind(teacher_id).fetch_all(pool).await)?;
    Ok(rows.into_iter().map(|(d, s, e)| WeeklyWindow { weekday: d as u8, start_time: s, end_time: e }).collect())
}

/// A teacher's weekly availability (anyone signed in).
#[utoipa::path(get, path = "/v1/teachers/{id}/availability", tag = "scheduling", security(("bearer" = [])),
    responses((status = 200, body = Availability), (status = 401), (status = 404)))]
async fn get_availability(
    State(state): State<AppState>,
    _user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Availability>> {
    crate::people::teacher_exists(&state.db, id).await?;
    Ok(Json(Availability { windows: windows(&state.db, id).await? }))
}

/// Replaces a teacher's weekly availability (admins, or the teacher themselves).
#[utoipa::path(put, path = "/v1/teachers/{id}/availability", tag = "scheduling", request_body = Availability, security(("bearer" = [])),
    responses((status = 200, body = Availability), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn put_availability(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<Availability>,
) -> ApiResult<Json<Availability>> {
    crate::people::teacher_exists(&state.db, id).await?;
    if !user.is_admin() && user.teacher_id != Some(id) {
        return Err(ApiError::Forbidden);
    }
    let mut errors = Errors::default();
    errors.windows("windows", &input.windows);
    for (i, a) in input.windows.iter().enumerate() {
        let overlaps =
            input.windows.iter().enumerate().any(|(j, b)| {
                j < i && a.weekday == b.weekday && a.start_time < b.end_time && b.start_time < a.end_time
            });
        if overlaps {
            errors.add(format!("windows[{i}]"), "overlaps another window of the same day");
        }
    }
    errors.into_result()?;
    const DELETE: &str = "DELETE FROM teacher_availability WHERE teacher_id = $1";
    const INSERT: &str =
        "INSERT INTO teacher_availability (id, teacher_id, weekday, start_time, end_time) VALUES ($1, $2, $3, $4, $5)";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(DELETE).bind(id).execute(&mut **conn).await.map(|_| ()))?;
    for w in &input.windows {
        on_tx!(&mut tx, conn => sqlx::query(INSERT).bind(Uuid::now_v7()).bind(id).bind(i32::from(w.weekday))
            .bind(&w.start_time).bind(&w.end_time).execute(&mut **conn).await.map(|_| ()))?;
    }
    audit::record_tx(&mut tx, AuditEvent::new("teacher.availability_set").by(&user).subject("teacher", id)).await?;
    tx.commit().await?;
    Ok(Json(Availability { windows: windows(&state.db, id).await? }))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct CalendarException {
    id: Uuid,
    /// `closure` (school closed), `time_off` (one teacher away) or `term` (lessons only inside terms).
    kind: String,
    teacher_id: Option<Uuid>,
    name: String,
    /// First local date, inclusive.
    starts_on: NaiveDate,
    /// Last local date, inclusive.
    ends_on: NaiveDate,
    created_at: DateTime<Utc>,
}

/// Closures, terms and time off that touch `[from, to]` (local dates).
#[derive(Debug, Default)]
pub struct Exceptions {
    closures: Vec<(NaiveDate, NaiveDate, String)>,
    terms: Vec<(NaiveDate, NaiveDate)>,
    time_off: HashMap<Uuid, Vec<(NaiveDate, NaiveDate)>>,
}

/// One row of what [`Exceptions`] is built from: kind, teacher (time off), name, first and
/// last local date.
pub(crate) type ExceptionRow = (String, Option<Uuid>, String, NaiveDate, NaiveDate);

/// Closures and time off touching `[$1, $2]`, and every term — from both the `term`
/// exceptions of old and `/v1/terms`.
pub(crate) const EXCEPTIONS_SQL: &str = "SELECT kind, teacher_id, name, starts_on, ends_on FROM calendar_exceptions \
    WHERE kind = 'term' OR (starts_on <= $2 AND ends_on >= $1) \
    UNION ALL SELECT 'term', NULL, name, starts_on, ends_on FROM terms";

impl Exceptions {
    pub async fn load(tx: &mut Tx, from: NaiveDate, to: NaiveDate) -> crate::error::DomainResult<Self> {
        let rows: Vec<ExceptionRow> =
            on_tx!(tx, conn => sqlx::query_as(EXCEPTIONS_SQL).bind(from).bind(to).fetch_all(&mut **conn).await)?;
        Ok(Self::from_rows(rows))
    }

    pub(crate) fn from_rows(rows: impl IntoIterator<Item = ExceptionRow>) -> Self {
        let mut out = Self::default();
        for (kind, teacher_id, name, starts_on, ends_on) in rows {
            match kind.as_str() {
                "closure" => out.closures.push((starts_on, ends_on, name)),
                "term" => out.terms.push((starts_on, ends_on)),
                _ => out.time_off.entry(teacher_id.unwrap_or_default()).or_default().push((starts_on, ends_on)),
            }
        }
        out
    }

    pub(crate) fn closure(&self, date: NaiveDate) -> Option<&str> {
        self.closures.iter().find(|(a, b, _)| *a <= date && date <= *b).map(|(_, _, name)| name.as_str())
    }

    pub(crate) fn outside_terms(&self, date: NaiveDate) -> bool {
        !self.terms.is_empty() && !self.terms.iter().any(|(a, b)| *a <= date && date <= *b)
    }

    pub(crate) fn time_off(&self, teacher: Uuid, date: NaiveDate) -> bool {
        self.time_off.get(&teacher).is_some_and(|ranges| ranges.iter().any(|(a, b)| *a <= date && date <= *b))
    }
}

/// Whether `[start, end)` lies inside one of the teacher's windows (local time, one day).
/// A teacher with no windows set has no availability constraint.
pub(crate) fn within_availability(windows: &[WeeklyWindow], tz: Tz, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    if windows.is_empty() {
        return true;
    }
    let (ls, le) = (start.with_timezone(&tz).naive_local(), end.with_timezone(&tz).naive_local());
    if ls.date() != le.date() && le.time() != NaiveTime::MIN {
        return false;
    }
    let weekday = ls.date().weekday().number_from_monday() as u8;
    let end_time = if ls.date() != le.date() { NaiveTime::from_hms_opt(23, 59, 59).expect("valid") } else { le.time() };
    windows.iter().filter(|w| w.weekday == weekday).any(|w| {
        match (parse_hhmm(&w.start_time), parse_hhmm(&w.end_time)) {
            (Some(ws), Some(we)) => ws <= ls.time() && end_time <= we,
            _ => false,
        }
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExceptionFilter {
    kind: Option<String>,
    teacher_id: Option<Uuid>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

/// Closures, terms and time off (anyone signed in).
#[utoipa::path(get, path = "/v1/calendar-exceptions", tag = "scheduling", params(ExceptionFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(crate::http::pagination::Page<CalendarException>)), (status = 401)))]
async fn list_exceptions(
    State(state): State<AppState>,
    _user: CurrentUser,
    Query(filter): Query<ExceptionFilter>,
) -> ApiResult<Json<crate::http::pagination::Page<CalendarException>>> {
    const SQL: &str = "SELECT id, kind, teacher_id, name, starts_on, ends_on, created_at FROM calendar_exceptions \
        WHERE ($1 IS NULL OR kind = $1) AND ($2 IS NULL OR teacher_id = $2) AND ($3 IS NULL OR ends_on >= $3) \
        AND ($4 IS NULL OR starts_on <= $4) ORDER BY starts_on, id LIMIT 500";
    let items = on_db!(&state.db, pool => sqlx::query_as::<_, CalendarException>(SQL)
        .bind(&filter.kind).bind(filter.teacher_id).bind(filter.from).bind(filter.to).fetch_all(pool).await)?;
    Ok(Json(crate::http::pagination::Page { items, next_cursor: None }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateException {
    /// `closure`, `time_off` or `term`.
    kind: String,
    /// Required for `time_off`.
    teacher_id: Option<Uuid>,
    name: String,
    starts_on: NaiveDate,
    ends_on: NaiveDate,
}

/// Adds a closure or term (admins) or time off (admins, or a teacher for themselves).
#[utoipa::path(post, path = "/v1/calendar-exceptions", tag = "scheduling", request_body = CreateException, security(("bearer" = [])),
    responses((status = 201, body = CreatedException), (status = 401), (status = 403), (status = 422)))]
async fn create_exception(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<CreateException>,
) -> ApiResult<(StatusCode, Json<CreatedException>)> {
    let own_time_off = input.kind == "time_off" && user.teacher_id.is_some() && input.teacher_id == user.teacher_id;
    if !user.is_admin() && !own_time_off {
        return Err(ApiError::Forbidden);
    }
    let mut errors = Errors::default();
    errors.choice::<ExceptionKind>("kind", &input.kind);
    let name = errors.name("name", &input.name);
    if input.ends_on < input.starts_on {
        errors.add("ends_on", "must not be before starts_on");
    }
    match (input.kind.as_str(), input.teacher_id) {
        ("time_off", None) => errors.add("teacher_id", "is required for time off"),
        ("closure" | "term", Some(_)) => errors.add("teacher_id", "applies to time off only"),
        _ => {}
    }
    errors.into_result()?;
    const SQL: &str = "INSERT INTO calendar_exceptions (id, kind, teacher_id, name, starts_on, ends_on, created_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7)";
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(&input.kind).bind(input.teacher_id).bind(&name)
        .bind(input.starts_on).bind(input.ends_on).bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("calendar_exception.created").by(&user).subject("calendar_exception", id),
    )
    .await?;
    // Lessons already booked on those days are cancelled or handed to the office, now.
    let affected = match input.kind.as_str() {
        "closure" | "time_off" => {
            let disruption = crate::school_year::disruptions::Disruption {
                id,
                kind: &input.kind,
                teacher_id: input.teacher_id,
                name: &name,
                starts_on: input.starts_on,
                ends_on: input.ends_on,
            };
            Some(crate::school_year::disruptions::apply(&mut tx, &state, &disruption, Some(user.id)).await?)
        }
        _ => None,
    };
    tx.commit().await?;
    state.job_wakeup.notify_one();
    const GET: &str =
        "SELECT id, kind, teacher_id, name, starts_on, ends_on, created_at FROM calendar_exceptions WHERE id = $1";
    let exception =
        on_db!(&state.db, pool => sqlx::query_as::<_, CalendarException>(GET).bind(id).fetch_one(pool).await)?;
    Ok((StatusCode::CREATED, Json(CreatedException { exception, affected })))
}

/// A new calendar exception and what it did to lessons already booked.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedException {
    #[serde(flatten)]
    exception: CalendarException,
    /// Closures and time off: the lessons they covered and what happened to them.
    affected: Option<crate::school_year::disruptions::Affected>,
}

/// Removes a closure, term or time off.
#[utoipa::path(delete, path = "/v1/calendar-exceptions/{id}", tag = "scheduling", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404)))]
async fn delete_exception(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    const SQL: &str = "DELETE FROM calendar_exceptions WHERE id = $1 AND ($2 IS NULL OR teacher_id = $2)";
    let own = match user.role {
        Role::Admin => None,
        Role::Teacher => Some(user.teacher_id.ok_or(ApiError::NotFound)?),
        Role::Parent => return Err(ApiError::Forbidden),
    };
    let mut tx = state.db.begin().await?;
    let deleted = on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(own).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if deleted == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(
        &mut tx,
        AuditEvent::new("calendar_exception.deleted").by(&user).subject("calendar_exception", id),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlotQuery {
    teacher_id: Uuid,
    /// Also avoid this student's lessons.
    student_id: Option<Uuid>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    duration_minutes: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Slot {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Slots {
    items: Vec<Slot>,
}

/// Starts of `duration` inside the teacher's weekly windows within `range`, on days without a
/// closure, time off or (when terms exist) outside terms, overlapping none of `busy`; at most
/// `limit`, earliest first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn open_slots(
    windows: &[WeeklyWindow],
    exceptions: &Exceptions,
    busy: &[(DateTime<Utc>, DateTime<Utc>)],
    tz: Tz,
    teacher: Uuid,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    duration: Duration,
    limit: usize,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut items = Vec::new();
    let mut date = from.with_timezone(&tz).date_naive();
    let last = to.with_timezone(&tz).date_naive();
    while date <= last && items.len() < limit {
        let skip =
            exceptions.closure(date).is_some() || exceptions.outside_terms(date) || exceptions.time_off(teacher, date);
        let weekday = date.weekday().number_from_monday() as u8;
        for window in windows.iter().filter(|w| !skip && w.weekday == weekday) {
            let (Some(ws), Some(we)) = (parse_hhmm(&window.start_time), parse_hhmm(&window.end_time)) else { continue };
            let mut start = date.and_time(ws);
            while start + duration <= date.and_time(we) && items.len() < limit {
                let (s, e) = (resolve_local(tz, start), resolve_local(tz, start + duration));
                if s >= from && e <= to && !busy.iter().any(|(bs, be)| *bs < e && s < *be) {
                    items.push((s, e));
                }
                start += Duration::minutes(SLOT_STEP_MINUTES);
            }
        }
        date += Duration::days(1);
    }
    items
}

/// Slots start on the quarter hour.
const SLOT_STEP_MINUTES: i64 = 15;

/// Free slots of a teacher: inside their weekly windows, outside closures, time off and other
/// lessons (and the student's, when given), starting every 15 minutes.
#[utoipa::path(get, path = "/v1/availability", tag = "scheduling", params(SlotQuery), security(("bearer" = [])),
    responses((status = 200, body = Slots), (status = 401), (status = 404), (status = 422)))]
async fn free_slots(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(q): Query<SlotQuery>,
) -> ApiResult<Json<Slots>> {
    // A student's lessons shape the answer: only someone who may see the student may ask.
    if let Some(student) = q.student_id {
        crate::people::student_visible(&state.db, &user, student).await?;
    }
    let mut errors = Errors::default();
    if !(15..=240).contains(&q.duration_minutes) {
        errors.add("duration_minutes", "must be 15 to 240");
    }
    if q.to <= q.from || q.to - q.from > Duration::days(31) {
        errors.add("to", "must be after from, at most 31 days later");
    }
    errors.into_result()?;
    crate::people::teacher_exists(&state.db, q.teacher_id).await?;
    let tz = state.settings.timezone;
    let windows = windows(&state.db, q.teacher_id).await?;
    let from_local = q.from.with_timezone(&tz).date_naive();
    let to_local = q.to.with_timezone(&tz).date_naive();
    // Only reads: never SQLite's write lock.
    let mut tx = state.db.begin_read().await?;
    let exceptions = Exceptions::load(&mut tx, from_local, to_local).await?;
    const BUSY: &str = "SELECT starts_at, ends_at FROM lessons WHERE status = 'scheduled' AND starts_at < $2 \
        AND ends_at > $1 AND starts_at > $5 AND (teacher_id = $3 OR ($4 IS NOT NULL AND student_id = $4))";
    let busy: Vec<(DateTime<Utc>, DateTime<Utc>)> = on_tx!(&mut tx, conn => sqlx::query_as(BUSY)
        .bind(q.from).bind(q.to).bind(q.teacher_id).bind(q.student_id).bind(super::running_since(q.from))
        .fetch_all(&mut **conn).await)?;
    tx.rollback().await?;

    let duration = Duration::minutes(q.duration_minutes);
    let items = open_slots(&windows, &exceptions, &busy, tz, q.teacher_id, (q.from, q.to), duration, 1000)
        .into_iter()
        .map(|(starts_at, ends_at)| Slot { starts_at, ends_at })
        .collect();
    Ok(Json(Slots { items }))
}
