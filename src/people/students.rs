//! `/v1/students`: search, filters, ownership-scoped reads, admin writes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser};
use crate::db::{CommitMark, Db, Tx};
use crate::error::{ApiError, ApiResult, DomainError, DomainResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::{Errors, fold, search_patterns};
use crate::http::{Json, Query, nullable};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

crate::text_enum! {
    /// Whether a student is taking lessons.
    pub enum StudentStatus {
        Active = "active",
        Waitlisted = "waitlisted",
        Inactive = "inactive",
        Withdrawn = "withdrawn",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_students, create_student)).routes(routes!(
        get_student,
        update_student,
        delete_student
    ))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Student {
    pub id: Uuid,
    pub family_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub preferred_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    /// Main instrument.
    pub instrument: String,
    /// Every instrument the student plays, main one included.
    #[schema(value_type = Vec<String>)]
    pub instruments: SqlJson<Vec<String>>,
    pub level: Option<String>,
    /// `active`, `waitlisted`, `inactive` or `withdrawn`.
    pub status: StudentStatus,
    /// Main teacher.
    pub teacher_id: Option<Uuid>,
    pub start_date: Option<NaiveDate>,
    /// Last day billed: set by a withdrawal (the day before it takes effect).
    pub end_date: Option<NaiveDate>,
    pub notes: Option<String>,
    #[serde(serialize_with = "crate::time::json_utc")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::json_utc")]
    pub updated_at: DateTime<Utc>,
}

pub(crate) const COLUMNS: &str = "s.id, s.family_id, s.first_name, s.last_name, s.preferred_name, s.birth_date, \
    s.instrument, s.instruments, s.level, s.status, s.teacher_id, s.start_date, s.end_date, s.notes, s.created_at, s.updated_at";

/// The students a scope may see: `$1` family (parents), `$2` teacher (their students and those
/// assigned to them by an enrollment).
/// SQL: the student `s` is taught now by teacher `$2` — as main teacher, or with a lesson of
/// theirs still to be given (a substitute's, a second instrument's). A former teacher (main
/// teacher changed, no unmarked lesson left) no longer sees the student or the family.
macro_rules! taught_by_2 {
    () => {
        "(s.teacher_id = $2 OR EXISTS (SELECT 1 FROM lessons l WHERE l.student_id = s.id AND l.teacher_id = $2 \
         AND l.status = 'scheduled' AND l.attendance IS NULL))"
    };
}
pub(crate) use taught_by_2;

pub(crate) const VISIBLE: &str = concat!("($1 IS NULL OR s.family_id = $1) AND ($2 IS NULL OR ", taught_by_2!(), ")");

/// A student the user may see, or 404.
pub(crate) async fn find_visible(db: &Db, user: &CurrentUser, id: Uuid) -> ApiResult<Student> {
    let (family, teacher) = user.row_filter().ok_or(ApiError::NotFound)?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM students s WHERE {VISIBLE} AND s.id = $3"));
    let row = on_db!(db, pool => sqlx::query_as::<_, Student>(sql).bind(family).bind(teacher).bind(id)
        .fetch_optional(pool).await)?;
    row.ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StudentFilter {
    /// Words matched against first, last, preferred and family names, ignoring case and accents.
    q: Option<String>,
    /// Main instrument.
    instrument: Option<String>,
    teacher_id: Option<Uuid>,
    family_id: Option<Uuid>,
    status: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Students the caller may see, filtered and searched, in creation order.
#[utoipa::path(get, path = "/v1/students", tag = "students", params(StudentFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Student>)), (status = 401), (status = 422)))]
async fn list_students(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<StudentFilter>,
) -> ApiResult<Json<Page<Student>>> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let mut errors = Errors::default();
    if let Some(status) = &filter.status {
        errors.choice::<StudentStatus>("status", status);
    }
    let (after, limit) = (page.after()?, page.fetch_limit()?);
    errors.into_result()?;
    let Some((family, teacher)) = user.row_filter() else {
        return Ok(Json(Page { items: vec![], next_cursor: None }));
    };
    let [q1, q2, q3] = search_patterns(filter.q.as_deref());
    let instrument = filter.instrument.as_deref().map(|i| i.trim().to_lowercase());
    // Only the filters given become SQL: `$n IS NULL OR …` would leave PostgreSQL's cached
    // generic plan testing every branch (the visibility subquery included) on every row.
    let when =
        |present: bool, n: u8, condition: &str| if present { condition.to_owned() } else { format!("${n} IS NULL") };
    let conditions = [
        when(family.is_some(), 1, "s.family_id = $1"),
        when(teacher.is_some(), 2, taught_by_2!()),
        when(q1.is_some(), 3, "s.search_text LIKE $3 ESCAPE '\\'"),
        when(q2.is_some(), 4, "s.search_text LIKE $4 ESCAPE '\\'"),
        when(q3.is_some(), 5, "s.search_text LIKE $5 ESCAPE '\\'"),
        when(instrument.is_some(), 6, "s.instrument = $6"),
        when(filter.teacher_id.is_some(), 7, "s.teacher_id = $7"),
        when(filter.family_id.is_some(), 8, "s.family_id = $8"),
        when(filter.status.is_some(), 9, "s.status = $9"),
        when(after.is_some(), 10, "s.id > $10"),
    ];
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM students s WHERE {} ORDER BY s.id LIMIT $11",
        conditions.join(" AND ")
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Student>(sql)
        .bind(family).bind(teacher).bind(&q1).bind(&q2).bind(&q3).bind(&instrument)
        .bind(filter.teacher_id).bind(filter.family_id).bind(&filter.status).bind(after).bind(limit)
        .fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |s| s.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStudent {
    family_id: Uuid,
    first_name: String,
    last_name: String,
    preferred_name: Option<String>,
    birth_date: Option<NaiveDate>,
    instrument: String,
    instruments: Option<Vec<String>>,
    level: Option<String>,
    /// Default `active`.
    status: Option<String>,
    teacher_id: Option<Uuid>,
    start_date: Option<NaiveDate>,
    notes: Option<String>,
}

/// What a new student row holds (also used by enrollment approval and the demo).
pub(crate) struct NewStudent {
    pub family_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub preferred_name: Option<String>,
    pub birth_date: Option<NaiveDate>,
    pub instrument: String,
    pub instruments: Vec<String>,
    pub level: Option<String>,
    pub status: String,
    pub teacher_id: Option<Uuid>,
    pub start_date: Option<NaiveDate>,
    pub notes: Option<String>,
}

pub(crate) async fn family_name(tx: &mut Tx, family_id: Uuid) -> DomainResult<String> {
    const SQL: &str = "SELECT name FROM families WHERE id = $1";
    let name =
        on_tx!(tx, conn => sqlx::query_scalar::<_, String>(SQL).bind(family_id).fetch_optional(&mut **conn).await)?;
    name.ok_or_else(|| DomainError::invalid("family_id", "No such family"))
}

fn search_text(first: &str, last: &str, preferred: Option<&str>, family: &str) -> String {
    fold(&format!("{first} {last} {} {family}", preferred.unwrap_or("")))
}

pub(crate) async fn insert_student(tx: &mut Tx, new: NewStudent) -> DomainResult<Uuid> {
    const SQL: &str = "INSERT INTO students (id, family_id, first_name, last_name, preferred_name, birth_date, \
        instrument, instruments, level, status, teacher_id, start_date, notes, search_text, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)";
    let family = family_name(tx, new.family_id).await?;
    let search = search_text(&new.first_name, &new.last_name, new.preferred_name.as_deref(), &family);
    let mut instruments = vec![new.instrument.clone()];
    instruments.extend(new.instruments.into_iter().filter(|i| *i != new.instrument));
    let id = Uuid::now_v7();
    on_tx!(tx, conn => sqlx::query(SQL)
        .bind(id).bind(new.family_id).bind(&new.first_name).bind(&new.last_name).bind(&new.preferred_name)
        .bind(new.birth_date).bind(&new.instrument).bind(SqlJson(&instruments)).bind(&new.level).bind(&new.status)
        .bind(new.teacher_id).bind(new.start_date).bind(&new.notes).bind(search).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    Ok(id)
}

/// Keeps the search text right when a family is renamed.
pub(crate) async fn refresh_search_text_for_family(tx: &mut Tx, family_id: Uuid, family: &str) -> ApiResult<()> {
    const SELECT: &str = "SELECT id, first_name, last_name, preferred_name FROM students WHERE family_id = $1";
    const UPDATE: &str = "UPDATE students SET search_text = $2 WHERE id = $1";
    let rows: Vec<(Uuid, String, String, Option<String>)> =
        on_tx!(tx, conn => sqlx::query_as(SELECT).bind(family_id).fetch_all(&mut **conn).await)?;
    for (id, first, last, preferred) in rows {
        let text = search_text(&first, &last, preferred.as_deref(), family);
        on_tx!(tx, conn => sqlx::query(UPDATE).bind(id).bind(text).execute(&mut **conn).await.map(|_| ()))?;
    }
    Ok(())
}

fn validate_birth_date(errors: &mut Errors, birth_date: Option<NaiveDate>) {
    if let Some(date) = birth_date {
        let today = Utc::now().date_naive();
        if date > today || date < NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date") {
            errors.add("birth_date", "must be a past date after 1900");
        }
    }
}

/// Adds a student to a family (admin). Parents add children through enrollment requests.
#[utoipa::path(post, path = "/v1/students", tag = "students", request_body = CreateStudent, security(("bearer" = [])),
    responses((status = 201, body = Student), (status = 401), (status = 403), (status = 422)))]
async fn create_student(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Json(input): Json<CreateStudent>,
) -> ApiResult<(StatusCode, Json<Student>)> {
    let mut errors = Errors::default();
    let new = NewStudent {
        family_id: input.family_id,
        first_name: errors.name("first_name", &input.first_name),
        last_name: errors.name("last_name", &input.last_name),
        preferred_name: errors.optional_name("preferred_name", input.preferred_name.as_deref()),
        birth_date: input.birth_date,
        instrument: errors.instrument("instrument", &input.instrument),
        instruments: errors.instruments("instruments", input.instruments.as_deref().unwrap_or_default()),
        level: errors.optional_name("level", input.level.as_deref()),
        status: input.status.unwrap_or_else(|| "active".into()),
        teacher_id: input.teacher_id,
        start_date: input.start_date,
        notes: errors.optional_text("notes", input.notes.as_deref()),
    };
    errors.choice::<StudentStatus>("status", &new.status);
    validate_birth_date(&mut errors, new.birth_date);
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    let id = insert_student(&mut tx, new).await?;
    audit::record_tx(&mut tx, AuditEvent::new("student.created").by(&admin).subject("student", id)).await?;
    CommitMark::answer_is(201, format!("/v1/students/{id}"));
    tx.commit().await?;
    let student = find_visible(&state.db, &admin, id).await?;
    Ok((StatusCode::CREATED, Json(student)))
}

/// One student the caller may see.
#[utoipa::path(get, path = "/v1/students/{id}", tag = "students", security(("bearer" = [])),
    responses((status = 200, body = Student), (status = 401), (status = 404)))]
async fn get_student(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Student>> {
    let student = find_visible(&state.db, &user, id).await?;
    crate::privacy::audit::record_read(&state, &user, "student", id).await?;
    Ok(Json(student))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStudent {
    family_id: Option<Uuid>,
    first_name: Option<String>,
    last_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    preferred_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    birth_date: Option<Option<NaiveDate>>,
    instrument: Option<String>,
    instruments: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    level: Option<Option<String>>,
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    teacher_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    start_date: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    notes: Option<Option<String>>,
    /// With `status: withdrawn`: the first day without lessons [default: today]. From then
    /// the student's unmarked lessons are cancelled, flat billing stops and their teachers are
    /// told. Setting the status back to `active` restores no lesson.
    effective_on: Option<NaiveDate>,
}

/// Changes a student (admin). Withdrawing (`status: withdrawn`, optional `effective_on`)
/// cancels their lessons from that date; see `docs/school-year.md`.
#[utoipa::path(patch, path = "/v1/students/{id}", tag = "students", request_body = UpdateStudent, security(("bearer" = [])),
    responses((status = 200, body = Student), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn update_student(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateStudent>,
) -> ApiResult<Json<Student>> {
    let current = find_visible(&state.db, &admin, id).await?;
    let mut errors = Errors::default();
    let first = input.first_name.as_deref().map_or(current.first_name.clone(), |v| errors.name("first_name", v));
    let last = input.last_name.as_deref().map_or(current.last_name.clone(), |v| errors.name("last_name", v));
    let preferred = match &input.preferred_name {
        Some(v) => errors.optional_name("preferred_name", v.as_deref()),
        None => current.preferred_name.clone(),
    };
    let instrument =
        input.instrument.as_deref().map_or(current.instrument.clone(), |v| errors.instrument("instrument", v));
    let mut instruments = match &input.instruments {
        Some(list) => errors.instruments("instruments", list),
        None => current.instruments.0.clone(),
    };
    instruments.retain(|i| *i != instrument);
    instruments.insert(0, instrument.clone());
    let level = match &input.level {
        Some(v) => errors.optional_name("level", v.as_deref()),
        None => current.level.clone(),
    };
    let status = match input.status.as_deref() {
        Some(text) => errors.choice::<StudentStatus>("status", text).unwrap_or(current.status),
        None => current.status,
    };
    let birth_date = input.birth_date.unwrap_or(current.birth_date);
    validate_birth_date(&mut errors, birth_date);
    let withdrawing = status == StudentStatus::Withdrawn && current.status != StudentStatus::Withdrawn;
    if input.effective_on.is_some() && !withdrawing {
        errors.add("effective_on", "applies only when withdrawing a student (status: withdrawn)");
    }
    let today = crate::time::today(state.settings.timezone);
    if let Some(date) = input.effective_on
        && (date < today - chrono::Duration::days(366) || date > today + chrono::Duration::days(366))
    {
        errors.add("effective_on", "must be within a year of today");
    }
    let notes = match &input.notes {
        Some(v) => errors.optional_text("notes", v.as_deref()),
        None => current.notes.clone(),
    };
    errors.into_result()?;
    let family_id = input.family_id.unwrap_or(current.family_id);
    let teacher_id = input.teacher_id.unwrap_or(current.teacher_id);
    let start_date = input.start_date.unwrap_or(current.start_date);

    const SQL: &str = "UPDATE students SET family_id = $2, first_name = $3, last_name = $4, preferred_name = $5, \
        birth_date = $6, instrument = $7, instruments = $8, level = $9, status = $10, teacher_id = $11, \
        start_date = $12, notes = $13, search_text = $14, updated_at = $15 WHERE id = $1";
    let mut tx = state.db.begin().await?;
    let family = family_name(&mut tx, family_id).await?;
    let search = search_text(&first, &last, preferred.as_deref(), &family);
    on_tx!(&mut tx, conn => sqlx::query(SQL)
        .bind(id).bind(family_id).bind(&first).bind(&last).bind(&preferred).bind(birth_date).bind(&instrument)
        .bind(SqlJson(&instruments)).bind(&level).bind(status).bind(teacher_id).bind(start_date).bind(&notes)
        .bind(search).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    let mut details = json!({});
    if status != current.status {
        details["status"] = json!({"from": current.status, "to": status});
    }
    if withdrawing {
        let effective_on = input.effective_on.unwrap_or(today);
        let withdrawal = crate::school_year::withdrawal::withdraw(&mut tx, &state, id, effective_on).await?;
        details["withdrawal"] = json!(withdrawal);
    } else if current.status == StudentStatus::Withdrawn && status == StudentStatus::Active {
        // Back again: billing resumes; no cancelled lesson comes back by itself.
        const REOPEN: &str = "UPDATE students SET end_date = NULL WHERE id = $1";
        on_tx!(&mut tx, conn => sqlx::query(REOPEN).bind(id).execute(&mut **conn).await.map(|_| ()))?;
        details["reactivated"] = json!({"lessons_restored": 0});
    }
    if teacher_id != current.teacher_id {
        details["teacher_id"] = json!({"from": current.teacher_id, "to": teacher_id});
    }
    audit::record_tx(&mut tx, AuditEvent::new("student.updated").by(&admin).subject("student", id).details(details))
        .await?;
    tx.commit().await?;
    Ok(Json(find_visible(&state.db, &admin, id).await?))
}

/// Deletes a student and their progress notes (admin). Prefer `status: withdrawn` to keep history.
#[utoipa::path(delete, path = "/v1/students/{id}", tag = "students", security(("bearer" = [])),
    responses((status = 204), (status = 401), (status = 403), (status = 404), (status = 409)))]
async fn delete_student(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    const SQL: &str = "DELETE FROM students WHERE id = $1";
    let mut tx = state.db.begin().await?;
    let deleted =
        on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).execute(&mut **conn).await.map(|r| r.rows_affected()))
            .map_err(crate::db::still_referenced(
                "The student still has records that depend on them; withdraw them instead",
            ))?;
    if deleted == 0 {
        return Err(ApiError::NotFound);
    }
    audit::record_tx(&mut tx, AuditEvent::new("student.deleted").by(&admin).subject("student", id)).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
