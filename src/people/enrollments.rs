//! `/v1/enrollments`: a family asks for lessons; the office approves (assigning a teacher and
//! creating or activating the student), declines, or waitlists. Submitting also enqueues the
//! AI enrollment workflow's job in the same transaction, so no request is ever forgotten.

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

use super::families;
use super::students::{self, NewStudent};
use crate::app::AppState;
use crate::auth::{AdminUser, CurrentUser, Role};
use crate::db::{CommitMark, Db, Tx};
use crate::error::{ApiError, ApiResult, DomainError};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::{Errors, WeeklyWindow};
use crate::http::{Json, Query};
use crate::jobs::queue::{self, NewJob};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx};

crate::text_enum! {
    /// Where an enrollment request is.
    pub enum EnrollmentStatus {
        Submitted = "submitted",
        Approved = "approved",
        Declined = "declined",
        Waitlisted = "waitlisted",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_enrollments, create_enrollment))
        .routes(routes!(get_enrollment))
        .routes(routes!(approve))
        .routes(routes!(decline))
        .routes(routes!(waitlist))
}

/// A new student described in an enrollment request.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StudentDetails {
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) preferred_name: Option<String>,
    pub(crate) birth_date: Option<NaiveDate>,
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Enrollment {
    pub(crate) id: Uuid,
    pub(crate) family_id: Uuid,
    /// The existing student, or the one created on approval or waitlisting.
    pub(crate) student_id: Option<Uuid>,
    /// Details of a new student.
    #[schema(value_type = Option<StudentDetails>)]
    pub(crate) student: Option<SqlJson<StudentDetails>>,
    pub(crate) instrument: String,
    /// 30, 45 or 60.
    pub(crate) lesson_minutes: i32,
    /// Preferred weekly windows, school-local time.
    #[schema(value_type = Vec<WeeklyWindow>)]
    pub(crate) preferred_times: SqlJson<Vec<WeeklyWindow>>,
    pub(crate) experience: Option<String>,
    pub(crate) notes: Option<String>,
    /// `submitted`, `approved`, `declined` or `waitlisted`.
    pub(crate) status: EnrollmentStatus,
    pub(crate) decision_reason: Option<String>,
    /// The teacher assigned on approval.
    pub(crate) assigned_teacher_id: Option<Uuid>,
    pub(crate) submitted_by: Option<Uuid>,
    pub(crate) decided_by: Option<Uuid>,
    pub(crate) decided_at: Option<DateTime<Utc>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "en.id, en.family_id, en.student_id, en.student, en.instrument, en.lesson_minutes, \
    en.preferred_times, en.experience, en.notes, en.status, en.decision_reason, en.assigned_teacher_id, \
    en.submitted_by, en.decided_by, en.decided_at, en.created_at, en.updated_at";

/// Parents: their family's requests; teachers: requests assigned to them.
const VISIBLE: &str = "($1 IS NULL OR en.family_id = $1) AND ($2 IS NULL OR en.assigned_teacher_id = $2)";

async fn find_visible(db: &Db, user: &CurrentUser, id: Uuid) -> ApiResult<Enrollment> {
    let (family, teacher) = user.row_filter().ok_or(ApiError::NotFound)?;
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM enrollments en WHERE {VISIBLE} AND en.id = $3"));
    on_db!(db, pool => sqlx::query_as::<_, Enrollment>(sql).bind(family).bind(teacher).bind(id).fetch_optional(pool).await)?
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EnrollmentFilter {
    status: Option<String>,
    family_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Enrollment requests the caller may see, oldest first.
#[utoipa::path(get, path = "/v1/enrollments", tag = "enrollments", params(EnrollmentFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Enrollment>)), (status = 401), (status = 422)))]
async fn list_enrollments(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<EnrollmentFilter>,
) -> ApiResult<Json<Page<Enrollment>>> {
    let page = PageParams { limit: filter.limit, cursor: filter.cursor.clone() };
    let mut errors = Errors::default();
    if let Some(status) = &filter.status {
        errors.choice::<EnrollmentStatus>("status", status);
    }
    let (after, limit) = (page.after()?, page.fetch_limit()?);
    errors.into_result()?;
    let Some((family, teacher)) = user.row_filter() else {
        return Ok(Json(Page { items: vec![], next_cursor: None }));
    };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM enrollments en WHERE {VISIBLE} AND ($3 IS NULL OR en.status = $3) \
         AND ($4 IS NULL OR en.family_id = $4) AND ($5 IS NULL OR en.id > $5) ORDER BY en.id LIMIT $6"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Enrollment>(sql)
        .bind(family).bind(teacher).bind(&filter.status).bind(filter.family_id).bind(after).bind(limit)
        .fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |e| e.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollment {
    /// Required for admins; parents may omit it (their own family).
    family_id: Option<Uuid>,
    /// An existing student of the family…
    student_id: Option<Uuid>,
    /// …or a new one.
    student: Option<StudentDetails>,
    instrument: String,
    /// 30, 45 or 60.
    lesson_minutes: i32,
    #[serde(default)]
    preferred_times: Vec<WeeklyWindow>,
    experience: Option<String>,
    notes: Option<String>,
}

/// Submits an enrollment request (a parent for their family, or an admin on its behalf).
#[utoipa::path(post, path = "/v1/enrollments", tag = "enrollments", request_body = CreateEnrollment, security(("bearer" = [])),
    responses((status = 201, body = Enrollment), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn create_enrollment(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<CreateEnrollment>,
) -> ApiResult<(StatusCode, Json<Enrollment>)> {
    user.require(&[Role::Admin, Role::Parent])?;
    let mut errors = Errors::default();
    let family_id = match (user.role, input.family_id, user.family_id) {
        (Role::Admin, Some(id), _) => Some(id),
        (Role::Admin, None, _) => {
            errors.add("family_id", "is required");
            None
        }
        (_, Some(id), own) if Some(id) != own => return Err(ApiError::NotFound),
        (_, _, Some(own)) => Some(own),
        (_, _, None) => {
            errors.add("family_id", "create your family first (POST /v1/families)");
            None
        }
    };
    let instrument = errors.instrument("instrument", &input.instrument);
    if ![30, 45, 60].contains(&input.lesson_minutes) {
        errors.add("lesson_minutes", "must be 30, 45 or 60");
    }
    errors.windows("preferred_times", &input.preferred_times);
    let experience = errors.optional_text("experience", input.experience.as_deref());
    let notes = errors.optional_text("notes", input.notes.as_deref());
    let details = match (&input.student_id, &input.student) {
        (Some(_), Some(_)) => {
            errors.add("student", "give either student_id or student, not both");
            None
        }
        (None, None) => {
            errors.add("student", "give student_id (an existing student) or student (a new one)");
            None
        }
        (None, Some(details)) => Some(StudentDetails {
            first_name: errors.name("student.first_name", &details.first_name),
            last_name: errors.name("student.last_name", &details.last_name),
            preferred_name: errors.optional_name("student.preferred_name", details.preferred_name.as_deref()),
            birth_date: details.birth_date,
        }),
        (Some(_), None) => None,
    };
    if let Some(birth) = details.as_ref().and_then(|d| d.birth_date)
        && birth > Utc::now().date_naive()
    {
        errors.add("student.birth_date", "must be in the past");
    }
    errors.into_result()?;
    let family_id = family_id.expect("validated above");
    if user.is_admin() {
        families::find_visible(&state.db, &user, family_id)
            .await
            .map_err(|_| ApiError::invalid("family_id", "No such family"))?;
    }
    if let Some(student_id) = input.student_id {
        let student = students::find_visible(&state.db, &user, student_id).await.ok();
        if student.is_none_or(|s| s.family_id != family_id) {
            return Err(ApiError::invalid("student_id", "is not a student of this family"));
        }
    }

    const SQL: &str = "INSERT INTO enrollments (id, family_id, student_id, student, instrument, lesson_minutes, \
        preferred_times, experience, notes, status, submitted_by, created_at, updated_at) \
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'submitted', $10, $11, $11)";
    let id = Uuid::now_v7();
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL)
        .bind(id).bind(family_id).bind(input.student_id).bind(details.as_ref().map(SqlJson)).bind(&instrument)
        .bind(input.lesson_minutes).bind(SqlJson(&input.preferred_times)).bind(&experience).bind(&notes)
        .bind(user.id).bind(Utc::now())
        .execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("enrollment.submitted")
            .by(&user)
            .subject("enrollment", id)
            .details(json!({"family_id": family_id})),
    )
    .await?;
    // The AI enrollment workflow picks this up; it exists if and only if the request does.
    queue::enqueue(
        &mut tx,
        NewJob::now("workflows", "workflow.start", json!({"workflow": "enrollment", "input": {"enrollment_id": id}}))
            .dedupe(format!("enrollment:{id}")),
    )
    .await?;
    notify(&mut tx, &state, id, "enrollment_received", None).await?;
    CommitMark::answer_is(201, format!("/v1/enrollments/{id}"));
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok((StatusCode::CREATED, Json(find_visible(&state.db, &user, id).await?)))
}

/// One enrollment request the caller may see.
#[utoipa::path(get, path = "/v1/enrollments/{id}", tag = "enrollments", security(("bearer" = [])),
    responses((status = 200, body = Enrollment), (status = 401), (status = 404)))]
async fn get_enrollment(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Enrollment>> {
    Ok(Json(find_visible(&state.db, &user, id).await?))
}

/// Moves a request from one of `from` to `to`; 409 when it is no longer in such a state (a
/// concurrent decision wins once).
pub async fn transition(
    tx: &mut Tx,
    id: Uuid,
    from: &[&str],
    to: &str,
    reason: Option<&str>,
    teacher: Option<Uuid>,
    by: Uuid,
) -> crate::error::DomainResult<()> {
    const SQL: &str = "UPDATE enrollments SET status = $2, decision_reason = $3, \
        assigned_teacher_id = COALESCE($4, assigned_teacher_id), decided_by = $5, decided_at = $6, updated_at = $6 \
        WHERE id = $1 AND status IN ($7, $8)";
    let (a, b) = (from[0], *from.get(1).unwrap_or(&from[0]));
    let changed = on_tx!(tx, conn => sqlx::query(SQL)
        .bind(id).bind(to).bind(reason).bind(teacher).bind(by).bind(Utc::now()).bind(a).bind(b)
        .execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if changed == 0 {
        return Err(DomainError::conflict(format!(
            "The request is no longer {}; it cannot become {to}",
            from.join(" or ")
        )));
    }
    Ok(())
}

/// Creates the new student of a request (if any) with `status`, or returns the existing one.
pub async fn ensure_student(
    tx: &mut Tx,
    enrollment: &Enrollment,
    status: &str,
    teacher: Option<Uuid>,
    start_date: Option<NaiveDate>,
) -> crate::error::DomainResult<Uuid> {
    // Read again in `tx` (after the caller's transition, which holds the row): a decision
    // that committed meanwhile (waitlisting, then approval) may already have made the
    // student, and a caller's earlier copy would create a second one.
    let current = load(tx, enrollment.id).await?;
    if let Some(id) = current.and_then(|e| e.student_id).or(enrollment.student_id) {
        return Ok(id);
    }
    let details = enrollment
        .student
        .as_ref()
        .map(|d| d.0.clone())
        .ok_or(DomainError::conflict("The request names no student"))?;
    let id = students::insert_student(
        tx,
        NewStudent {
            family_id: enrollment.family_id,
            first_name: details.first_name,
            last_name: details.last_name,
            preferred_name: details.preferred_name,
            birth_date: details.birth_date,
            instrument: enrollment.instrument.clone(),
            instruments: vec![],
            level: None,
            status: status.to_owned(),
            teacher_id: teacher,
            start_date,
            notes: enrollment.experience.clone(),
        },
    )
    .await?;
    const LINK: &str = "UPDATE enrollments SET student_id = $2 WHERE id = $1";
    on_tx!(tx, conn => sqlx::query(LINK).bind(enrollment.id).bind(id).execute(&mut **conn).await.map(|_| ()))?;
    Ok(id)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The teacher who will teach the student (becomes their main teacher).
    teacher_id: Uuid,
    start_date: Option<NaiveDate>,
}

/// Approves a submitted or waitlisted request (admin): assigns the teacher and creates or
/// activates the student.
#[utoipa::path(post, path = "/v1/enrollments/{id}/approve", tag = "enrollments", request_body = Approval, security(("bearer" = [])),
    responses((status = 200, body = Enrollment), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn approve(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<Approval>,
) -> ApiResult<Json<Enrollment>> {
    let enrollment = find_visible(&state.db, &admin, id).await?;
    super::teachers::find(&state.db, input.teacher_id)
        .await
        .map_err(|_| ApiError::invalid("teacher_id", "No such teacher"))?;
    let mut tx = state.db.begin().await?;
    transition(&mut tx, id, &["submitted", "waitlisted"], "approved", None, Some(input.teacher_id), admin.id).await?;
    let student_id = ensure_student(&mut tx, &enrollment, "active", Some(input.teacher_id), input.start_date).await?;
    const ACTIVATE: &str = "UPDATE students SET status = 'active', teacher_id = $2, \
        start_date = COALESCE(start_date, $3), updated_at = $4 WHERE id = $1";
    on_tx!(&mut tx, conn => sqlx::query(ACTIVATE).bind(student_id).bind(input.teacher_id).bind(input.start_date)
        .bind(Utc::now()).execute(&mut **conn).await.map(|_| ()))?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("enrollment.approved")
            .by(&admin)
            .subject("enrollment", id)
            .details(json!({"teacher_id": input.teacher_id, "student_id": student_id})),
    )
    .await?;
    notify(&mut tx, &state, id, "enrollment_approved", None).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(Json(find_visible(&state.db, &admin, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why (required to decline; optional to waitlist). Shared with the family.
    reason: Option<String>,
}

/// Declines a submitted or waitlisted request with a reason (admin).
#[utoipa::path(post, path = "/v1/enrollments/{id}/decline", tag = "enrollments", request_body = Decision, security(("bearer" = [])),
    responses((status = 200, body = Enrollment), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn decline(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<Decision>,
) -> ApiResult<Json<Enrollment>> {
    find_visible(&state.db, &admin, id).await?;
    let mut errors = Errors::default();
    let reason = errors.optional_text("reason", input.reason.as_deref());
    if reason.is_none() {
        errors.add("reason", "is required to decline");
    }
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    transition(&mut tx, id, &["submitted", "waitlisted"], "declined", reason.as_deref(), None, admin.id).await?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("enrollment.declined").by(&admin).subject("enrollment", id).details(json!({"reason": reason})),
    )
    .await?;
    notify(&mut tx, &state, id, "enrollment_declined", reason.as_deref()).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(Json(find_visible(&state.db, &admin, id).await?))
}

/// Puts a submitted request on the waitlist (admin); a new student is recorded as waitlisted.
#[utoipa::path(post, path = "/v1/enrollments/{id}/waitlist", tag = "enrollments", request_body = Decision, security(("bearer" = [])),
    responses((status = 200, body = Enrollment), (status = 401), (status = 403), (status = 404), (status = 409), (status = 422)))]
async fn waitlist(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<Uuid>,
    Json(input): Json<Decision>,
) -> ApiResult<Json<Enrollment>> {
    let enrollment = find_visible(&state.db, &admin, id).await?;
    let mut errors = Errors::default();
    let reason = errors.optional_text("reason", input.reason.as_deref());
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    transition(&mut tx, id, &["submitted"], "waitlisted", reason.as_deref(), None, admin.id).await?;
    let student_id = ensure_student(&mut tx, &enrollment, "waitlisted", None, None).await?;
    audit::record_tx(
        &mut tx,
        AuditEvent::new("enrollment.waitlisted")
            .by(&admin)
            .subject("enrollment", id)
            .details(json!({"reason": reason, "student_id": student_id})),
    )
    .await?;
    notify(&mut tx, &state, id, "enrollment_waitlisted", None).await?;
    tx.commit().await?;
    state.job_wakeup.notify_one();
    Ok(Json(find_visible(&state.db, &admin, id).await?))
}

/// Tells the family what happened to its request, in the family's language, in `tx`.
pub async fn notify(
    tx: &mut Tx,
    state: &AppState,
    id: Uuid,
    template: &'static str,
    note: Option<&str>,
) -> ApiResult<()> {
    const SQL: &str = "SELECT e.family_id, e.instrument, COALESCE(s.preferred_name, s.first_name), e.student \
        FROM enrollments e LEFT JOIN students s ON s.id = e.student_id WHERE e.id = $1";
    type Row = (Uuid, String, Option<String>, Option<SqlJson<StudentDetails>>);
    let (family, instrument, existing, details): Row =
        on_tx!(tx, conn => sqlx::query_as(SQL).bind(id).fetch_one(&mut **conn).await)?;
    let student = existing
        .or_else(|| details.map(|d| d.0.preferred_name.clone().unwrap_or(d.0.first_name.clone())))
        .unwrap_or_default();
    let vars = |_: &str| json!({"student": student, "instrument": instrument, "note": note});
    crate::messaging::email_family(tx, &state.settings, family, template, vars, Some(&format!("{template}:{id}")))
        .await?;
    Ok(())
}

/// A request by id, for the enrollment workflow (no visibility rules: the worker acts for the
/// office).
pub async fn load(tx: &mut Tx, id: Uuid) -> crate::error::DomainResult<Option<Enrollment>> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM enrollments en WHERE en.id = $1"));
    Ok(on_tx!(tx, conn => sqlx::query_as::<_, Enrollment>(sql).bind(id).fetch_optional(&mut **conn).await)?)
}
