//! `/v1/tasks`: the owner's follow-up list. Workflows create tasks ("check instalment 2 paid
//! by 15 January", "call the family"); people add their own. Admins see and change every
//! task; a teacher sees the tasks assigned to them and may close them; parents get 403.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::{CurrentUser, Role};
use crate::db::{CommitMark, Tx};
use crate::error::{ApiError, ApiResult, DomainResult};
use crate::http::pagination::{Page, PageParams};
use crate::http::validate::Errors;
use crate::http::{Json, Query, nullable};
use crate::privacy::audit::{self, AuditEvent};
use crate::{on_db, on_tx, text_enum};

text_enum! {
    /// Where a task is.
    pub enum TaskStatus {
        Open = "open",
        Done = "done",
        Dismissed = "dismissed",
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_tasks, create_task)).routes(routes!(get_task, update_task))
}

#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
    pub detail: Option<String>,
    pub status: TaskStatus,
    pub due_on: Option<NaiveDate>,
    /// The user who should do it (none: the office).
    pub assignee_id: Option<Uuid>,
    /// What it is about: `invoice`, `family`, `student`, …
    pub subject_type: Option<String>,
    pub subject_id: Option<Uuid>,
    /// The workflow run that created it.
    pub run_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, title, detail, status, due_on, assignee_id, subject_type, subject_id, run_id, created_by, \
    created_at, updated_at, closed_at";

/// A task as a workflow (or a person) creates it.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub title: String,
    pub detail: Option<String>,
    pub due_on: Option<NaiveDate>,
    pub assignee_id: Option<Uuid>,
    pub subject_type: Option<String>,
    pub subject_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    /// With a key, a second create with the same key returns the first task's id.
    pub dedupe_key: Option<String>,
}

/// Creates a task in `tx`; with a dedupe key, once. Returns its id.
pub async fn create(tx: &mut Tx, task: NewTask) -> DomainResult<Uuid> {
    const INSERT: &str = "INSERT INTO tasks (id, title, detail, status, due_on, assignee_id, subject_type, subject_id, \
        run_id, created_by, dedupe_key, created_at, updated_at) VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9, $10, \
        $11, $11) ON CONFLICT (dedupe_key) DO NOTHING";
    const EXISTING: &str = "SELECT id FROM tasks WHERE dedupe_key = $1";
    let id = Uuid::now_v7();
    let inserted = on_tx!(tx, conn => sqlx::query(INSERT).bind(id).bind(&task.title).bind(&task.detail).bind(task.due_on)
        .bind(task.assignee_id).bind(&task.subject_type).bind(task.subject_id).bind(task.run_id).bind(task.created_by)
        .bind(&task.dedupe_key).bind(Utc::now()).execute(&mut **conn).await.map(|r| r.rows_affected()))?;
    if inserted == 0 {
        return Ok(
            on_tx!(tx, conn => sqlx::query_scalar(EXISTING).bind(&task.dedupe_key).fetch_one(&mut **conn).await)?,
        );
    }
    Ok(id)
}

/// Who may see which tasks: admins all, teachers theirs, parents none (403).
fn assignee_scope(user: &CurrentUser) -> ApiResult<Option<Uuid>> {
    match user.role {
        Role::Admin => Ok(None),
        Role::Teacher => Ok(Some(user.id)),
        Role::Parent => Err(ApiError::Forbidden),
    }
}

async fn find_visible(db: &crate::db::Db, user: &CurrentUser, id: Uuid) -> ApiResult<Task> {
    let assignee = assignee_scope(user)?;
    let sql =
        sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 AND ($2 IS NULL OR assignee_id = $2)"));
    on_db!(db, pool => sqlx::query_as::<_, Task>(sql).bind(id).bind(assignee).fetch_optional(pool).await)?
        .ok_or(ApiError::NotFound)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    /// `open`, `done` or `dismissed`.
    status: Option<String>,
    assignee_id: Option<Uuid>,
    subject_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Tasks, oldest first (admins: all; teachers: assigned to them).
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(TaskFilter), security(("bearer" = [])),
    responses((status = 200, body = inline(Page<Task>)), (status = 401), (status = 403), (status = 422)))]
async fn list_tasks(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<TaskFilter>,
) -> ApiResult<Json<Page<Task>>> {
    let own = assignee_scope(&user)?;
    let mut errors = Errors::default();
    let status = errors.optional_choice::<TaskStatus>("status", filter.status.as_deref());
    errors.into_result()?;
    let page = PageParams { limit: filter.limit, cursor: filter.cursor };
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM tasks WHERE ($1 IS NULL OR assignee_id = $1) AND ($2 IS NULL OR assignee_id = $2) \
         AND ($3 IS NULL OR status = $3) AND ($4 IS NULL OR subject_id = $4) AND ($5 IS NULL OR id > $5) \
         ORDER BY id LIMIT $6"
    ));
    let rows = on_db!(&state.db, pool => sqlx::query_as::<_, Task>(sql).bind(own).bind(filter.assignee_id).bind(status)
        .bind(filter.subject_id).bind(page.after()?).bind(page.fetch_limit()?).fetch_all(pool).await)?;
    Ok(Json(Page::from_rows(rows, &page, |t| t.id)?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    title: String,
    detail: Option<String>,
    due_on: Option<NaiveDate>,
    assignee_id: Option<Uuid>,
    subject_type: Option<String>,
    subject_id: Option<Uuid>,
}

/// Adds a task (admins).
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks", request_body = CreateTask, security(("bearer" = [])),
    responses((status = 201, body = Task), (status = 401), (status = 403), (status = 422)))]
async fn create_task(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<CreateTask>,
) -> ApiResult<(StatusCode, Json<Task>)> {
    user.require(&[Role::Admin])?;
    let mut errors = Errors::default();
    let title = errors.name("title", &input.title);
    let detail = errors.optional_text("detail", input.detail.as_deref());
    let subject_type = errors.optional_name("subject_type", input.subject_type.as_deref());
    if let Some(due) = input.due_on
        && !(2000..=2200).contains(&chrono::Datelike::year(&due))
    {
        errors.add("due_on", "must be a date between 2000 and 2200");
    }
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    let task = NewTask {
        title,
        detail,
        due_on: input.due_on,
        assignee_id: input.assignee_id,
        subject_type,
        subject_id: input.subject_id,
        created_by: Some(user.id),
        ..NewTask::default()
    };
    let id = create(&mut tx, task).await?;
    audit::record_tx(&mut tx, AuditEvent::new("task.created").by(&user).subject("task", id)).await?;
    CommitMark::answer_is(201, format!("/v1/tasks/{id}"));
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(find_visible(&state.db, &user, id).await?)))
}

/// One task.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks", security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 401), (status = 403), (status = 404)))]
async fn get_task(State(state): State<AppState>, user: CurrentUser, Path(id): Path<Uuid>) -> ApiResult<Json<Task>> {
    Ok(Json(find_visible(&state.db, &user, id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTask {
    title: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    detail: Option<Option<String>>,
    /// `open`, `done` or `dismissed`.
    status: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<NaiveDate>)]
    due_on: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    assignee_id: Option<Option<Uuid>>,
}

/// Changes a task. Admins may change anything; a teacher may only close (or reopen) a task
/// assigned to them.
#[utoipa::path(patch, path = "/v1/tasks/{id}", tag = "tasks", request_body = UpdateTask, security(("bearer" = [])),
    responses((status = 200, body = Task), (status = 401), (status = 403), (status = 404), (status = 422)))]
async fn update_task(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateTask>,
) -> ApiResult<Json<Task>> {
    let current = find_visible(&state.db, &user, id).await?;
    let mut errors = Errors::default();
    if user.role == Role::Teacher
        && (input.title.is_some() || input.detail.is_some() || input.due_on.is_some() || input.assignee_id.is_some())
    {
        return Err(ApiError::ForbiddenBecause("Teachers may only change the status of their tasks".into()));
    }
    let title = input.title.as_deref().map_or(current.title.clone(), |t| errors.name("title", t));
    let detail = match &input.detail {
        Some(value) => errors.optional_text("detail", value.as_deref()),
        None => current.detail.clone(),
    };
    let status = match input.status.as_deref() {
        Some(text) => errors.choice::<TaskStatus>("status", text).unwrap_or(current.status),
        None => current.status,
    };
    errors.into_result()?;
    let due_on = input.due_on.unwrap_or(current.due_on);
    let assignee = input.assignee_id.unwrap_or(current.assignee_id);
    let now = Utc::now();
    let closed_at = match (current.status, status) {
        (TaskStatus::Open, TaskStatus::Done | TaskStatus::Dismissed) => Some(now),
        (_, TaskStatus::Open) => None,
        _ => current.closed_at,
    };
    const SQL: &str = "UPDATE tasks SET title = $2, detail = $3, status = $4, due_on = $5, assignee_id = $6, \
        closed_at = $7, updated_at = $8 WHERE id = $1";
    let mut tx = state.db.begin().await?;
    on_tx!(&mut tx, conn => sqlx::query(SQL).bind(id).bind(&title).bind(&detail).bind(status).bind(due_on).bind(assignee)
        .bind(closed_at).bind(now).execute(&mut **conn).await.map(|_| ()))?;
    let details = json!({"status": {"from": current.status, "to": status}});
    audit::record_tx(&mut tx, AuditEvent::new("task.updated").by(&user).subject("task", id).details(details)).await?;
    tx.commit().await?;
    Ok(Json(find_visible(&state.db, &user, id).await?))
}
